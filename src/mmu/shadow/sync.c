/* SPDX-License-Identifier: MIT */
/*
 * Unsync: leaf shadow pages allowed to go stale until the guest invalidates,
 * and bringing them up to date (KVM's mmu_try_to_unsync_pages /
 * kvm_sync_page).
 */
#include "mmu/shadow/shadow_int.h"

void shadow_unsync_del(struct vmmu_vm *vm, struct shadow_page *sp)
{
	if (!sp->unsync)
		return;
	sp->unsync = false;
	cds_list_del(&sp->unsync_link);
	SH_COUNT_ADD(vm->shadow->nr_unsync, -1);
}

/*
 * Bring an unsync leaf page up to date with its guest table (KVM's
 * kvm_sync_page): every SPTE whose guest entry no longer grants what it
 * grants is zapped (the next fault re-derives it).  The page must already be
 * write-protected and flushed, so no guest store can slip in after the reads.
 */
static bool resync_page(struct vmmu_vcpu *v, struct shadow_page *sp)
{
	struct vmmu_vm *vm = v->vm;
	bool flush = false;

	const struct spte_fmt *sf = &vm->fmt;
	const struct gpte_fmt *gf;
	struct walk_cpu w;

	shadow_sp_walk_cpu(vm, &v->sh.root_mmu.w, sp, &w);
	gf = gpte_fmt_of(&w);
	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++) {
		uint64_t *sptep = &sp->spt[i], spte = spte_load(sptep), gpte;
		unsigned int size = 8, acc;
		bool zap = false;

		if (!spte)
			continue;
		/* Not present, or not accessed: the guest must walk it again (and
		 * set A), as KVM's prefetch_invalid_gpte says. */
		if (shadow_guest_read(vm, shadow_gpte_gpa(sp, i, &size), size, &gpte) || !gpte_present(gf, gpte) ||
		    (gf->accessed && !(gpte & gf->accessed)) || gpte_pte_reserved(&w, gpte) || !is_shadow_present(spte)) {
			zap = true;
		} else {
			acc = sp->role.access & gpte_access(&w, gpte);
			if (gf->dirty && !(gpte & gf->dirty))
				acc &= ~ACC_WRITE;
			zap = gpte_gfn(&w, gpte) != sp->gfns[i] || (spte_access(sf, spte) & ~acc) ||
			      ((spte ^ gpte) & gf->pkey);
		}
		if (zap)
			flush |= shadow_zap_spte(vm, sp, sptep);
	}
	shadow_unsync_del(vm, sp);
	STAT_INC(v->stat.unsync_syncs);
	return flush;
}

/* Sync the given unsync pages: protect all, one flush, then re-read all. */
bool shadow_sync_pages(struct vmmu_vcpu *v, struct shadow_page **sps, unsigned int n)
{
	struct vmmu_vm *vm = v->vm;
	bool flush = false;

	for (unsigned int i = 0; i < n; i++) {
		/* both, whatever the first says */
		flush |= shadow_rmap_write_protect(vm, sps[i]->gfn, false);
		flush |= mmu_write_protect_tracked_gfn_locked(vm, sps[i]->gfn);
	}
	if (flush)
		vm_flush_remote_tlbs(vm);
	flush = false;
	for (unsigned int i = 0; i < n; i++)
		flush |= resync_page(v, sps[i]);
	return flush;
}

/* mmu_lock held for write. */
bool shadow_sync_all_locked(struct vmmu_vcpu *v)
{
	struct shadow_vm *sh = v->vm->shadow;
	struct shadow_page *batch[64], *sp;
	bool flush = false;

	while (sh->nr_unsync) {
		unsigned int n = 0;

		cds_list_for_each_entry(sp, &sh->unsync, unsync_link) {
			batch[n++] = sp;
			if (n == 64)
				break;
		}
		flush |= shadow_sync_pages(v, batch, n);
	}
	return flush;
}

/*
 * Leaf pages of a tracked gfn may go out of sync instead of staying
 * write-protected (KVM's mmu_try_to_unsync_pages).  Returns false when gfn
 * must stay write-protected: some shadow page of it is a non-leaf table.
 */
bool shadow_try_unsync(struct vmmu_vm *vm, gfn_t gfn)
{
	struct shadow_vm *sh = vm->shadow;
	const struct memslot *s = shadow_slot_of(vm, gfn);
	struct shadow_page *sp;

	if (!s || !s->shadow->write_track[gfn - s->base_gfn])
		return true;
	for_each_gfn_sp(sh, sp, gfn)
		if (!sp->role.direct && sp->role.level != PG_LEVEL_4K)
			return false;
	for_each_gfn_sp(sh, sp, gfn) {
		if (sp->role.direct || sp->unsync)
			continue;
		sp->unsync = true;
		cds_list_add(&sp->unsync_link, &sh->unsync);
		SH_COUNT_ADD(sh->nr_unsync, 1);
	}
	return true;
}

bool shadow_gfn_try_unsync(struct vmmu_vm *vm, gfn_t gfn)
{
	return shadow_try_unsync(vm, gfn);
}

void shadow_sync_roots(struct vmmu_vcpu *v)
{
	struct vmmu_vm *vm = v->vm;
	CDS_LIST_HEAD(invalid);
	bool flush;

	if (!__atomic_load_n(&vm->shadow->nr_unsync, __ATOMIC_RELAXED))
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	flush = shadow_sync_all_locked(v);
	shadow_commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}
