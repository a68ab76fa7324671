/* SPDX-License-Identifier: MIT */
/*
 * Memslots: the public vmmu_set_memslot() contract (KVM_SET_USER_MEMORY_REGION
 * semantics, "a rejected request changes nothing"), the pure snapshot helpers
 * of memslot.c, and the one place a vCPU depends on the memslot generation:
 * MMIO SPTEs (seed 004).
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "harness.h"
#include "vm/memslot.h"
#include "mmu/spte.h"

#define SZ_4K 0x1000ULL
#define SZ_1M 0x100000ULL
#define SZ_2M 0x200000ULL
#define SZ_1G 0x40000000ULL


static uint64_t rng_below(uint64_t n)
{
	return test_rng_next() % n;
}

/* Anonymous memory of size bytes starting on an align boundary. */
static void *map_aligned(size_t size, size_t align)
{
	size_t len = size + align;
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *a;

	ASSERT_TRUE(p != MAP_FAILED);
	a = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (p + len > a + size)
		munmap(a + size, (size_t)(p + len - (a + size)));
	return a;
}

static struct vmmu_memslot slot_req(uint32_t id, uint64_t gpa, uint64_t size, void *hva)
{
	struct vmmu_memslot r;

	memset(&r, 0, sizeof(r));
	r.slot = id;
	r.gpa = gpa;
	r.size = size;
	r.hva = hva;
	return r;
}

static vmmu_vm *variant_vm(const struct mmu_variant *var, struct vmmu_vm_config *cfg)
{
	vmmu_vm *vm = NULL;

	variant_config(var, cfg);
	ASSERT_OK(vmmu_vm_create(cfg, &vm));
	return vm;
}

static uint64_t generation(vmmu_vm *vm)
{
	struct vmmu_vm_stats st;

	vmmu_vm_get_stats(vm, &st);
	return st.memslot_generation;
}

static void *gpa_hva(vmmu_vm *vm, uint64_t gpa)
{
	void *hva = NULL;

	ASSERT_OK(vmmu_gpa_to_hva(vm, gpa, &hva));
	return hva;
}

static void *slot_hva(vmmu_vm *vm, uint32_t id)
{
	void *hva = NULL;

	ASSERT_OK(vmmu_memslot_hva(vm, id, &hva));
	return hva;
}

/* ---- "a rejected request changes nothing" --------------------------------- */

static const uint32_t probe_ids[] = { 0, 1, 2, 3, 5, 7, VMMU_MAX_MEMSLOTS - 1 };
#define NR_PROBE_IDS (sizeof(probe_ids) / sizeof(probe_ids[0]))
#define NR_PROBE_GPAS 24

struct vm_state {
	uint64_t gen;
	int id_ret[NR_PROBE_IDS];
	void *id_hva[NR_PROBE_IDS];
	int gpa_ret[NR_PROBE_GPAS];
	void *gpa_hva[NR_PROBE_GPAS];
};

/* Gpas around every slot the bad-input test sets up, plus far-away ones. */
static const uint64_t probe_gpas[NR_PROBE_GPAS] = {
	0,
	0xfffff, 0x100000, 0x100fff, 0x1ff000, 0x2fffff, 0x300000,
	0x3fffff, 0x400000, 0x47ffff, 0x4fffff, 0x500000,
	0x5fffff, 0x600000, 0x600fff, 0x601000,
	0x700000, 0x7ff000, 0x800000, 0x80000000,
	0x100000000ULL, 0xfffff000ULL, 0x3ffffffff000ULL, 0xffffffffffffffffULL,
};

static void capture(vmmu_vm *vm, struct vm_state *s)
{
	memset(s, 0, sizeof(*s));
	s->gen = generation(vm);
	for (unsigned int i = 0; i < NR_PROBE_IDS; i++)
		s->id_ret[i] = vmmu_memslot_hva(vm, probe_ids[i], &s->id_hva[i]);
	for (unsigned int i = 0; i < NR_PROBE_GPAS; i++)
		s->gpa_ret[i] = vmmu_gpa_to_hva(vm, probe_gpas[i], &s->gpa_hva[i]);
}

static void assert_same_state(const struct vm_state *a, const struct vm_state *b, int line)
{
	if (a->gen != b->gen)
		test_fail(__FILE__, line, "memslot generation moved on a rejected request: %" PRIu64 " -> %" PRIu64,
			  a->gen, b->gen);
	for (unsigned int i = 0; i < NR_PROBE_IDS; i++)
		if (a->id_ret[i] != b->id_ret[i] || (!a->id_ret[i] && a->id_hva[i] != b->id_hva[i]))
			test_fail(__FILE__, line, "slot %u changed on a rejected request: %d/%p -> %d/%p",
				  probe_ids[i], a->id_ret[i], a->id_hva[i], b->id_ret[i], b->id_hva[i]);
	for (unsigned int i = 0; i < NR_PROBE_GPAS; i++)
		if (a->gpa_ret[i] != b->gpa_ret[i] || (!a->gpa_ret[i] && a->gpa_hva[i] != b->gpa_hva[i]))
			test_fail(__FILE__, line, "gpa %#" PRIx64 " changed on a rejected request: %d/%p -> %d/%p",
				  probe_gpas[i], a->gpa_ret[i], a->gpa_hva[i], b->gpa_ret[i], b->gpa_hva[i]);
}

#define EXPECT_REJECT(vm, req, err)                                          \
	do {                                                                 \
		struct vm_state st_before_, st_after_;                       \
		struct vmmu_memslot rq_ = (req);                             \
		capture(vm, &st_before_);                                    \
		ASSERT_ERR(vmmu_set_memslot(vm, &rq_), err);                 \
		capture(vm, &st_after_);                                     \
		assert_same_state(&st_before_, &st_after_, __LINE__);        \
	} while (0)

static struct vmmu_memslot with_flags(struct vmmu_memslot r, uint32_t flags)
{
	r.flags = flags;
	return r;
}

static struct vmmu_memslot with_host(struct vmmu_memslot r, uint64_t host_page_size, uint32_t backing)
{
	r.host_page_size = host_page_size;
	r.backing = backing;
	return r;
}

