/* SPDX-License-Identifier: MIT */
#ifndef VMMU_FUZZ_GMODEL_H
#define VMMU_FUZZ_GMODEL_H
/*
 * The fuzzer's reference model of guest paging: what a vCPU access with
 * guest paging on may do, given the guest's own page tables (in the model's
 * record of guest memory, model.h), the vCPU's control registers, and the
 * translations the TLB may still hold.
 *
 * Translation follows the SDM through tests/walk_ref.c (entry decoding,
 * reserved bits, leaf rules, access rights, error codes), which shares no
 * code with vmmu's walker.  This file adds what walk_ref leaves to its
 * caller: where each entry lives in guest memory, the PAE PDPTE registers,
 * what a walk does when a table is not RAM or its host page is unusable,
 * and the TLB.
 *
 * The TLB is a set per vCPU of translations that may still be used (SDM
 * 4.10): a translation may be used after the guest changed its tables until
 * it is invalidated for its PCID (or globally); a not-present entry is never
 * cached.  Since a processor may cache a translation whenever the tables
 * give it (not only when an access uses it), the model keeps, per vCPU and
 * PCID, the current translation of every gva page the fuzzer uses
 * (gm_windows) and, just before anything changes one, adds it to the set.
 * "Its PCID" is the PCID the vCPU last loaded that root with: a table
 * shared by two address spaces and changed while the vCPU runs one may
 * leave stale translations in the other (shadow paging's unsync pages,
 * shared by every root, do exactly that).  Only translations whose walk
 * found A set in every entry go in the set: the TLB caches nothing else.
 * Invalidations drop entries as the SDM says the instruction must
 * (INVLPG, INVPCID, MOV to CR3/CR4/CR0); anything vmmu drops on top is
 * allowed.  Host-side operations (zaps, flushes, slot changes) never
 * change the set: the guest did not invalidate.
 *
 * Evaluating a stale entry is a TLB hit: its rights are checked against the
 * current CPL/WP/SMEP/SMAP/AC/PKRU (SDM 4.10.2.2), a write through an entry
 * whose D was clear is not one vmmu makes (it walks again), and the data
 * side (slot, MMIO, host protection) is today's.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "walk_ref.h"

#define GM_VCPUS 2
#define GM_PCIDS 4		/* the PCIDs the fuzzer loads CR3 with */
#define GM_TLB_MAX 1024
#define GM_TLB_SOFT 640		/* past this the fuzzer has the guest flush */

/*
 * The gva pages accesses with guest paging on use, in windows of
 * consecutive pages: low memory, both sides of 2M / 1G / 4G boundaries,
 * PAE's four quarters, the canonical edges of 4- and 5-level paging and the
 * top of the address space.  Every page an access touches is one of these
 * (or the access is refused before any page is touched), so the model can
 * track what the TLB may hold for all of them.
 */
struct gm_window {
	uint64_t base;
	unsigned int npages;
};
#define GM_NWIN 11
#define GM_NPAGES 38
extern const struct gm_window gm_windows[GM_NWIN];
uint64_t gm_page_gva(unsigned int i);
/* Index of the window page holding gva, or -1; the window of a page. */
int gm_page_index(uint64_t gva);
unsigned int gm_page_window(uint64_t gva);

enum gm_mode { GM_OFF, GM_32, GM_PAE, GM_4L, GM_5L };
enum gm_mode gm_mode_of(const struct vmmu_cpu_state *s);
unsigned int gm_pcid_of(const struct vmmu_cpu_state *s);
bool gm_canonical(enum gm_mode mode, uint64_t gva);

/* A translation of a gva page: the leaf's page and what it grants. */
struct gm_xlat {
	uint64_t gva_base, size, frame;	/* frame: gpa of the leaf's page */
	struct ref_rights r;
	bool g, d;			/* the leaf's G and D */
	bool all_a;			/* A was set in every entry used */
};

struct gm_tlbe {
	struct gm_xlat x;
	uint16_t pcid;
	bool global;
};

/* A guest page-table entry a walk read. */
struct gm_ent {
	uint64_t gpa;
	uintptr_t hva;
	unsigned int size;
	uint64_t raw;
	int level;
	bool leaf;
};

enum gm_wst { GW_OK, GW_NP, GW_RSVD, GW_NOTRAM, GW_GP };

struct gm_walk {
	enum gm_wst st;
	int n;				/* entries read from memory, root first */
	struct gm_ent e[REF_MAX_LEVEL];
	uint64_t bad_gpa;		/* GW_NOTRAM: the entry outside RAM */
	struct gm_xlat x;		/* GW_OK */
};

enum gm_okind { GO_OK, GO_MMIO, GO_MEMFAULT, GO_PF, GO_GP, GO_BLOCKED, GO_UNUSABLE };

