/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <linux/membarrier.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cpu/hw.h"
#include "mmu/mmu.h"
#include "cpu/secure_ept.h"
#include "mmu/tdp/mirror.h"
#include "mmu/tdp/tdp_mmu.h"
#include "vm/attributes.h"
#include "vm/trace.h"
#include "vm/vcpu.h"
#include "vm/vmmu_int.h"

#define DEFAULT_PT_ARENA_BYTES (16ULL << 30)

/* ---- vCPU requests ------------------------------------------------------- */

/*
 * A remote request is a Dekker pair: the requester sets the vCPU's request
 * bits and then loads its mode; the vCPU stores its mode and then loads its
 * requests.  Each side needs a full fence between its store and its load,
 * and who pays for it is a trade:
 *
 *  - the vCPU, at every entry (KVM's smp_mb after IN_GUEST_MODE): a locked
 *    instruction, ~4 ns on a TLB-hit access that otherwise costs ~9 ns
 *    (vmmu bench walk, tlb_hit_ns);
 *  - the requester, with membarrier(), which fences every CPU running the
 *    process for it (liburcu-memb's technique): free for the vCPUs, but an
 *    IPI round per request, tens of microseconds on a virtualized host,
 *    which capped invalidations under faults at ~25k ranges/s (bench
 *    notifier).
 *
 * So it adapts.  OFF: entries need only a compiler barrier and requesters
 * send membarrier().  The first request arms (OFF -> ARMING, membarrier(),
 * -> ON): every entry that loads req_fence after that membarrier sees it
 * non-OFF and fences, and one that loaded OFF before it had stored its mode
 * before the membarrier's fence on its CPU, so requesters see it in guest
 * mode.  While ON, requesters skip membarrier().  A vCPU that makes
 * REQ_FENCE_BUDGET fenced entries without seeing a request disarms (ON ->
 * DISARMING, wait until no requester relies on ON, -> OFF), outside guest
 * mode; requesters count themselves in req_fence_users and check ON again
 * (the Dekker pair of the disarm), or fall back to membarrier().
 */
static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;

static void membarrier_init(void)
{
	long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		membarrier_ok = true;
}

/* What vCPU entries start with; ThreadSanitizer models neither membarrier()
 * nor fences, and there both sides use seq_cst accesses instead. */
static uint32_t req_fence_initial(void)
{
	pthread_once(&membarrier_once, membarrier_init);
#ifdef VMMU_TSAN
	return REQ_FENCE_ALWAYS;
#else
	return membarrier_ok ? REQ_FENCE_OFF : REQ_FENCE_ALWAYS;
#endif
}

/*
 * After the request bits are set: make every vCPU's entries order their
 * mode store before their request load, one way or the other.  True when
 * the caller relies on ON and must drop req_fence_users after its wait.
 */
static bool req_fence_hold(struct vmmu_vm *vm)
{
	uint32_t st = atomic_load_explicit(&vm->req_fence, memory_order_seq_cst);
	bool arming;

	if (st == REQ_FENCE_ALWAYS)
		return false;
	if (st == REQ_FENCE_ON) {
		atomic_fetch_add_explicit(&vm->req_fence_users, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&vm->req_fence, memory_order_seq_cst) == REQ_FENCE_ON)
			return true;
		atomic_fetch_sub_explicit(&vm->req_fence_users, 1, memory_order_release);
	}
	st = REQ_FENCE_OFF;
	arming = atomic_compare_exchange_strong_explicit(&vm->req_fence, &st, REQ_FENCE_ARMING,
							 memory_order_seq_cst, memory_order_relaxed);
	syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	if (arming) {
		atomic_store_explicit(&vm->req_fence, REQ_FENCE_ON, memory_order_release);
		atomic_fetch_add_explicit(&vm->req_fence_arms, 1, memory_order_relaxed);
	}
	return false;
}

