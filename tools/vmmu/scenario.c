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
#include "guest.h"

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
	if (o->tdp_levels)
		cfg.tdp_levels = o->tdp_levels;
	if (o->maxphyaddr)
		cfg.maxphyaddr = o->maxphyaddr;

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
		sum->pf_fast_fixed += s.pf_fast_fixed;
		sum->pf_fast_spurious += s.pf_fast_spurious;
		sum->pf_fast_failed += s.pf_fast_failed;
		sum->mmu_ctx_rebuilds += s.mmu_ctx_rebuilds;
		sum->root_fast_switches += s.root_fast_switches;
		sum->root_slow_switches += s.root_slow_switches;
		sum->guest_faults += s.guest_faults;
		sum->pt_write_emulations += s.pt_write_emulations;
		sum->unsync_syncs += s.unsync_syncs;
	}
}

/* The vCPU counters every scenario reports. */
static void report_fault_stats(struct report *r, const struct vmmu_vcpu_stats *vs)
{
	report_u64(r, "pf_taken", vs->pf_taken);
	report_u64(r, "pf_fixed", vs->pf_fixed);
	report_u64(r, "pf_spurious", vs->pf_spurious);
	report_u64(r, "pf_retry", vs->pf_retry);
	report_u64(r, "tlb_misses", vs->tlb_misses);
	report_u64(r, "exits", vs->exits);
}

/* What a verify phase's outcome means for the report: false when it failed. */
static bool verify_result(int rc, uint64_t bad, char *error, size_t len)
{
	if (rc)
		cli_set_error(error, len, "verify: vmmu_gpa_to_hva: %s", vmmu_strerror(rc));
	else if (bad)
		cli_set_error(error, len, "verify: host view differs from what the guest wrote in %" PRIu64 " pages",
			      bad);
	return !rc && !bad;
}

/* The host's view of one guest page: does it hold the token the guest wrote?
 * Mismatches are counted in *bad (the first few printed). */
static int verify_host_token(vmmu_vm *vm, uint64_t gpa, uint64_t seed, uint64_t *bad)
{
	uint64_t want = cli_token(gpa, seed), got;
	void *hva;
	int rc = vmmu_gpa_to_hva(vm, gpa, &hva);

	if (rc) {
		fprintf(stderr, "vmmu: vmmu_gpa_to_hva(0x%" PRIx64 "): %s\n", gpa, vmmu_strerror(rc));
		return rc;
	}
	got = *(volatile uint64_t *)hva;
	if (got != want) {
		if (*bad < MAX_MISMATCH_REPORTS)
			fprintf(stderr,
				"vmmu: verify: gpa 0x%" PRIx64 ": host sees 0x%016" PRIx64 ", guest wrote 0x%016" PRIx64
				"\n", gpa, got, want);
		(*bad)++;
	}
	return 0;
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
		int rc = verify_host_token(env->vm, gpa, seed, &bad);

		if (rc) {
			*mismatches = bad;
			return rc;
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
	case VMMU_EXIT_GUEST_FAULT:
		if (exit->u.guest_fault.vector == 14)
			snprintf(buf, len, "guest #PF (error code 0x%x, CR2 0x%" PRIx64 ")",
				 exit->u.guest_fault.error_code, exit->u.guest_fault.addr);
		else
			snprintf(buf, len, "guest fault, vector %u", exit->u.guest_fault.vector);
		break;
	case VMMU_EXIT_DIRTY_RING_FULL:
		snprintf(buf, len, "dirty ring full exit");
		break;
	case VMMU_EXIT_RETRY:
		snprintf(buf, len, "retry exit (gpa 0x%" PRIx64 ", %s)", exit->u.retry.gpa,
			 exit->u.retry.cause == VMMU_RETRY_MEMSLOT ? "memslot being changed"
			 : exit->u.retry.cause == VMMU_RETRY_SELF ? "invalidation open on this thread"
								  : "invalidation open");
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
		w->err_call = NULL;
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
		case CREW_OP_CALL:
			c->call(w);
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
	c->addr_name = "gpa";
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
				"vmmu: %s: thread %u: %s 0x%" PRIx64 " read 0x%016" PRIx64
				", expected 0x%016" PRIx64 " (%" PRIu64 " bad in its part)\n",
				phase, i, c->addr_name, w->bad_gpa, w->bad_got, w->bad_expected,
				w->mismatches);
		if (w->err && w->err_call) {
			res->failed++;
			cli_describe_failure(why, sizeof(why), w->err, &w->exit);
			fprintf(stderr, "vmmu: %s: vCPU %u: %s: %s\n", phase, i, w->err_call, why);
			cli_set_error(res->error, sizeof(res->error), "%s: vCPU %u: %s: %s", phase, i,
				      w->err_call, why);
		} else if (w->err) {
			res->failed++;
			cli_describe_failure(why, sizeof(why), w->err, &w->exit);
			fprintf(stderr, "vmmu: %s: vCPU %u: %s of %s 0x%" PRIx64 ": %s\n",
				phase, i, w->err_is_write ? "write" : "read", c->addr_name,
				w->err_gpa, why);
			cli_set_error(res->error, sizeof(res->error),
				      "%s: vCPU %u: %s of %s 0x%" PRIx64 ": %s", phase, i,
				      w->err_is_write ? "write" : "read", c->addr_name, w->err_gpa,
				      why);
		}
	}
	if (res->mismatches)
		cli_set_error(res->error, sizeof(res->error),
			      "%s: %" PRIu64 " pages read back wrong data", phase,
			      res->mismatches);
	res->ns = t_last > t_first ? t_last - t_first : 0;
	return res->failed || res->mismatches ? 1 : 0;
}

