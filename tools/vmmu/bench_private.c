// SPDX-License-Identifier: MIT
/*
 * `vmmu bench private`: what private memory costs (VMMU_VM_PRIVATE, one
 * vCPU, --tdp ept|npt).  Per repetition, on fresh VMs:
 *  - fault: 32 MiB private and 32 MiB shared, every 4K page first-touched
 *    by a write through its alias, the two halves in alternating order:
 *    private_fault_ns and shared_fault_ns per page, and their ratio
 *    private_overhead (target <= 1.5: a private fault adds the frozen
 *    write's cmpxchg and the op, i.e. the module's lock and checks, per table
 *    and per leaf).  Timed with 2M host pages mapped at 4K, so the host's
 *    page zeroing is amortized over 512 faults (mostly MMU work), and again
 *    with 4K host pages ("cold": each fault also waits for the host);
 *  - convert_4k: 2048 mapped private pages converted to shared one call per
 *    page (each removes one private leaf: block, remote flush, track,
 *    remove), then, mapped shared, back to private one by one;
 *  - convert_2m: 64 MiB of 2M private pages converted 2M at a time, then
 *    back (shared 2M mappings zapped): ns per 4K page converted;
 *  - zap_all: a VM with 1 GiB private + 1 GiB shared mapped in 2M pages:
 *    vmmu_zap_all() timed; the private root must be untouched (same leaves
 *    in the mirror and the secure table) and the shared one empty.
 * Every phase is verified: tokens read back through the right alias, zeroes
 * after a round trip, the counters of both roots, the audit, and the
 * module's violation count, which must be 0.  Medians with min and max
 * over --reps; a missed target is reported, not a failure.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "registry.h"

#define BP_FAULT_PAGES		8192u	/* 32 MiB each alias */
#define BP_CONV4K_PAGES		2048u
#define BP_CONV2M_BYTES		(UINT64_C(64) << 20)
#define BP_ZAP_BYTES		CLI_SIZE_1G	/* per alias */
#define BP_TARGET_OVERHEAD	1.5
#define BP_SHARED_BIT		(UINT64_C(1) << 47)
#define PRIV			VMMU_MEMORY_ATTRIBUTE_PRIVATE

struct bp_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	uint8_t *shared;
};

struct bp {
	const struct cli_opts *o;
	char *err;
	size_t len;
	uint64_t violations;
};

static int bp_create(struct bp *b, struct bp_vm *v, uint64_t size, uint64_t host_page, uint32_t flags)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = size, .host_page_size = host_page,
				  .flags = VMMU_MEM_PRIVATE };
	int rc;

	memset(v, 0, sizeof(*v));
	vmmu_vm_config_init(&cfg);
	cfg.tdp_format = b->o->tdp_format;
	cfg.flags = b->o->vm_flags | VMMU_VM_PRIVATE | flags;
	cfg.maxphyaddr = 48;
	cfg.max_vcpus = 1;
	rc = vmmu_vm_create(&cfg, &v->vm);
	if (!rc)
		rc = vmmu_set_memslot(v->vm, &s);
	if (!rc)
		rc = vmmu_memslot_hva(v->vm, 0, (void **)&v->shared);
	if (!rc)
		rc = vmmu_vcpu_create(v->vm, 0, &v->vcpu);
	if (rc)
		cli_set_error(b->err, b->len, "VM setup: %s", vmmu_strerror(rc));
	return rc;
}

/* Audit, violations, bugged; then destroy.  false on any failure. */
static bool bp_destroy(struct bp *b, struct bp_vm *v)
{
	struct vmmu_vm_stats st;
	char why[256];
	bool ok = true;

	if (!v->vm)
		return true;
	vmmu_vm_get_stats(v->vm, &st);
	b->violations += st.secure_violations;
	if (vmmu_audit(v->vm, why, sizeof(why))) {
		cli_set_error(b->err, b->len, "vmmu_audit: %s", why);
		ok = false;
	} else if (vmmu_vm_bugged(v->vm, NULL)) {
		cli_set_error(b->err, b->len, "the VM is bugged");
		ok = false;
	}
	vmmu_vm_destroy(v->vm);
	v->vm = NULL;
	return ok;
}

