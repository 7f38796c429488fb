/*
 * inject monitor: decoherence on request, from ucs_mrlease_inject() or from
 * an operator through the abstract datagram socket @mrlease.<pid>[.<n>]
 * (see mrlease-ctl). Requests carry the sender's credentials: only the same
 * user or root is answered. Replies carry ours, which mrlease-ctl checks. A
 * name taken by another process is not replaced by another: the engine
 * warns and runs without the socket.
 *
 * Protocol, one datagram each way:
 *   "inject <hex address> <length> [kind,kind...]" -> "ok" or "error: ..."
 *   "counters"                                     -> the counters, as text
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#define INJECT_MAX_ENGINES 64

typedef struct {
    ucs_mrlease_monitor_t super;
    int                   sock;
    int                   name_idx; /* of this process's names, or -1 */
} ucs_mrlease_inject_t;

/* Names @mrlease.<pid>[.<n>] held by this process's engines: the lowest
 * free one is the engine's, so that mrlease-ctl PID.N finds it. */
static pthread_mutex_t inject_names_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t        inject_names_used;
static pid_t           inject_names_pid;

static int inject_name_claim(void)
{
    int n = -1;

    pthread_mutex_lock(&inject_names_lock);
    if (inject_names_pid != getpid()) { /* a forked child holds none */
        inject_names_pid  = getpid();
        inject_names_used = 0;
    }
    if (~inject_names_used != 0) {
        n = __builtin_ctzll(~inject_names_used);
        inject_names_used |= UCS_BIT(n);
    }
    pthread_mutex_unlock(&inject_names_lock);
    return n;
}

static void inject_name_drop(int n)
{
    pthread_mutex_lock(&inject_names_lock);
    if ((n >= 0) && (inject_names_pid == getpid())) {
        inject_names_used &= ~UCS_BIT(n);
    }
    pthread_mutex_unlock(&inject_names_lock);
}

