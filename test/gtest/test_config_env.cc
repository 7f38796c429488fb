/*
 * UCX_MRLEASE_* and UCX_IB_LEASE_* read without UCX's parser (config_env.c),
 * as the plugin does on UCX releases whose parser has another ABI: the same
 * structures, the same failures and the same printout as UCX 1.13's parser
 * gives for the same environment. And why 1.13 keeps UCX's parser: it marks
 * the variables used, so UCX does not call them unused.
 */
#include "mrlease_test.h"

extern "C" {
#include "config_env.h"
#include "engine_config.h"
#include "uct_ib_lease/ib_lease.h"
}

#include <ucp/api/ucp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <functional>
#include <sstream>

using namespace mrl;

typedef std::map<std::string, std::string> vars_t;

extern char **environ;

namespace {

struct read_result {
    ucs_status_t status;
    std::string  log;
};

/* A structure filled by one reader: its bytes (filled over a pattern, so
 * that a field left unset shows) and what was logged meanwhile. */
template <typename T>
struct filled {
    T           config;
    read_result r;
};

class test_config_env : public ::testing::Test {
protected:
    void SetUp() override
    {
        /* A variable set by whoever runs the tests must not leak in. */
        for (char **e = environ; *e != NULL; ++e) {
            std::string kv(*e), name = kv.substr(0, kv.find('='));
            if (!name.compare(0, 12, "UCX_MRLEASE_") ||
                !name.compare(0, 13, "UCX_IB_LEASE_")) {
                m_saved.push_back(kv);
            }
        }
        for (auto &kv : m_saved) {
            unsetenv(kv.substr(0, kv.find('=')).c_str());
        }
    }

    void TearDown() override
    {
        ucs_mrlease_config_use_ucx_parser(1);
        restore_env();
    }

    void restore_env()
    {
        for (auto &kv : m_saved) {
            size_t eq = kv.find('=');
            setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
        }
    }

    static read_result logged(const std::function<ucs_status_t()> &f)
    {
        testing::internal::CaptureStdout();
        testing::internal::CaptureStderr();
        ucs_status_t status = f();
        std::string log     = testing::internal::GetCapturedStdout() +
                              testing::internal::GetCapturedStderr();
        return {status, log};
    }

    /* ucs_mrlease_config_read() with one reader or the other. */
    static filled<ucs_mrlease_config_t> read_mrlease(int ucx_parser)
    {
        filled<ucs_mrlease_config_t> f;
        memset(&f.config, 0xa5, sizeof(f.config));
        ucs_mrlease_config_use_ucx_parser(ucx_parser);
        f.r = logged([&]() { return ucs_mrlease_config_read(&f.config); });
        if (f.r.status == UCS_OK) {
            ucs_mrlease_config_release(&f.config);
        }
        return f;
    }

    static filled<ucs_ib_lease_config_t> read_ib_lease(int ucx_parser)
    {
        filled<ucs_ib_lease_config_t> f;
        memset(&f.config, 0xa5, sizeof(f.config));
        ucs_mrlease_config_use_ucx_parser(ucx_parser);
        f.r = logged([&]() { return ucs_ib_lease_config_read(&f.config); });
        return f;
    }

    static std::string describe(const ucs_mrlease_config_t &c)
    {
        std::ostringstream os;
        os << "monitors=0x" << std::hex << c.monitors << std::dec
           << " queue_len=" << c.queue_len << " flease_signal=" << c.flease_signal
           << " flease_adopt=" << c.flease_adopt
           << " rearm=" << c.flease_rearm_interval
           << " stall=" << c.flease_stall_timeout << " uffd_fork=" << c.uffd_fork
           << " ctl_socket=" << c.ctl_socket << " kmod_hold=" << c.kmod_hold;
        return os.str();
    }

    static std::string describe(const ucs_ib_lease_config_t &c)
    {
        std::ostringstream os;
        os << "enable=" << c.enable << " summary=" << c.summary << " async="
           << c.async << " keep_rkeys=" << c.keep_rkeys;
        return os.str();
    }

