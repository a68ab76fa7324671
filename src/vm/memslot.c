/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "vm/memslot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mmu/spte.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

const struct memslot *memslots_find_id(const struct memslots *ms, uint32_t id)
{
	for (unsigned int i = 0; i < ms->n; i++)
		if (ms->slots[i].id == id)
			return &ms->slots[i];
	return NULL;
}

bool memslots_range_overlaps(const struct memslots *ms, gfn_t start, gfn_t end, uint32_t except_id)
{
	for (unsigned int i = 0; i < ms->n; i++) {
		const struct memslot *s = &ms->slots[i];

		if (s->id == except_id)
			continue;
		if (start < s->base_gfn + s->npages && s->base_gfn < end)
			return true;
	}
	return false;
}

int host_page_size_to_level(uint64_t host_page_size)
{
	switch (host_page_size) {
	case 0:
	case 1ULL << 12:
		return PG_LEVEL_4K;
	case 1ULL << 21:
		return PG_LEVEL_2M;
	case 1ULL << 30:
		return PG_LEVEL_1G;
	default:
		return 0;
	}
}

int memslot_check(const struct memslots *cur, const struct vmmu_memslot *req, unsigned int maxphyaddr,
		  enum memslot_change *change, const struct memslot **oldp)
{
	const struct memslot *old;
	uint64_t npages;
	int level;

	if (req->slot >= VMMU_MAX_MEMSLOTS)
		return VMMU_EINVAL;
	/* Unknown backings are refused even where backing is unused (hva given),
	 * so the values can gain meaning later. */
	if ((req->flags & ~(uint32_t)(VMMU_MEM_READONLY | VMMU_MEM_LOG_DIRTY_PAGES | VMMU_MEM_PRIVATE)) ||
	    req->backing > VMMU_BACKING_HUGETLB)
		return VMMU_EINVAL;
	old = memslots_find_id(cur, req->slot);

	if (req->size == 0) {
		if (!old)
			return VMMU_ENOENT;
		*change = MEMSLOT_DELETE;
		*oldp = old;
		return 0;
	}
	if ((req->gpa | req->size | (uintptr_t)req->hva) & 0xfff)
		return VMMU_EINVAL;
	npages = req->size >> 12;
	if (npages > MEMSLOT_MAX_PAGES)
		return VMMU_EINVAL;
	if (req->gpa + req->size < req->gpa)
		return VMMU_ERANGE;
	if (maxphyaddr < 64 && req->gpa + req->size > (1ULL << maxphyaddr))
		return VMMU_ERANGE;
	level = host_page_size_to_level(req->host_page_size);
	if (!level)
		return VMMU_EINVAL;
	if (req->hva == NULL) {
		if (req->backing > VMMU_BACKING_HUGETLB)
			return VMMU_EINVAL;
		if (req->backing == VMMU_BACKING_HUGETLB && level == PG_LEVEL_4K)
			return VMMU_EINVAL;
		if (req->backing == VMMU_BACKING_ANON && level == PG_LEVEL_1G)
			return VMMU_ENOTSUP;	/* no 1G transparent huge pages */
		if (level > PG_LEVEL_4K && (req->size & ((1ULL << spte_level_shift(level)) - 1)) &&
		    req->backing == VMMU_BACKING_HUGETLB)
			return VMMU_EINVAL;
	} else if ((uintptr_t)req->hva + req->size < (uintptr_t)req->hva) {
		return VMMU_EINVAL;
	}

	if (!old) {
		*change = MEMSLOT_CREATE;
	} else {
		if (old->flags & MEMSLOT_INVALID)
			return VMMU_EBUSY;
		if (npages != old->npages)
			return VMMU_EINVAL;
		if (req->hva && (uintptr_t)req->hva != old->hva)
			return VMMU_EINVAL;
		if (!req->hva && !old->owned)
			return VMMU_EINVAL;
		if (level != old->host_level)
			return VMMU_EINVAL;
		if ((req->flags ^ old->flags) & VMMU_MEM_READONLY)
			return VMMU_EINVAL;
		if ((req->gpa >> 12) != old->base_gfn)
			*change = MEMSLOT_MOVE;
		else if (req->flags != (old->flags & ~MEMSLOT_INVALID))
			*change = MEMSLOT_FLAGS_ONLY;
		else
			*change = MEMSLOT_NOCHANGE;	/* KVM accepts a no-op update */
	}
	if (*change == MEMSLOT_CREATE || *change == MEMSLOT_MOVE) {
		if (memslots_range_overlaps(cur, req->gpa >> 12, (req->gpa >> 12) + npages, req->slot))
			return VMMU_EEXIST;
	}
	*oldp = old;
	return 0;
}

