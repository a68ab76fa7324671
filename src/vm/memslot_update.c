/* SPDX-License-Identifier: MIT */
/*
 * Publishing memslot changes (KVM_SET_USER_MEMORY_REGION): create, flags
 * (dirty logging on and off), and delete/move in two steps through an
 * INVALID copy of the slot.  The snapshots themselves are memslot.c's.
 * docs/mmu.md 10.2.
 */
#include <stdlib.h>
#include <string.h>

#include "mmu/mmu.h"
#include "mmu/tdp/tdp_mmu.h"
#include "test_hook.h"
#include "vm/attributes.h"
#include "vm/vmmu_int.h"

static void memslots_free_cb(struct rcu_head *head)
{
	struct memslots *ms = caa_container_of(head, struct memslots, rcu);

	vmmu_rcu_callback_begin();
	free(ms);
	vmmu_rcu_callback_end();
}

static int alloc_dirty_bitmap(struct vmmu_vm *vm, struct memslot *s)
{
	uint64_t words = memslot_bitmap_words(s);

	s->dirty_bitmap = calloc(words, sizeof(uint64_t));
	if (!s->dirty_bitmap)
		return VMMU_ENOMEM;
	/* KVM_DIRTY_LOG_INITIALLY_SET: report everything once, protect lazily
	 * as the embedder clears; bits past the slot's end stay clear. */
	if ((vm->cfg.flags & (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET)) ==
	    (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET)) {
		memset(s->dirty_bitmap, 0xff, words * sizeof(uint64_t));
		if (s->npages % 64)
			s->dirty_bitmap[words - 1] = (1ULL << (s->npages % 64)) - 1;
	}
	return 0;
}

static bool dirty_init_set(const struct vmmu_vm *vm)
{
	return (vm->cfg.flags & (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET)) ==
	       (VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET);
}

/* Write-protect a slot's mappings for dirty logging (PML: clear the D bits of
 * its 4K leaves, write-protect its huge ones); mmu_lock taken here. */
