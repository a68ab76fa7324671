/* SPDX-License-Identifier: MIT */
/*
 * The guest-paging reference model (see gmodel.h).  Plain on purpose:
 * linear scans, a walk per cached page, nothing clever, so that the model
 * is easy to check against the SDM rather than fast.
 */
#include "gmodel.h"

#include <stdlib.h>
#include <string.h>

#define PAGE MODEL_PAGE
#define BITS(lo, hi) ((~0ULL >> (63 - (hi))) & ~((1ULL << (lo)) - 1))

const struct gm_window gm_windows[GM_NWIN] = {
	{ 0x0000000000400000ULL, 8 },	/* low memory, one 4M / 2M region */
	{ 0x0000000000600000ULL, 4 },	/* the same 4M region, the next 2M one */
	{ 0x0000000040000000ULL, 4 },	/* 1G boundary, PAE quarter 1 */
	{ 0x00000000401ff000ULL, 2 },	/* across a 2M boundary */
	{ 0x00000000c0000000ULL, 4 },	/* PAE quarter 3 */
	{ 0x00000000ffffc000ULL, 4 },	/* the top of 4G (32-bit: beyond is ERANGE) */
	{ 0x00007fffffffe000ULL, 2 },	/* the last canonical 4-level pages ... */
	{ 0x0000800000000000ULL, 2 },	/* ... and the next ones: 5-level only */
	{ 0xffff800000000000ULL, 4 },	/* the upper half */
	{ 0xff00000000000000ULL, 2 },	/* upper half of 5-level, not 4-level */
	{ 0xffffffffffffe000ULL, 2 },	/* the top of the address space */
};

uint64_t gm_page_gva(unsigned int i)
{
	for (unsigned int w = 0; w < GM_NWIN; w++) {
		if (i < gm_windows[w].npages)
			return gm_windows[w].base + (uint64_t)i * PAGE;
		i -= gm_windows[w].npages;
	}
	return 0;
}

int gm_page_index(uint64_t gva)
{
	int base = 0;

	for (unsigned int w = 0; w < GM_NWIN; w++) {
		uint64_t off = gva - gm_windows[w].base;

		if (gva >= gm_windows[w].base && off < (uint64_t)gm_windows[w].npages * PAGE)
			return base + (int)(off / PAGE);
		base += (int)gm_windows[w].npages;
	}
	return -1;
}

unsigned int gm_page_window(uint64_t gva)
{
	for (unsigned int w = 0; w < GM_NWIN; w++)
		if (gva >= gm_windows[w].base && gva - gm_windows[w].base < (uint64_t)gm_windows[w].npages * PAGE)
			return w;
	return 0;
}

enum gm_mode gm_mode_of(const struct vmmu_cpu_state *s)
{
	if (!(s->cr0 & VMMU_CR0_PG))
		return GM_OFF;
	if (!(s->cr4 & VMMU_CR4_PAE))
		return GM_32;
	if (!(s->efer & VMMU_EFER_LMA))
		return GM_PAE;
	return (s->cr4 & VMMU_CR4_LA57) ? GM_5L : GM_4L;
}

unsigned int gm_pcid_of(const struct vmmu_cpu_state *s)
{
	return (s->cr4 & VMMU_CR4_PCIDE) ? (unsigned int)(s->cr3 & 0xfff) : 0;
}

bool gm_canonical(enum gm_mode mode, uint64_t gva)
{
	unsigned int bits = mode == GM_5L ? 57 : 48;

	if (mode != GM_4L && mode != GM_5L)
		return true;
	return (uint64_t)((int64_t)(gva << (64 - bits)) >> (64 - bits)) == gva;
}

/* ---- set-up ----------------------------------------------------------------------- */

int gm_init(struct gm *g, struct model *m)
{
	memset(g, 0, sizeof(*g));
	g->m = m;
	g->depcnt = calloc(m->arena_len / PAGE, sizeof(*g->depcnt));
	g->table_page = calloc(GM_TABLE_PAGES, 1);
	return g->depcnt && g->table_page ? 0 : -1;
}

void gm_free(struct gm *g)
{
	free(g->depcnt);
	free(g->table_page);
	g->depcnt = NULL;
	g->table_page = NULL;
}

