/*
 * Engine lifetime, leases, and the owner-facing slow paths.
 */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>

static const ucs_mrlease_monitor_ops_t *ucs_mrlease_monitor_ops[] = {
    [UCS_MRLEASE_MONITOR_UFFD]   = &ucs_mrlease_uffd_ops,
    [UCS_MRLEASE_MONITOR_UCM]    = &ucs_mrlease_ucm_ops,
    [UCS_MRLEASE_MONITOR_FLEASE] = &ucs_mrlease_flease_ops,
    [UCS_MRLEASE_MONITOR_INJECT] = &ucs_mrlease_inject_ops,
    [UCS_MRLEASE_MONITOR_KMOD]   = &ucs_mrlease_kmod_ops
};

/* Monitors that watch ranges; inject covers everything only on request. */
#define UCS_MRLEASE_RANGE_MONITORS \
    (UCS_BIT(UCS_MRLEASE_MONITOR_UFFD) | UCS_BIT(UCS_MRLEASE_MONITOR_UCM) | \
     UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE) | UCS_BIT(UCS_MRLEASE_MONITOR_KMOD))

void ucs_mrlease_engine_lock(ucs_mrlease_engine_t *engine)
{
    pthread_mutex_lock(&engine->lock);
}

void ucs_mrlease_engine_unlock(ucs_mrlease_engine_t *engine)
{
    pthread_mutex_unlock(&engine->lock);
}

