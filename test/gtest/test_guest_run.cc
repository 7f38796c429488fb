/*
 * The guest harness itself (contrib/guest-run), from the host: exit status,
 * time-outs, missing parts and bad options end with a clear message and a
 * non-zero status, never a silent pass. Part of make check-rdma.
 */
#include "mrlease_test.h"

#include <sys/stat.h>
#include <unistd.h>

using namespace mrl;

static std::string guest_run()
{
    return std::string(MRL_TOP_SRCDIR) + "/contrib/guest-run";
}

TEST(guest_run, exit_status_and_output)
{
    run_result r = run({guest_run(), "--", "/bin/sh", "-c",
                        "echo hello from $(uname -r); ls /sys/class/infiniband; "
                        "echo veth0 mtu $(cat /sys/class/net/veth0/mtu); "
                        "ibv_devinfo -d rxe0 | grep active_mtu; exit 7"},
                       {}, 300);
    EXPECT_EQ(7, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("hello from 6.1")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("rxe0")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("rxe1")) << r.output;
    /* the links default to MTU 9000, so rxe runs at its largest MTU */
    EXPECT_NE(std::string::npos, r.output.find("veth0 mtu 9000")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("active_mtu:\t\t4096 (5)")) << r.output;
}

/* --mtu reaches the links and rxe: 1500 gives active_mtu 1024 */
TEST(guest_run, mtu_option_sets_the_links_and_rxe)
{
    run_result r = run({guest_run(), "--mtu", "1500", "--", "/bin/sh", "-c",
                        "echo veth1 mtu $(cat /sys/class/net/veth1/mtu); "
                        "ibv_devinfo -d rxe1 | grep active_mtu"},
                       {}, 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("veth1 mtu 1500")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("active_mtu:\t\t1024 (3)")) << r.output;
}

TEST(guest_run, pmem_is_dax_mounted)
{
    run_result r = run({guest_run(), "--pmem", "256", "--rxe", "0", "--", "/bin/sh", "-c",
                        "grep /mnt/pmem /proc/mounts; ls -l /dev/pmem0"}, {}, 300);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("/dev/pmem0 /mnt/pmem ext4")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("dax=always")) << r.output;
}

/* A clone in /tmp or /root lies below a directory the guest mounts its own
 * tmpfs on: the project, the caller's directory and the run directory must
 * stay visible there, or nothing runs and no status comes back. */
TEST(guest_run, project_below_a_guest_tmpfs)
{
    char dir[] = "/tmp/mrlease-clone-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(dir));
    std::string top = std::string(dir) + "/top";
    ASSERT_EQ(0, symlink(MRL_TOP_SRCDIR, top.c_str()));
    run_result r = run({top + "/contrib/guest-run", "--rxe", "0", "--", "/bin/sh", "-c",
                        "test -f " + top + "/contrib/vm/modules && echo project visible; "
                        "exit 3"},
                       {{"MRL_VM_DIR", std::string(MRL_TOP_SRCDIR) + "/build/vm"}}, 300);
    run({"/bin/rm", "-rf", dir});
    EXPECT_EQ(3, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("project visible")) << r.output;
    /* it is visible: no complaint that it could not be kept */
    EXPECT_EQ(std::string::npos, r.output.find("cannot keep")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease-guest:")) << r.output;
}

/* --share DIR below /tmp, which the guest's own tmpfs covers: the guest
 * writes there and the host sees it. */
TEST(guest_run, share_below_a_guest_tmpfs)
{
    char dir[] = "/tmp/mrlease-share-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(dir));
    std::string file = std::string(dir) + "/from-the-guest";
    run_result r = run({guest_run(), "--rxe", "0", "--share", dir, "--", "/bin/sh", "-c",
                        "echo written in $(hostname) > " + file + " && echo share written"},
                       {}, 300);
    run_result seen = run({"/bin/cat", file});
    run({"/bin/rm", "-rf", dir});
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("share written")) << r.output;
    EXPECT_EQ(std::string::npos, r.output.find("mrlease-guest:")) << r.output;
    EXPECT_EQ(0, seen.status) << seen.output;
    EXPECT_EQ("written in mrlease-guest\n", seen.output);
}

