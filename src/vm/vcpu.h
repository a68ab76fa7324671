/* SPDX-License-Identifier: MIT */
#ifndef VMMU_VCPU_H
#define VMMU_VCPU_H

#include "vm/vmmu_int.h"

void vcpu_free(struct vmmu_vcpu *v);
/* The reset state: flat 32-bit protected mode, paging off. */
void vcpu_init_state(struct vmmu_vcpu *v);
/*
 * Checks in as a change from cur and builds the resulting state and walk
 * role; nothing changes.  mov_cr3: the change is a MOV to CR3, which
 * always reloads PAE PDPTEs (SDM 3A 4.4.1).  l2_tables: the state is L2's, whose PAE PDPTEs are
 * read through L1's EPT/NPT (NULL for L1's own state).
 */
int vcpu_derive_state(struct vmmu_vcpu *v, const struct vmmu_cpu_state *cur, const struct vmmu_cpu_state *in,
		      bool mov_cr3, struct vmmu_cpu_state *out, struct walk_cpu *w, const struct walk_cpu *l2_tables);
void vcpu_apply_state(struct vmmu_vcpu *v, const struct vmmu_cpu_state *s, const struct walk_cpu *w);

/* L1's tables for L2 while the vCPU runs a nested guest, else NULL. */
static inline const struct walk_cpu *vcpu_l2_tables(const struct vmmu_vcpu *v)
{
	return v->nested.active ? &v->sh.guest_mmu.w : NULL;
}

#endif /* VMMU_VCPU_H */
