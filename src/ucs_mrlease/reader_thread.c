/*
 * The engine's reader: a thread of its own that is never a changer. It reads
 * what the kernel reports (userfaultfd events, lease-break signals, control
 * requests) as soon as it is readable, so a changer the kernel holds until
 * its event is read is released promptly even when the application thread
 * that would run progress is that very changer. It has every signal blocked:
 * lease-break signals are directed at it and only wake it, through a
 * signalfd it reads only while a signal of its own is pending (see
 * monitor_flease.c), so no process-wide handler is installed and no signal of
 * the application's is ever taken. A monitor may leave its fd out for a
 * while (ops->fd returns -1): the set to poll is rebuilt on every turn.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define UCS_MRLEASE_THREAD_STACK (8ul << 20) /* glibc's usual default */

/*
 * Engine threads inherit a mask with every signal blocked: the application's
 * signals never land there, and lease-break signals stay for the signalfd.
 *
 * Their stacks are our own, without transparent huge pages: a few pages of
 * each are ever touched, but with THP "always" the first touch of a 2 MiB-
 * aligned part of a glibc stack may fault in a huge page, and khugepaged
 * (max_ptes_none 511) collapses any such part with one resident page: the
 * process would grow by 2 MiB per thread at a moment no cycle of its own sets.
 */
int ucs_mrlease_thread_start(pthread_t *thread, void *(*main)(void*), void *arg,
                             void **stack_p)
{
    size_t page = sysconf(_SC_PAGESIZE);
    pthread_attr_t attr;
    sigset_t all, old;
    void *stack;
    int ret;

    stack = mmap(NULL, UCS_MRLEASE_THREAD_STACK + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        return errno;
    }
    (void)madvise(stack, UCS_MRLEASE_THREAD_STACK + page, MADV_NOHUGEPAGE);
    (void)mprotect(stack, page, PROT_NONE); /* guard */
    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, (char*)stack + page,
                          UCS_MRLEASE_THREAD_STACK);

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ret = pthread_create(thread, &attr, main, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (ret != 0) {
        munmap(stack, UCS_MRLEASE_THREAD_STACK + page);
        return ret;
    }
    *stack_p = stack;
    return 0;
}

void ucs_mrlease_thread_join(pthread_t thread, void **stack_p)
{
    pthread_join(thread, NULL);
    if (*stack_p != NULL) {
        munmap(*stack_p, UCS_MRLEASE_THREAD_STACK + sysconf(_SC_PAGESIZE));
        *stack_p = NULL;
    }
}

typedef struct {
    ucs_mrlease_engine_t *engine;
    pthread_mutex_t      lock;
    pthread_cond_t       cond;
    int                  started;
} ucs_mrlease_reader_start_t;

static void *ucs_mrlease_reader_main(void *arg)
{
    ucs_mrlease_reader_start_t *start = arg;
    ucs_mrlease_engine_t *engine      = start->engine;
    struct pollfd pfd[UCS_MRLEASE_MONITOR_LAST + 1];
    ucs_mrlease_monitor_t *owner[UCS_MRLEASE_MONITOR_LAST + 1];
    ucs_mrlease_monitor_t *mon;
    int nfds, fd, id, i, timeout, t;
    uint64_t value;

    pfd[0].fd     = engine->wake_fd;
    pfd[0].events = POLLIN;
    owner[0]      = NULL;

    pthread_mutex_lock(&start->lock);
    engine->reader_tid = syscall(SYS_gettid);
    start->started     = 1;
    pthread_cond_signal(&start->cond);
    pthread_mutex_unlock(&start->lock);
    /* start is gone from here on */

    while (!engine->reader_stop) {
        timeout = -1;
        for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
            mon = engine->monitors[id];
            if ((mon != NULL) && (mon->ops->timer != NULL)) {
                t = mon->ops->timer(mon);
                if ((t >= 0) && ((timeout < 0) || (t < timeout))) {
                    timeout = t;
                }
            }
        }
        /* after the timers, which may start or end a monitor's pause */
        nfds = 1;
        for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
            mon = engine->monitors[id];
            if ((mon != NULL) && (mon->ops->fd != NULL) &&
                ((fd = mon->ops->fd(mon)) >= 0)) {
                pfd[nfds].fd     = fd;
                pfd[nfds].events = POLLIN;
                owner[nfds++]    = mon;
            }
        }

        if (poll(pfd, nfds, timeout) < 0) {
            continue; /* EINTR cannot happen with all signals blocked */
        }
        if (pfd[0].revents & POLLIN) {
            (void)!read(engine->wake_fd, &value, sizeof(value));
        }
        for (i = 1; i < nfds; ++i) {
            if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) {
                owner[i]->ops->drain(owner[i]);
            }
        }
        /* timers may queue too (file lease re-arm) */
        if ((engine->dispatch_fd >= 0) &&
            (engine->hot.pending & UCS_MRLEASE_PENDING_EVENTS)) {
            value = 1;
            (void)!write(engine->dispatch_fd, &value, sizeof(value));
        }
    }
    return NULL;
}

