/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * mrlease.ko's private parts, shared by its files.
 *
 * Locking, outermost first:
 *   ctx->lock (mutex)      setup, register, unregister, release; a reader
 *                          waiting for an invalidation to end
 *   ctx->read_lock (mutex) one reader at a time: peek, copy out, commit
 *   mmap_lock              taken by mmu_interval_notifier_insert() and by
 *                          copy_to_user() faults; held by the changers
 *   ctx->ev_lock (spin)    queue, overflow, status words, the hold's
 *                          sequence and counters; the only lock taken in
 *                          the invalidate callback, which takes nothing
 *                          under it but the wait queues' own locks
 * The mmap handler runs under mmap_lock and takes no mutex: the status
 * area is published once by setup and never changes until release.
 *
 * The hold (off unless MRLEASE_IOC_SET_HOLD): the callback may then sleep,
 * holding no lock of ours, in a killable wait bounded by the timeout, until
 * the owner acks. It holds only where that cannot wait on the owner:
 * mmap_read_trylock() of the owner's mm fails when anyone holds it for
 * write or waits for it (a waiting writer blocks new readers, so an owner
 * thread that faults would wait behind it); it is dropped at once, and a
 * trylock adds no lock dependency.
 */
#ifndef MRL_H
#define MRL_H

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/llist.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "mrlease_uapi.h"

#define MRL_DEFAULT_RANGES	65536U
#define MRL_DEFAULT_EVENTS	4096U
#define MRL_READ_BATCH		16U

/* An event as queued; seq tells a slot's registration from a later one. */
struct mrl_qevent {
	u64 start;
	u64 end;
	u64 cookie;
	u64 generation;
	u64 seq;
	u64 hold;	/* the hold raised with it, or 0 */
	u32 slot;
	u32 kind;
};

struct mrl_ctx;

struct mrl_slot {
	struct mmu_interval_notifier mni;
	struct mrl_ctx *ctx;
	struct llist_node dead_node;	/* unregistered, removal pending */
	bool dead;			/* under ev_lock */
	u64 cookie;
	u64 seq;
	unsigned long start;
	unsigned long end;
	u32 id;
};

struct mrl_ctx {
	struct mm_struct *mm;
	struct mutex lock;		/* setup, register, unregister */
	struct mutex read_lock;		/* one reader: peek, copy, commit */
	spinlock_t ev_lock;		/* queue, overflow, status words */
	wait_queue_head_t wq;
	struct xarray slots;
	u64 next_seq;
	u32 nr_ranges;
	u32 max_ranges;
	/* published by setup (smp_store_release), constant until release */
	struct mrlease_status_hdr *status;
	size_t status_size;
	/* under ev_lock */
	struct mrl_qevent *queue;
	u32 queue_len;
	u32 head;
	u32 count;
	u32 overflow_kinds;
	u64 overflow_seq;
	u64 overflow_hold;
	struct page *pending_page;
	u32 *pending_word;
	u32 pending_bits;
	u32 last_slot;			/* the slot last told of a break */
	/* the hold: setting, sequence and counters (under ev_lock) */
	wait_queue_head_t hold_wq;
	u32 hold_us;			/* 0: off; WRITE_ONCE by SET_HOLD */
	bool closing;			/* release: every hold ends */
	u32 end_waiters;		/* readers waiting for an invalidation's end */
	unsigned long hold_window;	/* the invalidation window held in */
	u64 hold_deadline;		/* ... and when its holds end (ns) */
	struct mrlease_hold_info hold;
	u64 hold_read;
	/* slots unregistered while the hold was set, removed by reap_work */
	struct llist_head dead;
	struct work_struct reap_work;
};

static inline int mrl_check_mm(struct mrl_ctx *ctx)
{
	/* An fd inherited across fork (or exec, or passed on) is not ours. */
	return current->mm == ctx->mm ? 0 : -EIO;
}

static inline struct mrlease_status_hdr *mrl_status(struct mrl_ctx *ctx)
{
	/* Pairs with smp_store_release() in mrl_setup(). */
	return smp_load_acquire(&ctx->status);
}

extern struct kmem_cache *mrl_slot_cache;
extern const struct mmu_interval_notifier_ops mrl_mni_ops;

/* mrl_notify.c */
struct mrlease_slot_status *mrl_slot_status(struct mrl_ctx *ctx, u32 id);

/* mrl_read.c */
ssize_t mrl_read(struct file *file, char __user *buf, size_t len, loff_t *off);
__poll_t mrl_poll(struct file *file, poll_table *wait);
int mrl_mmap(struct file *file, struct vm_area_struct *vma);

#endif /* MRL_H */
