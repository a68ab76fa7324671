/* SPDX-License-Identifier: MIT */
/*
 * Model-based random test of nested paging (seed 003), in the manner of
 * shadow_model.c: one vCPU alternates between L1, a guest hypervisor with
 * three EPTs (NPT VMs: three nCR3s) for its guest, and L2, which runs
 * 4-level (5-level on 5-level variants) paging of its own; random steps
 *
 *   - L2 accesses (linear through L2's tables, and physical), checked
 *     against the model;
 *   - L2 edits of its own tables (map, unmap, protect, remap: L2's stores),
 *     L2's INVLPG, MOV to CR3, CR4.PGE, CPL and CR0.WP changes;
 *   - L1 edits of its EPT/NPT tables (map, unmap, protect, remap with 4K
 *     and 2M pages, frames in RAM, in a memslot that comes and goes, or
 *     MMIO; misconfigured entries), L1's own accesses to those frames;
 *   - INVEPT single/all, INVVPID types 0-3 (NPT: INVLPGA and VMRUN's TLB
 *     control), VM entries and exits with VPIDs/ASIDs 0, 1, 2 and any of
 *     the EPTPs/nCR3s;
 *   - memslot changes: the memslot of some frames deleted, created again
 *     (new, zeroed memory) and moved (contents kept); dirty logging of the
 *     main slot switched on and off and harvested;
 *
 * and vmmu_audit() after every step.  The model keeps L2's and L1's tables
 * as records and the translations the architecture allows to be in use:
 * a translation may be used until the invalidation that covers it --
 * INVEPT for EPT-derived (guest-physical and combined) ones, INVVPID / MOV
 * to CR3 / INVLPG / CR4.PGE (and a VM entry or exit without VPID) for
 * L2-linear ones; for NPT, ASID-tagged, dropped by TLB_CONTROL and INVLPGA
 * (SDM 3C 29.4, APM 15.16) -- and a not-present (or misconfigured) entry
 * is never cached.  So every access has a current outcome and possibly
 * stale ones (each stale L2-linear translation combined with each
 * translation of its L2 address L1's tables may still give); vmmu must
 * produce one of them: data (a read sees what the model's copy of that L1
 * frame holds; a write lands in exactly one allowed frame), L2's #PF with
 * its error code, the nested exit L1 must see, or an MMIO exit at the L1
 * address.  With nothing stale at all, a completed access must also have
 * left A (and D for writes) in the L2 and L1 leaves (EPT with A/D).
 *
 * VMMU_NESTED_MODEL_STEPS / _SEED set the steps per variant and the seed;
 * VMMU_NESTED_MODEL_TRACE=1 prints every operation.
 */
#include <inttypes.h>
#include <stdarg.h>

#include "model_check.h"
#include "nested_test.h"
#include "walk_ref.h"

#define PAGE 4096ULL
#define SZ_2M (2 * NT_MB)
#define GB (1ULL << 30)

/* L2 guest-physical layout: its page tables in [0, 2M), what the model maps
 * in [D_BASE, D_BASE + D_SIZE).  L1: L2's tables at L2PT_L1 (every EPT maps
 * them there, fixed and permissive), frames at F0 (slot 0), in slot 1 at
 * F1_A or F1_B or nowhere, and MMIO at MMIO_F; the EPTs' pools at EPT_POOL. */
#define L2PT_POOL 0x10000ULL
#define L2PT_SIZE (SZ_2M - L2PT_POOL)
#define L2PT_L1 (64 * NT_MB)
#define D_BASE (16 * NT_MB)
#define D_SIZE (4 * NT_MB)
#define F0 (66 * NT_MB)
#define F_SIZE (4 * NT_MB)
#define F1_A (128 * NT_MB)
#define F1_B (136 * NT_MB)
#define F1_SLOT 1
#define MMIO_F (3 * GB)
#define EPT_POOL(k) (16 * NT_MB + (uint64_t)(k) * SZ_2M)
#define NR_EPT 3
#define NR_VPID 3	/* 0 (none), 1, 2 */
/* L2's linear window: 4M of 4K and 2M pages. */
#define WIN 0x00007fffc0000000ULL
#define WIN_SIZE (4 * NT_MB)

#define MAX_L2REC 256
#define MAX_L1REC 640
#define MAX_LT 4096
#define MAX_PT 4096
#define MAX_CAND 512

#if UNDER_SANITIZER
#define DEFAULT_STEPS 3000
#else
#define DEFAULT_STEPS 60000
#endif

/* L2 leaf rights (L2's own entries, SDM 3A 4.5 bits). */
#define L2R (GUEST_W | GUEST_U | GUEST_NX | GUEST_G)

/* An L2-linear translation: L2's leaf for [gva, gva + size). */
struct lx {
	uint64_t gva, size, l2, flags;
};

/* A translation of L1's tables: L2 gpas [l2, l2 + size) -> L1 gpa l1. */
struct px {
	uint64_t l2, size, l1;
	uint64_t flags;		/* what guest_map was given (GUEST_EPT_* / GUEST_W|U|NX) */
	bool misconfig;		/* EPT: W without R, X-only where not offered, a bad memory type */
};

/* May be cached: tagged with VPID (NPT: ASID) and EPT index (NPT: 0). */
struct lt_ent {
	struct lx x;
	uint8_t vpid, root;
};

struct pt_ent {
	struct px y;
	uint8_t tag;		/* EPT index (EPT), ASID (NPT) */
};

struct ept {
	struct guest_pt *pt;
	bool ad;
	struct px rec[MAX_L1REC];
	int nrec;
};

enum { ACC_R, ACC_W, ACC_X };
enum { O_OK, O_MMIO, O_PF, O_NESTED };

struct outcome {
	int kind;
	uint64_t l1;		/* O_OK, O_MMIO */
	uint32_t ec;		/* O_PF */
	uint32_t nkind;		/* O_NESTED */
	uint64_t ngpa, qual;
};

struct cand {
	const struct lx *x;	/* NULL: not present (linear), or physical access */
	const struct px *y;	/* NULL: not present in L1's tables */
	struct outcome o;
};

struct model {
	struct nt t;
	bool npt, five, xo;
	unsigned int m;		/* MAXPHYADDR */
	struct guest_pt *l2pt;
	struct lx rec[MAX_L2REC];
	int nrec;
	struct ept ept[NR_EPT];
	/* where we are */
	bool in_l2;
	int root;		/* EPT / nCR3 index of the current (or last) entry */
	unsigned int vpid;	/* VPID / ASID of the current (or last) entry */
	unsigned int cpl;
	bool wp, pge;
	struct vmmu_cpu_state l2s;
	bool flush_all_next;	/* NPT: tables freed, the next VMRUN flushes everything */
	/* the model TLBs */
	struct lt_ent lt[MAX_LT];
	int nlt;
	struct pt_ent ptc[MAX_PT];
	int npt_c;
	bool ran[NR_VPID][NR_EPT];	/* L2 ran under the tag since it was last flushed */
	bool ept_ran[NR_EPT];		/* EPT: L2 ran under the EPT since its last INVEPT */
	bool npt_ran[NR_VPID][NR_EPT];	/* NPT: under the ASID with the nCR3 since a flush */
	/* memory */
	uint64_t *sh0, *sh1;		/* model copies of F0 and of slot 1 */
	uint64_t f1_base;		/* 0: slot 1 absent */
	bool logging;
	/* the run */
	uint64_t rng, seed, step, seq;
	uint64_t n_ops[32], n_acc, n_ok, n_mmio, n_pf, n_nested, n_stale_cand, n_stale_used, n_ad_checked;
	struct model_log ml;	/* the last operations, the first failure */
};

static uint64_t rnd(struct model *e, uint64_t n)
{
	return xorshift(&e->rng) % n;
}

static void __attribute__((format(printf, 2, 3))) elog(struct model *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	model_log_op(&e->ml, e->t.var->name, e->step, fmt, ap);
	va_end(ap);
}

static int __attribute__((format(printf, 2, 3))) efail(struct model *e, const char *fmt, ...)
{
	char head[96];
	va_list ap;
	int r;

	snprintf(head, sizeof(head), "[%s] seed %#llx, step %llu", e->t.var->name, (unsigned long long)e->seed,
		 (unsigned long long)e->step);
	va_start(ap, fmt);
	r = model_log_fail(&e->ml, head, fmt, ap);
	va_end(ap);
	return r;
}

/* ---- memory --------------------------------------------------------------------- */

/* The model's copy of L1 quadword l1, or NULL where no memslot is (MMIO). */
static uint64_t *shadow_of(const struct model *e, uint64_t l1)
{
	if (l1 - F0 < F_SIZE)
		return &e->sh0[(l1 - F0) / 8];
	if (e->f1_base && l1 - e->f1_base < F_SIZE)
		return &e->sh1[(l1 - e->f1_base) / 8];
	return NULL;
}

