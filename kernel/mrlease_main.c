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
 * Files: mrlease_main.c (the device, contexts, ioctls), mrl_notify.c (the
 * invalidate callback and the hold), mrl_read.c (read, poll, mmap), mrl.h.
 */
#include "mrl.h"

static unsigned int max_ranges = 1U << 20;
module_param(max_ranges, uint, 0644);
MODULE_PARM_DESC(max_ranges, "Most ranges one context may register (1048576)");

static unsigned int max_events = 1U << 16;
module_param(max_events, uint, 0644);
MODULE_PARM_DESC(max_events,
		 "Longest event queue of a context (65536); more fold into one overflow");

struct kmem_cache *mrl_slot_cache;

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
