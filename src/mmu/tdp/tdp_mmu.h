/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TDP_MMU_H
#define VMMU_TDP_MMU_H
/*
 * The TDP MMU: page tables that map gfn -> host page directly, built on
 * demand by faults that run under the READ side of mmu_lock and change SPTEs
 * only with cmpxchg.  Whole-range and whole-root zaps take the write side.
 *
 * Rules (docs/mmu.md, "Locking"):
 *  - an SPTE that a lockless walker (hardware A/D updates) can change is only
 *    ever replaced atomically (cmpxchg or xchg), and A/D state is read from
 *    the value the exchange returned;
 *  - a page table unlinked from its parent is frozen entry by entry (so a
 *    fault that still holds a pointer into it cannot install anything) and
 *    freed after an RCU grace period;
 *  - TLBs are flushed before the RCU read section that unlinked a table ends,
 *    so the free cannot overtake the flush.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmu/mmu.h"
#include "mmu/pt_arena.h"

struct tdp_root {
	struct pt_page *pt;
	int level;
	_Atomic int refcount;	/* the VM's reference while current + one per vCPU */
	_Atomic bool invalid;	/* [mmu_lock:W] obsolete: vCPUs must reload */
	struct tdp_root *next_obsolete;	/* [mmu_lock:W] on vm->obsolete_roots while invalid */
	struct rcu_head rcu;
	struct vmmu_vm *vm;
	/*
	 * Private VMs: the mirror of the security module's private table
	 * (mirror.h).  Never made obsolete (zap-all and memslot changes leave
	 * it), torn down at VM destroy only, never walked by the hardware.
	 */
	bool is_mirror;			/* [const] */
};

/* A referenced, valid root (allocated on first use). */
struct tdp_root *tdp_mmu_get_root(struct vmmu_vm *vm);
void tdp_mmu_put_root(struct vmmu_vm *vm, struct tdp_root *root);

/* mmu_lock held for read. */
int tdp_mmu_map(struct vmmu_vcpu *v, struct page_fault *fault);
/* mmu_lock held for write; returns whether a TLB flush is needed. */
/* Fault-around: map what is empty of [start, end) like the fault's page. */
unsigned int tdp_mmu_map_around(struct vmmu_vcpu *v, const struct page_fault *fault, uint64_t start, uint64_t end);
bool tdp_mmu_zap_leafs(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end);
/*
 * mmu_lock held for read, by an invalidation that published [start, end) and
 * waited out the faults that checked before: returns whether a flush is
 * needed.  Lockless (RCU): the first gfn of [start, end) that may hold a
 * translation, or end.
 */
bool tdp_mmu_zap_leafs_shared(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end);
uint64_t tdp_mmu_first_mapped(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end);
/*
 * mmu_lock held for write: obsoletes the current root (KVM's zap_all_fast).
 * Every vCPU is asked to reload (and waited out of guest mode), so nobody
 * walks the old root when this returns; its contents are zapped when its
 * last reference goes, not here.
 */
struct tdp_root *tdp_mmu_invalidate_root_locked(struct vmmu_vm *vm);

/*
 * Dirty logging: clear W (keeping MMU-writable) on every leaf in [start,
 * end), or on the leaves of the 4K pages base_gfn + i for each set bit i of
 * bitmap (nr_words words).  With VMMU_VM_PML, 4K leaves get D cleared
 * instead (their next write sets D and logs the page) and only huge leaves
 * lose W, so they split on their first write.  mmu_lock held for write; the
 * return value says a TLB flush is needed.
 */
bool tdp_mmu_log_protect_range(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end);
bool tdp_mmu_log_protect_bitmap(struct vmmu_vm *vm, struct tdp_root *root, uint64_t base_gfn, const uint64_t *bitmap,
			   uint64_t nr_words);

/*
 * mmu_lock held for write: no leaf may let the guest write gfn, nor restore
 * W without the MMU (write tracking, KVM's kvm_tdp_mmu_write_protect_gfn):
 * a 4K leaf loses W and MMU-writable, a huge leaf over gfn is zapped (the
 * next fault maps 4K, the region being tracked).  Returns whether a flush
 * is needed.
 */
bool tdp_mmu_write_protect_gfn(struct vmmu_vm *vm, struct tdp_root *root, uint64_t gfn);

/* Lockless (RCU): 4K pages of [start, end) mapped and accessed; clear ages them. */
uint64_t tdp_mmu_age_range(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end, bool clear);
/* mmu_lock held for write: split huge leaves in the range into 4K leaves. */
bool tdp_mmu_split_huge_range(struct vmmu_vm *vm, struct tdp_root *root, uint64_t start, uint64_t end);

/* Lockless (RCU): the last SPTE on gfn's path, for the fast page fault. */
uint64_t *tdp_mmu_fast_pf_get_last_sptep(struct vmmu_vm *vm, struct tdp_root *root, uint64_t gfn, uint64_t *spte,
					 int *level);

/* Lockless (RCU): the SPTE mapping gfn at the lowest level present. */
uint64_t tdp_mmu_get_spte(struct vmmu_vm *vm, struct tdp_root *root, uint64_t gfn, int *level);

/* mmu_lock held for write: 0, or -1 with the first violation in why;
 * counts[level] and *tables accumulate what the root holds. */
int tdp_mmu_audit(struct vmmu_vm *vm, struct tdp_root *root, uint64_t counts[PG_LEVEL_1G + 1], uint64_t *tables,
		  char *why, size_t len);

/*
 * Private VMs, mmu_lock held for write: remove the private (mirror) leaves
 * of [start, end), through the external ops, splitting first any private
 * huge page only partly inside.  0, or the error of the op that failed: the
 * SPTE it was for is unchanged (leaves before it are gone, which only
 * means they fault again).
 */
int tdp_mmu_zap_private_range(struct vmmu_vm *vm, uint64_t start, uint64_t end);

static inline uint64_t tdp_max_gfn(int root_level)
{
	return 1ULL << (9 * root_level);
}

#endif /* VMMU_TDP_MMU_H */
