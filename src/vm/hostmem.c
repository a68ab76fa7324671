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
#include "test_hook.h"
#include "vm/attributes.h"
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
	vm_zap_section_begin(vm);
	if (invalidate)
		inv_bump_all(&vm->inv);
	flush = mmu_zap_gfn_range_locked(vm, start, end);
	if (flush)
		vm_flush_remote_tlbs(vm);
	vm_zap_section_end(vm);
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
	vm_zap_section_begin(vm);
	inv_bump_all(&vm->inv);
	shadow_zap_all(vm);
	old = tdp_mmu_invalidate_root_locked(vm);
	vm_zap_section_end(vm);
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

/* How zap_hva_range() removes what it finds. */
enum hva_zap {
	HVA_ZAP_LOCKED,		/* write lock: the TDP root and shadow pages */
	HVA_ZAP_TDP_SHARED,	/* read lock: the TDP root only, by cmpxchg */
	HVA_ZAP_SHADOW,		/* write lock: shadow pages only (a nested guest's) */
};

/*
 * The read-side zap of an invalidation, as a ZAP_RANGE event when tracing.
 * Its count is the VM's zapped SPTEs meanwhile: under the read lock another
 * invalidation's zap beside it may add to them, so it is an upper bound.
 */
static bool zap_tdp_shared_traced(struct vmmu_vm *vm, uint64_t gs, uint64_t ge)
{
	struct vmmu_trace_event ev;
	uint64_t zapped;
	bool flush;

	if (likely(!vm_tracing(vm)))
		return tdp_mmu_zap_leafs_shared(vm, vm->root, gs, ge);
	zapped = atomic_load_explicit(&vm->stat.zapped_sptes, memory_order_relaxed);
	ev = (struct vmmu_trace_event){ .kind = VMMU_TRACE_ZAP_RANGE, .vcpu_id = VMMU_TRACE_NO_VCPU,
					.gpa = gs << 12, .npages = ge - gs, .ts_ns = vm_trace_now() };
	flush = tdp_mmu_zap_leafs_shared(vm, vm->root, gs, ge);
	ev.dur_ns = vm_trace_now() - ev.ts_ns;
	ev.count = atomic_load_explicit(&vm->stat.zapped_sptes, memory_order_relaxed) - zapped;
	vm_trace(vm, &ev);
	return flush;
}

/*
 * Zap every gfn whose hva lies in [hs, he): with mmu_lock held for write, or
 * (TDP, shared) for read by an invalidation whose range is published and
 * whose earlier faults are waited out.  RCU read side.
 */
static bool zap_hva_range(struct vmmu_vm *vm, uintptr_t hs, uintptr_t he, enum hva_zap how)
{
	const struct memslots *ms = vm_memslots(vm);
	bool flush = false;

	for (unsigned int i = 0; i < ms->n; i++) {
		const struct memslot *s = &ms->slots[i];
		uintptr_t lo = s->hva > hs ? s->hva : hs;
		uintptr_t hi = s->hva + (s->npages << 12) < he ? s->hva + (s->npages << 12) : he;
		uint64_t gs, ge;

		if (lo >= hi)
			continue;
		gs = s->base_gfn + ((lo - s->hva) >> 12);
		ge = s->base_gfn + ((hi - s->hva + 4095) >> 12);
		if (how == HVA_ZAP_TDP_SHARED) {
			/* What the look found empty stays empty (nothing installs
			 * into the range any more): zap from the first mapping. */
			gs = vm->root ? tdp_mmu_first_mapped(vm, vm->root, gs, ge) : ge;
			if (gs < ge)
				flush |= zap_tdp_shared_traced(vm, gs, ge);
		} else if (how == HVA_ZAP_SHADOW) {
			flush |= shadow_zap_gfn_range(vm, gs, ge);
		} else {
			flush |= mmu_zap_gfn_range_locked(vm, gs, ge);
		}
	}
	return flush;
}

/*
 * Wait out every install section (vcpu_install_begin) that may have checked
 * the open invalidations before the caller published its range: after this,
 * each fault either saw the range or has its SPTEs in place.  The vCPU list
 * is read under vcpus_lock, so a vCPU created later is created after the
 * range was published, and its faults see it.
 */
