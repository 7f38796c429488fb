/*
 * mrlease.ko's bounded hold (MRLEASE_IOC_SET_HOLD, MRLEASE_IOC_ACK), on the
 * raw interface, in the guest: a changer whose change breaks a range returns
 * only after the owner has handled the event (the owner thread stamps the
 * time, then acks), where holding is safe: munmap, madvise, another
 * process's truncate. A changer holding mmap_lock for write (mremap, shmdt)
 * is never held, an owner that never acks costs exactly the timeout, a held
 * changer killed with SIGKILL returns at once. Without the hold the same
 * check fails: the changer is back before the owner has seen anything.
 */
#include "kmod_test.h"

#include <algorithm>
#include <atomic>
#include <poll.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <time.h>
#include <vector>

using namespace mrl;

namespace {

int64_t now_ns()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct mrlease_hold_info hold_info(int fd)
{
    struct mrlease_hold_info info = {};
    EXPECT_EQ(0, ioctl(fd, MRLEASE_IOC_HOLD_INFO, &info)) << strerror(errno);
    return info;
}

int set_hold(int fd, uint32_t us)
{
    return (ioctl(fd, MRLEASE_IOC_SET_HOLD, &us) == 0) ? 0 : -errno;
}

/*
 * The owner: a thread that polls the context, reads the events, takes
 * delay_ms to "handle" them, stamps the time, then acks every hold whose
 * events it has read (or not, if ack is false). It allocates nothing and
 * touches only memory it touched before: malloc may map (a new thread's
 * arena) or mprotect (a growing one), which waits for a changer holding
 * our mmap_lock for read: the hold would then run to its timeout.
 */
class hold_owner {
public:
    hold_owner(kmod_ctx &ctx, bool ack, int delay_ms, bool unreg = false) :
        m_ctx(ctx), m_ack(ack), m_delay_ms(delay_ms), m_unreg(unreg),
        m_thread([this] { loop(); })
    {
    }

    ~hold_owner()
    {
        m_stop = true;
        m_thread.join();
    }

    /* Events handled so far, the time the last were, their kinds. */
    std::atomic<uint64_t> handled{0};
    std::atomic<int64_t>  handled_ns{0};
    std::atomic<uint32_t> kinds{0};

    void reset()
    {
        handled_ns = 0;
        kinds      = 0;
    }

private:
    void loop()
    {
        while (!m_stop) {
            struct pollfd pfd = {m_ctx.fd, POLLIN, 0};
            if (poll(&pfd, 1, 5) <= 0) {
                continue;
            }
            ssize_t n, count = 0;
            uint32_t k = 0;
            while ((n = read(m_ctx.fd, m_evs, sizeof(m_evs))) > 0) {
                for (size_t i = 0; i < n / sizeof(m_evs[0]); ++i) {
                    k |= m_evs[i].kind;
                    if (m_unreg) { /* as an rcache region let go of */
                        ioctl(m_ctx.fd, MRLEASE_IOC_UNREGISTER, &m_evs[i].slot);
                    }
                }
                count += n / sizeof(m_evs[0]);
            }
            if (count == 0) {
                continue;
            }
            if (m_delay_ms > 0) {
                usleep(m_delay_ms * 1000);
            }
            kinds      |= k;
            handled_ns  = now_ns();
            handled    += count;
            /* every hold whose events we have read (and handled) */
            uint64_t seq = __atomic_load_n(&m_ctx.status->hold_read,
                                           __ATOMIC_ACQUIRE);
            if (m_ack && (seq > m_acked)) {
                EXPECT_EQ(0, ioctl(m_ctx.fd, MRLEASE_IOC_ACK, &seq));
                m_acked = seq;
            }
        }
    }

    kmod_ctx          &m_ctx;
    bool              m_ack;
    int               m_delay_ms;
    bool              m_unreg;
    uint64_t          m_acked = 0;
    struct mrlease_event m_evs[64] = {}; /* touched here, before any hold */
    std::atomic<bool> m_stop{false};
    std::thread       m_thread;
};

/* What one change cost the changer, and what the owner had done by then. */
struct change_result {
    int64_t  call_ns;
    bool     owner_first; /* the owner had handled it when the call returned */
    uint32_t kinds;
};

} // namespace

