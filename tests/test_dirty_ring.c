/* SPDX-License-Identifier: MIT */
/*
 * Dirty rings (KVM's per-vCPU ring protocol), aging (test/clear young) and
 * eager splitting of huge pages when logging starts, over every MMU variant.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "harness.h"

#define MB (1ULL << 20)

static vmmu_vm *make_vm(const struct mmu_variant *var, uint32_t extra_flags, uint32_t ring)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;

	variant_config(var, &cfg);
	cfg.flags |= extra_flags;
	cfg.dirty_ring_size = ring;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	return vm;
}

static void put64(vmmu_vcpu *v, uint64_t gpa, uint64_t val)
{
	struct vmmu_exit x;

	ASSERT_OK(vmmu_vcpu_access(v, gpa, &val, 8, VMMU_ACCESS_WRITE, &x));
}

/* Harvest every published entry: count per page, flag HARVESTED. */
static unsigned int harvest(struct vmmu_dirty_gfn *ring, uint32_t size, uint32_t *head, uint32_t slot,
			    uint8_t *seen, uint64_t npages)
{
	unsigned int n = 0;

	for (;;) {
		struct vmmu_dirty_gfn *d = &ring[*head & (size - 1)];

		if (__atomic_load_n(&d->flags, __ATOMIC_ACQUIRE) != VMMU_DIRTY_GFN_DIRTY)
			return n;
		ASSERT_EQ(d->slot, slot);
		ASSERT_LT(d->offset, npages);
		seen[d->offset] = 1;
		__atomic_store_n(&d->flags, VMMU_DIRTY_GFN_HARVESTED, __ATOMIC_RELEASE);
		(*head)++;
		n++;
	}
}

TEST(dirty_ring_reports_every_page_and_stops_when_full)
{
	for_each_mmu_variant(var) {
		vmmu_vm *vm = make_vm(var, 0, 1024);
		vmmu_vcpu *v;
		struct vmmu_memslot s = { .slot = 7, .gpa = 0, .size = 16 * MB, .flags = VMMU_MEM_LOG_DIRTY_PAGES };
		uint64_t npages = s.size / 4096, fulls = 0;
		struct vmmu_dirty_gfn *ring;
		uint32_t size, head = 0;
		uint8_t *seen = calloc(npages, 1);
		uint64_t bm[64];

		ASSERT_OK(vmmu_set_memslot(vm, &s));
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
		ASSERT_OK(vmmu_vcpu_dirty_ring(v, &ring, &size));
		ASSERT_EQ(size, 1024);
		for (int round = 0; round < 2; round++) {
			memset(seen, 0, npages);
			for (uint64_t p = 0; p < npages;) {
				struct vmmu_exit x;
				uint64_t val = p;
				int r = vmmu_vcpu_access(v, p * 4096, &val, 8, VMMU_ACCESS_WRITE, &x);

				if (r == 0) {
					p++;
					continue;
				}
				ASSERT_EQ(r, VMMU_EXIT);
				ASSERT_EQ(x.reason, VMMU_EXIT_DIRTY_RING_FULL);
				ASSERT_EQ(x.u.ring_full.done, 0);
				fulls++;
				harvest(ring, size, &head, 7, seen, npages);
				ASSERT_GT(vmmu_reset_dirty_rings(vm), 0);
			}
			harvest(ring, size, &head, 7, seen, npages);
			/* Round 2 runs after a reset re-protected every page: each
			 * write must fault and be pushed again. */
			ASSERT_GE(vmmu_reset_dirty_rings(vm), 0);
			for (uint64_t p = 0; p < npages; p++)
				if (!seen[p])
					test_fail(__FILE__, __LINE__, "round %d: page %llu written, never reported", round,
						  (unsigned long long)p);
		}
		ASSERT_GT(fulls, 0);
		/* Rings replace the bitmap. */
		ASSERT_ERR(vmmu_get_dirty_log(vm, 7, bm), VMMU_EPERM);
		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		ASSERT_AUDIT(vm);
		free(seen);
		vmmu_vm_destroy(vm);
	}
}

