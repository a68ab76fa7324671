/* SPDX-License-Identifier: MIT */
/*
 * Guest paging through the vCPU: two-dimensional translation (every guest
 * page-table access is itself a guest-physical access through the TDP), guest
 * faults delivered to the embedder, the TLB rules of the architecture
 * (INVLPG, MOV to CR3 with and without PCID no-flush, global pages), and the
 * validation of architectural state.  Runs over every MMU variant.
 */
#include <stddef.h>

#include "guest.h"
#include "harness.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/vmmu_int.h"

#define MB (1ULL << 20)
#define POOL_GPA (48 * MB)
#define POOL_SIZE (16 * MB)

struct penv {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	struct guest_pt *pt;
};

static const char *const mode_names[] = { "32-bit", "PAE", "4-level", "5-level" };

static bool mode_fits(const struct mmu_variant *var, enum guest_mode mode)
{
	/* LA57 needs a 5-level TDP (vmmu refuses it otherwise). */
	return mode != GUEST_MODE_5LEVEL || var->tdp_levels == 5;
}

static void penv_create(struct penv *e, const struct mmu_variant *var, enum guest_mode mode)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 64 * MB };

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &e->vm));
	ASSERT_OK(vmmu_set_memslot(e->vm, &s));
	ASSERT_OK(vmmu_vcpu_create(e->vm, 0, &e->vcpu));
	ASSERT_OK(guest_pt_create(e->vm, mode, POOL_GPA, POOL_SIZE, &e->pt));
	/* Shadow paging sees guest-table changes only as guest stores. */
	if (var->mmu == VMMU_MMU_SHADOW)
		guest_pt_set_vcpu(e->pt, e->vcpu);
}

static void penv_enable(struct penv *e, uint32_t cpl, uint64_t cr4_extra)
{
	struct vmmu_cpu_state s;

	guest_pt_state(e->pt, &s, cpl);
	s.cr4 |= cr4_extra;
	ASSERT_OK(vmmu_vcpu_set_state(e->vcpu, &s));
}

static void penv_destroy(struct penv *e)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(e->vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
	ASSERT_AUDIT(e->vm);
	guest_pt_destroy(e->pt);
	vmmu_vm_destroy(e->vm);
}

static int gacc(struct penv *e, uint64_t gva, uint64_t *v, unsigned int type, struct vmmu_exit *x)
{
	return vmmu_vcpu_access(e->vcpu, gva, v, 8, type, x);
}

static uint64_t gread(struct penv *e, uint64_t gva)
{
	struct vmmu_exit x;
	uint64_t v = 0;
	int r = gacc(e, gva, &v, VMMU_ACCESS_READ, &x);

	if (r)
		test_fail(__FILE__, __LINE__, "read of gva %#llx: %d (exit %u)", (unsigned long long)gva, r,
			  r == VMMU_EXIT ? x.reason : 0);
	return v;
}

static void gwrite(struct penv *e, uint64_t gva, uint64_t v)
{
	struct vmmu_exit x;
	int r = gacc(e, gva, &v, VMMU_ACCESS_WRITE, &x);

	if (r)
		test_fail(__FILE__, __LINE__, "write of gva %#llx: %d (exit %u)", (unsigned long long)gva, r,
			  r == VMMU_EXIT ? x.reason : 0);
}

static uint64_t pread(struct penv *e, uint64_t gpa)
{
	struct vmmu_exit x;
	uint64_t v = 0;

	ASSERT_OK(vmmu_vcpu_access(e->vcpu, gpa, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x));
	return v;
}

/* A gva in the upper half where the mode has one, to exercise sign extension. */
static uint64_t test_gva(enum guest_mode mode)
{
	switch (mode) {
	case GUEST_MODE_4LEVEL:
		return 0xffff800000000000ULL + 0x40000000ULL;
	case GUEST_MODE_5LEVEL:
		return 0xff00000000000000ULL + 0x40000000ULL;
	default:
		return 0x40000000ULL;
	}
}

