/* SPDX-License-Identifier: MIT */
/*
 * Exhaustive nested accesses against the reference composition of
 * nested_ref.[ch]: L2's walk by walk_ref's rules, every L2 table entry and
 * the final L2 guest-physical address translated through L1's EPT (Intel
 * SDM 3C 29.3) or NPT (AMD APM 15.25) by the rules of those.
 *
 * Every TDP variant that runs nested guests and every L2 paging mode it
 * fits (test_access's modes: 32-bit, 32-bit+PSE, PAE, 4-level, 5-level)
 * gets one VM whose vCPU 0 is L1.  L2's page tables are one page per level,
 * each alone in a 2M region of L2's guest-physical space, and so are L2's
 * two data frames (the 4K page and the huge page the exhaustive entries
 * map), so that one L1 PDE and one L1 PTE translate each of them and
 * nothing else.  One of those pages at a time is the target -- a table
 * level, or both data pages -- and its L1 PDE and PTE take every L1
 * combination:
 *
 *  - EPT: PDE referencing the PT, with R/W/X 0..7, under a PTE with R/W/X
 *    0..7, memory type 0..7 and A/D preset 0..3, a reserved bit in neither,
 *    the PDE or the PTE; or the PDE a 2M leaf with R/W/X, memory type, A/D
 *    and reserved bit as well; ignored bits (and IPAT) set on every other
 *    combination; each under EPTP A/D off and on, execute-only offered or
 *    not;
 *  - NPT: the PDE/PTE P, W, U, NX, PS and reserved-bit combinations
 *    walk_exhaustive runs (exh_for_each), with A/D preset 0..3 in the leaf,
 *    under L1's EFER.NXE 0 and 1.
 *
 * Under each L1 combination, changed by L1's own stores and followed by
 * INVEPT (NPT: VMRUN with TLB_CONTROL flushing the guest), a slice of the
 * L2 combinations of the existing exhaustive test runs: L2's PDE/PTE
 * combinations (exh_for_each), each under a CPU state that rotates
 * through all 512 and with all five accesses, each access twice -- fresh
 * (L2's entries exactly the combination, nothing cached) and warm (A/D as
 * the first access left them, its translation cached).  The slices follow
 * each other through the L2 combinations, so every L2 entry combination
 * meets every access under many L1 combinations and CPU states.  Since
 * most of those fault in L2's own walk before reaching the target, each L1
 * combination also meets an L2 walk that completes (read, write, fetch);
 * and every fourth, physical accesses to the target page (no linear
 * address).  The first access after each change repeats the last one with
 * L2's tables and state untouched: only INVEPT (TLB_CONTROL) makes L1's
 * change visible to it.  VMMU_VM_AD_DISABLED variants run every fifth L1 combination.
 *
 * After each access the outcome is compared with the model's (bytes moved
 * and where, L2's #PF with its error code and CR2, or the nested exit's
 * kind, L2 address, final/gla bits and qualification) and so is every
 * entry of either level that translates the pages (A/D as the model says,
 * the rest untouched).  The model is given the entries as they are in
 * memory right before the access; a change is always followed by the
 * invalidation the architecture asks for (L2's INVLPG or MOV to CR3 for
 * its own entries, INVEPT/TLB_CONTROL for L1's), so no stale translation
 * is allowed and the model is exact.
 *
 * VMMU_NESTED_ACCESS_STRIDE=N runs every N-th L1 combination (the default
 * is 1 plain, a sample under the sanitizers).
 */
#include <inttypes.h>

#include "nested_ref.h"
#include "nested_test.h"
#include "walk_ref.h"
#include "walk_test.h"

#define PAGE 4096ULL
#define SZ_2M (2 * NT_MB)
/* L2's table pages: level l at L2_TABLES + (top - l) * 2M + TABLE_OFF,
 * below 4G (32-bit and PAE CR3s and entries hold 32-bit addresses). */
#define L2_TABLES 0x40000000ULL
#define TABLE_OFF 0x123000ULL
#define PAE_PDPT_OFFSET 0x7e0ULL
/* A quadword no walk reads, for physical accesses to table pages. */
#define TABLE_SPARE 0xff8ULL
/* L1 frames of the regions: 2M each from here (nt_setup leaves it free). */
#define L1_REGIONS (64 * NT_MB)

#if UNDER_SANITIZER
#define DEFAULT_STRIDE 97
#else
#define DEFAULT_STRIDE 1
#endif
/* L2 accesses per L1 combination: one entry combination under one CPU
 * state, all five accesses, fresh and warm. */
#define SLICE 10
#define MAX_REPORTS 10

enum { PASS_FRESH, PASS_WARM };

/* Region indices: table levels 1..5, then the data pages. */
#define R_DATA4K 6
#define R_DATAHUGE 7
#define NR_REGIONS 8
/* Targets: a table level (1..5), or T_DATA for both data regions. */
#define T_DATA 0

struct region {
	bool used;
	uint64_t l2;		/* L2 gpa of the page */
	uint64_t l1;		/* L1 gpa of its frame */
	uint64_t l1_2m;		/* L1 gpa of the 2M region's frame (a leaf PDE's) */
	uint64_t pt;		/* L1 gpa of the L1 page table under its PDE */
	uint64_t egpa[REF_MAX_LEVEL + 1];	/* L1 gpas of its L1 entries, by level */
};

/* One combination of the target's L1 PDE and PTE (addresses added per region). */
struct l1_combo {
	uint64_t pde, pte;
	bool pde_leaf;
	bool xonly;		/* EPT: an entry with X but not R (or W) */
};

