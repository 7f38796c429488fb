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
 * The hold (MRLEASE_IOC_SET_HOLD, off until set): a changer whose change
 * breaks a range is held in the callback, after the status words are
 * raised, until the owner acks the hold's sequence (MRLEASE_IOC_ACK) or
 * the timeout passes, but only where that is safe: the callback may sleep,
 * the changer is a user task, the owner's mm is alive, and nobody holds the
 * owner's mmap_lock for write or waits for it (munmap, madvise, another
 * process's truncate are held; mremap, shmdt, fork, exit are not: counted
 * as unsafe). A held changer that gets SIGKILL returns at once. Each held
 * invalidation raises status->hold_seq with its events; read() raises
 * status->hold_read to the last of them it returned: an owner that has
 * handled what it read acks hold_read. While a changer is held, read()
 * does not wait for the invalidation's end (it would wait for the ack):
 * its events carry MRLEASE_EV_BEFORE, the pages may still be the old ones.
 * Unregistering never waits for a held changer: with the hold set, the
 * notifier is removed in the background.
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
#define MRLEASE_EV_BEFORE	0x40U /* told before the change ended (hold) */
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
	__u64 hold_seq;		/* the last held invalidation's sequence */
	__u64 hold_read;	/* the last whose events read() has returned */
};

#define MRLEASE_HOLD_MAX_US	1000000U /* the longest hold: one second */

/* MRLEASE_IOC_HOLD_INFO: the hold's setting and counters. */
struct mrlease_hold_info {
	__u32 timeout_us;	/* 0: off */
	__u32 holding;		/* changers held now */
	__u64 hold_seq;		/* raised so far */
	__u64 acked;		/* acked so far */
	__u64 holds;		/* changers held (then acked, timed out or killed) */
	__u64 timeouts;		/* holds that ran to the timeout */
	__u64 killed;		/* holds ended by a fatal signal */
	__u64 unsafe;		/* breaks not held: unsafe to hold there */
	__u64 total_ns;		/* time held, in total */
	__u64 max_ns;		/* the longest hold */
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
/* microseconds, 0 (off) .. MRLEASE_HOLD_MAX_US; EINVAL beyond */
#define MRLEASE_IOC_SET_HOLD	_IOW(MRLEASE_IOC_MAGIC, 4, __u32)
/* the hold_seq handled: releases every changer held for it or before it */
#define MRLEASE_IOC_ACK		_IOW(MRLEASE_IOC_MAGIC, 5, __u64)
#define MRLEASE_IOC_HOLD_INFO	_IOR(MRLEASE_IOC_MAGIC, 6, struct mrlease_hold_info)

#endif /* MRLEASE_UAPI_H */
