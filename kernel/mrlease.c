// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * mrlease.ko: tell a process, before the kernel changes them, that pages
 * it registered for RDMA are about to be replaced.
 *
 * Each open() of /dev/mrlease is a context bound to the opener's mm. Every
 * registered range is an mmu_interval_notifier; its invalidate callback
 * runs before the page tables change (munmap, mremap, madvise, shmdt,
 * truncate or hole punch of a mapped file by any process, migration, exit)
 * and, for the events that replace pages, bumps the slot's generation,
 * raises its pending word, queues an event and ORs the owner's own pending
 * bits (a word of the owner's pinned by MRLEASE_IOC_SETUP), so that when
 * the change returns to its caller the owner's next load sees it.
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

static unsigned int max_ranges = 1U << 20;
module_param(max_ranges, uint, 0644);
MODULE_PARM_DESC(max_ranges, "Most ranges one context may register (1048576)");

static unsigned int max_events = 1U << 16;
module_param(max_events, uint, 0644);
MODULE_PARM_DESC(max_events,
		 "Longest event queue of a context (65536); more fold into one overflow");

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

static struct kmem_cache *mrl_slot_cache;

static struct mrlease_slot_status *mrl_slot_status(struct mrl_ctx *ctx, u32 id)
{
	return (struct mrlease_slot_status *)((char *)ctx->status +
					       MRLEASE_STATUS_SLOTS_OFFSET) + id;
}

static u32 mrl_event_kind(enum mmu_notifier_event event)
{
	switch (event) {
	case MMU_NOTIFY_PROTECTION_VMA:
	case MMU_NOTIFY_PROTECTION_PAGE:
	case MMU_NOTIFY_SOFT_DIRTY:
		return 0; /* same pages, other permissions or accounting */
	case MMU_NOTIFY_UNMAP:
		return MRLEASE_EV_UNMAP;
	case MMU_NOTIFY_CLEAR:
		return MRLEASE_EV_CLEAR;
	case MMU_NOTIFY_MIGRATE:
		return MRLEASE_EV_MIGRATE;
	case MMU_NOTIFY_RELEASE:
		return MRLEASE_EV_RELEASE;
	case MMU_NOTIFY_EXCLUSIVE:
		return MRLEASE_EV_EXCLUSIVE;
	default:
		return MRLEASE_EV_OTHER;
	}
}

/* ev_lock held. */
static void mrl_queue_event(struct mrl_ctx *ctx, struct mrl_slot *slot,
			    u64 start, u64 end, u32 kind, u64 generation,
			    u64 hold)
{
	struct mrl_qevent *ev;

	if (ctx->count == ctx->queue_len || ctx->overflow_kinds) {
		/* Fold: coarser (every slot), never lost. */
		if (!ctx->overflow_kinds)
			WRITE_ONCE(ctx->status->overflows,
				   ctx->status->overflows + 1);
		ctx->overflow_kinds |= kind;
		ctx->overflow_seq++;
		ctx->overflow_hold = max(ctx->overflow_hold, hold);
		return;
	}
	ev = &ctx->queue[(ctx->head + ctx->count) % ctx->queue_len];
	ev->start = start;
	ev->end = end;
	ev->cookie = slot->cookie;
	ev->generation = generation;
	ev->seq = slot->seq;
	ev->hold = hold;
	ev->slot = slot->id;
	ev->kind = kind;
	ctx->count++;
}

/*
 * A CLEAR of one aligned 2 MiB that the owner's own thread raises while it
 * holds its mmap_lock for write replaces no page a registration pins: it is
 * a vma split or merge re-arranging page tables (__split_huge_pmd() raises
 * it around the cut, huge page or not; libibverbs' MADV_DONTFORK and
 * MADV_DOFORK around every registration split and merge vmas), or a
 * collapse or migration that a pinned page makes fail. Zaps (madvise
 * DONTNEED, FREE) hold the lock for read, unmaps raise UNMAP, and another
 * process's truncate holds no lock of this mm. Breaking on it made every
 * registration break its neighbours', which re-registered and split again.
 * The write owner is told by the rwsem's owner word: another thread of the
 * process holding the lock for write must not hide a real CLEAR.
 */
static bool mrl_split_clear(const struct mmu_notifier_range *range)
{
#ifdef CONFIG_PREEMPT_RT
	return false;
#else
	struct rw_semaphore *sem;

	if (range->event != MMU_NOTIFY_CLEAR || current->mm != range->mm ||
	    !IS_ALIGNED(range->start, PMD_SIZE) ||
	    range->end - range->start != PMD_SIZE)
		return false;
	sem = &range->mm->mmap_lock;
	return (atomic_long_read(&sem->count) & 1) &&
	       atomic_long_read(&sem->owner) == (long)current;
#endif
}

/*
 * May this changer wait for the owner? Not if it may not sleep, is a kernel
 * thread (reclaim, compaction), is tearing the owner's mm down (exit, exec:
 * no owner left to ack), is being killed, or if the owner's mmap_lock is
 * held for write (mremap, shmdt, fork, mprotect) or a writer waits for it:
 * the trylock fails exactly then (RWSEM_READ_FAILED_MASK), the changer's
 * own read hold (munmap after its downgrade, madvise) notwithstanding.
 */
static bool mrl_hold_safe(const struct mmu_notifier_range *range)
{
	struct mm_struct *mm = range->mm;

	if (!mmu_notifier_range_blockable(range) ||
	    (current->flags & PF_KTHREAD) || !atomic_read(&mm->mm_users) ||
	    fatal_signal_pending(current))
		return false;
	if (!mmap_read_trylock(mm))
		return false;
	mmap_read_unlock(mm);
	return true;
}

static bool mrl_hold_done(struct mrl_ctx *ctx, u64 seq)
{
	return READ_ONCE(ctx->hold.acked) >= seq || READ_ONCE(ctx->closing);
}

/*
 * Wait, killable, for the owner's ack of @seq or the deadline: one timeout
 * for every range of the context that one invalidation breaks (they share
 * its window, @cur_seq), however many there are.
 */
static void mrl_hold(struct mrl_ctx *ctx, u64 seq, u64 deadline)
{
	u64 t0 = ktime_get_ns(), ns;
	int ret = -ETIME;

	if (t0 < deadline)
		ret = __wait_event_hrtimeout(ctx->hold_wq,
					     mrl_hold_done(ctx, seq),
					     deadline - t0, TASK_KILLABLE);
	if (ret == -ETIME && mrl_hold_done(ctx, seq))
		ret = 0;
	ns = ktime_get_ns() - t0;
	spin_lock(&ctx->ev_lock);
	ctx->hold.holding--;
	ctx->hold.holds++;
	if (ret == -ETIME)
		ctx->hold.timeouts++;
	else if (ret)
		ctx->hold.killed++;
	ctx->hold.total_ns += ns;
	ctx->hold.max_ns = max(ctx->hold.max_ns, ns);
	spin_unlock(&ctx->ev_lock);
}

static bool mrl_invalidate(struct mmu_interval_notifier *mni,
			   const struct mmu_notifier_range *range,
			   unsigned long cur_seq)
{
	struct mrl_slot *slot = container_of(mni, struct mrl_slot, mni);
	struct mrl_ctx *ctx = slot->ctx;
	struct mrlease_slot_status *st;
	u32 kind = mrl_event_kind(range->event);
	unsigned long start, end;
	u64 gen, hold_seq = 0, deadline = 0;
	u32 hold_us = READ_ONCE(ctx->hold_us);
	bool safe = hold_us && kind && mrl_hold_safe(range);

	/* Sleeps only in mrl_hold(), and only if blockable. */
	spin_lock(&ctx->ev_lock);
	mmu_interval_set_seq(mni, cur_seq);
	if (slot->dead) {
		/* unregistered, its removal pending: nothing to tell */
		spin_unlock(&ctx->ev_lock);
		return true;
	}
	if (!kind || mrl_split_clear(range)) {
		WRITE_ONCE(ctx->status->ignored, ctx->status->ignored + 1);
		spin_unlock(&ctx->ev_lock);
		return true;
	}
	if (kind == MRLEASE_EV_CLEAR && IS_ALIGNED(range->start, PMD_SIZE) &&
	    range->end - range->start == PMD_SIZE)
		WRITE_ONCE(ctx->status->pmd_clears,
			   ctx->status->pmd_clears + 1);
	start = max(range->start, slot->start);
	end = min(range->end, slot->end);
	st = mrl_slot_status(ctx, slot->id);
	gen = st->generation + 1;
	WRITE_ONCE(st->generation, gen);
	WRITE_ONCE(st->pending, 1);
	/*
	 * A reader waiting for an invalidation's end would wait for this one,
	 * and this one for its ack: not held. Decided under ev_lock, as the
	 * reader decides to wait (mrl_read_may_wait()): one or the other.
	 */
	if (safe && !ctx->end_waiters) {
		/* Queued with the event: a reader that has read it acks it. */
		hold_seq = ++ctx->hold.hold_seq;
		WRITE_ONCE(ctx->status->hold_seq, hold_seq);
		ctx->hold.holding++;
		if (ctx->hold_window != cur_seq || !ctx->hold_deadline) {
			ctx->hold_window = cur_seq;
			ctx->hold_deadline = ktime_get_ns() +
					     (u64)hold_us * NSEC_PER_USEC;
		}
		deadline = ctx->hold_deadline;
	} else if (hold_us) {
		ctx->hold.unsafe++;
	}
	mrl_queue_event(ctx, slot, start, end, kind, gen, hold_seq);
	ctx->last_slot = slot->id;
	WRITE_ONCE(ctx->status->events, ctx->status->events + 1);
	WRITE_ONCE(ctx->status->queued, 1);
	/* Order the status words before the owner's pending word. */
	smp_wmb();
	if (ctx->pending_word)
		atomic_or(ctx->pending_bits, (atomic_t *)ctx->pending_word);
	spin_unlock(&ctx->ev_lock);
	wake_up_interruptible_poll(&ctx->wq, EPOLLIN | EPOLLRDNORM);
	if (hold_seq)
		mrl_hold(ctx, hold_seq, deadline);
	return true;
}

static const struct mmu_interval_notifier_ops mrl_mni_ops = {
	.invalidate = mrl_invalidate,
};

static int mrl_check_mm(struct mrl_ctx *ctx)
{
	/* An fd inherited across fork (or exec, or passed on) is not ours. */
	return current->mm == ctx->mm ? 0 : -EIO;
}

/* Remove the notifiers of slots unregistered while the hold was set. */
static void mrl_reap(struct mrl_ctx *ctx)
{
	struct llist_node *node = llist_del_all(&ctx->dead);
	struct mrl_slot *slot, *next;

	llist_for_each_entry_safe(slot, next, node, dead_node) {
		mmu_interval_notifier_remove(&slot->mni);
		kmem_cache_free(mrl_slot_cache, slot);
	}
}

static void mrl_reap_work(struct work_struct *work)
{
	mrl_reap(container_of(work, struct mrl_ctx, reap_work));
}

static int mrl_open(struct inode *inode, struct file *file)
{
	struct mrl_ctx *ctx;

	if (!current->mm)
		return -EINVAL;
	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	mutex_init(&ctx->lock);
	mutex_init(&ctx->read_lock);
	spin_lock_init(&ctx->ev_lock);
	init_waitqueue_head(&ctx->wq);
	init_waitqueue_head(&ctx->hold_wq);
	init_llist_head(&ctx->dead);
	INIT_WORK(&ctx->reap_work, mrl_reap_work);
	xa_init_flags(&ctx->slots, XA_FLAGS_ALLOC);
	mmgrab(current->mm);
	ctx->mm = current->mm;
	file->private_data = ctx;
	return 0;
}

static int mrl_release(struct inode *inode, struct file *file)
{
	struct mrl_ctx *ctx = file->private_data;
	struct mrl_slot *slot;
	unsigned long id;

	/*
	 * Last reference: no ioctl can run, no ack can come. Removing a
	 * notifier waits for an invalidation of it in progress, which takes
	 * nothing we hold: end its hold first.
	 */
	WRITE_ONCE(ctx->closing, true);
	wake_up_all(&ctx->hold_wq);
	xa_for_each(&ctx->slots, id, slot) {
		xa_erase(&ctx->slots, id);
		mmu_interval_notifier_remove(&slot->mni);
		kmem_cache_free(mrl_slot_cache, slot);
		cond_resched();
	}
	xa_destroy(&ctx->slots);
	/* The work touches ctx: done before it goes, and none is left. */
	flush_work(&ctx->reap_work);
	mrl_reap(ctx);
	if (ctx->pending_page)
		unpin_user_pages_dirty_lock(&ctx->pending_page, 1, true);
	vfree(ctx->status);
	kvfree(ctx->queue);
	mmdrop(ctx->mm);
	mutex_destroy(&ctx->read_lock);
	mutex_destroy(&ctx->lock);
	kfree(ctx);
	return 0;
}

static struct mrlease_status_hdr *mrl_status(struct mrl_ctx *ctx)
{
	/* Pairs with smp_store_release() in mrl_setup(). */
	return smp_load_acquire(&ctx->status);
}

static int mrl_pin_pending(struct mrl_ctx *ctx, u64 addr, u32 bits)
{
	struct page *page;
	int ret;

	if (!addr)
		return 0;
	if (!bits || !IS_ALIGNED(addr, sizeof(u32)))
		return -EINVAL;
	/* Long-term: a fork copies it for the child, the parent keeps it. */
	ret = pin_user_pages_fast(addr & PAGE_MASK, 1,
				  FOLL_WRITE | FOLL_LONGTERM, &page);
	if (ret != 1)
		return ret < 0 ? ret : -EFAULT;
	ctx->pending_page = page;
	ctx->pending_word = (u32 *)((char *)page_address(page) +
				    offset_in_page(addr));
	ctx->pending_bits = bits;
	return 0;
}

static long mrl_setup(struct mrl_ctx *ctx, void __user *uarg)
{
	struct mrlease_setup s;
	struct mrlease_status_hdr *status;
	size_t size;
	int ret;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.abi != MRLEASE_ABI_VERSION)
		return -EPROTO;

	mutex_lock(&ctx->lock);
	ret = -EINVAL;
	if (ctx->status)
		goto out_unlock;
	s.max_ranges = min(s.max_ranges ? s.max_ranges : MRL_DEFAULT_RANGES,
			   max(READ_ONCE(max_ranges), 1U));
	s.max_events = min(s.max_events ? s.max_events : MRL_DEFAULT_EVENTS,
			   max(READ_ONCE(max_events), 1U));
	size = PAGE_ALIGN(MRLEASE_STATUS_SLOTS_OFFSET +
			  (size_t)s.max_ranges *
			  sizeof(struct mrlease_slot_status));

	ret = -ENOMEM;
	ctx->queue = kvcalloc(s.max_events, sizeof(*ctx->queue),
			      GFP_KERNEL_ACCOUNT);
	if (!ctx->queue)
		goto out_unlock;
	status = vmalloc_user(size);
	if (!status)
		goto err_queue;
	ret = mrl_pin_pending(ctx, s.pending_addr, s.pending_bits);
	if (ret)
		goto err_status;

	status->max_ranges = s.max_ranges;
	status->abi = MRLEASE_ABI_VERSION;
	ctx->queue_len = s.max_events;
	ctx->max_ranges = s.max_ranges;
	ctx->status_size = size;
	s.status_size = size;
	/* Filled before published: pairs with mrl_status(). */
	smp_store_release(&ctx->status, status);
	mutex_unlock(&ctx->lock);

	return copy_to_user(uarg, &s, sizeof(s)) ? -EFAULT : 0;

err_status:
	vfree(status);
err_queue:
	kvfree(ctx->queue);
	ctx->queue = NULL;
out_unlock:
	mutex_unlock(&ctx->lock);
	return ret;
}