void gm_reset(struct gm *g, bool shadow, bool la57_ok, unsigned int maxphyaddr)
{
	g->shadow = shadow;
	g->la57_ok = la57_ok;
	g->maxphyaddr = maxphyaddr;
	memset(g->v, 0, sizeof(g->v));
	for (unsigned int i = 0; i < GM_VCPUS; i++)
		g->v[i].s.cr0 = VMMU_CR0_PE;	/* what vmmu_vcpu_create starts with */
	memset(g->depcnt, 0, g->m->arena_len / PAGE * sizeof(*g->depcnt));
	memset(g->table_page, 0, GM_TABLE_PAGES);
}

void gm_mark_table(struct gm *g, uint64_t gpa)
{
	if (gpa / PAGE < GM_TABLE_PAGES)
		g->table_page[gpa / PAGE] = 1;
}

bool gm_is_table(const struct gm *g, uint64_t gpa)
{
	return gpa / PAGE < GM_TABLE_PAGES && g->table_page[gpa / PAGE];
}

/* ---- walks ------------------------------------------------------------------------- */

void gm_ref_cpu(const struct gm *g, const struct vmmu_cpu_state *s, struct ref_cpu *rc)
{
	static const enum ref_paging paging[] = {
		[GM_OFF] = REF_PAGING_32, [GM_32] = REF_PAGING_32, [GM_PAE] = REF_PAGING_PAE,
		[GM_4L] = REF_PAGING_4LEVEL, [GM_5L] = REF_PAGING_5LEVEL,
	};

	memset(rc, 0, sizeof(*rc));
	rc->paging = paging[gm_mode_of(s)];
	rc->maxphyaddr = g->maxphyaddr;
	rc->pse = s->cr4 & VMMU_CR4_PSE;
	rc->wp = s->cr0 & VMMU_CR0_WP;
	rc->smep = s->cr4 & VMMU_CR4_SMEP;
	rc->smap = s->cr4 & VMMU_CR4_SMAP;
	rc->pke = s->cr4 & VMMU_CR4_PKE;
	rc->nxe = s->efer & VMMU_EFER_NXE;
	rc->ac = s->rflags & VMMU_RFLAGS_AC;
	rc->cpl = s->cpl;
	rc->pkru = s->pkru;
}

static uint64_t read_expect(const struct model *m, uintptr_t hva, unsigned int size)
{
	uint64_t v = 0;

	memcpy(&v, m->expect + (hva - m->arena), size);	/* x86 is little-endian */
	return v;
}

void gm_walk(const struct gm *g, const struct vmmu_cpu_state *s, uint64_t cr3, uint64_t gva, struct gm_walk *w)
{
	enum gm_mode mode = gm_mode_of(s);
	struct ref_cpu rc;
	unsigned int esz, bpl;
	uint64_t table, addr_mask = BITS(12, g->maxphyaddr - 1), raw = 0;
	int level, top;
	bool all_a = true;

	memset(w, 0, sizeof(*w));
	gm_ref_cpu(g, s, &rc);
	if (!gm_canonical(mode, gva)) {
		w->st = GW_GP;
		return;
	}
	top = ref_top_level(rc.paging);
	esz = ref_entry_bytes(rc.paging);
	bpl = esz == 4 ? 10 : 9;
	table = mode == GM_32 ? cr3 & 0xfffff000ULL : cr3 & addr_mask;
	w->x.r.user_addr = w->x.r.writable = true;
	for (level = top; level >= 1; level--) {
		unsigned int shift = 12 + bpl * (unsigned int)(level - 1);
		uint64_t gpa;
		uintptr_t hva;
		struct ref_pte e;
		struct gm_ent *ent;

		if (mode == GM_PAE && level == 3) {
			/* SDM 4.4.1: the PDPTE registers, not memory; no rights, no A. */
			raw = s->pdptrs[(gva >> 30) & 3];
			if (!(raw & 1)) {
				w->st = GW_NP;
				return;
			}
			table = raw & addr_mask;
			continue;
		}
		gpa = table + ((gva >> shift) & ((1ULL << bpl) - 1)) * esz;
		if (!model_find(g->m, gpa, &hva)) {
			w->st = GW_NOTRAM;
			w->bad_gpa = gpa;
			return;
		}
		raw = read_expect(g->m, hva, esz);
		ent = &w->e[w->n++];
		*ent = (struct gm_ent){ gpa, hva, esz, raw, level, false };
		e = ref_decode(&rc, level, raw);
		if (!e.p) {
			w->st = GW_NP;
			return;
		}
		if (e.rsvd) {
			w->st = GW_RSVD;
			return;
		}
		w->x.r.user_addr = w->x.r.user_addr && e.u;
		w->x.r.writable = w->x.r.writable && e.w;
		w->x.r.xd = w->x.r.xd || e.xd;
		all_a = all_a && e.a;
		if (ref_is_leaf(&rc, level, e.ps)) {
			ent->leaf = true;
			w->x.size = ref_page_size(&rc, level);
			w->x.gva_base = gva & ~(w->x.size - 1);
			w->x.frame = ref_leaf_frame(&rc, level, raw);
			if (rc.paging == REF_PAGING_4LEVEL || rc.paging == REF_PAGING_5LEVEL)
				w->x.r.pkey = e.pkey;
			w->x.g = raw & (1ULL << 8);
			w->x.d = e.d;
			w->x.all_a = all_a;
			w->st = GW_OK;
			return;
		}
		table = mode == GM_32 ? raw & 0xfffff000ULL : raw & addr_mask;
	}
	w->st = GW_NP;	/* not reached: level 1 is always a leaf */
}

