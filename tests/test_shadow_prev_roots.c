/* SPDX-License-Identifier: MIT */
/*
 * The previous-root cache:
 *  - prev_roots (shadow): cached roots make CR3 switches fast.
 */
#include "shadow_test.h"

/*
 * Round-robin CR3 switches among n spaces (each mapping PR_GVA to its own
 * page, holding its index); every switch is followed by a read and a write
 * that must reach that space's page.  Returns the switches done.
 */
#define PR_GVA 0x40000000ULL

static uint64_t pr_rounds(struct fix *f, struct guest_pt **pts, int n, int rounds, bool pcid, uint64_t *seq)
{
	uint64_t switches = 0;

	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < n; i++) {
			uint64_t cr3 = guest_pt_cr3(pts[(i + 1) % n]);
			int k = (i + 1) % n;

			if (pcid)
				cr3 |= (uint64_t)(k + 1) | VMMU_CR3_PCID_NOFLUSH;
			ASSERT_OK(vmmu_vcpu_write_cr3(f->vcpu, cr3));
			switches++;
			EXPECT_READ(f, PR_GVA, ((uint64_t)k << 32) | seq[k]);
			seq[k]++;
			EXPECT_WRITE(f, PR_GVA, ((uint64_t)k << 32) | seq[k]);
			ASSERT_EQ_U64(host_rd64(f->vm, S0_BASE + (uint64_t)k * PAGE), ((uint64_t)k << 32) | seq[k]);
		}
	}
	return switches;
}

static void pr_case(uint32_t prev, int n, bool pcid, enum guest_mode mode, const char *name)
{
	struct fix f;
	struct guest_pt *pts[8];
	struct vmmu_cpu_state s;
	struct vmmu_vcpu_stats a, b;
	uint64_t seq[8] = { 0 }, sw;
	int r;

	fix_create(&f, shadow_vm(prev, 0));
	for (int i = 0; i < n; i++) {
		pts[i] = fix_pt(&f, mode, POOL_BASE + (uint64_t)i * 64 * PAGE, 64 * PAGE);
		host_wr64(f.vm, S0_BASE + (uint64_t)i * PAGE, (uint64_t)i << 32);
		ASSERT_OK(guest_map(pts[i], PR_GVA, S0_BASE + (uint64_t)i * PAGE, PAGE, PAGE, GUEST_W));
	}
	guest_pt_state(pts[0], &s, 0);
	r = vmmu_vcpu_set_state(f.vcpu, &s);
	if (r == VMMU_ENOTSUP) {
		fprintf(stderr, "    %s: %s paging not supported here\n", name, mode_names[mode]);
		goto out;
	}
	ASSERT_OK(r);
	if (pcid) {
		s.cr4 |= VMMU_CR4_PCIDE;
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	}
	EXPECT_READ(&f, PR_GVA, 0);
	/* The first round creates the roots. */
	pr_rounds(&f, pts, n, 1, pcid, seq);
	vstats(&f, &a);
	sw = pr_rounds(&f, pts, n, 3, pcid, seq);
	vstats(&f, &b);
	fprintf(stderr, "    %s: %s, %u previous roots, %d spaces%s: %llu switches: %llu fast, %llu slow\n", name,
		mode_names[mode], prev, n, pcid ? ", PCID no-flush" : "", (unsigned long long)sw,
		(unsigned long long)(b.root_fast_switches - a.root_fast_switches),
		(unsigned long long)(b.root_slow_switches - a.root_slow_switches));
	if ((uint32_t)n <= prev + 1) {
		/* Every root is cached: all fast. */
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches, sw);
		ASSERT_EQ(b.root_slow_switches - a.root_slow_switches, 0);
	} else if (prev == 0) {
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches, 0);
		ASSERT_EQ(b.root_slow_switches - a.root_slow_switches, sw);
	} else {
		/* More spaces than cached roots, visited round robin. */
		ASSERT_GT(b.root_slow_switches - a.root_slow_switches, 0);
		ASSERT_EQ(b.root_fast_switches - a.root_fast_switches + b.root_slow_switches - a.root_slow_switches, sw);
	}
out:
	for (int i = 0; i < n; i++)
		guest_pt_destroy(pts[i]);
	fix_destroy(&f);
}

TEST(prev_roots)
{
	pr_case(3, 4, false, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(3, 4, true, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(3, 4, false, GUEST_MODE_5LEVEL, "prev_roots");
	pr_case(3, 5, false, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(0, 2, false, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(0, 3, true, GUEST_MODE_4LEVEL, "prev_roots");
	pr_case(VMMU_MAX_PREV_ROOTS, 8, false, GUEST_MODE_4LEVEL, "prev_roots");
}
