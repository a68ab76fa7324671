/* SPDX-License-Identifier: MIT */
/*
 * The guest OS library (guest/): page tables it builds in guest memory,
 * checked against the x86 formats of the Intel SDM (Vol. 3A 4.3 32-bit,
 * 4.4 PAE, 4.5 4/5-level) by a reference decoder written here, in every
 * paging mode: round trips, raw entry bits, unmap/protect, rejected input
 * leaving guest memory untouched, pool exhaustion, the vCPU writer path, a
 * random model test, and agreement with the guest walker (src/walk.c).
 */
#include <stdatomic.h>

#include "guest.h"
#include "harness.h"
#include "mmu/walk.h"

#define SZ_4K 0x1000ULL
#define SZ_2M 0x200000ULL
#define SZ_4M 0x400000ULL
#define SZ_1G 0x40000000ULL
#define MB (1ULL << 20)
#define GB (1ULL << 30)

#define RAM_SIZE (64 * MB)
#define POOL_GPA (16 * MB)
#define POOL_SIZE (4 * MB)

/* Architectural entry bits, spelled out independently of guest.h (SDM 4.3
 * tables 4-4..4-6, 4.4.2 tables 4-8..4-11, 4.5.4 tables 4-15..4-20). */
#define X_P (1ULL << 0)
#define X_RW (1ULL << 1)
#define X_US (1ULL << 2)
#define X_PWT (1ULL << 3)
#define X_PCD (1ULL << 4)
#define X_A (1ULL << 5)
#define X_D (1ULL << 6)
#define X_PS (1ULL << 7)
#define X_G (1ULL << 8)
#define X_XD (1ULL << 63)
#define X_ADDR32 0xfffff000ULL
#define X_ADDR64 0x000ffffffffff000ULL

struct tmode {
	enum guest_mode mode;
	const char *name;
	int levels;
	unsigned int esize;
	unsigned int va_bits;
	uint64_t sizes[3];
	int nsizes;
	uint64_t hi_base;	/* a high linear region to map in too */
};

static const struct tmode tmodes[] = {
	{ GUEST_MODE_32, "32bit", 2, 4, 32, { SZ_4K, SZ_4M }, 2, 0xc0000000ULL },
	{ GUEST_MODE_PAE, "pae", 3, 8, 32, { SZ_4K, SZ_2M }, 2, 0xc0000000ULL },
	{ GUEST_MODE_4LEVEL, "4level", 4, 8, 48, { SZ_4K, SZ_2M, SZ_1G }, 3, 0xffff800000000000ULL },
	{ GUEST_MODE_5LEVEL, "5level", 5, 8, 57, { SZ_4K, SZ_2M, SZ_1G }, 3, 0xff00000000000000ULL },
};
#define NR_TMODES (sizeof(tmodes) / sizeof(tmodes[0]))
#define for_each_tmode(tm) \
	for (const struct tmode *tm = tmodes; tm < tmodes + NR_TMODES && ((test_variant = tm->name), 1); tm++)

static uint64_t rng_below(uint64_t n)
{
	return test_rng_next() % n;
}

/* ---- fixture ------------------------------------------------------------- */

struct fix {
	const struct tmode *tm;
	vmmu_vm *vm;
	struct guest_pt *pt;
	uint8_t *ram;		/* slot 0's backing: gpa 0 */
	uint64_t pool_size;
};

static vmmu_vm *make_vm(enum guest_mode mode, uint8_t **ram)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s;
	vmmu_vm *vm = NULL;
	void *p = NULL;

	vmmu_vm_config_init(&cfg);
	if (mode == GUEST_MODE_5LEVEL) {
		cfg.maxphyaddr = 52;
		cfg.tdp_levels = 5;
	}
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	memset(&s, 0, sizeof(s));
	s.slot = 0;
	s.gpa = 0;
	s.size = RAM_SIZE;
	ASSERT_OK(vmmu_set_memslot(vm, &s));
	ASSERT_OK(vmmu_memslot_hva(vm, 0, &p));
	if (ram)
		*ram = p;
	return vm;
}

static void fix_init(struct fix *f, const struct tmode *tm, uint64_t pool_size)
{
	memset(f, 0, sizeof(*f));
	f->tm = tm;
	f->pool_size = pool_size;
	f->vm = make_vm(tm->mode, &f->ram);
	ASSERT_OK(guest_pt_create(f->vm, tm->mode, POOL_GPA, pool_size, &f->pt));
}

