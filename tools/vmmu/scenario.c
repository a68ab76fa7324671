// SPDX-License-Identifier: MIT
/*
 * `vmmu run`: scenarios that drive vCPUs through the MMU and check what the
 * guest and the host see. Also home of the VM setup and the vCPU thread crew
 * that the benchmarks reuse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>

#include "cli.h"

/* Enough to see a pattern in bad data without flooding the terminal. */
#define MAX_MISMATCH_REPORTS 8

/* ------------------------------------------------------------------------ */
/* VM environment                                                            */

int env_create(struct vm_env *env, const struct cli_opts *o, unsigned nr_vcpus,
	       uint64_t mem_bytes)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot;
	unsigned i;
	int rc;

	memset(env, 0, sizeof(*env));
	env->mem_bytes = mem_bytes;

	vmmu_vm_config_init(&cfg);
	cfg.mmu = o->mmu;
	cfg.tdp_format = o->tdp_format;
	cfg.flags |= o->vm_flags;
	cfg.max_vcpus = nr_vcpus;

	env->failed_call = "vmmu_vm_create";
	rc = vmmu_vm_create(&cfg, &env->vm);
	if (rc)
		goto fail;

	memset(&slot, 0, sizeof(slot));
	slot.slot = 0;
	slot.gpa = 0;
	slot.size = mem_bytes;
	slot.hva = NULL;
	if (o->embedder_mem) {
		/* As a VMM would: anonymous memory of the requested page size,
		 * aligned so huge pages line up with the guest's. */
		size_t align = o->host_page > CLI_PAGE_SIZE ? o->host_page : CLI_PAGE_SIZE;
		uint8_t *p;

		env->failed_call = "mmap of the guest RAM";
		env->own_len = mem_bytes + align;
		p = mmap(NULL, env->own_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
			 0);
		if (p == MAP_FAILED) {
			env->own_len = 0;
			rc = VMMU_ENOMEM;
			goto fail;
		}
		env->own_mem = p;
		p = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
		(void)madvise(p, mem_bytes, align > CLI_PAGE_SIZE ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		slot.hva = p;
	}
	slot.host_page_size = o->host_page;
	slot.backing = o->backing;
	env->failed_call = "vmmu_set_memslot";
	rc = vmmu_set_memslot(env->vm, &slot);
	if (rc)
		goto fail;

	env->failed_call = "vCPU allocation";
	env->vcpus = calloc(nr_vcpus, sizeof(*env->vcpus));
	if (!env->vcpus) {
		rc = VMMU_ENOMEM;
		goto fail;
	}
	env->failed_call = "vmmu_vcpu_create";
	for (i = 0; i < nr_vcpus; i++) {
		rc = vmmu_vcpu_create(env->vm, i, &env->vcpus[i]);
		if (rc)
			goto fail;
		env->nr_vcpus++;
	}
	env->failed_call = NULL;
	return 0;

fail:
	/* keep the name of the failed call for the caller's message */
	{
		const char *what = env->failed_call;

		env_destroy(env);
		env->failed_call = what;
	}
	return rc;
}

void env_destroy(struct vm_env *env)
{
	/* the VM owns its vCPUs */
	if (env->vm)
		vmmu_vm_destroy(env->vm);
	if (env->own_mem)
		munmap(env->own_mem, env->own_len);
	free(env->vcpus);
	memset(env, 0, sizeof(*env));
}

int env_check_bugged(struct vm_env *env, char *err, size_t err_len)
{
	const char *why = NULL;

	if (!vmmu_vm_bugged(env->vm, &why))
		return 0;
	if (!why)
		why = "(no reason given)";
	fprintf(stderr, "vmmu: the VM is bugged: %s\n", why);
	cli_set_error(err, err_len, "the VM is bugged: %s", why);
	return -1;
}

