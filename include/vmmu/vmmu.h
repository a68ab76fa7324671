/* SPDX-License-Identifier: MIT */
/*
 * vmmu: the x86 MMU of a hypervisor, as a userspace library.
 *
 * This is the one public header. Every handle is opaque. A VM has a
 * create/destroy pair; a vCPU is created with vmmu_vcpu_create() and lives
 * until its VM is destroyed (as in KVM, one vCPU cannot be destroyed alone).
 * Every fallible call returns 0 or a negative VMMU_E* code (see
 * vmmu_strerror()); a call that fails leaves the VM unchanged.
 *
 * ABI growth: every struct the embedder passes in has a struct_size field.
 * 0 means the layout of this header version, so callers that zero-initialize
 * (memset, designated initializers) keep working; a later version appends
 * fields after it and reads only the bytes a caller's struct_size covers.
 * A struct_size larger than vmmu knows is accepted when the unknown bytes are
 * zero (VMMU_ENOTSUP otherwise); a smaller non-zero one is VMMU_EINVAL.
 * Reserved and pad fields must be zero.  Output structs keep spare room
 * (reserved[]) that vmmu writes as zero.  vmmu_check_extension() and
 * vmmu_vm_config_supported() say what this build and host support.
 *
 * Threading: a VM may be used from any number of threads. A vCPU is driven by
 * one thread at a time (the embedder's vCPU thread); different vCPUs run in
 * parallel. See docs/mmu.md for the locking rules behind these promises.
 *
 * fork(): a child may keep using vmmu -- the VMs and vCPUs it inherited, and
 * new ones -- provided no other thread of the parent was inside a vmmu call
 * when fork() was called (a lock or an RCU read section held by a thread
 * that does not exist in the child is never released).  vmmu registers
 * liburcu's call_rcu fork hooks with pthread_atfork() for this.  A child
 * that only calls exec or _exit needs nothing.
 */
#ifndef VMMU_VMMU_H
#define VMMU_VMMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(VMMU_BUILDING)
#define VMMU_EXPORT __attribute__((visibility("default")))
#else
#define VMMU_EXPORT
#endif

/* ------------------------------------------------------------------------ */
/* Result codes. Negative errno-like values; 0 is success.                   */

#define VMMU_OK        0
#define VMMU_EPERM    (-1)   /* operation not allowed in this state            */
#define VMMU_ENOENT   (-2)   /* no such memslot / object                        */
#define VMMU_EIO      (-5)   /* the VM is bugged: an internal invariant broke   */
#define VMMU_EAGAIN   (-11)  /* transient; try again                            */
#define VMMU_ENOMEM   (-12)  /* out of memory (host or page-table arena)        */
#define VMMU_EFAULT   (-14)  /* host address unusable (unmapped, not writable)  */
#define VMMU_EBUSY    (-16)  /* object in use                                   */
#define VMMU_EEXIST   (-17)  /* overlaps an existing memslot / id taken         */
#define VMMU_EINVAL   (-22)  /* bad argument                                    */
#define VMMU_ENOSPC   (-28)  /* a fixed-size table is full                      */
#define VMMU_ERANGE   (-34)  /* address beyond MAXPHYADDR / the slot            */
#define VMMU_ENOTSUP  (-95)  /* valid request this build/host cannot do         */

/* vmmu_vcpu_access() returns this (> 0) when *exit says why it stopped;
 * vmmu_strerror() names it too. */
#define VMMU_EXIT      1

VMMU_EXPORT const char *vmmu_strerror(int err);

/* ------------------------------------------------------------------------ */
/* VM                                                                        */

typedef struct vmmu_vm vmmu_vm;
typedef struct vmmu_vcpu vmmu_vcpu;

enum vmmu_mmu_kind {
	VMMU_MMU_TDP = 0,	/* two-dimensional paging (EPT or NPT tables)      */
	/*
	 * Shadow paging (no TDP hardware): vmmu builds gva -> host tables from
	 * the guest's own page tables, write-protects those tables to keep them
	 * coherent, and caches roots per (CR3, role).  tdp_format, tdp_levels
	 * and VMMU_VM_AD_DISABLED do not apply (VMMU_EINVAL for the flag).
	 */
	VMMU_MMU_SHADOW = 1,
};

enum vmmu_tdp_format {
	VMMU_TDP_EPT = 0,	/* Intel EPT entries (R/W/X, memtype, misconfig)   */
	VMMU_TDP_NPT = 1,	/* AMD NPT: the legacy x86-64 PTE format           */
};

/* vmmu_vm_config.flags */
#define VMMU_VM_AD_DISABLED   (1u << 0)	/* no hardware A/D in SPTEs: access tracking */
#define VMMU_VM_NO_HUGEPAGES  (1u << 1)	/* map everything at 4K                      */
#define VMMU_VM_NO_FAST_PF    (1u << 2)	/* no lockless fast page fault (seed 002's "before") */
/* Dirty logging as KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: vmmu_get_dirty_log()
 * only reports; vmmu_clear_dirty_log() clears and re-protects. */
#define VMMU_VM_MANUAL_PROTECT (1u << 3)
/* With MANUAL_PROTECT: a newly logged slot starts with every page reported
 * dirty and nothing write-protected (KVM_DIRTY_LOG_INITIALLY_SET). */
#define VMMU_VM_DIRTY_INIT_SET (1u << 4)
/* Split huge mappings of a slot when its logging starts (KVM's eager page
 * splitting), instead of on its first write fault. */
#define VMMU_VM_EAGER_SPLIT (1u << 5)
/*
 * Dirty logging with Page-Modification Logging instead of write protection
 * (TDP with A/D bits only: VMMU_EINVAL with VMMU_MMU_SHADOW or
 * VMMU_VM_AD_DISABLED).  Logging clears the D bits of a slot's 4K SPTEs;
 * the hardware model appends the gpa of every page whose D bit it sets to a
 * per-vCPU buffer (pml_entries entries), drained into the bitmaps / rings
 * when full and whenever the vCPU leaves guest mode; a harvest clears D
 * again instead of W.  Huge pages of logged slots are still write-protected
 * (they split to 4K on their first write).  Real PML exists on Intel EPT
 * only; vmmu's model works the same with both TDP formats.
 */
#define VMMU_VM_PML (1u << 6)
/*
 * Nested virtualization, for measuring seed 003: one MMU for both levels,
 * reset on every L1 <-> L2 switch (KVM before its guest_mmu), instead of a
 * guest_mmu whose roots survive L1 excursions.  Correct, only slower.
 */
#define VMMU_VM_NESTED_ONE_MMU (1u << 7)
/*
 * Time where an access's nanoseconds go, per vCPU (the time_* counters of
 * vmmu_vcpu_stats): the MMU's fault handling, the host fault-in within it,
 * the hardware model's walks on TLB misses, and the copy.  Each measurement
 * costs a clock read, so only for explaining a benchmark.
 */
#define VMMU_VM_TIMING (1u << 8)
/*
 * A confidential VM (Intel TDX; AMD SEV-SNP has the same shape), TDP only
 * (VMMU_ENOTSUP with VMMU_MMU_SHADOW).  Guest-physical addresses come in two
 * aliases told apart by the shared bit (vmmu_vm_config.shared_bit): with it
 * set an access is *shared* (ordinary memory through the slot's hva, mapped
 * by the normal TDP root); without it, *private* (memory vmmu owns for
 * VMMU_MEM_PRIVATE slots, mapped by a mirror root whose every change is
 * propagated into the real private table of a security module through the
 * external ops below).  Memslots and memory attributes are addressed by the
 * gpa without the shared bit.  docs/mmu.md section 13.
 */
