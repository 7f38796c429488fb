/*
 * Windows waiting for their memory (see rkey_keeper.h): they are retried by
 * the next UCP call of any thread once a retry is due. A retry is due at
 * once when a window is marked, after an mmap through libc, and then on a
 * back-off schedule that the timer thread keeps by raising the engine's
 * pending word; in between, a catch-up stays one load.
 */
#define _GNU_SOURCE
#include "rkey_keeper_int.h"
#include "ucs_mrlease/engine.h" /* ucs_mrlease_thread_start */

#include <ucs/sys/math.h>

#include <signal.h>
#include <time.h>

/*
 * Memory mapped (through libc: UCM's VM_MAPPED, after the call) while a
 * window waits for its memory may be that memory back: the next UCP call of
 * any thread re-binds at once, whatever the back-off says, so the message
 * that call sends finds the key bound. A raw mmap is found on the back-off's
 * schedule. In the mapping thread, maybe inside malloc: no lock.
 */
void ib_lease_vm_mapped(ucm_event_type_t type, ucm_event_t *event, void *arg)
{
    uintptr_t start = (uintptr_t)event->vm_mapped.address;
    uintptr_t end   = start + event->vm_mapped.size;
    ucs_mrlease_engine_t *engine;

    if (!__atomic_load_n(&ib_lease_keeper_unbacked, __ATOMIC_ACQUIRE) ||
        (end <= __atomic_load_n(&ib_lease_keeper.unbacked_lo, __ATOMIC_RELAXED)) ||
        (start >= __atomic_load_n(&ib_lease_keeper.unbacked_hi, __ATOMIC_RELAXED))) {
        return; /* no waiting window there: the back-off stands */
    }
    engine = __atomic_load_n(&ib_lease_keeper.engine, __ATOMIC_ACQUIRE);
    if ((engine == NULL) || (ib_lease_keeper.timer_pid != getpid())) {
        return; /* a forked child's mapping: the parent's windows are not its own */
    }
    /* seq_cst, paired with the retry's hold(0) then load: a retry running
     * now either sees the flag or leaves the word raised */
    __atomic_store_n(&ib_lease_keeper.mapped, 1, __ATOMIC_SEQ_CST);
    ucs_mrlease_engine_hold_pending(engine, 1);
}

/* --- the retry timer (lock held) ------------------------------------------ */

void ib_lease_hold(int hold)
{
    if ((ib_lease_keeper.held != hold) && (ib_lease_keeper.engine != NULL)) {
        ib_lease_keeper.held = hold;
        ucs_mrlease_engine_hold_pending(ib_lease_keeper.engine, hold);
    }
}

static void *ib_lease_timer_thread(void *arg)
{
    struct timespec ts;
    double due;

    pthread_mutex_lock(&ib_lease_keeper.lock);
    while (ib_lease_keeper.timer_state == IB_LEASE_TIMER_RUNNING) {
        if (ib_lease_keeper.held || ucs_list_is_empty(&ib_lease_keeper.unbacked)) {
            pthread_cond_wait(&ib_lease_keeper.timer_cond, &ib_lease_keeper.lock);
            continue;
        }
        due = ib_lease_keeper.due;
        if (ib_lease_now() >= due) {
            ib_lease_hold(1); /* the next UCP call of any thread retries */
            continue;
        }
        ts.tv_sec  = (time_t)due;
        ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&ib_lease_keeper.timer_cond, &ib_lease_keeper.lock, &ts);
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    return NULL;
}

void ib_lease_timer_start(void)
{
    pthread_condattr_t attr;
    int ret;

    if (((ib_lease_keeper.timer_state == IB_LEASE_TIMER_RUNNING) &&
         (ib_lease_keeper.timer_pid == getpid())) ||
        (ib_lease_keeper.timer_state == IB_LEASE_TIMER_FAILED)) {
        return;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ib_lease_keeper.timer_cond, &attr);
    pthread_condattr_destroy(&attr);
    ib_lease_keeper.timer_state = IB_LEASE_TIMER_RUNNING;
    ib_lease_keeper.timer_pid   = getpid();
    /* never a target of the application's signals; no huge page stack */
    ret = ucs_mrlease_thread_start(&ib_lease_keeper.timer, ib_lease_timer_thread, NULL,
                                   &ib_lease_keeper.timer_stack);
    if (ret != 0) {
        ib_lease_keeper.timer_state = IB_LEASE_TIMER_FAILED;
        ucs_warn("mrlease: no re-bind timer thread: while a window waits for its "
                 "memory, every UCP call checks for it");
    }
}

/* The range that the waiting windows span, for ib_lease_vm_mapped (lock
 * held; a few windows wait at most, usually one). */
