/*
 * The flease monitor's private parts, shared by its three files:
 * monitor_flease.c (files, leases, breaks), flease_adopt.c (re-mapping a
 * file's mappings onto our own description) and flease_signals.c (telling
 * our break signals from the application's).
 */
#ifndef UCS_MRLEASE_MONITOR_FLEASE_H_
#define UCS_MRLEASE_MONITOR_FLEASE_H_

#include "engine.h"

#define FLEASE_STATUS        "/proc/thread-self/status"
#define FLEASE_BIT(_sig)     (1ull << ((_sig) - 1)) /* as /proc shows sigsets */

typedef struct {
    uintptr_t start;
    uintptr_t end;
} flease_range_t;

typedef struct {
    ucs_list_link_t list;
    uint64_t        dev;
    uint64_t        ino;
    int             fd;            /* ours; the kernel lease is on it */
    int             leased;        /* the kernel lease is held */
    int             rearm;         /* released after a break: take it back */
    int             breaking;      /* a break is waiting for us */
    int             seen;          /* ...and a progress call has seen it */
    unsigned        waiting;       /* leases still to restore for the break */
    uint64_t        break_ns;
    ucs_list_link_t leases;
    flease_range_t  *adopted;      /* ranges re-mapped onto fd */
    unsigned        num_adopted;
} flease_file_t;

typedef struct {
    ucs_mrlease_monitor_t super;
    int                   sfd;
    int                   signo;
    pthread_mutex_t       lock;   /* files: engine side and reader side */
    ucs_list_link_t       files;
    int                   rearm_ms;
    uint64_t              stall_ns;
    /* reader thread only */
    int                   status_fd;  /* its /proc/thread-self/status, or -1 */
    int                   status_warned;
    uint64_t              sfd_bits;   /* signals in the signalfd's mask */
    int                   backoff_ms; /* 0, or some are left out of it */
    uint64_t              backoff_end_ns;
    int                   parked;     /* backing off with nothing leased, so no
                                       * tick: arm wakes the reader (locked) */
} ucs_mrlease_flease_t;

/* flease_adopt.c */
int          ucs_mrlease_flease_is_adopted(const flease_file_t *file,
                                           uintptr_t start, uintptr_t end);
ucs_status_t ucs_mrlease_flease_adopt(ucs_mrlease_flease_t *mon,
                                      flease_file_t *file, ucs_mrlease_t *lease);

/* flease_signals.c: reader thread only */
int  ucs_mrlease_flease_read_own(ucs_mrlease_flease_t *mon, uint64_t *shared);
void ucs_mrlease_flease_backoff(ucs_mrlease_flease_t *mon, uint64_t bits);
void ucs_mrlease_flease_backoff_over(ucs_mrlease_flease_t *mon);

#endif
