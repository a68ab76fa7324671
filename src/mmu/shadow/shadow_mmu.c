/* SPDX-License-Identifier: MIT */
/*
 * The shadow MMU.  See shadow_mmu.h for the model and docs/mmu.md §11 for
 * the invariants; comments here say why a step is where it is.
 */
#define _GNU_SOURCE
#include "mmu/shadow/shadow_mmu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu/hw.h"
#include "mmu/mmu.h"
#include "vm/vmmu_int.h"
#include "test_hook.h"
#include "mmu/walk.h"

static uint64_t *find_leaf_sptep(uint64_t root_spte, int level, uint64_t gva);
static uint64_t root_entry(const struct vmmu_vcpu *v, uint64_t gva, int *level);

static inline bool is_shadow_present(uint64_t spte)
{
	return spte & SPTE_MMU_PRESENT;
}

static inline uint64_t spte_load(const uint64_t *sptep)
{
	return atomic_load_explicit((_Atomic uint64_t *)sptep, memory_order_acquire);
}

static inline void spte_store(uint64_t *sptep, uint64_t v)
{
	atomic_store_explicit((_Atomic uint64_t *)sptep, v, memory_order_release);
}

/* Every SPTE change may race with the hardware setting A/D: exchange, and
 * take A/D from what the exchange returned. */
static inline uint64_t spte_xchg(uint64_t *sptep, uint64_t v)
{
	return atomic_exchange_explicit((_Atomic uint64_t *)sptep, v, memory_order_acq_rel);
}

static inline uint64_t spte_clear_bits(uint64_t *sptep, uint64_t bits)
{
	return atomic_fetch_and_explicit((_Atomic uint64_t *)sptep, ~bits, memory_order_acq_rel);
}

static inline struct shadow_page *sptep_to_sp(struct vmmu_vm *vm, const uint64_t *sptep)
{
	return pt_page_of(&vm->arena, sptep)->owner;
}

static inline struct shadow_page *spte_to_child(struct vmmu_vm *vm, uint64_t spte)
{
	return pt_page_of(&vm->arena, (void *)(uintptr_t)(spte & SPTE_BASE_ADDR_MASK))->owner;
}

static inline unsigned int sptep_index(const uint64_t *sptep)
{
	return (unsigned int)(((uintptr_t)sptep & 0xfff) >> 3);
}

/* ---- pte_list: rmaps and parent lists (KVM's pte_list_desc) ------------------------ */

#define PTE_LIST_EXT 14
struct pte_list_desc {
	struct pte_list_desc *more;
	unsigned int n;
	uint64_t *sptes[PTE_LIST_EXT];
};

/* Descriptors come from a per-vCPU cache filled before mmu_lock, so adding to
 * a list under the lock never fails; host-side paths only remove. */
static int desc_cache_topup(struct shadow_desc_cache *c)
{
	while (c->nr < SHADOW_DESC_CACHE) {
		struct pte_list_desc *d = calloc(1, sizeof(*d));

		if (!d)
			return VMMU_ENOMEM;
		c->d[c->nr++] = d;
	}
	return 0;
}

void shadow_vcpu_free(struct vmmu_vcpu *v)
{
	while (v->sh.desc_cache.nr)
		free(v->sh.desc_cache.d[--v->sh.desc_cache.nr]);
}

static struct pte_list_desc *desc_alloc(struct shadow_desc_cache *c)
{
	struct pte_list_desc *d = c->d[--c->nr];

	memset(d, 0, sizeof(*d));
	return d;
}

static void pte_list_add(struct shadow_desc_cache *c, struct pte_list *l, uint64_t *sptep)
{
	struct pte_list_desc *d;

	if (!l->val) {
		l->val = (uintptr_t)sptep;
		return;
	}
	if (!(l->val & 1)) {
		d = desc_alloc(c);
		d->sptes[0] = (uint64_t *)l->val;
		d->sptes[1] = sptep;
		d->n = 2;
		l->val = (uintptr_t)d | 1;
		return;
	}
	d = (struct pte_list_desc *)(l->val & ~(uintptr_t)1);
	if (d->n == PTE_LIST_EXT) {
		struct pte_list_desc *nd = desc_alloc(c);

		nd->more = d;
		d = nd;
		l->val = (uintptr_t)d | 1;
	}
	d->sptes[d->n++] = sptep;
}

static bool pte_list_remove(struct pte_list *l, const uint64_t *sptep)
{
	struct pte_list_desc *head, *d;

	if (!l->val)
		return false;
	if (!(l->val & 1)) {
		if ((const uint64_t *)l->val != sptep)
			return false;
		l->val = 0;
		return true;
	}
	head = (struct pte_list_desc *)(l->val & ~(uintptr_t)1);
	for (d = head; d; d = d->more) {
		for (unsigned int i = 0; i < d->n; i++) {
			if (d->sptes[i] != sptep)
				continue;
			/* Fill the hole from the head, so only the head is ever partial. */
			d->sptes[i] = head->sptes[--head->n];
			if (!head->n) {
				l->val = head->more ? (uintptr_t)head->more | 1 : 0;
				free(head);
			}
			if (l->val & 1) {
				struct pte_list_desc *h = (struct pte_list_desc *)(l->val & ~(uintptr_t)1);

				if (!h->more && h->n == 1) {
					l->val = (uintptr_t)h->sptes[0];
					free(h);
				}
			}
			return true;
		}
	}
	return false;
}

static uint64_t *pte_list_first(const struct pte_list *l)
{
	if (!l->val)
		return NULL;
	if (!(l->val & 1))
		return (uint64_t *)l->val;
	return ((struct pte_list_desc *)(l->val & ~(uintptr_t)1))->sptes[0];
}

struct pte_list_iter {
	const struct pte_list_desc *d;
	unsigned int i;
};

static uint64_t *pte_list_iter_start(const struct pte_list *l, struct pte_list_iter *it)
{
	it->d = NULL;
	it->i = 0;
	if (!l->val)
		return NULL;
	if (!(l->val & 1))
		return (uint64_t *)l->val;
	it->d = (const struct pte_list_desc *)(l->val & ~(uintptr_t)1);
	return it->d->sptes[0];
}

static uint64_t *pte_list_iter_next(struct pte_list_iter *it)
{
	if (!it->d)
		return NULL;
	if (++it->i < it->d->n)
		return it->d->sptes[it->i];
	it->d = it->d->more;
	it->i = 0;
	return it->d ? it->d->sptes[0] : NULL;
}

#define for_each_pte_list(l, it, sptep) \
	for (sptep = pte_list_iter_start(l, it); sptep; sptep = pte_list_iter_next(it))

static void pte_list_free(struct pte_list *l)
{
	struct pte_list_desc *d;

	if (!(l->val & 1)) {
		l->val = 0;
		return;
	}
	d = (struct pte_list_desc *)(l->val & ~(uintptr_t)1);
	while (d) {
		struct pte_list_desc *next = d->more;

		free(d);
		d = next;
	}
	l->val = 0;
}

/* ---- memslot data -------------------------------------------------------------------- */

/*
 * A slot may span 2^31 pages while the guest touches a few: the arrays are
 * one MAP_NORESERVE mapping, so only the pages of used entries ever exist
 * (KVM allocates its rmaps with vzalloc for the same reason).
 */
int shadow_slot_alloc(struct memslot *s)
{
	struct shadow_slot *ss = calloc(1, sizeof(*ss));
	size_t rmap_bytes = (s->npages * sizeof(*ss->rmap) + 4095) & ~(size_t)4095;
	void *p;

	if (!ss)
		return VMMU_ENOMEM;
	ss->map_size = rmap_bytes + s->npages * sizeof(*ss->write_track);
	p = mmap(NULL, ss->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		free(ss);
		return VMMU_ENOMEM;
	}
	ss->rmap = p;
	ss->write_track = (uint16_t *)((char *)p + rmap_bytes);
	s->shadow = ss;
	return 0;
}

/* Every mapping of the slot was zapped before it goes (delete zaps the slot,
 * VM teardown zaps every shadow page first): the lists are empty. */
void shadow_slot_free(struct memslot *s)
{
	struct shadow_slot *ss = s->shadow;

	if (!ss)
		return;
	munmap(ss->rmap, ss->map_size);
	free(ss);
	s->shadow = NULL;
}

static const struct memslot *slot_of(struct vmmu_vm *vm, gfn_t gfn)
{
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gfn);

	return s && s->shadow ? s : NULL;
}

static struct pte_list *gfn_rmap(struct vmmu_vm *vm, gfn_t gfn)
{
	const struct memslot *s = slot_of(vm, gfn);

	return s ? &s->shadow->rmap[gfn - s->base_gfn] : NULL;
}

bool shadow_gfn_write_tracked(const struct memslot *s, gfn_t gfn)
{
	return s->shadow && __atomic_load_n(&s->shadow->write_track[gfn - s->base_gfn], __ATOMIC_ACQUIRE);
}

/* ---- VM ------------------------------------------------------------------------------ */

int shadow_vm_init(struct vmmu_vm *vm)
{
	struct shadow_vm *sh = calloc(1, sizeof(*sh));

	if (!sh)
		return VMMU_ENOMEM;
	CDS_INIT_LIST_HEAD(&sh->active);
	CDS_INIT_LIST_HEAD(&sh->unsync);
	sh->valid_gen = 1;
	sh->max_pages = vm->cfg.shadow_max_pages;
	if (!sh->max_pages) {
		/* What the arena holds, less room for the TDP-free reserve. */
		sh->max_pages = vm->arena.cap > 2 * SHADOW_MIN_FREE_PAGES ? vm->arena.cap - SHADOW_MIN_FREE_PAGES
									  : vm->arena.cap;
	}
	vm->shadow = sh;
	return 0;
}

static void sp_free(struct shadow_page *sp)
{
	pte_list_free(&sp->parent_ptes);
	pt_page_free_rcu(sp->pt);
	free(sp->gfns);
	free(sp);
}

static void prepare_zap(struct vmmu_vm *vm, struct shadow_page *sp, struct cds_list_head *invalid);

void shadow_vm_destroy(struct vmmu_vm *vm)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp, *tmp;
	CDS_LIST_HEAD(invalid);

	if (!sh)
		return;
	cds_list_for_each_entry_safe(sp, tmp, &sh->active, link)
		prepare_zap(vm, sp, &invalid);
	cds_list_for_each_entry_safe(sp, tmp, &invalid, link) {
		cds_list_del(&sp->link);
		sp_free(sp);
	}
	free(sh);
	vm->shadow = NULL;
}

/* ---- shadow pages -------------------------------------------------------------------- */

static inline unsigned int sp_hash(gfn_t gfn)
{
	return (unsigned int)((gfn * 0x9E3779B97F4A7C15ULL) >> (64 - SHADOW_HASH_BITS));
}

/* Read without mmu_lock too (a vCPU checking its roots): the role word and
 * the generation change only under it, by atomic stores. */
