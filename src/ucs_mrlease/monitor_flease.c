/*
 * flease monitor: a write lease (F_SETLEASE F_WRLCK) on the file behind each
 * MAP_SHARED file-backed lease. Any other open of the file for writing, and
 * truncate(2) by path, from any process, first breaks our lease and waits
 * for us (up to /proc/sys/fs/lease-break-time): we release only when every
 * lease on the file has been restored, i.e. its registration dropped, so the
 * change lands on pages nobody has pinned. Then we take the lease back as
 * soon as the kernel grants it again (no other opener) and tell owners that
 * registrations made in between may predate the change (FILE_REARM).
 *
 * Not covered: changes through a file description that existed when the
 * lease was granted (there can be none but ours, as the kernel refuses the
 * lease otherwise), changes made while the lease is being re-armed (reported
 * by FILE_REARM afterwards), and MAP_PRIVATE file mappings.
 *
 * The kernel grants a write lease only on the very file description that is
 * mapped. With the owner's fd we lease a dup of it; without one, we "adopt"
 * the mapping: map the same file pages over the range from our own fd,
 * before anything is registered there, so ours becomes the only description.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <ucm/api/ucm.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>

typedef struct {
    uintptr_t start;
    uintptr_t end;
} flease_range_t;

typedef struct {
    ucs_list_link_t list;
    uint64_t        dev;
    uint64_t        ino;
    int             fd;            /* ours; the kernel lease is on it */
    int             leased;        /* the kernel lease is held */
    int             rearm;         /* released after a break: take it back */
    int             breaking;      /* a break is waiting for us */
    int             seen;          /* ...and a progress call has seen it */
    unsigned        waiting;       /* leases still to restore for the break */
    uint64_t        break_ns;
    ucs_list_link_t leases;
    flease_range_t  *adopted;      /* ranges re-mapped onto fd */
    unsigned        num_adopted;
} flease_file_t;

typedef struct {
    ucs_mrlease_monitor_t super;
    int                   sfd;
    int                   signo;
    pthread_mutex_t       lock;   /* files: engine side and reader side */
    ucs_list_link_t       files;
    int                   rearm_ms;
    uint64_t              stall_ns;
} ucs_mrlease_flease_t;

