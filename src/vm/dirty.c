/* SPDX-License-Identifier: MIT */
/*
 * Dirty-log harvest.  The contract (docs/mmu.md, "Dirty logging"): every
 * guest write to a logged slot after a page's bit was cleared is reported by
 * a later harvest.  It rests on three orderings:
 *  - whoever makes an SPTE writable (slow fault, fast fault) sets the page's
 *    bit after the SPTE is writable, never before;
 *  - the harvest clears bits first (atomic exchange) and write-protects the
 *    pages it cleared second, so a page re-dirtied in between keeps its bit
 *    for the next harvest;
 *  - TLBs are flushed before the harvest returns, so no write after it can go
 *    through a writable translation from before it.  (A write through such a
 *    stale translation during the harvest lands in a page the harvest itself
 *    reports: only pages whose bit was set can have had a writable SPTE.)
 * With VMMU_VM_PML the same three hold with D in place of W (docs/mmu.md
 * 9.5): the walker logs whenever it sets D, the harvest first waits for the
 * vCPUs' buffers to drain, exchanges the bits, clears D on what it reported,
 * and flushes the TLB entries that still let writes skip the walk.
 */
#include <stdlib.h>
#include <string.h>

#include "mmu/tdp/tdp_mmu.h"
#include "vm/vmmu_int.h"

/* The slot by id, logging; called with slots_lock held. */
static int logged_slot(struct vmmu_vm *vm, uint32_t id, const struct memslot **out)
{
	const struct memslot *s = memslots_find_id(vm->memslots, id);

	if (!s)
		return VMMU_ENOENT;
	if (!memslot_logging(s))
		return VMMU_EINVAL;
	*out = s;
	return 0;
}

/*
 * PML: wait out every guest-mode stretch in progress, each of which drains
 * its vCPU's buffer before it ends (KVM kicks the vCPUs for the same reason:
 * its buffers drain on VM exits).  Without it, vCPU B could write through a
 * D bit vCPU A's walk has just set, return, and have a harvest begin and
 * miss the page because A's stretch has not drained yet.
 */
static void pml_flush_vcpus(struct vmmu_vm *vm)
{
	if (vm_pml(vm))
		vm_make_all_vcpus_request(vm, 0);
}

/* Write-protect the pages named by (word index, mask) pairs, or with PML
 * clear their D bits; flush once. */
