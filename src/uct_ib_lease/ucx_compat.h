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

BEGIN_C_DECLS

typedef enum {
    IB_LEASE_UCX_TESTED,    /* the release CI runs: everything is on */
    IB_LEASE_UCX_SAME_ABI,  /* another patch release of it: read, same
                               interfaces, not tested: on, with a warning */
    IB_LEASE_UCX_READ_ONLY, /* source read (1.14 .. 1.20): couplings known to
                               break there: refused */
    IB_LEASE_UCX_UNKNOWN    /* never read: refused */
} ib_lease_ucx_support_t;

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
 * The decision, once per process: judges the running UCX and says so,
 * loudly (stderr) when mrlease was asked for and is refused. Returns nonzero
 * if the plugin may go on: the running UCX is covered.
 */
int ib_lease_ucx_decide(int requested);

/* Whether the verdict lets the plugin go on. */
static inline int ib_lease_ucx_covered(const ib_lease_ucx_verdict_t *verdict)
{
    return (verdict->support == IB_LEASE_UCX_TESTED) ||
           (verdict->support == IB_LEASE_UCX_SAME_ABI);
}

END_C_DECLS

#endif
