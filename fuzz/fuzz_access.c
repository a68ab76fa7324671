/* SPDX-License-Identifier: MIT */
/*
 * One vCPU access, checked against everything it may legally do.
 *
 * An access covers up to MAX_FRAGS pages.  For each page the models give
 * the candidates: through the current guest tables (a TLB miss: the walk,
 * its A/D updates, the data page), through each translation the TLB may
 * still hold (gmodel.h), or, without guest paging, the guest-physical
 * page.  A scenario picks one candidate per page up to the first that
 * exits; vmmu's result must be one of them:
 *  - the exit (reason, gpa, length, offset, error code, CR2) of the first
 *    page that exits, or success;
 *  - the bytes a read returns are those of the chosen pages, and on an exit
 *    the caller's buffer is untouched;
 *  - guest memory afterwards holds exactly the scenario's stores (all of
 *    them on success, none on an exit), plus A/D bits set in entries some
 *    walk of this access used (SDM 4.8), which the model then adopts;
 *  - a page reached through the current tables with nothing cached for it
 *    was walked, so A is set in every entry used and D in the leaf of a
 *    write.
 *
 * The one exception to all-or-nothing (vmmu.h): under shadow paging vmmu
 * performs a store into a write-protected guest table itself, page by page,
 * so an access may be cut into pieces, each translated after the pieces
 * before it were stored (a store into a page table can change the next
 * page's translation).  Scenarios then also choose where to cut, but only
 * beside a page the MMU may be shadowing (or anywhere with CR0.WP = 0,
 * where stores the shadow cannot grant are emulated too).
 *
 * An access that some scenario would leave waiting for an invalidation this
 * thread opened is not issued at all.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"

#define MAX_CANDS 16
#define MAX_SCEN 256
#define MAX_AD 64
#define MAX_TOUCH 48

struct cand {
	struct gm_out o;
	bool current;		/* through the current tables (w is its walk) */
	struct gm_walk w;
};

struct frag {
	uint64_t addr;
	size_t off, n;
};

struct scen {
	int exit_page;		/* -1: every page done */
	struct cand c[MAX_FRAGS];
	uint8_t group[MAX_FRAGS];
	bool stored[MAX_FRAGS];	/* the page's bytes reached memory */
	uintptr_t at[MAX_FRAGS];	/* where the page's chosen candidate is, in host memory */
	int last_group;
};

struct actx {
	struct fz *f;
	const struct fz_acc *a;
	struct gm_access ga;
	bool write, paging, splits;
	int k;
	struct frag fr[MAX_FRAGS];
	struct cand lists[MAX_FRAGS][MAX_CANDS];
	int nl[MAX_FRAGS];
	bool cached[MAX_FRAGS];
	struct scen cur;
	struct scen sc[MAX_SCEN];
	int nsc;
	bool overflow, blocked;
	/* The bytes holding A/D of entries some walk of this access reads. */
	struct {
		uintptr_t hva;
		uint64_t gpa;
		uint8_t bits;
	} ad[MAX_AD];
	int nad;
};

static const char *okind_name(enum gm_okind k)
{
	static const char *const n[] = { "ok", "mmio", "memfault", "#PF", "#GP", "blocked", "unusable" };

	return n[k];
}

static void ad_note(struct actx *c, const struct gm_walk *w)
{
	for (int i = 0; i < w->n; i++) {
		uint8_t bits = 0x20 | ((w->e[i].leaf && c->write) ? 0x40 : 0);
		int j;

		for (j = 0; j < c->nad && c->ad[j].hva != w->e[i].hva; j++)
			;
		if (j == c->nad) {
			if (c->nad == MAX_AD)
				continue;
			c->ad[c->nad++] = (typeof(c->ad[0])){ w->e[i].hva, w->e[i].gpa, 0 };
		}
		c->ad[j].bits |= bits;
	}
}

static bool out_eq(const struct gm_out *a, const struct gm_out *b)
{
	return a->k == b->k && a->gpa == b->gpa && a->ec == b->ec && a->ro == b->ro;
}

static void add_cand(struct actx *c, int i, const struct cand *cd)
{
	for (int j = 0; j < c->nl[i]; j++)
		if (out_eq(&c->lists[i][j].o, &cd->o))
			return;
	if (c->nl[i] < MAX_CANDS)
		c->lists[i][c->nl[i]++] = *cd;
	else
		c->overflow = true;
}

