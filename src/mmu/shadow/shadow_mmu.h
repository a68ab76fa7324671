/* SPDX-License-Identifier: MIT */
#ifndef VMMU_SHADOW_MMU_H
#define VMMU_SHADOW_MMU_H
/*
 * The shadow MMU (KVM's mmu.c + paging_tmpl.h without TDP): SPTE tables that
 * map guest-virtual addresses straight to host pages, built from the guest's
 * own page tables, which are write-protected (or let go out of sync) so the
 * shadow stays coherent with them.  docs/mmu.md §11 has the model, the
 * invariants and the locking; the short version:
 *
 *  - every shadow page (struct shadow_page) is keyed by (gfn, role) in a
 *    hash; gfn is the guest table it shadows (indirect) or the first gfn it
 *    maps (direct: guest huge pages, paging off);
 *  - every leaf SPTE is on its gfn's reverse map, every non-leaf SPTE on its
 *    child's parent list; both lists are KVM's pte_list (one inline entry,
 *    then descriptors);
 *  - a gfn shadowed by a valid indirect page is write-tracked: no SPTE maps
 *    it writable unless every shadow page of it is an unsync leaf;
 *  - all shadow state changes under mmu_lock held for WRITE; the hardware
 *    model walks the tables locklessly in guest mode and only ever sets A/D
 *    with cmpxchg, so every SPTE change the hardware could race is atomic.
 */
#include <stdbool.h>
#include <stdint.h>

#include <urcu/list.h>

#include "vm/memslot.h"
#include "mmu/spte.h"
#include "mmu/walk.h"

struct vmmu_vm;
struct vmmu_vcpu;
struct vmmu_exit;
struct walk_result;

/*
 * The role of a shadow page (KVM's kvm_mmu_page_role): everything besides the
 * gfn that decides what its SPTEs mean.  Two guest contexts share a shadow
 * page exactly when their roles are equal.
 */
union sp_role {
	uint32_t word;
	struct {
		unsigned int level : 4;
		unsigned int has_4_byte_gpte : 1;	/* 32-bit guest tables */
		unsigned int quadrant : 2;		/* which part of a 4-byte guest table */
		unsigned int direct : 1;		/* maps gfn.. linearly (no guest table) */
		unsigned int access : 3;		/* direct: ACC_* the guest granted above */
		unsigned int invalid : 1;		/* zapped, still a root of some vCPU */
		unsigned int efer_nx : 1;
		unsigned int cr0_wp : 1;
		unsigned int smep_andnot_wp : 1;
		unsigned int smap_andnot_wp : 1;
		unsigned int ad_disabled : 1;
		unsigned int guest_mode : 1;
		unsigned int passthrough : 1;
		/* vmmu's own: CR4.PKE with CR0.WP=0 (KVM has no PKU without
		 * TDP).  Like smap_andnot_wp, it forbids turning a user page into
		 * a writable supervisor one, which would escape its key. */
		unsigned int pke_andnot_wp : 1;
		/* vmmu's own: a direct page's protection key.  Its SPTEs carry
		 * the key of the guest huge page they map; two mappings of one
		 * frame with different keys must not share them. */
		unsigned int pkey : 4;
		/* vmmu's own: guest_mmu pages of an L1 that offers execute-only
		 * EPT (an R=0, X=1 entry is a mapping, not a misconfiguration);
		 * pages of L1s that do not must not share their SPTEs. */
		unsigned int ept_exec_only : 1;
		/* vmmu's own: CR4.PSE of a 32-bit guest, for which it decides
		 * whether a PDE with PS maps 4M or points to a page table: two
		 * vCPUs that read one PD differently must not share its shadow.
		 * (Always 0 otherwise: PAE and long mode read PS regardless.) */
		unsigned int cr4_pse : 1;
		unsigned int as_id : 6;			/* address space (KVM: SMM) */
	};
};
_Static_assert(sizeof(union sp_role) == sizeof(uint32_t), "sp_role must stay one word (hash key, compares)");

