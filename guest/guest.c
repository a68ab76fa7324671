/* SPDX-License-Identifier: MIT */
/*
 * The guest OS's page-table code: x86 paging structures built in guest
 * memory through the public vmmu API only (see guest.h for the contract).
 *
 * Every operation is a walk over a gva range done twice by one recursive
 * function: a validation pass that only reads (and counts the tables a map
 * needs), then, if nothing is wrong, the same walk writing.  That is how a
 * rejected call leaves the tables unchanged without keeping a shadow copy.
 */
#include "guest.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_SIZE 4096ULL
#define BIT(n) (1ULL << (n))

#define PTE_P GUEST_PTE_P
#define PTE_W GUEST_W
#define PTE_U GUEST_U
#define PTE_PS GUEST_PTE_PS

/* Table/frame address fields: bits 31:12 in 32-bit entries (SDM 4.3), bits
 * 51:12 (at most MAXPHYADDR-1:12) in 64-bit entries (SDM 4.4.2, 4.5.4). */
#define ADDR_MASK_32 0xfffff000ULL
#define ADDR_MASK_64 0x000ffffffffff000ULL
/* 4M page in 32-bit paging: bits 31:22 of the frame in place, bits 39:32 in
 * entry bits 20:13 (PSE-36, SDM 4.3 table 4-4). */
#define PDE4M_ADDR_LO 0xffc00000ULL
#define PDE4M_HI_SHIFT 13
#define PDE4M_HI_MASK 0xffULL

/*
 * PAE: CR3 holds bits 31:5 of the PDPT (SDM 4.4.1), so the PDPT only needs
 * 32-byte alignment.  Put it at the end of its page rather than at offset 0
 * so that anything treating CR3 as page aligned reads the wrong bytes.
 */
#define PAE_PDPT_OFFSET 0xfe0ULL
#define PAE_NR_PDPTES 4

struct mode_info {
	int levels;			/* root level */
	unsigned int entry_size;	/* bytes */
	unsigned int bits_per_level;	/* index bits below the root */
	unsigned int va_bits;		/* translated linear-address bits */
	int max_huge_level;		/* highest level where PS makes a leaf */
	uint64_t addr_limit;		/* table addresses must be below this */
};

static const struct mode_info modes[] = {
	[GUEST_MODE_32] = { 2, 4, 10, 32, 2, BIT(32) },
	[GUEST_MODE_PAE] = { 3, 8, 9, 32, 2, BIT(52) },
	[GUEST_MODE_4LEVEL] = { 4, 8, 9, 48, 3, BIT(52) },
	[GUEST_MODE_5LEVEL] = { 5, 8, 9, 57, 3, BIT(52) },
	/* EPT: guest-physical input addresses of 48 or 57 bits, no halves. */
	[GUEST_MODE_EPT4] = { 4, 8, 9, 48, 3, BIT(52) },
	[GUEST_MODE_EPT5] = { 5, 8, 9, 57, 3, BIT(52) },
};

struct guest_pt {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;		/* writer, or NULL for host-side stores */
	uint64_t l1_offset;		/* an L2's tables: where L1 maps their gpas */
	enum guest_mode mode;
	const struct mode_info *m;
	uint64_t root;			/* top-level table gpa == CR3 */
	/* Pool: pages [0, bump) handed out at least once; freed ones stacked in
	 * free_list (page indexes).  A freed page is all zero (only empty tables
	 * are freed), but is zeroed again on reuse: the vCPU path must write it
	 * as the guest would, and a test may have poked it meanwhile. */
	uint64_t pool_gpa;
	uint64_t pool_pages;
	uint64_t bump;
	uint32_t *free_list;
	uint64_t nr_free;
	uint64_t in_use;
};

/* ---- mode geometry ------------------------------------------------------ */

static inline unsigned int level_shift(const struct mode_info *m, int level)
{
	return 12 + m->bits_per_level * (unsigned int)(level - 1);
}