/* The candidates of page i in the model's present state; extra: the
 * current translation before an earlier piece of the access was stored
 * (it may be cached now). */
static void gen_cands(struct actx *c, int i, const struct gm_xlat *extra)
{
	struct fz *f = c->f;
	const struct frag *fr = &c->fr[i];
	unsigned int v = c->a->vcpu;
	struct gm_vcpu *gv = &f->g->v[v];
	struct cand cd;

	c->nl[i] = 0;
	memset(&cd, 0, sizeof(cd));
	cd.current = true;
	if (!c->paging) {
		gm_eval_phys(f->g, fr->addr, fr->n, c->write, &cd.o);
		add_cand(c, i, &cd);
		return;
	}
	gm_eval_current(f->g, v, fr->addr, fr->n, &c->ga, false, &cd.o, &cd.w);
	ad_note(c, &cd.w);
	/* The MMU may shadow what this very walk reads before the access's
	 * stores happen (the fault that maps a page shadows its tables): a
	 * store into them may be cut out of the access already. */
	for (int k = 0; k < cd.w.n; k++)
		gm_mark_table(f->g, cd.w.e[k].gpa);
	add_cand(c, i, &cd);
	/* Shadow paging: if the shadow already maps the page, no guest walk
	 * happens, and nothing about the guest's table pages can fail. */
	if (f->shadow && cd.o.table) {
		gm_eval_current(f->g, v, fr->addr, fr->n, &c->ga, true, &cd.o, &cd.w);
		cd.o.walked = false;
		add_cand(c, i, &cd);
	}
	cd.current = false;
	cd.w.n = 0;
	for (unsigned int t = 0; t < gv->ntlb; t++) {
		if (!gm_tlbe_applies(f->g, v, &gv->tlb[t], fr->addr))
			continue;
		c->cached[i] = true;
		gm_eval_cached(f->g, v, &gv->tlb[t].x, fr->addr, fr->n, &c->ga, &cd.o);
		if (cd.o.k != GO_UNUSABLE)
			add_cand(c, i, &cd);
	}
	if (extra && fr->addr - extra->gva_base < extra->size) {
		gm_eval_cached(f->g, v, extra, fr->addr, fr->n, &c->ga, &cd.o);
		if (cd.o.k != GO_UNUSABLE)
			add_cand(c, i, &cd);
	}
}

static void record(struct actx *c, int exit_page)
{
	struct scen *s;
	int eg = exit_page < 0 ? INT_MAX : c->cur.group[exit_page];

	if (c->nsc == MAX_SCEN) {
		c->overflow = true;
		return;
	}
	s = &c->sc[c->nsc++];
	*s = c->cur;
	s->exit_page = exit_page;
	s->last_group = 0;
	for (int p = 0; p < c->k; p++) {
		bool done = exit_page < 0 || p < exit_page;

		s->stored[p] = c->write && (exit_page < 0 || (p < exit_page && c->cur.group[p] < eg));
		s->at[p] = 0;
		if (done && c->cur.c[p].o.k == GO_OK)
			model_find(c->f->m, c->cur.c[p].o.gpa, &s->at[p]);
		if (exit_page < 0 || p <= exit_page)
			s->last_group = c->cur.group[p];
	}
}

static uintptr_t gpa_hva(const struct fz *f, uint64_t gpa)
{
	uintptr_t hva = 0;

	model_find(f->m, gpa, &hva);
	return hva;
}

/* Could vmmu cut the access before page b?  Only beside a store it must
 * emulate: into a page it may shadow, or with CR0.WP = 0 under paging. */
static bool cut_ok(const struct actx *c, int b)
{
	if (c->paging && !(c->f->g->v[c->a->vcpu].s.cr0 & VMMU_CR0_WP))
		return true;
	for (int p = b - 1; p <= b; p++) {
		const struct cand *cd = p == b - 1 ? &c->cur.c[p] : NULL;

		if (cd && cd->o.k == GO_OK && gm_is_table(c->f->g, cd->o.gpa))
			return true;
		for (int j = 0; p == b && j < c->nl[p]; j++)
			if (c->lists[p][j].o.k == GO_OK && gm_is_table(c->f->g, c->lists[p][j].o.gpa))
				return true;
	}
	return false;
}

static void dfs(struct actx *c, int i, int group, int first);

