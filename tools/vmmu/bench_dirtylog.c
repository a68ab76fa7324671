// SPDX-License-Identifier: MIT
/*
 * `vmmu bench dirtylog`: like KVM's dirty_log_perf_test (memstress).  vCPUs
 * populate their parts of RAM, logging is switched on, then a few iterations
 * of "every vCPU writes every page of its part, harvest", and logging off;
 * each step timed.  Measured twice per repetition: in a default VM (get =
 * copy, clear, write-protect) and in a MANUAL_PROTECT VM (get = copy, then
 * clear_dirty_log over the whole slot write-protects).
 *
 * It checks that every page written is reported by the harvest after it
 * and that guest memory holds what was written; a failed check fails the
 * run, a missed target only says so.
 */
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "registry.h"
#include "sweep.h"

#define DIRTYLOG_ITERATIONS		3u
#define DIRTYLOG_TARGET_GET_CLEAR	1.0	/* ms per GiB of guest memory */

static double ms_per_gib(uint64_t ns, uint64_t mem_bytes)
{
	return mem_bytes ? (double)ns / 1e6 / ((double)mem_bytes / (double)CLI_SIZE_1G) : 0.0;
}

/* Samples of one run (one VM, one mode); times in ns. */
struct dirtylog_run {
	uint64_t populate, enable, disable;
	uint64_t dirty[DIRTYLOG_ITERATIONS], get[DIRTYLOG_ITERATIONS], clear[DIRTYLOG_ITERATIONS];
};

static int dirtylog_once(const struct cli_opts *o, bool manual, unsigned int nr_vcpus, uint64_t seed,
			 uint64_t *bm, struct dirtylog_run *out, char *err, size_t err_len)
{
	const char *what = manual ? "manual-protect VM" : "default VM";
	uint64_t mem = o->mem_bytes;
	struct cli_opts vo = *o;
	struct phase_result res;
	struct vm_env env;
	struct crew crew;
	bool crew_up = false, ok = false;
	uint64_t t0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (manual)
		vo.vm_flags |= VMMU_VM_MANUAL_PROTECT;
	rc = env_create(&env, &vo, nr_vcpus, mem);
	if (rc) {
		cli_set_error(err, err_len, "%s: %s: %s", what, env.failed_call, vmmu_strerror(rc));
		return -1;
	}
	if (crew_start(&crew, nr_vcpus, env.vcpus, NULL, mem, seed)) {
		cli_set_error(err, err_len, "cannot start the vCPU threads");
		goto out;
	}
	crew_up = true;
	if (crew_run(&crew, CREW_OP_VCPU_WRITE, "populate", &res)) {
		cli_set_error(err, err_len, "%s: %s", what, res.error);
		goto out;
	}
	out->populate = res.ns;

	t0 = cli_now_ns();
	rc = env_set_logging(&env, o, true);
	out->enable = cli_now_ns() - t0;
	if (rc) {
		cli_set_error(err, err_len, "%s: enabling dirty logging: %s", what, vmmu_strerror(rc));
		goto out;
	}
	for (unsigned int it = 0; it < DIRTYLOG_ITERATIONS; it++) {
		crew.seed = seed + 1 + it;
		if (crew_run(&crew, CREW_OP_VCPU_WRITE, "dirty", &res)) {
			cli_set_error(err, err_len, "%s: %s", what, res.error);
			goto out;
		}
		out->dirty[it] = res.ns;
		if (env_harvest_all(&env, bm, manual, what, &out->get[it], &out->clear[it], err, err_len))
			goto out;
	}
	t0 = cli_now_ns();
	rc = env_set_logging(&env, o, false);
	out->disable = cli_now_ns() - t0;
	if (rc) {
		cli_set_error(err, err_len, "%s: disabling dirty logging: %s", what, vmmu_strerror(rc));
		goto out;
	}
	if (vmmu_get_dirty_log(env.vm, 0, bm) != VMMU_EINVAL) {
		cli_set_error(err, err_len, "%s: vmmu_get_dirty_log works on a slot that stopped logging", what);
		goto out;
	}
	ok = !env_verify_memory(&env, seed + DIRTYLOG_ITERATIONS, what, err, err_len);
out:
	if (crew_up)
		crew_stop(&crew);
	if (env_check_bugged(&env, err, err_len))
		ok = false;
	env_destroy(&env);
	return ok ? 0 : -1;
}

/*
 * --sweep: the same runs over memory sizes, halving from --mem down to 32M
 * (six sizes at most; every size a multiple of the host page).  Per GiB
 * numbers that stay flat mean costs linear in the slot's size.  Each
 * repetition measures every size, in a rotated order, in both VM kinds.
 */
