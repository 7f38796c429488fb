/*
 * kmod monitor: mrlease.ko (/dev/mrlease, kernel/ in this tree). Every
 * leased range is an MMU interval notifier in the kernel; its callback runs
 * before the page tables change, whoever changes them (this process by libc
 * or raw syscall, a static binary, another process truncating a shared
 * file, shmdt, migration, exit) and ORs UCS_MRLEASE_PENDING_KMOD into the
 * engine's own pending word, which the kernel keeps pinned. So when the
 * change returns, the owner's next progress call (one load) sees it, and no
 * changer ever waits for us.
 *
 * Events are pulled from the fd by dispatch, before it drains the queue, so
 * the very next progress call after a change delivers it; with a dispatcher
 * thread the reader also polls the fd and wakes it (kmod_fd). A mutex makes
 * the read and the push one step.
 *
 * Changes that replace no page (mprotect, NUMA hinting, soft-dirty, fork's
 * write-protect of the parent) are filtered out in the kernel.
 *
 * The hold (UCX_MRLEASE_KMOD_HOLD, off by default): the kernel holds a
 * changer, where that is safe, until we ack. The pull remembers how far the
 * kernel says our reads went (hold_read); the dispatch that pulled calls
 * every owner back, then (ops->dispatched, outermost pass only) acks that
 * far. The ack touches only this struct, written at open: no allocation, no
 * fault, no mmap while a changer may hold our mmap_lock for read. Events
 * told while a changer is held carry MRLEASE_EV_BEFORE (the pages may still
 * be the old ones) and reach owners as REMOVE: they let the old registration
 * go and re-register later, as for userfaultfd's REMOVE.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "../../kernel/mrlease_uapi.h"

#include <ucs/datastruct/khash.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

/* Leases one engine may have watched by the kernel; more are left to the
 * other monitors (ENOSPC, counted as not armed). 16 bytes of status each. */
#define UCS_MRLEASE_KMOD_MAX_RANGES (1u << 17)
#define UCS_MRLEASE_KMOD_MAX_EVENTS 4096u

KHASH_MAP_INIT_INT64(mrl_kmod_slot, uint32_t)

typedef struct {
    ucs_mrlease_monitor_t  super;
    int                    fd;
    pid_t                  pid;       /* the context is this process's only */
    int                    lost;      /* the context stopped answering */
    pthread_mutex_t        read_lock; /* read() and push, as one step */
    khash_t(mrl_kmod_slot) slots;     /* lease -> slot; engine lock */
    void                   *status;   /* read-only status area */
    size_t                 status_size;
    uint64_t               ranges;    /* counters: engine lock to write */
    uint64_t               unwatched;
    uint32_t               hold_us;   /* the kernel's hold; 0: off */
    uint64_t               read_seq;  /* hold_read after our last read; read_lock */
    uint64_t               dispatch_seq; /* ... as the dispatch's pull left it */
    uint64_t               ack_seq;   /* acked; dispatch lock */
} ucs_mrlease_kmod_t;

static int ucs_mrlease_kmod_warned;

static unsigned kmod_kinds(uint32_t kind)
{
    unsigned kinds = 0;

    if (kind & (MRLEASE_EV_UNMAP | MRLEASE_EV_RELEASE)) {
        kinds |= UCS_MRLEASE_EV_UNMAP;
    }
    /* cleared, migrated, taken by a device: the pages are not the same */
    if (kind & ~(MRLEASE_EV_UNMAP | MRLEASE_EV_RELEASE | MRLEASE_EV_OVERFLOW)) {
        kinds |= UCS_MRLEASE_EV_REMOVE;
    }
    return kinds ? kinds : UCS_MRLEASE_EV_REMOVE;
}

