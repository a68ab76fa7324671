/* SPDX-License-Identifier: MIT */
/*
 * Operation-stream fuzzer of vmmu's memory model.
 *
 * Each input is two configuration bytes (TDP format or shadow paging, huge
 * pages, fast page faults, eager splitting, PML, MAXPHYADDR, cached shadow
 * roots, a tiny shadow page cap, the threaded mode: see vm_create) followed
 * by a stream of operations decoded from the bytes, on one VM with two
 * vCPUs:
 *  - memslot create/delete/move/flag changes over a few preallocated host
 *    buffers inside a small gpa space, host protections
 *    (vmmu_set_host_protection, applied to the memory for real with
 *    mprotect), invalidations (begin and end as separate operations, nested
 *    and overlapping, and begin + madvise(MADV_DONTNEED) + end), zaps of
 *    ranges and of everything, remote flushes, dirty-log harvests, aging,
 *    audits, vmmu_gpa_to_hva and vmmu_release();
 *  - vCPU reads, writes and fetches of 1, 2, 4, 8 bytes and up to three
 *    pages, page-crossing ones included: guest-physical, with paging off,
 *    or through the guest's page tables;
 *  - a small guest OS (fuzz_guest.c) that builds and edits 32-bit, PAE,
 *    4-level and 5-level page tables with guest stores (guest-physical, or
 *    through a gva alias of the table page), loads CR3 with and without
 *    PCIDs and the no-flush bit, runs INVLPG and INVPCID, changes CR0, CR4,
 *    EFER, RFLAGS.AC, CPL and PKRU, and turns paging off and on.
 *
 * Every access is checked against every scenario the reference models allow
 * (fuzz_access.c): model.c for memory, memslots and the host side, gmodel.c
 * for guest paging, which translates through the guest's own tables with
 * tests/walk_ref.c and keeps the translations the TLB may still hold (SDM
 * 4.10): the exit and its fields, the bytes read, guest memory afterwards,
 * A/D bits, the dirty log.  The isolation invariant is checked by comparing
 * all of the host memory under test (the buffers and the guard areas between
 * them) with what the model says it holds.  A mismatch prints what was
 * expected and calls abort(); a translation that outlived a protection
 * change, a slot deletion or a release touches PROT_READ / PROT_NONE memory
 * and crashes: both are findings.
 *
 * In the threaded mode (fuzz_thread.c) a host thread changes a memslot of its
 * own, harvests, zaps, flushes, audits and invalidates while the vCPUs run,
 * and accesses are checked against the states it may have had meanwhile.
 *
 * Build and run for hours (clang, libFuzzer; the library itself must be
 * instrumented too, which VMMU_FUZZ=ON does):
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DVMMU_SANITIZE=address \
 *         -DVMMU_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
 *   cmake --build build-fuzz --target fuzz_ops
 *   cp -r fuzz/corpus /tmp/corpus     (libFuzzer adds to its first directory)
 *   ASAN_OPTIONS=detect_leaks=1 build-fuzz/fuzz/fuzz_ops /tmp/corpus \
 *         -max_total_time=14400 -jobs=$(nproc) -workers=$(nproc) \
 *         -timeout=30 -rss_limit_mb=4096 -max_len=4096
 *
 * A crash leaves crash-<sha1> in the current directory; replay it with
 * `build/fuzz/fuzz_replay crash-<sha1>` (any tree) or the fuzz_ops binary,
 * with VMMU_FUZZ_TRACE=1 to print every decoded operation.  fuzz/README.md
 * says how to fold new inputs into the checked-in corpus (ctest replays it in
 * every tree: keep it to about 2 s plain, 4 s ASan, 10 s TSan), how
 * fuzz/seeds.py makes starting points, and what the bugs it found were
 * (fuzz/known/).
 *
 * The input's own thread never issues an access that the model says may wait
 * for an invalidation it opened (it would wait forever); everything else,
 * slot changes included, is allowed while invalidations are open.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Buffers slots may use, inside the arena; everything else is guard. */