static ucs_status_t inject_open(ucs_mrlease_engine_t *engine,
                                ucs_mrlease_monitor_t **mon_p)
{
    ucs_mrlease_inject_t *mon;
    struct sockaddr_un addr;
    socklen_t len;
    int one = 1;

    mon = calloc(1, sizeof(*mon));
    if (mon == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    mon->super.engine = engine;
    mon->sock         = -1;
    mon->name_idx     = -1;
    *mon_p            = &mon->super;
    if (!engine->config.ctl_socket) {
        return UCS_OK;
    }

    mon->name_idx = inject_name_claim();
    if (mon->name_idx < 0) {
        ucs_warn("mrlease: inject: %d engines in this process already have a "
                 "control socket; this one runs without", INJECT_MAX_ENGINES);
        return UCS_OK;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1,
                   mon->name_idx ? "mrlease.%d.%d" : "mrlease.%d", (int)getpid(),
                   mon->name_idx);

    mon->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if ((mon->sock < 0) ||
        (setsockopt(mon->sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)) {
        ucs_warn("mrlease: inject: control socket unavailable: %m");
        goto no_socket;
    }
    if (bind(mon->sock, (struct sockaddr*)&addr,
             offsetof(struct sockaddr_un, sun_path) + 1 + len) == 0) {
        ucs_debug("mrlease: control socket @%s", addr.sun_path + 1);
        return UCS_OK;
    }
    if (errno == EADDRINUSE) {
        /* Not ours: moving to another name would hand ours to whoever took
         * it, and mrlease-ctl would talk to them. */
        ucs_warn("mrlease: CONTROL SOCKET NAME TAKEN: another process holds "
                 "@%s (find it with 'ss -xlp | grep %s'); this engine runs "
                 "WITHOUT its control socket, and 'mrlease-ctl %s' refuses to "
                 "talk to the other process. Stop that process, or set "
                 "UCX_MRLEASE_CTL_SOCKET=n to run without the socket quietly.",
                 addr.sun_path + 1, addr.sun_path + 1,
                 addr.sun_path + 1 + strlen("mrlease."));
    } else {
        ucs_warn("mrlease: inject: cannot bind the control socket @%s: %m",
                 addr.sun_path + 1);
    }
no_socket:
    if (mon->sock >= 0) {
        close(mon->sock);
    }
    mon->sock = -1;
    return UCS_OK; /* the API still works */
}

static void inject_close(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_inject_t *mon = ucs_derived_of(super, ucs_mrlease_inject_t);

    if (mon->sock >= 0) {
        close(mon->sock);
    }
    inject_name_drop(mon->name_idx);
    free(mon);
}

static ucs_status_t inject_arm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
    return UCS_OK;
}

static void inject_disarm(ucs_mrlease_monitor_t *super, ucs_mrlease_t *lease)
{
}

static int inject_fd(ucs_mrlease_monitor_t *super)
{
    return ucs_derived_of(super, ucs_mrlease_inject_t)->sock;
}

/* Parse "unmap,remove" into a kinds mask; 0 on an unknown name. */
static unsigned inject_parse_kinds(char *list)
{
    unsigned kinds = 0, k;
    char *save, *name;

    for (name = strtok_r(list, ",", &save); name != NULL;
         name = strtok_r(NULL, ",", &save)) {
        for (k = 0; k < UCS_MRLEASE_EV_KINDS; ++k) {
            if (!strcmp(name, ucs_mrlease_event_kind_name(UCS_BIT(k)))) {
                kinds |= UCS_BIT(k);
                break;
            }
        }
        if (k == UCS_MRLEASE_EV_KINDS) {
            return 0;
        }
    }
    return kinds;
}

/* Reader thread: no engine lock here, so counters are read unlocked (each
 * is one aligned word). */
static void inject_counters_text(ucs_mrlease_engine_t *engine, char *buf,
                                 size_t max)
{
    ucs_mrlease_counters_t c;
    FILE *f;

    c = engine->counters;
    ucs_mrlease_queue_lock(&engine->queue);
    memcpy(c.events, engine->queue.kind_count, sizeof(c.events));
    memcpy(c.monitor_events, engine->queue.monitor_count, sizeof(c.monitor_events));
    c.queue_overflows = engine->queue.overflows;
    ucs_mrlease_queue_unlock(&engine->queue);
    ucs_mrlease_monitor_counters(engine, &c);

    f = fmemopen(buf, max, "w");
    if (f == NULL) {
        snprintf(buf, max, "error: %s", strerror(errno));
        return;
    }
    ucs_mrlease_counters_print(&c, f);
    fclose(f);
}

static void inject_drain(ucs_mrlease_monitor_t *super)
{
    ucs_mrlease_inject_t *mon = ucs_derived_of(super, ucs_mrlease_inject_t);
    char req[512], reply[4096], kinds_str[256], cbuf[CMSG_SPACE(sizeof(struct ucred))];
    struct sockaddr_un from;
    struct iovec iov;
    struct msghdr msg;
    struct cmsghdr *cm;
    struct ucred *cred;
    unsigned long addr, length;
    unsigned kinds;
    ssize_t n;
    int fields;

    for (;;) {
        iov.iov_base = req;
        iov.iov_len  = sizeof(req) - 1;
        memset(&msg, 0, sizeof(msg));
        msg.msg_name       = &from;
        msg.msg_namelen    = sizeof(from);
        msg.msg_iov        = &iov;
        msg.msg_iovlen     = 1;
        msg.msg_control    = cbuf;
        msg.msg_controllen = sizeof(cbuf);
        n = recvmsg(mon->sock, &msg, 0);
        if (n < 0) {
            return;
        }
        req[n] = '\0';

        cred = NULL;
        for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
            if ((cm->cmsg_level == SOL_SOCKET) && (cm->cmsg_type == SCM_CREDENTIALS)) {
                cred = (struct ucred*)CMSG_DATA(cm);
            }
        }
        if ((cred == NULL) || ((cred->uid != 0) && (cred->uid != getuid()))) {
            snprintf(reply, sizeof(reply), "error: permission denied");
        } else if (!strncmp(req, "counters", 8)) {
            inject_counters_text(super->engine, reply, sizeof(reply));
        } else if (!strncmp(req, "inject ", 7)) {
            strcpy(kinds_str, "inject");
            fields = sscanf(req + 7, "%lx %lu %255s", &addr, &length, kinds_str);
            kinds  = inject_parse_kinds(kinds_str);
            if ((fields < 2) || (kinds == 0) || (length == 0)) {
                snprintf(reply, sizeof(reply), "error: usage: inject <hex address> "
                         "<length> [unmap,remap,remove,fork,file_break,"
                         "file_rearm,inject]");
            } else {
                ucs_mrlease_inject(super->engine, (void*)addr, length, kinds);
                snprintf(reply, sizeof(reply), "ok");
            }
        } else {
            snprintf(reply, sizeof(reply), "error: unknown request (inject, counters)");
        }
        if (msg.msg_namelen > offsetof(struct sockaddr_un, sun_path)) {
            sendto(mon->sock, reply, strlen(reply), MSG_DONTWAIT,
                   (struct sockaddr*)&from, msg.msg_namelen);
        }
    }
}

const ucs_mrlease_monitor_ops_t ucs_mrlease_inject_ops = {
    .id     = UCS_MRLEASE_MONITOR_INJECT,
    .name   = "inject",
    .open   = inject_open,
    .close  = inject_close,
    .arm    = inject_arm,
    .disarm = inject_disarm,
    .fd     = inject_fd,
    .drain  = inject_drain
};
