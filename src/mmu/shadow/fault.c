/* SPDX-License-Identifier: MIT */
/*
 * The shadow page fault: the guest walk (with A/D updates in guest memory),
 * the walk turned into shadow pages and a leaf SPTE (KVM's FNAME(fetch)), the
 * MMIO fast path, and the lockless fast page fault under direct roots.
 */
#include "mmu/shadow/shadow_int.h"

#include <string.h>

#include "cpu/hw.h"
#include "test_hook.h"
#include "vm/trace.h"

struct swalk {
	struct vmmu_vcpu *v;
	int host_error;
	uint64_t bad_gpa;
};

static int swalk_read(void *ctx, uint64_t gpa, unsigned int size, uint64_t *val)
{
	struct swalk *w = ctx;
	const struct memslot *s = memslots_find_gfn(vm_memslots(w->v->vm), gpa >> 12);

	/* Wait for a slot being deleted or moved, as a data page's fault does. */
	if (s && (s->flags & MEMSLOT_INVALID)) {
		w->bad_gpa = gpa;
		return WALK_ABORT_RETRY;
	}
	switch (shadow_guest_read(w->v->vm, gpa, size, val)) {
	case 0:
		return 0;
	case SHADOW_READ_GONE:
		w->host_error = VMMU_EFAULT;
		w->bad_gpa = gpa;
		return WALK_ABORT_HOST;
	default:
		return WALK_ABORT_NOT_RAM;
	}
}

/*
 * A/D updates of guest entries, as the CPU would make them: atomic on guest
 * memory, and a store to guest memory like any other (dirty logging sees it).
 * The host must let us write there.
 */
static int swalk_cmpxchg(void *ctx, uint64_t gpa, unsigned int size, uint64_t old, uint64_t new_val)
{
	struct swalk *w = ctx;
	struct vmmu_vm *vm = w->v->vm;
	const struct memslot *s = memslots_find_gfn(vm_memslots(vm), gpa >> 12);
	const struct hostprot_set *hs = atomic_load_explicit(&vm->hostprot, memory_order_acquire);
	unsigned int prot;
	uintptr_t hva;
	bool ok;

	if (!s)
		return WALK_ABORT_NOT_RAM;
	if (s->flags & MEMSLOT_INVALID) {
		w->bad_gpa = gpa;
		return WALK_ABORT_RETRY;
	}
	hva = memslot_gfn_to_hva(s, gpa >> 12);
	hostprot_uniform(hs, hva, 4096, &prot);
	if (prot != VMMU_HOST_RW || (s->flags & VMMU_MEM_READONLY) ||
	    atomic_load_explicit(&vm->released, memory_order_acquire)) {
		w->host_error = VMMU_EFAULT;
		w->bad_gpa = gpa;
		return WALK_ABORT_HOST;
	}
	hva += gpa & 0xfff;
	if (size == 8) {
		ok = __atomic_compare_exchange_n((uint64_t *)hva, &old, new_val, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE);
	} else {
		uint32_t o = (uint32_t)old;

		ok = __atomic_compare_exchange_n((uint32_t *)hva, &o, (uint32_t)new_val, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE);
	}
	if (ok && memslot_logging(s))
		vcpu_mark_page_dirty(w->v, s, gpa >> 12);
	return ok;
}

/*
 * KVM's FNAME(gpte_changed): the walk ran without mmu_lock; the tables it read
 * are now write-protected (or their pages unsync, where stale is allowed), so
 * re-reading them once under the lock tells whether the walk is still true.
 */
bool shadow_walk_changed(struct vmmu_vcpu *v, const struct shadow_ctx *c, const struct walk_result *wr,
			 uint64_t gva)
{
	const struct walk_cpu *w = &c->w;
	const struct gpte_fmt *f = gpte_fmt_of(w);

	/* Not the PAE PDPTEs: they are registers, reloaded with CR3. */
	for (int gl = wr->level; gl <= f->levels; gl++) {
		uint64_t now;

		if (shadow_guest_read(v->vm, gpte_entry_gpa(w, wr->table_gpa[gl], gva, gl), f->size, &now))
			return true;
		if ((now ^ wr->pte[gl]) & gpte_cmp_mask(w))
			return true;
	}
	return false;
}

/* Rights the guest entries above level gl grant (what an indirect page of
 * level gl inherits in its role). */
