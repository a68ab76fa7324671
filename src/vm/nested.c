/* SPDX-License-Identifier: MIT */
/*
 * Nested virtualization, the runtime's side: VM entry and exit of a nested
 * guest (the vCPU's L1 state saved, L2's loaded, the MMU and the TLB
 * switched), and the invalidation instructions L1 executes.  The MMU's side
 * is src/mmu/nested.c; the rules are docs/mmu.md section 13.
 */
#include <string.h>

#include "cpu/hw.h"
#include "mmu/nested.h"
#include "vm/vcpu.h"

/* SDM Vol. 3C 26.2.1.1 (VM-entry checks on the EPTP), as a VM entry applies them. */

/*
 * Nested guests run on TDP VMs (no shadow-on-shadow) that are not
 * confidential: a TD has no VMX of its own (TDX before TD partitioning).
 */
static bool vm_runs_nested(const struct vmmu_vm *vm)
{
	return !vm_shadow_paging(vm) && !vm->shared_mask;
}
static int check_eptp(const struct vmmu_vm *vm, uint64_t eptp)
{
	uint64_t mt = eptp & 7, walk = eptp & (7ULL << 3);

	if (mt != VMMU_EPTP_MT_UC && mt != VMMU_EPTP_MT_WB)
		return VMMU_EINVAL;
	if (walk != VMMU_EPTP_WALK_4 && walk != VMMU_EPTP_WALK_5)
		return VMMU_EINVAL;
	/* Bit 7 (supervisor shadow stacks) is not offered; 11:8 are reserved. */
	if (eptp & GENMASK_ULL(11, 7))
		return VMMU_EINVAL;
	if (vm->cfg.maxphyaddr < 64 && (eptp >> vm->cfg.maxphyaddr))
		return VMMU_EINVAL;
	return 0;
}

static bool tlb_control_valid(uint8_t c)
{
	return c == VMMU_TLB_CONTROL_NONE || c == VMMU_TLB_CONTROL_FLUSH_ALL || c == VMMU_TLB_CONTROL_FLUSH_GUEST ||
	       c == VMMU_TLB_CONTROL_FLUSH_GUEST_NONGLOBAL;
}

static int check_nested_state(struct vmmu_vcpu *v, const struct vmmu_nested_state *ns)
{
	const struct vmmu_vm *vm = v->vm;

	if (ns->flags & ~VMMU_NESTED_EXEC_ONLY || ns->pad)
		return VMMU_EINVAL;
	if (vm->fmt.ept) {
		if (ns->ncr3 || ns->tlb_control)
			return VMMU_EINVAL;
		return check_eptp(vm, ns->eptp);
	}
	if (ns->eptp || (ns->flags & VMMU_NESTED_EXEC_ONLY) || !tlb_control_valid(ns->tlb_control))
		return VMMU_EINVAL;
	/* nCR3: bits 11:0 are ignored as in CR3 (long mode); above MAXPHYADDR reserved. */
	if (vm->cfg.maxphyaddr < 64 && (ns->ncr3 >> vm->cfg.maxphyaddr))
		return VMMU_EINVAL;
	/* A 32-bit or PAE L1 walks its NPT in that mode, which would need a
	 * PAE-style shadow root for L2 as well: not built. */
	if (v->wcpu.mode != WALK_MODE_4LEVEL && v->wcpu.mode != WALK_MODE_5LEVEL)
		return VMMU_ENOTSUP;
	return 0;
}

/*
 * L2's TLB keeps what it holds while the tag it was filled under (VPID or
 * ASID, and the EPTP/nCR3) is the one entered again; without a VPID every
 * entry flushes it (SDM 28.3.3.3, VPID 0000H; for L1's own translations vmmu
 * does as KVM and keeps them: they live in the other TLB).
 */
