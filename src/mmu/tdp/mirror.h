/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TDP_MIRROR_H
#define VMMU_TDP_MIRROR_H
/*
 * The mirror root of a private VM (seed 001; KVM's role.is_mirror).  The
 * real private table belongs to the security module (cpu/secure_ept.h); the
 * MMU keeps a copy of it in ordinary memory, changes that copy with the
 * ordinary TDP MMU code under the shared mmu_lock, and sends every change
 * to the module through the external ops.  Rules a caller keeps:
 *
 *  - Under the read side of mmu_lock a mirror SPTE changes only by the
 *    frozen protocol (tdp_mmu.c): cmpxchg old -> FROZEN_SPTE, the op, then
 *    the final value with a release store -- or, if the op failed, the old
 *    value back.  While an entry is frozen nobody else changes it (faults
 *    retry on FROZEN, never wait in the op; zaps hold the write side, which
 *    the freezer's read side excludes), so the restore is a plain store.
 *  - Under the write side nothing else touches the mirror (the hardware
 *    never walks it, and the lockless paths -- fast page fault, aging,
 *    dirty-log protection -- never look at it), so a change calls the op
 *    first and writes the SPTE only if the op succeeded.
 *  - The mirror loses leaves only (conversions, memslot deletion, release);
 *    its tables stay until VM destroy, the one time they go, with the
 *    module in teardown mode (no vCPU runs).
 *  - Mirror present => module present: the op that maps runs before the
 *    release store that makes the mirror SPTE present, and the op that
 *    unmaps runs before the mirror SPTE is cleared.
 */
#include <stddef.h>
#include <stdint.h>

#include "vm/vmmu_int.h"

/* The module, the default ops and the mirror root; 0 or VMMU_ENOMEM. */
int mirror_init(struct vmmu_vm *vm);
/* VM destroy, vCPUs gone: the mirror torn down through the ops (teardown). */
void mirror_destroy_root(struct vmmu_vm *vm);
/* After the RCU barrier: the module and whatever it still holds. */
void mirror_destroy_module(struct vmmu_vm *vm);

/*
 * The external op for one change of a mirror SPTE at (gfn, level): set for
 * a new leaf, link for a new table, split for a huge leaf becoming a table,
 * remove for a leaf going away.  0 or the op's error.
 */
int mirror_propagate(struct vmmu_vm *vm, uint64_t gfn, uint64_t old_spte, uint64_t new_spte, int level);
/* The table under the entry (gfn, level) was unlinked and emptied. */
void mirror_free_table(struct vmmu_vm *vm, uint64_t gfn, int level);

/*
 * mmu_lock held for write: mirror == the module's table, entry for entry,
 * and the private-memory invariants of docs/mmu.md 13.6 (C1-C8); 0 or -1
 * with the first violation in why.
 */
int mirror_audit(struct vmmu_vm *vm, char *why, size_t len);

#endif /* VMMU_TDP_MIRROR_H */