static unsigned int access_above(const struct walk_cpu *w, const struct walk_result *wr, int gl)
{
	unsigned int acc = ACC_ALL;

	for (int l = gpte_fmt_of(w)->levels; l > gl; l--)
		acc &= gpte_access(w, wr->pte[l]);
	return acc;
}

/*
 * Would the hardware let this access through the SPTE?  Shadow paging: the
 * x86 rules with CR0.WP forced on (the host's).  A nested guest's shadow
 * EPT/NPT: the TDP walker's rules.
 */
static bool hw_allows(const struct vmmu_vcpu *v, const struct shadow_ctx *c, uint64_t spte, unsigned int pkey,
		      unsigned int walk_access)
{
	const struct spte_fmt *f = &v->vm->fmt;
	unsigned int acc = spte_access(f, spte), wacc;

	if (c->nested)
		return perms_allow(f, entry_perms(f, spte),
				   (walk_access & WALK_WRITE) ? ACC_WRITE : (walk_access & WALK_FETCH) ? ACC_EXEC : 0);
	wacc = WALK_ACC_R | ((acc & ACC_WRITE) ? WALK_ACC_W : 0) | ((acc & ACC_USER) ? WALK_ACC_U : 0) |
	       ((acc & ACC_EXEC) ? WALK_ACC_X : 0);
	return !walk_permission_fault(&v->hw_wcpu, wacc, pkey, walk_access);
}

struct sfetch {
	struct shadow_ctx *c;
	uint64_t gva;			/* what the context translates: gva, or an L2 gpa (nested) */
	unsigned int walk_access;
	const struct walk_result *wr;
	struct page_fault *pf;
	struct shadow_fault *out;
	struct cds_list_head *invalid;
	bool flush;
};

static int fetch_leaf(struct vmmu_vcpu *v, struct shadow_page *sp, struct sfetch *f)
{
	struct vmmu_vm *vm = v->vm;
	const struct walk_result *wr = f->wr;
	uint64_t *sptep = &sp->spt[shadow_index(f->gva, PG_LEVEL_4K)];
	unsigned int i = sptep_index(sptep);
	gfn_t gfn = wr->gpa >> 12;
	const struct walk_cpu *w = &f->c->w;
	bool write = f->walk_access & WALK_WRITE;
	unsigned int acc = walk_acc_to_acc(w, wr->access);
	unsigned int pkey = w->mode == WALK_MODE_4LEVEL || w->mode == WALK_MODE_5LEVEL ? wr->pkey : 0;
	uint64_t old = spte_load(sptep), spte, ad;

	/* A clean guest page stays read-only, so the write that dirties it
	 * faults and the walk sets D (KVM's protect_clean_gpte). */
	if (!wr->dirty && !write)
		acc &= ~ACC_WRITE;
	/*
	 * CR0.WP=0 on hardware that runs with WP=1: a supervisor write to a
	 * read-only page becomes a writable supervisor mapping (KVM's trick,
	 * hence cr0_wp/smep_andnot_wp in the role).  With SMAP or protection
	 * keys a user page must stay a user page (both check user pages even
	 * for supervisor accesses), so that write is emulated below instead;
	 * so is one into a direct page, which other mappings of the frame may
	 * share with a clean guest entry whose D bit the write must not skip.
	 */
	if (write && !(acc & ACC_WRITE) && !f->c->nested && !w->wp && !sp->role.direct &&
	    !((acc & ACC_USER) && (sp->role.smap_andnot_wp || sp->role.pke_andnot_wp))) {
		acc = (acc | ACC_WRITE) & ~ACC_USER;
		if (w->smep)
			acc &= ~ACC_EXEC;
	}

	if (f->pf->is_mmio) {
		unsigned int macc = acc & (ACC_WRITE | ACC_USER);

		if (is_shadow_present(old))
			f->flush |= shadow_zap_spte(vm, sp, sptep);
		/*
		 * A nested guest's MMIO SPTE keeps no rights in the EPT format,
		 * and mmio_fast() answers a read from it without asking L1's
		 * tables: so none stands for an L1 entry that does not allow
		 * reads (EPT execute-only, ACC_USER being R there).  This access
		 * still goes to the device; the next one walks L1's tables.
		 */
		if (f->c->nested && !(acc & ACC_USER))
			return RET_PF_EMULATE;
		if (!sp->role.direct)
			sp->gfns[i] = gfn;
		spte_store(sptep, make_mmio_spte(&vm->fmt, gfn, macc, f->pf->mmio_gen));
		VM_STAT_ADD(vm->stat.mmio_sptes, 1);
		return RET_PF_EMULATE;
	}

	if (!f->pf->map_writable)
		acc &= ~ACC_WRITE;
	if ((acc & ACC_WRITE) && !shadow_try_unsync(vm, gfn))
		acc &= ~ACC_WRITE;
	spte = make_leaf_spte(&vm->fmt, f->pf->pfn, PG_LEVEL_4K, acc, f->pf->map_writable, false) |
	       ((uint64_t)pkey << SPTE_PKEY_SHIFT);

	if (is_shadow_present(old) &&
	    ((sp->role.direct ? sp->gfn + i : sp->gfns[i]) != gfn || spte_to_pfn(old) != f->pf->pfn)) {
		f->flush |= shadow_zap_spte(vm, sp, sptep);
		old = 0;
	}
	if (is_shadow_present(old)) {
		uint64_t prev = spte_xchg(sptep, spte);

		if (is_writable_pte(&vm->fmt, prev) && !is_writable_pte(&vm->fmt, spte))
			f->flush = true;
	} else {
		const struct memslot *s = shadow_slot_of(vm, gfn);

		if (VM_BUG_ON(vm, !s, "mapping gfn %#llx that has no memslot", (unsigned long long)gfn))
			return RET_PF_RETRY;
		if (!sp->role.direct)
			sp->gfns[i] = gfn;
		spte_store(sptep, spte);
		pte_list_add(&v->sh.desc_cache, &s->shadow->rmap[gfn - s->base_gfn], sptep);
		s->shadow->nr_rmap++;
		SH_COUNT_ADD(vm->shadow->nr_leaves, 1);
	}
	if (is_writable_pte(&vm->fmt, spte) && memslot_logging(f->pf->slot))
		vcpu_mark_page_dirty(v, f->pf->slot, gfn);
	/*
	 * What the shadow cannot grant, vmmu does itself: a store to a
	 * write-protected guest table, or one the guest allows only because of
	 * CR0.WP=0 (SMAP or a protection key forbids the converted mapping).
	 */
	if (write && !hw_allows(v, f->c, spte, pkey, f->walk_access)) {
		f->out->ptwrite = true;
		f->out->hva = f->pf->hva + (wr->gpa & 0xfff);
		return RET_PF_EMULATE;
	}
	ad = vm->fmt.accessed | vm->fmt.dirty;
	return (old & ~ad) == (spte & ~ad) ? RET_PF_SPURIOUS : RET_PF_FIXED;
}