TEST(two_dimensional_translation_every_mode)
{
	for_each_mmu_variant(var) {
		for (enum guest_mode mode = GUEST_MODE_32; mode <= GUEST_MODE_5LEVEL; mode++) {
			struct penv e;
			uint64_t gva = test_gva(mode), huge = mode == GUEST_MODE_32 ? 4 * MB : 2 * MB;
			uint64_t pte, pte_gpa;
			int level;

			if (!mode_fits(var, mode))
				continue;
			penv_create(&e, var, mode);
			ASSERT_OK(guest_map(e.pt, gva, 1 * MB, 64 * 1024, 4096, GUEST_W));
			ASSERT_OK(guest_map(e.pt, gva + 64 * MB, 8 * MB, huge, huge, GUEST_W));
			penv_enable(&e, 0, 0);

			/* Writes through the gva land at the gpa, and back. */
			gwrite(&e, gva + 0x1238, 0xfeedULL << 8 | (uint64_t)mode);
			ASSERT_EQ_U64(pread(&e, 1 * MB + 0x1238), 0xfeedULL << 8 | (uint64_t)mode);
			gwrite(&e, gva + 64 * MB + huge - 8, 77);
			ASSERT_EQ_U64(pread(&e, 8 * MB + huge - 8), 77);
			ASSERT_EQ_U64(gread(&e, gva + 0x1238), 0xfeedULL << 8 | (uint64_t)mode);

			/* The guest's A and D bits were set in its own PTE... */
			ASSERT_OK(guest_get_entry(e.pt, gva + 0x1238, 1, &pte, &pte_gpa));
			ASSERT_TRUE(pte & GUEST_A);
			ASSERT_TRUE(pte & GUEST_D);
			/* ...through the TDP: the page-table page is mapped, and the
			 * A/D update dirtied it like any guest write.  (Shadow paging
			 * has no TDP: its walk writes guest memory directly.) */
			if (var->mmu == VMMU_MMU_SHADOW) {
				penv_destroy(&e);
				continue;
			}
			vmmu_rcu_thread_online();
			vmmu_rcu_read_lock();
			{
				uint64_t spte = tdp_mmu_get_spte(e.vm, e.vm->root, pte_gpa >> 12, &level);

				ASSERT_TRUE(is_mmu_present_spte(spte));
				if (e.vm->fmt.ad_enabled)
					ASSERT_TRUE(spte & e.vm->fmt.dirty);
			}
			vmmu_rcu_read_unlock();
			penv_destroy(&e);
		}
	}
}

