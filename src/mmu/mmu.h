/* SPDX-License-Identifier: MIT */
#ifndef VMMU_MMU_H
#define VMMU_MMU_H
/*
 * The MMU's page-fault entry: what the hardware model calls on an EPT
 * violation / misconfiguration (or NPT #NPF), KVM's kvm_mmu_page_fault().
 */
#include <stdbool.h>
#include <stdint.h>

#include "vm/memslot.h"
#include "vm/vmmu_int.h"

/* Page-fault error code bits (SDM 4.7), as KVM builds them from exits. */
#define PFERR_PRESENT_MASK (1u << 0)
#define PFERR_WRITE_MASK (1u << 1)
#define PFERR_USER_MASK (1u << 2)
#define PFERR_RSVD_MASK (1u << 3)
#define PFERR_FETCH_MASK (1u << 4)

/* Outcomes of a fault (KVM's RET_PF_*); all >= 0. */
enum ret_pf {
	RET_PF_CONTINUE = 0,	/* keep going (internal to the handler) */
	RET_PF_RETRY,		/* lost a race or raced an invalidation: let the access retry */
	RET_PF_EMULATE,		/* MMIO or write to read-only memory: the caller emulates */
	RET_PF_INVALID,		/* the MMIO fast path could not decide: take the slow path */
	RET_PF_FIXED,		/* a mapping was installed */
	RET_PF_SPURIOUS,	/* the mapping already allowed the access */
	RET_PF_FAULT,		/* host memory unusable: exit to the caller */
	RET_PF_GUEST_FAULT,	/* shadow paging: the guest's own tables fault */
};

struct page_fault {
	gpa_t addr;
	uint32_t error_code;
	bool present, write, exec, rsvd;
	/* Private VMs: an input, from the gpa's shared bit (seed 001: "is_private
	 * is input ... gfn and slot are working variables"); gfn is the gpa
	 * without the shared bit. */
	bool is_private;
	bool mmu_seq_valid;	/* mmu_seq sampled already (before the attributes) */
	int level_cap;		/* 0, or the largest level the attributes allow */

	gfn_t gfn;
	const struct memslot *slot;
	int max_level;		/* bounded by slot, alignment and the VM */
	int goal_level;		/* level the leaf is installed at */

	uintptr_t hva;
	uint64_t pfn;		/* of the first 4K page of the goal-level mapping */
	bool map_writable;
	uint64_t mmu_seq;

	bool is_mmio;
	uint64_t mmio_gen;
	bool readonly_write;	/* write to a READONLY slot: emulate as MMIO */
	/*
	 * The gfn is write-tracked (a table shadowed for a nested guest): it is
	 * mapped without W, and a write to it is emulated (ptwrite, with hva
	 * where the store goes) unless its shadow pages may go out of sync.
	 */
	bool write_tracked;
	bool ptwrite;
	int host_error;		/* VMMU_E* when RET_PF_FAULT */
	/*
	 * Fault-around (VMMU_VM_NO_FAULT_AROUND): may_around is an input (a
	 * TDP fault of L1's own); around_end the gfn after the pages whose host
	 * memory mmu_faultin() made exist with this one's, to be mapped ahead.
	 */
	bool may_around;
	gfn_t around_end;
};

int mmu_page_fault(struct vmmu_vcpu *v, gpa_t gpa, uint32_t error_code, struct page_fault *out);
/*
 * The host side of a fault (KVM's kvm_faultin_pfn): fills slot, hva, pfn,
 * map_writable and mmu_seq for fault->gfn, or says MMIO / emulate / retry /
 * fault.  Shared by the TDP and shadow MMUs.
 */
int mmu_faultin(struct vmmu_vcpu *v, struct page_fault *fault);
/*
 * Host-side operations on gfn ranges, for whichever MMU the VM has; mmu_lock
 * held for write.  They return whether a remote TLB flush is needed.
 */
bool mmu_zap_gfn_range_locked(struct vmmu_vm *vm, gfn_t start, gfn_t end);
/* Dirty logging: write-protect (VMMU_VM_PML, TDP: clear D on 4K leaves). */
bool mmu_log_protect_range_locked(struct vmmu_vm *vm, gfn_t start, gfn_t end);
bool mmu_log_protect_bitmap_locked(struct vmmu_vm *vm, gfn_t base, const uint64_t *bitmap, uint64_t nr_words);
/*
 * gfn became write-tracked (a shadow page now shadows it): no TDP mapping
 * may let the guest write it any more.  mmu_lock held for write; returns
 * whether a remote TLB flush is needed.
 */
bool mmu_write_protect_tracked_gfn_locked(struct vmmu_vm *vm, gfn_t gfn);
/* Counts a fault's outcome in the vCPU's stats; returns r. */
int mmu_count_pf_result(struct vmmu_vcpu *v, int r);
/* The fast_page_fault trace event (seed 002 patch 7). */
void mmu_trace_fast_pf(struct vmmu_vcpu *v, uint64_t addr, uint32_t error_code, const uint64_t *sptep, uint64_t old,
		       uint64_t new_spte, bool fixed);
/*
 * The PAGE_FAULT trace event of a fault that began at t0 (vm_trace_now())
 * and returned r (RET_PF_*); level: where a fixed fault mapped, or 0.
 */
void mmu_trace_pf(struct vmmu_vcpu *v, uint64_t t0, uint64_t addr, uint32_t error_code, int r, int level,
		  uint32_t flags);
/* Under mmu_lock (TDP: inside the vCPU's install section, vcpu_install_begin):
 * an invalidation of the mapping's hva range is open or raced with the
 * fault's host fault-in. */
bool mmu_invalidate_retry(struct vmmu_vm *vm, const struct page_fault *fault);
/* Loads a valid root into the vCPU (KVM's kvm_mmu_load); 0 or VMMU_ENOMEM. */
int mmu_load(struct vmmu_vcpu *v);
void mmu_unload(struct vmmu_vcpu *v);

#endif /* VMMU_MMU_H */
