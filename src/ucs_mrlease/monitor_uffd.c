/*
 * uffd monitor: userfaultfd non-cooperative events (UNMAP, REMAP, REMOVE,
 * FORK). The kernel reports these for any change to a registered range,
 * whether it came through libc, a direct syscall or a static binary.
 *
 * Ranges are registered in write-protect mode and never write-protected, so
 * no fault is ever raised for us to service: we only want the events. The
 * kernel holds the changer until its event is read; the reader thread reads
 * it at once, after raising the pending word, so by the time the changer
 * returns any registration lookup it makes sees the change. UNMAP is
 * reported after the pages are gone; REMOVE (madvise) before the zap, and
 * the changer is let go when it is read, so a re-registration in another
 * thread in between could pin the pages about to go. No event follows the
 * zap: the remote-key keeper waits for proof that it is done before it
 * re-binds a window (uct_ib_lease/zap_witness.h; mrlease.ko reports after
 * the zap). What the pending word ensures is that nothing uses the old
 * registration once the change is visible.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>

/* Newer than Debian 12's headers: probed at run time. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define UFFD_EVENTS_WANTED \
    (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | \
     UFFD_FEATURE_EVENT_REMOVE)

typedef struct {
    ucs_mrlease_monitor_t super;
    int                   fd;
    uint64_t              features;
    int                   user_mode_only;
} ucs_mrlease_uffd_t;

static int uffd_new(int *user_mode_only)
{
    int fd, dev;

    *user_mode_only = 0;
    fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if ((fd < 0) && (errno == EPERM)) {
        /* vm.unprivileged_userfaultfd=0: allowed for user-mode faults only,
         * which is all we need (we never service kernel faults). */
        fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
        *user_mode_only = (fd >= 0);
    }
    if ((fd < 0) && (errno != ENOSYS)) {
        dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            close(dev);
        }
    }
    return fd;
}

static int uffd_api(int fd, uint64_t features, struct uffdio_api *api)
{
    memset(api, 0, sizeof(*api));
    api->api      = UFFD_API;
    api->features = features;
    return ioctl(fd, UFFDIO_API, api);
}

