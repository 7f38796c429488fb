/*
 * Peak pinned bytes during one restore (make bench-rdma, in the guest), for a
 * registered range R of which an affected range A changes:
 *
 *  rcache  a UCX registration cache region (IB memory domain) that nobody
 *          holds: ucp_mem_map(R), ucp_mem_unmap (the region stays cached and
 *          registered), A replaced, progress (mrlease invalidates the
 *          region), ucp_mem_map(R) again
 *  kept    a registration whose remote key a peer holds: ucp_mem_map(R) and
 *          ucp_rkey_pack (libuct_ib_lease hands out a memory window's key),
 *          A replaced, progress until the window is re-bound to the new pages
 *          (ib_lease_rebind registers them before it deregisters the old);
 *          then a second restore of the same registration (kept-2nd)
 *
 * Bytes registered are counted by bench/reg_counter.c (preloaded last): the
 * bytes of every live registration, as the kernel accounts them in the
 * process's VmPin (ib_umem_get adds each registration's pages to pinned_vm,
 * shared pages counted again). VmPin itself is read too: before and after
 * one registration (does this kernel's rxe account it?) and sampled by a
 * thread during the restore.
 *
 *   bench_pinned CSV R_KiB A_KiB ROUND
 * Appends rows "pinned,CASE,R,A,ROUND,PEAK_BYTES,PEAK_OVER_R,BEFORE_OVER_R,
 * AFTER_OVER_R,VMPIN_KIB_AT_REG,VMPIN_PEAK_KIB" (header: bench_rdma.sh), the
 * bytes being those registered for the range. The VmPin sampler reads
 * /proc/self/status in a loop: it can miss a short peak, which the counts
 * cannot.
 * Needs UCX_IB_GID_INDEX=0, UCX_NET_DEVICES=rxe0:1 on soft-RoCE, and both
 * libraries preloaded for "kept" (bench_rdma.sh sets them).
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(_cond, ...) \
    do { \
        if (!(_cond)) { \
            fprintf(stderr, "bench_pinned: " __VA_ARGS__); \
            fprintf(stderr, "\n"); \
            exit(2); \
        } \
    } while (0)

typedef void (*counts_t)(uint64_t out[5]);
typedef void (*peak_reset_t)(void);

static counts_t     reg_counts;
static peak_reset_t reg_peak_reset;
static volatile int sampling;
static volatile long vmpin_peak_kb;

static long vmpin_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "re");

    while ((f != NULL) && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "VmPin:", 6)) {
            kb = atol(line + 6);
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kb;
}

static void *vmpin_sampler(void *arg)
{
    long kb;

    while (sampling) {
        kb = vmpin_kb();
        vmpin_peak_kb = (kb > vmpin_peak_kb) ? kb : vmpin_peak_kb;
    }
    return NULL;
}

static double now_sec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static ucp_mem_h mem_map(ucp_context_h ctx, void *buf, size_t len)
{
    ucp_mem_map_params_t p = {.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                                            UCP_MEM_MAP_PARAM_FIELD_LENGTH,
                              .address    = buf,
                              .length     = len};
    ucp_mem_h memh;

    CHECK(ucp_mem_map(ctx, &p, &memh) == UCS_OK, "ucp_mem_map of %zu bytes", len);
    return memh;
}

/* Replace [a, a + len) with new zero pages, by raw syscall (what UCX's hooks
 * do not see; userfaultfd or mrlease.ko does) */
