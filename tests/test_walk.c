/* SPDX-License-Identifier: MIT */
/*
 * The guest page-table walker (src/walk.[ch]) against the reference model of
 * walk_ref.[ch], which states the SDM rules (Vol. 3A 4.6-4.8; Vol. 3C 29.3)
 * as plainly as possible.
 *
 * Guest page tables live in a flat 8 MiB "guest-physical" array reached only
 * through walk_mem_ops, whose read/cmpxchg also police the walker: entry-sized
 * and aligned accesses only, and a cmpxchg may only add A/D bits.  A tiny
 * builder lays out the tables for one gva in each mode.
 *
 *  - walk_exhaustive: every combination of PDE/PTE P, W, U, XD, PS, reserved
 *    bit, protection key, CR0.WP, CR4.SMEP/SMAP/PKE, EFLAGS.AC, PKRU AD/WD,
 *    CPL 0/3, EFER.NXE and access type, in every paging mode: outcome, error
 *    code, fault address, translation and the A/D bits left behind.
 *  - walk_permission_fault_matches_model: the TLB-hit check, exhaustively.
 *  - walk_fuzz_all_levels: random entries at every level (1-GByte pages,
 *    rights and A/D above the PDE, random MAXPHYADDR and gva).
 *  - walk_reserved_bits / walk_ept_reserved_bits: every bit of every entry at
 *    every level for MAXPHYADDR 36/40/46/52.
 *  - non-canonical addresses, A/D races, translations, paging off, aborts,
 *    EPT permissions, misconfigurations and memory types.
 */

#include "harness.h"
#include "mmu/walk.h"
#include "walk_ref.h"
#include "walk_test.h"

#define GMEM_BYTES (8ULL << 20)
#define GMEM_FIRST_TABLE 0x23000ULL	/* tables start at an unremarkable address */
#define PAGE_BYTES 4096ULL

/* Legacy entry bits beyond walk_test.h's (SDM Vol. 3A 4.3-4.5). */
#define E_PAT4K (1ULL << 7)		/* E_PS's bit in a 4-KByte PTE */
#define E_PAT_HUGE (1ULL << 12)

/* EPT entry bits (SDM Vol. 3C 29.3.2). */
#define EPT_R (1ULL << 0)
#define EPT_W (1ULL << 1)
#define EPT_X (1ULL << 2)
#define EPT_MT_SHIFT 3
#define EPT_MT_WB 6ULL
#define EPT_IPAT (1ULL << 6)
#define EPT_PS (1ULL << 7)
#define EPT_A (1ULL << 8)
#define EPT_D (1ULL << 9)
#define EPT_IGN (1ULL << 11)
#define EPT_AD (EPT_A | EPT_D)

#define CR3_PWT (1ULL << 3)
#define CR3_PCD (1ULL << 4)

#define MAX_REPORTS 20

static uint64_t rng_below(uint64_t n)
{
	return test_rng_next() % n;
}

/* ---- mismatch reports ------------------------------------------------------ */

static unsigned long nr_mismatch;

/* Counts a mismatch; true when it is among the first MAX_REPORTS (print it). */
static bool mismatch(void)
{
	return ++nr_mismatch <= MAX_REPORTS;
}

/* ---- guest-physical memory --------------------------------------------------- */

enum race_kind {
	RACE_NONE,
	RACE_FLIP_BIT,	/* flip race_bit of the entry being exchanged: that cmpxchg fails */
	RACE_SET_BITS,	/* OR race_val into the entry being exchanged (another CPU's A/D) */
	RACE_STORE,	/* store race_val at race_gpa (another CPU rewrites an entry) */
};

struct gmem {
	uint8_t *bytes;
	uint64_t next;			/* bump allocator: next free page */
	unsigned int esize;		/* the entry size the walker must use */
	uint64_t ad_bits;		/* the only bits a cmpxchg may add */
	unsigned long reads, cmpxchgs, cmpxchg_fails;
	unsigned long bad_ops;		/* accesses the walker must never make */
	char bad_what[160];
	uint64_t abort_read_gpa, abort_cmpxchg_gpa;
	int abort_ret;
	enum race_kind race;
	int race_n;			/* interfere with this many more cmpxchgs */
	unsigned int race_bit;
	uint64_t race_gpa, race_val;
};

static struct gmem gm;

static uint64_t gm_load(uint64_t gpa, unsigned int size)
{
	uint32_t v32;
	uint64_t v64;

	if (size == 4) {
		memcpy(&v32, gm.bytes + gpa, 4);
		return v32;
	}
	memcpy(&v64, gm.bytes + gpa, 8);
	return v64;
}

static void gm_store(uint64_t gpa, unsigned int size, uint64_t val)
{
	uint32_t v32 = (uint32_t)val;

	if (size == 4)
		memcpy(gm.bytes + gpa, &v32, 4);
	else
		memcpy(gm.bytes + gpa, &val, 8);
}

static void gm_bad(const char *what, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	if (gm.bad_ops++ == 0)
		snprintf(gm.bad_what, sizeof(gm.bad_what), "%s gpa %#" PRIx64 " size %u old %#" PRIx64 " new %#" PRIx64,
			 what, gpa, size, old, new_val);
}

static bool gm_access_ok(const char *what, uint64_t gpa, unsigned int size)
{
	if (size != gm.esize || (gpa & (size - 1)) || gpa >= GMEM_BYTES || GMEM_BYTES - gpa < size) {
		gm_bad(what, gpa, size, 0, 0);
		return false;
	}
	return true;
}

static int gm_read(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val)
{
	(void)ctx;
	gm.reads++;
	*val = 0;
	if (gpa == gm.abort_read_gpa)
		return gm.abort_ret;
	if (!gm_access_ok("read", gpa, size))
		return -99;
	*val = gm_load(gpa, size);
	return 0;
}

static int gm_cmpxchg(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	(void)ctx;
	gm.cmpxchgs++;
	if (gpa == gm.abort_cmpxchg_gpa)
		return gm.abort_ret;
	if (!gm_access_ok("cmpxchg", gpa, size))
		return -99;
	/* The walker may only set A/D (SDM 4.8; 3C 29.3.5), never clear or
	 * change anything else. */
	if (((new_val & ~old) & ~gm.ad_bits) || (old & ~new_val) || (size == 4 && (old >> 32 || new_val >> 32)))
		gm_bad("cmpxchg changing more than A/D", gpa, size, old, new_val);
	if (gm.race != RACE_NONE && gm.race_n > 0) {
		/* The other CPU's write lands between the walker's read and its
		 * locked compare. */
		gm.race_n--;
		if (gm.race == RACE_FLIP_BIT)
			gm_store(gpa, size, gm_load(gpa, size) ^ (1ULL << gm.race_bit));
		else if (gm.race == RACE_SET_BITS)
			gm_store(gpa, size, gm_load(gpa, size) | gm.race_val);
		else
			gm_store(gm.race_gpa, size, gm.race_val);
	}
	if (gm_load(gpa, size) != old) {
		gm.cmpxchg_fails++;
		return 0;
	}
	gm_store(gpa, size, new_val);
	return 1;
}

static const struct walk_mem_ops gm_ops = { gm_read, gm_cmpxchg, NULL };

/* Back to an empty memory: zero the pages handed out, clear hooks and counters. */
static void gm_reset(unsigned int esize, uint64_t ad_bits)
{
	if (!gm.bytes) {
		gm.bytes = calloc(1, GMEM_BYTES);
		ASSERT_TRUE(gm.bytes != NULL);
		gm.next = GMEM_FIRST_TABLE;
	}
	memset(gm.bytes + GMEM_FIRST_TABLE, 0, gm.next - GMEM_FIRST_TABLE);
	gm.next = GMEM_FIRST_TABLE;
	gm.esize = esize;
	gm.ad_bits = ad_bits;
	gm.reads = gm.cmpxchgs = gm.cmpxchg_fails = gm.bad_ops = 0;
	gm.bad_what[0] = 0;
	gm.abort_read_gpa = gm.abort_cmpxchg_gpa = UINT64_MAX;
	gm.abort_ret = 0;
	gm.race = RACE_NONE;
	gm.race_n = 0;
}

static uint64_t gm_alloc_page(void)
{
	uint64_t gpa = gm.next;

	ASSERT_TRUE(gpa + PAGE_BYTES <= GMEM_BYTES);
	gm.next += PAGE_BYTES;
	return gpa;
}

/* ---- modes and page-table paths ---------------------------------------------- */

static const char *mode_name(enum walk_mode m)
{
	switch (m) {
	case WALK_MODE_NONE:
		return "paging-off";
	case WALK_MODE_32:
		return "32-bit";
	case WALK_MODE_PAE:
		return "PAE";
	case WALK_MODE_4LEVEL:
		return "4-level";
	case WALK_MODE_5LEVEL:
		return "5-level";
	case WALK_MODE_EPT4:
		return "EPT4";
	case WALK_MODE_EPT5:
		return "EPT5";
	}
	return "?";
}

static bool mode_is_ept(enum walk_mode m)
{
	return m == WALK_MODE_EPT4 || m == WALK_MODE_EPT5;
}

static int mode_top(enum walk_mode m)
{
	switch (m) {
	case WALK_MODE_32:
		return 2;
	case WALK_MODE_PAE:
		return 3;
	case WALK_MODE_4LEVEL:
	case WALK_MODE_EPT4:
		return 4;
	case WALK_MODE_5LEVEL:
	case WALK_MODE_EPT5:
		return 5;
	case WALK_MODE_NONE:
		break;
	}
	return 0;
}

static enum ref_paging mode_paging(enum walk_mode m)
{
	switch (m) {
	case WALK_MODE_PAE:
		return REF_PAGING_PAE;
	case WALK_MODE_4LEVEL:
		return REF_PAGING_4LEVEL;
	case WALK_MODE_5LEVEL:
		return REF_PAGING_5LEVEL;
	default:
		return REF_PAGING_32;
	}
}

static bool mode_has_pkeys(enum walk_mode m)
{
	return m == WALK_MODE_4LEVEL || m == WALK_MODE_5LEVEL;
}

/* One gva's path through freshly built tables: a table per level. */
struct path {
	enum walk_mode mode;
	int top;
	unsigned int esize;
	uint64_t gva;
	uint64_t table[WALK_MAX_LEVELS + 1];	/* table base per level */
	uint64_t slot[WALK_MAX_LEVELS + 1];	/* gpa of the entry used per level */
	struct walk_cpu cpu;			/* root, PDPTEs and maxphyaddr filled in */
};

