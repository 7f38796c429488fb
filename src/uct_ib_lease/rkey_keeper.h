/*
 * Remote keys that survive re-registration.
 *
 * A peer may hold the rkey of a registration for as long as it likes (an MPI
 * window). Re-registering new pages gives a new rkey, and rxe cannot
 * re-translate an MR in place (ibv_rereg_mr with CHANGE_TRANSLATION: EINVAL).
 * So every remotely accessible registration that UCX's IB transports make is
 * handed out through a type-1 memory window: UCX's MR is registered with
 * MW_BIND, the window is bound over it, and the MR's rkey field is replaced by
 * the window's. When the memory changes, the same range is registered again
 * on its new pages and the window is re-bound there with the same key, so the
 * peer's rkey now reaches the new pages. While the range is not mapped, the
 * window is unbound: a peer's access fails loudly (remote access error),
 * never lands in pages the application has let go.
 */
#ifndef UCT_IB_LEASE_RKEY_KEEPER_H_
#define UCT_IB_LEASE_RKEY_KEEPER_H_

#include <ucs_mrlease/mrlease.h>
#include <stdint.h>

typedef struct ib_lease_keeper_counters {
    uint64_t kept;     /* registrations handed out through a window */
    uint64_t rebound;  /* windows moved to new pages */
    uint64_t unbacked; /* registrations whose memory is not mapped right now */
    uint64_t lost;     /* ...for longer than a second (reported once each) */
    uint64_t waited_for_changes; /* re-binds that waited for a hooked call's
                                    change to be made first (> 1 ms) */
    uint64_t zap_waited;     /* re-binds that waited for proof that a raw
                                madvise was done (zap_witness.h) */
    uint64_t zap_unseen;     /* ...and were made without it, after
                                IB_LEASE_ZAP_WAIT_SEC (warned once) */
    uint64_t device_refused; /* windows not re-bound: a device's memory (a
                                verbs queue) is mapped where theirs was */
    /* verbs mode (verbs_lease.c) */
    uint64_t verbs_leased;   /* registrations leased at libibverbs */
    uint64_t told;           /* breaks told to UCX's caches (ucm_vm_munmap) */
    uint64_t unleased;       /* registrations no lease could be taken for:
                                told at once, so no cache keeps them */
} ib_lease_keeper_counters_t;

/* Non-zero while some window waits for its memory to be mapped again. The
 * keeper holds the engine's pending word whenever a re-bind attempt is due:
 * at once when a window is marked (from whichever thread), then raised by
 * its timer thread at the next attempt's time. Attempts back off while the
 * memory stays away, and in between the catch-up stays one load. */
extern volatile uint32_t ib_lease_keeper_unbacked;

/* Start keeping remote keys for registrations made by libuct_ib (windows:
 * hand remote keys out through memory windows); in verbs mode, lease every
 * registration libuct_ib makes and tell UCX's caches of each break. */
void ib_lease_keeper_enable(ucs_mrlease_engine_t *engine, int verbs_mode,
                            int windows);

/* Slow path of the catch-up, while the keeper holds the pending word:
 * re-bind windows whose memory is back. */
void ib_lease_keeper_retry(void);

/* Registrations kept right now (0: nothing refers to the engine). */
unsigned ib_lease_keeper_count(void);

/* A registration cache was destroyed (an IB memory domain is closing, its
 * PD is next): release the binders of PDs that no kept registration uses. */
void ib_lease_keeper_release_idle_binders(void);

/* Stop keeping (the engine goes away): only once the count is 0; joins
 * the timer thread. */
void ib_lease_keeper_disable(void);

void ib_lease_keeper_counters_get(ib_lease_keeper_counters_t *counters);

#endif