static void ib_lease_unbacked_bounds(void)
{
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    ib_lease_kept_mr_t *k;

    ucs_list_for_each(k, &ib_lease_keeper.unbacked, unbacked_list) {
        lo = ucs_min(lo, (uintptr_t)k->addr);
        hi = ucs_max(hi, (uintptr_t)k->addr + k->length);
    }
    __atomic_store_n(&ib_lease_keeper.unbacked_lo, lo, __ATOMIC_RELAXED);
    __atomic_store_n(&ib_lease_keeper.unbacked_hi, hi, __ATOMIC_RELAXED);
}

/*
 * The pending word is held when a re-bind attempt is due, set and cleared
 * here under the keeper lock only: a window the dispatcher thread unbinds is
 * retried by the next UCP call of any thread, and no catch-up that read the
 * list empty a moment ago can drop a hold taken since.
 */
void ib_lease_mark_unbacked(ib_lease_kept_mr_t *k)
{
    if (k->unbacked_list.next == NULL) {
        k->unbacked_since = ib_lease_now();
        k->next_retry     = 0;
        k->retry_interval = IB_LEASE_RETRY_FIRST_SEC;
        ucs_list_add_tail(&ib_lease_keeper.unbacked, &k->unbacked_list);
        ib_lease_unbacked_bounds();
        __atomic_store_n(&ib_lease_keeper_unbacked, 1, __ATOMIC_RELEASE);
        ib_lease_timer_start();
        ib_lease_hold(1);
    }
}

void ib_lease_unmark_unbacked(ib_lease_kept_mr_t *k)
{
    if (k->unbacked_list.next != NULL) {
        ucs_list_del(&k->unbacked_list);
        k->unbacked_list.next = NULL;
        ib_lease_unbacked_bounds();
        if (ucs_list_is_empty(&ib_lease_keeper.unbacked)) {
            __atomic_store_n(&ib_lease_keeper_unbacked, 0, __ATOMIC_RELEASE);
            ib_lease_hold(0);
        }
    }
}

/*
 * A change reported by UCX's hooks is still under way when another thread
 * catches up: the changer is between the hooks and the system call (or
 * inside it: madvise's REMOVE event is read before the pages are zapped,
 * shmdt has no event after). Re-binding then would pin the pages about to go,
 * for good. UCM runs every hooked call, hooks and system call together, under
 * its event lock taken shared; taking it exclusively, as (un)setting an
 * external event does, waits until every such call has returned. A window
 * unbound on such a report carries the report's number (hooked_seq, given
 * under the lock after the report was made, inside the hooked call): it is
 * re-bound only once a wait begun after that number was given has ended.
 * The wait is made with no lock held: the changer may need the keeper's or
 * the engine's on its way out (its madvise waits for the uffd reader).
 */
static void ib_lease_wait_hooked_changes(unsigned upto)
{
    double t0 = ib_lease_now();

    pthread_mutex_unlock(&ib_lease_keeper.lock);
    ucm_unset_external_event(0); /* changes nothing; waits out the hooked calls */
    pthread_mutex_lock(&ib_lease_keeper.lock);
    if ((int)(upto - ib_lease_keeper.hooked_changes_waited) > 0) {
        ib_lease_keeper.hooked_changes_waited = upto;
    }
    if (ib_lease_now() - t0 > 1e-3) {
        ++ib_lease_keeper.counters.waited_for_changes;
    }
}

/*
 * Windows unbound on a raw madvise's report (ib_lease_watch_zap) are re-bound
 * only once the witness has proof that the madvise is done (zap_witness.h).
 * Each waits in turn, with no lock held, in every thread that catches up
 * meanwhile: none of them may go on with the window unbound. One call waits
 * IB_LEASE_ZAP_WAIT_SEC at most in all; past it the re-bind is made anyway
 * (a thread that never blocks hides the changer from the witness), counted
 * and warned about: if the changer is still descheduled, the window may keep
 * the old pages. Lock held.
 */
