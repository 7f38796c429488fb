/*
 * libuct_ib_lease: which UCX releases it may run on, and why (see
 * docs/ucx-versions.md). Owns the version decision: it is taken first, with
 * nothing but ucp_get_version() and getenv(), because every other call the
 * plugin makes into UCX (its configuration parser included) has an ABI that
 * changed after 1.13.
 */
#ifndef UCT_IB_LEASE_UCX_COMPAT_H_
#define UCT_IB_LEASE_UCX_COMPAT_H_

#include <ucs/sys/compiler_def.h>

#include <stddef.h>

BEGIN_C_DECLS

typedef enum {
    IB_LEASE_UCX_TESTED,     /* the release CI runs: everything is on */
    IB_LEASE_UCX_SAME_ABI,   /* another patch release of it: read, same
                                interfaces, not tested: on, with a warning */
    IB_LEASE_UCX_VERBS_ONLY, /* source read (1.14 .. 1.20): the registration
                                cache couplings break there, the verbs-level
                                ones do not: verbs mode, with a warning */
    IB_LEASE_UCX_UNKNOWN     /* never read: refused */
} ib_lease_ucx_support_t;

/*
 * Where registrations are leased.
 * RCACHE: the IB memory domain's registration caches are interposed (UCX
 *   1.13's ucs_rcache ABI); their regions are leased and invalidated.
 * VERBS: every registration libuct_ib makes through libibverbs is leased;
 *   a break re-binds the remote key's window and tells every UCX cache of
 *   the process through UCM's VM_UNMAPPED event (ucm_vm_munmap), which is
 *   the same from 1.13 to 1.20 (docs/ucx-versions.md).
 */
typedef enum {
    IB_LEASE_MODE_RCACHE,
    IB_LEASE_MODE_VERBS
} ib_lease_mode_t;

/* What mrlease makes of one UCX release. */
typedef struct {
    ib_lease_ucx_support_t support;
    char                   why[768]; /* one line: what is (not) covered */
} ib_lease_ucx_verdict_t;

/* The verdict for UCX major.minor.release (no UCX call). */
void ib_lease_ucx_judge(unsigned major, unsigned minor, unsigned release,
                        ib_lease_ucx_verdict_t *verdict);

/* Whether UCX_IB_LEASE_ENABLE asks for mrlease, read without UCX's parser
 * (unset, n, no, off, 0: no; anything else: yes, the parser checks it). */
int ib_lease_ucx_requested(void);

/*
 * The mode for a verdict and UCX_IB_LEASE_MODE's value (NULL: unset): auto
 * (the default) is rcache on 1.13 and verbs on 1.14..1.20; rcache on a later
 * release, or an unknown value, is refused. Returns nonzero if the plugin
 * may go on, with *mode set; else error[] says why, naming the variable.
 */
int ib_lease_ucx_mode(const ib_lease_ucx_verdict_t *verdict, const char *request,
                      ib_lease_mode_t *mode, char *error, size_t max);

/*
 * The decision, once per process: judges the running UCX and the mode asked
 * for, and says so, loudly (stderr) when mrlease was asked for and is
 * refused or not tested there. Returns nonzero if the plugin may go on, in
 * *mode; *tested_abi says whether the running UCX has the tested release's
 * interfaces (its configuration parser may then be used).
 */
int ib_lease_ucx_decide(int requested, ib_lease_mode_t *mode, int *tested_abi);

/* Whether the verdict lets the plugin go on (in some mode). */
static inline int ib_lease_ucx_covered(const ib_lease_ucx_verdict_t *verdict)
{
    return verdict->support != IB_LEASE_UCX_UNKNOWN;
}

END_C_DECLS

#endif
