/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "mmu/mmu.h"

#include <sys/mman.h>

#include "cpu/hw.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/attributes.h"
#include "test_hook.h"
#include "vm/trace.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int mmu_load(struct vmmu_vcpu *v)
{
	if (v->sh.mmu)
		return shadow_mmu_load(v);
	if (v->root && !atomic_load_explicit(&v->root->invalid, memory_order_acquire))
		return 0;
	mmu_unload(v);
	v->root = tdp_mmu_get_root(v->vm);
	if (!v->root)
		return VMMU_ENOMEM;
	v->hw = (struct hw_root){ .table = v->root->pt->spt, .level = v->root->level };
	v->mmu_ready = true;
	/* Nothing cached under the previous root may be used under this one. */
	hw_tlb_flush(v);
	STAT_INC(v->stat.mmu_reloads);
	if (unlikely(vm_tracing(v->vm))) {
		struct vmmu_trace_event ev = { .kind = VMMU_TRACE_ROOT_LOAD, .vcpu_id = v->id,
					       .level = (uint32_t)v->root->level };

		vm_trace(v->vm, &ev);
	}
	return 0;
}

/* Every root this vCPU holds goes: TDP, and both shadow contexts'. */
void mmu_unload(struct vmmu_vcpu *v)
{
	shadow_mmu_unload(v, true);
	v->mmu_ready = false;
	if (v->root) {
		tdp_mmu_put_root(v->vm, v->root);
		v->root = NULL;
	}
}

bool mmu_write_protect_tracked_gfn_locked(struct vmmu_vm *vm, gfn_t gfn)
{
	return vm->root && tdp_mmu_write_protect_gfn(vm, vm->root, gfn);
}

int mmu_count_pf_result(struct vmmu_vcpu *v, int r)
{
	switch (r) {
	case RET_PF_FIXED:
		STAT_INC(v->stat.pf_fixed);
		break;
	case RET_PF_SPURIOUS:
		STAT_INC(v->stat.pf_spurious);
		break;
	case RET_PF_RETRY:
		STAT_INC(v->stat.pf_retry);
		break;
	case RET_PF_EMULATE:
		STAT_INC(v->stat.pf_emulate);
		break;
	default:
		break;
	}
	return r;
}

/*
 * Host-side operations reach every table that can map a gfn: the TDP root
 * and the shadow pages (shadow paging's, or a TDP VM's shadow EPT/NPT for
 * nested guests, which map L1 gfns too).  The shadow side costs nothing
 * while no shadow page maps anything (its loops skip slots without rmaps).
 */
static bool __mmu_zap_gfn_range_locked(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	bool flush = shadow_zap_gfn_range(vm, start, end);

	return (vm->root && tdp_mmu_zap_leafs(vm, vm->root, start, end)) || flush;
}

bool mmu_zap_gfn_range_locked(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	struct vmmu_trace_event ev;
	uint64_t zapped;
	bool flush;

	if (likely(!vm_tracing(vm)))
		return __mmu_zap_gfn_range_locked(vm, start, end);
	/* Exact: every SPTE is zapped under the write side, which this holds. */
	zapped = atomic_load_explicit(&vm->stat.zapped_sptes, memory_order_relaxed);
	ev = (struct vmmu_trace_event){ .kind = VMMU_TRACE_ZAP_RANGE, .vcpu_id = VMMU_TRACE_NO_VCPU,
					.gpa = start << 12, .npages = end - start, .ts_ns = vm_trace_now() };
	flush = __mmu_zap_gfn_range_locked(vm, start, end);
	ev.dur_ns = vm_trace_now() - ev.ts_ns;
	ev.count = atomic_load_explicit(&vm->stat.zapped_sptes, memory_order_relaxed) - zapped;
	vm_trace(vm, &ev);
	return flush;
}

bool mmu_log_protect_range_locked(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	bool flush = shadow_wrprot_gfn_range(vm, start, end);

	return (vm->root && tdp_mmu_log_protect_range(vm, vm->root, start, end)) || flush;
}

