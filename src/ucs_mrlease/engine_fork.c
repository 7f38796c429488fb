/*
 * fork(): the parent keeps its engine; a child gets an engine that watches
 * nothing and therefore vouches for nothing, so that it neither hangs nor
 * serves stale registrations nor reports the parent's counters.
 *
 * Only the forking thread survives in the child, so the engine's reader and
 * dispatcher are gone, and any lock another parent thread held at the
 * moment of fork stays held forever in the child's copy. The engine lock
 * and the dispatch lock are taken around fork (prepare/parent), which keeps
 * the lease tree consistent in the child. The queue's spinlock is not: the
 * reader holds it across read() of userfaultfd events, and the fork itself
 * waits for its UFFD_EVENT_FORK to be read. The child re-initializes the
 * locks and empties the queue instead.
 *
 * In the child, every monitor is forgotten without being closed: closing
 * them would undo kernel state the parent still owns (a file lease belongs
 * to the file description both processes share). Only the child's copies of
 * the descriptors the reader polled are closed. Inherited leases keep
 * working for their owners' release and restore calls, but no monitor
 * covers them any more, and neither does one cover new leases: a leased
 * cache in the child registers for each use (ucs_mrlease_cacheable() is 0).
 */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t ucs_mrlease_fork_lock = PTHREAD_MUTEX_INITIALIZER;
static ucs_list_link_t ucs_mrlease_engines   = UCS_LIST_INITIALIZER(
        &ucs_mrlease_engines, &ucs_mrlease_engines);
static pthread_once_t  ucs_mrlease_fork_once = PTHREAD_ONCE_INIT;

/* Walk by links: the list head is not inside an (aligned) engine, so no
 * engine pointer is ever formed from it. */
#define ucs_mrlease_for_each_engine(_engine, _link) \
    for ((_link) = ucs_mrlease_engines.next; \
         ((_link) != &ucs_mrlease_engines) && \
         (((_engine) = ucs_container_of(_link, ucs_mrlease_engine_t, fork_list)), 1); \
         (_link) = (_link)->next)

static void ucs_mrlease_fork_prepare(void)
{
    ucs_mrlease_engine_t *engine;
    ucs_list_link_t *link;

    pthread_mutex_lock(&ucs_mrlease_fork_lock);
    ucs_mrlease_for_each_engine(engine, link) {
        pthread_mutex_lock(&engine->dispatch_lock);
        pthread_mutex_lock(&engine->lock);
    }
}

static void ucs_mrlease_fork_parent(void)
{
    ucs_mrlease_engine_t *engine;
    ucs_list_link_t *link;

    ucs_mrlease_for_each_engine(engine, link) {
        pthread_mutex_unlock(&engine->lock);
        pthread_mutex_unlock(&engine->dispatch_lock);
    }
    pthread_mutex_unlock(&ucs_mrlease_fork_lock);
}

static int ucs_mrlease_fork_uncover(ucs_mrlease_tree_node_t *node, void *arg)
{
    ucs_mrlease_t *lease = ucs_container_of(node, ucs_mrlease_t, node);

    ++*(uint64_t*)arg;
    lease->acc_kinds     = 0; /* the queue was emptied */
    lease->acc_monitors  = 0;
    lease->acc_new_start = 0;
    lease->flags        &= ~UCS_MRLEASE_FLAG_ACC_MANY;
    lease->monitored     = 0;
    if (lease->ext != NULL) {
        lease->ext->file         = NULL;
        lease->ext->file_waiting = 0;
        ucs_list_head_init(&lease->ext->file_list);
    }
    lease->hot.uncovered = UCS_MRLEASE_UNCOVERED_RANGE;
    return 0;
}

static void ucs_mrlease_reinit_mutex(pthread_mutex_t *mutex)
{
    pthread_mutexattr_t attr;

    /* Held by the forking thread, whose thread id the child does not have:
     * a recursive mutex cannot be unlocked here, only made anew. */
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(mutex, &attr);
    pthread_mutexattr_destroy(&attr);
}

static void ucs_mrlease_fork_child_engine(ucs_mrlease_engine_t *engine)
{
    ucs_mrlease_monitor_t *mon;
    int id;

    engine->forked = 1;
    engine->pid    = getpid();
    ucs_mrlease_reinit_mutex(&engine->lock);
    ucs_mrlease_reinit_mutex(&engine->dispatch_lock);
    engine->dispatch_depth = 0;

    pthread_spin_init(&engine->queue.lock, PTHREAD_PROCESS_PRIVATE);
    engine->queue.count             = 0;
    engine->queue.overflow_kinds    = 0;
    engine->queue.overflow_monitors = 0;
    engine->queue.overflows         = 0;
    memset(engine->queue.kind_count, 0, sizeof(engine->queue.kind_count));
    memset(engine->queue.monitor_count, 0, sizeof(engine->queue.monitor_count));
    ucs_mrlease_dispatch_reset(engine); /* frees the released ones */

    for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
        mon = engine->monitors[id];
        if (mon == NULL) {
            continue;
        } else if (mon->ops->forked != NULL) {
            mon->ops->forked(mon);
        } else if ((mon->ops->fd != NULL) && (mon->ops->fd(mon) >= 0)) {
            close(mon->ops->fd(mon));
        }
        engine->monitors[id] = NULL;
    }
    engine->monitor_mask = 0;
    memset(&engine->counters, 0, sizeof(engine->counters));
    ucs_mrlease_tree_walk(&engine->tree, ucs_mrlease_fork_uncover,
                          &engine->counters.leases_active);

    engine->reader_running = 0;
    engine->reader_stop    = 1;
    if (engine->wake_fd >= 0) {
        close(engine->wake_fd);
        engine->wake_fd = -1;
    }
    if (engine->dispatch_fd >= 0) {
        close(engine->dispatch_fd);
        engine->dispatch_fd = -1;
    }
    __atomic_store_n(&engine->hot.pending, 0, __ATOMIC_RELEASE);
}

static void ucs_mrlease_fork_child(void)
{
    ucs_mrlease_engine_t *engine;
    ucs_list_link_t *link;

    ucs_mrlease_for_each_engine(engine, link) {
        ucs_mrlease_fork_child_engine(engine);
    }
    pthread_mutex_init(&ucs_mrlease_fork_lock, NULL);
}

static void ucs_mrlease_fork_register(void)
{
    pthread_atfork(ucs_mrlease_fork_prepare, ucs_mrlease_fork_parent,
                   ucs_mrlease_fork_child);
}

void ucs_mrlease_fork_add(ucs_mrlease_engine_t *engine)
{
    pthread_once(&ucs_mrlease_fork_once, ucs_mrlease_fork_register);
    pthread_mutex_lock(&ucs_mrlease_fork_lock);
    ucs_list_add_tail(&ucs_mrlease_engines, &engine->fork_list);
    pthread_mutex_unlock(&ucs_mrlease_fork_lock);
}

void ucs_mrlease_fork_remove(ucs_mrlease_engine_t *engine)
{
    if (engine->fork_list.next == NULL) {
        return; /* never initialized */
    }
    pthread_mutex_lock(&ucs_mrlease_fork_lock);
    ucs_list_del(&engine->fork_list);
    engine->fork_list.next = NULL;
    pthread_mutex_unlock(&ucs_mrlease_fork_lock);
}
