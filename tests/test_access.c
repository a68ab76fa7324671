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

/* ---- paging modes ------------------------------------------------------------ */

struct amode {
	const char *name;
	enum ref_paging paging;
	bool pse;			/* CR4.PSE (32-bit paging) */
	unsigned int idx[REF_MAX_LEVEL];	/* table index per level, root first */
	uint64_t off;			/* offset in the 4K page (8-byte aligned) */
	uint64_t frame_4k, frame_huge;	/* before masking to MAXPHYADDR */
};

/*
 * Non-zero, distinct indices at every level (a walker using the wrong bits of
 * the address lands on an empty slot); the 4-level PML4 index is >= 256, so
 * the address is in the upper half.  Frames have high bits set: PSE-36 bits
 * 39:32 for the 4-MByte page, bits above 32 otherwise.
 */
static const struct amode amodes[] = {
	{ "32-bit", REF_PAGING_32, false, { 0x2a5, 0x3c1 }, 0xab8, 0x76543000ULL, 0xabc0400000ULL },
	{ "32-bit+PSE", REF_PAGING_32, true, { 0x2a5, 0x3c1 }, 0xab8, 0x76543000ULL, 0xabc0400000ULL },
	{ "PAE", REF_PAGING_PAE, false, { 2, 0x1b3, 0x0e7 }, 0x5a0, 0x2abcdef13000ULL, 0x123456600000ULL },
	{ "4-level", REF_PAGING_4LEVEL, false, { 0x1a3, 0x0c5, 0x013, 0x1f7 }, 0xab8, 0x2abcdef13000ULL,
	  0x123456600000ULL },
	{ "5-level", REF_PAGING_5LEVEL, false, { 0x0d1, 0x1a3, 0x0c5, 0x013, 0x1f7 }, 0x9d8, 0x2abcdef13000ULL,
	  0x123456600000ULL },
};
#define NR_AMODES (sizeof(amodes) / sizeof(amodes[0]))

static const struct {
	unsigned int type;
	const char *name;
} accesses[] = {
	{ VMMU_ACCESS_READ, "read" },
	{ VMMU_ACCESS_WRITE, "write" },
	{ VMMU_ACCESS_FETCH, "fetch" },
	{ VMMU_ACCESS_READ | VMMU_ACCESS_IMPLICIT, "implicit-read" },
	{ VMMU_ACCESS_WRITE | VMMU_ACCESS_IMPLICIT, "implicit-write" },
};
#define NR_ACCESSES (sizeof(accesses) / sizeof(accesses[0]))

/* The CPU state of one combination.  The bits whose change does not flush
 * the TLB (CPL, AC, PKRU) are the low ones, so the warm pass meets cached
 * translations under every one of their values. */
#define CPU_CPL3 (1u << 0)
#define CPU_AC (1u << 1)
#define CPU_ADWD_SHIFT 2	/* 2 bits: AD and WD of the page's key */
#define CPU_WP (1u << 4)
#define CPU_SMEP (1u << 5)
#define CPU_SMAP (1u << 6)
#define CPU_PKE (1u << 7)
#define CPU_NXE (1u << 8)
#define NR_CPU_COMBOS 512u

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

static uint64_t gva_of(const struct amode *m)
{
	int top = ref_top_level(m->paging);
	uint64_t gva = m->off;

	for (int level = top; level >= 1; level--) {
		uint64_t i = m->idx[top - level];

		if (m->paging == REF_PAGING_32)
			gva |= i << (12 + 10 * (level - 1));
		else if (m->paging == REF_PAGING_PAE && level == 3)
			gva |= i << 30;
		else
			gva |= i << (12 + 9 * (level - 1));
	}
	if (m->paging == REF_PAGING_4LEVEL)
		return sign_extend(gva, 48);
	if (m->paging == REF_PAGING_5LEVEL)
		return sign_extend(gva, 57);
	return gva;
}

/* The leaf's address field for frame (SDM 4.3: a 4-MByte frame's bits 39:32
 * go to PDE bits 20:13). */
