/* SPDX-License-Identifier: MIT */
/*
 * The public API used the way a new user might misuse it, from the header's
 * documentation alone: NULL pointers, empty and inverted ranges, sizes at
 * and past every limit, unknown flags and non-zero reserved fields, calls
 * in the wrong state.  Every case states what the header promises (an error
 * code, a clamp, an exit) and checks that the VM still works afterwards.
 * Runs in every tree (plain, ASan+UBSan, TSan).  The issue-14 items each
 * case covers are named at the case.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

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

static vmmu_vm *variant_vm(const struct mmu_variant *var)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	return vm;
}

/* Caller memory for a slot, filled with the byte fill. */
static uint8_t *caller_mem(size_t len, int fill)
{
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	memset(p, fill, len);
	return p;
}

/* Every byte of [p, p + len) is b. */
static bool all_bytes(const uint8_t *p, size_t len, uint8_t b)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != b)
			return false;
	return true;
}

/*
 * Issue 14 item 2: an access that exits has transferred exactly a prefix,
 * exit.done bytes, for every exit reason; up to VMMU_ACCESS_ATOMIC_PAGES
 * pages touched it is all-or-nothing (done 0).
 */
TEST(access_exit_reports_done)
{
	const size_t P = PAGE, W = VMMU_ACCESS_ATOMIC_PAGES * PAGE;

	for_each_mmu_variant(var) {
		vmmu_vm *vm = variant_vm(var);
		uint8_t *ram = caller_mem(128 * P, 0x11), *buf = caller_mem(64 * P, 0x22);
		struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 40 * P, .hva = ram };
		struct vmmu_memslot s2 = { .slot = 1, .gpa = 1024 * P, .size = 64 * P, .hva = ram + 64 * P };
		struct vmmu_exit x;
		vmmu_vcpu *c;

		ASSERT_OK(vmmu_set_memslot(vm, &s));	/* RAM is [0, 40 pages); MMIO above */
		ASSERT_OK(vmmu_set_memslot(vm, &s2));
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));

		/* 64 pages written, page 40 is MMIO: the first window went in. */
		memset(&x, 0xff, sizeof(x));
		ASSERT_EQ(vmmu_vcpu_access(c, 0, buf, 64 * P, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(x.u.mmio.gpa, 40 * P);
		ASSERT_EQ_U64(x.done, W);
		ASSERT_EQ(x.pad, 0);
		ASSERT_TRUE(all_bytes(ram, W, 0x22));
		ASSERT_TRUE(all_bytes(ram + W, 40 * P - W, 0x11));

		/* Unaligned: the first window ends where 32 pages are touched. */
		memset(ram, 0x11, 40 * P);
		ASSERT_EQ(vmmu_vcpu_access(c, 0x800, buf, 63 * P, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(x.done, W - 0x800);
		ASSERT_TRUE(all_bytes(ram + 0x800, W - 0x800, 0x22));
		ASSERT_TRUE(all_bytes(ram + W, 40 * P - W, 0x11));

		/* Touching exactly 32 pages, the last one MMIO: nothing moves. */
		memset(ram, 0x11, 40 * P);
		ASSERT_EQ(vmmu_vcpu_access(c, 9 * P + 0x800, buf, 31 * P + 0x800, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(x.u.mmio.gpa, 40 * P);
		ASSERT_EQ_U64(x.done, 0);
		ASSERT_TRUE(all_bytes(ram, 40 * P, 0x11));

		/* Reads: the prefix is in buf, the rest untouched. */
		memset(buf, 0x33, 64 * P);
		ASSERT_EQ(vmmu_vcpu_access(c, 0, buf, 64 * P, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(x.done, W);
		ASSERT_TRUE(all_bytes(buf, W, 0x11));
		ASSERT_TRUE(all_bytes(buf + W, 64 * P - W, 0x33));

		/* A memory fault in the third window: two windows done. */
		ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)ram + 64 * P + 70 * P - 64 * P,
						   (uintptr_t)ram + 64 * P + 71 * P - 64 * P, VMMU_HOST_NONE));
		memset(buf, 0x44, 64 * P);
		ASSERT_EQ(vmmu_vcpu_access(c, 1024 * P, buf, 64 * P, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
		ASSERT_EQ_U64(x.u.memory_fault.gpa, 1030 * P);
		ASSERT_EQ_U64(x.done, 0);	/* page 6 of the access: first window */
		ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)ram + 70 * P, (uintptr_t)ram + 71 * P,
						   VMMU_HOST_RW));
		ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)ram + 100 * P, (uintptr_t)ram + 101 * P,
						   VMMU_HOST_NONE));
		ASSERT_EQ(vmmu_vcpu_access(c, 1024 * P, buf, 64 * P, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
		ASSERT_EQ_U64(x.u.memory_fault.gpa, 1060 * P);
		ASSERT_EQ_U64(x.done, W);
		ASSERT_TRUE(all_bytes(ram + 64 * P, W, 0x44));
		ASSERT_TRUE(all_bytes(ram + 64 * P + W, 64 * P - W, 0x11));
		ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)ram + 100 * P, (uintptr_t)ram + 101 * P,
						   VMMU_HOST_RW));
		/* And done: all of it. */
		ASSERT_OK(vmmu_vcpu_access(c, 1024 * P, buf, 64 * P, VMMU_ACCESS_WRITE, &x));
		ASSERT_TRUE(all_bytes(ram + 64 * P, 64 * P, 0x44));
		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		ASSERT_AUDIT(vm);
		vmmu_vm_destroy(vm);
		munmap(ram, 128 * P);
		munmap(buf, 64 * P);
	}
}

