// SPDX-License-Identifier: MIT
/*
 * Host-memory-event benchmarks.
 *
 * `vmmu bench zap`: what it costs to take a populated guest down.  The slot
 * (caller memory, --mem bytes, 1 GiB by default, --host-page pages) is
 * mapped in full by the vCPUs, then, in every repetition:
 *  - delete: vmmu_set_memslot(size 0), timed, per page (KVM's memslot
 *    delete: the slot is made invalid, a grace period, the zap, the flush);
 *  - zap-all fast: the slot re-created and mapped again, vmmu_zap_all()
 *    timed (the root is made obsolete; vCPUs load a new one);
 *  - zap-all slow: mapped again, vmmu_zap_gfn_range() over the whole gfn
 *    space timed (every SPTE removed one by one, the "before" of KVM's fast
 *    zap).
 * After each, stats must show nothing mapped, and the vCPUs read every page
 * again: each read faults (checked with pf_taken) and returns what the first
 * pass wrote, so no zap loses or misplaces data.
 *
 * `vmmu bench notifier`: MMU-notifier throughput.  The vCPUs (2 by default)
 * write and read back random pages, each its own word per page, while the
 * main thread brackets random 4K..2M hva ranges of the slot with
 * vmmu_invalidate_range_begin/end as fast as it can: ranges per second and
 * vCPU accesses per second meanwhile (also the idle rate, with no vCPU
 * running, for reference).  vcpu_faults_alone_per_s is the vCPUs' fault rate
 * with no invalidation running (everything zapped first, as before the
 * storm, so they fault as much); fault_throughput_ratio is the storm's fault
 * rate over it (issue 13's target: >= 0.5 while ranges_per_s >= 100,000).
 * Every value a vCPU reads must be its last write; at the end the host
 * memory must hold every vCPU's last write.
 *
 * Medians over --reps; missed targets are reported, never failures.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cli.h"

#define ZAP_TARGET_DELETE_NS_PER_PAGE	10.0
#define NOTIFIER_SECONDS		0.5
#define NOTIFIER_MAX_VCPUS		16u

static unsigned int hm_reps(const struct cli_opts *o)
{
	return o->reps_set ? o->reps : CLI_DEFAULT_REPS;
}

/* Caller memory, aligned to the host page it declares, so that huge host
 * pages allow huge mappings. */
struct hm_mem {
	void *raw;
	size_t raw_len;
	uint8_t *base;
};

static int hm_mem_map(struct hm_mem *m, const struct cli_opts *o, uint64_t size)
{
	uint64_t align = o->host_page > CLI_PAGE_SIZE ? o->host_page : CLI_PAGE_SIZE;

	m->raw_len = size + align;
	m->raw = mmap(NULL, m->raw_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->raw == MAP_FAILED) {
		m->raw = NULL;
		return -1;
	}
	m->base = (uint8_t *)(((uintptr_t)m->raw + align - 1) & ~(uintptr_t)(align - 1));
	/* THP only when the slot says its host pages are huge */
	(void)madvise(m->base, size, o->host_page > CLI_PAGE_SIZE ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return 0;
}

static void hm_mem_unmap(struct hm_mem *m)
{
	if (m->raw)
		munmap(m->raw, m->raw_len);
	m->raw = NULL;
}

/* A VM with its vCPUs and no slot yet. */
struct hm_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpus[NOTIFIER_MAX_VCPUS];
	unsigned int n;
};

static int hm_vm_create(struct hm_vm *h, const struct cli_opts *o, unsigned int nr_vcpus, char *err, size_t len)
{
	struct vmmu_vm_config cfg;
	int rc;

	memset(h, 0, sizeof(*h));
	vmmu_vm_config_init(&cfg);
	cfg.mmu = o->mmu;
	cfg.tdp_format = o->tdp_format;
	cfg.flags = o->vm_flags;
	cfg.max_vcpus = nr_vcpus;
	rc = vmmu_vm_create(&cfg, &h->vm);
	for (; !rc && h->n < nr_vcpus; h->n++)
		rc = vmmu_vcpu_create(h->vm, h->n, &h->vcpus[h->n]);
	if (rc)
		cli_set_error(err, len, "VM setup: %s", vmmu_strerror(rc));
	return rc;
}

