// SPDX-License-Identifier: MIT
/*
 * Shadow-paging benchmarks.  Both run a 4-level guest on a VM with
 * cfg.mmu = VMMU_MMU_SHADOW and check what every timed access returns.
 *
 * `vmmu bench cr3switch`: what a context switch costs a guest without TDP.
 * P address spaces (one guest_pt each, distinct PCIDs) map the same gva
 * range to different data pages; the vCPU moves round robin between them
 * with MOV CR3 + the PCID NOFLUSH bit, as Linux does with PCID, and reads one
 * page after each switch.  Each read must return the token of the page its
 * own address space maps, so a switch that kept the previous root (or a
 * stale TLB entry) is a failure, not a fast number.  With 3 previous roots
 * the current root plus the cache cover 4 address spaces, so P = 5 should
 * fall off a cliff (cliff_p5_over_p4); with none, P = 2 already pays the
 * slow switch on every step (noprev_over_p2, the target: >= 20).
 *
 * `vmmu bench ptwrite`: what a guest store to its own page tables costs.
 * The guest maps its page-table pool at a "direct map" gva, as a kernel does,
 * and stores through it with vmmu_vcpu_access(), as guest code would:
 *  - a PDE store lands in a page shadowed as a non-leaf table: it stays
 *    write-protected and every store is emulated (ptwrite_emulated_ns);
 *  - a PTE store lands in a leaf table the shadow MMU may let go out of sync:
 *    the first store takes the fault and unsyncs the page, the rest are plain
 *    stores until the next CR3 load resyncs it (ptwrite_unsync_ns).
 * Each also runs as a store + INVLPG + read cycle, the read checking that the
 * new mapping is in use.
 */
#include <inttypes.h>
#include <string.h>

#include "env.h"
#include "registry.h"
#include "guest.h"

#define SB_PAGE			CLI_PAGE_SIZE
#define SB_ADDR_MASK		UINT64_C(0x000ffffffffff000)	/* frame bits of a 4-level entry */

static unsigned int sb_reps(const struct cli_opts *o)
{
	return o->reps_set ? o->reps : CLI_DEFAULT_REPS;
}

/* Tokens are never 0, so a read of a zeroed page cannot pass for one. */
static uint64_t sb_token(uint64_t gpa, uint64_t seed)
{
	return cli_token(gpa, seed) | 1;
}

/*
 * A one-vCPU shadow-paging VM over a vmmu-allocated slot at gpa 0.  Shadow
 * paging may be missing from this build: say so in words, since that is the
 * likely reason and "operation not supported" alone would not tell which one.
 */
static int sb_vm_create(uint32_t prev_roots, uint64_t slot_bytes, vmmu_vm **vm, vmmu_vcpu **vcpu,
			uint8_t **ram, char *err, size_t err_len)
{
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = slot_bytes };
	struct vmmu_vm_config cfg;
	int r;

	*vm = NULL;
	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	cfg.shadow_prev_roots = prev_roots;
	cfg.max_vcpus = 1;
	r = vmmu_vm_create(&cfg, vm);
	if (r == VMMU_ENOTSUP) {
		cli_set_error(err, err_len, "shadow paging (VMMU_MMU_SHADOW) is not supported by this vmmu: "
			      "vmmu_vm_create: %s", vmmu_strerror(r));
		return -1;
	}
	if (r) {
		*vm = NULL;
		cli_set_error(err, err_len, "vmmu_vm_create (shadow, %u previous roots): %s", prev_roots,
			      vmmu_strerror(r));
		return -1;
	}
	if ((r = vmmu_set_memslot(*vm, &s)) || (r = vmmu_vcpu_create(*vm, 0, vcpu)) ||
	    (r = vmmu_memslot_hva(*vm, 0, (void **)ram))) {
		cli_set_error(err, err_len, "shadow VM setup: %s", vmmu_strerror(r));
		return -1;
	}
	return 0;
}

/* The VM must not have flagged itself bugged, and its audit must pass. */
static bool sb_vm_healthy(vmmu_vm *vm, char *err, size_t err_len)
{
	const char *why = NULL;
	char audit[200] = "";

	if (vmmu_vm_bugged(vm, &why)) {
		cli_set_error(err, err_len, "the VM is bugged: %s", why ? why : "?");
		return false;
	}
	/* Only a broken invariant fails: an audit this build lacks is not one. */
	if (vmmu_audit(vm, audit, sizeof(audit)) == VMMU_EIO) {
		cli_set_error(err, err_len, "vmmu_audit: %s", audit);
		return false;
	}
	return true;
}

