/* SPDX-License-Identifier: MIT */
#ifndef VMMU_ATTRIBUTES_H
#define VMMU_ATTRIBUTES_H
/*
 * Private memory, the runtime's side (docs/mmu.md 13): the private VM's
 * configuration, memory attributes as ranges, the private backing of
 * VMMU_MEM_PRIVATE slots (guest_memfd's role), and the host half of a fault
 * for each alias.
 *
 * Attributes are a sorted set of disjoint, non-adjacent [start, end) ranges
 * of private gfns, immutable once published (RCU) and replaced whole under
 * slots_lock: a conversion of any size costs O(ranges), never a byte per
 * page.  A fault samples the invalidation sequence (inv_sample) *before*
 * it reads them, and a conversion publishes them and moves the sequence
 * inside one write-side section of mmu_lock, so a fault that used the old attributes either
 * installed before the conversion's zap (which removes it) or sees the
 * sequence moved and retries.
 */
#include <stdbool.h>
#include <stdint.h>

#include "mmu/mmu.h"
#include "vm/vmmu_int.h"

struct attr_set {
	unsigned long n;
	struct rcu_head rcu;
	struct {
		uint64_t start, end;
	} r[];
};

/* RCU read side (or slots_lock). */
bool attr_is_private(const struct attr_set *a, uint64_t gfn);
bool attr_uniform(const struct attr_set *a, uint64_t start, uint64_t end, bool priv);

/* vmmu_vm_create: 0 with *shared_mask (0 for a VM that is not private), or an error. */
int private_config_check(const struct vmmu_vm_config *cfg, uint64_t *shared_mask);
/* Memslot requests in a private VM (or with VMMU_MEM_PRIVATE anywhere). */
int private_memslot_check(const struct vmmu_vm *vm, const struct vmmu_memslot *req, const struct memslot *old);

int private_backing_alloc(struct memslot *s, uint64_t size, uint64_t host_page_size);
void private_backing_free(struct memslot *s);
static inline uintptr_t memslot_gfn_to_priv_hva(const struct memslot *s, gfn_t gfn)
{
	return s->priv_hva + ((gfn - s->base_gfn) << 12);
}

/*
 * The host side of a fault in a private VM, RCU read side held.  Both
 * sample the invalidation sequence (inv_sample) before reading the
 * attributes and return RET_PF_FAULT (host_error VMMU_EAGAIN) when the alias disagrees with them.
 * private_faultin() fills the whole fault (slot, private pfn, level);
 * private_check_shared() leaves the rest to mmu_faultin(), capping the level
 * where the attribute stays shared.
 */
int private_faultin(struct vmmu_vcpu *v, struct page_fault *fault);
int private_check_shared(struct vmmu_vcpu *v, struct page_fault *fault);

/* A deleted private slot: its private mappings go before its backing. */
/* false: they could not be, and the backing must stay (the VM is bugged). */
bool private_zap_slot(struct vmmu_vm *vm, const struct memslot *s);
/* vmmu_release(): no private mapping survives either. */
void private_release(struct vmmu_vm *vm);
void private_vm_free(struct vmmu_vm *vm);

#endif /* VMMU_ATTRIBUTES_H */
