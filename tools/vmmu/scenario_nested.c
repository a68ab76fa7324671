/* SPDX-License-Identifier: MIT */
/*
 * `vmmu run nested`: every vCPU is a guest hypervisor (L1) running its own
 * guest (L2), seed 003's setting.  L1 builds an EPT (an NPT with --tdp npt)
 * for L2 by its own stores; L2 builds two address spaces in its memory,
 * touches and rereads every page, remaps some pages (PTE stores + INVLPG),
 * switches CR3 between its spaces; then thousands of L2 -> L1 -> L2 round
 * trips, L1 handling each exit, L2 rereading a working set on return; then
 * L1 moves some of L2's pages to other frames of its own (copies them,
 * rewrites its EPT/NPT, invalidates) and L2 rereads everything.  Every read
 * is checked against a plain three-level reference: the frame L2's tables
 * and L1's tables name now (guest_lookup on both), and the token the frame
 * was given.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "registry.h"

#define NS_ROUND_TRIPS 2000u
#define NS_WORKING_SET 16u	/* pages L2 rereads after each round trip */
#define NS_REMAP_STRIDE 8u	/* L2 swaps the frames of 2 pages in every 8 */
#define NS_L1_MOVE_STRIDE 16u	/* L1 swaps 2 frames in every 16 of its 4K-mapped part */
#define NS_4K_PART (UINT64_C(8) << 20)	/* L2 memory L1 maps at 4K (l1.c) */

struct ns_vcpu {
	struct l1_guest g;
	vmmu_vm *vm;
	unsigned int idx;
	bool five, npt;
	uint64_t seed;
	uint64_t phase_units;	/* pages or round trips the last phase did */
	uint64_t remapped, moved;	/* pages L2 remapped, frames L1 moved */
};

/* A frame's token names the vCPU and the frame, so a move keeps it. */
static uint64_t ns_token(const struct ns_vcpu *s, uint64_t frame)
{
	return cli_token_nz(((uint64_t)s->idx << 40) | frame, s->seed);
}

static bool ns_call_ok(struct crew_worker *w, int rc, const char *call)
{
	if (!rc)
		return true;
	w->err = rc;
	w->err_call = call;
	return false;
}

static bool ns_access(struct crew_worker *w, uint64_t addr, uint64_t *v, unsigned int type)
{
	struct vmmu_exit x;
	int rc = vmmu_vcpu_access(w->vcpu, addr, v, 8, type, &x);

	if (rc)
		crew_worker_fail(w, rc, addr, (type & VMMU_ACCESS_TYPE_MASK) == VMMU_ACCESS_WRITE, &x);
	return !rc;
}

/* L2 reads page p and checks it against the reference and the token. */
static bool ns_check(struct crew_worker *w, struct ns_vcpu *s, uint64_t p)
{
	uint64_t v = 0, l2_gpa, l1_gpa, host;
	void *hva;

	if (!ns_access(w, l2_gva(&s->g, p), &v, VMMU_ACCESS_READ))
		return false;
	if (!ns_call_ok(w, l2_reference(&s->g, p, &l2_gpa, &l1_gpa), "guest_lookup (reference)") ||
	    !ns_call_ok(w, vmmu_gpa_to_hva(s->vm, l1_gpa, &hva), "vmmu_gpa_to_hva (reference)"))
		return false;
	host = __atomic_load_n((uint64_t *)hva, __ATOMIC_ACQUIRE);
	if (v != host || v != ns_token(s, (l2_gpa - s->g.l2_pt_bytes) / CLI_PAGE_SIZE)) {
		crew_worker_mismatch(w, l2_gva(&s->g, p), host, v);
		return false;
	}
	return true;
}

static bool ns_check_all(struct crew_worker *w, struct ns_vcpu *s)
{
	for (uint64_t p = 0; p < s->g.pages; p++)
		if (!ns_check(w, s, p))
			return false;
	s->phase_units += s->g.pages;
	return true;
}

static void ns_l1_build(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;
	const char *what = "";

	s->phase_units = 1;
	ns_call_ok(w, l1_setup(&s->g, s->vm, w->vcpu, s->npt, s->five, w->begin, w->end - w->begin,
			       (uint16_t)(s->idx + 1), &what), what);
}

static void ns_l2_build(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;
	const char *what = "";

	s->phase_units = 1;
	if (ns_call_ok(w, l1_enter(&s->g), "vmmu_vcpu_enter_guest_mode"))
		ns_call_ok(w, l2_build(&s->g, &what), what);
}