static int mrl_remove(struct mrl_ctx *ctx, u32 id);

static long mrl_register(struct mrl_ctx *ctx, void __user *uarg)
{
	struct mrlease_register r;
	struct mrl_slot *slot;
	u32 id;
	int ret;

	if (copy_from_user(&r, uarg, sizeof(r)))
		return -EFAULT;
	if (r.flags || !r.len || !PAGE_ALIGNED(r.start) ||
	    !PAGE_ALIGNED(r.len) || r.start + r.len < r.start ||
	    r.start + r.len > TASK_SIZE)
		return -EINVAL;

	slot = kmem_cache_zalloc(mrl_slot_cache, GFP_KERNEL_ACCOUNT);
	if (!slot)
		return -ENOMEM;
	slot->ctx = ctx;
	slot->cookie = r.cookie;
	slot->start = r.start;
	slot->end = r.start + r.len;

	mutex_lock(&ctx->lock);
	ret = -EINVAL;
	if (!ctx->status)
		goto err_unlock;
	ret = -ENOSPC;
	if (ctx->nr_ranges >= ctx->max_ranges)
		goto err_unlock;
	slot->seq = ++ctx->next_seq;
	ret = xa_alloc(&ctx->slots, &id, NULL,
		       XA_LIMIT(0, ctx->max_ranges - 1), GFP_KERNEL_ACCOUNT);
	if (ret)
		goto err_unlock;
	slot->id = id;
	/* The callback may run as soon as it is inserted: fill it first. */
	ret = mmu_interval_notifier_insert(&slot->mni, ctx->mm, r.start, r.len,
					   &mrl_mni_ops);
	if (ret) {
		xa_erase(&ctx->slots, id);
		goto err_unlock;
	}
	xa_store(&ctx->slots, id, slot, GFP_KERNEL_ACCOUNT);
	ctx->nr_ranges++;
	spin_lock(&ctx->ev_lock);
	r.generation = mrl_slot_status(ctx, id)->generation;
	spin_unlock(&ctx->ev_lock);
	mutex_unlock(&ctx->lock);

	r.slot = id;
	if (copy_to_user(uarg, &r, sizeof(r))) {
		/* The caller could never name it: take it back. */
		mrl_remove(ctx, id);
		return -EFAULT;
	}
	return 0;

err_unlock:
	mutex_unlock(&ctx->lock);
	kmem_cache_free(mrl_slot_cache, slot);
	return ret;
}

