/* SPDX-License-Identifier: MIT */
#include "mmu/tdp/tdp_mmu.h"

#include <string.h>

#include "mmu/tdp/mirror.h"
#include "mmu/tdp/tdp_iter.h"

static void handle_removed_pt(struct vmmu_vm *vm, uint64_t *pt, bool shared);

/* Results of an SPTE change besides success (0) and an external op's
 * negative VMMU_E* error. */
#define SPTE_SET_RACE 1	/* the cmpxchg lost: it->old_spte holds the current value */

/* Whether the walk is over the mirror root (never for VMs that are not private). */
static inline bool tdp_iter_is_mirror(const struct vmmu_vm *vm, const struct tdp_iter *it)
{
	return vm->mirror_root && it->pt_path[it->root_level] == vm->mirror_root->pt->spt;
}

static inline _Atomic uint64_t *atomic_sptep(uint64_t *sptep)
{
	return (_Atomic uint64_t *)sptep;
}

/*
 * Bookkeeping for one SPTE change, whoever made it (KVM's
 * handle_changed_spte()).  Runs after the change is visible.
 */
__hot static void handle_changed_spte(struct vmmu_vm *vm, uint64_t gfn, uint64_t old, uint64_t new, int level,
				bool shared, bool mirror)
{
	const struct spte_fmt *f = &vm->fmt;
	bool was_present = is_mmu_present_spte(old);
	bool is_present = is_mmu_present_spte(new);
	bool was_leaf = was_present && is_last_spte(f, old, level);
	bool is_leaf = is_present && is_last_spte(f, new, level);

	(void)gfn;
	if (old == new)
		return;
	if (is_leaf && VM_BUG_ON(vm, !spte_writable_bits_legal(f, new),
				    "illegal writable bits %#llx at gfn %#llx", (unsigned long long)new,
				    (unsigned long long)gfn))
		return;
	/*
	 * A table is never replaced by another table in place: that would need
	 * the old one's entries migrated, and nothing here does that.
	 */
	if (was_present && is_present && !was_leaf && !is_leaf &&
	    VM_BUG_ON(vm, spte_to_pfn(old) != spte_to_pfn(new), "table replaced by table at gfn %#llx L%d",
		      (unsigned long long)gfn, level))
		return;

	if (unlikely(mirror)) {
		/* The mirror's leaves are counted apart: the shared root's
		 * counts stay what they always were. */
		if (was_leaf && level <= PG_LEVEL_1G)
			atomic_fetch_sub_explicit(&vm->stat.private_pages[level], 1, memory_order_relaxed);
		if (is_leaf && level <= PG_LEVEL_1G)
			atomic_fetch_add_explicit(&vm->stat.private_pages[level], 1, memory_order_relaxed);
	} else {
		if (was_leaf && level <= PG_LEVEL_1G && !vm->tdp_teardown)
			atomic_fetch_sub_explicit(&vm->stat.pages[level], 1, memory_order_relaxed);
		if (is_leaf && level <= PG_LEVEL_1G)
			atomic_fetch_add_explicit(&vm->stat.pages[level], 1, memory_order_relaxed);
	}
	if (was_present && !is_present)
		VM_STAT_ADD(vm->stat.zapped_sptes, 1);
	if (is_mmio_spte(f, new) && !is_frozen_spte(new))
		VM_STAT_ADD(vm->stat.mmio_sptes, 1);

	if (was_present && !was_leaf && (!is_present || is_leaf))
		handle_removed_pt(vm, spte_to_child_pt(old), shared);
}

/*
 * A table was unlinked.  Freeze every entry: a fault that walked into this
 * table before it was unlinked must fail its cmpxchg rather than install a
 * mapping no one can see (and no zap would ever remove).  The exchange also
 * collects A/D bits the hardware set up to the last moment.
 */