static void l2_tlb_enter(struct vmmu_vcpu *v, const struct vmmu_nested_state *ns, uint64_t root)
{
	struct nested_vcpu *n = &v->nested;

	if (!ns->vpid || !n->tlb_tagged || n->tlb_vpid != ns->vpid ||
	    nested_root_gfn(v->vm, n->tlb_root) != nested_root_gfn(v->vm, root)) {
		tlb_flush(&v->tlbs[1]);
		/*
		 * NPT: the ASID tags the guest's nested translations as well
		 * (APM 15.16), and guest_mmu's shadow pages serve every ASID.
		 * An ASID that never cached an NPT entry L1 changed (or none)
		 * must see the entry as it is: unsync pages catch up, as with
		 * TLB_CONTROL.  EPT's guest-physical translations are tagged by
		 * the EPTP alone, and INVEPT drops those roots.
		 */
		if (!v->vm->fmt.ept)
			shadow_sync_roots(v);
	}
	switch (ns->tlb_control) {
	case VMMU_TLB_CONTROL_FLUSH_ALL:
		tlb_flush(&v->tlbs[0]);
		/* fall through */
	case VMMU_TLB_CONTROL_FLUSH_GUEST:
	case VMMU_TLB_CONTROL_FLUSH_GUEST_NONGLOBAL:
		tlb_flush(&v->tlbs[1]);
		/* What L1 changed in its NPT reaches L2 now: unsync shadow
		 * pages catch up (flushing non-global only may drop more). */
		shadow_sync_roots(v);
		break;
	default:
		break;
	}
	n->tlb_tagged = true;
	n->tlb_vpid = ns->vpid;
	n->tlb_root = root;
	v->tlb = &v->tlbs[1];
}

