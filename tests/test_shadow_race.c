/* SPDX-License-Identifier: MIT */
/*
 * Guest page-table updates racing host-side zaps (issue 16: under shadow
 * paging a write landed in a page's previous frame).
 *
 *  - retarget_stress: vCPU threads in 4-level paging (CR0.WP, no PCIDE, no
 *    global pages) repeatedly retarget one of their own PTEs with an 8-byte
 *    physical store into the guest page table, invalidate (INVLPG, or a
 *    flushing MOV CR3 to the same CR3), write 8 bytes through the gva and
 *    read them back, and check against the host's view of the frame the PTE
 *    now names.  A host thread meanwhile toggles dirty logging on the slot
 *    holding the page tables, zaps their gfns, zaps everything, and harvests
 *    that slot's dirty log.  After the PTE store and the invalidation the
 *    architecture allows no other translation (SDM 4.10.4.1), so every
 *    round is exact.  Every MMU variant (TDP must be as clean), 1 and 2
 *    vCPUs; VMMU_RACE_SECONDS sets the time per case (default 2).
 *  - zap_unaccount_window: forces the interleaving that broke: zap-all is
 *    stopped (a test hook inside the library) at the moment the write-track
 *    count of the page-table gfn drops, and the vCPU does its round then.
 *    While the count is zero the guest's store is a plain copy, so nothing
 *    of the old translation may still be reachable by then.
 *  - phys_store_first_shadow: the second window: a physical store to a
 *    guest page table nobody shadows yet, stopped just before its bytes
 *    land, while another vCPU shadows that table from the old entry.  The
 *    store must still reach the shadow (KVM writes first, then tracks).
 *  - retarget_invpcid / retarget_pcid_switch: the siblings with INVPCID
 *    type 0 and with PCIDs (a flushing switch back to a PCID).
 *  - walked_huge_window: a fault that walked a 2M guest PDE is stopped
 *    (test hook) while another vCPU repoints the PDE; after the fault goes
 *    on and INVLPG, a write must reach the new frame.  The shadow of a
 *    guest huge page is a direct page found again by (frame, rights): a
 *    walk that no longer holds must not link it.
 *  - slot_create_audit_window: a slot appears over a shadow root built while
 *    its gfn was outside RAM; an audit started while the creation is
 *    stopped (test hook) between publishing the slot and dropping that
 *    root must wait for the creation, not report the untracked root (the
 *    threaded fuzzer's find: "write-track count 0, 1 indirect shadow
 *    pages").
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "guest.h"
#include "harness.h"
#include "race_window.h"

#define MB (1ULL << 20)
#define PAGE 4096ULL

/* Guest-physical layout: data frames in slot 0, page tables in slot 1. */
#define DATA_BASE 0ULL
#define DATA_SIZE (16 * MB)
#define PT_SLOT 1
#define PT_BASE (32 * MB)
#define PT_SIZE (2 * MB)
#define PT_POOL_PER_VCPU (256 * 1024ULL)
#define NPAGES 16			/* gvas per vCPU, two frames each */
#define GVA_BASE 0x7f0000000000ULL	/* per vCPU: + id << 30 */
#define MAX_VCPUS 2

