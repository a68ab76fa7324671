/* SPDX-License-Identifier: MIT */
/*
 * The TDP data path end to end: vCPU accesses through the hardware model and
 * the TDP MMU, over every MMU variant (EPT/NPT, 4/5 levels, A/D on/off).
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "mmu/mmu.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/vmmu_int.h"

#define MB (1ULL << 20)
#define GB (1ULL << 30)

struct env {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	uint8_t *mem;	/* slot 0's backing */
};

static void env_create(struct env *e, const struct mmu_variant *var, uint64_t gpa, uint64_t size,
		       uint64_t host_page, uint32_t flags, void *hva)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = gpa, .size = size, .hva = hva,
				  .host_page_size = host_page, .flags = flags };
	void *p;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &e->vm));
	ASSERT_OK(vmmu_set_memslot(e->vm, &s));
	ASSERT_OK(vmmu_memslot_hva(e->vm, 0, &p));
	e->mem = p;
	ASSERT_OK(vmmu_vcpu_create(e->vm, 0, &e->vcpu));
}

static void env_destroy(struct env *e)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(e->vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
	ASSERT_AUDIT(e->vm);
	vmmu_vm_destroy(e->vm);
}

static int acc(struct env *e, uint64_t gpa, void *buf, size_t len, unsigned int type, struct vmmu_exit *x)
{
	return vmmu_vcpu_access(e->vcpu, gpa, buf, len, type | VMMU_ACCESS_PHYS, x);
}

static uint64_t rd64(struct env *e, uint64_t gpa)
{
	struct vmmu_exit x;
	uint64_t v = 0;

	ASSERT_OK(acc(e, gpa, &v, 8, VMMU_ACCESS_READ, &x));
	return v;
}

static void wr64(struct env *e, uint64_t gpa, uint64_t v)
{
	struct vmmu_exit x;

	ASSERT_OK(acc(e, gpa, &v, 8, VMMU_ACCESS_WRITE, &x));
}

static struct vmmu_vm_stats vm_stats(struct env *e)
{
	struct vmmu_vm_stats s;

	vmmu_vm_get_stats(e->vm, &s);
	return s;
}

static struct vmmu_vcpu_stats vcpu_stats(struct env *e)
{
	struct vmmu_vcpu_stats s;

	vmmu_vcpu_get_stats(e->vcpu, &s);
	return s;
}

/* The leaf SPTE mapping gpa, read the way the MMU's lockless walkers do. */
static uint64_t leaf_spte(struct env *e, uint64_t gpa, int *level)
{
	struct vmmu_vm *vm = e->vm;
	uint64_t spte;

	ASSERT_TRUE(vm->root != NULL);
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	spte = tdp_mmu_get_spte(vm, vm->root, gpa >> 12, level);
	vmmu_rcu_read_unlock();
	return spte;
}

TEST(guest_writes_visible_at_hva_and_back)
{
	for_each_tdp_variant(var) {
		struct env e;

		env_create(&e, var, 1 * MB, 8 * MB, 0, 0, NULL);
		for (uint64_t off = 0; off < 8 * MB; off += 4096 + 8)
			wr64(&e, 1 * MB + off, off ^ 0xabcdef);
		for (uint64_t off = 0; off < 8 * MB; off += 4096 + 8) {
			uint64_t host;

			memcpy(&host, e.mem + off, 8);
			ASSERT_EQ_U64(host, off ^ 0xabcdef);
			/* And the other way: the host writes, the guest reads. */
			host = ~host;
			memcpy(e.mem + off, &host, 8);
			ASSERT_EQ_U64(rd64(&e, 1 * MB + off), host);
		}
		env_destroy(&e);
	}
}