#define VMMU_VM_PRIVATE (1u << 9)
/*
 * No fault-around.  By default a TDP fault that continues a vCPU's
 * sequential first touch (it hits the page after the last one it mapped)
 * makes the host pages of the next VMMU_FAULT_AROUND_PAGES (aligned, in
 * the same memslot, host protection and 2M region) exist with one host call
 * and maps them not-accessed, as a 64K anonymous folio of the host kernel
 * would (mTHP): the guest's next touches find them mapped.  Never for slots
 * being logged, private VMs, VMs without A/D, or while shadow pages track
 * guest tables.  The pages it maps count in fault_around_pages; host memory
 * the guest then never touches is the cost, at most 15 pages per fault.
 */
#define VMMU_VM_NO_FAULT_AROUND (1u << 10)
#define VMMU_FAULT_AROUND_PAGES 16

struct vmmu_vm_config {
	uint32_t mmu;		/* enum vmmu_mmu_kind                          */
	uint32_t tdp_format;	/* enum vmmu_tdp_format                        */
	uint32_t tdp_levels;	/* 4 or 5 (EPT/NPT root level)                 */
	uint32_t maxphyaddr;	/* guest MAXPHYADDR, 36..52 (TDP 4-level: 48)  */
	uint32_t flags;		/* VMMU_VM_*                                   */
	uint32_t max_vcpus;	/* 1..VMMU_MAX_VCPUS                           */
	uint64_t pt_arena_bytes;	/* address space reserved for page tables; 0 = default */
	/*
	 * Dirty ring (KVM_CAP_DIRTY_LOG_RING): entries per vCPU, a power of two
	 * from 1024 to VMMU_DIRTY_RING_MAX_ENTRIES, or 0 for bitmaps.  With rings, dirty pages of logged slots go
	 * to the ring of the vCPU that dirtied them and the bitmap calls fail.
	 */
	uint32_t dirty_ring_size;
	/*
	 * Shadow paging: roots kept besides the current one for fast CR3
	 * switches (KVM_MMU_NUM_PREV_ROOTS), 0..VMMU_MAX_PREV_ROOTS; default 3.
	 */
	uint32_t shadow_prev_roots;
	/*
	 * Shadow paging: most shadow pages the VM holds; past it the oldest
	 * unused ones are recycled (KVM's n_max_mmu_pages).  0 = default (what
	 * the page-table arena holds, less a reserve); at least 64.
	 */
	uint64_t shadow_max_pages;
	/*
	 * VMMU_VM_PML: entries of each vCPU's PML buffer, a power of two from
	 * 16 to 512; 0 = 512 (Intel's size).  A smaller buffer only makes
	 * "PML full" exits more frequent (tests use it to reach them: with 512
	 * entries one guest-mode stretch cannot fill the buffer).
	 */
	uint32_t pml_entries;
	/* sizeof(struct vmmu_vm_config), or 0: see "ABI growth" above. */
	uint32_t struct_size;
	/*
	 * VMMU_VM_PRIVATE: the GPA bit that selects the shared alias, or 0 to
	 * derive it as TDX does (bit 47 with 4-level TDP, bit 51 with 5-level).
	 * Must be at least 32 and below maxphyaddr (so MAXPHYADDR 48 or 52 for
	 * the derived bits); VMMU_EINVAL otherwise, and without VMMU_VM_PRIVATE.
	 */
	uint32_t shared_bit;
	uint32_t pad0;
};

#define VMMU_MAX_VCPUS 256
#define VMMU_MAX_PREV_ROOTS 8
#define VMMU_DIRTY_RING_MAX_ENTRIES 65536	/* KVM's KVM_DIRTY_RING_MAX_ENTRIES */

/* Fills *cfg with defaults: TDP, EPT, 4 levels, MAXPHYADDR 46, A/D on, hugepages on,
 * 3 previous roots, struct_size set.  Does nothing for NULL. */
VMMU_EXPORT void vmmu_vm_config_init(struct vmmu_vm_config *cfg);
/*
 * 0 if vmmu_vm_create() would accept cfg in this build on this host, or the
 * error it would return (VMMU_EINVAL, VMMU_ENOTSUP); creates nothing.
 */
VMMU_EXPORT int vmmu_vm_config_supported(const struct vmmu_vm_config *cfg);

/* Capabilities for vmmu_check_extension() (KVM_CHECK_EXTENSION). */
enum vmmu_cap {
	VMMU_CAP_TDP_EPT = 1,		/* VMMU_TDP_EPT tables */
	VMMU_CAP_TDP_NPT = 2,		/* VMMU_TDP_NPT tables */
	VMMU_CAP_TDP_5LEVEL = 3,	/* tdp_levels 5, MAXPHYADDR 52 */
	VMMU_CAP_SHADOW = 4,		/* VMMU_MMU_SHADOW */
	VMMU_CAP_PML = 5,		/* VMMU_VM_PML */
	VMMU_CAP_DIRTY_RING = 6,	/* dirty rings: the most entries per vCPU */
	VMMU_CAP_MANUAL_PROTECT = 7,	/* VMMU_VM_MANUAL_PROTECT, VMMU_VM_DIRTY_INIT_SET */
	VMMU_CAP_EAGER_SPLIT = 8,	/* VMMU_VM_EAGER_SPLIT */
	VMMU_CAP_HUGETLB_2M = 9,	/* the host offers 2M hugetlb pages (VMMU_BACKING_HUGETLB) */
	VMMU_CAP_HUGETLB_1G = 10,	/* ... 1G ones */
	VMMU_CAP_THP = 11,		/* the host's transparent huge pages are on (always or madvise) */
	VMMU_CAP_MAX_VCPUS = 12,	/* VMMU_MAX_VCPUS */
	VMMU_CAP_MAX_MEMSLOTS = 13,	/* VMMU_MAX_MEMSLOTS */
	VMMU_CAP_ACCESS_NOWAIT = 14,	/* VMMU_ACCESS_NOWAIT, VMMU_EXIT_RETRY */
	VMMU_CAP_NESTED = 15,		/* nested virtualization (vmmu_vcpu_enter_guest_mode) */
	VMMU_CAP_PRIVATE_MEM = 16,	/* private (confidential-VM) memory (VMMU_VM_PRIVATE) */
};
/* 0 when cap is unsupported or unknown to this build; > 0 when it is
 * supported (the limit, for the caps that name one). */
VMMU_EXPORT int vmmu_check_extension(uint32_t cap);
VMMU_EXPORT int  vmmu_vm_create(const struct vmmu_vm_config *cfg, vmmu_vm **out);
/* Destroys the VM and its vCPUs. No vCPU may be inside vmmu_vcpu_access(). */
VMMU_EXPORT void vmmu_vm_destroy(vmmu_vm *vm);

/* ------------------------------------------------------------------------ */
/* Memslots (KVM_SET_USER_MEMORY_REGION semantics)                           */

/* vmmu_memslot.flags */
#define VMMU_MEM_LOG_DIRTY_PAGES (1u << 0)
#define VMMU_MEM_READONLY        (1u << 1)	/* guest writes exit as MMIO writes */
/*
 * VMMU_VM_PRIVATE only (guest_memfd's role, KVM_MEM_GUEST_MEMFD): the slot
 * also has private backing that vmmu allocates and never exposes (no hva of
 * it is ever returned), used for the gfns whose attribute is private.  Not
 * with READONLY (VMMU_EINVAL) or dirty logging (VMMU_ENOTSUP: private pages
 * cannot be write-protected); such a slot cannot be moved (VMMU_EINVAL),
 * and the flag cannot be toggled.
 */