/* The ring-full exit's done is exit.done too. */
TEST(ring_full_exit_reports_done)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;
	vmmu_vcpu *c;
	struct vmmu_exit x;
	uint8_t *buf = caller_mem(1024 * PAGE, 0x55);
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 16 * MB, .flags = VMMU_MEM_LOG_DIRTY_PAGES };
	int rc;

	vmmu_vm_config_init(&cfg);
	cfg.pt_arena_bytes = 1ULL << 30;
	cfg.dirty_ring_size = 1024;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	ASSERT_OK(vmmu_set_memslot(vm, &s));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	rc = vmmu_vcpu_access(c, 0, buf, 1024 * PAGE, VMMU_ACCESS_WRITE, &x);
	ASSERT_EQ(rc, VMMU_EXIT);
	ASSERT_EQ(x.reason, VMMU_EXIT_DIRTY_RING_FULL);
	ASSERT_GT(x.done, 0);
	ASSERT_LT(x.done, 1024 * PAGE);
	ASSERT_EQ_U64(x.done % (VMMU_ACCESS_ATOMIC_PAGES * PAGE), 0);
	ASSERT_EQ_U64(x.u.ring_full.done, x.done);
	vmmu_vm_destroy(vm);
	munmap(buf, 1024 * PAGE);
}

struct opener {
	vmmu_vm *vm;
	uintptr_t start, end;
};

static void *open_invalidation(void *p)
{
	struct opener *o = p;

	vmmu_invalidate_range_begin(o->vm, o->start, o->end);
	return NULL;
}

/*
 * Issue 14 item 4: an access into an invalidation the calling thread holds
 * open exits with VMMU_EXIT_RETRY (cause SELF) instead of waiting forever;
 * with VMMU_ACCESS_NOWAIT, one into another thread's open invalidation
 * exits too (cause INVALIDATION).  Nothing of the page moves; what came
 * before it in earlier windows did (exit.done).
 */
