/* SPDX-License-Identifier: MIT */
#ifndef VMMU_HW_H
#define VMMU_HW_H
/*
 * The "hardware": what a CPU does with the SPTE tables KVM builds.  Per-vCPU
 * TLB and paging-structure caches, a walker over EPT or NPT tables that sets
 * A/D bits atomically exactly where a CPU would, and exits (EPT violation,
 * EPT misconfiguration, NPT #NPF) for the MMU to handle.
 *
 * The walker runs without mmu_lock, inside the RCU read section of the vCPU's
 * access: page tables it can reach are not freed under it.  It never writes an
 * SPTE except to set A/D, and it does that with cmpxchg against the value it
 * read, so a zapped or changed entry is never resurrected (SDM 4.8: the CPU
 * sets A/D only in entries that are present).
 */
#include <stdbool.h>
#include <stdint.h>

#include <string.h>

#include "vm/vmmu_int.h"

enum hw_exit_kind {
	HW_EXIT_NONE = 0,
	HW_EXIT_EPT_VIOLATION,	/* also NPT #NPF without RSVD */
	HW_EXIT_EPT_MISCONFIG,	/* also NPT #NPF with RSVD */
	HW_EXIT_PML_FULL,	/* a D bit to set, no room to log it (VMMU_VM_PML) */
};

/* EPT violation exit qualification (SDM 28.2.1, Table 28-7). */
#define EPT_VIOLATION_ACC_READ (1u << 0)
#define EPT_VIOLATION_ACC_WRITE (1u << 1)
#define EPT_VIOLATION_ACC_INSTR (1u << 2)
#define EPT_VIOLATION_READABLE (1u << 3)
#define EPT_VIOLATION_WRITABLE (1u << 4)
#define EPT_VIOLATION_EXECUTABLE (1u << 5)
#define EPT_VIOLATION_RWX_SHIFT 3

struct hw_exit {
	enum hw_exit_kind kind;
	uint64_t gpa;
	uint64_t qualification;	/* EPT: exit qualification; NPT: #NPF error code */
	int level;		/* level of the entry that stopped the walk */
	/*
	 * The access (ACC_WRITE / ACC_EXEC, 0 for a read).  An EPT
	 * misconfiguration reports none (SDM 3C 28.2.1), but the MMU needs
	 * it: under a nested guest, the MMIO SPTE it hits says nothing of
	 * what L1 allows, so the fault must check L1's tables for this access.
	 */
	unsigned int access;
};

/* Access kinds for the walker: ACC_WRITE / ACC_EXEC, 0 = read. */

/*
 * Translate gpa for an access; on success *hva is the host address of the
 * byte.  On failure *e says why.  Must run in guest mode, under RCU.
 */
bool hw_walk(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva, uintptr_t *val,
	     struct hw_exit *e);

/* Walk permissions: ACC_* plus readability (TLB_READ). */
#define HW_ALL (ACC_ALL | TLB_READ)

