/* SPDX-License-Identifier: MIT */
/*
 * Exhaustive accesses through the vCPU against the reference model of
 * walk_ref.[ch].
 *
 * test_walk's walk_exhaustive checks walk_gva() alone, on tables in a plain
 * array.  This test checks the whole path an access takes: guest tables in
 * guest memory, vmmu_vcpu_set_state(), the TLB (fills, hits re-checked
 * against the current state, D-bit re-walks, INVLPG and MOV to CR3), the
 * MMU's own fault handling underneath (TDP or shadow), guest faults returned
 * as VMMU_EXIT_GUEST_FAULT, the bytes moved, and the A/D bits the walk
 * leaves in the guest's entries.
 *
 * Every MMU variant (for_each_mmu_variant) and every paging mode the variant
 * supports gets one VM; over it run the combinations of walk_exhaustive: PDE
 * and PTE (or PDE as 2M/4M leaf) P, W, U, XD, PS, a reserved bit, the
 * protection key, CR0.WP, CR4.SMEP/SMAP/PKE, EFLAGS.AC, PKRU AD/WD, CPL 0/3,
 * EFER.NXE and the access (read, write, fetch, implicit read and write).
 * The upper levels are fully permissive.
 *
 * Entries change the way a guest kernel changes them: as guest-physical
 * stores by the vCPU (under shadow paging, emulated stores that update the
 * shadow), followed by INVLPG or a CR3 reload; never behind the MMU's back
 * once translations exist.  Each combination runs twice:
 *
 *  - fresh: every entry holds exactly the combination's value (A = D = 0)
 *    and the TLB holds nothing for the address, like walk_exhaustive;
 *  - warm: the entries are written once per entry combination and then A/D
 *    accumulate and translations stay cached over the CPU states and
 *    accesses, as in a running guest: TLB hits are re-checked against the
 *    current CPL/WP/SMAP/AC/PKRU, writes through a clean entry walk again to
 *    set D, and a shadow MMU sees read-then-write sequences.
 *
 * Either way the model is given the entries as they are in memory right
 * before the access.
 */

#include "harness.h"
#include "walk_ref.h"
#include "walk_test.h"

#define MB (1ULL << 20)
#define RAM_BYTES (16 * MB)
/* Table pages: one per level, from an unremarkable address up. */
#define TABLES_GPA 0x123000ULL
/* PAE: the PDPT at a 32-byte aligned offset that is not 0, so a walker
 * masking CR3 to 4K reads an empty slot. */
#define PAE_PDPT_OFFSET 0x7e0ULL
#define PAGE_BYTES 4096ULL

/*
 * Every stride-th combination runs.  The plain build runs them all; the
 * sanitizer builds (several times slower per access) a fixed sample.  The
 * stride is odd and prime to 5, so the access type (radix 5) and every bit of
 * the CPU state (radix 2^9) still take every value.
 */
#if UNDER_SANITIZER
#define STRIDE 61
#else
#define STRIDE 1
#endif

#define MAX_REPORTS 10

enum pass { PASS_FRESH, PASS_WARM };
static const char *const pass_names[] = { "fresh", "warm" };

/* ---- one VM per variant and mode ----------------------------------------------- */

struct aenv {
	const struct mmu_variant *var;
	const struct amode *m;
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	unsigned int maxphyaddr;
	int top;
	unsigned int esize;
	bool has_nx, has_pk;
	uint64_t gva;
	uint64_t table[REF_MAX_LEVEL + 1];	/* table holding the level's entries */
	uint64_t slot[REF_MAX_LEVEL + 1];	/* gpa of the entry used at each level */
	void *slot_hva[REF_MAX_LEVEL + 1];
	uint64_t upper[REF_MAX_LEVEL + 1];	/* the permissive entries above the PDE */
	uint64_t cr3;
	uint64_t frame_4k, frame_huge;
	uint64_t gpa_4k, gpa_huge;		/* where the access lands through each leaf */
	uint64_t *hva_4k, *hva_huge;
	struct vmmu_cpu_state cur;		/* the state last given to the vCPU */
	uint64_t seq;				/* makes every value moved unique */
	unsigned int rsvd_sel[2][3];		/* [ps][level]: rotates through reserved bits */
	unsigned long idx;			/* combination index, for the stride */
	unsigned long n[2], n_ok, n_fault;
	unsigned long rewrites, invlpgs, cr3_loads;
	const char *last_sync;			/* how this combination's entries were made visible */
};

static unsigned long nr_mismatch;