TEST(access_retry_exit_instead_of_waiting)
{
	const size_t P = PAGE, W = VMMU_ACCESS_ATOMIC_PAGES * PAGE;

	for_each_mmu_variant(var) {
		vmmu_vm *vm = variant_vm(var);
		uint8_t *ram = caller_mem(128 * P, 0x11), *buf = caller_mem(64 * P, 0x22);
		struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 128 * P, .hva = ram };
		uintptr_t b = (uintptr_t)ram;
		struct vmmu_exit x;
		vmmu_vcpu *c;
		uint64_t v = 0x77;
		struct opener o = { vm, b + 50 * P, b + 51 * P };
		pthread_t t;

		ASSERT_OK(vmmu_set_memslot(vm, &s));
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
		ASSERT_OK(vmmu_vcpu_access(c, 0, buf, 64 * P, VMMU_ACCESS_WRITE, &x));	/* all mapped */

		/* This thread's own invalidation of page 3. */
		memset(ram, 0x11, 128 * P);
		vmmu_invalidate_range_begin(vm, b + 3 * P, b + 4 * P);
		ASSERT_EQ(vmmu_vcpu_access(c, 3 * P + 8, &v, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_RETRY);
		ASSERT_EQ(x.u.retry.cause, VMMU_RETRY_SELF);
		ASSERT_EQ_U64(x.u.retry.gpa, 3 * P);
		ASSERT_EQ_U64(x.done, 0);
		ASSERT_EQ(vmmu_vcpu_access(c, 3 * P, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_NOWAIT, &x), VMMU_EXIT);
		ASSERT_EQ(x.u.retry.cause, VMMU_RETRY_SELF);
		ASSERT_TRUE(all_bytes(ram, 128 * P, 0x11));
		/* Its neighbours do not wait. */
		ASSERT_OK(vmmu_vcpu_access(c, 2 * P, &v, 8, VMMU_ACCESS_WRITE, &x));
		ASSERT_OK(vmmu_vcpu_access(c, 4 * P, &v, 8, VMMU_ACCESS_WRITE, &x));
		vmmu_invalidate_range_end(vm, b + 3 * P, b + 4 * P);
		ASSERT_OK(vmmu_vcpu_access(c, 3 * P, &v, 8, VMMU_ACCESS_WRITE, &x));
		ASSERT_EQ_U64(*(uint64_t *)(ram + 3 * P), 0x77);

		/* Another thread's, page 50 of a 64-page write from page 0 at
		 * VMMU_ACCESS_NOWAIT: the first window went in. */
		memset(ram, 0x11, 128 * P);
		pthread_create(&t, NULL, open_invalidation, &o);
		pthread_join(t, NULL);
		ASSERT_EQ(vmmu_vcpu_access(c, 0, buf, 64 * P, VMMU_ACCESS_WRITE | VMMU_ACCESS_NOWAIT, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_RETRY);
		ASSERT_EQ(x.u.retry.cause, VMMU_RETRY_INVALIDATION);
		ASSERT_EQ_U64(x.u.retry.gpa, 50 * P);
		ASSERT_EQ_U64(x.done, W);
		ASSERT_TRUE(all_bytes(ram, W, 0x22));
		ASSERT_TRUE(all_bytes(ram + W, 96 * P, 0x11));
		/* Physical accesses too. */
		ASSERT_EQ(vmmu_vcpu_access(c, 50 * P, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS | VMMU_ACCESS_NOWAIT,
					   &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_RETRY);
		vmmu_invalidate_range_end(vm, o.start, o.end);	/* any thread may end it */
		ASSERT_OK(vmmu_vcpu_access(c, 0, buf, 64 * P, VMMU_ACCESS_WRITE | VMMU_ACCESS_NOWAIT, &x));
		ASSERT_TRUE(all_bytes(ram, 64 * P, 0x22));
		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		ASSERT_AUDIT(vm);
		vmmu_vm_destroy(vm);
		munmap(ram, 128 * P);
		munmap(buf, 64 * P);
	}
}

/* Issue 14 item 6: NULL for every pointer argument is VMMU_EINVAL (or, for
 * the void calls, nothing happens); nothing crashes, nothing changes. */
TEST(null_arguments)
{
	vmmu_vm *vm = default_vm();
	vmmu_vcpu *c;
	struct vmmu_vm_stats vs;
	struct vmmu_vcpu_stats cs;
	struct vmmu_cpu_state st;
	struct vmmu_exit x;
	struct vmmu_dirty_gfn *ring;
	uint32_t n;
	uint64_t u = 0, bm[4] = { 0 };
	const char *why = "x";
	void *hva;

	add_ram(vm, 16 * MB);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	ASSERT_ERR(vmmu_vm_get_stats(vm, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vm_get_stats(NULL, &vs), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_get_stats(c, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_get_stats(NULL, &cs), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vm_create(NULL, &vm), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vm_config_supported(NULL), VMMU_EINVAL);
	vmmu_vm_config_init(NULL);
	ASSERT_ERR(vmmu_set_memslot(NULL, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_set_memslot(vm, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_get_dirty_log(vm, 0, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_get_dirty_log(NULL, 0, bm), VMMU_EINVAL);
	ASSERT_ERR(vmmu_clear_dirty_log(vm, 0, 0, 64, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_dirty_ring(c, NULL, &n), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_dirty_ring(c, &ring, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_dirty_ring(NULL, &ring, &n), VMMU_EINVAL);
	ASSERT_ERR(vmmu_reset_dirty_rings(NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_age_gfn_range(vm, 0, 16, 0, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_age_gfn_range(NULL, 0, 16, 0, &u), VMMU_EINVAL);
	ASSERT_ERR(vmmu_memslot_hva(vm, 0, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_memslot_hva(NULL, 0, &hva), VMMU_EINVAL);
	ASSERT_ERR(vmmu_gpa_to_hva(vm, 0, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_gpa_to_hva(NULL, 0, &hva), VMMU_EINVAL);
	ASSERT_ERR(vmmu_zap_gfn_range(NULL, 0, 1), VMMU_EINVAL);
	vmmu_zap_all(NULL);
	vmmu_flush_remote_tlbs(NULL);
	vmmu_invalidate_range_begin(NULL, 0, 4096);
	vmmu_invalidate_range_end(NULL, 0, 4096);
	ASSERT_ERR(vmmu_set_host_protection(NULL, 0, 4096, VMMU_HOST_RO), VMMU_EINVAL);
	vmmu_release(NULL);
	ASSERT_ERR(vmmu_vcpu_create(NULL, 1, &c), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_create(vm, 1, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_set_state(c, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_get_state(c, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_get_state(NULL, &st), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_write_cr3(NULL, 0), VMMU_EINVAL);
	vmmu_vcpu_invlpg(NULL, 0);
	ASSERT_ERR(vmmu_vcpu_invpcid(NULL, 0, 0, 0), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(c, 0, NULL, 8, VMMU_ACCESS_READ, &x), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(c, 0, &u, 8, VMMU_ACCESS_READ, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(NULL, 0, &u, 8, VMMU_ACCESS_READ, &x), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(c, 0, &u, 0, VMMU_ACCESS_READ, &x), VMMU_EINVAL);
	vmmu_set_trace(NULL, NULL, NULL);
	ASSERT_ERR(vmmu_audit(NULL, NULL, 0), VMMU_EINVAL);
	ASSERT_OK(vmmu_audit(vm, NULL, 0));
	ASSERT_EQ(vmmu_vm_bugged(NULL, &why), VMMU_EINVAL);
	ASSERT_TRUE(why == NULL);
	ASSERT_TRUE(vmmu_strerror(VMMU_EXIT) != NULL);
	expect_vm_works(vm, c);
	vmmu_vm_destroy(vm);
	vmmu_vm_destroy(NULL);
}

/* Issue 14 item 6: stats are zero where reserved, the ring is capped, every
 * result code has a name, whole-space zaps and ages clamp. */
TEST(limits_names_and_clamps)
{
	struct vmmu_vm_config cfg;
	struct vmmu_vm_stats vs;
	struct vmmu_vcpu_stats cs;
	vmmu_vm *vm = default_vm();
	vmmu_vcpu *c;
	uint64_t young = 0;
	static const int codes[] = { VMMU_OK, VMMU_EPERM, VMMU_ENOENT, VMMU_EIO, VMMU_EAGAIN, VMMU_ENOMEM,
				     VMMU_EFAULT, VMMU_EBUSY, VMMU_EEXIST, VMMU_EINVAL, VMMU_ENOSPC,
				     VMMU_ERANGE, VMMU_ENOTSUP, VMMU_EXIT };

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (!strcmp(vmmu_strerror(codes[i]), vmmu_strerror(12345)))
			test_fail(__FILE__, __LINE__, "code %d has no name", codes[i]);

	add_ram(vm, 16 * MB);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	expect_vm_works(vm, c);
	memset(&vs, 0xff, sizeof(vs));
	memset(&cs, 0xff, sizeof(cs));
	ASSERT_OK(vmmu_vm_get_stats(vm, &vs));
	ASSERT_OK(vmmu_vcpu_get_stats(c, &cs));
	for (size_t i = 0; i < sizeof(vs.reserved) / sizeof(vs.reserved[0]); i++)
		ASSERT_EQ_U64(vs.reserved[i], 0);
	for (size_t i = 0; i < sizeof(cs.reserved) / sizeof(cs.reserved[0]); i++)
		ASSERT_EQ_U64(cs.reserved[i], 0);
	ASSERT_GT(vs.pages_4k + vs.pages_2m + vs.pages_1g, 0);
	/* The whole u64 range: clamped to MAXPHYADDR, not ERANGE. */
	ASSERT_OK(vmmu_age_gfn_range(vm, 0, UINT64_MAX, 1, &young));
	ASSERT_GT(young, 0);
	ASSERT_OK(vmmu_age_gfn_range(vm, UINT64_MAX - 1, UINT64_MAX, 0, &young));
	ASSERT_EQ(young, 0);
	ASSERT_OK(vmmu_zap_gfn_range(vm, 0, UINT64_MAX));
	ASSERT_OK(vmmu_vm_get_stats(vm, &vs));
	ASSERT_EQ(vs.pages_4k + vs.pages_2m + vs.pages_1g, 0);
	ASSERT_OK(vmmu_zap_gfn_range(vm, 1ULL << 40, UINT64_MAX));	/* beyond: nothing to do */
	ASSERT_ERR(vmmu_zap_gfn_range(vm, 5, 5), VMMU_EINVAL);
	expect_vm_works(vm, c);
	vmmu_vm_destroy(vm);

	/* Dirty rings are capped as KVM caps them. */
	vmmu_vm_config_init(&cfg);
	cfg.pt_arena_bytes = 1ULL << 30;
	cfg.dirty_ring_size = 1u << 31;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vm_config_supported(&cfg), VMMU_EINVAL);
	cfg.dirty_ring_size = 2 * VMMU_DIRTY_RING_MAX_ENTRIES;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.dirty_ring_size = VMMU_DIRTY_RING_MAX_ENTRIES;
	ASSERT_OK(vmmu_vm_config_supported(&cfg));
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	vmmu_vm_destroy(vm);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_DIRTY_RING), VMMU_DIRTY_RING_MAX_ENTRIES);
}

/*
 * The ABI-growth rule of vmmu.h: struct_size 0 or the struct's size is
 * today's layout; larger is fine if the unknown bytes are zero; smaller or
 * non-zero extra bytes, and non-zero pad fields, are refused and change
 * nothing.
 */
TEST(struct_size_and_pad_fields)
{
	struct {
		struct vmmu_vm_config cfg;
		uint64_t more[2];
	} big;
	struct {
		struct vmmu_memslot s;
		uint64_t more[2];
	} bigs;
	struct vmmu_cpu_state st, now;
	vmmu_vm *vm;
	vmmu_vcpu *c;

	memset(&big, 0, sizeof(big));
	vmmu_vm_config_init(&big.cfg);
	ASSERT_EQ(big.cfg.struct_size, sizeof(struct vmmu_vm_config));
	big.cfg.pt_arena_bytes = 1ULL << 30;
	big.cfg.struct_size = 7;
	ASSERT_ERR(vmmu_vm_create(&big.cfg, &vm), VMMU_EINVAL);
	big.cfg.struct_size = sizeof(big);
	big.more[1] = 1;
	ASSERT_ERR(vmmu_vm_create(&big.cfg, &vm), VMMU_ENOTSUP);
	ASSERT_ERR(vmmu_vm_config_supported(&big.cfg), VMMU_ENOTSUP);
	big.more[1] = 0;
	ASSERT_OK(vmmu_vm_config_supported(&big.cfg));
	ASSERT_OK(vmmu_vm_create(&big.cfg, &vm));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));

	/* Memslots: the old pad is struct_size now; designated initializers
	 * (0) keep working, garbage does not. */
	memset(&bigs, 0, sizeof(bigs));
	bigs.s = (struct vmmu_memslot){ .slot = 0, .gpa = 0, .size = 16 * MB, .struct_size = 12 };
	ASSERT_ERR(vmmu_set_memslot(vm, &bigs.s), VMMU_EINVAL);
	bigs.s.struct_size = sizeof(bigs);
	bigs.more[0] = 0x100;
	ASSERT_ERR(vmmu_set_memslot(vm, &bigs.s), VMMU_ENOTSUP);
	bigs.more[0] = 0;
	ASSERT_OK(vmmu_set_memslot(vm, &bigs.s));
	bigs.s = (struct vmmu_memslot){ .slot = 1, .gpa = 64 * MB, .size = 2 * MB,
					.struct_size = sizeof(struct vmmu_memslot), .backing = 7 };
	ASSERT_ERR(vmmu_set_memslot(vm, &bigs.s), VMMU_EINVAL);	/* no such backing */
	bigs.s.backing = VMMU_BACKING_ANON;
	ASSERT_OK(vmmu_set_memslot(vm, &bigs.s));
	expect_vm_works(vm, c);

	/* CPU state: get gives this layout back; pad and struct_size checked. */
	memset(&st, 0xee, sizeof(st));
	ASSERT_OK(vmmu_vcpu_get_state(c, &st));
	ASSERT_EQ(st.struct_size, sizeof(st));
	ASSERT_EQ(st.pad, 0);
	ASSERT_OK(vmmu_vcpu_set_state(c, &st));
	st.cr0 |= VMMU_CR0_WP;
	st.pad = 1;
	ASSERT_ERR(vmmu_vcpu_set_state(c, &st), VMMU_EINVAL);
	st.pad = 0;
	st.struct_size = 16;
	ASSERT_ERR(vmmu_vcpu_set_state(c, &st), VMMU_EINVAL);
	ASSERT_OK(vmmu_vcpu_get_state(c, &now));
	ASSERT_EQ_U64(now.cr0 & VMMU_CR0_WP, 0);	/* refused calls changed nothing */
	st.struct_size = 0;
	ASSERT_OK(vmmu_vcpu_set_state(c, &st));
	ASSERT_OK(vmmu_vcpu_get_state(c, &now));
	ASSERT_EQ_U64(now.cr0 & VMMU_CR0_WP, VMMU_CR0_WP);
	expect_vm_works(vm, c);
	vmmu_vm_destroy(vm);
}

/* The capability query: what the build has. */
TEST(capabilities)
{
	struct vmmu_vm_config cfg;

	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_TDP_EPT), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_TDP_NPT), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_TDP_5LEVEL), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_SHADOW), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_PML), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_MAX_VCPUS), VMMU_MAX_VCPUS);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_MAX_MEMSLOTS), VMMU_MAX_MEMSLOTS);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_ACCESS_NOWAIT), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_NESTED), 1);
	ASSERT_EQ(vmmu_check_extension(VMMU_CAP_PRIVATE_MEM), 1);
	ASSERT_EQ(vmmu_check_extension(0), 0);
	ASSERT_EQ(vmmu_check_extension(0xffffffffu), 0);
	ASSERT_GE(vmmu_check_extension(VMMU_CAP_HUGETLB_2M), 0);
	ASSERT_GE(vmmu_check_extension(VMMU_CAP_THP), 0);
	/* vmmu_vm_config_supported() answers as vmmu_vm_create() would. */
	vmmu_vm_config_init(&cfg);
	ASSERT_OK(vmmu_vm_config_supported(&cfg));
	cfg.mmu = VMMU_MMU_SHADOW;
	cfg.flags = VMMU_VM_PML;
	ASSERT_ERR(vmmu_vm_config_supported(&cfg), VMMU_EINVAL);
	cfg.mmu = VMMU_MMU_TDP;
	ASSERT_OK(vmmu_vm_config_supported(&cfg));
	cfg.tdp_levels = 5;
	cfg.maxphyaddr = 52;
	ASSERT_OK(vmmu_vm_config_supported(&cfg));
	/* Private memory: TDP only, a shared bit below MAXPHYADDR. */
	cfg.flags = VMMU_VM_PRIVATE;
	ASSERT_OK(vmmu_vm_config_supported(&cfg));
	cfg.shared_bit = 52;
	ASSERT_ERR(vmmu_vm_config_supported(&cfg), VMMU_EINVAL);
	cfg.shared_bit = 0;
	cfg.mmu = VMMU_MMU_SHADOW;
	ASSERT_ERR(vmmu_vm_config_supported(&cfg), VMMU_ENOTSUP);
	cfg.mmu = VMMU_MMU_TDP;
	cfg.flags = 1u << 30;
	ASSERT_ERR(vmmu_vm_config_supported(&cfg), VMMU_EINVAL);
}

