/* SPDX-License-Identifier: MIT */
/*
 * Reverse maps and parent lists (KVM's pte_list), the per-memslot arrays they
 * live in, and the host-side operations that go through them: zaps of gfn
 * ranges, write protection for dirty logging, aging.
 */
#define _GNU_SOURCE
#include "mmu/shadow/shadow_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Descriptors come from a per-vCPU cache filled before mmu_lock, so adding to
 * a list under the lock never fails; host-side paths only remove. */
int shadow_desc_cache_topup(struct shadow_desc_cache *c)
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

void pte_list_add(struct shadow_desc_cache *c, struct pte_list *l, uint64_t *sptep)
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

bool pte_list_remove(struct pte_list *l, const uint64_t *sptep)
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

uint64_t *pte_list_first(const struct pte_list *l)
{
	if (!l->val)
		return NULL;
	if (!(l->val & 1))
		return (uint64_t *)l->val;
	return ((struct pte_list_desc *)(l->val & ~(uintptr_t)1))->sptes[0];
}

void pte_list_free(struct pte_list *l)
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

/*
 * A slot may span 2^31 pages while the guest touches a few: the arrays are
 * one MAP_NORESERVE mapping, so only the pages of used entries ever exist
 * (KVM allocates its rmaps with vzalloc for the same reason).
 */
int shadow_slot_alloc(struct memslot *s)
{
	struct shadow_slot *ss = calloc(1, sizeof(*ss));
	size_t rmap_bytes = (s->npages * sizeof(*ss->rmap) + 4095) & ~(size_t)4095;
	size_t track_bytes = (s->npages * sizeof(*ss->write_track) + 7) & ~(size_t)7;
	/* A region count per 2M (1G) of the slot, plus one for a base that
	 * is not aligned (and a move may change the alignment). */
	size_t n2m = (s->npages >> 9) + 2, n1g = (s->npages >> 18) + 2;
	void *p;

	if (!ss)
		return VMMU_ENOMEM;
	ss->map_size = rmap_bytes + track_bytes + (n2m + n1g) * sizeof(uint32_t);
	p = mmap(NULL, ss->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		free(ss);
		return VMMU_ENOMEM;
	}
	ss->rmap = p;
	ss->write_track = (uint16_t *)((char *)p + rmap_bytes);
	ss->track_lpage[0] = (uint32_t *)((char *)p + rmap_bytes + track_bytes);
	ss->track_lpage[1] = ss->track_lpage[0] + n2m;
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

const struct memslot *shadow_slot_of(struct vmmu_vm *vm, gfn_t gfn)
{
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gfn);

	return s && s->shadow ? s : NULL;
}

static struct pte_list *gfn_rmap(struct vmmu_vm *vm, gfn_t gfn)
{
	const struct memslot *s = shadow_slot_of(vm, gfn);

	return s ? &s->shadow->rmap[gfn - s->base_gfn] : NULL;
}

/* Write-protect every SPTE mapping gfn (W and MMU-writable: the fast path
 * must not undo it).  Returns whether anything lost W (flush needed). */
bool shadow_rmap_write_protect(struct vmmu_vm *vm, gfn_t gfn, bool keep_mmu_writable)
{
	struct pte_list *l = gfn_rmap(vm, gfn);
	struct pte_list_iter it;
	uint64_t *sptep;
	bool flush = false;

	if (!l)
		return false;
	for_each_pte_list(l, &it, sptep) {
		uint64_t bits = vm->fmt.writable | (keep_mmu_writable ? 0 : vm->fmt.mmu_writable);
		uint64_t old = spte_clear_bits(sptep, bits);

		flush |= is_writable_pte(&vm->fmt, old);
	}
	return flush;
}

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
			flush |= shadow_zap_spte(vm, sptep_to_sp(vm, sptep), sptep);
	}
	return flush;
}

bool shadow_wrprot_gfn_range(struct vmmu_vm *vm, gfn_t start, gfn_t end)
{
	const struct memslots *ms = vm_memslots(vm);
	const struct memslot *s;
	bool flush = false;

	for_each_slot_gfn(vm, ms, s, start, end, gfn)
		flush |= shadow_rmap_write_protect(vm, gfn, true);
	return flush;
}

bool shadow_wrprot_bitmap(struct vmmu_vm *vm, gfn_t base, const uint64_t *bitmap, uint64_t nr_words)
{
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), base);
	bool flush = false;

	/* The bitmap is one slot's (a harvest's).  A slot no shadow page maps,
	 * as in every TDP VM without a nested guest, costs one lookup rather
	 * than one per reported page (nr_rmap only grows under mmu_lock for
	 * write, which the caller holds). */
	if (!s || !s->shadow || !s->shadow->nr_rmap)
		return false;
	for (uint64_t w = 0; w < nr_words; w++)
		for (uint64_t m = bitmap[w]; m; m &= m - 1)
			flush |= shadow_rmap_write_protect(vm, base + w * 64 + (uint64_t)__builtin_ctzll(m), true);
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
			if (!(spte_load(sptep) & vm->fmt.accessed))
				continue;
			y = true;
			if (clear)
				spte_clear_bits(sptep, vm->fmt.accessed);
		}
		young += y;
	}
	return young;
}
