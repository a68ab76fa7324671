/* SPDX-License-Identifier: MIT */
/*
 * The mirror root's lifetime, the external ops (and their default: the glue
 * to the simulated security module, what KVM's tdx.c is to the TDX module),
 * and the audit that holds mirror and module table equal.  mirror.h has the
 * rules; tdp_mmu.c applies them where SPTEs change.
 */
#include "mmu/tdp/mirror.h"

#include <stdio.h>
#include <stdlib.h>

#include "cpu/secure_ept.h"
#include "mmu/tdp/tdp_iter.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/attributes.h"

/* ---- the default ops: vmmu's side of the module's calls ------------------- */

static int glue_link(void *ctx, uint64_t gfn, int level)
{
	struct vmmu_vm *vm = ctx;

	return sept_link(vm->sept, gfn, level);
}

static int glue_set(void *ctx, uint64_t gfn, int level, uint64_t spte)
{
	struct vmmu_vm *vm = ctx;

	return sept_aug(vm->sept, gfn, level, spte);
}

/*
 * Block, then track: after the remote flush no vCPU holds a translation
 * made from the entry (the flush waits out guest-mode stretches and every
 * vCPU drops its TLB and paging-structure caches before it walks again),
 * and the blocked entry makes no new one.  Only then may the module change
 * what the entry maps.  One flush per entry, as KVM's TDX code does.
 */
static int glue_block_track(struct vmmu_vm *vm, uint64_t gfn, int level)
{
	int r = sept_block(vm->sept, gfn, level);

	if (r)
		return r;
	vm_flush_remote_tlbs(vm);
	sept_track(vm->sept);
	return 0;
}

static int glue_split(void *ctx, uint64_t gfn, int level)
{
	struct vmmu_vm *vm = ctx;
	int r = glue_block_track(vm, gfn, level);

	return r ? r : sept_demote(vm->sept, gfn, level);
}

static int glue_remove(void *ctx, uint64_t gfn, int level, uint64_t spte)
{
	struct vmmu_vm *vm = ctx;
	int r;

	(void)spte;
	/* At teardown no vCPU runs: the module reclaims without tracking. */
	if (!vm->mirror_teardown && (r = glue_block_track(vm, gfn, level)))
		return r;
	return sept_remove(vm->sept, gfn, level);
}

static int glue_free(void *ctx, uint64_t gfn, int level)
{
	struct vmmu_vm *vm = ctx;

	return sept_free_table(vm->sept, gfn, level);
}

static const struct vmmu_external_ops glue_ops = {
	.link_external_spt = glue_link,
	.set_external_spte = glue_set,
	.split_external_spt = glue_split,
	.remove_external_spte = glue_remove,
	.free_external_spt = glue_free,
};

VMMU_EXPORT int vmmu_get_external_ops(vmmu_vm *vm, struct vmmu_external_ops *ops, void **ctx)
{
	if (!vm || !ops || !ctx)
		return VMMU_EINVAL;
	if (!vm->sept)
		return VMMU_ENOTSUP;
	*ops = vm->xops;
	*ctx = vm->xops_ctx;
	return 0;
}

VMMU_EXPORT int vmmu_set_external_ops(vmmu_vm *vm, const struct vmmu_external_ops *ops, void *ctx)
{
	int r = 0;

	if (!vm)
		return VMMU_EINVAL;
	if (!vm->sept)
		return VMMU_ENOTSUP;
	if (ops && (!ops->link_external_spt || !ops->set_external_spte || !ops->split_external_spt ||
		    !ops->remove_external_spte || !ops->free_external_spt))
		return VMMU_EINVAL;
	/* Faults read the ops without a lock: they are fixed before the first
	 * vCPU exists (vcpus_lock orders this against vmmu_vcpu_create). */
	pthread_mutex_lock(&vm->vcpus_lock);
	if (atomic_load(&vm->nr_vcpus)) {
		r = VMMU_EBUSY;
	} else {
		vm->xops = ops ? *ops : glue_ops;
		vm->xops_ctx = ops ? ctx : vm;
	}
	pthread_mutex_unlock(&vm->vcpus_lock);
	return r;
}

/* ---- lifetime --------------------------------------------------------------- */

int mirror_init(struct vmmu_vm *vm)
{
	struct tdp_root *root = calloc(1, sizeof(*root));
	struct pt_page *sp = root ? pt_page_alloc(&vm->arena) : NULL;
	/* The module's tables cost what the mirror's do; a quarter of the
	 * MMU's reservation is address space enough. */
	size_t bytes = vm->arena.cap << 12 >> 2;

	if (!sp) {
		free(root);
		return VMMU_ENOMEM;
	}
	vm->sept = sept_create(&vm->fmt, vm->root_level, bytes < (64u << 12) ? (64u << 12) : bytes);
	if (!vm->sept) {
		pt_page_free_now(sp);
		free(root);
		return VMMU_ENOMEM;
	}
	sp->level = vm->root_level;
	sp->is_mirror = true;
	root->pt = sp;
	root->level = vm->root_level;
	root->vm = vm;
	root->is_mirror = true;
	atomic_init(&root->refcount, 1);
	atomic_init(&root->invalid, false);
	atomic_store_explicit(&vm->stat.mirror_pt_pages, 1, memory_order_relaxed);
	vm->mirror_root = root;
	vm->xops = glue_ops;
	vm->xops_ctx = vm;
	return 0;
}

