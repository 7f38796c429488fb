/*
 * Zap witness: wait until a madvise that userfaultfd reported with REMOVE
 * has really dropped its pages, before a window is re-bound over them.
 *
 * REMOVE is read before the zap, and reading it lets the changer go: a
 * raw-syscall changer (no UCM hook holds it) may zap long after another
 * thread's catch-up, and a window re-bound in between keeps the old pages
 * for good. No event follows the zap, so the witness looks for proof that
 * it has happened, or that no thread can still be about to make it:
 *  - the range's first page, mapped when REMOVE was read (the window's
 *    registration pins it until the re-bind), is gone (mincore): the zap
 *    has begun; only for one report (one REMOVE per vma and change);
 *  - no other thread of the process is running or inside madvise (each
 *    one's /proc/self/task/<tid>/syscall names another blocking call, and
 *    none is an io_uring worker): a changer let go but not yet done would
 *    be one of those.
 * Then one mmap of a page of our own, which takes the address-space lock
 * for writing, waits out a zap still under way (madvise takes that lock
 * again for reading after the report: a userfaultfd-watched vma is never
 * left to the per-VMA locks).
 */
#ifndef UCT_IB_LEASE_ZAP_WITNESS_H_
#define UCT_IB_LEASE_ZAP_WITNESS_H_

#include <stdint.h>

typedef struct ib_lease_zap {
    uintptr_t start, end; /* the pages reported (none: start == end) */
    int       present;    /* start's page was mapped when REMOVE was read,
                             and nothing else changed the range since */
    unsigned  seq;        /* changed by each new report */
} ib_lease_zap_t;

/* A madvise's pages are still to be seen gone */
static inline int ib_lease_zap_pending(const ib_lease_zap_t *zap)
{
    return zap->end > zap->start;
}

static inline void ib_lease_zap_clear(ib_lease_zap_t *zap)
{
    zap->start = zap->end = 0;
}

typedef enum {
    IB_LEASE_ZAP_SEEN,    /* the first page was seen gone */
    IB_LEASE_ZAP_QUIET,   /* no other thread running or in madvise */
    IB_LEASE_ZAP_UNSEEN   /* neither before the deadline */
} ib_lease_zap_result_t;

/* Wait (no lock held: it sleeps) until the deadline (CLOCK_MONOTONIC,
 * seconds) for proof that zap's madvise is done. */
ib_lease_zap_result_t ib_lease_zap_wait(const ib_lease_zap_t *zap, double deadline);

/* 1 if no thread of the process but the caller is running or inside a
 * madvise (or process_madvise), 0 if one may be, -1 if /proc cannot tell. */
int ib_lease_zap_others_quiet(void);

/* The same for one thread of the process: 1 if it is blocked outside
 * madvise, 0 if not, -1 if it is gone or /proc cannot tell. */
int ib_lease_zap_thread_quiet(long tid);

/* CLOCK_MONOTONIC in seconds */
double ib_lease_zap_now(void);

#endif
