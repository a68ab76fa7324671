/* SPDX-License-Identifier: MIT */
#ifndef VMMU_FUZZ_MODEL_H
#define VMMU_FUZZ_MODEL_H
/*
 * The reference model of the operation fuzzer: what every vCPU access must
 * do, given the memslots, the host protections, the invalidations in
 * progress and vmmu_release(), with guest paging off (gva == gpa).
 *
 * It is deliberately plain and slow: a linear search of a handful of slots,
 * a byte array with the expected contents of all host memory under test, a
 * byte per host page for its protection.  It knows nothing of SPTEs, TLBs,
 * huge pages or generations: those are how vmmu gets the answer, the model
 * only says what the answer is (include/vmmu/vmmu.h, docs/mmu.md R1, R7).
 *
 * The rules:
 *  - a page of an access outside every slot is an MMIO exit;
 *  - a write into a READONLY slot is an MMIO exit with readonly_slot set
 *    (the embedder emulates it; no host memory is involved, so this wins
 *    over a host protection, as KVM's KVM_HVA_ERR_RO_BAD does);
 *  - after vmmu_release(), any other access to a slot is a memory fault;
 *  - host NONE: any access is a memory fault; host RO: a write is;
 *  - otherwise the bytes are those of the backing buffer;
 *  - the exit describes the first page of the access that needs one, and
 *    then no byte is transferred;
 *  - a page of a slot whose fault could touch an open invalidation may
 *    wait until its end, whatever the fault would end in: the
 *    single-threaded fuzzer must not issue such an access (BLOCKED).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmmu/vmmu.h"

#define MODEL_MAX_SLOTS 8
#define MODEL_MAX_INVAL 4
#define MODEL_PAGE 4096ULL

struct model_slot {
	bool used;
	uint32_t flags;		/* VMMU_MEM_* */
	uint64_t gpa, size;
	uintptr_t hva;
	uint64_t host_page;
	/* Pages written by the guest since the last harvest (logged slots). */
	uint64_t *dirty;
};

struct model {
	uintptr_t arena;	/* all host memory slots may use, page aligned */
	size_t arena_len;
	uint8_t *expect;	/* what each arena byte must hold */
	uint8_t *prot;		/* per arena page: VMMU_HOST_RW/RO/NONE */
	struct model_slot slots[MODEL_MAX_SLOTS];
	struct {
		uintptr_t start, end;
	} inval[MODEL_MAX_INVAL];
	unsigned int n_inval;
	/* The hull of the invalidations open since the count left zero: vmmu
	 * (like KVM) may hold back every fault that touches it. */
	uintptr_t hull_start, hull_end;
	/* Host memory another thread may invalidate at any time: while any
	 * invalidation of this thread is open, the hull may reach it too. */
	uintptr_t xhull_start, xhull_end;
	/* ...and since the hull is reset only when the count of all threads'
	 * invalidations reaches zero, which this thread cannot see, it never
	 * shrinks then (set with the other thread). */
	bool hull_sticky;
	bool released;
};

enum model_outcome {
	MODEL_OK,
	MODEL_MMIO,
	MODEL_MEMFAULT,
	MODEL_BLOCKED,
};

struct model_result {
	enum model_outcome outcome;
	uint64_t gpa;		/* MMIO: first byte of the fragment; MEMFAULT: the page */
	uint32_t len;		/* MMIO: bytes of the fragment */
	uint32_t offset;	/* MMIO: fragment's offset within the access */
	bool readonly_slot;
};

int model_init(struct model *m, uintptr_t arena, size_t arena_len);
void model_free(struct model *m);
/* Forget every slot and range; the arena's expected contents are the
 * caller's to set (model->expect). */
void model_reset(struct model *m);

/* The slot (and its host address) of gpa, or NULL. */
const struct model_slot *model_find(const struct model *m, uint64_t gpa, uintptr_t *hva);

/*
 * Could a fault on the page at hva be held back by an open invalidation (it
 * may map the 2 MiB around it)?  The guest-paging model asks this for the
 * guest's page tables too: with TDP, a walk reads them through the TDP.
 */
bool model_hva_may_wait(const struct model *m, uintptr_t hva);

/*
 * vmmu_set_memslot(): the result the request must get, for the requests
 * the fuzzer makes (ids < MODEL_MAX_SLOTS, hva inside the arena).  0 or a
 * VMMU_E* code; *exact is false when any error code would do.
 */
int model_check_memslot(const struct model *m, const struct vmmu_memslot *req, bool *exact);
void model_apply_memslot(struct model *m, const struct vmmu_memslot *req);

/* What an access of len bytes at gpa must do. */
void model_access(const struct model *m, uint64_t gpa, size_t len, bool write, struct model_result *res);
/* A write that completed: the arena bytes and the dirty pages. */
void model_commit_write(struct model *m, uint64_t gpa, const void *buf, size_t len);
/* A store (or an A/D update) reached gpa: a logging slot owes that page to
 * the next harvest. */
void model_mark_dirty(struct model *m, uint64_t gpa);
/* The bytes a completed read must return. */
void model_expected_bytes(const struct model *m, uint64_t gpa, size_t len, uint8_t *out);

void model_set_prot(struct model *m, uintptr_t start, uintptr_t end, unsigned int prot);
unsigned int model_prot_at(const struct model *m, uintptr_t hva);
/* The host dropped [start, end) (madvise(MADV_DONTNEED) of private
 * anonymous memory): it reads back as zeros. */
void model_discard(struct model *m, uintptr_t start, uintptr_t end);

bool model_inval_begin(struct model *m, uintptr_t start, uintptr_t end);
/* An invalidation that began and ended inside other open ones (what
 * vmmu_set_host_protection() and a discard do): it widens the hull all
 * the same, as KVM's mmu_invalidate_range_start/end do. */
void model_hull_extend(struct model *m, uintptr_t start, uintptr_t end);
/* Ends open invalidation k (any order), returning its range. */
void model_inval_end(struct model *m, unsigned int k, uintptr_t *start, uintptr_t *end);

/*
 * A harvest of slot id returned bitmap: every page the guest wrote since
 * the previous harvest must be in it (extra pages are allowed).  Returns
 * the first missing page, or -1; clears the model's record either way.
 */
int64_t model_harvest(struct model *m, uint32_t id, const uint64_t *bitmap);

#endif /* VMMU_FUZZ_MODEL_H */