TEST(guest_faults_reach_the_embedder)
{
	for_each_mmu_variant(var) {
		for (enum guest_mode mode = GUEST_MODE_32; mode <= GUEST_MODE_5LEVEL; mode++) {
			struct penv e;
			struct vmmu_exit x;
			uint64_t gva = test_gva(mode), v = 1;

			if (!mode_fits(var, mode))
				continue;
			penv_create(&e, var, mode);
			ASSERT_OK(guest_map(e.pt, gva, 1 * MB, 4096, 4096, GUEST_U));	/* read-only user page */
			penv_enable(&e, 3, 0);

			/* Not present: P=0, with W and U for a CPL3 write. */
			ASSERT_EQ(gacc(&e, gva + 8192, &v, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
			ASSERT_EQ(x.u.guest_fault.vector, 14);
			ASSERT_EQ(x.u.guest_fault.error_code, PFERR_W | PFERR_U);
			ASSERT_EQ_U64(x.u.guest_fault.addr, gva + 8192);
			/* Read-only: a CPL3 write is a protection fault. */
			ASSERT_EQ(gacc(&e, gva + 16, &v, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
			ASSERT_EQ(x.u.guest_fault.error_code, PFERR_P | PFERR_W | PFERR_U);
			ASSERT_EQ(gread(&e, gva + 16), 0);
			/* A faulting access leaves no A/D behind and moves no byte. */
			{
				uint64_t pte;

				ASSERT_OK(guest_get_entry(e.pt, gva, 1, &pte, NULL));
				ASSERT_FALSE(pte & GUEST_D);
			}
			if (mode >= GUEST_MODE_4LEVEL) {
				/* Non-canonical: #GP, not #PF. */
				ASSERT_EQ(gacc(&e, 0x0000800000000000ULL << (mode == GUEST_MODE_5LEVEL ? 9 : 0), &v,
					       VMMU_ACCESS_READ, &x),
					  VMMU_EXIT);
				ASSERT_EQ(x.u.guest_fault.vector, 13);
			} else {
				ASSERT_ERR(gacc(&e, 1ULL << 32, &v, VMMU_ACCESS_READ, &x), VMMU_ERANGE);
			}
			penv_destroy(&e);
		}
	}
}

/*
 * A translation the architecture lets the TLB keep after its PTE changed.
 * TDP keeps it here (nothing else flushes); shadow paging traps the PTE
 * store and flushes every TLB as it zaps the SPTE (as KVM does), so the new
 * one is as right.
 */
static void assert_stale_or_new(const struct mmu_variant *var, uint64_t got, uint64_t stale, uint64_t fresh)
{
	if (var->mmu == VMMU_MMU_SHADOW && got == fresh)
		return;
	ASSERT_EQ_U64(got, stale);
}

TEST(tlb_follows_the_architecture)
{
	for_each_mmu_variant(var) {
		struct penv e;
		uint64_t gva = test_gva(GUEST_MODE_4LEVEL), a = 1 * MB, b = 2 * MB;
		struct vmmu_cpu_state s;

		penv_create(&e, var, GUEST_MODE_4LEVEL);
		ASSERT_OK(guest_map(e.pt, gva, a, 4096, 4096, GUEST_W));
		ASSERT_OK(guest_map(e.pt, gva + 4096, a + 4096, 4096, 4096, GUEST_W | GUEST_G));
		penv_enable(&e, 0, VMMU_CR4_PGE);
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, a, &(uint64_t){ 0xa }, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS,
					   &(struct vmmu_exit){ 0 }));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, b, &(uint64_t){ 0xb }, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS,
					   &(struct vmmu_exit){ 0 }));
		ASSERT_EQ(gread(&e, gva), 0xa);

		/* The PTE changes behind the TLB's back: the old translation may
		 * (and here does) stay in use until INVLPG. */
		ASSERT_OK(guest_map(e.pt, gva, b, 4096, 4096, GUEST_W));
		assert_stale_or_new(var, gread(&e, gva), 0xa, 0xb);
		vmmu_vcpu_invlpg(e.vcpu, gva);
		ASSERT_EQ(gread(&e, gva), 0xb);

		/* MOV to CR3 drops non-global entries... */
		ASSERT_OK(guest_map(e.pt, gva, a, 4096, 4096, GUEST_W));
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt)));
		ASSERT_EQ(gread(&e, gva), 0xa);
		/* ...but not global ones (CR4.PGE). */
		ASSERT_EQ(gread(&e, gva + 4096), 0);
		ASSERT_OK(guest_map(e.pt, gva + 4096, b, 4096, 4096, GUEST_W | GUEST_G));
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt)));
		assert_stale_or_new(var, gread(&e, gva + 4096), 0, 0xb);
		vmmu_vcpu_invlpg(e.vcpu, gva + 4096);
		ASSERT_EQ(gread(&e, gva + 4096), 0xb);

		/* PCIDs: bit 63 keeps the new PCID's entries. */
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &s));
		s.cr4 |= VMMU_CR4_PCIDE;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 1));
		ASSERT_EQ(gread(&e, gva), 0xa);
		ASSERT_OK(guest_map(e.pt, gva, b, 4096, 4096, GUEST_W));
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 2 | VMMU_CR3_PCID_NOFLUSH));
		ASSERT_EQ(gread(&e, gva), 0xb);	/* PCID 2 had nothing cached */
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 1 | VMMU_CR3_PCID_NOFLUSH));
		assert_stale_or_new(var, gread(&e, gva), 0xa, 0xb);	/* PCID 1's stale entry survived */
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 1));
		ASSERT_EQ(gread(&e, gva), 0xb);	/* flushed this time */
		penv_destroy(&e);
	}
}

