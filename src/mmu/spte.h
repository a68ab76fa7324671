/* SPDX-License-Identifier: MIT */
#ifndef VMMU_SPTE_H
#define VMMU_SPTE_H
/*
 * SPTE encoding: the entries of the page tables that the "hardware" (hw.c)
 * walks. Pure functions over a per-VM format description; no locks, no
 * memory. Two formats: Intel EPT, and the legacy x86-64 PTE format that AMD
 * NPT (and, later, shadow paging) uses.
 *
 * Invariants:
 *  - SPTE_MMU_PRESENT (bit 11) is THE test for "the MMU owns a mapping here".
 *    Bit 11 is ignored by the CPU in every EPT and legacy entry at every level,
 *    so setting it never changes what hardware does.  Every leaf and non-leaf
 *    SPTE the MMU installs has it; MMIO SPTEs, the frozen value and the
 *    non-present value never do (seed 004: MMIO generation bits once overlapped
 *    bit 11, an MMIO SPTE was taken for present, and rmap removal panicked the
 *    host).  The _Static_asserts below prove the masks disjoint.
 *  - A writable SPTE is MMU-writable, and an MMU-writable SPTE is
 *    host-writable: W => MMU_W => HOST_W (seed 002).  HOST_W says the host
 *    mapping allows writes; MMU_W says the MMU itself (write tracking) does not
 *    forbid them, so W may be set again without mmu_lock.
 *  - Clearing MMU_W on a present SPTE requires a TLB flush before mmu_lock is
 *    dropped; clearing only W (dirty logging) may defer the flush, because
 *    MMU_W tells every writer the protection is only for logging.
 *  - The frozen value is not present and not MMIO in either format: a walker
 *    (hardware or software) that reads it sees a non-present entry and retries.
 *  - An access-tracked SPTE (A/D disabled) is MMU-present but hardware-non-
 *    present; its R/X bits are saved in SPTE_ACC_TRACK_SAVED and W is restored
 *    only from MMU_W.
 */
#include <stdbool.h>
#include "compiler.h"
#include <stdint.h>

typedef uint64_t u64;

#define BIT_ULL(n) (1ULL << (n))
#define GENMASK_ULL(h, l) (((~0ULL) >> (63 - (h))) & ~((1ULL << (l)) - 1))

/* Host ("hardware") physical address width of the SPTE tables.  A pfn is
 * hva >> 12 and user hvas are below 2^47, so 48 bits cover every pfn and
 * leave bits 51:48 reserved, which NPT MMIO SPTEs rely on. */
#define VMMU_HOST_PHYS_BITS 48

#define PG_LEVEL_4K 1
#define PG_LEVEL_2M 2
#define PG_LEVEL_1G 3
#define PG_LEVEL_512G 4
#define PG_LEVEL_256T 5
#define PT64_ENT_PER_PAGE 512

/* Guest access rights an SPTE grants (KVM's ACC_*); reads are always allowed. */
#define ACC_EXEC  1u
#define ACC_WRITE 2u
#define ACC_USER  4u
#define ACC_ALL   (ACC_EXEC | ACC_WRITE | ACC_USER)

/* ---- bits shared by both formats ---------------------------------------- */

/* Ignored by hardware in every entry format and level: the MMU's own mark. */
#define SPTE_MMU_PRESENT BIT_ULL(11)

#define SPTE_BASE_ADDR_MASK GENMASK_ULL(VMMU_HOST_PHYS_BITS - 1, 12)
#define SPTE_HOST_RSVD_MASK GENMASK_ULL(51, VMMU_HOST_PHYS_BITS)

/* How a TDP SPTE tracks accesses (bits 52-53, software-available in both
 * formats).  ENABLED: hardware A/D.  DISABLED: access tracking by clearing
 * R/W/X.  Kept per SPTE, as in KVM, so a VM can mix them later (nested). */
#define SPTE_TDP_AD_SHIFT 52
#define SPTE_TDP_AD_MASK (3ULL << SPTE_TDP_AD_SHIFT)
#define SPTE_TDP_AD_ENABLED (0ULL << SPTE_TDP_AD_SHIFT)
#define SPTE_TDP_AD_DISABLED (1ULL << SPTE_TDP_AD_SHIFT)

/* Access tracking saves R and X here (bits 54 and 56) while they are cleared;
 * the bits keep their EPT positions shifted by 54 so restore is one shift. */
