#define _GNU_SOURCE
#include "engine_config.h"
#include "config_env.h"
#include "mrlease.h"

#include <ucs/debug/log_def.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

/*
 * Accepted ranges. UCS's own parsers take "inf", "10xyz", "-5" or 2^32+100
 * and pass on a silently different number, so every variable goes through
 * the strict parsers below. They name the variable, the value and the range,
 * and guarantee the ranges to the monitors (whose casts to int/ns need them).
 */
#define MRL_VAR_PREFIX     "UCX_MRLEASE_"
#define MRL_QUEUE_LEN_MIN  16
#define MRL_QUEUE_LEN_MAX  (1 << 20) /* two buffers of 48-byte entries: 96 MiB */
#define MRL_REARM_MIN_S    1e-3      /* the monitor counts whole ms */
#define MRL_REARM_MAX_S    10.0
#define MRL_STALL_MIN_S    1e-3
#define MRL_STALL_MAX_S    3600.0
#define MRL_KMOD_HOLD_MAX_S 1.0      /* mrlease.ko's MRLEASE_HOLD_MAX_US */
#define MRL_LEASE_BREAK    "/proc/sys/fs/lease-break-time"

/* Parser argument of one variable: its full name, for errors, and range. */
typedef struct {
    const char *var;
    double     min, max;
    const void *names; /* bitmap: the names */
} mrl_field_arg_t;

typedef void (*mrl_help_t)(char *buf, size_t max, const void *arg);

static int mrl_bad(const void *arg, const char *value, const char *why,
                   mrl_help_t help)
{
    const mrl_field_arg_t *a = arg;
    char accepted[256];

    help(accepted, sizeof(accepted), arg);
    ucs_error("mrlease: %s='%s' %s; accepted: %s", a->var, value, why, accepted);
    ucs_mrlease_config_error_reported(); /* for config_env.c and the printer */
    return 0;
}

static void mrl_help_uint(char *buf, size_t max, const void *arg)
{
    const mrl_field_arg_t *a = arg;

    snprintf(buf, max, "a whole number %.0f..%.0f", a->min, a->max);
}

static int mrl_read_uint(const char *buf, void *dest, const void *arg)
{
    const mrl_field_arg_t *a = arg;
    unsigned long long v;
    char *end;

    if (!isdigit((unsigned char)buf[0])) { /* "", "-5", " 5", "inf" */
        return mrl_bad(arg, buf, "is not a whole number", mrl_help_uint);
    }
    errno = 0;
    v     = strtoull(buf, &end, 10);
    if (*end != '\0') {
        return mrl_bad(arg, buf, "is not a whole number", mrl_help_uint);
    }
    if ((errno == ERANGE) || (v < a->min) || (v > a->max)) {
        return mrl_bad(arg, buf, "is out of range", mrl_help_uint);
    }
    *(unsigned*)dest = (unsigned)v;
    return 1;
}

static void mrl_time_str(double s, char *buf, size_t max)
{
    snprintf(buf, max, (s < 1) ? "%gms" : "%gs", (s < 1) ? s * 1e3 : s);
}

static void mrl_help_time(char *buf, size_t max, const void *arg)
{
    const mrl_field_arg_t *a = arg;
    char lo[32], hi[32];

    mrl_time_str(a->min, lo, sizeof(lo));
    mrl_time_str(a->max, hi, sizeof(hi));
    snprintf(buf, max, "a time %s..%s: <number>[s|ms|us|ns|m]", lo, hi);
}

static int mrl_read_time(const char *buf, void *dest, const void *arg)
{
    const mrl_field_arg_t *a = arg;
    char *unit;
    double v;

    if ((buf[0] == '\0') || isspace((unsigned char)buf[0])) {
        return mrl_bad(arg, buf, "is not a time", mrl_help_time);
    }
    v = strtod(buf, &unit);
    if (unit == buf) {
        return mrl_bad(arg, buf, "is not a time", mrl_help_time);
    }
    if (!strcmp(unit, "") || !strcmp(unit, "s")) {
    } else if (!strcmp(unit, "ms")) {
        v /= 1e3;
    } else if (!strcmp(unit, "us")) {
        v /= 1e6;
    } else if (!strcmp(unit, "ns")) {
        v /= 1e9;
    } else if (!strcmp(unit, "m")) {
        v *= 60;
    } else {
        return mrl_bad(arg, buf, "has an unknown unit", mrl_help_time);
    }
    if (!isfinite(v)) { /* inf, nan, 1e400 */
        return mrl_bad(arg, buf, "is not a finite time", mrl_help_time);
    }
    if (!((v >= a->min) && (v <= a->max))) {
        return mrl_bad(arg, buf, "is out of range", mrl_help_time);
    }
    *(double*)dest = v;
    return 1;
}

