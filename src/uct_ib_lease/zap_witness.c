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
#define ZAP_X32_SYSCALL_BIT 0x40000000L /* x32 calls show it */
#define ZAP_I386_MADVISE    219         /* through int 0x80 (restart_syscall
                                           here: rare, and harmless to wait) */
#define ZAP_PF_IO_WORKER    0x10ul      /* include/linux/sched.h */

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
    if (n <= 0) {
        errno = (n == 0) ? EIO : errno;
        return -1;
    }
    buf[n] = '\0';
    return n;
}

/* Field n (1-based) of a /proc stat line, after the command name (which
 * may hold spaces and parentheses): a pointer into buf, or NULL. */
static const char *zap_stat_field(const char *buf, int n)
{
    const char *p = strrchr(buf, ')');
    int field;

    if (p == NULL) {
        return NULL;
    }
    for (field = 2; field < n; ++field) { /* p is at the end of field 2 */
        p = strchr(p + 1, ' ');
        if (p == NULL) {
            return NULL;
        }
    }
    return p + 1;
}

/*
 * What thread tid is doing, from /proc/self/task/<tid>/syscall: a blocked
 * thread shows its system call's number, a running or runnable one
 * "running". Ours to read: same thread group, no ptrace permission needed.
 * Not quiet: running; inside madvise (its 64-bit, x32 or int 0x80 number),
 * process_madvise or io_uring_enter; an io_uring worker (PF_IO_WORKER in
 * its stat flags: IORING_OP_MADVISE runs there, and its registers are a
 * copy of its creator's); blocked outside any system call ("-1": a fault,
 * a stop). Returns 1 if quiet, 0 if not, -1 if gone or unreadable.
 */
static int zap_thread_quiet(int dirfd, const char *tid)
{
    char buf[512];
    const char *flags;
    long nr;

    if (zap_task_read(dirfd, tid, "syscall", buf, sizeof(buf)) <= 0) {
        return -1;
    }
    if (!strncmp(buf, "running", 7)) {
        return 0;
    }
    nr = strtol(buf, NULL, 10);
    if (nr >= 0) {
        nr &= ~ZAP_X32_SYSCALL_BIT;
    }
    if ((nr < 0) || (nr == SYS_madvise) || (nr == SYS_process_madvise) ||
        (nr == SYS_io_uring_enter) || (nr == ZAP_I386_MADVISE)) {
        return 0;
    }
    if (zap_task_read(dirfd, tid, "stat", buf, sizeof(buf)) <= 0) {
        return -1;
    }
    flags = zap_stat_field(buf, 9);
    if (flags == NULL) {
        return -1;
    }
    return !(strtoul(flags, NULL, 10) & ZAP_PF_IO_WORKER);
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

/* The process's thread count (/proc/self/stat), or -1. */
static long zap_num_threads(void)
{
    char buf[1024];
    const char *f;
    ssize_t n;
    int fd;

    fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    f = zap_stat_field(buf, 20);
    return (f == NULL) ? -1 : strtol(f, NULL, 10);
}

/*
 * Every other thread quiet, and every thread seen: a thread exiting during
 * the listing can make /proc skip the next one, so the count listed must be
 * the process's thread count, and a thread that could not be read (gone
 * meanwhile, or no syscall file at all) makes the answer "not quiet": the
 * caller asks again.
 */
int ib_lease_zap_others_quiet(void)
{
    char self[24];
    struct dirent *d;
    int dirfd, quiet = 1, q;
    long listed = 0;
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
    while ((quiet == 1) && ((d = readdir(dir)) != NULL)) {
        if ((d->d_name[0] < '0') || (d->d_name[0] > '9')) {
            continue;
        }
        ++listed;
        if (!strcmp(d->d_name, self)) {
            continue;
        }
        q = zap_thread_quiet(dirfd, d->d_name);
        if (q != 1) {
            quiet = (q == 0) ? 0 : -1;
        }
    }
    closedir(dir);
    if ((quiet == 1) && (listed != zap_num_threads())) {
        quiet = 0; /* one came or went meanwhile: ask again */
    }
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