/* A failed guest access, in words; false so callers can return it. */
static bool sb_access_failed(char *err, size_t err_len, const char *what, uint64_t gva, int r,
			     const struct vmmu_exit *exit)
{
	char why[160];

	cli_describe_failure(why, sizeof(why), r, exit);
	cli_set_error(err, err_len, "%s at gva 0x%" PRIx64 ": %s", what, gva, why);
	return false;
}

/* ------------------------------------------------------------------------ */
/* Benchmark "cr3switch"                                                     */

#define CS_MAX_SPACES		6u
#define CS_PAGES		16u	/* pages each address space maps (and touches) */
#define CS_GVA			UINT64_C(0x0000100000000000)
#define CS_DATA_GPA		UINT64_C(0)
#define CS_POOL_GPA		(UINT64_C(1) << 20)
#define CS_POOL_BYTES		(UINT64_C(16) * SB_PAGE)	/* 4 tables needed, room to spare */
#define CS_SLOT_BYTES		(UINT64_C(2) << 20)
#define CS_SWITCHES		8192u	/* timed switches per configuration and repetition */
#define CS_PREV_ROOTS		3u
#define CS_TARGET_NOPREV	20.0

/* The configurations, interleaved in every repetition. */
struct cs_conf {
	unsigned int spaces;
	uint32_t prev_roots;
	const char *ns_key, *fast_key, *slow_key, *created_key;
};

/* the report keys of a configuration, from one tag */
#define CS_CONF(p, prev, tag) \
	{ p, prev, "switch_ns_" tag, "root_fast_switches_" tag, "root_slow_switches_" tag, \
	  "shadow_pages_created_" tag }

static const struct cs_conf cs_confs[] = {
	CS_CONF(1, CS_PREV_ROOTS, "p1"),
	CS_CONF(2, CS_PREV_ROOTS, "p2"),
	CS_CONF(3, CS_PREV_ROOTS, "p3"),
	CS_CONF(4, CS_PREV_ROOTS, "p4"),
	CS_CONF(5, CS_PREV_ROOTS, "p5"),
	CS_CONF(6, CS_PREV_ROOTS, "p6"),
	CS_CONF(2, 0, "noprev_p2"),
};

#define CS_NR_CONFS (sizeof(cs_confs) / sizeof(cs_confs[0]))
/* indices into cs_confs for the ratios */
#define CS_P2		1
#define CS_P4		3
#define CS_P5		4
#define CS_NOPREV_P2	6

struct cs_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	uint8_t *ram;
	struct guest_pt *pt[CS_MAX_SPACES];
	uint64_t cr3[CS_MAX_SPACES];	/* root | PCID */
	unsigned int spaces;
	uint64_t step;			/* next step of the round robin */
	uint64_t seed;
	/* counts over the timed runs only: what a switch cost the MMU */
	uint64_t fast, slow, created;
};

/* The data page address space a maps at page i of CS_GVA. */
static uint64_t cs_data_gpa(unsigned int a, unsigned int i)
{
	return CS_DATA_GPA + ((uint64_t)a * CS_PAGES + i) * SB_PAGE;
}

static void cs_vm_destroy(struct cs_vm *c)
{
	for (unsigned int a = 0; a < CS_MAX_SPACES; a++)
		if (c->pt[a])
			guest_pt_destroy(c->pt[a]);
	if (c->vm)
		vmmu_vm_destroy(c->vm);
	memset(c, 0, sizeof(*c));
}

static int cs_vm_create(struct cs_vm *c, const struct cs_conf *conf, uint64_t seed, char *err, size_t err_len)
{
	struct vmmu_cpu_state st;
	int r;

	memset(c, 0, sizeof(*c));
	c->spaces = conf->spaces;
	c->seed = seed;
	if (sb_vm_create(conf->prev_roots, CS_SLOT_BYTES, &c->vm, &c->vcpu, &c->ram, err, err_len))
		return -1;
	for (unsigned int a = 0; a < c->spaces; a++) {
		for (unsigned int i = 0; i < CS_PAGES; i++) {
			uint64_t t = sb_token(cs_data_gpa(a, i), seed);

			memcpy(c->ram + cs_data_gpa(a, i), &t, sizeof(t));
		}
		/*
		 * Every table is written before the vCPU runs and never again,
		 * so host-side stores are fine: nothing is shadowed yet.
		 */
		r = guest_pt_create(c->vm, GUEST_MODE_4LEVEL, CS_POOL_GPA + a * CS_POOL_BYTES, CS_POOL_BYTES,
				    &c->pt[a]);
		if (!r)
			r = guest_map(c->pt[a], CS_GVA, cs_data_gpa(a, 0), CS_PAGES * SB_PAGE, SB_PAGE,
				      GUEST_NX | GUEST_A);
		if (r) {
			cli_set_error(err, err_len, "address space %u: guest tables: %s", a, vmmu_strerror(r));
			return -1;
		}
		/* PCIDs 1..P: each address space keeps its own TLB entries. */
		c->cr3[a] = guest_pt_cr3(c->pt[a]) | (a + 1);
	}
	/* PCIDE may only be set while CR3's PCID is 0 (SDM 4.10.1). */
	guest_pt_state(c->pt[0], &st, 0);
	st.cr4 |= VMMU_CR4_PCIDE;
	r = vmmu_vcpu_set_state(c->vcpu, &st);
	if (!r)
		r = vmmu_vcpu_write_cr3(c->vcpu, c->cr3[0]);
	if (r) {
		cli_set_error(err, err_len, "entering 4-level paging with PCIDE: %s", vmmu_strerror(r));
		return -1;
	}
	return 0;
}

