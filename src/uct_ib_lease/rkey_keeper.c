/*
 * Remote keys that survive re-registration: see rkey_keeper.h.
 *
 * Interposes ibv_reg_mr_iova2 and ibv_dereg_mr, the two calls libuct_ib makes
 * to register memory. Every kept registration has its own lease; its
 * callback (dispatcher thread or a catch-up) re-registers and re-binds.
 */
#define _GNU_SOURCE
#include "rkey_keeper.h"
#include "mw_binder.h"
#include "ib_lease.h"

#include <ucs/datastruct/khash.h>
#include <ucs/datastruct/list.h>
#include <ucs/sys/math.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define IB_LEASE_REMOTE_ACCESS \
    (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)

/* Memory that is unmapped and mapped again is usually back within
 * microseconds: the first attempt is at the next catch-up. After each failed
 * attempt the next one waits twice as long, from 1 ms up to 1 s; between
 * attempts the pending word is not held (a catch-up is one load), and the
 * keeper's timer thread raises it again when one is due. */
#define IB_LEASE_RETRY_FIRST_SEC    1e-3
#define IB_LEASE_RETRY_MAX_SEC      1.0
#define IB_LEASE_LOST_SEC           1.0

typedef struct ib_lease_kept_mr {
    struct ibv_mr        *mr;       /* UCX's; its rkey field is the window's */
    struct ibv_mr        *backing;  /* what the window is bound to: mr, or a
                                       registration of the range's newer pages */
    struct ibv_mw        *mw;
    ib_lease_mw_binder_t *binder;
    ucs_mrlease_t        *lease;
    void                 *addr;
    size_t               length;
    unsigned             access;        /* registration access, with MW_BIND */
    int                  remote_access; /* the window's */
    uint32_t             rkey;
    unsigned             slot;
    int                  bound;
    int                  lease_waits;   /* we answered UCS_INPROGRESS */
    int                  reported;
    double               unbacked_since;
    double               next_retry;
    double               retry_interval; /* doubles per failed attempt */
    ucs_list_link_t      unbacked_list;
} ib_lease_kept_mr_t;

KHASH_MAP_INIT_INT64(ib_lease_mr_slot, unsigned)

typedef struct ibv_mr *(*reg_mr_iova2_func_t)(struct ibv_pd*, void*, size_t, uint64_t,
                                              unsigned);
typedef int (*dereg_mr_func_t)(struct ibv_mr*);
typedef int (*dealloc_pd_func_t)(struct ibv_pd*);

static struct {
    pthread_mutex_t            lock;
    ucs_mrlease_engine_t       *engine;     /* set: keeping is on */
    reg_mr_iova2_func_t        real_reg;
    dereg_mr_func_t            real_dereg;
    dealloc_pd_func_t          real_dealloc_pd;
    /* slots: a lease callback's arg is (generation << 32 | slot), so a
     * callback racing with ibv_dereg_mr finds the slot empty or reused */
    ib_lease_kept_mr_t         **slots;
    uint32_t                   *slot_gen;
    unsigned                   num_slots;
    unsigned                   free_hint;
    khash_t(ib_lease_mr_slot)  by_mr;
    unsigned                   count;
    ucs_list_link_t            unbacked;
    ib_lease_keeper_counters_t counters;
    /* retry timer: holds the pending word when an attempt is due */
    int                        held;      /* we hold the pending word */
    double                     due;       /* next attempt, while !held */
    pthread_t                  timer;
    pid_t                      timer_pid; /* a forked child starts its own */
    int                        timer_state; /* IB_LEASE_TIMER_* */
    pthread_cond_t             timer_cond;
} keeper = {.lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP};

enum {
    IB_LEASE_TIMER_NONE,
    IB_LEASE_TIMER_RUNNING,
    IB_LEASE_TIMER_STOPPING,
    IB_LEASE_TIMER_FAILED   /* no thread: the word stays held, as before */
};

volatile uint32_t ib_lease_keeper_unbacked;