bool mmu_log_protect_bitmap_locked(struct vmmu_vm *vm, gfn_t base, const uint64_t *bitmap, uint64_t nr_words)
{
	bool flush = shadow_wrprot_bitmap(vm, base, bitmap, nr_words);

	return (vm->root && tdp_mmu_log_protect_bitmap(vm, vm->root, base, bitmap, nr_words)) || flush;
}

__hot static const struct memslot *vcpu_gfn_to_memslot(struct vmmu_vcpu *v, const struct memslots *ms, gfn_t gfn)
{
	const struct memslot *s = v->last_slot.slot;

	/* The generation names one snapshot, so the cached pointer is valid
	 * exactly when the generations match. */
	if (s && v->last_slot.gen == ms->generation && memslot_contains(s, gfn))
		return s;
	s = memslots_find_gfn(ms, gfn);
	if (s) {
		v->last_slot.gen = ms->generation;
		v->last_slot.slot = s;
	}
	return s;
}

/*
 * Make the host page(s) behind a mapping exist, and learn whether the host
 * lets the guest write them (KVM's hva_to_pfn via get_user_pages).  touch:
 * of vmmu's own memory, the bytes to touch page by page -- the first page
 * of a mapping (a huge page's host fault brings all of it), or every page
 * of a fault-around window.
 */
__hot static int host_faultin(struct vmmu_vcpu *v, const struct memslot *s, uintptr_t hva, size_t size, size_t touch,
			bool write, bool *writable)
{
#ifndef VMMU_TSAN
	if (s->owned) {
		/*
		 * vmmu mapped this memory read-write and never changes that, so
		 * touching it is safe and costs exactly the host's own fault (a
		 * page already there costs nothing).  The atomic add of 0 forces
		 * a write fault without changing the data a racing guest access
		 * may be writing.
		 */
		for (size_t off = 0; off < touch; off += 4096) {
			if (write)
				__atomic_fetch_add((uint64_t *)(hva + off), 0, __ATOMIC_RELAXED);
			else
				(void)*(volatile const uint64_t *)(hva + off);
		}
		*writable = true;
		STAT_INC(v->stat.host_faultins);
		return 0;
	}
#endif
	/*
	 * The embedder's memory can be anything (read-only, unmapped, file
	 * backed): ask the kernel to populate it, which fails cleanly instead of
	 * raising SIGSEGV.  A read fault learns nothing about writability, so
	 * the mapping stays read-only until a write faults it in (as KVM does
	 * for a page the host has not yet made writable).
	 */
	/* Any failure (unmapped, not writable, SIGBUS-backed, no memory) means
	 * the guest cannot use this memory: the embedder gets a memory-fault
	 * exit, as KVM reports -EFAULT / KVM_EXIT_MEMORY_FAULT.  A fault-around
	 * window takes one call for all its pages instead of one per fault. */
	if (madvise((void *)hva, size, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ))
		return VMMU_EFAULT;
	*writable = write || s->owned;
	STAT_INC(v->stat.host_faultins);
	return 0;
}

/*
 * Fault-around (VMMU_VM_NO_FAULT_AROUND): a TDP fault at the gfn after the
 * last one this vCPU mapped continues a sequential first touch, so the rest
 * of its aligned VMMU_FAULT_AROUND_PAGES window (within the slot, hence
 * within one leaf table) will be touched next.  The window's end, or gfn + 1
 * for a fault that maps its page alone.  Not where mapping ahead changes
 * what the guest sees: logged slots (a page mapped writable unwritten would
 * dodge the log), private VMs (a neighbour may be private), VMs without A/D
 * (a mapping ahead would start access-tracked, saving nothing), or while
 * shadow pages may track guest tables (neighbours would escape tracking).
 */
static gfn_t fault_around_end(struct vmmu_vcpu *v, const struct memslot *s, const struct page_fault *fault)
{
	const struct vmmu_vm *vm = v->vm;
	gfn_t end;

	if (!fault->may_around || fault->goal_level != PG_LEVEL_4K || fault->gfn != v->fa_next_gfn ||
	    (vm->cfg.flags & VMMU_VM_NO_FAULT_AROUND) || !vm->fmt.ad_enabled || memslot_logging(s) ||
	    vm->shared_mask || __atomic_load_n(&vm->shadow->nr_pages, __ATOMIC_RELAXED))
		return fault->gfn + 1;
	end = (fault->gfn | (VMMU_FAULT_AROUND_PAGES - 1)) + 1;
	return end < s->base_gfn + s->npages ? end : s->base_gfn + s->npages;
}