static unsigned int path_index(const struct path *p, int level)
{
	if (p->mode == WALK_MODE_32)
		return (unsigned int)(p->gva >> (12 + 10 * (level - 1))) & 1023;
	if (p->mode == WALK_MODE_PAE && level == 3)
		return (unsigned int)(p->gva >> 30) & 3;
	return (unsigned int)(p->gva >> (12 + 9 * (level - 1))) & 511;
}

static void path_build(struct path *p, enum walk_mode mode, uint64_t gva, unsigned int maxphyaddr)
{
	bool ept = mode_is_ept(mode);

	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->top = mode_top(mode);
	p->esize = mode == WALK_MODE_32 ? 4 : 8;
	p->gva = gva;
	gm_reset(p->esize, ept ? EPT_AD : E_AD);
	for (int level = p->top; level >= 1; level--) {
		p->table[level] = gm_alloc_page();
		p->slot[level] = p->table[level] + path_index(p, level) * p->esize;
	}
	p->cpu.mode = mode;
	p->cpu.maxphyaddr = maxphyaddr;
	if (ept)	/* EPTP: WB, page-walk length - 1 in 5:3; bit 6 by set_ept_ad() */
		p->cpu.root = p->table[p->top] | EPT_MT_WB | ((uint64_t)(p->top - 1) << 3);
	else if (mode == WALK_MODE_PAE)
		p->cpu.root = p->table[3];	/* 32-byte aligned PDPT */
	else	/* CR3 with PWT/PCD: the walker must mask them off */
		p->cpu.root = p->table[p->top] | CR3_PWT | CR3_PCD;
}

static void set_ept_ad(struct path *p, bool ad)
{
	p->cpu.ept_ad = ad;
	p->cpu.root = (p->cpu.root & ~(1ULL << 6)) | (ad ? 1ULL << 6 : 0);
}

/*
 * PAE's level 3 is the PDPTE registers (SDM 4.4.1): loaded at MOV to CR3, so
 * only cpu.pdptes is set; the PDPT in memory stays zero (not present) and a
 * walker reading it instead would fault.
 */
static void path_set(struct path *p, int level, uint64_t val)
{
	if (p->mode == WALK_MODE_PAE && level == 3)
		p->cpu.pdptes[path_index(p, 3)] = val;
	else
		gm_store(p->slot[level], p->esize, val);
}

static uint64_t path_get(const struct path *p, int level)
{
	if (p->mode == WALK_MODE_PAE && level == 3)
		return p->cpu.pdptes[path_index(p, 3)];
	return gm_load(p->slot[level], p->esize);
}

/* A gva with the given table index at each level (root first) and offset. */
static uint64_t gva_of(enum walk_mode mode, const unsigned int *idx, uint64_t off)
{
	uint64_t gva = off;
	int top = mode_top(mode);

	for (int level = top; level >= 1; level--) {
		unsigned int i = idx[top - level];

		if (mode == WALK_MODE_32)
			gva |= (uint64_t)i << (12 + 10 * (level - 1));
		else if (mode == WALK_MODE_PAE && level == 3)
			gva |= (uint64_t)i << 30;
		else
			gva |= (uint64_t)i << (12 + 9 * (level - 1));
	}
	if (mode == WALK_MODE_4LEVEL || mode == WALK_MODE_EPT4)
		return mode == WALK_MODE_4LEVEL ? sign_extend(gva, 48) : gva;
	if (mode == WALK_MODE_5LEVEL)
		return sign_extend(gva, 57);
	return gva;
}

/* Non-zero, distinct indices at every level, so a walker using the wrong
 * bits of the address lands on an empty (not-present) slot. */
static uint64_t test_gva(enum walk_mode mode)
{
	static const unsigned int i32[] = { 0x2a5, 0x3c1 };
	static const unsigned int ipae[] = { 2, 0x1b3, 0x0e7 };
	/* PML4 index >= 256: a high-half (sign-extended) address. */
	static const unsigned int i4[] = { 0x1a3, 0x0c5, 0x013, 0x1f7 };
	static const unsigned int i5[] = { 0x0d1, 0x1a3, 0x0c5, 0x013, 0x1f7 };

	switch (mode) {
	case WALK_MODE_32:
		return gva_of(mode, i32, 0xabc);
	case WALK_MODE_PAE:
		return gva_of(mode, ipae, 0x5a4);
	case WALK_MODE_4LEVEL:
	case WALK_MODE_EPT4:
		return gva_of(mode, i4, 0xabc);
	case WALK_MODE_5LEVEL:
	case WALK_MODE_EPT5:
		return gva_of(mode, i5, 0x9d8);
	case WALK_MODE_NONE:
		break;
	}
	return 0;
}

/* An entry referencing the next table, with P = R/W = U/S = 1, XD = 0, and
 * bits that must be ignored set (bit 8: G is ignored in non-leaf entries on
 * Intel; 62:59: the key is ignored in non-leaf entries). */
static uint64_t upper_entry(const struct path *p, int level)
{
	uint64_t e;

	if (p->mode == WALK_MODE_PAE && level == 3)
		return p->table[2] | E_P | E_PWT;	/* PDPTE: no R/W, U/S, A */
	e = p->table[level - 1] | E_P | E_W | E_U | E_PWT | E_G | E_IGN_LOW;
	if (p->top >= 4)
		e |= E_IGN_HIGH | ((uint64_t)(level + 2) << E_PKEY_SHIFT);
	return e;
}

static uint64_t ept_upper_entry(const struct path *p, int level)
{
	return p->table[level - 1] | EPT_R | EPT_W | EPT_X | EPT_IGN | (0x55ULL << 52);
}

/* ---- one walk against the model ------------------------------------------------ */

static const unsigned int all_accesses[] = { 0, WALK_WRITE, WALK_FETCH, WALK_IMPLICIT, WALK_IMPLICIT | WALK_WRITE };
#define NR_ACCESSES (sizeof(all_accesses) / sizeof(all_accesses[0]))

static const char *access_name(unsigned int a)
{
	switch (a) {
	case 0:
		return "read";
	case WALK_WRITE:
		return "write";
	case WALK_FETCH:
		return "fetch";
	case WALK_IMPLICIT:
		return "implicit-read";
	case WALK_IMPLICIT | WALK_WRITE:
		return "implicit-write";
	}
	return "?";
}

static struct ref_cpu ref_cpu_of(const struct walk_cpu *c)
{
	struct ref_cpu r;

	memset(&r, 0, sizeof(r));
	r.paging = mode_paging(c->mode);
	r.maxphyaddr = c->maxphyaddr;
	r.pse = c->pse;
	r.wp = c->wp;
	r.smep = c->smep;
	r.smap = c->smap;
	r.pke = c->pke;
	r.nxe = c->nxe;
	r.ac = c->ac;
	r.cpl = c->cpl;
	r.pkru = c->pkru;
	return r;
}

static struct ref_access ref_access_of(unsigned int a)
{
	struct ref_access r;

	r.write = a & WALK_WRITE;
	r.fetch = a & WALK_FETCH;
	r.implicit = a & WALK_IMPLICIT;
	return r;
}

/* WALK_ACC_* of a translation with these rights (walk.h). */
static unsigned int walk_acc_of(const struct ref_cpu *rc, const struct ref_rights *r)
{
	unsigned int acc = WALK_ACC_R;

	if (r->writable)
		acc |= WALK_ACC_W;
	if (r->user_addr)
		acc |= WALK_ACC_U;
	if (!(rc->paging != REF_PAGING_32 && rc->nxe && r->xd))
		acc |= WALK_ACC_X;
	return acc;
}

static void describe_cpu(struct sbuf *b, const struct walk_cpu *c)
{
	sb_printf(b, "cpu{M=%u wp=%d smep=%d smap=%d ac=%d pke=%d pkru=%#x nxe=%d cpl=%u pse=%d}", c->maxphyaddr,
		  c->wp, c->smep, c->smap, c->ac, c->pke, c->pkru, c->nxe, c->cpl, c->pse);
}

static void describe_result(struct sbuf *b, int ret, const struct walk_result *res)
{
	if (ret == WALK_OK)
		sb_printf(b, "ok gpa=%#" PRIx64 " level=%d size=%#" PRIx64 " acc=%#x pkey=%u g=%d dirty=%d", res->gpa,
			  res->level, res->page_size, res->access, res->pkey, res->global, res->dirty);
	else if (ret == WALK_FAULT)
		sb_printf(b, "fault vector=%u ec=%#x addr=%#" PRIx64 " misconfig=%d", res->vector, res->error_code,
			  res->fault_addr, res->ept_misconfig);
	else
		sb_printf(b, "ret=%d", ret);
}

/*
 * Walk p->gva with p->cpu for one access, run the model on the entries the
 * path holds, and compare everything walk.h promises.  Returns true on
 * agreement; reports (up to MAX_REPORTS) and counts a mismatch otherwise.
 */
