/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "vm/vcpu.h"
#include "vm/vcpu_exit.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/hw.h"
#include "cpu/secure_ept.h"
#include "mmu/mmu.h"
#include "mmu/nested.h"
#include "test_hook.h"
#include "mmu/tdp/tdp_mmu.h"

/* Pages translated before any byte moves: accesses up to this size are
 * all-or-nothing; longer ones are done in windows of this size.  A window is
 * one guest-mode stretch, which remote flushes wait out, and the dirty ring
 * keeps room for one window (DIRTY_RING_SLACK): both want it short. */
#define ACCESS_WINDOW_PAGES VMMU_ACCESS_ATOMIC_PAGES
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
	v->fence_budget = vm->req_fence_budget;
	if (vm->cfg.dirty_ring_size) {
		v->ring.entries = calloc(vm->cfg.dirty_ring_size, sizeof(*v->ring.entries));
		if (!v->ring.entries) {
			free(v);
			pthread_mutex_unlock(&vm->vcpus_lock);
			return VMMU_ENOMEM;
		}
		v->ring.size = vm->cfg.dirty_ring_size;
	}
	if (vm_pml(vm))
		v->pml.size = v->pml.l1_size = vm->cfg.pml_entries ? vm->cfg.pml_entries : PML_MAX_ENTRIES;
	/* A private VM's contexts have the mirror as their second root, and
	 * the hardware the module's table for private gpas. */
	if (vm->mirror_root) {
		v->mirror = vm->mirror_root;
		v->hw_priv = sept_hw_root(vm->sept);
	}
	/* Generation 0 marks never-filled and invalidated entries. */
	for (int i = 0; i < 2; i++) {
		v->tlbs[i].gen = 1;
		v->tlbs[i].counter = 1;
		v->tlbs[i].full_gen = 1;
	}
	v->tlb = &v->tlbs[0];
	/* No first touch in progress: the first fault maps its page alone. */
	v->fa_next_gfn = ~0ULL;
	/* The TLB applies the hardware's rules: under shadow paging those of
	 * the host CPU (CR0.WP on), which the shadow's roles account for. */
	v->tlb_cpu = vm_shadow_paging(vm) ? &v->hw_wcpu : &v->wcpu;
	/* Shadow paging runs the guest on root_mmu; a TDP VM on its TDP root,
	 * and on guest_mmu while it runs a nested guest. */
	v->sh.mmu = vm_shadow_paging(vm) ? &v->sh.root_mmu : NULL;
	v->sh.guest_mmu.nested = true;
	v->nested.one_mmu = vm->cfg.flags & VMMU_VM_NESTED_ONE_MMU;
	vcpu_init_state(v);
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
	shadow_vcpu_free(v);
	pt_cache_drain(&v->pt_cache);
	free(v->ring.entries);
	free(v);
}

/* Too few free ring entries to run a window (KVM's soft-full limit). */
static inline bool ring_soft_full(struct vmmu_vcpu *v)
{
	return v->ring.dirty_index - atomic_load_explicit(&v->ring.reset_index, memory_order_acquire) >=
	       v->ring.size - DIRTY_RING_SLACK;
}

/*
 * Guest mode brackets the part of an access that uses translations: the walk
 * and the copy.  Remote requesters wait for a guest-mode stretch to end, so a
 * flush that returns guarantees no stretch that began before it is running.
 *
 * The vCPU's half of the Dekker pair with vm_make_all_vcpus_request(): store
 * mode, then load requests, with a full fence between them while remote
 * requests are frequent (vm->req_fence; vm.c says how it adapts) and a
 * compiler barrier otherwise, when requesters fence with membarrier().
 * req_fence is loaded after the store of mode: vm.c's argument needs an
 * entry that saw it OFF to have stored its mode before the load.
 */
