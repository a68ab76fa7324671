/* SPDX-License-Identifier: MIT */
#include "mmu/spte.h"

#include <stdio.h>

void spte_fmt_init(struct spte_fmt *f, bool ept, bool ad_enabled)
{
	*f = (struct spte_fmt){ 0 };
	f->ept = ept;
	f->writable = EPT_W; /* == PT_W */
	if (ept) {
		/* Execute-only is supported, so any of R/W/X means present. */
		f->hw_present = EPT_RWX;
		f->readable = 0;
		f->user = EPT_R;
		f->exec = EPT_X;
		f->accessed = EPT_A;
		f->dirty = EPT_D;
		f->huge = EPT_PS;
		f->host_writable = EPT_SPTE_HOST_WRITABLE;
		f->mmu_writable = EPT_SPTE_MMU_WRITABLE;
		f->mmio_mask = EPT_MMIO_MASK;
		f->mmio_value = EPT_MMIO_VALUE;
		f->mmio_access_mask = 0;
		f->leaf_extra = EPT_MT_WB;
		f->ad_enabled = ad_enabled;
	} else {
		/* NPT walks the legacy format and always has A/D. */
		f->hw_present = PT_P;
		f->readable = PT_P;
		f->user = PT_U;
		f->nx = PT_NX;
		f->accessed = PT_A;
		f->dirty = PT_D;
		f->huge = PT_PS;
		f->host_writable = PT_SPTE_HOST_WRITABLE;
		f->mmu_writable = PT_SPTE_MMU_WRITABLE;
		f->mmio_mask = NPT_MMIO_MASK;
		f->mmio_value = NPT_MMIO_VALUE;
		f->mmio_access_mask = NPT_MMIO_ACCESS_MASK;
		f->leaf_extra = 0;
		f->ad_enabled = true;
	}
}

__hot static u64 access_to_bits(const struct spte_fmt *f, unsigned int access)
{
	u64 spte = f->readable;

	if (access & ACC_WRITE)
		spte |= f->writable;
	if (access & ACC_USER)
		spte |= f->user;
	if (access & ACC_EXEC)
		spte |= f->exec;
	else
		spte |= f->nx;
	return spte;
}

__hot u64 make_leaf_spte(const struct spte_fmt *f, u64 pfn, int level, unsigned int access,
		   bool host_writable, bool prefetch)
{
	u64 spte = SPTE_MMU_PRESENT | f->leaf_extra;

	if (!f->ad_enabled)
		spte |= SPTE_TDP_AD_DISABLED;
	if (!host_writable)
		access &= ~ACC_WRITE;
	spte |= access_to_bits(f, access);
	if (host_writable)
		spte |= f->host_writable;
	if (access & ACC_WRITE)
		spte |= f->mmu_writable;
	if (level > PG_LEVEL_4K)
		spte |= f->huge;
	spte |= (pfn << 12) & SPTE_BASE_ADDR_MASK;

	/*
	 * A non-prefetched SPTE is about to be used by the access that faulted
	 * it in: setting A now saves the hardware a locked update.  A prefetched
	 * one must not look accessed, or aging would keep it young for nothing.
	 */
	if (f->ad_enabled) {
		if (!prefetch)
			spte |= f->accessed;
	} else if (prefetch) {
		spte = mark_spte_for_access_track(f, spte);
	}
	return spte;
}

__hot u64 make_nonleaf_spte(const struct spte_fmt *f, u64 table_pfn)
{
	/*
	 * Non-leaf entries grant everything; permissions live in the leaves.
	 * A/D of non-leaf entries is left for hardware to set (the A bit of a
	 * non-leaf entry is never consulted by the MMU).
	 */
	u64 spte = SPTE_MMU_PRESENT | f->readable | f->writable | f->user | f->exec;

	spte |= (table_pfn << 12) & SPTE_BASE_ADDR_MASK;
	return spte;
}

static u64 generation_mmio_spte_mask(u64 gen)
{
	u64 mask;

	mask = (gen << MMIO_SPTE_GEN_LOW_START) & MMIO_SPTE_GEN_LOW_MASK;
	mask |= ((gen >> MMIO_SPTE_GEN_LOW_BITS) << MMIO_SPTE_GEN_HIGH_START) &
		MMIO_SPTE_GEN_HIGH_MASK;
	return mask;
}

u64 make_mmio_spte(const struct spte_fmt *f, u64 gfn, unsigned int access, u64 gen)
{
	u64 spte = f->mmio_value;

	spte |= generation_mmio_spte_mask(gen & MMIO_SPTE_GEN_MASK);
	spte |= (gfn << 12) & MMIO_SPTE_GFN_MASK;
	if (f->mmio_access_mask) {
		if (access & ACC_WRITE)
			spte |= PT_W;
		if (access & ACC_USER)
			spte |= PT_U;
	}
	return spte;
}

