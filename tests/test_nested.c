/* SPDX-License-Identifier: MIT */
/*
 * Nested virtualization (seed 003), through the public API, on every TDP
 * variant (EPT VMs run L2 under an EPT L1 builds, NPT VMs under an NPT):
 *  - data_path: L2 reads and writes land in the L1 frames L1's tables name,
 *    with L2 paging off and on (L2's own 4-level tables in L2 memory, their
 *    A/D bits set through L1's tables);
 *  - root_reuse: an L2 -> L1 -> L2 round trip keeps guest_mmu's root and
 *    L2's TLB; the one-MMU ablation keeps neither, and both stay correct;
 *  - nested_exits: what L1's tables refuse is a VMMU_EXIT_NESTED with the
 *    SDM's / APM's qualification bits, for data and page-table accesses;
 *  - invept: L1 remaps a page of L2 and invalidates (INVEPT, or NPT's
 *    VMRUN TLB control); L2 sees the new frame, and a cached EPTP comes
 *    back through the previous-root cache;
 *  - pt_access_writes: with EPTP A/D on, L2's reads of its own paging
 *    entries are writes to L1's EPT (SDM 3C 29.3.5): they need W and set D;
 *  - mmio_rights: L2's accesses to a page L1 maps to its MMIO are checked
 *    against L1's rights however often the MMU has seen the page;
 *  - npt_fresh_asid: a VMRUN under an ASID whose TLB holds nothing of an
 *    NPT entry L1 changed sees the entry as it is now;
 *  - dirty_log: L2 writes are logged against the L1 gfns they hit;
 *  - host_invalidation: an MMU-notifier invalidation or host protection of
 *    memory L2 uses reaches guest_mmu's leaves;
 *  - bad_input: what a VM entry refuses changes nothing.
 */
#include "nested_test.h"

#define TOKEN(gpa) (((gpa) * 0x9e3779b97f4a7c15ULL) ^ 0x5a5a5a5a5a5a5a5aULL)

static void vstats(vmmu_vcpu *v, struct vmmu_vcpu_stats *s)
{
	memset(s, 0, sizeof(*s));
	vmmu_vcpu_get_stats(v, s);
}

static void expect_rw(struct nt *t, uint64_t l2_gpa)
{
	struct vmmu_exit x;
	uint64_t tok = TOKEN(l2_gpa), got = 0;
	int r;

	r = nt_acc(t->vcpu, l2_gpa, &tok, VMMU_ACCESS_WRITE, &x);
	if (r)
		test_fail(__FILE__, __LINE__, "[%s] L2 write of %#llx: r=%d exit %s", t->var->name,
			  (unsigned long long)l2_gpa, r, r == VMMU_EXIT ? exit_name(x.reason) : "-");
	ASSERT_EQ_U64(nt_rd64(t->vm, l2_gpa + NT_L2_BASE), tok);
	ASSERT_OK(nt_acc(t->vcpu, l2_gpa, &got, VMMU_ACCESS_READ, &x));
	ASSERT_EQ_U64(got, tok);
}

