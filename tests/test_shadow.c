/* SPDX-License-Identifier: MIT */
/*
 * Shadow paging, tested through the public API only, so that every test
 * that makes sense without shadow paging runs on the TDP variants too (the
 * guest-visible contract is the same; only the MMU behind it differs).
 *
 *  - model_random: several guest address spaces (own pools, one paging mode
 *    per run, every mode the variant allows) are changed at random by guest
 *    stores (the guest library writes through the vCPU, and some PTEs are
 *    written through a "direct map" gva alias of the page-table pool, the
 *    way a guest kernel writes them), while the vCPU switches CR3 (with and
 *    without PCIDs and the no-flush bit), invalidates (INVLPG, flushing CR3
 *    loads, CR4.PGE toggles, paging off and on), changes its role bits (WP,
 *    SMEP, SMAP, AC, NXE, CPL) and reads, writes and fetches.  A reference
 *    model predicts every access: the current translation comes from the
 *    model's own record of the guest tables (cross-checked against the
 *    guest's tables in guest memory at every access), plus the set of
 *    translations the TLB may still hold, as the architecture allows (SDM
 *    4.10): a translation may be used after the guest changed it until it is
 *    invalidated for its PCID (or globally); a not-present entry is never
 *    cached.  With nothing stale the outcome (data, MMIO exit and gpa, #PF
 *    error code, #GP) must match exactly, and A/D must be set in the guest
 *    leaf.  Data is checked against a shadow copy of guest memory; writes
 *    must land at exactly one allowed gpa.  vmmu_audit() after every step.
 *  - model_random_threads: the same with one model per vCPU thread over
 *    disjoint memory, plus one page table shared by every address space of
 *    every thread (its PTEs changed by thread 0), and a host thread that
 *    zaps, flushes, toggles dirty logging, harvests and audits meanwhile.
 *  - role_reuse: mmu_ctx_rebuilds counts role changes and nothing else.
 *  - prev_roots (shadow): cached roots make CR3 switches fast.
 *  - pt_write_tracking (shadow): guest stores to shadowed tables are seen;
 *    write flooding zaps a former table.
 *  - mmio_generation: a cached MMIO translation never outlives a memslot
 *    change that makes its gpa RAM (and back).
 *  - shadow_page_cap (shadow): shadow_max_pages holds, pages are recycled.
 *
 * Failures name the seed and step; the last operations are printed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "shadow_model.h"

static bool mode_fits(const struct mmu_variant *var, enum guest_mode mode)
{
	return mode != GUEST_MODE_5LEVEL || var->tdp_levels == 5;
}

/* VMMU_TEST_VARIANT=name runs the model tests on that variant only. */
static bool variant_skipped(const struct mmu_variant *var)
{
	const char *only = getenv("VMMU_TEST_VARIANT");

	return only && strcmp(only, var->name);
}

/* Fixed seeds; override with VMMU_SHADOW_SEED to replay or explore. */
static uint64_t base_seed(void)
{
	const char *s = getenv("VMMU_SHADOW_SEED");

	return s ? strtoull(s, NULL, 0) : 0x5eed5eedULL;
}

static uint64_t model_host_page(enum guest_mode mode)
{
	return (mode == GUEST_MODE_PAE || mode == GUEST_MODE_5LEVEL) ? GUEST_PAGE_2M : 0;
}

static vmmu_vm *model_vm(const struct mmu_variant *var, enum guest_mode mode)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	/* 2M host pages in half the runs: huge SPTEs behind huge guest pages. */
	add_ram(vm, 0, 0, RAM0_SIZE, model_host_page(mode));
	add_ram(vm, 1, S1_BASE, RAM1_SIZE, model_host_page(mode));
	return vm;
}

TEST(model_random)
{
	double budget = UNDER_SANITIZER ? 0.3 : 1.0;
	uint64_t max_steps = UNDER_SANITIZER ? 3000 : 200000;
	unsigned int vi = 0;

	for_each_mmu_variant(var) {
		vi++;
		if (variant_skipped(var))
			continue;
		for (enum guest_mode mode = GUEST_MODE_32; mode <= GUEST_MODE_5LEVEL; mode++) {
			static struct eng e;	/* large: keep it off the stack */
			vmmu_vm *vm;
			vmmu_vcpu *vcpu;
			double t0 = now_s();
			int r;

			if (!mode_fits(var, mode))
				continue;
			vm = model_vm(var, mode);
			ASSERT_OK(vmmu_vcpu_create(vm, 0, &vcpu));
			r = eng_init(&e, vm, vcpu, mode, 0, 4, base_seed() + vi * 16 + mode, NULL);
			if (!r)
				r = eng_run(&e, max_steps, t0 + budget, true);
			eng_report(&e, var->name, now_s() - t0);
			if (r)
				test_fail(__FILE__, __LINE__, "%s", e.why);
			ASSERT_AUDIT(vm);
			assert_not_bugged(vm);
			eng_fini(&e);
			vmmu_vm_destroy(vm);
		}
	}
}

#define NTHREADS 3

struct host_ctl {
	vmmu_vm *vm;
	uint64_t host_page;		/* of slot 0: a flags change keeps it */
	_Atomic bool stop;
	uint64_t rng;
	uint64_t n_zap_all, n_zap_range, n_log, n_harvest, n_flush, n_audit;
	bool failed;
	char why[512];
};

static void *eng_thread(void *arg)
{
	struct eng *e = arg;
	double budget = UNDER_SANITIZER ? 0.4 : 1.2;

	(void)eng_run(e, UNDER_SANITIZER ? 20000 : 1000000, now_s() + budget, false);
	return NULL;
}

