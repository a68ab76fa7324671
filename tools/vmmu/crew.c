// SPDX-License-Identifier: MIT
/*
 * The vCPU crew: one thread per vCPU (or per host partition), alive across
 * phases, released together by a barrier for every phase.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"

void crew_worker_fail(struct crew_worker *w, int rc, uint64_t gpa, bool is_write,
		      const struct vmmu_exit *exit)
{
	w->err = rc;
	w->err_gpa = gpa;
	w->err_is_write = is_write;
	if (rc == VMMU_EXIT)
		w->exit = *exit;
}

void crew_worker_mismatch(struct crew_worker *w, uint64_t gpa, uint64_t want, uint64_t got)
{
	if (!w->mismatches++) {
		w->bad_gpa = gpa;
		w->bad_expected = want;
		w->bad_got = got;
	}
}

/*
 * The hot loops: nothing but the access and the token, so that the per-page
 * numbers are the MMU's and not the tool's.
 */
static void vcpu_write_pass(struct crew_worker *w, uint64_t seed)
{
	struct vmmu_exit exit;
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t val = cli_token(gpa, seed);
		int rc;

		rc = vmmu_vcpu_access(w->vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_WRITE, &exit);
		if (rc) {
			crew_worker_fail(w, rc, gpa, true, &exit);
			return;
		}
	}
}

/*
 * Retouch = touch every page again and verify what the first touch wrote: one
 * guest read per page, through the TLB and the SPTE tables built by the first
 * touch.  The host baseline does the same single read per page.
 */
static void vcpu_retouch_pass(struct crew_worker *w, uint64_t seed)
{
	struct vmmu_exit exit;
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		uint64_t want = cli_token(gpa, seed), val = ~want;
		int rc;

		rc = vmmu_vcpu_access(w->vcpu, gpa, &val, sizeof(val), VMMU_ACCESS_READ, &exit);
		if (rc) {
			crew_worker_fail(w, rc, gpa, false, &exit);
			return;
		}
		if (val != want)
			crew_worker_mismatch(w, gpa, want, val);
	}
}

static void host_write_pass(struct crew_worker *w, uint8_t *base, uint64_t seed)
{
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE)
		*(volatile uint64_t *)(base + gpa) = cli_token(gpa, seed);
}

static void host_retouch_pass(struct crew_worker *w, uint8_t *base, uint64_t seed)
{
	uint64_t gpa;

	for (gpa = w->begin; gpa < w->end; gpa += CLI_PAGE_SIZE) {
		volatile uint64_t *p = (volatile uint64_t *)(base + gpa);
		uint64_t want = cli_token(gpa, seed), val = *p;

		if (val != want)
			crew_worker_mismatch(w, gpa, want, val);
	}
}

/* Waits until crew_start() has created every thread; false if it gave up. */
static bool crew_wait_go(struct crew *c)
{
	int state;

	pthread_mutex_lock(&c->lock);
	while (!c->state)
		pthread_cond_wait(&c->cond, &c->lock);
	state = c->state;
	pthread_mutex_unlock(&c->lock);
	return state > 0;
}

static void *crew_thread(void *arg)
{
	struct crew_worker *w = arg;
	struct crew *c = w->crew;

	if (!crew_wait_go(c))
		return NULL;
	for (;;) {
		enum crew_op op;

		pthread_barrier_wait(&c->start);
		w->t_start = cli_now_ns();
		op = c->op;
		if (op == CREW_OP_EXIT)
			break;
		w->mismatches = 0;
		w->err = 0;
		w->err_call = NULL;
		switch (op) {
		case CREW_OP_VCPU_WRITE:
			vcpu_write_pass(w, c->seed);
			break;
		case CREW_OP_VCPU_RETOUCH:
			vcpu_retouch_pass(w, c->seed);
			break;
		case CREW_OP_HOST_WRITE:
			host_write_pass(w, c->host_base, c->seed);
			break;
		case CREW_OP_HOST_RETOUCH:
			host_retouch_pass(w, c->host_base, c->seed);
			break;
		case CREW_OP_CALL:
			c->call(w);
			break;
		case CREW_OP_EXIT:
			break;
		}
		w->t_end = cli_now_ns();
		pthread_barrier_wait(&c->done);
	}
	return NULL;
}

