/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "mmu/pt_arena.h"

#include <string.h>
#include <sys/mman.h>

#include "vm/vmmu_int.h"

static void *reserve(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

int pt_arena_init(struct pt_arena *a, size_t bytes)
{
	memset(a, 0, sizeof(*a));
	a->cap = bytes >> 12;
	if (a->cap < 16 || a->cap > (1ULL << 32))
		return VMMU_EINVAL;
	/* Reserved, not committed: the kernel backs pages only once used. */
	a->base = reserve(a->cap << 12);
	a->meta = reserve(a->cap * sizeof(*a->meta));
	a->free_list = reserve(a->cap * sizeof(*a->free_list));
	if (!a->base || !a->meta || !a->free_list) {
		pt_arena_destroy(a);
		return VMMU_ENOMEM;
	}
	/*
	 * Tables are allocated densely from the bottom, so huge host pages cost
	 * little memory and spare the walker a host TLB miss per table (KVM's
	 * tables sit in the kernel's huge-page direct map for the same reason).
	 */
	(void)madvise(a->base, a->cap << 12, MADV_HUGEPAGE);
	pthread_mutex_init(&a->lock, NULL);
	return 0;
}

void pt_arena_destroy(struct pt_arena *a)
{
	if (a->base)
		munmap(a->base, a->cap << 12);
	if (a->meta)
		munmap(a->meta, a->cap * sizeof(*a->meta));
	if (a->free_list)
		munmap(a->free_list, a->cap * sizeof(*a->free_list));
	if (a->base)
		pthread_mutex_destroy(&a->lock);
	memset(a, 0, sizeof(*a));
}

struct pt_page *pt_page_alloc(struct pt_arena *a)
{
	size_t idx;
	struct pt_page *p;

	pthread_mutex_lock(&a->lock);
	if (a->nr_free) {
		idx = a->free_list[--a->nr_free];
	} else {
		idx = atomic_load_explicit(&a->bump, memory_order_relaxed);
		if (idx >= a->cap) {
			pthread_mutex_unlock(&a->lock);
			return NULL;
		}
		atomic_store_explicit(&a->bump, idx + 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&a->lock);

	/* Pages come back zeroed by their free path (or fresh from the kernel). */
	p = &a->meta[idx];
	memset(p, 0, sizeof(*p));
	p->spt = (uint64_t *)(a->base + (idx << 12));
	p->arena = a;
	atomic_fetch_add_explicit(&a->in_use, 1, memory_order_relaxed);
	return p;
}

void pt_page_free_now(struct pt_page *p)
{
	struct pt_arena *a = p->arena;
	size_t idx = (size_t)(p - a->meta);

	memset(p->spt, 0, 4096);
	pthread_mutex_lock(&a->lock);
	a->free_list[a->nr_free++] = (uint32_t)idx;
	pthread_mutex_unlock(&a->lock);
	atomic_fetch_sub_explicit(&a->in_use, 1, memory_order_relaxed);
}

static void pt_page_free_cb(struct rcu_head *head)
{
	struct pt_page *p = caa_container_of(head, struct pt_page, rcu);

	vmmu_rcu_callback_begin();
	pt_page_free_now(p);
	vmmu_rcu_callback_end();
}

void pt_page_free_rcu(struct pt_page *p)
{
	vmmu_call_rcu(&p->rcu, pt_page_free_cb);
}

__hot int pt_cache_topup(struct pt_arena *a, struct pt_cache *c, int min)
{
	if (c->nr >= min)
		return 0;
	while (c->nr < PT_CACHE_CAP) {
		struct pt_page *p = pt_page_alloc(a);

		if (!p)
			return c->nr >= min ? 0 : VMMU_ENOMEM;
		c->pages[c->nr++] = p;
	}
	return 0;
}

__hot struct pt_page *pt_cache_take(struct pt_cache *c)
{
	return c->nr ? c->pages[--c->nr] : NULL;
}

void pt_cache_put(struct pt_cache *c, struct pt_page *p)
{
	/* Never published: still zeroed, reusable at once. */
	if (c->nr < PT_CACHE_CAP)
		c->pages[c->nr++] = p;
	else
		pt_page_free_now(p);
}

void pt_cache_drain(struct pt_cache *c)
{
	while (c->nr)
		pt_page_free_now(c->pages[--c->nr]);
}
