/* SPDX-License-Identifier: MIT */
/*
 * The simulated security module and its secure EPT (secure_ept.h says what
 * it enforces and why).  Its tables live in an arena of their own, so the
 * MMU's arena and statistics never see them; entries use the VM's TDP
 * format, so the one hardware walker reads both kinds of table.
 */
#include "cpu/secure_ept.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mmu/pt_arena.h"
#include "vm/vmmu_int.h"

/*
 * A blocked leaf: not present to the hardware (no R/W/X, no P), frame and
 * size kept so removal and demotion know what they act on.  Bit 62 is
 * ignored by the CPU in both formats and never set in a present entry here.
 */
#define SEPT_BLOCKED BIT_ULL(62)

/* Per table: how many entries map or link something, and the track epoch
 * at which each leaf was blocked. */
struct sept_meta {
	unsigned int nr_used;
	uint32_t blocked_epoch[PT64_ENT_PER_PAGE];
};

/* PAMT: per 2M of host frames, whether it is mapped as one 2M page, or
 * which of its 4K pages are. */
#define PAMT_BUCKETS 4096
struct pamt_chunk {
	uint64_t key;		/* pfn >> 9 */
	bool huge;
	unsigned int nr;	/* 4K pages mapped */
	uint64_t bits[PT64_ENT_PER_PAGE / 64];
	struct pamt_chunk *next;
};

struct secure_ept {
	struct spte_fmt fmt;		/* [const] */
	int root_level;			/* [const] */
	struct pt_arena arena;
	struct pt_page *root;		/* [const] */
	pthread_mutex_t lock;		/* every call below */
	bool teardown;			/* [lock] */
	uint32_t epoch;			/* [lock] completed TLB tracks */
	struct pamt_chunk *pamt[PAMT_BUCKETS];	/* [lock] */
	_Atomic uint64_t tables, leaves[PG_LEVEL_2M + 1], violations, by_kind[SEPT_V_NR], demotes, tracks,
		reclaimed;
};

static const char *const violation_names[SEPT_V_NR] = {
	[SEPT_V_NO_PARENT] = "leaf or table without a linked parent",
	[SEPT_V_DOUBLE_MAP] = "entry mapped twice",
	[SEPT_V_PAGE_ALIASED] = "host page mapped twice",
	[SEPT_V_NOT_RWX] = "private leaf not RWX",
	[SEPT_V_NOT_BLOCKED] = "removal or demotion without block",
	[SEPT_V_NOT_TRACKED] = "removal or demotion without TLB track",
	[SEPT_V_WRPROT] = "write protection of a private leaf",
	[SEPT_V_AD] = "A/D harvesting of a private leaf",
	[SEPT_V_DEMOTE] = "huge leaf split outside demotion",
	[SEPT_V_LEVEL] = "bad level or alignment",
	[SEPT_V_NOT_MAPPED] = "nothing mapped there",
	[SEPT_V_TABLE_BUSY] = "table freed while it maps pages",
};

const char *sept_violation_name(enum sept_violation v)
{
	return v < SEPT_V_NR ? violation_names[v] : "?";
}

static int violation(struct secure_ept *s, enum sept_violation v)
{
	atomic_fetch_add_explicit(&s->by_kind[v], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->violations, 1, memory_order_relaxed);
	return VMMU_EPERM;
}

static inline uint64_t sept_read(const uint64_t *p)
{
	return atomic_load_explicit((_Atomic uint64_t *)p, memory_order_acquire);
}

static inline void sept_write(uint64_t *p, uint64_t v)
{
	atomic_store_explicit((_Atomic uint64_t *)p, v, memory_order_release);
}

static inline bool is_present(const struct secure_ept *s, uint64_t e)
{
	return spte_is_hw_present(&s->fmt, e);
}

static inline bool is_blocked(uint64_t e)
{
	return e & SEPT_BLOCKED;
}

static inline bool is_table(const struct secure_ept *s, uint64_t e, int level)
{
	return is_present(s, e) && level > PG_LEVEL_4K && !(e & s->fmt.huge);
}

static inline struct sept_meta *meta_of(struct secure_ept *s, const uint64_t *table)
{
	return pt_page_of(&s->arena, table)->owner;
}

/* ---- PAMT ---------------------------------------------------------------- */

