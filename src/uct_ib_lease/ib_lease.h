/*
 * libuct_ib_lease: configuration (UCX_IB_LEASE_*).
 */
#ifndef UCT_IB_LEASE_H_
#define UCT_IB_LEASE_H_

#include <ucs_mrlease/mrlease.h>
#include <ucs/config/parser.h>
#include <ucs/debug/log_def.h>
#include <stdint.h>
#include <time.h>

typedef struct ucs_ib_lease_config {
    int enable;
    int summary;
    int async;
    int keep_rkeys;
    unsigned mode; /* decided by ucx_compat.c, from the same variable */
} ucs_ib_lease_config_t;

ucs_status_t ucs_ib_lease_config_read(ucs_ib_lease_config_t *config);

/* The engine, in storage of our own (ib_lease.c): its pending word is read
 * with one load, and it stays zero while mrlease is off (never initialized). */
extern ucs_mrlease_engine_t ib_lease_engine_storage __attribute__((visibility("hidden")));

void ib_lease_catch_up_slow(void);

/* Every UCP entry point the MPI layer calls runs this first. */
/* The engine's pending word: one load (hot is the engine's first member). */
static UCS_F_ALWAYS_INLINE uint32_t ib_lease_pending(void)
{
    return __atomic_load_n(&((ucs_mrlease_engine_hot_t*)&ib_lease_engine_storage)->pending,
                           __ATOMIC_ACQUIRE);
}

static UCS_F_ALWAYS_INLINE void ib_lease_catch_up(void)
{
    if (ucs_unlikely(ib_lease_pending())) {
        ib_lease_catch_up_slow();
    }
}

/* Monotonic nanoseconds (vDSO, no system call). */
static inline uint64_t ib_lease_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Monotonic seconds, for slow-path deadlines. */
static inline double ib_lease_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Registrations are kept coherent only for UCX's own IB memory domain. */
int ib_lease_caller_is_uct_ib(const void *ret_addr);

/* Decide now (once, from UCX_IB_LEASE_*) whether mrlease is on. */
int ib_lease_is_on(void);

/* For rcache_get_abi.c: the real ucs_rcache_get (as a plain address: its
 * arguments depend on the UCX release), the leased cache that is rcache
 * (NULL if none: then mrlease is off, or the cache is not the IB MD's), and
 * a lookup in a leased cache, which exists only on the release built for. */
struct ucs_mrlease_rcache;
struct ucs_rcache_region;
void *ib_lease_rcache_get_next(void);
struct ucs_mrlease_rcache *ib_lease_rcache_leased(const void *rcache);
ucs_status_t ib_lease_rcache_get_leased(struct ucs_mrlease_rcache *lrc, void *address,
                                        size_t length, int prot, void *arg,
                                        struct ucs_rcache_region **region_p);


#endif