static ucs_status_t flease_open(ucs_mrlease_engine_t *engine,
                                ucs_mrlease_monitor_t **mon_p)
{
    ucs_mrlease_flease_t *mon;
    sigset_t set;

    mon = calloc(1, sizeof(*mon));
    if (mon == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    mon->super.engine = engine;
    mon->signo        = engine->config.flease_signal;
    mon->rearm_ms     = (int)(engine->config.flease_rearm_interval * 1e3);
    if (mon->rearm_ms < 1) {
        mon->rearm_ms = 1;
    }
    mon->stall_ns     = (uint64_t)(engine->config.flease_stall_timeout * 1e9);
    pthread_mutex_init(&mon->lock, NULL);
    ucs_list_head_init(&mon->files);

    /* Signals are directed at the reader thread, which blocks them all;
     * SIGIO comes instead when the real-time queue overflows. */
    sigemptyset(&set);
    sigaddset(&set, mon->signo);
    sigaddset(&set, SIGIO);
    mon->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (mon->sfd < 0) {
        ucs_warn("mrlease: flease: signalfd failed: %m");
        free(mon);
        return UCS_ERR_UNSUPPORTED;
    }
    *mon_p = &mon->super;
    return UCS_OK;
}

static void flease_file_free(ucs_mrlease_flease_t *mon, flease_file_t *file)
{
    if (file->leased) {
        fcntl(file->fd, F_SETLEASE, F_UNLCK);
    }
    close(file->fd);
    ucs_list_del(&file->list);
    free(file->adopted);
    free(file);
}

static void flease_close(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    flease_file_t *file, *tmp;

    ucs_list_for_each_safe(file, tmp, &mon->files, list) {
        flease_file_free(mon, file);
    }
    close(mon->sfd);
    pthread_mutex_destroy(&mon->lock);
    free(mon);
}

static flease_file_t *flease_find(ucs_mrlease_flease_t *mon, uint64_t dev,
                                  uint64_t ino, int fd)
{
    flease_file_t *file;

    ucs_list_for_each(file, &mon->files, list) {
        if ((fd >= 0) ? (file->fd == fd) : ((file->dev == dev) && (file->ino == ino))) {
            return file;
        }
    }
    return NULL;
}

static int flease_is_adopted(const flease_file_t *file, uintptr_t start,
                             uintptr_t end)
{
    unsigned i;

    for (i = 0; i < file->num_adopted; ++i) {
        if ((file->adopted[i].start <= start) && (end <= file->adopted[i].end)) {
            return 1;
        }
    }
    return 0;
}

/* Leases on the file are covered only while the kernel lease is ours and
 * no change is waiting: otherwise a registration made now could be of pages
 * another process is about to replace (mon->lock held). */
static void flease_cover(flease_file_t *file)
{
    int covered = file->leased && !file->breaking;
    ucs_mrlease_t *lease;

    ucs_list_for_each(lease, &file->leases, file_list) {
        ucs_mrlease_set_uncovered(lease, UCS_MRLEASE_UNCOVERED_FILE_OPEN, !covered);
    }
}

typedef struct {
    flease_file_t        *file;
    ucs_mrlease_engine_t *engine;
    ucs_status_t         status;
} flease_adopt_walk_t;

static ucs_status_t flease_add_adopted(flease_file_t *file, uintptr_t start,
                                       uintptr_t end)
{
    flease_range_t *ranges;

    ranges = realloc(file->adopted, (file->num_adopted + 1) * sizeof(*ranges));
    if (ranges == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    file->adopted = ranges;
    file->adopted[file->num_adopted].start = start;
    file->adopted[file->num_adopted].end   = end;
    ++file->num_adopted;
    return UCS_OK;
}

static int flease_adopt_visit(const ucs_mrlease_vma_t *vma, void *arg)
{
    flease_adopt_walk_t *w = arg;
    flease_file_t *file    = w->file;
    int prot;
    void *p;

    if ((vma->dev != file->dev) || (vma->ino != file->ino) ||
        flease_is_adopted(file, vma->start, vma->end)) {
        return 0;
    }
    if (!vma->shared) {
        /* Re-mapping would drop its copied-on-write pages. */
        ucs_diag("mrlease: flease: a private mapping [0x%lx, 0x%lx) of %s holds "
                 "the file open: no lease until it is unmapped", vma->start,
                 vma->end, vma->path);
        w->status = UCS_ERR_BUSY;
        return 0;
    }
    prot = (vma->readable ? PROT_READ : 0) | (vma->writable ? PROT_WRITE : 0) |
           (vma->exec ? PROT_EXEC : 0);
    /* ucm_orig_mmap: the pages stay the same, so this is no decoherence and
     * must not raise events in ours or UCX's hooks. */
    p = ucm_orig_mmap((void*)vma->start, vma->end - vma->start, prot,
                      MAP_SHARED | MAP_FIXED, file->fd, (off_t)vma->offset);
    if (p == MAP_FAILED) {
        ucs_diag("mrlease: flease: cannot adopt [0x%lx, 0x%lx) of %s: %m",
                 vma->start, vma->end, vma->path);
        w->status = UCS_ERR_IO_ERROR;
        return 0;
    }
    if (flease_add_adopted(file, vma->start, vma->end) != UCS_OK) {
        w->status = UCS_ERR_NO_MEMORY;
        return 1;
    }
    ++w->engine->counters.file_leases_adopted;
    return 0;
}

/* The kernel grants a write lease only if ours is the file's sole open
 * description, and every mapping holds the description it was made from.
 * So re-map every shared mapping of the file in this process from our fd:
 * same pages, same offsets, same protection. Done before the owner
 * registers the range, so no registration can see a replaced vma. */
static ucs_status_t flease_adopt(ucs_mrlease_flease_t *mon, flease_file_t *file,
                                 ucs_mrlease_t *lease)
{
    flease_adopt_walk_t w = {file, mon->super.engine, UCS_OK};

    if (flease_is_adopted(file, lease->hot.start, lease->hot.end)) {
        return UCS_OK;
    }
    if (ucs_mrlease_maps_walk(flease_adopt_visit, &w) < 0) {
        return UCS_ERR_IO_ERROR;
    }
    return w.status;
}

/* Take the kernel lease on file->fd; 0, or the errno. */
static int flease_take(ucs_mrlease_flease_t *mon, flease_file_t *file)
{
    struct f_owner_ex owner = {F_OWNER_TID, mon->super.engine->reader_tid};

    if ((fcntl(file->fd, F_SETSIG, mon->signo) < 0) ||
        (fcntl(file->fd, F_SETOWN_EX, &owner) < 0) ||
        (fcntl(file->fd, F_SETLEASE, F_WRLCK) < 0)) {
        return errno;
    }
    file->leased = 1;
    return 0;
}

static ucs_status_t flease_arm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    ucs_mrlease_backing_t backing;
    uintptr_t vstart, vend;
    char path[4096], name[128];
    flease_file_t *file;
    ucs_status_t status;
    int fd, err;

    /* FS-DAX: the kernel refuses long-term pins of its pages, so nothing
     * registered can go stale there (or the registration is on-demand paging,
     * coherent by itself): adopting and leasing would only hold changers. */
    if (lease->backing.dax) {
        return UCS_ERR_UNSUPPORTED;
    }
    if (!lease->backing.shared || !(lease->events & UCS_MRLEASE_EV_FILE_BREAK) ||
        ((lease->backing.type != UCS_MRLEASE_BACKING_FILE) &&
         (lease->backing.type != UCS_MRLEASE_BACKING_SHMEM))) {
        return UCS_ERR_UNSUPPORTED;
    }
    status = ucs_mrlease_backing_query(lease->hot.start, lease->hot.end, &backing,
                                       path, sizeof(path), &vstart, &vend);
    if ((status != UCS_OK) || (path[0] != '/') || !strncmp(path, "/SYSV", 5) ||
        !strncmp(path, "/dev/zero", 9)) {
        return UCS_ERR_UNSUPPORTED; /* anonymous shared memory: nobody truncates it */
    }

    pthread_mutex_lock(&mon->lock);
    file = flease_find(mon, backing.dev, backing.ino, -1);
    if (file == NULL) {
        if (lease->owner_fd >= 0) {
            fd = fcntl(lease->owner_fd, F_DUPFD_CLOEXEC, 0);
        } else if (super->engine->config.flease_adopt) {
            /* map_files opens the mapped file even if it was unlinked. Read
             * and write if we may, so adopted mappings keep VM_MAYWRITE. */
            snprintf(name, sizeof(name), "/proc/self/map_files/%lx-%lx", vstart, vend);
            fd = open(name, O_RDWR | O_CLOEXEC);
            if (fd < 0) {
                fd = open(path, O_RDWR | O_CLOEXEC);
            }
            if ((fd < 0) && !lease->backing.writable) {
                fd = open(path, O_RDONLY | O_CLOEXEC);
            }
        } else {
            ucs_diag("mrlease: flease: %s: no fd given and UCX_MRLEASE_FLEASE_ADOPT=n",
                     path);
            pthread_mutex_unlock(&mon->lock);
            return UCS_ERR_UNSUPPORTED;
        }
        if (fd < 0) {
            ucs_warn("mrlease: flease: cannot open %s: %m", path);
            pthread_mutex_unlock(&mon->lock);
            return UCS_ERR_IO_ERROR;
        }
        file = calloc(1, sizeof(*file));
        if (file == NULL) {
            close(fd);
            pthread_mutex_unlock(&mon->lock);
            return UCS_ERR_NO_MEMORY;
        }
        file->fd  = fd;
        file->dev = backing.dev;
        file->ino = backing.ino;
        ucs_list_head_init(&file->leases);
        ucs_list_add_tail(&mon->files, &file->list);
    }

    if ((lease->owner_fd < 0) && super->engine->config.flease_adopt) {
        status = flease_adopt(mon, file, lease);
        if ((status != UCS_OK) && (status != UCS_ERR_BUSY)) {
            goto err_drop;
        }
    }

    if (!file->leased && !file->rearm && !file->breaking) {
        err = flease_take(mon, file);
        if (err == EAGAIN) {
            /* Someone else has it open: lease it when they let go, and tell
             * the owners then (FILE_REARM). */
            ucs_diag("mrlease: flease: %s is open elsewhere%s: not covered "
                     "until the kernel grants the lease", path,
                     (lease->owner_fd < 0) ? "" : " (or the fd given is not "
                     "the mapped one)");
            file->rearm = 1;
            ucs_mrlease_reader_wake(super->engine);
        } else if (err != 0) {
            ucs_warn("mrlease: flease: F_SETLEASE on %s failed: %s%s", path,
                     strerror(err), (err == EACCES) ? " (only the file's owner "
                     "or CAP_LEASE may lease it)" : "");
            status = UCS_ERR_IO_ERROR;
            goto err_drop;
        }
    }

    lease->file = file;
    ucs_list_add_tail(&file->leases, &lease->file_list);
    flease_cover(file);
    pthread_mutex_unlock(&mon->lock);
    return UCS_OK;

err_drop:
    if (ucs_list_is_empty(&file->leases)) {
        flease_file_free(mon, file);
    }
    pthread_mutex_unlock(&mon->lock);
    return status;
}

/* A break is over for this file once every lease has been restored: let
 * the changer go (locked). */
/* Let the changer go and start taking the lease back (locked). */
static void flease_unlock(ucs_mrlease_flease_t *mon, flease_file_t *file)
{
    ucs_mrlease_engine_t *engine = mon->super.engine;

    /* F_GETLEASE cannot tell: during a break it already reports the target
     * type. Unlocking a lease that the kernel has removed fails (EAGAIN). */
    if (fcntl(file->fd, F_SETLEASE, F_UNLCK) < 0) {
        ucs_warn("mrlease: flease: the kernel broke a file lease by force after "
                 "/proc/sys/fs/lease-break-time; the change was not held until "
                 "the registrations were restored");
        ++engine->counters.file_leases_forced;
    }
    ucs_mrlease_count_held(engine, ucs_mrlease_now_ns() - file->break_ns);
    file->leased   = 0;
    file->breaking = 0;
    file->seen     = 0;
    file->rearm    = 1;
    flease_cover(file);
    ucs_mrlease_reader_wake(engine);
}

/* A break is over for this file once every lease has been restored. */
static void flease_release_break(ucs_mrlease_flease_t *mon, flease_file_t *file)
{
    if (file->breaking && (file->waiting == 0)) {
        flease_unlock(mon, file);
    }
}

static void flease_unwait(ucs_mrlease_flease_t *mon, ucs_mrlease_t *lease)
{
    flease_file_t *file = lease->file;

    if (lease->file_waiting) {
        lease->file_waiting = 0;
        --file->waiting;
        flease_release_break(mon, file);
    }
}

static void flease_disarm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    flease_file_t *file       = lease->file;

    pthread_mutex_lock(&mon->lock);
    flease_unwait(mon, lease);
    ucs_list_del(&lease->file_list);
    lease->file = NULL;
    if (ucs_list_is_empty(&file->leases)) {
        flease_file_free(mon, file);
    }
    pthread_mutex_unlock(&mon->lock);
}

