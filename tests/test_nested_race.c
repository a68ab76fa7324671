/* SPDX-License-Identifier: MIT */
/*
 * L1's EPT edits and INVEPT on one vCPU racing L2's faults on others
 * (seed 003).  What vmmu promises (docs/mmu.md 12.4, stronger than the
 * SDM, where INVEPT acts on the logical processor that executes it and L1
 * shoots the others down itself): when vmmu_vcpu_invept() returns on vCPU
 * B, no vCPU -- B or another sharing L1's tables -- uses a translation from
 * before the L1 stores that INVEPT orders.  So:
 *
 *  - invept_stress: B, in L1, steps two L2 pages through mappings to two
 *    frames, read-only, and not present: a 4K page (its EPT leaf's page
 *    goes out of sync, and INVEPT syncs it) and a 2M page (its PDE's page
 *    stays write-protected: the stores are emulated), sometimes rewriting a
 *    neighbour's leaf too, each change followed by INVEPT (single or all)
 *    and then published.  The L2 vCPUs (A, and C with three vCPUs) keep
 *    accessing the pages and their neighbours, faulting as their
 *    translations are zapped under them, and once they see a change
 *    published check an access to each page against exactly that state:
 *    the write lands in the frame named and reads back, a read-only page
 *    reads the frame and refuses the write, a missing one is an EPT
 *    violation, each exit with its qualification.  B goes on when every
 *    L2 vCPU has checked.  Accesses physical and linear (L2's own tables:
 *    combined translations too); ept4, ept4-noad, ept5; VMMU_RACE_SECONDS
 *    per case.
 *  - walked_window: forces the window open: A's fault has walked L1's EPT
 *    and is stopped (a test hook) before it builds anything; B changes the
 *    entry and its INVEPT returns; then A's fault goes on.  That access
 *    began before INVEPT and may use either translation; A's next one must
 *    not find the old (the fault must check what it walked once more under
 *    mmu_lock).  For the 4K page (unsync leaf) and the 2M page (emulated
 *    store), physical and linear.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "nested_test.h"
#include "race_window.h"

#define PAGE 4096ULL
#define SZ_2M (2 * NT_MB)
#define MAX_L2 2
/* L2 gpas: [0, 1M) by 4K pages at L1 32M (L2's tables from L2PT_POOL, the
 * neighbours above), the 4K page G, the 2M page G2. */
#define L2_LOW_L1 (32 * NT_MB)
#define L2PT_POOL 0x10000ULL
#define L2PT_SIZE 0x70000ULL
#define NEIGH 0x80000ULL	/* + id * PAGE: each L2 vCPU's own neighbour page */
#define G 0x100000ULL
#define G2 (4 * NT_MB)
/* Their frames: G at F(0) or F(1), G2 at F2(0) or F2(1) (2M each). */
#define F(i) (40 * NT_MB + (uint64_t)(i) * PAGE)
#define F2(i) (44 * NT_MB + (uint64_t)(i) * SZ_2M)
/* L2's linear view: W -> G (4K), W + 2M -> G2 (2M), W + 4M + id * 4K -> its
 * neighbour. */
#define W 0x00007f0000000000ULL

/* The state of a target page: mapped read-write or read-only to a frame, or
 * not at all. */
enum { ST_RW, ST_RO, ST_NP };
struct tstate {
	int kind;
	int frame;		/* 0 or 1 */
};

struct race {
	struct nt t;
	vmmu_vcpu *b;		/* in L1 */
	vmmu_vcpu *l2v[MAX_L2];	/* in L2 */
	unsigned int nl2;
	bool linear, all;
	uint64_t pte_gpa, pde_gpa;	/* L1's EPT leaf of G, PDE of G2 */
	uint64_t neigh_pte_gpa;		/* a neighbour's EPT leaf, rewritten now and then */
	uint64_t neigh_pte;
	struct guest_pt *l2pt;
	/* published by B after INVEPT returns: the epoch and both states */
	_Atomic uint64_t epoch;
	_Atomic int st[2][2];	/* [target][kind, frame] */
	_Atomic uint64_t ack[MAX_L2];
	_Atomic bool stop;
	struct failbox fb;
	uint64_t n_epochs, n_checked[MAX_L2], n_free[MAX_L2];
};

