/* SPDX-License-Identifier: MIT */
#ifndef VMMU_NESTED_TEST_H
#define VMMU_NESTED_TEST_H
/*
 * What the nested-virtualization tests share: a TDP VM whose vCPU 0 plays a
 * guest hypervisor (L1) that builds an EPT (EPT VMs) or NPT (NPT VMs) for
 * its own guest (L2) by guest stores, and helpers to enter and leave L2.
 *
 * Guest-physical layout (L1 addresses):
 *   0..1M         L1's own data
 *   1M..2M        L1's page tables (NPT VMs run L1 in long mode, identity)
 *   8M..16M       L1's EPT/NPT tables for L2
 *   L2_BASE..     L2's memory: L2 gpa g is L1 gpa g + L2_BASE for g below
 *                 L2_SIZE (4K pages below L2_SMALL, 2M above)
 */
#include <stdint.h>

#include "guest.h"
#include "harness.h"

#define NT_MB (1ULL << 20)
#define NT_RAM_SIZE (128 * NT_MB)
#define NT_L1_PT_POOL (1 * NT_MB)
#define NT_L1_PT_SIZE (1 * NT_MB)
#define NT_EPT_POOL (8 * NT_MB)
#define NT_EPT_SIZE (8 * NT_MB)
#define NT_L2_BASE (32 * NT_MB)
#define NT_L2_SIZE (32 * NT_MB)
#define NT_L2_SMALL (4 * NT_MB)

struct nt {
	const struct mmu_variant *var;
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	struct guest_pt *l1_pt;		/* NPT VMs: L1's own paging */
	struct guest_pt *ept;		/* L1's EPT or NPT for L2 */
	bool npt;
	bool ad;			/* EPTP A/D */
	uint16_t vpid;
};

/* Whether the variant can run nested guests (TDP, A/D in SPTEs or not). */
bool nt_variant_ok(const struct mmu_variant *var);
/* VM, vCPU, L1 state, and L1's tables mapping all of L2's memory RWX. */
void nt_setup(struct nt *t, const struct mmu_variant *var, uint32_t vm_flags, uint32_t max_vcpus);
/* The same without L1's tables for L2 (t->ept NULL): tests that build their own. */
void nt_setup_l1(struct nt *t, const struct mmu_variant *var, uint32_t vm_flags, uint32_t max_vcpus);
/* Another vCPU of the VM, in the L1 state vCPU 0 was given. */
vmmu_vcpu *nt_add_vcpu(struct nt *t, unsigned int id);
void nt_teardown(struct nt *t);
/* A vmmu_nested_state for this VM with L2 in the given state (NULL: paging off). */
void nt_state(const struct nt *t, struct vmmu_nested_state *ns, const struct vmmu_cpu_state *l2);
void nt_enter(struct nt *t, const struct vmmu_cpu_state *l2);
void nt_leave(struct nt *t);
/* L1's leaf flags for rights (GUEST_EPT_R/W/X style) in this VM's format. */
uint64_t nt_flags(const struct nt *t, bool r, bool w, bool x);
/* Host views of L1 memory. */
uint64_t nt_rd64(vmmu_vm *vm, uint64_t l1_gpa);
void nt_wr64(vmmu_vm *vm, uint64_t l1_gpa, uint64_t v);
/* One 8-byte access by the vCPU; returns vmmu_vcpu_access's result. */
int nt_acc(vmmu_vcpu *v, uint64_t addr, uint64_t *val, unsigned int type, struct vmmu_exit *x);

#endif /* VMMU_NESTED_TEST_H */
