/* SPDX-License-Identifier: MIT */
/*
 * What the hardware model's exits become: MMU faults that fix the tables
 * and let the access retry, or the exits the embedder sees (guest faults,
 * MMIO, memory faults, nested exits, retries).  vcpu.c's access loop calls
 * these; vcpu_exit.c holds the handlers.
 */
#ifndef VMMU_VCPU_EXIT_H
#define VMMU_VCPU_EXIT_H

#include "cpu/hw.h"
#include "mmu/shadow/shadow_mmu.h"
#include "vm/vmmu_int.h"

static inline __cold int internal_error_exit(struct vmmu_exit *exit, int error)
{
	exit->reason = VMMU_EXIT_INTERNAL_ERROR;
	exit->u.internal.error = error;
	return VMMU_EXIT;
}

/* Every guest fault an access returns, whatever found it (guest_faults). */
static inline int guest_fault_exit(struct vmmu_vcpu *v, struct vmmu_exit *exit, uint8_t vector,
				   uint32_t error_code, uint64_t addr)
{
	STAT_INC(v->stat.guest_faults);
	exit->reason = VMMU_EXIT_GUEST_FAULT;
	exit->u.guest_fault.vector = vector;
	exit->u.guest_fault.error_code = vector == WALK_VECTOR_PF ? error_code : 0;
	exit->u.guest_fault.addr = addr;
	return VMMU_EXIT;
}

static inline int retry_exit(struct vmmu_exit *exit, uint64_t gpa, uint32_t cause)
{
	exit->reason = VMMU_EXIT_RETRY;
	exit->u.retry.gpa = gpa & ~0xfffULL;
	exit->u.retry.cause = cause;
	return VMMU_EXIT;
}

/* Where a TDP exit happened, for the handler and the exits it makes. */
struct exit_site {
	uint64_t addr;		/* what the access translates (gva, or gpa when phys) */
	bool linear;		/* the access has a linear address (not VMMU_ACCESS_PHYS) */
	bool pt_access;		/* during the walk of the guest's own tables */
	uint8_t *buf;		/* the fragment's bytes */
	size_t n, offset;	/* the fragment and its offset in the access */
	bool write, first;	/* first: the fragment starts its window */
};

/*
 * One exit from the hardware into the MMU.  Returns 0 to retry the access
 * (*stored: the MMU made this fragment's store itself), VMMU_EXIT with
 * *exit filled for the embedder, or -1 when the window must first be cut
 * before this fragment.  *ret_pf gets the fault result, so the caller can
 * tell a legitimate wait from a lost fix.
 */
int vcpu_handle_exit(struct vmmu_vcpu *v, const struct hw_exit *he, const struct exit_site *site,
		     struct vmmu_exit *exit, int *ret_pf, bool *stored, uint64_t *wait_gpa);

/*
 * A shadow-paging exit: the SPTEs did not allow the access.  The MMU walks the
 * guest's tables and fixes the shadow, or says what the embedder must see.
 * Returns 0 to retry, VMMU_EXIT with *exit filled, or -1 when the access must
 * first be cut before this page (an emulated store that is not the window's
 * first fragment).  An emulated store is done here when it is.
 */
int vcpu_handle_shadow_pf(struct vmmu_vcpu *v, uint64_t gva, unsigned int walk_access, uint32_t hw_error,
			  uint8_t *buf, size_t n, size_t offset, bool write, bool first, struct vmmu_exit *exit,
			  struct shadow_fault *sf, int *ret_pf);

/*
 * What a fault at gpa that asked to be retried waits for: a slot being
 * deleted or moved, or an open invalidation of the page (as opposed to a
 * lost race, which the next try wins).  Shadow faults report the gpa of the
 * guest table their walk could not read; TDP faults the gpa that exited.
 */
uint32_t vcpu_retry_wait(struct vmmu_vcpu *v, uint64_t gpa);

#endif /* VMMU_VCPU_EXIT_H */