static bool check_legacy(const struct path *p, unsigned int acc, const char *what)
{
	struct ref_cpu rc = ref_cpu_of(&p->cpu);
	struct ref_access ra = ref_access_of(acc);
	struct ref_pte ent[REF_MAX_LEVEL + 1];
	uint64_t before[WALK_MAX_LEVELS + 1] = { 0 }, after[WALK_MAX_LEVELS + 1] = { 0 };
	uint64_t want[WALK_MAX_LEVELS + 1] = { 0 };
	struct ref_outcome exp;
	struct walk_result res;
	const char *why = NULL;
	uint64_t want_gpa = 0, size = 0;
	int top = p->top, ret, leaf;

	memset(ent, 0, sizeof(ent));
	for (int level = 1; level <= top; level++) {
		before[level] = path_get(p, level);
		ent[level] = ref_decode(&rc, level, before[level]);
	}
	gm.bad_ops = 0;
	memset(&res, 0, sizeof(res));
	ret = walk_gva(&p->cpu, &gm_ops, p->gva, acc, &res);
	ref_translate(&rc, ent, &ra, &exp);
	leaf = exp.leaf_level;

	for (int level = 1; level <= top; level++) {
		after[level] = path_get(p, level);
		want[level] = (before[level] & ~E_AD) | (exp.a[level] ? E_A : 0) | (exp.d[level] ? E_D : 0);
		if (p->mode == WALK_MODE_PAE && level == 3)
			want[level] = before[level];
	}
	if (!exp.fault) {
		size = ref_page_size(&rc, leaf);
		want_gpa = ref_leaf_frame(&rc, leaf, before[leaf]) | (p->gva & (size - 1));
	}

	if (gm.bad_ops)
		why = gm.bad_what;
	else if (exp.fault && ret != WALK_FAULT)
		why = "walker did not fault";
	else if (!exp.fault && ret != WALK_OK)
		why = "walker faulted";
	else if (exp.fault && res.vector != WALK_VECTOR_PF)
		why = "vector";
	else if (exp.fault && res.error_code != exp.error_code)
		why = "error code";
	else if (exp.fault && res.fault_addr != p->gva)
		why = "fault address";
	else if (!exp.fault && res.gpa != want_gpa)
		why = "gpa";
	else if (!exp.fault && (res.level != leaf || res.page_size != size))
		why = "level / page size";
	else if (!exp.fault && res.access != walk_acc_of(&rc, &exp.rights))
		why = "access rights";
	else if (!exp.fault && res.pkey != exp.rights.pkey)
		why = "pkey";
	else if (!exp.fault && res.global != !!(before[leaf] & E_G))
		why = "global";
	else if (!exp.fault && res.dirty != exp.d[leaf])
		why = "dirty";
	else if (!exp.fault && (res.pte[leaf] & ~E_AD) != (before[leaf] & ~E_AD))
		why = "result pte[leaf]";
	else {
		for (int level = 1; level <= top; level++) {
			if (after[level] != want[level])
				why = "entries after the walk (A/D)";
		}
	}
	if (!why)
		return true;
	if (mismatch()) {
		struct sbuf b = { .n = 0 };

		sb_printf(&b, "[%s] %s %s gva=%#" PRIx64 " ", mode_name(p->mode), what, access_name(acc), p->gva);
		describe_cpu(&b, &p->cpu);
		sb_printf(&b, ": %s", why);
		sb_entries(&b, "before", top, before);
		sb_printf(&b, "\n      walker: ");
		describe_result(&b, ret, &res);
		sb_entries(&b, "after", top, after);
		if (exp.fault)
			sb_printf(&b, "\n      model:  fault vector=14 ec=%#x addr=%#" PRIx64, exp.error_code, p->gva);
		else
			sb_printf(&b, "\n      model:  ok gpa=%#" PRIx64 " level=%d size=%#" PRIx64 " acc=%#x pkey=%u dirty=%d",
				  want_gpa, leaf, size, walk_acc_of(&rc, &exp.rights), exp.rights.pkey, exp.d[leaf]);
		sb_entries(&b, "want", top, want);
		fprintf(stderr, "  MISMATCH %s\n", b.s);
	}
	return false;
}

/* The same for EPT modes: p->gva is the guest-physical address. */
static bool check_ept(const struct path *p, unsigned int acc, const char *what)
{
	unsigned int m = p->cpu.maxphyaddr;
	struct ref_access ra = ref_access_of(acc);
	struct ref_ept_pte ent[REF_MAX_LEVEL + 1];
	uint64_t before[WALK_MAX_LEVELS + 1] = { 0 }, after[WALK_MAX_LEVELS + 1] = { 0 };
	uint64_t want[WALK_MAX_LEVELS + 1] = { 0 };
	struct ref_ept_outcome exp;
	struct walk_result res;
	const char *why = NULL;
	uint64_t want_gpa = 0, size = 0;
	unsigned int want_acc = 0;
	int top = p->top, ret, leaf;

	memset(ent, 0, sizeof(ent));
	for (int level = 1; level <= top; level++) {
		before[level] = path_get(p, level);
		ent[level] = ref_ept_decode(m, level, before[level]);
	}
	gm.bad_ops = 0;
	memset(&res, 0, sizeof(res));
	ret = walk_gva(&p->cpu, &gm_ops, p->gva, acc, &res);
	ref_ept_translate(top, ent, &ra, p->cpu.ept_ad, &exp);
	leaf = exp.leaf_level;

	for (int level = 1; level <= top; level++) {
		after[level] = path_get(p, level);
		want[level] = (before[level] & ~EPT_AD) | (exp.a[level] ? EPT_A : 0) | (exp.d[level] ? EPT_D : 0);
	}
	if (!exp.fault) {
		size = 1ULL << (12 + 9 * (leaf - 1));
		want_gpa = ref_ept_leaf_frame(m, leaf, before[leaf]) | (p->gva & (size - 1));
		want_acc = (exp.r ? WALK_ACC_R : 0) | (exp.w ? WALK_ACC_W : 0) | (exp.x ? WALK_ACC_X : 0);
	}

	if (gm.bad_ops)
		why = gm.bad_what;
	else if (exp.fault && ret != WALK_FAULT)
		why = "walker did not fault";
	else if (!exp.fault && ret != WALK_OK)
		why = "walker faulted";
	else if (exp.fault && res.ept_misconfig != exp.misconfig)
		why = "misconfiguration vs violation";
	else if (exp.fault && !exp.misconfig && res.vector != WALK_VECTOR_EPT_VIOLATION)
		why = "vector";
	else if (exp.fault && !exp.misconfig && res.error_code != exp.qual)
		why = "exit qualification";
	else if (!exp.fault && res.gpa != want_gpa)
		why = "gpa";
	else if (!exp.fault && (res.level != leaf || res.page_size != size))
		why = "level / page size";
	/* EPT has no U/S: WALK_ACC_U is not compared. */
	else if (!exp.fault && (res.access & ~WALK_ACC_U) != want_acc)
		why = "access rights";
	else if (!exp.fault && p->cpu.ept_ad && res.dirty != exp.d[leaf])
		why = "dirty";
	else {
		for (int level = 1; level <= top; level++) {
			if (after[level] != want[level])
				why = "entries after the walk (A/D)";
		}
	}
	if (!why)
		return true;
	if (mismatch()) {
		struct sbuf b = { .n = 0 };

		sb_printf(&b, "[%s] %s %s gpa=%#" PRIx64 " M=%u ad=%d: %s", mode_name(p->mode), what, access_name(acc),
			  p->gva, m, p->cpu.ept_ad, why);
		sb_entries(&b, "before", top, before);
		sb_printf(&b, "\n      walker: ");
		describe_result(&b, ret, &res);
		sb_entries(&b, "after", top, after);
		if (exp.fault && exp.misconfig)
			sb_printf(&b, "\n      model:  misconfiguration");
		else if (exp.fault)
			sb_printf(&b, "\n      model:  violation qual=%#x", exp.qual);
		else
			sb_printf(&b, "\n      model:  ok gpa=%#" PRIx64 " level=%d acc=%#x dirty=%d", want_gpa, leaf, want_acc,
				  exp.d[leaf]);
		sb_entries(&b, "want", top, want);
		fprintf(stderr, "  MISMATCH %s\n", b.s);
	}
	return false;
}

#define ASSERT_NO_MISMATCH() \
	do { if (nr_mismatch) test_fail(__FILE__, __LINE__, "%lu mismatches with the model", nr_mismatch); } while (0)

/* ---- the exhaustive test ---------------------------------------------------------- */

struct exh_mode {
	const char *name;
	enum walk_mode mode;
	bool pse;
	unsigned int maxphyaddr;
	uint64_t frame_4k, frame_huge;	/* frames of the 4K and the 2M/4M leaf */
};

/* 32-bit: MAXPHYADDR 40 so the 4-MByte frame has PSE-40 bits 39:32 = 0xab. */
static const struct exh_mode exh_modes[] = {
	{ "32-bit", WALK_MODE_32, false, 40, 0x76543000ULL, 0xabc0400000ULL },
	{ "32-bit+PSE", WALK_MODE_32, true, 40, 0x76543000ULL, 0xabc0400000ULL },
	{ "PAE", WALK_MODE_PAE, false, 46, 0x2abcdef13000ULL, 0x123456600000ULL },
	{ "4-level", WALK_MODE_4LEVEL, false, 46, 0x2abcdef13000ULL, 0x123456600000ULL },
	{ "5-level", WALK_MODE_5LEVEL, false, 46, 0x2abcdef13000ULL, 0x123456600000ULL },
};

/* The leaf address field for frame (SDM 4.3: a 4-MByte frame's bits 39:32
 * go to PDE bits 20:13). */
static uint64_t leaf_addr_bits(enum walk_mode mode, int level, uint64_t frame)
{
	if (mode == WALK_MODE_32 && level == 2)
		return (frame & bitmask(22, 31)) | ((frame >> 32) << 13);
	return frame;
}

/* A reserved bit the exhaustive test sets in an entry, or 0 if the format has
 * none: bit 51 (above MAXPHYADDR 46) in 8-byte entries, bit 21 in a 32-bit
 * 4-MByte PDE; 32-bit 4-KByte formats have no reserved bits. */
static uint64_t exh_rsvd_bit(const struct path *p, bool huge_pde_or_pte)
{
	if (p->esize == 8)
		return 1ULL << 51;
	return huge_pde_or_pte ? 1ULL << 21 : 0;
}

struct exh_ctx {
	struct path *p;
	unsigned long n;
};

static uint64_t exh_rsvd(void *ctx, int level, bool ps, bool huge)
{
	struct exh_ctx *x = ctx;

	(void)level;
	(void)ps;
	return exh_rsvd_bit(x->p, huge);
}

/* One entry combination: every CPU state and access over it. */
static void exh_entries_run(void *ctx, const struct exh_entries *en)
{
	struct exh_ctx *x = ctx;
	struct path *p = x->p;

	for (unsigned int cpu_c = 0; cpu_c < 512; cpu_c++) {
		unsigned int adwd = (cpu_c >> 7) & 3;

		p->cpu.wp = cpu_c & 1;
		p->cpu.smep = cpu_c & 2;
		p->cpu.smap = cpu_c & 4;
		p->cpu.ac = cpu_c & 8;
		p->cpu.pke = cpu_c & 16;
		p->cpu.cpl = (cpu_c & 32) ? 3 : 0;
		p->cpu.nxe = cpu_c & 64;
		/* AD/WD of the page's key as chosen; every other
		 * key the opposite, to catch the wrong key. */
		p->cpu.pkru = 0;
		for (unsigned int i = 0; i < 16; i++)
			p->cpu.pkru |= (i == en->key ? adwd : 3u & ~adwd) << (2 * i);
		for (unsigned int a = 0; a < NR_ACCESSES; a++) {
			for (int level = p->top; level >= 3; level--)
				path_set(p, level, upper_entry(p, level));
			path_set(p, 2, en->pde);
			path_set(p, 1, en->pte);
			check_legacy(p, all_accesses[a], "exhaustive");
			x->n++;
		}
	}
}

