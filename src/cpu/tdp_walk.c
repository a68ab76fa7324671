/* SPDX-License-Identifier: MIT */
/*
 * The CPU's walk of EPT/NPT tables (SDM Vol. 3C 29.3, APM 15.25): rights
 * ANDed over the levels, A/D set by cmpxchg where the CPU sets them, the PML
 * log, and the exits (EPT violation/misconfiguration, #NPF) it raises.
 */
#include "cpu/hw.h"

static void fill_exit(const struct spte_fmt *f, struct hw_exit *e, enum hw_exit_kind kind, uint64_t gpa,
		      unsigned int acc, unsigned int eff, int level)
{
	e->kind = kind;
	e->gpa = gpa;
	e->level = level;
	e->access = acc & (ACC_WRITE | ACC_EXEC);
	if (f->ept) {
		uint64_t q = 0;

		if (acc & ACC_WRITE)
			q |= EPT_VIOLATION_ACC_WRITE;
		else if (acc & ACC_EXEC)
			q |= EPT_VIOLATION_ACC_INSTR;
		else
			q |= EPT_VIOLATION_ACC_READ;
		/* Bits 3-5: R/W/X ANDed over every entry used by the walk. */
		if (eff & TLB_READ)
			q |= EPT_VIOLATION_READABLE;
		if (eff & ACC_WRITE)
			q |= EPT_VIOLATION_WRITABLE;
		if (eff & ACC_EXEC)
			q |= EPT_VIOLATION_EXECUTABLE;
		e->qualification = kind == HW_EXIT_EPT_VIOLATION ? q : 0;
	} else {
		/* #NPF error code (APM 15.25.6): a page-fault error code (SDM 4.7 bits). */
		uint64_t ec = PFERR_U;

		if (eff)
			ec |= PFERR_P;
		if (acc & ACC_WRITE)
			ec |= PFERR_W;
		if (acc & ACC_EXEC)
			ec |= PFERR_ID;
		if (kind == HW_EXIT_EPT_MISCONFIG)
			ec |= PFERR_RSVD | PFERR_P;
		e->qualification = ec;
	}
}

__hot uint32_t hw_exit_to_error_code(const struct vmmu_vm *vm, const struct hw_exit *e)
{
	uint32_t ec = 0;

	if (!vm->fmt.ept)
		return (uint32_t)e->qualification;
	/* The access type as well, as an NPT #NPF carries it (see hw_exit.access). */
	if (e->kind == HW_EXIT_EPT_MISCONFIG)
		return PFERR_RSVD | PFERR_P | ((e->access & ACC_WRITE) ? PFERR_W : 0) |
		       ((e->access & ACC_EXEC) ? PFERR_ID : 0);
	/* Seed 002 patch 3: the write bit, and "present" from the RWX bits. */
	if (e->qualification & EPT_VIOLATION_ACC_WRITE)
		ec |= PFERR_W;
	if (e->qualification & EPT_VIOLATION_ACC_INSTR)
		ec |= PFERR_ID;
	if (e->qualification & (7u << EPT_VIOLATION_RWX_SHIFT))
		ec |= PFERR_P;
	return ec;
}

static inline bool set_bits_atomic(uint64_t *sptep, uint64_t old, uint64_t bits)
{
	/* cmpxchg, not OR: the entry may have been zapped since it was read,
	 * and A/D must never land in a non-present entry. */
	return atomic_compare_exchange_strong_explicit((_Atomic uint64_t *)sptep, &old, old | bits,
						       memory_order_acq_rel, memory_order_relaxed);
}

__hot bool hw_walk(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva, uintptr_t *val,
	     struct hw_exit *e)
{
	struct vmmu_vm *vm = v->vm;
	const struct spte_fmt *f = &vm->fmt;
	struct tlb *tlb = v->tlb;
	/*
	 * Private VMs: a gpa without the shared bit walks the security
	 * module's table, one with it the shared root, indexed without the
	 * bit (vmmu keys the shared root by the unaliased gfn; docs/mmu.md
	 * 13.1).  The TLB and the paging-structure caches are keyed by the
	 * full gpa, so the two aliases of a gfn never share an entry.  The
	 * module's entries carry A and D already: nothing is set there.
	 */
	bool priv = vm_gpa_is_private(vm, gpa);
	const struct hw_root *hr = priv ? &v->hw_priv : &v->hw;
	uint64_t gfn = gpa >> 12, tgfn = (gpa & ~vm->shared_mask) >> 12;
	bool ad = f->ad_enabled && !priv;
	unsigned int eff;
	uint64_t *table;
	uint64_t spte;
	int level;
	struct psc_entry *p2, *p3;

restart:
	level = hr->level;
	table = hr->table;
	eff = HW_ALL;
	p2 = psc2_entry(tlb, gpa);
	p3 = psc3_entry(tlb, gpa);
	if (p2->gen == tlb->gen && p2->tag == gpa >> 21) {
		table = p2->table;
		eff = p2->access;
		level = PG_LEVEL_4K;
	} else if (p3->gen == tlb->gen && p3->tag == gpa >> 30) {
		table = p3->table;
		eff = p3->access;
		level = PG_LEVEL_2M;
	}

	for (;;) {
		uint64_t *sptep = &table[spte_index(tgfn, level)];

		spte = atomic_load_explicit((_Atomic uint64_t *)sptep, memory_order_acquire);
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
				/*
				 * PML (SDM 29.3.6): the gpa is logged when D goes
				 * from 0 to 1, and with no room left the access
				 * exits before D is set, so that "D set" always
				 * implies "logged".
				 */
				if (unlikely(bits & f->dirty) && v->pml.size && v->pml.n == v->pml.size) {
					e->kind = HW_EXIT_PML_FULL;
					e->gpa = gpa;
					e->qualification = 0;
					e->level = level;
					e->access = acc & (ACC_WRITE | ACC_EXEC);
					return false;
				}
				if (bits && !set_bits_atomic(sptep, spte, bits))
					goto restart;
				/* Only after the cmpxchg won: a lost one set nothing. */
				if (unlikely(bits & f->dirty) && v->pml.size) {
					v->pml.gfn[v->pml.n++] = tgfn;
					STAT_INC(v->stat.pml_entries);
				}
				spte |= bits;
			}
			break;
		}
		if (ad && !(spte & f->accessed) && !set_bits_atomic(sptep, spte, f->accessed))
			goto restart;
		table = (uint64_t *)(uintptr_t)(spte_to_pfn(spte) << 12);
		if (level <= PG_LEVEL_1G) {
			/* Cache the table below: the next miss nearby starts there. */
			struct psc_entry *p = level == PG_LEVEL_2M ? p2 : p3;

			p->tag = gpa >> spte_level_shift(level);
			p->gen = tlb->gen;
			p->table = table;
			p->access = eff;
		}
		level--;
	}

	/* Without A/D, W itself is the dirty state (the MMU write-protects to track). */
	*hva = tlb_fill_phys(v, gfn,
			     (uintptr_t)(spte_to_pfn(spte) << 12) +
				     (gpa & ((1ULL << spte_level_shift(level)) - 1) & ~0xfffULL),
			     eff, ad ? !!(spte & f->dirty) : !!(eff & ACC_WRITE), val) +
	       (gpa & 0xfff);
	return true;
}