static void add_slot(vmmu_vm *vm, uint32_t id, uint64_t gpa, uint64_t size, uint32_t flags)
{
	struct vmmu_memslot s = { .slot = id, .flags = flags, .gpa = gpa, .size = size };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

static uint64_t host_rd64(vmmu_vm *vm, uint64_t gpa)
{
	void *h;

	if (vmmu_gpa_to_hva(vm, gpa, &h))
		return 0xbad0bad0bad0bad0ULL;
	return __atomic_load_n((uint64_t *)h, __ATOMIC_ACQUIRE);
}

/* ---- the guest side: one vCPU retargeting its PTEs --------------------------------- */

enum inval_kind { INVAL_INVLPG, INVAL_CR3, INVAL_INVPCID, INVAL_PCID_SWITCH, INVAL_MIX };

struct rvcpu {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	struct guest_pt *pt;	/* this vCPU's own address space */
	struct guest_pt *pt2;	/* INVAL_PCID_SWITCH: a second one, PCID 2 */
	unsigned int id;
	enum inval_kind inval;
	uint64_t cr3;
	uint64_t cur[NPAGES];	/* frame gpa each PTE names now */
	uint64_t pte_gpa[NPAGES];
	uint64_t seq, rng;
	uint64_t rounds, wrong_frame, lost;
	struct failbox *fb;
};

static uint64_t gva_of(const struct rvcpu *r, unsigned int i)
{
	return GVA_BASE + ((uint64_t)r->id << 30) + (uint64_t)i * PAGE;
}

/* Two frames per page: A at an even slot, B right after it. */
static uint64_t frame_of(const struct rvcpu *r, unsigned int i, int which)
{
	return DATA_BASE + (((uint64_t)r->id * NPAGES + i) * 2 + (uint64_t)which) * PAGE;
}

static int acc8(vmmu_vcpu *v, uint64_t addr, uint64_t *val, unsigned int type, struct vmmu_exit *x)
{
	memset(x, 0, sizeof(*x));
	return vmmu_vcpu_access(v, addr, val, 8, type, x);
}

static void rvcpu_setup(struct rvcpu *r, vmmu_vm *vm, vmmu_vcpu *v, unsigned int id, enum inval_kind inval,
			struct failbox *fb)
{
	struct vmmu_cpu_state s;
	uint64_t pool = PT_BASE + (uint64_t)id * PT_POOL_PER_VCPU;

	memset(r, 0, sizeof(*r));
	r->vm = vm;
	r->vcpu = v;
	r->id = id;
	r->inval = inval;
	r->fb = fb;
	r->rng = 0x9e3779b97f4a7c15ULL * (id + 1) + 12345;
	ASSERT_OK(guest_pt_create(vm, GUEST_MODE_4LEVEL, pool, PT_POOL_PER_VCPU / 2, &r->pt));
	for (unsigned int i = 0; i < NPAGES; i++) {
		uint64_t pte;

		r->cur[i] = frame_of(r, i, 0);
		ASSERT_OK(guest_map(r->pt, gva_of(r, i), r->cur[i], PAGE, GUEST_PAGE_4K, GUEST_W | GUEST_U));
		ASSERT_OK(guest_get_entry(r->pt, gva_of(r, i), 1, &pte, &r->pte_gpa[i]));
	}
	guest_pt_set_vcpu(r->pt, v);
	guest_pt_state(r->pt, &s, 0);
	r->cr3 = guest_pt_cr3(r->pt);
	if (inval == INVAL_PCID_SWITCH || inval == INVAL_INVPCID || inval == INVAL_MIX) {
		/* PCID 1 for the address space under test; PCIDE needs PCID 0 at
		 * the moment it is turned on. */
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
		s.cr4 |= VMMU_CR4_PCIDE;
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
		r->cr3 |= 1;
		ASSERT_OK(vmmu_vcpu_write_cr3(v, r->cr3));
		if (inval == INVAL_PCID_SWITCH || inval == INVAL_MIX) {
			/* Another address space (the same leaves, its own tables)
			 * under PCID 2 to switch to and back. */
			ASSERT_OK(guest_pt_create(vm, GUEST_MODE_4LEVEL, pool + PT_POOL_PER_VCPU / 2,
						  PT_POOL_PER_VCPU / 2, &r->pt2));
			ASSERT_OK(guest_map(r->pt2, gva_of(r, 0), frame_of(r, 0, 0), PAGE, GUEST_PAGE_4K,
					    GUEST_W | GUEST_U));
		}
	} else {
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
	}
}

static void rvcpu_teardown(struct rvcpu *r)
{
	guest_pt_destroy(r->pt);
	if (r->pt2)
		guest_pt_destroy(r->pt2);
}

static int rvcpu_invalidate(struct rvcpu *r, uint64_t gva)
{
	enum inval_kind k = r->inval;

	if (k == INVAL_MIX)
		k = (enum inval_kind)(xorshift(&r->rng) % 4);
	switch (k) {
	case INVAL_INVLPG:
		vmmu_vcpu_invlpg(r->vcpu, gva);
		return 0;
	case INVAL_CR3:
		/* Same CR3, no no-flush bit: flushes this PCID's translations. */
		return vmmu_vcpu_write_cr3(r->vcpu, r->cr3);
	case INVAL_INVPCID:
		if (r->cr3 & 0xfff)
			return vmmu_vcpu_invpcid(r->vcpu, VMMU_INVPCID_ADDR, (uint32_t)(r->cr3 & 0xfff), gva);
		vmmu_vcpu_invlpg(r->vcpu, gva);
		return 0;
	case INVAL_PCID_SWITCH: {
		int rc;

		if (!r->pt2)
			return vmmu_vcpu_write_cr3(r->vcpu, r->cr3);
		/* Away with no-flush (PCID 2 keeps its entries), back flushing
		 * PCID 1: the way back is what must drop the stale entry. */
		rc = vmmu_vcpu_write_cr3(r->vcpu, guest_pt_cr3(r->pt2) | 2 | VMMU_CR3_PCID_NOFLUSH);
		return rc ? rc : vmmu_vcpu_write_cr3(r->vcpu, r->cr3);
	}
	default:
		return 0;
	}
}

/*
 * One round on page i: retarget, invalidate, write, read back, compare with
 * the host's view.  Returns 0, or -1 with the failbox filled.
 */
static int rvcpu_round(struct rvcpu *r, unsigned int i)
{
	uint64_t gva = gva_of(r, i), off = 8 * (r->seq % 64);
	uint64_t old = r->cur[i], new_frame = old == frame_of(r, i, 0) ? frame_of(r, i, 1) : frame_of(r, i, 0);
	uint64_t pte = new_frame | GUEST_PTE_P | GUEST_W | GUEST_U, tok, got = 0;
	struct vmmu_exit x;
	int rc;

	rc = acc8(r->vcpu, r->pte_gpa[i], &pte, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);
	if (rc) {
		fb_fail(r->fb, "vCPU %u: PTE store at gpa %#llx: rc %d exit %s", r->id,
			(unsigned long long)r->pte_gpa[i], rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-");
		return -1;
	}
	r->cur[i] = new_frame;
	rc = rvcpu_invalidate(r, gva);
	if (rc) {
		fb_fail(r->fb, "vCPU %u: invalidation: %s", r->id, vmmu_strerror(rc));
		return -1;
	}
	tok = ((uint64_t)r->id << 56) ^ (++r->seq * 0x9e3779b97f4a7c15ULL) ^ gva;
	rc = acc8(r->vcpu, gva + off, &tok, VMMU_ACCESS_WRITE, &x);
	if (!rc)
		rc = acc8(r->vcpu, gva + off, &got, VMMU_ACCESS_READ, &x);
	if (rc) {
		fb_fail(r->fb, "vCPU %u: access to gva %#llx: rc %d exit %s ec %#x", r->id,
			(unsigned long long)gva, rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-",
			x.u.guest_fault.error_code);
		return -1;
	}
	r->rounds++;
	if (got != tok) {
		r->lost++;
		fb_fail(r->fb, "vCPU %u round %llu: read back %#llx through gva %#llx, wrote %#llx", r->id,
			(unsigned long long)r->rounds, (unsigned long long)got, (unsigned long long)gva,
			(unsigned long long)tok);
		return -1;
	}
	if (host_rd64(r->vm, new_frame + off) != tok) {
		bool in_old = host_rd64(r->vm, old + off) == tok;

		r->wrong_frame++;
		fb_fail(r->fb,
			"vCPU %u round %llu: write through gva %#llx after the PTE store and the invalidation "
			"is not in frame %#llx the PTE names%s", r->id, (unsigned long long)r->rounds,
			(unsigned long long)gva, (unsigned long long)new_frame,
			in_old ? " but in its previous frame" : "");
		return -1;
	}
	return 0;
}

/* ---- the host side ------------------------------------------------------------------- */

struct host_ctx {
	vmmu_vm *vm;
	struct failbox *fb;
	_Atomic bool stop;
	uint64_t ops[5];
};

static void *host_thread(void *arg)
{
	struct host_ctx *h = arg;
	uint64_t rng = 0x1234567, bitmap[(PT_SIZE / PAGE + 63) / 64];
	bool logging = false;

	while (!atomic_load(&h->stop) && !fb_stopped(h->fb)) {
		unsigned int op = (unsigned int)(xorshift(&rng) % 5);
		int rc = 0;

		switch (op) {
		case 0: {
			struct vmmu_memslot s = { .slot = PT_SLOT, .gpa = PT_BASE, .size = PT_SIZE,
						  .flags = logging ? 0 : VMMU_MEM_LOG_DIRTY_PAGES };

			rc = vmmu_set_memslot(h->vm, &s);
			if (!rc)
				logging = !logging;
			break;
		}
		case 1:
			rc = vmmu_zap_gfn_range(h->vm, PT_BASE >> 12, (PT_BASE + PT_SIZE) >> 12);
			break;
		case 2:
			vmmu_zap_all(h->vm);
			break;
		case 3:
			if (logging)
				rc = vmmu_get_dirty_log(h->vm, PT_SLOT, bitmap);
			break;
		default:
			sched_yield();
			break;
		}
		if (rc) {
			fb_fail(h->fb, "host op %u: %s", op, vmmu_strerror(rc));
			break;
		}
		h->ops[op]++;
	}
	return NULL;
}

struct vcpu_thread {
	struct rvcpu r;
	double deadline;
	pthread_t t;
};

static void *vcpu_thread(void *arg)
{
	struct vcpu_thread *vt = arg;

	while (now_s() < vt->deadline && !fb_stopped(vt->r.fb)) {
		for (int k = 0; k < 64; k++)
			if (rvcpu_round(&vt->r, (unsigned int)(xorshift(&vt->r.rng) % NPAGES)))
				return NULL;
	}
	return NULL;
}

static vmmu_vm *race_vm(const struct mmu_variant *var, uint32_t extra_flags)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	cfg.flags |= extra_flags;
	cfg.max_vcpus = MAX_VCPUS;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	add_slot(vm, 0, DATA_BASE, DATA_SIZE, 0);
	add_slot(vm, PT_SLOT, PT_BASE, PT_SIZE, 0);
	return vm;
}

static void stress_case(const struct mmu_variant *var, unsigned int nvcpus, enum inval_kind inval, uint32_t flags,
			double secs)
{
	struct vcpu_thread vt[MAX_VCPUS];
	struct host_ctx h;
	struct failbox fb;
	pthread_t ht;
	vmmu_vm *vm = race_vm(var, flags);
	uint64_t rounds = 0;
	const char *why = NULL;

	memset(&fb, 0, sizeof(fb));
	memset(&h, 0, sizeof(h));
	h.vm = vm;
	h.fb = &fb;
	for (unsigned int i = 0; i < nvcpus; i++) {
		vmmu_vcpu *v;

		ASSERT_OK(vmmu_vcpu_create(vm, i, &v));
		rvcpu_setup(&vt[i].r, vm, v, i, inval, &fb);
		vt[i].deadline = now_s() + secs;
	}
	ASSERT_EQ(pthread_create(&ht, NULL, host_thread, &h), 0);
	for (unsigned int i = 0; i < nvcpus; i++)
		ASSERT_EQ(pthread_create(&vt[i].t, NULL, vcpu_thread, &vt[i]), 0);
	for (unsigned int i = 0; i < nvcpus; i++)
		pthread_join(vt[i].t, NULL);
	atomic_store(&h.stop, true);
	pthread_join(ht, NULL);
	for (unsigned int i = 0; i < nvcpus; i++) {
		rounds += vt[i].r.rounds;
		rvcpu_teardown(&vt[i].r);
	}
	fprintf(stderr, "    [%s] %u vCPU(s), inval %d: %llu rounds; host: %llu log toggles, %llu zaps, %llu zap-alls, "
		"%llu harvests\n", var->name, nvcpus, (int)inval, (unsigned long long)rounds,
		(unsigned long long)h.ops[0], (unsigned long long)h.ops[1], (unsigned long long)h.ops[2],
		(unsigned long long)h.ops[3]);
	ASSERT_FAILBOX(&fb);
	if (vmmu_vm_bugged(vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
	ASSERT_AUDIT(vm);
	ASSERT_GT(rounds, 0);
	ASSERT_GT(h.ops[2], 0);
	vmmu_vm_destroy(vm);
}

TEST(retarget_stress)
{
	double secs = race_seconds();

	for_each_mmu_variant(var) {
		/* The shadow MMU is where the window was; TDP runs shorter. */
		double t = var->mmu == VMMU_MMU_SHADOW ? secs : secs / 4;

		stress_case(var, 1, INVAL_MIX, 0, t);
		stress_case(var, 2, INVAL_MIX, 0, t);
		if (var->mmu == VMMU_MMU_SHADOW) {
			stress_case(var, 1, INVAL_INVLPG, VMMU_VM_NO_FAST_PF, t / 2);
			stress_case(var, 1, INVAL_CR3, 0, t / 2);
		}
	}
}

TEST(retarget_invpcid)
{
	for_each_mmu_variant(var)
		stress_case(var, 2, INVAL_INVPCID, 0, race_seconds() / (var->mmu == VMMU_MMU_SHADOW ? 2 : 8));
}

TEST(retarget_pcid_switch)
{
	for_each_mmu_variant(var)
		stress_case(var, 2, INVAL_PCID_SWITCH, 0, race_seconds() / (var->mmu == VMMU_MMU_SHADOW ? 2 : 8));
}

/* ---- forced interleavings --------------------------------------------------------------- */

/* The windows are forced with race_window.h's hook. */

/* The shadow-paging variant, where these windows are (SKIP without one). */
static const struct mmu_variant *shadow_variant(void)
{
	const struct mmu_variant *var = NULL;

	for (unsigned int i = 0; i < nr_mmu_variants; i++)
		if (mmu_variants[i].mmu == VMMU_MMU_SHADOW)
			var = &mmu_variants[i];
	if (!var)
		SKIP("no shadow variant");
	test_variant = var->name;
	return var;
}

static void *zap_all_thread(void *arg)
{
	vmmu_zap_all(arg);
	return NULL;
}

TEST(zap_unaccount_window)
{
	const struct mmu_variant *var;
	struct failbox fb;
	struct rvcpu r;
	vmmu_vcpu *v;
	vmmu_vm *vm;
	pthread_t t;

	var = shadow_variant();
	memset(&fb, 0, sizeof(fb));
	vm = race_vm(var, 0);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	rvcpu_setup(&r, vm, v, 0, INVAL_INVLPG, &fb);
	/* Shadow the table of page 0, warm its translation. */
	ASSERT_OK(rvcpu_round(&r, 0));
	ASSERT_OK(rvcpu_round(&r, 0));

	window_arm(VMMU_TEST_HOOK_SHADOW_UNTRACKED, r.pte_gpa[0] >> 12);
	ASSERT_EQ(pthread_create(&t, NULL, zap_all_thread, vm), 0);
	ASSERT_TRUE(window_wait_open(10));
	/* The page table's count just dropped: do the whole round now. */
	(void)rvcpu_round(&r, 0);
	window_close();
	pthread_join(t, NULL);
	window_disarm();
	ASSERT_TRUE(window_hit());
	ASSERT_FAILBOX(&fb);
	/* And once more with nothing in the way. */
	ASSERT_OK(rvcpu_round(&r, 0));
	ASSERT_FAILBOX(&fb);
	ASSERT_AUDIT(vm);
	rvcpu_teardown(&r);
	vmmu_vm_destroy(vm);
}

/* One 8-byte write by a vCPU, on a thread of its own. */
struct store_ctx {
	vmmu_vcpu *vcpu;
	uint64_t addr, val;
	unsigned int type;	/* VMMU_ACCESS_WRITE, with VMMU_ACCESS_PHYS or not */
	int rc;
};

static void *store_thread(void *arg)
{
	struct store_ctx *c = arg;
	struct vmmu_exit x;

	c->rc = acc8(c->vcpu, c->addr, &c->val, c->type, &x);
	return NULL;
}

TEST(phys_store_first_shadow)
{
	const struct mmu_variant *var;
	struct failbox fb;
	struct rvcpu r;
	struct store_ctx sc;
	vmmu_vcpu *v0, *v1;
	struct vmmu_exit x;
	vmmu_vm *vm;
	pthread_t t;
	uint64_t val = 0, tok = 0x5eed5eed5eedULL, newf;

	var = shadow_variant();
	memset(&fb, 0, sizeof(fb));
	vm = race_vm(var, 0);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v0));
	ASSERT_OK(vmmu_vcpu_create(vm, 1, &v1));
	/* vCPU 1 uses vCPU 0's address space; nothing is shadowed yet. */
	rvcpu_setup(&r, vm, v0, 0, INVAL_INVLPG, &fb);
	{
		struct vmmu_cpu_state s;

		guest_pt_state(r.pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(v1, &s));
	}
	newf = frame_of(&r, 0, 1);
	sc = (struct store_ctx){ .vcpu = v0, .addr = r.pte_gpa[0], .val = newf | GUEST_PTE_P | GUEST_W | GUEST_U,
				 .type = VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS };

	/* vCPU 0 stores the new PTE; it is stopped before the bytes land. */
	window_arm(VMMU_TEST_HOOK_PHYS_STORE, r.pte_gpa[0] >> 12);
	ASSERT_EQ(pthread_create(&t, NULL, store_thread, &sc), 0);
	ASSERT_TRUE(window_wait_open(10));
	/* Meanwhile vCPU 1 shadows the table from the old entry, by a write
	 * (so the shadow leaf is writable and nothing refaults later). */
	ASSERT_OK(acc8(v1, gva_of(&r, 0), &val, VMMU_ACCESS_WRITE, &x));
	window_close();
	pthread_join(t, NULL);
	window_disarm();
	ASSERT_TRUE(window_hit());
	ASSERT_OK(sc.rc);
	/* vCPU 1 invalidates: from now on only the new frame may be used. */
	vmmu_vcpu_invlpg(v1, gva_of(&r, 0));
	ASSERT_OK(acc8(v1, gva_of(&r, 0), &tok, VMMU_ACCESS_WRITE, &x));
	ASSERT_EQ_U64(host_rd64(vm, newf), tok);
	ASSERT_AUDIT(vm);
	rvcpu_teardown(&r);
	vmmu_vm_destroy(vm);
}

TEST(walked_huge_window)
{
	const struct mmu_variant *var;
	uint64_t gva = GVA_BASE, f1 = 4 * MB, f0 = 6 * MB, v = 1;
	uint64_t flags = GUEST_W | GUEST_A | GUEST_D;
	struct vmmu_cpu_state s;
	struct store_ctx wc;
	struct guest_pt *pt;
	struct vmmu_exit x;
	vmmu_vcpu *a, *b;
	vmmu_vm *vm;
	pthread_t t;

	var = shadow_variant();
	vm = race_vm(var, 0);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &a));
	ASSERT_OK(vmmu_vcpu_create(vm, 1, &b));
	ASSERT_OK(guest_pt_create(vm, GUEST_MODE_4LEVEL, PT_BASE, PT_POOL_PER_VCPU, &pt));
	ASSERT_OK(guest_map(pt, gva, f1, 2 * MB, GUEST_PAGE_2M, flags));
	/* The guest's stores to its tables are vCPU B's. */
	guest_pt_set_vcpu(pt, b);
	guest_pt_state(pt, &s, 0);
	ASSERT_OK(vmmu_vcpu_set_state(a, &s));
	ASSERT_OK(vmmu_vcpu_set_state(b, &s));
	/* A writes through the page at f1, then at f0, then at f1 again: what
	 * the MMU built for f1 the first time may be found again. */
	ASSERT_OK(acc8(a, gva, &v, VMMU_ACCESS_WRITE, &x));
	ASSERT_OK(guest_map(pt, gva, f0, 2 * MB, GUEST_PAGE_2M, flags));
	vmmu_vcpu_invlpg(a, gva);
	ASSERT_OK(acc8(a, gva, &v, VMMU_ACCESS_WRITE, &x));
	ASSERT_OK(guest_map(pt, gva, f1, 2 * MB, GUEST_PAGE_2M, flags));
	vmmu_vcpu_invlpg(a, gva);

	/* A's write faults, walks the PDE (f1) and is stopped; B repoints it. */
	window_arm(VMMU_TEST_HOOK_SHADOW_WALKED, gva >> 12);
	wc = (struct store_ctx){ .vcpu = a, .addr = gva, .val = 0xabcd, .type = VMMU_ACCESS_WRITE };
	ASSERT_EQ(pthread_create(&t, NULL, store_thread, &wc), 0);
	ASSERT_TRUE(window_wait_open(10));
	ASSERT_OK(guest_map(pt, gva, f0, 2 * MB, GUEST_PAGE_2M, flags));
	window_close();
	pthread_join(t, NULL);
	window_disarm();
	ASSERT_TRUE(window_hit());
	ASSERT_OK(wc.rc);
	/* That write began before the store: either frame.  After INVLPG,
	 * only the PDE's frame. */
	vmmu_vcpu_invlpg(a, gva);
	v = 0x5555;
	ASSERT_OK(acc8(a, gva + 8, &v, VMMU_ACCESS_WRITE, &x));
	ASSERT_EQ_U64(host_rd64(vm, f0 + 8), 0x5555);
	ASSERT_AUDIT(vm);
	guest_pt_destroy(pt);
	vmmu_vm_destroy(vm);
}