static void wrprot_words(struct vmmu_vm *vm, const struct memslot *s, uint64_t first_word, const uint64_t *masks,
			 uint64_t nr_words)
{
	bool flush = false;

	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	flush = mmu_log_protect_bitmap_locked(vm, s->base_gfn + first_word * 64, masks, nr_words);
	if (flush)
		vm_flush_remote_tlbs(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

VMMU_EXPORT int vmmu_get_dirty_log(vmmu_vm *vm, uint32_t id, uint64_t *bitmap)
{
	const struct memslot *s;
	uint64_t words;
	int r;

	if (!vm || !bitmap)
		return VMMU_EINVAL;
	if (vm->cfg.dirty_ring_size)
		return VMMU_EPERM;	/* pages go to the rings, not the bitmap */
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->slots_lock);
	r = logged_slot(vm, id, &s);
	if (r)
		goto out;
	words = memslot_bitmap_words(s);
	pml_flush_vcpus(vm);
	if (vm->cfg.flags & VMMU_VM_MANUAL_PROTECT) {
		for (uint64_t i = 0; i < words; i++)
			bitmap[i] = __atomic_load_n(&s->dirty_bitmap[i], __ATOMIC_RELAXED);
		goto out;
	}
	for (uint64_t i = 0; i < words; i++)
		bitmap[i] = __atomic_exchange_n(&s->dirty_bitmap[i], 0, __ATOMIC_ACQ_REL);
	wrprot_words(vm, s, 0, bitmap, words);
out:
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

VMMU_EXPORT int vmmu_clear_dirty_log(vmmu_vm *vm, uint32_t id, uint64_t first_page, uint32_t num_pages,
				     const uint64_t *bitmap)
{
	const struct memslot *s;
	uint64_t words, first_word;
	uint64_t *cleared = NULL;
	int r;

	if (!vm || !bitmap || !(vm->cfg.flags & VMMU_VM_MANUAL_PROTECT))
		return VMMU_EINVAL;
	if (vm->cfg.dirty_ring_size)
		return VMMU_EPERM;
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->slots_lock);
	r = logged_slot(vm, id, &s);
	if (r)
		goto out;
	/* KVM_CLEAR_DIRTY_LOG's rules: 64-page granules, except a range that
	 * ends exactly at the end of the slot. */
	if ((first_page % 64) || first_page >= s->npages || num_pages == 0 ||
	    num_pages > s->npages - first_page ||
	    ((num_pages % 64) && first_page + num_pages != s->npages)) {
		r = VMMU_EINVAL;
		goto out;
	}
	words = (num_pages + 63) / 64;
	first_word = first_page / 64;
	/* Not needed for correctness (a bit a stretch drains after the AND
	 * stays set for the next harvest), but it keeps a clear from
	 * clearing D of a page whose log entry is still on its way. */
	pml_flush_vcpus(vm);
	cleared = malloc(words * sizeof(*cleared));
	if (!cleared) {
		r = VMMU_ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < words; i++) {
		uint64_t mask = bitmap[i];

		if (i == words - 1 && (num_pages % 64))
			mask &= (1ULL << (num_pages % 64)) - 1;
		/* Only what was set is protected: the rest is protected already
		 * or was never reported. */
		cleared[i] = __atomic_fetch_and(&s->dirty_bitmap[first_word + i], ~mask, __ATOMIC_ACQ_REL) & mask;
	}
	wrprot_words(vm, s, first_word, cleared, words);
out:
	pthread_mutex_unlock(&vm->slots_lock);
	free(cleared);
	return r;
}

/* ---- PML ------------------------------------------------------------------- */

/*
 * The vCPU's own thread, at the end of a guest-mode stretch or on a "PML
 * full" exit.  The slot is looked up now, not when D was set: a slot deleted
 * or moved since then at worst gets a spurious bit, and a gfn outside any
 * logged slot (D bits are set everywhere) is dropped, as KVM drops it.
 */
void vcpu_pml_drain(struct vmmu_vcpu *v)
{
	const struct memslot *s = NULL;
	const struct memslots *ms;

	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	ms = vm_memslots(v->vm);
	for (uint32_t i = 0; i < v->pml.n; i++) {
		gfn_t gfn = v->pml.gfn[i];

		if (!s || !memslot_contains(s, gfn))
			s = memslots_find_gfn(ms, gfn);
		if (s && memslot_logging(s))
			vcpu_mark_page_dirty(v, s, gfn);
	}
	v->pml.n = 0;
	vmmu_rcu_read_unlock();
}

/* ---- dirty rings ------------------------------------------------------------ */

void dirty_ring_push(struct vmmu_vcpu *v, uint32_t slot, uint64_t offset)
{
	struct vmmu_dirty_gfn *e = &v->ring.entries[v->ring.dirty_index & (v->ring.size - 1)];
	uint32_t used = v->ring.dirty_index - atomic_load_explicit(&v->ring.reset_index, memory_order_acquire);

	/* The soft-full exit keeps DIRTY_RING_SLACK entries free before every
	 * window, so an entry still in use here is a broken invariant. */
	if (VM_BUG_ON(v->vm, used >= v->ring.size, "dirty ring of vCPU %u overflowed", v->id))
		return;
	e->slot = slot;
	e->offset = offset;
	/* Release: slot/offset are visible to whoever sees the flag. */
	__atomic_store_n(&e->flags, VMMU_DIRTY_GFN_DIRTY, __ATOMIC_RELEASE);
	v->ring.dirty_index++;
}

VMMU_EXPORT int vmmu_vcpu_dirty_ring(vmmu_vcpu *v, struct vmmu_dirty_gfn **entries, uint32_t *size)
{
	if (!v || !entries || !size)
		return VMMU_EINVAL;
	if (!v->ring.entries)
		return VMMU_EPERM;
	*entries = v->ring.entries;
	*size = v->ring.size;
	return 0;
}

VMMU_EXPORT int vmmu_reset_dirty_rings(vmmu_vm *vm)
{
	unsigned int n;
	bool flush = false;
	int total = 0;

	if (!vm)
		return VMMU_EINVAL;
	if (!vm->cfg.dirty_ring_size)
		return VMMU_EPERM;
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->ring_lock);
	pthread_mutex_lock(&vm->slots_lock);
	n = atomic_load_explicit(&vm->nr_vcpus, memory_order_acquire);
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	for (unsigned int i = 0; i < n; i++) {
		struct vmmu_vcpu *v = vm->vcpus[i];
		uint32_t idx = atomic_load_explicit(&v->ring.reset_index, memory_order_relaxed);
		uint32_t start = idx;

		/* In ring order, up to the first entry not yet harvested (KVM). */
		for (;;) {
			struct vmmu_dirty_gfn *e = &v->ring.entries[idx & (v->ring.size - 1)];
			const struct memslot *s;

			if (idx - start >= v->ring.size ||
			    __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) != VMMU_DIRTY_GFN_HARVESTED)
				break;
			/* Protect again before the entry is freed: its page's next
			 * write faults (PML: sets D and is logged) and is pushed
			 * anew.  A slot gone since then took its mappings with it. */
			s = memslots_find_id(vm->memslots, e->slot);
			if (s && e->offset < s->npages)
				flush |= mmu_log_protect_range_locked(vm, s->base_gfn + e->offset,
								     s->base_gfn + e->offset + 1);
			__atomic_store_n(&e->flags, 0, __ATOMIC_RELAXED);
			idx++;
		}
		total += (int)(idx - start);
		atomic_store_explicit(&v->ring.reset_index, idx, memory_order_release);
	}
	if (flush)
		vm_flush_remote_tlbs(vm);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	pthread_mutex_unlock(&vm->slots_lock);
	pthread_mutex_unlock(&vm->ring_lock);
	return total;
}
