/* SPDX-License-Identifier: MIT */
#ifndef VMMU_PT_ARENA_H
#define VMMU_PT_ARENA_H
/*
 * Page-table pages.  All of a VM's page tables live in one reserved range of
 * host address space, so a table's metadata (struct pt_page, KVM's
 * kvm_mmu_page) is found from the table's address by index arithmetic, the
 * way KVM finds it through struct page.  A table's "physical address" in an
 * SPTE is its host address, like every other pfn here.
 *
 * Tables are freed only through RCU (pt_page_free_rcu), because lockless
 * walkers (the hardware model, fast paths) may still be reading them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "compiler.h"
#include <stddef.h>
#include <stdint.h>

#include <urcu/urcu-memb.h>

struct pt_page {
	uint64_t *spt;			/* the table (4 KiB, 512 SPTEs) */
	uint64_t gfn;			/* first gfn it maps */
	int level;			/* level of its entries */
	_Atomic int root_refcount;	/* roots only */
	_Atomic bool root_invalid;	/* roots only */
	struct rcu_head rcu;
	struct pt_arena *arena;
	void *owner;			/* shadow paging: its struct shadow_page */
	bool is_mirror;			/* TDP: a table of the mirror root (KVM's role.is_mirror) */
};

struct pt_arena {
	char *base;			/* [const] */
	size_t cap;			/* [const] pages */
	struct pt_page *meta;		/* [const] parallel to the pages */
	_Atomic size_t bump;		/* first never-used page */
	pthread_mutex_t lock;		/* guards free_list */
	uint32_t *free_list;
	size_t nr_free;
	_Atomic size_t in_use;
};

/* Per-vCPU cache, topped up before mmu_lock so the fault never allocates under it. */
#define PT_CACHE_CAP 16
struct pt_cache {
	int nr;
	struct pt_page *pages[PT_CACHE_CAP];
};

int pt_arena_init(struct pt_arena *a, size_t bytes);
/* All tables must be freed and RCU callbacks drained first. */
void pt_arena_destroy(struct pt_arena *a);

/* A zeroed table, or NULL when the arena is exhausted. */
struct pt_page *pt_page_alloc(struct pt_arena *a);
/* Immediate free: only for pages never made visible to any walker. */
void pt_page_free_now(struct pt_page *p);
/* Free after an RCU grace period (the table may still be walked). */
void pt_page_free_rcu(struct pt_page *p);

static inline struct pt_page *pt_page_of(struct pt_arena *a, const void *table)
{
	return &a->meta[((const char *)table - a->base) >> 12];
}

static inline bool pt_arena_contains(const struct pt_arena *a, const void *p)
{
	return (const char *)p >= a->base && (const char *)p < a->base + (a->cap << 12);
}

int pt_cache_topup(struct pt_arena *a, struct pt_cache *c, int min);
struct pt_page *pt_cache_take(struct pt_cache *c);
void pt_cache_put(struct pt_cache *c, struct pt_page *p);
void pt_cache_drain(struct pt_cache *c);

#endif /* VMMU_PT_ARENA_H */