void mirror_destroy_root(struct vmmu_vm *vm)
{
	struct tdp_root *root = vm->mirror_root;

	if (!root)
		return;
	/* TD teardown: the key is gone, no vCPU runs, pages are reclaimed. */
	sept_teardown(vm->sept);
	pthread_rwlock_wrlock(&vm->mmu_lock);
	vm->mirror_teardown = true;
	pthread_rwlock_unlock(&vm->mmu_lock);
	vm->mirror_root = NULL;
	tdp_mmu_put_root(vm, root);
}

void mirror_destroy_module(struct vmmu_vm *vm)
{
	sept_destroy(vm->sept);
	vm->sept = NULL;
}

/* ---- propagation -------------------------------------------------------------- */

int mirror_propagate(struct vmmu_vm *vm, uint64_t gfn, uint64_t old_spte, uint64_t new_spte, int level)
{
	const struct spte_fmt *f = &vm->fmt;
	bool was = is_mmu_present_spte(old_spte), is = is_mmu_present_spte(new_spte);
	bool was_leaf = was && is_last_spte(f, old_spte, level), is_leaf = is && is_last_spte(f, new_spte, level);
	const struct vmmu_external_ops *ops = &vm->xops;
	void *ctx = vm->xops_ctx;

	if (!was && is_leaf)
		return ops->set_external_spte(ctx, gfn, level, new_spte);
	if (!was && is)
		return ops->link_external_spt(ctx, gfn, level);
	if (was_leaf && is && !is_leaf)
		return ops->split_external_spt(ctx, gfn, level);
	if (was_leaf && !is)
		return ops->remove_external_spte(ctx, gfn, level, old_spte);
	if (old_spte == new_spte)
		return 0;
	/*
	 * Anything else (a leaf changing rights or frame, a table replaced)
	 * has no op: the private table cannot follow, so the mirror must not
	 * make it.
	 */
	VM_BUG_ON(vm, true, "mirror SPTE change %#llx -> %#llx at gfn %#llx L%d has no external op",
		  (unsigned long long)old_spte, (unsigned long long)new_spte, (unsigned long long)gfn, level);
	return VMMU_EIO;
}

void mirror_free_table(struct vmmu_vm *vm, uint64_t gfn, int level)
{
	/*
	 * Only teardown unlinks mirror tables, and there the module reclaims
	 * whatever an op refused: a failure leaks nothing.
	 */
	VM_BUG_ON(vm, !vm->mirror_teardown, "mirror table at gfn %#llx L%d freed outside teardown",
		  (unsigned long long)gfn, level);
	(void)vm->xops.free_external_spt(vm->xops_ctx, gfn & ~(spte_level_pages(level) - 1), level);
}

/* ---- audit ---------------------------------------------------------------- */

#define AUDIT_FAIL(...) (snprintf(why, len, __VA_ARGS__), -1)

/* A mirror leaf against the attributes, the slot and the module (C1-C4). */
static int audit_private_leaf(struct vmmu_vm *vm, const struct memslots *ms, const struct attr_set *attrs,
			      uint64_t gfn, uint64_t spte, int level, char *why, size_t len)
{
	const struct spte_fmt *f = &vm->fmt;
	uint64_t pages = spte_level_pages(level), mod;
	const struct memslot *s = memslots_find_gfn(ms, gfn);
	int mlevel;

	if (level > PG_LEVEL_2M)
		return AUDIT_FAIL("private leaf at L%d, gfn %#llx", level, (unsigned long long)gfn);
	if (spte_access(f, spte) != ACC_ALL || (f->readable && !(spte & f->readable)))
		return AUDIT_FAIL("private leaf %#llx at gfn %#llx is not RWX", (unsigned long long)spte,
				  (unsigned long long)gfn);
	if (!is_writable_pte(f, spte) || !is_mmu_writable_spte(f, spte))
		return AUDIT_FAIL("private leaf %#llx at gfn %#llx write-protected", (unsigned long long)spte,
				  (unsigned long long)gfn);
	if (!attr_uniform(attrs, gfn, gfn + pages, true))
		return AUDIT_FAIL("private leaf at gfn %#llx L%d over a gfn whose attribute is shared",
				  (unsigned long long)gfn, level);
	if (!s || !(s->flags & VMMU_MEM_PRIVATE) || !memslot_contains(s, gfn + pages - 1))
		return AUDIT_FAIL("private leaf at gfn %#llx L%d outside a private slot", (unsigned long long)gfn,
				  level);
	if (spte_to_pfn(spte) != memslot_gfn_to_priv_hva(s, gfn) >> 12)
		return AUDIT_FAIL("private leaf at gfn %#llx maps pfn %#llx, not its private backing",
				  (unsigned long long)gfn, (unsigned long long)spte_to_pfn(spte));
	mod = sept_lookup(vm->sept, gfn, &mlevel);
	if (mlevel != level || !spte_is_hw_present(f, mod) || spte_to_pfn(mod) != spte_to_pfn(spte))
		return AUDIT_FAIL("mirror leaf %#llx (L%d) at gfn %#llx, secure table has %#llx (L%d)",
				  (unsigned long long)spte, level, (unsigned long long)gfn, (unsigned long long)mod,
				  mlevel);
	return 0;
}