void ucs_mrlease_count_held(ucs_mrlease_engine_t *engine, uint64_t ns)
{
    uint64_t max = __atomic_load_n(&engine->counters.held_ns_max, __ATOMIC_RELAXED);

    __atomic_add_fetch(&engine->counters.held_count, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&engine->counters.held_ns_total, ns, __ATOMIC_RELAXED);
    while ((ns > max) &&
           !__atomic_compare_exchange_n(&engine->counters.held_ns_max, &max, ns,
                                        0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

const char *ucs_mrlease_event_kind_name(ucs_mrlease_event_kind_t kind)
{
    switch (kind) {
    case UCS_MRLEASE_EV_UNMAP:      return "unmap";
    case UCS_MRLEASE_EV_REMAP:      return "remap";
    case UCS_MRLEASE_EV_REMOVE:     return "remove";
    case UCS_MRLEASE_EV_FORK:       return "fork";
    case UCS_MRLEASE_EV_FILE_BREAK: return "file_break";
    case UCS_MRLEASE_EV_FILE_REARM: return "file_rearm";
    case UCS_MRLEASE_EV_INJECT:     return "inject";
    default:                        return "?";
    }
}

static void ucs_mrlease_monitors_close(ucs_mrlease_engine_t *engine)
{
    int id;

    for (id = UCS_MRLEASE_MONITOR_LAST - 1; id >= 0; --id) {
        if (engine->monitors[id] != NULL) {
            engine->monitors[id]->ops->close(engine->monitors[id]);
            engine->monitors[id] = NULL;
        }
    }
    engine->monitor_mask = 0;
}

ucs_status_t ucs_mrlease_engine_init(ucs_mrlease_engine_t *engine)
{
    pthread_mutexattr_t attr;
    ucs_status_t status;
    int id;

    memset(engine, 0, sizeof(*engine));
    engine->wake_fd     = -1;
    engine->dispatch_fd = -1;
    engine->pid     = getpid();

    status = ucs_mrlease_config_read(&engine->config);
    if (status != UCS_OK) {
        goto err_clear;
    }

    status = ucs_mrlease_queue_init(&engine->queue, engine->config.queue_len);
    if (status != UCS_OK) {
        goto err_config;
    }

    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&engine->lock, &attr);
    pthread_mutex_init(&engine->dispatch_lock, &attr);
    pthread_mutexattr_destroy(&attr);
    /* a node's range is its lease's hot.start, hot.end */
    ucs_mrlease_tree_init(&engine->tree,
                          (ptrdiff_t)offsetof(ucs_mrlease_t, hot.start) -
                          (ptrdiff_t)offsetof(ucs_mrlease_t, node));
    engine->dispatch_tail = &engine->dispatch_head;

    for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
        if (!(engine->config.monitors & UCS_BIT(id))) {
            continue;
        }
        status = ucs_mrlease_monitor_ops[id]->open(engine, &engine->monitors[id]);
        if (status != UCS_OK) {
            /* The monitor logged why; the engine runs without it. */
            ucs_warn("mrlease: monitor '%s' is off (%s)",
                     ucs_mrlease_monitor_name(id), ucs_status_string(status));
            engine->monitors[id] = NULL;
            continue;
        }
        engine->monitors[id]->ops    = ucs_mrlease_monitor_ops[id];
        engine->monitors[id]->engine = engine;
        engine->monitor_mask        |= UCS_BIT(id);
    }

    if (!(engine->monitor_mask & UCS_MRLEASE_RANGE_MONITORS)) {
        ucs_warn("mrlease: no range monitor is running (UCX_MRLEASE_MONITORS=%s): "
                 "decoherence will only be seen if injected",
                 getenv("UCX_MRLEASE_MONITORS") ? getenv("UCX_MRLEASE_MONITORS") :
                                                  "default");
    }

    status = ucs_mrlease_reader_start(engine);
    if (status != UCS_OK) {
        goto err_monitors;
    }

    ucs_mrlease_fork_add(engine);
    ucs_debug("mrlease: engine %p created, monitors 0x%x", engine,
              engine->monitor_mask);
    return UCS_OK;

err_monitors:
    ucs_mrlease_monitors_close(engine);
    pthread_mutex_destroy(&engine->dispatch_lock);
    pthread_mutex_destroy(&engine->lock);
    ucs_mrlease_queue_cleanup(&engine->queue);
err_config:
    ucs_mrlease_config_release(&engine->config);
err_clear:
    memset(engine, 0, sizeof(*engine)); /* nothing pending, ever */
    return status;
}

ucs_status_t ucs_mrlease_engine_create(ucs_mrlease_engine_t **engine_p)
{
    ucs_mrlease_engine_t *engine;
    ucs_status_t status;

    if (posix_memalign((void**)&engine, 64, sizeof(*engine)) != 0) {
        return UCS_ERR_NO_MEMORY;
    }
    status = ucs_mrlease_engine_init(engine);
    if (status != UCS_OK) {
        free(engine);
        return status;
    }
    *engine_p = engine;
    return UCS_OK;
}

static int ucs_mrlease_leak_visit(ucs_mrlease_tree_node_t *node, void *arg)
{
    ++*(size_t*)arg;
    return 0;
}

void ucs_mrlease_engine_cleanup(ucs_mrlease_engine_t *engine)
{
    size_t leaked = 0;

    ucs_mrlease_fork_remove(engine);
    ucs_mrlease_reader_stop(engine);
    ucs_mrlease_dispatch_reset(engine);
    ucs_mrlease_tree_walk(&engine->tree, ucs_mrlease_leak_visit, &leaked);
    if (leaked > 0) {
        ucs_warn("mrlease: engine %p destroyed with %zu leases still held",
                 engine, leaked);
    }
    ucs_mrlease_monitors_close(engine);
    pthread_mutex_destroy(&engine->dispatch_lock);
    pthread_mutex_destroy(&engine->lock);
    ucs_mrlease_queue_cleanup(&engine->queue);
    ucs_mrlease_config_release(&engine->config);
}

void ucs_mrlease_engine_destroy(ucs_mrlease_engine_t *engine)
{
    ucs_mrlease_engine_cleanup(engine);
    free(engine);
}

void ucs_mrlease_engine_hold_pending(ucs_mrlease_engine_t *engine, int hold)
{
    if (hold) {
        __atomic_or_fetch(&engine->hot.pending, UCS_MRLEASE_PENDING_HELD,
                          __ATOMIC_SEQ_CST);
    } else {
        __atomic_and_fetch(&engine->hot.pending, ~UCS_MRLEASE_PENDING_HELD,
                           __ATOMIC_SEQ_CST);
    }
}

unsigned ucs_mrlease_engine_monitors(const ucs_mrlease_engine_t *engine)
{
    return engine->monitor_mask;
}

/* flease first: adopting a file mapping replaces its vma, which would drop
 * a userfaultfd registration made before it (and break a kmod one). kmod
 * before uffd: a range kmod watches needs no userfaultfd (whose changer
 * waits for the reader thread). */
static const ucs_mrlease_monitor_id_t ucs_mrlease_arm_order[] = {
    UCS_MRLEASE_MONITOR_FLEASE, UCS_MRLEASE_MONITOR_KMOD,
    UCS_MRLEASE_MONITOR_UFFD, UCS_MRLEASE_MONITOR_UCM,
    UCS_MRLEASE_MONITOR_INJECT
};

static void ucs_mrlease_arm(ucs_mrlease_engine_t *engine, ucs_mrlease_t *lease)
{
    ucs_status_t status;
    unsigned i;
    int id;

    for (i = 0; i < UCS_MRLEASE_MONITOR_LAST; ++i) {
        id = ucs_mrlease_arm_order[i];
        if ((engine->monitors[id] == NULL) ||
            (lease->monitored & UCS_BIT(id)) ||
            ((id == UCS_MRLEASE_MONITOR_UFFD) &&
             (lease->monitored & UCS_BIT(UCS_MRLEASE_MONITOR_KMOD)))) {
            continue;
        }
        status = engine->monitors[id]->ops->arm(engine->monitors[id], lease);
        if (status == UCS_OK) {
            lease->monitored |= UCS_BIT(id);
        } else if (status != UCS_ERR_UNSUPPORTED) {
            ucs_diag("mrlease: %s does not cover lease [0x%lx, 0x%lx): %s",
                     ucs_mrlease_monitor_name(id), lease->hot.start,
                     lease->hot.end, ucs_status_string(status));
        }
    }
}

static void ucs_mrlease_disarm(ucs_mrlease_engine_t *engine, ucs_mrlease_t *lease)
{
    int id;

    for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
        if (lease->monitored & UCS_BIT(id)) {
            engine->monitors[id]->ops->disarm(engine->monitors[id], lease);
        }
    }
    lease->monitored = 0;
}

