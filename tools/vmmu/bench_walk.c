/* SPDX-License-Identifier: MIT */
/*
 * `vmmu bench walk`: the cost of a guest translation.  A 4-level guest maps a
 * working set much larger than the TLB with 4K pages over 4-level TDP; every
 * page holds a token, so every timed access also checks its translation.
 *  - tlb_hit_ns:   accesses cycling over fewer pages than the TLB holds;
 *  - walk_2d_ns:   accesses in a random order over the whole set: nearly all
 *                  miss the TLB, so each is a full two-dimensional walk (the
 *                  guest's four levels, each a guest-physical access through
 *                  the TDP, then the final gpa);
 *  - host_access_ns: the host's own load over a buffer of the same size, in
 *                  the same order, each load waiting for the previous one as
 *                  vmmu's accesses do: the floor a real CPU's walker stands
 *                  on (host_access_overlapped_ns: the same loads overlapped).
 * Before timing, a sample of translations is checked against guest_lookup(),
 * a separate software walk of the same tables.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cli.h"
#include "guest.h"
#include "registry.h"

#define WALK_GVA_BASE UINT64_C(0xffff800000000000)
#define WALK_POOL_SIZE (UINT64_C(16) << 20)
#define WALK_HIT_PAGES 256u		/* well inside the 1024-entry TLB */
#define WALK_TARGET_OVERHEAD 3.0
#define WALK_DEFAULT_SET (UINT64_C(256) << 20)

static uint64_t walk_token(uint64_t page, uint64_t seed)
{
	return cli_token_nz(page << 12, seed);
}

/* A random permutation of [0, n): every page once, in an order no
 * prefetcher can follow. */
static uint32_t *make_order(uint64_t n, uint64_t seed)
{
	uint32_t *order = malloc(n * sizeof(*order));
	uint64_t s = seed | 1;

	if (!order)
		return NULL;
	for (uint64_t i = 0; i < n; i++)
		order[i] = (uint32_t)i;
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = cli_xorshift(&s) % (i + 1);
		uint32_t t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	return order;
}

struct walk_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	struct guest_pt *pt;
	uint8_t *ram;
	uint64_t pages;
};

static int walk_vm_create(struct walk_vm *w, const struct cli_opts *o, uint64_t pages, char *err, size_t errlen)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0 };
	struct vmmu_cpu_state st;
	int r;

	memset(w, 0, sizeof(*w));
	w->pages = pages;
	vmmu_vm_config_init(&cfg);
	cfg.tdp_format = o->tdp_format;
	cfg.flags = o->vm_flags;
	s.size = pages * CLI_PAGE_SIZE + WALK_POOL_SIZE;
	if ((r = vmmu_vm_create(&cfg, &w->vm)) || (r = vmmu_set_memslot(w->vm, &s)) ||
	    (r = vmmu_vcpu_create(w->vm, 0, &w->vcpu)) || (r = vmmu_memslot_hva(w->vm, 0, (void **)&w->ram)) ||
	    (r = guest_pt_create(w->vm, GUEST_MODE_4LEVEL, pages * CLI_PAGE_SIZE, WALK_POOL_SIZE, &w->pt)) ||
	    (r = guest_map(w->pt, WALK_GVA_BASE, 0, pages * CLI_PAGE_SIZE, CLI_PAGE_SIZE, GUEST_W | GUEST_NX))) {
		cli_set_error(err, errlen, "VM setup: %s", vmmu_strerror(r));
		return -1;
	}
	guest_pt_state(w->pt, &st, 0);
	r = vmmu_vcpu_set_state(w->vcpu, &st);
	if (r) {
		cli_set_error(err, errlen, "vmmu_vcpu_set_state: %s", vmmu_strerror(r));
		return -1;
	}
	return 0;
}

static void walk_vm_destroy(struct walk_vm *w)
{
	if (w->pt)
		guest_pt_destroy(w->pt);
	if (w->vm)
		vmmu_vm_destroy(w->vm);
}

