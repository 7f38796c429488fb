/*
 * libuct_ib_lease's UCX version decision (src/uct_ib_lease/ucx_compat.c):
 * which releases it runs on, which it refuses, and that the refusal names
 * what breaks there (docs/ucx-versions.md). The running UCX (Debian's) must
 * be the tested release, and the plugin, preloaded into a real UCX program,
 * must say so.
 */
#include "mrlease_test.h"

#include "../../src/uct_ib_lease/ucx_compat.h"

#include <ucp/api/ucp.h>

#include <stdlib.h>
#include <string.h>

using namespace mrl;

class test_ucx_compat : public ::testing::Test {
protected:
    static ib_lease_ucx_verdict_t judge(unsigned major, unsigned minor,
                                        unsigned release)
    {
        ib_lease_ucx_verdict_t v;

        ib_lease_ucx_judge(major, minor, release, &v);
        return v;
    }

    static bool says(const ib_lease_ucx_verdict_t &v, const std::string &what)
    {
        return std::string(v.why).find(what) != std::string::npos;
    }
};

TEST_F(test_ucx_compat, the_running_ucx_is_the_tested_release)
{
    unsigned major, minor, release;

    ucp_get_version(&major, &minor, &release);
    ib_lease_ucx_verdict_t v = judge(major, minor, release);
    EXPECT_EQ(IB_LEASE_UCX_TESTED, v.support)
        << "the UCX this host runs is not the one CI tests: " << v.why;
    EXPECT_TRUE(ib_lease_ucx_covered(&v));
}

TEST_F(test_ucx_compat, another_patch_release_runs_with_a_warning)
{
    ib_lease_ucx_verdict_t v = judge(1, 13, 0);
    EXPECT_EQ(IB_LEASE_UCX_SAME_ABI, v.support) << v.why;
    EXPECT_TRUE(ib_lease_ucx_covered(&v));
    EXPECT_TRUE(says(v, "NOT tested")) << v.why;
}

TEST_F(test_ucx_compat, releases_read_run_in_verbs_mode_naming_what_breaks)
{
    /* release: every break of the rcache mode from 1.14 to it is named,
     * none after */
    static const struct {
        unsigned   minor;
        const char *newest;
        const char *not_yet;
    } rel[] = {
        {14, "ucs_rcache_lookup_unsafe", "fill_opts"},
        {15, "fill_opts", "no registration cache"},
        {16, "no registration cache", "alignment"},
        {17, "alignment", "libuct_ib_mlx5"},
        {18, "libuct_ib_mlx5", NULL},
        {19, "libuct_ib_mlx5", NULL},
        {20, "libuct_ib_mlx5", NULL},
    };

    for (const auto &r : rel) {
        ib_lease_ucx_verdict_t v = judge(1, r.minor, 1);
        SCOPED_TRACE(v.why);
        EXPECT_EQ(IB_LEASE_UCX_VERBS_ONLY, v.support);
        EXPECT_TRUE(ib_lease_ucx_covered(&v));
        EXPECT_TRUE(says(v, "NOT tested"));
        EXPECT_TRUE(says(v, "verbs mode only"));
        EXPECT_TRUE(says(v, "ucs_rcache_lookup_unsafe"));
        EXPECT_TRUE(says(v, r.newest));
        if (r.not_yet != NULL) {
            EXPECT_FALSE(says(v, r.not_yet));
        }
        /* only the releases run in the guest (1.14.1, 1.18.1, 1.20.1)
         * say they were */
        bool tried = (r.minor == 14) || (r.minor == 18) || (r.minor == 20);
        EXPECT_EQ(tried, says(v, "tried once"));
        EXPECT_EQ(!tried, says(v, "never run"));
    }
    EXPECT_TRUE(says(judge(1, 14, 0), "never run"));
    EXPECT_TRUE(says(judge(1, 18, 0), "never run"));
    EXPECT_TRUE(says(judge(1, 14, 2), "never run"));
    EXPECT_TRUE(says(judge(1, 20, 0), "never run"));
}

/* UCX_IB_LEASE_MODE, read without the parser: auto picks the mode the
 * release has; rcache where its ABI is gone, or a bad value, is refused
 * naming the variable */