static void ib_lease_wait_zaps(void)
{
    double deadline = ib_lease_zap_now() + IB_LEASE_ZAP_WAIT_SEC;
    ib_lease_zap_result_t result;
    ib_lease_kept_mr_t *k;
    ib_lease_zap_t zap;
    unsigned waits;
    void *arg;

    for (waits = 0; waits < IB_LEASE_ZAP_MAX_WAITS; ++waits) {
        arg = NULL;
        ucs_list_for_each(k, &ib_lease_keeper.unbacked, unbacked_list) {
            if (ib_lease_zap_pending(&k->zap)) {
                zap = k->zap;
                arg = ib_lease_slot_arg(k);
                break;
            }
        }
        if (arg == NULL) {
            return;
        }
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        result = ib_lease_zap_wait(&zap, deadline);
        pthread_mutex_lock(&ib_lease_keeper.lock);
        k = ib_lease_slot_find(arg);
        if ((k == NULL) || !ib_lease_zap_pending(&k->zap) || (k->zap.seq != zap.seq)) {
            continue; /* gone, proven by another thread, or reported again */
        }
        ib_lease_zap_clear(&k->zap);
        ++ib_lease_keeper.counters.zap_waited;
        if (result != IB_LEASE_ZAP_UNSEEN) {
            continue;
        }
        ++ib_lease_keeper.counters.zap_unseen;
        if (!ib_lease_keeper.zap_warned) {
            ib_lease_keeper.zap_warned = 1;
            ucs_warn("mrlease: memory %p..%p registered with remote key 0x%x is "
                     "re-bound without proof, after %.1f s, that a raw madvise "
                     "reported before its zap has dropped its pages: if that call is "
                     "still under way, the key keeps the old pages; load mrlease.ko "
                     "to close this (docs/limits.md). Said once",
                     k->addr, UCS_PTR_BYTE_OFFSET(k->addr, k->length), k->rkey,
                     IB_LEASE_ZAP_WAIT_SEC);
        }
    }
}

/* A forked child's windows are not its own to wait for: forget the zaps. */
static void ib_lease_forget_zaps(void)
{
    ib_lease_kept_mr_t *k;

    ucs_list_for_each(k, &ib_lease_keeper.unbacked, unbacked_list) {
        ib_lease_zap_clear(&k->zap);
    }
}

/* Re-bind the waiting windows that are due (all if `mapped`); returns the
 * earliest next attempt, and in *barrier the newest report number of a due
 * window that must wait for its change first (0: none), in *zap whether a
 * due one waits to see a raw madvise's pages go. Lock held. */
static double ib_lease_retry_due(double now, int mapped, unsigned *barrier, int *zap)
{
    ib_lease_kept_mr_t *k, *tmp;
    double due = 0;

    *barrier = 0;
    *zap     = 0;
    ucs_list_for_each_safe(k, tmp, &ib_lease_keeper.unbacked, unbacked_list) {
        if (mapped || (now >= k->next_retry)) {
            if ((int)(k->hooked_seq - ib_lease_keeper.hooked_changes_waited) > 0) {
                if ((*barrier == 0) || ((int)(k->hooked_seq - *barrier) > 0)) {
                    *barrier = k->hooked_seq;
                }
                due = now; /* not attempted: still due */
                continue;
            }
            if (ib_lease_zap_pending(&k->zap)) {
                *zap = 1;
                due  = now;
                continue;
            }
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
            ++ib_lease_keeper.counters.lost;
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
    return due;
}

void ib_lease_keeper_retry(void)
{
    unsigned barrier;
    double due;
    int mapped, zap;

    mapped = __atomic_exchange_n(&ib_lease_keeper.mapped, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&ib_lease_keeper.lock);
    if (ib_lease_keeper.engine == NULL) {
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        return;
    }
    ib_lease_keeper.held = 1; /* the word is raised (by us, the timer or
                                 ib_lease_vm_mapped): ours to clear */
    due = ib_lease_retry_due(ib_lease_now(), mapped, &barrier, &zap);
    if ((barrier != 0) && (ib_lease_keeper.timer_pid == getpid())) {
        /* not in a forked child: UCM's lock may have been copied held */
        ib_lease_wait_hooked_changes(barrier);
        due = ib_lease_retry_due(ib_lease_now(), 1, &barrier, &zap);
    }
    if (zap && (barrier == 0)) {
        if (ib_lease_keeper.timer_pid == getpid()) {
            ib_lease_wait_zaps();
        } else {
            ib_lease_forget_zaps();
        }
        due = ib_lease_retry_due(ib_lease_now(), 1, &barrier, &zap);
    }
    if (ucs_list_is_empty(&ib_lease_keeper.unbacked)) {
        ib_lease_hold(0);
    } else if ((barrier == 0) && !zap &&
               (ib_lease_keeper.timer_state != IB_LEASE_TIMER_FAILED)) {
        /* nothing due before `due`: calls stay one load until the timer
         * raises the word again */
        ib_lease_keeper.due = due;
        ib_lease_hold(0);
        pthread_cond_signal(&ib_lease_keeper.timer_cond);
    }
    /* an mmap since the exchange above: its hold(1) may have come before
     * our hold(0); raise the word again (seq_cst both sides) */
    if (__atomic_load_n(&ib_lease_keeper.mapped, __ATOMIC_SEQ_CST)) {
        ib_lease_hold(1);
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
}
