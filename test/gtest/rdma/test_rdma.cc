/*
 * Real verbs, real UCX, real mpirun: runs inside the soft-RoCE guest
 * (make check-rdma). Every test fails on a wrong byte or a bad status.
 */
#include "rdma_test.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace mrl;

class test_rdma : public rdma_fixture {
protected:
    static int free_port()
    {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {};
        socklen_t len = sizeof(a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(s, (struct sockaddr*)&a, sizeof(a));
        getsockname(s, (struct sockaddr*)&a, &len);
        close(s);
        return ntohs(a.sin_port);
    }

    /* ucx_perftest server on rxe0, client on rxe1; returns the client's output */
    static run_result perftest(const std::string &test, const std::string &size)
    {
        std::string port = std::to_string(free_port());
        std::vector<std::string> common = {"-x", "rc_verbs", "-t", test, "-D", "zcopy",
                                           "-s", size, "-n", "200", "-p", port};
        std::map<std::string, std::string> env = {{"UCX_IB_GID_INDEX", "0"}};
        std::vector<std::string> server = {"/usr/bin/ucx_perftest", "-d", "rxe0:1"};
        server.insert(server.end(), common.begin(), common.end());
        env_guard guard(env);
        int sfd;
        pid_t spid = spawn(server, &sfd);
        usleep(500000);
        std::vector<std::string> client = {"/usr/bin/ucx_perftest", "127.0.0.1", "-d",
                                           "rxe1:1"};
        client.insert(client.end(), common.begin(), common.end());
        run_result c = run(client, {}, 120);
        run_result s = wait_for(spid, sfd, 30);
        c.output += "\n--- server:\n" + s.output;
        if (s.status != 0) {
            c.status = c.status ? c.status : s.status;
        }
        return c;
    }
};

TEST_F(test_rdma, verbs_write_read_and_plain_decoherence)
{
    run_result r = run({builddir_path("test/rdma/verbs_smoke"), "rxe0", "rxe1"}, {}, 120);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("rdma write rxe1 -> rxe0, 1 MiB: status 0, "
                                               "0 bytes wrong")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("rdma read  rxe1 <- rxe0, 1 MiB: status 0, "
                                               "0 bytes wrong")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("decoherent")) << r.output;
    printf("%s", r.output.c_str());
}

TEST_F(test_rdma, ucx_perftest_rc_put_zcopy)
{
    run_result r = perftest("put_bw", "65536");
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("Final:")) << r.output;
    printf("%s\n", r.output.substr(0, r.output.find("--- server")).c_str());
}

TEST_F(test_rdma, ucx_perftest_rc_get_zcopy)
{
    run_result r = perftest("get", "65536");
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("Final:")) << r.output;
}

TEST_F(test_rdma, mpi_two_ranks_one_device_each)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_verify"), {"5"}), mpi_env(),
                       300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_verify: ok")) << r.output;
    printf("%s", r.output.c_str());
}

TEST_F(test_rdma, mpi_four_ranks_two_per_device)
{
    run_result r = run(mpirun(2, builddir_path("test/mpi/mpi_verify"), {"2"}), mpi_env(),
                       300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("4 ranks")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_verify: ok")) << r.output;
}

/*
 * The product: memory under UCX's registrations changes between transfers,
 * behind libc's back. Plain UCX must show the failure (so the test can see
 * decoherence); with mrlease on (contrib/mpirun-mrlease) every byte is right
 * and the counters show the registrations restored.
 */
class test_rdma_coherence : public test_rdma,
                            public ::testing::WithParamInterface<std::string> {
};

TEST_P(test_rdma_coherence, plain_ucx_shows_the_failure)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_remap"), {"8", GetParam(),
                                                                         "both"}),
                       mpi_env(), 300);
    EXPECT_NE(0, r.status) << "plain UCX kept coherent: the test cannot see decoherence\n"
                           << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
}

TEST_P(test_rdma_coherence, mrlease_keeps_every_byte)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_remap"), {"8", GetParam(),
                                                                         "both"},
                              mrlease_runner()),
                       mpi_env(), 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    long invalidated, restored;
    restored_counts(r.output, &invalidated, &restored);
    /* 4 changes on each of the two ranks, each seen before the next transfer */
    EXPECT_GE(invalidated, 8) << r.output;
    EXPECT_EQ(invalidated, restored) << r.output;
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(change, test_rdma_coherence,
                         ::testing::Values("remap", "mremap", "dontneed"));

