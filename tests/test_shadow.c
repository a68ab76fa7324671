/* SPDX-License-Identifier: MIT */
/*
 * Shadow paging, tested through the public API only, so that every test
 * that makes sense without shadow paging runs on the TDP variants too (the
 * guest-visible contract is the same; only the MMU behind it differs).
 *
 *  - model_random: several guest address spaces (own pools, one paging mode
 *    per run, every mode the variant allows) are changed at random by guest
 *    stores (the guest library writes through the vCPU, and some PTEs are
 *    written through a "direct map" gva alias of the page-table pool, the
 *    way a guest kernel writes them), while the vCPU switches CR3 (with and
 *    without PCIDs and the no-flush bit), invalidates (INVLPG, flushing CR3
 *    loads, CR4.PGE toggles, paging off and on), changes its role bits (WP,
 *    SMEP, SMAP, AC, NXE, CPL) and reads, writes and fetches.  A reference
 *    model predicts every access: the current translation comes from the
 *    model's own record of the guest tables (cross-checked against the
 *    guest's tables in guest memory at every access), plus the set of
 *    translations the TLB may still hold, as the architecture allows (SDM
 *    4.10): a translation may be used after the guest changed it until it is
 *    invalidated for its PCID (or globally); a not-present entry is never
 *    cached.  With nothing stale the outcome (data, MMIO exit and gpa, #PF
 *    error code, #GP) must match exactly, and A/D must be set in the guest
 *    leaf.  Data is checked against a shadow copy of guest memory; writes
 *    must land at exactly one allowed gpa.  vmmu_audit() after every step.
 *  - model_random_threads: the same with one model per vCPU thread over
 *    disjoint memory, plus one page table shared by every address space of
 *    every thread (its PTEs changed by thread 0), and a host thread that
 *    zaps, flushes, toggles dirty logging, harvests and audits meanwhile.
 *  - role_reuse: mmu_ctx_rebuilds counts role changes and nothing else.
 *  - prev_roots (shadow): cached roots make CR3 switches fast.
 *  - pt_write_tracking (shadow): guest stores to shadowed tables are seen;
 *    write flooding zaps a former table.
 *  - mmio_generation: a cached MMIO translation never outlives a memslot
 *    change that makes its gpa RAM (and back).
 *  - shadow_page_cap (shadow): shadow_max_pages holds, pages are recycled.
 *
 * Failures name the seed and step; the last operations are printed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "guest.h"
#include "harness.h"

#define KB (1ULL << 10)
#define MB (1ULL << 20)
#define GB (1ULL << 30)
#define PAGE 4096ULL

/* #PF error code bits (SDM 4.7). */
#define PF_P (1u << 0)
#define PF_W (1u << 1)
#define PF_U (1u << 2)
#define PF_RSVD (1u << 3)
#define PF_ID (1u << 4)

/*
 * Guest-physical layout of the model tests.  RAM is two slots, [0, 64M)
 * and [1G, 1G + 16M): small, because the shadow audit (after every step)
 * visits every gfn of every slot.
 *   16M..24M   page-table pools: engine t, address space a at
 *              POOL_BASE + t * ENG_POOL_SPAN + a * POOL_BYTES
 *   24M..      the pool of the shared page table (threads test)
 *   32M..48M   data slice S0 of engine t: [32M + 4M t, +4M)
 *   48M..      shared data pages (threads test), two versions per page
 *   1G..1G+16M data slice S1 of engine t: [1G + 4M t, +4M); the frame of
 *              1G guest pages is gpa 1G (RAM only at its start: the
 *              guest touches it there only)
 *   3G..4G     no memslot: MMIO
 */
#define RAM0_SIZE (64 * MB)
#define RAM1_SIZE (16 * MB)
#define POOL_BASE (16 * MB)
#define POOL_PAGES 128
#define POOL_BYTES (POOL_PAGES * PAGE)
#define MAX_AS 5
#define ENG_POOL_SPAN (MAX_AS * POOL_BYTES)
#define SHARED_POOL (24 * MB)
#define S0_BASE (32 * MB)
#define S1_BASE (1 * GB)
#define SLICE (4 * MB)
#define SD_BASE (48 * MB)
#define SD_PAGES 16
#define MMIO_BASE (3 * GB)
#define MMIO_SIZE (1 * GB)

/* Guest-virtual layout: data windows (1G aligned, mode dependent) whose
 * first bytes (the engine's probe area, 4M at probe_off) hold the mappings;
 * the direct map of the engine's pools; the shared region. */
#define PROBE (4 * MB)
#define DMAP_GVA 0x10000000ULL
#define SHV_GVA 0x20000000ULL

#define MAX_REC 160
#define TLB_MAX 4096
#define TLB_FLUSH_AT 2048
#define MAX_CAND 256
#define RIGHTS (GUEST_W | GUEST_U | GUEST_NX | GUEST_G)

static const char *const mode_names[] = { "32-bit", "PAE", "4-level", "5-level" };

/* ---- small helpers --------------------------------------------------------- */

static bool mode_fits(const struct mmu_variant *var, enum guest_mode mode)
{
	return mode != GUEST_MODE_5LEVEL || var->tdp_levels == 5;
}

static uint64_t host_rd64(vmmu_vm *vm, uint64_t gpa)
{
	void *h;

	if (vmmu_gpa_to_hva(vm, gpa, &h))
		return 0xbad0bad0bad0bad0ULL;
	return __atomic_load_n((uint64_t *)h, __ATOMIC_ACQUIRE);
}

static void host_wr64(vmmu_vm *vm, uint64_t gpa, uint64_t v)
{
	void *h;

	if (!vmmu_gpa_to_hva(vm, gpa, &h))
		__atomic_store_n((uint64_t *)h, v, __ATOMIC_RELEASE);
}

/* Contents of the shared data pages: depends on the gpa, never zero. */
static uint64_t pat(uint64_t gpa)
{
	return (gpa * 0x9e3779b97f4a7c15ULL) | 1;
}

/* The shadow-paging configuration, whether or not the harness lists it yet. */
static const struct mmu_variant *shadow_variant(void)
{
	static const struct mmu_variant local = { "shadow", VMMU_TDP_EPT, 5, 0, VMMU_MMU_SHADOW };

	for (unsigned int i = 0; i < nr_mmu_variants; i++)
		if (mmu_variants[i].mmu == VMMU_MMU_SHADOW)
			return &mmu_variants[i];
	return &local;
}

/* Whether this build has shadow paging (vmmu_vm_create says ENOTSUP until then). */
static bool shadow_supported(void)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;
	int r;

	variant_config(shadow_variant(), &cfg);
	r = vmmu_vm_create(&cfg, &vm);
	if (!r)
		vmmu_vm_destroy(vm);
	return r == 0;
}

/* A shadow VM with these knobs, or SKIP while shadow paging has not landed. */
static vmmu_vm *shadow_vm(uint32_t prev_roots, uint64_t max_pages)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;
	int r;

	test_variant = "shadow";
	variant_config(shadow_variant(), &cfg);
	cfg.shadow_prev_roots = prev_roots;
	cfg.shadow_max_pages = max_pages;
	r = vmmu_vm_create(&cfg, &vm);
	if (r == VMMU_ENOTSUP)
		SKIP("shadow paging not in this build (vmmu_vm_create: %s)", vmmu_strerror(r));
	ASSERT_OK(r);
	return vm;
}

static void add_ram(vmmu_vm *vm, uint32_t id, uint64_t gpa, uint64_t size, uint64_t host_page)
{
	struct vmmu_memslot s = { .slot = id, .gpa = gpa, .size = size, .host_page_size = host_page };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

static void del_slot(vmmu_vm *vm, uint32_t id)
{
	struct vmmu_memslot s = { .slot = id };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

static void assert_not_bugged(vmmu_vm *vm)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
}

/* ========================================================================== */
/* The model engine                                                            */
/* ========================================================================== */

/* One leaf of a guest address space: [gva, gva + size) -> [gpa, ...). */
struct xlat {
	uint64_t gva, size, gpa, flags;	/* flags: RIGHTS bits */
};

/* A translation the vCPU's TLB may hold: tagged with the PCID it was used
 * under (0 without CR4.PCIDE), or global (G with CR4.PGE, any PCID). */
struct tent {
	struct xlat x;
	uint16_t ctx;
	bool global;
};

struct aspace {
	struct guest_pt *pt;
	uint64_t pool;
	struct xlat rec[MAX_REC];
	int nrec;
	/* Tables were freed while this space was not loaded: its next load
	 * flushes its PCID, as Linux does before reusing freed tables, so no
	 * paging-structure cache can combine an old entry with a new table. */
	bool need_flush;
};

/* The page table every address space of the threads test links (SHV_GVA). */
struct shared {
	struct guest_pt *pt;		/* owns the table; written by engine 0 */
	int version[SD_PAGES];		/* 0: SD_BASE page, 1: the B copy */
};

enum { ACC_R, ACC_W, ACC_X };
enum { O_OK, O_MMIO, O_PF, O_GP };

struct outcome {
	int kind;
	uint64_t gpa;
	uint32_t ec;
};

struct eng {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	enum guest_mode mode;
	int id;				/* thread / slice index */
	int nas;
	struct aspace as[MAX_AS];
	uint64_t win[4];
	int nwin;
	uint64_t probe_off;
	uint64_t s0, s1, pools;
	uint64_t *sh0, *sh1;		/* shadow copies of the two data slices */
	uint64_t rng, seed, step, seq;
	struct shared *shared;
	/* vCPU state, as the model knows it */
	int cur;
	bool pcide, pge, wp, smep, smap, ac, nxe;
	uint32_t cpl;
	uint16_t ctx;			/* PCID in use */
	/* TLB over-approximation */
	struct tent tlb[TLB_MAX];
	int ntlb;
	/* statistics of the run */
	uint64_t n_acc, n_ok, n_mmio, n_pf, n_gp, n_stale_cand, n_stale_used, n_ops[24];
	/* failure */
	bool failed;
	char why[4096];
	char log[16][200];
	unsigned int nlog;
	bool trace;
};

static uint64_t rnd(struct eng *e, uint64_t n)
{
	return xorshift(&e->rng) % n;
}

static void __attribute__((format(printf, 2, 3))) elog(struct eng *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->log[e->nlog % 16], sizeof(e->log[0]), fmt, ap);
	va_end(ap);
	/* VMMU_SHADOW_TRACE=1: every operation on stderr, to replay a failure. */
	if (e->trace)
		fprintf(stderr, "e%d %llu: %s\n", e->id, (unsigned long long)e->step, e->log[e->nlog % 16]);
	e->nlog++;
}

static int __attribute__((format(printf, 2, 3))) efail(struct eng *e, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (e->failed)
		return -1;
	e->failed = true;
	n = (size_t)snprintf(e->why, sizeof(e->why), "engine %d, %s paging, seed %#llx, step %llu: ", e->id,
			     mode_names[e->mode], (unsigned long long)e->seed, (unsigned long long)e->step);
	va_start(ap, fmt);
	n += (size_t)vsnprintf(e->why + n, n < sizeof(e->why) ? sizeof(e->why) - n : 0, fmt, ap);
	va_end(ap);
	if (n < sizeof(e->why))
		n += (size_t)snprintf(e->why + n, sizeof(e->why) - n, "\n    last operations (oldest first):");
	for (unsigned int i = e->nlog > 16 ? e->nlog - 16 : 0; i < e->nlog && n < sizeof(e->why); i++)
		n += (size_t)snprintf(e->why + n, sizeof(e->why) - n, "\n      %s", e->log[i % 16]);
	return -1;
}

#define ECHECK(e, cond, ...)                          \
	do {                                          \
		if (!(cond))                          \
			return efail((e), __VA_ARGS__); \
	} while (0)

static bool is_mmio(uint64_t gpa)
{
	return gpa >= MMIO_BASE && gpa < MMIO_BASE + MMIO_SIZE;
}

static bool canonical(const struct eng *e, uint64_t gva)
{
	unsigned int bits = e->mode == GUEST_MODE_5LEVEL ? 57 : 48;

	if (e->mode < GUEST_MODE_4LEVEL)
		return !(gva >> 32);
	return (uint64_t)((int64_t)(gva << (64 - bits)) >> (64 - bits)) == gva;
}

