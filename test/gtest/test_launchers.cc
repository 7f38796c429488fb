/*
 * The launchers of the build tree (contrib/mrlease-exec, contrib/mpirun-mrlease,
 * copied into the build directory by make): they find this build's library,
 * turn mrlease on for the process they start, keep an LD_PRELOAD already
 * set, and name what is missing when they cannot. The programs they start
 * here are static (busybox): the preloaded library (with ASan in the debug
 * build) is not loaded into them.
 */
#include "mrlease_test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mrl;

class test_launchers : public ::testing::Test {
protected:
    static std::string exec_path() { return builddir_path("contrib/mrlease-exec"); }
    static std::string lib_path()
    {
        return builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so");
    }
};

TEST_F(test_launchers, finds_the_build_trees_library)
{
    run_result r = run({exec_path(), "--lib"}, {{"MRL_LIB", ""}});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_EQ(lib_path() + "\n", r.output);
}

TEST_F(test_launchers, turns_mrlease_on_and_keeps_ld_preload)
{
    const std::string other = "/lib/x86_64-linux-gnu/libm.so.6";
    run_result r = run({exec_path(), "/bin/busybox", "sh", "-c",
                        "echo \"$LD_PRELOAD|$UCX_IB_LEASE_ENABLE\""},
                       {{"MRL_LIB", ""}, {"LD_PRELOAD", other}});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_EQ(lib_path() + ":" + other + "|y\n", r.output);
}

TEST_F(test_launchers, mrl_lib_overrides_and_a_bad_one_is_named)
{
    run_result r = run({exec_path(), "--lib"}, {{"MRL_LIB", "/bin/true"}});
    EXPECT_EQ("/bin/true\n", r.output);
    r = run({exec_path(), "/bin/true"}, {{"MRL_LIB", "/no/such/lib.so"}});
    EXPECT_EQ(2, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("MRL_LIB=/no/such/lib.so: no such file"))
        << r.output;
}

TEST_F(test_launchers, a_missing_library_or_program_is_named)
{
    /* a copy of the script where there is no build tree around it */
    char dir[] = "/tmp/mrl-launch.XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(dir));
    std::string copy = std::string(dir) + "/mrlease-exec";
    ASSERT_EQ(0, run({"/bin/cp", exec_path(), copy}).status);
    run_result r = run({copy, "/bin/true"}, {{"MRL_LIB", ""}});
    EXPECT_EQ(2, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("libuct_ib_lease.so not found; looked for:"))
        << r.output;
    EXPECT_NE(std::string::npos, r.output.find("set MRL_LIB=")) << r.output;
    run({"/bin/rm", "-rf", dir});

    r = run({exec_path(), "./no-such-app"}, {{"MRL_LIB", ""}});
    EXPECT_EQ(2, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("./no-such-app: no such executable file"))
        << r.output;
}

/* mpirun-mrlease finds the library as mrlease-exec does: a real mpirun, one
 * rank, that prints what it got */
TEST_F(test_launchers, mpirun_mrlease_finds_the_same_library)
{
    run_result r = run({builddir_path("contrib/mpirun-mrlease"), "-np", "1",
                        "/bin/busybox", "sh", "-c",
                        "echo \"$LD_PRELOAD|$UCX_IB_LEASE_ENABLE\""},
                       {{"MRL_LIB", ""}, {"OMPI_ALLOW_RUN_AS_ROOT", "1"},
                        {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"}}, 120);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(lib_path() + "|y\n")) << r.output;
}
