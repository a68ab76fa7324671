// SPDX-License-Identifier: MIT
/*
 * `vmmu bench zap`: what it costs to take a populated guest down.  The slot
 * (caller memory, --mem bytes, 1 GiB by default, --host-page pages) is
 * mapped in full by the vCPUs, then, in every repetition:
 *  - delete: vmmu_set_memslot(size 0), timed, per page (KVM's memslot
 *    delete: the slot is made invalid, a grace period, the zap, the flush);
 *  - zap-all fast: the slot re-created and mapped again, vmmu_zap_all()
 *    timed (the root is made obsolete; vCPUs load a new one);
 *  - zap-all slow: mapped again, vmmu_zap_gfn_range() over the whole gfn
 *    space timed (every SPTE removed one by one, the "before" of KVM's fast
 *    zap).
 * After each, stats must show nothing mapped, and the vCPUs read every page
 * again: each read faults (checked with pf_taken) and returns what the first
 * pass wrote, so no zap loses or misplaces data.
 *
 * Medians over --reps; missed targets are reported, never failures.
 */
#include <inttypes.h>

#include "env.h"
#include "registry.h"

#define ZAP_TARGET_DELETE_NS_PER_PAGE	10.0

static uint64_t mapped_pages(vmmu_vm *vm)
{
	struct vmmu_vm_stats st;

	vmmu_vm_get_stats(vm, &st);
	return st.pages_4k + st.pages_2m + st.pages_1g;
}

/* Faults taken, plus the pages they mapped ahead (fault-around). */
static uint64_t faults_taken(struct bare_vm *h)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < h->n; i++) {
		struct vmmu_vcpu_stats s;

		vmmu_vcpu_get_stats(h->vcpus[i], &s);
		n += s.pf_taken + s.fault_around_pages;
	}
	return n;
}

/*
 * Nothing may stay mapped after a zap; the next pass must fault (at least
 * once per host page size unit, a page mapped ahead by fault-around
 * counting as one) and read back the data intact.
 */
static int zap_check_refault(struct bare_vm *h, struct crew *crew, uint64_t mem, uint64_t host_page, const char *what,
			     char *err, size_t len)
{
	struct phase_result res;
	uint64_t before = faults_taken(h), left = mapped_pages(h->vm);

	if (left) {
		cli_set_error(err, len, "%s: %" PRIu64 " mappings left", what, left);
		return -1;
	}
	if (crew_run(crew, CREW_OP_VCPU_RETOUCH, what, &res)) {
		cli_set_error(err, len, "after %s: %s", what, res.error);
		return -1;
	}
	if (faults_taken(h) - before < mem / host_page) {
		cli_set_error(err, len, "after %s: %" PRIu64 " faults to map %" PRIu64 " host pages again", what,
			      faults_taken(h) - before, mem / host_page);
		return -1;
	}
	return 0;
}

