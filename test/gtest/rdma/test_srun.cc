/*
 * mrlease under a batch system's launcher: Slurm's srun (22.05, Debian 12's
 * slurm-wlm) starts the ranks, mrlease-exec in front of each one turns
 * mrlease on. In the guest, as root, contrib/vm/slurm-guest brings up a
 * one-node cluster (munged, slurmctld, slurmd, all under a private directory
 * in /tmp) for the suite and stops it afterwards.
 *
 * Each task gets its own rxe device through srun --multi-prog (task %t on
 * rxe%t), with GID index 0 and UCX_TLS=rc_verbs,ud_verbs,self for all.
 * MPICH's ranks find each other through srun --mpi=pmi2 (Slurm's pmi2
 * plugin also answers the PMI-1 wire protocol of MPICH's simple PMI
 * client), Open MPI's through srun --mpi=pmix (Slurm's pmix_v4 plugin and
 * Open MPI's ext3x component, both on Debian's PMIx 4.2).
 *
 * The coherence job is mpi_remap: 1 MiB rendezvous transfers whose buffers
 * are remapped by raw syscalls, every byte checked. Plain, the stack loses
 * bytes; with mrlease-exec none, and each task's exit summary shows its
 * registrations invalidated and restored.
 */
#include "rdma_test.h"

#include "config.h"

#include <dirent.h>
#include <fstream>
#include <set>
#include <sstream>
#include <stdlib.h>

using namespace mrl;

class test_srun : public rdma_fixture {
protected:
    static void SetUpTestSuite()
    {
        s_error.clear();
        if (!in_guest()) {
            return; /* SetUp says so */
        }
        for (auto prog : {"/usr/bin/srun", "/usr/sbin/munged", "/usr/sbin/slurmctld",
                          "/usr/sbin/slurmd"}) {
            if (access(prog, X_OK) != 0) {
                s_error += std::string(prog) + " not found: install slurm-wlm "
                           "(contrib/install-deps does; CI runs it). ";
            }
        }
        if (!s_error.empty()) {
            return;
        }
        char tmpl[] = "/tmp/mrl-srun.XXXXXX";
        if (mkdtemp(tmpl) == nullptr) {
            s_error = std::string("mkdtemp ") + tmpl + ": " + strerror(errno);
            return;
        }
        s_dir = tmpl;
        double start = now_s();
        run_result r = run({slurm_guest(), "start", s_dir}, {}, 300);
        if ((r.status != 0) ||
            (r.output.find("SLURM_CONF=" + conf()) == std::string::npos)) {
            s_error = "contrib/vm/slurm-guest start " + s_dir + " failed (status " +
                      std::to_string(r.status) + "):\n" + r.output;
            return;
        }
        printf("slurm: munged, slurmctld and slurmd up in %.1f s (%s)\n",
               now_s() - start, conf().c_str());
    }

    static void TearDownTestSuite()
    {
        if (s_dir.empty()) {
            return;
        }
        double start = now_s();
        run_result r = run({slurm_guest(), "stop", s_dir}, {}, 120);
        EXPECT_EQ(0, r.status) << "slurm-guest stop " << s_dir << ":\n" << r.output;
        printf("slurm: daemons stopped in %.1f s\n", now_s() - start);
        std::string left = daemons_running();
        EXPECT_EQ("", left) << "left running after slurm-guest stop";
        s_dir.clear();
    }

    void SetUp() override
    {
        rdma_fixture::SetUp();
        ASSERT_EQ("", s_error) << "no Slurm cluster in the guest";
    }

    static std::string slurm_guest()
    {
        return std::string(MRL_TOP_SRCDIR) + "/contrib/vm/slurm-guest";
    }

    static std::string conf()
    {
        return s_dir + "/slurm.conf";
    }

    static std::string mrlease_exec()
    {
        return mrlease_launcher("mrlease-exec");
    }

    /* "name(pid) ..." of every munged, slurmctld, slurmd, slurmstepd */
    static std::string daemons_running()
    {
        static const std::set<std::string> daemons = {"munged", "slurmctld", "slurmd",
                                                      "slurmstepd"};
        std::string found;
        DIR *proc = opendir("/proc");
        struct dirent *de;

        while ((proc != nullptr) && ((de = readdir(proc)) != nullptr)) {
            std::ifstream comm(std::string("/proc/") + de->d_name + "/comm");
            std::string name;
            if (std::getline(comm, name) && daemons.count(name)) {
                found += name + "(" + de->d_name + ") ";
            }
        }
        if (proc != nullptr) {
            closedir(proc);
        }
        return found;
    }

