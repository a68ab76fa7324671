/* SPDX-License-Identifier: MIT */
/*
 * VMMU_VM_PML: dirty logging by D bits and a per-vCPU Page-Modification Log
 * (docs/mmu.md 9.5).  The bitmap modes run through the dirty-log verifier
 * (test_dirty.c, dirty_log_verifier_pml); here:
 *  - the configurations PML refuses;
 *  - the buffer filling in the middle of one access ("PML full" exits),
 *    with bitmaps and rings, 4K and 2M host pages: nothing lost, no write
 *    fault except one split per huge page;
 *  - a dirty-ring verifier: vCPU threads write while the main thread
 *    harvests and resets the rings, and at quiescent points proves that what
 *    it copied out of every reported page is what memory holds (a write the
 *    log missed would leave memory different from the last copy).
 */
#include <pthread.h>
#include <stdio.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define MB (1ULL << 20)
#define PAGE 4096ULL
#define SLOT 3u

static int make_vm(const struct mmu_variant *var, uint32_t flags, uint32_t ring, uint32_t pml_entries, vmmu_vm **vm)
{
	struct vmmu_vm_config cfg;

	variant_config(var, &cfg);
	cfg.flags |= flags;
	cfg.dirty_ring_size = ring;
	cfg.pml_entries = pml_entries;
	return vmmu_vm_create(&cfg, vm);
}

/* The TDP variants with A/D bits: where PML exists. */
#define for_each_pml_variant(var) \
	for_each_tdp_variant(var) \
		if (var->flags & VMMU_VM_AD_DISABLED) {} else

TEST(pml_bad_config)
{
	static const uint32_t bad_sizes[] = { 1, 8, 15, 100, 1000, 1024 };
	vmmu_vm *vm;

	for_each_mmu_variant(var) {
		int r = make_vm(var, VMMU_VM_PML, 0, 0, &vm);

		if (var->mmu != VMMU_MMU_TDP || (var->flags & VMMU_VM_AD_DISABLED)) {
			ASSERT_ERR(r, VMMU_EINVAL);
			continue;
		}
		ASSERT_OK(r);
		vmmu_vm_destroy(vm);
		/* A/D off by flag, on a variant that has them. */
		if (var->tdp_format == VMMU_TDP_EPT)
			ASSERT_ERR(make_vm(var, VMMU_VM_PML | VMMU_VM_AD_DISABLED, 0, 0, &vm), VMMU_EINVAL);
		/* A buffer size without PML, or not a power of two in [16, 512]. */
		ASSERT_ERR(make_vm(var, 0, 0, 16, &vm), VMMU_EINVAL);
		for (unsigned int i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++)
			ASSERT_ERR(make_vm(var, VMMU_VM_PML, 0, bad_sizes[i], &vm), VMMU_EINVAL);
		ASSERT_OK(make_vm(var, VMMU_VM_PML, 0, 16, &vm));
		vmmu_vm_destroy(vm);
		ASSERT_OK(make_vm(var, VMMU_VM_PML | VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET, 4096, 512, &vm));
		vmmu_vm_destroy(vm);
	}
}

/* Mark HARVESTED every published entry of a ring; count pages of SLOT in seen. */
static unsigned int ring_collect(struct vmmu_dirty_gfn *ring, uint32_t size, uint32_t *head, uint8_t *seen,
				 uint64_t npages)
{
	unsigned int n = 0;

	for (;;) {
		struct vmmu_dirty_gfn *d = &ring[*head & (size - 1)];

		if (__atomic_load_n(&d->flags, __ATOMIC_ACQUIRE) != VMMU_DIRTY_GFN_DIRTY)
			break;
		if (d->slot == SLOT && d->offset < npages)
			seen[d->offset] = 1;
		__atomic_store_n(&d->flags, VMMU_DIRTY_GFN_HARVESTED, __ATOMIC_RELEASE);
		(*head)++;
		n++;
	}
	return n;
}

/*
 * One vCPU writes the whole slot in one vmmu_vcpu_access() (64 windows of 32
 * pages), twice: the first time faults every page in (4K host pages) or
 * splits every huge page (2M), the second runs on mappings whose D bits the
 * harvest cleared.  Every page must be reported both times; with a 16-entry
 * buffer every window fills it ("PML full" exits), with 512 entries none can
 * (a window dirties at most 32 data pages), and neither may lose a page.
 */
