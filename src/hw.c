/* SPDX-License-Identifier: MIT */
#include "hw.h"

#include "mmu.h"
#include "tdp/tdp_iter.h"
#include "tdp/tdp_mmu.h"

/* Walk permissions: ACC_* plus readability, which only EPT can take away. */
#define HW_READ 8u
#define HW_ALL (ACC_ALL | HW_READ)

void hw_tlb_flush(struct vmmu_vcpu *v)
{
	/* Entries and paging-structure caches carry the generation they were
	 * filled in; bumping it drops them all at once. */
	v->tlb.gen++;
}

static inline unsigned int entry_perms(const struct spte_fmt *f, uint64_t spte)
{
	unsigned int p = 0;

	if (f->ept) {
		if (spte & EPT_R)
			p |= HW_READ;
		if (spte & EPT_W)
			p |= ACC_WRITE;
		if (spte & EPT_X)
			p |= ACC_EXEC;
		p |= ACC_USER;	/* EPT has no user/supervisor distinction */
	} else {
		p |= HW_READ;
		if (spte & PT_W)
			p |= ACC_WRITE;
		if (spte & PT_U)
			p |= ACC_USER;
		if (!(spte & PT_NX))
			p |= ACC_EXEC;
	}
	return p;
}

static inline bool perms_allow(const struct spte_fmt *f, unsigned int eff, unsigned int acc)
{
	if (!(eff & HW_READ))
		return (acc & ACC_EXEC) && (eff & ACC_EXEC);	/* EPT execute-only */
	if ((acc & ACC_WRITE) && !(eff & ACC_WRITE))
		return false;
	if ((acc & ACC_EXEC) && !(eff & ACC_EXEC))
		return false;
	/* Every NPT access is a user access (APM 15.25.5). */
	if (!f->ept && !(eff & ACC_USER))
		return false;
	return true;
}

/*
 * The common TLB miss: the leaf table is in the paging-structure cache and
 * the leaf already allows the access with A (and, for writes, D) set, so the
 * walk is one load and no locked operation.  Anything else takes the full
 * walk, which decides exits and A/D updates exactly.
 */
static inline bool leaf_fast_ok(const struct spte_fmt *f, uint64_t spte, unsigned int acc)
{
	uint64_t need, bad = SPTE_HOST_RSVD_MASK;

	if (f->ept) {
		/* Readable, write-back memory type (6: bits 4-5 set, bit 3 clear). */
		need = EPT_R | EPT_MT_WB;
		bad |= 1ULL << EPT_MT_SHIFT;
		if (acc & ACC_WRITE)
			need |= EPT_W;
		if (acc & ACC_EXEC)
			need |= EPT_X;
	} else {
		need = PT_P | PT_U;
		if (acc & ACC_WRITE)
			need |= PT_W;
		if (acc & ACC_EXEC)
			bad |= PT_NX;
	}
	if (f->ad_enabled) {
		need |= f->accessed;
		if (acc & ACC_WRITE)
			need |= f->dirty;
	}
	return (spte & (need | bad)) == need;
}

static void fill_exit(const struct spte_fmt *f, struct hw_exit *e, enum hw_exit_kind kind, uint64_t gpa,
		      unsigned int acc, unsigned int eff, int level)
{
	e->kind = kind;
	e->gpa = gpa;
	e->level = level;
	if (f->ept) {
		uint64_t q = 0;

		if (acc & ACC_WRITE)
			q |= EPT_VIOLATION_ACC_WRITE;
		else if (acc & ACC_EXEC)
			q |= EPT_VIOLATION_ACC_INSTR;
		else
			q |= EPT_VIOLATION_ACC_READ;
		/* Bits 3-5: R/W/X ANDed over every entry used by the walk. */
		if (eff & HW_READ)
			q |= EPT_VIOLATION_READABLE;
		if (eff & ACC_WRITE)
			q |= EPT_VIOLATION_WRITABLE;
		if (eff & ACC_EXEC)
			q |= EPT_VIOLATION_EXECUTABLE;
		e->qualification = kind == HW_EXIT_EPT_VIOLATION ? q : 0;
	} else {
		/* #NPF error code (APM 15.25.6): a page-fault error code. */
		uint64_t ec = PFERR_USER_MASK;

		if (eff)
			ec |= PFERR_PRESENT_MASK;
		if (acc & ACC_WRITE)
			ec |= PFERR_WRITE_MASK;
		if (acc & ACC_EXEC)
			ec |= PFERR_FETCH_MASK;
		if (kind == HW_EXIT_EPT_MISCONFIG)
			ec |= PFERR_RSVD_MASK | PFERR_PRESENT_MASK;
		e->qualification = ec;
	}
}