TEST(data_path)
{
	for_each_mmu_variant(var) {
		struct nt t;
		struct guest_pt *l2pt;
		struct vmmu_cpu_state s;
		uint64_t gva = 0x7f0000000000ULL, pte, pte_gpa;
		struct vmmu_exit x;
		uint64_t v;

		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		nt_enter(&t, NULL);
		ASSERT_TRUE(vmmu_vcpu_in_guest_mode(t.vcpu));
		/* Paging off: gva == L2 gpa; 4K and 2M L1 mappings. */
		for (uint64_t g = 0; g < NT_L2_SIZE; g += 3 * NT_MB + 0x1238)
			expect_rw(&t, g & ~7ULL);

		/* L2 builds its own tables in its memory, with its own stores. */
		ASSERT_OK(guest_pt_create_nested(t.vm, GUEST_MODE_4LEVEL, 1 * NT_MB, 1 * NT_MB, NT_L2_BASE, &l2pt));
		guest_pt_set_vcpu(l2pt, t.vcpu);
		ASSERT_OK(guest_map(l2pt, gva, 8 * NT_MB, 64 * 4096, GUEST_PAGE_4K, GUEST_W));
		ASSERT_OK(guest_map(l2pt, gva + 2 * NT_MB, 16 * NT_MB, 2 * NT_MB, GUEST_PAGE_2M, GUEST_W));
		guest_pt_state(l2pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(t.vcpu, &s));
		for (uint64_t i = 0; i < 64; i++) {
			v = TOKEN(i);
			ASSERT_OK(nt_acc(t.vcpu, gva + i * 4096 + 16, &v, VMMU_ACCESS_WRITE, &x));
			ASSERT_EQ_U64(nt_rd64(t.vm, NT_L2_BASE + 8 * NT_MB + i * 4096 + 16), TOKEN(i));
		}
		v = 77;
		ASSERT_OK(nt_acc(t.vcpu, gva + 2 * NT_MB + 0x10008, &v, VMMU_ACCESS_WRITE, &x));
		ASSERT_EQ_U64(nt_rd64(t.vm, NT_L2_BASE + 16 * NT_MB + 0x10008), 77);
		/* The walk set A and D in L2's PTE, which lives in L1 memory. */
		ASSERT_OK(guest_get_entry(l2pt, gva, 1, &pte, &pte_gpa));
		ASSERT_TRUE((pte & (GUEST_A | GUEST_D)) == (GUEST_A | GUEST_D));
		/* An L2 #PF is L2's: a guest fault, not a nested exit. */
		ASSERT_EQ(nt_acc(t.vcpu, gva + 100 * 4096, &v, VMMU_ACCESS_READ, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_EQ(x.u.guest_fault.vector, 14);
		guest_pt_destroy(l2pt);

		nt_leave(&t);
		ASSERT_FALSE(vmmu_vcpu_in_guest_mode(t.vcpu));
		/* L1 again: its own view of memory, gpa as given. */
		v = 0;
		ASSERT_OK(nt_acc(t.vcpu, NT_L2_BASE, &v, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x));
		ASSERT_EQ_U64(v, TOKEN(0));
		nt_teardown(&t);
	}
}

static void round_trips(struct nt *t, int n, struct vmmu_vcpu_stats *delta)
{
	struct vmmu_vcpu_stats a, b;
	struct vmmu_exit x;
	uint64_t v;

	nt_enter(t, NULL);
	for (uint64_t g = 0; g < 64; g++)
		expect_rw(t, g * 4096);
	nt_leave(t);
	ASSERT_OK(nt_acc(t->vcpu, 0, &v, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x));
	vstats(t->vcpu, &a);
	for (int i = 0; i < n; i++) {
		nt_enter(t, NULL);
		for (uint64_t g = 0; g < 64; g++)
			ASSERT_OK(nt_acc(t->vcpu, g * 4096, &v, VMMU_ACCESS_READ, &x));
		nt_leave(t);
		/* L1 handles the exit: it touches its own memory. */
		ASSERT_OK(nt_acc(t->vcpu, 0, &v, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, &x));
	}
	vstats(t->vcpu, &b);
	delta->nested_entries = b.nested_entries - a.nested_entries;
	delta->nested_root_reuses = b.nested_root_reuses - a.nested_root_reuses;
	delta->tlb_misses = b.tlb_misses - a.tlb_misses;
	delta->mmu_reloads = b.mmu_reloads - a.mmu_reloads;
}

TEST(root_reuse)
{
	for_each_mmu_variant(var) {
		struct vmmu_vcpu_stats d;
		struct nt t;

		if (!nt_variant_ok(var))
			continue;
		/* guest_mmu: every re-entry finds its root, and with a VPID
		 * L2's translations survive L1's runs. */
		nt_setup(&t, var, 0, 1);
		round_trips(&t, 10, &d);
		ASSERT_EQ(d.nested_entries, 10);
		ASSERT_EQ(d.nested_root_reuses, 10);
		ASSERT_EQ(d.tlb_misses, 0);	/* L1's TLB survives L2's runs too */
		ASSERT_EQ(d.mmu_reloads, 0);
		nt_teardown(&t);

		/* Without a VPID L2's TLB goes at every entry, the root stays. */
		nt_setup(&t, var, 0, 1);
		t.vpid = 0;
		round_trips(&t, 10, &d);
		ASSERT_EQ(d.nested_root_reuses, 10);
		ASSERT_GE(d.tlb_misses, 10 * 64);
		nt_teardown(&t);

		/* The ablation: one MMU reset at every switch. */
		nt_setup(&t, var, VMMU_VM_NESTED_ONE_MMU, 1);
		round_trips(&t, 10, &d);
		ASSERT_EQ(d.nested_root_reuses, 0);
		ASSERT_GE(d.mmu_reloads, 20);
		ASSERT_GE(d.tlb_misses, 10 * 64);
		nt_teardown(&t);
	}
}

/* L1 sets one leaf of its EPT/NPT for L2 gpa l2 (a 4K page). */
static void l1_set_leaf(struct nt *t, uint64_t l2, uint64_t l1_frame, uint64_t flags)
{
	ASSERT_OK(guest_map(t->ept, l2, l1_frame, 4096, GUEST_PAGE_4K, flags));
}

static void expect_nested(struct nt *t, uint64_t addr, unsigned int type, uint32_t kind, uint64_t qual,
			  uint64_t l2_gpa)
{
	struct vmmu_exit x;
	uint64_t v = 0;
	int r = nt_acc(t->vcpu, addr, &v, type, &x);

	if (r != VMMU_EXIT || x.reason != VMMU_EXIT_NESTED)
		test_fail(__FILE__, __LINE__, "[%s] access %u of %#llx: r=%d exit %s, want a nested exit",
			  t->var->name, type, (unsigned long long)addr, r, r == VMMU_EXIT ? exit_name(x.reason) : "-");
	ASSERT_EQ(x.u.nested.kind, kind);
	ASSERT_EQ_U64(x.u.nested.qualification, qual);
	ASSERT_EQ_U64(x.u.nested.gpa, l2_gpa);
}

TEST(nested_exits)
{
	for_each_mmu_variant(var) {
		uint64_t hole = NT_L2_SIZE + 0x3000, ro = 0x5000, xo = 0x6000;
		uint32_t k;
		struct nt t;

		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		k = t.npt ? VMMU_NESTED_NPF : VMMU_NESTED_EPT_VIOLATION;
		/* L1 makes one page read-only, and (EPT) one execute-only. */
		l1_set_leaf(&t, ro, NT_L2_BASE + ro, nt_flags(&t, true, false, true));
		if (!t.npt) {
			struct vmmu_nested_state ns;

			l1_set_leaf(&t, xo, NT_L2_BASE + xo, GUEST_EPT_X | GUEST_EPT_MT_WB);
			/* Not offered execute-only: R=0, X=1 is a misconfiguration. */
			nt_enter(&t, NULL);
			expect_nested(&t, xo, VMMU_ACCESS_READ, VMMU_NESTED_EPT_MISCONFIG, 0, xo);
			nt_leave(&t);
			nt_state(&t, &ns, NULL);
			ns.flags = VMMU_NESTED_EXEC_ONLY;
			ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns));
			/* Offered: a read is a violation with X in the rights, a
			 * fetch goes through. */
			expect_nested(&t, xo, VMMU_ACCESS_READ, k, 0x1 | 0x20 | 0x180, xo);
			{
				struct vmmu_exit x;
				uint64_t v;

				ASSERT_OK(nt_acc(t.vcpu, xo, &v, VMMU_ACCESS_FETCH, &x));
			}
			nt_leave(&t);
		}
		nt_enter(&t, NULL);
		if (t.npt) {
			/* #NPF: not present (P=0), U=1, final translation (bit 32). */
			expect_nested(&t, hole, VMMU_ACCESS_READ, k, 0x4 | (1ULL << 32), hole);
			/* A write to a read-only page: P, W, U. */
			expect_nested(&t, ro, VMMU_ACCESS_WRITE, k, 0x7 | (1ULL << 32), ro);
		} else {
			/* Read of nothing: access bit 0, no rights, gla valid+final. */
			expect_nested(&t, hole, VMMU_ACCESS_READ, k, 0x1 | 0x180, hole);
			/* Write to R+X: bit 1, R and X (bits 3 and 5). */
			expect_nested(&t, ro, VMMU_ACCESS_WRITE, k, 0x2 | 0x8 | 0x20 | 0x180, ro);
			/* A physical access has no linear address. */
			expect_nested(&t, hole, VMMU_ACCESS_READ | VMMU_ACCESS_PHYS, k, 0x1, hole);
		}
		/* L2's page table in a hole of L1's tables: a page-walk access. */
		{
			struct vmmu_cpu_state s;

			memset(&s, 0, sizeof(s));
			s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
			s.cr4 = VMMU_CR4_PAE;
			s.efer = VMMU_EFER_LME;
			s.cr3 = hole & ~0xfffULL;
			ASSERT_OK(vmmu_vcpu_set_state(t.vcpu, &s));
			if (t.npt)
				expect_nested(&t, 0x1000, VMMU_ACCESS_READ, k, 0x4 | (1ULL << 33), hole & ~0xfffULL);
			else	/* EPTP A/D on: the walk's read is a write (SDM 3C 29.3.5) */
				expect_nested(&t, 0x1000, VMMU_ACCESS_READ, k, 0x2 | 0x80, hole & ~0xfffULL);
		}
		nt_leave(&t);
		nt_teardown(&t);
	}
}

