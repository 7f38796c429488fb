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
    double   kmod_hold;             /* seconds, 0: off */
} ucs_mrlease_config_t;

extern ucs_config_field_t ucs_mrlease_config_table[];

/* Starts the line that ucs_mrlease_config_print() adds when a value is bad;
 * mrlease-ctl config exits non-zero when it sees it. */
#define UCS_MRLEASE_CONFIG_ERROR_MARK "# ERROR:"

/*
 * Fill from the environment (and ucx.conf). A bad value is an error naming
 * the variable, the value and the accepted range; on success every number is
 * within the range documented in engine_config.c (queue_len 16..2^20,
 * flease_signal SIGRTMIN..SIGRTMAX, rearm interval 1 ms..10 s, stall timeout
 * 1 ms..1 h, kmod hold 0..1 s), so converting them to ms or ns cannot overflow.
 */
ucs_status_t ucs_mrlease_config_read(ucs_mrlease_config_t *config);
void         ucs_mrlease_config_release(ucs_mrlease_config_t *config);

#endif
