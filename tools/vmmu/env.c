// SPDX-License-Identifier: MIT
/*
 * The environment scenarios and benchmarks run in: a VM with one memslot
 * of guest RAM and its vCPUs, the host-side checks of what the guest wrote
 * there, dirty logging of that slot, the first-touch pass, and the VMs some
 * benchmarks set up otherwise.  The vCPU threads that drive them are in
 * crew.c.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>

#include "env.h"
#include "trace.h"

/* ------------------------------------------------------------------------ */
/* Memory the tool maps itself                                               */

int env_mem_map(struct env_mem *m, const struct cli_opts *o, uint64_t size)
{
	uint64_t align = o->host_page > CLI_PAGE_SIZE ? o->host_page : CLI_PAGE_SIZE;

	m->raw_len = size + align;
	m->raw = mmap(NULL, m->raw_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->raw == MAP_FAILED) {
		m->raw = NULL;
		return -1;
	}
	m->base = (uint8_t *)(((uintptr_t)m->raw + align - 1) & ~(uintptr_t)(align - 1));
	/* THP only when the slot says its host pages are huge */
	(void)madvise(m->base, size, o->host_page > CLI_PAGE_SIZE ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return 0;
}

void env_mem_unmap(struct env_mem *m)
{
	if (m->raw)
		munmap(m->raw, m->raw_len);
	m->raw = NULL;
}

/* ------------------------------------------------------------------------ */
/* The VM environment                                                        */

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
	/* from the start, so that the events add up to the statistics */
	if (o->trace) {
		env->trace = o->trace;
		trace_attach(env->trace, env->vm);
	}

	memset(&slot, 0, sizeof(slot));
	slot.slot = 0;
	slot.gpa = 0;
	slot.size = mem_bytes;
	slot.hva = NULL;
	if (o->embedder_mem) {
		/* As a VMM would: anonymous memory of the requested page size,
		 * aligned so huge pages line up with the guest's. */
		env->failed_call = "mmap of the guest RAM";
		if (env_mem_map(&env->own, o, mem_bytes)) {
			rc = VMMU_ENOMEM;
			goto fail;
		}
		slot.hva = env->own.base;
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
	/* the teardown's events would come after the report's statistics */
	if (env->trace)
		trace_detach(env->trace, env->vm);
	/* the VM owns its vCPUs */
	if (env->vm)
		vmmu_vm_destroy(env->vm);
	env_mem_unmap(&env->own);
	free(env->vcpus);
	memset(env, 0, sizeof(*env));
}

int env_trace_finish(struct vm_env *env, const char *label, uint64_t *events, char *err, size_t err_len)
{
	char why[256] = "";

	*events = 0;
	if (!env->trace)
		return 0;
	trace_detach(env->trace, env->vm);
	if (trace_write(env->trace, label, events, why, sizeof(why))) {
		fprintf(stderr, "vmmu: %s\n", why);
		cli_set_error(err, err_len, "%s", why);
		return -1;
	}
	return 0;
}

void env_report_trace(struct report *r, const struct cli_opts *o, uint64_t events)
{
	if (!o->trace_path)
		return;
	report_str(r, "trace_file", o->trace_path);
	report_u64(r, "trace_events", events);
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

/* Every field of vmmu_vcpu_stats is a uint64_t counter: sum them all, so
 * that a new counter is summed without a line here. */
_Static_assert(sizeof(struct vmmu_vcpu_stats) % sizeof(uint64_t) == 0, "vmmu_vcpu_stats holds u64 counters");

void env_sum_vcpu_stats(struct vm_env *env, struct vmmu_vcpu_stats *sum)
{
	uint64_t *out = (uint64_t *)sum;

	memset(sum, 0, sizeof(*sum));
	for (unsigned int i = 0; i < env->nr_vcpus; i++) {
		struct vmmu_vcpu_stats s;
		const uint64_t *in = (const uint64_t *)&s;

		vmmu_vcpu_get_stats(env->vcpus[i], &s);
		for (size_t k = 0; k < sizeof(s) / sizeof(uint64_t); k++)
			out[k] += in[k];
	}
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
/* Host-side checks of what the guest wrote                                  */

/* What a verify phase's outcome means for the report: false when it failed. */
bool env_verify_result(int rc, uint64_t bad, char *error, size_t len)
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
int env_verify_token(vmmu_vm *vm, uint64_t gpa, uint64_t seed, uint64_t *bad)
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
		if (*bad < ENV_MAX_MISMATCH_REPORTS)
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
		int rc = env_verify_token(env->vm, gpa, seed, &bad);

		if (rc) {
			*mismatches = bad;
			return rc;
		}
	}
	if (bad > ENV_MAX_MISMATCH_REPORTS)
		fprintf(stderr, "vmmu: verify: %" PRIu64 " mismatches in all\n", bad);
	*mismatches = bad;
	return 0;
}

int env_verify_memory(struct vm_env *env, uint64_t seed, const char *what, char *err, size_t err_len)
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
/* Dirty logging of the slot                                                 */

/* A flags-only change of the slot env_create() made: logging on or off. */
int env_set_logging(struct vm_env *env, const struct cli_opts *o, bool on)
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
	if (env->own.raw) {
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

/* Harvest the whole slot and require every page in the report. */
int env_harvest_all(struct vm_env *env, uint64_t *bm, bool clear, const char *what, uint64_t *get_ns,
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

/* ------------------------------------------------------------------------ */
/* Passes                                                                    */

/*
 * One fresh VM: first touch (and retouch when asked), then the host-side
 * check of every token. With prepopulate, the host has touched every page
 * before the guest does, so the guest's faults find their host pages.
 */
int env_demand_pass(const struct cli_opts *o, unsigned nr_vcpus, uint64_t mem_bytes,
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
	env_sum_vcpu_stats(&env, &pr->first_touch_stats);
	if (crew_run(&crew, CREW_OP_VCPU_WRITE, "first_touch", &res)) {
		cli_set_error(err, err_len, "%s", res.error);
		failed = 1;
	} else {
		struct vmmu_vcpu_stats after;
		uint64_t *d = (uint64_t *)&pr->first_touch_stats;
		const uint64_t *a = (const uint64_t *)&after;

		env_sum_vcpu_stats(&env, &after);
		for (size_t k = 0; k < sizeof(after) / sizeof(uint64_t); k++)
			d[k] = a[k] - d[k];
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
	if (!env_verify_result(rc, bad, err, err_len))
		failed = 1;
out:
	if (env_check_bugged(&env, err, err_len))
		failed = 1;
	env_destroy(&env);
	return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* VMs of their own: no slot yet, or shadow paging                           */

int bare_vm_create(struct bare_vm *h, const struct cli_opts *o, unsigned int nr_vcpus, char *err, size_t len)
{
	struct vmmu_vm_config cfg;
	int rc;

	memset(h, 0, sizeof(*h));
	vmmu_vm_config_init(&cfg);
	cfg.mmu = o->mmu;
	cfg.tdp_format = o->tdp_format;
	cfg.flags = o->vm_flags;
	cfg.max_vcpus = nr_vcpus;
	rc = vmmu_vm_create(&cfg, &h->vm);
	for (; !rc && h->n < nr_vcpus; h->n++)
		rc = vmmu_vcpu_create(h->vm, h->n, &h->vcpus[h->n]);
	if (rc)
		cli_set_error(err, len, "VM setup: %s", vmmu_strerror(rc));
	return rc;
}

void bare_vm_destroy(struct bare_vm *h)
{
	if (h->vm)
		vmmu_vm_destroy(h->vm);
	h->vm = NULL;
}

int bare_vm_set_slot(struct bare_vm *h, const struct cli_opts *o, uint8_t *hva, uint64_t size)
{
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = size, .hva = hva, .host_page_size = o->host_page };

	return vmmu_set_memslot(h->vm, &s);
}

/*
 * A one-vCPU shadow-paging VM over a vmmu-allocated slot at gpa 0.  Shadow
 * paging may be missing from this build: say so in words, since that is the
 * likely reason and "operation not supported" alone would not tell which one.
 */
int shadow_vm_create(uint32_t prev_roots, uint64_t slot_bytes, vmmu_vm **vm, vmmu_vcpu **vcpu,
		     uint8_t **ram, char *err, size_t err_len)
{
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = slot_bytes };
	struct vmmu_vm_config cfg;
	int r;

	*vm = NULL;
	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	cfg.shadow_prev_roots = prev_roots;
	cfg.max_vcpus = 1;
	r = vmmu_vm_create(&cfg, vm);
	if (r == VMMU_ENOTSUP) {
		cli_set_error(err, err_len, "shadow paging (VMMU_MMU_SHADOW) is not supported by this vmmu: "
			      "vmmu_vm_create: %s", vmmu_strerror(r));
		return -1;
	}
	if (r) {
		*vm = NULL;
		cli_set_error(err, err_len, "vmmu_vm_create (shadow, %u previous roots): %s", prev_roots,
			      vmmu_strerror(r));
		return -1;
	}
	if ((r = vmmu_set_memslot(*vm, &s)) || (r = vmmu_vcpu_create(*vm, 0, vcpu)) ||
	    (r = vmmu_memslot_hva(*vm, 0, (void **)ram))) {
		cli_set_error(err, err_len, "shadow VM setup: %s", vmmu_strerror(r));
		return -1;
	}
	return 0;
}

/* The VM must not have flagged itself bugged, and its audit must pass. */
bool env_vm_healthy(vmmu_vm *vm, char *err, size_t err_len)
{
	const char *why = NULL;
	char audit[200] = "";

	if (vmmu_vm_bugged(vm, &why)) {
		cli_set_error(err, err_len, "the VM is bugged: %s", why ? why : "?");
		return false;
	}
	/* Only a broken invariant fails: an audit this build lacks is not one. */
	if (vmmu_audit(vm, audit, sizeof(audit)) == VMMU_EIO) {
		cli_set_error(err, err_len, "vmmu_audit: %s", audit);
		return false;
	}
	return true;
}
