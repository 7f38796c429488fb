/*
 * The zap witness (src/uct_ib_lease/zap_witness.h) against the real kernel,
 * with the real protocol: a changer's raw madvise(MADV_DONTNEED) is held by
 * userfaultfd until its REMOVE is read, then let go at the lowest
 * scheduling class while other threads spin, the gap a descheduled thread
 * leaves. The witness must not return before the pages are gone; it must
 * not take never-mapped pages, or a running thread, for proof.
 */
#include "mrlease_test.h"

extern "C" {
#include "../../src/uct_ib_lease/zap_witness.h"
}

#include <atomic>
#include <cstring>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace mrl;

class test_zap_witness : public test_mrlease {
protected:
    void SetUp() override
    {
        map(256 * m_page);
    }

    void map(size_t len)
    {
        if (m_buf != nullptr) {
            munmap(m_buf, m_len);
        }
        m_len = len;
        m_buf = (char*)map_anon(m_len);
        ASSERT_NE(nullptr, m_buf);
    }

    void TearDown() override
    {
        stop_spinning();
        if (m_uffd >= 0) {
            close(m_uffd);
        }
        munmap(m_buf, m_len);
    }

    ib_lease_zap_t zap(int present)
    {
        ib_lease_zap_t z = {};
        z.start   = (uintptr_t)m_buf;
        z.end     = (uintptr_t)m_buf + m_len;
        z.present = present;
        z.seq     = 1;
        return z;
    }

    /* userfaultfd reporting REMOVE for m_buf, as the uffd monitor has it */
    void watch()
    {
        m_uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (m_uffd < 0) {
            GTEST_SKIP() << "userfaultfd: " << strerror(errno)
                         << " (needs root or vm.unprivileged_userfaultfd=1)";
        }
        struct uffdio_api api = {};
        api.api      = UFFD_API;
        api.features = UFFD_FEATURE_EVENT_REMOVE;
        ASSERT_EQ(0, ioctl(m_uffd, UFFDIO_API, &api)) << strerror(errno);
        struct uffdio_register reg = {};
        reg.range.start = (uintptr_t)m_buf;
        reg.range.len   = m_len;
        reg.mode        = UFFDIO_REGISTER_MODE_WP;
        ASSERT_EQ(0, ioctl(m_uffd, UFFDIO_REGISTER, &reg)) << strerror(errno);
    }

    /* Wait for the held changer's REMOVE, then read it: the changer is let
     * go, and will zap when the scheduler gives it a CPU. */
    void release_changer()
    {
        struct pollfd pfd = {m_uffd, POLLIN, 0};
        ASSERT_EQ(1, poll(&pfd, 1, 10000)) << "no REMOVE reported";
        struct uffd_msg msg;
        ASSERT_EQ((ssize_t)sizeof(msg), read(m_uffd, &msg, sizeof(msg)));
        ASSERT_EQ(UFFD_EVENT_REMOVE, msg.event);
    }

    /* Threads that never block: on a busy machine a SCHED_IDLE changer
     * waits for them; they also show "running" to the witness. */
    void spin(unsigned n)
    {
        m_spin = true;
        for (unsigned i = 0; i < n; ++i) {
            m_spinners.emplace_back([this] {
                while (m_spin.load(std::memory_order_relaxed)) {
                }
            });
        }
    }

    void stop_spinning()
    {
        m_spin = false;
        for (auto &t : m_spinners) {
            t.join();
        }
        m_spinners.clear();
    }

    size_t pages_mapped()
    {
        std::vector<unsigned char> vec(m_len / m_page);
        EXPECT_EQ(0, mincore(m_buf, m_len, vec.data()));
        size_t n = 0;
        for (unsigned char v : vec) {
            n += v & 1;
        }
        return n;
    }

    size_t                   m_len = 0;
    char                     *m_buf = nullptr;
    int                      m_uffd = -1;
    std::atomic<bool>        m_spin{false};
    std::vector<std::thread> m_spinners;
};

