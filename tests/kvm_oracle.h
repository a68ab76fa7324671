/* SPDX-License-Identifier: MIT */
#ifndef VMMU_KVM_ORACLE_H
#define VMMU_KVM_ORACLE_H
/*
 * A differential-testing oracle for the guest page-table walker: real loads,
 * stores and fetches in a real KVM guest (long mode, 4-level paging), so the
 * outcome of a combination of page-table bits and CPU state is what KVM's own
 * walker -- or the CPU -- decides, not what we believe the SDM says.
 *
 * The guest is tiny: identity-mapped infrastructure (GDT, IDT, TSS, stacks,
 * parameter and result pages, page tables, code) below 2 MiB, and one test
 * mapping at KO_TEST_GVA whose PDE and (for 4K leaves) PTE are the case's.
 * Each case is one KVM_RUN: a CPL0 stub rewrites the PDE/PTE itself (so
 * KVM's write tracking of shadowed page tables sees the change), flushes the
 * TLB, and performs the access at CPL0 or IRETQs to a CPL3 stub that does.
 * Every path ends in an exception whose handler records vector, error code,
 * RIP and CR2 and halts: a #UD at a known address means "the access
 * succeeded", a #PF is the answer.
 *
 * This header is also included by kvm_oracle_guest.S for the layout below.
 */

/* ---- guest layout (gpa == gva below 2 MiB) ------------------------------ */
#define KO_GDT 0x1000		/* the GDT (supervisor) */
#define KO_IDT 0x2000
#define KO_TSS 0x3000
#define KO_PARAMS 0x4000	/* per-case parameters written by the host */
#define KO_RESULTS 0x5000	/* written by the exception handlers */
#define KO_KSTACK_TOP 0x8000	/* supervisor stack: 0x6000..0x7fff */
#define KO_USTACK_TOP 0x9000	/* user stack page 0x8000 (unused by the stub) */
#define KO_PML4 0x10000
#define KO_PDPT 0x11000
#define KO_PD_INFRA 0x12000	/* PDPTE[0]: 0..1 GiB */
#define KO_PT_INFRA 0x13000	/* PDE[0] of that: the first 2 MiB, 4K pages */
#define KO_PD_TEST 0x14000	/* PDPTE[1]: 1..2 GiB */
#define KO_PT_GDT2 0x15000	/* test PD[0]: maps the GDT copy just below the test page */
#define KO_PT_TEST 0x16000	/* test PD[1] when the leaf is a 4K PTE */
#define KO_GDT2 0x17000		/* GDT copy at KO_TEST_GVA - 4K, for implicit accesses */
#define KO_CODE 0x20000		/* guest code (kvm_oracle_guest.S), 4K aligned */
#define KO_CODE_MAX 0x10000
#define KO_FRAME_4K 0x300000	/* the 4K test page's frame */
#define KO_FRAME_2M 0x400000	/* the 2M test page's frame */
#define KO_MEM_SIZE 0x1000000	/* 16 MiB of guest memory at gpa 0 */

/* The test page: PD index 1 of the 1..2 GiB region, so the page below it is
 * mapped by a different PDE (KO_PT_GDT2) whatever the case's bits are. */
#define KO_TEST_GVA 0x40200000

/* Parameter page offsets. */
#define KO_P_PDE_ADDR (KO_PARAMS + 0x00)
#define KO_P_PDE_VAL (KO_PARAMS + 0x08)
#define KO_P_PTE_ADDR (KO_PARAMS + 0x10)	/* 0: no PTE (2M leaf) */
#define KO_P_PTE_VAL (KO_PARAMS + 0x18)
#define KO_P_ADDR (KO_PARAMS + 0x20)		/* test address */
#define KO_P_ACCESS (KO_PARAMS + 0x28)	/* enum kvm_oracle_access */
#define KO_P_USER (KO_PARAMS + 0x30)		/* 1: access from CPL3 */
#define KO_P_USER_RFLAGS (KO_PARAMS + 0x38)
#define KO_P_GDTR2 (KO_PARAMS + 0x40)	/* 10-byte pseudo-descriptor for LGDT */

/* Result page offsets. */
#define KO_R_DONE (KO_RESULTS + 0x00)
#define KO_R_VECTOR (KO_RESULTS + 0x08)
#define KO_R_ERROR (KO_RESULTS + 0x10)
#define KO_R_RIP (KO_RESULTS + 0x18)
#define KO_R_CS (KO_RESULTS + 0x20)
#define KO_R_CR2 (KO_RESULTS + 0x28)
#define KO_DONE_MAGIC 0x600dd0e

/* Selectors. */
#define KO_SEL_KCODE 0x08
#define KO_SEL_KDATA 0x10
#define KO_SEL_UDATA 0x18
#define KO_SEL_UCODE 0x20
#define KO_SEL_TSS 0x28
/* The data descriptor the implicit access loads: index 512 of the GDT copy
 * based at KO_TEST_GVA - 4K, i.e. exactly the first 8 bytes of the test page. */
#define KO_SEL_IMPLICIT 0x1000

#define KO_ACC_READ 0
#define KO_ACC_WRITE 1
#define KO_ACC_FETCH 2
#define KO_ACC_IMPLICIT 3
#define KO_ACC_IMPLICIT_WRITE 4

#ifndef __ASSEMBLER__
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvm_oracle;

enum kvm_oracle_feature {
	KVM_ORACLE_SMEP,
	KVM_ORACLE_SMAP,
	KVM_ORACLE_PKU,		/* CR4.PKE can be set */
	KVM_ORACLE_NX,
	KVM_ORACLE_LA57,
	KVM_ORACLE_1G,
	KVM_ORACLE_NR_FEATURES
};