static inline bool sp_obsolete(const struct shadow_vm *sh, const struct shadow_page *sp)
{
	union sp_role role = { .word = __atomic_load_n(&sp->role.word, __ATOMIC_ACQUIRE) };

	return role.invalid || sp->valid_gen != __atomic_load_n(&sh->valid_gen, __ATOMIC_ACQUIRE);
}

static inline void sp_mark_invalid(struct shadow_page *sp)
{
	union sp_role role = sp->role;

	role.invalid = 1;
	__atomic_store_n(&sp->role.word, role.word, __ATOMIC_RELEASE);
}

/* Counters read without the lock (stats, the INVLPG shortcut). */
#define SH_COUNT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)

#define for_each_gfn_sp(sh, _sp, _gfn) \
	for (_sp = (sh)->hash[sp_hash(_gfn)]; _sp; _sp = _sp->hash_next) \
		if (_sp->gfn != (_gfn) || sp_obsolete(sh, _sp)) {} else

static void hash_del(struct shadow_vm *sh, struct shadow_page *sp)
{
	struct shadow_page **pp = &sh->hash[sp_hash(sp->gfn)];

	while (*pp && *pp != sp)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = sp->hash_next;
	sp->hash_next = NULL;
}

/* Write-protect every SPTE mapping gfn (W and MMU-writable: the fast path
 * must not undo it).  Returns whether anything lost W (flush needed). */
static bool rmap_write_protect(struct vmmu_vm *vm, gfn_t gfn, bool keep_mmu_writable)
{
	struct pte_list *l = gfn_rmap(vm, gfn);
	struct pte_list_iter it;
	uint64_t *sptep;
	bool flush = false;

	if (!l)
		return false;
	for_each_pte_list(l, &it, sptep) {
		uint64_t bits = PT_W | (keep_mmu_writable ? 0 : PT_SPTE_MMU_WRITABLE);
		uint64_t old = spte_clear_bits(sptep, bits);

		flush |= !!(old & PT_W);
	}
	return flush;
}

/*
 * A store-then-load on each side (a physical store: guest memory, then the
 * count; a new shadow page: the count, then the guest entry) with this in
 * between: the two read-modify-writes are ordered, and whichever comes
 * second sees the other side's store (a Dekker pair without fences).
 */
static inline void shadow_track_barrier(struct shadow_vm *sh)
{
	atomic_fetch_add_explicit(&sh->track_sync, 1, memory_order_seq_cst);
}

static bool account_shadowed(struct vmmu_vm *vm, struct shadow_page *sp)
{
	const struct memslot *s = slot_of(vm, sp->gfn);
	uint16_t *t;

	if (!s)
		return false;
	t = &s->shadow->write_track[sp->gfn - s->base_gfn];
	__atomic_store_n(t, (uint16_t)(*t + 1), __ATOMIC_RELEASE);
	s->shadow->nr_tracked++;
	sp->tracked = true;
	/*
	 * The count is read without mmu_lock by physical stores, which write
	 * guest memory first and read the count second (shadow_phys_store_done).
	 * This barrier pairs with theirs: either that store sees the count and
	 * zaps what this page makes of the old entry, or the walk re-check of
	 * the fault that created this page (walk_changed) sees the new entry.
	 */
	shadow_track_barrier(vm->shadow);
	/* Not only on the first page of gfn: the others may all be unsync, and
	 * then gfn is mapped writable; this new page starts in sync. */
	return rmap_write_protect(vm, sp->gfn, false);
}

static bool sp_unlinked(const struct shadow_page *sp)
{
	if (sp->parent_ptes.val)
		return false;
	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++)
		if (spte_load(&sp->spt[i]))
			return false;
	return true;
}

/*
 * The gfn stops being write-tracked on sp's behalf.  Only once nothing of sp
 * is reachable: a store that reads the count as 0 is a plain copy that no
 * shadow page hears of, and the hardware must not then find an SPTE made
 * from the entry it overwrote (issue 16: zap-all dropped the count first,
 * and a vCPU wrote through the old leaf after its PTE store and INVLPG).
 */
static void unaccount_shadowed(struct vmmu_vm *vm, struct shadow_page *sp)
{
	const struct memslot *s = slot_of(vm, sp->gfn);
	uint16_t *t;

	sp->tracked = false;
	if (VM_BUG_ON(vm, !sp_unlinked(sp), "shadow page of gfn %#llx untracked while still linked",
		      (unsigned long long)sp->gfn))
		return;
	if (!s)
		return;
	t = &s->shadow->write_track[sp->gfn - s->base_gfn];
	if (VM_BUG_ON(vm, *t == 0, "write-track count of gfn %#llx underflows", (unsigned long long)sp->gfn))
		return;
	__atomic_store_n(t, (uint16_t)(*t - 1), __ATOMIC_RELEASE);
	s->shadow->nr_tracked--;
	vmmu_test_hook(VMMU_TEST_HOOK_SHADOW_UNTRACKED, sp->gfn);
}

static void drop_leaf_rmap(struct vmmu_vm *vm, struct shadow_page *sp, uint64_t *sptep)
{
	unsigned int i = sptep_index(sptep);
	gfn_t gfn = sp->role.direct ? sp->gfn + i : sp->gfns[i];
	const struct memslot *s = slot_of(vm, gfn);

	if (!VM_BUG_ON(vm, !s || !pte_list_remove(&s->shadow->rmap[gfn - s->base_gfn], sptep),
		       "SPTE %p of gfn %#llx missing from its rmap", (void *)sptep, (unsigned long long)gfn))
		s->shadow->nr_rmap--;
	atomic_fetch_sub_explicit(&vm->stat.pages[PG_LEVEL_4K], 1, memory_order_relaxed);
}

/* Remove one SPTE from sp; returns whether a TLB flush is needed. */
static bool zap_spte(struct vmmu_vm *vm, struct shadow_page *sp, uint64_t *sptep)
{
	uint64_t spte = spte_load(sptep);

	if (!spte)
		return false;
	if (!is_shadow_present(spte)) {
		/* MMIO: the hardware never caches a reserved-bit entry. */
		spte_store(sptep, 0);
		return false;
	}
	spte_xchg(sptep, 0);
	VM_STAT_ADD(vm->stat.zapped_sptes, 1);
	if (sp->role.level == PG_LEVEL_4K) {
		drop_leaf_rmap(vm, sp, sptep);
	} else {
		struct shadow_page *child = spte_to_child(vm, spte);

		VM_BUG_ON(vm, !pte_list_remove(&child->parent_ptes, sptep),
			  "non-leaf SPTE %p missing from its child's parent list", (void *)sptep);
	}
	return true;
}

static void unsync_del(struct vmmu_vm *vm, struct shadow_page *sp)
{
	if (!sp->unsync)
		return;
	sp->unsync = false;
	cds_list_del(&sp->unsync_link);
	SH_COUNT_ADD(vm->shadow->nr_unsync, -1);
}

/*
 * KVM's kvm_mmu_prepare_zap_page: unlink sp from everything, so no walker can
 * reach it after the next TLB flush; free it in commit_zap() after that flush.
 * A page that is still some vCPU's root stays allocated, marked invalid, until
 * the vCPU drops it.
 */
static void prepare_zap(struct vmmu_vm *vm, struct shadow_page *sp, struct cds_list_head *invalid)
{
	struct shadow_vm *sh = vm->shadow;
	uint64_t *sptep;

	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++)
		zap_spte(vm, sp, &sp->spt[i]);
	while ((sptep = pte_list_first(&sp->parent_ptes))) {
		spte_xchg(sptep, 0);
		pte_list_remove(&sp->parent_ptes, sptep);
	}
	/* Last, as KVM's __kvm_mmu_prepare_zap_page: see unaccount_shadowed. */
	if (sp->tracked)
		unaccount_shadowed(vm, sp);
	unsync_del(vm, sp);
	hash_del(sh, sp);
	cds_list_del(&sp->link);
	SH_COUNT_ADD(sh->nr_pages, -1);
	atomic_fetch_sub_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->zapped, 1, memory_order_relaxed);
	sp_mark_invalid(sp);
	if (sp->root_count) {
		/* Still loaded: the vCPUs reload, and the last put frees it. */
		CDS_INIT_LIST_HEAD(&sp->link);
		vm_make_all_vcpus_request(vm, VCPU_REQ_MMU_RELOAD);
	} else {
		cds_list_add(&sp->link, invalid);
	}
}

/* The flush must come before the free: a vCPU may still walk the tables. */
static void commit_zap(struct vmmu_vm *vm, struct cds_list_head *invalid, bool flush)
{
	struct shadow_page *sp, *tmp;

	if (cds_list_empty(invalid) && !flush)
		return;
	vm_flush_remote_tlbs(vm);
	cds_list_for_each_entry_safe(sp, tmp, invalid, link) {
		cds_list_del(&sp->link);
		sp_free(sp);
	}
}

/* Keep the VM under its page cap: zap the least recently created unused pages. */
static bool make_pages_available(struct vmmu_vm *vm, struct cds_list_head *invalid)
{
	struct shadow_vm *sh = vm->shadow;
	struct cds_list_head *pos, *p;

	if (sh->nr_pages + SHADOW_MIN_FREE_PAGES <= sh->max_pages)
		return true;
	cds_list_for_each_prev_safe(pos, p, &sh->active) {
		struct shadow_page *sp = cds_list_entry(pos, struct shadow_page, link);

		if (sh->nr_pages + SHADOW_MIN_FREE_PAGES <= sh->max_pages)
			break;
		if (sp->root_count)
			continue;
		prepare_zap(vm, sp, invalid);
		atomic_fetch_add_explicit(&sh->recycled, 1, memory_order_relaxed);
	}
	return sh->nr_pages + SHADOW_MIN_FREE_PAGES <= sh->max_pages;
}

/* ---- roles ---------------------------------------------------------------------------- */

union cpu_role shadow_calc_cpu_role(const struct vmmu_vcpu *v)
{
	const struct walk_cpu *w = &v->wcpu;
	union cpu_role r = { .as_u64 = 0 };

	r.base.access = ACC_ALL;
	r.ext.valid = 1;
	if (w->mode == WALK_MODE_NONE) {
		/* Paging off: nothing else of the state matters to translation. */
		r.base.direct = 1;
		return r;
	}
	r.base.level = w->mode == WALK_MODE_32 ? 2 : w->mode == WALK_MODE_PAE ? 3 : w->mode == WALK_MODE_4LEVEL ? 4 : 5;
	r.base.has_4_byte_gpte = w->mode == WALK_MODE_32;
	r.base.efer_nx = w->nxe;
	r.base.cr0_wp = w->wp;
	r.base.smep_andnot_wp = w->smep && !w->wp;
	r.base.smap_andnot_wp = w->smap && !w->wp;
	r.base.pke_andnot_wp = w->pke && !w->wp && w->mode >= WALK_MODE_4LEVEL;
	r.ext.cr0_pg = 1;
	r.ext.cr4_pae = w->mode != WALK_MODE_32;
	r.ext.cr4_pse = w->pse;
	r.ext.cr4_pke = w->pke;
	r.ext.cr4_smap = w->smap;
	r.ext.cr4_smep = w->smep;
	r.ext.cr4_la57 = w->mode == WALK_MODE_5LEVEL;
	r.ext.efer_lma = w->mode >= WALK_MODE_4LEVEL;
	return r;
}

