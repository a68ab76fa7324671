/* SPDX-License-Identifier: MIT */
/*
 * migrate: pre-copy live migration of a running guest to a second VM.
 *
 * The source VM has 32 MiB of RAM and two vCPU threads that never stop
 * writing to it (mostly to a small hot set of pages, sometimes anywhere, as
 * a real guest does).  The main thread is the migration: it turns dirty
 * logging on for the slot while the guest runs, copies all of RAM into the
 * destination VM, then keeps copying what the guest dirtied since the last
 * pass until the dirty set stops shrinking; then it stops the vCPUs, copies
 * the last dirty pages (the downtime), moves the vCPU state over and checks
 * that the destination's memory is the source's, byte for byte, both from
 * the host side and as a vCPU of the destination reads it through its MMU.
 *
 * Dirty pages are harvested with one of vmmu's two interfaces, as KVM's:
 *   default   per-vCPU dirty rings (KVM_CAP_DIRTY_LOG_RING): the vCPU
 *             publishes each page it dirties; a vCPU whose ring is full
 *             stops with VMMU_EXIT_DIRTY_RING_FULL until the migration has
 *             harvested and reset the rings;
 *   --bitmap  a dirty bitmap with manual clearing
 *             (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): vmmu_get_dirty_log()
 *             only reports, and each part of the bitmap is cleared (its
 *             pages write-protected again) just before that part is copied.
 * Either way a page is copied only after its dirty state was reset, so a
 * write the copy misses is reported again and copied on the next pass.
 *
 * Exit status 0 when the destination matched, 1 otherwise.  Build:
 *   cc -O2 -pthread -o migrate migrate.c $(pkg-config --cflags --libs vmmu)
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmmu/vmmu.h>

#define PAGE 4096ULL
#define MiB (1ULL << 20)
#define RAM_SIZE (32 * MiB)
#define NPAGES (RAM_SIZE / PAGE)
#define NR_VCPUS 2
#define VCPU_PAGES (NPAGES / NR_VCPUS)	/* each vCPU writes its own part */
#define HOT_PAGES 64			/* ...nearly always to its first HOT_PAGES, */
#define COLD_ONE_IN 1024		/* ...once in COLD_ONE_IN stores anywhere in it, */
#define SWEEP_EVERY (1u << 18)		/* ...and every SWEEP_EVERY stores to each of its pages */
#define RING_ENTRIES 1024		/* the smallest ring: a sweep fills it */
#define CONVERGED_PAGES 512		/* few enough dirty pages to stop and copy */
#define MAX_ROUNDS 50			/* ...or stop anyway: the guest dirties too fast */
#define CLEAR_CHUNK 512			/* pages cleared then copied at a time (--bitmap) */

struct migration {
	vmmu_vm *src, *dst;
	uint8_t *src_ram, *dst_ram;
	bool use_bitmap;
	uint8_t dirty[NPAGES];		/* pages collected by one harvest */
	uint64_t bitmap[NPAGES / 64];

	/*
	 * The vCPUs' side.  resets and stop change under lock (so that a vCPU
	 * waiting on reset_done cannot miss a change) and are read without it
	 * on the guest's fast path.
	 */
	pthread_mutex_t lock;
	pthread_cond_t reset_done;	/* rings were reset, or stop was set */
	_Atomic uint64_t resets;
	_Atomic bool stop;
	_Atomic bool failed;
	_Atomic unsigned int ring_waiters;	/* vCPUs waiting for the next reset */
	unsigned int started;		/* vCPU threads running */
};

struct vcpu_thread {
	struct migration *mig;
	unsigned int id;
	vmmu_vcpu *vcpu, *dst_vcpu;
	struct vmmu_dirty_gfn *ring;
	uint32_t ring_size, ring_head;	/* the head is the migration's */
	pthread_t thread;
	_Atomic uint64_t writes;	/* read by the migration to pace itself */
	uint64_t ring_full_exits;
};

static struct vcpu_thread vcpus[NR_VCPUS];

static void lock(pthread_mutex_t *l)
{
	int r = pthread_mutex_lock(l);

	if (r) {
		fprintf(stderr, "pthread_mutex_lock: %s\n", strerror(r));
		abort();
	}
}

