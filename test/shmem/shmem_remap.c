/*
 * shmem_remap: OpenSHMEM puts, gets and atomics between two PEs whose
 * PRIVATE (non-symmetric) buffers change between operations, behind libc's
 * back; every byte is checked.
 *
 *   shmem_remap ITERATIONS MODE SIZE [FILE_PREFIX]
 *     MODE: remap     munmap + mmap(MAP_FIXED) at the same address (raw
 *                     syscalls): new, zeroed pages
 *           mremap    new pages built elsewhere, moved over the buffers
 *           dontneed  madvise(MADV_DONTNEED): the pages are dropped
 *           regrow    another process truncates the buffers' file to 0 and
 *                     regrows it (needs FILE_PREFIX; $MRL_FILE_CHANGER is
 *                     test/helpers/file_changer, started with posix_spawn)
 *           none      no change (control)
 *     SIZE: bytes per put and per get (a multiple of 4096 with FILE_PREFIX)
 *     FILE_PREFIX: the private buffers are a MAP_SHARED mapping of
 *                  FILE_PREFIX.<pe> (source at 0, destination at SIZE)
 *
 * Each PE owns a private source and a private destination buffer and changes
 * both on every odd iteration (iteration 0 lets the library register and
 * cache them). Per iteration each PE fills its source, shmem_putmem()s it
 * into the peer's symmetric buffer and adds to the peer's symmetric counter
 * with shmem_long_atomic_fetch_add() (the fetched value is checked); after a
 * barrier it checks what the peer put, then shmem_getmem()s the peer's other
 * symmetric buffer into its private destination and checks that.
 * PE 0 prints "shmem_remap: ... put N wrong bytes, get N wrong bytes,
 * atomics N wrong" and "shmem_remap: ok|FAILED"; every PE exits 1 on a
 * wrong byte.
 */
#define _GNU_SOURCE
#include "../mpi/raw_change.h"

#include <shmem.h>

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { PAT_PUT = 3, PAT_GET = 101 };

