/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_WALK_REF_H
#define VMMU_TEST_WALK_REF_H
/*
 * A reference model of the x86 paging rules, for checking the walker
 * (src/walk.c) against.  It is written to be read beside the Intel SDM, not
 * to be fast or clever:
 *
 *  - ref_rsvd_mask() / ref_ept_rsvd_mask(): the "Reserved (must be 0)" rows
 *    of the entry-format tables (Vol. 3A 4.3, 4.4.2, 4.5.4; Vol. 3C 29.3.2),
 *    one switch case per table;
 *  - ref_allowed(): the bullet lists of Vol. 3A 4.6.1 "Determination of
 *    Access Rights", one if-branch per bullet, with the protection-key
 *    conditions of 4.6.2 where 4.6.1 says "with a protection key for which
 *    ... access is permitted";
 *  - ref_pf_error_code() / ref_pk_flag(): the flag definitions of 4.7
 *    "Page-Fault Exceptions", one line per flag;
 *  - ref_translate(): what happens to one access given the decoded entries
 *    it uses (not-present and reserved-bit faults in walk order, then the
 *    access-rights check, then 4.8 accessed/dirty flags).
 *
 * It shares no code and no constants with the walker: error-code bits and
 * entry bits are defined here again from the SDM.  It models Intel (bit 8 of
 * non-leaf entries is ignored, not reserved as on AMD), with 1-GByte pages,
 * PSE-36 (PSE-40), execute-only EPT translations and EPT 1-GByte pages
 * supported, and no PKS, MBEC, HLAT or CET shadow stacks.
 */
#include <stdbool.h>
#include <stdint.h>

/* Page-fault error code (SDM Vol. 3A 4.7, Figure 4-12). */
#define REF_PF_P (1u << 0)
#define REF_PF_WR (1u << 1)
#define REF_PF_US (1u << 2)
#define REF_PF_RSVD (1u << 3)
#define REF_PF_ID (1u << 4)
#define REF_PF_PK (1u << 5)

/* EPT-violation exit qualification bits 0-5 (SDM Vol. 3C Table 28-7). */
#define REF_EPTQ_READ (1u << 0)
#define REF_EPTQ_WRITE (1u << 1)
#define REF_EPTQ_FETCH (1u << 2)
#define REF_EPTQ_RWX_SHIFT 3	/* bits 5:3: R, W, X ANDed over the entries used */

enum ref_paging {
	REF_PAGING_32,		/* CR4.PAE = 0 */
	REF_PAGING_PAE,		/* CR4.PAE = 1, IA32_EFER.LME = 0 */
	REF_PAGING_4LEVEL,	/* IA32_EFER.LME = 1, CR4.LA57 = 0 */
	REF_PAGING_5LEVEL,	/* IA32_EFER.LME = 1, CR4.LA57 = 1 */
};

struct ref_cpu {
	enum ref_paging paging;
	unsigned int maxphyaddr;	/* CPUID.80000008H:EAX[7:0] */
	bool pse;			/* CR4.PSE (used by 32-bit paging only) */
	bool wp;			/* CR0.WP */
	bool smep, smap, pke;		/* CR4.SMEP, CR4.SMAP, CR4.PKE */
	bool nxe;			/* IA32_EFER.NXE */
	bool ac;			/* EFLAGS.AC */
	unsigned int cpl;		/* 0..3 */
	uint32_t pkru;
};

struct ref_access {
	bool write;	/* a data write (else a data read or a fetch) */
	bool fetch;	/* an instruction fetch */
	bool implicit;	/* an implicit supervisor-mode access (4.6.1: GDT, IDT, TSS, ...) */
};

/* One paging-structure entry as the rules see it. */
struct ref_pte {
	bool p;		/* bit 0 */
	bool w;		/* bit 1, R/W */
	bool u;		/* bit 2, U/S */
	bool a;		/* bit 5 */
	bool d;		/* bit 6 (meaningful in a leaf only) */
	bool ps;	/* bit 7 */
	bool xd;	/* bit 63 (8-byte entries only) */
	bool rsvd;	/* some bit of ref_rsvd_mask() is set */
	unsigned int pkey;	/* bits 62:59 (8-byte entries only) */
};

/* The rights of a complete translation, in the terms of SDM 4.6.1. */
struct ref_rights {
	bool user_addr;		/* U/S = 1 in every entry used: a user-mode address */
	bool writable;		/* R/W = 1 in every entry used */
	bool xd;		/* XD = 1 in some entry used */
	unsigned int pkey;	/* the protection key of the address (4/5-level only) */
};

#define REF_MAX_LEVEL 5

