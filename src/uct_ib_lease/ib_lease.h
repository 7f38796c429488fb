/*
 * libuct_ib_lease: configuration (UCX_IB_LEASE_*).
 */
#ifndef UCT_IB_LEASE_H_
#define UCT_IB_LEASE_H_

#include <ucs_mrlease/mrlease.h>
#include <ucs/config/parser.h>
#include <ucs/debug/log_def.h>

typedef struct ucs_ib_lease_config {
    int enable;
    int summary;
    int async;
} ucs_ib_lease_config_t;

ucs_status_t ucs_ib_lease_config_read(ucs_ib_lease_config_t *config);

#endif
