// SPDX-License-Identifier: MIT
/*
 * `vmmu bench cr3switch`: what a context switch costs a guest without TDP.
 * It runs a 4-level guest on a VM with cfg.mmu = VMMU_MMU_SHADOW and
 * checks what every timed access returns.
 * P address spaces (one guest_pt each, distinct PCIDs) map the same gva
 * range to different data pages; the vCPU moves round robin between them
 * with MOV CR3 + the PCID NOFLUSH bit, as Linux does with PCID, and reads one
 * page after each switch.  Each read must return the token of the page its
 * own address space maps, so a switch that kept the previous root (or a
 * stale TLB entry) is a failure, not a fast number.  With 3 previous roots
 * the current root plus the cache cover 4 address spaces, so P = 5 should
 * fall off a cliff (cliff_p5_over_p4).
 *
 * Without the cache a switch finds the old root still in the shadow hash,
 * so on idle tables it costs little more (noprev_over_p2, a lower bound,
 * not what the cache is for).  What the cache buys shows where a real
 * guest's kernel leaves its tables: each address space also has
 * CS_KTABLES page tables ("kernel" tables, shadowed by a warm-up read)
 * that the guest keeps storing into through its direct map, without
 * INVLPG, for gvas it does not use meanwhile, so their shadow pages go out
 * of sync and stay so.  A cached root taken with NOFLUSH keeps them
 * unsync (the guest asked for no flush); a switch that reloads the root
 * must first resync every unsync page (KVM's kvm_mmu_sync_roots on load),
 * which the next store unsyncs again.  unsync_cache_gain is
 * switch_ns_unsync_noprev_p2 / switch_ns_unsync_p2, reported with the
 * syncs and root switches each took per switch.
 */
#include <inttypes.h>
#include <string.h>

#include "env.h"
#include "guest.h"
#include "registry.h"
#include "sweep.h"

#define CS_MAX_SPACES		6u
#define CS_PAGES		16u	/* pages each address space maps (and touches) */
#define CS_GVA			UINT64_C(0x0000100000000000)
#define CS_DATA_GPA		UINT64_C(0)
#define CS_POOL_GPA		(UINT64_C(1) << 20)
#define CS_POOL_BYTES		(UINT64_C(32) * CLI_PAGE_SIZE)	/* up to 4 + CS_KTABLES + 3 tables */
#define CS_SCRATCH_GPA		(UINT64_C(4) << 20)	/* what the kernel tables map (2 MiB) */
#define CS_SLOT_BYTES		(UINT64_C(6) << 20)
#define CS_KTABLES		8u	/* kernel page tables per address space */
#define CS_KGVA			UINT64_C(0xffffc90000000000)	/* their gvas: one 2 MiB range each */
#define CS_DIRECT		UINT64_C(0xffff888000000000)	/* the direct map of the table pool */
#define CS_SWITCHES		8192u	/* timed switches per configuration and repetition */
#define CS_PREV_ROOTS		3u
#define CS_TARGET_UNSYNC_GAIN	5.0

/* The configurations, interleaved in every repetition. */
struct cs_conf {
	unsigned int spaces;
	uint32_t prev_roots;
	bool unsync;		/* the guest keeps its kernel tables unsync */
	const char *tag, *ns_key, *fast_key, *slow_key, *created_key, *syncs_key;
};

/* the report keys of a configuration, from one tag */
#define CS_CONF(p, prev, un, tag) \
	{ p, prev, un, tag, "switch_ns_" tag, "root_fast_switches_" tag, "root_slow_switches_" tag, \
	  "shadow_pages_created_" tag, "unsync_syncs_" tag }

static const struct cs_conf cs_confs[] = {
	CS_CONF(1, CS_PREV_ROOTS, false, "p1"),
	CS_CONF(2, CS_PREV_ROOTS, false, "p2"),
	CS_CONF(3, CS_PREV_ROOTS, false, "p3"),
	CS_CONF(4, CS_PREV_ROOTS, false, "p4"),
	CS_CONF(5, CS_PREV_ROOTS, false, "p5"),
	CS_CONF(6, CS_PREV_ROOTS, false, "p6"),
	CS_CONF(2, 0, false, "noprev_p2"),
	CS_CONF(2, CS_PREV_ROOTS, true, "unsync_p2"),
	CS_CONF(2, 0, true, "unsync_noprev_p2"),
};

#define CS_NR_CONFS (sizeof(cs_confs) / sizeof(cs_confs[0]))
/* indices into cs_confs for the ratios */
#define CS_P2		1
#define CS_P4		3
#define CS_P5		4
#define CS_NOPREV_P2	6
#define CS_UNSYNC_P2	7
#define CS_UNSYNC_NOPREV_P2	8

