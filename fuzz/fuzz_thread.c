/* SPDX-License-Identifier: MIT */
/*
 * The threaded mode: a second thread runs host-side operations for real
 * while the input's own thread drives the vCPUs.
 *
 * The host thread's operations come from the input (HOST_SCRIPT bytes after
 * the configuration) and are decoded before it starts, so the vCPU side
 * knows every state the host thread will put its memslot (HOST_SLOT, in gpa
 * space of its own, over a buffer of its own) in, only not when.  States
 * are numbered: version 0 before the thread starts, version k after its k-th
 * state-changing operation (create, delete, move, a logging flag change, a
 * host protection change).  The thread publishes "started" before such an
 * operation and "finished" after it; an access that began after version f
 * was finished and ended before version s+1 was started may observe any
 * version in [f, s], and fuzz_access.c accepts it if some scenario of one of
 * them matches (a memslot change is atomic for an access: its remote flush
 * waits the access out).
 *
 * Everything else the host thread does must not change what any access
 * observes, ever: zaps of ranges and of everything, remote flushes, audits,
 * aging, invalidations (begin + end: they only make accesses wait), dirty-log
 * harvests.  Those are checked by the same models, with nothing added.
 *
 * Harvests of the host slot race with the vCPU's stores, so the dirty-log
 * contract is checked after the join, from two logs stamped with one
 * atomic counter: every store to a logging version of the slot must be in
 * the bitmap of some harvest that ended after the store began, no later than
 * the first harvest that began after it ended (docs/mmu.md 9.1), unless the
 * slot was recreated, moved, or had logging switched in between.
 *
 * What keeps the vCPU thread from waiting on itself: it never opens an
 * invalidation over the host buffer, and while it has any open, accesses to
 * the host thread's gpa space are not issued (the invalidation hull, which
 * may hold back faults, can grow over both).  What keeps the checks free of
 * races: the host thread never writes guest memory and never makes it
 * PROT_NONE (RO at most), and no guest page table is read from its slot (an
 * access whose walk would is not issued).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fuzz.h"

#define HOST_SCRIPT 48		/* input bytes of the host thread's script */
#define HOST_OPS 160		/* operations, the script repeated */
#define HOST_PAGES (HOST_BUF_LEN / PAGE)
#define MAX_WRITES 4096

enum hop {
	H_ZAP_RANGE, H_ZAP_HOST, H_ZAP_ALL, H_FLUSH, H_AUDIT, H_AGE, H_HARVEST, H_INVAL,
	H_CREATE_DELETE, H_MOVE, H_LOG, H_PROT_RO, H_PROT_RW,
};

/* One state of the host slot. */
struct hversion {
	bool present;
	uint64_t gpa, size;
	uint32_t flags;
	uint8_t prot[HOST_PAGES];	/* VMMU_HOST_RW / RO of each buffer page */
};

struct hop_desc {
	enum hop kind;
	uint64_t a, b;			/* range or gpa, per kind */
	unsigned int version;		/* the version in effect after it */
	bool resets;			/* a new bitmap for the slot (or none) */
	/* filled in by the host thread */
	uint64_t s, t;			/* epoch stamps around it */
	uint64_t bitmap[HOST_PAGES / 64];
	bool done;
};

struct hwrite {
	uint32_t page;			/* page of the slot */
	unsigned int version;
	uint64_t s, e;
};

struct host_thread {
	struct fz *f;
	pthread_t tid;
	struct hop_desc ops[HOST_OPS + 1];	/* + the final harvest */
	unsigned int nops;
	struct hversion ver[HOST_OPS + 1];
	unsigned int nver;
	_Atomic unsigned int started, finished;
	_Atomic uint64_t epoch;
	_Atomic bool stop;
	_Atomic unsigned int ndone;	/* operations completed, for host_wait() */
	_Atomic unsigned int permits;	/* vCPU-side progress: see host_main() */
	_Atomic bool exited;
	/* the vCPU side's log */
	struct hwrite w[MAX_WRITES];
	unsigned int nw;
	bool w_overflow;
	unsigned int installed;
};

static struct host_thread HT;

static uintptr_t host_buf(void)
{
	return (uintptr_t)fz_arena + HOST_BUF_OFF;
}

/* ---- decoding: the operations and the versions they make ------------------------ */

/* Operation kinds by script byte: the cheap ones often, memslot changes
 * now and then (each costs grace periods, so they come at the pace of a
 * few per input). */
