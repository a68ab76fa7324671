/* SPDX-License-Identifier: MIT */
/*
 * vmmu_audit() for shadow paging: the invariants of docs/mmu.md section 11.6.
 */
#include "mmu/shadow/shadow_int.h"

#include <stdio.h>

#define AUDIT_FAIL(...)                              \
	do {                                         \
		snprintf(why, len, __VA_ARGS__);     \
		return -1;                           \
	} while (0)

static bool sp_in_hash(const struct shadow_vm *sh, const struct shadow_page *want)
{
	for (const struct shadow_page *sp = sh->hash[sp_hash(want->gfn)]; sp; sp = sp->hash_next)
		if (sp == want)
			return true;
	return false;
}

/*
 * S5: a leaf SPTE of a synced indirect page agrees with the guest entry it
 * was made from: the entry is present and accessed, names the same frame,
 * and grants at least what the SPTE grants (the rights above the table are
 * in the page's role).  W also needs the guest's D (a clean page stays
 * read-only so that the write which dirties it faults), except that with
 * CR0.WP=0 a supervisor mapping may be writable where the guest entry is
 * not (the WP=0 conversion, which drops U).  Guest stores to the table are
 * all seen (write tracking), so a disagreement means a store reached guest
 * memory without reaching the shadow -- or the host wrote the table behind
 * the MMU's back, which the audit then reports as well.
 */
static int audit_synced_leaf(struct vmmu_vm *vm, const struct shadow_page *sp, unsigned int i, uint64_t spte,
			     gfn_t gfn, char *why, size_t len)
{
	struct walk_cpu w = { .mode = WALK_MODE_4LEVEL, .maxphyaddr = vm->cfg.maxphyaddr };
	const struct gpte_fmt *f;
	unsigned int size = 8, have, may;
	uint64_t gpte;

	shadow_sp_walk_cpu(vm, &w, sp, &w);
	f = gpte_fmt_of(&w);
	/*
	 * A table the embedder has since declared gone (VMMU_HOST_NONE) cannot
	 * be read, so there is nothing to compare with: its shadow keeps what
	 * the table said when it was last read, as KVM's does when the host
	 * unmaps a guest table (a notifier zaps the mappings *of* the gfn, not
	 * the shadow pages *for* it).  A walk that reaches it faults.
	 */
	switch (shadow_guest_read(vm, shadow_gpte_gpa(sp, i, &size), size, &gpte)) {
	case 0:
		break;
	case SHADOW_READ_GONE:
		return 0;
	default:	/* a slot's deletion or move zaps the shadow pages of its tables */
		AUDIT_FAIL("synced leaf SPTE %#llx of table gfn %#llx[%u]: the table is outside RAM",
			   (unsigned long long)spte, (unsigned long long)sp->gfn, i);
	}
	if (!gpte_present(f, gpte) || (f->accessed && !(gpte & f->accessed)))
		AUDIT_FAIL("synced leaf SPTE %#llx of table gfn %#llx[%u]: the guest entry %#llx is %s",
			   (unsigned long long)spte, (unsigned long long)sp->gfn, i, (unsigned long long)gpte,
			   !gpte_present(f, gpte) ? "not present" : "not accessed");
	if (gpte_gfn(&w, gpte) != gfn)
		AUDIT_FAIL("synced leaf SPTE of table gfn %#llx[%u] maps gfn %#llx, the guest entry %#llx",
			   (unsigned long long)sp->gfn, i, (unsigned long long)gfn, (unsigned long long)gpte);
	have = spte_access(&vm->fmt, spte);
	may = sp->role.access & gpte_access(&w, gpte);
	if (f->dirty && !(gpte & f->dirty))
		may &= ~ACC_WRITE;
	else if (!sp->role.cr0_wp && !(have & ACC_USER))
		may |= ACC_WRITE;
	if (have & ~may)
		AUDIT_FAIL("synced leaf SPTE %#llx of table gfn %#llx[%u] grants %#x, the guest entry %#llx only %#x",
			   (unsigned long long)spte, (unsigned long long)sp->gfn, i, have, (unsigned long long)gpte,
			   may);
	return 0;
}

