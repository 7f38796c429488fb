/*
 * UCX_MRLEASE_* configuration: every bad value stops engine creation with an
 * error naming the variable, the value and the accepted range; the control
 * socket's name cannot be taken over by another process.
 */
#include "mrlease_test.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <thread>
#include <sstream>

using namespace mrl;

class test_config : public test_mrlease {
protected:
    /* create() with the log captured (UCX logs to stdout by default). */
    ucs_status_t create_logged(const std::string &monitors,
                               const std::map<std::string, std::string> &vars,
                               std::string *log)
    {
        testing::internal::CaptureStdout();
        testing::internal::CaptureStderr();
        ucs_status_t status = create(monitors, vars);
        *log = testing::internal::GetCapturedStdout() +
               testing::internal::GetCapturedStderr();
        return status;
    }

    /* var=value is refused, and the error says which, what and what not. */
    void expect_refused(const std::string &var, const std::string &value,
                        const std::string &range)
    {
        std::string log;
        ucs_status_t status = (var == "UCX_MRLEASE_MONITORS") ?
                              create_logged(value, {}, &log) :
                              create_logged("inject", {{var, value}}, &log);
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, status) << var << "=" << value << "\n" << log;
        EXPECT_NE(std::string::npos, log.find(var + "='" + value + "'"))
            << var << "=" << value << " printed:\n" << log;
        EXPECT_NE(std::string::npos, log.find(range))
            << var << "=" << value << " printed:\n" << log;
        TearDown();
    }

    void expect_accepted(const std::string &var, const std::string &value)
    {
        std::string log;
        EXPECT_EQ(UCS_OK, create_logged("inject", {{var, value}}, &log))
            << var << "=" << value << "\n" << log;
        TearDown();
    }
};

static std::string signal_range()
{
    return std::to_string(SIGRTMIN) + ".." + std::to_string(SIGRTMAX);
}

/* Issue 10, item 1: "inf" used to become UINT_MAX and fail as "Out of memory". */
TEST_F(test_config, queue_len_inf_names_the_variable)
{
    expect_refused("UCX_MRLEASE_QUEUE_LEN", "inf", "16..1048576");
}