/* Let monitors that hold a changer (file leases) know it may go on. */
static void ucs_mrlease_notify_restored(ucs_mrlease_engine_t *engine,
                                        ucs_mrlease_t *lease)
{
    int id;

    for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
        if ((engine->monitors[id] != NULL) &&
            (engine->monitors[id]->ops->restored != NULL)) {
            engine->monitors[id]->ops->restored(engine->monitors[id], lease);
        }
    }
}

ucs_status_t ucs_mrlease_acquire(ucs_mrlease_engine_t *engine, void *address,
                                 size_t length, const ucs_mrlease_params_t *params,
                                 ucs_mrlease_t **lease_p)
{
    uintptr_t page = sysconf(_SC_PAGESIZE);
    ucs_mrlease_backing_t backing;
    char path[4096];
    ucs_mrlease_t *lease;
    ucs_status_t status;

    if ((length == 0) || (params == NULL) || (params->cb == NULL) ||
        ((uintptr_t)address + length < (uintptr_t)address)) {
        ucs_error("mrlease: invalid lease request: address %p length %zu%s",
                  address, length,
                  (params == NULL || params->cb == NULL) ? " (no callback)" : "");
        return UCS_ERR_INVALID_PARAM;
    }

    lease = calloc(1, sizeof(*lease));
    if (lease == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    /* Leases cover whole pages: that is what registrations pin. */
    lease->hot.start  = (uintptr_t)address & ~(page - 1);
    lease->hot.end    = ((uintptr_t)address + length + page - 1) & ~(page - 1);
    lease->engine     = engine;
    lease->cb         = params->cb;
    lease->arg        = params->arg;
    lease->events     = (params->field_mask & UCS_MRLEASE_PARAM_FIELD_EVENTS) ?
                        params->events : UCS_MRLEASE_EV_ALL;
    lease->state      = UCS_MRLEASE_STATE_ARMED;

    if ((params->field_mask & UCS_MRLEASE_PARAM_FIELD_FD) && (params->fd >= 0)) {
        status = ucs_mrlease_ext_get(lease);
        if (status != UCS_OK) {
            goto err_free;
        }
        lease->ext->owner_fd = fcntl(params->fd, F_DUPFD_CLOEXEC, 0);
        if (lease->ext->owner_fd < 0) {
            ucs_error("mrlease: cannot duplicate fd %d: %m", params->fd);
            status = UCS_ERR_INVALID_PARAM;
            goto err_free;
        }
    }

    status = ucs_mrlease_backing_query(lease->hot.start, lease->hot.end,
                                       &backing, path, sizeof(path), NULL, NULL);
    if (status == UCS_OK) {
        status = ucs_mrlease_backing_store(lease, &backing);
    }
    if (status != UCS_OK) {
        goto err_free;
    }

    ucs_mrlease_engine_lock(engine);
    ucs_mrlease_tree_insert(&engine->tree, &lease->node);
    ucs_mrlease_arm(engine, lease);
    ucs_mrlease_cover(lease);
    ++engine->counters.leases_acquired;
    ++engine->counters.leases_active;
    ucs_mrlease_count_uncovered(lease, path);
    ucs_mrlease_engine_unlock(engine);

    ucs_trace("mrlease: lease %p [0x%lx, 0x%lx) monitored by 0x%x", lease,
              lease->hot.start, lease->hot.end, lease->monitored);
    *lease_p = lease;
    return UCS_OK;

err_free:
    ucs_mrlease_ext_free(lease);
    free(lease);
    return status;
}

void ucs_mrlease_free(ucs_mrlease_t *lease)
{
    ucs_mrlease_ext_free(lease);
    free(lease);
}

void ucs_mrlease_unhold(ucs_mrlease_t *lease)
{
    if ((lease->flags & UCS_MRLEASE_FLAG_RELEASED) &&
        !(lease->flags & (UCS_MRLEASE_FLAG_QUEUED | UCS_MRLEASE_FLAG_CALLBACK))) {
        ucs_mrlease_free(lease);
    }
}

void ucs_mrlease_release(ucs_mrlease_t *lease)
{
    ucs_mrlease_engine_t *engine = lease->engine;

    ucs_mrlease_engine_lock(engine);
    ucs_mrlease_tree_remove(&engine->tree, &lease->node);
    ucs_mrlease_disarm(engine, lease);
    if (lease->state == UCS_MRLEASE_STATE_BROKEN) {
        /* Dropping a broken registration is a way of restoring it. */
        ++engine->counters.leases_restored;
        lease->state = UCS_MRLEASE_STATE_DEAD;
        ucs_mrlease_notify_restored(engine, lease);
    }
    --engine->counters.leases_active;
    /* A queued lease stays in the dispatch queue (singly linked): the
     * dispatch that pops it frees it, as it does after a callback. */
    lease->flags |= UCS_MRLEASE_FLAG_RELEASED;
    ucs_mrlease_unhold(lease);
    ucs_mrlease_engine_unlock(engine);
}

/* Called with the engine lock held. */
void ucs_mrlease_restored_locked(ucs_mrlease_t *lease, ucs_status_t status)
{
    ucs_mrlease_engine_t *engine = lease->engine;
    ucs_mrlease_backing_t backing;

    if (lease->state != UCS_MRLEASE_STATE_BROKEN) {
        ucs_warn("mrlease: lease %p restored while not broken (state %d)",
                 lease, lease->state);
        return;
    }

    if (status == UCS_OK) {
        lease->state = UCS_MRLEASE_STATE_ARMED;
        ++engine->counters.leases_restored;
        ucs_mrlease_notify_restored(engine, lease);
        /* An unmap drops the kernel's userfaultfd registration with the
         * vma: register the range's new pages, which may be of another
         * kind than at acquire (and then covered by other monitors). A
         * change that kept the vma (madvise, fork, a file's break) kept
         * its kind too: no need to read the memory map again (tens of
         * microseconds per lease, which a mass restore pays N times). */
        if ((lease->flags & UCS_MRLEASE_FLAG_REMAPPED) ||
            (lease->acc_kinds & UCS_MRLEASE_EV_NEW_MAPPING)) {
            lease->flags &= ~UCS_MRLEASE_FLAG_REMAPPED;
            ++engine->counters.restores_remapped;
            if (lease->monitored & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD)) {
                ucs_mrlease_uffd_ops.disarm(engine->monitors[UCS_MRLEASE_MONITOR_UFFD],
                                            lease);
                lease->monitored &= ~UCS_BIT(UCS_MRLEASE_MONITOR_UFFD);
            }
            if (ucs_mrlease_backing_query(lease->hot.start, lease->hot.end,
                                          &backing, NULL, 0, NULL, NULL) == UCS_OK) {
                /* no memory for the file fields: no file lease (uncovered) */
                ucs_mrlease_backing_store(lease, &backing);
            }
        }
        ucs_mrlease_arm(engine, lease);
        ucs_mrlease_cover(lease);
        if (lease->acc_kinds != 0) {
            /* More happened while it was broken: deliver on next progress. */
            ucs_mrlease_lease_event(lease, NULL);
        }
    } else {
        ucs_warn("mrlease: lease [0x%lx, 0x%lx) cannot be restored: %s",
                 lease->hot.start, lease->hot.end, ucs_status_string(status));
        lease->state = UCS_MRLEASE_STATE_DEAD;
        ++engine->counters.leases_dead;
        ucs_mrlease_notify_restored(engine, lease);
        ucs_mrlease_disarm(engine, lease);
    }
}

