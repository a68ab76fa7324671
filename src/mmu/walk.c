/* SPDX-License-Identifier: MIT */
#include "mmu/walk.h"

#include <string.h>

#define BIT(n) (1ULL << (n))
#define GENMASK(h, l) (((~0ULL) >> (63 - (h))) & ~((1ULL << (l)) - 1))

/* Legacy-format entry bits (SDM 4.3, 4.4, 4.5). */
#define PTE_P BIT(0)
#define PTE_W BIT(1)
#define PTE_U BIT(2)
#define PTE_A BIT(5)
#define PTE_D BIT(6)
#define PTE_PS BIT(7)
#define PTE_G BIT(8)
#define PTE_XD BIT(63)
#define PTE_PKEY_SHIFT 59

/* EPT entry bits (SDM 29.3.2). */
#define EPTE_R BIT(0)
#define EPTE_W BIT(1)
#define EPTE_X BIT(2)
#define EPTE_RWX (EPTE_R | EPTE_W | EPTE_X)
#define EPTE_MT_SHIFT 3
#define EPTE_PS BIT(7)
#define EPTE_A BIT(8)
#define EPTE_D BIT(9)

/* EPT violation exit qualification bits (SDM 28.2.1). */
#define EPTQ_READ BIT(0)
#define EPTQ_WRITE BIT(1)
#define EPTQ_FETCH BIT(2)
#define EPTQ_RWX_SHIFT 3

/* The shape of a paging mode: everything the one walk loop varies by. */
struct mode_desc {
	int levels;		/* root level */
	unsigned int entry_size;	/* 4 or 8 bytes */
	unsigned int bits_per_level;	/* 10 or 9 */
	unsigned int va_bits;
	int max_huge_level;	/* highest level whose PS bit makes a leaf (0: none) */
	bool ept;
};

static const struct mode_desc modes[] = {
	[WALK_MODE_NONE] = { 0, 8, 9, 32, 0, false },
	[WALK_MODE_32] = { 2, 4, 10, 32, 2, false },
	[WALK_MODE_PAE] = { 3, 8, 9, 32, 2, false },
	[WALK_MODE_4LEVEL] = { 4, 8, 9, 48, 3, false },
	[WALK_MODE_5LEVEL] = { 5, 8, 9, 57, 3, false },
	[WALK_MODE_EPT4] = { 4, 8, 9, 48, 3, true },
	[WALK_MODE_EPT5] = { 5, 8, 9, 57, 3, true },
};

unsigned int walk_va_bits(enum walk_mode mode)
{
	return modes[mode].va_bits;
}

static inline unsigned int level_shift(const struct mode_desc *m, int level)
{
	return 12 + m->bits_per_level * (unsigned int)(level - 1);
}

static inline uint64_t level_index(const struct mode_desc *m, uint64_t va, int level)
{
	unsigned int shift = level_shift(m, level);

	/* PAE's top level has 4 entries, indexed by bits 31:30. */
	return (va >> shift) & ((1ULL << m->bits_per_level) - 1);
}

static inline uint64_t phys_mask(const struct walk_cpu *cpu)
{
	return GENMASK(cpu->maxphyaddr - 1, 12);
}

static bool is_leaf(const struct walk_cpu *cpu, const struct mode_desc *m, uint64_t pte, int level)
{
	if (level == 1)
		return true;
	if (level > m->max_huge_level)
		return false;
	if (m->ept)
		return pte & EPTE_PS;
	/* 32-bit paging: PS is honoured only with CR4.PSE (SDM 4.3). */
	if (cpu->mode == WALK_MODE_32 && !cpu->pse)
		return false;
	return pte & PTE_PS;
}

