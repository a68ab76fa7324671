/* SPDX-License-Identifier: MIT */
/*
 * Dirty logging with guest paging on: KVM's dirty_log_test idea over a guest
 * that runs with its own page tables, on every MMU variant.
 *
 * test_dirty.c checks the same contract with paging off, which under shadow
 * paging means direct shadow pages only (gfn = page index, the lockless fast
 * page fault allowed).  Here the vCPUs write through a 4-level or PAE guest
 * address space, so under shadow paging the data is mapped by indirect
 * shadow pages (guest 4K leaves) or by direct pages that shadow a guest 2M
 * leaf, and a harvest can only find the SPTEs of a gfn through the rmaps.
 * Each vCPU writes through its own alias of the data slot (two gvas map the
 * same gpa), so with guest 4K pages a gfn has two SPTEs under shadow paging
 * and write-protecting one of them is not enough (the 2M leaves of both
 * aliases share one direct shadow page, as in KVM).  Under TDP the guest
 * tables only add a walk.
 *
 *  - dirty_paging_verifier_{get,manual,ring}: two vCPU threads write random
 *    pages while the main thread harvests in a loop and proves from the
 *    values in memory that no write was missed, with test_dirty.c's
 *    verifier (dv_round() in dirty_verify.c).  Every stored value also names
 *    its page, so a write through a wrong translation is caught too.  Guest
 *    configurations: 4-level and PAE, 4K and 2M guest pages.  Asserted on the
 *    side: under shadow paging the fast page fault never fixes anything (it
 *    must not run on indirect shadow pages: seed 002's ABA race), yet every
 *    report is backed by a (slow) fault; under TDP it does, unless
 *    VMMU_VM_NO_FAST_PF.  vmmu_audit runs during the run and after it.
 *  - no_write_through_stale_translation_paging: seed 002's race made
 *    deterministic with a barrier: after a harvest returned, the next store
 *    to a page it reported must fault (or at least miss the TLB) and be in
 *    the next report.
 *
 * Bounded in time: about 5 s in the plain build on 2 CPUs, 2-3 s of CPU
 * under sanitizers (smaller slot, shorter runs, fewer configurations).
 * VMMU_DIRTY_PAGING_MB (data slot, default 64, 8 under sanitizers) and
 * VMMU_DIRTY_PAGING_SECONDS (time per verifier run) scale it up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>

#include "dirty_verify.h"
#include "guest.h"
#include "harness.h"

#define MB (1ULL << 20)
#define PAGE 4096ULL
#define NVCPUS DV_VCPUS	/* the verifier's writers */

/*
 * Guest-physical layout: the guest page tables in a slot of their own (never
 * logged), below the data slot.  Both below 4 GiB, for PAE's CR3.
 */
#define PT_SLOT 0u
#define PT_GPA (4 * MB)
#define PT_SIZE (4 * MB)	/* two aliases of 512 MiB in 4K pages, with room */
#define DATA_SLOT 1u
#define DATA_GPA (256 * MB)	/* 2M aligned, for guest and host 2M pages */
#define DATA_MAX_MB 512		/* an alias must fit in 1 GiB of gva */

/*
 * A guest address space: paging mode, guest leaf size, and per vCPU the gva
 * of the alias of the data slot that vCPU writes through.  The gvas differ
 * from the gpa in every level's index, and the two aliases sit in different
 * PDPT entries (different shadow page tables all the way up).
 */
struct gcfg {
	const char *name;
	enum guest_mode mode;
	uint64_t leaf;
	uint64_t gva[NVCPUS];
};

#define GVA_4L_0 0x00007f0040600000ULL
#define GVA_4L_1 0x00007f0080600000ULL
#define GVA_PAE_0 0x80600000ULL
#define GVA_PAE_1 0x40600000ULL

static const struct gcfg gcfgs[] = {
	{ "4level-4k", GUEST_MODE_4LEVEL, GUEST_PAGE_4K, { GVA_4L_0, GVA_4L_1 } },
	{ "4level-2m", GUEST_MODE_4LEVEL, GUEST_PAGE_2M, { GVA_4L_0, GVA_4L_1 } },
	{ "pae-4k", GUEST_MODE_PAE, GUEST_PAGE_4K, { GVA_PAE_0, GVA_PAE_1 } },
	{ "pae-2m", GUEST_MODE_PAE, GUEST_PAGE_2M, { GVA_PAE_0, GVA_PAE_1 } },
};
#define NR_GCFGS (sizeof(gcfgs) / sizeof(gcfgs[0]))

/* How the log is harvested. */
enum hmode {
	HM_GET,		/* vmmu_get_dirty_log clears and write-protects */
	HM_MANUAL,	/* VMMU_VM_MANUAL_PROTECT: get, then clear in chunks */
	HM_RING,	/* dirty rings: collect, mark HARVESTED, reset */
};
static const char *const hm_names[] = { "get", "manual", "ring" };

