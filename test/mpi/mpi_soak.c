/*
 * mpi_soak: many decoherence events under MPI traffic, every byte checked.
 *
 *   mpi_soak ROUNDS [BUFFERS]
 *
 * Ranks 0 and 1 each hold BUFFERS (default 64) buffers of 64 KiB (rendezvous:
 * registered memory) and rank 1 a 1 MiB window that rank 0 holds the key of.
 * Each round:
 *   1. both ranks drop the pages of every buffer, one page at a time, with
 *      raw madvise(MADV_DONTNEED) syscalls (16 changes per buffer);
 *   2. rank 0 fills its buffers and sends them all to rank 1 at once
 *      (MPI_Isend/MPI_Irecv), rank 1 checks every byte;
 *   3. rank 1 drops its window's pages the same way, and after a fence
 *      rank 0 MPI_Puts the whole window; rank 1 checks every byte after the
 *      closing fence.
 * Rank 1 prints "mpi_soak: ... N changes ... M wrong bytes"; exit 1 on a
 * wrong byte. mrlease's exit summaries count the events each rank saw.
 */
#define _GNU_SOURCE
#include "raw_change.h"

#include <mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BUF_LEN  (64u << 10)
#define WIN_LEN  (1u << 20)
#define PAGE     4096u

static unsigned char byte_at(int round, int buf, size_t i)
{
    return (unsigned char)(i * 11 + round * 17 + buf * 5 + 3);
}

/* Drop every page of [p, p+len) by itself: one change, one event, each. */
static long drop_pages(unsigned char *p, size_t len)
{
    size_t off;

    for (off = 0; off < len; off += PAGE) {
        if (mrl_raw_change(p + off, PAGE, "dontneed") != 0) {
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    return (long)(len / PAGE);
}

static unsigned char *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);

    if (p == MAP_FAILED) {
        perror("mmap");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

int main(int argc, char **argv)
{
    int rounds = (argc > 1) ? atoi(argv[1]) : 10;
    int nbufs  = (argc > 2) ? atoi(argv[2]) : 64;
    long changes = 0, wrong_p2p = 0, wrong_win = 0, bytes = 0;
    unsigned char **bufs, *win_mem, *src;
    MPI_Request *reqs;
    int rank, r, b;
    MPI_Win win;
    double t0;
    size_t i;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if ((rounds < 1) || (nbufs < 1) || (nbufs > 4096)) {
        fprintf(stderr, "usage: mpi_soak ROUNDS [BUFFERS 1..4096]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    bufs = calloc(nbufs, sizeof(*bufs));
    reqs = calloc(nbufs, sizeof(*reqs));
    for (b = 0; b < nbufs; ++b) {
        bufs[b] = map(BUF_LEN);
    }
    win_mem = map(WIN_LEN);
    src     = map(WIN_LEN);
    MPI_Win_create(win_mem, WIN_LEN, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();

    for (r = 0; r < rounds; ++r) {
        if (rank < 2) {
            for (b = 0; b < nbufs; ++b) {
                changes += drop_pages(bufs[b], BUF_LEN);
            }
        }
        if (rank == 0) {
            for (b = 0; b < nbufs; ++b) {
                for (i = 0; i < BUF_LEN; ++i) {
                    bufs[b][i] = byte_at(r, b, i);
                }
                MPI_Isend(bufs[b], BUF_LEN, MPI_BYTE, 1, b, MPI_COMM_WORLD, &reqs[b]);
            }
            MPI_Waitall(nbufs, reqs, MPI_STATUSES_IGNORE);
        } else if (rank == 1) {
            for (b = 0; b < nbufs; ++b) {
                MPI_Irecv(bufs[b], BUF_LEN, MPI_BYTE, 0, b, MPI_COMM_WORLD, &reqs[b]);
            }
            MPI_Waitall(nbufs, reqs, MPI_STATUSES_IGNORE);
            for (b = 0; b < nbufs; ++b) {
                for (i = 0; i < BUF_LEN; ++i) {
                    wrong_p2p += (bufs[b][i] != byte_at(r, b, i));
                }
            }
            bytes += (long)nbufs * BUF_LEN;
            changes += drop_pages(win_mem, WIN_LEN);
        }

        MPI_Win_fence(0, win);
        if (rank == 0) {
            for (i = 0; i < WIN_LEN; ++i) {
                src[i] = byte_at(r, -1, i);
            }
            MPI_Put(src, WIN_LEN, MPI_BYTE, 1, 0, WIN_LEN, MPI_BYTE, win);
        }
        MPI_Win_fence(0, win);
        if (rank == 1) {
            for (i = 0; i < WIN_LEN; ++i) {
                wrong_win += (win_mem[i] != byte_at(r, -1, i));
            }
            bytes += WIN_LEN;
        }
    }

    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) {
        printf("mpi_soak: %d rounds, %d buffers of 64 KiB and a 1 MiB window; %ld "
               "changes on rank 1 (each rank makes about as many); %ld MiB checked; "
               "%ld wrong bytes (point-to-point %ld, window %ld), %.1f s\n", rounds,
               nbufs, changes, bytes >> 20, wrong_p2p + wrong_win, wrong_p2p,
               wrong_win, MPI_Wtime() - t0);
        printf("mpi_soak: %s\n", (wrong_p2p || wrong_win) ? "FAILED" : "ok");
    }
    MPI_Win_free(&win);
    MPI_Finalize();
    return (rank == 1) && (wrong_p2p || wrong_win);
}
