/*
 * mrlease.ko in the guest (run as root; the test loads the module built by
 * `make kmod` if /dev/mrlease is absent). The engine runs with kmod as its
 * only monitor: each change to a leased range must be visible to the very
 * next progress call after the change returns, exactly once, with the exact
 * range; changes that replace no page must not break the lease. Then the
 * module itself: load/unload/load, a process killed with ranges
 * registered, 10^5 ranges in one context, fork, max ranges.
 */
#include "kmod_test.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace mrl;

namespace {

double kmod_now_s()
{
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

} // namespace

class test_kmod : public kmod_engine_test {
};

TEST_F(test_kmod, munmap_libc)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = kmod_lease(p, len);

    ASSERT_EQ(0, munmap(p, len));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
}

TEST_F(test_kmod, munmap_raw_partial)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = kmod_lease(p, len);
    auto other = kmod_lease(p + len - m_page, m_page);

    ASSERT_EQ(0, syscall(SYS_munmap, p + 4 * m_page, 4 * m_page));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p + 4 * m_page,
               (uintptr_t)p + 8 * m_page);
    EXPECT_EQ(0u, events_of(other).size());
    munmap(p, len);
}

TEST_F(test_kmod, mremap_raw)
{
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    char *dst  = (char*)map_anon(len);
    auto l     = kmod_lease(p, len);

    memset(p, 1, len);
    void *q = (void*)syscall(SYS_mremap, p, len, len,
                             MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    ASSERT_EQ((void*)dst, q);
    /* the kernel raises UNMAP twice: one event all the same */
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
    munmap(dst, len);
}

TEST_F(test_kmod, madvise_dontneed)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = kmod_lease(p, len);

    memset(p, 1, len);
    ASSERT_EQ(0, syscall(SYS_madvise, p + 2 * m_page, 3 * m_page, MADV_DONTNEED));
    expect_one(l, UCS_MRLEASE_EV_REMOVE, (uintptr_t)p + 2 * m_page,
               (uintptr_t)p + 5 * m_page);
    munmap(p, len);
}

TEST_F(test_kmod, shmdt_raw)
{
    size_t len = 8 * m_page;
    int id     = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
    ASSERT_GE(id, 0);
    char *p = (char*)shmat(id, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    ASSERT_NE((char*)-1, p);
    memset(p, 1, len);
    auto l = kmod_lease(p, len);

    ASSERT_EQ(0, syscall(SYS_shmdt, p));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
}

TEST_F(test_kmod, mprotect_keeps_the_lease)
{
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = kmod_lease(p, len);

    memset(p, 1, len);
    ASSERT_EQ(0, mprotect(p, len, PROT_READ));
    ASSERT_EQ(0, mprotect(p, len, PROT_READ | PROT_WRITE));
    ASSERT_EQ(0, mprotect(p + m_page, m_page, PROT_NONE)); /* splits the vma */
    ucs_mrlease_progress(m_engine);
    progress_for(0.1);
    EXPECT_EQ(0u, events_of(l).size());
    EXPECT_EQ(0u, ucs_mrlease_generation(l));
    /* and still watched: */
    ASSERT_EQ(0, munmap(p, len));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
}

/* A /dev/shm file mapped by three processes, truncated by a fourth: every
 * owner sees it at its very next progress call. */
TEST_F(test_kmod, truncate_by_another_process_three_mappers)
{
    const size_t len = 16 * m_page;
    char path[]      = "/dev/shm/mrl-kmod-XXXXXX";
    int fd           = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(0, ftruncate(fd, len));
    int ready[2], go[2], result[2];
    ASSERT_EQ(0, pipe(ready));
    ASSERT_EQ(0, pipe(go));
    ASSERT_EQ(0, pipe(result));
    std::vector<pid_t> kids;

    for (int k = 0; k < 3; ++k) {
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            alarm(120);
            char verdict = 'F';
            ucs_mrlease_engine_t *engine;
            char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
                                  fd, 0);
            static int calls;
            static uintptr_t got_start, got_end;
            ucs_mrlease_params_t params = {};
            params.cb = [](ucs_mrlease_t*, const ucs_mrlease_event_t *ev,
                           void*) -> ucs_status_t {
                ++calls;
                got_start = ev->start;
                got_end   = ev->end;
                return UCS_OK;
            };
            ucs_mrlease_t *l;
            memset(p, k + 1, len);
            if ((ucs_mrlease_engine_create(&engine) == UCS_OK) &&
                (ucs_mrlease_engine_monitors(engine) &
                 UCS_BIT(UCS_MRLEASE_MONITOR_KMOD)) &&
                (ucs_mrlease_acquire(engine, p, len, &params, &l) == UCS_OK)) {
                char c;
                if ((write(ready[1], "r", 1) == 1) && (read(go[0], &c, 1) == 1)) {
                    ucs_mrlease_progress(engine); /* the very next one */
                    verdict = ((calls == 1) && (got_start == (uintptr_t)p) &&
                               (got_end == (uintptr_t)p + len)) ? 'P' : 'F';
                }
            } else {
                write(ready[1], "x", 1);
            }
            write(result[1], &verdict, 1);
            _exit(0);
        }
        kids.push_back(pid);
    }
    for (int k = 0; k < 3; ++k) {
        char c = 0;
        ASSERT_EQ(1, read(ready[0], &c, 1));
        ASSERT_EQ('r', c) << "a mapper could not lease with kmod";
    }
    pid_t changer = fork();
    if (changer == 0) {
        _exit(truncate(path, 0) == 0 ? 0 : 1);
    }
    int st;
    ASSERT_EQ(changer, waitpid(changer, &st, 0));
    ASSERT_EQ(0, WEXITSTATUS(st));
    ASSERT_EQ(3, write(go[1], "ggg", 3));
    for (int k = 0; k < 3; ++k) {
        char c = 0;
        ASSERT_EQ(1, read(result[0], &c, 1));
        EXPECT_EQ('P', c) << "a mapper did not see the truncate at once, "
                             "exactly once, with its whole range";
    }
    for (pid_t pid : kids) {
        waitpid(pid, &st, 0);
    }
    unlink(path);
    close(fd);
}

