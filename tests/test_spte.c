/* SPDX-License-Identifier: MIT */
/*
 * Property and exhaustive tests of the SPTE encoding (src/spte.[ch]).
 *
 * The encoding is pure, so these tests enumerate: every MMIO generation, every
 * access/host-writable/prefetch combination of a leaf at every leaf level,
 * every writable-bit combination, every child of a split.  The invariants are
 * the ones spte.h documents; each check names the rule it guards.
 */
#include "harness.h"
#include "mmu/spte.h"

/* One host page frame past the last one an SPTE can hold (48-bit host PA). */
#define HOST_PFN_LIMIT (1ULL << (VMMU_HOST_PHYS_BITS - 12))

static uint64_t nr_checked;

struct fmt_case {
	bool ept;
	bool ad;
};

static const struct fmt_case fmt_cases[] = {
	{ true, true },
	{ true, false },
	{ false, true },
};
#define NR_FMT_CASES (sizeof(fmt_cases) / sizeof(fmt_cases[0]))


static const char *fmt_name(const struct spte_fmt *f)
{
	if (!f->ept)
		return "npt";
	return f->ad_enabled ? "ept" : "ept-noad";
}

/* Failure with the SPTE decoded, so a broken encoding is readable. */
__attribute__((noreturn)) static void spte_fail(const char *file, int line, const char *what,
						const struct spte_fmt *f, u64 spte, int level, u64 a, u64 b)
{
	char buf[192];

	spte_format(f, spte, level, buf, sizeof(buf));
	test_fail(file, line, "%s [%s] (%#llx vs %#llx) spte %#llx = %s", what, fmt_name(f),
		  (unsigned long long)a, (unsigned long long)b, (unsigned long long)spte, buf);
}

