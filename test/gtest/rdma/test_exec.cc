/*
 * mrlease-exec in front of each rank, under Open MPI's own mpirun
 * (contrib/vm/mpirun-rxe --mrlease), as under any other launcher: the same
 * product as contrib/mpirun-mrlease's -x options, every byte checked. The
 * guest helper's own job line is checked too (two ranks per device).
 */
#include "rdma_test.h"

using namespace mrl;

class test_exec : public rdma_fixture {
protected:
    static run_result job(const std::vector<std::string> &opts, const std::string &np,
                          const std::string &prog, const std::vector<std::string> &args)
    {
        std::vector<std::string> argv = {rxe_launcher()};
        argv.insert(argv.end(), opts.begin(), opts.end());
        argv.insert(argv.end(), {"-np", np, "--", builddir_path(prog)});
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, mpi_env(), 300);
    }
};

TEST_F(test_exec, mpirun_with_mrlease_exec_keeps_every_byte)
{
    run_result r = job({"--mrlease"}, "2", "test/mpi/mpi_remap", {"8", "remap", "both"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("; 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    long invalidated, restored;
    restored_counts(r.output, &invalidated, &restored);
    EXPECT_GE(invalidated, 8) << r.output; /* 4 changes on each of the two ranks */
    EXPECT_EQ(invalidated, restored) << r.output;
    printf("%s", r.output.c_str());
}

/* an odd number of ranks: rxe0 gets the odd one out, each rank its device */
TEST_F(test_exec, mpirun_rxe_spreads_ranks_over_the_devices)
{
    run_result r = job({}, "3", "test/mpi/mpi_verify", {"1"});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("3 ranks")) << r.output;
    for (auto rank : {"rank 0 on mrlease-guest: UCX_TLS=rc_verbs,ud_verbs,self "
                      "UCX_NET_DEVICES=rxe0:1",
                      "rank 1 on mrlease-guest: UCX_TLS=rc_verbs,ud_verbs,self "
                      "UCX_NET_DEVICES=rxe0:1",
                      "rank 2 on mrlease-guest: UCX_TLS=rc_verbs,ud_verbs,self "
                      "UCX_NET_DEVICES=rxe1:1"}) {
        EXPECT_NE(std::string::npos, r.output.find(rank)) << r.output;
    }
    EXPECT_NE(std::string::npos, r.output.find("mpi_verify: ok")) << r.output;
}
