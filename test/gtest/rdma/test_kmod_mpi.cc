/*
 * The coherence suite over rxe with mrlease.ko as the ONLY monitor
 * (UCX_MRLEASE_MONITORS=kmod): every MPI job of test_rdma's coherence
 * tests (raw-syscall remaps, raw shmdt of SysV segments, one-sided
 * windows, a buffer file truncated and regrown by another program) and the
 * cases no user-space monitor covers
 * (a /dev/shm file the application keeps open; one file mapped by two and
 * by four ranks and regrown by another program), which with kmod are
 * cached and still correct; then UCT programs that never call UCP, whose
 * windows the engine's dispatcher thread must re-bind when the kernel
 * raises an event.
 *
 * Plain UCX on the very same jobs, showing the failure mrlease prevents:
 * test_rdma_coherence.plain_ucx_shows_the_failure, test_rdma_window.*,
 * test_rdma.file_regrown_plain_ucx_shows_the_failure, test_uncached.*,
 * test_kmod_mpi_plain.shm_shows_the_failure
 * and test_rdma_uct.plain_ucx_shows_the_failure (plain UCX runs no
 * monitor, so those are the plain runs of these jobs).
 */
#include "rdma_test.h"
#include "kmod_test.h"

using namespace mrl;

namespace {

struct kmod_job {
    const char  *name;
    const char  *app;        /* test/mpi/... */
    int         per_device;  /* ranks on each rxe device */
    const char  *mode;
    const char  *side;       /* mpi_remap: whose buffer changes */
    const char  *file;       /* FILE_PREFIX, or nullptr: anonymous buffers */
    const char  *env;        /* MRL_KEEP_FD or MRL_SHARED_FILE, or nullptr */
    long        min_restored; /* IB registrations invalidated and restored */
};

const kmod_job jobs[] = {
    {"remap", "mpi_remap", 1, "remap", "both", nullptr, nullptr, 8},
    {"dontneed", "mpi_remap", 1, "dontneed", "both", nullptr, nullptr, 8},
    /* SysV segments detached and attached anew by raw syscalls: no
     * user-space monitor sees a raw shmdt */
    {"shm", "mpi_remap", 1, "shm", "both", nullptr, nullptr, 8},
    {"file_regrown", "mpi_remap", 1, "regrow", "both", "/dev/shm/mrl-kmod-regrow",
     nullptr, 6},
    {"file_fd_kept_open", "mpi_remap", 1, "regrow", "both",
     "/dev/shm/mrl-kmod-kept", "MRL_KEEP_FD", 6},
    {"one_file_two_ranks", "mpi_remap", 1, "regrow", "recv",
     "/dev/shm/mrl-kmod-shared2", "MRL_SHARED_FILE", 3},
    {"one_file_four_ranks", "mpi_remap", 2, "regrow", "recv",
     "/dev/shm/mrl-kmod-shared4", "MRL_SHARED_FILE", 3},
    {"window_remap", "mpi_win_remap", 1, "remap", nullptr, nullptr, nullptr, 0},
    {"window_dontneed", "mpi_win_remap", 1, "dontneed", nullptr, nullptr, nullptr, 0}
};

void PrintTo(const kmod_job &j, std::ostream *os)
{
    *os << j.name;
}

/* "(kmod K, uffd U, ucm C, flease F)" of each rank's summary, summed */
void monitor_counts(const std::string &out, long *kmod, long *others)
{
    static const char what[] = "decoherence events (kmod ";
    size_t pos = 0;
    long k, u, c, f;

    *kmod = *others = 0;
    while ((pos = out.find(what, pos)) != std::string::npos) {
        pos += strlen(what);
        if (sscanf(out.c_str() + pos, "%ld, uffd %ld, ucm %ld, flease %ld", &k, &u,
                   &c, &f) == 4) {
            *kmod   += k;
            *others += u + c + f;
        }
    }
}

} // namespace

/* The guest with mrlease.ko loaded; unloaded after each suite, so that
 * later tests run as users do, without the module. */
class kmod_rdma_fixture : public rdma_fixture {
protected:
    static void TearDownTestSuite()
    {
        kmod_unload();
    }

    void SetUp() override
    {
        rdma_fixture::SetUp();
        ASSERT_EQ(0u, geteuid()) << "run in the guest (make check-rdma)";
        ASSERT_TRUE(kmod_load());
    }
};

