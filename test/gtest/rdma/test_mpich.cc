/*
 * MPICH (4.0.2, ch4:ucx) in the soft-RoCE guest, started by mpiexec.mpich
 * (hydra) through contrib/vm/mpirun-rxe: the MPI test programs built for
 * MPICH (test/mpi/mpich/), every byte checked. Plain MPICH + UCX shows the
 * failure; with mrlease (mrlease-exec in front of each rank) every byte is
 * right and the exit summaries show the registrations restored.
 *
 * MPICH's one-sided path: MPI_Put and MPI_Get on a window go by RDMA to the
 * window's registered memory (plain UCX loses both), MPI_Accumulate goes by
 * active messages (the target's CPU applies it: nothing to lose).
 */
#include "rdma_test.h"

#include "config.h"

using namespace mrl;

class test_mpich : public rdma_fixture {
protected:
    void SetUp() override
    {
        rdma_fixture::SetUp();
        if (*mpich_missing() != '\0') {
            GTEST_SKIP() << mpich_missing();
        }
    }

    /* two ranks under mpiexec.mpich, one per rxe device; hydra passes the
     * environment (MRL_FILE_CHANGER, MRL_LIB) to every rank */
    static run_result job(bool mrlease, const std::string &prog,
                          const std::vector<std::string> &args)
    {
        std::vector<std::string> argv = {rxe_launcher(), "--mpich"};
        if (mrlease) {
            argv.push_back("--mrlease");
        }
        argv.insert(argv.end(), {"-np", "2", "--",
                                 builddir_path("test/mpi/mpich/" + prog)});
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, mpi_env(), 300);
    }

    static void expect_restored(const run_result &r, long at_least)
    {
        long invalidated, restored;
        restored_counts(r.output, &invalidated, &restored);
        EXPECT_GE(invalidated, at_least) << r.output;
        EXPECT_EQ(invalidated, restored) << r.output;
    }

    /* "N windows re-bound" summed over the ranks' summary lines */
    static long windows_rebound(const std::string &out)
    {
        static const char what[] = " windows re-bound";
        size_t pos = 0;
        long sum   = 0;
        while ((pos = out.find(what, pos)) != std::string::npos) {
            sum += std::stol(out.substr(out.rfind(", ", pos) + 2));
            pos += strlen(what);
        }
        return sum;
    }
};

TEST_F(test_mpich, two_ranks_one_device_each)
{
    run_result r = job(false, "mpi_verify", {"3"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("UCX_NET_DEVICES=rxe0:1")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("UCX_NET_DEVICES=rxe1:1")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(", 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_verify: ok")) << r.output;
}

/* point-to-point, 1 MiB rendezvous, buffers changed by raw syscalls */
class test_mpich_p2p : public test_mpich,
                       public ::testing::WithParamInterface<std::string> {
};

TEST_P(test_mpich_p2p, plain_mpich_shows_the_failure)
{
    run_result r = job(false, "mpi_remap", {"8", GetParam(), "both"});
    EXPECT_NE(0, r.status) << "plain MPICH kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
}

TEST_P(test_mpich_p2p, mrlease_keeps_every_byte)
{
    run_result r = job(true, "mpi_remap", {"8", GetParam(), "both"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("; 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    expect_restored(r, 8); /* 4 changes on each of the two ranks */
    printf("%s", r.output.c_str());
}

/* (mremap and dontneed take the same path through mrlease as under Open MPI,
 * where test_rdma_coherence covers them: CI time goes to MPICH's own paths) */
INSTANTIATE_TEST_SUITE_P(change, test_mpich_p2p, ::testing::Values("remap"));

/* another process truncates each rank's buffer file and regrows it */
TEST_F(test_mpich, file_regrown_plain_mpich_shows_the_failure)
{
    run_result r = job(false, "mpi_remap", {"6", "regrow", "both", "/dev/shm/mrl-mpich"});
    EXPECT_NE(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
}

TEST_F(test_mpich, file_regrown_mrlease_keeps_every_byte)
{
    run_result r = job(true, "mpi_remap", {"6", "regrow", "both", "/dev/shm/mrl-mpich"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("; 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    expect_restored(r, 6); /* 3 changes on each rank */
    printf("%s", r.output.c_str());
}

/* one-sided: the window's memory changes under the origin's key */
TEST_F(test_mpich, window_plain_mpich_loses_put_and_get)
{
    run_result r = job(false, "mpi_win_remap", {"8", "remap"});
    EXPECT_NE(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_win_remap: FAILED")) << r.output;
    /* Put and Get went by RDMA to the old pages; Accumulate by active
     * messages, which the target applies to its new pages */
    EXPECT_EQ(std::string::npos, r.output.find("(get 0, ")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find(", put 0, ")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(", accumulate 0)")) << r.output;
}

TEST_F(test_mpich, window_mrlease_keeps_every_byte)
{
    run_result r = job(true, "mpi_win_remap", {"8", "remap"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("(get 0, put 0, accumulate 0)")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_win_remap: ok")) << r.output;
    /* 4 changes of the target's window, each re-bound before the next epoch */
    EXPECT_GE(windows_rebound(r.output), 4) << r.output;
    printf("%s", r.output.c_str());
}