void vm_req_fence_disarm(struct vmmu_vm *vm)
{
	uint32_t st = REQ_FENCE_ON;
	unsigned int spins = 0;

	if (!atomic_compare_exchange_strong_explicit(&vm->req_fence, &st, REQ_FENCE_DISARMING, memory_order_seq_cst,
						     memory_order_relaxed))
		return;
	/* A requester that counted itself before the store above saw ON and
	 * relies on it until its wait ends: a few guest-mode stretches. */
	while (atomic_load_explicit(&vm->req_fence_users, memory_order_seq_cst)) {
		if (++spins < 64)
			caa_cpu_relax();
		else
			sched_yield();
	}
	atomic_store_explicit(&vm->req_fence, REQ_FENCE_OFF, memory_order_release);
}

__thread struct vmmu_vcpu *vmmu_self_vcpu;

void vm_make_all_vcpus_request(struct vmmu_vm *vm, uint32_t req)
{
	unsigned int n = atomic_load_explicit(&vm->nr_vcpus, memory_order_acquire);
	uint64_t seen[VMMU_MAX_VCPUS];
	bool held;

	for (unsigned int i = 0; i < n; i++)
		atomic_fetch_or_explicit(&vm->vcpus[i]->requests, req, memory_order_seq_cst);
	/*
	 * The only vCPU is the caller's own (a fault or an emulated store on
	 * a one-vCPU VM): it is outside guest mode and reads its requests in
	 * program order before it enters again, so there is nobody to fence
	 * against or wait for (KVM sends no IPI to itself either).
	 */
	if (n == 1 && vm->vcpus[0] == vmmu_self_vcpu)
		return;
	atomic_fetch_add_explicit(&vm->nr_requests, 1, memory_order_relaxed);
	held = req_fence_hold(vm);
	for (unsigned int i = 0; i < n; i++)
		seen[i] = atomic_load_explicit(&vm->vcpus[i]->mode, memory_order_seq_cst);
	/*
	 * Wait out every guest-mode stretch that began before the request was
	 * visible.  Those are short (one access: a walk and a copy) and never
	 * block, so spinning is bounded.
	 */
	vcpus_wait_out(vm, n, seen, false);
	if (held)
		atomic_fetch_sub_explicit(&vm->req_fence_users, 1, memory_order_release);
}

void vcpus_wait_out(struct vmmu_vm *vm, unsigned int n, const uint64_t *seen, bool install)
{
	for (unsigned int i = 0; i < n; i++) {
		_Atomic uint64_t *ctr = install ? &vm->vcpus[i]->install : &vm->vcpus[i]->mode;
		unsigned int spins = 0;

		if (!(seen[i] & 1))
			continue;
		/* Yield in case the vCPU's thread was preempted. */
		while (atomic_load_explicit(ctr, memory_order_acquire) == seen[i]) {
			if (++spins < 64)
				caa_cpu_relax();
			else
				sched_yield();
		}
	}
}

void vm_flush_remote_tlbs(struct vmmu_vm *vm)
{
	struct vmmu_trace_event ev;

	VM_STAT_ADD(vm->stat.remote_tlb_flushes, 1);
	if (likely(!vm_tracing(vm))) {
		vm_make_all_vcpus_request(vm, VCPU_REQ_TLB_FLUSH);
		return;
	}
	ev = (struct vmmu_trace_event){ .kind = VMMU_TRACE_REMOTE_TLB_FLUSH, .vcpu_id = VMMU_TRACE_NO_VCPU,
					.ts_ns = vm_trace_now(),
					.count = atomic_load_explicit(&vm->nr_vcpus, memory_order_acquire) };
	vm_make_all_vcpus_request(vm, VCPU_REQ_TLB_FLUSH);
	ev.dur_ns = vm_trace_now() - ev.ts_ns;
	vm_trace(vm, &ev);
}

/* ---- VM ----------------------------------------------------------------- */

