/*
 * libuct_ib_lease: coherent registrations for UCX's own IB transports.
 *
 * Preloaded into an unmodified UCX 1.13 process (contrib/mpirun-mrlease does
 * it for mpirun), it interposes the three ucs_rcache calls that UCX's IB
 * memory domain makes through the PLT: create, get (rcache_get_abi.c) and
 * destroy. The registration caches created by libuct_ib get leased regions
 * (the engine's rcache hook); every registration lookup handles pending
 * decoherence first, so a lookup after the memory changed registers the new
 * pages. The rc/ud/dc fast paths (post, poll, progress) are UCX's own and untouched.
 *
 * UCX_IB_LEASE_ENABLE=y turns it on; when it is off, or the running UCX is
 * not one it covers (ucx_compat.c says which, and why, on stderr), every
 * call goes straight through.
 */
#define _GNU_SOURCE
#include "ib_lease.h"
#include "rkey_keeper.h"
#include "mw_binder.h"
#include "ucx_compat.h"
#include "ucs_mrlease/engine.h" /* the engine's size, for our own storage */
#include "ucs_mrlease/config_env.h"

#include <ucs_mrlease/mrlease_rcache.h>
#include <ucp/api/ucp.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Leased registration caches at once (UCX has one per IB memory domain). */
#define IB_LEASE_MAX_RCACHES 64

typedef ucs_status_t (*rcache_create_func_t)(const ucs_rcache_params_t*, const char*,
                                             ucs_stats_node_t*, ucs_rcache_t**);
typedef ucs_status_t (*rcache_get_func_t)(ucs_rcache_t*, void*, size_t, int, void*,
                                          ucs_rcache_region_t**);
typedef void (*rcache_destroy_func_t)(ucs_rcache_t*);

static struct {
    pthread_mutex_t       lock;
    int                   state;      /* IB_LEASE_STATE_* */
    ib_lease_mode_t       mode;       /* while on */
    ucs_ib_lease_config_t config;
    rcache_create_func_t  real_create;
    rcache_get_func_t     real_get;
    rcache_destroy_func_t real_destroy;
    /*
     * Leased rcaches, found by get without the lock: slot i is in use while
     * rcaches[i] is set. Create fills leased[i] before publishing rcaches[i];
     * destroy clears rcaches[i] before freeing leased[i]. A lookup compares
     * rcaches[] only and reads leased[i] once it matched its own rcache,
     * which UCX does not destroy while looking it up: a slot being freed or
     * reused for another cache is never dereferenced. Slots are reused.
     */
    ucs_rcache_t          *rcaches[IB_LEASE_MAX_RCACHES];
    ucs_mrlease_rcache_t  *leased[IB_LEASE_MAX_RCACHES];
    unsigned              num_slots;    /* high-water mark of slots used */
    unsigned              num_leased;   /* in use now */
    unsigned              max_leased;   /* ...at most, at once */
    unsigned long         total_leased; /* ever */
    int                   full_said;
    int                   torn_down;
} ib_lease = {.lock = PTHREAD_MUTEX_INITIALIZER};

enum {
    IB_LEASE_STATE_INIT,
    IB_LEASE_STATE_OFF,     /* pass everything through */
    IB_LEASE_STATE_ON
};

ucs_mrlease_engine_t ib_lease_engine_storage;

void ib_lease_catch_up_slow(void)
{
    ucs_mrlease_engine_t *engine = &ib_lease_engine_storage;
    uint32_t pending;

    /* Monitors may raise the word while the engine is still being set up
     * (or failing to be): touch it only once we are on. */
    if (__atomic_load_n(&ib_lease.state, __ATOMIC_ACQUIRE) != IB_LEASE_STATE_ON) {
        return;
    }
    /* Only what is pending beyond the keeper's hold needs the engine (and its
     * locks). The keeper holds the word only when a re-bind attempt is due
     * (it sets and clears the hold itself, under its lock). */
    pending = __atomic_load_n(&engine->hot.pending, __ATOMIC_ACQUIRE);
    if (pending & ~UCS_MRLEASE_PENDING_HELD) {
        ucs_mrlease_dispatch(engine);
        /* the changes just handled (here or by the dispatcher thread, which
         * this waited for) may have left a window waiting for its memory:
         * retry it now, before the call goes on and a peer uses the key */
        pending = __atomic_load_n(&engine->hot.pending, __ATOMIC_ACQUIRE);
    }
    if (pending & UCS_MRLEASE_PENDING_HELD) {
        /* a retry is due; or the word was left raised with no window
         * waiting (an mmap racing the last re-bind): the retry lowers it */
        ib_lease_keeper_retry();
    }
}

