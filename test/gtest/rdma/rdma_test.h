/*
 * What the guest tests share: MPI jobs over the two rxe devices (one app
 * context per device), the environment they need, and the parsing of
 * mrlease's exit summary lines.
 */
#ifndef MRL_RDMA_TEST_H_
#define MRL_RDMA_TEST_H_

#include "../mrlease_test.h"

#include "config.h" /* MRL_HAVE_MPICH */

#include <cctype>
#include <cstring>
#include <unistd.h>

namespace mrl {

inline bool in_guest()
{
    return access("/sys/class/infiniband/rxe0", F_OK) == 0;
}

class rdma_fixture : public ::testing::Test {
protected:
    void SetUp() override
    {
        ASSERT_TRUE(in_guest()) << "no rxe0: run through contrib/guest-run "
                                   "(make check-rdma does)";
    }

    /* MRL_INSTALLED=1 (or =PREFIX): the installed launcher NAME, /usr
     * (PREFIX)/bin/NAME, which finds the installed library by itself;
     * otherwise the source tree's contrib/NAME, with the build tree's
     * library. */
    static std::string mrlease_launcher(const std::string &name)
    {
        const char *prefix = getenv("MRL_INSTALLED");
        if ((prefix != nullptr) && (*prefix != '\0')) {
            return std::string(strcmp(prefix, "1") ? prefix : "/usr") + "/bin/" + name;
        }
        return std::string(MRL_TOP_SRCDIR) + "/contrib/" + name;
    }

    static std::string mrlease_runner()
    {
        return mrlease_launcher("mpirun-mrlease");
    }

    /* contrib/vm/mpirun-rxe: one app context per rxe device, with the
     * settings rxe needs; any launcher (--launcher, --mpich) */
    static std::string rxe_launcher()
    {
        return std::string(MRL_TOP_SRCDIR) + "/contrib/vm/mpirun-rxe";
    }

    /* per_device ranks on rxe0 and as many on rxe1, started by `runner`
     * (Open MPI's mpirun, or mrlease_runner()); `pass` are variables of the
     * caller's environment that every rank gets (-x VAR). */
    static std::vector<std::string> mpirun(int per_device, const std::string &app,
                                           const std::vector<std::string> &args,
                                           const std::string &runner = "/usr/bin/mpirun",
                                           const std::vector<std::string> &pass = {})
    {
        std::vector<std::string> argv = {rxe_launcher(), "--launcher", runner, "-np",
                                         std::to_string(2 * per_device)};
        for (auto &var : pass) {
            argv.insert(argv.end(), {"-x", var});
        }
        argv.insert(argv.end(), {"--", app});
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }

    /* test/mpi/mpi_win_race ROUNDS MODE on two ranks, started by runner */
    static std::vector<std::string> win_race(int rounds, const std::string &mode,
                                             const std::string &runner = "/usr/bin/mpirun")
    {
        return mpirun(1, builddir_path("test/mpi/mpi_win_race"),
                      {std::to_string(rounds), mode}, runner);
    }

    /* mpi_win_race ran ROUNDS rounds of MODE and every byte came right */
    static void expect_win_race_ok(const run_result &r, int rounds, const std::string &mode)
    {
        EXPECT_EQ(0, r.status) << r.output;
        EXPECT_NE(std::string::npos,
                  r.output.find(std::to_string(rounds) + " rounds of " + mode))
            << r.output;
        EXPECT_NE(std::string::npos, r.output.find(" 0 wrong bytes")) << r.output;
        EXPECT_NE(std::string::npos, r.output.find("mpi_win_race: ok")) << r.output;
    }

    static std::map<std::string, std::string> mpi_env()
    {
        std::map<std::string, std::string> env = {
                {"OMPI_ALLOW_RUN_AS_ROOT", "1"}, {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
                {"MRL_FILE_CHANGER", builddir_path("test/helpers/file_changer")}};
        const char *prefix = getenv("MRL_INSTALLED");
        if ((prefix == nullptr) || (*prefix == '\0')) {
            env["MRL_LIB"] = builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so");
        }
        return env;
    }

    /* why MPICH's jobs cannot run here ("" when configure found MPICH and
     * built its test programs) */
    static const char *mpich_missing()
    {
#ifdef MRL_HAVE_MPICH
        return "";
#else
        return "MPICH not found at configure time (pkg-config mpich, "
               "mpiexec.mpich): install 'mpich' and 'libmpich-dev' "
               "(contrib/install-deps) and re-run configure";
#endif
    }

    /* registrations invalidated and restored, summed over the ranks' lines */
    static void restored_counts(const std::string &out, long *invalidated,
                                long *restored)
    {
        static const char what[] = "IB registrations invalidated, ";
        size_t pos = 0;
        *invalidated = *restored = 0;
        while ((pos = out.find(what, pos)) != std::string::npos) {
            size_t start = out.rfind("; ", pos) + 2;
            *invalidated += std::stol(out.substr(start));
            pos += strlen(what);
            *restored += std::stol(out.substr(pos));
        }
    }

    /* "N what" in the ranks' summary lines (the number right before what),
     * summed */
    static long sum_before(const std::string &out, const std::string &what)
    {
        long sum = 0;
        for (size_t pos = out.find(what); pos != std::string::npos;
             pos = out.find(what, pos + 1)) {
            size_t start = pos;
            while ((start > 0) && isdigit((unsigned char)out[start - 1])) {
                --start;
            }
            sum += (start < pos) ? std::stol(out.substr(start, pos - start)) : 0;
        }
        return sum;
    }

    /* "REASON N" in the ranks' "registrations NOT cached" lines, summed */
    static long uncached_count(const std::string &out, const std::string &reason)
    {
        static const char what[] = "registrations NOT cached";
        size_t pos = 0;
        long sum   = 0;
        while ((pos = out.find(what, pos)) != std::string::npos) {
            size_t eol = out.find('\n', pos);
            size_t at  = out.find(" " + reason + " ", pos);
            if ((at != std::string::npos) && (at < eol)) {
                sum += std::stol(out.substr(at + reason.size() + 2));
            }
            pos = eol;
        }
        return sum;
    }
};

} // namespace mrl

#endif
