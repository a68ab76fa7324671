/* SPDX-License-Identifier: MIT */
/*
 * Host memory events: what the embedder tells vmmu about the memory behind
 * memslots (vmmu_invalidate_range_begin/end, vmmu_set_host_protection,
 * vmmu_release), and memslot changes while vCPUs run.  The tests follow
 * KVM's selftests of the same features:
 *
 *  - mmu_stress_host_protection (mmu_stress_test): two vCPUs write all of a
 *    slot of caller memory, reset their MMU context (CR0.WP), then the range
 *    becomes read-only while they keep writing: a write that starts after
 *    the call returned must exit with a memory fault at its page (and the
 *    host memory really is PROT_READ, so a write through a stale writable
 *    translation would crash); reads still see the data; writable again,
 *    every write lands.
 *  - host_protection_rules: the exits and their gpas, aliases, page-crossing
 *    accesses (all-or-nothing), protections inside a huge mapping, a
 *    protection recorded before its slot exists, bad arguments, ENOSPC.
 *  - memslot_churn_stress (memslot_modification_stress_test): a dummy slot
 *    created and deleted over and over while vCPUs use another one.
 *  - invalidate_storm_*: vCPUs fault and write random pages while a third
 *    thread brackets random (nested, overlapping) hva ranges with
 *    begin/end and, inside the outermost one, poisons the host memory and
 *    restores it before the end, as page migration copies a page: a vCPU
 *    access that completed between begin and end would read the poison or
 *    have its write destroyed by the restore, and both are caught.  The
 *    storm ends when every vCPU has done a fixed number of accesses and the
 *    invalidator a fixed number of invalidations (progress by operation
 *    counts, on both sides, issue 14 item 3).  invalidate_storm_fence_cycling
 *    runs it with the vCPUs giving up their entry fence after two quiet
 *    entries, so the requests' fence (vm.c, "vCPU requests") is armed and
 *    disarmed all through the storm, and every change of it races flushes.
 *  - invalidate_waits_only_for_its_range: an access waits for an open
 *    invalidation of its own page only, not for the union of the open ones
 *    nor for a huge page that holds an invalidated page.
 *  - invalidate_flushes_for_a_concurrent_zap: an invalidation that finds its
 *    range already zapped by another one, not yet flushed, flushes itself.
 *  - fault_retries_only_for_overlapping_ends: a fault whose host fault-in
 *    raced with the end of an invalidation retries only if that range
 *    overlapped its own (a test hook opens the window).
 *  - invalidate_blocks_access: deterministically, an access to an
 *    invalidated range does not complete before the end (nested ranges
 *    too), accesses elsewhere do, begin leaves nothing mapped.
 *  - release_*: after vmmu_release every access to RAM is a memory fault,
 *    also with vCPUs running when it happens; destroy leaks nothing (LSan).
 *  - slot_delete_move_while_running (set_memory_region_test): vCPUs read a
 *    gpa while the main thread moves its slot away and back and replaces
 *    it; they see the current data or an MMIO exit, never a retired backing
 *    (retired buffers are PROT_NONE: touching one crashes the test).
 *  - slot_move_changes_logging: a move that also turns dirty logging on or
 *    off does both.
 *
 * Threads never call ASSERT_* (it longjmps on the main thread's stack): they
 * record the first failure in a failbox and the main thread reports it after
 * joining them.  Every threaded loop is bounded by iterations and wall time.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

#include "harness.h"
#include "test_hook.h"
#include "vm/vmmu_int.h"

#define MB (1ULL << 20)
#define PAGE 4096ULL


/* ---- helpers ------------------------------------------------------------------ */


static void sleep_ms(unsigned int ms)
{
	struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&t, NULL);
}


/* The value for gpa in a given round: depends on the gpa, so a mapping to
 * the wrong host page is caught, and never zero (zero = never written). */
static uint64_t tok(uint64_t gpa, uint64_t round)
{
	return (gpa ^ 0x5a5a5a5a5a5a5a5aULL ^ (round << 40)) | 1;
}

/* Caller-provided guest memory: an anonymous mapping aligned to align. */
struct hmem {
	void *raw;
	size_t raw_len;
	uint8_t *p;
	size_t len;
};

static uint8_t *hmem_map(struct hmem *m, size_t len, size_t align, bool thp)
{
	uintptr_t a;

	m->raw_len = len + align;
	m->raw = mmap(NULL, m->raw_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->raw == MAP_FAILED) {
		m->raw = NULL;
		return NULL;
	}
	a = ((uintptr_t)m->raw + align - 1) & ~(uintptr_t)(align - 1);
	m->p = (uint8_t *)a;
	m->len = len;
	/* The host's own page size does not matter to vmmu (the slot declares
	 * it); the advice only keeps RSS and fault cost predictable. */
	(void)madvise(m->p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return m->p;
}

static void hmem_unmap(struct hmem *m)
{
	if (m->raw)
		munmap(m->raw, m->raw_len);
	m->raw = NULL;
}

static vmmu_vm *new_vm(const struct mmu_variant *var)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	return vm;
}