struct nenv {
	struct nt t;
	const struct amode *m;
	unsigned int maxphyaddr;
	int top, l1_levels;
	unsigned int esize;
	bool npt;
	uint64_t gva, cr3, pdpte[4];
	uint64_t frame_4k, frame_huge, huge_size;
	uint64_t gpa_4k, gpa_huge;	/* where the access lands in L2 through each leaf */
	uint64_t table[REF_MAX_LEVEL + 1];	/* L2 gpa of each level's table */
	uint64_t upper[REF_MAX_LEVEL + 1];	/* L2's permissive entries above the PDE */
	struct region reg[NR_REGIONS];
	uint64_t known[NR_REGIONS * REF_MAX_LEVEL];	/* every L1 entry the pages use */
	unsigned int nknown;
	/* L1's side now */
	int target;
	bool ad, xo, nxe;
	const struct l1_combo *combo;
	/* L2's side now */
	struct vmmu_cpu_state cur;
	struct ref_cpu cur_rc;		/* the reference's view of cur */
	unsigned int last_acc;		/* the last access made */
	unsigned int rsvd_sel[2][3];
	struct exh_entries *l2e;	/* the L2 entry combinations */
	unsigned int nl2e;
	unsigned int *reach;		/* those whose walk completes */
	unsigned int nreach, nreach_next;
	uint64_t seq, j, rewrites;
	/* counts */
	unsigned long n, n_ok, n_pf, n_nested, n_phys, n_l1;
	unsigned long kinds[5];
};

static unsigned long nr_mismatch;

/* ---- memory ------------------------------------------------------------------- */

static uint64_t mem_read(void *ctx, uint64_t gpa, unsigned int size)
{
	struct nenv *e = ctx;
	void *h;

	if (vmmu_gpa_to_hva(e->t.vm, gpa, &h))
		return 0;
	return size == 4 ? __atomic_load_n((uint32_t *)h, __ATOMIC_ACQUIRE) : __atomic_load_n((uint64_t *)h, __ATOMIC_ACQUIRE);
}

static void host_store(struct nenv *e, uint64_t gpa, uint64_t v, unsigned int size)
{
	void *h;

	ASSERT_OK(vmmu_gpa_to_hva(e->t.vm, gpa, &h));
	if (size == 4)
		__atomic_store_n((uint32_t *)h, (uint32_t)v, __ATOMIC_RELEASE);
	else
		__atomic_store_n((uint64_t *)h, v, __ATOMIC_RELEASE);
}

/* A store by the vCPU: L1's own (outside guest mode) or L2's (inside). */
static void vcpu_store(struct nenv *e, uint64_t gpa, uint64_t v, unsigned int size)
{
	struct vmmu_exit x;
	uint32_t v32 = (uint32_t)v;
	int r;

	memset(&x, 0, sizeof(x));
	r = vmmu_vcpu_access(e->t.vcpu, gpa, size == 4 ? (void *)&v32 : (void *)&v, size,
			     VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);
	if (r)
		test_fail(__FILE__, __LINE__, "[%s %s] store to gpa %#" PRIx64 " (%s): r=%d exit %s", e->t.var->name,
			  e->m->name, gpa, vmmu_vcpu_in_guest_mode(e->t.vcpu) ? "L2" : "L1", r,
			  r == VMMU_EXIT ? exit_name(x.reason) : "-");
}

/* ---- L1's tables ---------------------------------------------------------------- */

static uint64_t l1_rwx(const struct nenv *e)
{
	return nt_flags(&e->t, true, true, true);
}

/* The region's L1 entries for combination c (NULL: fully permissive). */
static void region_values(const struct nenv *e, const struct region *r, const struct l1_combo *c, uint64_t *pde,
			  uint64_t *pte)
{
	if (!c) {
		uint64_t link = e->npt ? GUEST_PTE_P | GUEST_W | GUEST_U : GUEST_EPT_RWX;

		*pde = r->pt | link;
		*pte = r->l1 | l1_rwx(e) | (e->npt ? GUEST_PTE_P : 0);
		return;
	}
	*pde = c->pde | (c->pde_leaf ? r->l1_2m : r->pt);
	*pte = c->pte | r->l1;
}

static bool region_in_target(int target, int ri)
{
	return target == T_DATA ? ri == R_DATA4K || ri == R_DATAHUGE : ri == target;
}

static void enter_l2(struct nenv *e)
{
	struct vmmu_nested_state ns;

	memset(&ns, 0, sizeof(ns));
	ns.vpid = 1;
	if (e->npt) {
		ns.ncr3 = guest_pt_cr3(e->t.ept);
		/* What L1 changed in its NPT reaches L2 at VMRUN with a flush. */
		ns.tlb_control = VMMU_TLB_CONTROL_FLUSH_GUEST;
	} else {
		ns.eptp = guest_pt_eptp(e->t.ept, e->ad);
		ns.flags = e->xo ? VMMU_NESTED_EXEC_ONLY : 0;
	}
	ns.l2 = e->cur;
	ASSERT_OK(vmmu_vcpu_enter_guest_mode(e->t.vcpu, &ns));
}

/*
 * L1 makes (target, c) its tables for L2, with its own stores, and
 * invalidates: INVEPT of the EPTP (NPT: the VMRUN's TLB control).
 */
static void l1_apply(struct nenv *e, int target, bool ad, bool xo, bool nxe, const struct l1_combo *c)
{
	nt_leave(&e->t);
	for (int ri = 0; ri < NR_REGIONS; ri++) {
		struct region *r = &e->reg[ri];
		uint64_t pde, pte;

		if (!r->used)
			continue;
		if (!region_in_target(target, ri) && !region_in_target(e->target, ri))
			continue;
		region_values(e, r, region_in_target(target, ri) ? c : NULL, &pde, &pte);
		if (mem_read(e, r->egpa[1], 8) != pte)
			vcpu_store(e, r->egpa[1], pte, 8);
		if (mem_read(e, r->egpa[2], 8) != pde)
			vcpu_store(e, r->egpa[2], pde, 8);
	}
	if (e->npt && nxe != e->nxe) {
		struct vmmu_cpu_state s;

		ASSERT_OK(vmmu_vcpu_get_state(e->t.vcpu, &s));
		s.efer = nxe ? s.efer | VMMU_EFER_NXE : s.efer & ~VMMU_EFER_NXE;
		ASSERT_OK(vmmu_vcpu_set_state(e->t.vcpu, &s));
	}
	if (!e->npt)
		ASSERT_OK(vmmu_vcpu_invept(e->t.vcpu, VMMU_INVEPT_SINGLE, guest_pt_eptp(e->t.ept, ad)));
	e->target = target;
	e->ad = ad;
	e->xo = xo;
	e->nxe = nxe;
	e->combo = c;
	e->n_l1++;
	enter_l2(e);
}

