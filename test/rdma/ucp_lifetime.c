/*
 * ucp_lifetime: UCP contexts and workers (and so UCX's IB memory domains,
 * their registration caches and protection domains) created and destroyed
 * over and over in one process, plain or with libuct_ib_lease preloaded.
 *
 *   ucp_lifetime cycles N [K]
 *       N times: ucp_init, a worker (every K-th time; default 1, 0: only in
 *       the first cycle), a 64 KiB buffer mapped for remote access
 *       (ucp_mem_map, rkey packed: a registration through each IB memory
 *       domain's cache, handed out through a memory window under mrlease),
 *       then all of it destroyed. Measures, after the first cycle (libraries
 *       loaded) and after the last: resident memory, open fds, mappings, and
 *       mappings of an RDMA device (/dev/infiniband/uverbs*: a device
 *       context whose protection domain could not be deallocated keeps its
 *       queues mapped after it is closed). Fails if the fds or the device
 *       mappings grew, or resident memory grew by more than MRL_RSS_BOUND_KB
 *       (default 2048).
 *
 *   ucp_lifetime unbacked SECONDS
 *       ns per ucp_worker_progress() call with nothing pending, then while a
 *       memory window waits for memory that is gone for good (mapped for
 *       remote access, then unmapped), each over SECONDS.
 *
 * Prints "ucp_lifetime: ..." lines and "ucp_lifetime: ok" or "... FAILED".
 * Needs UCX_IB_GID_INDEX=0 on soft-RoCE.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BUF_LEN (64 * 1024)

#define CHECK(_cond, ...) \
    do { \
        if (!(_cond)) { \
            fprintf(stderr, "ucp_lifetime: " __VA_ARGS__); \
            fprintf(stderr, "\nucp_lifetime: FAILED\n"); \
            exit(2); \
        } \
    } while (0)

typedef struct {
    long rss_kb;
    long fds;
    long maps;
    long uverbs_maps;
} usage_t;

static double now_sec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage_get(usage_t *u)
{
    char line[4096];
    long size, resident;
    struct dirent *d;
    FILE *f;
    DIR *dir;

    memset(u, 0, sizeof(*u));
    f = fopen("/proc/self/statm", "r");
    CHECK((f != NULL) && (fscanf(f, "%ld %ld", &size, &resident) == 2), "statm");
    fclose(f);
    u->rss_kb = resident * (sysconf(_SC_PAGESIZE) / 1024);

    dir = opendir("/proc/self/fd");
    CHECK(dir != NULL, "/proc/self/fd");
    while ((d = readdir(dir)) != NULL) {
        u->fds += (d->d_name[0] != '.');
    }
    closedir(dir);
    --u->fds; /* the directory's own */

    f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL, "/proc/self/maps");
    while (fgets(line, sizeof(line), f) != NULL) {
        ++u->maps;
        u->uverbs_maps += (strstr(line, "/dev/infiniband/uverbs") != NULL);
    }
    fclose(f);
}

static ucp_context_h context_new(void)
{
    ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES,
                           .features   = UCP_FEATURE_TAG | UCP_FEATURE_RMA};
    ucp_context_h context;
    ucs_status_t status;

    status = ucp_init(&params, NULL, &context);
    CHECK(status == UCS_OK, "ucp_init: %s", ucs_status_string(status));
    return context;
}

static ucp_worker_h worker_new(ucp_context_h context)
{
    ucp_worker_params_t params = {.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                                  .thread_mode = UCS_THREAD_MODE_SINGLE};
    ucp_worker_h worker;
    ucs_status_t status;

    status = ucp_worker_create(context, &params, &worker);
    CHECK(status == UCS_OK, "ucp_worker_create: %s", ucs_status_string(status));
    return worker;
}

/* Map buf for remote access and pack its key: registered on every IB MD. */
static ucp_mem_h mem_map(ucp_context_h context, void *buf)
{
    ucp_mem_map_params_t params = {.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                                                 UCP_MEM_MAP_PARAM_FIELD_LENGTH,
                                   .address    = buf,
                                   .length     = BUF_LEN};
    ucp_mem_h memh;
    void *rkey;
    size_t rkey_size;
    ucs_status_t status;

    status = ucp_mem_map(context, &params, &memh);
    CHECK(status == UCS_OK, "ucp_mem_map: %s", ucs_status_string(status));
    status = ucp_rkey_pack(context, memh, &rkey, &rkey_size);
    CHECK(status == UCS_OK, "ucp_rkey_pack: %s", ucs_status_string(status));
    ucp_rkey_buffer_release(rkey);
    return memh;
}