#define DIRTYLOG_SWEEP_MIN	(UINT64_C(32) << 20)
#define DIRTYLOG_SWEEP_POINTS	6u

enum { DL_ENABLE, DL_DIRTY, DL_GET, DL_CLEAR, DL_DEFAULT_GET, DL_DISABLE, DL_NR_METRICS };

static int bench_dirtylog_sweep(const struct cli_opts *o)
{
	static const char *const metrics[DL_NR_METRICS] = {
		"enable_ms_per_gib", "dirty_ns_per_page", "get_ms_per_gib", "clear_ms_per_gib",
		"default_get_ms_per_gib", "disable_ms_per_gib",
	};
	unsigned int nr_vcpus = o->vcpus_set ? o->vcpus : CLI_DEFAULT_VCPUS, reps = cli_reps(o), nr = 0;
	uint64_t sizes[DIRTYLOG_SWEEP_POINTS], *bm;
	double *v[DL_NR_METRICS];
	char err[256] = "";
	struct sweep sw;
	struct report r;
	bool ok = true;

	for (uint64_t m = o->mem_bytes; nr < DIRTYLOG_SWEEP_POINTS && m >= DIRTYLOG_SWEEP_MIN && !(m % o->host_page);
	     m /= 2)
		sizes[nr++] = m;
	if (!nr)
		return cli_usage_error("--mem %llu bytes: the dirtylog sweep starts at 32M",
				       (unsigned long long)o->mem_bytes);
	/* ascending, as the CSV's rows */
	for (unsigned int i = 0; i < nr / 2; i++) {
		uint64_t t = sizes[i];

		sizes[i] = sizes[nr - 1 - i];
		sizes[nr - 1 - i] = t;
	}
	sweep_init(&sw, "dirtylog", "mem_mib", metrics, DL_NR_METRICS);
	report_init(&r);
	report_str(&r, "benchmark", "dirtylog");
	report_u64(&r, "reps", reps);
	report_u64(&r, "iterations", DIRTYLOG_ITERATIONS);
	report_config(&r, o, nr_vcpus, o->mem_bytes);

	bm = calloc((o->mem_bytes / CLI_PAGE_SIZE + 63) / 64, sizeof(*bm));
	/* per size and repetition: one sample of each metric (the iterations' median) */
	v[0] = calloc((size_t)DL_NR_METRICS * nr * reps, sizeof(double));
	if (!bm || !v[0]) {
		free(bm);
		free(v[0]);
		return report_finish(&r, o, false, "out of memory");
	}
	for (unsigned int m = 1; m < DL_NR_METRICS; m++)
		v[m] = v[m - 1] + (size_t)nr * reps;
	for (unsigned int rep = 0; rep < reps && ok; rep++) {
		for (unsigned int j = 0; j < nr && ok; j++) {
			unsigned int k = (rep + j) % nr;
			size_t at = (size_t)k * reps + rep;
			struct cli_opts so = *o;
			struct dirtylog_run run[2];
			double it[2][DIRTYLOG_ITERATIONS];
			uint64_t mem = sizes[k], pages = mem / CLI_PAGE_SIZE;

			so.mem_bytes = mem;
			for (unsigned int manual = 0; manual < 2 && ok; manual++)
				ok = !dirtylog_once(&so, manual, nr_vcpus, o->seed + rep * 16, bm, &run[manual], err,
						    sizeof(err));
			if (!ok)
				break;
			v[DL_ENABLE][at] = ms_per_gib(run[1].enable, mem);
			v[DL_DISABLE][at] = ms_per_gib(run[1].disable, mem);
			for (unsigned int i = 0; i < DIRTYLOG_ITERATIONS; i++) {
				it[0][i] = (double)run[1].dirty[i] / (double)pages;
				it[1][i] = ms_per_gib(run[0].get[i], mem);
			}
			v[DL_DIRTY][at] = cli_median(it[0], DIRTYLOG_ITERATIONS);
			v[DL_DEFAULT_GET][at] = cli_median(it[1], DIRTYLOG_ITERATIONS);
			for (unsigned int i = 0; i < DIRTYLOG_ITERATIONS; i++) {
				it[0][i] = ms_per_gib(run[1].get[i], mem);
				it[1][i] = ms_per_gib(run[1].clear[i], mem);
			}
			v[DL_GET][at] = cli_median(it[0], DIRTYLOG_ITERATIONS);
			v[DL_CLEAR][at] = cli_median(it[1], DIRTYLOG_ITERATIONS);
		}
	}
	free(bm);
	for (unsigned int k = 0; k < nr && ok; k++) {
		unsigned int row = sweep_row(&sw, sizes[k] >> 20);

		for (unsigned int m = 0; m < DL_NR_METRICS; m++)
			sweep_set(&sw, row, m, &v[m][(size_t)k * reps], reps);
	}
	free(v[0]);
	if (ok && sweep_write_csv(&sw, o, err, sizeof(err)))
		ok = false;
	sweep_report(&sw, &r);
	return report_finish(&r, o, ok, err);
}