/*
 * The guest's paging state as the MMU sees it (KVM's kvm_cpu_role): the base
 * role of the guest's own tables plus what only the walker needs.  The MMU
 * context is rebuilt only when this, or the root role, really changes.
 */
union cpu_role_ext {
	uint32_t word;
	struct {
		unsigned int valid : 1;
		unsigned int cr0_pg : 1;
		unsigned int cr4_pae : 1;
		unsigned int cr4_pse : 1;
		unsigned int cr4_pke : 1;
		unsigned int cr4_smap : 1;
		unsigned int cr4_smep : 1;
		unsigned int cr4_la57 : 1;
		unsigned int efer_lma : 1;
		unsigned int : 23;
	};
};
union cpu_role {
	uint64_t as_u64;
	struct {
		union sp_role base;
		union cpu_role_ext ext;
	};
};
_Static_assert(sizeof(union cpu_role) == sizeof(uint64_t), "cpu_role must compare as one u64");

/* KVM's pte_list: 0, one SPTE pointer (bit 0 clear), or descriptors (bit 0 set). */
struct pte_list {
	uintptr_t val;
};
struct pte_list_desc;

struct shadow_page {
	struct shadow_page *hash_next;
	struct cds_list_head link;	/* active list: newest first, reclaim from the tail */
	struct cds_list_head unsync_link;
	gfn_t gfn;
	union sp_role role;
	bool unsync;
	bool tracked;			/* counted in its gfn's write_track (indirect, valid) */
	uint8_t write_flooding_count;
	unsigned int root_count;	/* vCPUs (current or previous roots) holding it */
	uint64_t valid_gen;		/* obsolete when != the VM's shadow generation */
	uint64_t *spt;			/* the table (a pt_arena page) */
	struct pt_page *pt;
	gfn_t *gfns;			/* indirect leaf pages: the gfn each SPTE maps */
	struct pte_list parent_ptes;	/* non-leaf SPTEs that point here */
};

/* Per-memslot shadow data, shared by every snapshot of the slot. */
struct shadow_slot {
	struct pte_list *rmap;		/* per 4K page: leaf SPTEs mapping it */
	uint16_t *write_track;		/* per page: valid indirect shadow pages of it */
	/*
	 * Tracked gfns per 2M ([0]) and 1G ([1]) region, indexed by
	 * (gfn >> 9 or 18) - (base_gfn >> 9 or 18): a huge TDP mapping over a
	 * tracked gfn would let L1 write its nested guest's tables unseen
	 * (KVM's disallow_lpage counts).  [mmu_lock:W], read under either side.
	 */
	uint32_t *track_lpage[2];
	size_t map_size;		/* every array, one lazily-backed mapping */
	/* Sums over the arrays, so the audit need not visit every page of a
	 * 2^31-page slot to know nothing is listed that should not be. */
	uint64_t nr_rmap, nr_tracked;	/* [mmu_lock:W] */
};

#define SHADOW_HASH_BITS 12
#define SHADOW_MIN_FREE_PAGES 8		/* a fault needs at most 5 tables + a margin */

struct shadow_vm {
	struct shadow_page *hash[1u << SHADOW_HASH_BITS];	/* [mmu_lock:W] */
	struct cds_list_head active;	/* [mmu_lock:W] */
	struct cds_list_head unsync;	/* [mmu_lock:W] */
	uint64_t nr_pages;		/* [mmu_lock:W] */
	uint64_t nr_unsync;		/* [mmu_lock:W] */
	uint64_t nr_leaves;		/* [mmu_lock:W] present 4K leaf SPTEs (read locklessly by stats) */
	uint64_t max_pages;		/* [const] */
	uint64_t valid_gen;		/* [mmu_lock:W] bumped by zap-all */
	/* Orders physical stores against new pages' write tracking: both
	 * sides do an RMW here between their store and their load
	 * (shadow_track_barrier), which TSan can follow and a fence it cannot. */
	_Atomic uint64_t track_sync;
	_Atomic uint64_t created, zapped, recycled, pte_writes, flooded;
};

