/*
 * Private state of the lease engine, shared by its files.
 */
#ifndef UCS_MRLEASE_ENGINE_H_
#define UCS_MRLEASE_ENGINE_H_

#include "mrlease.h"
#include "lease_tree.h"
#include "event_queue.h"
#include "engine_config.h"

#include <ucs/datastruct/list.h>
#include <ucs/debug/log_def.h>
#include <pthread.h>
#include <assert.h>
#include <time.h>

#define mrl_assert(_cond) assert(_cond)

typedef struct ucs_mrlease_monitor     ucs_mrlease_monitor_t;
typedef struct ucs_mrlease_monitor_ops ucs_mrlease_monitor_ops_t;

/* Visitor for the leases an event applies to; see monitor ops->resolve. */
typedef void (*ucs_mrlease_lease_visit_t)(ucs_mrlease_t *lease, void *arg);

/*
 * A monitor turns one kernel (or library) mechanism into queue entries.
 * arm/disarm/resolve/restored run under the engine lock; drain/timer run in
 * the reader thread and must never take the engine lock, since a changer
 * that the reader is about to release may be holding it.
 */
struct ucs_mrlease_monitor_ops {
    ucs_mrlease_monitor_id_t id;
    const char               *name;
    ucs_status_t (*open)(ucs_mrlease_engine_t *engine, ucs_mrlease_monitor_t **mon_p);
    void         (*close)(ucs_mrlease_monitor_t *mon);
    /* UCS_ERR_UNSUPPORTED: this monitor does not cover the lease (not an error). */
    ucs_status_t (*arm)(ucs_mrlease_monitor_t *mon, ucs_mrlease_t *lease);
    void         (*disarm)(ucs_mrlease_monitor_t *mon, ucs_mrlease_t *lease);
    /* Optional: the leases an entry applies to, when not found by its range. */
    int          (*resolve)(ucs_mrlease_monitor_t *mon, const ucs_mrlease_qentry_t *e,
                            ucs_mrlease_lease_visit_t visit, void *arg);
    /* Optional: a broken lease of this monitor was restored, released or died. */
    void         (*restored)(ucs_mrlease_monitor_t *mon, ucs_mrlease_t *lease);
    /* Optional, reader thread: fd to poll, its handler, and a periodic tick. */
    int          (*fd)(ucs_mrlease_monitor_t *mon);
    void         (*drain)(ucs_mrlease_monitor_t *mon);
    int          (*timer)(ucs_mrlease_monitor_t *mon); /* returns next timeout in ms, or -1 */
    /* Optional: the outermost dispatch pass has called every owner back
     * (no engine lock held; the dispatch lock is). */
    void         (*dispatched)(ucs_mrlease_monitor_t *mon);
    /* Optional, in a forked child: let go of the child's copies without
     * touching kernel state the parent still owns. The monitor is then
     * forgotten, never closed. Default: close the fd the reader polled. */
    void         (*forked)(ucs_mrlease_monitor_t *mon);
    /* Optional, any thread, engine lock held or not: add the monitor's own
     * counters (aligned words, read without a lock). */
    void         (*counters)(ucs_mrlease_monitor_t *mon,
                             ucs_mrlease_counters_t *counters);
};

struct ucs_mrlease_monitor {
    const ucs_mrlease_monitor_ops_t *ops;
    ucs_mrlease_engine_t            *engine;
};

extern const ucs_mrlease_monitor_ops_t ucs_mrlease_uffd_ops;
extern const ucs_mrlease_monitor_ops_t ucs_mrlease_ucm_ops;
extern const ucs_mrlease_monitor_ops_t ucs_mrlease_flease_ops;
extern const ucs_mrlease_monitor_ops_t ucs_mrlease_inject_ops;
extern const ucs_mrlease_monitor_ops_t ucs_mrlease_kmod_ops;

/* Tell every UCM VM_UNMAPPED handler of the process (each UCX registration
 * cache subscribes one) that [start, end) changed, as a hooked munmap would:
 * they drop their registrations of it. The ucm monitor does not report the
 * range back to the engine. Takes UCM's event lock for reading; call it with
 * no engine lock held (monitor_ucm.c). */