/* rxe's active_mtu of DEV's port 1, as ibv_devinfo prints it ("4096"), or
 * what ibv_devinfo said when it has none */
static std::string active_mtu(const std::string &dev)
{
    run_result r = run({"/usr/bin/ibv_devinfo", "-d", dev}, {}, 30);
    size_t pos = r.output.find("active_mtu:");
    if ((r.status != 0) || (pos == std::string::npos)) {
        return "(ibv_devinfo -d " + dev + ": status " + std::to_string(r.status) + ") " +
               r.output;
    }
    pos = r.output.find_first_not_of(" \t", pos + strlen("active_mtu:"));
    return r.output.substr(pos, r.output.find_first_of(" \n", pos) - pos);
}

static std::string read_line(const std::string &path)
{
    std::string line;
    FILE *f = fopen(path.c_str(), "r");
    char buf[64];
    if ((f != NULL) && (fgets(buf, sizeof(buf), f) != NULL)) {
        line = buf;
        line.erase(line.find_last_not_of("\n") + 1);
    }
    if (f != NULL) {
        fclose(f);
    }
    return line;
}

/* The guest runs its veths at MTU 9000 (guest-run --mtu, so that rxe's
 * active_mtu is 4096); this guard lowers veth0 and veth1 to MTU for one test
 * and puts back what it found. rxe follows the netdev's MTU at once. */
class link_mtu_guard {
public:
    explicit link_mtu_guard(int mtu)
    {
        for (auto dev : {"veth0", "veth1"}) {
            m_saved[dev] = read_line(std::string("/sys/class/net/") + dev + "/mtu");
            m_status    |= run({"/usr/sbin/ip", "link", "set", dev, "mtu",
                                std::to_string(mtu)}, {}, 30).status;
        }
    }
    ~link_mtu_guard()
    {
        for (auto &kv : m_saved) {
            if (!kv.second.empty()) {
                run({"/usr/sbin/ip", "link", "set", kv.first, "mtu", kv.second}, {}, 30);
            }
        }
    }
    int status() const { return m_status; }

private:
    std::map<std::string, std::string> m_saved;
    int                                m_status = 0;
};

/* What guest-run asked for (MRL_GUEST_MTU, 9000 by default) is what the
 * links and rxe run at. */
TEST_F(test_rdma, links_run_at_the_guest_mtu)
{
    const char *want = getenv("MRL_GUEST_MTU");
    ASSERT_NE(nullptr, want) << "guest-run exports MRL_GUEST_MTU";
    EXPECT_EQ(want, read_line("/sys/class/net/veth0/mtu"));
    EXPECT_EQ(want, read_line("/sys/class/net/veth1/mtu"));
    if (atoi(want) >= 9000) {
        EXPECT_EQ("4096", active_mtu("rxe0"));
        EXPECT_EQ("4096", active_mtu("rxe1"));
    }
}

/* rxe's hardware counter NAME of DEV's port 1 */
static long hw_counter(const std::string &dev, const std::string &name)
{
    std::string v = read_line("/sys/class/infiniband/" + dev + "/ports/1/hw_counters/" +
                              name);
    return v.empty() ? -1 : atol(v.c_str());
}

/* A 4 MiB UCP rendezvous (RDMA READ: 1024 response packets at MTU 4096, sent
 * at once) must not overflow the veth's receive backlog: dropped packets
 * (rxe's send_err) cost a retry time-out each, 3 MB/s instead of ~30. */
TEST_F(test_rdma, ucp_4mib_rendezvous_drops_no_packet)
{
    long err0 = hw_counter("rxe1", "send_err"), err0b = hw_counter("rxe0", "send_err");
    ASSERT_GE(err0, 0) << "no hw_counters for rxe1";
    std::string port = std::to_string(free_port());
    std::vector<std::string> common = {"-t", "tag_bw", "-s", "4194304", "-n", "10",
                                       "-w", "5", "-p", port};
    std::map<std::string, std::string> env = {{"UCX_IB_GID_INDEX", "0"},
                                              {"UCX_TLS", "rc_verbs,ud_verbs,self"},
                                              {"UCX_NET_DEVICES", "rxe0:1"}};
    std::vector<std::string> server = {"/usr/bin/ucx_perftest"};
    server.insert(server.end(), common.begin(), common.end());
    int sfd;
    pid_t spid;
    {
        env_guard guard(env);
        spid = spawn(server, &sfd);
    }
    usleep(500000);
    std::vector<std::string> client = {"/usr/bin/ucx_perftest", "127.0.0.1"};
    client.insert(client.end(), common.begin(), common.end());
    env["UCX_NET_DEVICES"] = "rxe1:1";
    run_result c = run(client, env, 240);
    run_result s = wait_for(spid, sfd, 30);
    EXPECT_EQ(0, c.status) << c.output << "\n--- server:\n" << s.output;
    EXPECT_EQ(0, s.status) << s.output;
    EXPECT_NE(std::string::npos, c.output.find("Final:")) << c.output;
    EXPECT_EQ(err0, hw_counter("rxe1", "send_err")) << "packets dropped\n" << c.output;
    EXPECT_EQ(err0b, hw_counter("rxe0", "send_err")) << "packets dropped\n" << c.output;
    printf("%s\n", c.output.c_str());
}

