// SPDX-License-Identifier: MIT
/*
 * `vmmu run private`: a confidential VM (VMMU_VM_PRIVATE) whose vCPUs use
 * private RAM, convert parts of it to shared and back with the
 * memory-fault exit protocol -- the tool plays the VMM: on an exit that
 * says the guest used the other alias it converts the page
 * (vmmu_set_memory_attributes) and runs the vCPU again, as KVM userspace
 * does on KVM_EXIT_MEMORY_FAULT -- and run a shared DMA-like buffer that
 * the host ("device") fills and reads.  Every read is checked:
 *
 *  1. convert: all RAM private (one call);
 *  2. private_touch: each vCPU writes a private token into every page of
 *     its part, through private gpas;
 *  3. private_verify: and reads it back;
 *  4. to_shared: the guest wants every 8th page shared: its shared access
 *     exits, the tool converts, the access completes; then the page must
 *     read what the host put in the slot's memory, never private data;
 *  5. dma: the host writes a pattern into those pages' shared memory, the
 *     vCPUs read and check it and write an answer the host checks;
 *  6. to_private: the guest takes the pages back (private access, exit,
 *     convert): they read as zeroes (TDX: removed, added again zeroed);
 *  7. final_verify: every page holds its private token again.
 *
 * Reports ns per page of each phase, conversions, exits, the mirror's and
 * the secure table's pages and the security module's violations (0, or the
 * run fails); the audit must pass.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "registry.h"

#define PV_SHARE_EVERY 8

struct pv {
	vmmu_vm *vm;
	uint8_t *shared;	/* the slot's (shared) memory, the host's view */
	uint64_t smask;
	uint64_t seed;
	_Atomic uint64_t conversions, exits;
};

static uint64_t pv_private_token(uint64_t gpa, uint64_t seed)
{
	return cli_token(gpa, seed) | 1;	/* never 0: 0 is what a fresh private page reads */
}

static uint64_t pv_dma_token(uint64_t gpa, uint64_t seed)
{
	return ~cli_token(gpa, seed);
}

/*
 * One 8-byte access, with the VMM's side of the alias protocol: an exit
 * that says the attribute is the other kind is answered by converting the
 * page to what the guest used, then the access runs again.
 */
static int pv_access(struct pv *p, struct crew_worker *w, uint64_t gpa, bool shared, uint64_t *val, bool write)
{
	unsigned int type = (write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ) | VMMU_ACCESS_PHYS;

	for (int tries = 0; tries < 4; tries++) {
		int rc = vmmu_vcpu_access(w->vcpu, gpa | (shared ? p->smask : 0), val, 8, type, &w->exit);

		if (rc == VMMU_EXIT && w->exit.reason == VMMU_EXIT_MEMORY_FAULT &&
		    w->exit.u.memory_fault.error == VMMU_EAGAIN) {
			atomic_fetch_add_explicit(&p->exits, 1, memory_order_relaxed);
			rc = vmmu_set_memory_attributes(p->vm, w->exit.u.memory_fault.gpa, w->exit.u.memory_fault.size,
							w->exit.u.memory_fault.is_private ? VMMU_MEMORY_ATTRIBUTE_PRIVATE : 0);
			if (rc) {
				w->err = rc;
				w->err_call = "vmmu_set_memory_attributes";
				return rc;
			}
			atomic_fetch_add_explicit(&p->conversions, 1, memory_order_relaxed);
			continue;
		}
		if (rc) {
			w->err = rc;
			w->err_gpa = gpa;
			w->err_is_write = write;
			return rc;
		}
		return 0;
	}
	w->err = VMMU_EAGAIN;
	w->err_call = "the alias protocol (converted, still exits)";
	return VMMU_EAGAIN;
}

static void pv_mismatch(struct crew_worker *w, uint64_t gpa, uint64_t want, uint64_t got)
{
	if (!w->mismatches++) {
		w->bad_gpa = gpa;
		w->bad_expected = want;
		w->bad_got = got;
	}
}

static bool pv_shared_page(uint64_t gpa)
{
	return (gpa / CLI_PAGE_SIZE) % PV_SHARE_EVERY == PV_SHARE_EVERY - 1;
}

static void pv_private_touch(struct crew_worker *w)
{
	struct pv *p = w->ctx;

	for (uint64_t gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t v = pv_private_token(gpa, p->seed);

		if (pv_access(p, w, gpa, false, &v, true))
			return;
	}
}

static void pv_private_verify(struct crew_worker *w)
{
	struct pv *p = w->ctx;

	for (uint64_t gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t v = 0;

		if (pv_access(p, w, gpa, false, &v, false))
			return;
		if (v != pv_private_token(gpa, p->seed))
			pv_mismatch(w, gpa, pv_private_token(gpa, p->seed), v);
	}
}