static void set_slot(vmmu_vm *vm, uint32_t id, uint32_t flags, uint64_t gpa, void *hva, uint64_t size,
		     uint64_t host_page)
{
	struct vmmu_memslot s = { .slot = id, .flags = flags, .gpa = gpa, .size = size, .hva = hva,
				  .host_page_size = host_page };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

static void del_slot(vmmu_vm *vm, uint32_t id)
{
	struct vmmu_memslot s = { .slot = id };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

static int wr64(vmmu_vcpu *c, uint64_t gpa, uint64_t v, struct vmmu_exit *x)
{
	return vmmu_vcpu_access(c, gpa, &v, 8, VMMU_ACCESS_WRITE, x);
}

static int rd64(vmmu_vcpu *c, uint64_t gpa, uint64_t *v, struct vmmu_exit *x)
{
	*v = 0;
	return vmmu_vcpu_access(c, gpa, v, 8, VMMU_ACCESS_READ, x);
}

/* The access must complete (and, for reads, return want). */
#define EXPECT_WRITE_OK(c, addr, v)                                                                        \
	do {                                                                                              \
		struct vmmu_exit x_;                                                                      \
		int r_ = wr64((c), (addr), (v), &x_);                                                       \
		if (r_)                                                                                   \
			test_fail(__FILE__, __LINE__, "write at gpa %#llx: rc %d, exit %s",               \
				  (unsigned long long)(addr), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-"); \
	} while (0)
#define EXPECT_READ(c, addr, want)                                                                         \
	do {                                                                                              \
		struct vmmu_exit x_;                                                                      \
		uint64_t v_;                                                                              \
		int r_ = rd64((c), (addr), &v_, &x_);                                                       \
		if (r_)                                                                                   \
			test_fail(__FILE__, __LINE__, "read at gpa %#llx: rc %d, exit %s",                \
				  (unsigned long long)(addr), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-"); \
		ASSERT_EQ_U64(v_, (want));                                                                \
	} while (0)
/* A len-byte access at gpa must exit with a memory fault for page fault_gpa. */
#define EXPECT_MEMFAULT(c, addr, len, type, fault_gpa)                                                     \
	do {                                                                                              \
		struct vmmu_exit x_;                                                                      \
		uint64_t buf_[2] = { 0x1122334455667788ULL, 0x99aabbccddeeff00ULL };                      \
		int r_ = vmmu_vcpu_access((c), (addr), buf_, (len), (type), &x_);                           \
		if (r_ != VMMU_EXIT || x_.reason != VMMU_EXIT_MEMORY_FAULT)                               \
			test_fail(__FILE__, __LINE__, "%s at gpa %#llx: rc %d, exit %s, want memory-fault", \
				  (type) == VMMU_ACCESS_WRITE ? "write" : "read", (unsigned long long)(addr), r_, \
				  r_ == VMMU_EXIT ? exit_name(x_.reason) : "-");                          \
		ASSERT_EQ_U64(x_.u.memory_fault.gpa, (fault_gpa));                                       \
		ASSERT_EQ(x_.u.memory_fault.error, VMMU_EFAULT);                                          \
	} while (0)

static void toggle_cr0_wp(vmmu_vcpu *c, int *rc)
{
	struct vmmu_cpu_state s;

	/* Paging is off: CR0.WP changes no translation, but it is part of the
	 * MMU role, so each change resets the vCPU's MMU context. */
	*rc = vmmu_vcpu_get_state(c, &s);
	if (*rc)
		return;
	s.cr0 = VMMU_CR0_PE | VMMU_CR0_WP;
	*rc = vmmu_vcpu_set_state(c, &s);
	if (*rc)
		return;
	s.cr0 = VMMU_CR0_PE;
	*rc = vmmu_vcpu_set_state(c, &s);
}

/* ---- mmu_stress: write all, reset, read-only while writing, writable ---------- */

#define MS_GPA (256 * MB)

struct ms {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	uint8_t *mem;
	uint64_t pages;
	pthread_barrier_t bar;
	_Atomic bool ro;		/* set once set_host_protection(RO) has returned */
	_Atomic unsigned int passes[2];	/* full write passes of phase B */
	uint64_t *shadow;		/* last value written to each page (word 0) */
	uint64_t faults[2];
	struct failbox fb;
};

struct ms_arg {
	struct ms *m;
	int id;
};

static void *ms_vcpu(void *p)
{
	struct ms_arg *a = p;
	struct ms *m = a->m;
	vmmu_vcpu *c = m->vcpu[a->id];
	uint64_t lo = (uint64_t)a->id * (m->pages / 2), hi = lo + m->pages / 2, pg, round;
	struct vmmu_exit x;
	uint64_t v;
	int rc;

	/* Phase A: every page written once, then the context reset. */
	for (pg = lo; pg < hi && !fb_stopped(&m->fb); pg++) {
		uint64_t gpa = MS_GPA + pg * PAGE;

		rc = wr64(c, gpa, tok(gpa, 1), &x);
		if (rc)
			fb_fail(&m->fb, "phase A: write at %#llx: rc %d exit %s", (unsigned long long)gpa, rc,
				exit_name(x.reason));
		m->shadow[pg] = tok(gpa, 1);
	}
	toggle_cr0_wp(c, &rc);
	if (rc)
		fb_fail(&m->fb, "vCPU %d: CR0.WP toggle: %s", a->id, vmmu_strerror(rc));
	for (pg = lo; pg < hi && !fb_stopped(&m->fb); pg++) {
		uint64_t gpa = MS_GPA + pg * PAGE;

		rc = rd64(c, gpa, &v, &x);
		if (rc || v != m->shadow[pg])
			fb_fail(&m->fb, "phase A after reset: read at %#llx: rc %d, %#llx want %#llx",
				(unsigned long long)gpa, rc, (unsigned long long)v,
				(unsigned long long)m->shadow[pg]);
	}
	pthread_barrier_wait(&m->bar);

	/*
	 * Phase B: keep writing while the main thread makes the memory
	 * read-only.  A write that started after the flag was published must
	 * fault; one that raced with the call may go either way.  The loop
	 * ends after a full pass that began with the flag set.
	 */
	for (round = 2; !fb_stopped(&m->fb); round++) {
		bool ro_at_start = atomic_load_explicit(&m->ro, memory_order_acquire);

		for (pg = lo; pg < hi && !fb_stopped(&m->fb); pg++) {
			uint64_t gpa = MS_GPA + pg * PAGE;
			bool ro = atomic_load_explicit(&m->ro, memory_order_acquire);

			rc = wr64(c, gpa, tok(gpa, round), &x);
			if (rc == 0) {
				if (ro)
					fb_fail(&m->fb, "write at %#llx completed after the range became read-only",
						(unsigned long long)gpa);
				m->shadow[pg] = tok(gpa, round);
			} else if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_MEMORY_FAULT) {
				if (x.u.memory_fault.gpa != gpa || x.u.memory_fault.error != VMMU_EFAULT)
					fb_fail(&m->fb, "write at %#llx: memory fault for gpa %#llx error %d",
						(unsigned long long)gpa, (unsigned long long)x.u.memory_fault.gpa,
						x.u.memory_fault.error);
				m->faults[a->id]++;
			} else {
				fb_fail(&m->fb, "phase B: write at %#llx: rc %d exit %s (ro %d)",
					(unsigned long long)gpa, rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-", ro);
			}
			rc = rd64(c, gpa, &v, &x);
			if (rc || v != m->shadow[pg])
				fb_fail(&m->fb, "phase B: read at %#llx: rc %d exit %s, %#llx want %#llx (ro %d)",
					(unsigned long long)gpa, rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-",
					(unsigned long long)v, (unsigned long long)m->shadow[pg], ro);
		}
		atomic_fetch_add(&m->passes[a->id], 1);
		if (ro_at_start)
			break;
	}
	pthread_barrier_wait(&m->bar);	/* main checks memory, makes it writable */
	pthread_barrier_wait(&m->bar);

	/* Phase C: writable again; every write lands. */
	for (pg = lo; pg < hi && !fb_stopped(&m->fb); pg++) {
		uint64_t gpa = MS_GPA + pg * PAGE;

		rc = wr64(c, gpa, tok(gpa, 1000), &x);
		if (rc)
			fb_fail(&m->fb, "phase C: write at %#llx: rc %d exit %s", (unsigned long long)gpa, rc,
				rc == VMMU_EXIT ? exit_name(x.reason) : "-");
		else
			m->shadow[pg] = tok(gpa, 1000);
	}
	for (pg = lo; pg < hi && !fb_stopped(&m->fb); pg++) {
		uint64_t gpa = MS_GPA + pg * PAGE;

		rc = rd64(c, gpa, &v, &x);
		if (rc || v != m->shadow[pg])
			fb_fail(&m->fb, "phase C: read at %#llx: rc %d, %#llx want %#llx", (unsigned long long)gpa,
				rc, (unsigned long long)v, (unsigned long long)m->shadow[pg]);
	}
	pthread_barrier_wait(&m->bar);
	return NULL;
}

/* Host view of every page against the shadow; the first difference. */
static bool ms_memory_matches(struct ms *m, uint64_t *bad_page)
{
	for (uint64_t pg = 0; pg < m->pages; pg++) {
		if (*(volatile uint64_t *)(m->mem + pg * PAGE) != m->shadow[pg]) {
			*bad_page = pg;
			return false;
		}
	}
	return true;
}

TEST(mmu_stress_host_protection)
{
	uint64_t size = (UNDER_SANITIZER ? 16 : 32) * MB;

	for_each_mmu_variant(var) {
		struct ms m;
		struct ms_arg args[2];
		struct hmem hm;
		pthread_t t[2];
		uintptr_t lo, hi;
		uint64_t bad = 0;
		double deadline;
		int rc;

		memset(&m, 0, sizeof(m));
		m.pages = size / PAGE;
		m.vm = new_vm(var);
		m.mem = hmem_map(&hm, size, PAGE, false);
		ASSERT_TRUE(m.mem != NULL);
		m.shadow = calloc(m.pages, sizeof(uint64_t));
		ASSERT_TRUE(m.shadow != NULL);
		set_slot(m.vm, 1, 0, MS_GPA, m.mem, size, PAGE);
		lo = (uintptr_t)m.mem;
		hi = lo + size;
		pthread_barrier_init(&m.bar, NULL, 3);
		for (int i = 0; i < 2; i++) {
			ASSERT_OK(vmmu_vcpu_create(m.vm, (unsigned int)i, &m.vcpu[i]));
			args[i] = (struct ms_arg){ &m, i };
		}
		for (int i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, ms_vcpu, &args[i]);

		pthread_barrier_wait(&m.bar);	/* phase A done */
		/* Let both vCPUs finish a writing pass before the change. */
		deadline = now_s() + 30;
		while (!fb_stopped(&m.fb) && (atomic_load(&m.passes[0]) < 1 || atomic_load(&m.passes[1]) < 1)) {
			if (now_s() > deadline) {
				fb_fail(&m.fb, "phase B: vCPUs made no progress");
				break;
			}
			sleep_ms(1);
		}
		rc = vmmu_set_host_protection(m.vm, lo, hi, VMMU_HOST_RO);
		if (rc)
			fb_fail(&m.fb, "set_host_protection(RO): %s", vmmu_strerror(rc));
		atomic_store_explicit(&m.ro, true, memory_order_release);
		/* For real, after the call: a write through a translation that
		 * survived it now crashes the test. */
		if (mprotect(m.mem, size, PROT_READ))
			fb_fail(&m.fb, "mprotect(PROT_READ) failed");
		pthread_barrier_wait(&m.bar);	/* phase B done */
		if (!fb_stopped(&m.fb) && !ms_memory_matches(&m, &bad))
			fb_fail(&m.fb, "after phase B: page %llu holds %#llx, the vCPU wrote %#llx",
				(unsigned long long)bad, (unsigned long long)*(uint64_t *)(m.mem + bad * PAGE),
				(unsigned long long)m.shadow[bad]);
		/* Writable: the host first, then vmmu (the order of an mprotect
		 * that adds rights: nothing stale can exist to allow too much). */
		if (mprotect(m.mem, size, PROT_READ | PROT_WRITE))
			fb_fail(&m.fb, "mprotect(RW) failed");
		rc = vmmu_set_host_protection(m.vm, lo, hi, VMMU_HOST_RW);
		if (rc)
			fb_fail(&m.fb, "set_host_protection(RW): %s", vmmu_strerror(rc));
		pthread_barrier_wait(&m.bar);	/* phase C starts */
		pthread_barrier_wait(&m.bar);	/* phase C done */
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&m.bar);
		ASSERT_FAILBOX(&m.fb);
		if (!ms_memory_matches(&m, &bad))
			test_fail(__FILE__, __LINE__, "[%s] page %llu holds %#llx, the vCPU wrote %#llx", var->name,
				  (unsigned long long)bad, (unsigned long long)*(uint64_t *)(m.mem + bad * PAGE),
				  (unsigned long long)m.shadow[bad]);
		/* Each vCPU made a full pass with the range read-only. */
		ASSERT_GE(m.faults[0], m.pages / 2);
		ASSERT_GE(m.faults[1], m.pages / 2);
		ASSERT_FALSE(vmmu_vm_bugged(m.vm, NULL));
		ASSERT_AUDIT(m.vm);
		fprintf(stderr, "    [%s] %llu pages, memory faults %llu+%llu, passes %u+%u\n", var->name,
			(unsigned long long)m.pages, (unsigned long long)m.faults[0],
			(unsigned long long)m.faults[1], atomic_load(&m.passes[0]), atomic_load(&m.passes[1]));
		vmmu_vm_destroy(m.vm);
		free(m.shadow);
		hmem_unmap(&hm);
	}
}

/* ---- the rules, one access at a time --------------------------------------------- */

#define HR_G1 (512 * MB)	/* 4 MiB slot, 2M host pages (huge mappings) */
#define HR_G2 (768 * MB)	/* alias of the first MiB, 4K host pages */
#define HR_G3 (1024 * MB)
#define HR_G4 (1280 * MB)

static void host_protection_rules(const struct mmu_variant *var)
{
	struct hmem hm, hm2, hm3;
	uint8_t *buf, *buf2, *buf3;
	uintptr_t b;
	vmmu_vm *vm = new_vm(var);
	vmmu_vcpu *c;
	const uint64_t P = 100, Q = 200;	/* both in the alias and the first 2 MiB */
	struct vmmu_vm_stats st;
	int rc, i, full_at = -1;

	buf = hmem_map(&hm, 4 * MB, 2 * MB, true);
	ASSERT_TRUE(buf != NULL);
	b = (uintptr_t)buf;
	set_slot(vm, 1, 0, HR_G1, buf, 4 * MB, 2 * MB);
	set_slot(vm, 2, 0, HR_G2, buf, 1 * MB, PAGE);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
	for (uint64_t pg = 0; pg < 1024; pg++)
		EXPECT_WRITE_OK(c, HR_G1 + pg * PAGE, tok(pg * PAGE, 1));
	for (uint64_t pg = 0; pg < 256; pg++)
		EXPECT_READ(c, HR_G2 + pg * PAGE, tok(pg * PAGE, 1));
	vmmu_vm_get_stats(vm, &st);
	if (!(var->flags & VMMU_VM_NO_HUGEPAGES) && var->mmu != VMMU_MMU_SHADOW)
		ASSERT_GE(st.pages_2m, 1);	/* the protections below land inside huge mappings */

	/* Read-only page P: writes fault at that page through both aliases. */
	ASSERT_OK(vmmu_set_host_protection(vm, b + P * PAGE, b + (P + 1) * PAGE, VMMU_HOST_RO));
	ASSERT_EQ(mprotect(buf + P * PAGE, PAGE, PROT_READ), 0);
	EXPECT_MEMFAULT(c, HR_G1 + P * PAGE + 16, 8, VMMU_ACCESS_WRITE, HR_G1 + P * PAGE);
	EXPECT_MEMFAULT(c, HR_G2 + P * PAGE, 8, VMMU_ACCESS_WRITE, HR_G2 + P * PAGE);
	EXPECT_READ(c, HR_G1 + P * PAGE, tok(P * PAGE, 1));
	EXPECT_READ(c, HR_G2 + P * PAGE, tok(P * PAGE, 1));
	/* Its neighbours, in the same 2 MiB, stay writable. */
	EXPECT_WRITE_OK(c, HR_G1 + (P - 1) * PAGE, tok((P - 1) * PAGE, 2));
	EXPECT_WRITE_OK(c, HR_G1 + (P + 1) * PAGE, tok((P + 1) * PAGE, 2));
	EXPECT_WRITE_OK(c, HR_G1 + 0 * PAGE, tok(0, 2));
	EXPECT_WRITE_OK(c, HR_G1 + 511 * PAGE, tok(511 * PAGE, 2));
	EXPECT_WRITE_OK(c, HR_G1 + 512 * PAGE, tok(512 * PAGE, 2));
	EXPECT_WRITE_OK(c, HR_G2 + (P + 1) * PAGE, tok((P + 1) * PAGE, 3));
	ASSERT_EQ_U64(*(uint64_t *)(buf + (P - 1) * PAGE), tok((P - 1) * PAGE, 2));
	ASSERT_EQ_U64(*(uint64_t *)(buf + (P + 1) * PAGE), tok((P + 1) * PAGE, 3));
	EXPECT_READ(c, HR_G1 + (P + 1) * PAGE, tok((P + 1) * PAGE, 3));
	/* Page-crossing writes are all-or-nothing; the exit names the page
	 * that needs it, whichever of the two it is. */
	memset(buf + P * PAGE - 8, 0x3c, 8);
	EXPECT_MEMFAULT(c, HR_G1 + P * PAGE - 4, 8, VMMU_ACCESS_WRITE, HR_G1 + P * PAGE);
	for (i = 1; i <= 8; i++)
		ASSERT_EQ(buf[P * PAGE - (uint64_t)i], 0x3c);
	EXPECT_MEMFAULT(c, HR_G1 + (P + 1) * PAGE - 4, 8, VMMU_ACCESS_WRITE, HR_G1 + P * PAGE);
	{
		uint64_t v = 0, want;
		struct vmmu_exit x;

		memcpy(&want, buf + P * PAGE - 4, 8);
		ASSERT_OK(vmmu_vcpu_access(c, HR_G1 + P * PAGE - 4, &v, 8, VMMU_ACCESS_READ, &x));
		ASSERT_EQ_U64(v, want);
	}

	/* Page Q gone: every access faults; its neighbours still work, and
	 * page P keeps its own protection. */
	ASSERT_OK(vmmu_set_host_protection(vm, b + Q * PAGE, b + (Q + 1) * PAGE, VMMU_HOST_NONE));
	ASSERT_EQ(mprotect(buf + Q * PAGE, PAGE, PROT_NONE), 0);
	EXPECT_MEMFAULT(c, HR_G1 + Q * PAGE, 8, VMMU_ACCESS_READ, HR_G1 + Q * PAGE);
	EXPECT_MEMFAULT(c, HR_G1 + Q * PAGE + 8, 8, VMMU_ACCESS_WRITE, HR_G1 + Q * PAGE);
	EXPECT_MEMFAULT(c, HR_G2 + Q * PAGE + 4095, 1, VMMU_ACCESS_READ, HR_G2 + Q * PAGE);
	EXPECT_MEMFAULT(c, HR_G2 + Q * PAGE - 2, 4, VMMU_ACCESS_READ, HR_G2 + Q * PAGE);
	EXPECT_READ(c, HR_G1 + (Q - 1) * PAGE, tok((Q - 1) * PAGE, 1));
	EXPECT_READ(c, HR_G1 + (Q + 1) * PAGE, tok((Q + 1) * PAGE, 1));
	EXPECT_WRITE_OK(c, HR_G1 + (Q + 1) * PAGE, tok((Q + 1) * PAGE, 4));
	EXPECT_WRITE_OK(c, HR_G2 + (Q - 1) * PAGE, tok((Q - 1) * PAGE, 4));
	EXPECT_MEMFAULT(c, HR_G1 + P * PAGE, 8, VMMU_ACCESS_WRITE, HR_G1 + P * PAGE);
	EXPECT_READ(c, HR_G2 + P * PAGE, tok(P * PAGE, 1));

	/* Writable again (host first): everything works, through both. */
	ASSERT_EQ(mprotect(buf, 4 * MB, PROT_READ | PROT_WRITE), 0);
	ASSERT_OK(vmmu_set_host_protection(vm, b + P * PAGE, b + (Q + 1) * PAGE, VMMU_HOST_RW));
	EXPECT_WRITE_OK(c, HR_G1 + P * PAGE, tok(P * PAGE, 5));
	EXPECT_WRITE_OK(c, HR_G2 + Q * PAGE, tok(Q * PAGE, 5));
	EXPECT_READ(c, HR_G2 + P * PAGE, tok(P * PAGE, 5));
	EXPECT_READ(c, HR_G1 + Q * PAGE, tok(Q * PAGE, 5));
	ASSERT_EQ_U64(*(uint64_t *)(buf + Q * PAGE), tok(Q * PAGE, 5));
	ASSERT_AUDIT(vm);

	/* A protection recorded while no slot covers the memory applies to a
	 * slot created over it later (it is about host memory, not slots). */
	buf2 = hmem_map(&hm2, 64 * 1024, PAGE, false);
	ASSERT_TRUE(buf2 != NULL);
	ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)buf2 + 3 * PAGE, (uintptr_t)buf2 + 4 * PAGE,
					   VMMU_HOST_RO));
	ASSERT_EQ(mprotect(buf2 + 3 * PAGE, PAGE, PROT_READ), 0);
	set_slot(vm, 3, 0, HR_G3, buf2, 64 * 1024, PAGE);
	EXPECT_MEMFAULT(c, HR_G3 + 3 * PAGE, 8, VMMU_ACCESS_WRITE, HR_G3 + 3 * PAGE);
	EXPECT_READ(c, HR_G3 + 3 * PAGE, 0);
	EXPECT_WRITE_OK(c, HR_G3 + 2 * PAGE, 7);
	/* Deleting and re-creating the slot does not forget it either. */
	del_slot(vm, 3);
	set_slot(vm, 3, 0, HR_G3, buf2, 64 * 1024, PAGE);
	EXPECT_MEMFAULT(c, HR_G3 + 3 * PAGE + 8, 8, VMMU_ACCESS_WRITE, HR_G3 + 3 * PAGE);
	ASSERT_EQ(mprotect(buf2 + 3 * PAGE, PAGE, PROT_READ | PROT_WRITE), 0);
	ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)buf2 + 3 * PAGE, (uintptr_t)buf2 + 4 * PAGE,
					   VMMU_HOST_RW));
	EXPECT_WRITE_OK(c, HR_G3 + 3 * PAGE, 9);
	ASSERT_EQ_U64(*(uint64_t *)(buf2 + 3 * PAGE), 9);

	/* Bad arguments change nothing. */
	ASSERT_ERR(vmmu_set_host_protection(vm, b + 1, b + PAGE, VMMU_HOST_RO), VMMU_EINVAL);
	ASSERT_ERR(vmmu_set_host_protection(vm, b, b + PAGE + 8, VMMU_HOST_RO), VMMU_EINVAL);
	ASSERT_ERR(vmmu_set_host_protection(vm, b, b + PAGE, 3), VMMU_EINVAL);
	EXPECT_WRITE_OK(c, HR_G1, tok(0, 6));

	/*
	 * Too many distinct ranges: every other page read-only until the
	 * table is full.  The refused call must change nothing (its page
	 * stays writable); one RW call over everything empties the table.
	 */
	buf3 = hmem_map(&hm3, 16 * MB, PAGE, false);
	ASSERT_TRUE(buf3 != NULL);
	set_slot(vm, 4, 0, HR_G4, buf3, 16 * MB, PAGE);
	for (i = 0; i < 2048; i++) {
		uintptr_t p = (uintptr_t)buf3 + (uint64_t)i * 2 * PAGE;

		rc = vmmu_set_host_protection(vm, p, p + PAGE, VMMU_HOST_RO);
		if (rc == VMMU_ENOSPC) {
			full_at = i;
			break;
		}
		ASSERT_OK(rc);
	}
	ASSERT_GE(full_at, 1);	/* a fixed-size table fills before 2048 ranges */
	EXPECT_WRITE_OK(c, HR_G4 + (uint64_t)full_at * 2 * PAGE, 11);
	EXPECT_MEMFAULT(c, HR_G4 + (uint64_t)(full_at - 1) * 2 * PAGE, 8, VMMU_ACCESS_WRITE,
			HR_G4 + (uint64_t)(full_at - 1) * 2 * PAGE);
	EXPECT_WRITE_OK(c, HR_G4 + PAGE, 12);	/* between two read-only pages */
	ASSERT_OK(vmmu_set_host_protection(vm, (uintptr_t)buf3, (uintptr_t)buf3 + 16 * MB, VMMU_HOST_RW));
	EXPECT_WRITE_OK(c, HR_G4, 13);
	EXPECT_WRITE_OK(c, HR_G4 + (uint64_t)(full_at - 1) * 2 * PAGE, 14);
	ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
	ASSERT_AUDIT(vm);
	if (var == mmu_variants)
		fprintf(stderr, "    the host-protection table took %d ranges\n", full_at);
	vmmu_vm_destroy(vm);
	hmem_unmap(&hm);
	hmem_unmap(&hm2);
	hmem_unmap(&hm3);
}