/* Reserved bits of a present legacy-format entry (SDM 4.3, 4.4.2, 4.5.4). */
static uint64_t legacy_rsvd(const struct walk_cpu *cpu, uint64_t pte, int level, bool leaf)
{
	uint64_t rsvd = 0;

	if (cpu->mode == WALK_MODE_32) {
		unsigned int m;

		if (!leaf || level == 1)
			return 0;
		/* 4M page (PSE-36): bits 20:13 hold physical bits 39:32, as far
		 * as MAXPHYADDR (capped at 40) goes; bit 21 is reserved. */
		m = cpu->maxphyaddr < 40 ? cpu->maxphyaddr : 40;
		rsvd = BIT(21);
		if (m < 40)
			rsvd |= GENMASK(20, 13 + (m > 32 ? m - 32 : 0));
		return rsvd;
	}
	/* PAE entries reserve 62:M (SDM 4.4.2); IA-32e entries 51:M, their
	 * bits 62:52 being ignored or the protection key (SDM 4.5.4). */
	if (cpu->mode == WALK_MODE_PAE)
		rsvd |= GENMASK(62, cpu->maxphyaddr);
	else if (cpu->maxphyaddr < 52)
		rsvd |= GENMASK(51, cpu->maxphyaddr);
	if (!cpu->nxe)
		rsvd |= PTE_XD;
	/* PS is reserved in PML5Es and PML4Es (no 512G pages). */
	if (level >= 4)
		rsvd |= PTE_PS;
	if (leaf && level > 1)
		rsvd |= GENMASK(level_shift(&modes[cpu->mode], level) - 1, 13); /* bit 12 is PAT */
	return rsvd;
}

/* Misconfiguration of a present EPT entry (SDM 29.3.3.1). */
static bool ept_misconfig(const struct walk_cpu *cpu, uint64_t pte, int level, bool leaf)
{
	if ((pte & EPTE_W) && !(pte & EPTE_R))
		return true;
	if (cpu->ept_no_exec_only && (pte & EPTE_X) && !(pte & EPTE_R))
		return true;
	if (cpu->maxphyaddr < 52 && (pte & GENMASK(51, cpu->maxphyaddr)))
		return true;
	if (level >= 4 && (pte & EPTE_PS))
		return true;
	if (leaf) {
		uint64_t mt = (pte >> EPTE_MT_SHIFT) & 7;

		if (mt == 2 || mt == 3 || mt == 7)
			return true;
		if (level > 1 && (pte & GENMASK(level_shift(&modes[cpu->mode], level) - 1, 12)))
			return true;
	} else if (pte & GENMASK(6, 3)) {
		return true;
	}
	return false;
}

static unsigned int legacy_rights(const struct walk_cpu *cpu, uint64_t pte)
{
	unsigned int r = WALK_ACC_R;

	if (pte & PTE_W)
		r |= WALK_ACC_W;
	if (pte & PTE_U)
		r |= WALK_ACC_U;
	/* XD only exists with NXE (with NXE=0 bit 63 is reserved, caught above). */
	if (!cpu->nxe || cpu->mode == WALK_MODE_32 || !(pte & PTE_XD))
		r |= WALK_ACC_X;
	return r;
}

static unsigned int ept_rights(uint64_t pte)
{
	unsigned int r = WALK_ACC_U;	/* no user/supervisor in EPT */

	if (pte & EPTE_R)
		r |= WALK_ACC_R;
	if (pte & EPTE_W)
		r |= WALK_ACC_W;
	if (pte & EPTE_X)
		r |= WALK_ACC_X;
	return r;
}

static inline bool user_mode_access(const struct walk_cpu *cpu, unsigned int access)
{
	return cpu->cpl == 3 && !(access & WALK_IMPLICIT);
}

/* The non-permission bits of a #PF error code for this access (SDM 4.7). */
static uint32_t access_error_bits(const struct walk_cpu *cpu, unsigned int access)
{
	uint32_t ec = 0;

	if (access & WALK_WRITE)
		ec |= PFERR_W;
	if (user_mode_access(cpu, access))
		ec |= PFERR_U;
	/* I/D is reported only where execute-disable or SMEP can exist. */
	if ((access & WALK_FETCH) &&
	    (cpu->smep || (cpu->nxe && cpu->mode != WALK_MODE_32 && cpu->mode != WALK_MODE_NONE)))
		ec |= PFERR_ID;
	return ec;
}

