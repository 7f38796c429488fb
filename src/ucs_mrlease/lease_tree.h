/*
 * Interval tree of leased ranges: an AVL tree ordered by start, each node
 * keeping the largest end in its subtree. UCS's pgtable would give O(1)
 * lookups but forbids overlapping regions, and leases overlap whenever two
 * owners register the same buffer.
 */
#ifndef UCS_MRLEASE_TREE_H_
#define UCS_MRLEASE_TREE_H_

#include <stdint.h>
#include <stddef.h>

typedef struct ucs_mrlease_tree_node {
    struct ucs_mrlease_tree_node *left;
    struct ucs_mrlease_tree_node *right;
    uintptr_t                    start;
    uintptr_t                    end;      /* exclusive */
    uintptr_t                    max_end;  /* largest end in this subtree */
    int                          height;
} ucs_mrlease_tree_node_t;

typedef struct ucs_mrlease_tree {
    ucs_mrlease_tree_node_t *root;
    size_t                  count;
} ucs_mrlease_tree_t;

/* Return nonzero from the visitor to stop the walk. */
typedef int (*ucs_mrlease_tree_visit_t)(ucs_mrlease_tree_node_t *node, void *arg);

void ucs_mrlease_tree_init(ucs_mrlease_tree_t *tree);
/* node->start and node->end must be set; start < end. */
void ucs_mrlease_tree_insert(ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *node);
void ucs_mrlease_tree_remove(ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *node);
/* Visit, in order of start, every node overlapping [start, end). */
int  ucs_mrlease_tree_overlaps(ucs_mrlease_tree_t *tree, uintptr_t start,
                               uintptr_t end, ucs_mrlease_tree_visit_t visit,
                               void *arg);
/* Visit every node (in order). */
int  ucs_mrlease_tree_walk(ucs_mrlease_tree_t *tree,
                           ucs_mrlease_tree_visit_t visit, void *arg);

#endif
