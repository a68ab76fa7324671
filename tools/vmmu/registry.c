// SPDX-License-Identifier: MIT
/*
 * The registry: which scenarios `vmmu run` and benchmarks `vmmu bench`
 * know, and how to list, find and run them.
 */
#include <string.h>

#include "registry.h"

/* ------------------------------------------------------------------------ */
/* Scenarios: `vmmu run`                                                     */

struct scenario {
	const char *name;
	const char *desc;
	int (*run)(const struct cli_opts *o);
	bool guest_paging;	/* takes --guest */
};

static const struct scenario scenarios[] = {
	{ "demand", "vCPUs fault in disjoint parts of RAM, then reread and verify them",
	  scenario_demand, false },
	{ "paging", "the same with guest paging on: touch through gvas, remap, switch CR3",
	  scenario_paging, true },
};

#define NR_SCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

const char *scenario_default(void)
{
	return "demand";
}

static const struct scenario *scenario_find(const char *name)
{
	size_t i;

	for (i = 0; i < NR_SCENARIOS; i++)
		if (!strcmp(scenarios[i].name, name))
			return &scenarios[i];
	return NULL;
}

bool scenario_exists(const char *name)
{
	return scenario_find(name) != NULL;
}

bool scenario_takes_guest(const char *name)
{
	const struct scenario *s = scenario_find(name);

	return s && s->guest_paging;
}

void scenario_list(FILE *f, bool json)
{
	struct report r;
	size_t i;

	if (json) {
		/* name -> description keeps --json a single flat object */
		report_init(&r);
		for (i = 0; i < NR_SCENARIOS; i++)
			report_str(&r, scenarios[i].name, scenarios[i].desc);
		report_print_json(&r, f);
		return;
	}
	for (i = 0; i < NR_SCENARIOS; i++)
		fprintf(f, "  %-10s %s%s\n", scenarios[i].name, scenarios[i].desc,
			strcmp(scenarios[i].name, scenario_default()) ? "" : " (default)");
}

int scenario_run(const char *name, const struct cli_opts *o)
{
	const struct scenario *s = scenario_find(name);

	if (!s)
		return cli_usage_error("unknown scenario '%s'", name);
	return s->run(o);
}

/* ------------------------------------------------------------------------ */
/* Benchmarks: `vmmu bench`                                                  */

/*
 * Timed runs with their own result checks. Timings are noisy, so each
 * benchmark repeats, interleaves the variants it compares inside every
 * repetition, and reports medians; a missed target is reported, never turned
 * into a failure. Only wrong data or errors fail.
 */

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