/* INVPCID: one address of one PCID, one PCID, everything (SDM Vol. 2A). */
TEST(invpcid_follows_the_architecture)
{
	for_each_mmu_variant(var) {
		struct penv e;
		uint64_t gva = test_gva(GUEST_MODE_4LEVEL), a = 1 * MB, b = 2 * MB, c = 3 * MB;
		struct vmmu_cpu_state s;

		penv_create(&e, var, GUEST_MODE_4LEVEL);
		ASSERT_OK(guest_map(e.pt, gva, a, 4096, 4096, GUEST_W));
		ASSERT_OK(guest_map(e.pt, gva + 4096, a + 4096, 4096, 4096, GUEST_W | GUEST_G));
		penv_enable(&e, 0, VMMU_CR4_PGE);
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &s));
		s.cr4 |= VMMU_CR4_PCIDE;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, a, &(uint64_t){ 0xa }, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS,
					   &(struct vmmu_exit){ 0 }));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, b, &(uint64_t){ 0xb }, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS,
					   &(struct vmmu_exit){ 0 }));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, c, &(uint64_t){ 0xc }, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS,
					   &(struct vmmu_exit){ 0 }));

		/* Bad operands are #GP: nothing happens. */
		ASSERT_ERR(vmmu_vcpu_invpcid(e.vcpu, 4, 0, 0), VMMU_EINVAL);
		ASSERT_ERR(vmmu_vcpu_invpcid(e.vcpu, VMMU_INVPCID_SINGLE, 4096, 0), VMMU_EINVAL);
		ASSERT_ERR(vmmu_vcpu_invpcid(e.vcpu, VMMU_INVPCID_ADDR, 1, 0x0000800000000000ULL), VMMU_EINVAL);
		ASSERT_ERR(vmmu_vcpu_invpcid(NULL, VMMU_INVPCID_ALL, 0, 0), VMMU_EINVAL);

		/* PCIDs 1 and 2 both cache gva -> a. */
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 1));
		ASSERT_EQ(gread(&e, gva), 0xa);
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 2 | VMMU_CR3_PCID_NOFLUSH));
		ASSERT_EQ(gread(&e, gva), 0xa);
		ASSERT_OK(guest_map(e.pt, gva, b, 4096, 4096, GUEST_W));

		/* Type 0 for PCID 1 (not the current one): PCID 2 may keep its
		 * entry, PCID 1 must walk again. */
		ASSERT_OK(vmmu_vcpu_invpcid(e.vcpu, VMMU_INVPCID_ADDR, 1, gva));
		assert_stale_or_new(var, gread(&e, gva), 0xa, 0xb);
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 1 | VMMU_CR3_PCID_NOFLUSH));
		ASSERT_EQ(gread(&e, gva), 0xb);

		/* Type 1 for PCID 2. */
		ASSERT_OK(vmmu_vcpu_invpcid(e.vcpu, VMMU_INVPCID_SINGLE, 2, 0));
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt) | 2 | VMMU_CR3_PCID_NOFLUSH));
		ASSERT_EQ(gread(&e, gva), 0xb);

		/* Globals: type 3 may keep them, type 2 drops them. */
		ASSERT_EQ(gread(&e, gva + 4096), 0);
		ASSERT_OK(guest_map(e.pt, gva + 4096, c, 4096, 4096, GUEST_W | GUEST_G));
		ASSERT_OK(vmmu_vcpu_invpcid(e.vcpu, VMMU_INVPCID_ALL, 0, 0));
		{
			uint64_t got = gread(&e, gva + 4096);

			ASSERT_TRUE(got == 0 || got == 0xc);
		}
		ASSERT_OK(vmmu_vcpu_invpcid(e.vcpu, VMMU_INVPCID_ALL_GLOBAL, 0, 0));
		ASSERT_EQ(gread(&e, gva + 4096), 0xc);
		penv_destroy(&e);
	}
}

