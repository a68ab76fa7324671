// SPDX-License-Identifier: MIT
/*
 * What every command of the vmmu tool shares: the options and their
 * parsing, units and medians, the wording of failures, and the report
 * (aligned text or one JSON object).  It uses nothing else of the tool.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <inttypes.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "guest.h"

static const char usage_synopsis[] =
	"Usage: vmmu run [SCENARIO] [OPTIONS]\n"
	"       vmmu run list\n"
	"       vmmu bench NAME [OPTIONS]\n"
	"       vmmu bench list\n"
	"       vmmu --help | --version\n";

static bool json_errors;	/* --json was given */
static bool json_printed;	/* stdout has its object */

void cli_set_json_errors(bool on)
{
	json_errors = on;
}

bool cli_json_printed(void)
{
	return json_printed;
}

void cli_json_error(int exit_status, const char *msg)
{
	struct report r;

	if (!json_errors || json_printed)
		return;
	report_init(&r);
	report_bool(&r, "ok", false);
	report_str(&r, "error", msg);
	report_u64(&r, "exit_status", (uint64_t)exit_status);
	report_print_json(&r, stdout);
}

/* The message on stderr as "vmmu: MSG", and as the JSON error. */
static void error_line(int exit_status, const char *fmt, va_list ap)
{
	char msg[512];	/* the JSON object keeps REPORT_VAL_LEN of it */

	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "vmmu: %s\n", msg);
	cli_json_error(exit_status, msg);
}

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_line(CLI_EXIT_USAGE, fmt, ap);
	va_end(ap);
	fputs(usage_synopsis, stderr);
	fputs("Try 'vmmu --help' for more information.\n", stderr);
	return CLI_EXIT_USAGE;
}

int cli_runtime_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_line(CLI_EXIT_FAIL, fmt, ap);
	va_end(ap);
	return CLI_EXIT_FAIL;
}

void cli_print_usage(FILE *f)
{
	fputs(usage_synopsis, f);
}

/* ------------------------------------------------------------------------ */
/* Errors and failures in words                                              */