TEST(guest_run, hang_is_timed_out_with_log)
{
    run_result r = run({guest_run(), "--timeout", "25", "--rxe", "0", "--", "sleep", "600"},
                       {}, 120);
    EXPECT_EQ(124, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("did not finish within 25s")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("console kept in")) << r.output;
}

TEST(guest_run, bad_options)
{
    run_result r = run({guest_run(), "--rxe", "3", "--", "true"});
    EXPECT_EQ(125, r.status);
    EXPECT_NE(std::string::npos, r.output.find("even number")) << r.output;
    r = run({guest_run(), "--frobnicate", "--", "true"});
    EXPECT_EQ(125, r.status);
    EXPECT_NE(std::string::npos, r.output.find("unknown option")) << r.output;
    r = run({guest_run()});
    EXPECT_EQ(125, r.status);
    EXPECT_NE(std::string::npos, r.output.find("usage")) << r.output;
    r = run({guest_run(), "--share", "/nonexistent/dir", "--", "true"});
    EXPECT_EQ(125, r.status);
    EXPECT_NE(std::string::npos, r.output.find("no such directory")) << r.output;
    for (auto mtu : {"banana", "", "9000x", "-1500"}) {
        r = run({guest_run(), "--mtu", mtu, "--", "true"});
        EXPECT_EQ(125, r.status) << mtu;
        EXPECT_NE(std::string::npos, r.output.find("--mtu needs a number of bytes"))
            << mtu << ": " << r.output;
    }
    for (auto mtu : {"0", "1279", "65536", "99999999999999999999", "18446744073709560616"}) {
        r = run({guest_run(), "--mtu", mtu, "--", "true"});
        EXPECT_EQ(125, r.status) << mtu;
        EXPECT_NE(std::string::npos, r.output.find("out of range: 1280")) << mtu << ": "
                                                                           << r.output;
    }
    r = run({guest_run(), "--mtu", "--", "true"});
    EXPECT_EQ(125, r.status);
    EXPECT_NE(std::string::npos, r.output.find("--mtu needs a number")) << r.output;
}

TEST(guest_run, no_qemu)
{
    /* a PATH with everything guest-run needs but QEMU */
    char dir[] = "/tmp/mrlease-noqemu-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(dir));
    for (auto tool : {"bash", "dirname", "grep", "sha1sum", "cut", "cat", "awk", "ls",
                      "env", "depmod", "cpio", "apt-cache", "file", "basename", "xargs",
                      "tail", "mkdir"}) {
        std::string src = "/usr/bin/" + std::string(tool);
        if (access(src.c_str(), X_OK) != 0) {
            src = "/bin/" + std::string(tool);
        }
        if (access(src.c_str(), X_OK) != 0) {
            src = "/usr/sbin/" + std::string(tool);
        }
        if (access(src.c_str(), X_OK) != 0) {
            src = "/sbin/" + std::string(tool);
        }
        symlink(src.c_str(), (std::string(dir) + "/" + tool).c_str());
    }
    run_result r = run({"/bin/bash", guest_run(), "--", "true"}, {{"PATH", dir}});
    run({"/bin/rm", "-rf", dir});
    EXPECT_EQ(125, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("qemu-system-x86_64 not found")) << r.output;
}

TEST(guest_run, kernel_package_missing)
{
    /* an empty cache and an apt-get that cannot download */
    char dir[] = "/tmp/mrlease-nokernel-XXXXXX";
    ASSERT_NE(nullptr, mkdtemp(dir));
    std::string fake = std::string(dir) + "/apt-get";
    FILE *f = fopen(fake.c_str(), "w");
    fprintf(f, "#!/bin/sh\necho 'E: no network' >&2\nexit 100\n");
    fclose(f);
    chmod(fake.c_str(), 0755);
    run_result r = run({guest_run(), "--", "true"},
                       {{"PATH", std::string(dir) + ":" + getenv("PATH")},
                        {"MRL_VM_DIR", std::string(dir) + "/vm"}});
    run({"/bin/rm", "-rf", dir});
    EXPECT_EQ(125, r.status) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("apt-get download")) << r.output;
}