/*
 * One frame, two address spaces, two protection keys: under shadow paging the
 * huge page becomes direct shadow pages, which the two mappings must not
 * share (their SPTEs carry the key), or one space's key would leak into the
 * other's.  Every variant must give each space its own key.
 */
TEST(protection_keys_per_address_space)
{
	for_each_mmu_variant(var) {
		struct penv e;
		struct guest_pt *pt2;
		struct vmmu_cpu_state s;
		struct vmmu_exit x;
		uint64_t gva = test_gva(GUEST_MODE_4LEVEL), val = 0;

		penv_create(&e, var, GUEST_MODE_4LEVEL);
		ASSERT_OK(guest_pt_create(e.vm, GUEST_MODE_4LEVEL, POOL_GPA - 8 * MB, 4 * MB, &pt2));
		if (var->mmu == VMMU_MMU_SHADOW)
			guest_pt_set_vcpu(pt2, e.vcpu);
		ASSERT_OK(guest_map(e.pt, gva, 4 * MB, 2 * MB, 2 * MB, GUEST_W | GUEST_U | GUEST_PKEY(1)));
		ASSERT_OK(guest_map(pt2, gva, 4 * MB, 2 * MB, 2 * MB, GUEST_W | GUEST_U | GUEST_PKEY(2)));
		penv_enable(&e, 3, VMMU_CR4_PKE);

		/* Space 1 uses two 4K parts of the frame (key 1)... */
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, gva, &val, 8, VMMU_ACCESS_READ, &x));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, gva + 0x1000, &val, 8, VMMU_ACCESS_READ, &x));
		/* ...space 2 the first one (key 2, allowed for now)... */
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(pt2)));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, gva, &val, 8, VMMU_ACCESS_READ, &x));
		/* ...then key 2 is denied: the second part, never touched in space 2,
		 * must fault with PK, whatever space 1 left in the shadow. */
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &s));
		s.pkru = 1u << (2 * 2);	/* key 2: access disabled */
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_EQ(vmmu_vcpu_access(e.vcpu, gva + 0x1000, &val, 8, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_EQ(x.u.guest_fault.vector, 14);
		ASSERT_TRUE(x.u.guest_fault.error_code & (1u << 5));	/* PK */
		/* And back: key 1 is still allowed in the first space. */
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt)));
		ASSERT_OK(vmmu_vcpu_access(e.vcpu, gva + 0x1000, &val, 8, VMMU_ACCESS_READ, &x));
		guest_pt_destroy(pt2);
		penv_destroy(&e);
	}
}

/* tdp_levels and its MAXPHYADDR bound are TDP's: shadow paging takes a
 * 5-level guest and MAXPHYADDR 52 with the default 4. */
