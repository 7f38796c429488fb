/*
 * Dispatch: drain the queue, map events to leases, coalesce them per lease,
 * and call owners back. Runs from the owner's progress when pending is set.
 */
#include "engine.h"

#include <unistd.h>


static unsigned ucs_mrlease_page_shift(void)
{
    return __builtin_ctzl(sysconf(_SC_PAGESIZE));
}

/* [start, end) of the lease (leases are whole pages) as page indexes */
static void ucs_mrlease_acc_pages(const ucs_mrlease_t *lease, uintptr_t start,
                                  uintptr_t end, uint32_t *first, uint32_t *last)
{
    unsigned shift = ucs_mrlease_page_shift();
    uintptr_t mask = ((uintptr_t)1 << shift) - 1;

    if (((lease->hot.end - lease->hot.start) >> shift) >= UCS_MRLEASE_ACC_TO_END) {
        *first = 0; /* 16 TiB or more: recorded whole */
        *last  = UCS_MRLEASE_ACC_TO_END;
        return;
    }
    *first = (start - lease->hot.start) >> shift;
    *last  = (end - lease->hot.start + mask) >> shift;
}

void ucs_mrlease_acc_take(ucs_mrlease_t *lease, ucs_mrlease_event_t *event)
{
    unsigned shift = ucs_mrlease_page_shift();

    event->kinds     = lease->acc_kinds;
    event->monitors  = lease->acc_monitors;
    event->start     = lease->hot.start + ((uintptr_t)lease->acc_first << shift);
    event->end       = (lease->acc_last == UCS_MRLEASE_ACC_TO_END) ?
                       lease->hot.end :
                       lease->hot.start + ((uintptr_t)lease->acc_last << shift);
    event->new_start = lease->acc_new_start;
    event->reports   = (lease->flags & UCS_MRLEASE_FLAG_ACC_MANY) ? 2 : 1;
    lease->flags        &= ~UCS_MRLEASE_FLAG_ACC_MANY;
    lease->acc_kinds     = 0;
    lease->acc_monitors  = 0;
    lease->acc_new_start = 0;
}

/* Fold an event into a lease's accumulated one; queue the lease once. The
 * hull is kept in whole pages, as the lease is: a sub-page range reaches
 * the owner as the pages it touches. */
void ucs_mrlease_lease_event(ucs_mrlease_t *lease, const ucs_mrlease_qentry_t *e)
{
    ucs_mrlease_engine_t *engine = lease->engine;
    uint32_t first, last;
    uintptr_t start, end;

    if (e != NULL) {
        start = (e->start > lease->hot.start) ? e->start : lease->hot.start;
        end   = (e->end < lease->hot.end) ? e->end : lease->hot.end;
        if (start >= end) {
            /* resolved by file, not by range: the whole lease */
            start = lease->hot.start;
            end   = lease->hot.end;
        }
        ucs_mrlease_acc_pages(lease, start, end, &first, &last);
        if ((lease->acc_kinds != 0) ||
            ((e->start == 0) && (e->end == UINTPTR_MAX))) {
            lease->flags |= UCS_MRLEASE_FLAG_ACC_MANY; /* or lost count */
        }
        if (lease->acc_kinds == 0) {
            lease->acc_first = first;
            lease->acc_last  = last;
        } else {
            lease->acc_first = (first < lease->acc_first) ? first : lease->acc_first;
            lease->acc_last  = (last > lease->acc_last) ? last : lease->acc_last;
        }
        lease->acc_kinds    |= e->kinds;
        lease->acc_monitors |= UCS_BIT(e->monitor);
        if (e->kinds & UCS_MRLEASE_EV_REMAP) {
            lease->acc_new_start = e->new_start + (start - e->start);
        }
    }

    if (!(lease->flags & (UCS_MRLEASE_FLAG_QUEUED | UCS_MRLEASE_FLAG_RELEASED)) &&
        (lease->state == UCS_MRLEASE_STATE_ARMED)) {
        lease->flags        |= UCS_MRLEASE_FLAG_QUEUED;
        lease->dispatch_next = NULL;
        *engine->dispatch_tail = lease;
        engine->dispatch_tail  = &lease->dispatch_next;
        /* seen by the next progress even if this is not a dispatch */
        ucs_mrlease_set_pending(engine);
    }
}

/* Take the first lease off the dispatch queue (locked), or NULL. */
static ucs_mrlease_t *ucs_mrlease_dispatch_pop(ucs_mrlease_engine_t *engine)
{
    ucs_mrlease_t *lease = engine->dispatch_head;

    if (lease != NULL) {
        engine->dispatch_head = lease->dispatch_next;
        if (engine->dispatch_head == NULL) {
            engine->dispatch_tail = &engine->dispatch_head;
        }
        lease->dispatch_next = NULL;
        lease->flags        &= ~UCS_MRLEASE_FLAG_QUEUED;
    }
    return lease;
}

void ucs_mrlease_dispatch_reset(ucs_mrlease_engine_t *engine)
{
    ucs_mrlease_t *lease;

    while ((lease = ucs_mrlease_dispatch_pop(engine)) != NULL) {
        ucs_mrlease_unhold(lease);
    }
}

static void ucs_mrlease_lease_event_cb(ucs_mrlease_t *lease, void *arg)
{
    ucs_mrlease_lease_event(lease, (const ucs_mrlease_qentry_t*)arg);
}

static int ucs_mrlease_tree_event_cb(ucs_mrlease_tree_node_t *node, void *arg)
{
    ucs_mrlease_lease_event(ucs_container_of(node, ucs_mrlease_t, node),
                            (const ucs_mrlease_qentry_t*)arg);
    return 0;
}

