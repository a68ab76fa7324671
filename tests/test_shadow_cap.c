/* SPDX-License-Identifier: MIT */
/*
 * The cap on shadow pages:
 *  - shadow_page_cap (shadow): shadow_max_pages holds, pages are recycled.
 */
#include "shadow_test.h"

TEST(shadow_page_cap)
{
	const uint64_t cap = 64, n = UNDER_SANITIZER ? 160 : 300, base = 0x40000000ULL;
	struct fix f;
	struct guest_pt *pt[2];
	struct vmmu_cpu_state s;
	struct vmmu_vm_stats st;
	uint64_t maxseen = 0;

	fix_create(&f, shadow_vm(3, cap));
	/* One 4K page in each of n 2M regions: n leaf tables (and two spaces
	 * that map the same pages, to have two roots in use). */
	for (int k = 0; k < 2; k++) {
		pt[k] = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE + (uint64_t)k * 2 * MB, 2 * MB);
		for (uint64_t i = 0; i < n; i++)
			ASSERT_OK(guest_map(pt[k], base + i * GUEST_PAGE_2M + (i % 512) * PAGE, S0_BASE + i * PAGE, PAGE,
					    PAGE, GUEST_W));
	}
	guest_pt_state(pt[0], &s, 0);
	ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	for (int pass = 0; pass < 4; pass++) {
		ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt[pass & 1])));
		for (uint64_t i = 0; i < n; i++) {
			uint64_t gva = base + i * GUEST_PAGE_2M + (i % 512) * PAGE;

			if (pass == 0)
				EXPECT_WRITE(&f, gva, 0xcafe0000ULL + i);
			EXPECT_READ(&f, gva, 0xcafe0000ULL + i);
			memset(&st, 0, sizeof(st));
			vmmu_vm_get_stats(f.vm, &st);
			if (st.shadow_pages > maxseen)
				maxseen = st.shadow_pages;
			if (st.shadow_pages > cap)
				test_fail(__FILE__, __LINE__, "pass %d page %llu: %llu shadow pages, cap %llu", pass,
					  (unsigned long long)i, (unsigned long long)st.shadow_pages,
					  (unsigned long long)cap);
			if (!(i % 32))
				ASSERT_AUDIT(f.vm);
		}
		for (uint64_t i = 0; i < n; i++)
			ASSERT_EQ_U64(host_rd64(f.vm, S0_BASE + i * PAGE), 0xcafe0000ULL + i);
	}
	memset(&st, 0, sizeof(st));
	vmmu_vm_get_stats(f.vm, &st);
	fprintf(stderr, "    cap %llu: at most %llu shadow pages seen, %llu now, created %llu, recycled %llu, zapped %llu\n",
		(unsigned long long)cap, (unsigned long long)maxseen, (unsigned long long)st.shadow_pages,
		(unsigned long long)st.shadow_pages_created, (unsigned long long)st.shadow_pages_recycled,
		(unsigned long long)st.shadow_pages_zapped);
	ASSERT_GT(st.shadow_pages_recycled, 0);
	ASSERT_GE(st.shadow_pages_created, n);
	ASSERT_LE(maxseen, cap);
	for (int k = 0; k < 2; k++)
		guest_pt_destroy(pt[k]);
	fix_destroy(&f);
}
