/**
 * mrlease: coherent RDMA memory registrations.
 *
 * A *lease* is held on every registered virtual range. When the kernel (or
 * libc, or an operator) changes what backs a leased range, the change becomes
 * a *decoherence event*: a monitor queues it and raises one pending word; the
 * owner's progress loop sees the word, and the engine calls the owner back
 * with the affected sub-range so it can quiesce, re-register and restore.
 * Where the kernel waits for us (file leases) the change is held until the
 * owner says the lease is restored.
 *
 * Threading: acquire/release/restored/dispatch may be called from any thread;
 * callbacks run in the thread that calls ucs_mrlease_progress() (or in the
 * engine's dispatcher thread). A progress call returns only after every
 * event queued before it has been handled, whichever thread took it.
 */
#ifndef UCS_MRLEASE_H_
#define UCS_MRLEASE_H_

#include <ucs/type/status.h>
#include <ucs/sys/compiler_def.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

BEGIN_C_DECLS

/* The library is built with hidden visibility: this is its API. */
#pragma GCC visibility push(default)

typedef struct ucs_mrlease_engine ucs_mrlease_engine_t;
typedef struct ucs_mrlease        ucs_mrlease_t;

/** Kinds of decoherence; an event carries a mask of them. */
typedef enum {
    UCS_MRLEASE_EV_UNMAP      = UCS_BIT(0), /**< range unmapped (munmap, shmdt, brk) */
    UCS_MRLEASE_EV_REMAP      = UCS_BIT(1), /**< range moved by mremap */
    UCS_MRLEASE_EV_REMOVE     = UCS_BIT(2), /**< pages dropped (madvise DONTNEED/REMOVE) */
    UCS_MRLEASE_EV_FORK       = UCS_BIT(3), /**< process forked (copy-on-write) */
    UCS_MRLEASE_EV_FILE_BREAK = UCS_BIT(4), /**< another opener wants to change the file */
    UCS_MRLEASE_EV_FILE_REARM = UCS_BIT(5), /**< registration may predate a file change */
    UCS_MRLEASE_EV_INJECT     = UCS_BIT(6), /**< injected by API or control socket */
    UCS_MRLEASE_EV_KINDS      = 7
} ucs_mrlease_event_kind_t;

#define UCS_MRLEASE_EV_ALL    (UCS_BIT(UCS_MRLEASE_EV_KINDS) - 1)

/** Monitors: where decoherence events come from. */
typedef enum {
    UCS_MRLEASE_MONITOR_UFFD,   /**< userfaultfd non-cooperative events */
    UCS_MRLEASE_MONITOR_UCM,    /**< UCX memory hooks, in the changer's thread */
    UCS_MRLEASE_MONITOR_FLEASE, /**< file leases (F_SETLEASE) on file-backed ranges */
    UCS_MRLEASE_MONITOR_INJECT, /**< ucs_mrlease_inject() and the control socket */
    UCS_MRLEASE_MONITOR_KMOD,   /**< mrlease.ko: the kernel's MMU notifiers */
    UCS_MRLEASE_MONITOR_LAST
} ucs_mrlease_monitor_id_t;

/** Decoherence delivered to a lease owner. */
typedef struct ucs_mrlease_event {
    unsigned  kinds;     /**< mask of ucs_mrlease_event_kind_t since the last call */
    unsigned  monitors;  /**< mask of UCS_BIT(ucs_mrlease_monitor_id_t) that saw it */
    uintptr_t start;     /**< hull of the affected sub-range, clipped to the lease */
    uintptr_t end;
    uintptr_t new_start; /**< for REMAP: where @a start moved to, else 0 */
    unsigned  reports;   /**< monitor reports folded into it: 1, or 2 for
                              several (the kernel makes one per vma and
                              change; one madvise may make several) */
} ucs_mrlease_event_t;

/**
 * Owner callback: the lease is broken. Return UCS_OK when the owner has
 * already restored (or dropped) its registration, UCS_INPROGRESS when it will
 * call ucs_mrlease_restored() later, or an error if the memory cannot be
 * restored (the lease then becomes dead and the kernel is released).
 */
typedef ucs_status_t (*ucs_mrlease_break_cb_t)(ucs_mrlease_t *lease,
                                               const ucs_mrlease_event_t *event,
                                               void *arg);

/** What backs a leased range, as found in /proc/self/maps at acquire time. */
typedef enum {
    UCS_MRLEASE_BACKING_ANON,
    UCS_MRLEASE_BACKING_SHMEM, /**< shared anonymous, SysV shm, tmpfs file */
    UCS_MRLEASE_BACKING_FILE,  /**< any other regular file */
    UCS_MRLEASE_BACKING_MIXED, /**< several mappings of different kinds */
    UCS_MRLEASE_BACKING_NONE,  /**< not mapped */
    UCS_MRLEASE_BACKING_DEVICE /**< a device's memory (a char or block device
                                    node's mapping: verbs queues, ...) */
} ucs_mrlease_backing_type_t;