/* Runs call on every worker's thread as one phase, with crew_run()'s checks. */
int crew_run_call(struct crew *c, void (*call)(struct crew_worker *w), const char *phase,
		  struct phase_result *res)
{
	/* published to the workers by the start barrier */
	c->call = call;
	return crew_run(c, CREW_OP_CALL, phase, res);
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

static void print_config_line(FILE *f, const struct cli_opts *o)
{
	fprintf(f, "config       ");
	if (o->mmu == VMMU_MMU_SHADOW)
		fprintf(f, "shadow paging");
	else if (o->tdp_levels)
		fprintf(f, "tdp %s %u-level", cli_tdp_name(o->tdp_format), o->tdp_levels);
	else
		fprintf(f, "tdp %s", cli_tdp_name(o->tdp_format));
	fprintf(f, ", host page %s, backing %s, A/D %s, hugepages %s, seed 0x%" PRIx64 "\n",
		cli_host_page_name(o->host_page), cli_backing_name(o->backing),
		o->vm_flags & VMMU_VM_AD_DISABLED ? "off" : "on",
		o->vm_flags & VMMU_VM_NO_HUGEPAGES ? "off" : "on", o->seed);
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
	print_config_line(f, o);

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
		if (!verify_result(rc, bad, error, sizeof(error)))
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
		report_fault_stats(&r, &vs);
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
/* Scenario "paging"                                                         */

/*
 * Guest paging on, each vCPU in address spaces of its own, as processes on
 * different CPUs would be.  vCPU i's share of RAM holds its data pages and,
 * at its end, the pools of its two page-table hierarchies, A and B.  Both
 * map all of its data at the same high gvas, so that a gva taken for a gpa
 * by mistake lands outside RAM:
 *   A: the first quarter of the share in guest huge pages (2M; 4M in 32-bit
 *      paging), the rest in 4K pages, gva page p on data frame p;
 *   B: the same pages rotated by half of each part, so that each page reads
 *      another frame through B than through A.
 * Every data frame holds cli_token(its gpa): a read tells which frame the
 * MMU used, not just that the access went through.  A page's gva and gpa
 * differ by an odd multiple of 2M (modulo 4M), so that in a TLB indexed by
 * low address bits the entries the remap must drop do not share slots with
 * the entries of the frames it moves them to: a collision would evict the
 * stale entry and hide a missed INVLPG.
 *
 * The vCPU writes its tables itself (guest_pt_set_vcpu()), as a guest kernel
 * does: shadow paging has to see the remap's stores to keep its shadow
 * tables right, and TDP has to map the tables' pages to walk them.
 */

#define PG_HUGE_SHARE		4u	/* 1/4 of each share in guest huge pages */
#define PG_REMAP_STRIDE		16u	/* of every 16 pages, the first two trade frames */
#define PG_ROUND_TRIPS		2u	/* CR3 to B then back to A, reading every page each time */
/* Linux's vmalloc areas: kernel-half addresses far above any gpa */
#define PG_GVA_4LEVEL		UINT64_C(0xffffc90000000000)
#define PG_GVA_5LEVEL		UINT64_C(0xffa0000000000000)
/* 32-bit and PAE: a 3G/1G kernel's split, lowered when the data is larger */
#define PG_GVA_32		UINT64_C(0xc0000000)
#define PG_SIZE_4G		(UINT64_C(1) << 32)
#define PG_SIZE_4M		(UINT64_C(4) << 20)

struct pg_scen;

struct pg_vcpu {
	const struct pg_scen *s;
	vmmu_vcpu *vcpu;
	struct guest_pt *pt[2];		/* address spaces A and B */
	uint64_t cr3[2];
	uint64_t data_gpa;		/* the share's start: huge part, then 4K part */
	uint64_t gva_huge, gva_small;	/* where both address spaces map each part */
	uint64_t huge_pages;		/* guest huge pages of the huge part */
	uint64_t small_pages;		/* 4K pages of the 4K part */
	uint64_t pages;			/* 4K pages of data, both parts */
	uint64_t pool_gpa, pool_bytes;	/* space a's pool: pool_gpa + a * pool_bytes */
	bool remapped;			/* A's frame swaps are in place */
	uint64_t phase_pages;		/* 4K pages the last phase went through */
};

struct pg_scen {
	vmmu_vm *vm;
	enum guest_mode mode;
	uint64_t huge;			/* guest huge page size */
	uint64_t gva;			/* the data's gvas start in [gva, gva + 4M) */
	uint64_t flags;			/* of the data leaves */
	uint64_t seed;
	unsigned n;
	struct pg_vcpu *v;
};

static const char *pg_mode_name(enum guest_mode mode)
{
	switch (mode) {
	case GUEST_MODE_32:
		return "32";
	case GUEST_MODE_PAE:
		return "pae";
	case GUEST_MODE_5LEVEL:
		return "5level";
	case GUEST_MODE_4LEVEL:
		break;
	}
	return "4level";
}

/* A's index i after the remap: the first two of every stride trade places. */
static uint64_t pg_swap(uint64_t i, uint64_t n)
{
	return i % PG_REMAP_STRIDE < 2 && (i | 1) < n ? i ^ 1 : i;
}

/* The data frame (a 4K index into the share) of page p of address space a. */
static uint64_t pg_frame(const struct pg_vcpu *v, unsigned a, uint64_t p)
{
	uint64_t hp = v->s->huge / CLI_PAGE_SIZE, nh = v->huge_pages * hp, i, n;

	if (p < nh) {
		i = p / hp;
		n = v->huge_pages;
		i = a ? (i + n / 2) % n : v->remapped ? pg_swap(i, n) : i;
		return i * hp + p % hp;
	}
	i = p - nh;
	n = v->small_pages;
	i = a ? (i + n / 2) % n : v->remapped ? pg_swap(i, n) : i;
	return nh + i;
}

static uint64_t pg_gva(const struct pg_vcpu *v, uint64_t p)
{
	uint64_t nh = v->huge_pages * (v->s->huge / CLI_PAGE_SIZE);

	if (p < nh)
		return v->gva_huge + p * CLI_PAGE_SIZE;
	return v->gva_small + (p - nh) * CLI_PAGE_SIZE;
}

static uint64_t pg_gpa(const struct pg_vcpu *v, uint64_t frame)
{
	return v->data_gpa + frame * CLI_PAGE_SIZE;
}

/* n pages of size at gva on the frames at gpa, page i on frame (i + rot) % n. */
static int pg_map_rotated(struct guest_pt *pt, uint64_t gva, uint64_t gpa, uint64_t n, uint64_t rot,
			  uint64_t size, uint64_t flags)
{
	int rc = 0;

	if (n > rot)
		rc = guest_map(pt, gva, gpa + rot * size, (n - rot) * size, size, flags);
	if (!rc && rot)
		rc = guest_map(pt, gva + (n - rot) * size, gpa, rot * size, size, flags);
	return rc;
}

/* A call other than an access failed on the worker's thread. */
static void pg_call_failed(struct crew_worker *w, const char *call, int rc)
{
	w->err = rc;
	w->err_call = call;
}

/*
 * Both hierarchies built by guest stores while paging is still off, then
 * paging on with A.  Nothing is shadowed yet, so this is the cost of the
 * stores themselves (and, under TDP, of mapping the pools).
 */
static void pg_build(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	const struct pg_scen *s = v->s;
	uint64_t huge_bytes = v->huge_pages * s->huge;
	struct vmmu_cpu_state st;
	unsigned a;
	int rc;

	v->phase_pages = 0;
	for (a = 0; a < 2; a++) {
		rc = guest_pt_create(s->vm, s->mode, v->pool_gpa + a * v->pool_bytes, v->pool_bytes,
				     &v->pt[a]);
		if (rc) {
			pg_call_failed(w, "guest_pt_create", rc);
			return;
		}
		guest_pt_set_vcpu(v->pt[a], v->vcpu);
		rc = pg_map_rotated(v->pt[a], v->gva_huge, v->data_gpa, v->huge_pages,
				    a ? v->huge_pages / 2 : 0, s->huge, s->flags);
		if (!rc)
			rc = pg_map_rotated(v->pt[a], v->gva_small, v->data_gpa + huge_bytes,
					    v->small_pages, a ? v->small_pages / 2 : 0, CLI_PAGE_SIZE,
					    s->flags);
		if (rc) {
			pg_call_failed(w, a ? "guest_map (address space B)" : "guest_map (address space A)",
				       rc);
			return;
		}
		v->cr3[a] = guest_pt_cr3(v->pt[a]);
		v->phase_pages += v->pages;
	}
	guest_pt_state(v->pt[0], &st, 0);
	rc = vmmu_vcpu_set_state(v->vcpu, &st);
	if (rc)
		pg_call_failed(w, "vmmu_vcpu_set_state (paging on)", rc);
}

static void pg_first_touch(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	struct vmmu_exit exit;
	uint64_t p;

	v->phase_pages = 0;
	for (p = 0; p < v->pages; p++) {
		uint64_t gva = pg_gva(v, p), val = cli_token(pg_gpa(v, pg_frame(v, 0, p)), v->s->seed);
		int rc;

		rc = vmmu_vcpu_access(v->vcpu, gva, &val, sizeof(val), VMMU_ACCESS_WRITE, &exit);
		if (rc) {
			worker_fail(w, rc, gva, true, &exit);
			return;
		}
	}
	v->phase_pages = v->pages;
}

/* Every page of address space a, which must be the current one, read and checked. */
static bool pg_read_pass(struct crew_worker *w, struct pg_vcpu *v, unsigned a)
{
	struct vmmu_exit exit;
	uint64_t p;

	for (p = 0; p < v->pages; p++) {
		uint64_t gva = pg_gva(v, p), want = cli_token(pg_gpa(v, pg_frame(v, a, p)), v->s->seed);
		uint64_t val = ~want;
		int rc;

		rc = vmmu_vcpu_access(v->vcpu, gva, &val, sizeof(val), VMMU_ACCESS_READ, &exit);
		if (rc) {
			worker_fail(w, rc, gva, false, &exit);
			return false;
		}
		if (val != want)
			worker_mismatch(w, gva, want, val);
	}
	v->phase_pages += v->pages;
	return true;
}

static void pg_retouch(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;

	v->phase_pages = 0;
	pg_read_pass(w, v, 0);
}

/*
 * Reads the 4K pages [gva, gva + 2 * size), the first half of which must
 * show the frames from gpa_lo on, the second those from gpa_hi on.
 */
static bool pg_check_pair(struct crew_worker *w, struct pg_vcpu *v, uint64_t gva, uint64_t size,
			  uint64_t gpa_lo, uint64_t gpa_hi)
{
	struct vmmu_exit exit;
	uint64_t off;
	int rc;

	for (off = 0; off < 2 * size; off += CLI_PAGE_SIZE) {
		uint64_t from = off < size ? gpa_lo + off : gpa_hi + off - size;
		uint64_t want = cli_token(from, v->s->seed), val = ~want;

		rc = vmmu_vcpu_access(v->vcpu, gva + off, &val, sizeof(val), VMMU_ACCESS_READ, &exit);
		if (rc) {
			worker_fail(w, rc, gva + off, false, &exit);
			return false;
		}
		if (val != want)
			worker_mismatch(w, gva + off, want, val);
	}
	return true;
}

/*
 * A's pages p and p + 1 (of size, p a 4K index) trade frames.  Both are read
 * first, so that their translations are cached (TLB, shadow or TDP entries:
 * the retouch's are long evicted from the TLB), then two guest stores,
 * INVLPG of both, and every 4K page of both must now read the other's frame:
 * a store the MMU missed or an INVLPG it ignored reads the old one.  One
 * INVLPG per huge page is enough: it drops every translation of the page it
 * hits, whatever size they were cached at (SDM 4.10.4.1), and Linux flushes
 * a huge mapping that way.
 */
static bool pg_swap_pair(struct crew_worker *w, struct pg_vcpu *v, uint64_t p, uint64_t size)
{
	const struct pg_scen *s = v->s;
	uint64_t gva = pg_gva(v, p), gpa = pg_gpa(v, p);
	int rc;

	if (!pg_check_pair(w, v, gva, size, gpa, gpa + size))
		return false;
	rc = guest_map(v->pt[0], gva, gpa + size, size, size, s->flags);
	if (!rc)
		rc = guest_map(v->pt[0], gva + size, gpa, size, size, s->flags);
	if (rc) {
		pg_call_failed(w, "guest_map (remap)", rc);
		return false;
	}
	vmmu_vcpu_invlpg(v->vcpu, gva);
	vmmu_vcpu_invlpg(v->vcpu, gva + size);
	if (!pg_check_pair(w, v, gva, size, gpa + size, gpa))
		return false;
	v->phase_pages += 2 * size / CLI_PAGE_SIZE;
	return true;
}

/* Before the remap A is the identity, which pg_swap_pair() relies on. */
static void pg_remap(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	uint64_t hp = v->s->huge / CLI_PAGE_SIZE, i;

	v->phase_pages = 0;
	for (i = 0; i + 1 < v->huge_pages; i += PG_REMAP_STRIDE)
		if (!pg_swap_pair(w, v, i * hp, v->s->huge))
			return;
	for (i = 0; i + 1 < v->small_pages; i += PG_REMAP_STRIDE)
		if (!pg_swap_pair(w, v, v->huge_pages * hp + i, CLI_PAGE_SIZE))
			return;
	v->remapped = true;
}

/*
 * MOV CR3 to B, every page read, back to A, every page read, twice.  Without
 * PCIDs each switch flushes the TLB, so every read walks: the first visit to
 * B builds its translations, the rest should find them (shadow paging keeps
 * A's root among the previous roots and then B's).
 */
static void pg_cr3_trips(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	unsigned t, k;
	int rc;

	v->phase_pages = 0;
	for (t = 0; t < PG_ROUND_TRIPS; t++) {
		for (k = 0; k < 2; k++) {
			unsigned a = !k;	/* B, then A */

			rc = vmmu_vcpu_write_cr3(v->vcpu, v->cr3[a]);
			if (rc) {
				pg_call_failed(w, a ? "MOV CR3 to B" : "MOV CR3 to A", rc);
				return;
			}
			if (!pg_read_pass(w, v, a))
				return;
		}
	}
}

/*
 * Splits RAM into one share per vCPU, in guest huge pages when there are
 * enough of them (so the huge part is aligned), and carves each share.
 * -1 when a share cannot hold its page tables and a page of data.
 */
static int pg_layout(struct pg_scen *s, uint64_t mem)
{
	uint64_t unit = mem / s->huge >= s->n ? s->huge : CLI_PAGE_SIZE, units = mem / unit;
	uint64_t epp = s->mode == GUEST_MODE_32 ? 1024 : 512, max_data = 0;
	unsigned i;

	for (i = 0; i < s->n; i++) {
		struct pg_vcpu *v = &s->v[i];
		uint64_t b = units * i / s->n * unit;
		uint64_t e = i + 1 == s->n ? mem : units * (i + 1) / s->n * unit;
		uint64_t rest, pool_pages;

		v->s = s;
		v->data_gpa = b;
		v->huge_pages = unit == s->huge ? (e - b) / s->huge / PG_HUGE_SHARE : 0;
		rest = (e - b - v->huge_pages * s->huge) / CLI_PAGE_SIZE;
		/*
		 * Per space: leaf tables for the 4K part, a directory per GiB
		 * and one for a straddle, the upper levels, PAE's four
		 * directories, with room to spare.  rest still counts the
		 * pools themselves, which only adds to the spare.
		 */
		pool_pages = (rest + epp - 1) / epp + 2 * ((e - b + CLI_SIZE_1G - 1) / CLI_SIZE_1G) + 16;
		if (rest <= 2 * pool_pages)
			return -1;
		v->small_pages = rest - 2 * pool_pages;
		v->pages = v->huge_pages * (s->huge / CLI_PAGE_SIZE) + v->small_pages;
		v->pool_bytes = pool_pages * CLI_PAGE_SIZE;
		v->pool_gpa = b + v->pages * CLI_PAGE_SIZE;
		if (v->pages * CLI_PAGE_SIZE > max_data)
			max_data = v->pages * CLI_PAGE_SIZE;
	}
	switch (s->mode) {
	case GUEST_MODE_4LEVEL:
		s->gva = PG_GVA_4LEVEL;
		break;
	case GUEST_MODE_5LEVEL:
		s->gva = PG_GVA_5LEVEL;
		break;
	case GUEST_MODE_32:
	case GUEST_MODE_PAE:
		/*
		 * 4 GiB of linear addresses: the data ends at the top at
		 * most, after the skew below (under 12M).
		 */
		max_data = (max_data + PG_SIZE_4M - 1) / PG_SIZE_4M * PG_SIZE_4M + 3 * PG_SIZE_4M;
		s->gva = PG_SIZE_4G - max_data < PG_GVA_32 ? PG_SIZE_4G - max_data : PG_GVA_32;
		break;
	}
	for (i = 0; i < s->n; i++) {
		struct pg_vcpu *v = &s->v[i];
		uint64_t huge_bytes = v->huge_pages * s->huge, gpa_small = v->data_gpa + huge_bytes;

		/*
		 * gva - gpa = 2M modulo 4M (see above), in a window starting
		 * at s->gva (4M aligned); 4M huge pages cannot take that skew
		 * and keep gva = gpa modulo 4M.  The 4K part starts past the
		 * huge one, however that one was placed.
		 */
		v->gva_huge = s->gva + ((v->data_gpa + (s->huge == CLI_SIZE_2M ? CLI_SIZE_2M : 0)) &
					(PG_SIZE_4M - 1));
		v->gva_small = s->gva + (huge_bytes + CLI_SIZE_2M + PG_SIZE_4M - 1) / PG_SIZE_4M * PG_SIZE_4M +
			       ((gpa_small + CLI_SIZE_2M) & (PG_SIZE_4M - 1));
	}
	return 0;
}

/* The host view of every data frame must hold the token the guest wrote. */
static int pg_verify_host(const struct pg_scen *s, uint64_t *mismatches)
{
	uint64_t bad = 0, f;
	unsigned i;

	for (i = 0; i < s->n; i++) {
		const struct pg_vcpu *v = &s->v[i];

		for (f = 0; f < v->pages; f++) {
			int rc = verify_host_token(s->vm, pg_gpa(v, f), s->seed, &bad);

			if (rc) {
				*mismatches = bad;
				return rc;
			}
		}
	}
	if (bad > MAX_MISMATCH_REPORTS)
		fprintf(stderr, "vmmu: verify: %" PRIu64 " mismatches in all\n", bad);
	*mismatches = bad;
	return 0;
}

/* The vCPU phases, in order; the report keys are literals, as it wants. */
static const struct pg_step {
	const char *name;
	void (*call)(struct crew_worker *w);
	const char *ms_key, *ns_key, *pf_key;
} pg_steps[] = {
	{ "build", pg_build, "build_ms", "build_ns_per_page", "build_pf_taken" },
	{ "first_touch", pg_first_touch, "first_touch_ms", "first_touch_ns_per_page",
	  "first_touch_pf_taken" },
	{ "retouch", pg_retouch, "retouch_ms", "retouch_ns_per_page", "retouch_pf_taken" },
	{ "remap", pg_remap, "remap_ms", "remap_ns_per_page", "remap_pf_taken" },
	{ "cr3_switch", pg_cr3_trips, "cr3_switch_ms", "cr3_switch_ns_per_page",
	  "cr3_switch_pf_taken" },
};

#define PG_NR_STEPS (sizeof(pg_steps) / sizeof(pg_steps[0]))

struct pg_phase {
	bool ran;
	uint64_t ns;
	uint64_t pages;		/* 4K pages gone through, all vCPUs */
	uint64_t pf_taken;
};

struct pg_totals {
	uint64_t pages, huge_pages4k, remapped;
};

static void pg_print_text(const struct cli_opts *o, const struct pg_scen *s, const struct pg_totals *t,
			  const struct pg_phase *ph, bool verify_ran, uint64_t verify_ns,
			  const struct vmmu_vcpu_stats *vs, const struct vmmu_vm_stats *ms, bool have_stats,
			  uint64_t mismatches, bool ok, const char *error)
{
	static const char *const mode_desc[] = {
		[GUEST_MODE_32] = "32-bit", [GUEST_MODE_PAE] = "PAE",
		[GUEST_MODE_4LEVEL] = "4-level", [GUEST_MODE_5LEVEL] = "5-level",
	};
	FILE *f = stdout;
	unsigned i;

	fprintf(f, "scenario     paging\n");
	fprintf(f, "vcpus        %u\n", o->vcpus);
	fprintf(f, "memory       ");
	print_human_size(f, o->mem_bytes);
	fprintf(f, " (%" PRIu64 " pages of 4 KiB)\n", o->mem_bytes / CLI_PAGE_SIZE);
	print_config_line(f, o);
	fprintf(f, "guest        %s paging, 2 address spaces per vCPU, data at gva 0x%" PRIx64 "+\n",
		mode_desc[s->mode], s->gva);
	fprintf(f, "data         %" PRIu64 " pages: %" PRIu64 " in %s guest pages, %" PRIu64
		" in 4K ones; %" PRIu64 " remapped\n", t->pages, t->huge_pages4k,
		s->huge == GUEST_PAGE_4M ? "4M" : "2M", t->pages - t->huge_pages4k, t->remapped);

	fprintf(f, "\n%-14s %12s %12s %12s %12s\n", "phase", "total ms", "pages", "ns/page", "pf_taken");
	for (i = 0; i < PG_NR_STEPS; i++) {
		if (ph[i].ran)
			fprintf(f, "%-14s %12.3f %12" PRIu64 " %12.1f %12" PRIu64 "\n", pg_steps[i].name,
				ms_of(ph[i].ns), ph[i].pages, per_page(ph[i].ns, ph[i].pages),
				ph[i].pf_taken);
		else
			fprintf(f, "%-14s %12s %12s %12s %12s\n", pg_steps[i].name, "-", "-", "-", "-");
	}
	if (verify_ran)
		fprintf(f, "%-14s %12.3f %12" PRIu64 " %12.1f %12s\n", "verify", ms_of(verify_ns), t->pages,
			per_page(verify_ns, t->pages), "-");
	else
		fprintf(f, "%-14s %12s %12s %12s %12s\n", "verify", "-", "-", "-", "-");

	if (have_stats) {
		const struct {
			const char *vk;
			uint64_t vv;
			const char *mk;
			uint64_t mv;
		} rows[] = {
			{ "pf_taken", vs->pf_taken, "pages_4k", ms->pages_4k },
			{ "pf_fixed", vs->pf_fixed, "pages_2m", ms->pages_2m },
			{ "pf_spurious", vs->pf_spurious, "pages_1g", ms->pages_1g },
			{ "pf_retry", vs->pf_retry, "pt_pages", ms->pt_pages },
			{ "tlb_misses", vs->tlb_misses, "remote_tlb_flushes", ms->remote_tlb_flushes },
			{ "exits", vs->exits, "shadow_pages", ms->shadow_pages },
			{ "guest_faults", vs->guest_faults, "shadow_pages_created", ms->shadow_pages_created },
			{ "pt_write_emulations", vs->pt_write_emulations, "shadow_pages_zapped",
			  ms->shadow_pages_zapped },
			{ "unsync_syncs", vs->unsync_syncs, "shadow_unsync_pages", ms->shadow_unsync_pages },
			{ "root_fast_switches", vs->root_fast_switches, "shadow_pte_writes",
			  ms->shadow_pte_writes },
			{ "root_slow_switches", vs->root_slow_switches, NULL, 0 },
			{ "mmu_ctx_rebuilds", vs->mmu_ctx_rebuilds, NULL, 0 },
			{ "tlb_flushes", vs->tlb_flushes, NULL, 0 },
		};

		fprintf(f, "\n%-20s %14s    %s\n", "vcpu stats (sum)", "", "vm stats");
		for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
			if (rows[i].mk)
				fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n", rows[i].vk,
					rows[i].vv, rows[i].mk, rows[i].mv);
			else
				fprintf(f, "%-20s %14" PRIu64 "\n", rows[i].vk, rows[i].vv);
		}
	}