/* The pieces [first, b) are stored; what follows is translated again. */
static void cut(struct actx *c, int b, int group, int first)
{
	static uint8_t saved[MAX_FRAGS][MAX_FRAGS][PAGE];
	static struct cand lists[MAX_FRAGS][MAX_FRAGS][MAX_CANDS];
	int nl[MAX_FRAGS], depth = group;
	struct gm_xlat old[MAX_FRAGS];
	bool have_old[MAX_FRAGS];

	if (depth >= MAX_FRAGS)
		return;
	for (int p = first; p < b; p++) {
		uintptr_t hva = gpa_hva(c->f, c->cur.c[p].o.gpa);

		memcpy(saved[depth][p], c->f->m->expect + (hva - c->f->m->arena), c->fr[p].n);
		memcpy(c->f->m->expect + (hva - c->f->m->arena), c->a->buf + c->fr[p].off, c->fr[p].n);
	}
	for (int p = b; p < c->k; p++) {
		memcpy(lists[depth][p], c->lists[p], sizeof(c->lists[p]));
		nl[p] = c->nl[p];
		have_old[p] = c->lists[p][0].current && c->lists[p][0].w.st == GW_OK;
		if (have_old[p]) {
			old[p] = c->lists[p][0].w.x;
			old[p].all_a = true;
		}
	}
	for (int p = b; p < c->k; p++)
		gen_cands(c, p, have_old[p] ? &old[p] : NULL);
	dfs(c, b, group + 1, b);
	for (int p = b; p < c->k; p++) {
		memcpy(c->lists[p], lists[depth][p], sizeof(c->lists[p]));
		c->nl[p] = nl[p];
	}
	for (int p = b - 1; p >= first; p--) {
		uintptr_t hva = gpa_hva(c->f, c->cur.c[p].o.gpa);

		memcpy(c->f->m->expect + (hva - c->f->m->arena), saved[depth][p], c->fr[p].n);
	}
}

static void dfs(struct actx *c, int i, int group, int first)
{
	/* c->k <= MAX_FRAGS; said here so that an optimizer that unrolls the
	 * recursion sees the bound too. */
	if (i >= MAX_FRAGS)
		return;
	for (int j = 0; j < c->nl[i]; j++) {
		const struct cand *cd = &c->lists[i][j];

		c->cur.c[i] = *cd;
		c->cur.group[i] = (uint8_t)group;
		if (cd->o.k == GO_BLOCKED) {
			c->blocked = true;
			continue;
		}
		if (cd->o.k != GO_OK) {
			record(c, i);
			continue;
		}
		if (i + 1 == c->k) {
			record(c, -1);
			continue;
		}
		dfs(c, i + 1, group, first);
		if (c->splits && cut_ok(c, i + 1))
			cut(c, i + 1, group, first);
	}
}

static bool exit_matches(const struct actx *c, const struct scen *s, int rc, const struct vmmu_exit *x)
{
	const struct gm_out *o;
	const struct frag *fr;

	if (s->exit_page < 0)
		return rc == 0;
	if (rc != VMMU_EXIT)
		return false;
	o = &s->c[s->exit_page].o;
	fr = &c->fr[s->exit_page];
	switch (o->k) {
	case GO_MMIO:
		return x->reason == VMMU_EXIT_MMIO && x->u.mmio.gpa == o->gpa && x->u.mmio.len == fr->n &&
		       x->u.mmio.offset == fr->off && x->u.mmio.is_write == c->write &&
		       x->u.mmio.readonly_slot == o->ro;
	case GO_MEMFAULT:
		return x->reason == VMMU_EXIT_MEMORY_FAULT && x->u.memory_fault.gpa == o->gpa &&
		       x->u.memory_fault.size == PAGE && x->u.memory_fault.error == VMMU_EFAULT;
	case GO_PF:
		return x->reason == VMMU_EXIT_GUEST_FAULT && x->u.guest_fault.vector == 14 &&
		       x->u.guest_fault.error_code == o->ec && x->u.guest_fault.addr == fr->addr;
	case GO_GP:
		/* CR2 means nothing for #GP. */
		return x->reason == VMMU_EXIT_GUEST_FAULT && x->u.guest_fault.vector == 13;
	default:
		return false;
	}
}

/* A/D bits of this access's walks that may have been set at hva. */
static uint8_t ad_mask(const struct actx *c, uintptr_t hva)
{
	for (int j = 0; j < c->nad; j++)
		if (c->ad[j].hva == hva)
			return c->ad[j].bits;
	return 0;
}