class test_kmod_hold : public ::testing::Test {
protected:
    void SetUp() override
    {
        ASSERT_EQ(0u, geteuid()) << "run in the guest (make check-rdma)";
        ASSERT_TRUE(kmod_load());
        m_page = sysconf(_SC_PAGESIZE);
        ASSERT_EQ(0, m_ctx.open_setup(4096));
    }

    void TearDown() override
    {
        EXPECT_EQ("", dmesg_problems());
    }

    char *map_leased(size_t len, int flags = MAP_PRIVATE | MAP_ANONYMOUS,
                     int fd = -1)
    {
        char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
        EXPECT_NE(MAP_FAILED, (void*)p);
        memset(p, 1, len);
        EXPECT_EQ(0, m_ctx.reg(p, len, (uintptr_t)p, &m_slot));
        return p;
    }

    /* Unregister the last range: a later one at the same address would
     * otherwise be watched twice (two breaks, two holds). */
    void drop()
    {
        EXPECT_EQ(0, ioctl(m_ctx.fd, MRLEASE_IOC_UNREGISTER, &m_slot));
    }

    /* Run change(), timed, and see what the owner had done when it returned. */
    template<typename F>
    change_result timed(hold_owner &owner, F change)
    {
        owner.reset();
        int64_t t0 = now_ns();
        change();
        int64_t t1 = now_ns();
        int64_t h  = owner.handled_ns;
        return {t1 - t0, (h != 0) && (h <= t1), owner.kinds};
    }

    size_t   m_page;
    uint32_t m_slot = 0;
    kmod_ctx m_ctx;
};

TEST_F(test_kmod_hold, bounds)
{
    uint64_t seq = 1;

    EXPECT_EQ(-EINVAL, set_hold(m_ctx.fd, MRLEASE_HOLD_MAX_US + 1));
    EXPECT_EQ(-EINVAL, set_hold(m_ctx.fd, UINT32_MAX));
    EXPECT_EQ(0, set_hold(m_ctx.fd, MRLEASE_HOLD_MAX_US));
    EXPECT_EQ(MRLEASE_HOLD_MAX_US, hold_info(m_ctx.fd).timeout_us);
    EXPECT_EQ(0, set_hold(m_ctx.fd, 0));
    /* nothing was raised: an ack of it is refused */
    EXPECT_EQ(-1, ioctl(m_ctx.fd, MRLEASE_IOC_ACK, &seq));
    EXPECT_EQ(EINVAL, errno);
    EXPECT_EQ(0u, hold_info(m_ctx.fd).hold_seq);
}

/* munmap and madvise hold the owner's mmap_lock for read: held until the
 * owner, 30 ms to handle the event, has acked. */
TEST_F(test_kmod_hold, munmap_and_madvise_return_after_the_owner)
{
    const size_t len = 16 * m_page;
    ASSERT_EQ(0, set_hold(m_ctx.fd, MRLEASE_HOLD_MAX_US));
    hold_owner owner(m_ctx, true, 30);

    char *p = map_leased(len);
    auto r  = timed(owner, [&] { ASSERT_EQ(0, munmap(p, len)); });
    EXPECT_TRUE(r.owner_first) << "munmap returned before the owner handled it";
    EXPECT_TRUE(r.kinds & MRLEASE_EV_BEFORE) << std::hex << r.kinds;
    EXPECT_GE(r.call_ns, 30000000) << "not held while the owner worked";
    drop(); /* with the hold set: removed in the background, never waits */

    p = map_leased(len);
    r = timed(owner, [&] {
        ASSERT_EQ(0, syscall(SYS_madvise, p, len, MADV_DONTNEED));
    });
    EXPECT_TRUE(r.owner_first) << "madvise returned before the owner handled it";
    drop();
    munmap(p, len);

    auto info = hold_info(m_ctx.fd);
    EXPECT_EQ(2u, info.holds);
    EXPECT_EQ(0u, info.timeouts) << "the owner acked: no hold ran out";
    EXPECT_EQ(0u, info.holding);
    EXPECT_EQ(info.hold_seq, info.acked);
}