/* Entries in a table of this level: the root of PAE has 4 (bits 31:30). */
static inline uint64_t level_entries(const struct mode_info *m, int level)
{
	if (level == m->levels)
		return BIT(m->va_bits - level_shift(m, level));
	return BIT(m->bits_per_level);
}

static inline uint64_t level_index(const struct mode_info *m, uint64_t va, int level)
{
	return (va >> level_shift(m, level)) & (level_entries(m, level) - 1);
}

static inline uint64_t va_mask(const struct mode_info *m)
{
	return BIT(m->va_bits) - 1;
}

/* SDM 3.3.7.1: a canonical address has bits 63:N-1 all equal. */
static bool canonical(const struct mode_info *m, uint64_t va)
{
	unsigned int s = 64 - m->va_bits;

	return (uint64_t)((int64_t)(va << s) >> s) == va;
}

static inline bool is_ept(const struct guest_pt *pt)
{
	return pt->mode >= GUEST_MODE_EPT4;
}

/* Present: P, or for EPT any of R/W/X (SDM 29.3.2). */
static inline bool present(const struct guest_pt *pt, uint64_t e)
{
	return e & (is_ept(pt) ? GUEST_EPT_RWX : PTE_P);
}

static bool is_leaf(const struct guest_pt *pt, uint64_t e, int level)
{
	/* Level 1 is always a leaf; PS is reserved in PML4Es/PML5Es and absent
	 * from PAE PDPTEs (SDM 4.4.1, 4.5.4), so it only counts up to max. */
	return level == 1 || (level <= pt->m->max_huge_level && (e & PTE_PS));
}

static uint64_t table_addr(const struct guest_pt *pt, uint64_t e)
{
	return e & (pt->mode == GUEST_MODE_32 ? ADDR_MASK_32 : ADDR_MASK_64);
}

static uint64_t leaf_frame(const struct guest_pt *pt, uint64_t e, int level)
{
	if (pt->mode == GUEST_MODE_32) {
		if (level == 2)
			return (e & PDE4M_ADDR_LO) | (((e >> PDE4M_HI_SHIFT) & PDE4M_HI_MASK) << 32);
		return e & ADDR_MASK_32;
	}
	/* Bits below the page size in a huge leaf are PAT (bit 12) and reserved. */
	return e & ADDR_MASK_64 & ~(BIT(level_shift(pt->m, level)) - 1);
}

static uint64_t make_leaf(const struct guest_pt *pt, int level, uint64_t gpa, uint64_t flags)
{
	uint64_t e = (is_ept(pt) ? 0 : PTE_P) | flags;

	if (level > 1)
		e |= PTE_PS;
	if (pt->mode == GUEST_MODE_32 && level == 2)
		return e | (gpa & PDE4M_ADDR_LO) | (((gpa >> 32) & PDE4M_HI_MASK) << PDE4M_HI_SHIFT);
	return e | gpa;
}

/* Flags of an entry that points to a new table at level - 1. */
static uint64_t link_bits(const struct guest_pt *pt, int level)
{
	/* PAE PDPTEs: bits 2:1 and 63 are reserved (SDM 4.4.1 table 4-8). */
	if (pt->mode == GUEST_MODE_PAE && level == 3)
		return PTE_P;
	if (is_ept(pt))
		return GUEST_EPT_RWX;
	/* Rights are the AND over the levels (SDM 4.6): leave them to the leaf. */
	return PTE_P | PTE_W | PTE_U;
}

/* ---- guest memory ------------------------------------------------------- */

static int gpa_hva(struct guest_pt *pt, uint64_t gpa, void **hva)
{
	if (vmmu_gpa_to_hva(pt->vm, gpa + pt->l1_offset, hva))
		return VMMU_EFAULT;
	return 0;
}

static int read_entry(struct guest_pt *pt, uint64_t gpa, uint64_t *val)
{
	void *hva;
	int r = gpa_hva(pt, gpa, &hva);

	if (r)
		return r;
	/* Acquire: a table linked by another thread is seen zeroed. */
	if (pt->m->entry_size == 4)
		*val = atomic_load_explicit((_Atomic uint32_t *)hva, memory_order_acquire);
	else
		*val = atomic_load_explicit((_Atomic uint64_t *)hva, memory_order_acquire);
	return 0;
}

