/*
 * mrlease engine benchmark (make bench). Not a test: it measures.
 *
 *  1. idle progress: ns per call of ucp_worker_progress() on a plain UCX worker,
 *     and of the same followed by ucs_mrlease_progress() (same run, same worker)
 *  2. munmap-to-return of a leased, populated 1 MiB range, p50/p99, per monitor
 *     set, against an unleased range in the same run
 *  3. dispatch: one event to one lease among N, and one event to all N leases,
 *     for N = 10^3, 10^4, 10^5, each restored by its owner: after a madvise
 *     (the mapping stayed) and after an unmap (the restore reads the map)
 *  4. latency per monitor (p50/p99): change-to-visible, from the start of a
 *     munmap of a leased 1 MiB range until the engine has the event pending,
 *     and event-to-restored, from then until ucs_mrlease_progress() returns
 *     with the owner called back and restored (bench_latency.c)
 *  5. registering a range per monitor set: acquire and release of a lease
 *     on 1 MiB, p50 (with MONITORS too, e.g. kmod in the guest)
 *  6. engine bytes per lease: malloc's bytes in use (mallinfo2) before and
 *     after acquiring 10^5 leases, divided by 10^5 (goal <= 128 B)
 *
 *   bench_engine [CSV [MONITORS]]: with MONITORS (e.g. "kmod", in the guest),
 *   only the latency and munmap rows of those monitors (bench-rdma does that)
 *
 * Prints a table and writes CSV to the path given (default bench-engine.csv).
 */
#define _GNU_SOURCE
#include <ucs_mrlease/mrlease.h>
#include <ucs_mrlease/engine.h>
#include <ucp/api/ucp.h>

#include <malloc.h>
#include <stddef.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static double percentile(double *v, int n, double p)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return v[(int)(p * (n - 1))];
}

static ucs_status_t restore_now(ucs_mrlease_t *l, const ucs_mrlease_event_t *ev, void *arg)
{
    ++*(unsigned long*)arg;
    return UCS_OK;
}

static FILE *csv;

static void machine(void)
{
    char model[256] = "unknown", line[512];
    struct utsname u;
    FILE *f = fopen("/proc/cpuinfo", "r");

    while (f && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "model name", 10)) {
            snprintf(model, sizeof(model), "%s", strchr(line, ':') + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    uname(&u);
    printf("# machine: %s, %ld cores, Linux %s, UCX %s\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), u.release, ucp_get_version_string());
    fprintf(csv, "# machine,%s,%ld cores,Linux %s,UCX %s\n", model,
            sysconf(_SC_NPROCESSORS_ONLN), u.release, ucp_get_version_string());
    fprintf(csv, "bench,variant,n,value,unit\n");
}

static ucs_mrlease_engine_t *engine_with(const char *monitors)
{
    ucs_mrlease_engine_t *e;

    setenv("UCX_MRLEASE_MONITORS", monitors, 1);
    if (ucs_mrlease_engine_create(&e) != UCS_OK) {
        fprintf(stderr, "engine (%s) failed\n", monitors);
        exit(1);
    }
    return e;
}

static void bench_idle_progress(void)
{
    const long n = 20000000;
    ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES,
                           .features   = UCP_FEATURE_RMA | UCP_FEATURE_TAG};
    ucp_worker_params_t wparams = {0};
    ucs_mrlease_engine_t *e = engine_with("uffd,ucm,flease,inject");
    ucp_context_h ctx;
    ucp_worker_h worker;
    double t0, plain, leased, bare;
    int round;
    long i;

    if ((ucp_init(&params, NULL, &ctx) != UCS_OK) ||
        (ucp_worker_create(ctx, &wparams, &worker) != UCS_OK)) {
        fprintf(stderr, "ucp init failed\n");
        exit(1);
    }
    plain = leased = bare = 1e30;
    for (round = 0; round < 5; ++round) { /* best of 5, interleaved */
        t0 = now_ns();
        for (i = 0; i < n; ++i) {
            ucp_worker_progress(worker);
        }
        plain = (now_ns() - t0) / n < plain ? (now_ns() - t0) / n : plain;
        t0 = now_ns();
        for (i = 0; i < n; ++i) {
            ucp_worker_progress(worker);
            ucs_mrlease_progress(e);
        }
        leased = (now_ns() - t0) / n < leased ? (now_ns() - t0) / n : leased;
        t0 = now_ns();
        for (i = 0; i < n; ++i) {
            ucs_mrlease_progress(e);
            __asm__ __volatile__("" ::: "memory");
        }
        bare = (now_ns() - t0) / n < bare ? (now_ns() - t0) / n : bare;
    }
    printf("\n## idle progress (best of 5 x %ld calls)\n", n);
    printf("%-44s %8.2f ns\n", "ucp_worker_progress (plain UCX)", plain);
    printf("%-44s %8.2f ns  (ratio %.3f)\n", "ucp_worker_progress + ucs_mrlease_progress",
           leased, leased / plain);
    printf("%-44s %8.2f ns\n", "ucs_mrlease_progress alone", bare);
    fprintf(csv, "idle_progress,plain_ucx,%ld,%.3f,ns\n", n, plain);
    fprintf(csv, "idle_progress,ucx_plus_mrlease,%ld,%.3f,ns\n", n, leased);
    fprintf(csv, "idle_progress,mrlease_alone,%ld,%.3f,ns\n", n, bare);
    ucp_worker_destroy(worker);
    ucp_cleanup(ctx);
    ucs_mrlease_engine_destroy(e);
}

static void bench_munmap(const char *monitors, int leased)
{
    const int iters = 2000;
    const size_t len = 1 << 20;
    ucs_mrlease_params_t params = {.cb = restore_now};
    ucs_mrlease_engine_t *e = engine_with(monitors);
    unsigned long broken = 0;
    double *lat = calloc(iters, sizeof(double)), t0, p50, p99;
    ucs_mrlease_t *l;
    char label[64];
    int i;
    void *p;

    params.arg = &broken;
    for (i = 0; i < iters; ++i) {
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 1, len);
        if (leased) {
            ucs_mrlease_acquire(e, p, len, &params, &l);
        }
        t0     = now_ns();
        munmap(p, len);
        lat[i] = now_ns() - t0;
        ucs_mrlease_progress(e);
        if (leased) {
            ucs_mrlease_release(l);
        }
    }
    p50 = percentile(lat, iters, 0.50);
    p99 = percentile(lat, iters, 0.99);
    snprintf(label, sizeof(label), "%s%s", leased ? "leased, " : "unleased, ", monitors);
    printf("%-36s p50 %8.1f us   p99 %8.1f us   (%lu events)\n", label, p50 / 1e3,
           p99 / 1e3, broken);
    /* CSV-safe label: monitors joined by '+' */
    snprintf(label, sizeof(label), "%s%s", leased ? "" : "unleased:", monitors);
    for (i = 0; label[i] != '\0'; ++i) {
        label[i] = (label[i] == ',') ? '+' : label[i];
    }
    fprintf(csv, "munmap_1MiB_p50,%s,%d,%.1f,ns\n", label, iters, p50);
    fprintf(csv, "munmap_1MiB_p99,%s,%d,%.1f,ns\n", label, iters, p99);
    free(lat);
    ucs_mrlease_engine_destroy(e);
}

