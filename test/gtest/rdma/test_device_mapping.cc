/*
 * Leases over a device's memory (issue 10, the two-host crash): a verbs
 * queue that librxe mapped from /dev/infiniband/uverbsN must stay mapped
 * when a lease covers it. The flease monitor used to take such a shared
 * mapping of a "file" for one to lease, and adopt it: map the same offset
 * over it, MAP_FIXED, from a descriptor of its own. A fresh open of the
 * uverbs device has no verbs context, its mmap fails, and MAP_FIXED has
 * removed the queue by then: librxe's next ibv_post_recv faulted at the
 * receive queue + 0x80 (its producer index). In mpi_verify across two
 * guests the lease was a remote-key window whose 512 KiB buffer had been
 * freed; the new UD QP's receive queue (0x81000 bytes, as the buffer) took
 * its place, the window was re-bound there and its lease re-armed.
 * Real rxe, real librxe, the real engine; in the guest (make check-rdma).
 */
#include "rdma_test.h"

#include <infiniband/verbs.h>
#include <fstream>
#include <sstream>

using namespace mrl;

namespace {

struct vma_line {
    uintptr_t   start, end;
    std::string path;
};

/* The process's mappings of /dev/infiniband/uverbs*: librxe's queues. */
std::vector<vma_line> uverbs_mappings()
{
    std::ifstream maps("/proc/self/maps");
    std::vector<vma_line> out;
    std::string line;

    while (std::getline(maps, line)) {
        size_t pos = line.find("/dev/infiniband/uverbs");
        if (pos == std::string::npos) {
            continue;
        }
        vma_line v;
        v.start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
        v.end   = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
        v.path  = line.substr(pos);
        out.push_back(v);
    }
    return out;
}

std::string describe(const std::vector<vma_line> &v)
{
    std::ostringstream os;

    for (auto &m : v) {
        os << std::hex << "[0x" << m.start << ", 0x" << m.end << ") " << m.path << "\n";
    }
    return os.str();
}

} // namespace

class test_device_mapping : public test_mrlease {
protected:
    void SetUp() override
    {
        struct ibv_device **list;
        int n;

        ASSERT_TRUE(in_guest()) << "no rxe0: run through contrib/guest-run "
                                   "(make check-rdma does)";
        list = ibv_get_device_list(&n);
        ASSERT_NE(nullptr, list) << "ibv_get_device_list: " << strerror(errno);
        for (int i = 0; (i < n) && (m_ctx == nullptr); ++i) {
            if (!strcmp(ibv_get_device_name(list[i]), "rxe0")) {
                m_ctx = ibv_open_device(list[i]);
            }
        }
        ibv_free_device_list(list);
        ASSERT_NE(nullptr, m_ctx) << "cannot open rxe0";
        m_pd = ibv_alloc_pd(m_ctx);
        ASSERT_NE(nullptr, m_pd);
        m_cq = ibv_create_cq(m_ctx, 64, NULL, NULL, 0);
        ASSERT_NE(nullptr, m_cq);

        struct ibv_qp_init_attr init = {};
        init.send_cq          = m_cq;
        init.recv_cq          = m_cq;
        init.qp_type          = IBV_QPT_UD;
        init.cap.max_send_wr  = 16;
        init.cap.max_recv_wr  = 4096; /* as UCX's UD receive queue */
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        m_qp = ibv_create_qp(m_pd, &init);
        ASSERT_NE(nullptr, m_qp) << "ibv_create_qp: " << strerror(errno);

        struct ibv_qp_attr attr = {};
        attr.qp_state   = IBV_QPS_INIT;
        attr.pkey_index = 0;
        attr.port_num   = 1;
        attr.qkey       = 0x1ee7;
        ASSERT_EQ(0, ibv_modify_qp(m_qp, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                                   IBV_QP_PORT | IBV_QP_QKEY));
        m_buf = map_anon(m_len);
        m_mr  = ibv_reg_mr(m_pd, m_buf, m_len, IBV_ACCESS_LOCAL_WRITE);
        ASSERT_NE(nullptr, m_mr);
        m_before = uverbs_mappings();
        ASSERT_GE(m_before.size(), 2u) << "librxe mapped no queues?\n"
                                       << describe(m_before);
    }

