// SPDX-License-Identifier: MIT
/*
 * `vmmu bench demand`: ns per page of first touch and retouch, against the
 * same passes over plain host memory and over prepopulated host pages, on
 * memory vmmu allocates and on memory the tool maps as a VMM would
 * (embedder_*), with fault-around and without (no_fault_around_*), all
 * interleaved in every repetition, with fault_ns from a pass of its own
 * (fault_pass()); and a timed breakdown of a first touch (breakdown_*,
 * VMMU_VM_TIMING) for each kind of memory, and of one over prepopulated host
 * pages (prepopulated_breakdown_*), where the host fault-in finds every
 * page present and the MMU's own parts stand out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "env.h"
#include "registry.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

#define TARGET_FIRST_TOUCH_OVERHEAD	1.25
#define TARGET_RETOUCH_OVERHEAD		2.0
#define TARGET_FAULT_NS			150.0

/* ------------------------------------------------------------------------ */
/* Host baseline memory                                                      */

struct host_mem {
	void *raw;		/* what mmap returned, for munmap */
	size_t raw_len;
	uint8_t *base;		/* the region the workers use */
	uint64_t size;
};

/*
 * Made like vmmu's own backing, so that the baseline pays the same host
 * page faults: 4K pages without THP, THP on a 2M-aligned region for huge
 * host pages on anonymous memory, hugetlbfs pages otherwise.
 */
static int host_mem_create(struct host_mem *m, const struct cli_opts *o, uint64_t size,
			   char *err, size_t err_len)
{
	int prot = PROT_READ | PROT_WRITE;
	uintptr_t p;

	memset(m, 0, sizeof(*m));
	m->size = size;
	if (o->backing == VMMU_BACKING_HUGETLB) {
		int shift = o->host_page == CLI_SIZE_1G ? 30 : 21;

		/* no MAP_NORESERVE: an empty huge page pool must fail here, not SIGBUS later */
		m->raw_len = size;
		m->raw = mmap(NULL, m->raw_len, prot,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (shift << MAP_HUGE_SHIFT),
			      -1, 0);
		if (m->raw == MAP_FAILED)
			goto fail;
		m->base = m->raw;
		return 0;
	}
	if (o->host_page == CLI_PAGE_SIZE) {
		m->raw_len = size;
		m->raw = mmap(NULL, m->raw_len, prot,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m->raw == MAP_FAILED)
			goto fail;
		m->base = m->raw;
		/* hosts with THP off reject the advice; 4K pages are what we want anyway */
		madvise(m->base, size, MADV_NOHUGEPAGE);
		return 0;
	}
	m->raw_len = size + CLI_SIZE_2M;
	m->raw = mmap(NULL, m->raw_len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->raw == MAP_FAILED)
		goto fail;
	p = ((uintptr_t)m->raw + CLI_SIZE_2M - 1) & ~(uintptr_t)(CLI_SIZE_2M - 1);
	m->base = (uint8_t *)p;
	madvise(m->base, size, MADV_HUGEPAGE);
	return 0;

fail:
	cli_set_error(err, err_len, "host baseline: mmap of %" PRIu64 " bytes (%s, %s): %s", size,
		      cli_backing_name(o->backing), cli_host_page_name(o->host_page),
		      strerror(errno));
	fprintf(stderr, "vmmu: %s\n", err);
	m->raw = NULL;
	return -1;
}

static void host_mem_destroy(struct host_mem *m)
{
	if (m->raw)
		munmap(m->raw, m->raw_len);
	memset(m, 0, sizeof(*m));
}

static uint64_t host_mem_verify(const struct host_mem *m, uint64_t seed)
{
	uint64_t off, bad = 0;

	for (off = 0; off < m->size; off += CLI_PAGE_SIZE) {
		uint64_t want = cli_token(off, seed);
		uint64_t got = *(volatile uint64_t *)(m->base + off);

		if (got != want && !bad++)
			fprintf(stderr,
				"vmmu: host baseline: offset 0x%" PRIx64 " holds 0x%016" PRIx64
				", expected 0x%016" PRIx64 "\n", off, got, want);
	}
	return bad;
}

static int host_pass(const struct cli_opts *o, unsigned nr_threads, uint64_t mem_bytes,
		     struct pass_result *pr, char *err, size_t err_len)
{
	struct phase_result res;
	struct host_mem m;
	struct crew crew;
	int failed = 0;

