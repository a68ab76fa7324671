/* SPDX-License-Identifier: MIT */
/*
 * vCPU architectural state: validation (what would #GP on real hardware is
 * refused with VMMU_EINVAL and changes nothing), the walk role derived from
 * it (KVM's cpu_role), PAE PDPTE loading, and the TLB consequences of each
 * change (SDM 4.10.4.1).
 */
#include <string.h>

#include "cpu/hw.h"
#include "vm/vmmu_int.h"
#include "vm/vcpu.h"
#include "mmu/nested.h"

#define CR0_KNOWN                                                                                  \
	(VMMU_CR0_PE | (1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) |        \
	 VMMU_CR0_WP | (1ULL << 18) | (1ULL << 29) | (1ULL << 30) | VMMU_CR0_PG)
#define CR0_NW (1ULL << 29)
#define CR0_CD (1ULL << 30)
/* VME..SMXE (0-14), FSGSBASE, PCIDE, OSXSAVE (16-18), SMEP, SMAP, PKE (20-22). */
#define CR4_KNOWN (0x7fffULL | (7ULL << 16) | (7ULL << 20))
#define EFER_KNOWN ((1ULL << 0) | VMMU_EFER_LME | VMMU_EFER_LMA | VMMU_EFER_NXE | (0xfULL << 12))
/* PAE PDPTE reserved bits besides those above MAXPHYADDR (SDM 4.4.1). */
#define PDPTE_RSVD_LOW ((0xfULL << 5) | (3ULL << 1))
#define PDPTE_P 1ULL

/*
 * A read the CPU makes of guest-physical memory (the PDPTEs).  For L2
 * (l2_tables, L1's EPT/NPT) the address is L2's, translated through L1's
 * tables first as the hardware would (nested_mmu).  VMMU_EINVAL outside RAM
 * (the load #GPs), VMMU_EFAULT for host memory declared gone.
 */
static int read_guest_u64(struct vmmu_vcpu *v, const struct walk_cpu *l2_tables, uint64_t gpa, uint64_t *val)
{
	struct vmmu_vm *vm = v->vm;
	const struct memslot *s;
	int r = VMMU_EINVAL;

	if (l2_tables && nested_translate(v, l2_tables, gpa, &gpa))
		return VMMU_EINVAL;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	if (s && !(s->flags & MEMSLOT_INVALID)) {
		uintptr_t hva = memslot_gfn_to_hva(s, gpa >> 12) + (gpa & 0xfff);

		/* Host memory declared gone may be unmapped: never read. */
		if (!host_readable(vm, hva)) {
			r = VMMU_EFAULT;
		} else {
			*val = __atomic_load_n((uint64_t *)hva, __ATOMIC_ACQUIRE);
			r = 0;
		}
	}
	vmmu_rcu_read_unlock();
	return r;
}

static enum walk_mode paging_mode(const struct vmmu_cpu_state *s)
{
	if (!(s->cr0 & VMMU_CR0_PG))
		return WALK_MODE_NONE;
	if (!(s->cr4 & VMMU_CR4_PAE))
		return WALK_MODE_32;
	if (!(s->efer & VMMU_EFER_LMA))
		return WALK_MODE_PAE;
	return (s->cr4 & VMMU_CR4_LA57) ? WALK_MODE_5LEVEL : WALK_MODE_4LEVEL;
}

/*
 * Check `in` as a transition from `cur` and build the resulting state and
 * walk role.  Nothing is changed here.
 */
