/*
 * mpi_remap: memory under UCX's registrations changes between transfers,
 * behind libc's back (raw syscalls, which UCX's own memory hooks cannot see),
 * and every byte received is checked.
 *
 *   mpi_remap ITERATIONS MODE SIDE [FILE_PREFIX]
 *     MODE: remap     munmap + mmap(MAP_FIXED) at the same address: new pages
 *           mremap    new pages built elsewhere, moved over the buffer
 *           fork      a child process writes to the buffer (copy-on-write)
 *           dontneed  madvise(MADV_DONTNEED): the pages are dropped
 *           shm       the buffers are SysV segments: shmdt + shmat of a new
 *                     segment at the same address (raw syscalls, both)
 *           regrow    another process truncates the buffer's file to 0 and
 *                     regrows it (needs FILE_PREFIX; $MRL_FILE_CHANGER is
 *                     test/helpers/file_changer)
 *           none      no change (control)
 *     SIDE: recv | send | both: whose buffer changes, on every other iteration
 *     FILE_PREFIX: buffers are MAP_SHARED mappings of FILE_PREFIX.<rank>
 *   Environment, with FILE_PREFIX:
 *     MRL_KEEP_FD=1      keep the buffer's file descriptor open (as many
 *                        applications do) instead of closing it after mmap
 *     MRL_SHARED_FILE=1  every rank maps its own 1 MiB of one file,
 *                        FILE_PREFIX (node-local shared buffers): a regrow
 *                        by rank 1 changes rank 0's buffer too
 *
 * Rank 0 sends 1 MiB (rendezvous: RDMA from/to registered memory) to rank 1.
 * Prints "mpi_remap: ... N wrong bytes" from rank 1; exits 1 on a wrong byte.
 */
#define _GNU_SOURCE
#include "raw_change.h"

#include <mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static char file_path[4096];
static size_t file_len;

#define LEN (1 << 20)

static unsigned char byte_at(int iter, size_t i)
{
    return (unsigned char)(i * 13 + iter * 29 + 1);
}

/* A new SysV segment at addr (NULL: anywhere), by raw syscalls; removed
 * with its last detach. Returns NULL on failure (reported). */
static unsigned char *shm_attach(void *addr)
{
    long id = syscall(SYS_shmget, IPC_PRIVATE, LEN, IPC_CREAT | 0600);
    long p;

    if (id < 0) {
        perror("mpi_remap: shmget");
        return NULL;
    }
    p = syscall(SYS_shmat, id, addr, 0);
    syscall(SYS_shmctl, id, IPC_RMID, NULL);
    if (p == -1) {
        perror("mpi_remap: shmat");
        return NULL;
    }
    return (unsigned char*)p;
}