/*
 * n steps of the round robin: MOV CR3 with NOFLUSH to the next address
 * space, then an 8-byte read of one of its pages, which must hold that
 * space's token.  Consecutive visits to a space read different pages, so
 * the reads walk the space's tables whenever its translations were dropped.
 */
static bool cs_run(struct cs_vm *c, uint64_t n, char *err, size_t err_len)
{
	struct vmmu_exit exit;

	for (uint64_t k = 0; k < n; k++, c->step++) {
		unsigned int a = (unsigned int)(c->step % c->spaces);
		unsigned int i = (unsigned int)(c->step / c->spaces % CS_PAGES);
		uint64_t gva = CS_GVA + i * SB_PAGE, v = 0, want;
		int r = vmmu_vcpu_write_cr3(c->vcpu, c->cr3[a] | VMMU_CR3_PCID_NOFLUSH);

		if (r) {
			cli_set_error(err, err_len, "MOV CR3 to address space %u: %s", a, vmmu_strerror(r));
			return false;
		}
		r = vmmu_vcpu_access(c->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);
		if (r)
			return sb_access_failed(err, err_len, "read after CR3 switch", gva, r, &exit);
		want = sb_token(cs_data_gpa(a, i), c->seed);
		if (v != want) {
			cli_set_error(err, err_len,
				      "address space %u (of %u) page %u read 0x%016" PRIx64 ", want 0x%016" PRIx64
				      ": a translation of another address space was used", a, c->spaces, i, v,
				      want);
			fprintf(stderr, "vmmu: %s\n", err);
			return false;
		}
	}
	return true;
}

/* One timed run: ns per switch + touch; root switch counts accumulated. */
static bool cs_timed(struct cs_vm *c, double *ns, char *err, size_t err_len)
{
	struct vmmu_vcpu_stats s0, s1;
	struct vmmu_vm_stats m0, m1;
	uint64_t t0, t1;

	vmmu_vm_get_stats(c->vm, &m0);
	vmmu_vcpu_get_stats(c->vcpu, &s0);
	t0 = cli_now_ns();
	if (!cs_run(c, CS_SWITCHES, err, err_len))
		return false;
	t1 = cli_now_ns();
	vmmu_vcpu_get_stats(c->vcpu, &s1);
	vmmu_vm_get_stats(c->vm, &m1);
	c->created += m1.shadow_pages_created - m0.shadow_pages_created;
	c->fast += s1.root_fast_switches - s0.root_fast_switches;
	c->slow += s1.root_slow_switches - s0.root_slow_switches;
	*ns = (double)(t1 - t0) / CS_SWITCHES;
	return true;
}