/*
 * Every shadow page against the invariants of docs/mmu.md §11.6: hash and
 * lists agree, every SPTE is on the right rmap or parent list and every list
 * entry is such an SPTE, write-track counts equal the indirect pages, no
 * tracked gfn is writable unless all its pages are unsync leaves, and a
 * synced leaf maps what the guest entry says.
 */
int shadow_audit(struct vmmu_vm *vm, uint64_t *tables, char *why, size_t len)
{
	struct shadow_vm *sh = vm->shadow;
	const struct memslots *ms = vm_memslots(vm);
	struct shadow_page *sp;
	uint64_t n = 0, nr_unsync = 0, rmap_entries = 0, leaves = 0;

	cds_list_for_each_entry(sp, &sh->active, link) {
		n++;
		if (sp->role.invalid)
			AUDIT_FAIL("shadow page gfn %#llx on the active list is invalid", (unsigned long long)sp->gfn);
		if (!sp_in_hash(sh, sp))
			AUDIT_FAIL("shadow page gfn %#llx role %#x not in the hash", (unsigned long long)sp->gfn,
				   sp->role.word);
		if (sp->unsync) {
			nr_unsync++;
			if (sp->role.level != PG_LEVEL_4K || sp->role.direct)
				AUDIT_FAIL("shadow page gfn %#llx level %d is unsync", (unsigned long long)sp->gfn,
					   sp->role.level);
		}
		/* Parent list: each entry is a non-leaf SPTE pointing here. */
		{
			struct pte_list_iter it;
			uint64_t *sptep;

			for_each_pte_list(&sp->parent_ptes, &it, sptep) {
				uint64_t spte = spte_load(sptep);

				if (!is_shadow_present(spte) || (spte & SPTE_BASE_ADDR_MASK) != (uintptr_t)sp->spt)
					AUDIT_FAIL("parent SPTE %p of shadow page gfn %#llx is %#llx", (void *)sptep,
						   (unsigned long long)sp->gfn, (unsigned long long)spte);
				if (sptep_to_sp(vm, sptep)->role.level != sp->role.level + 1)
					AUDIT_FAIL("shadow page gfn %#llx level %d has a parent of level %d",
						   (unsigned long long)sp->gfn, sp->role.level,
						   sptep_to_sp(vm, sptep)->role.level);
			}
		}
		for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++) {
			uint64_t *sptep = &sp->spt[i], spte = spte_load(sptep);

			if (!spte)
				continue;
			if (!is_shadow_present(spte)) {
				if (!is_mmio_spte(&vm->fmt, spte) || sp->role.level != PG_LEVEL_4K)
					AUDIT_FAIL("SPTE %#llx of gfn %#llx[%u] is neither present nor MMIO",
						   (unsigned long long)spte, (unsigned long long)sp->gfn, i);
				continue;
			}
			if (sp->role.level > PG_LEVEL_4K) {
				struct shadow_page *child = spte_to_child(vm, spte);
				struct pte_list_iter it;
				uint64_t *p;
				bool found = false;

				for_each_pte_list(&child->parent_ptes, &it, p)
					found |= p == sptep;
				if (!found)
					AUDIT_FAIL("non-leaf SPTE %p not on its child's parent list", (void *)sptep);
				if (child->role.level != sp->role.level - 1 || child->role.invalid)
					AUDIT_FAIL("shadow page gfn %#llx links a child of level %d%s",
						   (unsigned long long)sp->gfn, child->role.level,
						   child->role.invalid ? " (invalid)" : "");
				continue;
			}
			/* A leaf. */
			{
				gfn_t gfn = sp->role.direct ? sp->gfn + i : sp->gfns[i];
				const struct memslot *s = memslots_find_gfn(ms, gfn);
				struct pte_list_iter it;
				uint64_t *p;
				bool found = false;

				leaves++;
				if (!s || !s->shadow)
					AUDIT_FAIL("leaf SPTE maps gfn %#llx outside every memslot", (unsigned long long)gfn);
				if ((spte_to_pfn(spte) << 12) != memslot_gfn_to_hva(s, gfn))
					AUDIT_FAIL("leaf SPTE for gfn %#llx maps host %#llx, the slot has %#llx",
						   (unsigned long long)gfn, (unsigned long long)(spte_to_pfn(spte) << 12),
						   (unsigned long long)memslot_gfn_to_hva(s, gfn));
				for_each_pte_list(&s->shadow->rmap[gfn - s->base_gfn], &it, p)
					found |= p == sptep;
				if (!found)
					AUDIT_FAIL("leaf SPTE %p of gfn %#llx not on its rmap", (void *)sptep,
						   (unsigned long long)gfn);
				if (!spte_writable_bits_legal(&vm->fmt, spte))
					AUDIT_FAIL("SPTE %#llx of gfn %#llx: W without MMU-writable or host-writable",
						   (unsigned long long)spte, (unsigned long long)gfn);
				if (is_writable_pte(&vm->fmt, spte) && s->shadow->write_track[gfn - s->base_gfn]) {
					struct shadow_page *o;

					for_each_gfn_sp(sh, o, gfn)
						if (!o->role.direct && !o->unsync)
							AUDIT_FAIL("gfn %#llx is a synced guest page table (level %d) but "
								   "mapped writable", (unsigned long long)gfn,
								   o->role.level);
				}
				if (is_writable_pte(&vm->fmt, spte) && (s->flags & VMMU_MEM_READONLY))
					AUDIT_FAIL("gfn %#llx of a read-only slot mapped writable", (unsigned long long)gfn);
				/* A synced indirect leaf is what its guest entry says. */
				if (!sp->role.direct && !sp->unsync &&
				    audit_synced_leaf(vm, sp, i, spte, gfn, why, len))
					return -1;
			}
		}
	}
	if (n != sh->nr_pages)
		AUDIT_FAIL("%llu shadow pages listed, %llu counted", (unsigned long long)n,
			   (unsigned long long)sh->nr_pages);
	if (nr_unsync != sh->nr_unsync)
		AUDIT_FAIL("%llu unsync pages listed, %llu counted", (unsigned long long)nr_unsync,
			   (unsigned long long)sh->nr_unsync);
	if (n > sh->max_pages)
		AUDIT_FAIL("%llu shadow pages, cap %llu", (unsigned long long)n, (unsigned long long)sh->max_pages);
	/*
	 * Rmaps and write-track counts: every leaf was found on its rmap above,
	 * and each slot's sums say nothing else is listed.  Every indirect page
	 * checks its gfn's count against the pages of that gfn.
	 */
	cds_list_for_each_entry(sp, &sh->active, link) {
		const struct memslot *s = shadow_slot_of(vm, sp->gfn);
		struct shadow_page *o;
		unsigned int tracked = 0;

		if (sp->role.direct || !s)
			continue;
		for_each_gfn_sp(sh, o, sp->gfn)
			tracked += !o->role.direct;
		if (tracked != s->shadow->write_track[sp->gfn - s->base_gfn])
			AUDIT_FAIL("gfn %#llx: write-track count %u, %u indirect shadow pages", (unsigned long long)sp->gfn,
				   s->shadow->write_track[sp->gfn - s->base_gfn], tracked);
	}
	for (unsigned int k = 0; k < ms->n; k++) {
		const struct memslot *s = &ms->slots[k];
		uint64_t tracked = 0;

		if (!s->shadow)
			continue;
		rmap_entries += s->shadow->nr_rmap;
		cds_list_for_each_entry(sp, &sh->active, link)
			tracked += !sp->role.direct && memslot_contains(s, sp->gfn);
		if (tracked != s->shadow->nr_tracked)
			AUDIT_FAIL("slot %u: write-track counts sum to %llu, %llu indirect shadow pages", s->id,
				   (unsigned long long)s->shadow->nr_tracked, (unsigned long long)tracked);
	}
	if (rmap_entries != leaves)
		AUDIT_FAIL("%llu rmap entries, %llu leaf SPTEs", (unsigned long long)rmap_entries,
			   (unsigned long long)leaves);
	if (leaves != sh->nr_leaves)
		AUDIT_FAIL("%llu shadow leaf SPTEs, %llu counted", (unsigned long long)leaves,
			   (unsigned long long)sh->nr_leaves);
	*tables += n;
	return 0;
}