typedef struct ucs_mrlease_backing {
    ucs_mrlease_backing_type_t type;
    int                        sysv;     /**< a SysV shared memory segment */
    int                        named;    /**< a file others can open: tmpfs or disk */
    uint64_t                   dev;
    uint64_t                   ino;
    uint64_t                   offset;   /**< file offset of the lease start */
    int                        shared;   /**< MAP_SHARED */
    int                        dax;      /**< a file on a DAX mount */
    int                        writable;
} ucs_mrlease_backing_t;

enum {
    UCS_MRLEASE_PARAM_FIELD_FD     = UCS_BIT(0),
    UCS_MRLEASE_PARAM_FIELD_EVENTS = UCS_BIT(1)
};

typedef struct ucs_mrlease_params {
    uint64_t               field_mask;
    ucs_mrlease_break_cb_t cb;
    void                   *arg;
    /** The fd behind a MAP_SHARED file mapping (duplicated, not kept). The
     * kernel grants a write lease only on the file description that is
     * mapped, so this is the reliable way to lease a file-backed range. */
    int                    fd;
    /** Kinds to deliver (default UCS_MRLEASE_EV_ALL). */
    unsigned               events;
} ucs_mrlease_params_t;

/** Hot words read on the fast path: the engine and the lease start with them. */
typedef struct ucs_mrlease_engine_hot {
    volatile uint32_t pending;
} UCS_V_ALIGNED(64) ucs_mrlease_engine_hot_t;

typedef struct ucs_mrlease_hot {
    volatile uint64_t generation; /**< bumped when the lease breaks */
    uintptr_t         start;
    uintptr_t         end;
    volatile unsigned uncovered;  /**< ucs_mrlease_uncovered_t mask */
} ucs_mrlease_hot_t;

/**
 * Why no running monitor can vouch for every way a lease's memory can
 * change. A registration is served from a cache only while this is 0:
 * otherwise it is registered for its use and dropped after.
 */
typedef enum {
    /** this process's own munmap/mremap/madvise by raw syscall would go
     *  unseen: userfaultfd does not watch the range (a disk file, hugetlb
     *  without support, several mappings, another userfaultfd, uffd off) */
    UCS_MRLEASE_UNCOVERED_RANGE     = UCS_BIT(0),
    /** SysV shared memory: shmdt by raw syscall goes unseen */
    UCS_MRLEASE_UNCOVERED_SHMDT     = UCS_BIT(1),
    /** the file is open elsewhere (the application's own descriptor, or
     *  another process maps it): the kernel refuses the file lease, so
     *  another process's truncate or write would go unseen */
    UCS_MRLEASE_UNCOVERED_FILE_OPEN = UCS_BIT(2),
    /** a file mapping that no file lease can watch (a private mapping,
     *  flease off, or the lease refused for another reason) */
    UCS_MRLEASE_UNCOVERED_FILE      = UCS_BIT(3),
    UCS_MRLEASE_UNCOVERED_REASONS   = 4
} ucs_mrlease_uncovered_t;

typedef struct ucs_mrlease_counters {
    uint64_t events[UCS_MRLEASE_EV_KINDS];          /**< queued, by kind */
    uint64_t monitor_events[UCS_MRLEASE_MONITOR_LAST];
    uint64_t leases_active;
    uint64_t leases_acquired;
    uint64_t leases_broken;      /**< callbacks delivered */
    uint64_t leases_restored;
    uint64_t leases_dead;        /**< owner could not restore */
    uint64_t restores_remapped;  /**< restores that read the memory map again
                                      (the change may have replaced the mapping) */
    uint64_t leases_unmonitored; /**< acquired with a change no monitor could see */
    uint64_t uncovered[UCS_MRLEASE_UNCOVERED_REASONS]; /**< ...by reason */
    uint64_t uncached[UCS_MRLEASE_UNCOVERED_REASONS];  /**< registrations served
                                       uncached by reason (ucs_mrlease_note_uncached) */
    uint64_t queue_overflows;    /**< events coalesced to a full invalidation */
    uint64_t dispatches;
    uint64_t held_count;         /**< changers the kernel held for us */
    uint64_t held_ns_total;
    uint64_t held_ns_max;
    uint64_t file_leases_forced; /**< the kernel broke a file lease by force */
    uint64_t file_leases_stalled;/**< let go: no progress call saw the break */
    uint64_t file_leases_adopted;/**< mappings re-mapped onto our own fd */
    /* kmod (mrlease.ko); the kernel's own words, read when asked */
    uint64_t kmod_ranges;        /**< leases the kernel watches now */
    uint64_t kmod_unwatched;     /**< leases it could not watch (slots full...) */
    uint64_t kmod_breaks;        /**< page changes the kernel told, before them */
    uint64_t kmod_ignored;       /**< changes that replaced no page (mprotect...) */
    uint64_t kmod_overflows;     /**< times its event queue folded to all ranges */
    uint64_t kmod_pmd_clears;    /**< breaks by a CLEAR of one aligned 2 MiB: most
                                      often a vma split nearby, pages kept */
    /* the kmod hold (UCX_MRLEASE_KMOD_HOLD) */
    uint64_t kmod_holds;         /**< changers held until the owners were called */
    uint64_t kmod_hold_timeouts; /**< holds that ran to the timeout (no ack) */
    uint64_t kmod_hold_unsafe;   /**< breaks not held: mmap lock held for write... */
    uint64_t kmod_hold_killed;   /**< holds ended by SIGKILL of the changer */
    uint64_t kmod_hold_ns_total;
    uint64_t kmod_hold_ns_max;
} ucs_mrlease_counters_t;

