/* SPDX-License-Identifier: MIT */
/*
 * `vmmu bench nested`: what seed 003's guest_mmu buys.  Every vCPU is an L1
 * running an L2 (l1.c) whose working set is mapped; a round trip is a VM
 * exit to L1, which reads its own memory as an exit handler would, a VM
 * entry back, and L2 touching its working set (BN_WORKING_SET pages, each
 * read checked against its token).  Two VMs, timed in the same repetitions
 * in alternating order:
 *  - guest_mmu: L1's TDP root and guest_mmu's root both survive the switch
 *    (and with a VPID, L2's translations do too);
 *  - single_mmu: VMMU_VM_NESTED_ONE_MMU, one MMU reset at every switch (KVM
 *    before seed 003): both roots dropped and reloaded, the TLB flushed.
 * For 1 vCPU and for --vcpus (default 2) vCPUs in parallel.  walk_3d_ns is
 * a full L2 TLB miss: L2 reads its pages in a random order over more than
 * the TLB and paging-structure caches hold, each read a walk of L2's four
 * levels with every entry, and the final gpa, translated through guest_mmu's
 * shadow EPT/NPT; host_access_ns is the host's dependent load over a
 * buffer of the same size in the same order (bench walk's floor).  Figures
 * are medians (with min and max) over --reps repetitions.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "env.h"
#include "registry.h"

#define BN_SHARE (UINT64_C(64) << 20)	/* guest RAM per vCPU */
#define BN_WORKING_SET 64u
#define BN_TRIPS 1000u
#define BN_TARGET_SPEEDUP 5.0
#define BN_MAX_VCPUS BARE_VM_MAX_VCPUS

struct bn_vcpu {
	struct l1_guest g;
	vmmu_vm *vm;
	unsigned int idx;
	uint64_t seed;
	uint32_t *order;	/* walk_3d: a random permutation of L2's pages */
	uint64_t bad;
};

struct bn_vm {
	struct vm_env env;
	struct crew crew;
	bool crew_up;
	struct bn_vcpu v[BN_MAX_VCPUS];
	unsigned int n;
};

static uint64_t bn_token(const struct bn_vcpu *s, uint64_t p)
{
	return cli_token_nz(((uint64_t)s->idx << 40) | p, s->seed);
}

static bool bn_ok(struct crew_worker *w, int rc, const char *call)
{
	if (rc) {
		w->err = rc;
		w->err_call = call;
	}
	return !rc;
}

static bool bn_read(struct crew_worker *w, struct bn_vcpu *s, uint64_t p)
{
	struct vmmu_exit x;
	uint64_t v = 0;
	int rc = vmmu_vcpu_access(w->vcpu, l2_gva(&s->g, p), &v, 8, VMMU_ACCESS_READ, &x);

	if (rc) {
		crew_worker_fail(w, rc, l2_gva(&s->g, p), false, &x);
		return false;
	}
	if (v != bn_token(s, p)) {
		crew_worker_mismatch(w, l2_gva(&s->g, p), bn_token(s, p), v);
		return false;
	}
	return true;
}

/* Untimed: L1 builds, L2 builds and writes every page, then leaves. */
static void bn_setup(struct crew_worker *w)
{
	struct bn_vcpu *s = w->ctx;
	const char *what = "";

	if (!bn_ok(w, l1_setup(&s->g, s->vm, w->vcpu, s->g.npt, false, w->begin, w->end - w->begin,
			       (uint16_t)(s->idx + 1), &what), what) ||
	    !bn_ok(w, l1_enter(&s->g), "vmmu_vcpu_enter_guest_mode") || !bn_ok(w, l2_build(&s->g, &what), what))
		return;
	for (uint64_t p = 0; p < s->g.pages; p++) {
		uint64_t v = bn_token(s, p);
		struct vmmu_exit x;
		int rc = vmmu_vcpu_access(w->vcpu, l2_gva(&s->g, p), &v, 8, VMMU_ACCESS_WRITE, &x);

		if (rc) {
			crew_worker_fail(w, rc, l2_gva(&s->g, p), true, &x);
			return;
		}
	}
	for (uint64_t p = 0; p < BN_WORKING_SET && p < s->g.pages; p++)
		if (!bn_read(w, s, p))
			return;
}

static void bn_round_trips(struct crew_worker *w)
{
	struct bn_vcpu *s = w->ctx;

	for (unsigned int i = 0; i < BN_TRIPS; i++) {
		struct vmmu_exit x;
		uint64_t v;
		int rc;

		if (!bn_ok(w, l1_leave(&s->g), "vmmu_vcpu_leave_guest_mode"))
			return;
		rc = vmmu_vcpu_access(w->vcpu, s->g.base + 8 * (i % 512), &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS,
				      &x);
		if (rc) {
			crew_worker_fail(w, rc, s->g.base, false, &x);
			return;
		}
		if (!bn_ok(w, l1_enter(&s->g), "vmmu_vcpu_enter_guest_mode"))
			return;
		for (uint64_t p = 0; p < BN_WORKING_SET && p < s->g.pages; p++)
			if (!bn_read(w, s, p))
				return;
	}
}

