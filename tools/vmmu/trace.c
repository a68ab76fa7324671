// SPDX-License-Identifier: MIT
/*
 * The trace writer of `vmmu run --trace FILE` (trace.h).  The file is the
 * Chrome trace-event format: {"traceEvents": [...], ...}, each event with
 * name, cat, ph, ts (microseconds), pid and tid.  Faults, zaps and flushes,
 * which take time, are complete events ("ph": "X", with "dur"); fast
 * faults, shadow-page zaps and root loads and switches are instant events
 * ("ph": "i").  A vCPU's events go to tid 1 + its id, host-side ones (no
 * vCPU's thread caused them) to tid 1000 + the host thread's number, and
 * metadata events name every track.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "trace.h"

#define TRACE_PID		1
#define TRACE_HOST_TID		1000u	/* host thread k is tid 1000 + k */
#define TRACE_FIRST_CAP		4096u	/* events; a buffer doubles from there */

/* One thread's events, in the order it recorded them. */
struct trace_buf {
	struct trace_buf *next;		/* [trace->lock] */
	pthread_t thread;		/* [const] */
	unsigned int host_idx;		/* [const] its number among the trace's threads */
	struct vmmu_trace_event *ev;	/* [the thread] until trace_write() */
	size_t n, cap;
	uint64_t lost;			/* events not recorded: out of memory */
};

struct trace {
	char *path;
	FILE *f;
	uint64_t serial;		/* tells this trace from earlier ones at the same address */
	uint64_t t0_ns;			/* CLOCK_MONOTONIC at trace_open(): ts 0 */
	pthread_mutex_t lock;
	struct trace_buf *bufs;		/* [lock] */
	unsigned int nr_bufs;		/* [lock] */
	bool written;
	int write_rc;
	uint64_t events;
	char write_err[200];
};

/*
 * This thread's buffer for the trace it recorded into last: the common case
 * is one lookup and no lock.  The serial, not the address, identifies the
 * trace, since a freed trace's address may be reused.
 */
static __thread struct trace_buf *tl_buf;
static __thread uint64_t tl_serial;
static _Atomic uint64_t trace_serials;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int trace_open(struct trace **out, const char *path, char *err, size_t err_len)
{
	struct trace *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (!t || !(t->path = strdup(path))) {
		free(t);
		snprintf(err, err_len, "--trace %s: out of memory", path);
		return -1;
	}
	t->f = fopen(path, "w");
	if (!t->f) {
		snprintf(err, err_len, "--trace %s: cannot create the file: %s", path, strerror(errno));
		free(t->path);
		free(t);
		return -1;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->serial = atomic_fetch_add(&trace_serials, 1) + 1;
	t->t0_ns = now_ns();
	*out = t;
	return 0;
}

/* The calling thread's buffer, made on its first event; NULL without memory. */
static struct trace_buf *trace_buf_get(struct trace *t)
{
	pthread_t self = pthread_self();
	struct trace_buf *b;

	pthread_mutex_lock(&t->lock);
	for (b = t->bufs; b; b = b->next)
		if (pthread_equal(b->thread, self))
			break;
	if (!b && (b = calloc(1, sizeof(*b)))) {
		b->thread = self;
		b->host_idx = t->nr_bufs++;
		b->next = t->bufs;
		t->bufs = b;
	}
	pthread_mutex_unlock(&t->lock);
	if (b) {
		tl_buf = b;
		tl_serial = t->serial;
	}
	return b;
}

/*
 * The tracer: runs on whichever thread caused the event, maybe under
 * mmu_lock, so it only copies the event into this thread's buffer (a
 * realloc now and then) and never calls vmmu.
 */
static void trace_record(void *ctx, const struct vmmu_trace_event *ev)
{
	struct trace *t = ctx;
	struct trace_buf *b = tl_serial == t->serial ? tl_buf : trace_buf_get(t);

	if (!b)
		return;		/* nowhere to count it either: trace_write() cannot tell */
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : TRACE_FIRST_CAP;
		struct vmmu_trace_event *p = realloc(b->ev, cap * sizeof(*p));

		if (!p) {
			b->lost++;
			return;
		}
		b->ev = p;
		b->cap = cap;
	}
	b->ev[b->n++] = *ev;
}