/* The owner unregisters the range before it acks (an rcache region let go
 * of in its callback): removing a notifier waits for the invalidation in
 * progress, which waits for this owner; with the hold set the module
 * removes it in the background, and the munmap is never held to the
 * timeout. */
TEST_F(test_kmod_hold, unregister_during_the_hold_never_waits)
{
    const size_t len = 16 * m_page;
    ASSERT_EQ(0, set_hold(m_ctx.fd, MRLEASE_HOLD_MAX_US));
    hold_owner owner(m_ctx, true, 0, true);

    for (int i = 0; i < 5; ++i) {
        char *p = map_leased(len);
        auto r  = timed(owner, [&] { ASSERT_EQ(0, munmap(p, len)); });
        EXPECT_TRUE(r.owner_first);
        EXPECT_LT(r.call_ns, 500000000) << "held towards the 1 s timeout";
    }
    auto info = hold_info(m_ctx.fd);
    EXPECT_EQ(5u, info.holds);
    EXPECT_EQ(0u, info.timeouts);
}

/* The control: the same check without the hold fails. */
TEST_F(test_kmod_hold, without_the_hold_the_changer_returns_first)
{
    const size_t len = 16 * m_page;
    hold_owner owner(m_ctx, true, 30);

    char *p = map_leased(len);
    auto r  = timed(owner, [&] { ASSERT_EQ(0, munmap(p, len)); });
    EXPECT_FALSE(r.owner_first);
    EXPECT_LT(r.call_ns, 30000000);
    EXPECT_EQ(0u, hold_info(m_ctx.fd).holds);
}

/* Another process truncates a /dev/shm file we map: it returns only after
 * our owner has handled it (the child stamps the time its call returned). */
TEST_F(test_kmod_hold, truncate_by_another_process_returns_after_the_owner)
{
    const size_t len = 16 * m_page;
    char path[]      = "/dev/shm/mrl-hold-XXXXXX";
    int fd           = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(0, ftruncate(fd, len));
    auto *stamp = (std::atomic<int64_t>*)mmap(NULL, m_page,
                                              PROT_READ | PROT_WRITE,
                                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(MAP_FAILED, (void*)stamp);

    for (uint32_t hold_us : {MRLEASE_HOLD_MAX_US, 0u}) {
        SCOPED_TRACE(hold_us ? "hold on" : "hold off");
        ASSERT_EQ(0, ftruncate(fd, len));
        ASSERT_EQ(0, set_hold(m_ctx.fd, hold_us));
        char *p = map_leased(len, MAP_SHARED, fd);
        hold_owner owner(m_ctx, true, 30);
        uint64_t holds = hold_info(m_ctx.fd).holds;

        *stamp    = 0;
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            int ret = truncate(path, 0);
            *stamp  = now_ns();
            _exit(ret == 0 ? 0 : 1);
        }
        int st;
        ASSERT_EQ(pid, waitpid(pid, &st, 0));
        ASSERT_TRUE(WIFEXITED(st) && (WEXITSTATUS(st) == 0));
        int64_t h = owner.handled_ns;
        if (hold_us) {
            EXPECT_TRUE((h != 0) && (h <= *stamp))
                << "truncate returned before the owner handled it";
            EXPECT_GT(hold_info(m_ctx.fd).holds, holds);
        } else {
            EXPECT_FALSE((h != 0) && (h <= *stamp))
                << "the control: without the hold the changer is first";
        }
        drop();
        munmap(p, len);
    }
    EXPECT_EQ(0u, hold_info(m_ctx.fd).timeouts);
    munmap(stamp, m_page);
    unlink(path);
    close(fd);
}

/* mremap and shmdt take mmap_lock for write: never held (counted as
 * unsafe), never stalled to the timeout, although the owner never acks. */
