/* SPDX-License-Identifier: MIT */
/* The model engine of the model-based random tests (shadow_model.h). */
#define _GNU_SOURCE
#include <stdarg.h>

#include "shadow_model.h"

#define TLB_FLUSH_AT 2048
#define MAX_CAND 256
#define RIGHTS (GUEST_W | GUEST_U | GUEST_NX | GUEST_G)

enum { ACC_R, ACC_W, ACC_X };
enum { O_OK, O_MMIO, O_PF, O_GP };

struct outcome {
	int kind;
	uint64_t gpa;
	uint32_t ec;
};

uint64_t pat(uint64_t gpa)
{
	return (gpa * 0x9e3779b97f4a7c15ULL) | 1;
}

static uint64_t rnd(struct eng *e, uint64_t n)
{
	return xorshift(&e->rng) % n;
}

static void __attribute__((format(printf, 2, 3))) elog(struct eng *e, const char *fmt, ...)
{
	char who[16];
	va_list ap;

	/* VMMU_SHADOW_TRACE=1: every operation on stderr, to replay a failure. */
	snprintf(who, sizeof(who), "e%d", e->id);
	va_start(ap, fmt);
	model_log_op(&e->ml, who, e->step, fmt, ap);
	va_end(ap);
}

static int __attribute__((format(printf, 2, 3))) efail(struct eng *e, const char *fmt, ...)
{
	char head[128];
	va_list ap;
	int r;

	snprintf(head, sizeof(head), "engine %d, %s paging, seed %#llx, step %llu", e->id, mode_names[e->mode],
		 (unsigned long long)e->seed, (unsigned long long)e->step);
	va_start(ap, fmt);
	r = model_log_fail(&e->ml, head, fmt, ap);
	va_end(ap);
	return r;
}

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
		static _Thread_local struct model_place pl[MAX_CAND];
		int idx[MAX_CAND], np = 0, k, changed;

		e->n_ok++;
		for (int i = 0; i < n; i++) {
			uint64_t *sw;

			if (c[i].o.kind != O_OK)
				continue;
			sw = shadow_word(e, c[i].o.gpa);
			ECHECK(e, sw, "model bug: gpa %#llx has no shadow", (unsigned long long)c[i].o.gpa);
			pl[np] = (struct model_place){ c[i].o.gpa, sw, host_rd64(e->vm, c[i].o.gpa) };
			idx[np++] = i;
		}
		if (type == ACC_W) {
			/* Exactly one allowed gpa took the value; the others kept theirs. */
			k = model_write_landed(pl, np, val, &changed);
			ECHECK(e, changed < 0, "write of %#llx to gva %#llx: gpa %#llx changed to %#llx (want %#llx); %s",
			       (unsigned long long)val, (unsigned long long)gva, (unsigned long long)pl[changed].addr,
			       (unsigned long long)pl[changed].mem, (unsigned long long)*pl[changed].copy, cs);
			ECHECK(e, k >= 0, "write of %#llx to gva %#llx completed; it landed in none or several of the allowed "
			       "gpas: %s", (unsigned long long)val, (unsigned long long)gva, cs);
		} else {
			k = model_read_match(pl, np, buf);
			ECHECK(e, k >= 0, "%s of gva %#llx completed with %#llx; allowed: %s", acc_names[type],
			       (unsigned long long)gva, (unsigned long long)buf, cs);
			ECHECK(e, pl[k].mem == buf, "memory at %#llx is %#llx, the shadow copy %#llx",
			       (unsigned long long)pl[k].addr, (unsigned long long)pl[k].mem, (unsigned long long)buf);
		}
		match = idx[k];
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

uint64_t sd_page(int i, int version)
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

int eng_init(struct eng *e, vmmu_vm *vm, vmmu_vcpu *vcpu, enum guest_mode mode, int id, int nas,
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
	e->ml.trace = getenv("VMMU_SHADOW_TRACE") != NULL;
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

void eng_fini(struct eng *e)
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

int eng_run(struct eng *e, uint64_t max_steps, double deadline, bool audit_each)
{
	char why[512];
	const char *bug;

	for (e->step = 1; e->step <= max_steps && !e->ml.failed; e->step++) {
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
	if (e->ml.failed)
		return -1;
	return verify_all(e);
}

void eng_report(const struct eng *e, const char *var, double secs)
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
