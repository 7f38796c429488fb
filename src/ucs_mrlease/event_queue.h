/*
 * The queue between monitors (producers in any thread, including inside a
 * changer's munmap) and dispatch (the owner's progress). Producers never
 * allocate: a full queue folds further events into one "everything may be
 * decoherent" overflow entry, which is conservative and never loses one.
 */
#ifndef UCS_MRLEASE_EVENT_QUEUE_H_
#define UCS_MRLEASE_EVENT_QUEUE_H_

#include "mrlease.h"
#include <pthread.h>

typedef struct ucs_mrlease_qentry {
    uintptr_t start;
    uintptr_t end;       /* exclusive; [0, UINTPTR_MAX) means everything */
    uintptr_t new_start; /* REMAP */
    uint32_t  kinds;
    uint16_t  monitor;
    int32_t   key;       /* monitor-specific (flease: the leased fd) */
    uint64_t  stamp_ns;  /* when the monitor saw it */
} ucs_mrlease_qentry_t;

typedef struct ucs_mrlease_queue {
    /* A spinlock, not a mutex: producers run inside munmap hooks. */
    pthread_spinlock_t   lock;
    ucs_mrlease_qentry_t *entries;
    ucs_mrlease_qentry_t *drain_buf;  /* consumer's copy, same capacity */
    unsigned             capacity;
    unsigned             count;
    unsigned             overflow_kinds;    /* nonzero: overflowed */
    unsigned             overflow_monitors;
    uint64_t             overflows;
    uint64_t             kind_count[UCS_MRLEASE_EV_KINDS];
    uint64_t             monitor_count[UCS_MRLEASE_MONITOR_LAST];
    /* Optional: a producer that is pulled before each drain (the kernel
     * monitor, whose kernel raises the pending word itself); set once,
     * before any drain. */
    void                 (*pull)(void *arg);
    void                 *pull_arg;
} ucs_mrlease_queue_t;

ucs_status_t ucs_mrlease_queue_init(ucs_mrlease_queue_t *q, unsigned capacity);
void         ucs_mrlease_queue_cleanup(ucs_mrlease_queue_t *q);

static inline void ucs_mrlease_queue_lock(ucs_mrlease_queue_t *q)
{
    pthread_spin_lock(&q->lock);
}

static inline void ucs_mrlease_queue_unlock(ucs_mrlease_queue_t *q)
{
    pthread_spin_unlock(&q->lock);
}

/* The bit of the owner's pending word that this queue raises and clears. */
#define UCS_MRLEASE_QUEUE_PENDING 1u

/* Append under the lock (caller holds it); raises *pending. */
void ucs_mrlease_queue_push_locked(ucs_mrlease_queue_t *q,
                                   const ucs_mrlease_qentry_t *e,
                                   volatile uint32_t *pending);
void ucs_mrlease_queue_push(ucs_mrlease_queue_t *q, const ucs_mrlease_qentry_t *e,
                            volatile uint32_t *pending);

/*
 * Take everything queued into q->drain_buf and clear *pending. Returns the
 * number of entries; *overflow_kinds gets the kinds folded by overflow (0 if
 * none), to be applied to every lease.
 */
unsigned ucs_mrlease_queue_drain(ucs_mrlease_queue_t *q, volatile uint32_t *pending,
                                 unsigned *overflow_kinds,
                                 unsigned *overflow_monitors);

#endif
