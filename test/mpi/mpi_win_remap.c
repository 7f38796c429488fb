/*
 * mpi_win_remap: one-sided communication into a window whose memory the
 * target changes behind libc's back (raw syscalls) between epochs. The
 * origin holds the window's remote key from MPI_Win_create on; every byte it
 * reads and writes is checked.
 *
 *   mpi_win_remap ITERATIONS MODE
 *     MODE: remap     munmap + mmap(MAP_FIXED) at the same address: new pages
 *           mremap    new pages built elsewhere, moved over the window
 *           dontneed  madvise(MADV_DONTNEED): the pages are dropped
 *           none      no change (control)
 *
 * Rank 1 owns a 1 MiB window and changes it on every other iteration, then
 * fills it. Per iteration: rank 0 MPI_Gets the whole window and checks it;
 * then MPI_Puts 512 KiB and MPI_Accumulates (MPI_SUM) into 4096 ints, and
 * rank 1 checks both. Prints "mpi_win_remap: ... N wrong bytes"; exits 1 on a
 * wrong byte.
 */
#define _GNU_SOURCE
#include "raw_change.h"

#include <mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LEN      (1 << 20)
#define PUT_LEN  (LEN / 2)
#define ACC_OFF  (LEN / 2)
#define ACC_N    4096

static unsigned char byte_at(int iter, size_t i, int salt)
{
    return (unsigned char)(i * 7 + iter * 31 + salt);
}

static void change(unsigned char *buf, const char *mode)
{
    int ret = mrl_raw_change(buf, LEN, mode);

    if ((ret == 1) && strcmp(mode, "none")) {
        fprintf(stderr, "mpi_win_remap: unknown mode %s\n", mode);
        ret = -1;
    }
    if (ret < 0) {
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

int main(int argc, char **argv)
{
    int iters = (argc > 1) ? atoi(argv[1]) : 8, rank, size, it, changes = 0;
    const char *mode = (argc > 2) ? argv[2] : "remap";
    long bad_get = 0, bad_put = 0, bad_acc = 0, bad[3], total[3];
    unsigned char *win_buf, *local;
    int *acc_src;
    double t0;
    MPI_Win win;
    size_t i;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        fprintf(stderr, "mpi_win_remap: needs exactly 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    win_buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    local   = malloc(LEN);
    acc_src = malloc(ACC_N * sizeof(int));
    if ((win_buf == MAP_FAILED) || (local == NULL) || (acc_src == NULL)) {
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    memset(win_buf, 0, LEN);
    MPI_Win_create(win_buf, LEN, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    t0 = MPI_Wtime();

    for (it = 0; it < iters; ++it) {
        if (rank == 1) {
            if ((it % 2 == 1) && strcmp(mode, "none")) {
                change(win_buf, mode);
                ++changes;
            }
            for (i = 0; i < LEN; ++i) {
                win_buf[i] = byte_at(it, i, 1);
            }
        }

        /* epoch 1: the origin reads what the target has just written */
        MPI_Win_fence(0, win);
        if (rank == 0) {
            MPI_Get(local, LEN, MPI_BYTE, 1, 0, LEN, MPI_BYTE, win);
        }
        MPI_Win_fence(0, win);
        if (rank == 0) {
            for (i = 0; i < LEN; ++i) {
                bad_get += (local[i] != byte_at(it, i, 1));
            }
        }

        /* epoch 2: the origin writes and accumulates; the target checks */
        if (rank == 0) {
            for (i = 0; i < PUT_LEN; ++i) {
                local[i] = byte_at(it, i, 2);
            }
            for (i = 0; i < ACC_N; ++i) {
                acc_src[i] = (int)i + it;
            }
            MPI_Put(local, PUT_LEN, MPI_BYTE, 1, 0, PUT_LEN, MPI_BYTE, win);
            MPI_Accumulate(acc_src, ACC_N, MPI_INT, 1, ACC_OFF, ACC_N, MPI_INT,
                           MPI_SUM, win);
        }
        MPI_Win_fence(0, win);
        if (rank == 1) {
            const int *acc = (const int*)(win_buf + ACC_OFF);
            for (i = 0; i < PUT_LEN; ++i) {
                bad_put += (win_buf[i] != byte_at(it, i, 2));
            }
            for (i = 0; i < ACC_N; ++i) {
                /* the target had written byte_at(it, ., 1) there */
                unsigned char orig[sizeof(int)];
                size_t k;
                int expect;

                for (k = 0; k < sizeof(int); ++k) {
                    orig[k] = byte_at(it, ACC_OFF + i * sizeof(int) + k, 1);
                }
                memcpy(&expect, orig, sizeof(int));
                expect += (int)i + it;
                bad_acc += (acc[i] != expect) * (int)sizeof(int);
            }
        }
    }

    bad[0] = bad_get;
    bad[1] = bad_put;
    bad[2] = bad_acc;
    MPI_Reduce(bad, total, 3, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Bcast(&changes, 1, MPI_INT, 1, MPI_COMM_WORLD);
    if (rank == 0) {
        long sum = total[0] + total[1] + total[2];
        printf("mpi_win_remap: mode %s, %d iterations, %d window changes on rank 1; "
               "%ld wrong bytes (get %ld, put %ld, accumulate %ld), %.1f s\n", mode,
               iters, changes, sum, total[0], total[1], total[2], MPI_Wtime() - t0);
        printf("mpi_win_remap: %s\n", sum ? "FAILED" : "ok");
        fflush(stdout);
    }
    MPI_Win_free(&win);
    MPI_Finalize();
    return (rank == 0 && (total[0] + total[1] + total[2])) ? 1 : 0;
}