struct slot_ctx {
	vmmu_vm *vm;
	struct vmmu_memslot slot;
	int rc;
};

static void *slot_thread(void *arg)
{
	struct slot_ctx *c = arg;

	c->rc = vmmu_set_memslot(c->vm, &c->slot);
	return NULL;
}

struct audit_ctx {
	vmmu_vm *vm;
	int rc;
	char why[256];
	_Atomic bool done;
};

static void *audit_thread(void *arg)
{
	struct audit_ctx *c = arg;

	c->rc = vmmu_audit(c->vm, c->why, sizeof(c->why));
	atomic_store(&c->done, true);
	return NULL;
}

TEST(slot_create_audit_window)
{
	const uint64_t root = 64 * MB;	/* outside both slots until slot 2 */
	struct timespec pause = { 0, 50 * 1000 * 1000 };
	struct slot_ctx sc = { 0 };
	struct audit_ctx ac = { 0 };
	const struct mmu_variant *var;
	struct vmmu_cpu_state s;
	struct vmmu_exit x;
	pthread_t st, at;
	uint64_t val = 0;
	vmmu_vcpu *v;
	vmmu_vm *vm;

	var = shadow_variant();
	vm = race_vm(var, 0);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &v));
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
	s.cr4 = VMMU_CR4_PAE;
	s.efer = VMMU_EFER_LME;
	s.cr3 = root;
	ASSERT_OK(vmmu_vcpu_set_state(v, &s));
	/* The root's shadow page is built for a gfn outside RAM. */
	ASSERT_EQ(acc8(v, 0x1000, &val, VMMU_ACCESS_READ, &x), VMMU_EXIT);
	ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);

	sc.vm = vm;
	sc.slot = (struct vmmu_memslot){ .slot = 2, .gpa = root, .size = 1 * MB };
	ac.vm = vm;
	window_arm(VMMU_TEST_HOOK_SLOT_PUBLISHED, root >> 12);
	ASSERT_EQ(pthread_create(&st, NULL, slot_thread, &sc), 0);
	ASSERT_TRUE(window_wait_open(10));
	ASSERT_EQ(pthread_create(&at, NULL, audit_thread, &ac), 0);
	/* Time for an audit that does not wait to run in the window (it
	 * then fails, below); one that finished while the creation is still
	 * stopped did not wait.  (The window times out on a stalled machine:
	 * then the audit may rightly finish.) */
	nanosleep(&pause, NULL);
	if (atomic_load(&ac.done) && window_wait_open(0))
		test_fail(__FILE__, __LINE__, "the audit ran while the slot's creation was stopped");
	window_close();
	pthread_join(st, NULL);
	pthread_join(at, NULL);
	window_disarm();
	ASSERT_TRUE(window_hit());
	ASSERT_OK(sc.rc);
	if (ac.rc)
		test_fail(__FILE__, __LINE__, "audit during the slot's creation: %s", ac.why);
	ASSERT_AUDIT(vm);
	vmmu_vm_destroy(vm);
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