#define SPTE_ACC_TRACK_SHIFT 54
#define EPT_R BIT_ULL(0)
#define EPT_W BIT_ULL(1)
#define EPT_X BIT_ULL(2)
#define EPT_RWX (EPT_R | EPT_W | EPT_X)
#define SPTE_ACC_TRACK_SAVED_BITS (EPT_R | EPT_X)
#define SPTE_ACC_TRACK_SAVED_MASK (SPTE_ACC_TRACK_SAVED_BITS << SPTE_ACC_TRACK_SHIFT)

/* ---- EPT (Intel SDM Vol. 3C 29.3.2) ------------------------------------ */
#define EPT_MT_SHIFT 3
#define EPT_MT_MASK (7ULL << EPT_MT_SHIFT)
#define EPT_MT_WB (6ULL << EPT_MT_SHIFT)
#define EPT_IPAT BIT_ULL(6)
#define EPT_PS BIT_ULL(7)
#define EPT_A BIT_ULL(8)
#define EPT_D BIT_ULL(9)
#define EPT_SUPPRESS_VE BIT_ULL(63)
/* Software bits: bits 57/58 are ignored by EPT (52-62 are available). */
#define EPT_SPTE_HOST_WRITABLE BIT_ULL(57)
#define EPT_SPTE_MMU_WRITABLE BIT_ULL(58)

/* ---- legacy x86-64 / NPT (SDM Vol. 3A 4.5, APM 15.25) ------------------ */
#define PT_P BIT_ULL(0)
#define PT_W BIT_ULL(1)
#define PT_U BIT_ULL(2)
#define PT_PWT BIT_ULL(3)
#define PT_PCD BIT_ULL(4)
#define PT_A BIT_ULL(5)
#define PT_D BIT_ULL(6)
#define PT_PS BIT_ULL(7)
#define PT_G BIT_ULL(8)
#define PT_NX BIT_ULL(63)
/* Bits 9-11 are available to software in every legacy entry. */
#define PT_SPTE_HOST_WRITABLE BIT_ULL(9)
#define PT_SPTE_MMU_WRITABLE BIT_ULL(10)

/* ---- MMIO SPTEs --------------------------------------------------------
 * A gfn outside every memslot gets an SPTE that makes hardware exit with a
 * distinct reason (EPT misconfig; NPT reserved-bit #NPF), so the next access
 * goes straight to the MMIO exit.  It carries the memslot generation so a
 * memslot change makes every old MMIO SPTE miss without a walk over them.
 *
 * EPT: W without R is a misconfiguration (SDM 29.3.3.1).
 * NPT: P plus reserved bit 51 is a reserved-bit fault.
 * The generation lives in bits 3-10 and 52-62: never 11 (MMU-present), never
 * the bits that make the value recognisable as MMIO.
 */
#define EPT_MMIO_VALUE (EPT_W | EPT_X)
#define EPT_MMIO_MASK (EPT_RWX | SPTE_MMU_PRESENT)
#define NPT_MMIO_RSVD BIT_ULL(51)
#define NPT_MMIO_VALUE (PT_P | NPT_MMIO_RSVD)
#define NPT_MMIO_MASK (PT_P | NPT_MMIO_RSVD | SPTE_MMU_PRESENT)
/* Shadow paging will keep the guest's W/U in MMIO SPTEs for the NPT format. */
#define NPT_MMIO_ACCESS_MASK (PT_W | PT_U)

#define MMIO_SPTE_GEN_LOW_START 3
#define MMIO_SPTE_GEN_LOW_END 10
#define MMIO_SPTE_GEN_HIGH_START 52
#define MMIO_SPTE_GEN_HIGH_END 62
#define MMIO_SPTE_GEN_LOW_MASK GENMASK_ULL(MMIO_SPTE_GEN_LOW_END, MMIO_SPTE_GEN_LOW_START)
#define MMIO_SPTE_GEN_HIGH_MASK GENMASK_ULL(MMIO_SPTE_GEN_HIGH_END, MMIO_SPTE_GEN_HIGH_START)
#define MMIO_SPTE_GEN_LOW_BITS (MMIO_SPTE_GEN_LOW_END - MMIO_SPTE_GEN_LOW_START + 1)
#define MMIO_SPTE_GEN_HIGH_BITS (MMIO_SPTE_GEN_HIGH_END - MMIO_SPTE_GEN_HIGH_START + 1)
#define MMIO_SPTE_GEN_BITS (MMIO_SPTE_GEN_LOW_BITS + MMIO_SPTE_GEN_HIGH_BITS)
#define MMIO_SPTE_GEN_MASK ((1ULL << MMIO_SPTE_GEN_BITS) - 1)
/* The gfn field of an MMIO SPTE; gfns at or above 2^36 are not cached. */
#define MMIO_SPTE_GFN_MASK SPTE_BASE_ADDR_MASK
#define MMIO_SPTE_MAX_GFN (1ULL << (VMMU_HOST_PHYS_BITS - 12))

