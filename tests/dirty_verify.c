/* SPDX-License-Identifier: MIT */
/*
 * The dirty-log verifier's accounting (see dirty_verify.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>

#include "dirty_verify.h"

#define PAGE 4096ULL

void sleep_us(unsigned int us)
{
	struct timespec t = { .tv_sec = 0, .tv_nsec = (long)us * 1000 };

	while (nanosleep(&t, &t) && errno == EINTR)
		;
}

double env_num(const char *name, double def, double lo, double hi)
{
	const char *s = getenv(name);
	char *end;
	double v;

	if (!s || !*s)
		return def;
	v = strtod(s, &end);
	if (*end || v < lo || v > hi) {
		fprintf(stderr, "  %s=%s ignored (want %g..%g)\n", name, s, lo, hi);
		return def;
	}
	return v;
}

/*
 * The page-fault counters of n vCPUs summed (and pt_write_emulations); the
 * other fields are vCPU 0's.
 */
struct vmmu_vcpu_stats vcpu_fault_sum(vmmu_vcpu *const *vcpu, unsigned int n)
{
	struct vmmu_vcpu_stats s, t;

	vmmu_vcpu_get_stats(vcpu[0], &s);
	for (unsigned int i = 1; i < n; i++) {
		vmmu_vcpu_get_stats(vcpu[i], &t);
		s.pf_taken += t.pf_taken;
		s.pf_fixed += t.pf_fixed;
		s.pf_fast_fixed += t.pf_fast_fixed;
		s.pf_fast_spurious += t.pf_fast_spurious;
		s.pf_fast_failed += t.pf_fast_failed;
		s.pt_write_emulations += t.pt_write_emulations;
		s.pml_entries += t.pml_entries;
		s.pml_full_exits += t.pml_full_exits;
	}
	return s;
}

/*
 * The harvest of the get/clear interface: get, and in a manual-protect VM
 * clear what get returned.  The clear goes in chunks of random size (1 to
 * max_words bitmap words of 64 pages, the last one ending at the end of the
 * slot) when rng is given, so the first_page / bitmap-offset arithmetic is
 * exercised too.  Returns the first error; safe to call with threads running
 * (no ASSERT).
 */
int dirty_get_clear(vmmu_vm *vm, uint32_t slot, uint64_t npages, bool manual, uint64_t *bm, uint64_t *rng,
		    unsigned int max_words)
{
	int r = vmmu_get_dirty_log(vm, slot, bm);

	if (r || !manual)
		return r;
	for (uint64_t first = 0; first < npages;) {
		uint64_t n = rng ? 64 * (1 + xorshift(rng) % max_words) : npages;

		if (n > npages - first)
			n = npages - first;
		r = vmmu_clear_dirty_log(vm, slot, first, (uint32_t)n, bm + first / 64);
		if (r)
			return r;
		first += n;
	}
	return 0;
}

/* Allocates the book (ASSERTs: main thread, before the writers start). */
void dv_init(struct dv_verifier *v, const uint8_t *hva, uint64_t gpa, uint64_t npages, uint64_t shared,
	     dv_harvest_fn *harvest, void *ctx)
{
	/* The values name the page in DV_PAGE_MASK bits. */
	ASSERT_LE(npages, DV_PAGE_MASK + 1);
	ASSERT_LE(shared, npages);
	v->hva = hva;
	v->gpa = gpa;
	v->npages = npages;
	v->words = (npages + 63) / 64;
	v->shared = shared;
	v->harvest = harvest;
	v->ctx = ctx;
	v->rng = 42;
	v->bm = calloc(v->words, sizeof(uint64_t));
	v->last = calloc(npages * DV_VCPUS, sizeof(uint64_t));
	v->due = calloc(npages, sizeof(*v->due));
	ASSERT_TRUE(v->bm && v->last && v->due);
}

void dv_fini(struct dv_verifier *v)
{
	free(v->bm);
	free(v->last);
	free(v->due);
	v->bm = v->last = NULL;
	v->due = NULL;
}

