/*
 * Zap witness (zap_witness.h): proof that a madvise which userfaultfd
 * reported before its zap has made it, then a wait for the zap to end.
 */
#define _GNU_SOURCE
#include "zap_witness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define ZAP_SLEEP_FIRST_NS 20000   /* then doubling, up to: */
#define ZAP_SLEEP_MAX_NS   1000000

#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_io_uring_enter
#define SYS_io_uring_enter 426
#endif

double ib_lease_zap_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 1 if the page at addr is not mapped, 0 if it is (or mincore fails: an
 * unmapped range is another change, no proof of this one). */
static int zap_first_page_gone(uintptr_t addr)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    unsigned char vec = 1;

    if (mincore((void*)(addr & ~(page - 1)), page, &vec) != 0) {
        return 0;
    }
    return !(vec & 1);
}

/* Read /proc/self/task/<tid>/<what> into buf (NUL-terminated); its length,
 * or -1. */
static ssize_t zap_task_read(int dirfd, const char *tid, const char *what,
                             char *buf, size_t max)
{
    char path[288]; /* a d_name is at most 255 bytes */
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%.255s/%s", tid, what);
    fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    n = read(fd, buf, max - 1);
    close(fd);
    if (n < 0) {
        return -1;
    }
    buf[n] = '\0';
    return n;
}

/*
 * What thread tid is doing, from /proc/self/task/<tid>/syscall: a blocked
 * thread shows its system call's number, a running or runnable one
 * "running". Ours to read: same thread group, no ptrace permission needed.
 * Not quiet: running; inside madvise or process_madvise; inside
 * io_uring_enter, or an io_uring worker (IORING_OP_MADVISE runs there);
 * blocked outside any system call ("-1": a fault, a stop). Returns 1 if
 * quiet, 0 if not, -1 if gone or unreadable.
 */
static int zap_thread_quiet(int dirfd, const char *tid)
{
    char buf[64];
    long nr;

    if (zap_task_read(dirfd, tid, "syscall", buf, sizeof(buf)) <= 0) {
        return -1;
    }
    if (!strncmp(buf, "running", 7)) {
        return 0;
    }
    nr = strtol(buf, NULL, 10);
    if ((nr == SYS_madvise) || (nr == SYS_process_madvise) ||
        (nr == SYS_io_uring_enter) || (nr < 0)) {
        return 0;
    }
    if (zap_task_read(dirfd, tid, "comm", buf, sizeof(buf)) < 0) {
        return -1;
    }
    return strncmp(buf, "iou-", 4) != 0;
}

int ib_lease_zap_thread_quiet(long tid)
{
    char name[24];
    int dirfd, q;

    dirfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        return -1;
    }
    snprintf(name, sizeof(name), "%ld", tid);
    q = zap_thread_quiet(dirfd, name);
    close(dirfd);
    return q;
}

int ib_lease_zap_others_quiet(void)
{
    char self[24];
    struct dirent *d;
    int dirfd, quiet = 1, q;
    DIR *dir;

    dirfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        return -1;
    }
    dir = fdopendir(dirfd);
    if (dir == NULL) {
        close(dirfd);
        return -1;
    }
    snprintf(self, sizeof(self), "%ld", (long)syscall(SYS_gettid));
    while (quiet && ((d = readdir(dir)) != NULL)) {
        if ((d->d_name[0] < '0') || (d->d_name[0] > '9') ||
            !strcmp(d->d_name, self)) {
            continue;
        }
        q = zap_thread_quiet(dirfd, d->d_name);
        if (q == 0) {
            quiet = 0;
        } else if ((q < 0) && (errno != ENOENT)) {
            quiet = -1; /* no syscall file (no CONFIG_HAVE_ARCH_TRACEHOOK?) */
        }
    }
    closedir(dir);
    return quiet;
}

/*
 * The zap runs under the address-space lock taken for reading (madvise
 * takes it again after the report was read). mmap takes it for writing, so
 * it returns only after a zap under way has ended. A raw system call: no
 * UCM hook sees our page, and nobody watches it.
 */
static void zap_wait_out(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    long addr;

    addr = syscall(SYS_mmap, NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (addr != -1) {
        syscall(SYS_munmap, addr, page);
    }
}

ib_lease_zap_result_t ib_lease_zap_wait(const ib_lease_zap_t *zap, double deadline)
{
    long sleep_ns = ZAP_SLEEP_FIRST_NS;
    ib_lease_zap_result_t result;
    struct timespec ts;

    for (;;) {
        /* The zap goes from the low address up: the first page goes first. */
        if (zap->present && zap_first_page_gone(zap->start)) {
            result = IB_LEASE_ZAP_SEEN;
            break;
        }
        if (ib_lease_zap_others_quiet() == 1) {
            result = IB_LEASE_ZAP_QUIET;
            break;
        }
        if (ib_lease_zap_now() >= deadline) {
            return IB_LEASE_ZAP_UNSEEN;
        }
        /* sleep, not spin: the changer may be waiting for this CPU */
        ts.tv_sec  = 0;
        ts.tv_nsec = sleep_ns;
        nanosleep(&ts, NULL);
        sleep_ns = (sleep_ns * 2 > ZAP_SLEEP_MAX_NS) ? ZAP_SLEEP_MAX_NS : sleep_ns * 2;
    }
    zap_wait_out();
    return result;
}
