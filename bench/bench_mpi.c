/*
 * bench_mpi: MPI ping-pong, MPI_Put and MPI_Get over message sizes, with the
 * origin's buffers changed behind libc's back (raw munmap + mmap(MAP_FIXED):
 * new pages, then refilled) every N operations, every byte that arrives
 * checked. bench/bench_rdma.sh runs it on the three stacks (plain UCX, UCX
 * with its registration cache off, mrlease) in the soft-RoCE guest.
 *
 *   mpirun -np 2 bench_mpi STACK ROUND
 *   Environment:
 *     MRL_BENCH_SIZES  message sizes in bytes (default 8 64 512 4096 32768
 *                      262144 1048576 4194304)
 *     MRL_BENCH_CHURN  N values, 0 = no change (default 0 100 10 1)
 *     MRL_BENCH_MIB    MiB moved per (test, N, size) point (default 16;
 *                      20 to 1000 operations, at least N)
 *
 * Rank 0 prints one CSV row per point:
 *   mpi,TEST,STACK,ROUND,N,SIZE,OPS,US_PER_OP,MB_PER_S,CPU_US_PER_OP,
 *   REGS_PER_OP,WRONG_BYTES,CHANGES
 * US_PER_OP and MB_PER_S time the communication calls only (not the change,
 * the refill or the checks); ping-pong's is half a round trip. CPU_US_PER_OP
 * is rank 0's process CPU time (all threads) over the same calls. REGS_PER_OP
 * counts ibv_reg_mr calls of both ranks when bench/reg_counter is preloaded
 * (else -1). WRONG_BYTES: bytes that differed from what was sent, checked on
 * every operation when N > 0, on the last one when N = 0.
 */
#define _GNU_SOURCE
#include "../test/mpi/raw_change.h"

#include <mpi.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define MAX_SIZES 32
#define MAX_CHURN 8

typedef void (*reg_counts_t)(uint64_t out[5]);

static int rank;
static size_t max_size;
static unsigned char *sbuf, *rbuf, *win_buf;
static MPI_Win win;
static reg_counts_t reg_counts;

static unsigned char pattern(int epoch, int who, size_t i)
{
    return (unsigned char)(i * 13 + epoch * 29 + who * 71 + 1);
}

static void fill(unsigned char *buf, size_t len, int epoch, int who)
{
    size_t i;

    for (i = 0; i < len; ++i) {
        buf[i] = pattern(epoch, who, i);
    }
}

static long wrong(const unsigned char *buf, size_t len, int epoch, int who)
{
    long bad = 0;
    size_t i;

    for (i = 0; i < len; ++i) {
        bad += (buf[i] != pattern(epoch, who, i));
    }
    return bad;
}

