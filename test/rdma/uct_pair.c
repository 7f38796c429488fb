/*
 * The UCT pair of uct_lease (uct_pair.h).
 */
#define _GNU_SOURCE
#include "uct_pair.h"

#include <alloca.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

ucs_async_context_t *async;
side_t a, b;
ucs_status_t ep_error = UCS_OK;
long wrong;
int rounds = 8;
int failed;

static ucs_status_t on_ep_error(void *arg, uct_ep_h ep, ucs_status_t status)
{
    ep_error = status;
    return UCS_OK;
}

void side_open(side_t *s, const char *dev)
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

uct_ep_h ep_new(side_t *s)
{
    uct_ep_params_t p = {.field_mask = UCT_EP_PARAM_FIELD_IFACE, .iface = s->iface};
    uct_ep_h ep;

    CHECK(uct_ep_create(&p, &ep) == UCS_OK, "ep create");
    return ep;
}

void connect_pair(conn_t *c)
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

void progress(void)
{
    uct_worker_progress(a.worker);
    uct_worker_progress(b.worker);
}

void comp_cb(uct_completion_t *self)
{
}

/* Wait for a completion, or an endpoint error; 30 s at most. */
ucs_status_t wait_comp(uct_completion_t *comp)
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

void flush_ep(uct_ep_h ep)
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

/* register on side s; if remote, pack the key and unpack it on the other */
ucs_status_t reg(side_t *s, void *buf, size_t len, reg_t *r, int remote)
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

/*
 * New zeroed pages at the same address by one raw mmap(MAP_FIXED) over the
 * live range: the kernel unmaps the old pages inside the call (the same
 * userfaultfd UNMAP and kernel invalidation a munmap makes). A munmap then
 * mmap(MAP_FIXED) would leave a hole in which another thread's mapping (a
 * verbs queue, a UCX memory pool) can land, to be clobbered by the fixed
 * mapping and later unmapped by its owner from under the test (seen once:
 * fill() faulted after the inflight scenario's remap). The rebind and gone
 * scenarios make that hole on purpose.
 */
void remap(void *buf, size_t len)
{
    CHECK(syscall(SYS_mmap, buf, len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == (long)buf,
          "remap failed");
}

unsigned char pat(int it, size_t i)
{
    return (unsigned char)(i * 11 + it * 37 + 3);
}

void fill(unsigned char *buf, int it)
{
    size_t i;

    for (i = 0; i < LEN; ++i) {
        buf[i] = pat(it, i);
    }
}

long count_wrong(const unsigned char *buf, int it)
{
    long n = 0;
    size_t i;

    for (i = 0; i < LEN; ++i) {
        n += (buf[i] != pat(it, i));
    }
    return n;
}

/* RDMA over [local, local+len) <-> remote; one completion for all chunks */
ucs_status_t rdma(uct_ep_h ep, int put, void *local, uct_mem_h memh,
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

void *map(void)
{
    void *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap");
    memset(p, 0, LEN);
    return p;
}
