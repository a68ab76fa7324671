/* SPDX-License-Identifier: MIT */
/*
 * The shadow-paging tests: one binary, one file per concept of the shadow
 * MMU (test_shadow_roles.c, test_shadow_prev_roots.c,
 * test_shadow_write_track.c, test_shadow_mmio.c, test_shadow_cap.c).  This
 * one holds the model-based random tests (the engine: shadow_model.c), on
 * every MMU variant:
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
				test_fail(__FILE__, __LINE__, "%s", e.ml.why);
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
				test_fail(__FILE__, __LINE__, "%s", engs[i].ml.why);
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
			if (engs[i].ml.failed)
				test_fail(__FILE__, __LINE__, "%s", engs[i].ml.why);
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

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