static const uint8_t hop_of[32] = {
	H_ZAP_RANGE, H_ZAP_RANGE, H_ZAP_HOST, H_ZAP_HOST, H_ZAP_ALL, H_FLUSH, H_FLUSH, H_AUDIT,
	H_AGE, H_HARVEST, H_HARVEST, H_HARVEST, H_INVAL, H_INVAL, H_PROT_RO, H_PROT_RW,
	H_PROT_RO, H_PROT_RW, H_CREATE_DELETE, H_MOVE, H_LOG, H_ZAP_HOST, H_FLUSH, H_HARVEST,
	H_ZAP_RANGE, H_AGE, H_INVAL, H_HARVEST, H_MOVE, H_LOG, H_ZAP_ALL, H_AUDIT,
};

static const char *const hop_names[] = {
	"zap range", "zap host range", "zap all", "flush", "audit", "age", "harvest", "invalidate",
	"create/delete", "move", "logging", "protect RO", "protect RW",
};

static void decode(struct host_thread *h, const uint8_t *script, size_t n, uint64_t seed)
{
	struct hversion cur;

	/* Version 0, made before the thread starts: the slot, at the start of
	 * its gpa space, logging, unless the script's first byte says not. */
	memset(&cur, 0, sizeof(cur));
	cur.present = !n || (script[0] & 0xc0) != 0xc0;
	cur.size = n && (script[0] & 1) ? 256 << 10 : HOST_BUF_LEN;
	cur.gpa = HOST_GPA;
	cur.flags = !n || !(script[0] & 2) ? VMMU_MEM_LOG_DIRTY_PAGES : 0;
	h->ver[0] = cur;
	h->nver = 1;
	h->nops = 0;
	for (unsigned int i = 0; i < HOST_OPS && n; i++) {
		uint8_t b = script[i % n];
		uint64_t r = (seed ^ (i * 0x9e3779b97f4a7c15ULL)) * 0xbf58476d1ce4e5b9ULL;
		struct hop_desc *o = &h->ops[h->nops++];
		bool changes = false;

		r ^= r >> 29;
		memset(o, 0, sizeof(*o));
		o->kind = (enum hop)hop_of[b % 32];
		switch (o->kind) {
		case H_ZAP_RANGE:
		case H_AGE:
			o->a = r % ((GPA_SPACE + HOST_GPA_LEN) / PAGE);
			o->b = o->a + 1 + (r >> 32) % 2048;
			break;
		case H_ZAP_HOST:
			o->a = HOST_GPA / PAGE + r % (HOST_GPA_LEN / PAGE);
			o->b = o->a + 1 + (r >> 32) % 256;
			break;
		case H_INVAL:
		case H_PROT_RO:
		case H_PROT_RW:
			o->a = r % HOST_PAGES;
			o->b = o->a + 1 + (r >> 32) % (HOST_PAGES - o->a);
			if (o->kind != H_INVAL) {
				for (uint64_t p = o->a; p < o->b; p++)
					cur.prot[p] = o->kind == H_PROT_RO ? VMMU_HOST_RO : VMMU_HOST_RW;
				changes = true;
			}
			break;
		case H_CREATE_DELETE:
			if (cur.present) {
				cur.present = false;
			} else {
				static const uint64_t sizes[] = { 64 << 10, 256 << 10, HOST_BUF_LEN };

				cur.present = true;
				cur.size = sizes[r % 3];
				cur.gpa = HOST_GPA + ((r >> 8) % ((HOST_GPA_LEN - cur.size) / PAGE + 1)) * PAGE;
				cur.flags = (r & 0x10000) ? VMMU_MEM_LOG_DIRTY_PAGES : 0;
			}
			changes = o->resets = true;
			break;
		case H_MOVE:
			if (!cur.present)
				break;
			cur.gpa = HOST_GPA + ((r >> 8) % ((HOST_GPA_LEN - cur.size) / PAGE + 1)) * PAGE;
			changes = o->resets = true;
			break;
		case H_LOG:
			if (!cur.present)
				break;
			cur.flags ^= VMMU_MEM_LOG_DIRTY_PAGES;
			changes = o->resets = true;
			break;
		default:
			break;
		}
		if (changes)
			h->ver[h->nver++] = cur;
		o->version = h->nver - 1;
	}
}

/* ---- the model side ------------------------------------------------------------- */

