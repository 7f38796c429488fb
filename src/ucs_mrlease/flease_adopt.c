/*
 * flease adoption: the kernel grants a write lease only on a file's sole
 * open description, so a shared mapping made from the application's own
 * (since closed) descriptor is re-mapped from ours, same pages, before
 * anything is registered there.
 */
#define _GNU_SOURCE
#include "monitor_flease.h"

#include <ucm/api/ucm.h>
#include <stdlib.h>
#include <sys/mman.h>

int ucs_mrlease_flease_is_adopted(const flease_file_t *file, uintptr_t start,
                                  uintptr_t end)
{
    unsigned i;

    for (i = 0; i < file->num_adopted; ++i) {
        if ((file->adopted[i].start <= start) && (end <= file->adopted[i].end)) {
            return 1;
        }
    }
    return 0;
}

typedef struct {
    flease_file_t        *file;
    ucs_mrlease_engine_t *engine;
    ucs_status_t         status;
} flease_adopt_walk_t;

static ucs_status_t flease_add_adopted(flease_file_t *file, uintptr_t start,
                                       uintptr_t end)
{
    flease_range_t *ranges;

    ranges = realloc(file->adopted, (file->num_adopted + 1) * sizeof(*ranges));
    if (ranges == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    file->adopted = ranges;
    file->adopted[file->num_adopted].start = start;
    file->adopted[file->num_adopted].end   = end;
    ++file->num_adopted;
    return UCS_OK;
}

static int flease_adopt_visit(const ucs_mrlease_vma_t *vma, void *arg)
{
    flease_adopt_walk_t *w = arg;
    flease_file_t *file    = w->file;
    int prot;
    void *p;

    if ((vma->dev != file->dev) || (vma->ino != file->ino) ||
        ucs_mrlease_flease_is_adopted(file, vma->start, vma->end)) {
        return 0;
    }
    if (!vma->shared) {
        /* Re-mapping would drop its copied-on-write pages. */
        ucs_diag("mrlease: flease: a private mapping [0x%lx, 0x%lx) of %s holds "
                 "the file open: no lease until it is unmapped", vma->start,
                 vma->end, vma->path);
        w->status = UCS_ERR_BUSY;
        return 0;
    }
    prot = (vma->readable ? PROT_READ : 0) | (vma->writable ? PROT_WRITE : 0) |
           (vma->exec ? PROT_EXEC : 0);
    /* ucm_orig_mmap: the pages stay the same, so this is no decoherence and
     * must not raise events in ours or UCX's hooks. */
    p = ucm_orig_mmap((void*)vma->start, vma->end - vma->start, prot,
                      MAP_SHARED | MAP_FIXED, file->fd, (off_t)vma->offset);
    if (p == MAP_FAILED) {
        ucs_diag("mrlease: flease: cannot adopt [0x%lx, 0x%lx) of %s: %m",
                 vma->start, vma->end, vma->path);
        w->status = UCS_ERR_IO_ERROR;
        return 0;
    }
    if (flease_add_adopted(file, vma->start, vma->end) != UCS_OK) {
        w->status = UCS_ERR_NO_MEMORY;
        return 1;
    }
    ++w->engine->counters.file_leases_adopted;
    return 0;
}

/* The kernel grants a write lease only if ours is the file's sole open
 * description, and every mapping holds the description it was made from.
 * So re-map every shared mapping of the file in this process from our fd:
 * same pages, same offsets, same protection. Done before the owner
 * registers the range, so no registration can see a replaced vma. */
ucs_status_t ucs_mrlease_flease_adopt(ucs_mrlease_flease_t *mon,
                                      flease_file_t *file, ucs_mrlease_t *lease)
{
    flease_adopt_walk_t w = {file, mon->super.engine, UCS_OK};

    if (ucs_mrlease_flease_is_adopted(file, lease->hot.start, lease->hot.end)) {
        return UCS_OK;
    }
    if (ucs_mrlease_maps_walk(flease_adopt_visit, &w) < 0) {
        return UCS_ERR_IO_ERROR;
    }
    return w.status;
}