/* A guest-physical write by the writer vCPU: the guest kernel's own store. */
static int vcpu_write(struct guest_pt *pt, uint64_t gpa, void *buf, size_t len)
{
	struct vmmu_exit ex;
	int r;

	memset(&ex, 0, sizeof(ex));
	r = vmmu_vcpu_access(pt->vcpu, gpa, buf, len, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &ex);
	if (r == VMMU_EXIT)
		return ex.reason == VMMU_EXIT_INTERNAL_ERROR ? VMMU_EIO : VMMU_EFAULT;
	return r;
}

static int write_entry(struct guest_pt *pt, uint64_t gpa, uint64_t val)
{
	void *hva;
	int r;

	if (pt->vcpu) {
		uint32_t v32 = (uint32_t)val;

		if (pt->m->entry_size == 4)
			return vcpu_write(pt, gpa, &v32, 4);
		return vcpu_write(pt, gpa, &val, 8);
	}
	r = gpa_hva(pt, gpa, &hva);
	if (r)
		return r;
	/* Release: a new table's zeroes are visible before the entry linking it. */
	if (pt->m->entry_size == 4)
		atomic_store_explicit((_Atomic uint32_t *)hva, (uint32_t)val, memory_order_release);
	else
		atomic_store_explicit((_Atomic uint64_t *)hva, val, memory_order_release);
	return 0;
}

static int zero_page(struct guest_pt *pt, uint64_t gpa)
{
	/* Only ever read (the source of a write access); never written. */
	static uint8_t zeroes[PAGE_SIZE];
	void *hva;
	int r;

	if (pt->vcpu)
		return vcpu_write(pt, gpa, zeroes, sizeof(zeroes));
	r = gpa_hva(pt, gpa, &hva);
	if (r)
		return r;
	/* Entry-sized atomic stores: the page may be a former table that a
	 * vCPU with a stale translation still reads. */
	if (pt->m->entry_size == 4) {
		for (unsigned int i = 0; i < PAGE_SIZE / 4; i++)
			atomic_store_explicit((_Atomic uint32_t *)hva + i, 0, memory_order_relaxed);
	} else {
		for (unsigned int i = 0; i < PAGE_SIZE / 8; i++)
			atomic_store_explicit((_Atomic uint64_t *)hva + i, 0, memory_order_relaxed);
	}
	return 0;
}

/* Whether every entry of the table page is zero (nothing left to keep). */
static int table_empty(struct guest_pt *pt, uint64_t table, bool *empty)
{
	void *hva;
	int r = gpa_hva(pt, table, &hva);

	if (r)
		return r;
	*empty = true;
	for (unsigned int i = 0; i < PAGE_SIZE / 8; i++) {
		if (atomic_load_explicit((_Atomic uint64_t *)hva + i, memory_order_relaxed)) {
			*empty = false;
			break;
		}
	}
	return 0;
}

/* ---- pool --------------------------------------------------------------- */

static uint64_t pool_avail(const struct guest_pt *pt)
{
	return pt->nr_free + (pt->pool_pages - pt->bump);
}

/* Callers check pool_avail() first (validate, then write).  Gpa 0 is a
 * valid pool page, hence the separate result. */
static bool pool_alloc(struct guest_pt *pt, uint64_t *gpa)
{
	uint64_t idx;

	if (pt->nr_free)
		idx = pt->free_list[--pt->nr_free];
	else if (pt->bump < pt->pool_pages)
		idx = pt->bump++;
	else
		return false;
	pt->in_use++;
	*gpa = pt->pool_gpa + idx * PAGE_SIZE;
	return true;
}

static bool in_pool(const struct guest_pt *pt, uint64_t gpa)
{
	return gpa >= pt->pool_gpa && !(gpa & (PAGE_SIZE - 1)) && (gpa - pt->pool_gpa) / PAGE_SIZE < pt->bump;
}