struct ref_outcome {
	bool fault;
	uint32_t error_code;		/* REF_PF_*, when fault */
	int leaf_level;			/* level of the leaf entry; 0 if the walk stopped above */
	struct ref_rights rights;	/* valid when leaf_level != 0 */
	/* A and D of each entry (indexed by level) after the access. */
	bool a[REF_MAX_LEVEL + 1];
	bool d[REF_MAX_LEVEL + 1];
};

/* Level of the entries of the root table: 2 (32-bit), 3 (PAE PDPTEs), 4, 5. */
int ref_top_level(enum ref_paging paging);
/* Size of an entry in bytes: 4 for 32-bit paging, 8 otherwise. */
unsigned int ref_entry_bytes(enum ref_paging paging);
/* Whether an entry at level with the given PS bit maps a page. */
bool ref_is_leaf(const struct ref_cpu *cpu, int level, bool ps);
/* Reserved bits of an entry at level whose PS bit is ps. */
uint64_t ref_rsvd_mask(const struct ref_cpu *cpu, int level, bool ps);
/* Decode a raw entry. */
struct ref_pte ref_decode(const struct ref_cpu *cpu, int level, uint64_t raw);
/* Physical address of the page a leaf entry maps (its "Physical address" row). */
uint64_t ref_leaf_frame(const struct ref_cpu *cpu, int level, uint64_t raw);
/* Page size mapped by a leaf at level. */
uint64_t ref_page_size(const struct ref_cpu *cpu, int level);

/* 4.6: a user-mode access is one at CPL 3 that is not implicit supervisor. */
bool ref_user_mode_access(const struct ref_cpu *cpu, const struct ref_access *acc);
/* 4.6.1 + 4.6.2: whether the access is allowed given the translation's rights. */
bool ref_allowed(const struct ref_cpu *cpu, const struct ref_rights *r, const struct ref_access *acc);
/* 4.7: the PK flag of the error code of a page fault on a completed translation. */
bool ref_pk_flag(const struct ref_cpu *cpu, const struct ref_rights *r, const struct ref_access *acc);
/* 4.7: the error code; present = not caused by a not-present entry. */
uint32_t ref_pf_error_code(const struct ref_cpu *cpu, const struct ref_access *acc, bool present, bool rsvd,
			   bool pk);
/* The access-rights check alone: 0 when allowed, else the #PF error code. */
uint32_t ref_permission_fault(const struct ref_cpu *cpu, const struct ref_rights *r, const struct ref_access *acc);
/*
 * One access through the entries ent[top]..ent[1] (indexed by level; entries
 * below the leaf are not looked at).  For PAE, ent[3] is the PDPTE register.
 */
void ref_translate(const struct ref_cpu *cpu, const struct ref_pte ent[REF_MAX_LEVEL + 1],
		   const struct ref_access *acc, struct ref_outcome *out);

/* ---- EPT (SDM Vol. 3C 29.3) ------------------------------------------------ */

struct ref_ept_pte {
	bool r, w, x;		/* bits 0, 1, 2 */
	unsigned int memtype;	/* bits 5:3 (leaf only) */
	bool ps;		/* bit 7 */
	bool a, d;		/* bits 8, 9 (with accessed/dirty flags enabled in EPTP) */
	bool rsvd;		/* some bit of ref_ept_rsvd_mask() is set */
};

struct ref_ept_outcome {
	bool fault;
	bool misconfig;		/* EPT misconfiguration (else an EPT violation) */
	uint32_t qual;		/* violation: exit qualification bits 5:0 */
	int leaf_level;
	bool r, w, x;		/* rights ANDed over the walk, when it completed */
	bool a[REF_MAX_LEVEL + 1];
	bool d[REF_MAX_LEVEL + 1];
};

uint64_t ref_ept_rsvd_mask(unsigned int maxphyaddr, int level, bool ps);
bool ref_ept_is_leaf(int level, bool ps);
struct ref_ept_pte ref_ept_decode(unsigned int maxphyaddr, int level, uint64_t raw);
uint64_t ref_ept_leaf_frame(unsigned int maxphyaddr, int level, uint64_t raw);
/* One access (acc->write / acc->fetch; implicit is meaningless) through
 * ent[top]..ent[1]; ad = EPTP bit 6.  Execute-only translations supported. */
void ref_ept_translate(int top, const struct ref_ept_pte ent[REF_MAX_LEVEL + 1], const struct ref_access *acc,
		       bool ad, struct ref_ept_outcome *out);
/* The same where the processor may not support execute-only translations
 * (IA32_VMX_EPT_VPID_CAP bit 0 clear, or a guest hypervisor not offered
 * them): then an entry with bit 0 clear and bit 2 set is misconfigured. */
void ref_ept_translate_xo(int top, const struct ref_ept_pte ent[REF_MAX_LEVEL + 1], const struct ref_access *acc,
			  bool ad, bool exec_only, struct ref_ept_outcome *out);

#endif /* VMMU_TEST_WALK_REF_H */
