/*
 * Whole processes: the control CLI against this process, a statically
 * linked binary, an unprivileged user, and a kernel without the features.
 */
#include "mrlease_test.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mrl;

static std::string self_exe()
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static bool is_child(const char *role)
{
    const char *v = getenv("MRL_CHILD");
    return (v != NULL) && !strcmp(v, role);
}

class test_processes : public test_mrlease {
};

TEST_F(test_processes, ctl_inject_and_counters)
{
    ASSERT_EQ(UCS_OK, create("inject"));
    char *p = (char*)map_anon(8 * m_page);
    auto l  = lease(p, 8 * m_page);
    char addr[32], len[32], pid[32];
    snprintf(addr, sizeof(addr), "%lx", (unsigned long)(p + m_page));
    snprintf(len, sizeof(len), "%zu", 2 * m_page);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());

    std::string ctl = builddir_path("src/tools/mrlease-ctl");
    run_result r    = run({ctl, pid, "inject", addr, len, "remove"});
    EXPECT_EQ(0, r.status) << r.output;
    ASSERT_EQ(1u, progress_until(1));
    EXPECT_EQ(UCS_MRLEASE_EV_REMOVE | UCS_MRLEASE_EV_INJECT, events_of(l)[0].ev.kinds);
    EXPECT_EQ((uintptr_t)p + m_page, events_of(l)[0].ev.start);
    EXPECT_EQ((uintptr_t)p + 3 * m_page, events_of(l)[0].ev.end);

    r = run({ctl, pid, "counters"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("leases_broken             1")) << r.output;

    r = run({ctl, pid, "inject", addr, len, "nonsense"});
    EXPECT_NE(0, r.status);
    EXPECT_NE(std::string::npos, r.output.find("usage")) << r.output;
    r = run({ctl, "1", "counters"}); /* init has no engine */
    EXPECT_NE(0, r.status);
    munmap(p, 8 * m_page);
}

TEST_F(test_processes, ctl_config_lists_variables)
{
    run_result r = run({builddir_path("src/tools/mrlease-ctl"), "config"});
    EXPECT_EQ(0, r.status);
    for (auto var : {"UCX_MRLEASE_MONITORS", "UCX_MRLEASE_QUEUE_LEN",
                     "UCX_MRLEASE_FLEASE_SIGNAL", "UCX_MRLEASE_FLEASE_ADOPT"}) {
        EXPECT_NE(std::string::npos, r.output.find(var)) << r.output;
    }
}

/* A static binary: UCX's hooks are linked in as overrides of libc and see
 * libc calls; a raw syscall only the kernel sees. */
TEST_F(test_processes, static_binary)
{
    std::string bin = builddir_path("test/helpers/static_changer");
    if (access(bin.c_str(), X_OK) != 0) {
        GTEST_SKIP() << "SKIPPED LOUDLY: no static_changer (sanitizer builds "
                        "cannot link statically); the release build runs this test";
    }
    run_result r = run({bin}, {{"UCX_MRLEASE_MONITORS", "uffd,ucm"}});
    ASSERT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("munmap seen_by uffd=1 ucm=1")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("free seen_by uffd=1 ucm=1")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("syscall seen_by uffd=1 ucm=0")) << r.output;
}

/* brk shrink: both see it, uffd with the exact range (a process of its own,
 * since moving the break is unsafe where malloc uses it). */
TEST_F(test_processes, brk_shrink)
{
    for (auto monitors : {"uffd", "ucm"}) {
        run_result r = run({builddir_path("test/helpers/brk_changer")},
                           {{"UCX_MRLEASE_MONITORS", monitors}});
        ASSERT_EQ(0, r.status) << r.output;
        std::string want = std::string("brk seen_by uffd=") +
                           (strcmp(monitors, "uffd") ? "0 ucm=1" : "1 ucm=0");
        EXPECT_NE(std::string::npos, r.output.find(want)) << monitors << ": " << r.output;
        EXPECT_NE(std::string::npos, r.output.find("range=ok")) << monitors << ": " << r.output;
    }
}