static void bn_walk(struct crew_worker *w)
{
	struct bn_vcpu *s = w->ctx;

	for (uint64_t i = 0; i < s->g.pages; i++)
		if (!bn_read(w, s, s->order[i]))
			return;
}

static void bn_leave(struct crew_worker *w)
{
	struct bn_vcpu *s = w->ctx;

	if (vmmu_vcpu_in_guest_mode(w->vcpu))
		bn_ok(w, l1_leave(&s->g), "vmmu_vcpu_leave_guest_mode");
}

static void bn_vm_destroy(struct bn_vm *b)
{
	if (b->crew_up) {
		struct phase_result res;

		crew_run_call(&b->crew, bn_leave, "back to L1", &res);
		crew_stop(&b->crew);
	}
	for (unsigned int i = 0; i < b->n; i++) {
		l1_destroy(&b->v[i].g);
		free(b->v[i].order);
	}
	env_destroy(&b->env);
	memset(b, 0, sizeof(*b));
}

static int bn_vm_create(struct bn_vm *b, const struct cli_opts *o, unsigned int n, bool one_mmu, char *err,
			size_t len)
{
	struct cli_opts eo = *o;
	struct phase_result res;
	int rc;

	memset(b, 0, sizeof(*b));
	b->n = n;
	eo.vm_flags |= one_mmu ? VMMU_VM_NESTED_ONE_MMU : 0;
	rc = env_create(&b->env, &eo, n, n * BN_SHARE);
	if (rc) {
		cli_set_error(err, len, "%s: %s", b->env.failed_call, vmmu_strerror(rc));
		return -1;
	}
	if (crew_start(&b->crew, n, b->env.vcpus, NULL, n * BN_SHARE, o->seed)) {
		cli_set_error(err, len, "cannot start the vCPU threads");
		return -1;
	}
	b->crew_up = true;
	b->crew.addr_name = "gva";
	for (unsigned int i = 0; i < n; i++) {
		b->v[i].vm = b->env.vm;
		b->v[i].idx = i;
		b->v[i].seed = o->seed ^ 0x2e57;
		b->v[i].g.npt = o->tdp_format == VMMU_TDP_NPT;
		b->crew.w[i].ctx = &b->v[i];
		b->crew.w[i].begin = i * BN_SHARE;
		b->crew.w[i].end = (i + 1) * BN_SHARE;
	}
	if (crew_run_call(&b->crew, bn_setup, "setup", &res)) {
		cli_set_error(err, len, "%s", res.error);
		return -1;
	}
	return 0;
}

/* One timed phase; ns per unit of one vCPU's work (the vCPUs run in parallel). */
static bool bn_time(struct bn_vm *b, void (*call)(struct crew_worker *), const char *name, uint64_t units,
		    double *out, char *err, size_t len)
{
	struct phase_result res;

	if (crew_run_call(&b->crew, call, name, &res)) {
		cli_set_error(err, len, "%s", res.error);
		return false;
	}
	*out = (double)res.ns / (double)units;
	return true;
}

static volatile uint64_t bn_zero_mask;

