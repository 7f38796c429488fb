/*
 * UCX_MRLEASE_* configuration, parsed by the UCS config parser.
 */
#ifndef UCS_MRLEASE_CONFIG_H_
#define UCS_MRLEASE_CONFIG_H_

#include <ucs/config/parser.h>

typedef struct ucs_mrlease_config {
    uint64_t monitors;             /* bitmap of ucs_mrlease_monitor_id_t */
    unsigned queue_len;
    int      flease_signal;
    int      flease_adopt;
    double   flease_rearm_interval; /* seconds */
    double   flease_stall_timeout;  /* seconds */
    int      uffd_fork;
    int      ctl_socket;
} ucs_mrlease_config_t;

extern ucs_config_field_t ucs_mrlease_config_table[];

/* Fill from the environment; a bad value is an error naming the variable. */
ucs_status_t ucs_mrlease_config_read(ucs_mrlease_config_t *config);
void         ucs_mrlease_config_release(ucs_mrlease_config_t *config);

#endif