void env_sum_vcpu_stats(struct vm_env *env, struct vmmu_vcpu_stats *sum)
{
	unsigned i;

	memset(sum, 0, sizeof(*sum));
	for (i = 0; i < env->nr_vcpus; i++) {
		struct vmmu_vcpu_stats s;

		vmmu_vcpu_get_stats(env->vcpus[i], &s);
		sum->accesses += s.accesses;
		sum->tlb_hits += s.tlb_hits;
		sum->tlb_misses += s.tlb_misses;
		sum->exits += s.exits;
		sum->pf_taken += s.pf_taken;
		sum->pf_fixed += s.pf_fixed;
		sum->pf_spurious += s.pf_spurious;
		sum->pf_retry += s.pf_retry;
		sum->pf_emulate += s.pf_emulate;
		sum->pf_mmio_spte += s.pf_mmio_spte;
		sum->tlb_flushes += s.tlb_flushes;
		sum->mmu_reloads += s.mmu_reloads;
		sum->host_faultins += s.host_faultins;
	}
}

/*
 * The host view through vmmu_gpa_to_hva() must hold what the guest wrote:
 * this catches SPTEs pointing at the wrong host page, which a guest-side
 * read-back through the same wrong SPTE would miss.
 */
int env_verify_tokens(struct vm_env *env, uint64_t seed, uint64_t *mismatches)
{
	uint64_t gpa, bad = 0;

	for (gpa = 0; gpa < env->mem_bytes; gpa += CLI_PAGE_SIZE) {
		uint64_t want = cli_token(gpa, seed), got;
		void *hva;
		int rc;

		rc = vmmu_gpa_to_hva(env->vm, gpa, &hva);
		if (rc) {
			fprintf(stderr, "vmmu: vmmu_gpa_to_hva(0x%" PRIx64 "): %s\n", gpa,
				vmmu_strerror(rc));
			*mismatches = bad;
			return rc;
		}
		got = *(volatile uint64_t *)hva;
		if (got != want) {
			if (bad < MAX_MISMATCH_REPORTS)
				fprintf(stderr,
					"vmmu: verify: gpa 0x%" PRIx64 ": host sees 0x%016" PRIx64
					", guest wrote 0x%016" PRIx64 "\n", gpa, got, want);
			bad++;
		}
	}
	if (bad > MAX_MISMATCH_REPORTS)
		fprintf(stderr, "vmmu: verify: %" PRIu64 " mismatches in all\n", bad);
	*mismatches = bad;
	return 0;
}

/*
 * Populates every host page behind the slot before the guest runs, with a
 * value unlike the token so that the guest's later writes are still checked.
 */