static void one_cycle(void *buf, int with_worker)
{
    ucp_context_h context = context_new();
    ucp_worker_h worker   = with_worker ? worker_new(context) : NULL;
    ucp_mem_h memh        = mem_map(context, buf);

    if (worker != NULL) {
        ucp_worker_progress(worker);
    }
    CHECK(ucp_mem_unmap(context, memh) == UCS_OK, "ucp_mem_unmap");
    if (worker != NULL) {
        ucp_worker_destroy(worker);
    }
    ucp_cleanup(context);
}

static int cycles(long n, long worker_every)
{
    const char *bound_env = getenv("MRL_RSS_BOUND_KB");
    long bound            = bound_env ? atol(bound_env) : 2048;
    void *buf;
    usage_t u0, u1, u;
    double t0;
    long i;
    int failed;

    buf = mmap(NULL, BUF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
    CHECK(buf != MAP_FAILED, "mmap");
    memset(buf, 1, BUF_LEN);

    usage_get(&u);
    one_cycle(buf, 1); /* loads UCX's modules, fills its pools */
    usage_get(&u0);
    printf("ucp_lifetime: before the first cycle: RSS %ld kB, %ld fds, %ld mappings "
           "(%ld of an RDMA device)\n", u.rss_kb, u.fds, u.maps, u.uverbs_maps);
    t0 = now_sec();
    for (i = 1; i < n; ++i) {
        one_cycle(buf, (worker_every > 0) && (i % worker_every == 0));
    }
    usage_get(&u1);
    printf("ucp_lifetime: %ld cycles of ucp_init, ucp_mem_map + rkey (a worker "
           "every %ld), destroy: %.1f s (%.1f ms each)\n", n, worker_every,
           now_sec() - t0, (now_sec() - t0) * 1e3 / ((n > 1) ? n - 1 : 1));
    printf("ucp_lifetime: after cycle 1: RSS %ld kB, %ld fds, %ld mappings (%ld of an "
           "RDMA device)\n", u0.rss_kb, u0.fds, u0.maps, u0.uverbs_maps);
    printf("ucp_lifetime: after cycle %ld: RSS %ld kB, %ld fds, %ld mappings (%ld of "
           "an RDMA device)\n", n, u1.rss_kb, u1.fds, u1.maps, u1.uverbs_maps);
    printf("ucp_lifetime: growth over %ld cycles: RSS %+ld kB (bound %ld kB), fds "
           "%+ld, mappings %+ld, RDMA device mappings %+ld\n", n - 1,
           u1.rss_kb - u0.rss_kb, bound, u1.fds - u0.fds, u1.maps - u0.maps,
           u1.uverbs_maps - u0.uverbs_maps);
    failed = (u1.fds > u0.fds) || (u1.uverbs_maps > u0.uverbs_maps) ||
             (u1.uverbs_maps > 0) || (u1.rss_kb - u0.rss_kb > bound);
    munmap(buf, BUF_LEN);
    return failed;
}

static double progress_ns(ucp_worker_h worker, double seconds)
{
    double t0 = now_sec(), t;
    long calls = 0, i;

    do {
        for (i = 0; i < 10000; ++i) {
            ucp_worker_progress(worker);
        }
        calls += i;
        t = now_sec();
    } while (t - t0 < seconds);
    return (t - t0) * 1e9 / calls;
}

static int unbacked(double seconds)
{
    ucp_context_h context = context_new();
    ucp_worker_h worker   = worker_new(context);
    double idle, gone, idle2;
    ucp_mem_h memh;
    void *buf;

    buf = mmap(NULL, BUF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
    CHECK(buf != MAP_FAILED, "mmap");
    memset(buf, 1, BUF_LEN);
    progress_ns(worker, 0.2); /* warm up */
    idle = progress_ns(worker, seconds);

    memh = mem_map(context, buf);
    munmap(buf, BUF_LEN); /* for good */
    usleep(100000);
    ucp_worker_progress(worker); /* the change is handled by now */
    gone = progress_ns(worker, seconds);

    CHECK(ucp_mem_unmap(context, memh) == UCS_OK, "ucp_mem_unmap");
    idle2 = progress_ns(worker, seconds);
    printf("ucp_lifetime: ucp_worker_progress: %.1f ns per call idle, %.1f ns while a "
           "window waits for memory gone for good, %.1f ns once it is deregistered\n",
           idle, gone, idle2);
    ucp_worker_destroy(worker);
    ucp_cleanup(context);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = (argc > 1) ? argv[1] : "cycles";
    int failed;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "cycles")) {
        failed = cycles((argc > 2) ? atol(argv[2]) : 1000,
                        (argc > 3) ? atol(argv[3]) : 1);
    } else if (!strcmp(mode, "unbacked")) {
        failed = unbacked((argc > 2) ? atof(argv[2]) : 2.0);
    } else {
        CHECK(0, "unknown mode %s", mode);
    }
    printf("ucp_lifetime: %s\n", failed ? "FAILED" : "ok");
    return failed ? 1 : 0;
}
