#include "lease_tree.h"

#include <assert.h>

#define ucs_assert(_cond) assert(_cond)

#define TREE_TAG_MASK ((uintptr_t)7)

/* Nodes are at least 8-byte aligned: the low 3 bits of each child pointer
 * are free, and carry the height (left: bits 0-2, right: bits 3-5). */
_Static_assert(_Alignof(ucs_mrlease_tree_node_t) >= 8, "tagged child pointers");

#define L(_n) ucs_mrlease_tree_left(_n)
#define R(_n) ucs_mrlease_tree_right(_n)

static void tree_set_left(ucs_mrlease_tree_node_t *n, ucs_mrlease_tree_node_t *l)
{
    n->left = (uintptr_t)l | (n->left & TREE_TAG_MASK);
}

static void tree_set_right(ucs_mrlease_tree_node_t *n, ucs_mrlease_tree_node_t *r)
{
    n->right = (uintptr_t)r | (n->right & TREE_TAG_MASK);
}

static void tree_set_height(ucs_mrlease_tree_node_t *n, int h)
{
    ucs_assert((h > 0) && (h < 64)); /* 63 levels: more than 2^42 nodes */
    n->left  = (n->left & ~TREE_TAG_MASK) | ((uintptr_t)h & 7);
    n->right = (n->right & ~TREE_TAG_MASK) | (((uintptr_t)h >> 3) & 7);
}

static inline const uintptr_t *tree_range(const ucs_mrlease_tree_t *tree,
                                          const ucs_mrlease_tree_node_t *n)
{
    return (const uintptr_t*)((const char*)n + tree->range_offset);
}

#define tree_start(_t, _n) (tree_range(_t, _n)[0])
#define tree_end(_t, _n)   (tree_range(_t, _n)[1])

static uintptr_t tree_max_end(const ucs_mrlease_tree_node_t *n)
{
    return (n == NULL) ? 0 : n->max_end;
}

static void tree_update(const ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *n)
{
    int hl = ucs_mrlease_tree_height(L(n)), hr = ucs_mrlease_tree_height(R(n));
    uintptr_t m = tree_end(tree, n);

    tree_set_height(n, 1 + ((hl > hr) ? hl : hr));
    if (tree_max_end(L(n)) > m) {
        m = tree_max_end(L(n));
    }
    if (tree_max_end(R(n)) > m) {
        m = tree_max_end(R(n));
    }
    n->max_end = m;
}

static ucs_mrlease_tree_node_t *tree_rotate_right(const ucs_mrlease_tree_t *tree,
                                                  ucs_mrlease_tree_node_t *n)
{
    ucs_mrlease_tree_node_t *l = L(n);

    tree_set_left(n, R(l));
    tree_set_right(l, n);
    tree_update(tree, n);
    tree_update(tree, l);
    return l;
}

static ucs_mrlease_tree_node_t *tree_rotate_left(const ucs_mrlease_tree_t *tree,
                                                 ucs_mrlease_tree_node_t *n)
{
    ucs_mrlease_tree_node_t *r = R(n);

    tree_set_right(n, L(r));
    tree_set_left(r, n);
    tree_update(tree, n);
    tree_update(tree, r);
    return r;
}

static ucs_mrlease_tree_node_t *tree_balance(const ucs_mrlease_tree_t *tree,
                                             ucs_mrlease_tree_node_t *n)
{
    int bf;

    tree_update(tree, n);
    bf = ucs_mrlease_tree_height(L(n)) - ucs_mrlease_tree_height(R(n));
    if (bf > 1) {
        if (ucs_mrlease_tree_height(L(L(n))) < ucs_mrlease_tree_height(R(L(n)))) {
            tree_set_left(n, tree_rotate_left(tree, L(n)));
        }
        return tree_rotate_right(tree, n);
    } else if (bf < -1) {
        if (ucs_mrlease_tree_height(R(R(n))) < ucs_mrlease_tree_height(L(R(n)))) {
            tree_set_right(n, tree_rotate_right(tree, R(n)));
        }
        return tree_rotate_left(tree, n);
    }
    return n;
}