TEST_F(test_ucx_compat, mode_by_release_and_request)
{
    static const struct {
        unsigned        minor, release;
        const char      *request;
        int             ok;
        ib_lease_mode_t mode;
        const char      *error;
    } cases[] = {
        {13, 1, NULL, 1, IB_LEASE_MODE_RCACHE, NULL},
        {13, 1, "auto", 1, IB_LEASE_MODE_RCACHE, NULL},
        {13, 1, "verbs", 1, IB_LEASE_MODE_VERBS, NULL},
        {13, 1, "RCACHE", 1, IB_LEASE_MODE_RCACHE, NULL},
        {13, 0, NULL, 1, IB_LEASE_MODE_RCACHE, NULL},
        {14, 0, NULL, 1, IB_LEASE_MODE_VERBS, NULL},
        {14, 1, NULL, 1, IB_LEASE_MODE_VERBS, NULL},
        {14, 1, "rcache", 0, IB_LEASE_MODE_RCACHE, "UCX_IB_LEASE_MODE=rcache needs"},
        {18, 1, NULL, 1, IB_LEASE_MODE_VERBS, NULL},
        {18, 1, "verbs", 1, IB_LEASE_MODE_VERBS, NULL},
        {18, 1, "rcache", 0, IB_LEASE_MODE_RCACHE, "UCX_IB_LEASE_MODE=rcache needs"},
        {20, 1, NULL, 1, IB_LEASE_MODE_VERBS, NULL},
        {13, 1, "fast", 0, IB_LEASE_MODE_RCACHE, "UCX_IB_LEASE_MODE='fast' is not"},
        {13, 1, "", 0, IB_LEASE_MODE_RCACHE, "UCX_IB_LEASE_MODE='' is not"},
        {21, 0, NULL, 0, IB_LEASE_MODE_RCACHE, "read only up to 1.20"},
        {21, 0, "verbs", 0, IB_LEASE_MODE_RCACHE, "read only up to 1.20"},
    };

    for (const auto &c : cases) {
        ib_lease_ucx_verdict_t v = judge(1, c.minor, c.release);
        ib_lease_mode_t mode     = (ib_lease_mode_t)-1;
        char error[1024];
        int ok = ib_lease_ucx_mode(&v, c.request, &mode, error, sizeof(error));
        SCOPED_TRACE(std::string("1.") + std::to_string(c.minor) + "." +
                     std::to_string(c.release) + " " +
                     (c.request ? c.request : "(unset)") + ": " + error);
        EXPECT_EQ(c.ok, ok);
        if (c.ok) {
            EXPECT_EQ(c.mode, mode);
            EXPECT_STREQ("", error);
        } else {
            EXPECT_NE(nullptr, strstr(error, c.error));
        }
    }
}

TEST_F(test_ucx_compat, releases_never_read_are_refused)
{
    for (auto ver : std::vector<std::vector<unsigned>>{{1, 12, 1}, {1, 21, 0},
                                                       {2, 0, 0}, {0, 13, 1}}) {
        ib_lease_ucx_verdict_t v = judge(ver[0], ver[1], ver[2]);
        SCOPED_TRACE(v.why);
        EXPECT_EQ(IB_LEASE_UCX_UNKNOWN, v.support);
        EXPECT_FALSE(ib_lease_ucx_covered(&v));
        EXPECT_TRUE(says(v, "read only up to 1.20"));
    }
}

TEST_F(test_ucx_compat, enable_is_read_without_the_parser)
{
    static const struct {
        const char *value;
        int        requested;
    } cases[] = {{"y", 1}, {"yes", 1}, {"1", 1}, {"on", 1}, {"Y", 1},
                 {"n", 0}, {"no", 0}, {"0", 0}, {"off", 0}, {"N", 0}, {"", 0}};

    for (const auto &c : cases) {
        env_guard env(std::map<std::string, std::string>{{"UCX_IB_LEASE_ENABLE", c.value}});
        EXPECT_EQ(c.requested, ib_lease_ucx_requested()) << "'" << c.value << "'";
    }
    unsetenv("UCX_IB_LEASE_ENABLE");
    EXPECT_EQ(0, ib_lease_ucx_requested());
}

/* The real plugin in a real UCX program (ucx_info loads libuct_ib, whose
 * component registration makes the plugin decide). */
TEST_F(test_ucx_compat, the_plugin_names_the_running_release)
{
    std::string lib = builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so");
    std::string preload = lib;

    /* the debug build's plugin needs the sanitizer's runtime loaded first */
    run_result ldd = run({"/usr/bin/ldd", lib});
    ASSERT_EQ(0, ldd.status) << ldd.output;
    size_t asan = ldd.output.find("libasan.so");
    if (asan != std::string::npos) {
        size_t from = ldd.output.find("=> ", asan) + 3;
        preload     = ldd.output.substr(from, ldd.output.find(' ', from) - from) +
                  ":" + lib;
    }
    run_result r = run({"/usr/bin/ucx_info", "-d"},
                       {{"LD_PRELOAD", preload}, {"UCX_IB_LEASE_ENABLE", "y"},
                        {"UCX_LOG_LEVEL", "debug"}, {"UCX_IB_LEASE_SUMMARY", "n"},
                        {"ASAN_OPTIONS", "detect_leaks=0"}});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mrlease: UCX 1.13.1 is the tested "
                                               "release"))
        << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("NOT enabled")) << r.output;
}
