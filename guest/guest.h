/* SPDX-License-Identifier: MIT */
#ifndef VMMU_GUEST_H
#define VMMU_GUEST_H
/*
 * The "guest OS": builds x86 page tables inside guest memory, the way a guest
 * kernel would, so that tests, benchmarks and the CLI can switch a vCPU to
 * paging and exercise the guest page-table walker (and, later, shadow paging).
 *
 * Formats (Intel SDM Vol. 3A):
 *   GUEST_MODE_32      32-bit paging, 4-byte entries, 4K and 4M pages (4.3)
 *   GUEST_MODE_PAE     PAE paging, PDPT + 2 levels of 8-byte entries, 4K and 2M (4.4)
 *   GUEST_MODE_4LEVEL  4-level paging, 4K, 2M and 1G pages (4.5)
 *   GUEST_MODE_5LEVEL  5-level paging (LA57), 4K, 2M and 1G pages (4.5)
 *
 * Page-table pages come from a guest-physical pool the caller sets aside in
 * RAM.  Only the public vmmu API is used: entries are read through
 * vmmu_gpa_to_hva() with atomic loads, and written either the same way
 * (atomic stores: vCPUs may be walking the tables meanwhile) or, after
 * guest_pt_set_vcpu(), as guest-physical writes by that vCPU, the way a guest
 * kernel writes its own tables (so shadow paging sees, and write-protects,
 * them).
 *
 * Every call validates everything before it writes anything: a rejected call
 * (negative VMMU_E* code) leaves the page tables unchanged.  The one
 * exception is a failure of guest memory itself in the middle of an update
 * (a memslot deleted meanwhile, a vCPU write that exits): VMMU_EFAULT/EIO,
 * and the tables may be partially updated.
 *
 * A guest_pt is not thread-safe: one thread changes it at a time.  vCPUs may
 * walk it concurrently; as in a real kernel, TLB invalidation after unmap or
 * protect (vmmu_vcpu_invlpg, a CR3 write) is the caller's job.
 */
#include <stdint.h>

#include "vmmu/vmmu.h"