struct gm_out {
	enum gm_okind k;
	uint64_t gpa;		/* OK/MMIO: the fragment's first byte; MEMFAULT: the page */
	uint32_t ec;		/* PF */
	bool ro;		/* MMIO: a write to a READONLY slot */
	bool table;		/* it comes from a guest table page, not the data */
	bool walked;		/* the walk completed (A/D set): the TLB may cache it */
};

struct gm_access {
	bool write, fetch, implicit;
};

/* The translation of one window page under one (vCPU, PCID), kept to be
 * added to the TLB set just before anything changes it. */
struct gm_cache {
	bool on, ok;
	struct gm_xlat x;
	int ndeps;
	uint32_t deps[REF_MAX_LEVEL];	/* arena pages its walk read */
};

struct gm_vcpu {
	struct vmmu_cpu_state s;
	struct gm_tlbe tlb[GM_TLB_MAX];
	unsigned int ntlb;
	/* The root each PCID was last loaded with (with CR4.PCIDE). */
	bool root_set[GM_PCIDS];
	uint64_t root_cr3[GM_PCIDS];
	struct gm_cache cache[GM_PCIDS][GM_NPAGES];
};

struct gm {
	struct model *m;
	bool shadow;		/* shadow paging (else TDP) */
	bool la57_ok;		/* 5-level paging allowed (5-level TDP or shadow) */
	unsigned int maxphyaddr;
	struct gm_vcpu v[GM_VCPUS];
	uint16_t *depcnt;	/* per arena page: cached walks that read it */
	/* Per gpa page below GM_TABLE_PAGES: the MMU may shadow it (it was a
	 * guest table of some walk or root load), so under shadow paging a
	 * store to it may be emulated and cut an access in two. */
	uint8_t *table_page;
};
#define GM_TABLE_PAGES (64ULL << 8)	/* 64 MiB of gpa space */

int gm_init(struct gm *g, struct model *m);
void gm_free(struct gm *g);
/* A new VM: both vCPUs in flat protected mode, nothing cached. */
void gm_reset(struct gm *g, bool shadow, bool la57_ok, unsigned int maxphyaddr);

void gm_ref_cpu(const struct gm *g, const struct vmmu_cpu_state *s, struct ref_cpu *rc);
/* A walk of gva through the tables at cr3 (PAE: the PDPTE registers of s)
 * under the paging state s; reads the model's memory, no side effects. */
void gm_walk(const struct gm *g, const struct vmmu_cpu_state *s, uint64_t cr3, uint64_t gva, struct gm_walk *w);

/*
 * Fragment [gva, gva + n) (one page) of an access by vCPU v, through the
 * current tables (a TLB miss): *w gets the walk.  under_spte: shadow paging
 * when the shadow already maps the page (no guest walk, so nothing about
 * the guest's table pages can fail).
 */
void gm_eval_current(const struct gm *g, unsigned int v, uint64_t gva, size_t n, const struct gm_access *a,
		     bool under_spte, struct gm_out *o, struct gm_walk *w);
/* The same fragment through a translation the TLB holds. */
void gm_eval_cached(const struct gm *g, unsigned int v, const struct gm_xlat *x, uint64_t gva, size_t n,
		    const struct gm_access *a, struct gm_out *o);
/* A guest-physical fragment (paging off, or VMMU_ACCESS_PHYS). */
void gm_eval_phys(const struct gm *g, uint64_t gpa, size_t n, bool write, struct gm_out *o);

/* Whether TLB entry t may serve vCPU v now, for gva. */
bool gm_tlbe_applies(const struct gm *g, unsigned int v, const struct gm_tlbe *t, uint64_t gva);

/* An access walked x successfully: it may be cached under the current PCID. */
void gm_tlb_add(struct gm *g, unsigned int v, const struct gm_xlat *x);

/*
 * Every change to guest memory goes through here (the record of guest
 * memory is m->expect): cached translations that read a changed page go to
 * the TLB set first, then are walked again.
 */
void gm_mem_write(struct gm *g, uintptr_t hva, const void *src, size_t len);
/* Around changes that can move any translation (memslots, discards). */
void gm_global_begin(struct gm *g);
void gm_global_end(struct gm *g);

void gm_mark_table(struct gm *g, uint64_t gpa);
bool gm_is_table(const struct gm *g, uint64_t gpa);

/*
 * vmmu_vcpu_set_state / write_cr3 / invlpg / invpcid as the model expects
 * them: the return code, and on success the new state and the TLB set as
 * the SDM leaves them.  *s (set_state) is the request; on success
 * g->v[v].s is what get_state must return.
 */
int gm_set_state(struct gm *g, unsigned int v, const struct vmmu_cpu_state *in);
int gm_write_cr3(struct gm *g, unsigned int v, uint64_t cr3);
void gm_invlpg(struct gm *g, unsigned int v, uint64_t gva);
int gm_invpcid(struct gm *g, unsigned int v, unsigned int type, uint32_t pcid, uint64_t gva);

#endif /* VMMU_FUZZ_GMODEL_H */
