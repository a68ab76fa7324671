/* SPDX-License-Identifier: MIT */
/*
 * Shadow pages keyed by (gfn, role): the hash, getting (finding or creating)
 * a page, zapping it in two steps (prepare under mmu_lock, commit after one
 * remote flush), reclaim to stay under the page cap, zap-all.
 */
#include "mmu/shadow/shadow_int.h"

#include <stdlib.h>
#include <string.h>

#include "vm/trace.h"

int shadow_vm_init(struct vmmu_vm *vm)
{
	struct shadow_vm *sh = calloc(1, sizeof(*sh));

	if (!sh)
		return VMMU_ENOMEM;
	CDS_INIT_LIST_HEAD(&sh->active);
	CDS_INIT_LIST_HEAD(&sh->unsync);
	sh->valid_gen = 1;
	sh->max_pages = vm->cfg.shadow_max_pages;
	if (!sh->max_pages) {
		/* What the arena holds, less room for the TDP-free reserve. */
		sh->max_pages = vm->arena.cap > 2 * SHADOW_MIN_FREE_PAGES ? vm->arena.cap - SHADOW_MIN_FREE_PAGES
									  : vm->arena.cap;
	}
	vm->shadow = sh;
	return 0;
}

static void sp_free(struct shadow_page *sp)
{
	pte_list_free(&sp->parent_ptes);
	pt_page_free_rcu(sp->pt);
	free(sp->gfns);
	free(sp);
}

void shadow_vm_destroy(struct vmmu_vm *vm)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp, *tmp;
	CDS_LIST_HEAD(invalid);

	if (!sh)
		return;
	cds_list_for_each_entry_safe(sp, tmp, &sh->active, link)
		shadow_prepare_zap(vm, sp, &invalid);
	cds_list_for_each_entry_safe(sp, tmp, &invalid, link) {
		cds_list_del(&sp->link);
		sp_free(sp);
	}
	free(sh);
	vm->shadow = NULL;
}

static void hash_del(struct shadow_vm *sh, struct shadow_page *sp)
{
	struct shadow_page **pp = &sh->hash[sp_hash(sp->gfn)];

	while (*pp && *pp != sp)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = sp->hash_next;
	sp->hash_next = NULL;
}

static void drop_leaf_rmap(struct vmmu_vm *vm, struct shadow_page *sp, uint64_t *sptep)
{
	unsigned int i = sptep_index(sptep);
	gfn_t gfn = sp->role.direct ? sp->gfn + i : sp->gfns[i];
	const struct memslot *s = shadow_slot_of(vm, gfn);

	if (!VM_BUG_ON(vm, !s || !pte_list_remove(&s->shadow->rmap[gfn - s->base_gfn], sptep),
		       "SPTE %p of gfn %#llx missing from its rmap", (void *)sptep, (unsigned long long)gfn))
		s->shadow->nr_rmap--;
	SH_COUNT_ADD(vm->shadow->nr_leaves, -1);
}

/* Remove one SPTE from sp; returns whether a TLB flush is needed. */
bool shadow_zap_spte(struct vmmu_vm *vm, struct shadow_page *sp, uint64_t *sptep)
{
	uint64_t spte = spte_load(sptep);

	if (!spte)
		return false;
	if (!is_shadow_present(spte)) {
		/* MMIO: the hardware never caches a reserved-bit entry. */
		spte_store(sptep, 0);
		return false;
	}
	spte_xchg(sptep, 0);
	VM_STAT_ADD(vm->stat.zapped_sptes, 1);
	if (sp->role.level == PG_LEVEL_4K) {
		drop_leaf_rmap(vm, sp, sptep);
	} else {
		struct shadow_page *child = spte_to_child(vm, spte);

		VM_BUG_ON(vm, !pte_list_remove(&child->parent_ptes, sptep),
			  "non-leaf SPTE %p missing from its child's parent list", (void *)sptep);
	}
	return true;
}

/*
 * KVM's kvm_mmu_prepare_zap_page: unlink sp from everything, so no walker can
 * reach it after the next TLB flush; free it in shadow_commit_zap() after that flush.
 * A page that is still some vCPU's root stays allocated, marked invalid, until
 * the vCPU drops it.
 */
void shadow_prepare_zap(struct vmmu_vm *vm, struct shadow_page *sp, struct cds_list_head *invalid)
{
	struct shadow_vm *sh = vm->shadow;
	uint64_t *sptep;

	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++)
		shadow_zap_spte(vm, sp, &sp->spt[i]);
	while ((sptep = pte_list_first(&sp->parent_ptes))) {
		spte_xchg(sptep, 0);
		pte_list_remove(&sp->parent_ptes, sptep);
	}
	/* Last, as KVM's __kvm_mmu_prepare_zap_page: see shadow_unaccount. */
	if (sp->tracked)
		shadow_unaccount(vm, sp);
	shadow_unsync_del(vm, sp);
	hash_del(sh, sp);
	cds_list_del(&sp->link);
	SH_COUNT_ADD(sh->nr_pages, -1);
	atomic_fetch_sub_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->zapped, 1, memory_order_relaxed);
	if (unlikely(vm_tracing(vm))) {
		struct vmmu_trace_event ev = { .kind = VMMU_TRACE_SHADOW_PAGE_ZAP, .vcpu_id = VMMU_TRACE_NO_VCPU,
					       .gpa = sp->gfn << 12, .level = sp->role.level,
					       .flags = VMMU_TRACE_F_SHADOW };

		vm_trace(vm, &ev);
	}
	sp_mark_invalid(sp);
	if (sp->root_count) {
		/* Still loaded: the vCPUs reload, and the last put frees it. */
		CDS_INIT_LIST_HEAD(&sp->link);
		vm_make_all_vcpus_request(vm, VCPU_REQ_MMU_RELOAD);
	} else {
		cds_list_add(&sp->link, invalid);
	}
}