	memset(pr, 0, sizeof(*pr));
	if (host_mem_create(&m, o, mem_bytes, err, err_len))
		return -1;
	if (crew_start(&crew, nr_threads, NULL, m.base, mem_bytes, o->seed)) {
		cli_set_error(err, err_len, "cannot start the host baseline threads");
		host_mem_destroy(&m);
		return -1;
	}
	crew_run(&crew, CREW_OP_HOST_WRITE, "host_first_touch", &res);
	pr->pages = res.pages;
	pr->first_touch_ns = res.ns;
	pr->first_touch_ns_pp = res.pages ? (double)res.ns / res.pages : 0.0;
	if (crew_run(&crew, CREW_OP_HOST_RETOUCH, "host_retouch", &res)) {
		cli_set_error(err, err_len, "%s", res.error);
		failed = 1;
	}
	pr->retouch_ns_pp = res.pages ? (double)res.ns / res.pages : 0.0;
	crew_stop(&crew);
	if (!failed && host_mem_verify(&m, o->seed)) {
		cli_set_error(err, err_len, "host baseline: memory lost the written data");
		failed = 1;
	}
	host_mem_destroy(&m);
	return failed ? -1 : 0;
}

/*
 * fault_ns: each vCPU's thread first-touches memory the host populated
 * beforehand, in runs of FAULT_CHUNK_PAGES pages taken alternately through
 * vmmu_vcpu_access() and straight through the host pointer, and times the
 * two sides apart.  Both reach pages in the same state, on the same CPU, in
 * the same stretch of time, so what the vmmu side costs beyond the host
 * side is the MMU's fault and access paths and nothing of the host's: on
 * some hosts a thread's first access to a page another CPU wrote costs
 * ~100 ns more than its later ones, which no retouch baseline pays.  Runs,
 * not single pages, so that fault-around sees the sequential touch it is
 * made for (one extra fault per run).
 */
#define FAULT_CHUNK_PAGES 256

struct fault_sides {
	uint64_t ns[2], pages[2];	/* [0] through vmmu, [1] through the host pointer */
};

static void fault_worker(struct crew_worker *w)
{
	const uint64_t chunk_bytes = FAULT_CHUNK_PAGES * CLI_PAGE_SIZE;
	struct fault_sides *fs = w->ctx;
	uint8_t *base = w->crew->host_base;
	uint64_t seed = w->crew->seed;
	struct vmmu_exit exit;
	unsigned side = 0;

	memset(fs, 0, sizeof(*fs));
	for (uint64_t c = w->begin; c < w->end; c += chunk_bytes, side ^= 1) {
		uint64_t end = c + chunk_bytes < w->end ? c + chunk_bytes : w->end;
		uint64_t t0 = cli_now_ns();

		if (side == 0) {
			for (uint64_t gpa = c; gpa < end; gpa += CLI_PAGE_SIZE) {
				uint64_t val = cli_token(gpa, seed);
				int rc = vmmu_vcpu_access(w->vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_WRITE, &exit);

				if (rc) {
					crew_worker_fail(w, rc, gpa, true, &exit);
					return;
				}
			}
		} else {
			for (uint64_t gpa = c; gpa < end; gpa += CLI_PAGE_SIZE)
				*(volatile uint64_t *)(base + gpa) = cli_token(gpa, seed);
		}
		fs->ns[side] += cli_now_ns() - t0;
		fs->pages[side] += (end - c) / CLI_PAGE_SIZE;
	}
}