TEST_F(test_kmod, fork_child_gets_eio)
{
    kmod_ctx ctx;
    ASSERT_EQ(0, ctx.open_setup(16));
    pid_t pid = fork();
    if (pid == 0) {
        struct mrlease_event ev;
        uint32_t slot = 0;
        int ok = (read(ctx.fd, &ev, sizeof(ev)) < 0) && (errno == EIO) &&
                 (ctx.reg((void*)m_page, m_page, 0, &slot) == -EIO);
        _exit(ok ? 0 : 1);
    }
    int st;
    ASSERT_EQ(pid, waitpid(pid, &st, 0));
    EXPECT_TRUE(WIFEXITED(st) && (WEXITSTATUS(st) == 0));
}

TEST_F(test_kmod, max_ranges_enospc_and_status_words)
{
    kmod_ctx ctx;
    ASSERT_EQ(0, ctx.open_setup(4));
    EXPECT_EQ(4u, ctx.setup.max_ranges);
    char *p = (char*)map_anon(8 * m_page);
    uint32_t slot[5] = {};
    for (int i = 0; i < 4; ++i) {
        ASSERT_EQ(0, ctx.reg(p + i * m_page, m_page, 100 + i, &slot[i]));
    }
    EXPECT_EQ(-ENOSPC, ctx.reg(p, m_page, 0, &slot[4]));
    EXPECT_EQ(-EINVAL, ctx.reg(p + 1, m_page, 0, &slot[4]));
    /* the status area is read-only */
    EXPECT_EQ(MAP_FAILED, mmap(NULL, ctx.setup.status_size, PROT_WRITE,
                               MAP_SHARED, ctx.fd, 0));

    ASSERT_EQ(0, munmap(p + 2 * m_page, m_page));
    EXPECT_NE(0u, ctx.pending) << "pending word not raised before munmap returned";
    EXPECT_EQ(1u, ctx.slot_status(slot[2])->pending);
    EXPECT_EQ(1u, ctx.slot_status(slot[2])->generation);
    EXPECT_EQ(0u, ctx.slot_status(slot[1])->generation);
    auto evs = ctx.read_all();
    ASSERT_EQ(1u, evs.size());
    EXPECT_EQ(102u, evs[0].cookie);
    EXPECT_EQ((uintptr_t)p + 2 * m_page, evs[0].start);
    EXPECT_EQ(MRLEASE_EV_UNMAP, evs[0].kind);
    EXPECT_EQ(0u, ctx.slot_status(slot[2])->pending) << "read, so not pending";

    uint32_t s = slot[1];
    EXPECT_EQ(0, ioctl(ctx.fd, MRLEASE_IOC_UNREGISTER, &s));
    EXPECT_EQ(-1, ioctl(ctx.fd, MRLEASE_IOC_UNREGISTER, &s));
    EXPECT_EQ(ENOENT, errno);
    EXPECT_EQ(0, ctx.reg(p, m_page, 0, &slot[4])) << "a slot is free again";
    munmap(p, 8 * m_page);
}

