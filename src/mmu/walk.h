/* SPDX-License-Identifier: MIT */
#ifndef VMMU_WALK_H
#define VMMU_WALK_H
/*
 * The guest page-table walker (Intel SDM Vol. 3A, chapter 4 "Paging"; EPT in
 * Vol. 3C 29.3).  One code path parameterized by the paging mode, not one
 * per mode.  It knows nothing of SPTEs or locks: guest page-table entries are
 * read and updated through walk_mem_ops, so the same walker serves tests over
 * a flat memory, two-dimensional translation through the TDP tables (each
 * page-table access is itself a guest-physical access), and later shadow and
 * nested paging.
 *
 * Rules implemented (docs/mmu.md lists them with their SDM sections):
 *  - modes: paging off, 32-bit (4K, 4M with CR4.PSE, PSE-36), PAE (PDPTE
 *    registers), 4-level, 5-level (LA57), EPT 4/5-level;
 *  - P, R/W with CR0.WP, U/S, XD with EFER.NXE, SMEP, SMAP with EFLAGS.AC and
 *    implicit supervisor accesses, protection keys (CR4.PKE, PKRU, user pages);
 *  - reserved bits from MAXPHYADDR, the mode and the level; huge-page
 *    alignment; non-canonical addresses (#GP, not #PF);
 *  - accessed and dirty flags set with compare-and-exchange, restarting the
 *    walk when the entry changed underneath, and only when the access
 *    succeeds.
 */
#include <stdbool.h>
#include <stdint.h>

#include "compiler.h"

enum walk_mode {
	WALK_MODE_NONE = 0,	/* paging off: gva == gpa (32-bit) */
	WALK_MODE_32,		/* 32-bit paging, 4-byte entries */
	WALK_MODE_PAE,		/* PAE: PDPTE registers + 2 levels of 8-byte entries */
	WALK_MODE_4LEVEL,	/* IA-32e 4-level */
	WALK_MODE_5LEVEL,	/* IA-32e 5-level (LA57) */
	WALK_MODE_EPT4,		/* EPT, 4 levels (for nested: L1's EPT tables) */
	WALK_MODE_EPT5,
};

/*
 * What a walk depends on: the part of vCPU state KVM folds into the MMU's
 * cpu_role.  Filled by the vCPU code from CR0/CR3/CR4/EFER/PKRU/CPL/RFLAGS.
 */
struct walk_cpu {
	enum walk_mode mode;
	uint64_t root;			/* CR3 (or EPTP for EPT modes) */
	uint64_t pdptes[4];		/* PAE only: the PDPTE registers */
	unsigned int maxphyaddr;
	bool wp;			/* CR0.WP */
	bool pse;			/* CR4.PSE (32-bit paging only) */
	bool smep, smap, pke;		/* CR4 */
	bool nxe;			/* EFER.NXE */
	bool ac;			/* EFLAGS.AC */
	uint8_t cpl;
	uint32_t pkru;
	bool ept_ad;			/* EPT modes: EPTP bit 6, A/D enabled */
	/* EPT modes: the processor (for nested: what L1 was offered) does not
	 * support execute-only translations, so R=0 with X=1 is a
	 * misconfiguration (SDM 29.3.3.1). */
	bool ept_no_exec_only;
};

/* Access flags of one walk. */
#define WALK_WRITE (1u << 0)
#define WALK_FETCH (1u << 1)
/* An implicit supervisor-mode access (GDT/IDT/TSS, ...): supervisor rules
 * even at CPL 3, and SMAP applies whatever EFLAGS.AC says. */
#define WALK_IMPLICIT (1u << 2)

/* Page-fault error code bits (SDM 4.7). */
#define PFERR_P (1u << 0)
#define PFERR_W (1u << 1)
#define PFERR_U (1u << 2)
#define PFERR_RSVD (1u << 3)
#define PFERR_ID (1u << 4)
#define PFERR_PK (1u << 5)

/* Effective rights of a translation (AND over all levels), for TLBs. */
#define WALK_ACC_W (1u << 0)	/* R/W = 1 at every level (EPT: W) */
#define WALK_ACC_U (1u << 1)	/* U/S = 1 at every level */
#define WALK_ACC_X (1u << 2)	/* no XD at any level (or NXE = 0); EPT: X */
#define WALK_ACC_R (1u << 3)	/* EPT: R at every level; always set otherwise */

/*
 * Guest page-table memory.  read/cmpxchg use guest-physical addresses and the
 * entry size of the mode (4 or 8 bytes).  A negative return aborts the walk
 * and is returned by walk_gva() as is (e.g. a TDP exit to be handled before
 * retrying).  cmpxchg returns 1 when it swapped, 0 when the entry no longer
 * held old (the walker restarts).
 */
struct walk_mem_ops {
	int (*read)(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val);
	int (*cmpxchg)(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val);
	void *ctx;
};

#define WALK_MAX_LEVELS 5

