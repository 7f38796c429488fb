#include "engine_config.h"
#include "mrlease.h"

#include <ucs/debug/log_def.h>
#include <signal.h>
#include <stddef.h>

static const char *ucs_mrlease_monitor_names[] = {
    [UCS_MRLEASE_MONITOR_UFFD]   = "uffd",
    [UCS_MRLEASE_MONITOR_UCM]    = "ucm",
    [UCS_MRLEASE_MONITOR_FLEASE] = "flease",
    [UCS_MRLEASE_MONITOR_INJECT] = "inject",
    [UCS_MRLEASE_MONITOR_LAST]   = NULL
};

ucs_config_field_t ucs_mrlease_config_table[] = {
    {"MONITORS", "uffd,ucm,flease,inject",
     "Decoherence monitors to run, any of: uffd (userfaultfd events: munmap,\n"
     "mremap, madvise, fork, also by direct syscalls and static code), ucm (UCX\n"
     "memory hooks: what passes through libc), flease (file leases on file-backed\n"
     "ranges), inject (ucs_mrlease_inject() and the mrlease-ctl socket).\n"
     "A monitor the kernel cannot provide is switched off with a warning.",
     offsetof(ucs_mrlease_config_t, monitors),
     UCS_CONFIG_TYPE_BITMAP(ucs_mrlease_monitor_names)},

    {"QUEUE_LEN", "16384",
     "Events queued between two progress calls before they are folded into one\n"
     "invalidation of every lease (never lost, only coarser). At least 16.",
     offsetof(ucs_mrlease_config_t, queue_len), UCS_CONFIG_TYPE_UINT},

    {"FLEASE_SIGNAL", "38",
     "Real-time signal the kernel sends on a file lease break. It is blocked and\n"
     "read through a signalfd in the engine's own thread, so the application's\n"
     "handlers are never touched. Must be between SIGRTMIN and SIGRTMAX.",
     offsetof(ucs_mrlease_config_t, flease_signal), UCS_CONFIG_TYPE_SIGNO},

    {"FLEASE_ADOPT", "y",
     "When no fd is given for a MAP_SHARED file mapping, re-map the same file\n"
     "pages over the range from the engine's own descriptor, so that the kernel\n"
     "grants a lease (it grants one only on the mapped file description).",
     offsetof(ucs_mrlease_config_t, flease_adopt), UCS_CONFIG_TYPE_BOOL},

    {"FLEASE_REARM_INTERVAL", "10ms",
     "How often to retry taking a file lease back after a break, while the\n"
     "other opener still holds the file.",
     offsetof(ucs_mrlease_config_t, flease_rearm_interval), UCS_CONFIG_TYPE_TIME},

    {"FLEASE_STALL_TIMEOUT", "1s",
     "Hold another process's file change at most this long if no progress call\n"
     "has even seen the break (e.g. the progress thread itself opened the file).\n"
     "Then the change goes on with a warning, and owners re-register once the\n"
     "lease is back (FILE_REARM). Once an owner is handling the break, the change\n"
     "is held until it restores (bounded by /proc/sys/fs/lease-break-time).",
     offsetof(ucs_mrlease_config_t, flease_stall_timeout), UCS_CONFIG_TYPE_TIME},

    {"UFFD_FORK", "y",
     "Ask userfaultfd for fork events (needs CAP_SYS_PTRACE; without it, fork\n"
     "is reported by the ucm monitor's atfork handler only).",
     offsetof(ucs_mrlease_config_t, uffd_fork), UCS_CONFIG_TYPE_BOOL},

    {"CTL_SOCKET", "y",
     "Listen on the abstract socket @mrlease.<pid> for mrlease-ctl (inject,\n"
     "counters). Only the same user or root is answered.",
     offsetof(ucs_mrlease_config_t, ctl_socket), UCS_CONFIG_TYPE_BOOL},

    {NULL}
};

const char *ucs_mrlease_monitor_name(ucs_mrlease_monitor_id_t id)
{
    return (id < UCS_MRLEASE_MONITOR_LAST) ? ucs_mrlease_monitor_names[id] : "?";
}

ucs_status_t ucs_mrlease_config_read(ucs_mrlease_config_t *config)
{
    ucs_status_t status;

    status = ucs_config_parser_fill_opts(config, ucs_mrlease_config_table,
                                         "UCX_", "MRLEASE_", 0);
    if (status != UCS_OK) {
        ucs_error("mrlease: invalid UCX_MRLEASE_* configuration (see above); "
                  "'mrlease-ctl config' lists the variables and their values");
        return status;
    }

    if (config->queue_len < 16) {
        ucs_error("mrlease: UCX_MRLEASE_QUEUE_LEN=%u is too small: at least 16",
                  config->queue_len);
        goto err;
    }
    if ((config->flease_signal < SIGRTMIN) || (config->flease_signal > SIGRTMAX)) {
        ucs_error("mrlease: UCX_MRLEASE_FLEASE_SIGNAL=%d is not a real-time "
                  "signal: use %d..%d", config->flease_signal, SIGRTMIN, SIGRTMAX);
        goto err;
    }
    if (!(config->flease_rearm_interval > 0)) {
        ucs_error("mrlease: UCX_MRLEASE_FLEASE_REARM_INTERVAL must be positive");
        goto err;
    }
    if (!(config->flease_stall_timeout > 0)) {
        ucs_error("mrlease: UCX_MRLEASE_FLEASE_STALL_TIMEOUT must be positive");
        goto err;
    }
    return UCS_OK;

err:
    ucs_mrlease_config_release(config);
    return UCS_ERR_INVALID_PARAM;
}

void ucs_mrlease_config_release(ucs_mrlease_config_t *config)
{
    ucs_config_parser_release_opts(config, ucs_mrlease_config_table);
}

void ucs_mrlease_config_print(FILE *stream)
{
    ucs_mrlease_config_t config;

    if (ucs_config_parser_fill_opts(&config, ucs_mrlease_config_table, "UCX_",
                                    "MRLEASE_", 1) != UCS_OK) {
        return;
    }
    ucs_config_parser_print_opts(stream, "mrlease configuration", &config,
                                 ucs_mrlease_config_table, "MRLEASE_", "UCX_",
                                 UCS_CONFIG_PRINT_CONFIG | UCS_CONFIG_PRINT_DOC |
                                 UCS_CONFIG_PRINT_HEADER);
    ucs_mrlease_config_release(&config);
}