static bool byte_ok(uint8_t have, uint8_t want, uint8_t mask)
{
	/* A and D only ever go from 0 to 1. */
	return !((have ^ want) & ~mask) && !(want & mask & ~have);
}

struct touch {
	uintptr_t page[MAX_TOUCH];
	int n;
};

static void touch_add(struct touch *t, uintptr_t hva)
{
	uintptr_t pg = hva & ~(uintptr_t)(PAGE - 1);

	for (int i = 0; i < t->n; i++)
		if (t->page[i] == pg)
			return;
	if (t->n < MAX_TOUCH)
		t->page[t->n++] = pg;
}

/* Where scenario s stored page p's bytes, or 0. */
static uintptr_t stored_at(const struct fz *f, const struct scen *s, int p)
{
	(void)f;
	return s->stored[p] ? s->at[p] : 0;
}

/* Does guest memory hold what scenario s leaves (on the touched pages)? */
static bool memory_matches(const struct actx *c, const struct scen *s, const struct touch *t, uintptr_t *bad)
{
	static uint8_t want[PAGE], mask[PAGE];
	const struct model *m = c->f->m;

	for (int i = 0; i < t->n; i++) {
		uintptr_t pg = t->page[i];
		const uint8_t *have = (const uint8_t *)pg;

		if (model_prot_at(m, pg) == VMMU_HOST_NONE)
			continue;
		memcpy(want, m->expect + (pg - m->arena), PAGE);
		memset(mask, 0, PAGE);
		/* The A/D bits this access's walks may have set... */
		for (int j = 0; j < c->nad; j++)
			if (c->ad[j].hva - pg < PAGE)
				mask[c->ad[j].hva - pg] = c->ad[j].bits;
		for (int p = 0; p < c->k; p++) {
			uintptr_t at = stored_at(c->f, s, p);

			if (!at || at >= pg + PAGE || at + c->fr[p].n <= pg)
				continue;
			uintptr_t lo = at > pg ? at : pg, hi = at + c->fr[p].n < pg + PAGE ? at + c->fr[p].n : pg + PAGE;

			memcpy(want + (lo - pg), c->a->buf + c->fr[p].off + (lo - at), hi - lo);
			/* ...but a store wins over the walks before it; only a
			 * later piece's walk may set A/D over it. */
			if (s->group[p] >= s->last_group)
				memset(mask + (lo - pg), 0, hi - lo);
		}
		if (!memcmp(have, want, PAGE))
			continue;
		for (size_t b = 0; b < PAGE; b++) {
			if (!byte_ok(have[b], want[b], mask[b])) {
				*bad = pg + b;
				return false;
			}
		}
	}
	return true;
}

static bool read_matches(const struct actx *c, const struct scen *s, const uint8_t *before)
{
	const struct model *m = c->f->m;

	if (s->exit_page >= 0)
		return !memcmp(c->a->buf, before, c->a->len);	/* nothing moves on an exit */
	for (int p = 0; p < c->k; p++) {
		uintptr_t hva = s->at[p];
		const uint8_t *got = c->a->buf + c->fr[p].off, *exp = m->expect + (hva - m->arena);

		if (!memcmp(got, exp, c->fr[p].n))
			continue;
		for (size_t b = 0; b < c->fr[p].n; b++)
			if (!byte_ok(got[b], exp[b], ad_mask(c, hva + b)))
				return false;
	}
	return true;
}

static void describe(const struct actx *c, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = 0;
	for (int p = 0; p < c->k && o < len; p++) {
		o += (size_t)snprintf(buf + o, len - o, "\n    page %d (%#" PRIx64 ", %zu bytes)%s:", p, c->fr[p].addr,
				      c->fr[p].n, c->cached[p] ? " cached" : "");
		for (int j = 0; j < c->nl[p] && o < len; j++) {
			const struct cand *cd = &c->lists[p][j];

			o += (size_t)snprintf(buf + o, len - o, " [%s%s %s gpa %#" PRIx64 " ec %#x%s]",
					      cd->current ? "walk" : "tlb", cd->o.table ? "/table" : "",
					      okind_name(cd->o.k), cd->o.gpa, cd->o.ec, cd->o.ro ? " ro" : "");
		}
	}
}

