/* SPDX-License-Identifier: MIT */
/*
 * Operation-stream fuzzer of vmmu's memory model.
 *
 * Each input is a VM configuration byte followed by a stream of operations
 * decoded from the bytes: memslot create/delete/move/flag changes over a few
 * preallocated host buffers inside a small gpa space, host protections
 * (vmmu_set_host_protection, applied to the memory for real with mprotect),
 * invalidations (begin and end as separate operations, nested and
 * overlapping, and begin + madvise(MADV_DONTNEED) + end), vCPU reads and
 * writes of 1, 2, 4, 8 bytes and up to three pages, page-crossing ones
 * included, from two vCPUs, zaps of ranges and of everything, remote
 * flushes, CR0.WP changes (MMU context resets), dirty-log harvests, audits,
 * and vmmu_release().  Every access is checked against the reference model
 * (model.c): outcome, exit fields, bytes read.  The isolation invariant is
 * checked by comparing all of the host memory under test (the buffers and
 * the guard areas between them) with what the model says it holds: no byte
 * outside the slots changes, a READONLY slot's bytes never change through
 * the guest, nothing changes between the checks but what the guest wrote.
 * A mismatch prints what was expected and calls abort(); a translation that
 * outlived a protection change, a slot deletion or a release touches
 * PROT_READ / PROT_NONE memory and crashes: both are findings.
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
 * says how to fold new inputs into the checked-in corpus (kept to ~40
 * inputs: ctest replays it in every tree, about 1 s plain, 2.5 s ASan, 7 s
 * TSan).
 *
 * The single thread never issues an access that the model says may wait for
 * an open invalidation (it would wait forever); everything else, slot changes
 * included, is allowed while invalidations are open.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MiB (1ULL << 20)
#define PAGE MODEL_PAGE
#define ARENA_SIZE (12 * MiB)
#define ARENA_PAGES (ARENA_SIZE / PAGE)
#define GPA_SPACE (32 * MiB)
#define MAX_OPS 4000
#define MAX_ACCESS (3 * PAGE)

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

static struct {
	bool ready;
	bool trace;	/* VMMU_FUZZ_TRACE=1: print every operation to stderr */
	uint8_t *arena;
	struct model m;
} G;

struct reader {
	const uint8_t *p;
	size_t n;
};