static int fetch(struct vmmu_vcpu *v, struct sfetch *f)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_ctx *c = f->c;
	const struct walk_cpu *w = &c->w;
	const struct walk_result *wr = f->wr;
	bool four_byte = w->mode == WALK_MODE_32;
	struct {
		uint64_t *sptep;
		struct shadow_page *child;
	} link[WALK_MAX_LEVELS];
	unsigned int nlink = 0;
	struct shadow_page *sp;
	int level;

	if (c->pae_root_mode) {
		sp = c->pae_sp[(f->gva >> 30) & 3];
		level = 2;
	} else {
		sp = c->root.sp;
		level = c->root_role.level;
	}
	if (!sp) {
		/* A PDPTE the load saw not present, present now: reload. */
		atomic_fetch_or(&v->requests, VCPU_REQ_MMU_RELOAD);
		return RET_PF_RETRY;
	}
	for (; level > PG_LEVEL_4K; level--) {
		uint64_t *sptep = &sp->spt[shadow_index(f->gva, level)];
		uint64_t spte = spte_load(sptep);
		bool direct = wr->level >= level;
		union sp_role role = sp->role;
		struct shadow_page *child;
		gfn_t gfn;

		sp->write_flooding_count = 0;
		role.level = level - 1;
		role.quadrant = 0;
		role.direct = direct;
		if (direct) {
			gfn = (wr->gpa >> 12) & ~(spte_level_pages(level) - 1);
			role.access = walk_acc_to_acc(w, wr->access);
			/* A clean huge page must not share W with a dirty one: the
			 * write through it has to fault and set its D bit. */
			if (!wr->dirty && !(f->walk_access & WALK_WRITE))
				role.access &= ~ACC_WRITE;
			role.pkey = w->mode == WALK_MODE_4LEVEL || w->mode == WALK_MODE_5LEVEL ? wr->pkey : 0;
		} else {
			gfn = wr->table_gpa[level - 1] >> 12;
			role.access = access_above(w, wr, level - 1);
			if (four_byte && level - 1 == PG_LEVEL_4K)
				role.quadrant = (f->gva >> 21) & 1;
		}
		if (is_shadow_present(spte)) {
			child = spte_to_child(vm, spte);
			if (child->gfn == gfn && child->role.word == role.word) {
				sp = child;
				continue;
			}
			/* The guest changed this entry in a way we missed only if
			 * the page was unsync; either way, relink. */
			f->flush |= shadow_zap_spte(vm, sp, sptep);
		}
		child = shadow_get_sp(v, gfn, role, &f->flush, f->invalid);
		if (!child) {
			f->out->host_error = VMMU_ENOMEM;
			return RET_PF_FAULT;
		}
		/* Linked below, once the walk is re-checked. */
		link[nlink].sptep = sptep;
		link[nlink++].child = child;
		sp = child;
	}
	sp->write_flooding_count = 0;
	/* The new write protections must reach every TLB before the walk is
	 * re-checked: a store through an old writable entry after the check
	 * would go unseen. */
	if (f->flush) {
		vm_flush_remote_tlbs(vm);
		f->flush = false;
	}
	/*
	 * Only a walk that still holds may link what it chose (KVM re-checks
	 * each gpte before link_shadow_page()).  A page made from a guest
	 * entry the guest has changed since, linked anyway, would stay
	 * reachable after the retry: a direct page found again by (frame,
	 * rights), with the leaves it had when an identical entry was last
	 * used, maps a huge guest page its entry no longer allows (after the
	 * INVLPG or INVEPT that should have ended it).
	 */
	if (w->mode != WALK_MODE_NONE && shadow_walk_changed(v, c, wr, f->gva))
		return RET_PF_RETRY;
	for (unsigned int i = 0; i < nlink; i++) {
		spte_store(link[i].sptep, make_nonleaf_spte(&vm->fmt, (uintptr_t)link[i].child->spt >> 12));
		pte_list_add(&v->sh.desc_cache, &link[i].child->parent_ptes, link[i].sptep);
	}
	return fetch_leaf(v, sp, f);
}

