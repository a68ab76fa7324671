// SPDX-License-Identifier: MIT
/*
 * Dirty-logging benchmarks (seed 002).
 *
 * `vmmu bench fastpf`: the seed's experiment.  A logged slot is mapped
 * writable by a first pass, a harvest write-protects all of it, then the
 * guest writes every page once: each write is a write-protect fault on a
 * present page.  That pass is timed in a VM with the lockless fast page fault
 * and in one without it (VMMU_VM_NO_FAST_PF), both alive for the whole run
 * and interleaved in every repetition, so drift and warm-up hit both alike.
 * The seed's numbers for this pass: 532 ms before, 196 ms after (2.7x).
 * Then the same pass in a VMMU_VM_PML VM against the default one: dirty
 * logging by D bits and the PML buffer takes no fault at all
 * (wrprot_ns_per_page, pml_ns_per_page, wrprot_pml_ratio).
 *
 * `vmmu bench dirtylog`: like KVM's dirty_log_perf_test (memstress).  vCPUs
 * populate their parts of RAM, logging is switched on, then a few iterations
 * of "every vCPU writes every page of its part, harvest", and logging off;
 * each step timed.  Measured twice per repetition: in a default VM (get =
 * copy, clear, write-protect) and in a MANUAL_PROTECT VM (get = copy, then
 * clear_dirty_log over the whole slot write-protects).
 *
 * Both check that every page written is reported by the harvest after it and
 * that guest memory holds what was written; a failed check fails the run, a
 * missed target only says so.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "registry.h"

#define FASTPF_TARGET_SPEEDUP		5.0
#define DIRTYLOG_ITERATIONS		3u
#define DIRTYLOG_TARGET_GET_CLEAR	1.0	/* ms per GiB of guest memory */

static unsigned int dirty_reps(const struct cli_opts *o)
{
	return o->reps_set ? o->reps : CLI_DEFAULT_REPS;
}

static double ms_per_gib(uint64_t ns, uint64_t mem_bytes)
{
	return mem_bytes ? (double)ns / 1e6 / ((double)mem_bytes / (double)CLI_SIZE_1G) : 0.0;
}

/* A flags-only change of the slot env_create() made: logging on or off. */
static int env_set_logging(struct vm_env *env, const struct cli_opts *o, bool on)
{
	struct vmmu_memslot s;

	memset(&s, 0, sizeof(s));
	s.slot = 0;
	s.flags = on ? VMMU_MEM_LOG_DIRTY_PAGES : 0;
	s.gpa = 0;
	s.size = env->mem_bytes;
	s.host_page_size = o->host_page;
	s.backing = o->backing;
	/* A slot over the embedder's memory restates its hva, as in KVM. */
	if (env->own_mem) {
		int rc = vmmu_memslot_hva(env->vm, 0, &s.hva);

		if (rc)
			return rc;
	}
	return vmmu_set_memslot(env->vm, &s);
}

/* Pages of [0, pages) the harvest did not report; the first one in *first. */
static uint64_t bitmap_missing(const uint64_t *bm, uint64_t pages, uint64_t *first)
{
	uint64_t missing = 0;

	for (uint64_t w = 0; w < (pages + 63) / 64; w++) {
		uint64_t want = (pages - w * 64 >= 64) ? ~UINT64_C(0) : (UINT64_C(1) << (pages % 64)) - 1;
		uint64_t lack = want & ~bm[w];

		if (lack && !missing)
			*first = w * 64 + (uint64_t)__builtin_ctzll(lack);
		missing += (uint64_t)__builtin_popcountll(lack);
	}
	return missing;
}

/* Just the two counters the fast-path checks need, without summing all of them. */
static void sum_fast_stats(struct vm_env *env, uint64_t *fast_fixed, uint64_t *pf_taken)
{
	*fast_fixed = *pf_taken = 0;
	for (unsigned int i = 0; i < env->nr_vcpus; i++) {
		struct vmmu_vcpu_stats s;

		vmmu_vcpu_get_stats(env->vcpus[i], &s);
		*fast_fixed += s.pf_fast_fixed;
		*pf_taken += s.pf_taken;
	}
}