static bool host_rd(struct model *e, uint64_t l1, uint64_t *v)
{
	void *h;

	if (vmmu_gpa_to_hva(e->t.vm, l1, &h))
		return false;
	*v = __atomic_load_n((uint64_t *)h, __ATOMIC_ACQUIRE);
	return true;
}

/* ---- the model TLBs ------------------------------------------------------------------ */

static bool lx_eq(const struct lx *a, const struct lx *b)
{
	return a->gva == b->gva && a->size == b->size && a->l2 == b->l2 && a->flags == b->flags;
}

static bool px_eq(const struct px *a, const struct px *b)
{
	return a->l2 == b->l2 && a->size == b->size && a->l1 == b->l1 && a->flags == b->flags &&
	       a->misconfig == b->misconfig;
}

static void lt_add(struct model *e, const struct lx *x, unsigned int vpid, unsigned int root)
{
	for (int i = 0; i < e->nlt; i++)
		if (e->lt[i].vpid == vpid && e->lt[i].root == root && lx_eq(&e->lt[i].x, x))
			return;
	/* Never lose one: that would make the model stricter than the
	 * architecture (the step loop flushes long before). */
	if (e->nlt < MAX_LT)
		e->lt[e->nlt++] = (struct lt_ent){ *x, (uint8_t)vpid, (uint8_t)root };
}

static void pt_add(struct model *e, const struct px *y, unsigned int tag)
{
	if (y->misconfig)
		return;	/* nothing is cached from a misconfigured entry */
	for (int i = 0; i < e->npt_c; i++)
		if (e->ptc[i].tag == tag && px_eq(&e->ptc[i].y, y))
			return;
	if (e->npt_c < MAX_PT)
		e->ptc[e->npt_c++] = (struct pt_ent){ *y, (uint8_t)tag };
}

/* An L2 translation stops being current: every tag L2 ran under since
 * its last flush may still hold it. */
static void lt_note(struct model *e, const struct lx *x)
{
	for (unsigned int v = 0; v < NR_VPID; v++)
		for (unsigned int r = 0; r < NR_EPT; r++)
			if (e->ran[v][r])
				lt_add(e, x, v, e->npt ? 0 : r);
}

/* A translation of L1's table k stops being current. */
static void pt_note(struct model *e, int k, const struct px *y)
{
	if (!e->npt) {
		if (e->ept_ran[k])
			pt_add(e, y, (unsigned int)k);
		return;
	}
	for (unsigned int a = 0; a < NR_VPID; a++)
		if (e->npt_ran[a][k])
			pt_add(e, y, a);
}

/* Keep the entries for which drop() says false. */
static void lt_filter(struct model *e, bool (*drop)(const struct lt_ent *, uint64_t, uint64_t), uint64_t a,
		      uint64_t b)
{
	int n = 0;

	for (int i = 0; i < e->nlt; i++)
		if (!drop(&e->lt[i], a, b))
			e->lt[n++] = e->lt[i];
	e->nlt = n;
}

static void pt_filter(struct model *e, bool (*drop)(const struct pt_ent *, uint64_t), uint64_t a)
{
	int n = 0;

	for (int i = 0; i < e->npt_c; i++)
		if (!drop(&e->ptc[i], a))
			e->ptc[n++] = e->ptc[i];
	e->npt_c = n;
}

static bool covers(const struct lx *x, uint64_t gva)
{
	return gva - x->gva < x->size;
}

static bool lt_drop_all(const struct lt_ent *t, uint64_t a, uint64_t b)
{
	(void)t, (void)a, (void)b;
	return true;
}

static bool lt_drop_vpid(const struct lt_ent *t, uint64_t vpid, uint64_t b)
{
	(void)b;
	return t->vpid == vpid;
}

static bool lt_drop_vpid_nonglobal(const struct lt_ent *t, uint64_t vpid, uint64_t b)
{
	(void)b;
	return t->vpid == vpid && !(t->x.flags & GUEST_G);
}

static bool lt_drop_vpid_gva(const struct lt_ent *t, uint64_t vpid, uint64_t gva)
{
	return t->vpid == vpid && covers(&t->x, gva);
}

static bool lt_drop_root(const struct lt_ent *t, uint64_t root, uint64_t b)
{
	(void)b;
	return t->root == root;
}

static bool lt_drop_nonzero_vpid(const struct lt_ent *t, uint64_t a, uint64_t b)
{
	(void)a, (void)b;
	return t->vpid != 0;
}

static bool pt_drop_all(const struct pt_ent *p, uint64_t a)
{
	(void)p, (void)a;
	return true;
}

static bool pt_drop_tag(const struct pt_ent *p, uint64_t tag)
{
	return p->tag == tag;
}

/* VPID/ASID v gets nothing of what it had cached: no tag of it has run since. */
static void tags_flushed_vpid(struct model *e, unsigned int v)
{
	for (int r = 0; r < NR_EPT; r++) {
		e->ran[v][r] = false;
		e->npt_ran[v][r] = false;
	}
}

/* ---- the reference: what an access may do --------------------------------------------- */

static struct ref_cpu l2_cpu(const struct model *e)
{
	struct ref_cpu rc;

	memset(&rc, 0, sizeof(rc));
	rc.paging = e->five ? REF_PAGING_5LEVEL : REF_PAGING_4LEVEL;
	rc.maxphyaddr = e->m;
	rc.wp = e->wp;
	rc.nxe = true;
	rc.cpl = e->cpl;
	return rc;
}

static struct ref_access ref_acc(int type)
{
	return (struct ref_access){ .write = type == ACC_W, .fetch = type == ACC_X, .implicit = false };
}

/* L2's part (SDM 3A 4.6, 4.7, through walk_ref): #PF, or its L2 gpa. */
static struct outcome eval_linear(const struct model *e, const struct lx *x, uint64_t gva, int type)
{
	struct ref_cpu rc = l2_cpu(e);
	struct ref_access acc = ref_acc(type);
	struct ref_rights r;
	struct outcome o = { .kind = O_PF };

	if (!x) {
		o.ec = ref_pf_error_code(&rc, &acc, false, false, false);
		return o;
	}
	r.user_addr = x->flags & GUEST_U;
	r.writable = x->flags & GUEST_W;
	r.xd = x->flags & GUEST_NX;
	r.pkey = 0;
	o.ec = ref_permission_fault(&rc, &r, &acc);
	if (o.ec)
		return o;
	o.kind = O_OK;
	o.l1 = x->l2 + (gva - x->gva);	/* the L2 gpa, for the next stage */
	return o;
}

/*
 * L1's part for L2 gpa g: EPT (SDM 3C 29.3.3; the upper entries are RWX, so
 * the leaf's rights are the walk's) or NPT (APM 15.25.5: user accesses, L1's
 * NXE on; the upper entries are P|W|U).
 */
static struct outcome eval_phys(const struct model *e, const struct px *y, uint64_t g, int type, bool linear)
{
	struct outcome o = { .kind = O_NESTED, .ngpa = g };

	if (e->npt) {
		struct ref_cpu nc;
		struct ref_access acc = { .write = type == ACC_W, .fetch = type == ACC_X, .implicit = false };
		struct ref_rights r = { 0 };

		memset(&nc, 0, sizeof(nc));
		nc.paging = e->five ? REF_PAGING_5LEVEL : REF_PAGING_4LEVEL;
		nc.maxphyaddr = e->m;
		nc.nxe = true;
		nc.cpl = 3;
		nc.wp = true;
		o.nkind = VMMU_NESTED_NPF;
		if (!y) {
			o.qual = ref_pf_error_code(&nc, &acc, false, false, false) | (1ULL << 32);
			return o;
		}
		r.user_addr = y->flags & GUEST_U;
		r.writable = y->flags & GUEST_W;
		r.xd = y->flags & GUEST_NX;
		if (!ref_allowed(&nc, &r, &acc)) {
			o.qual = ref_pf_error_code(&nc, &acc, true, false, false) | (1ULL << 32);
			return o;
		}
	} else {
		uint64_t kind = type == ACC_W ? 2 : type == ACC_X ? 4 : 1, gla = linear ? 0x180 : 0;
		bool rr, ww, xx;

		o.nkind = VMMU_NESTED_EPT_VIOLATION;
		if (!y) {
			o.qual = kind | gla;
			return o;
		}
		if (y->misconfig) {
			o.nkind = VMMU_NESTED_EPT_MISCONFIG;
			o.qual = 0;
			return o;
		}
		rr = y->flags & GUEST_EPT_R;
		ww = y->flags & GUEST_EPT_W;
		xx = y->flags & GUEST_EPT_X;
		if ((type == ACC_R && !rr) || (type == ACC_W && !ww) || (type == ACC_X && !xx)) {
			o.qual = kind | (rr ? 8 : 0) | (ww ? 16 : 0) | (xx ? 32 : 0) | gla;
			return o;
		}
	}
	o.l1 = y->l1 + (g - y->l2);
	o.kind = shadow_of(e, o.l1) ? O_OK : O_MMIO;
	o.ngpa = 0;
	return o;
}

