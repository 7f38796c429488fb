// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * mrlease.ko: the owner reads events (read, poll) and maps the status area.
 */
#include "mrl.h"

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

ssize_t mrl_read(struct file *file, char __user *buf, size_t len,
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

__poll_t mrl_poll(struct file *file, poll_table *wait)
{
	struct mrl_ctx *ctx = file->private_data;

	if (mrl_check_mm(ctx))
		return EPOLLERR;
	poll_wait(file, &ctx->wq, wait);
	return mrl_has_events(ctx) ? EPOLLIN | EPOLLRDNORM : 0;
}

int mrl_mmap(struct file *file, struct vm_area_struct *vma)
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
