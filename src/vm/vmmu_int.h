/* SPDX-License-Identifier: MIT */
#ifndef VMMU_INT_H
#define VMMU_INT_H
/*
 * Internal objects: the VM and the vCPU.  Every field says which lock or rule
 * guards it:
 *   [slots_lock]   vm->slots_lock (a mutex; memslot updates are serialized)
 *   [mmu_lock:W]   written with mmu_lock held for write, read under read lock
 *   [mmu_lock:R+atomic] changed by cmpxchg under the read lock
 *   [rcu]          published with rcu_assign_pointer, read in an RCU section
 *   [vcpu]         only the thread currently driving the vCPU touches it
 *   [atomic]       any thread, C11 atomics
 *   [const]        set at creation
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <urcu/urcu-memb.h>

#include "compiler.h"
#include "cpu/tlb.h"
#include "vm/invalidate.h"
#include "vm/memslot.h"
#include "mmu/pt_arena.h"
#include "mmu/shadow/shadow_mmu.h"
#include "mmu/spte.h"
#include "vmmu/vmmu.h"
#include "mmu/walk.h"



struct tdp_root;
struct secure_ept;
struct attr_set;

/* Relaxed per-thread counters readable by others without tearing: a plain
 * increment in the owner, no locked instruction on the hot path. */
typedef _Atomic uint64_t stat_t;
#define STAT_INC(s) STAT_ADD(s, 1)
#define STAT_ADD(s, n)                                                                      \
	atomic_store_explicit(&(s), atomic_load_explicit(&(s), memory_order_relaxed) + (n), \
			      memory_order_relaxed)
#define STAT_READ(s) atomic_load_explicit(&(s), memory_order_relaxed)
/* Shared counters (several writers) need a real atomic add. */
#define VM_STAT_ADD(s, n) atomic_fetch_add_explicit(&(s), (uint64_t)(n), memory_order_relaxed)

/* vCPU requests (KVM_REQ_*), serviced on every entry to guest mode. */
#define VCPU_REQ_TLB_FLUSH (1u << 0)
#define VCPU_REQ_MMU_RELOAD (1u << 1)

struct vcpu_stats {
	stat_t accesses, tlb_hits, tlb_misses, exits, pf_taken, pf_fixed, pf_spurious, pf_retry,
		pf_emulate, pf_mmio_spte, tlb_flushes, mmu_reloads, host_faultins, pf_fast_fixed,
		pf_fast_spurious, pf_fast_failed, mmu_ctx_rebuilds, root_fast_switches, root_slow_switches,
		guest_faults, pt_write_emulations, unsync_syncs, pml_entries, pml_full_exits, nested_entries,
		nested_root_reuses, nested_exits, time_fault_ns, time_faultin_ns, time_walk_ns, time_copy_ns,
		fault_around_pages;
};

#define PT_CACHE_MIN 6	/* a 5-level fault needs at most 4 tables, plus a split */
#define PML_MAX_ENTRIES 512	/* Intel's PML buffer: one 4K page of gpas */
#define PML_MIN_ENTRIES 16

/*
 * A nested guest (docs/mmu.md section 13): while active, arch/wcpu/pcid/pge
 * are L2's and L1's wait here; the MMU runs guest_mmu and the hardware the
 * second TLB.  [vcpu]
 */
struct nested_vcpu {
	bool active;
	bool one_mmu;			/* [const] VMMU_VM_NESTED_ONE_MMU */
	struct vmmu_cpu_state l1_arch;
	struct walk_cpu l1_wcpu;
	uint16_t l1_pcid;
	bool l1_pge;
	uint64_t root;			/* EPTP or nCR3 of the current entry */
	uint16_t vpid;
	/* What L2's TLB was filled under; it is flushed when that changes
	 * (hardware tags entries by VPID and EPTP and may keep several). */
	bool tlb_tagged;
	uint64_t tlb_root;
	uint16_t tlb_vpid;
};

struct vmmu_vcpu {
	struct vmmu_vm *vm;	/* [const] */
	unsigned int id;	/* [const] */

