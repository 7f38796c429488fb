/*
 * Interval tree of leased ranges: an AVL tree ordered by start, each node
 * keeping the largest end in its subtree. UCS's pgtable would give O(1)
 * lookups but forbids overlapping regions, and leases overlap whenever two
 * owners register the same buffer.
 *
 * A node is 24 bytes (it is in every lease): it does not copy its range but
 * reads it from two words {start, end} at a fixed offset from the node, set
 * once for the tree (the lease's own hot.start/hot.end); and the AVL height
 * (at most 63) is kept in the low 3 bits of each child pointer.
 */
#ifndef UCS_MRLEASE_TREE_H_
#define UCS_MRLEASE_TREE_H_

#include <stdint.h>
#include <stddef.h>

typedef struct ucs_mrlease_tree_node {
    uintptr_t left;     /* child pointer | low 3 bits of the height */
    uintptr_t right;    /* child pointer | high 3 bits of the height */
    uintptr_t max_end;  /* largest end in this subtree */
} ucs_mrlease_tree_node_t;

typedef struct ucs_mrlease_tree {
    ucs_mrlease_tree_node_t *root;
    size_t                  count;
    ptrdiff_t               range_offset; /* node + this: uintptr_t {start, end} */
} ucs_mrlease_tree_t;

/* Return nonzero from the visitor to stop the walk. */
typedef int (*ucs_mrlease_tree_visit_t)(ucs_mrlease_tree_node_t *node, void *arg);

/* Every node's range is the pair of words {start, end} (end exclusive) found
 * range_offset bytes from the node (negative: before it). */
void ucs_mrlease_tree_init(ucs_mrlease_tree_t *tree, ptrdiff_t range_offset);
/* The node's range must be set and non-empty, and stay as it is until the
 * node is removed. */
void ucs_mrlease_tree_insert(ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *node);
void ucs_mrlease_tree_remove(ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *node);
/* Visit, in order of start, every node overlapping [start, end). */
int  ucs_mrlease_tree_overlaps(ucs_mrlease_tree_t *tree, uintptr_t start,
                               uintptr_t end, ucs_mrlease_tree_visit_t visit,
                               void *arg);
/* Visit every node (in order). */
int  ucs_mrlease_tree_walk(ucs_mrlease_tree_t *tree,
                           ucs_mrlease_tree_visit_t visit, void *arg);

/* For checks (test_lease_tree): children and height of a node. */
static inline ucs_mrlease_tree_node_t *
ucs_mrlease_tree_left(const ucs_mrlease_tree_node_t *n)
{
    return (ucs_mrlease_tree_node_t*)(n->left & ~(uintptr_t)7);
}

static inline ucs_mrlease_tree_node_t *
ucs_mrlease_tree_right(const ucs_mrlease_tree_node_t *n)
{
    return (ucs_mrlease_tree_node_t*)(n->right & ~(uintptr_t)7);
}

static inline int ucs_mrlease_tree_height(const ucs_mrlease_tree_node_t *n)
{
    return (n == NULL) ? 0 : (int)((n->left & 7) | ((n->right & 7) << 3));
}

#endif
