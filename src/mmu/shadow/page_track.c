/* SPDX-License-Identifier: MIT */
/*
 * Write tracking of guest page tables (KVM's page_track): the per-gfn count
 * of shadow pages, the write protection it implies, guest stores the MMU
 * performs into tracked tables (emulation and physical stores), and write
 * flooding.
 */
#include "mmu/shadow/shadow_int.h"

#include <string.h>

#include "test_hook.h"

bool shadow_gfn_write_tracked(const struct memslot *s, gfn_t gfn)
{
	return s->shadow && __atomic_load_n(&s->shadow->write_track[gfn - s->base_gfn], __ATOMIC_ACQUIRE);
}

static uint32_t *lpage_count(const struct memslot *s, gfn_t gfn, int level)
{
	unsigned int shift = level == PG_LEVEL_2M ? 9 : 18;

	return &s->shadow->track_lpage[level - PG_LEVEL_2M][(gfn >> shift) - (s->base_gfn >> shift)];
}

bool shadow_lpage_tracked(const struct memslot *s, gfn_t gfn, int level)
{
	return s->shadow && level > PG_LEVEL_4K &&
	       __atomic_load_n(lpage_count(s, gfn, level), __ATOMIC_ACQUIRE);
}

static void lpage_account(const struct memslot *s, gfn_t gfn, int delta)
{
	for (int level = PG_LEVEL_2M; level <= PG_LEVEL_1G; level++) {
		uint32_t *c = lpage_count(s, gfn, level);

		__atomic_store_n(c, (uint32_t)((int64_t)*c + delta), __ATOMIC_RELEASE);
	}
}

/*
 * A store-then-load on each side (a physical store: guest memory, then the
 * count; a new shadow page: the count, then the guest entry) with this in
 * between: the two read-modify-writes are ordered, and whichever comes
 * second sees the other side's store (a Dekker pair without fences).
 */
static inline void shadow_track_barrier(struct shadow_vm *sh)
{
	atomic_fetch_add_explicit(&sh->track_sync, 1, memory_order_seq_cst);
}

bool shadow_account(struct vmmu_vm *vm, struct shadow_page *sp)
{
	const struct memslot *s = shadow_slot_of(vm, sp->gfn);
	uint16_t *t;
	bool flush;

	if (!s)
		return false;
	t = &s->shadow->write_track[sp->gfn - s->base_gfn];
	__atomic_store_n(t, (uint16_t)(*t + 1), __ATOMIC_RELEASE);
	s->shadow->nr_tracked++;
	lpage_account(s, sp->gfn, 1);
	sp->tracked = true;
	/*
	 * The count is read without mmu_lock by physical stores, which write
	 * guest memory first and read the count second (shadow_phys_store_done).
	 * This barrier pairs with theirs: either that store sees the count and
	 * zaps what this page makes of the old entry, or the walk re-check of
	 * the fault that created this page (shadow_walk_changed) sees the new entry.
	 */
	shadow_track_barrier(vm->shadow);
	/* Not only on the first page of gfn: the others may all be unsync, and
	 * then gfn is mapped writable; this new page starts in sync.  The TDP
	 * root maps it too when the table is L1's (a nested guest's EPT/NPT). */
	flush = shadow_rmap_write_protect(vm, sp->gfn, false);
	flush |= mmu_write_protect_tracked_gfn_locked(vm, sp->gfn);	/* both, whatever the first says */
	return flush;
}

static bool sp_unlinked(const struct shadow_page *sp)
{
	if (sp->parent_ptes.val)
		return false;
	for (unsigned int i = 0; i < PT64_ENT_PER_PAGE; i++)
		if (spte_load(&sp->spt[i]))
			return false;
	return true;
}

/*
 * The gfn stops being write-tracked on sp's behalf.  Only once nothing of sp
 * is reachable: a store that reads the count as 0 is a plain copy that no
 * shadow page hears of, and the hardware must not then find an SPTE made
 * from the entry it overwrote (issue 16: zap-all dropped the count first,
 * and a vCPU wrote through the old leaf after its PTE store and INVLPG).
 */
void shadow_unaccount(struct vmmu_vm *vm, struct shadow_page *sp)
{
	const struct memslot *s = shadow_slot_of(vm, sp->gfn);
	uint16_t *t;

	sp->tracked = false;
	if (VM_BUG_ON(vm, !sp_unlinked(sp), "shadow page of gfn %#llx untracked while still linked",
		      (unsigned long long)sp->gfn))
		return;
	if (!s)
		return;
	t = &s->shadow->write_track[sp->gfn - s->base_gfn];
	if (VM_BUG_ON(vm, *t == 0, "write-track count of gfn %#llx underflows", (unsigned long long)sp->gfn))
		return;
	__atomic_store_n(t, (uint16_t)(*t - 1), __ATOMIC_RELEASE);
	s->shadow->nr_tracked--;
	lpage_account(s, sp->gfn, -1);
	vmmu_test_hook(VMMU_TEST_HOOK_SHADOW_UNTRACKED, sp->gfn);
}

static bool write_misaligned(uint64_t gpa, unsigned int n, unsigned int pte_size)
{
	uint64_t off = gpa & (pte_size - 1);

	/* A single-byte store at an entry's start (Linux's clear_bit on the
	 * low flags) is not misaligned; anything crossing an entry is. */
	if (off == 0 && n == 1)
		return false;
	return off + n > pte_size;
}

/*
 * KVM's kvm_mmu_track_write: a guest store hit a shadowed table.  SPTEs made
 * from the entries it overwrote are zapped (the next fault re-derives them);
 * a page written in pieces, or written over and over without being walked
 * (no longer a page table: write flooding), is zapped whole.
 */