/* ---- the frozen SPTE ---------------------------------------------------
 * Written (by cmpxchg) into an entry while the MMU changes it in several
 * steps without mmu_lock held for write: any other writer that sees it backs
 * off and retries.  Bits 5, 7, 8, 10: non-present in both formats (EPT RWX
 * and legacy P clear), not MMIO, not MMU-present, and never a value that a
 * CPU's A/D update could produce from 0. */
#define FROZEN_SPTE 0x5a0ULL
#define SPTE_NONPRESENT 0ULL

/* ---- build-time proofs ------------------------------------------------- */
#define SPTE_MASKS_DISJOINT(a, b) (((a) & (b)) == 0)
_Static_assert(SPTE_MASKS_DISJOINT(SPTE_MMU_PRESENT, MMIO_SPTE_GEN_LOW_MASK | MMIO_SPTE_GEN_HIGH_MASK),
	       "MMIO generation must never set the MMU-present bit (seed 004)");
_Static_assert(SPTE_MASKS_DISJOINT(MMIO_SPTE_GEN_LOW_MASK | MMIO_SPTE_GEN_HIGH_MASK, EPT_MMIO_MASK),
	       "EPT MMIO generation overlaps the bits that identify an MMIO SPTE");
_Static_assert(SPTE_MASKS_DISJOINT(MMIO_SPTE_GEN_LOW_MASK | MMIO_SPTE_GEN_HIGH_MASK, NPT_MMIO_MASK),
	       "NPT MMIO generation overlaps the bits that identify an MMIO SPTE");
_Static_assert(SPTE_MASKS_DISJOINT(MMIO_SPTE_GEN_LOW_MASK | MMIO_SPTE_GEN_HIGH_MASK, MMIO_SPTE_GFN_MASK),
	       "MMIO generation overlaps the MMIO gfn");
_Static_assert(SPTE_MASKS_DISJOINT(NPT_MMIO_ACCESS_MASK, MMIO_SPTE_GEN_LOW_MASK | NPT_MMIO_MASK),
	       "NPT MMIO access bits overlap generation/identification bits");
_Static_assert(MMIO_SPTE_GEN_BITS == 19, "MMIO generation width changed");
_Static_assert(SPTE_MASKS_DISJOINT(SPTE_MMU_PRESENT, SPTE_BASE_ADDR_MASK | SPTE_TDP_AD_MASK |
				   SPTE_ACC_TRACK_SAVED_MASK | EPT_SPTE_HOST_WRITABLE |
				   EPT_SPTE_MMU_WRITABLE | PT_SPTE_HOST_WRITABLE |
				   PT_SPTE_MMU_WRITABLE),
	       "software bits overlap the MMU-present bit");
_Static_assert(SPTE_MASKS_DISJOINT(SPTE_TDP_AD_MASK, SPTE_ACC_TRACK_SAVED_MASK | EPT_SPTE_HOST_WRITABLE |
				   EPT_SPTE_MMU_WRITABLE | SPTE_BASE_ADDR_MASK | EPT_SUPPRESS_VE),
	       "EPT software bits overlap");
_Static_assert(SPTE_MASKS_DISJOINT(SPTE_ACC_TRACK_SAVED_MASK, EPT_SPTE_HOST_WRITABLE | EPT_SPTE_MMU_WRITABLE),
	       "access-track saved bits overlap the writable bits");
_Static_assert(SPTE_MASKS_DISJOINT(PT_SPTE_HOST_WRITABLE | PT_SPTE_MMU_WRITABLE,
				   PT_P | PT_W | PT_U | PT_PWT | PT_PCD | PT_A | PT_D | PT_PS | PT_G |
				   PT_NX | SPTE_BASE_ADDR_MASK),
	       "legacy software bits overlap architectural bits");
_Static_assert(!(FROZEN_SPTE & SPTE_MMU_PRESENT) && !(FROZEN_SPTE & EPT_RWX) && !(FROZEN_SPTE & PT_P),
	       "the frozen SPTE must be non-present in both formats");
_Static_assert((FROZEN_SPTE & EPT_MMIO_MASK) != EPT_MMIO_VALUE &&
		       (FROZEN_SPTE & NPT_MMIO_MASK) != NPT_MMIO_VALUE,
	       "the frozen SPTE must not look like MMIO");