static void flease_restored(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);

    /* A break still queued for this lease has not been delivered yet. */
    if ((lease->file == NULL) || (lease->acc.kinds & UCS_MRLEASE_EV_FILE_BREAK)) {
        return;
    }
    pthread_mutex_lock(&mon->lock);
    flease_unwait(mon, lease);
    pthread_mutex_unlock(&mon->lock);
}

static int flease_resolve(ucs_mrlease_monitor_t *super, const ucs_mrlease_qentry_t *e,
                          ucs_mrlease_lease_visit_t visit, void *arg)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    flease_file_t *file;
    ucs_mrlease_t *lease;

    pthread_mutex_lock(&mon->lock);
    file = flease_find(mon, 0, 0, e->key);
    if ((file != NULL) && (e->kinds & UCS_MRLEASE_EV_FILE_BREAK) && !file->breaking) {
        file = NULL; /* released already (stalled): FILE_REARM will follow */
    }
    if (file != NULL) {
        file->seen = 1;
        ucs_list_for_each(lease, &file->leases, file_list) {
            if ((e->kinds & UCS_MRLEASE_EV_FILE_BREAK) && !lease->file_waiting &&
                (lease->state != UCS_MRLEASE_STATE_DEAD)) {
                lease->file_waiting = 1;
                ++file->waiting;
            }
            visit(lease, arg);
        }
        flease_release_break(mon, file); /* nobody to wait for */
    }
    pthread_mutex_unlock(&mon->lock);
    return 1;
}

