/* SPDX-License-Identifier: MIT */
/*
 * The bottom layer of the vmmu command-line tool (cli.c): options, units,
 * medians, timing, the wording of failures and the report writer (JSON or
 * aligned text).  It knows nothing of the scenarios and benchmarks above
 * it.  The tool codes only against the public header <vmmu/vmmu.h> (and
 * guest/guest.h).
 */
#ifndef VMMU_TOOL_CLI_H
#define VMMU_TOOL_CLI_H

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
	/* run --trace FILE: main() opens it (trace.h), env_create() attaches it */
	const char *trace_path;
	struct trace *trace;
	/* bench --sweep [--csv FILE]: the bench over its parameter (sweep.h) */
	bool sweep;
	const char *csv_path;
};

/* ------------------------------------------------------------------------ */
/* The command line                                                          */

enum cli_cmd {
	CLI_CMD_RUN,
	CLI_CMD_BENCH,
};

void cli_opts_init(struct cli_opts *o);
/*
 * Parses argv[2..]: options anywhere, as "--opt value" or "--opt=value", and
 * at most one positional (the scenario or benchmark, in *name). Returns 0, a
 * usage exit status, or -1 for --help.
 */
int cli_parse_opts(enum cli_cmd cmd, int argc, char **argv, struct cli_opts *o, const char **name);
/* Checks that need all options at once; 0 or a usage exit status. */
int cli_check_opts(const struct cli_opts *o);
void cli_print_usage(FILE *f);
void cli_print_options(FILE *f);

/*
 * The JSON contract: with --json, stdout gets exactly one JSON object
 * whatever happens, a report or {"ok": false, "error": ...}, and every
 * object starts with "schema" (CLI_JSON_SCHEMA) and "vmmu_version".  The
 * schema moves when a key changes meaning or goes away; new keys keep it.
 */
#define CLI_JSON_SCHEMA	1

/* main(): --json was asked for, so errors are JSON objects too. */
void cli_set_json_errors(bool on);
/* Whether stdout already has its JSON object. */
bool cli_json_printed(void);
/*
 * Prints {"schema", "vmmu_version", "ok": false, "error": msg, "exit_status"}
 * on stdout when --json was asked for and nothing was printed yet.
 */
void cli_json_error(int exit_status, const char *msg);

/* Says what was wrong and how to use the tool; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A failure before any report could be made: one line on stderr (and the
 * JSON error); returns CLI_EXIT_FAIL. */
int cli_runtime_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_set_error(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A failed vmmu call or access in words (rc: a VMMU_E* or VMMU_EXIT). */
void cli_describe_failure(char *buf, size_t len, int rc, const struct vmmu_exit *exit);
/* A failed guest access at gva, in words, into err; false so callers can return it. */
bool cli_access_failed(char *err, size_t err_len, const char *what, uint64_t gva, int r,
		       const struct vmmu_exit *exit);

/* ------------------------------------------------------------------------ */
/* Names, numbers and units                                                  */

const char *cli_tdp_name(uint32_t tdp_format);
const char *cli_host_page_name(uint64_t host_page);
const char *cli_backing_name(uint32_t backing);
int cli_parse_size(const char *s, uint64_t *out);
int cli_parse_u64(const char *s, int base, uint64_t *out);
double cli_median(const double *v, unsigned n);
/* Repetitions of a benchmark: --reps, or the default. */
unsigned cli_reps(const struct cli_opts *o);

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

/* Tokens are never 0, so a read of a zeroed page cannot pass for one. */
static inline uint64_t cli_token_nz(uint64_t gpa, uint64_t seed)
{
	return cli_token(gpa, seed) | 1;
}

/* Units of the text reports. */
static inline double cli_ms_of(uint64_t ns)
{
	return ns / 1e6;
}

static inline double cli_per_page(uint64_t ns, uint64_t pages)
{
	return pages ? (double)ns / pages : 0.0;
}

void cli_print_size(FILE *f, uint64_t bytes);
void cli_print_config_line(FILE *f, const struct cli_opts *o);

/* ------------------------------------------------------------------------ */
/* Reports                                                                   */

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

#define REPORT_MAX_ITEMS	160
#define REPORT_KEY_LEN		64
#define REPORT_VAL_LEN		256

struct report_item {
	char key[REPORT_KEY_LEN];	/* snake_case */
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
/*
 * A timed figure over the repetitions: key is the median, key_min and
 * key_max the spread beside it (benchmarks report every figure this way,
 * so a reader sees how far one quiet run can be trusted).  Returns the
 * median.
 */
double report_spread(struct report *r, const char *key, int prec, const double *v, unsigned n);
/*
 * A comparison of two variants measured in the same repetitions (their
 * passes interleaved): the median, min and max of the per-repetition
 * ratios num[i] / den[i], so that drift across repetitions cancels.
 * Returns the median ratio.
 */
double report_ratio(struct report *r, const char *key, int prec, const double *num, const double *den,
		    unsigned n);
void report_print_json(const struct report *r, FILE *f);
/* A JSON string literal of s, escaped. */
void cli_json_string(FILE *f, const char *s);
void report_print_text(const struct report *r, FILE *f);
void report_config(struct report *r, const struct cli_opts *o, unsigned vcpus,
		   uint64_t mem_bytes);

/* Adds "ok" (and "error"), prints the report; the exit status to return. */
int report_finish(struct report *r, const struct cli_opts *o, bool ok, const char *err);
void report_fault_stats(struct report *r, const struct vmmu_vcpu_stats *vs);
/* The counters a --trace file's events add up to (tests/trace_test.sh). */
void report_mmu_counters(struct report *r, const struct vmmu_vcpu_stats *vs, const struct vmmu_vm_stats *ms);
void report_vm_mappings(struct report *r, const struct vmmu_vm_stats *ms);
void report_shadow_counts(struct report *r, const struct vmmu_vm_stats *ms);

#endif /* VMMU_TOOL_CLI_H */