	/*
	 * (entry sequence << 1) | in_guest.  Written only by the vCPU thread;
	 * remote requesters read it to wait for an entry to end.  See
	 * vcpu_enter_guest() for the ordering argument.
	 */
	_Atomic uint64_t mode;
	_Atomic uint32_t requests;	/* [atomic] VCPU_REQ_* */
	/* [vcpu] Fenced entries left before asking whether remote requests
	 * still come (vm->req_fence), the request count then, and whether to
	 * disarm the fence at the next exit. */
	uint32_t fence_budget;
	bool fence_disarm;
	uint64_t fence_reqs;
	/*
	 * (sequence << 1) | installing: odd while a fault of this vCPU checks
	 * the open invalidations and installs SPTEs (under mmu_lock for read).
	 * An invalidation that does not take mmu_lock for write waits out the
	 * odd values it sees, as a remote flush waits out guest mode.
	 */
	_Atomic uint64_t install;

	struct tdp_root *root;		/* [vcpu] TDP: ref held while loaded */
	struct hw_root hw;		/* [vcpu] what the hardware walks (mmu_load sets it) */
	/* Private VMs: the second root of the context (the VM's mirror, which
	 * lives as long as the VM) and the module's table the hardware walks
	 * for private gpas instead of hw. */
	struct tdp_root *mirror;	/* [const] */
	struct hw_root hw_priv;		/* [const] */
	bool mmu_ready;			/* [vcpu] roots loaded (TDP or shadow) */
	struct shadow_vcpu sh;		/* [vcpu] shadow paging: roles and roots */

	struct {
		uint64_t gen;
		const struct memslot *slot;
	} last_slot;			/* [vcpu] valid for one memslot generation */
	uint64_t fa_next_gfn;		/* [vcpu] the gfn a sequential first touch faults next */

	struct pt_cache pt_cache;	/* [vcpu] page tables topped up outside mmu_lock */

	/* Architectural state and the walk role derived from it (KVM's cpu_role). */
	struct vmmu_cpu_state arch;	/* [vcpu] */
	struct walk_cpu wcpu;		/* [vcpu] */
	/* Shadow paging: what the hardware applies to SPTEs, the guest's rules
	 * with CR0.WP forced on (WP=0 is emulated through the role). */
	struct walk_cpu hw_wcpu;	/* [vcpu] */
	const struct walk_cpu *tlb_cpu;	/* [const] what TLB hits are checked against */
	uint16_t pcid;			/* [vcpu] current PCID (0 without CR4.PCIDE) */
	bool pge;			/* [vcpu] CR4.PGE: G bits make entries global */
	struct vcpu_stats stat;		/* [vcpu] written, [atomic] read */
	struct nested_vcpu nested;	/* [vcpu] */

	/* Dirty ring (vm->cfg.dirty_ring_size entries), KVM's protocol. */
	struct {
		struct vmmu_dirty_gfn *entries;	/* [const] */
		uint32_t size;			/* [const] power of two, or 0 */
		uint32_t dirty_index;		/* [vcpu] next entry to publish */
		_Atomic uint32_t reset_index;	/* [ring_lock] entries before it are free */
	} ring;

	/*
	 * PML buffer (VMMU_VM_PML): gfns whose TDP D bit the hardware walker
	 * set, appended in guest mode and drained into the slots' bitmaps or
	 * this vCPU's ring by vcpu_pml_drain() before every exit from guest
	 * mode, and on a "PML full" exit.  docs/mmu.md section 9.5.
	 */
	struct {
		uint32_t n;			/* [vcpu] entries in use */
		/* [vcpu] 0 without PML, and while a nested guest runs: the
		 * hardware would log L2 gpas, but dirty logging is of L1 gfns,
		 * which guest_mmu logs as it makes L2 mappings writable. */
		uint32_t size;
		uint32_t l1_size;		/* [const] what size is in L1 */
		uint64_t gfn[PML_MAX_ENTRIES];	/* [vcpu] */
	} pml;

	/*
	 * The TLB in use: tlbs[0] while the vCPU runs its own (L1) code,
	 * tlbs[1] while it runs a nested guest (L2), whose translations are
	 * tagged apart by VPID/ASID and EPTP as on hardware; both survive the
	 * switches between the two levels.  [vcpu]
	 */
	struct tlb *tlb;
	struct tlb tlbs[2];		/* [vcpu] last: the big arrays after the hot fields */
};

/* VMMU_VM_TIMING: a clock read where an access's time is split (else 0). */
static inline uint64_t vcpu_clock(const struct vmmu_vcpu *v);