#define CHECK(f, spte, level, cond)                                                     \
	do {                                                                            \
		if (!(cond))                                                            \
			spte_fail(__FILE__, __LINE__, "expected " #cond, f, spte, level, 0, 0); \
	} while (0)

#define CHECK_EQ(f, spte, level, a, b)                                                   \
	do {                                                                             \
		u64 ca_ = (u64)(a), cb_ = (u64)(b);                                      \
		if (ca_ != cb_)                                                          \
			spte_fail(__FILE__, __LINE__, #a " == " #b, f, spte, level, ca_, cb_); \
	} while (0)

/* ---- MMIO SPTEs ----------------------------------------------------------- */

static void check_mmio(const struct spte_fmt *f, u64 gfn, unsigned int access, u64 gen, u64 junk)
{
	u64 s = make_mmio_spte(f, gfn, access, gen);
	u64 next = (gen + 1) & MMIO_SPTE_GEN_MASK;

	/* Seed 004: an MMIO SPTE taken for an MMU mapping panicked rmap removal. */
	CHECK(f, s, 1, !is_mmu_present_spte(s));
	CHECK(f, s, 1, is_mmio_spte(f, s));
	CHECK(f, s, 1, !is_frozen_spte(s) && s != SPTE_NONPRESENT);
	CHECK_EQ(f, s, 1, get_mmio_spte_gfn(s), gfn);
	CHECK_EQ(f, s, 1, get_mmio_spte_generation(s), gen);
	/* A memslot change must make the SPTE miss, or a new slot stays MMIO. */
	CHECK(f, s, 1, mmio_spte_gen_matches(s, gen));
	CHECK(f, s, 1, !mmio_spte_gen_matches(s, next));
	/* Only the low MMIO_SPTE_GEN_BITS are kept: bits above must neither
	 * spill into other fields nor take part in the comparison. */
	CHECK_EQ(f, s, 1, make_mmio_spte(f, gfn, access, gen | (junk << MMIO_SPTE_GEN_BITS)), s);
	CHECK(f, s, 1, mmio_spte_gen_matches(s, gen | (junk << MMIO_SPTE_GEN_BITS)));
	/* Hardware must exit with the distinct reason, never translate. */
	CHECK(f, s, 1, spte_is_hw_present(f, s));
	CHECK(f, s, 1, spte_is_hw_reserved(f, s, PG_LEVEL_4K));
	if (f->ept) {
		/* SDM 29.3.3.1: write without read is the misconfiguration. */
		CHECK(f, s, 1, (s & EPT_W) && !(s & EPT_R));
		CHECK_EQ(f, s, 1, get_mmio_spte_access(f, s), ACC_ALL);
	} else {
		CHECK(f, s, 1, (s & PT_P) && (s & NPT_MMIO_RSVD));
		CHECK_EQ(f, s, 1, get_mmio_spte_access(f, s), access & (ACC_WRITE | ACC_USER));
	}
	/* Aging and access tracking must never treat it as a mapping. */
	CHECK(f, s, 1, !is_access_track_spte(f, s));
	CHECK(f, s, 1, !is_accessed_spte(f, s));
	CHECK(f, s, 1, !is_dirty_spte(f, s));
	nr_checked++;
}

TEST(mmio_spte_every_generation)
{
	test_rng_seed(0x5eed0004);
	for (int e = 0; e < 2; e++) {
		struct spte_fmt f;

		spte_fmt_init(&f, e == 0, true);
		for (u64 gen = 0; gen <= MMIO_SPTE_GEN_MASK; gen++) {
			u64 r = test_rng_next();
			unsigned int acc = (unsigned int)(r >> 61);

			/* All gfn bits set: a generation bit leaking into the gfn
			 * field (or back) shows up here. */
			check_mmio(&f, MMIO_SPTE_MAX_GFN - 1, acc, gen, r >> 40);
			/* No gfn bits set: the generation alone must survive. */
			check_mmio(&f, gen & 1, acc ^ ACC_WRITE, gen, r >> 45);
			check_mmio(&f, (r >> 7) & (MMIO_SPTE_MAX_GFN - 1), (unsigned int)r & ACC_ALL, gen, r >> 50);
		}
	}
}

/* ---- frozen and non-present values --------------------------------------- */

TEST(frozen_and_nonpresent)
{
	static const u64 values[] = { FROZEN_SPTE, SPTE_NONPRESENT };

	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		for (unsigned int j = 0; j < 2; j++) {
			u64 v = values[j];

			for (int level = PG_LEVEL_4K; level <= PG_LEVEL_256T; level++) {
				/* A walker that reads the frozen value must see "not present"
				 * and retry, in every format and at every level. */
				CHECK(&f, v, level, !is_mmu_present_spte(v));
				CHECK(&f, v, level, !is_mmio_spte(&f, v));
				CHECK(&f, v, level, !spte_is_hw_present(&f, v));
				CHECK(&f, v, level, !is_access_track_spte(&f, v));
				CHECK(&f, v, level, !is_accessed_spte(&f, v));
				CHECK(&f, v, level, !is_dirty_spte(&f, v));
				CHECK_EQ(&f, v, level, spte_access(&f, v), 0);
				nr_checked++;
			}
			CHECK_EQ(&f, v, 1, is_frozen_spte(v), v == FROZEN_SPTE);
		}
		/* A CPU's A/D update of an empty entry must not forge the frozen value. */
		CHECK(&f, FROZEN_SPTE, 1, (f.accessed | f.dirty) != FROZEN_SPTE);
	}
}

/* ---- leaf SPTEs ------------------------------------------------------------ */

/*
 * EPT rights the MMU can ask for: ACC_USER stands for R (KVM's trick, so a
 * nested guest's shadow EPT can map execute-only), W never comes without R
 * (W without R is a misconfiguration, and rights ANDed over valid entries
 * keep that), and a leaf grants something.  The TDP MMU itself asks for
 * ACC_ALL.
 */
static bool ept_access_valid(unsigned int access)
{
	return (access & (ACC_USER | ACC_EXEC)) && (!(access & ACC_WRITE) || (access & ACC_USER));
}

static void check_leaf(const struct spte_fmt *f, u64 pfn, int level, unsigned int access, bool host_w,
		       bool prefetch)
{
	u64 s = make_leaf_spte(f, pfn, level, access, host_w, prefetch);
	bool want_w = (access & ACC_WRITE) && host_w;
	bool tracked = f->ept && !f->ad_enabled && prefetch;
	unsigned int want_acc = (access & (ACC_EXEC | ACC_USER)) | (want_w ? ACC_WRITE : 0);
	u64 hwv = s;


	CHECK(f, s, level, is_mmu_present_spte(s));
	CHECK(f, s, level, is_last_spte(f, s, level));
	/* PS marks a huge leaf; at 4K it is ignored (EPT) or PAT (legacy). */
	CHECK_EQ(f, s, level, is_large_pte(f, s), level > PG_LEVEL_4K);
	CHECK_EQ(f, s, level, spte_to_pfn(s), pfn);
	CHECK(f, s, level, !is_mmio_spte(f, s));
	CHECK(f, s, level, !is_frozen_spte(s));
	/* Seed 002: W => MMU_W => HOST_W, and host_writable bounds ACC_WRITE. */
	CHECK(f, s, level, spte_writable_bits_legal(f, s));
	CHECK_EQ(f, s, level, is_mmu_writable_spte(f, s), want_w);
	CHECK_EQ(f, s, level, is_host_writable_spte(f, s), host_w);
	/* A/D mode is recorded per SPTE; NPT always has A/D. */
	CHECK_EQ(f, s, level, spte_ad_enabled(s), f->ad_enabled);
	CHECK_EQ(f, s, level, is_access_track_spte(f, s), tracked);

	if (tracked) {
		u64 saved = (((access & ACC_USER) ? EPT_R : 0) | ((access & ACC_EXEC) ? EPT_X : 0))
			    << SPTE_ACC_TRACK_SHIFT;
		u64 r = restore_acc_track_spte(f, s);

		/* Prefetched without A/D: hardware-non-present until first use. */
		CHECK(f, s, level, !spte_is_hw_present(f, s));
		CHECK(f, s, level, !is_writable_pte(f, s));
		CHECK(f, s, level, !is_accessed_spte(f, s));
		CHECK(f, s, level, !is_dirty_spte(f, s));
		CHECK_EQ(f, s, level, spte_access(f, s), 0);
		CHECK_EQ(f, s, level, s & SPTE_ACC_TRACK_SAVED_MASK, saved);
		/* Restore gives back R/X only: W comes back from MMU_W on a fault. */
		CHECK_EQ(f, r, level, r & SPTE_ACC_TRACK_SAVED_MASK, 0);
		CHECK_EQ(f, r, level, r & EPT_RWX, saved >> SPTE_ACC_TRACK_SHIFT);
		CHECK_EQ(f, r, level, r & ~(EPT_RWX | SPTE_ACC_TRACK_SAVED_MASK),
			 s & ~(EPT_RWX | SPTE_ACC_TRACK_SAVED_MASK));
		CHECK(f, r, level, !is_access_track_spte(f, r));
		CHECK(f, r, level, is_accessed_spte(f, r));
		CHECK(f, r, level, spte_writable_bits_legal(f, r));
		want_acc &= ~ACC_WRITE;
		hwv = r;
	} else {
		CHECK_EQ(f, s, level, is_writable_pte(f, s), want_w);
		/* A fault's own SPTE is accessed; a prefetched one must not look it. */
		CHECK_EQ(f, s, level, is_accessed_spte(f, s), !prefetch);
		if (f->ad_enabled)
			CHECK_EQ(f, s, level, !!(s & f->accessed), !prefetch);
		if (prefetch)
			CHECK(f, s, level, !is_dirty_spte(f, s));
		if (!f->ad_enabled)
			CHECK_EQ(f, s, level, is_dirty_spte(f, s), want_w);
	}

	CHECK(f, hwv, level, spte_is_hw_present(f, hwv));
	/* Legacy: P in every leaf; EPT: R exactly when ACC_USER asks for it. */
	if (f->ept)
		CHECK_EQ(f, hwv, level, !!(hwv & EPT_R), !!(access & ACC_USER));
	else
		CHECK(f, hwv, level, hwv & f->readable);
	CHECK(f, hwv, level, !spte_is_hw_reserved(f, hwv, level));
	CHECK_EQ(f, hwv, level, spte_access(f, hwv), want_acc);
	if (f->ept)
		CHECK_EQ(f, hwv, level, hwv & EPT_MT_MASK, EPT_MT_WB);	/* guest RAM is WB */
	else
		CHECK_EQ(f, hwv, level, !!(hwv & PT_NX), !(access & ACC_EXEC));
	nr_checked++;
}

TEST(leaf_spte_every_combination)
{
	enum { NR_PFNS = 24 };

	test_rng_seed(0x1eaf);
	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		for (int level = PG_LEVEL_4K; level <= PG_LEVEL_1G; level++) {
			u64 pages = spte_level_pages(level);
			u64 pfns[NR_PFNS];

			pfns[0] = 0;
			pfns[1] = pages;
			/* The largest frame below 2^36 pfns: the top of the address field. */
			pfns[2] = HOST_PFN_LIMIT - pages;
			pfns[3] = HOST_PFN_LIMIT / 2;
			for (int p = 4; p < NR_PFNS; p++)
				pfns[p] = test_rng_next() & (HOST_PFN_LIMIT - 1) & ~(pages - 1);

			for (unsigned int acc = 0; acc <= ACC_ALL; acc++)
				for (int hw = 0; hw < 2; hw++)
					for (int pf = 0; pf < 2; pf++)
						for (int p = 0; p < NR_PFNS && (!f.ept || ept_access_valid(acc)); p++)
							check_leaf(&f, pfns[p], level, acc, hw, pf);
		}
	}
}