static void handle_removed_pt(struct vmmu_vm *vm, uint64_t *pt, bool shared)
{
	struct pt_page *sp = pt_page_of(&vm->arena, pt);
	int level = sp->level;
	bool mirror = sp->is_mirror;

	if (VM_BUG_ON(vm, !pt_arena_contains(&vm->arena, pt), "removed table %p outside the arena", (void *)pt))
		return;
	for (int i = 0; i < PT64_ENT_PER_PAGE; i++) {
		uint64_t gfn = sp->gfn + (uint64_t)i * spte_level_pages(level);
		uint64_t old;

		for (;;) {
			old = atomic_exchange_explicit(atomic_sptep(&pt[i]), FROZEN_SPTE, memory_order_acq_rel);
			/* Another thread froze it for its own change; wait until it is done. */
			if (!is_frozen_spte(old))
				break;
			if (!shared) {
				VM_BUG_ON(vm, true, "frozen SPTE under exclusive mmu_lock, gfn %#llx",
					  (unsigned long long)gfn);
				break;
			}
			caa_cpu_relax();
		}
		/*
		 * A mirror table is unlinked only at teardown (mirror.h): each
		 * leaf under it leaves the private table as it leaves the
		 * mirror, and the table itself once it is empty (below).  The
		 * module reclaims what an op refuses, so errors leak nothing.
		 */
		if (unlikely(mirror) && is_mmu_present_spte(old) && is_last_spte(&vm->fmt, old, level))
			(void)mirror_propagate(vm, gfn, old, SPTE_NONPRESENT, level);
		handle_changed_spte(vm, gfn, old, FROZEN_SPTE, level, shared, mirror);
	}
	if (unlikely(mirror)) {
		mirror_free_table(vm, sp->gfn, level + 1);
		atomic_fetch_sub_explicit(&vm->stat.mirror_pt_pages, 1, memory_order_relaxed);
	} else {
		atomic_fetch_sub_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
	}
	pt_page_free_rcu(sp);
}

/*
 * The frozen protocol (seed 001's tdp_mmu_set_spte_atomic; mirror.h): a
 * mirror SPTE and the private table change together.  The cmpxchg to FROZEN
 * claims the entry against every other fault (they see FROZEN and retry;
 * none waits inside the op), the op changes the private table, and the
 * release store of the final value publishes both.  An op that fails gets
 * the old value back: nobody else can have written the entry meanwhile.
 * FROZEN is not present to any walker, and the hardware never walks the
 * mirror, so the frozen window hides nothing from a vCPU: the private
 * table it walks is changed by the op alone.  This composes with
 * handle_removed_pt(), which freezes the children of unlinked tables: that
 * happens under the write side, where no fault holds a mirror entry frozen.
 */
static int mirror_set_spte_atomic(struct vmmu_vm *vm, struct tdp_iter *it, uint64_t new_spte)
{
	uint64_t old = it->old_spte;
	int r;

	if (VM_BUG_ON(vm, is_frozen_spte(old) || is_frozen_spte(new_spte), "frozen mirror SPTE in a change at gfn %#llx",
		      (unsigned long long)it->gfn))
		return SPTE_SET_RACE;
	if (!atomic_compare_exchange_strong_explicit(atomic_sptep(it->sptep), &it->old_spte, FROZEN_SPTE,
						     memory_order_acq_rel, memory_order_acquire))
		return SPTE_SET_RACE;
	r = mirror_propagate(vm, it->gfn, old, new_spte, it->level);
	if (r) {
		atomic_store_explicit(atomic_sptep(it->sptep), old, memory_order_release);
		it->old_spte = old;
		return r;
	}
	atomic_store_explicit(atomic_sptep(it->sptep), new_spte, memory_order_release);
	handle_changed_spte(vm, it->gfn, old, new_spte, it->level, true, true);
	it->old_spte = new_spte;
	return 0;
}

/*
 * Install new_spte where iter points, if the entry still holds
 * iter->old_spte: 0, SPTE_SET_RACE (iter->old_spte then holds the current
 * value), or on the mirror an external op's error (nothing changed).
 */
__hot static int tdp_mmu_set_spte_atomic(struct vmmu_vm *vm, struct tdp_iter *it, uint64_t new_spte)
{
	uint64_t old = it->old_spte;

	if (unlikely(tdp_iter_is_mirror(vm, it)))
		return mirror_set_spte_atomic(vm, it, new_spte);
	if (!atomic_compare_exchange_strong_explicit(atomic_sptep(it->sptep), &it->old_spte, new_spte,
						     memory_order_acq_rel, memory_order_acquire))
		return SPTE_SET_RACE;
	handle_changed_spte(vm, it->gfn, old, new_spte, it->level, true, false);
	it->old_spte = new_spte;
	return 0;
}

/* Exclusive-mode write: still an exchange, the hardware may be setting A/D. */
static uint64_t tdp_mmu_set_spte(struct vmmu_vm *vm, struct tdp_iter *it, uint64_t new_spte)
{
	uint64_t old = atomic_exchange_explicit(atomic_sptep(it->sptep), new_spte, memory_order_acq_rel);

	handle_changed_spte(vm, it->gfn, old, new_spte, it->level, false, false);
	it->old_spte = new_spte;
	return old;
}

/*
 * The mirror under the write side: nothing else can touch the entry, so
 * the op runs first and the SPTE changes only if it succeeded (a leaf that
 * goes; a table that goes is emptied, and its children leave the private
 * table, in handle_removed_pt).  0 or the op's error.
 */