TEST(host_protection_rules)
{
	for_each_mmu_variant(var)
		host_protection_rules(var);
}

/* ---- memslot churn while vCPUs work elsewhere -------------------------------------- */

#define CH_GPA (256 * MB)
#define CH_SIZE (8 * MB)
#define CH_PAGES (CH_SIZE / PAGE)
#define CH_DUMMY_SIZE (64 * 1024)
#define CH_DUMMY_WORD 0xd0d0d0d0d0d0d0d0ULL

struct churn {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	uint8_t *mem;
	uint64_t *shadow[2];
	_Atomic bool done;
	uint64_t ops[2], dummy_hits[2];
	struct failbox fb;
};

struct churn_arg {
	struct churn *ch;
	int id;
};

/* The two candidate places of the dummy slot: far away, and right after
 * the working slot (neighbours share the memslot search and caches). */
static uint64_t churn_dummy_gpa(unsigned int k)
{
	return k ? CH_GPA + CH_SIZE : 1024 * MB;
}

static void *churn_vcpu(void *p)
{
	struct churn_arg *a = p;
	struct churn *ch = a->ch;
	vmmu_vcpu *c = ch->vcpu[a->id];
	uint64_t seed = 0x1234567ULL * (uint64_t)(a->id + 3), i;
	struct vmmu_exit x;

	for (i = 0; !fb_stopped(&ch->fb) && !atomic_load_explicit(&ch->done, memory_order_acquire); i++) {
		uint64_t r = xorshift(&seed), pg = r % CH_PAGES, v;
		uint64_t gpa = CH_GPA + pg * PAGE + (uint64_t)a->id * 8;
		int rc;

		switch ((r >> 32) % 4) {
		case 0:	/* the dummy slot: its data or MMIO, nothing else */
			gpa = churn_dummy_gpa((r >> 40) & 1) + ((r >> 44) % (CH_DUMMY_SIZE / 8)) * 8;
			rc = rd64(c, gpa, &v, &x);
			if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO)
				break;
			if (rc || v != CH_DUMMY_WORD)
				fb_fail(&ch->fb, "dummy gpa %#llx: rc %d exit %s value %#llx",
					(unsigned long long)gpa, rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-",
					(unsigned long long)v);
			ch->dummy_hits[a->id]++;
			break;
		case 1:
		case 2:
			v = (i << 16) | pg | 1;
			rc = wr64(c, gpa, v, &x);
			if (rc)
				fb_fail(&ch->fb, "write at %#llx: rc %d exit %s", (unsigned long long)gpa, rc,
					rc == VMMU_EXIT ? exit_name(x.reason) : "-");
			ch->shadow[a->id][pg] = v;
			break;
		default:
			rc = rd64(c, gpa, &v, &x);
			if (rc || v != ch->shadow[a->id][pg])
				fb_fail(&ch->fb, "read at %#llx: rc %d value %#llx want %#llx", (unsigned long long)gpa,
					rc, (unsigned long long)v, (unsigned long long)ch->shadow[a->id][pg]);
			break;
		}
	}
	ch->ops[a->id] = i;
	return NULL;
}