/* ---- outcomes ---------------------------------------------------------------------- */

static void ref_acc(const struct gm_access *a, struct ref_access *ra)
{
	ra->write = a->write;
	ra->fetch = a->fetch;
	ra->implicit = a->implicit;
}

void gm_eval_phys(const struct gm *g, uint64_t gpa, size_t n, bool write, struct gm_out *o)
{
	struct model_result res;

	memset(o, 0, sizeof(*o));
	model_access(g->m, gpa, n, write, &res);
	switch (res.outcome) {
	case MODEL_OK:
		o->k = GO_OK;
		o->gpa = gpa;
		break;
	case MODEL_MMIO:
		o->k = GO_MMIO;
		o->gpa = res.gpa;
		o->ro = res.readonly_slot;
		break;
	case MODEL_MEMFAULT:
		o->k = GO_MEMFAULT;
		o->gpa = res.gpa;
		break;
	case MODEL_BLOCKED:
		o->k = GO_BLOCKED;
		break;
	}
}

/* Host side of a guest-table page the walk must read (TDP: through the TDP,
 * like any guest-physical access) or update (A/D). */
static bool table_host_fails(const struct gm *g, uint64_t gpa, bool update, struct gm_out *o)
{
	uintptr_t hva;
	const struct model_slot *s = model_find(g->m, gpa, &hva);
	unsigned int prot = model_prot_at(g->m, hva);

	if (!s)
		return false;	/* not RAM: the walk itself says so */
	if (!g->shadow && model_hva_may_wait(g->m, hva)) {
		o->k = GO_BLOCKED;
		return true;
	}
	if (g->m->released || prot == VMMU_HOST_NONE || (update && prot == VMMU_HOST_RO) ||
	    (update && g->shadow && (s->flags & VMMU_MEM_READONLY))) {
		o->k = GO_MEMFAULT;
		o->gpa = gpa & ~(PAGE - 1);
		o->table = true;
		return true;
	}
	return false;
}