static int mrl_remove(struct mrl_ctx *ctx, u32 id)
{
	struct mrlease_slot_status *st;
	struct mrl_slot *slot;
	bool async;

	mutex_lock(&ctx->lock);
	slot = ctx->status ? xa_load(&ctx->slots, id) : NULL;
	if (!slot) {
		mutex_unlock(&ctx->lock);
		return -ENOENT;
	}
	xa_erase(&ctx->slots, id);
	/*
	 * Removing a notifier waits for the invalidation in progress to end,
	 * and a held one waits for our owner, who may be the caller: with the
	 * hold set the notifier is removed in the background, told nothing
	 * more (dead) from here on.
	 */
	async = READ_ONCE(ctx->hold_us);
	if (!async)
		mmu_interval_notifier_remove(&slot->mni);
	ctx->nr_ranges--;
	/*
	 * A later registration may get this slot: its generation goes on from
	 * here, so a value saved before never matches again.
	 */
	spin_lock(&ctx->ev_lock);
	slot->dead = true;
	st = mrl_slot_status(ctx, id);
	WRITE_ONCE(st->generation, st->generation + 1);
	WRITE_ONCE(st->pending, 0);
	spin_unlock(&ctx->ev_lock);
	mutex_unlock(&ctx->lock);
	if (async) {
		llist_add(&slot->dead_node, &ctx->dead);
		queue_work(system_unbound_wq, &ctx->reap_work);
	} else {
		kmem_cache_free(mrl_slot_cache, slot);
	}
	return 0;
}