_Static_assert(SPTE_MASKS_DISJOINT(SPTE_HOST_RSVD_MASK, SPTE_BASE_ADDR_MASK) &&
		       ((NPT_MMIO_RSVD & SPTE_HOST_RSVD_MASK) != 0),
	       "NPT MMIO must use a bit reserved by the host address width");

/* Shadow SPTEs carry the guest's protection key where the architecture puts
 * it (bits 62:59), so the hardware applies PKRU to them as it would to a
 * guest entry.  Those bits are free in present legacy-format SPTEs. */
#define SPTE_PKEY_SHIFT 59
#define SPTE_PKEY_MASK (0xfULL << SPTE_PKEY_SHIFT)
_Static_assert(SPTE_MASKS_DISJOINT(SPTE_PKEY_MASK, SPTE_BASE_ADDR_MASK | SPTE_HOST_RSVD_MASK | SPTE_MMU_PRESENT |
						       PT_SPTE_HOST_WRITABLE | PT_SPTE_MMU_WRITABLE | PT_NX |
						       SPTE_TDP_AD_MASK),
	       "the shadow protection key overlaps SPTE bits in use");

/* ---- the per-VM format -------------------------------------------------- */
struct spte_fmt {
	bool ept;
	bool ad_enabled;	/* hardware A/D for leaf SPTEs of this VM */
	u64 hw_present;		/* any of these set => hardware treats the entry as present */
	u64 readable;		/* set in every leaf: legacy P; 0 for EPT, whose R is 'user' */
	u64 user;		/* legacy U; EPT R (KVM's trick: ACC_USER stands for EPT R,
				 * so the shadow EPT of a nested guest can map execute-only) */
	u64 writable;		/* bit 1 in both formats */
	u64 exec;		/* EPT X; 0 for legacy */
	u64 nx;			/* legacy NX; 0 for EPT */
	u64 accessed;
	u64 dirty;
	u64 huge;		/* PS */
	u64 host_writable;
	u64 mmu_writable;
	u64 mmio_mask;
	u64 mmio_value;
	u64 mmio_access_mask;
	u64 leaf_extra;		/* EPT memtype WB; 0 for legacy */
};

void spte_fmt_init(struct spte_fmt *f, bool ept, bool ad_enabled);

/* ---- predicates ---------------------------------------------------------- */
static inline bool is_mmu_present_spte(u64 spte)
{
	return spte & SPTE_MMU_PRESENT;
}

static inline bool is_frozen_spte(u64 spte)
{
	return spte == FROZEN_SPTE;
}

static inline bool is_mmio_spte(const struct spte_fmt *f, u64 spte)
{
	return (spte & f->mmio_mask) == f->mmio_value;
}

static inline bool is_large_pte(const struct spte_fmt *f, u64 spte)
{
	return spte & f->huge;
}

static inline bool is_last_spte(const struct spte_fmt *f, u64 spte, int level)
{
	return level == PG_LEVEL_4K || is_large_pte(f, spte);
}

static inline bool is_writable_pte(const struct spte_fmt *f, u64 spte)
{
	return spte & f->writable;
}

static inline bool is_mmu_writable_spte(const struct spte_fmt *f, u64 spte)
{
	return spte & f->mmu_writable;
}

static inline bool is_host_writable_spte(const struct spte_fmt *f, u64 spte)
{
	return spte & f->host_writable;
}

static inline bool spte_ad_enabled(u64 spte)
{
	return (spte & SPTE_TDP_AD_MASK) != SPTE_TDP_AD_DISABLED;
}

static inline bool is_access_track_spte(const struct spte_fmt *f, u64 spte)
{
	return f->ept && !spte_ad_enabled(spte) && is_mmu_present_spte(spte) &&
	       !(spte & EPT_RWX);
}

static inline bool is_accessed_spte(const struct spte_fmt *f, u64 spte)
{
	if (!is_mmu_present_spte(spte))
		return false;
	return spte_ad_enabled(spte) ? !!(spte & f->accessed) : !is_access_track_spte(f, spte);
}

static inline bool is_dirty_spte(const struct spte_fmt *f, u64 spte)
{
	if (!is_mmu_present_spte(spte))
		return false;
	return spte_ad_enabled(spte) ? !!(spte & f->dirty) : is_writable_pte(f, spte);
}

/* The writable combinations seed 002 allows: W => MMU_W => HOST_W. */
static inline bool spte_writable_bits_legal(const struct spte_fmt *f, u64 spte)
{
	if ((spte & f->writable) && !(spte & f->mmu_writable))
		return false;
	if ((spte & f->mmu_writable) && !(spte & f->host_writable))
		return false;
	return true;
}