static void mrl_help_signal(char *buf, size_t max, const void *arg)
{
    snprintf(buf, max, "a real-time signal %d..%d, as a number or "
             "SIGRTMIN+n / SIGRTMAX-n", SIGRTMIN, SIGRTMAX);
}

/* "" or "+n" after SIGRTMIN ("-n" after SIGRTMAX); -1 if neither. */
static long mrl_signal_offset(const char *p, char sign)
{
    char *end;
    long n;

    if (*p == '\0') {
        return 0;
    }
    if ((*p != sign) || !isdigit((unsigned char)p[1])) {
        return -1;
    }
    errno = 0;
    n     = strtol(p + 1, &end, 10);
    return ((*end != '\0') || (errno == ERANGE) || (n > 1024)) ? -1 : n;
}

static int mrl_read_signal(const char *buf, void *dest, const void *arg)
{
    const char *p = buf;
    long n, off;
    char *end;

    if (isdigit((unsigned char)buf[0])) {
        errno = 0;
        n     = strtol(buf, &end, 10);
        if ((*end != '\0') || (errno == ERANGE)) {
            return mrl_bad(arg, buf, "is not a signal number", mrl_help_signal);
        }
    } else {
        p += strncmp(p, "SIG", 3) ? 0 : 3;
        if (!strncmp(p, "RTMIN", 5) && ((off = mrl_signal_offset(p + 5, '+')) >= 0)) {
            n = SIGRTMIN + off;
        } else if (!strncmp(p, "RTMAX", 5) &&
                   ((off = mrl_signal_offset(p + 5, '-')) >= 0)) {
            n = SIGRTMAX - off;
        } else {
            return mrl_bad(arg, buf, "is not a real-time signal", mrl_help_signal);
        }
    }
    if ((n < SIGRTMIN) || (n > SIGRTMAX)) {
        return mrl_bad(arg, buf, "is not a real-time signal", mrl_help_signal);
    }
    *(int*)dest = (int)n;
    return 1;
}

/* UCS's signal printer indexes a table that ends at SIGSYS. */
static int mrl_write_signal(char *buf, size_t max, const void *src, const void *arg)
{
    return snprintf(buf, max, "%d", *(const int*)src);
}

static void mrl_help_bool(char *buf, size_t max, const void *arg)
{
    snprintf(buf, max, "y|yes|on|1 or n|no|off|0");
}

/* Not ucs_config_sscanf_bool(): it takes on/off from UCX 1.15 only. */
static int mrl_read_bool(const char *buf, void *dest, const void *arg)
{
    static const char *yes[] = {"y", "yes", "on", "1"}, *no[] = {"n", "no", "off", "0"};
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); ++i) {
        if (!strcasecmp(buf, yes[i]) || !strcasecmp(buf, no[i])) {
            *(int*)dest = !strcasecmp(buf, yes[i]);
            return 1;
        }
    }
    return mrl_bad(arg, buf, "is not yes or no", mrl_help_bool);
}

static void mrl_help_bitmap(char *buf, size_t max, const void *arg)
{
    const mrl_field_arg_t *a = arg;

    ucs_config_help_bitmap(buf, max, a->names);
    snprintf(buf + strlen(buf), max - strlen(buf), ", at least one");
}

static int mrl_read_bitmap(const char *buf, void *dest, const void *arg)
{
    const mrl_field_arg_t *a = arg;

    *(uint64_t*)dest = 0; /* UCS's bitmap parser sets only 32 bits before 1.18 */
    if (ucs_config_sscanf_bitmap(buf, dest, a->names) != 1) {
        return mrl_bad(arg, buf, "names an unknown monitor", mrl_help_bitmap);
    }
    if (*(uint64_t*)dest == 0) { /* nothing would ever break a lease */
        return mrl_bad(arg, buf, "names no monitor", mrl_help_bitmap);
    }
    return 1;
}