TEST_F(test_kmod_hold, writers_are_never_held)
{
    const size_t len = 8 * m_page;
    ASSERT_EQ(0, set_hold(m_ctx.fd, MRLEASE_HOLD_MAX_US));
    hold_owner owner(m_ctx, false, 0);

    char *p   = map_leased(len);
    char *dst = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int64_t t0 = now_ns();
    ASSERT_EQ((void*)dst, (void*)syscall(SYS_mremap, p, len, len,
                                         MREMAP_MAYMOVE | MREMAP_FIXED, dst));
    int64_t mremap_ns = now_ns() - t0;
    munmap(dst, len);

    int id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
    ASSERT_GE(id, 0);
    char *s = (char*)shmat(id, NULL, 0);
    ASSERT_NE((void*)-1, (void*)s);
    shmctl(id, IPC_RMID, NULL);
    memset(s, 1, len);
    uint32_t slot;
    ASSERT_EQ(0, m_ctx.reg(s, len, 1, &slot));
    t0 = now_ns();
    ASSERT_EQ(0, syscall(SYS_shmdt, s));
    int64_t shmdt_ns = now_ns() - t0;

    /* fork write-protects the parent under mmap_lock for write: no break */
    char *f = map_leased(len);
    t0      = now_ns();
    pid_t pid = fork();
    if (pid == 0) {
        _exit(0);
    }
    int64_t fork_ns = now_ns() - t0;
    waitpid(pid, NULL, 0);
    ASSERT_EQ(0, set_hold(m_ctx.fd, 0)); /* nobody acks its munmap */
    munmap(f, len);

    auto info = hold_info(m_ctx.fd);
    EXPECT_LT(mremap_ns, 500000000) << "mremap stalled";
    EXPECT_LT(shmdt_ns, 500000000) << "shmdt stalled";
    EXPECT_LT(fork_ns, 500000000) << "fork stalled";
    /* mremap raises UNMAP twice, shmdt once */
    EXPECT_GE(info.unsafe, 3u);
    EXPECT_EQ(0u, info.holds);
}

/* An owner that never acks costs the changer the timeout, no more. */
TEST_F(test_kmod_hold, no_ack_costs_exactly_the_timeout)
{
    const size_t len   = 4 * m_page;
    const int64_t tout = 50000000; /* 50 ms */
    std::vector<int64_t> ns;
    ASSERT_EQ(0, set_hold(m_ctx.fd, tout / 1000));
    hold_owner owner(m_ctx, false, 0);

    for (int i = 0; i < 5; ++i) {
        char *p = map_leased(len);
        ns.push_back(timed(owner, [&] { munmap(p, len); }).call_ns);
        drop();
    }
    std::sort(ns.begin(), ns.end());
    auto info = hold_info(m_ctx.fd);
    printf("no ack, timeout 50 ms: munmap took %.1f .. %.1f ms; the module's "
           "longest hold %.1f ms\n", ns.front() / 1e6, ns.back() / 1e6,
           info.max_ns / 1e6);
    EXPECT_GE(ns.front(), tout);
    /* the timer's slack and a loaded emulator: well under two timeouts */
    EXPECT_LT(ns[ns.size() / 2], 2 * tout);
    EXPECT_EQ(5u, info.holds);
    EXPECT_EQ(5u, info.timeouts);
    EXPECT_GE(info.max_ns, (uint64_t)tout);
}

/* A changer held (nobody acks, timeout 1 s) and killed returns at once. */
TEST_F(test_kmod_hold, kill_of_a_held_changer_returns)
{
    int ready[2];
    ASSERT_EQ(0, pipe(ready));
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        kmod_ctx ctx;
        size_t len = 4 * m_page;
        char *p    = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint32_t slot;
        memset(p, 1, len);
        if ((ctx.open_setup(16) != 0) ||
            (set_hold(ctx.fd, MRLEASE_HOLD_MAX_US) != 0) ||
            (ctx.reg(p, len, 1, &slot) != 0)) {
            _exit(2);
        }
        write(ready[1], "r", 1);
        munmap(p, len); /* held: nobody acks */
        _exit(0);
    }
    char c = 0;
    ASSERT_EQ(1, read(ready[0], &c, 1));
    usleep(300000);
    int64_t t0 = now_ns();
    kill(pid, SIGKILL);
    int st;
    ASSERT_EQ(pid, waitpid(pid, &st, 0));
    int64_t reap_ns = now_ns() - t0;
    printf("killed held changer reaped in %.1f ms\n", reap_ns / 1e6);
    EXPECT_TRUE(WIFSIGNALED(st))
        << "the child was not held in munmap 300 ms on (status " << st << ")";
    EXPECT_LT(reap_ns, 400000000) << "the hold did not end at SIGKILL";
    close(ready[0]);
    close(ready[1]);
}

