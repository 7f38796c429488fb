/*
 * The registration-cache hook: leases around ucs_rcache regions. Each region
 * gets a trailer after the caller's own region struct: its lease, and the
 * hook it belongs to. The trailer is the lease callback's argument.
 *
 * Lifetime (issue 10). A lease callback runs without the engine lock, often
 * in the engine's dispatcher thread, while the application may drop the
 * region's last reference in another: UCX then destroys the region (our
 * mem_dereg releases the lease) and frees it, trailer included, at once.
 * What holds:
 *  - the lease outlives its callback (the engine frees a lease released
 *    during its callback only after the callback returns);
 *  - UCX frees a region only after mem_dereg has released its lease, and
 *    release takes the engine lock.
 * So lrc_break reads the trailer, and the region, only with the engine lock
 * held and only while its lease is not released. There it takes a reference
 * of its own on the region, unless the count is already 0 (the region is
 * being destroyed, or sits on UCX's GC list to be: its mem_dereg releases the
 * lease, which is the restore). Holding it, lrc_break invalidates and puts,
 * outside the engine lock, like any user of the cache; its put may be the
 * last one, and destroy the region in this thread.
 * The count can be trusted only once UCX has finished creating the region
 * (create_region stores refcount = 2 after mem_reg returns, under pgt_lock):
 * a lease broken before then only marks the trailer, and the lookup that
 * returns the region (ucs_mrlease_rcache_served) takes it out of the cache.
 * Never make mem_dereg wait for a running callback instead: UCX calls it
 * with pgt_lock held for write, which the callback's invalidate needs.
 */
#include "engine.h"
#include "mrlease_rcache.h"

#include <stdlib.h>
#include <unistd.h>

typedef struct {
    ucs_mrlease_rcache_t *lrc;
    ucs_mrlease_t        *lease;
    int                  published; /* a lookup returned it: UCX is done */
    int                  missed;    /* broken before it was published */
} lrc_trailer_t;

static lrc_trailer_t *lrc_trailer(ucs_mrlease_rcache_t *lrc,
                                  ucs_rcache_region_t *region)
{
    return (lrc_trailer_t*)((char*)region + lrc->lease_offset);
}

static ucs_rcache_region_t *lrc_region(lrc_trailer_t *t)
{
    return (ucs_rcache_region_t*)((char*)t - t->lrc->lease_offset);
}

ucs_mrlease_t *ucs_mrlease_rcache_region_lease(ucs_mrlease_rcache_t *lrc,
                                               ucs_rcache_region_t *region)
{
    return lrc_trailer(lrc, region)->lease;
}

static void lrc_invalidated(void *arg)
{
    /* Called when the region is destroyed: by then mem_dereg has released
     * its lease. Nothing here may touch the rcache. */
}

#ifdef __SANITIZE_ADDRESS__
/* Debug builds only, for test_dispatch_race: MRL_TEST_BREAK_DELAY_US widens
 * the window between dispatch dropping the engine lock and the callback's
 * first step, in which another thread may put the region's last reference. */
static void lrc_test_delay(void)
{
    static int us = -1;
    const char *value;
    int v = __atomic_load_n(&us, __ATOMIC_RELAXED);

    if (v < 0) {
        value = getenv("MRL_TEST_BREAK_DELAY_US");
        v     = (value != NULL) ? atoi(value) : 0;
        __atomic_store_n(&us, v, __ATOMIC_RELAXED);
    }
    if (v > 0) {
        usleep(v);
    }
}
#else
static inline void lrc_test_delay(void)
{
}
#endif

/* A reference on a region that may be on its way out: taken only if some
 * other one still keeps it (UCX never brings a count back from 0). */