int bench_cr3switch(const struct cli_opts *o)
{
	static double ns[CS_NR_CONFS][CLI_MAX_REPS];
	unsigned int reps = sb_reps(o);
	struct cs_vm c[CS_NR_CONFS];
	double m[CS_NR_CONFS];
	uint64_t seed = o->seed ^ 0xc3c3c3;
	char err[256] = "";
	struct report r;
	bool ok = false;

	memset(c, 0, sizeof(c));
	report_init(&r);
	report_str(&r, "benchmark", "cr3switch");
	report_str(&r, "mmu", "shadow");
	report_str(&r, "guest", "4-level, PCIDE, MOV CR3 with NOFLUSH");
	report_u64(&r, "reps", reps);
	report_u64(&r, "switches_per_rep", CS_SWITCHES);
	report_u64(&r, "pages_per_space", CS_PAGES);
	report_u64(&r, "prev_roots", CS_PREV_ROOTS);

	for (unsigned int k = 0; k < CS_NR_CONFS; k++) {
		if (cs_vm_create(&c[k], &cs_confs[k], seed, err, sizeof(err)))
			goto out;
		/*
		 * Warm-up: every page of every space read a few times, so the
		 * shadow tables, the cached roots and the TLB are in the steady
		 * state the timed runs measure, not being built.
		 */
		if (!cs_run(&c[k], 4ull * cs_confs[k].spaces * CS_PAGES, err, sizeof(err)))
			goto out;
	}
	for (unsigned int rep = 0; rep < reps; rep++) {
		/* rotate the order so drift and cache warmth hit every configuration alike */
		for (unsigned int j = 0; j < CS_NR_CONFS; j++) {
			unsigned int k = (rep + j) % CS_NR_CONFS;

			if (!cs_timed(&c[k], &ns[k][rep], err, sizeof(err)))
				goto out;
		}
	}
	for (unsigned int k = 0; k < CS_NR_CONFS; k++) {
		if (!sb_vm_healthy(c[k].vm, err, sizeof(err)))
			goto out;
		m[k] = cli_median(ns[k], reps);
	}
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		report_f(&r, cs_confs[k].ns_key, 1, m[k]);
	for (unsigned int k = 0; k < CS_NR_CONFS; k++) {
		report_u64(&r, cs_confs[k].fast_key, c[k].fast);
		report_u64(&r, cs_confs[k].slow_key, c[k].slow);
	}
	/* a slow switch that rebuilds the tree shows here, one that finds it hashed does not */
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		report_u64(&r, cs_confs[k].created_key, c[k].created);
	/* report_f() turns a division by a zero median into null */
	report_f(&r, "noprev_over_p2", 2, m[CS_NOPREV_P2] / m[CS_P2]);
	report_f(&r, "target_noprev_over_p2", 1, CS_TARGET_NOPREV);
	/* written so that a NaN ratio counts as a miss */
	report_bool(&r, "meets_noprev_over_p2", m[CS_NOPREV_P2] / m[CS_P2] >= CS_TARGET_NOPREV);
	report_f(&r, "cliff_p5_over_p4", 2, m[CS_P5] / m[CS_P4]);
	ok = true;
out:
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		cs_vm_destroy(&c[k]);
	return report_finish(&r, o, ok, err);
}

/* ------------------------------------------------------------------------ */
/* Benchmark "ptwrite"                                                       */

/*
 * Guest-physical layout: data X and Y, 2 MiB each, then the page-table pool.
 * Guest-virtual layout, all in one page directory:
 *   PW_GVA_E1  X, its PDE rewritten to point at E2's page table and back
 *   PW_GVA_E2  Y
 *   PW_GVA_U   X, its PTEs rewritten to point at Y's pages and back
 * and the pool at PW_GVA_DIRECT + gpa, through which the guest stores.
 */
#define PW_X_GPA		UINT64_C(0)
#define PW_Y_GPA		(UINT64_C(2) << 20)
#define PW_POOL_GPA		(UINT64_C(4) << 20)
#define PW_POOL_BYTES		(UINT64_C(1) << 20)
#define PW_SLOT_BYTES		(UINT64_C(8) << 20)
#define PW_PAGES		512u	/* a page table's worth: 2 MiB */
#define PW_GVA_E1		UINT64_C(0x40000000)
#define PW_GVA_E2		(PW_GVA_E1 + (UINT64_C(2) << 20))
#define PW_GVA_U		(PW_GVA_E1 + (UINT64_C(4) << 20))
#define PW_GVA_DIRECT		UINT64_C(0xffff888000000000)
#define PW_EMULATED_ITERS	2048u	/* PDE stores per timed run */
#define PW_UNSYNC_BATCHES	4u	/* runs over the 512 PTEs per repetition */
#define PW_LEAF_FLAGS		(GUEST_W | GUEST_NX | GUEST_A | GUEST_D)

struct pw_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	uint8_t *ram;
	struct guest_pt *pt;
	uint64_t cr3;
	uint64_t seed;
	uint64_t pde_x, pde_y;		/* E1's PDE: its own table (X), E2's (Y) */
	uint64_t pde_gpa;		/* where E1's PDE lives */
	bool pde_is_y;
	uint64_t pte_gpa;		/* U's first PTE; the others follow */
	uint64_t pte_x[PW_PAGES];	/* U's PTEs as mapped (X); pw_pte_y() points them at Y */
	bool pte_is_y[PW_PAGES];
};

static uint64_t pw_page_gpa(bool y, unsigned int i)
{
	return (y ? PW_Y_GPA : PW_X_GPA) + (uint64_t)i * SB_PAGE;
}

