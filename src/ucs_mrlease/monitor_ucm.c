/*
 * ucm monitor: UCX's memory hooks. VM_UNMAPPED is raised in the changer's own
 * thread, before munmap/mremap/shmdt/brk/madvise(DONTNEED) change anything,
 * for whatever passes through the hooked libc symbols. Direct syscalls and
 * statically linked code do not pass there: the uffd monitor sees those.
 * fork() through libc is seen by an atfork handler.
 */
#include "engine.h"

#include <ucm/api/ucm.h>
#include <stdlib.h>

#define UCS_MRLEASE_UCM_PRIORITY 1000

typedef struct ucs_mrlease_ucm {
    ucs_mrlease_monitor_t  super;
    ucs_list_link_t        fork_list;
    int                    forgotten; /* a forked child's copy: inert */
} ucs_mrlease_ucm_t;

/* pthread_atfork handlers cannot be removed: one is installed, for all. */
static pthread_mutex_t ucm_fork_lock  = PTHREAD_MUTEX_INITIALIZER;
static UCS_LIST_HEAD(ucm_fork_monitors);
static int             ucm_fork_installed = 0;

static void ucm_push(ucs_mrlease_engine_t *engine, uintptr_t start, uintptr_t end,
                     unsigned kinds)
{
    ucs_mrlease_qentry_t e = {
        .start    = start,
        .end      = end,
        .kinds    = kinds,
        .monitor  = UCS_MRLEASE_MONITOR_UCM,
        .key      = -1,
        .stamp_ns = 0
    };

    ucs_mrlease_queue_push(&engine->queue, &e, &engine->hot.pending);
}

/* Set while this thread feeds a range to UCM (ucs_mrlease_ucm_feed): the
 * change was reported already, by the monitor that saw it. */
static __thread int ucm_feeding;

static void ucm_vm_unmapped(ucm_event_type_t type, ucm_event_t *event, void *arg)
{
    ucs_mrlease_ucm_t *mon = arg;
    uintptr_t start        = (uintptr_t)event->vm_unmapped.address;

    if (mon->forgotten || ucm_feeding) {
        return;
    }
    /* In the changer's thread, maybe inside malloc: no allocation, no lock
     * but the queue's spinlock. */
    ucm_push(mon->super.engine, start, start + event->vm_unmapped.size,
             UCS_MRLEASE_EV_UNMAP);
}

/*
 * ucm_vm_munmap() only dispatches VM_UNMAPPED to the handlers (UCX 1.13 to
 * 1.20, src/ucm/event/event.c): it unmaps nothing and installs no hook. Each
 * registration cache's handler invalidates at once if it gets its page-table
 * lock with trywrlock, else queues the range for its next lookup: it never
 * waits, so this may run in the dispatcher thread or in a catch-up inside a
 * cache's own mem_reg. Without UCM events (UCX_MEM_EVENTS=no) no cache has a
 * handler and there is nothing to tell.
 */
void ucs_mrlease_ucm_feed(uintptr_t start, uintptr_t end)
{
    ucm_feeding = 1;
    ucm_vm_munmap((void*)start, end - start);
    ucm_feeding = 0;
}

static void ucm_before_fork(void)
{
    ucs_mrlease_ucm_t *mon;

    pthread_mutex_lock(&ucm_fork_lock);
    ucs_list_for_each(mon, &ucm_fork_monitors, fork_list) {
        ucm_push(mon->super.engine, 0, UINTPTR_MAX, UCS_MRLEASE_EV_FORK);
    }
    pthread_mutex_unlock(&ucm_fork_lock);
}

static ucs_status_t ucm_open(ucs_mrlease_engine_t *engine,
                             ucs_mrlease_monitor_t **mon_p)
{
    ucs_mrlease_ucm_t *mon;
    ucs_status_t status;

    mon = calloc(1, sizeof(*mon));
    if (mon == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    mon->super.engine = engine;

    status = ucm_set_event_handler(UCM_EVENT_VM_UNMAPPED, UCS_MRLEASE_UCM_PRIORITY,
                                   ucm_vm_unmapped, mon);
    if (status != UCS_OK) {
        ucs_warn("mrlease: ucm: cannot install UCX memory hooks: %s (is "
                 "UCX_MEM_MMAP_HOOK_MODE=none, or UCX_MEM_EVENTS=no?)",
                 ucs_status_string(status));
        free(mon);
        return status;
    }

    pthread_mutex_lock(&ucm_fork_lock);
    if (!ucm_fork_installed && (pthread_atfork(ucm_before_fork, NULL, NULL) == 0)) {
        ucm_fork_installed = 1;
    }
    ucs_list_add_tail(&ucm_fork_monitors, &mon->fork_list);
    pthread_mutex_unlock(&ucm_fork_lock);

    *mon_p = &mon->super;
    return UCS_OK;
}

static void ucm_close(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_ucm_t *mon = ucs_derived_of(super, ucs_mrlease_ucm_t);

    ucm_unset_event_handler(UCM_EVENT_VM_UNMAPPED, ucm_vm_unmapped, mon);
    pthread_mutex_lock(&ucm_fork_lock);
    ucs_list_del(&mon->fork_list);
    pthread_mutex_unlock(&ucm_fork_lock);
    free(mon);
}

/* In a forked child: UCM's handler stays registered with us as its argument
 * (removing it would take UCM's lock, which a parent thread may have held
 * at fork), so the monitor stays allocated and does nothing from now on. */
static void ucm_forked(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_ucm_t *mon = ucs_derived_of(super, ucs_mrlease_ucm_t);

    mon->forgotten = 1;
    pthread_mutex_init(&ucm_fork_lock, NULL);
    ucs_list_del(&mon->fork_list);
}

static ucs_status_t ucm_arm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    return UCS_OK; /* hooks are process-wide: every range is covered */
}

static void ucm_disarm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
}

const ucs_mrlease_monitor_ops_t ucs_mrlease_ucm_ops = {
    .id     = UCS_MRLEASE_MONITOR_UCM,
    .name   = "ucm",
    .open   = ucm_open,
    .close  = ucm_close,
    .arm    = ucm_arm,
    .disarm = ucm_disarm,
    .forked = ucm_forked
};