static uint64_t bp_token(uint64_t gpa, bool shared)
{
	return (shared ? UINT64_C(0x5) << 60 : UINT64_C(0xa) << 60) | gpa | 1;
}

/* One 8-byte access that must complete. */
static bool bp_access(struct bp *b, struct bp_vm *v, uint64_t gpa, bool shared, uint64_t *val, bool write)
{
	struct vmmu_exit x;
	int rc = vmmu_vcpu_access(v->vcpu, gpa | (shared ? BP_SHARED_BIT : 0), val, 8,
				  (write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ) | VMMU_ACCESS_PHYS, &x);

	if (rc) {
		char why[200];

		cli_describe_failure(why, sizeof(why), rc, &x);
		cli_set_error(b->err, b->len, "%s %s of gpa 0x%" PRIx64 ": %s", shared ? "shared" : "private",
			      write ? "write" : "read", gpa, why);
		return false;
	}
	return true;
}

/* Writes (touch) or checks (verify) one token per page of [gpa, +pages*step). */
static bool bp_pass(struct bp *b, struct bp_vm *v, uint64_t gpa, uint64_t pages, uint64_t step, bool shared,
		    bool write, uint64_t want_zero)
{
	for (uint64_t i = 0; i < pages; i++) {
		uint64_t a = gpa + i * step, val = write ? bp_token(a, shared) : 0;

		if (!bp_access(b, v, a, shared, &val, write))
			return false;
		if (!write && val != (want_zero ? 0 : bp_token(a, shared))) {
			cli_set_error(b->err, b->len, "%s read of gpa 0x%" PRIx64 " returned 0x%" PRIx64,
				      shared ? "shared" : "private", a, val);
			return false;
		}
	}
	return true;
}

static bool bp_convert(struct bp *b, struct bp_vm *v, uint64_t gpa, uint64_t size, uint64_t attrs)
{
	int rc = vmmu_set_memory_attributes(v->vm, gpa, size, attrs);

	if (rc)
		cli_set_error(b->err, b->len, "vmmu_set_memory_attributes(0x%" PRIx64 ", 0x%" PRIx64 "): %s", gpa, size,
			      vmmu_strerror(rc));
	return !rc;
}

static bool bp_expect(struct bp *b, const char *what, uint64_t got, uint64_t want)
{
	if (got != want)
		cli_set_error(b->err, b->len, "%s: %" PRIu64 ", expected %" PRIu64, what, got, want);
	return got == want;
}

static struct vmmu_vm_stats bp_stats(struct bp_vm *v)
{
	struct vmmu_vm_stats st;

	vmmu_vm_get_stats(v->vm, &st);
	return st;
}

/*
 * fault: ns per first-touch 4K page of each alias.  warm: 4K mappings of
 * 2M host pages (THP), so one host fault-in (zeroing 2 MiB) serves 512 MMU
 * faults and what is timed is mostly the MMU's own work; cold: 4K host
 * pages, each MMU fault also waits for the host to zero its page.
 */
static bool bp_fault(struct bp *b, unsigned int rep, bool warm, double *priv_ns, double *shared_ns)
{
	struct bp_vm v;
	uint64_t half = (uint64_t)BP_FAULT_PAGES * CLI_PAGE_SIZE, t0;
	bool ok;

	if (bp_create(b, &v, 2 * half, warm ? CLI_SIZE_2M : CLI_PAGE_SIZE, warm ? VMMU_VM_NO_HUGEPAGES : 0))
		return bp_destroy(b, &v), false;
	ok = bp_convert(b, &v, 0, half, PRIV);
	for (int k = 0; ok && k < 2; k++) {
		bool shared = (k + rep) & 1;

		t0 = cli_now_ns();
		ok = bp_pass(b, &v, shared ? half : 0, BP_FAULT_PAGES, CLI_PAGE_SIZE, shared, true, 0);
		*(shared ? shared_ns : priv_ns) = (double)(cli_now_ns() - t0) / BP_FAULT_PAGES;
	}
	ok = ok && bp_pass(b, &v, 0, BP_FAULT_PAGES, CLI_PAGE_SIZE, false, false, 0) &&
	     bp_pass(b, &v, half, BP_FAULT_PAGES, CLI_PAGE_SIZE, true, false, 0) &&
	     bp_expect(b, "private 4K leaves", bp_stats(&v).private_pages_4k, BP_FAULT_PAGES) &&
	     bp_expect(b, "secure 4K leaves", bp_stats(&v).secure_pages_4k, BP_FAULT_PAGES) &&
	     bp_expect(b, "shared 4K leaves", bp_stats(&v).pages_4k, BP_FAULT_PAGES);
	return bp_destroy(b, &v) && ok;
}