static void unlock(pthread_mutex_t *l)
{
	int r = pthread_mutex_unlock(l);

	if (r) {
		fprintf(stderr, "pthread_mutex_unlock: %s\n", strerror(r));
		abort();
	}
}

/* ---- the guest -------------------------------------------------------------- */

/*
 * A ring-full exit: the vCPU waits until the migration has reset the rings
 * (as a KVM vCPU thread returns to its VMM), or gives up if the VM is being
 * stopped: nothing of the access was done, so stopping here loses nothing.
 * Returns true to retry the access.
 */
static bool wait_for_ring_reset(struct vcpu_thread *t, uint64_t resets_before)
{
	struct migration *mig = t->mig;
	bool retry;
	int r = 0;

	lock(&mig->lock);
	if (atomic_load(&mig->resets) == resets_before)
		atomic_fetch_add(&mig->ring_waiters, 1);	/* the next reset clears it */
	while (atomic_load(&mig->resets) == resets_before && !atomic_load(&mig->stop) && !r)
		r = pthread_cond_wait(&mig->reset_done, &mig->lock);
	retry = !atomic_load(&mig->stop) && !r;
	unlock(&mig->lock);
	if (r) {
		fprintf(stderr, "pthread_cond_wait: %s\n", strerror(r));
		atomic_store(&t->mig->failed, true);
	}
	return retry;
}

/* One guest store, run until done.  Returns false when the vCPU is to stop. */
static bool guest_store(struct vcpu_thread *t, uint64_t gpa, uint64_t val)
{
	for (;;) {
		struct vmmu_exit exit;
		uint64_t resets = atomic_load(&t->mig->resets);
		int r = vmmu_vcpu_access(t->vcpu, gpa, &val, 8, VMMU_ACCESS_WRITE, &exit);

		if (r == 0)
			return true;
		if (r == VMMU_EXIT && exit.reason == VMMU_EXIT_DIRTY_RING_FULL) {
			/* An aligned 8-byte store is in one page: none of it was done. */
			t->ring_full_exits++;
			if (!wait_for_ring_reset(t, resets))
				return false;
			continue;
		}
		if (r == VMMU_EXIT)
			fprintf(stderr, "vcpu %u: exit reason %u at gpa 0x%" PRIx64 "\n", t->id, exit.reason, gpa);
		else
			fprintf(stderr, "vcpu %u: vmmu_vcpu_access: %s\n", t->id, vmmu_strerror(r));
		atomic_store(&t->mig->failed, true);
		return false;
	}
}

static void *guest_fn(void *arg)
{
	struct vcpu_thread *t = arg;
	uint64_t rng = 0x2545f4914f6cdd1dULL * (t->id + 1), seq = 0, sweep = VCPU_PAGES;
	uint64_t base = (uint64_t)t->id * VCPU_PAGES * PAGE;

	while (!atomic_load(&t->mig->stop)) {
		uint64_t page;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		if (sweep < VCPU_PAGES)
			page = sweep++;
		else if (rng % COLD_ONE_IN)
			page = (rng >> 10) % HOT_PAGES;
		else
			page = (rng >> 10) % VCPU_PAGES;
		/* Every store changes memory: a missed copy cannot go unseen. */
		if (!guest_store(t, base + page * PAGE + ((rng >> 40) % (PAGE / 8)) * 8, (uint64_t)t->id << 56 | ++seq))
			break;
		atomic_fetch_add_explicit(&t->writes, 1, memory_order_relaxed);
		if (seq % SWEEP_EVERY == 0)
			sweep = 0;
	}
	return NULL;
}

/* ---- collecting dirty pages ------------------------------------------------------ */

static uint64_t guest_writes(void)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < NR_VCPUS; i++)
		n += atomic_load_explicit(&vcpus[i].writes, memory_order_relaxed);
	return n;
}

/*
 * Rings: take every published entry of every vCPU, mark it harvested, then
 * reset the rings, which write-protects those pages again.  Only then may
 * the pages be copied: a store between the harvest and the reset is in the
 * copy, one after the reset dirties the page anew.
 */
