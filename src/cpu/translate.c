/* SPDX-License-Identifier: MIT */
/*
 * The CPU's side of one page of an access: the TLB, then the walk of what
 * the MMU loaded -- under TDP the guest's own tables, each of their entries
 * a guest-physical access through the TDP tables (2D translation), under
 * shadow paging the shadow tables -- and the TLB fill.  Whatever stops it
 * becomes an exit for the runtime to hand to the MMU.
 */
#include "cpu/hw.h"

static void tlb_fill_linear(struct vmmu_vcpu *v, uint64_t gva, const struct walk_result *res, uintptr_t hva,
			    uintptr_t tdp_val)
{
	struct tlb *t = v->tlb;
	uint64_t vpn = linear_vpn(gva);
	bool global = res->global && v->pge;
	struct tlb_entry *e = &t->e[tlb_index(vpn, global ? 0 : v->pcid)];
	unsigned int size_shift = (unsigned int)__builtin_ctzll(res->page_size) - 12;

	if (global) {
		e->gen = t->full_gen;
	} else {
		if (t->pcid_gen[v->pcid] < t->full_gen)
			t->pcid_gen[v->pcid] = tlb_next_gen(t);
		e->gen = t->pcid_gen[v->pcid];
	}
	e->key = tlb_linear_key(vpn, v->pcid);
	e->info = res->access | (res->pkey << TLBI_PKEY_SHIFT) | (global ? TLBI_GLOBAL : 0) |
		  (res->dirty ? TLBI_GDIRTY : 0) | (size_shift << TLBI_SIZE_SHIFT);
	e->val = (hva & ~(uintptr_t)0xfff) | (tdp_val & 0xfff);
	if (size_shift)
		t->nr_huge++;
}

/* Shadow paging's TLB fill: the rights are the SPTEs' (the guest's, as the
 * shadow holds them); writes may use the entry exactly when the SPTE is
 * writable, which the shadow grants only once the guest's D is set. */
static void tlb_fill_shadow(struct vmmu_vcpu *v, uint64_t gva, uintptr_t hva, unsigned int rights, unsigned int pkey,
			    bool writable)
{
	struct tlb *t = v->tlb;
	uint64_t vpn = linear_vpn(gva);
	struct tlb_entry *e = &t->e[tlb_index(vpn, v->pcid)];

	if (t->pcid_gen[v->pcid] < t->full_gen)
		t->pcid_gen[v->pcid] = tlb_next_gen(t);
	e->gen = t->pcid_gen[v->pcid];
	e->key = tlb_linear_key(vpn, v->pcid);
	e->info = rights | (pkey << TLBI_PKEY_SHIFT) | (writable ? TLBI_GDIRTY : 0);
	e->val = (hva & ~(uintptr_t)0xfff) | TLB_READ | ACC_EXEC | (writable ? ACC_WRITE | TLB_DIRTY : 0);
}

/* Guest page-table memory for the walker: guest-physical accesses that go
 * through the TDP like any other (2D translation), so A/D updates dirty them,
 * and under an EPT with A/D flags (hw.pt_writes) so do reads. */
struct walk_2d {
	struct vmmu_vcpu *v;
	struct hw_exit he;
};

#define WALK_ABORT_TDP (-1)

static int walk2d_read(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val)
{
	struct walk_2d *w = ctx;
	uintptr_t hva;

	if (!hw_translate(w->v, gpa, w->v->hw.pt_writes ? ACC_WRITE : 0, &hva, &w->he))
		return WALK_ABORT_TDP;
	*val = size == 8 ? __atomic_load_n((uint64_t *)hva, __ATOMIC_ACQUIRE)
			 : __atomic_load_n((uint32_t *)hva, __ATOMIC_ACQUIRE);
	return 0;
}

static int walk2d_cmpxchg(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	struct walk_2d *w = ctx;
	uintptr_t hva;

	if (!hw_translate(w->v, gpa, ACC_WRITE, &hva, &w->he))
		return WALK_ABORT_TDP;
	if (size == 8)
		return __atomic_compare_exchange_n((uint64_t *)hva, &old, new_val, false, __ATOMIC_ACQ_REL,
						   __ATOMIC_ACQUIRE);
	{
		uint32_t o = (uint32_t)old;

		return __atomic_compare_exchange_n((uint32_t *)hva, &o, (uint32_t)new_val, false,
						   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	}
}


/*
 * Translate one page of an access, in guest mode.  Physical accesses (paging
 * off, VMMU_ACCESS_PHYS) use the TDP only; linear ones walk the guest's tables
 * first, each of their entries itself a guest-physical access.
 */
__hot enum xlate cpu_translate(struct vmmu_vcpu *v, uint64_t addr, unsigned int acc, unsigned int walk_access,
				       bool phys, uintptr_t *hva, struct hw_exit *he, struct walk_result *wr,
				       bool *pt_access)
{
	struct walk_2d w = { .v = v };
	const struct walk_mem_ops ops = { walk2d_read, walk2d_cmpxchg, &w };
	uintptr_t val;
	int r;

	*pt_access = false;
	if (phys)
		return hw_translate(v, addr, acc, hva, he) ? XLATE_OK : XLATE_TDP_EXIT;
	if (tlb_linear_lookup(v, addr, acc, walk_access, hva))
		return XLATE_OK;
	STAT_INC(v->stat.tlb_misses);
	if (vm_shadow_paging(v->vm)) {
		unsigned int rights, pkey;
		bool writable;

		/* Non-canonical addresses never reach the shadow (no SPTE maps them). */
		if (unlikely(!walk_gva_canonical(&v->wcpu, addr))) {
			wr->vector = WALK_VECTOR_GP;
			wr->error_code = 0;
			wr->fault_addr = addr;
			return XLATE_GUEST_FAULT;
		}
		if (!shadow_hw_walk(v, addr, walk_access, hva, &rights, &pkey, &writable, &wr->error_code))
			return XLATE_SHADOW_PF;
		tlb_fill_shadow(v, addr, *hva, rights, pkey, writable);
		return XLATE_OK;
	}
	r = walk_gva(&v->wcpu, &ops, addr, walk_access, wr);
	if (r == WALK_ABORT_TDP) {
		*he = w.he;
		*pt_access = true;
		return XLATE_TDP_EXIT;
	}
	if (r == WALK_FAULT)
		return XLATE_GUEST_FAULT;
	if (!hw_translate_val(v, wr->gpa, acc, hva, &val, he))
		return XLATE_TDP_EXIT;
	tlb_fill_linear(v, addr, wr, *hva, val);
	return XLATE_OK;
}