int vcpu_derive_state(struct vmmu_vcpu *v, const struct vmmu_cpu_state *cur, const struct vmmu_cpu_state *in,
		      bool mov_cr3, struct vmmu_cpu_state *out, struct walk_cpu *w, const struct walk_cpu *l2_tables)
{
	unsigned int maxphyaddr = v->vm->cfg.maxphyaddr;
	bool cur_lma = cur->efer & VMMU_EFER_LMA;
	struct vmmu_cpu_state s = *in;
	bool lma;
	int r = vmmu_abi_check(in, in->struct_size, sizeof(*in));

	if (r)
		return r;
	if (in->pad)
		return VMMU_EINVAL;
	/* What get_state reports: this layout. */
	s.struct_size = sizeof(s);
	if (s.cpl > 3 || (s.cr0 & ~CR0_KNOWN) || (s.cr4 & ~CR4_KNOWN) || (s.efer & ~EFER_KNOWN))
		return VMMU_EINVAL;
	/* SDM 2.5 / MOV to CR0: PG needs PE; NW without CD is invalid. */
	if ((s.cr0 & VMMU_CR0_PG) && !(s.cr0 & VMMU_CR0_PE))
		return VMMU_EINVAL;
	if ((s.cr0 & CR0_NW) && !(s.cr0 & CR0_CD))
		return VMMU_EINVAL;
	/* LMA is derived, never set by software (SDM 9.8.5). */
	lma = (s.efer & VMMU_EFER_LME) && (s.cr0 & VMMU_CR0_PG);
	s.efer = (s.efer & ~VMMU_EFER_LMA) | (lma ? VMMU_EFER_LMA : 0);
	/* Long mode requires PAE; it cannot be left or entered without
	 * turning paging off first, and LA57 cannot change inside it. */
	if (lma && !(s.cr4 & VMMU_CR4_PAE))
		return VMMU_EINVAL;
	if ((cur->cr0 & VMMU_CR0_PG) && (s.cr0 & VMMU_CR0_PG) &&
	    ((cur->efer ^ s.efer) & VMMU_EFER_LME))
		return VMMU_EINVAL;
	if (cur_lma && lma && ((cur->cr4 ^ s.cr4) & VMMU_CR4_LA57))
		return VMMU_EINVAL;
	/* PCIDE only in IA-32e mode, and only turned on with PCID 0 in CR3. */
	if ((s.cr4 & VMMU_CR4_PCIDE) && !lma)
		return VMMU_EINVAL;
	if ((s.cr4 & VMMU_CR4_PCIDE) && !(cur->cr4 & VMMU_CR4_PCIDE) && (s.cr3 & 0xfff))
		return VMMU_EINVAL;
	/* LA57 needs a 5-level TDP: guest-physical and linear widths match.
	 * Shadow paging builds 5-level roots whatever tdp_levels says. */
	if ((s.cr4 & VMMU_CR4_LA57) && lma && v->vm->cfg.mmu == VMMU_MMU_TDP && v->vm->cfg.tdp_levels < 5)
		return VMMU_ENOTSUP;
	if (lma) {
		if (maxphyaddr < 64 && (s.cr3 & ~(1ULL << 63)) >> maxphyaddr)
			return VMMU_EINVAL;
		if (s.cr3 & (1ULL << 63))
			return VMMU_EINVAL;	/* the no-flush bit is an operand of MOV CR3, not state */
	} else if (s.cr3 >> 32) {
		return VMMU_EINVAL;
	}

	memset(w, 0, sizeof(*w));
	w->mode = paging_mode(&s);
	w->root = s.cr3;
	w->maxphyaddr = maxphyaddr;
	w->wp = s.cr0 & VMMU_CR0_WP;
	w->pse = s.cr4 & VMMU_CR4_PSE;
	w->smep = s.cr4 & VMMU_CR4_SMEP;
	w->smap = s.cr4 & VMMU_CR4_SMAP;
	w->pke = s.cr4 & VMMU_CR4_PKE;
	w->nxe = s.efer & VMMU_EFER_NXE;
	w->ac = s.rflags & VMMU_RFLAGS_AC;
	w->cpl = (uint8_t)s.cpl;
	w->pkru = s.pkru;

	memset(s.pdptrs, 0, sizeof(s.pdptrs));
	if (w->mode == WALK_MODE_PAE && !mov_cr3 && s.cr3 == cur->cr3 &&
	    !((cur->cr0 ^ s.cr0) & (VMMU_CR0_PG | CR0_CD | CR0_NW)) &&
	    !((cur->cr4 ^ s.cr4) & (VMMU_CR4_PAE | VMMU_CR4_PGE | VMMU_CR4_PSE | VMMU_CR4_SMEP))) {
		/*
		 * SDM Vol. 3A 4.4.1: the PDPTE registers are loaded by a MOV to
		 * CR3 in PAE mode, and by a MOV to CR0/CR4 that changes CR0.CD,
		 * NW or PG, or CR4.PAE, PGE, PSE or SMEP with PAE paging in use
		 * after it -- not by anything else (CPL, CR0.WP, EFLAGS.AC...).
		 * A guest that edits a PDPTE keeps using the old one until then.
		 * (Entering PAE paging changes PG or PAE, so it always loads.)
		 */
		memcpy(s.pdptrs, cur->pdptrs, sizeof(s.pdptrs));
		memcpy(w->pdptes, cur->pdptrs, sizeof(w->pdptes));
	} else if (w->mode == WALK_MODE_PAE) {
		/* Loaded from the 32-byte aligned table at CR3[31:5]; a present
		 * PDPTE with reserved bits makes the load #GP. */
		for (int i = 0; i < 4; i++) {
			uint64_t e;
			int err = read_guest_u64(v, l2_tables, (s.cr3 & 0xffffffe0ULL) + 8 * (uint64_t)i, &e);

			if (err)
				return err;
			if ((e & PDPTE_P) &&
			    ((e & PDPTE_RSVD_LOW) || (maxphyaddr < 64 && (e >> maxphyaddr))))
				return VMMU_EINVAL;
			s.pdptrs[i] = e;
			w->pdptes[i] = e;
		}
	}
	*out = s;
	return 0;
}

