/*
 * The changes the MPI tests make to memory under UCX's registrations, behind
 * libc's back: raw syscalls, which UCX's own memory hooks never see.
 */
#ifndef MRL_TEST_RAW_CHANGE_H_
#define MRL_TEST_RAW_CHANGE_H_

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MREMAP_FIXED */
#endif
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * remap     munmap + mmap(MAP_FIXED) at the same address: new, zeroed pages
 * mremap    new pages built elsewhere (filled with 0x5a), moved over the range
 * dontneed  madvise(MADV_DONTNEED): the pages are dropped
 * Returns 0 when done, -1 if a syscall failed (reported), 1 if MODE is none
 * of these (the caller's own modes).
 */
static inline int mrl_raw_change(void *buf, size_t len, const char *mode)
{
    if (!strcmp(mode, "remap")) {
        syscall(SYS_munmap, buf, len);
        if (syscall(SYS_mmap, buf, len, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != (long)buf) {
            perror("mmap");
            return -1;
        }
    } else if (!strcmp(mode, "mremap")) {
        long fresh = syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == -1) {
            perror("mmap");
            return -1;
        }
        memset((void*)fresh, 0x5a, len);
        if (syscall(SYS_mremap, fresh, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
                    buf) != (long)buf) {
            perror("mremap");
            return -1;
        }
    } else if (!strcmp(mode, "dontneed")) {
        if (syscall(SYS_madvise, buf, len, MADV_DONTNEED) != 0) {
            perror("madvise");
            return -1;
        }
    } else {
        return 1;
    }
    return 0;
}

#endif