/* The dispatcher: a separate thread, since dispatch takes the engine lock
 * and the reader must never wait for it. */
static void *ucs_mrlease_dispatcher_main(void *arg)
{
    ucs_mrlease_engine_t *engine = arg;
    struct pollfd pfd            = {engine->dispatch_fd, POLLIN, 0};
    uint64_t value;

    while (!engine->reader_stop) {
        if (poll(&pfd, 1, -1) <= 0) {
            continue;
        }
        (void)!read(engine->dispatch_fd, &value, sizeof(value));
        if (!engine->reader_stop) {
            ucs_mrlease_progress(engine);
        }
    }
    return NULL;
}

ucs_status_t ucs_mrlease_engine_start_dispatcher(ucs_mrlease_engine_t *engine)
{
    int ret;

    if (engine->dispatch_fd >= 0) {
        return UCS_OK;
    }
    engine->dispatch_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (engine->dispatch_fd < 0) {
        ucs_error("mrlease: eventfd() failed: %m");
        return UCS_ERR_IO_ERROR;
    }
    ret = ucs_mrlease_thread_start(&engine->dispatcher, ucs_mrlease_dispatcher_main,
                                   engine, &engine->dispatcher_stack);
    if (ret != 0) {
        ucs_error("mrlease: cannot start the dispatcher thread: %s", strerror(ret));
        close(engine->dispatch_fd);
        engine->dispatch_fd = -1;
        return UCS_ERR_IO_ERROR;
    }
    /* a monitor may poll only with a dispatcher (kmod): rebuild the set */
    ucs_mrlease_reader_wake(engine);
    return UCS_OK;
}

void ucs_mrlease_dispatcher_stop(ucs_mrlease_engine_t *engine)
{
    uint64_t one = 1;

    if (engine->dispatch_fd < 0) {
        return;
    }
    engine->reader_stop = 1;
    (void)!write(engine->dispatch_fd, &one, sizeof(one));
    ucs_mrlease_thread_join(engine->dispatcher, &engine->dispatcher_stack);
    close(engine->dispatch_fd);
    engine->dispatch_fd = -1;
}

ucs_status_t ucs_mrlease_reader_start(ucs_mrlease_engine_t *engine)
{
    ucs_mrlease_reader_start_t start;
    int ret;

    engine->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (engine->wake_fd < 0) {
        ucs_error("mrlease: eventfd() failed: %m");
        return UCS_ERR_IO_ERROR;
    }

    start.engine  = engine;
    start.started = 0;
    pthread_mutex_init(&start.lock, NULL);
    pthread_cond_init(&start.cond, NULL);

    ret = ucs_mrlease_thread_start(&engine->reader, ucs_mrlease_reader_main, &start,
                                   &engine->reader_stack);
    if (ret != 0) {
        ucs_error("mrlease: cannot start the reader thread: %s", strerror(ret));
        close(engine->wake_fd);
        engine->wake_fd = -1;
        return UCS_ERR_IO_ERROR;
    }

    pthread_mutex_lock(&start.lock);
    while (!start.started) {
        pthread_cond_wait(&start.cond, &start.lock);
    }
    pthread_mutex_unlock(&start.lock);
    pthread_mutex_destroy(&start.lock);
    pthread_cond_destroy(&start.cond);
    engine->reader_running = 1;
    return UCS_OK;
}

void ucs_mrlease_reader_wake(ucs_mrlease_engine_t *engine)
{
    uint64_t one = 1;

    if (engine->wake_fd >= 0) {
        (void)!write(engine->wake_fd, &one, sizeof(one));
    }
}

void ucs_mrlease_reader_stop(ucs_mrlease_engine_t *engine)
{
    ucs_mrlease_dispatcher_stop(engine);
    if (engine->reader_running) {
        engine->reader_stop = 1;
        ucs_mrlease_reader_wake(engine);
        ucs_mrlease_thread_join(engine->reader, &engine->reader_stack);
        engine->reader_running = 0;
    }
    if (engine->wake_fd >= 0) {
        close(engine->wake_fd);
        engine->wake_fd = -1;
    }
}