int env_prepopulate(struct vm_env *env, uint64_t seed)
{
	uint8_t *base;
	uint64_t off;
	void *hva;
	int rc;

	rc = vmmu_memslot_hva(env->vm, 0, &hva);
	if (rc) {
		fprintf(stderr, "vmmu: vmmu_memslot_hva(0): %s\n", vmmu_strerror(rc));
		return rc;
	}
	base = hva;
	for (off = 0; off < env->mem_bytes; off += CLI_PAGE_SIZE)
		*(volatile uint64_t *)(base + off) = ~cli_token(off, seed);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* vCPU crew                                                                 */

void cli_describe_failure(char *buf, size_t len, int rc, const struct vmmu_exit *exit)
{
	if (rc < 0) {
		snprintf(buf, len, "error %d (%s)", rc, vmmu_strerror(rc));
		return;
	}
	if (rc != VMMU_EXIT) {
		snprintf(buf, len, "unexpected return value %d", rc);
		return;
	}
	switch (exit->reason) {
	case VMMU_EXIT_MMIO:
		snprintf(buf, len, "MMIO exit (%s of %u bytes at gpa 0x%" PRIx64 "%s)",
			 exit->u.mmio.is_write ? "write" : "read", exit->u.mmio.len,
			 exit->u.mmio.gpa,
			 exit->u.mmio.readonly_slot ? ", read-only slot" : "");
		break;
	case VMMU_EXIT_MEMORY_FAULT:
		snprintf(buf, len,
			 "memory fault exit (gpa 0x%" PRIx64 ", size 0x%" PRIx64 ": %s)",
			 exit->u.memory_fault.gpa, exit->u.memory_fault.size,
			 vmmu_strerror(exit->u.memory_fault.error));
		break;
	case VMMU_EXIT_INTERNAL_ERROR:
		snprintf(buf, len, "internal error exit (%s)",
			 vmmu_strerror(exit->u.internal.error));
		break;
	case VMMU_EXIT_NONE:
		snprintf(buf, len, "exit without a reason");
		break;
	default:
		snprintf(buf, len, "exit with unknown reason %u", exit->reason);
		break;
	}
}

static void worker_fail(struct crew_worker *w, int rc, uint64_t gpa, bool is_write,
			const struct vmmu_exit *exit)
{
	w->err = rc;
	w->err_gpa = gpa;
	w->err_is_write = is_write;
	if (rc == VMMU_EXIT)
		w->exit = *exit;
}

static void worker_mismatch(struct crew_worker *w, uint64_t gpa, uint64_t want, uint64_t got)
{
	if (!w->mismatches++) {
		w->bad_gpa = gpa;
		w->bad_expected = want;
		w->bad_got = got;
	}
}

/*
 * The hot loops: nothing but the access and the token, so that the per-page
 * numbers are the MMU's and not the tool's.
 */
static void vcpu_write_pass(struct crew_worker *w, uint64_t seed)
{
	struct vmmu_exit exit;
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t val = cli_token(gpa, seed);
		int rc;

		rc = vmmu_vcpu_access(w->vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_WRITE, &exit);
		if (rc) {
			worker_fail(w, rc, gpa, true, &exit);
			return;
		}
	}
}

/*
 * Retouch = touch every page again and verify what the first touch wrote: one
 * guest read per page, through the TLB and the SPTE tables built by the first
 * touch.  The host baseline does the same single read per page.
 */
static void vcpu_retouch_pass(struct crew_worker *w, uint64_t seed)
{
	struct vmmu_exit exit;
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t want = cli_token(gpa, seed), val = ~want;
		int rc;

		rc = vmmu_vcpu_access(w->vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_READ, &exit);
		if (rc) {
			worker_fail(w, rc, gpa, false, &exit);
			return;
		}
		if (val != want)
			worker_mismatch(w, gpa, want, val);
	}
}

static void host_write_pass(struct crew_worker *w, uint8_t *base, uint64_t seed)
{
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE)
		*(volatile uint64_t *)(base + gpa) = cli_token(gpa, seed);
}

static void host_retouch_pass(struct crew_worker *w, uint8_t *base, uint64_t seed)
{
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		volatile uint64_t *p = (volatile uint64_t *)(base + gpa);
		uint64_t want = cli_token(gpa, seed), val = *p;

		if (val != want)
			worker_mismatch(w, gpa, want, val);
	}
}

/* Waits until crew_start() has created every thread; false if it gave up. */
static bool crew_wait_go(struct crew *c)
{
	int state;

	pthread_mutex_lock(&c->lock);
	while (!c->state)
		pthread_cond_wait(&c->cond, &c->lock);
	state = c->state;
	pthread_mutex_unlock(&c->lock);
	return state > 0;
}