static int harvest_rings(struct migration *mig, uint64_t *pages)
{
	int r;

	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		struct vcpu_thread *t = &vcpus[i];

		for (;;) {
			struct vmmu_dirty_gfn *e = &t->ring[t->ring_head & (t->ring_size - 1)];

			/* Acquire: the entry's slot and offset were written before its flags. */
			if (__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) != VMMU_DIRTY_GFN_DIRTY)
				break;
			if (e->slot != 0 || e->offset >= NPAGES) {
				fprintf(stderr, "ring of vcpu %u: entry for slot %u page %" PRIu64 "\n", i, e->slot,
					e->offset);
				return -1;
			}
			if (!mig->dirty[e->offset]) {
				mig->dirty[e->offset] = 1;
				(*pages)++;
			}
			__atomic_store_n(&e->flags, VMMU_DIRTY_GFN_HARVESTED, __ATOMIC_RELEASE);
			t->ring_head++;
		}
	}
	r = vmmu_reset_dirty_rings(mig->src);
	if (r < 0) {
		fprintf(stderr, "vmmu_reset_dirty_rings: %s\n", vmmu_strerror(r));
		return -1;
	}
	/* vCPUs stopped on a full ring may run again. */
	lock(&mig->lock);
	atomic_fetch_add(&mig->resets, 1);
	atomic_store(&mig->ring_waiters, 0);
	unlock(&mig->lock);
	r = pthread_cond_broadcast(&mig->reset_done);
	if (r) {
		fprintf(stderr, "pthread_cond_broadcast: %s\n", strerror(r));
		return -1;
	}
	return 0;
}

/*
 * Pauses the source for good: every vCPU thread returns, after its current
 * access or from a ring-full wait (before that access).  Idempotent, so
 * that error paths can call it too.  Returns -1 if a thread failed.
 */
static int stop_vcpus(struct migration *mig)
{
	int r, bad = 0;

	lock(&mig->lock);
	atomic_store(&mig->stop, true);
	unlock(&mig->lock);
	r = pthread_cond_broadcast(&mig->reset_done);
	if (r) {
		/* A waiter could sleep forever: no join is safe. */
		fprintf(stderr, "pthread_cond_broadcast: %s\n", strerror(r));
		abort();
	}
	for (; mig->started > 0; mig->started--) {
		r = pthread_join(vcpus[mig->started - 1].thread, NULL);
		if (r) {
			fprintf(stderr, "pthread_join: %s\n", strerror(r));
			abort();
		}
	}
	if (atomic_load(&mig->failed))
		bad = -1;
	return bad;
}

/*
 * One page from the running source to the destination.  The guest may be
 * storing to it at this very moment: the copy may then hold a mix of old
 * and new words, but the page is dirty again and is copied once more later.
 * Word-sized atomic loads make that race well defined (vmmu performs aligned
 * 8-byte guest stores as single atomic stores, as x86 does).
 */