/*
 * The layout every struct_size of 0 stands for (vmmu.h, "ABI growth"): the
 * fields never move, later versions only append.  struct_size sits in what
 * used to be padding, so the structs kept their size and offsets.
 */
_Static_assert(offsetof(struct vmmu_vm_config, struct_size) == 52 && offsetof(struct vmmu_vm_config, shared_bit) == 56 &&
		       sizeof(struct vmmu_vm_config) == 64,
	       "vmmu_vm_config v0 layout");
_Static_assert(offsetof(struct vmmu_memslot, struct_size) == 44 && sizeof(struct vmmu_memslot) == 48,
	       "vmmu_memslot v0 layout");
_Static_assert(offsetof(struct vmmu_cpu_state, struct_size) == 80 && sizeof(struct vmmu_cpu_state) == 88,
	       "vmmu_cpu_state v0 layout");
_Static_assert(offsetof(struct vmmu_exit, done) == 8 && offsetof(struct vmmu_exit, u) == 16 &&
		       sizeof(struct vmmu_exit) == 80,
	       "vmmu_exit v0 layout");

VMMU_EXPORT void vmmu_vm_config_init(struct vmmu_vm_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->mmu = VMMU_MMU_TDP;
	cfg->tdp_format = VMMU_TDP_EPT;
	cfg->tdp_levels = 4;
	cfg->maxphyaddr = 46;
	cfg->flags = 0;
	cfg->max_vcpus = 64;
	cfg->pt_arena_bytes = 0;
	cfg->shadow_prev_roots = 3;
	cfg->shadow_max_pages = 0;
	cfg->struct_size = sizeof(*cfg);
}

/* Everything vmmu_vm_create() checks before it allocates anything. */
static int vm_config_check(const struct vmmu_vm_config *cfg)
{
	uint64_t shared_mask;
	int r;

	if (!cfg)
		return VMMU_EINVAL;
	r = vmmu_abi_check(cfg, cfg->struct_size, sizeof(*cfg));
	if (r)
		return r;
	if (cfg->mmu != VMMU_MMU_TDP && cfg->mmu != VMMU_MMU_SHADOW)
		return VMMU_EINVAL;
	if (cfg->mmu == VMMU_MMU_SHADOW &&
	    ((cfg->flags & VMMU_VM_AD_DISABLED) || cfg->shadow_prev_roots > VMMU_MAX_PREV_ROOTS ||
	     (cfg->shadow_max_pages && cfg->shadow_max_pages < 64)))
		return VMMU_EINVAL;
	if (cfg->tdp_format > VMMU_TDP_NPT)
		return VMMU_EINVAL;
	if (cfg->tdp_levels != 4 && cfg->tdp_levels != 5)
		return VMMU_EINVAL;
	if (cfg->maxphyaddr < 36 || cfg->maxphyaddr > 52)
		return VMMU_EINVAL;
	/* 4-level TDP maps 48 bits of guest-physical address space (shadow
	 * paging maps linear addresses: any MAXPHYADDR will do). */
	if (cfg->mmu == VMMU_MMU_TDP && cfg->tdp_levels == 4 && cfg->maxphyaddr > 48)
		return VMMU_EINVAL;
	if (cfg->flags & ~(VMMU_VM_AD_DISABLED | VMMU_VM_NO_HUGEPAGES | VMMU_VM_NO_FAST_PF |
			   VMMU_VM_MANUAL_PROTECT | VMMU_VM_DIRTY_INIT_SET | VMMU_VM_EAGER_SPLIT | VMMU_VM_PML |
			   VMMU_VM_NESTED_ONE_MMU | VMMU_VM_TIMING | VMMU_VM_PRIVATE | VMMU_VM_NO_FAULT_AROUND))
		return VMMU_EINVAL;
	/* The nested ablation is about a TDP VM's two MMUs. */
	if ((cfg->flags & VMMU_VM_NESTED_ONE_MMU) && cfg->mmu != VMMU_MMU_TDP)
		return VMMU_EINVAL;
	/* guest_mmu keeps previous roots too (EPTP switches). */
	if (cfg->shadow_prev_roots > VMMU_MAX_PREV_ROOTS)
		return VMMU_EINVAL;
	/* PML logs the D bits of TDP leaves: it needs both. */
	if ((cfg->flags & VMMU_VM_PML) && (cfg->mmu != VMMU_MMU_TDP || (cfg->flags & VMMU_VM_AD_DISABLED)))
		return VMMU_EINVAL;
	if (cfg->pml_entries &&
	    (!(cfg->flags & VMMU_VM_PML) || cfg->pml_entries < PML_MIN_ENTRIES ||
	     cfg->pml_entries > PML_MAX_ENTRIES || (cfg->pml_entries & (cfg->pml_entries - 1))))
		return VMMU_EINVAL;
	/* INITIALLY_SET only means something with manual protection (KVM). */
	if ((cfg->flags & VMMU_VM_DIRTY_INIT_SET) && !(cfg->flags & VMMU_VM_MANUAL_PROTECT))
		return VMMU_EINVAL;
	/* NPT has no way to turn hardware A/D off. */
	if (cfg->tdp_format == VMMU_TDP_NPT && (cfg->flags & VMMU_VM_AD_DISABLED))
		return VMMU_EINVAL;
	if (cfg->max_vcpus < 1 || cfg->max_vcpus > VMMU_MAX_VCPUS)
		return VMMU_EINVAL;
	/* Bounded as KVM bounds it: each vCPU allocates its ring up front. */
	if (cfg->dirty_ring_size &&
	    (cfg->dirty_ring_size < DIRTY_RING_MIN || cfg->dirty_ring_size > VMMU_DIRTY_RING_MAX_ENTRIES ||
	     (cfg->dirty_ring_size & (cfg->dirty_ring_size - 1))))
		return VMMU_EINVAL;
	return private_config_check(cfg, &shared_mask);
}

