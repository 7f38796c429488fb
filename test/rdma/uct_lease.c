/*
 * uct_lease: UCT-level operations (rc_verbs between rxe0 and rxe1, one
 * process) on memory that changes under its registrations. Run plain, or with
 * libuct_ib_lease preloaded and UCX_IB_LEASE_ENABLE=y; every byte is checked.
 *
 *   uct_lease SCENARIO
 *     put       target memory remapped between put_zcopy rounds (old rkey kept)
 *     get       target memory remapped and refilled between get_zcopy rounds
 *     atomic    target word's page dropped (DONTNEED) / remapped between
 *               fetch-add and compare-swap
 *     source    source memory remapped between rounds (registered per round,
 *               as UCP does through the registration cache)
 *     inflight  source remapped while 16 put_zcopy are in flight; they must
 *               complete, and the next round must carry the new bytes
 *     rebind    target unmapped, and left so until the engine's own thread has
 *               seen it (its window unbound), then mapped again behind libc's
 *               back (no event at all); after the next registration lookup a
 *               put with the old key must land in the new pages
 *     nolookup  target's pages replaced (raw mremap of new pages over it),
 *               then no call into UCX at all before a put with the old key:
 *               only the engine's own threads can have re-bound the window
 *     device    target unmapped, then a verbs queue (librxe's mapping of
 *               /dev/infiniband/uverbs0) placed at its address: the old key
 *               must not be re-bound over it (a put with it must fail)
 *     gone      target unmapped for good: a put with the old key must fail
 *               with an error, a put to other memory on another endpoint must
 *               still work, and registering the gone range must fail
 *
 * An optional second argument sets the rounds of put, get and atomic
 * (default 8): many rounds widen the chance to hit a race with the engine's
 * dispatcher thread.
 *
 * Prints "uct_lease: SCENARIO: ..." and "uct_lease: ok" or "uct_lease: FAILED".
 * Needs UCX_IB_GID_INDEX=0 on soft-RoCE.
 */
#define _GNU_SOURCE
#include <uct/api/uct.h>
#include <infiniband/verbs.h>
#include <ucs/async/async_fwd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LEN   (1 << 20)
#define CHUNK (64 * 1024)

typedef struct {
    uct_component_h    comp;
    uct_md_h           md;
    uct_worker_h       worker;
    uct_iface_h        iface;
    uct_iface_attr_t   attr;
    uct_device_addr_t  *dev_addr;
} side_t;

typedef struct {
    uct_ep_h ep_a, ep_b; /* a: on the target side, b: initiator */
} conn_t;

static ucs_async_context_t *async;
static side_t a, b;       /* a: target (rxe0), b: initiator (rxe1) */
static ucs_status_t ep_error = UCS_OK;
static long wrong;
static int rounds = 8;
static int failed;

#define CHECK(_cond, ...) \
    do { \
        if (!(_cond)) { \
            fprintf(stderr, "uct_lease: " __VA_ARGS__); \
            fprintf(stderr, "\n"); \
            exit(2); \
        } \
    } while (0)

static ucs_status_t on_ep_error(void *arg, uct_ep_h ep, ucs_status_t status)
{
    ep_error = status;
    return UCS_OK;
}