static void *crew_thread(void *arg)
{
	struct crew_worker *w = arg;
	struct crew *c = w->crew;

	if (!crew_wait_go(c))
		return NULL;
	for (;;) {
		enum crew_op op;

		pthread_barrier_wait(&c->start);
		w->t_start = cli_now_ns();
		op = c->op;
		if (op == CREW_OP_EXIT)
			break;
		w->mismatches = 0;
		w->err = 0;
		switch (op) {
		case CREW_OP_VCPU_WRITE:
			vcpu_write_pass(w, c->seed);
			break;
		case CREW_OP_VCPU_RETOUCH:
			vcpu_retouch_pass(w, c->seed);
			break;
		case CREW_OP_HOST_WRITE:
			host_write_pass(w, c->host_base, c->seed);
			break;
		case CREW_OP_HOST_RETOUCH:
			host_retouch_pass(w, c->host_base, c->seed);
			break;
		case CREW_OP_EXIT:
			break;
		}
		w->t_end = cli_now_ns();
		pthread_barrier_wait(&c->done);
	}
	return NULL;
}

static void crew_set_state(struct crew *c, int state)
{
	pthread_mutex_lock(&c->lock);
	c->state = state;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

int crew_start(struct crew *c, unsigned n, vmmu_vcpu **vcpus, uint8_t *host_base,
	       uint64_t mem_bytes, uint64_t seed)
{
	uint64_t pages = mem_bytes / CLI_PAGE_SIZE;
	unsigned i, created;
	int err = 0;

	memset(c, 0, sizeof(*c));
	c->n = n;
	c->host_base = host_base;
	c->seed = seed;
	c->w = calloc(n, sizeof(*c->w));
	if (!c->w) {
		fprintf(stderr, "vmmu: out of memory for %u worker threads\n", n);
		return -1;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	/* the main thread takes part in both barriers to hand out phases */
	pthread_barrier_init(&c->start, NULL, n + 1);
	pthread_barrier_init(&c->done, NULL, n + 1);

	for (i = 0; i < n; i++) {
		struct crew_worker *w = &c->w[i];

		w->crew = c;
		w->idx = i;
		w->vcpu = vcpus ? vcpus[i] : NULL;
		/* contiguous, disjoint parts; sizes differ by at most one page */
		w->begin = pages * i / n * CLI_PAGE_SIZE;
		w->end = pages * (i + 1) / n * CLI_PAGE_SIZE;
	}

	for (created = 0; created < n; created++) {
		err = pthread_create(&c->w[created].thread, NULL, crew_thread, &c->w[created]);
		if (err)
			break;
	}
	if (created < n) {
		fprintf(stderr, "vmmu: cannot create vCPU thread %u: %s\n", created,
			strerror(err));
		/* the threads already running have not reached a barrier yet */
		crew_set_state(c, -1);
		for (i = 0; i < created; i++)
			pthread_join(c->w[i].thread, NULL);
		pthread_barrier_destroy(&c->start);
		pthread_barrier_destroy(&c->done);
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->lock);
		free(c->w);
		c->w = NULL;
		return -1;
	}
	crew_set_state(c, 1);
	return 0;
}

/*
 * Runs one phase on every worker. Returns 0 when every access completed and
 * every value read back was right, 1 otherwise (after saying why on stderr).
 */
int crew_run(struct crew *c, enum crew_op op, const char *phase, struct phase_result *res)
{
	uint64_t t_first = UINT64_MAX, t_last = 0;
	unsigned i, reported = 0;
	char why[256];

	memset(res, 0, sizeof(*res));
	c->op = op;
	pthread_barrier_wait(&c->start);
	pthread_barrier_wait(&c->done);

	for (i = 0; i < c->n; i++) {
		struct crew_worker *w = &c->w[i];

		if (w->t_start < t_first)
			t_first = w->t_start;
		if (w->t_end > t_last)
			t_last = w->t_end;
		res->pages += (w->end - w->begin) / CLI_PAGE_SIZE;
		res->mismatches += w->mismatches;
		if (w->mismatches && reported++ < MAX_MISMATCH_REPORTS)
			fprintf(stderr,
				"vmmu: %s: thread %u: gpa 0x%" PRIx64 " read 0x%016" PRIx64
				", expected 0x%016" PRIx64 " (%" PRIu64 " bad in its part)\n",
				phase, i, w->bad_gpa, w->bad_got, w->bad_expected, w->mismatches);
		if (w->err) {
			res->failed++;
			cli_describe_failure(why, sizeof(why), w->err, &w->exit);
			fprintf(stderr, "vmmu: %s: vCPU %u: %s of gpa 0x%" PRIx64 ": %s\n",
				phase, i, w->err_is_write ? "write" : "read", w->err_gpa, why);
			cli_set_error(res->error, sizeof(res->error),
				      "%s: vCPU %u: %s of gpa 0x%" PRIx64 ": %s", phase, i,
				      w->err_is_write ? "write" : "read", w->err_gpa, why);
		}
	}
	if (res->mismatches)
		cli_set_error(res->error, sizeof(res->error),
			      "%s: %" PRIu64 " pages read back wrong data", phase,
			      res->mismatches);
	res->ns = t_last > t_first ? t_last - t_first : 0;
	return res->failed || res->mismatches ? 1 : 0;
}

void crew_stop(struct crew *c)
{
	unsigned i;

	if (!c->w)
		return;
	c->op = CREW_OP_EXIT;
	pthread_barrier_wait(&c->start);
	for (i = 0; i < c->n; i++)
		pthread_join(c->w[i].thread, NULL);
	pthread_barrier_destroy(&c->start);
	pthread_barrier_destroy(&c->done);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->w);
	c->w = NULL;
}