void gm_eval_current(const struct gm *g, unsigned int v, uint64_t gva, size_t n, const struct gm_access *a,
		     bool under_spte, struct gm_out *o, struct gm_walk *w)
{
	const struct vmmu_cpu_state *s = &g->v[v].s;
	struct ref_cpu rc;
	struct ref_access ra;
	uint32_t ec;

	memset(o, 0, sizeof(*o));
	gm_ref_cpu(g, s, &rc);
	ref_acc(a, &ra);
	gm_walk(g, s, s->cr3, gva, w);
	if (w->st == GW_GP) {
		o->k = GO_GP;
		return;
	}
	/*
	 * The walk reads the tables top down and stops at the first failure:
	 * with TDP each read is a guest-physical access (it may wait for an
	 * invalidation, or find the host page gone); under shadow paging the
	 * MMU reads guest memory itself.
	 */
	for (int i = 0; i < w->n && !under_spte; i++) {
		uintptr_t hva;

		if (!g->shadow) {
			if (table_host_fails(g, w->e[i].gpa, false, o))
				return;
		} else if (model_find(g->m, w->e[i].gpa, &hva) && model_prot_at(g->m, hva) == VMMU_HOST_NONE) {
			/* A table the host took away cannot be read: a memory
			 * fault, as for any access to it (vmmu.h). */
			o->k = GO_MEMFAULT;
			o->gpa = w->e[i].gpa & ~(PAGE - 1);
			o->table = true;
			return;
		}
	}
	if (w->st != GW_OK) {
		/* Not present, reserved bits, or a table outside RAM (read as not
		 * present, as KVM's walker does). */
		o->k = GO_PF;
		o->ec = ref_pf_error_code(&rc, &ra, w->st == GW_RSVD, w->st == GW_RSVD, false);
		return;
	}
	ec = ref_permission_fault(&rc, &w->x.r, &ra);
	if (ec) {
		o->k = GO_PF;
		o->ec = ec;
		return;
	}
	/* SDM 4.8: A in every entry used, D in the leaf for a write, each a
	 * store the host must allow; top down, the first one that fails ends
	 * the access. */
	for (int i = 0; i < w->n && !under_spte; i++) {
		uint64_t need = 1ULL << 5;
		uintptr_t hva;
		const struct model_slot *sl;

		if (w->e[i].leaf && a->write)
			need |= 1ULL << 6;
		if ((w->e[i].raw & need) == need)
			continue;
		sl = model_find(g->m, w->e[i].gpa, &hva);
		if (!g->shadow && sl && (sl->flags & VMMU_MEM_READONLY)) {
			/* The TDP store is an MMIO write, which a walk takes for a
			 * table outside RAM: a not-present fault. */
			o->k = GO_PF;
			o->ec = ref_pf_error_code(&rc, &ra, false, false, false);
			o->table = true;
			return;
		}
		if (table_host_fails(g, w->e[i].gpa, true, o))
			return;
	}
	gm_eval_phys(g, w->x.frame + (gva - w->x.gva_base), n, a->write, o);
	o->walked = !under_spte;
}

void gm_eval_cached(const struct gm *g, unsigned int v, const struct gm_xlat *x, uint64_t gva, size_t n,
		    const struct gm_access *a, struct gm_out *o)
{
	struct ref_cpu rc;
	struct ref_access ra;
	uint32_t ec;

	memset(o, 0, sizeof(*o));
	gm_ref_cpu(g, &g->v[v].s, &rc);
	ref_acc(a, &ra);
	ec = ref_permission_fault(&rc, &x->r, &ra);
	if (ec) {
		o->k = GO_PF;
		o->ec = ec;
		return;
	}
	if (a->write && !x->d) {
		o->k = GO_UNUSABLE;	/* the D update needs a walk (vmmu walks again) */
		return;
	}
	gm_eval_phys(g, x->frame + (gva - x->gva_base), n, a->write, o);
}

/* ---- the TLB set ------------------------------------------------------------------ */

static bool xlat_eq(const struct gm_xlat *a, const struct gm_xlat *b)
{
	return a->gva_base == b->gva_base && a->size == b->size && a->frame == b->frame &&
	       a->r.user_addr == b->r.user_addr && a->r.writable == b->r.writable && a->r.xd == b->r.xd &&
	       a->r.pkey == b->r.pkey && a->d == b->d;
}

static void tlb_put(struct gm_vcpu *gv, const struct gm_xlat *x, unsigned int pcid, bool global)
{
	if (!x->all_a)
		return;	/* SDM 4.10.2.3: nothing is cached unless A is set everywhere */
	for (unsigned int i = 0; i < gv->ntlb; i++)
		if (gv->tlb[i].global == global && (global || gv->tlb[i].pcid == pcid) && xlat_eq(&gv->tlb[i].x, x))
			return;
	/* Never drop one (the model would be stricter than the TLB); the
	 * fuzzer has the guest flush long before this fills. */
	if (gv->ntlb < GM_TLB_MAX)
		gv->tlb[gv->ntlb++] = (struct gm_tlbe){ *x, (uint16_t)pcid, global };
}

bool gm_tlbe_applies(const struct gm *g, unsigned int v, const struct gm_tlbe *t, uint64_t gva)
{
	const struct vmmu_cpu_state *s = &g->v[v].s;

	if (gm_mode_of(s) == GM_OFF)
		return false;
	if (gva - t->x.gva_base >= t->x.size)
		return false;
	return t->global || t->pcid == gm_pcid_of(s);
}