/*
 * A reserved-bit fault on an MMIO SPTE of the current generation goes to the
 * embedder without a guest walk (KVM's handle_mmio_page_fault) when the SPTE's
 * saved rights prove the access allowed; otherwise the slow path decides.
 */
static int mmio_fast(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t gva, unsigned int walk_access,
		     struct shadow_fault *out)
{
	struct vmmu_vm *vm = v->vm;
	const struct walk_cpu *w = &c->w;
	uint64_t *sptep, spte, root;
	unsigned int acc, wacc;
	int level;

	/*
	 * EPT-format MMIO SPTEs keep no rights: under a nested guest only a
	 * read is known to be allowed by the L1 entry the SPTE was made from
	 * (every mapping allows reads but execute-only ones, and fetch_leaf()
	 * makes no MMIO SPTE of those); the rest walks L1's tables again.
	 */
	if ((walk_access & WALK_FETCH) || (c->nested && (walk_access & WALK_WRITE)) ||
	    (w->pke && w->mode >= WALK_MODE_4LEVEL) || !v->mmu_ready || !shadow_roots_valid(v, c))
		return RET_PF_INVALID;
	root = shadow_root_entry(v, c, gva, &level);	/* sets level: not in the same call */
	sptep = shadow_find_leaf_sptep(root, level, gva);
	if (!sptep)
		return RET_PF_INVALID;
	spte = spte_load(sptep);
	if (!is_mmio_spte(&vm->fmt, spte) || !mmio_spte_gen_matches(spte, vm_memslots(vm)->generation))
		return RET_PF_INVALID;
	acc = get_mmio_spte_access(&vm->fmt, spte);
	wacc = WALK_ACC_R | WALK_ACC_X | ((acc & ACC_WRITE) ? WALK_ACC_W : 0) | ((acc & ACC_USER) ? WALK_ACC_U : 0);
	if (!c->nested && walk_permission_fault(w, wacc, 0, walk_access))
		return RET_PF_INVALID;
	out->gpa = (get_mmio_spte_gfn(spte) << 12) | (gva & 0xfff);
	return RET_PF_EMULATE;
}

