/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_WALK_TEST_H
#define VMMU_TEST_WALK_TEST_H
/*
 * What the two tests against the reference model share: test_walk (walk_gva()
 * alone, on tables in an array) and test_access (every access through a
 * vCPU).  The legacy entry bits, a bounded report buffer, and the PDE/PTE
 * combinations of their exhaustive tests: one enumeration, so test_access
 * runs exactly walk_exhaustive's combinations and a new one reaches both.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmmu/vmmu.h"
#include "walk_ref.h"

/* Entry bits (SDM Vol. 3A 4.3-4.5 entry formats), defined here again so the
 * tests share nothing with the library. */
#define E_P (1ULL << 0)
#define E_W (1ULL << 1)
#define E_U (1ULL << 2)
#define E_PWT (1ULL << 3)
#define E_PCD (1ULL << 4)
#define E_A (1ULL << 5)
#define E_D (1ULL << 6)
#define E_PS (1ULL << 7)
#define E_G (1ULL << 8)
#define E_IGN_LOW (7ULL << 9)		/* bits 11:9: ignored in every format */
#define E_IGN_HIGH (0x7fULL << 52)	/* bits 58:52: ignored with 4/5-level paging */
#define E_PKEY_SHIFT 59
#define E_XD (1ULL << 63)
#define E_AD (E_A | E_D)

/* Bits lo..hi (inclusive, clipped to 63); 0 when the range is empty. */
static inline uint64_t bitmask(unsigned int lo, unsigned int hi)
{
	if (lo > hi || lo > 63)
		return 0;
	if (hi > 63)
		hi = 63;
	return (~0ULL >> (63 - hi)) & (~0ULL << lo);
}

static inline uint64_t sign_extend(uint64_t v, unsigned int bits)
{
	return (uint64_t)((int64_t)(v << (64 - bits)) >> (64 - bits));
}

/* A mismatch report, built piece by piece; what does not fit is dropped. */
struct sbuf {
	char s[3072];
	size_t n;
};

void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The entries of levels top..1, one line. */
void sb_entries(struct sbuf *b, const char *what, int top, const uint64_t *ent);

/* ---- the exhaustive tests' PDE/PTE combinations ------------------------------- */

/* One combination: the PDE (leaf or not) and the PTE to put under the gva. */
struct exh_entries {
	uint64_t pde, pte;
	unsigned int key;	/* the leaf's protection key; 0 without keys */
};

/* What exh_for_each() needs to know of the paging mode and the tables. */
struct exh_space {
	const struct ref_cpu *rc;	/* paging and CR4.PSE: which PDEs are leaves */
	bool has_nx;			/* the entries have an XD bit (8-byte entries) */
	bool has_pk;			/* the leaves have a protection-key field */
	uint64_t addr_4k, addr_huge;	/* address fields of the PTE and of a leaf PDE */
	uint64_t pt;			/* a non-leaf PDE's address field: the PTE's table */
	/*
	 * A reserved bit to set in the PDE (level 2: ps is its PS bit, huge
	 * whether it is a leaf) or in the PTE (level 1, both false), or 0 when
	 * there is none to set.  Called in enumeration order, so it may rotate.
	 */
	uint64_t (*rsvd_bit)(void *ctx, int level, bool ps, bool huge);
	void (*fn)(void *ctx, const struct exh_entries *en);	/* once per combination */
	void *ctx;
};

void exh_for_each(const struct exh_space *sp);

/* ---- the paging modes, CPU states and accesses of the exhaustive tests ------- */

/*
 * A guest paging mode as the exhaustive tests put it on a vCPU: the table
 * index used at every level (non-zero and distinct, so that a walker using
 * the wrong bits of the address lands on an empty slot; the 4-level PML4
 * index is >= 256, so the address is in the upper half), the offset in the
 * page, and leaf frames with high bits set (PSE-36 bits 39:32 for the
 * 4-MByte page, bits above 32 otherwise), before masking to MAXPHYADDR.
 */