TEST(memslot_churn_stress)
{
	for_each_mmu_variant(var) {
		struct churn ch;
		struct churn_arg args[2];
		struct hmem hm, hd;
		uint8_t *dummy;
		pthread_t t[2];
		uint64_t n = 0;
		double end = now_s() + 0.2;

		memset(&ch, 0, sizeof(ch));
		ch.vm = new_vm(var);
		ch.mem = hmem_map(&hm, CH_SIZE, 2 * MB, true);
		dummy = hmem_map(&hd, CH_DUMMY_SIZE, PAGE, false);
		ASSERT_TRUE(ch.mem && dummy);
		for (uint64_t o = 0; o < CH_DUMMY_SIZE; o += 8)
			memcpy(dummy + o, &(uint64_t){ CH_DUMMY_WORD }, 8);
		set_slot(ch.vm, 1, 0, CH_GPA, ch.mem, CH_SIZE, 2 * MB);
		for (int i = 0; i < 2; i++) {
			ASSERT_OK(vmmu_vcpu_create(ch.vm, (unsigned int)i, &ch.vcpu[i]));
			ch.shadow[i] = calloc(CH_PAGES, sizeof(uint64_t));
			ASSERT_TRUE(ch.shadow[i] != NULL);
			args[i] = (struct churn_arg){ &ch, i };
		}
		for (int i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, churn_vcpu, &args[i]);
		/* Thousands in a plain build; the clock bounds the slower ones. */
		for (n = 0; n < 20000 && !fb_stopped(&ch.fb) && (n < 50 || now_s() < end); n++) {
			struct vmmu_memslot s = { .slot = 7, .gpa = churn_dummy_gpa((unsigned int)(n / 2) & 1),
						  .size = CH_DUMMY_SIZE, .hva = dummy, .host_page_size = PAGE };
			int rc;

			if (n & 1)
				s.size = 0;
			rc = vmmu_set_memslot(ch.vm, &s);
			if (rc)
				fb_fail(&ch.fb, "dummy slot %s #%llu: %s", n & 1 ? "delete" : "create",
					(unsigned long long)n, vmmu_strerror(rc));
		}
		atomic_store_explicit(&ch.done, true, memory_order_release);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		ASSERT_FAILBOX(&ch.fb);
		for (int i = 0; i < 2; i++) {
			for (uint64_t pg = 0; pg < CH_PAGES; pg++)
				if (ch.shadow[i][pg])
					ASSERT_EQ_U64(*(uint64_t *)(ch.mem + pg * PAGE + (uint64_t)i * 8),
						      ch.shadow[i][pg]);
			free(ch.shadow[i]);
		}
		ASSERT_FALSE(vmmu_vm_bugged(ch.vm, NULL));
		ASSERT_AUDIT(ch.vm);
		fprintf(stderr, "    [%s] %llu slot changes, vCPU ops %llu+%llu (dummy reads %llu+%llu)\n", var->name,
			(unsigned long long)n, (unsigned long long)ch.ops[0], (unsigned long long)ch.ops[1],
			(unsigned long long)ch.dummy_hits[0], (unsigned long long)ch.dummy_hits[1]);
		vmmu_vm_destroy(ch.vm);
		hmem_unmap(&hm);
		hmem_unmap(&hd);
	}
}

/* ---- the notifier storm ------------------------------------------------------------- */

#define ST_GPA (256 * MB)
#define ST_SIZE (16 * MB)
#define ST_PAGES (ST_SIZE / PAGE)
#define ST_POISON 0xa5
#define ST_MAX_OPEN 3
#define ST_OPS (UNDER_SANITIZER ? 300u : 2000u)
#define ST_MIN_INVALIDATIONS 200u
#define ST_LIVENESS_SECONDS 120

struct storm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	uint8_t *mem;
	uint64_t *shadow[2];
	_Atomic bool done;
	_Atomic uint64_t ops[2];	/* completed write+read pairs, published as they go */
	uint64_t max_depth, poisoned_pages;
	_Atomic uint64_t invalidations;
	/* Other ranges only: the vCPUs use pages [1, ST_PAGES / 2), the
	 * invalidations hit the rest, and page 0 stays invalidated throughout
	 * (KVM's union of the open ranges would then cover everything). */
	bool others;
	struct failbox fb;
};

struct storm_arg {
	struct storm *st;
	int id;
};

static void *storm_vcpu(void *p)
{
	struct storm_arg *a = p;
	struct storm *st = a->st;
	vmmu_vcpu *c = st->vcpu[a->id];
	uint64_t seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(a->id + 1), i;
	struct vmmu_exit x;

	for (i = 0; !fb_stopped(&st->fb) && !atomic_load_explicit(&st->done, memory_order_acquire); i++) {
		uint64_t pg = st->others ? 1 + xorshift(&seed) % (ST_PAGES / 2 - 1) : xorshift(&seed) % ST_PAGES;
		/* Each vCPU owns one word per page: both fault on the same pages,
		 * neither races on guest data. */
		uint64_t gpa = ST_GPA + pg * PAGE + (uint64_t)a->id * 8, v = (i << 20) | pg | 1, r;
		int rc = wr64(c, gpa, v, &x);

		if (rc) {
			fb_fail(&st->fb, "vCPU %d: write at %#llx: rc %d exit %s", a->id, (unsigned long long)gpa, rc,
				rc == VMMU_EXIT ? exit_name(x.reason) : "-");
			break;
		}
		st->shadow[a->id][pg] = v;
		pg = st->others ? 1 + xorshift(&seed) % (ST_PAGES / 2 - 1) : xorshift(&seed) % ST_PAGES;
		gpa = ST_GPA + pg * PAGE + (uint64_t)a->id * 8;
		rc = rd64(c, gpa, &r, &x);
		if (rc || r != st->shadow[a->id][pg]) {
			fb_fail(&st->fb, "vCPU %d: read at %#llx: rc %d, %#llx want %#llx%s", a->id,
				(unsigned long long)gpa, rc, (unsigned long long)r,
				(unsigned long long)st->shadow[a->id][pg],
				r == 0xa5a5a5a5a5a5a5a5ULL ? " (the poison: read inside an invalidation)" : "");
			break;
		}
		atomic_store_explicit(&st->ops[a->id], i + 1, memory_order_relaxed);
	}
	return NULL;
}

struct st_range {
	uintptr_t start, end;
	uint8_t *saved;		/* the poisoned range's contents, or NULL */
	uint64_t lo, hi;	/* its part of the slot, in bytes */
};

/*
 * The poison cycle of the outermost range: after begin returns, no vCPU
 * may touch the range until end, so its bytes can be saved, overwritten
 * and restored (what page migration does) without any vCPU noticing.
 */
static void st_poison(struct storm *st, struct st_range *r)
{
	uintptr_t base = (uintptr_t)st->mem;

	r->lo = r->start > base ? r->start - base : 0;
	r->hi = r->end - base < ST_SIZE ? r->end - base : ST_SIZE;
	if (r->start >= base + ST_SIZE || r->end <= base || r->lo >= r->hi)
		return;
	r->saved = malloc(r->hi - r->lo);
	if (!r->saved)
		return;
	memcpy(r->saved, st->mem + r->lo, r->hi - r->lo);
	memset(st->mem + r->lo, ST_POISON, r->hi - r->lo);
	st->poisoned_pages += (r->hi - r->lo) / PAGE;
}

static void st_unpoison(struct storm *st, struct st_range *r)
{
	if (!r->saved)
		return;
	for (uint64_t o = r->lo; o < r->hi; o += 8) {
		uint64_t w;

		memcpy(&w, st->mem + o, 8);
		if (w != 0xa5a5a5a5a5a5a5a5ULL) {
			fb_fail(&st->fb, "slot offset %#llx changed to %#llx between invalidate begin and end",
				(unsigned long long)o, (unsigned long long)w);
			break;
		}
	}
	memcpy(st->mem + r->lo, r->saved, r->hi - r->lo);
	free(r->saved);
	r->saved = NULL;
}

struct inv_arg {
	struct storm *st;
	bool poison;		/* the one that poisons its outermost ranges */
	uint64_t seed;
};