TEST(dirty_ring_bad_input)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;
	vmmu_vcpu *v;
	struct vmmu_dirty_gfn *ring;
	uint32_t size;

	vmmu_vm_config_init(&cfg);
	cfg.dirty_ring_size = 1000;	/* not a power of two */
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.dirty_ring_size = 512;	/* below the minimum */
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.dirty_ring_size = 0;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	ASSERT_ERR(vmmu_vcpu_dirty_ring(v, &ring, &size), VMMU_EPERM);
	ASSERT_ERR(vmmu_reset_dirty_rings(vm), VMMU_EPERM);
	vmmu_vm_destroy(vm);
}

/* A harvester thread racing the vCPU: nothing written is ever missing. */
struct ring_race {
	vmmu_vm *vm;
	struct vmmu_dirty_gfn *ring;
	uint32_t size;
	uint8_t *seen;
	uint64_t npages;
	_Atomic bool stop;
	uint32_t head;
};

static void *ring_harvester(void *p)
{
	struct ring_race *rr = p;

	while (!atomic_load(&rr->stop)) {
		harvest(rr->ring, rr->size, &rr->head, 1, rr->seen, rr->npages);
		vmmu_reset_dirty_rings(rr->vm);
	}
	return NULL;
}

TEST(dirty_ring_concurrent_harvest)
{
	for_each_mmu_variant(var) {
		struct ring_race rr = { .vm = make_vm(var, 0, 1024) };
		struct vmmu_memslot s = { .slot = 1, .gpa = 0, .size = 8 * MB, .flags = VMMU_MEM_LOG_DIRTY_PAGES };
		vmmu_vcpu *v;
		pthread_t t;
		uint64_t pass;
		uint64_t seed = 99;

		uint8_t *written;

		rr.npages = s.size / 4096;
		rr.seen = calloc(rr.npages, 1);
		written = calloc(rr.npages, 1);
		ASSERT_OK(vmmu_set_memslot(rr.vm, &s));
		ASSERT_OK(vmmu_vcpu_create(rr.vm, 0, &v));
		ASSERT_OK(vmmu_vcpu_dirty_ring(v, &rr.ring, &rr.size));
		pthread_create(&t, NULL, ring_harvester, &rr);
		for (pass = 0; pass < 20000; pass++) {
			struct vmmu_exit x;
			uint64_t p, val;
			int r;

			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
			p = (seed >> 33) % rr.npages;
			val = pass;
			r = vmmu_vcpu_access(v, p * 4096, &val, 8, VMMU_ACCESS_WRITE, &x);
			if (r == VMMU_EXIT && x.reason == VMMU_EXIT_DIRTY_RING_FULL) {
				sched_yield();
				pass--;
				continue;
			}
			ASSERT_OK(r);
			written[p] = 1;
		}
		atomic_store(&rr.stop, true);
		pthread_join(t, NULL);
		/* Whatever is still published is harvested now: every page the
		 * vCPU wrote must have been reported at least once. */
		harvest(rr.ring, rr.size, &rr.head, 1, rr.seen, rr.npages);
		{
			uint64_t missing = 0;

			for (uint64_t p = 0; p < rr.npages; p++)
				missing += written[p] && !rr.seen[p];
			ASSERT_EQ(missing, 0);
		}
		free(written);
		ASSERT_FALSE(vmmu_vm_bugged(rr.vm, NULL));
		ASSERT_AUDIT(rr.vm);
		free(rr.seen);
		vmmu_vm_destroy(rr.vm);
	}
}