void gm_tlb_add(struct gm *g, unsigned int v, const struct gm_xlat *x)
{
	const struct vmmu_cpu_state *s = &g->v[v].s;

	tlb_put(&g->v[v], x, gm_pcid_of(s), x->g && (s->cr4 & VMMU_CR4_PGE));
}

enum { DROP_ALL, DROP_NONGLOBAL, DROP_PCID, DROP_PAGE, DROP_PCID_PAGE };

static void tlb_drop(struct gm_vcpu *gv, int how, unsigned int pcid, uint64_t gva)
{
	unsigned int k = 0;

	for (unsigned int i = 0; i < gv->ntlb; i++) {
		const struct gm_tlbe *t = &gv->tlb[i];
		bool covers = gva - t->x.gva_base < t->x.size, drop;

		switch (how) {
		case DROP_ALL: drop = true; break;
		case DROP_NONGLOBAL: drop = !t->global; break;
		case DROP_PCID: drop = !t->global && t->pcid == pcid; break;
		/* INVLPG: the page's entries for the current PCID, and global ones. */
		case DROP_PAGE: drop = covers && (t->global || t->pcid == pcid); break;
		default: drop = covers && !t->global && t->pcid == pcid; break;
		}
		if (!drop)
			gv->tlb[k++] = *t;
	}
	gv->ntlb = k;
}

/* ---- the cache of current translations ---------------------------------------------- */

static void cache_clear(struct gm *g, struct gm_cache *c)
{
	for (int i = 0; i < c->ndeps; i++)
		g->depcnt[c->deps[i]]--;
	memset(c, 0, sizeof(*c));
}

/* The root PCID p of vCPU v stands for now, if any. */
static bool pcid_root(const struct gm *g, unsigned int v, unsigned int p, uint64_t *cr3)
{
	const struct gm_vcpu *gv = &g->v[v];
	enum gm_mode mode = gm_mode_of(&gv->s);

	if (mode == GM_OFF)
		return false;
	if (p == gm_pcid_of(&gv->s)) {
		*cr3 = gv->s.cr3;
		return true;
	}
	/* Other PCIDs hold translations only with PCIDE (long mode). */
	if (!(gv->s.cr4 & VMMU_CR4_PCIDE) || !gv->root_set[p])
		return false;
	*cr3 = gv->root_cr3[p];
	return true;
}

static void cache_fill(struct gm *g, unsigned int v, unsigned int p, unsigned int i)
{
	struct gm_cache *c = &g->v[v].cache[p][i];
	const struct vmmu_cpu_state *s = &g->v[v].s;
	enum gm_mode mode = gm_mode_of(s);
	uint64_t gva = gm_page_gva(i), cr3;
	struct gm_walk w;

	cache_clear(g, c);
	if (!pcid_root(g, v, p, &cr3) || ((mode == GM_32 || mode == GM_PAE) && (gva >> 32)))
		return;
	c->on = true;
	gm_walk(g, s, cr3, gva, &w);
	for (int k = 0; k < w.n; k++) {
		uint32_t pg = (uint32_t)((w.e[k].hva - g->m->arena) / PAGE);
		bool dup = false;

		for (int j = 0; j < c->ndeps; j++)
			dup = dup || c->deps[j] == pg;
		if (!dup) {
			c->deps[c->ndeps++] = pg;
			g->depcnt[pg]++;
		}
	}
	if (w.st == GW_OK) {
		c->ok = true;
		c->x = w.x;
	}
}

static void cache_materialize(struct gm *g, unsigned int v, unsigned int p, unsigned int i)
{
	const struct gm_cache *c = &g->v[v].cache[p][i];
	const struct vmmu_cpu_state *s = &g->v[v].s;

	if (!c->on || !c->ok)
		return;
	/* Only the current PCID can have cached a global translation. */
	tlb_put(&g->v[v], &c->x, p, p == gm_pcid_of(s) && c->x.g && (s->cr4 & VMMU_CR4_PGE));
}

static void vcpu_materialize(struct gm *g, unsigned int v)
{
	for (unsigned int p = 0; p < GM_PCIDS; p++)
		for (unsigned int i = 0; i < GM_NPAGES; i++)
			cache_materialize(g, v, p, i);
}