#define VMMU_MEM_PRIVATE         (1u << 2)

/* vmmu_memslot.backing, used only when hva == NULL (vmmu allocates) */
enum vmmu_backing {
	VMMU_BACKING_ANON = 0,	/* anonymous memory, THP when host_page_size is 2M */
	VMMU_BACKING_HUGETLB = 1,	/* MAP_HUGETLB of host_page_size (2M or 1G)      */
};

struct vmmu_memslot {
	uint32_t slot;		/* slot id, < VMMU_MAX_MEMSLOTS                */
	uint32_t flags;		/* VMMU_MEM_*                                  */
	uint64_t gpa;		/* page aligned                                */
	uint64_t size;		/* page aligned; 0 deletes the slot            */
	void *hva;		/* caller's page-aligned backing, or NULL      */
	uint64_t host_page_size;	/* 4K, 2M or 1G: bounds the mapping level; 0 = 4K */
	uint32_t backing;	/* enum vmmu_backing, used when hva == NULL    */
	uint32_t struct_size;	/* sizeof(struct vmmu_memslot), or 0 (ABI growth) */
};

#define VMMU_MAX_MEMSLOTS 512

/*
 * Creates, deletes (size 0), moves (same id, new gpa) or changes the flags of
 * a memslot. The size, hva and host page size of an existing slot cannot
 * change, READONLY cannot be toggled. Rejected requests change nothing.
 */
VMMU_EXPORT int vmmu_set_memslot(vmmu_vm *vm, const struct vmmu_memslot *slot);
/*
 * Dirty logging (slots with VMMU_MEM_LOG_DIRTY_PAGES).  bitmap has one bit per
 * page of the slot (bit i of word i/64 = page i).  Never lost: every guest
 * write is reported by at least one harvest, at the latest by the first
 * harvest that begins after both the write and the fault that made its page
 * writable have returned; a harvest that runs while the write is in flight
 * may report it already (and the next one then need not).  (A vCPU can write
 * through an SPTE another vCPU's fault has just made writable, before that
 * fault has marked the page: as in KVM, the mark then lands a harvest later.)
 *  - vmmu_get_dirty_log(): copies the slot's dirty bitmap out; without
 *    VMMU_VM_MANUAL_PROTECT it also clears it and write-protects the pages it
 *    returned, so their next write is caught; TLBs are flushed before it
 *    returns.
 *  - vmmu_clear_dirty_log() (VMMU_VM_MANUAL_PROTECT only): clears the given
 *    bits over [first_page, first_page + num_pages) and write-protects those
 *    pages.  first_page must be a multiple of 64, and num_pages too unless the
 *    range ends at the end of the slot.
 * VMMU_ENOENT for an unknown slot, VMMU_EINVAL when it does not log.
 */
VMMU_EXPORT int vmmu_get_dirty_log(vmmu_vm *vm, uint32_t slot, uint64_t *bitmap);
VMMU_EXPORT int vmmu_clear_dirty_log(vmmu_vm *vm, uint32_t slot, uint64_t first_page, uint32_t num_pages,
				     const uint64_t *bitmap);

/*
 * Dirty ring entries, with KVM's protocol: vmmu publishes an entry with
 * flags = VMMU_DIRTY_GFN_DIRTY (release); the embedder reads it (acquire),
 * takes slot/offset (page index in the slot), and stores flags =
 * VMMU_DIRTY_GFN_HARVESTED (release); vmmu_reset_dirty_rings() then
 * write-protects the harvested pages again and frees their entries, in ring
 * order.  A vCPU whose ring is nearly full stops with
 * VMMU_EXIT_DIRTY_RING_FULL before doing anything; harvest and reset, then
 * run it again.
 */
#define VMMU_DIRTY_GFN_DIRTY (1u << 0)
#define VMMU_DIRTY_GFN_HARVESTED (1u << 1)
struct vmmu_dirty_gfn {
	uint32_t flags;		/* access with atomics: the ring's handshake */
	uint32_t slot;
	uint64_t offset;
};
/* The vCPU's ring (owned by vmmu, valid until the VM is destroyed). */
VMMU_EXPORT int vmmu_vcpu_dirty_ring(vmmu_vcpu *vcpu, struct vmmu_dirty_gfn **entries, uint32_t *size);
/* Re-protects and frees every harvested entry of every vCPU; returns the
 * number of entries reset (>= 0) or a VMMU_E* code. */
VMMU_EXPORT int vmmu_reset_dirty_rings(vmmu_vm *vm);

/*
 * Aging (what reclaim asks through MMU notifiers): the number of mapped pages
 * of [gfn_start, gfn_end) accessed since their last clear; with clear, their
 * accessed state is cleared too (A bits, or access tracking without A/D).
 * Lockless for TDP; no TLB flush, so a page used only through a cached
 * translation may look old, as in KVM.  gfn_end is clamped to the guest's
 * MAXPHYADDR, so [0, UINT64_MAX) means every page.
 */
VMMU_EXPORT int vmmu_age_gfn_range(vmmu_vm *vm, uint64_t gfn_start, uint64_t gfn_end, int clear,
				   uint64_t *young_pages);

/*
 * Memory attributes (KVM_SET_MEMORY_ATTRIBUTES), VMMU_VM_PRIVATE only
 * (VMMU_ENOTSUP otherwise).  Sets [gpa, gpa + size) -- page aligned, size > 0,
 * below the shared bit -- to private (VMMU_MEMORY_ATTRIBUTE_PRIVATE) or shared
 * (0); every gfn starts shared.  The alias no longer valid is unmapped before
 * the call returns (private mappings on private -> shared, shared ones on
 * shared -> private; a private huge page only partly converted is split
 * first) and TLBs are flushed; a fault racing with the change retries.  A
 * private page converted to shared and back reads as zeroes (TDX: the page
 * is removed, and added again zeroed); shared memory is the embedder's and
 * vmmu does not touch it.  An access whose alias disagrees with the
 * attribute returns VMMU_EXIT_MEMORY_FAULT (is_private says which alias the
 * guest used, error VMMU_EAGAIN): the embedder converts and runs again.
 * Bad input (VMMU_EINVAL: alignment, size 0, wrap, unknown bits; VMMU_ERANGE:
 * at or above the shared bit) changes nothing; so does an external op that
 * fails (its error is returned; mappings already removed just fault again).
 */
#define VMMU_MEMORY_ATTRIBUTE_PRIVATE (1ULL << 3)
VMMU_EXPORT int vmmu_set_memory_attributes(vmmu_vm *vm, uint64_t gpa, uint64_t size, uint64_t attrs);
/* The attributes of the page at gpa (shared bit ignored). */
VMMU_EXPORT int vmmu_get_memory_attributes(vmmu_vm *vm, uint64_t gpa, uint64_t *attrs);

