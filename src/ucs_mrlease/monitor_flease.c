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
 * Signals: the application's stay the application's. The kernel's only
 * notice of a break is a signal to the file's owner (fasync). We set the
 * owner to the reader thread (F_SETOWN_EX F_OWNER_TID) and the signal
 * (F_SETSIG, UCX_MRLEASE_FLEASE_SIGNAL) before F_SETLEASE, whose own
 * __f_setown(force=0) keeps an owner already set; so the signal, and the
 * SIGIO the kernel sends instead when the real-time queue is full, are
 * queued on the reader thread's private pending set, never the process's.
 * The reader blocks every signal and polls a signalfd for {signal, SIGIO}.
 * But a signalfd is readable, and its read() dequeues, from the thread's
 * private set and also from the process-wide shared set, where the
 * application's own process-directed SIGIO or signal waits until one of its
 * threads takes it (dequeue_signal(): private first, then shared). So:
 *  - a signal is only a wake-up; F_GETLEASE is the truth (during a pending
 *    break it already reports the target type, not F_WRLCK), asked of every
 *    held file on each wake-up, before anything else;
 *  - we read one siginfo at a time, and only while the reader's private set
 *    (SigPnd in /proc/thread-self/status, not ShdPnd) has the signal or
 *    SIGIO: the read then takes a private one, as private comes first;
 *  - a wake-up with nothing of ours pending is the application's signal on
 *    its way to one of its threads, or left pending by an application that
 *    blocks it: we must not read it and must not spin on it, so that signal
 *    (and only that one: an application's SIGIO does not delay our real-time
 *    wake-ups) is left out of the signalfd's mask for a back-off, 1 ms
 *    doubling up to the re-arm interval, during which each tick asks the
 *    files with F_GETLEASE: no break waits longer than the back-off. With no
 *    file leased there is no tick at all, and none either while nothing of
 *    the application's is pending: no timer noise.
 * Rejected: a process-wide handler (the application's to install), reading
 * the application's signal and queueing it again (changes order, sender
 * and value, and wakes us again), polling F_GETLEASE on a timer alone
 * (periodic wake-ups whenever anything is leased, and latency = period),
 * a helper process as the owner (the application would see its SIGCHLD),
 * yielding for the application's thread to take its signal before backing
 * off (a yield on a busy CPU cost milliseconds of every break's latency).
 * Left: an application that sets SIGIO (or our signal) to SIG_IGN flushes
 * it from every thread's pending set, ours too. A break signalled in that
 * very instant wakes nobody: it is seen at the reader's next look (at worst
 * the kernel lets the change go after lease-break-time: file_leases_forced).
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
#include <sys/stat.h>

