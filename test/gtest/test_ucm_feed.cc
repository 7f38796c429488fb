/*
 * A broken lease reaches every UCX registration cache of the process, not
 * only the leased one: the rcache hook feeds the range to UCX's memory
 * events (ucm_vm_munmap), whose VM_UNMAPPED handler every ucs_rcache created
 * with UCM events has (UCP's own cache on top of the IB memory domain's, in
 * UCX 1.13 to 1.20). Here the other cache is a real ucs_rcache subscribed as
 * UCP subscribes its own; the change is a raw madvise(MADV_DONTNEED), which
 * no UCM hook sees (the uffd monitor does). Registration is a record of the
 * pages' first byte (no RDMA device on the host).
 */
#include "mrlease_test.h"

#include <ucs_mrlease/mrlease_rcache.h>
#include <ucm/api/ucm.h>

#include <climits>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace mrl;

namespace {

struct feed_region {
    ucs_rcache_region_t super;
    int                 id;
    unsigned char       first_byte; /* what the "registration" saw */
};

} // namespace

class test_ucm_feed : public test_mrlease {
protected:
    ucs_rcache_params_t params(int ucm_events)
    {
        ucs_rcache_params_t p = {};
        p.region_struct_size = sizeof(feed_region);
        p.alignment          = m_page;
        p.max_alignment      = m_page;
        p.ucm_events         = ucm_events;
        p.ucm_event_priority = 500; /* UCP's cache's priority in UCX 1.13 */
        p.ops                = &m_ops;
        p.context            = this;
        p.flags              = 0;
        p.max_regions        = ULONG_MAX;
        p.max_size           = SIZE_MAX;
        p.max_unreleased     = SIZE_MAX;
        return p;
    }

    /* A cache like UCP's: UCX's own, subscribed to UCM's VM_UNMAPPED. */
    void make_ucx_cache()
    {
        ucs_rcache_params_t p = params(UCM_EVENT_VM_UNMAPPED);
        ucs_status_t status   = ucs_rcache_create(&p, "ucp-like", NULL, &m_ucx);
        if (status == UCS_ERR_UNSUPPORTED) {
            GTEST_FAIL() << "UCM memory events are off (UCX_MEM_EVENTS=no?): "
                            "this test needs them";
        }
        ASSERT_EQ(UCS_OK, status);
    }

    void TearDown() override
    {
        if (m_lrc != NULL) {
            ucs_mrlease_rcache_destroy(m_lrc);
        }
        if (m_ucx != NULL) {
            ucs_rcache_destroy(m_ucx);
        }
        test_mrlease::TearDown();
    }

    /* get + put: the registration the cache keeps for [p, p+len) */
    feed_region ucx_lookup(void *p, size_t len)
    {
        ucs_rcache_region_t *r = NULL;

        EXPECT_EQ(UCS_OK, ucs_rcache_get(m_ucx, p, len, PROT_READ | PROT_WRITE,
                                         NULL, &r));
        feed_region copy = *(feed_region*)r;
        ucs_rcache_region_put(m_ucx, r);
        return copy;
    }

    feed_region leased_lookup(void *p, size_t len)
    {
        ucs_rcache_region_t *r = NULL;

        EXPECT_EQ(UCS_OK, ucs_mrlease_rcache_get(m_lrc, p, len,
                                                 PROT_READ | PROT_WRITE, NULL, &r));
        feed_region copy = *(feed_region*)r;
        ucs_mrlease_rcache_put(m_lrc, r);
        return copy;
    }

    /* New pages under [p, p+len), behind UCM's back, then written. */
    static void raw_replace(char *p, size_t len, int value)
    {
        ASSERT_EQ(0, syscall(SYS_madvise, p, len, MADV_DONTNEED));
        memset(p, value, len);
    }