/* A vCPU driven from its own thread for a while, as an embedder would. */
static void *drive_vcpu(void *p)
{
	vmmu_vcpu *c = p;
	struct vmmu_exit x;
	uint64_t v;

	for (uint64_t i = 0; i < 256; i++) {
		v = i;
		if (vmmu_vcpu_access(c, i * PAGE, &v, 8, VMMU_ACCESS_WRITE, &x))
			return (void *)1;
	}
	return NULL;
}

/* The child's half: exit code 0, or the step that failed. */
static int fork_child(vmmu_vm *vm, vmmu_vcpu *c)
{
	struct vmmu_memslot del = { .slot = 1 }, again = { .slot = 1, .gpa = 64 * MB, .size = 2 * MB };
	struct vmmu_exit x;
	vmmu_vm *vm2;
	vmmu_vcpu *c2;
	uint64_t v = 0;

	alarm(60);	/* a hang kills the child: the parent sees the signal */
	if (vmmu_vcpu_access(c, 5 * PAGE, &v, 8, VMMU_ACCESS_READ, &x) || v != 5)
		return 2;
	v = 99;
	if (vmmu_vcpu_access(c, 5 * PAGE, &v, 8, VMMU_ACCESS_WRITE, &x))
		return 3;
	vmmu_zap_all(vm);				/* a root freed through call_rcu */
	if (vmmu_set_memslot(vm, &del) || vmmu_set_memslot(vm, &again))	/* grace periods */
		return 4;
	if (vmmu_vcpu_access(c, 5 * PAGE, &v, 8, VMMU_ACCESS_READ, &x) || v != 99)
		return 5;
	vmmu_vm_destroy(vm);				/* rcu_barrier */
	vm2 = default_vm();
	add_ram(vm2, 16 * MB);
	if (vmmu_vcpu_create(vm2, 0, &c2) || vmmu_vcpu_access(c2, 0x3000, &v, 8, VMMU_ACCESS_WRITE, &x))
		return 6;
	vmmu_vm_destroy(vm2);
	return 0;
}

