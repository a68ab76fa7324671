/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <linux/membarrier.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cpu/hw.h"
#include "mmu/mmu.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/vcpu.h"
#include "vm/vmmu_int.h"

#define DEFAULT_PT_ARENA_BYTES (16ULL << 30)

/* ---- asymmetric fences for vCPU requests --------------------------------- */

static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
bool vmmu_membarrier_ok;

static void membarrier_init(void)
{
	long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		vmmu_membarrier_ok = true;
}

/*
 * The requester's half of the Dekker pattern in vcpu_enter_guest(): after
 * this, every vCPU either sees the request before it walks, or was seen in
 * guest mode by the loads that follow.
 */
static void request_fence(void)
{
#ifndef VMMU_TSAN	/* under TSan every access on both sides is seq_cst */
	if (vmmu_membarrier_ok)
		syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	else
		atomic_thread_fence(memory_order_seq_cst);
#endif
}

__thread struct vmmu_vcpu *vmmu_self_vcpu;

void vm_make_all_vcpus_request(struct vmmu_vm *vm, uint32_t req)
{
	unsigned int n = atomic_load_explicit(&vm->nr_vcpus, memory_order_acquire);
	uint64_t seen[VMMU_MAX_VCPUS];

	for (unsigned int i = 0; i < n; i++)
		atomic_fetch_or_explicit(&vm->vcpus[i]->requests, req, memory_order_seq_cst);
	/*
	 * The only vCPU is the caller's own (a fault or an emulated store on
	 * a one-vCPU VM): it is outside guest mode and reads its requests in
	 * program order before it enters again, so there is nobody to fence
	 * against or wait for (KVM sends no IPI to itself either).
	 */
	if (n == 1 && vm->vcpus[0] == vmmu_self_vcpu)
		return;
	request_fence();
	for (unsigned int i = 0; i < n; i++)
		seen[i] = atomic_load_explicit(&vm->vcpus[i]->mode, memory_order_seq_cst);
	/*
	 * Wait out every guest-mode stretch that began before the request was
	 * visible.  Those are short (one access: a walk and a copy) and never
	 * block, so spinning is bounded; yield in case the vCPU was preempted.
	 */
	for (unsigned int i = 0; i < n; i++) {
		unsigned int spins = 0;

		if (!(seen[i] & 1))
			continue;
		while (atomic_load_explicit(&vm->vcpus[i]->mode, memory_order_acquire) == seen[i]) {
			if (++spins < 64)
				caa_cpu_relax();
			else
				sched_yield();
		}
	}
}

void vm_flush_remote_tlbs(struct vmmu_vm *vm)
{
	VM_STAT_ADD(vm->stat.remote_tlb_flushes, 1);
	vm_make_all_vcpus_request(vm, VCPU_REQ_TLB_FLUSH);
}

/* ---- VM ----------------------------------------------------------------- */

VMMU_EXPORT void vmmu_vm_config_init(struct vmmu_vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mmu = VMMU_MMU_TDP;
	cfg->tdp_format = VMMU_TDP_EPT;
	cfg->tdp_levels = 4;
	cfg->maxphyaddr = 46;
	cfg->flags = 0;
	cfg->max_vcpus = 64;
	cfg->pt_arena_bytes = 0;
	cfg->shadow_prev_roots = 3;
	cfg->shadow_max_pages = 0;
}