static uint64_t pw_pte_y(const struct pw_vm *p, unsigned int i)
{
	return (p->pte_x[i] & ~SB_ADDR_MASK) | pw_page_gpa(true, i);
}

static void pw_vm_destroy(struct pw_vm *p)
{
	if (p->pt)
		guest_pt_destroy(p->pt);
	if (p->vm)
		vmmu_vm_destroy(p->vm);
	memset(p, 0, sizeof(*p));
}

/* Reads gva, which must hold the token of gpa. */
static bool pw_check(struct pw_vm *p, uint64_t gva, uint64_t gpa, const char *what, char *err, size_t err_len)
{
	struct vmmu_exit exit;
	uint64_t v = 0, want = sb_token(gpa, p->seed);
	int r = vmmu_vcpu_access(p->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);

	if (r)
		return sb_access_failed(err, err_len, what, gva, r, &exit);
	if (v != want) {
		cli_set_error(err, err_len,
			      "%s: gva 0x%" PRIx64 " read 0x%016" PRIx64 ", want the token of gpa 0x%" PRIx64
			      ": the old mapping is still in use", what, gva, v, gpa);
		fprintf(stderr, "vmmu: %s\n", err);
		return false;
	}
	return true;
}

/* A guest store of a page-table entry through the direct map. */
static bool pw_store(struct pw_vm *p, uint64_t entry_gpa, uint64_t val, char *err, size_t err_len)
{
	struct vmmu_exit exit;
	int r = vmmu_vcpu_access(p->vcpu, PW_GVA_DIRECT + entry_gpa, &val, sizeof(val), VMMU_ACCESS_WRITE,
				 &exit);

	if (r)
		return sb_access_failed(err, err_len, "page-table store", PW_GVA_DIRECT + entry_gpa, r, &exit);
	return true;
}

/* Every page of E1, E2 and U must be mapped as the entries now say. */
static bool pw_check_all(struct pw_vm *p, const char *what, char *err, size_t err_len)
{
	for (unsigned int i = 0; i < PW_PAGES; i++)
		if (!pw_check(p, PW_GVA_E1 + i * SB_PAGE, pw_page_gpa(p->pde_is_y, i), what, err, err_len) ||
		    !pw_check(p, PW_GVA_E2 + i * SB_PAGE, pw_page_gpa(true, i), what, err, err_len) ||
		    !pw_check(p, PW_GVA_U + i * SB_PAGE, pw_page_gpa(p->pte_is_y[i], i), what, err, err_len))
			return false;
	return true;
}