__hot int mmu_faultin(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	const struct memslots *ms = vm_memslots(vm);
	const struct memslot *s = vcpu_gfn_to_memslot(v, ms, fault->gfn);
	uint64_t pages, base_gfn;
	bool writable = false;
	int r;

	if (!s) {
		fault->is_mmio = true;
		fault->goal_level = PG_LEVEL_4K;
		fault->mmio_gen = ms->generation;
		/* Gfns beyond what an MMIO SPTE can hold are not cached. */
		if (fault->gfn >= MMIO_SPTE_MAX_GFN)
			return RET_PF_EMULATE;
		return RET_PF_CONTINUE;
	}
	/* Being deleted or moved: wait for the new snapshot. */
	if (s->flags & MEMSLOT_INVALID)
		return RET_PF_RETRY;
	if (fault->write && (s->flags & VMMU_MEM_READONLY)) {
		fault->readonly_write = true;
		return RET_PF_EMULATE;
	}

	/* Sampled before the host page is touched: an invalidation racing
	 * with the fault-in is then always noticed under mmu_lock.  (A private
	 * VM samples it earlier, before the attributes it read.) */
	if (!fault->mmu_seq_valid)
		fault->mmu_seq = inv_sample(&vm->inv);
	fault->slot = s;
	/* A logged slot is mapped at 4K, so one write dirties one page. */
	fault->max_level = memslot_max_mapping_level(s, fault->gfn,
						     memslot_logging(s) ? PG_LEVEL_4K : vm->max_level);
	if (fault->level_cap && fault->max_level > fault->level_cap)
		fault->max_level = fault->level_cap;
	fault->goal_level = fault->max_level;

	/* What the embedder told us the host allows here: gone is a memory
	 * fault; read-only faults writes and maps reads without W.  A mapping
	 * never spans a protection change (goal level shrinks until uniform). */
	{
		const struct hostprot_set *hs = atomic_load_explicit(&vm->hostprot, memory_order_acquire);
		unsigned int prot;

		for (;;) {
			pages = spte_level_pages(fault->goal_level);
			base_gfn = fault->gfn & ~(pages - 1);
			fault->hva = memslot_gfn_to_hva(s, base_gfn);
			if (hostprot_uniform(hs, fault->hva, pages << 12, &prot) || fault->goal_level == PG_LEVEL_4K)
				break;
			fault->goal_level--;
		}
		if (atomic_load_explicit(&vm->released, memory_order_acquire))
			prot = VMMU_HOST_NONE;
		if (prot == VMMU_HOST_NONE || (prot == VMMU_HOST_RO && fault->write)) {
			fault->host_error = VMMU_EFAULT;
			return RET_PF_FAULT;
		}
		{
			uint64_t t0 = vcpu_clock(v);
			gfn_t end = fault_around_end(v, s, fault);
			unsigned int p2;

			fault->around_end = fault->gfn + 1;
			r = VMMU_EFAULT;
			/* The window, where the host allows the same over all of
			 * it; on any failure (a kernel without MADV_POPULATE_*, a
			 * window part of which the embedder unmapped) the page
			 * alone, which says what failed. */
			if (end > fault->gfn + 1 && hostprot_uniform(hs, fault->hva, (end - fault->gfn) << 12, &p2) &&
			    p2 == prot)
				r = host_faultin(v, s, fault->hva, (end - fault->gfn) << 12, (end - fault->gfn) << 12,
						 fault->write, &writable);
			if (!r)
				fault->around_end = end;
			else
				r = host_faultin(v, s, fault->hva, pages << 12, 4096, fault->write, &writable);
			VCPU_TIME_ADD(v, time_faultin_ns, t0);
		}
		if (r) {
			fault->host_error = r;
			return RET_PF_FAULT;
		}
		v->fa_next_gfn = fault->around_end > fault->gfn + 1 ? fault->around_end : base_gfn + pages;
		if (prot == VMMU_HOST_RO)
			writable = false;
	}
	fault->pfn = fault->hva >> 12;
	fault->map_writable = writable && !(s->flags & VMMU_MEM_READONLY);
	vmmu_test_hook(VMMU_TEST_HOOK_FAULTIN_DONE, fault->gfn);
	return RET_PF_CONTINUE;
}

