/*
 * The range monitors against the real kernel: each change to a leased range
 * must produce the right event with the right range, and be visible to the
 * very next progress call after the change returns.
 */
#include "mrlease_test.h"

#include <signal.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mrl;

class test_range_monitor : public test_mrlease,
                           public ::testing::WithParamInterface<std::string> {
protected:
    void SetUp() override
    {
        ASSERT_EQ(UCS_OK, create(GetParam()));
        m_bit = (GetParam() == "uffd") ? UCS_BIT(UCS_MRLEASE_MONITOR_UFFD) :
                                         UCS_BIT(UCS_MRLEASE_MONITOR_UCM);
        if (!(ucs_mrlease_engine_monitors(m_engine) & m_bit)) {
            GTEST_FAIL() << "monitor " << GetParam() << " did not start on this "
                         << "kernel (see the warning above)";
        }
    }

    bool uffd() const { return GetParam() == "uffd"; }

    /* madvise(DONTNEED) as the monitor under test sees it: by a raw system
     * call for uffd (no hook does), through libc for ucm */
    int dontneed(void *addr, size_t len) const
    {
        return uffd() ? (int)syscall(SYS_madvise, addr, len, MADV_DONTNEED) :
                        madvise(addr, len, MADV_DONTNEED);
    }

    /* The change has returned: the next progress call must deliver it, once,
     * with at least the kinds given and none of `never`. */
    void expect_one(ucs_mrlease_t *l, unsigned kinds, uintptr_t start,
                    uintptr_t end, unsigned never = 0)
    {
        ucs_mrlease_progress(m_engine);
        ASSERT_EQ(1u, events_of(l).size())
            << "not visible right after the change returned";
        progress_for(0.05);
        auto ev = events_of(l);
        ASSERT_EQ(1u, ev.size()) << "duplicated";
        EXPECT_EQ(kinds, ev[0].ev.kinds & kinds) << "kinds 0x" << std::hex
                                                 << ev[0].ev.kinds;
        EXPECT_EQ(0u, ev[0].ev.kinds & never) << "kinds 0x" << std::hex
                                              << ev[0].ev.kinds;
        EXPECT_EQ(start, ev[0].ev.start);
        EXPECT_EQ(end, ev[0].ev.end);
        EXPECT_TRUE(ev[0].ev.monitors & m_bit);
        EXPECT_EQ(1u, ev[0].generation);
    }

    unsigned m_bit;
};

TEST_P(test_range_monitor, munmap)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);

    ASSERT_EQ(0, munmap(p, len));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
}

TEST_P(test_range_monitor, partial_munmap)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);
    auto other = lease(p + len - m_page, m_page); /* not touched */

    ASSERT_EQ(0, munmap(p + 4 * m_page, 4 * m_page));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p + 4 * m_page,
               (uintptr_t)p + 8 * m_page);
    EXPECT_EQ(0u, events_of(other).size());
    munmap(p, len);
}

/* UCX 1.13's mremap hook takes four arguments and drops MREMAP_FIXED's new
 * address (the call then fails with EINVAL): move with the raw syscall. */
TEST_P(test_range_monitor, mremap_moved_fixed)
{
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    char *dst  = (char*)map_anon(len);
    auto l     = lease(p, len);

    char *q = (char*)syscall(SYS_mremap, p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
                             dst);
    ASSERT_EQ(dst, q);
    if (uffd()) {
        expect_one(l, UCS_MRLEASE_EV_REMAP, (uintptr_t)p, (uintptr_t)p + len);
        EXPECT_EQ((uintptr_t)dst, events_of(l)[0].ev.new_start);
    } else {
        progress_for(0.1);
        EXPECT_EQ(0u, events_of(l).size()) << "ucm saw a raw syscall";
    }
    munmap(q, len);
}

TEST_P(test_range_monitor, mremap_grown)
{
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(2 * len);
    /* A guard right after the range forces growth to move it. */
    munmap(p + len, len);
    char *guard = (char*)mmap(p + len, m_page, PROT_NONE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    ASSERT_EQ(p + len, guard);
    auto l = lease(p, len);

    char *q = (char*)mremap(p, len, 4 * len, MREMAP_MAYMOVE);
    ASSERT_NE(MAP_FAILED, (void*)q);
    ASSERT_NE(p, q);
    if (uffd()) {
        expect_one(l, UCS_MRLEASE_EV_REMAP, (uintptr_t)p, (uintptr_t)p + len);
        EXPECT_EQ((uintptr_t)q, events_of(l)[0].ev.new_start);
    } else {
        expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
    }
    munmap(q, 4 * len);
    munmap(guard, m_page);
}

TEST_P(test_range_monitor, madvise_dontneed)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);

    ASSERT_EQ(0, madvise(p + 2 * m_page, 3 * m_page, MADV_DONTNEED));
    expect_one(l, uffd() ? UCS_MRLEASE_EV_REMOVE : UCS_MRLEASE_EV_UNMAP,
               (uintptr_t)p + 2 * m_page, (uintptr_t)p + 5 * m_page,
               uffd() ? UCS_MRLEASE_EV_UNMAP : 0);
    EXPECT_EQ(1u, events_of(l)[0].ev.reports);
    munmap(p, len);
}

/* Two changes before one progress call: one event, which says it folds
 * several reports (the zap witness trusts a first page gone only for one:
 * the kernel makes one REMOVE per vma and change). */
TEST_P(test_range_monitor, several_reports_fold_into_one_event)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);

    memset(p, 1, len);
    ASSERT_EQ(0, dontneed(p + 2 * m_page, m_page));
    ASSERT_EQ(0, dontneed(p + 9 * m_page, m_page));
    ucs_mrlease_progress(m_engine);
    auto ev = events_of(l);
    ASSERT_EQ(1u, ev.size());
    EXPECT_EQ(2u, ev[0].ev.reports);
    EXPECT_EQ((uintptr_t)p + 2 * m_page, ev[0].ev.start);
    EXPECT_EQ((uintptr_t)p + 10 * m_page, ev[0].ev.end);
    munmap(p, len);
}