/*
 * The role of the roots (KVM's kvm_calc_shadow_mmu_root_page_role): the
 * guest's base role, with 32-bit, PAE and unpaged guests shadowed under four
 * PDPTE-like entries (KVM's pae_root), as a 64-bit host must.
 */
static union sp_role calc_root_role(union cpu_role cr)
{
	union sp_role r = cr.base;

	if (!cr.ext.cr0_pg || r.level < 4)
		r.level = 3;
	return r;
}

static bool root_valid(const struct shadow_vm *sh, const struct shadow_page *sp)
{
	return sp && !sp_obsolete(sh, sp);
}

/* ---- guest memory, as the MMU reads it ------------------------------------------------- */

/* Entries of guest page tables read by the MMU itself (walks, syncs); outside
 * RAM reads as a failure, which the walk turns into a not-present #PF. */
static int guest_read(struct vmmu_vm *vm, uint64_t gpa, unsigned int size, uint64_t *val)
{
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	uintptr_t hva;

	if (!s || (s->flags & MEMSLOT_INVALID))
		return -1;
	hva = memslot_gfn_to_hva(s, gpa >> 12) + (gpa & 0xfff);
	*val = size == 8 ? __atomic_load_n((uint64_t *)hva, __ATOMIC_ACQUIRE)
			 : __atomic_load_n((uint32_t *)hva, __ATOMIC_ACQUIRE);
	return 0;
}

#define WALK_ABORT_NOT_RAM (-1)
#define WALK_ABORT_HOST (-2)
#define WALK_ABORT_RETRY (-3)	/* a table in a slot being deleted or moved */

struct swalk {
	struct vmmu_vcpu *v;
	int host_error;
	uint64_t bad_gpa;
};

static int swalk_read(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val)
{
	struct swalk *w = ctx;
	const struct memslot *s = memslots_find_gfn(vm_memslots(w->v->vm), gpa >> 12);

	/* Wait for a slot being deleted or moved, as a data page's fault does. */
	if (s && (s->flags & MEMSLOT_INVALID))
		return WALK_ABORT_RETRY;
	if (guest_read(w->v->vm, gpa, size, val))
		return WALK_ABORT_NOT_RAM;
	return 0;
}

/*
 * A/D updates of guest entries, as the CPU would make them: atomic on guest
 * memory, and a store to guest memory like any other (dirty logging sees it).
 * The host must let us write there.
 */
static int swalk_cmpxchg(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	struct swalk *w = ctx;
	struct vmmu_vm *vm = w->v->vm;
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	const struct hostprot_set *hs = atomic_load_explicit(&vm->hostprot, memory_order_acquire);
	unsigned int prot;
	uintptr_t hva;
	bool ok;

	if (!s)
		return WALK_ABORT_NOT_RAM;
	if (s->flags & MEMSLOT_INVALID)
		return WALK_ABORT_RETRY;
	hva = memslot_gfn_to_hva(s, gpa >> 12);
	hostprot_uniform(hs, hva, 4096, &prot);
	if (prot != VMMU_HOST_RW || (s->flags & VMMU_MEM_READONLY) ||
	    atomic_load_explicit(&vm->released, memory_order_acquire)) {
		w->host_error = VMMU_EFAULT;
		w->bad_gpa = gpa;
		return WALK_ABORT_HOST;
	}
	hva += gpa & 0xfff;
	if (size == 8) {
		ok = __atomic_compare_exchange_n((uint64_t *)hva, &old, new_val, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE);
	} else {
		uint32_t o = (uint32_t)old;

		ok = __atomic_compare_exchange_n((uint32_t *)hva, &o, (uint32_t)new_val, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE);
	}
	if (ok && memslot_logging(s))
		vcpu_mark_page_dirty(w->v, s, gpa >> 12);
	return ok;
}

static inline unsigned int walk_acc_to_acc(unsigned int wacc)
{
	return ((wacc & WALK_ACC_W) ? ACC_WRITE : 0) | ((wacc & WALK_ACC_U) ? ACC_USER : 0) |
	       ((wacc & WALK_ACC_X) ? ACC_EXEC : 0);
}

/* The rights one guest entry grants (SDM 4.6): W, U, and X unless XD with NXE. */
static inline unsigned int gpte_access(const struct walk_cpu *w, uint64_t gpte, bool four_byte)
{
	unsigned int a = ACC_EXEC;

	if (gpte & PT_W)
		a |= ACC_WRITE;
	if (gpte & PT_U)
		a |= ACC_USER;
	if (!four_byte && w->nxe && (gpte & PT_NX))
		a &= ~ACC_EXEC;
	return a;
}

/* Bits of a guest entry whose change can change a translation (not A/D). */
static inline uint64_t gpte_cmp_mask(void)
{
	return ~(uint64_t)(PT_A | PT_D);
}

/* ---- sync ----------------------------------------------------------------------------- */

/* Where entry i of sp lives in the guest table (quadrants of 4-byte tables). */
static uint64_t sp_gpte_gpa(const struct shadow_page *sp, unsigned int i, unsigned int *size)
{
	if (!sp->role.has_4_byte_gpte) {
		*size = 8;
		return (sp->gfn << 12) + 8ULL * i;
	}
	*size = 4;
	if (sp->role.level == PG_LEVEL_4K)
		return (sp->gfn << 12) + 4ULL * (i + 512u * sp->role.quadrant);
	/* A 32-bit PDE maps 4 MiB: two shadow PDEs per guest PDE. */
	return (sp->gfn << 12) + 4ULL * (i / 2 + 256u * sp->role.quadrant);
}

static gfn_t gpte_gfn(const struct walk_cpu *w, uint64_t gpte, bool four_byte)
{
	if (four_byte)
		return (gpte & 0xfffff000ULL) >> 12;
	return (gpte & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12;
}

/* Reserved bits of a 4K guest PTE (SDM tables 4-11, 4-19): a shadow of such
 * an entry must not exist, the next fault re-walks and raises the #PF. */
static bool gpte_pte_reserved(const struct walk_cpu *w, uint64_t gpte, bool four_byte)
{
	uint64_t rsvd;

	if (four_byte)
		return false;
	rsvd = w->mode == WALK_MODE_PAE ? GENMASK_ULL(62, w->maxphyaddr) : GENMASK_ULL(51, w->maxphyaddr);
	if (!w->nxe)
		rsvd |= PT_NX;
	return gpte & rsvd;
}

static unsigned int spte_rights(uint64_t spte)
{
	return ((spte & PT_W) ? ACC_WRITE : 0) | ((spte & PT_U) ? ACC_USER : 0) | ((spte & PT_NX) ? 0 : ACC_EXEC);
}

/*
 * Bring an unsync leaf page up to date with its guest table (KVM's
 * kvm_sync_page): every SPTE whose guest entry no longer grants what it
 * grants is zapped (the next fault re-derives it).  The page must already be
 * write-protected and flushed, so no guest store can slip in after the reads.
 */
static bool resync_page(struct vmmu_vcpu *v, struct shadow_page *sp)
{
	struct vmmu_vm *vm = v->vm;
	bool flush = false;

	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++) {
		uint64_t *sptep = &sp->spt[i], spte = spte_load(sptep), gpte;
		unsigned int size = 8, acc;
		bool zap = false;

		if (!spte)
			continue;
		/* Not present, or not accessed: the guest must walk it again (and
		 * set A), as KVM's prefetch_invalid_gpte says. */
		if (guest_read(vm, sp_gpte_gpa(sp, i, &size), size, &gpte) || !(gpte & PT_P) || !(gpte & PT_A) ||
		    gpte_pte_reserved(&v->wcpu, gpte, size == 4) || !is_shadow_present(spte)) {
			zap = true;
		} else {
			acc = sp->role.access & gpte_access(&v->wcpu, gpte, size == 4);
			if (!(gpte & PT_D))
				acc &= ~ACC_WRITE;
			zap = gpte_gfn(&v->wcpu, gpte, size == 4) != sp->gfns[i] ||
			      (spte_rights(spte) & ~acc) ||
			      (!sp->role.has_4_byte_gpte && ((spte ^ gpte) & SPTE_PKEY_MASK) &&
			       v->wcpu.mode >= WALK_MODE_4LEVEL);
		}
		if (zap)
			flush |= zap_spte(vm, sp, sptep);
	}
	unsync_del(vm, sp);
	STAT_INC(v->stat.unsync_syncs);
	return flush;
}

/* Sync the given unsync pages: protect all, one flush, then re-read all. */
static bool sync_pages(struct vmmu_vcpu *v, struct shadow_page **sps, unsigned int n)
{
	struct vmmu_vm *vm = v->vm;
	bool flush = false;

	for (unsigned int i = 0; i < n; i++)
		flush |= rmap_write_protect(vm, sps[i]->gfn, false);
	if (flush)
		vm_flush_remote_tlbs(vm);
	flush = false;
	for (unsigned int i = 0; i < n; i++)
		flush |= resync_page(v, sps[i]);
	return flush;
}

/* mmu_lock held for write. */
static bool sync_all_locked(struct vmmu_vcpu *v)
{
	struct shadow_vm *sh = v->vm->shadow;
	struct shadow_page *batch[64], *sp;
	bool flush = false;

	while (sh->nr_unsync) {
		unsigned int n = 0;

		cds_list_for_each_entry(sp, &sh->unsync, unsync_link) {
			batch[n++] = sp;
			if (n == 64)
				break;
		}
		flush |= sync_pages(v, batch, n);
	}
	return flush;
}

/* ---- getting shadow pages ---------------------------------------------------------------- */

static struct shadow_page *get_sp(struct vmmu_vcpu *v, gfn_t gfn, union sp_role role, bool *flush,
				  struct cds_list_head *invalid)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp;
	struct pt_page *pt;

again:
	for_each_gfn_sp(sh, sp, gfn) {
		if (sp->role.word == role.word) {
			if (sp->unsync)
				*flush |= sync_pages(v, &sp, 1);
			return sp;
		}
		/* A non-leaf shadow of gfn is wanted: no page of it may stay out of
		 * sync, or its stores would not be seen (KVM zaps them). */
		if (!role.direct && role.level > PG_LEVEL_4K && sp->unsync) {
			prepare_zap(vm, sp, invalid);
			*flush = true;
			goto again;
		}
	}
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return NULL;
	if (!role.direct && role.level == PG_LEVEL_4K) {
		sp->gfns = calloc(PT64_ENT_PER_PAGE, sizeof(*sp->gfns));
		if (!sp->gfns) {
			free(sp);
			return NULL;
		}
	}
	pt = pt_cache_take(&v->pt_cache);
	if (VM_BUG_ON(vm, !pt, "page-table cache empty under mmu_lock")) {
		free(sp->gfns);
		free(sp);
		return NULL;
	}
	pt->owner = sp;
	pt->level = role.level;
	pt->gfn = gfn;
	sp->pt = pt;
	sp->spt = pt->spt;
	sp->gfn = gfn;
	sp->role = role;
	sp->valid_gen = sh->valid_gen;
	sp->hash_next = sh->hash[sp_hash(gfn)];
	sh->hash[sp_hash(gfn)] = sp;
	cds_list_add(&sp->link, &sh->active);
	CDS_INIT_LIST_HEAD(&sp->unsync_link);
	SH_COUNT_ADD(sh->nr_pages, 1);
	atomic_fetch_add_explicit(&vm->stat.pt_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->created, 1, memory_order_relaxed);
	if (!role.direct)
		*flush |= account_shadowed(vm, sp);
	return sp;
}

