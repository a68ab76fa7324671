// SPDX-License-Identifier: MIT
/*
 * `vmmu run paging`: the MMU under guest paging, every read checked
 * against the frame the guest's tables say.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "guest.h"
#include "registry.h"

/*
 * Guest paging on, each vCPU in address spaces of its own, as processes on
 * different CPUs would be.  vCPU i's share of RAM holds its data pages and,
 * at its end, the pools of its two page-table hierarchies, A and B.  Both
 * map all of its data at the same high gvas, so that a gva taken for a gpa
 * by mistake lands outside RAM:
 *   A: the first quarter of the share in guest huge pages (2M; 4M in 32-bit
 *      paging), the rest in 4K pages, gva page p on data frame p;
 *   B: the same pages rotated by half of each part, so that each page reads
 *      another frame through B than through A.
 * Every data frame holds cli_token(its gpa): a read tells which frame the
 * MMU used, not just that the access went through.  A page's gva and gpa
 * differ by an odd multiple of 2M (modulo 4M), so that in a TLB indexed by
 * low address bits the entries the remap must drop do not share slots with
 * the entries of the frames it moves them to: a collision would evict the
 * stale entry and hide a missed INVLPG.
 *
 * The vCPU writes its tables itself (guest_pt_set_vcpu()), as a guest kernel
 * does: shadow paging has to see the remap's stores to keep its shadow
 * tables right, and TDP has to map the tables' pages to walk them.
 */

#define PG_HUGE_SHARE		4u	/* 1/4 of each share in guest huge pages */
#define PG_REMAP_STRIDE		16u	/* of every 16 pages, the first two trade frames */
#define PG_ROUND_TRIPS		2u	/* CR3 to B then back to A, reading every page each time */
/* Linux's vmalloc areas: kernel-half addresses far above any gpa */
#define PG_GVA_4LEVEL		UINT64_C(0xffffc90000000000)
#define PG_GVA_5LEVEL		UINT64_C(0xffa0000000000000)
/* 32-bit and PAE: a 3G/1G kernel's split, lowered when the data is larger */
#define PG_GVA_32		UINT64_C(0xc0000000)
#define PG_SIZE_4G		(UINT64_C(1) << 32)
#define PG_SIZE_4M		(UINT64_C(4) << 20)

struct pg_scen;

struct pg_vcpu {
	const struct pg_scen *s;
	vmmu_vcpu *vcpu;
	struct guest_pt *pt[2];		/* address spaces A and B */
	uint64_t cr3[2];
	uint64_t data_gpa;		/* the share's start: huge part, then 4K part */
	uint64_t gva_huge, gva_small;	/* where both address spaces map each part */
	uint64_t huge_pages;		/* guest huge pages of the huge part */
	uint64_t small_pages;		/* 4K pages of the 4K part */
	uint64_t pages;			/* 4K pages of data, both parts */
	uint64_t pool_gpa, pool_bytes;	/* space a's pool: pool_gpa + a * pool_bytes */
	bool remapped;			/* A's frame swaps are in place */
	uint64_t phase_pages;		/* 4K pages the last phase went through */
};

struct pg_scen {
	vmmu_vm *vm;
	enum guest_mode mode;
	uint64_t huge;			/* guest huge page size */
	uint64_t gva;			/* the data's gvas start in [gva, gva + 4M) */
	uint64_t flags;			/* of the data leaves */
	uint64_t seed;
	unsigned n;
	struct pg_vcpu *v;
};

static const char *pg_mode_name(enum guest_mode mode)
{
	switch (mode) {
	case GUEST_MODE_32:
		return "32";
	case GUEST_MODE_PAE:
		return "pae";
	case GUEST_MODE_5LEVEL:
		return "5level";
	default:	/* 4-level (EPT modes are not CPU paging modes) */
		break;
	}
	return "4level";
}

/* A's index i after the remap: the first two of every stride trade places. */
static uint64_t pg_swap(uint64_t i, uint64_t n)
{
	return i % PG_REMAP_STRIDE < 2 && (i | 1) < n ? i ^ 1 : i;
}