/* Total order: by start, then by node address, so equal starts are fine. */
static int tree_less(const ucs_mrlease_tree_t *tree, const ucs_mrlease_tree_node_t *a,
                     const ucs_mrlease_tree_node_t *b)
{
    return (tree_start(tree, a) < tree_start(tree, b)) ||
           ((tree_start(tree, a) == tree_start(tree, b)) &&
            ((uintptr_t)a < (uintptr_t)b));
}

static ucs_mrlease_tree_node_t *
tree_insert(const ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *root,
            ucs_mrlease_tree_node_t *node)
{
    if (root == NULL) {
        return node;
    }
    if (tree_less(tree, node, root)) {
        tree_set_left(root, tree_insert(tree, L(root), node));
    } else {
        tree_set_right(root, tree_insert(tree, R(root), node));
    }
    return tree_balance(tree, root);
}

static ucs_mrlease_tree_node_t *
tree_remove_min(const ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *root,
                ucs_mrlease_tree_node_t **min_p)
{
    if (L(root) == NULL) {
        *min_p = root;
        return R(root);
    }
    tree_set_left(root, tree_remove_min(tree, L(root), min_p));
    return tree_balance(tree, root);
}

static ucs_mrlease_tree_node_t *
tree_remove(const ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *root,
            ucs_mrlease_tree_node_t *node)
{
    ucs_mrlease_tree_node_t *min;

    ucs_assert(root != NULL);
    if (root == node) {
        if (R(root) == NULL) {
            return L(root);
        }
        tree_set_right(root, tree_remove_min(tree, R(root), &min));
        tree_set_left(min, L(root));
        tree_set_right(min, R(root));
        return tree_balance(tree, min);
    }
    if (tree_less(tree, node, root)) {
        tree_set_left(root, tree_remove(tree, L(root), node));
    } else {
        tree_set_right(root, tree_remove(tree, R(root), node));
    }
    return tree_balance(tree, root);
}

static int tree_overlaps(const ucs_mrlease_tree_t *tree, ucs_mrlease_tree_node_t *n,
                         uintptr_t start, uintptr_t end,
                         ucs_mrlease_tree_visit_t visit, void *arg)
{
    int ret;

    /* Nothing in this subtree ends after start: prune it. */
    if ((n == NULL) || (n->max_end <= start)) {
        return 0;
    }
    ret = tree_overlaps(tree, L(n), start, end, visit, arg);
    if (ret) {
        return ret;
    }
    /* Everything right of here starts at or after n's start. */
    if (tree_start(tree, n) >= end) {
        return 0;
    }
    if (tree_end(tree, n) > start) {
        ret = visit(n, arg);
        if (ret) {
            return ret;
        }
    }
    return tree_overlaps(tree, R(n), start, end, visit, arg);
}

void ucs_mrlease_tree_init(ucs_mrlease_tree_t *tree, ptrdiff_t range_offset)
{
    tree->root         = NULL;
    tree->count        = 0;
    tree->range_offset = range_offset;
}

void ucs_mrlease_tree_insert(ucs_mrlease_tree_t *tree,
                             ucs_mrlease_tree_node_t *node)
{
    ucs_assert(((uintptr_t)node & TREE_TAG_MASK) == 0);
    ucs_assert(tree_start(tree, node) < tree_end(tree, node));
    node->left    = 0;
    node->right   = 0;
    tree_set_height(node, 1);
    node->max_end = tree_end(tree, node);
    tree->root    = tree_insert(tree, tree->root, node);
    ++tree->count;
}

void ucs_mrlease_tree_remove(ucs_mrlease_tree_t *tree,
                             ucs_mrlease_tree_node_t *node)
{
    tree->root = tree_remove(tree, tree->root, node);
    --tree->count;
}

int ucs_mrlease_tree_overlaps(ucs_mrlease_tree_t *tree, uintptr_t start,
                              uintptr_t end, ucs_mrlease_tree_visit_t visit,
                              void *arg)
{
    return tree_overlaps(tree, tree->root, start, end, visit, arg);
}

int ucs_mrlease_tree_walk(ucs_mrlease_tree_t *tree,
                          ucs_mrlease_tree_visit_t visit, void *arg)
{
    return tree_overlaps(tree, tree->root, 0, UINTPTR_MAX, visit, arg);
}