/*
 * After the fault's own page, the rest of its fault-around window, in the
 * same install section: only if the page went in at 4K, nothing tracks
 * guest tables yet (a shadow page appears under the write side, which
 * write-protects what it tracks after this), and no invalidation touched
 * the window since the sample.
 */
static void mmu_map_around(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	uintptr_t hva = memslot_gfn_to_hva(fault->slot, fault->gfn + 1);

	if (fault->goal_level != PG_LEVEL_4K || fault->write_tracked ||
	    __atomic_load_n(&vm->shadow->nr_pages, __ATOMIC_RELAXED) ||
	    inv_retry(&vm->inv, fault->mmu_seq, hva, (fault->around_end - fault->gfn - 1) << 12))
		return;
	STAT_ADD(v->stat.fault_around_pages, tdp_mmu_map_around(v, fault, fault->gfn + 1, fault->around_end));
}

__hot static bool is_page_fault_stale(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;

	if (atomic_load_explicit(&v->root->invalid, memory_order_acquire))
		return true;
	/* MMIO SPTEs are validated by the memslot generation instead. */
	if (fault->is_mmio)
		return false;
	if (!mmu_invalidate_retry(vm, fault))
		return false;
	/*
	 * A huge mapping would cover an invalidated range, but perhaps not
	 * this page: map the page alone rather than wait for a range the
	 * access does not touch.  The host fault-in covered the huge range,
	 * so it covered the page, and one protection held over all of it.
	 */
	if (fault->goal_level > PG_LEVEL_4K && !fault->is_private) {
		/* (Not a private page: its frame is not the slot's hva.) */
		uintptr_t hva = memslot_gfn_to_hva(fault->slot, fault->gfn);

		if (!inv_retry(&vm->inv, fault->mmu_seq, hva, 4096)) {
			fault->goal_level = PG_LEVEL_4K;
			fault->hva = hva;
			fault->pfn = hva >> 12;
			return false;
		}
	}
	return true;
}

__hot bool mmu_invalidate_retry(struct vmmu_vm *vm, const struct page_fault *fault)
{
	/*
	 * KVM's mmu_invalidate_retry_gfn(), per range: an invalidation of the
	 * mapping's hva range in progress, or one of it that ended since the
	 * sequence was sampled (its zap may have run after our host fault-in).
	 * Invalidations of other ranges do not concern this fault.
	 */
	return inv_retry(&vm->inv, fault->mmu_seq, fault->hva, spte_level_pages(fault->goal_level) << 12);
}

/*
 * A reserved-bit exit: normally an MMIO SPTE, answered without the slow
 * path when its generation is current (KVM's handle_mmio_page_fault).
 */
static int handle_mmio_page_fault(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	int level;
	uint64_t spte = tdp_mmu_get_spte(vm, v->root, fault->gfn, &level);

	if (is_mmio_spte(&vm->fmt, spte)) {
		uint64_t gen = vm_memslots(vm)->generation;

		if (!mmio_spte_gen_matches(spte, gen))
			return RET_PF_INVALID;
		if (VM_BUG_ON(vm, get_mmio_spte_gfn(spte) != fault->gfn, "MMIO SPTE gfn %#llx for gfn %#llx",
			      (unsigned long long)get_mmio_spte_gfn(spte), (unsigned long long)fault->gfn))
			return RET_PF_RETRY;
		fault->is_mmio = true;
		return RET_PF_EMULATE;
	}
	/* Changed since the hardware looked: just try again. */
	if (!spte_is_hw_present(&vm->fmt, spte) || !spte_is_hw_reserved(&vm->fmt, spte, level))
		return RET_PF_RETRY;
	VM_BUG_ON(vm, true, "reserved bits in SPTE %#llx (L%d) for gfn %#llx", (unsigned long long)spte, level,
		  (unsigned long long)fault->gfn);
	return RET_PF_RETRY;
}

__hot /* ---- the fast page fault (seed 002) ----------------------------------------- */