static void pool_free(struct guest_pt *pt, uint64_t gpa)
{
	/* The bound only matters if a test made two entries share a table. */
	if (!in_pool(pt, gpa) || pt->nr_free >= pt->pool_pages)
		return;
	pt->free_list[pt->nr_free++] = (uint32_t)((gpa - pt->pool_gpa) / PAGE_SIZE);
	pt->in_use--;
}

/* Allocates, zeroes and links a new table under the entry at egpa. */
static int new_table(struct guest_pt *pt, uint64_t egpa, int level, uint64_t *table)
{
	uint64_t page;
	int r;

	if (!pool_alloc(pt, &page))
		return VMMU_ENOMEM;	/* not reached: the pool was checked */
	r = zero_page(pt, page);
	if (!r)
		r = write_entry(pt, egpa, page | link_bits(pt, level));
	if (r) {
		pool_free(pt, page);
		return r;
	}
	*table = page;
	return 0;
}

/* ---- the range walk ----------------------------------------------------- */

enum op_kind { OP_MAP, OP_UNMAP, OP_PROTECT };

struct range_op {
	enum op_kind kind;
	bool write;		/* false: validation pass, reads only */
	int leaf_level;		/* map */
	uint64_t va0, gpa0;	/* map: start of the range (truncated va) */
	uint64_t flags;		/* map, protect */
	uint64_t needed;	/* map validation: new tables */
};

/*
 * Tables a map needs under a non-present entry whose range [a, b] is to be
 * mapped at leaf_level: at each level k from top_level down to leaf_level,
 * one table per distinct level-(k+1) entry the range touches.
 */
static uint64_t fresh_tables(const struct mode_info *m, int top_level, int leaf_level, uint64_t a, uint64_t b)
{
	uint64_t n = 0;

	for (int k = leaf_level; k <= top_level; k++) {
		unsigned int s = level_shift(m, k + 1);

		n += (b >> s) - (a >> s) + 1;
	}
	return n;
}

/*
 * Visits the entries of the table at gpa `table` (level `level`, mapping
 * linear addresses from `base`) that cover [lo, hi] (truncated, inclusive).
 */
static int range_walk(struct guest_pt *pt, struct range_op *op, uint64_t table, int level, uint64_t base,
		      uint64_t lo, uint64_t hi)
{
	const struct mode_info *m = pt->m;
	unsigned int shift = level_shift(m, level);
	uint64_t span = BIT(shift);
	uint64_t first = (lo - base) >> shift, last = (hi - base) >> shift;
	int r;

	for (uint64_t i = first; i <= last; i++) {
		uint64_t ebase = base + (i << shift);
		uint64_t a = lo > ebase ? lo : ebase;
		uint64_t b = hi < ebase + span - 1 ? hi : ebase + span - 1;
		uint64_t egpa = table + i * m->entry_size;
		bool whole = a == ebase && b == ebase + span - 1;
		uint64_t e, child;

		r = read_entry(pt, egpa, &e);
		if (r)
			return r;

		switch (op->kind) {
		case OP_MAP:
			if (level == op->leaf_level) {
				/* A table here means smaller pages are mapped in the range. */
				if (present(pt, e) && !is_leaf(pt, e, level))
					return VMMU_EEXIST;
				if (op->write) {
					uint64_t gpa = op->gpa0 + (ebase - op->va0);

					r = write_entry(pt, egpa, make_leaf(pt, level, gpa, op->flags));
					if (r)
						return r;
				}
				continue;
			}
			if (!present(pt, e)) {
				if (!op->write) {
					op->needed += fresh_tables(m, level - 1, op->leaf_level, a, b);
					continue;
				}
				r = new_table(pt, egpa, level, &child);
				if (r)
					return r;
			} else if (is_leaf(pt, e, level)) {
				return VMMU_EEXIST;	/* a bigger page covers the range */
			} else {
				child = table_addr(pt, e);
			}
			r = range_walk(pt, op, child, level - 1, ebase, a, b);
			if (r)
				return r;
			break;

		case OP_UNMAP:
			if (!present(pt, e))
				continue;
			if (is_leaf(pt, e, level)) {
				if (!whole)
					return VMMU_EINVAL;	/* would need splitting */
				if (op->write) {
					r = write_entry(pt, egpa, 0);
					if (r)
						return r;
				}
				continue;
			}
			child = table_addr(pt, e);
			r = range_walk(pt, op, child, level - 1, ebase, a, b);
			if (r)
				return r;
			/* Give back tables left empty, but never PAE's page
			 * directories: the PDPTE registers cache their addresses. */
			if (op->write && in_pool(pt, child) && !(pt->mode == GUEST_MODE_PAE && level == 3)) {
				bool empty;

				r = table_empty(pt, child, &empty);
				if (r)
					return r;
				if (empty) {
					r = write_entry(pt, egpa, 0);
					if (r)
						return r;
					pool_free(pt, child);
				}
			}
			break;

		case OP_PROTECT:
			if (!present(pt, e))
				return VMMU_ENOENT;
			if (is_leaf(pt, e, level)) {
				if (!whole)
					return VMMU_EINVAL;
				if (op->write) {
					r = write_entry(pt, egpa, (e & ~(is_ept(pt) ? GUEST_EPT_FLAGS_MASK
										     : GUEST_FLAGS_MASK)) | op->flags);
					if (r)
						return r;
				}
				continue;
			}
			r = range_walk(pt, op, table_addr(pt, e), level - 1, ebase, a, b);
			if (r)
				return r;
			break;
		}
	}
	return 0;
}