static void describe_exit(int rc, const struct vmmu_exit *x, char *buf, size_t len)
{
	if (rc != VMMU_EXIT) {
		snprintf(buf, len, "rc %d", rc);
		return;
	}
	switch (x->reason) {
	case VMMU_EXIT_MMIO:
		snprintf(buf, len, "MMIO gpa %#" PRIx64 " len %u offset %u write %u ro %u", x->u.mmio.gpa,
			 x->u.mmio.len, x->u.mmio.offset, x->u.mmio.is_write, x->u.mmio.readonly_slot);
		break;
	case VMMU_EXIT_MEMORY_FAULT:
		snprintf(buf, len, "memory fault gpa %#" PRIx64 " error %d", x->u.memory_fault.gpa,
			 x->u.memory_fault.error);
		break;
	case VMMU_EXIT_GUEST_FAULT:
		snprintf(buf, len, "guest fault vector %u ec %#x addr %#" PRIx64, x->u.guest_fault.vector,
			 x->u.guest_fault.error_code, x->u.guest_fault.addr);
		break;
	default:
		snprintf(buf, len, "exit reason %u", x->reason);
		break;
	}
}

static bool range_refused(const struct fz *f, const struct fz_acc *a)
{
	enum gm_mode mode = gm_mode_of(&f->g->v[a->vcpu].s);
	uint64_t limit;

	if (a->phys)
		limit = 1ULL << f->maxphyaddr;
	else if (mode == GM_OFF || mode == GM_32 || mode == GM_PAE)
		limit = 1ULL << 32;	/* linear addresses have 32 bits */
	else
		return a->len > ~a->addr;
	return a->addr >= limit || a->len > limit - a->addr;
}

/* Every scenario of the access, with the model as it is now (in threaded
 * mode: one version of the host thread's slot). */
static void enumerate(struct actx *c)
{
	c->nsc = 0;
	c->overflow = c->blocked = false;
	c->nad = 0;
	for (int p = 0; p < c->k; p++) {
		c->cached[p] = false;
		gen_cands(c, p, NULL);
	}
	memset(&c->cur, 0, sizeof(c->cur));
	dfs(c, 0, 0, 0);
}

void fz_full_flush(struct fz *f, unsigned int v)
{
	int want = gm_invpcid(f->g, v, VMMU_INVPCID_ALL_GLOBAL, 0, 0);
	int rc = vmmu_vcpu_invpcid(f->vcpu[v], VMMU_INVPCID_ALL_GLOBAL, 0, 0);

	TRACE(f, "vCPU %u INVPCID all (a full flush): rc %d", v, rc);
	if (rc != want)
		fz_fail(f, "vCPU %u INVPCID type 2: rc %d, expected %d", v, rc, want);
}

enum fz_acc_result fz_access(struct fz *f, const struct fz_acc *a)
{
	static struct actx ctx;
	static uint8_t before[MAX_ACCESS];
	static struct touch t;
	struct actx *c = &ctx;
	enum gm_mode mode = gm_mode_of(&f->g->v[a->vcpu].s);
	unsigned int flags = a->type | (a->phys ? VMMU_ACCESS_PHYS : 0) | (a->implicit ? VMMU_ACCESS_IMPLICIT : 0);
	struct vmmu_exit x;
	char cands[2048], got[160];
	const struct scen *s = NULL;
	uintptr_t bad = 0;
	unsigned int v0 = 0, v1 = 0, matched = 0;
	uint64_t st0 = 0, st1 = 0;
	int rc;