static void vcpu_refill(struct gm *g, unsigned int v)
{
	for (unsigned int p = 0; p < GM_PCIDS; p++)
		for (unsigned int i = 0; i < GM_NPAGES; i++)
			cache_fill(g, v, p, i);
}

void gm_global_begin(struct gm *g)
{
	for (unsigned int v = 0; v < GM_VCPUS; v++)
		vcpu_materialize(g, v);
}

void gm_global_end(struct gm *g)
{
	for (unsigned int v = 0; v < GM_VCPUS; v++)
		vcpu_refill(g, v);
}

static bool cache_reads(const struct gm_cache *c, uint32_t first, uint32_t end)
{
	for (int j = 0; j < c->ndeps; j++)
		if (c->deps[j] >= first && c->deps[j] < end)
			return true;
	return false;
}

void gm_mem_write(struct gm *g, uintptr_t hva, const void *src, size_t len)
{
	struct model *m = g->m;
	uint32_t first, end;
	bool any = false;
	static uint8_t hit[GM_VCPUS][GM_PCIDS][GM_NPAGES];

	if (!len || hva < m->arena || hva - m->arena >= m->arena_len)
		return;
	if (len > m->arena_len - (hva - m->arena))
		len = m->arena_len - (hva - m->arena);
	first = (uint32_t)((hva - m->arena) / PAGE);
	end = (uint32_t)((hva - m->arena + len + PAGE - 1) / PAGE);
	for (uint32_t pg = first; pg < end && !any; pg++)
		any = g->depcnt[pg] != 0;
	if (!any) {
		memcpy(m->expect + (hva - m->arena), src, len);
		return;
	}
	for (unsigned int v = 0; v < GM_VCPUS; v++)
		for (unsigned int p = 0; p < GM_PCIDS; p++)
			for (unsigned int i = 0; i < GM_NPAGES; i++) {
				hit[v][p][i] = cache_reads(&g->v[v].cache[p][i], first, end);
				if (hit[v][p][i])
					cache_materialize(g, v, p, i);
			}
	memcpy(m->expect + (hva - m->arena), src, len);
	for (unsigned int v = 0; v < GM_VCPUS; v++)
		for (unsigned int p = 0; p < GM_PCIDS; p++)
			for (unsigned int i = 0; i < GM_NPAGES; i++)
				if (hit[v][p][i])
					cache_fill(g, v, p, i);
}

/* ---- architectural state ------------------------------------------------------------- */

#define CR0_KNOWN (VMMU_CR0_PE | 0x3eULL | VMMU_CR0_WP | (1ULL << 18) | (3ULL << 29) | VMMU_CR0_PG)
#define CR0_NW (1ULL << 29)
#define CR0_CD (1ULL << 30)
#define CR4_KNOWN (0x7fffULL | (7ULL << 16) | (7ULL << 20))
#define EFER_KNOWN (1ULL | VMMU_EFER_LME | VMMU_EFER_LMA | VMMU_EFER_NXE | (0xfULL << 12))

/*
 * What a state load does (docs/mmu.md 8.1: what MOV to CR0/CR3/CR4 and
 * WRMSR EFER would #GP on is refused), building the state get_state must
 * report.  In PAE mode the PDPTEs are loaded from guest memory and checked
 * (SDM 4.4.1); outside RAM is refused.  They are loaded only by a MOV to CR3
 * (mov_cr3), a CR3 that changes, or a change of CR0.CD/NW/PG or
 * CR4.PAE/PGE/PSE/SMEP; any other state load keeps the registers.
 */