struct walk_result {
	/* On success: */
	uint64_t gpa;			/* translation of the gva */
	int level;			/* leaf level: 1 = 4K, 2 = 2M/4M, 3 = 1G */
	uint64_t page_size;
	unsigned int access;		/* WALK_ACC_* */
	unsigned int pkey;		/* leaf bits 62:59 when 4/5-level (0 otherwise) */
	bool global;			/* leaf G (CR4.PGE is the caller's concern) */
	bool dirty;			/* leaf D after the walk (EPT: D when A/D enabled) */
	/* On a fault (walk_gva() returned WALK_FAULT): */
	uint8_t vector;			/* 14 #PF, 13 #GP (non-canonical), or EPT exits below */
	uint32_t error_code;		/* #PF: PFERR_*; EPT: exit qualification bits 0-5 */
	uint64_t fault_addr;		/* CR2 for #PF */
	bool ept_misconfig;		/* EPT modes: misconfiguration rather than violation */
	/* Always: what the walk read, root level first (for shadow paging and audits). */
	int nr_levels;
	uint64_t table_gpa[WALK_MAX_LEVELS + 1];	/* indexed by level */
	uint64_t pte[WALK_MAX_LEVELS + 1];		/* entry value used at each level */
};

#define WALK_OK 0
#define WALK_FAULT 1
#define WALK_VECTOR_PF 14
#define WALK_VECTOR_GP 13
#define WALK_VECTOR_EPT_VIOLATION 48	/* not an IDT vector: the EPT exit, for EPT modes */

/*
 * Translate gva for an access.  Returns WALK_OK with res filled, WALK_FAULT
 * with the architectural fault in res, or a negative walk_mem_ops abort.
 */
int walk_gva(const struct walk_cpu *cpu, const struct walk_mem_ops *mem, uint64_t gva, unsigned int access,
	     struct walk_result *res);

/*
 * The permission part of the SDM rules, given rights already known (a TLB
 * hit): 0 when allowed, else the #PF error code.  The walker uses the same
 * function, so a TLB hit and a walk can never disagree.
 */
uint32_t walk_permission_fault(const struct walk_cpu *cpu, unsigned int acc_rights, unsigned int pkey,
			       unsigned int access);

/*
 * A #PF error code for this access: bits (PFERR_P, PFERR_RSVD, ...) plus the
 * W/R, U/S and I/D bits the access itself determines (SDM 4.7).
 */
uint32_t walk_pf_error_code(const struct walk_cpu *cpu, unsigned int access, uint32_t bits);

/* Whether gva is canonical for the mode (always true below 4-level): bits
 * 63:N-1 all equal (SDM 3.3.7.1).  Inline: every TLB lookup asks. */
static inline bool walk_gva_canonical(const struct walk_cpu *cpu, uint64_t gva)
{
	unsigned int bits;

	if (cpu->mode == WALK_MODE_4LEVEL)
		bits = 48;
	else if (cpu->mode == WALK_MODE_5LEVEL)
		bits = 57;
	else
		return true;
	return (uint64_t)((int64_t)(gva << (64 - bits)) >> (64 - bits)) == gva;
}

/* Bits of the linear address that are translated: 32, 48 or 57. */
unsigned int walk_va_bits(enum walk_mode mode);

/*
 * One guest page-table entry, format by format: what the walker and the
 * shadow MMU's fault and sync code both need to know of an entry, kept in
 * one place as KVM's paging_tmpl.h keeps its PTTYPEs (32-bit, PAE/4/5-level,
 * EPT), so that shadowing another format adds a format, not a second MMU.
 * The rules are those of w's mode (and, for EPT, w->ept_ad); every function
 * below takes a present entry unless it says otherwise.
 */
struct gpte_fmt {
	unsigned int size;		/* bytes per entry: 4 or 8 */
	uint64_t present;		/* any of these set: present (P; EPT R, W or X) */
	uint64_t accessed, dirty;	/* 0 where the format has none (EPT without A/D) */
	uint64_t pkey;			/* a leaf's protection-key bits (4/5-level), else 0 */
	int levels;			/* levels walked in memory (PAE: 2; its PDPTEs are registers) */
	bool ept;
};

const struct gpte_fmt *gpte_fmt_of(const struct walk_cpu *w);

static inline bool gpte_present(const struct gpte_fmt *f, uint64_t gpte)
{
	return gpte & f->present;
}

/* The rights the entry grants on its own (WALK_ACC_*; rights AND over levels). */
unsigned int gpte_rights(const struct walk_cpu *w, uint64_t gpte);
/* Whether the entry maps a page at this level rather than naming a table. */
bool gpte_is_leaf(const struct walk_cpu *w, uint64_t gpte, int level);
/* Reserved bits set (legacy: a #PF with RSVD) or, for EPT, a misconfiguration. */
bool gpte_is_reserved(const struct walk_cpu *w, uint64_t gpte, int level);
/* What the entry names: the next table, or (a leaf) the first byte of its page. */
uint64_t gpte_addr(const struct walk_cpu *w, uint64_t gpte, int level);
/* Where the entry for va at level lives in the table at table_gpa. */
uint64_t gpte_entry_gpa(const struct walk_cpu *w, uint64_t table_gpa, uint64_t va, int level);

#endif /* VMMU_WALK_H */