static void crew_set_state(struct crew *c, int state)
{
	pthread_mutex_lock(&c->lock);
	c->state = state;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

int crew_start(struct crew *c, unsigned n, vmmu_vcpu **vcpus, uint8_t *host_base,
	       uint64_t mem_bytes, uint64_t seed)
{
	uint64_t pages = mem_bytes / CLI_PAGE_SIZE;
	unsigned i, created;
	int err = 0;

	memset(c, 0, sizeof(*c));
	c->n = n;
	c->host_base = host_base;
	c->seed = seed;
	c->addr_name = "gpa";
	c->w = calloc(n, sizeof(*c->w));
	if (!c->w) {
		fprintf(stderr, "vmmu: out of memory for %u worker threads\n", n);
		return -1;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	/* the main thread takes part in both barriers to hand out phases */
	pthread_barrier_init(&c->start, NULL, n + 1);
	pthread_barrier_init(&c->done, NULL, n + 1);

	for (i = 0; i < n; i++) {
		struct crew_worker *w = &c->w[i];

		w->crew = c;
		w->idx = i;
		w->vcpu = vcpus ? vcpus[i] : NULL;
		/* contiguous, disjoint parts; sizes differ by at most one page */
		w->begin = pages * i / n * CLI_PAGE_SIZE;
		w->end = pages * (i + 1) / n * CLI_PAGE_SIZE;
	}

	for (created = 0; created < n; created++) {
		err = pthread_create(&c->w[created].thread, NULL, crew_thread, &c->w[created]);
		if (err)
			break;
	}
	if (created < n) {
		fprintf(stderr, "vmmu: cannot create vCPU thread %u: %s\n", created,
			strerror(err));
		/* the threads already running have not reached a barrier yet */
		crew_set_state(c, -1);
		for (i = 0; i < created; i++)
			pthread_join(c->w[i].thread, NULL);
		pthread_barrier_destroy(&c->start);
		pthread_barrier_destroy(&c->done);
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->lock);
		free(c->w);
		c->w = NULL;
		return -1;
	}
	crew_set_state(c, 1);
	return 0;
}

/*
 * Runs one phase on every worker. Returns 0 when every access completed and
 * every value read back was right, 1 otherwise (after saying why on stderr).
 */
int crew_run(struct crew *c, enum crew_op op, const char *phase, struct phase_result *res)
{
	uint64_t t_first = UINT64_MAX, t_last = 0;
	unsigned i, reported = 0;
	char why[256];

	memset(res, 0, sizeof(*res));
	c->op = op;
	pthread_barrier_wait(&c->start);
	pthread_barrier_wait(&c->done);

	for (i = 0; i < c->n; i++) {
		struct crew_worker *w = &c->w[i];

		if (w->t_start < t_first)
			t_first = w->t_start;
		if (w->t_end > t_last)
			t_last = w->t_end;
		res->pages += (w->end - w->begin) / CLI_PAGE_SIZE;
		res->mismatches += w->mismatches;
		if (w->mismatches && reported++ < ENV_MAX_MISMATCH_REPORTS)
			fprintf(stderr,
				"vmmu: %s: thread %u: %s 0x%" PRIx64 " read 0x%016" PRIx64
				", expected 0x%016" PRIx64 " (%" PRIu64 " bad in its part)\n",
				phase, i, c->addr_name, w->bad_gpa, w->bad_got, w->bad_expected,
				w->mismatches);
		if (w->err && w->err_call) {
			res->failed++;
			cli_describe_failure(why, sizeof(why), w->err, &w->exit);
			fprintf(stderr, "vmmu: %s: vCPU %u: %s: %s\n", phase, i, w->err_call, why);
			cli_set_error(res->error, sizeof(res->error), "%s: vCPU %u: %s: %s", phase, i,
				      w->err_call, why);
		} else if (w->err) {
			res->failed++;
			cli_describe_failure(why, sizeof(why), w->err, &w->exit);
			fprintf(stderr, "vmmu: %s: vCPU %u: %s of %s 0x%" PRIx64 ": %s\n",
				phase, i, w->err_is_write ? "write" : "read", c->addr_name,
				w->err_gpa, why);
			cli_set_error(res->error, sizeof(res->error),
				      "%s: vCPU %u: %s of %s 0x%" PRIx64 ": %s", phase, i,
				      w->err_is_write ? "write" : "read", c->addr_name, w->err_gpa,
				      why);
		}
	}
	if (res->mismatches)
		cli_set_error(res->error, sizeof(res->error),
			      "%s: %" PRIu64 " pages read back wrong data", phase,
			      res->mismatches);
	res->ns = t_last > t_first ? t_last - t_first : 0;
	return res->failed || res->mismatches ? 1 : 0;
}

/* Runs call on every worker's thread as one phase, with crew_run()'s checks. */
int crew_run_call(struct crew *c, void (*call)(struct crew_worker *w), const char *phase,
		  struct phase_result *res)
{
	/* published to the workers by the start barrier */
	c->call = call;
	return crew_run(c, CREW_OP_CALL, phase, res);
}

void crew_stop(struct crew *c)
{
	unsigned i;

	if (!c->w)
		return;
	c->op = CREW_OP_EXIT;
	pthread_barrier_wait(&c->start);
	for (i = 0; i < c->n; i++)
		pthread_join(c->w[i].thread, NULL);
	pthread_barrier_destroy(&c->start);
	pthread_barrier_destroy(&c->done);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->w);
	c->w = NULL;
}
