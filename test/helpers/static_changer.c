/*
 * A statically linked program with the lease engine inside. Linking libucm.a
 * statically overrides libc's munmap, malloc and free at link time, so UCX's
 * hooks see what goes through libc here too; a raw syscall is seen only by
 * the kernel (uffd, kmod), static or not. Prints, per case, who reported it:
 *   "<case> seen_by uffd=N ucm=N kinds=0x... kmod=N"
 */
#include <ucs_mrlease/mrlease.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned seen_monitors;
static unsigned seen_kinds;

static ucs_status_t on_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *ev,
                             void *arg)
{
    seen_monitors |= ev->monitors;
    seen_kinds    |= ev->kinds;
    return UCS_OK;
}

enum { BY_MUNMAP, BY_FREE, BY_SYSCALL };

static void run_case(ucs_mrlease_engine_t *engine, const char *name, void *p,
                     size_t len, int how)
{
    ucs_mrlease_params_t params = {.cb = on_break};
    ucs_mrlease_t *lease;
    int i;

    seen_monitors = seen_kinds = 0;
    memset(p, 1, len);
    if (ucs_mrlease_acquire(engine, p, len, &params, &lease) != UCS_OK) {
        printf("%s acquire failed\n", name);
        return;
    }
    if (how == BY_FREE) {
        free(p);
    } else if (how == BY_SYSCALL) {
        syscall(SYS_munmap, p, len);
    } else {
        munmap(p, len);
    }
    for (i = 0; (i < 500) && !seen_kinds; ++i) {
        ucs_mrlease_progress(engine);
        usleep(1000);
    }
    printf("%s seen_by uffd=%d ucm=%d kinds=0x%x kmod=%d\n", name,
           !!(seen_monitors & (1u << UCS_MRLEASE_MONITOR_UFFD)),
           !!(seen_monitors & (1u << UCS_MRLEASE_MONITOR_UCM)), seen_kinds,
           !!(seen_monitors & (1u << UCS_MRLEASE_MONITOR_KMOD)));
    ucs_mrlease_release(lease);
}

int main(void)
{
    ucs_mrlease_engine_t *engine;
    size_t len = 4 << 20; /* above glibc's mmap threshold */
    void *p;

    if (ucs_mrlease_engine_create(&engine) != UCS_OK) {
        return 1;
    }
    printf("engine_monitors 0x%x\n", ucs_mrlease_engine_monitors(engine));
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    run_case(engine, "munmap", p, len, BY_MUNMAP);
    run_case(engine, "free", malloc(len), len, BY_FREE);
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    run_case(engine, "syscall", p, len, BY_SYSCALL);
    ucs_mrlease_engine_destroy(engine);
    return 0;
}
