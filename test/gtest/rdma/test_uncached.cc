/*
 * Never silently stale, under mpirun in the guest: buffers whose memory no
 * monitor can vouch for (a /dev/shm file the application keeps open, or one
 * file that several ranks map) are changed by another program between
 * transfers. Plain UCX serves its cached registration and the bytes go to
 * the old pages; with mrlease such registrations are not cached, every byte
 * is right, and the ranks' exit summaries say what was not cached and why.
 */
#include "rdma_test.h"

using namespace mrl;

namespace {

struct uncached_case {
    const char  *name;
    int         per_device;  /* ranks on each rxe device */
    const char  *side;       /* whose buffer is regrown */
    const char  *env;        /* what makes it uncovered */
};

const uncached_case cases[] = {
    {"fd_kept_open", 1, "both", "MRL_KEEP_FD"},
    {"one_file_two_ranks", 1, "recv", "MRL_SHARED_FILE"},
    {"one_file_four_ranks", 2, "recv", "MRL_SHARED_FILE"}
};

/* gtest names the case in failure messages */
void PrintTo(const uncached_case &c, std::ostream *os)
{
    *os << c.name;
}

} // namespace

class test_uncached : public rdma_fixture,
                      public ::testing::WithParamInterface<uncached_case> {
protected:
    run_result job(const std::string &runner)
    {
        auto env = mpi_env();
        env[GetParam().env] = "1";
        std::string file = std::string("/dev/shm/mrl-uncached-") + GetParam().name;
        /* the user-space monitors: the kernel monitor, when loaded, vouches
         * for these buffers (test_kmod) */
        env["UCX_MRLEASE_MONITORS"] = "uffd,ucm,flease,inject";
        return run(mpirun(GetParam().per_device, builddir_path("test/mpi/mpi_remap"),
                          {"6", "regrow", GetParam().side, file}, runner,
                          {"MRL_FILE_CHANGER", GetParam().env,
                           "UCX_MRLEASE_MONITORS"}),
                   env, 300);
    }
};

TEST_P(test_uncached, plain_ucx_shows_the_failure)
{
    run_result r = job("/usr/bin/mpirun");
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
}

TEST_P(test_uncached, mrlease_keeps_every_byte_and_says_why)
{
    run_result r = job(mrlease_runner());
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(" 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    /* 6 transfers: each rank registered its buffer for each use */
    EXPECT_GE(uncached_count(r.output, "file_open"), 6) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("are not cached: its file is open "
                                               "elsewhere")) << r.output;
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(file, test_uncached, ::testing::ValuesIn(cases),
                         [](const ::testing::TestParamInfo<uncached_case> &i) {
                             return std::string(i.param.name);
                         });