/* Registering a range with the monitors: acquire + release of a lease on a
 * populated 1 MiB anonymous range (what an owner pays per registration:
 * the backing read from /proc/self/maps and each monitor's arm), p50. */
static void bench_acquire(const char *monitors)
{
    const int iters = 2000;
    const size_t len = 1 << 20;
    ucs_mrlease_params_t params = {.cb = restore_now};
    ucs_mrlease_engine_t *e = engine_with(monitors);
    double *acq = calloc(iters, sizeof(double));
    double *rel = calloc(iters, sizeof(double));
    unsigned long broken = 0;
    ucs_mrlease_t *l;
    char label[64];
    double t0;
    int i;
    void *p;

    params.arg = &broken;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 1, len);
    for (i = 0; i < iters; ++i) {
        t0     = now_ns();
        ucs_mrlease_acquire(e, p, len, &params, &l);
        acq[i] = now_ns() - t0;
        t0     = now_ns();
        ucs_mrlease_release(l);
        rel[i] = now_ns() - t0;
    }
    snprintf(label, sizeof(label), "%s", monitors);
    for (i = 0; label[i] != '\0'; ++i) {
        label[i] = (label[i] == ',') ? '+' : label[i];
    }
    printf("%-28s acquire p50 %8.1f us   release p50 %8.1f us\n", monitors,
           percentile(acq, iters, 0.50) / 1e3, percentile(rel, iters, 0.50) / 1e3);
    fprintf(csv, "acquire_1MiB_p50,%s,%d,%.1f,ns\n", label, iters,
            percentile(acq, iters, 0.50));
    fprintf(csv, "release_1MiB_p50,%s,%d,%.1f,ns\n", label, iters,
            percentile(rel, iters, 0.50));
    munmap(p, len);
    free(acq);
    free(rel);
    ucs_mrlease_engine_destroy(e);
}

/* kind: REMOVE keeps the mapping (the restore re-arms as it was); UNMAP
 * may have replaced it (the restore reads the memory map again) */