/* ---- set-up ----------------------------------------------------------------------- */

static void region_add(struct nenv *e, int ri, uint64_t l2_page)
{
	struct region *r = &e->reg[ri];
	uint64_t v;

	r->used = true;
	r->l2 = l2_page;
	r->l1_2m = L1_REGIONS + (uint64_t)ri * SZ_2M;
	r->l1 = r->l1_2m + (l2_page & (SZ_2M - 1));
	ASSERT_OK(guest_map(e->t.ept, l2_page, r->l1, PAGE, GUEST_PAGE_4K, l1_rwx(e)));
	for (int level = 1; level <= e->l1_levels; level++) {
		ASSERT_OK(guest_get_entry(e->t.ept, l2_page, level, &v, &r->egpa[level]));
		if (level == 2)
			r->pt = v & bitmask(12, e->maxphyaddr - 1);
	}
	for (int level = 1; level <= e->l1_levels; level++) {
		bool dup = false;

		for (unsigned int k = 0; k < e->nknown; k++)
			dup |= e->known[k] == r->egpa[level];
		if (!dup)
			e->known[e->nknown++] = r->egpa[level];
	}
}

/* L1 gpa of L2 gpa g of a region's page (the target maps it to the same place). */
static uint64_t l1_of(const struct nenv *e, uint64_t g)
{
	for (int ri = 0; ri < NR_REGIONS; ri++)
		if (e->reg[ri].used && (g & ~(PAGE - 1)) == e->reg[ri].l2)
			return e->reg[ri].l1 | (g & (PAGE - 1));
	test_fail(__FILE__, __LINE__, "test bug: L2 gpa %#" PRIx64 " is in no region", g);
}

static uint64_t l2_entry_l1(const struct nenv *e, int level)
{
	uint64_t g;

	if (e->m->paging == REF_PAGING_32)
		g = e->table[level] + 4 * ((e->gva >> (12 + 10 * (level - 1))) & 1023);
	else if (e->m->paging == REF_PAGING_PAE && level == 3)
		g = e->table[3] + 8 * ((e->gva >> 30) & 3);
	else
		g = e->table[level] + 8 * ((e->gva >> (12 + 9 * (level - 1))) & 511);
	return l1_of(e, g);
}

static uint64_t l2_entry_l2(const struct nenv *e, int level)
{
	return e->table[level] + (l2_entry_l1(e, level) & (PAGE - 1));
}

static void collect_l2e(void *ctx, const struct exh_entries *en)
{
	struct nenv *e = ctx;

	e->l2e = realloc(e->l2e, (e->nl2e + 1) * sizeof(*e->l2e));
	ASSERT_TRUE(e->l2e != NULL);
	e->l2e[e->nl2e++] = *en;
}

static uint64_t rsvd_cb(void *ctx, int level, bool ps, bool huge)
{
	struct nenv *e = ctx;
	struct ref_cpu rc = amode_ref_cpu(e->m, e->maxphyaddr);

	(void)huge;
	return amode_rsvd_bit(&rc, e->rsvd_sel, level, ps);
}

static void nenv_create(struct nenv *e, const struct mmu_variant *var, const struct amode *m)
{
	struct vmmu_vm_config cfg;
	struct ref_cpu rc;
	uint64_t off;

	memset(e, 0, sizeof(*e));
	nt_setup(&e->t, var, 0, 1);
	variant_config(var, &cfg);
	e->m = m;
	e->maxphyaddr = cfg.maxphyaddr;
	e->npt = e->t.npt;
	e->l1_levels = (int)var->tdp_levels;
	e->top = ref_top_level(m->paging);
	e->esize = ref_entry_bytes(m->paging);
	e->gva = amode_gva(m);
	e->ad = e->t.ad;
	e->nxe = true;
	e->target = -1;
	rc = amode_ref_cpu(m, e->maxphyaddr);
	amode_frames(m, e->maxphyaddr, &e->frame_4k, &e->frame_huge);
	e->huge_size = ref_page_size(&rc, 2);
	e->gpa_4k = e->frame_4k | (e->gva & (PAGE - 1));
	e->gpa_huge = e->frame_huge | (e->gva & (e->huge_size - 1));

	for (int level = e->top; level >= 1; level--) {
		e->table[level] = L2_TABLES + (uint64_t)(e->top - level) * SZ_2M + TABLE_OFF;
		region_add(e, level, e->table[level]);
		if (m->paging == REF_PAGING_PAE && level == 3)
			e->table[level] += PAE_PDPT_OFFSET;
	}
	region_add(e, R_DATA4K, e->gpa_4k & ~(PAGE - 1));
	region_add(e, R_DATAHUGE, e->gpa_huge & ~(PAGE - 1));
	/* L2's CR3 with PWT/PCD set: the walk must mask them off. */
	e->cr3 = e->table[e->top] | E_PWT | E_PCD;
	/* L2's permissive upper levels (walk_test.h's amode_upper_entry()). */
	for (int level = e->top; level >= 3; level--) {
		uint64_t u = amode_upper_entry(m, level, e->table[m->paging == REF_PAGING_PAE ? 2 : level - 1]);

		e->upper[level] = u;
		host_store(e, l2_entry_l1(e, level), u, 8);
	}
	if (m->paging == REF_PAGING_PAE) {
		for (int i = 0; i < 4; i++) {
			off = e->table[3] + 8ULL * (uint64_t)i;
			e->pdpte[i] = mem_read(e, l1_of(e, off), 8);
		}
	}

	{
		struct exh_space sp = {
			.rc = &rc,
			.has_nx = e->esize == 8,
			.has_pk = m->paging == REF_PAGING_4LEVEL || m->paging == REF_PAGING_5LEVEL,
			.addr_4k = amode_leaf_addr_bits(m, 1, e->frame_4k),
			.addr_huge = amode_leaf_addr_bits(m, 2, e->frame_huge),
			.pt = e->table[1],
			.rsvd_bit = rsvd_cb,
			.fn = collect_l2e,
			.ctx = e,
		};
		exh_for_each(&sp);
	}
	e->reach = calloc(e->nl2e, sizeof(*e->reach));
	ASSERT_TRUE(e->reach != NULL);
	for (unsigned int i = 0; i < e->nl2e; i++) {
		struct ref_pte pde = ref_decode(&rc, 2, e->l2e[i].pde), pte = ref_decode(&rc, 1, e->l2e[i].pte);

		if (pde.p && !pde.rsvd && (ref_is_leaf(&rc, 2, pde.ps) || (pte.p && !pte.rsvd)))
			e->reach[e->nreach++] = i;
	}
	ASSERT_GT(e->nreach, 0);
	/* L2 starts in the first CPU state (paging on, so VM entry loads it). */
	{
		struct ref_cpu rc0;

		amode_cpu(m, e->maxphyaddr, 0, 0, e->cr3, &rc0, &e->cur);
	}
	enter_l2(e);
}