/* Run this test binary's *_child tests as another user or under seccomp. */
static run_result run_child(const std::string &role, const std::string &filter,
                            const std::vector<std::string> &prefix)
{
    /* A copy anyone can execute: the build tree may sit under /root. */
    char dir[] = "/tmp/mrlease-child-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        return run_result{-1, "mkdtemp failed"};
    }
    chmod(dir, 0755);
    std::string exe = std::string(dir) + "/gtest";
    run_result cp   = run({"/bin/cp", self_exe(), exe});
    if (cp.status != 0) {
        return cp;
    }
    chmod(exe.c_str(), 0755);
    std::vector<std::string> argv = prefix;
    argv.push_back(exe);
    argv.push_back("--gtest_filter=" + filter);
    argv.push_back("--gtest_also_run_disabled_tests");
    /* GTEST_OUTPUT empty: the parent writes the report, not its children */
    run_result r = run(argv, {{"MRL_CHILD", role}, {"HOME", "/tmp"}, {"GTEST_OUTPUT", ""}},
                       120);
    run({"/bin/rm", "-rf", dir});
    return r;
}

TEST_F(test_processes, unprivileged_user)
{
    if (!is_root()) {
        GTEST_SKIP() << "SKIPPED LOUDLY: needs root to switch to user nobody";
    }
    run_result r = run_child("nonroot", "test_processes.DISABLED_nonroot_child",
                             {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                              "--clear-groups", "--"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("[  PASSED  ] 1 test")) << r.output;
}

/* Disabled: run only by unprivileged_user, as its child. */
TEST_F(test_processes, DISABLED_nonroot_child)
{
    ASSERT_TRUE(is_child("nonroot"));
    ASSERT_NE(0u, geteuid());
    testing::internal::CaptureStdout();
    ASSERT_EQ(UCS_OK, create("uffd,ucm,flease,inject"));
    std::string log = testing::internal::GetCapturedStdout();
    /* user-mode-only userfaultfd works; fork events need CAP_SYS_PTRACE */
    EXPECT_TRUE(ucs_mrlease_engine_monitors(m_engine) & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD))
        << log;
    EXPECT_NE(std::string::npos, log.find("CAP_SYS_PTRACE")) << log;

    char *p = (char*)map_anon(4 * m_page);
    auto l  = lease(p, 4 * m_page);
    ASSERT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD));
    ASSERT_EQ(0, munmap(p, 4 * m_page));
    ucs_mrlease_progress(m_engine);
    ASSERT_EQ(1u, events_of(l).size());
    EXPECT_TRUE(events_of(l)[0].ev.monitors & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD));

    /* A file the user owns can be leased. */
    char path[] = "/tmp/mrlease-nonroot-XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_EQ(0, ftruncate(fd, 4 * m_page));
    char *f = (char*)mmap(NULL, 4 * m_page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    auto fl = lease(f, 4 * m_page, fd);
    EXPECT_TRUE(ucs_mrlease_monitored_by(fl) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    release(fl);
    munmap(f, 4 * m_page);
    close(fd);
    unlink(path);
}

TEST_F(test_processes, kernel_without_features)
{
    run_result r = run_child("nofeatures", "test_processes.DISABLED_nofeatures_child",
                             {builddir_path("test/helpers/deny_syscalls")});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("[  PASSED  ] 1 test")) << r.output;
}

/* Disabled: run only by kernel_without_features, as its child. */
TEST_F(test_processes, DISABLED_nofeatures_child)
{
    ASSERT_TRUE(is_child("nofeatures"));
    testing::internal::CaptureStdout();
    ASSERT_EQ(UCS_OK, create("uffd,ucm,flease,inject"));
    std::string log = testing::internal::GetCapturedStdout();
    EXPECT_FALSE(ucs_mrlease_engine_monitors(m_engine) & UCS_BIT(UCS_MRLEASE_MONITOR_UFFD));
    EXPECT_NE(std::string::npos, log.find("CONFIG_USERFAULTFD")) << log;
    EXPECT_NE(std::string::npos, log.find("monitor 'uffd' is off")) << log;

    /* File leases refused: loud, and the lease is counted unmonitored by it. */
    char path[] = "/tmp/mrlease-nofeat-XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_EQ(0, ftruncate(fd, 4 * m_page));
    char *f = (char*)mmap(NULL, 4 * m_page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    testing::internal::CaptureStdout();
    auto fl = lease(f, 4 * m_page, fd);
    log = testing::internal::GetCapturedStdout();
    EXPECT_FALSE(ucs_mrlease_monitored_by(fl) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    EXPECT_NE(std::string::npos, log.find("F_SETLEASE")) << log;

    /* ucm still works: the engine degrades, it does not stop. */
    char *p = (char*)map_anon(4 * m_page);
    auto l  = lease(p, 4 * m_page);
    munmap(p, 4 * m_page);
    ucs_mrlease_progress(m_engine);
    EXPECT_EQ(1u, events_of(l).size());
    release(fl);
    munmap(f, 4 * m_page);
    close(fd);
    unlink(path);
}
