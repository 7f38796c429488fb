/**
 * A UCS registration cache whose regions are leased.
 *
 * Each region is leased before it is registered (so a file mapping can be
 * adopted first) and released after it is deregistered (so a held changer
 * goes on only once no registration pins the old pages). A broken lease
 * invalidates its region with ucs_rcache_region_invalidate(): operations in
 * flight keep their reference and complete; the next lookup registers the
 * range again on its new pages; when the last reference goes, the region is
 * deregistered and the lease released. The region's range is then also
 * fed to UCX's memory events (ucm_vm_munmap), so that every other
 * registration cache of the process, UCP's among them, drops its
 * registrations of it too: a change no UCM hook saw (a raw system call, a
 * file changed by another process) would otherwise reach none of them.
 *
 * A registration is served from the cache only while a running monitor can
 * vouch for every way its memory can change (ucs_mrlease_cacheable()).
 * Otherwise it is registered for its use and dropped when the last user
 * puts it, and counted (ucs_mrlease_counters_t.uncached).
 */
#ifndef UCS_MRLEASE_RCACHE_H_
#define UCS_MRLEASE_RCACHE_H_

#include "mrlease.h"

BEGIN_C_DECLS

/* UCX 1.13's rcache.h has no C++ guard of its own. */
#include <ucs/memory/rcache.h>

/* The library is built with hidden visibility: this is its API. */
#pragma GCC visibility push(default)

typedef struct ucs_mrlease_rcache {
    ucs_rcache_t         *rcache;
    ucs_mrlease_engine_t *engine;
    ucs_rcache_ops_t     ops;          /* ours, wrapping user_ops */
    const ucs_rcache_ops_t *user_ops;
    void                 *user_context;
    size_t               lease_offset; /* where a region keeps its lease */
    uint64_t             invalidations;
    uint64_t             lease_failures;
    uint64_t             uncached;     /* lookups served without caching */
    uint64_t             breaks_late;  /* broken as its region was being
                                          destroyed: nothing left to do */
    int                  detached;     /* ucs_mrlease_rcache_detach() */
} ucs_mrlease_rcache_t;

/**
 * For an rcache created elsewhere (e.g. by UCX's IB memory domain): fill
 * *leased from *params so that its regions are leased through *lrc, which
 * must outlive the rcache; then create the rcache with *leased and set
 * lrc->rcache. ucs_mrlease_rcache_create() does all of this. Every region
 * ucs_rcache_get() returns must then go through ucs_mrlease_rcache_served(),
 * and ucs_mrlease_rcache_detach() must come before ucs_rcache_destroy().
 */
void ucs_mrlease_rcache_wrap_params(ucs_mrlease_rcache_t *lrc,
                                    ucs_mrlease_engine_t *engine,
                                    const ucs_rcache_params_t *params,
                                    ucs_rcache_params_t *leased);

/** Like ucs_rcache_create(); params->region_struct_size is the caller's own. */
ucs_status_t ucs_mrlease_rcache_create(ucs_mrlease_engine_t *engine,
                                       const ucs_rcache_params_t *params,
                                       const char *name,
                                       ucs_mrlease_rcache_t **lrc_p);
void ucs_mrlease_rcache_destroy(ucs_mrlease_rcache_t *lrc);

/**
 * Before destroying the rcache of a *lrc filled by
 * ucs_mrlease_rcache_wrap_params(): once this returns, no lease callback
 * (the engine's dispatcher thread included) touches the rcache any more.
 * ucs_mrlease_rcache_destroy() calls it.
 */
void ucs_mrlease_rcache_detach(ucs_mrlease_rcache_t *lrc);

/** The lease of a region (NULL if it could not be leased). */
ucs_mrlease_t *ucs_mrlease_rcache_region_lease(ucs_mrlease_rcache_t *lrc,
                                               ucs_rcache_region_t *region);

/**
 * A region ucs_rcache_get() just returned: if no running monitor vouches
 * for its memory, or its lease broke while UCX was still creating it, take
 * it out of the cache now (the caller keeps its reference; the last put
 * deregisters it). Its first call for a region takes the engine lock; later
 * ones take no lock.
 */
void ucs_mrlease_rcache_served(ucs_mrlease_rcache_t *lrc,
                               ucs_rcache_region_t *region);

/** ucs_rcache_get(), made coherent: pending decoherence is handled first,
 * and a region nobody can vouch for is not kept in the cache. */
static UCS_F_ALWAYS_INLINE ucs_status_t
ucs_mrlease_rcache_get(ucs_mrlease_rcache_t *lrc, void *address, size_t length,
                       int prot, void *arg, ucs_rcache_region_t **region_p)
{
    ucs_status_t status;

    ucs_mrlease_progress(lrc->engine);
    status = ucs_rcache_get(lrc->rcache, address, length, prot, arg, region_p);
    if (status == UCS_OK) {
        ucs_mrlease_rcache_served(lrc, *region_p);
    }
    return status;
}

static UCS_F_ALWAYS_INLINE void
ucs_mrlease_rcache_put(ucs_mrlease_rcache_t *lrc, ucs_rcache_region_t *region)
{
    ucs_rcache_region_put(lrc->rcache, region);
}

#pragma GCC visibility pop

END_C_DECLS

#endif