/* convert: ns per 4K page converted one call at a time (or 2M at a time). */
static bool bp_convert_pages(struct bp *b, uint64_t host_page, double *to_shared, double *to_private)
{
	bool huge = host_page > CLI_PAGE_SIZE;
	uint64_t bytes = huge ? BP_CONV2M_BYTES : (uint64_t)BP_CONV4K_PAGES * CLI_PAGE_SIZE;
	uint64_t unit = huge ? CLI_SIZE_2M : CLI_PAGE_SIZE, pages = bytes / CLI_PAGE_SIZE, t0;
	struct bp_vm v;
	bool ok;

	if (bp_create(b, &v, bytes, host_page, 0))
		return bp_destroy(b, &v), false;
	ok = bp_convert(b, &v, 0, bytes, PRIV) && bp_pass(b, &v, 0, bytes / unit, unit, false, true, 0) &&
	     bp_expect(b, huge ? "private 2M leaves" : "private 4K leaves",
		       huge ? bp_stats(&v).private_pages_2m : bp_stats(&v).private_pages_4k, bytes / unit);
	t0 = cli_now_ns();
	for (uint64_t a = 0; ok && a < bytes; a += unit)
		ok = bp_convert(b, &v, a, unit, 0);
	*to_shared = (double)(cli_now_ns() - t0) / (double)pages;
	ok = ok && bp_expect(b, "private leaves left", bp_stats(&v).private_pages_4k + bp_stats(&v).private_pages_2m, 0) &&
	     bp_expect(b, "secure leaves left", bp_stats(&v).secure_pages_4k + bp_stats(&v).secure_pages_2m, 0) &&
	     bp_pass(b, &v, 0, bytes / unit, unit, true, true, 0);
	t0 = cli_now_ns();
	for (uint64_t a = 0; ok && a < bytes; a += unit)
		ok = bp_convert(b, &v, a, unit, PRIV);
	*to_private = (double)(cli_now_ns() - t0) / (double)pages;
	/* The round trip: private pages read as zeroes; no shared mapping is left. */
	ok = ok && bp_expect(b, "shared leaves left", bp_stats(&v).pages_4k + bp_stats(&v).pages_2m, 0) &&
	     bp_pass(b, &v, 0, bytes / unit, unit, false, false, 1);
	return bp_destroy(b, &v) && ok;
}

/* zap_all: 1 GiB private + 1 GiB shared mapped; the private root untouched. */
static bool bp_zap_all(struct bp *b, unsigned int reps, double *ms)
{
	uint64_t n2m = BP_ZAP_BYTES / CLI_SIZE_2M;
	struct vmmu_vm_stats before, after;
	struct bp_vm v;
	bool ok;

	if (bp_create(b, &v, 2 * BP_ZAP_BYTES, CLI_SIZE_2M, 0))
		return bp_destroy(b, &v), false;
	ok = bp_convert(b, &v, 0, BP_ZAP_BYTES, PRIV) && bp_pass(b, &v, 0, n2m, CLI_SIZE_2M, false, true, 0);
	for (unsigned int i = 0; ok && i < reps; i++) {
		uint64_t t0;

		ok = bp_pass(b, &v, BP_ZAP_BYTES, n2m, CLI_SIZE_2M, true, i == 0, 0);
		before = bp_stats(&v);
		ok = ok && bp_expect(b, "shared 2M leaves before zap-all", before.pages_2m, n2m) &&
		     bp_expect(b, "private 2M leaves before zap-all", before.private_pages_2m, n2m);
		t0 = cli_now_ns();
		vmmu_zap_all(v.vm);
		ms[i] = (double)(cli_now_ns() - t0) / 1e6;
		after = bp_stats(&v);
		ok = ok && bp_expect(b, "shared 2M leaves after zap-all", after.pages_2m, 0) &&
		     bp_expect(b, "private 2M leaves after zap-all", after.private_pages_2m, n2m) &&
		     bp_expect(b, "secure 2M leaves after zap-all", after.secure_pages_2m, n2m) &&
		     bp_expect(b, "mirror tables after zap-all", after.mirror_pt_pages, before.mirror_pt_pages) &&
		     bp_pass(b, &v, 0, n2m, CLI_SIZE_2M, false, false, 0);
	}
	return bp_destroy(b, &v) && ok;
}

