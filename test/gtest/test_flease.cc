/*
 * File leases against the real kernel: another process that truncates or
 * opens a leased file for writing is held until the owner has restored, on
 * ext4 (/var/tmp) and on tmpfs (/dev/shm).
 */
#include "mrlease_test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mrl;

class test_flease : public test_mrlease,
                    public ::testing::WithParamInterface<std::string> {
protected:
    void SetUp() override
    {
        char tmpl[256];
        snprintf(tmpl, sizeof(tmpl), "%s/mrlease-flease-XXXXXX", GetParam().c_str());
        m_fd = mkstemp(tmpl);
        ASSERT_GE(m_fd, 0) << tmpl;
        m_path = tmpl;
        m_len  = 64 * m_page;
        ASSERT_EQ(0, ftruncate(m_fd, m_len));
        m_buf = (char*)mmap(NULL, m_len, PROT_READ | PROT_WRITE, MAP_SHARED, m_fd, 0);
        ASSERT_NE(MAP_FAILED, (void*)m_buf);
        memset(m_buf, 0x42, m_len);
    }

    void TearDown() override
    {
        test_mrlease::TearDown();
        if (m_buf != NULL) {
            munmap(m_buf, m_len);
        }
        if (m_fd >= 0) {
            close(m_fd);
        }
        unlink(m_path.c_str());
    }

    void create_flease(const std::map<std::string, std::string> &vars = {})
    {
        ASSERT_EQ(UCS_OK, create("flease", vars));
        ASSERT_TRUE(ucs_mrlease_engine_monitors(m_engine) &
                    UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    }

    pid_t start_changer(const char *mode, int *out)
    {
        return spawn({builddir_path("test/helpers/file_changer"), mode, m_path, "0"},
                     out);
    }

    static bool still_running(pid_t pid)
    {
        int status;
        return waitpid(pid, &status, WNOHANG) == 0;
    }

    static double waited_s(const std::string &out)
    {
        size_t pos = out.find("waited_ns ");
        return (pos == std::string::npos) ? -1 :
               std::stoull(out.substr(pos + 10)) * 1e-9;
    }

    /* A changer is held until we say restored, then proceeds. */
    void check_held(ucs_mrlease_t *l, const char *mode)
    {
        const double hold = 0.3;
        int out;

        ASSERT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
        m_answer  = UCS_INPROGRESS;
        pid_t pid = start_changer(mode, &out);
        ASSERT_GT(pid, 0);
        ASSERT_EQ(1u, progress_until(1, 10)) << "no lease break seen";
        auto ev = events_of(l);
        ASSERT_EQ(1u, ev.size());
        EXPECT_EQ(UCS_MRLEASE_EV_FILE_BREAK, ev[0].ev.kinds);
        EXPECT_EQ(UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE), ev[0].ev.monitors);

        usleep(hold * 1e6);
        EXPECT_TRUE(still_running(pid)) << "the changer was not held";
        ucs_mrlease_restored(l, UCS_OK);
        run_result r = wait_for(pid, out, 20);
        ASSERT_EQ(0, r.status) << r.output;
        EXPECT_GE(waited_s(r.output), hold) << r.output;
        EXPECT_LT(waited_s(r.output), 10.0) << r.output;

        /* Taken back once the changer is gone, and owners told. */
        m_answer = UCS_OK;
        ASSERT_EQ(2u, progress_until(2, 10)) << "lease not taken back";
        EXPECT_EQ(UCS_MRLEASE_EV_FILE_REARM, events_of(l)[1].ev.kinds);
        auto c = counters();
        EXPECT_GE(c.held_count, 1u);
        EXPECT_GE(c.held_ns_max, (uint64_t)(hold * 1e9));
        EXPECT_EQ(0u, c.file_leases_forced);
    }

    std::string m_path;
    int         m_fd  = -1;
    char        *m_buf = NULL;
    size_t      m_len = 0;
};

TEST_P(test_flease, truncate_with_fd)
{
    create_flease();
    check_held(lease(m_buf, m_len, m_fd), "truncate");
}

TEST_P(test_flease, open_for_write_with_fd)
{
    create_flease();
    check_held(lease(m_buf, m_len, m_fd), "ftruncate");
}

/* Without the fd, the mapping is adopted onto the engine's own descriptor;
 * its contents and its link to the file must not change. */
TEST_P(test_flease, truncate_adopted)
{
    create_flease();
    close(m_fd);
    m_fd = -1;
    auto l = lease(m_buf + 4 * m_page, 8 * m_page);
    EXPECT_EQ(1u, counters().file_leases_adopted);
    check_held(l, "truncate");
}