static struct pamt_chunk **pamt_slot(struct secure_ept *s, uint64_t key)
{
	struct pamt_chunk **pp = &s->pamt[(key * 0x9e3779b97f4a7c15ULL) >> 52];

	while (*pp && (*pp)->key != key)
		pp = &(*pp)->next;
	return pp;
}

/* Whether pfn's page(s) at level are free to map. */
static bool pamt_free(struct secure_ept *s, uint64_t pfn, int level)
{
	struct pamt_chunk *c = *pamt_slot(s, pfn >> 9);

	if (!c)
		return true;
	if (c->huge)
		return false;
	if (level == PG_LEVEL_2M)
		return c->nr == 0;
	return !((c->bits[(pfn & 511) / 64] >> (pfn % 64)) & 1);
}

/* Marks (or with set false, clears) pfn's page(s) at level; false without memory. */
static bool pamt_mark(struct secure_ept *s, uint64_t pfn, int level, bool set)
{
	struct pamt_chunk **pp = pamt_slot(s, pfn >> 9), *c = *pp;

	if (!c) {
		if (!set)
			return true;
		c = calloc(1, sizeof(*c));
		if (!c)
			return false;
		c->key = pfn >> 9;
		*pp = c;
	}
	if (level == PG_LEVEL_2M) {
		c->huge = set;
	} else if (set) {
		c->bits[(pfn & 511) / 64] |= 1ULL << (pfn % 64);
		c->nr++;
	} else {
		c->bits[(pfn & 511) / 64] &= ~(1ULL << (pfn % 64));
		c->nr--;
	}
	if (!c->huge && !c->nr) {
		*pp = c->next;
		free(c);
	}
	return true;
}

/* A mapped 2M page becomes 512 mapped 4K pages, in place (no allocation). */
static void pamt_demote(struct secure_ept *s, uint64_t pfn)
{
	struct pamt_chunk *c = *pamt_slot(s, pfn >> 9);

	c->huge = false;
	memset(c->bits, 0xff, sizeof(c->bits));
	c->nr = PT64_ENT_PER_PAGE;
}

/* ---- tables -------------------------------------------------------------- */

static struct pt_page *table_alloc(struct secure_ept *s, uint64_t gfn, int level)
{
	struct pt_page *sp = pt_page_alloc(&s->arena);
	struct sept_meta *m = sp ? calloc(1, sizeof(*m)) : NULL;

	if (!m) {
		if (sp)
			pt_page_free_now(sp);
		return NULL;
	}
	sp->gfn = gfn;
	sp->level = level;
	sp->owner = m;
	atomic_fetch_add_explicit(&s->tables, 1, memory_order_relaxed);
	return sp;
}

static void table_release(struct secure_ept *s, struct pt_page *sp, bool rcu)
{
	free(sp->owner);
	sp->owner = NULL;
	atomic_fetch_sub_explicit(&s->tables, 1, memory_order_relaxed);
	if (rcu)
		pt_page_free_rcu(sp);
	else
		pt_page_free_now(sp);
}

/*
 * The entry for (gfn, level), walking down through linked tables only.
 * NULL when the path breaks; *why says how (no table, or a huge leaf in the
 * way, which only demotion may turn into a table).
 */
static uint64_t *entry_at(struct secure_ept *s, uint64_t gfn, int level, enum sept_violation *why)
{
	uint64_t *table = s->root->spt;

	for (int l = s->root_level; l > level; l--) {
		uint64_t e = sept_read(&table[spte_index(gfn, l)]);

		if (!is_table(s, e, l)) {
			*why = (is_present(s, e) || is_blocked(e)) ? SEPT_V_DEMOTE : SEPT_V_NO_PARENT;
			return NULL;
		}
		table = (uint64_t *)(uintptr_t)(spte_to_pfn(e) << 12);
	}
	return &table[spte_index(gfn, level)];
}

static bool bad_level(const struct secure_ept *s, uint64_t gfn, int level, bool leaf)
{
	if (level < PG_LEVEL_4K || level > s->root_level || (leaf && level > PG_LEVEL_2M))
		return true;
	return gfn & (spte_level_pages(level) - 1);
}

static uint64_t make_leaf(const struct secure_ept *s, uint64_t pfn, int level)
{
	const struct spte_fmt *f = &s->fmt;
	uint64_t e = make_leaf_spte(f, pfn, level, ACC_ALL, true, false);

	/* A and D set once and for all: the hardware never writes this table. */
	return f->ad_enabled ? e | f->accessed | f->dirty : e;
}

