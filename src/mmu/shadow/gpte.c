/* SPDX-License-Identifier: MIT */
/*
 * Guest page-table entries as the MMU reads them: guest memory outside the
 * hardware path, the format rules an entry of a shadow page is read with,
 * and where entry i of a shadow page lives in its guest table (quadrants of
 * 4-byte tables).  What an entry of each format means is walk.h's gpte_*.
 */
#include "mmu/shadow/shadow_int.h"

#include <string.h>

/* Where entry i of sp lives in the guest table (quadrants of 4-byte tables). */
uint64_t shadow_gpte_gpa(const struct shadow_page *sp, unsigned int i, unsigned int *size)
{
	if (!sp->role.has_4_byte_gpte) {
		*size = 8;
		return (sp->gfn << 12) + 8ULL * i;
	}
	*size = 4;
	if (sp->role.level == PG_LEVEL_4K)
		return (sp->gfn << 12) + 4ULL * (i + 512u * sp->role.quadrant);
	/* A 32-bit PDE maps 4 MiB: two shadow PDEs per guest PDE. */
	return (sp->gfn << 12) + 4ULL * (i / 2 + 256u * sp->role.quadrant);
}

/*
 * The rules entries of sp are read with.  A nested guest's page shadows one
 * of L1's EPT (or NPT) tables, whose rules its role says entirely.  Under
 * shadow paging: base's (the reading vCPU's guest walk), with the entry
 * size and NX of sp's role, so that a page built under another mode is not
 * read with this one's entry size.
 */
void shadow_sp_walk_cpu(const struct vmmu_vm *vm, const struct walk_cpu *base, const struct shadow_page *sp,
			struct walk_cpu *w)
{
	if (sp->role.guest_mode) {
		memset(w, 0, sizeof(*w));
		w->maxphyaddr = vm->cfg.maxphyaddr;
		if (vm->fmt.ept) {
			/* EPT4 and EPT5 read entries the same way. */
			w->mode = WALK_MODE_EPT4;
			w->ept_ad = !sp->role.ad_disabled;
			w->ept_no_exec_only = !sp->role.ept_exec_only;
		} else {
			/* NPT: L1's long-mode tables, every access a user one. */
			w->mode = WALK_MODE_4LEVEL;
			w->nxe = sp->role.efer_nx;
			w->cpl = 3;
		}
		return;
	}
	*w = *base;
	if (sp->role.has_4_byte_gpte) {
		w->mode = WALK_MODE_32;
		w->pse = sp->role.cr4_pse;
	} else if (w->mode == WALK_MODE_32 || w->mode == WALK_MODE_NONE)
		w->mode = WALK_MODE_4LEVEL;
	w->nxe = sp->role.efer_nx;
}