static int pw_vm_create(struct pw_vm *p, uint64_t seed, char *err, size_t err_len)
{
	struct vmmu_cpu_state st;
	uint64_t v;
	int r;

	memset(p, 0, sizeof(*p));
	p->seed = seed;
	if (sb_vm_create(CS_PREV_ROOTS, PW_SLOT_BYTES, &p->vm, &p->vcpu, &p->ram, err, err_len))
		return -1;
	for (unsigned int i = 0; i < PW_PAGES; i++) {
		for (int y = 0; y < 2; y++) {
			uint64_t t = sb_token(pw_page_gpa(y, i), seed);

			memcpy(p->ram + pw_page_gpa(y, i), &t, sizeof(t));
		}
	}
	/* Built host-side before the vCPU runs: nothing is shadowed yet. */
	r = guest_pt_create(p->vm, GUEST_MODE_4LEVEL, PW_POOL_GPA, PW_POOL_BYTES, &p->pt);
	if (!r)
		r = guest_map(p->pt, PW_GVA_E1, PW_X_GPA, PW_PAGES * SB_PAGE, SB_PAGE, PW_LEAF_FLAGS);
	if (!r)
		r = guest_map(p->pt, PW_GVA_E2, PW_Y_GPA, PW_PAGES * SB_PAGE, SB_PAGE, PW_LEAF_FLAGS);
	if (!r)
		r = guest_map(p->pt, PW_GVA_U, PW_X_GPA, PW_PAGES * SB_PAGE, SB_PAGE, PW_LEAF_FLAGS);
	if (!r)
		r = guest_map(p->pt, PW_GVA_DIRECT + PW_POOL_GPA, PW_POOL_GPA, PW_POOL_BYTES, SB_PAGE,
			      PW_LEAF_FLAGS);
	if (!r)
		r = guest_get_entry(p->pt, PW_GVA_E1, 2, &p->pde_x, &p->pde_gpa);
	if (!r)
		r = guest_get_entry(p->pt, PW_GVA_E2, 2, &p->pde_y, NULL);
	for (unsigned int i = 0; !r && i < PW_PAGES; i++) {
		uint64_t gpa;

		r = guest_get_entry(p->pt, PW_GVA_U + i * SB_PAGE, 1, &p->pte_x[i], &gpa);
		if (!r && !i)
			p->pte_gpa = gpa;
		else if (!r && gpa != p->pte_gpa + 8 * i)
			r = VMMU_EIO;	/* one page table holds all of U */
	}
	if (r) {
		cli_set_error(err, err_len, "guest tables: %s", vmmu_strerror(r));
		return -1;
	}
	/*
	 * Stored with A set, as Linux's _PAGE_TABLE has it: otherwise every walk
	 * after a store would set it again, and the timings would include the
	 * walker's A-bit updates to the very table being measured.
	 */
	p->pde_x |= GUEST_A;
	p->pde_y |= GUEST_A;
	/* The stores below go through the direct map: it must map the pool. */
	if (guest_get_entry(p->pt, PW_GVA_DIRECT + PW_POOL_GPA, 1, &v, NULL) ||
	    (v & SB_ADDR_MASK) != PW_POOL_GPA) {
		cli_set_error(err, err_len, "guest tables: the direct map does not map the pool");
		return -1;
	}
	guest_pt_state(p->pt, &st, 0);
	p->cr3 = st.cr3;
	r = vmmu_vcpu_set_state(p->vcpu, &st);
	if (r) {
		cli_set_error(err, err_len, "entering 4-level paging: %s", vmmu_strerror(r));
		return -1;
	}
	/*
	 * Reading everything, the tables through the direct map included, gets
	 * every guest table shadowed, and so write-protected, before timing.
	 */
	if (!pw_check_all(p, "warm-up", err, err_len))
		return -1;
	for (uint64_t off = 0; off < PW_POOL_BYTES; off += SB_PAGE) {
		struct vmmu_exit exit;
		uint64_t gva = PW_GVA_DIRECT + PW_POOL_GPA + off;

		r = vmmu_vcpu_access(p->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);
		if (r) {
			sb_access_failed(err, err_len, "warm-up read of the direct map", gva, r, &exit);
			return -1;
		}
	}
	return 0;
}

/*
 * Emulated path: E1's PDE toggles between its own table (X) and E2's (Y).
 * A page directory is shadowed as a non-leaf table, which never goes out of
 * sync, so every store is a write-protection fault the MMU emulates.  The
 * read after each store is needed as well as checked: a shadowed table
 * written over and over without being used through counts as write
 * flooding and gets unshadowed, after which stores would cost nothing.  So
 * the store alone is timed inside the cycle (less the clock's own cost).
 * One store at a time keeps a floor of some 50 ns that a batch does not
 * have (the same code over TDP, where the store is plain, reads ~60 ns):
 * small next to an emulation, but compare ptwrite_unsync_ns with care.
 */
static bool pw_emulated(struct pw_vm *p, double clock_ns, double *store_ns, double *cycle_ns, char *err,
			size_t err_len)
{
	uint64_t store = 0, t_start = cli_now_ns();

	for (unsigned int k = 0; k < PW_EMULATED_ITERS; k++) {
		/* an odd period: a page's next visit finds the PDE toggled, so a
		 * translation kept from its last one would read the wrong token */
		unsigned int i = (k * 7) % (PW_PAGES - 1);
		uint64_t gva = PW_GVA_E1 + i * SB_PAGE, t0, t1;
		bool y = !p->pde_is_y;

		t0 = cli_now_ns();
		if (!pw_store(p, p->pde_gpa, y ? p->pde_y : p->pde_x, err, err_len))
			return false;
		t1 = cli_now_ns();
		store += t1 - t0;
		p->pde_is_y = y;
		/* INVLPG also drops every paging-structure cache entry of the PCID */
		vmmu_vcpu_invlpg(p->vcpu, gva);
		if (!pw_check(p, gva, pw_page_gpa(y, i), "read after a PDE store", err, err_len))
			return false;
	}
	*cycle_ns = (double)(cli_now_ns() - t_start) / PW_EMULATED_ITERS;
	*store_ns = (double)store / PW_EMULATED_ITERS - clock_ns;
	if (*store_ns < 0)
		*store_ns = 0;
	return true;
}

/*
 * MOV CR3 without NOFLUSH: resyncs U's table and write-protects it again.
 * Then U is read through, untimed: the reads check the resync, and leave
 * translations of U (TLB, shadow entries) that the next stores make stale,
 * so a store that the MMU missed or an INVLPG it ignored reads wrong data.
 */
