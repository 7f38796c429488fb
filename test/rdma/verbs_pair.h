/*
 * Two RC queue pairs on two soft-RoCE devices in one process, connected to
 * each other: enough real verbs to register memory, RDMA write and read, and
 * watch what a registration does when the memory under it changes.
 */
#ifndef MRL_VERBS_PAIR_H_
#define MRL_VERBS_PAIR_H_

#include <infiniband/verbs.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    struct ibv_context *ctx;
    struct ibv_pd      *pd;
    struct ibv_cq      *cq;
    struct ibv_qp      *qp;
    union ibv_gid      gid;
    enum ibv_mtu       mtu;
} mrl_side_t;

typedef struct {
    mrl_side_t a, b; /* a: target, b: initiator */
} mrl_pair_t;

/* Open devices dev_a and dev_b (e.g. "rxe0", "rxe1"), GID index gid_index,
 * and connect their QPs. Returns 0, or -1 with a message on stderr. */
int  mrl_pair_open(mrl_pair_t *pair, const char *dev_a, const char *dev_b,
                   int gid_index);
void mrl_pair_close(mrl_pair_t *pair);

/* Post one RDMA op from b (local MR lmr at laddr) to a (raddr, rkey) and wait
 * for its completion. Returns the work completion status, or -1. */
int  mrl_pair_rdma(mrl_pair_t *pair, enum ibv_wr_opcode op, void *laddr,
                   struct ibv_mr *lmr, size_t len, uint64_t raddr, uint32_t rkey);

#endif