	memset(&x, 0, sizeof(x));
	if (range_refused(f, a)) {
		rc = vmmu_vcpu_access(f->vcpu[a->vcpu], a->addr, a->buf, a->len, flags, &x);
		TRACE(f, "vCPU %u access %#" PRIx64 "+%zu type %u%s: rc %d, expected ERANGE", a->vcpu, a->addr, a->len,
		      a->type, a->phys ? " phys" : "", rc);
		if (rc != VMMU_ERANGE)
			fz_fail(f, "access %#" PRIx64 "+%zu%s: rc %d, expected VMMU_ERANGE", a->addr, a->len,
				a->phys ? " (phys)" : "", rc);
		return FZ_REFUSED;
	}
	c->f = f;
	c->a = a;
	c->write = a->type == VMMU_ACCESS_WRITE;
	c->ga = (struct gm_access){ c->write, a->type == VMMU_ACCESS_FETCH, a->implicit };
	c->paging = !a->phys && mode != GM_OFF;
	c->k = 0;
	for (size_t off = 0, n; off < a->len; off += n) {
		n = PAGE - ((a->addr + off) & (PAGE - 1));
		if (n > a->len - off)
			n = a->len - off;
		c->fr[c->k++] = (struct frag){ a->addr + off, off, n };
	}
	c->splits = f->shadow && !a->phys && c->write && c->k > 1;
	if (f->host_running) {
		v0 = host_window_begin(f, &st0);
		host_install(f, v0);
	}
	enumerate(c);
	if (c->overflow && c->paging) {
		/* Too many stale translations to enumerate: the guest flushes. */
		fz_full_flush(f, a->vcpu);
		enumerate(c);
	}
	/*
	 * Threaded mode: a guest table in the host thread's slot would make
	 * translations change at moments the model cannot know; and with an
	 * invalidation of ours open, an access to that slot may wait for ours
	 * (the hull grows over both).
	 */
	for (int p = 0; f->host_running && p < c->k; p++) {
		const struct gm_walk *w = &c->lists[p][0].w;

		if (c->lists[p][0].current && w->st == GW_NOTRAM && host_gpa(w->bad_gpa))
			return FZ_SKIPPED;
		for (int i = 0; c->lists[p][0].current && i < w->n; i++)
			if (host_gpa(w->e[i].gpa))
				return FZ_SKIPPED;
		for (int j = 0; f->m->n_inval && j < c->nl[p]; j++)
			if (c->lists[p][j].o.k != GO_PF && c->lists[p][j].o.k != GO_GP && host_gpa(c->lists[p][j].o.gpa))
				return FZ_SKIPPED;
	}
	cands[0] = 0;
	if (fz_trace)
		describe(c, cands, sizeof(cands));
	if (c->blocked || c->overflow) {
		TRACE(f, "vCPU %u %s %#" PRIx64 "+%zu: skipped (%s)%s", a->vcpu, c->write ? "write" : "read", a->addr,
		      a->len, c->blocked ? "may wait for an open invalidation" : "too many scenarios", cands);
		return FZ_SKIPPED;
	}
	TRACE(f, "vCPU %u access %#" PRIx64 "+%zu type %u%s: issuing (a hang here waits in vmmu)", a->vcpu, a->addr,
	      a->len, a->type, a->phys ? " phys" : "");
	memcpy(before, a->buf, a->len);
	rc = vmmu_vcpu_access(f->vcpu[a->vcpu], a->addr, a->buf, a->len, flags, &x);
	if (f->host_running)
		v1 = host_window_end(f, &st1);
	describe_exit(rc, &x, got, sizeof(got));
	if (f->host_running)
		TRACE(f, "host slot versions %u..%u, epochs %" PRIu64 "..%" PRIu64, v0, v1, st0, st1);
	TRACE(f, "vCPU %u %s%s %#" PRIx64 "+%zu%s: %s; %d scenario(s)%s", a->vcpu,
	      a->type == VMMU_ACCESS_FETCH ? "fetch" : c->write ? "write" : "read", a->implicit ? " (implicit)" : "",
	      a->addr, a->len, a->phys ? " phys" : c->paging ? "" : " (paging off)", rc == 0 ? "done" : got, c->nsc,
	      cands);
	f->n_checked++;

	/* Each version of the host slot the access may have seen, in turn; a
	 * scenario of one of them must match. */
	for (unsigned int v = v0; !s && v <= v1; v++) {
		if (v != v0) {
			host_install(f, v);
			enumerate(c);
		}
		t.n = 0;
		for (int i = 0; i < c->nad; i++)
			touch_add(&t, c->ad[i].hva);
		for (int i = 0; i < c->nsc; i++)
			for (int p = 0; p < c->k; p++)
				if (stored_at(f, &c->sc[i], p))
					touch_add(&t, stored_at(f, &c->sc[i], p));
		for (int i = 0; i < c->nsc && !s; i++) {
			const struct scen *cand = &c->sc[i];

			if (!exit_matches(c, cand, rc, &x))
				continue;
			if (!c->write && !read_matches(c, cand, before))
				continue;
			if (!memory_matches(c, cand, &t, &bad))
				continue;
			s = cand;
			matched = v;
		}
	}
	if (!s) {
		if (v1 != v0) {
			host_install(f, v0);
			enumerate(c);
		}
		describe(c, cands, sizeof(cands));
	}
	if (!s) {
		char where[96] = "";

		if (bad)
			snprintf(where, sizeof(where), "; e.g. arena offset %#llx holds %#x",
				 (unsigned long long)(bad - f->m->arena), *(const uint8_t *)bad);
		fz_fail(f, "vCPU %u %s %#" PRIx64 "+%zu%s: vmmu says %s, which no scenario allows%s; candidates%s:%s",
			a->vcpu, a->type == VMMU_ACCESS_FETCH ? "fetch" : c->write ? "write" : "read", a->addr, a->len,
			a->phys ? " (phys)" : "", got, where,
			v1 != v0 ? " (of the first host slot version it may have seen)" : "", cands);
	}