static void put_root(struct vmmu_vm *vm, struct shadow_page *sp, struct cds_list_head *invalid)
{
	if (!sp)
		return;
	VM_BUG_ON(vm, !sp->root_count, "root %p put more often than got", (void *)sp);
	if (--sp->root_count == 0 && sp->role.invalid)
		cds_list_add(&sp->link, invalid);	/* prepare_zap already unlinked it */
}

/*
 * Leaf pages of a tracked gfn may go out of sync instead of staying
 * write-protected (KVM's mmu_try_to_unsync_pages).  Returns false when gfn
 * must stay write-protected: some shadow page of it is a non-leaf table.
 */
static bool try_unsync(struct vmmu_vm *vm, gfn_t gfn)
{
	struct shadow_vm *sh = vm->shadow;
	const struct memslot *s = slot_of(vm, gfn);
	struct shadow_page *sp;

	if (!s || !s->shadow->write_track[gfn - s->base_gfn])
		return true;
	for_each_gfn_sp(sh, sp, gfn)
		if (!sp->role.direct && sp->role.level != PG_LEVEL_4K)
			return false;
	for_each_gfn_sp(sh, sp, gfn) {
		if (sp->role.direct || sp->unsync)
			continue;
		sp->unsync = true;
		cds_list_add(&sp->unsync_link, &sh->unsync);
		SH_COUNT_ADD(sh->nr_unsync, 1);
	}
	return true;
}

/* ---- the page fault --------------------------------------------------------------------- */

static inline unsigned int shadow_index(uint64_t gva, int level)
{
	return (unsigned int)((gva >> (12 + 9 * (level - 1))) & (PT64_ENT_PER_PAGE - 1));
}

/* Where the guest entry of level gl on gva's walk lives (not the PAE PDPTEs). */
static uint64_t walk_entry_gpa(const struct walk_cpu *w, const struct walk_result *wr, uint64_t gva, int gl,
			       unsigned int *size)
{
	if (w->mode == WALK_MODE_32) {
		*size = 4;
		return wr->table_gpa[gl] + 4 * ((gva >> (12 + 10 * (gl - 1))) & 1023);
	}
	*size = 8;
	return wr->table_gpa[gl] + 8 * ((gva >> (12 + 9 * (gl - 1))) & 511);
}

static int guest_top_level(const struct walk_cpu *w)
{
	switch (w->mode) {
	case WALK_MODE_32: return 2;
	case WALK_MODE_PAE: return 2;	/* the PDPTEs are registers, reloaded with CR3 */
	case WALK_MODE_4LEVEL: return 4;
	case WALK_MODE_5LEVEL: return 5;
	default: return 0;
	}
}

/*
 * KVM's FNAME(gpte_changed): the walk ran without mmu_lock; the tables it read
 * are now write-protected (or their pages unsync, where stale is allowed), so
 * re-reading them once under the lock tells whether the walk is still true.
 */
static bool walk_changed(struct vmmu_vcpu *v, const struct walk_result *wr, uint64_t gva)
{
	int top = guest_top_level(&v->wcpu);

	for (int gl = wr->level; gl <= top; gl++) {
		unsigned int size;
		uint64_t gpa = walk_entry_gpa(&v->wcpu, wr, gva, gl, &size), now;

		if (guest_read(v->vm, gpa, size, &now))
			return true;
		if ((now ^ wr->pte[gl]) & gpte_cmp_mask() & (size == 4 ? 0xffffffffULL : ~0ULL))
			return true;
	}
	return false;
}

/* Rights the guest entries above level gl grant (what an indirect page of
 * level gl inherits in its role). */
static unsigned int access_above(const struct walk_cpu *w, const struct walk_result *wr, int gl)
{
	unsigned int acc = ACC_ALL;
	int top = guest_top_level(w);

	for (int l = top; l > gl; l--)
		acc &= gpte_access(w, wr->pte[l], w->mode == WALK_MODE_32);
	return acc;
}

/* Would the hardware (CR0.WP forced on) let this access through an SPTE? */
static bool hw_allows(const struct vmmu_vcpu *v, unsigned int acc, unsigned int pkey, unsigned int walk_access)
{
	unsigned int wacc = WALK_ACC_R | ((acc & ACC_WRITE) ? WALK_ACC_W : 0) | ((acc & ACC_USER) ? WALK_ACC_U : 0) |
			    ((acc & ACC_EXEC) ? WALK_ACC_X : 0);

	return !walk_permission_fault(&v->hw_wcpu, wacc, pkey, walk_access);
}

struct sfetch {
	uint64_t gva;
	unsigned int walk_access;
	const struct walk_result *wr;
	struct page_fault *pf;
	struct shadow_fault *out;
	struct cds_list_head *invalid;
	bool flush;
};

static int fetch_leaf(struct vmmu_vcpu *v, struct shadow_page *sp, struct sfetch *f)
{
	struct vmmu_vm *vm = v->vm;
	const struct walk_result *wr = f->wr;
	uint64_t *sptep = &sp->spt[shadow_index(f->gva, PG_LEVEL_4K)];
	unsigned int i = sptep_index(sptep);
	gfn_t gfn = wr->gpa >> 12;
	bool write = f->walk_access & WALK_WRITE;
	unsigned int acc = walk_acc_to_acc(wr->access);
	unsigned int pkey = v->wcpu.mode >= WALK_MODE_4LEVEL ? wr->pkey : 0;
	uint64_t old = spte_load(sptep), spte;

	/* A clean guest page stays read-only, so the write that dirties it
	 * faults and the walk sets D (KVM's protect_clean_gpte). */
	if (!wr->dirty && !write)
		acc &= ~ACC_WRITE;
	/*
	 * CR0.WP=0 on hardware that runs with WP=1: a supervisor write to a
	 * read-only page becomes a writable supervisor mapping (KVM's trick,
	 * hence cr0_wp/smep_andnot_wp in the role).  With SMAP or protection
	 * keys a user page must stay a user page (both check user pages even
	 * for supervisor accesses), so that write is emulated below instead;
	 * so is one into a direct page, which other mappings of the frame may
	 * share with a clean guest entry whose D bit the write must not skip.
	 */
	if (write && !(acc & ACC_WRITE) && !v->wcpu.wp && !sp->role.direct &&
	    !((acc & ACC_USER) && (sp->role.smap_andnot_wp || sp->role.pke_andnot_wp))) {
		acc = (acc | ACC_WRITE) & ~ACC_USER;
		if (v->wcpu.smep)
			acc &= ~ACC_EXEC;
	}

	if (f->pf->is_mmio) {
		unsigned int macc = acc & (ACC_WRITE | ACC_USER);

		if (is_shadow_present(old))
			f->flush |= zap_spte(vm, sp, sptep);
		if (!sp->role.direct)
			sp->gfns[i] = gfn;
		spte_store(sptep, make_mmio_spte(&vm->fmt, gfn, macc, f->pf->mmio_gen));
		VM_STAT_ADD(vm->stat.mmio_sptes, 1);
		return RET_PF_EMULATE;
	}

	if (!f->pf->map_writable)
		acc &= ~ACC_WRITE;
	if ((acc & ACC_WRITE) && !try_unsync(vm, gfn))
		acc &= ~ACC_WRITE;
	spte = make_leaf_spte(&vm->fmt, f->pf->pfn, PG_LEVEL_4K, acc, f->pf->map_writable, false) |
	       ((uint64_t)pkey << SPTE_PKEY_SHIFT);

	if (is_shadow_present(old) &&
	    ((sp->role.direct ? sp->gfn + i : sp->gfns[i]) != gfn || spte_to_pfn(old) != f->pf->pfn)) {
		f->flush |= zap_spte(vm, sp, sptep);
		old = 0;
	}
	if (is_shadow_present(old)) {
		uint64_t prev = spte_xchg(sptep, spte);

		if ((prev & PT_W) && !(spte & PT_W))
			f->flush = true;
	} else {
		const struct memslot *s = slot_of(vm, gfn);

		if (VM_BUG_ON(vm, !s, "mapping gfn %#llx that has no memslot", (unsigned long long)gfn))
			return RET_PF_RETRY;
		if (!sp->role.direct)
			sp->gfns[i] = gfn;
		spte_store(sptep, spte);
		pte_list_add(&v->sh.desc_cache, &s->shadow->rmap[gfn - s->base_gfn], sptep);
		s->shadow->nr_rmap++;
		atomic_fetch_add_explicit(&vm->stat.pages[PG_LEVEL_4K], 1, memory_order_relaxed);
	}
	if ((spte & PT_W) && memslot_logging(f->pf->slot))
		vcpu_mark_page_dirty(v, f->pf->slot, gfn);
	/*
	 * What the shadow cannot grant, vmmu does itself: a store to a
	 * write-protected guest table, or one the guest allows only because of
	 * CR0.WP=0 (SMAP or a protection key forbids the converted mapping).
	 */
	if (write && !hw_allows(v, spte_rights(spte), pkey, f->walk_access)) {
		f->out->ptwrite = true;
		f->out->hva = f->pf->hva + (wr->gpa & 0xfff);
		return RET_PF_EMULATE;
	}
	return (old & ~(uint64_t)(PT_A | PT_D)) == (spte & ~(uint64_t)(PT_A | PT_D)) ? RET_PF_SPURIOUS : RET_PF_FIXED;
}

static bool roots_valid(struct vmmu_vcpu *v)
{
	struct shadow_vm *sh = v->vm->shadow;

	if (!v->mmu_ready)
		return false;
	if (v->sh.pae_root_mode) {
		for (int i = 0; i < 4; i++)
			if (v->sh.pae_sp[i] && !root_valid(sh, v->sh.pae_sp[i]))
				return false;
		return true;
	}
	return root_valid(sh, v->sh.root.sp);
}