static uint64_t *shadow_word(struct eng *e, uint64_t gpa)
{
	if (gpa >= e->s0 && gpa < e->s0 + SLICE)
		return &e->sh0[(gpa - e->s0) / 8];
	if (gpa >= e->s1 && gpa < e->s1 + SLICE)
		return &e->sh1[(gpa - e->s1) / 8];
	return NULL;
}

static bool covers(const struct xlat *x, uint64_t gva)
{
	return gva - x->gva < x->size;
}

static bool xlat_eq(const struct xlat *a, const struct xlat *b)
{
	return a->gva == b->gva && a->size == b->size && a->gpa == b->gpa && a->flags == b->flags;
}

static const char *xstr(const struct xlat *x, char *buf, size_t len)
{
	if (!x) {
		snprintf(buf, len, "not-present");
		return buf;
	}
	snprintf(buf, len, "%#llx+%#llx->%#llx%s%s%s%s", (unsigned long long)x->gva, (unsigned long long)x->size,
		 (unsigned long long)x->gpa, x->flags & GUEST_W ? " W" : "", x->flags & GUEST_U ? " U" : "",
		 x->flags & GUEST_NX ? " NX" : "", x->flags & GUEST_G ? " G" : "");
	return buf;
}

/* ---- the model TLB --------------------------------------------------------- */

static void tlb_add(struct eng *e, const struct xlat *x)
{
	bool global = (x->flags & GUEST_G) && e->pge;
	uint16_t ctx = global ? 0 : e->ctx;

	for (int i = 0; i < e->ntlb; i++)
		if (e->tlb[i].global == global && e->tlb[i].ctx == ctx && xlat_eq(&e->tlb[i].x, x))
			return;
	/* Never lose one (that would make the model stricter than the
	 * architecture): the step loop flushes long before this fills. */
	if (e->ntlb < TLB_MAX)
		e->tlb[e->ntlb++] = (struct tent){ *x, ctx, global };
}

/* Keep the entries for which drop() is false. */
static void tlb_filter(struct eng *e, bool (*drop)(const struct eng *, const struct tent *, uint64_t), uint64_t arg)
{
	int n = 0;

	for (int i = 0; i < e->ntlb; i++)
		if (!drop(e, &e->tlb[i], arg))
			e->tlb[n++] = e->tlb[i];
	e->ntlb = n;
}

static bool drop_all(const struct eng *e, const struct tent *t, uint64_t arg)
{
	return true;
}

static bool drop_ctx(const struct eng *e, const struct tent *t, uint64_t ctx)
{
	return !t->global && t->ctx == ctx;
}

static bool drop_invlpg(const struct eng *e, const struct tent *t, uint64_t gva)
{
	return (t->global || t->ctx == e->ctx) && covers(&t->x, gva);
}

/* Every translation of the loaded space may be in the TLB when it stops
 * being current (the space is left, or its entry changes). */
static void materialize_all(struct eng *e)
{
	struct aspace *a = &e->as[e->cur];

	for (int i = 0; i < a->nrec; i++)
		tlb_add(e, &a->rec[i]);
}

static void model_full_flush(struct eng *e)
{
	tlb_filter(e, drop_all, 0);
	for (int i = 0; i < e->nas; i++)
		e->as[i].need_flush = false;
}

/* ---- records --------------------------------------------------------------- */

static int rec_find(struct aspace *a, uint64_t gva)
{
	for (int i = 0; i < a->nrec; i++)
		if (covers(&a->rec[i], gva))
			return i;
	return -1;
}

/* Removes record i of space j, remembering it when j is loaded. */
static void rec_remove(struct eng *e, int j, int i)
{
	struct aspace *a = &e->as[j];

	if (j == e->cur)
		tlb_add(e, &a->rec[i]);
	a->rec[i] = a->rec[--a->nrec];
}

static uint64_t size_level(const struct eng *e, uint64_t size)
{
	return size == PAGE ? 1 : size == GUEST_PAGE_1G ? 3 : 2;
}

/* ---- state ----------------------------------------------------------------- */

static uint64_t eng_cr3(const struct eng *e, int as)
{
	uint64_t cr3 = guest_pt_cr3(e->as[as].pt);

	return e->pcide ? cr3 | e->ctx : cr3;
}

static void eng_state(const struct eng *e, struct vmmu_cpu_state *s)
{
	guest_pt_state(e->as[e->cur].pt, s, e->cpl);
	s->cr3 = eng_cr3(e, e->cur);
	if (!e->wp)
		s->cr0 &= ~VMMU_CR0_WP;
	if (e->pge)
		s->cr4 |= VMMU_CR4_PGE;
	if (e->smep)
		s->cr4 |= VMMU_CR4_SMEP;
	if (e->smap)
		s->cr4 |= VMMU_CR4_SMAP;
	if (e->pcide)
		s->cr4 |= VMMU_CR4_PCIDE;
	if (e->nxe)
		s->efer |= VMMU_EFER_NXE;
	else
		s->efer &= ~VMMU_EFER_NXE;
	if (e->ac)
		s->rflags |= VMMU_RFLAGS_AC;
}

static int eng_load_state(struct eng *e, const char *what)
{
	struct vmmu_cpu_state s;
	int r;

	eng_state(e, &s);
	r = vmmu_vcpu_set_state(e->vcpu, &s);
	ECHECK(e, r == 0, "%s: vmmu_vcpu_set_state = %d (%s)", what, r, vmmu_strerror(r));
	return 0;
}

/* CR4.PGE off and on: both flush everything, globals included. */
static int eng_full_flush(struct eng *e)
{
	elog(e, "full flush (CR4.PGE %d -> %d)", e->pge, !e->pge);
	e->pge = !e->pge;
	if (eng_load_state(e, "PGE toggle"))
		return -1;
	model_full_flush(e);
	return 0;
}

/* ---- the reference: what an access may do ---------------------------------- */

static struct outcome eval(const struct eng *e, const struct xlat *x, uint64_t gva, int type)
{
	bool write = type == ACC_W, fetch = type == ACC_X, user = e->cpl == 3;
	uint32_t bits = (write ? PF_W : 0) | (user ? PF_U : 0) |
			(fetch && (e->smep || (e->nxe && e->mode != GUEST_MODE_32)) ? PF_ID : 0);
	struct outcome o = { O_PF, 0, bits };
	bool u, w, nx, fault;

	if (!canonical(e, gva))
		return (struct outcome){ O_GP, 0, 0 };
	if (!x)
		return o;
	/* XD is a reserved bit without EFER.NXE (SDM 4.4.2, 4.5.4). */
	if ((x->flags & GUEST_NX) && !e->nxe) {
		o.ec |= PF_P | PF_RSVD;
		return o;
	}
	u = x->flags & GUEST_U;
	w = x->flags & GUEST_W;
	nx = x->flags & GUEST_NX;
	if (user)
		fault = !u || (write && !w) || (fetch && nx);
	else if (fetch)
		fault = (u && e->smep) || nx;
	else
		fault = (u && e->smap && !e->ac) || (write && !w && e->wp);
	if (fault) {
		o.ec |= PF_P;
		return o;
	}
	o.gpa = x->gpa + (gva - x->gva);
	o.kind = is_mmio(o.gpa) ? O_MMIO : O_OK;
	return o;
}

static const char *ostr(const struct outcome *o, char *buf, size_t len)
{
	switch (o->kind) {
	case O_OK: snprintf(buf, len, "ok@%#llx", (unsigned long long)o->gpa); break;
	case O_MMIO: snprintf(buf, len, "mmio@%#llx", (unsigned long long)o->gpa); break;
	case O_PF: snprintf(buf, len, "#PF(%#x)", o->ec); break;
	default: snprintf(buf, len, "#GP"); break;
	}
	return buf;
}

struct cand {
	struct xlat x;
	bool np;
	struct outcome o;
};

/*
 * The current translation first, then every distinct cached one; *cached
 * says whether any cached entry covers gva at all (one equal to the
 * current translation still means the TLB need not walk the guest's leaf).
 */
static int candidates(struct eng *e, uint64_t gva, int type, struct cand *c, bool *cached)
{
	struct aspace *a = &e->as[e->cur];
	int i = rec_find(a, gva), n = 1;

	*cached = false;
	c[0].np = i < 0;
	if (i >= 0)
		c[0].x = a->rec[i];
	c[0].o = eval(e, c[0].np ? NULL : &c[0].x, gva, type);
	for (int k = 0; k < e->ntlb && n < MAX_CAND; k++) {
		const struct tent *t = &e->tlb[k];
		bool dup = false;

		if (!(t->global || t->ctx == e->ctx) || !covers(&t->x, gva))
			continue;
		*cached = true;
		for (int m = 0; m < n && !dup; m++)
			dup = !c[m].np && xlat_eq(&c[m].x, &t->x);
		if (dup)
			continue;
		c[n].x = t->x;
		c[n].np = false;
		c[n].o = eval(e, &c[n].x, gva, type);
		n++;
	}
	return n;
}

static void cands_str(const struct cand *c, int n, char *buf, size_t len)
{
	size_t off = 0;
	char b1[96], b2[64];

	buf[0] = 0;
	for (int i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s[%s => %s]", i ? (i == 1 ? " stale:" : ",") : "",
					xstr(c[i].np ? NULL : &c[i].x, b1, sizeof(b1)), ostr(&c[i].o, b2, sizeof(b2)));
}

/* The guest's own tables (in guest memory) must say what the model says. */
static int check_guest_tables(struct eng *e, int j, uint64_t gva)
{
	struct aspace *a = &e->as[j];
	int i = rec_find(a, gva);
	uint64_t gpa = 0, size = 0, leaf = 0;
	int r = guest_lookup(a->pt, gva, &gpa, &size, &leaf, NULL);

	if (i < 0) {
		ECHECK(e, r == VMMU_ENOENT, "space %d gva %#llx: model says unmapped, guest tables map it to %#llx "
			  "(leaf %#llx, r=%d)", j, (unsigned long long)gva, (unsigned long long)gpa,
		       (unsigned long long)leaf, r);
		return 0;
	}
	ECHECK(e, r == 0 && gpa == a->rec[i].gpa + (gva - a->rec[i].gva) && size == a->rec[i].size &&
			  (leaf & RIGHTS) == a->rec[i].flags,
	       "space %d gva %#llx: model says %#llx size %#llx flags %#llx, guest tables say r=%d gpa %#llx size "
	       "%#llx leaf %#llx", j, (unsigned long long)gva,
	       (unsigned long long)(a->rec[i].gpa + (gva - a->rec[i].gva)), (unsigned long long)a->rec[i].size,
	       (unsigned long long)a->rec[i].flags, r, (unsigned long long)gpa, (unsigned long long)size,
	       (unsigned long long)leaf);
	return 0;
}

static const char *const acc_names[] = { "read", "write", "fetch" };

