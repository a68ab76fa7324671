/* SPDX-License-Identifier: MIT */
/*
 * Differential test of the guest page-table walker (src/walk.c) against a
 * real KVM guest (kvm_oracle.c): every combination of PDE/PTE permission
 * bits and paging-relevant CPU state the oracle can judge is run both in the
 * guest and through walk_gva() over a flat copy of the same page tables, and
 * the two must agree on fault or not, the #PF error code, CR2, and the A/D
 * bits the access leaves behind.
 *
 * What the oracle cannot judge (missing CPU features, modes it doesn't set
 * up) is counted by category and reported, never silently passed.
 */
#include "harness.h"
#include "kvm_oracle.h"
#include "mmu/walk.h"

#include <time.h>

/* ---- flat guest memory for the walker ------------------------------------ */

/* Everything the walk reads lies below the guest code (KO_CODE). */
#define FLAT_SIZE KO_CODE

struct flat_mem {
	unsigned char bytes[FLAT_SIZE];
};

static int flat_read(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val)
{
	struct flat_mem *m = ctx;

	if (size != 8 || gpa > FLAT_SIZE - 8)
		return -1;
	memcpy(val, m->bytes + gpa, 8);
	return 0;
}

static int flat_cmpxchg(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	struct flat_mem *m = ctx;
	uint64_t cur;

	if (size != 8 || gpa > FLAT_SIZE - 8)
		return -1;
	memcpy(&cur, m->bytes + gpa, 8);
	if (cur != old)
		return 0;
	memcpy(m->bytes + gpa, &new_val, 8);
	return 1;
}

static uint64_t flat_get(const struct flat_mem *m, uint64_t gpa)
{
	uint64_t v;

	memcpy(&v, m->bytes + gpa, 8);
	return v;
}

static void flat_put(struct flat_mem *m, uint64_t gpa, uint64_t v)
{
	memcpy(m->bytes + gpa, &v, 8);
}

/* ---- bookkeeping ------------------------------------------------------------- */

#define MAX_CATEGORIES 16
#define MAX_REPORTED 20
/* A broken oracle (every run timing out, say) stops the enumeration early. */
#define MAX_ORACLE_ERRORS 20

struct tally {
	uint64_t judged, agreed, disagreed, errors;
	uint64_t faults, successes;
	uint64_t skipped;	/* not run: too many oracle errors */
	struct {
		char why[160];
		uint64_t n;
	} not_judged[MAX_CATEGORIES];
	unsigned int nr_categories;
	uint64_t not_judged_other;
};

static void tally_not_judged(struct tally *t, const char *why, uint64_t n)
{
	for (unsigned int i = 0; i < t->nr_categories; i++) {
		if (!strcmp(t->not_judged[i].why, why)) {
			t->not_judged[i].n += n;
			return;
		}
	}
	if (t->nr_categories == MAX_CATEGORIES) {
		t->not_judged_other += n;
		return;
	}
	snprintf(t->not_judged[t->nr_categories].why, sizeof(t->not_judged[0].why), "%s", why);
	t->not_judged[t->nr_categories++].n = n;
}

static const char *access_name(enum kvm_oracle_access a)
{
	switch (a) {
	case KVM_ORACLE_READ: return "read";
	case KVM_ORACLE_WRITE: return "write";
	case KVM_ORACLE_FETCH: return "fetch";
	case KVM_ORACLE_IMPLICIT: return "implicit-read";
	case KVM_ORACLE_IMPLICIT_WRITE: return "implicit-read+write";
	}
	return "?";
}

static void fmt_flags(char *buf, size_t len, uint64_t e)
{
	snprintf(buf, len, "%#llx[%s%s%s%s%s%s%s]", (unsigned long long)e, e & KO_PTE_P ? "P" : "-",
		 e & KO_PTE_W ? "W" : "-", e & KO_PTE_U ? "U" : "-", e & KO_PTE_A ? "A" : "-",
		 e & KO_PTE_D ? "D" : "-", e & KO_PTE_PS ? "S" : "-", e & KO_PTE_NX ? "X" : "-");
}

