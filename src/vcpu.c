/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "vcpu.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hw.h"
#include "mmu.h"
#include "tdp/tdp_mmu.h"

extern bool vmmu_membarrier_ok;

/* Pages translated before any byte moves: accesses up to this size are
 * all-or-nothing; longer ones are done in windows of this size. */
#define ACCESS_WINDOW_PAGES 32
/*
 * Livelock guards.  A fault the MMU reports as fixed (or spurious) must let
 * the access through after a few more exits at most (a racing zap can undo a
 * fix), so many in a row is a bug.  RET_PF_RETRY is a legitimate wait (a
 * memslot being deleted, an invalidation in flight), bounded only in time.
 */
#define ACCESS_MAX_FIXED_LOOPS 10000
#define ACCESS_MAX_RETRY_SECONDS 60

VMMU_EXPORT int vmmu_vcpu_create(vmmu_vm *vm, unsigned id, vmmu_vcpu **out)
{
	struct vmmu_vcpu *v;
	unsigned int n;

	if (!vm || !out || id >= vm->cfg.max_vcpus)
		return VMMU_EINVAL;
	pthread_mutex_lock(&vm->vcpus_lock);
	n = atomic_load(&vm->nr_vcpus);
	for (unsigned int i = 0; i < n; i++) {
		if (vm->vcpus[i]->id == id) {
			pthread_mutex_unlock(&vm->vcpus_lock);
			return VMMU_EEXIST;
		}
	}
	v = aligned_alloc(64, (sizeof(*v) + 63) & ~(size_t)63);
	if (!v) {
		pthread_mutex_unlock(&vm->vcpus_lock);
		return VMMU_ENOMEM;
	}
	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->id = id;
	/* Generation 0 would make the zeroed TLB entry for gfn 0 look valid. */
	v->tlb.gen = 1;
	vm->vcpus[n] = v;
	/* Published last: requesters iterate only over complete vCPUs. */
	atomic_store_explicit(&vm->nr_vcpus, n + 1, memory_order_release);
	pthread_mutex_unlock(&vm->vcpus_lock);
	*out = v;
	return 0;
}

void vcpu_free(struct vmmu_vcpu *v)
{
	mmu_unload(v);
	pt_cache_drain(&v->pt_cache);
	free(v);
}

/*
 * Guest mode brackets the part of an access that uses translations: the walk
 * and the copy.  Remote requesters wait for a guest-mode stretch to end, so a
 * flush that returns guarantees no stretch that began before it is running.
 *
 * The vCPU's half of the Dekker pattern: store mode, then load requests.  With
 * membarrier the requester supplies the full fence for both sides (as
 * liburcu-memb does for readers), so the vCPU needs only a compiler barrier.
 */
