/* SPDX-License-Identifier: MIT */
#ifndef VMMU_MMU_NESTED_H
#define VMMU_MMU_NESTED_H
/*
 * The MMU's side of nested virtualization (seed 003; docs/mmu.md section 13).
 * Three MMUs per vCPU, as in KVM:
 *  - root_mmu: L1's own translation, here the TDP root (v->root);
 *  - guest_mmu: a shadow MMU context (v->sh.guest_mmu) that shadows L1's
 *    EPT (or NPT) tables, mapping L2 guest-physical addresses to host pages
 *    in the VM's TDP format; the hardware walks it as the TDP of L2, so a 2D
 *    walk of L2's own tables goes through it.  Its roots and previous roots
 *    are kept, keyed by (EPTP/nCR3, role), while L1 runs;
 *  - nested_mmu: the software walk of L2's tables where each L2 table
 *    address is translated through L1's EPT/NPT (nested_translate), for
 *    what the MMU itself reads of L2 (the PAE PDPTEs).
 * Everything here runs on the vCPU's thread, outside guest mode.
 */
#include <stdbool.h>
#include <stdint.h>

#include "vm/vmmu_int.h"

struct hw_exit;
struct shadow_fault;

/* What a VM entry gives the MMU: L1's tables for L2, and how to read them. */
struct nested_params {
	uint64_t root;		/* EPTP (EPT VMs) or nCR3 (NPT VMs) */
	bool exec_only;		/* EPT: L1 was offered execute-only translations */
	const struct walk_cpu *l1;	/* L1's paging (NPT walks in its mode, with its NXE) */
};

/* The rules L1's tables for p are walked with. */
void nested_walk_cpu(const struct vmmu_vm *vm, const struct nested_params *p, struct walk_cpu *w);
/*
 * Builds guest_mmu's walk and role for p and switches to its root for that
 * EPTP/nCR3 (the previous-root cache serves a known one without mmu_lock).
 * Returns whether the root guest_mmu had loaded before L1 ran is used again.
 */
bool nested_mmu_enter(struct vmmu_vcpu *v, const struct nested_params *p);
/* Back to the TDP root; guest_mmu keeps its roots (unless VMMU_VM_NESTED_ONE_MMU). */
void nested_mmu_leave(struct vmmu_vcpu *v);
/* INVEPT (all, or the tables of eptp): drop guest_mmu's roots of them. */
void nested_mmu_invept(struct vmmu_vcpu *v, bool all, uint64_t eptp);
/* A TDP exit in guest mode: guest_mmu's page fault for the L2 gpa. */
int nested_page_fault(struct vmmu_vcpu *v, const struct hw_exit *he, struct shadow_fault *sf);
/*
 * nested_mmu: the L1 gpa an L2 gpa translates to through L1's tables, for a
 * read by the MMU (A set in L1's entries as the walk would); 0, or
 * VMMU_EFAULT when L1's tables do not map it or are not RAM.
 */
int nested_translate(struct vmmu_vcpu *v, const struct walk_cpu *l1_tables, uint64_t l2_gpa, uint64_t *l1_gpa);
/* The gfn of the top table an EPTP/nCR3 names. */
uint64_t nested_root_gfn(const struct vmmu_vm *vm, uint64_t root);

#endif /* VMMU_MMU_NESTED_H */
