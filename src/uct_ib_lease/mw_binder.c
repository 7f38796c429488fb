#include "mw_binder.h"

#include <ucs/debug/log_def.h>
#include "ib_lease.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define IB_LEASE_BIND_TIMEOUT 5.0 /* seconds; a local operation, normally µs */

struct ib_lease_mw_binder {
    struct ibv_pd *pd;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    int           usable;
};

/* Slots are freed when their PD is deallocated (ibv_dealloc_pd, interposed
 * in rkey_keeper.c) and reused; pd == NULL marks a free one. */
static ib_lease_mw_binder_t ib_lease_binders[IB_LEASE_MAX_BINDERS];
static unsigned             ib_lease_num_binders;   /* slots in use */
static unsigned             ib_lease_total_binders; /* ever opened */
static int                  ib_lease_binders_full_said;

static int ib_lease_binder_connect_self(ib_lease_mw_binder_t *b)
{
    struct ibv_port_attr port;
    struct ibv_qp_attr attr;
    union ibv_gid gid;

    if (ibv_query_port(b->pd->context, 1, &port)) {
        return errno;
    }
    memset(&attr, 0, sizeof(attr));
    attr.qp_state        = IBV_QPS_INIT;
    attr.port_num        = 1;
    if (ibv_modify_qp(b->qp, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                    IBV_QP_ACCESS_FLAGS)) {
        return errno;
    }

    memset(&attr, 0, sizeof(attr));
    attr.qp_state           = IBV_QPS_RTR;
    attr.path_mtu           = port.active_mtu;
    attr.dest_qp_num        = b->qp->qp_num;
    attr.max_dest_rd_atomic = 1;
    attr.min_rnr_timer      = 12;
    attr.ah_attr.port_num   = 1;
    if (port.link_layer == IBV_LINK_LAYER_ETHERNET) {
        if (ibv_query_gid(b->pd->context, 1, 0, &gid)) {
            return errno;
        }
        attr.ah_attr.is_global      = 1;
        attr.ah_attr.grh.dgid       = gid;
        attr.ah_attr.grh.hop_limit  = 1;
    } else {
        attr.ah_attr.dlid = port.lid;
    }
    if (ibv_modify_qp(b->qp, &attr, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                                    IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) {
        return errno;
    }

    memset(&attr, 0, sizeof(attr));
    attr.qp_state      = IBV_QPS_RTS;
    attr.timeout       = 14;
    attr.retry_cnt     = 7;
    attr.rnr_retry     = 7;
    attr.max_rd_atomic = 1;
    if (ibv_modify_qp(b->qp, &attr, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                    IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                    IBV_QP_MAX_QP_RD_ATOMIC)) {
        return errno;
    }
    return 0;
}

static const char *ib_lease_binder_open(ib_lease_mw_binder_t *b, struct ibv_pd *pd)
{
    struct ibv_qp_init_attr init = {0};
    struct ibv_device_attr dev;

    b->pd = pd;
    if (ibv_query_device(pd->context, &dev)) {
        return "ibv_query_device failed";
    }
    if (!(dev.device_cap_flags & IBV_DEVICE_MEM_WINDOW)) {
        return "the device has no type-1 memory windows";
    }
    b->cq = ibv_create_cq(pd->context, 4, NULL, NULL, 0);
    if (b->cq == NULL) {
        return "cannot create a CQ";
    }
    init.send_cq          = b->cq;
    init.recv_cq          = b->cq;
    init.qp_type          = IBV_QPT_RC;
    init.cap.max_send_wr  = 4;
    init.cap.max_recv_wr  = 1;
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    b->qp = ibv_create_qp(pd, &init);
    if (b->qp == NULL) {
        return "cannot create an RC QP";
    }
    if (ib_lease_binder_connect_self(b) != 0) {
        return "cannot connect the binding QP to itself";
    }
    b->usable = 1;
    return NULL;
}

static void ib_lease_binder_close(ib_lease_mw_binder_t *b)
{
    if ((b->qp != NULL) && ibv_destroy_qp(b->qp)) {
        ucs_warn("mrlease: destroying the window binding QP failed: %m");
    }
    if ((b->cq != NULL) && ibv_destroy_cq(b->cq)) {
        ucs_warn("mrlease: destroying the window binding CQ failed: %m");
    }
    memset(b, 0, sizeof(*b));
}

ib_lease_mw_binder_t *ib_lease_mw_binder_get(struct ibv_pd *pd)
{
    ib_lease_mw_binder_t *b = NULL;
    const char *why;
    unsigned i;

    for (i = 0; i < IB_LEASE_MAX_BINDERS; ++i) {
        if (ib_lease_binders[i].pd == pd) {
            return ib_lease_binders[i].usable ? &ib_lease_binders[i] : NULL;
        }
        if ((b == NULL) && (ib_lease_binders[i].pd == NULL)) {
            b = &ib_lease_binders[i];
        }
    }
    if (b == NULL) {
        if (!ib_lease_binders_full_said) {
            ib_lease_binders_full_said = 1;
            ucs_error("mrlease: more than %d protection domains at once "
                      "(IB_LEASE_MAX_BINDERS): registrations on %s and any "
                      "further ones keep plain remote keys, which stop working "
                      "for peers after the memory under them changes",
                      IB_LEASE_MAX_BINDERS,
                      ibv_get_device_name(pd->context->device));
        }
        return NULL;
    }
    ++ib_lease_num_binders;
    ++ib_lease_total_binders;
    why = ib_lease_binder_open(b, pd);
    if (why != NULL) {
        ucs_warn("mrlease: %s: %s: remote keys are NOT kept across re-registration "
                 "on this device; a peer that holds one (an MPI window) gets a "
                 "remote access error after the memory under it changes",
                 ibv_get_device_name(pd->context->device), why);
        /* the slot stays taken (pd set, unusable) until the PD goes, so that
         * the warning is not repeated for every registration */
        if (b->qp != NULL) {
            ibv_destroy_qp(b->qp);
            b->qp = NULL;
        }
        if (b->cq != NULL) {
            ibv_destroy_cq(b->cq);
            b->cq = NULL;
        }
    }
    return b->usable ? b : NULL;
}

void ib_lease_mw_binder_release(struct ibv_pd *pd)
{
    unsigned i;

    for (i = 0; i < IB_LEASE_MAX_BINDERS; ++i) {
        if (ib_lease_binders[i].pd == pd) {
            ib_lease_binder_close(&ib_lease_binders[i]);
            --ib_lease_num_binders;
            return;
        }
    }
}

struct ibv_pd *ib_lease_mw_binder_pd(unsigned i)
{
    return ib_lease_binders[i].pd;
}

unsigned ib_lease_mw_binder_count(unsigned *total)
{
    if (total != NULL) {
        *total = ib_lease_total_binders;
    }
    return ib_lease_num_binders;
}

ucs_status_t ib_lease_mw_bind(ib_lease_mw_binder_t *binder, struct ibv_mw *mw,
                              struct ibv_mr *mr, void *addr, size_t length,
                              int remote_access, uint32_t rkey)
{
    struct ibv_send_wr wr = {0}, *bad_wr;
    double deadline;
    struct ibv_wc wc;
    int n;

    /* Posted directly (not ibv_bind_mw, which always moves to the next key
     * byte) so that the window keeps the key its peers already hold. */
    wr.opcode                            = IBV_WR_BIND_MW;
    wr.send_flags                        = IBV_SEND_SIGNALED;
    wr.bind_mw.mw                        = mw;
    wr.bind_mw.rkey                      = rkey;
    wr.bind_mw.bind_info.mr              = mr;
    wr.bind_mw.bind_info.addr            = (uintptr_t)addr;
    wr.bind_mw.bind_info.length          = length;
    wr.bind_mw.bind_info.mw_access_flags = remote_access;
    if (ibv_post_send(binder->qp, &wr, &bad_wr)) {
        ucs_error("mrlease: binding memory window 0x%x failed: %m", rkey);
        return UCS_ERR_IO_ERROR;
    }

    deadline = ib_lease_now() + IB_LEASE_BIND_TIMEOUT;
    while ((n = ibv_poll_cq(binder->cq, 1, &wc)) == 0) {
        if (ib_lease_now() > deadline) {
            ucs_error("mrlease: binding memory window 0x%x: no completion in %.0f s",
                      rkey, IB_LEASE_BIND_TIMEOUT);
            return UCS_ERR_TIMED_OUT;
        }
    }
    if ((n < 0) || (wc.status != IBV_WC_SUCCESS)) {
        binder->usable = 0; /* the QP is in error now: no more binds on it */
        ucs_error("mrlease: binding memory window 0x%x to %p+%zu failed: %s", rkey,
                  addr, length, (n < 0) ? "poll error" : ibv_wc_status_str(wc.status));
        return UCS_ERR_IO_ERROR;
    }
    mw->rkey = rkey;
    return UCS_OK;
}
