/*
 * reg_counter: an LD_PRELOAD library for the benchmarks that counts memory
 * registrations (ibv_reg_mr*, ibv_dereg_mr) and the bytes registered, then
 * calls the real functions. Put it LAST in LD_PRELOAD, after
 * libuct_ib_lease.so when that is there, so that it counts what reaches
 * libibverbs: UCX's own registrations and mrlease's re-registrations alike.
 *
 * A program reads the counts (registrations, deregistrations, bytes
 * registered, bytes registered now, most bytes registered at once) with
 * dlsym(RTLD_DEFAULT, "mrl_bench_reg_counts")
 * (absent = not preloaded). Not part of mrlease: a measuring tool.
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ibv_mr *(*reg_iova2_t)(struct ibv_pd*, void*, size_t, uint64_t, unsigned);
typedef struct ibv_mr *(*reg_t)(struct ibv_pd*, void*, size_t, int);
typedef int (*dereg_t)(struct ibv_mr*);

/* registrations, deregistrations, bytes registered, bytes registered now
 * (live MRs), the most bytes registered at once */
static uint64_t counts[5];
static __thread int depth; /* libibverbs' ibv_reg_mr calls ibv_reg_mr_iova2 */

__attribute__((visibility("default"))) void mrl_bench_reg_counts(uint64_t out[5])
{
    int i;

    for (i = 0; i < 5; ++i) {
        out[i] = __atomic_load_n(&counts[i], __ATOMIC_RELAXED);
    }
}

/* From now on, "the most bytes registered at once" starts from what is
 * registered now (bench_pinned: the peak of one restore). */
__attribute__((visibility("default"))) void mrl_bench_reg_peak_reset(void)
{
    __atomic_store_n(&counts[4], __atomic_load_n(&counts[3], __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
}

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);

    if (f == NULL) {
        fprintf(stderr, "reg_counter: %s not found after this library\n", name);
        abort();
    }
    return f;
}

static void count_reg(struct ibv_mr *mr, size_t length)
{
    uint64_t live, peak;

    if ((mr != NULL) && (depth == 1)) {
        __atomic_add_fetch(&counts[0], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&counts[2], length, __ATOMIC_RELAXED);
        live = __atomic_add_fetch(&counts[3], mr->length, __ATOMIC_RELAXED);
        peak = __atomic_load_n(&counts[4], __ATOMIC_RELAXED);
        while ((live > peak) &&
               !__atomic_compare_exchange_n(&counts[4], &peak, live, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED)) {
        }
    }
}

__attribute__((visibility("default")))
struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
                                uint64_t iova, unsigned access)
{
    static reg_iova2_t f;
    struct ibv_mr *mr;

    f = f ? f : (reg_iova2_t)real("ibv_reg_mr_iova2");
    ++depth;
    mr = f(pd, addr, length, iova, access);
    count_reg(mr, length);
    --depth;
    return mr;
}

#undef ibv_reg_mr
__attribute__((visibility("default")))
struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
    static reg_t f;
    struct ibv_mr *mr;

    f = f ? f : (reg_t)real("ibv_reg_mr");
    ++depth;
    mr = f(pd, addr, length, access);
    count_reg(mr, length);
    --depth;
    return mr;
}

__attribute__((visibility("default"))) int ibv_dereg_mr(struct ibv_mr *mr)
{
    static dereg_t f;
    size_t length = mr->length;
    int ret;

    f   = f ? f : (dereg_t)real("ibv_dereg_mr");
    ret = f(mr);
    if (ret == 0) {
        __atomic_add_fetch(&counts[1], 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&counts[3], length, __ATOMIC_RELAXED);
    }
    return ret;
}