static uint64_t ent_load(const struct aenv *e, int level)
{
	if (e->esize == 4)
		return __atomic_load_n((uint32_t *)e->slot_hva[level], __ATOMIC_ACQUIRE);
	return __atomic_load_n((uint64_t *)e->slot_hva[level], __ATOMIC_ACQUIRE);
}

/* The guest kernel's store to its own page table: a guest-physical write by
 * the vCPU, which shadow paging sees (and emulates) like any guest store. */
static void ent_store(struct aenv *e, int level, uint64_t val)
{
	struct vmmu_exit x;
	uint32_t v32 = (uint32_t)val;
	void *buf = e->esize == 4 ? (void *)&v32 : (void *)&val;
	int r = vmmu_vcpu_access(e->vcpu, e->slot[level], buf, e->esize, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);

	if (r)
		test_fail(__FILE__, __LINE__, "[%s %s] store of L%d entry at gpa %#" PRIx64 ": %d (exit %u)",
			  e->var->name, e->m->name, level, e->slot[level], r, r == VMMU_EXIT ? x.reason : 0);
}

static uint64_t data_load(const uint64_t *hva)
{
	return __atomic_load_n(hva, __ATOMIC_ACQUIRE);
}

static void data_store(uint64_t *hva, uint64_t v)
{
	__atomic_store_n(hva, v, __ATOMIC_RELEASE);
}

static struct ref_cpu base_ref_cpu(const struct aenv *e)
{
	return amode_ref_cpu(e->m, e->maxphyaddr);
}

static void add_slot(struct aenv *e, uint32_t id, uint64_t gpa, uint64_t size)
{
	struct vmmu_memslot s = { .slot = id, .gpa = gpa, .size = size };

	ASSERT_OK(vmmu_set_memslot(e->vm, &s));
}

static void *hva_of(struct aenv *e, uint64_t gpa)
{
	void *hva;

	ASSERT_OK(vmmu_gpa_to_hva(e->vm, gpa, &hva));
	return hva;
}

static void aenv_create(struct aenv *e, const struct mmu_variant *var, const struct amode *m)
{
	struct vmmu_vm_config cfg;
	struct ref_cpu rc;
	uint64_t huge_size;

	memset(e, 0, sizeof(*e));
	e->var = var;
	e->m = m;
	variant_config(var, &cfg);
	e->maxphyaddr = cfg.maxphyaddr;
	e->top = ref_top_level(m->paging);
	e->esize = ref_entry_bytes(m->paging);
	e->has_nx = e->esize == 8;
	e->has_pk = m->paging == REF_PAGING_4LEVEL || m->paging == REF_PAGING_5LEVEL;
	e->gva = amode_gva(m);
	rc = base_ref_cpu(e);

	/* Frames within MAXPHYADDR (PSE-36: within 40 bits), well above RAM. */
	huge_size = ref_page_size(&rc, 2);
	amode_frames(m, e->maxphyaddr, &e->frame_4k, &e->frame_huge);
	ASSERT_GE(e->frame_4k, RAM_BYTES);
	ASSERT_GE(e->frame_huge, RAM_BYTES);
	e->gpa_4k = e->frame_4k | (e->gva & (PAGE_BYTES - 1));
	e->gpa_huge = e->frame_huge | (e->gva & (huge_size - 1));

	ASSERT_OK(vmmu_vm_create(&cfg, &e->vm));
	add_slot(e, 0, 0, RAM_BYTES);
	add_slot(e, 1, e->frame_4k, PAGE_BYTES);
	add_slot(e, 2, e->frame_huge, huge_size);
	ASSERT_OK(vmmu_vcpu_create(e->vm, 0, &e->vcpu));
	e->hva_4k = hva_of(e, e->gpa_4k);
	e->hva_huge = hva_of(e, e->gpa_huge);

	for (int level = e->top; level >= 1; level--) {
		unsigned int i = m->idx[e->top - level];

		e->table[level] = TABLES_GPA + (uint64_t)(e->top - level) * PAGE_BYTES;
		if (m->paging == REF_PAGING_PAE && level == 3)
			e->table[level] += PAE_PDPT_OFFSET;
		e->slot[level] = e->table[level] + i * e->esize;
		e->slot_hva[level] = hva_of(e, e->slot[level]);
	}
	/* CR3 with PWT/PCD set: the walker must mask them off (PAE: bits 4:0
	 * are ignored, but the PDPT's offset in its page must be kept). */
	e->cr3 = e->table[e->top] | E_PWT | E_PCD;

	/* Upper levels: fully permissive (walk_test.h's amode_upper_entry()). */
	for (int level = e->top; level >= 3; level--) {
		uint64_t u = amode_upper_entry(m, level, e->table[m->paging == REF_PAGING_PAE ? 2 : level - 1]);

		e->upper[level] = u;
		/* Written before paging is on: the PAE PDPTE registers are loaded
		 * from memory by the first vmmu_vcpu_set_state(). */
		ent_store(e, level, u);
	}
}