static void nenv_destroy(struct nenv *e)
{
	if (vmmu_vcpu_in_guest_mode(e->t.vcpu))
		nt_leave(&e->t);
	free(e->l2e);
	free(e->reach);
	nt_teardown(&e->t);
}

/* ---- L2's side ---------------------------------------------------------------------- */

static void set_state(struct nenv *e, const struct vmmu_cpu_state *s)
{
	if (s->cr0 == e->cur.cr0 && s->cr3 == e->cur.cr3 && s->cr4 == e->cur.cr4 &&
	    (s->efer & ~VMMU_EFER_LMA) == (e->cur.efer & ~VMMU_EFER_LMA) && s->rflags == e->cur.rflags &&
	    s->pkru == e->cur.pkru && s->cpl == e->cur.cpl)
		return;
	ASSERT_OK(vmmu_vcpu_set_state(e->t.vcpu, s));
	e->cur = *s;
}

/*
 * L2's entry at level gets v: by L2's own store, unless its page is the
 * target (whose L1 mapping may refuse the store): then by L1, which writes
 * its guest's memory directly (L2's tables are not shadowed: the hardware
 * walks them, so only L2's own invalidation matters).
 */
static void l2_store(struct nenv *e, int level, uint64_t v)
{
	if (region_in_target(e->target, level))
		host_store(e, l2_entry_l1(e, level), v, e->esize);
	else
		vcpu_store(e, l2_entry_l2(e, level), v, e->esize);
}

/* L2's entries to want (fresh: exactly; warm: up to A/D), then INVLPG or a
 * MOV to CR3 (only when no global translation can be cached: it keeps those). */
static const char *l2_sync(struct nenv *e, const uint64_t *want, int pass)
{
	struct ref_cpu rc = amode_ref_cpu(e->m, e->maxphyaddr);
	uint64_t old[REF_MAX_LEVEL + 1] = { 0 };
	bool changed = false;

	for (int level = e->top; level >= 1; level--) {
		uint64_t diff;

		old[level] = mem_read(e, l2_entry_l1(e, level), e->esize);
		diff = old[level] ^ want[level];
		if (pass == PASS_WARM)
			diff &= ~E_AD;
		if (diff) {
			l2_store(e, level, want[level]);
			changed = true;
		}
	}
	if (!changed)
		return "none";
	if ((++e->rewrites & 1) || amode_leaf_may_be_global(&rc, old)) {
		vmmu_vcpu_invlpg(e->t.vcpu, e->gva);
		return "invlpg";
	}
	ASSERT_OK(vmmu_vcpu_write_cr3(e->t.vcpu, e->cr3));
	return "cr3";
}

/* ---- one access ----------------------------------------------------------------------- */

