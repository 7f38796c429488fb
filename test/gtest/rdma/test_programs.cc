/*
 * Programs nobody here wrote, run as their users run them: NetPIPE
 * (NPopenmpi) and the HPC Challenge (hpcc), two ranks, one per rxe device,
 * plain and under mrlease (contrib/mpirun-mrlease). Each checks its own
 * results; the test parses what it says and prints the times.
 */
#include "programs_test.h"

#include <fstream>
#include <sstream>
#include <sys/stat.h>

using namespace mrl;

/* a fresh directory under the guest's /tmp (a tmpfs), removed afterwards;
 * the test's working directory while it lives (hpcc reads and writes its
 * files in the current directory) */
class temp_dir {
public:
    temp_dir()
    {
        char tmpl[] = "/tmp/mrl-programs.XXXXXX";
        m_path      = (mkdtemp(tmpl) != NULL) ? tmpl : "";
        m_old       = getcwd(m_cwd, sizeof(m_cwd));
    }
    ~temp_dir()
    {
        if (m_old != NULL) {
            (void)!chdir(m_old);
        }
        if (!m_path.empty()) {
            run({"/bin/rm", "-rf", m_path}, {}, 60);
        }
    }
    bool enter() const { return !m_path.empty() && (chdir(m_path.c_str()) == 0); }
    const std::string &path() const { return m_path; }

private:
    std::string m_path;
    char        m_cwd[4096];
    const char  *m_old;
};