static void ib_lease_keeper_resolve(void)
{
    if (keeper.real_dereg == NULL) {
        keeper.real_reg = (reg_mr_iova2_func_t)dlsym(RTLD_NEXT, "ibv_reg_mr_iova2");
        keeper.real_dealloc_pd = (dealloc_pd_func_t)dlsym(RTLD_NEXT, "ibv_dealloc_pd");
        __atomic_store_n(&keeper.real_dereg,
                         (dereg_mr_func_t)dlsym(RTLD_NEXT, "ibv_dereg_mr"),
                         __ATOMIC_RELEASE);
        if ((keeper.real_reg == NULL) || (keeper.real_dereg == NULL) ||
            (keeper.real_dealloc_pd == NULL)) {
            ucs_error("mrlease: libuct_ib_lease: libibverbs' ibv_reg_mr_iova2/"
                      "ibv_dereg_mr/ibv_dealloc_pd not found: %s", dlerror());
            abort();
        }
    }
}

static void ib_lease_timer_start(void);

void ib_lease_keeper_enable(ucs_mrlease_engine_t *engine)
{
    pthread_mutex_lock(&keeper.lock);
    ib_lease_keeper_resolve();
    if (keeper.unbacked.next == NULL) {
        ucs_list_head_init(&keeper.unbacked);
        kh_init_inplace(ib_lease_mr_slot, &keeper.by_mr);
    }
    keeper.engine = engine;
    /* Now, not at the first unbacked window: a thread's stack mapped while
     * the application is between a raw munmap and its mmap(MAP_FIXED) of the
     * same range would be replaced under the thread. */
    ib_lease_timer_start();
    pthread_mutex_unlock(&keeper.lock);
}

unsigned ib_lease_keeper_count(void)
{
    unsigned count;

    pthread_mutex_lock(&keeper.lock);
    count = keeper.count;
    pthread_mutex_unlock(&keeper.lock);
    return count;
}

void ib_lease_keeper_disable(void)
{
    int join;

    pthread_mutex_lock(&keeper.lock);
    if (keeper.count != 0) {
        pthread_mutex_unlock(&keeper.lock);
        return;
    }
    keeper.engine = NULL;
    join = (keeper.timer_state == IB_LEASE_TIMER_RUNNING) &&
           (keeper.timer_pid == getpid());
    if (join) {
        keeper.timer_state = IB_LEASE_TIMER_STOPPING;
        pthread_cond_signal(&keeper.timer_cond);
    }
    pthread_mutex_unlock(&keeper.lock);
    if (join) {
        pthread_join(keeper.timer, NULL);
    }
    keeper.timer_state = IB_LEASE_TIMER_NONE;
}

void ib_lease_keeper_counters_get(ib_lease_keeper_counters_t *counters)
{
    pthread_mutex_lock(&keeper.lock);
    *counters          = keeper.counters;
    counters->unbacked = 0;
    {
        ib_lease_kept_mr_t *k;
        ucs_list_for_each(k, &keeper.unbacked, unbacked_list) {
            ++counters->unbacked;
        }
    }
    pthread_mutex_unlock(&keeper.lock);
}

/* --- slots (lock held) ---------------------------------------------------- */

static int ib_lease_slot_alloc(ib_lease_kept_mr_t *k)
{
    unsigned i, n;

    for (i = keeper.free_hint; i < keeper.num_slots; ++i) {
        if (keeper.slots[i] == NULL) {
            goto found;
        }
    }
    n = keeper.num_slots ? keeper.num_slots * 2 : 64;
    {
        ib_lease_kept_mr_t **slots = realloc(keeper.slots, n * sizeof(*slots));
        uint32_t *gen;

        if (slots == NULL) {
            return -1;
        }
        keeper.slots = slots;
        gen          = realloc(keeper.slot_gen, n * sizeof(*gen));
        if (gen == NULL) {
            return -1;
        }
        keeper.slot_gen = gen;
    }
    for (i = keeper.num_slots; i < n; ++i) {
        keeper.slots[i]    = NULL;
        keeper.slot_gen[i] = 0;
    }
    i                = keeper.num_slots;
    keeper.num_slots = n;
found:
    keeper.slots[i]  = k;
    keeper.free_hint = i + 1;
    k->slot          = i;
    return 0;
}

static void ib_lease_slot_free(ib_lease_kept_mr_t *k)
{
    keeper.slots[k->slot] = NULL;
    ++keeper.slot_gen[k->slot];
    if (k->slot < keeper.free_hint) {
        keeper.free_hint = k->slot;
    }
}

