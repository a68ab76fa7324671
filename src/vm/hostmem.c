/* SPDX-License-Identifier: MIT */
/*
 * The host side of guest memory: zaps of gfn ranges and of everything,
 * the MMU-notifier equivalents (invalidate_range_begin/end with KVM's
 * sequence and retry), host protections, release, aging.  docs/mmu.md 10.1.
 */
#include <stdlib.h>
#include <string.h>

#include "mmu/mmu.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/trace.h"
#include "vm/vmmu_int.h"

/* Remove mappings of [start, end) and flush; mmu_lock taken here. */
void vm_zap_gfn_range(struct vmmu_vm *vm, uint64_t start, uint64_t end, bool invalidate)
{
	bool flush = false;

	/*
	 * The read section spans the flush: tables unlinked here are freed by
	 * RCU callbacks, which therefore run only after every vCPU has dropped
	 * its TLB and paging-structure caches.
	 */
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (invalidate)
		atomic_fetch_add_explicit(&vm->mmu_invalidate_seq, 1, memory_order_release);
	flush = mmu_zap_gfn_range_locked(vm, start, end);
	if (flush)
		vm_flush_remote_tlbs(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

void vm_zap_all(struct vmmu_vm *vm)
{
	struct vmmu_trace_event ev = { .kind = VMMU_TRACE_ZAP_ALL, .vcpu_id = VMMU_TRACE_NO_VCPU };
	bool tracing = vm_tracing(vm);
	struct tdp_root *old;

	if (unlikely(tracing))
		ev.ts_ns = vm_trace_now();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	atomic_fetch_add_explicit(&vm->mmu_invalidate_seq, 1, memory_order_release);
	shadow_zap_all(vm);
	old = tdp_mmu_invalidate_root_locked(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	if (old)
		tdp_mmu_put_root(vm, old);
	if (unlikely(tracing)) {
		ev.dur_ns = vm_trace_now() - ev.ts_ns;
		vm_trace(vm, &ev);
	}
}

/* ---- host memory events ------------------------------------------------------ */

/* Zap every gfn whose hva lies in [hs, he); mmu_lock held for write, RCU read. */
static bool zap_hva_range_locked(struct vmmu_vm *vm, uintptr_t hs, uintptr_t he)
{
	const struct memslots *ms = vm_memslots(vm);
	bool flush = false;

	if (!vm->root && !vm->shadow)
		return false;
	for (unsigned int i = 0; i < ms->n; i++) {
		const struct memslot *s = &ms->slots[i];
		uintptr_t lo = s->hva > hs ? s->hva : hs;
		uintptr_t hi = s->hva + (s->npages << 12) < he ? s->hva + (s->npages << 12) : he;

		if (lo >= hi)
			continue;
		flush |= mmu_zap_gfn_range_locked(vm, s->base_gfn + ((lo - s->hva) >> 12),
						  s->base_gfn + ((hi - s->hva + 4095) >> 12));
	}
	return flush;
}

VMMU_EXPORT void vmmu_invalidate_range_begin(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end)
{
	if (!vm || hva_start >= hva_end)
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	/*
	 * KVM's mmu_invalidate_begin(): count it in progress and widen the
	 * range first, so no fault installs into the range from here until
	 * the matching end; then remove what is mapped and flush before
	 * returning (the caller changes host memory right after).
	 */
	if (atomic_fetch_add_explicit(&vm->mmu_invalidate_in_progress, 1, memory_order_acq_rel) == 0) {
		vm->mmu_invalidate_range_start = hva_start;
		vm->mmu_invalidate_range_end = hva_end;
	} else {
		if (hva_start < vm->mmu_invalidate_range_start)
			vm->mmu_invalidate_range_start = hva_start;
		if (hva_end > vm->mmu_invalidate_range_end)
			vm->mmu_invalidate_range_end = hva_end;
	}
	if (zap_hva_range_locked(vm, hva_start, hva_end))
		vm_flush_remote_tlbs(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

VMMU_EXPORT void vmmu_invalidate_range_end(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end)
{
	(void)hva_start;
	(void)hva_end;
	if (!vm)
		return;
	pthread_rwlock_wrlock(&vm->mmu_lock);
	/* The sequence moves before the count drops: a fault that sampled it
	 * before this invalidation began can no longer install (KVM's order). */
	atomic_fetch_add_explicit(&vm->mmu_invalidate_seq, 1, memory_order_release);
	if (VM_BUG_ON(vm, atomic_load(&vm->mmu_invalidate_in_progress) <= 0, "unbalanced invalidate_range_end"))
		atomic_store(&vm->mmu_invalidate_in_progress, 0);
	else
		atomic_fetch_sub_explicit(&vm->mmu_invalidate_in_progress, 1, memory_order_acq_rel);
	pthread_rwlock_unlock(&vm->mmu_lock);
}

static void hostprot_free_cb(struct rcu_head *head)
{
	struct hostprot_set *hs = caa_container_of(head, struct hostprot_set, rcu);

	vmmu_rcu_callback_begin();
	free(hs);
	vmmu_rcu_callback_end();
}

/* cur with [start, end) set to prot; NULL on overflow or no memory. */
static struct hostprot_set *hostprot_update(const struct hostprot_set *cur, uintptr_t start, uintptr_t end,
					    unsigned int prot, int *err)
{
	unsigned int n = cur ? cur->n : 0, k = 0;
	struct hostprot_set *hs = malloc(sizeof(*hs) + (n + 2) * sizeof(hs->r[0]));

	*err = VMMU_ENOMEM;
	if (!hs)
		return NULL;
	memset(&hs->rcu, 0, sizeof(hs->rcu));
	/* Keep the parts of old ranges outside [start, end), in order. */
	for (unsigned int i = 0; i < n; i++) {
		if (cur->r[i].start < start) {
			hs->r[k] = cur->r[i];
			if (hs->r[k].end > start)
				hs->r[k].end = start;
			k++;
		}
	}
	if (prot != VMMU_HOST_RW) {
		hs->r[k].start = start;
		hs->r[k].end = end;
		hs->r[k].prot = prot;
		k++;
	}
	for (unsigned int i = 0; i < n; i++) {
		if (cur->r[i].end > end) {
			hs->r[k] = cur->r[i];
			if (hs->r[k].start < end)
				hs->r[k].start = end;
			k++;
		}
	}
	/* Merge neighbours with the same protection. */
	{
		unsigned int m = 0;

		for (unsigned int i = 0; i < k; i++) {
			if (m && hs->r[m - 1].end == hs->r[i].start && hs->r[m - 1].prot == hs->r[i].prot)
				hs->r[m - 1].end = hs->r[i].end;
			else
				hs->r[m++] = hs->r[i];
		}
		k = m;
	}
	if (k > HOSTPROT_MAX) {
		free(hs);
		*err = VMMU_ENOSPC;
		return NULL;
	}
	hs->n = k;
	*err = 0;
	return hs;
}

VMMU_EXPORT int vmmu_set_host_protection(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end, unsigned int prot)
{
	struct hostprot_set *cur, *next;
	int err;

	if (!vm || hva_start >= hva_end || ((hva_start | hva_end) & 0xfff) || prot > VMMU_HOST_NONE)
		return VMMU_EINVAL;
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->hostprot_lock);
	cur = atomic_load_explicit(&vm->hostprot, memory_order_relaxed);
	next = hostprot_update(cur, hva_start, hva_end, prot, &err);
	if (!next) {
		pthread_mutex_unlock(&vm->hostprot_lock);
		return err;
	}
	/* As an MMU notifier would: no mapping of the range survives, and none
	 * is installed until the new protection is visible. */
	vmmu_invalidate_range_begin(vm, hva_start, hva_end);
	atomic_store_explicit(&vm->hostprot, next, memory_order_release);
	vmmu_invalidate_range_end(vm, hva_start, hva_end);
	pthread_mutex_unlock(&vm->hostprot_lock);
	if (cur)
		vmmu_call_rcu(&cur->rcu, hostprot_free_cb);
	return 0;
}

VMMU_EXPORT void vmmu_release(vmmu_vm *vm)
{
	if (!vm)
		return;
	vmmu_rcu_thread_online();
	/* Every fault from now on is a memory fault; then nothing stays mapped. */
	atomic_store_explicit(&vm->released, true, memory_order_release);
	vm_zap_all(vm);
}

VMMU_EXPORT int vmmu_zap_gfn_range(vmmu_vm *vm, uint64_t gfn_start, uint64_t gfn_end)
{
	if (!vm || gfn_start >= gfn_end)
		return VMMU_EINVAL;
	if (gfn_end > (1ULL << (vm->cfg.maxphyaddr - 12)))
		return VMMU_ERANGE;
	vmmu_rcu_thread_online();
	vm_zap_gfn_range(vm, gfn_start, gfn_end, true);
	return 0;
}

VMMU_EXPORT void vmmu_zap_all(vmmu_vm *vm)
{
	if (!vm)
		return;
	vmmu_rcu_thread_online();
	vm_zap_all(vm);
}

VMMU_EXPORT void vmmu_flush_remote_tlbs(vmmu_vm *vm)
{
	if (!vm)
		return;
	vm_flush_remote_tlbs(vm);
}

VMMU_EXPORT int vmmu_age_gfn_range(vmmu_vm *vm, uint64_t gfn_start, uint64_t gfn_end, int clear,
				   uint64_t *young_pages)
{
	uint64_t young = 0;
	struct tdp_root *root;

	if (!vm || !young_pages || gfn_start >= gfn_end)
		return VMMU_EINVAL;
	if (gfn_end > (1ULL << (vm->cfg.maxphyaddr - 12)))
		return VMMU_ERANGE;
	vmmu_rcu_thread_online();
	if (vm_shadow_paging(vm) || __atomic_load_n(&vm->shadow->nr_leaves, __ATOMIC_RELAXED)) {
		/* Rmaps change under mmu_lock: aging through them takes it. */
		vmmu_rcu_read_lock();
		pthread_rwlock_wrlock(&vm->mmu_lock);
		young = shadow_age_gfn_range(vm, gfn_start, gfn_end, clear);
		pthread_rwlock_unlock(&vm->mmu_lock);
		vmmu_rcu_read_unlock();
	}
	vmmu_rcu_read_lock();
	/* The root pointer changes only under mmu_lock; a root being replaced
	 * stays alive while referenced, so take a reference for the walk. */
	pthread_rwlock_rdlock(&vm->mmu_lock);
	root = vm->root;
	if (root)
		atomic_fetch_add(&root->refcount, 1);
	pthread_rwlock_unlock(&vm->mmu_lock);
	if (root)
		young += tdp_mmu_age_range(vm, root, gfn_start, gfn_end, clear);
	vmmu_rcu_read_unlock();
	if (root)
		tdp_mmu_put_root(vm, root);
	*young_pages = young;
	return 0;
}