static void replace(char *a, size_t len)
{
    void *p = (void*)syscall(SYS_mmap, a, len, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

    CHECK(p == a, "mmap MAP_FIXED over the affected range");
    memset(a, 2, len);
}

/* One restore of [buf, buf + r): A replaced in the middle, progress (rcache:
 * then registered anew); a row of the peak against what was registered
 * before it. */
static void restore(const char *name, ucp_context_h ctx, ucp_worker_h worker,
                    char *buf, size_t r, size_t a, int round, long pin_reg,
                    uint64_t others, FILE *csv)
{
    uint64_t c0[5], c1[5];
    pthread_t sampler;
    ucp_mem_h memh2;
    double t;

    reg_peak_reset();
    reg_counts(c0);
    vmpin_peak_kb = 0;
    sampling      = 1;
    pthread_create(&sampler, NULL, vmpin_sampler, NULL);
    replace(buf + (r - a) / 2, a); /* in the middle of the range */
    for (t = now_sec(); now_sec() < t + 1.5;) { /* the restore (kept: its retry) */
        ucp_worker_progress(worker);
    }
    if (!strcmp(name, "rcache")) {
        memh2 = mem_map(ctx, buf, r); /* registered anew */
        CHECK(ucp_mem_unmap(ctx, memh2) == UCS_OK, "ucp_mem_unmap");
    }
    sampling = 0;
    pthread_join(sampler, NULL);
    reg_counts(c1);

    /* bytes registered for the range: what is registered, less what was
     * registered apart from it before it was first registered (UCX's own
     * buffers: "others") */
    printf("bench_pinned: %-8s R %8zu KiB, A %6zu KiB: for this range %.2f x R "
           "registered before the restore, %.2f x R at its peak (goal R + A = %.3f x "
           "R), %.2f x R after it (%lu registrations, %lu deregistrations in it); "
           "VmPin sampled peak %ld KiB, all registrations %zu KiB at the peak\n",
           name, r >> 10, a >> 10, (double)(c0[3] - others) / r,
           (double)(c1[4] - others) / r, (double)(r + a) / r,
           (double)(c1[3] - others) / r, (unsigned long)(c1[0] - c0[0]),
           (unsigned long)(c1[1] - c0[1]), vmpin_peak_kb, (size_t)(c1[4] >> 10));
    fprintf(csv, "pinned,%s,%zu,%zu,%d,%llu,%.4f,%.4f,%.4f,%ld,%ld\n", name, r, a, round,
            (unsigned long long)(c1[4] - others), (double)(c1[4] - others) / r,
            (double)(c0[3] - others) / r, (double)(c1[3] - others) / r, pin_reg,
            vmpin_peak_kb);
}

/* rcache: one restore of a cached region nobody holds; kept: two restores in
 * a row of a registration whose key a peer holds */
static void run_case(const char *name, ucp_context_h ctx, ucp_worker_h worker,
                     size_t r, size_t a, int round, FILE *csv)
{
    char *buf = mmap(NULL, r, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int kept  = !strcmp(name, "kept");
    void *rkey = NULL;
    uint64_t c[5];
    ucp_mem_h memh;
    size_t rkey_len;
    long pin0;

    CHECK(buf != MAP_FAILED, "mmap %zu", r);
    memset(buf, 1, r);
    ucp_worker_progress(worker);
    reg_counts(c); /* registered apart from the range: c[3] */
    pin0 = vmpin_kb();
    memh = mem_map(ctx, buf, r);
    pin0 = vmpin_kb() - pin0; /* does this kernel's rxe account it? */
    if (kept) {
        CHECK(ucp_rkey_pack(ctx, memh, &rkey, &rkey_len) == UCS_OK, "ucp_rkey_pack");
    } else {
        CHECK(ucp_mem_unmap(ctx, memh) == UCS_OK, "ucp_mem_unmap");
    }
    ucp_worker_progress(worker);
    restore(name, ctx, worker, buf, r, a, round, pin0, c[3], csv);
    if (kept) {
        restore("kept-2nd", ctx, worker, buf, r, a, round, pin0, c[3], csv);
        ucp_rkey_buffer_release(rkey);
        CHECK(ucp_mem_unmap(ctx, memh) == UCS_OK, "ucp_mem_unmap");
    }
    munmap(buf, r);
}

int main(int argc, char **argv)
{
    ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES,
                           .features   = UCP_FEATURE_RMA | UCP_FEATURE_TAG};
    ucp_worker_params_t wparams = {0};
    ucp_context_h ctx;
    ucp_worker_h worker;
    size_t r, a;
    FILE *csv;
    int round;

    CHECK(argc == 5, "usage: bench_pinned CSV R_KiB A_KiB ROUND");
    r     = (size_t)atol(argv[2]) << 10;
    a     = (size_t)atol(argv[3]) << 10;
    round = atoi(argv[4]);
    CHECK((a > 0) && (a <= r) && (a % 4096 == 0), "A must be pages within R");
    reg_counts     = (counts_t)dlsym(RTLD_DEFAULT, "mrl_bench_reg_counts");
    reg_peak_reset = (peak_reset_t)dlsym(RTLD_DEFAULT, "mrl_bench_reg_peak_reset");
    CHECK((reg_counts != NULL) && (reg_peak_reset != NULL),
          "bench/libmrl_reg_counter.so is not preloaded (last in LD_PRELOAD)");
    csv = fopen(argv[1], "a");
    CHECK(csv != NULL, "cannot open %s", argv[1]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    CHECK(ucp_init(&params, NULL, &ctx) == UCS_OK, "ucp_init");
    CHECK(ucp_worker_create(ctx, &wparams, &worker) == UCS_OK, "ucp_worker_create");

    run_case("kept", ctx, worker, r, a, round, csv);
    run_case("rcache", ctx, worker, r, a, round, csv);

    ucp_worker_destroy(worker);
    ucp_cleanup(ctx);
    fclose(csv);
    return 0;
}