static void aenv_destroy(struct aenv *e)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(e->vm, &why))
		test_fail(__FILE__, __LINE__, "[%s %s] VM bugged: %s", e->var->name, e->m->name, why ? why : "?");
	ASSERT_AUDIT(e->vm);
	vmmu_vm_destroy(e->vm);
}

/* ---- one combination ---------------------------------------------------------- */

struct combo {
	enum pass pass;
	uint64_t want[REF_MAX_LEVEL + 1];	/* the entries, A = D = 0 */
	unsigned int cpu_c;
	unsigned int key;
	unsigned int acc;			/* index in accesses[] */
};

static void cpu_of(const struct aenv *e, const struct combo *c, struct ref_cpu *rc, struct vmmu_cpu_state *s)
{
	amode_cpu(e->m, e->maxphyaddr, c->cpu_c, c->key, e->cr3, rc, s);
}

static void set_state(struct aenv *e, const struct vmmu_cpu_state *s)
{
	/* Only what changed, like a guest that does not reload its control
	 * registers between instructions (so cached translations survive). */
	if (s->cr0 == e->cur.cr0 && s->cr3 == e->cur.cr3 && s->cr4 == e->cur.cr4 &&
	    (s->efer & ~VMMU_EFER_LMA) == (e->cur.efer & ~VMMU_EFER_LMA) && s->rflags == e->cur.rflags &&
	    s->pkru == e->cur.pkru && s->cpl == e->cur.cpl)
		return;
	ASSERT_OK(vmmu_vcpu_set_state(e->vcpu, s));
	e->cur = *s;
}

/*
 * Bring the entries in memory to the combination's: exactly (fresh), or up to
 * the A/D bits the walks since they were written have set (warm).  What
 * changed is then invalidated the architectural way: INVLPG, or MOV to CR3
 * on every other change when no global translation can be cached (a CR3 load
 * keeps global ones, SDM 4.10.4.1).
 */
static void sync_entries(struct aenv *e, const struct combo *c)
{
	uint64_t old[REF_MAX_LEVEL + 1] = { 0 };
	struct ref_cpu rc = base_ref_cpu(e);
	bool changed = false;

	e->last_sync = "none";
	for (int level = e->top; level >= 1; level--) {
		uint64_t diff;

		old[level] = ent_load(e, level);
		diff = old[level] ^ c->want[level];
		if (c->pass == PASS_WARM)
			diff &= ~E_AD;
		if (diff) {
			ent_store(e, level, c->want[level]);
			changed = true;
		}
	}
	if (!changed)
		return;
	e->rewrites++;
	if ((e->rewrites & 1) || amode_leaf_may_be_global(&rc, old)) {
		vmmu_vcpu_invlpg(e->vcpu, e->gva);
		e->invlpgs++;
		e->last_sync = "invlpg";
	} else {
		ASSERT_OK(vmmu_vcpu_write_cr3(e->vcpu, e->cr3));
		e->cr3_loads++;
		e->last_sync = "cr3";
	}
}