static void side_open(side_t *s, const char *dev)
{
    uct_component_h *comps;
    unsigned ncomps, i, j;
    uct_md_config_t *md_config;
    uct_iface_config_t *if_config;
    uct_iface_params_t params = {0};
    char tl_dev[32];

    CHECK(uct_query_components(&comps, &ncomps) == UCS_OK, "no UCT components");
    for (i = 0; (i < ncomps) && (s->md == NULL); ++i) {
        uct_component_attr_t cattr = {.field_mask = UCT_COMPONENT_ATTR_FIELD_NAME |
                                     UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT};
        uct_component_query(comps[i], &cattr);
        if (strcmp(cattr.name, "ib") && strcmp(cattr.name, "ib_lease")) {
            continue;
        }
        cattr.field_mask   = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCES;
        cattr.md_resources = alloca(cattr.md_resource_count *
                                    sizeof(*cattr.md_resources));
        uct_component_query(comps[i], &cattr);
        for (j = 0; j < cattr.md_resource_count; ++j) {
            if (!strcmp(cattr.md_resources[j].md_name, dev)) {
                CHECK(uct_md_config_read(comps[i], NULL, NULL, &md_config) == UCS_OK,
                      "md config");
                CHECK(uct_md_open(comps[i], dev, md_config, &s->md) == UCS_OK,
                      "cannot open md %s", dev);
                uct_config_release(md_config);
                s->comp = comps[i];
            }
        }
    }
    uct_release_component_list(comps);
    CHECK(s->md != NULL, "no IB memory domain %s", dev);

    CHECK(uct_worker_create(async, UCS_THREAD_MODE_SINGLE, &s->worker) == UCS_OK,
          "worker");
    CHECK(uct_md_iface_config_read(s->md, "rc_verbs", NULL, NULL, &if_config) == UCS_OK,
          "rc_verbs config");
    snprintf(tl_dev, sizeof(tl_dev), "%s:1", dev);
    params.field_mask = UCT_IFACE_PARAM_FIELD_OPEN_MODE | UCT_IFACE_PARAM_FIELD_DEVICE |
                        UCT_IFACE_PARAM_FIELD_ERR_HANDLER |
                        UCT_IFACE_PARAM_FIELD_ERR_HANDLER_ARG |
                        UCT_IFACE_PARAM_FIELD_ERR_HANDLER_FLAGS;
    params.open_mode            = UCT_IFACE_OPEN_MODE_DEVICE;
    params.mode.device.tl_name  = "rc_verbs";
    params.mode.device.dev_name = tl_dev;
    params.err_handler          = on_ep_error;
    params.err_handler_arg      = NULL;
    params.err_handler_flags    = 0;
    CHECK(uct_iface_open(s->md, s->worker, &params, if_config, &s->iface) == UCS_OK,
          "cannot open rc_verbs on %s", tl_dev);
    uct_config_release(if_config);
    CHECK(uct_iface_query(s->iface, &s->attr) == UCS_OK, "iface query");
    uct_iface_progress_enable(s->iface, UCT_PROGRESS_SEND | UCT_PROGRESS_RECV);
    s->dev_addr = malloc(s->attr.device_addr_len);
    CHECK(uct_iface_get_device_address(s->iface, s->dev_addr) == UCS_OK, "dev addr");
}

static uct_ep_h ep_new(side_t *s)
{
    uct_ep_params_t p = {.field_mask = UCT_EP_PARAM_FIELD_IFACE, .iface = s->iface};
    uct_ep_h ep;

    CHECK(uct_ep_create(&p, &ep) == UCS_OK, "ep create");
    return ep;
}

static void connect_pair(conn_t *c)
{
    void *addr_a = malloc(a.attr.ep_addr_len), *addr_b = malloc(b.attr.ep_addr_len);

    c->ep_a = ep_new(&a);
    c->ep_b = ep_new(&b);
    CHECK(uct_ep_get_address(c->ep_a, addr_a) == UCS_OK, "ep addr");
    CHECK(uct_ep_get_address(c->ep_b, addr_b) == UCS_OK, "ep addr");
    CHECK(uct_ep_connect_to_ep(c->ep_a, b.dev_addr, addr_b) == UCS_OK, "connect");
    CHECK(uct_ep_connect_to_ep(c->ep_b, a.dev_addr, addr_a) == UCS_OK, "connect");
    free(addr_a);
    free(addr_b);
}

static void progress(void)
{
    uct_worker_progress(a.worker);
    uct_worker_progress(b.worker);
}

static void comp_cb(uct_completion_t *self)
{
}

/* Wait for a completion, or an endpoint error; 30 s at most. */
static ucs_status_t wait_comp(uct_completion_t *comp)
{
    time_t t0 = time(NULL);

    while ((comp->count > 0) && (ep_error == UCS_OK)) {
        progress();
        if (time(NULL) - t0 > 30) {
            return UCS_ERR_TIMED_OUT;
        }
    }
    return (ep_error != UCS_OK) ? ep_error : comp->status;
}

static void flush_ep(uct_ep_h ep)
{
    uct_completion_t comp = {comp_cb, 1, UCS_OK};
    ucs_status_t status;

    while ((status = uct_ep_flush(ep, 0, &comp)) == UCS_ERR_NO_RESOURCE) {
        progress();
    }
    if (status == UCS_INPROGRESS) {
        wait_comp(&comp);
    }
}

typedef struct {
    uct_mem_h        memh;
    uct_rkey_bundle_t rkey;
} reg_t;

