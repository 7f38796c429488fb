/*
 * The soak: at least 10^5 decoherence events under MPI traffic (point to
 * point and one-sided), every byte checked, in a bounded time for CI.
 * `make soak` runs it longer (MRL_SOAK_ROUNDS). Plain UCX shows the failure.
 */
#include "rdma_test.h"

#include <cstdlib>

using namespace mrl;

class test_soak : public rdma_fixture {
protected:
    static std::string rounds()
    {
        const char *r = getenv("MRL_SOAK_ROUNDS");
        return (r != NULL) ? r : "50";
    }

    /* 64 KiB messages by rendezvous (registered memory), as larger ones are */
    static std::map<std::string, std::string> soak_env()
    {
        auto env = mpi_env();
        env["UCX_RNDV_THRESH"] = "8192";
        return env;
    }

    /* "N decoherence events" summed over the ranks' summary lines */
    static long events(const std::string &out)
    {
        static const char what[] = " decoherence events";
        size_t pos = 0;
        long sum   = 0;
        while ((pos = out.find(what, pos)) != std::string::npos) {
            size_t start = out.rfind(": ", pos) + 2;
            sum += std::stol(out.substr(start));
            pos += strlen(what);
        }
        return sum;
    }

    /* mrlease's soak, in the rcache mode (UCX 1.13's default) or verbs mode
     * (the one UCX 1.14 to 1.20 get: registrations leased at libibverbs, the
     * caches told through UCM) */
    void soak_with_mrlease(bool verbs)
    {
        /* Without the dispatcher thread every page change of a registered
         * buffer is an event the engine takes and coalesces (with it, the
         * first change of a buffer drops its registration at once, and the
         * next 15 touch no registration). */
        double t0 = now_s();
        auto env  = soak_env();
        std::vector<std::string> pass = {"UCX_IB_LEASE_ASYNC", "UCX_RNDV_THRESH"};
        env["UCX_IB_LEASE_ASYNC"] = "n";
        if (verbs) {
            env["UCX_IB_LEASE_MODE"] = "verbs";
            pass.push_back("UCX_IB_LEASE_MODE");
        }
        run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_soak"), {rounds()},
                                  mrlease_runner(), pass),
                           env, 1800);
        EXPECT_EQ(0, r.status) << r.output;
        EXPECT_NE(std::string::npos, r.output.find(" 0 wrong bytes")) << r.output;
        EXPECT_NE(std::string::npos, r.output.find("mpi_soak: ok")) << r.output;
        EXPECT_EQ(verbs, r.output.find("verbs mode; ") != std::string::npos) << r.output;
        long n = events(r.output);
        long invalidated, restored;
        restored_counts(r.output, &invalidated, &restored);
        EXPECT_GE(n, 100000) << r.output;
        EXPECT_EQ(invalidated, restored) << r.output;
        printf("%s", r.output.c_str());
        printf("soak%s: %ld decoherence events, %ld registrations invalidated and "
               "restored, 0 wrong bytes, %.0f s\n", verbs ? " (verbs mode)" : "", n,
               invalidated, now_s() - t0);
    }
};

TEST_F(test_soak, plain_ucx_shows_the_failure)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_soak"), {"2"},
                              "/usr/bin/mpirun", {"UCX_RNDV_THRESH"}),
                       soak_env(), 300);
    EXPECT_NE(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_soak: FAILED")) << r.output;
}

TEST_F(test_soak, mrlease_hundred_thousand_events_no_wrong_byte)
{
    soak_with_mrlease(false);
}

TEST_F(test_soak, verbs_mode_hundred_thousand_events_no_wrong_byte)
{
    soak_with_mrlease(true);
}