static int bench_zap_run(const struct cli_opts *o)
{
	unsigned int reps = cli_reps(o), nr_vcpus = o->vcpus_set ? o->vcpus : 2;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE, gfn_space;
	double del[CLI_MAX_REPS], fast[CLI_MAX_REPS], slow[CLI_MAX_REPS], m_del;
	struct env_mem hmem = { 0 };
	struct bare_vm h = { 0 };
	struct phase_result res;
	struct crew crew;
	bool crew_up = false, ok = false;
	char err[256] = "";
	struct report r;
	struct vmmu_vm_config cfg;
	int rc;

	report_init(&r);
	report_str(&r, "benchmark", "zap");
	report_u64(&r, "reps", reps);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);
	if (nr_vcpus > BARE_VM_MAX_VCPUS)
		return cli_usage_error("bench zap: at most %u vCPUs", BARE_VM_MAX_VCPUS);
	if (o->backing != VMMU_BACKING_ANON) {
		cli_set_error(err, sizeof(err), "bench zap uses caller (anonymous) memory; drop --backing");
		return report_finish(&r, o, false, err);
	}
	if (env_mem_map(&hmem, o, mem)) {
		cli_set_error(err, sizeof(err), "mmap of %" PRIu64 " bytes failed", mem);
		return report_finish(&r, o, false, err);
	}
	if (bare_vm_create(&h, o, nr_vcpus, err, sizeof(err)))
		goto out;
	vmmu_vm_config_init(&cfg);
	gfn_space = UINT64_C(1) << (cfg.maxphyaddr - 12);
	if ((rc = bare_vm_set_slot(&h, o, hmem.base, mem))) {
		cli_set_error(err, sizeof(err), "vmmu_set_memslot: %s", vmmu_strerror(rc));
		goto out;
	}
	if (crew_start(&crew, nr_vcpus, h.vcpus, NULL, mem, o->seed)) {
		cli_set_error(err, sizeof(err), "cannot start the vCPU threads");
		goto out;
	}
	crew_up = true;
	if (crew_run(&crew, CREW_OP_VCPU_WRITE, "populate", &res)) {
		cli_set_error(err, sizeof(err), "%s", res.error);
		goto out;
	}

	for (unsigned int rep = 0; rep < reps; rep++) {
		struct vmmu_memslot gone = { .slot = 0 };
		uint64_t t0, mapped = mapped_pages(h.vm);

		/* Everything mapped: the first pass, or the last check's pass. */
		if (mapped < mem / o->host_page) {
			cli_set_error(err, sizeof(err), "only %" PRIu64 " mappings before the delete", mapped);
			goto out;
		}
		t0 = cli_now_ns();
		rc = vmmu_set_memslot(h.vm, &gone);
		del[rep] = (double)(cli_now_ns() - t0) / (double)pages;
		if (rc) {
			cli_set_error(err, sizeof(err), "delete: %s", vmmu_strerror(rc));
			goto out;
		}
		if (mapped_pages(h.vm)) {
			cli_set_error(err, sizeof(err), "delete left %" PRIu64 " mappings", mapped_pages(h.vm));
			goto out;
		}
		if ((rc = bare_vm_set_slot(&h, o, hmem.base, mem))) {
			cli_set_error(err, sizeof(err), "re-create: %s", vmmu_strerror(rc));
			goto out;
		}
		if (zap_check_refault(&h, &crew, mem, o->host_page, "delete", err, sizeof(err)))
			goto out;

		t0 = cli_now_ns();
		vmmu_zap_all(h.vm);
		fast[rep] = (double)(cli_now_ns() - t0) / 1e3;
		if (zap_check_refault(&h, &crew, mem, o->host_page, "zap_all", err, sizeof(err)))
			goto out;

		t0 = cli_now_ns();
		rc = vmmu_zap_gfn_range(h.vm, 0, gfn_space);
		slow[rep] = (double)(cli_now_ns() - t0) / 1e3;
		if (rc) {
			cli_set_error(err, sizeof(err), "vmmu_zap_gfn_range: %s", vmmu_strerror(rc));
			goto out;
		}
		if (zap_check_refault(&h, &crew, mem, o->host_page, "zap_gfn_range", err, sizeof(err)))
			goto out;
	}
	/* And the host view holds the first pass's tokens. */
	for (uint64_t gpa = 0; gpa < mem; gpa += CLI_PAGE_SIZE) {
		if (*(volatile uint64_t *)(hmem.base + gpa) != cli_token(gpa, o->seed)) {
			cli_set_error(err, sizeof(err), "host memory at gpa 0x%" PRIx64 " lost its token", gpa);
			goto out;
		}
	}
	m_del = report_spread(&r, "delete_ns_per_page", 2, del, reps);
	report_f(&r, "delete_ms", 3, m_del * (double)pages / 1e6);
	report_spread(&r, "zap_all_fast_us", 1, fast, reps);
	report_spread(&r, "zap_all_slow_us", 1, slow, reps);
	report_ratio(&r, "slow_over_fast", 2, slow, fast, reps);
	report_f(&r, "target_delete_ns_per_page", 1, ZAP_TARGET_DELETE_NS_PER_PAGE);
	report_bool(&r, "meets_delete", m_del <= ZAP_TARGET_DELETE_NS_PER_PAGE);
	ok = true;
out:
	if (crew_up)
		crew_stop(&crew);
	if (h.vm && vmmu_vm_bugged(h.vm, NULL)) {
		cli_set_error(err, sizeof(err), "the VM is bugged");
		ok = false;
	}
	bare_vm_destroy(&h);
	env_mem_unmap(&hmem);
	return report_finish(&r, o, ok, err);
}

const struct tool_entry bench_zap = {
	.name = "zap",
	.desc = "ns per page of a populated memslot's delete; zap-all fast vs gfn-range",
	.run = bench_zap_run,
};