/*
 * External page-table ops (KVM's link_external_spt, set_external_spte,
 * remove_external_spte, free_external_spt, plus the demotion TDX's
 * TDH.MEM.PAGE.DEMOTE does): how every change of a mirror SPTE reaches the
 * real private table.  gfn is the first gfn the entry maps, level its level
 * (1 = 4K), spte the final mirror SPTE (set) or the one going away (remove).
 *  - link_external_spt: a table for the entry at (gfn, level) was linked;
 *  - set_external_spte: a leaf (gfn, level) is mapped (RWX, its pfn);
 *  - split_external_spt: the huge leaf (gfn, level) becomes a table of
 *    level - 1 leaves mapping the same memory;
 *  - remove_external_spte: the leaf (gfn, level) is unmapped;
 *  - free_external_spt: the table under (gfn, level) goes (VM teardown).
 * Each returns 0 or a negative VMMU_E* code; on an error vmmu restores the
 * mirror SPTE and the change did not happen (a fault returns a memory-fault
 * exit with that error, a conversion returns it).  Ops run with mmu_lock
 * held (read side for faults, concurrently on different entries; write side
 * for zaps) and must not call back into vmmu.  The default ops are vmmu's
 * simulated security module, which owns the table the hardware walks for
 * private gpas; an embedder's table interposes: it receives the ops that
 * were installed (next, next_ctx) and must forward to them for a change to
 * reach the hardware (not forwarding yet returning 0 breaks mirror == real
 * table, which vmmu_audit reports).  Install before any vCPU is created.
 */
struct vmmu_external_ops {
	int (*link_external_spt)(void *ctx, uint64_t gfn, int level);
	int (*set_external_spte)(void *ctx, uint64_t gfn, int level, uint64_t spte);
	int (*split_external_spt)(void *ctx, uint64_t gfn, int level);
	int (*remove_external_spte)(void *ctx, uint64_t gfn, int level, uint64_t spte);
	int (*free_external_spt)(void *ctx, uint64_t gfn, int level);
};
/* The ops in use now (the module's unless replaced). */
VMMU_EXPORT int vmmu_get_external_ops(vmmu_vm *vm, struct vmmu_external_ops *ops, void **ctx);
/* VMMU_EBUSY once a vCPU exists; ops NULL puts the module's back. */
VMMU_EXPORT int vmmu_set_external_ops(vmmu_vm *vm, const struct vmmu_external_ops *ops, void *ctx);

/* The host address backing slot id (useful when vmmu allocated it). */
VMMU_EXPORT int vmmu_memslot_hva(vmmu_vm *vm, uint32_t slot, void **hva);
/* Host address of a gpa, for embedder-side copies; VMMU_ENOENT outside slots.
 * In a private VM the shared bit is ignored and the address is always the
 * shared memory's: private backing is never reachable through an hva. */
VMMU_EXPORT int vmmu_gpa_to_hva(vmmu_vm *vm, uint64_t gpa, void **hva);

/* ------------------------------------------------------------------------ */
/* MMU control from the host side                                            */

/* Removes every mapping of gfns [gfn_start, gfn_end); TLBs flushed on return.
 * gfn_end is clamped to the guest's MAXPHYADDR ([0, UINT64_MAX): everything). */
VMMU_EXPORT int  vmmu_zap_gfn_range(vmmu_vm *vm, uint64_t gfn_start, uint64_t gfn_end);
/* Removes every mapping of the VM; TLBs flushed on return. */
VMMU_EXPORT void vmmu_zap_all(vmmu_vm *vm);
/*
 * Remote TLB flush, KVM's contract: when it returns, no vCPU uses a
 * translation that existed before the call.
 */
VMMU_EXPORT void vmmu_flush_remote_tlbs(vmmu_vm *vm);

/* ------------------------------------------------------------------------ */
/* Host memory events (MMU-notifier equivalents)                             */

/*
 * The embedder brackets every change to the host memory behind memslots
 * (munmap, mprotect, madvise(DONTNEED), page migration, ...) with these.
 * Between begin and end no translation of the range exists or is created:
 * begin removes every mapping of a gfn whose hva lies in [hva_start,
 * hva_end) and flushes TLBs before it returns; a fault that raced with the
 * invalidation retries, and accesses to the range wait until end.  Accesses
 * elsewhere do not wait, whatever else is open.  Calls nest and may overlap
 * (KVM's mmu_invalidate_* rules).  Every begin is counted and needs one end
 * with the same arguments (an end matching no open begin marks the VM
 * bugged); an empty or inverted range (hva_end <= hva_start) is counted too,
 * and covers nothing.  Under TDP, begin takes no lock when nothing of the
 * range is mapped, and end never does.
 */
VMMU_EXPORT void vmmu_invalidate_range_begin(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end);
VMMU_EXPORT void vmmu_invalidate_range_end(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end);

/*
 * What the host allows on [hva_start, hva_end) from now on (page aligned):
 * VMMU_HOST_RW, VMMU_HOST_RO (after mprotect(PROT_READ)) or VMMU_HOST_NONE
 * (unmapped, or otherwise unusable).  Existing mappings of the range are
 * removed first (as by an invalidation); afterwards a guest write to a
 * read-only range, or any access to a gone one, returns
 * VMMU_EXIT_MEMORY_FAULT with the gpa, and works again once the range is
 * set back to VMMU_HOST_RW.  VMMU_ENOSPC when too many distinct ranges are
 * recorded (adjacent equal ones merge).
 */
#define VMMU_HOST_RW 0u
#define VMMU_HOST_RO 1u
#define VMMU_HOST_NONE 2u
VMMU_EXPORT int vmmu_set_host_protection(vmmu_vm *vm, uintptr_t hva_start, uintptr_t hva_end, unsigned int prot);

/*
 * The host address space is going away (mmu_notifier release): every mapping
 * is removed and every later access is a memory fault.  Only
 * vmmu_vm_destroy() may follow.
 */
VMMU_EXPORT void vmmu_release(vmmu_vm *vm);

/* ------------------------------------------------------------------------ */
/* vCPUs                                                                     */

VMMU_EXPORT int vmmu_vcpu_create(vmmu_vm *vm, unsigned id, vmmu_vcpu **out);

/* ---- architectural state (Intel SDM Vol. 3A 2.5, 4.1) --------------------- */
#define VMMU_CR0_PE (1ULL << 0)
#define VMMU_CR0_WP (1ULL << 16)
#define VMMU_CR0_PG (1ULL << 31)
#define VMMU_CR4_PSE (1ULL << 4)
#define VMMU_CR4_PAE (1ULL << 5)
#define VMMU_CR4_PGE (1ULL << 7)
#define VMMU_CR4_LA57 (1ULL << 12)
#define VMMU_CR4_PCIDE (1ULL << 17)
#define VMMU_CR4_SMEP (1ULL << 20)
#define VMMU_CR4_SMAP (1ULL << 21)
#define VMMU_CR4_PKE (1ULL << 22)
#define VMMU_EFER_LME (1ULL << 8)
#define VMMU_EFER_LMA (1ULL << 10)
#define VMMU_EFER_NXE (1ULL << 11)
#define VMMU_RFLAGS_AC (1ULL << 18)
#define VMMU_CR3_PCID_NOFLUSH (1ULL << 63)

struct vmmu_cpu_state {
	uint64_t cr0;
	uint64_t cr3;
	uint64_t cr4;
	uint64_t efer;		/* LMA is derived (LME && PG) and ignored on input */
	uint64_t rflags;	/* only AC matters to the MMU */
	uint32_t pkru;
	uint32_t cpl;		/* 0..3 */
	uint64_t pdptrs[4];	/* out: the PAE PDPTE registers as loaded */
	/* In: sizeof(struct vmmu_cpu_state) or 0 (ABI growth).  vmmu_vcpu_get_state()
	 * writes this layout, struct_size included, and never more. */
	uint32_t struct_size;
	uint32_t pad;		/* 0 */
};