/* Figures: what a change costs the changer with the hold off and on (the
 * owner acking at once), and the hold itself (the module's ns) per kind;
 * and munmap of a leased range against an unleased one. */
TEST_F(test_kmod_hold, measure)
{
    const size_t len = 256 * m_page; /* 1 MiB */
    const int rounds = 100;
    char path[]      = "/dev/shm/mrl-hold-XXXXXX";
    int fd           = mkstemp(path);
    ASSERT_GE(fd, 0);
    hold_owner owner(m_ctx, true, 0);

    auto pct = [](std::vector<int64_t> v, double q) {
        std::sort(v.begin(), v.end());
        return v.empty() ? 0.0 : v[(size_t)(q * (v.size() - 1))] / 1e3;
    };
    for (const char *kind : {"munmap", "madvise", "truncate"}) {
        std::vector<int64_t> call[2], held;
        for (int i = 0; i < rounds; ++i) {
            for (int on = 0; on < 2; ++on) { /* interleaved: one run */
                char *p;
                ASSERT_EQ(0, set_hold(m_ctx.fd, on ? MRLEASE_HOLD_MAX_US : 0));
                if (!strcmp(kind, "truncate")) {
                    ASSERT_EQ(0, ftruncate(fd, len));
                    p = map_leased(len, MAP_SHARED, fd);
                } else {
                    p = map_leased(len);
                }
                auto before = hold_info(m_ctx.fd);
                int64_t t0  = now_ns();
                if (!strcmp(kind, "munmap")) {
                    munmap(p, len);
                } else if (!strcmp(kind, "madvise")) {
                    madvise(p, len, MADV_DONTNEED);
                } else {
                    /* by the owner process itself, for the figure (another
                     * process's: truncate_by_another_process_...) */
                    ftruncate(fd, 0);
                }
                call[on].push_back(now_ns() - t0);
                auto after = hold_info(m_ctx.fd);
                if (after.holds > before.holds) {
                    held.push_back(after.total_ns - before.total_ns);
                }
                drop();
                if (strcmp(kind, "munmap")) {
                    munmap(p, len);
                }
            }
        }
        printf("%-8s call p50/p99: hold off %8.1f / %8.1f us, hold on %8.1f / "
               "%8.1f us; %3zu held, hold p50/p99 %8.1f / %8.1f us\n", kind,
               pct(call[0], 0.5), pct(call[0], 0.99), pct(call[1], 0.5),
               pct(call[1], 0.99), held.size(), pct(held, 0.5), pct(held, 0.99));
    }

    /* munmap of a populated 1 MiB range, leased / unleased, hold off and on,
     * interleaved in one run */
    std::vector<int64_t> plain, off, on;
    for (int i = 0; i < rounds; ++i) {
        char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 1, len);
        int64_t t0 = now_ns();
        munmap(p, len);
        plain.push_back(now_ns() - t0);
        for (uint32_t hold_us : {0u, MRLEASE_HOLD_MAX_US}) {
            ASSERT_EQ(0, set_hold(m_ctx.fd, hold_us));
            p  = map_leased(len);
            t0 = now_ns();
            munmap(p, len);
            (hold_us ? on : off).push_back(now_ns() - t0);
            drop();
        }
    }
    double u = pct(plain, 0.5);
    printf("munmap 1 MiB medians: unleased %.1f us, leased hold off %.1f us "
           "(%.2fx), hold on %.1f us (%.2fx)\n", u, pct(off, 0.5),
           pct(off, 0.5) / u, pct(on, 0.5), pct(on, 0.5) / u);
    run_result up = run({"/usr/bin/uptime"}, {}, 10);
    printf("guest uptime: %s", up.output.c_str());
    EXPECT_EQ(0u, hold_info(m_ctx.fd).timeouts) << "the owner acks at once";
    unlink(path);
    close(fd);
}

