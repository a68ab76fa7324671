/* SPDX-License-Identifier: MIT */
/*
 * Write tracking of guest page tables, emulated page-table stores and the
 * A/D bits the guest sees through them:
 *  - pt_write_tracking (shadow): guest stores to shadowed tables are seen;
 *    write flooding zaps a former table.
 *  - store_after_role_change, accessed_dirty_after_clear,
 *    dirty_bit_shared_huge_frame: every MMU variant must see a guest's
 *    page-table stores and set A/D as the architecture says (each test
 *    says how shadow paging could miss it).
 */
#include "shadow_test.h"

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