VMMU_EXPORT int vmmu_vm_create(const struct vmmu_vm_config *cfg, vmmu_vm **out)
{
	struct vmmu_vm *vm;
	int r;

	if (!cfg || !out)
		return VMMU_EINVAL;
	if (cfg->mmu != VMMU_MMU_TDP && cfg->mmu != VMMU_MMU_SHADOW)
		return VMMU_EINVAL;
	if (cfg->mmu == VMMU_MMU_SHADOW &&
	    ((cfg->flags & VMMU_VM_AD_DISABLED) || cfg->shadow_prev_roots > VMMU_MAX_PREV_ROOTS ||
	     (cfg->shadow_max_pages && cfg->shadow_max_pages < 64)))
		return VMMU_EINVAL;
	if (cfg->tdp_format > VMMU_TDP_NPT)
		return VMMU_EINVAL;
	if (cfg->tdp_levels != 4 && cfg->tdp_levels != 5)
		return VMMU_EINVAL;
	if (cfg->maxphyaddr < 36 || cfg->maxphyaddr > 52)
		return VMMU_EINVAL;
	/* 4-level TDP maps 48 bits of guest-physical address space (shadow
	 * paging maps linear addresses: any MAXPHYADDR will do). */
	if (cfg->mmu == VMMU_MMU_TDP && cfg->tdp_levels == 4 && cfg->maxphyaddr > 48)
		return VMMU_EINVAL;
	if (cfg->flags & ~(VMMU_VM_AD_DISABLED | VMMU_VM_NO_HUGEPAGES | VMMU_VM_NO_FAST_PF |
			   VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET | VMMU_VM_EAGER_SPLIT | VMMU_VM_PML))
		return VMMU_EINVAL;
	/* PML logs the D bits of TDP leaves: it needs both. */
	if ((cfg->flags & VMMU_VM_PML) && (cfg->mmu != VMMU_MMU_TDP || (cfg->flags & VMMU_VM_AD_DISABLED)))
		return VMMU_EINVAL;
	if (cfg->pml_entries &&
	    (!(cfg->flags & VMMU_VM_PML) || cfg->pml_entries < PML_MIN_ENTRIES ||
	     cfg->pml_entries > PML_MAX_ENTRIES || (cfg->pml_entries & (cfg->pml_entries - 1))))
		return VMMU_EINVAL;
	/* INITIALLY_SET only means something with manual protection (KVM). */
	if ((cfg->flags & VMMU_VM_DIRTY_INIT_SET) && !(cfg->flags & VMMU_VM_MANUAL_PROTECT))
		return VMMU_EINVAL;
	/* NPT has no way to turn hardware A/D off. */
	if (cfg->tdp_format == VMMU_TDP_NPT && (cfg->flags & VMMU_VM_AD_DISABLED))
		return VMMU_EINVAL;
	if (cfg->max_vcpus < 1 || cfg->max_vcpus > VMMU_MAX_VCPUS)
		return VMMU_EINVAL;
	if (cfg->dirty_ring_size &&
	    (cfg->dirty_ring_size < DIRTY_RING_MIN || (cfg->dirty_ring_size & (cfg->dirty_ring_size - 1))))
		return VMMU_EINVAL;

	pthread_once(&membarrier_once, membarrier_init);
	vmmu_rcu_thread_online();

	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return VMMU_ENOMEM;
	vm->cfg = *cfg;
	spte_fmt_init(&vm->fmt, cfg->tdp_format == VMMU_TDP_EPT, !(cfg->flags & VMMU_VM_AD_DISABLED));
	vm->root_level = (int)cfg->tdp_levels;
	vm->max_level = (cfg->flags & VMMU_VM_NO_HUGEPAGES) ? PG_LEVEL_4K : PG_LEVEL_1G;
	if (cfg->mmu == VMMU_MMU_SHADOW) {
		/* Shadow SPTEs are legacy x86 entries with hardware A/D, and map
		 * 4K pages only (guest huge pages get direct shadow pages). */
		spte_fmt_init(&vm->fmt, false, true);
		vm->max_level = PG_LEVEL_4K;
	}
	r = pt_arena_init(&vm->arena, cfg->pt_arena_bytes ? cfg->pt_arena_bytes : DEFAULT_PT_ARENA_BYTES);
	if (r) {
		free(vm);
		return r;
	}
	atomic_init(&vm->memslots, memslots_new_empty());
	if (!vm->memslots || (cfg->mmu == VMMU_MMU_SHADOW && shadow_vm_init(vm))) {
		free(vm->memslots);
		pt_arena_destroy(&vm->arena);
		free(vm);
		return VMMU_ENOMEM;
	}
	{
		/*
		 * Writers first, as KVM's queued rwlock does: with glibc's
		 * default, a stream of faulting vCPUs (readers) starves
		 * invalidations and zaps (writers) indefinitely.  Nothing here
		 * takes the read side recursively, which this kind forbids.
		 */
		pthread_rwlockattr_t attr;

		pthread_rwlockattr_init(&attr);
		pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&vm->mmu_lock, &attr);
		pthread_rwlockattr_destroy(&attr);
	}
	pthread_mutex_init(&vm->slots_lock, NULL);
	pthread_mutex_init(&vm->vcpus_lock, NULL);
	pthread_mutex_init(&vm->ring_lock, NULL);
	pthread_mutex_init(&vm->hostprot_lock, NULL);
	*out = vm;
	return 0;
}