/* ---- the VM: a page-table slot, a data slot, two paging vCPUs ---------------- */

struct pvm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[NVCPUS];
	struct guest_pt *pt;
	const struct mmu_variant *var;
	const struct gcfg *g;
	struct vmmu_memslot ms;
	uint8_t *hva;
	uint64_t npages, words;
	uint32_t flags;			/* the VM's flags */
	enum hmode hm;
	bool shadow;
	/* rings (HM_RING): the main thread's read position in each */
	struct vmmu_dirty_gfn *ring[NVCPUS];
	uint32_t ring_size, ring_head[NVCPUS];
	_Atomic uint64_t resets;	/* ring resets done: what a vCPU whose ring is full waits for */
	char why[256];			/* what harvest() found wrong */
};

static uint64_t gva_of(const struct pvm *p, unsigned int id, uint64_t page)
{
	return p->g->gva[id] + page * PAGE + id * 8;
}

/*
 * ring_size: entries per vCPU with HM_RING.  Logging is off when this
 * returns; the slot is populated by pvm_populate().
 */
static void pvm_create(struct pvm *p, const struct mmu_variant *var, const struct gcfg *g, enum hmode hm,
		       uint32_t extra_flags, uint64_t npages, uint64_t host_page, uint32_t ring_size)
{
	struct vmmu_memslot pts = { .slot = PT_SLOT, .gpa = PT_GPA, .size = PT_SIZE };
	struct vmmu_vm_config cfg;
	struct vmmu_cpu_state s;

	memset(p, 0, sizeof(*p));
	p->var = var;
	p->g = g;
	p->hm = hm;
	p->npages = npages;
	p->words = (npages + 63) / 64;
	p->shadow = var->mmu == VMMU_MMU_SHADOW;
	variant_config(var, &cfg);
	cfg.flags |= extra_flags | (hm == HM_MANUAL ? VMMU_VM_MANUAL_PROTECT : 0);
	if (hm == HM_RING)
		cfg.dirty_ring_size = ring_size;
	p->flags = cfg.flags;
	ASSERT_OK(vmmu_vm_create(&cfg, &p->vm));
	ASSERT_OK(vmmu_set_memslot(p->vm, &pts));
	p->ms = (struct vmmu_memslot){ .slot = DATA_SLOT, .gpa = DATA_GPA, .size = npages * PAGE,
				       .host_page_size = host_page };
	ASSERT_OK(vmmu_set_memslot(p->vm, &p->ms));
	ASSERT_OK(vmmu_memslot_hva(p->vm, DATA_SLOT, (void **)&p->hva));
	for (unsigned int i = 0; i < NVCPUS; i++)
		ASSERT_OK(vmmu_vcpu_create(p->vm, i, &p->vcpu[i]));

	/* The tables are written by guest stores (vCPU 0), as a kernel would. */
	ASSERT_OK(guest_pt_create(p->vm, g->mode, PT_GPA, PT_SIZE, &p->pt));
	guest_pt_set_vcpu(p->pt, p->vcpu[0]);
	for (unsigned int i = 0; i < NVCPUS; i++)
		ASSERT_OK(guest_map(p->pt, g->gva[i], DATA_GPA, npages * PAGE, g->leaf, GUEST_W));
	guest_pt_state(p->pt, &s, 0);
	for (unsigned int i = 0; i < NVCPUS; i++)
		ASSERT_OK(vmmu_vcpu_set_state(p->vcpu[i], &s));

	if (hm == HM_RING) {
		for (unsigned int i = 0; i < NVCPUS; i++) {
			uint32_t size;

			ASSERT_OK(vmmu_vcpu_dirty_ring(p->vcpu[i], &p->ring[i], &size));
			ASSERT_EQ(size, ring_size);
			p->ring_size = size;
		}
	}
}

static void pvm_set_logging(struct pvm *p, bool on)
{
	p->ms.flags = on ? VMMU_MEM_LOG_DIRTY_PAGES : 0;
	ASSERT_OK(vmmu_set_memslot(p->vm, &p->ms));
}

/* One guest write that must complete; main thread only (ASSERT). */
static void gput(struct pvm *p, unsigned int id, uint64_t gva, uint64_t val)
{
	struct vmmu_exit x;
	int r = vmmu_vcpu_access(p->vcpu[id], gva, &val, 8, VMMU_ACCESS_WRITE, &x);

	if (r)
		test_fail(__FILE__, __LINE__, "[%s %s] vCPU %u write of gva %#llx: %d (%s), exit %u", p->var->name,
			  p->g->name, id, (unsigned long long)gva, r, vmmu_strerror(r), r == VMMU_EXIT ? x.reason : 0);
}

