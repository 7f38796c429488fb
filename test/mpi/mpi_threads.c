/*
 * mpi_threads: MPI_THREAD_MULTIPLE with several threads sending and
 * receiving at once, and a changer thread that never calls MPI replacing
 * the pages under the buffers (raw syscalls) between their transfers.
 *
 *   mpi_threads THREADS ITERATIONS [SIZE]
 *
 * Ranks 0 and 1 each run THREADS workers; worker t of rank 0 sends SIZE
 * bytes (default 256 KiB: rendezvous, registered memory) to worker t of
 * rank 1, ITERATIONS times, both sides checking every byte they hold. After
 * every other transfer a worker hands its buffer to its rank's changer
 * thread, which remaps, mremaps or drops its pages (in turn) while the
 * other workers' transfers go on, and waits until it is done. Every buffer
 * sits between inaccessible guard pages, so no two share a registration.
 * Rank 1 prints "mpi_threads: ... N wrong bytes" and exits 1 on a wrong byte.
 */
#define _GNU_SOURCE
#include "raw_change.h"

#include <mpi.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_THREADS 16
#define GUARD       (2ul << 20)

static const char *modes[] = {"remap", "mremap", "dontneed"};

typedef struct {
    int             index;
    unsigned char   *buf;
    long            wrong;
    long            changes;
    int             change_wanted; /* under lock: set by worker, cleared by changer */
} worker_t;

static struct {
    int             rank, threads, iters;
    size_t          size;
    worker_t        workers[MAX_THREADS];
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             done;
    long            failed_changes;
} job = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static unsigned char byte_at(int who, int iter, size_t i)
{
    return (unsigned char)(i * 7 + iter * 13 + who * 29 + 1);
}

/* A buffer with inaccessible guard ranges on both sides. */
static unsigned char *guarded_buffer(size_t size)
{
    char *p = mmap(NULL, size + 2 * GUARD, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    if ((p == MAP_FAILED) ||
        (mprotect(p + GUARD, size, PROT_READ | PROT_WRITE) != 0)) {
        perror("guarded_buffer");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return (unsigned char*)p + GUARD;
}

/* The changer: never calls MPI. */
static void *changer_main(void *arg)
{
    long turn = 0;
    int t;

    pthread_mutex_lock(&job.lock);
    while (!job.done) {
        for (t = 0; t < job.threads; ++t) {
            worker_t *w = &job.workers[t];
            if (!w->change_wanted) {
                continue;
            }
            pthread_mutex_unlock(&job.lock);
            if (mrl_raw_change(w->buf, job.size, modes[turn++ % 3]) != 0) {
                __atomic_add_fetch(&job.failed_changes, 1, __ATOMIC_RELAXED);
            }
            pthread_mutex_lock(&job.lock);
            ++w->changes;
            w->change_wanted = 0;
            pthread_cond_broadcast(&job.cond);
        }
        if (!job.done) {
            pthread_cond_wait(&job.cond, &job.lock);
        }
    }
    pthread_mutex_unlock(&job.lock);
    return NULL;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    int it;
    size_t i;

    for (it = 0; it < job.iters; ++it) {
        if (job.rank == 0) {
            for (i = 0; i < job.size; ++i) {
                w->buf[i] = byte_at(w->index, it, i);
            }
            MPI_Send(w->buf, (int)job.size, MPI_BYTE, 1, w->index, MPI_COMM_WORLD);
        } else {
            MPI_Recv(w->buf, (int)job.size, MPI_BYTE, 0, w->index, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
            for (i = 0; i < job.size; ++i) {
                w->wrong += (w->buf[i] != byte_at(w->index, it, i));
            }
        }
        /* The buffer is idle: have the changer replace its pages, while the
         * other workers' transfers go on. */
        if (it % 2 == 0) {
            pthread_mutex_lock(&job.lock);
            w->change_wanted = 1;
            pthread_cond_broadcast(&job.cond);
            while (w->change_wanted) {
                pthread_cond_wait(&job.cond, &job.lock);
            }
            pthread_mutex_unlock(&job.lock);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t workers[MAX_THREADS], changer;
    long wrong = 0, changes = 0;
    int provided, t;
    double t0;

    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (provided != MPI_THREAD_MULTIPLE) {
        fprintf(stderr, "mpi_threads: MPI_THREAD_MULTIPLE not provided (%d)\n",
                provided);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &job.rank);
    job.threads = (argc > 1) ? atoi(argv[1]) : 4;
    job.iters   = (argc > 2) ? atoi(argv[2]) : 10;
    job.size    = (argc > 3) ? (size_t)atol(argv[3]) : (256u << 10);
    if ((job.threads < 1) || (job.threads > MAX_THREADS) || (job.iters < 1) ||
        (job.size < 1)) {
        fprintf(stderr, "usage: mpi_threads THREADS(1..%d) ITERATIONS [SIZE]\n",
                MAX_THREADS);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    for (t = 0; t < job.threads; ++t) {
        job.workers[t].index = t;
        job.workers[t].buf   = guarded_buffer(job.size);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (job.rank < 2) {
        pthread_create(&changer, NULL, changer_main, NULL);
        for (t = 0; t < job.threads; ++t) {
            pthread_create(&workers[t], NULL, worker_main, &job.workers[t]);
        }
        for (t = 0; t < job.threads; ++t) {
            pthread_join(workers[t], NULL);
            wrong   += job.workers[t].wrong;
            changes += job.workers[t].changes;
        }
        pthread_mutex_lock(&job.lock);
        job.done = 1;
        pthread_cond_broadcast(&job.cond);
        pthread_mutex_unlock(&job.lock);
        pthread_join(changer, NULL);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (job.rank == 1) {
        printf("mpi_threads: %d threads, %d iterations of %zu bytes, %ld changes by "
               "a thread outside MPI%s; %ld wrong bytes, %.1f s\n", job.threads,
               job.iters, job.size, changes,
               job.failed_changes ? " (some FAILED)" : "", wrong,
               MPI_Wtime() - t0);
        printf("mpi_threads: %s\n", (wrong || job.failed_changes) ? "FAILED" : "ok");
    }
    MPI_Finalize();
    return (job.rank == 1) && (wrong || job.failed_changes);
}