static void *ib_lease_next(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);

    if (f == NULL) {
        fprintf(stderr, "libuct_ib_lease: %s not found: %s\n", name, dlerror());
        abort();
    }
    return f;
}

static void ib_lease_resolve(void)
{
    if (ib_lease.real_get == NULL) {
        ib_lease.real_create  = (rcache_create_func_t)ib_lease_next("ucs_rcache_create");
        ib_lease.real_destroy = (rcache_destroy_func_t)ib_lease_next("ucs_rcache_destroy");
        __atomic_store_n(&ib_lease.real_get,
                         (rcache_get_func_t)ib_lease_next("ucs_rcache_get"),
                         __ATOMIC_RELEASE);
    }
}

/* First IB rcache: decide, once, whether we are on (lock held). */
static void ib_lease_decide(void)
{
    ib_lease_mode_t mode;
    ucs_status_t status;
    int tested_abi;

    if (ib_lease.state != IB_LEASE_STATE_INIT) {
        return;
    }
    ib_lease.state = IB_LEASE_STATE_OFF;
    /* The version first: the configuration parser's ABI is 1.13's. */
    if (!ib_lease_ucx_requested()) {
        ucs_debug("mrlease: libuct_ib_lease loaded but UCX_IB_LEASE_ENABLE is not set");
        return;
    }
    if (!ib_lease_ucx_decide(1, &mode, &tested_abi)) {
        return;
    }
    ib_lease.mode = mode;
    /* On another release UCX's parser has another ABI: ours reads the
     * environment instead */
    ucs_mrlease_config_use_ucx_parser(tested_abi);
    if (ucs_ib_lease_config_read(&ib_lease.config) != UCS_OK) {
        ucs_error("mrlease: libuct_ib_lease: bad UCX_IB_LEASE_* configuration: "
                  "NOT enabled");
        return;
    }
    if (!ib_lease.config.enable) {
        ucs_debug("mrlease: libuct_ib_lease loaded but UCX_IB_LEASE_ENABLE=n");
        return;
    }
    status = ucs_mrlease_engine_init(&ib_lease_engine_storage);
    if (status != UCS_OK) {
        ucs_error("mrlease: libuct_ib_lease: lease engine failed (%s): "
                  "registrations are NOT kept coherent", ucs_status_string(status));
        return;
    }
    /* UCX's rcache is thread-safe: breaks can be handled right away */
    if (ib_lease.config.async &&
        (ucs_mrlease_engine_start_dispatcher(&ib_lease_engine_storage) != UCS_OK)) {
        ucs_warn("mrlease: libuct_ib_lease: no dispatcher thread: decoherence is "
                 "handled at the next registration lookup");
    }
    /* verbs mode leases every registration in the keeper, windows or not */
    if (ib_lease.config.keep_rkeys || (mode == IB_LEASE_MODE_VERBS)) {
        ib_lease_keeper_enable(&ib_lease_engine_storage,
                               mode == IB_LEASE_MODE_VERBS,
                               ib_lease.config.keep_rkeys);
    }
    __atomic_store_n(&ib_lease.state, IB_LEASE_STATE_ON, __ATOMIC_RELEASE);
    ucs_debug("mrlease: libuct_ib_lease on in %s mode, monitors 0x%x",
              (mode == IB_LEASE_MODE_VERBS) ? "verbs" : "rcache",
              ucs_mrlease_engine_monitors(&ib_lease_engine_storage));
}

int ib_lease_is_on(void)
{
    int on;

    pthread_mutex_lock(&ib_lease.lock);
    ib_lease_resolve();
    ib_lease_decide();
    on = (ib_lease.state == IB_LEASE_STATE_ON);
    pthread_mutex_unlock(&ib_lease.lock);
    return on;
}

/* libuct_ib.so, and from UCX 1.18 its sibling modules libuct_ib_mlx5.so
 * and libuct_ib_efa.so (any libuct_ib_*.so but ours). */
