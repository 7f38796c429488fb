/*
 * Coverage: can the running monitors vouch for every way a lease's memory
 * can change? Where they cannot, a registration of it must not be served
 * from a cache (it would silently keep the old pages): the lease says why
 * (ucs_mrlease_uncovered_t), the counters count it by reason, and one
 * warning per reason and process says so.
 */
#include "engine.h"

#include <string.h>

static int ucs_mrlease_uncovered_warned[UCS_MRLEASE_UNCOVERED_REASONS];

const char *ucs_mrlease_uncovered_name(ucs_mrlease_uncovered_t reason)
{
    switch (reason) {
    case UCS_MRLEASE_UNCOVERED_RANGE:     return "range";
    case UCS_MRLEASE_UNCOVERED_SHMDT:     return "shmdt";
    case UCS_MRLEASE_UNCOVERED_FILE_OPEN: return "file_open";
    case UCS_MRLEASE_UNCOVERED_FILE:      return "file";
    default:                              return "?";
    }
}

static const char *ucs_mrlease_uncovered_why(ucs_mrlease_uncovered_t reason)
{
    switch (reason) {
    case UCS_MRLEASE_UNCOVERED_RANGE:
        return "userfaultfd does not watch it, so this process's own munmap, "
               "mremap or madvise by raw syscall would go unseen";
    case UCS_MRLEASE_UNCOVERED_SHMDT:
        return "it is SysV shared memory, and shmdt by raw syscall goes unseen";
    case UCS_MRLEASE_UNCOVERED_FILE_OPEN:
        return "its file is open elsewhere (the application's own descriptor, "
               "or another process maps it), so the kernel refuses a file "
               "lease and another process's truncate or write would go unseen";
    case UCS_MRLEASE_UNCOVERED_FILE:
        return "no file lease watches its file (a private mapping, flease off, "
               "or the lease refused), so another process's change would go "
               "unseen";
    default:
        return "?";
    }
}

unsigned ucs_mrlease_uncovered(const ucs_mrlease_t *lease)
{
    return __atomic_load_n(&lease->hot.uncovered, __ATOMIC_ACQUIRE);
}

/* Once per reason and process: what is not cached, and why. */
static void ucs_mrlease_warn_uncovered(const ucs_mrlease_t *lease,
                                       unsigned uncovered, const char *path)
{
    unsigned i;

    for (i = 0; i < UCS_MRLEASE_UNCOVERED_REASONS; ++i) {
        if (!(uncovered & UCS_BIT(i)) ||
            __atomic_exchange_n(&ucs_mrlease_uncovered_warned[i], 1,
                                __ATOMIC_RELAXED)) {
            continue;
        }
        ucs_warn("mrlease: registrations of [0x%lx, 0x%lx)%s%s are not cached: "
                 "%s (further cases are counted as uncovered.%s)",
                 lease->hot.start, lease->hot.end, (path && path[0]) ? " " : "",
                 path ? path : "", ucs_mrlease_uncovered_why(UCS_BIT(i)),
                 ucs_mrlease_uncovered_name(UCS_BIT(i)));
    }
}

/* What kmod (mrlease.ko's MMU notifiers) vouches for: any change of the
 * range's pages, by any process, however made; a file's truncate or hole
 * punch by another process unmaps the pages in every mapper, private
 * copies included, so file leases add nothing to it. */
#define UCS_MRLEASE_KMOD_COVERS \
    (UCS_MRLEASE_UNCOVERED_RANGE | UCS_MRLEASE_UNCOVERED_SHMDT | \
     UCS_MRLEASE_UNCOVERED_FILE_OPEN | UCS_MRLEASE_UNCOVERED_FILE)

static unsigned ucs_mrlease_kmod_covers(const ucs_mrlease_t *lease)
{
    return (__atomic_load_n(&lease->monitored, __ATOMIC_RELAXED) &
            UCS_BIT(UCS_MRLEASE_MONITOR_KMOD)) ? UCS_MRLEASE_KMOD_COVERS : 0;
}

/* What no monitor that armed the lease can see, apart from FILE_OPEN, which
 * the flease monitor keeps as the kernel grants or refuses the file lease. */
static unsigned ucs_mrlease_static_uncovered(const ucs_mrlease_t *lease)
{
    unsigned bits      = lease->backing_bits;
    unsigned uncovered = 0;

    if (bits & UCS_MRLEASE_BACKING_DAX) {
        return 0; /* the kernel refuses to pin FS-DAX pages: none go stale */
    }
    if (!(lease->monitored & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD))) {
        uncovered |= UCS_MRLEASE_UNCOVERED_RANGE;
    }
    if (bits & UCS_MRLEASE_BACKING_SYSV) {
        uncovered |= UCS_MRLEASE_UNCOVERED_SHMDT;
    }
    if ((bits & UCS_MRLEASE_BACKING_NAMED) &&
        !(lease->monitored & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE))) {
        uncovered |= UCS_MRLEASE_UNCOVERED_FILE;
    }
    uncovered &= ~ucs_mrlease_kmod_covers(lease);
    return uncovered;
}

unsigned ucs_mrlease_cover(ucs_mrlease_t *lease)
{
    unsigned fixed = ucs_mrlease_static_uncovered(lease);
    unsigned old   = ucs_mrlease_uncovered(lease);
    unsigned now;

    /* The flease monitor may flip FILE_OPEN from the reader thread. */
    do {
        now = fixed | (old & UCS_MRLEASE_UNCOVERED_FILE_OPEN &
                       ~ucs_mrlease_kmod_covers(lease));
    } while (!__atomic_compare_exchange_n(&lease->hot.uncovered, &old, now, 0,
                                          __ATOMIC_RELEASE, __ATOMIC_ACQUIRE));
    return now;
}

void ucs_mrlease_count_uncovered(ucs_mrlease_t *lease, const char *path)
{
    ucs_mrlease_engine_t *engine = lease->engine;
    unsigned uncovered           = ucs_mrlease_uncovered(lease);
    unsigned i;

    if (uncovered == 0) {
        return;
    }
    ++engine->counters.leases_unmonitored;
    for (i = 0; i < UCS_MRLEASE_UNCOVERED_REASONS; ++i) {
        engine->counters.uncovered[i] += !!(uncovered & UCS_BIT(i));
    }
    ucs_mrlease_warn_uncovered(lease, uncovered, path);
}

void ucs_mrlease_set_uncovered(ucs_mrlease_t *lease, unsigned reasons, int on)
{
    if (on) {
        reasons &= ~ucs_mrlease_kmod_covers(lease);
        __atomic_or_fetch(&lease->hot.uncovered, reasons, __ATOMIC_RELEASE);
    } else {
        __atomic_and_fetch(&lease->hot.uncovered, ~reasons, __ATOMIC_RELEASE);
    }
}

void ucs_mrlease_note_uncached(ucs_mrlease_t *lease)
{
    ucs_mrlease_engine_t *engine = lease->engine;
    unsigned uncovered           = ucs_mrlease_uncovered(lease);
    unsigned i;

    for (i = 0; i < UCS_MRLEASE_UNCOVERED_REASONS; ++i) {
        if (uncovered & UCS_BIT(i)) {
            __atomic_add_fetch(&engine->counters.uncached[i], 1, __ATOMIC_RELAXED);
        }
    }
    ucs_mrlease_warn_uncovered(lease, uncovered, NULL);
}