/* register on side s; if remote, pack the key and unpack it on the other */
static ucs_status_t reg(side_t *s, void *buf, size_t len, reg_t *r, int remote)
{
    uct_md_attr_t mattr;
    void *packed;
    ucs_status_t status;

    status = uct_md_mem_reg(s->md, buf, len, UCT_MD_MEM_ACCESS_ALL, &r->memh);
    if ((status != UCS_OK) || !remote) {
        return status;
    }
    uct_md_query(s->md, &mattr);
    packed = alloca(mattr.rkey_packed_size);
    CHECK(uct_md_mkey_pack(s->md, r->memh, packed) == UCS_OK, "mkey pack");
    CHECK(uct_rkey_unpack(s->comp, packed, &r->rkey) == UCS_OK, "rkey unpack");
    return UCS_OK;
}

static void remap(void *buf, size_t len)
{
    syscall(SYS_munmap, buf, len);
    CHECK(syscall(SYS_mmap, buf, len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == (long)buf,
          "remap failed");
}

static unsigned char pat(int it, size_t i)
{
    return (unsigned char)(i * 11 + it * 37 + 3);
}

static void fill(unsigned char *buf, int it)
{
    size_t i;

    for (i = 0; i < LEN; ++i) {
        buf[i] = pat(it, i);
    }
}

static long count_wrong(const unsigned char *buf, int it)
{
    long n = 0;
    size_t i;

    for (i = 0; i < LEN; ++i) {
        n += (buf[i] != pat(it, i));
    }
    return n;
}

/* RDMA over [local, local+len) <-> remote; one completion for all chunks */
static ucs_status_t rdma(uct_ep_h ep, int put, void *local, uct_mem_h memh,
                         uint64_t remote, uct_rkey_t rkey, size_t len, int wait)
{
    static uct_completion_t comp;
    ucs_status_t status;
    size_t off;

    comp.func   = comp_cb;
    comp.count  = 1;
    comp.status = UCS_OK;
    for (off = 0; off < len; off += CHUNK) {
        uct_iov_t iov = {(char*)local + off, CHUNK, memh, 0, 1};
        do {
            status = put ? uct_ep_put_zcopy(ep, &iov, 1, remote + off, rkey, &comp) :
                           uct_ep_get_zcopy(ep, &iov, 1, remote + off, rkey, &comp);
            if (status == UCS_ERR_NO_RESOURCE) {
                progress();
            }
        } while ((status == UCS_ERR_NO_RESOURCE) && (ep_error == UCS_OK));
        if (status == UCS_INPROGRESS) {
            ++comp.count;
        } else if (status != UCS_OK) {
            return status;
        }
    }
    --comp.count;
    return wait ? wait_comp(&comp) : UCS_OK;
}

static void *map(void)
{
    void *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap");
    memset(p, 0, LEN);
    return p;
}

/* target memory changes; the initiator keeps the old rkey */
static void scenario_put_get(conn_t *c, int put)
{
    unsigned char *t = map(), *s = map();
    reg_t rt, rs;
    int it;

    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    for (it = 0; it < rounds; ++it) {
        if (it % 2) {
            remap(t, LEN);
        }
        /* per round, as UCP's rendezvous does: a registration lookup */
        CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
        if (put) {
            fill(s, it);
        } else {
            fill(t, it);
        }
        CHECK(rdma(c->ep_b, put, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1) ==
              UCS_OK, "%s failed", put ? "put" : "get");
        wrong += count_wrong(put ? t : s, it);
        uct_md_mem_dereg(b.md, rs.memh);
    }
    printf("uct_lease: %s: %d rounds of 1 MiB, target remapped %d times under "
           "its rkey; %ld wrong bytes\n", put ? "put" : "get", rounds, rounds / 2,
           wrong);
}

static void scenario_atomic(conn_t *c)
{
    unsigned char *t = map(), *s = map();
    uint64_t *word = (uint64_t*)t, result;
    uct_completion_t comp;
    reg_t rt;
    int it;

    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    for (it = 0; it < rounds; ++it) {
        ucs_status_t st;

        if (it % 4 == 1) {
            syscall(SYS_madvise, t, LEN, MADV_DONTNEED);
        } else if (it % 4 == 3) {
            remap(t, LEN);
        }
        reg_t rs;
        CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg"); /* the lookup */
        uct_md_mem_dereg(b.md, rs.memh);
        *word = 1000 * it;

        comp = (uct_completion_t){comp_cb, 1, UCS_OK};
        st   = uct_ep_atomic64_fetch(c->ep_b, UCT_ATOMIC_OP_ADD, 5, &result,
                                     (uintptr_t)word, rt.rkey.rkey, &comp);
        if (st == UCS_INPROGRESS) {
            st = wait_comp(&comp);
        }
        CHECK(st == UCS_OK, "fetch-add: %s", ucs_status_string(st));
        wrong += (result != 1000u * it) + (*word != 1000u * it + 5);

        comp = (uct_completion_t){comp_cb, 1, UCS_OK};
        st   = uct_ep_atomic_cswap64(c->ep_b, 1000u * it + 5, 7u * it, (uintptr_t)word,
                                     rt.rkey.rkey, &result, &comp);
        if (st == UCS_INPROGRESS) {
            st = wait_comp(&comp);
        }
        CHECK(st == UCS_OK, "cswap: %s", ucs_status_string(st));
        wrong += (result != 1000u * it + 5) + (*word != 7u * it);
    }
    printf("uct_lease: atomic: %d fetch-add + %d compare-swap, target dropped or "
           "remapped %d times; %ld wrong results\n", rounds, rounds, rounds / 2,
           wrong);
}

/* the source changes; registered per round through the cache */
static void scenario_source(conn_t *c)
{
    unsigned char *t = map(), *s = map();
    reg_t rt, rs;
    int it;

    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    for (it = 0; it < 8; ++it) {
        CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
        uct_md_mem_dereg(b.md, rs.memh); /* the cache keeps it */
        if (it % 2) {
            remap(s, LEN);
        }
        fill(s, it);
        CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
        CHECK(rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1) ==
              UCS_OK, "put failed");
        wrong += count_wrong(t, it);
        uct_md_mem_dereg(b.md, rs.memh);
    }
    printf("uct_lease: source: 8 rounds, source remapped 4 times between a cached "
           "registration and its next use; %ld wrong bytes\n", wrong);
}

