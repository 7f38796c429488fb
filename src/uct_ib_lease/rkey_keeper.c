/*
 * Remote keys that survive re-registration: see rkey_keeper.h.
 *
 * Interposes ibv_reg_mr_iova2 and ibv_dereg_mr, the two calls libuct_ib makes
 * to register memory. Every kept registration has its own lease; its
 * callback (dispatcher thread or a catch-up) re-registers and re-binds.
 */
#define _GNU_SOURCE
#include "rkey_keeper_int.h"
#include "ucs_mrlease/engine.h" /* ucs_mrlease_thread_join */

#include <ucs/sys/math.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

ib_lease_keeper_t ib_lease_keeper = {.lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP};

volatile uint32_t ib_lease_keeper_unbacked;

static void ib_lease_keeper_resolve(void)
{
    if (ib_lease_keeper.real_dereg == NULL) {
        ib_lease_keeper.real_reg = (reg_mr_iova2_func_t)dlsym(RTLD_NEXT, "ibv_reg_mr_iova2");
        ib_lease_keeper.real_dealloc_pd = (dealloc_pd_func_t)dlsym(RTLD_NEXT, "ibv_dealloc_pd");
        __atomic_store_n(&ib_lease_keeper.real_dereg,
                         (dereg_mr_func_t)dlsym(RTLD_NEXT, "ibv_dereg_mr"),
                         __ATOMIC_RELEASE);
        if ((ib_lease_keeper.real_reg == NULL) || (ib_lease_keeper.real_dereg == NULL) ||
            (ib_lease_keeper.real_dealloc_pd == NULL)) {
            ucs_error("mrlease: libuct_ib_lease: libibverbs' ibv_reg_mr_iova2/"
                      "ibv_dereg_mr/ibv_dealloc_pd not found: %s", dlerror());
            abort();
        }
    }
}

void ib_lease_keeper_enable(ucs_mrlease_engine_t *engine, int verbs_mode,
                            int windows)
{
    pthread_mutex_lock(&ib_lease_keeper.lock);
    ib_lease_keeper_resolve();
    ib_lease_keeper.verbs_mode = verbs_mode;
    ib_lease_keeper.windows    = windows;
    if (ib_lease_keeper.unbacked.next == NULL) {
        ucs_list_head_init(&ib_lease_keeper.unbacked);
        kh_init_inplace(ib_lease_mr_slot, &ib_lease_keeper.by_mr);
    }
    __atomic_store_n(&ib_lease_keeper.engine, engine, __ATOMIC_RELEASE);
    if (!ib_lease_keeper.mapped_hook) {
        ib_lease_keeper.mapped_hook = (ucm_set_event_handler(UCM_EVENT_VM_MAPPED, 0,
                                                    ib_lease_vm_mapped, NULL) ==
                              UCS_OK);
        if (!ib_lease_keeper.mapped_hook) {
            ucs_diag("mrlease: no UCM mmap events: a window whose memory "
                     "comes back is re-bound on the retry schedule only");
        }
    }
    /* Now, not at the first unbacked window: a thread's stack mapped while
     * the application is between a raw munmap and its mmap(MAP_FIXED) of the
     * same range would be replaced under the thread. */
    ib_lease_timer_start();
    pthread_mutex_unlock(&ib_lease_keeper.lock);
}

unsigned ib_lease_keeper_count(void)
{
    unsigned count;

    pthread_mutex_lock(&ib_lease_keeper.lock);
    count = ib_lease_keeper.count;
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    return count;
}

