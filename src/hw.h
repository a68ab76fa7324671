/* SPDX-License-Identifier: MIT */
#ifndef VMMU_HW_H
#define VMMU_HW_H
/*
 * The "hardware": what a CPU does with the SPTE tables KVM builds.  Per-vCPU
 * TLB and paging-structure caches, a walker over EPT or NPT tables that sets
 * A/D bits atomically exactly where a CPU would, and exits (EPT violation,
 * EPT misconfiguration, NPT #NPF) for the MMU to handle.
 *
 * The walker runs without mmu_lock, inside the RCU read section of the vCPU's
 * access: page tables it can reach are not freed under it.  It never writes an
 * SPTE except to set A/D, and it does that with cmpxchg against the value it
 * read, so a zapped or changed entry is never resurrected (SDM 4.8: the CPU
 * sets A/D only in entries that are present).
 */
#include <stdbool.h>
#include <stdint.h>

#include "vmmu_int.h"

enum hw_exit_kind {
	HW_EXIT_NONE = 0,
	HW_EXIT_EPT_VIOLATION,	/* also NPT #NPF without RSVD */
	HW_EXIT_EPT_MISCONFIG,	/* also NPT #NPF with RSVD */
};

/* EPT violation exit qualification (SDM 28.2.1, Table 28-7). */
#define EPT_VIOLATION_ACC_READ (1u << 0)
#define EPT_VIOLATION_ACC_WRITE (1u << 1)
#define EPT_VIOLATION_ACC_INSTR (1u << 2)
#define EPT_VIOLATION_READABLE (1u << 3)
#define EPT_VIOLATION_WRITABLE (1u << 4)
#define EPT_VIOLATION_EXECUTABLE (1u << 5)
#define EPT_VIOLATION_RWX_SHIFT 3

struct hw_exit {
	enum hw_exit_kind kind;
	uint64_t gpa;
	uint64_t qualification;	/* EPT: exit qualification; NPT: #NPF error code */
	int level;		/* level of the entry that stopped the walk */
};

/* Access kinds for the walker: ACC_WRITE / ACC_EXEC, 0 = read. */

/*
 * Translate gpa for an access; on success *hva is the host address of the
 * byte.  On failure *e says why.  Must run in guest mode, under RCU.
 */
bool hw_walk(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva, struct hw_exit *e);

static inline bool hw_translate(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva,
				struct hw_exit *e)
{
	uint64_t gfn = gpa >> 12;
	struct tlb_entry *te = &v->tlb.e[gfn & (TLB_ENTRIES - 1)];

	if (likely(te->tag == gfn && te->gen == v->tlb.gen)) {
		/* A write through an entry whose D bit was clear walks again to
		 * set it, as a CPU does (SDM 4.8). */
		bool ok = !(acc & ACC_WRITE) || ((te->access & ACC_WRITE) && te->dirty);

		if (acc & ACC_EXEC)
			ok = ok && (te->access & ACC_EXEC);
		if (likely(ok)) {
			STAT_INC(v->stat.tlb_hits);
			*hva = te->hva_page + (gpa & 0xfff);
			return true;
		}
	}
	STAT_INC(v->stat.tlb_misses);
	return hw_walk(v, gpa, acc, hva, e);
}

/* The page-fault error code KVM derives from an exit. */
uint32_t hw_exit_to_error_code(const struct vmmu_vm *vm, const struct hw_exit *e);

void hw_tlb_flush(struct vmmu_vcpu *v);

#endif /* VMMU_HW_H */