static unsigned char byte_at(int iter, size_t i, int pe, int salt)
{
    return (unsigned char)(i * 13 + iter * 29 + pe * 7 + salt);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fail(const char *what)
{
    fprintf(stderr, "shmem_remap: PE %d: %s\n", shmem_my_pe(), what);
    shmem_global_exit(2);
    exit(2);
}

/* another process truncates PATH to 0 and regrows it to LEN bytes */
static void regrow(const char *path, size_t len)
{
    const char *changer = getenv("MRL_FILE_CHANGER");
    char size[32];
    char *argv[] = {(char*)changer, "regrow", (char*)path, size, NULL};
    pid_t pid;
    int status;

    snprintf(size, sizeof(size), "%zu", len);
    /* posix_spawn, not fork: no fork event, no atfork purge of UCX's cache */
    if ((changer == NULL) || (posix_spawn(&pid, changer, NULL, NULL, argv, environ) != 0)) {
        fail("regrow needs MRL_FILE_CHANGER (test/helpers/file_changer)");
    }
    if ((waitpid(pid, &status, 0) != pid) || !WIFEXITED(status) || WEXITSTATUS(status)) {
        fail("the file changer failed");
    }
}

static long count_wrong(const unsigned char *buf, size_t len, int iter, int pe, int salt)
{
    long bad = 0;
    size_t i;

    for (i = 0; i < len; ++i) {
        bad += (buf[i] != byte_at(iter, i, pe, salt));
    }
    return bad;
}

int main(int argc, char **argv)
{
    static long counter, bad[3], total[3];
    static long p_sync[SHMEM_REDUCE_SYNC_SIZE];
    static long p_wrk[SHMEM_REDUCE_MIN_WRKDATA_SIZE];
    int iters         = (argc > 1) ? atoi(argv[1]) : 8;
    const char *mode  = (argc > 2) ? argv[2] : "remap";
    size_t len        = (argc > 3) ? strtoul(argv[3], NULL, 0) : (1 << 20);
    const char *files = (argc > 4) ? argv[4] : NULL;
    size_t page       = sysconf(_SC_PAGESIZE), area, i;
    unsigned char *priv, *src, *dst, *sym_in, *sym_out;
    char path[4096]   = "";
    long expect_fetch = 0, fetched;
    int me, peer, it, changes = 0;
    double t0;

    shmem_init();
    me   = shmem_my_pe();
    peer = 1 - me;
    if (shmem_n_pes() != 2) {
        fail("needs exactly 2 PEs");
    }
    if ((len == 0) || (!strcmp(mode, "regrow") && (files == NULL)) ||
        (files && (len % page))) {
        fail("bad SIZE, or regrow without FILE_PREFIX (see the header of shmem_remap.c)");
    }
    for (i = 0; i < SHMEM_REDUCE_SYNC_SIZE; ++i) {
        p_sync[i] = SHMEM_SYNC_VALUE;
    }

    /* the private buffers: one area, source then destination, page-aligned */
    area = 2 * ((len + page - 1) / page) * page;
    if (files) {
        int fd;

        snprintf(path, sizeof(path), "%s.%d", files, me);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if ((fd < 0) || (ftruncate(fd, area) < 0)) {
            fail("cannot create the buffers' file");
        }
        priv = mmap(NULL, area, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd); /* as many applications do */
    } else {
        priv = mmap(NULL, area, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (priv == MAP_FAILED) {
        fail("mmap of the private buffers failed");
    }
    src     = priv;
    dst     = priv + area / 2;
    sym_in  = shmem_malloc(len);
    sym_out = shmem_malloc(len);
    if ((sym_in == NULL) || (sym_out == NULL)) {
        fail("shmem_malloc failed (SHMEM_SYMMETRIC_SIZE too small?)");
    }
    shmem_barrier_all();
    t0 = now_s();

    for (it = 0; it < iters; ++it) {
        if (it % 2) {
            int ret = 0;

            if (!strcmp(mode, "regrow")) {
                regrow(path, area);
            } else if (strcmp(mode, "none")) {
                ret = mrl_raw_change(priv, area, mode);
            }
            if (ret) {
                fail(ret < 0 ? "the change failed" : "unknown MODE");
            }
            changes += strcmp(mode, "none") != 0;
        }
        for (i = 0; i < len; ++i) {
            src[i]     = byte_at(it, i, me, PAT_PUT);
            sym_out[i] = byte_at(it, i, me, PAT_GET);
        }
        memset(dst, 0, len);

        shmem_putmem(sym_in, src, len, peer);
        fetched = shmem_long_atomic_fetch_add(&counter, it + 1, peer);
        bad[2] += (fetched != expect_fetch);
        expect_fetch += it + 1;
        shmem_barrier_all(); /* puts complete: check what the peer put */

        bad[0] += count_wrong(sym_in, len, it, peer, PAT_PUT);
        shmem_getmem(dst, sym_out, len, peer);
        bad[1] += count_wrong(dst, len, it, peer, PAT_GET);
        shmem_barrier_all(); /* the peer's gets are done before the next fill */
    }
    bad[2] += (counter != expect_fetch);

    shmem_long_sum_to_all(total, bad, 3, 0, 0, 2, p_wrk, p_sync);
    if (me == 0) {
        printf("shmem_remap: mode %s, %zu bytes per op, private %s buffers, %d iterations, "
               "%d changes per PE; put %ld wrong bytes, get %ld wrong bytes, atomics %ld "
               "wrong, %.1f s\n",
               mode, len, files ? "file" : "anonymous", iters, changes, total[0], total[1],
               total[2], now_s() - t0);
        printf("shmem_remap: %s\n", (total[0] || total[1] || total[2]) ? "FAILED" : "ok");
        fflush(stdout);
    }
    shmem_barrier_all();
    if (files) {
        unlink(path);
    }
    shmem_finalize();
    return (total[0] || total[1] || total[2]) ? 1 : 0;
}
