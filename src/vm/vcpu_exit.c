/* SPDX-License-Identifier: MIT */
/* The handlers of vcpu_exit.h: an exit of the hardware model into the MMU. */
#include "vm/vcpu_exit.h"

#include "mmu/mmu.h"
#include "mmu/nested.h"

static int mmio_exit(struct vmmu_exit *exit, uint64_t gpa, size_t n, size_t offset, bool write, bool readonly_slot)
{
	exit->reason = VMMU_EXIT_MMIO;
	exit->u.mmio.gpa = gpa;
	exit->u.mmio.len = (uint32_t)n;
	exit->u.mmio.offset = (uint32_t)offset;
	exit->u.mmio.is_write = write;
	exit->u.mmio.readonly_slot = readonly_slot;
	return VMMU_EXIT;
}

static int memory_fault_exit(struct vmmu_exit *exit, uint64_t gpa, int error, bool is_private)
{
	exit->reason = VMMU_EXIT_MEMORY_FAULT;
	exit->u.memory_fault.gpa = gpa & ~0xfffULL;
	exit->u.memory_fault.size = 4096;
	exit->u.memory_fault.error = error;
	exit->u.memory_fault.is_private = is_private;
	return VMMU_EXIT;
}

/*
 * A store the MMU must make itself into a write-tracked page (a table it
 * shadows).  The guest's own store (data): done here, if it starts the
 * window (-1 otherwise: cut the window before it).  A page-walk A/D update
 * of the guest's own tables in such a page (the hardware's cmpxchg, which
 * vmmu cannot emulate without a write mapping): the page stops being
 * shadowed, as KVM unprotects a gfn whose write it cannot emulate, and the
 * walk runs again.
 */
static int tracked_store(struct vmmu_vcpu *v, const struct exit_site *site, uint64_t gpa, uintptr_t hva,
			 bool *stored)
{
	if (site->pt_access) {
		shadow_unprotect_gfn(v->vm, gpa >> 12);
		return 0;
	}
	if (!site->first)
		return -1;
	shadow_emulated_store(v, gpa, hva, site->buf, (unsigned int)site->n);
	*stored = true;
	return 0;
}

/* L1's EPT/NPT does not allow the L2 access: the exit L1 must see. */
static int nested_exit(struct vmmu_vcpu *v, const struct shadow_fault *sf, const struct hw_exit *he,
		       const struct exit_site *site, struct vmmu_exit *exit)
{
	uint64_t q = sf->error_code;

	exit->reason = VMMU_EXIT_NESTED;
	exit->u.nested.gpa = he->gpa;
	exit->u.nested.gla_valid = site->linear;
	exit->u.nested.final = !site->pt_access;
	exit->u.nested.gla = site->linear ? site->addr : 0;
	if (!v->vm->fmt.ept) {
		exit->u.nested.kind = VMMU_NESTED_NPF;
		/* EXITINFO1: the #PF error code, bit 32 for the final gpa, 33
		 * for a page-table access (APM 15.25.6). */
		q |= site->pt_access ? 1ULL << 33 : 1ULL << 32;
	} else if (sf->ept_misconfig) {
		exit->u.nested.kind = VMMU_NESTED_EPT_MISCONFIG;
		q = 0;
	} else {
		exit->u.nested.kind = VMMU_NESTED_EPT_VIOLATION;
		if (site->linear)
			q |= (1ULL << 7) | (site->pt_access ? 0 : 1ULL << 8);
	}
	exit->u.nested.qualification = q;
	STAT_INC(v->stat.nested_exits);
	return VMMU_EXIT;
}

/*
 * A TDP exit in guest mode: guest_mmu walks L1's tables for the L2 gpa and
 * fixes its shadow, or says what the embedder must see (a nested exit for
 * L1, an MMIO access or memory fault at an L1 address, a tracked store).
 */
static int vcpu_handle_nested_exit(struct vmmu_vcpu *v, const struct hw_exit *he, const struct exit_site *site,
				   struct vmmu_exit *exit, int *ret_pf, bool *stored, uint64_t *wait_gpa)
{
	struct shadow_fault sf;
	int r;

