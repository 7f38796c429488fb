/*
 * bench_regcost: what pinning memory for a device costs, per size.
 *
 *   bench_regcost verbs CSV    (soft-RoCE guest: needs rxe0 and rxe1)
 *       ibv_reg_mr and ibv_dereg_mr of a populated buffer, and a restore as
 *       mrlease does it: register the new pages, bind a type 1 memory window
 *       over them (the rkey the peer keeps), deregister the old registration
 *   bench_regcost iouring CSV  (native, no RDMA device needed)
 *       io_uring_register(IORING_REGISTER_BUFFERS) and UNREGISTER of one
 *       populated buffer: long-term pinning through pin_user_pages(FOLL_LONGTERM),
 *       the kernel path ibv_reg_mr pins through (raw syscalls, no liburing)
 *
 *       (4 KiB pages, and transparent huge pages where the kernel gives them)
 * The verbs buffers are 4 KiB pages (MADV_NOHUGEPAGE), as most MPI buffers.
 * Sizes 4 KiB .. 64 MiB (x4); median of MRL_BENCH_REPS (default 21) runs,
 * after one warm-up. Appends rows to CSV: regcost,WHAT,SIZE,US,US_PER_MIB
 * and prints a table.
 */
#define _GNU_SOURCE
#include "../test/rdma/verbs_pair.h"

#include <linux/io_uring.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static FILE *csv;
static int reps = 21;

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double*)a, y = *(const double*)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static void row(const char *what, size_t size, double *v)
{
    double us = median(v, reps);

    printf("%-28s %10zu B %12.1f us %12.1f us/MiB\n", what, size, us,
           us * (double)(1 << 20) / size);
    fprintf(csv, "regcost,%s,%zu,%.3f,%.3f\n", what, size, us,
            us * (double)(1 << 20) / size);
}

/* HUGE: let transparent huge pages back it (the default), else 4 KiB pages */
static void *populated(size_t size, int huge)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        perror("bench_regcost: mmap");
        exit(1);
    }
    madvise(p, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(p, 1, size);
    return p;
}

/* bind MW over [addr, addr+size) of MR, keeping the key the peer holds, as
 * libuct_ib_lease does (size 0 unbinds) */
static int bind_mw(mrl_side_t *s, struct ibv_mw *mw, struct ibv_mr *mr, void *addr,
                   size_t size)
{
    static uint32_t key;
    struct ibv_send_wr wr = {0}, *bad;
    struct ibv_wc wc;
    int n;

    key = key ? key : mw->rkey;
    wr.opcode                        = IBV_WR_BIND_MW;
    wr.send_flags                    = IBV_SEND_SIGNALED;
    wr.bind_mw.mw                    = mw;
    wr.bind_mw.rkey                  = key;
    wr.bind_mw.bind_info.mr          = mr;
    wr.bind_mw.bind_info.addr        = (uintptr_t)addr;
    wr.bind_mw.bind_info.length      = size;
    wr.bind_mw.bind_info.mw_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    if (ibv_post_send(s->qp, &wr, &bad)) {
        return -1;
    }
    while ((n = ibv_poll_cq(s->cq, 1, &wc)) == 0) {
    }
    if ((n < 0) || (wc.status != IBV_WC_SUCCESS)) {
        fprintf(stderr, "bench_regcost: bind: %s\n",
                (n < 0) ? "poll error" : ibv_wc_status_str(wc.status));
        return -1;
    }
    mw->rkey = key;
    return 0;
}