static unsigned long exhaustive_mode(const struct exh_mode *m)
{
	struct path p;
	struct ref_cpu rc;
	struct exh_ctx x = { .p = &p };
	struct exh_space sp;

	path_build(&p, m->mode, test_gva(m->mode), m->maxphyaddr);
	p.cpu.pse = m->pse;
	rc = ref_cpu_of(&p.cpu);
	sp = (struct exh_space){
		.rc = &rc,
		.has_nx = p.esize == 8,
		.has_pk = mode_has_pkeys(m->mode),
		.addr_4k = leaf_addr_bits(m->mode, 1, m->frame_4k),
		.addr_huge = leaf_addr_bits(m->mode, 2, m->frame_huge),
		.pt = p.table[1],
		.rsvd_bit = exh_rsvd,
		.fn = exh_entries_run,
		.ctx = &x,
	};
	exh_for_each(&sp);
	return x.n;
}

TEST(walk_exhaustive)
{
	unsigned long total = 0;

	nr_mismatch = 0;
	for (unsigned int i = 0; i < sizeof(exh_modes) / sizeof(exh_modes[0]); i++) {
		unsigned long n = exhaustive_mode(&exh_modes[i]);

		fprintf(stderr, "  walk_exhaustive: %-10s %lu combinations\n", exh_modes[i].name, n);
		total += n;
	}
	fprintf(stderr, "  walk_exhaustive: total      %lu combinations, %lu mismatches\n", total, nr_mismatch);
	ASSERT_NO_MISMATCH();
}

/* ---- walk_permission_fault (the TLB-hit check) ---------------------------------- */

TEST(walk_permission_fault_matches_model)
{
	static const enum walk_mode modes[] = { WALK_MODE_32, WALK_MODE_PAE, WALK_MODE_4LEVEL, WALK_MODE_5LEVEL };
	unsigned long n = 0;

	nr_mismatch = 0;
	for (unsigned int mi = 0; mi < 4; mi++) {
		struct walk_cpu cpu;

		memset(&cpu, 0, sizeof(cpu));
		cpu.mode = modes[mi];
		cpu.maxphyaddr = 46;
		for (unsigned int rights = 0; rights < 8; rights++) {
			unsigned int acc_rights = WALK_ACC_R | ((rights & 1) ? WALK_ACC_W : 0) |
						  ((rights & 2) ? WALK_ACC_U : 0) | ((rights & 4) ? WALK_ACC_X : 0);

			for (unsigned int pkey = 0; pkey < 16; pkey++) {
				/* Only rights a walk can produce: a key only with
				 * 4/5-level paging (walk.h), X = 0 only where XD is
				 * honoured. */
				if (pkey && !mode_has_pkeys(cpu.mode))
					continue;
				for (unsigned int cpu_c = 0; cpu_c < 256; cpu_c++) {
					struct ref_cpu rc;
					struct ref_rights rr;

					cpu.wp = cpu_c & 1;
					cpu.smep = cpu_c & 2;
					cpu.smap = cpu_c & 4;
					cpu.ac = cpu_c & 8;
					cpu.pke = cpu_c & 16;
					cpu.nxe = cpu_c & 32;
					cpu.cpl = (cpu_c >> 6) & 3;
					if (!(acc_rights & WALK_ACC_X) && (cpu.mode == WALK_MODE_32 || !cpu.nxe))
						continue;
					for (unsigned int adwd = 0; adwd < 4; adwd++) {
						cpu.pkru = 0;
						for (unsigned int i = 0; i < 16; i++)
							cpu.pkru |= (i == pkey ? adwd : 3u & ~adwd) << (2 * i);
						rc = ref_cpu_of(&cpu);
						rr.user_addr = acc_rights & WALK_ACC_U;
						rr.writable = acc_rights & WALK_ACC_W;
						rr.xd = !(acc_rights & WALK_ACC_X);
						rr.pkey = pkey;
						for (unsigned int a = 0; a < NR_ACCESSES; a++) {
							struct ref_access ra = ref_access_of(all_accesses[a]);
							uint32_t want = ref_permission_fault(&rc, &rr, &ra);
							uint32_t got = walk_permission_fault(&cpu, acc_rights, pkey,
											     all_accesses[a]);

							n++;
							if (got != want && mismatch()) {
								struct sbuf b = { .n = 0 };

								sb_printf(&b, "[%s] walk_permission_fault(acc=%#x pkey=%u %s) ",
									  mode_name(cpu.mode), acc_rights, pkey,
									  access_name(all_accesses[a]));
								describe_cpu(&b, &cpu);
								sb_printf(&b, " = %#x, model %#x", got, want);
								fprintf(stderr, "  MISMATCH %s\n", b.s);
							}
						}
					}
				}
			}
		}
	}
	fprintf(stderr, "  walk_permission_fault: %lu combinations, %lu mismatches\n", n, nr_mismatch);
	ASSERT_NO_MISMATCH();
}

/* ---- random entries at every level against the model ---------------------------- */

static const unsigned int maxphyaddrs[] = { 36, 40, 46, 52 };
#define NR_MAXPHYADDRS (sizeof(maxphyaddrs) / sizeof(maxphyaddrs[0]))

static uint64_t random_gva(enum walk_mode mode)
{
	uint64_t r = test_rng_next();

	if (mode == WALK_MODE_4LEVEL)
		return sign_extend(r, 48);
	if (mode == WALK_MODE_5LEVEL)
		return sign_extend(r, 57);
	return r & 0xffffffffULL;
}

/* Set one randomly chosen bit of mask (which must not be 0). */
static uint64_t random_bit_of(uint64_t mask)
{
	unsigned int n = (unsigned int)__builtin_popcountll(mask), k = (unsigned int)rng_below(n);

	for (unsigned int b = 0; b < 64; b++) {
		if (((mask >> b) & 1) && k-- == 0)
			return 1ULL << b;
	}
	return 0;
}

/* A random frame of a page of 2^shift bytes below 2^maxphyaddr, as the leaf
 * address field encodes it. */
static uint64_t random_leaf_addr(const struct path *p, int level, unsigned int shift)
{
	unsigned int m = p->cpu.maxphyaddr;

	if (p->mode == WALK_MODE_32)
		m = level == 1 ? 32 : (m < 40 ? m : 40);
	return leaf_addr_bits(p->mode, level, test_rng_next() & bitmask(shift, m - 1));
}

/*
 * A random entry for level of a path whose leaf is at leaf_level: mostly
 * present, random rights, A/D, G, PWT/PCD, ignored bits and key, sometimes
 * PS where it is reserved (PML4E/PML5E) or ignored (32-bit without PSE), and
 * sometimes one reserved bit.
 */
static uint64_t fuzz_entry(const struct path *p, const struct ref_cpu *rc, int level, int leaf_level)
{
	uint64_t r = test_rng_next(), s = test_rng_next(), e = 0, rsvd;

	if (p->mode == WALK_MODE_PAE && level == 3)
		return p->table[2] | ((r & 31) ? E_P : 0) | (s & (E_PWT | E_PCD));
	if (r & 31)
		e |= E_P;
	if ((r >> 5) & 3)
		e |= E_W;
	if ((r >> 7) & 3)
		e |= E_U;
	if (p->esize == 8 && !((r >> 9) & 3))
		e |= E_XD;
	e |= s & (E_PWT | E_PCD | E_A | E_D | E_G | E_IGN_LOW);
	if (mode_has_pkeys(p->mode))
		e |= s & (E_IGN_HIGH | (15ULL << E_PKEY_SHIFT));
	if (level > leaf_level) {
		e |= p->table[level - 1];
		if (level >= 4 && !((r >> 12) & 63))
			e |= E_PS;	/* reserved */
		else if (p->mode == WALK_MODE_32 && level == 2 && !rc->pse && ((r >> 12) & 1))
			e |= E_PS;	/* ignored */
	} else if (level == 1) {
		e |= random_leaf_addr(p, 1, 12) | (s & E_PAT4K);
	} else {
		unsigned int shift = p->mode == WALK_MODE_32 ? 22 : level == 2 ? 21 : 30;

		e |= E_PS | random_leaf_addr(p, level, shift) | (s & E_PAT_HUGE);
	}
	if (!((r >> 20) & 15) && (rsvd = ref_rsvd_mask(rc, level, e & E_PS)))
		e |= random_bit_of(rsvd);
	return e;
}

static unsigned long fuzz_mode(enum walk_mode mode, unsigned int nr_paths)
{
	struct path p;
	unsigned long n = 0;

	for (unsigned int i = 0; i < nr_paths; i++) {
		path_build(&p, mode, random_gva(mode), maxphyaddrs[rng_below(NR_MAXPHYADDRS)]);
		for (unsigned int j = 0; j < 16; j++) {
			uint64_t r = test_rng_next();
			struct ref_cpu rc;
			int leaf_level;

			p.cpu.pse = r & 1;
			p.cpu.wp = r & 2;
			p.cpu.smep = r & 4;
			p.cpu.smap = r & 8;
			p.cpu.ac = r & 16;
			p.cpu.pke = r & 32;
			p.cpu.nxe = r & 64;
			p.cpu.cpl = (r >> 7) & 3;
			p.cpu.pkru = (uint32_t)(r >> 32);
			rc = ref_cpu_of(&p.cpu);
			/* Leaf level among those the mode and CR4.PSE allow. */
			if (mode == WALK_MODE_32)
				leaf_level = p.cpu.pse ? 1 + (int)((r >> 9) & 1) : 1;
			else if (mode == WALK_MODE_PAE)
				leaf_level = 1 + (int)((r >> 9) & 1);
			else
				leaf_level = 1 + (int)((r >> 9) % 3);
			for (int level = p.top; level >= 1; level--)
				path_set(&p, level, level >= leaf_level ? fuzz_entry(&p, &rc, level, leaf_level) : 0);
			check_legacy(&p, all_accesses[(r >> 12) % NR_ACCESSES], "fuzz");
			n++;
		}
	}
	return n;
}

TEST(walk_fuzz_all_levels)
{
	static const enum walk_mode modes[] = { WALK_MODE_32, WALK_MODE_PAE, WALK_MODE_4LEVEL, WALK_MODE_5LEVEL };
	unsigned long total = 0;

	nr_mismatch = 0;
	test_rng_seed(0x3a1c0001);
	for (unsigned int i = 0; i < 4; i++) {
		unsigned long n = fuzz_mode(modes[i], 3000);

		fprintf(stderr, "  walk_fuzz: %-8s %lu walks\n", mode_name(modes[i]), n);
		total += n;
	}
	fprintf(stderr, "  walk_fuzz: total    %lu walks, %lu mismatches\n", total, nr_mismatch);
	ASSERT_NO_MISMATCH();
}

