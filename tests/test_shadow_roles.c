/* SPDX-License-Identifier: MIT */
/*
 * Roles and MMU-context reuse, on every MMU variant:
 *  - role_reuse: mmu_ctx_rebuilds counts role changes and nothing else.
 */
#include "shadow_test.h"

/*
 * Applies s and checks how mmu_ctx_rebuilds moved: by exactly `want` (one
 * state load rebuilds the context once when the role changed, never when
 * it did not).
 */
#define SET_AND_EXPECT(f, s, want, what)                                                             \
	do {                                                                                         \
		struct vmmu_vcpu_stats a_, b_;                                                       \
		vstats((f), &a_);                                                                    \
		ASSERT_OK(vmmu_vcpu_set_state((f)->vcpu, &(s)));                                     \
		vstats((f), &b_);                                                                    \
		if (b_.mmu_ctx_rebuilds - a_.mmu_ctx_rebuilds != (uint64_t)(want))                   \
			test_fail(__FILE__, __LINE__, "%s: mmu_ctx_rebuilds moved by %llu, want %d", \
				  (what), (unsigned long long)(b_.mmu_ctx_rebuilds - a_.mmu_ctx_rebuilds), (int)(want)); \
	} while (0)

TEST(role_reuse)
{
	bool shadow_landed = shadow_supported();

	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *p4a, *p4b, *p32, *ppae;
		struct vmmu_cpu_state s, s0;
		struct vmmu_vcpu_stats st0, st1;
		const uint64_t X = 0x40000000ULL, RO = 0x40001000ULL, D = S0_BASE, D2 = S0_BASE + PAGE;

		fix_variant(&f, var);
		p4a = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		p4b = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE + 64 * PAGE, 64 * PAGE);
		p32 = fix_pt(&f, GUEST_MODE_32, POOL_BASE + 128 * PAGE, 64 * PAGE);
		ppae = fix_pt(&f, GUEST_MODE_PAE, POOL_BASE + 192 * PAGE, 64 * PAGE);
		host_wr64(f.vm, D, 0x1111);
		host_wr64(f.vm, D2, 0x2222);
		/* X: user, writable; RO: user, read-only. */
		ASSERT_OK(guest_map(p4a, X, D, PAGE, PAGE, GUEST_W | GUEST_U));
		ASSERT_OK(guest_map(p4a, RO, D2, PAGE, PAGE, GUEST_U));
		ASSERT_OK(guest_map(p4b, X, D2, PAGE, PAGE, GUEST_W | GUEST_U));
		ASSERT_OK(guest_map(p32, X, D, PAGE, PAGE, GUEST_W | GUEST_U));
		ASSERT_OK(guest_map(p32, X + GUEST_PAGE_4M, D & ~(GUEST_PAGE_4M - 1), GUEST_PAGE_4M, GUEST_PAGE_4M,
				    GUEST_W));
		ASSERT_OK(guest_map(ppae, X, D2, PAGE, PAGE, GUEST_W | GUEST_U));

		/* Paging on: the mode changes. */
		guest_pt_state(p4a, &s, 0);
		vstats(&f, &st0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		vstats(&f, &st1);
		if (st1.mmu_ctx_rebuilds == st0.mmu_ctx_rebuilds && !shadow_landed) {
			fix_destroy(&f);
			SKIP("mmu_ctx_rebuilds is not counted yet (shadow paging has not landed)");
		}
		ASSERT_EQ(st1.mmu_ctx_rebuilds - st0.mmu_ctx_rebuilds, 1);
		EXPECT_READ(&f, X, 0x1111);

		/* Same role. */
		SET_AND_EXPECT(&f, s, 0, "the same state again");
		s0 = s;
		s.cr4 |= VMMU_CR4_PGE;
		SET_AND_EXPECT(&f, s, 0, "CR4.PGE on");
		s.cr4 &= ~VMMU_CR4_PGE;
		SET_AND_EXPECT(&f, s, 0, "CR4.PGE off");
		s.cr4 |= VMMU_CR4_PCIDE;
		SET_AND_EXPECT(&f, s, 0, "CR4.PCIDE on (long mode)");
		{
			struct vmmu_vcpu_stats a, b;

			vstats(&f, &a);
			ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(p4b) | 2));
			EXPECT_READ(&f, X, 0x2222);
			ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(p4a) | 1 | VMMU_CR3_PCID_NOFLUSH));
			EXPECT_READ(&f, X, 0x1111);
			vstats(&f, &b);
			ASSERT_EQ(b.mmu_ctx_rebuilds - a.mmu_ctx_rebuilds, 0);
		}
		ASSERT_OK(vmmu_vcpu_get_state(f.vcpu, &s));
		s.cr4 &= ~VMMU_CR4_PCIDE;
		s.cr3 = guest_pt_cr3(p4a);
		SET_AND_EXPECT(&f, s, 0, "CR4.PCIDE off");
		s.cr3 = guest_pt_cr3(p4b);
		SET_AND_EXPECT(&f, s, 0, "CR3 only (set_state)");
		EXPECT_READ(&f, X, 0x2222);
		s.cr3 = guest_pt_cr3(p4a);
		SET_AND_EXPECT(&f, s, 0, "CR3 back");
		s.cpl = 3;
		SET_AND_EXPECT(&f, s, 0, "CPL 3");
		EXPECT_READ(&f, X, 0x1111);
		EXPECT_PF(&f, RO, VMMU_ACCESS_WRITE, PF_P | PF_W | PF_U);
		s.cpl = 0;
		SET_AND_EXPECT(&f, s, 0, "CPL 0");
		s.rflags = VMMU_RFLAGS_AC;
		SET_AND_EXPECT(&f, s, 0, "RFLAGS.AC");
		s.rflags = 0;
		s.pkru = 0xc;
		SET_AND_EXPECT(&f, s, 0, "PKRU");
		s.pkru = 0;
		SET_AND_EXPECT(&f, s, 0, "PKRU back");

		/* Role changes, each checked by the access it changes. */
		EXPECT_PF(&f, RO, VMMU_ACCESS_WRITE, PF_P | PF_W);
		s.cr0 &= ~VMMU_CR0_WP;
		SET_AND_EXPECT(&f, s, 1, "CR0.WP off");
		EXPECT_WRITE(&f, RO, 0x2223);	/* supervisor writes ignore R/W with WP=0 */
		EXPECT_READ(&f, RO, 0x2223);
		s.cr0 |= VMMU_CR0_WP;
		SET_AND_EXPECT(&f, s, 1, "CR0.WP on");
		EXPECT_PF(&f, RO, VMMU_ACCESS_WRITE, PF_P | PF_W);
		s.cr4 |= VMMU_CR4_SMEP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMEP on");
		EXPECT_PF(&f, X, VMMU_ACCESS_FETCH, PF_P | PF_ID);
		s.cr4 &= ~VMMU_CR4_SMEP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMEP off");
		EXPECT_READ(&f, X, 0x1111);
		s.cr4 |= VMMU_CR4_SMAP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMAP on");
		EXPECT_PF(&f, X, VMMU_ACCESS_READ, PF_P);
		s.rflags = VMMU_RFLAGS_AC;
		SET_AND_EXPECT(&f, s, 0, "RFLAGS.AC with SMAP");
		EXPECT_READ(&f, X, 0x1111);
		s.rflags = 0;
		s.cr4 &= ~VMMU_CR4_SMAP;
		SET_AND_EXPECT(&f, s, 1, "CR4.SMAP off");
		s.efer &= ~VMMU_EFER_NXE;
		SET_AND_EXPECT(&f, s, 1, "EFER.NXE off");
		EXPECT_READ(&f, X, 0x1111);
		s.efer |= VMMU_EFER_NXE;
		SET_AND_EXPECT(&f, s, 1, "EFER.NXE on");

		/* Mode changes: out of long mode through paging off. */
		memset(&s, 0, sizeof(s));
		s.cr0 = VMMU_CR0_PE;
		SET_AND_EXPECT(&f, s, 1, "paging off");
		EXPECT_READ(&f, D, 0x1111);
		guest_pt_state(p32, &s, 0);
		SET_AND_EXPECT(&f, s, 1, "32-bit paging");
		EXPECT_READ(&f, X, 0x1111);
		EXPECT_READ(&f, X + GUEST_PAGE_4M + (D & (GUEST_PAGE_4M - 1)), 0x1111);
		SET_AND_EXPECT(&f, s, 0, "32-bit, same state");
		s.cr4 |= VMMU_CR4_PGE;
		SET_AND_EXPECT(&f, s, 0, "32-bit, CR4.PGE on");
		s.cr4 &= ~VMMU_CR4_PSE;
		SET_AND_EXPECT(&f, s, 1, "32-bit, CR4.PSE off");
		/* Without PSE, PS is ignored: the PDE is a table pointer now, so
		 * only check that it is no longer a 4M page of that data. */
		s.cr4 |= VMMU_CR4_PSE;
		SET_AND_EXPECT(&f, s, 1, "32-bit, CR4.PSE on");
		EXPECT_READ(&f, X + GUEST_PAGE_4M + (D & (GUEST_PAGE_4M - 1)), 0x1111);
		guest_pt_state(ppae, &s, 0);
		SET_AND_EXPECT(&f, s, 1, "32-bit -> PAE");
		EXPECT_READ(&f, X, 0x2223);
		SET_AND_EXPECT(&f, s, 0, "PAE, same state");
		s.cr0 &= ~VMMU_CR0_WP;
		SET_AND_EXPECT(&f, s, 1, "PAE, CR0.WP off");
		(void)s0;
		guest_pt_destroy(p4a);
		guest_pt_destroy(p4b);
		guest_pt_destroy(p32);
		guest_pt_destroy(ppae);
		fix_destroy(&f);
	}
}