static uint64_t ept_value(const struct race *r, int target, struct tstate s)
{
	uint64_t rights = s.kind == ST_RW ? GUEST_EPT_RWX : GUEST_EPT_R | GUEST_EPT_X;

	if (s.kind == ST_NP)
		return 0;
	if (target == 0)
		return F(s.frame) | rights | GUEST_EPT_MT_WB;
	(void)r;
	return F2(s.frame) | rights | GUEST_EPT_MT_WB | GUEST_PTE_PS;
}

/* B's store: L1's own, to its EPT. */
static int l1_store(struct race *r, uint64_t gpa, uint64_t v)
{
	struct vmmu_exit x;

	return nt_acc(r->b, gpa, &v, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);
}

static int invept(struct race *r, bool all)
{
	return vmmu_vcpu_invept(r->b, all ? VMMU_INVEPT_ALL : VMMU_INVEPT_SINGLE, guest_pt_eptp(r->t.ept, r->t.ad));
}

/* B makes target's state s: L1's store, then INVEPT; returns 0 or a vmmu error. */
static int l1_change(struct race *r, int target, struct tstate s, bool all)
{
	int rc = l1_store(r, target == 0 ? r->pte_gpa : r->pde_gpa, ept_value(r, target, s));

	return rc ? rc : invept(r, all);
}

/* ---- the L2 side -------------------------------------------------------------------- */

struct l2thread {
	struct race *r;
	unsigned int id;
	uint64_t seq, rng;
	pthread_t th;
};

static uint64_t target_l2(int target)
{
	return target == 0 ? G : G2;
}

/* The address of target + off as this case accesses it. */
static uint64_t addr_of(const struct race *r, int target, uint64_t off)
{
	if (!r->linear)
		return target_l2(target) + off;
	return W + (target == 0 ? 0 : SZ_2M) + off;
}

static uint64_t frame_of(int target, int frame)
{
	return target == 0 ? F(frame) : F2(frame);
}

/* This vCPU's offsets: its own quadwords, so no other vCPU's writes move them. */
static uint64_t pick_off(struct l2thread *l, int target)
{
	uint64_t n = (target == 0 ? PAGE : SZ_2M) / 8 / MAX_L2;

	return (xorshift(&l->rng) % n * MAX_L2 + l->id) * 8;
}

static int acc(vmmu_vcpu *v, uint64_t addr, uint64_t *val, unsigned int type, bool phys, struct vmmu_exit *x)
{
	return nt_acc(v, addr, val, type | (phys ? VMMU_ACCESS_PHYS : 0), x);
}

/* The nested exit an access to a page in state s must get, or fb_fail. */
static bool expect_violation(struct l2thread *l, int target, uint64_t off, unsigned int type, uint64_t qual,
			     const char *what)
{
	struct race *r = l->r;
	struct vmmu_exit x;
	uint64_t v = 0, g = target_l2(target) + off, gla = r->linear ? 0x180 : 0;
	int rc = acc(r->l2v[l->id], addr_of(r, target, off), &v, type, !r->linear, &x);

	if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_NESTED && x.u.nested.kind == VMMU_NESTED_EPT_VIOLATION &&
	    x.u.nested.gpa == g && x.u.nested.qualification == (qual | gla))
		return true;
	fb_fail(&r->fb, "L2 vCPU %u, epoch %llu, %s page: %s after INVEPT returned: rc=%d exit %s kind %u gpa %#llx "
		"qual %#llx, want an EPT violation at %#llx qual %#llx", l->id, (unsigned long long)atomic_load(&r->epoch),
		target ? "2M" : "4K", what, rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-", x.u.nested.kind,
		(unsigned long long)x.u.nested.gpa, (unsigned long long)x.u.nested.qualification, (unsigned long long)g,
		(unsigned long long)(qual | gla));
	return false;
}