/* One guest access at gva, checked against the model. */
static int do_access(struct eng *e, uint64_t gva, int type)
{
	static _Thread_local struct cand c[MAX_CAND];
	unsigned int flags = type == ACC_W ? VMMU_ACCESS_WRITE : type == ACC_X ? VMMU_ACCESS_FETCH : VMMU_ACCESS_READ;
	uint64_t val = type == ACC_W ? ((uint64_t)(e->id + 1) << 56) | (++e->seq << 8) | 0xa5 : 0x0bad0bad0bad0badULL;
	uint64_t buf = val;
	struct vmmu_exit x;
	char cs[1024];
	int n, r, match = -1;
	bool cached;

	if (canonical(e, gva) && check_guest_tables(e, e->cur, gva))
		return -1;
	n = candidates(e, gva, type, c, &cached);
	cands_str(c, n, cs, sizeof(cs));
	elog(e, "%s gva %#llx cpl%u: %s", acc_names[type], (unsigned long long)gva, e->cpl, cs);
	memset(&x, 0, sizeof(x));
	e->n_acc++;
	if (n > 1)
		e->n_stale_cand++;
	r = vmmu_vcpu_access(e->vcpu, gva, &buf, 8, flags, &x);
	if (r == 0) {
		e->n_ok++;
		if (type == ACC_W) {
			/* Exactly one allowed gpa took the value; the others kept theirs. */
			int landed = 0;

			for (int i = 0; i < n; i++) {
				uint64_t *sw, h;
				bool seen = false;

				if (c[i].o.kind != O_OK)
					continue;
				for (int k = 0; k < i && !seen; k++)
					seen = c[k].o.kind == O_OK && c[k].o.gpa == c[i].o.gpa;
				if (seen)
					continue;
				sw = shadow_word(e, c[i].o.gpa);
				ECHECK(e, sw, "model bug: gpa %#llx has no shadow", (unsigned long long)c[i].o.gpa);
				h = host_rd64(e->vm, c[i].o.gpa);
				if (h == val) {
					landed++;
					match = i;
				} else {
					ECHECK(e, h == *sw, "write of %#llx to gva %#llx: gpa %#llx changed to %#llx (want %#llx); %s",
					       (unsigned long long)val, (unsigned long long)gva,
					       (unsigned long long)c[i].o.gpa, (unsigned long long)h,
					       (unsigned long long)*sw, cs);
				}
			}
			ECHECK(e, landed == 1, "write of %#llx to gva %#llx completed; it landed at %d allowed gpas; allowed: %s",
			       (unsigned long long)val, (unsigned long long)gva, landed, cs);
			*shadow_word(e, c[match].o.gpa) = val;
		} else {
			for (int i = 0; i < n && match < 0; i++) {
				uint64_t *sw;

				if (c[i].o.kind != O_OK)
					continue;
				sw = shadow_word(e, c[i].o.gpa);
				ECHECK(e, sw, "model bug: gpa %#llx has no shadow", (unsigned long long)c[i].o.gpa);
				if (*sw == buf)
					match = i;
			}
			ECHECK(e, match >= 0, "%s of gva %#llx completed with %#llx; allowed: %s", acc_names[type],
			       (unsigned long long)gva, (unsigned long long)buf, cs);
			ECHECK(e, host_rd64(e->vm, c[match].o.gpa) == buf, "memory at %#llx is %#llx, the shadow copy %#llx",
			       (unsigned long long)c[match].o.gpa, (unsigned long long)host_rd64(e->vm, c[match].o.gpa),
			       (unsigned long long)buf);
		}
		/* Nothing cached: the walk used the guest's leaf, so A (and D
		 * for a write) are set there now (SDM 4.8). */
		if (!cached) {
			uint64_t leaf = 0;

			ECHECK(e, guest_lookup(e->as[e->cur].pt, gva, NULL, NULL, &leaf, NULL) == 0, "lookup failed");
			ECHECK(e, (leaf & GUEST_A) && (type != ACC_W || (leaf & GUEST_D)),
			       "%s of gva %#llx through leaf %#llx without stale entries: A%s not set", acc_names[type],
			       (unsigned long long)gva, (unsigned long long)leaf, type == ACC_W ? "/D" : "");
		}
	} else if (r == VMMU_EXIT) {
		for (int i = 0; i < n; i++) {
			uint64_t *sw;

			/* Nothing moves when an access exits. */
			if (c[i].o.kind == O_OK && (sw = shadow_word(e, c[i].o.gpa)))
				ECHECK(e, host_rd64(e->vm, c[i].o.gpa) == *sw,
				       "%s of gva %#llx exited (%s) but gpa %#llx changed to %#llx (want %#llx); %s",
				       acc_names[type], (unsigned long long)gva, exit_name(x.reason),
				       (unsigned long long)c[i].o.gpa, (unsigned long long)host_rd64(e->vm, c[i].o.gpa),
				       (unsigned long long)*sw, cs);
		}
		switch (x.reason) {
		case VMMU_EXIT_MMIO:
			e->n_mmio++;
			for (int i = 0; i < n && match < 0; i++)
				if (c[i].o.kind == O_MMIO && c[i].o.gpa == x.u.mmio.gpa)
					match = i;
			ECHECK(e, match >= 0 && x.u.mmio.len == 8 && x.u.mmio.offset == 0 &&
					  !!x.u.mmio.is_write == (type == ACC_W),
			       "%s of gva %#llx: MMIO exit gpa %#llx len %u write %u; allowed: %s", acc_names[type],
			       (unsigned long long)gva, (unsigned long long)x.u.mmio.gpa, x.u.mmio.len,
			       x.u.mmio.is_write, cs);
			break;
		case VMMU_EXIT_GUEST_FAULT:
			if (x.u.guest_fault.vector == 13) {
				e->n_gp++;
				ECHECK(e, c[0].o.kind == O_GP, "%s of gva %#llx: #GP; allowed: %s", acc_names[type],
				       (unsigned long long)gva, cs);
				match = 0;
				break;
			}
			e->n_pf++;
			for (int i = 0; i < n && match < 0; i++)
				if (c[i].o.kind == O_PF && c[i].o.ec == x.u.guest_fault.error_code)
					match = i;
			ECHECK(e, match >= 0 && x.u.guest_fault.vector == 14 && x.u.guest_fault.addr == gva,
			       "%s of gva %#llx: fault vector %u error code %#x addr %#llx; allowed: %s",
			       acc_names[type], (unsigned long long)gva, x.u.guest_fault.vector,
			       x.u.guest_fault.error_code, (unsigned long long)x.u.guest_fault.addr, cs);
			break;
		default:
			return efail(e, "%s of gva %#llx: unexpected exit %s; allowed: %s", acc_names[type],
				     (unsigned long long)gva, exit_name(x.reason), cs);
		}
	} else {
		return efail(e, "%s of gva %#llx: vmmu_vcpu_access = %d (%s)", acc_names[type], (unsigned long long)gva,
			     r, vmmu_strerror(r));
	}
	if (match > 0 && memcmp(&c[match].o, &c[0].o, sizeof(c[0].o)))
		e->n_stale_used++;
	return 0;
}

/* ---- choosing addresses ---------------------------------------------------- */

static uint64_t probe_base(const struct eng *e, int w)
{
	return e->win[w] + e->probe_off;
}

/* A gva in the probe area of a record, 8-byte aligned. */
static uint64_t gva_in(struct eng *e, const struct xlat *x)
{
	uint64_t lo = x->gva, len = x->size;

	if (len > PROBE) {	/* 1G: only the probe area of it */
		lo = x->gva + e->probe_off;
		len = PROBE;
	}
	return lo + rnd(e, len / 8) * 8;
}

static uint64_t pick_gva(struct eng *e)
{
	struct aspace *a = &e->as[e->cur];
	uint64_t p = rnd(e, 100);

	if (p < 55 && a->nrec)
		return gva_in(e, &a->rec[rnd(e, (uint64_t)a->nrec)]);
	if (p < 72 && e->ntlb) {
		const struct tent *t = &e->tlb[rnd(e, (uint64_t)e->ntlb)];
		uint64_t g = gva_in(e, &t->x);

		/* Only addresses the engine owns (the probe areas). */
		for (int w = 0; w < e->nwin; w++)
			if (g - probe_base(e, w) < PROBE)
				return g;
	}
	if (p < 75 && e->mode >= GUEST_MODE_4LEVEL) {
		static const uint64_t nc4[] = { 0x0000800000000000ULL, 0x00ff000040000000ULL, 0xff00000040000000ULL };
		static const uint64_t nc5[] = { 0x0100000000000000ULL, 0x8000000000000000ULL, 0x7fffffffffff0000ULL };

		return (e->mode == GUEST_MODE_5LEVEL ? nc5 : nc4)[rnd(e, 3)] + rnd(e, 512) * 8;
	}
	return probe_base(e, (int)rnd(e, (uint64_t)e->nwin)) + rnd(e, PROBE / 8) * 8;
}

static uint64_t rnd_flags(struct eng *e)
{
	uint64_t f = 0;

	if (rnd(e, 100) < 60)
		f |= GUEST_W;
	if (rnd(e, 100) < 50)
		f |= GUEST_U;
	if (e->mode != GUEST_MODE_32 && rnd(e, 100) < 20)
		f |= GUEST_NX;
	if (rnd(e, 100) < 15)
		f |= GUEST_G;
	return f;
}

/* A frame of this size: RAM in the engine's slices, or MMIO. */
static uint64_t rnd_frame(struct eng *e, uint64_t size, uint64_t npages)
{
	bool mmio = rnd(e, 100) < 15;

	if (size == GUEST_PAGE_1G)
		return mmio ? MMIO_BASE : S1_BASE;
	if (mmio)
		return MMIO_BASE + rnd(e, 16 * MB / size - npages + 1) * size;
	return (rnd(e, 2) ? e->s0 : e->s1) + rnd(e, SLICE / size - npages + 1) * size;
}

static uint64_t rnd_size(struct eng *e)
{
	uint64_t p = rnd(e, 100);

	if (p < 62)
		return PAGE;
	if (e->mode == GUEST_MODE_32)
		return GUEST_PAGE_4M;
	if (p < 90 || e->mode == GUEST_MODE_PAE)
		return GUEST_PAGE_2M;
	return GUEST_PAGE_1G;
}

/* ---- guest page-table operations ------------------------------------------ */

static uint64_t pool_used(struct aspace *a)
{
	uint64_t used, free_pages;

	guest_pt_pool_usage(a->pt, &used, &free_pages);
	return used;
}

/*
 * guest_unmap, then what a guest kernel does after freeing tables: the
 * loaded space invalidates at once (INVLPG also drops the PCID's
 * paging-structure caches, SDM 4.10.4.1); another one flushes when next
 * loaded.
 */
static int unmap_range(struct eng *e, int j, uint64_t lo, uint64_t hi)
{
	struct aspace *a = &e->as[j];
	uint64_t before = pool_used(a);
	int r = guest_unmap(a->pt, lo, hi - lo);

	ECHECK(e, r == 0, "guest_unmap(space %d, %#llx, %#llx) = %d (%s)", j, (unsigned long long)lo,
	       (unsigned long long)(hi - lo), r, vmmu_strerror(r));
	if (pool_used(a) < before) {
		if (j == e->cur) {
			vmmu_vcpu_invlpg(e->vcpu, lo);
			tlb_filter(e, drop_invlpg, lo);
		} else {
			a->need_flush = true;
		}
	}
	return 0;
}

static int op_map(struct eng *e, int j)
{
	struct aspace *a = &e->as[j];
	uint64_t size = rnd_size(e), n = size == PAGE ? 1 + rnd(e, 8) : 1, base, gpa, flags, lo, hi;
	int w = (int)rnd(e, (uint64_t)e->nwin), r;
	bool grown;

	if (size == GUEST_PAGE_1G)
		base = e->win[w];
	else
		base = probe_base(e, w) + rnd(e, PROBE / size - n + 1) * size;
	gpa = rnd_frame(e, size, n);
	flags = rnd_flags(e);
	if (a->nrec + (int)n > MAX_REC)
		return 0;
	/* Whatever overlaps goes first, whole leaves.  Inclusive ends: the
	 * top window ends at 2^64. */
	lo = base;
	hi = base + n * size - 1;
	do {
		grown = false;
		for (int i = 0; i < a->nrec; i++) {
			struct xlat *x = &a->rec[i];
			uint64_t xl = x->gva + x->size - 1;

			if (x->gva <= hi && lo <= xl && (x->gva < lo || xl > hi)) {
				lo = x->gva < lo ? x->gva : lo;
				hi = xl > hi ? xl : hi;
				grown = true;
			}
		}
	} while (grown);
	for (int i = a->nrec - 1; i >= 0; i--)
		if (a->rec[i].gva <= hi && lo <= a->rec[i].gva + a->rec[i].size - 1)
			rec_remove(e, j, i);
	hi++;	/* exclusive again (may wrap to 0: unmap_range takes hi - lo) */
	elog(e, "map space %d: %#llx+%llux%#llx -> %#llx flags %#llx (cleared %#llx..%#llx)", j,
	     (unsigned long long)base, (unsigned long long)n, (unsigned long long)size, (unsigned long long)gpa,
	     (unsigned long long)flags, (unsigned long long)lo, (unsigned long long)hi);
	if (unmap_range(e, j, lo, hi))
		return -1;
	r = guest_map(a->pt, base, gpa, n * size, size, flags);
	ECHECK(e, r == 0, "guest_map(space %d, %#llx -> %#llx, %#llx pages of %#llx, flags %#llx) = %d (%s)", j,
	       (unsigned long long)base, (unsigned long long)gpa, (unsigned long long)n, (unsigned long long)size,
	       (unsigned long long)flags, r, vmmu_strerror(r));
	for (uint64_t i = 0; i < n; i++)
		a->rec[a->nrec++] = (struct xlat){ base + i * size, size, gpa + i * size, flags };
	return 0;
}