static void buffer_full_run(const struct mmu_variant *var, uint32_t pml_entries, uint32_t ring, uint64_t host_page)
{
	const uint64_t npages = 8 * MB / PAGE, words = npages / 64;
	struct vmmu_memslot s = { .slot = SLOT, .gpa = 64 * MB, .size = npages * PAGE, .host_page_size = host_page };
	uint8_t *buf = malloc(npages * PAGE), *seen = calloc(npages, 1);
	uint64_t *bm = calloc(words, sizeof(uint64_t));
	struct vmmu_vcpu_stats st0, st1, st2;
	struct vmmu_dirty_gfn *entries = NULL;
	uint32_t size = 0, head = 0;
	vmmu_vcpu *v;
	vmmu_vm *vm;

	ASSERT_TRUE(buf && seen && bm);
	ASSERT_OK(make_vm(var, VMMU_VM_PML, ring, pml_entries, &vm));
	ASSERT_OK(vmmu_set_memslot(vm, &s));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	if (ring)
		ASSERT_OK(vmmu_vcpu_dirty_ring(v, &entries, &size));
	if (host_page > PAGE) {
		/* Populated by huge mappings before logging starts: logging
		 * write-protects them, and each splits on its first write. */
		for (uint64_t p = 0; p < npages; p += host_page / PAGE) {
			struct vmmu_exit x;
			uint64_t val = 1;

			ASSERT_OK(vmmu_vcpu_access(v, s.gpa + p * PAGE, &val, 8, VMMU_ACCESS_WRITE, &x));
		}
	}
	s.flags = VMMU_MEM_LOG_DIRTY_PAGES;
	ASSERT_OK(vmmu_set_memslot(vm, &s));
	vmmu_vcpu_get_stats(v, &st0);
	st1 = st0;
	for (int round = 0; round < 2; round++) {
		size_t done = 0;

		for (uint64_t p = 0; p < npages; p++)
			memset(buf + p * PAGE, (int)(p * 7 + round + 1), PAGE);
		memset(seen, 0, npages);
		while (done < npages * PAGE) {
			struct vmmu_exit x;
			int r = vmmu_vcpu_access(v, s.gpa + done, buf + done, npages * PAGE - done, VMMU_ACCESS_WRITE,
						 &x);

			if (!r)
				break;
			/* Only the ring may stop the loop: harvest and go on. */
			ASSERT_EQ(r, VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_DIRTY_RING_FULL);
			done += x.u.ring_full.done;
			ring_collect(entries, size, &head, seen, npages);
			ASSERT_GE(vmmu_reset_dirty_rings(vm), 0);
		}
		if (ring) {
			ring_collect(entries, size, &head, seen, npages);
			ASSERT_GE(vmmu_reset_dirty_rings(vm), 0);
		} else {
			ASSERT_OK(vmmu_get_dirty_log(vm, SLOT, bm));
			for (uint64_t p = 0; p < npages; p++)
				seen[p] = (bm[p / 64] >> (p % 64)) & 1;
		}
		for (uint64_t p = 0; p < npages; p++)
			if (!seen[p])
				test_fail(__FILE__, __LINE__, "[pml %u %s %s] round %d: page %llu written, not reported",
					  pml_entries, ring ? "ring" : "get", host_page > PAGE ? "2M" : "4K", round,
					  (unsigned long long)p);
		vmmu_vcpu_get_stats(v, round ? &st2 : &st1);
	}
	/* The data went where it was written. */
	{
		uint8_t *hva;

		ASSERT_OK(vmmu_memslot_hva(vm, SLOT, (void **)&hva));
		ASSERT_TRUE(memcmp(hva, buf, npages * PAGE) == 0);
	}
	fprintf(stderr, "    [%s pml %u %s %s] round 1: %llu faults, %llu logged, %llu full; round 2: %llu faults, %llu logged, "
		  "%llu full\n",
		  var->name, pml_entries, ring ? "ring" : "get", host_page > PAGE ? "2M" : "4K",
		  (unsigned long long)(st1.pf_taken - st0.pf_taken), (unsigned long long)(st1.pml_entries - st0.pml_entries),
		  (unsigned long long)(st1.pml_full_exits - st0.pml_full_exits),
		  (unsigned long long)(st2.pf_taken - st1.pf_taken), (unsigned long long)(st2.pml_entries - st1.pml_entries),
		  (unsigned long long)(st2.pml_full_exits - st1.pml_full_exits));
	/* Round 1: 4K pages fault in once each; huge pages split, once each. */
	if (host_page > PAGE)
		ASSERT_EQ(st1.pf_taken - st0.pf_taken, npages * PAGE / host_page);
	ASSERT_GE(st1.pml_entries - st0.pml_entries, npages);
	/* Round 2: no fault at all, every page logged by its D bit. */
	ASSERT_EQ(st2.pf_taken, st1.pf_taken);
	ASSERT_EQ(st2.pf_fast_fixed, 0);
	ASSERT_EQ(st2.pml_entries - st1.pml_entries, npages);
	if (pml_entries && pml_entries < 32) {
		/* (Round 1 with 4K pages exits to fault in every page, and
		 * each exit drains the buffer: it cannot fill.) */
		if (host_page > PAGE)
			ASSERT_GT(st1.pml_full_exits - st0.pml_full_exits, 0);
		ASSERT_GE(st2.pml_full_exits - st1.pml_full_exits, npages / pml_entries - npages / 32);
	} else {
		ASSERT_EQ(st2.pml_full_exits, 0);
	}
	ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
	ASSERT_AUDIT(vm);
	vmmu_vm_destroy(vm);
	free(buf);
	free(seen);
	free(bm);
}