/*
 * The engine (kmod the only monitor, UCX_MRLEASE_KMOD_HOLD): with a
 * dispatcher thread, a munmap or madvise of leased memory returns only after
 * the owner's callback has returned; without one nobody acks and a change
 * costs the timeout.
 */
class test_kmod_hold_engine : public test_mrlease {
protected:
    void start(const std::string &hold)
    {
        ASSERT_EQ(0u, geteuid()) << "run in the guest (make check-rdma)";
        ASSERT_TRUE(kmod_load());
        ASSERT_EQ(UCS_OK, create("kmod", {{"UCX_MRLEASE_KMOD_HOLD", hold}}));
        ASSERT_TRUE(ucs_mrlease_engine_monitors(m_engine) &
                    UCS_BIT(UCS_MRLEASE_MONITOR_KMOD));
    }

    void TearDown() override
    {
        test_mrlease::TearDown();
        EXPECT_EQ("", dmesg_problems());
    }

    /* The owner: 20 ms to let go of its registration, then the stamp. */
    static ucs_status_t slow_owner(ucs_mrlease_t*, const ucs_mrlease_event_t *ev,
                                   void*)
    {
        usleep(20000);
        s_kinds     = ev->kinds;
        s_called_ns = now_ns();
        return UCS_OK;
    }

    /* change() on a leased 1 MiB range: did the callback return first? */
    template<typename F>
    change_result leased_change(F change)
    {
        const size_t len = 256 * sysconf(_SC_PAGESIZE);
        char *p          = (char*)map_anon(len);
        ucs_mrlease_params_t params = {};
        ucs_mrlease_t *l;

        memset(p, 1, len);
        params.cb = slow_owner;
        EXPECT_EQ(UCS_OK, ucs_mrlease_acquire(m_engine, p, len, &params, &l));
        s_called_ns = 0;
        int64_t t0  = now_ns();
        change(p, len);
        int64_t t1  = now_ns();
        int64_t c   = s_called_ns;
        for (int i = 0; (i < 10000) && (s_called_ns == 0); ++i) {
            usleep(1000); /* the callback, late: the control case */
        }
        EXPECT_NE(0, s_called_ns.load()) << "no callback at all";
        ucs_mrlease_release(l);
        munmap(p, len);
        return {t1 - t0, (c != 0) && (c <= t1), s_kinds};
    }

    static std::atomic<int64_t>  s_called_ns;
    static std::atomic<unsigned> s_kinds;
};

std::atomic<int64_t>  test_kmod_hold_engine::s_called_ns;
std::atomic<unsigned> test_kmod_hold_engine::s_kinds;

TEST_F(test_kmod_hold_engine, munmap_and_madvise_return_after_the_callback)
{
    start("1s");
    ASSERT_EQ(UCS_OK, ucs_mrlease_engine_start_dispatcher(m_engine));
    auto r = leased_change([](char *p, size_t len) { munmap(p, len); });
    EXPECT_TRUE(r.owner_first) << "munmap returned before the owner's callback";
    /* told before the change: owners let go, re-register after it */
    EXPECT_TRUE(r.kinds & UCS_MRLEASE_EV_REMOVE) << std::hex << r.kinds;
    r = leased_change([](char *p, size_t len) {
        syscall(SYS_madvise, p, len, MADV_DONTNEED);
    });
    EXPECT_TRUE(r.owner_first) << "madvise returned before the owner's callback";
    auto c = counters();
    EXPECT_GE(c.kmod_holds, 2u);
    EXPECT_EQ(0u, c.kmod_hold_timeouts) << "the dispatcher acked";
    EXPECT_GE(c.kmod_hold_ns_max, 20000000u) << "held while the owner worked";
}