void host_install(struct fz *f, unsigned int v)
{
	struct host_thread *h = f->ht;
	const struct hversion *hv = &h->ver[v];
	struct model_slot *s = &f->m->slots[HOST_SLOT];

	/* The host slot's dirty pages are the threaded check's (dirty = NULL:
	 * the model's own harvest accounting leaves it alone). */
	memset(s, 0, sizeof(*s));
	if (hv->present) {
		s->used = true;
		s->gpa = hv->gpa;
		s->size = hv->size;
		s->flags = hv->flags;
		s->hva = host_buf();
		s->host_page = PAGE;
	}
	model_set_prot(f->m, host_buf(), host_buf() + HOST_BUF_LEN, VMMU_HOST_RW);
	for (unsigned int p = 0; p < HOST_PAGES; p++)
		if (hv->prot[p] != VMMU_HOST_RW)
			model_set_prot(f->m, host_buf() + p * PAGE, host_buf() + (p + 1) * PAGE, hv->prot[p]);
	h->installed = v;
}

unsigned int host_window_begin(struct fz *f, uint64_t *stamp)
{
	unsigned int v = atomic_load_explicit(&f->ht->finished, memory_order_acquire);

	*stamp = atomic_fetch_add(&f->ht->epoch, 1);
	return v;
}

unsigned int host_window_end(struct fz *f, uint64_t *stamp)
{
	*stamp = atomic_fetch_add(&f->ht->epoch, 1);
	return atomic_load_explicit(&f->ht->started, memory_order_acquire);
}

unsigned int host_installed(const struct fz *f)
{
	return f->ht->installed;
}

void host_note_write(struct fz *f, unsigned int v, uint64_t gpa, uint64_t s, uint64_t e)
{
	struct host_thread *h = f->ht;
	const struct hversion *hv = &h->ver[v];

	if (!hv->present || !(hv->flags & VMMU_MEM_LOG_DIRTY_PAGES) || gpa - hv->gpa >= hv->size)
		return;
	if (h->nw == MAX_WRITES) {
		h->w_overflow = true;
		return;
	}
	h->w[h->nw++] = (struct hwrite){ (uint32_t)((gpa - hv->gpa) / PAGE), v, s, e };
}

bool host_gpa(uint64_t gpa)
{
	return gpa >= HOST_GPA && gpa - HOST_GPA < HOST_GPA_LEN;
}

/* ---- the host thread ------------------------------------------------------------- */

static void __attribute__((noreturn, format(printf, 1, 2))) hfail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_ops: host thread: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static void set_slot(struct host_thread *h, const struct hversion *hv)
{
	struct vmmu_memslot req = { .slot = HOST_SLOT, .host_page_size = PAGE };
	int rc;

	if (hv->present) {
		req.gpa = hv->gpa;
		req.size = hv->size;
		req.hva = (void *)host_buf();
		req.flags = hv->flags;
	}
	rc = vmmu_set_memslot(h->f->vm, &req);
	if (rc)
		hfail("vmmu_set_memslot(slot %u, gpa %#" PRIx64 " size %#" PRIx64 " flags %#x) = %d (%s)",
		      HOST_SLOT, req.gpa, req.size, req.flags, rc, vmmu_strerror(rc));
}

/* False when vmmu refused a protection change (ENOSPC: the set of ranges
 * is full): the version the vCPU side was told may start never happens. */
static bool run_one(struct host_thread *h, struct hop_desc *o, const struct hversion *before)
{
	vmmu_vm *vm = h->f->vm;
	const struct hversion *after = &h->ver[o->version];
	uintptr_t s = host_buf() + o->a * PAGE, e = host_buf() + o->b * PAGE;
	char why[256];
	uint64_t young;
	int rc, want;

	switch (o->kind) {
	case H_ZAP_RANGE:
	case H_ZAP_HOST:
		if ((rc = vmmu_zap_gfn_range(vm, o->a, o->b)))
			hfail("vmmu_zap_gfn_range = %d", rc);
		break;
	case H_ZAP_ALL:
		vmmu_zap_all(vm);
		break;
	case H_FLUSH:
		vmmu_flush_remote_tlbs(vm);
		break;
	case H_AUDIT:
		if (vmmu_audit(vm, why, sizeof(why)))
			hfail("vmmu_audit while the vCPUs run: %s", why);
		break;
	case H_AGE:
		if ((rc = vmmu_age_gfn_range(vm, o->a, o->b, 1, &young)) || young > o->b - o->a)
			hfail("vmmu_age_gfn_range = %d, %" PRIu64 " young", rc, young);
		break;
	case H_HARVEST:
		want = !before->present ? VMMU_ENOENT : !(before->flags & VMMU_MEM_LOG_DIRTY_PAGES) ? VMMU_EINVAL : 0;
		rc = vmmu_get_dirty_log(vm, HOST_SLOT, o->bitmap);
		if (rc != want)
			hfail("vmmu_get_dirty_log(host slot) = %d, expected %d", rc, want);
		break;
	case H_INVAL:
		vmmu_invalidate_range_begin(vm, s, e);
		sched_yield();
		vmmu_invalidate_range_end(vm, s, e);
		break;
	case H_PROT_RO:
		/* vmmu first, the host last: vmmu never allows more than the host. */
		rc = vmmu_set_host_protection(vm, s, e, VMMU_HOST_RO);
		if (rc == VMMU_ENOSPC)
			return false;
		if (rc)
			hfail("vmmu_set_host_protection RO = %d", rc);
		if (mprotect((void *)s, e - s, PROT_READ))
			hfail("mprotect failed");
		break;
	case H_PROT_RW:
		if (mprotect((void *)s, e - s, PROT_READ | PROT_WRITE))
			hfail("mprotect failed");
		rc = vmmu_set_host_protection(vm, s, e, VMMU_HOST_RW);
		if (rc == VMMU_ENOSPC) {
			/* vmmu keeps RO, which is less than the host allows: fine,
			 * but the version never happens. */
			return false;
		}
		if (rc)
			hfail("vmmu_set_host_protection RW = %d", rc);
		break;
	case H_CREATE_DELETE:
	case H_MOVE:
	case H_LOG:
		if (after != before)	/* a move or a flag change of no slot is nothing */
			set_slot(h, after);
		break;
	}
	return true;
}