TEST(invept)
{
	for_each_mmu_variant(var) {
		uint64_t l2 = 0x9000, other = NT_L2_BASE + NT_L2_SIZE + 0x9000;
		struct vmmu_nested_state ns;
		struct vmmu_exit x;
		struct nt t;
		uint64_t v;

		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		nt_wr64(t.vm, other, 0xfeedULL);
		nt_enter(&t, NULL);
		expect_rw(&t, l2);
		nt_leave(&t);
		/* L1 points L2's page elsewhere, then invalidates. */
		l1_set_leaf(&t, l2, other & ~0xfffULL, nt_flags(&t, true, true, true));
		nt_state(&t, &ns, NULL);
		if (t.npt)
			ns.tlb_control = VMMU_TLB_CONTROL_FLUSH_GUEST;
		else
			ASSERT_OK(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_SINGLE, ns.eptp));
		ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns));
		v = 0;
		ASSERT_OK(nt_acc(t.vcpu, l2, &v, VMMU_ACCESS_READ, &x));
		ASSERT_EQ_U64(v, 0xfeedULL);
		nt_leave(&t);
		if (!t.npt) {
			ASSERT_OK(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_ALL, 0));
			nt_enter(&t, NULL);
			ASSERT_OK(nt_acc(t.vcpu, l2, &v, VMMU_ACCESS_READ, &x));
			ASSERT_EQ_U64(v, 0xfeedULL);
			nt_leave(&t);
		}
		nt_teardown(&t);
	}
}