class test_kmod_mpi : public kmod_rdma_fixture,
                      public ::testing::WithParamInterface<kmod_job> {
protected:
    run_result job()
    {
        const kmod_job &j = GetParam();
        auto env          = mpi_env();
        std::vector<std::string> args = {"8", j.mode};
        std::vector<std::string> pass = {"UCX_MRLEASE_MONITORS"};

        env["UCX_MRLEASE_MONITORS"] = "kmod";
        if (j.side != nullptr) {
            args = {j.file ? "6" : "8", j.mode, j.side};
        }
        if (j.file != nullptr) {
            args.push_back(j.file);
            pass.push_back("MRL_FILE_CHANGER");
        }
        if (j.env != nullptr) {
            env[j.env] = "1";
            pass.push_back(j.env);
        }
        if (getenv("UCX_MRLEASE_KMOD_HOLD") != nullptr) {
            pass.push_back("UCX_MRLEASE_KMOD_HOLD"); /* the suite run held */
        }
        return run(mpirun(j.per_device, builddir_path(std::string("test/mpi/") + j.app),
                          args, mrlease_runner(), pass),
                   env, 300);
    }
};

TEST_P(test_kmod_mpi, keeps_every_byte)
{
    const kmod_job &j = GetParam();
    run_result r      = job();

    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(std::string(j.app) + ": ok")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(" 0 wrong bytes")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease: kmod: " MRLEASE_DEVICE))
        << "the ranks ran without the kernel monitor\n" << r.output;

    /* every event came from the kernel monitor, the only one running */
    long kmod, others;
    monitor_counts(r.output, &kmod, &others);
    EXPECT_GT(kmod, 0) << r.output;
    EXPECT_EQ(0, others) << r.output;

    if (j.min_restored > 0) {
        long invalidated, restored;
        restored_counts(r.output, &invalidated, &restored);
        EXPECT_GE(invalidated, j.min_restored) << r.output;
        EXPECT_EQ(invalidated, restored) << r.output;
    } else {
        /* 4 changes of the target's window, each re-bound before the next epoch */
        size_t pos = r.output.find(" windows re-bound");
        ASSERT_NE(std::string::npos, pos) << r.output;
        long rebound = 0;
        while (pos != std::string::npos) {
            rebound += std::stol(r.output.substr(r.output.rfind(", ", pos) + 2));
            pos = r.output.find(" windows re-bound", pos + 1);
        }
        EXPECT_GE(rebound, 4) << r.output;
    }

    /* kmod vouches for the file cases too: cached, nothing left uncovered */
    EXPECT_EQ(std::string::npos, r.output.find("registrations NOT cached")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("are not cached")) << r.output;
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(job, test_kmod_mpi, ::testing::ValuesIn(jobs),
                         [](const ::testing::TestParamInfo<kmod_job> &i) {
                             return std::string(i.param.name);
                         });

/*
 * Nothing changes, so registrations stay cached: MPI ping-pong, put and get
 * of 32 KiB, 256 KiB and 4 MiB between buffers of 4 MiB side by side (huge pages)
 * and a window, kmod the only monitor. Under Open MPI libibverbs' fork
 * support is on, and every registration and deregistration splits or
 * merges a vma (MADV_DONTFORK, MADV_DOFORK); the kernel raises a CLEAR over
 * the 2 MiB around each cut, which broke the neighbouring registrations:
 * they were registered again, split again, and every message re-registered
 * (4124 kernel events in one rank, a registration per message, put at
 * 32 KiB 7.5 MB/s instead of 116). The module now ignores such CLEARs
 * (kmod_events' thp_split_beside and dontfork_beside).
 */
class test_kmod_mpi_cached : public kmod_rdma_fixture {
};

TEST_F(test_kmod_mpi_cached, nothing_changing_keeps_registrations)
{
    auto env = mpi_env();

    env["UCX_MRLEASE_MONITORS"] = "kmod";
    env["MRL_BENCH_SIZES"]      = "32768 262144 4194304";
    env["MRL_BENCH_CHURN"]      = "0";
    env["MRL_BENCH_MIB"]        = "16";
    run_result r = run(mpirun(1, builddir_path("bench/bench_mpi"), {"mrlease", "1"},
                              mrlease_runner(),
                              {"UCX_MRLEASE_MONITORS", "MRL_BENCH_SIZES",
                               "MRL_BENCH_CHURN", "MRL_BENCH_MIB"}),
                       env, 300);
    ASSERT_EQ(0, r.status) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease: kmod: " MRLEASE_DEVICE))
        << "the ranks ran without the kernel monitor\n" << r.output;

    /* nine rows (3 tests x 3 sizes), no wrong byte */
    size_t rows = 0, pos = 0;
    while ((pos = r.output.find("mpi,", pos)) != std::string::npos) {
        size_t eol = r.output.find('\n', pos);
        std::string row = r.output.substr(pos, eol - pos);
        EXPECT_EQ(",0,0", row.substr(row.size() - 4)) << row;
        ++rows;
        pos = eol;
    }
    EXPECT_EQ(9u, rows) << r.output;

    /* a few events while UCX starts (its own buffers come and go), not one
     * or more per message (the loop: thousands) */
    long kmod, others;
    monitor_counts(r.output, &kmod, &others);
    EXPECT_LT(kmod, 200) << r.output;
    printf("%s", r.output.c_str());
}

/*
 * Plain UCX on the shm job: its registrations of the detached segments stay
 * cached, sends read the old pages and receives land in them. (Plain UCX
 * runs no monitor: this is the job's plain run; the other jobs' are named
 * at the top.)
 */
class test_kmod_mpi_plain : public rdma_fixture {
};

TEST_F(test_kmod_mpi_plain, shm_shows_the_failure)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                              {"8", "shm", "both"}),
                       mpi_env(), 300);
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("SysV shm buffers")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
}