static int flease_fd(ucs_mrlease_monitor_t *super)
{
    return ucs_derived_of(super, ucs_mrlease_flease_t)->sfd;
}

static void flease_push(ucs_mrlease_flease_t *mon, flease_file_t *file,
                        unsigned kinds)
{
    ucs_mrlease_engine_t *engine = mon->super.engine;
    ucs_mrlease_qentry_t e = {
        .kinds    = kinds,
        .monitor  = UCS_MRLEASE_MONITOR_FLEASE,
        .key      = file->fd,
        .stamp_ns = ucs_mrlease_now_ns()
    };

    ucs_mrlease_queue_push(&engine->queue, &e, &engine->hot.pending);
}

static void flease_break(ucs_mrlease_flease_t *mon, flease_file_t *file)
{
    if (!file->leased || file->breaking) {
        return;
    }
    file->breaking = 1;
    file->seen     = 0;
    file->break_ns = ucs_mrlease_now_ns();
    flease_cover(file);
    flease_push(mon, file, UCS_MRLEASE_EV_FILE_BREAK);
    ucs_mrlease_reader_wake(mon->super.engine); /* start the stall clock */
}

static void flease_drain(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    struct signalfd_siginfo si[16];
    flease_file_t *file;
    ssize_t n;
    int i;

    pthread_mutex_lock(&mon->lock);
    while ((n = read(mon->sfd, si, sizeof(si))) > 0) {
        for (i = 0; i < n / (ssize_t)sizeof(si[0]); ++i) {
            if ((int)si[i].ssi_signo == mon->signo) {
                file = flease_find(mon, 0, 0, si[i].ssi_fd);
                if (file != NULL) {
                    flease_break(mon, file);
                }
                continue;
            }
            /* SIGIO: the real-time queue overflowed; ask each file. */
            ucs_list_for_each(file, &mon->files, list) {
                if (file->leased && (fcntl(file->fd, F_GETLEASE) != F_WRLCK)) {
                    flease_break(mon, file);
                }
            }
        }
    }
    pthread_mutex_unlock(&mon->lock);
}

