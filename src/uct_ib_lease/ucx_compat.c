/*
 * libuct_ib_lease: the UCX version decision (ucx_compat.h).
 *
 * The plugin is coupled to UCX 1.13 in ways read in the source of every
 * later release (docs/ucx-versions.md has the table, with file:line
 * evidence). Each coupling that breaks is listed below with the release that
 * breaks it; a refusal names all of those that apply to the running UCX, so
 * a user sees why, and never gets a plugin that silently does nothing.
 */
#include "ucx_compat.h"

#include <ucp/api/ucp.h>
#include <ucs/debug/log_def.h>
#include <uct/api/version.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The release CI tests: Debian 12's. */
#define IB_LEASE_UCX_TESTED_RELEASE 1
/* The newest release whose source was read for docs/ucx-versions.md. */
#define IB_LEASE_UCX_LAST_READ_MINOR 20

/* The releases on which verbs mode was also run (in the guest, by hand:
 * contrib/try-ucx-release; CI has no such UCX; docs/ucx-versions.md has
 * the figures). */
static const struct {
    unsigned minor, release;
} ib_lease_ucx_tried[] = {
    {14, 1},
    {18, 1},
    {20, 1},
};

/* A coupling of the rcache mode that a later release breaks. */
typedef struct {
    unsigned   minor; /* the 1.x release that breaks it */
    const char *what;
} ib_lease_ucx_break_t;

static const ib_lease_ucx_break_t ib_lease_ucx_breaks[] = {
    {14, "UCP looks its registration cache up with inlined code "
         "(ucs_rcache_lookup_unsafe), out of reach of an interposed "
         "ucs_rcache_get"},
    {15, "ucs_config_parser_fill_opts() takes a table entry: the "
         "UCX_IB_LEASE_*/UCX_MRLEASE_* tables are read without it"},
    {16, "the IB memory domain has no registration cache of its own: "
         "there is none to lease"},
    {17, "ucs_rcache_get() takes an alignment and the region's refcount "
         "moved"},
    {18, "mlx5 transports are a module of their own (libuct_ib_mlx5.so)"},
};

static int ib_lease_ucx_was_tried(unsigned minor, unsigned release)
{
    size_t i;

    for (i = 0; i < sizeof(ib_lease_ucx_tried) / sizeof(ib_lease_ucx_tried[0]);
         ++i) {
        if ((minor == ib_lease_ucx_tried[i].minor) &&
            (release == ib_lease_ucx_tried[i].release)) {
            return 1;
        }
    }
    return 0;
}

void ib_lease_ucx_judge(unsigned major, unsigned minor, unsigned release,
                        ib_lease_ucx_verdict_t *verdict)
{
    size_t len = 0, i;

    verdict->why[0] = '\0';
    if ((major == UCT_VERNO_MAJOR) && (minor == UCT_VERNO_MINOR) &&
        (release == IB_LEASE_UCX_TESTED_RELEASE)) {
        verdict->support = IB_LEASE_UCX_TESTED;
        snprintf(verdict->why, sizeof(verdict->why),
                 "UCX %u.%u.%u is the tested release: registration caches "
                 "leased, remote keys kept, UCP calls catch up", major, minor,
                 release);
    } else if ((major == UCT_VERNO_MAJOR) && (minor == UCT_VERNO_MINOR)) {
        verdict->support = IB_LEASE_UCX_SAME_ABI;
        snprintf(verdict->why, sizeof(verdict->why),
                 "UCX %u.%u.%u has the interfaces of the tested %u.%u.%u "
                 "(source read) but is NOT tested", major, minor, release,
                 UCT_VERNO_MAJOR, UCT_VERNO_MINOR, IB_LEASE_UCX_TESTED_RELEASE);
    } else if ((major == UCT_VERNO_MAJOR) && (minor > UCT_VERNO_MINOR) &&
               (minor <= IB_LEASE_UCX_LAST_READ_MINOR)) {
        verdict->support = IB_LEASE_UCX_VERBS_ONLY;
        len = snprintf(verdict->why, sizeof(verdict->why),
                       "UCX %u.%u.%u is NOT tested (%s): verbs mode only "
                       "(registrations leased at libibverbs, UCX's caches told "
                       "through UCM); the registration-cache mode breaks there:",
                       major, minor, release,
                       ib_lease_ucx_was_tried(minor, release) ?
                       "source read, tried once in the soft-RoCE guest" :
                       "source read, never run");
        for (i = 0; i < sizeof(ib_lease_ucx_breaks) / sizeof(ib_lease_ucx_breaks[0]);
             ++i) {
            if ((minor >= ib_lease_ucx_breaks[i].minor) &&
                (len < sizeof(verdict->why))) {
                len += snprintf(verdict->why + len, sizeof(verdict->why) - len,
                                "%s from 1.%u %s", (i == 0) ? "" : ";",
                                ib_lease_ucx_breaks[i].minor,
                                ib_lease_ucx_breaks[i].what);
            }
        }
    } else {
        verdict->support = IB_LEASE_UCX_UNKNOWN;
        snprintf(verdict->why, sizeof(verdict->why),
                 "UCX %u.%u.%u is NOT supported: this plugin is built for UCX "
                 "%u.%u and its source was read only up to %u.%u", major, minor,
                 release, UCT_VERNO_MAJOR, UCT_VERNO_MINOR, UCT_VERNO_MAJOR,
                 IB_LEASE_UCX_LAST_READ_MINOR);
    }
}