/* The gap itself: the changer let go at SCHED_IDLE while two threads spin.
 * Returning before the zap would leave pages mapped for a re-bind to pin. */
TEST_F(test_zap_witness, returns_only_after_a_descheduled_changer_zaps)
{
    watch();
    memset(m_buf, 1, m_len);
    std::atomic<long> ret{1};
    std::thread changer([&] {
        struct sched_param param = {};
        pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);
        ret = syscall(SYS_madvise, m_buf, m_len, MADV_DONTNEED);
    });
    release_changer();
    spin(2);
    double t0                = ib_lease_zap_now();
    ib_lease_zap_t z         = zap(1);
    ib_lease_zap_result_t r  = ib_lease_zap_wait(&z, t0 + 30.0);
    size_t left              = pages_mapped();
    stop_spinning();
    changer.join();
    EXPECT_EQ(0, ret.load());
    EXPECT_EQ(IB_LEASE_ZAP_SEEN, r);
    EXPECT_EQ(0u, left) << "the witness returned with the zap not done";
}

TEST_F(test_zap_witness, a_thread_held_inside_madvise_is_not_quiet)
{
    watch();
    memset(m_buf, 1, m_len);
    int done[2];
    ASSERT_EQ(0, pipe(done));
    std::atomic<long> tid{0};
    std::thread changer([&] {
        char c;
        tid = syscall(SYS_gettid);
        syscall(SYS_madvise, m_buf, m_len, MADV_DONTNEED);
        /* then blocked in another call: read(2) */
        EXPECT_EQ(1, read(done[0], &c, 1));
    });
    struct pollfd pfd = {m_uffd, POLLIN, 0};
    ASSERT_EQ(1, poll(&pfd, 1, 10000));
    int held = -1;
    for (int i = 0; (i < 1000) && (held != 0); ++i) { /* blocked, not just reported */
        held = ib_lease_zap_thread_quiet(tid);
        usleep(1000);
    }
    EXPECT_EQ(0, held) << "a changer held inside madvise";
    EXPECT_EQ(0, ib_lease_zap_others_quiet());
    release_changer();
    int after = -1;
    for (int i = 0; (i < 5000) && (after != 1); ++i) {
        after = ib_lease_zap_thread_quiet(tid);
        usleep(1000);
    }
    EXPECT_EQ(1, after) << "blocked in read(2), done with madvise";
    ASSERT_EQ(1, write(done[1], "x", 1));
    changer.join();
    close(done[0]);
    close(done[1]);
}

/* This thread made the change and touched every page again: nothing shows
 * the zap, but no other thread can be making one. */
TEST_F(test_zap_witness, quiet_when_no_other_thread_can_be_changing)
{
    memset(m_buf, 1, m_len);
    ASSERT_EQ(0, syscall(SYS_madvise, m_buf, m_len, MADV_DONTNEED));
    memset(m_buf, 2, m_len);
    ib_lease_zap_t z = zap(1);
    double t0        = ib_lease_zap_now();
    EXPECT_EQ(IB_LEASE_ZAP_QUIET, ib_lease_zap_wait(&z, t0 + 10.0));
    EXPECT_LT(ib_lease_zap_now() - t0, 1.0);
}

TEST_F(test_zap_witness, a_running_thread_leaves_it_unproven)
{
    memset(m_buf, 1, m_len);
    spin(1);
    ib_lease_zap_t z = zap(1);
    double t0        = ib_lease_zap_now();
    EXPECT_EQ(IB_LEASE_ZAP_UNSEEN, ib_lease_zap_wait(&z, t0 + 0.2));
    EXPECT_GE(ib_lease_zap_now() - t0, 0.2);
}

TEST_F(test_zap_witness, pages_never_mapped_are_no_proof)
{
    /* never touched: every page is absent, but the window was not bound at
     * the report, so that says nothing about a zap */
    spin(1);
    ib_lease_zap_t z = zap(0);
    double t0        = ib_lease_zap_now();
    EXPECT_EQ(IB_LEASE_ZAP_UNSEEN, ib_lease_zap_wait(&z, t0 + 0.2));
}