TEST_F(test_kmod_hold_engine, without_the_hold_the_changer_returns_first)
{
    start("0");
    ASSERT_EQ(UCS_OK, ucs_mrlease_engine_start_dispatcher(m_engine));
    auto r = leased_change([](char *p, size_t len) { munmap(p, len); });
    EXPECT_FALSE(r.owner_first);
    EXPECT_EQ(0u, counters().kmod_holds);
}

/* No dispatcher: the changer is the only thread that would progress, nobody
 * acks, and each held change costs the timeout (counted), no more. */
TEST_F(test_kmod_hold_engine, no_dispatcher_costs_the_timeout)
{
    start("50ms");
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);
    int64_t t0 = now_ns();
    ASSERT_EQ(0, munmap(p, len));
    int64_t ns = now_ns() - t0;
    printf("no dispatcher, timeout 50 ms: munmap took %.1f ms\n", ns / 1e6);
    EXPECT_GE(ns, 50000000);
    EXPECT_LT(ns, 100000000);
    ucs_mrlease_progress(m_engine);
    ASSERT_EQ(1u, events_of(l).size()) << "not visible right after the change";
    auto c = counters();
    EXPECT_EQ(1u, c.kmod_holds);
    EXPECT_EQ(1u, c.kmod_hold_timeouts);
}

/* The figure: munmap of a populated 1 MiB range leased / unleased, with the
 * dispatcher thread, hold off and on, interleaved in one run. */
TEST_F(test_kmod_hold_engine, munmap_cost_hold_off_and_on)
{
    const size_t len = 256 * m_page;
    const int rounds = 100;
    std::vector<double> ratio[2];
    static std::atomic<int> calls;
    ucs_mrlease_params_t params = {};

    params.cb = [](ucs_mrlease_t*, const ucs_mrlease_event_t*,
                   void*) -> ucs_status_t {
        ++calls;
        return UCS_OK;
    };
    for (int hold = 0; hold < 2; ++hold) {
        start(hold ? "1s" : "0");
        ASSERT_EQ(UCS_OK, ucs_mrlease_engine_start_dispatcher(m_engine));
        for (int r = 0; r < rounds; ++r) {
            char *p = (char*)map_anon(len);
            memset(p, 1, len);
            int64_t t0 = now_ns();
            munmap(p, len);
            int64_t plain = now_ns() - t0;
            ucs_mrlease_t *l;
            p = (char*)map_anon(len);
            memset(p, 1, len);
            ASSERT_EQ(UCS_OK, ucs_mrlease_acquire(m_engine, p, len, &params, &l));
            calls = 0;
            t0    = now_ns();
            munmap(p, len);
            int64_t leased = now_ns() - t0;
            for (int i = 0; (i < 10000) && (calls == 0); ++i) {
                usleep(100);
            }
            ASSERT_EQ(1, calls.load());
            ratio[hold].push_back((double)leased / plain);
            ucs_mrlease_release(l);
        }
        if (hold) {
            auto c = counters();
            printf("hold on: %llu holds, %llu timeouts, mean %.1f us, max %.1f us\n",
                   (unsigned long long)c.kmod_holds,
                   (unsigned long long)c.kmod_hold_timeouts,
                   c.kmod_holds ? c.kmod_hold_ns_total / 1e3 / c.kmod_holds : 0.0,
                   c.kmod_hold_ns_max / 1e3);
            EXPECT_EQ(0u, c.kmod_hold_timeouts);
        }
        test_mrlease::TearDown();
    }
    for (auto &v : ratio) {
        std::sort(v.begin(), v.end());
    }
    printf("munmap 1 MiB leased/unleased with the dispatcher, median of per-round "
           "ratios (p90): hold off %.2f (%.2f), hold on %.2f (%.2f)\n",
           ratio[0][rounds / 2], ratio[0][rounds * 9 / 10],
           ratio[1][rounds / 2], ratio[1][rounds * 9 / 10]);
    run_result up = run({"/usr/bin/uptime"}, {}, 10);
    printf("guest uptime: %s", up.output.c_str());
}