    /* Both readers take the environment as it is, and fill the same bytes. */
    template <typename T>
    static void expect_same(const filled<T> &ucx, const filled<T> &ours,
                            const std::string &what)
    {
        ASSERT_EQ(UCS_OK, ucx.r.status) << what << "\n" << ucx.r.log;
        ASSERT_EQ(UCS_OK, ours.r.status) << what << "\n" << ours.r.log;
        EXPECT_EQ(0, memcmp(&ucx.config, &ours.config, sizeof(T)))
            << what << "\n UCX's parser: " << describe(ucx.config)
            << "\n ours:         " << describe(ours.config);
    }

    void expect_same_mrlease(const std::string &what)
    {
        expect_same(read_mrlease(1), read_mrlease(0), what);
    }

    void expect_same_ib_lease(const std::string &what)
    {
        expect_same(read_ib_lease(1), read_ib_lease(0), what);
    }

    static size_t count(const std::string &s, const std::string &sub)
    {
        size_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + 1)) {
            ++n;
        }
        return n;
    }

    std::vector<std::string> m_saved;
};

const char *mrlease_vars[] = {
    "MONITORS", "QUEUE_LEN", "FLEASE_SIGNAL", "FLEASE_ADOPT", "FLEASE_REARM_INTERVAL",
    "FLEASE_STALL_TIMEOUT", "UFFD_FORK", "CTL_SOCKET", "KMOD_HOLD"
};

const char *ib_lease_vars[] = {"ENABLE", "SUMMARY", "ASYNC", "KEEP_RKEYS"};

/* What each bad value looks like to every parser: never a value. */
const char *bad_values[] = {"inf", "99999999999999999999", "-1", "abc", ""};

} // namespace

TEST_F(test_config_env, mrlease_defaults_same)
{
    expect_same_mrlease("no UCX_MRLEASE_* set");
}