static int derive(const struct gm *g, const struct vmmu_cpu_state *cur, const struct vmmu_cpu_state *in,
		  bool mov_cr3, struct vmmu_cpu_state *out)
{
	struct vmmu_cpu_state s = *in;
	bool lma;

	if (s.cpl > 3 || (s.cr0 & ~CR0_KNOWN) || (s.cr4 & ~CR4_KNOWN) || (s.efer & ~EFER_KNOWN))
		return VMMU_EINVAL;
	if ((s.cr0 & VMMU_CR0_PG) && !(s.cr0 & VMMU_CR0_PE))
		return VMMU_EINVAL;
	if ((s.cr0 & CR0_NW) && !(s.cr0 & CR0_CD))
		return VMMU_EINVAL;
	lma = (s.efer & VMMU_EFER_LME) && (s.cr0 & VMMU_CR0_PG);
	s.efer = (s.efer & ~VMMU_EFER_LMA) | (lma ? VMMU_EFER_LMA : 0);
	if (lma && !(s.cr4 & VMMU_CR4_PAE))
		return VMMU_EINVAL;
	if ((cur->cr0 & VMMU_CR0_PG) && (s.cr0 & VMMU_CR0_PG) && ((cur->efer ^ s.efer) & VMMU_EFER_LME))
		return VMMU_EINVAL;
	if ((cur->efer & VMMU_EFER_LMA) && lma && ((cur->cr4 ^ s.cr4) & VMMU_CR4_LA57))
		return VMMU_EINVAL;
	if ((s.cr4 & VMMU_CR4_PCIDE) && !lma)
		return VMMU_EINVAL;
	if ((s.cr4 & VMMU_CR4_PCIDE) && !(cur->cr4 & VMMU_CR4_PCIDE) && (s.cr3 & 0xfff))
		return VMMU_EINVAL;
	if ((s.cr4 & VMMU_CR4_LA57) && lma && !g->la57_ok)
		return VMMU_ENOTSUP;
	if (lma) {
		if ((s.cr3 & ~(1ULL << 63)) >> g->maxphyaddr || (s.cr3 >> 63))
			return VMMU_EINVAL;
	} else if (s.cr3 >> 32) {
		return VMMU_EINVAL;
	}
	memset(s.pdptrs, 0, sizeof(s.pdptrs));
	if (gm_mode_of(&s) == GM_PAE && !mov_cr3 && s.cr3 == cur->cr3 &&
	    !((cur->cr0 ^ s.cr0) & (VMMU_CR0_PG | CR0_CD | CR0_NW)) &&
	    !((cur->cr4 ^ s.cr4) & (VMMU_CR4_PAE | VMMU_CR4_PGE | VMMU_CR4_PSE | VMMU_CR4_SMEP))) {
		memcpy(s.pdptrs, cur->pdptrs, sizeof(s.pdptrs));
	} else if (gm_mode_of(&s) == GM_PAE) {
		for (int i = 0; i < 4; i++) {
			uint64_t gpa = (s.cr3 & 0xffffffe0ULL) + 8 * (uint64_t)i, e;
			uintptr_t hva;

			if (!model_find(g->m, gpa, &hva))
				return VMMU_EINVAL;
			/* Host memory declared gone is never read: a memory fault. */
			if (g->m->released || model_prot_at(g->m, hva) == VMMU_HOST_NONE)
				return VMMU_EFAULT;
			e = read_expect(g->m, hva, 8);
			if ((e & 1) && ((e & ((0xfULL << 5) | (3ULL << 1))) || (e >> g->maxphyaddr)))
				return VMMU_EINVAL;
			s.pdptrs[i] = e;
		}
	}
	*out = s;
	return 0;
}

/* What the shadow MMU may shadow from a new root (its root table, or the
 * PAE page directories). */
static void mark_roots(struct gm *g, const struct vmmu_cpu_state *s)
{
	enum gm_mode mode = gm_mode_of(s);

	if (mode == GM_OFF)
		return;
	if (mode == GM_PAE) {
		for (int i = 0; i < 4; i++)
			if (s->pdptrs[i] & 1)
				gm_mark_table(g, s->pdptrs[i] & BITS(12, g->maxphyaddr - 1));
		return;
	}
	gm_mark_table(g, s->cr3 & (mode == GM_32 ? 0xfffff000ULL : BITS(12, g->maxphyaddr - 1)));
}

/* After a load of CR3 (new PCID p): which root p stands for. */
static void note_root(struct gm_vcpu *gv)
{
	unsigned int p = gm_pcid_of(&gv->s);

	if (!(gv->s.cr4 & VMMU_CR4_PCIDE)) {
		memset(gv->root_set, 0, sizeof(gv->root_set));
		return;
	}
	if (p < GM_PCIDS) {
		gv->root_set[p] = true;
		gv->root_cr3[p] = gv->s.cr3;
	}
}