/*
 * Every page mapped writable through both aliases before logging starts:
 * guest A/D bits set, shadow pages (or TDP tables, 2M ones with 2M host
 * pages) built, so enabling the log has SPTEs to write-protect, two per gfn
 * under shadow paging.  Zero stores: "never written" for the verifier.
 */
static void pvm_populate(struct pvm *p)
{
	for (uint64_t pg = 0; pg < p->npages; pg++)
		for (unsigned int i = 0; i < NVCPUS; i++)
			gput(p, i, gva_of(p, i, pg), 0);
}

static void pvm_destroy(struct pvm *p)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(p->vm, &why))
		test_fail(__FILE__, __LINE__, "[%s %s %s] VM bugged: %s", p->var->name, p->g->name, hm_names[p->hm],
			  why ? why : "?");
	ASSERT_AUDIT(p->vm);
	guest_pt_destroy(p->pt);
	vmmu_vm_destroy(p->vm);
	p->vm = NULL;
}

static struct vmmu_vcpu_stats vcpu_stats(struct pvm *p, unsigned int id)
{
	struct vmmu_vcpu_stats s;

	vmmu_vcpu_get_stats(p->vcpu[id], &s);
	return s;
}

static struct vmmu_vcpu_stats vcpu_sum(struct pvm *p)
{
	return vcpu_fault_sum(p->vcpu, NVCPUS);
}

/*
 * Dirty rings: take every published entry of every vCPU into bm (in ring
 * order, as KVM's protocol wants), mark them HARVESTED, reset.  The reset
 * write-protects the harvested pages and flushes TLBs before it returns, so
 * collect + reset is the ring-mode equivalent of a clearing get.
 */
static int ring_harvest(struct pvm *p, uint64_t *bm)
{
	uint64_t n = 0;
	int r;

	memset(bm, 0, p->words * sizeof(uint64_t));
	for (unsigned int i = 0; i < NVCPUS; i++) {
		for (;;) {
			struct vmmu_dirty_gfn *e = &p->ring[i][p->ring_head[i] & (p->ring_size - 1)];

			if (__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) != VMMU_DIRTY_GFN_DIRTY)
				break;
			if (e->slot != DATA_SLOT || e->offset >= p->npages) {
				snprintf(p->why, sizeof(p->why),
					 "ring of vCPU %u, entry %u: slot %u offset %llu (want slot %u, offset < %llu)", i,
					 p->ring_head[i], e->slot, (unsigned long long)e->offset, DATA_SLOT,
					 (unsigned long long)p->npages);
				return VMMU_EIO;
			}
			bm[e->offset / 64] |= 1ULL << (e->offset % 64);
			__atomic_store_n(&e->flags, VMMU_DIRTY_GFN_HARVESTED, __ATOMIC_RELEASE);
			p->ring_head[i]++;
			n++;
		}
	}
	r = vmmu_reset_dirty_rings(p->vm);
	if (r < 0)
		return r;
	/* Nobody else harvests: the reset frees exactly what was taken. */
	if ((uint64_t)r != n) {
		snprintf(p->why, sizeof(p->why), "vmmu_reset_dirty_rings reset %d entries, %llu were harvested", r,
			 (unsigned long long)n);
		return VMMU_EIO;
	}
	atomic_fetch_add(&p->resets, 1);
	return 0;
}

/*
 * One harvest into bm, in the VM's mode: rings, or dirty_get_clear() with
 * manual clears in chunks of up to 64 words when rng is given.  Safe with
 * threads running (no ASSERT); errors are VMMU_E* codes, VMMU_EIO with
 * p->why for a bad ring entry.
 */
static int harvest(struct pvm *p, uint64_t *bm, uint64_t *rng)
{
	if (p->hm == HM_RING)
		return ring_harvest(p, bm);
	return dirty_get_clear(p->vm, DATA_SLOT, p->npages, p->hm == HM_MANUAL, bm, rng, 64);
}

/* ==== the verifier ============================================================ */

#define DP_MIN_ROUNDS (UNDER_SANITIZER ? 10 : 20)
#define DP_MAX_ROUNDS 1000000
#define DP_MIN_WRITES (UNDER_SANITIZER ? 300 : 1000)	/* per vCPU: rounds go on until both wrote that much */
#define DP_AUDIT_EVERY 16	/* rounds between audits while the vCPUs write */

struct dp_cfg {
	const struct gcfg *g;
	enum hmode hm;
	uint32_t flags;		/* extra VM flags: NO_FAST_PF */
	uint64_t npages;
	uint64_t shared;	/* pages [0, shared) are written by both vCPUs, the rest split between them */
	uint32_t ring_size;
	bool expect_full;	/* HM_RING: the vCPUs dirty more distinct pages than a ring holds */
	double seconds;
};