static void run_combo(struct aenv *e, const struct combo *c)
{
	bool write = amode_accesses[c->acc].type & VMMU_ACCESS_WRITE;
	uint64_t before[REF_MAX_LEVEL + 1] = { 0 }, after[REF_MAX_LEVEL + 1] = { 0 };
	uint64_t want[REF_MAX_LEVEL + 1] = { 0 };
	struct ref_pte ent[REF_MAX_LEVEL + 1];
	struct ref_access ra;
	struct ref_outcome exp;
	struct ref_cpu rc;
	struct vmmu_cpu_state s;
	struct vmmu_exit x;
	uint64_t *want_hva = NULL, *other_hva = NULL;
	uint64_t pat, buf, old_want = 0, old_other = 0, want_gpa = 0;
	const char *why = NULL;
	int top = e->top, ret;

	cpu_of(e, c, &rc, &s);
	set_state(e, &s);
	sync_entries(e, c);

	memset(ent, 0, sizeof(ent));
	for (int level = 1; level <= top; level++) {
		before[level] = ent_load(e, level);
		ent[level] = ref_decode(&rc, level, before[level]);
	}
	ra.write = write;
	ra.fetch = (amode_accesses[c->acc].type & VMMU_ACCESS_TYPE_MASK) == VMMU_ACCESS_FETCH;
	ra.implicit = amode_accesses[c->acc].type & VMMU_ACCESS_IMPLICIT;
	ref_translate(&rc, ent, &ra, &exp);
	for (int level = 1; level <= top; level++) {
		want[level] = (before[level] & ~E_AD) | (exp.a[level] ? E_A : 0) | (exp.d[level] ? E_D : 0);
		/* The PAE PDPTEs are registers; the walk sets nothing in memory. */
		if (e->m->paging == REF_PAGING_PAE && level == 3)
			want[level] = before[level];
	}

	/* A value never seen before; reads find it where the model says the
	 * access lands, writes must leave it there and nowhere else. */
	e->seq++;
	pat = (e->seq * 0x9e3779b97f4a7c15ULL) ^ 0x5eedf00dULL;
	if (!exp.fault) {
		int leaf = exp.leaf_level;
		uint64_t size = ref_page_size(&rc, leaf);

		want_gpa = ref_leaf_frame(&rc, leaf, before[leaf]) | (e->gva & (size - 1));
		if (want_gpa == e->gpa_4k) {
			want_hva = e->hva_4k;
			other_hva = e->hva_huge;
		} else if (want_gpa == e->gpa_huge) {
			want_hva = e->hva_huge;
			other_hva = e->hva_4k;
		} else {
			test_fail(__FILE__, __LINE__, "[%s %s] test bug: the model's gpa %#" PRIx64 " is neither frame",
				  e->var->name, e->m->name, want_gpa);
		}
		if (!write)
			data_store(want_hva, pat);
		old_want = data_load(want_hva);
		old_other = data_load(other_hva);
	} else {
		old_want = data_load(e->hva_4k);
		old_other = data_load(e->hva_huge);
	}
	buf = write ? pat : ~pat;

	memset(&x, 0, sizeof(x));
	ret = vmmu_vcpu_access(e->vcpu, e->gva, &buf, sizeof(buf), amode_accesses[c->acc].type, &x);

	for (int level = 1; level <= top; level++)
		after[level] = ent_load(e, level);
	if (exp.fault) {
		if (ret != VMMU_EXIT || x.reason != VMMU_EXIT_GUEST_FAULT)
			why = "did not fault";
		else if (x.u.guest_fault.vector != 14)
			why = "vector";
		else if (x.u.guest_fault.error_code != exp.error_code)
			why = "error code";
		else if (x.u.guest_fault.addr != e->gva)
			why = "fault address (CR2)";
		else if (!write && buf != ~pat)
			why = "a faulting read filled the buffer";
		else if (data_load(e->hva_4k) != old_want || data_load(e->hva_huge) != old_other)
			why = "a faulting access wrote memory";
	} else {
		if (ret != 0)
			why = "faulted or exited";
		else if (!write && buf != pat)
			why = "read the wrong bytes";
		else if (write && data_load(want_hva) != pat)
			why = "write did not land at the gpa";
		else if (data_load(other_hva) != old_other)
			why = "wrote the other frame";
		else if (!write && data_load(want_hva) != old_want)
			why = "a read changed memory";
	}
	if (!why) {
		for (int level = top; level >= 1 && !why; level--) {
			if (after[level] != want[level])
				why = "entries after the access (A/D)";
		}
	}
	e->n[c->pass]++;
	if (exp.fault)
		e->n_fault++;
	else
		e->n_ok++;
	if (!why)
		return;

	if (++nr_mismatch <= MAX_REPORTS) {
		struct sbuf b = { .n = 0 };

		sb_printf(&b, "[%s %s %s] %s gva=%#" PRIx64 " cpu{M=%u wp=%d smep=%d smap=%d ac=%d pke=%d pkru=%#x nxe=%d cpl=%u} "
			      "entries synced by %s: %s",
			  e->var->name, e->m->name, pass_names[c->pass], amode_accesses[c->acc].name, e->gva, rc.maxphyaddr,
			  rc.wp, rc.smep, rc.smap, rc.ac, rc.pke, rc.pkru, rc.nxe, rc.cpl, e->last_sync, why);
		sb_entries(&b, "before", top, before);
		sb_printf(&b, "\n      vmmu:   ret=%d", ret);
		if (ret == VMMU_EXIT && x.reason == VMMU_EXIT_GUEST_FAULT)
			sb_printf(&b, " guest fault vector=%u ec=%#x addr=%#" PRIx64, x.u.guest_fault.vector,
				  x.u.guest_fault.error_code, x.u.guest_fault.addr);
		else if (ret == VMMU_EXIT)
			sb_printf(&b, " exit reason=%u", x.reason);
		sb_printf(&b, " buf=%#" PRIx64 " mem[4k]=%#" PRIx64 " mem[huge]=%#" PRIx64, buf, data_load(e->hva_4k),
			  data_load(e->hva_huge));
		sb_entries(&b, "after", top, after);
		if (exp.fault)
			sb_printf(&b, "\n      model:  fault vector=14 ec=%#x addr=%#" PRIx64, exp.error_code, e->gva);
		else
			sb_printf(&b, "\n      model:  ok gpa=%#" PRIx64 " level=%d value=%#" PRIx64, want_gpa,
				  exp.leaf_level, pat);
		sb_entries(&b, "want", top, want);
		fprintf(stderr, "  MISMATCH %s\n", b.s);
	}
}