static int mrl_write_bitmap(char *buf, size_t max, const void *src, const void *arg)
{
    const mrl_field_arg_t *a = arg;

    return ucs_config_sprintf_bitmap(buf, max, src, a->names);
}

/* UCS's bitmap type clones only 32 of the 64 bits. */
static ucs_status_t mrl_clone_u64(const void *src, void *dest, const void *arg)
{
    *(uint64_t*)dest = *(const uint64_t*)src;
    return UCS_OK;
}

#define MRL_TYPE(_read, _write, _clone, _help, _arg) \
    {_read, _write, _clone, ucs_config_release_nop, _help, _arg}
#define MRL_TYPE_UINT(_a)   MRL_TYPE(mrl_read_uint, ucs_config_sprintf_uint, \
                                     ucs_config_clone_uint, mrl_help_uint, _a)
#define MRL_TYPE_TIME(_a)   MRL_TYPE(mrl_read_time, ucs_config_sprintf_time, \
                                     ucs_config_clone_double, mrl_help_time, _a)
#define MRL_TYPE_SIGNAL(_a) MRL_TYPE(mrl_read_signal, mrl_write_signal, \
                                     ucs_config_clone_int, mrl_help_signal, _a)
#define MRL_TYPE_BOOL(_a)   MRL_TYPE(mrl_read_bool, ucs_config_sprintf_bool, \
                                     ucs_config_clone_int, mrl_help_bool, _a)
#define MRL_TYPE_BITMAP(_a) MRL_TYPE(mrl_read_bitmap, mrl_write_bitmap, \
                                     mrl_clone_u64, mrl_help_bitmap, _a)

static const char *ucs_mrlease_monitor_names[] = {
    [UCS_MRLEASE_MONITOR_UFFD]   = "uffd",
    [UCS_MRLEASE_MONITOR_UCM]    = "ucm",
    [UCS_MRLEASE_MONITOR_FLEASE] = "flease",
    [UCS_MRLEASE_MONITOR_INJECT] = "inject",
    [UCS_MRLEASE_MONITOR_KMOD]   = "kmod",
    [UCS_MRLEASE_MONITOR_LAST]   = NULL
};