static ucs_status_t uffd_open(ucs_mrlease_engine_t *engine,
                              ucs_mrlease_monitor_t **mon_p)
{
    ucs_mrlease_uffd_t *mon;
    struct uffdio_api api;
    uint64_t avail, want;
    int fd, umo;

    /* UFFDIO_API may be called once per fd: learn the features on a probe. */
    fd = uffd_new(&umo);
    if (fd < 0) {
        ucs_warn("mrlease: uffd: userfaultfd unavailable: %m (%s)",
                 (errno == ENOSYS) ? "kernel without CONFIG_USERFAULTFD" :
                 "needs root, vm.unprivileged_userfaultfd=1, or a kernel with "
                 "UFFD_USER_MODE_ONLY (5.11+)");
        return UCS_ERR_UNSUPPORTED;
    }
    if (uffd_api(fd, 0, &api) < 0) {
        ucs_warn("mrlease: uffd: UFFDIO_API failed: %m");
        close(fd);
        return UCS_ERR_UNSUPPORTED;
    }
    close(fd);
    avail = api.features;

    if ((avail & UFFD_EVENTS_WANTED) != UFFD_EVENTS_WANTED) {
        ucs_warn("mrlease: uffd: kernel lacks non-cooperative events "
                 "(features 0x%llx)", (unsigned long long)avail);
        return UCS_ERR_UNSUPPORTED;
    }
    if (!(avail & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        ucs_warn("mrlease: uffd: kernel lacks write-protect mode, needed to "
                 "watch ranges without servicing faults");
        return UCS_ERR_UNSUPPORTED;
    }

    want = UFFD_EVENTS_WANTED |
           (avail & (UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_ASYNC));
    if (engine->config.uffd_fork && (avail & UFFD_FEATURE_EVENT_FORK)) {
        want |= UFFD_FEATURE_EVENT_FORK;
    }

    mon = calloc(1, sizeof(*mon));
    if (mon == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    mon->super.engine = engine;

    for (;;) {
        mon->fd = uffd_new(&mon->user_mode_only);
        if (mon->fd < 0) {
            ucs_warn("mrlease: uffd: userfaultfd failed: %m");
            goto err;
        }
        if (uffd_api(mon->fd, want, &api) == 0) {
            break;
        }
        close(mon->fd);
        if ((errno == EPERM) && (want & UFFD_FEATURE_EVENT_FORK)) {
            ucs_warn("mrlease: uffd: fork events need CAP_SYS_PTRACE: fork is "
                     "reported only by the ucm monitor");
            want &= ~UFFD_FEATURE_EVENT_FORK;
            continue;
        }
        ucs_warn("mrlease: uffd: UFFDIO_API(0x%llx) failed: %m",
                 (unsigned long long)want);
        goto err;
    }

    mon->features = api.features;
    ucs_debug("mrlease: uffd: fd %d features 0x%llx%s", mon->fd,
              (unsigned long long)mon->features,
              mon->user_mode_only ? " (user-mode only)" : "");
    *mon_p = &mon->super;
    return UCS_OK;

err:
    free(mon);
    return UCS_ERR_UNSUPPORTED;
}

static void uffd_close(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_uffd_t *mon = ucs_derived_of(super, ucs_mrlease_uffd_t);

    close(mon->fd);
    free(mon);
}

static ucs_status_t uffd_arm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_uffd_t *mon = ucs_derived_of(super, ucs_mrlease_uffd_t);
    struct uffdio_register reg;

    switch (lease->backing_type) {
    case UCS_MRLEASE_BACKING_ANON:
        break;
    case UCS_MRLEASE_BACKING_SHMEM:
        if (!(mon->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) {
            return UCS_ERR_UNSUPPORTED;
        }
        break;
    default:
        /* Regular files cannot be registered: flease watches those. */
        return UCS_ERR_UNSUPPORTED;
    }

    memset(&reg, 0, sizeof(reg));
    reg.range.start = lease->hot.start;
    reg.range.len   = lease->hot.end - lease->hot.start;
    reg.mode        = UFFDIO_REGISTER_MODE_WP;
    if (ioctl(mon->fd, UFFDIO_REGISTER, &reg) < 0) {
        ucs_diag("mrlease: uffd: register [0x%lx, 0x%lx) failed: %m%s",
                 lease->hot.start, lease->hot.end,
                 (errno == EBUSY) ? " (watched by another userfaultfd)" : "");
        return UCS_ERR_IO_ERROR;
    }
    return UCS_OK;
}

typedef struct {
    uintptr_t                 next; /* start of the part not yet unregistered */
    const ucs_mrlease_t       *self;
    const ucs_mrlease_uffd_t  *mon;
} uffd_gap_walk_t;

static void uffd_unregister(const ucs_mrlease_uffd_t *mon, uintptr_t start,
                            uintptr_t end)
{
    struct uffdio_range range = {.start = start, .len = end - start};

    if ((end > start) && (ioctl(mon->fd, UFFDIO_UNREGISTER, &range) < 0)) {
        /* ENOMEM: already unmapped, and the kernel forgot it with the vma */
        ucs_trace("mrlease: uffd: unregister [0x%lx, 0x%lx): %m", start, end);
    }
}

static int uffd_gap_visit(ucs_mrlease_tree_node_t *node, void *arg)
{
    uffd_gap_walk_t *walk = arg;
    ucs_mrlease_t *other  = ucs_container_of(node, ucs_mrlease_t, node);

    if ((other == walk->self) ||
        !(other->monitored & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD))) {
        return 0;
    }
    /* Nodes come in order of start: unregister the gap before this one. */
    if (other->hot.start > walk->next) {
        uffd_unregister(walk->mon, walk->next, other->hot.start);
    }
    if (other->hot.end > walk->next) {
        walk->next = other->hot.end;
    }
    return 0;
}

static void uffd_disarm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_uffd_t *mon = ucs_derived_of(super, ucs_mrlease_uffd_t);
    uffd_gap_walk_t walk    = {lease->hot.start, lease, mon};

    /* Other leases may share these pages: keep their part registered. */
    ucs_mrlease_tree_overlaps(&super->engine->tree, lease->hot.start,
                              lease->hot.end, uffd_gap_visit, &walk);
    if (walk.next < lease->hot.end) {
        uffd_unregister(mon, walk.next, lease->hot.end);
    }
}