static void fmt_case(char *buf, size_t len, const struct kvm_oracle_case *c, const struct kvm_oracle_tables *t)
{
	char pde[48], pte[48];

	fmt_flags(pde, sizeof(pde), t->pde);
	fmt_flags(pte, sizeof(pte), t->pte);
	snprintf(buf, len, "%s %s cpl%u wp%d smep%d smap%d ac%d nxe%d pke%d pkru=%#x pkey%u | pde %s%s%s",
		 c->leaf == 2 ? "2M" : "4K", access_name(c->access), c->cpl, c->wp, c->smep, c->smap, c->ac, c->nxe,
		 c->pke, c->pkru, c->pkey, pde, c->leaf == 1 ? " pte " : "", c->leaf == 1 ? pte : "");
}

/* ---- one case ---------------------------------------------------------------- */

struct ctx {
	struct kvm_oracle *o;
	struct flat_mem *base;	/* guest memory below KO_CODE as built by the oracle */
	struct flat_mem *mem;	/* per-case copy the walker updates */
	struct tally t;
	unsigned int reported;
};

static unsigned int walk_access(enum kvm_oracle_access a)
{
	switch (a) {
	case KVM_ORACLE_READ: return 0;
	case KVM_ORACLE_WRITE: return WALK_WRITE;
	case KVM_ORACLE_FETCH: return WALK_FETCH;
	case KVM_ORACLE_IMPLICIT: return WALK_IMPLICIT;
	case KVM_ORACLE_IMPLICIT_WRITE: return WALK_IMPLICIT | WALK_WRITE;
	}
	return 0;
}

static void judge(struct ctx *x, const struct kvm_oracle_case *c)
{
	struct kvm_oracle_tables tb;
	struct kvm_oracle_result r;
	struct walk_cpu cpu;
	struct walk_mem_ops ops = { flat_read, flat_cmpxchg, x->mem };
	struct walk_result w;
	uint64_t pde_after, pte_after, want_gpa;
	bool agree, faulted;
	int rc, wrc;

	if (x->t.errors >= MAX_ORACLE_ERRORS) {
		x->t.skipped++;
		return;
	}
	rc = kvm_oracle_run(x->o, c, &r);
	if (rc == KVM_ORACLE_NOT_JUDGED) {
		tally_not_judged(&x->t, r.why, 1);
		return;
	}
	kvm_oracle_case_tables(x->o, c, &tb);
	if (rc < 0) {
		char desc[256];

		x->t.errors++;
		fmt_case(desc, sizeof(desc), c, &tb);
		if (x->reported++ < MAX_REPORTED)
			fprintf(stderr, "  ORACLE ERROR: %s: %s\n", desc, r.why);
		return;
	}

	/* The walk of KO_TEST_GVA reads PML4E[0], PDPTE[1], the PDE and the
	 * PTE: restoring those resets what a previous walk may have changed. */
	flat_put(x->mem, KO_PML4, flat_get(x->base, KO_PML4));
	flat_put(x->mem, KO_PDPT + 8, flat_get(x->base, KO_PDPT + 8));
	flat_put(x->mem, tb.pde_gpa, tb.pde);
	if (tb.pte_gpa)
		flat_put(x->mem, tb.pte_gpa, tb.pte);
	memset(&cpu, 0, sizeof(cpu));
	cpu.mode = WALK_MODE_4LEVEL;
	cpu.root = tb.cr3;
	cpu.maxphyaddr = kvm_oracle_maxphyaddr(x->o);
	cpu.wp = c->wp;
	cpu.smep = c->smep;
	cpu.smap = c->smap;
	cpu.pke = c->pke;
	cpu.nxe = c->nxe;
	cpu.ac = c->ac;
	cpu.cpl = (uint8_t)c->cpl;
	cpu.pkru = c->pkru;
	memset(&w, 0, sizeof(w));
	/* A segment load that sets the descriptor's accessed bit reads the
	 * descriptor first, then writes it: two walks. */
	wrc = WALK_OK;
	if (c->access == KVM_ORACLE_IMPLICIT_WRITE)
		wrc = walk_gva(&cpu, &ops, tb.gva, WALK_IMPLICIT, &w);
	if (wrc == WALK_OK)
		wrc = walk_gva(&cpu, &ops, tb.gva, walk_access(c->access), &w);
	pde_after = flat_get(x->mem, tb.pde_gpa);
	pte_after = tb.pte_gpa ? flat_get(x->mem, tb.pte_gpa) : 0;
	want_gpa = c->leaf == 2 ? KO_FRAME_2M + (tb.gva & 0x1fffff) : KO_FRAME_4K + (tb.gva & 0xfff);

	faulted = wrc == WALK_FAULT;
	agree = wrc >= 0 && faulted == r.faulted && pde_after == r.pde_after && pte_after == r.pte_after;
	if (agree && faulted)
		agree = w.vector == r.vector && w.error_code == r.error_code && (r.vector != 14 || w.fault_addr == r.cr2);
	if (agree && !faulted)
		agree = w.gpa == want_gpa;

	x->t.judged++;
	if (r.faulted)
		x->t.faults++;
	else
		x->t.successes++;
	if (agree) {
		x->t.agreed++;
		return;
	}
	x->t.disagreed++;
	if (x->reported++ < MAX_REPORTED) {
		char desc[256], a[48], b[48], d[48], e[48];

		fmt_case(desc, sizeof(desc), c, &tb);
		fmt_flags(a, sizeof(a), r.pde_after);
		fmt_flags(b, sizeof(b), r.pte_after);
		fmt_flags(d, sizeof(d), pde_after);
		fmt_flags(e, sizeof(e), pte_after);
		fprintf(stderr, "  DISAGREE: %s\n", desc);
		fprintf(stderr, "    kvm : %s vec %u err %#x cr2 %#llx | pde %s pte %s\n",
			r.faulted ? "fault" : "ok", r.faulted ? r.vector : 0, r.error_code,
			(unsigned long long)r.cr2, a, tb.pte_gpa ? b : "-");
		fprintf(stderr, "    vmmu: %s vec %u err %#x cr2 %#llx gpa %#llx (want %#llx) | pde %s pte %s\n",
			wrc < 0 ? "abort" : faulted ? "fault" : "ok", faulted ? w.vector : 0,
			faulted ? w.error_code : 0, (unsigned long long)(faulted ? w.fault_addr : 0),
			(unsigned long long)(faulted ? 0 : w.gpa), (unsigned long long)want_gpa, d,
			tb.pte_gpa ? e : "-");
	}
}