void ucs_mrlease_restored(ucs_mrlease_t *lease, ucs_status_t status)
{
    ucs_mrlease_engine_t *engine = lease->engine;

    ucs_mrlease_engine_lock(engine);
    ucs_mrlease_restored_locked(lease, status);
    ucs_mrlease_engine_unlock(engine);
}

unsigned ucs_mrlease_monitored_by(const ucs_mrlease_t *lease)
{
    return lease->monitored;
}

ucs_status_t ucs_mrlease_inject(ucs_mrlease_engine_t *engine, void *address,
                                size_t length, unsigned kinds)
{
    ucs_mrlease_qentry_t e = {0};

    if (!(engine->monitor_mask & UCS_BIT(UCS_MRLEASE_MONITOR_INJECT))) {
        ucs_error("mrlease: injection is off (add 'inject' to UCX_MRLEASE_MONITORS)");
        return UCS_ERR_UNSUPPORTED;
    }
    if ((length == 0) || ((kinds & ~UCS_MRLEASE_EV_ALL) != 0) || (kinds == 0)) {
        ucs_error("mrlease: invalid injection: length %zu kinds 0x%x", length,
                  kinds);
        return UCS_ERR_INVALID_PARAM;
    }
    e.start    = (uintptr_t)address;
    e.end      = (uintptr_t)address + length;
    e.kinds    = kinds | UCS_MRLEASE_EV_INJECT;
    e.monitor  = UCS_MRLEASE_MONITOR_INJECT;
    e.key      = -1;
    e.stamp_ns = ucs_mrlease_now_ns();
    ucs_mrlease_queue_push(&engine->queue, &e, &engine->hot.pending);
    return UCS_OK;
}

void ucs_mrlease_counters_get(ucs_mrlease_engine_t *engine,
                              ucs_mrlease_counters_t *counters)
{
    ucs_mrlease_engine_lock(engine);
    *counters = engine->counters;
    ucs_mrlease_queue_lock(&engine->queue);
    memcpy(counters->events, engine->queue.kind_count, sizeof(counters->events));
    memcpy(counters->monitor_events, engine->queue.monitor_count,
           sizeof(counters->monitor_events));
    counters->queue_overflows = engine->queue.overflows;
    ucs_mrlease_queue_unlock(&engine->queue);
    ucs_mrlease_monitor_counters(engine, counters);
    ucs_mrlease_engine_unlock(engine);
}