/* ------------------------------------------------------------------------ */
/* Scenario "demand"                                                         */

struct demand_phase {
	const char *name;
	bool ran;
	uint64_t ns;
};

static double ms_of(uint64_t ns)
{
	return ns / 1e6;
}

static double per_page(uint64_t ns, uint64_t pages)
{
	return pages ? (double)ns / pages : 0.0;
}

static void print_human_size(FILE *f, uint64_t bytes)
{
	if (!(bytes % CLI_SIZE_1G))
		fprintf(f, "%" PRIu64 " GiB", bytes / CLI_SIZE_1G);
	else if (!(bytes % (UINT64_C(1) << 20)))
		fprintf(f, "%" PRIu64 " MiB", bytes >> 20);
	else if (!(bytes % 1024))
		fprintf(f, "%" PRIu64 " KiB", bytes >> 10);
	else
		fprintf(f, "%" PRIu64 " bytes", bytes);
}

static void demand_print_text(const struct cli_opts *o, const struct demand_phase *ph,
			      unsigned nr_phases, uint64_t pages,
			      const struct vmmu_vcpu_stats *vs, const struct vmmu_vm_stats *ms,
			      bool have_stats, uint64_t mismatches, bool ok, const char *error)
{
	FILE *f = stdout;
	unsigned i;

	fprintf(f, "scenario     demand\n");
	fprintf(f, "vcpus        %u\n", o->vcpus);
	fprintf(f, "memory       ");
	print_human_size(f, o->mem_bytes);
	fprintf(f, " (%" PRIu64 " pages of 4 KiB)\n", pages);
	fprintf(f, "config       %s%s, host page %s, backing %s, A/D %s, hugepages %s, seed 0x%"
		PRIx64 "\n", o->mmu == VMMU_MMU_SHADOW ? "shadow paging" : "tdp ",
		o->mmu == VMMU_MMU_SHADOW ? "" : cli_tdp_name(o->tdp_format), cli_host_page_name(o->host_page),
		cli_backing_name(o->backing), o->vm_flags & VMMU_VM_AD_DISABLED ? "off" : "on",
		o->vm_flags & VMMU_VM_NO_HUGEPAGES ? "off" : "on", o->seed);

	fprintf(f, "\n%-14s %12s %12s\n", "phase", "total ms", "ns/page");
	for (i = 0; i < nr_phases; i++) {
		if (ph[i].ran)
			fprintf(f, "%-14s %12.3f %12.1f\n", ph[i].name, ms_of(ph[i].ns),
				per_page(ph[i].ns, pages));
		else
			fprintf(f, "%-14s %12s %12s\n", ph[i].name, "-", "-");
	}

	if (have_stats) {
		fprintf(f, "\n%-20s %14s    %s\n", "vcpu stats (sum)", "", "vm stats");
		fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n",
			"pf_taken", vs->pf_taken, "pages_4k", ms->pages_4k);
		fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n",
			"pf_fixed", vs->pf_fixed, "pages_2m", ms->pages_2m);
		fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n",
			"pf_spurious", vs->pf_spurious, "pages_1g", ms->pages_1g);
		fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n",
			"pf_retry", vs->pf_retry, "pt_pages", ms->pt_pages);
		fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n",
			"tlb_misses", vs->tlb_misses, "remote_tlb_flushes",
			ms->remote_tlb_flushes);
		fprintf(f, "%-20s %14" PRIu64 "\n", "exits", vs->exits);
	}

	fprintf(f, "\n%-14s %" PRIu64 "\n", "mismatches", mismatches);
	if (error)
		fprintf(f, "%-14s %s\n", "error", error);
	fprintf(f, "%-14s %s\n", "result", ok ? "OK" : "FAILED");
}

