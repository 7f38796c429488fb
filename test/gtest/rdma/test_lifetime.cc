/*
 * libuct_ib_lease over a process's life, in the guest: UCP contexts and
 * workers created and destroyed thousands of times under mrlease leak no
 * protection domain, fd or memory and never run out of slots, and the engine
 * is shut down at exit. And the keeper's windows (test_lease_keeper): one the
 * engine's own thread unbinds is re-bound by the next call once its memory is
 * back, and one whose memory is gone for good costs a UCP call no lock.
 */
#include "rdma_test.h"

#include <cstdlib>

using namespace mrl;

namespace {

/* Cycles of ucp_init/mem_map/destroy: ~0.2 s each under TCG (the guest's
 * kernel opens and closes two rxe devices each time), a worker every 50th
 * (~1 s more): 400 cycles, 800 memory domains, caches and PDs, in ~90 s in
 * make check-rdma; make soak sets MRL_LIFETIME_CYCLES=3000. */
const int worker_every = 50;

int lifetime_cycles()
{
    const char *env = getenv("MRL_LIFETIME_CYCLES");
    return (env != NULL) ? std::atoi(env) : 400;
}

/* the number right before `what` on the line that has it, or -1 */
long number_before(const std::string &out, const std::string &what)
{
    size_t pos = out.find(what);
    if (pos == std::string::npos) {
        return -1;
    }
    size_t start = out.find_last_not_of("0123456789.", pos - 1);
    return std::atol(out.substr(start + 1, pos - start - 1).c_str());
}

double number_after(const std::string &out, const std::string &what)
{
    size_t pos = out.find(what);
    return (pos == std::string::npos) ? -1 :
                                        std::atof(out.c_str() + pos + what.size());
}

} // namespace

class test_lifetime : public rdma_fixture {
protected:
    static std::map<std::string, std::string> lease_env(bool on = true)
    {
        std::map<std::string, std::string> env = {
            {"UCX_IB_GID_INDEX", "0"}, {"UCX_TLS", "rc_verbs,ud_verbs"}};
        if (on) {
            env["LD_PRELOAD"] = builddir_path(
                    "src/uct_ib_lease/.libs/libuct_ib_lease.so");
            env["UCX_IB_LEASE_ENABLE"] = "y";
        }
        return env;
    }
};

/*
 * Every cycle opens two IB memory domains (rxe0, rxe1): two leased
 * registration caches, two protection domains with a window binder, two
 * registrations kept through windows. Before: the binder's QP kept each PD
 * busy (ibv_dealloc_pd failed, the closed device context stayed mapped), and
 * after 64 caches and 64 PDs the rest ran unleased without a word.
 */
TEST_F(test_lifetime, ucp_cycles_leak_nothing_and_engine_shuts_down)
{
    const int cycles = lifetime_cycles();
    ASSERT_GE(cycles, worker_every) << "MRL_LIFETIME_CYCLES";
    run_result r = run({builddir_path("test/rdma/ucp_lifetime"), "cycles",
                        std::to_string(cycles), std::to_string(worker_every)},
                       lease_env(), 115 + cycles / 2);
    printf("%s", r.output.c_str());
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("ucp_lifetime: ok")) << r.output;
    /* fds and RDMA device mappings did not grow; resident memory by at most
     * MRL_RSS_BOUND_KB (2 MiB) over the cycles (checked by ucp_lifetime) */
    EXPECT_NE(std::string::npos, r.output.find("fds +0,")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("RDMA device mappings +0")) << r.output;
    /* no table full, every cache leased, every key kept */
    EXPECT_EQ(std::string::npos, r.output.find("IB_LEASE_MAX")) << r.output;
    EXPECT_EQ(2 * cycles,
              number_before(r.output, " IB registration caches leased")) << r.output;
    EXPECT_EQ(2 * cycles,
              number_before(r.output, " protection domains (0 still open)"))
        << r.output;
    EXPECT_GE(number_before(r.output, " kept through memory windows"),
              2 * cycles) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("(at most 2 at once)")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("; engine shut down")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("leases still held")) << r.output;
}

class test_lease_keeper : public test_lifetime {
};

/* Plain UCX: the put with the old key lands in the pages that were let go. */
TEST_F(test_lease_keeper, rebind_plain_ucx_shows_the_failure)
{
    run_result r = run({builddir_path("test/rdma/uct_lease"), "rebind"},
                       lease_env(false), 180);
    EXPECT_EQ(1, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("uct_lease: FAILED")) << r.output;
}

/*
 * The engine's thread sees the unmap alone and unbinds the window; the
 * memory comes back with no event at all. The keeper holds the pending word
 * from that thread, so the next lookup re-binds, and a put with the old key
 * lands in the new pages. Before: nothing raised the word and the put failed
 * with a remote access error.
 */
TEST_F(test_lease_keeper, rebind_after_engine_thread_unbinds)
{
    run_result r = run({builddir_path("test/rdma/uct_lease"), "rebind"}, lease_env(),
                       180);
    printf("%s", r.output.c_str());
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("uct_lease: ok")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("; 0 wrong bytes")) << r.output;
    EXPECT_GE(number_before(r.output, " windows re-bound to new pages"), 4)
        << r.output;
}

/*
 * While a window waits for memory that is gone for good, a UCP call costs a
 * clock read and a compare (re-bind attempts back off to one a second), not
 * two mutexes, a spinlock and a registration attempt every millisecond.
 */
TEST_F(test_lease_keeper, unbacked_window_costs_no_lock_per_call)
{
    for (const char *async : {"y", "n"}) {
        auto env                  = lease_env();
        env["UCX_IB_LEASE_ASYNC"] = async;
        run_result r = run({builddir_path("test/rdma/ucp_lifetime"), "unbacked", "2"},
                           env, 120);
        printf("UCX_IB_LEASE_ASYNC=%s:\n%s", async, r.output.c_str());
        EXPECT_EQ(0, r.status) << r.output;
        double idle = number_after(r.output, "ucp_worker_progress: ");
        double gone = number_after(r.output, "ns per call idle, ");
        ASSERT_GT(idle, 0) << r.output;
        ASSERT_GT(gone, 0) << r.output;
        EXPECT_LT(gone, idle * 1.3 + 100) << r.output;
        /* one window per IB memory domain (rxe0, rxe1) waited, and was
         * reported lost after a second */
        EXPECT_EQ(2, number_before(r.output, " lost it")) << r.output;
    }
}