uint32_t walk_permission_fault(const struct walk_cpu *cpu, unsigned int acc, unsigned int pkey, unsigned int access)
{
	bool write = access & WALK_WRITE, fetch = access & WALK_FETCH;
	bool user_page = acc & WALK_ACC_U;
	bool fault = false;
	uint32_t ec;

	if (user_mode_access(cpu, access)) {
		/* SDM 4.6.1: user-mode accesses need U everywhere; writes need R/W
		 * everywhere whatever CR0.WP says; fetches need no XD. */
		if (!user_page || (write && !(acc & WALK_ACC_W)) || (fetch && !(acc & WALK_ACC_X)))
			fault = true;
	} else if (fetch) {
		/* Supervisor fetches: SMEP forbids user pages outright. */
		if ((user_page && cpu->smep) || !(acc & WALK_ACC_X))
			fault = true;
	} else {
		/* Supervisor data: SMAP forbids user pages unless the access is
		 * explicit and EFLAGS.AC=1; writes to read-only pages need WP=0. */
		if (user_page && cpu->smap && ((access & WALK_IMPLICIT) || !cpu->ac))
			fault = true;
		if (write && !(acc & WALK_ACC_W) && cpu->wp)
			fault = true;
	}
	ec = fault ? PFERR_P : 0;

	/*
	 * Protection keys (SDM 4.6.2): 4/5-level paging, user-mode addresses,
	 * data accesses.  AD forbids every data access; WD forbids user writes,
	 * and supervisor writes when CR0.WP=1.  Reported in the error code even
	 * together with another protection violation, as KVM does.
	 */
	if (cpu->pke && user_page && !fetch &&
	    (cpu->mode == WALK_MODE_4LEVEL || cpu->mode == WALK_MODE_5LEVEL)) {
		bool ad = (cpu->pkru >> (pkey * 2)) & 1;
		bool wd = (cpu->pkru >> (pkey * 2 + 1)) & 1;

		if (ad || (write && wd && (user_mode_access(cpu, access) || cpu->wp)))
			ec |= PFERR_P | PFERR_PK;
	}
	if (!ec)
		return 0;
	return ec | access_error_bits(cpu, access);
}

uint32_t walk_pf_error_code(const struct walk_cpu *cpu, unsigned int access, uint32_t bits)
{
	return bits | access_error_bits(cpu, access);
}

static int fault_pf(const struct walk_cpu *cpu, struct walk_result *res, uint64_t gva, unsigned int access,
		    uint32_t bits)
{
	res->vector = WALK_VECTOR_PF;
	res->error_code = bits | access_error_bits(cpu, access);
	res->fault_addr = gva;
	return WALK_FAULT;
}

static int fault_ept(struct walk_result *res, uint64_t gpa, unsigned int access, unsigned int eff, bool misconfig)
{
	uint32_t q = 0;

	res->vector = WALK_VECTOR_EPT_VIOLATION;
	res->ept_misconfig = misconfig;
	res->fault_addr = gpa;
	if (!misconfig) {
		q = (access & WALK_WRITE) ? EPTQ_WRITE : (access & WALK_FETCH) ? EPTQ_FETCH : EPTQ_READ;
		if (eff & WALK_ACC_R)
			q |= 1u << EPTQ_RWX_SHIFT;
		if (eff & WALK_ACC_W)
			q |= 2u << EPTQ_RWX_SHIFT;
		if (eff & WALK_ACC_X)
			q |= 4u << EPTQ_RWX_SHIFT;
	}
	res->error_code = q;
	return WALK_FAULT;
}

static bool ept_allows(unsigned int eff, unsigned int access)
{
	if (access & WALK_WRITE)
		return (eff & WALK_ACC_W) && (eff & WALK_ACC_R);
	if (access & WALK_FETCH)
		return eff & WALK_ACC_X;
	return eff & WALK_ACC_R;
}

/* Next-table or frame address of an entry. */
static uint64_t entry_addr(const struct walk_cpu *cpu, uint64_t pte, int level, bool leaf)
{
	if (cpu->mode == WALK_MODE_32) {
		if (leaf && level == 2)	/* 4M page, PSE-36 high bits */
			return (pte & GENMASK(31, 22)) | (((pte >> 13) & 0xff) << 32);
		return pte & GENMASK(31, 12);
	}
	if (leaf && level > 1)
		return pte & phys_mask(cpu) & ~((1ULL << level_shift(&modes[cpu->mode], level)) - 1);
	return pte & phys_mask(cpu);
}

/* ---- one entry, format by format ------------------------------------------ */