#ifdef __cplusplus
extern "C" {
#endif

enum guest_mode {
	GUEST_MODE_32 = 0,
	GUEST_MODE_PAE,
	GUEST_MODE_4LEVEL,
	GUEST_MODE_5LEVEL,
	/*
	 * An EPT (SDM Vol. 3C 29.3) a guest hypervisor (L1) builds for its own
	 * guest: "gva" is then L2's guest-physical address, "gpa" L1's, and
	 * the leaf flags are GUEST_EPT_*.  4K, 2M and 1G pages.  For an NPT
	 * (AMD), L1 builds ordinary GUEST_MODE_4LEVEL/5LEVEL tables, whose
	 * leaves need GUEST_U (every NPT access is a user access).
	 */
	GUEST_MODE_EPT4,
	GUEST_MODE_EPT5,
};

#define GUEST_PAGE_4K 0x1000ULL
#define GUEST_PAGE_2M 0x200000ULL
#define GUEST_PAGE_4M 0x400000ULL
#define GUEST_PAGE_1G 0x40000000ULL

/*
 * Leaf flags for guest_map()/guest_protect().  Their values are the x86
 * entry bits themselves (SDM 4.3 table 4-6, 4.5 table 4-20); P and PS are
 * set by the library.
 *   NX:   not in 32-bit mode (no XD there); guest_pt_state() sets EFER.NXE.
 *   PKEY: 4/5-level only (bits 62:59; reserved in PAE entries).
 *   A, D: pre-set accessed/dirty (otherwise the walker sets them).
 */
#define GUEST_W (1ULL << 1)
#define GUEST_U (1ULL << 2)
#define GUEST_PWT (1ULL << 3)
#define GUEST_PCD (1ULL << 4)
#define GUEST_A (1ULL << 5)
#define GUEST_D (1ULL << 6)
#define GUEST_G (1ULL << 8)
#define GUEST_PKEY_SHIFT 59
#define GUEST_PKEY_MASK (0xfULL << GUEST_PKEY_SHIFT)
#define GUEST_PKEY(k) (((uint64_t)(k) & 0xf) << GUEST_PKEY_SHIFT)
#define GUEST_NX (1ULL << 63)
#define GUEST_FLAGS_MASK \
	(GUEST_W | GUEST_U | GUEST_PWT | GUEST_PCD | GUEST_A | GUEST_D | GUEST_G | GUEST_PKEY_MASK | GUEST_NX)

/* EPT leaf flags (GUEST_MODE_EPT4/5): R, W, X, the memory type (WB for RAM;
 * UC 0, WT 4, WP 5 are legal; 2, 3, 7 are misconfigurations), ignore-PAT,
 * and pre-set A/D (set by the walk when the EPTP enables A/D). */
#define GUEST_EPT_R (1ULL << 0)
#define GUEST_EPT_W (1ULL << 1)
#define GUEST_EPT_X (1ULL << 2)
#define GUEST_EPT_RWX (GUEST_EPT_R | GUEST_EPT_W | GUEST_EPT_X)
#define GUEST_EPT_MT(t) (((uint64_t)(t) & 7) << 3)
#define GUEST_EPT_MT_WB GUEST_EPT_MT(6)
#define GUEST_EPT_IPAT (1ULL << 6)
#define GUEST_EPT_A (1ULL << 8)
#define GUEST_EPT_D (1ULL << 9)
#define GUEST_EPT_FLAGS_MASK (GUEST_EPT_RWX | GUEST_EPT_MT(7) | GUEST_EPT_IPAT | GUEST_EPT_A | GUEST_EPT_D)

/* Raw entry bits, for tests that decode or poke entries. */
#define GUEST_PTE_P (1ULL << 0)
#define GUEST_PTE_PS (1ULL << 7)

struct guest_pt;

/*
 * Creates an empty hierarchy whose tables are allocated from the guest
 * physical pool [pool_gpa, pool_gpa + pool_size) (page aligned, all RAM).
 * The root is allocated now.  Constraints from the formats:
 *   32-bit: the whole pool below 4 GiB (CR3 and every entry hold 32-bit
 *           table addresses);
 *   PAE:    the root page below 4 GiB (CR3 holds bits 31:5).  The PDPT sits
 *           at a 32-byte aligned offset inside its page that is NOT 0, so
 *           CR3 is not page aligned (as with Linux's 32-byte PAE pgd slab):
 *           walkers that mask CR3 to 4K get caught.  The four page
 *           directories are allocated up front and never freed (Linux does
 *           the same), so the PDPTEs never change after creation and the
 *           PDPTE registers loaded at CR3 load stay valid: 5 pages minimum;
 *   4/5-level: below 2^52.
 * Errors: VMMU_EINVAL (NULL, bad mode, misaligned/empty/overflowing pool),
 * VMMU_ERANGE (pool above a format limit), VMMU_ENOENT (pool not all RAM),
 * VMMU_ENOMEM (pool too small for the root, host allocation failure).
 */
int guest_pt_create(vmmu_vm *vm, enum guest_mode mode, uint64_t pool_gpa, uint64_t pool_size,
		    struct guest_pt **out);
/*
 * The same for a nested guest's (L2's) tables: pool_gpa and every address
 * in the tables are L2 guest-physical addresses, and L1's EPT/NPT maps L2
 * gpa g at L1 gpa g + l1_offset (the caller's business), which is where the
 * host-side reads and writes go.  A writer vCPU set with guest_pt_set_vcpu()
 * must be in guest mode (running L2) when the library writes.
 */
int guest_pt_create_nested(vmmu_vm *vm, enum guest_mode mode, uint64_t pool_gpa, uint64_t pool_size,
			   uint64_t l1_offset, struct guest_pt **out);
/* Frees host-side bookkeeping only; guest memory is left as it is. */
void guest_pt_destroy(struct guest_pt *pt);

/*
 * From now on (v != NULL) every entry write, and the zeroing of new table
 * pages, is a guest-physical write by v (VMMU_ACCESS_WRITE|VMMU_ACCESS_PHYS).
 * NULL goes back to host-side atomic stores.  While set, the guest_pt calls
 * that write run on v's thread (a vCPU is driven by one thread at a time).
 */
void guest_pt_set_vcpu(struct guest_pt *pt, vmmu_vcpu *v);

enum guest_mode guest_pt_mode(const struct guest_pt *pt);

/* CR3 value: the root's gpa (PAE: the 32-byte aligned PDPT address). */
uint64_t guest_pt_cr3(const struct guest_pt *pt);
/* EPT modes: the EPTP naming these tables (write-back, their walk length,
 * with A/D when ad). 0 for other modes. */
uint64_t guest_pt_eptp(const struct guest_pt *pt, int ad);

/*
 * A state for vmmu_vcpu_set_state(): CR0 = PE|PG|WP; CR4 = PSE (32-bit),
 * PAE (PAE, 4-level), PAE|LA57 (5-level); EFER = NXE (PAE), LME|NXE
 * (4/5-level); CR3; CPL.  Everything else zero.  Callers add CR4.PGE, SMEP,
 * SMAP, PKE, PKRU, RFLAGS.AC as their test needs.
 */
void guest_pt_state(const struct guest_pt *pt, struct vmmu_cpu_state *s, uint32_t cpl);

/*
 * Maps [gva, gva + size) to [gpa, gpa + size) with pages of page_size:
 * 4K everywhere; 4M in 32-bit mode (PS; CR4.PSE is the caller's concern;
 * PSE-36: gpa bits 39:32 go to entry bits 20:13); 2M in PAE/4/5-level;
 * 1G in 4/5-level.  Intermediate tables are created with P|W|U and no NX so
 * that leaves decide the rights (SDM 4.6: rights are the AND over levels);
 * PAE PDPTEs have only P (their R/W, U/S and XD bits are reserved, SDM 4.4.1).
 * Existing leaves of the same page size in the range are replaced.
 * Errors, with nothing written:
 *   VMMU_EINVAL  NULL pt, size 0, gva/gpa/size not page_size aligned, a page
 *                size the mode lacks, unknown flags, NX in 32-bit mode, PKEY
 *                outside 4/5-level;
 *   VMMU_ERANGE  gva range beyond the linear-address width (32 bits for
 *                32-bit/PAE) or not canonical (4/5-level, both ends in the
 *                same half), gpa beyond the entry's address field (32 bits
 *                for 32-bit 4K, 40 for 4M, 52 otherwise; MAXPHYADDR is not
 *                checked: the public API does not expose it, and tests may
 *                want reserved-bit translations);
 *   VMMU_EEXIST  the range overlaps a mapping of another page size (a huge
 *                leaf above the wanted level, or a table where a huge leaf
 *                would go);
 *   VMMU_ENOMEM  the pool cannot supply the new tables;
 *   VMMU_EFAULT  a table the walk reaches is not RAM.
 */
int guest_map(struct guest_pt *pt, uint64_t gva, uint64_t gpa, uint64_t size, uint64_t page_size,
	      uint64_t flags);

/*
 * Removes the leaves in [gva, gva + size) (holes are fine) and frees the
 * table pages that become empty (all-zero) back to the pool, clearing their
 * parent entries (except the root and PAE's page directories).  VMMU_EINVAL
 * (nothing changed) when a leaf is only partly inside the range, gva/size
 * not 4K aligned, or size 0; VMMU_ERANGE as for guest_map().
 */
int guest_unmap(struct guest_pt *pt, uint64_t gva, uint64_t size);

/*
 * Replaces the flag bits (GUEST_FLAGS_MASK) of every leaf in the range;
 * frame, P, PS and any other bits are unchanged.  Flags validated as for
 * guest_map().  VMMU_ENOENT (nothing changed) when part of the range is
 * unmapped, VMMU_EINVAL when a leaf is only partly inside it.
 */
int guest_protect(struct guest_pt *pt, uint64_t gva, uint64_t size, uint64_t flags);

/*
 * Software walk of the tables in guest memory (PS honoured as with CR4.PSE,
 * no reserved-bit or rights checks): the translation of gva, the leaf's page
 * size, value and gpa.  Any out pointer may be NULL.  VMMU_ENOENT when some
 * level is not present; VMMU_ERANGE for a gva outside the linear-address
 * width / non-canonical.  (32-bit/PAE: bits 63:32 of gva must be zero.)
 */
int guest_lookup(struct guest_pt *pt, uint64_t gva, uint64_t *gpa, uint64_t *page_size, uint64_t *leaf_entry,
		 uint64_t *leaf_entry_gpa);

/*
 * The entry for gva at a level (1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E,
 * 5 = PML5E; in PAE level 3 is the PDPTE, in 32-bit mode level 2 the PDE).
 * The tables above must exist: every entry above the level present and not a
 * leaf, else VMMU_ENOENT.  VMMU_EINVAL for a level the mode lacks, or (set)
 * a value above 32 bits in 32-bit mode.  guest_set_entry() writes any value
 * through the configured writer: reserved bits, non-present entries with
 * garbage... (it does not allocate or free tables; pointing an entry
 * elsewhere leaks or shares table pages, the caller's business).
 * guest_get_entry()'s entry_gpa may be NULL.
 */
int guest_set_entry(struct guest_pt *pt, uint64_t gva, int level, uint64_t value);
int guest_get_entry(struct guest_pt *pt, uint64_t gva, int level, uint64_t *value, uint64_t *entry_gpa);

/* Pool usage, for tests and benchmarks: table pages in use / still free. */
void guest_pt_pool_usage(const struct guest_pt *pt, uint64_t *pages_used, uint64_t *pages_free);

#ifdef __cplusplus
}
#endif
#endif /* VMMU_GUEST_H */