/* The data frame (a 4K index into the share) of page p of address space a. */
static uint64_t pg_frame(const struct pg_vcpu *v, unsigned a, uint64_t p)
{
	uint64_t hp = v->s->huge / CLI_PAGE_SIZE, nh = v->huge_pages * hp, i, n;

	if (p < nh) {
		i = p / hp;
		n = v->huge_pages;
		i = a ? (i + n / 2) % n : v->remapped ? pg_swap(i, n) : i;
		return i * hp + p % hp;
	}
	i = p - nh;
	n = v->small_pages;
	i = a ? (i + n / 2) % n : v->remapped ? pg_swap(i, n) : i;
	return nh + i;
}

static uint64_t pg_gva(const struct pg_vcpu *v, uint64_t p)
{
	uint64_t nh = v->huge_pages * (v->s->huge / CLI_PAGE_SIZE);

	if (p < nh)
		return v->gva_huge + p * CLI_PAGE_SIZE;
	return v->gva_small + (p - nh) * CLI_PAGE_SIZE;
}

static uint64_t pg_gpa(const struct pg_vcpu *v, uint64_t frame)
{
	return v->data_gpa + frame * CLI_PAGE_SIZE;
}

/* n pages of size at gva on the frames at gpa, page i on frame (i + rot) % n. */
static int pg_map_rotated(struct guest_pt *pt, uint64_t gva, uint64_t gpa, uint64_t n, uint64_t rot,
			  uint64_t size, uint64_t flags)
{
	int rc = 0;

	if (n > rot)
		rc = guest_map(pt, gva, gpa + rot * size, (n - rot) * size, size, flags);
	if (!rc && rot)
		rc = guest_map(pt, gva + (n - rot) * size, gpa, rot * size, size, flags);
	return rc;
}

/* A call other than an access failed on the worker's thread. */
static void pg_call_failed(struct crew_worker *w, const char *call, int rc)
{
	w->err = rc;
	w->err_call = call;
}

/*
 * Both hierarchies built by guest stores while paging is still off, then
 * paging on with A.  Nothing is shadowed yet, so this is the cost of the
 * stores themselves (and, under TDP, of mapping the pools).
 */
static void pg_build(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	const struct pg_scen *s = v->s;
	uint64_t huge_bytes = v->huge_pages * s->huge;
	struct vmmu_cpu_state st;
	unsigned a;
	int rc;

	v->phase_pages = 0;
	for (a = 0; a < 2; a++) {
		rc = guest_pt_create(s->vm, s->mode, v->pool_gpa + a * v->pool_bytes, v->pool_bytes,
				     &v->pt[a]);
		if (rc) {
			pg_call_failed(w, "guest_pt_create", rc);
			return;
		}
		guest_pt_set_vcpu(v->pt[a], v->vcpu);
		rc = pg_map_rotated(v->pt[a], v->gva_huge, v->data_gpa, v->huge_pages,
				    a ? v->huge_pages / 2 : 0, s->huge, s->flags);
		if (!rc)
			rc = pg_map_rotated(v->pt[a], v->gva_small, v->data_gpa + huge_bytes,
					    v->small_pages, a ? v->small_pages / 2 : 0, CLI_PAGE_SIZE,
					    s->flags);
		if (rc) {
			pg_call_failed(w, a ? "guest_map (address space B)" : "guest_map (address space A)",
				       rc);
			return;
		}
		v->cr3[a] = guest_pt_cr3(v->pt[a]);
		v->phase_pages += v->pages;
	}
	guest_pt_state(v->pt[0], &st, 0);
	rc = vmmu_vcpu_set_state(v->vcpu, &st);
	if (rc)
		pg_call_failed(w, "vmmu_vcpu_set_state (paging on)", rc);
}

static void pg_first_touch(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	struct vmmu_exit exit;
	uint64_t p;

	v->phase_pages = 0;
	for (p = 0; p < v->pages; p++) {
		uint64_t gva = pg_gva(v, p), val = cli_token(pg_gpa(v, pg_frame(v, 0, p)), v->s->seed);
		int rc;

		rc = vmmu_vcpu_access(v->vcpu, gva, &val, sizeof(val), VMMU_ACCESS_WRITE, &exit);
		if (rc) {
			crew_worker_fail(w, rc, gva, true, &exit);
			return;
		}
	}
	v->phase_pages = v->pages;
}