/* ns per page of the two sides of fault_worker(), over all the vCPUs. */
static int fault_pass(const struct cli_opts *o, unsigned nr_vcpus, uint64_t mem_bytes, double *vmmu_ns_pp,
		      double *host_ns_pp, char *err, size_t err_len)
{
	struct fault_sides *fs = NULL;
	struct phase_result res;
	uint64_t ns[2] = { 0, 0 }, pages[2] = { 0, 0 }, bad = 0;
	struct vm_env env;
	struct crew crew;
	void *hva = NULL;
	int rc, failed = 0;

	rc = env_create(&env, o, nr_vcpus, mem_bytes);
	if (rc) {
		cli_set_error(err, err_len, "%s: %s", env.failed_call, vmmu_strerror(rc));
		return -1;
	}
	fs = calloc(env.nr_vcpus, sizeof(*fs));
	if (!fs || env_prepopulate(&env, o->seed) || vmmu_memslot_hva(env.vm, 0, &hva)) {
		cli_set_error(err, err_len, fs ? "vmmu_memslot_hva failed" : "out of memory");
		failed = 1;
		goto out;
	}
	if (crew_start(&crew, env.nr_vcpus, env.vcpus, hva, mem_bytes, o->seed)) {
		cli_set_error(err, err_len, "cannot start the vCPU threads");
		failed = 1;
		goto out;
	}
	for (unsigned i = 0; i < env.nr_vcpus; i++)
		crew.w[i].ctx = &fs[i];
	if (crew_run_call(&crew, fault_worker, "fault", &res)) {
		cli_set_error(err, err_len, "%s", res.error);
		failed = 1;
	}
	crew_stop(&crew);
	for (unsigned i = 0; i < env.nr_vcpus; i++)
		for (unsigned k = 0; k < 2; k++) {
			ns[k] += fs[i].ns[k];
			pages[k] += fs[i].pages[k];
		}
	*vmmu_ns_pp = pages[0] ? (double)ns[0] / pages[0] : 0.0;
	*host_ns_pp = pages[1] ? (double)ns[1] / pages[1] : 0.0;
	/* both sides wrote the token: a write the vmmu side lost shows here */
	if (!failed && !env_verify_result(env_verify_tokens(&env, o->seed, &bad), bad, err, err_len))
		failed = 1;
out:
	if (env_check_bugged(&env, err, err_len))
		failed = 1;
	free(fs);
	env_destroy(&env);
	return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Benchmark "demand"                                                        */

enum demand_variant {
	DV_OWNED,	/* vmmu allocates the slot's memory */
	DV_EMBEDDER,	/* the tool maps it, as a VMM would (host fault-in by madvise) */
	DV_HOST,
	DV_PREPOP,
	DV_FAULT,	/* fault_pass() */
	DV_OWNED_NOFA,	/* the two vmmu ones again with VMMU_VM_NO_FAULT_AROUND */
	DV_EMBEDDER_NOFA,
	DV_COUNT,
};

enum demand_series {
	DS_FT, DS_RT,		/* owned: first touch, retouch (ns/page) */
	DS_EFT, DS_ERT,		/* embedder memory */
	DS_HFT, DS_HRT,		/* plain host memory */
	DS_PFT, DS_PRT,		/* owned memory the host populated beforehand */
	DS_FAULT_V, DS_FAULT_H,	/* fault_pass(): through vmmu, through the host */
	DS_FAULT, DS_FAULT_RT,
	DS_NFT, DS_NEFT,	/* first touch without fault-around: owned, embedder */
	DS_COUNT,
};

/*
 * The breakdown: one more pass with VMMU_VM_TIMING, where each part of a
 * first touch is timed as it happens (the clock reads make this pass
 * slower; the parts are what to compare, not its total).
 */
static int demand_breakdown(struct report *r, const struct cli_opts *o, unsigned nr_vcpus, uint64_t mem,
			    bool prepopulate, const char *prefix, char *err, size_t err_len)
{
	struct cli_opts eo = *o;
	const struct vmmu_vcpu_stats *st;
	struct pass_result pr;
	char key[REPORT_KEY_LEN];
	double pp;

	eo.vm_flags |= VMMU_VM_TIMING;
	if (env_demand_pass(&eo, nr_vcpus, mem, prepopulate, false, &pr, err, err_len))
		return -1;
	st = &pr.first_touch_stats;
	/* the parts are per vCPU: each vCPU's time over its own pages */
	pp = pr.pages ? (double)pr.pages / nr_vcpus : 1.0;
#define BD(name, val)                                                   \
	do {                                                            \
		snprintf(key, sizeof(key), "%sbreakdown_" name, prefix); \
		report_f(r, key, 1, (val));                             \
	} while (0)
	BD("first_touch_ns_per_page", pr.first_touch_ns_pp * nr_vcpus);
	BD("host_faultin_ns", st->time_faultin_ns / pp);
	BD("mmu_fault_ns", (double)(st->time_fault_ns - st->time_faultin_ns) / pp);
	BD("hw_walk_ns", st->time_walk_ns / pp);
	BD("copy_ns", st->time_copy_ns / pp);
	BD("other_ns", pr.first_touch_ns_pp * nr_vcpus -
			       (double)(st->time_fault_ns + st->time_walk_ns + st->time_copy_ns) / pp);
	BD("host_faultins_per_page", (double)st->host_faultins / pp);
	BD("fault_around_pages_per_page", (double)st->fault_around_pages / pp);
#undef BD
	return 0;
}

static int bench_demand_run(const struct cli_opts *o)
{
	/* one vCPU by default: the overhead ratios compare per-page latencies */
	unsigned nr_vcpus = o->vcpus_set ? o->vcpus : 1;
	unsigned reps = cli_reps(o), rep, k;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE;
	double *v[DS_COUNT], ft_over, eft_over, rt_over, ert_over, m_fault;
	char err[256] = "";
	struct report r;
	bool ok = true;

	report_init(&r);
	report_str(&r, "benchmark", "demand");
	report_u64(&r, "reps", reps);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);

	v[0] = calloc(DS_COUNT * (size_t)reps, sizeof(double));
	if (!v[0]) {
		snprintf(err, sizeof(err), "out of memory");
		return report_finish(&r, o, false, err);
	}
	for (k = 1; k < DS_COUNT; k++)
		v[k] = v[0] + k * (size_t)reps;

	/*
	 * Every pass maps fresh memory the same way (env_create and
	 * host_mem_create make the same mmap and THP choice) and unmaps it
	 * after, so each one gets the pages the previous pass just freed; the
	 * order rotates every repetition so no variant always runs first or
	 * right after another.
	 */
	for (rep = 0; rep < reps && ok; rep++) {
		for (k = 0; k < DV_COUNT && ok; k++) {
			struct cli_opts eo = *o;
			struct pass_result pr;

			switch ((rep + k) % DV_COUNT) {
			case DV_OWNED:
			case DV_EMBEDDER:
				eo.embedder_mem = (rep + k) % DV_COUNT == DV_EMBEDDER;
				ok = !env_demand_pass(&eo, nr_vcpus, mem, false, true, &pr, err, sizeof(err));
				v[eo.embedder_mem ? DS_EFT : DS_FT][rep] = pr.first_touch_ns_pp;
				v[eo.embedder_mem ? DS_ERT : DS_RT][rep] = pr.retouch_ns_pp;
				break;
			case DV_OWNED_NOFA:
			case DV_EMBEDDER_NOFA:
				eo.embedder_mem = (rep + k) % DV_COUNT == DV_EMBEDDER_NOFA;
				eo.vm_flags |= VMMU_VM_NO_FAULT_AROUND;
				ok = !env_demand_pass(&eo, nr_vcpus, mem, false, false, &pr, err, sizeof(err));
				v[eo.embedder_mem ? DS_NEFT : DS_NFT][rep] = pr.first_touch_ns_pp;
				break;
			case DV_HOST:
				ok = !host_pass(o, nr_vcpus, mem, &pr, err, sizeof(err));
				v[DS_HFT][rep] = pr.first_touch_ns_pp;
				v[DS_HRT][rep] = pr.retouch_ns_pp;
				break;
			case DV_FAULT:
				ok = !fault_pass(o, nr_vcpus, mem, &v[DS_FAULT_V][rep], &v[DS_FAULT_H][rep], err,
						 sizeof(err));
				break;
			case DV_PREPOP:
				eo.embedder_mem = false;
				ok = !env_demand_pass(&eo, nr_vcpus, mem, true, true, &pr, err, sizeof(err));
				v[DS_PFT][rep] = pr.first_touch_ns_pp;
				v[DS_PRT][rep] = pr.retouch_ns_pp;
				break;
			}
		}
		/*
		 * fault_ns_over_retouch, the older definition: a prepopulated
		 * first touch over its own retouch, which charges the MMU with
		 * what the host's first access to a page costs beyond a later
		 * one (docs/benchmarks.md, "fault_ns on C").
		 */
		v[DS_FAULT][rep] = v[DS_FAULT_V][rep] - v[DS_FAULT_H][rep];
		v[DS_FAULT_RT][rep] = v[DS_PFT][rep] - v[DS_PRT][rep];
	}
	if (ok) {
		struct cli_opts eo = *o;

		eo.embedder_mem = false;
		ok = !demand_breakdown(&r, &eo, nr_vcpus, mem, false, "", err, sizeof(err));
		/* what fault_ns is made of: the host pages exist, the MMU maps them */
		ok = ok && !demand_breakdown(&r, &eo, nr_vcpus, mem, true, "prepopulated_", err, sizeof(err));
		eo.embedder_mem = true;
		ok = ok && !demand_breakdown(&r, &eo, nr_vcpus, mem, false, "embedder_", err, sizeof(err));
	}
	if (!ok) {
		free(v[0]);
		return report_finish(&r, o, false, err);
	}

	report_spread(&r, "first_touch_ns_per_page", 1, v[DS_FT], reps);
	report_spread(&r, "retouch_ns_per_page", 1, v[DS_RT], reps);
	m_fault = report_spread(&r, "fault_ns", 1, v[DS_FAULT], reps);
	report_spread(&r, "fault_ns_over_retouch", 1, v[DS_FAULT_RT], reps);
	report_spread(&r, "embedder_first_touch_ns_per_page", 1, v[DS_EFT], reps);
	report_spread(&r, "embedder_retouch_ns_per_page", 1, v[DS_ERT], reps);
	report_spread(&r, "host_first_touch_ns_per_page", 1, v[DS_HFT], reps);
	report_spread(&r, "host_retouch_ns_per_page", 1, v[DS_HRT], reps);
	report_spread(&r, "prepopulated_first_touch_ns_per_page", 1, v[DS_PFT], reps);
	report_spread(&r, "prepopulated_retouch_ns_per_page", 1, v[DS_PRT], reps);
	report_spread(&r, "fault_vmmu_ns_per_page", 1, v[DS_FAULT_V], reps);
	report_spread(&r, "fault_host_ns_per_page", 1, v[DS_FAULT_H], reps);
	/* report_f() turns a division by a zero baseline into null */
	ft_over = report_ratio(&r, "first_touch_overhead", 3, v[DS_FT], v[DS_HFT], reps);
	rt_over = report_ratio(&r, "retouch_overhead", 3, v[DS_RT], v[DS_HRT], reps);
	eft_over = report_ratio(&r, "embedder_first_touch_overhead", 3, v[DS_EFT], v[DS_HFT], reps);
	ert_over = report_ratio(&r, "embedder_retouch_overhead", 3, v[DS_ERT], v[DS_HRT], reps);
	/* The same passes without fault-around, for what it buys. */
	report_spread(&r, "no_fault_around_first_touch_ns_per_page", 1, v[DS_NFT], reps);
	report_spread(&r, "no_fault_around_embedder_first_touch_ns_per_page", 1, v[DS_NEFT], reps);
	report_ratio(&r, "no_fault_around_first_touch_overhead", 3, v[DS_NFT], v[DS_HFT], reps);
	report_ratio(&r, "no_fault_around_embedder_first_touch_overhead", 3, v[DS_NEFT], v[DS_HFT], reps);
	free(v[0]);
	report_f(&r, "target_first_touch_overhead", 3, TARGET_FIRST_TOUCH_OVERHEAD);
	report_f(&r, "target_retouch_overhead", 3, TARGET_RETOUCH_OVERHEAD);
	report_f(&r, "target_fault_ns", 1, TARGET_FAULT_NS);
	/* written so that a NaN ratio counts as a miss */
	report_bool(&r, "meets_first_touch", ft_over <= TARGET_FIRST_TOUCH_OVERHEAD);
	report_bool(&r, "meets_retouch", rt_over <= TARGET_RETOUCH_OVERHEAD);
	report_bool(&r, "meets_fault", m_fault <= TARGET_FAULT_NS);
	report_bool(&r, "meets_embedder_first_touch", eft_over <= TARGET_FIRST_TOUCH_OVERHEAD);
	report_bool(&r, "meets_embedder_retouch", ert_over <= TARGET_RETOUCH_OVERHEAD);
	return report_finish(&r, o, true, err);
}

const struct tool_entry bench_demand = {
	.name = "demand",
	.desc = "ns per page of first touch and retouch vs plain host memory",
	.run = bench_demand_run,
};