TEST(eptp_switch)
{
	for_each_mmu_variant(var) {
		struct vmmu_vcpu_stats a, b;
		struct guest_pt *second;
		struct vmmu_nested_state ns1, ns2;
		struct vmmu_exit x;
		struct nt t;
		uint64_t v;

		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		/* A second EPT/NPT: the same L2 memory, shifted by one page. */
		ASSERT_OK(guest_pt_create(t.vm, guest_pt_mode(t.ept), NT_EPT_POOL + NT_EPT_SIZE / 2, NT_EPT_SIZE / 2,
					  &second));
		guest_pt_set_vcpu(second, t.vcpu);
		ASSERT_OK(guest_map(second, 0, NT_L2_BASE + 4096, NT_L2_SMALL - 4096, GUEST_PAGE_4K,
				    nt_flags(&t, true, true, true)));
		nt_state(&t, &ns1, NULL);
		ns2 = ns1;
		if (t.npt)
			ns2.ncr3 = guest_pt_cr3(second);
		else
			ns2.eptp = guest_pt_eptp(second, t.ad);
		nt_wr64(t.vm, NT_L2_BASE + 4096, 0x1111);
		ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns1));
		ASSERT_OK(nt_acc(t.vcpu, 4096, &v, VMMU_ACCESS_READ, &x));
		ASSERT_EQ_U64(v, 0x1111);
		nt_leave(&t);
		ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns2));
		ASSERT_OK(nt_acc(t.vcpu, 0, &v, VMMU_ACCESS_READ, &x));
		ASSERT_EQ_U64(v, 0x1111);
		nt_leave(&t);
		/* Back to the first: a previous root, swapped in. */
		vstats(t.vcpu, &a);
		ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns1));
		ASSERT_OK(nt_acc(t.vcpu, 4096, &v, VMMU_ACCESS_READ, &x));
		ASSERT_EQ_U64(v, 0x1111);
		nt_leave(&t);
		vstats(t.vcpu, &b);
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches, 1);
		guest_pt_destroy(second);
		nt_teardown(&t);
	}
}

/*
 * SDM 3C 29.3.5 (and 29.3.3.2): with EPTP bit 6 set, every processor access
 * to a guest paging-structure entry is a write as far as EPT is concerned,
 * even one that only reads it: it needs W in L1's EPT (else an EPT violation
 * with the write bit) and sets the EPT D flag of the page holding the entry.
 * Without A/D, reads of L2's entries are reads.
 */