static void fix_fini(struct fix *f)
{
	const char *why = NULL;

	guest_pt_destroy(f->pt);
	if (vmmu_vm_bugged(f->vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
	vmmu_vm_destroy(f->vm);
}

static uint8_t *snap(struct fix *f)
{
	uint8_t *s = malloc(f->pool_size);

	ASSERT_TRUE(s != NULL);
	memcpy(s, f->ram + POOL_GPA, f->pool_size);
	return s;
}

/* The pool (every page-table byte) is as it was at the snapshot. */
#define ASSERT_UNCHANGED(f, s) ASSERT_TRUE(memcmp((s), (f)->ram + POOL_GPA, (f)->pool_size) == 0)

static uint64_t raw(struct fix *f, uint64_t gpa, unsigned int size)
{
	uint64_t v = 0;

	ASSERT_TRUE(gpa + size <= RAM_SIZE);
	memcpy(&v, f->ram + gpa, size);	/* x86 host: little-endian like the guest */
	return v;
}

static bool in_pool(struct fix *f, uint64_t gpa)
{
	return gpa >= POOL_GPA && gpa < POOL_GPA + f->pool_size;
}

/* ---- the reference decoder ---------------------------------------------- */

struct ref {
	int leaf_level;
	uint64_t gpa, page_size;
	uint64_t entry[6], entry_gpa[6];
};

/* Returns 0 with the translation, or the level whose entry is not present. */
static int ref_walk(struct fix *f, uint64_t gva, struct ref *out)
{
	const struct tmode *tm = f->tm;
	uint64_t table = guest_pt_cr3(f->pt);

	memset(out, 0, sizeof(*out));
	for (int level = tm->levels; level >= 1; level--) {
		unsigned int bits = tm->mode == GUEST_MODE_32 ? 10 : 9;
		unsigned int shift = 12 + bits * (unsigned int)(level - 1);
		uint64_t nidx = (tm->mode == GUEST_MODE_PAE && level == 3) ? 4 : 1ULL << bits;
		uint64_t idx = (gva >> shift) & (nidx - 1);
		uint64_t egpa = table + idx * tm->esize;
		uint64_t e = raw(f, egpa, tm->esize);
		bool leaf;

		out->entry[level] = e;
		out->entry_gpa[level] = egpa;
		if (!(e & X_P))
			return level;
		leaf = level == 1 || (level == 2 && (e & X_PS)) ||
		       (level == 3 && tm->mode >= GUEST_MODE_4LEVEL && (e & X_PS));
		if (leaf) {
			uint64_t frame;

			out->leaf_level = level;
			out->page_size = 1ULL << shift;
			if (tm->mode == GUEST_MODE_32 && level == 2)
				frame = (e & 0xffc00000ULL) | (((e >> 13) & 0xff) << 32);
			else if (tm->mode == GUEST_MODE_32)
				frame = e & X_ADDR32;
			else
				frame = e & X_ADDR64 & ~(out->page_size - 1);
			out->gpa = frame | (gva & (out->page_size - 1));
			return 0;
		}
		/* Intermediate entries: P|R/W|U/S (PAE PDPTE: P only), nothing else. */
		if (tm->mode == GUEST_MODE_PAE && level == 3)
			ASSERT_EQ_U64(e & ~X_ADDR64, X_P);
		else if (tm->mode == GUEST_MODE_32)
			ASSERT_EQ_U64(e & ~X_ADDR32, X_P | X_RW | X_US);
		else
			ASSERT_EQ_U64(e & ~X_ADDR64, X_P | X_RW | X_US);
		table = e & (tm->mode == GUEST_MODE_32 ? X_ADDR32 : X_ADDR64);
		ASSERT_TRUE(in_pool(f, table));
	}
	return -1;
}

/* guest_lookup() and the reference decoder agree on gva, mapped to want. */
static void check_mapped(struct fix *f, uint64_t gva, uint64_t want_gpa, uint64_t want_size)
{
	uint64_t gpa = 0, ps = 0, leaf = 0, leaf_gpa = 0;
	struct ref r;

	ASSERT_OK(guest_lookup(f->pt, gva, &gpa, &ps, &leaf, &leaf_gpa));
	ASSERT_EQ_U64(gpa, want_gpa);
	ASSERT_EQ_U64(ps, want_size);
	ASSERT_EQ(ref_walk(f, gva, &r), 0);
	ASSERT_EQ_U64(r.gpa, want_gpa);
	ASSERT_EQ_U64(r.page_size, want_size);
	ASSERT_EQ_U64(r.entry[r.leaf_level], leaf);
	ASSERT_EQ_U64(r.entry_gpa[r.leaf_level], leaf_gpa);
	ASSERT_TRUE(in_pool(f, leaf_gpa));
}

static void check_unmapped(struct fix *f, uint64_t gva)
{
	struct ref r;

	ASSERT_ERR(guest_lookup(f->pt, gva, NULL, NULL, NULL, NULL), VMMU_ENOENT);
	ASSERT_GT(ref_walk(f, gva, &r), 0);
}

static uint64_t leaf_of(struct fix *f, uint64_t gva)
{
	uint64_t leaf = 0;

	ASSERT_OK(guest_lookup(f->pt, gva, NULL, NULL, &leaf, NULL));
	return leaf;
}

static uint64_t pool_used(struct fix *f)
{
	uint64_t used = 0;

	guest_pt_pool_usage(f->pt, &used, NULL);
	return used;
}

static uint64_t rights_flags(const struct tmode *tm)
{
	uint64_t fl = GUEST_W | GUEST_U;

	if (tm->mode != GUEST_MODE_32)
		fl |= GUEST_NX;
	return fl;
}

/* ---- tests ---------------------------------------------------------------- */

TEST(flag_values_are_the_entry_bits)
{
	ASSERT_EQ_U64(GUEST_W, X_RW);
	ASSERT_EQ_U64(GUEST_U, X_US);
	ASSERT_EQ_U64(GUEST_PWT, X_PWT);
	ASSERT_EQ_U64(GUEST_PCD, X_PCD);
	ASSERT_EQ_U64(GUEST_A, X_A);
	ASSERT_EQ_U64(GUEST_D, X_D);
	ASSERT_EQ_U64(GUEST_G, X_G);
	ASSERT_EQ_U64(GUEST_NX, X_XD);
	ASSERT_EQ_U64(GUEST_PKEY(0xf), 0x7800000000000000ULL);	/* bits 62:59 */
	ASSERT_EQ_U64(GUEST_PKEY(1), 1ULL << 59);
	ASSERT_EQ_U64(GUEST_PTE_PS, X_PS);
}

TEST(create_arguments)
{
	struct vmmu_memslot s;
	struct guest_pt *pt = NULL;
	uint8_t *ram;
	vmmu_vm *vm = make_vm(GUEST_MODE_4LEVEL, &ram);

	/* A second RAM slot above 4 GiB. */
	memset(&s, 0, sizeof(s));
	s.slot = 1;
	s.gpa = 4 * GB;
	s.size = 2 * MB;
	ASSERT_OK(vmmu_set_memslot(vm, &s));

	ASSERT_ERR(guest_pt_create(NULL, GUEST_MODE_4LEVEL, POOL_GPA, POOL_SIZE, &pt), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, POOL_GPA, POOL_SIZE, NULL), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, (enum guest_mode)7, POOL_GPA, POOL_SIZE, &pt), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, (enum guest_mode)100, POOL_GPA, POOL_SIZE, &pt), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, POOL_GPA + 8, POOL_SIZE, &pt), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, POOL_GPA, POOL_SIZE - 8, &pt), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, POOL_GPA, 0, &pt), VMMU_EINVAL);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, ~0xfffULL, 2 * SZ_4K, &pt), VMMU_EINVAL);
	/* Not RAM, entirely or in part. */
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, RAM_SIZE, SZ_4K, &pt), VMMU_ENOENT);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, RAM_SIZE - SZ_4K, 2 * SZ_4K, &pt), VMMU_ENOENT);
	/* Format limits: 32-bit tables and the PAE root below 4 GiB. */
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_32, 4 * GB, 2 * MB, &pt), VMMU_ERANGE);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_32, 4 * GB - SZ_4K, 2 * SZ_4K, &pt), VMMU_ERANGE);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_PAE, 4 * GB, 2 * MB, &pt), VMMU_ERANGE);
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_4LEVEL, 1ULL << 52, SZ_4K, &pt), VMMU_ERANGE);
	/* Too small: PAE needs the PDPT page and its four page directories. */
	ASSERT_ERR(guest_pt_create(vm, GUEST_MODE_PAE, POOL_GPA, 4 * SZ_4K, &pt), VMMU_ENOMEM);
	ASSERT_TRUE(pt == NULL);

	/* Long-mode tables may live above 4 GiB. */
	ASSERT_OK(guest_pt_create(vm, GUEST_MODE_4LEVEL, 4 * GB, 2 * MB, &pt));
	ASSERT_EQ_U64(guest_pt_cr3(pt), 4 * GB);
	ASSERT_OK(guest_map(pt, 0x7000, 0x9000, SZ_4K, SZ_4K, GUEST_W));
	guest_pt_destroy(pt);

	/* A pool at gpa 0 works (0 is a valid page). */
	ASSERT_OK(guest_pt_create(vm, GUEST_MODE_4LEVEL, 0, 16 * SZ_4K, &pt));
	ASSERT_EQ_U64(guest_pt_cr3(pt), 0);
	ASSERT_OK(guest_map(pt, 0x7000, 0x9000, SZ_4K, SZ_4K, GUEST_W));
	{
		uint64_t gpa = 0, used = 0, free_pages = 0;

		ASSERT_OK(guest_lookup(pt, 0x7123, &gpa, NULL, NULL, NULL));
		ASSERT_EQ_U64(gpa, 0x9123);
		guest_pt_pool_usage(pt, &used, &free_pages);
		ASSERT_EQ(used, 4);
		ASSERT_EQ(free_pages, 12);
	}
	guest_pt_destroy(pt);

	/* PAE: the smallest pool; CR3 32-byte aligned, below 4 GiB, not page
	 * aligned; four present PDPTEs with P alone, pointing into the pool. */
	memset(ram + POOL_GPA, 0xa5, 8 * SZ_4K);
	ASSERT_OK(guest_pt_create(vm, GUEST_MODE_PAE, POOL_GPA, 5 * SZ_4K, &pt));
	{
		uint64_t cr3 = guest_pt_cr3(pt), seen = 0;

		ASSERT_EQ_U64(cr3 & 0x1f, 0);
		ASSERT_NE_U64(cr3 & 0xfff, 0);
		ASSERT_TRUE(cr3 >= POOL_GPA && cr3 < POOL_GPA + 5 * SZ_4K);
		for (unsigned int i = 0; i < 4; i++) {
			uint64_t e;

			memcpy(&e, ram + cr3 + i * 8, 8);
			ASSERT_EQ_U64(e & ~X_ADDR64, X_P);
			ASSERT_TRUE((e & X_ADDR64) >= POOL_GPA && (e & X_ADDR64) < POOL_GPA + 5 * SZ_4K);
			ASSERT_NE_U64(e & X_ADDR64, cr3 & ~0xfffULL);
			seen |= 1ULL << (((e & X_ADDR64) - POOL_GPA) >> 12);
			/* The page directory was zeroed before being linked. */
			for (unsigned int j = 0; j < SZ_4K; j++)
				ASSERT_EQ(ram[(e & X_ADDR64) + j], 0);
		}
		ASSERT_EQ(__builtin_popcountll(seen), 4);
		/* The pool is full: a 4K page needs a page table. */
		ASSERT_ERR(guest_map(pt, 0, 0, SZ_4K, SZ_4K, 0), VMMU_ENOMEM);
		ASSERT_OK(guest_map(pt, 0, 0, SZ_2M, SZ_2M, 0));
	}
	guest_pt_destroy(pt);
	/* Only the pool was written. */
	for (unsigned int j = 5 * SZ_4K; j < 8 * SZ_4K; j++)
		ASSERT_EQ(ram[POOL_GPA + j], 0xa5);
	guest_pt_destroy(NULL);
	vmmu_vm_destroy(vm);
}

TEST(cpu_state)
{
	for_each_tmode(tm) {
		struct vmmu_cpu_state s;
		struct fix f;

		fix_init(&f, tm, POOL_SIZE);
		ASSERT_EQ(guest_pt_mode(f.pt), tm->mode);
		memset(&s, 0xff, sizeof(s));
		guest_pt_state(f.pt, &s, 3);
		ASSERT_EQ_U64(s.cr0, VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP);
		ASSERT_EQ_U64(s.cr3, guest_pt_cr3(f.pt));
		ASSERT_EQ(s.cpl, 3);
		ASSERT_EQ(s.pkru, 0);
		ASSERT_EQ_U64(s.rflags, 0);
		switch (tm->mode) {
		case GUEST_MODE_32:
			ASSERT_EQ_U64(s.cr4, VMMU_CR4_PSE);
			ASSERT_EQ_U64(s.efer, 0);
			ASSERT_EQ_U64(s.cr3 & 0xfff, 0);
			ASSERT_TRUE(s.cr3 < 4 * GB);
			break;
		case GUEST_MODE_PAE:
			ASSERT_EQ_U64(s.cr4, VMMU_CR4_PAE);
			ASSERT_EQ_U64(s.efer, VMMU_EFER_NXE);
			break;
		case GUEST_MODE_4LEVEL:
			ASSERT_EQ_U64(s.cr4, VMMU_CR4_PAE);
			ASSERT_EQ_U64(s.efer, VMMU_EFER_LME | VMMU_EFER_NXE);
			ASSERT_EQ_U64(s.cr3 & 0xfff, 0);
			break;
		case GUEST_MODE_5LEVEL:
			ASSERT_EQ_U64(s.cr4, VMMU_CR4_PAE | VMMU_CR4_LA57);
			ASSERT_EQ_U64(s.efer, VMMU_EFER_LME | VMMU_EFER_NXE);
			ASSERT_EQ_U64(s.cr3 & 0xfff, 0);
			break;
		default:
			test_fail(__FILE__, __LINE__, "an EPT mode among the CPU paging modes");
		}
		fix_fini(&f);
	}
}