static bool pw_resync(struct pw_vm *p, char *err, size_t err_len)
{
	int r = vmmu_vcpu_write_cr3(p->vcpu, p->cr3);

	if (r) {
		cli_set_error(err, err_len, "MOV CR3: %s", vmmu_strerror(r));
		return false;
	}
	for (unsigned int i = 0; i < PW_PAGES; i++)
		if (!pw_check(p, PW_GVA_U + i * SB_PAGE, pw_page_gpa(p->pte_is_y[i], i), "read after MOV CR3", err,
			      err_len))
			return false;
	return true;
}

/*
 * Unsync path, PW_UNSYNC_BATCHES times over U's 512 PTEs (each toggled
 * between X and Y).  Each run starts with pw_resync(), so it pays one unsync
 * fault, on its first store, as a guest does after each context switch.
 *  - batch: 512 stores back to back (what mprotect() or munmap() of a range
 *    does), then INVLPG + a checked read of every page; stores timed;
 *  - cycle: store, INVLPG, checked read, for each PTE; all timed.
 */
static bool pw_unsync(struct pw_vm *p, double *store_ns, double *first_ns, double *cycle_ns, char *err,
		      size_t err_len)
{
	uint64_t store = 0, first = 0, cycle = 0;

	for (unsigned int b = 0; b < PW_UNSYNC_BATCHES; b++) {
		uint64_t t0, t1;

		if (!pw_resync(p, err, err_len))
			return false;
		t0 = cli_now_ns();
		for (unsigned int i = 0; i < PW_PAGES; i++) {
			bool y = !p->pte_is_y[i];

			if (!pw_store(p, p->pte_gpa + 8 * i, y ? pw_pte_y(p, i) : p->pte_x[i], err, err_len))
				return false;
			p->pte_is_y[i] = y;
			if (!i)
				first += cli_now_ns() - t0;
		}
		t1 = cli_now_ns();
		store += t1 - t0;
		for (unsigned int i = 0; i < PW_PAGES; i++) {
			uint64_t gva = PW_GVA_U + i * SB_PAGE;

			vmmu_vcpu_invlpg(p->vcpu, gva);
			if (!pw_check(p, gva, pw_page_gpa(p->pte_is_y[i], i), "read after a batch of PTE stores",
				      err, err_len))
				return false;
		}

		if (!pw_resync(p, err, err_len))
			return false;
		t0 = cli_now_ns();
		for (unsigned int i = 0; i < PW_PAGES; i++) {
			uint64_t gva = PW_GVA_U + i * SB_PAGE;
			bool y = !p->pte_is_y[i];

			if (!pw_store(p, p->pte_gpa + 8 * i, y ? pw_pte_y(p, i) : p->pte_x[i], err, err_len))
				return false;
			p->pte_is_y[i] = y;
			vmmu_vcpu_invlpg(p->vcpu, gva);
			if (!pw_check(p, gva, pw_page_gpa(y, i), "read after a PTE store", err, err_len))
				return false;
		}
		cycle += cli_now_ns() - t0;
	}
	*store_ns = (double)store / (PW_UNSYNC_BATCHES * PW_PAGES);
	*first_ns = (double)first / PW_UNSYNC_BATCHES;
	*cycle_ns = (double)cycle / (PW_UNSYNC_BATCHES * PW_PAGES);
	return true;
}

/* What reading the clock twice costs: subtracted from one-store timings. */
static double pw_clock_ns(void)
{
	double v[9];

	for (unsigned int k = 0; k < 9; k++) {
		uint64_t t0 = cli_now_ns(), t = t0;

		for (unsigned int j = 0; j < 1000; j++)
			t = cli_now_ns();
		v[k] = (double)(t - t0) / 1000;
	}
	return cli_median(v, 9);
}