static int mirror_set_spte(struct vmmu_vm *vm, struct tdp_iter *it, uint64_t new_spte)
{
	uint64_t old = it->old_spte;
	int r;

	if (is_mmu_present_spte(old) && is_last_spte(&vm->fmt, old, it->level)) {
		r = mirror_propagate(vm, it->gfn, old, new_spte, it->level);
		if (r && !vm->mirror_teardown)
			return r;
	}
	old = atomic_exchange_explicit(atomic_sptep(it->sptep), new_spte, memory_order_acq_rel);
	handle_changed_spte(vm, it->gfn, old, new_spte, it->level, false, true);
	it->old_spte = new_spte;
	return 0;
}

__hot __hot static int tdp_mmu_map_handle_target_level(struct vmmu_vcpu *v, struct page_fault *fault, struct tdp_iter *it)
{
	struct vmmu_vm *vm = v->vm;
	const struct spte_fmt *f = &vm->fmt;
	uint64_t old = it->old_spte;
	uint64_t new_spte;
	bool flush;
	int r;

	if (is_frozen_spte(old))
		return RET_PF_RETRY;
	if (fault->is_mmio) {
		new_spte = make_mmio_spte(f, fault->gfn, ACC_ALL, fault->mmio_gen);
	} else {
		new_spte = make_leaf_spte(f, fault->pfn, it->level, fault->write_tracked ? ACC_ALL & ~ACC_WRITE : ACC_ALL,
					  fault->map_writable, false);
		/*
		 * Another vCPU may have installed the same mapping; if what is
		 * there already allows this access, leave it (and its A/D bits).
		 */
		if (is_mmu_present_spte(old) && is_last_spte(f, old, it->level) && spte_is_hw_present(f, old) &&
		    spte_to_pfn(old) == spte_to_pfn(new_spte) && (!fault->write || is_writable_pte(f, old)))
			return RET_PF_SPURIOUS;
	}
	if (old == new_spte)
		return RET_PF_SPURIOUS;

	/*
	 * Replacing a present leaf that maps a different frame, or a table
	 * (whose translations live on in TLBs and paging-structure caches),
	 * needs a flush before anyone can rely on the new entry.  Upgrading
	 * permissions of the same frame does not: a stale, less permissive TLB
	 * entry only causes another walk.
	 */
	flush = is_mmu_present_spte(old) &&
		(!is_last_spte(f, old, it->level) || spte_to_pfn(old) != spte_to_pfn(new_spte));

	r = tdp_mmu_set_spte_atomic(vm, it, new_spte);
	if (r) {
		if (r == SPTE_SET_RACE)
			return RET_PF_RETRY;
		/* The module refused: nothing changed; the access exits. */
		fault->host_error = r;
		return RET_PF_FAULT;
	}
	/*
	 * Marked after the SPTE became writable, never before: a harvest that
	 * cleared the bit in between would otherwise leave a writable SPTE
	 * whose writes no bitmap ever sees (the lost-dirty-bit race).
	 */
	if (!fault->is_mmio && is_writable_pte(f, new_spte) && memslot_logging(fault->slot) && !vm_pml(vm))
		vcpu_mark_page_dirty(v, fault->slot, fault->gfn);
	/*
	 * With PML the page is not marked here: make_leaf_spte() never sets D,
	 * so the first write through this SPTE sets D in the hardware walk,
	 * which logs it.  Marking too would report pages that are only read,
	 * and double what a window can push into a dirty ring.
	 */
	if (flush)
		vm_flush_remote_tlbs(vm);
	return fault->is_mmio ? RET_PF_EMULATE : RET_PF_FIXED;
}

/* Fill a new child table so that it maps exactly what the huge SPTE mapped. */
static void tdp_fill_split_child(struct vmmu_vm *vm, struct pt_page *sp, uint64_t huge_spte, int huge_level)
{
	const struct spte_fmt *f = &vm->fmt;
	uint64_t set = 0, clear = 0;

	/*
	 * PML: a huge leaf of a logged slot is write-protected only because it
	 * must not be dirtied whole.  Its 4K children get W back with D clear,
	 * which is exactly the state logging wants (each child's first write
	 * sets D and logs that one page), so a 2M page costs one write fault
	 * rather than 512.  MMU- and host-writable say W may come back, as for
	 * the fast page fault.
	 */
	if (vm_pml(vm) && huge_level - 1 == PG_LEVEL_4K && !is_writable_pte(f, huge_spte) &&
	    is_mmu_writable_spte(f, huge_spte) && is_host_writable_spte(f, huge_spte)) {
		set = f->writable;
		clear = f->dirty;
	}
	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++)
		sp->spt[i] = (make_small_spte_from_huge(f, huge_spte, huge_level, i) | set) & ~clear;
}