/*
 * Where writer id writes next.  Half the writes go to the shared pages
 * (every vCPU writes them: racing faults on one gfn), half to the vCPU's own
 * pages (p >= shared, p - shared = id mod DV_VCPUS), which dv_round() holds
 * to the strict deadline: only their owner's fault can have logged them.
 */
static uint64_t dv_pick_page(const struct dv_verifier *v, unsigned int id, uint64_t *rng)
{
	uint64_t shared = v->shared, own = (v->npages - shared) / DV_VCPUS;
	uint64_t r = xorshift(rng);

	return ((r & 1) || !own) ? (r >> 1) % shared : shared + ((r >> 1) % own) * DV_VCPUS + id;
}

/*
 * Writer id owns word id of every page and writes dv_value(seq, page, id)
 * there, seq counting its writes from 1.  Around each write it publishes
 * progress: started before (seq_cst, so ordered before the store), done
 * after the store completed (release: dv_round() acquires it).
 */
static void *dv_writer(void *arg)
{
	struct dv_writer *w = arg;
	struct dv_verifier *v = w->v;
	unsigned int id = w->id;
	uint64_t rng = 0x9e3779b97f4a7c15ULL * (id + 1) | 1, seq = 0;

	while (!dv_stopped(v)) {
		uint64_t page = dv_pick_page(v, id, &rng);

		++seq;
		atomic_store(&v->prog[id].started, seq);
		if (!v->write(v->write_ctx, id, page, dv_value(seq, page, id)))
			break;
		atomic_store_explicit(&v->prog[id].done, seq, memory_order_release);
	}
	v->writes[id] = seq;
	return NULL;
}

void dv_start_writers(struct dv_verifier *v, dv_write_fn *write, void *ctx)
{
	v->write = write;
	v->write_ctx = ctx;
	for (unsigned int i = 0; i < DV_VCPUS; i++) {
		v->writer[i] = (struct dv_writer){ .v = v, .id = i };
		ASSERT_EQ(pthread_create(&v->writer[i].thread, NULL, dv_writer, &v->writer[i]), 0);
	}
}

/* Stops the writers (and anything else watching v->fb) and waits for them. */
void dv_stop_writers(struct dv_verifier *v)
{
	atomic_store(&v->fb.stop, true);
	for (unsigned int i = 0; i < DV_VCPUS; i++)
		pthread_join(v->writer[i].thread, NULL);
}

/*
 * One round k of the verifier: sample the vCPUs' progress, harvest (H(k)),
 * sample again, scan memory (R(k)).  Why a reported miss is one, and why a
 * miss cannot pass:
 *
 * c_u(k) is vCPU u's done seq read (acquire) just before H(k) began, a_u(k)
 * its started seq read just after H(k) returned, z_u(k) its started seq read
 * after R(k).  Write number s of vCPU v completed before H(k) began iff
 * s <= c_v(k); it began after H(k) returned if s > a_v(k).
 *
 * 1. If word v of page p holds a larger seq s at R(k) than at R(k-1), that
 *    store is coherence-after the value R(k-1) read, so it did not happen
 *    before H(k-1) returned (H(k-1) write-protected every SPTE of the pages
 *    it reported -- under shadow paging every SPTE the rmap of the gfn
 *    holds, whichever gva maps it -- and flushed the TLBs of every vCPU that
 *    could write p through a translation it write-protected, which waits
 *    out the guest-mode stretch making the store; in ring mode H(k-1) is
 *    collect + reset, and the reset protects and flushes).  So it is a write
 *    after harvest k-1, which the contract says a later harvest reports.
 * 2. Which one?  The bit is set by the fault that made p's SPTE writable, and
 *    (src/tdp/tdp_mmu.c, src/mmu.c, like KVM's fast_pf_fix_direct_spte) only
 *    after the SPTE became writable.  On a page only v writes, that fault is
 *    v's own and precedes the write: a harvest that begins after the write
 *    completed reports it.  On a shared page, the fault may be another vCPU
 *    u's (under shadow paging with guest paging, of its own SPTE of the gfn,
 *    but the race is the same through the guest walk), still between its
 *    cmpxchg and its bit when v's write lands: the report may come as late
 *    as the first harvest after that fault returned.  That fault started
 *    before v's write completed, so before z_u(k).
 * 3. Hence the deadline of a change seen at R(k) and not reported by H(k) (or
 *    a change by a write that began after H(k) returned, s > a_v(k), which
 *    H(k) cannot have covered): own page, c_v >= s; shared page, c_u >=
 *    z_u(k) for every u (and c_v >= s).  Some harvest H(m), m > k, whose
 *    pre-sample meets the deadline must have reported p by then.  For an own
 *    page with s <= c_v(k) the deadline is already met at H(k): H(k) itself
 *    must report it ("strict").
 * Nothing else is required, so a spurious report (a page reported with no
 * change seen: a false positive) never fails the test; those are counted.
 * And no write goes unchecked except one overwritten before the next scan by
 * a later write of the same word (the later write's report covers the page):
 * the last rounds (dv_finish) run after the vCPUs stopped, when every
 * deadline is met.
 *
 * Each value must also be the writer's own (low byte) and name the page it
 * sits in: a store through a wrong translation fails here.
 *
 * Returns false, with the failure in v->fb, when the round found a miss or
 * the harvest failed.
 */