static void report(struct nenv *e, const char *why, const char *what, const struct ref_cpu *rc, uint64_t addr,
		   int ret, const struct vmmu_exit *x, const struct nref_outcome *o, unsigned int nk,
		   const uint64_t *before, const uint64_t *after)
{
	struct sbuf b = { .n = 0 };
	char target[16];

	const char *max = getenv("VMMU_NESTED_ACCESS_REPORTS");

	if (++nr_mismatch > (max ? strtoul(max, NULL, 0) : MAX_REPORTS))
		return;
	if (e->target == T_DATA)
		snprintf(target, sizeof(target), "data");
	else
		snprintf(target, sizeof(target), "table L%d", e->target);
	sb_printf(&b, "[%s %s] %s at %#" PRIx64 ": %s\n      L1: target %s", e->t.var->name, e->m->name, what, addr,
		  why, target);
	if (e->npt)
		sb_printf(&b, " nxe=%d", e->nxe);
	else
		sb_printf(&b, " eptp.ad=%d exec-only=%d", e->ad, e->xo);
	sb_printf(&b, " pde=%#" PRIx64 " pte=%#" PRIx64, e->combo ? e->combo->pde : 0, e->combo ? e->combo->pte : 0);
	sb_printf(&b, "\n      L2: cpu{wp=%d smep=%d smap=%d ac=%d pke=%d pkru=%#x nxe=%d cpl=%u}", rc->wp, rc->smep,
		  rc->smap, rc->ac, rc->pke, rc->pkru, rc->nxe, rc->cpl);
	sb_printf(&b, "\n      vmmu:   ret=%d", ret);
	if (ret == VMMU_EXIT && x->reason == VMMU_EXIT_GUEST_FAULT)
		sb_printf(&b, " L2 fault vector=%u ec=%#x addr=%#" PRIx64, x->u.guest_fault.vector, x->u.guest_fault.error_code,
			  x->u.guest_fault.addr);
	else if (ret == VMMU_EXIT && x->reason == VMMU_EXIT_NESTED)
		sb_printf(&b, " nested kind=%u gpa=%#" PRIx64 " qual=%#" PRIx64 " final=%u gla_valid=%u gla=%#" PRIx64,
			  x->u.nested.kind, x->u.nested.gpa, x->u.nested.qualification, x->u.nested.final,
			  x->u.nested.gla_valid, x->u.nested.gla);
	else if (ret == VMMU_EXIT)
		sb_printf(&b, " exit %s", exit_name(x->reason));
	sb_printf(&b, "\n      model:  %s", nref_kind_name(o->kind));
	if (o->kind == NREF_L2_PF)
		sb_printf(&b, " ec=%#x", o->pf_error_code);
	else if (o->kind == NREF_OK)
		sb_printf(&b, " l2 gpa=%#" PRIx64 " l1 gpa=%#" PRIx64, o->l2_gpa, o->l1_gpa);
	else
		sb_printf(&b, " gpa=%#" PRIx64 " qual=%#" PRIx64 " final=%d gla_valid=%d", o->ngpa, o->qual, o->final,
			  o->gla_valid);
	sb_printf(&b, "\n      entries (L1 gpa: before -> vmmu after / model after):");
	for (unsigned int k = 0; k < nk; k++) {
		uint64_t g = k < e->nknown ? e->known[k] : l2_entry_l1(e, (int)(k - e->nknown) + 1);
		uint64_t want = nref_after(o, g, before[k]);

		if (before[k] != want || after[k] != want)
			sb_printf(&b, "\n        %s %#" PRIx64 ": %#" PRIx64 " -> %#" PRIx64 " / %#" PRIx64 "%s",
				  k < e->nknown ? "L1" : "L2", g, before[k], after[k], want, after[k] != want ? "  <--" : "");
	}
	fprintf(stderr, "  MISMATCH %s\n", b.s);
}

/* The L1 address of the 8-byte quadword the access at L2 gpa g reaches. */
static uint64_t *data_hva(struct nenv *e, uint64_t l1_gpa)
{
	void *h;

	ASSERT_OK(vmmu_gpa_to_hva(e->t.vm, l1_gpa, &h));
	return h;
}

static void run_access(struct nenv *e, const struct ref_cpu *rc, uint64_t addr, bool phys, unsigned int type,
		       const char *what)
{
	bool write = type & VMMU_ACCESS_WRITE;
	struct ref_access ra = {
		.write = write,
		.fetch = (type & VMMU_ACCESS_TYPE_MASK) == VMMU_ACCESS_FETCH,
		.implicit = type & VMMU_ACCESS_IMPLICIT,
	};
	struct nref_l1 l1 = {
		.npt = e->npt,
		.levels = e->l1_levels,
		.maxphyaddr = e->maxphyaddr,
		.root = guest_pt_cr3(e->t.ept),
		.ad = e->ad,
		.exec_only = e->xo,
		.nxe = e->nxe,
	};
	struct nref_mem mem = { mem_read, e };
	struct nref_outcome o;
	uint64_t before[NR_REGIONS * REF_MAX_LEVEL + REF_MAX_LEVEL], after[NR_REGIONS * REF_MAX_LEVEL + REF_MAX_LEVEL];
	uint64_t pat, buf, *dst[3] = { NULL, NULL, NULL }, old[3] = { 0, 0, 0 };
	unsigned int nk = e->nknown + (unsigned int)(phys ? 0 : e->top), nd = 0;
	uint64_t *want_hva = NULL;
	struct vmmu_exit x;
	const char *why = NULL;
	int ret;

	/* The L1 quadwords an access here may reach: both data pages, and
	 * the spare quadword of a target table page. */
	dst[nd++] = data_hva(e, l1_of(e, e->gpa_4k));
	dst[nd++] = data_hva(e, l1_of(e, e->gpa_huge));
	if (phys && e->target != T_DATA)
		dst[nd++] = data_hva(e, l1_of(e, addr));
	for (unsigned int k = 0; k < nk; k++)
		before[k] = mem_read(e, k < e->nknown ? e->known[k] : l2_entry_l1(e, (int)(k - e->nknown) + 1),
				     k < e->nknown ? 8 : e->esize);
	nref_access(rc, e->cr3, e->pdpte, &l1, &mem, addr, phys, &ra, &o);

	e->seq++;
	pat = (e->seq * 0x9e3779b97f4a7c15ULL) ^ 0x5eedf00dULL;
	if (o.kind == NREF_OK) {
		want_hva = data_hva(e, o.l1_gpa);
		if (!write)
			__atomic_store_n(want_hva, pat, __ATOMIC_RELEASE);
	}
	for (unsigned int i = 0; i < nd; i++)
		old[i] = __atomic_load_n(dst[i], __ATOMIC_ACQUIRE);
	buf = write ? pat : ~pat;

	memset(&x, 0, sizeof(x));
	ret = vmmu_vcpu_access(e->t.vcpu, addr, &buf, sizeof(buf), type | (phys ? VMMU_ACCESS_PHYS : 0), &x);

	for (unsigned int k = 0; k < nk; k++)
		after[k] = mem_read(e, k < e->nknown ? e->known[k] : l2_entry_l1(e, (int)(k - e->nknown) + 1),
				    k < e->nknown ? 8 : e->esize);
	switch (o.kind) {
	case NREF_OK:
		if (ret != 0)
			why = "faulted or exited";
		else if (!write && buf != pat)
			why = "read the wrong bytes";
		else if (write && __atomic_load_n(want_hva, __ATOMIC_ACQUIRE) != pat)
			why = "write did not land at the L1 gpa";
		break;
	case NREF_L2_PF:
		if (ret != VMMU_EXIT || x.reason != VMMU_EXIT_GUEST_FAULT)
			why = "no L2 #PF";
		else if (x.u.guest_fault.vector != 14)
			why = "vector";
		else if (x.u.guest_fault.error_code != o.pf_error_code)
			why = "error code";
		else if (x.u.guest_fault.addr != addr)
			why = "fault address (CR2)";
		break;
	default: {
		uint32_t kind = o.kind == NREF_EPT_VIOLATION ? VMMU_NESTED_EPT_VIOLATION
				: o.kind == NREF_EPT_MISCONFIG ? VMMU_NESTED_EPT_MISCONFIG
							       : VMMU_NESTED_NPF;

		if (ret != VMMU_EXIT || x.reason != VMMU_EXIT_NESTED)
			why = "no nested exit";
		else if (x.u.nested.kind != kind)
			why = "nested exit kind";
		else if (x.u.nested.gpa != o.ngpa)
			why = "nested exit L2 gpa";
		else if (x.u.nested.qualification != o.qual)
			why = "qualification";
		else if (!!x.u.nested.final != o.final)
			why = "final bit";
		else if (!!x.u.nested.gla_valid != o.gla_valid || (o.gla_valid && x.u.nested.gla != addr))
			why = "linear address";
		break;
	}
	}
	/* Nothing else moved: a read changes no data, an exit moves nothing. */
	for (unsigned int i = 0; i < nd && !why; i++) {
		uint64_t now = __atomic_load_n(dst[i], __ATOMIC_ACQUIRE);

		if (dst[i] == want_hva && write)
			continue;
		if (now != old[i])
			why = o.kind == NREF_OK ? "wrote another quadword" : "an access that exits moved bytes";
	}
	if (!why && o.kind != NREF_OK && !write && buf != ~pat)
		why = "an access that exits filled the buffer";
	for (unsigned int k = 0; k < nk && !why; k++) {
		uint64_t g = k < e->nknown ? e->known[k] : l2_entry_l1(e, (int)(k - e->nknown) + 1);

		if (after[k] != nref_after(&o, g, before[k]))
			why = k < e->nknown ? "L1 entries after the access (A/D)" : "L2 entries after the access (A/D)";
	}
	e->n++;
	e->kinds[o.kind]++;
	if (phys)
		e->n_phys++;
	if (why)
		report(e, why, what, rc, addr, ret, &x, &o, nk, before, after);
}