static void change(unsigned char *buf, const char *mode)
{
    int ret = mrl_raw_change(buf, LEN, mode);

    if (ret < 0) {
        MPI_Abort(MPI_COMM_WORLD, 2);
    } else if (ret == 0) {
        return;
    } else if (!strcmp(mode, "shm")) {
        if (syscall(SYS_shmdt, buf) != 0) {
            perror("mpi_remap: shmdt");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        if (shm_attach(buf) != buf) {
            /* e.g. a thread of UCX mapped into the hole meanwhile */
            fprintf(stderr, "mpi_remap: no new segment at %p after shmdt\n",
                    (void*)buf);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    } else if (!strcmp(mode, "fork")) {
        /* the child writes to the buffer (copy-on-write) and exits */
        pid_t pid = fork();
        int status;

        if (pid == 0) {
            memset(buf, 0x77, LEN);
            _exit(0);
        }
        if ((pid < 0) || (waitpid(pid, &status, 0) != pid)) {
            perror("fork");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    } else if (!strcmp(mode, "regrow")) {
        const char *changer = getenv("MRL_FILE_CHANGER");
        char size[32];
        char *argv[] = {(char*)changer, "regrow", file_path, size, NULL};
        pid_t pid;
        int status;

        snprintf(size, sizeof(size), "%zu", file_len);
        /* posix_spawn, not fork: no fork event, no atfork purge */
        if ((changer == NULL) || file_path[0] == '\0' ||
            posix_spawn(&pid, changer, NULL, NULL, argv, environ) != 0) {
            fprintf(stderr, "mpi_remap: regrow needs FILE_PREFIX and MRL_FILE_CHANGER\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "mpi_remap: the file changer failed\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
}

int main(int argc, char **argv)
{
    int iters = (argc > 1) ? atoi(argv[1]) : 10, rank, it, changes = 0;
    const char *mode = (argc > 2) ? argv[2] : "remap";
    const char *side = (argc > 3) ? argv[3] : "both";
    int send_side = !strcmp(side, "send") || !strcmp(side, "both");
    int recv_side = !strcmp(side, "recv") || !strcmp(side, "both");
    int one_file  = 0;
    long bad = 0, bad_iters = 0, it_bad;
    unsigned char *buf;
    double t0;
    size_t i;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (argc > 4) {
        const char *shared = getenv("MRL_SHARED_FILE");
        const char *keep   = getenv("MRL_KEEP_FD");
        off_t offset       = 0;
        int fd, nranks;

        file_len = LEN;
        if (shared && atoi(shared)) {
            one_file = 1;
            MPI_Comm_size(MPI_COMM_WORLD, &nranks);
            snprintf(file_path, sizeof(file_path), "%s", argv[4]);
            file_len = (size_t)LEN * nranks;
            offset   = (off_t)LEN * rank;
            fd = open(file_path, O_RDWR | O_CREAT, 0600);
        } else {
            snprintf(file_path, sizeof(file_path), "%s.%d", argv[4], rank);
            fd = open(file_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        }
        if ((fd < 0) || (ftruncate(fd, file_len) < 0)) {
            perror(file_path);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        MPI_Barrier(MPI_COMM_WORLD); /* every rank's file is there */
        buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
        if (!(keep && atoi(keep))) {
            close(fd); /* as many applications do */
        }
    } else if (!strcmp(mode, "shm")) {
        buf = shm_attach(NULL);
        buf = (buf == NULL) ? MAP_FAILED : buf;
    } else {
        buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (buf == MAP_FAILED) {
        perror("mmap");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    memset(buf, 0, LEN);
    t0 = MPI_Wtime();

    for (it = 0; it < iters; ++it) {
        int changing = (it % 2) == 1;
        if (changing && one_file) {
            /* One file: a change by rank 1 changes rank 0's buffer too, so
             * it must come before rank 0 writes hers (else it would destroy
             * the bytes to send, and the right answer would be zeros). */
            if (((rank == 0) && send_side) || ((rank == 1) && recv_side)) {
                change(buf, mode);
                ++changes;
            }
            MPI_Barrier(MPI_COMM_WORLD);
            changing = 0;
        }
        if (rank == 0) {
            if (changing && send_side) {
                change(buf, mode);
                ++changes;
            }
            for (i = 0; i < LEN; ++i) {
                buf[i] = byte_at(it, i);
            }
            MPI_Send(buf, LEN, MPI_BYTE, 1, it, MPI_COMM_WORLD);
        } else if (rank == 1) {
            if (changing && recv_side) {
                change(buf, mode);
                ++changes;
            }
            MPI_Recv(buf, LEN, MPI_BYTE, 0, it, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (i = 0, it_bad = 0; i < LEN; ++i) {
                it_bad += (buf[i] != byte_at(it, i));
            }
            bad += it_bad;
            bad_iters += (it_bad != 0);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    if (rank == 1) {
        printf("mpi_remap: mode %s, side %s, %s buffers%s%s, %d iterations of 1 MiB, "
               "%d changes on rank 1; %ld wrong bytes in %ld iterations, %.1f s\n",
               mode, side,
               file_path[0] ? file_path : (!strcmp(mode, "shm") ? "SysV shm" : "anonymous"),
               getenv("MRL_KEEP_FD") ? " (fd kept open)" : "",
               getenv("MRL_SHARED_FILE") ? " (one file, all ranks)" : "", iters,
               changes, bad, bad_iters, MPI_Wtime() - t0);
        printf("mpi_remap: %s\n", bad ? "FAILED" : "ok");
    }
    MPI_Finalize();
    if (file_path[0]) {
        unlink(file_path);
    }
    return (rank == 1 && bad) ? 1 : 0;
}
