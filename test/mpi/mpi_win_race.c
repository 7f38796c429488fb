/*
 * mpi_win_race: a window's memory is replaced by one thread of the target
 * while another thread of the same rank keeps calling MPI (and so mrlease's
 * catch-up). Changes reported before they happen (UCX's memory hooks run
 * before munmap, madvise and shmdt) must not let that other thread re-bind
 * the window to the pages that are about to go.
 *
 *   mpi_win_race ROUNDS MODE [DELAY_MS]
 *     MODE: shm       the window is a SysV segment; shmdt + shmat of a new
 *                     segment at the same address (no after-event exists)
 *           remap     munmap + mmap(MAP_FIXED), both through libc
 *           dontneed  madvise(MADV_DONTNEED) through libc
 *           rawdontneed  madvise(MADV_DONTNEED) by a raw system call from a
 *                     thread of the lowest scheduling class (SCHED_IDLE): no
 *                     hook holds it, the scheduler does; only userfaultfd
 *                     (which reports REMOVE before the zap) and mrlease.ko
 *                     (after it) see it
 *
 * The changing thread is held DELAY_MS (default 300) inside the change, after
 * every memory hook of UCX and mrlease has run and before the system call
 * itself, by an application's own UCM handler of the lowest priority: the
 * widest window a busy or descheduled thread could give. Meanwhile the
 * rank's progress thread spins in MPI_Iprobe. Then rank 0 MPI_Puts a pattern
 * into rank 1's window and rank 1 checks every byte of it. Needs
 * MPI_THREAD_MULTIPLE. Prints "mpi_win_race: ... N wrong bytes"; exits 1 on
 * a wrong byte.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <ucm/api/ucm.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LEN (1 << 20)

static struct {
    unsigned char *buf;
    int           delay_ms;
    volatile int  hold;     /* the hook holds the changer while set */
    volatile int  progress; /* the progress thread runs while set */
    long          held;
} race;

/* The application's own hook, after mrlease's: between the reports and the
 * change itself. */
static void race_hold(ucm_event_type_t type, ucm_event_t *event, void *arg)
{
    uintptr_t start = (uintptr_t)event->vm_unmapped.address;
    uintptr_t buf   = (uintptr_t)race.buf;
    struct timespec ts;

    if (!race.hold || (start >= buf + LEN) ||
        (start + event->vm_unmapped.size <= buf)) {
        return;
    }
    race.hold       = 0;
    ts.tv_sec       = race.delay_ms / 1000;
    ts.tv_nsec      = (race.delay_ms % 1000) * 1000000l;
    ++race.held;
    nanosleep(&ts, NULL);
}

static void *progress_thread(void *arg)
{
    int flag;

    (void)arg;
    while (race.progress) {
        MPI_Iprobe(MPI_ANY_SOURCE, 4242, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    }
    return NULL;
}

/* A raw madvise(DONTNEED) (no hook sees it) by a thread of the lowest
 * scheduling class: once userfaultfd's REMOVE has been read, that thread
 * waits for a CPU the spinning threads keep busy before it zaps the pages:
 * the widest gap a descheduled thread could leave between the report and
 * the change. */
static void *raw_dontneed_thread(void *arg)
{
    struct sched_param param = {0};

    *(long*)arg = pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);
    if (*(long*)arg != 0) {
        fprintf(stderr, "mpi_win_race: SCHED_IDLE: %s\n", strerror((int)*(long*)arg));
        return NULL;
    }
    *(long*)arg = syscall(SYS_madvise, race.buf, LEN, MADV_DONTNEED);
    if (*(long*)arg != 0) {
        perror("mpi_win_race: madvise(MADV_DONTNEED)");
    }
    return NULL;
}

static unsigned char *shm_segment_at(void *addr)
{
    int id = shmget(IPC_PRIVATE, LEN, IPC_CREAT | 0600);
    void *p;

    if (id < 0) {
        perror("mpi_win_race: shmget");
        return NULL;
    }
    p = shmat(id, addr, 0);
    shmctl(id, IPC_RMID, NULL); /* gone with its last detach */
    if (p == (void*)-1) {
        perror("mpi_win_race: shmat");
        return NULL;
    }
    return p;
}