TEST(pml_buffer_full)
{
	for_each_pml_variant(var) {
		for (int huge = 0; huge < 2; huge++) {
			uint64_t hp = huge ? 2 * MB : PAGE;

			buffer_full_run(var, 16, 0, hp);
			buffer_full_run(var, 0, 0, hp);
			buffer_full_run(var, 16, 4096, hp);
			buffer_full_run(var, 0, 1024, hp);
		}
	}
}

/* ==== the ring verifier ======================================================= */

#define RV_VCPUS 2

struct rv {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[RV_VCPUS];
	struct vmmu_dirty_gfn *ring[RV_VCPUS];
	uint32_t ring_size, head[RV_VCPUS];
	uint64_t gpa, npages;
	uint64_t *hva;			/* word id of each page: written by vCPU id */
	uint64_t *snap;			/* [page * RV_VCPUS + id]: copied when reported */
	uint8_t *seen;
	_Atomic bool stop, pause;
	_Atomic unsigned int paused;
	_Atomic int error;
	uint64_t writes[RV_VCPUS];
};

struct rv_arg {
	struct rv *r;
	unsigned int id;
};

static void *rv_vcpu(void *p)
{
	struct rv_arg *a = p;
	struct rv *r = a->r;
	uint64_t rng = 0x2545f4914f6cdd1dULL * (a->id + 1) | 1, seq = 0;

	while (!atomic_load(&r->stop)) {
		uint64_t page, val;
		struct vmmu_exit x;
		int rc;

		if (atomic_load(&r->pause)) {
			atomic_fetch_add(&r->paused, 1);
			while (atomic_load(&r->pause) && !atomic_load(&r->stop))
				sched_yield();
			atomic_fetch_sub(&r->paused, 1);
			continue;
		}
		page = xorshift(&rng) % r->npages;
		val = (++seq << 8) | (a->id + 1);
		rc = vmmu_vcpu_access(r->vcpu[a->id], r->gpa + page * PAGE + a->id * 8, &val, 8, VMMU_ACCESS_WRITE,
				      &x);
		if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_DIRTY_RING_FULL) {
			/* Wait for the harvester's reset, then write again. */
			seq--;
			sched_yield();
			continue;
		}
		if (rc) {
			atomic_store(&r->error, rc);
			break;
		}
		r->writes[a->id]++;
	}
	return NULL;
}

/* Collect both rings, reset, then copy the reported pages out: a write that
 * lands after the copy set D after the reset cleared it, so it is logged. */
static int rv_harvest(struct rv *r)
{
	int n;

	for (unsigned int i = 0; i < RV_VCPUS; i++)
		ring_collect(r->ring[i], r->ring_size, &r->head[i], r->seen, r->npages);
	n = vmmu_reset_dirty_rings(r->vm);
	if (n < 0)
		return n;
	for (uint64_t p = 0; p < r->npages; p++) {
		if (!r->seen[p])
			continue;
		r->seen[p] = 0;
		for (unsigned int i = 0; i < RV_VCPUS; i++)
			r->snap[p * RV_VCPUS + i] =
				__atomic_load_n(&r->hva[p * (PAGE / 8) + i], __ATOMIC_RELAXED);
	}
	return 0;
}