/* ---- the combination space ----------------------------------------------- */

#define F_P KO_PTE_P
#define F_W KO_PTE_W
#define F_U KO_PTE_U
#define F_NX KO_PTE_NX

/* The 16 combinations of P, W, U, NX. */
static uint64_t pwun(unsigned int i)
{
	return (i & 1 ? F_P : 0) | (i & 2 ? F_W : 0) | (i & 4 ? F_U : 0) | (i & 8 ? F_NX : 0);
}

static const enum kvm_oracle_access accesses[] = {
	KVM_ORACLE_READ, KVM_ORACLE_WRITE, KVM_ORACLE_FETCH, KVM_ORACLE_IMPLICIT, KVM_ORACLE_IMPLICIT_WRITE,
};
#define NR_ACCESSES (sizeof(accesses) / sizeof(accesses[0]))

/*
 * The CPU-state part: CR0.WP x SMEP x SMAP x NXE x CPL 0/3 x EFLAGS.AC x
 * access.  AC only lifts SMAP for explicit CPL0 accesses; at CPL3 (CR0.AM
 * clear, so no alignment checks) it must change nothing, implicit accesses
 * included.
 */
static void for_each_cpu_state(struct ctx *x, struct kvm_oracle_case c)
{
	for (unsigned int s = 0; s < 16; s++) {
		c.wp = s & 1;
		c.smep = s & 2;
		c.smap = s & 4;
		c.nxe = s & 8;
		for (unsigned int m = 0; m < 4; m++) {
			c.cpl = m & 2 ? 3 : 0;
			c.ac = m & 1;
			for (unsigned int a = 0; a < NR_ACCESSES; a++) {
				c.access = accesses[a];
				judge(x, &c);
			}
		}
	}
}