void trace_attach(struct trace *t, vmmu_vm *vm)
{
	vmmu_set_trace(vm, trace_record, t);
}

void trace_detach(struct trace *t, vmmu_vm *vm)
{
	(void)t;
	vmmu_set_trace(vm, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

/* An event with the track it goes to, for sorting. */
struct trace_item {
	const struct vmmu_trace_event *ev;
	unsigned int tid;
	size_t seq;	/* order of recording within the thread: ties keep it */
};

static unsigned int item_tid(const struct vmmu_trace_event *ev, const struct trace_buf *b)
{
	return ev->vcpu_id == VMMU_TRACE_NO_VCPU ? TRACE_HOST_TID + b->host_idx : 1 + ev->vcpu_id;
}

/*
 * By time; at equal times the longer event first, so that an event inside
 * another (a flush inside the fault that caused it) comes after it, as
 * viewers nest complete events.
 */
static int item_cmp(const void *pa, const void *pb)
{
	const struct trace_item *a = pa, *b = pb;

	if (a->ev->ts_ns != b->ev->ts_ns)
		return a->ev->ts_ns < b->ev->ts_ns ? -1 : 1;
	if (a->ev->dur_ns != b->ev->dur_ns)
		return a->ev->dur_ns > b->ev->dur_ns ? -1 : 1;
	if (a->tid != b->tid)
		return a->tid < b->tid ? -1 : 1;
	return (a->seq > b->seq) - (a->seq < b->seq);
}

/* Microseconds with the nanoseconds kept, without floating point. */
static void put_us(FILE *f, const char *key, uint64_t ns)
{
	fprintf(f, ", \"%s\": %" PRIu64 ".%03u", key, ns / 1000, (unsigned int)(ns % 1000));
}

static const char *pf_result_name(uint32_t r)
{
	switch (r) {
	case VMMU_TRACE_PF_FIXED:
		return "fixed";
	case VMMU_TRACE_PF_SPURIOUS:
		return "spurious";
	case VMMU_TRACE_PF_RETRY:
		return "retry";
	case VMMU_TRACE_PF_EMULATE:
		return "emulate";
	case VMMU_TRACE_PF_GUEST_FAULT:
		return "guest_fault";
	case VMMU_TRACE_PF_HOST_FAULT:
		return "host_fault";
	default:
		return "other";
	}
}

/* Which MMU an event's flags name. */
static const char *mmu_name(uint32_t flags)
{
	if (flags & VMMU_TRACE_F_NESTED)
		return "nested";
	return flags & VMMU_TRACE_F_SHADOW ? "shadow" : "tdp";
}

/* The name, phase and arguments of one event; false for a kind it does not know. */
static bool put_event(FILE *f, const struct trace *t, const struct trace_item *it)
{
	const struct vmmu_trace_event *ev = it->ev;
	uint64_t ts = ev->ts_ns > t->t0_ns ? ev->ts_ns - t->t0_ns : 0;
	const char *name, *cat = "mmu";
	bool complete = true;

	switch (ev->kind) {
	case VMMU_TRACE_PAGE_FAULT:
		name = "page_fault";
		break;
	case VMMU_TRACE_FAST_PAGE_FAULT:
		name = "fast_page_fault";
		complete = false;
		break;
	case VMMU_TRACE_ZAP_RANGE:
		name = "zap_range";
		cat = "host";
		break;
	case VMMU_TRACE_ZAP_ALL:
		name = "zap_all";
		cat = "host";
		break;
	case VMMU_TRACE_SHADOW_PAGE_ZAP:
		name = "shadow_page_zap";
		complete = false;
		break;
	case VMMU_TRACE_REMOTE_TLB_FLUSH:
		name = "remote_tlb_flush";
		cat = "tlb";
		break;
	case VMMU_TRACE_ROOT_LOAD:
		name = "root_load";
		complete = false;
		break;
	case VMMU_TRACE_ROOT_SWITCH:
		name = "root_switch";
		complete = false;
		break;
	default:
		return false;
	}
	fprintf(f, "{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"%s\"", name, cat, complete ? "X" : "i");
	put_us(f, "ts", ts);
	if (complete)
		put_us(f, "dur", ev->dur_ns);
	else
		fputs(", \"s\": \"t\"", f);	/* an instant on its thread's track */
	fprintf(f, ", \"pid\": %d, \"tid\": %u, \"args\": {", TRACE_PID, it->tid);
	switch (ev->kind) {
	case VMMU_TRACE_PAGE_FAULT:
		fprintf(f, "\"addr\": \"0x%" PRIx64 "\", \"error_code\": \"0x%x\", \"result\": \"%s\", "
			"\"level\": %u, \"mmu\": \"%s\"", ev->gpa, ev->error_code, pf_result_name(ev->result),
			ev->level, mmu_name(ev->flags));
		break;
	case VMMU_TRACE_FAST_PAGE_FAULT:
		fprintf(f, "\"addr\": \"0x%" PRIx64 "\", \"error_code\": \"0x%x\", \"fixed\": %s, "
			"\"old_spte\": \"0x%" PRIx64 "\", \"new_spte\": \"0x%" PRIx64 "\"", ev->gpa, ev->error_code,
			ev->fixed ? "true" : "false", ev->old_spte, ev->new_spte);
		break;
	case VMMU_TRACE_ZAP_RANGE:
		fprintf(f, "\"gpa\": \"0x%" PRIx64 "\", \"pages\": %" PRIu64 ", \"sptes\": %" PRIu64, ev->gpa,
			ev->npages, ev->count);
		break;
	case VMMU_TRACE_SHADOW_PAGE_ZAP:
		fprintf(f, "\"gpa\": \"0x%" PRIx64 "\", \"level\": %u", ev->gpa, ev->level);
		break;
	case VMMU_TRACE_REMOTE_TLB_FLUSH:
		fprintf(f, "\"vcpus\": %" PRIu64, ev->count);
		break;
	case VMMU_TRACE_ROOT_LOAD:
	case VMMU_TRACE_ROOT_SWITCH:
		fprintf(f, "\"level\": %u, \"mmu\": \"%s\"", ev->level, mmu_name(ev->flags));
		/* a shadow root shadows the table of a register: name it */
		if (ev->flags & VMMU_TRACE_F_SHADOW)
			fprintf(f, ", \"%s\": \"0x%" PRIx64 "\"", ev->flags & VMMU_TRACE_F_NESTED ? "eptp" : "cr3",
				ev->gpa);
		if (ev->kind == VMMU_TRACE_ROOT_SWITCH)
			fprintf(f, ", \"fast\": %s", ev->flags & VMMU_TRACE_F_FAST ? "true" : "false");
		break;
	default:
		break;
	}
	fputs("}}", f);
	return true;
}

static void put_track_name(FILE *f, unsigned int tid, const char *fmt, unsigned int n)
{
	fprintf(f, ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": %u, \"args\": {\"name\": \"",
		TRACE_PID, tid);
	fprintf(f, fmt, n);
	fputs("\"}}", f);
	/* vCPUs first, in order, then the host threads */
	fprintf(f, ",\n{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": %d, \"tid\": %u, "
		"\"args\": {\"sort_index\": %u}}", TRACE_PID, tid, tid);
}

/* The events of every thread, sorted; *n_out of them. */
static struct trace_item *trace_collect(struct trace *t, size_t *n_out, uint64_t *lost)
{
	struct trace_item *items;
	struct trace_buf *b;
	size_t n = 0, k = 0;

	*lost = 0;
	for (b = t->bufs; b; b = b->next) {
		n += b->n;
		*lost += b->lost;
	}
	items = malloc((n ? n : 1) * sizeof(*items));
	if (!items)
		return NULL;
	for (b = t->bufs; b; b = b->next)
		for (size_t i = 0; i < b->n; i++)
			items[k++] = (struct trace_item){ .ev = &b->ev[i], .tid = item_tid(&b->ev[i], b), .seq = i };
	qsort(items, n, sizeof(*items), item_cmp);
	*n_out = n;
	return items;
}

int trace_write(struct trace *t, const char *label, uint64_t *events, char *err, size_t err_len)
{
	struct trace_item *items;
	uint64_t lost, written = 0;
	bool *named = NULL;
	size_t n, i;
	FILE *f = t->f;

	if (t->written)
		goto out;
	t->written = true;
	t->f = NULL;
	items = trace_collect(t, &n, &lost);
	if (!items || !(named = calloc(TRACE_HOST_TID + t->nr_bufs, sizeof(*named)))) {
		free(items);
		fclose(f);
		t->write_rc = -1;
		snprintf(t->write_err, sizeof(t->write_err), "--trace %s: out of memory for the events", t->path);
		goto out;
	}
	fputs("{\"displayTimeUnit\": \"ns\",\n\"otherData\": {\"vmmu_version\": ", f);
	cli_json_string(f, vmmu_version());
	fputs(", \"run\": ", f);
	cli_json_string(f, label);
	fprintf(f, "},\n\"traceEvents\": [\n{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, "
		"\"args\": {\"name\": ", TRACE_PID);
	cli_json_string(f, label);
	fputs("}}", f);
	/* a track is named where it first appears */
	for (i = 0; i < n; i++) {
		unsigned int tid = items[i].tid;

		if (tid < TRACE_HOST_TID + t->nr_bufs && !named[tid]) {
			named[tid] = true;
			if (tid >= TRACE_HOST_TID)
				put_track_name(f, tid, "host thread %u", tid - TRACE_HOST_TID);
			else
				put_track_name(f, tid, "vCPU %u", tid - 1);
		}
		fputs(",\n", f);
		if (put_event(f, t, &items[i]))
			written++;
		else	/* a kind newer than this tool: keep the file valid */
			fprintf(f, "{\"name\": \"kind_%u\", \"cat\": \"mmu\", \"ph\": \"i\", \"s\": \"t\", \"ts\": 0, "
				"\"pid\": %d, \"tid\": %u}", items[i].ev->kind, TRACE_PID, tid);
	}
	fputs("\n]}\n", f);
	free(items);
	free(named);
	t->events = written;
	if (ferror(f) | fclose(f)) {
		t->write_rc = -1;
		snprintf(t->write_err, sizeof(t->write_err), "--trace %s: writing the file failed: %s", t->path,
			 strerror(errno));
	} else if (lost) {
		t->write_rc = -1;
		snprintf(t->write_err, sizeof(t->write_err),
			 "--trace %s: %" PRIu64 " events lost for want of memory; the file lacks them", t->path, lost);
	}
out:
	*events = t->events;
	if (t->write_rc)
		snprintf(err, err_len, "%s", t->write_err);
	return t->write_rc;
}

bool trace_written(const struct trace *t)
{
	return t->written;
}

const char *trace_path(const struct trace *t)
{
	return t->path;
}

void trace_free(struct trace *t)
{
	struct trace_buf *b, *next;

	if (!t)
		return;
	if (t->f)
		fclose(t->f);
	for (b = t->bufs; b; b = next) {
		next = b->next;
		free(b->ev);
		free(b);
	}
	pthread_mutex_destroy(&t->lock);
	free(t->path);
	free(t);
}