/* Validation pass, then (only if it passed) the writing pass. */
static int range_op_run(struct guest_pt *pt, struct range_op *op, uint64_t lo, uint64_t hi)
{
	int r;

	op->write = false;
	op->needed = 0;
	r = range_walk(pt, op, pt->root, pt->m->levels, 0, lo, hi);
	if (r)
		return r;
	if (op->kind == OP_MAP && op->needed > pool_avail(pt))
		return VMMU_ENOMEM;
	op->write = true;
	return range_walk(pt, op, pt->root, pt->m->levels, 0, lo, hi);
}

/* ---- argument checks ---------------------------------------------------- */

/*
 * [gva, gva + size) aligned to align and inside the linear-address space;
 * on success [*lo, *hi] is the range with the sign extension stripped.
 */
static int check_va_range(const struct guest_pt *pt, uint64_t gva, uint64_t size, uint64_t align, uint64_t *lo,
			  uint64_t *hi)
{
	const struct mode_info *m = pt->m;
	uint64_t last = gva + size - 1;

	if (!size || ((gva | size) & (align - 1)))
		return VMMU_EINVAL;
	if (last < gva)
		return VMMU_ERANGE;
	if (m->va_bits == 32 || is_ept(pt)) {
		if (last >> m->va_bits)
			return VMMU_ERANGE;
	} else {
		/* Both ends canonical and in the same half: so is everything
		 * in between (the non-canonical hole lies between the halves). */
		if (!canonical(m, gva) || !canonical(m, last) || ((gva ^ last) >> 63))
			return VMMU_ERANGE;
	}
	*lo = gva & va_mask(m);
	*hi = last & va_mask(m);
	return 0;
}

static int check_flags(const struct guest_pt *pt, uint64_t flags)
{
	/* An EPT leaf maps something only with R or X (SDM 29.3.2). */
	if (is_ept(pt))
		return (flags & ~GUEST_EPT_FLAGS_MASK) || !(flags & (GUEST_EPT_R | GUEST_EPT_X)) ? VMMU_EINVAL : 0;
	if (flags & ~GUEST_FLAGS_MASK)
		return VMMU_EINVAL;
	/* 32-bit entries have no bits 63:32 (no XD, SDM 4.3); protection keys
	 * exist only with 4/5-level paging (SDM 4.6.2), bits 62:59 being
	 * reserved in PAE entries (SDM 4.4.2). */
	if (pt->mode == GUEST_MODE_32 && (flags & (GUEST_NX | GUEST_PKEY_MASK)))
		return VMMU_EINVAL;
	if (pt->mode == GUEST_MODE_PAE && (flags & GUEST_PKEY_MASK))
		return VMMU_EINVAL;
	return 0;
}

