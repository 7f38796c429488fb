/*
 * OpenSHMEM (Open MPI's oshrun, spml ucx) over rxe: puts from and gets into
 * PRIVATE buffers whose memory changes between operations
 * (test/shmem/shmem_remap.c). UCX registers a large private buffer for a
 * zero-copy put or get and keeps the registration in its cache: plain UCX
 * then reads and writes the old pages; mrlease keeps every byte.
 */
#include "programs_test.h"

using namespace mrl;

class test_shmem : public programs_fixture,
                   public ::testing::WithParamInterface<std::string> {
protected:
    /* oshrun, one PE per rxe device; spml ucx is asked for in the
     * environment (OMPI_MCA_*), which mpirun passes to every PE */
    timed_result oshrun(const std::vector<std::string> &args, bool mrlease)
    {
        std::vector<std::string> pass = {"MRL_FILE_CHANGER", "SHMEM_SYMMETRIC_SIZE=8M"};
        std::map<std::string, std::string> env = mpi_env();
        env["OMPI_MCA_spml"] = "ucx";
        return timed_run(mpirun(1, builddir_path("test/shmem/shmem_remap"), args,
                                "/usr/bin/oshrun",
                                mrlease ? concat(pass, mrlease_vars()) : pass),
                         env, 300);
    }
};

/* 4 iterations of 1 MiB puts and gets, both private buffers of each PE
 * changed on iterations 1 and 3 */
TEST_P(test_shmem, plain_ucx_fails_mrlease_keeps_every_byte)
{
    std::vector<std::string> args = {"4", GetParam(), "1048576"};
    if (GetParam() == "regrow") {
        args.push_back("/dev/shm/mrl-shmem");
    }

    timed_result plain = oshrun(args, false);
    EXPECT_NE(0, plain.r.status) << "plain UCX kept coherent: the test cannot see "
                                    "decoherence\n" << plain.r.output;
    EXPECT_NE(std::string::npos, plain.r.output.find("shmem_remap: FAILED"))
        << plain.r.output;
    EXPECT_GT(number_after(plain.r.output, "; put "), 0) << plain.r.output;
    EXPECT_GT(number_after(plain.r.output, " bytes, get "), 0) << plain.r.output;
    EXPECT_EQ(std::string::npos, plain.r.output.find("mrlease[")) << plain.r.output;

    timed_result mrl = oshrun(args, true);
    EXPECT_EQ(0, mrl.r.status) << mrl.r.output;
    EXPECT_NE(std::string::npos, mrl.r.output.find("put 0 wrong bytes, get 0 wrong bytes, "
                                                   "atomics 0 wrong")) << mrl.r.output;
    EXPECT_NE(std::string::npos, mrl.r.output.find("shmem_remap: ok")) << mrl.r.output;
    long invalidated, restored;
    restored_counts(mrl.r.output, &invalidated, &restored);
    /* 2 changes on each PE, each seen before the next put */
    EXPECT_GE(invalidated, 4) << mrl.r.output;
    EXPECT_EQ(invalidated, restored) << mrl.r.output;

    report("OpenSHMEM shmem_remap " + GetParam() + " (1 MiB put/get, private buffers)",
           (mrl.r.status == 0) ? "ok" : "FAILED", mrl,
           (plain.r.status != 0) ? "FAILED (as expected: " +
                                   std::to_string((long)number_after(plain.r.output,
                                                                     "; put ")) +
                                   " bytes put wrong)" : "ok (unexpected)",
           plain);
    printf("%s", mrl.r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(change, test_shmem, ::testing::Values("remap", "regrow"));

/* Where plain UCX stays correct, and why: a 2 KiB put is copied through
 * UCX's own registered bounce buffers (short/bcopy), so its private source
 * is never registered and cannot go stale. A 2 KiB get is not: UCP reads it
 * with RDMA straight into the private destination (zero-copy, a cached
 * registration), and plain UCX loses it just like a large one. */
TEST_F(test_shmem, small_puts_copied_small_gets_registered_on_plain_ucx)
{
    timed_result plain = oshrun({"4", "remap", "2048"}, false);
    EXPECT_NE(0, plain.r.status) << plain.r.output;
    EXPECT_NE(std::string::npos, plain.r.output.find("2 changes per PE; put 0 wrong bytes, "))
        << plain.r.output;
    EXPECT_GT(number_after(plain.r.output, " bytes, get "), 0) << plain.r.output;
    report("OpenSHMEM shmem_remap remap (2 KiB put/get)", "", {},
           "puts ok (copied), gets FAILED (registered: " +
               std::to_string((long)number_after(plain.r.output, " bytes, get ")) +
               " bytes wrong)",
           plain);
}