static int op_unmap(struct eng *e, int j)
{
	struct aspace *a = &e->as[j];
	uint64_t lo, hi;

	if (!a->nrec)
		return 0;
	if (rnd(e, 10) == 0) {
		/* A whole probe area at once: tables get freed. */
		int w = (int)rnd(e, (uint64_t)e->nwin);

		lo = probe_base(e, w);
		hi = lo + PROBE - 1;	/* inclusive until the end */
		for (int i = a->nrec - 1; i >= 0; i--) {
			if (a->rec[i].gva <= hi && lo <= a->rec[i].gva + a->rec[i].size - 1 &&
			    a->rec[i].size == GUEST_PAGE_1G) {
				lo = a->rec[i].gva;
				hi = lo + GUEST_PAGE_1G - 1;
			}
		}
		for (int i = a->nrec - 1; i >= 0; i--)
			if (a->rec[i].gva <= hi && lo <= a->rec[i].gva + a->rec[i].size - 1)
				rec_remove(e, j, i);
		hi++;
	} else {
		int i = (int)rnd(e, (uint64_t)a->nrec);

		lo = a->rec[i].gva;
		hi = lo + a->rec[i].size;
		rec_remove(e, j, i);
	}
	elog(e, "unmap space %d: %#llx..%#llx", j, (unsigned long long)lo, (unsigned long long)hi);
	return unmap_range(e, j, lo, hi);
}

static int op_protect(struct eng *e, int j)
{
	struct aspace *a = &e->as[j];
	uint64_t flags = rnd_flags(e);
	char b[96];
	int i, r;

	if (!a->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)a->nrec);
	elog(e, "protect space %d: %s -> flags %#llx", j, xstr(&a->rec[i], b, sizeof(b)), (unsigned long long)flags);
	if (j == e->cur)
		tlb_add(e, &a->rec[i]);
	r = guest_protect(a->pt, a->rec[i].gva, a->rec[i].size, flags);
	ECHECK(e, r == 0, "guest_protect = %d (%s)", r, vmmu_strerror(r));
	a->rec[i].flags = flags;
	return 0;
}

static int op_remap(struct eng *e, int j)
{
	struct aspace *a = &e->as[j];
	uint64_t flags = rnd_flags(e), gpa;
	char b[96];
	int i, r;

	if (!a->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)a->nrec);
	gpa = rnd_frame(e, a->rec[i].size, 1);
	elog(e, "remap space %d: %s -> %#llx flags %#llx", j, xstr(&a->rec[i], b, sizeof(b)), (unsigned long long)gpa,
	     (unsigned long long)flags);
	if (j == e->cur)
		tlb_add(e, &a->rec[i]);
	r = guest_map(a->pt, a->rec[i].gva, gpa, a->rec[i].size, a->rec[i].size, flags);
	ECHECK(e, r == 0, "guest_map (remap) = %d (%s)", r, vmmu_strerror(r));
	a->rec[i].gpa = gpa;
	a->rec[i].flags = flags;
	return 0;
}

/* The raw leaf entry for a translation, in the mode's format. */
static uint64_t make_leaf(const struct eng *e, uint64_t size, uint64_t gpa, uint64_t flags)
{
	uint64_t v = GUEST_PTE_P | flags;

	if (size != PAGE)
		v |= GUEST_PTE_PS;
	return v | gpa;		/* 32-bit 4M frames are below 4G: no PSE-36 bits */
}

/*
 * A PTE change written by a guest store through the direct map (a gva
 * alias of the page-table pool), as kernels write their tables: protect,
 * unmap (write 0; the table stays) or remap one leaf of any space.
 */
static int op_dmap_write(struct eng *e)
{
	int j = (int)rnd(e, (uint64_t)e->nas), i, r, kind = (int)rnd(e, 3);
	struct aspace *a = &e->as[j];
	unsigned int esz = e->mode == GUEST_MODE_32 ? 4 : 8;
	uint64_t old, egpa, nv, gva, check = 0;
	struct xlat x;
	struct vmmu_exit ex;
	char b[96];

	if (!a->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)a->nrec);
	x = a->rec[i];
	r = guest_get_entry(a->pt, x.gva, (int)size_level(e, x.size), &old, &egpa);
	ECHECK(e, r == 0, "guest_get_entry(space %d, %#llx) = %d", j, (unsigned long long)x.gva, r);
	if (kind == 0) {
		x.flags = rnd_flags(e);
		nv = (old & ~GUEST_FLAGS_MASK) | x.flags;
	} else if (kind == 1) {
		nv = 0;
	} else {
		x.gpa = rnd_frame(e, x.size, 1);
		x.flags = rnd_flags(e);
		nv = make_leaf(e, x.size, x.gpa, x.flags);
	}
	gva = DMAP_GVA + (egpa - e->pools);
	elog(e, "dmap %s space %d: %s entry @%#llx %#llx -> %#llx via gva %#llx",
	     kind == 0 ? "protect" : kind == 1 ? "unmap" : "remap", j, xstr(&a->rec[i], b, sizeof(b)),
	     (unsigned long long)egpa, (unsigned long long)old, (unsigned long long)nv, (unsigned long long)gva);
	if (j == e->cur)
		tlb_add(e, &a->rec[i]);
	memset(&ex, 0, sizeof(ex));
	/* Implicit supervisor access: the direct map is supervisor-only and
	 * this must work at CPL 3 and under SMAP alike. */
	r = vmmu_vcpu_access(e->vcpu, gva, &nv, esz, VMMU_ACCESS_WRITE | VMMU_ACCESS_IMPLICIT, &ex);
	ECHECK(e, r == 0, "store to the direct map at gva %#llx (entry gpa %#llx): r=%d exit %s ec %#x",
	       (unsigned long long)gva, (unsigned long long)egpa, r, r == VMMU_EXIT ? exit_name(ex.reason) : "-",
	       ex.u.guest_fault.error_code);
	check = host_rd64(e->vm, egpa);
	if (esz == 4)
		check &= 0xffffffffULL;
	ECHECK(e, check == nv, "entry at %#llx is %#llx after the store of %#llx", (unsigned long long)egpa,
	       (unsigned long long)check, (unsigned long long)nv);
	if (kind == 1)
		a->rec[i] = a->rec[--a->nrec];
	else
		a->rec[i] = x;
	return 0;
}

/* A read of a page-table pool page through the direct map. */
static int op_dmap_read(struct eng *e)
{
	uint64_t off = rnd(e, (uint64_t)e->nas * POOL_BYTES / 8) * 8, v = 0;
	struct vmmu_exit ex;
	int r;

	elog(e, "dmap read gpa %#llx", (unsigned long long)(e->pools + off));
	memset(&ex, 0, sizeof(ex));
	r = vmmu_vcpu_access(e->vcpu, DMAP_GVA + off, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_IMPLICIT, &ex);
	ECHECK(e, r == 0, "read of the direct map at gva %#llx: r=%d exit %s", (unsigned long long)(DMAP_GVA + off), r,
	       r == VMMU_EXIT ? exit_name(ex.reason) : "-");
	ECHECK(e, v == host_rd64(e->vm, e->pools + off), "direct-map read of gpa %#llx gave %#llx, memory holds %#llx",
	       (unsigned long long)(e->pools + off), (unsigned long long)v,
	       (unsigned long long)host_rd64(e->vm, e->pools + off));
	return 0;
}

/* ---- TLB operations -------------------------------------------------------- */

static int op_cr3(struct eng *e)
{
	int b = (int)rnd(e, (uint64_t)e->nas);
	bool noflush = e->pcide && !e->as[b].need_flush && rnd(e, 2);
	uint16_t ctx = e->pcide ? (uint16_t)(b + 1) : 0;
	uint64_t cr3 = guest_pt_cr3(e->as[b].pt) | ctx | (noflush ? VMMU_CR3_PCID_NOFLUSH : 0);
	int r;

	elog(e, "mov cr3 %d -> %d (%#llx)%s", e->cur, b, (unsigned long long)cr3, noflush ? " noflush" : "");
	materialize_all(e);
	r = vmmu_vcpu_write_cr3(e->vcpu, cr3);
	ECHECK(e, r == 0, "vmmu_vcpu_write_cr3(%#llx) = %d (%s)", (unsigned long long)cr3, r, vmmu_strerror(r));
	e->cur = b;
	e->ctx = ctx;
	if (!noflush) {
		tlb_filter(e, drop_ctx, ctx);
		e->as[b].need_flush = false;
	}
	return 0;
}

static int op_invlpg(struct eng *e)
{
	uint64_t gva = pick_gva(e);

	if (!canonical(e, gva))
		return 0;
	elog(e, "invlpg %#llx", (unsigned long long)gva);
	vmmu_vcpu_invlpg(e->vcpu, gva);
	tlb_filter(e, drop_invlpg, gva);
	return 0;
}

/* WP, SMEP, SMAP, AC, CPL, NXE: rights are checked against the state at
 * each access, cached translations included, so no flush is assumed. */
static int op_role(struct eng *e)
{
	int what = (int)rnd(e, e->mode == GUEST_MODE_32 ? 5 : 6);
	static const char *const names[] = { "CR0.WP", "CR4.SMEP", "CR4.SMAP", "RFLAGS.AC", "CPL", "EFER.NXE" };

	elog(e, "toggle %s", names[what]);
	switch (what) {
	case 0: e->wp = !e->wp; break;
	case 1: e->smep = !e->smep; break;
	case 2: e->smap = !e->smap; break;
	case 3: e->ac = !e->ac; break;
	case 4: e->cpl = e->cpl ? 0 : 3; break;
	default: e->nxe = !e->nxe; break;
	}
	if (eng_load_state(e, names[what]))
		return -1;
	/* Whether a cached XD translation stays usable when NXE changes is
	 * not for the model to guess: flush (vmmu would anyway). */
	if (what == 5)
		return eng_full_flush(e);
	return 0;
}

static int op_pcide(struct eng *e)
{
	if (e->mode < GUEST_MODE_4LEVEL)
		return 0;
	materialize_all(e);
	e->pcide = !e->pcide;
	/* Turned on with PCID 0 (required); turning it off flushes all. */
	e->ctx = 0;
	elog(e, "CR4.PCIDE -> %d", e->pcide);
	if (eng_load_state(e, "PCIDE"))
		return -1;
	if (!e->pcide)
		model_full_flush(e);
	return 0;
}

/* Paging off for a while (gva == gpa), then back on. */
static int op_paging_off(struct eng *e)
{
	struct vmmu_cpu_state s;
	int r;

	elog(e, "paging off");
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE;
	r = vmmu_vcpu_set_state(e->vcpu, &s);
	ECHECK(e, r == 0, "paging off: %d", r);
	model_full_flush(e);
	for (int k = 0; k < 4; k++) {
		uint64_t gpa = (rnd(e, 2) ? e->s0 : e->s1) + rnd(e, SLICE / 8) * 8, v = ++e->seq | 1ULL << 60, got = 0;
		struct vmmu_exit x;

		memset(&x, 0, sizeof(x));
		if (rnd(e, 2)) {
			r = vmmu_vcpu_access(e->vcpu, gpa, &v, 8, VMMU_ACCESS_WRITE, &x);
			ECHECK(e, r == 0 && host_rd64(e->vm, gpa) == v, "flat write of gpa %#llx: r=%d", (unsigned long long)gpa, r);
			*shadow_word(e, gpa) = v;
		} else {
			r = vmmu_vcpu_access(e->vcpu, gpa, &got, 8, VMMU_ACCESS_READ, &x);
			ECHECK(e, r == 0 && got == *shadow_word(e, gpa), "flat read of gpa %#llx: r=%d got %#llx want %#llx",
			       (unsigned long long)gpa, r, (unsigned long long)got, (unsigned long long)*shadow_word(e, gpa));
		}
	}
	{
		uint64_t gpa = MMIO_BASE + rnd(e, 1024) * 8, v = 0;
		struct vmmu_exit x;

		memset(&x, 0, sizeof(x));
		r = vmmu_vcpu_access(e->vcpu, gpa, &v, 8, VMMU_ACCESS_READ, &x);
		ECHECK(e, r == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO && x.u.mmio.gpa == gpa,
		       "flat read of MMIO gpa %#llx: r=%d exit %s gpa %#llx", (unsigned long long)gpa, r,
		       exit_name(x.reason), (unsigned long long)x.u.mmio.gpa);
	}
	e->pcide = false;
	e->ctx = 0;
	elog(e, "paging on");
	return eng_load_state(e, "paging on");
}