struct secure_ept *sept_create(const struct spte_fmt *f, int root_level, size_t arena_bytes)
{
	struct secure_ept *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->fmt = *f;
	s->root_level = root_level;
	if (pt_arena_init(&s->arena, arena_bytes)) {
		free(s);
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->epoch = 1;
	s->root = table_alloc(s, 0, root_level);
	if (!s->root) {
		pthread_mutex_destroy(&s->lock);
		pt_arena_destroy(&s->arena);
		free(s);
		return NULL;
	}
	return s;
}

struct hw_root sept_hw_root(const struct secure_ept *s)
{
	return (struct hw_root){ .table = s->root->spt, .level = s->root_level };
}

void sept_teardown(struct secure_ept *s)
{
	pthread_mutex_lock(&s->lock);
	s->teardown = true;
	pthread_mutex_unlock(&s->lock);
}

/* The entry (gfn, level >= 2) a table hangs from, for link and free; NULL
 * with the violation counted in *r when the level or the path is wrong. */
static uint64_t *table_entry_at(struct secure_ept *s, uint64_t gfn, int level, int *r)
{
	enum sept_violation why = SEPT_V_NO_PARENT;
	uint64_t *ep;

	if (level < PG_LEVEL_2M || bad_level(s, gfn, level, false)) {
		*r = violation(s, SEPT_V_LEVEL);
		return NULL;
	}
	ep = entry_at(s, gfn, level, &why);
	if (!ep)
		*r = violation(s, why);
	return ep;
}

int sept_link(struct secure_ept *s, uint64_t gfn, int level)
{
	struct pt_page *child;
	uint64_t *ep, e;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	ep = table_entry_at(s, gfn, level, &r);
	if (!ep)
		goto out;
	e = sept_read(ep);
	if (e) {
		/* A table over a huge leaf would split it without demotion. */
		r = violation(s, is_table(s, e, level) ? SEPT_V_DOUBLE_MAP : SEPT_V_DEMOTE);
		goto out;
	}
	child = table_alloc(s, gfn, level - 1);
	if (!child) {
		r = VMMU_ENOMEM;
		goto out;
	}
	/* The hardware never sets A here (see make_leaf): set it now. */
	sept_write(ep, make_nonleaf_spte(&s->fmt, (uintptr_t)child->spt >> 12) | s->fmt.accessed);
	meta_of(s, ep - spte_index(gfn, level))->nr_used++;
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

static bool spte_is_rwx(const struct spte_fmt *f, uint64_t spte)
{
	/* EPT's R is the format's 'user' bit; legacy entries need P and U. */
	if (!(spte & f->writable))
		return false;
	return f->ept ? (spte & EPT_R) && (spte & EPT_X) : (spte & PT_P) && (spte & PT_U) && !(spte & PT_NX);
}

int sept_aug(struct secure_ept *s, uint64_t gfn, int level, uint64_t spte)
{
	const struct spte_fmt *f = &s->fmt;
	enum sept_violation why = SEPT_V_NO_PARENT;
	uint64_t pfn = spte_to_pfn(spte), *ep, e;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (bad_level(s, gfn, level, true) || (pfn & (spte_level_pages(level) - 1)) ||
	    (level > PG_LEVEL_4K) != !!(spte & f->huge)) {
		r = violation(s, SEPT_V_LEVEL);
		goto out;
	}
	ep = entry_at(s, gfn, level, &why);
	if (!ep) {
		r = violation(s, why);
		goto out;
	}
	e = sept_read(ep);
	if (e) {
		/*
		 * Re-mapping a present leaf is how write protection or A/D
		 * harvesting would reach this table: name them for what they are.
		 */
		if (is_present(s, e) && !is_table(s, e, level) && spte_to_pfn(e) == pfn && !(spte & f->writable))
			r = violation(s, SEPT_V_WRPROT);
		else if (is_present(s, e) && !is_table(s, e, level) && spte_to_pfn(e) == pfn && f->ad_enabled &&
			 !(spte & f->accessed))
			r = violation(s, SEPT_V_AD);
		else
			r = violation(s, SEPT_V_DOUBLE_MAP);
		goto out;
	}
	if (!spte_is_rwx(f, spte)) {
		r = violation(s, SEPT_V_NOT_RWX);
		goto out;
	}
	if (!pamt_free(s, pfn, level)) {
		r = violation(s, SEPT_V_PAGE_ALIASED);
		goto out;
	}
	if (!pamt_mark(s, pfn, level, true)) {
		r = VMMU_ENOMEM;
		goto out;
	}
	sept_write(ep, make_leaf(s, pfn, level));
	meta_of(s, ep - spte_index(gfn, level))->nr_used++;
	atomic_fetch_add_explicit(&s->leaves[level], 1, memory_order_relaxed);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* A present or blocked leaf at (gfn, level), for block/remove/demote. */
static uint64_t *leaf_at(struct secure_ept *s, uint64_t gfn, int level, int *r)
{
	enum sept_violation why = SEPT_V_NOT_MAPPED;
	uint64_t *ep, e;

	if (bad_level(s, gfn, level, true)) {
		*r = violation(s, SEPT_V_LEVEL);
		return NULL;
	}
	ep = entry_at(s, gfn, level, &why);
	e = ep ? sept_read(ep) : 0;
	if (!ep || !e || is_table(s, e, level)) {
		*r = violation(s, ep ? SEPT_V_NOT_MAPPED : why);
		return NULL;
	}
	return ep;
}

int sept_block(struct secure_ept *s, uint64_t gfn, int level)
{
	uint64_t *ep, e;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	ep = leaf_at(s, gfn, level, &r);
	if (!ep)
		goto out;
	e = sept_read(ep);
	if (!is_blocked(e)) {
		/* Frame and size stay; every permission bit goes. */
		sept_write(ep, (e & (SPTE_BASE_ADDR_MASK | s->fmt.huge)) | SEPT_BLOCKED);
		meta_of(s, ep - spte_index(gfn, level))->blocked_epoch[spte_index(gfn, level)] = s->epoch;
	}
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

void sept_track(struct secure_ept *s)
{
	pthread_mutex_lock(&s->lock);
	s->epoch++;
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(&s->tracks, 1, memory_order_relaxed);
}

/* A leaf that may go away or change size: blocked before the last track
 * (or anything at teardown, when no vCPU runs). */
static int check_blocked_tracked(struct secure_ept *s, uint64_t *ep, uint64_t gfn, int level)
{
	uint64_t e = sept_read(ep);

	if (s->teardown)
		return 0;
	if (!is_blocked(e))
		return violation(s, SEPT_V_NOT_BLOCKED);
	if (meta_of(s, ep - spte_index(gfn, level))->blocked_epoch[spte_index(gfn, level)] >= s->epoch)
		return violation(s, SEPT_V_NOT_TRACKED);
	return 0;
}

static void leaf_drop(struct secure_ept *s, uint64_t *ep, uint64_t gfn, int level)
{
	uint64_t e = sept_read(ep);

	pamt_mark(s, spte_to_pfn(e), level, false);
	sept_write(ep, 0);
	meta_of(s, ep - spte_index(gfn, level))->nr_used--;
	atomic_fetch_sub_explicit(&s->leaves[level], 1, memory_order_relaxed);
}

int sept_remove(struct secure_ept *s, uint64_t gfn, int level)
{
	uint64_t *ep;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	ep = leaf_at(s, gfn, level, &r);
	if (ep && !(r = check_blocked_tracked(s, ep, gfn, level)))
		leaf_drop(s, ep, gfn, level);
	pthread_mutex_unlock(&s->lock);
	return r;
}

int sept_demote(struct secure_ept *s, uint64_t gfn, int level)
{
	struct pt_page *child;
	uint64_t *ep, pfn;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (level != PG_LEVEL_2M) {
		r = violation(s, SEPT_V_LEVEL);
		goto out;
	}
	ep = leaf_at(s, gfn, level, &r);
	if (!ep || (r = check_blocked_tracked(s, ep, gfn, level)))
		goto out;
	child = table_alloc(s, gfn, level - 1);
	if (!child) {
		r = VMMU_ENOMEM;
		goto out;
	}
	pfn = spte_to_pfn(sept_read(ep));
	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++)
		child->spt[i] = make_leaf(s, pfn + i, PG_LEVEL_4K);
	((struct sept_meta *)child->owner)->nr_used = PT64_ENT_PER_PAGE;
	pamt_demote(s, pfn);
	/* Release: the filled child is visible before the entry that links it. */
	sept_write(ep, make_nonleaf_spte(&s->fmt, (uintptr_t)child->spt >> 12) | s->fmt.accessed);
	atomic_fetch_sub_explicit(&s->leaves[PG_LEVEL_2M], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->leaves[PG_LEVEL_4K], PT64_ENT_PER_PAGE, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->demotes, 1, memory_order_relaxed);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* Teardown and destroy: drop a table and everything under it. */
static void reclaim_table(struct secure_ept *s, struct pt_page *sp, bool rcu)
{
	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++) {
		uint64_t e = sp->spt[i];
		uint64_t gfn = sp->gfn + (uint64_t)i * spte_level_pages(sp->level);

		if (!e)
			continue;
		if (is_table(s, e, sp->level)) {
			reclaim_table(s, pt_page_of(&s->arena, (void *)(uintptr_t)(spte_to_pfn(e) << 12)), rcu);
			sept_write(&sp->spt[i], 0);
			((struct sept_meta *)sp->owner)->nr_used--;
		} else {
			leaf_drop(s, &sp->spt[i], gfn, sp->level);
		}
		atomic_fetch_add_explicit(&s->reclaimed, 1, memory_order_relaxed);
	}
	if (sp != s->root)
		table_release(s, sp, rcu);
}

int sept_free_table(struct secure_ept *s, uint64_t gfn, int level)
{
	struct pt_page *child;
	uint64_t *ep, e;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	ep = table_entry_at(s, gfn, level, &r);
	if (!ep)
		goto out;
	e = sept_read(ep);
	if (!is_table(s, e, level)) {
		r = violation(s, SEPT_V_NOT_MAPPED);
		goto out;
	}
	child = pt_page_of(&s->arena, (void *)(uintptr_t)(spte_to_pfn(e) << 12));
	if (((struct sept_meta *)child->owner)->nr_used && !s->teardown) {
		r = violation(s, SEPT_V_TABLE_BUSY);
		goto out;
	}
	sept_write(ep, 0);
	meta_of(s, ep - spte_index(gfn, level))->nr_used--;
	/* At teardown whatever is still below goes with it (RECLAIM). */
	reclaim_table(s, child, true);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

void sept_destroy(struct secure_ept *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->teardown = true;
	reclaim_table(s, s->root, false);
	pthread_mutex_unlock(&s->lock);
	table_release(s, s->root, false);
	for (unsigned int i = 0; i < PAMT_BUCKETS; i++) {
		while (s->pamt[i]) {
			struct pamt_chunk *c = s->pamt[i];

			s->pamt[i] = c->next;
			free(c);
		}
	}
	pthread_mutex_destroy(&s->lock);
	pt_arena_destroy(&s->arena);
	free(s);
}

uint64_t sept_lookup(const struct secure_ept *s, uint64_t gfn, int *level)
{
	const uint64_t *table = s->root->spt;
	uint64_t e = 0;

	*level = s->root_level;
	for (int l = s->root_level; l >= PG_LEVEL_4K; l--) {
		e = sept_read(&table[spte_index(gfn, l)]);
		*level = l;
		if (!is_table(s, e, l))
			break;
		table = (const uint64_t *)(uintptr_t)(spte_to_pfn(e) << 12);
	}
	return e;
}

bool sept_table_at(const struct secure_ept *s, uint64_t gfn, int level)
{
	int l;

	/* The lookup goes down through tables only: it ends below level
	 * exactly when the entry at level is a table. */
	(void)sept_lookup(s, gfn, &l);
	return l < level;
}

void sept_get_stats(struct secure_ept *s, struct secure_ept_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->tables = atomic_load_explicit(&s->tables, memory_order_relaxed);
	for (int l = PG_LEVEL_4K; l <= PG_LEVEL_2M; l++)
		out->leaves[l] = atomic_load_explicit(&s->leaves[l], memory_order_relaxed);
	out->violations = atomic_load_explicit(&s->violations, memory_order_relaxed);
	for (int v = 0; v < SEPT_V_NR; v++)
		out->by_kind[v] = atomic_load_explicit(&s->by_kind[v], memory_order_relaxed);
	out->demotes = atomic_load_explicit(&s->demotes, memory_order_relaxed);
	out->tracks = atomic_load_explicit(&s->tracks, memory_order_relaxed);
	out->reclaimed = atomic_load_explicit(&s->reclaimed, memory_order_relaxed);
}