static void slot_write_protect(struct vmmu_vm *vm, const struct memslot *s)
{
	bool flush = false;

	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	/* Eager splitting: pay for the 4K tables now rather than in the first
	 * write fault of every huge page while the guest runs. */
	if (vm->root && (vm->cfg.flags & VMMU_VM_EAGER_SPLIT))
		tdp_mmu_split_huge_range(vm, vm->root, s->base_gfn, s->base_gfn + s->npages);
	flush = mmu_log_protect_range_locked(vm, s->base_gfn, s->base_gfn + s->npages);
	/* Clearing W only for logging could defer this flush until the log is
	 * harvested (MMU-writable says why W is clear); flushing now keeps the
	 * rule simple: logging starts when this call returns.  With PML the
	 * flush is required: a TLB entry made while D was set would let writes
	 * through without setting D again, unlogged. */
	if (flush)
		vm_flush_remote_tlbs(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

/*
 * Publish a new snapshot.  MMIO SPTEs store only 19 bits of the generation;
 * when those bits wrap, an old MMIO SPTE could match again, so every MMIO
 * SPTE goes (KVM zaps all MMIO SPTEs on wrap).
 */
static void publish_memslots(struct vmmu_vm *vm, struct memslots *ms)
{
	atomic_store_explicit(&vm->memslots, ms, memory_order_release);
	if ((ms->generation & MMIO_SPTE_GEN_MASK) == 0)
		vm_zap_all(vm);
}

/*
 * Shadow pages of gfns a new (or moved) slot now covers were built while no
 * slot did: only roots can be (a walk stops at a table outside RAM), loaded
 * for a CR3, PDPTE or EPTP that pointed outside RAM, and nothing counted
 * them in a write-track array, so the guest's stores to the table would go
 * unseen.  KVM loads a dummy root for such a gfn and drops it once the gfn
 * becomes visible; here the page goes, and the vCPUs holding it reload,
 * building it again tracked.  After a grace period, since a load that read
 * the old snapshot may still be building one.
 */
static void zap_invisible_roots(struct vmmu_vm *vm, uint64_t start, uint64_t end)
{
	vmmu_synchronize_rcu();
	if (!__atomic_load_n(&vm->shadow->nr_pages, __ATOMIC_ACQUIRE))
		return;
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	shadow_zap_slot_pages(vm, start, end);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

VMMU_EXPORT int vmmu_set_memslot(vmmu_vm *vm, const struct vmmu_memslot *req)
{
	const struct memslot *oldp = NULL;
	struct memslot oldcopy, *old = &oldcopy;
	enum memslot_change change;
	struct memslots *cur, *mid, *next;
	struct memslot s;
	int r;

	if (!vm || !req)
		return VMMU_EINVAL;
	r = vmmu_abi_check(req, req->struct_size, sizeof(*req));
	if (r)
		return r;
	if (vm_is_bugged(vm))
		return VMMU_EIO;
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->slots_lock);
	cur = vm->memslots;
	r = memslot_check(cur, req, vm->cfg.maxphyaddr, &change, &oldp);
	if (!r)
		r = private_memslot_check(vm, req, oldp);
	if (r || change == MEMSLOT_NOCHANGE)
		goto out;
	/* cur (and oldp with it) is freed below once no reader can see it. */
	if (oldp)
		oldcopy = *oldp;

	switch (change) {
	case MEMSLOT_CREATE:
		memset(&s, 0, sizeof(s));
		s.id = req->slot;
		s.flags = req->flags;
		s.base_gfn = req->gpa >> 12;
		s.npages = req->size >> 12;
		s.host_level = host_page_size_to_level(req->host_page_size);
		if (req->hva) {
			s.hva = (uintptr_t)req->hva;
		} else {
			s.owned = true;
			s.backing = req->backing;
			r = memslot_alloc_backing(&s, req->size, req->host_page_size ? req->host_page_size : 4096,
						  req->backing);
			if (r)
				goto out;
		}
		if ((req->flags & VMMU_MEM_PRIVATE) && (r = private_backing_alloc(&s, req->size, req->host_page_size))) {
			memslot_free_backing(&s);
			goto out;
		}
		if ((req->flags & VMMU_MEM_LOG_DIRTY_PAGES) && (r = alloc_dirty_bitmap(vm, &s))) {
			memslot_free_backing(&s);
			goto out;
		}
		if ((r = shadow_slot_alloc(&s))) {
			memslot_free_backing(&s);
			free(s.dirty_bitmap);
			goto out;
		}
		next = memslots_copy_update(cur, s.id, &s);
		if (!next) {
			memslot_free_backing(&s);
			free(s.dirty_bitmap);
			shadow_slot_free(&s);
			r = VMMU_ENOMEM;
			goto out;
		}
		/* Old MMIO SPTEs in the new range miss on their generation. */
		publish_memslots(vm, next);
		vmmu_call_rcu(&cur->rcu, memslots_free_cb);
		vmmu_test_hook(VMMU_TEST_HOOK_SLOT_PUBLISHED, s.base_gfn);
		zap_invisible_roots(vm, s.base_gfn, s.base_gfn + s.npages);
		break;

	case MEMSLOT_FLAGS_ONLY: {
		bool was = memslot_logging(old), will = req->flags & VMMU_MEM_LOG_DIRTY_PAGES;

		s = *old;
		s.flags = req->flags;
		if (!was && will && (r = alloc_dirty_bitmap(vm, &s)))
			goto out;
		if (was && !will)
			s.dirty_bitmap = NULL;
		next = memslots_copy_update(cur, s.id, &s);
		if (!next) {
			if (!was && will)
				free(s.dirty_bitmap);
			r = VMMU_ENOMEM;
			goto out;
		}
		publish_memslots(vm, next);
		/*
		 * Faults read the slot once, inside one RCU read section: after a
		 * grace period none that saw the old flags is still installing.
		 * Only then does write protection catch every writable SPTE
		 * (KVM commits flags after synchronize_srcu for the same reason).
		 */
		vmmu_synchronize_rcu();
		free(cur);
		if (!was && will && !dirty_init_set(vm))
			slot_write_protect(vm, &s);
		if (was && !will) {
			free(old->dirty_bitmap);
			/* Huge-page recovery: logging mapped everything at 4K; zap so
			 * the next faults map huge again where the slot allows. */
			if (old->host_level > PG_LEVEL_4K)
				vm_zap_gfn_range(vm, old->base_gfn, old->base_gfn + old->npages, true);
		}
		break;
	}

	case MEMSLOT_DELETE:
	case MEMSLOT_MOVE:
		/*
		 * KVM's two-step update: first publish the slot as INVALID so
		 * new faults on it retry, wait for every reader of the old
		 * snapshot, then zap what the old slot mapped.  Only then can
		 * the final snapshot appear: no fault can have mapped the old
		 * location after the zap.
		 */
		s = *old;
		s.flags |= MEMSLOT_INVALID;
		mid = memslots_copy_update(cur, s.id, &s);
		if (!mid) {
			r = VMMU_ENOMEM;
			goto out;
		}
		s = *old;
		if (change == MEMSLOT_MOVE)
			s.base_gfn = req->gpa >> 12;
		s.flags = req->flags;
		/*
		 * A move builds the slot from the request, flags included (as
		 * KVM does), so it can start or stop logging.  The move zaps
		 * every mapping of the slot: nothing needs write-protecting.
		 */
		if (change == MEMSLOT_MOVE && !memslot_logging(old) && (req->flags & VMMU_MEM_LOG_DIRTY_PAGES) &&
		    (r = alloc_dirty_bitmap(vm, &s))) {
			free(mid);
			goto out;
		}
		if (change == MEMSLOT_MOVE && !(req->flags & VMMU_MEM_LOG_DIRTY_PAGES))
			s.dirty_bitmap = NULL;
		next = memslots_copy_update(mid, s.id, change == MEMSLOT_DELETE ? NULL : &s);
		if (!next) {
			if (s.dirty_bitmap != old->dirty_bitmap)
				free(s.dirty_bitmap);
			free(mid);
			r = VMMU_ENOMEM;
			goto out;
		}
		publish_memslots(vm, mid);
		vmmu_synchronize_rcu();
		free(cur);
		vm_zap_gfn_range(vm, old->base_gfn, old->base_gfn + old->npages, true);
		/* Private slots cannot move: this is a delete, its private pages go. */
		if (!private_zap_slot(vm, old))
			old->priv_map_base = NULL;
		/* Shadow pages of guest tables in the slot count on its
		 * write-track array: they go before it does (or moves). */
		vmmu_rcu_read_lock();
		pthread_rwlock_wrlock(&vm->mmu_lock);
		shadow_zap_slot_pages(vm, old->base_gfn, old->base_gfn + old->npages);
		pthread_rwlock_unlock(&vm->mmu_lock);
		vmmu_rcu_read_unlock();
		publish_memslots(vm, next);
		vmmu_synchronize_rcu();
		if (change == MEMSLOT_DELETE) {
			/* mid still describes the deleted slot; nobody can reach it now. */
			struct memslot *dead = NULL;

			for (unsigned int i = 0; i < mid->n; i++)
				if (mid->slots[i].id == req->slot)
					dead = &mid->slots[i];
			if (dead) {
				if (!old->priv_map_base)
					dead->priv_map_base = NULL;	/* still mapped privately: keep it */
				memslot_free_backing(dead);
				free(dead->dirty_bitmap);
				shadow_slot_free(dead);
			}
		}
		if (change == MEMSLOT_MOVE)
			zap_invisible_roots(vm, s.base_gfn, s.base_gfn + s.npages);
		/* A move that stopped logging: the old bitmap is unreachable now. */
		if (change == MEMSLOT_MOVE && memslot_logging(old) && !(req->flags & VMMU_MEM_LOG_DIRTY_PAGES))
			free(old->dirty_bitmap);
		free(mid);
		break;
	case MEMSLOT_NOCHANGE:
		break;
	}
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

VMMU_EXPORT int vmmu_memslot_hva(vmmu_vm *vm, uint32_t slot, void **hva)
{
	const struct memslot *s;
	int r = VMMU_ENOENT;

	if (!vm || !hva)
		return VMMU_EINVAL;
	pthread_mutex_lock(&vm->slots_lock);
	s = memslots_find_id(vm->memslots, slot);
	if (s) {
		*hva = (void *)s->hva;
		r = 0;
	}
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

VMMU_EXPORT int vmmu_gpa_to_hva(vmmu_vm *vm, uint64_t gpa, void **hva)
{
	const struct memslot *s;
	int r = VMMU_ENOENT;

	if (!vm || !hva)
		return VMMU_EINVAL;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	/* Either alias names the shared memory; private memory has no hva. */
	gpa &= ~vm->shared_mask;
	s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	if (s && !(s->flags & MEMSLOT_INVALID)) {
		*hva = (void *)(memslot_gfn_to_hva(s, gpa >> 12) + (gpa & 0xfff));
		r = 0;
	}
	vmmu_rcu_read_unlock();
	return r;
}