/* Every page size of every mode, low and high linear regions: lookups of
 * first, last and random bytes round trip; neighbours stay unmapped. */
TEST(map_lookup_round_trip)
{
	test_rng_seed(1);
	for_each_tmode(tm) {
		struct fix f;

		fix_init(&f, tm, POOL_SIZE);
		for (int si = 0; si < tm->nsizes; si++) {
			uint64_t ps = tm->sizes[si];
			uint64_t bases[2] = { 0, tm->hi_base };

			for (int bi = 0; bi < 2; bi++) {
				/* Leave a free page below and above the range. */
				uint64_t gva = bases[bi] + (ps == SZ_1G ? 1 : 3) * ps;
				uint64_t gpa = (ps == SZ_1G ? 5 : 7) * ps;
				uint64_t n = 3, size = n * ps;

				if (tm->mode == GUEST_MODE_32 && ps == SZ_4K)
					gpa = 0xfff00000ULL;	/* top of the 32-bit space */
				else if (tm->mode == GUEST_MODE_32)
					gpa = 0xff00000000ULL - size;	/* PSE-36 */
				check_unmapped(&f, gva);
				ASSERT_OK(guest_map(f.pt, gva, gpa, size, ps, rights_flags(tm)));
				for (uint64_t p = 0; p < n; p++) {
					uint64_t off = rng_below(ps);

					check_mapped(&f, gva + p * ps, gpa + p * ps, ps);
					check_mapped(&f, gva + p * ps + ps - 1, gpa + p * ps + ps - 1, ps);
					check_mapped(&f, gva + p * ps + off, gpa + p * ps + off, ps);
				}
				check_unmapped(&f, gva - 1);
				check_unmapped(&f, gva + size);
			}
		}
		fix_fini(&f);
	}
}

/*
 * Leaves bit by bit: every flag the mode allows, frames at the limits of the
 * address fields (PSE-36 for 4M pages, bit 51 for 64-bit entries).
 */
TEST(raw_entry_format)
{
	for_each_tmode(tm) {
		struct fix f;

		fix_init(&f, tm, POOL_SIZE);
		for (int si = 0; si < tm->nsizes; si++) {
			uint64_t ps = tm->sizes[si];
			uint64_t gva = 2 * SZ_1G + 0 * ps;	/* below 4 GiB: valid in every mode */
			uint64_t gpa, flags, want, leaf, cases[3];
			int ncases = 0;

			if (tm->mode == GUEST_MODE_32) {
				flags = X_RW | X_US | X_PWT | X_PCD | X_A | X_D | X_G;
				if (ps == SZ_4K) {
					cases[ncases++] = 0xfffff000ULL;
					cases[ncases++] = 0x12345000ULL;
				} else {
					cases[ncases++] = 0xffffc00000ULL;	/* bits 39:22 all set */
					cases[ncases++] = 0x1234400000ULL;
					cases[ncases++] = 0x00ffc00000ULL;	/* no high bits */
				}
			} else {
				flags = X_RW | X_US | X_PWT | X_PCD | X_A | X_D | X_G | X_XD;
				if (tm->mode >= GUEST_MODE_4LEVEL)
					flags |= 0xaULL << 59;
				cases[ncases++] = (1ULL << 52) - ps;	/* every address bit up to 51 */
				cases[ncases++] = 0x0000123456789000ULL & ~(ps - 1);
				cases[ncases++] = ps;
			}
			for (int c = 0; c < ncases; c++) {
				struct ref r;

				gpa = cases[c];
				ASSERT_OK(guest_map(f.pt, gva, gpa, ps, ps, flags));
				if (tm->mode == GUEST_MODE_32 && ps == SZ_4M)
					want = (gpa & 0xffc00000ULL) | (((gpa >> 32) & 0xff) << 13) | X_PS | X_P |
					       flags;
				else
					want = gpa | (ps > SZ_4K ? X_PS : 0) | X_P | flags;
				leaf = leaf_of(&f, gva);
				ASSERT_EQ_U64(leaf, want);
				ASSERT_EQ(ref_walk(&f, gva + 0x123, &r), 0);
				ASSERT_EQ_U64(r.entry[r.leaf_level], want);
				ASSERT_EQ_U64(r.gpa, gpa + 0x123);
				/* The leaf is at the level of its size. */
				ASSERT_EQ(r.leaf_level, ps == SZ_4K ? 1 : ps == SZ_1G ? 3 : 2);
				/* Bit by bit, for the failure message. */
				ASSERT_TRUE(leaf & X_P);
				ASSERT_EQ(!!(leaf & X_PS), ps > SZ_4K);
				ASSERT_TRUE(leaf & X_RW);
				ASSERT_TRUE(leaf & X_US);
				ASSERT_TRUE(leaf & X_G);
				if (tm->mode == GUEST_MODE_32) {
					ASSERT_EQ(leaf >> 32, 0);
					if (ps == SZ_4M) {
						ASSERT_EQ_U64((leaf >> 13) & 0xff, gpa >> 32);
						ASSERT_EQ_U64(leaf & (1ULL << 21), 0);	/* reserved */
						ASSERT_EQ_U64(leaf & (1ULL << 12), 0);	/* PAT */
					}
				} else {
					ASSERT_TRUE(leaf & X_XD);
					ASSERT_EQ_U64((leaf >> 59) & 0xf, tm->mode >= GUEST_MODE_4LEVEL ? 0xa : 0);
					ASSERT_EQ_U64(leaf & X_ADDR64 & ~(ps - 1), gpa);
					ASSERT_EQ_U64(leaf & (ps - 1) & ~0xfffULL, 0);	/* PAT/reserved */
				}
			}
			/* No flags at all: a read-only supervisor page, P (and PS) only. */
			ASSERT_OK(guest_map(f.pt, gva, ps, ps, ps, 0));
			ASSERT_EQ_U64(leaf_of(&f, gva), ps | (ps > SZ_4K ? X_PS : 0) | X_P);
			ASSERT_OK(guest_unmap(f.pt, gva, ps));
		}
		fix_fini(&f);
	}
}

/* Table layout: the indexes the SDM defines for one gva, table by table. */
TEST(raw_table_walk)
{
	for_each_tmode(tm) {
		uint64_t gva = 0xdeadb000ULL, table, e, egpa, gpa = 0x3456000;
		struct fix f;

		/* Canonical upper-half addresses with distinct indexes per level. */
		if (tm->mode == GUEST_MODE_4LEVEL)
			gva = 0xffff923456789000ULL;
		else if (tm->mode == GUEST_MODE_5LEVEL)
			gva = 0xff5a923456789000ULL;
		fix_init(&f, tm, POOL_SIZE);
		ASSERT_OK(guest_map(f.pt, gva, gpa, SZ_4K, SZ_4K, GUEST_W));
		table = guest_pt_cr3(f.pt);
		switch (tm->mode) {
		case GUEST_MODE_32:	/* SDM 4.3: PDE index 31:22, PTE index 21:12 */
			egpa = table + ((gva >> 22) & 0x3ff) * 4;
			e = raw(&f, egpa, 4);
			ASSERT_EQ_U64(e & 0xfff, X_P | X_RW | X_US);
			egpa = (e & X_ADDR32) + ((gva >> 12) & 0x3ff) * 4;
			ASSERT_EQ_U64(raw(&f, egpa, 4), gpa | X_P | X_RW);
			break;
		case GUEST_MODE_PAE:	/* SDM 4.4: PDPTE 31:30, PDE 29:21, PTE 20:12 */
			egpa = table + ((gva >> 30) & 3) * 8;
			e = raw(&f, egpa, 8);
			ASSERT_EQ_U64(e & ~X_ADDR64, X_P);
			egpa = (e & X_ADDR64) + ((gva >> 21) & 0x1ff) * 8;
			e = raw(&f, egpa, 8);
			ASSERT_EQ_U64(e & ~X_ADDR64, X_P | X_RW | X_US);
			egpa = (e & X_ADDR64) + ((gva >> 12) & 0x1ff) * 8;
			ASSERT_EQ_U64(raw(&f, egpa, 8), gpa | X_P | X_RW);
			break;
		default:		/* SDM 4.5: 56:48, 47:39, 38:30, 29:21, 20:12 */
			for (int level = tm->levels; level > 1; level--) {
				egpa = table + ((gva >> (12 + 9 * (level - 1))) & 0x1ff) * 8;
				e = raw(&f, egpa, 8);
				ASSERT_EQ_U64(e & ~X_ADDR64, X_P | X_RW | X_US);
				table = e & X_ADDR64;
				ASSERT_TRUE(in_pool(&f, table));
			}
			egpa = table + ((gva >> 12) & 0x1ff) * 8;
			ASSERT_EQ_U64(raw(&f, egpa, 8), gpa | X_P | X_RW);
			break;
		}
		{
			uint64_t lgpa = 0;

			ASSERT_OK(guest_lookup(f.pt, gva, NULL, NULL, NULL, &lgpa));
			ASSERT_EQ_U64(lgpa, egpa);
		}
		fix_fini(&f);
	}
}

