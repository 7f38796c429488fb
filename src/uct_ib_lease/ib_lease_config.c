#include "ib_lease.h"

#include <ucs_mrlease/config_env.h>

#include <stddef.h>

/* Read first, without the parser, by ucx_compat.c (which decides on it);
 * listed here for the documentation and so that UCX sees it used. */
static const char *ucs_ib_lease_mode_names[] = {"auto", "rcache", "verbs", NULL};

static ucs_config_field_t ucs_ib_lease_config_table[] = {
    {"ENABLE", "n",
     "Keep the registrations of UCX's IB transports coherent with the lease\n"
     "engine (needs libuct_ib_lease.so preloaded; contrib/mpirun-mrlease does\n"
     "both). With n, the library passes every call straight through.",
     offsetof(ucs_ib_lease_config_t, enable), UCS_CONFIG_TYPE_BOOL},

    {"SUMMARY", "y",
     "Print one line per process at exit: decoherence events caught, IB\n"
     "registrations invalidated and restored.",
     offsetof(ucs_ib_lease_config_t, summary), UCS_CONFIG_TYPE_BOOL},

    {"ASYNC", "y",
     "Handle decoherence reported by the kernel (userfaultfd, file lease breaks)\n"
     "in the lease engine's own thread as soon as it arrives, so that another\n"
     "process's file change is released as soon as no transfer uses the old\n"
     "pages, even while the application is not calling MPI. With n, it is\n"
     "handled at the next registration lookup (a held file change then waits\n"
     "up to UCX_MRLEASE_FLEASE_STALL_TIMEOUT).",
     offsetof(ucs_ib_lease_config_t, async), UCS_CONFIG_TYPE_BOOL},

    {"KEEP_RKEYS", "y",
     "Hand out remote keys through type-1 memory windows, re-bound to the new\n"
     "pages when memory changes, so that a peer holding a key (an MPI window,\n"
     "a rendezvous in flight) keeps reaching the right memory. Costs one\n"
     "window bind per registration. Devices without type-1 windows fall back\n"
     "to plain keys, with a warning.",
     offsetof(ucs_ib_lease_config_t, keep_rkeys), UCS_CONFIG_TYPE_BOOL},

    {"MODE", "auto",
     "Where registrations are leased. rcache: the IB memory domain's registration\n"
     "caches are interposed (UCX 1.13 only). verbs: every registration UCX's IB\n"
     "transports make is leased at libibverbs, and UCX's caches are told of each\n"
     "change through UCM's memory events (UCX 1.13 to 1.20). auto: rcache on 1.13,\n"
     "verbs on later releases (docs/ucx-versions.md).",
     offsetof(ucs_ib_lease_config_t, mode), UCS_CONFIG_TYPE_ENUM(ucs_ib_lease_mode_names)},

    {NULL}
};

/* UCX's parser only on the release built for (ucs_mrlease_config_use_ucx_parser):
 * another release's parser has another ABI. The fields are flags: nothing to
 * release. */
ucs_status_t ucs_ib_lease_config_read(ucs_ib_lease_config_t *config)
{
    if (ucs_mrlease_config_ucx_parser()) {
        return ucs_config_parser_fill_opts(config, ucs_ib_lease_config_table, "UCX_",
                                           "IB_LEASE_", 0);
    }
    return ucs_mrlease_config_env_fill(config, ucs_ib_lease_config_table,
                                       "UCX_IB_LEASE_", 0);
}
