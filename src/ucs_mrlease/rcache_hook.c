/*
 * The registration-cache hook: leases around ucs_rcache regions. Each region
 * gets a trailer after the caller's own region struct: its lease, and the
 * hook it belongs to (the lease callback's argument).
 */
#include "engine.h"
#include "mrlease_rcache.h"

#include <stdlib.h>

typedef struct {
    ucs_mrlease_rcache_t *lrc;
    ucs_mrlease_t        *lease;
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

static ucs_status_t lrc_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *event,
                              void *arg)
{
    lrc_trailer_t *t = arg;

    ++t->lrc->invalidations;
    /* In-flight users keep their reference; the last put deregisters the
     * region, and mem_dereg releases the lease: that is the restore. */
    ucs_rcache_region_invalidate(t->lrc->rcache, lrc_region(t), lrc_invalidated,
                                 NULL);
    return UCS_INPROGRESS;
}

void ucs_mrlease_rcache_served(ucs_mrlease_rcache_t *lrc,
                               ucs_rcache_region_t *region)
{
    ucs_mrlease_t *lease = lrc_trailer(lrc, region)->lease;

    if ((lease == NULL) || ucs_mrlease_cacheable(lease)) {
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

    t->lrc   = lrc;
    t->lease = NULL;
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

void ucs_mrlease_rcache_destroy(ucs_mrlease_rcache_t *lrc)
{
    ucs_rcache_destroy(lrc->rcache);
    free(lrc);
}
