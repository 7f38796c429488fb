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
 *
 * Signals: the application's stay the application's (flease_signals.c).
 */
#define _GNU_SOURCE
#include "monitor_flease.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

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
    mon->status_fd    = -1;
    pthread_mutex_init(&mon->lock, NULL);
    ucs_list_head_init(&mon->files);

    /* Without it we cannot tell our signals from the application's. */
    if (access(FLEASE_STATUS, R_OK) != 0) {
        ucs_warn("mrlease: flease: cannot read " FLEASE_STATUS ": %m; file "
                 "leases are off (their signals could not be told from the "
                 "application's)");
        pthread_mutex_destroy(&mon->lock);
        free(mon);
        return UCS_ERR_UNSUPPORTED;
    }

    /* Signals are directed at the reader thread, which blocks them all;
     * SIGIO comes instead when the real-time queue overflows. The signalfd
     * only tells the reader to look: see flease_drain(). */
    sigemptyset(&set);
    sigaddset(&set, mon->signo);
    sigaddset(&set, SIGIO);
    mon->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (mon->sfd < 0) {
        ucs_warn("mrlease: flease: signalfd failed: %m");
        pthread_mutex_destroy(&mon->lock);
        free(mon);
        return UCS_ERR_UNSUPPORTED;
    }
    mon->sfd_bits = FLEASE_BIT(mon->signo) | FLEASE_BIT(SIGIO);
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
    if (mon->status_fd >= 0) {
        close(mon->status_fd);
    }
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

/* Leases on the file are covered only while the kernel lease is ours and
 * no change is waiting: otherwise a registration made now could be of pages
 * another process is about to replace (mon->lock held). */
static void flease_cover(flease_file_t *file)
{
    int covered = file->leased && !file->breaking;
    ucs_mrlease_ext_t *ext;

    ucs_list_for_each(ext, &file->leases, file_list) {
        ucs_mrlease_set_uncovered(ext->lease, UCS_MRLEASE_UNCOVERED_FILE_OPEN,
                                  !covered);
    }
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
    struct stat st;
    int fd, err;

    /* FS-DAX: the kernel refuses long-term pins of its pages, so nothing
     * registered can go stale there (or the registration is on-demand paging,
     * coherent by itself): adopting and leasing would only hold changers. */
    if (lease->backing_bits & UCS_MRLEASE_BACKING_DAX) {
        return UCS_ERR_UNSUPPORTED;
    }
    if (!(lease->backing_bits & UCS_MRLEASE_BACKING_SHARED) ||
        !(lease->events & UCS_MRLEASE_EV_FILE_BREAK) ||
        ((lease->backing_type != UCS_MRLEASE_BACKING_FILE) &&
         (lease->backing_type != UCS_MRLEASE_BACKING_SHMEM))) {
        return UCS_ERR_UNSUPPORTED;
    }
    if (lease->ext == NULL) {
        return UCS_ERR_NO_MEMORY; /* the engine had none for the file fields */
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
        if (lease->ext->owner_fd >= 0) {
            fd = fcntl(lease->ext->owner_fd, F_DUPFD_CLOEXEC, 0);
        } else if (super->engine->config.flease_adopt) {
            /* map_files opens the mapped file even if it was unlinked. Read
             * and write if we may, so adopted mappings keep VM_MAYWRITE. */
            snprintf(name, sizeof(name), "/proc/self/map_files/%lx-%lx", vstart, vend);
            fd = open(name, O_RDWR | O_CLOEXEC);
            if (fd < 0) {
                fd = open(path, O_RDWR | O_CLOEXEC);
            }
            if ((fd < 0) && !(lease->backing_bits & UCS_MRLEASE_BACKING_WRITABLE)) {
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
        /* The kernel leases regular files only. Adopting anything else
         * would remove it: a device's mmap from a fresh open of its node
         * (a verbs queue's, from a uverbs descriptor without the context)
         * fails after MAP_FIXED has unmapped what was there. */
        if ((fstat(fd, &st) != 0) || !S_ISREG(st.st_mode)) {
            ucs_diag("mrlease: flease: %s is not a regular file: no file lease",
                     path);
            close(fd);
            pthread_mutex_unlock(&mon->lock);
            return UCS_ERR_UNSUPPORTED;
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

    if ((lease->ext->owner_fd < 0) && super->engine->config.flease_adopt) {
        status = ucs_mrlease_flease_adopt(mon, file, lease);
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
                     (lease->ext->owner_fd < 0) ? "" : " (or the fd given is not "
                     "the mapped one)");
            file->rearm = 1;
            ucs_mrlease_reader_wake(super->engine);
        } else if ((err == 0) && mon->parked) {
            /* the reader backs off without ticks: now it must look again */
            ucs_mrlease_reader_wake(super->engine);
        } else if (err != 0) {
            ucs_warn("mrlease: flease: F_SETLEASE on %s failed: %s%s", path,
                     strerror(err), (err == EACCES) ? " (only the file's owner "
                     "or CAP_LEASE may lease it)" : "");
            status = UCS_ERR_IO_ERROR;
            goto err_drop;
        }
    }

    lease->ext->file = file;
    ucs_list_add_tail(&file->leases, &lease->ext->file_list);
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
    flease_file_t *file = lease->ext->file;

    if (lease->ext->file_waiting) {
        lease->ext->file_waiting = 0;
        --file->waiting;
        flease_release_break(mon, file);
    }
}

static void flease_disarm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    flease_file_t *file       = lease->ext->file;

    pthread_mutex_lock(&mon->lock);
    flease_unwait(mon, lease);
    ucs_list_del(&lease->ext->file_list);
    lease->ext->file = NULL;
    if (ucs_list_is_empty(&file->leases)) {
        flease_file_free(mon, file);
    }
    pthread_mutex_unlock(&mon->lock);
}

static void flease_restored(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);

    /* A break still queued for this lease has not been delivered yet. */
    if ((lease->ext == NULL) || (lease->ext->file == NULL) ||
        (lease->acc_kinds & UCS_MRLEASE_EV_FILE_BREAK)) {
        return;
    }
    pthread_mutex_lock(&mon->lock);
    flease_unwait(mon, lease);
    pthread_mutex_unlock(&mon->lock);
}