static void *host_thread(void *arg)
{
	struct host_ctl *h = arg;
	struct vmmu_memslot ms[2] = {
		{ .slot = 0, .gpa = 0, .size = RAM0_SIZE, .host_page_size = h->host_page },
		{ .slot = 1, .gpa = S1_BASE, .size = RAM1_SIZE, .host_page_size = h->host_page },
	};
	uint64_t *bitmap = calloc(RAM0_SIZE / PAGE / 64, 8);
	bool logging[2] = { false, false };

	while (!atomic_load(&h->stop) && !h->failed) {
		uint64_t p = xorshift(&h->rng) % 100;
		struct timespec ts = { 0, (long)(200000 + xorshift(&h->rng) % 1500000) };

		if (p < 10) {
			vmmu_zap_all(h->vm);
			h->n_zap_all++;
		} else if (p < 40) {
			/* Pools, data slices or shared pages: tables and data alike. */
			static const uint64_t areas[] = { POOL_BASE, S0_BASE, S1_BASE, SD_BASE, SHARED_POOL };
			uint64_t a = areas[xorshift(&h->rng) % 5] / PAGE + xorshift(&h->rng) % 2048;
			int r = vmmu_zap_gfn_range(h->vm, a, a + 1 + xorshift(&h->rng) % 1024);

			if (r) {
				snprintf(h->why, sizeof(h->why), "vmmu_zap_gfn_range = %d", r);
				h->failed = true;
			}
			h->n_zap_range++;
		} else if (p < 52) {
			int k = (int)(xorshift(&h->rng) % 2);

			logging[k] = !logging[k];
			ms[k].flags = logging[k] ? VMMU_MEM_LOG_DIRTY_PAGES : 0;
			if (vmmu_set_memslot(h->vm, &ms[k])) {
				snprintf(h->why, sizeof(h->why), "dirty logging %d of slot %d failed", logging[k], k);
				h->failed = true;
			}
			h->n_log++;
		} else if (p < 70) {
			int k = (int)(xorshift(&h->rng) % 2);

			if (logging[k] && bitmap) {
				int r = vmmu_get_dirty_log(h->vm, (uint32_t)k, bitmap);

				if (r) {
					snprintf(h->why, sizeof(h->why), "vmmu_get_dirty_log = %d", r);
					h->failed = true;
				}
				h->n_harvest++;
			}
		} else if (p < 80) {
			vmmu_flush_remote_tlbs(h->vm);
			h->n_flush++;
		} else {
			char why[256];

			if (vmmu_audit(h->vm, why, sizeof(why))) {
				snprintf(h->why, sizeof(h->why), "vmmu_audit (host thread): %s", why);
				h->failed = true;
			}
			h->n_audit++;
		}
		nanosleep(&ts, NULL);
	}
	for (int k = 0; k < 2; k++) {
		if (logging[k]) {
			ms[k].flags = 0;
			(void)vmmu_set_memslot(h->vm, &ms[k]);
		}
	}
	free(bitmap);
	return NULL;
}

TEST(model_random_threads)
{
	int nthreads = UNDER_SANITIZER ? 2 : NTHREADS;
	unsigned int vi = 0;

	for_each_mmu_variant(var) {
		static struct eng engs[NTHREADS];
		enum guest_mode mode = (enum guest_mode)(vi % 4);
		struct shared sh;
		struct host_ctl h;
		vmmu_vcpu *vcpus[NTHREADS];
		pthread_t t[NTHREADS], ht;
		vmmu_vm *vm;
		double t0 = now_s();

		vi++;
		if (variant_skipped(var))
			continue;
		if (!mode_fits(var, mode))
			mode = GUEST_MODE_4LEVEL;
		vm = model_vm(var, mode);
		for (int i = 0; i < nthreads; i++)
			ASSERT_OK(vmmu_vcpu_create(vm, (unsigned int)i, &vcpus[i]));
		/* The shared table: SD pages version 0, written by vCPU 0. */
		memset(&sh, 0, sizeof(sh));
		ASSERT_OK(guest_pt_create(vm, mode, SHARED_POOL, 16 * PAGE, &sh.pt));
		guest_pt_set_vcpu(sh.pt, vcpus[0]);
		for (int i = 0; i < SD_PAGES; i++) {
			for (int v = 0; v < 2; v++)
				for (uint64_t o = 0; o < PAGE; o += 8)
					host_wr64(vm, sd_page(i, v) + o, pat(sd_page(i, v) + o));
			ASSERT_OK(guest_map(sh.pt, SHV_GVA + (uint64_t)i * PAGE, sd_page(i, 0), PAGE, PAGE, 0));
		}
		for (int i = 0; i < nthreads; i++) {
			int r = eng_init(&engs[i], vm, vcpus[i], mode, i, 2, base_seed() * 31 + vi * 8 + (unsigned)i, &sh);

			if (r)
				test_fail(__FILE__, __LINE__, "%s", engs[i].why);
		}
		memset(&h, 0, sizeof(h));
		h.vm = vm;
		h.host_page = model_host_page(mode);
		h.rng = base_seed() ^ 0x4057;
		ASSERT_EQ(pthread_create(&ht, NULL, host_thread, &h), 0);
		for (int i = 0; i < nthreads; i++)
			ASSERT_EQ(pthread_create(&t[i], NULL, eng_thread, &engs[i]), 0);
		for (int i = 0; i < nthreads; i++)
			pthread_join(t[i], NULL);
		atomic_store(&h.stop, true);
		pthread_join(ht, NULL);
		for (int i = 0; i < nthreads; i++)
			eng_report(&engs[i], var->name, now_s() - t0);
		fprintf(stderr, "    %-9s host: zap-all %llu zap-range %llu log-toggles %llu harvests %llu flushes %llu audits %llu\n",
			var->name, (unsigned long long)h.n_zap_all, (unsigned long long)h.n_zap_range,
			(unsigned long long)h.n_log, (unsigned long long)h.n_harvest, (unsigned long long)h.n_flush,
			(unsigned long long)h.n_audit);
		for (int i = 0; i < nthreads; i++)
			if (engs[i].failed)
				test_fail(__FILE__, __LINE__, "%s", engs[i].why);
		if (h.failed)
			test_fail(__FILE__, __LINE__, "%s", h.why);
		ASSERT_AUDIT(vm);
		assert_not_bugged(vm);
		for (int i = 0; i < nthreads; i++)
			eng_fini(&engs[i]);
		guest_pt_destroy(sh.pt);
		vmmu_vm_destroy(vm);
	}
}


/* ========================================================================== */
/* 3. role_reuse                                                               */
/* ========================================================================== */

/*
 * Applies s and checks how mmu_ctx_rebuilds moved: by exactly `want` (one
 * state load rebuilds the context once when the role changed, never when
 * it did not).
 */
