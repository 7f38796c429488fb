/*
 * The keeper's state, shared by rkey_keeper.c (registrations, windows, lease
 * callbacks, the interposed verbs) and rkey_retry.c (windows waiting for
 * their memory: the retry timer, and what makes a retry due).
 */
#ifndef UCT_IB_LEASE_RKEY_KEEPER_INT_H_
#define UCT_IB_LEASE_RKEY_KEEPER_INT_H_

#include "rkey_keeper.h"
#include "mw_binder.h"
#include "ib_lease.h"
#include "zap_witness.h"

#include <ucm/api/ucm.h>
#include <ucs/datastruct/khash.h>
#include <ucs/datastruct/list.h>

#include <pthread.h>

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
/* How long one catch-up waits for proof that raw madvises are done
 * (zap_witness.h) before the windows are re-bound anyway, counted and warned
 * about; and how many windows it waits for, one after the other, at most. */
#define IB_LEASE_ZAP_WAIT_SEC       0.5
#define IB_LEASE_ZAP_MAX_WAITS      64

typedef struct ib_lease_kept_mr {
    struct ibv_mr        *mr;       /* UCX's; its rkey field is the window's */
    struct ibv_mr        *backing;  /* what the window is bound to: mr, or a
                                       registration of the range's newer pages */
    struct ibv_mw        *mw;       /* NULL: no window (verbs mode) */
    ib_lease_mw_binder_t *binder;
    ucs_mrlease_t        *lease;
    void                 *addr;
    size_t               length;
    unsigned             access;        /* registration access, with MW_BIND */
    int                  remote_access; /* the window's */
    uint32_t             rkey;
    unsigned             slot;
    unsigned             hooked_seq;    /* unbound on report N of a change
                                           still under way (0: none) */
    ib_lease_zap_t       zap;           /* a raw madvise's pages to see go
                                           before re-binding (rkey_retry.c) */
    int                  bound;
    int                  lease_waits;   /* we answered UCS_INPROGRESS */
    int                  reported;
    int                  device_refused; /* counted and said once */
    int                  told;          /* verbs mode: a break is told to
                                           UCX's caches (ucm_vm_munmap) */
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

typedef struct ib_lease_keeper {
    pthread_mutex_t            lock;
    ucs_mrlease_engine_t       *engine;     /* set: keeping is on */
    int                        verbs_mode;  /* lease every registration */
    int                        windows;     /* remote keys through windows */
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
    void                       *timer_stack;
    pid_t                      timer_pid; /* a forked child starts its own */
    int                        timer_state; /* IB_LEASE_TIMER_* */
    pthread_cond_t             timer_cond;
    /* reports of changes that may still be under way in a hooked call:
     * numbered; waited out up to hooked_changes_waited (rkey_retry.c) */
    unsigned                   hooked_changes;
    unsigned                   hooked_changes_waited;
    unsigned                   zap_seq;     /* numbers the zaps to witness */
    int                        zap_warned;  /* a re-bind without seeing one */
    int                        mapped;      /* an mmap since the last retry */
    int                        mapped_hook; /* our VM_MAPPED handler is set */
    uintptr_t                  unbacked_lo; /* what the waiting windows span */
    uintptr_t                  unbacked_hi;
} ib_lease_keeper_t;

enum {
    IB_LEASE_TIMER_NONE,
    IB_LEASE_TIMER_RUNNING,
    IB_LEASE_TIMER_STOPPING,
    IB_LEASE_TIMER_FAILED   /* no thread: the word stays held, as before */
};


extern ib_lease_keeper_t ib_lease_keeper;

/* rkey_keeper.c (lock held) */
ucs_status_t ib_lease_rebind(ib_lease_kept_mr_t *k);
ib_lease_kept_mr_t *ib_lease_slot_find(void *arg);
int ib_lease_slot_alloc(ib_lease_kept_mr_t *k);
void ib_lease_slot_free(ib_lease_kept_mr_t *k);
void ib_lease_kept_free(ib_lease_kept_mr_t *k);
ucs_status_t ib_lease_kept_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *event,
                                 void *arg);
/* A lease callback argument for the registration in k's slot. */
static inline void *ib_lease_slot_arg(const ib_lease_kept_mr_t *k)
{
    return (void*)(((uintptr_t)ib_lease_keeper.slot_gen[k->slot] << 32) | k->slot);
}
/* A window over k->mr, its key handed out as the MR's (lock held; needs
 * k->mr, addr, length, access): 0, or no window and the MR's own key. */
int ib_lease_window_attach(ib_lease_kept_mr_t *k);
/* Undo the keeping of k->mr (lock held): window, lease and slot go, the MR
 * stays registered with its own key (own_rkey, its rkey before the window). */
void ib_lease_kept_discard(ib_lease_kept_mr_t *k, uint32_t own_rkey);
/* Index k under its MR (lock held): 0 on success. */
int ib_lease_kept_index(ib_lease_kept_mr_t *k);

/* verbs_lease.c: ibv_reg_mr_iova2 in verbs mode (caller checked) */
struct ibv_mr *ib_lease_verbs_reg(struct ibv_pd *pd, void *addr, size_t length,
                                  unsigned access);

/* rkey_retry.c (lock held, but ib_lease_vm_mapped) */
void ib_lease_hold(int hold);
void ib_lease_timer_start(void);
void ib_lease_mark_unbacked(ib_lease_kept_mr_t *k);
void ib_lease_unmark_unbacked(ib_lease_kept_mr_t *k);
void ib_lease_vm_mapped(ucm_event_type_t type, ucm_event_t *event, void *arg);

#endif