VMMU_EXPORT int vmmu_vm_config_supported(const struct vmmu_vm_config *cfg)
{
	return vm_config_check(cfg);
}

/* ---- capabilities ---------------------------------------------------------- */

/* 1 if the host kernel has a hugetlb pool of this page size (pages may still
 * have to be reserved before a VMMU_BACKING_HUGETLB slot gets them). */
static int host_hugetlb(const char *kb)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%skB", kb);
	return access(path, F_OK) == 0;
}

static int cap_hugetlb_2m(void)
{
	return host_hugetlb("2048");
}

static int cap_hugetlb_1g(void)
{
	return host_hugetlb("1048576");
}

static int cap_thp(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

/* One line per capability: a constant, or a probe of the host. */
static const struct {
	uint32_t cap;
	int value;
	int (*probe)(void);
} vmmu_caps[] = {
	{ VMMU_CAP_TDP_EPT, 1, NULL },
	{ VMMU_CAP_TDP_NPT, 1, NULL },
	{ VMMU_CAP_TDP_5LEVEL, 1, NULL },
	{ VMMU_CAP_SHADOW, 1, NULL },
	{ VMMU_CAP_PML, 1, NULL },
	{ VMMU_CAP_DIRTY_RING, VMMU_DIRTY_RING_MAX_ENTRIES, NULL },
	{ VMMU_CAP_MANUAL_PROTECT, 1, NULL },
	{ VMMU_CAP_EAGER_SPLIT, 1, NULL },
	{ VMMU_CAP_HUGETLB_2M, 0, cap_hugetlb_2m },
	{ VMMU_CAP_HUGETLB_1G, 0, cap_hugetlb_1g },
	{ VMMU_CAP_THP, 0, cap_thp },
	{ VMMU_CAP_MAX_VCPUS, VMMU_MAX_VCPUS, NULL },
	{ VMMU_CAP_MAX_MEMSLOTS, VMMU_MAX_MEMSLOTS, NULL },
	{ VMMU_CAP_ACCESS_NOWAIT, 1, NULL },
	{ VMMU_CAP_NESTED, 1, NULL },
	{ VMMU_CAP_PRIVATE_MEM, 1, NULL },
};

VMMU_EXPORT int vmmu_check_extension(uint32_t cap)
{
	for (size_t i = 0; i < ARRAY_SIZE(vmmu_caps); i++)
		if (vmmu_caps[i].cap == cap)
			return vmmu_caps[i].probe ? vmmu_caps[i].probe() : vmmu_caps[i].value;
	return 0;
}

VMMU_EXPORT int vmmu_vm_create(const struct vmmu_vm_config *cfg, vmmu_vm **out)
{
	struct vmmu_vm *vm;
	uint64_t shared_mask;
	int r;

	if (!out)
		return VMMU_EINVAL;
	r = vm_config_check(cfg);
	if (r)
		return r;
	/* Checked above; this derives the mask. */
	(void)private_config_check(cfg, &shared_mask);

	vmmu_rcu_thread_online();

	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return VMMU_ENOMEM;
	vm->cfg = *cfg;	/* the bytes this build knows; the rest were checked to be 0 */
	vm->cfg.struct_size = sizeof(vm->cfg);
	spte_fmt_init(&vm->fmt, cfg->tdp_format == VMMU_TDP_EPT, !(cfg->flags & VMMU_VM_AD_DISABLED));
	atomic_init(&vm->req_fence, req_fence_initial());
	vm->req_fence_budget = REQ_FENCE_BUDGET;
	vm->root_level = (int)cfg->tdp_levels;
	vm->max_level = (cfg->flags & VMMU_VM_NO_HUGEPAGES) ? PG_LEVEL_4K : PG_LEVEL_1G;
	if (cfg->mmu == VMMU_MMU_SHADOW) {
		/* Shadow SPTEs are legacy x86 entries with hardware A/D, and map
		 * 4K pages only (guest huge pages get direct shadow pages). */
		spte_fmt_init(&vm->fmt, false, true);
		vm->max_level = PG_LEVEL_4K;
	}
	r = pt_arena_init(&vm->arena, cfg->pt_arena_bytes ? cfg->pt_arena_bytes : DEFAULT_PT_ARENA_BYTES);
	if (r) {
		free(vm);
		return r;
	}
	vm->shared_mask = shared_mask;
	atomic_init(&vm->memslots, memslots_new_empty());
	/* Every VM has the shadow MMU: shadow paging uses it for the guest's
	 * tables, a TDP VM for the EPT/NPT tables of its nested guests. */
	if (!vm->memslots || shadow_vm_init(vm) || (shared_mask && mirror_init(vm))) {
		free(vm->memslots);
		pt_arena_destroy(&vm->arena);
		free(vm);
		return VMMU_ENOMEM;
	}
	{
		/*
		 * Writers first, as KVM's queued rwlock does: with glibc's
		 * default, a stream of faulting vCPUs (readers) starves
		 * invalidations and zaps (writers) indefinitely.  Nothing here
		 * takes the read side recursively, which this kind forbids.
		 */
		pthread_rwlockattr_t attr;

		pthread_rwlockattr_init(&attr);
		pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&vm->mmu_lock, &attr);
		pthread_rwlockattr_destroy(&attr);
	}
	pthread_mutex_init(&vm->slots_lock, NULL);
	pthread_mutex_init(&vm->vcpus_lock, NULL);
	pthread_mutex_init(&vm->ring_lock, NULL);
	pthread_mutex_init(&vm->hostprot_lock, NULL);
	inv_init(&vm->inv);
	*out = vm;
	return 0;
}