static void *storm_invalidator(void *p)
{
	struct inv_arg *a = p;
	struct storm *st = a->st;
	struct st_range open[ST_MAX_OPEN];
	unsigned int n_open = 0;
	uint64_t seed = a->seed;
	uintptr_t base = (uintptr_t)st->mem;

	if (st->others && a->poison)
		vmmu_invalidate_range_begin(st->vm, base, base + PAGE);
	while (!fb_stopped(&st->fb) && !atomic_load_explicit(&st->done, memory_order_acquire)) {
		uint64_t r = xorshift(&seed);

		if (n_open < ST_MAX_OPEN && (n_open == 0 || (r & 3) == 0)) {
			/* Mostly 4K..64K, one in eight up to 2M (a huge page, or
			 * what an madvise of many pages sends); sometimes hanging
			 * over either end of the slot. */
			int64_t first = (int64_t)((r >> 8) % (ST_PAGES + 32)) - 16;
			uint64_t len = 1 + (r >> 32) % ((r >> 56) % 8 ? 16 : 512);
			struct st_range *o = &open[n_open];

			if (st->others)	/* the second half, and past the slot's end */
				first = ST_PAGES / 2 + (int64_t)((r >> 8) % (ST_PAGES / 2 + 16));

			o->start = base + (uintptr_t)(first * (int64_t)PAGE);
			o->end = o->start + len * PAGE;
			o->saved = NULL;
			vmmu_invalidate_range_begin(st->vm, o->start, o->end);
			if (n_open == 0 && a->poison)
				st_poison(st, o);
			n_open++;
			atomic_fetch_add_explicit(&st->invalidations, 1, memory_order_relaxed);
			if (a->poison && n_open > st->max_depth)	/* its own nesting */
				st->max_depth = n_open;
			/* Hold it a little: the vCPUs must wait, not fail. */
			if ((r >> 60) == 0)
				sched_yield();
		} else {
			/* End any of them: overlapping ranges end in any order. */
			unsigned int k = (unsigned int)((r >> 16) % n_open);
			struct st_range o = open[k];

			st_unpoison(st, &o);
			vmmu_invalidate_range_end(st->vm, o.start, o.end);
			open[k] = open[--n_open];
		}
	}
	while (n_open) {
		struct st_range o = open[--n_open];

		st_unpoison(st, &o);
		vmmu_invalidate_range_end(st->vm, o.start, o.end);
	}
	if (st->others && a->poison)
		vmmu_invalidate_range_end(st->vm, base, base + PAGE);
	return NULL;
}

/*
 * two: a second invalidator brackets ranges of its own, overlapping the
 * first one's, without poisoning: two invalidations then zap the same
 * entries at once, and each must still have flushed when it returns (the
 * poison catches a vCPU that kept a translation of the first one's range).
 */
/* Non-zero: the VM's req_fence_budget for the next storms. */
static uint32_t storm_fence_budget;

static void run_storm(const struct mmu_variant *var, uint64_t host_page, bool others, bool two)
{
	struct storm st;
	struct storm_arg args[2];
	struct inv_arg iargs[2] = { { &st, true, 0xfeedfaceULL }, { &st, false, 0xdecafbadULL } };
	struct hmem hm;
	pthread_t t[4];
	int nt = two ? 4 : 3;

	memset(&st, 0, sizeof(st));
	st.others = others;
	st.vm = new_vm(var);
	if (storm_fence_budget)
		st.vm->req_fence_budget = storm_fence_budget;
	st.mem = hmem_map(&hm, ST_SIZE, 2 * MB, host_page > PAGE);
	ASSERT_TRUE(st.mem != NULL);
	set_slot(st.vm, 1, 0, ST_GPA, st.mem, ST_SIZE, host_page);
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(vmmu_vcpu_create(st.vm, (unsigned int)i, &st.vcpu[i]));
		st.shadow[i] = calloc(ST_PAGES, sizeof(uint64_t));
		ASSERT_TRUE(st.shadow[i] != NULL);
		args[i] = (struct storm_arg){ &st, i };
	}
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, storm_vcpu, &args[i]);
	for (int i = 2; i < nt; i++)
		pthread_create(&t[i], NULL, storm_invalidator, &iargs[i - 2]);
	{
		/*
		 * The storm lasts until each vCPU has done ST_OPS accesses and
		 * the invalidator ST_MIN_INVALIDATIONS invalidations, however
		 * slow the machine: progress is counted in operations, on both
		 * sides, while the other side keeps going.  A vCPU the MMU
		 * starves never gets there; the deadline only turns that hang
		 * into a message (a healthy run takes well under a second).
		 */
		double deadline = now_s() + ST_LIVENESS_SECONDS;

		while (!fb_stopped(&st.fb) &&
		       (atomic_load(&st.ops[0]) < ST_OPS || atomic_load(&st.ops[1]) < ST_OPS ||
			atomic_load(&st.invalidations) < ST_MIN_INVALIDATIONS)) {
			if (now_s() > deadline) {
				fb_fail(&st.fb, "no progress: vCPU ops %llu+%llu of %u each, %llu invalidations",
					(unsigned long long)atomic_load(&st.ops[0]),
					(unsigned long long)atomic_load(&st.ops[1]), ST_OPS,
					(unsigned long long)atomic_load(&st.invalidations));
				break;
			}
			sleep_ms(2);
		}
	}
	atomic_store_explicit(&st.done, true, memory_order_release);
	for (int i = 0; i < nt; i++)
		pthread_join(t[i], NULL);
	ASSERT_FAILBOX(&st.fb);
	/* Nothing written before or around an invalidation was lost. */
	for (int i = 0; i < 2; i++) {
		for (uint64_t pg = 0; pg < ST_PAGES; pg++)
			if (st.shadow[i][pg])
				ASSERT_EQ_U64(*(uint64_t *)(st.mem + pg * PAGE + (uint64_t)i * 8), st.shadow[i][pg]);
		free(st.shadow[i]);
	}
	ASSERT_GE(atomic_load(&st.ops[0]), ST_OPS);
	ASSERT_GE(atomic_load(&st.ops[1]), ST_OPS);
	ASSERT_GE(atomic_load(&st.invalidations), ST_MIN_INVALIDATIONS);
	ASSERT_FALSE(vmmu_vm_bugged(st.vm, NULL));
	ASSERT_AUDIT(st.vm);
	/* Where the fence can change (not under TSan, not without membarrier):
	 * it did, many times. */
	if (storm_fence_budget && atomic_load(&st.vm->req_fence) != REQ_FENCE_ALWAYS) {
		uint64_t arms = atomic_load(&st.vm->req_fence_arms);

		ASSERT_GE(arms, 10);
	}
	fprintf(stderr, "    [%s host page %lluK%s%s] vCPU ops %llu+%llu, invalidations %llu (depth %llu), %llu pages poisoned, fence armed %llu times\n",
		var->name, (unsigned long long)host_page >> 10, others ? ", other ranges" : "",
		two ? ", two invalidators" : "", (unsigned long long)atomic_load(&st.ops[0]),
		(unsigned long long)atomic_load(&st.ops[1]), (unsigned long long)atomic_load(&st.invalidations),
		(unsigned long long)st.max_depth, (unsigned long long)st.poisoned_pages,
		(unsigned long long)atomic_load(&st.vm->req_fence_arms));
	vmmu_vm_destroy(st.vm);
	hmem_unmap(&hm);
}

TEST(invalidate_storm)
{
	for_each_mmu_variant(var)
		run_storm(var, PAGE, false, false);
}

TEST(invalidate_storm_hugepages)
{
	for_each_mmu_variant(var)
		run_storm(var, 2 * MB, false, false);
}

/* A vCPU makes progress against a stream of invalidations of other ranges
 * (issue 14 item 3), whatever else stays open meanwhile. */
TEST(invalidate_storm_other_ranges)
{
	for_each_mmu_variant(var) {
		run_storm(var, PAGE, true, false);
		run_storm(var, 2 * MB, true, false);
	}
}

TEST(invalidate_storm_fence_cycling)
{
	storm_fence_budget = 2;
	for_each_mmu_variant(var) {
		run_storm(var, PAGE, false, false);
		run_storm(var, PAGE, false, true);
	}
	storm_fence_budget = 0;
}

TEST(invalidate_storm_two_invalidators)
{
	for_each_mmu_variant(var) {
		run_storm(var, PAGE, false, true);
		run_storm(var, 2 * MB, false, true);
	}
}

/* ---- begin blocks the range until end ------------------------------------------------ */

#define BL_GPA (256 * MB)
#define BL_ALIAS_GPA (512 * MB)
#define BL_SIZE (4 * MB)	/* two 2 MiB regions: accesses in the other one go on */

struct blocked {
	vmmu_vcpu *vcpu;
	uint64_t gpa;
	unsigned int type;
	uint64_t val;
	int rc;
	struct vmmu_exit x;
	_Atomic bool done;
};

static void *blocked_access(void *p)
{
	struct blocked *b = p;

	b->rc = vmmu_vcpu_access(b->vcpu, b->gpa, &b->val, 8, b->type, &b->x);
	atomic_store_explicit(&b->done, true, memory_order_release);
	return NULL;
}