static void hm_vm_destroy(struct hm_vm *h)
{
	if (h->vm)
		vmmu_vm_destroy(h->vm);
	h->vm = NULL;
}

static int hm_slot(struct hm_vm *h, const struct cli_opts *o, uint8_t *hva, uint64_t size)
{
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = size, .hva = hva, .host_page_size = o->host_page };

	return vmmu_set_memslot(h->vm, &s);
}

static uint64_t mapped_pages(vmmu_vm *vm)
{
	struct vmmu_vm_stats st;

	vmmu_vm_get_stats(vm, &st);
	return st.pages_4k + st.pages_2m + st.pages_1g;
}

static uint64_t faults_taken(struct hm_vm *h)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < h->n; i++) {
		struct vmmu_vcpu_stats s;

		vmmu_vcpu_get_stats(h->vcpus[i], &s);
		n += s.pf_taken;
	}
	return n;
}

/* ------------------------------------------------------------------------ */
/* Benchmark "zap"                                                           */

/*
 * Nothing may stay mapped after a zap; the next pass must fault (at least
 * once per host page size unit) and read back the data intact.
 */
static int zap_check_refault(struct hm_vm *h, struct crew *crew, uint64_t mem, uint64_t host_page, const char *what,
			     char *err, size_t len)
{
	struct phase_result res;
	uint64_t before = faults_taken(h), left = mapped_pages(h->vm);

	if (left) {
		cli_set_error(err, len, "%s: %" PRIu64 " mappings left", what, left);
		return -1;
	}
	if (crew_run(crew, CREW_OP_VCPU_RETOUCH, what, &res)) {
		cli_set_error(err, len, "after %s: %s", what, res.error);
		return -1;
	}
	if (faults_taken(h) - before < mem / host_page) {
		cli_set_error(err, len, "after %s: %" PRIu64 " faults to map %" PRIu64 " host pages again", what,
			      faults_taken(h) - before, mem / host_page);
		return -1;
	}
	return 0;
}

