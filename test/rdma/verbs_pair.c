#include "verbs_pair.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static struct ibv_context *open_device(const char *name)
{
    struct ibv_device **list = ibv_get_device_list(NULL);
    struct ibv_context *ctx  = NULL;
    int i;

    if (list == NULL) {
        perror("ibv_get_device_list");
        return NULL;
    }
    for (i = 0; list[i] != NULL; ++i) {
        if (!strcmp(ibv_get_device_name(list[i]), name)) {
            ctx = ibv_open_device(list[i]);
            break;
        }
    }
    ibv_free_device_list(list);
    if (ctx == NULL) {
        fprintf(stderr, "verbs: device %s not found or cannot be opened\n", name);
    }
    return ctx;
}

static int side_open(mrl_side_t *s, const char *dev, int gid_index)
{
    struct ibv_qp_init_attr init = {0};
    struct ibv_qp_attr attr      = {0};
    struct ibv_port_attr port;

    s->ctx = open_device(dev);
    if (s->ctx == NULL) {
        return -1;
    }
    if (ibv_query_port(s->ctx, 1, &port) || ibv_query_gid(s->ctx, 1, gid_index, &s->gid)) {
        fprintf(stderr, "verbs: %s: cannot query port 1 / GID %d\n", dev, gid_index);
        return -1;
    }
    s->mtu = port.active_mtu;
    s->pd  = ibv_alloc_pd(s->ctx);
    s->cq  = ibv_create_cq(s->ctx, 64, NULL, NULL, 0);
    if ((s->pd == NULL) || (s->cq == NULL)) {
        fprintf(stderr, "verbs: %s: cannot allocate PD/CQ\n", dev);
        return -1;
    }
    init.send_cq          = s->cq;
    init.recv_cq          = s->cq;
    init.qp_type          = IBV_QPT_RC;
    init.cap.max_send_wr  = 32;
    init.cap.max_recv_wr  = 32;
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    s->qp = ibv_create_qp(s->pd, &init);
    if (s->qp == NULL) {
        fprintf(stderr, "verbs: %s: cannot create an RC QP\n", dev);
        return -1;
    }
    attr.qp_state        = IBV_QPS_INIT;
    attr.port_num        = 1;
    attr.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                           IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_LOCAL_WRITE;
    if (ibv_modify_qp(s->qp, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                    IBV_QP_ACCESS_FLAGS)) {
        fprintf(stderr, "verbs: %s: QP to INIT failed\n", dev);
        return -1;
    }
    return 0;
}

static int side_connect(mrl_side_t *s, const mrl_side_t *peer, int gid_index)
{
    struct ibv_qp_attr attr = {0};

    attr.qp_state              = IBV_QPS_RTR;
    attr.path_mtu              = (s->mtu < peer->mtu) ? s->mtu : peer->mtu;
    attr.dest_qp_num           = peer->qp->qp_num;
    attr.rq_psn                = 0;
    attr.max_dest_rd_atomic    = 4;
    attr.min_rnr_timer         = 12;
    attr.ah_attr.is_global     = 1;
    attr.ah_attr.grh.dgid      = peer->gid;
    attr.ah_attr.grh.sgid_index = gid_index;
    attr.ah_attr.grh.hop_limit = 1;
    attr.ah_attr.port_num      = 1;
    if (ibv_modify_qp(s->qp, &attr, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
                                    IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) {
        perror("verbs: QP to RTR");
        return -1;
    }
    memset(&attr, 0, sizeof(attr));
    attr.qp_state      = IBV_QPS_RTS;
    attr.timeout       = 14;
    attr.retry_cnt     = 7;
    attr.rnr_retry     = 7;
    attr.sq_psn        = 0;
    attr.max_rd_atomic = 4;
    if (ibv_modify_qp(s->qp, &attr, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                    IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                    IBV_QP_MAX_QP_RD_ATOMIC)) {
        perror("verbs: QP to RTS");
        return -1;
    }
    return 0;
}

int mrl_pair_open(mrl_pair_t *pair, const char *dev_a, const char *dev_b, int gid_index)
{
    memset(pair, 0, sizeof(*pair));
    if (side_open(&pair->a, dev_a, gid_index) || side_open(&pair->b, dev_b, gid_index) ||
        side_connect(&pair->a, &pair->b, gid_index) ||
        side_connect(&pair->b, &pair->a, gid_index)) {
        mrl_pair_close(pair);
        return -1;
    }
    return 0;
}

static void side_close(mrl_side_t *s)
{
    if (s->qp) ibv_destroy_qp(s->qp);
    if (s->cq) ibv_destroy_cq(s->cq);
    if (s->pd) ibv_dealloc_pd(s->pd);
    if (s->ctx) ibv_close_device(s->ctx);
    memset(s, 0, sizeof(*s));
}

void mrl_pair_close(mrl_pair_t *pair)
{
    side_close(&pair->b);
    side_close(&pair->a);
}

int mrl_pair_rdma(mrl_pair_t *pair, enum ibv_wr_opcode op, void *laddr,
                  struct ibv_mr *lmr, size_t len, uint64_t raddr, uint32_t rkey)
{
    struct ibv_sge sge = {(uintptr_t)laddr, (uint32_t)len, lmr->lkey};
    struct ibv_send_wr wr = {0}, *bad;
    struct ibv_wc wc;
    struct timespec t0, t;
    int n;

    wr.opcode              = op;
    wr.sg_list             = &sge;
    wr.num_sge             = 1;
    wr.send_flags          = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = raddr;
    wr.wr.rdma.rkey        = rkey;
    if (ibv_post_send(pair->b.qp, &wr, &bad)) {
        perror("verbs: ibv_post_send");
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        n = ibv_poll_cq(pair->b.cq, 1, &wc);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 30) {
            fprintf(stderr, "verbs: no completion within 30 s\n");
            return -1;
        }
    } while (n == 0);
    if (n < 0) {
        fprintf(stderr, "verbs: ibv_poll_cq failed\n");
        return -1;
    }
    return wc.status;
}