static int l1_find(const struct ept *p, uint64_t g)
{
	for (int i = 0; i < p->nrec; i++)
		if (g - p->rec[i].l2 < p->rec[i].size)
			return i;
	return -1;
}

static int l2_find(const struct model *e, uint64_t gva)
{
	for (int i = 0; i < e->nrec; i++)
		if (covers(&e->rec[i], gva))
			return i;
	return -1;
}

static bool out_eq(const struct outcome *a, const struct outcome *b)
{
	return a->kind == b->kind && a->l1 == b->l1 && a->ec == b->ec && a->nkind == b->nkind && a->ngpa == b->ngpa &&
	       a->qual == b->qual;
}

/* The L1 stage: the current translation of g, then every cached one. */
static int phys_cands(struct model *e, uint64_t g, int type, bool linear, const struct lx *x, struct cand *c, int n,
		      bool *cached)
{
	const struct ept *p = &e->ept[e->root];
	int i = l1_find(p, g);
	unsigned int tag = e->npt ? e->vpid : (unsigned int)e->root;

	if (n < MAX_CAND) {
		c[n].x = x;
		c[n].y = i >= 0 ? &p->rec[i] : NULL;
		c[n].o = eval_phys(e, c[n].y, g, type, linear);
		n++;
	}
	for (int k = 0; k < e->npt_c && n < MAX_CAND; k++) {
		const struct pt_ent *t = &e->ptc[k];

		if (t->tag != tag || g - t->y.l2 >= t->y.size)
			continue;
		*cached = true;
		c[n].x = x;
		c[n].y = &t->y;
		c[n].o = eval_phys(e, &t->y, g, type, linear);
		n++;
	}
	return n;
}

/* Every outcome the architecture allows for an access to addr. */
static int candidates(struct model *e, uint64_t addr, bool phys, int type, struct cand *c, bool *cached)
{
	int i, n = 0;

	*cached = false;
	if (phys)
		return phys_cands(e, addr, type, false, NULL, c, 0, cached);
	i = l2_find(e, addr);
	{
		const struct lx *cur = i >= 0 ? &e->rec[i] : NULL;
		struct outcome lo = eval_linear(e, cur, addr, type);

		if (lo.kind == O_OK) {
			n = phys_cands(e, lo.l1, type, true, cur, c, n, cached);
		} else {
			c[n].x = cur;
			c[n].y = NULL;
			c[n++].o = lo;
		}
	}
	for (int k = 0; k < e->nlt && n < MAX_CAND; k++) {
		const struct lt_ent *t = &e->lt[k];
		struct outcome lo;

		if (t->vpid != e->vpid || (!e->npt && t->root != e->root) || !covers(&t->x, addr))
			continue;
		*cached = true;
		lo = eval_linear(e, &t->x, addr, type);
		if (lo.kind == O_OK) {
			n = phys_cands(e, lo.l1, type, true, &t->x, c, n, cached);
		} else {
			c[n].x = &t->x;
			c[n].y = NULL;
			c[n++].o = lo;
		}
	}
	return n;
}

static void ostr(const struct outcome *o, char *b, size_t len)
{
	switch (o->kind) {
	case O_OK: snprintf(b, len, "ok@%#llx", (unsigned long long)o->l1); break;
	case O_MMIO: snprintf(b, len, "mmio@%#llx", (unsigned long long)o->l1); break;
	case O_PF: snprintf(b, len, "#PF(%#x)", o->ec); break;
	default:
		snprintf(b, len, "nested(%u, %#llx, %#llx)", o->nkind, (unsigned long long)o->ngpa,
			 (unsigned long long)o->qual);
		break;
	}
}

static void cands_str(const struct cand *c, int n, char *buf, size_t len)
{
	size_t off = 0;
	char b[96];

	buf[0] = 0;
	for (int i = 0; i < n && off < len; i++) {
		ostr(&c[i].o, b, sizeof(b));
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? (i == 1 ? " | stale: " : ", ") : "", b);
	}
}

static const char *const acc_names[] = { "read", "write", "fetch" };

/* The L1 leaf entry translating g in table k (for A/D checks). */
static bool l1_leaf(struct model *e, int k, uint64_t g, uint64_t *leaf)
{
	return guest_lookup(e->ept[k].pt, g, NULL, NULL, leaf, NULL) == 0;
}

/* One L2 access, checked against the model. */
static int do_access(struct model *e, uint64_t addr, bool phys, int type)
{
	static struct cand c[MAX_CAND];
	unsigned int flags = (type == ACC_W ? VMMU_ACCESS_WRITE : type == ACC_X ? VMMU_ACCESS_FETCH : VMMU_ACCESS_READ) |
			     (phys ? VMMU_ACCESS_PHYS : 0);
	uint64_t val = type == ACC_W ? (++e->seq << 8) | 0xa5 : 0x0bad0bad0bad0badULL, buf = val;
	struct vmmu_exit x;
	char cs[1024];
	int n, r, match = -1;
	bool cached;

	n = candidates(e, addr, phys, type, c, &cached);
	cands_str(c, n, cs, sizeof(cs));
	elog(e, "L2 %s%s %#llx cpl%u: %s", phys ? "phys " : "", acc_names[type], (unsigned long long)addr, e->cpl, cs);
	memset(&x, 0, sizeof(x));
	e->n_acc++;
	if (n > 1)
		e->n_stale_cand++;
	r = vmmu_vcpu_access(e->t.vcpu, addr, &buf, 8, flags, &x);
	if (r == 0) {
		static struct model_place pl[MAX_CAND];
		int idx[MAX_CAND], np = 0, k, changed;

		e->n_ok++;
		for (int i = 0; i < n; i++) {
			uint64_t h;

			if (c[i].o.kind != O_OK)
				continue;
			ECHECK(e, host_rd(e, c[i].o.l1, &h), "no host memory at L1 %#llx", (unsigned long long)c[i].o.l1);
			pl[np] = (struct model_place){ c[i].o.l1, shadow_of(e, c[i].o.l1), h };
			idx[np++] = i;
		}
		if (type == ACC_W) {
			k = model_write_landed(pl, np, val, &changed);
			ECHECK(e, changed < 0, "write of %#llx to %#llx: L1 %#llx changed to %#llx (want %#llx); %s",
			       (unsigned long long)val, (unsigned long long)addr, (unsigned long long)pl[changed].addr,
			       (unsigned long long)pl[changed].mem, (unsigned long long)*pl[changed].copy, cs);
			ECHECK(e, k >= 0, "write of %#llx to %#llx completed; it landed in none or several allowed places: %s",
			       (unsigned long long)val, (unsigned long long)addr, cs);
		} else {
			k = model_read_match(pl, np, buf);
			ECHECK(e, k >= 0, "%s of %#llx completed with %#llx; allowed: %s", acc_names[type],
			       (unsigned long long)addr, (unsigned long long)buf, cs);
		}
		match = idx[k];
		/* Nothing stale: the walks that made this translation set A (and
		 * D) in L2's leaf and in L1's (EPT with A/D; NPT always). */
		if (!cached) {
			uint64_t leaf = 0, g = phys ? addr : c[match].x->l2 + (addr - c[match].x->gva);

			e->n_ad_checked++;
			if (!phys) {
				ECHECK(e, guest_lookup(e->l2pt, addr, NULL, NULL, &leaf, NULL) == 0, "L2 lookup failed");
				ECHECK(e, (leaf & GUEST_A) && (type != ACC_W || (leaf & GUEST_D)),
				       "%s of gva %#llx through L2 leaf %#llx, nothing stale: A%s not set", acc_names[type],
				       (unsigned long long)addr, (unsigned long long)leaf, type == ACC_W ? "/D" : "");
			}
			if (e->npt || e->ept[e->root].ad) {
				uint64_t a = e->npt ? GUEST_A : GUEST_EPT_A, d = e->npt ? GUEST_D : GUEST_EPT_D;

				ECHECK(e, l1_leaf(e, e->root, g, &leaf), "L1 lookup of %#llx failed", (unsigned long long)g);
				ECHECK(e, (leaf & a) && (type != ACC_W || (leaf & d)),
				       "%s of L2 gpa %#llx through L1 leaf %#llx, nothing stale: A%s not set", acc_names[type],
				       (unsigned long long)g, (unsigned long long)leaf, type == ACC_W ? "/D" : "");
			}
		}
	} else if (r == VMMU_EXIT) {
		for (int i = 0; i < n; i++) {
			uint64_t h;

			/* Nothing moves when an access exits. */
			if (c[i].o.kind == O_OK && host_rd(e, c[i].o.l1, &h))
				ECHECK(e, h == *shadow_of(e, c[i].o.l1), "%s of %#llx exited (%s) but L1 %#llx changed; %s",
				       acc_names[type], (unsigned long long)addr, exit_name(x.reason),
				       (unsigned long long)c[i].o.l1, cs);
		}
		switch (x.reason) {
		case VMMU_EXIT_MMIO:
			e->n_mmio++;
			for (int i = 0; i < n && match < 0; i++)
				if (c[i].o.kind == O_MMIO && c[i].o.l1 == x.u.mmio.gpa)
					match = i;
			ECHECK(e, match >= 0 && x.u.mmio.len == 8 && x.u.mmio.offset == 0 &&
					  !!x.u.mmio.is_write == (type == ACC_W),
			       "%s of %#llx: MMIO exit at L1 %#llx len %u write %u; allowed: %s", acc_names[type],
			       (unsigned long long)addr, (unsigned long long)x.u.mmio.gpa, x.u.mmio.len, x.u.mmio.is_write, cs);
			break;
		case VMMU_EXIT_GUEST_FAULT:
			e->n_pf++;
			for (int i = 0; i < n && match < 0; i++)
				if (c[i].o.kind == O_PF && c[i].o.ec == x.u.guest_fault.error_code)
					match = i;
			ECHECK(e, match >= 0 && x.u.guest_fault.vector == 14 && x.u.guest_fault.addr == addr,
			       "%s of %#llx: L2 fault vector %u error code %#x addr %#llx; allowed: %s", acc_names[type],
			       (unsigned long long)addr, x.u.guest_fault.vector, x.u.guest_fault.error_code,
			       (unsigned long long)x.u.guest_fault.addr, cs);
			break;
		case VMMU_EXIT_NESTED: {
			struct outcome got = { .kind = O_NESTED, .nkind = x.u.nested.kind, .ngpa = x.u.nested.gpa,
					       .qual = x.u.nested.qualification };

			e->n_nested++;
			for (int i = 0; i < n && match < 0; i++)
				if (out_eq(&c[i].o, &got))
					match = i;
			ECHECK(e, match >= 0 && x.u.nested.final && !!x.u.nested.gla_valid == !phys &&
					  (phys || x.u.nested.gla == addr),
			       "%s of %#llx: nested exit kind %u gpa %#llx qual %#llx final %u gla_valid %u gla %#llx; "
			       "allowed: %s", acc_names[type], (unsigned long long)addr, x.u.nested.kind,
			       (unsigned long long)x.u.nested.gpa, (unsigned long long)x.u.nested.qualification,
			       x.u.nested.final, x.u.nested.gla_valid, (unsigned long long)x.u.nested.gla, cs);
			break;
		}
		default:
			return efail(e, "%s of %#llx: unexpected exit %s; allowed: %s", acc_names[type],
				     (unsigned long long)addr, exit_name(x.reason), cs);
		}
	} else {
		return efail(e, "%s of %#llx: vmmu_vcpu_access = %d (%s)", acc_names[type], (unsigned long long)addr, r,
			     vmmu_strerror(r));
	}
	if (match > 0 && !out_eq(&c[match].o, &c[0].o))
		e->n_stale_used++;
	return 0;
}