TEST(access_sizes_and_page_crossing)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_exit x;
		uint8_t buf[3 * 4096 + 7], back[sizeof(buf)];

		env_create(&e, var, 0, 1 * MB, 0, 0, NULL);
		for (size_t len = 1; len <= 8; len++) {
			uint64_t gpa = 3 * 4096 - len / 2; /* straddles a page boundary */
			uint64_t v = 0x1122334455667788ULL, r = 0;

			ASSERT_OK(acc(&e, gpa, &v, len, VMMU_ACCESS_WRITE, &x));
			ASSERT_OK(acc(&e, gpa, &r, len, VMMU_ACCESS_READ, &x));
			ASSERT_EQ(memcmp(&v, &r, len), 0);
			ASSERT_EQ(memcmp(e.mem + gpa, &v, len), 0);
		}
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t)(i * 7 + 1);
		ASSERT_OK(acc(&e, 5 * 4096 + 100, buf, sizeof(buf), VMMU_ACCESS_WRITE, &x));
		ASSERT_OK(acc(&e, 5 * 4096 + 100, back, sizeof(back), VMMU_ACCESS_FETCH, &x));
		ASSERT_EQ(memcmp(buf, back, sizeof(buf)), 0);
		/* Longer than one translation window: done in windows, still exact. */
		{
			size_t big = 200 * 4096 + 123;
			uint8_t *src = malloc(big), *dst = malloc(big);

			for (size_t i = 0; i < big; i++)
				src[i] = (uint8_t)(i ^ (i >> 9));
			ASSERT_OK(acc(&e, 4096 + 1, src, big, VMMU_ACCESS_WRITE, &x));
			ASSERT_OK(acc(&e, 4096 + 1, dst, big, VMMU_ACCESS_READ, &x));
			ASSERT_EQ(memcmp(src, dst, big), 0);
			free(src);
			free(dst);
		}
		env_destroy(&e);
	}
}

TEST(bad_access_arguments)
{
	struct env e;
	struct vmmu_exit x;
	uint64_t v = 0;

	env_create(&e, &mmu_variants[0], 0, 1 * MB, 0, 0, NULL);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 0, &v, 0, VMMU_ACCESS_READ, &x), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 0, NULL, 8, VMMU_ACCESS_READ, &x), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 0, &v, 8, VMMU_ACCESS_READ, NULL), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 0, &v, 8, 3, &x), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 0, &v, 8, 1u << 9, &x), VMMU_EINVAL);
	/* Paging off: linear addresses stop at 4 GiB. */
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 1ULL << 32, &v, 8, VMMU_ACCESS_READ, &x), VMMU_ERANGE);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, (1ULL << 32) - 4, &v, 8, VMMU_ACCESS_READ, &x), VMMU_ERANGE);
	ASSERT_ERR(vmmu_vcpu_access(e.vcpu, 1ULL << 46, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x),
		   VMMU_ERANGE);
	{
		vmmu_vcpu *dup;

		ASSERT_ERR(vmmu_vcpu_create(e.vm, 0, &dup), VMMU_EEXIST);
		ASSERT_ERR(vmmu_vcpu_create(e.vm, 100000, &dup), VMMU_EINVAL);
	}
	/* Nothing above faulted anything in. */
	ASSERT_EQ(vcpu_stats(&e).pf_taken, 0);
	env_destroy(&e);
}

TEST(hugepages_exactly_when_allowed)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_vm_stats s;
		int level;

		/* 4K host pages: never huge. */
		env_create(&e, var, 0, 8 * MB, 4096, 0, NULL);
		wr64(&e, 2 * MB + 8, 1);
		s = vm_stats(&e);
		ASSERT_EQ(s.pages_4k, 1);
		ASSERT_EQ(s.pages_2m, 0);
		env_destroy(&e);

		/* 2M host pages (THP), aligned slot: 2M mappings, one per fault. */
		env_create(&e, var, 4 * MB, 8 * MB, 2 * MB, 0, NULL);
		wr64(&e, 4 * MB + 12345 * 8, 7);
		wr64(&e, 6 * MB + 4096, 8);
		s = vm_stats(&e);
		ASSERT_EQ(s.pages_2m, 2);
		ASSERT_EQ(s.pages_4k, 0);
		/* Every 4K page inside an installed 2M mapping is already mapped. */
		ASSERT_EQ(rd64(&e, 4 * MB + 12345 * 8), 7);
		ASSERT_EQ(vcpu_stats(&e).pf_taken, 2);
		ASSERT_TRUE(is_large_pte(&e.vm->fmt, leaf_spte(&e, 5 * MB, &level)));
		ASSERT_EQ(level, PG_LEVEL_2M);
		env_destroy(&e);

		/* The slot starts 4K past a 2M boundary: a 2M page would cross its
		 * start (and gfn/hva congruence is off), so only 4K mappings. */
		env_create(&e, var, 2 * MB + 4096, 8 * MB, 2 * MB, 0, NULL);
		wr64(&e, 4 * MB, 1);
		wr64(&e, 2 * MB + 4096, 1);
		s = vm_stats(&e);
		ASSERT_EQ(s.pages_2m, 0);
		ASSERT_EQ(s.pages_4k, 2);
		env_destroy(&e);
	}
}

