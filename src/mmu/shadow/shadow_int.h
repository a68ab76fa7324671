/* SPDX-License-Identifier: MIT */
#ifndef VMMU_SHADOW_INT_H
#define VMMU_SHADOW_INT_H
/*
 * What the files of the shadow MMU share; shadow_mmu.h is its face to the
 * rest of src/.  One file per concept: rmap.c (pte_list, rmaps, parent
 * lists, host-side operations through them), mmu_page.c (shadow pages by
 * (gfn, role): hash, get, zap, reclaim), page_track.c (write tracking and
 * the stores the MMU performs), gpte.c (guest entries as the MMU reads
 * them), sync.c (unsync), fault.c (the page fault), roots.c (roles,
 * contexts, roots, INVLPG), audit.c.  Every function here that changes
 * shadow state needs mmu_lock held for write unless it says otherwise.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmu/mmu.h"
#include "mmu/shadow/shadow_mmu.h"
#include "mmu/walk.h"
#include "vm/vmmu_int.h"

static inline bool is_shadow_present(uint64_t spte)
{
	return spte & SPTE_MMU_PRESENT;
}

static inline uint64_t spte_load(const uint64_t *sptep)
{
	return atomic_load_explicit((_Atomic uint64_t *)sptep, memory_order_acquire);
}

static inline void spte_store(uint64_t *sptep, uint64_t v)
{
	atomic_store_explicit((_Atomic uint64_t *)sptep, v, memory_order_release);
}

/* Every SPTE change may race with the hardware setting A/D: exchange, and
 * take A/D from what the exchange returned. */
static inline uint64_t spte_xchg(uint64_t *sptep, uint64_t v)
{
	return atomic_exchange_explicit((_Atomic uint64_t *)sptep, v, memory_order_acq_rel);
}

static inline uint64_t spte_clear_bits(uint64_t *sptep, uint64_t bits)
{
	return atomic_fetch_and_explicit((_Atomic uint64_t *)sptep, ~bits, memory_order_acq_rel);
}

static inline struct shadow_page *sptep_to_sp(struct vmmu_vm *vm, const uint64_t *sptep)
{
	return pt_page_of(&vm->arena, sptep)->owner;
}

static inline struct shadow_page *spte_to_child(struct vmmu_vm *vm, uint64_t spte)
{
	return pt_page_of(&vm->arena, (void *)(uintptr_t)(spte & SPTE_BASE_ADDR_MASK))->owner;
}

static inline unsigned int sptep_index(const uint64_t *sptep)
{
	return (unsigned int)(((uintptr_t)sptep & 0xfff) >> 3);
}



#define PTE_LIST_EXT 14
struct pte_list_desc {
	struct pte_list_desc *more;
	unsigned int n;
	uint64_t *sptes[PTE_LIST_EXT];
};

struct pte_list_iter {
	const struct pte_list_desc *d;
	unsigned int i;
};

static inline uint64_t *pte_list_iter_start(const struct pte_list *l, struct pte_list_iter *it)
{
	it->d = NULL;
	it->i = 0;
	if (!l->val)
		return NULL;
	if (!(l->val & 1))
		return (uint64_t *)l->val;
	it->d = (const struct pte_list_desc *)(l->val & ~(uintptr_t)1);
	return it->d->sptes[0];
}

static inline uint64_t *pte_list_iter_next(struct pte_list_iter *it)
{
	if (!it->d)
		return NULL;
	if (++it->i < it->d->n)
		return it->d->sptes[it->i];
	it->d = it->d->more;
	it->i = 0;
	return it->d ? it->d->sptes[0] : NULL;
}

#define for_each_pte_list(l, it, sptep) \
	for (sptep = pte_list_iter_start(l, it); sptep; sptep = pte_list_iter_next(it))

static inline unsigned int sp_hash(gfn_t gfn)
{
	return (unsigned int)((gfn * 0x9E3779B97F4A7C15ULL) >> (64 - SHADOW_HASH_BITS));
}

/* Read without mmu_lock too (a vCPU checking its roots): the role word and
 * the generation change only under it, by atomic stores. */
static inline bool sp_obsolete(const struct shadow_vm *sh, const struct shadow_page *sp)
{
	union sp_role role = { .word = __atomic_load_n(&sp->role.word, __ATOMIC_ACQUIRE) };

	return role.invalid || sp->valid_gen != __atomic_load_n(&sh->valid_gen, __ATOMIC_ACQUIRE);
}

static inline void sp_mark_invalid(struct shadow_page *sp)
{
	union sp_role role = sp->role;

	role.invalid = 1;
	__atomic_store_n(&sp->role.word, role.word, __ATOMIC_RELEASE);
}

/* Counters read without the lock (stats, the INVLPG shortcut). */
#define SH_COUNT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)

#define for_each_gfn_sp(sh, _sp, _gfn) \
	for (_sp = (sh)->hash[sp_hash(_gfn)]; _sp; _sp = _sp->hash_next) \
		if (_sp->gfn != (_gfn) || sp_obsolete(sh, _sp)) {} else





#define WALK_ABORT_NOT_RAM (-1)
#define WALK_ABORT_HOST (-2)
#define WALK_ABORT_RETRY (-3)	/* a table in a slot being deleted or moved */

static inline unsigned int shadow_index(uint64_t gva, int level)
{
	return (unsigned int)((gva >> (12 + 9 * (level - 1))) & (PT64_ENT_PER_PAGE - 1));
}

/*
 * The rights of a walk (WALK_ACC_*) as SPTE rights (ACC_*).  For EPT-format
 * tables ACC_USER stands for R (as in KVM: EPT has no U bit, and the shadow
 * EPT of a nested guest must be able to map execute-only).
 */
