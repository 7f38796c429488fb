/*
 * mrlease-demo: the lease engine at work on this machine's kernel. Leases a
 * few buffers the way a registration cache would, changes the memory under
 * them in the ways that break RDMA registrations, and shows what caught each
 * change, how soon progress saw it, and how long a changer was held.
 */
#define _GNU_SOURCE
#include <ucs_mrlease/mrlease.h>

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static ucs_mrlease_event_t last;
static int                 answer_later;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static ucs_status_t on_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *ev,
                             void *arg)
{
    last = *ev;
    return answer_later ? UCS_INPROGRESS : UCS_OK;
}

static void kinds_str(unsigned kinds, char *buf, size_t max)
{
    unsigned k;

    buf[0] = '\0';
    for (k = 0; k < UCS_MRLEASE_EV_KINDS; ++k) {
        if (kinds & (1u << k)) {
            snprintf(buf + strlen(buf), max - strlen(buf), "%s%s", buf[0] ? "+" : "",
                     ucs_mrlease_event_kind_name(1u << k));
        }
    }
}

static void monitors_str(unsigned mons, char *buf, size_t max)
{
    unsigned m;

    buf[0] = '\0';
    for (m = 0; m < UCS_MRLEASE_MONITOR_LAST; ++m) {
        if (mons & (1u << m)) {
            snprintf(buf + strlen(buf), max - strlen(buf), "%s%s", buf[0] ? "+" : "",
                     ucs_mrlease_monitor_name(m));
        }
    }
}

/* Wait for the event; print one row. */
static int report(ucs_mrlease_engine_t *engine, const char *change, double t0)
{
    char kinds[128], mons[64];
    double t;

    while (!last.kinds && (now_us() - t0 < 5e6)) {
        if (!ucs_mrlease_progress(engine)) {
            usleep(50);
        }
    }
    t = now_us() - t0;
    if (!last.kinds) {
        printf("  %-38s %-22s %-14s %s\n", change, "-", "-", "NOT SEEN");
        return 1;
    }
    kinds_str(last.kinds, kinds, sizeof(kinds));
    monitors_str(last.monitors, mons, sizeof(mons));
    printf("  %-38s %-22s %-14s %8.0f us\n", change, kinds, mons, t);
    memset(&last, 0, sizeof(last));
    return 0;
}

static ucs_mrlease_t *lease(ucs_mrlease_engine_t *e, void *p, size_t len)
{
    ucs_mrlease_params_t params = {.cb = on_break};
    ucs_mrlease_t *l;

    if (ucs_mrlease_acquire(e, p, len, &params, &l) != UCS_OK) {
        exit(1);
    }
    return l;
}

static void *anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    memset(p, 1, len);
    return p;
}

int main(int argc, char **argv)
{
    const size_t len = 1 << 20;
    ucs_mrlease_counters_t c;
    ucs_mrlease_engine_t *engine;
    ucs_mrlease_t *l;
    char path[] = "/dev/shm/mrlease-demo-XXXXXX", *p, *q;
    /* A blocking O_TRUNC open (coreutils truncate opens O_NONBLOCK, which a
     * lease refuses at once with EAGAIN instead of holding). */
    char *targv[] = {"/bin/sh", "-c", ": > \"$0\"", path, NULL};
    double t0, held, spawned;
    int failed = 0, fd, status;
    pid_t pid;

    if (ucs_mrlease_engine_create(&engine) != UCS_OK) {
        return 1;
    }
    printf("mrlease engine demo: monitors running: 0x%x (uffd=1 ucm=2 flease=4 "
           "inject=8 kmod=16)\n\n", ucs_mrlease_engine_monitors(engine));
    printf("  %-38s %-22s %-14s %s\n", "change to a leased 1 MiB buffer",
           "event", "caught by", "seen after");

    p = anon(len);
    l = lease(engine, p, len);
    t0 = now_us();
    q = mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0);
    failed |= report(engine, "mmap(MAP_FIXED) over it (new pages)", t0);
    ucs_mrlease_release(l);

    l  = lease(engine, q, len);
    t0 = now_us();
    madvise(q, len / 2, MADV_DONTNEED);
    failed |= report(engine, "madvise(MADV_DONTNEED) half of it", t0);
    ucs_mrlease_release(l);

    l  = lease(engine, q, len);
    t0 = now_us();
    syscall(SYS_munmap, q, len);
    failed |= report(engine, "munmap by raw syscall (no libc)", t0);
    ucs_mrlease_release(l);

    p  = anon(len);
    l  = lease(engine, p, len);
    t0 = now_us();
    p  = mremap(p, len, 2 * len, MREMAP_MAYMOVE);
    failed |= report(engine, "mremap to grow it", t0);
    ucs_mrlease_release(l);
    munmap(p, 2 * len);

    fd = mkstemp(path);
    if ((fd < 0) || (ftruncate(fd, len) < 0)) {
        perror("demo file");
        return 1;
    }
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* as applications do: the engine adopts the mapping */
    memset(p, 1, len);
    l            = lease(engine, p, len);
    answer_later = 1;
    t0           = now_us();
    spawned      = t0;
    posix_spawn(&pid, targv[0], NULL, NULL, targv, environ);
    failed |= report(engine, "another process truncates its file", t0);
    usleep(200000); /* "re-registering": the truncate waits for us */
    held = now_us();
    ucs_mrlease_restored(l, UCS_OK);
    waitpid(pid, &status, 0);
    printf("  %-38s %s: it waited %.0f ms, returned %.0f us after the restore\n",
           "  ... held until restored?",
           (WIFEXITED(status) && !WEXITSTATUS(status)) ? "yes" : "NO",
           (now_us() - spawned) / 1e3, now_us() - held);
    failed |= !(WIFEXITED(status) && !WEXITSTATUS(status));
    answer_later = 0;
    ucs_mrlease_release(l);
    munmap(p, len);
    unlink(path);

    ucs_mrlease_counters_get(engine, &c);
    printf("\n");
    ucs_mrlease_counters_print(&c, stdout);
    ucs_mrlease_engine_destroy(engine);
    printf("\nmrlease engine demo: %s\n", failed ? "SOME CHANGES WERE NOT SEEN" :
           "every change was caught");
    return failed;
}