TEST(hugepages_off_by_vm_option_and_1g)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot ms;
	struct vmmu_vm_stats s;
	struct vmmu_exit x;
	vmmu_vm *vm;
	vmmu_vcpu *v;
	uint64_t val = 5;
	uint8_t *region;

	/* VMMU_VM_NO_HUGEPAGES beats a 2M slot. */
	variant_config(&mmu_variants[0], &cfg);
	cfg.flags |= VMMU_VM_NO_HUGEPAGES;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	ms = (struct vmmu_memslot){ .slot = 1, .gpa = 0, .size = 4 * MB, .host_page_size = 2 * MB };
	ASSERT_OK(vmmu_set_memslot(vm, &ms));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	ASSERT_OK(vmmu_vcpu_access(v, 8, &val, 8, VMMU_ACCESS_WRITE, &x));
	vmmu_vm_get_stats(vm, &s);
	ASSERT_EQ(s.pages_2m, 0);
	ASSERT_EQ(s.pages_4k, 1);
	vmmu_vm_destroy(vm);

	/*
	 * 1G: the embedder's memory declared as 1G host pages, 1G-aligned in
	 * both gpa and hva.  Reserved, not populated: the fault populates it.
	 */
	region = mmap(NULL, 3 * GB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ASSERT_TRUE(region != MAP_FAILED);
	{
		uint8_t *aligned = (uint8_t *)(((uintptr_t)region + GB - 1) & ~(uintptr_t)(GB - 1));
		const struct mmu_variant *vars[] = { &mmu_variants[0], &mmu_variants[3] };

		for (unsigned int i = 0; i < 2; i++) {
			struct env e;
			int level;

			test_variant = vars[i]->name;
			env_create(&e, vars[i], GB, GB, GB, 0, aligned);
			wr64(&e, GB + 123 * 4096, 99);
			ASSERT_EQ(vm_stats(&e).pages_1g, 1);
			ASSERT_TRUE(is_large_pte(&e.vm->fmt, leaf_spte(&e, GB + 77 * MB, &level)));
			ASSERT_EQ(level, PG_LEVEL_1G);
			ASSERT_EQ(rd64(&e, GB + 123 * 4096), 99);
			/* Zapping one 4K page of it removes the whole 1G mapping. */
			ASSERT_OK(vmmu_zap_gfn_range(e.vm, (GB >> 12) + 5, (GB >> 12) + 6));
			ASSERT_EQ(vm_stats(&e).pages_1g, 0);
			ASSERT_EQ(rd64(&e, GB + 123 * 4096), 99);
			ASSERT_EQ(vm_stats(&e).pages_1g, 1);
			env_destroy(&e);
			madvise(aligned, GB, MADV_DONTNEED);
		}
	}
	munmap(region, 3 * GB);
}

