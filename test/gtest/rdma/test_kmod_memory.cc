/*
 * mrlease.ko on every kind of memory and every kind of changer the
 * user-space monitors miss some of: hugetlb (userfaultfd cannot arm it),
 * shared anonymous memory, an ext4 file (FS-DAX on the guest's pmem)
 * truncated by another process, a change by another thread of the owner,
 * mremap to a new address, and a statically linked program. Each change
 * must be seen by the very next progress call after it returns, exactly
 * once, with the exact range.
 */
#include "kmod_test.h"

#include <fstream>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>

using namespace mrl;

namespace {

std::string read_word(const std::string &path)
{
    std::ifstream f(path);
    std::string w;
    f >> w;
    return w;
}

bool write_word(const std::string &path, const std::string &w)
{
    std::ofstream f(path);
    f << w << "\n";
    f.flush();
    return f.good();
}

/* Hugepagesize of /proc/meminfo, in bytes (0 if none) */
size_t huge_page_size()
{
    std::ifstream f("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    while (f >> key) {
        if (key == "Hugepagesize:") {
            f >> kb;
            break;
        }
    }
    return kb * 1024;
}

/* Reserves huge pages for one test and gives back what it found. */
class hugepages_guard {
public:
    explicit hugepages_guard(int n) :
        m_saved(read_word("/proc/sys/vm/nr_hugepages"))
    {
        write_word("/proc/sys/vm/nr_hugepages", std::to_string(n));
    }
    ~hugepages_guard()
    {
        write_word("/proc/sys/vm/nr_hugepages", m_saved.empty() ? "0" : m_saved);
    }
    int reserved() const
    {
        return atoi(read_word("/proc/sys/vm/nr_hugepages").c_str());
    }

private:
    std::string m_saved;
};

} // namespace

class test_kmod_memory : public kmod_engine_test {
};

/* userfaultfd cannot arm hugetlb memory; the kernel monitor can. */
TEST_F(test_kmod_memory, hugetlb_dontneed_and_munmap)
{
    size_t huge = huge_page_size();
    ASSERT_NE(0u, huge) << "no Hugepagesize in /proc/meminfo";
    hugepages_guard guard(4);
    ASSERT_GE(guard.reserved(), 4) << "the guest could not reserve 4 huge pages "
                                      "(echo 4 > /proc/sys/vm/nr_hugepages)";

    char *p = (char*)mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    char *q = (char*)mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    ASSERT_NE(MAP_FAILED, p) << strerror(errno);
    ASSERT_NE(MAP_FAILED, q) << strerror(errno);
    memset(p, 1, 2 * huge);
    memset(q, 1, 2 * huge);
    auto lp = kmod_lease(p, 2 * huge);
    auto lq = kmod_lease(q, 2 * huge);

    /* the kernel raises CLEAR and UNMAP for it: one event all the same */
    ASSERT_EQ(0, syscall(SYS_madvise, p + huge, huge, MADV_DONTNEED));
    expect_one(lp, UCS_MRLEASE_EV_REMOVE, (uintptr_t)p + huge, (uintptr_t)p + 2 * huge);
    EXPECT_EQ(0u, events_of(lq).size());

    /* munmap raises UNMAP twice */
    ASSERT_EQ(0, syscall(SYS_munmap, q, 2 * huge));
    expect_one(lq, UCS_MRLEASE_EV_UNMAP, (uintptr_t)q, (uintptr_t)q + 2 * huge);
    munmap(p, 2 * huge);
}

TEST_F(test_kmod_memory, shared_anonymous_munmap)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len, MAP_SHARED);
    memset(p, 1, len);
    auto l = kmod_lease(p, len);

    ASSERT_EQ(0, syscall(SYS_munmap, p + 8 * m_page, 8 * m_page));
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p + 8 * m_page, (uintptr_t)p + len);
    munmap(p, len);
}

/* Another thread of the owner changes the memory; the owner's very next
 * progress call, in its own thread, sees it. */
TEST_F(test_kmod_memory, another_thread_changes)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    char *q    = (char*)map_anon(len);
    memset(p, 1, len);
    memset(q, 1, len);
    auto lp = kmod_lease(p, len);
    auto lq = kmod_lease(q, len);

    std::thread([=] { syscall(SYS_munmap, p, len); }).join();
    expect_one(lp, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);
    std::thread([=] {
        syscall(SYS_madvise, q + m_page, 2 * m_page, MADV_DONTNEED);
    }).join();
    expect_one(lq, UCS_MRLEASE_EV_REMOVE, (uintptr_t)q + m_page,
               (uintptr_t)q + 3 * m_page);
    munmap(q, len);
}

/* mremap to a new address: the notifier tells the old range (UNMAP, twice
 * in the kernel), never the new address; the lease is of the old range, so
 * it is broken once and nothing at the new address touches it. */
TEST_F(test_kmod_memory, mremap_to_a_new_address)
{
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len + m_page);
    char *guard = p + len;
    memset(p, 1, len);
    /* a vma of its own right after the range, so that growing must move */
    ASSERT_EQ(0, mprotect(guard, m_page, PROT_NONE));
    auto l = kmod_lease(p, len);

    char *n = (char*)syscall(SYS_mremap, p, len, 2 * len, MREMAP_MAYMOVE);
    ASSERT_NE(MAP_FAILED, n);
    ASSERT_NE(p, n) << "mremap grew in place";
    EXPECT_EQ(1, n[len - 1]) << "the pages moved with it";
    expect_one(l, UCS_MRLEASE_EV_UNMAP, (uintptr_t)p, (uintptr_t)p + len);

    ASSERT_EQ(0, syscall(SYS_munmap, n, 2 * len));
    progress_for(0.05);
    EXPECT_EQ(1u, events_of(l).size()) << "the new address is not the lease's";
    munmap(guard, m_page);
}

