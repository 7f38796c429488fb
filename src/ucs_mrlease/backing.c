/*
 * What backs a virtual range: read from /proc/self/maps at acquire time
 * (registration is a slow path already).
 */
#include "engine.h"

#include <stdio.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <linux/magic.h>

static ucs_mrlease_backing_type_t backing_classify(uint64_t ino, const char *path)
{
    struct statfs sfs;

    if (ino == 0) {
        return UCS_MRLEASE_BACKING_ANON;
    }
    if (!strncmp(path, "/SYSV", 5) || !strncmp(path, "/dev/zero", 9) ||
        !strncmp(path, "/memfd:", 7)) {
        return UCS_MRLEASE_BACKING_SHMEM;
    }
    if ((statfs(path, &sfs) == 0) && (sfs.f_type == TMPFS_MAGIC)) {
        return UCS_MRLEASE_BACKING_SHMEM;
    }
    return UCS_MRLEASE_BACKING_FILE;
}

ucs_status_t ucs_mrlease_backing_query(uintptr_t start, uintptr_t end,
                                       ucs_mrlease_backing_t *backing,
                                       char *path, size_t max,
                                       uintptr_t *vma_start, uintptr_t *vma_end)
{
    char line[4096 + 128], perms[8], vpath[4096];
    unsigned long vstart, vend, voff, ino;
    unsigned dmaj, dmin;
    uintptr_t covered = start;
    ucs_mrlease_backing_type_t type;
    int first = 1, n;
    FILE *f;

    memset(backing, 0, sizeof(*backing));
    backing->type = UCS_MRLEASE_BACKING_NONE;
    if (path != NULL && max > 0) {
        path[0] = '\0';
    }

    f = fopen("/proc/self/maps", "re");
    if (f == NULL) {
        ucs_error("mrlease: cannot read /proc/self/maps: %m");
        return UCS_ERR_IO_ERROR;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        vpath[0] = '\0';
        n = sscanf(line, "%lx-%lx %7s %lx %x:%x %lu %4095[^\n]", &vstart, &vend,
                   perms, &voff, &dmaj, &dmin, &ino, vpath);
        if (n < 7) {
            continue;
        }
        if (vend <= start) {
            continue;
        }
        if (vstart >= end) {
            break;
        }
        if (vstart > covered) {
            break; /* a hole */
        }
        type = backing_classify(ino, vpath);
        if (first) {
            backing->type     = type;
            backing->dev      = makedev(dmaj, dmin);
            backing->ino      = ino;
            backing->offset   = voff + (start - vstart);
            backing->shared   = (perms[3] == 's');
            backing->writable = (perms[1] == 'w');
            if ((path != NULL) && (max > 0)) {
                snprintf(path, max, "%s", vpath);
            }
            if (vma_start != NULL) {
                *vma_start = vstart;
                *vma_end   = vend;
            }
            first = 0;
        } else if ((type != backing->type) ||
                   (makedev(dmaj, dmin) != backing->dev) || (ino != backing->ino)) {
            backing->type = UCS_MRLEASE_BACKING_MIXED;
        }
        covered = vend;
        if (covered >= end) {
            break;
        }
    }
    fclose(f);

    if (covered < end) {
        /* Part of the range is not mapped: not an error for a lease, but
         * only the range-independent monitors can cover it. */
        if (backing->type != UCS_MRLEASE_BACKING_NONE) {
            backing->type = UCS_MRLEASE_BACKING_MIXED;
        }
    }
    return UCS_OK;
}