static void ns_first_touch(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;

	s->phase_units = 0;
	for (uint64_t p = 0; p < s->g.pages; p++) {
		uint64_t v = ns_token(s, l2_frame(&s->g, 0, p));

		if (!ns_access(w, l2_gva(&s->g, p), &v, VMMU_ACCESS_WRITE))
			return;
	}
	s->phase_units = s->g.pages;
}

static void ns_retouch(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;

	s->phase_units = 0;
	ns_check_all(w, s);
}

/* L2 swaps the frames of pages p and p + 1 in its space A: PTE stores, INVLPG. */
static void ns_remap(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;
	struct guest_pt *pt = s->g.l2pt[0];

	s->phase_units = 0;
	for (uint64_t p = 0; p + 1 < s->g.pages; p += NS_REMAP_STRIDE) {
		uint64_t a, b;

		if (!ns_call_ok(w, guest_lookup(pt, l2_gva(&s->g, p), &a, NULL, NULL, NULL), "guest_lookup") ||
		    !ns_call_ok(w, guest_lookup(pt, l2_gva(&s->g, p + 1), &b, NULL, NULL, NULL), "guest_lookup") ||
		    !ns_call_ok(w, guest_map(pt, l2_gva(&s->g, p), b, CLI_PAGE_SIZE, GUEST_PAGE_4K, GUEST_W | GUEST_NX),
				"guest_map (L2)") ||
		    !ns_call_ok(w, guest_map(pt, l2_gva(&s->g, p + 1), a, CLI_PAGE_SIZE, GUEST_PAGE_4K,
					     GUEST_W | GUEST_NX), "guest_map (L2)"))
			return;
		vmmu_vcpu_invlpg(w->vcpu, l2_gva(&s->g, p));
		vmmu_vcpu_invlpg(w->vcpu, l2_gva(&s->g, p + 1));
		if (!ns_check(w, s, p) || !ns_check(w, s, p + 1))
			return;
		s->remapped += 2;
		s->phase_units += 2;
	}
}

static void ns_cr3_switch(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;

	s->phase_units = 0;
	for (int space = 1; space >= 0; space--)
		if (!ns_call_ok(w, l2_switch(&s->g, space), "vmmu_vcpu_set_state (L2 CR3)") || !ns_check_all(w, s))
			return;
}

/* L2 -> L1 (which touches its own memory, as an exit handler does) -> L2. */
static void ns_round_trips(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;

	s->phase_units = 0;
	for (unsigned int i = 0; i < NS_ROUND_TRIPS; i++) {
		uint64_t v;

		if (!ns_call_ok(w, l1_leave(&s->g), "vmmu_vcpu_leave_guest_mode") ||
		    !ns_access(w, s->g.base + 8 * (i % 512), &v, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS) ||
		    !ns_call_ok(w, l1_enter(&s->g), "vmmu_vcpu_enter_guest_mode"))
			return;
		for (unsigned int k = 0; k < NS_WORKING_SET && k < s->g.pages; k++)
			if (!ns_check(w, s, (i * 7 + k * 131) % s->g.pages))
				return;
		s->phase_units++;
	}
}

/* L1 moves L2's frames: swaps two frames' contents and their EPT/NPT leaves. */
static bool ns_l1_swap(struct crew_worker *w, struct ns_vcpu *s, uint64_t l2a, uint64_t l2b)
{
	uint64_t l1a, l1b, flags = s->npt ? GUEST_W | GUEST_U : GUEST_EPT_RWX | GUEST_EPT_MT_WB;
	static __thread uint64_t ba[512], bb[512];
	struct vmmu_exit x;
	int rc;

	if (!ns_call_ok(w, guest_lookup(s->g.ept, l2a, &l1a, NULL, NULL, NULL), "guest_lookup (L1)") ||
	    !ns_call_ok(w, guest_lookup(s->g.ept, l2b, &l1b, NULL, NULL, NULL), "guest_lookup (L1)"))
		return false;
	rc = vmmu_vcpu_access(w->vcpu, l1a, ba, sizeof(ba), VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x);
	if (!rc)
		rc = vmmu_vcpu_access(w->vcpu, l1b, bb, sizeof(bb), VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x);
	if (!rc)
		rc = vmmu_vcpu_access(w->vcpu, l1a, bb, sizeof(bb), VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);
	if (!rc)
		rc = vmmu_vcpu_access(w->vcpu, l1b, ba, sizeof(ba), VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);
	if (rc) {
		crew_worker_fail(w, rc, l1a, true, &x);
		return false;
	}
	return ns_call_ok(w, guest_map(s->g.ept, l2a, l1b, CLI_PAGE_SIZE, GUEST_PAGE_4K, flags), "guest_map (L1)") &&
	       ns_call_ok(w, guest_map(s->g.ept, l2b, l1a, CLI_PAGE_SIZE, GUEST_PAGE_4K, flags), "guest_map (L1)");
}