/*
 * Link a new child table where it points, in place of an empty entry or of
 * a huge leaf it splits (then filled to map exactly what the leaf mapped).
 * The one place both the fault path and eager splitting account a new
 * table: handle_changed_spte() counts a replaced huge leaf out, and its 512
 * children are counted in here.  On a lost cmpxchg (another fault, or the
 * hardware setting A/D on the huge leaf) nothing is linked, the child is
 * zeroed again and it->old_spte holds the current value.
 */
static int tdp_link_child(struct vmmu_vm *vm, struct tdp_iter *it, struct pt_page *sp)
{
	bool split = is_mmu_present_spte(it->old_spte);
	bool mirror = tdp_iter_is_mirror(vm, it);
	int r;

	sp->gfn = it->gfn;
	sp->level = it->level - 1;
	/* The role of the table: the mirror's tables are the mirror's. */
	sp->is_mirror = mirror;
	if (split)
		tdp_fill_split_child(vm, sp, it->old_spte, it->level);
	/* On the mirror this is a link, or for a split a demotion (mirror.c). */
	r = tdp_mmu_set_spte_atomic(vm, it, make_nonleaf_spte(&vm->fmt, (uintptr_t)sp->spt >> 12));
	if (r) {
		if (split)
			memset(sp->spt, 0, 4096);
		sp->is_mirror = false;
		return r;
	}
	if (mirror) {
		atomic_fetch_add_explicit(&vm->stat.mirror_pt_pages, 1, memory_order_relaxed);
		if (split) {
			atomic_fetch_add_explicit(&vm->stat.private_pages[it->level - 1], PT64_ENT_PER_PAGE,
						  memory_order_relaxed);
			VM_STAT_ADD(vm->stat.private_splits, 1);
		}
		return 0;
	}
	atomic_fetch_add_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
	if (split)
		atomic_fetch_add_explicit(&vm->stat.pages[it->level - 1], PT64_ENT_PER_PAGE, memory_order_relaxed);
	return 0;
}

__hot int tdp_mmu_map(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	const struct spte_fmt *f = &vm->fmt;
	/* Private faults build the mirror (seed 001's kvm_gfn_for_root: the
	 * gfn is the same, the root says which alias). */
	struct tdp_root *root = fault->is_private ? v->mirror : v->root;
	struct tdp_iter it;
	int r;

	lockdep_assert_mmu_lock_held(vm);
	/* A root made obsolete while this fault slept must not gain mappings. */
	if (atomic_load_explicit(&root->invalid, memory_order_acquire))
		return RET_PF_RETRY;

	for_each_tdp_pte(it, f, root->pt->spt, root->level, fault->gfn, fault->gfn + 1) {
		struct pt_page *sp;

		if (it.level == fault->goal_level) {
			/*
			 * A mirror table where a huge leaf could go: mirror
			 * tables go only at teardown (the private table cannot
			 * promote), so map below it.  The frame moves to the
			 * smaller page's first one.
			 */
			if (fault->is_private && is_mmu_present_spte(it.old_spte) &&
			    !is_last_spte(f, it.old_spte, it.level)) {
				uint64_t big = spte_level_pages(it.level), small = spte_level_pages(it.level - 1);

				fault->pfn += (fault->gfn & (big - 1) & ~(small - 1));
				fault->goal_level--;
				continue;
			}
			return tdp_mmu_map_handle_target_level(v, fault, &it);
		}
		if (is_frozen_spte(it.old_spte))
			return RET_PF_RETRY;
		if (is_mmu_present_spte(it.old_spte) && !is_large_pte(f, it.old_spte))
			continue;

		/*
		 * A child table is needed: the entry is empty (or MMIO, which
		 * a table simply replaces), or a huge leaf that must be split
		 * to map this gfn at a lower level; the split child keeps
		 * mapping everything the huge page mapped.
		 */
		sp = pt_cache_take(&v->pt_cache);
		if (VM_BUG_ON(vm, !sp, "page-table cache empty in fault"))
			return RET_PF_RETRY;
		r = tdp_link_child(vm, &it, sp);
		if (r) {
			pt_cache_put(&v->pt_cache, sp);
			if (r == SPTE_SET_RACE)
				return RET_PF_RETRY;
			fault->host_error = r;
			return RET_PF_FAULT;
		}
	}
	VM_BUG_ON(vm, true, "TDP walk for gfn %#llx ended above level %d", (unsigned long long)fault->gfn,
		  fault->goal_level);
	return RET_PF_RETRY;
}