int gm_set_state(struct gm *g, unsigned int v, const struct vmmu_cpu_state *in)
{
	struct gm_vcpu *gv = &g->v[v];
	struct vmmu_cpu_state old = gv->s, s;
	int r = derive(g, &old, in, false, &s);

	if (r)
		return r;
	vcpu_materialize(g, v);
	/*
	 * SDM 4.10.4.1, what each MOV must invalidate (vmmu may drop more):
	 * CR0.PG 1 -> 0, any CR4.PGE change and CR4.PCIDE 1 -> 0 drop
	 * everything, globals too; CR4.PAE changes and CR4.SMEP 0 -> 1 the
	 * current PCID's entries; a new CR3 the new PCID's non-global ones.
	 * WP, SMAP, PKE, PKRU, AC and CPL invalidate nothing: rights are
	 * checked at every use.
	 */
	if (((old.cr0 & VMMU_CR0_PG) && !(s.cr0 & VMMU_CR0_PG)) || ((old.cr4 ^ s.cr4) & VMMU_CR4_PGE) ||
	    ((old.cr4 & VMMU_CR4_PCIDE) && !(s.cr4 & VMMU_CR4_PCIDE)))
		tlb_drop(gv, DROP_ALL, 0, 0);
	if (((old.cr4 ^ s.cr4) & VMMU_CR4_PAE) || (!(old.cr4 & VMMU_CR4_SMEP) && (s.cr4 & VMMU_CR4_SMEP)))
		tlb_drop(gv, DROP_PCID, gm_pcid_of(&old), 0);
	if (old.cr3 != s.cr3)
		tlb_drop(gv, DROP_PCID, gm_pcid_of(&s), 0);
	gv->s = s;
	if (old.cr3 != s.cr3 || !(old.cr4 & VMMU_CR4_PCIDE))
		note_root(gv);
	if (!(s.cr4 & VMMU_CR4_PCIDE))
		memset(gv->root_set, 0, sizeof(gv->root_set));
	mark_roots(g, &s);
	vcpu_refill(g, v);
	return 0;
}

int gm_write_cr3(struct gm *g, unsigned int v, uint64_t cr3)
{
	struct gm_vcpu *gv = &g->v[v];
	struct vmmu_cpu_state in = gv->s, s;
	bool pcide = gv->s.cr4 & VMMU_CR4_PCIDE, noflush = pcide && (cr3 >> 63);
	int r;

	in.cr3 = pcide ? cr3 & ~VMMU_CR3_PCID_NOFLUSH : cr3;
	r = derive(g, &gv->s, &in, true, &s);
	if (r)
		return r;
	vcpu_materialize(g, v);
	/* SDM 4.10.4.1: MOV to CR3 drops the new PCID's non-global entries,
	 * unless CR4.PCIDE = 1 and bit 63 of the operand is set. */
	if (!noflush)
		tlb_drop(gv, DROP_PCID, gm_pcid_of(&s), 0);
	gv->s = s;
	note_root(gv);
	mark_roots(g, &s);
	vcpu_refill(g, v);
	return 0;
}

void gm_invlpg(struct gm *g, unsigned int v, uint64_t gva)
{
	struct gm_vcpu *gv = &g->v[v];
	enum gm_mode mode = gm_mode_of(&gv->s);

	/* Non-canonical: a no-op in 64-bit mode. */
	if (mode == GM_OFF || !gm_canonical(mode, gva))
		return;
	tlb_drop(gv, DROP_PAGE, gm_pcid_of(&gv->s), gva);
}

int gm_invpcid(struct gm *g, unsigned int v, unsigned int type, uint32_t pcid, uint64_t gva)
{
	struct gm_vcpu *gv = &g->v[v];

	/* SDM Vol. 2A INVPCID: #GP cases. */
	if (type > VMMU_INVPCID_ALL || pcid > 0xfff)
		return VMMU_EINVAL;
	if (type <= VMMU_INVPCID_SINGLE && pcid && !(gv->s.cr4 & VMMU_CR4_PCIDE))
		return VMMU_EINVAL;
	if (type == VMMU_INVPCID_ADDR && !gm_canonical(gm_mode_of(&gv->s), gva))
		return VMMU_EINVAL;
	switch (type) {
	case VMMU_INVPCID_ADDR: tlb_drop(gv, DROP_PCID_PAGE, pcid, gva); break;
	case VMMU_INVPCID_SINGLE: tlb_drop(gv, DROP_PCID, pcid, 0); break;
	case VMMU_INVPCID_ALL_GLOBAL: tlb_drop(gv, DROP_ALL, 0, 0); break;
	default: tlb_drop(gv, DROP_NONGLOBAL, 0, 0); break;
	}
	return 0;
}