static bool spte_allows(const struct spte_fmt *f, uint64_t spte, const struct page_fault *fault)
{
	unsigned int acc = spte_access(f, spte);

	if (fault->write && !(acc & ACC_WRITE))
		return false;
	if (fault->exec && !(acc & ACC_EXEC))
		return false;
	return spte_is_hw_present(f, spte);
}

/*
 * Faults the fast path may fix: a write to a present page (write-protected
 * for dirty logging), or, without A/D bits, an access-tracked SPTE (which
 * hardware sees as not present).  Never MMIO (reserved bits).
 */
static bool page_fault_can_be_fast(const struct vmmu_vm *vm, const struct page_fault *fault)
{
	if (fault->rsvd)
		return false;
	if (!fault->present)
		return !vm->fmt.ad_enabled;
	return fault->write;
}

void mmu_trace_fast_pf(struct vmmu_vcpu *v, uint64_t addr, uint32_t error_code, const uint64_t *sptep, uint64_t old,
		       uint64_t new_spte, bool fixed)
{
	struct vmmu_trace_event ev;

	if (likely(!vm_tracing(v->vm)))
		return;
	ev = (struct vmmu_trace_event){
		.kind = VMMU_TRACE_FAST_PAGE_FAULT,
		.vcpu_id = v->id,
		.gpa = addr,
		.error_code = error_code,
		.spurious = !fixed,
		.fixed = fixed,
		.sptep = sptep,
		.old_spte = old,
		.new_spte = new_spte,
	};
	vm_trace(v->vm, &ev);
}

void mmu_trace_pf(struct vmmu_vcpu *v, uint64_t t0, uint64_t addr, uint32_t error_code, int r, int level,
		  uint32_t flags)
{
	static const uint8_t result[] = {
		[RET_PF_RETRY] = VMMU_TRACE_PF_RETRY,	     [RET_PF_EMULATE] = VMMU_TRACE_PF_EMULATE,
		[RET_PF_FIXED] = VMMU_TRACE_PF_FIXED,	     [RET_PF_SPURIOUS] = VMMU_TRACE_PF_SPURIOUS,
		[RET_PF_FAULT] = VMMU_TRACE_PF_HOST_FAULT, [RET_PF_GUEST_FAULT] = VMMU_TRACE_PF_GUEST_FAULT,
	};
	struct vmmu_trace_event ev = {
		.kind = VMMU_TRACE_PAGE_FAULT,
		.vcpu_id = v->id,
		.gpa = addr,
		.error_code = error_code,
		.fixed = r == RET_PF_FIXED,
		.spurious = r == RET_PF_SPURIOUS,
		.ts_ns = t0,
		.dur_ns = vm_trace_now() - t0,
		.result = r >= 0 && (size_t)r < sizeof(result) ? result[r] : 0,
		.level = r == RET_PF_FIXED && level > 0 ? (uint32_t)level : 0,
		.flags = flags,
	};

	vm_trace(v->vm, &ev);
}

/*
 * Fix the fault without mmu_lock (KVM's fast_page_fault): inside the RCU
 * read section the fault already holds, find the leaf SPTE and, if all that
 * stands between the access and the page is the W bit cleared for dirty
 * logging (MMU-writable still set) or access tracking, put it back with one
 * cmpxchg.  The cmpxchg fails if anything changed the SPTE since it was
 * read: a zap, a write-protection, the hardware setting A/D; the path then
 * re-reads a few times and otherwise leaves the fault to the slow path.
 */