/* ---- non-leaf SPTEs ---------------------------------------------------------- */

TEST(nonleaf_spte)
{
	enum { NR_PFNS = 64 };

	test_rng_seed(0x7ab1e);
	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		for (int p = 0; p < NR_PFNS; p++) {
			u64 pfn = p == 0 ? 0 : p == 1 ? 1 : p == 2 ? HOST_PFN_LIMIT - 1 : test_rng_next() % HOST_PFN_LIMIT;
			u64 s = make_nonleaf_spte(&f, pfn);

			for (int level = PG_LEVEL_2M; level <= PG_LEVEL_256T; level++) {
				CHECK(&f, s, level, is_mmu_present_spte(s));
				CHECK(&f, s, level, !is_last_spte(&f, s, level));
				CHECK_EQ(&f, s, level, spte_to_pfn(s), pfn);
				CHECK(&f, s, level, spte_is_hw_present(&f, s));
				CHECK(&f, s, level, !spte_is_hw_reserved(&f, s, level));
				CHECK(&f, s, level, !is_mmio_spte(&f, s));
				CHECK(&f, s, level, !is_access_track_spte(&f, s));
				/* Permissions live in the leaves: a table grants everything. */
				CHECK_EQ(&f, s, level, spte_access(&f, s), ACC_ALL);
				nr_checked++;
			}
		}
	}
}

