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

/* Binder for pd, created at first use; NULL (with a warning, once per
 * device) when the device cannot bind type-1 windows. Not thread-safe: the
 * caller serializes. */
ib_lease_mw_binder_t *ib_lease_mw_binder_get(struct ibv_pd *pd);
void                  ib_lease_mw_binder_destroy_all(void);

/* Bind mw to [addr, addr+length) of mr with the given remote access and key
 * byte taken from rkey, so that its rkey is exactly @a rkey afterwards. A
 * length of 0 unbinds: remote accesses with rkey then fail at the peer. */
ucs_status_t ib_lease_mw_bind(ib_lease_mw_binder_t *binder, struct ibv_mw *mw,
                              struct ibv_mr *mr, void *addr, size_t length,
                              int remote_access, uint32_t rkey);

#endif