/* Harvest the whole slot and require every page in the report. */
static int harvest_all(struct vm_env *env, uint64_t *bm, bool clear, const char *what, uint64_t *get_ns,
		       uint64_t *clear_ns, char *err, size_t err_len)
{
	uint64_t pages = env->mem_bytes / CLI_PAGE_SIZE, first = 0, missing, t0;
	int rc;

	t0 = cli_now_ns();
	rc = vmmu_get_dirty_log(env->vm, 0, bm);
	if (get_ns)
		*get_ns = cli_now_ns() - t0;
	if (rc) {
		cli_set_error(err, err_len, "%s: vmmu_get_dirty_log: %s", what, vmmu_strerror(rc));
		return -1;
	}
	missing = bitmap_missing(bm, pages, &first);
	if (missing) {
		cli_set_error(err, err_len,
			      "%s: the harvest after writing every page missed %" PRIu64 " of them (first gpa 0x%" PRIx64
			      ")", what, missing, first * CLI_PAGE_SIZE);
		fprintf(stderr, "vmmu: %s\n", err);
		return -1;
	}
	if (!clear)
		return 0;
	t0 = cli_now_ns();
	rc = vmmu_clear_dirty_log(env->vm, 0, 0, (uint32_t)pages, bm);
	if (clear_ns)
		*clear_ns = cli_now_ns() - t0;
	if (rc) {
		cli_set_error(err, err_len, "%s: vmmu_clear_dirty_log: %s", what, vmmu_strerror(rc));
		return -1;
	}
	return 0;
}