struct amode {
	const char *name;
	enum ref_paging paging;
	bool pse;			/* CR4.PSE (32-bit paging) */
	unsigned int idx[REF_MAX_LEVEL];	/* table index per level, root first */
	uint64_t off;			/* offset in the 4K page (8-byte aligned) */
	uint64_t frame_4k, frame_huge;	/* before masking to MAXPHYADDR */
};

extern const struct amode amodes[];
extern const unsigned int nr_amodes;

/* The accesses: read, write, fetch, implicit supervisor read and write. */
struct amode_access {
	unsigned int type;	/* VMMU_ACCESS_* */
	const char *name;
};
extern const struct amode_access amode_accesses[];
extern const unsigned int nr_amode_accesses;

/*
 * The CPU state of one combination, 9 bits.  The bits whose change does not
 * flush the TLB (CPL, AC, PKRU) are the low ones, so that a pass that keeps
 * translations cached meets them under every one of their values.
 */
#define CPU_CPL3 (1u << 0)
#define CPU_AC (1u << 1)
#define CPU_ADWD_SHIFT 2	/* 2 bits: AD and WD of the page's key */
#define CPU_WP (1u << 4)
#define CPU_SMEP (1u << 5)
#define CPU_SMAP (1u << 6)
#define CPU_PKE (1u << 7)
#define CPU_NXE (1u << 8)
#define NR_CPU_COMBOS 512u

/* LA57 needs a 5-level TDP (vmmu refuses it otherwise). */
bool amode_fits(const struct amode *m, unsigned int tdp_levels);
/* The mode's linear address: its indices and offset, canonical. */
uint64_t amode_gva(const struct amode *m);
/* The leaf frames masked to MAXPHYADDR (PSE-36: 40 bits). */
void amode_frames(const struct amode *m, unsigned int maxphyaddr, uint64_t *frame_4k, uint64_t *frame_huge);
/* The leaf's address field for frame (SDM 4.3: a 4-MByte frame's bits 39:32
 * go to PDE bits 20:13). */
uint64_t amode_leaf_addr_bits(const struct amode *m, int level, uint64_t frame);
/* The mode's reference CPU with nothing else set (NXE on). */
struct ref_cpu amode_ref_cpu(const struct amode *m, unsigned int maxphyaddr);
/*
 * CPU state cpu_c (CPU_* bits) over the mode, for the reference and for
 * vmmu_vcpu_set_state(): CR0.PE|PG, CR4.PGE, the paging mode's CR4/EFER
 * bits, CR3 as given; PKRU gives the page's key (key) the chosen AD/WD and
 * every other key the opposite, to catch a check of the wrong key.
 */
void amode_cpu(const struct amode *m, unsigned int maxphyaddr, unsigned int cpu_c, unsigned int key, uint64_t cr3,
	       struct ref_cpu *rc, struct vmmu_cpu_state *s);
/*
 * The exhaustive tests' entry above the PDE at level (>= 3) referencing
 * next: P = R/W = U/S = 1, XD = 0, with bits that must be ignored set (bit
 * 8: G is ignored in non-leaf entries on Intel, as the model says; 62:59:
 * the key is ignored above the leaf).  A PAE PDPTE has only P (and PWT):
 * its other low bits are reserved (4.4.1).
 */
uint64_t amode_upper_entry(const struct amode *m, int level, uint64_t next);
/* Whether the TLB may hold a global translation made from these entries
 * (a MOV to CR3 keeps those, SDM 4.10.4.1). */
bool amode_leaf_may_be_global(const struct ref_cpu *rc, const uint64_t *ent);
/*
 * A reserved bit for the PDE (level 2) or PTE (level 1), or 0 if the format
 * reserves none for this MAXPHYADDR (XD with NXE = 0 is covered by the NXE
 * bit).  Successive calls for one format rotate through its reserved bits
 * (sel keeps the place), so bits above MAXPHYADDR and the huge-frame bits
 * 13..20 all get their turn.
 */
uint64_t amode_rsvd_bit(const struct ref_cpu *rc, unsigned int sel[2][3], int level, bool ps);

#endif /* VMMU_TEST_WALK_TEST_H */