struct vm_stats {
	_Atomic uint64_t pages[PG_LEVEL_1G + 1];
	_Atomic uint64_t pt_pages, remote_tlb_flushes, zapped_sptes, mmio_sptes;
	/* Private VMs: the mirror's leaves and tables (not in pages/pt_pages). */
	_Atomic uint64_t private_pages[PG_LEVEL_1G + 1];
	_Atomic uint64_t mirror_pt_pages, attribute_changes, private_splits;
};

struct vmmu_vm {
	/*
	 * REQ_FENCE_*: whether vCPU entries fence (vm.c, "vCPU requests").
	 * Read at every entry, written rarely: first, in the cache line of
	 * the constants, away from mmu_lock, which faults write.
	 */
	_Atomic uint32_t req_fence;
	struct vmmu_vm_config cfg;	/* [const] */
	struct spte_fmt fmt;		/* [const] */
	int root_level;			/* [const] */
	int max_level;			/* [const] largest leaf level allowed */

	pthread_rwlock_t mmu_lock;
	/* [mmu_lock:W] current valid root, may be NULL; stored with release
	 * (__atomic) for the lockless look of an invalidation (hostmem.c). */
	struct tdp_root *root;
	struct tdp_root *obsolete_roots;	/* [mmu_lock:W] invalid roots still referenced */
	/* Tearing an obsolete root down: its leaves left the page counts when
	 * it was obsoleted, so zapping them must not count again. */
	bool tdp_teardown;			/* [mmu_lock:W] */
	struct shadow_vm *shadow;	/* shadow paging only; see shadow_mmu.h */

	/*
	 * Private VMs (VMMU_VM_PRIVATE; docs/mmu.md 13).  shared_mask is the
	 * shared bit of a gpa (0 otherwise: every test of it is then false).
	 * The mirror root is created with the VM and never replaced.  The
	 * external ops are the module's glue unless the embedder interposed.
	 */
	uint64_t shared_mask;			/* [const] */
	struct tdp_root *mirror_root;		/* [const] */
	struct secure_ept *sept;		/* [const] the security module */
	struct vmmu_external_ops xops;		/* [const] once a vCPU exists */
	void *xops_ctx;				/* [const] likewise */
	bool mirror_teardown;			/* [mmu_lock:W] VM destroy: no block/track */
	/* Private ranges of gfns (memory attributes), replaced under slots_lock. */
	struct attr_set *_Atomic attrs;		/* [rcu] */
	struct pt_arena arena;		/* own lock */

	/*
	 * Invalidation protocol (KVM's mmu_invalidate_seq, per range): a fault
	 * samples the sequence before faulting in the host page outside
	 * mmu_lock and installs nothing if an invalidation overlapping it is
	 * open or has ended since.  Own lock + seqlock (invalidate.h).
	 */
	struct mmu_invalidate inv;
	/*
	 * Sections that remove translations of the current TDP root and flush
	 * TLBs before they end (zaps, zap-all, invalidations that found
	 * something): started and ended counts.  An invalidation that found
	 * nothing mapped returns without mmu_lock only if no such section ran
	 * meanwhile, since one may have zapped the range and not flushed yet
	 * (hostmem.c, inv_range_unmapped).  [atomic]
	 */
	_Atomic uint64_t zap_sections_started, zap_sections_ended;

	/* What the host allows on hva ranges (vmmu_set_host_protection). */
	pthread_mutex_t hostprot_lock;
	struct hostprot_set *_Atomic hostprot;		/* [rcu], updated under [hostprot_lock] */
	_Atomic bool released;				/* vmmu_release(): no memory any more */

	pthread_mutex_t slots_lock;
	struct memslots *_Atomic memslots;	/* [rcu], updated under [slots_lock] */
	pthread_mutex_t ring_lock;	/* serializes vmmu_reset_dirty_rings() */

	struct vm_stats stat;

	_Atomic(vmmu_trace_fn) trace_fn;	/* [atomic] */
	void *_Atomic trace_ctx;

	_Atomic int bugged;
	const char *bug_reason;		/* first reason; set once, before bugged */

