/*
 * lease_user: a program built only from what `make install` (or the
 * libucs-mrlease-dev package) installs, with
 *   cc lease_user.c $(pkg-config --cflags --libs ucs_mrlease)
 * It leases two pages, unmaps the second with libc's munmap, and requires the
 * very next progress call to deliver exactly that page as an UNMAP. Prints
 * "lease_user: ok" and exits 0, or says what was wrong and exits 1.
 */
#define _GNU_SOURCE
#include <ucs_mrlease/mrlease.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int                 calls;
static ucs_mrlease_event_t seen;

static ucs_status_t on_break(ucs_mrlease_t *lease, const ucs_mrlease_event_t *event,
                             void *arg)
{
    ++calls;
    seen = *event;
    return UCS_OK; /* nothing registered to restore: the lease goes on */
}

int main(void)
{
    size_t               page   = (size_t)sysconf(_SC_PAGESIZE);
    ucs_mrlease_params_t params = {.cb = on_break};
    ucs_mrlease_engine_t *engine;
    ucs_mrlease_t        *lease;
    ucs_status_t         status;
    char                 *buf;
    int                  ok;

    status = ucs_mrlease_engine_create(&engine);
    if (status != UCS_OK) {
        fprintf(stderr, "lease_user: ucs_mrlease_engine_create: %s\n",
                ucs_status_string(status));
        return 1;
    }

    buf = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
    if (buf == MAP_FAILED) {
        perror("lease_user: mmap");
        return 1;
    }
    memset(buf, 1, 2 * page);

    status = ucs_mrlease_acquire(engine, buf, 2 * page, &params, &lease);
    if (status != UCS_OK) {
        fprintf(stderr, "lease_user: ucs_mrlease_acquire: %s\n",
                ucs_status_string(status));
        return 1;
    }

    munmap(buf + page, page);
    ucs_mrlease_progress(engine);

    ok = (calls == 1) && (seen.kinds & UCS_MRLEASE_EV_UNMAP) &&
         (seen.start == (uintptr_t)buf + page) && (seen.end == (uintptr_t)buf + 2 * page);
    if (!ok) {
        fprintf(stderr, "lease_user: after munmap of [%p, %p) the next progress call "
                "made %d callback(s), kinds 0x%x, range [0x%lx, 0x%lx) "
                "(running monitors 0x%x)\n", buf + page, buf + 2 * page, calls,
                seen.kinds, (unsigned long)seen.start, (unsigned long)seen.end,
                ucs_mrlease_engine_monitors(engine));
    }

    ucs_mrlease_release(lease);
    munmap(buf, page);
    ucs_mrlease_engine_destroy(engine);
    if (ok) {
        printf("lease_user: ok (mrlease engine from the installed library)\n");
    }
    return ok ? 0 : 1;
}