static const struct gpte_fmt legacy32_fmt = { 4, PTE_P, PTE_A, PTE_D, 0, 2, false };
static const struct gpte_fmt pae_fmt = { 8, PTE_P, PTE_A, PTE_D, 0, 2, false };
static const struct gpte_fmt long4_fmt = { 8, PTE_P, PTE_A, PTE_D, 0xfULL << PTE_PKEY_SHIFT, 4, false };
static const struct gpte_fmt long5_fmt = { 8, PTE_P, PTE_A, PTE_D, 0xfULL << PTE_PKEY_SHIFT, 5, false };
/* EPT A/D exist only with EPTP bit 6; without it bits 8 and 9 are ignored. */
static const struct gpte_fmt ept4_fmt = { 8, EPTE_RWX, 0, 0, 0, 4, true };
static const struct gpte_fmt ept4_ad_fmt = { 8, EPTE_RWX, EPTE_A, EPTE_D, 0, 4, true };
static const struct gpte_fmt ept5_fmt = { 8, EPTE_RWX, 0, 0, 0, 5, true };
static const struct gpte_fmt ept5_ad_fmt = { 8, EPTE_RWX, EPTE_A, EPTE_D, 0, 5, true };

const struct gpte_fmt *gpte_fmt_of(const struct walk_cpu *w)
{
	switch (w->mode) {
	case WALK_MODE_32: return &legacy32_fmt;
	case WALK_MODE_PAE: return &pae_fmt;
	case WALK_MODE_5LEVEL: return &long5_fmt;
	case WALK_MODE_EPT4: return w->ept_ad ? &ept4_ad_fmt : &ept4_fmt;
	case WALK_MODE_EPT5: return w->ept_ad ? &ept5_ad_fmt : &ept5_fmt;
	default: return &long4_fmt;
	}
}

unsigned int gpte_rights(const struct walk_cpu *w, uint64_t gpte)
{
	return modes[w->mode].ept ? ept_rights(gpte) : legacy_rights(w, gpte);
}

bool gpte_is_leaf(const struct walk_cpu *w, uint64_t gpte, int level)
{
	return is_leaf(w, &modes[w->mode], gpte, level);
}

bool gpte_is_reserved(const struct walk_cpu *w, uint64_t gpte, int level)
{
	bool leaf = gpte_is_leaf(w, gpte, level);

	if (modes[w->mode].ept)
		return ept_misconfig(w, gpte, level, leaf);
	return gpte & legacy_rsvd(w, gpte, level, leaf);
}

uint64_t gpte_addr(const struct walk_cpu *w, uint64_t gpte, int level)
{
	return entry_addr(w, gpte, level, gpte_is_leaf(w, gpte, level));
}

uint64_t gpte_entry_gpa(const struct walk_cpu *w, uint64_t table_gpa, uint64_t va, int level)
{
	const struct mode_desc *m = &modes[w->mode];

	return table_gpa + level_index(m, va, level) * m->entry_size;
}

int walk_gva(const struct walk_cpu *cpu, const struct walk_mem_ops *mem, uint64_t gva, unsigned int access,
	     struct walk_result *res)
{
	const struct mode_desc *m = &modes[cpu->mode];
	uint64_t table, pte = 0;
	unsigned int eff;
	int level, leaf_level, r;

	memset(res, 0, sizeof(*res));
	if (cpu->mode == WALK_MODE_NONE) {
		res->gpa = gva & 0xffffffffULL;
		res->level = 1;
		res->page_size = 4096;
		res->access = WALK_ACC_R | WALK_ACC_W | WALK_ACC_U | WALK_ACC_X;
		res->dirty = true;
		return WALK_OK;
	}
	if (m->va_bits == 32) {
		gva &= 0xffffffffULL;
	} else if (!m->ept && !walk_gva_canonical(cpu, gva)) {
		/* A non-canonical address never reaches the page tables (SDM 3.3.7.1). */
		res->vector = WALK_VECTOR_GP;
		return WALK_FAULT;
	} else if (m->ept && (gva >> m->va_bits)) {
		return fault_ept(res, gva, access, 0, false);
	}
	res->nr_levels = m->levels;

restart:
	eff = WALK_ACC_R | WALK_ACC_W | WALK_ACC_U | WALK_ACC_X;
	table = cpu->root & phys_mask(cpu);
	if (cpu->mode == WALK_MODE_32)
		table = cpu->root & GENMASK(31, 12);
	leaf_level = 0;

