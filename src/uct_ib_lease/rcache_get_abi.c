/*
 * ucs_rcache_get(), as interposed, on every UCX release.
 *
 * Its arguments changed in UCX 1.17: an alignment comes after the length,
 * so there are seven (src/ucs/memory/rcache.h:224 in v1.17.0) instead of
 * 1.13's six. Once preloaded, the plugin's ucs_rcache_get is the one every
 * library of the process calls (UCP's cache too), whether mrlease is on or
 * refused (ucx_compat.c). So:
 *  - a cache the plugin leased exists only on the release it was built for
 *    (it is on only there): its lookups are read with 1.13's arguments;
 *  - any other call is handed on with all seven argument slots as they came,
 *    whatever they mean: the six registers, and the first stack slot (on
 *    1.13 that slot is the caller's, passed on and ignored).
 * This file must not see rcache.h: its prototype is 1.13's.
 */
#include "ib_lease.h"

#include <stdint.h>

typedef ucs_status_t (*rcache_get_any_func_t)(void*, void*, size_t, uintptr_t,
                                              uintptr_t, uintptr_t, uintptr_t);

ucs_status_t ucs_rcache_get(void *rcache, void *address, size_t length, uintptr_t a3,
                            uintptr_t a4, uintptr_t a5, uintptr_t a6);

ucs_status_t ucs_rcache_get(void *rcache, void *address, size_t length, uintptr_t a3,
                            uintptr_t a4, uintptr_t a5, uintptr_t a6)
{
    struct ucs_mrlease_rcache *lrc = ib_lease_rcache_leased(rcache);
    rcache_get_any_func_t real;

    if (lrc != NULL) {
        /* 1.13: (rcache, address, length, int prot, void *arg, region_p) */
        return ib_lease_rcache_get_leased(lrc, address, length, (int)a3,
                                          (void*)a4,
                                          (struct ucs_rcache_region**)a5);
    }
    /* Any cache's lookup is a registration path: changes still pending are
     * handled first (one load when none is). In verbs mode this is where a
     * UCT-level user of the IB memory domain's cache (1.13 to 1.15) catches
     * up, as UCP's callers do in its entry points. */
    ib_lease_catch_up();
    real = (rcache_get_any_func_t)ib_lease_rcache_get_next();
    return real(rcache, address, length, a3, a4, a5, a6);
}