/*
 * Loads CR0/CR3/CR4/EFER/PKRU/CPL/RFLAGS, as the MOVs to those registers
 * would.  In PAE mode the PDPTE registers are reloaded from guest memory at
 * CR3, with their reserved-bit checks, exactly when the architecture does
 * (SDM Vol. 3A 4.4.1): CR3 changed, or CR0.CD/NW/PG or CR4.PAE/PGE/PSE/SMEP
 * changed; otherwise (a CPL or CR0.WP change, say) they are kept.  Whatever
 * the architecture would #GP on -- for example PG without PE, long mode
 * without PAE, LA57 changed while in long mode, PCIDE outside long mode,
 * reserved bits, bad PDPTEs -- returns VMMU_EINVAL and changes nothing; the
 * embedder injects #GP.  PDPTEs in host memory declared gone
 * (VMMU_HOST_NONE, or after vmmu_release) return VMMU_EFAULT and change
 * nothing, as an access there would exit with a memory fault.
 * Changing paging-relevant state flushes this vCPU's TLB as the architecture
 * says a MOV to CR0/CR4 does; CR3 changes follow vmmu_vcpu_write_cr3().
 */
VMMU_EXPORT int vmmu_vcpu_set_state(vmmu_vcpu *vcpu, const struct vmmu_cpu_state *s);
VMMU_EXPORT int vmmu_vcpu_get_state(vmmu_vcpu *vcpu, struct vmmu_cpu_state *s);
/*
 * MOV to CR3: flushes non-global translations (of the new PCID with CR4.PCIDE),
 * unless PCIDE and bit 63 (VMMU_CR3_PCID_NOFLUSH) are set.
 */
VMMU_EXPORT int vmmu_vcpu_write_cr3(vmmu_vcpu *vcpu, uint64_t cr3);
/* INVLPG: drops gva's translations (any page size) for the current PCID and
 * global ones, as the SDM says (4.10.4.1). */
VMMU_EXPORT void vmmu_vcpu_invlpg(vmmu_vcpu *vcpu, uint64_t gva);

/*
 * INVPCID (SDM Vol. 2A): 0, gva's translations of one PCID (not global ones);
 * 1, every non-global translation of one PCID; 2, everything, globals too;
 * 3, everything but globals.  VMMU_EINVAL where the instruction raises #GP
 * (type > 3, PCID > 4095, a non-canonical gva for type 0, a PCID other than
 * 0 for types 0/1 without CR4.PCIDE); nothing changes then.
 */
#define VMMU_INVPCID_ADDR 0u
#define VMMU_INVPCID_SINGLE 1u
#define VMMU_INVPCID_ALL_GLOBAL 2u
#define VMMU_INVPCID_ALL 3u
VMMU_EXPORT int vmmu_vcpu_invpcid(vmmu_vcpu *vcpu, unsigned type, uint32_t pcid, uint64_t gva);

/* ---- nested virtualization (L1 a hypervisor running L2) ---------------------------- */
/*
 * A TDP VM's vCPU can run a nested guest: L1 (the VM's own code) gives L2
 * its own paging state and an EPT (EPT VMs) or NPT (NPT VMs) of its own,
 * held in L1's memory.  In guest mode every access call (vmmu_vcpu_access,
 * set_state, write_cr3, invlpg, invpcid) is L2's: L2's linear addresses go
 * through L2's tables, and L2 guest-physical addresses through L1's EPT/NPT,
 * as the MMU shadows it (guest_mmu, seed 003).  An access L1's tables do
 * not allow stops with VMMU_EXIT_NESTED for the embedder to reflect to L1;
 * L2's own faults are VMMU_EXIT_GUEST_FAULT (for L2); MMIO and memory
 * faults give L1 guest-physical addresses (the MMIO is L1's device).  Shadow
 * paging VMs cannot run nested guests (VMMU_ENOTSUP).  docs/mmu.md section 13.
 */
#define VMMU_NESTED_EXEC_ONLY (1u << 0)	/* L1 was offered execute-only EPT */

/* EPTP fields (SDM Vol. 3C 25.6.11) */
#define VMMU_EPTP_MT_UC 0ULL
#define VMMU_EPTP_MT_WB 6ULL
#define VMMU_EPTP_WALK_4 (3ULL << 3)	/* page-walk length 4, minus one */
#define VMMU_EPTP_WALK_5 (4ULL << 3)
#define VMMU_EPTP_AD (1ULL << 6)	/* A/D flags in L1's EPT entries */

/* VMRUN's TLB_CONTROL (NPT VMs, APM 15.16.1) */
#define VMMU_TLB_CONTROL_NONE 0u
#define VMMU_TLB_CONTROL_FLUSH_ALL 1u
#define VMMU_TLB_CONTROL_FLUSH_GUEST 3u
#define VMMU_TLB_CONTROL_FLUSH_GUEST_NONGLOBAL 7u

struct vmmu_nested_state {
	uint32_t flags;		/* VMMU_NESTED_* */
	uint16_t vpid;		/* VPID (EPT) or ASID (NPT); 0: none, L2's TLB is flushed
				 * at every entry and exit */
	uint8_t tlb_control;	/* NPT: VMMU_TLB_CONTROL_* of this VMRUN; EPT: 0 */
	uint8_t pad;
	/* EPT VMs: the EPTP (memory type UC or WB, walk length 4 or 5, A/D,
	 * the root table's L1 gpa); NPT VMs: nCR3, walked in L1's own
	 * (4- or 5-level) paging mode with L1's EFER.NXE. */
	uint64_t eptp;
	uint64_t ncr3;
	struct vmmu_cpu_state l2;	/* L2's CR0/3/4, EFER, PKRU, CPL, RFLAGS.AC */
};

/*
 * VM entry: the vCPU runs L2 from now on.  VMMU_EINVAL and nothing changes
 * for a bad EPTP (reserved bits, memory type, walk length), an nCR3 beyond
 * MAXPHYADDR, both or neither of eptp/ncr3, unknown flags, an L2 state the
 * architecture refuses at VM entry, or L2 PAE PDPTEs that L1's tables do not
 * map; VMMU_EPERM when already in guest mode; VMMU_ENOTSUP on a shadow-paging
 * VM or a private one (a TD has no VMX), or for NPT when L1 is not in
 * 4/5-level paging.
 */
VMMU_EXPORT int vmmu_vcpu_enter_guest_mode(vmmu_vcpu *vcpu, const struct vmmu_nested_state *state);
/*
 * VM exit: back to L1, whose state is as it was at entry.  L2's state is
 * returned in *l2 (may be NULL).  VMMU_EPERM when not in guest mode.
 */
VMMU_EXPORT int vmmu_vcpu_leave_guest_mode(vmmu_vcpu *vcpu, struct vmmu_cpu_state *l2);
/* Whether the vCPU runs L2 now. */
VMMU_EXPORT int vmmu_vcpu_in_guest_mode(vmmu_vcpu *vcpu);

/*
 * INVEPT (SDM Vol. 2B), by L1, so outside guest mode (VMMU_EPERM inside):
 * single-context drops every cached translation and cached root derived
 * from the EPTP's tables, all-context every one from any EPTP; L2's next
 * accesses see L1's EPT as it is now.  VMMU_EINVAL for another type, or
 * (single-context) an EPTP a VM entry would refuse; VMMU_ENOTSUP on NPT VMs.
 */
#define VMMU_INVEPT_SINGLE 1u
#define VMMU_INVEPT_ALL 2u
VMMU_EXPORT int vmmu_vcpu_invept(vmmu_vcpu *vcpu, unsigned type, uint64_t eptp);
/*
 * INVVPID (SDM Vol. 2B), by L1: L2's linear and combined translations of
 * the VPID (type 0: of gva only; 3: but globals; 2: of every VPID); the
 * translations EPT alone derives stay (INVEPT's business).  VMMU_EINVAL for
 * type > 3, VPID 0 with types 0, 1, 3, or a non-canonical gva for type 0.
 */