static void ucs_mrlease_map_entry(ucs_mrlease_engine_t *engine,
                                  const ucs_mrlease_qentry_t *e)
{
    ucs_mrlease_monitor_t *mon = (e->monitor < UCS_MRLEASE_MONITOR_LAST) ?
                                 engine->monitors[e->monitor] : NULL;

    if ((mon != NULL) && (mon->ops->resolve != NULL) &&
        mon->ops->resolve(mon, e, ucs_mrlease_lease_event_cb, (void*)e)) {
        return;
    }
    ucs_mrlease_tree_overlaps(&engine->tree, e->start, e->end,
                              ucs_mrlease_tree_event_cb, (void*)e);
}

unsigned ucs_mrlease_dispatch(ucs_mrlease_engine_t *engine)
{
    unsigned count = 0, n, i, overflow_kinds, overflow_monitors, m;
    ucs_mrlease_qentry_t all = {0};
    ucs_mrlease_event_t event;
    ucs_mrlease_break_cb_t cb;
    ucs_mrlease_t *lease;
    ucs_status_t status;
    void *arg;

    /* A second thread waits here until the first has called every owner
     * back: progress returns only when earlier changes are handled. */
    pthread_mutex_lock(&engine->dispatch_lock);
    if (engine->dispatch_depth++ == 0) {
        __atomic_or_fetch(&engine->hot.pending, UCS_MRLEASE_PENDING_DISPATCHING,
                          __ATOMIC_SEQ_CST);
    }
    ucs_mrlease_engine_lock(engine);
    ++engine->counters.dispatches;

    n = ucs_mrlease_queue_drain(&engine->queue, &engine->hot.pending,
                                &overflow_kinds, &overflow_monitors);
    for (i = 0; i < n; ++i) {
        ucs_mrlease_map_entry(engine, &engine->queue.drain_buf[i]);
    }
    if (overflow_kinds != 0) {
        /* Lost track of which ranges: every lease may be decoherent. */
        ucs_diag("mrlease: event queue overflowed (UCX_MRLEASE_QUEUE_LEN=%u): "
                 "breaking every lease", engine->config.queue_len);
        all.end   = UINTPTR_MAX;
        all.kinds = overflow_kinds;
        all.key   = -1;
        /* As any entry: a monitor that resolves its own (flease: a held
         * change waits for every lease on its file) gets key -1, "all". */
        for (m = 0; m < UCS_MRLEASE_MONITOR_LAST; ++m) {
            if (overflow_monitors & UCS_BIT(m)) {
                all.monitor = m;
                ucs_mrlease_map_entry(engine, &all);
            }
        }
    }

    while ((lease = ucs_mrlease_dispatch_pop(engine)) != NULL) {
        if (lease->flags & UCS_MRLEASE_FLAG_RELEASED) {
            ucs_mrlease_unhold(lease); /* released while queued */
            continue;
        }
        if (lease->state != UCS_MRLEASE_STATE_ARMED) {
            continue; /* broken: delivered again when restored; dead: nothing */
        }

        ucs_mrlease_acc_take(lease, &event);
        if (event.kinds & UCS_MRLEASE_EV_NEW_MAPPING) {
            lease->flags |= UCS_MRLEASE_FLAG_REMAPPED;
        }
        event.kinds &= lease->events;
        if (event.kinds == 0) {
            continue;
        }

        lease->state = UCS_MRLEASE_STATE_BROKEN;
        __atomic_add_fetch(&lease->hot.generation, 1, __ATOMIC_RELEASE);
        lease->flags    |= UCS_MRLEASE_FLAG_CALLBACK;
        ++engine->counters.leases_broken;
        ++count;

        ucs_debug("mrlease: lease %p [0x%lx, 0x%lx) broken: kinds 0x%x "
                  "[0x%lx, 0x%lx) monitors 0x%x", lease, lease->hot.start,
                  lease->hot.end, event.kinds, event.start, event.end,
                  event.monitors);

        /* Owners take their own locks (rcache's page table) and may call
         * back into the engine: never hold ours across the callback.
         * Lifetime: the lease stays allocated until the callback returns,
         * even if another thread releases it meanwhile (RELEASED, freed
         * below, or by the dispatch that pops it if it was queued again). Nothing else does: what arg points to may be freed by the
         * owner as soon as the release returns (UCX frees an rcache region
         * right after mem_dereg). An owner whose arg can go that way reads
         * it only under the engine lock while the lease is not RELEASED
         * (rcache_hook.c). */
        cb  = lease->cb;
        arg = lease->arg;
        ucs_mrlease_engine_unlock(engine);
        status = cb(lease, &event, arg);
        ucs_mrlease_engine_lock(engine);

        lease->flags &= ~UCS_MRLEASE_FLAG_CALLBACK;
        if (lease->flags & UCS_MRLEASE_FLAG_RELEASED) {
            ucs_mrlease_unhold(lease);
            continue;
        }
        if ((status != UCS_INPROGRESS) &&
            (lease->state == UCS_MRLEASE_STATE_BROKEN)) {
            ucs_mrlease_restored_locked(lease, status);
        }
    }

    ucs_mrlease_engine_unlock(engine);
    if (--engine->dispatch_depth == 0) {
        for (m = 0; m < UCS_MRLEASE_MONITOR_LAST; ++m) {
            if ((engine->monitors[m] != NULL) &&
                (engine->monitors[m]->ops->dispatched != NULL)) {
                engine->monitors[m]->ops->dispatched(engine->monitors[m]);
            }
        }
        __atomic_and_fetch(&engine->hot.pending, ~UCS_MRLEASE_PENDING_DISPATCHING,
                           __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&engine->dispatch_lock);
    return count;
}
