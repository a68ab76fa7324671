/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TDP_ITER_H
#define VMMU_TDP_ITER_H
/*
 * A pre-order walk over the SPTEs of one TDP root that map [start, end):
 * each entry is visited before its child table, and a child is entered only
 * if the entry (as last read into old_spte) is a present non-leaf.  Callers
 * that change an entry store the new value in old_spte, so the walk descends
 * into a table they just installed and skips one they just removed.
 *
 * SPTEs are read with acquire loads: a child table's zeroed contents are
 * published by the release cmpxchg that linked it.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include "compiler.h"
#include <stdint.h>

#include "mmu/spte.h"

#define TDP_MAX_LEVEL 5

struct tdp_iter {
	uint64_t *pt_path[TDP_MAX_LEVEL + 1];	/* table being walked at each level */
	uint64_t *sptep;
	uint64_t old_spte;
	uint64_t gfn;		/* first gfn mapped by *sptep */
	uint64_t next_gfn;	/* lowest gfn not yet visited */
	uint64_t end;
	int level;
	int min_level;
	int root_level;
	bool valid;
	const struct spte_fmt *fmt;
};

static inline uint64_t tdp_read_spte(uint64_t *sptep)
{
	return atomic_load_explicit((_Atomic uint64_t *)sptep, memory_order_acquire);
}

static inline uint64_t *spte_to_child_pt(uint64_t spte)
{
	return (uint64_t *)(uintptr_t)(spte_to_pfn(spte) << 12);
}

void tdp_iter_start(struct tdp_iter *it, const struct spte_fmt *f, uint64_t *root_pt, int root_level,
		    int min_level, uint64_t start, uint64_t end);
void tdp_iter_next(struct tdp_iter *it);
/* Re-read the current entry after a failed cmpxchg. */
static inline void tdp_iter_refresh(struct tdp_iter *it)
{
	it->old_spte = tdp_read_spte(it->sptep);
}

#define for_each_tdp_pte_min_level(it, f, root_pt, root_level, min_level, start, end)      \
	for (tdp_iter_start(&(it), f, root_pt, root_level, min_level, start, end); (it).valid; \
	     tdp_iter_next(&(it)))

#define for_each_tdp_pte(it, f, root_pt, root_level, start, end) \
	for_each_tdp_pte_min_level(it, f, root_pt, root_level, PG_LEVEL_4K, start, end)

#endif /* VMMU_TDP_ITER_H */