struct dp {
	struct pvm m;
	const struct dp_cfg *cfg;
	struct dv_verifier v;
	_Atomic uint64_t ring_fulls;
	uint64_t audits;
};

/*
 * A writer's store, through its vCPU's own alias of the data slot (shared
 * pages: racing faults on one gfn, through two different SPTEs under shadow
 * paging).  A full dirty ring stops the vCPU before it writes anything; it
 * waits for the harvester's next reset and retries the same write.
 */
static bool dp_write(void *ctx, unsigned int id, uint64_t page, uint64_t val)
{
	struct dp *d = ctx;
	uint64_t gva = gva_of(&d->m, id, page), gen;
	struct vmmu_exit x;
	int rc;

	for (;;) {
		/* Sampled before the access: a reset after the exit counts. */
		gen = atomic_load(&d->m.resets);
		rc = vmmu_vcpu_access(d->m.vcpu[id], gva, &val, 8, VMMU_ACCESS_WRITE, &x);
		if (rc != VMMU_EXIT || x.reason != VMMU_EXIT_DIRTY_RING_FULL || d->m.hm != HM_RING)
			break;
		if (x.u.ring_full.done) {
			fb_fail(&d->v.fb, "vCPU %u: ring-full exit after %llu bytes of an 8-byte write", id,
				(unsigned long long)x.u.ring_full.done);
			return false;
		}
		atomic_fetch_add(&d->ring_fulls, 1);
		while (atomic_load(&d->m.resets) == gen) {
			if (dv_stopped(&d->v))
				return false;
			sched_yield();
		}
	}
	if (rc)
		fb_fail(&d->v.fb, "vCPU %u: write of gva %#llx (page %llu): %d (%s), exit reason %u", id,
			(unsigned long long)gva, (unsigned long long)page, rc, vmmu_strerror(rc),
			rc == VMMU_EXIT ? x.reason : 0);
	return !rc;
}

/*
 * The verifier's harvest: harvest() in the VM's mode, manual clears in
 * random chunks.  In ring mode it is collect + reset, and the reset
 * write-protects and flushes like a clearing get, which is all dv_round()
 * asks of a harvest.
 */
static int dp_harvest(void *ctx, uint64_t *bm, uint64_t *rng)
{
	return harvest(ctx, bm, rng);
}

static void dp_audit(struct dp *d)
{
	char why[256];

	d->audits++;
	if (vmmu_audit(d->m.vm, why, sizeof(why)))
		fb_fail(&d->v.fb, "vmmu_audit after harvest %llu: %s", (unsigned long long)d->v.rounds, why);
}

/*
 * In ring mode, once per run the harvester stops until a vCPU reports a full
 * ring, so the VMMU_EXIT_DIRTY_RING_FULL path (exit, reset, retry) surely
 * runs.  Every vCPU writes more distinct pages than its ring holds (the
 * caller sizes the ring), so a full ring comes.
 */
static void dp_wait_ring_full(struct dp *d)
{
	double limit = now_s() + 10;

	while (!atomic_load(&d->ring_fulls) && !dv_stopped(&d->v)) {
		if (now_s() > limit) {
			fb_fail(&d->v.fb, "no vCPU filled its dirty ring in 10 s without a harvest");
			return;
		}
		sleep_us(200);
	}
}

/* The main thread can do its rounds before the vCPU threads ran at all
 * (2 CPUs): the run is not over before both wrote DP_MIN_WRITES times. */
static bool dp_wrote_enough(struct dp *d)
{
	for (unsigned int v = 0; v < NVCPUS; v++)
		if (atomic_load_explicit(&d->v.prog[v].done, memory_order_relaxed) < DP_MIN_WRITES)
			return false;
	return true;
}