TEST(zap_then_refault)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_vcpu_stats before;
		uint64_t n = 64;

		env_create(&e, var, 0, 4 * MB, 0, 0, NULL);
		for (uint64_t i = 0; i < n; i++)
			wr64(&e, i * 4096, i + 100);
		ASSERT_EQ(vm_stats(&e).pages_4k, n);
		/* Zap the middle half: exactly those mappings go. */
		ASSERT_OK(vmmu_zap_gfn_range(e.vm, n / 4, 3 * n / 4));
		ASSERT_EQ(vm_stats(&e).pages_4k, n / 2);
		ASSERT_GE(vm_stats(&e).remote_tlb_flushes, 1);
		before = vcpu_stats(&e);
		for (uint64_t i = 0; i < n; i++)
			ASSERT_EQ_U64(rd64(&e, i * 4096), i + 100);
		/* The zapped half faulted again (or was mapped ahead by a
		 * fault of its sequential refault), the rest did not. */
		ASSERT_EQ(vcpu_stats(&e).pf_fixed - before.pf_fixed + vcpu_stats(&e).fault_around_pages -
				  before.fault_around_pages,
			  n / 2);
		ASSERT_EQ(vm_stats(&e).pages_4k, n);

		/* Zap everything: a new root, every vCPU reloads, data survives.
		 * The old root's mappings go when its last vCPU drops it. */
		vmmu_zap_all(e.vm);
		ASSERT_AUDIT(e.vm);
		before = vcpu_stats(&e);
		for (uint64_t i = 0; i < n; i++)
			ASSERT_EQ_U64(rd64(&e, i * 4096), i + 100);
		ASSERT_EQ(vcpu_stats(&e).mmu_reloads - before.mmu_reloads, 1);
		ASSERT_EQ(vcpu_stats(&e).pf_fixed - before.pf_fixed + vcpu_stats(&e).fault_around_pages -
				  before.fault_around_pages,
			  n);
		ASSERT_EQ(vm_stats(&e).pages_4k, n);
		/* Only the live root's tables remain: 1 root + one table per level below. */
		ASSERT_EQ(vm_stats(&e).pt_pages, (uint64_t)var->tdp_levels);

		ASSERT_ERR(vmmu_zap_gfn_range(e.vm, 10, 10), VMMU_EINVAL);
		/* Past MAXPHYADDR is clamped: this is "every gfn". */
		ASSERT_OK(vmmu_zap_gfn_range(e.vm, 0, 1ULL << 60));
		ASSERT_EQ(vm_stats(&e).pages_4k, 0);
		ASSERT_EQ_U64(rd64(&e, 5 * 4096), 5 + 100);
		env_destroy(&e);
	}
}

/*
 * Fault-around: a sequential first touch maps each fault's aligned 16-page
 * window ahead, not accessed; random touches, logged slots, host
 * protection changes inside a window and VMMU_VM_NO_FAULT_AROUND map one
 * page per fault.
 */