#define FLEASE_STATUS        "/proc/thread-self/status"
#define FLEASE_BIT(_sig)     (1ull << ((_sig) - 1)) /* as /proc shows sigsets */

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
    /* reader thread only */
    int                   status_fd;  /* its /proc/thread-self/status, or -1 */
    int                   status_warned;
    uint64_t              sfd_bits;   /* signals in the signalfd's mask */
    int                   backoff_ms; /* 0, or some are left out of it */
    uint64_t              backoff_end_ns;
    int                   parked;     /* backing off with nothing leased, so no
                                       * tick: arm wakes the reader (locked) */
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
    ucs_mrlease_ext_t *ext;

    ucs_list_for_each(ext, &file->leases, file_list) {
        ucs_mrlease_set_uncovered(ext->lease, UCS_MRLEASE_UNCOVERED_FILE_OPEN,
                                  !covered);
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

static uint64_t flease_sigset_line(const char *status, const char *name)
{
    const char *p = strstr(status, name);

    return (p == NULL) ? 0 : strtoull(p + strlen(name), NULL, 16);
}

/* Reader thread: its private pending set and the process's shared one, as
 * /proc shows them (bit signo - 1). Nonzero if they cannot be read. */
static int flease_pending(ucs_mrlease_flease_t *mon, uint64_t *own,
                          uint64_t *shared)
{
    char status[4096];
    ssize_t n;

    if (mon->status_fd < 0) {
        /* thread-self: the reader's own task, whose file this stays */
        mon->status_fd = open(FLEASE_STATUS, O_RDONLY | O_CLOEXEC);
    }
    n = (mon->status_fd < 0) ? -1 :
        pread(mon->status_fd, status, sizeof(status) - 1, 0);
    if (n <= 0) {
        if (!mon->status_warned) {
            ucs_warn("mrlease: flease: cannot read " FLEASE_STATUS ": %m; file "
                     "lease breaks are polled every %d ms instead", mon->rearm_ms);
            mon->status_warned = 1;
        }
        return -1;
    }
    status[n] = '\0';
    *own    = flease_sigset_line(status, "\nSigPnd:");
    *shared = flease_sigset_line(status, "\nShdPnd:");
    return 0;
}

/* Reader thread: the signals the signalfd reports and reads (a subset of
 * our signal and SIGIO). */
static void flease_set_sigmask(ucs_mrlease_flease_t *mon, uint64_t bits)
{
    sigset_t set;

    if (bits == mon->sfd_bits) {
        return;
    }
    sigemptyset(&set);
    if (bits & FLEASE_BIT(mon->signo)) {
        sigaddset(&set, mon->signo);
    }
    if (bits & FLEASE_BIT(SIGIO)) {
        sigaddset(&set, SIGIO);
    }
    if (signalfd(mon->sfd, &set, 0) < 0) {
        ucs_warn("mrlease: flease: signalfd mask change failed: %m");
        return;
    }
    mon->sfd_bits = bits;
}

/* Reader thread: read one signal if one directed at this thread is pending
 * (a read takes the thread's private ones before the process's). Returns 1
 * if it read one, 0 if none is ours, with *shared = those of the signalfd's
 * signals that wait in the process's set (the application's), or -1 if it
 * cannot tell. More of ours are read on the next turn: the signalfd stays
 * readable. */
static int flease_read_own(ucs_mrlease_flease_t *mon, uint64_t *shared)
{
    struct signalfd_siginfo si;
    uint64_t own;

    if (flease_pending(mon, &own, shared) != 0) {
        return -1;
    }
    *shared &= mon->sfd_bits;
    if (!(own & mon->sfd_bits)) {
        return 0;
    }
    return read(mon->sfd, &si, sizeof(si)) == sizeof(si);
}

/* Reader thread: the application's own signal waits in the process's set
 * (bits): leave it out of the signalfd for a while, doubling, and ask the
 * files on each tick meanwhile (flease_timer). */
static void flease_backoff(ucs_mrlease_flease_t *mon, uint64_t bits)
{
    mon->backoff_ms     = (mon->backoff_ms == 0) ? 1 : 2 * mon->backoff_ms;
    if (mon->backoff_ms > mon->rearm_ms) {
        mon->backoff_ms = mon->rearm_ms;
    }
    mon->backoff_end_ns = ucs_mrlease_now_ns() + mon->backoff_ms * 1000000ull;
    flease_set_sigmask(mon, mon->sfd_bits & ~bits);
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
    n = flease_read_own(mon, &shared);
    if (n > 0) {
        /* The kernel marks a lease breaking before it signals: a signal
         * read now may be of a break the check above came too early for. */
        pthread_mutex_lock(&mon->lock);
        flease_check(mon);
        pthread_mutex_unlock(&mon->lock);
    } else if ((n < 0) || (shared != 0)) {
        flease_backoff(mon, (n < 0) ? mon->sfd_bits : shared);
    }
    /* else it was the application's, and one of its threads took it since */
}

/* Reader thread, back-off over: the whole signalfd again, unless the
 * application's signal still waits (then leave it out longer). */
static void flease_backoff_over(ucs_mrlease_flease_t *mon)
{
    uint64_t shared = 0;
    int n;

    flease_set_sigmask(mon, FLEASE_BIT(mon->signo) | FLEASE_BIT(SIGIO));
    n = flease_read_own(mon, &shared);
    if ((n < 0) || (shared != 0)) {
        flease_backoff(mon, (n < 0) ? mon->sfd_bits : shared);
    } else {
        mon->backoff_ms = 0;
    }
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
        flease_backoff_over(mon); /* may read signals of ours: check below */
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