TEST(unmap)
{
	for_each_tmode(tm) {
		struct fix f;
		uint8_t *empty;
		uint64_t used0;

		fix_init(&f, tm, POOL_SIZE);
		empty = snap(&f);
		used0 = pool_used(&f);
		for (int si = 0; si < tm->nsizes; si++) {
			uint64_t ps = tm->sizes[si], gva = tm->hi_base + 4 * ps, gpa = 8 * ps;
			uint64_t used_mapped;
			uint8_t *s;

			ASSERT_OK(guest_map(f.pt, gva, gpa, 4 * ps, ps, GUEST_W));
			used_mapped = pool_used(&f);
			ASSERT_GE(used_mapped, used0);
			/* The middle two pages. */
			ASSERT_OK(guest_unmap(f.pt, gva + ps, 2 * ps));
			check_mapped(&f, gva, gpa, ps);
			check_unmapped(&f, gva + ps);
			check_unmapped(&f, gva + 2 * ps + ps - 1);
			check_mapped(&f, gva + 3 * ps, gpa + 3 * ps, ps);
			/* Holes are fine, and unmapping nothing changes nothing. */
			s = snap(&f);
			ASSERT_OK(guest_unmap(f.pt, gva + ps, 2 * ps));
			ASSERT_OK(guest_unmap(f.pt, gva + 64 * ps, ps));
			ASSERT_UNCHANGED(&f, s);
			if (ps > SZ_4K) {
				/* Part of a huge page: rejected, nothing written. */
				ASSERT_ERR(guest_unmap(f.pt, gva, SZ_4K), VMMU_EINVAL);
				ASSERT_ERR(guest_unmap(f.pt, gva + 3 * ps + SZ_4K, SZ_4K), VMMU_EINVAL);
				/* Even when the range covers whole pages before it. */
				ASSERT_ERR(guest_unmap(f.pt, gva - ps, ps + SZ_4K), VMMU_EINVAL);
				ASSERT_UNCHANGED(&f, s);
			}
			ASSERT_ERR(guest_unmap(f.pt, gva + 1, SZ_4K), VMMU_EINVAL);
			ASSERT_ERR(guest_unmap(f.pt, gva, SZ_4K + 1), VMMU_EINVAL);
			ASSERT_ERR(guest_unmap(f.pt, gva, 0), VMMU_EINVAL);
			ASSERT_ERR(guest_unmap(NULL, gva, SZ_4K), VMMU_EINVAL);
			if (tm->va_bits == 32)
				ASSERT_ERR(guest_unmap(f.pt, 4 * GB - SZ_4K, 2 * SZ_4K), VMMU_ERANGE);
			else
				ASSERT_ERR(guest_unmap(f.pt, 1ULL << (tm->va_bits - 1), SZ_4K), VMMU_ERANGE);
			ASSERT_UNCHANGED(&f, s);
			free(s);
			/* All of it: every table freed, the pool as created. */
			ASSERT_OK(guest_unmap(f.pt, gva, 4 * ps));
			check_unmapped(&f, gva);
			check_unmapped(&f, gva + 3 * ps);
			ASSERT_UNCHANGED(&f, empty);
			ASSERT_EQ(pool_used(&f), used0);
			/* Freed pages are reused: the same tables again. */
			ASSERT_OK(guest_map(f.pt, gva, gpa, 4 * ps, ps, GUEST_W));
			ASSERT_EQ(pool_used(&f), used_mapped);
			ASSERT_OK(guest_unmap(f.pt, gva - ps, 6 * ps));
			ASSERT_UNCHANGED(&f, empty);
		}
		/* Tables shared by two mappings survive until both go. */
		ASSERT_OK(guest_map(f.pt, 0x1000, 0x5000, SZ_4K, SZ_4K, 0));
		ASSERT_OK(guest_map(f.pt, 0x3000, 0x6000, SZ_4K, SZ_4K, 0));
		ASSERT_OK(guest_unmap(f.pt, 0x1000, SZ_4K));
		check_mapped(&f, 0x3000, 0x6000, SZ_4K);
		ASSERT_OK(guest_unmap(f.pt, 0, SZ_2M));
		ASSERT_UNCHANGED(&f, empty);
		free(empty);
		fix_fini(&f);
	}
}

TEST(protect)
{
	for_each_tmode(tm) {
		struct fix f;

		fix_init(&f, tm, POOL_SIZE);
		for (int si = 0; si < tm->nsizes; si++) {
			uint64_t ps = tm->sizes[si], gva = tm->hi_base + 2 * ps, gpa = 6 * ps;
			uint64_t before[2], nf = GUEST_U | GUEST_A | GUEST_D | GUEST_PCD;
			uint8_t *s;

			if (tm->mode != GUEST_MODE_32)
				nf |= GUEST_NX;
			if (tm->mode >= GUEST_MODE_4LEVEL)
				nf |= GUEST_PKEY(3);
			ASSERT_OK(guest_map(f.pt, gva, gpa, 2 * ps, ps, GUEST_W | GUEST_G));
			/* A bit outside the flags (AVL bit 9) survives protect. */
			before[0] = leaf_of(&f, gva) | (1ULL << 9);
			ASSERT_OK(guest_set_entry(f.pt, gva, ps == SZ_4K ? 1 : ps == SZ_1G ? 3 : 2, before[0]));
			before[1] = leaf_of(&f, gva + ps);
			ASSERT_OK(guest_protect(f.pt, gva, 2 * ps, nf));
			for (int p = 0; p < 2; p++) {
				uint64_t leaf = leaf_of(&f, gva + p * ps);

				ASSERT_EQ_U64(leaf, (before[p] & ~(X_RW | X_G)) | nf);
				check_mapped(&f, gva + p * ps + 5, gpa + p * ps + 5, ps);
			}
			/* Back to nothing: P, PS, frame (and AVL) remain. */
			ASSERT_OK(guest_protect(f.pt, gva + ps, ps, 0));
			ASSERT_EQ_U64(leaf_of(&f, gva + ps), (ps > SZ_4K ? X_PS : 0) | X_P | (gpa + ps));

			s = snap(&f);
			/* A hole in the range: ENOENT, even after mapped pages. */
			ASSERT_ERR(guest_protect(f.pt, gva, 3 * ps, GUEST_W), VMMU_ENOENT);
			ASSERT_ERR(guest_protect(f.pt, gva - ps, ps, GUEST_W), VMMU_ENOENT);
			if (ps > SZ_4K)
				ASSERT_ERR(guest_protect(f.pt, gva, ps - SZ_4K, GUEST_W), VMMU_EINVAL);
			ASSERT_ERR(guest_protect(f.pt, gva, ps, 1ULL << 7), VMMU_EINVAL);	/* PS */
			ASSERT_ERR(guest_protect(f.pt, gva, ps, X_P), VMMU_EINVAL);
			ASSERT_ERR(guest_protect(f.pt, gva, ps, 1ULL << 52), VMMU_EINVAL);
			if (tm->mode == GUEST_MODE_32)
				ASSERT_ERR(guest_protect(f.pt, gva, ps, GUEST_NX), VMMU_EINVAL);
			if (tm->mode <= GUEST_MODE_PAE)
				ASSERT_ERR(guest_protect(f.pt, gva, ps, GUEST_PKEY(1)), VMMU_EINVAL);
			ASSERT_ERR(guest_protect(f.pt, gva + 8, ps, 0), VMMU_EINVAL);
			ASSERT_ERR(guest_protect(f.pt, gva, 0, 0), VMMU_EINVAL);
			ASSERT_ERR(guest_protect(NULL, gva, ps, 0), VMMU_EINVAL);
			ASSERT_UNCHANGED(&f, s);
			free(s);
			ASSERT_OK(guest_unmap(f.pt, gva, 2 * ps));
		}
		fix_fini(&f);
	}
}