/* An access at off after B published s, before B moves on: exactly s. */
static bool check_state_at(struct l2thread *l, int target, struct tstate s, uint64_t off)
{
	struct race *r = l->r;
	uint64_t f = frame_of(target, s.frame) + off, o = frame_of(target, !s.frame) + off;
	uint64_t tok = ((uint64_t)(l->id + 1) << 56) ^ (++l->seq * 0x9e3779b97f4a7c15ULL), got = 0;
	vmmu_vcpu *v = r->l2v[l->id];
	struct vmmu_exit x;
	int rc;

	switch (s.kind) {
	case ST_NP:
		return expect_violation(l, target, off, VMMU_ACCESS_READ, 0x1, "read of a page L1 unmapped");
	case ST_RO:
		if (!expect_violation(l, target, off, VMMU_ACCESS_WRITE, 0x2 | 0x8 | 0x20,
				      "write to a page L1 made read-only"))
			return false;
		rc = acc(v, addr_of(r, target, off), &got, VMMU_ACCESS_READ, !r->linear, &x);
		if (rc || got != nt_rd64(r->t.vm, f)) {
			fb_fail(&r->fb, "L2 vCPU %u, epoch %llu, %s page read-only at frame %d: read rc=%d got %#llx, the "
				"frame holds %#llx, the other %#llx", l->id, (unsigned long long)atomic_load(&r->epoch),
				target ? "2M" : "4K", s.frame, rc, (unsigned long long)got,
				(unsigned long long)nt_rd64(r->t.vm, f), (unsigned long long)nt_rd64(r->t.vm, o));
			return false;
		}
		return true;
	default:
		rc = acc(v, addr_of(r, target, off), &tok, VMMU_ACCESS_WRITE, !r->linear, &x);
		if (!rc)
			rc = acc(v, addr_of(r, target, off), &got, VMMU_ACCESS_READ, !r->linear, &x);
		if (rc || got != tok || nt_rd64(r->t.vm, f) != tok) {
			fb_fail(&r->fb, "L2 vCPU %u, epoch %llu, %s page at frame %d after INVEPT returned: rc=%d exit %s, "
				"read back %#llx, wrote %#llx; the frame holds %#llx%s", l->id,
				(unsigned long long)atomic_load(&r->epoch), target ? "2M" : "4K", s.frame, rc,
				rc == VMMU_EXIT ? exit_name(x.reason) : "-", (unsigned long long)got,
				(unsigned long long)tok, (unsigned long long)nt_rd64(r->t.vm, f),
				nt_rd64(r->t.vm, o) == tok ? " and the old frame has the write" : "");
			return false;
		}
		return true;
	}
}

static bool check_state(struct l2thread *l, int target, struct tstate s)
{
	return check_state_at(l, target, s, pick_off(l, target));
}

/*
 * An access while B may be changing things: any state before or after is
 * allowed, but what moved must be where one of them says (a write in one
 * of the two frames, a read from one of them), and the neighbour, which
 * nothing changes, is exact.
 */
static bool free_access(struct l2thread *l)
{
	struct race *r = l->r;
	vmmu_vcpu *v = r->l2v[l->id];
	uint64_t p = xorshift(&l->rng) % 8, tok = ((uint64_t)(l->id + 1) << 56) ^ (++l->seq * 0x51ed27ULL), got = 0;
	struct vmmu_exit x;
	int rc;

	if (p < 2) {
		uint64_t off = (xorshift(&l->rng) % (PAGE / 8)) * 8, g = NEIGH + l->id * PAGE + off;
		uint64_t a = r->linear ? W + 2 * SZ_2M + l->id * PAGE + off : g;

		rc = acc(v, a, &tok, VMMU_ACCESS_WRITE, !r->linear, &x);
		if (!rc)
			rc = acc(v, a, &got, VMMU_ACCESS_READ, !r->linear, &x);
		if (rc || got != tok || nt_rd64(r->t.vm, L2_LOW_L1 + g) != tok) {
			fb_fail(&r->fb, "L2 vCPU %u: its neighbour page (never changed): rc=%d exit %s, read %#llx, wrote %#llx",
				l->id, rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-", (unsigned long long)got,
				(unsigned long long)tok);
			return false;
		}
		return true;
	}
	{
		int target = (int)(p & 1);
		uint64_t off = pick_off(l, target), f0 = frame_of(target, 0) + off, f1 = frame_of(target, 1) + off;
		bool write = p >= 6;

		rc = acc(v, addr_of(r, target, off), write ? &tok : &got, write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ,
			 !r->linear, &x);
		if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_NESTED)
			return true;
		if (rc == 0 && write && (nt_rd64(r->t.vm, f0) == tok || nt_rd64(r->t.vm, f1) == tok))
			return true;
		if (rc == 0 && !write && (nt_rd64(r->t.vm, f0) == got || nt_rd64(r->t.vm, f1) == got))
			return true;
		fb_fail(&r->fb, "L2 vCPU %u, %s page, %s during a change: rc=%d exit %s value %#llx, frames hold %#llx / %#llx",
			l->id, target ? "2M" : "4K", write ? "write" : "read", rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-",
			(unsigned long long)(write ? tok : got), (unsigned long long)nt_rd64(r->t.vm, f0),
			(unsigned long long)nt_rd64(r->t.vm, f1));
		return false;
	}
}

