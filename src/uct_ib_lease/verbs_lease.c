/*
 * Verbs mode: registrations leased where libuct_ib makes them.
 *
 * From UCX 1.14 the registration-cache couplings of the rcache mode break
 * (UCP looks its cache up inline; 1.16 drops the IB memory domain's cache;
 * 1.17 changes the rcache ABI: docs/ucx-versions.md). What stays the same
 * from 1.13 to 1.20 is how libuct_ib registers (ibv_reg_mr_iova2,
 * ibv_dereg_mr) and UCM's VM_UNMAPPED event, to which every UCX
 * registration cache subscribes. So here every registration libuct_ib
 * makes is leased, before it pins anything (a file mapping may be adopted
 * first), and a break:
 *  - re-binds the window a remote key was handed out through (as in the
 *    rcache mode: a peer holding the key reaches the new pages);
 *  - tells every cache of the process through ucm_vm_munmap(): each drops
 *    its handle once no transfer uses it, and its next lookup registers the
 *    new pages. UCX then deregisters the old MR, which releases the lease.
 * A registration no monitor can vouch for (ucs_mrlease_cacheable()) is
 * told at once: the caches use it for the lookup under way and drop it.
 */
#define _GNU_SOURCE
#include "rkey_keeper_int.h"
#include "ucs_mrlease/engine.h" /* ucs_mrlease_ucm_feed */

#include <errno.h>
#include <stdlib.h>

struct ibv_mr *ib_lease_verbs_reg(struct ibv_pd *pd, void *addr, size_t length,
                                  unsigned access)
{
    ucs_mrlease_params_t params = {0};
    int window, cacheable = 1, err;
    uint32_t own_rkey;
    ib_lease_kept_mr_t *k;
    struct ibv_mr *mr;

    /* a registration path (every mem_reg from UCX 1.16): handle what is
     * pending first, as a lookup in a cache does (rcache_get_abi.c) */
    ib_lease_catch_up();
    window = ib_lease_keeper.windows && (access & IB_LEASE_REMOTE_ACCESS);
    pthread_mutex_lock(&ib_lease_keeper.lock);
    k = calloc(1, sizeof(*k));
    if ((k == NULL) || (ib_lease_slot_alloc(k) != 0)) {
        free(k);
        k = NULL;
        goto unleased;
    }
    k->addr   = addr;
    k->length = length;
    k->access = window ? (access | IBV_ACCESS_MW_BIND) : access;
    k->told   = 1;

    /* The lease first: a callback for it waits for this lock, and finds the
     * registration complete (or gone) */
    params.field_mask = 0;
    params.cb         = ib_lease_kept_break;
    params.arg        = ib_lease_slot_arg(k);
    if (ucs_mrlease_acquire(ib_lease_keeper.engine, addr, length, &params,
                            &k->lease) != UCS_OK) {
        k->lease = NULL;
        ib_lease_slot_free(k);
        free(k);
        k = NULL;
        goto unleased;
    }

    mr = ib_lease_keeper.real_reg(pd, addr, length, (uintptr_t)addr, k->access);
    if ((mr == NULL) && window && (errno != EFAULT)) {
        /* the device may refuse MW_BIND: the MR keeps its own key */
        k->access = access;
        window    = 0;
        mr        = ib_lease_keeper.real_reg(pd, addr, length, (uintptr_t)addr,
                                             access);
    }
    if (mr == NULL) {
        err = errno;
        ib_lease_slot_free(k);
        ib_lease_kept_free(k); /* releases the lease */
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        if (err == EFAULT) {
            ucs_diag("mrlease: cannot register %p..%p: not mapped (unmapped "
                     "for good?)", addr, UCS_PTR_BYTE_OFFSET(addr, length));
        }
        errno = err;
        return NULL;
    }
    k->mr      = mr;
    k->backing = mr;
    own_rkey   = mr->rkey;
    if (window && (ib_lease_window_attach(k) != 0)) {
        ucs_diag("mrlease: registration %p..%p keeps its own remote key: a "
                 "peer holding it is not moved to new pages",
                 addr, UCS_PTR_BYTE_OFFSET(addr, length));
    }
    if (ib_lease_kept_index(k) != 0) {
        /* cannot be found at deregistration: not leased */
        ib_lease_kept_discard(k, own_rkey);
        k         = NULL;
        cacheable = 0;
        ++ib_lease_keeper.counters.unleased;
        pthread_mutex_unlock(&ib_lease_keeper.lock);
        goto tell;
    }
    ++ib_lease_keeper.counters.verbs_leased;
    cacheable = ucs_mrlease_cacheable(k->lease);
    if (!cacheable) {
        ucs_mrlease_note_uncached(k->lease);
    }
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    goto tell;

unleased:
    /* No lease: registered as asked, and no cache may keep it */
    pthread_mutex_unlock(&ib_lease_keeper.lock);
    mr = ib_lease_keeper.real_reg(pd, addr, length, (uintptr_t)addr, access);
    if (mr == NULL) {
        return NULL;
    }
    ucs_diag("mrlease: no lease for %p..%p: registered for this use only",
             addr, UCS_PTR_BYTE_OFFSET(addr, length));
    __atomic_add_fetch(&ib_lease_keeper.counters.unleased, 1, __ATOMIC_RELAXED);
    cacheable = 0;

tell:
    if (!cacheable) {
        /* inside a cache's mem_reg: its handler queues the range, and the
         * lookup after this one drops the registration */
        ucs_mrlease_ucm_feed((uintptr_t)addr, (uintptr_t)addr + length);
    }
    return mr;
}