static void pv_to_shared(struct crew_worker *w)
{
	struct pv *p = w->ctx;

	for (uint64_t gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t v = 0, host;

		if (!pv_shared_page(gpa))
			continue;
		if (pv_access(p, w, gpa, true, &v, false))
			return;
		/* Whatever the slot's memory holds, never the private token. */
		memcpy(&host, p->shared + gpa, 8);
		if (v != host || v == pv_private_token(gpa, p->seed))
			pv_mismatch(w, gpa, host, v);
	}
}

static void pv_dma(struct crew_worker *w)
{
	struct pv *p = w->ctx;

	for (uint64_t gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t v = 0;

		if (!pv_shared_page(gpa))
			continue;
		if (pv_access(p, w, gpa + 8, true, &v, false))
			return;
		if (v != pv_dma_token(gpa, p->seed))
			pv_mismatch(w, gpa + 8, pv_dma_token(gpa, p->seed), v);
		v = ~v;
		if (pv_access(p, w, gpa + 16, true, &v, true))
			return;
	}
}

static void pv_to_private(struct crew_worker *w)
{
	struct pv *p = w->ctx;

	for (uint64_t gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t v = 1;

		if (!pv_shared_page(gpa))
			continue;
		if (pv_access(p, w, gpa, false, &v, false))
			return;
		/* The round trip zeroed the private page. */
		if (v != 0)
			pv_mismatch(w, gpa, 0, v);
		v = pv_private_token(gpa, p->seed);
		if (pv_access(p, w, gpa, false, &v, true))
			return;
	}
}

static const struct pv_phase {
	const char *name, *ms_key, *ns_key;
	void (*fn)(struct crew_worker *w);
	bool shared_pages_only;
} pv_phases[] = {
	{ "private_touch", "private_touch_ms", "private_touch_ns_per_page", pv_private_touch, false },
	{ "private_verify", "private_verify_ms", "private_verify_ns_per_page", pv_private_verify, false },
	{ "to_shared", "to_shared_ms", "to_shared_ns_per_page", pv_to_shared, true },
	{ "dma", "dma_ms", "dma_ns_per_page", pv_dma, true },
	{ "to_private", "to_private_ms", "to_private_ns_per_page", pv_to_private, true },
	{ "final_verify", "final_verify_ms", "final_verify_ns_per_page", pv_private_verify, false },
};

#define PV_NR_PHASES (sizeof(pv_phases) / sizeof(pv_phases[0]))

/* The host's half of the DMA: fill the buffers, later check the answers. */
static uint64_t pv_host_dma(struct pv *p, uint64_t mem, bool check)
{
	uint64_t bad = 0;

	for (uint64_t gpa = 0; gpa < mem; gpa += CLI_PAGE_SIZE) {
		uint64_t v;

		if (!pv_shared_page(gpa))
			continue;
		if (!check) {
			v = pv_dma_token(gpa, p->seed);
			memcpy(p->shared + gpa + 8, &v, 8);
			continue;
		}
		memcpy(&v, p->shared + gpa + 16, 8);
		if (v != ~pv_dma_token(gpa, p->seed))
			bad++;
	}
	return bad;
}

