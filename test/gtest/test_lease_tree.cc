/* The interval tree against a brute-force model. */
#include <gtest/gtest.h>

extern "C" {
#include "lease_tree.h"
}

#include <algorithm>
#include <cstddef>
#include <random>
#include <set>
#include <vector>

namespace {

/* As in a lease: the range in two words the node reads, not in the node. */
struct item {
    uintptr_t               start;
    uintptr_t               end;
    ucs_mrlease_tree_node_t node;
};

const ptrdiff_t range_offset = (ptrdiff_t)offsetof(item, start) -
                               (ptrdiff_t)offsetof(item, node);

item *item_of(ucs_mrlease_tree_node_t *n)
{
    return reinterpret_cast<item*>(reinterpret_cast<char*>(n) + range_offset);
}

struct hits {
    std::vector<ucs_mrlease_tree_node_t*> nodes;
};

int collect(ucs_mrlease_tree_node_t *node, void *arg)
{
    static_cast<hits*>(arg)->nodes.push_back(node);
    return 0;
}

std::vector<ucs_mrlease_tree_node_t*> brute(const std::vector<ucs_mrlease_tree_node_t*> &all,
                                            uintptr_t s, uintptr_t e)
{
    std::vector<ucs_mrlease_tree_node_t*> out;
    for (auto n : all) {
        if ((item_of(n)->start < e) && (item_of(n)->end > s)) {
            out.push_back(n);
        }
    }
    return out;
}

int height_ok(ucs_mrlease_tree_node_t *n, uintptr_t *max_end)
{
    uintptr_t ml = 0, mr = 0;
    if (n == NULL) {
        *max_end = 0;
        return 0;
    }
    int hl = height_ok(ucs_mrlease_tree_left(n), &ml);
    int hr = height_ok(ucs_mrlease_tree_right(n), &mr);
    EXPECT_LE(std::abs(hl - hr), 1);
    EXPECT_EQ(1 + std::max(hl, hr), ucs_mrlease_tree_height(n)); /* the tagged height */
    *max_end = std::max(item_of(n)->end, std::max(ml, mr));
    EXPECT_EQ(*max_end, n->max_end);
    return 1 + std::max(hl, hr);
}

} // namespace

TEST(lease_tree, random_against_brute_force)
{
    std::mt19937_64 rng(42);
    std::vector<item> storage(20000);
    std::vector<ucs_mrlease_tree_node_t*> live;
    ucs_mrlease_tree_t tree;
    uintptr_t max_end;

    ucs_mrlease_tree_init(&tree, range_offset);
    for (size_t i = 0; i < storage.size(); ++i) {
        storage[i].start = (rng() % 100000) * 4096;
        storage[i].end   = storage[i].start + (1 + rng() % 64) * 4096;
        ucs_mrlease_tree_insert(&tree, &storage[i].node);
        live.push_back(&storage[i].node);
        if ((i % 3 == 2) && !live.empty()) { /* remove a random one */
            size_t k = rng() % live.size();
            ucs_mrlease_tree_remove(&tree, live[k]);
            live.erase(live.begin() + k);
        }
    }
    ASSERT_EQ(live.size(), tree.count);
    int h = height_ok(tree.root, &max_end);
    EXPECT_LE(h, 2 * 20); /* AVL: ~1.44 log2(n) */

    for (int q = 0; q < 2000; ++q) {
        uintptr_t s = (rng() % 100100) * 4096, e = s + (1 + rng() % 200) * 4096;
        hits got;
        ucs_mrlease_tree_overlaps(&tree, s, e, collect, &got);
        auto want = brute(live, s, e);
        ASSERT_EQ(want.size(), got.nodes.size()) << "query " << q;
        /* in order of start, each exactly once */
        EXPECT_TRUE(std::is_sorted(got.nodes.begin(), got.nodes.end(),
                    [](ucs_mrlease_tree_node_t *a, ucs_mrlease_tree_node_t *b) {
                        return item_of(a)->start < item_of(b)->start; }));
        std::set<ucs_mrlease_tree_node_t*> a(got.nodes.begin(), got.nodes.end()),
                                           b(want.begin(), want.end());
        EXPECT_EQ(b, a);
    }
}

TEST(lease_tree, identical_ranges_and_stop)
{
    std::vector<item> n(10);
    ucs_mrlease_tree_t tree;
    hits got;

    ucs_mrlease_tree_init(&tree, range_offset);
    for (auto &x : n) {
        x.start = 4096;
        x.end   = 8192;
        ucs_mrlease_tree_insert(&tree, &x.node);
    }
    ucs_mrlease_tree_overlaps(&tree, 8191, 8192, collect, &got);
    EXPECT_EQ(10u, got.nodes.size());
    got.nodes.clear();
    ucs_mrlease_tree_overlaps(&tree, 8192, 9000, collect, &got);
    EXPECT_EQ(0u, got.nodes.size()); /* end is exclusive */
    int visited = 0;
    EXPECT_EQ(7, ucs_mrlease_tree_walk(&tree, [](ucs_mrlease_tree_node_t*, void *arg) {
        return (++*static_cast<int*>(arg) == 3) ? 7 : 0; }, &visited));
    EXPECT_EQ(3, visited);
    for (auto &x : n) {
        ucs_mrlease_tree_remove(&tree, &x.node);
    }
    EXPECT_EQ(0u, tree.count);
    EXPECT_EQ(nullptr, tree.root);
}