/* ---- reserved bits ---------------------------------------------------------------- */

struct rsvd_counts {
	unsigned long reserved, not_reserved, not_present;
};

/* The entries of a permissive path with the leaf at leaf_level; the leaf
 * frame has its top bit (MAXPHYADDR - 1) set. */
static void rsvd_base(const struct path *p, int leaf_level, uint64_t *base)
{
	unsigned int m = p->cpu.maxphyaddr;

	for (int level = p->top; level >= 1; level--) {
		if (p->mode == WALK_MODE_PAE && level == 3)
			base[level] = p->table[2] | E_P;
		else if (level > leaf_level)
			base[level] = p->table[level - 1] | E_P | E_W | E_U;
		else if (level < leaf_level)
			base[level] = 0;
		else if (p->mode == WALK_MODE_32 && level == 1)
			base[level] = 0xf6543000ULL | E_P | E_W | E_U;
		else if (p->mode == WALK_MODE_32)
			base[level] = leaf_addr_bits(p->mode, 2, (1ULL << ((m < 40 ? m : 40) - 1)) | 0xc0400000ULL) |
				      E_P | E_W | E_U | E_PS;
		else
			base[level] = ((0xa5a5a5a5a5a5a5a5ULL & bitmask(12 + 9 * (level - 1), m - 2)) | (1ULL << (m - 1))) |
				      E_P | E_W | E_U | (level > 1 ? E_PS : 0);
	}
}

static void rsvd_config(enum walk_mode mode, bool pse, unsigned int m, bool nxe, int leaf_level, struct rsvd_counts *cnt)
{
	struct path p;
	struct ref_cpu rc;
	uint64_t base[WALK_MAX_LEVELS + 1];
	unsigned int addr_top;

	path_build(&p, mode, test_gva(mode), m);
	p.cpu.pse = pse;
	p.cpu.nxe = nxe;
	p.cpu.wp = true;
	rc = ref_cpu_of(&p.cpu);
	rsvd_base(&p, leaf_level, base);
	addr_top = mode == WALK_MODE_32 ? 32 : m;

	for (int level = p.top; level >= leaf_level; level--) {
		if (mode == WALK_MODE_PAE && level == 3)
			continue;	/* PDPTE reserved bits: #GP at MOV to CR3 (SDM 4.4.1) */
		for (unsigned int b = 0; b < 8 * p.esize; b++) {
			uint64_t raw = base[level] | (1ULL << b);

			if (base[level] & (1ULL << b))
				continue;
			/* A non-leaf address bit would point at another table;
			 * PS in a non-leaf PDE/PDPTE would make it a leaf. */
			if (level > leaf_level && b >= 12 && b < addr_top)
				continue;
			if (level > leaf_level && b == 7 && ref_is_leaf(&rc, level, true))
				continue;
			if (raw & ref_rsvd_mask(&rc, level, raw & E_PS))
				cnt->reserved++;
			else
				cnt->not_reserved++;
			for (unsigned int k = 0; k < 12; k++) {
				static const unsigned int accs[] = { 0, WALK_WRITE, WALK_FETCH };

				p.cpu.cpl = (k & 1) ? 3 : 0;
				p.cpu.smep = k & 2;
				for (int l = p.top; l >= 1; l--)
					path_set(&p, l, base[l]);
				path_set(&p, level, raw);
				check_legacy(&p, accs[k >> 2], "reserved-bit");
			}
			/* Not present: reserved bits do not matter (P = 0, RSVD = 0). */
			if (raw & ref_rsvd_mask(&rc, level, raw & E_PS)) {
				p.cpu.cpl = 3;
				for (int l = p.top; l >= 1; l--)
					path_set(&p, l, base[l]);
				path_set(&p, level, raw & ~E_P);
				check_legacy(&p, WALK_WRITE, "reserved-bit-not-present");
				cnt->not_present++;
			}
		}
	}
}

TEST(walk_reserved_bits)
{
	static const struct {
		enum walk_mode mode;
		bool pse;
		int max_leaf;
	} cfgs[] = {
		{ WALK_MODE_32, false, 1 },
		{ WALK_MODE_32, true, 2 },
		{ WALK_MODE_PAE, false, 2 },
		{ WALK_MODE_4LEVEL, false, 3 },
		{ WALK_MODE_5LEVEL, false, 3 },
	};
	nr_mismatch = 0;
	for (unsigned int c = 0; c < sizeof(cfgs) / sizeof(cfgs[0]); c++) {
		struct rsvd_counts cnt = { 0, 0, 0 };

		for (unsigned int mi = 0; mi < NR_MAXPHYADDRS; mi++)
			for (int nxe = 0; nxe < 2; nxe++)
				for (int leaf = 1; leaf <= cfgs[c].max_leaf; leaf++)
					rsvd_config(cfgs[c].mode, cfgs[c].pse, maxphyaddrs[mi], nxe, leaf, &cnt);
		fprintf(stderr, "  walk_reserved_bits: %-7s%s %lu reserved, %lu other bit positions, %lu not-present\n",
			mode_name(cfgs[c].mode), cfgs[c].pse ? "+PSE" : "    ", cnt.reserved, cnt.not_reserved,
			cnt.not_present);
		/* 32-bit paging without 4-MByte pages has no reserved bits at all. */
		if (cfgs[c].mode == WALK_MODE_32 && !cfgs[c].pse)
			ASSERT_EQ(cnt.reserved, 0);
		else
			ASSERT_GT(cnt.reserved, 0);
	}
	ASSERT_NO_MISMATCH();
}

/* Spot checks of the model's reserved-bit table itself, from the SDM text. */
TEST(walk_ref_reserved_table)
{
	struct ref_cpu rc;

	memset(&rc, 0, sizeof(rc));
	rc.paging = REF_PAGING_32;
	rc.pse = true;
	rc.maxphyaddr = 36;
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 2, true), 0x3e0000ULL);	/* bits 21:17 */
	rc.maxphyaddr = 46;
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 2, true), 0x200000ULL);	/* bit 21 (M = 40) */
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 2, false), 0);
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 1, false), 0);
	rc.paging = REF_PAGING_PAE;
	rc.maxphyaddr = 36;
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 1, false), 0xfffffff000000000ULL);	/* 62:36 + XD */
	rc.nxe = true;
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 2, true), 0x7ffffff0001fe000ULL);
	rc.paging = REF_PAGING_4LEVEL;
	rc.maxphyaddr = 52;
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 4, false), 0x80ULL);
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 3, true), 0x3fffe000ULL);
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 1, false), 0);
	rc.maxphyaddr = 46;
	rc.nxe = false;
	ASSERT_EQ_U64(ref_rsvd_mask(&rc, 1, false), 0x800fc00000000000ULL);
	ASSERT_EQ_U64(ref_ept_rsvd_mask(46, 4, false), 0xfc000000000f8ULL);
	ASSERT_EQ_U64(ref_ept_rsvd_mask(46, 2, true), 0xfc000001ff000ULL);
}

/* ---- non-canonical addresses ----------------------------------------------------- */

TEST(walk_noncanonical_gp)
{
	static const uint64_t bad4[] = {
		1ULL << 47, 1ULL << 48, 1ULL << 63, 0xffff000000000000ULL, 0x7fff800000000000ULL,
		0xfffe800000000000ULL, 0x0000800000001000ULL,
	};
	static const uint64_t bad5[] = {
		1ULL << 56, 1ULL << 57, 1ULL << 63, 0xfe00000000000000ULL, 0x7f00000000000000ULL,
		0xfe80000000000000ULL, 0x0100000000000000ULL,
	};
	static const uint64_t good4[] = { 0, 0x00007fffffffffffULL, 0xffff800000000000ULL, 0xffffffffffffffffULL };
	static const uint64_t good5[] = { 0x00007fffffffffffULL, 0x0000800000000000ULL, 0x00ffffffffffffffULL,
					  0xff00000000000000ULL, 0xffff800000000000ULL };
	struct path p;
	struct walk_result res;

	for (int five = 0; five < 2; five++) {
		enum walk_mode mode = five ? WALK_MODE_5LEVEL : WALK_MODE_4LEVEL;
		const uint64_t *bad = five ? bad5 : bad4;

		path_build(&p, mode, test_gva(mode), 46);
		for (unsigned int i = 0; i < 7; i++) {
			for (unsigned int a = 0; a < NR_ACCESSES; a++) {
				gm.reads = gm.cmpxchgs = 0;
				memset(&res, 0, sizeof(res));
				ASSERT_FALSE(walk_gva_canonical(&p.cpu, bad[i]));
				ASSERT_EQ(walk_gva(&p.cpu, &gm_ops, bad[i], all_accesses[a], &res), WALK_FAULT);
				ASSERT_EQ(res.vector, WALK_VECTOR_GP);
				/* #GP comes before any page-table access (SDM 3A 4.5.4 / 6.15). */
				ASSERT_EQ(gm.reads, 0);
				ASSERT_EQ(gm.cmpxchgs, 0);
			}
		}
		/* Canonical addresses are walked (and here, with empty tables,
		 * end in a not-present #PF after reading the root entry). */
		for (unsigned int i = 0; i < (five ? 5u : 4u); i++) {
			uint64_t gva = five ? good5[i] : good4[i];

			gm.reads = 0;
			ASSERT_TRUE(walk_gva_canonical(&p.cpu, gva));
			memset(&res, 0, sizeof(res));
			ASSERT_EQ(walk_gva(&p.cpu, &gm_ops, gva, 0, &res), WALK_FAULT);
			ASSERT_EQ(res.vector, WALK_VECTOR_PF);
			ASSERT_GT(gm.reads, 0);
		}
	}
	/* Below 4-level paging every (32-bit) address is canonical. */
	for (int mode = WALK_MODE_NONE; mode <= WALK_MODE_PAE; mode++) {
		struct walk_cpu cpu;

		memset(&cpu, 0, sizeof(cpu));
		cpu.mode = (enum walk_mode)mode;
		ASSERT_TRUE(walk_gva_canonical(&cpu, 0xffffffffULL));
		ASSERT_TRUE(walk_gva_canonical(&cpu, 0x80000000ULL));
		ASSERT_EQ(walk_va_bits((enum walk_mode)mode), 32);
	}
	ASSERT_EQ(walk_va_bits(WALK_MODE_4LEVEL), 48);
	ASSERT_EQ(walk_va_bits(WALK_MODE_5LEVEL), 57);
}

/* ---- hand-computed cases (checks the model as much as the walker) --------------- */

