/*
 * MPI_THREAD_MULTIPLE under mpirun in the guest: four threads per rank
 * sending and receiving at once, and a thread that never calls MPI
 * replacing the pages under their buffers between transfers (raw
 * syscalls). Plain UCX serves stale registrations; with mrlease every byte
 * is right and nothing deadlocks.
 */
#include "rdma_test.h"

using namespace mrl;

class test_threads : public rdma_fixture {
protected:
    run_result job(const std::string &runner)
    {
        return run(mpirun(1, builddir_path("test/mpi/mpi_threads"), {"4", "12"}, runner),
                   mpi_env(), 300);
    }
};

TEST_F(test_threads, plain_ucx_shows_the_failure)
{
    run_result r = job("/usr/bin/mpirun");
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_threads: FAILED")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("some FAILED")) << r.output;
}

TEST_F(test_threads, mrlease_keeps_every_byte)
{
    run_result r = job(mrlease_runner());
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(" 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_threads: ok")) << r.output;
    long invalidated, restored;
    restored_counts(r.output, &invalidated, &restored);
    EXPECT_GE(invalidated, 24) << r.output; /* 6 changes per thread, 4 threads */
    printf("%s", r.output.c_str());
}

/*
 * A change reported before it happens (UCX's hooks; madvise's REMOVE; shmdt
 * has no event after) while another thread of the rank keeps calling MPI:
 * the changer is held 300 ms between the reports and the system call, and
 * the other thread's catch-up must not re-bind the window to the pages about
 * to go (it did before ib_lease_wait_hooked_changes: 3 MiB wrong in 3 rounds
 * of shm and of dontneed).
 */
class test_threads_race : public test_threads,
                          public ::testing::WithParamInterface<const char*> {
protected:
    run_result race(const std::string &runner)
    {
        return run(win_race(3, GetParam(), runner), mpi_env(), 300);
    }
};

TEST_P(test_threads_race, plain_ucx_shows_the_failure)
{
    run_result r = race("/usr/bin/mpirun");
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_win_race: FAILED")) << r.output;
}

TEST_P(test_threads_race, mrlease_keeps_every_byte)
{
    run_result r = race(mrlease_runner());
    expect_win_race_ok(r, 3, GetParam());
    EXPECT_NE(std::string::npos, r.output.find("held 3 times for 300 ms")) << r.output;
    /* the race was run: a re-bind waited for the held change */
    EXPECT_GE(sum_before(r.output, " re-binds waited for a change under way"), 1)
        << "no re-bind waited for a change: the race did not run\n" << r.output;
    /* UCX's hooks held the change: never a re-bind without proof */
    EXPECT_EQ(0, sum_before(r.output, " made without proof of it")) << r.output;
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(change, test_threads_race,
                         ::testing::Values("shm", "dontneed", "remap"));

/*
 * The same race with no hook at all: a raw madvise(DONTNEED) from a thread
 * of the lowest scheduling class, without mrlease.ko (uffd, ucm).
 * userfaultfd reports REMOVE before the zap and lets the changer go when the
 * report is read; the changer then waits for a CPU while another thread of
 * the rank spins in MPI. Before the zap witness (zap_witness.h) that
 * thread's catch-up re-bound the window on the pages about to go: 9,400,320
 * of 10,485,760 bytes wrong in 10 rounds. It now waits for proof that the
 * madvise is done before re-binding.
 */
class test_threads_raw_race : public test_threads {
};

TEST_F(test_threads_raw_race, without_the_module_keeps_every_byte)
{
    run_result r = run(win_race(10, "rawdontneed", mrlease_runner()), mpi_env(), 300);
    expect_win_race_ok(r, 10, "rawdontneed");
    /* no kernel monitor: userfaultfd reported the changes */
    EXPECT_NE(std::string::npos, r.output.find(" decoherence events (kmod 0, uffd "))
        << r.output;
    /* the race was run: re-binds waited for the madvise to be done, and
     * none was made without proof of it */
    EXPECT_GE(sum_before(r.output, " re-binds waited for a raw madvise to be done"), 10)
        << "no re-bind waited for the zap: the race did not run\n" << r.output;
    EXPECT_EQ(0, sum_before(r.output, " made without proof of it")) << r.output;
    printf("%s", r.output.c_str());
}