void ucs_mrlease_ucm_feed(uintptr_t start, uintptr_t end);

typedef enum {
    UCS_MRLEASE_STATE_ARMED,  /* coherent, monitors armed */
    UCS_MRLEASE_STATE_BROKEN, /* owner called back, restore awaited */
    UCS_MRLEASE_STATE_DEAD    /* owner could not restore */
} ucs_mrlease_state_t;

enum {
    UCS_MRLEASE_FLAG_QUEUED   = UCS_BIT(0), /* on the engine's dispatch queue */
    UCS_MRLEASE_FLAG_CALLBACK = UCS_BIT(1), /* owner callback running */
    /* Released while its callback ran or while queued: the lease is out of
     * the tree and disarmed, and is freed by whichever of the dispatch that
     * pops it and the callback's return comes last (ucs_mrlease_unhold). */
    UCS_MRLEASE_FLAG_RELEASED = UCS_BIT(2),
    /* Broken by a change that may have replaced the mapping (unmap, remap,
     * also when injected as such): its restore reads the memory map again
     * to re-arm. Other changes (madvise, fork, a file's break) keep the
     * vma, and the kind of memory with it. */
    UCS_MRLEASE_FLAG_REMAPPED = UCS_BIT(3),
    /* More than one report folded into the accumulated event (or an
     * overflow's "everything"): event.reports says 2, "several". */
    UCS_MRLEASE_FLAG_ACC_MANY = UCS_BIT(4)
};

/* Kinds after which the range may be mapped by something else. */
#define UCS_MRLEASE_EV_NEW_MAPPING (UCS_MRLEASE_EV_UNMAP | UCS_MRLEASE_EV_REMAP)

/* lease->backing_bits: the flags of ucs_mrlease_backing_t, packed */
enum {
    UCS_MRLEASE_BACKING_SYSV     = UCS_BIT(0),
    UCS_MRLEASE_BACKING_NAMED    = UCS_BIT(1),
    UCS_MRLEASE_BACKING_SHARED   = UCS_BIT(2),
    UCS_MRLEASE_BACKING_DAX      = UCS_BIT(3),
    UCS_MRLEASE_BACKING_WRITABLE = UCS_BIT(4)
};

/* acc_first/acc_last: page indexes in the lease; this one as acc_last means
 * "to the lease's end" (a lease of 2^32 pages or more is recorded whole). */
#define UCS_MRLEASE_ACC_TO_END UINT32_MAX

/*
 * What only some leases need, allocated beside the lease: those given an fd,
 * and those whose memory is not private anonymous (a file, shared memory:
 * what the file lease monitor may watch). lease->ext is NULL for the others.
 */
typedef struct ucs_mrlease_ext {
    ucs_mrlease_t   *lease;
    uint64_t        dev;          /* backing: of the first mapping */
    uint64_t        ino;
    uint64_t        offset;       /* file offset of the lease start */
    int             owner_fd;     /* dup of params->fd, or -1 */
    int             file_waiting; /* flease: a break waits for us */
    void            *file;        /* flease: the leased file */
    ucs_list_link_t file_list;    /* flease: leases on the same file */
} ucs_mrlease_ext_t;

/*
 * One lease: 120 bytes (a 128-byte malloc chunk), checked below; make bench
 * prints where they go. Small fields are bytes: each is its own memory
 * location, all read and written under the engine lock (monitored is also
 * read without it, as an atomic byte).
 */
struct ucs_mrlease {
    ucs_mrlease_hot_t       hot;        /* must be first: read inline; start
                                           and end are the tree node's range */
    ucs_mrlease_tree_node_t node;
    ucs_mrlease_engine_t    *engine;
    ucs_mrlease_break_cb_t  cb;
    void                    *arg;
    uint8_t                 events;     /* kinds the owner wants */
    uint8_t                 state;      /* ucs_mrlease_state_t */
    uint8_t                 flags;
    uint8_t                 monitored;  /* monitors that armed this lease */
    uint8_t                 acc_kinds;  /* accumulated, not yet delivered: */
    uint8_t                 acc_monitors;
    uint8_t                 backing_type; /* ucs_mrlease_backing_type_t */
    uint8_t                 backing_bits;
    uint32_t                acc_first;  /* hull of the accumulated event, */
    uint32_t                acc_last;   /* in pages: [first, last) */
    uintptr_t               acc_new_start; /* REMAP: where the hull moved */
    ucs_mrlease_t           *dispatch_next; /* the engine's dispatch queue */
    ucs_mrlease_ext_t       *ext;       /* or NULL */
};