static void *l2_thread(void *arg)
{
	struct l2thread *l = arg;
	struct race *r = l->r;
	uint64_t acked = 0;

	while (!atomic_load(&r->stop) && !fb_stopped(&r->fb)) {
		uint64_t e = atomic_load_explicit(&r->epoch, memory_order_acquire);

		if (e != acked) {
			for (int target = 0; target < 2; target++) {
				struct tstate s = { atomic_load_explicit(&r->st[target][0], memory_order_relaxed),
						    atomic_load_explicit(&r->st[target][1], memory_order_relaxed) };

				if (!check_state(l, target, s))
					return NULL;
			}
			r->n_checked[l->id]++;
			acked = e;
			atomic_store_explicit(&r->ack[l->id], e, memory_order_release);
			continue;
		}
		if (!free_access(l))
			return NULL;
		/* More vCPU threads than CPUs: let B and the others run, so that
		 * changes come often (B waits for every L2 vCPU's check). */
		if (++r->n_free[l->id] % 16 == 0)
			sched_yield();
	}
	return NULL;
}

/* ---- set-up ------------------------------------------------------------------------------ */

static void race_setup(struct race *r, const struct mmu_variant *var, unsigned int nl2, bool linear, bool all)
{
	uint64_t v;

	memset(r, 0, sizeof(*r));
	nt_setup_l1(&r->t, var, 0, 1 + nl2);
	r->b = r->t.vcpu;
	r->nl2 = nl2;
	r->linear = linear;
	r->all = all;
	ASSERT_OK(guest_pt_create(r->t.vm, var->tdp_levels == 5 ? GUEST_MODE_EPT5 : GUEST_MODE_EPT4, NT_EPT_POOL,
				  NT_EPT_SIZE, &r->t.ept));
	guest_pt_set_vcpu(r->t.ept, r->b);
	ASSERT_OK(guest_map(r->t.ept, 0, L2_LOW_L1, NT_MB, GUEST_PAGE_4K, GUEST_EPT_RWX | GUEST_EPT_MT_WB));
	ASSERT_OK(guest_map(r->t.ept, G, F(0), PAGE, GUEST_PAGE_4K, GUEST_EPT_RWX | GUEST_EPT_MT_WB));
	ASSERT_OK(guest_map(r->t.ept, G2, F2(0), SZ_2M, GUEST_PAGE_2M, GUEST_EPT_RWX | GUEST_EPT_MT_WB));
	ASSERT_OK(guest_get_entry(r->t.ept, G, 1, &v, &r->pte_gpa));
	ASSERT_OK(guest_get_entry(r->t.ept, G2, 2, &v, &r->pde_gpa));
	ASSERT_OK(guest_get_entry(r->t.ept, NEIGH + 7 * PAGE, 1, &r->neigh_pte, &r->neigh_pte_gpa));
	atomic_store(&r->st[0][0], ST_RW);
	atomic_store(&r->st[1][0], ST_RW);
	if (linear) {
		ASSERT_OK(guest_pt_create_nested(r->t.vm, GUEST_MODE_4LEVEL, L2PT_POOL, L2PT_SIZE, L2_LOW_L1, &r->l2pt));
		ASSERT_OK(guest_map(r->l2pt, W, G, PAGE, GUEST_PAGE_4K, GUEST_W));
		ASSERT_OK(guest_map(r->l2pt, W + SZ_2M, G2, SZ_2M, GUEST_PAGE_2M, GUEST_W));
		ASSERT_OK(guest_map(r->l2pt, W + 2 * SZ_2M, NEIGH, MAX_L2 * PAGE, GUEST_PAGE_4K, GUEST_W));
	}
	for (unsigned int i = 0; i < nl2; i++) {
		struct vmmu_nested_state ns;
		struct vmmu_cpu_state s;

		r->l2v[i] = nt_add_vcpu(&r->t, 1 + i);
		if (linear)
			guest_pt_state(r->l2pt, &s, 0);
		nt_state(&r->t, &ns, linear ? &s : NULL);
		ns.vpid = (uint16_t)(1 + i);
		ASSERT_OK(vmmu_vcpu_enter_guest_mode(r->l2v[i], &ns));
	}
}