static int scenario_private_run(const struct cli_opts *o)
{
	unsigned int nr = o->vcpus;
	uint64_t mem = o->mem_bytes;
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot;
	struct vmmu_vm_stats st;
	vmmu_vcpu **vcpus = NULL;
	struct crew crew;
	struct report r;
	struct pv p;
	char err[256] = "", why[256];
	bool ok = true, crew_up = false;
	uint64_t t0, convert_ns = 0;
	int rc;

	memset(&p, 0, sizeof(p));
	report_init(&r);
	report_str(&r, "scenario", "private");
	report_config(&r, o, nr, mem);
	if (o->mmu != VMMU_MMU_TDP) {
		/* Bad usage, not a failed run: private memory needs TDP. */
		return cli_usage_error("run private: --mmu shadow cannot run a private VM (TDP only)");
	}
	vmmu_vm_config_init(&cfg);
	cfg.tdp_format = o->tdp_format;
	cfg.flags = o->vm_flags | VMMU_VM_PRIVATE;
	cfg.max_vcpus = nr;
	cfg.maxphyaddr = 48;	/* TDX's 48-bit GPA: the shared bit is 47 */
	p.smask = 1ULL << 47;
	p.seed = o->seed;
	rc = vmmu_vm_create(&cfg, &p.vm);
	if (rc) {
		cli_set_error(err, sizeof(err), "vmmu_vm_create: %s", vmmu_strerror(rc));
		ok = false;
		goto report;
	}
	memset(&slot, 0, sizeof(slot));
	slot.size = mem;
	slot.flags = VMMU_MEM_PRIVATE;
	slot.host_page_size = o->host_page;
	slot.backing = o->backing;
	vcpus = calloc(nr, sizeof(*vcpus));
	rc = vcpus ? vmmu_set_memslot(p.vm, &slot) : VMMU_ENOMEM;
	if (!rc)
		rc = vmmu_memslot_hva(p.vm, 0, (void **)&p.shared);
	for (unsigned int i = 0; !rc && i < nr; i++)
		rc = vmmu_vcpu_create(p.vm, i, &vcpus[i]);
	if (rc) {
		cli_set_error(err, sizeof(err), "VM setup: %s", vmmu_strerror(rc));
		ok = false;
		goto destroy;
	}
	if (crew_start(&crew, nr, vcpus, NULL, mem, o->seed)) {
		cli_set_error(err, sizeof(err), "cannot start the vCPU threads");
		ok = false;
		goto destroy;
	}
	crew_up = true;
	for (unsigned int i = 0; i < nr; i++)
		crew.w[i].ctx = &p;

	t0 = cli_now_ns();
	rc = vmmu_set_memory_attributes(p.vm, 0, mem, VMMU_MEMORY_ATTRIBUTE_PRIVATE);
	convert_ns = cli_now_ns() - t0;
	if (rc) {
		cli_set_error(err, sizeof(err), "vmmu_set_memory_attributes: %s", vmmu_strerror(rc));
		ok = false;
		goto destroy;
	}
	report_f(&r, "convert_all_private_ms", 3, (double)convert_ns / 1e6);
	for (size_t i = 0; i < PV_NR_PHASES; i++) {
		const struct pv_phase *ph = &pv_phases[i];
		struct phase_result res;
		uint64_t pages = mem / CLI_PAGE_SIZE / (ph->shared_pages_only ? PV_SHARE_EVERY : 1);

		if (!strcmp(ph->name, "dma"))
			pv_host_dma(&p, mem, false);
		if (crew_run_call(&crew, ph->fn, ph->name, &res)) {
			cli_set_error(err, sizeof(err), "%s", res.error);
			ok = false;
		}
		if (ok && !strcmp(ph->name, "dma") && pv_host_dma(&p, mem, true)) {
			cli_set_error(err, sizeof(err), "dma: the host read wrong answers in the shared buffers");
			ok = false;
		}
		report_f(&r, ph->ms_key, 3, (double)res.ns / 1e6);
		report_f(&r, ph->ns_key, 1, pages ? (double)res.ns / (double)pages : 0);
		if (!ok)
			break;
	}
	if (ok && vmmu_audit(p.vm, why, sizeof(why))) {
		cli_set_error(err, sizeof(err), "vmmu_audit: %s", why);
		ok = false;
	}
	{
		const char *bug = NULL;

		if (vmmu_vm_bugged(p.vm, &bug)) {
			cli_set_error(err, sizeof(err), "VM bugged: %s", bug ? bug : "?");
			ok = false;
		}
	}
	vmmu_vm_get_stats(p.vm, &st);
	report_u64(&r, "conversions", atomic_load(&p.conversions));
	report_u64(&r, "memory_fault_exits", atomic_load(&p.exits));
	report_u64(&r, "attribute_changes", st.attribute_changes);
	report_u64(&r, "private_pages_4k", st.private_pages_4k);
	report_u64(&r, "private_pages_2m", st.private_pages_2m);
	report_u64(&r, "private_splits", st.private_splits);
	report_u64(&r, "mirror_pt_pages", st.mirror_pt_pages);
	report_u64(&r, "secure_pt_pages", st.secure_pt_pages);
	report_u64(&r, "secure_pages_4k", st.secure_pages_4k);
	report_u64(&r, "secure_pages_2m", st.secure_pages_2m);
	report_u64(&r, "shared_pages_4k", st.pages_4k);
	report_u64(&r, "violations", st.secure_violations);
	if (ok && st.secure_violations) {
		cli_set_error(err, sizeof(err), "the security module counted %" PRIu64 " violations",
			      st.secure_violations);
		ok = false;
	}
	if (ok && atomic_load(&p.conversions) != 2 * (mem / CLI_PAGE_SIZE / PV_SHARE_EVERY)) {
		cli_set_error(err, sizeof(err), "%" PRIu64 " conversions, expected %" PRIu64,
			      atomic_load(&p.conversions), 2 * (mem / CLI_PAGE_SIZE / PV_SHARE_EVERY));
		ok = false;
	}
destroy:
	if (crew_up)
		crew_stop(&crew);
	if (p.vm)
		vmmu_vm_destroy(p.vm);
	free(vcpus);
report:
	return report_finish(&r, o, ok, err);
}

const struct tool_entry scenario_private = {
	.name = "private",
	.desc = "a confidential VM: private RAM, conversions by memory-fault exits, a shared DMA buffer",
	.run = scenario_private_run,
};