/*
 * The lockless fast page fault on shadow pages (seed 002), only where KVM
 * allows it: under a direct root (paging off), whose pages all map gfn =
 * page index.  An indirect page's gfns can change under a lockless writer
 * (the ABA race of seed 002's locking notes), so a paging guest never comes
 * here.  Like the TDP path: W back with one cmpxchg when only dirty logging
 * took it (MMU-writable still set); write tracking clears MMU-writable too.
 */
static int shadow_fast_pf(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t gva, uint32_t hw_error)
{
	struct vmmu_vm *vm = v->vm;
	int level, ret = RET_PF_INVALID;
	uint64_t root = shadow_root_entry(v, c, gva, &level);
	uint64_t *sptep = shadow_find_leaf_sptep(root, level, gva);
	uint64_t spte, new_spte = 0;

	if (!sptep)
		return RET_PF_INVALID;
	spte = spte_load(sptep);
	for (int retry = 0; retry < 4; retry++) {
		const struct memslot *s;

		if (!is_shadow_present(spte) || !is_mmu_writable_spte(&vm->fmt, spte))
			break;
		if (is_writable_pte(&vm->fmt, spte)) {
			new_spte = spte;
			ret = RET_PF_SPURIOUS;
			break;
		}
		new_spte = spte | vm->fmt.writable;
		if (!atomic_compare_exchange_strong_explicit((_Atomic uint64_t *)sptep, &spte, new_spte,
							     memory_order_acq_rel, memory_order_acquire))
			continue;
		/* After the cmpxchg, never before: the harvest that clears the
		 * bit re-protects first, so the mark cannot be lost. */
		s = memslots_find_gfn(vm_memslots(vm), gva >> 12);
		if (s && memslot_logging(s))
			vcpu_mark_page_dirty(v, s, gva >> 12);
		ret = RET_PF_FIXED;
		break;
	}
	if (ret != RET_PF_INVALID)
		mmu_trace_fast_pf(v, gva, hw_error, sptep, spte, new_spte, ret == RET_PF_FIXED);
	return ret;
}

int shadow_walk_guest(struct vmmu_vcpu *v, const struct walk_cpu *wc, uint64_t addr, unsigned int walk_access,
		      struct walk_result *wr)
{
	struct swalk w = { .v = v };
	const struct walk_mem_ops ops = { swalk_read, swalk_cmpxchg, &w };

	return walk_gva(wc, &ops, addr, walk_access, wr);
}