#define VMMU_INVVPID_ADDR 0u
#define VMMU_INVVPID_SINGLE 1u
#define VMMU_INVVPID_ALL 2u
#define VMMU_INVVPID_SINGLE_NONGLOBAL 3u
VMMU_EXPORT int vmmu_vcpu_invvpid(vmmu_vcpu *vcpu, unsigned type, uint16_t vpid, uint64_t gva);
/* INVLPGA (APM Vol. 3), by L1 on NPT VMs: L2's translations of gva in the ASID. */
VMMU_EXPORT int vmmu_vcpu_invlpga(vmmu_vcpu *vcpu, uint64_t gva, uint32_t asid);

/* Access types for vmmu_vcpu_access() */
#define VMMU_ACCESS_READ   0u
#define VMMU_ACCESS_WRITE  1u
#define VMMU_ACCESS_FETCH  2u
#define VMMU_ACCESS_TYPE_MASK 3u
/*
 * Flag: the address is a guest-physical address; guest paging is bypassed
 * but the access still goes through this vCPU's TLB and the TDP tables.
 * Under shadow paging (no TDP) it is an emulated physical access: straight to
 * the memslot, and a write to a shadowed guest page table updates the shadow
 * as a guest store would.
 */
#define VMMU_ACCESS_PHYS   (1u << 4)
/* Flag: an implicit supervisor-mode access (descriptor tables, ...): the
 * supervisor rules apply even at CPL 3, and SMAP whatever EFLAGS.AC says. */
#define VMMU_ACCESS_IMPLICIT (1u << 5)
/*
 * Flag: never wait.  Where the access would wait for another thread -- an
 * invalidation (vmmu_invalidate_range_begin) of a page it touches, or the
 * deletion or move of its memslot -- it exits with VMMU_EXIT_RETRY instead;
 * run it again later.  Without the flag it waits, except for an invalidation
 * the calling thread itself began: that one it cannot end while it waits, so
 * the access always exits with VMMU_EXIT_RETRY (cause VMMU_RETRY_SELF).
 */
#define VMMU_ACCESS_NOWAIT (1u << 6)

/* Accesses that touch at most this many pages are all-or-nothing. */
#define VMMU_ACCESS_ATOMIC_PAGES 32

enum vmmu_exit_reason {
	VMMU_EXIT_NONE = 0,
	VMMU_EXIT_MMIO = 1,		/* access to a gpa outside RAM, or a write to a READONLY slot */
	VMMU_EXIT_MEMORY_FAULT = 2,	/* host memory unusable, or (private VMs) the wrong alias */
	VMMU_EXIT_INTERNAL_ERROR = 3,	/* the VM is bugged; see vmmu_vm_bugged() */
	VMMU_EXIT_GUEST_FAULT = 4,	/* the guest's own tables fault: inject it */
	VMMU_EXIT_DIRTY_RING_FULL = 5,	/* harvest + vmmu_reset_dirty_rings(), then retry */
	VMMU_EXIT_RETRY = 6,		/* it would have waited; see VMMU_ACCESS_NOWAIT */
	/* In guest mode: L1's EPT/NPT tables do not allow the L2 access;
	 * reflect an EPT violation / misconfiguration or #NPF to L1. */
	VMMU_EXIT_NESTED = 7,
};

/* vmmu_exit.u.retry.cause */
#define VMMU_RETRY_INVALIDATION 1	/* an invalidation of the page is open */
#define VMMU_RETRY_SELF 2		/* ... and the calling thread began it */
#define VMMU_RETRY_MEMSLOT 3		/* the page's memslot is being deleted or moved */

/* vmmu_exit.u.nested.kind */
#define VMMU_NESTED_EPT_VIOLATION 1u
#define VMMU_NESTED_EPT_MISCONFIG 2u
#define VMMU_NESTED_NPF 3u

struct vmmu_exit {
	uint32_t reason;	/* enum vmmu_exit_reason */
	uint32_t pad;		/* written as 0 */
	/*
	 * Bytes of the access transferred before the exit, whatever the reason:
	 * exactly buf[0, done) was read or written, nothing after it.
	 */
	uint64_t done;
	union {
		struct {
			uint64_t gpa;		/* first byte of the fragment            */
			uint32_t len;		/* bytes of the fragment (same page)     */
			uint32_t offset;	/* fragment's offset within the access   */
			uint8_t is_write;
			uint8_t readonly_slot;	/* write hit a READONLY memslot          */
		} mmio;
		struct {
			uint64_t gpa;
			uint64_t size;
			int32_t error;		/* VMMU_EFAULT, ...                      */
			/*
			 * Private VMs: the alias the access used (KVM's
			 * KVM_MEMORY_EXIT_FLAG_PRIVATE); gpa is without the shared
			 * bit.  error VMMU_EAGAIN: the attribute says the other
			 * kind (convert, then run again); VMMU_EFAULT: no private
			 * backing (a slot without VMMU_MEM_PRIVATE, or no slot);
			 * another code: an external op failed with it.
			 */
			uint8_t is_private;
		} memory_fault;
		struct {
			int32_t error;
		} internal;
		struct {
			uint64_t done;		/* the same as vmmu_exit.done */
		} ring_full;
		struct {
			uint8_t vector;		/* 14 (#PF) or 13 (#GP: non-canonical) */
			uint32_t error_code;	/* #PF error code (P, W, U, RSVD, I/D, PK) */
			uint64_t addr;		/* CR2 for #PF */
		} guest_fault;
		struct {
			uint32_t kind;		/* VMMU_NESTED_EPT_VIOLATION, _EPT_MISCONFIG, _NPF */
			uint8_t gla_valid;	/* the access had a linear address (not PHYS) */
			/* 1: an access to the L2 gpa a linear address translates
			 * to; 0: to one of L2's paging-structure entries */
			uint8_t final;
			/*
			 * EPT violation: the exit qualification (SDM Vol. 3C
			 * 28.2.1, table 28-7): bits 0-2 the access (read, write
			 * -- A/D updates of L2's entries are writes, and with
			 * EPTP bit 6 every access to them is --, fetch),
			 * 3-5 R/W/X ANDed over L1's entries walked, 7 gla valid,
			 * 8 final.  Misconfiguration: 0.  #NPF: EXITINFO1 (APM
			 * 15.25.6): a #PF error code (P, W, U=1, RSVD, I/D) with
			 * bit 32 (final translation) or bit 33 (page tables).
			 */
			uint64_t qualification;
			uint64_t gpa;		/* the L2 guest-physical address */
			uint64_t gla;		/* the L2 linear address, when gla_valid */
		} nested;
		struct {
			uint64_t gpa;		/* the page it would wait for */
			uint32_t cause;		/* VMMU_RETRY_* */
		} retry;
		/* Room for the exits to come: the union keeps this size. */
		uint64_t reserved[8];
	} u;
};

