#include "ib_lease.h"

#include <stddef.h>

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

    {NULL}
};

ucs_status_t ucs_ib_lease_config_read(ucs_ib_lease_config_t *config)
{
    return ucs_config_parser_fill_opts(config, ucs_ib_lease_config_table, "UCX_",
                                       "IB_LEASE_", 0);
}