static ib_lease_kept_mr_t *ib_lease_slot_find(void *arg)
{
    uintptr_t id  = (uintptr_t)arg;
    unsigned slot = (unsigned)(id & 0xffffffffu);

    if ((slot >= keeper.num_slots) || (keeper.slot_gen[slot] != (uint32_t)(id >> 32))) {
        return NULL;
    }
    return keeper.slots[slot];
}

/* --- binding (lock held) -------------------------------------------------- */

/* Register the range's pages as they are now and move the window there. */
static ucs_status_t ib_lease_rebind(ib_lease_kept_mr_t *k)
{
    struct ibv_mr *fresh;
    ucs_status_t status;

    fresh = keeper.real_reg(k->mr->pd, k->addr, k->length, (uintptr_t)k->addr,
                            k->access);
    if (fresh == NULL) {
        return UCS_ERR_NO_ELEM; /* not mapped (EFAULT), or beyond a file's end */
    }
    status = ib_lease_mw_bind(k->binder, k->mw, fresh, k->addr, k->length,
                              k->remote_access, k->rkey);
    if (status != UCS_OK) {
        keeper.real_dereg(fresh);
        return status;
    }
    if (k->backing != k->mr) {
        keeper.real_dereg(k->backing);
    }
    k->backing = fresh;
    k->bound   = 1;
    ++keeper.counters.rebound;
    return UCS_OK;
}

/* Nothing may land in pages the application has let go: unbind. */
static void ib_lease_unbind(ib_lease_kept_mr_t *k)
{
    if (k->bound) {
        if (ib_lease_mw_bind(k->binder, k->mw, k->backing, k->addr, 0,
                             k->remote_access, k->rkey) == UCS_OK) {
            k->bound = 0;
        }
    }
    if (k->backing != k->mr) {
        keeper.real_dereg(k->backing);
        k->backing = k->mr;
    }
}

/* --- the retry timer (lock held) ------------------------------------------ */

static void ib_lease_hold(int hold)
{
    if (keeper.held != hold) {
        keeper.held = hold;
        ucs_mrlease_engine_hold_pending(keeper.engine, hold);
    }
}

static void *ib_lease_timer_thread(void *arg)
{
    struct timespec ts;
    double due;

    pthread_mutex_lock(&keeper.lock);
    while (keeper.timer_state == IB_LEASE_TIMER_RUNNING) {
        if (keeper.held || ucs_list_is_empty(&keeper.unbacked)) {
            pthread_cond_wait(&keeper.timer_cond, &keeper.lock);
            continue;
        }
        due = keeper.due;
        if (ib_lease_now() >= due) {
            ib_lease_hold(1); /* the next UCP call of any thread retries */
            continue;
        }
        ts.tv_sec  = (time_t)due;
        ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&keeper.timer_cond, &keeper.lock, &ts);
    }
    pthread_mutex_unlock(&keeper.lock);
    return NULL;
}

static void ib_lease_timer_start(void)
{
    pthread_condattr_t attr;
    sigset_t all, old;
    int ret;

    if (((keeper.timer_state == IB_LEASE_TIMER_RUNNING) &&
         (keeper.timer_pid == getpid())) ||
        (keeper.timer_state == IB_LEASE_TIMER_FAILED)) {
        return;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&keeper.timer_cond, &attr);
    pthread_condattr_destroy(&attr);
    keeper.timer_state = IB_LEASE_TIMER_RUNNING;
    keeper.timer_pid   = getpid();
    /* never a target of the application's signals */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ret = pthread_create(&keeper.timer, NULL, ib_lease_timer_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret != 0) {
        keeper.timer_state = IB_LEASE_TIMER_FAILED;
        ucs_warn("mrlease: no re-bind timer thread: while a window waits for its "
                 "memory, every UCP call checks for it");
    }
}

/*
 * The pending word is held when a re-bind attempt is due, set and cleared
 * here under the keeper lock only: a window the dispatcher thread unbinds is
 * retried by the next UCP call of any thread, and no catch-up that read the
 * list empty a moment ago can drop a hold taken since.
 */