/* ---- modes: L1 and L2 ------------------------------------------------------------------ */

static int enter_l2(struct model *e, int root, unsigned int vpid, uint8_t tlb_control)
{
	struct vmmu_nested_state ns;
	int r;

	if (e->npt && e->flush_all_next)
		tlb_control = VMMU_TLB_CONTROL_FLUSH_ALL;
	memset(&ns, 0, sizeof(ns));
	ns.vpid = (uint16_t)vpid;
	ns.l2 = e->l2s;
	if (e->npt) {
		ns.ncr3 = guest_pt_cr3(e->ept[root].pt);
		ns.tlb_control = tlb_control;
	} else {
		ns.eptp = guest_pt_eptp(e->ept[root].pt, e->ept[root].ad);
		ns.flags = e->xo ? VMMU_NESTED_EXEC_ONLY : 0;
	}
	elog(e, "VM entry: %s %d, %s %u%s", e->npt ? "nCR3" : "EPTP", root, e->npt ? "ASID" : "VPID", vpid,
	     tlb_control ? (tlb_control == 1 ? ", flush all" : tlb_control == 3 ? ", flush guest" : ", flush non-global")
			 : "");
	r = vmmu_vcpu_enter_guest_mode(e->t.vcpu, &ns);
	ECHECK(e, r == 0, "vmmu_vcpu_enter_guest_mode = %d (%s)", r, vmmu_strerror(r));
	e->in_l2 = true;
	e->root = root;
	e->vpid = vpid;
	/* No VPID: linear and combined mappings of VPID 0 go at every entry
	 * (SDM 28.3.3.3); guest-physical ones stay.  NPT ASID 0 is vmmu's
	 * "none" and flushes the guest's TLB. */
	if (vpid == 0) {
		lt_filter(e, lt_drop_vpid, 0, 0);
		if (e->npt)
			pt_filter(e, pt_drop_tag, 0);
		tags_flushed_vpid(e, 0);
	}
	if (e->npt) {
		switch (tlb_control) {
		case VMMU_TLB_CONTROL_FLUSH_ALL:
			lt_filter(e, lt_drop_all, 0, 0);
			pt_filter(e, pt_drop_all, 0);
			for (unsigned int v = 0; v < NR_VPID; v++)
				tags_flushed_vpid(e, v);
			e->flush_all_next = false;
			break;
		case VMMU_TLB_CONTROL_FLUSH_GUEST:
			lt_filter(e, lt_drop_vpid, vpid, 0);
			pt_filter(e, pt_drop_tag, vpid);
			tags_flushed_vpid(e, vpid);
			break;
		case VMMU_TLB_CONTROL_FLUSH_GUEST_NONGLOBAL:
			lt_filter(e, lt_drop_vpid_nonglobal, vpid, 0);
			pt_filter(e, pt_drop_tag, vpid);
			for (int k = 0; k < NR_EPT; k++)
				e->npt_ran[vpid][k] = false;
			break;
		default:
			break;
		}
		/*
		 * An ASID tags the TLB, the nCR3 does not: entering with another
		 * nCR3 under the same ASID without a flush may still use what
		 * the other tables gave (APM 15.16.1), every one of them.
		 */
		for (int k = 0; k < NR_EPT; k++) {
			if (k == root || !e->npt_ran[vpid][k])
				continue;
			for (int i = 0; i < e->ept[k].nrec; i++)
				pt_add(e, &e->ept[k].rec[i], vpid);
		}
		e->npt_ran[vpid][root] = true;
	} else {
		e->ept_ran[root] = true;
	}
	e->ran[vpid][e->npt ? 0 : root] = true;
	return 0;
}

static int leave_l2(struct model *e)
{
	int r = vmmu_vcpu_leave_guest_mode(e->t.vcpu, &e->l2s);

	elog(e, "VM exit");
	ECHECK(e, r == 0, "vmmu_vcpu_leave_guest_mode = %d (%s)", r, vmmu_strerror(r));
	e->in_l2 = false;
	if (e->vpid == 0) {
		lt_filter(e, lt_drop_vpid, 0, 0);
		if (e->npt)
			pt_filter(e, pt_drop_tag, 0);
		tags_flushed_vpid(e, 0);
	}
	return 0;
}

static int want_l1(struct model *e)
{
	return e->in_l2 ? leave_l2(e) : 0;
}

static int want_l2(struct model *e)
{
	return e->in_l2 ? 0 : enter_l2(e, e->root, e->vpid, 0);
}

/* ---- L2's operations ------------------------------------------------------------------- */

static uint64_t rnd_l2_flags(struct model *e)
{
	uint64_t f = 0;

	if (rnd(e, 100) < 65)
		f |= GUEST_W;
	if (rnd(e, 100) < 75)
		f |= GUEST_U;
	if (rnd(e, 100) < 20)
		f |= GUEST_NX;
	if (rnd(e, 100) < 15)
		f |= GUEST_G;
	return f;
}

/* Mostly an L2 gpa some L1 table maps (so that accesses get through). */
static uint64_t rnd_l2_target(struct model *e, uint64_t size)
{
	const struct ept *p = &e->ept[rnd(e, 100) < 70 ? e->root : (int)rnd(e, NR_EPT)];

	if (p->nrec && rnd(e, 100) < 75) {
		const struct px *y = &p->rec[rnd(e, (uint64_t)p->nrec)];

		if (y->size >= size)
			return y->l2 + rnd(e, y->size / size) * size;
		return y->l2 & ~(size - 1);
	}
	return D_BASE + rnd(e, D_SIZE / size) * size;
}

static uint64_t pool_used(struct guest_pt *pt)
{
	uint64_t used, free_pages;

	guest_pt_pool_usage(pt, &used, &free_pages);
	return used;
}

static void l2_rec_remove(struct model *e, int i)
{
	lt_note(e, &e->rec[i]);
	e->rec[i] = e->rec[--e->nrec];
}