static void copy_page(struct migration *mig, uint64_t page)
{
	const uint64_t *from = (const uint64_t *)(mig->src_ram + page * PAGE);
	uint64_t *to = (uint64_t *)(mig->dst_ram + page * PAGE);

	for (uint64_t i = 0; i < PAGE / 8; i++)
		to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* One pass: collect what was dirtied since the last one, copy it.  Returns the page count or -1. */
static int64_t copy_dirty(struct migration *mig)
{
	uint64_t pages = 0;
	int r;

	if (!mig->use_bitmap) {
		memset(mig->dirty, 0, sizeof(mig->dirty));
		if (harvest_rings(mig, &pages))
			return -1;
		for (uint64_t p = 0; p < NPAGES; p++)
			if (mig->dirty[p])
				copy_page(mig, p);
		return (int64_t)pages;
	}
	/* With VMMU_VM_MANUAL_PROTECT this only reports; nothing is cleared yet. */
	r = vmmu_get_dirty_log(mig->src, 0, mig->bitmap);
	if (r) {
		fprintf(stderr, "vmmu_get_dirty_log: %s\n", vmmu_strerror(r));
		return -1;
	}
	/*
	 * Clear a part, then copy it: the later a part's bits are cleared, the
	 * fewer of its pages are reported again for stores that the copy itself
	 * includes.  The cleared bits are exactly those about to be copied.
	 */
	for (uint64_t first = 0; first < NPAGES; first += CLEAR_CHUNK) {
		const uint64_t *bits = &mig->bitmap[first / 64];

		r = vmmu_clear_dirty_log(mig->src, 0, first, CLEAR_CHUNK, bits);
		if (r) {
			fprintf(stderr, "vmmu_clear_dirty_log: %s\n", vmmu_strerror(r));
			return -1;
		}
		for (uint64_t p = first; p < first + CLEAR_CHUNK; p++)
			if (bits[(p - first) / 64] >> ((p - first) % 64) & 1) {
				copy_page(mig, p);
				pages++;
			}
	}
	return (int64_t)pages;
}

/*
 * Lets the guest run between passes: a millisecond or two (the time a real
 * migration spends sending pages), at least until it stored something, and
 * no longer once a vCPU waits on a full ring.
 */
static int let_guest_run(struct migration *mig, uint64_t writes_before)
{
	const struct timespec ms = { 0, 1000000 };

	for (int i = 0; i < 10000; i++) {
		if (atomic_load(&mig->ring_waiters))
			return 0;
		if (guest_writes() != writes_before && i >= 2)
			return 0;
		nanosleep(&ms, NULL);
	}
	fprintf(stderr, "the guest stopped writing\n");
	return -1;
}

/* ---- checking the destination ---------------------------------------------------- */

static int verify(struct migration *mig)
{
	uint8_t buf[PAGE];

	/* The host's view: the two RAMs are equal. */
	for (uint64_t p = 0; p < NPAGES; p++)
		if (memcmp(mig->src_ram + p * PAGE, mig->dst_ram + p * PAGE, PAGE)) {
			fprintf(stderr, "page %" PRIu64 " differs between source and destination\n", p);
			return -1;
		}
	/* The destination guest's view, through its vCPU and MMU. */
	for (uint64_t p = 0; p < NPAGES; p++) {
		struct vmmu_exit exit;
		int r = vmmu_vcpu_access(vcpus[p % NR_VCPUS].dst_vcpu, p * PAGE, buf, PAGE, VMMU_ACCESS_READ, &exit);

		if (r) {
			fprintf(stderr, "destination read of page %" PRIu64 ": %s\n", p,
				r == VMMU_EXIT ? "exit" : vmmu_strerror(r));
			return -1;
		}
		if (memcmp(buf, mig->src_ram + p * PAGE, PAGE)) {
			fprintf(stderr, "destination vCPU reads page %" PRIu64 " wrong\n", p);
			return -1;
		}
	}
	return 0;
}

/* ---- setup ------------------------------------------------------------------------- */

static int create_vm(struct migration *mig, bool source, vmmu_vm **vm, uint8_t **ram)
{
	struct vmmu_vm_config cfg;
	/* 2 MiB host pages (THP): logging splits the source's huge mappings. */
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = RAM_SIZE, .host_page_size = 2 * MiB };
	void *hva;
	int r;

	vmmu_vm_config_init(&cfg);
	cfg.max_vcpus = NR_VCPUS;
	if (source && mig->use_bitmap)
		cfg.flags |= VMMU_VM_MANUAL_PROTECT;
	else if (source)
		cfg.dirty_ring_size = RING_ENTRIES;
	r = vmmu_vm_create(&cfg, vm);
	if (!r)
		r = vmmu_set_memslot(*vm, &slot);	/* hva NULL: vmmu allocates the RAM */
	if (!r)
		r = vmmu_memslot_hva(*vm, 0, &hva);
	if (r) {
		fprintf(stderr, "creating the %s VM: %s\n", source ? "source" : "destination", vmmu_strerror(r));
		return -1;
	}
	*ram = hva;
	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		struct vcpu_thread *t = &vcpus[i];

		r = vmmu_vcpu_create(*vm, i, source ? &t->vcpu : &t->dst_vcpu);
		if (r) {
			fprintf(stderr, "vmmu_vcpu_create: %s\n", vmmu_strerror(r));
			return -1;
		}
		if (source && !mig->use_bitmap) {
			r = vmmu_vcpu_dirty_ring(t->vcpu, &t->ring, &t->ring_size);
			if (r) {
				fprintf(stderr, "vmmu_vcpu_dirty_ring: %s\n", vmmu_strerror(r));
				return -1;
			}
		}
	}
	return 0;
}