static int fetch(struct vmmu_vcpu *v, struct sfetch *f)
{
	struct vmmu_vm *vm = v->vm;
	const struct walk_result *wr = f->wr;
	bool four_byte = v->wcpu.mode == WALK_MODE_32;
	struct shadow_page *sp;
	int level;

	if (v->sh.pae_root_mode) {
		sp = v->sh.pae_sp[(f->gva >> 30) & 3];
		level = 2;
	} else {
		sp = v->sh.root.sp;
		level = v->sh.root_role.level;
	}
	if (!sp) {
		/* A PDPTE the load saw not present, present now: reload. */
		atomic_fetch_or(&v->requests, VCPU_REQ_MMU_RELOAD);
		return RET_PF_RETRY;
	}
	for (; level > PG_LEVEL_4K; level--) {
		uint64_t *sptep = &sp->spt[shadow_index(f->gva, level)];
		uint64_t spte = spte_load(sptep);
		bool direct = wr->level >= level;
		union sp_role role = sp->role;
		struct shadow_page *child;
		gfn_t gfn;

		sp->write_flooding_count = 0;
		role.level = level - 1;
		role.quadrant = 0;
		role.direct = direct;
		if (direct) {
			gfn = (wr->gpa >> 12) & ~(spte_level_pages(level) - 1);
			role.access = walk_acc_to_acc(wr->access);
			/* A clean huge page must not share W with a dirty one: the
			 * write through it has to fault and set its D bit. */
			if (!wr->dirty && !(f->walk_access & WALK_WRITE))
				role.access &= ~ACC_WRITE;
			role.pkey = v->wcpu.mode >= WALK_MODE_4LEVEL ? wr->pkey : 0;
		} else {
			gfn = wr->table_gpa[level - 1] >> 12;
			role.access = access_above(&v->wcpu, wr, level - 1);
			if (four_byte && level - 1 == PG_LEVEL_4K)
				role.quadrant = (f->gva >> 21) & 1;
		}
		if (is_shadow_present(spte)) {
			child = spte_to_child(vm, spte);
			if (child->gfn == gfn && child->role.word == role.word) {
				sp = child;
				continue;
			}
			/* The guest changed this entry in a way we missed only if
			 * the page was unsync; either way, relink. */
			f->flush |= zap_spte(vm, sp, sptep);
		}
		child = get_sp(v, gfn, role, &f->flush, f->invalid);
		if (!child) {
			f->out->host_error = VMMU_ENOMEM;
			return RET_PF_FAULT;
		}
		spte_store(sptep, make_nonleaf_spte(&vm->fmt, (uintptr_t)child->spt >> 12));
		pte_list_add(&v->sh.desc_cache, &child->parent_ptes, sptep);
		sp = child;
	}
	sp->write_flooding_count = 0;
	/* The new write protections must reach every TLB before the walk is
	 * re-checked: a store through an old writable entry after the check
	 * would go unseen. */
	if (f->flush) {
		vm_flush_remote_tlbs(vm);
		f->flush = false;
	}
	if (v->wcpu.mode != WALK_MODE_NONE && walk_changed(v, wr, f->gva))
		return RET_PF_RETRY;
	return fetch_leaf(v, sp, f);
}

/*
 * A reserved-bit fault on an MMIO SPTE of the current generation goes to the
 * embedder without a guest walk (KVM's handle_mmio_page_fault) when the SPTE's
 * saved rights prove the access allowed; otherwise the slow path decides.
 */
static int mmio_fast(struct vmmu_vcpu *v, uint64_t gva, unsigned int walk_access, struct shadow_fault *out)
{
	struct vmmu_vm *vm = v->vm;
	uint64_t *sptep, spte, root;
	unsigned int acc, wacc;
	int level;

	if ((walk_access & WALK_FETCH) || (v->wcpu.pke && v->wcpu.mode >= WALK_MODE_4LEVEL) || !roots_valid(v))
		return RET_PF_INVALID;
	root = root_entry(v, gva, &level);	/* sets level: not in the same call */
	sptep = find_leaf_sptep(root, level, gva);
	if (!sptep)
		return RET_PF_INVALID;
	spte = spte_load(sptep);
	if (!is_mmio_spte(&vm->fmt, spte) || !mmio_spte_gen_matches(spte, vm_memslots(vm)->generation))
		return RET_PF_INVALID;
	acc = get_mmio_spte_access(&vm->fmt, spte);
	wacc = WALK_ACC_R | WALK_ACC_X | ((acc & ACC_WRITE) ? WALK_ACC_W : 0) | ((acc & ACC_USER) ? WALK_ACC_U : 0);
	if (walk_permission_fault(&v->wcpu, wacc, 0, walk_access))
		return RET_PF_INVALID;
	out->gpa = (get_mmio_spte_gfn(spte) << 12) | (gva & 0xfff);
	return RET_PF_EMULATE;
}

/*
 * The lockless fast page fault on shadow pages (seed 002), only where KVM
 * allows it: under a direct root (paging off), whose pages all map gfn =
 * page index.  An indirect page's gfns can change under a lockless writer
 * (the ABA race of seed 002's locking notes), so a paging guest never comes
 * here.  Like the TDP path: W back with one cmpxchg when only dirty logging
 * took it (MMU-writable still set); write tracking clears MMU-writable too.
 */
static int shadow_fast_pf(struct vmmu_vcpu *v, uint64_t gva, uint32_t hw_error)
{
	struct vmmu_vm *vm = v->vm;
	int level, ret = RET_PF_INVALID;
	uint64_t root = root_entry(v, gva, &level);
	uint64_t *sptep = find_leaf_sptep(root, level, gva);
	uint64_t spte, new_spte = 0;

	if (!sptep)
		return RET_PF_INVALID;
	spte = spte_load(sptep);
	for (int retry = 0; retry < 4; retry++) {
		const struct memslot *s;

		if (!is_shadow_present(spte) || !is_mmu_writable_spte(&vm->fmt, spte))
			break;
		if (spte & PT_W) {
			new_spte = spte;
			ret = RET_PF_SPURIOUS;
			break;
		}
		new_spte = spte | PT_W;
		if (!atomic_compare_exchange_strong_explicit((_Atomic uint64_t *)sptep, &spte, new_spte,
							     memory_order_acq_rel, memory_order_acquire))
			continue;
		/* After the cmpxchg, never before: the harvest that clears the
		 * bit re-protects first, so the mark cannot be lost. */
		s = memslots_find_gfn(vm_memslots(vm), gva >> 12);
		if (s && memslot_logging(s))
			vcpu_mark_page_dirty(v, s, gva >> 12);
		ret = RET_PF_FIXED;
		break;
	}
	if (ret != RET_PF_INVALID)
		mmu_trace_fast_pf(v, gva, hw_error, sptep, spte, new_spte, ret == RET_PF_FIXED);
	return ret;
}

int shadow_page_fault(struct vmmu_vcpu *v, uint64_t gva, unsigned int walk_access, uint32_t hw_error,
		      struct shadow_fault *out)
{
	struct vmmu_vm *vm = v->vm;
	struct swalk w = { .v = v };
	const struct walk_mem_ops ops = { swalk_read, swalk_cmpxchg, &w };
	struct walk_result wr;
	struct page_fault pf;
	CDS_LIST_HEAD(invalid);
	struct sfetch f;
	int r;

	memset(out, 0, sizeof(*out));
	STAT_INC(v->stat.pf_taken);
	if ((hw_error & PFERR_RSVD) && mmio_fast(v, gva, walk_access, out) == RET_PF_EMULATE) {
		STAT_INC(v->stat.pf_mmio_spte);
		STAT_INC(v->stat.pf_emulate);
		return RET_PF_EMULATE;
	}

	if (v->sh.root_role.direct && !(vm->cfg.flags & VMMU_VM_NO_FAST_PF) && (hw_error & PFERR_P) &&
	    (walk_access & WALK_WRITE) && !(hw_error & PFERR_RSVD) && roots_valid(v)) {
		r = shadow_fast_pf(v, gva, hw_error);
		if (r == RET_PF_FIXED || r == RET_PF_SPURIOUS) {
			if (r == RET_PF_FIXED)
				STAT_INC(v->stat.pf_fast_fixed);
			else
				STAT_INC(v->stat.pf_fast_spurious);
			return mmu_count_pf_result(v, r);
		}
		STAT_INC(v->stat.pf_fast_failed);
	}

	if (v->wcpu.mode == WALK_MODE_NONE) {
		memset(&wr, 0, sizeof(wr));
		wr.gpa = gva;
		wr.level = WALK_MAX_LEVELS;	/* everything is "huge": direct pages */
		wr.access = WALK_ACC_W | WALK_ACC_U | WALK_ACC_X | WALK_ACC_R;
		wr.dirty = true;
	} else {
		r = walk_gva(&v->wcpu, &ops, gva, walk_access, &wr);
		if (r == WALK_FAULT || r == WALK_ABORT_NOT_RAM) {
			out->guest_fault = true;
			out->vector = r == WALK_FAULT ? wr.vector : WALK_VECTOR_PF;
			/* A table outside RAM reads as not present (as KVM's walker). */
			out->error_code = r == WALK_FAULT ? wr.error_code
							  : walk_pf_error_code(&v->wcpu, walk_access, 0);
			out->fault_addr = r == WALK_FAULT ? wr.fault_addr : gva;
			STAT_INC(v->stat.guest_faults);
			return RET_PF_GUEST_FAULT;
		}
		if (r == WALK_ABORT_HOST) {
			out->host_error = w.host_error;
			out->gpa = w.bad_gpa;
			return RET_PF_FAULT;
		}
		if (r == WALK_ABORT_RETRY)
			return mmu_count_pf_result(v, RET_PF_RETRY);
	}
	out->gpa = wr.gpa;

	memset(&pf, 0, sizeof(pf));
	pf.addr = wr.gpa;
	pf.gfn = wr.gpa >> 12;
	pf.write = walk_access & WALK_WRITE;
	pf.exec = walk_access & WALK_FETCH;
	r = mmu_faultin(v, &pf);
	if (r == RET_PF_EMULATE) {
		out->readonly_write = pf.readonly_write;
		STAT_INC(v->stat.pf_emulate);
		return r;
	}
	if (r == RET_PF_FAULT) {
		out->host_error = pf.host_error;
		return r;
	}
	if (r != RET_PF_CONTINUE)
		goto out;
	if (pt_cache_topup(&vm->arena, &v->pt_cache, PT_CACHE_MIN) || desc_cache_topup(&v->sh.desc_cache)) {
		out->host_error = VMMU_ENOMEM;
		return RET_PF_FAULT;
	}