/*
 * Each vCPU demand-faults its own part of RAM, then reads back and verifies
 * it, then the host checks every page: the basic promise of the MMU, under
 * parallel faults when there are several vCPUs.
 */
static int scenario_demand(const struct cli_opts *o)
{
	struct demand_phase ph[3] = {
		{ .name = "first_touch" },
		{ .name = "retouch" },
		{ .name = "verify" },
	};
	uint64_t pages = o->mem_bytes / CLI_PAGE_SIZE, mismatches = 0;
	struct vmmu_vcpu_stats vs;
	struct vmmu_vm_stats ms;
	struct phase_result res;
	bool ok = true, have_stats = false;
	char error[200] = "";
	struct report r;
	struct vm_env env;
	struct crew crew;
	int rc;

	memset(&vs, 0, sizeof(vs));
	memset(&ms, 0, sizeof(ms));

	rc = env_create(&env, o, o->vcpus, o->mem_bytes);
	if (rc) {
		snprintf(error, sizeof(error), "%s: %s", env.failed_call, vmmu_strerror(rc));
		fprintf(stderr, "vmmu: %s\n", error);
		ok = false;
		goto report;
	}
	if (crew_start(&crew, env.nr_vcpus, env.vcpus, NULL, env.mem_bytes, o->seed)) {
		snprintf(error, sizeof(error), "cannot start the vCPU threads");
		ok = false;
		goto destroy;
	}

	/* a failed phase leaves later phases nothing meaningful to check */
	if (crew_run(&crew, CREW_OP_VCPU_WRITE, "first_touch", &res)) {
		cli_set_error(error, sizeof(error), "%s", res.error);
		ok = false;
	}
	ph[0].ran = true;
	ph[0].ns = res.ns;
	if (ok) {
		if (crew_run(&crew, CREW_OP_VCPU_RETOUCH, "retouch", &res)) {
			cli_set_error(error, sizeof(error), "%s", res.error);
			ok = false;
		}
		ph[1].ran = true;
		ph[1].ns = res.ns;
		mismatches += res.mismatches;
	}
	crew_stop(&crew);

	if (ok) {
		uint64_t t0 = cli_now_ns(), bad = 0;

		rc = env_verify_tokens(&env, o->seed, &bad);
		ph[2].ns = cli_now_ns() - t0;
		ph[2].ran = !rc;
		mismatches += bad;
		if (rc)
			cli_set_error(error, sizeof(error), "verify: vmmu_gpa_to_hva: %s",
				      vmmu_strerror(rc));
		else if (bad)
			cli_set_error(error, sizeof(error),
				      "verify: host view differs from what the guest wrote in %"
				      PRIu64 " pages", bad);
		if (rc || bad)
			ok = false;
	}

	env_sum_vcpu_stats(&env, &vs);
	vmmu_vm_get_stats(env.vm, &ms);
	have_stats = true;
	/* checked even after a failure: a bugged VM explains most of them */
	if (env_check_bugged(&env, error, sizeof(error)))
		ok = false;

	if (ok) {
		/*
		 * Nothing was zapped, so the leaf SPTEs must cover the slot
		 * exactly once; anything else is lost or doubled mappings.
		 */
		uint64_t mapped = ms.pages_4k * CLI_PAGE_SIZE + ms.pages_2m * CLI_SIZE_2M +
				  ms.pages_1g * CLI_SIZE_1G;

		if (mapped != o->mem_bytes) {
			fprintf(stderr,
				"vmmu: leaf SPTEs map %" PRIu64 " bytes after touching all %" PRIu64
				" bytes of RAM (4k %" PRIu64 ", 2m %" PRIu64 ", 1g %" PRIu64 ")\n",
				mapped, o->mem_bytes, ms.pages_4k, ms.pages_2m, ms.pages_1g);
			cli_set_error(error, sizeof(error),
				      "leaf SPTEs map %" PRIu64 " of %" PRIu64 " bytes of RAM",
				      mapped, o->mem_bytes);
			ok = false;
		}
	}
	if (!ok)
		cli_set_error(error, sizeof(error), "a check failed (see stderr)");

destroy:
	env_destroy(&env);
report:
	if (!o->json) {
		demand_print_text(o, ph, 3, pages, &vs, &ms, have_stats, mismatches, ok,
				  error[0] ? error : NULL);
		return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	}

	report_init(&r);
	report_str(&r, "scenario", "demand");
	report_config(&r, o, o->vcpus, o->mem_bytes);
	report_u64(&r, "pages", pages);
	if (ph[0].ran) {
		report_f(&r, "first_touch_ms", 3, ms_of(ph[0].ns));
		report_f(&r, "first_touch_ns_per_page", 1, per_page(ph[0].ns, pages));
	} else {
		report_null(&r, "first_touch_ms");
		report_null(&r, "first_touch_ns_per_page");
	}
	if (ph[1].ran) {
		report_f(&r, "retouch_ms", 3, ms_of(ph[1].ns));
		report_f(&r, "retouch_ns_per_page", 1, per_page(ph[1].ns, pages));
	} else {
		report_null(&r, "retouch_ms");
		report_null(&r, "retouch_ns_per_page");
	}
	if (ph[2].ran)
		report_f(&r, "verify_ms", 3, ms_of(ph[2].ns));
	else
		report_null(&r, "verify_ms");
	report_u64(&r, "mismatches", mismatches);
	if (have_stats) {
		report_u64(&r, "pf_taken", vs.pf_taken);
		report_u64(&r, "pf_fixed", vs.pf_fixed);
		report_u64(&r, "pf_spurious", vs.pf_spurious);
		report_u64(&r, "pf_retry", vs.pf_retry);
		report_u64(&r, "tlb_misses", vs.tlb_misses);
		report_u64(&r, "exits", vs.exits);
		report_u64(&r, "pages_4k", ms.pages_4k);
		report_u64(&r, "pages_2m", ms.pages_2m);
		report_u64(&r, "pages_1g", ms.pages_1g);
		report_u64(&r, "pt_pages", ms.pt_pages);
		report_u64(&r, "remote_tlb_flushes", ms.remote_tlb_flushes);
	}
	if (error[0])
		report_str(&r, "error", error);
	report_bool(&r, "ok", ok);
	report_print_json(&r, stdout);
	return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Registry                                                                  */

struct scenario {
	const char *name;
	const char *desc;
	int (*run)(const struct cli_opts *o);
};

static const struct scenario scenarios[] = {
	{ "demand", "vCPUs fault in disjoint parts of RAM, then reread and verify them",
	  scenario_demand },
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
