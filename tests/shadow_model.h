/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_SHADOW_MODEL_H
#define VMMU_TEST_SHADOW_MODEL_H
/*
 * The model engine of the model-based random tests (test_shadow.c): one
 * engine drives one vCPU through random guest page-table changes, CR3
 * switches, invalidations, role changes and accesses, and checks every
 * access against what the architecture allows, from its own record of the
 * guest tables and a model TLB of the translations that may still be
 * cached.  Failures name the seed and step; the last operations are
 * printed.
 */
#include "model_check.h"
#include "shadow_test.h"

/* Guest-virtual layout: data windows (1G aligned, mode dependent) whose
 * first bytes (the engine's probe area, 4M at probe_off) hold the mappings;
 * the direct map of the engine's pools; the shared region. */
#define PROBE (4 * MB)
#define DMAP_GVA 0x10000000ULL
#define SHV_GVA 0x20000000ULL

#define MAX_REC 160
#define TLB_MAX 4096

/* One leaf of a guest address space: [gva, gva + size) -> [gpa, ...). */
struct xlat {
	uint64_t gva, size, gpa, flags;	/* flags: RIGHTS bits */
};

/* A translation the vCPU's TLB may hold: tagged with the PCID it was used
 * under (0 without CR4.PCIDE), or global (G with CR4.PGE, any PCID). */
struct tent {
	struct xlat x;
	uint16_t ctx;
	bool global;
};

struct aspace {
	struct guest_pt *pt;
	uint64_t pool;
	struct xlat rec[MAX_REC];
	int nrec;
	/* Tables were freed while this space was not loaded: its next load
	 * flushes its PCID, as Linux does before reusing freed tables, so no
	 * paging-structure cache can combine an old entry with a new table. */
	bool need_flush;
};

/* The page table every address space of the threads test links (SHV_GVA). */
struct shared {
	struct guest_pt *pt;		/* owns the table; written by engine 0 */
	int version[SD_PAGES];		/* 0: SD_BASE page, 1: the B copy */
};

struct eng {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	enum guest_mode mode;
	int id;				/* thread / slice index */
	int nas;
	struct aspace as[MAX_AS];
	uint64_t win[4];
	int nwin;
	uint64_t probe_off;
	uint64_t s0, s1, pools;
	uint64_t *sh0, *sh1;		/* shadow copies of the two data slices */
	uint64_t rng, seed, step, seq;
	struct shared *shared;
	/* vCPU state, as the model knows it */
	int cur;
	bool pcide, pge, wp, smep, smap, ac, nxe;
	uint32_t cpl;
	uint16_t ctx;			/* PCID in use */
	/* TLB over-approximation */
	struct tent tlb[TLB_MAX];
	int ntlb;
	/* statistics of the run */
	uint64_t n_acc, n_ok, n_mmio, n_pf, n_gp, n_stale_cand, n_stale_used, n_ops[24];
	/* the last operations, the first failure (ml.why) */
	struct model_log ml;
};

/* Contents of the shared data pages: depends on the gpa, never zero. */
uint64_t pat(uint64_t gpa);
/* Shared data page i, version 0 or 1 (the B copy). */
uint64_t sd_page(int i, int version);

/* Builds the engine's spaces (tables written by its vCPU); no state loaded. */
int eng_init(struct eng *e, vmmu_vm *vm, vmmu_vcpu *vcpu, enum guest_mode mode, int id, int nas,
	     uint64_t seed, struct shared *sh);
/* Runs until max_steps or the deadline; audits after every step if asked. */
int eng_run(struct eng *e, uint64_t max_steps, double deadline, bool audit_each);
void eng_report(const struct eng *e, const char *var, double secs);
void eng_fini(struct eng *e);

#endif /* VMMU_TEST_SHADOW_MODEL_H */
