#define _GNU_SOURCE /* statx */
/*
 * What backs a virtual range: read from /proc/self/maps at acquire time
 * (registration is a slow path already).
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <linux/magic.h>

int ucs_mrlease_maps_walk(ucs_mrlease_vma_visit_t visit, void *arg)
{
    char line[4096 + 128], perms[8];
    unsigned long vstart, vend, voff, ino;
    ucs_mrlease_vma_t vma;
    unsigned dmaj, dmin;
    int ret = 0;
    FILE *f;

    f = fopen("/proc/self/maps", "re");
    if (f == NULL) {
        ucs_error("mrlease: cannot read /proc/self/maps: %m");
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        vma.path[0] = '\0';
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu %4095[^\n]", &vstart, &vend,
                   perms, &voff, &dmaj, &dmin, &ino, vma.path) < 7) {
            continue;
        }
        vma.start    = vstart;
        vma.end      = vend;
        vma.offset   = voff;
        vma.dev      = makedev(dmaj, dmin);
        vma.ino      = ino;
        vma.shared   = (perms[3] == 's');
        vma.readable = (perms[0] == 'r');
        vma.writable = (perms[1] == 'w');
        vma.exec     = (perms[2] == 'x');
        ret = visit(&vma, arg);
        if (ret) {
            break;
        }
    }
    fclose(f);
    return ret;
}

/* A device node's memory (a verbs queue from /dev/infiniband/uverbsN), told
 * by the node itself: /dev is a devtmpfs, which statfs calls tmpfs. */
static int backing_is_device(uint64_t dev, uint64_t ino, const char *path)
{
    struct stat st;

    return (path[0] == '/') && (stat(path, &st) == 0) && (st.st_dev == dev) &&
           (st.st_ino == ino) && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode));
}

static ucs_mrlease_backing_type_t backing_classify(uint64_t dev, uint64_t ino,
                                                   const char *path)
{
    struct statfs sfs;

    /* MAP_HUGETLB|MAP_ANONYMOUS shows a hugetlbfs inode, but nobody else
     * can open it: anonymous memory that userfaultfd may watch. */
    if ((ino == 0) || !strncmp(path, "/anon_hugepage", 14)) {
        return UCS_MRLEASE_BACKING_ANON;
    }
    /* /dev/zero is a device node, but its mappings are memory */
    if (!strncmp(path, "/SYSV", 5) || !strncmp(path, "/dev/zero", 9) ||
        !strncmp(path, "/memfd:", 7)) {
        return UCS_MRLEASE_BACKING_SHMEM;
    }
    if (backing_is_device(dev, ino, path)) {
        return UCS_MRLEASE_BACKING_DEVICE;
    }
    if ((statfs(path, &sfs) == 0) && (sfs.f_type == TMPFS_MAGIC)) {
        return UCS_MRLEASE_BACKING_SHMEM;
    }
    return UCS_MRLEASE_BACKING_FILE;
}

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

/* A file served by FS-DAX: its pages cannot be pinned long-term. */
static int backing_is_dax(const char *path)
{
    struct statx stx;

    return (path[0] == '/') &&
           (statx(AT_FDCWD, path, AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &stx) == 0) &&
           (stx.stx_attributes_mask & STATX_ATTR_DAX) &&
           (stx.stx_attributes & STATX_ATTR_DAX);
}

typedef struct {
    uintptr_t             start, end, covered;
    ucs_mrlease_backing_t *backing;
    char                  *path;
    size_t                max;
    uintptr_t             *vma_start, *vma_end;
    int                   first;
} backing_walk_t;

static int backing_visit(const ucs_mrlease_vma_t *vma, void *arg)
{
    backing_walk_t *w = arg;
    ucs_mrlease_backing_type_t type;

    if (vma->end <= w->start) {
        return 0;
    }
    if ((vma->start >= w->end) || (vma->start > w->covered)) {
        return 1; /* past the range, or a hole */
    }
    type = backing_classify(vma->dev, vma->ino, vma->path);
    if (w->first) {
        w->backing->type     = type;
        w->backing->dev      = vma->dev;
        w->backing->ino      = vma->ino;
        w->backing->offset   = vma->offset + (w->start - vma->start);
        w->backing->shared   = vma->shared;
        w->backing->writable = vma->writable;
        w->backing->dax      = backing_is_dax(vma->path);
        w->backing->sysv     = !strncmp(vma->path, "/SYSV", 5);
        w->backing->named    = (type != UCS_MRLEASE_BACKING_ANON) &&
                               (type != UCS_MRLEASE_BACKING_DEVICE) &&
                               !w->backing->sysv &&
                               strncmp(vma->path, "/dev/zero", 9);
        if ((w->path != NULL) && (w->max > 0)) {
            snprintf(w->path, w->max, "%s", vma->path);
        }
        if (w->vma_start != NULL) {
            *w->vma_start = vma->start;
            *w->vma_end   = vma->end;
        }
        w->first = 0;
    } else if ((type != w->backing->type) || (vma->dev != w->backing->dev) ||
               (vma->ino != w->backing->ino)) {
        w->backing->type = UCS_MRLEASE_BACKING_MIXED;
    }
    w->covered = vma->end;
    return w->covered >= w->end;
}

