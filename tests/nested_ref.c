/* SPDX-License-Identifier: MIT */
/*
 * Reference model of nested paging; see nested_ref.h.  Sections are the
 * Intel SDM's (Vol. 3A chapter 4 for L2's paging, Vol. 3C 29.3 for EPT) and
 * the AMD APM Vol. 2's (15.25 for NPT).  Meant to be read beside them:
 * plain loops, no tables of bit tricks, nothing shared with vmmu.
 */
#include "nested_ref.h"

#include <string.h>

/* Bits lo..hi inclusive; empty when lo > hi. */
static uint64_t bits(unsigned int lo, unsigned int hi)
{
	uint64_t m = 0;

	for (unsigned int b = lo; b <= hi && b < 64; b++)
		m |= 1ULL << b;
	return m;
}

/* EPT entry bits (3C Tables 29-1 .. 29-6). */
#define EPT_A (1ULL << 8)
#define EPT_D (1ULL << 9)
/* Legacy entry bits (3A 4.3-4.5), also NPT's (APM 15.25.5). */
#define PTE_A (1ULL << 5)
#define PTE_D (1ULL << 6)

/* ---- the entries the access reads, and what it leaves in them ------------------- */

struct ctx {
	const struct nref_mem *mem;
	struct nref_outcome *out;
};

/* An entry's value as this access sees it: what an earlier step of the same
 * access left there, else memory. */
static uint64_t ent_read(struct ctx *c, uint64_t gpa, unsigned int size, bool l2, int level)
{
	struct nref_outcome *o = c->out;
	struct nref_entry *e;

	for (unsigned int i = 0; i < o->nent; i++)
		if (o->ent[i].gpa == gpa)
			return o->ent[i].after;
	if (o->nent == NREF_MAX_ENTRIES)
		return c->mem->read(c->mem->ctx, gpa, size);	/* cannot happen: 5 levels x 11 walks < 48 */
	e = &o->ent[o->nent++];
	e->gpa = gpa;
	e->size = size;
	e->l2 = l2;
	e->level = level;
	e->before = e->after = c->mem->read(c->mem->ctx, gpa, size);
	return e->after;
}

static void ent_write(struct ctx *c, uint64_t gpa, uint64_t val)
{
	for (unsigned int i = 0; i < c->out->nent; i++)
		if (c->out->ent[i].gpa == gpa)
			c->out->ent[i].after = val;
}

uint64_t nref_after(const struct nref_outcome *o, uint64_t gpa, uint64_t before)
{
	for (unsigned int i = 0; i < o->nent; i++)
		if (o->ent[i].gpa == gpa)
			return o->ent[i].after;
	return before;
}

const char *nref_kind_name(enum nref_kind k)
{
	switch (k) {
	case NREF_OK: return "ok";
	case NREF_L2_PF: return "L2 #PF";
	case NREF_EPT_VIOLATION: return "EPT violation";
	case NREF_EPT_MISCONFIG: return "EPT misconfiguration";
	case NREF_NPF: return "#NPF";
	}
	return "?";
}

/* ---- one L2 guest-physical address through L1's tables -------------------------- */

struct l1_result {
	bool fault;
	enum nref_kind kind;
	uint64_t code;		/* violation: qualification bits 5:0; #NPF: the #PF error code */
	uint64_t l1_gpa;
};

/* 3C 29.3.2 / 4.5.4: 9 bits per level above bit 12, in every table. */
static uint64_t index9(uint64_t addr, int level)
{
	return (addr >> (12 + 9 * (level - 1))) & 511;
}

/*
 * 3C 29.3.2 and 29.3.3: the EPT walk reads entries from the EPTP's table
 * down, each referencing the next table while it is present, not a leaf and
 * not misconfigured; ref_ept_translate_xo() then says what the entries
 * allow (and the A/D flags they get, 29.3.5).
 */
static void l1_ept(struct ctx *c, const struct nref_l1 *l1, uint64_t l2_gpa, const struct ref_access *acc,
		   struct l1_result *r)
{
	struct ref_ept_pte ent[REF_MAX_LEVEL + 1];
	uint64_t raw[REF_MAX_LEVEL + 1] = { 0 }, gpa[REF_MAX_LEVEL + 1] = { 0 };
	uint64_t table = l1->root;
	struct ref_ept_outcome o;
	int level, stop = 1;

