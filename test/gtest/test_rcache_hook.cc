/*
 * The registration-cache hook with UCX's real ucs_rcache. Registration here
 * is a record of what was registered (the host has no RDMA device; real
 * verbs are tested in the guest): the point is the cache's life cycle.
 */
#include "mrlease_test.h"

#include <ucs_mrlease/mrlease_rcache.h>

#include <climits>
#include <fcntl.h>
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
        ASSERT_EQ(UCS_OK, ucs_mrlease_rcache_create(m_engine, &params, "test", &m_lrc));
    }

    void TearDown() override
    {
        if (m_lrc != NULL) {
            ucs_mrlease_rcache_destroy(m_lrc);
            m_lrc = NULL;
        }
        test_mrlease::TearDown();
    }

    test_region *get(void *p, size_t len)
    {
        ucs_rcache_region_t *r = NULL;
        EXPECT_EQ(UCS_OK, ucs_mrlease_rcache_get(m_lrc, p, len, PROT_READ | PROT_WRITE,
                                                 NULL, &r));
        return (test_region*)r;
    }

    void put(test_region *r)
    {
        ucs_mrlease_rcache_put(m_lrc, &r->super);
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
    int                  m_regs = 0, m_deregs = 0;
};

/* Control: without monitors, UCX's cache returns the stale registration. */
TEST_F(test_rcache_hook, stale_without_monitors)
{
    make_rcache("inject");
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
