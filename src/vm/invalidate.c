/* SPDX-License-Identifier: MIT */
/*
 * Open and recently ended invalidations, read by faults through a seqlock
 * (invalidate.h says why it is not KVM's single union).
 *
 * The seqlock (Boehm's formulation in C11): a writer makes the count odd,
 * fences, stores, and makes it even with a release store; a reader loads the
 * count (acquire), loads, fences (acquire) and loads the count again, and
 * keeps what it read only if both loads saw the same even value.  Every field
 * is an atomic, so a reader racing with a writer reads stale or torn
 * combinations (which it then throws away), never undefined values.
 */
#include "vm/invalidate.h"

#include <urcu/arch.h>

#include "vm/vmmu_int.h"

/*
 * ThreadSanitizer models no fences (gcc refuses them under -fsanitize=thread):
 * there every seqlock access is seq_cst instead, which orders the same way.
 */
#ifdef VMMU_TSAN
#define MO_DATA memory_order_seq_cst
#define MO_SC_READ memory_order_seq_cst
#define seqlock_fence(mo) ((void)0)
#else
#define MO_DATA memory_order_relaxed
#define MO_SC_READ memory_order_relaxed
#define seqlock_fence(mo) atomic_thread_fence(mo)
#endif

static __thread char thread_token;

const void *vmmu_thread_token(void)
{
	return &thread_token;
}

static inline uintptr_t rload(_Atomic uintptr_t *p)
{
	return atomic_load_explicit(p, MO_DATA);
}

static inline void range_set(struct inv_range *r, uintptr_t start, uintptr_t end)
{
	atomic_store_explicit(&r->start, start, MO_DATA);
	atomic_store_explicit(&r->end, end, MO_DATA);
}

static inline bool range_overlaps(struct inv_range *r, uintptr_t start, uintptr_t end)
{
	return rload(&r->start) < end && start < rload(&r->end);
}

/* Every empty or inverted range is stored as [0, 0): it overlaps nothing,
 * and begin and end with the same arguments name the same entry. */
static inline void normalize(uintptr_t *start, uintptr_t *end)
{
	if (*start >= *end)
		*start = *end = 0;
}

void inv_init(struct mmu_invalidate *inv)
{
	pthread_mutex_init(&inv->lock, NULL);
	atomic_init(&inv->sc, 0);
	atomic_init(&inv->seq, 0);
	atomic_init(&inv->in_progress, 0);
	atomic_init(&inv->n, 0);
	atomic_init(&inv->folded, 0);
	for (unsigned int i = 0; i < INV_TRACKED; i++) {
		range_set(&inv->tracked[i], 0, 0);
		atomic_init(&inv->owner[i], NULL);
	}
	range_set(&inv->rest, 0, 0);
	for (unsigned int i = 0; i < INV_HISTORY; i++)
		range_set(&inv->hist[i], 0, 0);
}

void inv_destroy(struct mmu_invalidate *inv)
{
	pthread_mutex_destroy(&inv->lock);
}

static void write_begin(struct mmu_invalidate *inv)
{
	uint32_t c;

	pthread_mutex_lock(&inv->lock);
	c = atomic_load_explicit(&inv->sc, memory_order_relaxed);
	atomic_store_explicit(&inv->sc, c + 1, MO_DATA);
	/* The odd count is visible before any store below. */
	seqlock_fence(memory_order_release);
}

static void write_end(struct mmu_invalidate *inv)
{
	uint32_t c = atomic_load_explicit(&inv->sc, memory_order_relaxed);

	atomic_store_explicit(&inv->sc, c + 1, memory_order_release);
	pthread_mutex_unlock(&inv->lock);
}

static uint32_t read_begin(struct mmu_invalidate *inv)
{
	for (;;) {
		uint32_t c = atomic_load_explicit(&inv->sc, memory_order_acquire);

		if (!(c & 1))
			return c;
		/* A writer holds it for a few stores, never blocking. */
		caa_cpu_relax();
	}
}

static bool read_retry(struct mmu_invalidate *inv, uint32_t c)
{
	seqlock_fence(memory_order_acquire);
	return atomic_load_explicit(&inv->sc, MO_SC_READ) != c;
}

void inv_add(struct mmu_invalidate *inv, uintptr_t start, uintptr_t end, const void *owner)
{
	uint32_t n;

	normalize(&start, &end);
	write_begin(inv);
	n = atomic_load_explicit(&inv->n, MO_DATA);
	if (n < INV_TRACKED) {
		range_set(&inv->tracked[n], start, end);
		atomic_store_explicit(&inv->owner[n], owner, MO_DATA);
		atomic_store_explicit(&inv->n, n + 1, MO_DATA);
	} else {
		long f = atomic_load_explicit(&inv->folded, MO_DATA);

		if (f == 0) {
			range_set(&inv->rest, start, end);
		} else if (start < end) {
			uintptr_t rs = rload(&inv->rest.start), re = rload(&inv->rest.end);

			if (rs >= re)
				range_set(&inv->rest, start, end);
			else
				range_set(&inv->rest, start < rs ? start : rs, end > re ? end : re);
		}
		atomic_store_explicit(&inv->folded, f + 1, MO_DATA);
	}
	atomic_store_explicit(&inv->in_progress, atomic_load_explicit(&inv->in_progress, MO_DATA) + 1,
			      MO_DATA);
	write_end(inv);
}