/* One L2 access: entries en under CPU state cpu_c, fresh or warm. */
static void run_l2(struct nenv *e, const struct exh_entries *en, unsigned int cpu_c, unsigned int acc,
		   unsigned int pass)
{
	uint64_t want[REF_MAX_LEVEL + 1];
	struct vmmu_cpu_state st;
	struct ref_cpu rc;

	amode_cpu(e->m, e->maxphyaddr, cpu_c, en->key, e->cr3, &rc, &st);
	set_state(e, &st);
	e->cur_rc = rc;
	e->last_acc = acc;
	for (int level = e->top; level >= 3; level--)
		want[level] = e->upper[level];
	want[2] = en->pde;
	want[1] = en->pte;
	l2_sync(e, want, (int)pass);
	run_access(e, &rc, e->gva, false, amode_accesses[acc].type, amode_accesses[acc].name);
}

/* The next slice of the L2 combinations: one entry combination, all
 * accesses, fresh and warm. */
static void run_slice(struct nenv *e)
{
	for (unsigned int s = 0; s < SLICE; s++, e->j++) {
		uint64_t g = e->j / (2 * nr_amode_accesses);
		/* The CPU state moves on with every entry combination and shifts
		 * by one each time the combinations come round again, so each
		 * of them meets every state over the run. */
		unsigned int cpu_c = (unsigned int)(((g + g / e->nl2e) * 263) % NR_CPU_COMBOS);

		run_l2(e, &e->l2e[g % e->nl2e], cpu_c, (unsigned int)((e->j / 2) % nr_amode_accesses),
		       (unsigned int)(e->j % 2));
	}
}

/*
 * Most L2 combinations fault in L2's own walk before the pages below (or
 * the data page) are reached, which says nothing of the L1 combination of
 * those.  So each L1 combination also meets the next of the L2 entry
 * combinations whose walk completes (present, no reserved bit), 4K and huge
 * leaves alike, read, write and fetch, fresh and warm, under a permissive CPU
 * state (CR0.WP=0, no SMEP/SMAP/keys) with CPL and NXE rotating.
 */
static void run_reach(struct nenv *e)
{
	static const unsigned int cpus[] = { CPU_NXE, 0, CPU_NXE | CPU_CPL3, CPU_CPL3 };
	const struct exh_entries *en = &e->l2e[e->reach[e->nreach_next % e->nreach]];
	unsigned int cpu_c = cpus[(e->nreach_next / e->nreach) % 4];

	e->nreach_next++;
	/* Read, write, fetch (the first three accesses), fresh and warm. */
	for (unsigned int s = 0; s < 6; s++)
		run_l2(e, en, cpu_c, s / 2, s % 2);
}

/*
 * Right after L1's change: L2's last access once more, its own tables and
 * state untouched, so that only INVEPT (TLB_CONTROL) stands between it and
 * what L1's old tables gave (L2's INVLPG or MOV CR3 before the next ones
 * might hide a missing invalidation).
 */
static void run_again(struct nenv *e)
{
	if (e->n)
		run_access(e, &e->cur_rc, e->gva, false, amode_accesses[e->last_acc].type, "the same access again");
}

