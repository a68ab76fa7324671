/* SPDX-License-Identifier: MIT */
#include "mmu/tdp/tdp_mmu.h"

#include <stdio.h>

#include "mmu/tdp/tdp_iter.h"

/*
 * Check a root against the invariants of docs/mmu.md: every entry is
 * non-present, MMIO, or MMU-present; no frozen entry survives outside a
 * change in progress (mmu_lock held for write excludes those); leaves have
 * legal writable bits and are not hardware-reserved; tables lie in the arena
 * with matching metadata; and the VM's counters equal what is there.
 */
int tdp_mmu_audit(struct vmmu_vm *vm, struct tdp_root *root, uint64_t counts[PG_LEVEL_1G + 1], uint64_t *tables,
		  char *why, size_t len)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;

	lockdep_assert_mmu_lock_held(vm);
	for_each_tdp_pte(it, f, root->pt->spt, root->level, 0, tdp_max_gfn(root->level)) {
		uint64_t spte = it.old_spte;

		if (is_frozen_spte(spte))
			return snprintf(why, len, "frozen SPTE at gfn %#llx L%d", (unsigned long long)it.gfn,
					it.level), -1;
		if (!is_mmu_present_spte(spte)) {
			if (spte && !is_mmio_spte(f, spte))
				return snprintf(why, len, "garbage non-present SPTE %#llx at gfn %#llx",
						(unsigned long long)spte, (unsigned long long)it.gfn), -1;
			if (is_mmio_spte(f, spte) && it.level != PG_LEVEL_4K)
				return snprintf(why, len, "MMIO SPTE above 4K at gfn %#llx", (unsigned long long)it.gfn),
				       -1;
			continue;
		}
		if (is_last_spte(f, spte, it.level)) {
			if (!spte_writable_bits_legal(f, spte))
				return snprintf(why, len, "illegal writable bits %#llx at gfn %#llx",
						(unsigned long long)spte, (unsigned long long)it.gfn), -1;
			if (spte_is_hw_present(f, spte) && spte_is_hw_reserved(f, spte, it.level))
				return snprintf(why, len, "reserved bits in leaf %#llx at gfn %#llx",
						(unsigned long long)spte, (unsigned long long)it.gfn), -1;
			if (it.level <= PG_LEVEL_1G)
				counts[it.level]++;
		} else {
			uint64_t *child = spte_to_child_pt(spte);
			struct pt_page *sp;

			if (!pt_arena_contains(&vm->arena, child))
				return snprintf(why, len, "table %p outside the arena", (void *)child), -1;
			sp = pt_page_of(&vm->arena, child);
			if (sp->level != it.level - 1 || sp->gfn != it.gfn)
				return snprintf(why, len, "table metadata L%d gfn %#llx, linked at L%d gfn %#llx",
						sp->level, (unsigned long long)sp->gfn, it.level - 1,
						(unsigned long long)it.gfn), -1;
			(*tables)++;
		}
	}
	return 0;
}