int bench_zap(const struct cli_opts *o)
{
	unsigned int reps = hm_reps(o), nr_vcpus = o->vcpus_set ? o->vcpus : 2;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE, gfn_space;
	double del[CLI_MAX_REPS], fast[CLI_MAX_REPS], slow[CLI_MAX_REPS], m_del, m_fast, m_slow;
	struct hm_mem hmem = { 0 };
	struct hm_vm h = { 0 };
	struct phase_result res;
	struct crew crew;
	bool crew_up = false, ok = false;
	char err[256] = "";
	struct report r;
	struct vmmu_vm_config cfg;
	int rc;

	report_init(&r);
	report_str(&r, "benchmark", "zap");
	report_u64(&r, "reps", reps);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);
	if (nr_vcpus > NOTIFIER_MAX_VCPUS)
		return cli_usage_error("bench zap: at most %u vCPUs", NOTIFIER_MAX_VCPUS);
	if (o->backing != VMMU_BACKING_ANON) {
		cli_set_error(err, sizeof(err), "bench zap uses caller (anonymous) memory; drop --backing");
		return bench_finish(&r, o, false, err);
	}
	if (hm_mem_map(&hmem, o, mem)) {
		cli_set_error(err, sizeof(err), "mmap of %" PRIu64 " bytes failed", mem);
		return bench_finish(&r, o, false, err);
	}
	if (hm_vm_create(&h, o, nr_vcpus, err, sizeof(err)))
		goto out;
	vmmu_vm_config_init(&cfg);
	gfn_space = UINT64_C(1) << (cfg.maxphyaddr - 12);
	if ((rc = hm_slot(&h, o, hmem.base, mem))) {
		cli_set_error(err, sizeof(err), "vmmu_set_memslot: %s", vmmu_strerror(rc));
		goto out;
	}
	if (crew_start(&crew, nr_vcpus, h.vcpus, NULL, mem, o->seed)) {
		cli_set_error(err, sizeof(err), "cannot start the vCPU threads");
		goto out;
	}
	crew_up = true;
	if (crew_run(&crew, CREW_OP_VCPU_WRITE, "populate", &res)) {
		cli_set_error(err, sizeof(err), "%s", res.error);
		goto out;
	}

	for (unsigned int rep = 0; rep < reps; rep++) {
		struct vmmu_memslot gone = { .slot = 0 };
		uint64_t t0, mapped = mapped_pages(h.vm);

		/* Everything mapped: the first pass, or the last check's pass. */
		if (mapped < mem / o->host_page) {
			cli_set_error(err, sizeof(err), "only %" PRIu64 " mappings before the delete", mapped);
			goto out;
		}
		t0 = cli_now_ns();
		rc = vmmu_set_memslot(h.vm, &gone);
		del[rep] = (double)(cli_now_ns() - t0) / (double)pages;
		if (rc) {
			cli_set_error(err, sizeof(err), "delete: %s", vmmu_strerror(rc));
			goto out;
		}
		if (mapped_pages(h.vm)) {
			cli_set_error(err, sizeof(err), "delete left %" PRIu64 " mappings", mapped_pages(h.vm));
			goto out;
		}
		if ((rc = hm_slot(&h, o, hmem.base, mem))) {
			cli_set_error(err, sizeof(err), "re-create: %s", vmmu_strerror(rc));
			goto out;
		}
		if (zap_check_refault(&h, &crew, mem, o->host_page, "delete", err, sizeof(err)))
			goto out;

		t0 = cli_now_ns();
		vmmu_zap_all(h.vm);
		fast[rep] = (double)(cli_now_ns() - t0) / 1e3;
		if (zap_check_refault(&h, &crew, mem, o->host_page, "zap_all", err, sizeof(err)))
			goto out;

		t0 = cli_now_ns();
		rc = vmmu_zap_gfn_range(h.vm, 0, gfn_space);
		slow[rep] = (double)(cli_now_ns() - t0) / 1e3;
		if (rc) {
			cli_set_error(err, sizeof(err), "vmmu_zap_gfn_range: %s", vmmu_strerror(rc));
			goto out;
		}
		if (zap_check_refault(&h, &crew, mem, o->host_page, "zap_gfn_range", err, sizeof(err)))
			goto out;
	}
	/* And the host view holds the first pass's tokens. */
	for (uint64_t gpa = 0; gpa < mem; gpa += CLI_PAGE_SIZE) {
		if (*(volatile uint64_t *)(hmem.base + gpa) != cli_token(gpa, o->seed)) {
			cli_set_error(err, sizeof(err), "host memory at gpa 0x%" PRIx64 " lost its token", gpa);
			goto out;
		}
	}
	m_del = cli_median(del, reps);
	m_fast = cli_median(fast, reps);
	m_slow = cli_median(slow, reps);
	report_f(&r, "delete_ns_per_page", 2, m_del);
	report_f(&r, "delete_ms", 3, m_del * (double)pages / 1e6);
	report_f(&r, "zap_all_fast_us", 1, m_fast);
	report_f(&r, "zap_all_slow_us", 1, m_slow);
	report_f(&r, "slow_over_fast", 2, m_slow / m_fast);
	report_f(&r, "target_delete_ns_per_page", 1, ZAP_TARGET_DELETE_NS_PER_PAGE);
	report_bool(&r, "meets_delete", m_del <= ZAP_TARGET_DELETE_NS_PER_PAGE);
	ok = true;
out:
	if (crew_up)
		crew_stop(&crew);
	if (h.vm && vmmu_vm_bugged(h.vm, NULL)) {
		cli_set_error(err, sizeof(err), "the VM is bugged");
		ok = false;
	}
	hm_vm_destroy(&h);
	hm_mem_unmap(&hmem);
	return bench_finish(&r, o, ok, err);
}