static int bench_nested_run(const struct cli_opts *o)
{
	unsigned int reps = cli_reps(o), nmax = o->vcpus_set ? o->vcpus : 2, counts[2] = { 1, nmax };
	double rt[2][2][CLI_MAX_REPS], walk[CLI_MAX_REPS], host[CLI_MAX_REPS];
	struct bn_vm vms[2];
	uint8_t *hbuf = MAP_FAILED;
	struct report r;
	char err[256] = "";
	bool ok = false;
	uint64_t hpages = 0;

	memset(vms, 0, sizeof(vms));
	report_init(&r);
	report_str(&r, "benchmark", "nested");
	report_u64(&r, "reps", reps);
	report_str(&r, "tdp", cli_tdp_name(o->tdp_format));
	report_u64(&r, "working_set_pages", BN_WORKING_SET);
	report_u64(&r, "round_trips_per_rep", BN_TRIPS);
	report_u64(&r, "vcpus", nmax);
	if (o->mmu != VMMU_MMU_TDP)
		return cli_usage_error("--mmu shadow: nested guests need a TDP VM (--mmu tdp)");
	if (nmax < 1 || nmax > BN_MAX_VCPUS)
		return cli_usage_error("--vcpus %u: the nested bench takes 1 to %u", nmax, BN_MAX_VCPUS);

	/* Round trips: [vcpu count][guest_mmu, single], both VMs of a count
	 * alive together, their passes alternating which goes first. */
	for (unsigned int c = 0; c < 2; c++) {
		if (c == 1 && nmax == 1)
			break;
		for (int one = 0; one < 2; one++)
			if (bn_vm_create(&vms[one], o, counts[c], one, err, sizeof(err)))
				goto out;
		for (unsigned int rep = 0; rep < reps; rep++) {
			for (int k = 0; k < 2; k++) {
				int one = (int)((rep + (unsigned int)k) & 1);

				if (!bn_time(&vms[one], bn_round_trips, "round trips", BN_TRIPS, &rt[c][one][rep], err,
					     sizeof(err)))
					goto out;
			}
		}
		for (int one = 0; one < 2; one++) {
			char why[200] = "";

			if (vmmu_audit(vms[one].env.vm, why, sizeof(why)) == VMMU_EIO) {
				cli_set_error(err, sizeof(err), "vmmu_audit: %s", why);
				goto out;
			}
			if (env_check_bugged(&vms[one].env, err, sizeof(err)))
				goto out;
			if (c == 0 && !one) {
				struct vmmu_vcpu_stats st;

				vmmu_vcpu_get_stats(vms[0].env.vcpus[0], &st);
				report_u64(&r, "nested_root_reuses", st.nested_root_reuses);
				report_u64(&r, "nested_entries", st.nested_entries);
			}
		}
		/* The 3D walk, on the 1-vCPU guest_mmu VM. */
		if (c == 0) {
			struct bn_vcpu *s = &vms[0].v[0];
			uint64_t seed = o->seed | 1;

			hpages = s->g.pages;
			s->order = malloc(hpages * sizeof(*s->order));
			hbuf = mmap(NULL, hpages * CLI_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				    -1, 0);
			if (!s->order || hbuf == MAP_FAILED) {
				cli_set_error(err, sizeof(err), "out of memory");
				goto out;
			}
			(void)madvise(hbuf, hpages * CLI_PAGE_SIZE, MADV_NOHUGEPAGE);
			for (uint64_t i = 0; i < hpages; i++) {
				uint64_t t = bn_token(s, i);

				s->order[i] = (uint32_t)i;
				memcpy(hbuf + i * CLI_PAGE_SIZE, &t, 8);
			}
			for (uint64_t i = hpages - 1; i > 0; i--) {
				uint64_t j = cli_xorshift(&seed) % (i + 1);
				uint32_t t = s->order[i];

				s->order[i] = s->order[j];
				s->order[j] = t;
			}
			for (unsigned int rep = 0; rep < reps; rep++) {
				uint64_t mask = bn_zero_mask, carry = 0, bad = 0, t0;

				if (!bn_time(&vms[0], bn_walk, "3D walk", hpages, &walk[rep], err, sizeof(err)))
					goto out;
				t0 = cli_now_ns();
				for (uint64_t i = 0; i < hpages; i++) {
					uint64_t p = s->order[i] + (carry & mask);
					uint64_t v = *(const volatile uint64_t *)(hbuf + p * CLI_PAGE_SIZE);

					bad += v != bn_token(s, p);
					carry = v;
				}
				host[rep] = (double)(cli_now_ns() - t0) / (double)hpages;
				if (bad) {
					cli_set_error(err, sizeof(err), "host buffer corrupted");
					goto out;
				}
			}
		}
		for (int one = 0; one < 2; one++)
			bn_vm_destroy(&vms[one]);
	}

	{
		unsigned int c = nmax > 1 ? 1 : 0;
		double speedup;

		report_spread(&r, "roundtrip_ns_guest_mmu_1vcpu", 1, rt[0][0], reps);
		report_spread(&r, "roundtrip_ns_single_mmu_1vcpu", 1, rt[0][1], reps);
		report_ratio(&r, "speedup_1vcpu", 2, rt[0][1], rt[0][0], reps);
		if (nmax > 1) {
			report_spread(&r, "roundtrip_ns_guest_mmu_nvcpu", 1, rt[1][0], reps);
			report_spread(&r, "roundtrip_ns_single_mmu_nvcpu", 1, rt[1][1], reps);
		}
		/* The headline: the most vCPUs measured (seed 003: 16). */
		report_spread(&r, "roundtrip_ns_guest_mmu", 1, rt[c][0], reps);
		report_spread(&r, "roundtrip_ns_single_mmu", 1, rt[c][1], reps);
		speedup = report_ratio(&r, "speedup", 2, rt[c][1], rt[c][0], reps);
		report_f(&r, "target_speedup", 1, BN_TARGET_SPEEDUP);
		report_bool(&r, "meets_speedup", speedup >= BN_TARGET_SPEEDUP);
		report_spread(&r, "walk_3d_ns", 1, walk, reps);
		report_spread(&r, "host_access_ns", 1, host, reps);
		report_ratio(&r, "walk_3d_overhead", 2, walk, host, reps);
		report_u64(&r, "walk_3d_pages", hpages);
	}
	ok = true;
out:
	for (int one = 0; one < 2; one++)
		if (vms[one].env.vm)
			bn_vm_destroy(&vms[one]);
	if (hbuf != MAP_FAILED)
		munmap(hbuf, hpages * CLI_PAGE_SIZE);
	return report_finish(&r, o, ok, err);
}

const struct tool_entry bench_nested = {
	.name = "nested",
	.desc = "L2 -> L1 -> L2 round trips with guest_mmu vs one MMU reset per switch (seed 003); 3D walk",
	.run = bench_nested_run,
};