static void ib_lease_mark_unbacked(ib_lease_kept_mr_t *k)
{
    if (k->unbacked_list.next == NULL) {
        k->unbacked_since = ib_lease_now();
        k->next_retry     = 0;
        k->retry_interval = IB_LEASE_RETRY_FIRST_SEC;
        ucs_list_add_tail(&keeper.unbacked, &k->unbacked_list);
        __atomic_store_n(&ib_lease_keeper_unbacked, 1, __ATOMIC_RELEASE);
        ib_lease_timer_start();
        ib_lease_hold(1);
    }
}

static void ib_lease_unmark_unbacked(ib_lease_kept_mr_t *k)
{
    if (k->unbacked_list.next != NULL) {
        ucs_list_del(&k->unbacked_list);
        k->unbacked_list.next = NULL;
        if (ucs_list_is_empty(&keeper.unbacked)) {
            __atomic_store_n(&ib_lease_keeper_unbacked, 0, __ATOMIC_RELEASE);
            ib_lease_hold(0);
        }
    }
}

/*
 * Some monitors report a change before it happens: UCM's hooks run before
 * the call they hook, userfaultfd's REMOVE is read before madvise zaps the
 * pages, and a file lease break holds the changer until we answer.
 * Re-registering then would pin the very pages that are about to go.
 */
static int ib_lease_reported_before_change(const ucs_mrlease_event_t *event)
{
    return (event->kinds & (UCS_MRLEASE_EV_REMOVE | UCS_MRLEASE_EV_FILE_BREAK)) ||
           (event->monitors & UCS_BIT(UCS_MRLEASE_MONITOR_UCM));
}

static ucs_status_t ib_lease_kept_break(ucs_mrlease_t *lease,
                                        const ucs_mrlease_event_t *event, void *arg)
{
    ib_lease_kept_mr_t *k;
    ucs_status_t status;

    pthread_mutex_lock(&keeper.lock);
    k = ib_lease_slot_find(arg);
    if ((k == NULL) || (k->lease != lease)) {
        pthread_mutex_unlock(&keeper.lock);
        return UCS_OK; /* deregistered meanwhile */
    }

    if (event->kinds == UCS_MRLEASE_EV_FORK) {
        /* Since Linux 5.8 (and 6.1 in the guest) a fork copies pinned anonymous
         * pages for the child: the parent's pages, and the window, stay. */
        pthread_mutex_unlock(&keeper.lock);
        return UCS_OK;
    }

    if (ib_lease_reported_before_change(event)) {
        /* The pages are still the old ones: unbind now, re-bind at the next
         * catch-up, which the changing thread reaches only after its change
         * has returned. */
        ib_lease_unbind(k);
        ib_lease_mark_unbacked(k);
        pthread_mutex_unlock(&keeper.lock);
        return UCS_OK;
    }

    if (ib_lease_rebind(k) == UCS_OK) {
        ib_lease_unmark_unbacked(k);
        status = UCS_OK;
    } else {
        ib_lease_unbind(k);
        ib_lease_mark_unbacked(k);
        k->lease_waits = 1;
        status         = UCS_INPROGRESS;
    }
    pthread_mutex_unlock(&keeper.lock);
    return status;
}

void ib_lease_keeper_retry(void)
{
    double now = ib_lease_now(), due = 0;
    ib_lease_kept_mr_t *k, *tmp;

    pthread_mutex_lock(&keeper.lock);
    ucs_list_for_each_safe(k, tmp, &keeper.unbacked, unbacked_list) {
        if (now >= k->next_retry) {
            if (ib_lease_rebind(k) == UCS_OK) {
                ib_lease_unmark_unbacked(k);
                if (k->lease_waits) {
                    k->lease_waits = 0;
                    ucs_mrlease_restored(k->lease, UCS_OK);
                }
                continue;
            }
            k->next_retry     = now + k->retry_interval;
            k->retry_interval = ucs_min(k->retry_interval * 2,
                                        IB_LEASE_RETRY_MAX_SEC);
        }
        if (!k->reported &&
            (now - k->unbacked_since > IB_LEASE_LOST_SEC)) {
            k->reported = 1;
            ++keeper.counters.lost;
            ucs_warn("mrlease: memory %p..%p registered with remote key 0x%x has "
                     "not been mapped again for %.0f s: peers using that key get "
                     "remote access errors until it is", k->addr,
                     UCS_PTR_BYTE_OFFSET(k->addr, k->length), k->rkey,
                     IB_LEASE_LOST_SEC);
        }
        if ((due == 0) || (k->next_retry < due)) {
            due = k->next_retry;
        }
    }
    if (!ucs_list_is_empty(&keeper.unbacked) &&
        (keeper.timer_state != IB_LEASE_TIMER_FAILED)) {
        /* nothing due before `due`: calls stay one load until the timer
         * raises the word again */
        keeper.due = due;
        ib_lease_hold(0);
        pthread_cond_signal(&keeper.timer_cond);
    }
    pthread_mutex_unlock(&keeper.lock);
}