	f = (struct sfetch){ .gva = gva, .walk_access = walk_access, .wr = &wr, .pf = &pf, .out = out,
			     .invalid = &invalid };
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (!pf.is_mmio && mmu_invalidate_retry(vm, &pf)) {
		r = RET_PF_RETRY;
	} else if (!roots_valid(v)) {
		atomic_fetch_or(&v->requests, VCPU_REQ_MMU_RELOAD);
		r = RET_PF_RETRY;
	} else if (!make_pages_available(vm, &invalid)) {
		out->host_error = VMMU_ENOMEM;
		r = RET_PF_FAULT;
	} else {
		r = fetch(v, &f);
	}
	commit_zap(vm, &invalid, f.flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
out:
	return mmu_count_pf_result(v, r);
}

/* ---- stores the MMU performs ---------------------------------------------------------------- */

static bool write_misaligned(uint64_t gpa, unsigned int n, unsigned int pte_size)
{
	uint64_t off = gpa & (pte_size - 1);

	/* A single-byte store at an entry's start (Linux's clear_bit on the
	 * low flags) is not misaligned; anything crossing an entry is. */
	if (off == 0 && n == 1)
		return false;
	return off + n > pte_size;
}

/*
 * KVM's kvm_mmu_track_write: a guest store hit a shadowed table.  SPTEs made
 * from the entries it overwrote are zapped (the next fault re-derives them);
 * a page written in pieces, or written over and over without being walked
 * (no longer a page table: write flooding), is zapped whole.
 */
static bool track_write(struct vmmu_vm *vm, uint64_t gpa, unsigned int n, struct cds_list_head *invalid)
{
	struct shadow_vm *sh = vm->shadow;
	gfn_t gfn = gpa >> 12;
	struct shadow_page *sp;
	bool flush = false;

again:
	for_each_gfn_sp(sh, sp, gfn) {
		unsigned int size = sp->role.has_4_byte_gpte ? 4 : 8;
		bool misaligned = write_misaligned(gpa, n, size);
		unsigned int first, last;

		if (sp->role.direct)
			continue;
		if (misaligned || (sp->role.level > PG_LEVEL_4K && ++sp->write_flooding_count >= 3)) {
			if (!misaligned)
				atomic_fetch_add_explicit(&sh->flooded, 1, memory_order_relaxed);
			prepare_zap(vm, sp, invalid);
			flush = true;
			goto again;
		}
		first = (unsigned int)((gpa & 0xfff) / size);
		last = (unsigned int)(((gpa & 0xfff) + n - 1) / size);
		for (unsigned int g = first; g <= last; g++) {
			/* Guest entry g -> the SPTE(s) of this page made from it. */
			if (size == 8) {
				flush |= zap_spte(vm, sp, &sp->spt[g]);
			} else if (sp->role.level == PG_LEVEL_4K) {
				if (g / 512 == sp->role.quadrant)
					flush |= zap_spte(vm, sp, &sp->spt[g % 512]);
			} else if (g / 256 == sp->role.quadrant) {
				flush |= zap_spte(vm, sp, &sp->spt[(g % 256) * 2]);
				flush |= zap_spte(vm, sp, &sp->spt[(g % 256) * 2 + 1]);
			}
		}
	}
	return flush;
}

static void store_bytes(uintptr_t hva, const void *buf, unsigned int n)
{
	/* Aligned entry-sized stores are single-copy atomic, as on x86: a
	 * concurrent walker never sees half an entry. */
	if (n == 8 && !(hva & 7)) {
		uint64_t x;

		memcpy(&x, buf, 8);
		__atomic_store_n((uint64_t *)hva, x, __ATOMIC_RELEASE);
	} else if (n == 4 && !(hva & 3)) {
		uint32_t x;

		memcpy(&x, buf, 4);
		__atomic_store_n((uint32_t *)hva, x, __ATOMIC_RELEASE);
	} else {
		memcpy((void *)hva, buf, n);
	}
}

/* A store into a shadowed guest table is done: dirty logging and counters. */
static void pt_store_done(struct vmmu_vcpu *v, uint64_t gpa)
{
	struct vmmu_vm *vm = v->vm;
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);

	if (s && memslot_logging(s))
		vcpu_mark_page_dirty(v, s, gpa >> 12);
	atomic_fetch_add_explicit(&vm->shadow->pte_writes, 1, memory_order_relaxed);
	STAT_INC(v->stat.pt_write_emulations);
}

/*
 * Zap what shadow pages made of the entries [gpa, gpa + n) held before a
 * store, whether the store was made under the lock or just before it.
 * Caller in an RCU read section.
 */
static void track_store(struct vmmu_vm *vm, uint64_t gpa, const void *buf, uintptr_t hva, unsigned int n)
{
	CDS_LIST_HEAD(invalid);
	bool flush;

	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (buf)
		store_bytes(hva, buf, n);
	flush = track_write(vm, gpa, n, &invalid);
	commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
}

void shadow_emulated_store(struct vmmu_vcpu *v, uint64_t gpa, uintptr_t hva, const void *buf, unsigned int n)
{
	/*
	 * The store and the zaps are one step under mmu_lock: a fault that
	 * walked the old entry re-checks it under the lock (walk_changed), so it
	 * either sees the new value or installs before the zap removes it.
	 */
	vmmu_rcu_read_lock();
	track_store(v->vm, gpa, buf, hva, n);
	vmmu_rcu_read_unlock();
	pt_store_done(v, gpa);
}

void shadow_phys_store_done(struct vmmu_vcpu *v, const struct memslot *s, uint64_t gpa, unsigned int n)
{
	/*
	 * KVM's emulator order: guest memory first, page tracking second.  The
	 * store the caller just made and this load of the count pair with the
	 * count's increment and the walk re-check of account_shadowed(): a
	 * fault that began shadowing gfn from its old contents either re-reads
	 * the new entry, or its page is counted here and its SPTE zapped.
	 * (Checking first and storing second let such a fault install an SPTE
	 * from the old entry that no invalidation would ever remove.)
	 */
	shadow_track_barrier(v->vm->shadow);
	if (shadow_gfn_write_tracked(s, gpa >> 12)) {
		track_store(v->vm, gpa, NULL, 0, n);
		pt_store_done(v, gpa);
	} else if (memslot_logging(s)) {
		vcpu_mark_page_dirty(v, s, gpa >> 12);
	}
}

/* ---- roots ------------------------------------------------------------------------------------ */

static uint64_t pgd_gfn(const struct walk_cpu *w)
{
	if (w->mode == WALK_MODE_32)
		return (w->root & 0xfffff000ULL) >> 12;
	return (w->root & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12;
}

static void drop_roots_locked(struct vmmu_vcpu *v, bool prev_too, bool only_invalid, struct cds_list_head *invalid)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_vm *sh = vm->shadow;

	for (int i = 0; i < 4; i++) {
		if (v->sh.pae_sp[i] && (!only_invalid || !root_valid(sh, v->sh.pae_sp[i]))) {
			put_root(vm, v->sh.pae_sp[i], invalid);
			v->sh.pae_sp[i] = NULL;
			v->sh.pae_root[i] = 0;
		}
	}
	if (v->sh.root.sp && (!only_invalid || !root_valid(sh, v->sh.root.sp))) {
		put_root(vm, v->sh.root.sp, invalid);
		v->sh.root.sp = NULL;
	}
	for (unsigned int i = 0; i < v->sh.nr_prev; i++) {
		struct shadow_root_info *p = &v->sh.prev[i];

		if (p->sp && ((prev_too && !only_invalid) || !root_valid(sh, p->sp))) {
			put_root(vm, p->sp, invalid);
			p->sp = NULL;
		}
	}
}

void shadow_mmu_unload(struct vmmu_vcpu *v, bool prev_too)
{
	struct vmmu_vm *vm = v->vm;
	CDS_LIST_HEAD(invalid);
	bool any = v->sh.root.sp || v->sh.pae_sp[0] || v->sh.pae_sp[1] || v->sh.pae_sp[2] || v->sh.pae_sp[3];

	for (unsigned int i = 0; prev_too && i < v->sh.nr_prev; i++)
		any |= v->sh.prev[i].sp != NULL;
	v->mmu_ready = false;
	if (!any)
		return;

	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	drop_roots_locked(v, prev_too, false, &invalid);
	commit_zap(vm, &invalid, false);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	v->mmu_ready = false;
}

/* What the hardware walks from now on (KVM's root_hpa / pae_root). */
static void load_hw_root(struct vmmu_vcpu *v)
{
	if (v->sh.pae_root_mode)
		v->hw = (struct hw_root){ .table = v->sh.pae_root, .level = 3, .pae = true };
	else
		v->hw = (struct hw_root){ .table = v->sh.root.sp->spt, .level = v->sh.root_role.level };
}