static void dp_run(const struct mmu_variant *var, const struct dp_cfg *cfg)
{
	struct dp *d = calloc(1, sizeof(*d));
	struct dv_verifier *v;
	struct vmmu_vcpu_stats vs0, vs;
	struct vmmu_vm_stats ms;
	const char *label;
	char tag[128], sum[400];
	uint64_t host_page = cfg->g->leaf;
	double end;
	bool waited_full = false;

	ASSERT_TRUE(d != NULL);
	d->cfg = cfg;
	v = &d->v;
	/* Guest 2M pages sit on 2M host pages: TDP maps them huge until logging starts. */
	pvm_create(&d->m, var, cfg->g, cfg->hm, cfg->flags, cfg->npages, host_page, cfg->ring_size);
	snprintf(tag, sizeof(tag), "%s %s %s %s", var->name, cfg->g->name, hm_names[cfg->hm], fast_name(d->m.flags));
	label = tag;
	dv_init(v, d->m.hva, DATA_GPA, d->m.npages, cfg->shared, dp_harvest, &d->m);
	v->harvest_why = d->m.why;

	pvm_populate(&d->m);
	vs0 = vcpu_sum(&d->m);
	pvm_set_logging(&d->m, true);
	/* Round 1 only sets the baseline: the scan records what memory holds. */
	if (!dv_round(v))
		test_fail(__FILE__, __LINE__, "[%s] first harvest: %s", label, v->fb.why);
	ASSERT_AUDIT(d->m.vm);
	dv_start_writers(v, dp_write, d);

	end = now_s() + cfg->seconds;
	while (!dv_stopped(v) && (v->rounds < DP_MIN_ROUNDS || now_s() < end || !dp_wrote_enough(d)) &&
	       v->rounds < DP_MAX_ROUNDS) {
		if (!dv_round(v))
			break;
		if (!(v->rounds % DP_AUDIT_EVERY))
			dp_audit(d);
		if (cfg->hm == HM_RING && cfg->expect_full && !waited_full && v->rounds >= 4) {
			dp_wait_ring_full(d);
			waited_full = true;
			continue;
		}
		dv_pause(v);
	}
	dv_stop_writers(v);
	dv_finish(v);
	if (!atomic_load(&v->fb.n))
		dp_audit(d);
	if (atomic_load(&v->fb.n))
		test_fail(__FILE__, __LINE__, "[%s] %s", label, v->fb.why);

	vs = vcpu_sum(&d->m);
	vmmu_vm_get_stats(d->m.vm, &ms);
	dv_summary(v, sum, sizeof(sum));
	fprintf(stderr,
		"    [%s] %s; ring fulls %llu; pf taken %llu, fast fixed %llu failed %llu; audits %llu; 4k %llu 2m %llu "
		"shadow pages %llu\n",
		label, sum, (unsigned long long)atomic_load(&d->ring_fulls),
		(unsigned long long)(vs.pf_taken - vs0.pf_taken),
		(unsigned long long)(vs.pf_fast_fixed - vs0.pf_fast_fixed),
		(unsigned long long)(vs.pf_fast_failed - vs0.pf_fast_failed), (unsigned long long)d->audits,
		(unsigned long long)ms.pages_4k, (unsigned long long)ms.pages_2m, (unsigned long long)ms.shadow_pages);
	ASSERT_GT(v->changed, 0);
	ASSERT_GT(v->reported_logged, 0);
	/* Every report needs a fault that made the page writable since the
	 * last harvest (rings: every entry), so the faults outnumber them. */
	ASSERT_GE(vs.pf_taken - vs0.pf_taken, v->reported_logged);
	if (d->m.shadow) {
		/* Indirect shadow pages (and direct ones under a paging root) are
		 * never fixed locklessly: all of the above were slow faults. */
		ASSERT_EQ(vs.pf_fast_fixed, 0);
		ASSERT_EQ(vs.pf_fast_spurious, 0);
	} else if (d->m.flags & VMMU_VM_NO_FAST_PF) {
		ASSERT_EQ(vs.pf_fast_fixed, 0);
	} else {
		/* Write-protected-for-logging pages are rewritten all the time. */
		ASSERT_GT(vs.pf_fast_fixed - vs0.pf_fast_fixed, 0);
	}
	if (cfg->hm == HM_RING && cfg->expect_full)
		ASSERT_GT(atomic_load(&d->ring_fulls), 0);
	/* Logging maps at 4K: TDP's huge mappings were split by the writes. */
	if (!d->m.shadow && host_page > PAGE)
		ASSERT_LT(ms.pages_2m, d->m.npages * PAGE / host_page);
	dv_fini(v);
	pvm_destroy(&d->m);
	free(d);
}

static uint64_t dp_npages(void)
{
	double mb = env_num("VMMU_DIRTY_PAGING_MB", UNDER_SANITIZER ? 8 : 64, 2, DATA_MAX_MB);

	/* Whole 2M pages, for the guest-2M configurations. */
	return (((uint64_t)mb * MB) / PAGE) & ~511ULL;
}

static double dp_seconds(void)
{
	return env_num("VMMU_DIRTY_PAGING_SECONDS", UNDER_SANITIZER ? 0.02 : 0.12, 0.001, 600);
}

/* Distinct pages one vCPU writes: its own ones and the shared ones. */
static uint64_t dp_distinct(uint64_t npages, uint64_t shared)
{
	return (npages - shared) / NVCPUS + shared;
}

/*
 * The ring size: 4096 entries (KVM's usual), unless a vCPU cannot dirty
 * enough distinct pages to fill it (small slots, sanitizer builds): then the
 * minimum, 1024.
 */