static int page_size_level(const struct guest_pt *pt, uint64_t page_size)
{
	if (page_size == GUEST_PAGE_4K)
		return 1;
	if (pt->mode == GUEST_MODE_32)
		return page_size == GUEST_PAGE_4M ? 2 : 0;
	if (page_size == GUEST_PAGE_2M)
		return 2;
	if (page_size == GUEST_PAGE_1G && pt->m->max_huge_level >= 3)
		return 3;
	return 0;
}

/* The frame address field's width for a leaf of this level. */
static uint64_t gpa_limit(const struct guest_pt *pt, int level)
{
	if (pt->mode == GUEST_MODE_32)
		return level == 2 ? BIT(40) : BIT(32);
	return BIT(52);
}

/* ---- public API --------------------------------------------------------- */

int guest_pt_create(vmmu_vm *vm, enum guest_mode mode, uint64_t pool_gpa, uint64_t pool_size,
		    struct guest_pt **out)
{
	return guest_pt_create_nested(vm, mode, pool_gpa, pool_size, 0, out);
}

int guest_pt_create_nested(vmmu_vm *vm, enum guest_mode mode, uint64_t pool_gpa, uint64_t pool_size,
			   uint64_t l1_offset, struct guest_pt **out)
{
	const struct mode_info *m;
	struct guest_pt *pt;
	uint64_t page, pages, need;
	int r;

	if (!vm || !out)
		return VMMU_EINVAL;
	if ((unsigned int)mode > GUEST_MODE_EPT5)
		return VMMU_EINVAL;
	m = &modes[mode];
	if (!pool_size || ((pool_gpa | pool_size) & (PAGE_SIZE - 1)) || pool_gpa + pool_size < pool_gpa)
		return VMMU_EINVAL;
	pages = pool_size / PAGE_SIZE;
	if (pages > UINT32_MAX)
		return VMMU_ERANGE;	/* page indexes are 32-bit */
	/* Tables must be addressable by the entries pointing to them; the PAE
	 * root by CR3's 32 bits (SDM 4.4.1). */
	if (pool_gpa + pool_size > m->addr_limit)
		return VMMU_ERANGE;
	if (mode == GUEST_MODE_PAE && pool_gpa + PAGE_SIZE > BIT(32))
		return VMMU_ERANGE;
	need = mode == GUEST_MODE_PAE ? 1 + PAE_NR_PDPTES : 1;
	if (pages < need)
		return VMMU_ENOMEM;
	for (page = 0; page < pages; page++) {
		void *hva;

		if (vmmu_gpa_to_hva(vm, pool_gpa + l1_offset + page * PAGE_SIZE, &hva))
			return VMMU_ENOENT;
	}

	pt = calloc(1, sizeof(*pt));
	if (!pt)
		return VMMU_ENOMEM;
	/* Free entries never outnumber pages handed out: sized once, so that
	 * unmap can never fail for lack of host memory. */
	pt->free_list = calloc(pages, sizeof(*pt->free_list));
	if (!pt->free_list) {
		free(pt);
		return VMMU_ENOMEM;
	}
	pt->vm = vm;
	pt->l1_offset = l1_offset;
	pt->mode = mode;
	pt->m = m;
	pt->pool_gpa = pool_gpa;
	pt->pool_pages = pages;

	pool_alloc(pt, &page);	/* cannot fail: pages >= need */
	r = zero_page(pt, page);
	if (r)
		goto fail;
	pt->root = page;
	if (mode == GUEST_MODE_PAE) {
		pt->root = page + PAE_PDPT_OFFSET;
		for (unsigned int i = 0; i < PAE_NR_PDPTES; i++) {
			uint64_t pd;

			r = new_table(pt, pt->root + i * 8, 3, &pd);
			if (r)
				goto fail;
		}
	}
	*out = pt;
	return 0;
fail:
	guest_pt_destroy(pt);
	return r;
}