static void inv_wait_installers(struct vmmu_vm *vm)
{
	uint64_t seen[VMMU_MAX_VCPUS];
	unsigned int n;

#ifndef VMMU_TSAN	/* under TSan both sides use seq_cst accesses instead */
	atomic_thread_fence(memory_order_seq_cst);
#endif
	pthread_mutex_lock(&vm->vcpus_lock);
	n = atomic_load_explicit(&vm->nr_vcpus, memory_order_relaxed);
	pthread_mutex_unlock(&vm->vcpus_lock);
	for (unsigned int i = 0; i < n; i++)
		seen[i] = atomic_load_explicit(&vm->vcpus[i]->install, memory_order_seq_cst);
	/* A check and an install: short, and never waits for us. */
	vcpus_wait_out(vm, n, seen, true);
}

/*
 * Whether an invalidation of [hs, he) may return without mmu_lock (TDP): the
 * current root has no translation of the range, and no zap section ran while
 * it looked.  A zap section that removed the range's SPTEs may not have
 * flushed the TLBs yet: one in progress when the counts were read, or one
 * that began during the look (its removals, seen by the look, happen before
 * the second read of the started count).  One that ended before has flushed.
 * An obsolete or missing root says a zap-all is, or was, at work: the locked
 * path orders this call after it.  RCU read side, after inv_wait_installers().
 */
static bool inv_range_unmapped(struct vmmu_vm *vm, uintptr_t hs, uintptr_t he)
{
	uint64_t ended = atomic_load_explicit(&vm->zap_sections_ended, memory_order_acquire);
	uint64_t started = atomic_load_explicit(&vm->zap_sections_started, memory_order_acquire);
	struct tdp_root *root = __atomic_load_n(&vm->root, __ATOMIC_ACQUIRE);
	const struct memslots *ms;

	if (started != ended || !root || atomic_load_explicit(&root->invalid, memory_order_acquire))
		return false;
	ms = vm_memslots(vm);
	for (unsigned int i = 0; i < ms->n; i++) {
		const struct memslot *s = &ms->slots[i];
		uintptr_t lo = s->hva > hs ? s->hva : hs;
		uintptr_t hi = s->hva + (s->npages << 12) < he ? s->hva + (s->npages << 12) : he;

		uint64_t ge = s->base_gfn + ((hi - s->hva + 4095) >> 12);

		if (lo < hi && tdp_mmu_first_mapped(vm, root, s->base_gfn + ((lo - s->hva) >> 12), ge) < ge)
			return false;
	}
	return atomic_load_explicit(&vm->zap_sections_started, memory_order_acquire) == started;
}

