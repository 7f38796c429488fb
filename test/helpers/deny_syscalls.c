/*
 * Run a command as on a kernel without userfaultfd and without file leases:
 * a seccomp filter makes userfaultfd(2) fail with ENOSYS, the
 * /dev/userfaultfd ioctl with ENOTTY and fcntl(F_SETLEASE) with EINVAL.
 *
 *   deny_syscalls CMD [ARGS...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define DENY(err) BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))

int main(int argc, char **argv)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
        DENY(ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fcntl, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_SETLEASE, 0, 5),
        DENY(EINVAL),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xAA00 /* USERFAULTFD_IOC_NEW */, 0, 1),
        DENY(ENOTTY),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};

    if (argc < 2) {
        fprintf(stderr, "usage: deny_syscalls CMD [ARGS...]\n");
        return 2;
    }
    if ((prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) ||
        (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)) {
        perror("deny_syscalls: seccomp");
        return 1;
    }
    execv(argv[1], argv + 1);
    perror("deny_syscalls: exec");
    return 127;
}