TEST(pt_access_writes)
{
	for_each_mmu_variant(var) {
		if (!nt_variant_ok(var) || var->tdp_format != VMMU_TDP_EPT)
			continue;
		for (int ad = 0; ad < 2; ad++) {
			uint64_t gva = 0x7f0000000000ULL, v = 0, pte, pte_gpa, pt, epte, epte_gpa;
			struct vmmu_nested_state ns;
			struct guest_pt *l2pt;
			struct vmmu_cpu_state s;
			struct vmmu_exit x;
			struct nt t;

			nt_setup(&t, var, 0, 1);
			t.ad = ad;
			nt_enter(&t, NULL);
			/* L2's tables, their A bits (and the leaf's D) already set,
			 * so that L2's walk needs to write nothing. */
			ASSERT_OK(guest_pt_create_nested(t.vm, GUEST_MODE_4LEVEL, 1 * NT_MB, 1 * NT_MB, NT_L2_BASE, &l2pt));
			guest_pt_set_vcpu(l2pt, t.vcpu);
			ASSERT_OK(guest_map(l2pt, gva, 8 * NT_MB, 4096, GUEST_PAGE_4K, GUEST_W | GUEST_A | GUEST_D));
			guest_pt_state(l2pt, &s, 0);
			ASSERT_OK(vmmu_vcpu_set_state(t.vcpu, &s));
			ASSERT_OK(nt_acc(t.vcpu, gva, &v, VMMU_ACCESS_READ, &x));
			ASSERT_OK(guest_get_entry(l2pt, gva, 1, &pte, &pte_gpa));
			pt = pte_gpa & ~0xfffULL;
			nt_leave(&t);

			/* L1 maps the page holding L2's PTE read+execute only. */
			l1_set_leaf(&t, pt, NT_L2_BASE + pt, GUEST_EPT_R | GUEST_EPT_X | GUEST_EPT_MT_WB);
			nt_state(&t, &ns, &s);
			ASSERT_OK(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_SINGLE, ns.eptp));
			ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns));
			if (ad)
				expect_nested(&t, gva, VMMU_ACCESS_READ, VMMU_NESTED_EPT_VIOLATION, 0x2 | 0x8 | 0x20 | 0x80,
					      pte_gpa);
			else
				ASSERT_OK(nt_acc(t.vcpu, gva, &v, VMMU_ACCESS_READ, &x));
			nt_leave(&t);

			/* Writable again, D clear: the walk that only reads sets it (A/D on). */
			l1_set_leaf(&t, pt, NT_L2_BASE + pt, GUEST_EPT_RWX | GUEST_EPT_MT_WB | GUEST_EPT_A);
			ASSERT_OK(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_SINGLE, ns.eptp));
			ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns));
			ASSERT_OK(nt_acc(t.vcpu, gva, &v, VMMU_ACCESS_READ, &x));
			nt_leave(&t);
			ASSERT_OK(guest_get_entry(t.ept, pt, 1, &epte, &epte_gpa));
			ASSERT_EQ(!!(epte & GUEST_EPT_D), ad);
			guest_pt_destroy(l2pt);
			nt_teardown(&t);
		}
	}
}

/*
 * A page L1 maps to an L1 address outside RAM is L1's MMIO: an L2 access L1's
 * entry allows is an MMIO exit at the L1 address, one it refuses an EPT
 * violation (#NPF) -- also once a first access has left the MMU a cached MMIO
 * entry for the page, which the next access hits.
 */
TEST(mmio_rights)
{
	for_each_mmu_variant(var) {
		uint64_t ro = 0xa000, nx = 0xb000, mmio = NT_RAM_SIZE + 0x100000;
		struct vmmu_exit x;
		struct nt t;
		uint64_t v = 0;
		int r;

		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		l1_set_leaf(&t, ro, mmio, nt_flags(&t, true, false, true));
		l1_set_leaf(&t, nx, mmio + 0x1000, nt_flags(&t, true, true, false));
		nt_enter(&t, NULL);
		for (int round = 0; round < 2; round++) {
			r = nt_acc(t.vcpu, ro + 8, &v, VMMU_ACCESS_READ, &x);
			ASSERT_EQ(r, VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
			ASSERT_EQ_U64(x.u.mmio.gpa, mmio + 8);
			if (t.npt)
				expect_nested(&t, ro + 8, VMMU_ACCESS_WRITE, VMMU_NESTED_NPF, 0x7 | (1ULL << 32), ro + 8);
			else
				expect_nested(&t, ro + 8, VMMU_ACCESS_WRITE, VMMU_NESTED_EPT_VIOLATION,
					      0x2 | 0x8 | 0x20 | 0x180, ro + 8);
			r = nt_acc(t.vcpu, nx + 8, &v, VMMU_ACCESS_READ, &x);
			ASSERT_EQ(r, VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
			if (t.npt)	/* P, U, I/D (L1's EFER.NXE is on) */
				expect_nested(&t, nx + 8, VMMU_ACCESS_FETCH, VMMU_NESTED_NPF, 0x15 | (1ULL << 32), nx + 8);
			else
				expect_nested(&t, nx + 8, VMMU_ACCESS_FETCH, VMMU_NESTED_EPT_VIOLATION,
					      0x4 | 0x8 | 0x10 | 0x180, nx + 8);
		}
		nt_leave(&t);
		if (!t.npt) {
			/* Execute-only offered: a fetch goes to the device, a read
			 * of the same page is L1's business, before and after. */
			struct vmmu_nested_state ns;
			uint64_t xo = 0xc000;

			l1_set_leaf(&t, xo, mmio + 0x2000, GUEST_EPT_X | GUEST_EPT_MT_WB);
			nt_state(&t, &ns, NULL);
			ns.flags = VMMU_NESTED_EXEC_ONLY;
			ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns));
			for (int round = 0; round < 2; round++) {
				r = nt_acc(t.vcpu, xo + 8, &v, VMMU_ACCESS_FETCH, &x);
				ASSERT_EQ(r, VMMU_EXIT);
				ASSERT_EQ(x.reason, VMMU_EXIT_MMIO);
				expect_nested(&t, xo + 8, VMMU_ACCESS_READ, VMMU_NESTED_EPT_VIOLATION, 0x1 | 0x20 | 0x180,
					      xo + 8);
			}
			nt_leave(&t);
		}
		nt_teardown(&t);
	}
}