struct spot {
	enum walk_mode mode;
	uint64_t pde_bits, pte_bits;	/* E_W/E_U/E_XD (P always set) */
	bool wp, smep, smap, ac, pke, nxe;
	unsigned int cpl;
	uint32_t pkru;
	unsigned int pkey;
	unsigned int acc;
	int want_ret;
	uint32_t want_ec;
};

static const struct spot spots[] = {
	/* Supervisor write to a read-only supervisor page: allowed iff WP = 0. */
	{ WALK_MODE_4LEVEL, E_W, 0, false, false, false, false, false, true, 0, 0, 0, WALK_WRITE, WALK_OK, 0 },
	{ WALK_MODE_4LEVEL, E_W, 0, true, false, false, false, false, true, 0, 0, 0, WALK_WRITE, WALK_FAULT, 0x3 },
	/* User read of a supervisor page (U/S = 0 at the PDE only). */
	{ WALK_MODE_32, E_W, E_W | E_U, false, false, false, false, false, false, 3, 0, 0, 0, WALK_FAULT, 0x5 },
	/* SMAP: explicit supervisor read of a user page with AC = 1 is allowed,
	 * an implicit one is not, whatever AC says. */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_U, true, false, true, true, false, true, 0, 0, 0, 0, WALK_OK, 0 },
	{ WALK_MODE_4LEVEL, E_W | E_U, E_U, true, false, true, true, false, true, 0, 0, 0, WALK_IMPLICIT, WALK_FAULT,
	  0x1 },
	/* An implicit access at CPL 3 is a supervisor access: U/S = 0 in the error code. */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_U, true, false, true, false, false, true, 3, 0, 0, WALK_IMPLICIT | WALK_WRITE,
	  WALK_FAULT, 0x3 },
	/* SMAP off, WP = 0: supervisor write to a read-only user page is allowed. */
	{ WALK_MODE_PAE, E_W | E_U, E_U, false, false, false, false, false, true, 0, 0, 0, WALK_WRITE, WALK_OK, 0 },
	/* SMEP: supervisor fetch from a user page; I/D set because SMEP = 1. */
	{ WALK_MODE_32, E_W | E_U, E_W | E_U, false, true, false, false, false, false, 0, 0, 0, WALK_FETCH, WALK_FAULT,
	  0x11 },
	/* 32-bit paging: NXE = 1 does not set I/D (CR4.PAE = 0), SMEP = 0. */
	{ WALK_MODE_32, E_W, E_W | E_U, false, false, false, false, false, true, 3, 0, 0, WALK_FETCH, WALK_FAULT, 0x5 },
	/* ... but PAE paging with NXE = 1 does. */
	{ WALK_MODE_PAE, E_W, E_W | E_U, false, false, false, false, false, true, 3, 0, 0, WALK_FETCH, WALK_FAULT, 0x15 },
	/* XD with NXE = 1: no fetch, reads fine. */
	{ WALK_MODE_5LEVEL, E_W | E_U | E_XD, E_W | E_U, false, false, false, false, false, true, 3, 0, 0, WALK_FETCH,
	  WALK_FAULT, 0x15 },
	{ WALK_MODE_5LEVEL, E_W | E_U | E_XD, E_W | E_U, false, false, false, false, false, true, 3, 0, 0, 0, WALK_OK, 0 },
	/* XD with NXE = 0 is a reserved bit. */
	{ WALK_MODE_PAE, E_W | E_U, E_W | E_U | E_XD, false, false, false, false, false, false, 3, 0, 0, 0, WALK_FAULT,
	  0xd },
	/* PKRU.AD of key 7 stops a user read: P | U/S | PK. */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_W | E_U, false, false, false, false, true, true, 3, 1u << 14, 7, 0, WALK_FAULT,
	  0x25 },
	/* ... and a supervisor read too (SMAP off). */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_W | E_U, false, false, false, false, true, true, 0, 1u << 14, 7, 0, WALK_FAULT,
	  0x21 },
	/* PKRU.WD: user writes fault, supervisor writes only with WP = 1. */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_W | E_U, false, false, false, false, true, true, 3, 2u << 14, 7, WALK_WRITE,
	  WALK_FAULT, 0x27 },
	{ WALK_MODE_4LEVEL, E_W | E_U, E_W | E_U, false, false, false, false, true, true, 0, 2u << 14, 7, WALK_WRITE,
	  WALK_OK, 0 },
	{ WALK_MODE_4LEVEL, E_W | E_U, E_W | E_U, true, false, false, false, true, true, 0, 2u << 14, 7, WALK_WRITE,
	  WALK_FAULT, 0x23 },
	/* Keys never apply to fetches nor to supervisor pages. */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_W | E_U, false, false, false, false, true, true, 3, 3u << 14, 7, WALK_FETCH,
	  WALK_OK, 0 },
	{ WALK_MODE_4LEVEL, E_W, E_W | E_U, true, false, false, false, true, true, 0, 3u << 14, 7, WALK_WRITE, WALK_OK,
	  0 },
	/* PK is reported even when the fault has another cause (R/W = 0). */
	{ WALK_MODE_4LEVEL, E_W | E_U, E_U, false, false, false, false, true, true, 3, 2u << 14, 7, WALK_WRITE,
	  WALK_FAULT, 0x27 },
	/* PAE has no protection keys: CR4.PKE and PKRU are ignored. */
	{ WALK_MODE_PAE, E_W | E_U, E_W | E_U, false, false, false, false, true, true, 3, 0xffffffffu, 0, WALK_WRITE,
	  WALK_OK, 0 },
};

TEST(walk_spot_checks)
{
	nr_mismatch = 0;
	for (unsigned int i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
		const struct spot *s = &spots[i];
		struct path p;
		struct walk_result res;
		struct ref_cpu rc;
		struct ref_pte ent[REF_MAX_LEVEL + 1];
		struct ref_outcome out;
		struct ref_access ra = ref_access_of(s->acc);
		uint64_t key = mode_has_pkeys(s->mode) ? (uint64_t)s->pkey << E_PKEY_SHIFT : 0;
		int ret;

		test_variant = mode_name(s->mode);
		path_build(&p, s->mode, test_gva(s->mode), 46);
		p.cpu.wp = s->wp;
		p.cpu.smep = s->smep;
		p.cpu.smap = s->smap;
		p.cpu.ac = s->ac;
		p.cpu.pke = s->pke;
		p.cpu.nxe = s->nxe;
		p.cpu.cpl = s->cpl;
		p.cpu.pkru = s->pkru;
		for (int level = p.top; level >= 3; level--)
			path_set(&p, level, upper_entry(&p, level));
		path_set(&p, 2, p.table[1] | E_P | s->pde_bits);
		path_set(&p, 1, 0x5000ULL | E_P | s->pte_bits | key);

		rc = ref_cpu_of(&p.cpu);
		memset(ent, 0, sizeof(ent));
		for (int level = 1; level <= p.top; level++)
			ent[level] = ref_decode(&rc, level, path_get(&p, level));
		ref_translate(&rc, ent, &ra, &out);
		/* The model first: these are the SDM's answers worked by hand. */
		ASSERT_EQ(out.fault, s->want_ret == WALK_FAULT);
		ASSERT_EQ(out.error_code, s->want_ec);

		memset(&res, 0, sizeof(res));
		ret = walk_gva(&p.cpu, &gm_ops, p.gva, s->acc, &res);
		if (ret != s->want_ret || (ret == WALK_FAULT && res.error_code != s->want_ec))
			test_fail(__FILE__, __LINE__, "spot check %u (%s): walker ret %d ec %#x, want ret %d ec %#x", i,
				  access_name(s->acc), ret, res.error_code, s->want_ret, s->want_ec);
	}
}

/* ---- A/D updates racing with another CPU ------------------------------------------- */

static const enum walk_mode race_modes[] = {
	WALK_MODE_32, WALK_MODE_PAE, WALK_MODE_4LEVEL, WALK_MODE_5LEVEL, WALK_MODE_EPT4, WALK_MODE_EPT5,
};
#define NR_RACE_MODES (sizeof(race_modes) / sizeof(race_modes[0]))

#define RACE_FRAME 0x3456789000ULL
#define RACE_FRAME2 0x1111222000ULL

/* A permissive path with a 4-KByte leaf, A = D = 0 everywhere, EPT A/D on. */
static void race_path(struct path *p, enum walk_mode mode)
{
	bool ept = mode_is_ept(mode);
	uint64_t gva = ept ? test_gva(mode) & bitmask(0, 45) : test_gva(mode);
	uint64_t frame = mode == WALK_MODE_32 ? RACE_FRAME & 0xfffff000ULL : RACE_FRAME;

	path_build(p, mode, gva, 46);
	for (int level = p->top; level >= 2; level--)
		path_set(p, level, ept ? ept_upper_entry(p, level) : upper_entry(p, level));
	path_set(p, 1, ept ? frame | EPT_R | EPT_W | EPT_X | (EPT_MT_WB << EPT_MT_SHIFT) : frame | E_P | E_W | E_U);
	if (ept)
		set_ept_ad(p, true);
	p->cpu.wp = true;
	p->cpu.nxe = true;
	p->cpu.cpl = 3;
}

static int race_walk(const struct path *p, struct walk_result *res)
{
	memset(res, 0, sizeof(*res));
	return walk_gva(&p->cpu, &gm_ops, p->gva, WALK_WRITE, res);
}

/* After a successful write: A in every in-memory entry, D in the leaf only,
 * and nothing else changed but the bits in `raced`. */
static void assert_ad_after_write(const struct path *p, const uint64_t *before, uint64_t raced)
{
	bool ept = mode_is_ept(p->mode);
	uint64_t a = ept ? EPT_A : E_A, d = ept ? EPT_D : E_D;

	for (int level = p->top; level >= 1; level--) {
		uint64_t v = path_get(p, level);

		if (p->mode == WALK_MODE_PAE && level == 3)
			continue;
		ASSERT_EQ_U64(v & ~(a | d | raced), before[level] & ~(a | d | raced));
		ASSERT_EQ_U64(v & a, a);
		ASSERT_EQ_U64(v & d, level == 1 ? d : 0);
	}
}

