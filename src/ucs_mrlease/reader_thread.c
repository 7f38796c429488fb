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
#include <sys/eventfd.h>
#include <sys/syscall.h>

/* Engine threads inherit a mask with every signal blocked: the application's
 * signals never land there, and lease-break signals stay for the signalfd. */
static int ucs_mrlease_thread_start(pthread_t *thread, void *(*main)(void*), void *arg)
{
    sigset_t all, old;
    int ret;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ret = pthread_create(thread, NULL, main, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ret;
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
                                   engine);
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
    pthread_join(engine->dispatcher, NULL);
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

    ret = ucs_mrlease_thread_start(&engine->reader, ucs_mrlease_reader_main, &start);
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
        pthread_join(engine->reader, NULL);
        engine->reader_running = 0;
    }
    if (engine->wake_fd >= 0) {
        close(engine->wake_fd);
        engine->wake_fd = -1;
    }
}