static uint64_t leaf_addr_bits(const struct aenv *e, int level, uint64_t frame)
{
	if (e->m->paging == REF_PAGING_32 && level == 2)
		return (frame & bitmask(22, 31)) | ((frame >> 32) << 13);
	return frame;
}

static struct ref_cpu base_ref_cpu(const struct aenv *e)
{
	struct ref_cpu rc;

	memset(&rc, 0, sizeof(rc));
	rc.paging = e->m->paging;
	rc.maxphyaddr = e->maxphyaddr;
	rc.pse = e->m->pse;
	rc.nxe = true;
	return rc;
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
	unsigned int m40;
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
	e->gva = gva_of(m);
	rc = base_ref_cpu(e);

	/* Frames within MAXPHYADDR (PSE-36: within 40 bits), well above RAM. */
	m40 = e->maxphyaddr < 40 ? e->maxphyaddr : 40;
	huge_size = ref_page_size(&rc, 2);
	if (m->paging == REF_PAGING_32) {
		e->frame_4k = m->frame_4k & bitmask(12, 31);
		e->frame_huge = m->frame_huge & bitmask(22, m40 - 1);
	} else {
		e->frame_4k = m->frame_4k & bitmask(12, e->maxphyaddr - 1);
		e->frame_huge = m->frame_huge & bitmask(21, e->maxphyaddr - 1);
	}
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