/*
 * The race userfaultfd cannot close exactly: a raw madvise(DONTNEED) (no
 * hook sees it) from a thread of the lowest scheduling class, while another
 * thread of the rank spins in MPI. userfaultfd reports REMOVE before the zap
 * and lets the changer go when the report is read; the changer then waits
 * for a CPU. Without mrlease.ko the keeper's zap witness waits to see the
 * pages go (test_threads_raw_race; before it, 9,400,320 of 10,485,760 bytes
 * wrong in 10 rounds). The module hands the event out only after the zap,
 * so the re-bind lands on the new pages with no witness. Default monitors:
 * with the module loaded they are kmod and ucm.
 */
class test_kmod_mpi_race : public kmod_rdma_fixture {
};

TEST_F(test_kmod_mpi_race, raw_dontneed_by_a_descheduled_thread_keeps_every_byte)
{
    run_result r = run(win_race(10, "rawdontneed", mrlease_runner()), mpi_env(), 300);

    expect_win_race_ok(r, 10, "rawdontneed");
    EXPECT_EQ(std::string::npos, r.output.find("mrlease: kmod: " MRLEASE_DEVICE))
        << "the ranks ran without the kernel monitor\n" << r.output;
    /* each round's change re-bound the target's window */
    EXPECT_GE(sum_before(r.output, " windows re-bound to new pages"), 10) << r.output;
    printf("%s", r.output.c_str());
}

TEST_F(test_kmod_mpi_plain, raw_dontneed_race_shows_the_failure)
{
    run_result r = run(win_race(10, "rawdontneed"), mpi_env(), 300);
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_win_race: FAILED")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
}

/*
 * UCT programs never call UCP, so nothing of theirs runs progress: the
 * engine's dispatcher thread must handle a kernel event by itself and
 * re-bind the window under the peer's old key before the peer uses it.
 */
class test_kmod_uct : public kmod_rdma_fixture,
                      public ::testing::WithParamInterface<std::string> {
};

TEST_P(test_kmod_uct, keeps_every_byte)
{
    /* put and atomic change the target with raw syscalls between rounds and
     * go on at once (a registration lookup, then the transfer), 1000 rounds,
     * so that the dispatcher thread, woken by the same change, is met at
     * every point of its handling. The reader used to lower the kernel's
     * pending bit before it had queued the events: a lookup in that gap saw
     * nothing pending and the transfer went out under a binding about to
     * break. 1000 rounds failed in each of 6 runs before (put: 722,160 to
     * 1,203,600 wrong bytes; atomic: "Connection reset by remote peer", a
     * window unbound under the fetch-add); 8 rounds, in about one run of 4. */
    const char *rounds = (std::string(GetParam()) == "nolookup") ? "4" : "1000";
    std::map<std::string, std::string> env = {
        {"UCX_IB_GID_INDEX", "0"},
        {"LD_PRELOAD", builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so")},
        {"UCX_IB_LEASE_ENABLE", "y"},
        {"UCX_MRLEASE_MONITORS", "kmod"}};
    run_result r = run({builddir_path("test/rdma/uct_lease"), GetParam(), rounds}, env,
                       600);

    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("uct_lease: ok")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(" 0 wrong ")) << r.output;
    long kmod, others;
    monitor_counts(r.output, &kmod, &others);
    EXPECT_GT(kmod, 0) << r.output;
    EXPECT_EQ(0, others) << r.output;
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(scenario, test_kmod_uct,
                         ::testing::Values("put", "atomic", "nolookup"),
                         [](const ::testing::TestParamInfo<std::string> &i) {
                             return i.param;
                         });

/* nolookup on plain UCX: the put with the old key lands in the old pages */
class test_kmod_uct_plain : public rdma_fixture {
};

TEST_F(test_kmod_uct_plain, nolookup_shows_the_failure)
{
    run_result r = run({builddir_path("test/rdma/uct_lease"), "nolookup"},
                       {{"UCX_IB_GID_INDEX", "0"}}, 180);
    EXPECT_EQ(1, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("uct_lease: FAILED")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
}