static int lrc_region_hold_live(ucs_rcache_region_t *region)
{
    uint32_t ref = __atomic_load_n(&region->refcount, __ATOMIC_RELAXED);

    do {
        if (ref == 0) {
            return 0;
        }
    } while (!__atomic_compare_exchange_n(&region->refcount, &ref, ref + 1, 0,
                                          __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
    return 1;
}

static ucs_status_t lrc_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *event,
                              void *arg)
{
    ucs_mrlease_engine_t *engine = lease->engine;
    ucs_rcache_region_t *region  = NULL;
    ucs_mrlease_rcache_t *lrc    = NULL;
    uintptr_t start, end;
    lrc_trailer_t *t;

    lrc_test_delay();
    ucs_mrlease_engine_lock(engine);
    if (!(lease->flags & UCS_MRLEASE_FLAG_RELEASED)) {
        t   = arg; /* alive: see "Lifetime" above */
        lrc = t->lrc;
        if (lrc->detached) {
            /* being destroyed: its purge releases the lease */
        } else if (!t->published) {
            t->missed = 1;
        } else if (lrc_region_hold_live(lrc_region(t))) {
            region = lrc_region(t);
            ++lrc->invalidations;
        } else {
            ++lrc->breaks_late;
        }
    }
    ucs_mrlease_engine_unlock(engine);

    if (region != NULL) {
        start = region->super.start;
        end   = region->super.end;
        /* In-flight users keep their reference; the last put deregisters the
         * region, and mem_dereg releases the lease: that is the restore. */
        ucs_rcache_region_invalidate(lrc->rcache, region, lrc_invalidated, NULL);
        ucs_rcache_region_put(lrc->rcache, region);
        /* UCX's other caches (UCP's keeps memory handles on top of this
         * region) learn of it through their UCM handlers: a change that
         * came through a hooked call was told to them already, but this one
         * may have come from elsewhere, or with it (events merge) */
        ucs_mrlease_ucm_feed(start, end);
    }
    return UCS_INPROGRESS;
}

/* First lookup of a region (its creation is over): act on a break that came
 * while UCX was creating it. Returns nonzero if it was taken out. */
static int lrc_publish(ucs_mrlease_rcache_t *lrc, lrc_trailer_t *t,
                       ucs_rcache_region_t *region)
{
    ucs_mrlease_engine_t *engine = lrc->engine;
    int missed;

    ucs_mrlease_engine_lock(engine);
    __atomic_store_n(&t->published, 1, __ATOMIC_RELEASE);
    missed    = t->missed;
    t->missed = 0;
    if (missed) {
        ++lrc->invalidations;
    }
    ucs_mrlease_engine_unlock(engine);

    if (missed) {
        /* the caller holds a reference: this one's last put deregisters */
        ucs_rcache_region_invalidate(lrc->rcache, region, lrc_invalidated, NULL);
    }
    return missed;
}

void ucs_mrlease_rcache_served(ucs_mrlease_rcache_t *lrc,
                               ucs_rcache_region_t *region)
{
    lrc_trailer_t *t     = lrc_trailer(lrc, region);
    ucs_mrlease_t *lease = t->lease;

    if (lease == NULL) {
        return;
    }
    if (ucs_unlikely(!__atomic_load_n(&t->published, __ATOMIC_ACQUIRE)) &&
        lrc_publish(lrc, t, region)) {
        return;
    }
    if (ucs_mrlease_cacheable(lease)) {
        return;
    }
    __atomic_add_fetch(&lrc->uncached, 1, __ATOMIC_RELAXED);
    ucs_mrlease_note_uncached(lease);
    ucs_rcache_region_invalidate(lrc->rcache, region, lrc_invalidated, NULL);
}

static ucs_status_t lrc_mem_reg(void *context, ucs_rcache_t *rcache, void *arg,
                                ucs_rcache_region_t *region, uint16_t flags)
{
    ucs_mrlease_rcache_t *lrc = context;
    lrc_trailer_t *t          = lrc_trailer(lrc, region);
    ucs_mrlease_params_t params = {
        .field_mask = 0,
        .cb         = lrc_break,
        .arg        = t
    };
    ucs_status_t status;

    t->lrc       = lrc;
    t->lease     = NULL;
    t->published = 0;
    t->missed    = 0;
    /* Lease first: a file mapping may be adopted, which must happen before
     * anything pins its pages. */
    status = ucs_mrlease_acquire(lrc->engine, (void*)region->super.start,
                                 region->super.end - region->super.start,
                                 &params, &t->lease);
    if (status != UCS_OK) {
        ++lrc->lease_failures;
        return status;
    }

    status = lrc->user_ops->mem_reg(lrc->user_context, rcache, arg, region, flags);
    if (status != UCS_OK) {
        ucs_mrlease_release(t->lease);
        t->lease = NULL;
    }
    return status;
}

static void lrc_mem_dereg(void *context, ucs_rcache_t *rcache,
                          ucs_rcache_region_t *region)
{
    ucs_mrlease_rcache_t *lrc = context;
    lrc_trailer_t *t          = lrc_trailer(lrc, region);

    /* Deregister first: a held changer goes on once the lease is released,
     * and nothing may pin the old pages by then. */
    lrc->user_ops->mem_dereg(lrc->user_context, rcache, region);
    if (t->lease != NULL) {
        ucs_mrlease_release(t->lease);
        t->lease = NULL;
    }
}

static void lrc_dump_region(void *context, ucs_rcache_t *rcache,
                            ucs_rcache_region_t *region, char *buf, size_t max)
{
    ucs_mrlease_rcache_t *lrc = context;

    if (lrc->user_ops->dump_region != NULL) {
        lrc->user_ops->dump_region(lrc->user_context, rcache, region, buf, max);
    } else if (max > 0) {
        buf[0] = '\0';
    }
}

void ucs_mrlease_rcache_wrap_params(ucs_mrlease_rcache_t *lrc,
                                    ucs_mrlease_engine_t *engine,
                                    const ucs_rcache_params_t *params,
                                    ucs_rcache_params_t *leased)
{
    *leased               = *params;
    lrc->engine           = engine;
    lrc->user_ops         = params->ops;
    lrc->user_context     = params->context;
    lrc->ops.mem_reg      = lrc_mem_reg;
    lrc->ops.mem_dereg    = lrc_mem_dereg;
    lrc->ops.dump_region  = lrc_dump_region;
    /* our trailer goes after the owner's own region struct */
    lrc->lease_offset     = (params->region_struct_size + sizeof(void*) - 1) &
                            ~(sizeof(void*) - 1);
    leased->region_struct_size = lrc->lease_offset + sizeof(lrc_trailer_t);
    leased->ops                = &lrc->ops;
    leased->context            = lrc;
}

ucs_status_t ucs_mrlease_rcache_create(ucs_mrlease_engine_t *engine,
                                       const ucs_rcache_params_t *params,
                                       const char *name,
                                       ucs_mrlease_rcache_t **lrc_p)
{
    ucs_rcache_params_t ours;
    ucs_mrlease_rcache_t *lrc;
    ucs_status_t status;

    lrc = calloc(1, sizeof(*lrc));
    if (lrc == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    ucs_mrlease_rcache_wrap_params(lrc, engine, params, &ours);
    status = ucs_rcache_create(&ours, name, NULL, &lrc->rcache);
    if (status != UCS_OK) {
        free(lrc);
        return status;
    }
    *lrc_p = lrc;
    return UCS_OK;
}

void ucs_mrlease_rcache_detach(ucs_mrlease_rcache_t *lrc)
{
    ucs_mrlease_engine_t *engine = lrc->engine;

    ucs_mrlease_engine_lock(engine);
    lrc->detached = 1;
    ucs_mrlease_engine_unlock(engine);
    /* A callback that found it attached may still be using a region of it:
     * callbacks run under the dispatch lock, so wait for the dispatch. */
    pthread_mutex_lock(&engine->dispatch_lock);
    pthread_mutex_unlock(&engine->dispatch_lock);
}

void ucs_mrlease_rcache_destroy(ucs_mrlease_rcache_t *lrc)
{
    ucs_mrlease_rcache_detach(lrc);
    ucs_rcache_destroy(lrc->rcache);
    free(lrc);
}
