/* SPDX-License-Identifier: MIT */
/*
 * Private memory, the runtime's side: memory attributes, the private
 * backing, the host half of private and shared faults in a private VM, and
 * conversions (KVM_SET_MEMORY_ATTRIBUTES).  attributes.h has the rules.
 */
#define _GNU_SOURCE
#include "vm/attributes.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mmu/tdp/tdp_mmu.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Private pages are 4K or 2M (TDX maps no bigger private page). */
#define PRIVATE_MAX_LEVEL PG_LEVEL_2M

/* ---- the attribute set ------------------------------------------------------ */

/* Index of the first range whose end is above gfn. */
static unsigned long attr_find(const struct attr_set *a, uint64_t gfn)
{
	unsigned long lo = 0, hi = a ? a->n : 0;

	while (lo < hi) {
		unsigned long mid = lo + (hi - lo) / 2;

		if (a->r[mid].end <= gfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

__hot bool attr_is_private(const struct attr_set *a, uint64_t gfn)
{
	unsigned long i = attr_find(a, gfn);

	return a && i < a->n && a->r[i].start <= gfn;
}

bool attr_uniform(const struct attr_set *a, uint64_t start, uint64_t end, bool priv)
{
	unsigned long i = attr_find(a, start);
	bool covered = a && i < a->n && a->r[i].start <= start && a->r[i].end >= end;
	bool touched = a && i < a->n && a->r[i].start < end;

	/* Ranges are merged, so "all private" is one range covering it all. */
	return priv ? covered : !touched;
}

static void attr_free_cb(struct rcu_head *head)
{
	struct attr_set *a = caa_container_of(head, struct attr_set, rcu);

	vmmu_rcu_callback_begin();
	free(a);
	vmmu_rcu_callback_end();
}

/* cur with [start, end) private or shared; NULL without memory. */
static struct attr_set *attr_update(const struct attr_set *cur, uint64_t start, uint64_t end, bool priv)
{
	unsigned long n = cur ? cur->n : 0, k = 0;
	struct attr_set *a = malloc(sizeof(*a) + (n + 2) * sizeof(a->r[0]));

	if (!a)
		return NULL;
	memset(&a->rcu, 0, sizeof(a->rcu));
	for (unsigned long i = 0; i < n; i++) {
		if (cur->r[i].start < start) {
			a->r[k] = cur->r[i];
			if (a->r[k].end > start)
				a->r[k].end = start;
			k++;
		}
	}
	if (priv) {
		a->r[k].start = start;
		a->r[k].end = end;
		k++;
	}
	for (unsigned long i = 0; i < n; i++) {
		if (cur->r[i].end > end) {
			a->r[k] = cur->r[i];
			if (a->r[k].start < end)
				a->r[k].start = end;
			k++;
		}
	}
	/* Merge touching neighbours: one range per private stretch. */
	{
		unsigned long m = 0;

		for (unsigned long i = 0; i < k; i++) {
			if (m && a->r[m - 1].end >= a->r[i].start) {
				if (a->r[i].end > a->r[m - 1].end)
					a->r[m - 1].end = a->r[i].end;
			} else {
				a->r[m++] = a->r[i];
			}
		}
		k = m;
	}
	a->n = k;
	return a;
}

/* ---- configuration and memslots --------------------------------------------- */

int private_config_check(const struct vmmu_vm_config *cfg, uint64_t *shared_mask)
{
	uint32_t bit;

	*shared_mask = 0;
	if (!(cfg->flags & VMMU_VM_PRIVATE))
		return cfg->shared_bit ? VMMU_EINVAL : 0;
	/* Confidential VMs need TDP: the module owns a TDP table. */
	if (cfg->mmu != VMMU_MMU_TDP)
		return VMMU_ENOTSUP;
	/* TDX's GPAW: the shared bit is the top bit of a 48- or 52-bit GPA. */
	bit = cfg->shared_bit ? cfg->shared_bit : (cfg->tdp_levels == 5 ? 51 : 47);
	if (bit < 32 || bit >= cfg->maxphyaddr)
		return VMMU_EINVAL;
	*shared_mask = 1ULL << bit;
	return 0;
}

int private_memslot_check(const struct vmmu_vm *vm, const struct vmmu_memslot *req, const struct memslot *old)
{
	bool priv = req->flags & VMMU_MEM_PRIVATE;

	if (req->size == 0)
		return 0;
	if (priv && !vm->shared_mask)
		return VMMU_EINVAL;
	if (priv && (req->flags & VMMU_MEM_READONLY))
		return VMMU_EINVAL;
	/* Private pages cannot be write-protected: nothing could be logged. */
	if (priv && (req->flags & VMMU_MEM_LOG_DIRTY_PAGES))
		return VMMU_ENOTSUP;
	if (old && (!!(old->flags & VMMU_MEM_PRIVATE) != priv))
		return VMMU_EINVAL;
	/* As KVM refuses to move a guest_memfd slot: its private pages are
	 * bound to their gfns. */
	if (old && priv && (req->gpa >> 12) != old->base_gfn)
		return VMMU_EINVAL;
	/* Slots live in the unaliased gpa space, below the shared bit. */
	if (vm->shared_mask && (req->gpa >= vm->shared_mask || req->size > vm->shared_mask - req->gpa))
		return VMMU_ERANGE;
	return 0;
}

int private_backing_alloc(struct memslot *s, uint64_t size, uint64_t host_page_size)
{
	size_t align = host_page_size >= (1ULL << 21) ? (1ULL << 21) : 4096;
	size_t len = size + align;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return VMMU_ENOMEM;
	s->priv_map_base = p;
	s->priv_map_size = len;
	/* Congruent with the gfns modulo the huge size, whatever the slot's
	 * base: every 2M-aligned private range can be one huge page. */
	s->priv_hva = (((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1)) +
		      ((s->base_gfn << 12) & (align - 1));
	if (s->priv_hva + size > (uintptr_t)p + len)
		s->priv_hva -= align;
	(void)madvise((void *)s->priv_hva, size, align > 4096 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return 0;
}

void private_backing_free(struct memslot *s)
{
	if (s->priv_map_base)
		munmap(s->priv_map_base, s->priv_map_size);
	s->priv_map_base = NULL;
}

/* ---- faults --------------------------------------------------------------------- */

static int alias_mismatch(struct page_fault *fault)
{
	fault->host_error = VMMU_EAGAIN;
	return RET_PF_FAULT;
}

__hot int private_check_shared(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	const struct attr_set *a;
	int level;

	/* Sequence first, attributes second: attributes.h. */
	fault->mmu_seq = inv_sample(&vm->inv);
	fault->mmu_seq_valid = true;
	a = atomic_load_explicit(&vm->attrs, memory_order_acquire);
	if (attr_is_private(a, fault->gfn))
		return alias_mismatch(fault);
	/* A shared mapping never covers a private gfn (audited). */
	for (level = PG_LEVEL_1G; level > PG_LEVEL_4K; level--) {
		uint64_t pages = spte_level_pages(level), base = fault->gfn & ~(pages - 1);

		if (attr_uniform(a, base, base + pages, false))
			break;
	}
	fault->level_cap = level;
	return RET_PF_CONTINUE;
}

/* The private backing's page exists and is writable: vmmu's own memory. */
static void private_touch(uintptr_t hva)
{
#ifdef VMMU_TSAN
	/* TSan would see the touch race with guest copies: ask the kernel. */
	(void)madvise((void *)(hva & ~(uintptr_t)0xfff), 4096, MADV_POPULATE_WRITE);
#else
	__atomic_fetch_add((uint64_t *)hva, 0, __ATOMIC_RELAXED);
#endif
}

__hot int private_faultin(struct vmmu_vcpu *v, struct page_fault *fault)
{
	struct vmmu_vm *vm = v->vm;
	const struct attr_set *a;
	const struct memslot *s;
	int level;

	fault->mmu_seq = inv_sample(&vm->inv);
	fault->mmu_seq_valid = true;
	a = atomic_load_explicit(&vm->attrs, memory_order_acquire);
	if (!attr_is_private(a, fault->gfn))
		return alias_mismatch(fault);
	s = memslots_find_gfn(vm_memslots(vm), fault->gfn);
	/*
	 * No private backing here (no slot, or one without VMMU_MEM_PRIVATE):
	 * a private access never becomes MMIO (TDX emulates MMIO on shared
	 * gpas only), it is a memory fault, as KVM reports it.
	 */
	if (!s || !(s->flags & VMMU_MEM_PRIVATE) || atomic_load_explicit(&vm->released, memory_order_acquire)) {
		fault->host_error = VMMU_EFAULT;
		return RET_PF_FAULT;
	}
	if (s->flags & MEMSLOT_INVALID)
		return RET_PF_RETRY;
	/* A 2M private page only where the slot, the backing's alignment and
	 * the attribute allow it over the whole 2M. */
	level = vm->max_level < PRIVATE_MAX_LEVEL ? vm->max_level : PRIVATE_MAX_LEVEL;
	level = memslot_max_mapping_level(s, fault->gfn, level);
	for (; level > PG_LEVEL_4K; level--) {
		uint64_t pages = spte_level_pages(level), base = fault->gfn & ~(pages - 1);

		if (!((memslot_gfn_to_priv_hva(s, base) >> 12) & (pages - 1)) && attr_uniform(a, base, base + pages, true))
			break;
	}
	fault->slot = s;
	fault->max_level = fault->goal_level = level;
	fault->hva = memslot_gfn_to_priv_hva(s, fault->gfn & ~(spte_level_pages(level) - 1));
	private_touch(fault->hva);
	STAT_INC(v->stat.host_faultins);
	fault->pfn = fault->hva >> 12;
	fault->map_writable = true;	/* TDX: private pages are RWX, never read-only */
	return RET_PF_CONTINUE;
}

/* ---- conversions ----------------------------------------------------------------- */

/*
 * Private contents of [start, end) are gone (TDX removes the page; it comes
 * back zeroed on the next private fault).  Runs after the private mappings
 * went and TLBs were flushed, under slots_lock, so nothing reaches the pages
 * and no slot is freed meanwhile.
 */
static void private_discard(struct vmmu_vm *vm, uint64_t start, uint64_t end)
{
	const struct memslots *ms = vm->memslots;

	for (unsigned int i = 0; i < ms->n; i++) {
		const struct memslot *s = &ms->slots[i];
		uint64_t lo = s->base_gfn > start ? s->base_gfn : start;
		uint64_t hi = s->base_gfn + s->npages < end ? s->base_gfn + s->npages : end;

		if (!(s->flags & VMMU_MEM_PRIVATE) || lo >= hi)
			continue;
		(void)madvise((void *)memslot_gfn_to_priv_hva(s, lo), (hi - lo) << 12, MADV_DONTNEED);
	}
}

VMMU_EXPORT int vmmu_set_memory_attributes(vmmu_vm *vm, uint64_t gpa, uint64_t size, uint64_t attrs)
{
	struct attr_set *cur, *next;
	uint64_t start, end;
	bool priv = attrs & VMMU_MEMORY_ATTRIBUTE_PRIVATE, flush = false;
	int r = 0;

	if (!vm)
		return VMMU_EINVAL;
	if (!vm->shared_mask)
		return VMMU_ENOTSUP;
	if ((attrs & ~VMMU_MEMORY_ATTRIBUTE_PRIVATE) || !size || ((gpa | size) & 0xfff) || gpa + size < gpa)
		return VMMU_EINVAL;
	if (gpa + size > vm->shared_mask)
		return VMMU_ERANGE;
	if (vm_is_bugged(vm))
		return VMMU_EIO;
	start = gpa >> 12;
	end = (gpa + size) >> 12;
	vmmu_rcu_thread_online();
	/* KVM takes slots_lock too: conversions and memslot changes are one stream. */
	pthread_mutex_lock(&vm->slots_lock);
	cur = atomic_load_explicit(&vm->attrs, memory_order_relaxed);
	if (attr_uniform(cur, start, end, priv))
		goto out;
	next = attr_update(cur, start, end, priv);
	if (!next) {
		r = VMMU_ENOMEM;
		goto out;
	}
	/*
	 * One write-side section: the alias that stops being valid goes, the
	 * new attributes appear and the sequence moves, so every fault either
	 * ran entirely before (and its mapping was just removed) or sees the
	 * sequence move and retries with the new attributes.
	 */
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	/* Shared translations may go: a lock-free invalidation must not take
	 * the range for unmapped before this flushes (vm_zap_section_begin). */
	vm_zap_section_begin(vm);
	if (priv) {
		flush = mmu_zap_gfn_range_locked(vm, start, end);
	} else {
		r = tdp_mmu_zap_private_range(vm, start, end);
		if (r) {
			/* Nothing changed: the attributes stay, so do the
			 * contents (the leaves already removed fault back in). */
			vm_zap_section_end(vm);
			pthread_rwlock_unlock(&vm->mmu_lock);
			vmmu_rcu_read_unlock();
			free(next);
			goto out;
		}
	}
	atomic_store_explicit(&vm->attrs, next, memory_order_release);
	/* Every fault that sampled before this retries, whatever its range. */
	inv_bump_all(&vm->inv);
	if (flush)
		vm_flush_remote_tlbs(vm);
	vm_zap_section_end(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	if (!priv)
		private_discard(vm, start, end);
	VM_STAT_ADD(vm->stat.attribute_changes, 1);
	if (cur)
		vmmu_call_rcu(&cur->rcu, attr_free_cb);
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

VMMU_EXPORT int vmmu_get_memory_attributes(vmmu_vm *vm, uint64_t gpa, uint64_t *attrs)
{
	if (!vm || !attrs)
		return VMMU_EINVAL;
	if (!vm->shared_mask)
		return VMMU_ENOTSUP;
	if ((gpa & ~vm->shared_mask) >> vm->cfg.maxphyaddr)
		return VMMU_ERANGE;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	*attrs = attr_is_private(atomic_load_explicit(&vm->attrs, memory_order_acquire),
				 (gpa & ~vm->shared_mask) >> 12)
			 ? VMMU_MEMORY_ATTRIBUTE_PRIVATE
			 : 0;
	vmmu_rcu_read_unlock();
	return 0;
}

/* ---- slots going, release, destroy ----------------------------------------------- */

bool private_zap_slot(struct vmmu_vm *vm, const struct memslot *s)
{
	int r;

	if (!(s->flags & VMMU_MEM_PRIVATE))
		return true;
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	r = tdp_mmu_zap_private_range(vm, s->base_gfn, s->base_gfn + s->npages);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	/*
	 * The slot is already invalid; its backing cannot be freed while the
	 * private table may still map it.  Keeping it (mapped until the
	 * process exits) is the only safe answer; the VM is bugged and
	 * refuses work.
	 */
	return !VM_BUG_ON(vm, r, "private pages of a deleted slot could not be removed (%d)", r);
}

void private_release(struct vmmu_vm *vm)
{
	int r;

	if (!vm->mirror_root)
		return;
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	r = tdp_mmu_zap_private_range(vm, 0, vm->shared_mask >> 12);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	VM_BUG_ON(vm, r, "private pages could not be removed at release (%d)", r);
}

void private_vm_free(struct vmmu_vm *vm)
{
	free(atomic_load_explicit(&vm->attrs, memory_order_relaxed));
}
