/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_NESTED_REF_H
#define VMMU_TEST_NESTED_REF_H
/*
 * A reference model of nested paging, for checking vmmu's nested guests
 * against: an access by L2 goes through L2's own tables (the rules of
 * walk_ref.h), and every guest-physical address it uses -- each L2 table
 * entry it reads or updates, and the final address -- through the tables
 * L1 built for L2, by the rules of those:
 *
 *  - EPT (Intel SDM Vol. 3C 29.3, walked here with walk_ref's
 *    ref_ept_translate_xo): execute-only entries only where L1 was offered
 *    them; A/D only with EPTP bit 6, and then every access to a guest
 *    paging-structure entry is treated as a write (29.3.5, 29.3.3.2), so it
 *    needs W and sets the EPT D flag of the page holding the entry;
 *  - NPT (AMD APM Vol. 2 15.25): L1's own long-mode format with L1's
 *    EFER.NXE, every access a user access (walk_ref's ref_translate with
 *    CPL 3), reads of L2's entries reads and their A/D updates writes.
 *
 * What comes out is the outcome (the bytes' L1 address, L2's #PF with its
 * error code, or a nested exit with the L2 address, whether it was the
 * final access, and the qualification as docs/mmu.md 12.2 and vmmu.h name
 * its bits) and every entry the access read, of either level, with the
 * value it must hold afterwards.  Order where the SDM leaves it open is the
 * walk's: L2's entries root first, each read translated as it is reached;
 * A/D updates after the walk succeeded (walk_ref's rule), root first; the
 * final address last.  So an L2 walk that completed leaves its A/D bits set
 * even when the final access then exits: the linear translation was made.
 *
 * Like walk_ref, it shares nothing with vmmu: entry bits and exit bits are
 * spelled out here from the manuals, tables are walked from their raw
 * entries in guest memory (read through a callback, L1 addresses).
 */
#include <stdbool.h>
#include <stdint.h>

#include "walk_ref.h"

/* Guest memory as the model reads it: L1 guest-physical addresses. */
struct nref_mem {
	uint64_t (*read)(void *ctx, uint64_t l1_gpa, unsigned int size);
	void *ctx;
};

/* The tables L1 gives L2, as a VM entry names them. */
struct nref_l1 {
	bool npt;
	int levels;		/* 4 or 5 */
	unsigned int maxphyaddr;
	uint64_t root;		/* EPTP bits 51:12 / nCR3 bits 51:12 */
	bool ad;		/* EPT: EPTP bit 6 */
	bool exec_only;		/* EPT: execute-only translations offered to L1 */
	bool nxe;		/* NPT: L1's EFER.NXE */
};

enum nref_kind {
	NREF_OK,		/* the access is done at l1_gpa */
	NREF_L2_PF,		/* L2's own page fault */
	NREF_EPT_VIOLATION,
	NREF_EPT_MISCONFIG,
	NREF_NPF,		/* AMD nested page fault */
};

/* EPT-violation qualification bits beyond walk_ref's 5:0 (SDM 3C Table 28-7). */
#define NREF_EPTQ_GLA_VALID (1ULL << 7)
#define NREF_EPTQ_FINAL (1ULL << 8)
/* #NPF EXITINFO1 bits above the #PF error code (APM 15.25.6). */
#define NREF_NPF_FINAL (1ULL << 32)
#define NREF_NPF_TABLES (1ULL << 33)

#define NREF_MAX_ENTRIES 48

struct nref_entry {
	uint64_t gpa;		/* L1 guest-physical address of the entry */
	unsigned int size;	/* 4 or 8 */
	bool l2;		/* an entry of L2's tables (else of L1's) */
	int level;
	uint64_t before, after;
};

struct nref_outcome {
	enum nref_kind kind;
	uint32_t pf_error_code;	/* NREF_L2_PF (CR2 is the address) */
	uint64_t qual;		/* nested exits: qualification / EXITINFO1 */
	uint64_t ngpa;		/* nested exits: the L2 guest-physical address accessed */
	bool final;		/* nested exits: the final address (else an L2 entry) */
	bool gla_valid;		/* nested exits: the access had a linear address */
	uint64_t l1_gpa;	/* NREF_OK: where the access lands */
	uint64_t l2_gpa;	/* NREF_OK, and exits on the final address */
	unsigned int nent;
	struct nref_entry ent[NREF_MAX_ENTRIES];	/* every entry read, in order */
};

/*
 * One access by L2 at addr: linear through L2's tables (l2: its paging
 * state, cr3: its CR3, pdpte: the PAE PDPTE registers as loaded, else
 * NULL), or with phys an L2 guest-physical address, through l1's tables.
 */
void nref_access(const struct ref_cpu *l2, uint64_t cr3, const uint64_t *pdpte, const struct nref_l1 *l1,
		 const struct nref_mem *mem, uint64_t addr, bool phys, const struct ref_access *acc,
		 struct nref_outcome *out);
/* The value entry gpa (size bytes) must hold after the access: its value
 * after if the access read it, else before (what it held). */
uint64_t nref_after(const struct nref_outcome *o, uint64_t gpa, uint64_t before);
/* Short names of the kinds, for reports. */
const char *nref_kind_name(enum nref_kind k);

#endif /* VMMU_TEST_NESTED_REF_H */
