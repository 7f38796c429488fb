/*
 * mrlease-ctl: talk to a running process's lease engine.
 *
 *   mrlease-ctl config                         UCX_MRLEASE_* variables and values
 *                                              (exit 1 if a value is invalid)
 *   mrlease-ctl PID[.N] counters               the engine's counters
 *   mrlease-ctl PID[.N] inject ADDR LEN [KINDS] inject decoherence (KINDS: unmap,
 *                                              remap,remove,fork,file_break,...)
 *
 * The answer must come from process PID itself, of the caller's user unless
 * the caller is root: another process can bind @mrlease.PID first. The
 * kernel stamps each datagram with its sender's credentials (SO_PASSCRED;
 * SO_PEERCRED is empty for datagram sockets), which we check.
 */
#define _GNU_SOURCE
#include <ucs_mrlease/mrlease.h>
#include <ucs_mrlease/engine_config.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

static int usage(void)
{
    fprintf(stderr,
            "usage: mrlease-ctl config\n"
            "       mrlease-ctl PID[.N] counters\n"
            "       mrlease-ctl PID[.N] inject HEXADDR LENGTH [KIND[,KIND...]]\n"
            "KIND: unmap remap remove fork file_break file_rearm inject\n");
    return 2;
}

/* Print the configuration; 1 if the library marked a value invalid. */
static int print_config(void)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f;
    int bad;

    f = open_memstream(&text, &size);
    if (f == NULL) {
        perror("mrlease-ctl: open_memstream");
        return 1;
    }
    ucs_mrlease_config_print(f);
    fclose(f);
    fputs(text, stdout);
    bad = (strncmp(text, UCS_MRLEASE_CONFIG_ERROR_MARK,
                   strlen(UCS_MRLEASE_CONFIG_ERROR_MARK)) == 0) ||
          (strstr(text, "\n" UCS_MRLEASE_CONFIG_ERROR_MARK) != NULL);
    free(text);
    return bad;
}

/* The sender's credentials the kernel attached to msg, or NULL. */
static const struct ucred *msg_cred(struct msghdr *msg)
{
    struct cmsghdr *cm;

    for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        if ((cm->cmsg_level == SOL_SOCKET) && (cm->cmsg_type == SCM_CREDENTIALS)) {
            return (const struct ucred*)CMSG_DATA(cm);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    char req[512], reply[8192], cbuf[CMSG_SPACE(sizeof(struct ucred))];
    struct sockaddr_un addr, self;
    const struct ucred *cred;
    struct pollfd pfd;
    struct msghdr msg;
    struct iovec iov;
    socklen_t len;
    ssize_t n;
    int sock, pid, idx = 0, ret, one = 1;

    if ((argc == 2) && !strcmp(argv[1], "config")) {
        return print_config();
    }
    if ((argc < 3) || (sscanf(argv[1], "%d.%d", &pid, &idx) < 1) || (pid <= 0)) {
        return usage();
    }
    if (!strcmp(argv[2], "counters") && (argc == 3)) {
        snprintf(req, sizeof(req), "counters");
    } else if (!strcmp(argv[2], "inject") && ((argc == 5) || (argc == 6))) {
        snprintf(req, sizeof(req), "inject %s %s %s", argv[3], argv[4],
                 (argc == 6) ? argv[5] : "inject");
    } else {
        return usage();
    }

    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if ((sock < 0) ||
        (setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)) {
        perror("mrlease-ctl: socket");
        return 1;
    }
    /* Autobind an abstract address so the engine can answer. */
    memset(&self, 0, sizeof(self));
    self.sun_family = AF_UNIX;
    if (bind(sock, (struct sockaddr*)&self, sizeof(sa_family_t)) < 0) {
        perror("mrlease-ctl: bind");
        return 1;
    }

    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1,
                   idx ? "mrlease.%d.%d" : "mrlease.%d", pid, idx);
    /* connected: only that name's datagrams reach us */
    if ((connect(sock, (struct sockaddr*)&addr,
                 offsetof(struct sockaddr_un, sun_path) + 1 + len) < 0) ||
        (send(sock, req, strlen(req), 0) < 0)) {
        fprintf(stderr, "mrlease-ctl: no lease engine answers at @%s: %s\n"
                "(is the process running with UCX_MRLEASE_MONITORS including "
                "inject and UCX_MRLEASE_CTL_SOCKET=y?)\n", addr.sun_path + 1,
                strerror(errno));
        return 1;
    }

    pfd.fd     = sock;
    pfd.events = POLLIN;
    ret = poll(&pfd, 1, 5000);
    if (ret <= 0) {
        fprintf(stderr, "mrlease-ctl: no answer from @%s within 5 s\n",
                addr.sun_path + 1);
        return 1;
    }
    iov.iov_base = reply;
    iov.iov_len  = sizeof(reply) - 1;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov        = &iov;
    msg.msg_iovlen     = 1;
    msg.msg_control    = cbuf;
    msg.msg_controllen = sizeof(cbuf);
    n = recvmsg(sock, &msg, 0);
    if (n < 0) {
        perror("mrlease-ctl: recv");
        return 1;
    }
    reply[n] = '\0';
    cred     = msg_cred(&msg);
    if ((cred == NULL) || (cred->pid != pid)) {
        fprintf(stderr, "mrlease-ctl: REFUSED: @%s is answered by process %d "
                "(uid %d), not by process %d: another process holds that name "
                "(process %d, if it runs a lease engine, warned that its name was "
                "taken and runs without its control socket)\n",
                addr.sun_path + 1, cred ? (int)cred->pid : -1,
                cred ? (int)cred->uid : -1, pid, pid);
        return 1;
    }
    if ((cred->uid != getuid()) && (getuid() != 0)) {
        fprintf(stderr, "mrlease-ctl: REFUSED: process %d runs as uid %d, not "
                "as you (uid %d); only the same user or root may control it\n",
                pid, (int)cred->uid, (int)getuid());
        return 1;
    }
    printf("%s\n", reply);
    close(sock);
    return strncmp(reply, "error", 5) ? 0 : 1;
}