/* Deliver an event to every lease on the file; a break waits for each of
 * them to be restored (mon->lock held). */
static void flease_resolve_file(ucs_mrlease_flease_t *mon, flease_file_t *file,
                                unsigned kinds, ucs_mrlease_lease_visit_t visit,
                                void *arg)
{
    ucs_mrlease_ext_t *ext;

    file->seen = 1;
    ucs_list_for_each(ext, &file->leases, file_list) {
        if ((kinds & UCS_MRLEASE_EV_FILE_BREAK) && file->breaking &&
            !ext->file_waiting && (ext->lease->state != UCS_MRLEASE_STATE_DEAD)) {
            ext->file_waiting = 1;
            ++file->waiting;
        }
        visit(ext->lease, arg);
    }
    flease_release_break(mon, file); /* nobody to wait for */
}

static int flease_resolve(ucs_mrlease_monitor_t *super, const ucs_mrlease_qentry_t *e,
                          ucs_mrlease_lease_visit_t visit, void *arg)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    flease_file_t *file;

    pthread_mutex_lock(&mon->lock);
    if (e->key < 0) {
        /* The queue overflowed: which file broke is lost, so every file is
         * told, and a break in progress waits for its leases as usual. */
        ucs_list_for_each(file, &mon->files, list) {
            flease_resolve_file(mon, file, e->kinds |
                                (file->breaking ? UCS_MRLEASE_EV_FILE_BREAK : 0),
                                visit, arg);
        }
    } else {
        file = flease_find(mon, 0, 0, e->key);
        if ((file != NULL) && (e->kinds & UCS_MRLEASE_EV_FILE_BREAK) &&
            !file->breaking) {
            file = NULL; /* released already (stalled): FILE_REARM will follow */
        }
        if (file != NULL) {
            flease_resolve_file(mon, file, e->kinds, visit, arg);
        }
    }
    pthread_mutex_unlock(&mon->lock);
    return 1;
}

/* Reader thread: the signalfd, unless every signal is left out of it for
 * now (see flease_drain). */
static int flease_fd(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);

    return (mon->sfd_bits != 0) ? mon->sfd : -1;
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

/* F_GETLEASE is the truth: a held file whose lease no longer reads F_WRLCK
 * is being broken (or was removed by force), whatever signal told us to
 * look (locked). */
static void flease_check(ucs_mrlease_flease_t *mon)
{
    flease_file_t *file;

    ucs_list_for_each(file, &mon->files, list) {
        if (file->leased && !file->breaking &&
            (fcntl(file->fd, F_GETLEASE) != F_WRLCK)) {
            flease_break(mon, file);
        }
    }
}

/* Reader thread, the signalfd is readable: a signal of ours, or the
 * application's own on its way to one of its threads. Never read the
 * application's. */
static void flease_drain(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    uint64_t shared = 0;
    int n;

    pthread_mutex_lock(&mon->lock);
    flease_check(mon); /* first: the owner hears of a break at once */
    pthread_mutex_unlock(&mon->lock);
    n = ucs_mrlease_flease_read_own(mon, &shared);
    if (n > 0) {
        /* The kernel marks a lease breaking before it signals: a signal
         * read now may be of a break the check above came too early for. */
        pthread_mutex_lock(&mon->lock);
        flease_check(mon);
        pthread_mutex_unlock(&mon->lock);
    } else if ((n < 0) || (shared != 0)) {
        ucs_mrlease_flease_backoff(mon, (n < 0) ? mon->sfd_bits : shared);
    }
    /* else it was the application's, and one of its threads took it since */
}

/* Reader thread: let a change go if no progress call is handling it, take
 * leases back once the other opener is gone, and while a signal is left out
 * of the signalfd (back-off), ask the files. */
static int flease_timer(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_flease_t *mon = ucs_derived_of(super, ucs_mrlease_flease_t);
    uint64_t now              = ucs_mrlease_now_ns();
    flease_file_t *file;
    int next = -1, err, left, leased = 0;
    int check = (mon->backoff_ms > 0);

    if (check && (now >= mon->backoff_end_ns)) {
        ucs_mrlease_flease_backoff_over(mon); /* may read signals of ours: check below */
    }

    pthread_mutex_lock(&mon->lock);
    if (check) {
        flease_check(mon);
        now = ucs_mrlease_now_ns(); /* after the breaks it may have stamped */
    }
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
    if (mon->backoff_ms > 0) {
        ucs_list_for_each(file, &mon->files, list) {
            leased |= file->leased;
        }
        /* Nothing leased: no break to miss, so no tick until flease_arm()
         * takes a lease and wakes us (it reads parked under the lock). */
        mon->parked = !leased;
        if (leased) {
            left = (mon->backoff_end_ns > now) ?
                   (int)((mon->backoff_end_ns - now + 999999) / 1000000) : 0;
            next = ((next < 0) || (left < next)) ? left : next;
        }
    } else {
        mon->parked = 0;
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