static void scenario_inflight(conn_t *c)
{
    unsigned char *t = map(), *s = map();
    reg_t rt, rs;
    ucs_status_t st;
    int it;

    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    for (it = 0; it < 4; ++it) {
        fill(s, 2 * it);
        CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
        /* 16 puts of 64 KiB posted, then the source changes under them */
        st = rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 0);
        CHECK(st == UCS_OK, "post: %s", ucs_status_string(st));
        remap(s, LEN);
        flush_ep(c->ep_b);
        CHECK(ep_error == UCS_OK, "in-flight puts failed: %s",
              ucs_status_string(ep_error));
        uct_md_mem_dereg(b.md, rs.memh);

        fill(s, 2 * it + 1);
        CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
        CHECK(rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1) ==
              UCS_OK, "put failed");
        wrong += count_wrong(t, 2 * it + 1);
        uct_md_mem_dereg(b.md, rs.memh);
    }
    printf("uct_lease: inflight: 4 x 16 puts completed while their source was "
           "remapped; the next round carried %ld wrong bytes\n", wrong);
}

/* The window is unbound by the engine's dispatcher thread, not by a call of
 * ours; nothing but the memory coming back happens before the next lookup. */
static void scenario_rebind(conn_t *c)
{
    unsigned char *t = map(), *s = map();
    reg_t rt, rs, rl;
    ucs_status_t st;
    int it;

    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
    for (it = 0; it < 4; ++it) {
        syscall(SYS_munmap, t, LEN);
        usleep(200000); /* no call of ours: the engine's thread sees it alone */
        CHECK(syscall(SYS_mmap, t, LEN, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == (long)t,
              "mapping the target again failed");
        /* the next call into UCX: a registration lookup, which catches up */
        CHECK(reg(&b, s, LEN, &rl, 0) == UCS_OK, "lookup");
        uct_md_mem_dereg(b.md, rl.memh);
        fill(s, it);
        st = rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1);
        CHECK(st == UCS_OK, "rebind: round %d: put with the old key after the "
              "memory came back: %s", it, ucs_status_string(st));
        wrong += count_wrong(t, it);
    }
    printf("uct_lease: rebind: 4 rounds, target unmapped (seen by the engine's "
           "thread) and mapped again with no event; %ld wrong bytes\n", wrong);
}

/* Nothing of ours calls UCX between the change and the put: UCT's calls
 * are not interposed, so the window must have been re-bound by the engine's
 * dispatcher thread, woken by whichever monitor saw the change. */