/* --- the interposed verbs -------------------------------------------------- */

static void ib_lease_kept_free(ib_lease_kept_mr_t *k)
{
    ib_lease_unmark_unbacked(k);
    if (k->lease != NULL) {
        ucs_mrlease_release(k->lease);
    }
    if (k->mw != NULL) {
        ibv_dealloc_mw(k->mw); /* also unbinds */
    }
    if (k->backing != k->mr) {
        keeper.real_dereg(k->backing);
    }
    free(k);
}

/* Hand out a registration through a window (lock held). NULL: as it was. */
static ib_lease_kept_mr_t *ib_lease_keep(struct ibv_mr *mr, unsigned access)
{
    ucs_mrlease_params_t params = {0};
    ib_lease_kept_mr_t *k;
    ib_lease_mw_binder_t *binder;
    khiter_t it;
    int ret;

    binder = ib_lease_mw_binder_get(mr->pd);
    if (binder == NULL) {
        return NULL;
    }
    k = calloc(1, sizeof(*k));
    if ((k == NULL) || (ib_lease_slot_alloc(k) != 0)) {
        free(k);
        return NULL;
    }
    k->mr            = mr;
    k->backing       = mr;
    k->binder        = binder;
    k->addr          = mr->addr;
    k->length        = mr->length;
    k->access        = access;
    k->remote_access = access & IB_LEASE_REMOTE_ACCESS;
    k->mw            = ibv_alloc_mw(mr->pd, IBV_MW_TYPE_1);
    if (k->mw == NULL) {
        ucs_diag("mrlease: ibv_alloc_mw failed (%m): registration %p+%zu keeps "
                 "its own rkey", k->addr, k->length);
        goto err;
    }
    k->rkey = k->mw->rkey;
    if (ib_lease_mw_bind(binder, k->mw, mr, k->addr, k->length, k->remote_access,
                         k->rkey) != UCS_OK) {
        goto err;
    }
    k->bound = 1;

    params.field_mask = 0;
    params.cb         = ib_lease_kept_break;
    params.arg        = (void*)(((uintptr_t)keeper.slot_gen[k->slot] << 32) | k->slot);
    if (ucs_mrlease_acquire(keeper.engine, k->addr, k->length, &params,
                            &k->lease) != UCS_OK) {
        k->lease = NULL;
        goto err;
    }

    it = kh_put(ib_lease_mr_slot, &keeper.by_mr, (uintptr_t)mr, &ret);
    if (ret < 0) {
        goto err;
    }
    kh_val(&keeper.by_mr, it) = k->slot;
    ++keeper.count;
    ++keeper.counters.kept;
    mr->rkey = k->rkey;
    return k;

err:
    ib_lease_slot_free(k);
    k->backing = mr;
    ib_lease_kept_free(k);
    return NULL;
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
                                uint64_t iova, unsigned access)
{
    const void *caller = __builtin_return_address(0);
    struct ibv_mr *mr;

    if (ucs_unlikely(__atomic_load_n(&keeper.real_dereg, __ATOMIC_ACQUIRE) == NULL)) {
        pthread_mutex_lock(&keeper.lock);
        ib_lease_keeper_resolve();
        pthread_mutex_unlock(&keeper.lock);
    }
    if ((keeper.engine == NULL) || !(access & IB_LEASE_REMOTE_ACCESS) ||
        (access & IBV_ACCESS_ON_DEMAND) || (iova != (uintptr_t)addr) ||
        (length == 0) || !ib_lease_caller_is_uct_ib(caller)) {
        return keeper.real_reg(pd, addr, length, iova, access);
    }

    pthread_mutex_lock(&keeper.lock);
    mr = keeper.real_reg(pd, addr, length, iova, access | IBV_ACCESS_MW_BIND);
    if (mr == NULL) {
        int err = errno;
        pthread_mutex_unlock(&keeper.lock);
        if (err == EFAULT) {
            ucs_diag("mrlease: cannot register %p..%p: not mapped (unmapped for "
                      "good?)", addr, UCS_PTR_BYTE_OFFSET(addr, length));
        }
        errno = err;
        return (err == EFAULT) ? NULL : keeper.real_reg(pd, addr, length, iova, access);
    }
    ib_lease_keep(mr, access | IBV_ACCESS_MW_BIND);
    pthread_mutex_unlock(&keeper.lock);
    return mr;
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
    ib_lease_kept_mr_t *k = NULL;
    khiter_t it;

    if (ucs_unlikely(__atomic_load_n(&keeper.real_dereg, __ATOMIC_ACQUIRE) == NULL)) {
        pthread_mutex_lock(&keeper.lock);
        ib_lease_keeper_resolve();
        pthread_mutex_unlock(&keeper.lock);
    }
    if (__atomic_load_n(&keeper.count, __ATOMIC_RELAXED) != 0) {
        pthread_mutex_lock(&keeper.lock);
        it = kh_get(ib_lease_mr_slot, &keeper.by_mr, (uintptr_t)mr);
        if (it != kh_end(&keeper.by_mr)) {
            k = keeper.slots[kh_val(&keeper.by_mr, it)];
            kh_del(ib_lease_mr_slot, &keeper.by_mr, it);
            --keeper.count;
            ib_lease_slot_free(k);
            ib_lease_kept_free(k);
        }
        pthread_mutex_unlock(&keeper.lock);
    }
    return keeper.real_dereg(mr);
}