VMMU_EXPORT void vmmu_vm_destroy(vmmu_vm *vm)
{
	struct memslots *ms;

	if (!vm)
		return;
	vmmu_rcu_thread_online();
	/* Roots first, while every vCPU exists: dropping one may flush, and a
	 * flush asks every vCPU. */
	for (unsigned int i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		mmu_unload(vm->vcpus[i]);
	for (unsigned int i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		vcpu_free(vm->vcpus[i]);
	if (vm->root) {
		struct tdp_root *root = vm->root;

		vm->root = NULL;
		tdp_mmu_put_root(vm, root);
	}
	shadow_vm_destroy(vm);
	/* Every deferred free touches the arena: drain them before it goes. */
	vmmu_rcu_barrier();
	ms = vm->memslots;
	for (unsigned int i = 0; i < ms->n; i++) {
		memslot_free_backing(&ms->slots[i]);
		free(ms->slots[i].dirty_bitmap);
		shadow_slot_free(&ms->slots[i]);
	}
	free(ms);
	pt_arena_destroy(&vm->arena);
	pthread_rwlock_destroy(&vm->mmu_lock);
	pthread_mutex_destroy(&vm->slots_lock);
	pthread_mutex_destroy(&vm->vcpus_lock);
	pthread_mutex_destroy(&vm->ring_lock);
	pthread_mutex_destroy(&vm->hostprot_lock);
	free(atomic_load(&vm->hostprot));
	free((void *)vm->bug_reason);
	free(vm);
}

/* ---- zaps ------------------------------------------------------------------ */

static void memslots_free_cb(struct rcu_head *head)
{
	struct memslots *ms = caa_container_of(head, struct memslots, rcu);

	vmmu_rcu_callback_begin();
	free(ms);
	vmmu_rcu_callback_end();
}

/* Remove mappings of [start, end) and flush; mmu_lock taken here. */
static void zap_gfn_range(struct vmmu_vm *vm, uint64_t start, uint64_t end, bool invalidate)
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

static void zap_all(struct vmmu_vm *vm)
{
	struct tdp_root *old;

	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	atomic_fetch_add_explicit(&vm->mmu_invalidate_seq, 1, memory_order_release);
	old = NULL;
	if (vm->shadow)
		shadow_zap_all(vm);
	else
		old = tdp_mmu_invalidate_root_locked(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	if (old)
		tdp_mmu_put_root(vm, old);
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
	zap_all(vm);
}

VMMU_EXPORT int vmmu_zap_gfn_range(vmmu_vm *vm, uint64_t gfn_start, uint64_t gfn_end)
{
	if (!vm || gfn_start >= gfn_end)
		return VMMU_EINVAL;
	if (gfn_end > (1ULL << (vm->cfg.maxphyaddr - 12)))
		return VMMU_ERANGE;
	vmmu_rcu_thread_online();
	zap_gfn_range(vm, gfn_start, gfn_end, true);
	return 0;
}

VMMU_EXPORT void vmmu_zap_all(vmmu_vm *vm)
{
	if (!vm)
		return;
	vmmu_rcu_thread_online();
	zap_all(vm);
}

VMMU_EXPORT void vmmu_flush_remote_tlbs(vmmu_vm *vm)
{
	if (!vm)
		return;
	vm_flush_remote_tlbs(vm);
}

/* ---- memslots ---------------------------------------------------------------- */

static int alloc_dirty_bitmap(struct vmmu_vm *vm, struct memslot *s)
{
	uint64_t words = memslot_bitmap_words(s);

	s->dirty_bitmap = calloc(words, sizeof(uint64_t));
	if (!s->dirty_bitmap)
		return VMMU_ENOMEM;
	/* KVM_DIRTY_LOG_INITIALLY_SET: report everything once, protect lazily
	 * as the embedder clears; bits past the slot's end stay clear. */
	if ((vm->cfg.flags & (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET)) ==
	    (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET)) {
		memset(s->dirty_bitmap, 0xff, words * sizeof(uint64_t));
		if (s->npages % 64)
			s->dirty_bitmap[words - 1] = (1ULL << (s->npages % 64)) - 1;
	}
	return 0;
}

static bool dirty_init_set(const struct vmmu_vm *vm)
{
	return (vm->cfg.flags & (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET)) ==
	       (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET);
}

/* Write-protect a slot's mappings for dirty logging (PML: clear the D bits of
 * its 4K leaves, write-protect its huge ones); mmu_lock taken here. */
static void slot_write_protect(struct vmmu_vm *vm, const struct memslot *s)
{
	bool flush = false;

	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	/* Eager splitting: pay for the 4K tables now rather than in the first
	 * write fault of every huge page while the guest runs. */
	if (vm->root && (vm->cfg.flags & VMMU_VM_EAGER_SPLIT))
		tdp_mmu_split_huge_range(vm, vm->root, s->base_gfn, s->base_gfn + s->npages);
	flush = mmu_log_protect_range_locked(vm, s->base_gfn, s->base_gfn + s->npages);
	/* Clearing W only for logging could defer this flush until the log is
	 * harvested (MMU-writable says why W is clear); flushing now keeps the
	 * rule simple: logging starts when this call returns.  With PML the
	 * flush is required: a TLB entry made while D was set would let writes
	 * through without setting D again, unlogged. */
	if (flush)
		vm_flush_remote_tlbs(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

/*
 * Publish a new snapshot.  MMIO SPTEs store only 19 bits of the generation;
 * when those bits wrap, an old MMIO SPTE could match again, so every MMIO
 * SPTE goes (KVM zaps all MMIO SPTEs on wrap).
 */
static void publish_memslots(struct vmmu_vm *vm, struct memslots *ms)
{
	atomic_store_explicit(&vm->memslots, ms, memory_order_release);
	if ((ms->generation & MMIO_SPTE_GEN_MASK) == 0)
		zap_all(vm);
}

VMMU_EXPORT int vmmu_set_memslot(vmmu_vm *vm, const struct vmmu_memslot *req)
{
	const struct memslot *oldp = NULL;
	struct memslot oldcopy, *old = &oldcopy;
	enum memslot_change change;
	struct memslots *cur, *mid, *next;
	struct memslot s;
	int r;

	if (!vm || !req)
		return VMMU_EINVAL;
	if (vm_is_bugged(vm))
		return VMMU_EIO;
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->slots_lock);
	cur = vm->memslots;
	r = memslot_check(cur, req, vm->cfg.maxphyaddr, &change, &oldp);
	if (r || change == MEMSLOT_NOCHANGE)
		goto out;
	/* cur (and oldp with it) is freed below once no reader can see it. */
	if (oldp)
		oldcopy = *oldp;

	switch (change) {
	case MEMSLOT_CREATE:
		memset(&s, 0, sizeof(s));
		s.id = req->slot;
		s.flags = req->flags;
		s.base_gfn = req->gpa >> 12;
		s.npages = req->size >> 12;
		s.host_level = host_page_size_to_level(req->host_page_size);
		if (req->hva) {
			s.hva = (uintptr_t)req->hva;
		} else {
			s.owned = true;
			s.backing = req->backing;
			r = memslot_alloc_backing(&s, req->size, req->host_page_size ? req->host_page_size : 4096,
						  req->backing);
			if (r)
				goto out;
		}
		if ((req->flags & VMMU_MEM_LOG_DIRTY_PAGES) && (r = alloc_dirty_bitmap(vm, &s))) {
			memslot_free_backing(&s);
			goto out;
		}
		if (vm->shadow && (r = shadow_slot_alloc(&s))) {
			memslot_free_backing(&s);
			free(s.dirty_bitmap);
			goto out;
		}
		next = memslots_copy_update(cur, s.id, &s);
		if (!next) {
			memslot_free_backing(&s);
			free(s.dirty_bitmap);
			shadow_slot_free(&s);
			r = VMMU_ENOMEM;
			goto out;
		}
		/* Old MMIO SPTEs in the new range miss on their generation. */
		publish_memslots(vm, next);
		vmmu_call_rcu(&cur->rcu, memslots_free_cb);
		break;

	case MEMSLOT_FLAGS_ONLY: {
		bool was = memslot_logging(old), will = req->flags & VMMU_MEM_LOG_DIRTY_PAGES;

		s = *old;
		s.flags = req->flags;
		if (!was && will && (r = alloc_dirty_bitmap(vm, &s)))
			goto out;
		if (was && !will)
			s.dirty_bitmap = NULL;
		next = memslots_copy_update(cur, s.id, &s);
		if (!next) {
			if (!was && will)
				free(s.dirty_bitmap);
			r = VMMU_ENOMEM;
			goto out;
		}
		publish_memslots(vm, next);
		/*
		 * Faults read the slot once, inside one RCU read section: after a
		 * grace period none that saw the old flags is still installing.
		 * Only then does write protection catch every writable SPTE
		 * (KVM commits flags after synchronize_srcu for the same reason).
		 */
		vmmu_synchronize_rcu();
		free(cur);
		if (!was && will && !dirty_init_set(vm))
			slot_write_protect(vm, &s);
		if (was && !will) {
			free(old->dirty_bitmap);
			/* Huge-page recovery: logging mapped everything at 4K; zap so
			 * the next faults map huge again where the slot allows. */
			if (old->host_level > PG_LEVEL_4K)
				zap_gfn_range(vm, old->base_gfn, old->base_gfn + old->npages, true);
		}
		break;
	}

	case MEMSLOT_DELETE:
	case MEMSLOT_MOVE:
		/*
		 * KVM's two-step update: first publish the slot as INVALID so
		 * new faults on it retry, wait for every reader of the old
		 * snapshot, then zap what the old slot mapped.  Only then can
		 * the final snapshot appear: no fault can have mapped the old
		 * location after the zap.
		 */
		s = *old;
		s.flags |= MEMSLOT_INVALID;
		mid = memslots_copy_update(cur, s.id, &s);
		if (!mid) {
			r = VMMU_ENOMEM;
			goto out;
		}
		s = *old;
		if (change == MEMSLOT_MOVE)
			s.base_gfn = req->gpa >> 12;
		s.flags = req->flags;
		/*
		 * A move builds the slot from the request, flags included (as
		 * KVM does), so it can start or stop logging.  The move zaps
		 * every mapping of the slot: nothing needs write-protecting.
		 */
		if (change == MEMSLOT_MOVE && !memslot_logging(old) && (req->flags & VMMU_MEM_LOG_DIRTY_PAGES) &&
		    (r = alloc_dirty_bitmap(vm, &s))) {
			free(mid);
			goto out;
		}
		if (change == MEMSLOT_MOVE && !(req->flags & VMMU_MEM_LOG_DIRTY_PAGES))
			s.dirty_bitmap = NULL;
		next = memslots_copy_update(mid, s.id, change == MEMSLOT_DELETE ? NULL : &s);
		if (!next) {
			if (s.dirty_bitmap != old->dirty_bitmap)
				free(s.dirty_bitmap);
			free(mid);
			r = VMMU_ENOMEM;
			goto out;
		}
		publish_memslots(vm, mid);
		vmmu_synchronize_rcu();
		free(cur);
		zap_gfn_range(vm, old->base_gfn, old->base_gfn + old->npages, true);
		if (vm->shadow) {
			/* Shadow pages of guest tables in the slot count on its
			 * write-track array: they go before it does (or moves). */
			vmmu_rcu_read_lock();
			pthread_rwlock_wrlock(&vm->mmu_lock);
			shadow_zap_slot_pages(vm, old->base_gfn, old->base_gfn + old->npages);
			pthread_rwlock_unlock(&vm->mmu_lock);
			vmmu_rcu_read_unlock();
		}
		publish_memslots(vm, next);
		vmmu_synchronize_rcu();
		if (change == MEMSLOT_DELETE) {
			/* mid still describes the deleted slot; nobody can reach it now. */
			struct memslot *dead = NULL;

			for (unsigned int i = 0; i < mid->n; i++)
				if (mid->slots[i].id == req->slot)
					dead = &mid->slots[i];
			if (dead) {
				memslot_free_backing(dead);
				free(dead->dirty_bitmap);
				shadow_slot_free(dead);
			}
		}
		/* A move that stopped logging: the old bitmap is unreachable now. */
		if (change == MEMSLOT_MOVE && memslot_logging(old) && !(req->flags & VMMU_MEM_LOG_DIRTY_PAGES))
			free(old->dirty_bitmap);
		free(mid);
		break;
	case MEMSLOT_NOCHANGE:
		break;
	}
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

VMMU_EXPORT int vmmu_memslot_hva(vmmu_vm *vm, uint32_t slot, void **hva)
{
	const struct memslot *s;
	int r = VMMU_ENOENT;

	if (!vm || !hva)
		return VMMU_EINVAL;
	pthread_mutex_lock(&vm->slots_lock);
	s = memslots_find_id(vm->memslots, slot);
	if (s) {
		*hva = (void *)s->hva;
		r = 0;
	}
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

VMMU_EXPORT int vmmu_gpa_to_hva(vmmu_vm *vm, uint64_t gpa, void **hva)
{
	const struct memslot *s;
	int r = VMMU_ENOENT;

	if (!vm || !hva)
		return VMMU_EINVAL;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	if (s && !(s->flags & MEMSLOT_INVALID)) {
		*hva = (void *)(memslot_gfn_to_hva(s, gpa >> 12) + (gpa & 0xfff));
		r = 0;
	}
	vmmu_rcu_read_unlock();
	return r;
}

/* ---- stats --------------------------------------------------------------- */

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
	if (vm->shadow) {
		/* Rmaps change under mmu_lock: aging through them takes it. */
		vmmu_rcu_read_lock();
		pthread_rwlock_wrlock(&vm->mmu_lock);
		*young_pages = shadow_age_gfn_range(vm, gfn_start, gfn_end, clear);
		pthread_rwlock_unlock(&vm->mmu_lock);
		vmmu_rcu_read_unlock();
		return 0;
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
		young = tdp_mmu_age_range(vm, root, gfn_start, gfn_end, clear);
	vmmu_rcu_read_unlock();
	if (root)
		tdp_mmu_put_root(vm, root);
	*young_pages = young;
	return 0;
}

VMMU_EXPORT int vmmu_audit(vmmu_vm *vm, char *why, size_t len)
{
	uint64_t counts[PG_LEVEL_1G + 1] = { 0 }, tables = 0;
	char scratch[256];
	int r = 0;

	if (!vm)
		return VMMU_EINVAL;
	if (!why || !len) {
		why = scratch;
		len = sizeof(scratch);
	}
	why[0] = 0;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (vm->root && tdp_mmu_audit(vm, vm->root, counts, &tables, why, len))
		r = VMMU_EIO;
	/* Obsolete roots keep their contents until their last vCPU drops them;
	 * checked the same way, but not part of the VM's page counts. */
	for (struct tdp_root *o = vm->obsolete_roots; o && !r; o = o->next_obsolete) {
		uint64_t old_counts[PG_LEVEL_1G + 1] = { 0 };

		if (tdp_mmu_audit(vm, o, old_counts, &tables, why, len))
			r = VMMU_EIO;
		tables++;
	}
	if (vm->shadow && shadow_audit(vm, counts, &tables, why, len))
		r = VMMU_EIO;
	for (int l = PG_LEVEL_4K; !r && l <= PG_LEVEL_1G; l++) {
		uint64_t stat = atomic_load(&vm->stat.pages[l]);

		if (stat != counts[l]) {
			snprintf(why, len, "%llu level-%d leaves mapped, stats say %llu", (unsigned long long)counts[l], l,
				 (unsigned long long)stat);
			r = VMMU_EIO;
		}
	}
	if (!r && vm->root && atomic_load(&vm->stat.pt_pages) < tables + 1) {
		snprintf(why, len, "%llu tables linked, stats say %llu", (unsigned long long)tables + 1,
			 (unsigned long long)atomic_load(&vm->stat.pt_pages));
		r = VMMU_EIO;
	}
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	return r;
}

VMMU_EXPORT void vmmu_set_trace(vmmu_vm *vm, vmmu_trace_fn fn, void *ctx)
{
	if (!vm)
		return;
	/* ctx first: a vCPU that sees the new fn must see its ctx. */
	atomic_store_explicit(&vm->trace_ctx, ctx, memory_order_relaxed);
	atomic_store_explicit(&vm->trace_fn, fn, memory_order_release);
}

VMMU_EXPORT void vmmu_vm_get_stats(vmmu_vm *vm, struct vmmu_vm_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->pages_4k = atomic_load(&vm->stat.pages[PG_LEVEL_4K]);
	out->pages_2m = atomic_load(&vm->stat.pages[PG_LEVEL_2M]);
	out->pages_1g = atomic_load(&vm->stat.pages[PG_LEVEL_1G]);
	out->pt_pages = atomic_load(&vm->stat.pt_pages);
	out->remote_tlb_flushes = atomic_load(&vm->stat.remote_tlb_flushes);
	out->zapped_sptes = atomic_load(&vm->stat.zapped_sptes);
	out->mmio_sptes_installed = atomic_load(&vm->stat.mmio_sptes);
	if (vm->shadow) {
		struct shadow_vm *sh = vm->shadow;

		out->shadow_pages = __atomic_load_n(&sh->nr_pages, __ATOMIC_RELAXED);
		out->shadow_unsync_pages = __atomic_load_n(&sh->nr_unsync, __ATOMIC_RELAXED);
		out->shadow_pages_created = atomic_load(&sh->created);
		out->shadow_pages_zapped = atomic_load(&sh->zapped);
		out->shadow_pages_recycled = atomic_load(&sh->recycled);
		out->shadow_pte_writes = atomic_load(&sh->pte_writes);
		out->shadow_flooded = atomic_load(&sh->flooded);
	}
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	out->memslot_generation = vm_memslots(vm)->generation;
	vmmu_rcu_read_unlock();
}