static void run_permission_space(struct ctx *x)
{
	struct kvm_oracle_case c;

	/* Initial A/D of the 4K case's PDE and PTE: all clear, all set, PTE
	 * accessed but clean, and dirty-but-not-accessed under a PDE whose
	 * (ignored, non-leaf) D bit is set. */
	static const uint64_t ad4k[][2] = {
		{ 0, 0 },
		{ KO_PTE_A, KO_PTE_A | KO_PTE_D },
		{ KO_PTE_A, KO_PTE_A },
		{ KO_PTE_D, KO_PTE_D },
	};

	/* 4K leaf: PDE x PTE permission bits x those A/D states.  A not-present
	 * PDE makes the PTE irrelevant: one PTE for it. */
	for (unsigned int ad = 0; ad < 4; ad++) {
		for (unsigned int i = 0; i < 16; i++) {
			for (unsigned int j = 0; j < 16; j++) {
				if (!(pwun(i) & F_P) && j != 7)
					continue;
				memset(&c, 0, sizeof(c));
				c.leaf = 1;
				c.pde_flags = pwun(i) | ad4k[ad][0];
				c.pte_flags = pwun(j) | ad4k[ad][1];
				for_each_cpu_state(x, c);
			}
		}
	}
	/* 2M leaf: PDE bits x the four A/D states of the leaf. */
	for (unsigned int ad = 0; ad < 4; ad++) {
		for (unsigned int i = 0; i < 16; i++) {
			memset(&c, 0, sizeof(c));
			c.leaf = 2;
			c.pde_flags = pwun(i) | (ad & 1 ? KO_PTE_A : 0) | (ad & 2 ? KO_PTE_D : 0);
			for_each_cpu_state(x, c);
		}
	}
}

/*
 * Protection keys: user and supervisor leaves, key 0 and key 5, PKRU with
 * AD/WD on either key, at both CPLs with and without WP (WD binds
 * supervisor writes only with WP) and SMAP.
 */
static void run_pkey_space(struct ctx *x)
{
	static const uint32_t pkrus[] = {
		0, 1u << 0, 2u << 0, 1u << (2 * 5), 2u << (2 * 5), (1u << 0) | (2u << (2 * 5)), 0xfffffffc,
	};
	struct kvm_oracle_case c;

	for (unsigned int j = 0; j < 4; j++) {
		for (unsigned int key = 0; key <= 5; key += 5) {
			for (unsigned int p = 0; p < sizeof(pkrus) / sizeof(pkrus[0]); p++) {
				for (unsigned int s = 0; s < 4; s++) {
					for (unsigned int m = 0; m < 4; m++) {
						for (unsigned int a = 0; a < NR_ACCESSES; a++) {
							memset(&c, 0, sizeof(c));
							c.leaf = 1;
							c.pde_flags = F_P | F_W | F_U;
							c.pte_flags = F_P | (j & 1 ? F_W : 0) | (j & 2 ? F_U : 0);
							c.pkey = key;
							c.pke = true;
							c.pkru = pkrus[p];
							c.nxe = true;
							c.wp = s & 1;
							c.smap = s & 2;
							c.cpl = m & 2 ? 3 : 0;
							c.ac = m & 1;
							c.access = accesses[a];
							judge(x, &c);
						}
					}
				}
			}
		}
	}
}

/*
 * Reserved and ignored bits: an address bit at MAXPHYADDR and bit 51 in the
 * PTE or the non-leaf PDE, 2M-alignment bits 20:13 of a 2M PDE, and the
 * ignored bits 52..58 (and 59..62 without PKE), which must not fault.
 */
static void run_rsvd_space(struct ctx *x)
{
	uint64_t maxpa = 1ULL << kvm_oracle_maxphyaddr(x->o);
	const struct {
		unsigned int leaf;
		uint64_t pde_extra, pte_extra;
	} shapes[] = {
		{ 1, 0, maxpa }, { 1, 0, 1ULL << 51 }, { 1, maxpa, 0 }, { 1, 0, 0x7ff0000000000000ULL },
		{ 1, 0x7ff0000000000000ULL, 0 }, { 2, 1ULL << 13, 0 }, { 2, 1ULL << 20, 0 }, { 2, maxpa, 0 },
		{ 2, 0x7ff0000000000000ULL, 0 },
	};
	struct kvm_oracle_case c;

	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		if (maxpa > (1ULL << 51) && (shapes[i].pde_extra | shapes[i].pte_extra) & maxpa)
			continue;
		for (unsigned int s = 0; s < 2; s++) {
			for (unsigned int m = 0; m < 2; m++) {
				for (unsigned int a = 0; a < NR_ACCESSES; a++) {
					memset(&c, 0, sizeof(c));
					c.leaf = shapes[i].leaf;
					c.pde_flags = F_P | F_W | F_U;
					c.pte_flags = F_P | F_W | F_U;
					c.pde_extra = shapes[i].pde_extra;
					c.pte_extra = shapes[i].pte_extra;
					c.wp = true;
					c.nxe = s;
					c.cpl = m ? 3 : 0;
					c.access = accesses[a];
					judge(x, &c);
				}
			}
		}
	}
}

/* ---- the test ----------------------------------------------------------- */