static int migrate(struct migration *mig)
{
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = RAM_SIZE, .host_page_size = 2 * MiB,
				     .flags = VMMU_MEM_LOG_DIRTY_PAGES };
	uint64_t writes = guest_writes(), ring_fulls = 0;
	int64_t n;
	int r, round;

	/* Logging first, then the full copy: whatever the copy misses is logged. */
	r = vmmu_set_memslot(mig->src, &slot);	/* same slot, only the flags change */
	if (r) {
		fprintf(stderr, "turning dirty logging on: %s\n", vmmu_strerror(r));
		return -1;
	}
	for (uint64_t p = 0; p < NPAGES; p++)
		copy_page(mig, p);
	printf("round 0: copied all %llu pages\n", (unsigned long long)NPAGES);

	for (round = 1; round <= MAX_ROUNDS; round++) {
		uint64_t before[NR_VCPUS];
		bool stored = false;

		for (unsigned int i = 0; i < NR_VCPUS; i++)
			before[i] = atomic_load(&vcpus[i].writes);
		if (let_guest_run(mig, guest_writes()))
			return -1;
		/*
		 * A vCPU whose count rose by two made a whole store after the
		 * last pass and before this one: its page must be reported.
		 */
		for (unsigned int i = 0; i < NR_VCPUS; i++)
			stored |= atomic_load(&vcpus[i].writes) - before[i] >= 2;
		n = copy_dirty(mig);
		if (n < 0)
			return -1;
		printf("round %d: copied %" PRId64 " dirty pages\n", round, n);
		if (n == 0 && stored) {
			fprintf(stderr, "round %d: the guest wrote but no page is dirty\n", round);
			return -1;
		}
		if (n <= CONVERGED_PAGES)
			break;
	}

	/* Stop and copy: pause the vCPUs, copy what they dirtied last. */
	if (stop_vcpus(mig))
		return -1;
	for (unsigned int i = 0; i < NR_VCPUS; i++)
		ring_fulls += vcpus[i].ring_full_exits;
	n = copy_dirty(mig);
	if (n < 0)
		return -1;
	/* The vCPUs' registers go too (here only the paging state matters). */
	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		struct vmmu_cpu_state st;

		r = vmmu_vcpu_get_state(vcpus[i].vcpu, &st);
		if (!r)
			r = vmmu_vcpu_set_state(vcpus[i].dst_vcpu, &st);
		if (r) {
			fprintf(stderr, "moving vcpu %u's state: %s\n", i, vmmu_strerror(r));
			return -1;
		}
	}
	printf("stop-and-copy: %" PRId64 " pages; the guest stored %" PRIu64 " times during migration, "
	       "%" PRIu64 " ring-full exits\n",
	       n, guest_writes() - writes, ring_fulls);
	return verify(mig);
}

int main(int argc, char **argv)
{
	static struct migration mig = { .lock = PTHREAD_MUTEX_INITIALIZER, .reset_done = PTHREAD_COND_INITIALIZER };
	int r, bad = 0;

	if (argc > 2 || (argc == 2 && strcmp(argv[1], "--bitmap"))) {
		fprintf(stderr, "usage: %s [--bitmap]\n", argv[0]);
		return 2;
	}
	mig.use_bitmap = argc == 2;
	for (unsigned int i = 0; i < NR_VCPUS; i++)
		vcpus[i] = (struct vcpu_thread){ .mig = &mig, .id = i };
	if (create_vm(&mig, true, &mig.src, &mig.src_ram) || create_vm(&mig, false, &mig.dst, &mig.dst_ram))
		return 1;

	for (; mig.started < NR_VCPUS; mig.started++) {
		r = pthread_create(&vcpus[mig.started].thread, NULL, guest_fn, &vcpus[mig.started]);
		if (r) {
			fprintf(stderr, "pthread_create: %s\n", strerror(r));
			bad = 1;
			break;
		}
	}
	if (!bad)
		bad = migrate(&mig) != 0;
	/* On failure the source may still run: no VM goes while a vCPU is inside it. */
	bad |= stop_vcpus(&mig) != 0;
	printf("migrate (%s): %s\n", mig.use_bitmap ? "dirty bitmap, manual clear" : "dirty rings",
	       bad ? "FAILED" : "destination verified byte for byte");
	vmmu_vm_destroy(mig.src);
	vmmu_vm_destroy(mig.dst);
	return bad;
}