static inline unsigned int entry_perms(const struct spte_fmt *f, uint64_t spte)
{
	unsigned int p = 0;

	if (f->ept) {
		if (spte & EPT_R)
			p |= TLB_READ;
		if (spte & EPT_W)
			p |= ACC_WRITE;
		if (spte & EPT_X)
			p |= ACC_EXEC;
		p |= ACC_USER;	/* EPT has no user/supervisor distinction */
	} else {
		p |= TLB_READ;
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
	if (!(eff & TLB_READ))
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
 * walk, which decides exits and A/D updates exactly.  With PML this is what
 * keeps logging exact: a write never gets past a leaf whose D is clear
 * without hw_walk(), the one place that sets D and logs the gpa.
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

/* The page number of a linear entry.  57 bits hold every canonical address
 * uniquely (the bits above are copies of bit 56 or 47), and keep
 * key = vpn << 13 within 64 bits. */
static inline uint64_t linear_vpn(uint64_t gva)
{
	return (gva & ((1ULL << 57) - 1)) >> 12;
}

/*
 * Where a linear entry lives: the PCID is hashed in, so address spaces that
 * use the same addresses do not evict each other on every switch (the point
 * of PCIDs).  Global entries live at the PCID-0 index; physical entries at
 * their gfn.
 */
static inline unsigned int tlb_index(uint64_t vpn, uint16_t pcid)
{
	return (unsigned int)((vpn ^ ((uint64_t)pcid * 0x9e3)) & (TLB_ENTRIES - 1));
}

static inline struct psc_entry *psc2_entry(struct tlb *t, uint64_t gpa)
{
	return &t->psc2[(gpa >> 21) & (TLB_PSC2_ENTRIES - 1)];
}

static inline struct psc_entry *psc3_entry(struct tlb *t, uint64_t gpa)
{
	return &t->psc3[(gpa >> 30) & (TLB_PSC3_ENTRIES - 1)];
}

/* A new entry generation; on the (theoretical) 2^32 wrap, start over clean. */
static inline uint32_t tlb_next_gen(struct tlb *t)
{
	if (unlikely(++t->counter == 0)) {
		memset(t->e, 0, sizeof(t->e));
		memset(t->pcid_gen, 0, sizeof(t->pcid_gen));
		t->counter = 1;
		t->full_gen = 1;
	}
	return t->counter;
}

static inline uint64_t tlb_phys_key(uint64_t gfn)
{
	return (gfn << TLB_KEY_SHIFT) | TLB_KEY_PHYS;
}

static inline uintptr_t tlb_fill_phys(struct vmmu_vcpu *v, uint64_t gfn, uintptr_t hva_page, unsigned int eff,
				      bool dirty, uintptr_t *val)
{
	struct tlb_entry *te = &v->tlb->e[gfn & (TLB_ENTRIES - 1)];

	te->key = tlb_phys_key(gfn);
	te->gen = v->tlb->full_gen;
	te->info = 0;
	te->val = hva_page | eff | (dirty ? TLB_DIRTY : 0);
	*val = te->val;
	return hva_page;
}

/* The TDP-side rights an access needs in tlb_entry.val. */
static inline uintptr_t tlb_val_need(unsigned int acc)
{
	uintptr_t need = (acc & ACC_EXEC) ? ACC_EXEC : TLB_READ;

	/* A write through an entry whose D bit was clear walks again to set
	 * it, as a CPU does (SDM 4.8) -- and, with PML, to log the page.  An
	 * entry with TLB_DIRTY lets writes through unlogged until flushed,
	 * which is why clearing D for dirty logging flushes TLBs. */
	if (acc & ACC_WRITE)
		need |= ACC_WRITE | TLB_DIRTY;
	return need;
}

/*
 * Guest-physical translation: gpa -> host address through the TLB, the
 * paging-structure cache and, failing those, the walk of the TDP tables.
 * *val receives the entry's TDP rights (for linear entries built on it).
 */
static inline bool hw_translate_val(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva,
				    uintptr_t *val, struct hw_exit *e)
{
	uint64_t gfn = gpa >> 12;
	struct tlb_entry *te = &v->tlb->e[gfn & (TLB_ENTRIES - 1)];
	struct psc_entry *p;

	if (likely(te->key == tlb_phys_key(gfn) && te->gen >= v->tlb->full_gen)) {
		uintptr_t need = tlb_val_need(acc);

		if (likely((te->val & need) == need)) {
			STAT_INC(v->stat.tlb_hits);
			*val = te->val;
			*hva = (te->val & ~(uintptr_t)0xfff) | (gpa & 0xfff);
			return true;
		}
	}
	STAT_INC(v->stat.tlb_misses);
	p = psc2_entry(v->tlb, gpa);
	if (likely(p->gen == v->tlb->gen && p->tag == gpa >> 21)) {
		const struct spte_fmt *f = &v->vm->fmt;
		uint64_t spte = atomic_load_explicit((_Atomic uint64_t *)&p->table[gfn & (PT64_ENT_PER_PAGE - 1)],
						     memory_order_acquire);
		unsigned int eff = p->access & entry_perms(f, spte);

		if (likely(leaf_fast_ok(f, spte, acc) && perms_allow(f, eff, acc))) {
			bool dirty = f->ad_enabled ? !!(spte & f->dirty) : !!(eff & ACC_WRITE);

			*hva = tlb_fill_phys(v, gfn, (uintptr_t)(spte_to_pfn(spte) << 12), eff, dirty, val) |
			       (gpa & 0xfff);
			return true;
		}
	}
	return hw_walk(v, gpa, acc, hva, val, e);
}

static inline bool hw_translate(struct vmmu_vcpu *v, uint64_t gpa, unsigned int acc, uintptr_t *hva,
				struct hw_exit *e)
{
	uintptr_t val;

	return hw_translate_val(v, gpa, acc, hva, &val, e);
}

/* Full flush: every entry, global or not, and the paging-structure caches. */
void hw_tlb_flush(struct vmmu_vcpu *v);
/* The same for both of the vCPU's TLBs (its own and its nested guest's). */
void hw_tlb_flush_all(struct vmmu_vcpu *v);
void tlb_flush(struct tlb *t);
void tlb_invalidate_gva(struct tlb *t, uint64_t gva);
/* MOV to CR3 (without the no-flush bit): non-global entries of one PCID. */
void hw_tlb_flush_pcid(struct vmmu_vcpu *v, uint16_t pcid);
/* INVLPG: every linear entry of gva's page, whatever the page size or PCID. */
void hw_tlb_invlpg(struct vmmu_vcpu *v, uint64_t gva);
/* INVPCID type 0: the same for a given PCID. */
void hw_tlb_invlpg_pcid(struct vmmu_vcpu *v, uint64_t gva, uint16_t pcid);

/* The page-fault error code KVM derives from an exit. */
uint32_t hw_exit_to_error_code(const struct vmmu_vm *vm, const struct hw_exit *e);

/* ---- linear (guest-paging) translations ------------------------------------ */

static inline uint64_t tlb_linear_key(uint64_t vpn, uint16_t pcid)
{
	return (vpn << TLB_KEY_SHIFT) | ((uint64_t)pcid << 1);
}

static inline bool tlb_linear_entry_ok(struct vmmu_vcpu *v, const struct tlb_entry *e, uint64_t vpn)
{
	const struct tlb *t = v->tlb;

	if ((e->key >> TLB_KEY_SHIFT) != vpn || (e->key & TLB_KEY_PHYS) || e->gen < t->full_gen)
		return false;
	/* A global entry serves every PCID; others only their own, and only
	 * until MOV to CR3 bumps that PCID's generation. */
	return (e->info & TLBI_GLOBAL) ||
	       (e->key == tlb_linear_key(vpn, v->pcid) && e->gen == t->pcid_gen[v->pcid]);
}

static inline bool tlb_linear_lookup(struct vmmu_vcpu *v, uint64_t gva, unsigned int acc, unsigned int walk_access,
				     uintptr_t *hva)
{
	struct tlb *t = v->tlb;
	uint64_t vpn = linear_vpn(gva);
	struct tlb_entry *e = &t->e[tlb_index(vpn, v->pcid)];
	uintptr_t need = tlb_val_need(acc);

	/* Keys hold 57 bits: a non-canonical address could alias a cached
	 * canonical one, so it never hits (the walk raises #GP for it). */
	if (unlikely(!walk_gva_canonical(&v->wcpu, gva)))
		return false;
	if (!tlb_linear_entry_ok(v, e, vpn)) {
		e = &t->e[tlb_index(vpn, 0)];
		if (!v->pcid || !(e->info & TLBI_GLOBAL) || !tlb_linear_entry_ok(v, e, vpn))
			return false;
	}
	/*
	 * Rights are checked against the current CPL/WP/SMEP/SMAP/AC/PKRU on
	 * every use.  A denied access, or a write through an entry whose guest
	 * D bit was clear, walks again: the walk decides faults and sets D.
	 */
	if (walk_permission_fault(v->tlb_cpu, e->info & 0xf, (e->info >> TLBI_PKEY_SHIFT) & 0xf, walk_access))
		return false;
	if ((walk_access & WALK_WRITE) && !(e->info & TLBI_GDIRTY))
		return false;
	if ((e->val & need) != need)
		return false;
	STAT_INC(v->stat.tlb_hits);
	*hva = (e->val & ~(uintptr_t)0xfff) | (gva & 0xfff);
	return true;
}


/*
 * The guest's own load or store.  Aligned accesses of 1, 2, 4 or 8 bytes are
 * single-copy atomic, as on x86 (SDM 9.1.1): another vCPU walking a page
 * table never sees half of an entry being written.
 */
static inline __attribute__((always_inline)) void copy_fragment(void *hva, void *buf, size_t n, bool write)
{
	if (((uintptr_t)hva & (n - 1)) == 0) {
		switch (n) {
		case 1:
			if (write)
				__atomic_store_n((uint8_t *)hva, *(uint8_t *)buf, __ATOMIC_RELAXED);
			else
				*(uint8_t *)buf = __atomic_load_n((uint8_t *)hva, __ATOMIC_RELAXED);
			return;
		case 2: {
			uint16_t x;

			if (write) {
				memcpy(&x, buf, 2);
				__atomic_store_n((uint16_t *)hva, x, __ATOMIC_RELAXED);
			} else {
				x = __atomic_load_n((uint16_t *)hva, __ATOMIC_RELAXED);
				memcpy(buf, &x, 2);
			}
			return;
		}
		case 4: {
			uint32_t x;

			if (write) {
				memcpy(&x, buf, 4);
				__atomic_store_n((uint32_t *)hva, x, __ATOMIC_RELAXED);
			} else {
				x = __atomic_load_n((uint32_t *)hva, __ATOMIC_RELAXED);
				memcpy(buf, &x, 4);
			}
			return;
		}
		case 8: {
			uint64_t x;

			if (write) {
				memcpy(&x, buf, 8);
				__atomic_store_n((uint64_t *)hva, x, __ATOMIC_RELAXED);
			} else {
				x = __atomic_load_n((uint64_t *)hva, __ATOMIC_RELAXED);
				memcpy(buf, &x, 8);
			}
			return;
		}
		default:
			break;
		}
	}
	if (write)
		memcpy(hva, buf, n);
	else
		memcpy(buf, hva, n);
}


enum xlate {
	XLATE_OK,
	XLATE_TDP_EXIT,		/* *he: handle it in the MMU and try again */
	XLATE_GUEST_FAULT,	/* *wr: the guest's own fault, to inject */
	XLATE_PT_NOT_RAM,	/* a guest page table outside RAM */
	XLATE_SHADOW_PF,	/* shadow paging: the SPTEs do not allow it (*pf_error) */
};

/*
 * Translate one page of an access, in guest mode (the CPU's side of an
 * access: TLB, then the walk of the tables the MMU loaded).  XLATE_OK with
 * *hva; otherwise what stopped it, for the exit handler.
 */
enum xlate cpu_translate(struct vmmu_vcpu *v, uint64_t addr, unsigned int acc, unsigned int walk_access, bool phys,
			 uintptr_t *hva, struct hw_exit *he, struct walk_result *wr, bool *pt_access);

/*
 * The hardware walk of shadow tables for a linear address, in guest mode
 * (lockless).  Returns true with *hva, *rights (WALK_ACC_*), *pkey and
 * whether writes may use the translation; false with *pf_error (PFERR_P/
 * RSVD/W/U/I-D/PK as hardware reports them) when the SPTEs do not allow it.
 */
bool shadow_hw_walk(struct vmmu_vcpu *v, uint64_t gva, unsigned int walk_access, uintptr_t *hva,
		    unsigned int *rights, unsigned int *pkey, bool *writable, uint32_t *pf_error);

#endif /* VMMU_HW_H */