static void scenario_nolookup(conn_t *c)
{
    unsigned char *t = map(), *s = map(), *n;
    reg_t rt, rs;
    ucs_status_t st;
    int it;

    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
    for (it = 0; it < 4; ++it) {
        n = map();
        CHECK(syscall(SYS_mremap, n, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, t) ==
              (long)t, "mremap over the target failed");
        fill(s, it);
        usleep(1000000); /* no call of ours */
        st = rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1);
        CHECK(st == UCS_OK, "nolookup: round %d: put with the old key: %s", it,
              ucs_status_string(st));
        wrong += count_wrong(t, it);
    }
    printf("uct_lease: nolookup: 4 rounds, target's pages replaced and no call "
           "into UCX before the put; %ld wrong bytes\n", wrong);
}

static void scenario_gone(conn_t *c)
{
    unsigned char *t = map(), *u = map(), *s = map();
    reg_t rt, ru, rs, rg;
    ucs_status_t put_gone, put_other, reg_gone;
    conn_t other;
    int it;

    connect_pair(&other);
    CHECK(reg(&a, t, LEN, &rt, 1) == UCS_OK, "reg target");
    CHECK(reg(&a, u, LEN, &ru, 1) == UCS_OK, "reg other target");
    CHECK(reg(&b, s, LEN, &rs, 0) == UCS_OK, "reg source");
    fill(s, 1);
    CHECK(rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1) == UCS_OK,
          "first put");

    syscall(SYS_munmap, t, LEN); /* for good */
    for (it = 0; it < 1000; ++it) {
        progress(); /* give the engine's thread a moment */
    }
    usleep(100000);
    reg_gone = reg(&a, t, LEN, &rg, 0); /* a lookup: catches up, must fail */
    fill(s, 2);
    put_gone  = rdma(c->ep_b, 1, s, rs.memh, (uintptr_t)t, rt.rkey.rkey, LEN, 1);
    ep_error  = UCS_OK;
    fill(s, 3);
    put_other = rdma(other.ep_b, 1, s, rs.memh, (uintptr_t)u, ru.rkey.rkey, LEN, 1);
    wrong    += count_wrong(u, 3);
    printf("uct_lease: gone: put with the old key: %s; put to other memory on "
           "another endpoint: %s, %ld wrong bytes; registering the gone range: %s\n",
           ucs_status_string(put_gone), ucs_status_string(put_other), wrong,
           ucs_status_string(reg_gone));
    failed |= (put_other != UCS_OK) || (reg_gone == UCS_OK);
    /* plain UCX completes the put into pages nobody has: a silent loss */
    if (getenv("MRL_EXPECT_GONE_ERROR")) {
        failed |= (put_gone == UCS_OK);
    }
}

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
static void scenario_device(conn_t *c)
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

int main(int argc, char **argv)
{
    const char *scenario = (argc > 1) ? argv[1] : "put";
    conn_t c;

    if (argc > 2) {
        rounds = atoi(argv[2]);
        CHECK((rounds > 0) && (rounds <= 100000), "bad rounds '%s' (1..100000)",
              argv[2]);
    }

    CHECK(ucs_async_context_create(UCS_ASYNC_MODE_THREAD_SPINLOCK, &async) == UCS_OK,
          "async");
    side_open(&a, "rxe0");
    side_open(&b, "rxe1");
    connect_pair(&c);
    flush_ep(c.ep_b);

    if (!strcmp(scenario, "put") || !strcmp(scenario, "get")) {
        scenario_put_get(&c, !strcmp(scenario, "put"));
    } else if (!strcmp(scenario, "atomic")) {
        CHECK(b.attr.cap.atomic64.fop_flags & UCS_BIT(UCT_ATOMIC_OP_ADD),
              "rc_verbs on rxe1 has no 64-bit fetch-add");
        scenario_atomic(&c);
    } else if (!strcmp(scenario, "source")) {
        scenario_source(&c);
    } else if (!strcmp(scenario, "inflight")) {
        scenario_inflight(&c);
    } else if (!strcmp(scenario, "rebind")) {
        scenario_rebind(&c);
    } else if (!strcmp(scenario, "nolookup")) {
        scenario_nolookup(&c);
    } else if (!strcmp(scenario, "device")) {
        scenario_device(&c);
    } else if (!strcmp(scenario, "gone")) {
        scenario_gone(&c);
    } else {
        CHECK(0, "unknown scenario %s", scenario);
    }
    failed |= (wrong != 0);
    printf("uct_lease: %s\n", failed ? "FAILED" : "ok");
    fflush(stdout);
    /* no teardown (an endpoint may be in error); libraries still say goodbye */
    exit(failed ? 1 : 0);
}