	vmmu_rcu_read_lock();
	r = nested_page_fault(v, he, &sf);
	vmmu_rcu_read_unlock();
	*ret_pf = r;
	/* A retry waits for the L1 page (a table of L1's, or the frame). */
	*wait_gpa = sf.gpa;
	if (vm_is_bugged(v->vm))
		return internal_error_exit(exit, VMMU_EIO);
	switch (r) {
	case RET_PF_GUEST_FAULT:
		return nested_exit(v, &sf, he, site, exit);
	case RET_PF_EMULATE:
		if (sf.ptwrite)
			return tracked_store(v, site, sf.gpa, sf.hva, stored);
		return mmio_exit(exit, sf.gpa, site->n, site->offset, site->write, sf.readonly_write);
	case RET_PF_FAULT:
		return memory_fault_exit(exit, sf.gpa, sf.host_error, false);
	default:
		return 0;
	}
}

__hot int vcpu_handle_exit(struct vmmu_vcpu *v, const struct hw_exit *he, const struct exit_site *site,
			   struct vmmu_exit *exit, int *ret_pf, bool *stored, uint64_t *wait_gpa)
{
	struct page_fault fault;
	int r;

	STAT_INC(v->stat.exits);
	/*
	 * The fault handler is a software walker: unlike the hardware walk it
	 * runs outside guest mode, so RCU is what keeps tables it reads alive.
	 */
	vmmu_rcu_thread_online();
	if (v->nested.active)
		return vcpu_handle_nested_exit(v, he, site, exit, ret_pf, stored, wait_gpa);
	/* Memslots know the gpa without the shared bit. */
	*wait_gpa = he->gpa & ~v->vm->shared_mask;
	vmmu_rcu_read_lock();
	r = mmu_page_fault(v, he->gpa, hw_exit_to_error_code(v->vm, he), &fault);
	vmmu_rcu_read_unlock();
	*ret_pf = r;
	if (vm_is_bugged(v->vm))
		return internal_error_exit(exit, VMMU_EIO);
	switch (r) {
	case RET_PF_EMULATE:
		if (fault.ptwrite)
			return tracked_store(v, site, he->gpa, fault.hva, stored);
		return mmio_exit(exit, he->gpa, site->n, site->offset, site->write, fault.readonly_write);
	case RET_PF_FAULT:
		/* KVM_EXIT_MEMORY_FAULT: the gpa without the shared bit, and
		 * which alias the access used. */
		return memory_fault_exit(exit, fault.gfn << 12, fault.host_error, fault.is_private);
	default:
		return 0;
	}
}

int vcpu_handle_shadow_pf(struct vmmu_vcpu *v, uint64_t gva, unsigned int walk_access, uint32_t hw_error,
			  uint8_t *buf, size_t n, size_t offset, bool write, bool first, struct vmmu_exit *exit,
			  struct shadow_fault *sf, int *ret_pf)
{
	int r;

	STAT_INC(v->stat.exits);
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	r = shadow_page_fault(v, v->sh.mmu, gva, walk_access, hw_error, sf);
	vmmu_rcu_read_unlock();
	*ret_pf = r;
	if (vm_is_bugged(v->vm))
		return internal_error_exit(exit, VMMU_EIO);
	switch (r) {
	case RET_PF_GUEST_FAULT:
		return guest_fault_exit(v, exit, sf->vector, sf->error_code, sf->fault_addr);
	case RET_PF_EMULATE:
		if (sf->ptwrite) {
			if (!first)
				return -1;
			shadow_emulated_store(v, sf->gpa, sf->hva, buf, (unsigned int)n);
			return 0;
		}
		return mmio_exit(exit, sf->gpa, n, offset, write, sf->readonly_write);
	case RET_PF_FAULT:
		return memory_fault_exit(exit, sf->gpa, sf->host_error, false);
	default:
		return 0;
	}
}

uint32_t vcpu_retry_wait(struct vmmu_vcpu *v, uint64_t gpa)
{
	const struct memslot *s;
	uint32_t cause = 0;

	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	s = memslots_find_gfn(vm_memslots(v->vm), gpa >> 12);
	if (s && (s->flags & MEMSLOT_INVALID)) {
		cause = VMMU_RETRY_MEMSLOT;
	} else if (s) {
		switch (inv_blocked(&v->vm->inv, memslot_gfn_to_hva(s, gpa >> 12), 4096, vmmu_thread_token())) {
		case INV_WAIT_OTHER:
			cause = VMMU_RETRY_INVALIDATION;
			break;
		case INV_WAIT_SELF:
			cause = VMMU_RETRY_SELF;
			break;
		default:
			break;
		}
	}
	vmmu_rcu_read_unlock();
	return cause;
}