/* Correctness must not depend on the fast links: the point-to-point remap
 * job of test_rdma_coherence at MTU 1500 (active_mtu 1024: a 1 MiB
 * rendezvous is 1024 packets, RDMA READ responses retransmit under TCG).
 * 4 iterations of 1 MiB, 2 changes on each rank, keep it to seconds. */
TEST_F(test_rdma, mtu_1500_plain_ucx_fails_mrlease_keeps_every_byte)
{
    link_mtu_guard mtu(1500);
    ASSERT_EQ(0, mtu.status()) << "ip link set veth0/veth1 mtu 1500 failed";
    ASSERT_EQ("1024", active_mtu("rxe0"));
    ASSERT_EQ("1024", active_mtu("rxe1"));

    run_result plain = run(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                                  {"4", "remap", "both"}),
                           mpi_env(), 300);
    EXPECT_NE(0, plain.status) << "plain UCX kept coherent: the test cannot see "
                                  "decoherence\n" << plain.output;
    EXPECT_NE(std::string::npos, plain.output.find("mpi_remap: FAILED")) << plain.output;
    EXPECT_EQ(std::string::npos, plain.output.find("; 0 wrong bytes")) << plain.output;

    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                              {"4", "remap", "both"}, mrlease_runner()),
                       mpi_env(), 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("; 0 wrong bytes")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    long invalidated, restored;
    restored_counts(r.output, &invalidated, &restored);
    EXPECT_GE(invalidated, 4) << r.output; /* 2 changes on each of the two ranks */
    EXPECT_EQ(invalidated, restored) << r.output;
    /* still at MTU 1500 when the jobs ended */
    EXPECT_EQ("1024", active_mtu("rxe0"));
    printf("%s", r.output.c_str());
}

/*
 * UCT level, one process, rc_verbs between rxe0 and rxe1: put/get zcopy and
 * atomics while the memory under registrations changes between operations
 * and while operations are in flight, and memory that is gone for good.
 */
class test_rdma_uct : public test_rdma,
                      public ::testing::WithParamInterface<std::string> {
protected:
    /* "verbs:SCENARIO": the same in verbs mode (test_verbs_mode.cc) */
    bool verbs() const
    {
        return GetParam().rfind("verbs:", 0) == 0;
    }

    std::string scenario() const
    {
        return verbs() ? GetParam().substr(6) : GetParam();
    }

    run_result uct_lease(bool mrlease)
    {
        std::map<std::string, std::string> env = {{"UCX_IB_GID_INDEX", "0"}};
        if (mrlease) {
            env["LD_PRELOAD"] = builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so");
            env["UCX_IB_LEASE_ENABLE"]   = "y";
            env["MRL_EXPECT_GONE_ERROR"] = "1";
            if (verbs()) {
                env["UCX_IB_LEASE_MODE"] = "verbs";
            }
        }
        return run({builddir_path("test/rdma/uct_lease"), scenario()}, env, 180);
    }
};

TEST_P(test_rdma_uct, plain_ucx_shows_the_failure)
{
    run_result r = uct_lease(false);
    EXPECT_EQ(1, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("uct_lease: FAILED")) << r.output;
}