/* Some kept registration is on pd (lock held). */
static int ib_lease_pd_busy(struct ibv_pd *pd)
{
    unsigned i;

    for (i = 0; i < keeper.num_slots; ++i) {
        if ((keeper.slots[i] != NULL) && (keeper.slots[i]->mr->pd == pd)) {
            return 1;
        }
    }
    return 0;
}

/*
 * The window binder's QP lives on UCX's protection domain and would keep it
 * busy: UCX's ibv_dealloc_pd would fail (EBUSY) and the PD, the device
 * context and its queues' mappings would leak at every MD close. UCX closes
 * an IB memory domain by destroying its registration cache (which
 * deregisters what it holds), then deallocating the PD: binders whose PD no
 * kept registration uses any more go at the first step (one in use again is
 * opened again at its next registration), and ibv_dealloc_pd, where it is
 * interposed, releases its PD's binder in any case.
 */
void ib_lease_keeper_release_idle_binders(void)
{
    struct ibv_pd *pd;
    unsigned i;

    pthread_mutex_lock(&keeper.lock);
    for (i = 0; (i < IB_LEASE_MAX_BINDERS) && (ib_lease_mw_binder_count(NULL) != 0);
         ++i) {
        pd = ib_lease_mw_binder_pd(i);
        if ((pd != NULL) && !ib_lease_pd_busy(pd)) {
            ib_lease_mw_binder_release(pd);
        }
    }
    pthread_mutex_unlock(&keeper.lock);
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
    if (ucs_unlikely(__atomic_load_n(&keeper.real_dereg, __ATOMIC_ACQUIRE) == NULL)) {
        pthread_mutex_lock(&keeper.lock);
        ib_lease_keeper_resolve();
        pthread_mutex_unlock(&keeper.lock);
    }
    pthread_mutex_lock(&keeper.lock);
    if (ib_lease_mw_binder_count(NULL) != 0) {
        if (ib_lease_pd_busy(pd)) {
            /* a registration outlives its PD: dealloc fails as it would */
            ucs_diag("mrlease: protection domain %p deallocated while registrations "
                     "on it are kept: its window binder stays", pd);
        } else {
            ib_lease_mw_binder_release(pd);
        }
    }
    pthread_mutex_unlock(&keeper.lock);
    return keeper.real_dealloc_pd(pd);
}