TEST(memslot_rejects_bad_input)
{
	for_each_mmu_variant(var) {
		struct vmmu_vm_config cfg;
		vmmu_vm *vm = variant_vm(var, &cfg);
		uint64_t top = 1ULL << cfg.maxphyaddr;
		uint8_t *mem0 = map_aligned(2 * SZ_1M, SZ_2M);
		uint8_t *mem2 = map_aligned(SZ_4K, SZ_4K);
		uint8_t *spare = map_aligned(4 * SZ_1M, SZ_2M);
		static const uint64_t bad_host_sizes[] = { 1, 512, 8192, 1ULL << 20, 1ULL << 22, 3ULL << 20,
							   1ULL << 31, 1ULL << 40, ~0ULL };

		/* slot 0: caller memory [1M, 3M); slot 1: vmmu memory [4M, 5M);
		 * slot 2: read-only [6M, 6M+4K). */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 0, .gpa = SZ_1M, .size = 2 * SZ_1M,
								       .hva = mem0 }));
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 1, .gpa = 4 * SZ_1M, .size = SZ_1M }));
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 2, .gpa = 6 * SZ_1M, .size = SZ_4K,
								       .hva = mem2, .flags = VMMU_MEM_READONLY }));

		/* Slot ids. */
		EXPECT_REJECT(vm, slot_req(VMMU_MAX_MEMSLOTS, 8 * SZ_1M, SZ_4K, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(UINT32_MAX, 8 * SZ_1M, SZ_4K, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(VMMU_MAX_MEMSLOTS, 0, 0, NULL), VMMU_EINVAL);

		/* Unknown flags, including the internal INVALID flag, even on a delete. */
		EXPECT_REJECT(vm, with_flags(slot_req(5, 8 * SZ_1M, SZ_4K, spare), 1u << 2), VMMU_EINVAL);
		EXPECT_REJECT(vm, with_flags(slot_req(5, 8 * SZ_1M, SZ_4K, spare), MEMSLOT_INVALID), VMMU_EINVAL);
		EXPECT_REJECT(vm, with_flags(slot_req(0, SZ_1M, 2 * SZ_1M, mem0), MEMSLOT_INVALID), VMMU_EINVAL);
		EXPECT_REJECT(vm, with_flags(slot_req(0, 0, 0, NULL), ~0u), VMMU_EINVAL);

		/* Dirty logging with an otherwise bad request is still refused. */
		EXPECT_REJECT(vm, with_flags(slot_req(5, 8 * SZ_1M + 1, SZ_4K, spare), VMMU_MEM_LOG_DIRTY_PAGES),
			      VMMU_EINVAL);

		/* Alignment of gpa, size and hva. */
		EXPECT_REJECT(vm, slot_req(5, 8 * SZ_1M + 1, SZ_4K, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(5, 8 * SZ_1M + 0x800, SZ_4K, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(5, 8 * SZ_1M, SZ_4K + 0x800, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(5, 8 * SZ_1M, 0x10, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(5, 8 * SZ_1M, SZ_4K, spare + 0x10), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(5, 8 * SZ_1M, SZ_4K, spare + 0x800), VMMU_EINVAL);

		/* Beyond MAXPHYADDR, including a gpa + size that wraps. */
		EXPECT_REJECT(vm, slot_req(5, top - SZ_4K, 2 * SZ_4K, spare), VMMU_ERANGE);
		EXPECT_REJECT(vm, slot_req(5, top, SZ_4K, spare), VMMU_ERANGE);
		EXPECT_REJECT(vm, slot_req(5, ~0xfffULL, 2 * SZ_4K, spare), VMMU_ERANGE);
		EXPECT_REJECT(vm, slot_req(0, top - SZ_4K, 2 * SZ_1M, mem0), VMMU_ERANGE);

		/* KVM_MEM_MAX_NR_PAGES bounds a slot's size. */
		EXPECT_REJECT(vm, slot_req(5, 0x10000000000ULL, (MEMSLOT_MAX_PAGES + 1) << 12, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(5, 0x10000000000ULL, 1ULL << 44, spare), VMMU_EINVAL);

		/* Overlaps: either end, containment both ways, identical range. */
		EXPECT_REJECT(vm, slot_req(5, SZ_1M - SZ_4K, 2 * SZ_4K, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, 3 * SZ_1M - SZ_4K, 2 * SZ_4K, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, 0, SZ_1M + SZ_4K, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, SZ_1M + 0x80000, SZ_4K, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, SZ_1M, SZ_4K, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, 3 * SZ_1M - SZ_4K, SZ_4K, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, SZ_1M / 2, 3 * SZ_1M, spare), VMMU_EEXIST);
		EXPECT_REJECT(vm, slot_req(5, SZ_1M, 2 * SZ_1M, spare), VMMU_EEXIST);
		/* Spanning two slots and the gap between them. */
		EXPECT_REJECT(vm, slot_req(5, 2 * SZ_1M, 3 * SZ_1M, spare), VMMU_EEXIST);
		/* A move onto another slot is an overlap too. */
		EXPECT_REJECT(vm, with_flags(slot_req(2, 5 * SZ_1M - SZ_4K, SZ_4K, mem2), VMMU_MEM_READONLY),
			      VMMU_EEXIST);
		EXPECT_REJECT(vm, with_flags(slot_req(2, 2 * SZ_1M, SZ_4K, mem2), VMMU_MEM_READONLY), VMMU_EEXIST);

		/* Host page sizes other than 4K/2M/1G. */
		for (unsigned int i = 0; i < sizeof(bad_host_sizes) / sizeof(bad_host_sizes[0]); i++) {
			EXPECT_REJECT(vm, with_host(slot_req(5, 8 * SZ_1M, SZ_2M, spare), bad_host_sizes[i], 0),
				      VMMU_EINVAL);
			EXPECT_REJECT(vm, with_host(slot_req(5, 8 * SZ_1M, SZ_2M, NULL), bad_host_sizes[i],
						    VMMU_BACKING_ANON),
				      VMMU_EINVAL);
		}
		/* No 1G transparent huge pages. */
		EXPECT_REJECT(vm, with_host(slot_req(5, SZ_1G, SZ_1G, NULL), SZ_1G, VMMU_BACKING_ANON), VMMU_ENOTSUP);
		/* hugetlb needs a huge host page size, and a size that is a multiple of it. */
		EXPECT_REJECT(vm, with_host(slot_req(5, 8 * SZ_1M, SZ_2M, NULL), SZ_4K, VMMU_BACKING_HUGETLB),
			      VMMU_EINVAL);
		EXPECT_REJECT(vm, with_host(slot_req(5, 8 * SZ_1M, SZ_2M, NULL), 0, VMMU_BACKING_HUGETLB),
			      VMMU_EINVAL);
		EXPECT_REJECT(vm, with_host(slot_req(5, 8 * SZ_1M, SZ_2M + SZ_4K, NULL), SZ_2M,
					    VMMU_BACKING_HUGETLB),
			      VMMU_EINVAL);
		/* No such backing. */
		EXPECT_REJECT(vm, with_host(slot_req(5, 8 * SZ_1M, SZ_2M, NULL), SZ_4K, VMMU_BACKING_HUGETLB + 1),
			      VMMU_EINVAL);

		/* Deleting what is not there. */
		EXPECT_REJECT(vm, slot_req(5, 0, 0, NULL), VMMU_ENOENT);
		EXPECT_REJECT(vm, slot_req(VMMU_MAX_MEMSLOTS - 1, SZ_1M, 0, mem0), VMMU_ENOENT);

		/* An existing slot's size, hva and host page size are fixed. */
		EXPECT_REJECT(vm, slot_req(0, SZ_1M, 4 * SZ_4K, mem0), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(0, SZ_1M, 2 * SZ_1M + SZ_4K, mem0), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(0, SZ_1M, 2 * SZ_1M, mem0 + SZ_4K), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(0, SZ_1M, 2 * SZ_1M, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(0, SZ_1M, 2 * SZ_1M, NULL), VMMU_EINVAL);
		EXPECT_REJECT(vm, with_host(slot_req(0, SZ_1M, 2 * SZ_1M, mem0), SZ_2M, 0), VMMU_EINVAL);
		EXPECT_REJECT(vm, with_host(slot_req(0, SZ_1M, 2 * SZ_1M, mem0), SZ_1G, 0), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(1, 4 * SZ_1M, 2 * SZ_1M, NULL), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(1, 4 * SZ_1M, SZ_1M, spare), VMMU_EINVAL);
		EXPECT_REJECT(vm, with_host(slot_req(1, 4 * SZ_1M, SZ_1M, NULL), SZ_2M, VMMU_BACKING_ANON),
			      VMMU_EINVAL);
		/* ... and so is it when the request also moves the slot. */
		EXPECT_REJECT(vm, slot_req(0, 16 * SZ_1M, 4 * SZ_1M, mem0), VMMU_EINVAL);

		/* READONLY cannot be toggled, in either direction. */
		EXPECT_REJECT(vm, with_flags(slot_req(0, SZ_1M, 2 * SZ_1M, mem0), VMMU_MEM_READONLY), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(2, 6 * SZ_1M, SZ_4K, mem2), VMMU_EINVAL);
		EXPECT_REJECT(vm, slot_req(2, 7 * SZ_1M, SZ_4K, mem2), VMMU_EINVAL);

		/* The accepted edge next to the rejected ones: ending exactly at
		 * 2^MAXPHYADDR is fine. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 5, .gpa = top - SZ_4K, .size = SZ_4K,
								       .hva = spare }));
		ASSERT_TRUE(gpa_hva(vm, top - 1) == spare + SZ_4K - 1);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 5 }));

		vmmu_vm_destroy(vm);
		munmap(mem0, 2 * SZ_1M);
		munmap(mem2, SZ_4K);
		munmap(spare, 4 * SZ_1M);
	}
}

TEST(memslot_null_args)
{
	for_each_mmu_variant(var) {
		struct vmmu_vm_config cfg;
		vmmu_vm *vm = variant_vm(var, &cfg);
		struct vmmu_memslot req = slot_req(0, 0, SZ_4K, NULL);
		void *hva = NULL;
		uint64_t gen = generation(vm);

		ASSERT_ERR(vmmu_set_memslot(NULL, &req), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memslot(vm, NULL), VMMU_EINVAL);
		ASSERT_EQ_U64(generation(vm), gen);
		ASSERT_ERR(vmmu_memslot_hva(NULL, 0, &hva), VMMU_EINVAL);
		ASSERT_ERR(vmmu_memslot_hva(vm, 0, NULL), VMMU_EINVAL);
		ASSERT_ERR(vmmu_gpa_to_hva(NULL, 0, &hva), VMMU_EINVAL);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 0, NULL), VMMU_EINVAL);
		/* With no slot at all, nothing resolves. */
		ASSERT_ERR(vmmu_memslot_hva(vm, 0, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 0, &hva), VMMU_ENOENT);
		/* The request that was refused for a NULL vm is fine otherwise. */
		ASSERT_OK(vmmu_set_memslot(vm, &req));
		ASSERT_GT(generation(vm), gen);
		vmmu_vm_destroy(vm);
	}
}

TEST(host_page_size_levels)
{
	ASSERT_EQ(host_page_size_to_level(0), PG_LEVEL_4K);
	ASSERT_EQ(host_page_size_to_level(SZ_4K), PG_LEVEL_4K);
	ASSERT_EQ(host_page_size_to_level(SZ_2M), PG_LEVEL_2M);
	ASSERT_EQ(host_page_size_to_level(SZ_1G), PG_LEVEL_1G);
	for (unsigned int b = 0; b < 64; b++)
		if (b != 12 && b != 21 && b != 30)
			ASSERT_EQ(host_page_size_to_level(1ULL << b), 0);
	ASSERT_EQ(host_page_size_to_level(SZ_2M + SZ_4K), 0);
}

/* ---- successful changes ---------------------------------------------------- */

TEST(memslot_lifecycle)
{
	for_each_mmu_variant(var) {
		struct vmmu_vm_config cfg;
		vmmu_vm *vm = variant_vm(var, &cfg);
		uint8_t *mem = map_aligned(SZ_2M, SZ_4K);
		uint8_t *ro = map_aligned(SZ_4K, SZ_4K);
		struct vmmu_memslot s0 = slot_req(0, 16 * SZ_1M, SZ_2M, mem);
		struct vmmu_memslot s1 = slot_req(1, 32 * SZ_1M, 4 * SZ_1M, NULL);
		struct vmmu_memslot s2 = with_flags(slot_req(2, 64 * SZ_1M, SZ_4K, ro), VMMU_MEM_READONLY);
		uint64_t g, g2;
		uint8_t *owned;
		void *hva;

		/* Create with caller memory. */
		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &s0));
		ASSERT_GT(generation(vm), g);
		ASSERT_TRUE(slot_hva(vm, 0) == mem);
		ASSERT_TRUE(gpa_hva(vm, 16 * SZ_1M + 0x1234) == mem + 0x1234);

		/* Create with vmmu memory: THP-backed, so starts on a 2M boundary
		 * (gfn and hva congruent, which huge mappings need). */
		g = generation(vm);
		s1.host_page_size = SZ_2M;
		s1.backing = VMMU_BACKING_ANON;
		ASSERT_OK(vmmu_set_memslot(vm, &s1));
		ASSERT_GT(generation(vm), g);
		owned = slot_hva(vm, 1);
		ASSERT_TRUE(owned != NULL);
		ASSERT_EQ_U64((uintptr_t)owned & (SZ_4K - 1), 0);
		ASSERT_EQ_U64((uintptr_t)owned & (SZ_2M - 1), 0);
		ASSERT_TRUE(gpa_hva(vm, 32 * SZ_1M) == owned);
		ASSERT_TRUE(gpa_hva(vm, 36 * SZ_1M - 1) == owned + 4 * SZ_1M - 1);
		/* The host can write all of it. */
		memset(owned, 0xa5, 4 * SZ_1M);
		ASSERT_EQ(owned[0], 0xa5);
		ASSERT_EQ(owned[4 * SZ_1M - 1], 0xa5);

		/* A 4K-backed vmmu slot: page aligned, writable. */
		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 3, .gpa = 48 * SZ_1M,
								       .size = 5 * SZ_4K }));
		ASSERT_GT(generation(vm), g);
		hva = slot_hva(vm, 3);
		ASSERT_EQ_U64((uintptr_t)hva & (SZ_4K - 1), 0);
		memset(hva, 0x5a, 5 * SZ_4K);
		ASSERT_EQ(((uint8_t *)hva)[5 * SZ_4K - 1], 0x5a);

		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &s2));
		ASSERT_GT(generation(vm), g);

		/* No-ops succeed and publish nothing (KVM accepts them). */
		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &s0));
		ASSERT_OK(vmmu_set_memslot(vm, &s1));
		ASSERT_OK(vmmu_set_memslot(vm, &s2));
		s1.hva = owned;		/* naming vmmu's own memory is the same slot */
		ASSERT_OK(vmmu_set_memslot(vm, &s1));
		s1.hva = NULL;
		ASSERT_EQ_U64(generation(vm), g);

		/* Move: the old range goes, the new one maps the same memory. */
		mem[0x2345] = 0x77;
		s0.gpa = 128 * SZ_1M;
		ASSERT_OK(vmmu_set_memslot(vm, &s0));
		g2 = generation(vm);
		ASSERT_GT(g2, g);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 16 * SZ_1M, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 16 * SZ_1M + SZ_2M - 1, &hva), VMMU_ENOENT);
		ASSERT_TRUE(gpa_hva(vm, 128 * SZ_1M) == mem);
		ASSERT_TRUE(gpa_hva(vm, 128 * SZ_1M + 0x2345) == mem + 0x2345);
		ASSERT_EQ(*(uint8_t *)gpa_hva(vm, 128 * SZ_1M + 0x2345), 0x77);
		ASSERT_TRUE(slot_hva(vm, 0) == mem);
		/* A move may overlap the slot's own old range. */
		s0.gpa = 128 * SZ_1M + SZ_4K;
		ASSERT_OK(vmmu_set_memslot(vm, &s0));
		ASSERT_GT(generation(vm), g2);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 128 * SZ_1M, &hva), VMMU_ENOENT);
		ASSERT_TRUE(gpa_hva(vm, 128 * SZ_1M + SZ_4K) == mem);
		ASSERT_TRUE(gpa_hva(vm, 128 * SZ_1M + SZ_2M) == mem + SZ_2M - SZ_4K);
		/* A read-only slot moves when the request restates READONLY. */
		g = generation(vm);
		s2.gpa = 65 * SZ_1M;
		ASSERT_OK(vmmu_set_memslot(vm, &s2));
		ASSERT_GT(generation(vm), g);
		ASSERT_TRUE(gpa_hva(vm, 65 * SZ_1M) == ro);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 64 * SZ_1M, &hva), VMMU_ENOENT);
		/* A move of a vmmu-owned slot keeps its memory. */
		g = generation(vm);
		s1.gpa = 256 * SZ_1M;
		ASSERT_OK(vmmu_set_memslot(vm, &s1));
		ASSERT_GT(generation(vm), g);
		ASSERT_TRUE(slot_hva(vm, 1) == owned);
		ASSERT_EQ(*(uint8_t *)gpa_hva(vm, 256 * SZ_1M + 12345), 0xa5);

		/* Delete: the id and its range go; deleting again is ENOENT. */
		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 0 }));
		g2 = generation(vm);
		ASSERT_GT(g2, g);
		ASSERT_ERR(vmmu_memslot_hva(vm, 0, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 128 * SZ_1M + SZ_4K, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 0 }), VMMU_ENOENT);
		ASSERT_EQ_U64(generation(vm), g2);
		/* The other slots are untouched. */
		ASSERT_TRUE(slot_hva(vm, 1) == owned);
		ASSERT_TRUE(gpa_hva(vm, 65 * SZ_1M) == ro);
		/* The id and the range are free again. */
		s0.gpa = 16 * SZ_1M;
		ASSERT_OK(vmmu_set_memslot(vm, &s0));
		ASSERT_GT(generation(vm), g2);
		ASSERT_TRUE(gpa_hva(vm, 16 * SZ_1M) == mem);
		/* Deleting a vmmu-owned slot (its memory goes with it). */
		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 1 }));
		ASSERT_GT(generation(vm), g);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 256 * SZ_1M, &hva), VMMU_ENOENT);
		/* The largest id is usable. */
		g = generation(vm);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = VMMU_MAX_MEMSLOTS - 1,
								       .gpa = 512 * SZ_1M, .size = SZ_4K }));
		ASSERT_GT(generation(vm), g);
		ASSERT_OK(vmmu_memslot_hva(vm, VMMU_MAX_MEMSLOTS - 1, &hva));

		vmmu_vm_destroy(vm);
		munmap(mem, SZ_2M);
		munmap(ro, SZ_4K);
	}
}