TEST_P(test_rdma_uct, mrlease_keeps_every_byte)
{
    run_result r = uct_lease(true);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("uct_lease: ok")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mrlease[")) << r.output;
    if (verbs()) {
        EXPECT_NE(std::string::npos, r.output.find("verbs mode; ")) << r.output;
    }
    if (scenario() == "gone") {
        /* only the operation on the gone memory fails, and loudly */
        EXPECT_NE(std::string::npos, r.output.find("put with the old key: Connection "
                                                   "reset by remote peer")) << r.output;
        EXPECT_NE(std::string::npos, r.output.find("another endpoint: Success, 0 wrong"))
            << r.output;
        EXPECT_NE(std::string::npos, r.output.find("registering the gone range: "
                                                   "Input/output error")) << r.output;
    } else if (scenario() == "device") {
        /* the key is never re-bound over librxe's queue (plain UCX: the put
         * lands in the freed pages, "Success") */
        EXPECT_NE(std::string::npos, r.output.find("put with the old key: Connection "
                                                   "reset by remote peer")) << r.output;
        EXPECT_EQ(1, sum_before(r.output, " left unbound over a device's memory"))
            << r.output;
    } else {
        EXPECT_NE(std::string::npos, r.output.find(" 0 wrong ")) << r.output;
    }
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(scenario, test_rdma_uct,
                         ::testing::Values("put", "get", "atomic", "source", "inflight",
                                           "gone", "device"));
/* verbs mode: registrations leased at libibverbs, the IB memory domain's
 * cache told through UCM (as on UCX 1.14 and 1.15) */
INSTANTIATE_TEST_SUITE_P(verbs_mode, test_rdma_uct,
                         ::testing::Values("verbs:put", "verbs:get", "verbs:atomic",
                                           "verbs:source", "verbs:inflight", "verbs:gone",
                                           "verbs:device"));

/* A child writes to the buffer after fork: this kernel (6.1) copies pinned
 * pages for the child, so plain UCX has no failure to show here; mrlease
 * must stay correct and keep the window where it is. */
TEST_F(test_rdma, fork_keeps_every_byte_plain_and_mrlease)
{
    for (bool on : {false, true}) {
        run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                                  {"6", "fork", "both"},
                                  on ? mrlease_runner() : "/usr/bin/mpirun"),
                           mpi_env(), 300);
        EXPECT_EQ(0, r.status) << r.output;
        EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
        EXPECT_EQ(on, r.output.find("mrlease[") != std::string::npos) << r.output;
        if (on) {
            EXPECT_EQ(0, sum_before(r.output, " windows re-bound")) << r.output;
        }
    }
}

/*
 * MPI one-sided: the origin holds the window's remote key from
 * MPI_Win_create on, and the target changes the memory under it. Plain UCX
 * reads and writes the old pages; mrlease re-binds the window's memory
 * window to the new pages with the same key.
 */
class test_rdma_window : public test_rdma,
                         public ::testing::WithParamInterface<std::string> {
};

TEST_P(test_rdma_window, plain_ucx_shows_the_failure)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_win_remap"),
                              {"8", GetParam()}),
                       mpi_env(), 300);
    EXPECT_NE(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_win_remap: FAILED")) << r.output;
}