#ifdef __cplusplus /* the gtests include this header */
#define mrl_static_assert static_assert
#else
#define mrl_static_assert _Static_assert
#endif
mrl_static_assert(UCS_MRLEASE_EV_ALL <= UINT8_MAX, "event kinds fit a byte");
mrl_static_assert(UCS_BIT(UCS_MRLEASE_MONITOR_LAST) - 1 <= UINT8_MAX, "monitors fit a byte");
mrl_static_assert((sizeof(void*) != 8) || (sizeof(struct ucs_mrlease) <= 120),
               "a lease fits a 128-byte malloc chunk (issue 9: <= 128 B per lease)");

struct ucs_mrlease_engine {
    ucs_mrlease_engine_hot_t hot;       /* must be first: read inline */
    ucs_mrlease_config_t     config;
    pthread_mutex_t          lock;      /* recursive: owners may re-enter from callbacks */
    pthread_mutex_t          dispatch_lock; /* one dispatch at a time, callbacks included */
    unsigned                 dispatch_depth; /* under dispatch_lock */
    ucs_mrlease_tree_t       tree;
    ucs_mrlease_queue_t      queue;
    ucs_mrlease_monitor_t    *monitors[UCS_MRLEASE_MONITOR_LAST];
    unsigned                 monitor_mask;
    ucs_mrlease_t            *dispatch_head; /* leases with an event to deliver, */
    ucs_mrlease_t            **dispatch_tail; /* in order, through dispatch_next */
    ucs_mrlease_counters_t   counters;  /* under lock, or atomics (held_*) */
    pid_t                    pid;
    int                      forked;    /* inherited through fork: watches nothing */
    ucs_list_link_t          fork_list; /* engine_fork.c: every engine of the process */
    /* reader thread */
    pthread_t                reader;
    void                     *reader_stack;
    int                      reader_running;
    int                      wake_fd;
    volatile int             reader_stop;
    pid_t                    reader_tid; /* target of file lease signals */
    /* optional dispatcher thread, woken by the reader */
    pthread_t                dispatcher;
    void                     *dispatcher_stack;
    int                      dispatch_fd; /* eventfd, or -1 */
};

/*
 * ucs_mrlease_engine_create()/destroy() on storage the caller owns. An owner
 * that keeps the engine in a static object of its own reads the pending
 * word with one RIP-relative load, and a never-initialized (zeroed) engine
 * reads as "nothing pending". A failed init leaves the storage zeroed.
 */
ucs_status_t ucs_mrlease_engine_init(ucs_mrlease_engine_t *engine);
void         ucs_mrlease_engine_cleanup(ucs_mrlease_engine_t *engine);

static inline uint64_t ucs_mrlease_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Bits of the pending word. DISPATCHING keeps it non-zero while another
 * thread runs callbacks for events it drained, so that a progress call made
 * after a change returns only once that change has been handled. */
#define UCS_MRLEASE_PENDING_EVENTS      UCS_MRLEASE_QUEUE_PENDING
#define UCS_MRLEASE_PENDING_DISPATCHING 2u
#define UCS_MRLEASE_PENDING_HELD        4u /* ucs_mrlease_engine_hold_pending() */
#define UCS_MRLEASE_PENDING_KMOD        8u /* raised by mrlease.ko itself */

/* Raise the pending word; callers hold the queue lock. */
static inline void ucs_mrlease_set_pending(ucs_mrlease_engine_t *engine)
{
    __atomic_or_fetch(&engine->hot.pending, UCS_MRLEASE_PENDING_EVENTS,
                      __ATOMIC_SEQ_CST);
}

/* counters.c: the running monitors' own counters (ops->counters) */
void ucs_mrlease_monitor_counters(ucs_mrlease_engine_t *engine,
                                  ucs_mrlease_counters_t *counters);