static uint32_t dp_ring_size(uint64_t npages, uint64_t shared)
{
	return dp_distinct(npages, shared) >= 2 * 4096 ? 4096 : 1024;
}

/*
 * Shadow paging, the one whose logging goes through indirect shadow pages
 * and rmaps, runs every guest configuration; a TDP variant (for which the
 * guest tables only add a walk) runs one per harvest mode, rotating: three
 * of the four configurations per variant, and every configuration in every
 * mode on some TDP variant, in a bounded run time.  The fast page fault stays on
 * except in the PAE 2M configuration, which runs with VMMU_VM_NO_FAST_PF
 * (TDP's slow path under logging; nothing changes under shadow paging).
 */
static void dp_all(enum hmode hm)
{
	unsigned int vi = 0;

	for_each_mmu_variant(var) {
		for (unsigned int g = 0; g < NR_GCFGS; g++) {
			struct dp_cfg cfg = {
				.g = &gcfgs[g],
				.hm = hm,
				.flags = g == 3 ? VMMU_VM_NO_FAST_PF : 0,
				.npages = dp_npages(),
				.shared = 256,
				.seconds = dp_seconds(),
			};

			if (var->mmu == VMMU_MMU_TDP && g != (vi + (unsigned int)hm) % NR_GCFGS)
				continue;
			/* Under sanitizers shadow paging runs half of them: 4K and
			 * 2M pages alternating with the mode. */
			if (UNDER_SANITIZER && var->mmu != VMMU_MMU_TDP && g % 2 != (unsigned int)hm % 2)
				continue;
			cfg.ring_size = dp_ring_size(cfg.npages, cfg.shared);
			cfg.expect_full = dp_distinct(cfg.npages, cfg.shared) >= cfg.ring_size;
			dp_run(var, &cfg);
		}
		vi++;
	}
}

TEST(dirty_paging_verifier_get)
{
	dp_all(HM_GET);
}

TEST(dirty_paging_verifier_manual)
{
	dp_all(HM_MANUAL);
}

TEST(dirty_paging_verifier_ring)
{
	dp_all(HM_RING);
}

/* ==== seed 002's race, deterministically =========================================
 *
 * vCPU threads A (vCPU 0) and B (vCPU 1) and the main thread move in lockstep
 * through a barrier.  Per iteration, with X a random page:
 *   1. A and B both store to X, each through its own alias: both TLBs (and,
 *      under shadow paging, two SPTEs of X's gfn) hold writable translations.
 *   2. The main thread harvests: X is reported (both stores completed before
 *      the harvest began), and the harvest write-protected X and flushed.
 *   3. One of them (A on even iterations, B on odd ones) stores to X again:
 *      it must fault (pf_taken grows): a store through the writable
 *      translation of step 1 would not.
 *   4. The other stores to X: it must at least miss its TLB (tlb_misses
 *      grows; it may find X writable again, by step 3's fault).
 *   5. The main thread harvests: X is reported again, and memory holds both
 *      step 3/4 values.
 * Under shadow paging, with paging on, the faults of step 3 are slow ones.
 */
enum { ST_ITERS = 48, ST_ITERS_SAN = 12 };

struct st {
	struct pvm m;
	pthread_barrier_t bar;
	uint64_t page;		/* X: written by main before barrier 0 */
	uint64_t it;		/* the iteration: likewise */
	bool stop;		/* likewise */
	int err[NVCPUS];	/* a writer's failed access (read after a barrier) */
	uint64_t err_gva[NVCPUS];
};

struct st_arg {
	struct st *s;
	unsigned int id;
};

static void st_write(struct st *s, unsigned int id, uint64_t seq)
{
	struct vmmu_exit x;
	uint64_t gva = gva_of(&s->m, id, s->page), val = dv_value(seq, s->page, id);
	int rc = vmmu_vcpu_access(s->m.vcpu[id], gva, &val, 8, VMMU_ACCESS_WRITE, &x);

	if (rc && !s->err[id]) {
		s->err[id] = rc == VMMU_EXIT ? 1000 + (int)x.reason : rc;
		s->err_gva[id] = gva;
	}
}

/*
 * The writers look at stop right after barrier 0 only: the main thread sets
 * it later in an iteration (after barrier 1 has made sure both writers read
 * it for this one), then finishes the iteration's barriers and meets them
 * at barrier 0 of the next one.
 */