/* Keeps the first error: later ones are usually its consequences. */
void cli_set_error(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

void cli_describe_failure(char *buf, size_t len, int rc, const struct vmmu_exit *exit)
{
	if (rc < 0) {
		snprintf(buf, len, "error %d (%s)", rc, vmmu_strerror(rc));
		return;
	}
	if (rc != VMMU_EXIT) {
		snprintf(buf, len, "unexpected return value %d", rc);
		return;
	}
	switch (exit->reason) {
	case VMMU_EXIT_MMIO:
		snprintf(buf, len, "MMIO exit (%s of %u bytes at gpa 0x%" PRIx64 "%s)",
			 exit->u.mmio.is_write ? "write" : "read", exit->u.mmio.len,
			 exit->u.mmio.gpa,
			 exit->u.mmio.readonly_slot ? ", read-only slot" : "");
		break;
	case VMMU_EXIT_MEMORY_FAULT:
		snprintf(buf, len,
			 "memory fault exit (gpa 0x%" PRIx64 ", size 0x%" PRIx64 ": %s)",
			 exit->u.memory_fault.gpa, exit->u.memory_fault.size,
			 vmmu_strerror(exit->u.memory_fault.error));
		break;
	case VMMU_EXIT_INTERNAL_ERROR:
		snprintf(buf, len, "internal error exit (%s)",
			 vmmu_strerror(exit->u.internal.error));
		break;
	case VMMU_EXIT_GUEST_FAULT:
		if (exit->u.guest_fault.vector == 14)
			snprintf(buf, len, "guest #PF (error code 0x%x, CR2 0x%" PRIx64 ")",
				 exit->u.guest_fault.error_code, exit->u.guest_fault.addr);
		else
			snprintf(buf, len, "guest fault, vector %u", exit->u.guest_fault.vector);
		break;
	case VMMU_EXIT_DIRTY_RING_FULL:
		snprintf(buf, len, "dirty ring full exit");
		break;
	case VMMU_EXIT_NESTED:
		snprintf(buf, len, "nested exit to L1 (kind %u, L2 gpa 0x%" PRIx64 ", qualification 0x%" PRIx64 ")",
			 exit->u.nested.kind, exit->u.nested.gpa, exit->u.nested.qualification);
		break;
	case VMMU_EXIT_RETRY:
		snprintf(buf, len, "retry exit (gpa 0x%" PRIx64 ", %s)", exit->u.retry.gpa,
			 exit->u.retry.cause == VMMU_RETRY_MEMSLOT ? "memslot being changed"
			 : exit->u.retry.cause == VMMU_RETRY_SELF ? "invalidation open on this thread"
								  : "invalidation open");
		break;
	case VMMU_EXIT_NONE:
		snprintf(buf, len, "exit without a reason");
		break;
	default:
		snprintf(buf, len, "exit with unknown reason %u", exit->reason);
		break;
	}
}

/* A failed guest access, in words; false so callers can return it. */
bool cli_access_failed(char *err, size_t err_len, const char *what, uint64_t gva, int r,
		       const struct vmmu_exit *exit)
{
	char why[160];

	cli_describe_failure(why, sizeof(why), r, exit);
	cli_set_error(err, err_len, "%s at gva 0x%" PRIx64 ": %s", what, gva, why);
	return false;
}

/* ------------------------------------------------------------------------ */
/* Names, numbers and units                                                  */

const char *cli_tdp_name(uint32_t tdp_format)
{
	return tdp_format == VMMU_TDP_NPT ? "npt" : "ept";
}

const char *cli_host_page_name(uint64_t host_page)
{
	switch (host_page) {
	case CLI_SIZE_1G:
		return "1g";
	case CLI_SIZE_2M:
		return "2m";
	default:
		return "4k";
	}
}

const char *cli_backing_name(uint32_t backing)
{
	return backing == VMMU_BACKING_HUGETLB ? "hugetlb" : "anon";
}

/*
 * strtoull() alone accepts leading blanks and a minus sign (which wraps), so
 * the first character must be a digit and the whole string must be consumed.
 */
int cli_parse_u64(const char *s, int base, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || end == s || *end)
		return -1;
	*out = v;
	return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K':
		shift = 10;
		break;
	case 'm': case 'M':
		shift = 20;
		break;
	case 'g': case 'G':
		shift = 30;
		break;
	case '\0':
		break;
	default:
		return -1;
	}
	if (shift) {
		end++;
		/* "1G", "1GB" and "1GiB" all mean 2^30 bytes */
		if (!strcmp(end, "B") || !strcmp(end, "iB"))
			end += strlen(end);
	}
	if (*end || v == 0 || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

unsigned cli_reps(const struct cli_opts *o)
{
	return o->reps_set ? o->reps : CLI_DEFAULT_REPS;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double cli_median(const double *v, unsigned n)
{
	double *tmp, m;

	if (!n)
		return NAN;
	tmp = malloc(n * sizeof(*tmp));
	if (!tmp)
		return NAN;
	memcpy(tmp, v, n * sizeof(*tmp));
	qsort(tmp, n, sizeof(*tmp), cmp_double);
	m = n & 1 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
	free(tmp);
	return m;
}

void cli_print_size(FILE *f, uint64_t bytes)
{
	if (!(bytes % CLI_SIZE_1G))
		fprintf(f, "%" PRIu64 " GiB", bytes / CLI_SIZE_1G);
	else if (!(bytes % (UINT64_C(1) << 20)))
		fprintf(f, "%" PRIu64 " MiB", bytes >> 20);
	else if (!(bytes % 1024))
		fprintf(f, "%" PRIu64 " KiB", bytes >> 10);
	else
		fprintf(f, "%" PRIu64 " bytes", bytes);
}

void cli_print_config_line(FILE *f, const struct cli_opts *o)
{
	fprintf(f, "config       ");
	if (o->mmu == VMMU_MMU_SHADOW)
		fprintf(f, "shadow paging");
	else if (o->tdp_levels)
		fprintf(f, "tdp %s %u-level", cli_tdp_name(o->tdp_format), o->tdp_levels);
	else
		fprintf(f, "tdp %s", cli_tdp_name(o->tdp_format));
	fprintf(f, ", host page %s, backing %s, A/D %s, hugepages %s, seed 0x%" PRIx64 "\n",
		cli_host_page_name(o->host_page), cli_backing_name(o->backing),
		o->vm_flags & VMMU_VM_AD_DISABLED ? "off" : "on",
		o->vm_flags & VMMU_VM_NO_HUGEPAGES ? "off" : "on", o->seed);
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                   */

void report_init(struct report *r)
{
	r->n = 0;
}

static struct report_item *report_add(struct report *r, const char *key, enum report_kind kind)
{
	struct report_item *it;
	unsigned i;

	/* a key set twice keeps its first position, so a late error can amend */
	for (i = 0; i < r->n; i++) {
		if (!strcmp(r->items[i].key, key)) {
			r->items[i].kind = kind;
			return &r->items[i];
		}
	}
	if (r->n == REPORT_MAX_ITEMS) {
		/* a programming error in the tool, not a runtime condition */
		fprintf(stderr, "vmmu: internal error: report full, dropping '%s'\n", key);
		abort();
	}
	it = &r->items[r->n++];
	snprintf(it->key, sizeof(it->key), "%s", key);
	it->kind = kind;
	return it;
}

void report_str(struct report *r, const char *key, const char *val)
{
	struct report_item *it = report_add(r, key, REPORT_STR);

	snprintf(it->val, sizeof(it->val), "%s", val);
}

void report_u64(struct report *r, const char *key, uint64_t val)
{
	struct report_item *it = report_add(r, key, REPORT_NUM);

	snprintf(it->val, sizeof(it->val), "%llu", (unsigned long long)val);
}

void report_f(struct report *r, const char *key, int prec, double val)
{
	struct report_item *it;

	/* JSON has no NaN or infinity */
	if (!isfinite(val)) {
		report_null(r, key);
		return;
	}
	it = report_add(r, key, REPORT_NUM);
	snprintf(it->val, sizeof(it->val), "%.*f", prec, val);
}

double report_spread(struct report *r, const char *key, int prec, const double *v, unsigned n)
{
	char k[REPORT_KEY_LEN];
	double lo = NAN, hi = NAN, m = cli_median(v, n);

	for (unsigned i = 0; i < n; i++) {
		if (isnan(v[i]))
			continue;
		if (isnan(lo) || v[i] < lo)
			lo = v[i];
		if (isnan(hi) || v[i] > hi)
			hi = v[i];
	}
	report_f(r, key, prec, m);
	snprintf(k, sizeof(k), "%s_min", key);
	report_f(r, k, prec, lo);
	snprintf(k, sizeof(k), "%s_max", key);
	report_f(r, k, prec, hi);
	return m;
}

double report_ratio(struct report *r, const char *key, int prec, const double *num, const double *den,
		    unsigned n)
{
	double *q = malloc((n ? n : 1) * sizeof(*q)), m;

	if (!q) {
		report_null(r, key);
		return NAN;
	}
	for (unsigned i = 0; i < n; i++)
		q[i] = num[i] / den[i];
	m = report_spread(r, key, prec, q, n);
	free(q);
	return m;
}

void report_bool(struct report *r, const char *key, bool val)
{
	struct report_item *it = report_add(r, key, REPORT_BOOL);

	snprintf(it->val, sizeof(it->val), "%s", val ? "true" : "false");
}

void report_null(struct report *r, const char *key)
{
	struct report_item *it = report_add(r, key, REPORT_NULL);

	snprintf(it->val, sizeof(it->val), "null");
}

void cli_json_string(FILE *f, const char *s)
{
	const unsigned char *p;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

void report_print_json(const struct report *r, FILE *f)
{
	unsigned i;

	/* what a script checks first: which contract, which library */
	fprintf(f, "{\"schema\": %d, \"vmmu_version\": ", CLI_JSON_SCHEMA);
	cli_json_string(f, vmmu_version());
	for (i = 0; i < r->n; i++) {
		const struct report_item *it = &r->items[i];

		fputs(", ", f);
		cli_json_string(f, it->key);
		fputs(": ", f);
		if (it->kind == REPORT_STR)
			cli_json_string(f, it->val);
		else
			fputs(it->val, f);
	}
	fputs("}\n", f);
	if (f == stdout)
		json_printed = true;
}

void report_print_text(const struct report *r, FILE *f)
{
	size_t width = 0;
	unsigned i;

	for (i = 0; i < r->n; i++) {
		size_t l = strlen(r->items[i].key);

		if (l > width)
			width = l;
	}
	for (i = 0; i < r->n; i++) {
		const struct report_item *it = &r->items[i];

		fprintf(f, "%-*s  %s\n", (int)width, it->key,
			it->kind == REPORT_NULL ? "-" : it->val);
	}
}

void report_config(struct report *r, const struct cli_opts *o, unsigned vcpus,
		   uint64_t mem_bytes)
{
	report_u64(r, "vcpus", vcpus);
	report_u64(r, "mem_bytes", mem_bytes);
	report_str(r, "mmu", o->mmu == VMMU_MMU_SHADOW ? "shadow" : "tdp");
	report_str(r, "tdp", cli_tdp_name(o->tdp_format));
	report_str(r, "host_page", cli_host_page_name(o->host_page));
	report_str(r, "backing", cli_backing_name(o->backing));
	report_bool(r, "ad", !(o->vm_flags & VMMU_VM_AD_DISABLED));
	report_bool(r, "hugepages", !(o->vm_flags & VMMU_VM_NO_HUGEPAGES));
	report_u64(r, "seed", o->seed);
}

/* The vCPU counters every scenario reports. */
void report_fault_stats(struct report *r, const struct vmmu_vcpu_stats *vs)
{
	report_u64(r, "pf_taken", vs->pf_taken);
	report_u64(r, "pf_fixed", vs->pf_fixed);
	report_u64(r, "pf_spurious", vs->pf_spurious);
	report_u64(r, "pf_retry", vs->pf_retry);
	report_u64(r, "tlb_misses", vs->tlb_misses);
	report_u64(r, "exits", vs->exits);
}

void report_mmu_counters(struct report *r, const struct vmmu_vcpu_stats *vs, const struct vmmu_vm_stats *ms)
{
	report_fault_stats(r, vs);
	report_u64(r, "pf_fast_fixed", vs->pf_fast_fixed);
	report_u64(r, "pf_fast_spurious", vs->pf_fast_spurious);
	report_u64(r, "mmu_reloads", vs->mmu_reloads);
	report_u64(r, "root_fast_switches", vs->root_fast_switches);
	report_u64(r, "root_slow_switches", vs->root_slow_switches);
	report_u64(r, "remote_tlb_flushes", ms->remote_tlb_flushes);
	report_u64(r, "zapped_sptes", ms->zapped_sptes);
	report_u64(r, "shadow_pages_zapped", ms->shadow_pages_zapped);
}

/* What the VM's tables hold at the end of a run. */
void report_vm_mappings(struct report *r, const struct vmmu_vm_stats *ms)
{
	report_u64(r, "pages_4k", ms->pages_4k);
	report_u64(r, "pages_2m", ms->pages_2m);
	report_u64(r, "pages_1g", ms->pages_1g);
	report_u64(r, "pt_pages", ms->pt_pages);
	report_u64(r, "remote_tlb_flushes", ms->remote_tlb_flushes);
}

void report_shadow_counts(struct report *r, const struct vmmu_vm_stats *ms)
{
	report_u64(r, "shadow_pages", ms->shadow_pages);
	report_u64(r, "shadow_pages_created", ms->shadow_pages_created);
	report_u64(r, "shadow_pages_zapped", ms->shadow_pages_zapped);
	report_u64(r, "shadow_unsync_pages", ms->shadow_unsync_pages);
	report_u64(r, "shadow_pte_writes", ms->shadow_pte_writes);
}

int report_finish(struct report *r, const struct cli_opts *o, bool ok, const char *err)
{
	if (!ok)
		report_str(r, "error", err[0] ? err : "a check failed (see stderr)");
	report_bool(r, "ok", ok);
	if (o->json)
		report_print_json(r, stdout);
	else
		report_print_text(r, stdout);
	return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Argument parsing                                                          */

void cli_opts_init(struct cli_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->vcpus = CLI_DEFAULT_VCPUS;
	o->mem_bytes = CLI_DEFAULT_MEM;
	o->tdp_format = VMMU_TDP_EPT;
	o->host_page = CLI_PAGE_SIZE;
	o->backing = VMMU_BACKING_ANON;
	o->reps = CLI_DEFAULT_REPS;
	o->guest_mode = GUEST_MODE_4LEVEL;
}

enum opt_id {
	OPT_VCPUS,
	OPT_MEM,
	OPT_MMU,
	OPT_TDP,
	OPT_HOST_PAGE,
	OPT_BACKING,
	OPT_NO_AD,
	OPT_NO_HUGE,
	OPT_EMBEDDER_MEM,
	OPT_SEED,
	OPT_REPS,
	OPT_GUEST,
	OPT_JSON,
	OPT_TRACE,
	OPT_SWEEP,
	OPT_CSV,
};

static const struct {
	const char *name;
	enum opt_id id;
	bool has_value;
} options[] = {
	{ "--vcpus", OPT_VCPUS, true },
	{ "--mem", OPT_MEM, true },
	{ "--mmu", OPT_MMU, true },
	{ "--tdp", OPT_TDP, true },
	{ "--host-page", OPT_HOST_PAGE, true },
	{ "--backing", OPT_BACKING, true },
	{ "--no-ad", OPT_NO_AD, false },
	{ "--no-huge", OPT_NO_HUGE, false },
	{ "--embedder-mem", OPT_EMBEDDER_MEM, false },
	{ "--seed", OPT_SEED, true },
	{ "--reps", OPT_REPS, true },
	{ "--guest", OPT_GUEST, true },
	{ "--json", OPT_JSON, false },
	{ "--trace", OPT_TRACE, true },
	{ "--sweep", OPT_SWEEP, false },
	{ "--csv", OPT_CSV, true },
};

#define NR_OPTIONS (sizeof(options) / sizeof(options[0]))

/* Applies one option; val is NULL for the options without a value. */
static int set_opt(enum cli_cmd cmd, struct cli_opts *o, const char *opt, enum opt_id id,
		   const char *val)
{
	uint64_t v;

	switch (id) {
	case OPT_VCPUS:
		if (cli_parse_u64(val, 10, &v) || v < 1 || v > VMMU_MAX_VCPUS)
			return cli_usage_error("bad %s '%s': want 1..%d", opt, val, VMMU_MAX_VCPUS);
		o->vcpus = (unsigned)v;
		o->vcpus_set = true;
		break;
	case OPT_MEM:
		if (cli_parse_size(val, &v))
			return cli_usage_error("bad %s '%s': want a size such as 512M or 1G", opt,
					       val);
		o->mem_bytes = v;
		break;
	case OPT_MMU:
		if (!strcmp(val, "tdp"))
			o->mmu = VMMU_MMU_TDP;
		else if (!strcmp(val, "shadow"))
			o->mmu = VMMU_MMU_SHADOW;
		else
			return cli_usage_error("bad %s '%s': want tdp or shadow", opt, val);
		break;
	case OPT_TDP:
		if (!strcmp(val, "ept"))
			o->tdp_format = VMMU_TDP_EPT;
		else if (!strcmp(val, "npt"))
			o->tdp_format = VMMU_TDP_NPT;
		else
			return cli_usage_error("bad %s '%s': want ept or npt", opt, val);
		break;
	case OPT_HOST_PAGE:
		if (!strcasecmp(val, "4k"))
			o->host_page = CLI_PAGE_SIZE;
		else if (!strcasecmp(val, "2m"))
			o->host_page = CLI_SIZE_2M;
		else if (!strcasecmp(val, "1g"))
			o->host_page = CLI_SIZE_1G;
		else
			return cli_usage_error("bad %s '%s': want 4k, 2m or 1g", opt, val);
		break;
	case OPT_BACKING:
		if (!strcmp(val, "anon"))
			o->backing = VMMU_BACKING_ANON;
		else if (!strcmp(val, "hugetlb"))
			o->backing = VMMU_BACKING_HUGETLB;
		else
			return cli_usage_error("bad %s '%s': want anon or hugetlb", opt, val);
		break;
	case OPT_NO_AD:
		o->vm_flags |= VMMU_VM_AD_DISABLED;
		break;
	case OPT_NO_HUGE:
		o->vm_flags |= VMMU_VM_NO_HUGEPAGES;
		break;
	case OPT_EMBEDDER_MEM:
		o->embedder_mem = true;
		break;
	case OPT_SEED:
		/* base 0: seeds are often easier to read in hex */
		if (cli_parse_u64(val, 0, &v))
			return cli_usage_error("bad %s '%s': want a 64-bit unsigned", opt, val);
		o->seed = v;
		break;
	case OPT_REPS:
		if (cmd != CLI_CMD_BENCH)
			return cli_usage_error("%s applies to 'vmmu bench' only", opt);
		if (cli_parse_u64(val, 10, &v) || v < 1 || v > CLI_MAX_REPS)
			return cli_usage_error("bad %s '%s': want 1..%u", opt, val, CLI_MAX_REPS);
		o->reps = (unsigned)v;
		o->reps_set = true;
		break;
	case OPT_GUEST:
		if (cmd != CLI_CMD_RUN)
			return cli_usage_error("%s applies to 'vmmu run' only", opt);
		if (!strcmp(val, "32"))
			o->guest_mode = GUEST_MODE_32;
		else if (!strcmp(val, "pae"))
			o->guest_mode = GUEST_MODE_PAE;
		else if (!strcmp(val, "4level"))
			o->guest_mode = GUEST_MODE_4LEVEL;
		else if (!strcmp(val, "5level"))
			o->guest_mode = GUEST_MODE_5LEVEL;
		else
			return cli_usage_error("bad %s '%s': want 32, pae, 4level or 5level", opt, val);
		o->guest_set = true;
		break;
	case OPT_JSON:
		o->json = true;
		break;
	case OPT_TRACE:
		if (cmd != CLI_CMD_RUN)
			return cli_usage_error("%s applies to 'vmmu run' only", opt);
		if (!val[0])
			return cli_usage_error("%s needs a file name", opt);
		o->trace_path = val;
		break;
	case OPT_SWEEP:
		if (cmd != CLI_CMD_BENCH)
			return cli_usage_error("%s applies to 'vmmu bench' only", opt);
		o->sweep = true;
		break;
	case OPT_CSV:
		if (cmd != CLI_CMD_BENCH)
			return cli_usage_error("%s applies to 'vmmu bench --sweep' only", opt);
		if (!val[0])
			return cli_usage_error("%s needs a file name", opt);
		o->csv_path = val;
		break;
	}
	return 0;
}

/*
 * Parses argv[2..]: options anywhere, as "--opt value" or "--opt=value", and
 * at most one positional (the scenario or benchmark). Returns 0, a usage
 * exit status, or -1 for --help (which the caller prints, with the lists).
 */
int cli_parse_opts(enum cli_cmd cmd, int argc, char **argv, struct cli_opts *o, const char **name)
{
	bool only_positional = false;
	int i, rc;

	*name = NULL;
	for (i = 2; i < argc; i++) {
		const char *arg = argv[i], *eq, *opt, *val = NULL;
		size_t len, k;

		if (only_positional || arg[0] != '-' || !arg[1]) {
			if (*name)
				return cli_usage_error("unexpected argument '%s'", arg);
			*name = arg;
			continue;
		}
		if (!strcmp(arg, "--")) {
			only_positional = true;
			continue;
		}
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help"))
			return -1;

		eq = strchr(arg, '=');
		len = eq ? (size_t)(eq - arg) : strlen(arg);
		for (k = 0; k < NR_OPTIONS; k++)
			if (strlen(options[k].name) == len && !strncmp(arg, options[k].name, len))
				break;
		if (k == NR_OPTIONS)
			return cli_usage_error("unknown option '%.*s'", (int)len, arg);

		opt = options[k].name;
		if (!options[k].has_value) {
			if (eq)
				return cli_usage_error("option '%s' takes no value", opt);
		} else if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			return cli_usage_error("option '%s' needs a value", opt);
		}
		rc = set_opt(cmd, o, opt, options[k].id, val);
		if (rc)
			return rc;
	}
	return 0;
}

/* Checks that need all options at once. */
int cli_check_opts(const struct cli_opts *o)
{
	if (o->mem_bytes > CLI_MAX_MEM)
		return cli_usage_error("--mem %llu bytes is above 3G: with guest paging off, "
				       "guest addresses are physical and must stay below 4 GiB, "
				       "and the top GiB is left as the MMIO hole",
				       (unsigned long long)o->mem_bytes);
	if (o->mmu == VMMU_MMU_SHADOW && (o->vm_flags & VMMU_VM_AD_DISABLED))
		return cli_usage_error("--no-ad is a TDP option: shadow paging uses the hardware's A/D bits");
	if (o->backing == VMMU_BACKING_HUGETLB && o->host_page == CLI_PAGE_SIZE)
		return cli_usage_error("--backing hugetlb needs --host-page 2m or 1g");
	if (o->csv_path && !o->sweep)
		return cli_usage_error("--csv %s: the CSV is what --sweep writes; add --sweep", o->csv_path);
	if (o->mem_bytes % o->host_page)
		return cli_usage_error("--mem %llu bytes is not a multiple of the %s host page",
				       (unsigned long long)o->mem_bytes,
				       cli_host_page_name(o->host_page));
	return 0;
}

/* The options part of `vmmu --help`. */
void cli_print_options(FILE *f)
{
	fputs("Options (run and bench):\n"
	      "  --vcpus N            vCPUs, one thread each, 1..256 (default 2;\n"
	      "                       bench demand: 1, bench vcpus: always 1 and 2)\n"
	      "  --mem SIZE           guest RAM: bytes, or with a suffix K, M or G\n"
	      "                       (powers of 1024; default 1G, at most 3G)\n"
	      "  --mmu tdp|shadow     two-dimensional paging or shadow paging (default tdp)\n"
	      "  --tdp ept|npt        TDP page-table format (default ept)\n"
	      "  --host-page 4k|2m|1g host page size behind guest RAM; bounds the\n"
	      "                       mapping level (default 4k)\n"
	      "  --backing anon|hugetlb\n"
	      "                       memory vmmu allocates for guest RAM (default anon;\n"
	      "                       anon with --host-page 2m means transparent huge pages,\n"
	      "                       hugetlb needs huge pages reserved on the host)\n"
	      "  --no-ad              no accessed/dirty bits in SPTEs (VMMU_VM_AD_DISABLED)\n"
	      "  --embedder-mem       the tool maps guest RAM and hands vmmu the hva, as a VMM\n"
	      "                       does (vmmu then faults it in through the kernel)\n"
	      "  --no-huge            map guest RAM at 4K only (VMMU_VM_NO_HUGEPAGES)\n"
	      "  --seed N             mixed into the data written to guest pages (default 0)\n"
	      "  --guest 32|pae|4level|5level\n"
	      "                       run paging only: the guest's paging mode (default 4level;\n"
	      "                       5level makes the VM 5-level TDP with MAXPHYADDR 52)\n"
	      "  --reps N             bench only: repetitions, 1..1000 (default 5)\n"
	      "  --sweep              bench only: run the bench over the values of its\n"
	      "                       parameter (vcpus: vCPUs, cr3switch: address spaces,\n"
	      "                       dirtylog: memory size) and write a CSV of the medians,\n"
	      "                       minima and maxima (scripts/plot-bench draws it)\n"
	      "  --csv FILE           with --sweep: where the CSV goes (default NAME.csv in\n"
	      "                       the current directory)\n"
	      "  --trace FILE         run only: write the MMU's trace events (faults, fast\n"
	      "                       faults, zaps, flushes, root loads and switches) to FILE\n"
	      "                       as Chrome trace-event JSON, which the Perfetto UI opens\n"
	      "  --json               print exactly one JSON object on stdout instead of\n"
	      "                       the human report, errors included ({\"ok\": false,\n"
	      "                       \"error\": ...}); every object has \"schema\" and\n"
	      "                       \"vmmu_version\"\n"
	      "  -h, --help           this text\n"
	      "\n"
	      "Options take their value as the next argument or after '='.\n"
	      "Except in 'run paging', guest paging is off, so guest addresses are physical\n"
	      "addresses below 4 GiB.\n", f);
}
