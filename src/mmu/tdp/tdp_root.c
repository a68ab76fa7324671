/* SPDX-License-Identifier: MIT */
/*
 * TDP roots: the current root, created on first use; references held by
 * vCPUs; obsolete roots left by zap-all, torn down by their last holder.
 */
#include "mmu/tdp/tdp_mmu.h"

#include <stdlib.h>

static void tdp_root_free_cb(struct rcu_head *head)
{
	struct tdp_root *root = caa_container_of(head, struct tdp_root, rcu);

	vmmu_rcu_callback_begin();
	free(root);
	vmmu_rcu_callback_end();
}

struct tdp_root *tdp_mmu_get_root(struct vmmu_vm *vm)
{
	struct tdp_root *root;
	struct pt_page *sp;

	pthread_rwlock_rdlock(&vm->mmu_lock);
	root = vm->root;
	if (root && !atomic_load(&root->invalid)) {
		atomic_fetch_add(&root->refcount, 1);
		pthread_rwlock_unlock(&vm->mmu_lock);
		return root;
	}
	pthread_rwlock_unlock(&vm->mmu_lock);

	pthread_rwlock_wrlock(&vm->mmu_lock);
	root = vm->root;
	if (!root) {
		root = calloc(1, sizeof(*root));
		sp = root ? pt_page_alloc(&vm->arena) : NULL;
		if (!sp) {
			free(root);
			pthread_rwlock_unlock(&vm->mmu_lock);
			return NULL;
		}
		sp->level = vm->root_level;
		sp->gfn = 0;
		root->pt = sp;
		root->level = vm->root_level;
		root->vm = vm;
		atomic_init(&root->refcount, 1);	/* the VM's */
		atomic_init(&root->invalid, false);
		atomic_fetch_add_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
		/* Release: a lockless reader (an invalidation's look for
		 * mappings) sees the root initialized. */
		__atomic_store_n(&vm->root, root, __ATOMIC_RELEASE);
	}
	atomic_fetch_add(&root->refcount, 1);
	pthread_rwlock_unlock(&vm->mmu_lock);
	return root;
}

void tdp_mmu_put_root(struct vmmu_vm *vm, struct tdp_root *root)
{
	if (atomic_fetch_sub(&root->refcount, 1) != 1)
		return;
	/*
	 * Last reference: nobody can walk it any more (every vCPU flushed when
	 * it dropped it).  Zap whatever is left, then free after a grace period.
	 * An obsolete root's whole contents go here: zap-all left them, so the
	 * cost lands on whoever drops it last, not on the caller of zap-all.
	 */
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (atomic_load_explicit(&root->invalid, memory_order_acquire)) {
		struct tdp_root **pp = &vm->obsolete_roots;

		while (*pp && *pp != root)
			pp = &(*pp)->next_obsolete;
		if (*pp)
			*pp = root->next_obsolete;
	}
	vm->tdp_teardown = atomic_load_explicit(&root->invalid, memory_order_relaxed);
	tdp_mmu_zap_leafs(vm, root, 0, tdp_max_gfn(root->level));
	vm->tdp_teardown = false;
	pthread_rwlock_unlock(&vm->mmu_lock);
	atomic_fetch_sub_explicit(root->is_mirror ? &vm->stat.mirror_pt_pages : &vm->stat.pt_pages, 1,
				  memory_order_relaxed);
	pt_page_free_rcu(root->pt);
	vmmu_call_rcu(&root->rcu, tdp_root_free_cb);
}

struct tdp_root *tdp_mmu_invalidate_root_locked(struct vmmu_vm *vm)
{
	struct tdp_root *old = vm->root;

	if (!old)
		return NULL;
	atomic_store_explicit(&old->invalid, true, memory_order_release);
	__atomic_store_n(&vm->root, NULL, __ATOMIC_RELEASE);
	old->next_obsolete = vm->obsolete_roots;
	vm->obsolete_roots = old;
	/* The page counts are the current root's mappings: none now.  (No fault
	 * installs into an invalid root, so nothing adds to the old ones.) */
	for (int l = PG_LEVEL_4K; l <= PG_LEVEL_1G; l++)
		atomic_store_explicit(&vm->stat.pages[l], 0, memory_order_relaxed);
	/*
	 * Every vCPU must drop the obsolete root before it walks again; the
	 * request waits out vCPUs currently in guest mode, so when it returns
	 * nobody walks the old tables.  Nothing else looks at an obsolete root
	 * (faults retry on it, host-side operations use vm->root), so its
	 * contents can wait for its last reference.
	 */
	vm_make_all_vcpus_request(vm, VCPU_REQ_MMU_RELOAD | VCPU_REQ_TLB_FLUSH);
	return old;
}