static int fast_page_fault(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	const struct spte_fmt *f = &vm->fmt;
	const struct memslot *slot;
	uint64_t *sptep, spte = 0, new_spte = 0;
	int level, ret = RET_PF_INVALID;

	if (!page_fault_can_be_fast(vm, fault) || !v->root)
		return RET_PF_INVALID;
	slot = vcpu_gfn_to_memslot(v, vm_memslots(vm), fault->gfn);
	if (!slot || (slot->flags & MEMSLOT_INVALID))
		return RET_PF_INVALID;

	sptep = tdp_mmu_fast_pf_get_last_sptep(vm, v->root, fault->gfn, &spte, &level);
	for (int retry = 0; retry < 4; retry++) {
		if (!sptep || !is_mmu_present_spte(spte) || !is_last_spte(f, spte, level))
			break;
		/* Another vCPU (or an earlier exit of this one) got here first. */
		if (spte_allows(f, spte, fault)) {
			ret = RET_PF_SPURIOUS;
			new_spte = spte;
			break;
		}
		new_spte = spte;
		if (is_access_track_spte(f, spte))
			new_spte = restore_acc_track_spte(f, new_spte);
		if (fault->write && is_mmu_writable_spte(f, spte)) {
			/* A huge SPTE of a logged slot must be split, which is the
			 * slow path's job: W on it would dirty 512 pages unseen. */
			if (level > PG_LEVEL_4K && memslot_logging(slot))
				break;
			new_spte |= f->writable;
		}
		if (new_spte == spte || !spte_allows(f, new_spte, fault))
			break;
		if (atomic_compare_exchange_strong_explicit((_Atomic uint64_t *)sptep, &spte, new_spte,
							    memory_order_acq_rel, memory_order_acquire)) {
			/* After the cmpxchg, never before: see tdp_mmu_map's marking. */
			if (is_writable_pte(f, new_spte) && !is_writable_pte(f, spte) && memslot_logging(slot))
				vcpu_mark_page_dirty(v, slot, fault->gfn);
			ret = RET_PF_FIXED;
			break;
		}
		/* spte now holds the current value: try again with it. */
	}
	if (ret != RET_PF_INVALID)
		mmu_trace_fast_pf(v, fault->addr, fault->error_code, sptep, spte, new_spte, ret == RET_PF_FIXED);
	return ret;
}

/*
 * Write tracking under TDP (the tables a nested guest's shadow EPT/NPT is
 * built from live in L1's memory, which this root maps): decided under
 * mmu_lock, either side, since counts change only under the write side.  A
 * huge mapping must not cover a tracked gfn, and a tracked gfn is mapped
 * without W.  Returns true for a write to a tracked gfn, which needs the
 * write side (tdp_tracked_write_fault).
 */
static bool tdp_fault_tracking(struct vmmu_vm *vm, struct page_fault *fault)
{
	const struct memslot *s = fault->slot;

	fault->write_tracked = false;
	/* A VM that never shadowed anything pays one load. */
	if (fault->is_mmio || !__atomic_load_n(&vm->shadow->nr_pages, __ATOMIC_RELAXED))
		return false;
	while (fault->goal_level > PG_LEVEL_4K && shadow_lpage_tracked(s, fault->gfn, fault->goal_level)) {
		fault->goal_level--;
		fault->hva = memslot_gfn_to_hva(s, fault->gfn & ~(spte_level_pages(fault->goal_level) - 1));
		fault->pfn = fault->hva >> 12;
	}
	fault->write_tracked = shadow_gfn_write_tracked(s, fault->gfn);
	return fault->write && fault->write_tracked;
}

/*
 * L1 writes a table its nested guest's shadow pages shadow.  Under the
 * write side: if those pages are all leaves they go out of sync and the gfn
 * is mapped writable (L1 then edits it with plain stores until an INVEPT or
 * a root load syncs them, which the architecture allows: EPT entries may be
 * cached until invalidated); otherwise it is mapped read-only and the store
 * is emulated, under this lock again, so that every shadow page hears of it.
 */
static int tdp_tracked_write_fault(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	int r;

	pthread_rwlock_wrlock(&vm->mmu_lock);
	/* An install like any other: invalidations wait it out (mmu_page_fault). */
	vcpu_install_begin(v);
	if (is_page_fault_stale(v, fault)) {
		r = RET_PF_RETRY;
	} else {
		tdp_fault_tracking(vm, fault);
		if (fault->write_tracked && shadow_gfn_try_unsync(vm, fault->gfn))
			fault->write_tracked = false;
		r = tdp_mmu_map(v, fault);
		if (fault->write_tracked && (r == RET_PF_FIXED || r == RET_PF_SPURIOUS)) {
			fault->ptwrite = true;
			fault->hva = memslot_gfn_to_hva(fault->slot, fault->gfn) + (fault->addr & 0xfff);
			r = RET_PF_EMULATE;
		}
	}
	vcpu_install_end(v);
	pthread_rwlock_unlock(&vm->mmu_lock);
	return r;
}