static void race_teardown(struct race *r)
{
	for (unsigned int i = 0; i < r->nl2; i++)
		ASSERT_OK(vmmu_vcpu_leave_guest_mode(r->l2v[i], NULL));
	if (r->l2pt)
		guest_pt_destroy(r->l2pt);
	nt_teardown(&r->t);
}

/* ---- invept_stress ---------------------------------------------------------------------- */

static struct tstate next_state(uint64_t *rng, struct tstate cur)
{
	static const struct tstate seq[] = { { ST_RW, 0 }, { ST_RW, 1 }, { ST_RO, 0 }, { ST_RO, 1 }, { ST_NP, 0 } };
	struct tstate s;

	do
		s = seq[xorshift(rng) % (sizeof(seq) / sizeof(seq[0]))];
	while (s.kind == cur.kind && s.frame == cur.frame);
	return s;
}

static void stress_case(const struct mmu_variant *var, unsigned int nl2, bool linear, bool all, double secs)
{
	static struct race r;
	struct l2thread l[MAX_L2];
	uint64_t rng = 0x5eed ^ (nl2 * 7 + linear * 3 + all);
	double deadline;

	race_setup(&r, var, nl2, linear, all);
	for (unsigned int i = 0; i < nl2; i++) {
		l[i] = (struct l2thread){ .r = &r, .id = i, .rng = 0x9e3779b97f4a7c15ULL * (i + 1) + 77 };
		ASSERT_EQ(pthread_create(&l[i].th, NULL, l2_thread, &l[i]), 0);
	}
	deadline = now_s() + secs;
	while (now_s() < deadline && !fb_stopped(&r.fb)) {
		int target = (int)(xorshift(&rng) % 2);
		struct tstate cur = { atomic_load(&r.st[target][0]), atomic_load(&r.st[target][1]) };
		struct tstate s = next_state(&rng, cur);
		uint64_t e = r.n_epochs + 1;
		bool waiting = true;
		int rc;

		/* A neighbour's leaf rewritten too (A/D cleared): more L1
		 * stores into the page, under the same INVEPT. */
		if (xorshift(&rng) % 4 == 0 && (rc = l1_store(&r, r.neigh_pte_gpa, r.neigh_pte & ~(GUEST_EPT_A | GUEST_EPT_D)))) {
			fb_fail(&r.fb, "L1 store to its EPT: %s", vmmu_strerror(rc));
			break;
		}
		rc = l1_change(&r, target, s, all || xorshift(&rng) % 4 == 0);
		if (rc) {
			fb_fail(&r.fb, "L1 change: %d (%s)", rc, vmmu_strerror(rc));
			break;
		}
		atomic_store_explicit(&r.st[target][0], s.kind, memory_order_relaxed);
		atomic_store_explicit(&r.st[target][1], s.frame, memory_order_relaxed);
		atomic_store_explicit(&r.epoch, e, memory_order_release);
		r.n_epochs = e;
		/* Until every L2 vCPU has checked the new state. */
		while (waiting && !fb_stopped(&r.fb)) {
			waiting = false;
			for (unsigned int i = 0; i < nl2; i++)
				waiting |= atomic_load_explicit(&r.ack[i], memory_order_acquire) != e;
			if (waiting)
				sched_yield();
		}
	}
	atomic_store(&r.stop, true);
	for (unsigned int i = 0; i < nl2; i++)
		pthread_join(l[i].th, NULL);
	fprintf(stderr, "    [%s] %u L2 vCPU(s), %s, INVEPT %s: %llu changes, checked %llu/%llu, free accesses %llu/%llu\n",
		var->name, nl2, linear ? "linear" : "physical", all ? "all" : "single/all", (unsigned long long)r.n_epochs,
		(unsigned long long)r.n_checked[0], (unsigned long long)(nl2 > 1 ? r.n_checked[1] : 0),
		(unsigned long long)r.n_free[0], (unsigned long long)(nl2 > 1 ? r.n_free[1] : 0));
	ASSERT_FAILBOX(&r.fb);
	ASSERT_GT(r.n_epochs, 0);
	race_teardown(&r);
}

