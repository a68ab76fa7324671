// SPDX-License-Identifier: MIT
/*
 * `vmmu bench ptwrite`: what a guest store to its own page tables costs.
 * It runs a 4-level guest on a VM with cfg.mmu = VMMU_MMU_SHADOW and
 * checks what every timed access returns.
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
#include "guest.h"
#include "registry.h"

#define PW_ADDR_MASK		UINT64_C(0x000ffffffffff000)	/* frame bits of a 4-level entry */
#define PW_PREV_ROOTS		3u	/* the library's default, as in bench cr3switch */

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
	return (y ? PW_Y_GPA : PW_X_GPA) + (uint64_t)i * CLI_PAGE_SIZE;
}

static uint64_t pw_pte_y(const struct pw_vm *p, unsigned int i)
{
	return (p->pte_x[i] & ~PW_ADDR_MASK) | pw_page_gpa(true, i);
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
	uint64_t v = 0, want = cli_token_nz(gpa, p->seed);
	int r = vmmu_vcpu_access(p->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);

	if (r)
		return cli_access_failed(err, err_len, what, gva, r, &exit);
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
		return cli_access_failed(err, err_len, "page-table store", PW_GVA_DIRECT + entry_gpa, r, &exit);
	return true;
}

/* Every page of E1, E2 and U must be mapped as the entries now say. */
static bool pw_check_all(struct pw_vm *p, const char *what, char *err, size_t err_len)
{
	for (unsigned int i = 0; i < PW_PAGES; i++)
		if (!pw_check(p, PW_GVA_E1 + i * CLI_PAGE_SIZE, pw_page_gpa(p->pde_is_y, i), what, err, err_len) ||
		    !pw_check(p, PW_GVA_E2 + i * CLI_PAGE_SIZE, pw_page_gpa(true, i), what, err, err_len) ||
		    !pw_check(p, PW_GVA_U + i * CLI_PAGE_SIZE, pw_page_gpa(p->pte_is_y[i], i), what, err, err_len))
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
	if (shadow_vm_create(PW_PREV_ROOTS, PW_SLOT_BYTES, &p->vm, &p->vcpu, &p->ram, err, err_len))
		return -1;
	for (unsigned int i = 0; i < PW_PAGES; i++) {
		for (int y = 0; y < 2; y++) {
			uint64_t t = cli_token_nz(pw_page_gpa(y, i), seed);

			memcpy(p->ram + pw_page_gpa(y, i), &t, sizeof(t));
		}
	}
	/* Built host-side before the vCPU runs: nothing is shadowed yet. */
	r = guest_pt_create(p->vm, GUEST_MODE_4LEVEL, PW_POOL_GPA, PW_POOL_BYTES, &p->pt);
	if (!r)
		r = guest_map(p->pt, PW_GVA_E1, PW_X_GPA, PW_PAGES * CLI_PAGE_SIZE, CLI_PAGE_SIZE, PW_LEAF_FLAGS);
	if (!r)
		r = guest_map(p->pt, PW_GVA_E2, PW_Y_GPA, PW_PAGES * CLI_PAGE_SIZE, CLI_PAGE_SIZE, PW_LEAF_FLAGS);
	if (!r)
		r = guest_map(p->pt, PW_GVA_U, PW_X_GPA, PW_PAGES * CLI_PAGE_SIZE, CLI_PAGE_SIZE, PW_LEAF_FLAGS);
	if (!r)
		r = guest_map(p->pt, PW_GVA_DIRECT + PW_POOL_GPA, PW_POOL_GPA, PW_POOL_BYTES, CLI_PAGE_SIZE,
			      PW_LEAF_FLAGS);
	if (!r)
		r = guest_get_entry(p->pt, PW_GVA_E1, 2, &p->pde_x, &p->pde_gpa);
	if (!r)
		r = guest_get_entry(p->pt, PW_GVA_E2, 2, &p->pde_y, NULL);
	for (unsigned int i = 0; !r && i < PW_PAGES; i++) {
		uint64_t gpa;

		r = guest_get_entry(p->pt, PW_GVA_U + i * CLI_PAGE_SIZE, 1, &p->pte_x[i], &gpa);
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
	    (v & PW_ADDR_MASK) != PW_POOL_GPA) {
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
	for (uint64_t off = 0; off < PW_POOL_BYTES; off += CLI_PAGE_SIZE) {
		struct vmmu_exit exit;
		uint64_t gva = PW_GVA_DIRECT + PW_POOL_GPA + off;

		r = vmmu_vcpu_access(p->vcpu, gva, &v, sizeof(v), VMMU_ACCESS_READ, &exit);
		if (r) {
			cli_access_failed(err, err_len, "warm-up read of the direct map", gva, r, &exit);
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
		uint64_t gva = PW_GVA_E1 + i * CLI_PAGE_SIZE, t0, t1;
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
		if (!pw_check(p, PW_GVA_U + i * CLI_PAGE_SIZE, pw_page_gpa(p->pte_is_y[i], i), "read after MOV CR3", err,
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
			uint64_t gva = PW_GVA_U + i * CLI_PAGE_SIZE;

			vmmu_vcpu_invlpg(p->vcpu, gva);
			if (!pw_check(p, gva, pw_page_gpa(p->pte_is_y[i], i), "read after a batch of PTE stores",
				      err, err_len))
				return false;
		}

		if (!pw_resync(p, err, err_len))
			return false;
		t0 = cli_now_ns();
		for (unsigned int i = 0; i < PW_PAGES; i++) {
			uint64_t gva = PW_GVA_U + i * CLI_PAGE_SIZE;
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

static int bench_ptwrite_run(const struct cli_opts *o)
{
	static double em[CLI_MAX_REPS], em_cycle[CLI_MAX_REPS];
	static double un[CLI_MAX_REPS], un_first[CLI_MAX_REPS], un_cycle[CLI_MAX_REPS];
	uint64_t em_emul = 0, em_ptew = 0, em_pf = 0, un_emul = 0, un_syncs = 0, un_ptew = 0, un_pf = 0;
	unsigned int reps = cli_reps(o);
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
	    !env_vm_healthy(p.vm, err, sizeof(err))) {
		if (!err[0])
			cli_set_error(err, sizeof(err), "final MOV CR3 failed");
		goto out;
	}
	vmmu_vcpu_get_stats(p.vcpu, &vs);
	vmmu_vm_get_stats(p.vm, &ms);
	report_spread(&r, "ptwrite_emulated_ns", 1, em, reps);
	report_spread(&r, "ptwrite_emulated_cycle_ns", 1, em_cycle, reps);
	report_spread(&r, "ptwrite_unsync_ns", 1, un, reps);
	report_spread(&r, "ptwrite_unsync_first_ns", 1, un_first, reps);
	report_spread(&r, "ptwrite_unsync_cycle_ns", 1, un_cycle, reps);
	report_ratio(&r, "emulated_over_unsync", 2, em, un, reps);
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

const struct tool_entry bench_ptwrite = {
	.name = "ptwrite",
	.desc = "shadow paging: ns per guest page-table store, emulated vs unsync",
	.run = bench_ptwrite_run,
};