/* One pass of reads through the vCPU; false on a wrong token or an exit. */
static bool walk_pass(struct walk_vm *w, const uint32_t *order, uint64_t n, uint64_t seed, uint64_t *ns,
		      char *err, size_t errlen)
{
	struct vmmu_exit exit;
	uint64_t t0 = cli_now_ns();

	for (uint64_t i = 0; i < n; i++) {
		uint64_t page = order[i], v = 0;
		int r = vmmu_vcpu_access(w->vcpu, WALK_GVA_BASE + page * CLI_PAGE_SIZE, &v, 8, VMMU_ACCESS_READ,
					 &exit);

		if (r || v != walk_token(page, seed)) {
			cli_describe_failure(err, errlen, r, &exit);
			if (!r)
				cli_set_error(err, errlen, "page %llu: token %#llx, want %#llx",
					      (unsigned long long)page, (unsigned long long)v,
					      (unsigned long long)walk_token(page, seed));
			return false;
		}
	}
	*ns = cli_now_ns() - t0;
	return true;
}

/*
 * The host's own accesses in the same order.  dependent: each address waits
 * for the previous load (its value, masked to zero by a mask the compiler
 * cannot see, is added in), which is how vmmu's accesses run: each one
 * completes before the next starts.  That latency is the floor a hardware
 * walker stands on; the independent pass (out-of-order overlap of misses) is
 * reported too.
 */
static volatile uint64_t zero_mask;

static uint64_t host_pass(const uint8_t *buf, const uint32_t *order, uint64_t n, uint64_t seed, bool dependent,
			  uint64_t *ns)
{
	uint64_t bad = 0, mask = zero_mask, carry = 0, t0 = cli_now_ns();

	if (dependent) {
		for (uint64_t i = 0; i < n; i++) {
			uint64_t page = order[i] + (carry & mask);
			uint64_t v = *(const volatile uint64_t *)(buf + page * CLI_PAGE_SIZE);

			bad += v != walk_token(page, seed);
			carry = v;
		}
	} else {
		for (uint64_t i = 0; i < n; i++) {
			uint64_t page = order[i];

			bad += *(const volatile uint64_t *)(buf + page * CLI_PAGE_SIZE) != walk_token(page, seed);
		}
	}
	*ns = cli_now_ns() - t0;
	return bad;
}

/* Translations of a sample of gvas must match a separate software walk. */
static bool check_against_lookup(struct walk_vm *w, uint64_t seed, char *err, size_t errlen)
{
	uint64_t s = seed | 1;

	for (int i = 0; i < 1000; i++) {
		uint64_t page = cli_xorshift(&s) % w->pages, gpa = 0, size = 0, v = 0;
		struct vmmu_exit exit;

		if (guest_lookup(w->pt, WALK_GVA_BASE + page * CLI_PAGE_SIZE + 8, &gpa, &size, NULL, NULL) ||
		    gpa != page * CLI_PAGE_SIZE + 8 || size != CLI_PAGE_SIZE) {
			cli_set_error(err, errlen, "guest_lookup disagrees for page %llu", (unsigned long long)page);
			return false;
		}
		memcpy(w->ram + gpa, &(uint64_t){ page ^ seed }, 8);
		if (vmmu_vcpu_access(w->vcpu, WALK_GVA_BASE + page * CLI_PAGE_SIZE + 8, &v, 8, VMMU_ACCESS_READ,
				     &exit) ||
		    v != (page ^ seed)) {
			cli_set_error(err, errlen, "vCPU translation of page %llu disagrees with guest_lookup",
				      (unsigned long long)page);
			return false;
		}
	}
	return true;
}

