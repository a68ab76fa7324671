/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_HOOK_H
#define VMMU_TEST_HOOK_H
/*
 * Named points inside the MMU where a test can stop one thread while another
 * acts, to force open a race window deterministically (tests/
 * test_shadow_race.c).  Nothing outside tests sets the hook: each point
 * costs one relaxed load on a path that is never hot.  Not part of the API
 * (hidden in the shared library).
 */
#include <stdatomic.h>
#include <stdint.h>

#include "compiler.h"

enum vmmu_test_hook_point {
	/* A shadow page stopped counting towards its gfn's write tracking
	 * (prepare_zap); mmu_lock is held for write.  arg: the gfn. */
	VMMU_TEST_HOOK_SHADOW_UNTRACKED = 1,
	/* An emulated physical store (VMMU_ACCESS_PHYS under shadow paging)
	 * is about to write guest memory; no lock held.  arg: the gfn. */
	VMMU_TEST_HOOK_PHYS_STORE,
	/* A fault (TDP or shadow) has sampled the invalidation sequence and
	 * faulted its host page(s) in; it has not checked for invalidations
	 * yet, and holds no lock.  arg: the gfn. */
	VMMU_TEST_HOOK_FAULTIN_DONE,
	/* A TDP invalidation zapped its range under mmu_lock held for read and
	 * has not flushed TLBs yet.  arg: the range's first hva. */
	VMMU_TEST_HOOK_INV_ZAPPED,
	/* A shadow page fault has walked the guest's tables (a nested guest's:
	 * L1's EPT/NPT) and will build from what it read; no lock held.  arg:
	 * the page number of the address translated (gva, or L2 gpa). */
	VMMU_TEST_HOOK_SHADOW_WALKED,
	/* vmmu_set_memslot has published a new slot and not yet dropped the
	 * shadow roots built while its gfns were outside RAM; slots_lock is
	 * held.  arg: the slot's first gfn. */
	VMMU_TEST_HOOK_SLOT_PUBLISHED,
};

typedef void (*vmmu_test_hook_fn)(enum vmmu_test_hook_point point, uint64_t arg);

extern _Atomic(vmmu_test_hook_fn) vmmu_test_hook_fn_ptr;

void vmmu_set_test_hook(vmmu_test_hook_fn fn);

static inline void vmmu_test_hook(enum vmmu_test_hook_point point, uint64_t arg)
{
	vmmu_test_hook_fn fn = atomic_load_explicit(&vmmu_test_hook_fn_ptr, memory_order_acquire);

	if (unlikely(fn))
		fn(point, arg);
}

#endif /* VMMU_TEST_HOOK_H */