/* ---- writable-bit legality ------------------------------------------------------ */

TEST(writable_bits_exhaustive)
{
	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		for (int level = PG_LEVEL_4K; level <= PG_LEVEL_1G; level++) {
			u64 base = make_leaf_spte(&f, spte_level_pages(level) * 3, level, ACC_EXEC | ACC_USER, false,
						  false);
			unsigned int nr_legal = 0;

			base &= ~(f.writable | f.mmu_writable | f.host_writable);
			for (unsigned int c = 0; c < 8; c++) {
				bool w = c & 1, mw = c & 2, hw = c & 4;
				u64 s = base | (w ? f.writable : 0) | (mw ? f.mmu_writable : 0) |
					(hw ? f.host_writable : 0);
				bool legal = (!w || mw) && (!mw || hw);

				CHECK_EQ(&f, s, level, spte_writable_bits_legal(&f, s), legal);
				nr_legal += legal;
				nr_checked++;
			}
			/* none, H, M+H, W+M+H */
			ASSERT_EQ(nr_legal, 4);
		}
	}
}

/* ---- splitting huge pages ------------------------------------------------------- */

static void check_split(const struct spte_fmt *f, u64 huge, int huge_level)
{
	int level = huge_level - 1;
	u64 keep = ~(SPTE_BASE_ADDR_MASK | f->huge);
	u64 last_end = spte_to_pfn(huge);

	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++) {
		u64 c = make_small_spte_from_huge(f, huge, huge_level, i);

		/* The children map exactly the huge page's frames, in order. */
		CHECK_EQ(f, c, level, spte_to_pfn(c), spte_to_pfn(huge) + i * spte_level_pages(level));
		CHECK_EQ(f, c, level, spte_to_pfn(c), last_end);
		last_end = spte_to_pfn(c) + spte_level_pages(level);
		/* Rights, A/D, software bits: all inherited. */
		CHECK_EQ(f, c, level, c & keep, huge & keep);
		/* PS goes only at 4K, where it would mean PAT (legacy). */
		CHECK_EQ(f, c, level, is_large_pte(f, c), level > PG_LEVEL_4K);
		CHECK(f, c, level, is_last_spte(f, c, level));
		CHECK(f, c, level, spte_writable_bits_legal(f, c));
		CHECK(f, c, level, !(c & SPTE_HOST_RSVD_MASK));
		CHECK_EQ(f, c, level, is_accessed_spte(f, c), is_accessed_spte(f, huge));
		CHECK_EQ(f, c, level, is_dirty_spte(f, c), is_dirty_spte(f, huge));
		CHECK_EQ(f, c, level, is_access_track_spte(f, c), is_access_track_spte(f, huge));
		CHECK_EQ(f, c, level, spte_access(f, c), spte_access(f, huge));
		if (spte_is_hw_present(f, c))
			CHECK(f, c, level, !spte_is_hw_reserved(f, c, level));
		nr_checked++;
	}
	CHECK_EQ(f, huge, huge_level, last_end, spte_to_pfn(huge) + spte_level_pages(huge_level));
}