static int bench_dirtylog_run(const struct cli_opts *o)
{
	unsigned int nr_vcpus = o->vcpus_set ? o->vcpus : CLI_DEFAULT_VCPUS;
	unsigned int reps = cli_reps(o), n_it = reps * DIRTYLOG_ITERATIONS, n_run = 2 * reps;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE, *bm;
	double *populate, *enable, *disable, *dirty, *get, *clear, *dget;
	double m_get, m_clear, m_dget;
	unsigned int i_run = 0, i_dirty = 0, i_get = 0, i_dget = 0;
	char err[256] = "";
	struct report r;
	bool ok = true;

	if (o->sweep)
		return bench_dirtylog_sweep(o);
	report_init(&r);
	report_str(&r, "benchmark", "dirtylog");
	report_u64(&r, "reps", reps);
	report_u64(&r, "iterations", DIRTYLOG_ITERATIONS);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);

	bm = calloc((pages + 63) / 64, sizeof(*bm));
	/* per run: populate, enable, disable; per iteration: dirty (both modes), get, clear, default get */
	populate = calloc(3 * (size_t)n_run + 5 * (size_t)n_it, sizeof(double));
	if (!bm || !populate) {
		free(bm);
		free(populate);
		return report_finish(&r, o, false, "out of memory");
	}
	enable = populate + n_run;
	disable = enable + n_run;
	dirty = disable + n_run;	/* both modes: 2 * n_it */
	get = dirty + 2 * (size_t)n_it;
	clear = get + n_it;
	dget = clear + n_it;

	for (unsigned int rep = 0; rep < reps && ok; rep++) {
		for (unsigned int k = 0; k < 2 && ok; k++) {
			bool manual = (rep + k) & 1;
			struct dirtylog_run run;

			ok = !dirtylog_once(o, manual, nr_vcpus, o->seed + rep * 16, bm, &run, err, sizeof(err));
			if (!ok)
				break;
			populate[i_run] = (double)run.populate / (double)pages;
			enable[i_run] = ms_per_gib(run.enable, mem);
			disable[i_run] = ms_per_gib(run.disable, mem);
			i_run++;
			for (unsigned int it = 0; it < DIRTYLOG_ITERATIONS; it++) {
				dirty[i_dirty++] = (double)run.dirty[it] / (double)pages;
				if (manual) {
					get[i_get] = ms_per_gib(run.get[it], mem);
					clear[i_get++] = ms_per_gib(run.clear[it], mem);
				} else {
					dget[i_dget++] = ms_per_gib(run.get[it], mem);
				}
			}
		}
	}
	free(bm);
	if (!ok) {
		free(populate);
		return report_finish(&r, o, false, err);
	}

	report_spread(&r, "populate_ns_per_page", 1, populate, i_run);
	report_spread(&r, "enable_ms_per_gib", 3, enable, i_run);
	report_spread(&r, "dirty_ns_per_page", 1, dirty, i_dirty);
	m_get = report_spread(&r, "get_ms_per_gib", 3, get, i_get);
	m_clear = report_spread(&r, "clear_ms_per_gib", 3, clear, i_get);
	report_f(&r, "get_clear_ms_per_gib", 3, m_get + m_clear);
	m_dget = report_spread(&r, "default_get_ms_per_gib", 3, dget, i_dget);
	report_spread(&r, "disable_ms_per_gib", 3, disable, i_run);
	report_f(&r, "target_get_clear_ms_per_gib", 3, DIRTYLOG_TARGET_GET_CLEAR);
	report_bool(&r, "meets_get_clear", m_get + m_clear <= DIRTYLOG_TARGET_GET_CLEAR);
	report_bool(&r, "meets_default_get", m_dget <= DIRTYLOG_TARGET_GET_CLEAR);
	free(populate);
	return report_finish(&r, o, true, err);
}

const struct tool_entry bench_dirtylog = {
	.name = "dirtylog",
	.desc = "ms per GiB to enable, harvest (get, clear) and disable dirty logging",
	.run = bench_dirtylog_run,
	.sweep = "memory size",
};