static void *st_writer(void *arg)
{
	struct st_arg *a = arg;
	struct st *s = a->s;

	for (;;) {
		unsigned int first;

		pthread_barrier_wait(&s->bar);	/* 0: X chosen */
		if (s->stop)
			return NULL;
		first = s->it & 1;
		st_write(s, a->id, 2 * s->it + 1);	/* step 1 */
		pthread_barrier_wait(&s->bar);	/* 1: main harvests */
		pthread_barrier_wait(&s->bar);	/* 2: the harvest returned */
		if (a->id == first)
			st_write(s, a->id, 2 * s->it + 2);	/* step 3 */
		pthread_barrier_wait(&s->bar);	/* 3: main checks the fault */
		pthread_barrier_wait(&s->bar);	/* 4 */
		if (a->id != first)
			st_write(s, a->id, 2 * s->it + 2);	/* step 4 */
		pthread_barrier_wait(&s->bar);	/* 5: main checks and harvests */
	}
}

#define ST_BARRIERS 6	/* per iteration */

static void st_check_err(struct st *s, const char *label, uint64_t it, const char *step)
{
	for (unsigned int i = 0; i < NVCPUS; i++)
		if (s->err[i])
			test_fail(__FILE__, __LINE__, "[%s] iteration %llu, %s: vCPU %u write of gva %#llx failed: %d",
				  label, (unsigned long long)it, step, i, (unsigned long long)s->err_gva[i], s->err[i]);
}