TEST(split_huge_spte)
{
	test_rng_seed(0x5b117);
	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		for (int huge_level = PG_LEVEL_1G; huge_level >= PG_LEVEL_2M; huge_level--) {
			u64 pages = spte_level_pages(huge_level);
			u64 pfns[3] = { 0, HOST_PFN_LIMIT - pages, test_rng_next() & (HOST_PFN_LIMIT - 1) & ~(pages - 1) };

			for (int p = 0; p < 3; p++) {
				for (unsigned int v = 0; v < 8; v++) {
					unsigned int acc = (v & 1) ? ACC_ALL : ACC_EXEC | ACC_USER;
					bool host_w = v & 2, prefetch = v & 4;
					u64 huge = make_leaf_spte(&f, pfns[p], huge_level, acc, host_w, prefetch);

					check_split(&f, huge, huge_level);
					/* A dirty huge page must split into dirty children. */
					if (f.ad_enabled)
						check_split(&f, huge | f.dirty, huge_level);
				}
			}
		}
	}
}

/* ---- access tracking ---------------------------------------------------------- */

TEST(access_tracking)
{
	struct spte_fmt ept, noad, npt;

	spte_fmt_init(&ept, true, true);
	spte_fmt_init(&noad, true, false);
	spte_fmt_init(&npt, false, true);

	for (unsigned int acc = 0; acc <= ACC_ALL; acc++) {
		for (int hw = 0; hw < 2; hw++) {
			const struct spte_fmt *ad_fmts[2] = { &ept, &npt };

			/* A/D enabled: aging clears A and nothing else. */
			for (int k = 0; k < 2; k++) {
				const struct spte_fmt *f = ad_fmts[k];

				if (f->ept && !ept_access_valid(acc))
					continue;
				u64 s = make_leaf_spte(f, 0x1234, PG_LEVEL_4K, acc, hw, false) | f->dirty;
				u64 m = mark_spte_for_access_track(f, s);
				u64 pre = make_leaf_spte(f, 0x1234, PG_LEVEL_4K, acc, hw, true);

				CHECK(f, s, 1, is_accessed_spte(f, s));
				CHECK_EQ(f, m, 1, m, s & ~f->accessed);
				CHECK(f, m, 1, !is_accessed_spte(f, m));
				CHECK(f, m, 1, is_dirty_spte(f, m));
				CHECK(f, m, 1, spte_is_hw_present(f, m));
				CHECK(f, m, 1, !is_access_track_spte(f, m));
				CHECK_EQ(f, m, 1, mark_spte_for_access_track(f, m), m);
				CHECK(f, pre, 1, !is_accessed_spte(f, pre));
				CHECK_EQ(f, pre, 1, mark_spte_for_access_track(f, pre), pre);
				/* The A/D mode is per SPTE: an A/D SPTE in a no-A/D VM
				 * (nested, later) still only loses A. */
				if (f->ept)
					CHECK_EQ(f, m, 1, mark_spte_for_access_track(&noad, s), m);
				nr_checked += 3;
			}

			/* A/D disabled (EPT): RWX cleared, R/X saved, W dropped. */
			if (ept_access_valid(acc)) {
				const struct spte_fmt *f = &noad;
				u64 s = make_leaf_spte(f, 0x4321, PG_LEVEL_4K, acc, hw, false);
				u64 m = mark_spte_for_access_track(f, s);
				u64 r = restore_acc_track_spte(f, m);

				CHECK(f, s, 1, is_accessed_spte(f, s));
				CHECK_EQ(f, s, 1, is_dirty_spte(f, s), is_writable_pte(f, s));
				CHECK_EQ(f, m, 1, m & EPT_RWX, 0);
				CHECK_EQ(f, m, 1, m & SPTE_ACC_TRACK_SAVED_MASK,
					 (s & SPTE_ACC_TRACK_SAVED_BITS) << SPTE_ACC_TRACK_SHIFT);
				/* pfn, memtype, MMU_W/HOST_W and the A/D-disabled mark stay. */
				CHECK_EQ(f, m, 1, m & ~(EPT_RWX | SPTE_ACC_TRACK_SAVED_MASK), s & ~EPT_RWX);
				CHECK(f, m, 1, is_mmu_present_spte(m));
				CHECK(f, m, 1, !spte_is_hw_present(f, m));
				CHECK(f, m, 1, is_access_track_spte(f, m));
				CHECK(f, m, 1, !is_accessed_spte(f, m));
				CHECK(f, m, 1, !is_dirty_spte(f, m));
				CHECK(f, m, 1, spte_writable_bits_legal(f, m));
				CHECK_EQ(f, m, 1, mark_spte_for_access_track(f, m), m);
				CHECK_EQ(f, r, 1, r, s & ~EPT_W);
				CHECK(f, r, 1, is_accessed_spte(f, r));
				CHECK(f, r, 1, !is_dirty_spte(f, r));
				CHECK(f, r, 1, !spte_is_hw_reserved(f, r, PG_LEVEL_4K));
				nr_checked += 3;
			}
		}
	}
	/* Nothing that is not an MMU mapping is ever accessed or dirty. */
	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;
		u64 vals[3];

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		vals[0] = SPTE_NONPRESENT;
		vals[1] = FROZEN_SPTE;
		vals[2] = make_mmio_spte(&f, 0x42, ACC_ALL, MMIO_SPTE_GEN_MASK);
		for (int k = 0; k < 3; k++) {
			CHECK(&f, vals[k], 1, !is_accessed_spte(&f, vals[k]));
			CHECK(&f, vals[k], 1, !is_dirty_spte(&f, vals[k]));
			nr_checked++;
		}
	}
}