	fprintf(f, "\n%-14s %" PRIu64 "\n", "mismatches", mismatches);
	if (error)
		fprintf(f, "%-14s %s\n", "error", error);
	fprintf(f, "%-14s %s\n", "result", ok ? "OK" : "FAILED");
}

/*
 * Each vCPU builds its address spaces, turns paging on, writes then reads
 * back every page through its gva, moves some pages to other frames with
 * guest stores + INVLPG, and goes back and forth between its two address
 * spaces; the host then checks every frame.  Every read is checked against
 * the frame the guest's tables say, under either MMU.
 */
static int scenario_paging(const struct cli_opts *o)
{
	struct pg_phase ph[PG_NR_STEPS];
	struct cli_opts eo = *o;
	struct pg_scen s;
	struct pg_totals t;
	struct vmmu_vcpu_stats vs;
	struct vmmu_vm_stats ms;
	struct phase_result res;
	uint64_t mismatches = 0, verify_ns = 0;
	bool ok = true, have_stats = false, verify_ran = false;
	char error[200] = "";
	struct report r;
	struct vm_env env;
	struct crew crew;
	unsigned i, k;
	int rc;

	memset(ph, 0, sizeof(ph));
	memset(&t, 0, sizeof(t));
	memset(&vs, 0, sizeof(vs));
	memset(&ms, 0, sizeof(ms));
	memset(&s, 0, sizeof(s));
	memset(&env, 0, sizeof(env));
	s.mode = (enum guest_mode)o->guest_mode;
	s.huge = s.mode == GUEST_MODE_32 ? GUEST_PAGE_4M : GUEST_PAGE_2M;
	/* no NX bit in 32-bit paging's entries */
	s.flags = s.mode == GUEST_MODE_32 ? GUEST_W : GUEST_W | GUEST_NX;
	s.seed = o->seed;
	s.n = o->vcpus;
	s.v = calloc(s.n, sizeof(*s.v));
	if (!s.v) {
		fprintf(stderr, "vmmu: out of memory for %u vCPUs\n", s.n);
		return CLI_EXIT_FAIL;
	}
	if (pg_layout(&s, o->mem_bytes)) {
		free(s.v);
		return cli_usage_error("--mem %llu bytes leaves some of the %u vCPUs no room for data "
				       "besides their page tables", (unsigned long long)o->mem_bytes,
				       o->vcpus);
	}
	for (i = 0; i < s.n; i++) {
		t.pages += s.v[i].pages;
		t.huge_pages4k += s.v[i].huge_pages * (s.huge / CLI_PAGE_SIZE);
	}
	/*
	 * vmmu_vcpu_set_state() refuses LA57 unless the TDP is 5-level, under
	 * shadow paging too (where tdp_levels otherwise means nothing); a
	 * 5-level machine has the 52-bit MAXPHYADDR to go with it.
	 */
	if (s.mode == GUEST_MODE_5LEVEL) {
		eo.tdp_levels = 5;
		eo.maxphyaddr = 52;
	}

	rc = env_create(&env, &eo, o->vcpus, o->mem_bytes);
	if (rc) {
		snprintf(error, sizeof(error), "%s: %s", env.failed_call, vmmu_strerror(rc));
		fprintf(stderr, "vmmu: %s\n", error);
		ok = false;
		goto report;
	}
	s.vm = env.vm;
	for (i = 0; i < s.n; i++)
		s.v[i].vcpu = env.vcpus[i];
	if (crew_start(&crew, env.nr_vcpus, env.vcpus, NULL, env.mem_bytes, o->seed)) {
		snprintf(error, sizeof(error), "cannot start the vCPU threads");
		ok = false;
		goto destroy;
	}
	crew.addr_name = "gva";
	for (i = 0; i < s.n; i++) {
		/* the workers have not run yet: the start barrier publishes this */
		crew.w[i].ctx = &s.v[i];
		crew.w[i].begin = s.v[i].data_gpa;
		crew.w[i].end = s.v[i].pool_gpa + 2 * s.v[i].pool_bytes;
	}

	/* a failed phase leaves later phases nothing meaningful to check */
	for (k = 0; k < PG_NR_STEPS && ok; k++) {
		struct vmmu_vcpu_stats before, after;

		env_sum_vcpu_stats(&env, &before);
		if (crew_run_call(&crew, pg_steps[k].call, pg_steps[k].name, &res)) {
			cli_set_error(error, sizeof(error), "%s", res.error);
			ok = false;
		}
		env_sum_vcpu_stats(&env, &after);
		ph[k].ran = true;
		ph[k].ns = res.ns;
		ph[k].pf_taken = after.pf_taken - before.pf_taken;
		for (i = 0; i < s.n; i++)
			ph[k].pages += s.v[i].phase_pages;
		mismatches += res.mismatches;
		if (pg_steps[k].call == pg_remap)
			t.remapped = ph[k].pages;
	}
	crew_stop(&crew);

	if (ok) {
		uint64_t t0 = cli_now_ns(), bad = 0;

		rc = pg_verify_host(&s, &bad);
		verify_ns = cli_now_ns() - t0;
		verify_ran = !rc;
		mismatches += bad;
		if (!verify_result(rc, bad, error, sizeof(error)))
			ok = false;
	}

	env_sum_vcpu_stats(&env, &vs);
	vmmu_vm_get_stats(env.vm, &ms);
	have_stats = true;
	if (ms.shadow_pages_recycled)
		fprintf(stderr, "vmmu: note: %" PRIu64 " shadow pages recycled to stay under the limit\n",
			ms.shadow_pages_recycled);
	/* checked even after a failure: a bugged VM explains most of them */
	if (env_check_bugged(&env, error, sizeof(error)))
		ok = false;
	if (ok) {
		char why[200] = "";

		/* only a broken invariant fails: an audit this build lacks is not one */
		if (vmmu_audit(env.vm, why, sizeof(why)) == VMMU_EIO) {
			fprintf(stderr, "vmmu: vmmu_audit: %s\n", why);
			cli_set_error(error, sizeof(error), "vmmu_audit: %s", why);
			ok = false;
		}
	}
	if (!ok)
		cli_set_error(error, sizeof(error), "a check failed (see stderr)");

destroy:
	for (i = 0; i < s.n; i++) {
		if (s.v[i].pt[0])
			guest_pt_destroy(s.v[i].pt[0]);
		if (s.v[i].pt[1])
			guest_pt_destroy(s.v[i].pt[1]);
	}
	env_destroy(&env);
report:
	if (!o->json) {
		pg_print_text(&eo, &s, &t, ph, verify_ran, verify_ns, &vs, &ms, have_stats, mismatches, ok,
			      error[0] ? error : NULL);
		free(s.v);
		return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	}

	report_init(&r);
	report_str(&r, "scenario", "paging");
	report_config(&r, o, o->vcpus, o->mem_bytes);
	report_str(&r, "guest", pg_mode_name(s.mode));
	report_str(&r, "guest_huge_page", s.huge == GUEST_PAGE_4M ? "4m" : "2m");
	report_u64(&r, "pages", t.pages);
	report_u64(&r, "huge_pages", t.huge_pages4k);
	report_u64(&r, "remapped_pages", t.remapped);
	report_u64(&r, "cr3_round_trips", PG_ROUND_TRIPS);
	for (k = 0; k < PG_NR_STEPS; k++) {
		if (ph[k].ran) {
			report_f(&r, pg_steps[k].ms_key, 3, ms_of(ph[k].ns));
			report_f(&r, pg_steps[k].ns_key, 1, per_page(ph[k].ns, ph[k].pages));
			report_u64(&r, pg_steps[k].pf_key, ph[k].pf_taken);
		} else {
			report_null(&r, pg_steps[k].ms_key);
			report_null(&r, pg_steps[k].ns_key);
			report_null(&r, pg_steps[k].pf_key);
		}
	}
	if (verify_ran)
		report_f(&r, "verify_ms", 3, ms_of(verify_ns));
	else
		report_null(&r, "verify_ms");
	report_u64(&r, "mismatches", mismatches);
	if (have_stats) {
		report_fault_stats(&r, &vs);
		report_u64(&r, "guest_faults", vs.guest_faults);
		report_u64(&r, "pt_write_emulations", vs.pt_write_emulations);
		report_u64(&r, "unsync_syncs", vs.unsync_syncs);
		report_u64(&r, "root_fast_switches", vs.root_fast_switches);
		report_u64(&r, "root_slow_switches", vs.root_slow_switches);
		report_u64(&r, "mmu_ctx_rebuilds", vs.mmu_ctx_rebuilds);
		report_u64(&r, "tlb_flushes", vs.tlb_flushes);
		report_u64(&r, "pages_4k", ms.pages_4k);
		report_u64(&r, "pages_2m", ms.pages_2m);
		report_u64(&r, "pages_1g", ms.pages_1g);
		report_u64(&r, "pt_pages", ms.pt_pages);
		report_u64(&r, "remote_tlb_flushes", ms.remote_tlb_flushes);
		report_u64(&r, "shadow_pages", ms.shadow_pages);
		report_u64(&r, "shadow_pages_created", ms.shadow_pages_created);
		report_u64(&r, "shadow_pages_zapped", ms.shadow_pages_zapped);
		report_u64(&r, "shadow_unsync_pages", ms.shadow_unsync_pages);
		report_u64(&r, "shadow_pte_writes", ms.shadow_pte_writes);
	}
	if (error[0])
		report_str(&r, "error", error);
	report_bool(&r, "ok", ok);
	report_print_json(&r, stdout);
	free(s.v);
	return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Registry                                                                  */

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
