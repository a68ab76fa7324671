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
 */
#include <stdlib.h>
#include <string.h>

#include "tdp/tdp_mmu.h"
#include "vmmu_int.h"

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

/* Write-protect the pages named by (word index, mask) pairs; flush once. */
static void wrprot_words(struct vmmu_vm *vm, const struct memslot *s, uint64_t first_word, const uint64_t *masks,
			 uint64_t nr_words)
{
	bool flush = false;

	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (vm->root)
		flush = tdp_mmu_wrprot_bitmap(vm, vm->root, s->base_gfn + first_word * 64, masks, nr_words);
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
	vmmu_rcu_thread_online();
	pthread_mutex_lock(&vm->slots_lock);
	r = logged_slot(vm, id, &s);
	if (r)
		goto out;
	words = memslot_bitmap_words(s);
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