/* An ext4 file (FS-DAX on the guest's pmem, where the page cache is the
 * device itself) truncated and regrown by another process. */
TEST_F(test_kmod_memory, ext4_file_truncated_by_another_process)
{
    const char *dir = "/mnt/pmem";
    if (access(dir, W_OK) != 0) {
        GTEST_FAIL() << "no ext4 mount at " << dir << ": run with guest-run "
                        "--pmem 256 (make check-rdma does)";
    }
    std::string path = std::string(dir) + "/mrl-kmod-ext4";
    size_t len       = 16 * m_page;
    int fd           = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
    ASSERT_EQ(0, ftruncate(fd, len));
    char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(MAP_FAILED, p);
    memset(p, 1, len);
    auto l = kmod_lease(p, len); /* the fd stays open: no file lease possible */

    run_result r = run({builddir_path("test/helpers/file_changer"), "regrow", path,
                        std::to_string(len)}, {}, 60);
    ASSERT_EQ(0, r.status) << r.output;
    expect_one(l, UCS_MRLEASE_EV_REMOVE, (uintptr_t)p, (uintptr_t)p + len);
    munmap(p, len);
    close(fd);
    unlink(path.c_str());
}

/* A statically linked program with the engine inside: libc munmap, free
 * and the raw syscall, all seen by the kernel monitor. */
TEST_F(test_kmod_memory, static_binary)
{
    std::string bin = builddir_path("test/helpers/static_changer");
    if (access(bin.c_str(), X_OK) != 0) {
        GTEST_SKIP() << "SKIPPED LOUDLY: no " << bin << " (built by `make check` "
                        "in a release build; sanitizer builds cannot link statically)";
    }
    run_result r = run({bin}, {{"UCX_MRLEASE_MONITORS", "kmod"}}, 60);
    ASSERT_EQ(0, r.status) << r.output;
    for (auto c : {"munmap", "free", "syscall"}) {
        EXPECT_NE(std::string::npos,
                  r.output.find(std::string(c) + " seen_by uffd=0 ucm=0 kinds="))
            << c << ": " << r.output;
        size_t pos = r.output.find(std::string(c) + " seen_by");
        ASSERT_NE(std::string::npos, pos) << r.output;
        std::string line = r.output.substr(pos, r.output.find('\n', pos) - pos);
        EXPECT_NE(std::string::npos, line.find(" kmod=1")) << line;
    }
}

/*
 * The event table of docs/kmod.md, on memory a real device registered
 * (pinned by ibv_reg_mr on rxe0): what each change raises, as the module
 * passes it on. Changes that replace pages must break; mprotect must not.
 */
TEST_F(test_kmod_memory, event_table_with_registered_memory)
{
    hugepages_guard guard(4);
    run_result r = run({builddir_path("test/rdma/kmod_events"), "rxe0"}, {}, 120);
    ASSERT_EQ(0, r.status) << r.output;
    ASSERT_NE(std::string::npos, r.output.find("kmod_events: done")) << r.output;
    for (auto line : {"event munmap kinds=UNMAP events=1 ignored=0 range=exact",
                      "event munmap_partial kinds=UNMAP events=1 ignored=0 range=exact",
                      "event mremap_move kinds=UNMAP ",
                      "event mremap_shrink kinds=UNMAP events=1 ignored=0 range=exact",
                      "event madvise_dontneed kinds=CLEAR events=1 ignored=0 range=exact",
                      "event mprotect kinds=none events=0 ",
                      "event shmdt kinds=UNMAP events=1 ignored=0 range=exact",
                      "event truncate_by_another_process kinds=CLEAR ",
                      "event hugetlb_dontneed kinds=UNMAP,CLEAR ",
                      "event hugetlb_munmap kinds=UNMAP "}) {
        EXPECT_NE(std::string::npos, r.output.find(line)) << line << "\n" << r.output;
    }
    EXPECT_EQ(std::string::npos, r.output.find("event mprotect kinds=none events=0 "
                                               "ignored=0"))
        << "mprotect raised no invalidation at all\n" << r.output;
    /* a vma split or merge beside the lease, by the owner holding its
     * mmap_lock for write: the CLEAR of the 2 MiB around the cut replaces
     * no page, ignored (it used to break the lease: with libibverbs'
     * MADV_DONTFORK around every registration, each registration broke
     * its neighbours' and MPI re-registered every message) */
    for (auto line : {"event thp_split_beside kinds=none events=0 ignored=1 ",
                      "event dontfork_beside kinds=none events=0 ignored="}) {
        EXPECT_NE(std::string::npos, r.output.find(line)) << line << "\n" << r.output;
    }
    /* a whole huge page dropped (the lock held for read) is still told */
    EXPECT_NE(std::string::npos,
              r.output.find("event dontneed_huge_page kinds=CLEAR events=1 ignored=0 "
                            "range=exact pmd_clears=1")) << r.output;
    EXPECT_NE(std::string::npos, r.output.find("range=exact pmd_clears=0\n"))
        << r.output;
    printf("%s", r.output.c_str());
}
