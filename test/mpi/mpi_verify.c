/*
 * mpi_verify: an MPI job that checks every byte it moves.
 *   ping-pong (8 B .. 1 MiB, point-to-point, rank 0 <-> every other rank),
 *   allreduce (sum of 256 Ki ints), one-sided (MPI_Put and MPI_Get into a
 *   window under fences). Prints a one-line summary from rank 0; exits
 *   non-zero on any wrong byte.
 *   mpi_verify [ITERATIONS]
 */
#include <mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned char byte_at(int iter, int size, int who, size_t i)
{
    return (unsigned char)(i * 31 + iter * 7 + size + who * 101);
}

static long check(const unsigned char *buf, size_t len, int iter, int who)
{
    long bad = 0;
    size_t i;

    for (i = 0; i < len; ++i) {
        bad += (buf[i] != byte_at(iter, (int)len, who, i));
    }
    return bad;
}

static void fill(unsigned char *buf, size_t len, int iter, int who)
{
    size_t i;

    for (i = 0; i < len; ++i) {
        buf[i] = byte_at(iter, (int)len, who, i);
    }
}

int main(int argc, char **argv)
{
    int iters = (argc > 1) ? atoi(argv[1]) : 10;
    const size_t max = 1 << 20, nints = 256 * 1024;
    long bad = 0, total_bad, verified = 0, total_verified;
    int rank, size, peer, it, i;
    unsigned char *buf, *win_buf;
    double t0, t;
    size_t len;
    int *vec, *sum;
    MPI_Win win;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    buf = malloc(max);
    t0  = MPI_Wtime();

    /* ping-pong: rank 0 with each peer */
    for (peer = 1; peer < size; ++peer) {
        for (len = 8; len <= max; len *= 4) {
            for (it = 0; it < iters; ++it) {
                if (rank == 0) {
                    fill(buf, len, it, 0);
                    MPI_Send(buf, (int)len, MPI_BYTE, peer, it, MPI_COMM_WORLD);
                    MPI_Recv(buf, (int)len, MPI_BYTE, peer, it, MPI_COMM_WORLD,
                             MPI_STATUS_IGNORE);
                    bad += check(buf, len, it, peer);
                    verified += len;
                } else if (rank == peer) {
                    MPI_Recv(buf, (int)len, MPI_BYTE, 0, it, MPI_COMM_WORLD,
                             MPI_STATUS_IGNORE);
                    bad += check(buf, len, it, 0);
                    verified += len;
                    fill(buf, len, it, peer);
                    MPI_Send(buf, (int)len, MPI_BYTE, 0, it, MPI_COMM_WORLD);
                }
            }
        }
    }

    /* allreduce */
    vec = malloc(nints * sizeof(int));
    sum = malloc(nints * sizeof(int));
    for (it = 0; it < iters; ++it) {
        for (i = 0; i < (int)nints; ++i) {
            vec[i] = i + rank * it;
        }
        MPI_Allreduce(vec, sum, (int)nints, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        for (i = 0; i < (int)nints; ++i) {
            bad += (sum[i] != size * i + it * size * (size - 1) / 2);
        }
        verified += nints * sizeof(int);
    }

    /* one-sided: everyone puts into its right neighbour, then gets it back */
    win_buf = malloc(max);
    memset(win_buf, 0, max);
    MPI_Win_create(win_buf, max, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    for (it = 0; it < iters; ++it) {
        fill(buf, max, it, rank);
        MPI_Win_fence(0, win);
        MPI_Put(buf, (int)max, MPI_BYTE, (rank + 1) % size, 0, (int)max, MPI_BYTE, win);
        MPI_Win_fence(0, win);
        bad += check(win_buf, max, it, (rank + size - 1) % size);
        memset(buf, 0, max);
        MPI_Get(buf, (int)max, MPI_BYTE, (rank + 1) % size, 0, (int)max, MPI_BYTE, win);
        MPI_Win_fence(0, win);
        bad += check(buf, max, it, rank);
        verified += 2 * max;
    }
    MPI_Win_free(&win);

    t = MPI_Wtime() - t0;
    MPI_Reduce(&bad, &total_bad, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&verified, &total_verified, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    {
        char host[64], line[256];
        const char *dev = getenv("UCX_NET_DEVICES"), *tls = getenv("UCX_TLS");
        gethostname(host, sizeof(host));
        snprintf(line, sizeof(line), "rank %d on %s: UCX_TLS=%s UCX_NET_DEVICES=%s",
                 rank, host, tls ? tls : "(default)", dev ? dev : "(default)");
        if (rank == 0) {
            printf("%s\n", line);
            for (i = 1; i < size; ++i) {
                MPI_Recv(line, sizeof(line), MPI_CHAR, i, 999, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
                printf("%s\n", line);
            }
        } else {
            MPI_Send(line, sizeof(line), MPI_CHAR, 0, 999, MPI_COMM_WORLD);
        }
    }
    if (rank == 0) {
        printf("mpi_verify: %d ranks, %d iterations: ping-pong 8 B..1 MiB, allreduce "
               "256 Ki ints, MPI_Put/MPI_Get 1 MiB; %.1f MiB verified, %ld wrong bytes, "
               "%.1f s\n", size, iters, total_verified / 1048576.0, total_bad, t);
        printf("mpi_verify: %s\n", total_bad ? "FAILED" : "ok");
    }
    MPI_Finalize();
    free(buf);
    free(win_buf);
    free(vec);
    free(sum);
    return (rank == 0 && total_bad) ? 1 : 0;
}