static bool ept_variant(const struct mmu_variant *var)
{
	return nt_variant_ok(var) && var->tdp_format == VMMU_TDP_EPT;
}

TEST(invept_stress)
{
	double secs = race_seconds();

	for_each_mmu_variant(var) {
		if (!ept_variant(var))
			continue;
		stress_case(var, 1, false, false, secs / 4);
		stress_case(var, 1, true, false, secs / 4);
		stress_case(var, 2, false, true, secs / 4);
		stress_case(var, 2, true, false, secs / 4);
	}
}

/* ---- walked_window ------------------------------------------------------------------------- */

struct access_ctx {
	vmmu_vcpu *v;
	uint64_t addr;
	bool phys;
	int rc;
	struct vmmu_exit x;
	uint64_t val;
};

static void *access_thread(void *arg)
{
	struct access_ctx *c = arg;

	c->rc = acc(c->v, c->addr, &c->val, VMMU_ACCESS_WRITE, c->phys, &c->x);
	return NULL;
}

TEST(walked_window)
{
	for_each_mmu_variant(var) {
		if (!ept_variant(var))
			continue;
		for (int target = 0; target < 2; target++) {
			for (int linear = 0; linear < 2; linear++) {
				static struct race r;
				struct l2thread l = { .r = &r, .id = 0 };
				struct access_ctx c;
				pthread_t th;

				race_setup(&r, var, 1, linear, false);
				/*
				 * A uses the page at frame 1, then (L1 moving it) at
				 * frame 0, then L1 moves it back to frame 1: A's
				 * translation is gone and its next access faults.
				 * What vmmu built for frame 1 the first time may still
				 * be there (a 2M L1 page's shadow is kept by frame and
				 * rights), ready to be found again.
				 */
				ASSERT_OK(l1_change(&r, target, (struct tstate){ ST_RW, 1 }, false));
				ASSERT_TRUE(check_state_at(&l, target, (struct tstate){ ST_RW, 1 }, 0));
				ASSERT_OK(l1_change(&r, target, (struct tstate){ ST_RW, 0 }, false));
				ASSERT_TRUE(check_state_at(&l, target, (struct tstate){ ST_RW, 0 }, 0));
				ASSERT_OK(l1_change(&r, target, (struct tstate){ ST_RW, 1 }, false));

				/* A's fault walks L1's EPT (frame 1) and is stopped there. */
				window_arm(VMMU_TEST_HOOK_SHADOW_WALKED, target_l2(target) >> 12);
				/* A write: the translation for it is the one the first
				 * write built. */
				c = (struct access_ctx){ .v = r.l2v[0], .addr = addr_of(&r, target, 0), .phys = !linear,
							 .val = 0xabcd };
				ASSERT_EQ(pthread_create(&th, NULL, access_thread, &c), 0);
				ASSERT_TRUE(window_wait_open(10));
				/* Meanwhile B takes the page away, and INVEPT returns. */
				ASSERT_OK(l1_change(&r, target, (struct tstate){ ST_NP, 0 }, false));
				window_close();
				pthread_join(th, NULL);
				window_disarm();
				ASSERT_TRUE(window_hit());
				/* That write may have gone to frame 1 (it began before
				 * the INVEPT) or seen the page gone; nothing else. */
				if (c.rc == 0)
					ASSERT_EQ_U64(nt_rd64(r.t.vm, frame_of(target, 1)), 0xabcd);
				else
					ASSERT_TRUE(c.rc == VMMU_EXIT && c.x.reason == VMMU_EXIT_NESTED);
				/* The next access must not find frame 1 any more. */
				ASSERT_TRUE(check_state_at(&l, target, (struct tstate){ ST_NP, 0 }, 0));
				ASSERT_FAILBOX(&r.fb);
				ASSERT_AUDIT(r.t.vm);
				race_teardown(&r);
			}
		}
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