static bool track_write(struct vmmu_vm *vm, uint64_t gpa, unsigned int n, struct cds_list_head *invalid)
{
	struct shadow_vm *sh = vm->shadow;
	gfn_t gfn = gpa >> 12;
	struct shadow_page *sp;
	bool flush = false;

again:
	for_each_gfn_sp(sh, sp, gfn) {
		unsigned int size = sp->role.has_4_byte_gpte ? 4 : 8;
		bool misaligned = write_misaligned(gpa, n, size);
		unsigned int first, last;

		if (sp->role.direct)
			continue;
		if (misaligned || (sp->role.level > PG_LEVEL_4K && ++sp->write_flooding_count >= 3)) {
			if (!misaligned)
				atomic_fetch_add_explicit(&sh->flooded, 1, memory_order_relaxed);
			shadow_prepare_zap(vm, sp, invalid);
			flush = true;
			goto again;
		}
		first = (unsigned int)((gpa & 0xfff) / size);
		last = (unsigned int)(((gpa & 0xfff) + n - 1) / size);
		for (unsigned int g = first; g <= last; g++) {
			/* Guest entry g -> the SPTE(s) of this page made from it. */
			if (size == 8) {
				flush |= shadow_zap_spte(vm, sp, &sp->spt[g]);
			} else if (sp->role.level == PG_LEVEL_4K) {
				if (g / 512 == sp->role.quadrant)
					flush |= shadow_zap_spte(vm, sp, &sp->spt[g % 512]);
			} else if (g / 256 == sp->role.quadrant) {
				flush |= shadow_zap_spte(vm, sp, &sp->spt[(g % 256) * 2]);
				flush |= shadow_zap_spte(vm, sp, &sp->spt[(g % 256) * 2 + 1]);
			}
		}
	}
	return flush;
}

static void store_bytes(uintptr_t hva, const void *buf, unsigned int n)
{
	/* Aligned entry-sized stores are single-copy atomic, as on x86: a
	 * concurrent walker never sees half an entry. */
	if (n == 8 && !(hva & 7)) {
		uint64_t x;

		memcpy(&x, buf, 8);
		__atomic_store_n((uint64_t *)hva, x, __ATOMIC_RELEASE);
	} else if (n == 4 && !(hva & 3)) {
		uint32_t x;

		memcpy(&x, buf, 4);
		__atomic_store_n((uint32_t *)hva, x, __ATOMIC_RELEASE);
	} else {
		memcpy((void *)hva, buf, n);
	}
}

/* A store into a shadowed guest table is done: dirty logging and counters. */
static void pt_store_done(struct vmmu_vcpu *v, uint64_t gpa)
{
	struct vmmu_vm *vm = v->vm;
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);

	if (s && memslot_logging(s))
		vcpu_mark_page_dirty(v, s, gpa >> 12);
	atomic_fetch_add_explicit(&vm->shadow->pte_writes, 1, memory_order_relaxed);
	STAT_INC(v->stat.pt_write_emulations);
}

/*
 * Zap what shadow pages made of the entries [gpa, gpa + n) held before a
 * store, whether the store was made under the lock or just before it.
 * Caller in an RCU read section.
 */
static void track_store(struct vmmu_vm *vm, uint64_t gpa, const void *buf, uintptr_t hva, unsigned int n)
{
	CDS_LIST_HEAD(invalid);
	bool flush;

	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (buf)
		store_bytes(hva, buf, n);
	flush = track_write(vm, gpa, n, &invalid);
	shadow_commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
}

void shadow_emulated_store(struct vmmu_vcpu *v, uint64_t gpa, uintptr_t hva, const void *buf, unsigned int n)
{
	/*
	 * The store and the zaps are one step under mmu_lock: a fault that
	 * walked the old entry re-checks it under the lock (shadow_walk_changed), so it
	 * either sees the new value or installs before the zap removes it.
	 */
	vmmu_rcu_read_lock();
	track_store(v->vm, gpa, buf, hva, n);
	vmmu_rcu_read_unlock();
	pt_store_done(v, gpa);
}

void shadow_phys_store_done(struct vmmu_vcpu *v, const struct memslot *s, uint64_t gpa, unsigned int n)
{
	/*
	 * KVM's emulator order: guest memory first, page tracking second.  The
	 * store the caller just made and this load of the count pair with the
	 * count's increment and the walk re-check of shadow_account(): a
	 * fault that began shadowing gfn from its old contents either re-reads
	 * the new entry, or its page is counted here and its SPTE zapped.
	 * (Checking first and storing second let such a fault install an SPTE
	 * from the old entry that no invalidation would ever remove.)
	 */
	shadow_track_barrier(v->vm->shadow);
	if (shadow_gfn_write_tracked(s, gpa >> 12)) {
		track_store(v->vm, gpa, NULL, 0, n);
		pt_store_done(v, gpa);
	} else if (memslot_logging(s)) {
		vcpu_mark_page_dirty(v, s, gpa >> 12);
	}
}

/*
 * The MMU cannot emulate a write to gfn (the hardware's A/D update of a
 * guest page table that lives in a page the MMU shadows as some other
 * table): the gfn stops being shadowed, so its mapping can be writable
 * (KVM's kvm_mmu_unprotect_page).  It is shadowed again on its next use
 * as a table.  mmu_lock taken here.
 */
void shadow_unprotect_gfn(struct vmmu_vm *vm, gfn_t gfn)
{
	struct shadow_vm *sh = vm->shadow;
	struct shadow_page *sp;
	CDS_LIST_HEAD(invalid);
	bool flush = false;

	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
again:
	for_each_gfn_sp(sh, sp, gfn) {
		if (sp->role.direct)
			continue;
		shadow_prepare_zap(vm, sp, &invalid);
		flush = true;
		goto again;
	}
	shadow_commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}