static int bench_walk_run(const struct cli_opts *o)
{
	uint64_t set_bytes = o->mem_bytes < WALK_DEFAULT_SET ? o->mem_bytes : WALK_DEFAULT_SET;
	uint64_t pages = set_bytes / CLI_PAGE_SIZE, seed = o->seed ^ 0x77a1c;
	unsigned reps = cli_reps(o);
	double hit[CLI_MAX_REPS], walk[CLI_MAX_REPS], host[CLI_MAX_REPS], host_tp[CLI_MAX_REPS];
	uint32_t *order = NULL, hit_order[WALK_HIT_PAGES];
	uint8_t *hbuf = MAP_FAILED;
	struct walk_vm w = { 0 };
	struct report r;
	char err[256] = "";
	bool ok = false;

	report_init(&r);
	report_str(&r, "benchmark", "walk");
	report_u64(&r, "reps", reps);
	report_str(&r, "guest", "4-level");
	report_str(&r, "tdp", cli_tdp_name(o->tdp_format));
	report_u64(&r, "pages", pages);
	if (pages < 4 * WALK_HIT_PAGES) {
		cli_set_error(err, sizeof(err), "--mem too small for a working set beyond the TLB");
		return report_finish(&r, o, false, err);
	}
	order = make_order(pages, seed);
	hbuf = mmap(NULL, pages * CLI_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!order || hbuf == MAP_FAILED || walk_vm_create(&w, o, pages, err, sizeof(err))) {
		if (!err[0])
			cli_set_error(err, sizeof(err), "out of memory");
		goto out;
	}
	(void)madvise(hbuf, pages * CLI_PAGE_SIZE, MADV_NOHUGEPAGE);
	for (uint64_t p = 0; p < pages; p++) {
		uint64_t t = walk_token(p, seed);

		memcpy(w.ram + p * CLI_PAGE_SIZE, &t, 8);
		memcpy(hbuf + p * CLI_PAGE_SIZE, &t, 8);
	}
	for (unsigned i = 0; i < WALK_HIT_PAGES; i++)
		hit_order[i] = (uint32_t)(i * 7 % WALK_HIT_PAGES);
	/* Untimed pass: faults the data and the guest's page tables into the
	 * TDP, so the timed passes measure translation, not MMU faults. */
	{
		uint64_t ns;

		if (!walk_pass(&w, order, pages, seed, &ns, err, sizeof(err)))
			goto out;
	}
	if (!check_against_lookup(&w, seed, err, sizeof(err)))
		goto out;
	for (uint64_t p = 0; p < pages; p++)
		memcpy(w.ram + p * CLI_PAGE_SIZE + 8, &(uint64_t){ 0 }, 8);

	for (unsigned rep = 0; rep < reps; rep++) {
		uint64_t ns, n_hit = 0, ns_hit = 0;

		if (!walk_pass(&w, order, pages, seed, &ns, err, sizeof(err)))
			goto out;
		walk[rep] = (double)ns / (double)pages;
		if (host_pass(hbuf, order, pages, seed, true, &ns)) {
			cli_set_error(err, sizeof(err), "host buffer corrupted");
			goto out;
		}
		host[rep] = (double)ns / (double)pages;
		if (host_pass(hbuf, order, pages, seed, false, &ns)) {
			cli_set_error(err, sizeof(err), "host buffer corrupted");
			goto out;
		}
		host_tp[rep] = (double)ns / (double)pages;
		/* Warm the TLB on the small set, then time cycles over it. */
		for (unsigned k = 0; k < 64; k++) {
			if (!walk_pass(&w, hit_order, WALK_HIT_PAGES, seed, &ns, err, sizeof(err)))
				goto out;
			if (k) {
				ns_hit += ns;
				n_hit += WALK_HIT_PAGES;
			}
		}
		hit[rep] = (double)ns_hit / (double)n_hit;
	}
	{
		struct vmmu_vcpu_stats st;
		double over;

		vmmu_vcpu_get_stats(w.vcpu, &st);
		report_spread(&r, "tlb_hit_ns", 1, hit, reps);
		report_spread(&r, "walk_2d_ns", 1, walk, reps);
		report_spread(&r, "host_access_ns", 1, host, reps);
		report_spread(&r, "host_access_overlapped_ns", 1, host_tp, reps);
		over = report_ratio(&r, "walk_overhead", 3, walk, host, reps);
		report_f(&r, "target_walk_overhead", 3, WALK_TARGET_OVERHEAD);
		report_bool(&r, "meets_walk_overhead", over <= WALK_TARGET_OVERHEAD);
		report_u64(&r, "tlb_misses", st.tlb_misses);
		report_u64(&r, "tdp_faults", st.pf_taken);
		ok = true;
	}
out:
	free(order);
	if (hbuf != MAP_FAILED)
		munmap(hbuf, pages * CLI_PAGE_SIZE);
	walk_vm_destroy(&w);
	return report_finish(&r, o, ok, err);
}

const struct tool_entry bench_walk = {
	.name = "walk",
	.desc = "ns per guest translation: TLB hit and full 2D walk vs a host access",
	.run = bench_walk_run,
};