static void ns_l1_remap(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;
	uint64_t first = s->g.l2_pt_bytes, end = NS_4K_PART < s->g.l2_size ? NS_4K_PART : s->g.l2_size;

	s->phase_units = 0;
	if (!ns_call_ok(w, l1_leave(&s->g), "vmmu_vcpu_leave_guest_mode"))
		return;
	for (uint64_t a = first; a + 2 * CLI_PAGE_SIZE <= end; a += NS_L1_MOVE_STRIDE * CLI_PAGE_SIZE) {
		if (!ns_l1_swap(w, s, a, a + CLI_PAGE_SIZE))
			return;
		s->moved += 2;
	}
	/* The invalidation L1 owes L2 for what it changed: INVEPT, or for
	 * NPT a flush of the guest's ASID at the next VMRUN. */
	if (s->npt)
		s->g.ns.tlb_control = VMMU_TLB_CONTROL_FLUSH_GUEST;
	else if (!ns_call_ok(w, vmmu_vcpu_invept(w->vcpu, VMMU_INVEPT_SINGLE, s->g.ns.eptp), "vmmu_vcpu_invept"))
		return;
	if (!ns_call_ok(w, l1_enter(&s->g), "vmmu_vcpu_enter_guest_mode"))
		return;
	s->g.ns.tlb_control = 0;
	ns_check_all(w, s);
}

static void ns_leave(struct crew_worker *w)
{
	struct ns_vcpu *s = w->ctx;

	s->phase_units = 0;
	ns_call_ok(w, l1_leave(&s->g), "vmmu_vcpu_leave_guest_mode");
}

static const struct ns_step {
	const char *name;
	void (*call)(struct crew_worker *w);
	const char *ms_key, *ns_key;	/* ns per page, per round trip for the trips */
} ns_steps[] = {
	{ "L1 builds its EPT/NPT", ns_l1_build, "l1_build_ms", NULL },
	{ "L2 builds its tables", ns_l2_build, "l2_build_ms", NULL },
	{ "L2 first touch", ns_first_touch, "first_touch_ms", "first_touch_ns_per_page" },
	{ "L2 retouch", ns_retouch, "retouch_ms", "retouch_ns_per_page" },
	{ "L2 remap + INVLPG", ns_remap, "remap_ms", "remap_ns_per_page" },
	{ "L2 CR3 switches", ns_cr3_switch, "cr3_switch_ms", "cr3_switch_ns_per_page" },
	{ "L2 -> L1 -> L2 round trips", ns_round_trips, "round_trips_ms", "round_trip_ns" },
	{ "L1 moves frames + invalidates", ns_l1_remap, "l1_remap_ms", "l1_remap_ns_per_page" },
	{ "back to L1", ns_leave, "leave_ms", NULL },
};
#define NS_NR_STEPS (sizeof(ns_steps) / sizeof(ns_steps[0]))