/* The flush must come before the free: a vCPU may still walk the tables. */
void shadow_commit_zap(struct vmmu_vm *vm, struct cds_list_head *invalid, bool flush)
{
	struct shadow_page *sp, *tmp;

	if (cds_list_empty(invalid) && !flush)
		return;
	vm_flush_remote_tlbs(vm);
	cds_list_for_each_entry_safe(sp, tmp, invalid, link) {
		cds_list_del(&sp->link);
		sp_free(sp);
	}
}

/* Keep the VM under its page cap: zap the least recently created unused pages. */
bool shadow_make_pages_available(struct vmmu_vm *vm, struct cds_list_head *invalid)
{
	struct shadow_vm *sh = vm->shadow;
	struct cds_list_head *pos, *p;

	if (sh->nr_pages + SHADOW_MIN_FREE_PAGES <= sh->max_pages)
		return true;
	cds_list_for_each_prev_safe(pos, p, &sh->active) {
		struct shadow_page *sp = cds_list_entry(pos, struct shadow_page, link);

		if (sh->nr_pages + SHADOW_MIN_FREE_PAGES <= sh->max_pages)
			break;
		if (sp->root_count)
			continue;
		shadow_prepare_zap(vm, sp, invalid);
		atomic_fetch_add_explicit(&sh->recycled, 1, memory_order_relaxed);
	}
	return sh->nr_pages + SHADOW_MIN_FREE_PAGES <= sh->max_pages;
}

struct shadow_page *shadow_get_sp(struct vmmu_vcpu *v, gfn_t gfn, union sp_role role, bool *flush,
				  struct cds_list_head *invalid)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp;
	struct pt_page *pt;

again:
	for_each_gfn_sp(sh, sp, gfn) {
		if (sp->role.word == role.word) {
			if (sp->unsync)
				*flush |= shadow_sync_pages(v, &sp, 1);
			return sp;
		}
		/* A non-leaf shadow of gfn is wanted: no page of it may stay out of
		 * sync, or its stores would not be seen (KVM zaps them). */
		if (!role.direct && role.level > PG_LEVEL_4K && sp->unsync) {
			shadow_prepare_zap(vm, sp, invalid);
			*flush = true;
			goto again;
		}
	}
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return NULL;
	if (!role.direct && role.level == PG_LEVEL_4K) {
		sp->gfns = calloc(PT64_ENT_PER_PAGE, sizeof(*sp->gfns));
		if (!sp->gfns) {
			free(sp);
			return NULL;
		}
	}
	pt = pt_cache_take(&v->pt_cache);
	if (VM_BUG_ON(vm, !pt, "page-table cache empty under mmu_lock")) {
		free(sp->gfns);
		free(sp);
		return NULL;
	}
	pt->owner = sp;
	pt->level = role.level;
	pt->gfn = gfn;
	sp->pt = pt;
	sp->spt = pt->spt;
	sp->gfn = gfn;
	sp->role = role;
	sp->valid_gen = sh->valid_gen;
	sp->hash_next = sh->hash[sp_hash(gfn)];
	sh->hash[sp_hash(gfn)] = sp;
	cds_list_add(&sp->link, &sh->active);
	CDS_INIT_LIST_HEAD(&sp->unsync_link);
	SH_COUNT_ADD(sh->nr_pages, 1);
	atomic_fetch_add_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->created, 1, memory_order_relaxed);
	if (!role.direct)
		*flush |= shadow_account(vm, sp);
	return sp;
}

void shadow_zap_slot_pages(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp, *tmp;
	CDS_LIST_HEAD(invalid);
	bool flush = shadow_zap_gfn_range(vm, start, end);

	/* The slot's write-track counts go with it: no shadow page may be left
	 * counting a gfn of it. */
	cds_list_for_each_entry_safe(sp, tmp, &sh->active, link)
		if (sp->gfn >= start && sp->gfn < end)
			shadow_prepare_zap(vm, sp, &invalid);
	shadow_commit_zap(vm, &invalid, flush);
}

void shadow_zap_all(struct vmmu_vm *vm)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp, *tmp;
	CDS_LIST_HEAD(invalid);

	/* Nothing valid exists (a TDP VM that never ran a nested guest): the
	 * roots vCPUs may still hold are invalid already. */
	if (!sh->nr_pages)
		return;
	/*
	 * KVM's kvm_mmu_zap_all_fast order: every page is obsolete and every
	 * vCPU told to reload (and waited out of guest mode) before the first
	 * page is touched, so from here on no vCPU walks the old tables: the
	 * next entry reloads, which waits for mmu_lock, which this holds until
	 * the zap is done.  Pages created after it are of the new generation.
	 */
	__atomic_store_n(&sh->valid_gen, sh->valid_gen + 1, __ATOMIC_RELEASE);
	vm_make_all_vcpus_request(vm, VCPU_REQ_MMU_RELOAD);
	cds_list_for_each_entry_safe(sp, tmp, &sh->active, link)
		shadow_prepare_zap(vm, sp, &invalid);
	shadow_commit_zap(vm, &invalid, true);
}