TEST(shadow_ignores_tdp_levels)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = 64 * MB };
	struct vmmu_cpu_state st;
	struct guest_pt *pt;
	struct vmmu_exit x;
	vmmu_vm *vm;
	vmmu_vcpu *v;
	uint64_t val = 0x5a5a, gva = 0xff00000000000000ULL + 0x40000000ULL;

	vmmu_vm_config_init(&cfg);
	cfg.maxphyaddr = 52;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);	/* TDP: 4 levels map 48 bits */
	cfg.mmu = VMMU_MMU_SHADOW;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	ASSERT_OK(vmmu_set_memslot(vm, &slot));
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	ASSERT_OK(guest_pt_create(vm, GUEST_MODE_5LEVEL, POOL_GPA, POOL_SIZE, &pt));
	guest_pt_set_vcpu(pt, v);
	ASSERT_OK(guest_map(pt, gva, 1 * MB, 4096, 4096, GUEST_W));
	guest_pt_state(pt, &st, 0);
	ASSERT_OK(vmmu_vcpu_set_state(v, &st));
	ASSERT_OK(vmmu_vcpu_access(v, gva + 8, &val, 8, VMMU_ACCESS_WRITE, &x));
	val = 0;
	ASSERT_OK(vmmu_vcpu_access(v, 1 * MB + 8, &val, 8, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x));
	ASSERT_EQ_U64(val, 0x5a5a);
	ASSERT_AUDIT(vm);
	guest_pt_destroy(pt);
	vmmu_vm_destroy(vm);
}

TEST(invlpg_drops_whole_huge_pages)
{
	struct penv e;
	uint64_t gva = test_gva(GUEST_MODE_4LEVEL);

	penv_create(&e, &mmu_variants[0], GUEST_MODE_4LEVEL);
	ASSERT_OK(guest_map(e.pt, gva, 2 * MB, 2 * MB, 2 * MB, GUEST_W));
	penv_enable(&e, 0, 0);
	gwrite(&e, gva + 8, 1);
	gwrite(&e, gva + 300 * 4096, 2);
	ASSERT_OK(guest_map(e.pt, gva, 4 * MB, 2 * MB, 2 * MB, GUEST_W));
	ASSERT_EQ(gread(&e, gva + 300 * 4096), 2);	/* cached fragment */
	/* INVLPG of one address of the 2M page drops every fragment of it. */
	vmmu_vcpu_invlpg(e.vcpu, gva + 4096 * 7);
	ASSERT_EQ(gread(&e, gva + 300 * 4096), 0);
	ASSERT_EQ(gread(&e, gva + 8), 0);
	penv_destroy(&e);
}

TEST(access_rights_follow_state_without_flush)
{
	struct penv e;
	struct vmmu_exit x;
	struct vmmu_cpu_state s;
	uint64_t gva = test_gva(GUEST_MODE_4LEVEL), v = 5;

	penv_create(&e, &mmu_variants[0], GUEST_MODE_4LEVEL);
	ASSERT_OK(guest_map(e.pt, gva, 1 * MB, 4096, 4096, GUEST_U));
	penv_enable(&e, 0, 0);
	ASSERT_EQ(gread(&e, gva), 0);
	/* CR0.WP=1: a supervisor write to a read-only page faults even though
	 * the read left a TLB entry; the check uses the current state. */
	ASSERT_EQ(gacc(&e, gva, &v, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
	ASSERT_EQ(x.u.guest_fault.error_code, PFERR_P | PFERR_W);
	ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &s));
	s.cr0 &= ~VMMU_CR0_WP;
	ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
	gwrite(&e, gva, 5);
	/* SMAP with EFLAGS.AC: explicit supervisor accesses allowed, implicit not. */
	s.cr4 |= VMMU_CR4_SMAP;
	s.rflags = VMMU_RFLAGS_AC;
	ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
	ASSERT_EQ(gread(&e, gva), 5);
	ASSERT_EQ(vmmu_vcpu_access(e.vcpu, gva, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_IMPLICIT, &x), VMMU_EXIT);
	ASSERT_EQ(x.u.guest_fault.error_code, PFERR_P);
	s.rflags = 0;
	ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
	ASSERT_EQ(gacc(&e, gva, &v, VMMU_ACCESS_READ, &x), VMMU_EXIT);
	penv_destroy(&e);
}

