/*
 * What the tests of other people's programs share (gtest_programs): each
 * program runs plain and under mrlease in the soft-RoCE guest, checks its
 * own results, and the test prints one line per program:
 *
 *   program: NAME: mrlease ok 41.2 s, plain ok 40.8 s, ratio 1.01
 *
 * (also recorded as the test's "program" property in the JSON report).
 */
#ifndef MRL_PROGRAMS_TEST_H_
#define MRL_PROGRAMS_TEST_H_

#include "rdma_test.h"

#include <cstdio>
#include <iostream>

namespace mrl {

struct timed_result {
    run_result r;
    double     seconds;
};

class programs_fixture : public rdma_fixture {
protected:
    static timed_result timed_run(const std::vector<std::string> &argv,
                                  const std::map<std::string, std::string> &env,
                                  double timeout_s)
    {
        double t0    = now_s();
        run_result r = run(argv, env, timeout_s);
        return {r, now_s() - t0};
    }

    /* What turns mrlease on for a rank, as -x variables for any Open MPI
     * launcher (oshrun included): the same as contrib/mpirun-mrlease adds. */
    static std::vector<std::string> mrlease_vars()
    {
        return {"LD_PRELOAD=" + builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so"),
                "UCX_IB_LEASE_ENABLE=y"};
    }

    static std::vector<std::string> concat(std::vector<std::string> a,
                                           const std::vector<std::string> &b)
    {
        a.insert(a.end(), b.begin(), b.end());
        return a;
    }

    /* the number after `key` in `out` at or after `from` (-1 if none) */
    static double number_after(const std::string &out, const std::string &key,
                               size_t from = 0)
    {
        size_t pos = out.find(key, from);
        return (pos == std::string::npos) ? -1 :
                                            atof(out.c_str() + pos + key.size());
    }

    /* mrl_verdict empty: plain only */
    void report(const std::string &program, const std::string &mrl_verdict,
                const timed_result &mrl, const std::string &plain_verdict,
                const timed_result &plain)
    {
        char line[512];
        if (mrl_verdict.empty()) { /* a plain-only run */
            snprintf(line, sizeof(line), "program: %s: plain %s %.1f s", program.c_str(),
                     plain_verdict.c_str(), plain.seconds);
        } else {
            snprintf(line, sizeof(line),
                     "program: %s: mrlease %s %.1f s, plain %s %.1f s, ratio %.2f",
                     program.c_str(), mrl_verdict.c_str(), mrl.seconds,
                     plain_verdict.c_str(), plain.seconds,
                     plain.seconds > 0 ? mrl.seconds / plain.seconds : 0.0);
        }
        std::cout << line << std::endl;
        RecordProperty("program", line);
    }
};

} // namespace mrl

#endif