	memset(ent, 0, sizeof(ent));
	for (level = l1->levels; level >= 1; level--) {
		const struct ref_ept_pte *e = &ent[level];

		gpa[level] = table + 8 * index9(l2_gpa, level);
		raw[level] = ent_read(c, gpa[level], 8, false, level);
		ent[level] = ref_ept_decode(l1->maxphyaddr, level, raw[level]);
		stop = level;
		if (!e->r && !e->w && !e->x)
			break;	/* not present */
		if ((e->w && !e->r) || (!l1->exec_only && e->x && !e->r) || e->rsvd)
			break;	/* misconfigured */
		if (ref_ept_is_leaf(level, e->ps))
			break;
		/* Bits (M-1):12: the physical address of the next table. */
		table = raw[level] & bits(12, l1->maxphyaddr - 1);
	}
	ref_ept_translate_xo(l1->levels, ent, acc, l1->ad, l1->exec_only, &o);
	for (level = l1->levels; level >= stop; level--)
		ent_write(c, gpa[level], (raw[level] & ~(EPT_A | EPT_D)) | (o.a[level] ? EPT_A : 0) |
						 (o.d[level] ? EPT_D : 0));
	memset(r, 0, sizeof(*r));
	if (o.fault) {
		r->fault = true;
		r->kind = o.misconfig ? NREF_EPT_MISCONFIG : NREF_EPT_VIOLATION;
		r->code = o.misconfig ? 0 : o.qual;
		return;
	}
	r->l1_gpa = ref_ept_leaf_frame(l1->maxphyaddr, o.leaf_level, raw[o.leaf_level]) |
		    (l2_gpa & (bits(0, 11 + 9 * (o.leaf_level - 1))));
}

/* APM 15.25.5: the NPT is in the format of L1's own paging (4/5-level with
 * L1's EFER.NXE), and every access through it is a user-mode access. */
static struct ref_cpu npt_cpu(const struct nref_l1 *l1)
{
	struct ref_cpu nc;

	memset(&nc, 0, sizeof(nc));
	nc.paging = l1->levels == 5 ? REF_PAGING_5LEVEL : REF_PAGING_4LEVEL;
	nc.maxphyaddr = l1->maxphyaddr;
	nc.nxe = l1->nxe;
	nc.wp = true;
	nc.cpl = 3;
	return nc;
}

static void l1_npt(struct ctx *c, const struct nref_l1 *l1, uint64_t l2_gpa, const struct ref_access *acc,
		   struct l1_result *r)
{
	struct ref_cpu nc = npt_cpu(l1);
	struct ref_access ua = { .write = acc->write, .fetch = acc->fetch, .implicit = false };
	struct ref_pte ent[REF_MAX_LEVEL + 1];
	uint64_t raw[REF_MAX_LEVEL + 1] = { 0 }, gpa[REF_MAX_LEVEL + 1] = { 0 };
	uint64_t table = l1->root;
	struct ref_outcome o;
	int level, stop = 1;

	memset(ent, 0, sizeof(ent));
	for (level = l1->levels; level >= 1; level--) {
		gpa[level] = table + 8 * index9(l2_gpa, level);
		raw[level] = ent_read(c, gpa[level], 8, false, level);
		ent[level] = ref_decode(&nc, level, raw[level]);
		stop = level;
		if (!ent[level].p || ent[level].rsvd || ref_is_leaf(&nc, level, ent[level].ps))
			break;
		table = raw[level] & bits(12, l1->maxphyaddr - 1);
	}
	ref_translate(&nc, ent, &ua, &o);
	for (level = l1->levels; level >= stop; level--)
		ent_write(c, gpa[level], (raw[level] & ~(PTE_A | PTE_D)) | (o.a[level] ? PTE_A : 0) |
						 (o.d[level] ? PTE_D : 0));
	memset(r, 0, sizeof(*r));
	if (o.fault) {
		r->fault = true;
		r->kind = NREF_NPF;
		r->code = o.error_code;
		return;
	}
	r->l1_gpa = ref_leaf_frame(&nc, o.leaf_level, raw[o.leaf_level]) |
		    (l2_gpa & (ref_page_size(&nc, o.leaf_level) - 1));
}

static void l1_translate(struct ctx *c, const struct nref_l1 *l1, uint64_t l2_gpa, bool write, bool fetch,
			 struct l1_result *r)
{
	struct ref_access a = { .write = write, .fetch = fetch, .implicit = false };

	if (l1->npt)
		l1_npt(c, l1, l2_gpa, &a, r);
	else
		l1_ept(c, l1, l2_gpa, &a, r);
}

/* What L1 sees of a refused access: the exit's kind, address and bits. */
static void nested_exit(struct nref_outcome *o, const struct l1_result *r, uint64_t l2_gpa, bool final,
			bool linear)
{
	o->kind = r->kind;
	o->ngpa = l2_gpa;
	o->final = final;
	o->gla_valid = linear;
	if (final)
		o->l2_gpa = l2_gpa;
	switch (r->kind) {
	case NREF_EPT_VIOLATION:
		/* Table 28-7: bit 7, the guest linear address is valid; bit 8
		 * (given bit 7), the access was to the translation of it rather
		 * than to a paging-structure entry. */
		o->qual = r->code | (linear ? NREF_EPTQ_GLA_VALID : 0) | (linear && final ? NREF_EPTQ_FINAL : 0);
		break;
	case NREF_EPT_MISCONFIG:
		o->qual = 0;	/* no qualification (28.2.1) */
		break;
	default:
		/* 15.25.6: EXITINFO1 is the #PF error code, bit 32 for the final
		 * guest-physical address, bit 33 for a guest page table. */
		o->qual = r->code | (final ? NREF_NPF_FINAL : NREF_NPF_TABLES);
		break;
	}
}