/* ---- hardware reserved-bit rules --------------------------------------------- */

TEST(hw_reserved_ept)
{
	struct spte_fmt f;

	for (int ad = 0; ad < 2; ad++) {
		spte_fmt_init(&f, true, ad);
		for (int level = PG_LEVEL_4K; level <= PG_LEVEL_1G; level++) {
			u64 leaf = make_leaf_spte(&f, spte_level_pages(level) * 5, level, ACC_ALL, true, false);

			CHECK(&f, leaf, level, !spte_is_hw_reserved(&f, leaf, level));
			/* SDM 29.3.3.1: W without R is a misconfiguration; X-only is fine. */
			CHECK(&f, leaf & ~EPT_R, level, spte_is_hw_reserved(&f, leaf & ~EPT_R, level));
			CHECK(&f, leaf & ~(EPT_R | EPT_X), level,
			      spte_is_hw_reserved(&f, leaf & ~(EPT_R | EPT_X), level));
			CHECK(&f, leaf & ~(EPT_R | EPT_W), level,
			      !spte_is_hw_reserved(&f, leaf & ~(EPT_R | EPT_W), level));
			/* Memory types 2, 3 and 7 are reserved in a leaf. */
			for (u64 mt = 0; mt < 8; mt++) {
				u64 s = (leaf & ~EPT_MT_MASK) | (mt << EPT_MT_SHIFT);

				CHECK_EQ(&f, s, level, spte_is_hw_reserved(&f, s, level), mt == 2 || mt == 3 || mt == 7);
				nr_checked++;
			}
			/* A huge frame must be aligned to its size; bit shift itself is address. */
			for (unsigned int b = 12; b <= spte_level_shift(level); b++) {
				u64 s = leaf ^ BIT_ULL(b);
				bool misaligned = level > PG_LEVEL_4K && b < spte_level_shift(level);

				CHECK_EQ(&f, s, level, spte_is_hw_reserved(&f, s, level), misaligned);
				nr_checked++;
			}
			for (unsigned int b = VMMU_HOST_PHYS_BITS; b <= 51; b++) {
				CHECK(&f, leaf | BIT_ULL(b), level, spte_is_hw_reserved(&f, leaf | BIT_ULL(b), level));
				nr_checked++;
			}
		}
		for (int level = PG_LEVEL_2M; level <= PG_LEVEL_256T; level++) {
			u64 t = make_nonleaf_spte(&f, 0x777);

			CHECK(&f, t, level, !spte_is_hw_reserved(&f, t, level));
			/* Bits 6:3 are reserved in every non-leaf EPT entry. */
			for (unsigned int b = 3; b <= 6; b++)
				CHECK(&f, t | BIT_ULL(b), level, spte_is_hw_reserved(&f, t | BIT_ULL(b), level));
			for (unsigned int b = VMMU_HOST_PHYS_BITS; b <= 51; b++)
				CHECK(&f, t | BIT_ULL(b), level, spte_is_hw_reserved(&f, t | BIT_ULL(b), level));
			CHECK(&f, t & ~EPT_R, level, spte_is_hw_reserved(&f, t & ~EPT_R, level));
			nr_checked += 6 + (52 - VMMU_HOST_PHYS_BITS);
		}
		/* No 512G or 256T pages: PS is reserved at levels 4 and 5. */
		for (int level = PG_LEVEL_512G; level <= PG_LEVEL_256T; level++) {
			u64 t = make_nonleaf_spte(&f, 0);

			CHECK(&f, t | EPT_PS, level, spte_is_hw_reserved(&f, t | EPT_PS, level));
			CHECK(&f, t | EPT_PS | EPT_MT_WB, level,
			      spte_is_hw_reserved(&f, t | EPT_PS | EPT_MT_WB, level));
			nr_checked += 2;
		}
	}
}