static void rv_run(const struct mmu_variant *var, uint64_t host_page, uint32_t pml_entries, double seconds)
{
	struct rv *r = calloc(1, sizeof(*r));
	struct vmmu_memslot s;
	struct rv_arg args[RV_VCPUS];
	pthread_t t[RV_VCPUS];
	uint64_t checks = 0, rounds = 0, pml = 0, fast = 0;
	double end;

	ASSERT_TRUE(r != NULL);
	r->gpa = 128 * MB;
	r->npages = (UNDER_SANITIZER ? 4 : 16) * MB / PAGE;
	r->ring_size = 4096;
	s = (struct vmmu_memslot){ .slot = SLOT, .gpa = r->gpa, .size = r->npages * PAGE, .host_page_size = host_page };
	r->snap = calloc(r->npages * RV_VCPUS, sizeof(uint64_t));
	r->seen = calloc(r->npages, 1);
	ASSERT_TRUE(r->snap && r->seen);
	ASSERT_OK(make_vm(var, VMMU_VM_PML, r->ring_size, pml_entries, &r->vm));
	ASSERT_OK(vmmu_set_memslot(r->vm, &s));
	ASSERT_OK(vmmu_memslot_hva(r->vm, SLOT, (void **)&r->hva));
	for (unsigned int i = 0; i < RV_VCPUS; i++) {
		ASSERT_OK(vmmu_vcpu_create(r->vm, i, &r->vcpu[i]));
		ASSERT_OK(vmmu_vcpu_dirty_ring(r->vcpu[i], &r->ring[i], &r->ring_size));
	}
	/* Populated (by huge mappings with 2M host pages), then logged. */
	for (uint64_t p = 0; p < r->npages; p += host_page / PAGE) {
		struct vmmu_exit x;
		uint64_t val = 0;

		ASSERT_OK(vmmu_vcpu_access(r->vcpu[0], r->gpa + p * PAGE + 16, &val, 8, VMMU_ACCESS_WRITE, &x));
	}
	s.flags = VMMU_MEM_LOG_DIRTY_PAGES;
	ASSERT_OK(vmmu_set_memslot(r->vm, &s));
	/* Nothing written yet: memory is all zero, and so is snap. */
	for (unsigned int i = 0; i < RV_VCPUS; i++) {
		args[i] = (struct rv_arg){ r, i };
		pthread_create(&t[i], NULL, rv_vcpu, &args[i]);
	}
	end = now_s() + seconds;
	while (!atomic_load(&r->error) && (rounds < 40 || now_s() < end)) {
		rounds++;
		if (rv_harvest(r)) {
			atomic_store(&r->error, VMMU_EIO);
			break;
		}
		if (rounds % 4)
			continue;
		/*
		 * Quiescent point: every write has returned, so every D bit set
		 * has been drained into a ring; one more harvest and the copies
		 * must match memory exactly.
		 */
		atomic_store(&r->pause, true);
		while (atomic_load(&r->paused) != RV_VCPUS && !atomic_load(&r->error))
			sched_yield();
		if (!atomic_load(&r->error) && !rv_harvest(r)) {
			for (uint64_t p = 0; p < r->npages; p++)
				for (unsigned int i = 0; i < RV_VCPUS; i++)
					if (r->snap[p * RV_VCPUS + i] !=
					    __atomic_load_n(&r->hva[p * (PAGE / 8) + i], __ATOMIC_RELAXED))
						test_fail(__FILE__, __LINE__,
							  "[%s pml %u] page %llu word %u: write never reported", var->name,
							  pml_entries, (unsigned long long)p, i);
			checks++;
		}
		atomic_store(&r->pause, false);
	}
	atomic_store(&r->stop, true);
	for (unsigned int i = 0; i < RV_VCPUS; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ(atomic_load(&r->error), 0);
	for (unsigned int i = 0; i < RV_VCPUS; i++) {
		struct vmmu_vcpu_stats st;

		vmmu_vcpu_get_stats(r->vcpu[i], &st);
		pml += st.pml_entries;
		fast += st.pf_fast_fixed;
	}
	fprintf(stderr, "    " "[%s ring pml %u %s] %llu rounds, %llu checks, %llu+%llu writes, %llu logged\n", var->name,
		  pml_entries, host_page > PAGE ? "2M" : "4K", (unsigned long long)rounds, (unsigned long long)checks,
		  (unsigned long long)r->writes[0], (unsigned long long)r->writes[1], (unsigned long long)pml);
	ASSERT_GT(checks, 0);
	ASSERT_GT(pml, 0);
	ASSERT_EQ(fast, 0);
	ASSERT_FALSE(vmmu_vm_bugged(r->vm, NULL));
	ASSERT_AUDIT(r->vm);
	vmmu_vm_destroy(r->vm);
	free(r->snap);
	free(r->seen);
	free(r);
}

TEST(pml_ring_verifier)
{
	for_each_pml_variant(var) {
		rv_run(var, PAGE, 0, 0.2);
		rv_run(var, 2 * MB, 16, 0.2);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
