/*
 * Coverage: a lease says when no running monitor can vouch for every way
 * its memory can change (and then no cache may keep its registration).
 * Real kernel, real files, real other processes that map them.
 */
#include "mrlease_test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mrl;

static const char *all_monitors = "uffd,ucm,flease,inject";

/* Another process that maps a file and holds it until killed. */
class mapper {
public:
    mapper(const std::string &path, size_t len)
    {
        m_pid = spawn({builddir_path("test/helpers/file_changer"), "map", path,
                       std::to_string(len)}, &m_out);
        char buf[16] = {};
        ssize_t n    = (m_pid > 0) ? read(m_out, buf, sizeof(buf) - 1) : -1;
        m_ok         = (n > 0) && !strncmp(buf, "mapped", 6);
    }
    ~mapper() { stop(); }
    void stop()
    {
        if (m_pid > 0) {
            kill(m_pid, SIGTERM);
            waitpid(m_pid, NULL, 0);
            close(m_out);
            m_pid = -1;
        }
    }
    bool ok() const { return m_ok; }
private:
    pid_t m_pid;
    int   m_out;
    bool  m_ok;
};

class test_coverage : public test_mrlease {
protected:
    void TearDown() override
    {
        test_mrlease::TearDown();
        for (auto &m : m_maps) {
            munmap(m.first, m.second);
        }
        for (int fd : m_fds) {
            close(fd);
        }
        for (auto &p : m_paths) {
            unlink(p.c_str());
        }
    }

    /* A file in dir, len bytes of 0x11, mapped MAP_SHARED; *fd_p keeps the
     * descriptor open, otherwise it is closed as applications often do. */
    char *map_file(const char *dir, size_t len, int *fd_p = NULL,
                   int flags = MAP_SHARED)
    {
        std::string tmpl = std::string(dir) + "/mrlease-cover-XXXXXX";
        int fd           = mkstemp(&tmpl[0]);
        EXPECT_GE(fd, 0) << tmpl;
        m_paths.push_back(tmpl);
        EXPECT_EQ(0, ftruncate(fd, len));
        char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
        EXPECT_NE(MAP_FAILED, (void*)p);
        memset(p, 0x11, len);
        m_maps.push_back({p, len});
        if (fd_p != NULL) {
            *fd_p = fd;
        } else {
            close(fd);
        }
        return p;
    }

    /* Progress until the lease's reasons are `want`, or time out. */
    unsigned wait_uncovered(ucs_mrlease_t *l, unsigned want, double timeout_s = 5)
    {
        double t0 = now_s();
        while ((ucs_mrlease_uncovered(l) != want) && (now_s() - t0 < timeout_s)) {
            ucs_mrlease_progress(m_engine);
            usleep(1000);
        }
        return ucs_mrlease_uncovered(l);
    }

    std::vector<std::pair<void*, size_t> > m_maps;
    std::vector<int>                       m_fds;
    std::vector<std::string>               m_paths;
};

TEST_F(test_coverage, anon_covered_by_uffd)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    void *p    = map_anon(len);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_EQ(0u, ucs_mrlease_uncovered(l));
    EXPECT_TRUE(ucs_mrlease_cacheable(l));
    EXPECT_EQ(0u, counters().leases_unmonitored);
    munmap(p, len);
}

/* UCM's hooks miss raw syscalls: alone, they vouch for nothing. */
TEST_F(test_coverage, ucm_alone_does_not_cover)
{
    ASSERT_EQ(UCS_OK, create("ucm,inject"));
    size_t len = 16 * m_page;
    void *p    = map_anon(len);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_EQ((unsigned)UCS_MRLEASE_UNCOVERED_RANGE, ucs_mrlease_uncovered(l));
    EXPECT_FALSE(ucs_mrlease_cacheable(l));
    auto c = counters();
    EXPECT_EQ(1u, c.leases_unmonitored);
    EXPECT_EQ(1u, c.uncovered[0]);
    munmap(p, len);
}