/* Every page of address space a, which must be the current one, read and checked. */
static bool pg_read_pass(struct crew_worker *w, struct pg_vcpu *v, unsigned a)
{
	struct vmmu_exit exit;
	uint64_t p;

	for (p = 0; p < v->pages; p++) {
		uint64_t gva = pg_gva(v, p), want = cli_token(pg_gpa(v, pg_frame(v, a, p)), v->s->seed);
		uint64_t val = ~want;
		int rc;

		rc = vmmu_vcpu_access(v->vcpu, gva, &val, sizeof(val), VMMU_ACCESS_READ, &exit);
		if (rc) {
			crew_worker_fail(w, rc, gva, false, &exit);
			return false;
		}
		if (val != want)
			crew_worker_mismatch(w, gva, want, val);
	}
	v->phase_pages += v->pages;
	return true;
}

static void pg_retouch(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;

	v->phase_pages = 0;
	pg_read_pass(w, v, 0);
}

/*
 * Reads the 4K pages [gva, gva + 2 * size), the first half of which must
 * show the frames from gpa_lo on, the second those from gpa_hi on.
 */
static bool pg_check_pair(struct crew_worker *w, struct pg_vcpu *v, uint64_t gva, uint64_t size,
			  uint64_t gpa_lo, uint64_t gpa_hi)
{
	struct vmmu_exit exit;
	uint64_t off;
	int rc;

	for (off = 0; off < 2 * size; off += CLI_PAGE_SIZE) {
		uint64_t from = off < size ? gpa_lo + off : gpa_hi + off - size;
		uint64_t want = cli_token(from, v->s->seed), val = ~want;

		rc = vmmu_vcpu_access(v->vcpu, gva + off, &val, sizeof(val), VMMU_ACCESS_READ, &exit);
		if (rc) {
			crew_worker_fail(w, rc, gva + off, false, &exit);
			return false;
		}
		if (val != want)
			crew_worker_mismatch(w, gva + off, want, val);
	}
	return true;
}

/*
 * A's pages p and p + 1 (of size, p a 4K index) trade frames.  Both are read
 * first, so that their translations are cached (TLB, shadow or TDP entries:
 * the retouch's are long evicted from the TLB), then two guest stores,
 * INVLPG of both, and every 4K page of both must now read the other's frame:
 * a store the MMU missed or an INVLPG it ignored reads the old one.  One
 * INVLPG per huge page is enough: it drops every translation of the page it
 * hits, whatever size they were cached at (SDM 4.10.4.1), and Linux flushes
 * a huge mapping that way.
 */
static bool pg_swap_pair(struct crew_worker *w, struct pg_vcpu *v, uint64_t p, uint64_t size)
{
	const struct pg_scen *s = v->s;
	uint64_t gva = pg_gva(v, p), gpa = pg_gpa(v, p);
	int rc;

	if (!pg_check_pair(w, v, gva, size, gpa, gpa + size))
		return false;
	rc = guest_map(v->pt[0], gva, gpa + size, size, size, s->flags);
	if (!rc)
		rc = guest_map(v->pt[0], gva + size, gpa, size, size, s->flags);
	if (rc) {
		pg_call_failed(w, "guest_map (remap)", rc);
		return false;
	}
	vmmu_vcpu_invlpg(v->vcpu, gva);
	vmmu_vcpu_invlpg(v->vcpu, gva + size);
	if (!pg_check_pair(w, v, gva, size, gpa + size, gpa))
		return false;
	v->phase_pages += 2 * size / CLI_PAGE_SIZE;
	return true;
}

/* Before the remap A is the identity, which pg_swap_pair() relies on. */
static void pg_remap(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	uint64_t hp = v->s->huge / CLI_PAGE_SIZE, i;

	v->phase_pages = 0;
	for (i = 0; i + 1 < v->huge_pages; i += PG_REMAP_STRIDE)
		if (!pg_swap_pair(w, v, i * hp, v->s->huge))
			return;
	for (i = 0; i + 1 < v->small_pages; i += PG_REMAP_STRIDE)
		if (!pg_swap_pair(w, v, v->huge_pages * hp + i, CLI_PAGE_SIZE))
			return;
	v->remapped = true;
}