int bench_ptwrite(const struct cli_opts *o)
{
	static double em[CLI_MAX_REPS], em_cycle[CLI_MAX_REPS];
	static double un[CLI_MAX_REPS], un_first[CLI_MAX_REPS], un_cycle[CLI_MAX_REPS];
	uint64_t em_emul = 0, em_ptew = 0, em_pf = 0, un_emul = 0, un_syncs = 0, un_ptew = 0, un_pf = 0;
	unsigned int reps = sb_reps(o);
	uint64_t seed = o->seed ^ 0x97a7e;
	struct vmmu_vcpu_stats vs;
	struct vmmu_vm_stats ms;
	double clock_ns = pw_clock_ns();
	struct pw_vm p = { 0 };
	char err[256] = "";
	struct report r;
	bool ok = false;

	report_init(&r);
	report_str(&r, "benchmark", "ptwrite");
	report_str(&r, "mmu", "shadow");
	report_str(&r, "guest", "4-level, tables stored to through a direct map");
	report_u64(&r, "reps", reps);
	report_u64(&r, "emulated_stores_per_rep", PW_EMULATED_ITERS);
	report_u64(&r, "unsync_stores_per_rep", 2 * PW_UNSYNC_BATCHES * PW_PAGES);
	if (pw_vm_create(&p, seed, err, sizeof(err)))
		goto out;
	/* one untimed round of each, so the timed ones start in steady state */
	{
		double a, b, c;

		if (!pw_emulated(&p, clock_ns, &a, &b, err, sizeof(err)) ||
		    !pw_unsync(&p, &a, &b, &c, err, sizeof(err)))
			goto out;
	}
	for (unsigned int rep = 0; rep < reps; rep++) {
		struct vmmu_vcpu_stats v0, v1, v2;
		struct vmmu_vm_stats m0, m1, m2;

		vmmu_vcpu_get_stats(p.vcpu, &v0);
		vmmu_vm_get_stats(p.vm, &m0);
		if (!pw_emulated(&p, clock_ns, &em[rep], &em_cycle[rep], err, sizeof(err)))
			goto out;
		vmmu_vcpu_get_stats(p.vcpu, &v1);
		vmmu_vm_get_stats(p.vm, &m1);
		if (!pw_unsync(&p, &un[rep], &un_first[rep], &un_cycle[rep], err, sizeof(err)))
			goto out;
		vmmu_vcpu_get_stats(p.vcpu, &v2);
		vmmu_vm_get_stats(p.vm, &m2);
		em_emul += v1.pt_write_emulations - v0.pt_write_emulations;
		em_ptew += m1.shadow_pte_writes - m0.shadow_pte_writes;
		em_pf += v1.pf_taken - v0.pf_taken;
		un_emul += v2.pt_write_emulations - v1.pt_write_emulations;
		un_syncs += v2.unsync_syncs - v1.unsync_syncs;
		un_ptew += m2.shadow_pte_writes - m1.shadow_pte_writes;
		un_pf += v2.pf_taken - v1.pf_taken;
	}
	/* After a full resync everything must still read as last stored. */
	if (vmmu_vcpu_write_cr3(p.vcpu, p.cr3) || !pw_check_all(&p, "final check", err, sizeof(err)) ||
	    !sb_vm_healthy(p.vm, err, sizeof(err))) {
		if (!err[0])
			cli_set_error(err, sizeof(err), "final MOV CR3 failed");
		goto out;
	}
	vmmu_vcpu_get_stats(p.vcpu, &vs);
	vmmu_vm_get_stats(p.vm, &ms);
	report_f(&r, "ptwrite_emulated_ns", 1, cli_median(em, reps));
	report_f(&r, "ptwrite_emulated_cycle_ns", 1, cli_median(em_cycle, reps));
	report_f(&r, "ptwrite_unsync_ns", 1, cli_median(un, reps));
	report_f(&r, "ptwrite_unsync_first_ns", 1, cli_median(un_first, reps));
	report_f(&r, "ptwrite_unsync_cycle_ns", 1, cli_median(un_cycle, reps));
	report_f(&r, "emulated_over_unsync", 2, cli_median(em, reps) / cli_median(un, reps));
	report_f(&r, "clock_ns", 1, clock_ns);
	/* totals over the whole run (warm-up included) ... */
	report_u64(&r, "pt_write_emulations", vs.pt_write_emulations);
	report_u64(&r, "unsync_syncs", vs.unsync_syncs);
	report_u64(&r, "shadow_pte_writes", ms.shadow_pte_writes);
	report_u64(&r, "shadow_flooded", ms.shadow_flooded);
	report_u64(&r, "shadow_pages", ms.shadow_pages);
	report_u64(&r, "shadow_pages_zapped", ms.shadow_pages_zapped);
	/* ... and per timed phase, to show which path each one took */
	report_u64(&r, "emulated_phase_pt_write_emulations", em_emul);
	report_u64(&r, "emulated_phase_shadow_pte_writes", em_ptew);
	report_u64(&r, "emulated_phase_pf_taken", em_pf);
	report_u64(&r, "unsync_phase_pt_write_emulations", un_emul);
	report_u64(&r, "unsync_phase_shadow_pte_writes", un_ptew);
	report_u64(&r, "unsync_phase_unsync_syncs", un_syncs);
	report_u64(&r, "unsync_phase_pf_taken", un_pf);
	ok = true;
out:
	pw_vm_destroy(&p);
	return report_finish(&r, o, ok, err);
}