/* Item 2: an infinite stall timeout was accepted. */
TEST_F(test_config, stall_timeout_inf_refused)
{
    expect_refused("UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "inf", "1ms..3600s");
}

/* Item 3: a huge rearm interval went through an undefined double->int cast
 * in the flease monitor (and came out as 1 ms). */
TEST_F(test_config, rearm_interval_huge_refused)
{
    expect_refused("UCX_MRLEASE_FLEASE_REARM_INTERVAL", "1e300", "1ms..10s");
    expect_refused("UCX_MRLEASE_FLEASE_REARM_INTERVAL", "3e6s", "1ms..10s");
}

TEST_F(test_config, bad_numbers)
{
    const std::string q = "16..1048576", r = "1ms..10s", s = "1ms..3600s";
    const std::vector<std::pair<std::string, std::string> > cases = {
        /* 2^32+100 used to wrap to 100, 10xyz to read as 10, -5 as 2^32-5 */
        {"QUEUE_LEN", "1e300"}, {"QUEUE_LEN", "18446744073709551616"},
        {"QUEUE_LEN", "4294967396"}, {"QUEUE_LEN", "-5"}, {"QUEUE_LEN", "0"},
        {"QUEUE_LEN", "15"}, {"QUEUE_LEN", "1048577"}, {"QUEUE_LEN", "abc"},
        {"QUEUE_LEN", "10xyz"}, {"QUEUE_LEN", ""}, {"QUEUE_LEN", " 64"},
        {"QUEUE_LEN", "+64"}, {"QUEUE_LEN", "0x40"},
        {"FLEASE_REARM_INTERVAL", "inf"}, {"FLEASE_REARM_INTERVAL", "nan"},
        {"FLEASE_REARM_INTERVAL", "-5ms"}, {"FLEASE_REARM_INTERVAL", "0"},
        {"FLEASE_REARM_INTERVAL", "0.5ms"}, {"FLEASE_REARM_INTERVAL", "11s"},
        {"FLEASE_REARM_INTERVAL", "abc"}, {"FLEASE_REARM_INTERVAL", "10xyz"},
        {"FLEASE_REARM_INTERVAL", "10msx"}, {"FLEASE_REARM_INTERVAL", ""},
        {"FLEASE_REARM_INTERVAL", "1e400"}, {"FLEASE_REARM_INTERVAL", "10 ms"},
        {"FLEASE_STALL_TIMEOUT", "1e300"}, {"FLEASE_STALL_TIMEOUT", "-1s"},
        {"FLEASE_STALL_TIMEOUT", "0"}, {"FLEASE_STALL_TIMEOUT", "61m"},
        {"FLEASE_STALL_TIMEOUT", "abc"}, {"FLEASE_STALL_TIMEOUT", "1sx"},
        {"FLEASE_STALL_TIMEOUT", ""}, {"FLEASE_STALL_TIMEOUT", "1e-300"},
    };

    for (auto &c : cases) {
        expect_refused("UCX_MRLEASE_" + c.first, c.second,
                       (c.first == "QUEUE_LEN") ? q :
                       (c.first == "FLEASE_REARM_INTERVAL") ? r : s);
    }
}

TEST_F(test_config, bad_signals)
{
    for (auto v : {"inf", "SIGUSR1", "10", "0", "-1", "99999999999999999999",
                   "abc", "", "38xyz", "SIGRTMIN-1", "SIGRTMAX+1", "SIGRTMIN+99",
                   "RTMIN+", "SIGRTMIN+1x"}) {
        expect_refused("UCX_MRLEASE_FLEASE_SIGNAL", v, signal_range());
    }
    expect_refused("UCX_MRLEASE_FLEASE_SIGNAL", std::to_string(SIGRTMAX + 1),
                   signal_range());
}

/* The kmod hold: 0 (off) .. 1 s, mrlease.ko's bound; never inf. */
TEST_F(test_config, kmod_hold_bounds)
{
    for (auto v : {"inf", "nan", "-1ms", "-0.5", "1.5s", "2s", "1001ms", "1m",
                   "abc", "", "10xyz", "10msx", "1e400", " 1ms"}) {
        expect_refused("UCX_MRLEASE_KMOD_HOLD", v, "0ms..1s");
    }
    for (auto v : {"0", "1us", "100ms", "1s", "1000ms", "0.25"}) {
        expect_accepted("UCX_MRLEASE_KMOD_HOLD", v);
    }
}

/* Moved from test_engine: the other kinds, through the same errors. */
TEST_F(test_config, bad_words)
{
    const std::string yn = "y|yes|on|1 or n|no|off|0";
    expect_refused("UCX_MRLEASE_MONITORS", "uffd,bogus", "[uffd|ucm|flease|inject|kmod]");
    /* an engine with no monitor would never break a lease */
    expect_refused("UCX_MRLEASE_MONITORS", "", "at least one");
    expect_refused("UCX_MRLEASE_MONITORS", ",", "at least one");
    expect_refused("UCX_MRLEASE_FLEASE_ADOPT", "perhaps", yn);
    expect_refused("UCX_MRLEASE_UFFD_FORK", "", yn);
    expect_refused("UCX_MRLEASE_CTL_SOCKET", "2", yn);
}

TEST_F(test_config, bounds_are_accepted)
{
    expect_accepted("UCX_MRLEASE_QUEUE_LEN", "16");
    expect_accepted("UCX_MRLEASE_QUEUE_LEN", "1048576");
    expect_accepted("UCX_MRLEASE_FLEASE_SIGNAL", std::to_string(SIGRTMIN));
    expect_accepted("UCX_MRLEASE_FLEASE_SIGNAL", std::to_string(SIGRTMAX));
    expect_accepted("UCX_MRLEASE_FLEASE_SIGNAL", "SIGRTMIN+4");
    expect_accepted("UCX_MRLEASE_FLEASE_SIGNAL", "RTMAX-2");
    for (auto v : {"1ms", "1000us", "1000000ns", "10s", "0.01", "0.1m"}) {
        expect_accepted("UCX_MRLEASE_FLEASE_REARM_INTERVAL", v);
    }
    expect_accepted("UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "1ms");
    expect_accepted("UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "60m");
}

/* The help says "y|yes|on|1 or n|no|off|0": UCX 1.13's boolean parser took
 * no on/off (1.15's does), so mrlease's own parser reads all of them. */
TEST_F(test_config, bool_accepts_what_its_help_says)
{
    for (auto v : {"y", "yes", "on", "1", "Y", "YES", "On", "n", "no", "off", "0",
                   "N", "No", "OFF"}) {
        expect_accepted("UCX_MRLEASE_FLEASE_ADOPT", v);
    }
    for (auto v : {"", "2", "onn", "of", "true", "yes ", " y"}) {
        expect_refused("UCX_MRLEASE_UFFD_FORK", v, "y|yes|on|1 or n|no|off|0");
    }
}

/* A misspelt variable used to be ignored without a word. */
TEST_F(test_config, unknown_variable_warns)
{
    std::string log;
    ASSERT_EQ(UCS_OK, create_logged("inject", {{"UCX_MRLEASE_QUEUELEN", "64"}}, &log));
    EXPECT_NE(std::string::npos, log.find("UCX_MRLEASE_QUEUELEN is not a mrlease "
                                          "variable")) << log;
}

/* The kernel lets the change go by itself at lease-break-time. */
TEST_F(test_config, stall_timeout_above_lease_break_time_warns)
{
    std::ifstream f("/proc/sys/fs/lease-break-time");
    int lbt = -1;
    f >> lbt;
    if ((lbt < 0) || (lbt >= 3600)) {
        GTEST_SKIP() << "SKIPPED LOUDLY: lease-break-time " << lbt;
    }
    std::string log;
    ASSERT_EQ(UCS_OK, create_logged("flease,inject",
                                    {{"UCX_MRLEASE_FLEASE_STALL_TIMEOUT",
                                      std::to_string(lbt + 1) + "s"}}, &log));
    EXPECT_NE(std::string::npos, log.find("UCX_MRLEASE_FLEASE_STALL_TIMEOUT")) << log;
    EXPECT_NE(std::string::npos, log.find("lease-break-time")) << log;
}

/* mrlease-ctl config shows the values (the signal used to print as garbage
 * from past the end of UCS's signal names) and fails on a bad one (it used
 * to show the default and exit 0). */
TEST_F(test_config, ctl_config_shows_values_and_fails_on_bad_ones)
{
    std::string ctl = builddir_path("src/tools/mrlease-ctl");
    run_result r = run({ctl, "config"}, {{"UCX_MRLEASE_FLEASE_SIGNAL", "SIGRTMIN+3"}});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("UCX_MRLEASE_FLEASE_SIGNAL=" +
                                               std::to_string(SIGRTMIN + 3) + "\n"))
        << r.output;
    EXPECT_NE(std::string::npos, r.output.find("16..1048576")) << r.output;

    r = run({ctl, "config"}, {{"UCX_MRLEASE_QUEUE_LEN", "10xyz"}});
    EXPECT_EQ(1, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("UCX_MRLEASE_QUEUE_LEN='10xyz'")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("# ERROR:")) << r.output;
}

/* --- the control socket's name, taken by another process ------------------ */

static std::string self_exe()
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    buf[(n > 0) ? n : 0] = '\0';
    return buf;
}

static bool wait_file(const std::string &path, double timeout_s = 20)
{
    for (double end = now_s() + timeout_s; now_s() < end; usleep(10000)) {
        if (access(path.c_str(), F_OK) == 0) {
            return true;
        }
    }
    return false;
}

static void touch(const std::string &path)
{
    close(open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
}

static socklen_t abstract_addr(const std::string &name, struct sockaddr_un *addr)
{
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path + 1, name.data(), name.size());
    return offsetof(struct sockaddr_un, sun_path) + 1 + name.size();
}

static int bind_abstract(const std::string &name)
{
    struct sockaddr_un addr;
    socklen_t len = abstract_addr(name, &addr);
    int sock      = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if ((sock >= 0) && (bind(sock, (struct sockaddr*)&addr, len) < 0)) {
        close(sock);
        return -1;
    }
    return sock;
}

/* Answer requests on sock like an engine would, until dir/done exists (or
 * dir is gone). */
static void squat_answer(int sock, const std::string &dir)
{
    const std::string stop = dir + "/done";
    const char fake[] = "leases_broken 4242 (squatter)";
    struct sockaddr_un from;
    char buf[512];

    for (double end = now_s() + 60; (now_s() < end) && (access(stop.c_str(), F_OK) != 0) &&
                                      (access(dir.c_str(), F_OK) == 0);) {
        struct pollfd pfd = {sock, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        socklen_t flen = sizeof(from);
        if (recvfrom(sock, buf, sizeof(buf), 0, (struct sockaddr*)&from, &flen) >= 0) {
            sendto(sock, fake, strlen(fake), 0, (struct sockaddr*)&from, flen);
        }
    }
}

static bool proc_net_unix_has(const std::string &name)
{
    std::ifstream f("/proc/net/unix");
    std::string line;
    while (std::getline(f, line)) {
        if ((line.size() > name.size() + 1) &&
            (line.compare(line.size() - name.size() - 1, std::string::npos,
                          "@" + name) == 0)) {
            return true;
        }
    }
    return false;
}

/* A copy of this binary in dir, executable by anyone (the build tree may be
 * private). */
static std::string copy_self(const std::string &dir)
{
    std::string exe = dir + "/gtest";
    run({"/bin/cp", self_exe(), exe});
    chmod(exe.c_str(), 0755);
    return exe;
}

static pid_t spawn_child(const std::vector<std::string> &argv, const std::string &role,
                         const std::string &dir, int *fd)
{
    env_guard env({{"MRL_CHILD", role}, {"MRL_DIR", dir}, {"GTEST_OUTPUT", ""},
                   {"HOME", "/tmp"}});
    return spawn(argv, fd);
}

static std::vector<std::string> child_argv(const std::string &exe, const char *test)
{
    return {exe, std::string("--gtest_filter=test_config.") + test,
            "--gtest_also_run_disabled_tests"};
}

/*
 * Start an engine child, let squat(pid) take its name, then let the engine
 * start: it must warn and stay off the name (it used to move to
 * @mrlease.<pid>.1 silently), and mrlease-ctl must refuse the squatter's
 * answer (it used to print it).
 */
static void check_squatted(const std::function<void(pid_t, const std::string&)> &squat,
                           const std::string &squatter_uid)
{
    char dir[] = "/tmp/mrlease-squat-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(dir));
    chmod(dir, 0755);
    std::string exe = copy_self(dir);
    int efd;
    pid_t epid = spawn_child(child_argv(exe, "DISABLED_squatted_engine_child"),
                             "squatted", dir, &efd);
    ASSERT_GT(epid, 0);
    std::string name = "mrlease." + std::to_string(epid);

    squat(epid, dir);
    EXPECT_TRUE(proc_net_unix_has(name)) << "the squatter did not bind @" << name;
    touch(std::string(dir) + "/go");
    EXPECT_TRUE(wait_file(std::string(dir) + "/ready")) << "the engine did not start";

    int cfd;
    pid_t cpid = spawn({builddir_path("src/tools/mrlease-ctl"), std::to_string(epid),
                        "counters"}, &cfd);
    run_result ctl = wait_for(cpid, cfd, 20);
    EXPECT_EQ(1, ctl.status) << ctl.output;
    EXPECT_NE(std::string::npos, ctl.output.find("REFUSED")) << ctl.output;
    EXPECT_NE(std::string::npos, ctl.output.find("not by process " +
                                                 std::to_string(epid))) << ctl.output;
    EXPECT_NE(std::string::npos, ctl.output.find("(uid " + squatter_uid + ")"))
        << ctl.output;
    EXPECT_EQ(std::string::npos, ctl.output.find("4242")) << ctl.output;

    touch(std::string(dir) + "/done");
    run_result eng = wait_for(epid, efd, 30);
    EXPECT_EQ(0, eng.status) << eng.output;
    EXPECT_NE(std::string::npos, eng.output.find("[  PASSED  ] 1 test")) << eng.output;
    run({"/bin/rm", "-rf", dir});
}

/* The squatter is this (root) test process: the name bound before the
 * engine starts, its answers sent from here. */
TEST_F(test_config, ctl_socket_squatted_by_same_user)
{
    int sock = -1;
    std::thread answer;
    check_squatted([&](pid_t epid, const std::string &dir) {
        sock = bind_abstract("mrlease." + std::to_string(epid));
        ASSERT_GE(sock, 0) << strerror(errno);
        answer = std::thread(squat_answer, sock, dir);
    }, std::to_string(getuid()));
    if (answer.joinable()) {
        answer.join();
    }
    close(sock);
}

/* The squatter is an unprivileged process (user nobody). */
TEST_F(test_config, ctl_socket_squatted_by_other_user)
{
    if (!is_root()) {
        GTEST_SKIP() << "SKIPPED LOUDLY: needs root to switch to user nobody";
    }
    int sfd     = -1;
    pid_t spid  = -1;
    check_squatted([&](pid_t epid, const std::string &dir) {
        env_guard env({{"MRL_SQUAT_NAME", "mrlease." + std::to_string(epid)}});
        spid = spawn_child({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "--", dir + "/gtest",
                            "--gtest_filter=test_config.DISABLED_squatter_child",
                            "--gtest_also_run_disabled_tests"}, "squatter", dir, &sfd);
        ASSERT_GT(spid, 0);
        for (double end = now_s() + 20; /* it cannot write to dir */
             !proc_net_unix_has("mrlease." + std::to_string(epid)) && (now_s() < end);) {
            usleep(10000);
        }
    }, "65534");
    if (spid > 0) {
        run_result s = wait_for(spid, sfd, 30);
        EXPECT_EQ(0, s.status) << s.output;
    }
}

/* Disabled: run by the tests above, as their children. */
TEST_F(test_config, DISABLED_squatted_engine_child)
{
    const char *dir = getenv("MRL_DIR");
    ASSERT_TRUE((getenv("MRL_CHILD") != NULL) && (dir != NULL));
    ASSERT_TRUE(wait_file(std::string(dir) + "/go"));
    std::string log, name = "mrlease." + std::to_string(getpid());
    ASSERT_EQ(UCS_OK, create_logged("inject", {}, &log));
    EXPECT_NE(std::string::npos, log.find("another process holds @" + name)) << log;
    EXPECT_NE(std::string::npos, log.find("UCX_MRLEASE_CTL_SOCKET=n")) << log;
    EXPECT_FALSE(proc_net_unix_has(name + ".1")) << "the engine moved to another name";
    char buf[64];
    EXPECT_EQ(UCS_OK, ucs_mrlease_inject(m_engine, buf, sizeof(buf),
                                         UCS_MRLEASE_EV_UNMAP)) << "the API still works";
    touch(std::string(dir) + "/ready");
    EXPECT_TRUE(wait_file(std::string(dir) + "/done", 30));
}

TEST_F(test_config, DISABLED_squatter_child)
{
    const char *dir = getenv("MRL_DIR"), *name = getenv("MRL_SQUAT_NAME");
    ASSERT_TRUE((dir != NULL) && (name != NULL));
    int sock = bind_abstract(name);
    ASSERT_GE(sock, 0) << strerror(errno);
    squat_answer(sock, dir);
    close(sock);
}