static long mrl_unregister(struct mrl_ctx *ctx, u32 __user *uarg)
{
	u32 id;

	if (get_user(id, uarg))
		return -EFAULT;
	return mrl_remove(ctx, id);
}

static long mrl_set_hold(struct mrl_ctx *ctx, u32 __user *uarg)
{
	u32 us;

	if (get_user(us, uarg))
		return -EFAULT;
	if (us > MRLEASE_HOLD_MAX_US)
		return -EINVAL;
	WRITE_ONCE(ctx->hold_us, us);
	return 0;
}

/* Touches nothing of the caller's but the u64 it names: no allocation. */
static long mrl_ack(struct mrl_ctx *ctx, u64 __user *uarg)
{
	u64 seq;
	int ret = 0;

	if (get_user(seq, uarg))
		return -EFAULT;
	spin_lock(&ctx->ev_lock);
	if (seq > ctx->hold.hold_seq)
		ret = -EINVAL; /* never raised */
	else if (seq > ctx->hold.acked)
		WRITE_ONCE(ctx->hold.acked, seq);
	spin_unlock(&ctx->ev_lock);
	if (!ret)
		wake_up_all(&ctx->hold_wq);
	return ret;
}

static long mrl_hold_info(struct mrl_ctx *ctx, void __user *uarg)
{
	struct mrlease_hold_info info;

	spin_lock(&ctx->ev_lock);
	info = ctx->hold;
	spin_unlock(&ctx->ev_lock);
	info.timeout_us = READ_ONCE(ctx->hold_us);
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long mrl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct mrl_ctx *ctx = file->private_data;
	int ret = mrl_check_mm(ctx);

	if (ret)
		return ret;
	switch (cmd) {
	case MRLEASE_IOC_SETUP:
		return mrl_setup(ctx, (void __user *)arg);
	case MRLEASE_IOC_REGISTER:
		return mrl_register(ctx, (void __user *)arg);
	case MRLEASE_IOC_UNREGISTER:
		return mrl_unregister(ctx, (u32 __user *)arg);
	case MRLEASE_IOC_SET_HOLD:
		return mrl_set_hold(ctx, (u32 __user *)arg);
	case MRLEASE_IOC_ACK:
		return mrl_ack(ctx, (u64 __user *)arg);
	case MRLEASE_IOC_HOLD_INFO:
		return mrl_hold_info(ctx, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static bool mrl_has_events(struct mrl_ctx *ctx)
{
	bool ret;

	spin_lock(&ctx->ev_lock);
	ret = ctx->count || ctx->overflow_kinds;
	spin_unlock(&ctx->ev_lock);
	return ret;
}

/*
 * Copy the oldest events to @out without consuming them; the reader holds
 * read_lock, so they stay at the head until mrl_commit().
 */
static u32 mrl_peek(struct mrl_ctx *ctx, struct mrlease_event *out, u32 max,
		    u64 *overflow_seq, u32 *queued, u32 flags)
{
	struct mrl_qevent *ev;
	struct mrl_slot *slot;
	u32 n = 0, i;

	spin_lock(&ctx->ev_lock);
	*overflow_seq = 0;
	if (ctx->overflow_kinds) {
		memset(&out[0], 0, sizeof(out[0]));
		out[0].end = ~0ULL;
		out[0].slot = MRLEASE_SLOT_ALL;
		out[0].kind = ctx->overflow_kinds | MRLEASE_EV_OVERFLOW | flags;
		*overflow_seq = ctx->overflow_seq;
		n = 1;
	}
	for (i = 0; i < ctx->count && n < max; i++) {
		ev = &ctx->queue[(ctx->head + i) % ctx->queue_len];
		slot = xa_load(&ctx->slots, ev->slot);
		if (!slot || slot->seq != ev->seq)
			continue; /* unregistered since: consumed, not told */
		out[n].start = ev->start;
		out[n].end = ev->end;
		out[n].cookie = ev->cookie;
		out[n].generation = ev->generation;
		out[n].slot = ev->slot;
		out[n].kind = ev->kind | flags;
		n++;
	}
	*queued = i;
	spin_unlock(&ctx->ev_lock);
	return n;
}

static void mrl_commit(struct mrl_ctx *ctx, u64 overflow_seq, u32 queued)
{
	struct mrlease_slot_status *st;
	struct mrl_qevent *ev;
	struct mrl_slot *slot;
	unsigned long id;
	u32 i;

	spin_lock(&ctx->ev_lock);
	for (i = 0; i < queued; i++) {
		ev = &ctx->queue[ctx->head];
		slot = xa_load(&ctx->slots, ev->slot);
		st = mrl_slot_status(ctx, ev->slot);
		/* Read: not pending, unless it broke again since. */
		if (slot && slot->seq == ev->seq &&
		    st->generation == ev->generation)
			WRITE_ONCE(st->pending, 0);
		ctx->hold_read = max(ctx->hold_read, ev->hold);
		ctx->head = (ctx->head + 1) % ctx->queue_len;
		ctx->count--;
	}
	if (overflow_seq && overflow_seq == ctx->overflow_seq) {
		/* Nothing folded since it was read: every break is told. */
		ctx->overflow_kinds = 0;
		ctx->hold_read = max(ctx->hold_read, ctx->overflow_hold);
		xa_for_each(&ctx->slots, id, slot)
			WRITE_ONCE(mrl_slot_status(ctx, id)->pending, 0);
	}
	if (!ctx->count && !ctx->overflow_kinds)
		WRITE_ONCE(ctx->status->queued, 0);
	WRITE_ONCE(ctx->status->hold_read, ctx->hold_read);
	spin_unlock(&ctx->ev_lock);
}

/*
 * May read() wait for the end of the invalidation that raised its events?
 * Not while a changer is held: that end waits for our ack. If it may, no
 * hold begins until mrl_read_waited().
 */
static bool mrl_read_may_wait(struct mrl_ctx *ctx)
{
	bool ret;

	spin_lock(&ctx->ev_lock);
	ret = !ctx->hold.holding;
	if (ret)
		ctx->end_waiters++;
	spin_unlock(&ctx->ev_lock);
	return ret;
}

static void mrl_read_waited(struct mrl_ctx *ctx)
{
	spin_lock(&ctx->ev_lock);
	ctx->end_waiters--;
	spin_unlock(&ctx->ev_lock);
}

/*
 * The events are told before the pages change: wait until the invalidation
 * that raised the last of them has ended, so that whoever acts on them (a
 * thread of the owner's re-registering the range) finds the change made,
 * never the pages about to go. Every interval of an invalidation shares its
 * sequence, so waiting on one slot waits for all of them. The changer never
 * waits for us: no deadlock.
 */
static void mrl_wait_changed(struct mrl_ctx *ctx)
{
	struct mrl_slot *slot;
	u32 id;

	mutex_lock(&ctx->lock);
	spin_lock(&ctx->ev_lock);
	id = ctx->last_slot;
	spin_unlock(&ctx->ev_lock);
	slot = xa_load(&ctx->slots, id);
	if (slot)
		mmu_interval_read_begin(&slot->mni);
	mutex_unlock(&ctx->lock);
}

static ssize_t mrl_read(struct file *file, char __user *buf, size_t len,
			loff_t *off)
{
	struct mrl_ctx *ctx = file->private_data;
	struct mrlease_event evs[MRL_READ_BATCH];
	size_t done = 0, max = len / sizeof(evs[0]);
	u64 overflow_seq;
	u32 n, queued, flags = 0;
	int ret = mrl_check_mm(ctx);

	if (ret)
		return ret;
	if (!max)
		return -EINVAL;
	if (!mrl_status(ctx))
		return -EINVAL;

	while (!(file->f_flags & O_NONBLOCK) && !mrl_has_events(ctx)) {
		ret = wait_event_interruptible(ctx->wq, mrl_has_events(ctx));
		if (ret)
			return ret;
	}

	/*
	 * A held changer waits for our ack, its invalidation's end for it:
	 * tell now, flagged. No hold begins while we wait.
	 */
	if (mrl_read_may_wait(ctx)) {
		mrl_wait_changed(ctx);
		mrl_read_waited(ctx);
	} else {
		flags = MRLEASE_EV_BEFORE;
	}
	mutex_lock(&ctx->read_lock);
	while (done < max) {
		n = mrl_peek(ctx, evs, min_t(size_t, max - done, MRL_READ_BATCH),
			     &overflow_seq, &queued, flags);
		if (!n && !queued)
			break;
		if (n && copy_to_user(buf + done * sizeof(evs[0]), evs,
				      n * sizeof(evs[0]))) {
			mutex_unlock(&ctx->read_lock);
			return done ? done * sizeof(evs[0]) : -EFAULT;
		}
		mrl_commit(ctx, overflow_seq, queued);
		done += n;
	}
	mutex_unlock(&ctx->read_lock);
	return done ? done * sizeof(evs[0]) : -EAGAIN;
}

static __poll_t mrl_poll(struct file *file, poll_table *wait)
{
	struct mrl_ctx *ctx = file->private_data;

	if (mrl_check_mm(ctx))
		return EPOLLERR;
	poll_wait(file, &ctx->wq, wait);
	return mrl_has_events(ctx) ? EPOLLIN | EPOLLRDNORM : 0;
}

static int mrl_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mrl_ctx *ctx = file->private_data;
	struct mrlease_status_hdr *status = mrl_status(ctx);
	int ret = mrl_check_mm(ctx);

	if (ret)
		return ret;
	if (!status || vma->vm_pgoff ||
	    vma->vm_end - vma->vm_start > ctx->status_size)
		return -EINVAL;
	if (vma->vm_flags & VM_WRITE)
		return -EPERM;
	/* vm_flags is read-only from 6.3 on (Kbuild looks for the helper). */
#ifdef MRL_HAVE_VM_FLAGS_MOD
	vm_flags_mod(vma, VM_DONTCOPY, VM_MAYWRITE);
#else
	vma->vm_flags = (vma->vm_flags | VM_DONTCOPY) & ~VM_MAYWRITE;
#endif
	return remap_vmalloc_range(vma, status, 0);
}

static const struct file_operations mrl_fops = {
	.owner = THIS_MODULE,
	.open = mrl_open,
	.release = mrl_release,
	.unlocked_ioctl = mrl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.read = mrl_read,
	.poll = mrl_poll,
	.mmap = mrl_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice mrl_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mrlease",
	.fops = &mrl_fops,
	/* A context sees only its opener's own memory. */
	.mode = 0666,
};

static int __init mrl_init(void)
{
	int ret;

	mrl_slot_cache = KMEM_CACHE(mrl_slot, SLAB_ACCOUNT);
	if (!mrl_slot_cache)
		return -ENOMEM;
	ret = misc_register(&mrl_misc);
	if (ret) {
		kmem_cache_destroy(mrl_slot_cache);
		return ret;
	}
	pr_info("ready: /dev/%s (max_ranges %u, max_events %u)\n",
		mrl_misc.name, max_ranges, max_events);
	return 0;
}

static void __exit mrl_exit(void)
{
	/* Open contexts hold a module reference: none is left here. */
	misc_deregister(&mrl_misc);
	kmem_cache_destroy(mrl_slot_cache);
}

module_init(mrl_init);
module_exit(mrl_exit);

MODULE_LICENSE("Dual BSD/GPL");
MODULE_DESCRIPTION("Coherent RDMA registrations: page changes told before they happen");
MODULE_AUTHOR("mrlease developers");