static void bench_dispatch(size_t n, unsigned kind, const char *variant)
{
    ucs_mrlease_params_t params = {.cb = restore_now};
    ucs_mrlease_engine_t *e = engine_with("inject");
    size_t page = sysconf(_SC_PAGESIZE), i;
    ucs_mrlease_t **ls = calloc(n, sizeof(*ls));
    unsigned long broken = 0;
    const int reps = 2000;
    double t0, one, all;
    char *p;
    int r;

    params.arg = &broken;
    p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (i = 0; i < n; ++i) {
        ucs_mrlease_acquire(e, p + i * page, page, &params, &ls[i]);
    }
    t0 = now_ns();
    for (r = 0; r < reps; ++r) {
        ucs_mrlease_inject(e, p + ((r * 7919) % n) * page, page, kind);
        ucs_mrlease_progress(e);
    }
    one = (now_ns() - t0) / reps;
    t0  = now_ns();
    ucs_mrlease_inject(e, p, n * page, kind);
    ucs_mrlease_progress(e);
    all = (now_ns() - t0) / n;
    printf("%-10zu %-8s %14.0f ns %20.1f ns\n", n, variant, one, all);
    fprintf(csv, "dispatch_one_of_n,%s,%zu,%.1f,ns\n", variant, n, one);
    fprintf(csv, "dispatch_all_per_lease,%s,%zu,%.1f,ns\n", variant, n, all);
    for (i = 0; i < n; ++i) {
        ucs_mrlease_release(ls[i]);
    }
    free(ls);
    munmap(p, n * page);
    ucs_mrlease_engine_destroy(e);
}

/* the change, by monitor: what it sees (ucm: libc's munmap; the others: a
 * raw syscall, which UCX's hooks miss) */
static void change(const char *monitor, void *p, size_t len)
{
    if (!strcmp(monitor, "ucm")) {
        munmap(p, len);
    } else {
        syscall(SYS_munmap, p, len);
    }
}

static void bench_latency(const char *monitor)
{
    const int iters = 1000;
    const size_t len = 1 << 20;
    ucs_mrlease_params_t params = {.cb = restore_now};
    ucs_mrlease_engine_t *e = engine_with(monitor);
    volatile uint32_t *pending = &((ucs_mrlease_engine_hot_t*)e)->pending;
    double *vis = calloc(iters, sizeof(double)), *rest = calloc(iters, sizeof(double));
    unsigned long broken = 0, before;
    double t0, t1, deadline;
    ucs_mrlease_t *l;
    int i, n = 0;
    void *p;

    params.arg = &broken;
    for (i = 0; i < iters; ++i) {
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 1, len);
        ucs_mrlease_acquire(e, p, len, &params, &l);
        before = broken;
        t0     = now_ns();
        change(monitor, p, len);
        deadline = t0 + 1e9;
        while (!*pending && (now_ns() < deadline)) {
        }
        t1 = now_ns();
        while ((broken == before) && (now_ns() < deadline)) {
            ucs_mrlease_progress(e);
        }
        if (broken != before) {
            vis[n]    = t1 - t0;
            rest[n++] = now_ns() - t1;
        }
        ucs_mrlease_release(l);
    }
    if (n == 0) {
        printf("%-8s no event seen in %d changes (monitor not running?)\n", monitor, iters);
    } else {
        double v50 = percentile(vis, n, 0.5), v99 = percentile(vis, n, 0.99);
        double r50 = percentile(rest, n, 0.5), r99 = percentile(rest, n, 0.99);

        printf("%-8s %10.1f %10.1f %12.1f %12.1f us  (%d/%d seen)\n", monitor, v50 / 1e3,
               v99 / 1e3, r50 / 1e3, r99 / 1e3, n, iters);
        fprintf(csv, "change_to_visible_p50,%s,%d,%.1f,ns\n", monitor, n, v50);
        fprintf(csv, "change_to_visible_p99,%s,%d,%.1f,ns\n", monitor, n, v99);
        fprintf(csv, "event_to_restored_p50,%s,%d,%.1f,ns\n", monitor, n, r50);
        fprintf(csv, "event_to_restored_p99,%s,%d,%.1f,ns\n", monitor, n, r99);
    }
    free(vis);
    free(rest);
    ucs_mrlease_engine_destroy(e);
}

