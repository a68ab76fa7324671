/* SPDX-License-Identifier: MIT */
/*
 * The public API used the way a new user might misuse it, from the header's
 * documentation alone: NULL pointers, empty and inverted ranges, sizes at
 * and past every limit, unknown flags and non-zero reserved fields, calls
 * in the wrong state.  Every case states what the header promises (an error
 * code, a clamp, an exit) and checks that the VM still works afterwards.
 * Runs in every tree (plain, ASan+UBSan, TSan).
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "harness.h"

#define PAGE 4096ULL
#define MB (1ULL << 20)

static vmmu_vm *default_vm(void)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	vmmu_vm_config_init(&cfg);
	cfg.pt_arena_bytes = 1ULL << 30;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	return vm;
}

/* The VM still does its job: one slot of RAM at 0, a write and a read. */
static void expect_vm_works(vmmu_vm *vm, vmmu_vcpu *c)
{
	struct vmmu_exit x;
	uint64_t v = 0x1234567890abcdefULL, r = 0;

	ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
	ASSERT_OK(vmmu_vcpu_access(c, 0x2000, &v, 8, VMMU_ACCESS_WRITE, &x));
	ASSERT_OK(vmmu_vcpu_access(c, 0x2000, &r, 8, VMMU_ACCESS_READ, &x));
	ASSERT_EQ_U64(r, v);
	ASSERT_AUDIT(vm);
}

static void add_ram(vmmu_vm *vm, uint64_t size)
{
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = size };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

/*
 * Issue 14 item 1: begin and end treat every range alike.  Empty and
 * inverted ranges count as invalidations that cover nothing (KVM counts
 * empty ones too), so a perfectly paired begin/end never unbalances the
 * count, and an empty range blocks no access.
 */
TEST(invalidate_empty_and_inverted_ranges_pair)
{
	vmmu_vm *vm = default_vm();
	vmmu_vcpu *c;
	void *hva;
	uintptr_t b;

	add_ram(vm, 16 * MB);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	ASSERT_OK(vmmu_memslot_hva(vm, 0, &hva));
	b = (uintptr_t)hva;
	expect_vm_works(vm, c);

	vmmu_invalidate_range_begin(vm, b + 0x2000, b + 0x2000);	/* empty */
	vmmu_invalidate_range_end(vm, b + 0x2000, b + 0x2000);
	vmmu_invalidate_range_begin(vm, b + 0x3000, b + 0x1000);	/* end < start */
	vmmu_invalidate_range_end(vm, b + 0x3000, b + 0x1000);
	vmmu_invalidate_range_begin(vm, 0, 0);
	vmmu_invalidate_range_end(vm, 0, 0);
	vmmu_invalidate_range_begin(vm, UINTPTR_MAX, 0);
	vmmu_invalidate_range_end(vm, UINTPTR_MAX, 0);
	expect_vm_works(vm, c);

	/* Open and nested: an empty range inside an open one, ended in either
	 * order, and an open empty range blocks nothing (the write below would
	 * wait forever on this thread otherwise). */
	vmmu_invalidate_range_begin(vm, b + 0x2000, b + 0x2000);
	expect_vm_works(vm, c);
	vmmu_invalidate_range_begin(vm, b + 0x100000, b + 0x200000);
	vmmu_invalidate_range_begin(vm, b + 0x180000, b + 0x180000);
	vmmu_invalidate_range_end(vm, b + 0x2000, b + 0x2000);
	vmmu_invalidate_range_end(vm, b + 0x100000, b + 0x200000);
	vmmu_invalidate_range_end(vm, b + 0x180000, b + 0x180000);
	expect_vm_works(vm, c);
	vmmu_vm_destroy(vm);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