TEST_P(test_range_monitor, shmdt)
{
    size_t len = 8 * m_page;
    int id     = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
    ASSERT_GE(id, 0);
    char *p = (char*)shmat(id, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    ASSERT_NE((void*)-1, (void*)p);
    memset(p, 1, len);
    auto l = lease(p, len);
    ucs_mrlease_backing_t backing;
    ucs_mrlease_backing(l, &backing);
    EXPECT_EQ(UCS_MRLEASE_BACKING_SHMEM, backing.type);
    EXPECT_TRUE(backing.sysv);
    EXPECT_TRUE(backing.shared);
    EXPECT_NE(0u, backing.ino); /* kept beside the lease (ext) */
    ASSERT_TRUE(ucs_mrlease_monitored_by(l) & m_bit);

    ASSERT_EQ(0, shmdt(p));
    if (uffd()) {
        /* The kernel's shmdt unmaps without a userfaultfd context: no event.
         * ucm sees shmdt through libc. */
        progress_for(0.1);
        EXPECT_EQ(0u, events_of(l).size()) << "the kernel now reports shmdt";
    } else {
        expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
    }
}

/* A direct syscall bypasses libc: the kernel sees it, UCX's hooks cannot. */
TEST_P(test_range_monitor, direct_syscall_munmap)
{
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);

    ASSERT_EQ(0, syscall(SYS_munmap, p, len));
    if (uffd()) {
        expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
    } else {
        progress_for(0.2);
        EXPECT_EQ(0u, events_of(l).size())
            << "ucm saw a raw syscall: the premise of this test changed";
    }
}

TEST_P(test_range_monitor, fork)
{
    size_t len = 4 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);

    if (uffd() && !is_root()) {
        GTEST_SKIP() << "SKIPPED LOUDLY: userfaultfd fork events need CAP_SYS_PTRACE";
    }
    pid_t pid = fork();
    if (pid == 0) {
        _exit(0);
    }
    ASSERT_GT(pid, 0);
    int status;
    waitpid(pid, &status, 0);
    ucs_mrlease_progress(m_engine);
    auto ev = events_of(l);
    ASSERT_EQ(1u, ev.size());
    EXPECT_TRUE(ev[0].ev.kinds & UCS_MRLEASE_EV_FORK);
    EXPECT_EQ((uintptr_t)p, ev[0].ev.start);
    EXPECT_EQ((uintptr_t)p + len, ev[0].ev.end);
    munmap(p, len);
}

/* A restore after a change that kept the vma (madvise, as userfaultfd tells
 * it) re-arms without reading the memory map again, and the lease is still
 * watched: a later munmap by the same means is seen; its restore reads the
 * map. */
TEST_P(test_range_monitor, restore_after_dontneed_keeps_watching)
{
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    auto l     = lease(p, len);

    memset(p, 1, len);
    ASSERT_EQ(0, dontneed(p, len));
    /* UCM tells a madvise as VM_UNMAPPED, as it tells a munmap: that one
     * restore reads the map (an unmap may have replaced the mapping) */
    unsigned reads = uffd() ? 0 : 1;
    expect_one(l, uffd() ? UCS_MRLEASE_EV_REMOVE : UCS_MRLEASE_EV_UNMAP,
               (uintptr_t)p, (uintptr_t)p + len);
    auto c = counters();
    EXPECT_EQ(1u, c.leases_restored);
    EXPECT_EQ(reads, c.restores_remapped) << "the memory map was read again";
    EXPECT_TRUE(ucs_mrlease_monitored_by(l) & m_bit);

    memset(p, 2, len);
    if (uffd()) {
        ASSERT_EQ(0, syscall(SYS_munmap, p, len));
    } else {
        ASSERT_EQ(0, munmap(p, len));
    }
    ucs_mrlease_progress(m_engine);
    auto ev = events_of(l);
    ASSERT_EQ(2u, ev.size()) << "the munmap after the restore went unseen";
    EXPECT_TRUE(ev[1].ev.kinds & UCS_MRLEASE_EV_UNMAP);
    c = counters();
    EXPECT_EQ(2u, c.leases_restored);
    EXPECT_EQ(reads + 1, c.restores_remapped);
}

/* The thread that runs progress is the changer: the engine's own reader
 * must release it, many times over, without a progress call in between. */
TEST_P(test_range_monitor, changer_is_progress_thread)
{
    const int n = 2000;
    std::vector<char*> bufs;
    std::vector<ucs_mrlease_t*> ls;

    for (int i = 0; i < n; ++i) {
        bufs.push_back((char*)map_anon(m_page));
        ls.push_back(lease(bufs.back(), m_page));
    }
    alarm(30); /* a deadlock fails the run instead of hanging it */
    for (int i = 0; i < n; ++i) {
        ASSERT_EQ(0, munmap(bufs[i], m_page));
    }
    alarm(0);
    ucs_mrlease_progress(m_engine);
    for (int i = 0; i < n; ++i) {
        ASSERT_EQ(1u, events_of(ls[i]).size()) << "lease " << i;
    }
    auto c = counters();
    EXPECT_EQ((uint64_t)n, c.leases_broken);
    if (uffd()) {
        EXPECT_GE(c.held_count, 1u);
        EXPECT_LT(c.held_ns_max, 1000000000ull) << "a changer was held over 1 s";
    }
}

INSTANTIATE_TEST_SUITE_P(monitor, test_range_monitor,
                         ::testing::Values("uffd", "ucm"));