#define SET_AND_EXPECT(f, s, want, what)                                                             \
	do {                                                                                         \
		struct vmmu_vcpu_stats a_, b_;                                                       \
		vstats((f), &a_);                                                                    \
		ASSERT_OK(vmmu_vcpu_set_state((f)->vcpu, &(s)));                                     \
		vstats((f), &b_);                                                                    \
		if (b_.mmu_ctx_rebuilds - a_.mmu_ctx_rebuilds != (uint64_t)(want))                   \
			test_fail(__FILE__, __LINE__, "%s: mmu_ctx_rebuilds moved by %llu, want %d", \
				  (what), (unsigned long long)(b_.mmu_ctx_rebuilds - a_.mmu_ctx_rebuilds), (int)(want)); \
	} while (0)

TEST(role_reuse)
{
	bool shadow_landed = shadow_supported();

	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *p4a, *p4b, *p32, *ppae;
		struct vmmu_cpu_state s, s0;
		struct vmmu_vcpu_stats st0, st1;
		const uint64_t X = 0x40000000ULL, RO = 0x40001000ULL, D = S0_BASE, D2 = S0_BASE + PAGE;

		fix_variant(&f, var);
		p4a = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		p4b = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE + 64 * PAGE, 64 * PAGE);
		p32 = fix_pt(&f, GUEST_MODE_32, POOL_BASE + 128 * PAGE, 64 * PAGE);
		ppae = fix_pt(&f, GUEST_MODE_PAE, POOL_BASE + 192 * PAGE, 64 * PAGE);
		host_wr64(f.vm, D, 0x1111);
		host_wr64(f.vm, D2, 0x2222);
		/* X: user, writable; RO: user, read-only. */
		ASSERT_OK(guest_map(p4a, X, D, PAGE, PAGE, GUEST_W | GUEST_U));
		ASSERT_OK(guest_map(p4a, RO, D2, PAGE, PAGE, GUEST_U));
		ASSERT_OK(guest_map(p4b, X, D2, PAGE, PAGE, GUEST_W | GUEST_U));
		ASSERT_OK(guest_map(p32, X, D, PAGE, PAGE, GUEST_W | GUEST_U));
		ASSERT_OK(guest_map(p32, X + GUEST_PAGE_4M, D & ~(GUEST_PAGE_4M - 1), GUEST_PAGE_4M, GUEST_PAGE_4M,
				    GUEST_W));
		ASSERT_OK(guest_map(ppae, X, D2, PAGE, PAGE, GUEST_W | GUEST_U));

		/* Paging on: the mode changes. */
		guest_pt_state(p4a, &s, 0);
		vstats(&f, &st0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		vstats(&f, &st1);
		if (st1.mmu_ctx_rebuilds == st0.mmu_ctx_rebuilds && !shadow_landed) {
			fix_destroy(&f);
			SKIP("mmu_ctx_rebuilds is not counted yet (shadow paging has not landed)");
		}
		ASSERT_EQ(st1.mmu_ctx_rebuilds - st0.mmu_ctx_rebuilds, 1);
		EXPECT_READ(&f, X, 0x1111);

		/* Same role. */
		SET_AND_EXPECT(&f, s, 0, "the same state again");
		s0 = s;
		s.cr4 |= VMMU_CR4_PGE;
		SET_AND_EXPECT(&f, s, 0, "CR4.PGE on");
		s.cr4 &= ~VMMU_CR4_PGE;
		SET_AND_EXPECT(&f, s, 0, "CR4.PGE off");
		s.cr4 |= VMMU_CR4_PCIDE;
		SET_AND_EXPECT(&f, s, 0, "CR4.PCIDE on (long mode)");
		{
			struct vmmu_vcpu_stats a, b;

			vstats(&f, &a);
			ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(p4b) | 2));
			EXPECT_READ(&f, X, 0x2222);
			ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(p4a) | 1 | VMMU_CR3_PCID_NOFLUSH));
			EXPECT_READ(&f, X, 0x1111);
			vstats(&f, &b);
			ASSERT_EQ(b.mmu_ctx_rebuilds - a.mmu_ctx_rebuilds, 0);
		}
		ASSERT_OK(vmmu_vcpu_get_state(f.vcpu, &s));
		s.cr4 &= ~VMMU_CR4_PCIDE;
		s.cr3 = guest_pt_cr3(p4a);
		SET_AND_EXPECT(&f, s, 0, "CR4.PCIDE off");
		s.cr3 = guest_pt_cr3(p4b);
		SET_AND_EXPECT(&f, s, 0, "CR3 only (set_state)");
		EXPECT_READ(&f, X, 0x2222);
		s.cr3 = guest_pt_cr3(p4a);
		SET_AND_EXPECT(&f, s, 0, "CR3 back");
		s.cpl = 3;
		SET_AND_EXPECT(&f, s, 0, "CPL 3");
		EXPECT_READ(&f, X, 0x1111);
		EXPECT_PF(&f, RO, VMMU_ACCESS_WRITE, PF_P | PF_W | PF_U);
		s.cpl = 0;
		SET_AND_EXPECT(&f, s, 0, "CPL 0");
		s.rflags = VMMU_RFLAGS_AC;
		SET_AND_EXPECT(&f, s, 0, "RFLAGS.AC");
		s.rflags = 0;
		s.pkru = 0xc;
		SET_AND_EXPECT(&f, s, 0, "PKRU");
		s.pkru = 0;
		SET_AND_EXPECT(&f, s, 0, "PKRU back");

		/* Role changes, each checked by the access it changes. */
		EXPECT_PF(&f, RO, VMMU_ACCESS_WRITE, PF_P | PF_W);
		s.cr0 &= ~VMMU_CR0_WP;
		SET_AND_EXPECT(&f, s, 1, "CR0.WP off");
		EXPECT_WRITE(&f, RO, 0x2223);	/* supervisor writes ignore R/W with WP=0 */
		EXPECT_READ(&f, RO, 0x2223);
		s.cr0 |= VMMU_CR0_WP;
		SET_AND_EXPECT(&f, s, 1, "CR0.WP on");
		EXPECT_PF(&f, RO, VMMU_ACCESS_WRITE, PF_P | PF_W);
		s.cr4 |= VMMU_CR4_SMEP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMEP on");
		EXPECT_PF(&f, X, VMMU_ACCESS_FETCH, PF_P | PF_ID);
		s.cr4 &= ~VMMU_CR4_SMEP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMEP off");
		EXPECT_READ(&f, X, 0x1111);
		s.cr4 |= VMMU_CR4_SMAP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMAP on");
		EXPECT_PF(&f, X, VMMU_ACCESS_READ, PF_P);
		s.rflags = VMMU_RFLAGS_AC;
		SET_AND_EXPECT(&f, s, 0, "RFLAGS.AC with SMAP");
		EXPECT_READ(&f, X, 0x1111);
		s.rflags = 0;
		s.cr4 &= ~VMMU_CR4_SMAP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMAP off");
		s.efer &= ~VMMU_EFER_NXE;
		SET_AND_EXPECT(&f, s, 1, "EFER.NXE off");
		EXPECT_READ(&f, X, 0x1111);
		s.efer |= VMMU_EFER_NXE;
		SET_AND_EXPECT(&f, s, 1, "EFER.NXE on");

		/* Mode changes: out of long mode through paging off. */
		memset(&s, 0, sizeof(s));
		s.cr0 = VMMU_CR0_PE;
		SET_AND_EXPECT(&f, s, 1, "paging off");
		EXPECT_READ(&f, D, 0x1111);
		guest_pt_state(p32, &s, 0);
		SET_AND_EXPECT(&f, s, 1, "32-bit paging");
		EXPECT_READ(&f, X, 0x1111);
		EXPECT_READ(&f, X + GUEST_PAGE_4M + (D & (GUEST_PAGE_4M - 1)), 0x1111);
		SET_AND_EXPECT(&f, s, 0, "32-bit, same state");
		s.cr4 |= VMMU_CR4_PGE;
		SET_AND_EXPECT(&f, s, 0, "32-bit, CR4.PGE on");
		s.cr4 &= ~VMMU_CR4_PSE;
		SET_AND_EXPECT(&f, s, 1, "32-bit, CR4.PSE off");
		/* Without PSE, PS is ignored: the PDE is a table pointer now, so
		 * only check that it is no longer a 4M page of that data. */
		s.cr4 |= VMMU_CR4_PSE;
		SET_AND_EXPECT(&f, s, 1, "32-bit, CR4.PSE on");
		EXPECT_READ(&f, X + GUEST_PAGE_4M + (D & (GUEST_PAGE_4M - 1)), 0x1111);
		guest_pt_state(ppae, &s, 0);
		SET_AND_EXPECT(&f, s, 1, "32-bit -> PAE");
		EXPECT_READ(&f, X, 0x2223);
		SET_AND_EXPECT(&f, s, 0, "PAE, same state");
		s.cr0 &= ~VMMU_CR0_WP;
		SET_AND_EXPECT(&f, s, 1, "PAE, CR0.WP off");
		(void)s0;
		guest_pt_destroy(p4a);
		guest_pt_destroy(p4b);
		guest_pt_destroy(p32);
		guest_pt_destroy(ppae);
		fix_destroy(&f);
	}
}

