/*
 * Verbs mode (UCX_IB_LEASE_MODE=verbs), the only mode libuct_ib_lease runs
 * on UCX 1.14 to 1.20, tried here on the tested UCX 1.13.1 under mpirun in
 * the guest. Registrations are leased at libibverbs, and UCX's caches learn
 * of a break only through UCM's VM_UNMAPPED event (ucm_vm_munmap): the IB
 * memory domain's cache is not interposed. Two layouts of UCX's caches:
 *  - md_cache: the IB memory domain caches (1.13 to 1.15): p2p rendezvous
 *    buffers go through it;
 *  - no_md_cache (UCX_IB_REG_METHODS=direct, as 1.16+ is): only UCP's own
 *    cache is left, which holds the MPI windows' registrations.
 * Each job runs on plain UCX with the same settings too, which must show the
 * failure (so the test can see decoherence).
 */
#include "rdma_test.h"

using namespace mrl;

namespace {

struct verbs_case {
    const char *name;
    const char *app;        /* test/mpi/... */
    const char *args[4];    /* NULL-terminated */
    bool       md_cache;    /* the IB memory domain's cache on */
    const char *env;        /* a variable set to 1, or NULL */
    bool       plain_fails; /* plain UCX shows the failure */
};

const verbs_case cases[] = {
    {"p2p_remap", "mpi_remap", {"6", "remap", "both", NULL}, true, NULL, true},
    {"p2p_mremap", "mpi_remap", {"6", "mremap", "both", NULL}, true, NULL, true},
    {"p2p_dontneed", "mpi_remap", {"6", "dontneed", "both", NULL}, true, NULL, true},
    {"p2p_shm", "mpi_remap", {"6", "shm", "both", NULL}, true, NULL, true},
    {"p2p_file_regrown", "mpi_remap",
     {"6", "regrow", "both", "/dev/shm/mrl-verbs-regrow"}, true, NULL, true},
    /* no monitor can vouch for it: registered for each use, and said */
    {"p2p_file_kept_open", "mpi_remap",
     {"6", "regrow", "both", "/dev/shm/mrl-verbs-keepfd"}, true, "MRL_KEEP_FD", true},
    {"window_remap", "mpi_win_remap", {"4", "remap", NULL}, false, NULL, true},
    {"window_mremap", "mpi_win_remap", {"4", "mremap", NULL}, false, NULL, true},
    {"window_md_cache", "mpi_win_remap", {"4", "remap", NULL}, true, NULL, true},
};

void PrintTo(const verbs_case &c, std::ostream *os)
{
    *os << c.name;
}

} // namespace

class test_verbs_mode : public rdma_fixture,
                        public ::testing::WithParamInterface<verbs_case> {
protected:
    run_result job(bool mrlease)
    {
        const verbs_case &c = GetParam();
        std::vector<std::string> args;
        std::vector<std::string> pass = {"MRL_FILE_CHANGER", "UCX_MRLEASE_MONITORS"};
        auto env = mpi_env();

        for (int i = 0; (i < 4) && (c.args[i] != NULL); ++i) {
            args.push_back(c.args[i]);
        }
        /* the user-space monitors: mrlease.ko, when loaded, would vouch for
         * the kept-open file (test_kmod) */
        env["UCX_MRLEASE_MONITORS"] = "uffd,ucm,flease,inject";
        if (mrlease) {
            env["UCX_IB_LEASE_MODE"] = "verbs";
            pass.push_back("UCX_IB_LEASE_MODE");
        }
        if (!c.md_cache) {
            env["UCX_IB_REG_METHODS"] = "direct";
            pass.push_back("UCX_IB_REG_METHODS");
        }
        if (c.env != NULL) {
            env[c.env] = "1";
            pass.push_back(c.env);
        }
        return run(mpirun(1, builddir_path(std::string("test/mpi/") + c.app), args,
                          mrlease ? mrlease_runner() : "/usr/bin/mpirun", pass),
                   env, 300);
    }

    std::string app() const
    {
        return GetParam().app;
    }

    static int count(const std::string &out, const std::string &what)
    {
        int n = 0;
        for (size_t pos = out.find(what); pos != std::string::npos;
             pos = out.find(what, pos + 1)) {
            ++n;
        }
        return n;
    }
};

TEST_P(test_verbs_mode, plain_ucx_shows_the_failure)
{
    run_result r = job(false);
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see "
                              "decoherence\n" << r.output;
    EXPECT_NE(std::string::npos, r.output.find(app() + ": FAILED")) << r.output;
}

TEST_P(test_verbs_mode, mrlease_keeps_every_byte)
{
    const verbs_case &c = GetParam();
    run_result r        = job(true);

    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(" 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find(app() + ": ok")) << r.output;
    /* verbs mode served it: no cache interposed, registrations leased at
     * libibverbs, and the breaks told to UCX's caches */
    EXPECT_EQ(std::string::npos, r.output.find("rcache mode")) << r.output;
    EXPECT_EQ(2, count(r.output, "]: 0 IB registration caches leased")) << r.output;
    EXPECT_GT(sum_before(r.output, " IB registrations leased at libibverbs"), 0)
        << r.output;
    if (c.env != NULL) {
        EXPECT_GE(uncached_count(r.output, "file_open"), 6) << r.output;
    } else {
        EXPECT_GT(sum_before(r.output, " breaks told to UCX's caches"), 0) << r.output;
    }
    if (app() == "mpi_win_remap") {
        /* the peer's key reaches the new pages: its window was re-bound */
        EXPECT_GT(sum_before(r.output, " windows re-bound to new pages"), 0) << r.output;
    }
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(ucx_1_13, test_verbs_mode, ::testing::ValuesIn(cases),
                         [](const ::testing::TestParamInfo<verbs_case> &i) {
                             return std::string(i.param.name);
                         });