/*
 * MOV CR3 to B, every page read, back to A, every page read, twice.  Without
 * PCIDs each switch flushes the TLB, so every read walks: the first visit to
 * B builds its translations, the rest should find them (shadow paging keeps
 * A's root among the previous roots and then B's).
 */
static void pg_cr3_trips(struct crew_worker *w)
{
	struct pg_vcpu *v = w->ctx;
	unsigned t, k;
	int rc;

	v->phase_pages = 0;
	for (t = 0; t < PG_ROUND_TRIPS; t++) {
		for (k = 0; k < 2; k++) {
			unsigned a = !k;	/* B, then A */

			rc = vmmu_vcpu_write_cr3(v->vcpu, v->cr3[a]);
			if (rc) {
				pg_call_failed(w, a ? "MOV CR3 to B" : "MOV CR3 to A", rc);
				return;
			}
			if (!pg_read_pass(w, v, a))
				return;
		}
	}
}

/*
 * Splits RAM into one share per vCPU, in guest huge pages when there are
 * enough of them (so the huge part is aligned), and carves each share.
 * -1 when a share cannot hold its page tables and a page of data.
 */
static int pg_layout(struct pg_scen *s, uint64_t mem)
{
	uint64_t unit = mem / s->huge >= s->n ? s->huge : CLI_PAGE_SIZE, units = mem / unit;
	uint64_t epp = s->mode == GUEST_MODE_32 ? 1024 : 512, max_data = 0;
	unsigned i;

	for (i = 0; i < s->n; i++) {
		struct pg_vcpu *v = &s->v[i];
		uint64_t b = units * i / s->n * unit;
		uint64_t e = i + 1 == s->n ? mem : units * (i + 1) / s->n * unit;
		uint64_t rest, pool_pages;

		v->s = s;
		v->data_gpa = b;
		v->huge_pages = unit == s->huge ? (e - b) / s->huge / PG_HUGE_SHARE : 0;
		rest = (e - b - v->huge_pages * s->huge) / CLI_PAGE_SIZE;
		/*
		 * Per space: leaf tables for the 4K part, a directory per GiB
		 * and one for a straddle, the upper levels, PAE's four
		 * directories, with room to spare.  rest still counts the
		 * pools themselves, which only adds to the spare.
		 */
		pool_pages = (rest + epp - 1) / epp + 2 * ((e - b + CLI_SIZE_1G - 1) / CLI_SIZE_1G) + 16;
		if (rest <= 2 * pool_pages)
			return -1;
		v->small_pages = rest - 2 * pool_pages;
		v->pages = v->huge_pages * (s->huge / CLI_PAGE_SIZE) + v->small_pages;
		v->pool_bytes = pool_pages * CLI_PAGE_SIZE;
		v->pool_gpa = b + v->pages * CLI_PAGE_SIZE;
		if (v->pages * CLI_PAGE_SIZE > max_data)
			max_data = v->pages * CLI_PAGE_SIZE;
	}
	switch (s->mode) {
	case GUEST_MODE_4LEVEL:
	default:
		s->gva = PG_GVA_4LEVEL;
		break;
	case GUEST_MODE_5LEVEL:
		s->gva = PG_GVA_5LEVEL;
		break;
	case GUEST_MODE_32:
	case GUEST_MODE_PAE:
		/*
		 * 4 GiB of linear addresses: the data ends at the top at
		 * most, after the skew below (under 12M).
		 */
		max_data = (max_data + PG_SIZE_4M - 1) / PG_SIZE_4M * PG_SIZE_4M + 3 * PG_SIZE_4M;
		s->gva = PG_SIZE_4G - max_data < PG_GVA_32 ? PG_SIZE_4G - max_data : PG_GVA_32;
		break;
	}
	for (i = 0; i < s->n; i++) {
		struct pg_vcpu *v = &s->v[i];
		uint64_t huge_bytes = v->huge_pages * s->huge, gpa_small = v->data_gpa + huge_bytes;

		/*
		 * gva - gpa = 2M modulo 4M (see above), in a window starting
		 * at s->gva (4M aligned); 4M huge pages cannot take that skew
		 * and keep gva = gpa modulo 4M.  The 4K part starts past the
		 * huge one, however that one was placed.
		 */
		v->gva_huge = s->gva + ((v->data_gpa + (s->huge == CLI_SIZE_2M ? CLI_SIZE_2M : 0)) &
					(PG_SIZE_4M - 1));
		v->gva_small = s->gva + (huge_bytes + CLI_SIZE_2M + PG_SIZE_4M - 1) / PG_SIZE_4M * PG_SIZE_4M +
			       ((gpa_small + CLI_SIZE_2M) & (PG_SIZE_4M - 1));
	}
	return 0;
}