/* ========================================================================== */
/* 4. prev_roots                                                               */
/* ========================================================================== */

/*
 * Round-robin CR3 switches among n spaces (each mapping PR_GVA to its own
 * page, holding its index); every switch is followed by a read and a write
 * that must reach that space's page.  Returns the switches done.
 */
#define PR_GVA 0x40000000ULL

static uint64_t pr_rounds(struct fix *f, struct guest_pt **pts, int n, int rounds, bool pcid, uint64_t *seq)
{
	uint64_t switches = 0;

	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < n; i++) {
			uint64_t cr3 = guest_pt_cr3(pts[(i + 1) % n]);
			int k = (i + 1) % n;

			if (pcid)
				cr3 |= (uint64_t)(k + 1) | VMMU_CR3_PCID_NOFLUSH;
			ASSERT_OK(vmmu_vcpu_write_cr3(f->vcpu, cr3));
			switches++;
			EXPECT_READ(f, PR_GVA, ((uint64_t)k << 32) | seq[k]);
			seq[k]++;
			EXPECT_WRITE(f, PR_GVA, ((uint64_t)k << 32) | seq[k]);
			ASSERT_EQ_U64(host_rd64(f->vm, S0_BASE + (uint64_t)k * PAGE), ((uint64_t)k << 32) | seq[k]);
		}
	}
	return switches;
}

static void pr_case(uint32_t prev, int n, bool pcid, enum guest_mode mode, const char *name)
{
	struct fix f;
	struct guest_pt *pts[8];
	struct vmmu_cpu_state s;
	struct vmmu_vcpu_stats a, b;
	uint64_t seq[8] = { 0 }, sw;
	int r;

	fix_create(&f, shadow_vm(prev, 0));
	for (int i = 0; i < n; i++) {
		pts[i] = fix_pt(&f, mode, POOL_BASE + (uint64_t)i * 64 * PAGE, 64 * PAGE);
		host_wr64(f.vm, S0_BASE + (uint64_t)i * PAGE, (uint64_t)i << 32);
		ASSERT_OK(guest_map(pts[i], PR_GVA, S0_BASE + (uint64_t)i * PAGE, PAGE, PAGE, GUEST_W));
	}
	guest_pt_state(pts[0], &s, 0);
	r = vmmu_vcpu_set_state(f.vcpu, &s);
	if (r == VMMU_ENOTSUP) {
		fprintf(stderr, "    %s: %s paging not supported here\n", name, mode_names[mode]);
		goto out;
	}
	ASSERT_OK(r);
	if (pcid) {
		s.cr4 |= VMMU_CR4_PCIDE;
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	}
	EXPECT_READ(&f, PR_GVA, 0);
	/* The first round creates the roots. */
	pr_rounds(&f, pts, n, 1, pcid, seq);
	vstats(&f, &a);
	sw = pr_rounds(&f, pts, n, 3, pcid, seq);
	vstats(&f, &b);
	fprintf(stderr, "    %s: %s, %u previous roots, %d spaces%s: %llu switches: %llu fast, %llu slow\n", name,
		mode_names[mode], prev, n, pcid ? ", PCID no-flush" : "", (unsigned long long)sw,
		(unsigned long long)(b.root_fast_switches - a.root_fast_switches),
		(unsigned long long)(b.root_slow_switches - a.root_slow_switches));
	if ((uint32_t)n <= prev + 1) {
		/* Every root is cached: all fast. */
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches, sw);
		ASSERT_EQ(b.root_slow_switches - a.root_slow_switches, 0);
	} else if (prev == 0) {
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches, 0);
		ASSERT_EQ(b.root_slow_switches - a.root_slow_switches, sw);
	} else {
		/* More spaces than cached roots, visited round robin. */
		ASSERT_GT(b.root_slow_switches - a.root_slow_switches, 0);
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches + b.root_slow_switches - a.root_slow_switches, sw);
	}
