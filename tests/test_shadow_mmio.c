/* SPDX-License-Identifier: MIT */
/*
 * MMIO SPTEs and their generations, on every MMU variant:
 *  - mmio_generation: a cached MMIO translation never outlives a memslot
 *    change that makes its gpa RAM (and back).
 */
#include "shadow_test.h"

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