/* The host view of every data frame must hold the token the guest wrote. */
static int pg_verify_host(const struct pg_scen *s, uint64_t *mismatches)
{
	uint64_t bad = 0, f;
	unsigned i;

	for (i = 0; i < s->n; i++) {
		const struct pg_vcpu *v = &s->v[i];

		for (f = 0; f < v->pages; f++) {
			int rc = env_verify_token(s->vm, pg_gpa(v, f), s->seed, &bad);

			if (rc) {
				*mismatches = bad;
				return rc;
			}
		}
	}
	if (bad > ENV_MAX_MISMATCH_REPORTS)
		fprintf(stderr, "vmmu: verify: %" PRIu64 " mismatches in all\n", bad);
	*mismatches = bad;
	return 0;
}

/* The vCPU phases, in order; the report keys are literals, as it wants. */
static const struct pg_step {
	const char *name;
	void (*call)(struct crew_worker *w);
	const char *ms_key, *ns_key, *pf_key;
} pg_steps[] = {
	{ "build", pg_build, "build_ms", "build_ns_per_page", "build_pf_taken" },
	{ "first_touch", pg_first_touch, "first_touch_ms", "first_touch_ns_per_page",
	  "first_touch_pf_taken" },
	{ "retouch", pg_retouch, "retouch_ms", "retouch_ns_per_page", "retouch_pf_taken" },
	{ "remap", pg_remap, "remap_ms", "remap_ns_per_page", "remap_pf_taken" },
	{ "cr3_switch", pg_cr3_trips, "cr3_switch_ms", "cr3_switch_ns_per_page",
	  "cr3_switch_pf_taken" },
};

#define PG_NR_STEPS (sizeof(pg_steps) / sizeof(pg_steps[0]))

struct pg_phase {
	bool ran;
	uint64_t ns;
	uint64_t pages;		/* 4K pages gone through, all vCPUs */
	uint64_t pf_taken;
};

struct pg_totals {
	uint64_t pages, huge_pages4k, remapped;
};

