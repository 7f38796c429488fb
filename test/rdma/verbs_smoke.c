/*
 * verbs_smoke [DEV_A DEV_B]: real verbs between two soft-RoCE devices.
 *   1. register a 1 MiB target on DEV_A and a source on DEV_B
 *   2. RDMA write the source into the target, verify every byte
 *   3. RDMA read the target back into a third buffer, verify every byte
 *   4. decoherence, as plain verbs have it: replace the target's pages
 *      (raw munmap + mmap MAP_FIXED), RDMA write again with the same rkey:
 *      the write completes with success and the new pages do not see it.
 *      This is the failure mrlease exists to prevent; seeing it here proves
 *      the tests can see it.
 * Exit 0 if all of that is what happened.
 */
#define _GNU_SOURCE
#include "verbs_pair.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LEN (1 << 20)

static void *map(void)
{
    void *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

static size_t mismatches(const unsigned char *p, unsigned char (*expect)(size_t))
{
    size_t i, bad = 0;
    for (i = 0; i < LEN; ++i) {
        bad += (p[i] != expect(i));
    }
    return bad;
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + 7); }
static unsigned char pattern2(size_t i) { return (unsigned char)(i * 17 + 99); }
static unsigned char zero(size_t i) { (void)i; return 0; }

int main(int argc, char **argv)
{
    const char *dev_a = (argc > 2) ? argv[1] : "rxe0";
    const char *dev_b = (argc > 2) ? argv[2] : "rxe1";
    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    unsigned char *target = map(), *source = map(), *back = map();
    struct ibv_mr *tmr, *smr, *bmr;
    mrl_pair_t pair;
    size_t i, bad;
    int st;

    if (mrl_pair_open(&pair, dev_a, dev_b, 0)) {
        return 1;
    }
    memset(target, 0, LEN);
    for (i = 0; i < LEN; ++i) {
        source[i] = pattern(i);
    }
    tmr = ibv_reg_mr(pair.a.pd, target, LEN, access);
    smr = ibv_reg_mr(pair.b.pd, source, LEN, access);
    bmr = ibv_reg_mr(pair.b.pd, back, LEN, access);
    if (!tmr || !smr || !bmr) {
        perror("ibv_reg_mr");
        return 1;
    }

    st  = mrl_pair_rdma(&pair, IBV_WR_RDMA_WRITE, source, smr, LEN, (uintptr_t)target,
                        tmr->rkey);
    bad = mismatches(target, pattern);
    printf("rdma write %s -> %s, 1 MiB: status %d, %zu bytes wrong\n", dev_b, dev_a, st, bad);
    if (st != IBV_WC_SUCCESS || bad) {
        return 1;
    }

    memset(back, 0, LEN);
    st  = mrl_pair_rdma(&pair, IBV_WR_RDMA_READ, back, bmr, LEN, (uintptr_t)target,
                        tmr->rkey);
    bad = mismatches(back, pattern);
    printf("rdma read  %s <- %s, 1 MiB: status %d, %zu bytes wrong\n", dev_b, dev_a, st, bad);
    if (st != IBV_WC_SUCCESS || bad) {
        return 1;
    }

    /* new pages under the registration, behind libc's back */
    syscall(SYS_munmap, target, LEN);
    if (syscall(SYS_mmap, target, LEN, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != (long)target) {
        perror("mmap fixed");
        return 1;
    }
    for (i = 0; i < LEN; ++i) {
        source[i] = pattern2(i);
    }
    st  = mrl_pair_rdma(&pair, IBV_WR_RDMA_WRITE, source, smr, LEN, (uintptr_t)target,
                        tmr->rkey);
    bad = mismatches(target, zero);
    printf("after remap: rdma write status %d; the new pages %s (%zu bytes changed)\n",
           st, bad ? "saw it" : "did NOT see it: decoherent, as expected without mrlease",
           bad);
    ibv_dereg_mr(tmr);
    ibv_dereg_mr(smr);
    ibv_dereg_mr(bmr);
    mrl_pair_close(&pair);
    if (st != IBV_WC_SUCCESS || bad) {
        printf("verbs_smoke: unexpected: plain verbs did not show decoherence\n");
        return 1;
    }
    printf("verbs_smoke: ok\n");
    return 0;
}