static bool wait_done(struct blocked *b, double seconds)
{
	double end = now_s() + seconds;

	while (!atomic_load_explicit(&b->done, memory_order_acquire)) {
		if (now_s() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

static void invalidate_blocks(const struct mmu_variant *var, uint64_t host_page)
{
	struct hmem hm;
	uint8_t *buf = hmem_map(&hm, BL_SIZE, 2 * MB, host_page > PAGE);
	uintptr_t b = (uintptr_t)buf;
	vmmu_vm *vm = new_vm(var);
	vmmu_vcpu *c0, *c1;
	struct vmmu_vm_stats st;
	struct blocked rd = { 0 }, wr = { 0 };
	pthread_t t;
	char why[200] = "";
	bool ok;

	ASSERT_TRUE(buf != NULL);
	set_slot(vm, 1, 0, BL_GPA, buf, BL_SIZE, host_page);
	set_slot(vm, 2, 0, BL_ALIAS_GPA, buf, BL_SIZE, PAGE);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c0));
	ASSERT_OK(vmmu_vcpu_create(vm, 1, &c1));
	for (uint64_t pg = 0; pg < BL_SIZE / PAGE; pg++) {
		EXPECT_WRITE_OK(c1, BL_GPA + pg * PAGE, tok(pg, 1));
		EXPECT_READ(c0, BL_ALIAS_GPA + pg * PAGE, tok(pg, 1));
	}

	/* Begin over everything: nothing of either alias stays mapped. */
	vmmu_invalidate_range_begin(vm, b, b + BL_SIZE);
	vmmu_vm_get_stats(vm, &st);
	vmmu_invalidate_range_end(vm, b, b + BL_SIZE);
	ASSERT_EQ(st.pages_4k + st.pages_2m + st.pages_1g, 0);

	/*
	 * A = pages [16, 32), B = [24, 40).  A read of page 30 from one vCPU
	 * waits through begin(A), begin(B), end(A) and completes after end(B).
	 * The same for a write of page 28 through the alias, which must not
	 * reach memory meanwhile.  The other vCPU keeps working elsewhere.
	 */
	vmmu_invalidate_range_begin(vm, b + 16 * PAGE, b + 32 * PAGE);
	rd = (struct blocked){ .vcpu = c0, .gpa = BL_GPA + 30 * PAGE, .type = VMMU_ACCESS_READ };
	pthread_create(&t, NULL, blocked_access, &rd);
	sleep_ms(20);
	ok = !atomic_load(&rd.done);
	if (!ok)
		snprintf(why, sizeof(why), "a read of an invalidated page completed before end (rc %d)", rd.rc);
	if (ok) {
		struct vmmu_exit x;
		uint64_t v = 0;

		/* Outside the range: mapped, and needing a fault (zapped). */
		ok = !rd64(c1, BL_GPA + 600 * PAGE, &v, &x) && v == tok(600, 1);
		if (ok && vmmu_zap_gfn_range(vm, (BL_ALIAS_GPA >> 12) + 700, (BL_ALIAS_GPA >> 12) + 701) == 0)
			ok = !wr64(c1, BL_ALIAS_GPA + 700 * PAGE, tok(700, 2), &x);
		if (!ok)
			snprintf(why, sizeof(why), "an access outside the invalidated range failed");
	}
	vmmu_invalidate_range_begin(vm, b + 24 * PAGE, b + 40 * PAGE);
	vmmu_invalidate_range_end(vm, b + 16 * PAGE, b + 32 * PAGE);
	if (ok) {
		sleep_ms(20);
		ok = !atomic_load(&rd.done);
		if (!ok)
			snprintf(why, sizeof(why), "the read completed while an overlapping invalidation was open");
	}
	/* The write waits from its start: only B is open now. */
	wr = (struct blocked){ .vcpu = c1, .gpa = BL_ALIAS_GPA + 28 * PAGE, .type = VMMU_ACCESS_WRITE,
			       .val = tok(28, 3) };
	{
		pthread_t t2;

		pthread_create(&t2, NULL, blocked_access, &wr);
		if (ok) {
			sleep_ms(20);
			ok = !atomic_load(&wr.done) && *(volatile uint64_t *)(buf + 28 * PAGE) == tok(28, 1);
			if (!ok)
				snprintf(why, sizeof(why), "a write into an invalidated page completed before end");
		}
		vmmu_invalidate_range_end(vm, b + 24 * PAGE, b + 40 * PAGE);
		if (!wait_done(&rd, 10) || !wait_done(&wr, 10)) {
			/* Nothing to clean up safely: the threads are stuck in the VM. */
			test_fail(__FILE__, __LINE__, "[%s] accesses still blocked 10 s after the last end", var->name);
		}
		pthread_join(t2, NULL);
	}
	pthread_join(t, NULL);
	if (!ok)
		test_fail(__FILE__, __LINE__, "[%s host page %lluK] %s", var->name, (unsigned long long)host_page >> 10,
			  why);
	ASSERT_EQ(rd.rc, 0);
	ASSERT_EQ_U64(rd.val, tok(30, 1));
	ASSERT_EQ(wr.rc, 0);
	ASSERT_EQ_U64(*(uint64_t *)(buf + 28 * PAGE), tok(28, 3));
	EXPECT_READ(c0, BL_GPA + 28 * PAGE, tok(28, 3));
	EXPECT_READ(c0, BL_GPA + 700 * PAGE, tok(700, 2));
	ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
	ASSERT_AUDIT(vm);
	vmmu_vm_destroy(vm);
	hmem_unmap(&hm);
}

TEST(invalidate_blocks_access)
{
	for_each_mmu_variant(var) {
		invalidate_blocks(var, PAGE);
		invalidate_blocks(var, 2 * MB);
	}
}

/* ---- an access waits for its own range only ----------------------------------------- */

#define WO_GPA (256 * MB)
#define WO_SIZE (8 * MB)

/* A read of gpa from a helper thread must complete (with the data). */
static void expect_read_completes(vmmu_vcpu *c, uint64_t gpa, uint64_t want, const char *what)
{
	struct blocked b = { .vcpu = c, .gpa = gpa, .type = VMMU_ACCESS_READ };
	pthread_t t;

	pthread_create(&t, NULL, blocked_access, &b);
	if (!wait_done(&b, 10))
		/* The thread is stuck in the VM: nothing can be cleaned up. */
		test_fail(__FILE__, __LINE__, "%s: the read of gpa %#llx still waits after 10 s", what,
			  (unsigned long long)gpa);
	pthread_join(t, NULL);
	if (b.rc)
		test_fail(__FILE__, __LINE__, "%s: read of gpa %#llx: rc %d exit %s", what, (unsigned long long)gpa,
			  b.rc, b.rc == VMMU_EXIT ? exit_name(b.x.reason) : "-");
	ASSERT_EQ_U64(b.val, want);
}

static void waits_only_for_its_range(const struct mmu_variant *var, uint64_t host_page)
{
	struct hmem hm;
	uint8_t *buf = hmem_map(&hm, WO_SIZE, 2 * MB, host_page > PAGE);
	uintptr_t b = (uintptr_t)buf;
	vmmu_vm *vm = new_vm(var);
	vmmu_vcpu *c0, *c1;

	ASSERT_TRUE(buf != NULL);
	set_slot(vm, 1, 0, WO_GPA, buf, WO_SIZE, host_page);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &c0));
	ASSERT_OK(vmmu_vcpu_create(vm, 1, &c1));
	for (uint64_t pg = 0; pg < WO_SIZE / PAGE; pg++)
		EXPECT_WRITE_OK(c0, WO_GPA + pg * PAGE, tok(pg, 1));

	/*
	 * A = page 16 stays open; B = page 600 begins and ends.  KVM's union
	 * of the open ranges would now hold back everything in [16, 601) until
	 * A ends; page 300 is in neither range and must not wait.  Page 17
	 * shares A's 2 MiB: with 2M host pages its fault would map the huge
	 * page over A, so it maps the 4K page instead of waiting.
	 */
	vmmu_invalidate_range_begin(vm, b + 16 * PAGE, b + 17 * PAGE);
	vmmu_invalidate_range_begin(vm, b + 600 * PAGE, b + 601 * PAGE);
	vmmu_invalidate_range_end(vm, b + 600 * PAGE, b + 601 * PAGE);
	/* Every read below must fault: nothing of the slot stays mapped. */
	ASSERT_OK(vmmu_zap_gfn_range(vm, WO_GPA >> 12, (WO_GPA + WO_SIZE) >> 12));
	expect_read_completes(c1, WO_GPA + 300 * PAGE, tok(300, 1), "between two ranges");
	expect_read_completes(c1, WO_GPA + 600 * PAGE, tok(600, 1), "an ended range");
	expect_read_completes(c1, WO_GPA + 17 * PAGE, tok(17, 1), "beside an open range, same 2 MiB");
	expect_read_completes(c1, WO_GPA + 511 * PAGE, tok(511, 1), "the end of that 2 MiB");
	/* And page 16 itself does wait: its read completes only after end. */
	{
		struct blocked rd = { .vcpu = c1, .gpa = WO_GPA + 16 * PAGE, .type = VMMU_ACCESS_READ };
		pthread_t t;

		pthread_create(&t, NULL, blocked_access, &rd);
		sleep_ms(20);
		if (atomic_load(&rd.done))
			test_fail(__FILE__, __LINE__, "[%s] a read of an invalidated page completed before end",
				  var->name);
		vmmu_invalidate_range_end(vm, b + 16 * PAGE, b + 17 * PAGE);
		if (!wait_done(&rd, 10))
			test_fail(__FILE__, __LINE__, "[%s] the read still waits 10 s after end", var->name);
		pthread_join(t, NULL);
		ASSERT_EQ(rd.rc, 0);
		ASSERT_EQ_U64(rd.val, tok(16, 1));
	}
	ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
	ASSERT_AUDIT(vm);
	vmmu_vm_destroy(vm);
	hmem_unmap(&hm);
}

TEST(invalidate_waits_only_for_its_range)
{
	for_each_mmu_variant(var) {
		waits_only_for_its_range(var, PAGE);
		waits_only_for_its_range(var, 2 * MB);
	}
}

/* ---- a fault retries only for ends that overlap it -------------------------------------- */

static struct {
	vmmu_vm *vm;
	uint64_t gfn;			/* the fault to stop */
	uintptr_t start, end;		/* what to invalidate there */
	_Atomic bool armed;
} fr;

/* In the fault, after its sample and host fault-in, before its check: an
 * invalidation begins and ends on this very thread. */
static void fr_hook(enum vmmu_test_hook_point point, uint64_t gfn)
{
	bool armed = true;

	if (point != VMMU_TEST_HOOK_FAULTIN_DONE || gfn != fr.gfn ||
	    !atomic_compare_exchange_strong(&fr.armed, &armed, false))
		return;
	vmmu_invalidate_range_begin(fr.vm, fr.start, fr.end);
	vmmu_invalidate_range_end(fr.vm, fr.start, fr.end);
}

static uint64_t pf_retries(vmmu_vcpu *c)
{
	struct vmmu_vcpu_stats st;

	vmmu_vcpu_get_stats(c, &st);
	return st.pf_retry;
}

/* A fresh page's first write with [first, last) of the slot invalidated
 * inside its fault: the retries it took. */
static uint64_t fr_case(vmmu_vm *vm, vmmu_vcpu *c, uint8_t *buf, uint64_t pg, uint64_t first, uint64_t last)
{
	uint64_t r0 = pf_retries(c);

	fr.vm = vm;
	fr.gfn = (WO_GPA >> 12) + pg;
	fr.start = (uintptr_t)buf + first * PAGE;
	fr.end = (uintptr_t)buf + last * PAGE;
	atomic_store(&fr.armed, true);
	EXPECT_WRITE_OK(c, WO_GPA + pg * PAGE, tok(pg, 2));
	if (atomic_load(&fr.armed))
		test_fail(__FILE__, __LINE__, "the fault of page %llu never reached the hook", (unsigned long long)pg);
	ASSERT_EQ_U64(*(uint64_t *)(buf + pg * PAGE), tok(pg, 2));
	EXPECT_READ(c, WO_GPA + pg * PAGE, tok(pg, 2));
	return pf_retries(c) - r0;
}

