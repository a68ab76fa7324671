/* SPDX-License-Identifier: MIT */
/*
 * Shared declarations of the vmmu command-line tool: options, the report
 * writer (JSON or aligned text), timing, and the vCPU thread crew that both
 * `vmmu run` and `vmmu bench` use. The tool codes only against the public
 * header <vmmu/vmmu.h>.
 */
#ifndef VMMU_TOOL_CLI_H
#define VMMU_TOOL_CLI_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <vmmu/vmmu.h>

/* Exit statuses: scripts and CI rely on these three values. */
#define CLI_EXIT_OK	0
#define CLI_EXIT_FAIL	1
#define CLI_EXIT_USAGE	2

#define CLI_PAGE_SIZE	UINT64_C(4096)
#define CLI_SIZE_2M	(UINT64_C(2) << 20)
#define CLI_SIZE_1G	(UINT64_C(1) << 30)

/*
 * Guest paging is off in most scenarios, so every gva is a gpa and must stay
 * below 4 GiB (32-bit guest page tables need their RAM there too); RAM stops
 * at 3 GiB so the top GiB stays free, as on a PC (MMIO hole).
 */
#define CLI_MAX_MEM	(UINT64_C(3) << 30)

#define CLI_DEFAULT_VCPUS	2u
#define CLI_DEFAULT_MEM		(UINT64_C(1) << 30)
#define CLI_DEFAULT_REPS	5u
#define CLI_MAX_REPS		1000u

struct cli_opts {
	unsigned vcpus;
	bool vcpus_set;		/* benchmarks pick their own default otherwise */
	uint64_t mem_bytes;
	uint32_t mmu;		/* enum vmmu_mmu_kind */
	uint32_t tdp_format;	/* enum vmmu_tdp_format */
	uint64_t host_page;	/* bytes: 4K, 2M or 1G */
	uint32_t backing;	/* enum vmmu_backing */
	uint32_t vm_flags;	/* VMMU_VM_* */
	bool json;
	unsigned reps;
	bool reps_set;
	uint64_t seed;
	bool embedder_mem;	/* the tool maps guest RAM itself (a VMM's memory) */
	uint32_t guest_mode;	/* run paging: enum guest_mode (guest/guest.h) */
	bool guest_set;		/* --guest given: only scenarios with guest paging take it */
	/* VM config overrides, 0 for the library's defaults: scenarios set them */
	uint32_t tdp_levels;
	uint32_t maxphyaddr;
};