uint32_t hw_exit_to_error_code(const struct vmmu_vm *vm, const struct hw_exit *e)
{
	uint32_t ec = 0;

	if (!vm->fmt.ept)
		return (uint32_t)e->qualification;
	if (e->kind == HW_EXIT_EPT_MISCONFIG)
		return PFERR_RSVD_MASK | PFERR_PRESENT_MASK;
	/* Seed 002 patch 3: the write bit, and "present" from the RWX bits. */
	if (e->qualification & EPT_VIOLATION_ACC_WRITE)
		ec |= PFERR_WRITE_MASK;
	if (e->qualification & EPT_VIOLATION_ACC_INSTR)
		ec |= PFERR_FETCH_MASK;
	if (e->qualification & (7u << EPT_VIOLATION_RWX_SHIFT))
		ec |= PFERR_PRESENT_MASK;
	return ec;
}

static inline bool set_bits_atomic(uint64_t *sptep, uint64_t old, uint64_t bits)
{
	/* cmpxchg, not OR: the entry may have been zapped since it was read,
	 * and A/D must never land in a non-present entry. */
	return atomic_compare_exchange_strong_explicit((_Atomic uint64_t *)sptep, &old, old | bits,
						       memory_order_acq_rel, memory_order_relaxed);
}

bool hw_walk(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva, struct hw_exit *e)
{
	struct vmmu_vm *vm = v->vm;
	const struct spte_fmt *f = &vm->fmt;
	struct tlb *tlb = &v->tlb;
	uint64_t gfn = gpa >> 12;
	bool ad = f->ad_enabled;
	struct tlb_entry *te;
	unsigned int eff;
	uint64_t *table;
	uint64_t spte;
	int level;

	if (tlb->psc[PG_LEVEL_2M].gen == tlb->gen && tlb->psc[PG_LEVEL_2M].tag == gpa >> 21) {
		spte = tdp_read_spte(&tlb->psc[PG_LEVEL_2M].table[gfn & (PT64_ENT_PER_PAGE - 1)]);
		eff = tlb->psc[PG_LEVEL_2M].access & entry_perms(f, spte);
		if (likely(leaf_fast_ok(f, spte, acc) && perms_allow(f, eff, acc))) {
			level = PG_LEVEL_4K;
			goto fill;
		}
	}
restart:
	level = v->root->level;
	table = v->root->pt->spt;
	eff = HW_ALL;
	if (tlb->psc[PG_LEVEL_2M].gen == tlb->gen && tlb->psc[PG_LEVEL_2M].tag == gpa >> 21) {
		table = tlb->psc[PG_LEVEL_2M].table;
		eff = tlb->psc[PG_LEVEL_2M].access;
		level = PG_LEVEL_4K;
	} else if (tlb->psc[PG_LEVEL_1G].gen == tlb->gen && tlb->psc[PG_LEVEL_1G].tag == gpa >> 30) {
		table = tlb->psc[PG_LEVEL_1G].table;
		eff = tlb->psc[PG_LEVEL_1G].access;
		level = PG_LEVEL_2M;
	}

	for (;;) {
		uint64_t *sptep = &table[spte_index(gfn, level)];

		spte = tdp_read_spte(sptep);
		if (!spte_is_hw_present(f, spte)) {
			fill_exit(f, e, HW_EXIT_EPT_VIOLATION, gpa, acc, 0, level);
			return false;
		}
		if (spte_is_hw_reserved(f, spte, level)) {
			fill_exit(f, e, HW_EXIT_EPT_MISCONFIG, gpa, acc, eff, level);
			return false;
		}
		eff &= entry_perms(f, spte);
		if (is_last_spte(f, spte, level)) {
			uint64_t bits = 0;

			if (!perms_allow(f, eff, acc)) {
				fill_exit(f, e, HW_EXIT_EPT_VIOLATION, gpa, acc, eff, level);
				return false;
			}
			if (ad) {
				if (!(spte & f->accessed))
					bits |= f->accessed;
				if ((acc & ACC_WRITE) && !(spte & f->dirty))
					bits |= f->dirty;
				if (bits && !set_bits_atomic(sptep, spte, bits))
					goto restart;
				spte |= bits;
			}
			break;
		}
		if (ad && !(spte & f->accessed) && !set_bits_atomic(sptep, spte, f->accessed))
			goto restart;
		table = spte_to_child_pt(spte);
		if (level <= PG_LEVEL_1G) {
			/* Cache the table below: the next miss nearby starts there. */
			struct psc_entry *p = &tlb->psc[level];

			p->tag = gpa >> spte_level_shift(level);
			p->gen = tlb->gen;
			p->table = table;
			p->access = eff;
		}
		level--;
	}

fill:
	te = &tlb->e[gfn & (TLB_ENTRIES - 1)];
	te->tag = gfn;
	te->gen = tlb->gen;
	te->hva_page = (uintptr_t)(spte_to_pfn(spte) << 12) +
		       (gpa & ((1ULL << spte_level_shift(level)) - 1) & ~0xfffULL);
	te->access = (uint8_t)eff;
	/* Without A/D, W itself is the dirty state (the MMU write-protects to track). */
	te->dirty = ad ? !!(spte & f->dirty) : !!(eff & ACC_WRITE);
	*hva = te->hva_page + (gpa & 0xfff);
	return true;
}