static void pg_print_text(const struct cli_opts *o, const struct pg_scen *s, const struct pg_totals *t,
			  const struct pg_phase *ph, bool verify_ran, uint64_t verify_ns,
			  const struct vmmu_vcpu_stats *vs, const struct vmmu_vm_stats *ms, bool have_stats,
			  uint64_t mismatches, bool ok, const char *error)
{
	static const char *const mode_desc[] = {
		[GUEST_MODE_32] = "32-bit", [GUEST_MODE_PAE] = "PAE",
		[GUEST_MODE_4LEVEL] = "4-level", [GUEST_MODE_5LEVEL] = "5-level",
	};
	FILE *f = stdout;
	unsigned i;

	fprintf(f, "scenario     paging\n");
	fprintf(f, "vcpus        %u\n", o->vcpus);
	fprintf(f, "memory       ");
	cli_print_size(f, o->mem_bytes);
	fprintf(f, " (%" PRIu64 " pages of 4 KiB)\n", o->mem_bytes / CLI_PAGE_SIZE);
	cli_print_config_line(f, o);
	fprintf(f, "guest        %s paging, 2 address spaces per vCPU, data at gva 0x%" PRIx64 "+\n",
		mode_desc[s->mode], s->gva);
	fprintf(f, "data         %" PRIu64 " pages: %" PRIu64 " in %s guest pages, %" PRIu64
		" in 4K ones; %" PRIu64 " remapped\n", t->pages, t->huge_pages4k,
		s->huge == GUEST_PAGE_4M ? "4M" : "2M", t->pages - t->huge_pages4k, t->remapped);

	fprintf(f, "\n%-14s %12s %12s %12s %12s\n", "phase", "total ms", "pages", "ns/page", "pf_taken");
	for (i = 0; i < PG_NR_STEPS; i++) {
		if (ph[i].ran)
			fprintf(f, "%-14s %12.3f %12" PRIu64 " %12.1f %12" PRIu64 "\n", pg_steps[i].name,
				cli_ms_of(ph[i].ns), ph[i].pages, cli_per_page(ph[i].ns, ph[i].pages),
				ph[i].pf_taken);
		else
			fprintf(f, "%-14s %12s %12s %12s %12s\n", pg_steps[i].name, "-", "-", "-", "-");
	}
	if (verify_ran)
		fprintf(f, "%-14s %12.3f %12" PRIu64 " %12.1f %12s\n", "verify", cli_ms_of(verify_ns), t->pages,
			cli_per_page(verify_ns, t->pages), "-");
	else
		fprintf(f, "%-14s %12s %12s %12s %12s\n", "verify", "-", "-", "-", "-");

	if (have_stats) {
		const struct {
			const char *vk;
			uint64_t vv;
			const char *mk;
			uint64_t mv;
		} rows[] = {
			{ "pf_taken", vs->pf_taken, "pages_4k", ms->pages_4k },
			{ "pf_fixed", vs->pf_fixed, "pages_2m", ms->pages_2m },
			{ "pf_spurious", vs->pf_spurious, "pages_1g", ms->pages_1g },
			{ "pf_retry", vs->pf_retry, "pt_pages", ms->pt_pages },
			{ "tlb_misses", vs->tlb_misses, "remote_tlb_flushes", ms->remote_tlb_flushes },
			{ "exits", vs->exits, "shadow_pages", ms->shadow_pages },
			{ "guest_faults", vs->guest_faults, "shadow_pages_created", ms->shadow_pages_created },
			{ "pt_write_emulations", vs->pt_write_emulations, "shadow_pages_zapped",
			  ms->shadow_pages_zapped },
			{ "unsync_syncs", vs->unsync_syncs, "shadow_unsync_pages", ms->shadow_unsync_pages },
			{ "root_fast_switches", vs->root_fast_switches, "shadow_pte_writes",
			  ms->shadow_pte_writes },
			{ "root_slow_switches", vs->root_slow_switches, NULL, 0 },
			{ "mmu_ctx_rebuilds", vs->mmu_ctx_rebuilds, NULL, 0 },
			{ "tlb_flushes", vs->tlb_flushes, NULL, 0 },
		};

		fprintf(f, "\n%-20s %14s    %s\n", "vcpu stats (sum)", "", "vm stats");
		for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
			if (rows[i].mk)
				fprintf(f, "%-20s %14" PRIu64 "    %-20s %14" PRIu64 "\n", rows[i].vk,
					rows[i].vv, rows[i].mk, rows[i].mv);
			else
				fprintf(f, "%-20s %14" PRIu64 "\n", rows[i].vk, rows[i].vv);
		}
	}

	fprintf(f, "\n%-14s %" PRIu64 "\n", "mismatches", mismatches);
	if (error)
		fprintf(f, "%-14s %s\n", "error", error);
	fprintf(f, "%-14s %s\n", "result", ok ? "OK" : "FAILED");
}

/*
 * Each vCPU builds its address spaces, turns paging on, writes then reads
 * back every page through its gva, moves some pages to other frames with
 * guest stores + INVLPG, and goes back and forth between its two address
 * spaces; the host then checks every frame.  Every read is checked against
 * the frame the guest's tables say, under either MMU.
 */