int ib_lease_caller_is_uct_ib(const void *ret_addr)
{
    const char *base;
    Dl_info info;

    if (!dladdr(ret_addr, &info) || (info.dli_fname == NULL)) {
        return 0;
    }
    base = strrchr(info.dli_fname, '/');
    base = (base != NULL) ? base + 1 : info.dli_fname;
    return !strncmp(base, "libuct_ib.so", 12) ||
           (!strncmp(base, "libuct_ib_", 10) && strncmp(base, "libuct_ib_lease", 15));
}

static ucs_mrlease_rcache_t *ib_lease_find(const void *rcache)
{
    unsigned i, n = __atomic_load_n(&ib_lease.num_slots, __ATOMIC_ACQUIRE);

    for (i = 0; i < n; ++i) {
        if (__atomic_load_n(&ib_lease.rcaches[i], __ATOMIC_ACQUIRE) == rcache) {
            return __atomic_load_n(&ib_lease.leased[i], __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

/* A free slot (lock held), or -1 after saying once that the table is full. */
static int ib_lease_slot_get(const char *name)
{
    unsigned i;

    for (i = 0; i < IB_LEASE_MAX_RCACHES; ++i) {
        if (ib_lease.rcaches[i] == NULL) {
            return i;
        }
    }
    if (!ib_lease.full_said) {
        ib_lease.full_said = 1;
        ucs_error("mrlease: more than %d IB registration caches at once "
                  "(IB_LEASE_MAX_RCACHES): '%s' and any further ones are NOT "
                  "leased, their registrations are NOT kept coherent",
                  IB_LEASE_MAX_RCACHES, name);
    }
    return -1;
}

ucs_status_t ucs_rcache_create(const ucs_rcache_params_t *params, const char *name,
                               ucs_stats_node_t *stats_parent, ucs_rcache_t **rcache_p)
{
    const void *caller = __builtin_return_address(0);
    ucs_mrlease_rcache_t *lrc;
    ucs_rcache_params_t leased;
    ucs_status_t status;
    int slot;

    pthread_mutex_lock(&ib_lease.lock);
    ib_lease_resolve();
    if (!ib_lease_caller_is_uct_ib(caller)) {
        pthread_mutex_unlock(&ib_lease.lock);
        return ib_lease.real_create(params, name, stats_parent, rcache_p);
    }
    ib_lease_decide();
    /* verbs mode leases below the caches (rkey_keeper.c, verbs_lease.c) */
    if ((ib_lease.state != IB_LEASE_STATE_ON) || (ib_lease.mode != IB_LEASE_MODE_RCACHE) ||
        ((slot = ib_lease_slot_get(name)) < 0)) {
        pthread_mutex_unlock(&ib_lease.lock);
        return ib_lease.real_create(params, name, stats_parent, rcache_p);
    }

    lrc = calloc(1, sizeof(*lrc));
    if (lrc == NULL) {
        pthread_mutex_unlock(&ib_lease.lock);
        return UCS_ERR_NO_MEMORY;
    }
    ucs_mrlease_rcache_wrap_params(lrc, &ib_lease_engine_storage, params, &leased);
    status = ib_lease.real_create(&leased, name, stats_parent, &lrc->rcache);
    if (status != UCS_OK) {
        free(lrc);
        pthread_mutex_unlock(&ib_lease.lock);
        return status;
    }
    __atomic_store_n(&ib_lease.leased[slot], lrc, __ATOMIC_RELAXED);
    __atomic_store_n(&ib_lease.rcaches[slot], lrc->rcache, __ATOMIC_RELEASE);
    if ((unsigned)slot >= ib_lease.num_slots) {
        __atomic_store_n(&ib_lease.num_slots, slot + 1, __ATOMIC_RELEASE);
    }
    ++ib_lease.total_leased;
    if (++ib_lease.num_leased > ib_lease.max_leased) {
        ib_lease.max_leased = ib_lease.num_leased;
    }
    pthread_mutex_unlock(&ib_lease.lock);

    ucs_debug("mrlease: IB registration cache '%s' is leased", name);
    *rcache_p = lrc->rcache;
    return UCS_OK;
}

void *ib_lease_rcache_get_next(void)
{
    rcache_get_func_t real = __atomic_load_n(&ib_lease.real_get, __ATOMIC_ACQUIRE);

    if (ucs_unlikely(real == NULL)) {
        pthread_mutex_lock(&ib_lease.lock);
        ib_lease_resolve();
        pthread_mutex_unlock(&ib_lease.lock);
        real = ib_lease.real_get;
    }
    return (void*)real;
}

ucs_mrlease_rcache_t *ib_lease_rcache_leased(const void *rcache)
{
    /* Registration path, not the fast path: a short scan (no caches are
     * leased while mrlease is off). */
    return ib_lease_find(rcache);
}

ucs_status_t ib_lease_rcache_get_leased(ucs_mrlease_rcache_t *lrc, void *address,
                                        size_t length, int prot, void *arg,
                                        ucs_rcache_region_t **region_p)
{
    rcache_get_func_t real = (rcache_get_func_t)ib_lease_rcache_get_next();
    ucs_status_t status;

    /* one load when nothing is pending */
    ib_lease_catch_up();
    status = real(lrc->rcache, address, length, prot, arg, region_p);
    if (status == UCS_OK) {
        /* memory no monitor can vouch for is registered for this use only */
        ucs_mrlease_rcache_served(lrc, *region_p);
    }
    return status;
}

void ucs_rcache_destroy(ucs_rcache_t *rcache)
{
    ucs_mrlease_rcache_t *lrc = NULL;
    unsigned i;

    pthread_mutex_lock(&ib_lease.lock);
    ib_lease_resolve();
    for (i = 0; i < ib_lease.num_slots; ++i) {
        if (ib_lease.rcaches[i] == rcache) {
            lrc = ib_lease.leased[i];
            /* lookups of other caches stop looking at the slot first */
            __atomic_store_n(&ib_lease.rcaches[i], NULL, __ATOMIC_RELEASE);
            ib_lease.leased[i] = NULL;
            --ib_lease.num_leased;
            break;
        }
    }
    pthread_mutex_unlock(&ib_lease.lock);
    if (lrc != NULL) {
        /* no lease callback may be running on one of its regions while
         * UCX destroys it */
        ucs_mrlease_rcache_detach(lrc);
    }
    ib_lease.real_destroy(rcache);
    if (lrc != NULL) {
        free(lrc);
        ib_lease_keeper_release_idle_binders();
    }
}

/* What was registered without caching, and why (one line, if any). */
static void ib_lease_summary_uncached(const ucs_mrlease_counters_t *c)
{
    char why[256] = "";
    size_t len    = 0;
    unsigned i;

    for (i = 0; i < UCS_MRLEASE_UNCOVERED_REASONS; ++i) {
        if (c->uncached[i] > 0) {
            len += snprintf(why + len, sizeof(why) - len, "%s%s %llu",
                            len ? ", " : "", ucs_mrlease_uncovered_name(UCS_BIT(i)),
                            (unsigned long long)c->uncached[i]);
        }
    }
    if (len > 0) {
        fprintf(stderr, "mrlease[%d]: registrations NOT cached (no monitor can "
                "vouch for their memory; registered for each use): %s\n",
                (int)getpid(), why);
    }
}

/*
 * At exit, once the application has closed UCX (MPI_Finalize, ucp_cleanup):
 * no leased cache and no kept key refers to the engine any more, so its
 * threads are joined, its monitors closed (UCM handlers, userfaultfd, file
 * leases) and its memory freed. This runs before the destructors of UCX's
 * libraries, which we depend on. A process that exits with UCX still open
 * keeps the engine (its caches may still call into it); a forked child has
 * none of the engine's threads to join and leaves it alone too.
 */
static int ib_lease_teardown(unsigned *rcaches, unsigned *kept)
{
    pthread_mutex_lock(&ib_lease.lock);
    *rcaches = ib_lease.num_leased;
    *kept    = ib_lease_keeper_count();
    if ((*rcaches != 0) || (*kept != 0) ||
        (ib_lease_engine_storage.pid != getpid())) {
        pthread_mutex_unlock(&ib_lease.lock);
        return 0;
    }
    /* catch-ups from now on see mrlease off; the engine reads as idle */
    __atomic_store_n(&ib_lease.state, IB_LEASE_STATE_OFF, __ATOMIC_RELEASE);
    ib_lease_keeper_disable();
    ucs_mrlease_engine_cleanup(&ib_lease_engine_storage);
    memset(&ib_lease_engine_storage, 0, sizeof(ib_lease_engine_storage));
    ib_lease.torn_down = 1;
    pthread_mutex_unlock(&ib_lease.lock);
    return 1;
}

/* One line per process at exit: what was caught and healed. */
static void ib_lease_summary(void)
{
    ib_lease_keeper_counters_t kc;
    ucs_mrlease_counters_t c;
    unsigned k;
    uint64_t events = 0;

    ucs_mrlease_counters_get(&ib_lease_engine_storage, &c);
    for (k = 0; k < UCS_MRLEASE_EV_KINDS; ++k) {
        events += c.events[k];
    }
    fprintf(stderr, "mrlease[%d]: %llu decoherence events (kmod %llu, uffd %llu, "
            "ucm %llu, flease %llu); %llu IB registrations invalidated, %llu "
            "restored, %llu dead; %llu leases active\n", (int)getpid(),
            (unsigned long long)events,
            (unsigned long long)c.monitor_events[UCS_MRLEASE_MONITOR_KMOD],
            (unsigned long long)c.monitor_events[UCS_MRLEASE_MONITOR_UFFD],
            (unsigned long long)c.monitor_events[UCS_MRLEASE_MONITOR_UCM],
            (unsigned long long)c.monitor_events[UCS_MRLEASE_MONITOR_FLEASE],
            (unsigned long long)c.leases_broken, (unsigned long long)c.leases_restored,
            (unsigned long long)c.leases_dead, (unsigned long long)c.leases_active);
    ib_lease_summary_uncached(&c);
    ib_lease_keeper_counters_get(&kc);
    if (ib_lease.mode == IB_LEASE_MODE_VERBS) {
        fprintf(stderr, "mrlease[%d]: verbs mode; %llu IB registrations leased at "
                "libibverbs; %llu breaks told to UCX's caches; %llu registrations "
                "without a lease (used once)\n", (int)getpid(),
                (unsigned long long)kc.verbs_leased, (unsigned long long)kc.told,
                (unsigned long long)kc.unleased);
    }
    if (ib_lease.config.keep_rkeys) {
        fprintf(stderr, "mrlease[%d]: remote keys: %llu kept through memory windows, "
                "%llu windows re-bound to new pages, %llu waiting for their memory, "
                "%llu lost it; %llu re-binds waited for a change under way; "
                "%llu left unbound over a device's memory; %llu re-binds waited "
                "for a raw madvise to be done, %llu made without proof of it\n",
                (int)getpid(), (unsigned long long)kc.kept,
                (unsigned long long)kc.rebound, (unsigned long long)kc.unbacked,
                (unsigned long long)kc.lost, (unsigned long long)kc.waited_for_changes,
                (unsigned long long)kc.device_refused, (unsigned long long)kc.zap_waited,
                (unsigned long long)kc.zap_unseen);
    }
}

static void __attribute__((destructor)) ib_lease_fini(void)
{
    unsigned rcaches, kept, binders, binders_total;
    int summary, down;

    if (__atomic_load_n(&ib_lease.state, __ATOMIC_ACQUIRE) != IB_LEASE_STATE_ON) {
        return;
    }
    summary = ib_lease.config.summary;
    if (summary) {
        ib_lease_summary();
    }
    down    = ib_lease_teardown(&rcaches, &kept);
    binders = ib_lease_mw_binder_count(&binders_total);
    if (!summary) {
        return;
    }
    if (down) {
        fprintf(stderr, "mrlease[%d]: %lu IB registration caches leased (at most %u "
                "at once), windows on %u protection domains (%u still open); engine "
                "shut down\n", (int)getpid(), ib_lease.total_leased,
                ib_lease.max_leased, binders_total, binders);
    } else {
        fprintf(stderr, "mrlease[%d]: %lu IB registration caches leased (at most %u "
                "at once), windows on %u protection domains (%u still open); engine "
                "left running: %u caches and %u kept keys still open (UCX was not "
                "closed)\n", (int)getpid(), ib_lease.total_leased,
                ib_lease.max_leased, binders_total, binders, rcaches, kept);
    }
}