TEST(walk_ad_race_retry)
{
	static const int counts[] = { 1, 2, 3, 8 };

	for (unsigned int mi = 0; mi < NR_RACE_MODES; mi++) {
		enum walk_mode mode = race_modes[mi];
		bool ept = mode_is_ept(mode);

		test_variant = mode_name(mode);
		for (unsigned int ci = 0; ci < 5; ci++) {
			struct path p;
			struct walk_result res;
			uint64_t before[WALK_MAX_LEVELS + 1];
			uint64_t frame = mode == WALK_MODE_32 ? RACE_FRAME & 0xfffff000ULL : RACE_FRAME;

			race_path(&p, mode);
			for (int level = 1; level <= p.top; level++)
				before[level] = path_get(&p, level);
			if (ci < 4) {
				/* Another CPU changes an ignored bit of the entry the
				 * walker is exchanging, N times in a row. */
				gm.race = RACE_FLIP_BIT;
				gm.race_bit = ept ? 11 : 9;
				gm.race_n = counts[ci];
			} else {
				/* Another CPU's walk sets A first. */
				gm.race = RACE_SET_BITS;
				gm.race_val = ept ? EPT_A : E_A;
				gm.race_n = 1;
			}
			ASSERT_EQ(race_walk(&p, &res), WALK_OK);
			ASSERT_EQ(gm.bad_ops, 0);
			ASSERT_EQ_U64(res.gpa, frame | (p.gva & 0xfff));
			ASSERT_TRUE(res.dirty);
			ASSERT_EQ(gm.race_n, 0);
			ASSERT_EQ(gm.cmpxchg_fails, ci < 4 ? counts[ci] : 1);
			assert_ad_after_write(&p, before, ci < 4 ? 1ULL << gm.race_bit : 0);
		}
	}
}

TEST(walk_ad_race_entry_changes)
{
	for (unsigned int mi = 0; mi < NR_RACE_MODES; mi++) {
		enum walk_mode mode = race_modes[mi];
		bool ept = mode_is_ept(mode);
		uint64_t present = ept ? EPT_R | EPT_W | EPT_X : E_P;
		uint32_t want_ec;
		struct path p;
		struct walk_result res;
		uint64_t leaf, before[WALK_MAX_LEVELS + 1];

		test_variant = mode_name(mode);

		/* 1. The leaf becomes not present between the read and the
		 * cmpxchg: the restarted walk ends in a not-present fault and
		 * sets nothing in it. */
		race_path(&p, mode);
		leaf = path_get(&p, 1);
		gm.race = RACE_STORE;
		gm.race_n = 1;
		gm.race_gpa = p.slot[1];
		gm.race_val = leaf & ~present;
		ASSERT_EQ(race_walk(&p, &res), WALK_FAULT);
		ASSERT_EQ(gm.bad_ops, 0);
		if (ept) {
			ASSERT_FALSE(res.ept_misconfig);
			ASSERT_EQ(res.vector, WALK_VECTOR_EPT_VIOLATION);
			ASSERT_EQ(res.error_code, REF_EPTQ_WRITE);
		} else {
			ASSERT_EQ(res.vector, WALK_VECTOR_PF);
			ASSERT_EQ(res.error_code, PFERR_W | PFERR_U);
			ASSERT_EQ_U64(res.fault_addr, p.gva);
		}
		ASSERT_EQ_U64(path_get(&p, 1), leaf & ~present);

		/* 2. The same one level up (the PTE is not checked: a walker
		 * updating bottom-up legitimately set its A/D before failing). */
		race_path(&p, mode);
		leaf = path_get(&p, 2);
		gm.race = RACE_STORE;
		gm.race_n = 1;
		gm.race_gpa = p.slot[2];
		gm.race_val = leaf & ~present;
		ASSERT_EQ(race_walk(&p, &res), WALK_FAULT);
		ASSERT_EQ(gm.bad_ops, 0);
		ASSERT_EQ(res.error_code, ept ? REF_EPTQ_WRITE : PFERR_W | PFERR_U);
		ASSERT_EQ_U64(path_get(&p, 2), leaf & ~present);

		/* 3. The leaf is write-protected meanwhile: the write faults as a
		 * protection violation, and D is not set. */
		race_path(&p, mode);
		leaf = path_get(&p, 1);
		gm.race = RACE_STORE;
		gm.race_n = 1;
		gm.race_gpa = p.slot[1];
		gm.race_val = leaf & ~(ept ? EPT_W : E_W);
		ASSERT_EQ(race_walk(&p, &res), WALK_FAULT);
		ASSERT_EQ(gm.bad_ops, 0);
		want_ec = ept ? REF_EPTQ_WRITE | (5u << REF_EPTQ_RWX_SHIFT) : PFERR_P | PFERR_W | PFERR_U;
		ASSERT_EQ(res.error_code, want_ec);
		ASSERT_EQ_U64(path_get(&p, 1), gm.race_val);

		/* 4. The leaf is remapped meanwhile: the new frame is used. */
		race_path(&p, mode);
		for (int level = 1; level <= p.top; level++)
			before[level] = path_get(&p, level);
		leaf = path_get(&p, 1);
		gm.race = RACE_STORE;
		gm.race_n = 1;
		gm.race_gpa = p.slot[1];
		gm.race_val = (leaf & ~bitmask(12, 45)) | (mode == WALK_MODE_32 ? RACE_FRAME2 & 0xfffff000ULL : RACE_FRAME2);
		ASSERT_EQ(race_walk(&p, &res), WALK_OK);
		ASSERT_EQ(gm.bad_ops, 0);
		ASSERT_EQ_U64(res.gpa, (gm.race_val & bitmask(12, 45)) | (p.gva & 0xfff));
		assert_ad_after_write(&p, before, bitmask(12, 45));
		ASSERT_EQ_U64(path_get(&p, 1) & bitmask(12, 45), gm.race_val & bitmask(12, 45));
	}
}

/* ---- translations ---------------------------------------------------------------- */

TEST(walk_translations)
{
	static const struct {
		enum walk_mode mode;
		bool pse;
		int max_leaf;
	} cfgs[] = {
		{ WALK_MODE_32, false, 1 },
		{ WALK_MODE_32, true, 2 },
		{ WALK_MODE_PAE, false, 2 },
		{ WALK_MODE_4LEVEL, false, 3 },
		{ WALK_MODE_5LEVEL, false, 3 },
	};
	unsigned long n = 0;

	nr_mismatch = 0;
	test_rng_seed(0x3a1c0002);
	for (unsigned int c = 0; c < sizeof(cfgs) / sizeof(cfgs[0]); c++) {
		enum walk_mode mode = cfgs[c].mode;

		test_variant = mode_name(mode);
		for (unsigned int mi = 0; mi < NR_MAXPHYADDRS; mi++) {
			unsigned int m = maxphyaddrs[mi];

			for (int leaf = 1; leaf <= cfgs[c].max_leaf; leaf++) {
				for (unsigned int t = 0; t < 32; t++) {
					struct path p;
					struct walk_result res;
					uint64_t r = test_rng_next(), size, frame, leaf_e, want_gpa;
					unsigned int shift, want_acc = WALK_ACC_R | WALK_ACC_W | WALK_ACC_U | WALK_ACC_X;
					unsigned int key = (unsigned int)(r >> 60);
					bool global = r & 1, write = r & 2;

					path_build(&p, mode, random_gva(mode), m);
					p.cpu.pse = cfgs[c].pse;
					p.cpu.nxe = true;
					/* Rights: random R/W, U/S, XD per level (a supervisor
					 * read with WP = 0 and SMAP off is always allowed). */
					for (int level = p.top; level > leaf; level--) {
						uint64_t e = upper_entry(&p, level);

						if (!(mode == WALK_MODE_PAE && level == 3)) {
							if ((r >> (8 + level)) & 1) {
								e &= ~E_W;
								want_acc &= ~WALK_ACC_W;
							}
							if ((r >> (16 + level)) & 1) {
								e &= ~E_U;
								want_acc &= ~WALK_ACC_U;
							}
							if (p.esize == 8 && ((r >> (24 + level)) & 1)) {
								e |= E_XD;
								want_acc &= ~WALK_ACC_X;
							}
						}
						path_set(&p, level, e);
					}
					if (mode == WALK_MODE_32)
						shift = leaf == 1 ? 12 : 22;
					else
						shift = 12 + 9 * (leaf - 1);
					size = 1ULL << shift;
					if (mode == WALK_MODE_32)
						frame = test_rng_next() &
							bitmask(shift, leaf == 1 ? 31 : (m < 40 ? m : 40) - 1);
					else
						frame = test_rng_next() & bitmask(shift, m - 1);
					leaf_e = leaf_addr_bits(mode, leaf, frame) | E_P | E_W | E_U |
						 (leaf > 1 ? E_PS : 0) | (global ? E_G : 0);
					if (mode_has_pkeys(mode))
						leaf_e |= (uint64_t)key << E_PKEY_SHIFT;
					else
						key = 0;
					path_set(&p, leaf, leaf_e);
					want_gpa = frame | (p.gva & (size - 1));

					check_legacy(&p, write ? WALK_WRITE : 0, "translation");
					n++;
					memset(&res, 0, sizeof(res));
					path_set(&p, leaf, leaf_e);	/* D back to 0 */
					ASSERT_EQ(walk_gva(&p.cpu, &gm_ops, p.gva, write ? WALK_WRITE : 0, &res), WALK_OK);
					ASSERT_EQ_U64(res.gpa, want_gpa);
					ASSERT_EQ(res.level, leaf);
					ASSERT_EQ_U64(res.page_size, size);
					ASSERT_EQ(res.access, want_acc);
					ASSERT_EQ(res.pkey, key);
					ASSERT_EQ(res.global, global);
					ASSERT_EQ(res.dirty, write);
				}
			}
		}
	}
	fprintf(stderr, "  walk_translations: %lu translations\n", n);
	ASSERT_NO_MISMATCH();
}

TEST(walk_paging_off)
{
	struct walk_cpu cpu;

	test_rng_seed(0x3a1c0003);
	gm_reset(4, 0);
	memset(&cpu, 0, sizeof(cpu));
	cpu.mode = WALK_MODE_NONE;
	cpu.maxphyaddr = 46;
	for (unsigned int i = 0; i < 2000; i++) {
		uint64_t gva = i < 4 ? (uint64_t[]){ 0, 0xfff, 0x80000000ULL, 0xffffffffULL }[i] : test_rng_next() & 0xffffffffULL;
		struct walk_result res;

		cpu.cpl = i & 3;
		cpu.wp = i & 4;
		memset(&res, 0, sizeof(res));
		ASSERT_EQ(walk_gva(&cpu, &gm_ops, gva, all_accesses[i % NR_ACCESSES], &res), WALK_OK);
		ASSERT_EQ_U64(res.gpa, gva);
	}
	ASSERT_EQ(gm.reads, 0);
	ASSERT_EQ(gm.cmpxchgs, 0);
}

