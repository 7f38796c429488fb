/*
 * The registration-cache hook with UCX's real ucs_rcache. Registration here
 * is a record of what was registered (the host has no RDMA device; real
 * verbs are tested in the guest): the point is the cache's life cycle.
 */
#include "mrlease_test.h"

#include <ucs_mrlease/mrlease_rcache.h>

#include <climits>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mrl;

namespace {

struct test_region {
    ucs_rcache_region_t super;
    int                 id;
    unsigned char       first_byte; /* what the "registration" saw */
};

} // namespace

class test_rcache_hook : public test_mrlease {
protected:
    void make_rcache(const std::string &monitors)
    {
        ASSERT_EQ(UCS_OK, create(monitors));
        ucs_rcache_params_t params = rcache_params();
        ASSERT_EQ(UCS_OK, ucs_mrlease_rcache_create(m_engine, &params, "test", &m_lrc));
    }

    /* Plain UCX, no mrlease: shows the failure mrlease prevents. */
    void make_plain_rcache()
    {
        ucs_rcache_params_t params = rcache_params();
        ASSERT_EQ(UCS_OK, ucs_rcache_create(&params, "plain", NULL, &m_plain));
    }

    ucs_rcache_params_t rcache_params()
    {
        ucs_rcache_params_t params = {};
        params.region_struct_size = sizeof(test_region);
        params.alignment          = m_page;
        params.max_alignment      = m_page;
        params.ucm_events         = 0; /* no UCX hooks: only the engine */
        params.ucm_event_priority = 1000;
        params.ops                = &m_ops;
        params.context            = this;
        params.flags              = 0;
        params.max_regions        = ULONG_MAX;
        params.max_size           = SIZE_MAX;
        params.max_unreleased     = SIZE_MAX;
        return params;
    }

    void TearDown() override
    {
        if (m_lrc != NULL) {
            ucs_mrlease_rcache_destroy(m_lrc);
            m_lrc = NULL;
        }
        if (m_plain != NULL) {
            ucs_rcache_destroy(m_plain);
            m_plain = NULL;
        }
        test_mrlease::TearDown();
    }

    test_region *get(void *p, size_t len)
    {
        ucs_rcache_region_t *r = NULL;
        if (m_plain != NULL) {
            EXPECT_EQ(UCS_OK, ucs_rcache_get(m_plain, p, len, PROT_READ | PROT_WRITE,
                                             NULL, &r));
        } else {
            EXPECT_EQ(UCS_OK, ucs_mrlease_rcache_get(m_lrc, p, len,
                                                     PROT_READ | PROT_WRITE, NULL, &r));
        }
        return (test_region*)r;
    }

    void put(test_region *r)
    {
        if (m_plain != NULL) {
            ucs_rcache_region_put(m_plain, &r->super);
        } else {
            ucs_mrlease_rcache_put(m_lrc, &r->super);
        }
    }

    static ucs_status_t mem_reg(void *ctx, ucs_rcache_t *rc, void *arg,
                                ucs_rcache_region_t *region, uint16_t flags)
    {
        test_rcache_hook *self = (test_rcache_hook*)ctx;
        test_region *r         = (test_region*)region;
        r->id         = ++self->m_regs;
        r->first_byte = *(unsigned char*)region->super.start;
        return UCS_OK;
    }

    static void mem_dereg(void *ctx, ucs_rcache_t *rc, ucs_rcache_region_t *region)
    {
        ++((test_rcache_hook*)ctx)->m_deregs;
    }

    static void dump(void *ctx, ucs_rcache_t *rc, ucs_rcache_region_t *region,
                     char *buf, size_t max)
    {
        snprintf(buf, max, "id %d", ((test_region*)region)->id);
    }