int ib_lease_ucx_mode(const ib_lease_ucx_verdict_t *verdict, const char *request,
                      ib_lease_mode_t *mode, char *error, size_t max)
{
    int rcache_abi = (verdict->support == IB_LEASE_UCX_TESTED) ||
                     (verdict->support == IB_LEASE_UCX_SAME_ABI);

    error[0] = '\0';
    if (!ib_lease_ucx_covered(verdict)) {
        snprintf(error, max, "%s", verdict->why);
        return 0;
    }
    if ((request == NULL) || !strcasecmp(request, "auto")) {
        *mode = rcache_abi ? IB_LEASE_MODE_RCACHE : IB_LEASE_MODE_VERBS;
        return 1;
    }
    if (!strcasecmp(request, "verbs")) {
        *mode = IB_LEASE_MODE_VERBS;
        return 1;
    }
    if (!strcasecmp(request, "rcache")) {
        if (!rcache_abi) {
            snprintf(error, max, "UCX_IB_LEASE_MODE=rcache needs UCX %u.%u's "
                     "registration cache: %s", UCT_VERNO_MAJOR, UCT_VERNO_MINOR,
                     verdict->why);
            return 0;
        }
        *mode = IB_LEASE_MODE_RCACHE;
        return 1;
    }
    snprintf(error, max, "UCX_IB_LEASE_MODE='%s' is not a mode; accepted: auto, "
             "rcache, verbs", request);
    return 0;
}

int ib_lease_ucx_requested(void)
{
    static const char *no[] = {"n", "no", "off", "0", "false", ""};
    const char *value       = getenv("UCX_IB_LEASE_ENABLE");
    size_t i;

    if (value == NULL) {
        return 0;
    }
    for (i = 0; i < sizeof(no) / sizeof(no[0]); ++i) {
        if (!strcasecmp(value, no[i])) {
            return 0;
        }
    }
    return 1;
}

int ib_lease_ucx_decide(int requested, ib_lease_mode_t *mode, int *tested_abi)
{
    ib_lease_ucx_verdict_t verdict;
    unsigned major, minor, release;
    char error[1024];

    ucp_get_version(&major, &minor, &release);
    ib_lease_ucx_judge(major, minor, release, &verdict);
    *tested_abi = (verdict.support == IB_LEASE_UCX_TESTED) ||
                  (verdict.support == IB_LEASE_UCX_SAME_ABI);
    if (!requested) {
        return 0;
    }
    /* Plain stderr, not ucs_error(): on another UCX even its logger's
     * layout is not ours to rely on. */
    if (!ib_lease_ucx_mode(&verdict, getenv("UCX_IB_LEASE_MODE"), mode, error,
                           sizeof(error))) {
        fprintf(stderr, "mrlease[%d]: ERROR: libuct_ib_lease NOT enabled, "
                "registrations are NOT kept coherent: %s. See "
                "docs/ucx-versions.md.\n", (int)getpid(), error);
        return 0;
    }
    switch (verdict.support) {
    case IB_LEASE_UCX_TESTED:
        ucs_debug("mrlease: %s; %s mode", verdict.why,
                  (*mode == IB_LEASE_MODE_VERBS) ? "verbs" : "rcache");
        break;
    default:
        fprintf(stderr, "mrlease[%d]: WARNING: %s. Running in %s mode. See "
                "docs/ucx-versions.md.\n", (int)getpid(), verdict.why,
                (*mode == IB_LEASE_MODE_VERBS) ? "verbs" : "rcache");
        break;
    }
    return 1;
}