u64 get_mmio_spte_generation(u64 spte)
{
	u64 gen;

	gen = (spte & MMIO_SPTE_GEN_LOW_MASK) >> MMIO_SPTE_GEN_LOW_START;
	gen |= ((spte & MMIO_SPTE_GEN_HIGH_MASK) >> MMIO_SPTE_GEN_HIGH_START) << MMIO_SPTE_GEN_LOW_BITS;
	return gen;
}

u64 get_mmio_spte_gfn(u64 spte)
{
	return (spte & MMIO_SPTE_GFN_MASK) >> 12;
}

unsigned int get_mmio_spte_access(const struct spte_fmt *f, u64 spte)
{
	unsigned int access = 0;

	if (!f->mmio_access_mask)
		return ACC_ALL;
	if (spte & PT_W)
		access |= ACC_WRITE;
	if (spte & PT_U)
		access |= ACC_USER;
	return access;
}

unsigned int spte_access(const struct spte_fmt *f, u64 spte)
{
	unsigned int access = 0;

	if (!spte_is_hw_present(f, spte))
		return 0;
	if (spte & f->writable)
		access |= ACC_WRITE;
	if (f->ept) {
		if (spte & f->exec)
			access |= ACC_EXEC;
		if (spte & f->user)
			access |= ACC_USER;
	} else {
		if (!(spte & f->nx))
			access |= ACC_EXEC;
		if (spte & f->user)
			access |= ACC_USER;
	}
	return access;
}

u64 make_small_spte_from_huge(const struct spte_fmt *f, u64 huge_spte, int huge_level, unsigned int index)
{
	u64 spte = huge_spte;
	int level = huge_level - 1;

	spte &= ~SPTE_BASE_ADDR_MASK;
	spte |= huge_spte & SPTE_BASE_ADDR_MASK;
	spte += ((u64)index * spte_level_pages(level)) << 12;
	if (level == PG_LEVEL_4K)
		spte &= ~f->huge;
	return spte;
}

u64 mark_spte_for_access_track(const struct spte_fmt *f, u64 spte)
{
	if (spte_ad_enabled(spte))
		return spte & ~f->accessed;
	if (is_access_track_spte(f, spte))
		return spte;
	/*
	 * Save R and X; W is dropped rather than saved because it can always be
	 * recomputed from MMU-writable, and dropping it means a write after
	 * restore is tracked like any other write (dirty logging stays exact).
	 */
	spte |= (spte & SPTE_ACC_TRACK_SAVED_BITS) << SPTE_ACC_TRACK_SHIFT;
	spte &= ~EPT_RWX;
	return spte;
}

u64 restore_acc_track_spte(const struct spte_fmt *f, u64 spte)
{
	u64 saved = (spte & SPTE_ACC_TRACK_SAVED_MASK) >> SPTE_ACC_TRACK_SHIFT;

	(void)f;
	spte &= ~SPTE_ACC_TRACK_SAVED_MASK;
	spte |= saved;
	return spte;
}

int spte_format(const struct spte_fmt *f, u64 spte, int level, char *buf, unsigned long len)
{
	const char *kind;

	if (is_frozen_spte(spte))
		kind = "frozen";
	else if (spte == SPTE_NONPRESENT)
		kind = "none";
	else if (is_mmio_spte(f, spte))
		return snprintf(buf, len, "L%d mmio gfn=%#llx gen=%#llx", level,
				(unsigned long long)get_mmio_spte_gfn(spte),
				(unsigned long long)get_mmio_spte_generation(spte));
	else if (!is_mmu_present_spte(spte))
		kind = "non-present(garbage)";
	else
		return snprintf(buf, len, "L%d %s pfn=%#llx %s%s%s%s%s%s%s%s (%#llx)", level,
				is_last_spte(f, spte, level) ? "leaf" : "table",
				(unsigned long long)spte_to_pfn(spte),
				spte & (f->readable | (f->ept ? f->user : 0)) ? "R" : "-",
				spte & f->writable ? "W" : "-",
				(f->ept ? (spte & f->exec) : !(spte & f->nx)) ? "X" : "-",
				spte & f->accessed ? "A" : "-", spte & f->dirty ? "D" : "-",
				spte & f->host_writable ? " hw" : "", spte & f->mmu_writable ? " mw" : "",
				is_access_track_spte(f, spte) ? " acc-track" : "",
				(unsigned long long)spte);
	return snprintf(buf, len, "L%d %s (%#llx)", level, kind, (unsigned long long)spte);
}