static int scenario_paging_run(const struct cli_opts *o)
{
	struct pg_phase ph[PG_NR_STEPS];
	struct cli_opts eo = *o;
	struct pg_scen s;
	struct pg_totals t;
	struct vmmu_vcpu_stats vs;
	struct vmmu_vm_stats ms;
	struct phase_result res;
	uint64_t mismatches = 0, verify_ns = 0;
	bool ok = true, have_stats = false, verify_ran = false;
	char error[200] = "";
	struct report r;
	struct vm_env env;
	uint64_t trace_events = 0;
	struct crew crew;
	unsigned i, k;
	int rc;

	memset(ph, 0, sizeof(ph));
	memset(&t, 0, sizeof(t));
	memset(&vs, 0, sizeof(vs));
	memset(&ms, 0, sizeof(ms));
	memset(&s, 0, sizeof(s));
	memset(&env, 0, sizeof(env));
	s.mode = (enum guest_mode)o->guest_mode;
	s.huge = s.mode == GUEST_MODE_32 ? GUEST_PAGE_4M : GUEST_PAGE_2M;
	/* no NX bit in 32-bit paging's entries */
	s.flags = s.mode == GUEST_MODE_32 ? GUEST_W : GUEST_W | GUEST_NX;
	s.seed = o->seed;
	s.n = o->vcpus;
	s.v = calloc(s.n, sizeof(*s.v));
	if (!s.v) {
		return cli_runtime_error("out of memory for %u vCPUs", s.n);
	}
	if (pg_layout(&s, o->mem_bytes)) {
		free(s.v);
		return cli_usage_error("--mem %llu bytes leaves some of the %u vCPUs no room for data "
				       "besides their page tables", (unsigned long long)o->mem_bytes,
				       o->vcpus);
	}
	for (i = 0; i < s.n; i++) {
		t.pages += s.v[i].pages;
		t.huge_pages4k += s.v[i].huge_pages * (s.huge / CLI_PAGE_SIZE);
	}
	/*
	 * vmmu_vcpu_set_state() refuses LA57 unless the TDP is 5-level, under
	 * shadow paging too (where tdp_levels otherwise means nothing); a
	 * 5-level machine has the 52-bit MAXPHYADDR to go with it.
	 */
	if (s.mode == GUEST_MODE_5LEVEL) {
		eo.tdp_levels = 5;
		eo.maxphyaddr = 52;
	}

	rc = env_create(&env, &eo, o->vcpus, o->mem_bytes);
	if (rc) {
		snprintf(error, sizeof(error), "%s: %s", env.failed_call, vmmu_strerror(rc));
		fprintf(stderr, "vmmu: %s\n", error);
		ok = false;
		goto report;
	}
	s.vm = env.vm;
	for (i = 0; i < s.n; i++)
		s.v[i].vcpu = env.vcpus[i];
	if (crew_start(&crew, env.nr_vcpus, env.vcpus, NULL, env.mem_bytes, o->seed)) {
		snprintf(error, sizeof(error), "cannot start the vCPU threads");
		ok = false;
		goto destroy;
	}
	crew.addr_name = "gva";
	for (i = 0; i < s.n; i++) {
		/* the workers have not run yet: the start barrier publishes this */
		crew.w[i].ctx = &s.v[i];
		crew.w[i].begin = s.v[i].data_gpa;
		crew.w[i].end = s.v[i].pool_gpa + 2 * s.v[i].pool_bytes;
	}

	/* a failed phase leaves later phases nothing meaningful to check */
	for (k = 0; k < PG_NR_STEPS && ok; k++) {
		struct vmmu_vcpu_stats before, after;

		env_sum_vcpu_stats(&env, &before);
		if (crew_run_call(&crew, pg_steps[k].call, pg_steps[k].name, &res)) {
			cli_set_error(error, sizeof(error), "%s", res.error);
			ok = false;
		}
		env_sum_vcpu_stats(&env, &after);
		ph[k].ran = true;
		ph[k].ns = res.ns;
		ph[k].pf_taken = after.pf_taken - before.pf_taken;
		for (i = 0; i < s.n; i++)
			ph[k].pages += s.v[i].phase_pages;
		mismatches += res.mismatches;
		if (pg_steps[k].call == pg_remap)
			t.remapped = ph[k].pages;
	}
	crew_stop(&crew);

	if (ok) {
		uint64_t t0 = cli_now_ns(), bad = 0;

		rc = pg_verify_host(&s, &bad);
		verify_ns = cli_now_ns() - t0;
		verify_ran = !rc;
		mismatches += bad;
		if (!env_verify_result(rc, bad, error, sizeof(error)))
			ok = false;
	}

	env_sum_vcpu_stats(&env, &vs);
	vmmu_vm_get_stats(env.vm, &ms);
	have_stats = true;
	if (env_trace_finish(&env, "vmmu run paging", &trace_events, error, sizeof(error)))
		ok = false;
	if (ms.shadow_pages_recycled)
		fprintf(stderr, "vmmu: note: %" PRIu64 " shadow pages recycled to stay under the limit\n",
			ms.shadow_pages_recycled);
	/* checked even after a failure: a bugged VM explains most of them */
	if (!env_vm_healthy(env.vm, error, sizeof(error))) {
		fprintf(stderr, "vmmu: %s\n", error);
		ok = false;
	}
	if (!ok)
		cli_set_error(error, sizeof(error), "a check failed (see stderr)");

destroy:
	for (i = 0; i < s.n; i++) {
		if (s.v[i].pt[0])
			guest_pt_destroy(s.v[i].pt[0]);
		if (s.v[i].pt[1])
			guest_pt_destroy(s.v[i].pt[1]);
	}
	env_destroy(&env);
report:
	if (!o->json) {
		pg_print_text(&eo, &s, &t, ph, verify_ran, verify_ns, &vs, &ms, have_stats, mismatches, ok,
			      error[0] ? error : NULL);
		free(s.v);
		return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	}

	report_init(&r);
	report_str(&r, "scenario", "paging");
	report_config(&r, o, o->vcpus, o->mem_bytes);
	report_str(&r, "guest", pg_mode_name(s.mode));
	report_str(&r, "guest_huge_page", s.huge == GUEST_PAGE_4M ? "4m" : "2m");
	report_u64(&r, "pages", t.pages);
	report_u64(&r, "huge_pages", t.huge_pages4k);
	report_u64(&r, "remapped_pages", t.remapped);
	report_u64(&r, "cr3_round_trips", PG_ROUND_TRIPS);
	for (k = 0; k < PG_NR_STEPS; k++) {
		if (ph[k].ran) {
			report_f(&r, pg_steps[k].ms_key, 3, cli_ms_of(ph[k].ns));
			report_f(&r, pg_steps[k].ns_key, 1, cli_per_page(ph[k].ns, ph[k].pages));
			report_u64(&r, pg_steps[k].pf_key, ph[k].pf_taken);
		} else {
			report_null(&r, pg_steps[k].ms_key);
			report_null(&r, pg_steps[k].ns_key);
			report_null(&r, pg_steps[k].pf_key);
		}
	}
	if (verify_ran)
		report_f(&r, "verify_ms", 3, cli_ms_of(verify_ns));
	else
		report_null(&r, "verify_ms");
	report_u64(&r, "mismatches", mismatches);
	if (have_stats) {
		report_fault_stats(&r, &vs);
		report_u64(&r, "guest_faults", vs.guest_faults);
		report_u64(&r, "pt_write_emulations", vs.pt_write_emulations);
		report_u64(&r, "unsync_syncs", vs.unsync_syncs);
		report_u64(&r, "root_fast_switches", vs.root_fast_switches);
		report_u64(&r, "root_slow_switches", vs.root_slow_switches);
		report_u64(&r, "mmu_ctx_rebuilds", vs.mmu_ctx_rebuilds);
		report_u64(&r, "tlb_flushes", vs.tlb_flushes);
		report_vm_mappings(&r, &ms);
		report_shadow_counts(&r, &ms);
		report_mmu_counters(&r, &vs, &ms);
	}
	env_report_trace(&r, o, trace_events);
	free(s.v);
	return report_finish(&r, o, ok, error);
}

const struct tool_entry scenario_paging = {
	.name = "paging",
	.desc = "the same with guest paging on: touch through gvas, remap, switch CR3",
	.run = scenario_paging_run,
	.guest_paging = true,
};