	/* A page walked with nothing cached for it: the walk set A/D (SDM 4.8). */
	for (int p = 0; p < c->k && (s->exit_page < 0 || p <= s->exit_page); p++) {
		const struct cand *cd = &s->c[p];

		if (!cd->current || !cd->o.walked || c->cached[p] || cd->o.k != GO_OK)
			continue;
		for (int i = 0; i < cd->w.n; i++) {
			uint8_t need = 0x20 | ((cd->w.e[i].leaf && c->write) ? 0x40 : 0);
			uintptr_t hva = cd->w.e[i].hva;
			bool overwritten = false;

			for (int q = 0; q < c->k; q++) {
				uintptr_t at = stored_at(f, s, q);

				overwritten = overwritten || (at && hva >= at && hva < at + c->fr[q].n);
			}
			if (!overwritten && model_prot_at(f->m, hva) != VMMU_HOST_NONE &&
			    (*(const uint8_t *)hva & need) != need)
				fz_fail(f, "%s of gva %#" PRIx64 " walked the tables with nothing cached, but the level-%d "
					"entry at gpa %#" PRIx64 " is %#" PRIx64 " in memory: %s not set",
					c->write ? "write" : "read", c->fr[p].addr, cd->w.e[i].level, cd->w.e[i].gpa,
					*(const uint64_t *)(hva & ~(uintptr_t)7), need & 0x40 ? "A/D" : "A");
		}
	}

	/* The model takes what happened: stores, A/D bits, dirty pages. */
	for (int p = 0; p < c->k; p++) {
		if (!stored_at(f, s, p))
			continue;
		if (f->host_running && host_gpa(s->c[p].o.gpa))
			host_note_write(f, matched, s->c[p].o.gpa, st0, st1);
		else
			model_mark_dirty(f->m, s->c[p].o.gpa);
	}
	if (s->last_group > 0)
		f->n_split++;
	for (int i = 0; i < c->nad; i++)
		if (model_prot_at(f->m, c->ad[i].hva) != VMMU_HOST_NONE &&
		    *(const uint8_t *)c->ad[i].hva != f->m->expect[c->ad[i].hva - f->m->arena]) {
			TRACE(f, "  A/D set in the entry at gpa %#" PRIx64 ": %#x -> %#x", c->ad[i].gpa,
			      f->m->expect[c->ad[i].hva - f->m->arena], *(const uint8_t *)c->ad[i].hva);
			model_mark_dirty(f->m, c->ad[i].gpa);
		}
	for (int i = 0; i < t.n; i++) {
		uintptr_t pg = t.page[i];

		if (model_prot_at(f->m, pg) != VMMU_HOST_NONE && memcmp((const void *)pg, f->m->expect + (pg - f->m->arena), PAGE))
			gm_mem_write(f->g, pg, (const void *)pg, PAGE);
	}
	/* What the walks read, the MMU may shadow; what they found, the TLB may cache. */
	for (int p = 0; p < c->k && (s->exit_page < 0 || p <= s->exit_page); p++) {
		const struct cand *cd = &s->c[p];

		for (int j = 0; j < c->nl[p]; j++)
			for (int i = 0; i < c->lists[p][j].w.n; i++)
				gm_mark_table(f->g, c->lists[p][j].w.e[i].gpa);
		if (!cd->current)
			f->n_stale_used++;
		if (cd->current && cd->o.walked) {
			struct gm_xlat xl = cd->w.x;

			xl.all_a = true;
			xl.d = xl.d || (c->write && cd->o.k == GO_OK);
			gm_tlb_add(f->g, a->vcpu, &xl);
		}
	}
	if (f->host_running) {
		uint64_t ignored;

		/* Leave the model at the newest version known to be in effect. */
		host_install(f, host_window_begin(f, &ignored));
	}
	return s->exit_page < 0 ? FZ_DONE : FZ_EXIT;
}