    void TearDown() override
    {
        test_mrlease::TearDown();
        /* Only if the queues are still there: librxe touches them. */
        if (uverbs_mappings().size() == m_before.size()) {
            if (m_qp != nullptr) {
                ibv_destroy_qp(m_qp);
            }
            if (m_cq != nullptr) {
                ibv_destroy_cq(m_cq);
            }
            if (m_mr != nullptr) {
                ibv_dereg_mr(m_mr);
            }
            if (m_pd != nullptr) {
                ibv_dealloc_pd(m_pd);
            }
            if (m_ctx != nullptr) {
                ibv_close_device(m_ctx);
            }
        }
        if (m_buf != nullptr) {
            munmap(m_buf, m_len);
        }
    }

    /* The largest queue mapping: the receive queue of 4096 entries. */
    vma_line largest_queue() const
    {
        vma_line best = m_before[0];

        for (auto &m : m_before) {
            if (m.end - m.start > best.end - best.start) {
                best = m;
            }
        }
        return best;
    }

    /* Every queue librxe mapped is still there, and it can post to them. */
    void check_queues_intact()
    {
        std::vector<vma_line> after = uverbs_mappings();

        ASSERT_EQ(describe(m_before), describe(after))
            << "a verbs queue mapping of librxe was removed or replaced under a "
               "lease (librxe's next post would fault there)";
        EXPECT_EQ(0u, counters().file_leases_adopted)
            << "the flease monitor re-mapped a device's memory";

        struct ibv_sge sge = {(uintptr_t)m_buf, (uint32_t)m_len, m_mr->lkey};
        struct ibv_recv_wr wr = {}, *bad;
        wr.wr_id   = 1;
        wr.sg_list = &sge;
        wr.num_sge = 1;
        EXPECT_EQ(0, ibv_post_recv(m_qp, &wr, &bad));
    }

    struct ibv_context    *m_ctx = nullptr;
    struct ibv_pd         *m_pd  = nullptr;
    struct ibv_cq         *m_cq  = nullptr;
    struct ibv_qp         *m_qp  = nullptr;
    struct ibv_mr         *m_mr  = nullptr;
    void                  *m_buf = nullptr;
    const size_t          m_len  = 4096;
    std::vector<vma_line> m_before;
};

/* A lease acquired over a queue mapping: watched by what can watch it, and
 * left in place. */
TEST_F(test_device_mapping, lease_over_a_verbs_queue_leaves_it_mapped)
{
    ASSERT_EQ(UCS_OK, create("flease,uffd,ucm"));
    ASSERT_TRUE(ucs_mrlease_engine_monitors(m_engine) &
                UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE));
    vma_line q = largest_queue();

    ucs_mrlease_t *l = lease((void*)q.start, q.end - q.start);
    ASSERT_NE(nullptr, l);
    EXPECT_FALSE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE))
        << "a file lease taken on " << q.path;
    check_queues_intact();
}

/*
 * The two-host sequence ends with a restore: a lease on a buffer that was
 * freed, whose range now holds a verbs queue, is re-armed for what backs
 * it now. (The kernel chose that place for the queue; here the lease is
 * made over the queue and restored after an event.)
 */
TEST_F(test_device_mapping, lease_restored_over_a_verbs_queue_leaves_it_mapped)
{
    ASSERT_EQ(UCS_OK, create("flease,uffd,ucm,inject"));
    vma_line q = largest_queue();

    ucs_mrlease_t *l = lease((void*)q.start, q.end - q.start);
    ASSERT_NE(nullptr, l);
    ASSERT_EQ(UCS_OK, ucs_mrlease_inject(m_engine, (void*)q.start, q.end - q.start,
                                         UCS_MRLEASE_EV_UNMAP));
    ASSERT_GE(progress_until(1), 1u) << "no event for the injection";
    /* the callback answered UCS_OK: restored, and armed again */
    EXPECT_FALSE(ucs_mrlease_monitored_by(l) & UCS_BIT(UCS_MRLEASE_MONITOR_FLEASE))
        << "a file lease taken on " << q.path;
    EXPECT_EQ(1u, counters().leases_restored);
    check_queues_intact();
}