static int verify_memory(struct vm_env *env, uint64_t seed, const char *what, char *err, size_t err_len)
{
	uint64_t bad = 0;
	int rc = env_verify_tokens(env, seed, &bad);

	if (rc) {
		cli_set_error(err, err_len, "%s: verify: vmmu_gpa_to_hva: %s", what, vmmu_strerror(rc));
		return -1;
	}
	if (bad) {
		cli_set_error(err, err_len, "%s: guest memory differs from what the vCPUs wrote in %" PRIu64 " pages",
			      what, bad);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Benchmark "fastpf"                                                        */

struct fastpf_vm {
	const char *name;
	struct vm_env env;
	struct crew crew;
	bool env_up, crew_up;
	uint64_t seed;		/* of the last pass */
};

static int fastpf_setup(struct fastpf_vm *f, const struct cli_opts *o, uint32_t extra_flags, unsigned int nr_vcpus,
			uint64_t mem, uint64_t *bm, char *err, size_t err_len)
{
	struct cli_opts vo = *o;
	struct phase_result res;
	int rc;

	vo.vm_flags |= extra_flags;
	rc = env_create(&f->env, &vo, nr_vcpus, mem);
	if (rc) {
		cli_set_error(err, err_len, "%s VM: %s: %s", f->name, f->env.failed_call, vmmu_strerror(rc));
		return -1;
	}
	f->env_up = true;
	rc = env_set_logging(&f->env, o, true);
	if (rc) {
		cli_set_error(err, err_len, "%s VM: enabling dirty logging: %s", f->name, vmmu_strerror(rc));
		return -1;
	}
	if (crew_start(&f->crew, nr_vcpus, f->env.vcpus, NULL, mem, o->seed)) {
		cli_set_error(err, err_len, "cannot start the vCPU threads");
		return -1;
	}
	f->crew_up = true;
	/* The first pass maps every page writable (and dirty)... */
	f->seed = o->seed;
	if (crew_run(&f->crew, CREW_OP_VCPU_WRITE, "populate", &res)) {
		cli_set_error(err, err_len, "%s VM: %s", f->name, res.error);
		return -1;
	}
	/* ...and this harvest reports it all and write-protects it all. */
	return harvest_all(&f->env, bm, false, f->name, NULL, NULL, err, err_len);
}

/*
 * One repetition in one VM: the timed pass (one write-protect fault per
 * page), then the same pass again with every page already writable (the
 * cost of the writes themselves), then the harvest that must report every
 * page and leaves all of them write-protected for the next repetition.
 */
static int fastpf_pass(struct fastpf_vm *f, uint64_t seed, uint64_t *bm, double *fault_ns_pp, double *mapped_ns_pp,
		       uint64_t *fast_fixed, uint64_t *faults, char *err, size_t err_len)
{
	uint64_t pages = f->env.mem_bytes / CLI_PAGE_SIZE, ff0, pf0, ff1, pf1;
	struct phase_result res;

	f->seed = seed;
	f->crew.seed = seed;	/* read by the workers after the start barrier */
	sum_fast_stats(&f->env, &ff0, &pf0);
	if (crew_run(&f->crew, CREW_OP_VCPU_WRITE, "rewrite", &res)) {
		cli_set_error(err, err_len, "%s VM: %s", f->name, res.error);
		return -1;
	}
	sum_fast_stats(&f->env, &ff1, &pf1);
	*fault_ns_pp = (double)res.ns / (double)pages;
	*fast_fixed = ff1 - ff0;
	*faults = pf1 - pf0;
	if (crew_run(&f->crew, CREW_OP_VCPU_WRITE, "rewrite_mapped", &res)) {
		cli_set_error(err, err_len, "%s VM: %s", f->name, res.error);
		return -1;
	}
	*mapped_ns_pp = (double)res.ns / (double)pages;
	return harvest_all(&f->env, bm, false, f->name, NULL, NULL, err, err_len);
}

static void fastpf_teardown(struct fastpf_vm *f, bool *ok, char *err, size_t err_len)
{
	if (f->crew_up)
		crew_stop(&f->crew);
	if (f->env_up) {
		if (*ok && verify_memory(&f->env, f->seed, f->name, err, err_len))
			*ok = false;
		if (env_check_bugged(&f->env, err, err_len))
			*ok = false;
		env_destroy(&f->env);
	}
	f->crew_up = f->env_up = false;
}

/* Medians of one fast-vs-slow measurement: pass ns/page with and without
 * the fast path, the same writes through mapped pages, fast-fixed fraction. */
struct fastpf_result {
	double fast, slow, fmap, smap, frac;
};

/*
 * vms[0] is the default VM (write protection, fast path on); vms[1] has
 * other_flags: VMMU_VM_NO_FAST_PF ("slow"), or VMMU_VM_PML, where the pass
 * after a harvest takes no fault at all (each first write sets D in the walk
 * and logs the page).  Neither may fix a fault on the fast path.
 */
static bool fastpf_measure(const struct cli_opts *o, unsigned int nr_vcpus, uint64_t mem, unsigned int reps,
			   uint32_t other_flags, const char *other_name, struct fastpf_result *out, char *err,
			   size_t err_len)
{
	uint64_t pages = mem / CLI_PAGE_SIZE;
	struct fastpf_vm vms[2] = { { .name = "fast" }, { .name = other_name } };
	uint64_t *bm, slow_fast_fixed = 0;
	unsigned int rep;
	double *v;
	bool ok;

	bm = calloc((pages + 63) / 64, sizeof(*bm));
	v = calloc(5 * (size_t)reps, sizeof(*v));
	if (!bm || !v) {
		free(bm);
		free(v);
		cli_set_error(err, err_len, "out of memory");
		return false;
	}
	ok = !fastpf_setup(&vms[0], o, 0, nr_vcpus, mem, bm, err, err_len) &&
	     !fastpf_setup(&vms[1], o, other_flags, nr_vcpus, mem, bm, err, err_len);

	for (rep = 0; rep < reps && ok; rep++) {
		/* alternate which VM goes first */
		for (unsigned int k = 0; k < 2 && ok; k++) {
			unsigned int which = (rep + k) & 1;
			uint64_t ff = 0, faults = 0;

			ok = !fastpf_pass(&vms[which], o->seed + 1 + rep, bm, &v[which * reps + rep],
					  &v[(2 + which) * reps + rep], &ff, &faults, err, err_len);
			if (which == 0)
				v[4 * reps + rep] = (double)ff / (double)pages;
			else
				slow_fast_fixed += ff;
		}
	}
	if (ok && slow_fast_fixed) {
		cli_set_error(err, err_len, "the %s VM fixed %" PRIu64 " faults on the fast path", other_name,
			      slow_fast_fixed);
		ok = false;
	}
	fastpf_teardown(&vms[0], &ok, err, err_len);
	fastpf_teardown(&vms[1], &ok, err, err_len);
	free(bm);
	if (ok) {
		out->fast = cli_median(v, reps);
		out->slow = cli_median(v + reps, reps);
		out->fmap = cli_median(v + 2 * reps, reps);
		out->smap = cli_median(v + 3 * reps, reps);
		out->frac = cli_median(v + 4 * reps, reps);
	}
	free(v);
	return ok;
}

int bench_fastpf(const struct cli_opts *o)
{
	/* One vCPU by default, as in the seed's test: a per-fault latency. */
	unsigned int nr_vcpus = o->vcpus_set ? o->vcpus : 1;
	unsigned int reps = dirty_reps(o);
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE;
	struct cli_opts vmm = *o, owned = *o;
	struct fastpf_result e, w, p;
	double m_fast, m_slow, m_fmap, m_smap, m_frac;
	char err[256] = "";
	struct report r;

	report_init(&r);
	report_str(&r, "benchmark", "fastpf");
	report_u64(&r, "reps", reps);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);

	/*
	 * The headline is a VMM's memory (as in the seed: QEMU's RAM through
	 * get_user_pages): vmmu must fault it in through the kernel, which is
	 * what the slow path costs and the fast path avoids.  Memory vmmu
	 * allocated itself is faulted in by a plain touch, so its slow path is
	 * cheap; it is measured in the same run and reported as owned_*.
	 */
	vmm.embedder_mem = true;
	owned.embedder_mem = false;
	if (!fastpf_measure(&vmm, nr_vcpus, mem, reps, VMMU_VM_NO_FAST_PF, "slow", &e, err, sizeof(err)) ||
	    !fastpf_measure(&owned, nr_vcpus, mem, reps, VMMU_VM_NO_FAST_PF, "slow", &w, err, sizeof(err)))
		return report_finish(&r, o, false, err);
	/*
	 * Dirty logging by write protection (fast page fault on) against PML:
	 * ns per page re-dirtied after a harvest.  PML needs TDP with A/D, so
	 * the comparison is skipped (pml_supported false) where it has none.
	 */
	if (o->mmu == VMMU_MMU_TDP && !(o->vm_flags & VMMU_VM_AD_DISABLED)) {
		if (!fastpf_measure(&vmm, nr_vcpus, mem, reps, VMMU_VM_PML, "pml", &p, err, sizeof(err)))
			return report_finish(&r, o, false, err);
		report_bool(&r, "pml_supported", true);
		report_f(&r, "wrprot_ns_per_page", 1, p.fast);
		report_f(&r, "pml_ns_per_page", 1, p.slow);
		report_f(&r, "wrprot_pml_ratio", 3, p.fast / p.slow);
	} else {
		report_bool(&r, "pml_supported", false);
	}
	m_fast = e.fast;
	m_slow = e.slow;
	m_fmap = e.fmap;
	m_smap = e.smap;
	m_frac = e.frac;
	report_str(&r, "memory", "embedder");
	report_f(&r, "owned_fast_ns_per_fault", 1, w.fast);
	report_f(&r, "owned_slow_ns_per_fault", 1, w.slow);
	report_f(&r, "owned_speedup", 3, w.slow / w.fast);
	report_f(&r, "fast_ns_per_fault", 1, m_fast);
	report_f(&r, "slow_ns_per_fault", 1, m_slow);
	/* the seed reports the pass: its 532 ms -> 196 ms */
	report_f(&r, "fast_pass_ms", 3, m_fast * (double)pages / 1e6);
	report_f(&r, "slow_pass_ms", 3, m_slow * (double)pages / 1e6);
	report_f(&r, "speedup", 3, m_slow / m_fast);
	/* what the fault itself costs beyond the write through a mapped page */
	report_f(&r, "mapped_write_ns_per_page", 1, (m_fmap + m_smap) / 2);
	report_f(&r, "fast_fault_only_ns", 1, m_fast - m_fmap);
	report_f(&r, "slow_fault_only_ns", 1, m_slow - m_smap);
	report_f(&r, "fault_only_speedup", 3, (m_slow - m_smap) / (m_fast - m_fmap));
	report_f(&r, "fast_path_fraction", 3, m_frac);
	report_f(&r, "seed_speedup", 3, 532473698.0 / 195864447.0);
	report_f(&r, "target_speedup", 1, FASTPF_TARGET_SPEEDUP);
	report_bool(&r, "meets_speedup", m_slow / m_fast >= FASTPF_TARGET_SPEEDUP);
	return report_finish(&r, o, true, err);
}

/* ------------------------------------------------------------------------ */
/* Benchmark "dirtylog"                                                      */

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
		if (harvest_all(&env, bm, manual, what, &out->get[it], &out->clear[it], err, err_len))
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
	ok = !verify_memory(&env, seed + DIRTYLOG_ITERATIONS, what, err, err_len);
out:
	if (crew_up)
		crew_stop(&crew);
	if (env_check_bugged(&env, err, err_len))
		ok = false;
	env_destroy(&env);
	return ok ? 0 : -1;
}