TEST(hw_reserved_npt)
{
	struct spte_fmt f;

	spte_fmt_init(&f, false, true);
	for (int level = PG_LEVEL_4K; level <= PG_LEVEL_1G; level++) {
		u64 leaf = make_leaf_spte(&f, spte_level_pages(level) * 7, level, ACC_ALL, true, false);

		CHECK(&f, leaf, level, !spte_is_hw_reserved(&f, leaf, level));
		for (unsigned int b = 12; b <= spte_level_shift(level); b++) {
			u64 s = leaf ^ BIT_ULL(b);
			/* In a huge leaf bit 12 is PAT; 13..shift-1 must be zero. */
			bool rsvd = level > PG_LEVEL_4K && b >= 13 && b < spte_level_shift(level);

			CHECK_EQ(&f, s, level, spte_is_hw_reserved(&f, s, level), rsvd);
			nr_checked++;
		}
		for (unsigned int b = VMMU_HOST_PHYS_BITS; b <= 51; b++) {
			CHECK(&f, leaf | BIT_ULL(b), level, spte_is_hw_reserved(&f, leaf | BIT_ULL(b), level));
			nr_checked++;
		}
		/* The software bits 9-11 and the cache bits are never reserved. */
		for (unsigned int b = 3; b <= 11; b++) {
			if (b == 7)
				continue;
			CHECK(&f, leaf ^ BIT_ULL(b), level, !spte_is_hw_reserved(&f, leaf ^ BIT_ULL(b), level));
			nr_checked++;
		}
	}
	for (int level = PG_LEVEL_2M; level <= PG_LEVEL_256T; level++) {
		u64 t = make_nonleaf_spte(&f, 0x999);

		CHECK(&f, t, level, !spte_is_hw_reserved(&f, t, level));
		for (unsigned int b = VMMU_HOST_PHYS_BITS; b <= 51; b++)
			CHECK(&f, t | BIT_ULL(b), level, spte_is_hw_reserved(&f, t | BIT_ULL(b), level));
		nr_checked += 1 + (52 - VMMU_HOST_PHYS_BITS);
	}
	/* PS is reserved in PML4Es and PML5Es (APM: no 512G pages). */
	for (int level = PG_LEVEL_512G; level <= PG_LEVEL_256T; level++) {
		u64 t = make_nonleaf_spte(&f, 0);

		CHECK(&f, t | PT_PS, level, spte_is_hw_reserved(&f, t | PT_PS, level));
		nr_checked++;
	}
}

