#include "event_queue.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/*
 * The buffers are sized for bursts (768 KiB each by default) and mostly
 * untouched: mapped apart and without transparent huge pages, so that
 * khugepaged never turns the page or two in use into 2 MiB resident (with
 * "always", max_ptes_none 511, it collapses any 2 MiB-aligned range of an
 * anonymous mapping that has one resident page).
 */
static void *ucs_mrlease_queue_buf_alloc(unsigned capacity)
{
    size_t size = (size_t)capacity * sizeof(ucs_mrlease_qentry_t);
    void *buf;

    buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
    if (buf == MAP_FAILED) {
        return NULL;
    }
    (void)madvise(buf, size, MADV_NOHUGEPAGE); /* THP may be compiled out */
    return buf;
}

static void ucs_mrlease_queue_buf_free(void *buf, unsigned capacity)
{
    if (buf != NULL) {
        munmap(buf, (size_t)capacity * sizeof(ucs_mrlease_qentry_t));
    }
}

ucs_status_t ucs_mrlease_queue_init(ucs_mrlease_queue_t *q, unsigned capacity)
{
    ucs_status_t status = UCS_ERR_NO_MEMORY;

    memset(q, 0, sizeof(*q));
    q->capacity  = capacity;
    q->entries   = ucs_mrlease_queue_buf_alloc(capacity);
    q->drain_buf = ucs_mrlease_queue_buf_alloc(capacity);
    if ((q->entries == NULL) || (q->drain_buf == NULL)) {
        goto err;
    }
    if (pthread_spin_init(&q->lock, PTHREAD_PROCESS_PRIVATE) != 0) {
        status = UCS_ERR_IO_ERROR;
        goto err;
    }
    return UCS_OK;

err:
    ucs_mrlease_queue_buf_free(q->entries, capacity);
    ucs_mrlease_queue_buf_free(q->drain_buf, capacity);
    return status;
}

void ucs_mrlease_queue_cleanup(ucs_mrlease_queue_t *q)
{
    pthread_spin_destroy(&q->lock);
    ucs_mrlease_queue_buf_free(q->entries, q->capacity);
    ucs_mrlease_queue_buf_free(q->drain_buf, q->capacity);
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