VMMU_EXPORT void vmmu_vm_destroy(vmmu_vm *vm)
{
	struct memslots *ms;

	if (!vm)
		return;
	vmmu_rcu_thread_online();
	/* Roots first, while every vCPU exists: dropping one may flush, and a
	 * flush asks every vCPU. */
	for (unsigned int i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		mmu_unload(vm->vcpus[i]);
	for (unsigned int i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		vcpu_free(vm->vcpus[i]);
	if (vm->root) {
		struct tdp_root *root = vm->root;

		__atomic_store_n(&vm->root, NULL, __ATOMIC_RELEASE);
		tdp_mmu_put_root(vm, root);
	}
	/* The mirror goes only now (never on zap-all): TD teardown. */
	mirror_destroy_root(vm);
	shadow_vm_destroy(vm);
	/* Every deferred free touches the arena: drain them before it goes. */
	vmmu_rcu_barrier();
	if (vm->sept)
		mirror_destroy_module(vm);
	private_vm_free(vm);
	ms = vm->memslots;
	for (unsigned int i = 0; i < ms->n; i++) {
		memslot_free_backing(&ms->slots[i]);
		free(ms->slots[i].dirty_bitmap);
		shadow_slot_free(&ms->slots[i]);
	}
	free(ms);
	pt_arena_destroy(&vm->arena);
	pthread_rwlock_destroy(&vm->mmu_lock);
	pthread_mutex_destroy(&vm->slots_lock);
	pthread_mutex_destroy(&vm->vcpus_lock);
	pthread_mutex_destroy(&vm->ring_lock);
	pthread_mutex_destroy(&vm->hostprot_lock);
	inv_destroy(&vm->inv);
	free(atomic_load(&vm->hostprot));
	free((void *)vm->bug_reason);
	free(vm);
}

/* ---- stats --------------------------------------------------------------- */

VMMU_EXPORT int vmmu_audit(vmmu_vm *vm, char *why, size_t len)
{
	uint64_t counts[PG_LEVEL_1G + 1] = { 0 }, tables = 0;
	char scratch[256];
	int r = 0;

	if (!vm)
		return VMMU_EINVAL;
	if (!why || !len) {
		why = scratch;
		len = sizeof(scratch);
	}
	why[0] = 0;
	vmmu_rcu_thread_online();
	/*
	 * A memslot update is one step to the audit: between publishing a new
	 * slot and dropping the shadow roots built while its gfns were outside
	 * RAM, such a root is an indirect page of an in-RAM gfn with no write
	 * tracking, which the update itself is about to repair.  slots_lock
	 * comes before the RCU read section and mmu_lock, as in the update.
	 */
	pthread_mutex_lock(&vm->slots_lock);
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (vm->root && tdp_mmu_audit(vm, vm->root, counts, &tables, why, len))
		r = VMMU_EIO;
	/* Obsolete roots keep their contents until their last vCPU drops them;
	 * checked the same way, but not part of the VM's page counts. */
	for (struct tdp_root *o = vm->obsolete_roots; o && !r; o = o->next_obsolete) {
		uint64_t old_counts[PG_LEVEL_1G + 1] = { 0 };

		if (tdp_mmu_audit(vm, o, old_counts, &tables, why, len))
			r = VMMU_EIO;
		tables++;
	}
	if (!r && shadow_audit(vm, &tables, why, len))
		r = VMMU_EIO;
	if (!r && vm->sept && mirror_audit(vm, why, len))
		r = VMMU_EIO;
	for (int l = PG_LEVEL_4K; !r && l <= PG_LEVEL_1G; l++) {
		uint64_t stat = atomic_load(&vm->stat.pages[l]);

		if (stat != counts[l]) {
			snprintf(why, len, "%llu level-%d leaves mapped, stats say %llu", (unsigned long long)counts[l], l,
				 (unsigned long long)stat);
			r = VMMU_EIO;
		}
	}
	if (!r && vm->root && atomic_load(&vm->stat.pt_pages) < tables + 1) {
		snprintf(why, len, "%llu tables linked, stats say %llu", (unsigned long long)tables + 1,
			 (unsigned long long)atomic_load(&vm->stat.pt_pages));
		r = VMMU_EIO;
	}
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	pthread_mutex_unlock(&vm->slots_lock);
	return r;
}

void vm_trace(struct vmmu_vm *vm, struct vmmu_trace_event *ev)
{
	vmmu_trace_fn fn = atomic_load_explicit(&vm->trace_fn, memory_order_acquire);
	struct vmmu_vcpu *self = vmmu_self_vcpu;

	if (!fn)
		return;
	if (!ev->ts_ns)
		ev->ts_ns = vm_trace_now();
	if (ev->vcpu_id == VMMU_TRACE_NO_VCPU && self && self->vm == vm)
		ev->vcpu_id = self->id;
	fn(atomic_load_explicit(&vm->trace_ctx, memory_order_relaxed), ev);
}

VMMU_EXPORT void vmmu_set_trace(vmmu_vm *vm, vmmu_trace_fn fn, void *ctx)
{
	if (!vm)
		return;
	/* ctx first: a vCPU that sees the new fn must see its ctx. */
	atomic_store_explicit(&vm->trace_ctx, ctx, memory_order_relaxed);
	atomic_store_explicit(&vm->trace_fn, fn, memory_order_release);
}

VMMU_EXPORT int vmmu_vm_get_stats(vmmu_vm *vm, struct vmmu_vm_stats *out)
{
	if (!vm || !out)
		return VMMU_EINVAL;
	memset(out, 0, sizeof(*out));
	/* TDP leaves of the current root plus shadow leaves (shadow paging, or
	 * the shadow EPT/NPT of nested guests). */
	out->pages_4k = atomic_load(&vm->stat.pages[PG_LEVEL_4K]) +
			__atomic_load_n(&vm->shadow->nr_leaves, __ATOMIC_RELAXED);
	out->pages_2m = atomic_load(&vm->stat.pages[PG_LEVEL_2M]);
	out->pages_1g = atomic_load(&vm->stat.pages[PG_LEVEL_1G]);
	out->pt_pages = atomic_load(&vm->stat.pt_pages);
	out->remote_tlb_flushes = atomic_load(&vm->stat.remote_tlb_flushes);
	out->zapped_sptes = atomic_load(&vm->stat.zapped_sptes);
	out->mmio_sptes_installed = atomic_load(&vm->stat.mmio_sptes);
	{
		struct shadow_vm *sh = vm->shadow;

		out->shadow_pages = __atomic_load_n(&sh->nr_pages, __ATOMIC_RELAXED);
		out->shadow_unsync_pages = __atomic_load_n(&sh->nr_unsync, __ATOMIC_RELAXED);
		out->shadow_pages_created = atomic_load(&sh->created);
		out->shadow_pages_zapped = atomic_load(&sh->zapped);
		out->shadow_pages_recycled = atomic_load(&sh->recycled);
		out->shadow_pte_writes = atomic_load(&sh->pte_writes);
		out->shadow_flooded = atomic_load(&sh->flooded);
	}
	if (vm->sept) {
		struct secure_ept_stats ss;

		sept_get_stats(vm->sept, &ss);
		out->private_pages_4k = atomic_load(&vm->stat.private_pages[PG_LEVEL_4K]);
		out->private_pages_2m = atomic_load(&vm->stat.private_pages[PG_LEVEL_2M]);
		out->mirror_pt_pages = atomic_load(&vm->stat.mirror_pt_pages);
		out->secure_pt_pages = ss.tables;
		out->secure_pages_4k = ss.leaves[PG_LEVEL_4K];
		out->secure_pages_2m = ss.leaves[PG_LEVEL_2M];
		out->secure_violations = ss.violations;
		out->attribute_changes = atomic_load(&vm->stat.attribute_changes);
		out->private_splits = atomic_load(&vm->stat.private_splits);
	}
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	out->memslot_generation = vm_memslots(vm)->generation;
	vmmu_rcu_read_unlock();
	return 0;
}