static int uffd_fd(ucs_mrlease_monitor_t *super)
{
    return ucs_derived_of(super, ucs_mrlease_uffd_t)->fd;
}

static int uffd_msg_to_entry(ucs_mrlease_uffd_t *mon, const struct uffd_msg *msg,
                             ucs_mrlease_qentry_t *e)
{
    struct uffdio_writeprotect wp;

    switch (msg->event) {
    case UFFD_EVENT_UNMAP:
        e->start = msg->arg.remove.start;
        e->end   = msg->arg.remove.end;
        e->kinds = UCS_MRLEASE_EV_UNMAP;
        return 1;
    case UFFD_EVENT_REMOVE:
        e->start = msg->arg.remove.start;
        e->end   = msg->arg.remove.end;
        e->kinds = UCS_MRLEASE_EV_REMOVE;
        return 1;
    case UFFD_EVENT_REMAP:
        e->start     = msg->arg.remap.from;
        e->end       = msg->arg.remap.from + msg->arg.remap.len;
        e->new_start = msg->arg.remap.to;
        e->kinds     = UCS_MRLEASE_EV_REMAP;
        return 1;
    case UFFD_EVENT_FORK:
        /* The child's context: we do not watch the child. Closing it drops
         * the child's registrations. */
        close((int)msg->arg.fork.ufd);
        e->start = 0;
        e->end   = UINTPTR_MAX;
        e->kinds = UCS_MRLEASE_EV_FORK;
        return 1;
    case UFFD_EVENT_PAGEFAULT:
        /* Never expected (nothing is write-protected); never leave a thread
         * stuck in a fault either. */
        memset(&wp, 0, sizeof(wp));
        wp.range.start = msg->arg.pagefault.address & ~(uintptr_t)(getpagesize() - 1);
        wp.range.len   = getpagesize();
        wp.mode        = 0;
        if (ioctl(mon->fd, UFFDIO_WRITEPROTECT, &wp) < 0) {
            ucs_error("mrlease: uffd: unexpected fault at 0x%llx could not be "
                      "resolved: %m", msg->arg.pagefault.address);
        }
        return 0;
    default:
        return 0;
    }
}

static void uffd_drain(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_uffd_t *mon      = ucs_derived_of(super, ucs_mrlease_uffd_t);
    ucs_mrlease_engine_t *engine = super->engine;
    struct uffd_msg msgs[64];
    ucs_mrlease_qentry_t e;
    uint64_t t0 = ucs_mrlease_now_ns();
    ssize_t n;
    int i, got = 0;

    /* Raise pending before read(): read() is what releases the changer. The
     * queue lock is held until the entries are in, so a dispatch racing with
     * the released changer finds them. */
    ucs_mrlease_queue_lock(&engine->queue);
    ucs_mrlease_set_pending(engine);
    for (;;) {
        n = read(mon->fd, msgs, sizeof(msgs));
        if (n <= 0) {
            break;
        }
        for (i = 0; i < n / (ssize_t)sizeof(msgs[0]); ++i) {
            memset(&e, 0, sizeof(e));
            e.monitor  = UCS_MRLEASE_MONITOR_UFFD;
            e.key      = -1;
            e.stamp_ns = t0;
            if (uffd_msg_to_entry(mon, &msgs[i], &e)) {
                ucs_mrlease_queue_push_locked(&engine->queue, &e,
                                              &engine->hot.pending);
                ++got;
            }
        }
    }
    ucs_mrlease_queue_unlock(&engine->queue);
    if (got > 0) {
        ucs_mrlease_count_held(engine, ucs_mrlease_now_ns() - t0);
    }
}

const ucs_mrlease_monitor_ops_t ucs_mrlease_uffd_ops = {
    .id     = UCS_MRLEASE_MONITOR_UFFD,
    .name   = "uffd",
    .open   = uffd_open,
    .close  = uffd_close,
    .arm    = uffd_arm,
    .disarm = uffd_disarm,
    .fd     = uffd_fd,
    .drain  = uffd_drain
};