static int scenario_nested_run(const struct cli_opts *o)
{
	uint64_t units[NS_NR_STEPS] = { 0 }, ns_[NS_NR_STEPS] = { 0 };
	bool ran[NS_NR_STEPS] = { false };
	struct cli_opts eo = *o;
	struct vmmu_vcpu_stats vs;
	struct vmmu_vm_stats ms;
	struct phase_result res;
	struct ns_vcpu *nv = NULL;
	uint64_t mismatches = 0, pages = 0, remapped = 0, moved = 0, share;
	bool ok = true, have_stats = false;
	char error[200] = "";
	struct report r;
	struct vm_env env;
	uint64_t trace_events = 0;
	struct crew crew;
	unsigned int i, k;
	int rc;

	if (o->mmu != VMMU_MMU_TDP)
		return cli_usage_error("--mmu shadow: nested guests need a TDP VM (--mmu tdp)");
	if (o->vm_flags & VMMU_VM_AD_DISABLED)
		return cli_usage_error("--no-ad: the nested scenario's L1 enables EPT A/D, drop --no-ad");
	share = (o->mem_bytes / o->vcpus) & ~(CLI_SIZE_2M - 1);
	if (share < 16 * CLI_SIZE_2M)
		return cli_usage_error("--mem %llu bytes gives each of the %u vCPUs less than 32M for an L1 and "
				       "its L2", (unsigned long long)o->mem_bytes, o->vcpus);
	memset(&vs, 0, sizeof(vs));
	memset(&ms, 0, sizeof(ms));
	memset(&env, 0, sizeof(env));
	nv = calloc(o->vcpus, sizeof(*nv));
	if (!nv) {
		return cli_runtime_error("out of memory for %u vCPUs", o->vcpus);
	}
	rc = env_create(&env, &eo, o->vcpus, o->mem_bytes);
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
	crew.addr_name = "gva";
	for (i = 0; i < o->vcpus; i++) {
		nv[i].vm = env.vm;
		nv[i].idx = i;
		nv[i].npt = o->tdp_format == VMMU_TDP_NPT;
		nv[i].five = o->tdp_levels == 5;
		nv[i].seed = o->seed;
		crew.w[i].ctx = &nv[i];
		crew.w[i].begin = (uint64_t)i * share;
		crew.w[i].end = (uint64_t)(i + 1) * share;
	}
	for (k = 0; k < NS_NR_STEPS && ok; k++) {
		if (crew_run_call(&crew, ns_steps[k].call, ns_steps[k].name, &res)) {
			cli_set_error(error, sizeof(error), "%s", res.error);
			ok = false;
		}
		ran[k] = true;
		ns_[k] = res.ns;
		mismatches += res.mismatches;
		for (i = 0; i < o->vcpus; i++)
			units[k] += nv[i].phase_units;
	}
	/* A failed phase may leave vCPUs in L2: back to L1 before teardown. */
	for (i = 0; i < o->vcpus; i++)
		if (vmmu_vcpu_in_guest_mode(env.vcpus[i]))
			vmmu_vcpu_leave_guest_mode(env.vcpus[i], NULL);
	crew_stop(&crew);
	for (i = 0; i < o->vcpus; i++) {
		pages += nv[i].g.pages;
		remapped += nv[i].remapped;
		moved += nv[i].moved;
	}
	env_sum_vcpu_stats(&env, &vs);
	vmmu_vm_get_stats(env.vm, &ms);
	have_stats = true;
	if (env_trace_finish(&env, "vmmu run nested", &trace_events, error, sizeof(error)))
		ok = false;
	if (!env_vm_healthy(env.vm, error, sizeof(error))) {
		fprintf(stderr, "vmmu: %s\n", error);
		ok = false;
	}
destroy:
	for (i = 0; i < o->vcpus; i++)
		l1_destroy(&nv[i].g);
	env_destroy(&env);
report:
	report_init(&r);
	report_str(&r, "scenario", "nested");
	report_config(&r, o, o->vcpus, o->mem_bytes);
	report_u64(&r, "l2_pages", pages);
	report_u64(&r, "l2_remapped_pages", remapped);
	report_u64(&r, "l1_moved_frames", moved);
	report_u64(&r, "round_trips", (uint64_t)NS_ROUND_TRIPS * o->vcpus);
	for (k = 0; k < NS_NR_STEPS; k++) {
		if (ran[k])
			report_f(&r, ns_steps[k].ms_key, 3, cli_ms_of(ns_[k]));
		else
			report_null(&r, ns_steps[k].ms_key);
		if (!ns_steps[k].ns_key)
			continue;
		if (ran[k] && units[k])
			/* vCPUs run in parallel: per unit of one vCPU's work */
			report_f(&r, ns_steps[k].ns_key, 1, (double)ns_[k] * o->vcpus / (double)units[k]);
		else
			report_null(&r, ns_steps[k].ns_key);
	}
	report_u64(&r, "mismatches", mismatches);
	if (have_stats) {
		report_u64(&r, "nested_entries", vs.nested_entries);
		report_u64(&r, "nested_root_reuses", vs.nested_root_reuses);
		report_u64(&r, "nested_exits", vs.nested_exits);
		report_u64(&r, "pt_write_emulations", vs.pt_write_emulations);
		report_u64(&r, "unsync_syncs", vs.unsync_syncs);
		report_shadow_counts(&r, &ms);
		report_vm_mappings(&r, &ms);
		report_mmu_counters(&r, &vs, &ms);
	}
	env_report_trace(&r, o, trace_events);
	free(nv);
	return report_finish(&r, o, ok, error);
}

const struct tool_entry scenario_nested = {
	.name = "nested",
	.desc = "every vCPU an L1 hypervisor running an L2: EPT/NPT built by L1, round trips, checked reads",
	.run = scenario_nested_run,
};