	/* Remote requests: how many were made, and how many of those are
	 * relying on req_fence staying ON (vm.c, "vCPU requests"). */
	_Atomic uint64_t nr_requests;
	_Atomic uint32_t req_fence_users;
	_Atomic uint64_t req_fence_arms;	/* OFF -> ON changes, for tests */
	/* [const] REQ_FENCE_BUDGET; tests set it small, before any vCPU
	 * exists, to make the fence change all the time. */
	uint32_t req_fence_budget;

	/* Cold, and large: last, so the fields above share few cache lines and pages. */
	pthread_mutex_t vcpus_lock;
	_Atomic unsigned int nr_vcpus;
	struct vmmu_vcpu *vcpus[VMMU_MAX_VCPUS];	/* [vcpus_lock] to add; entries immutable */
};

/* ---- invariant reporting ------------------------------------------------ */
/*
 * An internal invariant broke: report once, mark the VM bugged (it then
 * refuses work with VMMU_EIO / an internal-error exit), keep the host alive.
 */
void vm_bug(struct vmmu_vm *vm, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5))) __cold;
#define VM_BUG_ON(vm, cond, ...)                                             \
	({                                                                  \
		bool __c = !!(cond);                                        \
		if (unlikely(__c))                                          \
			vm_bug(vm, __FILE__, __LINE__, __VA_ARGS__);        \
		__c;                                                        \
	})
static inline bool vm_is_bugged(const struct vmmu_vm *vm)
{
	return atomic_load_explicit(&vm->bugged, memory_order_relaxed);
}

/*
 * An input struct's struct_size against the size this build knows (vmmu.h,
 * "ABI growth"): 0, VMMU_EINVAL (smaller than this build's, and not 0) or
 * VMMU_ENOTSUP (larger, with non-zero bytes this build does not know).
 */
int vmmu_abi_check(const void *p, uint32_t struct_size, size_t size);

/* ---- RCU ------------------------------------------------------------------ */
/*
 * liburcu (memb flavour) read sections.  Threads are registered lazily on
 * their first call into vmmu, since vCPU threads are the embedder's.
 */
extern __thread bool vmmu_rcu_registered;
void vmmu_rcu_thread_register(void);
static inline void vmmu_rcu_thread_online(void)
{
	if (unlikely(!vmmu_rcu_registered))
		vmmu_rcu_thread_register();
}

#if defined(__SANITIZE_THREAD__)
#define VMMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VMMU_TSAN 1
#endif
#endif

#ifdef VMMU_TSAN
/*
 * ThreadSanitizer does not see liburcu's grace periods (they order through
 * membarrier and plain loads), so it would report every RCU-deferred free as
 * racing with the readers it waited for.  Tell it what a grace period
 * guarantees: every read-side unlock happens before every later callback.
 */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
extern char vmmu_rcu_tsan_sync;
static inline void vmmu_rcu_read_lock(void) { urcu_memb_read_lock(); }
static inline void vmmu_rcu_read_unlock(void)
{
	__tsan_release(&vmmu_rcu_tsan_sync);
	urcu_memb_read_unlock();
}
static inline void vmmu_rcu_callback_begin(void) { __tsan_acquire(&vmmu_rcu_tsan_sync); }
/* And what a callback did happens before whoever waits in rcu_barrier(). */
static inline void vmmu_rcu_callback_end(void) { __tsan_release(&vmmu_rcu_tsan_sync); }
/* What the caller did before handing an object to RCU happens before the
 * callback that frees it, and before anything after a grace period. */
static inline void vmmu_rcu_handoff(void) { __tsan_release(&vmmu_rcu_tsan_sync); }
static inline void vmmu_rcu_after_grace(void) { __tsan_acquire(&vmmu_rcu_tsan_sync); }
#else
static inline void vmmu_rcu_read_lock(void) { urcu_memb_read_lock(); }
static inline void vmmu_rcu_read_unlock(void) { urcu_memb_read_unlock(); }
static inline void vmmu_rcu_callback_begin(void) { }
static inline void vmmu_rcu_callback_end(void) { }
static inline void vmmu_rcu_handoff(void) { }
static inline void vmmu_rcu_after_grace(void) { }
#endif

static inline void vmmu_call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	vmmu_rcu_handoff();
	urcu_memb_call_rcu(head, fn);
}

static inline void vmmu_synchronize_rcu(void)
{
	vmmu_rcu_handoff();
	urcu_memb_synchronize_rcu();
	vmmu_rcu_after_grace();
}