/* Every rejected guest_map() leaves every page-table byte as it was. */
TEST(map_bad_input_unchanged)
{
	for_each_tmode(tm) {
		bool is32 = tm->mode == GUEST_MODE_32, pae = tm->mode == GUEST_MODE_PAE, lm = !is32 && !pae;
		uint64_t big = is32 ? SZ_4M : SZ_2M;	/* the mode's huge page below 1G */
		uint64_t x4k = 5 * big + 3 * SZ_4K;	/* a 4K mapping */
		uint64_t ybig = 9 * big;		/* a huge mapping */
		uint64_t fva = 2 * SZ_1G;		/* nothing mapped in [2G, 3G) */
		struct fix f;
		uint8_t *s;

		fix_init(&f, tm, POOL_SIZE);
		ASSERT_OK(guest_map(f.pt, x4k, 0x100000, SZ_4K, SZ_4K, GUEST_W));
		ASSERT_OK(guest_map(f.pt, ybig, 2 * big, big, big, GUEST_W));
		if (lm)
			ASSERT_OK(guest_map(f.pt, 3 * SZ_1G, SZ_1G, SZ_1G, SZ_1G, GUEST_W));
		s = snap(&f);

		ASSERT_ERR(guest_map(NULL, 0, 0, SZ_4K, SZ_4K, 0), VMMU_EINVAL);
		/* Page sizes the mode lacks, and nonsense. */
		ASSERT_ERR(guest_map(f.pt, fva, 0, SZ_1G, SZ_1G, 0), lm ? 0 : VMMU_EINVAL);
		if (lm)
			ASSERT_OK(guest_unmap(f.pt, fva, SZ_1G));
		ASSERT_ERR(guest_map(f.pt, fva, 0, SZ_4M, SZ_4M, 0), is32 ? 0 : VMMU_EINVAL);
		if (is32)
			ASSERT_OK(guest_unmap(f.pt, fva, SZ_4M));
		ASSERT_ERR(guest_map(f.pt, fva, 0, SZ_2M, SZ_2M, 0), is32 ? VMMU_EINVAL : 0);
		if (!is32)
			ASSERT_OK(guest_unmap(f.pt, fva, SZ_2M));
		ASSERT_ERR(guest_map(f.pt, 0, 0, 0x3000, 0x3000, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, 0, 0, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, 512 * SZ_1G, 512 * SZ_1G, 0), VMMU_EINVAL);
		ASSERT_UNCHANGED(&f, s);
		/* Misaligned gva, gpa, size; empty. */
		ASSERT_ERR(guest_map(f.pt, 0x800, 0, SZ_4K, SZ_4K, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0x800, SZ_4K, SZ_4K, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, 0x1800, SZ_4K, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, 0, SZ_4K, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, SZ_4K, 0, big, big, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, SZ_4K, big, big, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, big + SZ_4K, big, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, big / 2, big, 0), VMMU_EINVAL);
		if (lm) {
			ASSERT_ERR(guest_map(f.pt, SZ_2M, 0, SZ_1G, SZ_1G, 0), VMMU_EINVAL);
			ASSERT_ERR(guest_map(f.pt, 0, SZ_2M, SZ_1G, SZ_1G, 0), VMMU_EINVAL);
		}
		/* Flags: unknown bits, P, PS, bits the mode lacks. */
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, X_P), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, X_PS), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, 1ULL << 9), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, 1ULL << 12), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, 1ULL << 58), VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, GUEST_NX), is32 ? VMMU_EINVAL : 0);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, GUEST_PKEY(15)), lm ? 0 : VMMU_EINVAL);
		ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_4K, SZ_4K, GUEST_PKEY(1)), lm ? 0 : VMMU_EINVAL);
		ASSERT_OK(guest_unmap(f.pt, 0, SZ_4K));
		ASSERT_UNCHANGED(&f, s);
		/* Linear addresses beyond the mode's width / not canonical. */
		if (tm->va_bits == 32) {
			ASSERT_ERR(guest_map(f.pt, 4 * GB, 0, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 4 * GB - SZ_4K, 0, 2 * SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 4 * GB - big, 0, 2 * big, big, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 0xffffffff00000000ULL, 0, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			/* The very top is fine. */
			ASSERT_OK(guest_map(f.pt, 4 * GB - SZ_4K, 0, SZ_4K, SZ_4K, 0));
			ASSERT_OK(guest_unmap(f.pt, 4 * GB - SZ_4K, SZ_4K));
		} else {
			uint64_t half = 1ULL << (tm->va_bits - 1);	/* first non-canonical */

			ASSERT_ERR(guest_map(f.pt, half, 0, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, half - SZ_4K, 0, 2 * SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, ~(half - 1) - SZ_4K, 0, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 1ULL << 60, 0, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			/* Both ends canonical, the hole in between. */
			ASSERT_ERR(guest_unmap(f.pt, half - SZ_4K, ~(half - 1) - (half - SZ_4K) + SZ_4K),
				   VMMU_ERANGE);
			/* Wrapping past 2^64. */
			ASSERT_ERR(guest_map(f.pt, ~0xfffULL, 0, 2 * SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			/* Both edges of the canonical halves are fine. */
			ASSERT_OK(guest_map(f.pt, half - SZ_4K, 0, SZ_4K, SZ_4K, 0));
			ASSERT_OK(guest_map(f.pt, ~(half - 1), 0, SZ_4K, SZ_4K, 0));
			ASSERT_OK(guest_map(f.pt, ~0xfffULL, 0, SZ_4K, SZ_4K, 0));
			check_mapped(&f, ~0ULL, 0xfff, SZ_4K);
			ASSERT_OK(guest_unmap(f.pt, half - SZ_4K, SZ_4K));
			ASSERT_OK(guest_unmap(f.pt, ~(half - 1), SZ_4K));
			ASSERT_OK(guest_unmap(f.pt, ~0xfffULL, SZ_4K));
		}
		ASSERT_UNCHANGED(&f, s);
		/* Frames beyond the entry's address field. */
		if (is32) {
			ASSERT_ERR(guest_map(f.pt, 0, 4 * GB, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 0, 4 * GB - SZ_4K, 2 * SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 0, 1ULL << 40, SZ_4M, SZ_4M, 0), VMMU_ERANGE);
		} else {
			ASSERT_ERR(guest_map(f.pt, 0, 1ULL << 52, SZ_4K, SZ_4K, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 0, (1ULL << 52) - SZ_2M, 2 * SZ_2M, SZ_2M, 0), VMMU_ERANGE);
			ASSERT_ERR(guest_map(f.pt, 0, ~(SZ_2M - 1), SZ_2M, SZ_2M, 0), VMMU_ERANGE);
		}
		ASSERT_UNCHANGED(&f, s);
		/* Overlaps with another page size: a 4K page inside a huge one, a
		 * huge page over a table of 4K pages, 1G over 2M and 2M in 1G. */
		ASSERT_ERR(guest_map(f.pt, ybig + SZ_4K, 0, SZ_4K, SZ_4K, 0), VMMU_EEXIST);
		ASSERT_ERR(guest_map(f.pt, x4k & ~(big - 1), 0, big, big, 0), VMMU_EEXIST);
		if (lm) {
			ASSERT_ERR(guest_map(f.pt, 0, 0, SZ_1G, SZ_1G, 0), VMMU_EEXIST);
			ASSERT_ERR(guest_map(f.pt, 3 * SZ_1G + SZ_2M, 0, SZ_2M, SZ_2M, 0), VMMU_EEXIST);
			ASSERT_ERR(guest_map(f.pt, 3 * SZ_1G + SZ_2M, 0, SZ_4K, SZ_4K, 0), VMMU_EEXIST);
			ASSERT_ERR(guest_map(f.pt, 2 * SZ_1G, 0, 2 * SZ_2M * 512, SZ_2M, 0), VMMU_EEXIST);
		}
		/* Validate first: the conflict is in the last page of a long range,
		 * after pages that would need new tables. */
		ASSERT_ERR(guest_map(f.pt, 0, 0, 10 * big, big, GUEST_W), VMMU_EEXIST);
		ASSERT_ERR(guest_map(f.pt, ybig - 40 * SZ_4K, 0, 41 * SZ_4K, SZ_4K, GUEST_W), VMMU_EEXIST);
		if (lm)
			ASSERT_ERR(guest_map(f.pt, 0, 0, 4 * SZ_1G, SZ_1G, GUEST_W), VMMU_EEXIST);
		ASSERT_UNCHANGED(&f, s);
		check_unmapped(&f, 0);
		check_unmapped(&f, ybig - 40 * SZ_4K);

		/* The same page size over an existing mapping replaces it. */
		ASSERT_OK(guest_map(f.pt, ybig, 4 * big, big, big, GUEST_U));
		check_mapped(&f, ybig + 5, 4 * big + 5, big);
		ASSERT_OK(guest_map(f.pt, x4k, 0x200000, SZ_4K, SZ_4K, 0));
		check_mapped(&f, x4k + 5, 0x200005, SZ_4K);
		free(s);
		fix_fini(&f);
	}
}

/*
 * A pool of 8 pages: the maps that fit succeed, the first that does not
 * returns ENOMEM with nothing written, and unmapping makes room again.
 */
TEST(pool_exhaustion)
{
	for_each_tmode(tm) {
		/* Fixed tables: root (+ PAE's 4 PDs); per 4K page at i * span a
		 * new page table, plus the shared upper tables of long mode. */
		uint64_t span = tm->mode == GUEST_MODE_32 ? SZ_4M : SZ_2M;
		int shared = tm->mode == GUEST_MODE_4LEVEL ? 2 : tm->mode == GUEST_MODE_5LEVEL ? 3 : 0;
		int fixed = tm->mode == GUEST_MODE_PAE ? 5 : 1;
		int fits = 8 - fixed - shared, i;
		uint64_t free_pages = 1;
		struct fix f;
		uint8_t *s;

		fix_init(&f, tm, 8 * SZ_4K);
		for (i = 0; i < fits; i++)
			ASSERT_OK(guest_map(f.pt, i * span, 0x100000 + i * SZ_4K, SZ_4K, SZ_4K, GUEST_W));
		guest_pt_pool_usage(f.pt, NULL, &free_pages);
		ASSERT_EQ(free_pages, 0);
		ASSERT_EQ(pool_used(&f), 8);
		s = snap(&f);
		ASSERT_ERR(guest_map(f.pt, i * span, 0x100000, SZ_4K, SZ_4K, GUEST_W), VMMU_ENOMEM);
		/* Several pages whose first ones fit into an existing table. */
		ASSERT_ERR(guest_map(f.pt, i * span - 2 * SZ_4K, 0, 4 * SZ_4K, SZ_4K, GUEST_W), VMMU_ENOMEM);
		ASSERT_ERR(guest_map(f.pt, tm->hi_base, 0, SZ_4K, SZ_4K, GUEST_W), VMMU_ENOMEM);
		ASSERT_UNCHANGED(&f, s);
		/* Pages into existing tables need nothing. */
		ASSERT_OK(guest_map(f.pt, SZ_4K, 0x100000, SZ_4K, SZ_4K, GUEST_W));
		for (int j = 0; j < fits; j++)
			check_mapped(&f, j * span + 0x10, 0x100010 + j * SZ_4K, SZ_4K);
		check_mapped(&f, SZ_4K, 0x100000, SZ_4K);
		/* Huge pages need no page table (PAE: not even a directory). */
		if (tm->mode == GUEST_MODE_PAE || tm->mode == GUEST_MODE_32)
			ASSERT_OK(guest_map(f.pt, 3 * SZ_1G, 0, 2 * span, span, 0));
		/* Free one page table, map again. */
		ASSERT_OK(guest_unmap(f.pt, 0, 2 * SZ_4K));
		ASSERT_EQ(pool_used(&f), 7);
		ASSERT_OK(guest_map(f.pt, i * span, 0x100000, SZ_4K, SZ_4K, GUEST_W));
		check_mapped(&f, i * span, 0x100000, SZ_4K);
		free(s);
		fix_fini(&f);
	}
}

/* The same operations, one table built by host stores, the other by a
 * vCPU's guest-physical writes: byte-identical pools. */
static void run_ops(struct fix *f, const struct tmode *tm)
{
	uint64_t fl = rights_flags(tm);

	for (int si = 0; si < tm->nsizes; si++) {
		uint64_t ps = tm->sizes[si];

		ASSERT_OK(guest_map(f->pt, (si + 1) * SZ_1G, 3 * ps, 5 * ps, ps, fl | GUEST_G));
		ASSERT_OK(guest_map(f->pt, tm->hi_base + 8 * ps, 0, 2 * ps, ps, GUEST_A));
	}
	ASSERT_OK(guest_protect(f->pt, SZ_1G + SZ_4K, 2 * SZ_4K, GUEST_U | GUEST_D));
	ASSERT_OK(guest_unmap(f->pt, SZ_1G + 3 * SZ_4K, SZ_4K));
	ASSERT_OK(guest_unmap(f->pt, tm->hi_base, 8 * tm->sizes[tm->nsizes - 1]));
	ASSERT_OK(guest_set_entry(f->pt, SZ_1G, 1, 0x777000 | X_P));
	ASSERT_OK(guest_map(f->pt, 0, 0, 16 * SZ_4K, SZ_4K, GUEST_W));
	ASSERT_OK(guest_unmap(f->pt, 0, 8 * SZ_4K));
	ASSERT_OK(guest_map(f->pt, 0x30000000, 0, 4 * SZ_4K, SZ_4K, GUEST_W));
}

TEST(vcpu_writer_matches_host_writer)
{
	for_each_tmode(tm) {
		struct fix host, guest;
		struct vmmu_vcpu_stats st;
		vmmu_vcpu *v = NULL;

		fix_init(&host, tm, POOL_SIZE);
		fix_init(&guest, tm, POOL_SIZE);
		ASSERT_OK(vmmu_vcpu_create(guest.vm, 0, &v));
		guest_pt_set_vcpu(guest.pt, v);
		run_ops(&host, tm);
		run_ops(&guest, tm);
		ASSERT_TRUE(memcmp(host.ram + POOL_GPA, guest.ram + POOL_GPA, POOL_SIZE) == 0);
		/* The writes really went through the vCPU. */
		vmmu_vcpu_get_stats(v, &st);
		ASSERT_GT(st.accesses, 20);
		/* Back to host stores: still the same. */
		guest_pt_set_vcpu(guest.pt, NULL);
		ASSERT_OK(guest_map(host.pt, 0x50000000, 0x1000, SZ_4K, SZ_4K, 0));
		ASSERT_OK(guest_map(guest.pt, 0x50000000, 0x1000, SZ_4K, SZ_4K, 0));
		ASSERT_TRUE(memcmp(host.ram + POOL_GPA, guest.ram + POOL_GPA, POOL_SIZE) == 0);
		{
			struct vmmu_vcpu_stats st2;

			vmmu_vcpu_get_stats(v, &st2);
			ASSERT_EQ(st2.accesses, st.accesses);
		}
		fix_fini(&host);
		fix_fini(&guest);
	}
}

TEST(set_get_entry)
{
	for_each_tmode(tm) {
		uint64_t gva = tm->hi_base + 0x5000, v = 0, egpa = 0, leaf_gpa = 0, leaf = 0;
		struct fix f;
		uint8_t *s;

		fix_init(&f, tm, POOL_SIZE);
		ASSERT_OK(guest_map(f.pt, gva, 0x8000, SZ_4K, SZ_4K, GUEST_W));
		ASSERT_OK(guest_lookup(f.pt, gva, NULL, NULL, &leaf, &leaf_gpa));
		ASSERT_OK(guest_get_entry(f.pt, gva, 1, &v, &egpa));
		ASSERT_EQ_U64(v, leaf);
		ASSERT_EQ_U64(egpa, leaf_gpa);
		/* Every level above is a present table pointer. */
		for (int level = 2; level <= tm->levels; level++) {
			struct ref r;

			ASSERT_OK(guest_get_entry(f.pt, gva, level, &v, &egpa));
			ASSERT_EQ(ref_walk(&f, gva, &r), 0);
			ASSERT_EQ_U64(v, r.entry[level]);
			ASSERT_EQ_U64(egpa, r.entry_gpa[level]);
		}
		ASSERT_OK(guest_get_entry(f.pt, gva, 1, &v, NULL));
		/* Poke: another frame, an ignored (AVL) bit; lookup follows. */
		ASSERT_OK(guest_set_entry(f.pt, gva, 1, 0x9000 | X_P | (1ULL << 11)));
		check_mapped(&f, gva + 1, 0x9001, SZ_4K);
		ASSERT_EQ_U64(raw(&f, leaf_gpa, tm->esize), 0x9000 | X_P | (1ULL << 11));
		/* A non-present entry with garbage: unmapped, and guest_map
		 * treats it as free. */
		ASSERT_OK(guest_set_entry(f.pt, gva, 1, 0xdead000ULL | X_RW));
		check_unmapped(&f, gva);
		ASSERT_OK(guest_map(f.pt, gva, 0xa000, SZ_4K, SZ_4K, 0));
		check_mapped(&f, gva, 0xa000, SZ_4K);

		s = snap(&f);
		ASSERT_ERR(guest_get_entry(f.pt, gva, 0, &v, NULL), VMMU_EINVAL);
		ASSERT_ERR(guest_get_entry(f.pt, gva, tm->levels + 1, &v, NULL), VMMU_EINVAL);
		ASSERT_ERR(guest_get_entry(f.pt, gva, 1, NULL, NULL), VMMU_EINVAL);
		ASSERT_ERR(guest_get_entry(NULL, gva, 1, &v, NULL), VMMU_EINVAL);
		ASSERT_ERR(guest_set_entry(f.pt, gva, 0, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_set_entry(f.pt, gva, 6, 0), VMMU_EINVAL);
		ASSERT_ERR(guest_set_entry(NULL, gva, 1, 0), VMMU_EINVAL);
		if (tm->mode == GUEST_MODE_32)
			ASSERT_ERR(guest_set_entry(f.pt, gva, 1, 1ULL << 32), VMMU_EINVAL);
		/* No table below an unmapped top-level entry. */
		ASSERT_ERR(guest_set_entry(f.pt, gva ^ GB, 1, X_P), VMMU_ENOENT);
		ASSERT_ERR(guest_get_entry(f.pt, gva ^ GB, 1, &v, NULL), VMMU_ENOENT);
		if (tm->va_bits == 32)
			ASSERT_ERR(guest_get_entry(f.pt, 1ULL << 32, 1, &v, NULL), VMMU_ERANGE);
		else
			ASSERT_ERR(guest_get_entry(f.pt, 1ULL << (tm->va_bits - 1), 1, &v, NULL), VMMU_ERANGE);
		ASSERT_UNCHANGED(&f, s);
		/* The top level always exists. */
		ASSERT_OK(guest_get_entry(f.pt, gva ^ (2 * GB), tm->levels, &v, NULL));
		free(s);

		/* PS where the mode has no huge pages (PML4E/PML5E, PAE PDPTE;
		 * reserved there, SDM 4.4.1, 4.5.4) is not a leaf for lookup. */
		if (tm->levels > 2) {
			uint64_t top = 0;

			ASSERT_OK(guest_get_entry(f.pt, gva, tm->levels, &top, NULL));
			ASSERT_OK(guest_set_entry(f.pt, gva, tm->levels, top | X_PS));
			ASSERT_OK(guest_lookup(f.pt, gva + 7, &v, NULL, NULL, NULL));
			ASSERT_EQ_U64(v, 0xa007);
			ASSERT_OK(guest_get_entry(f.pt, gva, 1, &v, NULL));
			ASSERT_OK(guest_set_entry(f.pt, gva, tm->levels, top));
		}

		/* A huge leaf poked at level 2 hides level 1; its PAT bit (12)
		 * is not part of the frame (SDM tables 4-4, 4-17). */
		{
			uint64_t big = tm->mode == GUEST_MODE_32 ? SZ_4M : SZ_2M;

			ASSERT_OK(guest_set_entry(f.pt, gva, 2, big | X_P | X_PS | (1ULL << 12)));
			check_mapped(&f, gva, big + (gva & (big - 1)), big);
			ASSERT_ERR(guest_get_entry(f.pt, gva, 1, &v, NULL), VMMU_ENOENT);
			/* The page table it replaced is leaked, not freed: ours to
			 * unmap now is the poked leaf. */
			ASSERT_OK(guest_unmap(f.pt, gva & ~(big - 1), big));
			check_unmapped(&f, gva);
		}
		fix_fini(&f);
	}
}

/*
 * guest_pt_state() is a state vmmu_vcpu_set_state() accepts, and a vCPU then
 * translates through these tables: writes land at the mapped gpa, a
 * read-only page faults.  Then the same with the tables written by the vCPU.
 */
TEST(vcpu_runs_on_these_tables)
{
	for_each_tmode(tm) {
		uint64_t gva = tm->hi_base + 0x345000, ro = gva + 0x10000, data = 40 * MB;
		uint64_t val = 0x1122334455667788ULL, back = 0;
		struct vmmu_cpu_state st, got;
		struct vmmu_exit ex;
		vmmu_vcpu *v = NULL;
		struct fix f;

		fix_init(&f, tm, POOL_SIZE);
		ASSERT_OK(vmmu_vcpu_create(f.vm, 0, &v));
		ASSERT_OK(guest_map(f.pt, gva, data, SZ_4K, SZ_4K, GUEST_W));
		ASSERT_OK(guest_map(f.pt, ro, data, SZ_4K, SZ_4K, 0));
		guest_pt_state(f.pt, &st, 0);
		ASSERT_OK(vmmu_vcpu_set_state(v, &st));
		ASSERT_OK(vmmu_vcpu_get_state(v, &got));
		if (tm->mode == GUEST_MODE_PAE)
			for (int i = 0; i < 4; i++)
				ASSERT_EQ_U64(got.pdptrs[i], raw(&f, st.cr3 + 8 * (uint64_t)i, 8));

		memset(&ex, 0, sizeof(ex));
		ASSERT_OK(vmmu_vcpu_access(v, gva + 0x18, &val, 8, VMMU_ACCESS_WRITE, &ex));
		memcpy(&back, f.ram + data + 0x18, 8);
		ASSERT_EQ_U64(back, val);
		back = 0;
		ASSERT_OK(vmmu_vcpu_access(v, ro + 0x18, &back, 8, VMMU_ACCESS_READ, &ex));
		ASSERT_EQ_U64(back, val);
		ASSERT_EQ(vmmu_vcpu_access(v, ro + 0x18, &val, 8, VMMU_ACCESS_WRITE, &ex), VMMU_EXIT);
		ASSERT_EQ(ex.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_EQ(ex.u.guest_fault.vector, 14);
		ASSERT_EQ(ex.u.guest_fault.error_code & (PFERR_P | PFERR_W), PFERR_P | PFERR_W);
		ASSERT_EQ_U64(ex.u.guest_fault.addr, ro + 0x18);

		/* Now the vCPU writes its own tables (guest-physical writes
		 * bypass its paging) and uses the new mapping after INVLPG. */
		guest_pt_set_vcpu(f.pt, v);
		ASSERT_OK(guest_protect(f.pt, ro, SZ_4K, GUEST_W));
		vmmu_vcpu_invlpg(v, ro);
		ASSERT_OK(guest_map(f.pt, gva + 4 * MB, data + SZ_4K, SZ_4K, SZ_4K, GUEST_W));
		ASSERT_OK(vmmu_vcpu_access(v, ro + 0x20, &val, 8, VMMU_ACCESS_WRITE, &ex));
		ASSERT_OK(vmmu_vcpu_access(v, gva + 4 * MB + 8, &val, 8, VMMU_ACCESS_WRITE, &ex));
		memcpy(&back, f.ram + data + SZ_4K + 8, 8);
		ASSERT_EQ_U64(back, val);
		fix_fini(&f);
	}
}

/* ---- random operations against a model ---------------------------------- */

struct mpage {
	uint64_t gva, gpa, size, flags;
};

struct model {
	struct mpage *p;
	size_t n, cap;
};

static void model_add(struct model *m, uint64_t gva, uint64_t gpa, uint64_t size, uint64_t flags)
{
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 256;
		m->p = realloc(m->p, m->cap * sizeof(*m->p));
		ASSERT_TRUE(m->p != NULL);
	}
	m->p[m->n++] = (struct mpage){ gva, gpa, size, flags };
}

static void model_del(struct model *m, size_t i)
{
	m->p[i] = m->p[--m->n];
}

static bool overlaps(uint64_t a, uint64_t asz, uint64_t b, uint64_t bsz)
{
	return a <= b + (bsz - 1) && b <= a + (asz - 1);
}

static uint64_t random_flags(const struct tmode *tm)
{
	uint64_t fl = test_rng_next() & (GUEST_W | GUEST_U | GUEST_PWT | GUEST_PCD | GUEST_A | GUEST_D | GUEST_G);

	if (tm->mode != GUEST_MODE_32 && (test_rng_next() & 1))
		fl |= GUEST_NX;
	if (tm->mode >= GUEST_MODE_4LEVEL)
		fl |= GUEST_PKEY(test_rng_next());
	return fl;
}

/* A page-size-aligned gva in one of two 4 GiB windows, so sizes collide. */
static uint64_t random_gva(const struct tmode *tm, uint64_t ps, uint64_t npages)
{
	uint64_t base = (test_rng_next() & 1) ? tm->hi_base : 0;
	uint64_t window = ps == SZ_1G ? 4 * GB : 256 * MB;

	if (tm->va_bits == 32 && base)
		window = 256 * MB;
	return base + rng_below(window / ps - npages + 1) * ps;
}

static uint64_t random_gpa(const struct tmode *tm, uint64_t ps, uint64_t npages)
{
	uint64_t limit = tm->mode != GUEST_MODE_32 ? 1ULL << 46 : ps == SZ_4M ? 1ULL << 40 : 1ULL << 32;

	return rng_below(limit / ps - npages) * ps;
}

static void model_check(struct fix *f, struct model *m)
{
	for (size_t i = 0; i < m->n; i++) {
		struct mpage *p = &m->p[i];
		uint64_t off = rng_below(p->size);

		check_mapped(f, p->gva + off, p->gpa + off, p->size);
		ASSERT_EQ_U64(leaf_of(f, p->gva) & GUEST_FLAGS_MASK, p->flags);
	}
}

TEST(random_ops_vs_model)
{
	test_rng_seed(42);
	for_each_tmode(tm) {
		struct model m = { 0 };
		struct fix f;
		uint8_t *empty;
		uint64_t used0;
		int outcomes[5] = { 0 };	/* map ok/EEXIST, unmap ok/EINVAL, protect */

		fix_init(&f, tm, POOL_SIZE);
		empty = snap(&f);
		used0 = pool_used(&f);
		for (int op = 0; op < 1500; op++) {
			uint64_t ps = tm->sizes[rng_below((uint64_t)tm->nsizes)];
			uint64_t n = 1 + rng_below(3), gva = random_gva(tm, ps, n);
			int want = 0;

			switch (rng_below(4)) {
			case 0:
			case 1: {	/* map */
				uint64_t gpa = random_gpa(tm, ps, n), fl = random_flags(tm);

				for (size_t i = 0; i < m.n; i++)
					if (m.p[i].size != ps && overlaps(gva, n * ps, m.p[i].gva, m.p[i].size))
						want = VMMU_EEXIST;
				ASSERT_ERR(guest_map(f.pt, gva, gpa, n * ps, ps, fl), want);
				outcomes[want ? 1 : 0]++;
				if (want)
					break;
				for (size_t i = 0; i < m.n;)
					if (overlaps(gva, n * ps, m.p[i].gva, m.p[i].size))
						model_del(&m, i);
					else
						i++;
				for (uint64_t p = 0; p < n; p++)
					model_add(&m, gva + p * ps, gpa + p * ps, ps, fl);
				break;
			}
			case 2: {	/* unmap, at any 4K granularity */
				uint64_t len = n * ps;

				if (test_rng_next() & 1) {
					len = (1 + rng_below(64)) * SZ_4K;
					gva += rng_below(ps / SZ_4K) * SZ_4K;
				}
				for (size_t i = 0; i < m.n; i++) {
					struct mpage *p = &m.p[i];

					if (overlaps(gva, len, p->gva, p->size) &&
					    (p->gva < gva || p->gva + p->size - 1 > gva + len - 1))
						want = VMMU_EINVAL;
				}
				ASSERT_ERR(guest_unmap(f.pt, gva, len), want);
				outcomes[want ? 3 : 2]++;
				if (want)
					break;
				for (size_t i = 0; i < m.n;)
					if (overlaps(gva, len, m.p[i].gva, m.p[i].size))
						model_del(&m, i);
					else
						i++;
				break;
			}
			case 3: {	/* protect an existing page */
				uint64_t fl = random_flags(tm);
				struct mpage *p;

				if (!m.n)
					break;
				p = &m.p[rng_below(m.n)];
				ASSERT_OK(guest_protect(f.pt, p->gva, p->size, fl));
				p->flags = fl;
				outcomes[4]++;
				break;
			}
			}
			if (op % 100 == 99) {
				model_check(&f, &m);
				/* And places nothing maps. */
				for (int k = 0; k < 50; k++) {
					uint64_t g = random_gva(tm, SZ_4K, 1) + rng_below(SZ_4K);
					bool mapped = false;

					for (size_t i = 0; i < m.n; i++)
						mapped |= overlaps(g, 1, m.p[i].gva, m.p[i].size);
					if (!mapped)
						check_unmapped(&f, g);
				}
			}
		}
		model_check(&f, &m);
		/* Every outcome happened (the windows make sizes collide). */
		for (int k = 0; k < 5; k++)
			ASSERT_GT(outcomes[k], 20);
		fprintf(stderr, "  %s: map %d/%d unmap %d/%d protect %d live %zu\n", tm->name, outcomes[0],
			outcomes[1], outcomes[2], outcomes[3], outcomes[4], m.n);
		ASSERT_GT(m.n, 20);
		/* Unmapping everything frees every table. */
		while (m.n) {
			ASSERT_OK(guest_unmap(f.pt, m.p[0].gva, m.p[0].size));
			model_del(&m, 0);
		}
		ASSERT_UNCHANGED(&f, empty);
		ASSERT_EQ(pool_used(&f), used0);
		free(m.p);
		free(empty);
		fix_fini(&f);
	}
}

/* ---- the walker reads these tables as guest_lookup() does ----------------- */

static int mem_read(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val)
{
	void *hva;

	if (vmmu_gpa_to_hva(ctx, gpa, &hva))
		return VMMU_EFAULT;
	if (size == 4)
		*val = atomic_load((_Atomic uint32_t *)hva);
	else
		*val = atomic_load((_Atomic uint64_t *)hva);
	return 0;
}

static int mem_cmpxchg(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	void *hva;

	if (vmmu_gpa_to_hva(ctx, gpa, &hva))
		return VMMU_EFAULT;
	if (size == 4) {
		uint32_t o = (uint32_t)old;

		return atomic_compare_exchange_strong((_Atomic uint32_t *)hva, &o, (uint32_t)new_val);
	}
	return atomic_compare_exchange_strong((_Atomic uint64_t *)hva, &old, new_val);
}

TEST(walker_agrees_with_lookup)
{
	static const enum walk_mode wmodes[] = {
		[GUEST_MODE_32] = WALK_MODE_32,
		[GUEST_MODE_PAE] = WALK_MODE_PAE,
		[GUEST_MODE_4LEVEL] = WALK_MODE_4LEVEL,
		[GUEST_MODE_5LEVEL] = WALK_MODE_5LEVEL,
	};

	test_rng_seed(7);
	for_each_tmode(tm) {
		struct walk_mem_ops ops;
		struct walk_cpu cpu;
		struct fix f;
		int hits = 0;

		fix_init(&f, tm, POOL_SIZE);
		for (int i = 0; i < 200; i++) {
			uint64_t ps = tm->sizes[rng_below((uint64_t)tm->nsizes)];

			(void)guest_map(f.pt, random_gva(tm, ps, 1), random_gpa(tm, ps, 1), ps, ps,
					random_flags(tm) & ~GUEST_PKEY_MASK);
		}
		/* One PKEY-tagged page in long mode, for the pkey field. */
		if (tm->mode >= GUEST_MODE_4LEVEL)
			ASSERT_OK(guest_map(f.pt, 5 * GB, 0, SZ_4K, SZ_4K, GUEST_PKEY(9) | GUEST_U));

		memset(&cpu, 0, sizeof(cpu));
		cpu.mode = wmodes[tm->mode];
		cpu.root = guest_pt_cr3(f.pt);
		cpu.maxphyaddr = 52;
		cpu.wp = true;
		cpu.pse = true;
		cpu.nxe = tm->mode != GUEST_MODE_32;
		if (tm->mode == GUEST_MODE_PAE)
			for (int i = 0; i < 4; i++)
				cpu.pdptes[i] = raw(&f, cpu.root + 8 * (uint64_t)i, 8);
		ops.read = mem_read;
		ops.cmpxchg = mem_cmpxchg;
		ops.ctx = f.vm;

		for (int i = 0; i < 4000; i++) {
			uint64_t gva = random_gva(tm, SZ_4K, 1) + rng_below(SZ_4K);
			uint64_t gpa = 0, ps = 0, leaf = 0;
			struct walk_result res;
			int lr, wr;

			if (i == 0 && tm->mode >= GUEST_MODE_4LEVEL)
				gva = 5 * GB + 0x10;
			lr = guest_lookup(f.pt, gva, &gpa, &ps, &leaf, NULL);
			wr = walk_gva(&cpu, &ops, gva, 0, &res);
			if (lr == VMMU_ENOENT) {
				ASSERT_EQ(wr, WALK_FAULT);
				ASSERT_EQ(res.vector, WALK_VECTOR_PF);
				ASSERT_EQ(res.error_code & PFERR_P, 0);
				continue;
			}
			ASSERT_OK(lr);
			ASSERT_EQ(wr, WALK_OK);
			ASSERT_EQ_U64(res.gpa, gpa);
			ASSERT_EQ_U64(res.page_size, ps);
			ASSERT_EQ(!!(res.access & WALK_ACC_W), !!(leaf & GUEST_W));
			ASSERT_EQ(!!(res.access & WALK_ACC_U), !!(leaf & GUEST_U));
			ASSERT_EQ(!!(res.access & WALK_ACC_X), !(leaf & GUEST_NX));
			ASSERT_EQ(res.global, !!(leaf & GUEST_G));
			if (tm->mode >= GUEST_MODE_4LEVEL)
				ASSERT_EQ(res.pkey, (leaf >> GUEST_PKEY_SHIFT) & 0xf);
			/* The walk set A in the leaf. */
			ASSERT_TRUE(leaf_of(&f, gva) & GUEST_A);
			hits++;
		}
		ASSERT_GT(hits, 100);
		fix_fini(&f);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