#define BP_MAX_REPS 64

static int bench_private_run(const struct cli_opts *o)
{
	unsigned int reps = cli_reps(o);
	double pf[BP_MAX_REPS], sf[BP_MAX_REPS], ratio[BP_MAX_REPS], pfc[BP_MAX_REPS], sfc[BP_MAX_REPS],
		ratioc[BP_MAX_REPS], c4s[BP_MAX_REPS], c4p[BP_MAX_REPS],
		c4[BP_MAX_REPS], c2s[BP_MAX_REPS], c2p[BP_MAX_REPS], c2[BP_MAX_REPS], zap[BP_MAX_REPS];
	char err[300] = "";
	struct bp b = { .o = o, .err = err, .len = sizeof(err) };
	struct report r;
	bool ok = true;

	report_init(&r);
	report_str(&r, "benchmark", "private");
	report_config(&r, o, 1, 2 * BP_ZAP_BYTES);
	if (o->mmu != VMMU_MMU_TDP)
		return cli_usage_error("bench private: --mmu shadow cannot run a private VM (TDP only)");
	if (reps > BP_MAX_REPS)
		reps = BP_MAX_REPS;
	report_u64(&r, "reps", reps);
	for (unsigned int i = 0; ok && i < reps; i++) {
		ok = bp_fault(&b, i, true, &pf[i], &sf[i]) && bp_fault(&b, i, false, &pfc[i], &sfc[i]) &&
		     bp_convert_pages(&b, CLI_PAGE_SIZE, &c4s[i], &c4p[i]) &&
		     bp_convert_pages(&b, CLI_SIZE_2M, &c2s[i], &c2p[i]);
		ratio[i] = pf[i] / sf[i];
		ratioc[i] = pfc[i] / sfc[i];
		c4[i] = (c4s[i] + c4p[i]) / 2;
		c2[i] = (c2s[i] + c2p[i]) / 2;
	}
	ok = ok && bp_zap_all(&b, reps, zap);
	if (ok) {
		double overhead;

		report_spread(&r, "private_fault_ns", 1, pf, reps);
		report_spread(&r, "shared_fault_ns", 1, sf, reps);
		overhead = report_spread(&r, "private_overhead", 3, ratio, reps);
		report_f(&r, "target_private_overhead", 2, BP_TARGET_OVERHEAD);
		report_spread(&r, "private_fault_cold_ns", 1, pfc, reps);
		report_spread(&r, "shared_fault_cold_ns", 1, sfc, reps);
		report_spread(&r, "private_overhead_cold", 3, ratioc, reps);
		report_bool(&r, "meets_private_overhead", overhead <= BP_TARGET_OVERHEAD);
		report_spread(&r, "convert_4k_ns", 1, c4, reps);
		report_spread(&r, "convert_4k_to_shared_ns", 1, c4s, reps);
		report_spread(&r, "convert_4k_to_private_ns", 1, c4p, reps);
		report_spread(&r, "convert_2m_ns", 1, c2, reps);
		report_spread(&r, "convert_2m_to_shared_ns", 1, c2s, reps);
		report_spread(&r, "convert_2m_to_private_ns", 1, c2p, reps);
		report_spread(&r, "zap_all_ms", 3, zap, reps);
	}
	report_u64(&r, "violations", b.violations);
	if (ok && b.violations) {
		cli_set_error(err, sizeof(err), "the security module counted %" PRIu64 " violations", b.violations);
		ok = false;
	}
	report_bool(&r, "verified", ok);
	return report_finish(&r, o, ok, err);
}

const struct tool_entry bench_private = {
	.name = "private",
	.desc = "private vs shared fault ns, conversion ns per page (4K, 2M), zap-all with a private root",
	.run = bench_private_run,
};