/*
 * Fault-around: map the empty 4K entries of [start, end), gfns of the
 * fault's slot in the leaf table its own page just went into, with that
 * page's rights and not accessed (the guest has not touched them: aging
 * must not see them young).  An entry someone else filled meanwhile is
 * theirs.  Under mmu_lock for read, in the fault's install section.
 */
unsigned int tdp_mmu_map_around(struct vmmu_vcpu *v, const struct page_fault *fault, uint64_t start, uint64_t end)
{
	struct vmmu_vm *vm = v->vm;
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_root *root = v->root;
	unsigned int n = 0;
	struct tdp_iter it;

	for_each_tdp_pte(it, f, root->pt->spt, root->level, start, end) {
		uint64_t spte;

		if (it.level != PG_LEVEL_4K || it.old_spte != SPTE_NONPRESENT)
			continue;
		spte = make_leaf_spte(f, memslot_gfn_to_hva(fault->slot, it.gfn) >> 12, PG_LEVEL_4K, ACC_ALL,
				      fault->map_writable, true);
		if (!tdp_mmu_set_spte_atomic(vm, &it, spte))
			n++;
	}
	return n;
}

bool tdp_mmu_zap_leafs(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;
	bool flush = false;

	/* The mirror loses leaves through tdp_mmu_zap_private_range(); only
	 * its teardown comes here, and it takes everything. */
	if (unlikely(root->is_mirror)) {
		VM_BUG_ON(vm, !vm->mirror_teardown, "range zap of the mirror root outside teardown");
		for_each_tdp_pte(it, f, root->pt->spt, root->level, start, end)
			if (is_mmu_present_spte(it.old_spte))
				(void)mirror_set_spte(vm, &it, SPTE_NONPRESENT);
		return false;
	}
	for_each_tdp_pte(it, f, root->pt->spt, root->level, start, end) {
		bool covered;

		if (!is_mmu_present_spte(it.old_spte)) {
			/* MMIO SPTEs go too: their gfns may be about to gain a slot. */
			if (is_mmio_spte(f, it.old_spte))
				tdp_mmu_set_spte(vm, &it, SPTE_NONPRESENT);
			continue;
		}
		covered = it.gfn >= start && it.gfn + spte_level_pages(it.level) <= end;
		/* A partly covered table is entered; a partly covered huge page goes whole. */
		if (!covered && !is_last_spte(f, it.old_spte, it.level))
			continue;
		tdp_mmu_set_spte(vm, &it, SPTE_NONPRESENT);
		flush = true;
	}
	return flush;
}

/*
 * The zap of an invalidation, under mmu_lock held for read (docs/mmu.md
 * 10.1): faults elsewhere keep installing meanwhile, and none installs into
 * [start, end) any more (the caller published the range and waited out every
 * fault that checked before), so every SPTE here only loses value: exchanges
 * by cmpxchg, re-read on failure (the hardware's A/D, the fast page fault,
 * aging, another invalidation, or a fault outside the range splitting a huge
 * leaf that covers both, whose child table is then entered).  An entry frozen
 * by another thread's removal of its table is that thread's to account; its
 * TLB flush may still be to come, so it counts as needing one here too.
 * Tables of 4K leaves are swept in a plain loop, as in the dirty-log sweep.
 */
static bool zap_4k_leafs_shared(struct vmmu_vm *vm, uint64_t *pt, uint64_t gfn, unsigned int lo, unsigned int hi)
{
	const struct spte_fmt *f = &vm->fmt;
	bool flush = false;

	for (unsigned int j = lo; j < hi; j++) {
		uint64_t old = tdp_read_spte(&pt[j]);

		for (;;) {
			if (is_frozen_spte(old)) {
				flush = true;
				break;
			}
			if (!is_mmu_present_spte(old) && !is_mmio_spte(f, old))
				break;
			if (atomic_compare_exchange_strong_explicit(atomic_sptep(&pt[j]), &old, SPTE_NONPRESENT,
								    memory_order_acq_rel, memory_order_acquire)) {
				handle_changed_spte(vm, gfn + j, old, SPTE_NONPRESENT, PG_LEVEL_4K, true, false);
				flush |= is_mmu_present_spte(old);
				break;
			}
		}
	}
	return flush;
}