TEST_F(test_kmod, overflow_folds_never_loses)
{
    kmod_ctx ctx;
    ASSERT_EQ(0, ctx.open_setup(4, 8));
    char *p = (char*)map_anon(m_page);
    uint32_t slot = 0;
    ASSERT_EQ(0, ctx.reg(p, m_page, 7, &slot));
    for (int i = 0; i < 100; ++i) {
        p[0] = 1;
        ASSERT_EQ(0, madvise(p, m_page, MADV_DONTNEED));
    }
    auto evs = ctx.read_all();
    ASSERT_EQ(9u, evs.size()); /* the overflow, then the 8 queued */
    EXPECT_TRUE(evs[0].kind & MRLEASE_EV_OVERFLOW);
    EXPECT_EQ(MRLEASE_SLOT_ALL, evs[0].slot);
    EXPECT_EQ(100u, ctx.slot_status(slot)->generation);
    EXPECT_EQ(0u, ctx.status->queued);
    munmap(p, m_page);
}

TEST_F(test_kmod, hundred_thousand_ranges)
{
    const size_t n = 100000;
    kmod_ctx ctx;
    ASSERT_EQ(0, ctx.open_setup(n));
    char *p = (char*)mmap(NULL, n * m_page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(MAP_FAILED, p);
    double t0 = kmod_now_s();
    uint32_t slot = 0;
    for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(0, ctx.reg(p + i * m_page, m_page, i, &slot));
    }
    double t1 = kmod_now_s();
    EXPECT_EQ(-ENOSPC, ctx.reg(p, m_page, 0, &slot));
    ASSERT_EQ(0, munmap(p + 4242 * m_page, m_page));
    /* Splitting a THP-eligible vma raises CLEAR over the aligned 2 MiB
     * around the cut, present pages or not (__split_huge_pmd): neighbours
     * may be told too, conservatively; the unmapped one exactly once. */
    auto evs     = ctx.read_all();
    size_t unmap = 0;
    for (auto &ev : evs) {
        if (ev.kind == MRLEASE_EV_UNMAP) {
            EXPECT_EQ(4242u, ev.cookie);
            ++unmap;
        } else {
            EXPECT_EQ(MRLEASE_EV_CLEAR, ev.kind);
            EXPECT_LT(std::abs((long)ev.cookie - 4242), 512);
        }
    }
    EXPECT_EQ(1u, unmap);
    ASSERT_EQ(0, munmap(p, n * m_page));
    evs = ctx.read_all();
    ASSERT_FALSE(evs.empty());
    if (!(evs[0].kind & MRLEASE_EV_OVERFLOW)) {
        EXPECT_EQ(n - 1, evs.size()) << "every other range told";
    }
    /* the hole's range is told again: conservative, never fewer */
    EXPECT_LE(n, ctx.status->events);
    double t2 = kmod_now_s();
    munmap(ctx.status, ctx.setup.status_size); /* holds the file too */
    ctx.status = nullptr;
    close(ctx.fd);
    ctx.fd = -1;
    double t3 = kmod_now_s();
    printf("kmod: 1e5 ranges: register %.2f us each, munmap of all %.1f ms, "
           "close %.1f ms\n", (t1 - t0) * 1e6 / n, (t2 - t1) * 1e3,
           (t3 - t2) * 1e3);
}

/* A process that never calls progress (a pure-UCT program under
 * libuct_ib_lease) relies on the engine's dispatcher thread: a kernel event
 * must wake it, and the owner is called back with no call of its own. */