/*
 * AMD tags guest translations, nested ones included, with the ASID (APM
 * 15.16): L1 must flush an ASID (TLB_CONTROL) after changing its NPT only
 * if the ASID may have cached the old entry.  An ASID that never ran with
 * it, or vmmu's ASID 0 (no ASID: the guest TLB is flushed at every entry),
 * sees the NPT as it is.
 */
TEST(npt_fresh_asid)
{
	for_each_mmu_variant(var) {
		uint64_t l2 = 0x9000, other = NT_L2_BASE + NT_L2_SIZE + 0x9000;
		struct vmmu_exit x;
		struct nt t;
		uint64_t v;

		if (!nt_variant_ok(var) || var->tdp_format != VMMU_TDP_NPT)
			continue;
		for (int asid = 0; asid < 3; asid += 2) {
			nt_setup(&t, var, 0, 1);
			nt_wr64(t.vm, other, 0xfeedULL);
			nt_enter(&t, NULL);	/* ASID 1 */
			expect_rw(&t, l2);
			nt_leave(&t);
			/* L1 points the page elsewhere (twice: the first store
			 * may be emulated, the second lands in a page gone out
			 * of sync) and runs L2 under another ASID, no flush. */
			l1_set_leaf(&t, l2, other & ~0xfffULL, nt_flags(&t, true, false, true));
			l1_set_leaf(&t, l2, other & ~0xfffULL, nt_flags(&t, true, true, true));
			t.vpid = (uint16_t)asid;
			nt_enter(&t, NULL);
			v = 0;
			ASSERT_OK(nt_acc(t.vcpu, l2, &v, VMMU_ACCESS_READ, &x));
			ASSERT_EQ_U64(v, 0xfeedULL);
			nt_leave(&t);
			nt_teardown(&t);
		}
	}
}

TEST(dirty_log)
{
	for_each_mmu_variant(var) {
		struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = NT_RAM_SIZE,
					     .flags = VMMU_MEM_LOG_DIRTY_PAGES };
		static uint64_t bitmap[NT_RAM_SIZE / 4096 / 64];
		struct nt t;

		if (!nt_variant_ok(var))
			continue;
		for (int pml = 0; pml < 2; pml++) {
			uint64_t pages[] = { 0x3000, 0x7000, NT_L2_SMALL + 0x5000, 20 * NT_MB };

			if (pml && (var->flags & VMMU_VM_AD_DISABLED))
				continue;	/* PML needs A/D (VMMU_EINVAL) */

			nt_setup(&t, var, pml ? VMMU_VM_PML : 0, 1);
			nt_enter(&t, NULL);
			for (unsigned int i = 0; i < 4; i++)
				expect_rw(&t, pages[i]);
			nt_leave(&t);
			ASSERT_OK(vmmu_set_memslot(t.vm, &slot));
			ASSERT_OK(vmmu_get_dirty_log(t.vm, 0, bitmap));
			nt_enter(&t, NULL);
			for (unsigned int i = 0; i < 4; i++)
				expect_rw(&t, pages[i]);
			nt_leave(&t);
			ASSERT_OK(vmmu_get_dirty_log(t.vm, 0, bitmap));
			for (unsigned int i = 0; i < 4; i++) {
				uint64_t gfn = (pages[i] + NT_L2_BASE) >> 12;

				if (!((bitmap[gfn / 64] >> (gfn % 64)) & 1))
					test_fail(__FILE__, __LINE__, "[%s%s] L2 write to L1 gfn %#llx not logged",
						  var->name, pml ? " pml" : "", (unsigned long long)gfn);
			}
			/* No fast page fault on guest_mmu's indirect pages. */
			{
				struct vmmu_vcpu_stats a, b;

				vstats(t.vcpu, &a);
				nt_enter(&t, NULL);
				expect_rw(&t, pages[0]);
				nt_leave(&t);
				vstats(t.vcpu, &b);
				ASSERT_EQ(b.pf_fast_fixed - a.pf_fast_fixed, 0);
			}
			nt_teardown(&t);
		}
	}
}