/* ---- the shared table (threads test) --------------------------------------- */

static uint64_t sd_page(int i, int version)
{
	return SD_BASE + ((uint64_t)version * SD_PAGES + (uint64_t)i) * PAGE;
}

static int op_shared_read(struct eng *e)
{
	int i = (int)rnd(e, SD_PAGES);
	uint64_t off = rnd(e, PAGE / 8) * 8, v = 0;
	struct vmmu_exit x;
	int r;

	elog(e, "shared read page %d +%#llx", i, (unsigned long long)off);
	memset(&x, 0, sizeof(x));
	r = vmmu_vcpu_access(e->vcpu, SHV_GVA + i * PAGE + off, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_IMPLICIT, &x);
	ECHECK(e, r == 0, "shared read of page %d: r=%d exit %s ec %#x", i, r, r == VMMU_EXIT ? exit_name(x.reason) : "-",
	       x.u.guest_fault.error_code);
	ECHECK(e, v == pat(sd_page(i, 0) + off) || v == pat(sd_page(i, 1) + off),
	       "shared read of page %d +%#llx: %#llx is neither version (%#llx, %#llx)", i, (unsigned long long)off,
	       (unsigned long long)v, (unsigned long long)pat(sd_page(i, 0) + off),
	       (unsigned long long)pat(sd_page(i, 1) + off));
	return 0;
}

/* Engine 0 repoints a PTE of the shared table; after its own INVLPG it
 * must see the new page (the others may see either until they flush). */
static int op_shared_flip(struct eng *e)
{
	struct shared *sh = e->shared;
	int i = (int)rnd(e, SD_PAGES), nv = !sh->version[i], r;
	uint64_t off = rnd(e, PAGE / 8) * 8, v = 0;
	struct vmmu_exit x;

	elog(e, "shared flip page %d -> version %d", i, nv);
	r = guest_map(sh->pt, SHV_GVA + i * PAGE, sd_page(i, nv), PAGE, PAGE, 0);
	ECHECK(e, r == 0, "guest_map(shared) = %d", r);
	sh->version[i] = nv;
	vmmu_vcpu_invlpg(e->vcpu, SHV_GVA + i * PAGE);
	memset(&x, 0, sizeof(x));
	r = vmmu_vcpu_access(e->vcpu, SHV_GVA + i * PAGE + off, &v, 8, VMMU_ACCESS_READ | VMMU_ACCESS_IMPLICIT, &x);
	ECHECK(e, r == 0 && v == pat(sd_page(i, nv) + off),
	       "shared page %d after flip + INVLPG: r=%d value %#llx, want %#llx (old version %#llx)", i, r,
	       (unsigned long long)v, (unsigned long long)pat(sd_page(i, nv) + off),
	       (unsigned long long)pat(sd_page(i, !nv) + off));
	return 0;
}

/* ---- whole-state checks ---------------------------------------------------- */

static int verify_all(struct eng *e)
{
	for (int s = 0; s < 2; s++) {
		uint64_t base = s ? e->s1 : e->s0, *sh = s ? e->sh1 : e->sh0;
		void *h;

		ECHECK(e, vmmu_gpa_to_hva(e->vm, base, &h) == 0, "no hva for %#llx", (unsigned long long)base);
		for (uint64_t k = 0; k < SLICE / 8; k++) {
			uint64_t v = __atomic_load_n((uint64_t *)h + k, __ATOMIC_RELAXED);

			ECHECK(e, v == sh[k], "gpa %#llx holds %#llx, the model %#llx (a write went astray)",
			       (unsigned long long)(base + k * 8), (unsigned long long)v, (unsigned long long)sh[k]);
		}
	}
	for (int j = 0; j < e->nas; j++)
		for (int i = 0; i < e->as[j].nrec; i++)
			if (check_guest_tables(e, j, e->as[j].rec[i].gva))
				return -1;
	return 0;
}

/* ---- set-up and the loop --------------------------------------------------- */

static void mode_windows(struct eng *e)
{
	static const uint64_t w32[] = { 0x40000000ULL, 0x80000000ULL, 0xc0000000ULL };
	static const uint64_t w4[] = { 0x40000000ULL, 0x00007fffc0000000ULL, 0xffff800040000000ULL,
				       0xffffffffc0000000ULL };
	static const uint64_t w5[] = { 0x40000000ULL, 0x00ffffffc0000000ULL, 0xff00000040000000ULL,
				       0xffffffffc0000000ULL };
	const uint64_t *w = e->mode == GUEST_MODE_5LEVEL ? w5 : e->mode == GUEST_MODE_4LEVEL ? w4 : w32;

	e->nwin = e->mode >= GUEST_MODE_4LEVEL ? 4 : 3;
	memcpy(e->win, w, sizeof(uint64_t) * (size_t)e->nwin);
}

/* Builds the engine's spaces (tables written by its vCPU); no state loaded. */
static int eng_init(struct eng *e, vmmu_vm *vm, vmmu_vcpu *vcpu, enum guest_mode mode, int id, int nas,
		    uint64_t seed, struct shared *sh)
{
	int r;

	memset(e, 0, sizeof(*e));
	e->vm = vm;
	e->vcpu = vcpu;
	e->mode = mode;
	e->id = id;
	e->nas = nas;
	e->seed = seed;
	/* splitmix64 of the seed: neighbouring seeds give unrelated streams. */
	e->rng = seed + 0x9e3779b97f4a7c15ULL;
	e->rng = (e->rng ^ (e->rng >> 30)) * 0xbf58476d1ce4e5b9ULL;
	e->rng = (e->rng ^ (e->rng >> 27)) * 0x94d049bb133111ebULL;
	e->rng = (e->rng ^ (e->rng >> 31)) | 1;
	e->shared = sh;
	e->trace = getenv("VMMU_SHADOW_TRACE") != NULL;
	e->probe_off = (uint64_t)id * PROBE;
	e->s0 = S0_BASE + (uint64_t)id * SLICE;
	e->s1 = S1_BASE + (uint64_t)id * SLICE;
	e->pools = POOL_BASE + (uint64_t)id * ENG_POOL_SPAN;
	e->sh0 = calloc(SLICE / 8, 8);
	e->sh1 = calloc(SLICE / 8, 8);
	ECHECK(e, e->sh0 && e->sh1, "out of memory");
	mode_windows(e);
	for (int j = 0; j < nas; j++) {
		struct aspace *a = &e->as[j];

		a->pool = e->pools + (uint64_t)j * POOL_BYTES;
		r = guest_pt_create(vm, mode, a->pool, POOL_BYTES, &a->pt);
		ECHECK(e, r == 0, "guest_pt_create = %d", r);
		guest_pt_set_vcpu(a->pt, vcpu);
	}
	/* The direct map of the engine's pools, identical and global in every
	 * space (a kernel's direct map); never changed afterwards. */
	for (int j = 0; j < nas; j++) {
		r = guest_map(e->as[j].pt, DMAP_GVA, e->pools, (uint64_t)nas * POOL_BYTES, PAGE, GUEST_W | GUEST_G);
		ECHECK(e, r == 0, "direct map = %d", r);
	}
	if (sh) {
		uint64_t span = mode == GUEST_MODE_32 ? GUEST_PAGE_4M : GUEST_PAGE_2M, pde;

		/* Link the shared table under SHV_GVA: a neighbour mapping makes
		 * the directory exist, then the PDE is pointed at the table. */
		r = guest_get_entry(sh->pt, SHV_GVA, 2, &pde, NULL);
		ECHECK(e, r == 0, "shared PDE: %d", r);
		for (int j = 0; j < nas; j++) {
			r = guest_map(e->as[j].pt, SHV_GVA + span, sd_page(0, 0), PAGE, PAGE, 0);
			ECHECK(e, r == 0, "shared neighbour = %d", r);
			r = guest_set_entry(e->as[j].pt, SHV_GVA, 2, pde);
			ECHECK(e, r == 0, "shared link = %d", r);
		}
	}
	e->cur = 0;
	e->ctx = 0;
	e->pge = true;
	e->wp = true;
	e->nxe = mode != GUEST_MODE_32;
	return eng_load_state(e, "initial state");
}

static void eng_fini(struct eng *e)
{
	for (int j = 0; j < e->nas; j++)
		if (e->as[j].pt)
			guest_pt_destroy(e->as[j].pt);
	free(e->sh0);
	free(e->sh1);
	e->sh0 = e->sh1 = NULL;
}

static int eng_step(struct eng *e)
{
	uint64_t p = rnd(e, 1000);
	int j = rnd(e, 10) < 6 ? e->cur : (int)rnd(e, (uint64_t)e->nas);

	if (e->ntlb > TLB_FLUSH_AT)
		return eng_full_flush(e);
	if (p < 300) {
		e->n_ops[0]++;
		return do_access(e, pick_gva(e), (int)(rnd(e, 100) < 45 ? ACC_R : rnd(e, 100) < 75 ? ACC_W : ACC_X));
	}
	if (p < 340) {
		e->n_ops[1]++;
		return op_dmap_read(e);
	}
	if (p < 480) {
		e->n_ops[2]++;
		if (e->as[j].nrec > MAX_REC * 3 / 4)
			return op_unmap(e, j);
		return op_map(e, j);
	}
	if (p < 550) {
		e->n_ops[3]++;
		return op_unmap(e, j);
	}
	if (p < 610) {
		e->n_ops[4]++;
		return op_protect(e, j);
	}
	if (p < 670) {
		e->n_ops[5]++;
		return op_remap(e, j);
	}
	if (p < 740) {
		e->n_ops[6]++;
		return op_dmap_write(e);
	}
	if (p < 830) {
		e->n_ops[7]++;
		return op_cr3(e);
	}
	if (p < 890) {
		e->n_ops[8]++;
		return op_invlpg(e);
	}
	if (p < 910) {
		e->n_ops[9]++;
		return eng_full_flush(e);
	}
	if (p < 945) {
		e->n_ops[10]++;
		return op_role(e);
	}
	if (p < 955) {
		e->n_ops[11]++;
		return op_pcide(e);
	}
	if (p < 960) {
		e->n_ops[12]++;
		return op_paging_off(e);
	}
	if (e->shared) {
		e->n_ops[13]++;
		if (e->id == 0 && rnd(e, 3) == 0)
			return op_shared_flip(e);
		return op_shared_read(e);
	}
	e->n_ops[0]++;
	return do_access(e, pick_gva(e), ACC_R);
}

/* Runs until max_steps or the deadline; audits after every step if asked. */
static int eng_run(struct eng *e, uint64_t max_steps, double deadline, bool audit_each)
{
	char why[512];
	const char *bug;

	for (e->step = 1; e->step <= max_steps && !e->failed; e->step++) {
		if (eng_step(e))
			return -1;
		if (audit_each && vmmu_audit(e->vm, why, sizeof(why)))
			return efail(e, "vmmu_audit after the step: %s", why);
		if (audit_each && vmmu_vm_bugged(e->vm, &bug))
			return efail(e, "VM bugged: %s", bug ? bug : "?");
		if (!(e->step % 512) && verify_all(e))
			return -1;
		if (!(e->step % 64) && now_s() > deadline)
			break;
	}
	if (e->failed)
		return -1;
	return verify_all(e);
}

