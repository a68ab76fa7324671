// SPDX-License-Identifier: MIT
/*
 * `vmmu run demand`: the vCPUs fault in disjoint parts of RAM, then reread
 * and verify them, with guest paging off.
 */
#include <inttypes.h>
#include <string.h>

#include "env.h"
#include "registry.h"

struct demand_phase {
	const char *name;
	bool ran;
	uint64_t ns;
};

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
	cli_print_size(f, o->mem_bytes);
	fprintf(f, " (%" PRIu64 " pages of 4 KiB)\n", pages);
	cli_print_config_line(f, o);

	fprintf(f, "\n%-14s %12s %12s\n", "phase", "total ms", "ns/page");
	for (i = 0; i < nr_phases; i++) {
		if (ph[i].ran)
			fprintf(f, "%-14s %12.3f %12.1f\n", ph[i].name, cli_ms_of(ph[i].ns),
				cli_per_page(ph[i].ns, pages));
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
static int scenario_demand_run(const struct cli_opts *o)
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
	uint64_t trace_events = 0;
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
		if (!env_verify_result(rc, bad, error, sizeof(error)))
			ok = false;
	}

	env_sum_vcpu_stats(&env, &vs);
	vmmu_vm_get_stats(env.vm, &ms);
	have_stats = true;
	if (env_trace_finish(&env, "vmmu run demand", &trace_events, error, sizeof(error)))
		ok = false;
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
		report_f(&r, "first_touch_ms", 3, cli_ms_of(ph[0].ns));
		report_f(&r, "first_touch_ns_per_page", 1, cli_per_page(ph[0].ns, pages));
	} else {
		report_null(&r, "first_touch_ms");
		report_null(&r, "first_touch_ns_per_page");
	}
	if (ph[1].ran) {
		report_f(&r, "retouch_ms", 3, cli_ms_of(ph[1].ns));
		report_f(&r, "retouch_ns_per_page", 1, cli_per_page(ph[1].ns, pages));
	} else {
		report_null(&r, "retouch_ms");
		report_null(&r, "retouch_ns_per_page");
	}
	if (ph[2].ran)
		report_f(&r, "verify_ms", 3, cli_ms_of(ph[2].ns));
	else
		report_null(&r, "verify_ms");
	report_u64(&r, "mismatches", mismatches);
	if (have_stats) {
		report_fault_stats(&r, &vs);
		report_vm_mappings(&r, &ms);
		report_mmu_counters(&r, &vs, &ms);
	}
	env_report_trace(&r, o, trace_events);
	return report_finish(&r, o, ok, error);
}

const struct tool_entry scenario_demand = {
	.name = "demand",
	.desc = "vCPUs fault in disjoint parts of RAM, then reread and verify them",
	.run = scenario_demand_run,
};