TEST_F(test_coverage, sysv_shm_not_covered)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    int id     = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
    ASSERT_GE(id, 0);
    void *p = shmat(id, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    ASSERT_NE((void*)-1, p);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_TRUE(ucs_mrlease_uncovered(l) & UCS_MRLEASE_UNCOVERED_SHMDT);
    EXPECT_EQ(1u, counters().uncovered[1]);
    release(l);
    shmdt(p);
}

TEST_F(test_coverage, shm_file_fd_closed_covered)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    char *p    = map_file("/dev/shm", len);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_EQ(0u, ucs_mrlease_uncovered(l));
}

/* The application keeps its descriptor: the kernel refuses the lease until
 * it closes it; then the lease is taken and the owner told (FILE_REARM). */
TEST_F(test_coverage, shm_file_fd_open_until_closed)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    int fd;
    char *p = map_file("/dev/shm", len, &fd);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_EQ((unsigned)UCS_MRLEASE_UNCOVERED_FILE_OPEN, ucs_mrlease_uncovered(l));
    EXPECT_FALSE(ucs_mrlease_cacheable(l));
    auto c = counters();
    EXPECT_EQ(1u, c.leases_unmonitored);
    EXPECT_EQ(1u, c.uncovered[2]);

    progress_for(0.1);
    EXPECT_EQ((unsigned)UCS_MRLEASE_UNCOVERED_FILE_OPEN, ucs_mrlease_uncovered(l))
        << "covered while the application's descriptor is open";
    close(fd);
    EXPECT_EQ(0u, wait_uncovered(l, 0));
    ASSERT_GE(progress_until(1), 1u);
    EXPECT_TRUE(events_of(l).back().ev.kinds & UCS_MRLEASE_EV_FILE_REARM);
}

/* Two and three processes map one file: none of them can lease it, and
 * the lease is covered again once the others are gone. */
TEST_F(test_coverage, shm_file_mapped_by_other_processes)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    char *p    = map_file("/dev/shm", len);
    mapper m1(m_paths.back(), len), m2(m_paths.back(), len);
    ASSERT_TRUE(m1.ok() && m2.ok());

    ucs_mrlease_t *l = lease(p, len);
    EXPECT_EQ((unsigned)UCS_MRLEASE_UNCOVERED_FILE_OPEN, ucs_mrlease_uncovered(l));
    m1.stop();
    progress_for(0.1);
    EXPECT_EQ((unsigned)UCS_MRLEASE_UNCOVERED_FILE_OPEN, ucs_mrlease_uncovered(l))
        << "covered while a third process maps the file";
    m2.stop();
    EXPECT_EQ(0u, wait_uncovered(l, 0));
}

/* Another process maps the file after the lease was taken: its open breaks
 * the lease (it waits for the restore), and the lease stays uncovered while
 * that process keeps the file mapped. */
TEST_F(test_coverage, shm_file_mapped_later_by_another_process)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    char *p    = map_file("/dev/shm", len);
    ucs_mrlease_t *l = lease(p, len);
    ASSERT_EQ(0u, ucs_mrlease_uncovered(l));

    int out;
    pid_t pid = spawn({builddir_path("test/helpers/file_changer"), "map",
                       m_paths.back(), std::to_string(len)}, &out);
    ASSERT_GE(progress_until(1), 1u);
    EXPECT_TRUE(m_events.back().ev.kinds & UCS_MRLEASE_EV_FILE_BREAK);
    char buf[16] = {};
    ASSERT_GT(read(out, buf, sizeof(buf) - 1), 0);
    EXPECT_STREQ("mapped\n", buf);
    EXPECT_EQ((unsigned)UCS_MRLEASE_UNCOVERED_FILE_OPEN, wait_uncovered(l,
              UCS_MRLEASE_UNCOVERED_FILE_OPEN));
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    close(out);
    EXPECT_EQ(0u, wait_uncovered(l, 0));
}