static int change(const char *mode)
{
    if (!strcmp(mode, "shm")) {
        if (shmdt(race.buf) != 0) {
            perror("mpi_win_race: shmdt");
            return -1;
        }
        return (shm_segment_at(race.buf) == race.buf) ? 0 : -1;
    } else if (!strcmp(mode, "remap")) {
        if (munmap(race.buf, LEN) != 0) {
            return -1;
        }
        /* never over a mapping another thread made in the hole meanwhile */
        return (mmap(race.buf, LEN, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) ==
                race.buf) ? 0 : -1;
    } else if (!strcmp(mode, "dontneed")) {
        return madvise(race.buf, LEN, MADV_DONTNEED);
    } else if (!strcmp(mode, "rawdontneed")) {
        pthread_t changer;
        long ret = -1;

        if (pthread_create(&changer, NULL, raw_dontneed_thread, &ret) != 0) {
            return -1;
        }
        pthread_join(changer, NULL);
        return (int)ret;
    }
    fprintf(stderr, "mpi_win_race: unknown mode '%s' (shm, remap, dontneed, "
            "rawdontneed)\n", mode);
    return -1;
}

int main(int argc, char **argv)
{
    int rounds       = (argc > 1) ? atoi(argv[1]) : 4;
    const char *mode = (argc > 2) ? argv[2] : "shm";
    long wrong = 0, total;
    int provided, rank, size, r;
    pthread_t thread;
    unsigned char *src;
    double t0;
    MPI_Win win;
    size_t i;

    race.delay_ms = (argc > 3) ? atoi(argv[3]) : 300;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if ((size != 2) || (provided != MPI_THREAD_MULTIPLE) || (rounds < 1)) {
        fprintf(stderr, "mpi_win_race: needs 2 ranks, MPI_THREAD_MULTIPLE (got "
                "%d) and ROUNDS >= 1\n", provided);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (!strcmp(mode, "shm")) {
        race.buf = shm_segment_at(NULL);
    } else {
        race.buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        race.buf = (race.buf == MAP_FAILED) ? NULL : race.buf;
    }
    src = malloc(LEN);
    if ((race.buf == NULL) || (src == NULL) ||
        (ucm_set_event_handler(UCM_EVENT_VM_UNMAPPED, 1 << 30, race_hold, NULL) !=
         UCS_OK)) {
        fprintf(stderr, "mpi_win_race: set-up failed\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    memset(race.buf, 0, LEN);
    MPI_Win_create(race.buf, LEN, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    t0 = MPI_Wtime();

    for (r = 0; r < rounds; ++r) {
        if (rank == 1) {
            race.progress = 1;
            pthread_create(&thread, NULL, progress_thread, NULL);
            race.hold = strcmp(mode, "rawdontneed") != 0; /* no hook sees it */
            if (change(mode) != 0) {
                /* e.g. another thread mapped into the hole between the unmap
                 * and our mapping: the set-up raced, not mrlease */
                fprintf(stderr, "mpi_win_race: the memory could not be put back "
                        "at %p (set-up raced)\n", (void*)race.buf);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
            race.progress = 0;
            pthread_join(thread, NULL);
            memset(race.buf, 0, LEN);
        } else {
            for (i = 0; i < LEN; ++i) {
                src[i] = (unsigned char)(i * 7 + r * 31 + 1);
            }
        }
        MPI_Win_fence(0, win);
        if (rank == 0) {
            MPI_Put(src, LEN, MPI_BYTE, 1, 0, LEN, MPI_BYTE, win);
        }
        MPI_Win_fence(0, win);
        if (rank == 1) {
            for (i = 0; i < LEN; ++i) {
                wrong += race.buf[i] != (unsigned char)(i * 7 + r * 31 + 1);
            }
        }
    }

    MPI_Allreduce(&wrong, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 1) {
        printf("mpi_win_race: %d rounds of %s, the changer held %ld times for %d ms "
               "while another thread progressed: %ld wrong bytes, %.1f s\n", rounds,
               mode, race.held, race.delay_ms, total, MPI_Wtime() - t0);
        printf("mpi_win_race: %s\n", total ? "FAILED" : "ok");
    }
    MPI_Win_free(&win);
    ucm_unset_event_handler(UCM_EVENT_VM_UNMAPPED, race_hold, NULL);
    MPI_Finalize();
    free(src);
    return (total != 0);
}