TEST(aging_counts_and_clears_young_pages)
{
	for_each_mmu_variant(var) {
		vmmu_vm *vm = make_vm(var, 0, 0);
		vmmu_vcpu *v;
		struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 4 * MB };
		uint64_t young;

		ASSERT_OK(vmmu_set_memslot(vm, &s));
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
		for (uint64_t p = 0; p < 100; p++)
			put64(v, p * 4096, p);
		ASSERT_OK(vmmu_age_gfn_range(vm, 0, 1024, 0, &young));
		ASSERT_EQ(young, 100);
		/* Clearing ages them; a second look finds none young... */
		ASSERT_OK(vmmu_age_gfn_range(vm, 0, 1024, 1, &young));
		ASSERT_EQ(young, 100);
		ASSERT_OK(vmmu_age_gfn_range(vm, 0, 1024, 0, &young));
		ASSERT_EQ(young, 0);
		/* ...until the guest uses them again through a fresh walk. */
		vmmu_flush_remote_tlbs(vm);
		for (uint64_t p = 0; p < 10; p++) {
			struct vmmu_exit x;
			uint64_t val = 0;

			ASSERT_OK(vmmu_vcpu_access(v, p * 4096, &val, 8, VMMU_ACCESS_READ, &x));
			ASSERT_EQ(val, p);
		}
		ASSERT_OK(vmmu_age_gfn_range(vm, 0, 1024, 0, &young));
		ASSERT_EQ(young, 10);
		ASSERT_ERR(vmmu_age_gfn_range(vm, 5, 5, 0, &young), VMMU_EINVAL);
		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		ASSERT_AUDIT(vm);
		vmmu_vm_destroy(vm);
	}
}

/* Huge SPTEs exist under TDP only (shadow paging maps 4K). */
TEST(eager_split_when_logging_starts)
{
	for_each_tdp_variant(var) {
		for (int eager = 0; eager < 2; eager++) {
			vmmu_vm *vm = make_vm(var, eager ? VMMU_VM_EAGER_SPLIT : 0, 0);
			vmmu_vcpu *v;
			struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 8 * MB, .host_page_size = 2 * MB };
			struct vmmu_vm_stats st;
			struct vmmu_vcpu_stats before, after;
			uint64_t bm[32];

			ASSERT_OK(vmmu_set_memslot(vm, &s));
			ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
			for (uint64_t p = 0; p < 4; p++)
				put64(v, p * 2 * MB, p);
			vmmu_vm_get_stats(vm, &st);
			ASSERT_EQ(st.pages_2m, 4);
			s.flags = VMMU_MEM_LOG_DIRTY_PAGES;
			ASSERT_OK(vmmu_set_memslot(vm, &s));
			vmmu_vm_get_stats(vm, &st);
			ASSERT_EQ(st.pages_2m, eager ? 0 : 4);
			ASSERT_EQ(st.pages_4k, eager ? 4 * 512 : 0);
			ASSERT_OK(vmmu_get_dirty_log(vm, 0, bm));
			vmmu_vcpu_get_stats(v, &before);
			for (uint64_t p = 0; p < 4; p++)
				put64(v, p * 2 * MB + 4096, p + 10);
			vmmu_vcpu_get_stats(v, &after);
			/* Split eagerly, each write is a fast-path fault on a 4K SPTE;
			 * otherwise the slow path splits the huge page first. */
			if (eager)
				ASSERT_EQ(after.pf_fast_fixed - before.pf_fast_fixed, 4);
			ASSERT_OK(vmmu_get_dirty_log(vm, 0, bm));
			for (uint64_t p = 0; p < 4; p++)
				ASSERT_TRUE((bm[(p * 512 + 1) / 64] >> ((p * 512 + 1) % 64)) & 1);
			/* Logging off: huge pages come back on the next faults. */
			s.flags = 0;
			ASSERT_OK(vmmu_set_memslot(vm, &s));
			put64(v, 0, 1);
			vmmu_vm_get_stats(vm, &st);
			ASSERT_EQ(st.pages_2m, 1);
			ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		ASSERT_AUDIT(vm);
			vmmu_vm_destroy(vm);
		}
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