VMMU_EXPORT int vmmu_vcpu_enter_guest_mode(vmmu_vcpu *v, const struct vmmu_nested_state *ns)
{
	struct nested_params p;
	struct vmmu_cpu_state s, cur;
	struct walk_cpu l2w, tables;
	struct vmmu_vcpu *self;
	bool reuse;
	int r;

	if (!v || !ns)
		return VMMU_EINVAL;
	if (!vm_runs_nested(v->vm))
		return VMMU_ENOTSUP;
	if (v->nested.active)
		return VMMU_EPERM;
	r = check_nested_state(v, ns);
	if (r)
		return r;
	p = (struct nested_params){ .root = v->vm->fmt.ept ? ns->eptp : ns->ncr3,
				    .exec_only = ns->flags & VMMU_NESTED_EXEC_ONLY, .l1 = &v->wcpu };
	nested_walk_cpu(v->vm, &p, &tables);
	/*
	 * VM entry loads CR0/CR3/CR4/EFER from the VMCS/VMCB as a whole, not
	 * as MOV to CR would one by one: what it checks is the state itself,
	 * so the "current" state the rules compare against is the new one.
	 */
	cur = ns->l2;
	/* (A VM entry in PAE paging loads the PDPTEs, as a MOV to CR3 does.) */
	r = vcpu_derive_state(v, &cur, &ns->l2, true, &s, &l2w, &tables);
	if (r)
		return r;

	self = vcpu_self_enter(v);
	v->nested.l1_arch = v->arch;
	v->nested.l1_wcpu = v->wcpu;
	v->nested.l1_pcid = v->pcid;
	v->nested.l1_pge = v->pge;
	v->nested.root = p.root;
	v->nested.vpid = ns->vpid;
	v->nested.active = true;
	reuse = nested_mmu_enter(v, &p);
	vcpu_apply_state(v, &s, &l2w);
	mmu_update_context(v);
	/* L2's writes are logged as guest_mmu makes their L1 pages writable. */
	v->pml.size = 0;
	l2_tlb_enter(v, ns, p.root);
	vcpu_self_exit(self);
	STAT_INC(v->stat.nested_entries);
	if (reuse)
		STAT_INC(v->stat.nested_root_reuses);
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_leave_guest_mode(vmmu_vcpu *v, struct vmmu_cpu_state *l2)
{
	struct vmmu_vcpu *self;

	if (!v)
		return VMMU_EINVAL;
	if (!v->nested.active)
		return VMMU_EPERM;
	if (l2)
		*l2 = v->arch;
	self = vcpu_self_enter(v);
	v->nested.active = false;
	nested_mmu_leave(v);
	vcpu_apply_state(v, &v->nested.l1_arch, &v->nested.l1_wcpu);
	v->pcid = v->nested.l1_pcid;
	v->pge = v->nested.l1_pge;
	mmu_update_context(v);
	v->pml.size = v->pml.l1_size;
	v->tlb = &v->tlbs[0];
	vcpu_self_exit(self);
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_in_guest_mode(vmmu_vcpu *v)
{
	return v && v->nested.active;
}

/*
 * What L1's TLB-invalidation instructions share: a nested-capable VM of the
 * right format (INVEPT/INVVPID for EPT, INVLPGA for NPT), run by L1 (the
 * instructions exit from L2).
 */
static int nested_inv_check(struct vmmu_vcpu *v, bool ept)
{
	if (!v)
		return VMMU_EINVAL;
	if (!vm_runs_nested(v->vm) || v->vm->fmt.ept != ept)
		return VMMU_ENOTSUP;
	if (v->nested.active)
		return VMMU_EPERM;
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_invept(vmmu_vcpu *v, unsigned type, uint64_t eptp)
{
	struct nested_vcpu *n;
	struct vmmu_vcpu *self;
	bool all;
	int r;

	r = nested_inv_check(v, true);
	if (r)
		return r;
	if (type != VMMU_INVEPT_SINGLE && type != VMMU_INVEPT_ALL)
		return VMMU_EINVAL;
	if (type == VMMU_INVEPT_SINGLE && check_eptp(v->vm, eptp))
		return VMMU_EINVAL;
	n = &v->nested;
	all = type == VMMU_INVEPT_ALL;
	self = vcpu_self_enter(v);
	/* Cached roots of those tables go (their next use reloads and syncs
	 * them), and so does every translation derived from them. */
	nested_mmu_invept(v, all, eptp);
	if (all || (n->tlb_tagged && nested_root_gfn(v->vm, n->tlb_root) == nested_root_gfn(v->vm, eptp)))
		tlb_flush(&v->tlbs[1]);
	vcpu_self_exit(self);
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_invvpid(vmmu_vcpu *v, unsigned type, uint16_t vpid, uint64_t gva)
{
	struct nested_vcpu *n;
	int r;

	r = nested_inv_check(v, true);
	if (r)
		return r;
	if (type > VMMU_INVVPID_SINGLE_NONGLOBAL || (type != VMMU_INVVPID_ALL && !vpid))
		return VMMU_EINVAL;
	/* The widest linear addresses there are (5-level): the instruction
	 * fails on a non-canonical one. */
	if (type == VMMU_INVVPID_ADDR && (uint64_t)((int64_t)(gva << 7) >> 7) != gva)
		return VMMU_EINVAL;
	n = &v->nested;
	if (type != VMMU_INVVPID_ALL && !(n->tlb_tagged && n->tlb_vpid == vpid))
		return 0;
	if (type == VMMU_INVVPID_ADDR)
		tlb_invalidate_gva(&v->tlbs[1], gva);
	else
		tlb_flush(&v->tlbs[1]);	/* type 3 may keep globals; dropping them too is allowed */
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_invlpga(vmmu_vcpu *v, uint64_t gva, uint32_t asid)
{
	struct nested_vcpu *n;

	int r = nested_inv_check(v, false);

	if (r)
		return r;
	n = &v->nested;
	if (n->tlb_tagged && n->tlb_vpid == asid)
		tlb_invalidate_gva(&v->tlbs[1], gva);
	return 0;
}