out:
	for (int i = 0; i < n; i++)
		guest_pt_destroy(pts[i]);
	fix_destroy(&f);
}

TEST(prev_roots)
{
	pr_case(3, 4, false, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(3, 4, true, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(3, 4, false, GUEST_MODE_5LEVEL, "prev_roots");
	pr_case(3, 5, false, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(0, 2, false, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(0, 3, true, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(VMMU_MAX_PREV_ROOTS, 8, false, GUEST_MODE_4LEVEL, "prev_roots");
}

/* ========================================================================== */
/* 5. pt_write_tracking                                                        */
/* ========================================================================== */

struct tstat {
	struct vmmu_vcpu_stats v;
	struct vmmu_vm_stats m;
};

static void tstat(struct fix *f, struct tstat *t)
{
	memset(t, 0, sizeof(*t));
	vmmu_vcpu_get_stats(f->vcpu, &t->v);
	vmmu_vm_get_stats(f->vm, &t->m);
}

/* A guest store to a shadowed table was seen: emulated, or unsynced. */
static bool tracked(const struct tstat *a, const struct tstat *b, const struct tstat *c)
{
	return b->v.pt_write_emulations > a->v.pt_write_emulations || b->m.shadow_unsync_pages > 0 ||
	       c->v.unsync_syncs > a->v.unsync_syncs;
}

static void print_delta(const char *what, const struct tstat *a, const struct tstat *b)
{
	fprintf(stderr,
		"    %s: pt_write_emulations +%llu, shadow_pte_writes +%llu, unsync now %llu, unsync_syncs +%llu, "
		"flooded +%llu, shadow pages %llu (created +%llu, zapped +%llu)\n",
		what, (unsigned long long)(b->v.pt_write_emulations - a->v.pt_write_emulations),
		(unsigned long long)(b->m.shadow_pte_writes - a->m.shadow_pte_writes),
		(unsigned long long)b->m.shadow_unsync_pages, (unsigned long long)(b->v.unsync_syncs - a->v.unsync_syncs),
		(unsigned long long)(b->m.shadow_flooded - a->m.shadow_flooded), (unsigned long long)b->m.shadow_pages,
		(unsigned long long)(b->m.shadow_pages_created - a->m.shadow_pages_created),
		(unsigned long long)(b->m.shadow_pages_zapped - a->m.shadow_pages_zapped));
}

TEST(pt_write_tracking)
{
	struct fix f;
	struct guest_pt *pt, *pt2;
	struct vmmu_cpu_state s;
	struct tstat t0, t1, t2;
	const uint64_t X = 0x40000000ULL, ALIAS = 0x50000000ULL, BIG = 0x40400000ULL, FL = 0x60000000ULL;
	const uint64_t A = S0_BASE, B = S0_BASE + PAGE, C = S0_BASE + 2 * PAGE, H = S0_BASE + 2 * MB;
	uint64_t pte_gpa, pde, p1, pd2, used0, used1, fr;
	uint64_t flooded_before;

	fix_create(&f, shadow_vm(3, 0));
	pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
	pt2 = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE + 64 * PAGE, 64 * PAGE);
	host_wr64(f.vm, A, 0xa);
	host_wr64(f.vm, B, 0xb);
	host_wr64(f.vm, C, 0xc);
	host_wr64(f.vm, H + 0x3000, 0x4);
	ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
	ASSERT_OK(guest_map(pt, X + PAGE, A, PAGE, PAGE, GUEST_W));	/* keeps X's table alive later */
	guest_pt_state(pt, &s, 0);
	ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	EXPECT_READ(&f, X, 0xa);	/* X's table is shadowed now */

	/* (a) A PTE change by a guest-physical store (the library's writer). */
	tstat(&f, &t0);
	ASSERT_OK(guest_map(pt, X, B, PAGE, PAGE, GUEST_W));
	tstat(&f, &t1);
	vmmu_vcpu_invlpg(f.vcpu, X);
	EXPECT_READ(&f, X, 0xb);
	tstat(&f, &t2);
	print_delta("PTE store (phys)", &t0, &t2);
	ASSERT_TRUE(tracked(&t0, &t1, &t2));

	/* (b) The same through a gva alias of the table (a kernel's store). */
	ASSERT_OK(guest_get_entry(pt, X, 1, &pde, &pte_gpa));
	ASSERT_OK(guest_map(pt, ALIAS, pte_gpa & ~(PAGE - 1), PAGE, PAGE, GUEST_W));
	tstat(&f, &t0);
	{
		uint64_t nv = C | GUEST_PTE_P | GUEST_W;

		EXPECT_WRITE(&f, ALIAS + (pte_gpa & (PAGE - 1)), nv);
		ASSERT_EQ_U64(host_rd64(f.vm, pte_gpa), nv);
	}
	tstat(&f, &t1);
	vmmu_vcpu_invlpg(f.vcpu, X);
	EXPECT_READ(&f, X, 0xc);
	tstat(&f, &t2);
	print_delta("PTE store (gva alias)", &t0, &t2);
	ASSERT_TRUE(tracked(&t0, &t1, &t2));
	/* Reading the table through the alias sees what the guest wrote. */
	EXPECT_READ(&f, ALIAS + (pte_gpa & (PAGE - 1)), host_rd64(f.vm, pte_gpa));

	/* (c) A new 2M leaf in the shadowed directory: not present before, so
	 * it must be used at once, without INVLPG. */
	tstat(&f, &t0);
	ASSERT_OK(guest_map(pt, BIG, H, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
	tstat(&f, &t1);
	EXPECT_READ(&f, BIG + 0x3000, 0x4);
	tstat(&f, &t2);
	print_delta("PDE store", &t0, &t2);
	ASSERT_TRUE(tracked(&t0, &t1, &t2));
	/* A present 2M leaf changed to another frame: seen after INVLPG. */
	ASSERT_OK(guest_map(pt, BIG, S0_BASE, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
	vmmu_vcpu_invlpg(f.vcpu, BIG);
	EXPECT_READ(&f, BIG + PAGE, 0xb);
	ASSERT_AUDIT(f.vm);

	/* (d) Write flooding, first on a freed leaf table: X's 2M region is
	 * unmapped, its table goes back to the pool, and the guest reuses the
	 * page as data with many (emulated, physical) stores. */
	ASSERT_OK(guest_get_entry(pt, X, 2, &pde, NULL));
	p1 = pde & 0x000ffffffffff000ULL;
	guest_pt_pool_usage(pt, &used0, &fr);
	ASSERT_OK(guest_unmap(pt, X, 2 * PAGE));
	guest_pt_pool_usage(pt, &used1, &fr);
	ASSERT_EQ(used1, used0 - 1);	/* the table was freed */
	vmmu_vcpu_invlpg(f.vcpu, X);
	EXPECT_PF(&f, X, VMMU_ACCESS_READ, 0);
	tstat(&f, &t0);
	flooded_before = t0.m.shadow_flooded;
	{
		int first = -1;

		for (int i = 0; i < 400; i++) {
			uint64_t v = 0x1234560000000000ULL | ((uint64_t)i << 4) | (uint64_t)(i & 1);
			struct vmmu_exit x;
			struct vmmu_vm_stats m;

			memset(&x, 0, sizeof(x));
			ASSERT_OK(vmmu_vcpu_access(f.vcpu, p1 + (uint64_t)(i % 512) * 8, &v, 8,
						   VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x));
			ASSERT_EQ_U64(host_rd64(f.vm, p1 + (uint64_t)(i % 512) * 8), v);
			memset(&m, 0, sizeof(m));
			vmmu_vm_get_stats(f.vm, &m);
			if (first < 0 && m.shadow_flooded > flooded_before)
				first = i + 1;
		}
		tstat(&f, &t1);
		print_delta("flooding a freed leaf table (400 phys stores)", &t0, &t1);
		fprintf(stderr, "    flooded after store %d\n", first);
	}

	/* ...then on a directory of a space that is no longer used (a process
	 * that exited): AS2 is built and used, the guest switches away for
	 * good and stores data into AS2's page directory through a gva. */
	ASSERT_OK(guest_map(pt2, X, A, PAGE, PAGE, GUEST_W));
	ASSERT_OK(guest_map(pt2, BIG, H, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
	ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt2)));
	EXPECT_READ(&f, X, 0xa);
	EXPECT_READ(&f, BIG + 0x3000, 0x4);
	ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt)));
	ASSERT_OK(guest_get_entry(pt2, X, 3, &pde, NULL));
	pd2 = pde & 0x000ffffffffff000ULL;
	ASSERT_OK(guest_map(pt, FL, pd2, PAGE, PAGE, GUEST_W));
	tstat(&f, &t0);
	{
		int first = -1;

		for (int i = 0; i < 400; i++) {
			uint64_t v = 0x7654320000000000ULL | ((uint64_t)i << 4) | (uint64_t)(i & 1);
			uint64_t off = (uint64_t)((i * 7) % 512) * 8;
			struct vmmu_vm_stats m;

			EXPECT_WRITE(&f, FL + off, v);
			EXPECT_READ(&f, FL + off, v);
			ASSERT_EQ_U64(host_rd64(f.vm, pd2 + off), v);
			memset(&m, 0, sizeof(m));
			vmmu_vm_get_stats(f.vm, &m);
			if (first < 0 && m.shadow_flooded > t0.m.shadow_flooded)
				first = i + 1;
		}
		tstat(&f, &t1);
		print_delta("flooding an abandoned directory (400 gva stores)", &t0, &t1);
		fprintf(stderr, "    flooded after store %d\n", first);
	}
	ASSERT_GT(t1.m.shadow_flooded, flooded_before);
	/* The live space is intact. */
	EXPECT_READ(&f, BIG + PAGE, 0xb);
	ASSERT_AUDIT(f.vm);
	guest_pt_destroy(pt);
	guest_pt_destroy(pt2);
	fix_destroy(&f);
}

/*
 * A leaf table is shadowed under one role (CR0.WP=1); the role changes (the
 * new root is built in sync); a guest store through a gva alias then
 * unsyncs the old role's shadow page of the table (its gfn becomes
 * writable); the vCPU reaches the table under the new role, which creates
 * a second, in-sync shadow page of it.  That page must get the gfn
 * write-protected again, or the next store to the table is missed by it and
 * INVLPG (which syncs unsync pages only) cannot help: the guest keeps the
 * old translation.  Every MMU must show the new one.
 */
TEST(store_after_role_change)
{
	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *pt;
		struct vmmu_cpu_state s;
		const uint64_t X = 0x40000000ULL, Z = 0x50000000ULL;
		const uint64_t A = S0_BASE, B = S0_BASE + PAGE, C = S0_BASE + 2 * PAGE;
		uint64_t pte, pte_gpa;

		fix_variant(&f, var);
		pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		host_wr64(f.vm, A, 0xa);
		host_wr64(f.vm, B, 0xb);
		host_wr64(f.vm, C, 0xc);
		ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
		ASSERT_OK(guest_get_entry(pt, X, 1, &pte, &pte_gpa));
		ASSERT_OK(guest_map(pt, Z, pte_gpa & ~(PAGE - 1), PAGE, PAGE, GUEST_W));	/* alias of X's table */
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		EXPECT_READ(&f, X, 0xa);	/* X's table shadowed with WP=1 */
		s.cr0 &= ~VMMU_CR0_WP;
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		/* A store through the alias to another entry of the table. */
		EXPECT_WRITE(&f, Z + (pte_gpa & (PAGE - 1)) + 8, C | GUEST_PTE_P);
		ASSERT_AUDIT(f.vm);
		EXPECT_READ(&f, X + PAGE, 0xc);	/* not present before: seen at once */
		EXPECT_READ(&f, X, 0xa);
		ASSERT_AUDIT(f.vm);
		/* X now to B, by a store through the alias; INVLPG; B it must be. */
		EXPECT_WRITE(&f, Z + (pte_gpa & (PAGE - 1)), B | GUEST_PTE_P | GUEST_W);
		vmmu_vcpu_invlpg(f.vcpu, X);
		EXPECT_READ(&f, X, 0xb);
		ASSERT_AUDIT(f.vm);
		guest_pt_destroy(pt);
		fix_destroy(&f);
	}
}

/*
 * A guest that clears the accessed bit of a PTE (page aging: Linux's
 * ptep_test_and_clear_young) and invalidates must see it set again by the
 * next access (SDM 4.8: the processor sets A in every entry it uses, and a
 * translation is only cached with A set).  Shadow paging may not keep an
 * SPTE whose guest entry has A clear (KVM's prefetch_invalid_gpte).  Both
 * ways of storing: through a gva alias of the table (unsync) and a
 * guest-physical store (emulated); invalidation by INVLPG and by a CR3 load.
 * The same for D on a write.
 */
TEST(accessed_dirty_after_clear)
{
	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *pt;
		struct vmmu_cpu_state s;
		const uint64_t X = 0x40000000ULL, Z = 0x50000000ULL, A = S0_BASE;
		uint64_t pte, pte_gpa, zoff;

		fix_variant(&f, var);
		pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		host_wr64(f.vm, A, 0xa);
		ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
		ASSERT_OK(guest_get_entry(pt, X, 1, &pte, &pte_gpa));
		ASSERT_OK(guest_map(pt, Z, pte_gpa & ~(PAGE - 1), PAGE, PAGE, GUEST_W));
		zoff = pte_gpa & (PAGE - 1);
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		for (int round = 0; round < 8; round++) {
			bool via_alias = round & 1, by_cr3 = round & 2, wrote = round & 4;

			/* A fresh PTE, then a read-only SPTE (only read) or a
			 * writable one. */
			ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
			vmmu_vcpu_invlpg(f.vcpu, X);
			if (wrote)
				EXPECT_WRITE(&f, X, 0xa0 + (uint64_t)round);
			else
				host_wr64(f.vm, A, 0xa0 + (uint64_t)round);
			EXPECT_READ(&f, X, 0xa0 + (uint64_t)round);
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			ASSERT_TRUE((pte & GUEST_A) && (!wrote || (pte & GUEST_D)));
			/* Age the page: A and D cleared, nothing else. */
			if (via_alias)
				EXPECT_WRITE(&f, Z + zoff, pte & ~(GUEST_A | GUEST_D));
			else
				ASSERT_OK(guest_protect(pt, X, PAGE, GUEST_W));
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			ASSERT_FALSE(pte & (GUEST_A | GUEST_D));
			if (by_cr3)
				ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt)));
			else
				vmmu_vcpu_invlpg(f.vcpu, X);
			EXPECT_READ(&f, X, 0xa0 + (uint64_t)round);
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			if (!(pte & GUEST_A))
				test_fail(__FILE__, __LINE__, "round %d (%s store, %s): read through PTE %#llx left A clear",
					  round, via_alias ? "gva alias" : "physical", by_cr3 ? "CR3 load" : "INVLPG",
					  (unsigned long long)pte);
			EXPECT_WRITE(&f, X, 0xb0 + (uint64_t)round);
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			if (!(pte & GUEST_D))
				test_fail(__FILE__, __LINE__, "round %d (%s store, %s): write through PTE %#llx left D clear",
					  round, via_alias ? "gva alias" : "physical", by_cr3 ? "CR3 load" : "INVLPG",
					  (unsigned long long)pte);
			ASSERT_AUDIT(f.vm);
		}
		guest_pt_destroy(pt);
		fix_destroy(&f);
	}
}