struct cs_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	uint8_t *ram;
	struct guest_pt *pt[CS_MAX_SPACES];
	uint64_t cr3[CS_MAX_SPACES];	/* root | PCID */
	unsigned int spaces;
	bool unsync;
	uint64_t kpte_gpa[CS_MAX_SPACES][CS_KTABLES];	/* first PTE of each kernel table */
	uint64_t kpte[CS_MAX_SPACES][2];	/* the two values the guest alternates */
	uint64_t step;			/* next step of the round robin */
	uint64_t seed;
	/* counts over the timed runs only: what a switch cost the MMU */
	uint64_t fast, slow, created, syncs;
};

/* The data page address space a maps at page i of CS_GVA. */
static uint64_t cs_data_gpa(unsigned int a, unsigned int i)
{
	return CS_DATA_GPA + ((uint64_t)a * CS_PAGES + i) * CLI_PAGE_SIZE;
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
	c->unsync = conf->unsync;
	c->seed = seed;
	if (shadow_vm_create(conf->prev_roots, CS_SLOT_BYTES, &c->vm, &c->vcpu, &c->ram, err, err_len))
		return -1;
	for (unsigned int a = 0; a < c->spaces; a++) {
		for (unsigned int i = 0; i < CS_PAGES; i++) {
			uint64_t t = cli_token_nz(cs_data_gpa(a, i), seed);

			memcpy(c->ram + cs_data_gpa(a, i), &t, sizeof(t));
		}
		/*
		 * Every table is written before the vCPU runs and never again,
		 * so host-side stores are fine: nothing is shadowed yet.
		 */
		r = guest_pt_create(c->vm, GUEST_MODE_4LEVEL, CS_POOL_GPA + a * CS_POOL_BYTES, CS_POOL_BYTES,
				    &c->pt[a]);
		if (!r)
			r = guest_map(c->pt[a], CS_GVA, cs_data_gpa(a, 0), CS_PAGES * CLI_PAGE_SIZE, CLI_PAGE_SIZE,
				      GUEST_NX | GUEST_A);
		/*
		 * The kernel tables, each mapping the scratch range at its own
		 * 2 MiB of gva, and the pool at its direct-map gva, through which
		 * the guest stores into them.
		 */
		for (unsigned int k = 0; !r && c->unsync && k < CS_KTABLES; k++) {
			uint64_t gva = CS_KGVA + (uint64_t)k * CLI_SIZE_2M, pte;

			r = guest_map(c->pt[a], gva, CS_SCRATCH_GPA, CLI_SIZE_2M, CLI_PAGE_SIZE,
				      GUEST_W | GUEST_NX | GUEST_A | GUEST_D);
			if (!r)
				r = guest_get_entry(c->pt[a], gva, 1, &pte, &c->kpte_gpa[a][k]);
			if (!r && !k) {
				/* page 0 of the scratch range, or page 1 */
				c->kpte[a][0] = pte;
				c->kpte[a][1] = pte + CLI_PAGE_SIZE;
			}
		}
		if (!r && c->unsync)
			r = guest_map(c->pt[a], CS_DIRECT + CS_POOL_GPA + a * CS_POOL_BYTES, CS_POOL_GPA + a * CS_POOL_BYTES,
				      CS_POOL_BYTES, CLI_PAGE_SIZE, GUEST_W | GUEST_NX | GUEST_A | GUEST_D);
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
 * The kernel's page-table store of one step: the first PTE of one of the
 * space's kernel tables, alternating between two scratch frames.  The guest
 * never uses that gva before it stores again, so no INVLPG is owed.
 */
static bool cs_kernel_store(struct cs_vm *c, unsigned int a, char *err, size_t err_len)
{
	unsigned int k = (unsigned int)(c->step / c->spaces % CS_KTABLES);
	uint64_t val = c->kpte[a][c->step / c->spaces / CS_KTABLES & 1];
	struct vmmu_exit exit;
	int r = vmmu_vcpu_access(c->vcpu, CS_DIRECT + c->kpte_gpa[a][k], &val, sizeof(val), VMMU_ACCESS_WRITE, &exit);

	if (r)
		return cli_access_failed(err, err_len, "kernel page-table store", CS_DIRECT + c->kpte_gpa[a][k], r,
					 &exit);
	return true;
}

/*
 * Shadows every kernel table of every space (one read through each while
 * its space is current), so that the stores land on shadowed tables.
 */
static bool cs_shadow_kernel_tables(struct cs_vm *c, char *err, size_t err_len)
{
	struct vmmu_exit exit;

	for (unsigned int a = 0; c->unsync && a < c->spaces; a++) {
		int r = vmmu_vcpu_write_cr3(c->vcpu, c->cr3[a] | VMMU_CR3_PCID_NOFLUSH);

		for (unsigned int k = 0; !r && k < CS_KTABLES; k++) {
			uint64_t gva = CS_KGVA + (uint64_t)k * CLI_SIZE_2M + CLI_PAGE_SIZE, v;

			r = vmmu_vcpu_access(c->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);
			if (r)
				return cli_access_failed(err, err_len, "kernel table read", gva, r, &exit);
		}
		if (r) {
			cli_set_error(err, err_len, "MOV CR3 to address space %u: %s", a, vmmu_strerror(r));
			return false;
		}
	}
	return true;
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
		uint64_t gva = CS_GVA + i * CLI_PAGE_SIZE, v = 0, want;
		int r = vmmu_vcpu_write_cr3(c->vcpu, c->cr3[a] | VMMU_CR3_PCID_NOFLUSH);

		if (r) {
			cli_set_error(err, err_len, "MOV CR3 to address space %u: %s", a, vmmu_strerror(r));
			return false;
		}
		r = vmmu_vcpu_access(c->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);
		if (r)
			return cli_access_failed(err, err_len, "read after CR3 switch", gva, r, &exit);
		want = cli_token_nz(cs_data_gpa(a, i), c->seed);
		if (v != want) {
			cli_set_error(err, err_len,
				      "address space %u (of %u) page %u read 0x%016" PRIx64 ", want 0x%016" PRIx64
				      ": a translation of another address space was used", a, c->spaces, i, v,
				      want);
			fprintf(stderr, "vmmu: %s\n", err);
			return false;
		}
		if (c->unsync && !cs_kernel_store(c, a, err, err_len))
			return false;
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
	c->syncs += s1.unsync_syncs - s0.unsync_syncs;
	*ns = (double)(t1 - t0) / CS_SWITCHES;
	return true;
}

/*
 * --sweep: P = 1 .. CS_MAX_SPACES address spaces, each with the previous
 * roots cache (CS_PREV_ROOTS) and without it: one curve falls off where P
 * passes the cache, the other pays a slow switch from P = 2 on.
 */
static int bench_cr3switch_sweep(const struct cli_opts *o)
{
	/* "3" is CS_PREV_ROOTS */
	static const char *const metrics[] = { "switch_3_prev_roots_ns", "switch_0_prev_roots_ns",
					       "slow_share_3_prev_roots_ratio", "slow_share_0_prev_roots_ratio" };
	_Static_assert(CS_PREV_ROOTS == 3, "the metrics' names say 3 previous roots");
	static double ns[2 * CS_MAX_SPACES][CLI_MAX_REPS];
	unsigned int reps = cli_reps(o), nr = 2 * CS_MAX_SPACES;
	struct cs_conf confs[2 * CS_MAX_SPACES];
	struct cs_vm c[2 * CS_MAX_SPACES];
	uint64_t seed = o->seed ^ 0xc3c3c3;
	char err[256] = "";
	struct sweep sw;
	struct report r;
	bool ok = false;

	memset(c, 0, sizeof(c));
	memset(confs, 0, sizeof(confs));
	sweep_init(&sw, "cr3switch", "address_spaces", metrics, 4);
	report_init(&r);
	report_str(&r, "benchmark", "cr3switch");
	report_str(&r, "mmu", "shadow");
	report_u64(&r, "reps", reps);
	report_u64(&r, "switches_per_rep", CS_SWITCHES);
	report_u64(&r, "prev_roots", CS_PREV_ROOTS);
	/* k = 2 (P - 1) with the cache, 2 (P - 1) + 1 without */
	for (unsigned int k = 0; k < nr; k++) {
		confs[k].spaces = k / 2 + 1;
		confs[k].prev_roots = k & 1 ? 0 : CS_PREV_ROOTS;
		if (cs_vm_create(&c[k], &confs[k], seed, err, sizeof(err)) ||
		    !cs_run(&c[k], 4ull * confs[k].spaces * CS_PAGES, err, sizeof(err)))
			goto out;
	}
	for (unsigned int rep = 0; rep < reps; rep++)
		for (unsigned int j = 0; j < nr; j++) {
			unsigned int k = (rep + j) % nr;

			if (!cs_timed(&c[k], &ns[k][rep], err, sizeof(err)))
				goto out;
		}
	for (unsigned int k = 0; k < nr; k++)
		if (!env_vm_healthy(c[k].vm, err, sizeof(err)))
			goto out;
	for (unsigned int p = 1; p <= CS_MAX_SPACES; p++) {
		unsigned int row = sweep_row(&sw, p), k = 2 * (p - 1);
		/* the share of switches that dropped the root, over all repetitions
		 * (P = 1 never switches: none dropped) */
		double slow = (double)c[k].slow / (double)(c[k].fast + c[k].slow ? c[k].fast + c[k].slow : 1);
		double slow_noprev = (double)c[k + 1].slow /
				     (double)(c[k + 1].fast + c[k + 1].slow ? c[k + 1].fast + c[k + 1].slow : 1);

		sweep_set(&sw, row, 0, ns[k], reps);
		sweep_set(&sw, row, 1, ns[k + 1], reps);
		sweep_set(&sw, row, 2, &slow, 1);
		sweep_set(&sw, row, 3, &slow_noprev, 1);
	}
	ok = !sweep_write_csv(&sw, o, err, sizeof(err));
out:
	for (unsigned int k = 0; k < nr; k++)
		cs_vm_destroy(&c[k]);
	sweep_report(&sw, &r);
	return report_finish(&r, o, ok, err);
}

static int bench_cr3switch_run(const struct cli_opts *o)
{
	static double ns[CS_NR_CONFS][CLI_MAX_REPS];
	unsigned int reps = cli_reps(o);
	struct cs_vm c[CS_NR_CONFS];
	double gain;
	uint64_t seed = o->seed ^ 0xc3c3c3;
	char err[256] = "";
	struct report r;
	bool ok = false;

	if (o->sweep)
		return bench_cr3switch_sweep(o);
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
		if (!cs_shadow_kernel_tables(&c[k], err, sizeof(err)) ||
		    !cs_run(&c[k], 4ull * cs_confs[k].spaces * CS_PAGES, err, sizeof(err)))
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
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		if (!env_vm_healthy(c[k].vm, err, sizeof(err)))
			goto out;
	/* The comparison is only one if each side took its path. */
	if (!c[CS_UNSYNC_NOPREV_P2].syncs || !c[CS_UNSYNC_P2].fast || c[CS_UNSYNC_P2].slow) {
		cli_set_error(err, sizeof(err),
			      "unsync configurations: %" PRIu64 " resyncs without the cache, %" PRIu64 " fast and %" PRIu64
			      " slow switches with it", c[CS_UNSYNC_NOPREV_P2].syncs, c[CS_UNSYNC_P2].fast,
			      c[CS_UNSYNC_P2].slow);
		goto out;
	}
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		report_spread(&r, cs_confs[k].ns_key, 1, ns[k], reps);
	for (unsigned int k = 0; k < CS_NR_CONFS; k++) {
		report_u64(&r, cs_confs[k].fast_key, c[k].fast);
		report_u64(&r, cs_confs[k].slow_key, c[k].slow);
	}
	/* a slow switch that rebuilds the tree shows here, one that finds it hashed does not */
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		report_u64(&r, cs_confs[k].created_key, c[k].created);
	/* what the guest's unsync tables cost a switch: pages resynced */
	for (unsigned int k = CS_UNSYNC_P2; k < CS_NR_CONFS; k++) {
		report_u64(&r, cs_confs[k].syncs_key, c[k].syncs);
	}
	report_f(&r, "unsync_syncs_per_switch_p2", 2, (double)c[CS_UNSYNC_P2].syncs / ((double)reps * CS_SWITCHES));
	report_f(&r, "unsync_syncs_per_switch_noprev_p2", 2,
		 (double)c[CS_UNSYNC_NOPREV_P2].syncs / ((double)reps * CS_SWITCHES));
	report_u64(&r, "kernel_tables_per_space", CS_KTABLES);
	/* per repetition, from passes interleaved in it */
	gain = report_ratio(&r, "unsync_cache_gain", 2, ns[CS_UNSYNC_NOPREV_P2], ns[CS_UNSYNC_P2], reps);
	report_f(&r, "target_unsync_cache_gain", 1, CS_TARGET_UNSYNC_GAIN);
	/* written so that a NaN ratio counts as a miss */
	report_bool(&r, "meets_unsync_cache_gain", gain >= CS_TARGET_UNSYNC_GAIN);
	report_ratio(&r, "noprev_over_p2", 2, ns[CS_NOPREV_P2], ns[CS_P2], reps);
	report_ratio(&r, "cliff_p5_over_p4", 2, ns[CS_P5], ns[CS_P4], reps);
	ok = true;
out:
	for (unsigned int k = 0; k < CS_NR_CONFS; k++)
		cs_vm_destroy(&c[k]);
	return report_finish(&r, o, ok, err);
}

const struct tool_entry bench_cr3switch = {
	.name = "cr3switch",
	.desc = "shadow paging: ns per PCID CR3 switch + read over 1..6 address spaces",
	.run = bench_cr3switch_run,
	.sweep = "address spaces",
};
