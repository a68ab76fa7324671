/* SPDX-License-Identifier: MIT */
#ifndef VMMU_MEMSLOT_H
#define VMMU_MEMSLOT_H
/*
 * Memslots: gfn -> hva.  The set of slots is an immutable snapshot published
 * with RCU; readers (vCPUs, the fault path) look up without locks, writers
 * build a new snapshot under the VM's slots_lock and publish it.  A snapshot
 * is never modified after publication, so a (snapshot, slot) pointer pair read
 * inside one RCU read section is always consistent.
 *
 * Invariants:
 *  - slots[] is sorted by base_gfn and no two slots overlap.
 *  - generation strictly increases with every published snapshot; a vCPU's
 *    last-slot cache and every MMIO SPTE are valid only for one generation.
 *  - a slot with MEMSLOT_INVALID is being deleted or moved: faults on it retry
 *    and install nothing until the next snapshot.
 */
#include <stdbool.h>
#include "compiler.h"
#include <stddef.h>
#include <stdint.h>

#include <urcu/urcu-memb.h>

#include "vmmu/vmmu.h"

typedef uint64_t gfn_t;
typedef uint64_t gpa_t;

#define MEMSLOT_INVALID (1u << 31)	/* internal flag, never from the user */
#define MEMSLOT_MAX_PAGES ((1ULL << 31) - 1)	/* KVM_MEM_MAX_NR_PAGES */

struct memslot {
	uint32_t id;
	uint32_t flags;		/* VMMU_MEM_* | MEMSLOT_INVALID */
	gfn_t base_gfn;
	uint64_t npages;
	uintptr_t hva;		/* page aligned */
	int host_level;		/* PG_LEVEL_* of the host page size: bounds the mapping */
	bool owned;		/* vmmu allocated the backing; unmapped on delete */
	uint32_t backing;	/* enum vmmu_backing, when owned */
	void *map_base;		/* owned: what to munmap */
	size_t map_size;
	/*
	 * One bit per page while the slot logs (VMMU_MEM_LOG_DIRTY_PAGES), set
	 * with atomic OR by whoever makes a page writable; shared by every
	 * snapshot of the slot and freed a grace period after logging stops.
	 */
	uint64_t *dirty_bitmap;
	/*
	 * VMMU_MEM_PRIVATE: the private backing (vmmu's own mapping, never
	 * handed out), congruent with the gfns modulo 2M so private 2M pages
	 * are possible; unmapped with the slot.
	 */
	uintptr_t priv_hva;
	void *priv_map_base;
	size_t priv_map_size;
	/* Shadow paging: rmaps and write-track counts, shared like the bitmap. */
	struct shadow_slot *shadow;
};

static inline uint64_t memslot_bitmap_words(const struct memslot *s)
{
	return (s->npages + 63) / 64;
}

static inline bool memslot_logging(const struct memslot *s)
{
	return s->dirty_bitmap != NULL;
}

static inline void mark_page_dirty_in_slot(const struct memslot *s, gfn_t gfn)
{
	uint64_t i = gfn - s->base_gfn;

	__atomic_fetch_or(&s->dirty_bitmap[i / 64], 1ULL << (i % 64), __ATOMIC_RELAXED);
}

struct memslots {
	uint64_t generation;
	unsigned int n;
	struct rcu_head rcu;
	struct memslot slots[];
};

enum memslot_change {
	MEMSLOT_CREATE,
	MEMSLOT_DELETE,
	MEMSLOT_MOVE,
	MEMSLOT_FLAGS_ONLY,
	MEMSLOT_NOCHANGE,
};

static inline bool memslot_contains(const struct memslot *s, gfn_t gfn)
{
	return gfn >= s->base_gfn && gfn - s->base_gfn < s->npages;
}

static inline uintptr_t memslot_gfn_to_hva(const struct memslot *s, gfn_t gfn)
{
	return s->hva + ((gfn - s->base_gfn) << 12);
}

/* O(log n) lookup; NULL when no slot covers gfn.  Inline: every guest-table
 * read of the shadow MMU and every fault does one. */
static inline const struct memslot *memslots_find_gfn(const struct memslots *ms, gfn_t gfn)
{
	unsigned int lo = 0, hi = ms->n;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		const struct memslot *s = &ms->slots[mid];

		if (gfn < s->base_gfn)
			hi = mid;
		else if (gfn - s->base_gfn >= s->npages)
			lo = mid + 1;
		else
			return s;
	}
	return NULL;
}
const struct memslot *memslots_find_id(const struct memslots *ms, uint32_t id);
/* A slot, possibly invalid, that covers [start, end) partially. */
bool memslots_range_overlaps(const struct memslots *ms, gfn_t start, gfn_t end, uint32_t except_id);

/*
 * Checks a request against the current snapshot and classifies it.  Returns 0
 * or a VMMU_E* code; never modifies anything.
 */
int memslot_check(const struct memslots *cur, const struct vmmu_memslot *req, unsigned int maxphyaddr,
		  enum memslot_change *change, const struct memslot **old);

/*
 * New snapshot = cur with slot id `id` replaced by `*repl` (or removed when
 * repl == NULL, or added when id is absent).  generation is cur's + 1.
 */
struct memslots *memslots_copy_update(const struct memslots *cur, uint32_t id, const struct memslot *repl);
struct memslots *memslots_new_empty(void);

/* Allocates the backing for a slot vmmu owns; fills hva/map_base/map_size. */
int memslot_alloc_backing(struct memslot *s, uint64_t size, uint64_t host_page_size, uint32_t backing);
void memslot_free_backing(struct memslot *s);

/* PG_LEVEL_* of a host page size, or 0 when unsupported. */
int host_page_size_to_level(uint64_t host_page_size);

/*
 * The largest level at which gfn may be mapped: bounded by the slot's host
 * page size and by the huge page lying entirely inside the slot with gfn and
 * hva congruent modulo its size (KVM's rule, so the host huge page and the
 * guest huge page are the same memory).
 */
int memslot_max_mapping_level(const struct memslot *s, gfn_t gfn, int max_level);

#endif /* VMMU_MEMSLOT_H */