TEST(fault_around)
{
	for_each_tdp_variant(var) {
		bool ad = !(var->flags & VMMU_VM_AD_DISABLED);
		struct mmu_variant off = *var;
		uint64_t n = 64, bm[4 * MB / 4096 / 64], young;
		struct vmmu_vcpu_stats b;
		struct vmmu_exit x;
		struct env e;
		uint64_t v;

		/* Sequential: fewer faults than pages, every page mapped once. */
		env_create(&e, var, 0, 4 * MB, 0, 0, NULL);
		for (uint64_t i = 0; i < n; i++)
			wr64(&e, i * 4096, i + 7);
		ASSERT_EQ(vm_stats(&e).pages_4k, n);
		ASSERT_EQ(vcpu_stats(&e).pf_fixed + vcpu_stats(&e).fault_around_pages, n);
		if (ad)
			ASSERT_GT(vcpu_stats(&e).fault_around_pages, n / 2);
		else
			ASSERT_EQ(vcpu_stats(&e).fault_around_pages, 0);
		for (uint64_t i = 0; i < n; i++)
			ASSERT_EQ_U64(rd64(&e, i * 4096), i + 7);
		/* What was mapped ahead and never touched is not young. */
		ASSERT_OK(vmmu_age_gfn_range(e.vm, 0, 1ULL << 20, 1, &young));
		wr64(&e, 100 * 4096, 1);	/* not after the last page: alone */
		wr64(&e, 101 * 4096, 1);	/* after it: maps 102..111 ahead */
		ASSERT_OK(vmmu_age_gfn_range(e.vm, 0, 1ULL << 20, 1, &young));
		ASSERT_EQ(young, 2);
		if (ad)
			ASSERT_EQ(vm_stats(&e).pages_4k, n + 12);
		/* A write into a page mapped ahead: no fault, and it lands. */
		b = vcpu_stats(&e);
		wr64(&e, 105 * 4096, 9);
		ASSERT_EQ(vcpu_stats(&e).pf_taken - b.pf_taken, ad ? 0 : 1);
		ASSERT_EQ_U64(((uint64_t *)e.mem)[105 * 512], 9);
		/* A host protection change inside a window keeps the window off. */
		ASSERT_OK(vmmu_set_host_protection(e.vm, (uintptr_t)e.mem + 205 * 4096, (uintptr_t)e.mem + 206 * 4096,
						   VMMU_HOST_RO));
		wr64(&e, 200 * 4096, 1);
		wr64(&e, 201 * 4096, 1);
		v = 1;
		ASSERT_EQ(acc(&e, 205 * 4096, &v, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
		env_destroy(&e);

		/* A logged slot: every write faults and is logged, nothing ahead. */
		env_create(&e, var, 0, 4 * MB, 0, VMMU_MEM_LOG_DIRTY_PAGES, NULL);
		for (uint64_t i = 0; i < 32; i++)
			wr64(&e, i * 4096, i);
		ASSERT_EQ(vcpu_stats(&e).fault_around_pages, 0);
		ASSERT_EQ(vm_stats(&e).pages_4k, 32);
		ASSERT_OK(vmmu_get_dirty_log(e.vm, 0, bm));
		ASSERT_EQ_U64(bm[0], 0xffffffffULL);
		env_destroy(&e);

		/* Off by the VM option. */
		off.flags |= VMMU_VM_NO_FAULT_AROUND;
		env_create(&e, &off, 0, 4 * MB, 0, 0, NULL);
		for (uint64_t i = 0; i < n; i++)
			wr64(&e, i * 4096, i);
		ASSERT_EQ(vcpu_stats(&e).fault_around_pages, 0);
		ASSERT_EQ(vcpu_stats(&e).pf_fixed, n);
		env_destroy(&e);
	}
}

TEST(accessed_and_dirty_bits)
{
	for_each_tdp_variant(var) {
		struct env e;
		const struct spte_fmt *f;
		uint64_t spte;
		int level;

		env_create(&e, var, 0, 1 * MB, 0, 0, NULL);
		f = &e.vm->fmt;
		(void)rd64(&e, 0);
		spte = leaf_spte(&e, 0, &level);
		ASSERT_TRUE(is_mmu_present_spte(spte));
		ASSERT_TRUE(spte_writable_bits_legal(f, spte));
		if (f->ad_enabled) {
			/* Read: A set, D clear.  Then the write sets D through a walk,
			 * even though the read left a TLB entry. */
			ASSERT_TRUE(spte & f->accessed);
			ASSERT_FALSE(spte & f->dirty);
			wr64(&e, 0, 1);
			ASSERT_TRUE(leaf_spte(&e, 0, &level) & f->dirty);
		} else {
			/* Without A/D the hardware leaves them alone. */
			wr64(&e, 0, 1);
			spte = leaf_spte(&e, 0, &level);
			ASSERT_FALSE(spte & (EPT_A | EPT_D));
			ASSERT_FALSE(spte_ad_enabled(spte));
		}
		env_destroy(&e);
	}
}

TEST(readonly_memslot_writes_exit)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_exit x;
		uint64_t v = 0x55;

		env_create(&e, var, 0, 1 * MB, 0, VMMU_MEM_READONLY, NULL);
		e.mem[4096] = 0x42;
		ASSERT_EQ(rd64(&e, 4096), 0x42);
		ASSERT_EQ(acc(&e, 4096, &v, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(x.u.mmio.gpa, 4096);
		ASSERT_EQ(x.u.mmio.len, 8);
		ASSERT_TRUE(x.u.mmio.is_write);
		ASSERT_TRUE(x.u.mmio.readonly_slot);
		ASSERT_EQ(e.mem[4096], 0x42);
		ASSERT_FALSE(is_writable_pte(&e.vm->fmt, leaf_spte(&e, 4096, &(int){ 0 })));
		env_destroy(&e);
	}
}

TEST(host_readonly_memory_is_a_memory_fault)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_exit x;
		uint64_t v = 1;
		uint8_t *ro = mmap(NULL, 1 * MB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		ASSERT_TRUE(ro != MAP_FAILED);
		env_create(&e, var, 0, 1 * MB, 0, 0, ro);
		ASSERT_EQ(rd64(&e, 8192), 0);
		ASSERT_EQ(acc(&e, 8192, &v, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
		ASSERT_EQ(x.u.memory_fault.error, VMMU_EFAULT);
		ASSERT_EQ_U64(x.u.memory_fault.gpa, 8192);
		env_destroy(&e);
		munmap(ro, 1 * MB);
	}
}

TEST(mmio_exits_and_mmio_sptes)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_exit x;
		struct vmmu_vcpu_stats before;
		uint64_t v = 0x77, gpa = 64 * MB + 0x10;
		uint64_t spte;
		int level;

		env_create(&e, var, 0, 1 * MB, 0, 0, NULL);
		ASSERT_EQ(acc(&e, gpa, &v, 4, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(x.u.mmio.gpa, gpa);
		ASSERT_EQ(x.u.mmio.len, 4);
		ASSERT_EQ(x.u.mmio.offset, 0);
		ASSERT_FALSE(x.u.mmio.readonly_slot);
		/* The MMIO SPTE is cached, never MMU-present (seed 004). */
		spte = leaf_spte(&e, gpa, &level);
		ASSERT_TRUE(is_mmio_spte(&e.vm->fmt, spte));
		ASSERT_FALSE(is_mmu_present_spte(spte));
		ASSERT_EQ(level, PG_LEVEL_4K);
		/* The next access is answered from it, without the slow path. */
		before = vcpu_stats(&e);
		ASSERT_EQ(acc(&e, gpa, &v, 8, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_FALSE(x.u.mmio.is_write);
		ASSERT_EQ(vcpu_stats(&e).pf_mmio_spte - before.pf_mmio_spte, 1);

		/* A memslot appears there: the old MMIO SPTE's generation misses. */
		{
			struct vmmu_memslot s = { .slot = 1, .gpa = 64 * MB, .size = 1 * MB };

			ASSERT_OK(vmmu_set_memslot(e.vm, &s));
			wr64(&e, gpa, 0x99);
			ASSERT_EQ_U64(rd64(&e, gpa), 0x99);
			ASSERT_TRUE(is_mmu_present_spte(leaf_spte(&e, gpa, &level)));
		}

		/* An access straddling RAM and MMIO moves no byte. */
		{
			uint64_t big = 0x0102030405060708ULL;

			e.mem[1 * MB - 2] = 0xee;
			ASSERT_EQ(acc(&e, 1 * MB - 2, &big, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
			ASSERT_EQ_U64(x.u.mmio.gpa, 1 * MB);
			ASSERT_EQ(x.u.mmio.offset, 2);
			ASSERT_EQ(x.u.mmio.len, 6);
			ASSERT_EQ(e.mem[1 * MB - 2], 0xee);
		}
		env_destroy(&e);
	}
}

TEST(memslot_delete_and_move_unmap)
{
	for_each_tdp_variant(var) {
		struct env e;
		struct vmmu_exit x;
		struct vmmu_memslot s = { .slot = 1, .gpa = 8 * MB, .size = 2 * MB, .host_page_size = 2 * MB };
		uint64_t v;

		env_create(&e, var, 0, 1 * MB, 0, 0, NULL);
		ASSERT_OK(vmmu_set_memslot(e.vm, &s));
		wr64(&e, 8 * MB + 16, 1234);
		/* Move: the data follows the slot, the old gpa becomes MMIO. */
		s.gpa = 16 * MB;
		ASSERT_OK(vmmu_set_memslot(e.vm, &s));
		ASSERT_EQ(acc(&e, 8 * MB + 16, &v, 8, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(rd64(&e, 16 * MB + 16), 1234);
		/* Delete: MMIO, and its mappings are gone. */
		s.size = 0;
		ASSERT_OK(vmmu_set_memslot(e.vm, &s));
		ASSERT_EQ(acc(&e, 16 * MB + 16, &v, 8, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ(vm_stats(&e).pages_2m, 0);
		env_destroy(&e);
	}
}

TEST(remote_flush_waits_and_counts)
{
	struct env e;
	struct vmmu_vcpu_stats before;

	env_create(&e, &mmu_variants[0], 0, 1 * MB, 0, 0, NULL);
	wr64(&e, 0, 1);
	before = vcpu_stats(&e);
	vmmu_flush_remote_tlbs(e.vm);
	/* The next access services the flush and walks again. */
	ASSERT_EQ(rd64(&e, 0), 1);
	ASSERT_EQ(vcpu_stats(&e).tlb_flushes - before.tlb_flushes, 1);
	ASSERT_EQ(vcpu_stats(&e).tlb_misses - before.tlb_misses, 1);
	ASSERT_EQ(rd64(&e, 0), 1);
	ASSERT_EQ(vcpu_stats(&e).tlb_hits - before.tlb_hits, 1);
	env_destroy(&e);
}

TEST(vm_config_rejected)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	vmmu_vm_config_init(&cfg);
	cfg.tdp_levels = 3;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	vmmu_vm_config_init(&cfg);
	cfg.maxphyaddr = 52; /* needs 5-level TDP */
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	vmmu_vm_config_init(&cfg);
	cfg.maxphyaddr = 35;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	vmmu_vm_config_init(&cfg);
	cfg.tdp_format = VMMU_TDP_NPT;
	cfg.flags = VMMU_VM_AD_DISABLED;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	vmmu_vm_config_init(&cfg);
	cfg.flags = 1u << 20;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	vmmu_vm_config_init(&cfg);
	cfg.mmu = 7;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	/* Shadow paging has hardware A/D only, and at most 8 previous roots. */
	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	cfg.flags = VMMU_VM_AD_DISABLED;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.flags = 0;
	cfg.shadow_prev_roots = VMMU_MAX_PREV_ROOTS + 1;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.shadow_prev_roots = 3;
	cfg.shadow_max_pages = 63;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	vmmu_vm_config_init(&cfg);
	cfg.max_vcpus = 0;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	ASSERT_TRUE(vm == NULL);
	ASSERT_ERR(vmmu_vm_create(NULL, &vm), VMMU_EINVAL);
	ASSERT_TRUE(strlen(vmmu_strerror(VMMU_EINVAL)) > 0);
	ASSERT_TRUE(strcmp(vmmu_strerror(12345), "unknown error") == 0);
}

TEST(page_table_arena_exhaustion_is_an_error_not_a_crash)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 1ULL << 31 };
	struct vmmu_exit x;
	vmmu_vm *vm;
	vmmu_vcpu *v;
	uint64_t val = 1, gpa;
	int r = 0;

	variant_config(&mmu_variants[0], &cfg);
	cfg.pt_arena_bytes = 64 * 4096; /* 64 tables */
	cfg.flags |= VMMU_VM_NO_HUGEPAGES;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	ASSERT_OK(vmmu_set_memslot(vm, &s));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	/* Each 2M of guest memory needs a new leaf table. */
	for (gpa = 0; gpa < (1ULL << 31); gpa += 2 * MB) {
		r = vmmu_vcpu_access(v, gpa, &val, 8, VMMU_ACCESS_WRITE, &x);
		if (r)
			break;
	}
	ASSERT_EQ(r, VMMU_EXIT);
	ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
	ASSERT_EQ(x.u.memory_fault.error, VMMU_ENOMEM);
	ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
	/* Freeing tables makes room again, once the last vCPU has dropped the
	 * old root (its next entry) and their grace period is over. */
	vmmu_zap_all(vm);
	r = vmmu_vcpu_access(v, gpa, &val, 8, VMMU_ACCESS_WRITE, &x);
	vmmu_rcu_barrier();
	if (r)
		ASSERT_OK(vmmu_vcpu_access(v, gpa, &val, 8, VMMU_ACCESS_WRITE, &x));
	vmmu_vm_destroy(vm);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