/* Every shared leaf lies where the attributes say shared (C2). */
static int audit_shared(struct vmmu_vm *vm, const struct attr_set *attrs, char *why, size_t len)
{
	const struct spte_fmt *f = &vm->fmt;
	struct tdp_iter it;

	if (!vm->root)
		return 0;
	for_each_tdp_pte(it, f, vm->root->pt->spt, vm->root->level, 0, tdp_max_gfn(vm->root->level)) {
		if (!is_mmu_present_spte(it.old_spte) || !is_last_spte(f, it.old_spte, it.level))
			continue;
		if (!attr_uniform(attrs, it.gfn, it.gfn + spte_level_pages(it.level), false))
			return AUDIT_FAIL("shared leaf at gfn %#llx L%d over a private gfn",
					  (unsigned long long)it.gfn, it.level);
	}
	return 0;
}

int mirror_audit(struct vmmu_vm *vm, char *why, size_t len)
{
	const struct spte_fmt *f = &vm->fmt;
	const struct memslots *ms = vm_memslots(vm);
	const struct attr_set *attrs = atomic_load_explicit(&vm->attrs, memory_order_acquire);
	struct tdp_root *root = vm->mirror_root;
	uint64_t leaves[PG_LEVEL_1G + 1] = { 0 }, tables = 1;
	struct secure_ept_stats ss;
	struct tdp_iter it;

	sept_get_stats(vm->sept, &ss);
	if (ss.violations) {
		for (int k = 0; k < SEPT_V_NR; k++)
			if (ss.by_kind[k])
				return AUDIT_FAIL("security module refused %llu request(s): %s",
						  (unsigned long long)ss.violations,
						  sept_violation_name((enum sept_violation)k));
	}
	if (audit_shared(vm, attrs, why, len))
		return -1;
	if (!root)
		return 0;
	/* C7: never obsoleted (zap-all and memslot changes leave it). */
	if (atomic_load(&root->invalid) || !root->pt->is_mirror || vm->obsolete_roots == root)
		return AUDIT_FAIL("the mirror root was invalidated");
	for_each_tdp_pte(it, f, root->pt->spt, root->level, 0, tdp_max_gfn(root->level)) {
		uint64_t spte = it.old_spte;

		if (!spte)
			continue;
		if (!is_mmu_present_spte(spte))
			return AUDIT_FAIL("mirror SPTE %#llx at gfn %#llx L%d is neither present nor empty",
					  (unsigned long long)spte, (unsigned long long)it.gfn, it.level);
		if (is_last_spte(f, spte, it.level)) {
			if (audit_private_leaf(vm, ms, attrs, it.gfn, spte, it.level, why, len))
				return -1;
			leaves[it.level]++;
			continue;
		}
		{
			struct pt_page *sp = pt_page_of(&vm->arena, spte_to_child_pt(spte));

			if (!sp->is_mirror || sp->level != it.level - 1 || sp->gfn != it.gfn)
				return AUDIT_FAIL("mirror table at gfn %#llx L%d: role or metadata wrong",
						  (unsigned long long)it.gfn, it.level);
			if (!sept_table_at(vm->sept, it.gfn, it.level))
				return AUDIT_FAIL("mirror table at gfn %#llx L%d, none in the secure table",
						  (unsigned long long)it.gfn, it.level);
			tables++;
		}
	}
	/* Counts equal both ways: the secure table holds nothing extra (C1). */
	for (int l = PG_LEVEL_4K; l <= PG_LEVEL_2M; l++) {
		uint64_t st = atomic_load_explicit(&vm->stat.private_pages[l], memory_order_relaxed);

		if (leaves[l] != st || leaves[l] != ss.leaves[l])
			return AUDIT_FAIL("%llu private L%d leaves in the mirror, stats say %llu, secure table %llu",
					  (unsigned long long)leaves[l], l, (unsigned long long)st,
					  (unsigned long long)ss.leaves[l]);
	}
	if (tables != ss.tables || tables != atomic_load(&vm->stat.mirror_pt_pages))
		return AUDIT_FAIL("%llu mirror tables, stats say %llu, secure table has %llu", (unsigned long long)tables,
				  (unsigned long long)atomic_load(&vm->stat.mirror_pt_pages),
				  (unsigned long long)ss.tables);
	return 0;
}