int shadow_mmu_load(struct vmmu_vcpu *v)
{
	struct vmmu_vm *vm = v->vm;
	const struct walk_cpu *w = &v->wcpu;
	CDS_LIST_HEAD(invalid);
	bool flush = false;
	int r = 0;

	if (roots_valid(v))
		return 0;
	if (pt_cache_topup(&vm->arena, &v->pt_cache, PT_CACHE_MIN) || desc_cache_topup(&v->sh.desc_cache))
		return VMMU_ENOMEM;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	drop_roots_locked(v, false, true, &invalid);
	if (!make_pages_available(vm, &invalid)) {
		r = VMMU_ENOMEM;
		goto out;
	}
	if (v->sh.pae_root_mode) {
		for (int i = 0; i < 4; i++) {
			union sp_role role = v->sh.root_role;
			struct shadow_page *sp;
			gfn_t gfn;

			if (v->sh.pae_sp[i])
				continue;
			role.level = 2;
			if (w->mode == WALK_MODE_NONE) {
				gfn = (gfn_t)i << 18;
				role.direct = 1;
			} else if (w->mode == WALK_MODE_32) {
				gfn = pgd_gfn(w);
				role.quadrant = i;
			} else {
				if (!(w->pdptes[i] & PT_P))
					continue;
				gfn = (w->pdptes[i] & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12;
			}
			sp = get_sp(v, gfn, role, &flush, &invalid);
			if (!sp) {
				r = VMMU_ENOMEM;
				goto out;
			}
			sp->root_count++;
			v->sh.pae_sp[i] = sp;
			v->sh.pae_root[i] = make_nonleaf_spte(&vm->fmt, (uintptr_t)sp->spt >> 12);
		}
	} else if (!v->sh.root.sp) {
		struct shadow_page *sp = get_sp(v, pgd_gfn(w), v->sh.root_role, &flush, &invalid);

		if (!sp) {
			r = VMMU_ENOMEM;
			goto out;
		}
		sp->root_count++;
		v->sh.root = (struct shadow_root_info){ .pgd = pgd_gfn(w), .role = v->sh.root_role, .sp = sp };
	}
	/* A new root may lead to pages that went out of sync meanwhile. */
	flush |= sync_all_locked(v);
	load_hw_root(v);
	v->mmu_ready = true;
out:
	commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	if (!r) {
		/* Nothing the TLB holds was made from this root. */
		hw_tlb_flush(v);
		STAT_INC(v->stat.mmu_reloads);
	}
	return r;
}

void shadow_sync_roots(struct vmmu_vcpu *v)
{
	struct vmmu_vm *vm = v->vm;
	CDS_LIST_HEAD(invalid);
	bool flush;

	if (!__atomic_load_n(&vm->shadow->nr_unsync, __ATOMIC_RELAXED))
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	flush = sync_all_locked(v);
	commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

/*
 * MOV to CR3 with the role unchanged (KVM's kvm_mmu_new_pgd).  4/5-level
 * roots are kept with up to cfg.shadow_prev_roots others, most recent first,
 * so a switch back is a swap (fast_pgd_switch); PAE-style roots are rebuilt,
 * as in KVM, when what they shadow (CR3's directory, or the PDPTE registers)
 * changed.  Without the no-flush bit the guest asked for a TLB flush of the
 * PCID, which for shadow pages means: bring unsync pages up to date.
 */
static bool pae_roots_stale(const struct vmmu_vcpu *v)
{
	const struct walk_cpu *w = &v->wcpu;
	const struct shadow_vcpu *s = &v->sh;

	if (w->mode == WALK_MODE_32)
		return s->pae_sp[0] && s->pae_sp[0]->gfn != pgd_gfn(w);
	/* Paging off: the roots map fixed gfns.  Nothing loaded: the next
	 * entry loads what the state says. */
	if (w->mode != WALK_MODE_PAE || !(s->pae_sp[0] || s->pae_sp[1] || s->pae_sp[2] || s->pae_sp[3]))
		return false;
	for (int i = 0; i < 4; i++) {
		bool present = w->pdptes[i] & PT_P;

		if (present != (s->pae_sp[i] != NULL) ||
		    (present && s->pae_sp[i]->gfn != (w->pdptes[i] & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12))
			return true;
	}
	return false;
}

void shadow_new_pgd(struct vmmu_vcpu *v, bool noflush)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_vcpu *s = &v->sh;
	uint64_t pgd = pgd_gfn(&v->wcpu);
	CDS_LIST_HEAD(invalid);
	unsigned int i;

	if (s->pae_root_mode) {
		if (pae_roots_stale(v)) {
			shadow_mmu_unload(v, false);
			STAT_INC(v->stat.root_slow_switches);
		} else if (!noflush) {
			shadow_sync_roots(v);
		}
		return;
	}
	if (s->root.sp && s->root.pgd == pgd) {
		if (!noflush)
			shadow_sync_roots(v);
		return;
	}
	/*
	 * The cached roots are this vCPU's and so are their references: a hit
	 * is a swap without mmu_lock (KVM's fast_pgd_switch).  A root zapped
	 * meanwhile reads as invalid, or if the zap comes after the check, its
	 * reload request is already pending for the next entry.
	 */
	for (i = 0; i < s->nr_prev; i++)
		if (s->prev[i].sp && s->prev[i].pgd == pgd && s->prev[i].role.word == s->root_role.word &&
		    root_valid(vm->shadow, s->prev[i].sp))
			break;
	if (i < s->nr_prev) {
		struct shadow_root_info hit = s->prev[i];

		/* Most recent first: the old current becomes prev[0]. */
		for (; i > 0; i--)
			s->prev[i] = s->prev[i - 1];
		s->prev[0] = s->root;
		s->root = hit;
		load_hw_root(v);
		STAT_INC(v->stat.root_fast_switches);
		if (!noflush)
			shadow_sync_roots(v);
		return;
	}
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (s->nr_prev) {
		put_root(vm, s->prev[s->nr_prev - 1].sp, &invalid);
		for (i = s->nr_prev - 1; i > 0; i--)
			s->prev[i] = s->prev[i - 1];
		s->prev[0] = s->root;
	} else {
		put_root(vm, s->root.sp, &invalid);
	}
	s->root = (struct shadow_root_info){ .sp = NULL };
	v->mmu_ready = false;
	STAT_INC(v->stat.root_slow_switches);
	commit_zap(vm, &invalid, false);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

/*
 * The entry that leads to gva's table under the vCPU's current root, and that
 * table's level: a PAE-style root's entry for gva's quarter, or an entry made
 * up for a 4/5-level root page.  For find_leaf_sptep().
 */
static uint64_t root_entry(const struct vmmu_vcpu *v, uint64_t gva, int *level)
{
	if (v->sh.pae_root_mode) {
		*level = 2;
		return v->sh.pae_root[(gva >> 30) & 3];
	}
	*level = v->sh.root_role.level;
	return make_nonleaf_spte(&v->vm->fmt, (uintptr_t)v->sh.root.sp->spt >> 12);
}

/* The level-1 SPTE that maps gva under the root table entry root_spte, or NULL. */
static uint64_t *find_leaf_sptep(uint64_t root_spte, int level, uint64_t gva)
{
	uint64_t spte = root_spte, *sptep = NULL;

	for (; level >= PG_LEVEL_4K; level--) {
		uint64_t *table;

		if (!is_shadow_present(spte))
			return NULL;
		table = (uint64_t *)(uintptr_t)(spte & SPTE_BASE_ADDR_MASK);
		sptep = &table[shadow_index(gva, level)];
		spte = spte_load(sptep);
	}
	return sptep;
}

/*
 * INVLPG (KVM's kvm_mmu_invlpg): a leaf SPTE of gva in an unsync page may be
 * stale; zap it in every root, since INVLPG also drops global translations,
 * which any PCID may use.  Synced pages are exact already.
 */
void shadow_invlpg(struct vmmu_vcpu *v, uint64_t gva)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_vcpu *s = &v->sh;
	uint64_t roots[1 + VMMU_MAX_PREV_ROOTS];
	int levels[1 + VMMU_MAX_PREV_ROOTS];
	unsigned int n = 0;
	CDS_LIST_HEAD(invalid);
	bool flush = false;

	if (!__atomic_load_n(&vm->shadow->nr_unsync, __ATOMIC_RELAXED))
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (s->pae_root_mode || s->root.sp) {
		roots[n] = root_entry(v, gva, &levels[n]);
		n++;
	}
	if (!s->pae_root_mode) {
		for (unsigned int i = 0; i < s->nr_prev; i++) {
			if (!s->prev[i].sp)
				continue;
			roots[n] = make_nonleaf_spte(&vm->fmt, (uintptr_t)s->prev[i].sp->spt >> 12);
			levels[n++] = s->prev[i].sp->role.level;
		}
	}
	for (unsigned int i = 0; i < n; i++) {
		uint64_t *sptep = find_leaf_sptep(roots[i], levels[i], gva);
		struct shadow_page *sp;

		if (!sptep)
			continue;
		sp = sptep_to_sp(vm, sptep);
		if (sp->unsync)
			flush |= zap_spte(vm, sp, sptep);
	}
	commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

bool mmu_update_context(struct vmmu_vcpu *v)
{
	union cpu_role cr = shadow_calc_cpu_role(v);
	struct vmmu_vm *vm = v->vm;

	v->hw_wcpu = v->wcpu;
	v->hw_wcpu.wp = true;
	/* SMEP, SMAP and protection keys exist only with paging. */
	if (v->wcpu.mode == WALK_MODE_NONE)
		v->hw_wcpu.smep = v->hw_wcpu.smap = v->hw_wcpu.pke = false;
	if (cr.as_u64 == v->sh.cpu_role.as_u64)
		return false;
	v->sh.cpu_role = cr;
	STAT_INC(v->stat.mmu_ctx_rebuilds);
	if (vm->cfg.mmu == VMMU_MMU_SHADOW) {
		union sp_role rr = calc_root_role(cr);

		if (rr.word != v->sh.root_role.word || v->mmu_ready) {
			/* KVM's kvm_mmu_reset_context: every root goes, previous too. */
			shadow_mmu_unload(v, true);
			v->sh.root_role = rr;
			v->sh.pae_root_mode = rr.level == 3;
			v->sh.nr_prev = vm->cfg.shadow_prev_roots;
		}
	}
	return true;
}

/* ---- host-side operations ------------------------------------------------------------------------ */

/* The gfns of [start, end) in slots that map anything (a 2^31-page slot
 * nothing maps costs nothing). */
#define for_each_slot_gfn(vm, ms, s, start, end, gfn)                                                     \
	for (unsigned int __i = 0; __i < (ms)->n; __i++)                                                 \
		if (!((s) = &(ms)->slots[__i])->shadow || !(s)->shadow->nr_rmap) {} else                \
			for (gfn_t gfn = (s)->base_gfn > (start) ? (s)->base_gfn : (start);              \
			     gfn < (end) && gfn < (s)->base_gfn + (s)->npages; gfn++)

bool shadow_zap_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	const struct memslots *ms = vm_memslots(vm);
	const struct memslot *s;
	bool flush = false;

	for_each_slot_gfn(vm, ms, s, start, end, gfn) {
		struct pte_list *l = &s->shadow->rmap[gfn - s->base_gfn];
		uint64_t *sptep;

		while ((sptep = pte_list_first(l)))
			flush |= zap_spte(vm, sptep_to_sp(vm, sptep), sptep);
	}
	return flush;
}

void shadow_zap_slot_pages(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp, *tmp;
	CDS_LIST_HEAD(invalid);
	bool flush = shadow_zap_gfn_range(vm, start, end);

	/* The slot's write-track counts go with it: no shadow page may be left
	 * counting a gfn of it. */
	cds_list_for_each_entry_safe(sp, tmp, &sh->active, link)
		if (sp->gfn >= start && sp->gfn < end)
			prepare_zap(vm, sp, &invalid);
	commit_zap(vm, &invalid, flush);
}

void shadow_zap_all(struct vmmu_vm *vm)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp, *tmp;
	CDS_LIST_HEAD(invalid);

	/*
	 * KVM's kvm_mmu_zap_all_fast order: every page is obsolete and every
	 * vCPU told to reload (and waited out of guest mode) before the first
	 * page is touched, so from here on no vCPU walks the old tables: the
	 * next entry reloads, which waits for mmu_lock, which this holds until
	 * the zap is done.  Pages created after it are of the new generation.
	 */
	__atomic_store_n(&sh->valid_gen, sh->valid_gen + 1, __ATOMIC_RELEASE);
	vm_make_all_vcpus_request(vm, VCPU_REQ_MMU_RELOAD);
	cds_list_for_each_entry_safe(sp, tmp, &sh->active, link)
		prepare_zap(vm, sp, &invalid);
	commit_zap(vm, &invalid, true);
}

bool shadow_wrprot_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	const struct memslots *ms = vm_memslots(vm);
	const struct memslot *s;
	bool flush = false;

	for_each_slot_gfn(vm, ms, s, start, end, gfn)
		flush |= rmap_write_protect(vm, gfn, true);
	return flush;
}

bool shadow_wrprot_bitmap(struct vmmu_vm *vm, gfn_t base, const uint64_t *bitmap, uint64_t nr_words)
{
	bool flush = false;

	for (uint64_t w = 0; w < nr_words; w++)
		for (uint64_t m = bitmap[w]; m; m &= m - 1)
			flush |= rmap_write_protect(vm, base + w * 64 + (uint64_t)__builtin_ctzll(m), true);
	return flush;
}

uint64_t shadow_age_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end, bool clear)
{
	const struct memslots *ms = vm_memslots(vm);
	const struct memslot *s;
	uint64_t young = 0;

	for_each_slot_gfn(vm, ms, s, start, end, gfn) {
		struct pte_list_iter it;
		uint64_t *sptep;
		bool y = false;

		for_each_pte_list(&s->shadow->rmap[gfn - s->base_gfn], &it, sptep) {
			if (!(spte_load(sptep) & PT_A))
				continue;
			y = true;
			if (clear)
				spte_clear_bits(sptep, PT_A);
		}
		young += y;
	}
	return young;
}

/* ---- audit --------------------------------------------------------------------------------------- */