#ifndef VMMU_TSAN
static void vcpu_entry_fence(struct vmmu_vcpu *v)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (unlikely(--v->fence_budget == 0)) {
		uint64_t reqs = atomic_load_explicit(&v->vm->nr_requests, memory_order_relaxed);

		v->fence_budget = v->vm->req_fence_budget;
		/* Not a request in all these entries: fence-free entries and
		 * membarrier() per request are the cheaper pair again. */
		if (reqs == v->fence_reqs &&
		    atomic_load_explicit(&v->vm->req_fence, memory_order_relaxed) == REQ_FENCE_ON)
			v->fence_disarm = true;
		v->fence_reqs = reqs;
	}
}
#endif

static inline void vcpu_enter_guest_mode(struct vmmu_vcpu *v)
{
	uint64_t m = atomic_load_explicit(&v->mode, memory_order_relaxed);

#ifdef VMMU_TSAN
	/* TSan models no fences; seq_cst store + seq_cst load (below) give the
	 * same Dekker guarantee in the C11 model. */
	atomic_store_explicit(&v->mode, m + 1, memory_order_seq_cst);
#else
	atomic_store_explicit(&v->mode, m + 1, memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst);
	if (unlikely(atomic_load_explicit(&v->vm->req_fence, memory_order_relaxed) != REQ_FENCE_OFF))
		vcpu_entry_fence(v);
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

	/*
	 * PML: every gpa logged in this stretch reaches the bitmap or ring
	 * before the stretch is seen to end (the release below).  A vCPU
	 * outside guest mode thus never holds a logged gpa, and a harvest
	 * that waits out the stretches in progress has all of them (KVM's
	 * kick; docs/mmu.md 9.5).
	 */
	if (unlikely(v->pml.n))
		vcpu_pml_drain(v);

	/* Release: the guest's memory accesses complete before a requester
	 * that sees the exit goes on (to free or reuse what they used). */
	atomic_store_explicit(&v->mode, m + 1, memory_order_release);
	/* Outside guest mode: the disarm waits for requesters, which wait
	 * only for vCPUs in guest mode. */
	if (unlikely(v->fence_disarm)) {
		v->fence_disarm = false;
		vm_req_fence_disarm(v->vm);
	}
}

static int vcpu_service_requests(struct vmmu_vcpu *v)
{
	uint32_t req = atomic_exchange_explicit(&v->requests, 0, memory_order_acquire);
	int r = 0;

	if (req & VCPU_REQ_MMU_RELOAD)
		r = mmu_load(v);
	if (req & VCPU_REQ_TLB_FLUSH) {
		hw_tlb_flush_all(v);
		STAT_INC(v->stat.tlb_flushes);
	}
	return r;
}