	/*
	 * Upper levels: P = R/W = U/S = 1, XD = 0, with bits that must be
	 * ignored set (bit 8: G is ignored in non-leaf entries on Intel, as the
	 * model says; 62:59: the key is ignored above the leaf).  The PAE PDPTE
	 * has only P (and PWT): its other low bits are reserved (4.4.1).
	 */
	for (int level = e->top; level >= 3; level--) {
		uint64_t u;

		if (m->paging == REF_PAGING_PAE) {
			u = e->table[2] | E_P | E_PWT;
		} else {
			u = e->table[level - 1] | E_P | E_W | E_U | E_PWT | E_G | E_IGN_LOW;
			u |= E_IGN_HIGH | ((uint64_t)(level + 2) << E_PKEY_SHIFT);
		}
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
	unsigned int adwd = (c->cpu_c >> CPU_ADWD_SHIFT) & 3;

	*rc = base_ref_cpu(e);
	rc->wp = c->cpu_c & CPU_WP;
	rc->smep = c->cpu_c & CPU_SMEP;
	rc->smap = c->cpu_c & CPU_SMAP;
	rc->pke = c->cpu_c & CPU_PKE;
	rc->nxe = c->cpu_c & CPU_NXE;
	rc->ac = c->cpu_c & CPU_AC;
	rc->cpl = (c->cpu_c & CPU_CPL3) ? 3 : 0;
	/* AD/WD of the page's key as chosen, every other key the opposite, to
	 * catch a check of the wrong key. */
	rc->pkru = 0;
	for (unsigned int i = 0; i < 16; i++)
		rc->pkru |= (i == c->key ? adwd : 3u & ~adwd) << (2 * i);

	memset(s, 0, sizeof(*s));
	s->cr0 = VMMU_CR0_PE | VMMU_CR0_PG | (rc->wp ? VMMU_CR0_WP : 0);
	s->cr3 = e->cr3;
	/* PGE on: supervisor leaves are global, as an OS makes them. */
	s->cr4 = VMMU_CR4_PGE | (rc->smep ? VMMU_CR4_SMEP : 0) | (rc->smap ? VMMU_CR4_SMAP : 0) |
		 (rc->pke ? VMMU_CR4_PKE : 0);
	switch (e->m->paging) {
	case REF_PAGING_32:
		s->cr4 |= e->m->pse ? VMMU_CR4_PSE : 0;
		break;
	case REF_PAGING_PAE:
		s->cr4 |= VMMU_CR4_PAE;
		break;
	case REF_PAGING_4LEVEL:
		s->cr4 |= VMMU_CR4_PAE;
		s->efer |= VMMU_EFER_LME;
		break;
	case REF_PAGING_5LEVEL:
		s->cr4 |= VMMU_CR4_PAE | VMMU_CR4_LA57;
		s->efer |= VMMU_EFER_LME;
		break;
	}
	s->efer |= rc->nxe ? VMMU_EFER_NXE : 0;
	s->rflags = rc->ac ? VMMU_RFLAGS_AC : 0;
	s->pkru = rc->pkru;
	s->cpl = rc->cpl;
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

/* Whether the TLB may hold a global translation made from these entries. */
static bool leaf_may_be_global(const struct aenv *e, const uint64_t *ent)
{
	struct ref_cpu rc = base_ref_cpu(e);

	if (!(ent[2] & E_P))
		return false;
	if (ref_is_leaf(&rc, 2, ent[2] & E_PS))
		return ent[2] & E_G;
	return (ent[1] & E_P) && (ent[1] & E_G);
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
	if ((e->rewrites & 1) || leaf_may_be_global(e, old)) {
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
	bool write = accesses[c->acc].type & VMMU_ACCESS_WRITE;
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
	ra.fetch = (accesses[c->acc].type & VMMU_ACCESS_TYPE_MASK) == VMMU_ACCESS_FETCH;
	ra.implicit = accesses[c->acc].type & VMMU_ACCESS_IMPLICIT;
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
	ret = vmmu_vcpu_access(e->vcpu, e->gva, &buf, sizeof(buf), accesses[c->acc].type, &x);

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
			  e->var->name, e->m->name, pass_names[c->pass], accesses[c->acc].name, e->gva, rc.maxphyaddr,
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

/*
 * A reserved bit for the PDE (level 2) or PTE (level 1), or 0 if the format
 * reserves none for this MAXPHYADDR (XD with NXE = 0 is covered by the NXE
 * bit).  Successive calls for one format rotate through its reserved bits, so
 * bits above MAXPHYADDR and the huge-frame bits 13..20 all get their turn.
 */
static uint64_t rsvd_bit(struct aenv *e, int level, bool ps)
{
	struct ref_cpu rc = base_ref_cpu(e);
	uint64_t mask = ref_rsvd_mask(&rc, level, ps) & ~E_XD;
	unsigned int n = (unsigned int)__builtin_popcountll(mask), k;

	if (!n)
		return 0;
	k = e->rsvd_sel[ps][level]++ % n;
	for (unsigned int b = 0; b < 64; b++) {
		if (((mask >> b) & 1) && k-- == 0)
			return 1ULL << b;
	}
	return 0;
}

struct run_mode_ctx {
	struct aenv *e;
	struct combo c;
};

static uint64_t run_mode_rsvd(void *ctx, int level, bool ps, bool huge)
{
	struct run_mode_ctx *r = ctx;

	(void)huge;
	return rsvd_bit(r->e, level, ps);
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
		for (c->acc = 0; c->acc < NR_ACCESSES; c->acc++) {
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
		.addr_4k = leaf_addr_bits(e, 1, e->frame_4k),
		.addr_huge = leaf_addr_bits(e, 2, e->frame_huge),
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

static bool mode_fits(const struct mmu_variant *var, const struct amode *m)
{
	/* LA57 needs a 5-level TDP (vmmu refuses it otherwise). */
	return m->paging != REF_PAGING_5LEVEL || var->tdp_levels == 5;
}

TEST(access_exhaustive)
{
	unsigned long total = 0;
	double t_all = now_s();

	nr_mismatch = 0;
	for_each_mmu_variant(var) {
		for (unsigned int mi = 0; mi < NR_AMODES; mi++) {
			const struct amode *m = &amodes[mi];
			struct vmmu_vcpu_stats st;
			struct aenv e;
			unsigned long before_mismatch = nr_mismatch;
			double t0;

			if (!mode_fits(var, m))
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