static inline u64 spte_to_pfn(u64 spte)
{
	return (spte & SPTE_BASE_ADDR_MASK) >> 12;
}

static inline unsigned int spte_level_shift(int level)
{
	return 12 + 9 * (level - 1);
}

static inline u64 spte_level_pages(int level)
{
	return 1ULL << (9 * (level - 1));
}

static inline unsigned int spte_index(u64 gfn, int level)
{
	return (gfn >> (9 * (level - 1))) & (PT64_ENT_PER_PAGE - 1);
}

/* ---- constructors ---------------------------------------------------------- */

/*
 * A leaf mapping pfn at level with the given ACC_* rights.  host_writable
 * bounds ACC_WRITE.  prefetch: not accessed by the guest yet, so A stays clear
 * (or, without A/D, the SPTE starts access-tracked).
 */
u64 make_leaf_spte(const struct spte_fmt *f, u64 pfn, int level, unsigned int access,
		   bool host_writable, bool prefetch);
/* A non-leaf entry pointing at the page table whose pfn is given. */
u64 make_nonleaf_spte(const struct spte_fmt *f, u64 table_pfn);
/* The SPTE for a gfn that no memslot covers, tagged with the memslot generation. */
u64 make_mmio_spte(const struct spte_fmt *f, u64 gfn, unsigned int access, u64 gen);
/* A huge leaf for the child at index of a split (same rights, smaller level). */
u64 make_small_spte_from_huge(const struct spte_fmt *f, u64 huge_spte, int huge_level, unsigned int index);

u64 get_mmio_spte_gfn(u64 spte);
u64 get_mmio_spte_generation(u64 spte);
unsigned int get_mmio_spte_access(const struct spte_fmt *f, u64 spte);
/* Whether an MMIO SPTE made for gen is still valid under cur_gen. */
static inline bool mmio_spte_gen_matches(u64 spte, u64 cur_gen)
{
	return get_mmio_spte_generation(spte) == (cur_gen & MMIO_SPTE_GEN_MASK);
}

/* Access rights (ACC_*) a leaf SPTE grants hardware right now. */
unsigned int spte_access(const struct spte_fmt *f, u64 spte);

/* Access tracking (A/D disabled): make the SPTE hardware-non-present but
 * keep enough to restore it without the MMU's help. */
u64 mark_spte_for_access_track(const struct spte_fmt *f, u64 spte);
u64 restore_acc_track_spte(const struct spte_fmt *f, u64 spte);

/*
 * Whether hardware would refuse this entry at this level as malformed: an EPT
 * misconfiguration, or an NPT reserved-bit fault.  Only meaningful for entries
 * hardware sees as present.
 */
static inline bool spte_is_hw_reserved(const struct spte_fmt *f, u64 spte, int level)
{
	bool leaf = level == PG_LEVEL_4K || (spte & f->huge);

	if (spte & SPTE_HOST_RSVD_MASK)
		return true;
	if (f->ept) {
		/* SDM 29.3.3.1: write without read is a misconfiguration. */
		if ((spte & EPT_W) && !(spte & EPT_R))
			return true;
		if (level >= PG_LEVEL_512G && (spte & EPT_PS))
			return true;
		if (leaf) {
			u64 mt = (spte & EPT_MT_MASK) >> EPT_MT_SHIFT;

			if (mt == 2 || mt == 3 || mt == 7)
				return true;
			/* A huge page's frame must be aligned to its size. */
			if (level > PG_LEVEL_4K &&
			    (spte & GENMASK_ULL(spte_level_shift(level) - 1, 12)))
				return true;
		} else if (spte & GENMASK_ULL(6, 3)) {
			return true;
		}
		return false;
	}
	if (level >= PG_LEVEL_512G && (spte & PT_PS))
		return true;
	/* For a huge leaf, bits 12..shift-1 hold PAT (bit 12) then reserved zeroes. */
	if (level > PG_LEVEL_4K && (spte & PT_PS) &&
	    (spte & GENMASK_ULL(spte_level_shift(level) - 1, 13)))
		return true;
	return false;
}

static inline bool spte_is_hw_present(const struct spte_fmt *f, u64 spte)
{
	return spte & f->hw_present;
}

/* Human-readable decoding for reports and test failures. */
int spte_format(const struct spte_fmt *f, u64 spte, int level, char *buf, unsigned long len);

#endif /* VMMU_SPTE_H */