/*
 * The vCPU reads (VMMU_ACCESS_READ/FETCH) or writes len bytes at gva through
 * the MMU, exactly as guest code would: TLB, hardware walk of the SPTE tables,
 * A/D updates, and faults handled by the MMU until the access completes.
 *
 * Guest paging is off (the vCPU starts in flat 32-bit protected mode), so the
 * gva is the gpa and must be below 4 GiB unless VMMU_ACCESS_PHYS is given.
 *
 * If it returns VMMU_EXIT, exactly the first exit->done bytes of the access
 * were transferred and none after them; exit->done is 0 for an access that
 * touches at most VMMU_ACCESS_ATOMIC_PAGES (32) pages, except that under
 * shadow paging a store into a write-protected guest page table is performed
 * page by page.
 * (Longer accesses are done in 32-page windows, each all-or-nothing, as KVM's
 * emulator does a string instruction piece by piece; *exit describes the
 * first page of its window that needs one, and the embedder continues the
 * access at buf + done once it has dealt with the exit.  MMIO fragments are
 * for the embedder to emulate.)
 *
 * Returns 0 when all len bytes were transferred, VMMU_EXIT with *exit filled,
 * or a negative error for bad arguments (nothing transferred).
 */
VMMU_EXPORT int vmmu_vcpu_access(vmmu_vcpu *vcpu, uint64_t gva, void *buf, size_t len,
				 unsigned access, struct vmmu_exit *exit);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */

struct vmmu_vm_stats {
	uint64_t pages_4k;		/* leaf SPTEs currently mapping 4K/2M/1G   */
	uint64_t pages_2m;
	uint64_t pages_1g;
	uint64_t pt_pages;		/* page-table pages in use                 */
	uint64_t remote_tlb_flushes;
	uint64_t zapped_sptes;
	uint64_t mmio_sptes_installed;
	uint64_t memslot_generation;
	/* Shadow paging (all 0 under TDP). */
	uint64_t shadow_pages;		/* shadow pages in the hash now            */
	uint64_t shadow_pages_created;
	uint64_t shadow_pages_zapped;
	uint64_t shadow_pages_recycled;	/* zapped to stay under shadow_max_pages  */
	uint64_t shadow_unsync_pages;	/* leaf shadow pages out of sync now       */
	uint64_t shadow_pte_writes;	/* emulated writes to shadowed guest tables */
	uint64_t shadow_flooded;	/* pages zapped by write-flooding detection */
	/* VMMU_VM_PRIVATE (all 0 otherwise). */
	uint64_t private_pages_4k;	/* mirror leaves mapping 4K / 2M now       */
	uint64_t private_pages_2m;
	uint64_t mirror_pt_pages;	/* mirror tables, its root included        */
	uint64_t secure_pt_pages;	/* the security module's tables, root incl. */
	uint64_t secure_pages_4k;	/* leaves in the module's table            */
	uint64_t secure_pages_2m;
	uint64_t secure_violations;	/* rule breaks the module refused: 0     */
	uint64_t attribute_changes;	/* vmmu_set_memory_attributes that changed something */
	uint64_t private_splits;	/* private huge pages demoted              */
	uint64_t reserved[16];		/* counters to come; written as 0 */
};

struct vmmu_vcpu_stats {
	uint64_t accesses;		/* vmmu_vcpu_access() calls               */
	uint64_t tlb_hits;
	uint64_t tlb_misses;		/* hardware walks                          */
	uint64_t exits;			/* violations + misconfigs taken           */
	uint64_t pf_taken;		/* MMU page faults handled                 */
	uint64_t pf_fixed;		/* faults that installed a mapping         */
	uint64_t pf_spurious;		/* already fixed by another vCPU           */
	uint64_t pf_retry;		/* lost a race / invalidation; retried     */
	uint64_t pf_emulate;		/* MMIO / read-only: handed to the caller  */
	uint64_t pf_mmio_spte;		/* served from a cached MMIO SPTE          */
	uint64_t tlb_flushes;		/* TLB flush requests serviced             */
	uint64_t mmu_reloads;
	uint64_t host_faultins;		/* host pages populated by the MMU         */
	uint64_t pf_fast_fixed;		/* fixed without mmu_lock (fast page fault) */
	uint64_t pf_fast_spurious;	/* fast path found it already fixed        */
	uint64_t pf_fast_failed;	/* fast path gave up; the slow path ran    */
	uint64_t mmu_ctx_rebuilds;	/* MMU context rebuilt: the role changed    */
	uint64_t root_fast_switches;	/* CR3 switch served by a cached root      */
	uint64_t root_slow_switches;	/* CR3 switch that dropped and reloaded   */
	uint64_t guest_faults;		/* guest faults returned to the embedder   */
	uint64_t pt_write_emulations;	/* guest stores to write-protected tables  */
	uint64_t unsync_syncs;		/* unsync shadow pages resynchronized      */
	uint64_t pml_entries;		/* VMMU_VM_PML: gpas logged (D bits set)   */
	uint64_t pml_full_exits;	/* VMMU_VM_PML: exits on a full PML buffer */
	uint64_t nested_entries;	/* vmmu_vcpu_enter_guest_mode() calls        */
	uint64_t nested_root_reuses;	/* entries that found guest_mmu's root loaded */
	uint64_t nested_exits;		/* VMMU_EXIT_NESTED exits                    */
	/* VMMU_VM_TIMING only (0 otherwise): nanoseconds spent in */
	uint64_t time_fault_ns;		/* the MMU's handling of exits, fault-in included */
	uint64_t time_faultin_ns;	/* making host pages exist (a part of the above)   */
	uint64_t time_walk_ns;		/* TLB misses: the hardware model's walks        */
	uint64_t time_copy_ns;		/* moving the bytes                              */
	uint64_t fault_around_pages;	/* pages mapped ahead of a sequential first touch */
	uint64_t reserved[15];		/* counters to come; written as 0 */
};

/* 0, or VMMU_EINVAL for a NULL argument. */
VMMU_EXPORT int vmmu_vm_get_stats(vmmu_vm *vm, struct vmmu_vm_stats *out);
VMMU_EXPORT int vmmu_vcpu_get_stats(vmmu_vcpu *vcpu, struct vmmu_vcpu_stats *out);

/* ---- trace events ------------------------------------------------------------ */
/*
 * What the MMU does, event by event, for a tracer (KVM's kvm_mmu tracepoints).
 * Each kind says which fields it fills; the others are 0.  Every event has
 * kind, vcpu_id and ts_ns.  Counts match the statistics: over a run traced
 * from vmmu_vm_create() on, the events of a kind equal the counter named.
 */
enum vmmu_trace_kind {
	/*
	 * The lockless fast page fault fixed the fault or found it fixed (seed
	 * 002 patch 7): gpa (the fault address), error_code, fixed or spurious,
	 * sptep, old_spte, new_spte.  fixed: pf_fast_fixed; spurious:
	 * pf_fast_spurious.  Emitted inside the PAGE_FAULT it belongs to.
	 */
	VMMU_TRACE_FAST_PAGE_FAULT = 1,
	/*
	 * One fault handled by the MMU (pf_taken): gpa is the fault address (a
	 * gpa under TDP, the gva under shadow paging, the L2 gpa for a nested
	 * guest's fault with VMMU_TRACE_F_NESTED), error_code, result (enum
	 * vmmu_trace_pf_result: pf_fixed, pf_spurious, pf_retry count theirs),
	 * fixed / spurious as result says, level (TDP, fixed by the slow path:
	 * the level the leaf was installed at), ts_ns and dur_ns (the fault's
	 * time in the MMU).
	 */
	VMMU_TRACE_PAGE_FAULT = 2,
	/*
	 * Mappings of a gfn range went (memslot deletion or move, MMU-notifier
	 * invalidation, host protection...): gpa and npages give the range,
	 * count the SPTEs removed (TDP and shadow), dur_ns; mmu_lock held.
	 * A TDP invalidation zaps under the read side, where count is an upper
	 * bound (a concurrent invalidation's removals may be in it), and one
	 * that finds its range unmapped zaps nothing and reports no event.
	 */
	VMMU_TRACE_ZAP_RANGE = 3,
	/* Every mapping of the VM went (fast zap-all: roots made obsolete). */
	VMMU_TRACE_ZAP_ALL = 4,
	/*
	 * A shadow page was zapped (shadow_pages_zapped): gpa is the guest table
	 * it shadowed (the first gpa it maps, for a direct page), level its
	 * level; mmu_lock held.
	 */
	VMMU_TRACE_SHADOW_PAGE_ZAP = 5,
	/*
	 * Remote TLB flush (remote_tlb_flushes): count is the VM's vCPUs, dur_ns
	 * the time to request it and wait out the vCPUs in guest mode.
	 */
	VMMU_TRACE_REMOTE_TLB_FLUSH = 6,
	/*
	 * The vCPU loaded a root before entering the guest (mmu_reloads): level
	 * the root's level, gpa the guest table it shadows (shadow paging:
	 * CR3's; VMMU_TRACE_F_NESTED: L1's EPTP/nCR3), 0 for a TDP root;
	 * flags VMMU_TRACE_F_SHADOW for a shadow root.
	 */
	VMMU_TRACE_ROOT_LOAD = 7,
	/*
	 * A switch of the guest's root table (MOV CR3, or L1's EPTP/nCR3 with
	 * VMMU_TRACE_F_NESTED) under the shadow MMU: gpa the new table,
	 * VMMU_TRACE_F_FAST when a cached root served it (root_fast_switches),
	 * otherwise the root was dropped for a reload (root_slow_switches).
	 */
	VMMU_TRACE_ROOT_SWITCH = 8,
};