#define MRL_ARG(_name, _min, _max, _names) \
    static const mrl_field_arg_t mrl_arg_##_name = \
        {MRL_VAR_PREFIX #_name, _min, _max, _names}
MRL_ARG(MONITORS, 0, 0, ucs_mrlease_monitor_names);
MRL_ARG(QUEUE_LEN, MRL_QUEUE_LEN_MIN, MRL_QUEUE_LEN_MAX, NULL);
MRL_ARG(FLEASE_SIGNAL, 0, 0, NULL); /* SIGRTMIN is known at run time */
MRL_ARG(FLEASE_ADOPT, 0, 0, NULL);
MRL_ARG(FLEASE_REARM_INTERVAL, MRL_REARM_MIN_S, MRL_REARM_MAX_S, NULL);
MRL_ARG(FLEASE_STALL_TIMEOUT, MRL_STALL_MIN_S, MRL_STALL_MAX_S, NULL);
MRL_ARG(UFFD_FORK, 0, 0, NULL);
MRL_ARG(CTL_SOCKET, 0, 0, NULL);
MRL_ARG(KMOD_HOLD, 0, MRL_KMOD_HOLD_MAX_S, NULL);

ucs_config_field_t ucs_mrlease_config_table[] = {
    {"MONITORS", "kmod,uffd,ucm,flease,inject",
     "Decoherence monitors to run, any of: kmod (mrlease.ko's /dev/mrlease: every\n"
     "change of a leased range's pages, by any process and cause, seen before it\n"
     "happens; preferred over uffd where it runs), uffd (userfaultfd events: munmap,\n"
     "mremap, madvise, fork, also by direct syscalls and static code), ucm (UCX\n"
     "memory hooks: what passes through libc), flease (file leases on file-backed\n"
     "ranges), inject (ucs_mrlease_inject() and the mrlease-ctl socket).\n"
     "A monitor the kernel cannot provide is switched off with a warning.",
     offsetof(ucs_mrlease_config_t, monitors), MRL_TYPE_BITMAP(&mrl_arg_MONITORS)},

    {"QUEUE_LEN", "16384",
     "Events queued between two progress calls before they are folded into one\n"
     "invalidation of every lease (never lost, only coarser). Each costs 96 bytes.",
     offsetof(ucs_mrlease_config_t, queue_len), MRL_TYPE_UINT(&mrl_arg_QUEUE_LEN)},

    {"FLEASE_SIGNAL", "38",
     "Real-time signal the kernel sends on a file lease break. It is blocked and\n"
     "read through a signalfd in the engine's own thread, so the application's\n"
     "handlers are never touched.",
     offsetof(ucs_mrlease_config_t, flease_signal),
     MRL_TYPE_SIGNAL(&mrl_arg_FLEASE_SIGNAL)},

    {"FLEASE_ADOPT", "y",
     "When no fd is given for a MAP_SHARED file mapping, re-map the same file\n"
     "pages over the range from the engine's own descriptor, so that the kernel\n"
     "grants a lease (it grants one only on the mapped file description).",
     offsetof(ucs_mrlease_config_t, flease_adopt), MRL_TYPE_BOOL(&mrl_arg_FLEASE_ADOPT)},

    {"FLEASE_REARM_INTERVAL", "10ms",
     "How often to retry taking a file lease back after a break, while the\n"
     "other opener still holds the file (counted in whole milliseconds).",
     offsetof(ucs_mrlease_config_t, flease_rearm_interval),
     MRL_TYPE_TIME(&mrl_arg_FLEASE_REARM_INTERVAL)},

    {"FLEASE_STALL_TIMEOUT", "1s",
     "Hold another process's file change at most this long if no progress call\n"
     "has even seen the break (e.g. the progress thread itself opened the file).\n"
     "Then the change goes on with a warning, and owners re-register once the\n"
     "lease is back (FILE_REARM). Once an owner is handling the break, the change\n"
     "is held until it restores (bounded by /proc/sys/fs/lease-break-time).\n"
     "Keep it below /proc/sys/fs/lease-break-time (a warning says if it is not).",
     offsetof(ucs_mrlease_config_t, flease_stall_timeout),
     MRL_TYPE_TIME(&mrl_arg_FLEASE_STALL_TIMEOUT)},

    {"UFFD_FORK", "y",
     "Ask userfaultfd for fork events (needs CAP_SYS_PTRACE; without it, fork\n"
     "is reported by the ucm monitor's atfork handler only).",
     offsetof(ucs_mrlease_config_t, uffd_fork), MRL_TYPE_BOOL(&mrl_arg_UFFD_FORK)},

    {"CTL_SOCKET", "y",
     "Listen on the abstract socket @mrlease.<pid> for mrlease-ctl (inject,\n"
     "counters). Only the same user or root is answered. If another process\n"
     "holds the name, the engine warns and runs without the socket.",
     offsetof(ucs_mrlease_config_t, ctl_socket), MRL_TYPE_BOOL(&mrl_arg_CTL_SOCKET)},

    {"KMOD_HOLD", "0",
     "With the kmod monitor: hold a change that breaks a lease (munmap, madvise,\n"
     "another process's truncate) inside the kernel until the engine has called\n"
     "every owner back, at most this long (0: off, the default). Changes that\n"
     "hold the mmap lock for write (mremap, shmdt, fork) are never held. Useful\n"
     "with a dispatcher thread (libuct_ib_lease runs one): without one, nobody\n"
     "acks while the changer waits, and each held change costs this timeout.",
     offsetof(ucs_mrlease_config_t, kmod_hold), MRL_TYPE_TIME(&mrl_arg_KMOD_HOLD)},

    {NULL}
};

const char *ucs_mrlease_monitor_name(ucs_mrlease_monitor_id_t id)
{
    return (id < UCS_MRLEASE_MONITOR_LAST) ? ucs_mrlease_monitor_names[id] : "?";
}

/* A misspelt variable would otherwise be ignored without a word. A warning,
 * not an error: a newer library's variable must not stop an older one. */
static void mrl_config_warn_unknown(void)
{
    const size_t plen = strlen(MRL_VAR_PREFIX);
    const ucs_config_field_t *field;
    char **env;
    size_t len;

    for (env = environ; (env != NULL) && (*env != NULL); ++env) {
        if (strncmp(*env, MRL_VAR_PREFIX, plen)) {
            continue;
        }
        len = strcspn(*env + plen, "=");
        for (field = ucs_mrlease_config_table; field->name != NULL; ++field) {
            if ((strlen(field->name) == len) &&
                !strncmp(field->name, *env + plen, len)) {
                break;
            }
        }
        if (field->name == NULL) {
            ucs_warn("mrlease: %.*s is not a mrlease variable and is ignored; "
                     "'mrlease-ctl config' lists them", (int)(plen + len), *env);
        }
    }
}

/* The kernel lets a change go by itself after lease-break-time: a stall
 * timeout at or above it never fires first. The kernel setting can change
 * at any time, so this is a warning (and the monitor reports forced breaks). */
static void mrl_config_check_lease_break_time(const ucs_mrlease_config_t *config)
{
    FILE *f;
    int lbt;

    if (!(config->monitors & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE)) ||
        ((f = fopen(MRL_LEASE_BREAK, "r")) == NULL)) {
        return;
    }
    if ((fscanf(f, "%d", &lbt) == 1) && (config->flease_stall_timeout >= lbt)) {
        ucs_warn("mrlease: UCX_MRLEASE_FLEASE_STALL_TIMEOUT=%gs is not below "
                 MRL_LEASE_BREAK " (%d s): the kernel lets changes go by force "
                 "first; set it lower, or raise " MRL_LEASE_BREAK,
                 config->flease_stall_timeout, lbt);
    }
    fclose(f);
}