/* ---- the L2 access ---------------------------------------------------------------- */

/* Index of addr's entry in the level's table (4.3 32-bit, 4.4 PAE, 4.5). */
static uint64_t l2_index(const struct ref_cpu *l2, uint64_t addr, int level)
{
	if (l2->paging == REF_PAGING_32)
		return (addr >> (12 + 10 * (level - 1))) & 1023;
	if (l2->paging == REF_PAGING_PAE && level == 3)
		return (addr >> 30) & 3;
	return index9(addr, level);
}

/* The table an entry references: bits 31:12 (32-bit paging), else (M-1):12. */
static uint64_t l2_table_addr(const struct ref_cpu *l2, uint64_t raw)
{
	if (l2->paging == REF_PAGING_32)
		return raw & bits(12, 31);
	return raw & bits(12, l2->maxphyaddr - 1);
}

void nref_access(const struct ref_cpu *l2, uint64_t cr3, const uint64_t *pdpte, const struct nref_l1 *l1,
		 const struct nref_mem *mem, uint64_t addr, bool phys, const struct ref_access *acc,
		 struct nref_outcome *out)
{
	struct ctx c = { .mem = mem, .out = out };
	int top = ref_top_level(l2->paging);
	unsigned int esize = ref_entry_bytes(l2->paging);
	/* each level's entry: its value, and its address in L2's and in L1's space */
	uint64_t raw[REF_MAX_LEVEL + 1] = { 0 }, l2e[REF_MAX_LEVEL + 1] = { 0 }, table, l2_gpa;
	/* 29.3.5: with EPT A/D, accesses to guest paging structures are
	 * writes as far as EPT is concerned. */
	bool pt_write = !l1->npt && l1->ad;
	struct ref_pte ent[REF_MAX_LEVEL + 1];
	struct ref_outcome o2;
	struct l1_result r;
	int level, leaf;

	memset(out, 0, sizeof(*out));
	if (phys) {
		l2_gpa = addr;
		goto final;
	}

	/* 4.3: CR3 bits 31:12 hold the page directory; 4.4.1: with PAE the
	 * PDPTEs are registers, loaded from CR3 bits 31:5 at CR3 load; 4.5: the
	 * PML4/PML5 at bits (M-1):12. */
	table = l2->paging == REF_PAGING_32 ? cr3 & bits(12, 31) : cr3 & bits(12, l2->maxphyaddr - 1);
	memset(ent, 0, sizeof(ent));
	for (level = top; level >= 1; level--) {
		if (l2->paging == REF_PAGING_PAE && level == 3) {
			raw[level] = pdpte[l2_index(l2, addr, level)];
		} else {
			l2e[level] = table + esize * l2_index(l2, addr, level);
			l1_translate(&c, l1, l2e[level], pt_write, false, &r);
			if (r.fault) {
				nested_exit(out, &r, l2e[level], false, true);
				return;
			}
			raw[level] = ent_read(&c, r.l1_gpa, esize, true, level);
		}
		ent[level] = ref_decode(l2, level, raw[level]);
		if (!ent[level].p || ent[level].rsvd || ref_is_leaf(l2, level, ent[level].ps))
			break;
		table = l2_table_addr(l2, raw[level]);
	}

	ref_translate(l2, ent, acc, &o2);
	if (o2.fault) {
		out->kind = NREF_L2_PF;
		out->pf_error_code = o2.error_code;
		return;
	}
	leaf = o2.leaf_level;
	/*
	 * 4.8: A in every entry used, D in the leaf for a write.  Each update
	 * is a write to the L2 entry's guest-physical address (29.3.3.2:
	 * "writes by the logical processor to guest paging structures to
	 * update accessed and dirty flags are considered to be data writes").
	 */
	for (level = top; level >= leaf; level--) {
		uint64_t nv = raw[level];

		if (l2->paging == REF_PAGING_PAE && level == 3)
			continue;
		if (o2.a[level])
			nv |= PTE_A;
		if (o2.d[level])
			nv |= PTE_D;
		if (nv == raw[level])
			continue;
		l1_translate(&c, l1, l2e[level], true, false, &r);
		if (r.fault) {
			nested_exit(out, &r, l2e[level], false, true);
			return;
		}
		ent_write(&c, r.l1_gpa, nv);
	}
	l2_gpa = ref_leaf_frame(l2, leaf, raw[leaf]) | (addr & (ref_page_size(l2, leaf) - 1));

final:
	l1_translate(&c, l1, l2_gpa, acc->write, acc->fetch, &r);
	if (r.fault) {
		nested_exit(out, &r, l2_gpa, true, !phys);
		return;
	}
	out->kind = NREF_OK;
	out->l2_gpa = l2_gpa;
	out->l1_gpa = r.l1_gpa;
}
