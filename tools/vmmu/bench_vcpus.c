// SPDX-License-Identifier: MIT
/*
 * `vmmu bench vcpus`: first-touch pages per second of one vCPU against two
 * on disjoint halves of RAM.
 */
#include <stdlib.h>
#include <unistd.h>

#include "env.h"
#include "registry.h"
#include "sweep.h"

#define TARGET_SCALING			1.7
#define SWEEP_MAX_DEFAULT		16u	/* vCPUs, when --vcpus does not say */

/*
 * --sweep: first touch with 1, 2, ... N vCPUs (every count up to 8, then
 * doubling), N from --vcpus or twice the host's CPUs, so the curve shows
 * where the host runs out of cores.  In each repetition every count runs
 * once, in a rotated order; scaling is each repetition's rate over its own
 * 1-vCPU rate.
 */
static int bench_vcpus_sweep(const struct cli_opts *o)
{
	static const char *const metrics[] = { "first_touch_pages_per_s", "scaling_ratio" };
	unsigned int reps = cli_reps(o), n_max = o->vcpus, counts[SWEEP_MAX_ROWS], nr = 0;
	uint64_t mem = o->mem_bytes;
	double *pps = NULL, *ratio;
	char err[256] = "";
	struct sweep sw;
	struct report r;
	bool ok = true;

	if (!o->vcpus_set) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		n_max = cpus > 1 ? 2u * (unsigned int)cpus : 2u;
		if (n_max > SWEEP_MAX_DEFAULT)
			n_max = SWEEP_MAX_DEFAULT;
	}
	for (unsigned int n = 1; n <= n_max && nr < SWEEP_MAX_ROWS - 1; n = n < 8 ? n + 1 : 2 * n)
		counts[nr++] = n;
	if (counts[nr - 1] != n_max)
		counts[nr++] = n_max;
	if (mem / CLI_PAGE_SIZE < n_max)
		return cli_usage_error("--mem %llu bytes is fewer pages than the %u vCPUs of the sweep",
				       (unsigned long long)mem, n_max);

	sweep_init(&sw, "vcpus", "vcpus", metrics, 2);
	report_init(&r);
	report_str(&r, "benchmark", "vcpus");
	report_u64(&r, "reps", reps);
	report_config(&r, o, n_max, mem);
	report_u64(&r, "pages", mem / CLI_PAGE_SIZE);

	pps = calloc((size_t)nr * reps * 2, sizeof(double));
	if (!pps)
		return report_finish(&r, o, false, "out of memory");
	ratio = pps + (size_t)nr * reps;
	for (unsigned int rep = 0; rep < reps && ok; rep++) {
		for (unsigned int j = 0; j < nr && ok; j++) {
			unsigned int k = (rep + j) % nr;
			struct pass_result pr;

			ok = !env_demand_pass(o, counts[k], mem, false, false, &pr, err, sizeof(err));
			pps[k * reps + rep] = pr.first_touch_ns ? pr.pages * 1e9 / pr.first_touch_ns : 0.0;
		}
		for (unsigned int k = 0; k < nr && ok; k++)
			ratio[k * reps + rep] = pps[k * reps + rep] / pps[rep];
	}
	for (unsigned int k = 0; k < nr && ok; k++) {
		unsigned int row = sweep_row(&sw, counts[k]);

		sweep_set(&sw, row, 0, &pps[k * reps], reps);
		sweep_set(&sw, row, 1, &ratio[k * reps], reps);
	}
	free(pps);
	if (ok && sweep_write_csv(&sw, o, err, sizeof(err)))
		ok = false;
	sweep_report(&sw, &r);
	return report_finish(&r, o, ok, err);
}

static int bench_vcpus_run(const struct cli_opts *o)
{
	unsigned reps = cli_reps(o), rep, k;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE;
	double *one, *two, m_one, m_two;
	char err[256] = "";
	struct report r;
	bool ok = true;

	if (o->sweep)
		return bench_vcpus_sweep(o);
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
		return report_finish(&r, o, false, err);
	}
	two = one + reps;

	for (rep = 0; rep < reps && ok; rep++) {
		/* alternate which runs first, so warm-up and drift hit both alike */
		for (k = 0; k < 2 && ok; k++) {
			unsigned n = ((rep + k) & 1) + 1;
			struct pass_result pr;
			double pps;

			ok = !env_demand_pass(o, n, mem, false, false, &pr, err, sizeof(err));
			pps = pr.first_touch_ns ? pr.pages * 1e9 / pr.first_touch_ns : 0.0;
			if (n == 1)
				one[rep] = pps;
			else
				two[rep] = pps;
		}
	}
	if (!ok) {
		free(one);
		return report_finish(&r, o, false, err);
	}
	m_one = cli_median(one, reps);
	m_two = cli_median(two, reps);
	free(one);

	report_f(&r, "pages_per_s_1vcpu", 0, m_one);
	report_f(&r, "pages_per_s_2vcpu", 0, m_two);
	report_f(&r, "scaling", 3, m_two / m_one);
	report_f(&r, "target_scaling", 3, TARGET_SCALING);
	report_bool(&r, "meets_scaling", m_two / m_one >= TARGET_SCALING);
	return report_finish(&r, o, true, err);
}

const struct tool_entry bench_vcpus = {
	.name = "vcpus",
	.desc = "first-touch pages/s of 1 vCPU vs 2 vCPUs on disjoint halves",
	.run = bench_vcpus_run,
	.sweep = "vcpus",
};
