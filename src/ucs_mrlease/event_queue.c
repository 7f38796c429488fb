#include "event_queue.h"

#include <stdlib.h>
#include <string.h>

ucs_status_t ucs_mrlease_queue_init(ucs_mrlease_queue_t *q, unsigned capacity)
{
    memset(q, 0, sizeof(*q));
    q->capacity  = capacity;
    q->entries   = calloc(capacity, sizeof(*q->entries));
    q->drain_buf = calloc(capacity, sizeof(*q->drain_buf));
    if ((q->entries == NULL) || (q->drain_buf == NULL)) {
        free(q->entries);
        free(q->drain_buf);
        return UCS_ERR_NO_MEMORY;
    }
    if (pthread_spin_init(&q->lock, PTHREAD_PROCESS_PRIVATE) != 0) {
        free(q->entries);
        free(q->drain_buf);
        return UCS_ERR_IO_ERROR;
    }
    return UCS_OK;
}

void ucs_mrlease_queue_cleanup(ucs_mrlease_queue_t *q)
{
    pthread_spin_destroy(&q->lock);
    free(q->entries);
    free(q->drain_buf);
}

void ucs_mrlease_queue_push_locked(ucs_mrlease_queue_t *q,
                                   const ucs_mrlease_qentry_t *e,
                                   volatile uint32_t *pending)
{
    unsigned k;

    for (k = 0; k < UCS_MRLEASE_EV_KINDS; ++k) {
        if (e->kinds & UCS_BIT(k)) {
            ++q->kind_count[k];
        }
    }
    if (e->monitor < UCS_MRLEASE_MONITOR_LAST) {
        ++q->monitor_count[e->monitor];
    }

    if (q->count < q->capacity) {
        q->entries[q->count++] = *e;
    } else {
        if (q->overflow_kinds == 0) {
            ++q->overflows;
        }
        q->overflow_kinds    |= e->kinds;
        q->overflow_monitors |= UCS_BIT(e->monitor);
    }
    __atomic_or_fetch(pending, UCS_MRLEASE_QUEUE_PENDING, __ATOMIC_SEQ_CST);
}

void ucs_mrlease_queue_push(ucs_mrlease_queue_t *q, const ucs_mrlease_qentry_t *e,
                            volatile uint32_t *pending)
{
    ucs_mrlease_queue_lock(q);
    ucs_mrlease_queue_push_locked(q, e, pending);
    ucs_mrlease_queue_unlock(q);
}

unsigned ucs_mrlease_queue_drain(ucs_mrlease_queue_t *q, volatile uint32_t *pending,
                                 unsigned *overflow_kinds,
                                 unsigned *overflow_monitors)
{
    unsigned count;

    if (q->pull != NULL) {
        q->pull(q->pull_arg); /* outside the lock: it pushes */
    }
    ucs_mrlease_queue_lock(q);
    count = q->count;
    memcpy(q->drain_buf, q->entries, count * sizeof(*q->entries));
    *overflow_kinds       = q->overflow_kinds;
    *overflow_monitors    = q->overflow_monitors;
    q->count              = 0;
    q->overflow_kinds     = 0;
    q->overflow_monitors  = 0;
    __atomic_and_fetch(pending, ~UCS_MRLEASE_QUEUE_PENDING, __ATOMIC_SEQ_CST);
    ucs_mrlease_queue_unlock(q);
    return count;
}
