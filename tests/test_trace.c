/* SPDX-License-Identifier: MIT */
/*
 * Trace events (vmmu_set_trace): every kind the header documents adds up to
 * the statistic it names, over every MMU variant, with the fields it says.
 *
 *  - trace_counts: two vCPU threads fault in their halves of a slot, then
 *    dirty logging makes the rewrites fast faults, then host-side zaps (a
 *    gfn range, an MMU-notifier invalidation, zap-all, a slot deletion):
 *    PAGE_FAULT = pf_taken (and its results pf_fixed / pf_spurious /
 *    pf_retry), FAST_PAGE_FAULT = pf_fast_*, REMOTE_TLB_FLUSH =
 *    remote_tlb_flushes, ROOT_LOAD = mmu_reloads, SHADOW_PAGE_ZAP =
 *    shadow_pages_zapped, and ZAP_RANGE's SPTEs at most zapped_sptes.
 *    The vCPU threads' events carry their vCPU, the main thread's none.
 *  - trace_off: once turned off, nothing more is called.
 *
 * The recorder takes a mutex: the test checks the library's side, the
 * tool's lock-free buffers are checked by tests/trace_test.sh.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "harness.h"

#define PAGE 4096ULL
#define SLOT_PAGES 1024ULL
#define NR_VCPUS 2u

struct rec {
	pthread_mutex_t lock;
	uint64_t by_kind[16];
	uint64_t pf_result[8];
	uint64_t fast_fixed, fast_spurious, zap_sptes, zap_pages;
	uint64_t bad_vcpu, no_ts, bad_dur;
};

static void rec_fn(void *ctx, const struct vmmu_trace_event *ev)
{
	struct rec *r = ctx;

	pthread_mutex_lock(&r->lock);
	r->by_kind[ev->kind < 16 ? ev->kind : 0]++;
	if (!ev->ts_ns)
		r->no_ts++;
	switch (ev->kind) {
	case VMMU_TRACE_PAGE_FAULT:
		r->pf_result[ev->result < 8 ? ev->result : 0]++;
		if (ev->vcpu_id >= NR_VCPUS)
			r->bad_vcpu++;
		/* a fault takes some time, and less than a minute */
		if (ev->dur_ns > 60000000000ULL)
			r->bad_dur++;
		break;
	case VMMU_TRACE_FAST_PAGE_FAULT:
		if (ev->fixed)
			r->fast_fixed++;
		else
			r->fast_spurious++;
		break;
	case VMMU_TRACE_ZAP_RANGE:
		r->zap_sptes += ev->count;
		r->zap_pages += ev->npages;
		/* host-side calls of this test come from the main thread */
		if (ev->vcpu_id != VMMU_TRACE_NO_VCPU)
			r->bad_vcpu++;
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&r->lock);
}

struct tvm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[NR_VCPUS];
	uint8_t *hva;
};

static void tvm_create(struct tvm *t, const struct mmu_variant *var)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = SLOT_PAGES * PAGE };

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &t->vm));
	ASSERT_OK(vmmu_set_memslot(t->vm, &s));
	ASSERT_OK(vmmu_memslot_hva(t->vm, 0, (void **)&t->hva));
	for (unsigned int i = 0; i < NR_VCPUS; i++)
		ASSERT_OK(vmmu_vcpu_create(t->vm, i, &t->vcpu[i]));
}

struct writer {
	vmmu_vcpu *vcpu;
	uint64_t first, n, val;
	int rc;
};

static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	struct vmmu_exit exit;

	for (uint64_t p = w->first; p < w->first + w->n && !w->rc; p++) {
		uint64_t v = w->val ^ p;

		w->rc = vmmu_vcpu_access(w->vcpu, p * PAGE, &v, sizeof(v), VMMU_ACCESS_WRITE, &exit);
	}
	return NULL;
}

/* Each vCPU writes its half of the slot from its own thread. */
static void write_all(struct tvm *t, uint64_t val)
{
	struct writer w[NR_VCPUS];
	pthread_t th[NR_VCPUS];

	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		w[i] = (struct writer){ t->vcpu[i], i * SLOT_PAGES / NR_VCPUS, SLOT_PAGES / NR_VCPUS, val, 0 };
		ASSERT_EQ(pthread_create(&th[i], NULL, writer_fn, &w[i]), 0);
	}
	for (unsigned int i = 0; i < NR_VCPUS; i++)
		pthread_join(th[i], NULL);
	for (unsigned int i = 0; i < NR_VCPUS; i++)
		ASSERT_OK(w[i].rc);
}

static void sum_stats(struct tvm *t, struct vmmu_vcpu_stats *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		struct vmmu_vcpu_stats s;

		vmmu_vcpu_get_stats(t->vcpu[i], &s);
		sum->pf_taken += s.pf_taken;
		sum->pf_fixed += s.pf_fixed;
		sum->pf_spurious += s.pf_spurious;
		sum->pf_retry += s.pf_retry;
		sum->pf_fast_fixed += s.pf_fast_fixed;
		sum->pf_fast_spurious += s.pf_fast_spurious;
		sum->mmu_reloads += s.mmu_reloads;
		sum->root_fast_switches += s.root_fast_switches;
		sum->root_slow_switches += s.root_slow_switches;
	}
}

