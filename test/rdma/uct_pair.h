/*
 * A UCT rc_verbs pair in one process (rxe0 the target, rxe1 the initiator),
 * and what uct_lease's scenarios share: registration with a packed and
 * unpacked key, raw-syscall remaps, patterns, chunked put/get.
 */
#ifndef MRL_TEST_UCT_PAIR_H_
#define MRL_TEST_UCT_PAIR_H_

#include <uct/api/uct.h>
#include <ucs/async/async_fwd.h>

#include <stdio.h>
#include <stdlib.h>

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

typedef struct {
    uct_mem_h        memh;
    uct_rkey_bundle_t rkey;
} reg_t;

extern ucs_async_context_t *async;
extern side_t a, b;          /* a: target (rxe0), b: initiator (rxe1) */
extern ucs_status_t ep_error; /* the last endpoint error, or UCS_OK */
extern long wrong;            /* wrong bytes seen, all scenarios */
extern int rounds;            /* of put, get and atomic */
extern int failed;

#define CHECK(_cond, ...) \
    do { \
        if (!(_cond)) { \
            fprintf(stderr, "uct_lease: " __VA_ARGS__); \
            fprintf(stderr, "\n"); \
            exit(2); \
        } \
    } while (0)

void          side_open(side_t *s, const char *dev);
uct_ep_h      ep_new(side_t *s);
void          connect_pair(conn_t *c);
void          progress(void);
/* a completion's callback: nothing (wait_comp polls its count) */
void          comp_cb(uct_completion_t *self);
/* Wait for a completion, or an endpoint error; 30 s at most. */
ucs_status_t  wait_comp(uct_completion_t *comp);
void          flush_ep(uct_ep_h ep);
/* register on side s; if remote, pack the key and unpack it on the other */
ucs_status_t  reg(side_t *s, void *buf, size_t len, reg_t *r, int remote);
/* new zeroed pages at buf, behind libc's back */
void          remap(void *buf, size_t len);
unsigned char pat(int it, size_t i);
void          fill(unsigned char *buf, int it);
long          count_wrong(const unsigned char *buf, int it);
/* RDMA over [local, local+len) <-> remote; one completion for all chunks */
ucs_status_t  rdma(uct_ep_h ep, int put, void *local, uct_mem_h memh,
                   uint64_t remote, uct_rkey_t rkey, size_t len, int wait);
void         *map(void);

/* uct_lease_device.c */
void          scenario_device(conn_t *c);

#endif