static void eng_report(const struct eng *e, const char *var, double secs)
{
	struct vmmu_vcpu_stats vs;
	struct vmmu_vm_stats ms;

	memset(&vs, 0, sizeof(vs));
	memset(&ms, 0, sizeof(ms));
	vmmu_vcpu_get_stats(e->vcpu, &vs);
	vmmu_vm_get_stats(e->vm, &ms);
	fprintf(stderr,
		"    %-9s %-7s e%d: %6llu steps %.2fs | acc %llu ok %llu mmio %llu pf %llu gp %llu stale-cand %llu "
		"stale-used %llu | sw fast/slow %llu/%llu rebuilds %llu ptw-emul %llu unsync-syncs %llu | "
		"sp %llu created %llu zapped %llu flooded %llu\n",
		var, mode_names[e->mode], e->id, (unsigned long long)e->step, secs, (unsigned long long)e->n_acc,
		(unsigned long long)e->n_ok, (unsigned long long)e->n_mmio, (unsigned long long)e->n_pf,
		(unsigned long long)e->n_gp, (unsigned long long)e->n_stale_cand, (unsigned long long)e->n_stale_used,
		(unsigned long long)vs.root_fast_switches, (unsigned long long)vs.root_slow_switches,
		(unsigned long long)vs.mmu_ctx_rebuilds, (unsigned long long)vs.pt_write_emulations,
		(unsigned long long)vs.unsync_syncs, (unsigned long long)ms.shadow_pages,
		(unsigned long long)ms.shadow_pages_created, (unsigned long long)ms.shadow_pages_zapped,
		(unsigned long long)ms.shadow_flooded);
}

/* VMMU_TEST_VARIANT=name runs the model tests on that variant only. */
static bool variant_skipped(const struct mmu_variant *var)
{
	const char *only = getenv("VMMU_TEST_VARIANT");

	return only && strcmp(only, var->name);
}

/* Fixed seeds; override with VMMU_SHADOW_SEED to replay or explore. */
static uint64_t base_seed(void)
{
	const char *s = getenv("VMMU_SHADOW_SEED");

	return s ? strtoull(s, NULL, 0) : 0x5eed5eedULL;
}

/* ========================================================================== */
/* 1. model_random                                                             */
/* ========================================================================== */

static uint64_t model_host_page(enum guest_mode mode)
{
	return (mode == GUEST_MODE_PAE || mode == GUEST_MODE_5LEVEL) ? GUEST_PAGE_2M : 0;
}

static vmmu_vm *model_vm(const struct mmu_variant *var, enum guest_mode mode)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	/* 2M host pages in half the runs: huge SPTEs behind huge guest pages. */
	add_ram(vm, 0, 0, RAM0_SIZE, model_host_page(mode));
	add_ram(vm, 1, S1_BASE, RAM1_SIZE, model_host_page(mode));
	return vm;
}

TEST(model_random)
{
	double budget = UNDER_SANITIZER ? 0.3 : 1.0;
	uint64_t max_steps = UNDER_SANITIZER ? 3000 : 200000;
	unsigned int vi = 0;

	for_each_mmu_variant(var) {
		vi++;
		if (variant_skipped(var))
			continue;
		for (enum guest_mode mode = GUEST_MODE_32; mode <= GUEST_MODE_5LEVEL; mode++) {
			static struct eng e;	/* large: keep it off the stack */
			vmmu_vm *vm;
			vmmu_vcpu *vcpu;
			double t0 = now_s();
			int r;

			if (!mode_fits(var, mode))
				continue;
			vm = model_vm(var, mode);
			ASSERT_OK(vmmu_vcpu_create(vm, 0, &vcpu));
			r = eng_init(&e, vm, vcpu, mode, 0, 4, base_seed() + vi * 16 + mode, NULL);
			if (!r)
				r = eng_run(&e, max_steps, t0 + budget, true);
			eng_report(&e, var->name, now_s() - t0);
			if (r)
				test_fail(__FILE__, __LINE__, "%s", e.why);
			ASSERT_AUDIT(vm);
			assert_not_bugged(vm);
			eng_fini(&e);
			vmmu_vm_destroy(vm);
		}
	}
}

/* ========================================================================== */
/* 2. model_random_threads                                                     */
/* ========================================================================== */

#define NTHREADS 3

struct host_ctl {
	vmmu_vm *vm;
	uint64_t host_page;		/* of slot 0: a flags change keeps it */
	_Atomic bool stop;
	uint64_t rng;
	uint64_t n_zap_all, n_zap_range, n_log, n_harvest, n_flush, n_audit;
	bool failed;
	char why[512];
};

static void *eng_thread(void *arg)
{
	struct eng *e = arg;
	double budget = UNDER_SANITIZER ? 0.4 : 1.2;

	(void)eng_run(e, UNDER_SANITIZER ? 20000 : 1000000, now_s() + budget, false);
	return NULL;
}

static void *host_thread(void *arg)
{
	struct host_ctl *h = arg;
	struct vmmu_memslot ms[2] = {
		{ .slot = 0, .gpa = 0, .size = RAM0_SIZE, .host_page_size = h->host_page },
		{ .slot = 1, .gpa = S1_BASE, .size = RAM1_SIZE, .host_page_size = h->host_page },
	};
	uint64_t *bitmap = calloc(RAM0_SIZE / PAGE / 64, 8);
	bool logging[2] = { false, false };

	while (!atomic_load(&h->stop) && !h->failed) {
		uint64_t p = xorshift(&h->rng) % 100;
		struct timespec ts = { 0, (long)(200000 + xorshift(&h->rng) % 1500000) };

		if (p < 10) {
			vmmu_zap_all(h->vm);
			h->n_zap_all++;
		} else if (p < 40) {
			/* Pools, data slices or shared pages: tables and data alike. */
			static const uint64_t areas[] = { POOL_BASE, S0_BASE, S1_BASE, SD_BASE, SHARED_POOL };
			uint64_t a = areas[xorshift(&h->rng) % 5] / PAGE + xorshift(&h->rng) % 2048;
			int r = vmmu_zap_gfn_range(h->vm, a, a + 1 + xorshift(&h->rng) % 1024);

			if (r) {
				snprintf(h->why, sizeof(h->why), "vmmu_zap_gfn_range = %d", r);
				h->failed = true;
			}
			h->n_zap_range++;
		} else if (p < 52) {
			int k = (int)(xorshift(&h->rng) % 2);

			logging[k] = !logging[k];
			ms[k].flags = logging[k] ? VMMU_MEM_LOG_DIRTY_PAGES : 0;
			if (vmmu_set_memslot(h->vm, &ms[k])) {
				snprintf(h->why, sizeof(h->why), "dirty logging %d of slot %d failed", logging[k], k);
				h->failed = true;
			}
			h->n_log++;
		} else if (p < 70) {
			int k = (int)(xorshift(&h->rng) % 2);

			if (logging[k] && bitmap) {
				int r = vmmu_get_dirty_log(h->vm, (uint32_t)k, bitmap);

				if (r) {
					snprintf(h->why, sizeof(h->why), "vmmu_get_dirty_log = %d", r);
					h->failed = true;
				}
				h->n_harvest++;
			}
		} else if (p < 80) {
			vmmu_flush_remote_tlbs(h->vm);
			h->n_flush++;
		} else {
			char why[256];

			if (vmmu_audit(h->vm, why, sizeof(why))) {
				snprintf(h->why, sizeof(h->why), "vmmu_audit (host thread): %s", why);
				h->failed = true;
			}
			h->n_audit++;
		}
		nanosleep(&ts, NULL);
	}
	for (int k = 0; k < 2; k++) {
		if (logging[k]) {
			ms[k].flags = 0;
			(void)vmmu_set_memslot(h->vm, &ms[k]);
		}
	}
	free(bitmap);
	return NULL;
}

TEST(model_random_threads)
{
	int nthreads = UNDER_SANITIZER ? 2 : NTHREADS;
	unsigned int vi = 0;

	for_each_mmu_variant(var) {
		static struct eng engs[NTHREADS];
		enum guest_mode mode = (enum guest_mode)(vi % 4);
		struct shared sh;
		struct host_ctl h;
		vmmu_vcpu *vcpus[NTHREADS];
		pthread_t t[NTHREADS], ht;
		vmmu_vm *vm;
		double t0 = now_s();

		vi++;
		if (variant_skipped(var))
			continue;
		if (!mode_fits(var, mode))
			mode = GUEST_MODE_4LEVEL;
		vm = model_vm(var, mode);
		for (int i = 0; i < nthreads; i++)
			ASSERT_OK(vmmu_vcpu_create(vm, (unsigned int)i, &vcpus[i]));
		/* The shared table: SD pages version 0, written by vCPU 0. */
		memset(&sh, 0, sizeof(sh));
		ASSERT_OK(guest_pt_create(vm, mode, SHARED_POOL, 16 * PAGE, &sh.pt));
		guest_pt_set_vcpu(sh.pt, vcpus[0]);
		for (int i = 0; i < SD_PAGES; i++) {
			for (int v = 0; v < 2; v++)
				for (uint64_t o = 0; o < PAGE; o += 8)
					host_wr64(vm, sd_page(i, v) + o, pat(sd_page(i, v) + o));
			ASSERT_OK(guest_map(sh.pt, SHV_GVA + (uint64_t)i * PAGE, sd_page(i, 0), PAGE, PAGE, 0));
		}
		for (int i = 0; i < nthreads; i++) {
			int r = eng_init(&engs[i], vm, vcpus[i], mode, i, 2, base_seed() * 31 + vi * 8 + (unsigned)i, &sh);

			if (r)
				test_fail(__FILE__, __LINE__, "%s", engs[i].why);
		}
		memset(&h, 0, sizeof(h));
		h.vm = vm;
		h.host_page = model_host_page(mode);
		h.rng = base_seed() ^ 0x4057;
		ASSERT_EQ(pthread_create(&ht, NULL, host_thread, &h), 0);
		for (int i = 0; i < nthreads; i++)
			ASSERT_EQ(pthread_create(&t[i], NULL, eng_thread, &engs[i]), 0);
		for (int i = 0; i < nthreads; i++)
			pthread_join(t[i], NULL);
		atomic_store(&h.stop, true);
		pthread_join(ht, NULL);
		for (int i = 0; i < nthreads; i++)
			eng_report(&engs[i], var->name, now_s() - t0);
		fprintf(stderr, "    %-9s host: zap-all %llu zap-range %llu log-toggles %llu harvests %llu flushes %llu audits %llu\n",
			var->name, (unsigned long long)h.n_zap_all, (unsigned long long)h.n_zap_range,
			(unsigned long long)h.n_log, (unsigned long long)h.n_harvest, (unsigned long long)h.n_flush,
			(unsigned long long)h.n_audit);
		for (int i = 0; i < nthreads; i++)
			if (engs[i].failed)
				test_fail(__FILE__, __LINE__, "%s", engs[i].why);
		if (h.failed)
			test_fail(__FILE__, __LINE__, "%s", h.why);
		ASSERT_AUDIT(vm);
		assert_not_bugged(vm);
		for (int i = 0; i < nthreads; i++)
			eng_fini(&engs[i]);
		guest_pt_destroy(sh.pt);
		vmmu_vm_destroy(vm);
	}
}

/* ========================================================================== */
/* Deterministic tests: a small fixture                                        */
/* ========================================================================== */

struct fix {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
};

static void fix_create(struct fix *f, vmmu_vm *vm)
{
	f->vm = vm;
	add_ram(vm, 0, 0, RAM0_SIZE, 0);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &f->vcpu));
}

static void fix_variant(struct fix *f, const struct mmu_variant *var)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	fix_create(f, vm);
}

static void fix_destroy(struct fix *f)
{
	assert_not_bugged(f->vm);
	ASSERT_AUDIT(f->vm);
	vmmu_vm_destroy(f->vm);
}

static struct guest_pt *fix_pt(struct fix *f, enum guest_mode mode, uint64_t pool, uint64_t pool_size)
{
	struct guest_pt *pt;

	ASSERT_OK(guest_pt_create(f->vm, mode, pool, pool_size, &pt));
	guest_pt_set_vcpu(pt, f->vcpu);
	return pt;
}