/* [lo, hi) grown to take in a leaf [start, start + size) it overlaps. */
static void widen(uint64_t *lo, uint64_t *hi, uint64_t start, uint64_t size)
{
	if (start < *hi && *lo < start + size) {
		*lo = start < *lo ? start : *lo;
		*hi = start + size > *hi ? start + size : *hi;
	}
}

/* L2 unmaps [lo, hi) (whole leaves); tables it frees go with an INVLPG. */
static int l2_unmap(struct model *e, uint64_t lo, uint64_t hi)
{
	uint64_t before = pool_used(e->l2pt);
	int r;

	for (int i = e->nrec - 1; i >= 0; i--)
		if (e->rec[i].gva < hi && lo < e->rec[i].gva + e->rec[i].size)
			l2_rec_remove(e, i);
	r = guest_unmap(e->l2pt, lo, hi - lo);
	ECHECK(e, r == 0, "L2 guest_unmap(%#llx, %#llx) = %d", (unsigned long long)lo, (unsigned long long)(hi - lo), r);
	if (pool_used(e->l2pt) < before) {
		vmmu_vcpu_invlpg(e->t.vcpu, lo);
		lt_filter(e, lt_drop_vpid_gva, e->vpid, lo);
	}
	return 0;
}

static int op_l2_map(struct model *e)
{
	uint64_t size = rnd(e, 100) < 80 ? PAGE : SZ_2M, n = size == PAGE ? 1 + rnd(e, 8) : 1;
	uint64_t base = WIN + rnd(e, WIN_SIZE / size - n + 1) * size, l2 = rnd_l2_target(e, size);
	uint64_t flags = rnd_l2_flags(e), lo = base, hi = base + n * size;
	int r;

	if (e->nrec + (int)n > MAX_L2REC)
		return 0;
	/* Whatever overlaps goes first, whole leaves (a 2M leaf over 4K ones:
	 * the page table they leave empty goes with them). */
	for (int i = 0; i < e->nrec; i++)
		widen(&lo, &hi, e->rec[i].gva, e->rec[i].size);
	elog(e, "L2 map %#llx+%llux%#llx -> L2 %#llx flags %#llx (cleared %#llx..%#llx)", (unsigned long long)base,
	     (unsigned long long)n, (unsigned long long)size, (unsigned long long)l2, (unsigned long long)flags,
	     (unsigned long long)lo, (unsigned long long)hi);
	if (l2_unmap(e, lo, hi))
		return -1;
	r = guest_map(e->l2pt, base, l2, n * size, size, flags);
	ECHECK(e, r == 0, "L2 guest_map = %d (%s)", r, vmmu_strerror(r));
	for (uint64_t i = 0; i < n; i++)
		e->rec[e->nrec++] = (struct lx){ base + i * size, size, l2 + i * size, flags };
	return 0;
}

static int op_l2_unmap(struct model *e)
{
	int i;

	if (!e->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)e->nrec);
	elog(e, "L2 unmap %#llx+%#llx", (unsigned long long)e->rec[i].gva, (unsigned long long)e->rec[i].size);
	return l2_unmap(e, e->rec[i].gva, e->rec[i].gva + e->rec[i].size);
}

static int op_l2_change(struct model *e, bool remap)
{
	struct lx *x;
	int i, r;

	if (!e->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)e->nrec);
	x = &e->rec[i];
	lt_note(e, x);
	x->flags = rnd_l2_flags(e);
	if (remap) {
		x->l2 = rnd_l2_target(e, x->size);
		r = guest_map(e->l2pt, x->gva, x->l2, x->size, x->size, x->flags);
	} else {
		r = guest_protect(e->l2pt, x->gva, x->size, x->flags);
	}
	elog(e, "L2 %s %#llx+%#llx -> L2 %#llx flags %#llx", remap ? "remap" : "protect", (unsigned long long)x->gva,
	     (unsigned long long)x->size, (unsigned long long)x->l2, (unsigned long long)x->flags);
	ECHECK(e, r == 0, "L2 %s = %d (%s)", remap ? "guest_map" : "guest_protect", r, vmmu_strerror(r));
	return 0;
}

static uint64_t pick_gva(struct model *e)
{
	if (e->nrec && rnd(e, 100) < 75) {
		const struct lx *x = &e->rec[rnd(e, (uint64_t)e->nrec)];

		return x->gva + rnd(e, x->size / 8) * 8;
	}
	if (e->nlt && rnd(e, 100) < 50) {
		const struct lx *x = &e->lt[rnd(e, (uint64_t)e->nlt)].x;

		return x->gva + rnd(e, x->size / 8) * 8;
	}
	return WIN + rnd(e, WIN_SIZE / 8) * 8;
}

static uint64_t pick_l2_gpa(struct model *e)
{
	const struct ept *p = &e->ept[e->root];

	if (p->nrec && rnd(e, 100) < 70) {
		const struct px *y = &p->rec[rnd(e, (uint64_t)p->nrec)];

		return y->l2 + rnd(e, y->size / 8) * 8;
	}
	return D_BASE + rnd(e, D_SIZE / 8) * 8;
}

static int op_l2_state(struct model *e, int what)
{
	int r;

	switch (what) {
	case 0: e->cpl = e->cpl ? 0 : 3; break;
	case 1: e->wp = !e->wp; break;
	default: e->pge = !e->pge; break;
	}
	elog(e, "L2 %s", what == 0 ? "CPL toggle" : what == 1 ? "CR0.WP toggle" : "CR4.PGE toggle");
	e->l2s.cpl = e->cpl;
	e->l2s.cr0 = e->wp ? e->l2s.cr0 | VMMU_CR0_WP : e->l2s.cr0 & ~VMMU_CR0_WP;
	e->l2s.cr4 = e->pge ? e->l2s.cr4 | VMMU_CR4_PGE : e->l2s.cr4 & ~VMMU_CR4_PGE;
	r = vmmu_vcpu_set_state(e->t.vcpu, &e->l2s);
	ECHECK(e, r == 0, "L2 set_state = %d (%s)", r, vmmu_strerror(r));
	/* A MOV to CR4 changing PGE invalidates every mapping of the VPID
	 * (SDM 4.10.4.1; for all EP4TAs, 29.4.3.1).  CPL and WP are checked
	 * at each access, cached translations included. */
	if (what == 2) {
		lt_filter(e, lt_drop_vpid, e->vpid, 0);
		tags_flushed_vpid(e, e->vpid);
		e->ran[e->vpid][e->npt ? 0 : e->root] = true;
		if (e->npt)
			e->npt_ran[e->vpid][e->root] = true;
	}
	return 0;
}

static int op_l2_invlpg(struct model *e)
{
	uint64_t gva = pick_gva(e);

	elog(e, "L2 invlpg %#llx", (unsigned long long)gva);
	vmmu_vcpu_invlpg(e->t.vcpu, gva);
	lt_filter(e, lt_drop_vpid_gva, e->vpid, gva);
	return 0;
}

static int op_l2_cr3(struct model *e)
{
	int r = vmmu_vcpu_write_cr3(e->t.vcpu, guest_pt_cr3(e->l2pt));

	elog(e, "L2 mov cr3");
	ECHECK(e, r == 0, "L2 write_cr3 = %d", r);
	/* Non-global mappings of the VPID, for all EP4TAs (SDM 29.4.3.1). */
	lt_filter(e, lt_drop_vpid_nonglobal, e->vpid, 0);
	return 0;
}

/* ---- L1's operations ------------------------------------------------------------------- */

/* n frames for leaves of this size, in one area: slot 0, slot 1 at either
 * place, or MMIO. */
static uint64_t rnd_frame(struct model *e, uint64_t size, uint64_t n)
{
	uint64_t p = rnd(e, 100), base;

	if (p < 66)
		base = F0;
	else if (p < 80)
		base = F1_A;
	else if (p < 92)
		base = F1_B;
	else
		base = MMIO_F;
	return base + rnd(e, F_SIZE / size - n + 1) * size;
}

static uint64_t rnd_l1_flags(struct model *e, bool *misconfig)
{
	*misconfig = false;
	if (e->npt) {
		uint64_t f = 0;

		if (rnd(e, 100) < 75)
			f |= GUEST_W;
		if (rnd(e, 100) < 94)
			f |= GUEST_U;	/* U=0: every access is a user one, so it faults */
		if (rnd(e, 100) < 15)
			f |= GUEST_NX;
		return f;
	}
	switch (rnd(e, 32)) {
	case 0: *misconfig = true; return GUEST_EPT_W | GUEST_EPT_X | GUEST_EPT_MT_WB;	/* W without R */
	case 1: *misconfig = true; return GUEST_EPT_R | GUEST_EPT_MT(2);		/* memory type 2 */
	case 2: *misconfig = !e->xo; return GUEST_EPT_X | GUEST_EPT_MT_WB;		/* execute-only */
	case 3: case 4: case 5: return GUEST_EPT_R | GUEST_EPT_MT_WB;
	case 6: case 7: case 8: return GUEST_EPT_R | GUEST_EPT_X | GUEST_EPT_MT_WB;
	case 9: case 10: case 11: case 12: return GUEST_EPT_R | GUEST_EPT_W | GUEST_EPT_MT(rnd(e, 2) ? 6 : 0);
	default: return GUEST_EPT_RWX | GUEST_EPT_MT_WB;
	}
}

