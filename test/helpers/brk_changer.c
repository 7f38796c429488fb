/*
 * brk shrink under a lease, in a process of its own: moving the break is
 * only safe where malloc does not use it, so malloc is told to mmap
 * everything first. Prints "brk seen_by uffd=N ucm=N kinds=0x.. range=ok|bad".
 */
#define _GNU_SOURCE
#include <ucs_mrlease/mrlease.h>

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static ucs_mrlease_event_t seen;

static ucs_status_t on_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *ev,
                             void *arg)
{
    seen = *ev;
    return UCS_OK;
}

int main(void)
{
    ucs_mrlease_params_t params = {.cb = on_break};
    size_t page = sysconf(_SC_PAGESIZE), len = 16 * page;
    ucs_mrlease_engine_t *engine;
    ucs_mrlease_t *lease;
    uintptr_t start;
    char *cur;
    int i;

    mallopt(M_MMAP_THRESHOLD, 0); /* malloc leaves the break alone */
    if (ucs_mrlease_engine_create(&engine) != UCS_OK) {
        return 1;
    }
    cur   = sbrk(0);
    start = ((uintptr_t)cur + page - 1) & ~(page - 1);
    if (brk((char*)start + len) != 0) {
        perror("brk");
        return 1;
    }
    memset((char*)start, 1, len);
    if (ucs_mrlease_acquire(engine, (void*)start, len, &params, &lease) != UCS_OK) {
        return 1;
    }
    if (brk((char*)start + len / 2) != 0) { /* shrink: drop the upper half */
        perror("brk shrink");
        return 1;
    }
    for (i = 0; (i < 500) && !seen.kinds; ++i) {
        ucs_mrlease_progress(engine);
        usleep(1000);
    }
    printf("brk seen_by uffd=%d ucm=%d kinds=0x%x range=%s\n",
           !!(seen.monitors & (1u << UCS_MRLEASE_MONITOR_UFFD)),
           !!(seen.monitors & (1u << UCS_MRLEASE_MONITOR_UCM)), seen.kinds,
           ((seen.start == start + len / 2) && (seen.end == start + len)) ? "ok" : "bad");
    ucs_mrlease_release(lease);
    ucs_mrlease_engine_destroy(engine);
    return 0;
}