/* Physical accesses to the target page: no linear address, final only. */
static void run_phys(struct nenv *e)
{
	static const unsigned int types[] = { VMMU_ACCESS_READ, VMMU_ACCESS_WRITE, VMMU_ACCESS_FETCH };
	static const char *const names[] = { "phys read", "phys write", "phys fetch" };
	uint64_t addr = e->target == T_DATA ? e->gpa_4k : e->reg[e->target].l2 | TABLE_SPARE;
	/* Paging plays no part: any L2 state will do for the model. */
	struct ref_cpu rc = amode_ref_cpu(e->m, e->maxphyaddr);

	for (unsigned int i = 0; i < 3; i++)
		run_access(e, &rc, addr, true, types[i], names[i]);
}

/* ---- the L1 combinations ------------------------------------------------------------------ */

struct combos {
	struct l1_combo *c;
	unsigned int n;
};

static void combo_add(struct combos *cs, uint64_t pde, uint64_t pte)
{
	cs->c = realloc(cs->c, (cs->n + 1) * sizeof(*cs->c));
	ASSERT_TRUE(cs->c != NULL);
	cs->c[cs->n].pde = pde;
	cs->c[cs->n].pte = pte;
	cs->c[cs->n].pde_leaf = pde & GUEST_PTE_PS;
	cs->c[cs->n].xonly = (pde & 7) == 4 || (!(pde & GUEST_PTE_PS) && (pte & 7) == 4);
	cs->n++;
}

/* Rotates through the set bits of mask (sel keeps the place); 0 if none. */
static uint64_t rotate_bit(uint64_t mask, unsigned int *sel)
{
	unsigned int n = (unsigned int)__builtin_popcountll(mask), k;

	if (!n)
		return 0;
	k = (*sel)++ % n;
	for (unsigned int b = 0; b < 64; b++)
		if (((mask >> b) & 1) && k-- == 0)
			return 1ULL << b;
	return 0;
}

/* EPT entry bits (SDM 3C Tables 29-1 .. 29-6), spelled out for the test. */
#define EPT_MT(t) ((uint64_t)(t) << 3)
#define EPT_IPAT (1ULL << 6)
#define EPT_PS (1ULL << 7)
#define EPT_A (1ULL << 8)
#define EPT_D (1ULL << 9)
/* Ignored without mode-based execute control, #VE, sub-page permissions,
 * shadow stacks or paging-write control: 11:10 and 63:52 in a leaf; in an
 * entry referencing a table also 9 (D exists only in leaves). */
#define EPT_IGN_LEAF ((3ULL << 10) | (0xfffULL << 52))
#define EPT_IGN_TABLE (EPT_D | EPT_IGN_LEAF)

static void ept_combos(struct combos *cs, unsigned int m)
{
	unsigned int sel[3] = { 0, 0, 0 };
	unsigned int n = 0;

	/* The PDE referencing the PT. */
	for (unsigned int pde_rwx = 0; pde_rwx < 8; pde_rwx++)
		for (unsigned int pte_rwx = 0; pte_rwx < 8; pte_rwx++)
			for (unsigned int mt = 0; mt < 8; mt++)
				for (unsigned int ad = 0; ad < 4; ad++)
					for (int rsvd_at = 0; rsvd_at < 3; rsvd_at++, n++) {
						/* Bit 7 of a PDE is PS, not a reserved bit to set. */
						uint64_t pde_rsvd = rsvd_at == 1 ? rotate_bit(ref_ept_rsvd_mask(m, 2, false) & ~EPT_PS, &sel[0]) : 0;
						uint64_t pte_rsvd = rsvd_at == 2 ? rotate_bit(ref_ept_rsvd_mask(m, 1, false), &sel[1]) : 0;
						uint64_t pde = pde_rwx | pde_rsvd, pte = pte_rwx | EPT_MT(mt) | pte_rsvd;

						if (rsvd_at && !pde_rsvd && !pte_rsvd)
							continue;
						/*
						 * The PDE's A and ignored bits change every 96
						 * combinations (each R/W/X of it meets all four),
						 * so that most changes are to the PTE alone: a
						 * PDE store is emulated and relinks (and syncs)
						 * the PT's shadow, a PTE store to the unsync
						 * page is seen only through INVEPT.  The leaf's
						 * A/D as chosen, its ignored bits and IPAT on
						 * every other one.
						 */
						if ((n / 96) & 2)
							pde |= EPT_A;
						if ((n / 96) & 1)
							pde |= EPT_IGN_TABLE;
						pte |= (ad & 1 ? EPT_A : 0) | (ad & 2 ? EPT_D : 0);
						if (n & 1)
							pte |= EPT_IGN_LEAF | EPT_IPAT;
						combo_add(cs, pde, pte);
					}
	/* The PDE a 2M leaf. */
	for (unsigned int rwx = 0; rwx < 8; rwx++)
		for (unsigned int mt = 0; mt < 8; mt++)
			for (unsigned int ad = 0; ad < 4; ad++)
				for (int rsvd = 0; rsvd < 2; rsvd++, n++) {
					uint64_t r = rsvd ? rotate_bit(ref_ept_rsvd_mask(m, 2, true), &sel[2]) : 0;
					uint64_t pde = rwx | EPT_MT(mt) | EPT_PS | r | (ad & 1 ? EPT_A : 0) | (ad & 2 ? EPT_D : 0);

					if (n & 1)
						pde |= EPT_IGN_LEAF | EPT_IPAT;
					combo_add(cs, pde, 0);
				}
}

struct npt_collect {
	struct combos *cs;
	struct ref_cpu rc;
	unsigned int sel[2][3];
	uint64_t last_pde;
	unsigned int npde;	/* PDE changes so far */
};

static uint64_t npt_rsvd_cb(void *ctx, int level, bool ps, bool huge)
{
	struct npt_collect *nc = ctx;

	(void)huge;
	return amode_rsvd_bit(&nc->rc, nc->sel, level, ps);
}