static int bench_verbs(void)
{
    const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                       IBV_ACCESS_REMOTE_READ | IBV_ACCESS_MW_BIND;
    double *reg = calloc(reps, sizeof(double)), *dereg = calloc(reps, sizeof(double));
    double *restore = calloc(reps, sizeof(double));
    struct ibv_mr *mr, *old;
    struct ibv_mw *mw;
    mrl_pair_t pair;
    size_t size;
    void *p, *q;
    int r;

    if (mrl_pair_open(&pair, "rxe0", "rxe1", 0) != 0) {
        fprintf(stderr, "bench_regcost: no rxe0/rxe1 pair (run in the guest)\n");
        return 1;
    }
    mw = ibv_alloc_mw(pair.a.pd, IBV_MW_TYPE_1);
    if (mw == NULL) {
        fprintf(stderr, "bench_regcost: ibv_alloc_mw: %s\n", strerror(errno));
        return 1;
    }
    for (size = 4096; size <= (64u << 20); size *= 4) {
        p = populated(size, 0);
        q = populated(size, 0);
        for (r = -1; r < reps; ++r) {
            double t0 = now_us(), t1, t2, t3;

            mr = ibv_reg_mr(pair.a.pd, p, size, access);
            t1 = now_us();
            if ((mr == NULL) || ibv_dereg_mr(mr)) {
                fprintf(stderr, "bench_regcost: ibv_reg_mr(%zu): %s\n", size, strerror(errno));
                return 1;
            }
            t2 = now_us();
            /* a restore: the window is bound over the old registration at p;
             * the new pages are at q */
            old = ibv_reg_mr(pair.a.pd, p, size, access);
            if ((old == NULL) || bind_mw(&pair.a, mw, old, p, size)) {
                fprintf(stderr, "bench_regcost: window bind (%zu) failed\n", size);
                return 1;
            }
            t3 = now_us();
            mr = ibv_reg_mr(pair.a.pd, q, size, access);
            if ((mr == NULL) || bind_mw(&pair.a, mw, mr, q, size) || ibv_dereg_mr(old)) {
                fprintf(stderr, "bench_regcost: restore (%zu) failed\n", size);
                return 1;
            }
            if (r >= 0) {
                reg[r]     = t1 - t0;
                dereg[r]   = t2 - t1;
                restore[r] = now_us() - t3;
            }
            if (bind_mw(&pair.a, mw, mr, q, 0) || ibv_dereg_mr(mr)) {
                fprintf(stderr, "bench_regcost: unbind (%zu) failed\n", size);
                return 1;
            }
        }
        row("ibv_reg_mr", size, reg);
        row("ibv_dereg_mr", size, dereg);
        row("restore(reg+bind_mw+dereg)", size, restore);
        munmap(p, size);
        munmap(q, size);
    }
    ibv_dealloc_mw(mw);
    mrl_pair_close(&pair);
    return 0;
}

static int bench_iouring(int huge)
{
    double *reg = calloc(reps, sizeof(double)), *unreg = calloc(reps, sizeof(double));
    struct io_uring_params params = {0};
    struct iovec iov;
    size_t size;
    int fd, r;

    fd = syscall(__NR_io_uring_setup, 4, &params);
    if (fd < 0) {
        fprintf(stderr, "bench_regcost: io_uring_setup: %s (io_uring disabled? "
                "/proc/sys/kernel/io_uring_disabled)\n", strerror(errno));
        return 1;
    }
    for (size = 4096; size <= (64u << 20); size *= 4) {
        iov.iov_base = populated(size, huge);
        iov.iov_len  = size;
        for (r = -1; r < reps; ++r) {
            double t0 = now_us(), t1;

            if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_BUFFERS, &iov, 1)) {
                fprintf(stderr, "bench_regcost: IORING_REGISTER_BUFFERS of %zu bytes: %s "
                        "(RLIMIT_MEMLOCK too low without CAP_IPC_LOCK?)\n", size,
                        strerror(errno));
                return 1;
            }
            t1 = now_us();
            if (syscall(__NR_io_uring_register, fd, IORING_UNREGISTER_BUFFERS, NULL, 0)) {
                fprintf(stderr, "bench_regcost: IORING_UNREGISTER_BUFFERS: %s\n",
                        strerror(errno));
                return 1;
            }
            if (r >= 0) {
                reg[r]   = t1 - t0;
                unreg[r] = now_us() - t1;
            }
        }
        row(huge ? "io_uring_register(THP)" : "io_uring_register", size, reg);
        row(huge ? "io_uring_unregister(THP)" : "io_uring_unregister", size, unreg);
        munmap(iov.iov_base, size);
    }
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if ((argc < 3) || (strcmp(argv[1], "verbs") && strcmp(argv[1], "iouring"))) {
        fprintf(stderr, "usage: bench_regcost verbs|iouring CSV\n");
        return 2;
    }
    if (getenv("MRL_BENCH_REPS")) {
        reps = atoi(getenv("MRL_BENCH_REPS")) > 0 ? atoi(getenv("MRL_BENCH_REPS")) : reps;
    }
    csv = fopen(argv[2], "a");
    if (csv == NULL) {
        perror(argv[2]);
        return 1;
    }
    printf("%-28s %12s %15s %18s\n", "what", "size", "median", "per MiB");
    if (!strcmp(argv[1], "verbs")) {
        return bench_verbs();
    }
    return bench_iouring(0) || bench_iouring(1);
}
