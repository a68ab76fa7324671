// SPDX-License-Identifier: MIT
/*
 * `vmmu bench`: timed runs with their own result checks. Timings are noisy,
 * so each benchmark repeats, interleaves the variants it compares inside
 * every repetition, and reports medians; a missed target is reported, never
 * turned into a failure. Only wrong data or errors fail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cli.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

#define TARGET_FIRST_TOUCH_OVERHEAD	1.25
#define TARGET_RETOUCH_OVERHEAD		2.0
#define TARGET_FAULT_NS			300.0
#define TARGET_SCALING			1.7

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

/* ------------------------------------------------------------------------ */
/* Passes                                                                    */

struct pass_result {
	double first_touch_ns_pp;
	double retouch_ns_pp;
	uint64_t first_touch_ns;
	uint64_t pages;
};

/*
 * One fresh VM: first touch (and retouch when asked), then the host-side
 * check of every token. With prepopulate, the host has touched every page
 * before the guest does, so the guest's faults find their host pages.
 */
static int vmmu_pass(const struct cli_opts *o, unsigned nr_vcpus, uint64_t mem_bytes,
		     bool prepopulate, bool retouch, struct pass_result *pr, char *err,
		     size_t err_len)
{
	struct phase_result res;
	struct vm_env env;
	struct crew crew;
	uint64_t bad = 0;
	int rc, failed = 0;

	memset(pr, 0, sizeof(*pr));
	rc = env_create(&env, o, nr_vcpus, mem_bytes);
	if (rc) {
		cli_set_error(err, err_len, "%s: %s", env.failed_call, vmmu_strerror(rc));
		fprintf(stderr, "vmmu: %s: %s\n", env.failed_call, vmmu_strerror(rc));
		return -1;
	}
	if (prepopulate && env_prepopulate(&env, o->seed)) {
		cli_set_error(err, err_len, "vmmu_memslot_hva failed");
		failed = 1;
		goto out;
	}
	if (crew_start(&crew, env.nr_vcpus, env.vcpus, NULL, mem_bytes, o->seed)) {
		cli_set_error(err, err_len, "cannot start the vCPU threads");
		failed = 1;
		goto out;
	}
	if (crew_run(&crew, CREW_OP_VCPU_WRITE, "first_touch", &res)) {
		cli_set_error(err, err_len, "%s", res.error);
		failed = 1;
	} else {
		pr->pages = res.pages;
		pr->first_touch_ns = res.ns;
		pr->first_touch_ns_pp = res.pages ? (double)res.ns / res.pages : 0.0;
		if (retouch) {
			if (crew_run(&crew, CREW_OP_VCPU_RETOUCH, "retouch", &res)) {
				cli_set_error(err, err_len, "%s", res.error);
				failed = 1;
			}
			pr->retouch_ns_pp = res.pages ? (double)res.ns / res.pages : 0.0;
		}
	}
	crew_stop(&crew);
	if (failed)
		goto out;
	rc = env_verify_tokens(&env, o->seed, &bad);
	if (rc) {
		cli_set_error(err, err_len, "verify: vmmu_gpa_to_hva: %s", vmmu_strerror(rc));
		failed = 1;
	} else if (bad) {
		cli_set_error(err, err_len,
			      "verify: host view differs from what the guest wrote in %" PRIu64
			      " pages", bad);
		failed = 1;
	}
out:
	if (env_check_bugged(&env, err, err_len))
		failed = 1;
	env_destroy(&env);
	return failed ? -1 : 0;
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

static unsigned bench_reps(const struct cli_opts *o)
{
	return o->reps_set ? o->reps : CLI_DEFAULT_REPS;
}

int bench_finish(struct report *r, const struct cli_opts *o, bool ok, const char *err)
{
	if (!ok)
		report_str(r, "error", err[0] ? err : "a check failed (see stderr)");
	report_bool(r, "ok", ok);
	if (o->json)
		report_print_json(r, stdout);
	else
		report_print_text(r, stdout);
	return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Benchmark "demand"                                                        */

enum demand_variant {
	DV_VMMU,
	DV_HOST,
	DV_PREPOP,
	DV_COUNT,
};

static int bench_demand(const struct cli_opts *o)
{
	/* one vCPU by default: the overhead ratios compare per-page latencies */
	unsigned nr_vcpus = o->vcpus_set ? o->vcpus : 1;
	unsigned reps = bench_reps(o), rep, k;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE;
	double *ft, *rt, *hft, *hrt, *pft, *prt, *fault;
	double m_ft, m_rt, m_hft, m_hrt, m_pft, m_prt, m_fault, ft_over, rt_over;
	char err[256] = "";
	struct report r;
	bool ok = true;

	report_init(&r);
	report_str(&r, "benchmark", "demand");
	report_u64(&r, "reps", reps);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);

	ft = calloc(7 * (size_t)reps, sizeof(double));
	if (!ft) {
		snprintf(err, sizeof(err), "out of memory");
		return bench_finish(&r, o, false, err);
	}
	rt = ft + reps;
	hft = rt + reps;
	hrt = hft + reps;
	pft = hrt + reps;
	prt = pft + reps;
	fault = prt + reps;

	for (rep = 0; rep < reps && ok; rep++) {
		/* rotate the order so no variant always runs right after another */
		for (k = 0; k < DV_COUNT && ok; k++) {
			struct pass_result pr;

			switch ((rep + k) % DV_COUNT) {
			case DV_VMMU:
				ok = !vmmu_pass(o, nr_vcpus, mem, false, true, &pr, err,
						sizeof(err));
				ft[rep] = pr.first_touch_ns_pp;
				rt[rep] = pr.retouch_ns_pp;
				break;
			case DV_HOST:
				ok = !host_pass(o, nr_vcpus, mem, &pr, err, sizeof(err));
				hft[rep] = pr.first_touch_ns_pp;
				hrt[rep] = pr.retouch_ns_pp;
				break;
			case DV_PREPOP:
				ok = !vmmu_pass(o, nr_vcpus, mem, true, true, &pr, err,
						sizeof(err));
				pft[rep] = pr.first_touch_ns_pp;
				prt[rep] = pr.retouch_ns_pp;
				/*
				 * Same VM, same pages: what first touch costs beyond
				 * a mapped access is the MMU's fault path.
				 */
				fault[rep] = pft[rep] - prt[rep];
				break;
			}
		}
	}
	if (!ok) {
		free(ft);
		return bench_finish(&r, o, false, err);
	}

	m_ft = cli_median(ft, reps);
	m_rt = cli_median(rt, reps);
	m_hft = cli_median(hft, reps);
	m_hrt = cli_median(hrt, reps);
	m_pft = cli_median(pft, reps);
	m_prt = cli_median(prt, reps);
	m_fault = cli_median(fault, reps);
	free(ft);
	/* report_f() turns a division by a zero baseline into null */
	ft_over = m_ft / m_hft;
	rt_over = m_rt / m_hrt;

	report_f(&r, "first_touch_ns_per_page", 1, m_ft);
	report_f(&r, "retouch_ns_per_page", 1, m_rt);
	report_f(&r, "fault_ns", 1, m_fault);
	report_f(&r, "host_first_touch_ns_per_page", 1, m_hft);
	report_f(&r, "host_retouch_ns_per_page", 1, m_hrt);
	report_f(&r, "prepopulated_first_touch_ns_per_page", 1, m_pft);
	report_f(&r, "prepopulated_retouch_ns_per_page", 1, m_prt);
	report_f(&r, "first_touch_overhead", 3, ft_over);
	report_f(&r, "retouch_overhead", 3, rt_over);
	report_f(&r, "target_first_touch_overhead", 3, TARGET_FIRST_TOUCH_OVERHEAD);
	report_f(&r, "target_retouch_overhead", 3, TARGET_RETOUCH_OVERHEAD);
	report_f(&r, "target_fault_ns", 1, TARGET_FAULT_NS);
	/* written so that a NaN ratio counts as a miss */
	report_bool(&r, "meets_first_touch", ft_over <= TARGET_FIRST_TOUCH_OVERHEAD);
	report_bool(&r, "meets_retouch", rt_over <= TARGET_RETOUCH_OVERHEAD);
	report_bool(&r, "meets_fault", m_fault <= TARGET_FAULT_NS);
	return bench_finish(&r, o, true, err);
}

/* ------------------------------------------------------------------------ */
/* Benchmark "vcpus"                                                         */

static int bench_vcpus(const struct cli_opts *o)
{
	unsigned reps = bench_reps(o), rep, k;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE;
	double *one, *two, m_one, m_two;
	char err[256] = "";
	struct report r;
	bool ok = true;

	if (o->vcpus_set && o->vcpus != 2)
		return cli_usage_error("bench vcpus always compares 1 and 2 vCPUs; drop --vcpus");

	report_init(&r);
	report_str(&r, "benchmark", "vcpus");
	report_u64(&r, "reps", reps);
	report_config(&r, o, 2, mem);
	report_u64(&r, "pages", pages);

	one = calloc(2 * (size_t)reps, sizeof(double));
	if (!one) {
		snprintf(err, sizeof(err), "out of memory");
		return bench_finish(&r, o, false, err);
	}
	two = one + reps;

	for (rep = 0; rep < reps && ok; rep++) {
		/* alternate which runs first, so warm-up and drift hit both alike */
		for (k = 0; k < 2 && ok; k++) {
			unsigned n = ((rep + k) & 1) + 1;
			struct pass_result pr;
			double pps;

			ok = !vmmu_pass(o, n, mem, false, false, &pr, err, sizeof(err));
			pps = pr.first_touch_ns ? pr.pages * 1e9 / pr.first_touch_ns : 0.0;
			if (n == 1)
				one[rep] = pps;
			else
				two[rep] = pps;
		}
	}
	if (!ok) {
		free(one);
		return bench_finish(&r, o, false, err);
	}
	m_one = cli_median(one, reps);
	m_two = cli_median(two, reps);
	free(one);

	report_f(&r, "pages_per_s_1vcpu", 0, m_one);
	report_f(&r, "pages_per_s_2vcpu", 0, m_two);
	report_f(&r, "scaling", 3, m_two / m_one);
	report_f(&r, "target_scaling", 3, TARGET_SCALING);
	report_bool(&r, "meets_scaling", m_two / m_one >= TARGET_SCALING);
	return bench_finish(&r, o, true, err);
}

/* ------------------------------------------------------------------------ */
/* Registry                                                                  */

struct bench {
	const char *name;
	const char *desc;
	int (*run)(const struct cli_opts *o);
};

static const struct bench benches[] = {
	{ "demand", "ns per page of first touch and retouch vs plain host memory",
	  bench_demand },
	{ "vcpus", "first-touch pages/s of 1 vCPU vs 2 vCPUs on disjoint halves",
	  bench_vcpus },
	{ "walk", "ns per guest translation: TLB hit and full 2D walk vs a host access",
	  bench_walk },
	{ "fastpf", "ns per dirty-logging write fault with and without the fast page fault",
	  bench_fastpf },
	{ "dirtylog", "ms per GiB to enable, harvest (get, clear) and disable dirty logging",
	  bench_dirtylog },
	{ "zap", "ns per page of a populated memslot's delete; zap-all fast vs gfn-range",
	  bench_zap },
	{ "notifier", "invalidate begin/end ranges per second while vCPUs fault and write",
	  bench_notifier },
	{ "cr3switch", "shadow paging: ns per PCID CR3 switch + read over 1..6 address spaces",
	  bench_cr3switch },
	{ "ptwrite", "shadow paging: ns per guest page-table store, emulated vs unsync",
	  bench_ptwrite },
	{ "private", "private vs shared fault ns, conversion ns per page (4K, 2M), zap-all with a private root",
	  bench_private },
};

#define NR_BENCHES (sizeof(benches) / sizeof(benches[0]))

static const struct bench *bench_find(const char *name)
{
	size_t i;

	for (i = 0; i < NR_BENCHES; i++)
		if (!strcmp(benches[i].name, name))
			return &benches[i];
	return NULL;
}

bool bench_exists(const char *name)
{
	return bench_find(name) != NULL;
}

void bench_list(FILE *f, bool json)
{
	struct report r;
	size_t i;

	if (json) {
		/* name -> description keeps --json a single flat object */
		report_init(&r);
		for (i = 0; i < NR_BENCHES; i++)
			report_str(&r, benches[i].name, benches[i].desc);
		report_print_json(&r, f);
		return;
	}
	for (i = 0; i < NR_BENCHES; i++)
		fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].desc);
}

int bench_run(const char *name, const struct cli_opts *o)
{
	const struct bench *b = bench_find(name);

	if (!b)
		return cli_usage_error("unknown benchmark '%s'", name);
	return b->run(o);
}