static void npt_collect_fn(void *ctx, const struct exh_entries *en)
{
	struct npt_collect *nc = ctx;
	bool leaf_pde = en->pde & E_PS;

	/* The leaf's A/D preset, 0..3.  A table PDE's A alternates from one PDE
	 * of the enumeration to the next, not with the PTE's, so that changes
	 * to the PTE alone (seen through TLB_CONTROL only) are common. */
	if (en->pde != nc->last_pde) {
		nc->last_pde = en->pde;
		nc->npde++;
	}
	for (unsigned int ad = 0; ad < 4; ad++) {
		uint64_t a = (ad & 1 ? E_A : 0) | (ad & 2 ? E_D : 0);

		if (leaf_pde)
			combo_add(nc->cs, en->pde | a, 0);
		else
			combo_add(nc->cs, en->pde | (nc->npde & 1 ? E_A : 0), en->pte | a);
	}
}

/* NPT: walk_exhaustive's PDE/PTE combinations in L1's long-mode format. */
static void npt_combos(struct combos *cs, unsigned int m)
{
	struct npt_collect nc = { .cs = cs };
	struct amode lm = { .paging = REF_PAGING_4LEVEL };
	struct exh_space sp = {
		.rc = &nc.rc,
		.has_nx = true,
		.has_pk = true,	/* the key bits are ignored: the nested walk has no CR4.PKE */
		.addr_4k = 0,	/* addresses are the region's */
		.addr_huge = 0,
		.pt = 0,
		.rsvd_bit = npt_rsvd_cb,
		.fn = npt_collect_fn,
		.ctx = &nc,
	};

	nc.rc = amode_ref_cpu(&lm, m);
	exh_for_each(&sp);
}

/* ---- the test -------------------------------------------------------------------------------- */

static unsigned int stride(void)
{
	const char *s = getenv("VMMU_NESTED_ACCESS_STRIDE");
	long v = s ? atol(s) : 0;

	return v > 0 ? (unsigned int)v : DEFAULT_STRIDE;
}

static void run_mode(struct nenv *e, const struct combos *cs, unsigned int str, unsigned long *idx)
{
	unsigned int naux = e->npt ? 2 : 4;

	/* Without A/D in the SPTEs only vmmu's own side differs (access
	 * tracking of guest_mmu's leaves): every 5th combination there. */
	if (e->t.var->flags & VMMU_VM_AD_DISABLED)
		str *= 5;

	for (int target = 0; target <= e->top; target++) {
		if (target == 3 && e->m->paging == REF_PAGING_PAE)
			continue;	/* the PDPTEs are registers, loaded at VM entry */
		for (unsigned int aux = 0; aux < naux; aux++) {
			for (unsigned int i = 0; i < cs->n; i++) {
				/* Execute-only offered or not changes nothing unless
				 * an entry is X without R (the others are RWX). */
				if (!e->npt && (aux & 2) && !cs->c[i].xonly)
					continue;
				if ((*idx)++ % str)
					continue;
				if (e->npt)
					l1_apply(e, target, true, false, aux & 1, &cs->c[i]);
				else
					l1_apply(e, target, aux & 1, aux & 2, true, &cs->c[i]);
				run_again(e);
				run_slice(e);
				run_reach(e);
				if (i % 4 == 0)
					run_phys(e);
			}
		}
	}
}

TEST(nested_access_exhaustive)
{
	unsigned int str = stride();
	unsigned long total = 0, total_l1 = 0, idx = 0;
	double t_all = now_s();

	nr_mismatch = 0;
	for_each_mmu_variant(var) {
		struct combos cs = { NULL, 0 };
		struct vmmu_vm_config cfg;

		if (!nt_variant_ok(var))
			continue;
		variant_config(var, &cfg);
		if (var->tdp_format == VMMU_TDP_NPT)
			npt_combos(&cs, cfg.maxphyaddr);
		else
			ept_combos(&cs, cfg.maxphyaddr);
		for (unsigned int mi = 0; mi < nr_amodes; mi++) {
			const struct amode *m = &amodes[mi];
			unsigned long before = nr_mismatch;
			struct vmmu_vcpu_stats st;
			struct nenv e;
			double t0;

			if (!amode_fits(m, var->tdp_levels))
				continue;
			t0 = now_s();
			nenv_create(&e, var, m);
			run_mode(&e, &cs, str, &idx);
			memset(&st, 0, sizeof(st));
			vmmu_vcpu_get_stats(e.t.vcpu, &st);
			fprintf(stderr,
				"  nested access: %-5s %-10s %6lu L1 combinations (%u per target and %s), %8lu accesses "
				"(%lu ok, %lu L2 #PF, %lu violations, %lu misconfigs, %lu #NPF; %lu physical) over %u L2 "
				"entry combinations; L1 stores emulated %" PRIu64 ", unsync pages synced %" PRIu64 "; "
				"%lu mismatches, %.2f s\n",
				var->name, m->name, e.n_l1, cs.n, e.npt ? "L1 NXE" : "EPTP A/D, exec-only", e.n,
				e.kinds[NREF_OK], e.kinds[NREF_L2_PF], e.kinds[NREF_EPT_VIOLATION],
				e.kinds[NREF_EPT_MISCONFIG], e.kinds[NREF_NPF], e.n_phys, e.nl2e, st.pt_write_emulations,
				st.unsync_syncs, nr_mismatch - before, now_s() - t0);
			total += e.n;
			total_l1 += e.n_l1;
			nenv_destroy(&e);
		}
		free(cs.c);
	}
	fprintf(stderr, "  nested access: total %lu accesses under %lu L1 combinations (stride %u), %lu mismatches, %.2f s\n",
		total, total_l1, str, nr_mismatch, now_s() - t_all);
	if (nr_mismatch)
		test_fail(__FILE__, __LINE__, "%lu mismatches with the model", nr_mismatch);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