TEST(page_tables_written_by_the_vcpu)
{
	for_each_mmu_variant(var) {
		struct penv e;
		uint64_t gva = test_gva(GUEST_MODE_4LEVEL);

		penv_create(&e, var, GUEST_MODE_4LEVEL);
		/* The guest writes its own tables, as a guest kernel does. */
		guest_pt_set_vcpu(e.pt, e.vcpu);
		ASSERT_OK(guest_map(e.pt, gva, 3 * MB, 16 * 4096, 4096, GUEST_W));
		penv_enable(&e, 0, 0);
		for (uint64_t i = 0; i < 16; i++)
			gwrite(&e, gva + i * 4096, i * 3);
		for (uint64_t i = 0; i < 16; i++)
			ASSERT_EQ_U64(pread(&e, 3 * MB + i * 4096), i * 3);
		penv_destroy(&e);
	}
}

TEST(state_validation_changes_nothing)
{
	struct penv e;
	struct vmmu_cpu_state good, s, now;

	penv_create(&e, &mmu_variants[2], GUEST_MODE_4LEVEL);	/* ept5: LA57 allowed */
	guest_pt_state(e.pt, &good, 0);
	ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &good));
	ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &good));	/* with LMA derived */

#define EXPECT_REJECTED(mutation)                                                   \
	do {                                                                        \
		s = good;                                                           \
		mutation;                                                           \
		ASSERT_ERR(vmmu_vcpu_set_state(e.vcpu, &s), VMMU_EINVAL);           \
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &now));                       \
		ASSERT_EQ(memcmp(&now, &good, offsetof(struct vmmu_cpu_state, pdptrs)), 0); \
	} while (0)

	EXPECT_REJECTED(s.cr0 &= ~VMMU_CR0_PE);			/* PG without PE */
	EXPECT_REJECTED(s.cr4 &= ~VMMU_CR4_PAE);			/* long mode without PAE */
	EXPECT_REJECTED(s.cr4 |= VMMU_CR4_LA57);			/* LA57 changes inside long mode */
	EXPECT_REJECTED(s.efer &= ~VMMU_EFER_LME);			/* LME changes with PG on */
	EXPECT_REJECTED(s.cr0 |= 1ULL << 40);				/* reserved CR0 bit */
	EXPECT_REJECTED(s.cr4 |= 1ULL << 30);				/* reserved CR4 bit */
	EXPECT_REJECTED(s.efer |= 1ULL << 30);				/* reserved EFER bit */
	EXPECT_REJECTED(s.cr3 |= 1ULL << 53);				/* CR3 above MAXPHYADDR */
	EXPECT_REJECTED(s.cpl = 4);
	EXPECT_REJECTED(s.cr4 |= VMMU_CR4_PCIDE; s.cr3 |= 5);		/* PCIDE on with PCID != 0 */
	ASSERT_ERR(vmmu_vcpu_set_state(NULL, &good), VMMU_EINVAL);
	ASSERT_ERR(vmmu_vcpu_write_cr3(e.vcpu, 1ULL << 60), VMMU_EINVAL);
	penv_destroy(&e);

	/* PCIDE outside long mode; PAE PDPTE reserved bits. */
	penv_create(&e, &mmu_variants[0], GUEST_MODE_PAE);
	ASSERT_OK(guest_map(e.pt, 0x1000, 1 * MB, 4096, 4096, GUEST_W));
	guest_pt_state(e.pt, &good, 0);
	ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &good));
	ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &good));
	ASSERT_TRUE(good.pdptrs[0] & 1);	/* the PDPTE registers were loaded */
	EXPECT_REJECTED(s.cr4 |= VMMU_CR4_PCIDE);
	{
		uint64_t pdpte;

		ASSERT_OK(guest_get_entry(e.pt, 0x1000, 3, &pdpte, NULL));
		ASSERT_OK(guest_set_entry(e.pt, 0x1000, 3, pdpte | (1ULL << 5)));	/* reserved in a PDPTE */
		ASSERT_ERR(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt)), VMMU_EINVAL);
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &now));
		ASSERT_EQ_U64(now.pdptrs[0], pdpte);
	}
	penv_destroy(&e);