TEST(fault_retries_only_for_overlapping_ends)
{
	vmmu_set_test_hook(fr_hook);
	for_each_mmu_variant(var) {
		for (int huge = 0; huge < 2; huge++) {
			struct hmem hm;
			uint8_t *buf = hmem_map(&hm, WO_SIZE, 2 * MB, huge);
			vmmu_vm *vm = new_vm(var);
			vmmu_vcpu *c;

			ASSERT_TRUE(buf != NULL);
			set_slot(vm, 1, 0, WO_GPA, buf, WO_SIZE, huge ? 2 * MB : PAGE);
			ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
			/* An end elsewhere (the other 2 MiB): no retry. */
			ASSERT_EQ(fr_case(vm, c, buf, 5, 700, 710), 0);
			/* An end over the page: it retries, then completes. */
			ASSERT_GE(fr_case(vm, c, buf, 520 + (uint64_t)huge, 515, 530), 1);
			/* An end in the page's 2 MiB but not over the page: with 2M
			 * host pages the fault maps the 4K page instead. */
			if (var->mmu == VMMU_MMU_TDP || !huge)
				ASSERT_EQ(fr_case(vm, c, buf, 1100 + (uint64_t)huge, 1030, 1031), 0);
			ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
			ASSERT_AUDIT(vm);
			vmmu_vm_destroy(vm);
			hmem_unmap(&hm);
		}
	}
	vmmu_set_test_hook(NULL);
}

/* ---- two invalidations zapping the same range ---------------------------------------- */

static struct {
	vmmu_vm *vm;
	vmmu_vcpu *c;
	uintptr_t start, end;
	uint64_t gpa;
	_Atomic bool armed;
	int rc;
	struct vmmu_exit x;
} cz;

/*
 * Inside invalidation A, after its zap and before its flush: invalidation B
 * of the same range (this thread, so A cannot finish meanwhile) finds every
 * SPTE gone, and must still flush before it returns, since A has not.  Then
 * this thread's vCPU touches the page: with its translation flushed it
 * faults, sees the range open (begun by this thread) and exits; a TLB entry
 * that survived would let the read complete.
 */
static void cz_hook(enum vmmu_test_hook_point point, uint64_t hva)
{
	bool armed = true;
	uint64_t v;

	if (point != VMMU_TEST_HOOK_INV_ZAPPED || hva != cz.start ||
	    !atomic_compare_exchange_strong(&cz.armed, &armed, false))
		return;
	vmmu_invalidate_range_begin(cz.vm, cz.start, cz.end);
	cz.rc = vmmu_vcpu_access(cz.c, cz.gpa, &v, 8, VMMU_ACCESS_READ, &cz.x);
	vmmu_invalidate_range_end(cz.vm, cz.start, cz.end);
}

TEST(invalidate_flushes_for_a_concurrent_zap)
{
	vmmu_set_test_hook(cz_hook);
	for_each_tdp_variant(var) {
		struct hmem hm;
		uint8_t *buf = hmem_map(&hm, 2 * MB, 2 * MB, false);
		vmmu_vm *vm = new_vm(var);
		vmmu_vcpu *c;

		ASSERT_TRUE(buf != NULL);
		set_slot(vm, 1, 0, WO_GPA, buf, 2 * MB, PAGE);
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
		EXPECT_WRITE_OK(c, WO_GPA + 7 * PAGE, tok(7, 1));
		EXPECT_READ(c, WO_GPA + 7 * PAGE, tok(7, 1));	/* in the TLB now */
		cz = (typeof(cz)){ .vm = vm, .c = c, .start = (uintptr_t)buf + 7 * PAGE,
				   .end = (uintptr_t)buf + 8 * PAGE, .gpa = WO_GPA + 7 * PAGE };
		atomic_store(&cz.armed, true);
		vmmu_invalidate_range_begin(vm, cz.start, cz.end);
		ASSERT_FALSE(atomic_load(&cz.armed));
		if (cz.rc != VMMU_EXIT || cz.x.reason != VMMU_EXIT_RETRY)
			test_fail(__FILE__, __LINE__, "[%s] read inside two invalidations: rc %d exit %s", var->name,
				  cz.rc, cz.rc == VMMU_EXIT ? exit_name(cz.x.reason) : "-");
		ASSERT_EQ(cz.x.u.retry.cause, VMMU_RETRY_SELF);
		vmmu_invalidate_range_end(vm, cz.start, cz.end);
		EXPECT_READ(c, WO_GPA + 7 * PAGE, tok(7, 1));
		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		ASSERT_AUDIT(vm);
		vmmu_vm_destroy(vm);
		hmem_unmap(&hm);
	}
	vmmu_set_test_hook(NULL);
}

/* ---- release ----------------------------------------------------------------------- */

#define RL_OWNED_GPA (256 * MB)
#define RL_CALLER_GPA (512 * MB)
#define RL_RO_GPA (768 * MB)
#define RL_SIZE (2 * MB)

/* After release: an access to RAM is a memory fault at its page.  A write
 * to a READONLY slot needs no host memory (it is MMIO), and neither does a
 * gpa outside every slot, so MMIO is allowed there. */
static void expect_released(vmmu_vcpu *c, uint64_t gpa, unsigned int type, bool mmio_ok)
{
	struct vmmu_exit x;
	uint64_t v = 0;
	int rc = vmmu_vcpu_access(c, gpa, &v, 8, type, &x);

	if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_MEMORY_FAULT) {
		ASSERT_EQ_U64(x.u.memory_fault.gpa, gpa & ~(PAGE - 1));
		ASSERT_EQ(x.u.memory_fault.error, VMMU_EFAULT);
		return;
	}
	if (mmio_ok && rc == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO)
		return;
	test_fail(__FILE__, __LINE__, "%s at gpa %#llx after release: rc %d exit %s",
		  type == VMMU_ACCESS_WRITE ? "write" : "read", (unsigned long long)gpa, rc,
		  rc == VMMU_EXIT ? exit_name(x.reason) : "-");
}

TEST(release_every_access_faults)
{
	for_each_mmu_variant(var) {
		struct hmem hm, hr;
		uint8_t *buf = hmem_map(&hm, RL_SIZE, 2 * MB, true), *rob = hmem_map(&hr, 64 * 1024, PAGE, false);
		vmmu_vm *vm = new_vm(var);
		vmmu_vcpu *c;
		struct vmmu_vm_stats st;
		struct vmmu_memslot owned = { .slot = 0, .gpa = RL_OWNED_GPA, .size = RL_SIZE,
					      .host_page_size = 2 * MB };

		ASSERT_TRUE(buf && rob);
		ASSERT_OK(vmmu_set_memslot(vm, &owned));
		set_slot(vm, 1, 0, RL_CALLER_GPA, buf, RL_SIZE, 2 * MB);
		set_slot(vm, 2, VMMU_MEM_READONLY, RL_RO_GPA, rob, 64 * 1024, PAGE);
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
		for (uint64_t o = 0; o < RL_SIZE; o += 64 * 1024) {
			EXPECT_WRITE_OK(c, RL_OWNED_GPA + o, tok(o, 1));
			EXPECT_WRITE_OK(c, RL_CALLER_GPA + o, tok(o, 2));
			EXPECT_READ(c, RL_CALLER_GPA + o, tok(o, 2));
		}
		EXPECT_READ(c, RL_RO_GPA + 8, 0);

		vmmu_release(vm);
		vmmu_vm_get_stats(vm, &st);
		ASSERT_EQ(st.pages_4k + st.pages_2m + st.pages_1g, 0);
		for (uint64_t o = 0; o < RL_SIZE; o += 32 * 1024) {
			expect_released(c, RL_OWNED_GPA + o, VMMU_ACCESS_READ, false);
			expect_released(c, RL_OWNED_GPA + o + 8, VMMU_ACCESS_WRITE, false);
			expect_released(c, RL_CALLER_GPA + o, VMMU_ACCESS_READ, false);
			expect_released(c, RL_CALLER_GPA + o + 16, VMMU_ACCESS_WRITE, false);
		}
		expect_released(c, RL_RO_GPA, VMMU_ACCESS_READ, false);
		expect_released(c, RL_RO_GPA, VMMU_ACCESS_WRITE, true);
		expect_released(c, 2048 * MB, VMMU_ACCESS_READ, true);
		/* The address space is gone for real: still exits, no crash. */
		ASSERT_EQ(mprotect(buf, RL_SIZE, PROT_NONE), 0);
		ASSERT_EQ(mprotect(rob, 64 * 1024, PROT_NONE), 0);
		expect_released(c, RL_CALLER_GPA + 4 * PAGE, VMMU_ACCESS_READ, false);
		expect_released(c, RL_CALLER_GPA + 4 * PAGE, VMMU_ACCESS_WRITE, false);
		expect_released(c, RL_RO_GPA + 4 * PAGE, VMMU_ACCESS_READ, false);
		ASSERT_FALSE(vmmu_vm_bugged(vm, NULL));
		vmmu_vm_destroy(vm);	/* LSan (ASan tree) checks nothing leaks */
		hmem_unmap(&hm);
		hmem_unmap(&hr);
	}
}

#define RR_GPA (256 * MB)
#define RR_SIZE (4 * MB)

struct rr {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	_Atomic bool released;	/* set once vmmu_release() has returned */
	_Atomic uint64_t progress;	/* accesses that completed before it */
	uint64_t before[2], after[2];
	struct failbox fb;
};

struct rr_arg {
	struct rr *r;
	int id;
};

static void *rr_vcpu(void *p)
{
	struct rr_arg *a = p;
	struct rr *r = a->r;
	uint64_t seed = 99 + (uint64_t)a->id;
	struct vmmu_exit x;

	/* Until 1000 accesses that started after release all faulted. */
	while (!fb_stopped(&r->fb) && r->after[a->id] < 1000) {
		uint64_t rnd = xorshift(&seed), gpa = RR_GPA + (rnd % (RR_SIZE / 8)) * 8, v = rnd;
		bool rel = atomic_load_explicit(&r->released, memory_order_acquire);
		unsigned int type = (rnd >> 62) ? VMMU_ACCESS_READ : VMMU_ACCESS_WRITE;
		int rc = vmmu_vcpu_access(r->vcpu[a->id], gpa, &v, 8, type, &x);

		if (rc == 0 && !rel) {
			r->before[a->id]++;
			atomic_fetch_add_explicit(&r->progress, 1, memory_order_relaxed);
			continue;
		}
		if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_MEMORY_FAULT && x.u.memory_fault.gpa == (gpa & ~(PAGE - 1))) {
			if (rel)
				r->after[a->id]++;
			continue;
		}
		fb_fail(&r->fb, "vCPU %d: %s at %#llx %s release: rc %d exit %s", a->id,
			type == VMMU_ACCESS_WRITE ? "write" : "read", (unsigned long long)gpa,
			rel ? "after" : "racing with", rc, rc == VMMU_EXIT ? exit_name(x.reason) : "-");
	}
	return NULL;
}