int bench_dirtylog(const struct cli_opts *o)
{
	unsigned int nr_vcpus = o->vcpus_set ? o->vcpus : CLI_DEFAULT_VCPUS;
	unsigned int reps = dirty_reps(o), n_it = reps * DIRTYLOG_ITERATIONS, n_run = 2 * reps;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE, *bm;
	double *populate, *enable, *disable, *dirty, *get, *clear, *dget;
	double m_get, m_clear, m_dget;
	unsigned int i_run = 0, i_dirty = 0, i_get = 0, i_dget = 0;
	char err[256] = "";
	struct report r;
	bool ok = true;

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

	m_get = cli_median(get, i_get);
	m_clear = cli_median(clear, i_get);
	m_dget = cli_median(dget, i_dget);
	report_f(&r, "populate_ns_per_page", 1, cli_median(populate, i_run));
	report_f(&r, "enable_ms_per_gib", 3, cli_median(enable, i_run));
	report_f(&r, "dirty_ns_per_page", 1, cli_median(dirty, i_dirty));
	report_f(&r, "get_ms_per_gib", 3, m_get);
	report_f(&r, "clear_ms_per_gib", 3, m_clear);
	report_f(&r, "get_clear_ms_per_gib", 3, m_get + m_clear);
	report_f(&r, "default_get_ms_per_gib", 3, m_dget);
	report_f(&r, "disable_ms_per_gib", 3, cli_median(disable, i_run));
	report_f(&r, "target_get_clear_ms_per_gib", 3, DIRTYLOG_TARGET_GET_CLEAR);
	report_bool(&r, "meets_get_clear", m_get + m_clear <= DIRTYLOG_TARGET_GET_CLEAR);
	report_bool(&r, "meets_default_get", m_dget <= DIRTYLOG_TARGET_GET_CLEAR);
	free(populate);
	return report_finish(&r, o, true, err);
}