/*
 * Issue 14 item 5: a child of fork() may go on using vmmu -- its inherited
 * VMs included -- when no other thread was inside vmmu at the fork.  Before
 * the fork hooks, its first vmmu_vm_destroy waited forever for a call_rcu
 * thread that only the parent has.
 */
TEST(fork_child_uses_and_destroys_vms)
{
	vmmu_vm *vm = default_vm();
	struct vmmu_memslot s1 = { .slot = 1, .gpa = 32 * MB, .size = 2 * MB };
	vmmu_vcpu *c;
	pthread_t t;
	void *ret;
	pid_t pid;
	int status;

	add_ram(vm, 16 * MB);
	ASSERT_OK(vmmu_set_memslot(vm, &s1));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	pthread_create(&t, NULL, drive_vcpu, c);
	pthread_join(t, &ret);
	ASSERT_TRUE(ret == NULL);
	vmmu_zap_all(vm);	/* call_rcu in use: its worker thread exists */
	expect_vm_works(vm, c);

	pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0)
		_exit(fork_child(vm, c));
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		test_fail(__FILE__, __LINE__, "the child died of signal %d (SIGALRM: it hung)", WTERMSIG(status));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	/* The parent is unaffected. */
	expect_vm_works(vm, c);
	vmmu_vm_destroy(vm);
}

#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#ifdef TEST_TSAN
/* The fork test's child starts a thread (liburcu's new call_rcu worker),
 * which TSan refuses after a multithreaded fork unless told otherwise. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "die_after_fork=0";
}
#endif

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
