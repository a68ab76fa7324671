/* SPDX-License-Identifier: MIT */
/*
 * TLB maintenance: what MOV to CR0/CR3/CR4, INVLPG, INVPCID and remote
 * flushes do to the cached translations (SDM 4.10.4).
 */
#include "cpu/hw.h"

void tlb_flush(struct tlb *t)
{
	t->gen++;
	t->full_gen = tlb_next_gen(t);
	t->nr_huge = 0;
}

void hw_tlb_flush(struct vmmu_vcpu *v)
{
	tlb_flush(v->tlb);
}

/* A remote flush leaves nothing of before it, at either level. */
void hw_tlb_flush_all(struct vmmu_vcpu *v)
{
	tlb_flush(&v->tlbs[0]);
	tlb_flush(&v->tlbs[1]);
}

void hw_tlb_flush_pcid(struct vmmu_vcpu *v, uint16_t pcid)
{
	v->tlb->pcid_gen[pcid] = tlb_next_gen(v->tlb);
}

void hw_tlb_invlpg(struct vmmu_vcpu *v, uint64_t gva)
{
	hw_tlb_invlpg_pcid(v, gva, v->pcid);
}

void hw_tlb_invlpg_pcid(struct vmmu_vcpu *v, uint64_t gva, uint16_t pcid)
{
	struct tlb *t = v->tlb;
	uint64_t vpn = linear_vpn(gva);
	struct tlb_entry *e = &t->e[tlb_index(vpn, pcid)];

	/* SDM 4.10.4.1: the PCID's entries for the page, and global ones
	 * (INVPCID type 0 may keep those; dropping more is always allowed).
	 * gen 0 is below every full_gen (which starts at 1). */
	if (!(e->key & TLB_KEY_PHYS) && (e->key >> TLB_KEY_SHIFT) == vpn)
		e->gen = 0;
	e = &t->e[tlb_index(vpn, 0)];
	if (!(e->key & TLB_KEY_PHYS) && (e->key >> TLB_KEY_SHIFT) == vpn)
		e->gen = 0;
	if (!t->nr_huge)
		return;
	/*
	 * A huge page is cached as 4K fragments at other indexes; INVLPG of
	 * any address in it must drop them all (SDM 4.10.4.1).
	 */
	for (unsigned int i = 0; i < TLB_ENTRIES; i++) {
		unsigned int shift;

		e = &t->e[i];
		if (e->key & TLB_KEY_PHYS)
			continue;
		shift = (e->info >> TLBI_SIZE_SHIFT) & 0x1f;
		if (shift && ((e->key >> TLB_KEY_SHIFT) >> shift) == (vpn >> shift))
			e->gen = 0;
	}
}


/* Every linear entry of gva's page, whatever the PCID or page size (INVVPID
 * type 0 and INVLPGA: all PCIDs of one VPID/ASID, which is one TLB here). */
void tlb_invalidate_gva(struct tlb *t, uint64_t gva)
{
	uint64_t vpn = linear_vpn(gva);

	for (unsigned int i = 0; i < TLB_ENTRIES; i++) {
		struct tlb_entry *e = &t->e[i];
		unsigned int shift = (e->info >> TLBI_SIZE_SHIFT) & 0x1f;

		if (e->key & TLB_KEY_PHYS)
			continue;
		if (((e->key >> TLB_KEY_SHIFT) >> shift) == (vpn >> shift))
			e->gen = 0;
	}
}