TEST(memslot_boundaries)
{
	for_each_mmu_variant(var) {
		struct vmmu_vm_config cfg;
		vmmu_vm *vm = variant_vm(var, &cfg);
		uint8_t *a = map_aligned(3 * SZ_4K, SZ_4K);
		uint8_t *b = map_aligned(2 * SZ_4K, SZ_4K);
		uint8_t *z = map_aligned(SZ_4K, SZ_4K);
		const uint64_t ga = 0x7000, gb = ga + 3 * SZ_4K, gc = gb + 2 * SZ_4K;
		uint8_t *gap = map_aligned(ga - SZ_4K, SZ_4K);
		void *hva;

		/* [ga, gb) and [gb, gc) touch but do not overlap. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 1, .gpa = ga, .size = gb - ga,
								       .hva = a }));
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 2, .gpa = gb, .size = gc - gb,
								       .hva = b }));
		/* Guest-physical 0 is an ordinary address. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 3, .gpa = 0, .size = SZ_4K,
								       .hva = z }));

		ASSERT_TRUE(gpa_hva(vm, 0) == z);
		ASSERT_TRUE(gpa_hva(vm, SZ_4K - 1) == z + SZ_4K - 1);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, SZ_4K, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, ga - 1, &hva), VMMU_ENOENT);
		ASSERT_TRUE(gpa_hva(vm, ga) == a);
		ASSERT_TRUE(gpa_hva(vm, ga + SZ_4K) == a + SZ_4K);
		ASSERT_TRUE(gpa_hva(vm, gb - 1) == a + 3 * SZ_4K - 1);
		ASSERT_TRUE(gpa_hva(vm, gb) == b);
		ASSERT_TRUE(gpa_hva(vm, gc - 1) == b + 2 * SZ_4K - 1);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, gc, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, ~0ULL, &hva), VMMU_ENOENT);
		ASSERT_ERR(vmmu_gpa_to_hva(vm, 1ULL << cfg.maxphyaddr, &hva), VMMU_ENOENT);

		/* Filling the gap between two slots exactly is allowed too. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 4, .gpa = SZ_4K, .size = ga - SZ_4K,
								       .hva = gap }));
		ASSERT_TRUE(gpa_hva(vm, SZ_4K) == gap);
		ASSERT_TRUE(gpa_hva(vm, ga - 1) == gap + ga - SZ_4K - 1);
		ASSERT_TRUE(gpa_hva(vm, ga) == a);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 4 }));
		ASSERT_TRUE(gpa_hva(vm, ga) == a);
		ASSERT_TRUE(gpa_hva(vm, SZ_4K - 1) == z + SZ_4K - 1);

		/* The largest slot: KVM_MEM_MAX_NR_PAGES pages.  Nothing touches
		 * the (unbacked) hva until a vCPU faults on it. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 9, .gpa = 1ULL << 44,
								       .size = MEMSLOT_MAX_PAGES << 12,
								       .hva = (void *)(SZ_1G) }));
		ASSERT_TRUE(gpa_hva(vm, (1ULL << 44) + (MEMSLOT_MAX_PAGES << 12) - 1) ==
			    (void *)(SZ_1G + (MEMSLOT_MAX_PAGES << 12) - 1));
		ASSERT_ERR(vmmu_gpa_to_hva(vm, (1ULL << 44) + (MEMSLOT_MAX_PAGES << 12), &hva), VMMU_ENOENT);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 9 }));

		vmmu_vm_destroy(vm);
		munmap(a, 3 * SZ_4K);
		munmap(b, 2 * SZ_4K);
		munmap(z, SZ_4K);
		munmap(gap, ga - SZ_4K);
	}
}

/* ---- snapshots: memslots_copy_update / memslots_find_gfn ------------------- */

#define NR_SNAP_SLOTS 300

struct ref_slot {
	uint32_t id;
	gfn_t base;
	uint64_t npages;
	bool live;
};

static const struct ref_slot *ref_find(const struct ref_slot *r, unsigned int n, gfn_t gfn)
{
	for (unsigned int i = 0; i < n; i++)
		if (r[i].live && gfn >= r[i].base && gfn < r[i].base + r[i].npages)
			return &r[i];
	return NULL;
}

static bool ref_overlaps(const struct ref_slot *r, unsigned int n, gfn_t start, gfn_t end, uint32_t except)
{
	for (unsigned int i = 0; i < n; i++)
		if (r[i].live && r[i].id != except && start < r[i].base + r[i].npages && r[i].base < end)
			return true;
	return false;
}

static struct memslot slot_of(const struct ref_slot *r)
{
	struct memslot s;

	memset(&s, 0, sizeof(s));
	s.id = r->id;
	s.base_gfn = r->base;
	s.npages = r->npages;
	/* A distinct hva per slot, so a lookup returning the wrong copy shows. */
	s.hva = (uintptr_t)(r->id + 1) << 32;
	s.host_level = PG_LEVEL_4K;
	return s;
}

static uint64_t nr_snap_updates;

/* Publishes what a writer would: cur updated, cur freed. */
static struct memslots *snap_update(struct memslots *cur, uint32_t id, const struct memslot *repl)
{
	struct memslots *next = memslots_copy_update(cur, id, repl);

	ASSERT_TRUE(next != NULL);
	ASSERT_EQ_U64(next->generation, cur->generation + 1);
	nr_snap_updates++;
	free(cur);
	return next;
}

static void check_snapshot(const struct memslots *ms, const struct ref_slot *ref, unsigned int nref, gfn_t span,
			   unsigned int nr_random)
{
	unsigned int live = 0;

	for (unsigned int i = 0; i < nref; i++)
		live += ref[i].live;
	ASSERT_EQ(ms->n, live);
	/* The binary search relies on sorted, disjoint slots. */
	for (unsigned int i = 1; i < ms->n; i++)
		ASSERT_LE(ms->slots[i - 1].base_gfn + ms->slots[i - 1].npages, ms->slots[i].base_gfn);

	for (unsigned int i = 0; i < nref; i++) {
		const struct ref_slot *r = &ref[i];
		const struct memslot *s = memslots_find_id(ms, r->id);
		const gfn_t probes[4] = { r->base - 1, r->base, r->base + r->npages - 1, r->base + r->npages };

		if (!r->live) {
			ASSERT_TRUE(s == NULL);
			continue;
		}
		ASSERT_TRUE(s != NULL);
		ASSERT_EQ_U64(s->base_gfn, r->base);
		ASSERT_EQ_U64(s->npages, r->npages);
		/* Both edges of every slot, and just outside them. */
		for (int k = 0; k < 4; k++) {
			const struct ref_slot *want = ref_find(ref, nref, probes[k]);
			const struct memslot *got = memslots_find_gfn(ms, probes[k]);

			if (!want) {
				ASSERT_TRUE(got == NULL);
				continue;
			}
			ASSERT_TRUE(got != NULL);
			ASSERT_EQ(got->id, want->id);
			ASSERT_EQ_U64(memslot_gfn_to_hva(got, probes[k]),
				      ((uintptr_t)(want->id + 1) << 32) + ((probes[k] - want->base) << 12));
		}
	}
	for (unsigned int i = 0; i < nr_random; i++) {
		gfn_t gfn = rng_below(span + 64);
		const struct ref_slot *want = ref_find(ref, nref, gfn);
		const struct memslot *got = memslots_find_gfn(ms, gfn);

		if (!want) {
			if (got)
				test_fail(__FILE__, __LINE__, "gfn %#" PRIx64 " found in slot %u, no slot covers it",
					  gfn, got->id);
			continue;
		}
		if (!got || got->id != want->id)
			test_fail(__FILE__, __LINE__, "gfn %#" PRIx64 ": got slot %d, want %u", gfn,
				  got ? (int)got->id : -1, want->id);
	}
	for (unsigned int i = 0; i < nr_random / 8; i++) {
		gfn_t start = rng_below(span + 64), end = start + 1 + rng_below(64);
		uint32_t except = (uint32_t)rng_below(NR_SNAP_SLOTS + 1);

		ASSERT_EQ(memslots_range_overlaps(ms, start, end, except), ref_overlaps(ref, nref, start, end, except));
	}
	ASSERT_TRUE(memslots_find_gfn(ms, ~0ULL) == NULL);
}

TEST(memslots_find_gfn_many)
{
	struct ref_slot ref[NR_SNAP_SLOTS];
	unsigned int order[NR_SNAP_SLOTS];
	struct memslots *ms = memslots_new_empty();
	gfn_t cursor = 1 + 0x100;
	struct memslot s;

	ASSERT_TRUE(ms != NULL);
	ASSERT_EQ(ms->n, 0);
	ASSERT_EQ_U64(ms->generation, 0);
	nr_snap_updates = 0;
	ASSERT_TRUE(memslots_find_gfn(ms, 0) == NULL);
	test_rng_seed(0x510753);

	/* Disjoint slots, some touching, some far apart, a few large. */
	for (unsigned int i = 0; i < NR_SNAP_SLOTS; i++) {
		uint64_t gap = rng_below(4) == 0 ? 0 : rng_below(4) == 0 ? rng_below(1ULL << 20) : rng_below(64);
		uint64_t npages = rng_below(8) == 0 ? 1 + rng_below(1ULL << 18) : 1 + rng_below(32);

		ref[i] = (struct ref_slot){ .id = 0, .base = cursor + gap, .npages = npages, .live = false };
		cursor = ref[i].base + npages;
		order[i] = i;
	}
	/* Random ids and a random insertion order. */
	for (unsigned int i = NR_SNAP_SLOTS - 1; i > 0; i--) {
		unsigned int j = (unsigned int)rng_below(i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (unsigned int i = 0; i < NR_SNAP_SLOTS; i++)
		ref[order[i]].id = i;
	for (unsigned int i = NR_SNAP_SLOTS - 1; i > 0; i--) {
		unsigned int j = (unsigned int)rng_below(i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (unsigned int i = 0; i < NR_SNAP_SLOTS; i++) {
		ref[order[i]].live = true;
		s = slot_of(&ref[order[i]]);
		ms = snap_update(ms, s.id, &s);
		if (i % 50 == 0)
			check_snapshot(ms, ref, NR_SNAP_SLOTS, cursor, 2000);
	}
	check_snapshot(ms, ref, NR_SNAP_SLOTS, cursor, 200000);

	/* Delete half, in random order. */
	for (unsigned int i = 0; i < NR_SNAP_SLOTS / 2; i++) {
		ref[order[i]].live = false;
		ms = snap_update(ms, ref[order[i]].id, NULL);
	}
	check_snapshot(ms, ref, NR_SNAP_SLOTS, cursor, 50000);

	/* Move live slots into holes the deletions left (same id, new base):
	 * a replacement must land at its new sorted position. */
	for (unsigned int i = NR_SNAP_SLOTS / 2, h = 0; i < NR_SNAP_SLOTS && h < NR_SNAP_SLOTS / 2; i++) {
		struct ref_slot *mv = &ref[order[i]];

		while (h < NR_SNAP_SLOTS / 2 && ref[order[h]].npages < mv->npages)
			h++;
		if (h == NR_SNAP_SLOTS / 2)
			break;
		ASSERT_FALSE(ref_overlaps(ref, NR_SNAP_SLOTS, ref[order[h]].base, ref[order[h]].base + mv->npages,
					  mv->id));
		mv->base = ref[order[h]].base;
		ref[order[h]].npages = 0;	/* hole used up */
		s = slot_of(mv);
		ms = snap_update(ms, s.id, &s);
		h++;
	}
	check_snapshot(ms, ref, NR_SNAP_SLOTS, cursor, 50000);

	/* Delete the rest: an empty snapshot finds nothing. */
	for (unsigned int i = NR_SNAP_SLOTS / 2; i < NR_SNAP_SLOTS; i++) {
		ref[order[i]].live = false;
		ms = snap_update(ms, ref[order[i]].id, NULL);
	}
	ASSERT_EQ(ms->n, 0);
	check_snapshot(ms, ref, NR_SNAP_SLOTS, cursor, 1000);
	/* One generation per published snapshot, from 0 for the empty one. */
	ASSERT_EQ_U64(ms->generation, nr_snap_updates);
	free(ms);
}

/* ---- memslot_max_mapping_level ---------------------------------------------- */

static struct memslot level_slot(gfn_t base, uint64_t npages, uint64_t hva_pfn, int host_level)
{
	struct memslot s;

	memset(&s, 0, sizeof(s));
	s.base_gfn = base;
	s.npages = npages;
	s.hva = (uintptr_t)(hva_pfn << 12);
	s.host_level = host_level;
	return s;
}

/*
 * KVM's rule, stated directly: level L is allowed iff the host allows it,
 * the aligned L-page range around gfn lies inside the slot, and the slot's
 * gfn and hva agree modulo the L page size.
 */
static int ref_max_level(const struct memslot *s, gfn_t gfn, int max_level)
{
	int top = s->host_level < max_level ? s->host_level : max_level;

	for (int level = top; level > PG_LEVEL_4K; level--) {
		uint64_t pages = 1ULL << (9 * (level - 1));
		gfn_t start = gfn / pages * pages;

		if (start >= s->base_gfn && start + pages <= s->base_gfn + s->npages &&
		    ((s->hva >> 12) - s->base_gfn) % pages == 0)
			return level;
	}
	return PG_LEVEL_4K;
}

TEST(max_mapping_level_rules)
{
	const uint64_t p2m = 512, p1g = 512 * 512;
	struct memslot s;

	/* 4M slot at 2M-aligned gfn 0x200, hva congruent. */
	s = level_slot(0x200, 4 * p2m, 0x40000 + 0x200, PG_LEVEL_2M);
	for (gfn_t g = 0x200; g < 0x200 + 4 * p2m; g++) {
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_1G), PG_LEVEL_2M);
		/* The VM's own limit bounds it as well (NO_HUGEPAGES). */
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_4K), PG_LEVEL_4K);
	}
	/* A 4K host page size never allows more. */
	s.host_level = PG_LEVEL_4K;
	for (gfn_t g = 0x200; g < 0x200 + 4 * p2m; g += 7)
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_1G), PG_LEVEL_4K);
	/* hva 4K off congruence: no 2M range is the same memory on both sides. */
	s = level_slot(0x200, 4 * p2m, 0x40000 + 0x201, PG_LEVEL_2M);
	for (gfn_t g = 0x200; g < 0x200 + 4 * p2m; g++)
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_1G), PG_LEVEL_4K);
	/* Slot [0x201, 0x801): the 2M ranges [0x200,0x400) and [0x800,0xa00)
	 * cross its start and end; [0x400,0x800) is inside. */
	s = level_slot(0x201, 0x600, 0x80000 + 0x201, PG_LEVEL_2M);
	for (gfn_t g = 0x201; g < 0x801; g++)
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_2M),
			  g >= 0x400 && g < 0x800 ? PG_LEVEL_2M : PG_LEVEL_4K);
	/* Slot ending one page short of a 2M boundary. */
	s = level_slot(0x400, p2m - 1, 0x400, PG_LEVEL_2M);
	ASSERT_EQ(memslot_max_mapping_level(&s, 0x400, PG_LEVEL_2M), PG_LEVEL_4K);
	ASSERT_EQ(memslot_max_mapping_level(&s, 0x5fe, PG_LEVEL_2M), PG_LEVEL_4K);

	/* 1G: a 3G slot starting 1G-aligned, congruent: 1G everywhere. */
	s = level_slot(p1g, 3 * p1g, 5 * p1g, PG_LEVEL_1G);
	for (gfn_t g = p1g; g < 4 * p1g; g += 4099)
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_1G), PG_LEVEL_1G);
	ASSERT_EQ(memslot_max_mapping_level(&s, 4 * p1g - 1, PG_LEVEL_1G), PG_LEVEL_1G);
	ASSERT_EQ(memslot_max_mapping_level(&s, p1g, PG_LEVEL_2M), PG_LEVEL_2M);
	s.host_level = PG_LEVEL_2M;
	ASSERT_EQ(memslot_max_mapping_level(&s, p1g, PG_LEVEL_1G), PG_LEVEL_2M);
	/* hva 2M off 1G congruence: 2M still works, 1G never. */
	s = level_slot(p1g, 3 * p1g, 5 * p1g + p2m, PG_LEVEL_1G);
	for (gfn_t g = p1g; g < 4 * p1g; g += 4099)
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_1G), PG_LEVEL_2M);
	/* hva 4K off: nothing huge at all. */
	s = level_slot(p1g, 3 * p1g, 5 * p1g + 1, PG_LEVEL_1G);
	for (gfn_t g = p1g; g < 4 * p1g; g += 4099)
		ASSERT_EQ(memslot_max_mapping_level(&s, g, PG_LEVEL_1G), PG_LEVEL_4K);
	/* Slot [1G+2M, 3G-2M): the first and last 1G ranges cross its ends,
	 * leaving 2M there; the middle 1G is inside. */
	s = level_slot(p1g + p2m, 2 * p1g - 2 * p2m, 7 * p1g + p2m, PG_LEVEL_1G);
	ASSERT_EQ(memslot_max_mapping_level(&s, p1g + p2m, PG_LEVEL_1G), PG_LEVEL_2M);
	ASSERT_EQ(memslot_max_mapping_level(&s, 2 * p1g - 1, PG_LEVEL_1G), PG_LEVEL_2M);
	ASSERT_EQ(memslot_max_mapping_level(&s, 2 * p1g, PG_LEVEL_1G), PG_LEVEL_2M);
	ASSERT_EQ(memslot_max_mapping_level(&s, 3 * p1g - p2m - 1, PG_LEVEL_1G), PG_LEVEL_2M);
	s = level_slot(p1g + p2m, 3 * p1g - p2m, 7 * p1g + p2m, PG_LEVEL_1G);
	ASSERT_EQ(memslot_max_mapping_level(&s, p1g + p2m, PG_LEVEL_1G), PG_LEVEL_2M);
	ASSERT_EQ(memslot_max_mapping_level(&s, 2 * p1g, PG_LEVEL_1G), PG_LEVEL_1G);
	ASSERT_EQ(memslot_max_mapping_level(&s, 4 * p1g - 1, PG_LEVEL_1G), PG_LEVEL_1G);
}