static void kmod_pull_locked(ucs_mrlease_kmod_t *mon)
{
    ucs_mrlease_engine_t *engine = mon->super.engine;
    struct mrlease_event evs[64];
    ucs_mrlease_qentry_t e;
    uint64_t now;
    ssize_t n;
    int i;

    /* Lower the kernel's bit before reading: an event queued after the read
     * raises it again. But never leave the word clear while events are on
     * their way to the queue: a catch-up in another thread would find
     * nothing pending and go on under a binding about to break (read() waits
     * for the change to end, the changer is already back). The queue's bit
     * goes up first; that catch-up then dispatches, and its pull waits for
     * ours on read_lock. At worst one dispatch finds the queue empty. */
    __atomic_or_fetch(&engine->hot.pending, UCS_MRLEASE_QUEUE_PENDING,
                      __ATOMIC_SEQ_CST);
    __atomic_and_fetch(&engine->hot.pending, ~UCS_MRLEASE_PENDING_KMOD,
                       __ATOMIC_SEQ_CST);
    if (mon->lost || (getpid() != mon->pid)) {
        return; /* a forked child's copy: the context is the parent's */
    }
    for (;;) {
        n = read(mon->fd, evs, sizeof(evs));
        if (n <= 0) {
            if ((n < 0) && (errno != EAGAIN) && (errno != EINTR)) {
                ucs_error("mrlease: kmod: reading /dev/mrlease failed: %m; "
                          "breaking every lease, kernel events no longer seen");
                mon->lost = 1;
                memset(&e, 0, sizeof(e));
                e.end     = UINTPTR_MAX;
                e.kinds   = UCS_MRLEASE_EV_REMOVE;
                e.monitor = UCS_MRLEASE_MONITOR_KMOD;
                e.key     = -1;
                ucs_mrlease_queue_push(&engine->queue, &e, &engine->hot.pending);
            }
            break;
        }
        now = ucs_mrlease_now_ns();
        ucs_mrlease_queue_lock(&engine->queue);
        for (i = 0; i < n / (ssize_t)sizeof(evs[0]); ++i) {
            memset(&e, 0, sizeof(e));
            e.kinds    = kmod_kinds(evs[i].kind);
            e.monitor  = UCS_MRLEASE_MONITOR_KMOD;
            e.key      = -1;
            e.stamp_ns = now;
            if (evs[i].kind & MRLEASE_EV_OVERFLOW) {
                e.start = 0; /* folded by the kernel: every lease */
                e.end   = UINTPTR_MAX;
            } else {
                e.start = evs[i].start;
                e.end   = evs[i].end;
            }
            ucs_mrlease_queue_push_locked(&engine->queue, &e,
                                          &engine->hot.pending);
        }
        ucs_mrlease_queue_unlock(&engine->queue);
        if (n < (ssize_t)sizeof(evs)) {
            break;
        }
    }
    if (mon->hold_us != 0) {
        /* every hold up to here has its events in the queue now */
        mon->read_seq = __atomic_load_n(
                &((const struct mrlease_status_hdr*)mon->status)->hold_read,
                __ATOMIC_ACQUIRE);
    }
}

/* From the reader thread. */
static void kmod_pull(void *arg)
{
    ucs_mrlease_kmod_t *mon = arg;

    pthread_mutex_lock(&mon->read_lock);
    kmod_pull_locked(mon);
    pthread_mutex_unlock(&mon->read_lock);
}

/* Before each drain (dispatch, engine and dispatch locks held): the holds
 * whose events are queued by now are those this pass calls owners back for.
 * A later pull's (the reader's) may not be: acked by the next pass. */
static void kmod_pull_dispatch(void *arg)
{
    ucs_mrlease_kmod_t *mon = arg;

    pthread_mutex_lock(&mon->read_lock);
    kmod_pull_locked(mon);
    mon->dispatch_seq = mon->read_seq;
    pthread_mutex_unlock(&mon->read_lock);
}

/* Every owner called back: let go of the changers held for those events. */
static void kmod_dispatched(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_kmod_t *mon = ucs_derived_of(super, ucs_mrlease_kmod_t);

    if ((mon->hold_us == 0) || (mon->dispatch_seq <= mon->ack_seq) ||
        mon->lost || (getpid() != mon->pid)) {
        return;
    }
    mon->ack_seq = mon->dispatch_seq;
    if (ioctl(mon->fd, MRLEASE_IOC_ACK, &mon->ack_seq) < 0) {
        ucs_diag("mrlease: kmod: ack of hold %" PRIu64 " failed: %m",
                 mon->ack_seq);
    }
}

/* UCX_MRLEASE_KMOD_HOLD: ask the kernel to hold changers for us. */
static void kmod_set_hold(ucs_mrlease_kmod_t *mon, double hold_s)
{
    uint32_t us;

    if (hold_s <= 0) {
        return;
    }
    us = (uint32_t)(hold_s * 1e6 + 0.5);
    us = (us == 0) ? 1 : us; /* the config caps it at MRLEASE_HOLD_MAX_US */
    if (mon->status == NULL) {
        ucs_warn("mrlease: kmod: UCX_MRLEASE_KMOD_HOLD=%gs: the status area "
                 "could not be mapped; changers are not held", hold_s);
        return;
    }
    if (ioctl(mon->fd, MRLEASE_IOC_SET_HOLD, &us) < 0) {
        ucs_warn("mrlease: kmod: UCX_MRLEASE_KMOD_HOLD=%gs: %m%s; changers are "
                 "not held", hold_s, (errno == ENOTTY) ? " (the loaded "
                 "mrlease.ko has no hold: load this version's)" : "");
        return;
    }
    mon->hold_us = us;
    ucs_debug("mrlease: kmod: changers held up to %u us", us);
}

