/*
 * A private queue pair per protection domain, used only to bind type-1
 * memory windows: the bind is a work request, and it must not share a queue
 * with UCX's own traffic. The QP is connected to itself and never sends a
 * packet; binds are executed locally by the device.
 */
#ifndef UCT_IB_LEASE_MW_BINDER_H_
#define UCT_IB_LEASE_MW_BINDER_H_

#include <infiniband/verbs.h>
#include <ucs/type/status.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ib_lease_mw_binder ib_lease_mw_binder_t;

/* At most this many protection domains have a binder at once. */
#define IB_LEASE_MAX_BINDERS 64

/* Binder for pd, created at first use; NULL (with a warning, once per
 * device) when the device cannot bind type-1 windows, and NULL (with an
 * error, once) when IB_LEASE_MAX_BINDERS protection domains already have
 * one. Not thread-safe: the caller serializes (keeper lock). */
ib_lease_mw_binder_t *ib_lease_mw_binder_get(struct ibv_pd *pd);

/* pd is about to be deallocated: destroy its binder's QP and CQ (which would
 * keep the PD busy) and free the slot. No window may still be bound through
 * it. */
void                  ib_lease_mw_binder_release(struct ibv_pd *pd);

/* The PD of binder slot i (< IB_LEASE_MAX_BINDERS), or NULL if free. */
struct ibv_pd        *ib_lease_mw_binder_pd(unsigned i);

/* Protection domains that have a binder now, and that ever had one. */
unsigned              ib_lease_mw_binder_count(unsigned *total);

/* Bind mw to [addr, addr+length) of mr with the given remote access and key
 * byte taken from rkey, so that its rkey is exactly @a rkey afterwards. A
 * length of 0 unbinds: remote accesses with rkey then fail at the peer. */
ucs_status_t ib_lease_mw_bind(ib_lease_mw_binder_t *binder, struct ibv_mw *mw,
                              struct ibv_mr *mr, void *addr, size_t length,
                              int remote_access, uint32_t rkey);

#endif