static const struct {
	uint64_t off, len;
} bufs[] = {
	{ 4 * 1024, 64 * 1024 },	/* small, not 2M-aligned */
	{ 256 * 1024, 256 * 1024 },
	{ 2 * MiB, 4 * MiB },		/* 2M-aligned: huge mappings */
	{ 8 * MiB, 2 * MiB },
};
#define NR_BUFS (sizeof(bufs) / sizeof(bufs[0]))

uint8_t *fz_arena;
bool fz_trace;	/* VMMU_FUZZ_TRACE=1: print every operation to stderr */

static struct {
	bool ready;
	struct model m;
	struct gm g;
	uint8_t *pattern;	/* what every input's memory starts as */
} G;

uint8_t rd8(struct reader *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

uint16_t rd16(struct reader *r)
{
	uint16_t v = rd8(r);

	return (uint16_t)(v | (uint16_t)rd8(r) << 8);
}

uint32_t rd32(struct reader *r)
{
	uint32_t v = rd16(r);

	return v | (uint32_t)rd16(r) << 16;
}

uint64_t rng_next(struct fz *f)
{
	uint64_t z = (f->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void fz_fail(struct fz *f, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_ops: operation %u (%s): ", f->op, f->opname ? f->opname : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void fz_log(struct fz *f, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  %4u ", f->op);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- the host memory under test ---------------------------------------------- */

static int arena_setup(void)
{
	size_t len = ARENA_SIZE + 2 * MiB;
	uint8_t *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (raw == MAP_FAILED)
		return -1;
	fz_arena = (uint8_t *)(((uintptr_t)raw + 2 * MiB - 1) & ~(uintptr_t)(2 * MiB - 1));
	if (model_init(&G.m, (uintptr_t)fz_arena, ARENA_SIZE) || gm_init(&G.g, &G.m))
		return -1;
	/* A pattern that differs in every word, so a write to the wrong place
	 * cannot go unnoticed; made once, copied for every input (the
	 * sanitizer trees replay the corpus, where a 12 MiB loop costs). */
	G.pattern = malloc(ARENA_SIZE);
	if (!G.pattern)
		return -1;
	for (uint64_t o = 0; o < ARENA_SIZE; o += 8) {
		uint64_t w = o * 0x9e3779b97f4a7c15ULL ^ 0xcbf29ce484222325ULL;

		memcpy(G.pattern + o, &w, 8);
	}
	G.ready = true;
	return 0;
}

/* Every input starts from the same memory. */
static void arena_reset(void)
{
	if (mprotect(fz_arena, ARENA_SIZE, PROT_READ | PROT_WRITE))
		abort();
	memcpy(fz_arena, G.pattern, ARENA_SIZE);
	memcpy(G.m.expect, G.pattern, ARENA_SIZE);
	model_reset(&G.m);
}

static const char *prot_name(unsigned int p)
{
	return p == VMMU_HOST_RW ? "RW" : p == VMMU_HOST_RO ? "RO" : "NONE";
}

static int real_prot(unsigned int p)
{
	return p == VMMU_HOST_RW ? PROT_READ | PROT_WRITE : p == VMMU_HOST_RO ? PROT_READ : PROT_NONE;
}

static bool in_buffer(uint64_t off)
{
	for (unsigned int k = 0; k < NR_BUFS; k++)
		if (off >= bufs[k].off && off - bufs[k].off < bufs[k].len)
			return true;
	return off >= HOST_BUF_OFF && off - HOST_BUF_OFF < HOST_BUF_LEN;
}

/* The host view of arena pages [first, end) against the model (PROT_NONE
 * pages can be neither read nor written, by anyone). */
static void check_memory(struct fz *f, uint64_t first, uint64_t end)
{
	for (uint64_t pg = first; pg < end && pg < ARENA_PAGES; pg++) {
		const uint8_t *have = fz_arena + pg * PAGE, *want = f->m->expect + pg * PAGE;

		if (f->m->prot[pg] == VMMU_HOST_NONE || !memcmp(have, want, PAGE))
			continue;
		/* The host thread's buffer: what the model says is a version
		 * that may already be gone; checked once the thread stopped. */
		if (f->host_running && pg * PAGE >= HOST_BUF_OFF && pg * PAGE < HOST_BUF_OFF + HOST_BUF_LEN)
			continue;
		for (uint64_t i = 0; i < PAGE; i++)
			if (have[i] != want[i])
				fz_fail(f, "host memory at arena offset %#llx (%s) holds %#x, expected %#x",
					(unsigned long long)(pg * PAGE + i), in_buffer(pg * PAGE) ? "a buffer" : "a guard",
					have[i], want[i]);
	}
}

/* ---- operations ------------------------------------------------------------------ */

const struct model_slot *pick_used_slot(struct fz *f, uint8_t b, uint32_t *id)
{
	unsigned int n = 0, k;

	for (unsigned int i = 0; i < MODEL_MAX_SLOTS; i++)
		n += f->m->slots[i].used;
	if (!n)
		return NULL;
	k = b % n;
	for (unsigned int i = 0; i < MODEL_MAX_SLOTS; i++) {
		if (f->m->slots[i].used && k-- == 0) {
			*id = i;
			return &f->m->slots[i];
		}
	}
	return NULL;
}

uint64_t pick_gpa(struct fz *f, size_t len)
{
	uint8_t mode = rd8(&f->in);
	uint32_t r = rd32(&f->in);
	uint32_t id;
	const struct model_slot *s = pick_used_slot(f, mode >> 3, &id);
	uint64_t g;

	if (!s || (mode & 7) >= 6)
		return r % (GPA_SPACE + 4 * MiB);
	switch (mode & 7) {
	case 4: /* around either end of the slot (not below gpa 0) */
		g = ((r & 1) ? s->gpa + s->size : s->gpa) + (uint64_t)((int)((r >> 1) % 24) - 12);
		return g < GPA_SPACE + 4 * MiB ? g : 0;
	case 5: /* across a page boundary inside it */
		return s->gpa + ((r >> 4) % (s->size / PAGE)) * PAGE + PAGE - 1 - (r % (len < PAGE ? len : 7));
	default:
		return s->gpa + r % s->size;
	}
}

/*
 * Under shadow paging the guest must change its page tables only through
 * stores vmmu sees (docs/mmu.md S5): two slots over the same host memory,
 * or a discard of a page the MMU may shadow, would change a guest table
 * behind its back.  Such configurations are the embedder's error, so the
 * fuzzer does not make them there.
 */
static bool hva_shared(const struct fz *f, uintptr_t start, uint64_t size, uint32_t except)
{
	for (uint32_t i = 0; i < MODEL_MAX_SLOTS; i++) {
		const struct model_slot *s = &f->m->slots[i];

		if (i != except && s->used && start < s->hva + s->size && s->hva < start + size)
			return true;
	}
	return false;
}

static bool hva_has_table(const struct fz *f, uintptr_t start, uintptr_t end)
{
	for (uint32_t i = 0; i < MODEL_MAX_SLOTS; i++) {
		const struct model_slot *s = &f->m->slots[i];

		for (uintptr_t a = start; s->used && a < end; a += PAGE)
			if (a >= s->hva && a - s->hva < s->size && gm_is_table(f->g, s->gpa + (a - s->hva)))
				return true;
	}
	return false;
}

static void do_memslot(struct fz *f, const struct vmmu_memslot *req, const char *what)
{
	bool exact;
	int want = model_check_memslot(f->m, req, &exact);
	int rc;

	f->opname = what;
	/* Any translation may read a table in the slot: it may be cached. */
	gm_global_begin(f->g);
	rc = vmmu_set_memslot(f->vm, req);
	TRACE(f, "%s: slot %u gpa %#llx size %#llx arena+%#llx flags %#x host page %#llx: rc %d", what, req->slot,
	      (unsigned long long)req->gpa, (unsigned long long)req->size,
	      (unsigned long long)((uintptr_t)req->hva - f->m->arena), req->flags,
	      (unsigned long long)req->host_page_size, rc);
	if ((rc == 0) != (want == 0) || (exact && rc != want))
		fz_fail(f, "slot %u gpa %#llx size %#llx hva +%#llx flags %#x host page %#llx: rc %d (%s), expected %d (%s)",
			req->slot, (unsigned long long)req->gpa, (unsigned long long)req->size,
			(unsigned long long)((uintptr_t)req->hva - f->m->arena), req->flags,
			(unsigned long long)req->host_page_size, rc, vmmu_strerror(rc), want, vmmu_strerror(want));
	if (!rc)
		model_apply_memslot(f->m, req);
	gm_global_end(f->g);
}

static void op_slot_create(struct fz *f)
{
	uint8_t id = rd8(&f->in) % (f->threaded ? HOST_SLOT : MODEL_MAX_SLOTS), b = rd8(&f->in),
		extra = rd8(&f->in);
	unsigned int k = b % NR_BUFS;
	uint64_t bpages = bufs[k].len / PAGE, start = rd16(&f->in) % bpages, npages, gpn = rd16(&f->in);
	struct vmmu_memslot req = { .slot = id, .host_page_size = PAGE };

	if ((b >> 2) % 4 == 0)
		req.flags |= VMMU_MEM_READONLY;
	if ((b >> 4) % 4 == 0)
		req.flags |= VMMU_MEM_LOG_DIRTY_PAGES;
	npages = 1 + rd16(&f->in) % (bpages - start);
	if (bufs[k].len >= 2 * MiB && (b & 0x40)) {
		/* Huge-capable: 2M host pages, and often 2M-aligned both sides. */
		req.host_page_size = 2 * MiB;
		if (b & 0x80) {
			start &= ~511ULL;
			npages = (npages + 511) & ~511ULL;
			if (start + npages > bpages)
				npages = bpages - start;
			gpn &= ~511ULL;
		}
	}
	req.gpa = (gpn % (GPA_SPACE / PAGE)) * PAGE;
	req.size = npages * PAGE;
	req.hva = fz_arena + bufs[k].off + start * PAGE;
	/* The host thread's slot has gpa space of its own. */
	if (f->threaded && req.gpa + req.size > GPA_SPACE)
		req.size = GPA_SPACE - req.gpa;
	if (extra == 0xff)
		req.gpa |= 0x800;	/* misaligned: must be refused */
	if (f->shadow && hva_shared(f, (uintptr_t)req.hva, req.size, id))
		return;
	do_memslot(f, &req, "slot create");
}

static void op_slot_delete(struct fz *f)
{
	struct vmmu_memslot req = { .slot = rd8(&f->in) % (f->threaded ? HOST_SLOT : MODEL_MAX_SLOTS) };
	do_memslot(f, &req, "slot delete");
}

static void op_slot_change(struct fz *f, bool move)
{
	uint8_t b = rd8(&f->in);
	uint16_t gpn = rd16(&f->in);
	uint32_t id;
	const struct model_slot *s = pick_used_slot(f, b, &id);
	struct vmmu_memslot req;

	if (!s || (f->threaded && id == HOST_SLOT))
		return;
	req = (struct vmmu_memslot){ .slot = id, .flags = s->flags, .gpa = s->gpa, .size = s->size,
				     .hva = (void *)s->hva, .host_page_size = s->host_page };
	if (move)
		req.gpa = ((b & 0x80) ? (uint64_t)(gpn & ~511u) : gpn) % (GPA_SPACE / PAGE) * PAGE;
	else
		req.flags ^= VMMU_MEM_LOG_DIRTY_PAGES;
	if (!move && (b & 0x40))
		req.flags ^= VMMU_MEM_READONLY;	/* not allowed to change: refused */
	if (f->threaded && req.gpa + req.size > GPA_SPACE)
		return;
	do_memslot(f, &req, move ? "slot move" : "slot flags");
}

/* A page range of the arena: mostly inside a buffer, sometimes anywhere
 * (in threaded mode, never the host thread's buffer). */
static void pick_hva_range(struct fz *f, uintptr_t *start, uintptr_t *end)
{
	uint8_t b = rd8(&f->in);
	uint16_t r = rd16(&f->in);
	uint64_t first, n = 1 + (b & 0x80 ? rd16(&f->in) % 1024 : rd8(&f->in) % 32), limit = ARENA_PAGES;

	if (f->threaded)
		limit = HOST_BUF_OFF / PAGE;
	if (b & 0x40) {
		first = r % limit;
	} else {
		unsigned int k = b % NR_BUFS;

		first = bufs[k].off / PAGE + r % (bufs[k].len / PAGE);
	}
	if (first + n > limit)
		n = limit - first;
	*start = (uintptr_t)fz_arena + first * PAGE;
	*end = *start + n * PAGE;
}

static void op_host_prot(struct fz *f)
{
	unsigned int prot = rd8(&f->in) % 3;
	uintptr_t s, e;
	int rc;

	f->opname = "host protection";
	pick_hva_range(f, &s, &e);
	/* Rights are added to the host first and removed from it last, so
	 * vmmu never believes in more than the host allows. */
	if (prot == VMMU_HOST_RW && mprotect((void *)s, e - s, PROT_READ | PROT_WRITE))
		fz_fail(f, "mprotect failed");
	rc = vmmu_set_host_protection(f->vm, s, e, prot);
	if (rc == 0)
		model_hull_extend(f->m, s, e);
	TRACE(f, "host %s on arena [%#llx, %#llx): rc %d", prot_name(prot), (unsigned long long)(s - f->m->arena),
	      (unsigned long long)(e - f->m->arena), rc);
	if (rc == 0) {
		model_set_prot(f->m, s, e, prot);
	} else if (rc != VMMU_ENOSPC) {
		fz_fail(f, "%s on arena pages [%#llx, %#llx): %s", prot_name(prot),
			(unsigned long long)(s - f->m->arena) / PAGE, (unsigned long long)(e - f->m->arena) / PAGE,
			vmmu_strerror(rc));
	}
	/* Make the host what the model (and so vmmu) says, a run of equal
	 * pages at a time. */
	for (uintptr_t a = s, b; a < e; a = b) {
		unsigned int p = model_prot_at(f->m, a);

		for (b = a + PAGE; b < e && model_prot_at(f->m, b) == p;)
			b += PAGE;
		if (mprotect((void *)a, b - a, real_prot(p)))
			fz_fail(f, "mprotect failed");
	}
}

static void op_inval_begin(struct fz *f)
{
	uintptr_t s, e;

	f->opname = "invalidate begin";
	pick_hva_range(f, &s, &e);
	if (model_inval_begin(f->m, s, e)) {
		TRACE(f, "invalidate begin arena [%#llx, %#llx)", (unsigned long long)(s - f->m->arena),
		      (unsigned long long)(e - f->m->arena));
		vmmu_invalidate_range_begin(f->vm, s, e);
	}
}

static void op_inval_end(struct fz *f)
{
	uint8_t k = rd8(&f->in);
	uintptr_t s, e;

	f->opname = "invalidate end";
	if (!f->m->n_inval)
		return;
	model_inval_end(f->m, k % f->m->n_inval, &s, &e);
	TRACE(f, "invalidate end arena [%#llx, %#llx)", (unsigned long long)(s - f->m->arena),
	      (unsigned long long)(e - f->m->arena));
	vmmu_invalidate_range_end(f->vm, s, e);
}

/* What the kernel does around MADV_DONTNEED: the pages read back as zeros. */
static void op_discard(struct fz *f)
{
	uintptr_t s, e;

	f->opname = "discard";
	pick_hva_range(f, &s, &e);
	if (f->shadow && hva_has_table(f, s, e))
		return;
	TRACE(f, "discard arena [%#llx, %#llx)", (unsigned long long)(s - f->m->arena),
	      (unsigned long long)(e - f->m->arena));
	vmmu_invalidate_range_begin(f->vm, s, e);
	if (madvise((void *)s, e - s, MADV_DONTNEED))
		fz_fail(f, "madvise failed");
	gm_global_begin(f->g);
	model_discard(f->m, s, e);
	gm_global_end(f->g);
	model_hull_extend(f->m, s, e);
	vmmu_invalidate_range_end(f->vm, s, e);
}

static void op_zap_range(struct fz *f)
{
	uint64_t start = rd16(&f->in) % (GPA_SPACE / PAGE), n = 1 + rd16(&f->in) % 2048;
	int rc = vmmu_zap_gfn_range(f->vm, start, start + n);

	f->opname = "zap range";
	TRACE(f, "zap gfns [%#llx, %#llx)", (unsigned long long)start, (unsigned long long)(start + n));
	if (rc)
		fz_fail(f, "gfns [%#llx, %#llx): %s", (unsigned long long)start, (unsigned long long)(start + n),
			vmmu_strerror(rc));
}

static void op_age(struct fz *f)
{
	uint64_t start = rd16(&f->in) % (GPA_SPACE / PAGE), n = 1 + rd16(&f->in) % 2048, young = ~0ULL;
	int clear = rd8(&f->in) & 1;
	int rc = vmmu_age_gfn_range(f->vm, start, start + n, clear, &young);

	f->opname = "age";
	TRACE(f, "age gfns [%#llx, %#llx)%s: rc %d, %llu young", (unsigned long long)start,
	      (unsigned long long)(start + n), clear ? " and clear" : "", rc, (unsigned long long)young);
	/* Aging is a hint, but it counts pages of the range. */
	if (rc || young > n)
		fz_fail(f, "vmmu_age_gfn_range(%#llx, %#llx): rc %d, %llu young pages", (unsigned long long)start,
			(unsigned long long)(start + n), rc, (unsigned long long)young);
}

static void harvest_slot(struct fz *f, uint32_t id)
{
	const struct model_slot *s = &f->m->slots[id];
	uint64_t bitmap[1024 / 64 + 1];
	int want = !s->used ? VMMU_ENOENT : !(s->flags & VMMU_MEM_LOG_DIRTY_PAGES) ? VMMU_EINVAL : 0;
	int rc;
	int64_t missing;

	f->opname = "harvest";
	TRACE(f, "harvest slot %u", id);
	memset(bitmap, 0, sizeof(bitmap));
	rc = vmmu_get_dirty_log(f->vm, id, bitmap);
	if (rc != want)
		fz_fail(f, "slot %u: vmmu_get_dirty_log %d (%s), expected %d", id, rc, vmmu_strerror(rc), want);
	if (rc)
		return;
	missing = model_harvest(f->m, id, bitmap);
	if (missing >= 0)
		fz_fail(f, "slot %u: page %lld (gpa %#llx) was written since the last harvest but is not reported",
			id, (long long)missing, (unsigned long long)(s->gpa + (uint64_t)missing * PAGE));
}

static void op_harvest(struct fz *f)
{
	uint32_t id = rd8(&f->in) % MODEL_MAX_SLOTS;

	if (f->threaded && id == HOST_SLOT)
		return;	/* the host thread's */
	harvest_slot(f, id);
}

static void op_audit(struct fz *f)
{
	char why[256];

	f->opname = "audit";
	if (vmmu_audit(f->vm, why, sizeof(why)))
		fz_fail(f, "vmmu_audit: %s", why);
}

static void op_gpa_to_hva(struct fz *f)
{
	uint64_t gpa = pick_gpa(f, 1);
	uintptr_t want = 0;
	void *hva = NULL;
	const struct model_slot *s;
	int rc;

	if (f->threaded && gpa >= HOST_GPA)
		return;	/* the host thread's slot moves */
	s = model_find(f->m, gpa, &want);
	rc = vmmu_gpa_to_hva(f->vm, gpa, &hva);
	f->opname = "gpa_to_hva";
	if (s ? (rc || (uintptr_t)hva != want) : rc != VMMU_ENOENT)
		fz_fail(f, "gpa %#llx: rc %d hva %p, expected %s", (unsigned long long)gpa, rc, hva,
			s ? "its slot's address" : "ENOENT");
}

static void release_vm(struct fz *f)
{
	f->opname = "release";
	TRACE(f, "release");
	vmmu_release(f->vm);
	f->m->released = true;
}

/* ---- the input ---------------------------------------------------------------------- */

/*
 * Two configuration bytes.  The first: TDP format (value % 5: EPT 4-level,
 * EPT without A/D, EPT 5-level, NPT 4-level, NPT 5-level), bit 3 no huge
 * pages, bit 4 no fast page fault, bit 5 eager splitting, bit 6 shadow
 * paging.  The second: bits 0-1 shadow_prev_roots (3, 0, 1, 8), bit 2 a
 * tiny shadow_max_pages (recycling), bit 3 PML dirty logging (TDP with
 * A/D), bit 4 MAXPHYADDR 36, bit 5 the threaded mode, bit 6 16-entry PML
 * buffers.
 */
static int vm_create(struct fz *f, uint8_t cfgb, uint8_t cfg2)
{
	static const struct {
		uint32_t fmt, levels, flags;
	} variants[] = {
		{ VMMU_TDP_EPT, 4, 0 }, { VMMU_TDP_EPT, 4, VMMU_VM_AD_DISABLED }, { VMMU_TDP_EPT, 5, 0 },
		{ VMMU_TDP_NPT, 4, 0 }, { VMMU_TDP_NPT, 5, 0 },
	};
	static const uint32_t prev_roots[] = { 3, 0, 1, VMMU_MAX_PREV_ROOTS };
	struct vmmu_vm_config cfg;
	unsigned int v = cfgb % 5;

	vmmu_vm_config_init(&cfg);
	cfg.tdp_format = variants[v].fmt;
	cfg.tdp_levels = variants[v].levels;
	cfg.maxphyaddr = variants[v].levels == 5 ? 52 : (cfg2 & 0x10) ? 36 : 46;
	cfg.flags = variants[v].flags;
	cfg.max_vcpus = GM_VCPUS;
	cfg.pt_arena_bytes = 256 * MiB;
	if (cfgb & 0x08)
		cfg.flags |= VMMU_VM_NO_HUGEPAGES;
	if (cfgb & 0x10)
		cfg.flags |= VMMU_VM_NO_FAST_PF;
	if (cfgb & 0x20)
		cfg.flags |= VMMU_VM_EAGER_SPLIT;
	/* Shadow paging: hardware A/D only, and no PML (it write-protects). */
	if (cfgb & 0x40) {
		cfg.mmu = VMMU_MMU_SHADOW;
		cfg.flags &= ~VMMU_VM_AD_DISABLED;
		cfg.shadow_prev_roots = prev_roots[cfg2 & 3];
		if (cfg2 & 0x04)
			cfg.shadow_max_pages = 64;
	} else if ((cfg2 & 0x08) && !(cfg.flags & VMMU_VM_AD_DISABLED)) {
		cfg.flags |= VMMU_VM_PML;
		if (cfg2 & 0x40)
			cfg.pml_entries = 16;
	}
	f->shadow = cfg.mmu == VMMU_MMU_SHADOW;
	f->maxphyaddr = cfg.maxphyaddr;
	f->threaded = cfg2 & 0x20;
	gm_reset(f->g, f->shadow, f->shadow || cfg.tdp_levels == 5, cfg.maxphyaddr);
	if (vmmu_vm_create(&cfg, &f->vm))
		return -1;
	for (unsigned int i = 0; i < GM_VCPUS; i++)
		if (vmmu_vcpu_create(f->vm, i, &f->vcpu[i]))
			return -1;
	TRACE(f, "VM: %s, %s %u-level, MAXPHYADDR %u, flags %#x%s", f->shadow ? "shadow paging" : "TDP",
	      cfg.tdp_format == VMMU_TDP_EPT ? "EPT" : "NPT", cfg.tdp_levels, cfg.maxphyaddr, cfg.flags,
	      f->threaded ? ", threaded" : "");
	return 0;
}

static void run_op(struct fz *f, uint8_t op)
{
	switch (op) {
	case 0 ... 11:
	case 58 ... 63:
		op_guest_access(f);
		break;
	case 12: {
		/* A burst: a run of accesses maps many pages at once. */
		unsigned int n = 2 + rd8(&f->in) % 14;

		for (unsigned int i = 0; i < n && f->in.n; i++)
			op_guest_access(f);
		break;
	}
	case 13:
	case 14:
		op_slot_create(f);
		break;
	case 15:
		op_slot_delete(f);
		break;
	case 16:
		op_slot_change(f, true);
		break;
	case 17:
		op_slot_change(f, false);
		break;
	case 18:
	case 19:
		op_host_prot(f);
		break;
	case 20:
		op_inval_begin(f);
		break;
	case 21:
		op_inval_end(f);
		break;
	case 22:
		op_discard(f);
		break;
	case 23:
		op_zap_range(f);
		break;
	case 24:
		f->opname = "zap all";
		TRACE(f, "zap all");
		vmmu_zap_all(f->vm);
		break;
	case 25:
		f->opname = "flush";
		vmmu_flush_remote_tlbs(f->vm);
		break;
	case 26:
		op_harvest(f);
		break;
	case 27:
		op_audit(f);
		break;
	case 28: {
		/* A window here, all of it at the end: a stray write stays
		 * until then, and whole checks would dominate the run time. */
		uint64_t first = rd16(&f->in) % ARENA_PAGES;

		f->opname = "memory check";
		check_memory(f, first, first + 128);
		break;
	}
	case 29:
		op_gpa_to_hva(f);
		break;
	case 30:
		/* Rare on purpose: the rest of the input is accesses.  Not with
		 * the host thread, whose memslot calls may not follow it. */
		if (rd8(&f->in) == 0x52 && !f->threaded)
			release_vm(f);
		break;
	case 31:
		op_age(f);
		break;
	case 32 ... 37:
		op_pt_map(f);
		break;
	case 38 ... 42:
		op_pte_write(f);
		break;
	case 43:
		op_as_create(f);
		break;
	case 44 ... 47:
		op_as_load(f);
		break;
	case 48 ... 49:
		op_invlpg(f);
		break;
	case 50:
		op_invpcid(f);
		break;
	case 51 ... 54:
		op_cr_toggle(f);
		break;
	case 55:
		op_paging_off(f);
		break;
	case 56: {
		unsigned int n = 2 + rd8(&f->in) % 6;

		for (unsigned int i = 0; i < n && f->in.n; i++)
			op_guest_access(f);
		break;
	}
	case 57: {
		/* Threaded mode: let the host thread get on (the other modes
		 * read the byte all the same, so inputs move between modes). */
		uint8_t n = rd8(&f->in);

		f->opname = "host wait";
		if (f->host_running)
			host_wait(f, 1 + n % 4);
		break;
	}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz f;
	uint64_t seed = 0xcbf29ce484222325ULL;
	uint8_t cfgb, cfg2;

	if (!G.ready) {
		fz_trace = getenv("VMMU_FUZZ_TRACE") && atoi(getenv("VMMU_FUZZ_TRACE"));
	}
	if (!G.ready && arena_setup()) {
		fprintf(stderr, "fuzz_ops: cannot set up the host memory\n");
		abort();
	}
	memset(&f, 0, sizeof(f));
	f.m = &G.m;
	f.g = &G.g;
	f.in = (struct reader){ data, size };
	/* The data the guest writes follows from the input (FNV-1a), so every
	 * input replays identically. */
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ULL;
	f.rng = seed;
	arena_reset();
	guest_reset(&f);
	cfgb = rd8(&f.in);
	cfg2 = rd8(&f.in);
	if (vm_create(&f, cfgb, cfg2)) {
		fprintf(stderr, "fuzz_ops: cannot create the VM\n");
		abort();
	}
	if (f.threaded)
		host_thread_start(&f);

	for (f.op = 0; f.in.n && f.op < MAX_OPS; f.op++) {
		uint8_t op = rd8(&f.in) % 64;

		f.opname = NULL;
		/* After release only accesses may follow (and destroy). */
		if (f.m->released && op >= 12 && op < 58)
			op = 0;
		run_op(&f, op);
		if (f.host_running)
			host_tick(&f);
	}

	f.opname = "end of input";
	if (f.threaded)
		host_thread_stop(&f);
	while (f.m->n_inval) {
		uintptr_t s, e;

		model_inval_end(f.m, f.m->n_inval - 1, &s, &e);
		vmmu_invalidate_range_end(f.vm, s, e);
	}
	if (!f.m->released) {
		for (uint32_t id = 0; id < MODEL_MAX_SLOTS; id++) {
			if (f.m->slots[id].used && (f.m->slots[id].flags & VMMU_MEM_LOG_DIRTY_PAGES))
				harvest_slot(&f, id);
		}
		op_audit(&f);
	}
	check_memory(&f, 0, ARENA_PAGES);
	/* After release only destroy may follow. */
	if (!f.m->released && vmmu_vm_bugged(f.vm, NULL))
		fz_fail(&f, "the VM is bugged");
	TRACE(&f, "%lu accesses checked, %lu through a stale translation, %lu cut by an emulated store", f.n_checked,
	      f.n_stale_used, f.n_split);
	vmmu_vm_destroy(f.vm);
	return 0;
}
