// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * mrlease.ko: the invalidate callback (what each change raises, before it
 * happens) and the bounded hold of the changer.
 */
#include "mrl.h"

struct mrlease_slot_status *mrl_slot_status(struct mrl_ctx *ctx, u32 id)
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

const struct mmu_interval_notifier_ops mrl_mni_ops = {
	.invalidate = mrl_invalidate,
};