void ib_lease_keeper_disable(void)
{
    int join;

    pthread_mutex_lock(&ib_lease_keeper.lock);
    if (ib_lease_keeper.count != 0) {
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        return;
    }
    __atomic_store_n(&ib_lease_keeper.engine, NULL, __ATOMIC_RELEASE);
    if (ib_lease_keeper.mapped_hook) {
        ucm_unset_event_handler(UCM_EVENT_VM_MAPPED, ib_lease_vm_mapped, NULL);
        ib_lease_keeper.mapped_hook = 0;
    }
    join = (ib_lease_keeper.timer_state == IB_LEASE_TIMER_RUNNING) &&
           (ib_lease_keeper.timer_pid == getpid());
    if (join) {
        ib_lease_keeper.timer_state = IB_LEASE_TIMER_STOPPING;
        pthread_cond_signal(&ib_lease_keeper.timer_cond);
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    if (join) {
        ucs_mrlease_thread_join(ib_lease_keeper.timer, &ib_lease_keeper.timer_stack);
    }
    ib_lease_keeper.timer_state = IB_LEASE_TIMER_NONE;
}

void ib_lease_keeper_counters_get(ib_lease_keeper_counters_t *counters)
{
    pthread_mutex_lock(&ib_lease_keeper.lock);
    *counters          = ib_lease_keeper.counters;
    counters->unbacked = 0;
    {
        ib_lease_kept_mr_t *k;
        ucs_list_for_each(k, &ib_lease_keeper.unbacked, unbacked_list) {
            ++counters->unbacked;
        }
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
}

/* --- slots (lock held) ---------------------------------------------------- */

int ib_lease_slot_alloc(ib_lease_kept_mr_t *k)
{
    unsigned i, n;

    for (i = ib_lease_keeper.free_hint; i < ib_lease_keeper.num_slots; ++i) {
        if (ib_lease_keeper.slots[i] == NULL) {
            goto found;
        }
    }
    n = ib_lease_keeper.num_slots ? ib_lease_keeper.num_slots * 2 : 64;
    {
        ib_lease_kept_mr_t **slots = realloc(ib_lease_keeper.slots, n * sizeof(*slots));
        uint32_t *gen;

        if (slots == NULL) {
            return -1;
        }
        ib_lease_keeper.slots = slots;
        gen          = realloc(ib_lease_keeper.slot_gen, n * sizeof(*gen));
        if (gen == NULL) {
            return -1;
        }
        ib_lease_keeper.slot_gen = gen;
    }
    for (i = ib_lease_keeper.num_slots; i < n; ++i) {
        ib_lease_keeper.slots[i]    = NULL;
        ib_lease_keeper.slot_gen[i] = 0;
    }
    i                = ib_lease_keeper.num_slots;
    ib_lease_keeper.num_slots = n;
found:
    ib_lease_keeper.slots[i]  = k;
    ib_lease_keeper.free_hint = i + 1;
    k->slot          = i;
    return 0;
}

void ib_lease_slot_free(ib_lease_kept_mr_t *k)
{
    ib_lease_keeper.slots[k->slot] = NULL;
    ++ib_lease_keeper.slot_gen[k->slot];
    if (k->slot < ib_lease_keeper.free_hint) {
        ib_lease_keeper.free_hint = k->slot;
    }
}

ib_lease_kept_mr_t *ib_lease_slot_find(void *arg)
{
    uintptr_t id  = (uintptr_t)arg;
    unsigned slot = (unsigned)(id & 0xffffffffu);

    if ((slot >= ib_lease_keeper.num_slots) || (ib_lease_keeper.slot_gen[slot] != (uint32_t)(id >> 32))) {
        return NULL;
    }
    return ib_lease_keeper.slots[slot];
}

/* --- binding (lock held) -------------------------------------------------- */

/* Register the range's pages as they are now and move the window there. */
ucs_status_t ib_lease_rebind(ib_lease_kept_mr_t *k)
{
    struct ibv_mr *fresh;
    ucs_status_t status;

    fresh = ib_lease_keeper.real_reg(k->mr->pd, k->addr, k->length, (uintptr_t)k->addr,
                            k->access);
    if (fresh == NULL) {
        return UCS_ERR_NO_ELEM; /* not mapped (EFAULT), or beyond a file's end */
    }
    /* The key was handed out for memory. A device's memory mapped where it
     * was (a verbs queue the kernel put in the freed buffer's place) must
     * never become writable by a peer still holding the key: wait, as for
     * memory not mapped (docs/device-memory.md). Looked at after the
     * registration: a mapping made since is a change, reported again. */
    if (ucs_mrlease_range_maps_device((uintptr_t)k->addr,
                                      (uintptr_t)k->addr + k->length) == 1) {
        ib_lease_keeper.real_dereg(fresh);
        if (!k->device_refused) {
            k->device_refused = 1;
            ++ib_lease_keeper.counters.device_refused;
            ucs_diag("mrlease: memory %p..%p registered with remote key 0x%x "
                     "now holds a device's memory: the key stays unbound",
                     k->addr, UCS_PTR_BYTE_OFFSET(k->addr, k->length), k->rkey);
        }
        return UCS_ERR_NO_ELEM;
    }
    status = ib_lease_mw_bind(k->binder, k->mw, fresh, k->addr, k->length,
                              k->remote_access, k->rkey);
    if (status != UCS_OK) {
        ib_lease_keeper.real_dereg(fresh);
        return status;
    }
    if (k->backing != k->mr) {
        ib_lease_keeper.real_dereg(k->backing);
    }
    k->backing  = fresh;
    k->bound    = 1;
    ib_lease_zap_clear(&k->zap); /* whatever was reported is behind us */
    ++ib_lease_keeper.counters.rebound;
    return UCS_OK;
}

/* Nothing may land in pages the application has let go: unbind. The
 * registration behind stays while a zap is to be seen (ib_lease_watch_zap):
 * pinned, the first page cannot be swapped out and look zapped. */
static void ib_lease_unbind(ib_lease_kept_mr_t *k)
{
    if (k->bound) {
        if (ib_lease_mw_bind(k->binder, k->mw, k->backing, k->addr, 0,
                             k->remote_access, k->rkey) == UCS_OK) {
            k->bound = 0;
        }
    }
    if ((k->backing != k->mr) && !(ib_lease_zap_pending(&k->zap) && k->zap.present)) {
        ib_lease_keeper.real_dereg(k->backing);
        k->backing = k->mr;
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

/*
 * A madvise only userfaultfd saw (a raw system call: no UCM hook holds its
 * thread; mrlease.ko would report after the zap) over private anonymous
 * memory, whose pages it drops for good: before re-binding, the keeper waits
 * for proof that it is done (zap_witness.h). Called before the unbind: the
 * window's registration (kept until the re-bind) pins the first page, so
 * seeing it gone proves the zap has begun; only for one report (the kernel
 * makes one per vma and change) that carries nothing else able to unmap it.
 */
static void ib_lease_watch_zap(ib_lease_kept_mr_t *k, const ucs_mrlease_event_t *event)
{
    uintptr_t page  = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ucs_max(event->start, (uintptr_t)k->addr) & ~(page - 1);
    uintptr_t end   = ucs_min(event->end, (uintptr_t)k->addr + k->length);

    if (!(event->kinds & UCS_MRLEASE_EV_REMOVE) ||
        !(event->monitors & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD)) ||
        (event->monitors & (UCS_BIT(UCS_MRLEASE_MONITOR_UCM) |
                            UCS_BIT(UCS_MRLEASE_MONITOR_KMOD))) ||
        (k->lease->backing_type != UCS_MRLEASE_BACKING_ANON) ||
        (k->lease->backing_bits & UCS_MRLEASE_BACKING_SHARED) || (end <= start)) {
        return; /* shared memory: kept, or punched without mmap_lock */
    }
    if (ib_lease_zap_pending(&k->zap)) {
        /* a second report before the first was proven: the first page may
         * have gone with the first one */
        k->zap.start   = ucs_min(k->zap.start, start);
        k->zap.end     = ucs_max(k->zap.end, end);
        k->zap.present = 0;
    } else {
        k->zap.start   = start;
        k->zap.end     = end;
        k->zap.present = k->bound && (event->reports == 1) &&
                         !(event->kinds & ~UCS_MRLEASE_EV_REMOVE);
    }
    k->zap.seq = ++ib_lease_keeper.zap_seq;
}

/* Re-bind or unbind k's window for a break (lock held). */
static ucs_status_t ib_lease_window_break(ib_lease_kept_mr_t *k,
                                          const ucs_mrlease_event_t *event)
{
    if (ib_lease_reported_before_change(event)) {
        /* The pages are still the old ones: unbind now, re-bind at a later
         * catch-up, after the change (ib_lease_wait_hooked_changes, and
         * ib_lease_wait_zaps for a raw madvise). */
        ib_lease_watch_zap(k, event);
        ib_lease_unbind(k);
        ib_lease_mark_unbacked(k);
        if ((event->monitors & UCS_BIT(UCS_MRLEASE_MONITOR_UCM)) ||
            (event->kinds & UCS_MRLEASE_EV_REMOVE)) {
            /* re-bound after a wait for hooked calls (rkey_retry.c) */
            k->hooked_seq = ++ib_lease_keeper.hooked_changes;
            if (k->hooked_seq == 0) { /* 0 means none */
                k->hooked_seq = ++ib_lease_keeper.hooked_changes;
            }
        }
        return UCS_OK;
    }

    if (!ib_lease_zap_pending(&k->zap) && (ib_lease_rebind(k) == UCS_OK)) {
        ib_lease_unmark_unbacked(k);
        return UCS_OK;
    }
    /* failed, or a raw madvise's zap is still to be proven: the retry
     * re-binds (after the witness) */
    ib_lease_unbind(k);
    ib_lease_mark_unbacked(k);
    k->lease_waits = 1;
    return UCS_INPROGRESS;
}

ucs_status_t ib_lease_kept_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *event,
                                 void *arg)
{
    ucs_status_t status = UCS_INPROGRESS;
    uintptr_t start = 0, end = 0;
    ib_lease_kept_mr_t *k;

    pthread_mutex_lock(&ib_lease_keeper.lock);
    k = ib_lease_slot_find(arg);
    if ((k == NULL) || (k->lease != lease)) {
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        return UCS_OK; /* deregistered meanwhile */
    }

    if (event->kinds == UCS_MRLEASE_EV_FORK) {
        /* Since Linux 5.8 (and 6.1 in the guest) a fork copies pinned anonymous
         * pages for the child: the parent's pages, and the window, stay. */
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        return UCS_OK;
    }

    if (k->mw != NULL) {
        status = ib_lease_window_break(k, event);
    }
    if (k->told) {
        /* Verbs mode: UCX's own MR (its local key) still holds the old
         * pages; every cache that keeps it learns of the change through
         * its VM_UNMAPPED handler, drops it once no transfer uses it, and
         * registers the new pages at its next lookup. Without a window the
         * lease is restored when UCX deregisters the MR. */
        start = (uintptr_t)k->addr;
        end   = start + k->length;
        ++ib_lease_keeper.counters.told;
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    if (end != 0) {
        ucs_mrlease_ucm_feed(start, end);
    }
    return status;
}

/* --- the interposed verbs -------------------------------------------------- */

void ib_lease_kept_free(ib_lease_kept_mr_t *k)
{
    ib_lease_unmark_unbacked(k);
    if (k->lease != NULL) {
        ucs_mrlease_release(k->lease);
    }
    if (k->mw != NULL) {
        ibv_dealloc_mw(k->mw); /* also unbinds */
    }
    if (k->backing != k->mr) {
        ib_lease_keeper.real_dereg(k->backing);
    }
    free(k);
}

int ib_lease_kept_index(ib_lease_kept_mr_t *k)
{
    khiter_t it;
    int ret;

    it = kh_put(ib_lease_mr_slot, &ib_lease_keeper.by_mr, (uintptr_t)k->mr, &ret);
    if (ret < 0) {
        return -1;
    }
    kh_val(&ib_lease_keeper.by_mr, it) = k->slot;
    ++ib_lease_keeper.count;
    return 0;
}

/* Put a window over k's registration and hand its key out as the MR's
 * (lock held). Nonzero: no window (k->mw NULL), the MR keeps its own key. */
int ib_lease_window_attach(ib_lease_kept_mr_t *k)
{
    k->binder = ib_lease_mw_binder_get(k->mr->pd);
    if (k->binder == NULL) {
        return -1;
    }
    k->remote_access = k->access & IB_LEASE_REMOTE_ACCESS;
    k->mw            = ibv_alloc_mw(k->mr->pd, IBV_MW_TYPE_1);
    if (k->mw == NULL) {
        ucs_diag("mrlease: ibv_alloc_mw failed (%m): registration %p+%zu keeps "
                 "its own rkey", k->addr, k->length);
        return -1;
    }
    k->rkey = k->mw->rkey;
    if (ib_lease_mw_bind(k->binder, k->mw, k->mr, k->addr, k->length,
                         k->remote_access, k->rkey) != UCS_OK) {
        ibv_dealloc_mw(k->mw);
        k->mw = NULL;
        return -1;
    }
    k->bound    = 1;
    k->mr->rkey = k->rkey;
    ++ib_lease_keeper.counters.kept;
    return 0;
}

void ib_lease_kept_discard(ib_lease_kept_mr_t *k, uint32_t own_rkey)
{
    if (k->mw != NULL) {
        --ib_lease_keeper.counters.kept;
    }
    k->mr->rkey = own_rkey;
    ib_lease_slot_free(k);
    k->backing = k->mr;
    ib_lease_kept_free(k);
}

/* Hand out a registration through a window (lock held). NULL: as it was. */
static ib_lease_kept_mr_t *ib_lease_keep(struct ibv_mr *mr, unsigned access)
{
    ucs_mrlease_params_t params = {0};
    uint32_t own_rkey = mr->rkey;
    ib_lease_kept_mr_t *k;

    k = calloc(1, sizeof(*k));
    if ((k == NULL) || (ib_lease_slot_alloc(k) != 0)) {
        free(k);
        return NULL;
    }
    k->mr      = mr;
    k->backing = mr;
    k->addr    = mr->addr;
    k->length  = mr->length;
    k->access  = access;
    if (ib_lease_window_attach(k) != 0) {
        goto err;
    }

    params.field_mask = 0;
    params.cb         = ib_lease_kept_break;
    params.arg        = ib_lease_slot_arg(k);
    if (ucs_mrlease_acquire(ib_lease_keeper.engine, k->addr, k->length, &params,
                            &k->lease) != UCS_OK) {
        k->lease = NULL;
        goto err;
    }

    if (ib_lease_kept_index(k) != 0) {
        goto err;
    }
    return k;

err:
    ib_lease_kept_discard(k, own_rkey);
    return NULL;
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
                                uint64_t iova, unsigned access)
{
    const void *caller = __builtin_return_address(0);
    struct ibv_mr *mr;

    if (ucs_unlikely(__atomic_load_n(&ib_lease_keeper.real_dereg, __ATOMIC_ACQUIRE) == NULL)) {
        pthread_mutex_lock(&ib_lease_keeper.lock);
        ib_lease_keeper_resolve();
        pthread_mutex_unlock(&ib_lease_keeper.lock);
    }
    if ((ib_lease_keeper.engine == NULL) || (access & IBV_ACCESS_ON_DEMAND) ||
        (iova != (uintptr_t)addr) || (length == 0) ||
        (!(access & IB_LEASE_REMOTE_ACCESS) && !ib_lease_keeper.verbs_mode) ||
        !ib_lease_caller_is_uct_ib(caller)) {
        return ib_lease_keeper.real_reg(pd, addr, length, iova, access);
    }
    if (ib_lease_keeper.verbs_mode) {
        return ib_lease_verbs_reg(pd, addr, length, access);
    }

    pthread_mutex_lock(&ib_lease_keeper.lock);
    mr = ib_lease_keeper.real_reg(pd, addr, length, iova, access | IBV_ACCESS_MW_BIND);
    if (mr == NULL) {
        int err = errno;
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        if (err == EFAULT) {
            ucs_diag("mrlease: cannot register %p..%p: not mapped (unmapped for "
                      "good?)", addr, UCS_PTR_BYTE_OFFSET(addr, length));
        }
        errno = err;
        return (err == EFAULT) ? NULL : ib_lease_keeper.real_reg(pd, addr, length, iova, access);
    }
    ib_lease_keep(mr, access | IBV_ACCESS_MW_BIND);
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    return mr;
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
    ib_lease_kept_mr_t *k = NULL;
    khiter_t it;

    if (ucs_unlikely(__atomic_load_n(&ib_lease_keeper.real_dereg, __ATOMIC_ACQUIRE) == NULL)) {
        pthread_mutex_lock(&ib_lease_keeper.lock);
        ib_lease_keeper_resolve();
        pthread_mutex_unlock(&ib_lease_keeper.lock);
    }
    if (__atomic_load_n(&ib_lease_keeper.count, __ATOMIC_RELAXED) != 0) {
        pthread_mutex_lock(&ib_lease_keeper.lock);
        it = kh_get(ib_lease_mr_slot, &ib_lease_keeper.by_mr, (uintptr_t)mr);
        if (it != kh_end(&ib_lease_keeper.by_mr)) {
            k = ib_lease_keeper.slots[kh_val(&ib_lease_keeper.by_mr, it)];
            kh_del(ib_lease_mr_slot, &ib_lease_keeper.by_mr, it);
            --ib_lease_keeper.count;
            ib_lease_slot_free(k);
            ib_lease_kept_free(k);
        }
        pthread_mutex_unlock(&ib_lease_keeper.lock);
    }
    return ib_lease_keeper.real_dereg(mr);
}

/* Some kept registration is on pd (lock held). */
static int ib_lease_pd_busy(struct ibv_pd *pd)
{
    unsigned i;

    for (i = 0; i < ib_lease_keeper.num_slots; ++i) {
        if ((ib_lease_keeper.slots[i] != NULL) && (ib_lease_keeper.slots[i]->mr->pd == pd)) {
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

    pthread_mutex_lock(&ib_lease_keeper.lock);
    for (i = 0; (i < IB_LEASE_MAX_BINDERS) && (ib_lease_mw_binder_count(NULL) != 0);
         ++i) {
        pd = ib_lease_mw_binder_pd(i);
        if ((pd != NULL) && !ib_lease_pd_busy(pd)) {
            ib_lease_mw_binder_release(pd);
        }
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
    if (ucs_unlikely(__atomic_load_n(&ib_lease_keeper.real_dereg, __ATOMIC_ACQUIRE) == NULL)) {
        pthread_mutex_lock(&ib_lease_keeper.lock);
        ib_lease_keeper_resolve();
        pthread_mutex_unlock(&ib_lease_keeper.lock);
    }
    pthread_mutex_lock(&ib_lease_keeper.lock);
    if (ib_lease_mw_binder_count(NULL) != 0) {
        if (ib_lease_pd_busy(pd)) {
            /* a registration outlives its PD: dealloc fails as it would */
            ucs_diag("mrlease: protection domain %p deallocated while registrations "
                     "on it are kept: its window binder stays", pd);
        } else {
            ib_lease_mw_binder_release(pd);
        }
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    return ib_lease_keeper.real_dealloc_pd(pd);
}