static std::string slurp(const std::string &path)
{
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

static size_t count_of(const std::string &text, const std::string &what)
{
    size_t n = 0;
    for (size_t pos = text.find(what); pos != std::string::npos;
         pos = text.find(what, pos + what.size())) {
        ++n;
    }
    return n;
}

class test_programs : public programs_fixture {
protected:
    timed_result mpirun2(const std::string &app, const std::vector<std::string> &args,
                         bool mrlease, double timeout_s)
    {
        return timed_run(mpirun(1, app, args,
                                mrlease ? mrlease_runner() : "/usr/bin/mpirun"),
                         mpi_env(), timeout_s);
    }
};

/*
 * NetPIPE: message sizes from 1 byte to UPPER (with its perturbations of
 * +-3 bytes), a fixed number of repeats. With -i it checks every byte it
 * receives ("Integrity check passed" per size); with -I it moves its buffers
 * through a large area (new addresses, new registrations) and measures.
 */
class test_netpipe : public test_programs,
                     public ::testing::WithParamInterface<std::string> {
};

TEST_P(test_netpipe, plain_and_mrlease)
{
    const bool integrity = (GetParam() == "-i");
    temp_dir dir;
    ASSERT_FALSE(dir.path().empty()) << "mkdtemp in /tmp failed";
    const long upper = integrity ? 262144 : 131072;
    std::vector<std::string> args = {GetParam(), "-u", std::to_string(upper), "-n", "3"};
    std::map<std::string, timed_result> res;
    std::map<std::string, std::string> verdict;

    for (bool mrlease : {false, true}) {
        const std::string name = mrlease ? "mrlease" : "plain";
        std::vector<std::string> a = concat(args, {"-o", dir.path() + "/np-" + name + ".out"});
        timed_result t = mpirun2("/usr/bin/NPopenmpi", a, mrlease, 300);
        const std::string &out = t.r.output;
        /* one line per size tested, "N: BYTES bytes REPEATS times --> ...",
         * 1 B to the upper bound in about 1.5x steps */
        size_t sizes = count_of(out, " times --> ");
        size_t last  = out.rfind(" times --> ");
        size_t colon = out.rfind(':', out.rfind(" bytes ", last));
        long largest = (colon == std::string::npos) ? 0 : atol(out.c_str() + colon + 1);
        bool ok      = (t.r.status == 0) &&
                       (out.find("Integrity check failed") == std::string::npos) &&
                       (sizes >= 25) && (2 * largest >= upper) &&
                       (integrity ? (sizes == count_of(out, "Integrity check passed")) :
                                    (number_after(out, " --> ", last) > 0)) &&
                       (mrlease == (out.find("mrlease[") != std::string::npos));
        EXPECT_TRUE(ok) << name << ": status " << t.r.status << ", " << sizes
                        << " sizes up to " << largest << " bytes, " << count_of(out, "Integrity check passed")
                        << " integrity checks passed, mrlease "
                        << (out.find("mrlease[") != std::string::npos ? "on" : "off")
                        << ":\n" << out;
        verdict[name] = ok ? "ok" : "FAILED";
        res[name]     = t;
    }
    report(std::string("NetPIPE ") + GetParam() +
           (integrity ? " (integrity check, 1 B-256 KiB)" : " (invalidate cache, 1 B-128 KiB)"),
           verdict["mrlease"], res["mrlease"], verdict["plain"], res["plain"]);
}

INSTANTIATE_TEST_SUITE_P(option, test_netpipe, ::testing::Values("-i", "-I"),
                         [](const ::testing::TestParamInfo<std::string> &p) {
                             return p.param == "-i" ? "integrity" : "invalidate_cache";
                         });

/* hpcc's input: HPL and PTRANS at N=500 (every other test is sized from
 * it), a 1x2 process grid for the two ranks */
static const char hpccinf[] =
    "HPLinpack benchmark input file\n"
    "mrlease: a small problem for the soft-RoCE guest\n"
    "HPL.out      output file name (if any)\n"
    "6            device out (6=stdout,7=stderr,file)\n"
    "1            # of problems sizes (N)\n"
    "500          Ns\n"
    "1            # of NBs\n"
    "80           NBs\n"
    "0            PMAP process mapping (0=Row-,1=Column-major)\n"
    "1            # of process grids (P x Q)\n"
    "1            Ps\n"
    "2            Qs\n"
    "16.0         threshold\n"
    "1            # of panel fact\n"
    "2            PFACTs (0=left, 1=Crout, 2=Right)\n"
    "1            # of recursive stopping criterium\n"
    "4            NBMINs (>= 1)\n"
    "1            # of panels in recursion\n"
    "2            NDIVs\n"
    "1            # of recursive panel fact.\n"
    "1            RFACTs (0=left, 1=Crout, 2=Right)\n"
    "1            # of broadcast\n"
    "1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)\n"
    "1            # of lookahead depth\n"
    "1            DEPTHs (>=0)\n"
    "2            SWAP (0=bin-exch,1=long,2=mix)\n"
    "64           swapping threshold\n"
    "0            L1 in (0=transposed,1=no-transposed) form\n"
    "0            U  in (0=transposed,1=no-transposed) form\n"
    "1            Equilibration (0=no,1=yes)\n"
    "8            memory alignment in double (> 0)\n"
    "##### This line (no. 32) is ignored (it serves as a separator). ######\n"
    "0                               Number of additional problem sizes for PTRANS\n"
    "500                             values of N\n"
    "0                               number of additional blocking sizes for PTRANS\n"
    "80                              values of NB\n";

/* What hpcc's own checks say in hpccoutf.txt; empty when all passed. */
static std::string hpcc_problems(const std::string &outf)
{
    std::string problems;
    auto need = [&](bool ok, const std::string &what) {
        if (!ok) {
            problems += what + "; ";
        }
    };
    need(outf.find("End of Summary section.") != std::string::npos, "no summary");
    need(outf.find("\nSuccess=1\n") != std::string::npos, "no Success=1 in the summary");
    need(outf.find("FAILED") == std::string::npos, "a FAILED check");
    /* "   N tests completed and failed residual checks" (HPL, PTRANS) */
    static const char failed[] = " tests completed and failed residual checks";
    for (size_t pos = outf.find(failed); pos != std::string::npos;
         pos = outf.find(failed, pos + 1)) {
        size_t bol = outf.rfind('\n', pos);
        need(atol(outf.c_str() + (bol == std::string::npos ? 0 : bol + 1)) == 0,
             "failed residual checks");
    }
    /* HPL's residual, PTRANS's checks, RandomAccess's verification */
    need(count_of(outf, "PASSED") >= 2, "fewer than 2 PASSED checks");
    need(count_of(outf, " errors in ") >= 2, "no RandomAccess verification");
    need(count_of(outf, " errors in ") == count_of(outf, "(passed)"),
         "a RandomAccess verification did not pass");
    need(outf.find("Solution Validates") != std::string::npos, "STREAM did not validate");
    for (auto key : {"HPL_Tflops=", "PTRANS_GBs=", "MPIRandomAccess_GUPs=",
                     "MPIFFT_Gflops=", "StarSTREAM_Triad="}) {
        need(outf.find(key) != std::string::npos, std::string("no ") + key);
    }
    return problems;
}

/* "NAME N s, ..." for each section of hpccoutf.txt, from its clock lines */
static std::string hpcc_section_times(const std::string &outf)
{
    static const char clock[] = "Current time (";
    std::istringstream in(outf);
    std::string line, times;
    long last = -1, now = -1;
    while (std::getline(in, line)) {
        if (line.compare(0, strlen(clock), clock) == 0) {
            now = atol(line.c_str() + strlen(clock));
            last = (last < 0) ? now : last;
        } else if ((line.compare(0, 7, "End of ") == 0) && (last >= 0) &&
                   (line.find(" section.") != std::string::npos)) {
            times += line.substr(7, line.find(" section.") - 7) + " " +
                     std::to_string(now - last) + " s, ";
            last = now;
        }
    }
    return times;
}

TEST_F(test_programs, hpcc_plain_and_mrlease)
{
    temp_dir dir;
    ASSERT_TRUE(dir.enter()) << "cannot make and enter a directory in /tmp";
    {
        std::ofstream inf(dir.path() + "/hpccinf.txt");
        inf << hpccinf;
    }
    std::map<std::string, timed_result> res;
    std::map<std::string, std::string> verdict;

    for (bool mrlease : {false, true}) {
        const std::string name = mrlease ? "mrlease" : "plain";
        unlink((dir.path() + "/hpccoutf.txt").c_str());
        timed_result t = mpirun2("/usr/bin/hpcc", {}, mrlease, 900);
        std::string outf = slurp(dir.path() + "/hpccoutf.txt");
        EXPECT_EQ(0, t.r.status) << name << ":\n" << t.r.output;
        std::string problems = hpcc_problems(outf);
        EXPECT_EQ("", problems) << name << ": hpccoutf.txt:\n" << outf << "\n---\n"
                                << t.r.output;
        EXPECT_EQ(mrlease, t.r.output.find("mrlease[") != std::string::npos)
            << name << ":\n" << t.r.output;
        verdict[name] = (t.r.status == 0 && problems.empty()) ? "ok" : "FAILED";
        res[name]     = t;
        printf("hpcc %s: HPL %.3g Gflop/s, PTRANS %.3g GB/s, MPIRandomAccess %.3g GUP/s, "
               "MPIFFT %.3g Gflop/s\n", name.c_str(),
               number_after(outf, "\nHPL_Tflops=") * 1e3, number_after(outf, "\nPTRANS_GBs="),
               number_after(outf, "\nMPIRandomAccess_GUPs="),
               number_after(outf, "\nMPIFFT_Gflops="));
        printf("hpcc %s: %.1f s: %s\n", name.c_str(), t.seconds,
               hpcc_section_times(outf).c_str());
    }
    report("HPC Challenge (hpcc, N=500, 1x2)", verdict["mrlease"], res["mrlease"],
           verdict["plain"], res["plain"]);
}