/* Waits for every callback queued so far to have run. */
static inline void vmmu_rcu_barrier(void)
{
	vmmu_rcu_handoff();
	urcu_memb_barrier();
	vmmu_rcu_after_grace();
}

/* ---- lock assertions (named after the lock, as in bhyve/KVM) ------------- */
#ifdef VMMU_DEBUG_LOCKS
void lockdep_assert_mmu_lock_held(struct vmmu_vm *vm);
#else
static inline void lockdep_assert_mmu_lock_held(struct vmmu_vm *vm) { (void)vm; }
#endif

/* ---- vCPU requests -------------------------------------------------------- */
/* vm->req_fence: whether vCPU entries fence (vm.c says why it changes). */
enum req_fence {
	REQ_FENCE_OFF,		/* a compiler barrier; requesters send membarrier() */
	REQ_FENCE_ARMING,	/* entries fence; the arming requester sends membarrier() */
	REQ_FENCE_ON,		/* entries fence; requesters need no membarrier() */
	REQ_FENCE_DISARMING,	/* entries fence; requesters send membarrier() */
	REQ_FENCE_ALWAYS,	/* no membarrier() on this host: entries always fence */
};
/* Fenced entries a vCPU makes before it asks whether requests still come
 * (vm->req_fence_budget). */
#define REQ_FENCE_BUDGET 16384
/* Back to REQ_FENCE_OFF, from a vCPU outside guest mode. */
void vm_req_fence_disarm(struct vmmu_vm *vm);
void vm_make_all_vcpus_request(struct vmmu_vm *vm, uint32_t req);
/* Wait until each of vCPUs [0, n) whose counter was seen odd (in guest mode,
 * or, with install, in an install section) has moved on. */
void vcpus_wait_out(struct vmmu_vm *vm, unsigned int n, const uint64_t *seen, bool install);
/* The vCPU this thread is driving inside a vCPU call, or NULL (vcpu_self_*). */
extern __thread struct vmmu_vcpu *vmmu_self_vcpu;
static inline struct vmmu_vcpu *vcpu_self_enter(struct vmmu_vcpu *v)
{
	struct vmmu_vcpu *prev = vmmu_self_vcpu;

	vmmu_self_vcpu = v;
	return prev;
}
static inline void vcpu_self_exit(struct vmmu_vcpu *prev)
{
	vmmu_self_vcpu = prev;
}
void vm_flush_remote_tlbs(struct vmmu_vm *vm);

/*
 * A fault's check of the open invalidations and its install are one install
 * section.  The Dekker pair with inv_wait_installers(): the fault stores an
 * odd value and then reads the invalidations; the invalidation publishes its
 * range and then reads every vCPU's value.  With a full fence on each side,
 * either the fault sees the range (and installs nothing) or the invalidation
 * sees the fault in its section and waits until its SPTEs are in place,
 * where its zap finds them.  A fault costs microseconds; the fence is noise.
 */