/* ---- the enumeration ------------------------------------------------------------- */

struct run_mode_ctx {
	struct aenv *e;
	struct combo c;
};

static uint64_t run_mode_rsvd(void *ctx, int level, bool ps, bool huge)
{
	struct run_mode_ctx *r = ctx;

	(void)huge;
	struct ref_cpu rc = base_ref_cpu(r->e);

	return amode_rsvd_bit(&rc, r->e->rsvd_sel, level, ps);
}

/* One entry combination: every CPU state and access over it. */
static void run_mode_entries(void *ctx, const struct exh_entries *en)
{
	struct run_mode_ctx *r = ctx;
	struct aenv *e = r->e;
	struct combo *c = &r->c;

	c->key = en->key;
	c->want[2] = en->pde;
	c->want[1] = en->pte;
	for (c->cpu_c = 0; c->cpu_c < NR_CPU_COMBOS; c->cpu_c++) {
		for (c->acc = 0; c->acc < nr_amode_accesses; c->acc++) {
			if (e->idx++ % STRIDE)
				continue;
			run_combo(e, c);
		}
	}
}

/* walk_exhaustive's entry combinations (walk_test.c), each in every CPU state. */
static void run_mode(struct aenv *e, enum pass pass)
{
	struct ref_cpu rc = base_ref_cpu(e);
	struct run_mode_ctx r = { .e = e };
	struct exh_space sp = {
		.rc = &rc,
		.has_nx = e->has_nx,
		.has_pk = e->has_pk,
		.addr_4k = amode_leaf_addr_bits(e->m, 1, e->frame_4k),
		.addr_huge = amode_leaf_addr_bits(e->m, 2, e->frame_huge),
		.pt = e->table[1],
		.rsvd_bit = run_mode_rsvd,
		.fn = run_mode_entries,
		.ctx = &r,
	};

	r.c.pass = pass;
	for (int level = e->top; level >= 3; level--)
		r.c.want[level] = e->upper[level];
	exh_for_each(&sp);
}

TEST(access_exhaustive)
{
	unsigned long total = 0;
	double t_all = now_s();

	nr_mismatch = 0;
	for_each_mmu_variant(var) {
		for (unsigned int mi = 0; mi < nr_amodes; mi++) {
			const struct amode *m = &amodes[mi];
			struct vmmu_vcpu_stats st;
			struct aenv e;
			unsigned long before_mismatch = nr_mismatch;
			double t0;

			if (!amode_fits(m, var->tdp_levels))
				continue;
			t0 = now_s();
			aenv_create(&e, var, m);
			run_mode(&e, PASS_FRESH);
			run_mode(&e, PASS_WARM);
			vmmu_vcpu_get_stats(e.vcpu, &st);
			fprintf(stderr,
				"  access: %-9s %-10s %8lu combinations (fresh %lu, warm %lu; %lu ok, %lu faults), "
				"%lu rewrites (%lu invlpg, %lu cr3), tlb %" PRIu64 " hits / %" PRIu64
				" misses, %lu mismatches, %.2f s\n",
				var->name, m->name, e.n[0] + e.n[1], e.n[0], e.n[1], e.n_ok, e.n_fault, e.rewrites,
				e.invlpgs, e.cr3_loads, st.tlb_hits, st.tlb_misses, nr_mismatch - before_mismatch,
				now_s() - t0);
			total += e.n[0] + e.n[1];
			aenv_destroy(&e);
		}
	}
	fprintf(stderr, "  access: total %lu combinations (stride %u), %lu mismatches, %.2f s\n", total, STRIDE,
		nr_mismatch, now_s() - t_all);
	if (nr_mismatch)
		test_fail(__FILE__, __LINE__, "%lu mismatches with the model", nr_mismatch);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