TEST_P(test_flease, adopted_mapping_is_the_same_file)
{
    create_flease();
    close(m_fd);
    m_fd   = -1;
    auto l = lease(m_buf + 4 * m_page, 8 * m_page);
    EXPECT_EQ(1u, counters().file_leases_adopted);
    EXPECT_EQ(0x42, m_buf[4 * m_page]);
    EXPECT_EQ(0x42, m_buf[60 * m_page]);
    m_buf[5 * m_page]  = 0x17; /* inside the lease */
    m_buf[40 * m_page] = 0x18; /* elsewhere in the same mapping */
    release(l);                /* opening the file now would break the lease */
    int fd = open(m_path.c_str(), O_RDONLY);
    char c[2] = {0, 0};
    ASSERT_EQ(1, pread(fd, &c[0], 1, 5 * m_page));
    ASSERT_EQ(1, pread(fd, &c[1], 1, 40 * m_page));
    close(fd);
    EXPECT_EQ(0x17, c[0]) << "adopted mapping no longer writes to the file";
    EXPECT_EQ(0x18, c[1]);
}

/* The progress thread itself opens the leased file: nobody can handle the
 * break, so it is let go after the stall timeout, loudly, not after 45 s. */
TEST_P(test_flease, own_open_is_not_held_for_long)
{
    create_flease({{"UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "200ms"},
                   {"UCX_MRLEASE_FLEASE_REARM_INTERVAL", "5ms"}});
    auto l = lease(m_buf, m_len, m_fd);
    ASSERT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    testing::internal::CaptureStdout();
    double t0 = now_s();
    int fd    = open(m_path.c_str(), O_RDONLY);
    double dt = now_s() - t0;
    std::string log = testing::internal::GetCapturedStdout();
    ASSERT_GE(fd, 0);
    EXPECT_GE(dt, 0.15);
    EXPECT_LT(dt, 5.0) << "held until lease-break-time";
    EXPECT_NE(std::string::npos, log.find("STALL_TIMEOUT")) << log;
    EXPECT_EQ(1u, counters().file_leases_stalled);
    close(fd);
    /* The lease comes back, and the owner re-validates its registration. */
    ASSERT_EQ(1u, progress_until(1, 5));
    EXPECT_EQ(UCS_MRLEASE_EV_FILE_REARM, events_of(l)[0].ev.kinds);
}

TEST_P(test_flease, no_fd_no_adopt_is_not_monitored)
{
    create_flease({{"UCX_MRLEASE_FLEASE_ADOPT", "n"}});
    close(m_fd);
    m_fd = -1;
    testing::internal::CaptureStdout();
    auto l = lease(m_buf, m_len);
    testing::internal::GetCapturedStdout();
    EXPECT_FALSE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    EXPECT_EQ(1u, counters().leases_unmonitored);
}

/* Someone else has the file open: the lease waits for them to let go. */
TEST_P(test_flease, deferred_while_open_elsewhere)
{
    create_flease({{"UCX_MRLEASE_FLEASE_REARM_INTERVAL", "5ms"}});
    int out;
    pid_t holder = spawn({"/bin/sh", "-c", "exec 3<\"$0\"; sleep 0.5", m_path}, &out);
    ASSERT_GT(holder, 0);
    usleep(200000);
    auto l = lease(m_buf, m_len, m_fd);
    EXPECT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    wait_for(holder, out, 10);
    ASSERT_EQ(1u, progress_until(1, 5));
    EXPECT_EQ(UCS_MRLEASE_EV_FILE_REARM, events_of(l)[0].ev.kinds);
    /* and from now on it holds changers */
    m_events.clear();
    check_held(l, "truncate");
}

/* Several leases on one file: the changer goes on after the last restore. */
TEST_P(test_flease, held_until_every_lease_restored)
{
    create_flease();
    auto a = lease(m_buf, 8 * m_page, m_fd);
    auto b = lease(m_buf + 16 * m_page, 8 * m_page, m_fd);
    m_answer = UCS_INPROGRESS;
    int out;
    pid_t pid = start_changer("truncate", &out);
    ASSERT_EQ(2u, progress_until(2, 10));
    ucs_mrlease_restored(a, UCS_OK);
    usleep(200000);
    EXPECT_TRUE(still_running(pid)) << "released before every lease restored";
    ucs_mrlease_restored(b, UCS_OK);
    run_result r = wait_for(pid, out, 10);
    EXPECT_EQ(0, r.status) << r.output;
}

/* The kernel gives up waiting after lease-break-time: we notice and say so. */
TEST_P(test_flease, forced_break_is_counted)
{
    if (!is_root()) {
        GTEST_SKIP() << "SKIPPED LOUDLY: needs root to shorten /proc/sys/fs/lease-break-time";
    }
    FILE *f = fopen("/proc/sys/fs/lease-break-time", "r+");
    ASSERT_NE(nullptr, f);
    int saved = 45;
    ASSERT_EQ(1, fscanf(f, "%d", &saved));
    fclose(f);
    struct break_time {
        int saved;
        static void set(int s) {
            FILE *w = fopen("/proc/sys/fs/lease-break-time", "w");
            fprintf(w, "%d\n", s);
            fclose(w);
        }
        ~break_time() { set(saved); }
    } guard{saved};
    break_time::set(1);

    create_flease();
    auto l   = lease(m_buf, m_len, m_fd);
    m_answer = UCS_INPROGRESS;
    int out;
    pid_t pid = start_changer("truncate", &out);
    ASSERT_EQ(1u, progress_until(1, 10));
    run_result r = wait_for(pid, out, 20); /* the kernel lets it go */
    EXPECT_EQ(0, r.status);
    EXPECT_GE(waited_s(r.output), 0.9);
    testing::internal::CaptureStdout();
    ucs_mrlease_restored(l, UCS_OK);
    std::string log = testing::internal::GetCapturedStdout();
    EXPECT_NE(std::string::npos, log.find("by force")) << log;
    EXPECT_EQ(1u, counters().file_leases_forced);
}

/* With the dispatcher thread, a break is handled with no progress call at
 * all: the changer goes on as soon as the owner restores, not after the
 * stall timeout. */
TEST_P(test_flease, dispatcher_handles_break_without_progress)
{
    create_flease({{"UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "2s"}});
    ASSERT_EQ(UCS_OK, ucs_mrlease_engine_start_dispatcher(m_engine));
    auto l = lease(m_buf, m_len, m_fd);
    ASSERT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    m_answer = UCS_OK; /* restored at once, from the dispatcher thread */
    int out;
    pid_t pid    = start_changer("truncate", &out);
    run_result r = wait_for(pid, out, 20); /* no progress call here */
    ASSERT_EQ(0, r.status) << r.output;
    EXPECT_LT(waited_s(r.output), 1.0) << r.output;
    auto c = counters();
    EXPECT_EQ(0u, c.file_leases_stalled);
    EXPECT_GE(c.leases_broken, 1u);
    EXPECT_GE(c.leases_restored, 1u);
}

/* The event queue overflows while a file break is on its way: the break is
 * folded into "every lease may be decoherent", and must still hold the
 * changer until the owner restores (not be let go by the stall timer). */
TEST_P(test_flease, break_folded_by_queue_overflow_still_holds)
{
    ASSERT_EQ(UCS_OK, create("uffd,flease", {{"UCX_MRLEASE_QUEUE_LEN", "16"}}));
    ucs_mrlease_t *l = lease(m_buf, m_len, m_fd);
    ASSERT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    const size_t pages = 48;
    char *anon = (char*)map_anon(pages * m_page);
    ucs_mrlease_t *la = lease(anon, pages * m_page);

    /* more changes than the queue holds, and no progress */
    for (size_t i = 0; i < pages; ++i) {
        ASSERT_EQ(0, syscall(SYS_madvise, anon + i * m_page, m_page, MADV_DONTNEED));
    }
    m_answer  = UCS_INPROGRESS;
    int out;
    pid_t pid = start_changer("truncate", &out);
    ASSERT_GT(pid, 0);
    usleep(200000); /* the break is read, and folded */
    ASSERT_GE(progress_until(2, 10), 2u);
    EXPECT_GE(counters().queue_overflows, 1u) << "the premise: no overflow";
    auto ev = events_of(l);
    ASSERT_FALSE(ev.empty());
    EXPECT_TRUE(ev[0].ev.kinds & UCS_MRLEASE_EV_FILE_BREAK);

    usleep(1500000); /* past UCX_MRLEASE_FLEASE_STALL_TIMEOUT (1 s) */
    EXPECT_TRUE(still_running(pid)) << "the changer was let go before the restore";
    EXPECT_EQ(0u, counters().file_leases_stalled);
    ucs_mrlease_restored(la, UCS_OK);
    ucs_mrlease_restored(l, UCS_OK);
    run_result r = wait_for(pid, out, 20);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_GE(waited_s(r.output), 1.5) << r.output;
    munmap(anon, pages * m_page);
}

INSTANTIATE_TEST_SUITE_P(fs, test_flease, ::testing::Values("/var/tmp", "/dev/shm"));