TEST_F(test_kmod, dispatcher_woken_without_progress)
{
    static std::atomic<int> calls;
    static std::atomic<uintptr_t> got_start, got_end;
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    ucs_mrlease_params_t params = {};
    ucs_mrlease_t *l;

    calls = 0;
    params.cb = [](ucs_mrlease_t*, const ucs_mrlease_event_t *ev,
                   void*) -> ucs_status_t {
        got_start = ev->start;
        got_end   = ev->end;
        ++calls;
        return UCS_OK;
    };
    ASSERT_EQ(UCS_OK, ucs_mrlease_engine_start_dispatcher(m_engine));
    ASSERT_EQ(UCS_OK, ucs_mrlease_acquire(m_engine, p, len, &params, &l));
    ASSERT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_KMOD));

    for (int round = 0; round < 3; ++round) {
        ASSERT_EQ(0, syscall(SYS_munmap, p + round * m_page, m_page));
        double t0 = kmod_now_s();
        while ((calls < round + 1) && (kmod_now_s() - t0 < 10)) {
            usleep(1000); /* no progress call of ours */
        }
        ASSERT_EQ(round + 1, calls.load())
            << "the dispatcher thread was not woken by the kernel's event";
        EXPECT_EQ((uintptr_t)p + round * m_page, got_start.load());
        EXPECT_EQ((uintptr_t)p + (round + 1) * m_page, got_end.load());
        printf("kmod: munmap to callback in the dispatcher thread: %.0f us\n",
               (kmod_now_s() - t0) * 1e6);
    }
    ucs_mrlease_release(l);
    munmap(p, len);
}

/* The kernel's counters, through the API and `mrlease-ctl PID counters`. */
TEST_F(test_kmod, counters_in_mrlease_ctl)
{
    ucs_mrlease_engine_destroy(m_engine);
    m_engine = nullptr;
    ASSERT_EQ(UCS_OK, create("kmod,inject", {{"UCX_MRLEASE_CTL_SOCKET", "y"}}));
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    char *q    = (char*)map_anon(len);
    kmod_lease(p, len);
    kmod_lease(q, len);
    memset(p, 1, len);

    ucs_mrlease_counters_t c = counters();
    EXPECT_EQ(2u, c.kmod_ranges);
    EXPECT_EQ(0u, c.kmod_unwatched);
    EXPECT_EQ(0u, c.kmod_breaks);
    ASSERT_EQ(0, mprotect(p, len, PROT_READ));
    ASSERT_EQ(0, syscall(SYS_madvise, p, m_page, MADV_DONTNEED));
    ucs_mrlease_progress(m_engine);
    c = counters();
    EXPECT_LE(1u, c.kmod_ignored) << "mprotect: told, and kept the lease";
    EXPECT_EQ(1u, c.kmod_breaks);
    EXPECT_EQ(0u, c.kmod_overflows);

    run_result r = run({builddir_path("src/tools/mrlease-ctl"),
                        std::to_string(getpid()), "counters"}, {}, 30);
    ASSERT_EQ(0, r.status) << r.output;
    for (auto line : {"kmod_ranges               2\n",
                      "kmod_unwatched            0\n",
                      "kmod_breaks               1\n",
                      "kmod_overflows            0\n",
                      "kmod_pmd_clears           0\n",
                      "monitor.kmod              1\n"}) {
        EXPECT_NE(std::string::npos, r.output.find(line)) << line << r.output;
    }
    EXPECT_NE(std::string::npos, r.output.find("kmod_ignored")) << r.output;
    munmap(p, len);
    munmap(q, len);
}

/* Figures for the README: munmap cost leased/unleased, change-to-visible. */
TEST_F(test_kmod, munmap_cost)
{
    const size_t len = 256 * m_page; /* 1 MiB */
    const int reps   = 200;
    double plain = 0, leased = 0, visible = 0;

    for (int r = 0; r < reps; ++r) {
        char *p = (char*)map_anon(len);
        memset(p, 1, len);
        double t0 = kmod_now_s();
        munmap(p, len);
        plain += kmod_now_s() - t0;

        p = (char*)map_anon(len);
        memset(p, 1, len);
        auto l = lease(p, len);
        t0 = kmod_now_s();
        munmap(p, len);
        leased += kmod_now_s() - t0;
        t0 = kmod_now_s();
        ucs_mrlease_progress(m_engine);
        visible += kmod_now_s() - t0;
        ASSERT_EQ(1u, events_of(l).size());
        release(l);
        m_events.clear();
    }
    printf("kmod: munmap of a populated 1 MiB range: unleased %.1f us, leased "
           "%.1f us (ratio %.2f); progress delivering it %.1f us\n",
           plain * 1e6 / reps, leased * 1e6 / reps, leased / plain,
           visible * 1e6 / reps);
}