/*
 * The host invalidates memory L2 uses: guest_mmu's leaves for it go with the
 * TDP root's, so while the range is open an L2 access cannot complete (the
 * invalidating thread's own access exits VMMU_EXIT_RETRY at the L1 gpa), and
 * a host protection made read-only turns L2 writes into memory faults.
 */
TEST(host_invalidation)
{
	for_each_mmu_variant(var) {
		static const uint64_t l2[] = { 0x5000, NT_L2_SMALL + 0x3000 };	/* 4K and 2M L1 mappings */
		struct vmmu_exit x;
		struct nt t;
		void *hva;
		uint64_t v;

		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		ASSERT_OK(vmmu_memslot_hva(t.vm, 0, &hva));
		nt_enter(&t, NULL);
		for (unsigned int i = 0; i < 2; i++) {
			uintptr_t page = (uintptr_t)hva + NT_L2_BASE + l2[i];

			expect_rw(&t, l2[i]);
			vmmu_invalidate_range_begin(t.vm, page, page + 4096);
			ASSERT_EQ(nt_acc(t.vcpu, l2[i], &v, VMMU_ACCESS_READ, &x), VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_RETRY);
			ASSERT_EQ(x.u.retry.cause, VMMU_RETRY_SELF);
			ASSERT_EQ_U64(x.u.retry.gpa, NT_L2_BASE + l2[i]);
			vmmu_invalidate_range_end(t.vm, page, page + 4096);
			expect_rw(&t, l2[i]);

			ASSERT_OK(vmmu_set_host_protection(t.vm, page, page + 4096, VMMU_HOST_RO));
			v = 1;
			ASSERT_EQ(nt_acc(t.vcpu, l2[i], &v, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
			ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
			ASSERT_EQ_U64(x.u.memory_fault.gpa, NT_L2_BASE + l2[i]);
			ASSERT_OK(nt_acc(t.vcpu, l2[i], &v, VMMU_ACCESS_READ, &x));
			ASSERT_EQ_U64(v, TOKEN(l2[i]));
			ASSERT_OK(vmmu_set_host_protection(t.vm, page, page + 4096, VMMU_HOST_RW));
			expect_rw(&t, l2[i]);
		}
		nt_leave(&t);
		nt_teardown(&t);
	}
}

TEST(bad_input)
{
	for_each_mmu_variant(var) {
		struct vmmu_nested_state ns, bad;
		struct vmmu_cpu_state before, after;
		struct nt t;

		if (var->mmu == VMMU_MMU_SHADOW) {
			struct vmmu_vm_config cfg;
			vmmu_vm *vm;
			vmmu_vcpu *v;

			variant_config(var, &cfg);
			ASSERT_OK(vmmu_vm_create(&cfg, &vm));
			ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
			memset(&ns, 0, sizeof(ns));
			ns.eptp = VMMU_EPTP_MT_WB | VMMU_EPTP_WALK_4;
			ns.l2.cr0 = VMMU_CR0_PE;
			ASSERT_ERR(vmmu_vcpu_enter_guest_mode(v, &ns), VMMU_ENOTSUP);
			ASSERT_ERR(vmmu_vcpu_invept(v, VMMU_INVEPT_ALL, 0), VMMU_ENOTSUP);
			vmmu_vm_destroy(vm);
			continue;
		}
		{
			/* A private VM (a TD) has no VMX: refused, nothing changes. */
			struct vmmu_vm_config cfg;
			vmmu_vm *vm;
			vmmu_vcpu *v;
			bool ept = var->tdp_format == VMMU_TDP_EPT;

			variant_config(var, &cfg);
			cfg.flags = (cfg.flags & ~VMMU_VM_AD_DISABLED) | VMMU_VM_PRIVATE;
			cfg.maxphyaddr = 48;
			cfg.tdp_levels = 4;
			ASSERT_OK(vmmu_vm_create(&cfg, &vm));
			ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
			memset(&ns, 0, sizeof(ns));
			if (ept)
				ns.eptp = VMMU_EPTP_MT_WB | VMMU_EPTP_WALK_4;
			else
				ns.ncr3 = 0x1000;
			ns.l2.cr0 = VMMU_CR0_PE;
			ASSERT_ERR(vmmu_vcpu_enter_guest_mode(v, &ns), VMMU_ENOTSUP);
			ASSERT_TRUE(!vmmu_vcpu_in_guest_mode(v));
			if (ept)
				ASSERT_ERR(vmmu_vcpu_invept(v, VMMU_INVEPT_ALL, 0), VMMU_ENOTSUP);
			else
				ASSERT_ERR(vmmu_vcpu_invlpga(v, 0, 1), VMMU_ENOTSUP);
			vmmu_vm_destroy(vm);
		}
		if (!nt_variant_ok(var))
			continue;
		nt_setup(&t, var, 0, 1);
		nt_state(&t, &ns, NULL);
		ASSERT_OK(vmmu_vcpu_get_state(t.vcpu, &before));
#define REFUSED(mutate, err)                                                         \
	do {                                                                         \
		bad = ns;                                                            \
		mutate;                                                              \
		ASSERT_ERR(vmmu_vcpu_enter_guest_mode(t.vcpu, &bad), err);          \
		ASSERT_FALSE(vmmu_vcpu_in_guest_mode(t.vcpu));                      \
		ASSERT_OK(vmmu_vcpu_get_state(t.vcpu, &after));                     \
		ASSERT_EQ(memcmp(&before, &after, sizeof(before)), 0);              \
	} while (0)
		ASSERT_ERR(vmmu_vcpu_enter_guest_mode(t.vcpu, NULL), VMMU_EINVAL);
		REFUSED(bad.flags = 0x80, VMMU_EINVAL);
		REFUSED(bad.pad = 1, VMMU_EINVAL);
		REFUSED(bad.l2.cr0 = VMMU_CR0_PG, VMMU_EINVAL);	/* PG without PE */
		if (t.npt) {
			REFUSED(bad.eptp = VMMU_EPTP_MT_WB | VMMU_EPTP_WALK_4, VMMU_EINVAL);
			REFUSED(bad.ncr3 |= 1ULL << 52, VMMU_EINVAL);
			REFUSED(bad.tlb_control = 2, VMMU_EINVAL);
			REFUSED(bad.flags = VMMU_NESTED_EXEC_ONLY, VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_ALL, 0), VMMU_ENOTSUP);
		} else {
			REFUSED(bad.eptp = (bad.eptp & ~(7ULL << 3)) | (2ULL << 3), VMMU_EINVAL);	/* walk 3 */
			REFUSED(bad.eptp = (bad.eptp & ~7ULL) | 1, VMMU_EINVAL);	/* memory type 1 */
			REFUSED(bad.eptp |= 1ULL << 7, VMMU_EINVAL);
			REFUSED(bad.eptp |= 1ULL << 9, VMMU_EINVAL);
			REFUSED(bad.eptp |= 1ULL << (var->tdp_levels == 5 ? 52 : 46), VMMU_EINVAL);
			REFUSED(bad.ncr3 = 0x1000, VMMU_EINVAL);
			REFUSED(bad.tlb_control = 1, VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invept(t.vcpu, 3, 0), VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_SINGLE, 1), VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invvpid(t.vcpu, 4, 1, 0), VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invvpid(t.vcpu, VMMU_INVVPID_SINGLE, 0, 0), VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invvpid(t.vcpu, VMMU_INVVPID_ADDR, 1, 1ULL << 60), VMMU_EINVAL);
			ASSERT_ERR(vmmu_vcpu_invlpga(t.vcpu, 0, 1), VMMU_ENOTSUP);
		}
#undef REFUSED
		ASSERT_ERR(vmmu_vcpu_leave_guest_mode(t.vcpu, NULL), VMMU_EPERM);
		ASSERT_OK(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns));
		ASSERT_ERR(vmmu_vcpu_enter_guest_mode(t.vcpu, &ns), VMMU_EPERM);
		if (!t.npt) {
			ASSERT_ERR(vmmu_vcpu_invept(t.vcpu, VMMU_INVEPT_ALL, 0), VMMU_EPERM);
			ASSERT_ERR(vmmu_vcpu_invvpid(t.vcpu, VMMU_INVVPID_ALL, 0, 0), VMMU_EPERM);
		}
		nt_leave(&t);
		ASSERT_OK(vmmu_vcpu_get_state(t.vcpu, &after));
		ASSERT_EQ(memcmp(&before, &after, sizeof(before)), 0);
		nt_teardown(&t);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
