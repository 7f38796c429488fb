/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR BSD-2-Clause */
/*
 * mrlease.ko: the interface of /dev/mrlease, shared by the module and
 * user space (libucs_mrlease's kmod monitor, tests).
 *
 * One context per open(), bound to the opener's mm. MRLEASE_IOC_SETUP sizes
 * it; MRLEASE_IOC_REGISTER watches [start, start + len) with a cookie and
 * returns a slot. The status area (mmap, read-only, offset 0) holds a
 * header and one pending word and one generation word per slot; the kernel
 * writes them from its MMU notifier, before the pages change. Events are
 * read() from the fd (struct mrlease_event each) and polled (POLLIN);
 * read() returns once the invalidation that raised them has ended, so that
 * a reader acting on them finds the change made.
 *
 * pmd_clears counts the breaking CLEARs that cover exactly one aligned PMD:
 * a vma split nearby (__split_huge_pmd: the pages stay) or a whole huge page
 * dropped; the first are the spurious breaks the notifier cannot tell apart.
 *
 * Errors: ENOSPC (max_ranges slots in use), EINVAL (bad range, no setup,
 * setup twice), ENOENT (no such slot), EPROTO (ABI version), EIO (the
 * context belongs to another mm: the fd was inherited across fork or exec,
 * or passed to another process).
 */
#ifndef MRLEASE_UAPI_H
#define MRLEASE_UAPI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define MRLEASE_DEVICE		"/dev/mrlease"
#define MRLEASE_ABI_VERSION	1

/* Event kinds (mrlease_event.kind): what the kernel is about to do. */
#define MRLEASE_EV_UNMAP	0x01U /* munmap, mremap, shmdt, exit */
#define MRLEASE_EV_CLEAR	0x02U /* madvise, truncate, COW, reclaim */
#define MRLEASE_EV_MIGRATE	0x04U /* pages migrated */
#define MRLEASE_EV_RELEASE	0x08U /* the mm is torn down */
#define MRLEASE_EV_EXCLUSIVE	0x10U /* device-exclusive access */
#define MRLEASE_EV_OTHER	0x20U /* an event this module predates */
#define MRLEASE_EV_OVERFLOW	0x80000000U /* folded: every slot, whole range */

#define MRLEASE_SLOT_ALL	0xffffffffU

struct mrlease_setup {
	__u32 abi;		/* in: MRLEASE_ABI_VERSION */
	__u32 max_ranges;	/* in: slots wanted (0: default); out: granted */
	__u32 max_events;	/* in: event queue length (0: default); out */
	__u32 pending_bits;	/* in: bits to OR into *pending_addr */
	__u64 pending_addr;	/* in: a 32-bit word of the caller's, or 0 */
	__u64 status_size;	/* out: bytes to mmap at offset 0, read-only */
};

struct mrlease_register {
	__u64 start;		/* in: page aligned */
	__u64 len;		/* in: page aligned, non-zero */
	__u64 cookie;		/* in: returned with every event of the slot */
	__u32 flags;		/* in: 0 */
	__u32 slot;		/* out */
	__u64 generation;	/* out: the slot's generation now */
};

struct mrlease_event {
	__u64 start;		/* the part of the slot's range that changes */
	__u64 end;		/* (exclusive); OVERFLOW: 0 .. ~0 */
	__u64 cookie;		/* OVERFLOW: 0 */
	__u64 generation;	/* the slot's generation after this event */
	__u32 slot;		/* OVERFLOW: MRLEASE_SLOT_ALL */
	__u32 kind;		/* MRLEASE_EV_* (OVERFLOW: all kinds folded) */
};

/* At offset 0 of the status area; the slots follow at offset 64. */
struct mrlease_status_hdr {
	__u64 queued;		/* events (or an overflow) not yet read */
	__u64 events;		/* breaking invalidations, in total */
	__u64 ignored;		/* invalidations that replace no page */
	__u64 overflows;	/* events folded into an overflow */
	__u32 max_ranges;
	__u32 abi;
	__u64 pmd_clears;	/* breaking CLEARs of one aligned PMD (2 MiB) */
	__u64 reserved[2];
};

struct mrlease_slot_status {
	__u64 pending;		/* non-zero: a break not yet read */
	__u64 generation;	/* bumped by every break; never goes back */
};

#define MRLEASE_STATUS_SLOTS_OFFSET	64

#define MRLEASE_IOC_MAGIC	0xb9
#define MRLEASE_IOC_SETUP	_IOWR(MRLEASE_IOC_MAGIC, 1, struct mrlease_setup)
#define MRLEASE_IOC_REGISTER	_IOWR(MRLEASE_IOC_MAGIC, 2, struct mrlease_register)
#define MRLEASE_IOC_UNREGISTER	_IOW(MRLEASE_IOC_MAGIC, 3, __u32)

#endif /* MRLEASE_UAPI_H */
