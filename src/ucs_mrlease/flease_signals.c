/*
 * flease signals: how the reader thread hears of a file lease break
 * without ever taking a signal of the application's.
 *
 * Signals: the application's stay the application's. The kernel's only
 * notice of a break is a signal to the file's owner (fasync). We set the
 * owner to the reader thread (F_SETOWN_EX F_OWNER_TID) and the signal
 * (F_SETSIG, UCX_MRLEASE_FLEASE_SIGNAL) before F_SETLEASE, whose own
 * __f_setown(force=0) keeps an owner already set; so the signal, and the
 * SIGIO the kernel sends instead when the real-time queue is full, are
 * queued on the reader thread's private pending set, never the process's.
 * The reader blocks every signal and polls a signalfd for {signal, SIGIO}.
 * But a signalfd is readable, and its read() dequeues, from the thread's
 * private set and also from the process-wide shared set, where the
 * application's own process-directed SIGIO or signal waits until one of its
 * threads takes it (dequeue_signal(): private first, then shared). So:
 *  - a signal is only a wake-up; F_GETLEASE is the truth (during a pending
 *    break it already reports the target type, not F_WRLCK), asked of every
 *    held file on each wake-up, before anything else;
 *  - we read one siginfo at a time, and only while the reader's private set
 *    (SigPnd in /proc/thread-self/status, not ShdPnd) has the signal or
 *    SIGIO: the read then takes a private one, as private comes first;
 *  - a wake-up with nothing of ours pending is the application's signal on
 *    its way to one of its threads, or left pending by an application that
 *    blocks it: we must not read it and must not spin on it, so that signal
 *    (and only that one: an application's SIGIO does not delay our real-time
 *    wake-ups) is left out of the signalfd's mask for a back-off, 1 ms
 *    doubling up to the re-arm interval, during which each tick asks the
 *    files with F_GETLEASE: no break waits longer than the back-off. With no
 *    file leased there is no tick at all, and none either while nothing of
 *    the application's is pending: no timer noise.
 * Rejected: a process-wide handler (the application's to install), reading
 * the application's signal and queueing it again (changes order, sender
 * and value, and wakes us again), polling F_GETLEASE on a timer alone
 * (periodic wake-ups whenever anything is leased, and latency = period),
 * a helper process as the owner (the application would see its SIGCHLD),
 * yielding for the application's thread to take its signal before backing
 * off (a yield on a busy CPU cost milliseconds of every break's latency).
 * Left: an application that sets SIGIO (or our signal) to SIG_IGN flushes
 * it from every thread's pending set, ours too. A break signalled in that
 * very instant wakes nobody: it is seen at the reader's next look (at worst
 * the kernel lets the change go after lease-break-time: file_leases_forced).
 */
#define _GNU_SOURCE
#include "monitor_flease.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/signalfd.h>

static uint64_t flease_sigset_line(const char *status, const char *name)
{
    const char *p = strstr(status, name);

    return (p == NULL) ? 0 : strtoull(p + strlen(name), NULL, 16);
}

/* Reader thread: its private pending set and the process's shared one, as
 * /proc shows them (bit signo - 1). Nonzero if they cannot be read. */
static int flease_pending(ucs_mrlease_flease_t *mon, uint64_t *own,
                          uint64_t *shared)
{
    char status[4096];
    ssize_t n;

    if (mon->status_fd < 0) {
        /* thread-self: the reader's own task, whose file this stays */
        mon->status_fd = open(FLEASE_STATUS, O_RDONLY | O_CLOEXEC);
    }
    n = (mon->status_fd < 0) ? -1 :
        pread(mon->status_fd, status, sizeof(status) - 1, 0);
    if (n <= 0) {
        if (!mon->status_warned) {
            ucs_warn("mrlease: flease: cannot read " FLEASE_STATUS ": %m; file "
                     "lease breaks are polled every %d ms instead", mon->rearm_ms);
            mon->status_warned = 1;
        }
        return -1;
    }
    status[n] = '\0';
    *own    = flease_sigset_line(status, "\nSigPnd:");
    *shared = flease_sigset_line(status, "\nShdPnd:");
    return 0;
}

/* Reader thread: the signals the signalfd reports and reads (a subset of
 * our signal and SIGIO). */
static void flease_set_sigmask(ucs_mrlease_flease_t *mon, uint64_t bits)
{
    sigset_t set;

    if (bits == mon->sfd_bits) {
        return;
    }
    sigemptyset(&set);
    if (bits & FLEASE_BIT(mon->signo)) {
        sigaddset(&set, mon->signo);
    }
    if (bits & FLEASE_BIT(SIGIO)) {
        sigaddset(&set, SIGIO);
    }
    if (signalfd(mon->sfd, &set, 0) < 0) {
        ucs_warn("mrlease: flease: signalfd mask change failed: %m");
        return;
    }
    mon->sfd_bits = bits;
}

/* Reader thread: read one signal if one directed at this thread is pending
 * (a read takes the thread's private ones before the process's). Returns 1
 * if it read one, 0 if none is ours, with *shared = those of the signalfd's
 * signals that wait in the process's set (the application's), or -1 if it
 * cannot tell. More of ours are read on the next turn: the signalfd stays
 * readable. */
int ucs_mrlease_flease_read_own(ucs_mrlease_flease_t *mon, uint64_t *shared)
{
    struct signalfd_siginfo si;
    uint64_t own;

    if (flease_pending(mon, &own, shared) != 0) {
        return -1;
    }
    *shared &= mon->sfd_bits;
    if (!(own & mon->sfd_bits)) {
        return 0;
    }
    return read(mon->sfd, &si, sizeof(si)) == sizeof(si);
}

/* Reader thread: the application's own signal waits in the process's set
 * (bits): leave it out of the signalfd for a while, doubling, and ask the
 * files on each tick meanwhile (flease_timer). */
void ucs_mrlease_flease_backoff(ucs_mrlease_flease_t *mon, uint64_t bits)
{
    mon->backoff_ms     = (mon->backoff_ms == 0) ? 1 : 2 * mon->backoff_ms;
    if (mon->backoff_ms > mon->rearm_ms) {
        mon->backoff_ms = mon->rearm_ms;
    }
    mon->backoff_end_ns = ucs_mrlease_now_ns() + mon->backoff_ms * 1000000ull;
    flease_set_sigmask(mon, mon->sfd_bits & ~bits);
}

/* Reader thread, back-off over: the whole signalfd again, unless the
 * application's signal still waits (then leave it out longer). */
void ucs_mrlease_flease_backoff_over(ucs_mrlease_flease_t *mon)
{
    uint64_t shared = 0;
    int n;

    flease_set_sigmask(mon, FLEASE_BIT(mon->signo) | FLEASE_BIT(SIGIO));
    n = ucs_mrlease_flease_read_own(mon, &shared);
    if ((n < 0) || (shared != 0)) {
        ucs_mrlease_flease_backoff(mon, (n < 0) ? mon->sfd_bits : shared);
    } else {
        mon->backoff_ms = 0;
    }
}
