/*
 * uct_lease's device scenario: a key's memory freed and a verbs queue put
 * in its place; the old key must not be re-bound over the queue.
 */
#define _GNU_SOURCE
#include "uct_pair.h"

#include <infiniband/verbs.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* This process's mappings of /dev/infiniband/uverbs*: librxe's queues. */
static int uverbs_maps(unsigned long (*m)[2], int max)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;

    while ((f != NULL) && (n < max) && fgets(line, sizeof(line), f)) {
        if ((sscanf(line, "%lx-%lx", &m[n][0], &m[n][1]) == 2) &&
            strstr(line, "uverbs")) {
            ++n;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}

/* The largest uverbs mapping that `before` does not have (0: none). */
static size_t uverbs_new(unsigned long (*before)[2], int nb, uintptr_t *start)
{
    unsigned long now[64][2];
    int n = uverbs_maps(now, 64), i, j, old;
    size_t best = 0;

    for (i = 0; i < n; ++i) {
        for (j = 0, old = 0; j < nb; ++j) {
            old |= (before[j][0] == now[i][0]) && (before[j][1] == now[i][1]);
        }
        if (!old && (now[i][1] - now[i][0] > best)) {
            best   = now[i][1] - now[i][0];
            *start = now[i][0];
        }
    }
    return best;
}

static struct ibv_qp *ud_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
    struct ibv_qp_init_attr attr = {.send_cq = cq, .recv_cq = cq,
                                    .cap = {1, 4096, 1, 1, 0}, .qp_type = IBV_QPT_UD};
    struct ibv_qp *qp = ibv_create_qp(pd, &attr);

    CHECK(qp != NULL, "ibv_create_qp: %m");
    return qp;
}

/* A key's memory freed, and a verbs queue of the same size put in its place
 * by the kernel (as in mpi_verify across two guests): the window must stay
 * unbound, or a peer's put with the old key lands in librxe's queue. */
void scenario_device(conn_t *c)
{
    struct ibv_device **list = ibv_get_device_list(NULL);
    struct ibv_context *ctx  = ibv_open_device(list[0]);
    struct ibv_pd *pd        = ibv_alloc_pd(ctx);
    struct ibv_cq *cq        = ibv_create_cq(ctx, 16, NULL, NULL, 0);
    unsigned long before[64][2];
    unsigned char *t, *s;
    struct ibv_qp *qp;
    uintptr_t at = 0;
    ucs_status_t st;
    size_t qlen;
    int nb;
    reg_t rt, rs;

    CHECK(cq != NULL, "verbs context on %s", ibv_get_device_name(list[0]));
    nb   = uverbs_maps(before, 64);
    qp   = ud_qp(pd, cq); /* learn its receive queue's size */
    qlen = uverbs_new(before, nb, &at);
    ibv_destroy_qp(qp);
    CHECK(qlen > 0, "a UD QP made no uverbs mapping of its own");
    t = mmap(NULL, qlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    s = map();
    CHECK((reg(&a, t, qlen, &rt, 1) == UCS_OK) && (reg(&b, s, LEN, &rs, 0) == UCS_OK),
          "reg");
    CHECK(rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, CHUNK, 1) ==
          UCS_OK, "first put");
    syscall(SYS_munmap, t, qlen);
    nb = uverbs_maps(before, 64);
    ud_qp(pd, cq); /* the kernel maps its queue in the hole: the highest fit */
    CHECK((uverbs_new(before, nb, &at) == qlen) && (at == (uintptr_t)t),
          "the new queue did not land at the freed key's address %p: nothing "
          "tested", t);
    usleep(100000); /* a re-bind attempt is due */
    uct_md_mem_dereg(b.md, rs.memh);
    CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg"); /* a lookup: the retry */
    st = rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, CHUNK, 1);
    printf("uct_lease: device: a verbs queue mapped where the key's memory was; a "
           "put with the old key: %s\n", ucs_status_string(st));
    failed |= (st == UCS_OK);
}