static void run_no_stale(const struct mmu_variant *var, const struct gcfg *g, enum hmode hm, uint64_t npages)
{
	struct st *s = calloc(1, sizeof(*s));
	struct st_arg args[NVCPUS];
	pthread_t t[NVCPUS];
	uint64_t *bm, rng = 0x5eed002, iters = UNDER_SANITIZER ? ST_ITERS_SAN : ST_ITERS;
	struct vmmu_vcpu_stats s0, s1, st_first0, st_second0, st_first1, st_second1;
	char label[128];

	ASSERT_TRUE(s != NULL);
	pvm_create(&s->m, var, g, hm, 0, npages, PAGE, 1024);
	snprintf(label, sizeof(label), "%s %s %s", var->name, g->name, hm_names[hm]);
	bm = calloc(s->m.words, sizeof(uint64_t));
	ASSERT_TRUE(bm != NULL);
	pvm_populate(&s->m);
	pvm_set_logging(&s->m, true);
	ASSERT_OK(harvest(&s->m, bm, NULL));
	s0 = vcpu_sum(&s->m);
	ASSERT_EQ(pthread_barrier_init(&s->bar, NULL, NVCPUS + 1), 0);
	for (unsigned int i = 0; i < NVCPUS; i++) {
		args[i] = (struct st_arg){ s, i };
		ASSERT_EQ(pthread_create(&t[i], NULL, st_writer, &args[i]), 0);
	}

	/* A failed check stops the writers before test_fail() leaves. */
#define ST_FAIL(...)                                                              \
	do {                                                                      \
		char msg_[400];                                                   \
		snprintf(msg_, sizeof(msg_), __VA_ARGS__);                        \
		s->stop = true;                                                   \
		while (phase < ST_BARRIERS)                                       \
			ST_SYNC();                                                \
		pthread_barrier_wait(&s->bar);                                    \
		for (unsigned int i_ = 0; i_ < NVCPUS; i_++)                      \
			pthread_join(t[i_], NULL);                                \
		test_fail(__FILE__, __LINE__, "[%s] %s", label, msg_);            \
	} while (0)
#define ST_SYNC() (pthread_barrier_wait(&s->bar), phase++)

	for (uint64_t it = 0; it < iters; it++) {
		unsigned int first = it & 1, second = !first;
		uint64_t x = xorshift(&rng) % npages, want = 2 * it + 2;
		unsigned int phase = 0;
		int r;

		s->page = x;
		s->it = it;
		ST_SYNC();	/* 0 */
		ST_SYNC();	/* 1: step 1 done */
		for (unsigned int i = 0; i < NVCPUS; i++)
			if (s->err[i])
				ST_FAIL("iteration %llu, step 1: vCPU %u write of gva %#llx failed: %d",
					(unsigned long long)it, i, (unsigned long long)s->err_gva[i], s->err[i]);
		r = harvest(&s->m, bm, &rng);
		if (r)
			ST_FAIL("iteration %llu: first harvest: %d (%s) %s", (unsigned long long)it, r, vmmu_strerror(r),
				s->m.why);
		if (!bm_test(bm, x))
			ST_FAIL("iteration %llu: page %llu written by both vCPUs before the harvest began, not reported",
				(unsigned long long)it, (unsigned long long)x);
		st_first0 = vcpu_stats(&s->m, first);
		st_second0 = vcpu_stats(&s->m, second);
		ST_SYNC();	/* 2 */
		ST_SYNC();	/* 3: step 3 done */
		st_first1 = vcpu_stats(&s->m, first);
		if (s->err[first])
			ST_FAIL("iteration %llu, step 3: vCPU %u write failed: %d", (unsigned long long)it, first,
				s->err[first]);
		if (st_first1.pf_taken == st_first0.pf_taken)
			ST_FAIL("iteration %llu: vCPU %u stored to page %llu (gva %#llx) after the harvest that reported "
				"it returned, without a fault (tlb hits %llu -> %llu): a write through a writable "
				"translation from before the harvest",
				(unsigned long long)it, first, (unsigned long long)x,
				(unsigned long long)gva_of(&s->m, first, x), (unsigned long long)st_first0.tlb_hits,
				(unsigned long long)st_first1.tlb_hits);
		ST_SYNC();	/* 4 */
		ST_SYNC();	/* 5: step 4 done */
		st_second1 = vcpu_stats(&s->m, second);
		if (s->err[second])
			ST_FAIL("iteration %llu, step 4: vCPU %u write failed: %d", (unsigned long long)it, second,
				s->err[second]);
		if (st_second1.tlb_misses == st_second0.tlb_misses)
			ST_FAIL("iteration %llu: vCPU %u stored to page %llu (gva %#llx) after the harvest that reported "
				"it returned, without a TLB miss: its TLB kept a translation from before the harvest",
				(unsigned long long)it, second, (unsigned long long)x,
				(unsigned long long)gva_of(&s->m, second, x));
		for (unsigned int i = 0; i < NVCPUS; i++) {
			uint64_t w = ld64(s->m.hva + x * PAGE + i * 8);

			if (w != dv_value(want, x, i))
				ST_FAIL("iteration %llu: page %llu word %u holds %#llx, vCPU %u stored %#llx",
					(unsigned long long)it, (unsigned long long)x, i, (unsigned long long)w, i,
					(unsigned long long)dv_value(want, x, i));
		}
		r = harvest(&s->m, bm, &rng);
		if (r)
			ST_FAIL("iteration %llu: second harvest: %d (%s) %s", (unsigned long long)it, r,
				vmmu_strerror(r), s->m.why);
		if (!bm_test(bm, x))
			ST_FAIL("MISS: iteration %llu: page %llu (gpa %#llx) stored to by vCPU %u (faulted) and vCPU %u "
				"after the previous harvest returned, not reported by this one",
				(unsigned long long)it, (unsigned long long)x, (unsigned long long)(DATA_GPA + x * PAGE),
				first, second);
		if (!(it % 16)) {
			char why[256];

			if (vmmu_audit(s->m.vm, why, sizeof(why)))
				ST_FAIL("iteration %llu: vmmu_audit: %s", (unsigned long long)it, why);
		}
	}
	s->stop = true;
	pthread_barrier_wait(&s->bar);
	for (unsigned int i = 0; i < NVCPUS; i++)
		pthread_join(t[i], NULL);
#undef ST_FAIL
#undef ST_SYNC
	st_check_err(s, label, iters, "end");
	s1 = vcpu_sum(&s->m);
	fprintf(stderr, "    [%s] %llu iterations: pf taken %llu, fast fixed %llu, slow fixed %llu\n", label,
		(unsigned long long)iters, (unsigned long long)(s1.pf_taken - s0.pf_taken),
		(unsigned long long)(s1.pf_fast_fixed - s0.pf_fast_fixed),
		(unsigned long long)((s1.pf_fixed - s0.pf_fixed) - (s1.pf_fast_fixed - s0.pf_fast_fixed)));
	if (s->m.shadow)
		ASSERT_EQ(s1.pf_fast_fixed, 0);
	else
		ASSERT_GT(s1.pf_fast_fixed - s0.pf_fast_fixed, 0);
	pthread_barrier_destroy(&s->bar);
	free(bm);
	pvm_destroy(&s->m);
	free(s);
}

/*
 * Shadow paging in both configurations and every mode; a TDP variant in one
 * configuration per mode, alternating (the race is shadow paging's concern
 * here, TDP keeps the test honest), and under sanitizers in one mode only.
 */
TEST(no_write_through_stale_translation_paging)
{
	unsigned int vi = 0;

	for_each_mmu_variant(var) {
		for (enum hmode hm = HM_GET; hm <= HM_RING; hm++) {
			for (unsigned int g = 0; g < NR_GCFGS; g += 3) {
				if (var->mmu == VMMU_MMU_TDP && (g != 3 * ((vi + (unsigned int)hm) % 2) ||
								   (UNDER_SANITIZER && (unsigned int)hm != vi % 3)))
					continue;
				/* Two guest 2M pages (one under sanitizers); X anywhere. */
				run_no_stale(var, &gcfgs[g], hm, UNDER_SANITIZER ? 512 : 1024);
			}
		}
		vi++;
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