static void *host_main(void *arg)
{
	struct host_thread *h = arg;

	for (unsigned int i = 0; i < h->nops && !atomic_load(&h->stop); i++) {
		struct hop_desc *o = &h->ops[i];

		/*
		 * Paced by the vCPU side's progress, not by time: about two
		 * operations per vCPU operation, so that the script lasts the
		 * whole input and host operations fall between the vCPU's.
		 */
		while (i >= 2 * atomic_load_explicit(&h->permits, memory_order_acquire) + 4 && !atomic_load(&h->stop))
			sched_yield();
		if (atomic_load(&h->stop))
			break;
		unsigned int before = i ? h->ops[i - 1].version : 0;
		bool visible = o->version != before;

		if (visible)
			atomic_store_explicit(&h->started, o->version, memory_order_release);
		o->s = atomic_fetch_add(&h->epoch, 1);
		/*
		 * A protection change vmmu had no room for: its version was
		 * announced and never comes, so the thread stops here (the
		 * vCPU side keeps allowing it, a little too leniently, for the
		 * rest of the input; the set of ranges is rarely full).
		 */
		if (!run_one(h, o, &h->ver[before]))
			break;
		o->t = atomic_fetch_add(&h->epoch, 1);
		o->done = true;
		if (fz_trace)
			fprintf(stderr, "  host %3u: %s [%#" PRIx64 ", %#" PRIx64 ") -> version %u, epochs %" PRIu64
				"..%" PRIu64 "\n", i, hop_names[o->kind], o->a, o->b, o->version, o->s, o->t);
		if (visible)
			atomic_store_explicit(&h->finished, o->version, memory_order_release);
		atomic_fetch_add_explicit(&h->ndone, 1, memory_order_release);
		sched_yield();
	}
	atomic_store(&h->exited, true);
	return NULL;
}

void host_tick(struct fz *f)
{
	atomic_fetch_add_explicit(&f->ht->permits, 1, memory_order_release);
}

void host_wait(struct fz *f, unsigned int n)
{
	struct host_thread *h = f->ht;
	unsigned int target = atomic_load_explicit(&h->ndone, memory_order_acquire) + n;

	atomic_fetch_add_explicit(&h->permits, n, memory_order_release);

	/* An ordering point, not a delay: the next vCPU operations come after
	 * n more host operations (or after the thread ran out of them). */
	while (atomic_load_explicit(&h->ndone, memory_order_acquire) < target && !atomic_load(&h->exited))
		sched_yield();
}