static void l1_rec_remove(struct model *e, int k, int i)
{
	struct ept *p = &e->ept[k];

	pt_note(e, k, &p->rec[i]);
	p->rec[i] = p->rec[--p->nrec];
}

/*
 * L1 unmaps [lo, hi) of table k.  Freed table pages may be reused for
 * other addresses, so L1 invalidates first, as a hypervisor must: INVEPT
 * of the EPTP at once (NPT: the next VMRUN flushes every ASID).
 */
static int l1_unmap(struct model *e, int k, uint64_t lo, uint64_t hi)
{
	struct ept *p = &e->ept[k];
	uint64_t before = pool_used(p->pt);
	int r;

	for (int i = p->nrec - 1; i >= 0; i--)
		if (p->rec[i].l2 < hi && lo < p->rec[i].l2 + p->rec[i].size)
			l1_rec_remove(e, k, i);
	r = guest_unmap(p->pt, lo, hi - lo);
	ECHECK(e, r == 0, "L1 guest_unmap(%d, %#llx, %#llx) = %d", k, (unsigned long long)lo,
	       (unsigned long long)(hi - lo), r);
	if (pool_used(p->pt) < before) {
		if (e->npt) {
			e->flush_all_next = true;
		} else {
			r = vmmu_vcpu_invept(e->t.vcpu, VMMU_INVEPT_SINGLE, guest_pt_eptp(p->pt, p->ad));
			ECHECK(e, r == 0, "INVEPT = %d", r);
			lt_filter(e, lt_drop_root, (uint64_t)k, 0);
			pt_filter(e, pt_drop_tag, (uint64_t)k);
			e->ept_ran[k] = false;
			for (int v = 0; v < NR_VPID; v++)
				e->ran[v][k] = false;
		}
	}
	return 0;
}

static int op_l1_map(struct model *e, int k)
{
	struct ept *p = &e->ept[k];
	uint64_t size = rnd(e, 100) < 85 ? PAGE : SZ_2M, n = size == PAGE ? 1 + rnd(e, 8) : 1;
	uint64_t l2 = D_BASE + rnd(e, D_SIZE / size - n + 1) * size, l1 = rnd_frame(e, size, n);
	uint64_t lo = l2, hi = l2 + n * size, flags;
	bool mc;
	int r;

	flags = rnd_l1_flags(e, &mc);
	if (p->nrec + (int)n > MAX_L1REC)
		return 0;
	for (int i = 0; i < p->nrec; i++)
		widen(&lo, &hi, p->rec[i].l2, p->rec[i].size);
	elog(e, "L1 map table %d: L2 %#llx+%llux%#llx -> L1 %#llx flags %#llx%s (cleared %#llx..%#llx)", k,
	     (unsigned long long)l2, (unsigned long long)n, (unsigned long long)size, (unsigned long long)l1,
	     (unsigned long long)flags, mc ? " (misconfigured)" : "", (unsigned long long)lo, (unsigned long long)hi);
	if (l1_unmap(e, k, lo, hi))
		return -1;
	r = guest_map(p->pt, l2, l1, n * size, size, flags);
	ECHECK(e, r == 0, "L1 guest_map = %d (%s)", r, vmmu_strerror(r));
	for (uint64_t i = 0; i < n; i++)
		p->rec[p->nrec++] = (struct px){ l2 + i * size, size, l1 + i * size, flags, mc };
	return 0;
}

static int op_l1_unmap(struct model *e, int k)
{
	struct ept *p = &e->ept[k];
	int i;

	if (!p->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)p->nrec);
	elog(e, "L1 unmap table %d: L2 %#llx+%#llx", k, (unsigned long long)p->rec[i].l2,
	     (unsigned long long)p->rec[i].size);
	return l1_unmap(e, k, p->rec[i].l2, p->rec[i].l2 + p->rec[i].size);
}

static int op_l1_change(struct model *e, int k, bool remap)
{
	struct ept *p = &e->ept[k];
	struct px *y;
	int i, r;

	if (!p->nrec)
		return 0;
	i = (int)rnd(e, (uint64_t)p->nrec);
	y = &p->rec[i];
	pt_note(e, k, y);
	y->flags = rnd_l1_flags(e, &y->misconfig);
	if (remap)
		y->l1 = rnd_frame(e, y->size, 1);
	/* guest_map replaces a leaf of the same size in place. */
	r = guest_map(p->pt, y->l2, y->l1, y->size, y->size, y->flags);
	elog(e, "L1 %s table %d: L2 %#llx+%#llx -> L1 %#llx flags %#llx%s", remap ? "remap" : "protect", k,
	     (unsigned long long)y->l2, (unsigned long long)y->size, (unsigned long long)y->l1,
	     (unsigned long long)y->flags, y->misconfig ? " (misconfigured)" : "");
	ECHECK(e, r == 0, "L1 guest_map = %d (%s)", r, vmmu_strerror(r));
	return 0;
}

static int op_invept(struct model *e, bool all)
{
	int k = (int)rnd(e, NR_EPT), r;

	elog(e, "INVEPT %s", all ? "all" : k == 0 ? "single 0" : k == 1 ? "single 1" : "single 2");
	r = vmmu_vcpu_invept(e->t.vcpu, all ? VMMU_INVEPT_ALL : VMMU_INVEPT_SINGLE,
			     guest_pt_eptp(e->ept[k].pt, e->ept[k].ad));
	ECHECK(e, r == 0, "INVEPT = %d (%s)", r, vmmu_strerror(r));
	/* Guest-physical and combined mappings of the EP4TA (all: every one). */
	if (all) {
		lt_filter(e, lt_drop_all, 0, 0);
		pt_filter(e, pt_drop_all, 0);
	} else {
		lt_filter(e, lt_drop_root, (uint64_t)k, 0);
		pt_filter(e, pt_drop_tag, (uint64_t)k);
	}
	for (int j = 0; j < NR_EPT; j++) {
		if (!all && j != k)
			continue;
		e->ept_ran[j] = false;
		for (int v = 0; v < NR_VPID; v++)
			e->ran[v][j] = false;
	}
	return 0;
}

static int op_invvpid(struct model *e)
{
	unsigned int type = (unsigned int)rnd(e, 4), vpid = 1 + (unsigned int)rnd(e, 2);
	uint64_t gva = pick_gva(e);
	int r;

	elog(e, "INVVPID type %u vpid %u gva %#llx", type, vpid, (unsigned long long)gva);
	r = vmmu_vcpu_invvpid(e->t.vcpu, type, (uint16_t)vpid, gva);
	ECHECK(e, r == 0, "INVVPID = %d (%s)", r, vmmu_strerror(r));
	switch (type) {
	case VMMU_INVVPID_ADDR:
		lt_filter(e, lt_drop_vpid_gva, vpid, gva);
		break;
	case VMMU_INVVPID_SINGLE:
		lt_filter(e, lt_drop_vpid, vpid, 0);
		for (int j = 0; j < NR_EPT; j++)
			e->ran[vpid][j] = false;
		break;
	case VMMU_INVVPID_ALL:
		/* Every VPID but 0000H (SDM Vol. 2B INVVPID). */
		lt_filter(e, lt_drop_nonzero_vpid, 0, 0);
		for (unsigned int v = 1; v < NR_VPID; v++)
			for (int j = 0; j < NR_EPT; j++)
				e->ran[v][j] = false;
		break;
	default:
		lt_filter(e, lt_drop_vpid_nonglobal, vpid, 0);
		break;
	}
	return 0;
}

static int op_invlpga(struct model *e)
{
	unsigned int asid = 1 + (unsigned int)rnd(e, 2);
	uint64_t gva = pick_gva(e);
	int r;

	elog(e, "INVLPGA %#llx asid %u", (unsigned long long)gva, asid);
	r = vmmu_vcpu_invlpga(e->t.vcpu, gva, asid);
	ECHECK(e, r == 0, "INVLPGA = %d (%s)", r, vmmu_strerror(r));
	lt_filter(e, lt_drop_vpid_gva, asid, gva);
	return 0;
}