/*
 * Two 2M guest pages map the same frame.  A write through the first sets
 * its D bit; a read then a write through the second must set the second's
 * D bit too (SDM 4.8).  Under shadow paging both use a direct shadow page
 * of the frame; one built for a clean guest entry must not grant writes
 * (KVM drops ACC_WRITE from the direct access of a clean huge gpte), or the
 * second write goes through without a fault and D stays clear.  A CR3
 * load between the read and the write empties the TLB, so that the write
 * walks the MMU's tables.
 */
TEST(dirty_bit_shared_huge_frame)
{
	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *pt;
		struct vmmu_cpu_state s;
		const uint64_t P = 0x40000000ULL, Q = 0x40400000ULL, F = S0_BASE;
		uint64_t pde;

		fix_variant(&f, var);
		pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		ASSERT_OK(guest_map(pt, P, F, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
		ASSERT_OK(guest_map(pt, Q, F, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		EXPECT_WRITE(&f, P + 0x5000, 0x55);
		ASSERT_OK(guest_get_entry(pt, P, 2, &pde, NULL));
		ASSERT_TRUE(pde & GUEST_D);
		EXPECT_READ(&f, Q + 0x5000, 0x55);
		ASSERT_OK(guest_get_entry(pt, Q, 2, &pde, NULL));
		ASSERT_TRUE(pde & GUEST_A);
		ASSERT_FALSE(pde & GUEST_D);
		/* The TLB forgets Q (a TLB entry would know D was clear). */
		ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt)));
		EXPECT_WRITE(&f, Q + 0x5000, 0x66);
		ASSERT_OK(guest_get_entry(pt, Q, 2, &pde, NULL));
		if (!(pde & GUEST_D))
			test_fail(__FILE__, __LINE__, "write through the clean 2M page left its PDE %#llx without D",
				  (unsigned long long)pde);
		EXPECT_READ(&f, P + 0x5000, 0x66);
		guest_pt_destroy(pt);
		fix_destroy(&f);
	}
}