/* ---- spte_format -------------------------------------------------------------- */

static void check_format(const struct spte_fmt *f, u64 spte, int level, const char *want)
{
	char buf[256];
	char tiny[8 + 8];
	int n;

	memset(buf, 0x7f, sizeof(buf));
	n = spte_format(f, spte, level, buf, sizeof(buf));
	CHECK(f, spte, level, n > 0 && (size_t)n < sizeof(buf));
	CHECK_EQ(f, spte, level, strlen(buf), n);
	if (!strstr(buf, want))
		test_fail(__FILE__, __LINE__, "[%s] spte_format(%#llx) = \"%s\", want \"%s\" in it", fmt_name(f),
			  (unsigned long long)spte, buf, want);
	/* A short buffer is truncated, terminated, and never overrun. */
	memset(tiny, 0x7f, sizeof(tiny));
	(void)spte_format(f, spte, level, tiny, 8);
	CHECK(f, spte, level, strlen(tiny) == 7 || (size_t)n < 8);
	for (size_t i = 8; i < sizeof(tiny); i++)
		CHECK_EQ(f, spte, level, (unsigned char)tiny[i], 0x7f);
	nr_checked++;
}

TEST(spte_format_every_kind)
{
	for (unsigned int i = 0; i < NR_FMT_CASES; i++) {
		struct spte_fmt f;
		u64 leaf, garbage;

		spte_fmt_init(&f, fmt_cases[i].ept, fmt_cases[i].ad);
		leaf = make_leaf_spte(&f, 0x100, PG_LEVEL_4K, ACC_ALL, true, false);
		/* Hardware-visible bits without the MMU-present mark. */
		garbage = leaf & ~SPTE_MMU_PRESENT;
		check_format(&f, FROZEN_SPTE, 1, "frozen");
		check_format(&f, SPTE_NONPRESENT, 1, "none");
		check_format(&f, make_mmio_spte(&f, 0xabc, ACC_ALL, 0x7777), 1, "mmio");
		check_format(&f, garbage, 1, "garbage");
		check_format(&f, leaf, 1, "leaf");
		check_format(&f, make_leaf_spte(&f, 0x200, PG_LEVEL_2M, ACC_ALL, true, false), 2, "leaf");
		check_format(&f, make_nonleaf_spte(&f, 0x300), 3, "table");
		if (f.ept && !f.ad_enabled)
			check_format(&f, make_leaf_spte(&f, 0x100, PG_LEVEL_4K, ACC_ALL, true, true), 1, "acc-track");
	}
}

int main(int argc, char **argv)
{
	int r = test_main(argc, argv);

	fprintf(stderr, "spte: %llu encodings checked\n", (unsigned long long)nr_checked);
	return r;
}
