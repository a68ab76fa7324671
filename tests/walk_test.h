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

#endif /* VMMU_TEST_WALK_TEST_H */