bool dv_round(struct dv_verifier *v)
{
	uint64_t c[DV_VCPUS], a[DV_VCPUS], z[DV_VCPUS];
	int r;

	for (unsigned int u = 0; u < DV_VCPUS; u++)
		c[u] = atomic_load_explicit(&v->prog[u].done, memory_order_acquire);
	r = v->harvest(v->ctx, v->bm, &v->rng);
	if (r) {
		fb_fail(&v->fb, "round %llu: harvest: %d (%s)%s%s", (unsigned long long)v->rounds, r, vmmu_strerror(r),
			v->harvest_why && *v->harvest_why ? " " : "", v->harvest_why ? v->harvest_why : "");
		return false;
	}
	for (unsigned int u = 0; u < DV_VCPUS; u++)
		a[u] = atomic_load(&v->prog[u].started);
	v->rounds++;

	for (uint64_t p = 0; p < v->npages; p++) {
		const uint8_t *pg = v->hva + p * PAGE;
		struct dv_due *due = &v->due[p];
		bool rep = bm_test(v->bm, p), was_due = due->round, changed = false, strict = false, after = false;
		uint64_t prev[DV_VCPUS], now[DV_VCPUS];

		/* What earlier rounds left due: reported now, or still allowed to wait? */
		if (was_due && rep) {
			v->late += v->rounds - due->round > 1;
			due->round = 0;
		} else if (was_due) {
			bool met = true;

			for (unsigned int u = 0; u < DV_VCPUS; u++)
				met &= c[u] >= due->by[u];
			if (met) {
				fb_fail(&v->fb,
					"MISS: page %llu (gpa %#llx, %s) changed after harvest %llu returned; harvests "
					"%llu..%llu did not report it, and the last began after the write and every fault "
					"that could have enabled it had completed (deadline %llu/%llu, vCPUs done "
					"%llu/%llu)",
					(unsigned long long)p, (unsigned long long)(v->gpa + p * PAGE),
					p < v->shared ? "shared" : "own", (unsigned long long)due->round - 1,
					(unsigned long long)due->round, (unsigned long long)v->rounds,
					(unsigned long long)due->by[0], (unsigned long long)due->by[1],
					(unsigned long long)c[0], (unsigned long long)c[1]);
				return false;
			}
		}

		for (unsigned int u = 0; u < DV_VCPUS; u++) {
			uint64_t w = ld64(pg + u * 8), s = w >> DV_SEQ_SHIFT;

			prev[u] = v->last[p * DV_VCPUS + u];
			now[u] = s;
			if (w && ((w & 0xff) != u + 1 || ((w >> DV_PAGE_SHIFT) & DV_PAGE_MASK) != p)) {
				fb_fail(&v->fb,
					"page %llu word %u holds %#llx: not vCPU %u's value for this page (a store "
					"through a wrong translation?)",
					(unsigned long long)p, u, (unsigned long long)w, u);
				return false;
			}
			if (s < prev[u]) {
				fb_fail(&v->fb, "page %llu word %u went back from seq %llu to %llu", (unsigned long long)p,
					u, (unsigned long long)prev[u], (unsigned long long)s);
				return false;
			}
			if (s == prev[u])
				continue;
			changed = true;
			strict |= s <= c[u];
			after |= s > a[u];
			v->last[p * DV_VCPUS + u] = s;
		}
		v->reported += rep;
		if (v->rounds > 1)
			v->reported_logged += rep;
		v->changed += changed;
		if (!changed) {
			v->spurious += rep && !was_due;
			continue;
		}
		if (p >= v->shared && strict && !rep) {
			fb_fail(&v->fb,
				"MISS: page %llu (gpa %#llx) written (seq %llu/%llu, was %llu/%llu) by its only writer "
				"after harvest %llu returned; the write completed before harvest %llu began (vCPUs done "
				"%llu/%llu), which did not report it",
				(unsigned long long)p, (unsigned long long)(v->gpa + p * PAGE),
				(unsigned long long)now[0], (unsigned long long)now[1], (unsigned long long)prev[0],
				(unsigned long long)prev[1], (unsigned long long)v->rounds - 1,
				(unsigned long long)v->rounds, (unsigned long long)c[0], (unsigned long long)c[1]);
			return false;
		}
		v->strict += strict && rep;
		/* Covered by this report, or an earlier (harder) deadline stands. */
		if ((rep && !after) || due->round)
			continue;
		due->round = v->rounds;
		for (unsigned int u = 0; u < DV_VCPUS; u++)
			due->by[u] = now[u];
		v->deferred++;
	}
	/* A shared page also waits for every fault that was under way during the scan. */
	for (unsigned int u = 0; u < DV_VCPUS; u++)
		z[u] = atomic_load(&v->prog[u].started);
	for (uint64_t p = 0; p < v->shared; p++) {
		if (v->due[p].round != v->rounds)
			continue;
		for (unsigned int u = 0; u < DV_VCPUS; u++)
			if (v->due[p].by[u] < z[u])
				v->due[p].by[u] = z[u];
	}
	return true;
}

