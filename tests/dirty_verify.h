/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_DIRTY_VERIFY_H
#define VMMU_TEST_DIRTY_VERIFY_H
/*
 * The dirty-log verifier, shared by test_dirty.c (paging off, zaps, live
 * enable) and test_dirty_paging.c (guest paging, dirty rings): DV_VCPUS
 * writer threads store growing values into their own word of random pages
 * of a logged slot while the main thread harvests in rounds and proves, from
 * what memory holds, that no write went unreported.
 *
 * The tests own the VM and how a write and a harvest are done (a dv_write_fn
 * and a dv_harvest_fn).  This module owns everything the proof rests on, so
 * the two tests cannot drift apart in it: which pages a writer may write,
 * the values it stores (dv_value), the progress it publishes around each
 * write and with which memory order (dv_writer), and the round accounting
 * (dv_round, whose comment has the argument).
 */
#include <pthread.h>

#include "harness.h"

#define DV_VCPUS 2

/*
 * A stored value: (seq << DV_SEQ_SHIFT) | (page << DV_PAGE_SHIFT) | (id + 1).
 * seq counts the writer's writes from 1, so per word the values only grow and
 * a zero word was never written; page is the page index the writer meant to
 * reach (20 bits: slots of up to 4 GiB), so a store through a wrong
 * translation is caught too.
 */
#define DV_SEQ_SHIFT 28
#define DV_PAGE_SHIFT 8
#define DV_PAGE_MASK 0xfffffULL

static inline uint64_t dv_value(uint64_t seq, uint64_t page, unsigned int id)
{
	return seq << DV_SEQ_SHIFT | page << DV_PAGE_SHIFT | (id + 1);
}

static inline bool bm_test(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

static inline uint64_t bm_count(const uint64_t *bm, uint64_t words)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	return n;
}

/*
 * Guest memory as the host sees it.  The vCPUs store aligned 8-byte values
 * with single-copy-atomic stores (src/vcpu.c), so an atomic load here is no
 * data race for TSan and never sees half a value.
 */
static inline uint64_t ld64(const uint8_t *p)
{
	return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_RELAXED);
}

static inline const char *fast_name(uint32_t vm_flags)
{
	if (vm_flags & VMMU_VM_PML)
		return "pml";
	return vm_flags & VMMU_VM_NO_FAST_PF ? "slow-pf" : "fast-pf";
}

struct vmmu_vcpu_stats vcpu_fault_sum(vmmu_vcpu *const *vcpu, unsigned int n);

int dirty_get_clear(vmmu_vm *vm, uint32_t slot, uint64_t npages, bool manual, uint64_t *bm, uint64_t *rng,
		    unsigned int max_words);

void sleep_us(unsigned int us);
/* A number from the environment within [lo, hi], else def (with a note). */
double env_num(const char *name, double def, double lo, double hi);

/* Per-vCPU progress, one cache line each (the main thread polls them). */
struct dv_progress {
	_Atomic uint64_t started;	/* seq of the write under way, or of the last one */
	_Atomic uint64_t done;		/* seq of the last completed write */
	char pad[48];
};

/* A change the main thread saw and no harvest has reported yet. */
struct dv_due {
	uint64_t by[DV_VCPUS];	/* deadline: once every vCPU u has completed write by[u]... */
	uint64_t round;		/* ...a harvest after this round must have reported it */
};

/*
 * One harvest into bm: what the log reports since the previous one, with
 * every reported page write-protected (and TLBs flushed) before it returns.
 * rng may drive how it is done (chunked clears).  Runs with the writers
 * going: no ASSERT, a VMMU_E* code on failure.
 */
typedef int dv_harvest_fn(void *ctx, uint64_t *bm, uint64_t *rng);

/*
 * Writer id's store of val (8 bytes) to word id of page, the way the test
 * writes (a vCPU access through whatever translation it tests).  Returns
 * false when the write did not complete: a failure recorded with fb_fail(),
 * or the verifier stopped while the write waited.  Runs in the writer
 * thread: no ASSERT.
 */
typedef bool dv_write_fn(void *ctx, unsigned int id, uint64_t page, uint64_t val);

struct dv_writer {
	struct dv_verifier *v;
	unsigned int id;
	pthread_t thread;
};

struct dv_verifier {
	/* Set by dv_init(), then read-only. */
	const uint8_t *hva;
	uint64_t gpa, npages, words;
	uint64_t shared;	/* pages [0, shared) are written by every vCPU, the rest split between them */
	dv_harvest_fn *harvest;
	void *ctx;
	const char *harvest_why;	/* optional: what a failed harvest found wrong */

	/* Shared with the writer threads. */
	dv_write_fn *write;
	void *write_ctx;
	struct dv_writer writer[DV_VCPUS];
	struct dv_progress prog[DV_VCPUS];
	struct failbox fb;
	uint64_t writes[DV_VCPUS];	/* each writer's last seq, stored as it stops */

	/* The main thread's book. */
	uint64_t *bm;		/* this round's report */
	uint64_t *last;		/* [page * DV_VCPUS + v]: seq read by the previous scan */
	struct dv_due *due;	/* per page; round == 0: nothing due */
	uint64_t rounds, reported, changed, spurious, strict, deferred, late;
	uint64_t reported_logged;	/* pages reported after the baseline round */
	uint64_t rng;
};

void dv_init(struct dv_verifier *v, const uint8_t *hva, uint64_t gpa, uint64_t npages, uint64_t shared,
	     dv_harvest_fn *harvest, void *ctx);
void dv_fini(struct dv_verifier *v);

static inline bool dv_stopped(struct dv_verifier *v)
{
	return fb_stopped(&v->fb);
}

/* The writers' side: DV_VCPUS threads, each running dv_writer(). */
void dv_start_writers(struct dv_verifier *v, dv_write_fn *write, void *ctx);
void dv_stop_writers(struct dv_verifier *v);

/* The main thread's side. */
bool dv_round(struct dv_verifier *v);
void dv_baseline(struct dv_verifier *v);
void dv_finish(struct dv_verifier *v);
void dv_pause(struct dv_verifier *v);
void dv_summary(const struct dv_verifier *v, char *buf, size_t size);

#endif /* VMMU_TEST_DIRTY_VERIFY_H */