/* A cached root: the guest CR3 it shadows and its role (KVM's kvm_mmu_root_info). */
struct shadow_root_info {
	uint64_t pgd;
	union sp_role role;
	struct shadow_page *sp;
};

#define SHADOW_DESC_CACHE 8	/* a fault adds one rmap entry and up to 5 parent entries */
struct shadow_desc_cache {
	int nr;
	struct pte_list_desc *d[SHADOW_DESC_CACHE];
};

/*
 * A shadow MMU context (KVM's struct kvm_mmu for an indirect MMU): the guest
 * tables it shadows, their role, and its roots.  A vCPU has two (seed 003):
 * root_mmu shadows the guest's own page tables under shadow paging, and
 * guest_mmu shadows L1's EPT/NPT tables for a nested guest, so that each
 * keeps its roots and previous roots across L1 <-> L2 switches.  [vcpu]
 */
struct shadow_ctx {
	struct walk_cpu w;		/* the tables shadowed: the guest's paging, or L1's EPT/NPT */
	union sp_role root_role;
	/* guest_mmu: SPTEs map L2 guest-physical addresses and are walked by
	 * the TDP walker, in the VM's EPT/NPT format; root_mmu: they map
	 * linear addresses, in the legacy format, walked by shadow_hw_walk. */
	bool nested;
	bool pae_root_mode;		/* root level 3: four PDPTE-like entries */
	struct shadow_root_info root;	/* 4/5-level root */
	struct shadow_page *pae_sp[4];
	uint64_t pae_root[4];		/* what the hardware reads in PAE-root mode */
	unsigned int nr_prev;
	struct shadow_root_info prev[VMMU_MAX_PREV_ROOTS];
};

/* Per-vCPU shadow state ([vcpu] unless said otherwise). */
struct shadow_vcpu {
	struct shadow_desc_cache desc_cache;
	union cpu_role cpu_role;	/* of the guest state the vCPU runs now */
	struct shadow_ctx root_mmu;
	struct shadow_ctx guest_mmu;
	struct shadow_ctx *mmu;		/* the context in use; NULL under TDP (L1 of a TDP VM) */
};

/* ---- VM and memslots --------------------------------------------------------------- */
int shadow_vm_init(struct vmmu_vm *vm);
void shadow_vm_destroy(struct vmmu_vm *vm);
int shadow_slot_alloc(struct memslot *s);
void shadow_slot_free(struct memslot *s);

/* ---- roots and contexts (vCPU thread) ---------------------------------------------- */
union cpu_role shadow_calc_cpu_role(const struct vmmu_vcpu *v);
/* The guest's state changed: recompute roles; returns whether the context was rebuilt. */
bool mmu_update_context(struct vmmu_vcpu *v);
/* Loads the context in use (v->sh.mmu). */
int shadow_mmu_load(struct vmmu_vcpu *v);
/* Drops the roots of both contexts (previous ones too with prev_too). */
void shadow_mmu_unload(struct vmmu_vcpu *v, bool prev_too);
void shadow_ctx_unload(struct vmmu_vcpu *v, struct shadow_ctx *c, bool prev_too);
void shadow_ctx_drop_pgd(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t pgd, bool all);
/* Whether what c has loaded may still be walked. */
bool shadow_ctx_roots_valid(const struct vmmu_vcpu *v, const struct shadow_ctx *c);
void shadow_ctx_load_hw_root(struct vmmu_vcpu *v, const struct shadow_ctx *c);
/*
 * The walk of guest tables (rules wc) for addr, as the MMU makes it (A/D
 * set in guest memory): WALK_OK with *wr, WALK_FAULT, or < 0 when a table
 * is not RAM or its slot is changing.  RCU read side.
 */
int shadow_walk_guest(struct vmmu_vcpu *v, const struct walk_cpu *wc, uint64_t addr, unsigned int walk_access,
		      struct walk_result *wr);
