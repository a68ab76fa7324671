/* SPDX-License-Identifier: MIT */
#ifndef VMMU_CPU_TLB_H
#define VMMU_CPU_TLB_H
/*
 * The simulated CPU's translation caches: a TLB and paging-structure caches
 * per vCPU, and the root the MMU loaded for the hardware to walk.  What is
 * cached here may be stale with respect to the tables, exactly as the
 * architecture allows (SDM 4.10): only the flushes below drop entries.
 */
#include <stdbool.h>
#include <stdint.h>

/*
 * Per-vCPU TLB: a direct-mapped cache of translations to host pages, indexed
 * by page number.  Two kinds of entry share it:
 *  - physical (gpa -> host page; paging off or VMMU_ACCESS_PHYS; also the
 *    guest page-table accesses of a 2D walk), and
 *  - linear (gva -> host page), tagged with the PCID and carrying the guest
 *    rights of the walk, checked against CPL/WP/SMEP/SMAP/AC/PKRU at every
 *    use, as a CPU does with its TLB (SDM 4.10.2.2).
 * Validity is by generation, so flushes are O(1): an entry is valid when its
 * gen >= full_gen, and a non-global linear entry also when gen equals its
 * PCID's generation (bumped by MOV to CR3).
 */
#define TLB_ENTRIES 1024
#define TLB_KEY_SHIFT 13	/* key = page number << 13 | pcid << 1 | phys */
#define TLB_KEY_PHYS 1ULL
#define TLB_NR_PCIDS 4096
struct tlb_entry {
	uint64_t key;
	uintptr_t val;		/* host page | TLB_* (the TDP side's rights) */
	uint32_t gen;
	uint32_t info;		/* linear entries: TLBI_* (the guest side) */
};
/* TLB_* bits in tlb_entry.val: ACC_EXEC/ACC_WRITE/ACC_USER, plus these. */
#define TLB_READ 8u	/* readable (only EPT can take reads away) */
#define TLB_DIRTY 16u	/* TDP D was set: writes may use the entry */
/* tlb_entry.info: WALK_ACC_* in bits 0-3, then: */
#define TLBI_PKEY_SHIFT 4
#define TLBI_GLOBAL (1u << 8)
#define TLBI_GDIRTY (1u << 9)	/* the guest's D was set */
#define TLBI_SIZE_SHIFT 10	/* log2(guest page size) - 12, for INVLPG of huge pages */

/*
 * Paging-structure caches (SDM 4.10.3): the table reached after level 2 and
 * level 3 entries, so a TLB miss near a recent one reads only the leaf.  Like
 * the TLB they may hold translations the MMU has since changed; they are
 * dropped by the same flushes.
 */
struct psc_entry {
	uint64_t tag;		/* gpa >> level shift */
	uint64_t gen;
	uint64_t *table;	/* table for the next level down */
	unsigned int access;	/* permissions ANDed over the entries above */
};

#define TLB_PSC2_ENTRIES 32
#define TLB_PSC3_ENTRIES 8
struct tlb {
	uint64_t gen;		/* paging-structure caches: bumped by full flushes */
	uint32_t counter;	/* source of entry generations */
	uint32_t full_gen;	/* entries older than this are invalid */
	uint32_t nr_huge;	/* linear entries from huge pages since the last full flush */
	/* Tables below PDEs (by gpa >> 21) and below PDPTEs (by gpa >> 30),
	 * direct-mapped: a 2D walk touches guest page tables and data in
	 * different regions, which one entry per level would thrash between. */
	struct psc_entry psc2[TLB_PSC2_ENTRIES];
	struct psc_entry psc3[TLB_PSC3_ENTRIES];
	struct tlb_entry e[TLB_ENTRIES];
	uint32_t pcid_gen[TLB_NR_PCIDS];
};

/*
 * The tables the hardware walks, as the MMU loaded them: KVM's root_hpa
 * (the EPTP/nCR3 or, under shadow paging, the CR3 the CPU really uses).
 * With pae set, table is four PDPTE-like entries indexed by bits 31:30 of
 * the address (KVM's pae_root, for 32-bit, PAE and unpaged shadow guests).
 */
struct hw_root {
	uint64_t *table;
	int level;		/* level of table's entries */
	bool pae;
	/*
	 * An EPT with accessed/dirty flags (EPTP bit 6): every access the
	 * walk of the guest's own tables makes through it is a write, reads
	 * of entries included (SDM 3C 29.3.5).  Set for a nested guest's
	 * shadow EPT when L1's EPTP enables A/D, so that L1's EPT must allow
	 * the write and gets D set; vmmu's own TDP roots leave it clear (a
	 * hypervisor's EPT is invisible to its guest).
	 */
	bool pt_writes;
};

#endif /* VMMU_CPU_TLB_H */