static void bench_bytes_per_lease(const char *monitors)
{
    const size_t n = 100000;
    ucs_mrlease_params_t params = {.cb = restore_now};
    ucs_mrlease_engine_t *e = engine_with(monitors);
    size_t page = sysconf(_SC_PAGESIZE), i;
    ucs_mrlease_t **ls = malloc(n * sizeof(*ls));
    unsigned long broken = 0;
    struct mallinfo2 m0, m1;
    char *p, label[64];
    double per;

    params.arg = &broken;
    p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    m0 = mallinfo2();
    for (i = 0; i < n; ++i) {
        if (ucs_mrlease_acquire(e, p + i * page, page, &params, &ls[i]) != UCS_OK) {
            fprintf(stderr, "bytes per lease: acquire %zu failed\n", i);
            exit(1);
        }
    }
    m1  = mallinfo2();
    per = ((double)(m1.uordblks - m0.uordblks) + (double)(m1.hblkhd - m0.hblkhd)) / n;
    printf("%-28s %8.1f B per lease (%zu leases; goal <= 128)\n", monitors, per, n);
    snprintf(label, sizeof(label), "%s", monitors); /* CSV-safe: '+' for ',' */
    for (i = 0; label[i] != '\0'; ++i) {
        label[i] = (label[i] == ',') ? '+' : label[i];
    }
    fprintf(csv, "bytes_per_lease,%s,%zu,%.1f,B\n", label, n, per);
    for (i = 0; i < n; ++i) {
        ucs_mrlease_release(ls[i]);
    }
    free(ls);
    munmap(p, n * page);
    ucs_mrlease_engine_destroy(e);
}

static void lease_layout(void)
{
    /* where the bytes of one lease go (the engine's own struct; malloc adds
     * 8 B and rounds to 16: a 120 B struct is a 128 B chunk) */
    const size_t small = offsetof(struct ucs_mrlease, acc_first) -
                         offsetof(struct ucs_mrlease, events);
    const size_t acc   = offsetof(struct ucs_mrlease, dispatch_next) -
                         offsetof(struct ucs_mrlease, acc_first);

    printf("struct ucs_mrlease: %zu B: hot %zu, tree node %zu, engine+callback+arg "
           "%zu, state/flags/events/monitors/backing bytes %zu, pending event %zu, "
           "dispatch queue link %zu, side fields pointer %zu; the side fields "
           "(shared memory, files, leases given an fd) %zu B more\n",
           sizeof(struct ucs_mrlease), sizeof(ucs_mrlease_hot_t),
           sizeof(ucs_mrlease_tree_node_t), 3 * sizeof(void*), small, acc,
           sizeof(void*), sizeof(void*), sizeof(ucs_mrlease_ext_t));
    fprintf(csv, "sizeof_lease,struct,1,%zu,B\n", sizeof(struct ucs_mrlease));
    fprintf(csv, "sizeof_lease_ext,struct,1,%zu,B\n", sizeof(ucs_mrlease_ext_t));
}

int main(int argc, char **argv)
{
    const char *path = (argc > 1) ? argv[1] : "bench-engine.csv";
    const char *only = (argc > 2) ? argv[2] : NULL;
    const char *monitors[] = {"ucm", "uffd"};
    size_t n;
    int i;

    csv = fopen(path, only ? "a" : "w");
    if (csv == NULL) {
        perror(path);
        return 1;
    }
    if (only != NULL) {
        printf("\n## %s: change-to-visible and event-to-restored of a 1 MiB munmap\n", only);
        printf("%-8s %10s %10s %12s %12s\n", "monitor", "vis p50", "vis p99", "rest p50",
               "rest p99");
        bench_latency(only);
        bench_munmap(only, 1);
        bench_acquire(only);
        fclose(csv);
        return 0;
    }
    machine();
    bench_idle_progress();

    printf("\n## latency of a 1 MiB munmap per monitor (1000 runs)\n");
    printf("%-8s %10s %10s %12s %12s\n", "monitor", "vis p50", "vis p99", "rest p50",
           "rest p99");
    for (i = 0; i < 2; ++i) {
        bench_latency(monitors[i]);
    }

    printf("\n## engine bytes per lease (mallinfo2, 10^5 leases of one page each)\n");
    lease_layout();
    bench_bytes_per_lease("inject");
    bench_bytes_per_lease("uffd,ucm,flease,inject");

    printf("\n## munmap of a populated 1 MiB range, until it returns (2000 runs)\n");
    bench_munmap("inject", 0);
    bench_munmap("ucm", 1);
    bench_munmap("uffd", 1);
    bench_munmap("uffd,ucm,flease,inject", 1);

    printf("\n## registering a range: acquire/release of a lease on 1 MiB (2000 runs)\n");
    bench_acquire("inject");
    bench_acquire("ucm");
    bench_acquire("uffd");
    bench_acquire("uffd,ucm,flease,inject");

    printf("\n## dispatch (inject): one event to 1 lease among N / to all N, per lease,\n"
           "## each lease restored by its owner; madvise: the mapping stayed, unmap:\n"
           "## it may have been replaced, and each restore reads /proc/self/maps\n");
    printf("%-10s %-8s %17s %23s\n", "N", "event", "one of N", "all N, per lease");
    for (n = 1000; n <= 100000; n *= 10) {
        bench_dispatch(n, UCS_MRLEASE_EV_REMOVE, "madvise");
        bench_dispatch(n, UCS_MRLEASE_EV_UNMAP, "unmap");
    }
    fclose(csv);
    printf("\nCSV: %s\n", path);
    return 0;
}