struct memslots *memslots_new_empty(void)
{
	struct memslots *ms = calloc(1, sizeof(*ms));

	return ms;
}

struct memslots *memslots_copy_update(const struct memslots *cur, uint32_t id, const struct memslot *repl)
{
	struct memslots *ms;
	unsigned int i, n = 0;

	ms = malloc(sizeof(*ms) + (cur->n + 1) * sizeof(struct memslot));
	if (!ms)
		return NULL;
	memset(&ms->rcu, 0, sizeof(ms->rcu));
	ms->generation = cur->generation + 1;
	for (i = 0; i < cur->n; i++)
		if (cur->slots[i].id != id)
			ms->slots[n++] = cur->slots[i];
	if (repl) {
		/* Insertion keeps slots[] sorted by base_gfn for the binary search. */
		i = n;
		while (i > 0 && ms->slots[i - 1].base_gfn > repl->base_gfn) {
			ms->slots[i] = ms->slots[i - 1];
			i--;
		}
		ms->slots[i] = *repl;
		n++;
	}
	ms->n = n;
	return ms;
}

int memslot_alloc_backing(struct memslot *s, uint64_t size, uint64_t host_page_size, uint32_t backing)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	size_t align = host_page_size > 4096 ? host_page_size : 4096;
	size_t map_size = size;
	void *p;

	if (backing == VMMU_BACKING_HUGETLB) {
		int shift = host_page_size == (1ULL << 30) ? 30 : 21;

		flags |= MAP_HUGETLB | (shift << MAP_HUGE_SHIFT);
		flags &= ~MAP_NORESERVE;
		p = mmap(NULL, map_size, PROT_READ | PROT_WRITE, flags, -1, 0);
		if (p == MAP_FAILED)
			return errno == EINVAL ? VMMU_ENOTSUP : VMMU_ENOMEM;
		s->map_base = p;
		s->map_size = map_size;
		s->hva = (uintptr_t)p;
		return 0;
	}
	/*
	 * Anonymous memory: over-allocate so the slot can start on a host huge
	 * page boundary; with THP, gfn and hva then stay congruent modulo 2M and
	 * every 2M-aligned guest range can be mapped huge.
	 */
	if (align > 4096)
		map_size += align;
	p = mmap(NULL, map_size, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED)
		return VMMU_ENOMEM;
	s->map_base = p;
	s->map_size = map_size;
	s->hva = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
	/* Ask for exactly the host page size the slot declares, so the mapping
	 * level and the host's own faults agree. */
	(void)madvise((void *)s->hva, size, align > 4096 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return 0;
}

void memslot_free_backing(struct memslot *s)
{
	if (s->owned && s->map_base)
		munmap(s->map_base, s->map_size);
	s->map_base = NULL;
	/* VMMU_MEM_PRIVATE: the private backing is always vmmu's. */
	if (s->priv_map_base)
		munmap(s->priv_map_base, s->priv_map_size);
	s->priv_map_base = NULL;
}

__hot int memslot_max_mapping_level(const struct memslot *s, gfn_t gfn, int max_level)
{
	int level = s->host_level < max_level ? s->host_level : max_level;

	for (; level > PG_LEVEL_4K; level--) {
		uint64_t pages = spte_level_pages(level);
		gfn_t base = gfn & ~(pages - 1);
		uint64_t hva_pfn = s->hva >> 12;

		if (base < s->base_gfn || base + pages > s->base_gfn + s->npages)
			continue;
		if ((gfn ^ (hva_pfn + (gfn - s->base_gfn))) & (pages - 1))
			continue;
		break;
	}
	return level;
}