	for (level = m->levels; level >= 1; level--) {
		uint64_t gpa_entry;
		bool leaf;

		if (cpu->mode == WALK_MODE_PAE && level == 3) {
			/* The PDPTE registers, loaded (and checked) at CR3 load;
			 * they have no rights bits and no accessed flag to set. */
			pte = cpu->pdptes[(gva >> 30) & 3];
			res->table_gpa[level] = cpu->root & GENMASK(31, 5);
			res->pte[level] = pte;
			if (!(pte & PTE_P))
				return fault_pf(cpu, res, gva, access, 0);
			table = pte & phys_mask(cpu);
			continue;
		}
		gpa_entry = table + level_index(m, gva, level) * m->entry_size;
		r = mem->read(mem->ctx, gpa_entry, m->entry_size, &pte);
		if (r < 0)
			return r;
		res->table_gpa[level] = table;
		res->pte[level] = pte;

		if (m->ept) {
			if (!(pte & EPTE_RWX))
				return fault_ept(res, gva, access, 0, false);
			leaf = is_leaf(cpu, m, pte, level);
			if (ept_misconfig(cpu, pte, level, leaf))
				return fault_ept(res, gva, access, 0, true);
			eff &= ept_rights(pte);
		} else {
			if (!(pte & PTE_P))
				return fault_pf(cpu, res, gva, access, 0);
			leaf = is_leaf(cpu, m, pte, level);
			if (pte & legacy_rsvd(cpu, pte, level, leaf))
				return fault_pf(cpu, res, gva, access, PFERR_P | PFERR_RSVD);
			eff &= legacy_rights(cpu, pte);
		}
		if (leaf) {
			leaf_level = level;
			break;
		}
		table = entry_addr(cpu, pte, level, false);
	}

	if (m->ept) {
		if (!ept_allows(eff, access))
			return fault_ept(res, gva, access, eff, false);
	} else {
		unsigned int pkey = m->levels >= 4 ? (unsigned int)(pte >> PTE_PKEY_SHIFT) & 15 : 0;
		uint32_t ec = walk_permission_fault(cpu, eff, pkey, access);

		if (ec) {
			res->vector = WALK_VECTOR_PF;
			res->error_code = ec;
			res->fault_addr = gva;
			return WALK_FAULT;
		}
		res->pkey = pkey;
	}

	/*
	 * The access is allowed: set A in every entry used and D in the leaf
	 * for a write (SDM 4.8).  Each update is a compare-and-exchange against
	 * the value the walk used: if another CPU (or the MMU) changed the entry
	 * meanwhile, the translation may no longer hold, so walk again.
	 */
	if (!m->ept || cpu->ept_ad) {
		uint64_t a_bit = m->ept ? EPTE_A : PTE_A;
		uint64_t d_bit = m->ept ? EPTE_D : PTE_D;

		for (level = m->levels; level >= leaf_level; level--) {
			uint64_t old = res->pte[level], new_val = old | a_bit;
			uint64_t gpa_entry;

			if (cpu->mode == WALK_MODE_PAE && level == 3)
				continue;
			if (level == leaf_level && (access & WALK_WRITE))
				new_val |= d_bit;
			if (new_val == old)
				continue;
			gpa_entry = res->table_gpa[level] + level_index(m, gva, level) * m->entry_size;
			r = mem->cmpxchg(mem->ctx, gpa_entry, m->entry_size, old, new_val);
			if (r < 0)
				return r;
			if (r == 0)
				goto restart;
			res->pte[level] = new_val;
		}
	}

	pte = res->pte[leaf_level];
	res->level = leaf_level;
	res->page_size = 1ULL << level_shift(m, leaf_level);
	res->gpa = entry_addr(cpu, pte, leaf_level, true) + (gva & (res->page_size - 1));
	res->access = eff;
	res->global = !m->ept && (pte & PTE_G);
	res->dirty = m->ept ? (!cpu->ept_ad || (pte & EPTE_D)) : !!(pte & PTE_D);
	return WALK_OK;
}