static inline void vcpu_enter_guest_mode(struct vmmu_vcpu *v)
{
	uint64_t m = atomic_load_explicit(&v->mode, memory_order_relaxed);

#ifdef VMMU_TSAN
	/* TSan models no fences; seq_cst store + seq_cst load (below) give the
	 * same Dekker guarantee in the C11 model. */
	atomic_store_explicit(&v->mode, m + 1, memory_order_seq_cst);
#else
	atomic_store_explicit(&v->mode, m + 1, memory_order_relaxed);
	if (vmmu_membarrier_ok)
		atomic_signal_fence(memory_order_seq_cst);
	else
		atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline uint32_t vcpu_pending_requests(struct vmmu_vcpu *v)
{
#ifdef VMMU_TSAN
	return atomic_load_explicit(&v->requests, memory_order_seq_cst);
#else
	return atomic_load_explicit(&v->requests, memory_order_relaxed);
#endif
}

static inline void vcpu_exit_guest_mode(struct vmmu_vcpu *v)
{
	uint64_t m = atomic_load_explicit(&v->mode, memory_order_relaxed);

	/* Release: the guest's memory accesses complete before a requester
	 * that sees the exit goes on (to free or reuse what they used). */
	atomic_store_explicit(&v->mode, m + 1, memory_order_release);
}

static int vcpu_service_requests(struct vmmu_vcpu *v)
{
	uint32_t req = atomic_exchange_explicit(&v->requests, 0, memory_order_acquire);
	int r = 0;

	if (req & VCPU_REQ_MMU_RELOAD)
		r = mmu_load(v);
	if (req & VCPU_REQ_TLB_FLUSH) {
		hw_tlb_flush(v);
		STAT_INC(v->stat.tlb_flushes);
	}
	return r;
}

__hot static int vcpu_enter_guest(struct vmmu_vcpu *v)
{
	for (;;) {
		if (unlikely(!v->root)) {
			int r;

			vmmu_rcu_thread_online();
			r = mmu_load(v);

			if (r)
				return r;
		}
		vcpu_enter_guest_mode(v);
		if (likely(!vcpu_pending_requests(v)))
			return 0;
		/* Requests are serviced outside guest mode: a reload may take
		 * mmu_lock, whose writer may be waiting for this vCPU to exit. */
		vcpu_exit_guest_mode(v);
		vmmu_rcu_thread_online();
		if (vcpu_service_requests(v))
			return VMMU_ENOMEM;
	}
}

static inline __attribute__((always_inline)) void copy_fragment(void *hva, void *buf, size_t n, bool write)
{
	void *dst = write ? hva : buf;
	const void *src = write ? buf : hva;

	switch (n) {
	case 1: memcpy(dst, src, 1); break;
	case 2: memcpy(dst, src, 2); break;
	case 4: memcpy(dst, src, 4); break;
	case 8: memcpy(dst, src, 8); break;
	default: memcpy(dst, src, n); break;
	}
}

static __cold int internal_error_exit(struct vmmu_exit *exit, int error)
{
	exit->reason = VMMU_EXIT_INTERNAL_ERROR;
	exit->u.internal.error = error;
	return VMMU_EXIT;
}

/*
 * One exit from the hardware into the MMU.  Returns 0 to retry the access,
 * or VMMU_EXIT with *exit filled for the embedder.
 */
__hot static int vcpu_handle_exit(struct vmmu_vcpu *v, const struct hw_exit *he, size_t offset, size_t n,
			    bool write, struct vmmu_exit *exit, int *ret_pf)
{
	struct page_fault fault;
	int r;

	STAT_INC(v->stat.exits);
	/*
	 * The fault handler is a software walker: unlike the hardware walk it
	 * runs outside guest mode, so RCU is what keeps tables it reads alive.
	 */
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	r = mmu_page_fault(v, he->gpa, hw_exit_to_error_code(v->vm, he), &fault);
	vmmu_rcu_read_unlock();
	*ret_pf = r;
	if (vm_is_bugged(v->vm))
		return internal_error_exit(exit, VMMU_EIO);
	switch (r) {
	case RET_PF_EMULATE:
		exit->reason = VMMU_EXIT_MMIO;
		exit->u.mmio.gpa = he->gpa;
		exit->u.mmio.len = (uint32_t)n;
		exit->u.mmio.offset = (uint32_t)offset;
		exit->u.mmio.is_write = write;
		exit->u.mmio.readonly_slot = fault.readonly_write;
		return VMMU_EXIT;
	case RET_PF_FAULT:
		exit->reason = VMMU_EXIT_MEMORY_FAULT;
		exit->u.memory_fault.gpa = he->gpa & ~0xfffULL;
		exit->u.memory_fault.size = 4096;
		exit->u.memory_fault.error = fault.host_error;
		return VMMU_EXIT;
	default:
		return 0;
	}
}

__hot static int access_window(struct vmmu_vcpu *v, uint64_t gpa, uint8_t *buf, size_t len, unsigned int acc,
			 size_t base_offset, struct vmmu_exit *exit)
{
	bool write = acc & ACC_WRITE;
	uintptr_t hvas[ACCESS_WINDOW_PAGES];
	unsigned int fixed_loops = 0, retries = 0;
	struct timespec retry_start = { 0, 0 };
	struct hw_exit he;
	size_t off, n;
	unsigned int i;
	int r;

again:
	r = vcpu_enter_guest(v);
	if (unlikely(r))
		return internal_error_exit(exit, r);
	for (off = 0, i = 0; off < len; off += n, i++) {
		n = 4096 - ((gpa + off) & 0xfff);
		if (n > len - off)
			n = len - off;
		if (unlikely(!hw_translate(v, gpa + off, acc, &hvas[i], &he))) {
			int ret_pf = RET_PF_RETRY;

			vcpu_exit_guest_mode(v);
			r = vcpu_handle_exit(v, &he, base_offset + off, n, write, exit, &ret_pf);
			if (r)
				return r;
			if (ret_pf != RET_PF_RETRY) {
				if (unlikely(++fixed_loops > ACCESS_MAX_FIXED_LOOPS)) {
					vm_bug(v->vm, __FILE__, __LINE__,
					       "fault at gpa %#llx fixed %u times but the access never completes",
					       (unsigned long long)(gpa + off), fixed_loops);
					return internal_error_exit(exit, VMMU_EIO);
				}
			} else if (unlikely(++retries % 64 == 0)) {
				/* A long wait: let the thread we wait for run. */
				struct timespec t;

				sched_yield();
				clock_gettime(CLOCK_MONOTONIC, &t);
				if (retries == 64) {
					retry_start = t;
				} else if (t.tv_sec - retry_start.tv_sec > ACCESS_MAX_RETRY_SECONDS) {
					vm_bug(v->vm, __FILE__, __LINE__, "fault at gpa %#llx retried for %d s",
					       (unsigned long long)(gpa + off), ACCESS_MAX_RETRY_SECONDS);
					return internal_error_exit(exit, VMMU_EIO);
				}
			}
			goto again;
		}
	}
	for (off = 0, i = 0; off < len; off += n, i++) {
		n = 4096 - ((gpa + off) & 0xfff);
		if (n > len - off)
			n = len - off;
		copy_fragment((void *)hvas[i], buf + off, n, write);
	}
	vcpu_exit_guest_mode(v);
	return 0;
}

__hot VMMU_EXPORT int vmmu_vcpu_access(vmmu_vcpu *v, uint64_t gva, void *buf, size_t len, unsigned access,
				 struct vmmu_exit *exit)
{
	unsigned int type = access & VMMU_ACCESS_TYPE_MASK;
	uint64_t limit;
	unsigned int acc;
	size_t done = 0;
	int r = 0;

	if (!v || !buf || !exit || len == 0)
		return VMMU_EINVAL;
	if (type > VMMU_ACCESS_FETCH || (access & ~(VMMU_ACCESS_TYPE_MASK | VMMU_ACCESS_PHYS)))
		return VMMU_EINVAL;
	/* Paging is off: linear addresses are 32 bits wide. */
	limit = (access & VMMU_ACCESS_PHYS) ? 1ULL << v->vm->cfg.maxphyaddr : 1ULL << 32;
	if (gva >= limit || len > limit - gva)
		return VMMU_ERANGE;
	if (unlikely(vm_is_bugged(v->vm)))
		return internal_error_exit(exit, VMMU_EIO);

	acc = type == VMMU_ACCESS_WRITE ? ACC_WRITE : type == VMMU_ACCESS_FETCH ? ACC_EXEC : 0;
	STAT_INC(v->stat.accesses);

	/* The common case: one page, translation cached or one walk away. */
	if (likely((gva & 0xfff) + len <= 4096) && likely(v->root)) {
		struct hw_exit he;
		uintptr_t hva;

		vcpu_enter_guest_mode(v);
		if (likely(!vcpu_pending_requests(v)) && likely(hw_translate(v, gva, acc, &hva, &he))) {
			copy_fragment((void *)hva, buf, len, acc & ACC_WRITE);
			vcpu_exit_guest_mode(v);
			return 0;
		}
		vcpu_exit_guest_mode(v);
	}
	/*
	 * No RCU read section here: like a real CPU, the hardware walk and the
	 * copy run in guest mode, and every path that frees a page table or
	 * unmaps guest memory first does a remote TLB flush, which waits for
	 * guest-mode stretches to end (docs/mmu.md, "Lifetimes").
	 */
	while (done < len) {
		size_t chunk = (size_t)ACCESS_WINDOW_PAGES * 4096 - ((gva + done) & 0xfff);

		if (chunk > len - done)
			chunk = len - done;
		r = access_window(v, gva + done, (uint8_t *)buf + done, chunk, acc, done, exit);
		if (r)
			break;
		done += chunk;
	}
	return r;
}

VMMU_EXPORT void vmmu_vcpu_get_stats(vmmu_vcpu *v, struct vmmu_vcpu_stats *out)
{
	struct vcpu_stats *s = &v->stat;

	out->accesses = STAT_READ(s->accesses);
	out->tlb_hits = STAT_READ(s->tlb_hits);
	out->tlb_misses = STAT_READ(s->tlb_misses);
	out->exits = STAT_READ(s->exits);
	out->pf_taken = STAT_READ(s->pf_taken);
	out->pf_fixed = STAT_READ(s->pf_fixed);
	out->pf_spurious = STAT_READ(s->pf_spurious);
	out->pf_retry = STAT_READ(s->pf_retry);
	out->pf_emulate = STAT_READ(s->pf_emulate);
	out->pf_mmio_spte = STAT_READ(s->pf_mmio_spte);
	out->tlb_flushes = STAT_READ(s->tlb_flushes);
	out->mmu_reloads = STAT_READ(s->mmu_reloads);
	out->host_faultins = STAT_READ(s->host_faultins);
}