    static ucs_status_t mem_reg(void *ctx, ucs_rcache_t *rc, void *arg,
                                ucs_rcache_region_t *region, uint16_t flags)
    {
        feed_region *r = (feed_region*)region;

        r->id         = ++((test_ucm_feed*)ctx)->m_regs;
        r->first_byte = *(unsigned char*)region->super.start;
        return UCS_OK;
    }

    static void mem_dereg(void *ctx, ucs_rcache_t *rc, ucs_rcache_region_t *region)
    {
    }

    static void dump(void *ctx, ucs_rcache_t *rc, ucs_rcache_region_t *region,
                     char *buf, size_t max)
    {
        snprintf(buf, max, "id %d", ((feed_region*)region)->id);
    }

    /* Progress until a lease broke (the uffd reader thread may be late). */
    bool progress_until_broken(double timeout_s = 5.0)
    {
        double deadline = now_s() + timeout_s;

        while (counters().leases_broken == 0) {
            if (now_s() > deadline) {
                return false;
            }
            ucs_mrlease_progress(m_engine);
            usleep(100);
        }
        return true;
    }

    ucs_rcache_ops_t     m_ops  = {mem_reg, mem_dereg, dump};
    ucs_rcache_t         *m_ucx = NULL;
    ucs_mrlease_rcache_t *m_lrc = NULL;
    int                  m_regs = 0;
};

/* Plain UCX: the change passes no hook, the cache keeps the old pages. */
TEST_F(test_ucm_feed, ucx_cache_stale_without_mrlease)
{
    make_ucx_cache();
    size_t len = 8 * m_page;
    char *p    = (char*)map_anon(len);
    memset(p, 0x11, len);

    feed_region before = ucx_lookup(p, len);
    raw_replace(p, len, 0x22);
    feed_region after = ucx_lookup(p, len);
    EXPECT_EQ(before.id, after.id) << "served from the cache";
    EXPECT_EQ(0x11, after.first_byte) << "...with the old pages' registration";
    EXPECT_EQ(0x22, (unsigned char)p[0]);
}

TEST_F(test_ucm_feed, a_broken_lease_reaches_the_other_ucx_caches)
{
    ASSERT_EQ(UCS_OK, create("uffd,ucm"));
    ucs_rcache_params_t p = params(0);
    ASSERT_EQ(UCS_OK, ucs_mrlease_rcache_create(m_engine, &p, "leased", &m_lrc));
    make_ucx_cache();
    size_t len = 8 * m_page;
    char *buf  = (char*)map_anon(len);
    memset(buf, 0x11, len);

    feed_region leased = leased_lookup(buf, len);
    feed_region ucx    = ucx_lookup(buf, len);
    ASSERT_EQ(0x11, ucx.first_byte);

    raw_replace(buf, len, 0x22);
    ASSERT_TRUE(progress_until_broken()) << "uffd saw the raw madvise";

    /* the new registration, made before anything else is handled */
    ucs_rcache_region_t *r = NULL;
    ASSERT_EQ(UCS_OK, ucs_rcache_get(m_lrc->rcache, buf, len,
                                     PROT_READ | PROT_WRITE, NULL, &r));
    ucs_mrlease_rcache_served(m_lrc, r);
    feed_region leased2 = *(feed_region*)r;
    ucs_mrlease_rcache_put(m_lrc, r);
    EXPECT_NE(leased.id, leased2.id);
    EXPECT_EQ(0x22, leased2.first_byte);

    feed_region ucx2 = ucx_lookup(buf, len);
    EXPECT_NE(ucx.id, ucx2.id) << "the other cache dropped its registration";
    EXPECT_EQ(0x22, ucx2.first_byte) << "...and registered the new pages";

    /* the fed range is not reported back by the ucm monitor: the new
     * registration's lease does not break, there is no loop */
    progress_for(0.3);
    EXPECT_EQ(1u, m_lrc->invalidations);
    EXPECT_EQ(1u, counters().leases_broken);
    EXPECT_EQ(leased2.id, leased_lookup(buf, len).id);
    EXPECT_EQ(ucx2.id, ucx_lookup(buf, len).id);
}