/* The median of v (reordered) */
static double kmod_median(std::vector<double> &v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

/* The same with the dispatcher thread on (the reader polls /dev/mrlease and
 * is woken by each change, as under libuct_ib_lease): what the wake-up costs
 * the changer, and the change-to-callback latency of the thread. Besides the
 * means, medians and the median of each round's leased/unleased ratio, which
 * a loaded machine's bursts move less. */
TEST_F(test_kmod, munmap_cost_with_dispatcher)
{
    static std::atomic<int> calls;
    const size_t len = 256 * m_page; /* 1 MiB */
    const int reps   = 200;
    double plain = 0, leased = 0, visible = 0;
    std::vector<double> plains, leaseds, ratios, visibles;
    ucs_mrlease_params_t params = {};
    ucs_mrlease_t *l;

    params.cb = [](ucs_mrlease_t*, const ucs_mrlease_event_t*,
                   void*) -> ucs_status_t {
        ++calls;
        return UCS_OK;
    };
    ASSERT_EQ(UCS_OK, ucs_mrlease_engine_start_dispatcher(m_engine));
    for (int r = 0; r < reps; ++r) {
        char *p = (char*)map_anon(len);
        memset(p, 1, len);
        double t0 = kmod_now_s();
        munmap(p, len);
        double tp = kmod_now_s() - t0;
        plain += tp;

        p = (char*)map_anon(len);
        memset(p, 1, len);
        ASSERT_EQ(UCS_OK, ucs_mrlease_acquire(m_engine, p, len, &params, &l));
        calls = 0;
        t0    = kmod_now_s();
        munmap(p, len);
        double t1 = kmod_now_s();
        leased += t1 - t0;
        while ((calls == 0) && (kmod_now_s() - t1 < 10)) {
            /* spin: no progress call of ours */
        }
        ASSERT_EQ(1, calls.load()) << "round " << r;
        double tv = kmod_now_s() - t0;
        visible += tv;
        plains.push_back(tp);
        leaseds.push_back(t1 - t0);
        ratios.push_back((t1 - t0) / tp);
        visibles.push_back(tv);
        ucs_mrlease_release(l);
    }
    printf("kmod: with the dispatcher thread: munmap of a populated 1 MiB range: "
           "unleased %.1f us, leased %.1f us (ratio %.2f); munmap to callback "
           "%.1f us\n", plain * 1e6 / reps, leased * 1e6 / reps, leased / plain,
           visible * 1e6 / reps);
    printf("kmod: with the dispatcher thread, medians of %d rounds: unleased %.1f us, "
           "leased %.1f us, ratio of each round %.2f; munmap to callback %.1f us\n",
           reps, kmod_median(plains) * 1e6, kmod_median(leaseds) * 1e6,
           kmod_median(ratios), kmod_median(visibles) * 1e6);
}

/* Module lifecycle; runs last in this file (it unloads the module). */
TEST_F(test_kmod, zz_lifecycle_killed_process_unload_reload)
{
    /* a busy module refuses to go */
    EXPECT_NE(0, kmod_unload().status) << "unloaded with an open context";

    pid_t pid = fork();
    if (pid == 0) {
        kmod_ctx ctx;
        size_t n = 1000;
        char *p  = (char*)mmap(NULL, n * m_page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint32_t slot = 0;
        if (ctx.open_setup(n) != 0) {
            _exit(1);
        }
        for (size_t i = 0; i < n; ++i) {
            if (ctx.reg(p + i * m_page, m_page, i, &slot) != 0) {
                _exit(1);
            }
        }
        kill(getpid(), SIGSTOP);
        _exit(0);
    }
    int st;
    ASSERT_EQ(pid, waitpid(pid, &st, WUNTRACED));
    ASSERT_TRUE(WIFSTOPPED(st)) << "the child could not register";
    kill(pid, SIGKILL);
    ASSERT_EQ(pid, waitpid(pid, &st, 0));

    /* the engine's own context goes too */
    for (auto l : std::vector<ucs_mrlease_t*>(m_leases)) {
        release(l);
    }
    ucs_mrlease_engine_destroy(m_engine);
    m_engine = nullptr;

    run_result r = kmod_unload();
    ASSERT_EQ(0, r.status) << "rmmod after every context closed: " << r.output;
    EXPECT_NE(0, access(MRLEASE_DEVICE, F_OK));
    ASSERT_TRUE(kmod_load());
    ASSERT_EQ(0, kmod_unload().status);
    ASSERT_TRUE(kmod_load());
    EXPECT_EQ("", dmesg_problems());
}