bool tdp_mmu_zap_leafs_shared(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;
	bool flush = false;

	for_each_tdp_pte_min_level(it, f, root->pt->spt, root->level, PG_LEVEL_2M, start, end) {
		bool covered;

retry:
		if (is_frozen_spte(it.old_spte)) {
			flush = true;
			continue;
		}
		if (!is_mmu_present_spte(it.old_spte)) {
			if (is_mmio_spte(f, it.old_spte) && tdp_mmu_set_spte_atomic(vm, &it, SPTE_NONPRESENT))
				goto retry;
			continue;
		}
		covered = it.gfn >= start && it.gfn + spte_level_pages(it.level) <= end;
		if (covered || is_last_spte(f, it.old_spte, it.level)) {
			/* A covered table goes whole; a partly covered huge page too. */
			if (tdp_mmu_set_spte_atomic(vm, &it, SPTE_NONPRESENT))
				goto retry;
			flush = true;
			continue;
		}
		if (it.level == PG_LEVEL_2M)
			flush |= zap_4k_leafs_shared(vm, spte_to_child_pt(it.old_spte), it.gfn,
						     it.gfn < start ? (unsigned int)(start - it.gfn) : 0,
						     end - it.gfn < PT64_ENT_PER_PAGE ? (unsigned int)(end - it.gfn)
										     : PT64_ENT_PER_PAGE);
	}
	return flush;
}

/*
 * Lockless (RCU): the first gfn of [start, end) that may hold a translation
 * (a present leaf, or an entry frozen by a removal in progress), or end.
 * Empty tables do not count: they translate nothing.
 */
uint64_t tdp_mmu_first_mapped(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;

	for_each_tdp_pte_min_level(it, f, root->pt->spt, root->level, PG_LEVEL_2M, start, end) {
		uint64_t *pt;
		unsigned int lo, hi;

		if (is_frozen_spte(it.old_spte) ||
		    (is_mmu_present_spte(it.old_spte) && is_last_spte(f, it.old_spte, it.level)))
			return it.gfn > start ? it.gfn : start;
		if (!is_mmu_present_spte(it.old_spte) || it.level != PG_LEVEL_2M)
			continue;
		pt = spte_to_child_pt(it.old_spte);
		lo = it.gfn < start ? (unsigned int)(start - it.gfn) : 0;
		hi = end - it.gfn < PT64_ENT_PER_PAGE ? (unsigned int)(end - it.gfn) : PT64_ENT_PER_PAGE;
		for (unsigned int j = lo; j < hi; j++) {
			uint64_t spte = tdp_read_spte(&pt[j]);

			if (is_frozen_spte(spte) || is_mmu_present_spte(spte))
				return it.gfn + j;
		}
	}
	return end;
}

/*
 * An atomic AND, not a store: hardware may be setting A/D and the fast page
 * fault may be setting W on this SPTE without mmu_lock.
 */
static bool wrprot_spte(const struct spte_fmt *f, struct tdp_iter *it)
{
	if (!is_mmu_present_spte(it->old_spte) || !is_last_spte(f, it->old_spte, it->level) ||
	    !is_writable_pte(f, it->old_spte))
		return false;
	it->old_spte = atomic_fetch_and_explicit(atomic_sptep(it->sptep), ~f->writable, memory_order_acq_rel) &
		       ~f->writable;
	return true;
}

/*
 * PML: clear D on a 4K leaf (atomic AND for the same reasons as W); the
 * flush that must follow drops TLB entries that still allow writes without
 * setting D.  Anything bigger is write-protected: D set on it would let
 * every 4K page in it be written unlogged.
 */
static bool log_protect_spte(const struct spte_fmt *f, struct tdp_iter *it, bool pml)
{
	if (!pml || it->level != PG_LEVEL_4K)
		return wrprot_spte(f, it);
	if (!is_mmu_present_spte(it->old_spte) || !is_last_spte(f, it->old_spte, it->level) ||
	    !(it->old_spte & f->dirty))
		return false;
	it->old_spte = atomic_fetch_and_explicit(atomic_sptep(it->sptep), ~f->dirty, memory_order_acq_rel) &
		       ~f->dirty;
	return true;
}

bool tdp_mmu_log_protect_range(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end)
{
	const struct spte_fmt *f = &vm->fmt;
	bool pml = vm_pml(vm);
	struct tdp_iter it;
	bool flush = false;

	lockdep_assert_mmu_lock_held(vm);
	/* Private pages are never write-protected (TDX): a bug to try. */
	if (VM_BUG_ON(vm, root->is_mirror, "dirty-log protection of the mirror root"))
		return false;
	for_each_tdp_pte(it, f, root->pt->spt, root->level, start, end)
		flush |= log_protect_spte(f, &it, pml);
	return flush;
}