/* State bits whose change makes a MOV to CR0/CR4/EFER flush everything. */
static bool needs_full_flush(const struct vmmu_cpu_state *a, const struct vmmu_cpu_state *b)
{
	const uint64_t cr0 = VMMU_CR0_PG | VMMU_CR0_WP | VMMU_CR0_PE;
	const uint64_t cr4 = VMMU_CR4_PSE | VMMU_CR4_PAE | VMMU_CR4_PGE | VMMU_CR4_LA57 | VMMU_CR4_PCIDE |
			     VMMU_CR4_SMEP | VMMU_CR4_SMAP | VMMU_CR4_PKE;
	const uint64_t efer = VMMU_EFER_NXE | VMMU_EFER_LME | VMMU_EFER_LMA;

	return ((a->cr0 ^ b->cr0) & cr0) || ((a->cr4 ^ b->cr4) & cr4) || ((a->efer ^ b->efer) & efer) ||
	       memcmp(a->pdptrs, b->pdptrs, sizeof(a->pdptrs));
}

void vcpu_apply_state(struct vmmu_vcpu *v, const struct vmmu_cpu_state *s, const struct walk_cpu *w)
{
	v->arch = *s;
	v->wcpu = *w;
	v->pcid = (s->cr4 & VMMU_CR4_PCIDE) ? (uint16_t)(s->cr3 & 0xfff) : 0;
	v->pge = s->cr4 & VMMU_CR4_PGE;
}

void vcpu_init_state(struct vmmu_vcpu *v)
{
	struct vmmu_cpu_state s;
	struct walk_cpu w;
	int r;

	/* Flat 32-bit protected mode, paging off: what the access API assumed
	 * before guest paging existed, so gva == gpa below 4 GiB. */
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE;
	memset(&v->arch, 0, sizeof(v->arch));
	r = vcpu_derive_state(v, &v->arch, &s, false, &s, &w, vcpu_l2_tables(v));
	(void)r;
	vcpu_apply_state(v, &s, &w);
	mmu_update_context(v);
}