/* Combinations no case is generated for, with the reason; counted as the
 * permission space would multiply them. */
static void tally_unmodelled(struct ctx *x)
{
	struct tally *t = &x->t;

	/* As many as the 2M leaf space: PDPTE bits x A/D x CPU states x accesses. */
	uint64_t nr_1g = 16 * 4 * 16 * 4 * NR_ACCESSES;

	if (!kvm_oracle_has(x->o, KVM_ORACLE_1G))
		tally_not_judged(t, "1G leaves (PDPTE.PS): KVM offers no 1G pages to the guest here", nr_1g);
	else
		tally_not_judged(t, "1G leaves (PDPTE.PS): the oracle's test mapping has no 1G variant", nr_1g);
	/* Whole modes: no count, the oracle never enters them. */
	tally_not_judged(t, kvm_oracle_has(x->o, KVM_ORACLE_LA57)
				    ? "5-level paging: the oracle sets up 4-level long mode only"
				    : "5-level paging: LA57 not offered by KVM", 0);
	tally_not_judged(t, "32-bit and PAE paging, EPT: the oracle runs 4-level long mode only", 0);
}

TEST(walk_matches_kvm)
{
	struct ctx x;
	char why[256];
	double t0 = now_s(), elapsed;
	uint64_t run_ns, runs;
	const char *iw0, *iw3;

	memset(&x, 0, sizeof(x));
	if (kvm_oracle_open(&x.o, why, sizeof(why)) < 0)
		SKIP("KVM oracle unavailable: %s", why);
	x.base = malloc(sizeof(*x.base));
	x.mem = malloc(sizeof(*x.mem));
	ASSERT_TRUE(x.base && x.mem);
	memcpy(x.base->bytes, kvm_oracle_mem(x.o), FLAT_SIZE);
	memcpy(x.mem, x.base, sizeof(*x.mem));

	for (int f = 0; f < KVM_ORACLE_NR_FEATURES; f++)
		fprintf(stderr, "  feature %-8s %s: %s\n", kvm_oracle_feature_name(f),
			kvm_oracle_has(x.o, f) ? "yes" : "no ", kvm_oracle_feature_why(x.o, f));
	kvm_oracle_implicit_ok(x.o, 0, &iw0);
	kvm_oracle_implicit_ok(x.o, 3, &iw3);
	fprintf(stderr, "  implicit supervisor accesses: CPL0 %s, CPL3 %s; MAXPHYADDR %u\n", iw0, iw3,
		kvm_oracle_maxphyaddr(x.o));

	run_permission_space(&x);
	run_pkey_space(&x);
	run_rsvd_space(&x);
	tally_unmodelled(&x);

	elapsed = now_s() - t0;
	kvm_oracle_stats(x.o, &run_ns, &runs);
	fprintf(stderr, "  judged %llu combinations (%llu fault, %llu succeed): %llu agree, %llu disagree; %llu oracle errors\n",
		(unsigned long long)x.t.judged, (unsigned long long)x.t.faults, (unsigned long long)x.t.successes,
		(unsigned long long)x.t.agreed, (unsigned long long)x.t.disagreed, (unsigned long long)x.t.errors);
	if (x.t.skipped)
		fprintf(stderr, "  %llu combinations not run: stopped after %d oracle errors\n",
			(unsigned long long)x.t.skipped, MAX_ORACLE_ERRORS);
	fprintf(stderr, "  not judged:\n");
	for (unsigned int i = 0; i < x.t.nr_categories; i++) {
		if (x.t.not_judged[i].n)
			fprintf(stderr, "    %8llu  %s\n", (unsigned long long)x.t.not_judged[i].n, x.t.not_judged[i].why);
		else
			fprintf(stderr, "    %8s  %s\n", "(mode)", x.t.not_judged[i].why);
	}
	if (x.t.not_judged_other)
		fprintf(stderr, "    %8llu  (other reasons)\n", (unsigned long long)x.t.not_judged_other);
	fprintf(stderr, "  %.1f s elapsed; %llu KVM_RUNs, %.1f us each\n", elapsed, (unsigned long long)runs,
		runs ? (double)run_ns / 1e3 / (double)runs : 0.0);

	kvm_oracle_close(x.o);
	free(x.base);
	free(x.mem);
	ASSERT_EQ(x.t.errors, 0);
	ASSERT_EQ(x.t.disagreed, 0);
	ASSERT_GT(x.t.judged, 0);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