bool tdp_mmu_log_protect_bitmap(struct vmmu_vm *vm, struct tdp_root *root, uint64_t base_gfn, const uint64_t *bitmap,
			   uint64_t nr_words)
{
	const struct spte_fmt *f = &vm->fmt;
	/* The bit whose clearing makes the next write visible (PML: D). */
	uint64_t bit = vm_pml(vm) ? f->dirty : f->writable;
	bool flush = false;
	uint64_t w = 0;

	lockdep_assert_mmu_lock_held(vm);
	if (VM_BUG_ON(vm, root->is_mirror, "dirty-log protection of the mirror root"))
		return false;
	/* One walk per run of non-zero words: dense logs stream through the
	 * leaf tables once, sparse ones skip what nobody dirtied. */
	while (w < nr_words) {
		uint64_t start, end;
		struct tdp_iter it;

		while (w < nr_words && !bitmap[w])
			w++;
		if (w == nr_words)
			break;
		start = w;
		while (w < nr_words && bitmap[w])
			w++;
		end = w;
		/*
		 * Down to the tables of 4K leaves only; each of those is then
		 * swept in a plain loop, which is where the time goes for a
		 * fully dirty slot (one locked AND per page, no iterator steps).
		 */
		for_each_tdp_pte_min_level(it, f, root->pt->spt, root->level, PG_LEVEL_2M, base_gfn + start * 64,
					   base_gfn + end * 64) {
			uint64_t *pt;
			uint64_t lo, hi;

			if (it.level != PG_LEVEL_2M || !is_mmu_present_spte(it.old_spte) ||
			    is_last_spte(f, it.old_spte, it.level)) {
				/* A huge leaf (or one above): protect it whole. */
				flush |= log_protect_spte(f, &it, vm_pml(vm));
				continue;
			}
			pt = spte_to_child_pt(it.old_spte);
			lo = it.gfn < base_gfn + start * 64 ? base_gfn + start * 64 - it.gfn : 0;
			hi = it.gfn + PT64_ENT_PER_PAGE > base_gfn + end * 64 ? base_gfn + end * 64 - it.gfn
									  : PT64_ENT_PER_PAGE;
			for (uint64_t j = lo; j < hi; j++) {
				uint64_t i = it.gfn + j - base_gfn;
				uint64_t spte;

				if (!((bitmap[i / 64] >> (i % 64)) & 1))
					continue;
				spte = tdp_read_spte(&pt[j]);
				if (!is_mmu_present_spte(spte) || !(spte & bit))
					continue;
				atomic_fetch_and_explicit(atomic_sptep(&pt[j]), ~bit, memory_order_acq_rel);
				flush = true;
			}
		}
	}
	return flush;
}

bool tdp_mmu_write_protect_gfn(struct vmmu_vm *vm, struct tdp_root *root, uint64_t gfn)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;
	bool flush = false;

	lockdep_assert_mmu_lock_held(vm);
	for_each_tdp_pte(it, f, root->pt->spt, root->level, gfn, gfn + 1) {
		if (!is_mmu_present_spte(it.old_spte) || !is_last_spte(f, it.old_spte, it.level))
			continue;
		if (it.level > PG_LEVEL_4K) {
			tdp_mmu_set_spte(vm, &it, SPTE_NONPRESENT);
			flush = true;
			continue;
		}
		if (it.old_spte & (f->writable | f->mmu_writable)) {
			uint64_t old = atomic_fetch_and_explicit(atomic_sptep(it.sptep), ~(f->writable | f->mmu_writable),
								 memory_order_acq_rel);

			flush |= is_writable_pte(f, old);
		}
	}
	return flush;
}

uint64_t tdp_mmu_age_range(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end, bool clear)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;
	uint64_t young = 0;

	/* No A/D harvesting of private pages (TDX): a bug to try. */
	if (VM_BUG_ON(vm, root->is_mirror, "aging of the mirror root"))
		return 0;
	/*
	 * Lockless: the caller's RCU section keeps tables alive; every change
	 * is a cmpxchg against a present leaf, so a zapped or frozen entry is
	 * never written (an AND on the frozen value would corrupt it).
	 */
	for_each_tdp_pte(it, f, root->pt->spt, root->level, start, end) {
		for (int retry = 0; retry < 4; retry++) {
			uint64_t old = it.old_spte, lo, hi;

			if (!is_mmu_present_spte(old) || !is_last_spte(f, old, it.level) || !is_accessed_spte(f, old))
				break;
			if (retry == 0) {
				lo = it.gfn < start ? start : it.gfn;
				hi = it.gfn + spte_level_pages(it.level) > end ? end : it.gfn + spte_level_pages(it.level);
				young += hi - lo;
			}
			if (!clear)
				break;
			/* A/D: clear A; without A/D: access tracking, which the next
			 * access restores through the fast page fault. */
			if (atomic_compare_exchange_strong_explicit(atomic_sptep(it.sptep), &it.old_spte,
								    mark_spte_for_access_track(f, old),
								    memory_order_acq_rel, memory_order_acquire))
				break;
		}
	}
	return young;
}

