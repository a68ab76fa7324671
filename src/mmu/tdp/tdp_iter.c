/* SPDX-License-Identifier: MIT */
#include "mmu/tdp/tdp_iter.h"

static inline uint64_t round_gfn(uint64_t gfn, int level)
{
	return gfn & ~(spte_level_pages(level) - 1);
}

__hot static void tdp_iter_read(struct tdp_iter *it)
{
	it->sptep = it->pt_path[it->level] + spte_index(it->gfn, it->level);
	it->old_spte = tdp_read_spte(it->sptep);
}

__hot void tdp_iter_start(struct tdp_iter *it, const struct spte_fmt *f, uint64_t *root_pt, int root_level,
		    int min_level, uint64_t start, uint64_t end)
{
	it->fmt = f;
	it->root_level = root_level;
	it->min_level = min_level;
	it->level = root_level;
	it->end = end;
	it->next_gfn = start;
	it->pt_path[root_level] = root_pt;
	it->gfn = round_gfn(start, root_level);
	it->valid = start < end && (start >> (9 * root_level)) == 0;
	if (it->valid)
		tdp_iter_read(it);
}

__hot static bool try_step_down(struct tdp_iter *it)
{
	if (it->level == it->min_level)
		return false;
	if (!is_mmu_present_spte(it->old_spte) || is_last_spte(it->fmt, it->old_spte, it->level))
		return false;
	it->level--;
	it->pt_path[it->level] = spte_to_child_pt(it->old_spte);
	it->gfn = round_gfn(it->next_gfn, it->level);
	tdp_iter_read(it);
	return true;
}

__hot static bool try_step_side(struct tdp_iter *it)
{
	if (spte_index(it->gfn, it->level) == PT64_ENT_PER_PAGE - 1)
		return false;
	it->gfn += spte_level_pages(it->level);
	it->next_gfn = it->gfn;
	it->sptep++;
	it->old_spte = tdp_read_spte(it->sptep);
	return true;
}

__hot static bool try_step_up(struct tdp_iter *it)
{
	if (it->level == it->root_level)
		return false;
	it->level++;
	it->gfn = round_gfn(it->gfn, it->level);
	it->sptep = it->pt_path[it->level] + spte_index(it->gfn, it->level);
	return true;
}

__hot void tdp_iter_next(struct tdp_iter *it)
{
	if (!try_step_down(it)) {
		for (;;) {
			if (try_step_side(it))
				break;
			if (!try_step_up(it)) {
				it->valid = false;
				return;
			}
		}
	}
	if (it->gfn >= it->end)
		it->valid = false;
}