void host_thread_start(struct fz *f)
{
	struct host_thread *h = &HT;
	uint8_t script[HOST_SCRIPT];
	size_t n = 0;

	memset(h, 0, offsetof(struct host_thread, w));
	h->nw = 0;
	h->w_overflow = false;
	h->f = f;
	f->ht = h;
	while (n < HOST_SCRIPT && f->in.n)
		script[n++] = rd8(&f->in);
	decode(h, script, n, f->rng);
	if (mprotect((void *)host_buf(), HOST_BUF_LEN, PROT_READ | PROT_WRITE))
		fz_fail(f, "mprotect failed");
	if (h->ver[0].present)
		set_slot(h, &h->ver[0]);
	host_install(f, 0);
	TRACE(f, "host thread: %u operations, %u versions of its slot", h->nops, h->nver);
	for (unsigned int v = 0; fz_trace && v < h->nver; v++) {
		const struct hversion *hv = &h->ver[v];
		unsigned int ro = 0;

		for (unsigned int p = 0; p < HOST_PAGES; p++)
			ro += hv->prot[p] == VMMU_HOST_RO;
		char rs[160] = "";
		size_t o = 0;

		for (unsigned int p = 0; p < HOST_PAGES && o < sizeof(rs) - 16; p++)
			if (hv->prot[p] == VMMU_HOST_RO && (p == 0 || hv->prot[p - 1] != VMMU_HOST_RO)) {
				unsigned int q = p;

				while (q < HOST_PAGES && hv->prot[q] == VMMU_HOST_RO)
					q++;
				o += (size_t)snprintf(rs + o, sizeof(rs) - o, " [%#x,%#x)", p, q);
			}
		TRACE(f, "  version %u: %s gpa %#" PRIx64 " size %#" PRIx64 " flags %#x, %u RO pages%s", v,
		      hv->present ? "slot at" : "no slot, was at", hv->gpa, hv->size, hv->flags, ro, rs);
	}
	f->m->xhull_start = host_buf();
	f->m->xhull_end = host_buf() + HOST_BUF_LEN;
	f->m->hull_sticky = true;
	if (pthread_create(&h->tid, NULL, host_main, h))
		fz_fail(f, "pthread_create failed");
	f->host_running = true;
}

/* ---- after the join: the dirty log of the host slot ------------------------------- */

static bool reported(const struct hop_desc *o, uint32_t page)
{
	return (o->bitmap[page / 64] >> (page % 64)) & 1;
}

static void check_dirty(struct fz *f, struct host_thread *h)
{
	if (h->w_overflow)
		return;
	for (unsigned int k = 0; k < h->nw; k++) {
		const struct hwrite *w = &h->w[k];
		const struct hop_desc *due = NULL;
		bool dropped = false, found = false;

		/* The first harvest that began after the store returned. */
		for (unsigned int i = 0; i < h->nops && !due; i++)
			if (h->ops[i].done && h->ops[i].kind == H_HARVEST && h->ops[i].s > w->e)
				due = &h->ops[i];
		for (unsigned int i = 0; i < h->nops; i++) {
			const struct hop_desc *o = &h->ops[i];

			if (!o->done || (due && o->s > due->s))
				continue;
			/* A new bitmap (or none) since the store began: nothing owed. */
			if (o->resets && o->t > w->s)
				dropped = true;
			if (o->kind == H_HARVEST && o->t > w->s && reported(o, w->page))
				found = true;
		}
		TRACE(f, "host slot store: page %u version %u epochs %" PRIu64 "..%" PRIu64 ": %s", w->page, w->version,
		      w->s, w->e, !due ? "no harvest after it" : dropped ? "new bitmap since" : found ? "reported" : "LOST");
		if (!dropped && due && !found)
			fz_fail(f, "host slot page %u (version %u) was stored to at epoch %" PRIu64 "..%" PRIu64
				" but no harvest up to the one that began at %" PRIu64 " reports it", w->page,
				w->version, w->s, w->e, due->s);
	}
}

void host_thread_stop(struct fz *f)
{
	struct host_thread *h = f->ht;
	unsigned int last = 0;

	atomic_store(&h->stop, true);
	pthread_join(h->tid, NULL);
	for (unsigned int i = 0; i < h->nops; i++)
		if (h->ops[i].done)
			last = h->ops[i].version;
	/* The final harvest of the host slot, as the host thread would. */
	if (h->ver[last].present && (h->ver[last].flags & VMMU_MEM_LOG_DIRTY_PAGES)) {
		struct hop_desc *o = &h->ops[h->nops++];

		memset(o, 0, sizeof(*o));
		o->kind = H_HARVEST;
		o->version = last;
		o->s = atomic_fetch_add(&h->epoch, 1);
		if (vmmu_get_dirty_log(f->vm, HOST_SLOT, o->bitmap))
			fz_fail(f, "final harvest of the host slot failed");
		o->t = atomic_fetch_add(&h->epoch, 1);
		o->done = true;
	}
	check_dirty(f, h);
	host_install(f, last);	/* the model, the host and vmmu agree again */
	{
		unsigned int done = 0, harvests = 0;

		for (unsigned int i = 0; i < h->nops; i++) {
			done += h->ops[i].done;
			harvests += h->ops[i].done && h->ops[i].kind == H_HARVEST;
		}
		TRACE(f, "host thread: %u operations done (%u harvests), stopped at version %u; %u logged stores checked",
		      done, harvests, last, h->nw);
	}
	f->host_running = false;
}