bool tdp_mmu_split_huge_range(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;

	lockdep_assert_mmu_lock_held(vm);
	for_each_tdp_pte_min_level(it, f, root->pt->spt, root->level, PG_LEVEL_2M, start, end) {
		struct pt_page *sp;

		while (is_mmu_present_spte(it.old_spte) && is_large_pte(f, it.old_spte)) {
			sp = pt_page_alloc(&vm->arena);
			/* Out of tables: what is left splits on its first write. */
			if (!sp)
				return false;
			if (tdp_link_child(vm, &it, sp)) {
				pt_page_free_now(sp);
				/* The module refused a demotion: leave it huge. */
				if (root->is_mirror)
					return false;
			}
		}
	}
	/* Same memory, same rights at a finer grain: no flush needed for the
	 * split itself (the write protection that follows flushes). */
	return false;
}

uint64_t *tdp_mmu_fast_pf_get_last_sptep(struct vmmu_vm *vm, struct tdp_root *root, uint64_t gfn, uint64_t *spte,
					 int *level)
{
	uint64_t *pt = root->pt->spt, *sptep = NULL;

	for (int l = root->level; l >= PG_LEVEL_4K; l--) {
		sptep = &pt[spte_index(gfn, l)];
		*spte = tdp_read_spte(sptep);
		*level = l;
		if (!is_mmu_present_spte(*spte) || is_last_spte(&vm->fmt, *spte, l))
			break;
		pt = spte_to_child_pt(*spte);
	}
	return sptep;
}

uint64_t tdp_mmu_get_spte(struct vmmu_vm *vm, struct tdp_root *root, uint64_t gfn, int *level)
{
	uint64_t *pt = root->pt->spt;
	uint64_t spte = 0;

	for (int l = root->level; l >= PG_LEVEL_4K; l--) {
		spte = tdp_read_spte(&pt[spte_index(gfn, l)]);
		*level = l;
		if (!is_mmu_present_spte(spte) || is_last_spte(&vm->fmt, spte, l))
			break;
		pt = spte_to_child_pt(spte);
	}
	return spte;
}

int tdp_mmu_zap_private_range(struct vmmu_vm *vm, uint64_t start, uint64_t end)
{
	struct tdp_root *root = vm->mirror_root;
	const struct spte_fmt *f = &vm->fmt;
	uint64_t bounds[2] = { start, end };
	struct tdp_iter it;
	int r;

	lockdep_assert_mmu_lock_held(vm);
	if (!root || start >= end)
		return 0;
	/*
	 * A private huge page across either bound is demoted first (TDX has
	 * no other way to unmap part of it, and the part outside keeps its
	 * mapping and its contents); the leaves are then wholly in or out.
	 */
	for (int b = 0; b < 2; b++) {
		uint64_t g = bounds[b];

		if (g >= tdp_max_gfn(root->level))
			continue;
		for_each_tdp_pte_min_level(it, f, root->pt->spt, root->level, PG_LEVEL_2M, g, g + 1) {
			struct pt_page *sp;

			if (!is_mmu_present_spte(it.old_spte) || !is_large_pte(f, it.old_spte) || it.gfn == g)
				continue;
			sp = pt_page_alloc(&vm->arena);
			if (!sp)
				return VMMU_ENOMEM;
			r = tdp_link_child(vm, &it, sp);
			if (r) {
				pt_page_free_now(sp);
				/* Nobody races under the write side. */
				return r == SPTE_SET_RACE ? VMMU_EIO : r;
			}
		}
	}
	for_each_tdp_pte(it, f, root->pt->spt, root->level, start, end) {
		if (!is_mmu_present_spte(it.old_spte) || !is_last_spte(f, it.old_spte, it.level))
			continue;
		if (VM_BUG_ON(vm, it.gfn < start || it.gfn + spte_level_pages(it.level) > end,
			      "private leaf at gfn %#llx L%d crosses a zapped range's bound after the splits",
			      (unsigned long long)it.gfn, it.level))
			return VMMU_EIO;
		r = mirror_set_spte(vm, &it, SPTE_NONPRESENT);
		if (r)
			return r;
	}
	return 0;
}