TEST(release_while_vcpus_run)
{
	for_each_mmu_variant(var) {
		struct rr r;
		struct rr_arg args[2];
		struct hmem hm;
		uint8_t *buf = hmem_map(&hm, RR_SIZE, 2 * MB, true);
		pthread_t t[2];

		ASSERT_TRUE(buf != NULL);
		memset(&r, 0, sizeof(r));
		r.vm = new_vm(var);
		set_slot(r.vm, 1, 0, RR_GPA, buf, RR_SIZE, 2 * MB);
		for (int i = 0; i < 2; i++) {
			ASSERT_OK(vmmu_vcpu_create(r.vm, (unsigned int)i, &r.vcpu[i]));
			args[i] = (struct rr_arg){ &r, i };
		}
		for (int i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, rr_vcpu, &args[i]);
		/* Release while both are busy. */
		{
			double end = now_s() + 10;

			while (atomic_load(&r.progress) < 1000 && !fb_stopped(&r.fb) && now_s() < end)
				sleep_ms(1);
		}
		vmmu_release(r.vm);
		atomic_store_explicit(&r.released, true, memory_order_release);
		/* The mm is gone: a vCPU still using an old translation crashes. */
		if (mprotect(buf, RR_SIZE, PROT_NONE))
			fb_fail(&r.fb, "mprotect(PROT_NONE) failed");
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		ASSERT_FAILBOX(&r.fb);
		ASSERT_GT(r.before[0] + r.before[1], 0);
		ASSERT_FALSE(vmmu_vm_bugged(r.vm, NULL));
		vmmu_vm_destroy(r.vm);
		hmem_unmap(&hm);
	}
}

/* ---- delete or move a slot under a running vCPU ------------------------------------ */

#define MV_GPA (512 * MB)
#define MV_AWAY_GPA (1024 * MB)
#define MV_SIZE (64 * 1024)
#define MV_EPOCHS 150

struct mv {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[3];
	_Atomic uint64_t epoch;	/* every buffer created after it holds a larger one */
	_Atomic bool done;
	uint64_t reads[2], mmio[2];
	uint8_t *bufs[MV_EPOCHS + 1];
	struct failbox fb;
};

struct mv_arg {
	struct mv *m;
	int id;
};

/* vCPU 0 reads at the slot's home, vCPU 1 where it moves to. */
static void *mv_reader(void *p)
{
	struct mv_arg *a = p;
	struct mv *m = a->m;
	uint64_t seed = 4242 + (uint64_t)a->id, base = a->id ? MV_AWAY_GPA : MV_GPA;
	struct vmmu_exit x;

	while (!fb_stopped(&m->fb) && !atomic_load_explicit(&m->done, memory_order_acquire)) {
		uint64_t e0 = atomic_load_explicit(&m->epoch, memory_order_acquire);
		uint64_t gpa = base + (xorshift(&seed) % (MV_SIZE / 8)) * 8, v = 0;
		int rc = rd64(m->vcpu[a->id], gpa, &v, &x);

		if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO) {
			m->mmio[a->id]++;
			continue;
		}
		if (rc || v < e0)
			fb_fail(&m->fb, "vCPU %d read epoch %llu at %#llx after epoch %llu was published (rc %d exit %s)",
				a->id, (unsigned long long)v, (unsigned long long)gpa, (unsigned long long)e0, rc,
				rc == VMMU_EXIT ? exit_name(x.reason) : "-");
		m->reads[a->id]++;
	}
	return NULL;
}

static uint8_t *mv_buf(uint64_t epoch)
{
	uint8_t *b = mmap(NULL, MV_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (b == MAP_FAILED)
		return NULL;
	for (size_t i = 0; i < MV_SIZE; i += 8)
		memcpy(b + i, &epoch, 8);
	return b;
}

/* The main thread's own vCPU: gpa must be MMIO, or hold epoch e. */
static bool mv_probe(struct mv *m, uint64_t gpa, uint64_t want)
{
	struct vmmu_exit x;
	uint64_t v = 0;
	int rc = rd64(m->vcpu[2], gpa, &v, &x);

	if (want == 0)
		return rc == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO;
	return rc == 0 && v == want;
}

TEST(slot_delete_move_while_running)
{
	for_each_mmu_variant(var) {
		struct mv m;
		struct mv_arg args[2];
		pthread_t t[2];
		struct vmmu_memslot ms = { .slot = 5, .gpa = MV_GPA, .size = MV_SIZE, .host_page_size = PAGE };
		double end = now_s() + 0.2;
		uint64_t e;

		memset(&m, 0, sizeof(m));
		m.vm = new_vm(var);
		m.bufs[1] = mv_buf(1);
		ASSERT_TRUE(m.bufs[1] != NULL);
		ms.hva = m.bufs[1];
		ASSERT_OK(vmmu_set_memslot(m.vm, &ms));
		atomic_store(&m.epoch, 1);
		for (int i = 0; i < 3; i++)
			ASSERT_OK(vmmu_vcpu_create(m.vm, (unsigned int)i, &m.vcpu[i]));
		for (int i = 0; i < 2; i++) {
			args[i] = (struct mv_arg){ &m, i };
			pthread_create(&t[i], NULL, mv_reader, &args[i]);
		}
		for (e = 2; e <= MV_EPOCHS && !fb_stopped(&m.fb) && (e < 20 || now_s() < end); e++) {
			int rc;

			/* Away: the home gpa is MMIO, the data is where the slot went. */
			ms.gpa = MV_AWAY_GPA;
			if ((rc = vmmu_set_memslot(m.vm, &ms)))
				fb_fail(&m.fb, "move away: %s", vmmu_strerror(rc));
			else if (!mv_probe(&m, MV_GPA + 8, 0) || !mv_probe(&m, MV_AWAY_GPA + 8, e - 1))
				fb_fail(&m.fb, "epoch %llu: after the move away", (unsigned long long)e);
			/* And back. */
			ms.gpa = MV_GPA;
			if ((rc = vmmu_set_memslot(m.vm, &ms)))
				fb_fail(&m.fb, "move back: %s", vmmu_strerror(rc));
			else if (!mv_probe(&m, MV_GPA + 16, e - 1) || !mv_probe(&m, MV_AWAY_GPA + 16, 0))
				fb_fail(&m.fb, "epoch %llu: after the move back", (unsigned long long)e);
			/* Replace the backing: delete, retire the buffer, create. */
			m.bufs[e] = mv_buf(e);
			if (!m.bufs[e]) {
				fb_fail(&m.fb, "mmap failed");
				break;
			}
			ms.size = 0;
			if ((rc = vmmu_set_memslot(m.vm, &ms)))
				fb_fail(&m.fb, "delete: %s", vmmu_strerror(rc));
			else if (!mv_probe(&m, MV_GPA + 24, 0))
				fb_fail(&m.fb, "epoch %llu: the deleted slot is still readable", (unsigned long long)e);
			mprotect(m.bufs[e - 1], MV_SIZE, PROT_NONE);
			ms.size = MV_SIZE;
			ms.hva = m.bufs[e];
			if ((rc = vmmu_set_memslot(m.vm, &ms)))
				fb_fail(&m.fb, "re-create: %s", vmmu_strerror(rc));
			atomic_store_explicit(&m.epoch, e, memory_order_release);
		}
		atomic_store_explicit(&m.done, true, memory_order_release);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		ASSERT_FAILBOX(&m.fb);
		fprintf(stderr, "    [%s] %llu epochs, reads %llu+%llu, mmio exits %llu+%llu\n", var->name,
			(unsigned long long)e - 1, (unsigned long long)m.reads[0], (unsigned long long)m.reads[1],
			(unsigned long long)m.mmio[0], (unsigned long long)m.mmio[1]);
		ASSERT_FALSE(vmmu_vm_bugged(m.vm, NULL));
		ASSERT_AUDIT(m.vm);
		vmmu_vm_destroy(m.vm);
		for (uint64_t i = 1; i < e; i++)
			munmap(m.bufs[i], MV_SIZE);
	}
}

/*
 * A move may change the dirty-logging flag in the same call (KVM builds the
 * moved slot from the request, flags included): the result must be exactly
 * what the request said, logged or not.
 */
TEST(slot_move_changes_logging)
{
	for_each_mmu_variant(var) {
		struct hmem hm;
		uint8_t *buf = hmem_map(&hm, 64 * 1024, PAGE, false);
		vmmu_vm *vm = new_vm(var);
		vmmu_vcpu *c;
		uint64_t bm[1] = { 0 };

		ASSERT_TRUE(buf != NULL);
		ASSERT_OK(vmmu_vcpu_create(vm, 0, &c));
		set_slot(vm, 1, 0, MV_GPA, buf, 64 * 1024, PAGE);
		EXPECT_WRITE_OK(c, MV_GPA, 1);
		ASSERT_ERR(vmmu_get_dirty_log(vm, 1, bm), VMMU_EINVAL);
		/* Moved, and logging on. */
		set_slot(vm, 1, VMMU_MEM_LOG_DIRTY_PAGES, MV_AWAY_GPA, buf, 64 * 1024, PAGE);
		EXPECT_WRITE_OK(c, MV_AWAY_GPA + 3 * PAGE, 2);
		ASSERT_OK(vmmu_get_dirty_log(vm, 1, bm));
		ASSERT_TRUE(bm[0] & (1ULL << 3));
		/* Moved back, and logging off. */
		set_slot(vm, 1, 0, MV_GPA, buf, 64 * 1024, PAGE);
		ASSERT_ERR(vmmu_get_dirty_log(vm, 1, bm), VMMU_EINVAL);
		EXPECT_WRITE_OK(c, MV_GPA + 5 * PAGE, 3);
		ASSERT_EQ_U64(*(uint64_t *)(buf + 5 * PAGE), 3);
		ASSERT_AUDIT(vm);
		vmmu_vm_destroy(vm);
		hmem_unmap(&hm);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