/**
 * Create an engine, configured from UCX_MRLEASE_* (see ucs_mrlease_config_print).
 * Monitors the kernel cannot provide are switched off with a warning.
 */
ucs_status_t ucs_mrlease_engine_create(ucs_mrlease_engine_t **engine_p);
void         ucs_mrlease_engine_destroy(ucs_mrlease_engine_t *engine);

/**
 * Run dispatch in a thread of the engine's own as soon as a monitor of the
 * reader thread (uffd, flease, inject, and kmod, whose fd the reader then
 * polls) queues an event, so that a changer the kernel holds (a file lease
 * break) is released, and an owner that never calls progress restored,
 * without waiting for the owner's next progress call. Only for owners whose callbacks are
 * thread-safe (UCX's rcache is). Progress calls keep working as well.
 */
ucs_status_t ucs_mrlease_engine_start_dispatcher(ucs_mrlease_engine_t *engine);

/**
 * Keep the pending word raised (hold != 0) or stop keeping it, on behalf of
 * an owner that has work of its own to finish in progress calls (e.g. memory
 * it waits to see mapped again): its fast-path check stays one load.
 */
void         ucs_mrlease_engine_hold_pending(ucs_mrlease_engine_t *engine, int hold);

/** Monitors that are running (mask of UCS_BIT(ucs_mrlease_monitor_id_t)). */
unsigned     ucs_mrlease_engine_monitors(const ucs_mrlease_engine_t *engine);
const char  *ucs_mrlease_monitor_name(ucs_mrlease_monitor_id_t id);
const char  *ucs_mrlease_event_kind_name(ucs_mrlease_event_kind_t kind);

ucs_status_t ucs_mrlease_acquire(ucs_mrlease_engine_t *engine, void *address,
                                 size_t length, const ucs_mrlease_params_t *params,
                                 ucs_mrlease_t **lease_p);
/** Release a lease; allowed from inside its own callback. */
void         ucs_mrlease_release(ucs_mrlease_t *lease);
/** The owner restored the registration after UCS_INPROGRESS (or failed). */
void         ucs_mrlease_restored(ucs_mrlease_t *lease, ucs_status_t status);

/** Which monitors cover the lease (mask), and what backs it (as found at
 * acquire, or at the last restore; copied into @a backing). */
unsigned     ucs_mrlease_monitored_by(const ucs_mrlease_t *lease);
void         ucs_mrlease_backing(const ucs_mrlease_t *lease,
                                 ucs_mrlease_backing_t *backing);

/** Why no running monitor vouches for the lease (ucs_mrlease_uncovered_t
 * mask; 0: a registration of it may be cached). */
unsigned     ucs_mrlease_uncovered(const ucs_mrlease_t *lease);
const char  *ucs_mrlease_uncovered_name(ucs_mrlease_uncovered_t reason);
/** An owner served a registration of the lease without caching it: count
 * it under each of the lease's reasons. */
void         ucs_mrlease_note_uncached(ucs_mrlease_t *lease);

/** Queue an event for [address, address+length) as if a monitor had seen it. */
ucs_status_t ucs_mrlease_inject(ucs_mrlease_engine_t *engine, void *address,
                                size_t length, unsigned kinds);

/** Slow path of ucs_mrlease_progress(): returns the number of leases called back. */
unsigned     ucs_mrlease_dispatch(ucs_mrlease_engine_t *engine);

void         ucs_mrlease_counters_get(ucs_mrlease_engine_t *engine,
                                      ucs_mrlease_counters_t *counters);
void         ucs_mrlease_counters_print(const ucs_mrlease_counters_t *counters,
                                        FILE *stream);

/** Print the UCX_MRLEASE_* configuration with documentation. */
void         ucs_mrlease_config_print(FILE *stream);

/** Fast path: one load and a branch when nothing is pending. */
static UCS_F_ALWAYS_INLINE unsigned
ucs_mrlease_progress(ucs_mrlease_engine_t *engine)
{
    if (ucs_likely(!((ucs_mrlease_engine_hot_t*)engine)->pending)) {
        return 0;
    }
    return ucs_mrlease_dispatch(engine);
}

/** Owners compare this with a saved value before posting: one load. */
static UCS_F_ALWAYS_INLINE uint64_t
ucs_mrlease_generation(const ucs_mrlease_t *lease)
{
    return ((const ucs_mrlease_hot_t*)lease)->generation;
}

/** A registration of the lease may be served from a cache: one load. */
static UCS_F_ALWAYS_INLINE int
ucs_mrlease_cacheable(const ucs_mrlease_t *lease)
{
    return !((const ucs_mrlease_hot_t*)lease)->uncovered;
}

#pragma GCC visibility pop

END_C_DECLS

#endif