__hot static int vcpu_enter_guest(struct vmmu_vcpu *v)
{
	for (;;) {
		if (unlikely(!v->mmu_ready)) {
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

/*
 * One window of an access: translate every page, then copy.  *done gets the
 * bytes transferred when 0 is returned: all of len, or less when a store had
 * to be emulated by the MMU (shadow paging), which ends the window early.
 */
__hot static int access_window(struct vmmu_vcpu *v, uint64_t addr, uint8_t *buf, size_t len, unsigned int acc,
			       unsigned int walk_access, bool phys, bool linear, bool nowait, size_t base_offset,
			       struct vmmu_exit *exit, size_t *done)
{
	bool write = acc & ACC_WRITE;
	uintptr_t hvas[ACCESS_WINDOW_PAGES];
	unsigned int fixed_loops = 0, retries = 0;
	struct timespec retry_start = { 0, 0 };
	bool waiting = false;
	uint32_t cause;
	struct walk_result wr;
	struct hw_exit he;
	uint64_t t_copy;
	size_t off, n;
	unsigned int i;
	int r;

again:
	r = vcpu_enter_guest(v);
	if (unlikely(r))
		return internal_error_exit(exit, r);
	for (off = 0, i = 0; off < len; off += n, i++) {
		enum xlate x;
		bool pt_access;
		int ret_pf = RET_PF_RETRY;
		uint64_t fault_gpa;

		n = 4096 - ((addr + off) & 0xfff);
		if (n > len - off)
			n = len - off;
		{
			uint64_t t0 = vcpu_clock(v);

			x = cpu_translate(v, addr + off, acc, walk_access, phys, &hvas[i], &he, &wr, &pt_access);
			VCPU_TIME_ADD(v, time_walk_ns, t0);
		}
		if (likely(x == XLATE_OK))
			continue;
		vcpu_exit_guest_mode(v);
		if (x == XLATE_TDP_EXIT && he.kind == HW_EXIT_PML_FULL) {
			/* Leaving guest mode drained the buffer: walk again. */
			STAT_INC(v->stat.pml_full_exits);
			goto again;
		}
		if (x == XLATE_GUEST_FAULT)
			return guest_fault_exit(v, exit, wr.vector, wr.error_code, wr.fault_addr);
		if (x == XLATE_SHADOW_PF) {
			struct shadow_fault sf;

			uint64_t t0 = vcpu_clock(v);

			r = vcpu_handle_shadow_pf(v, addr + off, walk_access, wr.error_code, buf + off, n,
						  base_offset + off, write, off == 0, exit, &sf, &ret_pf);
			VCPU_TIME_ADD(v, time_fault_ns, t0);
			if (r < 0) {
				/* Copy what comes before the store; the caller
				 * comes back with the store first in its window. */
				len = off;
				goto again;
			}
			if (r)
				return r;
			if (sf.ptwrite && ret_pf == RET_PF_EMULATE) {
				*done = n;
				return 0;
			}
			fault_gpa = sf.gpa;
		} else {
			struct exit_site site = { .addr = addr + off, .linear = linear, .pt_access = pt_access,
						  .buf = buf + off, .n = n, .offset = base_offset + off,
						  .write = write, .first = off == 0 };
			bool stored = false;
			uint64_t t0 = vcpu_clock(v);

			r = vcpu_handle_exit(v, &he, &site, exit, &ret_pf, &stored, &fault_gpa);
			VCPU_TIME_ADD(v, time_fault_ns, t0);
			if (r < 0) {
				len = off;
				goto again;
			}
			if (stored) {
				*done = n;
				return 0;
			}
			if (r) {
				/*
				 * A guest page table outside RAM: the walk cannot read
				 * it, and KVM's walker then delivers a not-present #PF
				 * for the linear address rather than an MMIO exit.
				 */
				if (pt_access && exit->reason == VMMU_EXIT_MMIO)
					return guest_fault_exit(v, exit, WALK_VECTOR_PF,
								walk_pf_error_code(&v->wcpu, walk_access, 0),
								addr + off);
				return r;
			}
		}
		if (ret_pf != RET_PF_RETRY) {
			if (unlikely(++fixed_loops > ACCESS_MAX_FIXED_LOOPS)) {
				vm_bug(v->vm, __FILE__, __LINE__,
				       "fault at gpa %#llx fixed %u times but the access never completes",
				       (unsigned long long)fault_gpa, fixed_loops);
				return internal_error_exit(exit, VMMU_EIO);
			}
		} else if ((cause = vcpu_retry_wait(v, fault_gpa)) || unlikely(++retries % 64 == 0)) {
			/* A wait, or a long run of lost races: let the thread we
			 * wait for run rather than spin against it -- unless we
			 * are that thread, or were asked not to wait. */
			struct timespec t;

			if (cause == VMMU_RETRY_SELF || (cause && nowait))
				return retry_exit(exit, fault_gpa, cause);

			sched_yield();
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (!waiting) {
				retry_start = t;
				waiting = true;
			} else if (t.tv_sec - retry_start.tv_sec > ACCESS_MAX_RETRY_SECONDS) {
				vm_bug(v->vm, __FILE__, __LINE__, "fault at gpa %#llx retried for %d s",
				       (unsigned long long)fault_gpa, ACCESS_MAX_RETRY_SECONDS);
				return internal_error_exit(exit, VMMU_EIO);
			}
		}
		goto again;
	}
	t_copy = vcpu_clock(v);
	for (off = 0, i = 0; off < len; off += n, i++) {
		n = 4096 - ((addr + off) & 0xfff);
		if (n > len - off)
			n = len - off;
		copy_fragment((void *)hvas[i], buf + off, n, write);
	}
	VCPU_TIME_ADD(v, time_copy_ns, t_copy);
	vcpu_exit_guest_mode(v);
	*done = len;
	return 0;
}

/* Whether an invalidation touched one of the first n pages since its check. */
static bool pages_changed(struct vmmu_vcpu *v, const uintptr_t *hvas, const uint64_t *seqs, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (inv_retry(&v->vm->inv, seqs[i], hvas[i] & ~(uintptr_t)0xfff, 4096))
			return true;
	return false;
}

/*
 * Shadow paging has no TDP: a guest-physical access (VMMU_ACCESS_PHYS) is
 * the MMU's own, straight to the memslot, with the host checks of a fault
 * and, for stores to shadowed guest tables, the update of the shadow.
 * All-or-nothing like any access: every page is checked before a byte moves.
 */
static int shadow_phys_access(struct vmmu_vcpu *v, uint64_t gpa, uint8_t *buf, size_t len, bool write, bool nowait,
			      struct vmmu_exit *exit, size_t *donep)
{
	uintptr_t hvas[ACCESS_WINDOW_PAGES];
	const struct memslot *slots[ACCESS_WINDOW_PAGES];
	uint64_t seqs[ACCESS_WINDOW_PAGES];
	size_t done = 0;

	vmmu_rcu_thread_online();
	while (done < len) {
		size_t chunk = (size_t)ACCESS_WINDOW_PAGES * 4096 - ((gpa + done) & 0xfff), off, n;
		unsigned int i;

		if (chunk > len - done)
			chunk = len - done;
		vmmu_rcu_read_lock();
		for (off = 0, i = 0; off < chunk; off += n, i++) {
			struct page_fault pf = { .addr = gpa + done + off, .gfn = (gpa + done + off) >> 12,
						 .write = write };
			int r;

			n = 4096 - ((gpa + done + off) & 0xfff);
			if (n > chunk - off)
				n = chunk - off;
			r = mmu_faultin(v, &pf);
			if (r == RET_PF_CONTINUE && pf.is_mmio)
				r = RET_PF_EMULATE;
			if (r == RET_PF_RETRY) {
				/* A slot being deleted or moved: wait for it. */
				vmmu_rcu_read_unlock();
				if (nowait) {
					*donep = done;
					return retry_exit(exit, pf.addr, VMMU_RETRY_MEMSLOT);
				}
				sched_yield();
				goto retry;
			}
			if (r == RET_PF_EMULATE) {
				vmmu_rcu_read_unlock();
				STAT_INC(v->stat.pf_emulate);
				exit->reason = VMMU_EXIT_MMIO;
				exit->u.mmio.gpa = pf.addr;
				exit->u.mmio.len = (uint32_t)n;
				exit->u.mmio.offset = (uint32_t)(done + off);
				exit->u.mmio.is_write = write;
				exit->u.mmio.readonly_slot = pf.readonly_write;
				*donep = done;
				return VMMU_EXIT;
			}
			if (r == RET_PF_FAULT) {
				/* The exit must name the first page unusable now:
				 * an earlier one may have changed since its check. */
				if (pages_changed(v, hvas, seqs, i)) {
					vmmu_rcu_read_unlock();
					goto retry;
				}
				vmmu_rcu_read_unlock();
				exit->reason = VMMU_EXIT_MEMORY_FAULT;
				exit->u.memory_fault.gpa = pf.addr & ~0xfffULL;
				exit->u.memory_fault.size = 4096;
				exit->u.memory_fault.error = pf.host_error;
				exit->u.memory_fault.is_private = 0;
				*donep = done;
				return VMMU_EXIT;
			}
			hvas[i] = pf.hva + (pf.addr & 0xfff);
			slots[i] = pf.slot;
			seqs[i] = pf.mmu_seq;
		}
		/*
		 * No translation is involved, but an invalidated page is off
		 * limits all the same (docs/mmu.md 10.1): the check and the copy
		 * form an install section, which an invalidation's begin waits
		 * out if the check could not see its range.  The check is a
		 * fault's: an invalidation open now, or one that ended since the
		 * page's host checks (a protection change, say, that the copy
		 * would otherwise outrun) sends the window back to them.
		 */
		vcpu_install_begin(v);
		for (off = 0, i = 0; off < chunk; off += n, i++) {
			uint32_t cause = 0;

			n = 4096 - ((gpa + done + off) & 0xfff);
			if (n > chunk - off)
				n = chunk - off;
			if (!inv_retry(&v->vm->inv, seqs[i], hvas[i] & ~(uintptr_t)0xfff, 4096))
				continue;
			switch (inv_blocked(&v->vm->inv, hvas[i] & ~(uintptr_t)0xfff, 4096, vmmu_thread_token())) {
			case INV_WAIT_SELF:
				cause = VMMU_RETRY_SELF;
				break;
			case INV_WAIT_OTHER:
				cause = VMMU_RETRY_INVALIDATION;
				break;
			default:
				break;	/* it ended: check the host again */
			}
			vcpu_install_end(v);
			vmmu_rcu_read_unlock();
			if (cause == VMMU_RETRY_SELF || (cause && nowait)) {
				*donep = done;
				return retry_exit(exit, gpa + done + off, cause);
			}
			if (cause)
				sched_yield();
			goto retry;
		}
		for (off = 0, i = 0; off < chunk; off += n, i++) {
			uint64_t a = gpa + done + off;
			const struct memslot *s = slots[i];

			n = 4096 - (a & 0xfff);
			if (n > chunk - off)
				n = chunk - off;
			if (!write) {
				copy_fragment((void *)hvas[i], buf + done + off, n, false);
				continue;
			}
			if (shadow_gfn_write_tracked(s, a >> 12)) {
				shadow_emulated_store(v, a, hvas[i], buf + done + off, (unsigned int)n);
				continue;
			}
			vmmu_test_hook(VMMU_TEST_HOOK_PHYS_STORE, a >> 12);
			copy_fragment((void *)hvas[i], buf + done + off, n, true);
			shadow_phys_store_done(v, s, a, (unsigned int)n);
		}
		vcpu_install_end(v);
		vmmu_rcu_read_unlock();
		done += chunk;
retry:;
	}
	return 0;
}

/*
 * Everything vmmu_vcpu_access() does, for the accesses its fast path does
 * not finish: bad input, several pages, TLB misses, exits.  counted: the
 * fast path checked the input and counted the access already.
 */
static __attribute__((noinline)) int vcpu_access_full(vmmu_vcpu *v, uint64_t gva, void *buf, size_t len,
						      unsigned access, struct vmmu_exit *exit, bool counted)
{
	unsigned int type = access & VMMU_ACCESS_TYPE_MASK;
	struct vmmu_vcpu *self;
	unsigned int acc, walk_access;
	bool phys;
	size_t done = 0;
	int r = 0;

	if (!v || !buf || !exit || len == 0)
		return VMMU_EINVAL;
	if (type > VMMU_ACCESS_FETCH ||
	    (access & ~(VMMU_ACCESS_TYPE_MASK | VMMU_ACCESS_PHYS | VMMU_ACCESS_IMPLICIT | VMMU_ACCESS_NOWAIT)))
		return VMMU_EINVAL;
	/* Without TDP, paging off is translated by (direct) shadow pages. */
	phys = (access & VMMU_ACCESS_PHYS) || (v->wcpu.mode == WALK_MODE_NONE && !vm_shadow_paging(v->vm));
	if (access & VMMU_ACCESS_PHYS) {
		uint64_t limit = 1ULL << v->vm->cfg.maxphyaddr;

		if (gva >= limit || len > limit - gva)
			return VMMU_ERANGE;
	} else if (walk_va_bits(v->wcpu.mode) == 32) {
		/* Paging off, 32-bit and PAE paging: linear addresses are 32 bits. */
		if (gva >= (1ULL << 32) || len > (1ULL << 32) - gva)
			return VMMU_ERANGE;
	} else if (len > ~gva) {
		return VMMU_ERANGE;
	}
	if (unlikely(vm_is_bugged(v->vm))) {
		exit->pad = 0;
		exit->done = 0;
		return internal_error_exit(exit, VMMU_EIO);
	}

	acc = type == VMMU_ACCESS_WRITE ? ACC_WRITE : type == VMMU_ACCESS_FETCH ? ACC_EXEC : 0;
	walk_access = (type == VMMU_ACCESS_WRITE ? WALK_WRITE : 0) | (type == VMMU_ACCESS_FETCH ? WALK_FETCH : 0) |
		      ((access & VMMU_ACCESS_IMPLICIT) ? WALK_IMPLICIT : 0);
	if (!counted)
		STAT_INC(v->stat.accesses);

	if (unlikely(vm_shadow_paging(v->vm)) && (access & VMMU_ACCESS_PHYS)) {
		exit->reason = VMMU_EXIT_NONE;
		exit->pad = 0;
		self = vcpu_self_enter(v);
		r = shadow_phys_access(v, gva, buf, len, acc & ACC_WRITE, access & VMMU_ACCESS_NOWAIT, exit, &done);
		vcpu_self_exit(self);
		exit->done = done;
		return r;
	}
	exit->reason = VMMU_EXIT_NONE;
	exit->pad = 0;
	self = vcpu_self_enter(v);
	/*
	 * No RCU read section here: like a real CPU, the hardware walk and the
	 * copy run in guest mode, and every path that frees a page table or
	 * unmaps guest memory first does a remote TLB flush, which waits for
	 * guest-mode stretches to end (docs/mmu.md, "Lifetimes").
	 */
	while (done < len) {
		size_t chunk = (size_t)ACCESS_WINDOW_PAGES * 4096 - ((gva + done) & 0xfff);

		/* KVM's soft-full rule: stop before a window could overflow. */
		if (unlikely(v->ring.entries) && ring_soft_full(v)) {
			exit->reason = VMMU_EXIT_DIRTY_RING_FULL;
			exit->u.ring_full.done = done;
			r = VMMU_EXIT;
			break;
		}
		if (chunk > len - done)
			chunk = len - done;
		r = access_window(v, gva + done, (uint8_t *)buf + done, chunk, acc, walk_access, phys,
				  !(access & VMMU_ACCESS_PHYS), access & VMMU_ACCESS_NOWAIT, done, exit, &chunk);
		if (r)
			break;
		done += chunk;
	}
	vcpu_self_exit(self);
	/* Windows run in order and each is all-or-nothing (an emulated
	 * page-table store ends its window where it is): a prefix is done. */
	exit->done = done;
	return r;
}

/*
 * The common case, in a frame of its own (the full path's is large): one
 * page whose translation the TLB holds or, for a physical access, one walk
 * through the paging-structure cache finds.  Input that is not plainly
 * valid goes to the full path, which checks it all.
 */
__hot VMMU_EXPORT int vmmu_vcpu_access(vmmu_vcpu *v, uint64_t gva, void *buf, size_t len, unsigned access,
				       struct vmmu_exit *exit)
{
	unsigned int type = access & VMMU_ACCESS_TYPE_MASK, acc;
	uintptr_t hva;
	bool phys, ok;

	if (unlikely(!v || !buf || !exit || len == 0 || type > VMMU_ACCESS_FETCH ||
		     (access & ~(VMMU_ACCESS_TYPE_MASK | VMMU_ACCESS_PHYS | VMMU_ACCESS_IMPLICIT | VMMU_ACCESS_NOWAIT)) ||
		     (gva & 0xfff) + len > 4096 || !v->mmu_ready || vm_is_bugged(v->vm)))
		return vcpu_access_full(v, gva, buf, len, access, exit, false);
	phys = (access & VMMU_ACCESS_PHYS) || (v->wcpu.mode == WALK_MODE_NONE && !vm_shadow_paging(v->vm));
	/* Within one page, the range checks of the full path reduce to these. */
	if (access & VMMU_ACCESS_PHYS) {
		if (unlikely(gva >> v->vm->cfg.maxphyaddr) || unlikely(vm_shadow_paging(v->vm)))
			return vcpu_access_full(v, gva, buf, len, access, exit, false);
	} else if (v->wcpu.mode != WALK_MODE_4LEVEL && v->wcpu.mode != WALK_MODE_5LEVEL) {
		if (unlikely(gva >> 32))
			return vcpu_access_full(v, gva, buf, len, access, exit, false);
	} else if (unlikely(len > ~gva)) {
		return vcpu_access_full(v, gva, buf, len, access, exit, false);
	}
	/* (With PML a walk logs the pages it dirties: the ring needs room.) */
	if (phys && unlikely(v->pml.size && v->ring.entries && ring_soft_full(v)))
		return vcpu_access_full(v, gva, buf, len, access, exit, false);
	STAT_INC(v->stat.accesses);
	acc = type == VMMU_ACCESS_WRITE ? ACC_WRITE : type == VMMU_ACCESS_FETCH ? ACC_EXEC : 0;
	vcpu_enter_guest_mode(v);
	if (unlikely(vcpu_pending_requests(v))) {
		ok = false;
	} else if (phys) {
		struct hw_exit he;

		ok = hw_translate(v, gva, acc, &hva, &he);
	} else {
		unsigned int walk_access = (type == VMMU_ACCESS_WRITE ? WALK_WRITE : 0) |
					   (type == VMMU_ACCESS_FETCH ? WALK_FETCH : 0) |
					   ((access & VMMU_ACCESS_IMPLICIT) ? WALK_IMPLICIT : 0);

		ok = tlb_linear_lookup(v, gva, acc, walk_access, &hva);
	}
	if (likely(ok))
		copy_fragment((void *)hva, buf, len, acc & ACC_WRITE);
	vcpu_exit_guest_mode(v);
	if (likely(ok))
		return 0;
	return vcpu_access_full(v, gva, buf, len, access, exit, true);
}

VMMU_EXPORT int vmmu_vcpu_get_stats(vmmu_vcpu *v, struct vmmu_vcpu_stats *out)
{
	struct vcpu_stats *s;

	if (!v || !out)
		return VMMU_EINVAL;
	s = &v->stat;
	memset(out, 0, sizeof(*out));

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
	out->pf_fast_fixed = STAT_READ(s->pf_fast_fixed);
	out->pf_fast_spurious = STAT_READ(s->pf_fast_spurious);
	out->pf_fast_failed = STAT_READ(s->pf_fast_failed);
	out->mmu_ctx_rebuilds = STAT_READ(s->mmu_ctx_rebuilds);
	out->root_fast_switches = STAT_READ(s->root_fast_switches);
	out->root_slow_switches = STAT_READ(s->root_slow_switches);
	out->guest_faults = STAT_READ(s->guest_faults);
	out->pt_write_emulations = STAT_READ(s->pt_write_emulations);
	out->unsync_syncs = STAT_READ(s->unsync_syncs);
	out->pml_entries = STAT_READ(s->pml_entries);
	out->pml_full_exits = STAT_READ(s->pml_full_exits);
	out->nested_entries = STAT_READ(s->nested_entries);
	out->nested_root_reuses = STAT_READ(s->nested_root_reuses);
	out->nested_exits = STAT_READ(s->nested_exits);
	out->time_fault_ns = STAT_READ(s->time_fault_ns);
	out->time_faultin_ns = STAT_READ(s->time_faultin_ns);
	out->time_walk_ns = STAT_READ(s->time_walk_ns);
	out->time_copy_ns = STAT_READ(s->time_copy_ns);
	out->fault_around_pages = STAT_READ(s->fault_around_pages);
	return 0;
}