static int __shadow_page_fault(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t gva, unsigned int walk_access,
			       uint32_t hw_error, struct shadow_fault *out)
{
	struct vmmu_vm *vm = v->vm;
	struct swalk w = { .v = v };
	const struct walk_mem_ops ops = { swalk_read, swalk_cmpxchg, &w };
	struct walk_result wr;
	struct page_fault pf;
	CDS_LIST_HEAD(invalid);
	struct sfetch f;
	int r;

	memset(out, 0, sizeof(*out));
	STAT_INC(v->stat.pf_taken);
	if ((hw_error & PFERR_RSVD) && mmio_fast(v, c, gva, walk_access, out) == RET_PF_EMULATE) {
		STAT_INC(v->stat.pf_mmio_spte);
		STAT_INC(v->stat.pf_emulate);
		return RET_PF_EMULATE;
	}

	if (c->root_role.direct && !(vm->cfg.flags & VMMU_VM_NO_FAST_PF) && (hw_error & PFERR_P) &&
	    (walk_access & WALK_WRITE) && !(hw_error & PFERR_RSVD) && v->mmu_ready && shadow_roots_valid(v, c)) {
		r = shadow_fast_pf(v, c, gva, hw_error);
		if (r == RET_PF_FIXED || r == RET_PF_SPURIOUS) {
			if (r == RET_PF_FIXED)
				STAT_INC(v->stat.pf_fast_fixed);
			else
				STAT_INC(v->stat.pf_fast_spurious);
			return mmu_count_pf_result(v, r);
		}
		STAT_INC(v->stat.pf_fast_failed);
	}

	if (c->w.mode == WALK_MODE_NONE) {
		memset(&wr, 0, sizeof(wr));
		wr.gpa = gva;
		wr.level = WALK_MAX_LEVELS;	/* everything is "huge": direct pages */
		wr.access = WALK_ACC_W | WALK_ACC_U | WALK_ACC_X | WALK_ACC_R;
		wr.dirty = true;
	} else {
		r = walk_gva(&c->w, &ops, gva, walk_access, &wr);
		if (r == WALK_FAULT || r == WALK_ABORT_NOT_RAM) {
			bool ept = gpte_fmt_of(&c->w)->ept;

			out->guest_fault = true;
			out->vector = r == WALK_FAULT ? wr.vector : ept ? WALK_VECTOR_EPT_VIOLATION : WALK_VECTOR_PF;
			/*
			 * A table outside RAM reads as not present (as KVM's
			 * walker): a not-present #PF, or for L1's EPT an EPT
			 * violation with no rights (the access bits only).
			 */
			if (r == WALK_FAULT)
				out->error_code = wr.error_code;
			else if (ept)
				out->error_code = (walk_access & WALK_WRITE) ? 2 : (walk_access & WALK_FETCH) ? 4 : 1;
			else
				out->error_code = walk_pf_error_code(&c->w, walk_access, 0);
			out->ept_misconfig = r == WALK_FAULT && wr.ept_misconfig;
			out->fault_addr = r == WALK_FAULT ? wr.fault_addr : gva;
			/* (Counted where the access returns it: a fault of L1's
			 * tables is a nested exit instead.) */
			return RET_PF_GUEST_FAULT;
		}
		if (r == WALK_ABORT_HOST) {
			out->host_error = w.host_error;
			out->gpa = w.bad_gpa;
			return RET_PF_FAULT;
		}
		if (r == WALK_ABORT_RETRY) {
			out->gpa = w.bad_gpa;	/* the guest table's: what the access waits for */
			return mmu_count_pf_result(v, RET_PF_RETRY);
		}
		vmmu_test_hook(VMMU_TEST_HOOK_SHADOW_WALKED, gva >> 12);
	}
	out->gpa = wr.gpa;

	memset(&pf, 0, sizeof(pf));
	pf.addr = wr.gpa;
	pf.gfn = wr.gpa >> 12;
	pf.write = walk_access & WALK_WRITE;
	pf.exec = walk_access & WALK_FETCH;
	r = mmu_faultin(v, &pf);
	if (r == RET_PF_EMULATE) {
		out->readonly_write = pf.readonly_write;
		STAT_INC(v->stat.pf_emulate);
		return r;
	}
	if (r == RET_PF_FAULT) {
		out->host_error = pf.host_error;
		return r;
	}
	if (r != RET_PF_CONTINUE)
		goto out;
	if (pt_cache_topup(&vm->arena, &v->pt_cache, PT_CACHE_MIN) || shadow_desc_cache_topup(&v->sh.desc_cache)) {
		out->host_error = VMMU_ENOMEM;
		return RET_PF_FAULT;
	}

	f = (struct sfetch){ .c = c, .gva = gva, .walk_access = walk_access, .wr = &wr, .pf = &pf, .out = out,
			     .invalid = &invalid };
	pthread_rwlock_wrlock(&vm->mmu_lock);
	/*
	 * The write lock orders this against shadow-paging invalidations; a
	 * nested guest's fault on a TDP VM also needs the install section,
	 * since an invalidation there checks for shadow pages without the
	 * lock (vmmu_invalidate_range_begin).
	 */
	vcpu_install_begin(v);
	if (!pf.is_mmio && mmu_invalidate_retry(vm, &pf)) {
		r = RET_PF_RETRY;
	} else if (!v->mmu_ready || c != v->sh.mmu || !shadow_roots_valid(v, c)) {
		atomic_fetch_or(&v->requests, VCPU_REQ_MMU_RELOAD);
		r = RET_PF_RETRY;
	} else if (!shadow_make_pages_available(vm, &invalid)) {
		out->host_error = VMMU_ENOMEM;
		r = RET_PF_FAULT;
	} else {
		r = fetch(v, &f);
	}
	vcpu_install_end(v);
	shadow_commit_zap(vm, &invalid, f.flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
out:
	return mmu_count_pf_result(v, r);
}

int shadow_page_fault(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t gva, unsigned int walk_access,
		      uint32_t hw_error, struct shadow_fault *out)
{
	uint64_t t0;
	int r;

	if (likely(!vm_tracing(v->vm)))
		return __shadow_page_fault(v, c, gva, walk_access, hw_error, out);
	t0 = vm_trace_now();
	r = __shadow_page_fault(v, c, gva, walk_access, hw_error, out);
	mmu_trace_pf(v, t0, gva, hw_error, r, 0, VMMU_TRACE_F_SHADOW | (c->nested ? VMMU_TRACE_F_NESTED : 0));
	return r;
}