TEST_F(test_config_env, mrlease_valid_values_same)
{
    const std::string rtmin = std::to_string(SIGRTMIN), rtmax = std::to_string(SIGRTMAX);
    const std::vector<std::pair<std::string, std::vector<std::string> > > valid = {
        {"MONITORS", {"uffd", "ucm,flease", "inject", "kmod,uffd,ucm,flease,inject"}},
        {"QUEUE_LEN", {"16", "64", "1048576"}},
        {"FLEASE_SIGNAL", {rtmin, rtmax, "SIGRTMIN+3", "RTMAX-2", "SIGRTMIN"}},
        {"FLEASE_ADOPT", {"n", "no", "0", "off", "y", "YES", "1", "On"}},
        {"FLEASE_REARM_INTERVAL", {"1ms", "2500us", "1000000ns", "10s", "0.5", "0.1m"}},
        {"FLEASE_STALL_TIMEOUT", {"1ms", "2s", "60m", "1e-3"}},
        {"UFFD_FORK", {"n", "No"}},
        {"CTL_SOCKET", {"n", "0"}},
        {"KMOD_HOLD", {"0", "1us", "5ms", "1s", "0.25"}},
    };

    for (auto &var : valid) {
        for (auto &value : var.second) {
            env_guard env(vars_t{{"UCX_MRLEASE_" + var.first, value}});
            expect_same_mrlease("UCX_MRLEASE_" + var.first + "=" + value);
        }
    }

    env_guard all(vars_t{{"UCX_MRLEASE_MONITORS", "uffd,inject"},
                   {"UCX_MRLEASE_QUEUE_LEN", "100"},
                   {"UCX_MRLEASE_FLEASE_SIGNAL", "SIGRTMIN+1"},
                   {"UCX_MRLEASE_FLEASE_ADOPT", "n"},
                   {"UCX_MRLEASE_FLEASE_REARM_INTERVAL", "20ms"},
                   {"UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "3s"},
                   {"UCX_MRLEASE_UFFD_FORK", "n"},
                   {"UCX_MRLEASE_CTL_SOCKET", "n"},
                   {"UCX_MRLEASE_KMOD_HOLD", "2ms"}});
    expect_same_mrlease("every UCX_MRLEASE_* set");
}

/* UCS's bitmap parser writes 32 bits of the 64-bit monitor mask before 1.18. */
TEST_F(test_config_env, mrlease_monitors_all_64_bits_set)
{
    for (int ucx_parser = 1; ucx_parser >= 0; --ucx_parser) {
        filled<ucs_mrlease_config_t> f = read_mrlease(ucx_parser);
        ASSERT_EQ(UCS_OK, f.r.status) << f.r.log;
        EXPECT_EQ(0u, f.config.monitors & ~(UCS_BIT(UCS_MRLEASE_MONITOR_LAST) - 1))
            << "UCX's parser " << ucx_parser << ": " << describe(f.config);
    }
}

TEST_F(test_config_env, ib_lease_defaults_and_values_same)
{
    expect_same_ib_lease("no UCX_IB_LEASE_* set");
    for (auto var : ib_lease_vars) {
        for (auto value : {"y", "n", "yes", "NO", "1", "0"}) {
            env_guard env(vars_t{{std::string("UCX_IB_LEASE_") + var, value}});
            expect_same_ib_lease(std::string("UCX_IB_LEASE_") + var + "=" + value);
        }
    }
    env_guard all(vars_t{{"UCX_IB_LEASE_ENABLE", "y"}, {"UCX_IB_LEASE_SUMMARY", "n"},
                   {"UCX_IB_LEASE_ASYNC", "n"}, {"UCX_IB_LEASE_KEEP_RKEYS", "n"}});
    expect_same_ib_lease("every UCX_IB_LEASE_* set");
}

/* The mrlease parsers print their own error (variable, value, range): ours
 * must not print a second one; both readers refuse alike. */
TEST_F(test_config_env, mrlease_bad_values_fail_alike)
{
    for (auto var : mrlease_vars) {
        for (auto value : bad_values) {
            std::string name = std::string("UCX_MRLEASE_") + var, quoted =
                               name + "='" + value + "'";
            env_guard env(vars_t{{name, value}});
            filled<ucs_mrlease_config_t> ucx = read_mrlease(1), ours = read_mrlease(0);

            EXPECT_EQ(UCS_ERR_INVALID_PARAM, ucx.r.status) << quoted << "\n" << ucx.r.log;
            EXPECT_EQ(UCS_ERR_INVALID_PARAM, ours.r.status) << quoted << "\n" << ours.r.log;
            EXPECT_EQ(1u, count(ours.r.log, quoted)) << ours.r.log;
            EXPECT_EQ(1u, count(ours.r.log, "accepted: ")) << ours.r.log;
            EXPECT_EQ(1u, count(ucx.r.log, quoted)) << ucx.r.log;
            for (auto log : {&ucx.r.log, &ours.r.log}) {
                EXPECT_NE(std::string::npos,
                          log->find("invalid UCX_MRLEASE_* configuration")) << *log;
            }
        }
    }
}

/* UCS's boolean parser prints nothing: ours names the variable (UCX's parser
 * names the field only) and what is accepted. */
TEST_F(test_config_env, ib_lease_bad_values_fail_alike)
{
    for (auto var : ib_lease_vars) {
        for (auto value : bad_values) {
            std::string name = std::string("UCX_IB_LEASE_") + var;
            env_guard env(vars_t{{name, value}});
            filled<ucs_ib_lease_config_t> ucx = read_ib_lease(1), ours = read_ib_lease(0);

            EXPECT_EQ(UCS_ERR_INVALID_PARAM, ucx.r.status) << name << "=" << value;
            EXPECT_EQ(UCS_ERR_INVALID_PARAM, ours.r.status) << name << "=" << value;
            EXPECT_EQ(1u, count(ours.r.log, name + "='" + value + "' is not accepted; "
                                "accepted: <y|n>")) << ours.r.log;
            EXPECT_NE(std::string::npos, ucx.r.log.find(std::string("Invalid value for ") +
                                                        var + ": '" + value + "'"))
                << ucx.r.log;
        }
    }
}

/* Ignoring errors (the printer does), a bad value takes the default and the
 * others are still read. */
TEST_F(test_config_env, ignore_errors_takes_default)
{
    env_guard env(vars_t{{"UCX_MRLEASE_QUEUE_LEN", "10xyz"}, {"UCX_MRLEASE_UFFD_FORK", "n"},
                   {"UCX_MRLEASE_KMOD_HOLD", "inf"}});
    ucs_mrlease_config_t ucx, ours;
    memset(&ucx, 0xa5, sizeof(ucx));
    memset(&ours, 0xa5, sizeof(ours));

    unsigned errors = ucs_mrlease_config_error_count();
    read_result r   = logged([&]() {
        return ucs_config_parser_fill_opts(&ucx, ucs_mrlease_config_table, "UCX_",
                                           "MRLEASE_", 1);
    });
    ASSERT_EQ(UCS_OK, r.status) << r.log;
    EXPECT_EQ(2u, ucs_mrlease_config_error_count() - errors) << r.log;

    errors = ucs_mrlease_config_error_count();
    r      = logged([&]() {
        return ucs_mrlease_config_env_fill(&ours, ucs_mrlease_config_table,
                                           "UCX_MRLEASE_", 1);
    });
    ASSERT_EQ(UCS_OK, r.status) << r.log;
    EXPECT_EQ(2u, ucs_mrlease_config_error_count() - errors) << r.log;
    EXPECT_EQ(1u, count(r.log, "UCX_MRLEASE_QUEUE_LEN='10xyz'")) << r.log;
    EXPECT_EQ(1u, count(r.log, "UCX_MRLEASE_KMOD_HOLD='inf'")) << r.log;

    EXPECT_EQ(0, memcmp(&ucx, &ours, sizeof(ucx)))
        << "UCX's: " << describe(ucx) << "\nours:  " << describe(ours);
    EXPECT_EQ(16384u, ours.queue_len);
    EXPECT_EQ(0, ours.uffd_fork);
    EXPECT_EQ(0.0, ours.kmod_hold);
    ucs_config_parser_release_opts(&ucx, ucs_mrlease_config_table);
    ucs_mrlease_config_env_release(&ours, ucs_mrlease_config_table);
}

/* --- release: exactly what was filled ------------------------------------ */

namespace {

unsigned released_a, released_b;

int read_int(const char *buf, void *dest, const void *arg)
{
    return sscanf(buf, "%d", (int*)dest);
}

void release_count(void *ptr, const void *arg)
{
    ++*(unsigned*)arg;
}

struct counted_opts {
    int a, b, flag;
};

#define COUNTED_TYPE(_counter) \
    {read_int, ucs_config_sprintf_int, ucs_config_clone_int, release_count, \
     ucs_config_help_generic, _counter}

ucs_config_field_t counted_table[] = {
    {"A", "1", "a", offsetof(counted_opts, a), COUNTED_TYPE(&released_a)},
    {"B", "2", "b", offsetof(counted_opts, b), COUNTED_TYPE(&released_b)},
    {"FLAG", "n", "flag", offsetof(counted_opts, flag), UCS_CONFIG_TYPE_BOOL},
    {NULL}
};

} // namespace

TEST_F(test_config_env, failed_fill_releases_what_was_filled)
{
    counted_opts opts;
    released_a = released_b = 0;

    {
        env_guard env(vars_t{{"MRL_TEST_B", "7"}, {"MRL_TEST_FLAG", "maybe"}});
        read_result r = logged([&]() {
            return ucs_mrlease_config_env_fill(&opts, counted_table, "MRL_TEST_", 0);
        });
        EXPECT_EQ(UCS_ERR_INVALID_PARAM, r.status);
        EXPECT_NE(std::string::npos, r.log.find("MRL_TEST_FLAG='maybe' is not "
                                                "accepted; accepted: <y|n>")) << r.log;
        EXPECT_EQ(1u, released_a);
        EXPECT_EQ(1u, released_b);

        released_a = released_b = 0;
        r = logged([&]() {
            return ucs_mrlease_config_env_fill(&opts, counted_table, "MRL_TEST_", 1);
        });
        ASSERT_EQ(UCS_OK, r.status) << r.log;
        EXPECT_EQ(0u, released_a + released_b) << "a successful fill releases nothing";
        EXPECT_EQ(1, opts.a);
        EXPECT_EQ(7, opts.b);
        EXPECT_EQ(0, opts.flag);
    }
    ucs_mrlease_config_env_release(&opts, counted_table);
    EXPECT_EQ(1u, released_a);
    EXPECT_EQ(1u, released_b);
}

/* Tables we cannot read without UCX's parser are refused, not half read. */
TEST_F(test_config_env, nested_tables_refused)
{
    static ucs_config_field_t sub[] = {
        {"FLAG", "n", "flag", 0, UCS_CONFIG_TYPE_BOOL}, {NULL}
    };
    static ucs_config_field_t with_table[] = {
        {"SUB_", "", "sub", 0, UCS_CONFIG_TYPE_TABLE(sub)}, {NULL}
    };
    static ucs_config_field_t with_alias[] = {
        {"FLAG", "n", "flag", 0, UCS_CONFIG_TYPE_BOOL},
        {"OLD_FLAG", NULL, "", 0, UCS_CONFIG_TYPE_BOOL}, {NULL}
    };
    static ucs_config_field_t with_deprecated[] = {
        {"GONE", "n", "gone", UCS_CONFIG_DEPRECATED_FIELD_OFFSET, UCS_CONFIG_TYPE_BOOL},
        {NULL}
    };
    const std::vector<std::pair<ucs_config_field_t*, std::string> > tables = {
        {with_table, "MRL_TEST_SUB_ without UCX's parser: the field is a sub-table"},
        {with_alias, "MRL_TEST_OLD_FLAG without UCX's parser: the field is an alias"},
        {with_deprecated, "MRL_TEST_GONE without UCX's parser: the field is deprecated"},
    };
    int opts[4];

    for (auto &t : tables) {
        read_result r = logged([&]() {
            return ucs_mrlease_config_env_fill(opts, t.first, "MRL_TEST_", 1);
        });
        EXPECT_EQ(UCS_ERR_UNSUPPORTED, r.status) << r.log;
        EXPECT_NE(std::string::npos, r.log.find(t.second)) << r.log;
    }
}

/* --- the printer (mrlease-ctl config) ------------------------------------ */

namespace {

std::string print_config(int ucx_parser, std::string *log)
{
    char *buf   = NULL;
    size_t size = 0;
    FILE *f     = open_memstream(&buf, &size);

    ucs_mrlease_config_use_ucx_parser(ucx_parser);
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    ucs_mrlease_config_print(f);
    *log = testing::internal::GetCapturedStdout() + testing::internal::GetCapturedStderr();
    fclose(f);
    std::string out(buf, size);
    free(buf);
    return out;
}

} // namespace

TEST_F(test_config_env, print_same)
{
    const std::vector<std::map<std::string, std::string> > envs = {
        {},
        {{"UCX_MRLEASE_MONITORS", "uffd,flease"}, {"UCX_MRLEASE_QUEUE_LEN", "64"},
         {"UCX_MRLEASE_FLEASE_SIGNAL", "SIGRTMIN+2"}, {"UCX_MRLEASE_FLEASE_ADOPT", "n"},
         {"UCX_MRLEASE_FLEASE_REARM_INTERVAL", "2500us"},
         {"UCX_MRLEASE_FLEASE_STALL_TIMEOUT", "2s"}, {"UCX_MRLEASE_UFFD_FORK", "n"},
         {"UCX_MRLEASE_CTL_SOCKET", "n"}, {"UCX_MRLEASE_KMOD_HOLD", "5ms"}},
        {{"UCX_MRLEASE_QUEUE_LEN", "10xyz"}, {"UCX_MRLEASE_CTL_SOCKET", "n"}},
    };

    for (auto &vars : envs) {
        env_guard env(vars);
        std::string ucx_log, our_log;
        std::string ucx = print_config(1, &ucx_log), ours = print_config(0, &our_log);
        std::string what = vars.empty() ? "defaults" : vars.begin()->first + "=" +
                                                       vars.begin()->second + " ...";

        EXPECT_EQ(ucx, ours) << what;
        EXPECT_NE(std::string::npos, ours.find("# mrlease configuration\n")) << ours;
        for (auto var : mrlease_vars) {
            EXPECT_NE(std::string::npos, ours.find(std::string("\nUCX_MRLEASE_") + var +
                                                   "=")) << var << "\n" << ours;
        }
        /* a bad value: reported once, and marked in the printout */
        bool bad = vars.count("UCX_MRLEASE_QUEUE_LEN") &&
                   (vars.at("UCX_MRLEASE_QUEUE_LEN") == "10xyz");
        EXPECT_EQ(bad ? 1u : 0u, count(our_log, "UCX_MRLEASE_QUEUE_LEN='10xyz'"))
            << our_log;
        EXPECT_EQ(bad, ours.find(UCS_MRLEASE_CONFIG_ERROR_MARK " 1 UCX_MRLEASE_*") !=
                       std::string::npos) << ours;
    }
}

/* --- why UCX 1.13 keeps its parser --------------------------------------- */

namespace {

std::string self_exe()
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    buf[(n > 0) ? n : 0] = '\0';
    return buf;
}

run_result run_unused_child(int ucx_parser, const char *warn_unused)
{
    return run({self_exe(), "--gtest_filter=test_config_env.DISABLED_unused_env_child",
                "--gtest_also_run_disabled_tests"},
               {{"MRL_CHILD", "unused_env"}, {"MRL_UCX_PARSER", std::to_string(ucx_parser)},
                {"GTEST_OUTPUT", ""}, {"UCX_TLS", "self"},
                {"UCX_WARN_UNUSED_ENV_VARS", warn_unused},
                {"UCX_MRLEASE_QUEUE_LEN", "64"}, {"UCX_IB_LEASE_SUMMARY", "n"}});
}

} // namespace