/* L1 itself reads or writes one of the frames (or an MMIO address). */
static int op_l1_access(struct model *e)
{
	uint64_t l1 = rnd_frame(e, PAGE, 1) + rnd(e, PAGE / 8) * 8, v = 0, *sw = shadow_of(e, l1);
	bool write = rnd(e, 2);
	struct vmmu_exit x;
	int r;

	if (write)
		v = (++e->seq << 8) | 0x1a;
	elog(e, "L1 %s %#llx", write ? "write" : "read", (unsigned long long)l1);
	memset(&x, 0, sizeof(x));
	r = vmmu_vcpu_access(e->t.vcpu, l1, &v, 8, (write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ) | VMMU_ACCESS_PHYS, &x);
	if (!sw) {
		ECHECK(e, r == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO && x.u.mmio.gpa == l1,
		       "L1 access to MMIO %#llx: r=%d exit %s gpa %#llx", (unsigned long long)l1, r,
		       r == VMMU_EXIT ? exit_name(x.reason) : "-", (unsigned long long)x.u.mmio.gpa);
		return 0;
	}
	ECHECK(e, r == 0, "L1 access to %#llx: r=%d exit %s", (unsigned long long)l1, r,
	       r == VMMU_EXIT ? exit_name(x.reason) : "-");
	if (write)
		*sw = v;
	else
		ECHECK(e, v == *sw, "L1 read of %#llx: %#llx, the model %#llx", (unsigned long long)l1,
		       (unsigned long long)v, (unsigned long long)*sw);
	return 0;
}

/* ---- host operations --------------------------------------------------------------------- */

static int set_slot(struct model *e, uint32_t id, uint64_t gpa, uint64_t size, uint32_t flags)
{
	struct vmmu_memslot s = { .slot = id, .gpa = gpa, .size = size, .flags = flags };
	int r = vmmu_set_memslot(e->t.vm, &s);

	ECHECK(e, r == 0, "vmmu_set_memslot(%u, %#llx, %#llx, %#x) = %d (%s)", id, (unsigned long long)gpa,
	       (unsigned long long)size, flags, r, vmmu_strerror(r));
	return 0;
}

/* Slot 1: deleted, created again (new memory, zeroes) or moved (contents kept). */
static int op_slot(struct model *e)
{
	if (!e->f1_base) {
		uint64_t base = rnd(e, 2) ? F1_A : F1_B;

		elog(e, "slot 1 created at %#llx", (unsigned long long)base);
		if (set_slot(e, F1_SLOT, base, F_SIZE, 0))
			return -1;
		memset(e->sh1, 0, F_SIZE);
		e->f1_base = base;
		return 0;
	}
	if (rnd(e, 2)) {
		elog(e, "slot 1 deleted");
		if (set_slot(e, F1_SLOT, e->f1_base, 0, 0))
			return -1;
		e->f1_base = 0;
		return 0;
	}
	{
		uint64_t base = e->f1_base == F1_A ? F1_B : F1_A;

		elog(e, "slot 1 moved to %#llx", (unsigned long long)base);
		if (set_slot(e, F1_SLOT, base, F_SIZE, 0))
			return -1;
		e->f1_base = base;
	}
	return 0;
}

static int op_dirty_log(struct model *e)
{
	static uint64_t bitmap[NT_RAM_SIZE / PAGE / 64];

	if (e->logging && rnd(e, 3)) {
		int r = vmmu_get_dirty_log(e->t.vm, 0, bitmap);

		elog(e, "slot 0 dirty log harvested");
		ECHECK(e, r == 0, "vmmu_get_dirty_log = %d", r);
		return 0;
	}
	e->logging = !e->logging;
	elog(e, "slot 0 dirty logging %s", e->logging ? "on" : "off");
	return set_slot(e, 0, 0, NT_RAM_SIZE, e->logging ? VMMU_MEM_LOG_DIRTY_PAGES : 0);
}

/* ---- whole-state checks ------------------------------------------------------------------- */

static int verify_all(struct model *e)
{
	for (int s = 0; s < 2; s++) {
		uint64_t base = s ? e->f1_base : F0, *sh = s ? e->sh1 : e->sh0;
		void *h;

		if (!base)
			continue;
		ECHECK(e, vmmu_gpa_to_hva(e->t.vm, base, &h) == 0, "no hva for %#llx", (unsigned long long)base);
		for (uint64_t k = 0; k < F_SIZE / 8; k++) {
			uint64_t v = __atomic_load_n((uint64_t *)h + k, __ATOMIC_RELAXED);

			ECHECK(e, v == sh[k], "L1 %#llx holds %#llx, the model %#llx (a write went astray)",
			       (unsigned long long)(base + k * 8), (unsigned long long)v, (unsigned long long)sh[k]);
		}
	}
	/* The tables in memory say what the records say. */
	for (int i = 0; i < e->nrec; i++) {
		uint64_t l2 = 0, size = 0, leaf = 0;
		int r = guest_lookup(e->l2pt, e->rec[i].gva, &l2, &size, &leaf, NULL);

		ECHECK(e, r == 0 && l2 == e->rec[i].l2 && size == e->rec[i].size && (leaf & L2R) == e->rec[i].flags,
		       "L2 tables at %#llx: r=%d %#llx size %#llx leaf %#llx, the model %#llx size %#llx flags %#llx",
		       (unsigned long long)e->rec[i].gva, r, (unsigned long long)l2, (unsigned long long)size,
		       (unsigned long long)leaf, (unsigned long long)e->rec[i].l2, (unsigned long long)e->rec[i].size,
		       (unsigned long long)e->rec[i].flags);
	}
	for (int k = 0; k < NR_EPT; k++) {
		const struct ept *p = &e->ept[k];

		for (int i = 0; i < p->nrec; i++) {
			uint64_t l1 = 0, size = 0;
			int r = guest_lookup(p->pt, p->rec[i].l2, &l1, &size, NULL, NULL);

			ECHECK(e, r == 0 && l1 == p->rec[i].l1 && size == p->rec[i].size,
			       "L1 table %d at L2 %#llx: r=%d L1 %#llx size %#llx, the model %#llx size %#llx", k,
			       (unsigned long long)p->rec[i].l2, r, (unsigned long long)l1, (unsigned long long)size,
			       (unsigned long long)p->rec[i].l1, (unsigned long long)p->rec[i].size);
		}
	}
	return 0;
}

/* ---- set-up, the step loop --------------------------------------------------------------- */

static void model_init(struct model *e, const struct mmu_variant *var, uint64_t seed)
{
	struct vmmu_vm_config cfg;
	enum guest_mode l1mode;

	memset(e, 0, sizeof(*e));
	nt_setup_l1(&e->t, var, 0, 1);
	variant_config(var, &cfg);
	e->npt = e->t.npt;
	e->five = var->tdp_levels == 5;
	e->m = cfg.maxphyaddr;
	e->seed = seed;
	e->rng = seed * 0x9e3779b97f4a7c15ULL + 0x1234567ULL;
	e->rng = (e->rng ^ (e->rng >> 31)) | 1;
	e->xo = !e->npt && (seed & 1);
	e->ml.trace = getenv("VMMU_NESTED_MODEL_TRACE") != NULL;
	e->sh0 = calloc(F_SIZE / 8, 8);
	e->sh1 = calloc(F_SIZE / 8, 8);
	ASSERT_TRUE(e->sh0 && e->sh1);
	if (e->npt)
		l1mode = e->five ? GUEST_MODE_5LEVEL : GUEST_MODE_4LEVEL;
	else
		l1mode = e->five ? GUEST_MODE_EPT5 : GUEST_MODE_EPT4;
	for (int k = 0; k < NR_EPT; k++) {
		struct ept *p = &e->ept[k];

		ASSERT_OK(guest_pt_create(e->t.vm, l1mode, EPT_POOL(k), SZ_2M, &p->pt));
		guest_pt_set_vcpu(p->pt, e->t.vcpu);
		/* EPTP 1 without A/D, the others with. */
		p->ad = k != 1;
		/* L2's own tables, the same in every table and never changed. */
		ASSERT_OK(guest_map(p->pt, 0, L2PT_L1, SZ_2M, GUEST_PAGE_2M, nt_flags(&e->t, true, true, true)));
		/* A start: the first 1M of D by 4K pages (table k shifted by k
		 * pages), the last 2M by a 2M page. */
		for (uint64_t i = 0; i < 256; i++) {
			uint64_t l1 = F0 + ((i + (uint64_t)k) % 1024) * PAGE, f = nt_flags(&e->t, true, true, true);

			ASSERT_OK(guest_map(p->pt, D_BASE + i * PAGE, l1, PAGE, GUEST_PAGE_4K, f));
			p->rec[p->nrec++] = (struct px){ D_BASE + i * PAGE, PAGE, l1, f, false };
		}
		ASSERT_OK(guest_map(p->pt, D_BASE + SZ_2M, F0 + SZ_2M, SZ_2M, GUEST_PAGE_2M,
				    nt_flags(&e->t, true, true, true)));
		p->rec[p->nrec++] = (struct px){ D_BASE + SZ_2M, SZ_2M, F0 + SZ_2M, nt_flags(&e->t, true, true, true), false };
	}
	e->f1_base = F1_A;
	{
		struct vmmu_memslot s = { .slot = F1_SLOT, .gpa = F1_A, .size = F_SIZE };

		ASSERT_OK(vmmu_set_memslot(e->t.vm, &s));
	}
	ASSERT_OK(guest_pt_create_nested(e->t.vm, e->five ? GUEST_MODE_5LEVEL : GUEST_MODE_4LEVEL, L2PT_POOL, L2PT_SIZE,
					 L2PT_L1, &e->l2pt));
	/* L2's start, built before it runs (host-side stores: nothing is
	 * cached yet): 128 pages of its window over D's 4K part, and a 2M page
	 * over the 2M part. */
	for (uint64_t i = 0; i < 128; i++) {
		uint64_t gva = WIN + i * PAGE, l2 = D_BASE + ((i * 37) % 256) * PAGE, f = GUEST_W | GUEST_U;

		ASSERT_OK(guest_map(e->l2pt, gva, l2, PAGE, GUEST_PAGE_4K, f));
		e->rec[e->nrec++] = (struct lx){ gva, PAGE, l2, f };
	}
	ASSERT_OK(guest_map(e->l2pt, WIN + SZ_2M, D_BASE + SZ_2M, SZ_2M, GUEST_PAGE_2M, GUEST_W));
	e->rec[e->nrec++] = (struct lx){ WIN + SZ_2M, SZ_2M, D_BASE + SZ_2M, GUEST_W };
	guest_pt_set_vcpu(e->l2pt, e->t.vcpu);
	guest_pt_state(e->l2pt, &e->l2s, 0);
	e->l2s.cr4 |= VMMU_CR4_PGE;
	e->cpl = 0;
	e->wp = true;
	e->pge = true;
	e->vpid = 1;
	e->root = 0;
}

