/* SPDX-License-Identifier: MIT */
#ifndef VMMU_INVALIDATE_H
#define VMMU_INVALIDATE_H
/*
 * The bookkeeping of MMU-notifier invalidations (docs/mmu.md 10.1): which hva
 * ranges are being invalidated now, and which ones ended recently.
 *
 * KVM keeps one counter, one sequence and the union of the ranges in
 * progress, all changed under mmu_lock.  Under a stream of invalidations that
 * makes every fault wait for ranges it does not touch: the union grows until
 * the count drops to zero, and every end moves the sequence that every
 * in-flight fault compares against.  Here a fault waits only for ranges that
 * overlap its own mapping:
 *  - up to INV_TRACKED open ranges are kept one by one (more are folded into
 *    a union, KVM's rule, until all of those have ended);
 *  - each end moves seq and records its range in a ring of INV_HISTORY
 *    entries, so a fault that sampled seq before its host fault-in retries
 *    only if one of the invalidations that ended since overlapped it (or if
 *    more ended than the ring remembers).
 * Begin and end change this under their own mutex, never under mmu_lock; a
 * seqlock lets faults read it consistently without a lock.  Zaps that must
 * also make racing faults retry record "everything".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define INV_TRACKED 16
#define INV_HISTORY 64

struct inv_range {
	_Atomic uintptr_t start, end;	/* [start, end); empty when start >= end */
};

struct mmu_invalidate {
	pthread_mutex_t lock;		/* serializes the writers (begin, end, zaps) */
	_Atomic uint32_t sc;		/* seqcount: odd while a writer changes the fields below */
	_Atomic uint64_t seq;		/* KVM's mmu_invalidate_seq: moved by every end */
	_Atomic long in_progress;	/* begins without their end yet */
	_Atomic uint32_t n;		/* tracked[0, n) are open */
	struct inv_range tracked[INV_TRACKED];
	/* The thread that began each tracked range (vmmu_thread_token()), so
	 * an access from that very thread, which could only wait forever, exits
	 * instead (issue 14 item 4). */
	_Atomic(const void *) owner[INV_TRACKED];
	_Atomic long folded;		/* open ranges beyond INV_TRACKED ... */
	struct inv_range rest;		/* ... and their union */
	struct inv_range hist[INV_HISTORY];	/* the end that made seq k: hist[k % INV_HISTORY] */
};

void inv_init(struct mmu_invalidate *inv);
void inv_destroy(struct mmu_invalidate *inv);
/* begin: the range is open (and seen by every fault that checks) on return. */
void inv_add(struct mmu_invalidate *inv, uintptr_t start, uintptr_t end, const void *owner);
/* end: false (nothing changed) if no begin with this range is open. */
bool inv_remove(struct mmu_invalidate *inv, uintptr_t start, uintptr_t end);
/* A zap whose racing faults must retry, whatever their range. */
void inv_bump_all(struct mmu_invalidate *inv);

static inline uint64_t inv_sample(struct mmu_invalidate *inv)
{
	return atomic_load_explicit(&inv->seq, memory_order_acquire);
}

/*
 * Whether a fault that sampled mmu_seq (inv_sample) before faulting in
 * [hva, hva + len) must retry instead of installing: an open range overlaps
 * it, or one that ended since the sample did.
 */
bool inv_retry(struct mmu_invalidate *inv, uint64_t mmu_seq, uintptr_t hva, uintptr_t len);

/* What an access to [hva, hva + len) would wait for now. */
enum inv_wait {
	INV_WAIT_NONE = 0,
	INV_WAIT_OTHER,		/* an open range another thread began */
	INV_WAIT_SELF,		/* an open range the calling thread began */
};
enum inv_wait inv_blocked(struct mmu_invalidate *inv, uintptr_t hva, uintptr_t len, const void *self);

/* A pointer that names the calling thread while it lives. */
const void *vmmu_thread_token(void);

#endif /* VMMU_INVALIDATE_H */