TEST(max_mapping_level_random)
{
	static const uint64_t grains[] = { 1, 512, 512 * 512 };
	unsigned int counts[PG_LEVEL_1G + 1] = { 0 };

	test_rng_seed(0x1e7e1);
	for (unsigned int i = 0; i < 4000; i++) {
		/* Bases and hvas aligned to random grains, so every level's
		 * congruence both holds and fails often. */
		uint64_t base = rng_below(1ULL << 24) * grains[rng_below(3)];
		uint64_t npages = 1 + rng_below(rng_below(2) ? 3 * 512 * 512 : 4 * 512);
		uint64_t hva_pfn = base + rng_below(1ULL << 12) * grains[rng_below(3)] + (rng_below(8) == 0);
		struct memslot s = level_slot(base, npages, hva_pfn, 1 + (int)rng_below(3));

		for (unsigned int k = 0; k < 64; k++) {
			gfn_t gfn = base + (k == 0 ? 0 : k == 1 ? npages - 1 : rng_below(npages));
			int max_level = 1 + (int)rng_below(3);
			int got = memslot_max_mapping_level(&s, gfn, max_level);

			if (got != ref_max_level(&s, gfn, max_level))
				test_fail(__FILE__, __LINE__,
					  "slot [%#" PRIx64 ", +%#" PRIx64 ") hva pfn %#" PRIx64
					  " host L%d, gfn %#" PRIx64 " max L%d: got L%d, want L%d",
					  base, npages, hva_pfn, s.host_level, gfn, max_level, got,
					  ref_max_level(&s, gfn, max_level));
			counts[got]++;
		}
	}
	/* Each outcome occurred: the random cases do cover all three levels. */
	ASSERT_GT(counts[PG_LEVEL_4K], 1000);
	ASSERT_GT(counts[PG_LEVEL_2M], 1000);
	ASSERT_GT(counts[PG_LEVEL_1G], 1000);
}