    /* Replace the pages under [p, p+len) with new ones holding `value`. */
    static void remap(char *p, size_t len, int value)
    {
        ASSERT_EQ(p, mmap(p, len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
        memset(p, value, len);
    }

    ucs_rcache_ops_t     m_ops = {mem_reg, mem_dereg, dump};
    ucs_mrlease_rcache_t *m_lrc = NULL;
    ucs_rcache_t         *m_plain = NULL;
    int                  m_regs = 0, m_deregs = 0;
};

/* Control: plain UCX's cache returns the stale registration. */
TEST_F(test_rcache_hook, stale_without_mrlease)
{
    make_plain_rcache();
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    test_region *r1 = get(p, len);
    put(r1);
    remap(p, len, 0x77);
    test_region *r2 = get(p, len);
    EXPECT_EQ(r1, r2) << "the premise changed: the cache noticed by itself";
    EXPECT_EQ(0x11, r2->first_byte);
    put(r2);
    munmap(p, len);
}

TEST_F(test_rcache_hook, refreshed_after_remap)
{
    make_rcache("uffd");
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    test_region *r1 = get(p, len);
    EXPECT_EQ(0x11, r1->first_byte);
    put(r1);

    remap(p, len, 0x77);
    test_region *r2 = get(p, len); /* the lookup itself makes it coherent */
    EXPECT_EQ(2, m_regs);
    EXPECT_EQ(1, m_deregs);
    EXPECT_EQ(0x77, r2->first_byte) << "registered the old pages";
    put(r2);
    auto c = counters();
    EXPECT_EQ(1u, c.leases_broken);
    EXPECT_EQ(1u, c.leases_restored);
    EXPECT_EQ(1u, m_lrc->invalidations);
    munmap(p, len);
}

/* An operation in flight keeps its registration until it completes; the
 * next one gets a fresh one meanwhile. */
TEST_F(test_rcache_hook, in_flight_completes_first)
{
    make_rcache("uffd");
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    test_region *inflight = get(p, len);

    ASSERT_EQ(0, madvise(p, len, MADV_DONTNEED));
    memset(p, 0x33, len);
    test_region *fresh = get(p, len);
    EXPECT_NE(inflight, fresh);
    EXPECT_EQ(0x33, fresh->first_byte);
    EXPECT_EQ(0, m_deregs) << "deregistered under an operation in flight";
    EXPECT_EQ(0u, counters().leases_restored);
    put(inflight);
    EXPECT_EQ(1, m_deregs);
    EXPECT_EQ(1u, counters().leases_restored);
    put(fresh);
    munmap(p, len);
}

/* A file change waits until the in-flight registration is gone. */
TEST_F(test_rcache_hook, file_change_waits_for_in_flight)
{
    make_rcache("flease");
    char path[] = "/dev/shm/mrlease-rcache-XXXXXX";
    int fd      = mkstemp(path);
    size_t len  = 16 * m_page;
    ASSERT_EQ(0, ftruncate(fd, len));
    char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* as applications do: the engine adopts the mapping */
    memset(p, 0x11, len);

    test_region *inflight = get(p, len);
    int out;
    pid_t pid = spawn({builddir_path("test/helpers/file_changer"), "truncate", path, "0"},
                      &out);
    double t0 = now_s();
    while ((counters().leases_broken == 0) && (now_s() - t0 < 10)) {
        ucs_mrlease_progress(m_engine);
        usleep(1000);
    }
    ASSERT_EQ(1u, counters().leases_broken);
    usleep(300000);
    int status;
    EXPECT_EQ(0, waitpid(pid, &status, WNOHANG)) << "truncate ran under a registration";
    put(inflight); /* the operation completes: deregistered, lease released */
    run_result r = wait_for(pid, out, 10);
    EXPECT_EQ(0, r.status) << r.output;
    EXPECT_EQ(1, m_deregs);
    munmap(p, len);
    unlink(path);
}

/* Injection alone vouches for nothing: nothing is cached, so nothing can
 * be served stale (before, this was the "stale without monitors" case). */
TEST_F(test_rcache_hook, not_cached_without_range_monitors)
{
    make_rcache("inject");
    size_t len = 16 * m_page;
    char *p    = (char*)map_anon(len);
    test_region *r1 = get(p, len);
    put(r1);
    remap(p, len, 0x77);
    test_region *r2 = get(p, len);
    EXPECT_EQ(0x77, r2->first_byte) << "served a stale registration";
    put(r2);
    EXPECT_EQ(2, m_regs);
    EXPECT_EQ(2, m_deregs);
    EXPECT_EQ(2u, m_lrc->uncached);
    EXPECT_EQ(2u, counters().uncached[0]);
    munmap(p, len);
}

/* A /dev/shm file that the application keeps open (or that other
 * processes map), changed by another process: no file lease can be had, so
 * its registrations are not cached and the next lookup sees the new pages.
 * Plain UCX serves the old registration. */
class test_rcache_file : public test_rcache_hook,
                         public ::testing::WithParamInterface<int> {
protected:
    enum { PLAIN = 0, FD_OPEN, MAPPED_BY_TWO_OTHERS };

    void SetUp() override
    {
        char tmpl[] = "/dev/shm/mrlease-rcache-XXXXXX";
        m_fd        = mkstemp(tmpl);
        ASSERT_GE(m_fd, 0);
        m_path = tmpl;
        m_len  = 16 * m_page;
        ASSERT_EQ(0, ftruncate(m_fd, m_len));
        m_buf = (char*)mmap(NULL, m_len, PROT_READ | PROT_WRITE, MAP_SHARED, m_fd, 0);
        ASSERT_NE(MAP_FAILED, (void*)m_buf);
        memset(m_buf, 0x11, m_len);
        if (GetParam() == MAPPED_BY_TWO_OTHERS) {
            close(m_fd);
            m_fd = -1;
            for (int i = 0; i < 2; ++i) {
                int out;
                pid_t pid = spawn({builddir_path("test/helpers/file_changer"), "map",
                                   m_path, std::to_string(m_len)}, &out);
                char buf[16] = {};
                ASSERT_GT(read(out, buf, sizeof(buf) - 1), 0);
                ASSERT_STREQ("mapped\n", buf);
                m_mappers.push_back({pid, out});
            }
        }
    }

    void TearDown() override
    {
        test_rcache_hook::TearDown();
        for (auto &m : m_mappers) {
            kill(m.first, SIGTERM);
            waitpid(m.first, NULL, 0);
            close(m.second);
        }
        munmap(m_buf, m_len);
        if (m_fd >= 0) {
            close(m_fd);
        }
        unlink(m_path.c_str());
    }

    /* Another process truncates the file to 0 and regrows it (0x5a). */
    void regrow()
    {
        run_result r = run({builddir_path("test/helpers/file_changer"), "regrow",
                            m_path, std::to_string(m_len)}, {}, 10);
        ASSERT_EQ(0, r.status) << r.output;
        ASSERT_EQ(0x5a, (unsigned char)m_buf[0]);
    }

    std::string                      m_path;
    int                              m_fd = -1;
    size_t                           m_len;
    char                             *m_buf = NULL;
    std::vector<std::pair<pid_t, int> > m_mappers;
};

TEST_P(test_rcache_file, changed_by_another_process)
{
    if (GetParam() == PLAIN) {
        make_plain_rcache();
    } else {
        make_rcache("uffd,ucm,flease,inject");
    }
    for (int round = 0; round < 3; ++round) {
        test_region *r1 = get(m_buf, m_len);
        EXPECT_EQ(round ? 0x5a : 0x11, r1->first_byte);
        put(r1);
        memset(m_buf, 0x11, m_len);
        regrow();
        test_region *r2 = get(m_buf, m_len);
        if (GetParam() == PLAIN) {
            EXPECT_EQ(r1, r2);
            EXPECT_EQ(0x11, r2->first_byte) << "the premise changed: plain UCX "
                                               "saw the file change";
            put(r2);
            return;
        }
        EXPECT_EQ(0x5a, r2->first_byte) << "round " << round
                                        << ": served a stale registration";
        put(r2);
    }
    auto c = counters();
    EXPECT_EQ(6u, m_lrc->uncached);
    EXPECT_EQ(6u, c.uncached[2]) << "uncached.file_open";
    EXPECT_EQ(6u, c.leases_unmonitored);
    EXPECT_EQ(6, m_deregs) << "a registration was kept in the cache";
}

INSTANTIATE_TEST_SUITE_P(file, test_rcache_file,
                         ::testing::Values(0, 1, 2),
                         [](const ::testing::TestParamInfo<int> &i) {
                             return std::string(i.param == 0 ? "plain_ucx" :
                                                i.param == 1 ? "fd_open" :
                                                "mapped_by_two_others");
                         });