TEST(walk_mem_ops_abort)
{
	for (unsigned int mi = 0; mi < NR_RACE_MODES; mi++) {
		struct path p;
		struct walk_result res;

		test_variant = mode_name(race_modes[mi]);
		/* A read abort (e.g. the TDP walk of a guest page-table access
		 * exited) is returned as is. */
		race_path(&p, race_modes[mi]);
		gm.abort_read_gpa = p.slot[1];
		gm.abort_ret = -7;
		ASSERT_EQ(race_walk(&p, &res), -7);
		/* So is a cmpxchg abort (here on the leaf's D update). */
		race_path(&p, race_modes[mi]);
		gm.abort_cmpxchg_gpa = p.slot[1];
		gm.abort_ret = -11;
		ASSERT_EQ(race_walk(&p, &res), -11);
		ASSERT_EQ(gm.bad_ops, 0);
	}
}

/* ---- EPT --------------------------------------------------------------------- */

static const unsigned int ept_accesses[] = { 0, WALK_WRITE, WALK_FETCH };

static uint64_t ept_leaf_frame_for(const struct path *p, int leaf)
{
	return 0xa5a5a5a5a5a5a5a5ULL & bitmask(12 + 9 * (leaf - 1), p->cpu.maxphyaddr - 1);
}

static unsigned long ept_exhaustive_mode(enum walk_mode mode, unsigned int m)
{
	struct path p;
	unsigned long n = 0;

	path_build(&p, mode, test_gva(mode) & bitmask(0, m - 1), m);
	for (int leaf = 1; leaf <= 3; leaf++) {
		int nl = p.top - leaf + 1;

		for (unsigned int combo = 0; combo < (1u << (3 * nl)); combo++) {
			for (int ad = 0; ad < 2; ad++) {
				set_ept_ad(&p, ad);
				for (unsigned int a = 0; a < 3; a++) {
					for (int level = p.top; level >= 1; level--) {
						uint64_t rwx = level >= leaf ? (combo >> (3 * (level - leaf))) & 7 : 0;

						if (level > leaf)
							path_set(&p, level, p.table[level - 1] | rwx | EPT_IGN);
						else if (level == leaf)
							path_set(&p, level, ept_leaf_frame_for(&p, leaf) | rwx |
									     (EPT_MT_WB << EPT_MT_SHIFT) |
									     (leaf > 1 ? EPT_PS : 0) | EPT_IGN);
						else
							path_set(&p, level, 0);
					}
					check_ept(&p, ept_accesses[a], "ept-exhaustive");
					n++;
				}
			}
		}
	}
	return n;
}

TEST(walk_ept_exhaustive)
{
	unsigned long n4, n5;

	nr_mismatch = 0;
	n4 = ept_exhaustive_mode(WALK_MODE_EPT4, 46);
	n5 = ept_exhaustive_mode(WALK_MODE_EPT5, 52);
	fprintf(stderr, "  walk_ept_exhaustive: EPT4 %lu, EPT5 %lu, total %lu combinations, %lu mismatches\n", n4, n5,
		n4 + n5, nr_mismatch);
	ASSERT_NO_MISMATCH();
}

/* Hand-computed EPT cases (SDM 3C 29.3.3). */
TEST(walk_ept_spot_checks)
{
	static const struct {
		uint64_t upper, leaf;	/* RWX bits */
		unsigned int acc;
		int want_ret;
		bool misconfig;
		uint32_t qual;
	} cases[] = {
		/* Execute-only: fetch allowed, read a violation with X in bits 5:3. */
		{ 7, EPT_X, WALK_FETCH, WALK_OK, false, 0 },
		{ 7, EPT_X, 0, WALK_FAULT, false, 0x1 | 0x20 },
		/* Write without read: misconfiguration, at a leaf or above. */
		{ 7, EPT_W, 0, WALK_FAULT, true, 0 },
		{ 7, EPT_W | EPT_X, WALK_FETCH, WALK_FAULT, true, 0 },
		{ EPT_W | EPT_X, 7, WALK_FETCH, WALK_FAULT, true, 0 },
		/* Not present: a violation with bits 5:3 clear. */
		{ 7, 0, WALK_WRITE, WALK_FAULT, false, 0x2 },
		{ 0, 7, WALK_FETCH, WALK_FAULT, false, 0x4 },
		/* Read-only leaf under an R/X table: write violation, bits 5:3 = R. */
		{ EPT_R | EPT_X, EPT_R, WALK_WRITE, WALK_FAULT, false, 0x2 | 0x08 },
		{ EPT_R | EPT_X, 7, 0, WALK_OK, false, 0 },
	};
	struct path p;

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct walk_result res;
		int ret;

		path_build(&p, WALK_MODE_EPT4, test_gva(WALK_MODE_EPT4) & bitmask(0, 45), 46);
		set_ept_ad(&p, true);
		for (int level = 4; level >= 2; level--)
			path_set(&p, level, p.table[level - 1] | cases[i].upper);
		path_set(&p, 1, 0x7000ULL | cases[i].leaf | (EPT_MT_WB << EPT_MT_SHIFT));
		memset(&res, 0, sizeof(res));
		ret = walk_gva(&p.cpu, &gm_ops, p.gva, cases[i].acc, &res);
		if (ret != cases[i].want_ret ||
		    (ret == WALK_FAULT && (res.ept_misconfig != cases[i].misconfig ||
					   (!cases[i].misconfig && res.error_code != cases[i].qual))))
			test_fail(__FILE__, __LINE__,
				  "EPT case %u (%s): walker ret %d misconfig %d qual %#x, want ret %d misconfig %d qual %#x", i,
				  access_name(cases[i].acc), ret, res.ept_misconfig, res.error_code, cases[i].want_ret,
				  cases[i].misconfig, cases[i].qual);
		check_ept(&p, cases[i].acc, "ept-spot");	/* and the model agrees (fresh A/D) */
	}
	ASSERT_NO_MISMATCH();
}

TEST(walk_ept_memtype)
{
	unsigned long misconfigs = 0;

	nr_mismatch = 0;
	for (int leaf = 1; leaf <= 3; leaf++) {
		for (uint64_t mt = 0; mt < 8; mt++) {
			for (int ipat = 0; ipat < 2; ipat++) {
				for (unsigned int a = 0; a < 3; a++) {
					struct path p;
					struct walk_result res;

					path_build(&p, WALK_MODE_EPT4, test_gva(WALK_MODE_EPT4) & bitmask(0, 45), 46);
					for (int level = 4; level > leaf; level--)
						path_set(&p, level, ept_upper_entry(&p, level));
					path_set(&p, leaf, ept_leaf_frame_for(&p, leaf) | 7 | (mt << EPT_MT_SHIFT) |
								   (ipat ? EPT_IPAT : 0) | (leaf > 1 ? EPT_PS : 0));
					check_ept(&p, ept_accesses[a], "ept-memtype");
					/* And explicitly: 2, 3 and 7 are reserved types. */
					for (int level = 4; level >= leaf; level--)
						path_set(&p, level, path_get(&p, level) & ~EPT_AD);
					memset(&res, 0, sizeof(res));
					if (walk_gva(&p.cpu, &gm_ops, p.gva, ept_accesses[a], &res) == WALK_FAULT &&
					    res.ept_misconfig)
						misconfigs++;
				}
			}
		}
	}
	ASSERT_NO_MISMATCH();
	ASSERT_EQ(misconfigs, 3 * 3 * 2 * 3);
}

static void ept_rsvd_config(enum walk_mode mode, unsigned int m, int leaf_level, struct rsvd_counts *cnt)
{
	struct path p;
	uint64_t base[WALK_MAX_LEVELS + 1];

	path_build(&p, mode, test_gva(mode) & bitmask(0, m - 1), m);
	for (int level = p.top; level >= 1; level--) {
		if (level > leaf_level)
			base[level] = p.table[level - 1] | EPT_R | EPT_W | EPT_X;
		else if (level == leaf_level)
			base[level] = (ept_leaf_frame_for(&p, level) | (1ULL << (m - 1))) | EPT_R | EPT_W | EPT_X |
				      (EPT_MT_WB << EPT_MT_SHIFT) | (level > 1 ? EPT_PS : 0);
		else
			base[level] = 0;
	}
	for (int level = p.top; level >= leaf_level; level--) {
		for (unsigned int b = 0; b < 64; b++) {
			uint64_t raw = base[level] | (1ULL << b);
			bool rsvd;

			if (base[level] & (1ULL << b))
				continue;
			if (level > leaf_level && b >= 12 && b < m)
				continue;	/* another table */
			if (level > leaf_level && b == 7 && level <= 3)
				continue;	/* would become a leaf */
			rsvd = raw & ref_ept_rsvd_mask(m, level, raw & EPT_PS);
			if (rsvd)
				cnt->reserved++;
			else
				cnt->not_reserved++;
			for (int ad = 0; ad < 2; ad++) {
				set_ept_ad(&p, ad);
				for (unsigned int a = 0; a < 3; a++) {
					for (int l = p.top; l >= 1; l--)
						path_set(&p, l, base[l]);
					path_set(&p, level, raw);
					check_ept(&p, ept_accesses[a], "ept-reserved-bit");
				}
			}
			/* Not present (bits 2:0 clear): a violation, not a misconfiguration. */
			if (rsvd) {
				for (int l = p.top; l >= 1; l--)
					path_set(&p, l, base[l]);
				path_set(&p, level, raw & ~(EPT_R | EPT_W | EPT_X));
				check_ept(&p, 0, "ept-reserved-bit-not-present");
				cnt->not_present++;
			}
		}
	}
}

TEST(walk_ept_reserved_bits)
{
	static const enum walk_mode modes[] = { WALK_MODE_EPT4, WALK_MODE_EPT5 };

	nr_mismatch = 0;
	for (unsigned int i = 0; i < 2; i++) {
		struct rsvd_counts cnt = { 0, 0, 0 };

		for (unsigned int mi = 0; mi < NR_MAXPHYADDRS; mi++)
			for (int leaf = 1; leaf <= 3; leaf++)
				ept_rsvd_config(modes[i], maxphyaddrs[mi], leaf, &cnt);
		fprintf(stderr, "  walk_ept_reserved_bits: %s %lu reserved, %lu other bit positions, %lu not-present\n",
			mode_name(modes[i]), cnt.reserved, cnt.not_reserved, cnt.not_present);
		ASSERT_GT(cnt.reserved, 0);
	}
	ASSERT_NO_MISMATCH();
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