/* acc: VMMU_ACCESS_*; returns the vmmu_vcpu_access result, fills *x. */
static int acc(struct fix *f, uint64_t gva, uint64_t *v, unsigned int type, struct vmmu_exit *x)
{
	memset(x, 0, sizeof(*x));
	return vmmu_vcpu_access(f->vcpu, gva, v, 8, type, x);
}

#define EXPECT_READ(f, gva, want)                                                                            \
	do {                                                                                                 \
		struct vmmu_exit x_;                                                                         \
		uint64_t v_ = 0;                                                                             \
		int r_ = acc((f), (gva), &v_, VMMU_ACCESS_READ, &x_);                                        \
		if (r_ || v_ != (uint64_t)(want))                                                            \
			test_fail(__FILE__, __LINE__, "read of gva %#llx: r=%d exit %s ec %#x value %#llx, want %#llx", \
				  (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-",  \
				  x_.u.guest_fault.error_code, (unsigned long long)v_, (unsigned long long)(want)); \
	} while (0)

#define EXPECT_WRITE(f, gva, val)                                                                     \
	do {                                                                                          \
		struct vmmu_exit x_;                                                                  \
		uint64_t v_ = (val);                                                                  \
		int r_ = acc((f), (gva), &v_, VMMU_ACCESS_WRITE, &x_);                                \
		if (r_)                                                                               \
			test_fail(__FILE__, __LINE__, "write of gva %#llx: r=%d exit %s ec %#x",       \
				  (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-", \
				  x_.u.guest_fault.error_code);                                       \
	} while (0)

#define EXPECT_PF(f, gva, type, ec)                                                                          \
	do {                                                                                                 \
		struct vmmu_exit x_;                                                                         \
		uint64_t v_ = 0;                                                                             \
		int r_ = acc((f), (gva), &v_, (type), &x_);                                                  \
		if (r_ != VMMU_EXIT || x_.reason != VMMU_EXIT_GUEST_FAULT || x_.u.guest_fault.vector != 14 ||  \
		    x_.u.guest_fault.error_code != (ec))                                                     \
			test_fail(__FILE__, __LINE__, "access %u of gva %#llx: r=%d exit %s ec %#x, want #PF %#x", \
				  (type), (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-", \
				  x_.u.guest_fault.error_code, (unsigned int)(ec));                     \
	} while (0)

#define EXPECT_MMIO(f, gva, type, want_gpa)                                                                        \
	do {                                                                                                  \
		struct vmmu_exit x_;                                                                          \
		uint64_t v_ = 0x77;                                                                           \
		int r_ = acc((f), (gva), &v_, (type), &x_);                                                   \
		if (r_ != VMMU_EXIT || x_.reason != VMMU_EXIT_MMIO || x_.u.mmio.gpa != (uint64_t)(want_gpa) ||     \
		    !!x_.u.mmio.is_write != ((type) == VMMU_ACCESS_WRITE))                                    \
			test_fail(__FILE__, __LINE__, "access %u of gva %#llx: r=%d exit %s gpa %#llx, want MMIO at %#llx", \
				  (type), (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-", \
				  (unsigned long long)x_.u.mmio.gpa, (unsigned long long)(want_gpa));        \
	} while (0)

static void vstats(struct fix *f, struct vmmu_vcpu_stats *s)
{
	memset(s, 0, sizeof(*s));
	vmmu_vcpu_get_stats(f->vcpu, s);
}

/* ========================================================================== */
/* 3. role_reuse                                                               */
/* ========================================================================== */

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

/* ========================================================================== */
/* 4. prev_roots                                                               */
/* ========================================================================== */

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

/* ========================================================================== */
/* 5. pt_write_tracking                                                        */
/* ========================================================================== */

struct tstat {
	struct vmmu_vcpu_stats v;
	struct vmmu_vm_stats m;
};

static void tstat(struct fix *f, struct tstat *t)
{
	memset(t, 0, sizeof(*t));
	vmmu_vcpu_get_stats(f->vcpu, &t->v);
	vmmu_vm_get_stats(f->vm, &t->m);
}

/* A guest store to a shadowed table was seen: emulated, or unsynced. */
static bool tracked(const struct tstat *a, const struct tstat *b, const struct tstat *c)
{
	return b->v.pt_write_emulations > a->v.pt_write_emulations || b->m.shadow_unsync_pages > 0 ||
	       c->v.unsync_syncs > a->v.unsync_syncs;
}

static void print_delta(const char *what, const struct tstat *a, const struct tstat *b)
{
	fprintf(stderr,
		"    %s: pt_write_emulations +%llu, shadow_pte_writes +%llu, unsync now %llu, unsync_syncs +%llu, "
		"flooded +%llu, shadow pages %llu (created +%llu, zapped +%llu)\n",
		what, (unsigned long long)(b->v.pt_write_emulations - a->v.pt_write_emulations),
		(unsigned long long)(b->m.shadow_pte_writes - a->m.shadow_pte_writes),
		(unsigned long long)b->m.shadow_unsync_pages, (unsigned long long)(b->v.unsync_syncs - a->v.unsync_syncs),
		(unsigned long long)(b->m.shadow_flooded - a->m.shadow_flooded), (unsigned long long)b->m.shadow_pages,
		(unsigned long long)(b->m.shadow_pages_created - a->m.shadow_pages_created),
		(unsigned long long)(b->m.shadow_pages_zapped - a->m.shadow_pages_zapped));
}

TEST(pt_write_tracking)
{
	struct fix f;
	struct guest_pt *pt, *pt2;
	struct vmmu_cpu_state s;
	struct tstat t0, t1, t2;
	const uint64_t X = 0x40000000ULL, ALIAS = 0x50000000ULL, BIG = 0x40400000ULL, FL = 0x60000000ULL;
	const uint64_t A = S0_BASE, B = S0_BASE + PAGE, C = S0_BASE + 2 * PAGE, H = S0_BASE + 2 * MB;
	uint64_t pte_gpa, pde, p1, pd2, used0, used1, fr;
	uint64_t flooded_before;

	fix_create(&f, shadow_vm(3, 0));
	pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
	pt2 = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE + 64 * PAGE, 64 * PAGE);
	host_wr64(f.vm, A, 0xa);
	host_wr64(f.vm, B, 0xb);
	host_wr64(f.vm, C, 0xc);
	host_wr64(f.vm, H + 0x3000, 0x4);
	ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
	ASSERT_OK(guest_map(pt, X + PAGE, A, PAGE, PAGE, GUEST_W));	/* keeps X's table alive later */
	guest_pt_state(pt, &s, 0);
	ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	EXPECT_READ(&f, X, 0xa);	/* X's table is shadowed now */

	/* (a) A PTE change by a guest-physical store (the library's writer). */
	tstat(&f, &t0);
	ASSERT_OK(guest_map(pt, X, B, PAGE, PAGE, GUEST_W));
	tstat(&f, &t1);
	vmmu_vcpu_invlpg(f.vcpu, X);
	EXPECT_READ(&f, X, 0xb);
	tstat(&f, &t2);
	print_delta("PTE store (phys)", &t0, &t2);
	ASSERT_TRUE(tracked(&t0, &t1, &t2));

	/* (b) The same through a gva alias of the table (a kernel's store). */
	ASSERT_OK(guest_get_entry(pt, X, 1, &pde, &pte_gpa));
	ASSERT_OK(guest_map(pt, ALIAS, pte_gpa & ~(PAGE - 1), PAGE, PAGE, GUEST_W));
	tstat(&f, &t0);
	{
		uint64_t nv = C | GUEST_PTE_P | GUEST_W;

		EXPECT_WRITE(&f, ALIAS + (pte_gpa & (PAGE - 1)), nv);
		ASSERT_EQ_U64(host_rd64(f.vm, pte_gpa), nv);
	}
	tstat(&f, &t1);
	vmmu_vcpu_invlpg(f.vcpu, X);
	EXPECT_READ(&f, X, 0xc);
	tstat(&f, &t2);
	print_delta("PTE store (gva alias)", &t0, &t2);
	ASSERT_TRUE(tracked(&t0, &t1, &t2));
	/* Reading the table through the alias sees what the guest wrote. */
	EXPECT_READ(&f, ALIAS + (pte_gpa & (PAGE - 1)), host_rd64(f.vm, pte_gpa));

	/* (c) A new 2M leaf in the shadowed directory: not present before, so
	 * it must be used at once, without INVLPG. */
	tstat(&f, &t0);
	ASSERT_OK(guest_map(pt, BIG, H, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
	tstat(&f, &t1);
	EXPECT_READ(&f, BIG + 0x3000, 0x4);
	tstat(&f, &t2);
	print_delta("PDE store", &t0, &t2);
	ASSERT_TRUE(tracked(&t0, &t1, &t2));
	/* A present 2M leaf changed to another frame: seen after INVLPG. */
	ASSERT_OK(guest_map(pt, BIG, S0_BASE, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
	vmmu_vcpu_invlpg(f.vcpu, BIG);
	EXPECT_READ(&f, BIG + PAGE, 0xb);
	ASSERT_AUDIT(f.vm);

	/* (d) Write flooding, first on a freed leaf table: X's 2M region is
	 * unmapped, its table goes back to the pool, and the guest reuses the
	 * page as data with many (emulated, physical) stores. */
	ASSERT_OK(guest_get_entry(pt, X, 2, &pde, NULL));
	p1 = pde & 0x000ffffffffff000ULL;
	guest_pt_pool_usage(pt, &used0, &fr);
	ASSERT_OK(guest_unmap(pt, X, 2 * PAGE));
	guest_pt_pool_usage(pt, &used1, &fr);
	ASSERT_EQ(used1, used0 - 1);	/* the table was freed */
	vmmu_vcpu_invlpg(f.vcpu, X);
	EXPECT_PF(&f, X, VMMU_ACCESS_READ, 0);
	tstat(&f, &t0);
	flooded_before = t0.m.shadow_flooded;
	{
		int first = -1;

		for (int i = 0; i < 400; i++) {
			uint64_t v = 0x1234560000000000ULL | ((uint64_t)i << 4) | (uint64_t)(i & 1);
			struct vmmu_exit x;
			struct vmmu_vm_stats m;

			memset(&x, 0, sizeof(x));
			ASSERT_OK(vmmu_vcpu_access(f.vcpu, p1 + (uint64_t)(i % 512) * 8, &v, 8,
						   VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x));
			ASSERT_EQ_U64(host_rd64(f.vm, p1 + (uint64_t)(i % 512) * 8), v);
			memset(&m, 0, sizeof(m));
			vmmu_vm_get_stats(f.vm, &m);
			if (first < 0 && m.shadow_flooded > flooded_before)
				first = i + 1;
		}
		tstat(&f, &t1);
		print_delta("flooding a freed leaf table (400 phys stores)", &t0, &t1);
		fprintf(stderr, "    flooded after store %d\n", first);
	}

	/* ...then on a directory of a space that is no longer used (a process
	 * that exited): AS2 is built and used, the guest switches away for
	 * good and stores data into AS2's page directory through a gva. */
	ASSERT_OK(guest_map(pt2, X, A, PAGE, PAGE, GUEST_W));
	ASSERT_OK(guest_map(pt2, BIG, H, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
	ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt2)));
	EXPECT_READ(&f, X, 0xa);
	EXPECT_READ(&f, BIG + 0x3000, 0x4);
	ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt)));
	ASSERT_OK(guest_get_entry(pt2, X, 3, &pde, NULL));
	pd2 = pde & 0x000ffffffffff000ULL;
	ASSERT_OK(guest_map(pt, FL, pd2, PAGE, PAGE, GUEST_W));
	tstat(&f, &t0);
	{
		int first = -1;

		for (int i = 0; i < 400; i++) {
			uint64_t v = 0x7654320000000000ULL | ((uint64_t)i << 4) | (uint64_t)(i & 1);
			uint64_t off = (uint64_t)((i * 7) % 512) * 8;
			struct vmmu_vm_stats m;

			EXPECT_WRITE(&f, FL + off, v);
			EXPECT_READ(&f, FL + off, v);
			ASSERT_EQ_U64(host_rd64(f.vm, pd2 + off), v);
			memset(&m, 0, sizeof(m));
			vmmu_vm_get_stats(f.vm, &m);
			if (first < 0 && m.shadow_flooded > t0.m.shadow_flooded)
				first = i + 1;
		}
		tstat(&f, &t1);
		print_delta("flooding an abandoned directory (400 gva stores)", &t0, &t1);
		fprintf(stderr, "    flooded after store %d\n", first);
	}
	ASSERT_GT(t1.m.shadow_flooded, flooded_before);
	/* The live space is intact. */
	EXPECT_READ(&f, BIG + PAGE, 0xb);
	ASSERT_AUDIT(f.vm);
	guest_pt_destroy(pt);
	guest_pt_destroy(pt2);
	fix_destroy(&f);
}

/*
 * A leaf table is shadowed under one role (CR0.WP=1); the role changes (the
 * new root is built in sync); a guest store through a gva alias then
 * unsyncs the old role's shadow page of the table (its gfn becomes
 * writable); the vCPU reaches the table under the new role, which creates
 * a second, in-sync shadow page of it.  That page must get the gfn
 * write-protected again, or the next store to the table is missed by it and
 * INVLPG (which syncs unsync pages only) cannot help: the guest keeps the
 * old translation.  Every MMU must show the new one.
 */
TEST(store_after_role_change)
{
	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *pt;
		struct vmmu_cpu_state s;
		const uint64_t X = 0x40000000ULL, Z = 0x50000000ULL;
		const uint64_t A = S0_BASE, B = S0_BASE + PAGE, C = S0_BASE + 2 * PAGE;
		uint64_t pte, pte_gpa;

		fix_variant(&f, var);
		pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		host_wr64(f.vm, A, 0xa);
		host_wr64(f.vm, B, 0xb);
		host_wr64(f.vm, C, 0xc);
		ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
		ASSERT_OK(guest_get_entry(pt, X, 1, &pte, &pte_gpa));
		ASSERT_OK(guest_map(pt, Z, pte_gpa & ~(PAGE - 1), PAGE, PAGE, GUEST_W));	/* alias of X's table */
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		EXPECT_READ(&f, X, 0xa);	/* X's table shadowed with WP=1 */
		s.cr0 &= ~VMMU_CR0_WP;
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		/* A store through the alias to another entry of the table. */
		EXPECT_WRITE(&f, Z + (pte_gpa & (PAGE - 1)) + 8, C | GUEST_PTE_P);
		ASSERT_AUDIT(f.vm);
		EXPECT_READ(&f, X + PAGE, 0xc);	/* not present before: seen at once */
		EXPECT_READ(&f, X, 0xa);
		ASSERT_AUDIT(f.vm);
		/* X now to B, by a store through the alias; INVLPG; B it must be. */
		EXPECT_WRITE(&f, Z + (pte_gpa & (PAGE - 1)), B | GUEST_PTE_P | GUEST_W);
		vmmu_vcpu_invlpg(f.vcpu, X);
		EXPECT_READ(&f, X, 0xb);
		ASSERT_AUDIT(f.vm);
		guest_pt_destroy(pt);
		fix_destroy(&f);
	}
}

/*
 * A guest that clears the accessed bit of a PTE (page aging: Linux's
 * ptep_test_and_clear_young) and invalidates must see it set again by the
 * next access (SDM 4.8: the processor sets A in every entry it uses, and a
 * translation is only cached with A set).  Shadow paging may not keep an
 * SPTE whose guest entry has A clear (KVM's prefetch_invalid_gpte).  Both
 * ways of storing: through a gva alias of the table (unsync) and a
 * guest-physical store (emulated); invalidation by INVLPG and by a CR3 load.
 * The same for D on a write.
 */
TEST(accessed_dirty_after_clear)
{
	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *pt;
		struct vmmu_cpu_state s;
		const uint64_t X = 0x40000000ULL, Z = 0x50000000ULL, A = S0_BASE;
		uint64_t pte, pte_gpa, zoff;

		fix_variant(&f, var);
		pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		host_wr64(f.vm, A, 0xa);
		ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
		ASSERT_OK(guest_get_entry(pt, X, 1, &pte, &pte_gpa));
		ASSERT_OK(guest_map(pt, Z, pte_gpa & ~(PAGE - 1), PAGE, PAGE, GUEST_W));
		zoff = pte_gpa & (PAGE - 1);
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		for (int round = 0; round < 8; round++) {
			bool via_alias = round & 1, by_cr3 = round & 2, wrote = round & 4;

			/* A fresh PTE, then a read-only SPTE (only read) or a
			 * writable one. */
			ASSERT_OK(guest_map(pt, X, A, PAGE, PAGE, GUEST_W));
			vmmu_vcpu_invlpg(f.vcpu, X);
			if (wrote)
				EXPECT_WRITE(&f, X, 0xa0 + (uint64_t)round);
			else
				host_wr64(f.vm, A, 0xa0 + (uint64_t)round);
			EXPECT_READ(&f, X, 0xa0 + (uint64_t)round);
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			ASSERT_TRUE((pte & GUEST_A) && (!wrote || (pte & GUEST_D)));
			/* Age the page: A and D cleared, nothing else. */
			if (via_alias)
				EXPECT_WRITE(&f, Z + zoff, pte & ~(GUEST_A | GUEST_D));
			else
				ASSERT_OK(guest_protect(pt, X, PAGE, GUEST_W));
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			ASSERT_FALSE(pte & (GUEST_A | GUEST_D));
			if (by_cr3)
				ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt)));
			else
				vmmu_vcpu_invlpg(f.vcpu, X);
			EXPECT_READ(&f, X, 0xa0 + (uint64_t)round);
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			if (!(pte & GUEST_A))
				test_fail(__FILE__, __LINE__, "round %d (%s store, %s): read through PTE %#llx left A clear",
					  round, via_alias ? "gva alias" : "physical", by_cr3 ? "CR3 load" : "INVLPG",
					  (unsigned long long)pte);
			EXPECT_WRITE(&f, X, 0xb0 + (uint64_t)round);
			ASSERT_OK(guest_get_entry(pt, X, 1, &pte, NULL));
			if (!(pte & GUEST_D))
				test_fail(__FILE__, __LINE__, "round %d (%s store, %s): write through PTE %#llx left D clear",
					  round, via_alias ? "gva alias" : "physical", by_cr3 ? "CR3 load" : "INVLPG",
					  (unsigned long long)pte);
			ASSERT_AUDIT(f.vm);
		}
		guest_pt_destroy(pt);
		fix_destroy(&f);
	}
}

/*
 * Two 2M guest pages map the same frame.  A write through the first sets
 * its D bit; a read then a write through the second must set the second's
 * D bit too (SDM 4.8).  Under shadow paging both use a direct shadow page
 * of the frame; one built for a clean guest entry must not grant writes
 * (KVM drops ACC_WRITE from the direct access of a clean huge gpte), or the
 * second write goes through without a fault and D stays clear.  A CR3
 * load between the read and the write empties the TLB, so that the write
 * walks the MMU's tables.
 */
TEST(dirty_bit_shared_huge_frame)
{
	for_each_mmu_variant(var) {
		struct fix f;
		struct guest_pt *pt;
		struct vmmu_cpu_state s;
		const uint64_t P = 0x40000000ULL, Q = 0x40400000ULL, F = S0_BASE;
		uint64_t pde;

		fix_variant(&f, var);
		pt = fix_pt(&f, GUEST_MODE_4LEVEL, POOL_BASE, 64 * PAGE);
		ASSERT_OK(guest_map(pt, P, F, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
		ASSERT_OK(guest_map(pt, Q, F, GUEST_PAGE_2M, GUEST_PAGE_2M, GUEST_W));
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
		EXPECT_WRITE(&f, P + 0x5000, 0x55);
		ASSERT_OK(guest_get_entry(pt, P, 2, &pde, NULL));
		ASSERT_TRUE(pde & GUEST_D);
		EXPECT_READ(&f, Q + 0x5000, 0x55);
		ASSERT_OK(guest_get_entry(pt, Q, 2, &pde, NULL));
		ASSERT_TRUE(pde & GUEST_A);
		ASSERT_FALSE(pde & GUEST_D);
		/* The TLB forgets Q (a TLB entry would know D was clear). */
		ASSERT_OK(vmmu_vcpu_write_cr3(f.vcpu, guest_pt_cr3(pt)));
		EXPECT_WRITE(&f, Q + 0x5000, 0x66);
		ASSERT_OK(guest_get_entry(pt, Q, 2, &pde, NULL));
		if (!(pde & GUEST_D))
			test_fail(__FILE__, __LINE__, "write through the clean 2M page left its PDE %#llx without D",
				  (unsigned long long)pde);
		EXPECT_READ(&f, P + 0x5000, 0x66);
		guest_pt_destroy(pt);
		fix_destroy(&f);
	}
}

/* ========================================================================== */
/* 6. mmio_generation                                                          */
/* ========================================================================== */

static void mmio_gen_one(const struct mmu_variant *var, int paging)
{
	struct fix f;
	struct guest_pt *pt = NULL;
	const uint64_t M = MMIO_BASE + 0x5000, G = paging ? 0x40005000ULL : M;
	const uint64_t HG = paging ? 0x40400000ULL : MMIO_BASE + 4 * MB, HM = MMIO_BASE + 4 * MB;
	struct vmmu_vm_stats st;

	fix_variant(&f, var);
	if (paging) {
		enum guest_mode mode = paging == 1 ? GUEST_MODE_4LEVEL : GUEST_MODE_32;
		uint64_t huge = mode == GUEST_MODE_32 ? GUEST_PAGE_4M : GUEST_PAGE_2M;
		struct vmmu_cpu_state s;

		pt = fix_pt(&f, mode, POOL_BASE, 64 * PAGE);
		ASSERT_OK(guest_map(pt, G, M, PAGE, PAGE, GUEST_W));
		ASSERT_OK(guest_map(pt, HG & ~(huge - 1), HM & ~(huge - 1), huge, huge, GUEST_W));
		guest_pt_state(pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(f.vcpu, &s));
	}
	for (int round = 0; round < 4; round++) {
		struct vmmu_memslot ms = { .slot = 1, .gpa = MMIO_BASE, .size = 8 * MB };
		uint64_t pattern = 0xfeed000000000000ULL | (uint64_t)round << 8;
		void *h;

		/* No slot: MMIO, twice (the second from a cached MMIO SPTE). */
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_WRITE, M);
		EXPECT_MMIO(&f, HG + 0x10, VMMU_ACCESS_READ, HM + 0x10);
		/* An unrelated slot comes and goes: still MMIO. */
		add_ram(f.vm, 2, MMIO_BASE + 512 * MB, 2 * MB, 0);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		del_slot(f.vm, 2);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		/* RAM appears under it: the next access reaches it. */
		ASSERT_OK(vmmu_set_memslot(f.vm, &ms));
		ASSERT_OK(vmmu_memslot_hva(f.vm, 1, &h));
		memcpy((uint8_t *)h + 0x5000, &pattern, 8);
		memcpy((uint8_t *)h + 4 * MB + 0x10, &(uint64_t){ pattern + 1 }, 8);
		EXPECT_READ(&f, G, pattern);
		EXPECT_READ(&f, HG + 0x10, pattern + 1);
		EXPECT_WRITE(&f, G, pattern + 2);
		ASSERT_EQ_U64(host_rd64(f.vm, M), pattern + 2);
		/* And goes: MMIO again. */
		del_slot(f.vm, 1);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_READ, M);
		EXPECT_MMIO(&f, G, VMMU_ACCESS_WRITE, M);
		EXPECT_MMIO(&f, HG + 0x10, VMMU_ACCESS_READ, HM + 0x10);
	}
	memset(&st, 0, sizeof(st));
	vmmu_vm_get_stats(f.vm, &st);
	ASSERT_GT(st.memslot_generation, 8);
	if (pt)
		guest_pt_destroy(pt);
	fix_destroy(&f);
}

TEST(mmio_generation)
{
	for_each_mmu_variant(var) {
		mmio_gen_one(var, 0);	/* paging off */
		mmio_gen_one(var, 1);	/* 4-level */
		mmio_gen_one(var, 2);	/* 32-bit */
	}
}

/* ========================================================================== */
/* 7. shadow_page_cap                                                          */
/* ========================================================================== */

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

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