TEST_P(test_rdma_window, mrlease_keeps_every_byte)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_win_remap"),
                              {"8", GetParam()}, mrlease_runner()),
                       mpi_env(), 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("(get 0, put 0, accumulate 0)"))
        << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_win_remap: ok")) << r.output;
    /* 4 changes of the target's window, each re-bound before the next epoch */
    EXPECT_GE(sum_before(r.output, " windows re-bound"), 4) << r.output;
    printf("%s", r.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(change, test_rdma_window,
                         ::testing::Values("remap", "mremap", "dontneed"));

/* Another process truncates each rank's buffer file to 0 and regrows it
 * between transfers (tmpfs; the ranks wait for it without calling MPI:
 * mpi_env() names it in MRL_FILE_CHANGER). */
static std::vector<std::string> with_x(std::vector<std::string> argv, const char *var)
{
    /* -x VAR in both app contexts */
    for (size_t i = 0; i < argv.size(); ++i) {
        if ((argv[i] == "-np") && (i + 1 < argv.size())) {
            argv.insert(argv.begin() + i + 2, {"-x", var});
        }
    }
    return argv;
}

TEST_F(test_rdma, file_regrown_plain_ucx_shows_the_failure)
{
    run_result r = run(with_x(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                                     {"6", "regrow", "both", "/dev/shm/mrl-regrow"}),
                              "MRL_FILE_CHANGER"),
                       mpi_env(), 300);
    EXPECT_NE(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: FAILED")) << r.output;
}

TEST_F(test_rdma, file_regrown_mrlease_keeps_every_byte)
{
    run_result r = run(with_x(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                                     {"6", "regrow", "both", "/dev/shm/mrl-regrow"},
                                     mrlease_runner()),
                              "MRL_FILE_CHANGER"),
                       mpi_env(), 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    long invalidated, restored;
    restored_counts(r.output, &invalidated, &restored);
    EXPECT_GE(invalidated, 6) << r.output; /* 3 changes on each rank */
    EXPECT_EQ(invalidated, restored) << r.output;
    /* the dispatcher released each change promptly: no stall */
    EXPECT_EQ(std::string::npos, r.output.find("STALL_TIMEOUT")) << r.output;
    printf("%s", r.output.c_str());
}


/* With the flag on, UCX's IB component presents itself as ib_lease: the
 * same devices and transports, which UCP selects as always. */
TEST_F(test_rdma, ucx_info_lists_the_ib_lease_component)
{
    std::map<std::string, std::string> env = {
        {"LD_PRELOAD", builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so")},
        {"UCX_IB_LEASE_ENABLE", "y"}};
    run_result on = run({"/usr/bin/ucx_info", "-d"}, env, 120);
    EXPECT_EQ(0, on.status) << on.output;
    size_t md = on.output.find("# Memory domain: rxe0");
    ASSERT_NE(std::string::npos, md) << on.output;
    std::string rxe0 = on.output.substr(md, on.output.find("# Memory domain:", md + 1) - md);
    EXPECT_NE(std::string::npos, rxe0.find("Component: ib_lease")) << rxe0;
    EXPECT_NE(std::string::npos, rxe0.find("Transport: rc_verbs")) << rxe0;
    EXPECT_NE(std::string::npos, rxe0.find("Transport: ud_verbs")) << rxe0;

    env["UCX_IB_LEASE_ENABLE"] = "n";
    run_result off = run({"/usr/bin/ucx_info", "-d"}, env, 120);
    EXPECT_EQ(0, off.status) << off.output;
    EXPECT_NE(std::string::npos, off.output.find("Component: ib\n")) << off.output;
    EXPECT_EQ(std::string::npos, off.output.find("ib_lease")) << off.output;
    EXPECT_EQ(std::string::npos, off.output.find("mrlease[")) << off.output;
}

/* A bad engine setting with the flag on: UCX runs exactly as without
 * mrlease (its own "ib" component, nothing leased), and says so loudly. */
TEST_F(test_rdma, bad_engine_config_leaves_ucx_untouched_and_says_so)
{
    std::map<std::string, std::string> env = {
        {"LD_PRELOAD", builddir_path("src/uct_ib_lease/.libs/libuct_ib_lease.so")},
        {"UCX_IB_LEASE_ENABLE", "y"}, {"UCX_MRLEASE_QUEUE_LEN", "banana"}};
    run_result r = run({"/usr/bin/ucx_info", "-d"}, env, 120);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("Invalid value for QUEUE_LEN: 'banana'"))
        << r.output;
    EXPECT_NE(std::string::npos, r.output.find("registrations are NOT kept coherent"))
        << r.output;
    EXPECT_NE(std::string::npos, r.output.find("# Memory domain: rxe0")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("Component: ib\n")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("Component: ib_lease")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease[")) << r.output;
}

/* Nothing changes: mrlease on must not disturb a normal job. */
TEST_F(test_rdma, mrlease_on_without_churn)
{
    run_result r = run(mpirun(1, builddir_path("test/mpi/mpi_verify"), {"3"},
                              mrlease_runner()),
                       mpi_env(), 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_verify: ok")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mrlease[")) << "plugin not loaded\n"
                                                            << r.output;
}

/* FS-DAX (the guest's pmem): this kernel refuses to pin DAX pages
 * (EOPNOTSUPP), UCX falls back to copying, so nothing registered can go
 * stale; mrlease leaves such files alone (no adoption, no lease) and the job
 * stays correct while another process truncates and regrows its files. */
TEST_F(test_rdma, fsdax_buffers_stay_correct_and_unleased)
{
    if (access("/mnt/pmem", W_OK) != 0) {
        GTEST_FAIL() << "no DAX mount at /mnt/pmem: run with guest-run --pmem";
    }
    run_result r = run(with_x(mpirun(1, builddir_path("test/mpi/mpi_remap"),
                                     {"6", "regrow", "both", "/mnt/pmem/mrl-dax"},
                                     mrlease_runner()),
                              "MRL_FILE_CHANGER"),
                       mpi_env(), 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("mpi_remap: ok")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("flease 0)")) << r.output;
    printf("%s", r.output.c_str());
}
