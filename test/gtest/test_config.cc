/*
 * UCX_MRLEASE_* configuration: every bad value stops engine creation with an
 * error naming the variable, the value and the accepted range.
 */
#include "mrlease_test.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
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

/* Moved from test_engine: the other kinds, through the same errors. */
TEST_F(test_config, bad_words)
{
    const std::string yn = "y|yes|on|1 or n|no|off|0";
    expect_refused("UCX_MRLEASE_MONITORS", "uffd,bogus", "[uffd|ucm|flease|inject]");
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