VMMU_EXPORT void vmmu_invalidate_range_begin(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end)
{
	uint64_t started, ended;
	bool flush;

	if (!vm)
		return;
	vmmu_rcu_thread_online();
	/*
	 * KVM's mmu_invalidate_begin(), first: the range is open, so no fault
	 * that checks from here on installs into it until the matching end
	 * (and a fault that sampled the sequence before it retries after).
	 * An empty (or inverted) range is counted like any other, since its
	 * end will be, and covers nothing.
	 */
	inv_add(&vm->inv, hva_start, hva_end, vmmu_thread_token());
	if (hva_start >= hva_end)
		return;
	vmmu_rcu_read_lock();
	if (vm_shadow_paging(vm)) {
		/*
		 * Shadow faults check and install under mmu_lock for write, so
		 * the write lock alone orders them: one that checked before the
		 * range was open has installed, and the zap removes it.  Physical
		 * accesses copy outside the lock, in install sections.
		 */
		inv_wait_installers(vm);
		pthread_rwlock_wrlock(&vm->mmu_lock);
		vm_zap_section_begin(vm);
		if (zap_hva_range(vm, hva_start, hva_end, HVA_ZAP_LOCKED))
			vm_flush_remote_tlbs(vm);
		vm_zap_section_end(vm);
		pthread_rwlock_unlock(&vm->mmu_lock);
		vmmu_rcu_read_unlock();
		return;
	}
	/*
	 * TDP: the faults that checked before the range was open are the only
	 * ones that can still install into it; once they are done, whatever
	 * translates the range is in the SPTEs (or in TLBs, until the flush of
	 * whoever zapped it).  Nothing there: done, without mmu_lock.
	 * Something: zap it under the read lock, beside faults on other
	 * ranges, and flush.
	 */
	inv_wait_installers(vm);
	/*
	 * A nested guest's shadow pages (guest_mmu) map L1 frames too.  Their
	 * faults install in sections as well, so after the wait any page that
	 * could map the range is counted; they change under the write lock.
	 */
	if (__atomic_load_n(&vm->shadow->nr_pages, __ATOMIC_ACQUIRE)) {
		pthread_rwlock_wrlock(&vm->mmu_lock);
		vm_zap_section_begin(vm);
		if (zap_hva_range(vm, hva_start, hva_end, HVA_ZAP_SHADOW))
			vm_flush_remote_tlbs(vm);
		vm_zap_section_end(vm);
		pthread_rwlock_unlock(&vm->mmu_lock);
	}
	if (inv_range_unmapped(vm, hva_start, hva_end)) {
		vmmu_rcu_read_unlock();
		return;
	}
	pthread_rwlock_rdlock(&vm->mmu_lock);
	vm_zap_section_begin(vm);
	ended = atomic_load_explicit(&vm->zap_sections_ended, memory_order_acquire);
	started = atomic_load_explicit(&vm->zap_sections_started, memory_order_acquire);
	flush = zap_hva_range(vm, hva_start, hva_end, HVA_ZAP_TDP_SHARED);
	vmmu_test_hook(VMMU_TEST_HOOK_INV_ZAPPED, hva_start);
	/*
	 * Another invalidation zapping beside this one (the write lock excludes
	 * every other zap) may have removed SPTEs of this range that this walk
	 * then found empty, and not have flushed yet: flush for it.
	 */
	if (!flush && (started - ended != 1 ||
		       atomic_load_explicit(&vm->zap_sections_started, memory_order_acquire) != started))
		flush = true;
	if (flush)
		vm_flush_remote_tlbs(vm);
	vm_zap_section_end(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

VMMU_EXPORT void vmmu_invalidate_range_end(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end)
{
	if (!vm)
		return;
	/*
	 * No mmu_lock: closing the range and moving the sequence are one write
	 * of the invalidation record, which a fault reads consistently.  A
	 * fault that sampled the sequence before this end retries (its host
	 * fault-in may have seen the memory as it was changing); one that
	 * samples after it sees the host's new memory.
	 */
	if (!inv_remove(&vm->inv, hva_start, hva_end))
		vm_bug(vm, __FILE__, __LINE__, "invalidate_range_end [%#llx, %#llx) without a matching begin",
		       (unsigned long long)hva_start, (unsigned long long)hva_end);
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
	/* Zap-all leaves the mirror; release takes the private pages too. */
	private_release(vm);
}

/* No gfn lies at or above 2^(MAXPHYADDR - 12): a range is clamped there, so
 * "everything" can be asked for as [0, UINT64_MAX).  false: nothing left. */
static bool clamp_gfn_range(const struct vmmu_vm *vm, uint64_t gfn_start, uint64_t *gfn_end)
{
	uint64_t limit = 1ULL << (vm->cfg.maxphyaddr - 12);

	if (*gfn_end > limit)
		*gfn_end = limit;
	return gfn_start < *gfn_end;
}

VMMU_EXPORT int vmmu_zap_gfn_range(vmmu_vm *vm, uint64_t gfn_start, uint64_t gfn_end)
{
	if (!vm || gfn_start >= gfn_end)
		return VMMU_EINVAL;
	if (!clamp_gfn_range(vm, gfn_start, &gfn_end))
		return 0;
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
	if (!clamp_gfn_range(vm, gfn_start, &gfn_end)) {
		*young_pages = 0;
		return 0;
	}
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