/*
 * UCX warns about every UCX_* variable its parser did not read, when a UCP
 * worker is created: our reader does not tell UCX it read ours. So on the
 * tested release UCX's parser stays (and elsewhere the warning is expected;
 * UCX_WARN_UNUSED_ENV_VARS=n silences it).
 */
TEST_F(test_config_env, unused_env_warning_is_why_ucx_parser_stays)
{
    const std::string warning = "unused env variable";

    run_result r = run_unused_child(1, "y");
    ASSERT_EQ(0, r.status) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find(warning)) << r.output;

    r = run_unused_child(0, "y");
    ASSERT_EQ(0, r.status) << r.output;
    size_t at = r.output.find(warning);
    ASSERT_NE(std::string::npos, at) << r.output;
    std::string line = r.output.substr(at, r.output.find('\n', at) - at);
    EXPECT_NE(std::string::npos, line.find("UCX_MRLEASE_QUEUE_LEN")) << line;
    EXPECT_NE(std::string::npos, line.find("UCX_IB_LEASE_SUMMARY")) << line;

    r = run_unused_child(0, "n");
    ASSERT_EQ(0, r.status) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find(warning)) << r.output;
}

/* Disabled: run by the test above, as its child. */
TEST_F(test_config_env, DISABLED_unused_env_child)
{
    const char *ucx_parser = getenv("MRL_UCX_PARSER");
    ASSERT_TRUE((getenv("MRL_CHILD") != NULL) && (ucx_parser != NULL));
    restore_env(); /* SetUp cleared what the parent set for this child */

    ucs_mrlease_config_use_ucx_parser(atoi(ucx_parser));
    ucs_mrlease_config_t config;
    ASSERT_EQ(UCS_OK, ucs_mrlease_config_read(&config));
    EXPECT_EQ(64u, config.queue_len);
    ucs_mrlease_config_release(&config);
    ucs_ib_lease_config_t ib_config;
    ASSERT_EQ(UCS_OK, ucs_ib_lease_config_read(&ib_config));
    EXPECT_EQ(0, ib_config.summary);

    ucp_params_t params = {};
    params.field_mask   = UCP_PARAM_FIELD_FEATURES;
    params.features     = UCP_FEATURE_TAG;
    ucp_context_h context;
    ASSERT_EQ(UCS_OK, ucp_init(&params, NULL, &context));
    ucp_worker_params_t wparams = {};
    ucp_worker_h worker         = NULL;
    EXPECT_EQ(UCS_OK, ucp_worker_create(context, &wparams, &worker));
    if (worker != NULL) {
        ucp_worker_destroy(worker);
    }
    ucp_cleanup(context);
}