void guest_pt_destroy(struct guest_pt *pt)
{
	if (!pt)
		return;
	free(pt->free_list);
	free(pt);
}

void guest_pt_set_vcpu(struct guest_pt *pt, vmmu_vcpu *v)
{
	if (pt)
		pt->vcpu = v;
}

enum guest_mode guest_pt_mode(const struct guest_pt *pt)
{
	return pt ? pt->mode : GUEST_MODE_32;
}

uint64_t guest_pt_cr3(const struct guest_pt *pt)
{
	return pt ? pt->root : 0;
}

uint64_t guest_pt_eptp(const struct guest_pt *pt, int ad)
{
	if (!pt || !is_ept(pt))
		return 0;
	/* SDM Vol. 3C 25.6.11: memory type 6 (WB), walk length - 1 in 5:3. */
	return pt->root | 6 | ((uint64_t)(pt->m->levels - 1) << 3) | (ad ? BIT(6) : 0);
}

void guest_pt_state(const struct guest_pt *pt, struct vmmu_cpu_state *s, uint32_t cpl)
{
	if (!pt || !s)
		return;
	memset(s, 0, sizeof(*s));
	/* WP: supervisor writes honour R/W, as every modern kernel runs. */
	s->cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
	s->cr3 = pt->root;
	s->cpl = cpl;
	switch (pt->mode) {
	case GUEST_MODE_32:
		s->cr4 = VMMU_CR4_PSE;	/* for the 4M pages guest_map() can build */
		break;
	case GUEST_MODE_PAE:
		s->cr4 = VMMU_CR4_PAE;
		s->efer = VMMU_EFER_NXE;	/* XD in PAE needs NXE (SDM 4.4.2) */
		break;
	case GUEST_MODE_4LEVEL:
		s->cr4 = VMMU_CR4_PAE;
		s->efer = VMMU_EFER_LME | VMMU_EFER_NXE;
		break;
	case GUEST_MODE_5LEVEL:
		s->cr4 = VMMU_CR4_PAE | VMMU_CR4_LA57;
		s->efer = VMMU_EFER_LME | VMMU_EFER_NXE;
		break;
	default:	/* EPT: not a CPU paging mode */
		memset(s, 0, sizeof(*s));
		break;
	}
}

int guest_map(struct guest_pt *pt, uint64_t gva, uint64_t gpa, uint64_t size, uint64_t page_size, uint64_t flags)
{
	struct range_op op;
	uint64_t lo, hi;
	int level, r;

	if (!pt)
		return VMMU_EINVAL;
	level = page_size_level(pt, page_size);
	if (!level)
		return VMMU_EINVAL;
	r = check_flags(pt, flags);
	if (r)
		return r;
	if (gpa & (page_size - 1))
		return VMMU_EINVAL;
	r = check_va_range(pt, gva, size, page_size, &lo, &hi);
	if (r)
		return r;
	if (gpa + size - 1 < gpa || gpa + size - 1 >= gpa_limit(pt, level))
		return VMMU_ERANGE;

	memset(&op, 0, sizeof(op));
	op.kind = OP_MAP;
	op.leaf_level = level;
	op.va0 = lo;
	op.gpa0 = gpa;
	op.flags = flags;
	return range_op_run(pt, &op, lo, hi);
}

int guest_unmap(struct guest_pt *pt, uint64_t gva, uint64_t size)
{
	struct range_op op;
	uint64_t lo, hi;
	int r;

	if (!pt)
		return VMMU_EINVAL;
	r = check_va_range(pt, gva, size, PAGE_SIZE, &lo, &hi);
	if (r)
		return r;
	memset(&op, 0, sizeof(op));
	op.kind = OP_UNMAP;
	return range_op_run(pt, &op, lo, hi);
}