/* ========================================================================== */
/* 6. mmio_generation                                                          */
/* ========================================================================== */

static void mmio_gen_one(const struct mmu_variant *var, int paging)
{
	struct fix f;
	struct guest_pt *pt = NULL;
	const uint64_t M = MMIO_BASE + 0x5000, G = paging ? 0x40005000ULL : M;
	const uint64_t HG = paging ? 0x40400000ULL : MMIO_BASE + 4 * MB, HM = MMIO_BASE + 4 * MB;
	struct vmmu_vm_stats st;

	fix_variant(&f, var);
	if (paging) {
		enum guest_mode mode = paging == 1 ? GUEST_MODE_4LEVEL : GUEST_MODE_32;
		uint64_t huge = mode == GUEST_MODE_32 ? GUEST_PAGE_4M : GUEST_PAGE_2M;
		struct vmmu_cpu_state s;

		pt = fix_pt(&f, mode, POOL_BASE, 64 * PAGE);
		ASSERT_OK(guest_map(pt, G, M, PAGE, PAGE, GUEST_W));
		ASSERT_OK(guest_map(pt, HG & ~(huge - 1), HM & ~(huge - 1), huge, huge, GUEST_W));
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	}
	for (int round = 0; round < 4; round++) {
		struct vmmu_memslot ms = { .slot = 1, .gpa = MMIO_BASE, .size = 8 * MB };
		uint64_t pattern = 0xfeed000000000000ULL | (uint64_t)round << 8;
		void *h;

		/* No slot: MMIO, twice (the second from a cached MMIO SPTE). */
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_WRITE, M);
		EXPECT_MMIO(&f, HG + 0x10, VMMU_ACCESS_READ, HM + 0x10);
		/* An unrelated slot comes and goes: still MMIO. */
		add_ram(f.vm, 2, MMIO_BASE + 512 * MB, 2 * MB, 0);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		del_slot(f.vm, 2);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		/* RAM appears under it: the next access reaches it. */
		ASSERT_OK(vmmu_set_memslot(f.vm, &ms));
		ASSERT_OK(vmmu_memslot_hva(f.vm, 1, &h));
		memcpy((uint8_t *)h + 0x5000, &pattern, 8);
		memcpy((uint8_t *)h + 4 * MB + 0x10, &(uint64_t){ pattern + 1 }, 8);
		EXPECT_READ(&f, G, pattern);
		EXPECT_READ(&f, HG + 0x10, pattern + 1);
		EXPECT_WRITE(&f, G, pattern + 2);
		ASSERT_EQ_U64(host_rd64(f.vm, M), pattern + 2);
		/* And goes: MMIO again. */
		del_slot(f.vm, 1);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_WRITE, M);
		EXPECT_MMIO(&f, HG + 0x10, VMMU_ACCESS_READ, HM + 0x10);
	}
	memset(&st, 0, sizeof(st));
	vmmu_vm_get_stats(f.vm, &st);
	ASSERT_GT(st.memslot_generation, 8);
	if (pt)
		guest_pt_destroy(pt);
	fix_destroy(&f);
}