#undef EXPECT_REJECTED
}

/*
 * Issue 14 item 7: the PAE PDPTE registers are loaded only when the SDM
 * says (Vol. 3A 4.4.1: MOV to CR3 in PAE mode; MOV to CR0/CR4 changing
 * CR0.CD/NW/PG or CR4.PAE/PGE/PSE/SMEP).  A guest that clears a PDPTE in
 * memory keeps translating through the register until then -- across CPL
 * and CR0.WP changes, which set_state makes -- and sees it gone after.
 */
TEST(pae_pdptes_reload_only_when_the_sdm_says)
{
	for_each_mmu_variant(var) {
		struct penv e;
		struct vmmu_cpu_state s, now;
		struct vmmu_exit x;
		uint64_t gva = test_gva(GUEST_MODE_PAE), pdpte, v = 0;

		penv_create(&e, var, GUEST_MODE_PAE);
		ASSERT_OK(guest_map(e.pt, gva, 1 * MB, 4096, 4096, GUEST_W | GUEST_U));
		penv_enable(&e, 0, 0);
		gwrite(&e, gva, 0x1234);
		ASSERT_OK(guest_get_entry(e.pt, gva, 3, &pdpte, NULL));
		ASSERT_TRUE(pdpte & 1);
		ASSERT_OK(guest_set_entry(e.pt, gva, 3, 0));	/* not present in memory */
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &s));

		/* A ring transition, CR0.WP both ways, EFLAGS.AC, CR4.SMAP: none
		 * reloads; each flushes or not, the walk still uses the register. */
		s.cpl = 3;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_EQ_U64(gread(&e, gva), 0x1234);
		s.cpl = 0;
		s.cr0 &= ~VMMU_CR0_WP;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_EQ_U64(gread(&e, gva), 0x1234);
		s.cr0 |= VMMU_CR0_WP;
		s.cr4 |= VMMU_CR4_SMAP;
		s.rflags = VMMU_RFLAGS_AC;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_EQ_U64(gread(&e, gva), 0x1234);
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &now));
		ASSERT_EQ_U64(now.pdptrs[(gva >> 30) & 3], pdpte);

		/* CR4.PGE changes: reloaded, and the entry is gone. */
		s.cr4 ^= VMMU_CR4_PGE;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &now));
		ASSERT_EQ_U64(now.pdptrs[(gva >> 30) & 3], 0);
		ASSERT_EQ(gacc(&e, gva, &v, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_EQ(x.u.guest_fault.vector, 14);
		ASSERT_EQ(x.u.guest_fault.error_code & PFERR_P, 0);

		/* Back in memory: seen only after a MOV to CR3 (same value). */
		ASSERT_OK(guest_set_entry(e.pt, gva, 3, pdpte));
		s.cpl = 3;
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_EQ(gacc(&e, gva, &v, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt)));
		ASSERT_EQ_U64(gread(&e, gva), 0x1234);
		/* CR0.CD is one of the bits too. */
		ASSERT_OK(guest_set_entry(e.pt, gva, 3, 0));
		ASSERT_OK(vmmu_vcpu_get_state(e.vcpu, &s));
		s.cr0 |= 1ULL << 30;	/* CD */
		ASSERT_OK(vmmu_vcpu_set_state(e.vcpu, &s));
		ASSERT_EQ(gacc(&e, gva, &v, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_OK(guest_set_entry(e.pt, gva, 3, pdpte));
		ASSERT_OK(vmmu_vcpu_write_cr3(e.vcpu, guest_pt_cr3(e.pt)));
		ASSERT_EQ_U64(gread(&e, gva), 0x1234);
		penv_destroy(&e);
	}
}

int main(int argc, char **argv)
{
	(void)mode_names;
	return test_main(argc, argv);
}