enum kvm_oracle_access {
	KVM_ORACLE_READ = KO_ACC_READ,
	KVM_ORACLE_WRITE = KO_ACC_WRITE,
	KVM_ORACLE_FETCH = KO_ACC_FETCH,
	/* A descriptor read from the test page by a segment load (SDM 4.6:
	 * an implicit supervisor-mode access at any CPL). */
	KVM_ORACLE_IMPLICIT = KO_ACC_IMPLICIT,
	/* The same load of a descriptor whose accessed bit is clear: the CPU
	 * sets it, an implicit supervisor-mode write (SDM 3.4.5.1). */
	KVM_ORACLE_IMPLICIT_WRITE = KO_ACC_IMPLICIT_WRITE,
};

/* Architectural entry bits the case may set (others are the oracle's). */
#define KO_PTE_P (1ULL << 0)
#define KO_PTE_W (1ULL << 1)
#define KO_PTE_U (1ULL << 2)
#define KO_PTE_A (1ULL << 5)
#define KO_PTE_D (1ULL << 6)
#define KO_PTE_PS (1ULL << 7)
#define KO_PTE_NX (1ULL << 63)
#define KO_PTE_FLAGS (KO_PTE_P | KO_PTE_W | KO_PTE_U | KO_PTE_A | KO_PTE_D | KO_PTE_NX)

struct kvm_oracle_case {
	unsigned int leaf;	/* 1: 4K PTE; 2: 2M PDE with PS */
	uint64_t pte_flags;	/* KO_PTE_FLAGS bits of the PTE (leaf 1 only) */
	uint64_t pde_flags;	/* KO_PTE_FLAGS bits of the PDE (PS added for leaf 2) */
	unsigned int pkey;	/* protection key in the leaf's bits 62:59 */
	uint64_t pde_extra, pte_extra;	/* raw bits OR'd in (reserved/ignored-bit cases) */
	bool wp;		/* CR0.WP */
	bool smep, smap, pke;	/* CR4 */
	bool nxe;		/* EFER.NXE */
	bool ac;		/* RFLAGS.AC at the access, either CPL (CR0.AM is clear) */
	uint32_t pkru;
	unsigned int cpl;	/* 0 or 3 */
	enum kvm_oracle_access access;
};

struct kvm_oracle_result {
	bool faulted;
	uint8_t vector;		/* 14 (#PF) or 13 (#GP) when faulted */
	uint32_t error_code;
	uint64_t cr2;
	uint64_t rip;		/* where the fault (or the closing #UD) was taken */
	uint64_t pde_before, pde_after;
	uint64_t pte_before, pte_after;	/* leaf 1 only */
	char why[160];		/* kvm_oracle_run() != 0: the reason */
};

/* The page tables of a case, as the walker sees them before the access. */
struct kvm_oracle_tables {
	uint64_t cr3;
	uint64_t gva;		/* the address accessed */
	uint64_t pde_gpa, pde;
	uint64_t pte_gpa, pte;	/* pte_gpa 0 for a 2M leaf */
};

#define KVM_ORACLE_NOT_JUDGED 1	/* kvm_oracle_run(): the oracle can't run this case */

int kvm_oracle_open(struct kvm_oracle **out, char *why, size_t why_len);
void kvm_oracle_close(struct kvm_oracle *o);
bool kvm_oracle_has(const struct kvm_oracle *o, enum kvm_oracle_feature f);
const char *kvm_oracle_feature_name(enum kvm_oracle_feature f);
/* Usable although KVM_GET_SUPPORTED_CPUID leaves it out (see kvm_oracle.c). */
bool kvm_oracle_forced(const struct kvm_oracle *o, enum kvm_oracle_feature f);
/* Why a feature is or isn't usable, for reports. */
const char *kvm_oracle_feature_why(const struct kvm_oracle *o, enum kvm_oracle_feature f);
/* Guest MAXPHYADDR (CPUID 0x80000008), for reserved-bit rules. */
unsigned int kvm_oracle_maxphyaddr(const struct kvm_oracle *o);
/* Whether implicit supervisor accesses at this CPL are judged on this host
 * (probed by kvm_oracle_open()); *why says why not. */
bool kvm_oracle_implicit_ok(const struct kvm_oracle *o, unsigned int cpl, const char **why);

void kvm_oracle_case_tables(const struct kvm_oracle *o, const struct kvm_oracle_case *c, struct kvm_oracle_tables *t);
/* Guest memory (KO_MEM_SIZE bytes at gpa 0): the infrastructure page tables
 * never change, so a copy of it plus kvm_oracle_case_tables() is the flat
 * memory a walker needs. */
const void *kvm_oracle_mem(const struct kvm_oracle *o);

/*
 * Runs one case.  0: judged, r filled.  KVM_ORACLE_NOT_JUDGED: the host
 * lacks something the case needs (r->why says what).  Negative: the run went
 * wrong (triple fault, timeout, emulation failure; r->why); the VM is rebuilt
 * before the next case.
 */
int kvm_oracle_run(struct kvm_oracle *o, const struct kvm_oracle_case *c, struct kvm_oracle_result *r);

/* Nanoseconds spent in KVM_RUN so far and the number of KVM_RUN calls. */
void kvm_oracle_stats(const struct kvm_oracle *o, uint64_t *run_ns, uint64_t *runs);
#endif /* !__ASSEMBLER__ */

#endif /* VMMU_KVM_ORACLE_H */