static int __mmu_page_fault(struct vmmu_vcpu *v, gpa_t gpa, uint32_t error_code, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	int r;

	*fault = (struct page_fault){
		.addr = gpa,
		.gfn = (gpa & ~vm->shared_mask) >> 12,
		.error_code = error_code,
		.present = error_code & PFERR_PRESENT_MASK,
		.write = error_code & PFERR_WRITE_MASK,
		.exec = error_code & PFERR_FETCH_MASK,
		.rsvd = error_code & PFERR_RSVD_MASK,
		.is_private = vm_gpa_is_private(vm, gpa),
		.may_around = true,
	};
	STAT_INC(v->stat.pf_taken);

	/*
	 * The module builds every entry of the private table itself, so the
	 * hardware finding one malformed is an invariant break, and nothing
	 * private is MMIO.
	 */
	if (unlikely(fault->is_private) && fault->rsvd) {
		VM_BUG_ON(vm, true, "malformed private-table entry for gpa %#llx", (unsigned long long)gpa);
		r = RET_PF_RETRY;
		goto out;
	}
	if (fault->rsvd) {
		r = handle_mmio_page_fault(v, fault);
		if (r == RET_PF_EMULATE) {
			STAT_INC(v->stat.pf_mmio_spte);
			STAT_INC(v->stat.pf_emulate);
			return r;
		}
		if (r != RET_PF_INVALID)
			goto out;
	}

	/* The fast path never runs on private pages: nothing fixes a private
	 * SPTE without the frozen protocol and its op. */
	if (!(vm->cfg.flags & VMMU_VM_NO_FAST_PF) && !fault->is_private && page_fault_can_be_fast(vm, fault)) {
		r = fast_page_fault(v, fault);
		if (r == RET_PF_FIXED) {
			STAT_INC(v->stat.pf_fast_fixed);
			goto out;
		}
		if (r == RET_PF_SPURIOUS) {
			STAT_INC(v->stat.pf_fast_spurious);
			goto out;
		}
		STAT_INC(v->stat.pf_fast_failed);
	}

	if (unlikely(vm->shared_mask)) {
		r = fault->is_private ? private_faultin(v, fault) : private_check_shared(v, fault);
		if (r != RET_PF_CONTINUE)
			goto out;
	}
	if (!fault->is_private) {
		r = mmu_faultin(v, fault);
		if (r != RET_PF_CONTINUE)
			goto out;
	}

	if (pt_cache_topup(&vm->arena, &v->pt_cache, PT_CACHE_MIN)) {
		fault->host_error = VMMU_ENOMEM;
		r = RET_PF_FAULT;
		goto out;
	}

	pthread_rwlock_rdlock(&vm->mmu_lock);
	/* The check and the install, as one section an invalidation waits out
	 * if it began before the check could see it (vcpu_install_begin). */
	vcpu_install_begin(v);
	if (is_page_fault_stale(v, fault))
		r = RET_PF_RETRY;
	else if (!tdp_fault_tracking(vm, fault))
		r = tdp_mmu_map(v, fault);
	else
		r = RET_PF_CONTINUE;
	if (fault->around_end > fault->gfn + 1 && (r == RET_PF_FIXED || r == RET_PF_SPURIOUS))
		mmu_map_around(v, fault);
	vcpu_install_end(v);
	pthread_rwlock_unlock(&vm->mmu_lock);
	if (r == RET_PF_CONTINUE)
		r = tdp_tracked_write_fault(v, fault);

out:
	return mmu_count_pf_result(v, r);
}

int mmu_page_fault(struct vmmu_vcpu *v, gpa_t gpa, uint32_t error_code, struct page_fault *fault)
{
	uint64_t t0;
	int r;

	if (likely(!vm_tracing(v->vm)))
		return __mmu_page_fault(v, gpa, error_code, fault);
	t0 = vm_trace_now();
	r = __mmu_page_fault(v, gpa, error_code, fault);
	mmu_trace_pf(v, t0, gpa, error_code, r, fault->goal_level, 0);
	return r;
}