/* A private file mapping: another process's truncate changes its pages,
 * and no file lease can watch it. */
TEST_F(test_coverage, private_file_mapping_not_covered)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    char *p    = map_file("/dev/shm", len, NULL, MAP_PRIVATE);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_TRUE(ucs_mrlease_uncovered(l) & UCS_MRLEASE_UNCOVERED_FILE);
}

/* A file on a disk file system: userfaultfd cannot watch its mapping, so
 * this process's own raw munmap would go unseen. */
TEST_F(test_coverage, disk_file_mapping_not_covered)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    char *p    = map_file("/var/tmp", len);
    ucs_mrlease_t *l = lease(p, len);
    EXPECT_TRUE(ucs_mrlease_uncovered(l) & UCS_MRLEASE_UNCOVERED_RANGE);
    EXPECT_FALSE(ucs_mrlease_uncovered(l) & UCS_MRLEASE_UNCOVERED_FILE_OPEN);
}

/* At least `want` free 2 MiB huge pages while it lives: as root it raises
 * vm.nr_hugepages and puts it back after; otherwise it takes what is there. */
class huge_pages {
public:
    explicit huge_pages(long want) : m_saved(-1)
    {
        long total = read_long("/proc/sys/vm/nr_hugepages");
        if ((free_pages() < want) && (total >= 0) && is_root()) {
            m_saved = total;
            write_long("/proc/sys/vm/nr_hugepages", total + want);
        }
        m_ok = free_pages() >= want;
    }
    ~huge_pages()
    {
        if (m_saved >= 0) {
            write_long("/proc/sys/vm/nr_hugepages", m_saved);
        }
    }
    bool ok() const { return m_ok; }
private:
    static long free_pages()
    {
        return read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    }
    static long read_long(const char *path)
    {
        FILE *f = fopen(path, "r");
        long v  = -1;
        if (f != NULL) {
            v = (fscanf(f, "%ld", &v) == 1) ? v : -1;
            fclose(f);
        }
        return v;
    }
    static void write_long(const char *path, long v)
    {
        FILE *f = fopen(path, "w");
        if (f != NULL) {
            fprintf(f, "%ld\n", v);
            fclose(f);
        }
    }
    long m_saved;
    bool m_ok;
};

/*
 * MAP_HUGETLB anonymous memory shows a hugetlbfs inode, but nobody else can
 * truncate it: it is anonymous (it was classified a file, left to UCM alone
 * and counted as covered). userfaultfd arms it where the kernel has
 * write-protect for hugetlbfs, and then a raw munmap is seen.
 */
TEST_F(test_coverage, hugetlb_anon_covered_and_raw_munmap_seen)
{
    const size_t len = 2ul << 20;
    huge_pages hp(2);
    if (!hp.ok()) {
        GTEST_SKIP() << "SKIPPED LOUDLY: no free 2 MiB huge pages (as root this "
                        "test raises vm.nr_hugepages itself)";
    }
    ASSERT_EQ(UCS_OK, create(all_monitors));
    char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    ASSERT_NE(MAP_FAILED, (void*)p) << strerror(errno);
    memset(p, 0x22, len);
    ucs_mrlease_t *l = lease(p, len);
    ASSERT_NE(nullptr, l);
    EXPECT_EQ(0u, ucs_mrlease_uncovered(l)) << "hugetlb anonymous memory not covered";
    EXPECT_TRUE(ucs_mrlease_cacheable(l));
    EXPECT_EQ(0u, counters().leases_unmonitored);

    ASSERT_EQ(0, syscall(SYS_munmap, p, len));
    ASSERT_GE(progress_until(1), 1u) << "raw munmap of hugetlb memory unseen";
    auto ev = events_of(l);
    ASSERT_FALSE(ev.empty());
    EXPECT_TRUE(ev[0].ev.kinds & UCS_MRLEASE_EV_UNMAP);
}
