// SPDX-License-Identifier: MIT
/*
 * `vmmu bench vcpus`: first-touch pages per second of one vCPU against two
 * on disjoint halves of RAM.
 */
#include <stdlib.h>

#include "env.h"
#include "registry.h"

#define TARGET_SCALING			1.7

static int bench_vcpus_run(const struct cli_opts *o)
{
	unsigned reps = cli_reps(o), rep, k;
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
};