VMMU_EXPORT int vmmu_vcpu_set_state(vmmu_vcpu *v, const struct vmmu_cpu_state *in)
{
	struct vmmu_vcpu *self;
	struct vmmu_cpu_state s, old;
	struct walk_cpu w;
	int r;

	if (!v || !in)
		return VMMU_EINVAL;
	/* A CR3 that changes is a MOV to CR3; one that does not is none. */
	r = vcpu_derive_state(v, &v->arch, in, false, &s, &w, vcpu_l2_tables(v));
	if (r)
		return r;
	old = v->arch;
	self = vcpu_self_enter(v);
	vcpu_apply_state(v, &s, &w);
	/* The context (and, for shadow paging, the roots) is rebuilt only when
	 * the role changed (seed 000): CPL, AC, PKRU or PGE alone keep it. */
	if (!mmu_update_context(v) && vm_shadow_paging(v->vm)) {
		if (old.cr3 != s.cr3 || memcmp(old.pdptrs, s.pdptrs, sizeof(s.pdptrs))) {
			shadow_new_pgd(v, false);
		} else if (needs_full_flush(&old, &s)) {
			/* A guest TLB flush: unsync pages must catch up. */
			shadow_sync_roots(v);
		}
	}
	vcpu_self_exit(self);
	if (needs_full_flush(&old, &s))
		hw_tlb_flush(v);
	else if (old.cr3 != s.cr3)
		hw_tlb_flush_pcid(v, v->pcid);
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_get_state(vmmu_vcpu *v, struct vmmu_cpu_state *out)
{
	if (!v || !out)
		return VMMU_EINVAL;
	*out = v->arch;
	return 0;
}

VMMU_EXPORT int vmmu_vcpu_write_cr3(vmmu_vcpu *v, uint64_t cr3)
{
	struct vmmu_vcpu *self;
	struct vmmu_cpu_state in, s, old;
	struct walk_cpu w;
	bool noflush;
	int r;

	if (!v)
		return VMMU_EINVAL;
	old = v->arch;
	/* SDM 4.10.4.1: with PCIDE, bit 63 set means "keep this PCID's entries". */
	noflush = (old.cr4 & VMMU_CR4_PCIDE) && (cr3 & VMMU_CR3_PCID_NOFLUSH);
	if (old.cr4 & VMMU_CR4_PCIDE)
		cr3 &= ~VMMU_CR3_PCID_NOFLUSH;
	in = old;
	in.cr3 = cr3;
	r = vcpu_derive_state(v, &old, &in, true, &s, &w, vcpu_l2_tables(v));
	if (r)
		return r;
	self = vcpu_self_enter(v);
	vcpu_apply_state(v, &s, &w);
	mmu_update_context(v);
	if (vm_shadow_paging(v->vm))
		shadow_new_pgd(v, noflush);
	vcpu_self_exit(self);
	/* PAE reloads the PDPTE registers, which are not tagged: flush all. */
	if (w.mode == WALK_MODE_PAE && memcmp(old.pdptrs, s.pdptrs, sizeof(s.pdptrs)))
		hw_tlb_flush(v);
	else if (!noflush)
		hw_tlb_flush_pcid(v, v->pcid);
	return 0;
}

VMMU_EXPORT void vmmu_vcpu_invlpg(vmmu_vcpu *v, uint64_t gva)
{
	if (!v)
		return;
	/* In 64-bit mode INVLPG of a non-canonical address is a no-op. */
	if (!walk_gva_canonical(&v->wcpu, gva))
		return;
	hw_tlb_invlpg(v, gva);
	if (vm_shadow_paging(v->vm)) {
		struct vmmu_vcpu *self = vcpu_self_enter(v);

		shadow_invlpg(v, gva);
		vcpu_self_exit(self);
	}
}

VMMU_EXPORT int vmmu_vcpu_invpcid(vmmu_vcpu *v, unsigned type, uint32_t pcid, uint64_t gva)
{
	struct vmmu_vcpu *self;

	if (!v || type > VMMU_INVPCID_ALL || pcid >= TLB_NR_PCIDS)
		return VMMU_EINVAL;
	if (type <= VMMU_INVPCID_SINGLE && pcid && !(v->arch.cr4 & VMMU_CR4_PCIDE))
		return VMMU_EINVAL;
	if (type == VMMU_INVPCID_ADDR && !walk_gva_canonical(&v->wcpu, gva))
		return VMMU_EINVAL;
	self = vcpu_self_enter(v);
	switch (type) {
	case VMMU_INVPCID_ADDR:
		hw_tlb_invlpg_pcid(v, gva, (uint16_t)pcid);
		if (vm_shadow_paging(v->vm))
			shadow_invlpg(v, gva);
		break;
	case VMMU_INVPCID_SINGLE:
		hw_tlb_flush_pcid(v, (uint16_t)pcid);
		/* Shadow pages are shared by every PCID: what the guest asks one
		 * PCID to see, the unsync pages must show (KVM syncs the roots). */
		if (vm_shadow_paging(v->vm))
			shadow_sync_roots(v);
		break;
	default:
		/* Type 3 keeps globals, type 2 does not; a full flush is right for
		 * both (the TLB may always drop more). */
		hw_tlb_flush(v);
		if (vm_shadow_paging(v->vm))
			shadow_sync_roots(v);
		break;
	}
	vcpu_self_exit(self);
	return 0;
}