static int device_visit(const ucs_mrlease_vma_t *vma, void *arg)
{
    const uintptr_t *range = arg;

    if (vma->end <= range[0]) {
        return 0;
    }
    if (vma->start >= range[1]) {
        return 1; /* maps is sorted: past the range */
    }
    return (backing_classify(vma->dev, vma->ino, vma->path) ==
            UCS_MRLEASE_BACKING_DEVICE) ? 2 : 0;
}

int ucs_mrlease_range_maps_device(uintptr_t start, uintptr_t end)
{
    uintptr_t range[2] = {start, end};
    int ret            = ucs_mrlease_maps_walk(device_visit, range);

    return (ret < 0) ? -1 : (ret == 2);
}

ucs_status_t ucs_mrlease_backing_query(uintptr_t start, uintptr_t end,
                                       ucs_mrlease_backing_t *backing,
                                       char *path, size_t max,
                                       uintptr_t *vma_start, uintptr_t *vma_end)
{
    backing_walk_t w = {start, end, start, backing, path, max, vma_start,
                        vma_end, 1};

    memset(backing, 0, sizeof(*backing));
    backing->type = UCS_MRLEASE_BACKING_NONE;
    if ((path != NULL) && (max > 0)) {
        path[0] = '\0';
    }
    if (ucs_mrlease_maps_walk(backing_visit, &w) < 0) {
        return UCS_ERR_IO_ERROR;
    }
    if ((w.covered < end) && (backing->type != UCS_MRLEASE_BACKING_NONE)) {
        /* Part of the range is not mapped: only the range-independent
         * monitors can cover it. */
        backing->type = UCS_MRLEASE_BACKING_MIXED;
    }
    return UCS_OK;
}

ucs_status_t ucs_mrlease_ext_get(ucs_mrlease_t *lease)
{
    if (lease->ext != NULL) {
        return UCS_OK;
    }
    lease->ext = calloc(1, sizeof(*lease->ext));
    if (lease->ext == NULL) {
        ucs_error("mrlease: no memory for the file fields of lease [0x%lx, 0x%lx)",
                  lease->hot.start, lease->hot.end);
        return UCS_ERR_NO_MEMORY;
    }
    lease->ext->lease    = lease;
    lease->ext->owner_fd = -1;
    ucs_list_head_init(&lease->ext->file_list);
    return UCS_OK;
}

void ucs_mrlease_ext_free(ucs_mrlease_t *lease)
{
    if (lease->ext == NULL) {
        return;
    }
    if (lease->ext->owner_fd >= 0) {
        close(lease->ext->owner_fd);
    }
    free(lease->ext);
    lease->ext = NULL;
}

ucs_status_t ucs_mrlease_backing_store(ucs_mrlease_t *lease,
                                       const ucs_mrlease_backing_t *b)
{
    ucs_status_t status;

    lease->backing_type = b->type;
    lease->backing_bits = (b->sysv ? UCS_MRLEASE_BACKING_SYSV : 0) |
                          (b->named ? UCS_MRLEASE_BACKING_NAMED : 0) |
                          (b->shared ? UCS_MRLEASE_BACKING_SHARED : 0) |
                          (b->dax ? UCS_MRLEASE_BACKING_DAX : 0) |
                          (b->writable ? UCS_MRLEASE_BACKING_WRITABLE : 0);
    if ((lease->ext == NULL) && (b->dev == 0) && (b->ino == 0) &&
        ((b->type == UCS_MRLEASE_BACKING_ANON) || (b->type == UCS_MRLEASE_BACKING_NONE))) {
        /* private anonymous memory: nothing more to keep (its offset, a
         * position in an anonymous vma, means nothing: read back as 0) */
        return UCS_OK;
    }
    status = ucs_mrlease_ext_get(lease);
    if (status != UCS_OK) {
        return status;
    }
    lease->ext->dev    = b->dev;
    lease->ext->ino    = b->ino;
    lease->ext->offset = b->offset;
    return UCS_OK;
}

void ucs_mrlease_backing(const ucs_mrlease_t *lease, ucs_mrlease_backing_t *b)
{
    memset(b, 0, sizeof(*b));
    b->type     = (ucs_mrlease_backing_type_t)lease->backing_type;
    b->sysv     = !!(lease->backing_bits & UCS_MRLEASE_BACKING_SYSV);
    b->named    = !!(lease->backing_bits & UCS_MRLEASE_BACKING_NAMED);
    b->shared   = !!(lease->backing_bits & UCS_MRLEASE_BACKING_SHARED);
    b->dax      = !!(lease->backing_bits & UCS_MRLEASE_BACKING_DAX);
    b->writable = !!(lease->backing_bits & UCS_MRLEASE_BACKING_WRITABLE);
    if (lease->ext != NULL) {
        b->dev    = lease->ext->dev;
        b->ino    = lease->ext->ino;
        b->offset = lease->ext->offset;
    }
}
