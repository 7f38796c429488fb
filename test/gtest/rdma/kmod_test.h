/*
 * What the guest tests of mrlease.ko share: loading the module built by
 * `make kmod` (as root in the guest), unloading it, the kernel log's
 * complaints, and a raw /dev/mrlease context for the module's own tests.
 */
#ifndef MRL_KMOD_TEST_H_
#define MRL_KMOD_TEST_H_

#include "../mrlease_test.h"
#include "../../../kernel/mrlease_uapi.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace mrl {

inline std::string kmod_path()
{
    return builddir_path("kernel/mrlease.ko");
}

/* Load the module if it is not: the tests run as root in the guest. */
inline ::testing::AssertionResult kmod_load()
{
    if (access(MRLEASE_DEVICE, F_OK) == 0) {
        return ::testing::AssertionSuccess();
    }
    if (access(kmod_path().c_str(), R_OK) != 0) {
        return ::testing::AssertionFailure()
               << kmod_path() << " not built: `make kmod` needs "
               << "linux-headers-$(kernel/guest-kver) (contrib/install-deps)";
    }
    run_result r = run({"/sbin/insmod", kmod_path()}, {}, 60);
    if (r.status != 0) {
        return ::testing::AssertionFailure() << "insmod: " << r.output;
    }
    for (int i = 0; (i < 100) && (access(MRLEASE_DEVICE, F_OK) != 0); ++i) {
        usleep(10000); /* devtmpfs creates the node */
    }
    if (access(MRLEASE_DEVICE, F_OK) != 0) {
        return ::testing::AssertionFailure() << "no " MRLEASE_DEVICE " after insmod";
    }
    return ::testing::AssertionSuccess();
}

inline run_result kmod_unload()
{
    return run({"/sbin/rmmod", "mrlease"}, {}, 60);
}

/* Lines of the kernel log that say something went wrong. */
inline std::string dmesg_problems()
{
    run_result r = run({"/bin/dmesg"}, {}, 30);
    std::string bad;
    size_t pos = 0, end;
    while ((end = r.output.find('\n', pos)) != std::string::npos) {
        std::string line = r.output.substr(pos, end - pos);
        for (auto w : {"WARNING", "BUG", "Oops", "still has objects",
                       "lockdep", "possible circular", "sleeping function"}) {
            if (line.find(w) != std::string::npos) {
                bad += line + "\n";
                break;
            }
        }
        pos = end + 1;
    }
    return bad;
}

/* The raw interface, for the module's own tests. */
struct kmod_ctx {
    int                       fd = -1;
    volatile uint32_t         pending = 0;
    struct mrlease_setup      setup = {};
    struct mrlease_status_hdr *status = nullptr;

    int open_setup(uint32_t max_ranges, uint32_t max_events = 0)
    {
        fd = open(MRLEASE_DEVICE, O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
            return -errno;
        }
        setup.abi          = MRLEASE_ABI_VERSION;
        setup.max_ranges   = max_ranges;
        setup.max_events   = max_events;
        setup.pending_addr = (uintptr_t)&pending;
        setup.pending_bits = 1;
        if (ioctl(fd, MRLEASE_IOC_SETUP, &setup) < 0) {
            return -errno;
        }
        void *p = mmap(NULL, setup.status_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            return -errno;
        }
        status = (struct mrlease_status_hdr*)p;
        return 0;
    }

    int reg(const void *addr, size_t len, uint64_t cookie, uint32_t *slot)
    {
        struct mrlease_register r = {};
        r.start  = (uintptr_t)addr;
        r.len    = len;
        r.cookie = cookie;
        if (ioctl(fd, MRLEASE_IOC_REGISTER, &r) < 0) {
            return -errno;
        }
        *slot = r.slot;
        return 0;
    }

    const struct mrlease_slot_status *slot_status(uint32_t slot) const
    {
        return (const struct mrlease_slot_status*)
               ((const char*)status + MRLEASE_STATUS_SLOTS_OFFSET) + slot;
    }

    std::vector<struct mrlease_event> read_all()
    {
        std::vector<struct mrlease_event> out;
        struct mrlease_event evs[64];
        ssize_t n;
        while ((n = read(fd, evs, sizeof(evs))) > 0) {
            out.insert(out.end(), evs, evs + n / sizeof(evs[0]));
        }
        return out;
    }

    ~kmod_ctx()
    {
        if (status != nullptr) {
            munmap(status, setup.status_size);
        }
        if (fd >= 0) {
            close(fd);
        }
    }
};

/* An engine with kmod as its only monitor, the module loaded (and
 * unloaded when the suite ends: later tests run as users do). */
class kmod_engine_test : public test_mrlease {
protected:
    /* Leave the guest as found: later tests run without the module. */
    static void TearDownTestSuite()
    {
        kmod_unload();
    }

    void SetUp() override
    {
        ASSERT_EQ(0u, geteuid()) << "run in the guest (make check-rdma)";
        ASSERT_TRUE(kmod_load());
        ASSERT_EQ(UCS_OK, create("kmod"));
        ASSERT_TRUE(ucs_mrlease_engine_monitors(m_engine) &
                    UCS_BIT(UCS_MRLEASE_MONITOR_KMOD))
            << "the kmod monitor did not start (see the warning above)";
    }

    ucs_mrlease_t *kmod_lease(void *p, size_t len)
    {
        ucs_mrlease_t *l = lease(p, len);
        EXPECT_TRUE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_KMOD));
        EXPECT_TRUE(ucs_mrlease_cacheable(l))
            << "kmod vouches for it: uncovered 0x" << std::hex
            << ucs_mrlease_uncovered(l);
        return l;
    }

    /* The change has returned: the very next progress call delivers it. */
    void expect_one(ucs_mrlease_t *l, unsigned kinds, uintptr_t start, uintptr_t end)
    {
        ucs_mrlease_progress(m_engine);
        ASSERT_EQ(1u, events_of(l).size())
            << "not visible right after the change returned";
        progress_for(0.05);
        auto ev = events_of(l);
        ASSERT_EQ(1u, ev.size()) << "duplicated";
        EXPECT_EQ(kinds, ev[0].ev.kinds & kinds) << std::hex << ev[0].ev.kinds;
        EXPECT_EQ(start, ev[0].ev.start);
        EXPECT_EQ(end, ev[0].ev.end);
        EXPECT_EQ(UCS_BIT(UCS_MRLEASE_MONITOR_KMOD), ev[0].ev.monitors);
    }
};

} // namespace mrl

#endif