TEST(mmio_generation)
{
	for_each_mmu_variant(var) {
		mmio_gen_one(var, 0);	/* paging off */
		mmio_gen_one(var, 1);	/* 4-level */
		mmio_gen_one(var, 2);	/* 32-bit */
	}
}

/* ========================================================================== */
/* 7. shadow_page_cap                                                          */
/* ========================================================================== */

TEST(shadow_page_cap)
{
	const uint64_t cap = 64, n = UNDER_SANITIZER ? 160 : 300, base = 0x40000000ULL;
	struct fix f;
	struct guest_pt *pt[2];
	struct vmmu_cpu_state s;
	struct vmmu_vm_stats st;
	uint64_t maxseen = 0;

	fix_create(&f, shadow_vm(3, cap));
	/* One 4K page in each of n 2M regions: n leaf tables (and two spaces
	 * that map the same pages, to have two roots in use). */
	for (int k = 0; k < 2; k++) {
		pt[k] = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE + (uint64_t)k * 2 * MB, 2 * MB);
		for (uint64_t i = 0; i < n; i++)
			ASSERT_OK(guest_map(pt[k], base + i * GUEST_PAGE_2M + (i % 512) * PAGE, S0_BASE + i * PAGE, PAGE,
					    PAGE, GUEST_W));
	}
	guest_pt_state(pt[0], &s, 0);
	ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	for (int pass = 0; pass < 4; pass++) {
		ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt[pass & 1])));
		for (uint64_t i = 0; i < n; i++) {
			uint64_t gva = base + i * GUEST_PAGE_2M + (i % 512) * PAGE;

			if (pass == 0)
				EXPECT_WRITE(&f, gva, 0xcafe0000ULL + i);
			EXPECT_READ(&f, gva, 0xcafe0000ULL + i);
			memset(&st, 0, sizeof(st));
			vmmu_vm_get_stats(f.vm, &st);
			if (st.shadow_pages > maxseen)
				maxseen = st.shadow_pages;
			if (st.shadow_pages > cap)
				test_fail(__FILE__, __LINE__, "pass %d page %llu: %llu shadow pages, cap %llu", pass,
					  (unsigned long long)i, (unsigned long long)st.shadow_pages,
					  (unsigned long long)cap);
			if (!(i % 32))
				ASSERT_AUDIT(f.vm);
		}
		for (uint64_t i = 0; i < n; i++)
			ASSERT_EQ_U64(host_rd64(f.vm, S0_BASE + i * PAGE), 0xcafe0000ULL + i);
	}
	memset(&st, 0, sizeof(st));
	vmmu_vm_get_stats(f.vm, &st);
	fprintf(stderr, "    cap %llu: at most %llu shadow pages seen, %llu now, created %llu, recycled %llu, zapped %llu\n",
		(unsigned long long)cap, (unsigned long long)maxseen, (unsigned long long)st.shadow_pages,
		(unsigned long long)st.shadow_pages_created, (unsigned long long)st.shadow_pages_recycled,
		(unsigned long long)st.shadow_pages_zapped);
	ASSERT_GT(st.shadow_pages_recycled, 0);
	ASSERT_GE(st.shadow_pages_created, n);
	ASSERT_LE(maxseen, cap);
	for (int k = 0; k < 2; k++)
		guest_pt_destroy(pt[k]);
	fix_destroy(&f);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