bool inv_remove(struct mmu_invalidate *inv, uintptr_t start, uintptr_t end)
{
	uint32_t n;
	uint64_t seq;
	long f;

	normalize(&start, &end);
	write_begin(inv);
	n = atomic_load_explicit(&inv->n, MO_DATA);
	f = atomic_load_explicit(&inv->folded, MO_DATA);
	for (uint32_t i = 0; i < n; i++) {
		if (rload(&inv->tracked[i].start) != start || rload(&inv->tracked[i].end) != end)
			continue;
		/* The last entry takes its place: order does not matter. */
		range_set(&inv->tracked[i], rload(&inv->tracked[n - 1].start), rload(&inv->tracked[n - 1].end));
		atomic_store_explicit(&inv->owner[i], atomic_load_explicit(&inv->owner[n - 1], MO_DATA),
				      MO_DATA);
		atomic_store_explicit(&inv->n, n - 1, MO_DATA);
		goto found;
	}
	if (f == 0) {
		write_end(inv);
		return false;
	}
	/* A folded one ended (which one cannot be told: the union stays until
	 * they all have, as KVM's union stays until its count drops). */
	atomic_store_explicit(&inv->folded, f - 1, MO_DATA);
	if (f == 1)
		range_set(&inv->rest, 0, 0);
found:
	/*
	 * In the same write section as the removal, so no reader sees the
	 * range gone without the sequence moved (KVM moves the sequence
	 * before the count drops): a fault that sampled seq before this end
	 * either still sees the range open or sees it in the history.
	 */
	seq = atomic_load_explicit(&inv->seq, MO_DATA) + 1;
	range_set(&inv->hist[seq % INV_HISTORY], start, end);
	atomic_store_explicit(&inv->seq, seq, MO_DATA);
	atomic_store_explicit(&inv->in_progress, atomic_load_explicit(&inv->in_progress, MO_DATA) - 1,
			      MO_DATA);
	write_end(inv);
	return true;
}

void inv_bump_all(struct mmu_invalidate *inv)
{
	uint64_t seq;

	write_begin(inv);
	seq = atomic_load_explicit(&inv->seq, MO_DATA) + 1;
	range_set(&inv->hist[seq % INV_HISTORY], 0, UINTPTR_MAX);
	atomic_store_explicit(&inv->seq, seq, MO_DATA);
	write_end(inv);
}

/* An open range overlapping [start, end), and the thread that began it
 * (NULL for a folded one); the caller is inside a read section. */
static bool open_overlap(struct mmu_invalidate *inv, uintptr_t start, uintptr_t end, const void *self, bool *by_self)
{
	uint32_t n = atomic_load_explicit(&inv->n, MO_DATA);
	bool hit = false;

	*by_self = false;
	if (n > INV_TRACKED)	/* torn: the read section is retried */
		n = INV_TRACKED;
	for (uint32_t i = 0; i < n; i++) {
		if (!range_overlaps(&inv->tracked[i], start, end))
			continue;
		hit = true;
		if (self && atomic_load_explicit(&inv->owner[i], MO_DATA) == self)
			*by_self = true;
	}
	if (atomic_load_explicit(&inv->folded, MO_DATA) && range_overlaps(&inv->rest, start, end))
		hit = true;
	return hit;
}

bool inv_retry(struct mmu_invalidate *inv, uint64_t mmu_seq, uintptr_t hva, uintptr_t len)
{
	uintptr_t end = hva + len;
	bool retry, self;
	uint32_t c;

	do {
		uint64_t seq;

		c = read_begin(inv);
		retry = atomic_load_explicit(&inv->in_progress, MO_DATA) &&
			open_overlap(inv, hva, end, NULL, &self);
		seq = atomic_load_explicit(&inv->seq, MO_DATA);
		if (!retry && seq != mmu_seq) {
			/* Ended since the sample: those that overlap made what the
			 * fault-in saw stale.  Too many to tell: assume one did. */
			if (seq - mmu_seq >= INV_HISTORY) {
				retry = true;
			} else {
				for (uint64_t k = mmu_seq; k != seq && !retry;) {
					k++;
					retry = range_overlaps(&inv->hist[k % INV_HISTORY], hva, end);
				}
			}
		}
	} while (read_retry(inv, c));
	return retry;
}

enum inv_wait inv_blocked(struct mmu_invalidate *inv, uintptr_t hva, uintptr_t len, const void *self)
{
	bool hit, by_self;
	uint32_t c;

	do {
		c = read_begin(inv);
		hit = atomic_load_explicit(&inv->in_progress, MO_DATA) &&
		      open_overlap(inv, hva, hva + len, self, &by_self);
	} while (read_retry(inv, c));
	if (!hit)
		return INV_WAIT_NONE;
	return by_self ? INV_WAIT_SELF : INV_WAIT_OTHER;
}