static void change(unsigned char *buf)
{
    /* the whole buffer: all its pages are new (zero) afterwards */
    if (mrl_raw_change(buf, max_size, "remap") != 0) {
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static uint64_t regs_now(void)
{
    uint64_t c[5] = {0, 0, 0, 0, 0};

    if (reg_counts != NULL) {
        reg_counts(c);
    }
    return c[0];
}

/* one operation of TEST with SIZE bytes; returns wrong bytes seen if CHECK */
static long op(const char *test, size_t size, int epoch, int check)
{
    long bad = 0;

    if (!strcmp(test, "pingpong")) {
        if (rank == 0) {
            MPI_Send(sbuf, size, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
            MPI_Recv(rbuf, size, MPI_BYTE, 1, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(rbuf, size, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(sbuf, size, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
        }
        if (check) {
            bad = wrong(rbuf, size, epoch, 1 - rank);
        }
    } else if (!strcmp(test, "put")) {
        if (rank == 0) {
            MPI_Put(sbuf, size, MPI_BYTE, 1, 0, size, MPI_BYTE, win);
            MPI_Win_flush(1, win);
        }
        if (check) {
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 1) {
                MPI_Win_sync(win);
                bad = wrong(win_buf, size, epoch, 0);
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
    } else { /* get: into rank 0's changing buffer, from the window */
        if (rank == 0) {
            MPI_Get(rbuf, size, MPI_BYTE, 1, 0, size, MPI_BYTE, win);
            MPI_Win_flush(1, win);
            if (check) {
                bad = wrong(rbuf, size, 0, 1);
            }
        }
    }
    return bad;
}

static void point(const char *stack, const char *round, const char *test, int n,
                  size_t size, size_t budget)
{
    size_t ops = budget / size, k;
    int epoch = 0, changes = 0, both = !strcmp(test, "pingpong");
    double t_comm = 0, cpu = 0, t0, c0, res[2];
    long bad = 0, bad_sum, checked = 0;
    uint64_t r0, regs, regs_sum;

    ops = (ops < 20) ? 20 : (ops > 1000) ? 1000 : ops;
    ops = (ops < (size_t)n) ? (size_t)n : ops;
    if (!strcmp(test, "get") && (rank == 1)) {
        fill(win_buf, size, 0, 1); /* what every get must read */
    }
    fill(sbuf, size, 0, rank);
    MPI_Barrier(MPI_COMM_WORLD);
    op(test, size, 0, 0); /* warm-up: registers (and caches) the buffers */
    MPI_Barrier(MPI_COMM_WORLD);
    r0 = regs_now();
    for (k = 0; k < ops; ++k) {
        int check = (n > 0) || (k == ops - 1);

        if ((n > 0) && (k % n == 0)) {
            /* the changing side: rank 0's buffers, both ranks' for ping-pong */
            ++epoch;
            ++changes;
            if ((rank == 0) || both) {
                change(sbuf);
                change(rbuf);
                fill(sbuf, size, epoch, rank);
            }
            MPI_Barrier(MPI_COMM_WORLD); /* the peer's change is not timed either */
        }
        t0 = MPI_Wtime();
        c0 = cpu_now();
        /* get reads a fixed window (epoch 0); the others what was filled */
        bad += op(test, size, epoch, check);
        cpu += cpu_now() - c0;
        t_comm += MPI_Wtime() - t0;
        checked += check;
    }
    regs = regs_now() - r0;
    MPI_Reduce(&bad, &bad_sum, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&regs, &regs_sum, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    res[0] = t_comm;
    res[1] = cpu;
    if (rank == 0) {
        double msgs  = (double)ops * (both ? 2 : 1);
        double us_op = res[0] * 1e6 / msgs;

        printf("mpi,%s,%s,%s,%d,%zu,%zu,%.3f,%.6g,%.3f,%.4f,%ld,%d\n", test, stack, round,
               n, size, ops, us_op, size / us_op, res[1] / msgs,
               reg_counts ? regs_sum / msgs : -1.0, bad_sum, changes);
        fflush(stdout);
    }
}

static int parse_list(const char *env, const char *dflt, long *out, int max)
{
    const char *s = getenv(env);
    char *copy = strdup((s && *s) ? s : dflt), *tok, *save = NULL;
    int n = 0;

    for (tok = strtok_r(copy, " ,", &save); tok && n < max;
         tok = strtok_r(NULL, " ,", &save)) {
        out[n++] = atol(tok);
    }
    free(copy);
    return n;
}

int main(int argc, char **argv)
{
    const char *tests[] = {"pingpong", "put", "get"};
    long sizes[MAX_SIZES], churn[MAX_CHURN];
    int nsizes, nchurn, nranks, t, c, s;
    size_t budget;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if ((nranks != 2) || (argc < 3)) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 2 bench_mpi STACK ROUND\n");
        }
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    nsizes = parse_list("MRL_BENCH_SIZES", "8 64 512 4096 32768 262144 1048576 4194304",
                        sizes, MAX_SIZES);
    nchurn = parse_list("MRL_BENCH_CHURN", "0 100 10 1", churn, MAX_CHURN);
    budget = (size_t)(getenv("MRL_BENCH_MIB") ? atof(getenv("MRL_BENCH_MIB")) : 16) << 20;
    for (s = 0, max_size = 4096; s < nsizes; ++s) {
        max_size = ((size_t)sizes[s] > max_size) ? (size_t)sizes[s] : max_size;
    }
    max_size = (max_size + 4095) & ~(size_t)4095;
    reg_counts = (reg_counts_t)dlsym(RTLD_DEFAULT, "mrl_bench_reg_counts");
    sbuf = mmap(NULL, max_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    rbuf = mmap(NULL, max_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    win_buf = mmap(NULL, max_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if ((sbuf == MAP_FAILED) || (rbuf == MAP_FAILED) || (win_buf == MAP_FAILED)) {
        perror("bench_mpi: mmap");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_Win_create(win_buf, max_size, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Win_lock_all(0, win);
    /* no change first (the plain stack's cache goes stale for good after one) */
    for (c = 0; c < nchurn; ++c) {
        for (t = 0; t < 3; ++t) {
            for (s = 0; s < nsizes; ++s) {
                point(argv[1], argv[2], tests[t], (int)churn[c], sizes[s], budget);
            }
        }
    }
    if (reg_counts != NULL) {
        /* the most bytes this rank had registered at once, against its
         * buffers (two of max_size, and the window's on rank 1) */
        uint64_t c[5];

        reg_counts(c);
        printf("# peak_registered,%s,%s,rank %d,%llu,buffers %zu\n", argv[1], argv[2], rank,
               (unsigned long long)c[4], (rank == 1 ? 3 : 2) * max_size);
        fflush(stdout);
    }
    MPI_Win_unlock_all(win);
    MPI_Win_free(&win);
    MPI_Finalize();
    return 0;
}
