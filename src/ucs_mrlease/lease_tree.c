#include "lease_tree.h"

#include <assert.h>

#define ucs_assert(_cond) assert(_cond)

static int tree_height(const ucs_mrlease_tree_node_t *n)
{
    return (n == NULL) ? 0 : n->height;
}

static uintptr_t tree_max_end(const ucs_mrlease_tree_node_t *n)
{
    return (n == NULL) ? 0 : n->max_end;
}

static void tree_update(ucs_mrlease_tree_node_t *n)
{
    int hl = tree_height(n->left), hr = tree_height(n->right);
    uintptr_t m = n->end;

    n->height = 1 + ((hl > hr) ? hl : hr);
    if (tree_max_end(n->left) > m) {
        m = tree_max_end(n->left);
    }
    if (tree_max_end(n->right) > m) {
        m = tree_max_end(n->right);
    }
    n->max_end = m;
}

static ucs_mrlease_tree_node_t *tree_rotate_right(ucs_mrlease_tree_node_t *n)
{
    ucs_mrlease_tree_node_t *l = n->left;

    n->left  = l->right;
    l->right = n;
    tree_update(n);
    tree_update(l);
    return l;
}

static ucs_mrlease_tree_node_t *tree_rotate_left(ucs_mrlease_tree_node_t *n)
{
    ucs_mrlease_tree_node_t *r = n->right;

    n->right = r->left;
    r->left  = n;
    tree_update(n);
    tree_update(r);
    return r;
}

static ucs_mrlease_tree_node_t *tree_balance(ucs_mrlease_tree_node_t *n)
{
    int bf;

    tree_update(n);
    bf = tree_height(n->left) - tree_height(n->right);
    if (bf > 1) {
        if (tree_height(n->left->left) < tree_height(n->left->right)) {
            n->left = tree_rotate_left(n->left);
        }
        return tree_rotate_right(n);
    } else if (bf < -1) {
        if (tree_height(n->right->right) < tree_height(n->right->left)) {
            n->right = tree_rotate_right(n->right);
        }
        return tree_rotate_left(n);
    }
    return n;
}

/* Total order: by start, then by node address, so equal starts are fine. */
static int tree_less(const ucs_mrlease_tree_node_t *a,
                     const ucs_mrlease_tree_node_t *b)
{
    return (a->start < b->start) ||
           ((a->start == b->start) && ((uintptr_t)a < (uintptr_t)b));
}

static ucs_mrlease_tree_node_t *
tree_insert(ucs_mrlease_tree_node_t *root, ucs_mrlease_tree_node_t *node)
{
    if (root == NULL) {
        return node;
    }
    if (tree_less(node, root)) {
        root->left = tree_insert(root->left, node);
    } else {
        root->right = tree_insert(root->right, node);
    }
    return tree_balance(root);
}

static ucs_mrlease_tree_node_t *
tree_remove_min(ucs_mrlease_tree_node_t *root, ucs_mrlease_tree_node_t **min_p)
{
    if (root->left == NULL) {
        *min_p = root;
        return root->right;
    }
    root->left = tree_remove_min(root->left, min_p);
    return tree_balance(root);
}

static ucs_mrlease_tree_node_t *
tree_remove(ucs_mrlease_tree_node_t *root, ucs_mrlease_tree_node_t *node)
{
    ucs_mrlease_tree_node_t *min;

    ucs_assert(root != NULL);
    if (root == node) {
        if (root->right == NULL) {
            return root->left;
        }
        root->right = tree_remove_min(root->right, &min);
        min->left   = root->left;
        min->right  = root->right;
        return tree_balance(min);
    }
    if (tree_less(node, root)) {
        root->left = tree_remove(root->left, node);
    } else {
        root->right = tree_remove(root->right, node);
    }
    return tree_balance(root);
}

static int tree_overlaps(ucs_mrlease_tree_node_t *n, uintptr_t start,
                         uintptr_t end, ucs_mrlease_tree_visit_t visit,
                         void *arg)
{
    int ret;

    /* Nothing in this subtree ends after start: prune it. */
    if ((n == NULL) || (n->max_end <= start)) {
        return 0;
    }
    ret = tree_overlaps(n->left, start, end, visit, arg);
    if (ret) {
        return ret;
    }
    /* Everything right of here starts at or after n->start. */
    if (n->start >= end) {
        return 0;
    }
    if (n->end > start) {
        ret = visit(n, arg);
        if (ret) {
            return ret;
        }
    }
    return tree_overlaps(n->right, start, end, visit, arg);
}

void ucs_mrlease_tree_init(ucs_mrlease_tree_t *tree)
{
    tree->root  = NULL;
    tree->count = 0;
}

void ucs_mrlease_tree_insert(ucs_mrlease_tree_t *tree,
                             ucs_mrlease_tree_node_t *node)
{
    ucs_assert(node->start < node->end);
    node->left   = NULL;
    node->right  = NULL;
    node->height = 1;
    node->max_end = node->end;
    tree->root   = tree_insert(tree->root, node);
    ++tree->count;
}

void ucs_mrlease_tree_remove(ucs_mrlease_tree_t *tree,
                             ucs_mrlease_tree_node_t *node)
{
    tree->root = tree_remove(tree->root, node);
    --tree->count;
}

int ucs_mrlease_tree_overlaps(ucs_mrlease_tree_t *tree, uintptr_t start,
                              uintptr_t end, ucs_mrlease_tree_visit_t visit,
                              void *arg)
{
    return tree_overlaps(tree->root, start, end, visit, arg);
}

int ucs_mrlease_tree_walk(ucs_mrlease_tree_t *tree,
                          ucs_mrlease_tree_visit_t visit, void *arg)
{
    return tree_overlaps(tree->root, 0, UINTPTR_MAX, visit, arg);
}
