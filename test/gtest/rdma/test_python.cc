/*
 * A Python client: mpi4py with NumPy buffers (test/python/mpi4py_remap.py),
 * point-to-point and one-sided (MPI.Win.Create on a NumPy array), over
 * anonymous memory the script remaps with raw syscalls (ctypes) and over an
 * np.memmap of a /dev/shm file that another program truncates and regrows.
 * The script checks every byte; plain UCX loses some in every case, mrlease
 * none but in the window over the np.memmap (a documented limit, below).
 */
#include "programs_test.h"

using namespace mrl;

static const char *const py_cases[] = {"p2p-remap", "p2p-regrow", "win-remap",
                                       "win-regrow"};

class test_python : public programs_fixture {
protected:
    timed_result mpi4py(bool mrlease)
    {
        return timed_run(mpirun(1, "/usr/bin/python3",
                                {std::string(MRL_TOP_SRCDIR) +
                                     "/test/python/mpi4py_remap.py",
                                 "4", "/dev/shm/mrl-mpi4py"},
                                mrlease ? mrlease_runner() : "/usr/bin/mpirun",
                                {"MRL_FILE_CHANGER"}),
                         mpi_env(), 900);
    }

    /* "mpi4py_remap: CASE: N wrong bytes" */
    static long wrong_bytes(const std::string &out, const std::string &c)
    {
        return (long)number_after(out, "mpi4py_remap: " + c + ": ");
    }
};

TEST_F(test_python, mpi4py_numpy_plain_fails_mrlease_keeps_all_but_the_memmap_window)
{
    timed_result plain = mpi4py(false);
    EXPECT_NE(0, plain.r.status) << plain.r.output;
    EXPECT_NE(std::string::npos, plain.r.output.find("mpi4py_remap: FAILED"))
        << plain.r.output;
    std::string plain_verdict = "FAILED (as expected:";
    for (auto c : py_cases) {
        long wrong = wrong_bytes(plain.r.output, c);
        EXPECT_GT(wrong, 0) << "plain UCX kept " << c << " coherent\n" << plain.r.output;
        plain_verdict += std::string(" ") + c + " " + std::to_string(wrong);
    }
    plain_verdict += " bytes wrong)";

    timed_result mrl = mpi4py(true);
    for (auto c : {"p2p-remap", "p2p-regrow", "win-remap"}) {
        EXPECT_EQ(0, wrong_bytes(mrl.r.output, c)) << c << "\n" << mrl.r.output;
    }
    /* The documented limit (docs/limits.md, "Long-lived registrations of
     * memory no monitor covers"), met by every np.memmap: Python's mmap
     * keeps a duplicate of the file's descriptor open, so the kernel refuses
     * a file lease. Point-to-point stays right (registered per use, "not
     * cached": file_open); a window's registration lives as long as the
     * window, and without the kernel monitor (not loaded in this guest run)
     * nothing sees another process regrow the file under it. */
    long limit = wrong_bytes(mrl.r.output, "win-regrow");
    EXPECT_GT(limit, 0) << "a window over an np.memmap kept coherent without mrlease.ko: "
                           "update docs/limits.md, docs/programs.md and this test\n"
                        << mrl.r.output;
    EXPECT_GT(uncached_count(mrl.r.output, "file_open"), 0) << mrl.r.output;
    /* the script's verdict, for win-regrow */
    EXPECT_NE(0, mrl.r.status) << mrl.r.output;
    EXPECT_NE(std::string::npos, mrl.r.output.find("mpi4py_remap: FAILED")) << mrl.r.output;
    long invalidated, restored;
    restored_counts(mrl.r.output, &invalidated, &restored);
    EXPECT_GE(invalidated, 4) << mrl.r.output; /* 2 changes per rank in p2p-remap */
    EXPECT_EQ(invalidated, restored) << mrl.r.output;

    report("mpi4py + NumPy (p2p and MPI.Win, remap and regrown memmap)",
           "ok in p2p-remap, p2p-regrow, win-remap; win-regrow " + std::to_string(limit) +
               " bytes wrong (known limit without mrlease.ko)",
           mrl, plain_verdict, plain);
    printf("%s", mrl.r.output.c_str());
}