/* ------------------------------------------------------------------------ */
/* Benchmark "notifier"                                                      */

struct nt {
	vmmu_vcpu *vcpu;
	unsigned int id;
	uint64_t pages;
	uint64_t *shadow;	/* this vCPU's last value per page (its own word) */
	_Atomic bool *stop;
	_Atomic uint64_t accesses;
	int err;
	uint64_t err_gpa, bad_got, bad_want;
	struct vmmu_exit exit;
	pthread_t thread;
};

static void *nt_vcpu(void *p)
{
	struct nt *t = p;
	uint64_t seed = 0x9e3779b97f4a7c15ULL * (t->id + 1), i = 0;

	while (!atomic_load_explicit(t->stop, memory_order_acquire)) {
		uint64_t pg = cli_xorshift(&seed) % t->pages;
		uint64_t gpa = pg * CLI_PAGE_SIZE + (uint64_t)t->id * 8, v = (++i << 16) | t->id, got = 0;
		int rc = vmmu_vcpu_access(t->vcpu, gpa, &v, 8, VMMU_ACCESS_WRITE, &t->exit);

		if (!rc) {
			t->shadow[pg] = v;
			rc = vmmu_vcpu_access(t->vcpu, gpa, &got, 8, VMMU_ACCESS_READ, &t->exit);
		}
		if (rc || got != v) {
			t->err = rc ? rc : -1;
			t->err_gpa = gpa;
			t->bad_got = got;
			t->bad_want = v;
			break;
		}
		atomic_store_explicit(&t->accesses, 2 * i, memory_order_relaxed);
	}
	return NULL;
}

static void vcpu_fault_stats(struct hm_vm *h, uint64_t *taken, uint64_t *retries)
{
	*taken = *retries = 0;
	for (unsigned int i = 0; i < h->n; i++) {
		struct vmmu_vcpu_stats s;

		vmmu_vcpu_get_stats(h->vcpus[i], &s);
		*taken += s.pf_taken;
		*retries += s.pf_retry;
	}
}

static unsigned int nt_start(struct hm_vm *h, struct nt *t, unsigned int nr_vcpus, uint64_t pages, _Atomic bool *stop)
{
	unsigned int started = 0;

	atomic_store(stop, false);
	for (unsigned int i = 0; i < nr_vcpus; i++) {
		t[i].vcpu = h->vcpus[i];
		t[i].id = i;
		t[i].pages = pages;
		t[i].stop = stop;
		t[i].err = 0;
		atomic_store(&t[i].accesses, 0);
		if (pthread_create(&t[i].thread, NULL, nt_vcpu, &t[i]))
			break;
		started++;
	}
	return started;
}

/* The vCPUs alone on a zapped VM for `seconds`: their faults per second, or
 * a negative value if the threads could not start. */
static double nt_alone(struct hm_vm *h, struct nt *t, unsigned int nr_vcpus, uint64_t pages, double seconds)
{
	_Atomic bool stop;
	uint64_t pf0, rt0, pf1, rt1, t0, ns;
	unsigned int started;
	struct timespec d = { 0, 1000000 };

	vmmu_zap_all(h->vm);
	vcpu_fault_stats(h, &pf0, &rt0);
	started = nt_start(h, t, nr_vcpus, pages, &stop);
	t0 = cli_now_ns();
	while (started == nr_vcpus && cli_now_ns() - t0 < (uint64_t)(seconds * 1e9))
		nanosleep(&d, NULL);
	ns = cli_now_ns() - t0;
	atomic_store_explicit(&stop, true, memory_order_release);
	for (unsigned int i = 0; i < started; i++)
		pthread_join(t[i].thread, NULL);
	if (started < nr_vcpus)
		return -1;
	vcpu_fault_stats(h, &pf1, &rt1);
	return (double)(pf1 - pf0) * 1e9 / (double)ns;
}

