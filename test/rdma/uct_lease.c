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
#include "uct_pair.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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