/* engine.c */
void ucs_mrlease_engine_lock(ucs_mrlease_engine_t *engine);
void ucs_mrlease_engine_unlock(ucs_mrlease_engine_t *engine);
void ucs_mrlease_count_held(ucs_mrlease_engine_t *engine, uint64_t ns);

/* engine.c, engine lock held */
void ucs_mrlease_restored_locked(ucs_mrlease_t *lease, ucs_status_t status);
void ucs_mrlease_free(ucs_mrlease_t *lease);

/* coverage.c, engine lock held: what no armed monitor sees (returns the
 * mask now in lease->hot.uncovered); count and warn about it at acquire. */
unsigned ucs_mrlease_cover(ucs_mrlease_t *lease);
void     ucs_mrlease_count_uncovered(ucs_mrlease_t *lease, const char *path);
/* Any thread: a monitor found a reason to add or clear (FILE_OPEN). */
void     ucs_mrlease_set_uncovered(ucs_mrlease_t *lease, unsigned reasons, int on);

/* dispatch.c: queue an event for a lease found outside the tree (locked). */
void ucs_mrlease_lease_event(ucs_mrlease_t *lease, const ucs_mrlease_qentry_t *e);
/* dispatch.c, locked: the event accumulated for a lease, then cleared */
void ucs_mrlease_acc_take(ucs_mrlease_t *lease, ucs_mrlease_event_t *event);
/* dispatch.c, locked: empty the dispatch queue, freeing the released leases
 * in it (engine cleanup, forked child) */
void ucs_mrlease_dispatch_reset(ucs_mrlease_engine_t *engine);

/* backing.c: keep what backs the lease (after a query), allocating
 * lease->ext when it is not private anonymous memory (or it has an fd). */
ucs_status_t ucs_mrlease_backing_store(ucs_mrlease_t *lease,
                                       const ucs_mrlease_backing_t *b);
ucs_status_t ucs_mrlease_ext_get(ucs_mrlease_t *lease);
void         ucs_mrlease_ext_free(ucs_mrlease_t *lease);
/* engine.c, locked: free a released lease once nothing holds it */
void ucs_mrlease_unhold(ucs_mrlease_t *lease);

/* engine_fork.c: keep the engine fork-safe from init to cleanup */
void ucs_mrlease_fork_add(ucs_mrlease_engine_t *engine);
void ucs_mrlease_fork_remove(ucs_mrlease_engine_t *engine);

/* reader_thread.c */
ucs_status_t ucs_mrlease_reader_start(ucs_mrlease_engine_t *engine);
void         ucs_mrlease_reader_stop(ucs_mrlease_engine_t *engine);
void         ucs_mrlease_reader_wake(ucs_mrlease_engine_t *engine);
void         ucs_mrlease_dispatcher_stop(ucs_mrlease_engine_t *engine);
int          ucs_mrlease_thread_start(pthread_t *thread, void *(*main)(void*),
                                      void *arg, void **stack_p);
void         ucs_mrlease_thread_join(pthread_t thread, void **stack_p);

/* backing.c */
typedef struct ucs_mrlease_vma {
    uintptr_t start, end;
    uint64_t  offset, dev, ino;
    int       shared, readable, writable, exec;
    char      path[4096];
} ucs_mrlease_vma_t;

/* Return nonzero to stop; the walk returns it (or -1 if maps is unreadable). */
typedef int (*ucs_mrlease_vma_visit_t)(const ucs_mrlease_vma_t *vma, void *arg);
int ucs_mrlease_maps_walk(ucs_mrlease_vma_visit_t visit, void *arg);

/* 1 if a device node's memory is mapped anywhere in [start, end), 0 if
 * not, -1 if /proc/self/maps cannot be read. */
int ucs_mrlease_range_maps_device(uintptr_t start, uintptr_t end);

ucs_status_t ucs_mrlease_backing_query(uintptr_t start, uintptr_t end,
                                       ucs_mrlease_backing_t *backing,
                                       char *path, size_t max,
                                       uintptr_t *vma_start, uintptr_t *vma_end);

#endif