TEST(trace_counts)
{
	for_each_mmu_variant(var) {
		struct rec *r = calloc(1, sizeof(*r));
		struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = SLOT_PAGES * PAGE };
		struct vmmu_vcpu_stats vs;
		struct vmmu_vm_stats ms;
		uint64_t bm[SLOT_PAGES / 64];
		struct tvm t;

		ASSERT_TRUE(r != NULL);
		pthread_mutex_init(&r->lock, NULL);
		memset(&t, 0, sizeof(t));
		/* traced from the start, as the counters are */
		tvm_create(&t, var);
		vmmu_set_trace(t.vm, rec_fn, r);
		/* tvm_create's work before the trace: nothing faults there */
		write_all(&t, 1);

		/* dirty logging: the rewrites are fast page faults (write-protected SPTEs) */
		s.flags = VMMU_MEM_LOG_DIRTY_PAGES;
		s.hva = t.hva;
		ASSERT_OK(vmmu_set_memslot(t.vm, &s));
		ASSERT_OK(vmmu_get_dirty_log(t.vm, 0, bm));
		write_all(&t, 2);
		ASSERT_OK(vmmu_get_dirty_log(t.vm, 0, bm));

		/* host-side zaps, each kind of caller */
		ASSERT_OK(vmmu_zap_gfn_range(t.vm, 0, SLOT_PAGES / 4));
		vmmu_invalidate_range_begin(t.vm, (uintptr_t)t.hva + SLOT_PAGES / 2 * PAGE,
					    (uintptr_t)t.hva + SLOT_PAGES * PAGE);
		vmmu_invalidate_range_end(t.vm, (uintptr_t)t.hva + SLOT_PAGES / 2 * PAGE,
					  (uintptr_t)t.hva + SLOT_PAGES * PAGE);
		write_all(&t, 3);
		vmmu_zap_all(t.vm);
		write_all(&t, 4);

		sum_stats(&t, &vs);
		vmmu_vm_get_stats(t.vm, &ms);
		vmmu_set_trace(t.vm, NULL, NULL);

		ASSERT_EQ(r->by_kind[0], 0);	/* no kind the header does not name */
		ASSERT_EQ(r->no_ts, 0);
		ASSERT_EQ(r->bad_vcpu, 0);
		ASSERT_EQ(r->bad_dur, 0);
		ASSERT_EQ(r->by_kind[VMMU_TRACE_PAGE_FAULT], vs.pf_taken);
		ASSERT_EQ(r->pf_result[VMMU_TRACE_PF_FIXED], vs.pf_fixed);
		ASSERT_EQ(r->pf_result[VMMU_TRACE_PF_SPURIOUS], vs.pf_spurious);
		ASSERT_EQ(r->pf_result[VMMU_TRACE_PF_RETRY], vs.pf_retry);
		ASSERT_EQ(r->fast_fixed, vs.pf_fast_fixed);
		ASSERT_EQ(r->fast_spurious, vs.pf_fast_spurious);
		ASSERT_EQ(r->by_kind[VMMU_TRACE_FAST_PAGE_FAULT], vs.pf_fast_fixed + vs.pf_fast_spurious);
		ASSERT_EQ(r->by_kind[VMMU_TRACE_REMOTE_TLB_FLUSH], ms.remote_tlb_flushes);
		ASSERT_EQ(r->by_kind[VMMU_TRACE_ROOT_LOAD], vs.mmu_reloads);
		ASSERT_EQ(r->by_kind[VMMU_TRACE_ROOT_SWITCH], vs.root_fast_switches + vs.root_slow_switches);
		ASSERT_EQ(r->by_kind[VMMU_TRACE_SHADOW_PAGE_ZAP], ms.shadow_pages_zapped);
		ASSERT_GE(r->by_kind[VMMU_TRACE_ZAP_ALL], 1);	/* a memslot generation wrap adds one */
		/* the range zap and the invalidation, at least */
		ASSERT_GE(r->by_kind[VMMU_TRACE_ZAP_RANGE], 2);
		ASSERT_GE(r->zap_pages, SLOT_PAGES / 4 + SLOT_PAGES / 2);
		ASSERT_GT(r->zap_sptes, 0);
		ASSERT_LE(r->zap_sptes, ms.zapped_sptes);
		ASSERT_GT(vs.pf_fixed, 0);
		if (var->mmu == VMMU_MMU_TDP)
			ASSERT_GT(vs.pf_fast_fixed, 0);

		vmmu_vm_destroy(t.vm);
		pthread_mutex_destroy(&r->lock);
		free(r);
	}
}

TEST(trace_off)
{
	for_each_mmu_variant(var) {
		struct rec *r = calloc(1, sizeof(*r));
		struct tvm t;

		ASSERT_TRUE(r != NULL);
		pthread_mutex_init(&r->lock, NULL);
		tvm_create(&t, var);
		vmmu_set_trace(t.vm, rec_fn, r);
		write_all(&t, 1);
		ASSERT_GT(r->by_kind[VMMU_TRACE_PAGE_FAULT], 0);
		vmmu_set_trace(t.vm, NULL, NULL);
		memset(r->by_kind, 0, sizeof(r->by_kind));
		vmmu_zap_all(t.vm);
		write_all(&t, 2);
		for (unsigned int k = 0; k < 16; k++)
			ASSERT_EQ(r->by_kind[k], 0);
		vmmu_vm_destroy(t.vm);
		pthread_mutex_destroy(&r->lock);
		free(r);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