/* c's top table changed (c->w.root), role unchanged: fast switch or reload. */
void shadow_ctx_new_pgd(struct vmmu_vcpu *v, struct shadow_ctx *c, bool noflush);
void shadow_vcpu_free(struct vmmu_vcpu *v);
/* A new CR3 or PDPTEs under an unchanged role (after the state is applied):
 * fast switch or reload. */
void shadow_new_pgd(struct vmmu_vcpu *v, bool noflush);
/* INVLPG: the hardware TLB is the caller's; this syncs the SPTE of gva in every root. */
void shadow_invlpg(struct vmmu_vcpu *v, uint64_t gva);
/* A guest TLB flush that must also bring unsync pages up to date. */
void shadow_sync_roots(struct vmmu_vcpu *v);

/* ---- the data path ------------------------------------------------------------------ */
/* Outcome of a shadow page fault, beyond the RET_PF_* code. */
struct shadow_fault {
	uint64_t gpa;			/* the guest walk's translation (MMIO, emulation) */
	uintptr_t hva;			/* ptwrite: where the store goes */
	bool guest_fault;		/* res says what to inject */
	bool ptwrite;			/* a store to a write-protected guest table: emulate it */
	bool readonly_write;
	bool ept_misconfig;		/* nested: L1's EPT is misconfigured there */
	int host_error;
	uint8_t vector;
	uint32_t error_code;
	uint64_t fault_addr;
};
int shadow_page_fault(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t gva, unsigned int walk_access,
		      uint32_t hw_error,
		      struct shadow_fault *out);
/*
 * A guest store the MMU performs itself: to a write-protected guest page
 * table (emulation), or a physical store (VMMU_ACCESS_PHYS).  The bytes land
 * in guest memory, then shadow pages of the gfn are updated or zapped.
 */
void shadow_emulated_store(struct vmmu_vcpu *v, uint64_t gpa, uintptr_t hva, const void *buf, unsigned int n);
/*
 * After a physical store the caller made itself into guest memory (gfn was
 * not write-tracked when it looked): if it is now, the shadow pages built
 * meanwhile hear of the store; dirty logging either way.  RCU read side.
 */
void shadow_phys_store_done(struct vmmu_vcpu *v, const struct memslot *s, uint64_t gpa, unsigned int n);
/* Whether a store to gfn must go through shadow_emulated_store (lockless hint;
 * exact under mmu_lock, either side). */
bool shadow_gfn_write_tracked(const struct memslot *s, gfn_t gfn);
/* No shadow page shadows gfn any more (it can be written); mmu_lock taken here. */
void shadow_unprotect_gfn(struct vmmu_vm *vm, gfn_t gfn);
/* Whether the level-sized region around gfn holds a tracked gfn (likewise). */
bool shadow_lpage_tracked(const struct memslot *s, gfn_t gfn, int level);
/*
 * A TDP write fault on a tracked gfn (L1 writing a table its nested guest's
 * shadow pages shadow): let the gfn's shadow pages go out of sync if they
 * may, so that L1 maps it writable.  mmu_lock held for write; false when
 * the gfn must stay write-protected (the store is then emulated).
 */
bool shadow_gfn_try_unsync(struct vmmu_vm *vm, gfn_t gfn);

/* ---- host-side operations (mmu_lock held for write) --------------------------------- */
bool shadow_zap_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end);
/* Zap every shadow page of gfns in [start, end) as well (memslot delete/move). */
void shadow_zap_slot_pages(struct vmmu_vm *vm, gfn_t start, gfn_t end);
void shadow_zap_all(struct vmmu_vm *vm);
bool shadow_wrprot_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end);
bool shadow_wrprot_bitmap(struct vmmu_vm *vm, gfn_t base, const uint64_t *bitmap, uint64_t nr_words);
uint64_t shadow_age_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end, bool clear);
/* 0, or -1 with the first violation in why; *tables accumulates the pages. */
int shadow_audit(struct vmmu_vm *vm, uint64_t *tables, char *why, size_t len);

#endif /* VMMU_SHADOW_MMU_H */