    /* srun --mpi=MPI -n 2 --multi-prog: task t on rxe<t>, through
     * mrlease-exec when mrlease */
    static run_result job(const std::string &name, const std::string &mpi, bool mrlease,
                          const std::string &prog, const std::string &args)
    {
        std::string mp = s_dir + "/" + name + (mrlease ? "-mrlease" : "-plain") + ".conf";
        std::ofstream(mp) << "0-1 env UCX_NET_DEVICES=rxe%t:1 "
                          << (mrlease ? mrlease_exec() + " " : "")
                          << builddir_path(prog) << " " << args << "\n";
        std::map<std::string, std::string> env = mpi_env();
        env["SLURM_CONF"]       = conf();
        env["UCX_TLS"]          = "rc_verbs,ud_verbs,self";
        env["UCX_IB_GID_INDEX"] = "0";
        /* Open MPI: UCX for point-to-point and one-sided, as mpirun-rxe */
        env["OMPI_MCA_pml"] = "ucx";
        env["OMPI_MCA_osc"] = "ucx";
        env["OMPI_MCA_btl"] = "^openib,uct,vader";
        double start = now_s();
        run_result r = run({"/usr/bin/srun", "--mpi=" + mpi, "-n", "2",
                            "--kill-on-bad-exit=1", "--multi-prog", mp}, env, 300);
        printf("%s (%s): srun --mpi=%s, status %d, %.1f s\n", name.c_str(),
               mrlease ? "mrlease-exec" : "plain", mpi.c_str(), r.status, now_s() - start);
        return r;
    }

    static void expect_failure_shown(const run_result &r)
    {
        EXPECT_NE(0, r.status) << "plain stack under srun kept coherent: the test "
                                  "cannot see decoherence\n" << r.output;
        EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
        EXPECT_GT(sum_before(r.output, " wrong bytes"), 0) << r.output;
        EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
        printf("%s", r.output.c_str());
    }

    /* both tasks ran through mrlease-exec and each restored what it lost:
     * 4 changes on each rank, so at least 4 registrations each */
    static void expect_every_byte(const run_result &r)
    {
        EXPECT_EQ(0, r.status) << r.output;
        EXPECT_NE(std::string::npos, r.output.find("; 0 wrong bytes")) << r.output;
        EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
        /* "mrlease[PID]: ...; N IB registrations invalidated, M restored, ..." */
        static const char what[] = " IB registrations invalidated, ";
        std::istringstream lines(r.output);
        std::string l;
        int tasks = 0;
        while (std::getline(lines, l)) {
            size_t tag = l.find("mrlease["), at = l.find(what);
            if ((tag == std::string::npos) || (at == std::string::npos)) {
                continue;
            }
            std::string pid  = l.substr(tag + 8, l.find(']', tag) - tag - 8);
            long invalidated = std::stol(l.substr(l.rfind("; ", at) + 2));
            long restored    = std::stol(l.substr(at + strlen(what)));
            EXPECT_GE(invalidated, 4) << "task pid " << pid << "\n" << r.output;
            EXPECT_EQ(invalidated, restored) << "task pid " << pid << "\n" << r.output;
            ++tasks;
        }
        EXPECT_EQ(2, tasks) << "one mrlease exit summary per task\n" << r.output;
        EXPECT_GE(sum_before(r.output, " restored, "), 8) << r.output;
        EXPECT_EQ(0, sum_before(r.output, " dead;")) << r.output;
        printf("%s", r.output.c_str());
    }

    static std::string s_dir;   /* the cluster's directory */
    static std::string s_error; /* why there is no cluster */
};

std::string test_srun::s_dir;
std::string test_srun::s_error;

static const char remap_args[] = "8 remap both";

TEST_F(test_srun, mpich_pmi2_plain_shows_the_failure)
{
    if (*mpich_missing() != '\0') {
        GTEST_SKIP() << mpich_missing();
    }
    expect_failure_shown(job("mpich", "pmi2", false, "test/mpi/mpich/mpi_remap", remap_args));
}

TEST_F(test_srun, mpich_pmi2_mrlease_exec_keeps_every_byte)
{
    if (*mpich_missing() != '\0') {
        GTEST_SKIP() << mpich_missing();
    }
    expect_every_byte(job("mpich", "pmi2", true, "test/mpi/mpich/mpi_remap", remap_args));
}

TEST_F(test_srun, openmpi_pmix_plain_shows_the_failure)
{
    expect_failure_shown(job("ompi", "pmix", false, "test/mpi/mpi_remap", remap_args));
}

TEST_F(test_srun, openmpi_pmix_mrlease_exec_keeps_every_byte)
{
    expect_every_byte(job("ompi", "pmix", true, "test/mpi/mpi_remap", remap_args));
}