static inline void vcpu_install_begin(struct vmmu_vcpu *v)
{
	uint64_t m = atomic_load_explicit(&v->install, memory_order_relaxed);

#ifdef VMMU_TSAN
	atomic_store_explicit(&v->install, m + 1, memory_order_seq_cst);
#else
	atomic_store_explicit(&v->install, m + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline void vcpu_install_end(struct vmmu_vcpu *v)
{
	uint64_t m = atomic_load_explicit(&v->install, memory_order_relaxed);

	/* Release: the SPTEs it installed are seen by whoever sees it end. */
	atomic_store_explicit(&v->install, m + 1, memory_order_release);
}

/* See zap_sections_started: around every removal of current-root translations
 * that flushes before it ends. */
static inline void vm_zap_section_begin(struct vmmu_vm *vm)
{
	atomic_fetch_add_explicit(&vm->zap_sections_started, 1, memory_order_seq_cst);
}

static inline void vm_zap_section_end(struct vmmu_vm *vm)
{
	atomic_fetch_add_explicit(&vm->zap_sections_ended, 1, memory_order_release);
}

/* Remove the mappings of gfns [start, end) and flush; with invalidate, also
 * move mmu_invalidate_seq (a racing fault retries).  mmu_lock taken here. */
void vm_zap_gfn_range(struct vmmu_vm *vm, uint64_t start, uint64_t end, bool invalidate);
/* Every mapping goes (fast zap-all); mmu_lock taken here. */
void vm_zap_all(struct vmmu_vm *vm);

/* C11 acquire/release rather than liburcu's rcu_dereference/rcu_assign_pointer
 * (volatile accesses), so race detectors see the publication. */
/* Host protections: sorted, non-overlapping ranges that are not VMMU_HOST_RW. */
#define HOSTPROT_MAX 256
struct hostprot_set {
	unsigned int n;
	struct rcu_head rcu;
	struct {
		uintptr_t start, end;
		unsigned int prot;
	} r[];
};

/*
 * Whether all of [hva, hva + len) has one protection, and which (RCU read
 * side).  A mapping must never span a protection change: like a host huge
 * page that mprotect splits, it is then mapped at a smaller level.
 */
static inline bool hostprot_uniform(const struct hostprot_set *hs, uintptr_t hva, uintptr_t len, unsigned int *prot);

/* Whether the MMU itself may read the page at hva: not declared gone by the
 * embedder (VMMU_HOST_NONE), not released. */
static inline bool host_readable(struct vmmu_vm *vm, uintptr_t hva)
{
	unsigned int prot;

	if (atomic_load_explicit(&vm->released, memory_order_acquire))
		return false;
	hostprot_uniform(atomic_load_explicit(&vm->hostprot, memory_order_acquire), hva & ~(uintptr_t)0xfff, 4096,
			 &prot);
	return prot != VMMU_HOST_NONE;
}

static inline bool hostprot_uniform(const struct hostprot_set *hs, uintptr_t hva, uintptr_t len, unsigned int *prot)
{
	*prot = VMMU_HOST_RW;
	if (!hs)
		return true;
	for (unsigned int i = 0; i < hs->n; i++) {
		if (hs->r[i].start >= hva + len)
			break;
		if (hs->r[i].end <= hva)
			continue;
		if (hs->r[i].start > hva || hs->r[i].end < hva + len)
			return false;
		*prot = hs->r[i].prot;
	}
	return true;
}

/* Most pages one access window can make writable (32 data pages, each with
 * up to 5 guest page-table pages under 2D walks) -- with PML, whose D bits it
 * can set: the ring keeps this much room free before running a window. */
#define DIRTY_RING_SLACK 256
#define DIRTY_RING_MIN 1024

void dirty_ring_push(struct vmmu_vcpu *v, uint32_t slot, uint64_t offset);

/* A page became writable in a logged slot: tell the ring or the bitmap. */
static inline void vcpu_mark_page_dirty(struct vmmu_vcpu *v, const struct memslot *s, gfn_t gfn)
{
	if (v->ring.entries)
		dirty_ring_push(v, s->id, gfn - s->base_gfn);
	else
		mark_page_dirty_in_slot(s, gfn);
}

static inline struct memslots *vm_memslots(struct vmmu_vm *vm)
{
	return atomic_load_explicit(&vm->memslots, memory_order_acquire);
}

static inline uint64_t vcpu_clock(const struct vmmu_vcpu *v)
{
	struct timespec t;

	if (likely(!(v->vm->cfg.flags & VMMU_VM_TIMING)))
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

/* Adds the time since t0 (a vcpu_clock() reading) to a time_* counter. */
#define VCPU_TIME_ADD(v, field, t0)                                          \
	do {                                                                \
		if (unlikely(t0))                                           \
			STAT_ADD((v)->stat.field, vcpu_clock(v) - (t0));    \
	} while (0)

/* The VM shadows its guest's own page tables (no TDP). */
static inline bool vm_shadow_paging(const struct vmmu_vm *vm)
{
	return vm->cfg.mmu == VMMU_MMU_SHADOW;
}

/* A private access: the VM is private and the gpa lacks the shared bit. */
static inline bool vm_gpa_is_private(const struct vmmu_vm *vm, uint64_t gpa)
{
	return vm->shared_mask && !(gpa & vm->shared_mask);
}

/* Dirty logging by D bits and the PML buffer rather than write protection. */
static inline bool vm_pml(const struct vmmu_vm *vm)
{
	return vm->cfg.flags & VMMU_VM_PML;
}

/* Empty the PML buffer into the dirty bitmaps / ring (the vCPU's thread). */
void vcpu_pml_drain(struct vmmu_vcpu *v);

#endif /* VMMU_INT_H */
