/* SPDX-License-Identifier: MIT */
/*
 * The CPU's walk of shadow page tables (no TDP): the tables the MMU built
 * for linear addresses, in the legacy x86-64 format, walked as a CPU walks
 * its own page tables with the host's CR0.WP (on) -- the guest's WP=0 is the
 * MMU's business, emulated through the roles of the pages it builds.
 */
#include "cpu/hw.h"

/*
 * What the CPU does with shadow tables on a TLB miss: a walk from the root,
 * rights ANDed over the levels, the permission rules with CR0.WP forced on
 * (the host's WP), A and D set by cmpxchg on the leaf only if the access is
 * allowed.  Lockless: runs in guest mode, where tables cannot be freed.
 */
bool shadow_hw_walk(struct vmmu_vcpu *v, uint64_t gva, unsigned int walk_access, uintptr_t *hva,
		    unsigned int *rights, unsigned int *pkey, bool *writable, uint32_t *pf_error)
{
	uint64_t *table, *sptep, spte, need;
	unsigned int acc;
	int level;
	uint32_t ec;

again:
	acc = WALK_ACC_W | WALK_ACC_U | WALK_ACC_X | WALK_ACC_R;
	if (v->hw.pae) {
		spte = atomic_load_explicit((_Atomic uint64_t *)&v->hw.table[(gva >> 30) & 3], memory_order_acquire);
		if (!(spte & PT_P)) {
			*pf_error = walk_pf_error_code(&v->hw_wcpu, walk_access, 0);
			return false;
		}
		table = (uint64_t *)(uintptr_t)(spte & SPTE_BASE_ADDR_MASK);
		level = 2;
	} else {
		table = v->hw.table;
		level = v->hw.level;
	}
	for (;; level--) {
		sptep = &table[(gva >> spte_level_shift(level)) & (PT64_ENT_PER_PAGE - 1)];
		spte = atomic_load_explicit((_Atomic uint64_t *)sptep, memory_order_acquire);
		if (!(spte & PT_P)) {
			*pf_error = walk_pf_error_code(&v->hw_wcpu, walk_access, 0);
			return false;
		}
		if (spte & SPTE_HOST_RSVD_MASK) {
			*pf_error = walk_pf_error_code(&v->hw_wcpu, walk_access, PFERR_P | PFERR_RSVD);
			return false;
		}
		if (!(spte & PT_W))
			acc &= ~WALK_ACC_W;
		if (!(spte & PT_U))
			acc &= ~WALK_ACC_U;
		if (spte & PT_NX)
			acc &= ~WALK_ACC_X;
		if (level == PG_LEVEL_4K)
			break;
		table = (uint64_t *)(uintptr_t)(spte & SPTE_BASE_ADDR_MASK);
	}
	*pkey = (unsigned int)((spte & SPTE_PKEY_MASK) >> SPTE_PKEY_SHIFT);
	ec = walk_permission_fault(&v->hw_wcpu, acc, *pkey, walk_access);
	if (ec) {
		*pf_error = walk_pf_error_code(&v->hw_wcpu, walk_access, ec);
		return false;
	}
	need = PT_A | ((walk_access & WALK_WRITE) ? PT_D : 0);
	if ((spte & need) != need &&
	    !atomic_compare_exchange_strong_explicit((_Atomic uint64_t *)sptep, &spte, spte | need,
						     memory_order_acq_rel, memory_order_acquire))
		goto again;
	*rights = acc;
	*writable = acc & WALK_ACC_W;
	*hva = (uintptr_t)(spte & SPTE_BASE_ADDR_MASK) | (gva & 0xfff);
	return true;
}