static uint8_t rd8(struct reader *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static uint16_t rd16(struct reader *r)
{
	uint16_t v = rd8(r);

	return (uint16_t)(v | (uint16_t)rd8(r) << 8);
}

static uint32_t rd32(struct reader *r)
{
	uint32_t v = rd16(r);

	return v | (uint32_t)rd16(r) << 16;
}

struct fz {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	struct model *m;
	struct reader in;
	uint64_t rng;
	unsigned int op;
	const char *opname;
};

static uint64_t rng_next(struct fz *f)
{
	uint64_t z = (f->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void __attribute__((noreturn, format(printf, 2, 3))) fz_fail(struct fz *f, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_ops: operation %u (%s): ", f->op, f->opname ? f->opname : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define TRACE(f, ...)                                                             \
	do {                                                                      \
		if (G.trace) {                                                    \
			fprintf(stderr, "  %4u ", (f)->op);                       \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
		}                                                                 \
	} while (0)

/* ---- the host memory under test ---------------------------------------------- */

static int arena_setup(void)
{
	size_t len = ARENA_SIZE + 2 * MiB;
	uint8_t *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (raw == MAP_FAILED)
		return -1;
	G.arena = (uint8_t *)(((uintptr_t)raw + 2 * MiB - 1) & ~(uintptr_t)(2 * MiB - 1));
	if (model_init(&G.m, (uintptr_t)G.arena, ARENA_SIZE))
		return -1;
	G.ready = true;
	return 0;
}

/* Every input starts from the same memory: a pattern that differs in every
 * word, so a write to the wrong place cannot go unnoticed. */
static void arena_reset(uint64_t seed)
{
	if (mprotect(G.arena, ARENA_SIZE, PROT_READ | PROT_WRITE))
		abort();
	for (uint64_t o = 0; o < ARENA_SIZE; o += 8) {
		uint64_t w = (o * 0x9e3779b97f4a7c15ULL) ^ seed;

		memcpy(G.arena + o, &w, 8);
	}
	memcpy(G.m.expect, G.arena, ARENA_SIZE);
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
	return false;
}

/* The host view of arena pages [first, end) against the model (PROT_NONE
 * pages can be neither read nor written, by anyone). */
static void check_memory(struct fz *f, uint64_t first, uint64_t end)
{
	for (uint64_t pg = first; pg < end && pg < ARENA_PAGES; pg++) {
		const uint8_t *have = G.arena + pg * PAGE, *want = f->m->expect + pg * PAGE;

		if (f->m->prot[pg] == VMMU_HOST_NONE || !memcmp(have, want, PAGE))
			continue;
		for (uint64_t i = 0; i < PAGE; i++)
			if (have[i] != want[i])
				fz_fail(f, "host memory at arena offset %#llx (%s) holds %#x, expected %#x",
					(unsigned long long)(pg * PAGE + i), in_buffer(pg * PAGE) ? "a buffer" : "a guard",
					have[i], want[i]);
	}
}

/* ---- operations ------------------------------------------------------------------ */

static const struct model_slot *pick_used_slot(struct fz *f, uint8_t b, uint32_t *id)
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

static uint64_t pick_gpa(struct fz *f, size_t len)
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

static void op_access(struct fz *f)
{
	static const size_t lens[8] = { 1, 2, 4, 8, 8, 4, 8, 0 };
	uint8_t b = rd8(&f->in), buf[MAX_ACCESS], want[MAX_ACCESS];
	vmmu_vcpu *c = f->vcpu[b & 1];
	bool write = b & 2;
	unsigned int type = (write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ) | ((b & 4) ? VMMU_ACCESS_PHYS : 0);
	size_t len = lens[(b >> 3) & 7];
	struct model_result res;
	struct vmmu_exit x;
	uint64_t gpa;
	int rc;

	f->opname = write ? "write" : "read";
	if (!len)
		len = 1 + rd16(&f->in) % MAX_ACCESS;
	gpa = pick_gpa(f, len);
	if (gpa + len > (1ULL << 32))
		gpa = (1ULL << 32) - len;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = rng_next(f);

		memcpy(buf + i, &w, len - i < 8 ? len - i : 8);
	}
	model_access(f->m, gpa, len, write, &res);
	TRACE(f, "vCPU %d %s %zu bytes at gpa %#llx%s: model says %s", b & 1, write ? "write" : "read", len,
	      (unsigned long long)gpa, (b & 4) ? " (phys)" : "",
	      res.outcome == MODEL_OK ? "ok" : res.outcome == MODEL_MMIO ? "mmio" :
	      res.outcome == MODEL_MEMFAULT ? "memory fault" : "blocked (skipped)");
	if (res.outcome == MODEL_BLOCKED)
		return;
	memset(&x, 0, sizeof(x));
	rc = vmmu_vcpu_access(c, gpa, buf, len, type, &x);
	switch (res.outcome) {
	case MODEL_OK:
		if (rc)
			fz_fail(f, "%zu bytes at gpa %#llx: rc %d (exit %u, gpa %#llx), expected success", len,
				(unsigned long long)gpa, rc, x.reason,
				(unsigned long long)(x.reason == VMMU_EXIT_MMIO ? x.u.mmio.gpa : x.u.memory_fault.gpa));
		if (write) {
			model_commit_write(f->m, gpa, buf, len);
		} else {
			model_expected_bytes(f->m, gpa, len, want);
			for (size_t i = 0; i < len; i++)
				if (buf[i] != want[i])
					fz_fail(f, "%zu bytes at gpa %#llx: byte %zu is %#x, expected %#x", len,
						(unsigned long long)gpa, i, buf[i], want[i]);
		}
		break;
	case MODEL_MMIO:
		if (rc != VMMU_EXIT || x.reason != VMMU_EXIT_MMIO)
			fz_fail(f, "%zu bytes at gpa %#llx: rc %d exit %u, expected MMIO at %#llx", len,
				(unsigned long long)gpa, rc, x.reason, (unsigned long long)res.gpa);
		if (x.u.mmio.gpa != res.gpa || x.u.mmio.len != res.len || x.u.mmio.offset != res.offset ||
		    x.u.mmio.is_write != write || x.u.mmio.readonly_slot != res.readonly_slot)
			fz_fail(f,
				"%zu bytes at gpa %#llx: MMIO exit gpa %#llx len %u offset %u write %u ro %u, "
				"expected gpa %#llx len %u offset %u write %u ro %u",
				len, (unsigned long long)gpa, (unsigned long long)x.u.mmio.gpa, x.u.mmio.len,
				x.u.mmio.offset, x.u.mmio.is_write, x.u.mmio.readonly_slot, (unsigned long long)res.gpa,
				res.len, res.offset, write, res.readonly_slot);
		break;
	case MODEL_MEMFAULT:
		if (rc != VMMU_EXIT || x.reason != VMMU_EXIT_MEMORY_FAULT)
			fz_fail(f, "%zu bytes at gpa %#llx: rc %d exit %u, expected a memory fault at %#llx", len,
				(unsigned long long)gpa, rc, x.reason, (unsigned long long)res.gpa);
		if (x.u.memory_fault.gpa != res.gpa || x.u.memory_fault.error != VMMU_EFAULT)
			fz_fail(f, "%zu bytes at gpa %#llx: memory fault at %#llx error %d, expected %#llx", len,
				(unsigned long long)gpa, (unsigned long long)x.u.memory_fault.gpa,
				x.u.memory_fault.error, (unsigned long long)res.gpa);
		break;
	case MODEL_BLOCKED:
		break;
	}
}

static void do_memslot(struct fz *f, const struct vmmu_memslot *req, const char *what)
{
	bool exact;
	int want = model_check_memslot(f->m, req, &exact);
	int rc = vmmu_set_memslot(f->vm, req);

	f->opname = what;
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
}

static void op_slot_create(struct fz *f)
{
	uint8_t id = rd8(&f->in) % MODEL_MAX_SLOTS, b = rd8(&f->in), extra = rd8(&f->in);
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
	req.hva = G.arena + bufs[k].off + start * PAGE;
	if (extra == 0xff)
		req.gpa |= 0x800;	/* misaligned: must be refused */
	do_memslot(f, &req, "slot create");
}

static void op_slot_delete(struct fz *f)
{
	struct vmmu_memslot req = { .slot = rd8(&f->in) % MODEL_MAX_SLOTS };

	do_memslot(f, &req, "slot delete");
}

static void op_slot_change(struct fz *f, bool move)
{
	uint8_t b = rd8(&f->in);
	uint16_t gpn = rd16(&f->in);
	uint32_t id;
	const struct model_slot *s = pick_used_slot(f, b, &id);
	struct vmmu_memslot req;

	if (!s)
		return;
	req = (struct vmmu_memslot){ .slot = id, .flags = s->flags, .gpa = s->gpa, .size = s->size,
				     .hva = (void *)s->hva, .host_page_size = s->host_page };
	if (move)
		req.gpa = ((b & 0x80) ? (uint64_t)(gpn & ~511u) : gpn) % (GPA_SPACE / PAGE) * PAGE;
	else
		req.flags ^= VMMU_MEM_LOG_DIRTY_PAGES;
	if (!move && (b & 0x40))
		req.flags ^= VMMU_MEM_READONLY;	/* not allowed to change: refused */
	do_memslot(f, &req, move ? "slot move" : "slot flags");
}

/* A page range of the arena: mostly inside a buffer, sometimes anywhere. */
static void pick_hva_range(struct fz *f, uintptr_t *start, uintptr_t *end)
{
	uint8_t b = rd8(&f->in);
	uint16_t r = rd16(&f->in);
	uint64_t first, n = 1 + (b & 0x80 ? rd16(&f->in) % 1024 : rd8(&f->in) % 32);

	if (b & 0x40) {
		first = r % ARENA_PAGES;
	} else {
		unsigned int k = b % NR_BUFS;

		first = bufs[k].off / PAGE + r % (bufs[k].len / PAGE);
	}
	if (first + n > ARENA_PAGES)
		n = ARENA_PAGES - first;
	*start = (uintptr_t)G.arena + first * PAGE;
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
	TRACE(f, "discard arena [%#llx, %#llx)", (unsigned long long)(s - f->m->arena),
	      (unsigned long long)(e - f->m->arena));
	vmmu_invalidate_range_begin(f->vm, s, e);
	if (madvise((void *)s, e - s, MADV_DONTNEED))
		fz_fail(f, "madvise failed");
	model_discard(f->m, s, e);
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
	harvest_slot(f, rd8(&f->in) % MODEL_MAX_SLOTS);
}

static void op_audit(struct fz *f)
{
	char why[256];

	f->opname = "audit";
	if (vmmu_audit(f->vm, why, sizeof(why)))
		fz_fail(f, "vmmu_audit: %s", why);
}

static void op_cr0(struct fz *f)
{
	vmmu_vcpu *c = f->vcpu[rd8(&f->in) & 1];
	struct vmmu_cpu_state s;

	f->opname = "CR0.WP";
	TRACE(f, "CR0.WP toggle");
	if (vmmu_vcpu_get_state(c, &s))
		fz_fail(f, "get_state failed");
	s.cr0 ^= VMMU_CR0_WP;
	if (vmmu_vcpu_set_state(c, &s))
		fz_fail(f, "set_state failed");
}

static void op_gpa_to_hva(struct fz *f)
{
	uint64_t gpa = pick_gpa(f, 1);
	uintptr_t want = 0;
	void *hva = NULL;
	const struct model_slot *s = model_find(f->m, gpa, &want);
	int rc = vmmu_gpa_to_hva(f->vm, gpa, &hva);

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

static int vm_create(struct fz *f, uint8_t cfgb)
{
	static const struct {
		uint32_t fmt, levels, flags;
	} variants[] = {
		{ VMMU_TDP_EPT, 4, 0 }, { VMMU_TDP_EPT, 4, VMMU_VM_AD_DISABLED }, { VMMU_TDP_EPT, 5, 0 },
		{ VMMU_TDP_NPT, 4, 0 }, { VMMU_TDP_NPT, 5, 0 },
	};
	struct vmmu_vm_config cfg;
	unsigned int v = cfgb % 5;

	vmmu_vm_config_init(&cfg);
	cfg.tdp_format = variants[v].fmt;
	cfg.tdp_levels = variants[v].levels;
	cfg.maxphyaddr = variants[v].levels == 5 ? 52 : 46;
	cfg.flags = variants[v].flags;
	cfg.max_vcpus = 2;
	cfg.pt_arena_bytes = 256 * MiB;
	if (cfgb & 0x08)
		cfg.flags |= VMMU_VM_NO_HUGEPAGES;
	if (cfgb & 0x10)
		cfg.flags |= VMMU_VM_NO_FAST_PF;
	if (cfgb & 0x20)
		cfg.flags |= VMMU_VM_EAGER_SPLIT;
	/* Shadow paging (paging off here: direct shadow pages, rmaps, the fast
	 * path under direct roots); it has hardware A/D only. */
	if (cfgb & 0x40) {
		cfg.mmu = VMMU_MMU_SHADOW;
		cfg.flags &= ~VMMU_VM_AD_DISABLED;
	}
	if (vmmu_vm_create(&cfg, &f->vm))
		return -1;
	if (vmmu_vcpu_create(f->vm, 0, &f->vcpu[0]) || vmmu_vcpu_create(f->vm, 1, &f->vcpu[1]))
		return -1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f;
	uint64_t seed = 0xcbf29ce484222325ULL;

	if (!G.ready)
		G.trace = getenv("VMMU_FUZZ_TRACE") && atoi(getenv("VMMU_FUZZ_TRACE"));
	if (!G.ready && arena_setup()) {
		fprintf(stderr, "fuzz_ops: cannot set up the host memory\n");
		abort();
	}
	memset(&f, 0, sizeof(f));
	f.m = &G.m;
	f.in = (struct reader){ data, size };
	/* The data the guest writes follows from the input (FNV-1a), so every
	 * input replays identically. */
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ULL;
	f.rng = seed;
	arena_reset(seed);
	if (vm_create(&f, rd8(&f.in))) {
		fprintf(stderr, "fuzz_ops: cannot create the VM\n");
		abort();
	}

	for (f.op = 0; f.in.n && f.op < MAX_OPS; f.op++) {
		uint8_t op = rd8(&f.in) % 32;

		f.opname = NULL;
		/* After release only accesses may follow (and destroy). */
		if (f.m->released && op >= 12 && op != 31)
			op = 0;
		switch (op) {
		case 0 ... 11:
			op_access(&f);
			break;
		case 12:
		case 13:
			op_slot_create(&f);
			break;
		case 14:
			op_slot_delete(&f);
			break;
		case 15:
			op_slot_change(&f, true);
			break;
		case 16:
			op_slot_change(&f, false);
			break;
		case 17:
		case 18:
			op_host_prot(&f);
			break;
		case 19:
			op_inval_begin(&f);
			break;
		case 20:
			op_inval_end(&f);
			break;
		case 21:
			op_discard(&f);
			break;
		case 22:
			op_zap_range(&f);
			break;
		case 23:
			f.opname = "zap all";
			TRACE(&f, "zap all");
			vmmu_zap_all(f.vm);
			break;
		case 24:
			f.opname = "flush";
			vmmu_flush_remote_tlbs(f.vm);
			break;
		case 25:
			op_harvest(&f);
			break;
		case 26:
			op_audit(&f);
			break;
		case 27:
			op_cr0(&f);
			break;
		case 28: {
			/* A window here, all of it at the end: a stray write stays
			 * until then, and whole checks would dominate the run time. */
			uint64_t first = rd16(&f.in) % ARENA_PAGES;

			f.opname = "memory check";
			check_memory(&f, first, first + 128);
			break;
		}
		case 29:
			op_gpa_to_hva(&f);
			break;
		case 30:
			/* Rare on purpose: the rest of the input is accesses. */
			if (rd8(&f.in) == 0x52)
				release_vm(&f);
			break;
		case 31: {
			/* A burst: a run of accesses maps many pages at once. */
			unsigned int n = 2 + rd8(&f.in) % 14;

			for (unsigned int i = 0; i < n && f.in.n; i++)
				op_access(&f);
			break;
		}
		}
	}

	f.opname = "end of input";
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
	vmmu_vm_destroy(f.vm);
	return 0;
}