/* vmmu_trace_event.flags */
#define VMMU_TRACE_F_FAST	(1u << 0)	/* ROOT_SWITCH: a cached root */
#define VMMU_TRACE_F_SHADOW	(1u << 1)	/* shadow paging's MMU (or a nested guest's) */
#define VMMU_TRACE_F_NESTED	(1u << 2)	/* a nested guest's MMU (guest_mmu: L1's EPT/NPT) */

/* vmmu_trace_event.result of VMMU_TRACE_PAGE_FAULT */
enum vmmu_trace_pf_result {
	VMMU_TRACE_PF_FIXED = 1,	/* a mapping was installed */
	VMMU_TRACE_PF_SPURIOUS,		/* it already allowed the access */
	VMMU_TRACE_PF_RETRY,		/* lost a race or an invalidation: the access retries */
	VMMU_TRACE_PF_EMULATE,		/* MMIO, read-only memory or a page-table store */
	VMMU_TRACE_PF_GUEST_FAULT,	/* the guest's own tables fault (shadow paging, nested) */
	VMMU_TRACE_PF_HOST_FAULT,	/* host memory unusable: a memory-fault exit */
};

/* vmmu_trace_event.vcpu_id of an event no vCPU's thread caused */
#define VMMU_TRACE_NO_VCPU	UINT32_MAX

struct vmmu_trace_event {
	uint32_t kind;		/* enum vmmu_trace_kind */
	uint32_t vcpu_id;	/* the vCPU whose thread caused it, or VMMU_TRACE_NO_VCPU */
	uint64_t gpa;
	uint32_t error_code;	/* page-fault error code bits (P, W, ...) */
	uint8_t spurious;	/* already fixed by someone else */
	uint8_t fixed;		/* this fault fixed it */
	const void *sptep;	/* the SPTE's address (identity only) */
	uint64_t old_spte;
	uint64_t new_spte;
	/* Added after FAST_PAGE_FAULT alone, at the end so the above stays put. */
	uint64_t ts_ns;		/* CLOCK_MONOTONIC when it happened (began, with dur_ns) */
	uint64_t dur_ns;	/* how long it took, for the kinds that say so */
	uint64_t npages;	/* ZAP_RANGE: 4K pages from gpa */
	uint64_t count;		/* kind-specific (see the kind) */
	uint32_t result;	/* PAGE_FAULT: enum vmmu_trace_pf_result */
	uint32_t level;		/* PAGE_FAULT, ROOT_LOAD, SHADOW_PAGE_ZAP: 1 = 4K ... 5 */
	uint32_t flags;		/* VMMU_TRACE_F_* */
};

typedef void (*vmmu_trace_fn)(void *ctx, const struct vmmu_trace_event *ev);
/*
 * fn(ctx, ev) is called for every event until vmmu_set_trace(vm, NULL, NULL)
 * turns tracing off; with tracing off the MMU pays one load per event site.
 * The call is synchronous, on the thread that causes the event (a vCPU's,
 * or a host thread calling vmmu_set_memslot(), an invalidation...), possibly
 * with mmu_lock held and inside an RCU read-side section: fn must be quick,
 * thread-safe, must not block for long and must never call into vmmu.  ev
 * is valid during the call only.  Set or change the trace only while no
 * other thread uses the VM: a change concurrent with events is not ordered
 * against them (a call under way may see the old fn, or the new ctx).
 */
VMMU_EXPORT void vmmu_set_trace(vmmu_vm *vm, vmmu_trace_fn fn, void *ctx);

/*
 * Checks every SPTE of the VM against the MMU's invariants (docs/mmu.md) and
 * the statistics against what is mapped: 0, or VMMU_EIO with the first
 * violation in words in why.  Waits for a vmmu_set_memslot() under way (its
 * intermediate states are not the VM's) and takes mmu_lock for write: for
 * tests and debugging, not hot paths.
 */
VMMU_EXPORT int vmmu_audit(vmmu_vm *vm, char *why, size_t len);

/* Non-zero once an internal invariant broke; the VM then refuses work.
 * VMMU_EINVAL (non-zero too) for a NULL vm. */
VMMU_EXPORT int vmmu_vm_bugged(vmmu_vm *vm, const char **why);

/*
 * The version lives here and nowhere else: CMake reads these lines for
 * project(VERSION), the shared library's file name and SONAME, vmmu.pc and
 * the CMake package's version, and the library returns VMMU_VERSION_STRING
 * from vmmu_version() as it was compiled.  A program can compare the
 * VMMU_VERSION_* it was compiled against with vmmu_version() at run time.
 * MINOR and PATCH stay below 100 so that VMMU_VERSION_NUMBER orders releases.
 */
#define VMMU_VERSION_MAJOR 0
#define VMMU_VERSION_MINOR 1
#define VMMU_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH (0.1.0 is 100), for #if. */
#define VMMU_VERSION_NUMBER (VMMU_VERSION_MAJOR * 10000 + VMMU_VERSION_MINOR * 100 + VMMU_VERSION_PATCH)
/*
 * The N of the shared library's SONAME, libvmmu.so.N.  Bumped whenever a
 * program built against the previous release may misbehave with this one
 * (a struct layout, constant or function changed or removed), which the
 * release numbers above do not say: while MAJOR is 0 any MINOR may do it.
 */
#define VMMU_ABI_VERSION 0
#define VMMU_STRINGIFY_(x) #x
#define VMMU_STRINGIFY(x) VMMU_STRINGIFY_(x)
/* "MAJOR.MINOR.PATCH" */
#define VMMU_VERSION_STRING                                                    \
	VMMU_STRINGIFY(VMMU_VERSION_MAJOR) "." VMMU_STRINGIFY(VMMU_VERSION_MINOR) "." \
	VMMU_STRINGIFY(VMMU_VERSION_PATCH)

/* The library's VMMU_VERSION_STRING, "MAJOR.MINOR.PATCH". */
VMMU_EXPORT const char *vmmu_version(void);

#ifdef __cplusplus
}
#endif
#endif /* VMMU_VMMU_H */