int guest_protect(struct guest_pt *pt, uint64_t gva, uint64_t size, uint64_t flags)
{
	struct range_op op;
	uint64_t lo, hi;
	int r;

	if (!pt)
		return VMMU_EINVAL;
	r = check_flags(pt, flags);
	if (r)
		return r;
	r = check_va_range(pt, gva, size, PAGE_SIZE, &lo, &hi);
	if (r)
		return r;
	memset(&op, 0, sizeof(op));
	op.kind = OP_PROTECT;
	op.flags = flags;
	return range_op_run(pt, &op, lo, hi);
}

/* A gva usable for a lookup: the truncated form in *va. */
static int check_va(const struct guest_pt *pt, uint64_t gva, uint64_t *va)
{
	if (pt->m->va_bits == 32 || is_ept(pt) ? (gva >> pt->m->va_bits) != 0 : !canonical(pt->m, gva))
		return VMMU_ERANGE;
	*va = gva & va_mask(pt->m);
	return 0;
}

int guest_lookup(struct guest_pt *pt, uint64_t gva, uint64_t *gpa, uint64_t *page_size, uint64_t *leaf_entry,
		 uint64_t *leaf_entry_gpa)
{
	uint64_t va, table, egpa, e;
	int level, r;

	if (!pt)
		return VMMU_EINVAL;
	r = check_va(pt, gva, &va);
	if (r)
		return r;
	table = pt->root;
	for (level = pt->m->levels; level >= 1; level--) {
		egpa = table + level_index(pt->m, va, level) * pt->m->entry_size;
		r = read_entry(pt, egpa, &e);
		if (r)
			return r;
		if (!present(pt, e))
			return VMMU_ENOENT;
		if (is_leaf(pt, e, level)) {
			uint64_t ps = BIT(level_shift(pt->m, level));

			if (gpa)
				*gpa = leaf_frame(pt, e, level) + (va & (ps - 1));
			if (page_size)
				*page_size = ps;
			if (leaf_entry)
				*leaf_entry = e;
			if (leaf_entry_gpa)
				*leaf_entry_gpa = egpa;
			return 0;
		}
		table = table_addr(pt, e);
	}
	return VMMU_EIO;	/* not reached: level 1 is always a leaf */
}

/* The gpa of gva's entry at `level`, through present non-leaf entries. */
static int entry_at(struct guest_pt *pt, uint64_t gva, int level, uint64_t *egpa)
{
	uint64_t va, table, e;
	int l, r;

	if (!pt || level < 1 || level > pt->m->levels)
		return VMMU_EINVAL;
	r = check_va(pt, gva, &va);
	if (r)
		return r;
	table = pt->root;
	for (l = pt->m->levels; l > level; l--) {
		r = read_entry(pt, table + level_index(pt->m, va, l) * pt->m->entry_size, &e);
		if (r)
			return r;
		if (!present(pt, e) || is_leaf(pt, e, l))
			return VMMU_ENOENT;
		table = table_addr(pt, e);
	}
	*egpa = table + level_index(pt->m, va, level) * pt->m->entry_size;
	return 0;
}

int guest_set_entry(struct guest_pt *pt, uint64_t gva, int level, uint64_t value)
{
	uint64_t egpa;
	int r;

	if (pt && pt->m->entry_size == 4 && (value >> 32))
		return VMMU_EINVAL;
	r = entry_at(pt, gva, level, &egpa);
	if (r)
		return r;
	return write_entry(pt, egpa, value);
}

int guest_get_entry(struct guest_pt *pt, uint64_t gva, int level, uint64_t *value, uint64_t *entry_gpa)
{
	uint64_t egpa;
	int r;

	if (!value)
		return VMMU_EINVAL;
	r = entry_at(pt, gva, level, &egpa);
	if (r)
		return r;
	r = read_entry(pt, egpa, value);
	if (!r && entry_gpa)
		*entry_gpa = egpa;
	return r;
}

void guest_pt_pool_usage(const struct guest_pt *pt, uint64_t *pages_used, uint64_t *pages_free)
{
	if (pages_used)
		*pages_used = pt ? pt->in_use : 0;
	if (pages_free)
		*pages_free = pt ? pool_avail(pt) : 0;
}