/* ---- the vCPU and memslot changes (seed 004) -------------------------------- */

static int vcpu_write64(vmmu_vcpu *vcpu, uint64_t gpa, uint64_t val, struct vmmu_exit *exit)
{
	return vmmu_vcpu_access(vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_WRITE, exit);
}

static uint64_t vcpu_read64_ok(vmmu_vcpu *vcpu, uint64_t gpa)
{
	struct vmmu_exit exit;
	uint64_t val = 0;

	ASSERT_OK(vmmu_vcpu_access(vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_READ, &exit));
	return val;
}

static void expect_mmio_exit(vmmu_vcpu *vcpu, uint64_t gpa, bool write, int line)
{
	struct vmmu_exit exit;
	uint64_t val = 0xdeadbeefcafef00dULL;
	int r;

	memset(&exit, 0xff, sizeof(exit));
	r = vmmu_vcpu_access(vcpu, gpa, &val, sizeof(val), write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ, &exit);
	if (r != VMMU_EXIT || exit.reason != VMMU_EXIT_MMIO || exit.u.mmio.gpa != gpa || exit.u.mmio.len != 8 ||
	    exit.u.mmio.offset != 0 || exit.u.mmio.is_write != write || exit.u.mmio.readonly_slot)
		test_fail(__FILE__, line,
			  "%s at %#" PRIx64 ": r=%d reason=%u gpa=%#" PRIx64 " len=%u off=%u w=%u ro=%u, want MMIO exit",
			  write ? "write" : "read", gpa, r, exit.reason, exit.u.mmio.gpa, exit.u.mmio.len,
			  exit.u.mmio.offset, exit.u.mmio.is_write, exit.u.mmio.readonly_slot);
	/* An exit transfers nothing. */
	if (!write)
		ASSERT_EQ_U64(val, 0xdeadbeefcafef00dULL);
}