/* UCX's parser on the release built for (it also reads ucx.conf and marks the
 * variables used), else ours (config_env.h). */
static ucs_status_t mrl_config_fill(ucs_mrlease_config_t *config, int ignore_errors)
{
    if (ucs_mrlease_config_ucx_parser()) {
        return ucs_config_parser_fill_opts(config, ucs_mrlease_config_table, "UCX_",
                                           "MRLEASE_", ignore_errors);
    }
    return ucs_mrlease_config_env_fill(config, ucs_mrlease_config_table,
                                       MRL_VAR_PREFIX, ignore_errors);
}

ucs_status_t ucs_mrlease_config_read(ucs_mrlease_config_t *config)
{
    ucs_status_t status;

    mrl_config_warn_unknown();
    status = mrl_config_fill(config, 0);
    if (status != UCS_OK) {
        /* the parser released what it had filled */
        ucs_error("mrlease: invalid UCX_MRLEASE_* configuration (see above): "
                  "no engine is created; 'mrlease-ctl config' lists the "
                  "variables, their accepted values and current values");
        return status;
    }
    mrl_config_check_lease_break_time(config);
    return UCS_OK;
}

void ucs_mrlease_config_release(ucs_mrlease_config_t *config)
{
    if (ucs_mrlease_config_ucx_parser()) {
        ucs_config_parser_release_opts(config, ucs_mrlease_config_table);
    } else {
        ucs_mrlease_config_env_release(config, ucs_mrlease_config_table);
    }
}

void ucs_mrlease_config_print(FILE *stream)
{
    ucs_mrlease_config_t config;
    ucs_status_t status;
    unsigned errors;

    /* Bad values are reported, and shown with their defaults. */
    errors = ucs_mrlease_config_error_count();
    status = mrl_config_fill(&config, 1);
    errors = ucs_mrlease_config_error_count() - errors;
    if (status != UCS_OK) {
        fprintf(stream, "%s cannot read the UCX_MRLEASE_* configuration: %s\n",
                UCS_MRLEASE_CONFIG_ERROR_MARK, ucs_status_string(status));
        return;
    }
    if (ucs_mrlease_config_ucx_parser()) {
        ucs_config_parser_print_opts(stream, "mrlease configuration", &config,
                                     ucs_mrlease_config_table, "MRLEASE_", "UCX_",
                                     UCS_CONFIG_PRINT_CONFIG | UCS_CONFIG_PRINT_DOC |
                                     UCS_CONFIG_PRINT_HEADER);
    } else {
        ucs_mrlease_config_env_print(stream, "mrlease configuration", &config,
                                     ucs_mrlease_config_table, MRL_VAR_PREFIX);
    }
    ucs_mrlease_config_release(&config);
    if (errors > 0) {
        fprintf(stream, "#\n%s %u UCX_MRLEASE_* value(s) are invalid (reported "
                "above; shown here with their defaults): engine creation fails "
                "until they are fixed.\n#\n", UCS_MRLEASE_CONFIG_ERROR_MARK, errors);
    }
}