/* Reader thread: let a change go if no progress call is handling it, and
 * take leases back once the other opener is gone. */
static int flease_timer(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    uint64_t now              = ucs_mrlease_now_ns();
    flease_file_t *file;
    int next = -1, err, left;

    pthread_mutex_lock(&mon->lock);
    ucs_list_for_each(file, &mon->files, list) {
        if (file->breaking && !file->seen) {
            if (now - file->break_ns >= mon->stall_ns) {
                ucs_warn("mrlease: flease: no progress call handled a file lease "
                         "break within UCX_MRLEASE_FLEASE_STALL_TIMEOUT (is the "
                         "progress thread itself opening the file?): letting the "
                         "change go; registrations on it are re-validated when "
                         "the lease is back");
                __atomic_add_fetch(&super->engine->counters.file_leases_stalled,
                                   1, __ATOMIC_RELAXED);
                flease_unlock(mon, file);
            } else {
                left = (int)((mon->stall_ns - (now - file->break_ns)) / 1000000) + 1;
                next = ((next < 0) || (left < next)) ? left : next;
                continue;
            }
        }
        if (!file->rearm) {
            continue;
        }
        err = flease_take(mon, file);
        if (err == 0) {
            file->rearm = 0;
            flease_cover(file);
            flease_push(mon, file, UCS_MRLEASE_EV_FILE_REARM);
        } else if (err == EAGAIN) {
            next = ((next < 0) || (mon->rearm_ms < next)) ? mon->rearm_ms : next;
        } else {
            ucs_warn("mrlease: flease: cannot take a file lease back: %s; the "
                     "file is no longer watched", strerror(err));
            file->rearm = 0;
        }
    }
    pthread_mutex_unlock(&mon->lock);
    return next;
}

const ucs_mrlease_monitor_ops_t ucs_mrlease_flease_ops = {
    .id       = UCS_MRLEASE_MONITOR_FLEASE,
    .name     = "flease",
    .open     = flease_open,
    .close    = flease_close,
    .arm      = flease_arm,
    .disarm   = flease_disarm,
    .resolve  = flease_resolve,
    .restored = flease_restored,
    .fd       = flease_fd,
    .drain    = flease_drain,
    .timer    = flease_timer
};