TEST(vcpu_sees_memslot_changes)
{
	for_each_mmu_variant(var) {
		struct vmmu_vm_config cfg;
		vmmu_vm *vm = variant_vm(var, &cfg);
		const uint64_t base = 0x200000, size = 2 * SZ_2M, x = base + 0x12348, other = 0x10000000;
		uint8_t *mem1 = map_aligned(size, SZ_2M), *mem2 = map_aligned(SZ_2M, SZ_2M);
		uint8_t *mem3 = map_aligned(size, SZ_2M), *rom = map_aligned(SZ_4K, SZ_4K);
		struct vmmu_memslot s = slot_req(0, base, size, mem1);
		struct vmmu_vcpu_stats vst0, vst1;
		struct vmmu_vm_stats st;
		struct vmmu_exit exit;
		vmmu_vcpu *vcpu = NULL;
		uint64_t v;

		/* 2M host pages: the first mappings are huge, so the MMIO SPTE
		 * below lands where a huge leaf used to be. */
		s.host_page_size = SZ_2M;
		ASSERT_OK(vmmu_set_memslot(vm, &s));
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &vcpu));

		ASSERT_OK(vcpu_write64(vcpu, x, 0x1111222233334444ULL, &exit));
		memcpy(&v, mem1 + (x - base), 8);
		ASSERT_EQ_U64(v, 0x1111222233334444ULL);
		ASSERT_EQ_U64(vcpu_read64_ok(vcpu, x), 0x1111222233334444ULL);
		v = 0x5555666677778888ULL;
		memcpy(mem1 + (x - base), &v, 8);
		ASSERT_EQ_U64(vcpu_read64_ok(vcpu, x), v);

		/* Deleted: the mapping goes (and its TLB entry); x is MMIO now. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 0 }));
		expect_mmio_exit(vcpu, x, true, __LINE__);
		memcpy(&v, mem1 + (x - base), 8);
		ASSERT_EQ_U64(v, 0x5555666677778888ULL);
		expect_mmio_exit(vcpu, x, false, __LINE__);
		/* The first exit cached an MMIO SPTE; the next one is served from it. */
		vmmu_vm_get_stats(vm, &st);
		ASSERT_GT(st.mmio_sptes_installed, 0);
		vmmu_vcpu_get_stats(vcpu, &vst0);
		expect_mmio_exit(vcpu, x, false, __LINE__);
		vmmu_vcpu_get_stats(vcpu, &vst1);
		ASSERT_GT(vst1.pf_mmio_spte, vst0.pf_mmio_spte);

		/* A slot elsewhere: the cached SPTE for x is stale (generation)
		 * but x is still MMIO; the new range works. */
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 1, .gpa = other, .size = SZ_2M,
								       .hva = mem2 }));
		expect_mmio_exit(vcpu, x, true, __LINE__);
		ASSERT_OK(vcpu_write64(vcpu, other + 0x808, 0xabcdef0123456789ULL, &exit));
		memcpy(&v, mem2 + 0x808, 8);
		ASSERT_EQ_U64(v, 0xabcdef0123456789ULL);

		/* Recreated over x with different memory: the old MMIO SPTE must
		 * miss on its generation, or x would stay MMIO forever. */
		s.hva = mem3;
		ASSERT_OK(vmmu_set_memslot(vm, &s));
		ASSERT_OK(vcpu_write64(vcpu, x, 0x0123456789abcdefULL, &exit));
		memcpy(&v, mem3 + (x - base), 8);
		ASSERT_EQ_U64(v, 0x0123456789abcdefULL);
		memcpy(&v, mem1 + (x - base), 8);
		ASSERT_EQ_U64(v, 0x5555666677778888ULL);
		ASSERT_EQ_U64(vcpu_read64_ok(vcpu, x), 0x0123456789abcdefULL);

		/* Moved away: x is MMIO again, the data follows the slot. */
		s.gpa = 2 * other;
		ASSERT_OK(vmmu_set_memslot(vm, &s));
		expect_mmio_exit(vcpu, x, false, __LINE__);
		ASSERT_EQ_U64(vcpu_read64_ok(vcpu, 2 * other + (x - base)), 0x0123456789abcdefULL);
		/* ... and back. */
		s.gpa = base;
		ASSERT_OK(vmmu_set_memslot(vm, &s));
		ASSERT_EQ_U64(vcpu_read64_ok(vcpu, x), 0x0123456789abcdefULL);
		expect_mmio_exit(vcpu, 2 * other + (x - base), false, __LINE__);

		/* A read-only slot: reads work, writes exit as MMIO writes
		 * flagged readonly_slot and change nothing. */
		memset(rom, 0x3c, SZ_4K);
		ASSERT_OK(vmmu_set_memslot(vm, &(struct vmmu_memslot){ .slot = 2, .gpa = 3 * other, .size = SZ_4K,
								       .hva = rom, .flags = VMMU_MEM_READONLY }));
		ASSERT_EQ_U64(vcpu_read64_ok(vcpu, 3 * other + 16), 0x3c3c3c3c3c3c3c3cULL);
		memset(&exit, 0, sizeof(exit));
		ASSERT_EQ(vcpu_write64(vcpu, 3 * other + 16, 0, &exit), VMMU_EXIT);
		ASSERT_EQ(exit.reason, VMMU_EXIT_MMIO);
		ASSERT_EQ_U64(exit.u.mmio.gpa, 3 * other + 16);
		ASSERT_EQ(exit.u.mmio.is_write, 1);
		ASSERT_EQ(exit.u.mmio.readonly_slot, 1);
		ASSERT_EQ(rom[16], 0x3c);

		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		vmmu_vm_destroy(vm);
		munmap(mem1, size);
		munmap(mem2, SZ_2M);
		munmap(mem3, size);
		munmap(rom, SZ_4K);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