#define AUDIT_FAIL(...)                              \
	do {                                         \
		snprintf(why, len, __VA_ARGS__);     \
		return -1;                           \
	} while (0)

static bool sp_in_hash(const struct shadow_vm *sh, const struct shadow_page *want)
{
	for (const struct shadow_page *sp = sh->hash[sp_hash(want->gfn)]; sp; sp = sp->hash_next)
		if (sp == want)
			return true;
	return false;
}

/*
 * S5: a leaf SPTE of a synced indirect page agrees with the guest entry it
 * was made from: the entry is present and accessed, names the same frame,
 * and grants at least what the SPTE grants (the rights above the table are
 * in the page's role).  W also needs the guest's D (a clean page stays
 * read-only so that the write which dirties it faults), except that with
 * CR0.WP=0 a supervisor mapping may be writable where the guest entry is
 * not (the WP=0 conversion, which drops U).  Guest stores to the table are
 * all seen (write tracking), so a disagreement means a store reached guest
 * memory without reaching the shadow -- or the host wrote the table behind
 * the MMU's back, which the audit then reports as well.
 */
static int audit_synced_leaf(struct vmmu_vm *vm, const struct shadow_page *sp, unsigned int i, uint64_t spte,
			     gfn_t gfn, char *why, size_t len)
{
	unsigned int size = 8, have, may;
	bool four = sp->role.has_4_byte_gpte;
	uint64_t gpte;

	if (guest_read(vm, sp_gpte_gpa(sp, i, &size), size, &gpte) || !(gpte & PT_P) || !(gpte & PT_A))
		AUDIT_FAIL("synced leaf SPTE %#llx of table gfn %#llx[%u]: the guest entry is %s",
			   (unsigned long long)spte, (unsigned long long)sp->gfn, i,
			   !(gpte & PT_P) ? "not present" : "not accessed");
	if ((four ? (gpte & 0xfffff000ULL) >> 12 : (gpte & GENMASK_ULL(51, 12)) >> 12) != gfn)
		AUDIT_FAIL("synced leaf SPTE of table gfn %#llx[%u] maps gfn %#llx, the guest entry %#llx",
			   (unsigned long long)sp->gfn, i, (unsigned long long)gfn, (unsigned long long)gpte);
	have = spte_rights(spte);
	may = sp->role.access & (ACC_EXEC | ((gpte & PT_W) ? ACC_WRITE : 0) | ((gpte & PT_U) ? ACC_USER : 0));
	if (!four && sp->role.efer_nx && (gpte & PT_NX))
		may &= ~ACC_EXEC;
	if (!(gpte & PT_D))
		may &= ~ACC_WRITE;
	else if (!sp->role.cr0_wp && !(have & ACC_USER))
		may |= ACC_WRITE;
	if (have & ~may)
		AUDIT_FAIL("synced leaf SPTE %#llx of table gfn %#llx[%u] grants %#x, the guest entry %#llx only %#x",
			   (unsigned long long)spte, (unsigned long long)sp->gfn, i, have, (unsigned long long)gpte,
			   may);
	return 0;
}

/*
 * Every shadow page against the invariants of docs/mmu.md §11.6: hash and
 * lists agree, every SPTE is on the right rmap or parent list and every list
 * entry is such an SPTE, write-track counts equal the indirect pages, no
 * tracked gfn is writable unless all its pages are unsync leaves, and a
 * synced leaf maps what the guest entry says.
 */
int shadow_audit(struct vmmu_vm *vm, uint64_t counts[PG_LEVEL_1G + 1], uint64_t *tables, char *why, size_t len)
{
	struct shadow_vm *sh = vm->shadow;
	const struct memslots *ms = vm_memslots(vm);
	struct shadow_page *sp;
	uint64_t n = 0, nr_unsync = 0, rmap_entries = 0, leaves = 0;

	cds_list_for_each_entry(sp, &sh->active, link) {
		n++;
		if (sp->role.invalid)
			AUDIT_FAIL("shadow page gfn %#llx on the active list is invalid", (unsigned long long)sp->gfn);
		if (!sp_in_hash(sh, sp))
			AUDIT_FAIL("shadow page gfn %#llx role %#x not in the hash", (unsigned long long)sp->gfn,
				   sp->role.word);
		if (sp->unsync) {
			nr_unsync++;
			if (sp->role.level != PG_LEVEL_4K || sp->role.direct)
				AUDIT_FAIL("shadow page gfn %#llx level %d is unsync", (unsigned long long)sp->gfn,
					   sp->role.level);
		}
		/* Parent list: each entry is a non-leaf SPTE pointing here. */
		{
			struct pte_list_iter it;
			uint64_t *sptep;

			for_each_pte_list(&sp->parent_ptes, &it, sptep) {
				uint64_t spte = spte_load(sptep);

				if (!is_shadow_present(spte) || (spte & SPTE_BASE_ADDR_MASK) != (uintptr_t)sp->spt)
					AUDIT_FAIL("parent SPTE %p of shadow page gfn %#llx is %#llx", (void *)sptep,
						   (unsigned long long)sp->gfn, (unsigned long long)spte);
				if (sptep_to_sp(vm, sptep)->role.level != sp->role.level + 1)
					AUDIT_FAIL("shadow page gfn %#llx level %d has a parent of level %d",
						   (unsigned long long)sp->gfn, sp->role.level,
						   sptep_to_sp(vm, sptep)->role.level);
			}
		}
		for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++) {
			uint64_t *sptep = &sp->spt[i], spte = spte_load(sptep);

			if (!spte)
				continue;
			if (!is_shadow_present(spte)) {
				if (!is_mmio_spte(&vm->fmt, spte) || sp->role.level != PG_LEVEL_4K)
					AUDIT_FAIL("SPTE %#llx of gfn %#llx[%u] is neither present nor MMIO",
						   (unsigned long long)spte, (unsigned long long)sp->gfn, i);
				continue;
			}
			if (sp->role.level > PG_LEVEL_4K) {
				struct shadow_page *child = spte_to_child(vm, spte);
				struct pte_list_iter it;
				uint64_t *p;
				bool found = false;

				for_each_pte_list(&child->parent_ptes, &it, p)
					found |= p == sptep;
				if (!found)
					AUDIT_FAIL("non-leaf SPTE %p not on its child's parent list", (void *)sptep);
				if (child->role.level != sp->role.level - 1 || child->role.invalid)
					AUDIT_FAIL("shadow page gfn %#llx links a child of level %d%s",
						   (unsigned long long)sp->gfn, child->role.level,
						   child->role.invalid ? " (invalid)" : "");
				continue;
			}
			/* A leaf. */
			{
				gfn_t gfn = sp->role.direct ? sp->gfn + i : sp->gfns[i];
				const struct memslot *s = memslots_find_gfn(ms, gfn);
				struct pte_list_iter it;
				uint64_t *p;
				bool found = false;

				leaves++;
				if (!s || !s->shadow)
					AUDIT_FAIL("leaf SPTE maps gfn %#llx outside every memslot", (unsigned long long)gfn);
				if ((spte_to_pfn(spte) << 12) != memslot_gfn_to_hva(s, gfn))
					AUDIT_FAIL("leaf SPTE for gfn %#llx maps host %#llx, the slot has %#llx",
						   (unsigned long long)gfn, (unsigned long long)(spte_to_pfn(spte) << 12),
						   (unsigned long long)memslot_gfn_to_hva(s, gfn));
				for_each_pte_list(&s->shadow->rmap[gfn - s->base_gfn], &it, p)
					found |= p == sptep;
				if (!found)
					AUDIT_FAIL("leaf SPTE %p of gfn %#llx not on its rmap", (void *)sptep,
						   (unsigned long long)gfn);
				if (!spte_writable_bits_legal(&vm->fmt, spte))
					AUDIT_FAIL("SPTE %#llx of gfn %#llx: W without MMU-writable or host-writable",
						   (unsigned long long)spte, (unsigned long long)gfn);
				if ((spte & PT_W) && s->shadow->write_track[gfn - s->base_gfn]) {
					struct shadow_page *o;

					for_each_gfn_sp(sh, o, gfn)
						if (!o->role.direct && !o->unsync)
							AUDIT_FAIL("gfn %#llx is a synced guest page table (level %d) but "
								   "mapped writable", (unsigned long long)gfn,
								   o->role.level);
				}
				if ((spte & PT_W) && (s->flags & VMMU_MEM_READONLY))
					AUDIT_FAIL("gfn %#llx of a read-only slot mapped writable", (unsigned long long)gfn);
				/* A synced indirect leaf is what its guest entry says. */
				if (!sp->role.direct && !sp->unsync &&
				    audit_synced_leaf(vm, sp, i, spte, gfn, why, len))
					return -1;
			}
		}
	}
	if (n != sh->nr_pages)
		AUDIT_FAIL("%llu shadow pages listed, %llu counted", (unsigned long long)n,
			   (unsigned long long)sh->nr_pages);
	if (nr_unsync != sh->nr_unsync)
		AUDIT_FAIL("%llu unsync pages listed, %llu counted", (unsigned long long)nr_unsync,
			   (unsigned long long)sh->nr_unsync);
	if (n > sh->max_pages)
		AUDIT_FAIL("%llu shadow pages, cap %llu", (unsigned long long)n, (unsigned long long)sh->max_pages);
	/*
	 * Rmaps and write-track counts: every leaf was found on its rmap above,
	 * and each slot's sums say nothing else is listed.  Every indirect page
	 * checks its gfn's count against the pages of that gfn.
	 */
	cds_list_for_each_entry(sp, &sh->active, link) {
		const struct memslot *s = slot_of(vm, sp->gfn);
		struct shadow_page *o;
		unsigned int tracked = 0;

		if (sp->role.direct || !s)
			continue;
		for_each_gfn_sp(sh, o, sp->gfn)
			tracked += !o->role.direct;
		if (tracked != s->shadow->write_track[sp->gfn - s->base_gfn])
			AUDIT_FAIL("gfn %#llx: write-track count %u, %u indirect shadow pages", (unsigned long long)sp->gfn,
				   s->shadow->write_track[sp->gfn - s->base_gfn], tracked);
	}
	for (unsigned int k = 0; k < ms->n; k++) {
		const struct memslot *s = &ms->slots[k];
		uint64_t tracked = 0;

		if (!s->shadow)
			continue;
		rmap_entries += s->shadow->nr_rmap;
		cds_list_for_each_entry(sp, &sh->active, link)
			tracked += !sp->role.direct && memslot_contains(s, sp->gfn);
		if (tracked != s->shadow->nr_tracked)
			AUDIT_FAIL("slot %u: write-track counts sum to %llu, %llu indirect shadow pages", s->id,
				   (unsigned long long)s->shadow->nr_tracked, (unsigned long long)tracked);
	}
	if (rmap_entries != leaves)
		AUDIT_FAIL("%llu rmap entries, %llu leaf SPTEs", (unsigned long long)rmap_entries,
			   (unsigned long long)leaves);
	counts[PG_LEVEL_4K] += leaves;
	*tables += n;
	return 0;
}