/*
 * The baseline when logging is switched on under running vCPUs: the enable
 * plays harvest 0 (it write-protects and flushes before returning), this
 * scan after it plays R(0).  Nothing is required of writes before it.
 */
void dv_baseline(struct dv_verifier *v)
{
	for (uint64_t p = 0; p < v->npages; p++)
		for (unsigned int u = 0; u < DV_VCPUS; u++)
			v->last[p * DV_VCPUS + u] = ld64(v->hva + p * PAGE + u * 8) >> DV_SEQ_SHIFT;
	v->rounds = 1;
}

/*
 * After the writers stopped (joined), every deadline is met: two last rounds
 * (a change the first one sees unreported is due at the second), then
 * nothing may be left due.  Nothing to do when the run already failed.
 */
void dv_finish(struct dv_verifier *v)
{
	if (atomic_load(&v->fb.n) || !dv_round(v) || !dv_round(v))
		return;
	for (uint64_t p = 0; p < v->npages; p++) {
		if (v->due[p].round) {
			fb_fail(&v->fb, "MISS: page %llu (gpa %#llx) still unreported after the vCPUs stopped",
				(unsigned long long)p, (unsigned long long)(v->gpa + p * PAGE));
			break;
		}
	}
}

/* Between rounds: vary the harvest interval, so windows of every size occur. */
void dv_pause(struct dv_verifier *v)
{
	if (!(xorshift(&v->rng) & 7))
		sleep_us((unsigned int)(xorshift(&v->rng) % 300));
}

/* The accounting of a run, for the line each test prints. */
void dv_summary(const struct dv_verifier *v, char *buf, size_t size)
{
	snprintf(buf, size,
		 "%llu rounds, %llu+%llu writes, %llu changed, %llu reported (%llu strict), %llu deferred (%llu late), "
		 "%llu false positives",
		 (unsigned long long)v->rounds, (unsigned long long)v->writes[0], (unsigned long long)v->writes[1],
		 (unsigned long long)v->changed, (unsigned long long)v->reported, (unsigned long long)v->strict,
		 (unsigned long long)v->deferred, (unsigned long long)v->late, (unsigned long long)v->spurious);
}