static void model_fini(struct model *e)
{
	if (e->in_l2)
		(void)vmmu_vcpu_leave_guest_mode(e->t.vcpu, NULL);
	guest_pt_destroy(e->l2pt);
	for (int k = 0; k < NR_EPT; k++)
		guest_pt_destroy(e->ept[k].pt);
	free(e->sh0);
	free(e->sh1);
	nt_teardown(&e->t);
}

/* A VM entry somewhere: the same or another table, VPID/ASID 0, 1 or 2. */
static int op_enter(struct model *e)
{
	int root = rnd(e, 100) < 60 ? e->root : (int)rnd(e, NR_EPT);
	unsigned int vpid = rnd(e, 100) < 60 ? e->vpid : (unsigned int)rnd(e, NR_VPID);
	static const uint8_t tc[] = { 0, 0, 0, VMMU_TLB_CONTROL_FLUSH_GUEST, VMMU_TLB_CONTROL_FLUSH_GUEST_NONGLOBAL,
				      VMMU_TLB_CONTROL_FLUSH_ALL };

	if (want_l1(e))
		return -1;
	return enter_l2(e, root, vpid, e->npt ? tc[rnd(e, sizeof(tc))] : 0);
}

static int step(struct model *e)
{
	uint64_t p = rnd(e, 1000);
	int k = rnd(e, 100) < 60 ? e->root : (int)rnd(e, NR_EPT);

	/* The model TLBs hold what may be cached; past this many, a full
	 * flush keeps the candidate lists short. */
	if (e->nlt > MAX_LT / 2 || e->npt_c > MAX_PT / 2) {
		e->n_ops[0]++;
		if (want_l1(e))
			return -1;
		if (e->npt) {
			e->flush_all_next = true;
			return enter_l2(e, e->root, e->vpid, VMMU_TLB_CONTROL_FLUSH_ALL);
		}
		return op_invept(e, true);
	}
	if (p < 280) {		/* L2 linear access */
		e->n_ops[1]++;
		return want_l2(e) ? -1 : do_access(e, pick_gva(e), false, (int)rnd(e, 3));
	}
	if (p < 340) {		/* L2 physical access */
		e->n_ops[2]++;
		return want_l2(e) ? -1 : do_access(e, pick_l2_gpa(e), true, (int)rnd(e, 3));
	}
	if (p < 440) {		/* L2 table edits */
		e->n_ops[3]++;
		if (want_l2(e))
			return -1;
		switch (rnd(e, 4)) {
		case 0: return e->nrec > MAX_L2REC * 3 / 4 ? op_l2_unmap(e) : op_l2_map(e);
		case 1: return op_l2_unmap(e);
		case 2: return op_l2_change(e, false);
		default: return op_l2_change(e, true);
		}
	}
	if (p < 480) {
		e->n_ops[4]++;
		return want_l2(e) ? -1 : op_l2_invlpg(e);
	}
	if (p < 500) {
		e->n_ops[5]++;
		return want_l2(e) ? -1 : op_l2_cr3(e);
	}
	if (p < 525) {
		e->n_ops[6]++;
		return want_l2(e) ? -1 : op_l2_state(e, rnd(e, 10) == 0 ? 2 : (int)rnd(e, 2));
	}
	if (p < 665) {		/* L1 table edits */
		e->n_ops[7]++;
		if (want_l1(e))
			return -1;
		switch (rnd(e, 8)) {
		case 0: case 1: case 2: return e->ept[k].nrec > MAX_L1REC * 3 / 4 ? op_l1_unmap(e, k) : op_l1_map(e, k);
		case 3: return op_l1_unmap(e, k);
		case 4: case 5: return op_l1_change(e, k, false);
		default: return op_l1_change(e, k, true);
		}
	}
	if (p < 720) {		/* invalidations by L1 */
		e->n_ops[8]++;
		if (want_l1(e))
			return -1;
		if (e->npt)
			return op_invlpga(e);
		switch (rnd(e, 4)) {
		case 0: return op_invept(e, rnd(e, 4) == 0);
		case 1: return op_invept(e, false);
		default: return op_invvpid(e);
		}
	}
	if (p < 760) {
		e->n_ops[9]++;
		return want_l1(e) ? -1 : op_l1_access(e);
	}
	if (p < 880) {		/* VM entry (after an exit), with its tags */
		e->n_ops[10]++;
		return op_enter(e);
	}
	if (p < 950) {
		e->n_ops[11]++;
		return want_l1(e);
	}
	if (p < 975) {
		e->n_ops[12]++;
		return op_slot(e);
	}
	e->n_ops[13]++;
	return op_dirty_log(e);
}

static int model_run(struct model *e, uint64_t steps)
{
	char why[512];
	const char *bug;

	for (e->step = 1; e->step <= steps && !e->ml.failed; e->step++) {
		if (step(e))
			return -1;
		if (vmmu_audit(e->t.vm, why, sizeof(why)))
			return efail(e, "vmmu_audit after the step: %s", why);
		if (vmmu_vm_bugged(e->t.vm, &bug))
			return efail(e, "VM bugged: %s", bug ? bug : "?");
		if (!(e->step % 1024) && verify_all(e))
			return -1;
	}
	return e->ml.failed ? -1 : verify_all(e);
}

static uint64_t env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : def;
}

TEST(nested_model)
{
	uint64_t steps = env_u64("VMMU_NESTED_MODEL_STEPS", DEFAULT_STEPS);
	uint64_t seed0 = env_u64("VMMU_NESTED_MODEL_SEED", 0x3003);

	for_each_mmu_variant(var) {
		static struct model e;
		double t0 = now_s();
		int r;

		if (!nt_variant_ok(var))
			continue;
		/* Two seeds per variant: execute-only offered with the odd one (EPT). */
		for (uint64_t s = 0; s < 2; s++) {
			model_init(&e, var, seed0 + s + 16 * var->tdp_levels + (var->tdp_format == VMMU_TDP_NPT ? 64 : 0) +
				   ((var->flags & VMMU_VM_AD_DISABLED) ? 32 : 0));
			r = model_run(&e, steps / 2);
			fprintf(stderr,
				"    %-5s seed %#llx: %llu steps %.2fs | acc %llu ok %llu mmio %llu L2 #PF %llu nested %llu "
				"stale-cand %llu stale-used %llu A/D checked %llu | ops: L2 %llu+%llu acc, %llu edits, L1 %llu "
				"edits, %llu inval, %llu entries, %llu slot, %llu log\n",
				var->name, (unsigned long long)e.seed, (unsigned long long)(e.step - 1), now_s() - t0,
				(unsigned long long)e.n_acc, (unsigned long long)e.n_ok, (unsigned long long)e.n_mmio,
				(unsigned long long)e.n_pf, (unsigned long long)e.n_nested, (unsigned long long)e.n_stale_cand,
				(unsigned long long)e.n_stale_used, (unsigned long long)e.n_ad_checked,
				(unsigned long long)e.n_ops[1], (unsigned long long)e.n_ops[2], (unsigned long long)e.n_ops[3],
				(unsigned long long)e.n_ops[7], (unsigned long long)e.n_ops[8], (unsigned long long)e.n_ops[10],
				(unsigned long long)e.n_ops[12], (unsigned long long)e.n_ops[13]);
			if (r)
				test_fail(__FILE__, __LINE__, "%s", e.ml.why);
			model_fini(&e);
			t0 = now_s();
		}
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