static ucs_status_t kmod_open(ucs_mrlease_engine_t *engine,
                              ucs_mrlease_monitor_t **mon_p)
{
    struct mrlease_setup setup;
    ucs_mrlease_kmod_t *mon;
    int fd;

    fd = open(MRLEASE_DEVICE, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (!__atomic_exchange_n(&ucs_mrlease_kmod_warned, 1, __ATOMIC_RELAXED)) {
            ucs_warn("mrlease: kmod: %s: %m: %s; falling back to uffd, ucm and "
                     "flease, which do not see everything (README: \"The kernel "
                     "monitor\")", MRLEASE_DEVICE,
                     (errno == ENOENT) ?
                     "the mrlease.ko module is not loaded (make kmod; insmod "
                     "kernel/mrlease.ko, or dkms install)" :
                     (errno == EACCES) ? "the device's permissions refuse this "
                     "user" : "the device cannot be used");
        }
        return UCS_ERR_UNSUPPORTED;
    }

    memset(&setup, 0, sizeof(setup));
    setup.abi          = MRLEASE_ABI_VERSION;
    setup.max_ranges   = UCS_MRLEASE_KMOD_MAX_RANGES;
    setup.max_events   = UCS_MRLEASE_KMOD_MAX_EVENTS;
    setup.pending_addr = (uintptr_t)&engine->hot.pending;
    setup.pending_bits = UCS_MRLEASE_PENDING_KMOD;
    if (ioctl(fd, MRLEASE_IOC_SETUP, &setup) < 0) {
        ucs_warn("mrlease: kmod: %s setup failed: %m%s", MRLEASE_DEVICE,
                 (errno == EPROTO) ? " (the loaded mrlease.ko is of another "
                 "version than this library: reload it)" : "");
        close(fd);
        return UCS_ERR_UNSUPPORTED;
    }

    mon = calloc(1, sizeof(*mon));
    if (mon == NULL) {
        close(fd);
        return UCS_ERR_NO_MEMORY;
    }
    mon->super.engine = engine;
    mon->fd           = fd;
    mon->pid          = getpid();
    mon->status_size  = setup.status_size;
    mon->status       = mmap(NULL, setup.status_size, PROT_READ, MAP_SHARED, fd,
                             0);
    if (mon->status == MAP_FAILED) {
        mon->status = NULL; /* diagnostics only */
    }
    pthread_mutex_init(&mon->read_lock, NULL);
    kh_init_inplace(mrl_kmod_slot, &mon->slots);
    kmod_set_hold(mon, engine->config.kmod_hold);

    engine->queue.pull_arg = mon;
    engine->queue.pull     = kmod_pull_dispatch;
    ucs_debug("mrlease: kmod: fd %d, %u ranges, %u events", fd,
              setup.max_ranges, setup.max_events);
    *mon_p = &mon->super;
    return UCS_OK;
}

static void kmod_close(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_kmod_t *mon = ucs_derived_of(super, ucs_mrlease_kmod_t);

    super->engine->queue.pull = NULL;
    if (mon->status != NULL) {
        munmap(mon->status, mon->status_size);
    }
    close(mon->fd); /* the kernel drops every range of the context */
    kh_destroy_inplace(mrl_kmod_slot, &mon->slots);
    pthread_mutex_destroy(&mon->read_lock);
    free(mon);
}

static ucs_status_t kmod_arm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_kmod_t *mon = ucs_derived_of(super, ucs_mrlease_kmod_t);
    struct mrlease_register reg;
    khiter_t it;
    int ret;

    if (mon->lost || (getpid() != mon->pid)) {
        return UCS_ERR_UNSUPPORTED;
    }
    memset(&reg, 0, sizeof(reg));
    reg.start  = lease->hot.start;
    reg.len    = lease->hot.end - lease->hot.start;
    reg.cookie = (uintptr_t)lease;
    if (ioctl(mon->fd, MRLEASE_IOC_REGISTER, &reg) < 0) {
        __atomic_add_fetch(&mon->unwatched, 1, __ATOMIC_RELAXED);
        ucs_diag("mrlease: kmod: register [0x%lx, 0x%lx) failed: %m%s",
                 lease->hot.start, lease->hot.end, (errno == ENOSPC) ?
                 " (the context's ranges are all in use)" : "");
        return (errno == ENOSPC) ? UCS_ERR_EXCEEDS_LIMIT : UCS_ERR_IO_ERROR;
    }
    it = kh_put(mrl_kmod_slot, &mon->slots, (uintptr_t)lease, &ret);
    if (ret < 0) {
        ioctl(mon->fd, MRLEASE_IOC_UNREGISTER, &reg.slot);
        return UCS_ERR_NO_MEMORY;
    }
    kh_val(&mon->slots, it) = reg.slot;
    __atomic_add_fetch(&mon->ranges, 1, __ATOMIC_RELAXED);
    return UCS_OK;
}