/* main.c */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_set_error(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *cli_tdp_name(uint32_t tdp_format);
const char *cli_host_page_name(uint64_t host_page);
const char *cli_backing_name(uint32_t backing);
int cli_parse_size(const char *s, uint64_t *out);
int cli_parse_u64(const char *s, int base, uint64_t *out);
double cli_median(const double *v, unsigned n);

/* A small generator whose state the caller keeps (one per thread). */
static inline uint64_t cli_xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static inline uint64_t cli_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The value written to the first 8 bytes of each guest page. It depends on
 * the gpa so that a mapping to the wrong host page is caught, not just a lost
 * write.
 */
static inline uint64_t cli_token(uint64_t gpa, uint64_t seed)
{
	return gpa ^ 0x5a5a5a5a5a5a5a5aull ^ seed;
}

/*
 * Reports are collected first and printed at the end, so that --json can
 * guarantee a single object on stdout whatever happened on the way.
 */
enum report_kind {
	REPORT_NUM,
	REPORT_STR,
	REPORT_BOOL,
	REPORT_NULL,
};

#define REPORT_MAX_ITEMS	64
#define REPORT_VAL_LEN		256

struct report_item {
	const char *key;	/* string literal, snake_case */
	enum report_kind kind;
	char val[REPORT_VAL_LEN];
};

struct report {
	unsigned n;
	struct report_item items[REPORT_MAX_ITEMS];
};

void report_init(struct report *r);
void report_str(struct report *r, const char *key, const char *val);
void report_u64(struct report *r, const char *key, uint64_t val);
void report_f(struct report *r, const char *key, int prec, double val);
void report_bool(struct report *r, const char *key, bool val);
void report_null(struct report *r, const char *key);
void report_print_json(const struct report *r, FILE *f);
void report_print_text(const struct report *r, FILE *f);
void report_config(struct report *r, const struct cli_opts *o, unsigned vcpus,
		   uint64_t mem_bytes);

/* scenario.c: a VM with one memslot of guest RAM and its vCPUs */
struct vm_env {
	vmmu_vm *vm;
	vmmu_vcpu **vcpus;
	unsigned nr_vcpus;
	uint64_t mem_bytes;
	const char *failed_call;	/* which vmmu call failed in env_create() */
	void *own_mem;			/* --embedder-mem: the tool's mapping */
	size_t own_len;
};

int env_create(struct vm_env *env, const struct cli_opts *o, unsigned nr_vcpus,
	       uint64_t mem_bytes);
void env_destroy(struct vm_env *env);
int env_check_bugged(struct vm_env *env, char *err, size_t err_len);
void env_sum_vcpu_stats(struct vm_env *env, struct vmmu_vcpu_stats *sum);
int env_verify_tokens(struct vm_env *env, uint64_t seed, uint64_t *mismatches);
int env_prepopulate(struct vm_env *env, uint64_t seed);

/*
 * A crew is one thread per vCPU (or per host partition), kept alive across
 * phases so that each vCPU stays on the same thread, released together by a
 * barrier for every phase.
 */
enum crew_op {
	CREW_OP_EXIT,
	CREW_OP_VCPU_WRITE,	/* first touch through vmmu_vcpu_access()   */
	CREW_OP_VCPU_RETOUCH,	/* read + verify + write through the vCPU   */
	CREW_OP_HOST_WRITE,	/* the same, straight through host pointers */
	CREW_OP_HOST_RETOUCH,
	CREW_OP_CALL,		/* crew->call(worker): a scenario's own phase */
};

struct crew;

struct crew_worker {
	pthread_t thread;
	struct crew *crew;
	unsigned idx;
	vmmu_vcpu *vcpu;
	uint64_t begin, end;	/* gpa range [begin, end) of this worker */
	void *ctx;		/* CREW_OP_CALL: the scenario's per-worker state */

	/* results of the last phase */
	uint64_t t_start, t_end;
	uint64_t mismatches;
	uint64_t bad_gpa, bad_expected, bad_got;	/* first mismatch */
	int err;		/* 0, VMMU_EXIT or a negative VMMU_E* */
	uint64_t err_gpa;
	bool err_is_write;
	const char *err_call;	/* set when a call other than an access failed */
	struct vmmu_exit exit;
};

struct crew {
	unsigned n;
	struct crew_worker *w;
	pthread_barrier_t start, done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;		/* 0 starting, 1 running, -1 aborted */
	enum crew_op op;
	uint8_t *host_base;	/* for the host ops: gpa 0 of the mapping */
	uint64_t seed;
	void (*call)(struct crew_worker *w);	/* CREW_OP_CALL */
	const char *addr_name;	/* "gpa", or "gva" once guest paging is on */
};

struct phase_result {
	uint64_t ns;		/* first barrier release to last thread done */
	uint64_t pages;
	uint64_t mismatches;
	unsigned failed;	/* workers that stopped on an error */
	char error[200];	/* the first failure, for the report; "" if none */
};

int crew_start(struct crew *c, unsigned n, vmmu_vcpu **vcpus, uint8_t *host_base,
	       uint64_t mem_bytes, uint64_t seed);
int crew_run(struct crew *c, enum crew_op op, const char *phase, struct phase_result *res);
int crew_run_call(struct crew *c, void (*call)(struct crew_worker *w), const char *phase,
		  struct phase_result *res);
void crew_stop(struct crew *c);

void cli_describe_failure(char *buf, size_t len, int rc, const struct vmmu_exit *exit);

/* scenario.c: `vmmu run` */
const char *scenario_default(void);
bool scenario_exists(const char *name);
bool scenario_takes_guest(const char *name);
void scenario_list(FILE *f, bool json);
int scenario_run(const char *name, const struct cli_opts *o);

/* scen_private.c */
int scenario_private(const struct cli_opts *o);

/* bench.c: `vmmu bench` */
bool bench_exists(const char *name);
/* Adds "ok" (and "error"), prints the report; the exit status to return. */
int bench_finish(struct report *r, const struct cli_opts *o, bool ok, const char *err);
/* bench_walk.c */
int bench_walk(const struct cli_opts *o);
/* bench_dirty.c */
int bench_fastpf(const struct cli_opts *o);
int bench_dirtylog(const struct cli_opts *o);
/* bench_hostmem.c */
int bench_zap(const struct cli_opts *o);
int bench_notifier(const struct cli_opts *o);
/* bench_shadow.c */
int bench_cr3switch(const struct cli_opts *o);
int bench_ptwrite(const struct cli_opts *o);
/* bench_private.c */
int bench_private(const struct cli_opts *o);
void bench_list(FILE *f, bool json);
int bench_run(const char *name, const struct cli_opts *o);

#endif /* VMMU_TOOL_CLI_H */