/* begin/end pairs over random 4K..2M ranges of the slot for `seconds`. */
static uint64_t nt_storm(vmmu_vm *vm, uint8_t *base, uint64_t pages, uint64_t *seed, double seconds,
			 uint64_t *ns)
{
	uint64_t n = 0, t0 = cli_now_ns(), limit = (uint64_t)(seconds * 1e9), now = t0;

	do {
		for (int k = 0; k < 64; k++, n++) {
			uint64_t r = cli_xorshift(seed), len = 1 + (r >> 40) % 512;
			uint64_t first = (r % pages);
			uintptr_t s = (uintptr_t)base + first * CLI_PAGE_SIZE, e = s + len * CLI_PAGE_SIZE;

			vmmu_invalidate_range_begin(vm, s, e);
			vmmu_invalidate_range_end(vm, s, e);
		}
		now = cli_now_ns();
	} while (now - t0 < limit);
	*ns = now - t0;
	return n;
}

int bench_notifier(const struct cli_opts *o)
{
	unsigned int reps = hm_reps(o), nr_vcpus = o->vcpus_set ? o->vcpus : 2;
	uint64_t mem = o->mem_bytes, pages = mem / CLI_PAGE_SIZE, seed = o->seed | 1;
	double rps[CLI_MAX_REPS], aps[CLI_MAX_REPS], idle[CLI_MAX_REPS], fps[CLI_MAX_REPS], rtps[CLI_MAX_REPS];
	double alone[CLI_MAX_REPS], ratio[CLI_MAX_REPS];
	struct nt t[NOTIFIER_MAX_VCPUS];
	struct hm_mem hmem = { 0 };
	struct hm_vm h = { 0 };
	_Atomic bool stop;
	bool ok = false;
	char err[256] = "";
	struct report r;
	int rc;

	report_init(&r);
	report_str(&r, "benchmark", "notifier");
	report_u64(&r, "reps", reps);
	report_config(&r, o, nr_vcpus, mem);
	report_u64(&r, "pages", pages);
	if (nr_vcpus > NOTIFIER_MAX_VCPUS)
		return cli_usage_error("bench notifier: at most %u vCPUs", NOTIFIER_MAX_VCPUS);
	if (o->backing != VMMU_BACKING_ANON) {
		cli_set_error(err, sizeof(err), "bench notifier uses caller (anonymous) memory; drop --backing");
		return bench_finish(&r, o, false, err);
	}
	memset(t, 0, sizeof(t));
	if (hm_mem_map(&hmem, o, mem)) {
		cli_set_error(err, sizeof(err), "mmap of %" PRIu64 " bytes failed", mem);
		return bench_finish(&r, o, false, err);
	}
	if (hm_vm_create(&h, o, nr_vcpus, err, sizeof(err)))
		goto out;
	if ((rc = hm_slot(&h, o, hmem.base, mem))) {
		cli_set_error(err, sizeof(err), "vmmu_set_memslot: %s", vmmu_strerror(rc));
		goto out;
	}
	for (unsigned int i = 0; i < nr_vcpus; i++) {
		t[i].shadow = calloc(pages, sizeof(uint64_t));
		if (!t[i].shadow) {
			cli_set_error(err, sizeof(err), "out of memory");
			goto out;
		}
	}

	for (unsigned int rep = 0; rep < reps; rep++) {
		uint64_t n, ns, acc = 0, pf0, rt0, pf1, rt1;
		unsigned int started = 0;

		/* For reference: the same storm with no vCPU running. */
		n = nt_storm(h.vm, hmem.base, pages, &seed, NOTIFIER_SECONDS / 5, &ns);
		idle[rep] = (double)n * 1e9 / (double)ns;

		alone[rep] = nt_alone(&h, t, nr_vcpus, pages, NOTIFIER_SECONDS);
		if (alone[rep] < 0) {
			cli_set_error(err, sizeof(err), "cannot start the vCPU threads");
			goto out;
		}
		vmmu_zap_all(h.vm);
		vcpu_fault_stats(&h, &pf0, &rt0);
		started = nt_start(&h, t, nr_vcpus, pages, &stop);
		if (started == nr_vcpus)
			n = nt_storm(h.vm, hmem.base, pages, &seed, NOTIFIER_SECONDS, &ns);
		atomic_store_explicit(&stop, true, memory_order_release);
		for (unsigned int i = 0; i < started; i++) {
			pthread_join(t[i].thread, NULL);
			acc += atomic_load(&t[i].accesses);
		}
		if (started < nr_vcpus) {
			cli_set_error(err, sizeof(err), "cannot start the vCPU threads");
			goto out;
		}
		for (unsigned int i = 0; i < nr_vcpus; i++) {
			if (t[i].err) {
				if (t[i].err < 0)
					cli_set_error(err, sizeof(err),
						      "vCPU %u read 0x%" PRIx64 " at gpa 0x%" PRIx64 " right after writing 0x%" PRIx64,
						      i, t[i].bad_got, t[i].err_gpa, t[i].bad_want);
				else
					cli_describe_failure(err, sizeof(err), t[i].err, &t[i].exit);
				goto out;
			}
		}
		vcpu_fault_stats(&h, &pf1, &rt1);
		rps[rep] = (double)n * 1e9 / (double)ns;
		aps[rep] = (double)acc * 1e9 / (double)ns;
		fps[rep] = (double)(pf1 - pf0) * 1e9 / (double)ns;
		rtps[rep] = (double)(rt1 - rt0) * 1e9 / (double)ns;
		ratio[rep] = alone[rep] > 0 ? fps[rep] / alone[rep] : 0;
	}
	/* Nothing written around the invalidations was lost. */
	for (unsigned int i = 0; i < nr_vcpus; i++) {
		for (uint64_t pg = 0; pg < pages; pg++) {
			uint64_t have = *(volatile uint64_t *)(hmem.base + pg * CLI_PAGE_SIZE + (uint64_t)i * 8);

			if (t[i].shadow[pg] && have != t[i].shadow[pg]) {
				cli_set_error(err, sizeof(err),
					      "gpa 0x%" PRIx64 " holds 0x%" PRIx64 ", vCPU %u last wrote 0x%" PRIx64,
					      pg * CLI_PAGE_SIZE + (uint64_t)i * 8, have, i, t[i].shadow[pg]);
				goto out;
			}
		}
	}
	{
		char why[200];

		if (vmmu_audit(h.vm, why, sizeof(why))) {
			cli_set_error(err, sizeof(err), "vmmu_audit: %s", why);
			goto out;
		}
	}
	report_f(&r, "ranges_per_s", 0, cli_median(rps, reps));
	report_f(&r, "vcpu_accesses_per_s", 0, cli_median(aps, reps));
	report_f(&r, "idle_ranges_per_s", 0, cli_median(idle, reps));
	/* How hard the storm hit the vCPUs: faults taken, and how many of
	 * them retried (raced with, or waited for, an invalidation). */
	report_f(&r, "vcpu_faults_per_s", 0, cli_median(fps, reps));
	report_f(&r, "vcpu_fault_retries_per_s", 0, cli_median(rtps, reps));
	report_f(&r, "vcpu_faults_alone_per_s", 0, cli_median(alone, reps));
	report_f(&r, "fault_throughput_ratio", 2, cli_median(ratio, reps));
	ok = true;
out:
	if (h.vm && vmmu_vm_bugged(h.vm, NULL)) {
		cli_set_error(err, sizeof(err), "the VM is bugged");
		ok = false;
	}
	hm_vm_destroy(&h);
	for (unsigned int i = 0; i < nr_vcpus && i < NOTIFIER_MAX_VCPUS; i++)
		free(t[i].shadow);
	hm_mem_unmap(&hmem);
	return bench_finish(&r, o, ok, err);
}