static inline unsigned int walk_acc_to_acc(const struct walk_cpu *w, unsigned int wacc)
{
	unsigned int u = w->mode >= WALK_MODE_EPT4 ? WALK_ACC_R : WALK_ACC_U;

	return ((wacc & WALK_ACC_W) ? ACC_WRITE : 0) | ((wacc & u) ? ACC_USER : 0) |
	       ((wacc & WALK_ACC_X) ? ACC_EXEC : 0);
}

/*
 * Guest entries of a shadow page, in the format of the tables it shadows
 * (walk.h's gpte_*, shared with the walker): the rights one entry grants,
 * the bits whose change can change a translation (not A/D), the frame a
 * PTE names, and whether a PTE has reserved bits (a shadow of such an entry
 * must not exist: the next fault re-walks and raises the #PF).
 */
static inline unsigned int gpte_access(const struct walk_cpu *w, uint64_t gpte)
{
	return walk_acc_to_acc(w, gpte_rights(w, gpte));
}

static inline uint64_t gpte_cmp_mask(const struct walk_cpu *w)
{
	const struct gpte_fmt *f = gpte_fmt_of(w);

	return ~(f->accessed | f->dirty) & (f->size == 4 ? 0xffffffffULL : ~0ULL);
}

static inline gfn_t gpte_gfn(const struct walk_cpu *w, uint64_t gpte)
{
	return gpte_addr(w, gpte, PG_LEVEL_4K) >> 12;
}

static inline bool gpte_pte_reserved(const struct walk_cpu *w, uint64_t gpte)
{
	return gpte_is_reserved(w, gpte, PG_LEVEL_4K);
}

/* ---- rmap.c ---- */
int shadow_desc_cache_topup(struct shadow_desc_cache *c);
void pte_list_add(struct shadow_desc_cache *c, struct pte_list *l, uint64_t *sptep);
bool pte_list_remove(struct pte_list *l, const uint64_t *sptep);
uint64_t *pte_list_first(const struct pte_list *l);
void pte_list_free(struct pte_list *l);
const struct memslot *shadow_slot_of(struct vmmu_vm *vm, gfn_t gfn);
bool shadow_rmap_write_protect(struct vmmu_vm *vm, gfn_t gfn, bool keep_mmu_writable);

/* ---- mmu_page.c ---- */
bool shadow_zap_spte(struct vmmu_vm *vm, struct shadow_page *sp, uint64_t *sptep);
void shadow_prepare_zap(struct vmmu_vm *vm, struct shadow_page *sp, struct cds_list_head *invalid);
void shadow_commit_zap(struct vmmu_vm *vm, struct cds_list_head *invalid, bool flush);
bool shadow_make_pages_available(struct vmmu_vm *vm, struct cds_list_head *invalid);
struct shadow_page *shadow_get_sp(struct vmmu_vcpu *v, gfn_t gfn, union sp_role role, bool *flush,
				  struct cds_list_head *invalid);

/* ---- page_track.c ---- */
bool shadow_account(struct vmmu_vm *vm, struct shadow_page *sp);
void shadow_unaccount(struct vmmu_vm *vm, struct shadow_page *sp);

/* ---- gpte.c ---- */
void shadow_sp_walk_cpu(const struct vmmu_vm *vm, const struct walk_cpu *base, const struct shadow_page *sp,
			struct walk_cpu *w);
#define SHADOW_READ_NOT_RAM (-1)
#define SHADOW_READ_GONE (-2)
/*
 * Entries of guest page tables read by the MMU itself (walks, syncs).
 * Outside RAM reads as SHADOW_READ_NOT_RAM, which the walk turns into a
 * not-present #PF; host memory the embedder declared gone (or a released
 * VM's) as SHADOW_READ_GONE, a memory fault -- it may be unmapped, so it is
 * never dereferenced.
 */
static inline int shadow_guest_read(struct vmmu_vm *vm, uint64_t gpa, unsigned int size, uint64_t *val)
{
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	uintptr_t hva;

	if (!s || (s->flags & MEMSLOT_INVALID))
		return SHADOW_READ_NOT_RAM;
	hva = memslot_gfn_to_hva(s, gpa >> 12) + (gpa & 0xfff);
	if (!host_readable(vm, hva))
		return SHADOW_READ_GONE;
	*val = size == 8 ? __atomic_load_n((uint64_t *)hva, __ATOMIC_ACQUIRE)
			 : __atomic_load_n((uint32_t *)hva, __ATOMIC_ACQUIRE);
	return 0;
}

uint64_t shadow_gpte_gpa(const struct shadow_page *sp, unsigned int i, unsigned int *size);

/* ---- sync.c ---- */
void shadow_unsync_del(struct vmmu_vm *vm, struct shadow_page *sp);
bool shadow_sync_pages(struct vmmu_vcpu *v, struct shadow_page **sps, unsigned int n);
bool shadow_sync_all_locked(struct vmmu_vcpu *v);
bool shadow_try_unsync(struct vmmu_vm *vm, gfn_t gfn);

/* ---- fault.c ---- */
bool shadow_walk_changed(struct vmmu_vcpu *v, const struct shadow_ctx *c, const struct walk_result *wr,
			 uint64_t gva);

/* ---- roots.c ---- */
bool shadow_roots_valid(const struct vmmu_vcpu *v, const struct shadow_ctx *c);
uint64_t shadow_root_entry(const struct vmmu_vcpu *v, const struct shadow_ctx *c, uint64_t gva, int *level);
void shadow_load_hw_root(struct vmmu_vcpu *v, const struct shadow_ctx *c);
uint64_t *shadow_find_leaf_sptep(uint64_t root_spte, int level, uint64_t gva);

#endif /* VMMU_SHADOW_INT_H */