static void kmod_disarm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_kmod_t *mon = ucs_derived_of(super, ucs_mrlease_kmod_t);
    khiter_t it = kh_get(mrl_kmod_slot, &mon->slots, (uintptr_t)lease);
    uint32_t slot;

    if (it == kh_end(&mon->slots)) {
        return;
    }
    slot = kh_val(&mon->slots, it);
    kh_del(mrl_kmod_slot, &mon->slots, it);
    __atomic_sub_fetch(&mon->ranges, 1, __ATOMIC_RELAXED);
    if ((getpid() == mon->pid) &&
        (ioctl(mon->fd, MRLEASE_IOC_UNREGISTER, &slot) < 0)) {
        ucs_diag("mrlease: kmod: unregister slot %u failed: %m", slot);
    }
}

/*
 * The reader thread polls the fd only while the engine runs a dispatcher
 * thread (ucs_mrlease_engine_start_dispatcher(): libuct_ib_lease does), so
 * that a process that never calls progress (a pure-UCT program) still has
 * its leases restored as soon as the kernel tells. Without a dispatcher no
 * thread is woken on a change: the kernel raises the pending word itself and
 * the owner's next progress call pulls the events.
 */
static int kmod_fd(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_kmod_t *mon = ucs_derived_of(super, ucs_mrlease_kmod_t);

    if ((super->engine->dispatch_fd < 0) || mon->lost) {
        return -1;
    }
    return mon->fd;
}

static void kmod_drain(ucs_mrlease_monitor_t *super)
{
    /* the reader then wakes the dispatcher, the events being queued */
    kmod_pull(ucs_derived_of(super, ucs_mrlease_kmod_t));
}

/* The kernel's counters of the context, and ours; any thread, no lock. */
static void kmod_counters(ucs_mrlease_monitor_t *super,
                          ucs_mrlease_counters_t *c)
{
    ucs_mrlease_kmod_t *mon              = ucs_derived_of(super,
                                                          ucs_mrlease_kmod_t);
    const struct mrlease_status_hdr *hdr = mon->status;
    struct mrlease_hold_info hold;

    c->kmod_ranges    = __atomic_load_n(&mon->ranges, __ATOMIC_RELAXED);
    c->kmod_unwatched = __atomic_load_n(&mon->unwatched, __ATOMIC_RELAXED);
    if (hdr != NULL) {
        c->kmod_breaks    = __atomic_load_n(&hdr->events, __ATOMIC_RELAXED);
        c->kmod_ignored   = __atomic_load_n(&hdr->ignored, __ATOMIC_RELAXED);
        c->kmod_overflows = __atomic_load_n(&hdr->overflows, __ATOMIC_RELAXED);
        c->kmod_pmd_clears = __atomic_load_n(&hdr->pmd_clears,
                                             __ATOMIC_RELAXED);
    }
    if ((mon->hold_us != 0) && !mon->lost && (getpid() == mon->pid) &&
        (ioctl(mon->fd, MRLEASE_IOC_HOLD_INFO, &hold) == 0)) {
        c->kmod_holds         = hold.holds;
        c->kmod_hold_timeouts = hold.timeouts;
        c->kmod_hold_unsafe   = hold.unsafe;
        c->kmod_hold_killed   = hold.killed;
        c->kmod_hold_ns_total = hold.total_ns;
        c->kmod_hold_ns_max   = hold.max_ns;
    }
}

/* In a forked child: the context is the parent's; drop our copy of the fd.
 * The status area is not inherited (VM_DONTCOPY): forget it. */
static void kmod_forked(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_kmod_t *mon = ucs_derived_of(super, ucs_mrlease_kmod_t);

    mon->lost   = 1;
    mon->status = NULL;
    close(mon->fd);
    mon->fd = -1;
}

const ucs_mrlease_monitor_ops_t ucs_mrlease_kmod_ops = {
    .id         = UCS_MRLEASE_MONITOR_KMOD,
    .name       = "kmod",
    .open       = kmod_open,
    .close      = kmod_close,
    .arm        = kmod_arm,
    .disarm     = kmod_disarm,
    .fd         = kmod_fd,
    .drain      = kmod_drain,
    .forked     = kmod_forked,
    .counters   = kmod_counters,
    .dispatched = kmod_dispatched
};
