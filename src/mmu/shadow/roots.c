/* SPDX-License-Identifier: MIT */
/*
 * Roles and contexts (seed 000: rebuilt only when the role changes), roots
 * and the previous-root cache (fast CR3 switch), loading what the hardware
 * walks, INVLPG.
 */
#include "mmu/shadow/shadow_int.h"

#include "cpu/hw.h"
#include "vm/trace.h"

union cpu_role shadow_calc_cpu_role(const struct vmmu_vcpu *v)
{
	const struct walk_cpu *w = &v->wcpu;
	union cpu_role r = { .as_u64 = 0 };

	r.base.access = ACC_ALL;
	r.ext.valid = 1;
	if (w->mode == WALK_MODE_NONE) {
		/* Paging off: nothing else of the state matters to translation. */
		r.base.direct = 1;
		return r;
	}
	r.base.level = w->mode == WALK_MODE_32 ? 2 : w->mode == WALK_MODE_PAE ? 3 : w->mode == WALK_MODE_4LEVEL ? 4 : 5;
	r.base.has_4_byte_gpte = w->mode == WALK_MODE_32;
	r.base.cr4_pse = w->mode == WALK_MODE_32 && w->pse;
	r.base.efer_nx = w->nxe;
	r.base.cr0_wp = w->wp;
	r.base.smep_andnot_wp = w->smep && !w->wp;
	r.base.smap_andnot_wp = w->smap && !w->wp;
	r.base.pke_andnot_wp = w->pke && !w->wp && w->mode >= WALK_MODE_4LEVEL;
	r.ext.cr0_pg = 1;
	r.ext.cr4_pae = w->mode != WALK_MODE_32;
	r.ext.cr4_pse = w->pse;
	r.ext.cr4_pke = w->pke;
	r.ext.cr4_smap = w->smap;
	r.ext.cr4_smep = w->smep;
	r.ext.cr4_la57 = w->mode == WALK_MODE_5LEVEL;
	r.ext.efer_lma = w->mode >= WALK_MODE_4LEVEL;
	return r;
}

/*
 * The role of the roots (KVM's kvm_calc_shadow_mmu_root_page_role): the
 * guest's base role, with 32-bit, PAE and unpaged guests shadowed under four
 * PDPTE-like entries (KVM's pae_root), as a 64-bit host must.
 */
static union sp_role calc_root_role(union cpu_role cr)
{
	union sp_role r = cr.base;

	if (!cr.ext.cr0_pg || r.level < 4)
		r.level = 3;
	return r;
}

static bool root_valid(const struct shadow_vm *sh, const struct shadow_page *sp)
{
	return sp && !sp_obsolete(sh, sp);
}

static void put_root(struct vmmu_vm *vm, struct shadow_page *sp, struct cds_list_head *invalid)
{
	if (!sp)
		return;
	VM_BUG_ON(vm, !sp->root_count, "root %p put more often than got", (void *)sp);
	if (--sp->root_count == 0 && sp->role.invalid)
		cds_list_add(&sp->link, invalid);	/* shadow_prepare_zap already unlinked it */
}

/* Whether what c has loaded may still be walked (none of it zapped since). */
bool shadow_roots_valid(const struct vmmu_vcpu *v, const struct shadow_ctx *c)
{
	struct shadow_vm *sh = v->vm->shadow;

	if (c->pae_root_mode) {
		for (int i = 0; i < 4; i++)
			if (c->pae_sp[i] && !root_valid(sh, c->pae_sp[i]))
				return false;
		return true;
	}
	return root_valid(sh, c->root.sp);
}

/* The gfn of the top table the context shadows (CR3, EPTP or nCR3). */
static uint64_t pgd_gfn(const struct walk_cpu *w)
{
	if (w->mode == WALK_MODE_32)
		return (w->root & 0xfffff000ULL) >> 12;
	return (w->root & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12;
}

/* The ROOT_LOAD and ROOT_SWITCH trace events of context c (vm/trace.h). */
static void trace_root(struct vmmu_vcpu *v, const struct shadow_ctx *c, uint32_t kind, uint32_t flags)
{
	struct vmmu_trace_event ev = {
		.kind = kind,
		.vcpu_id = v->id,
		.gpa = pgd_gfn(&c->w) << 12,
		.level = c->root_role.level,
		.flags = flags | VMMU_TRACE_F_SHADOW | (c->nested ? VMMU_TRACE_F_NESTED : 0),
	};

	vm_trace(v->vm, &ev);
}

static bool ctx_holds_roots(const struct shadow_ctx *c, bool prev_too)
{
	bool any = c->root.sp || c->pae_sp[0] || c->pae_sp[1] || c->pae_sp[2] || c->pae_sp[3];

	for (unsigned int i = 0; prev_too && i < c->nr_prev; i++)
		any |= c->prev[i].sp != NULL;
	return any;
}

static void drop_roots_locked(struct vmmu_vcpu *v, struct shadow_ctx *c, bool prev_too, bool only_invalid,
			      struct cds_list_head *invalid)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_vm *sh = vm->shadow;

	for (int i = 0; i < 4; i++) {
		if (c->pae_sp[i] && (!only_invalid || !root_valid(sh, c->pae_sp[i]))) {
			put_root(vm, c->pae_sp[i], invalid);
			c->pae_sp[i] = NULL;
			c->pae_root[i] = 0;
		}
	}
	if (c->root.sp && (!only_invalid || !root_valid(sh, c->root.sp))) {
		put_root(vm, c->root.sp, invalid);
		c->root.sp = NULL;
	}
	for (unsigned int i = 0; i < c->nr_prev; i++) {
		struct shadow_root_info *p = &c->prev[i];

		if (p->sp && ((prev_too && !only_invalid) || !root_valid(sh, p->sp))) {
			put_root(vm, p->sp, invalid);
			p->sp = NULL;
		}
	}
}

/* Drops c's roots (and previous roots with prev_too); mmu_lock taken here. */
void shadow_ctx_unload(struct vmmu_vcpu *v, struct shadow_ctx *c, bool prev_too)
{
	struct vmmu_vm *vm = v->vm;
	CDS_LIST_HEAD(invalid);

	if (c == v->sh.mmu)
		v->mmu_ready = false;
	if (!ctx_holds_roots(c, prev_too))
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	drop_roots_locked(v, c, prev_too, false, &invalid);
	shadow_commit_zap(vm, &invalid, false);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

/*
 * Drops c's roots (current and previous) that shadow the top table at gfn
 * pgd, or all of them with all; mmu_lock taken here.  What goes is reloaded
 * (and synced) on its next use: INVEPT's semantics for cached roots.
 */
void shadow_ctx_drop_pgd(struct vmmu_vcpu *v, struct shadow_ctx *c, uint64_t pgd, bool all)
{
	struct vmmu_vm *vm = v->vm;
	CDS_LIST_HEAD(invalid);

	if (!ctx_holds_roots(c, true))
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (c->root.sp && (all || c->root.pgd == pgd)) {
		put_root(vm, c->root.sp, &invalid);
		c->root.sp = NULL;
		if (c == v->sh.mmu)
			v->mmu_ready = false;
	}
	for (unsigned int i = 0; i < c->nr_prev; i++) {
		if (c->prev[i].sp && (all || c->prev[i].pgd == pgd)) {
			put_root(vm, c->prev[i].sp, &invalid);
			c->prev[i].sp = NULL;
		}
	}
	shadow_commit_zap(vm, &invalid, false);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

void shadow_mmu_unload(struct vmmu_vcpu *v, bool prev_too)
{
	shadow_ctx_unload(v, &v->sh.root_mmu, prev_too);
	shadow_ctx_unload(v, &v->sh.guest_mmu, prev_too);
}

bool shadow_ctx_roots_valid(const struct vmmu_vcpu *v, const struct shadow_ctx *c)
{
	return shadow_roots_valid(v, c) && (c->pae_root_mode || c->root.sp);
}

void shadow_ctx_load_hw_root(struct vmmu_vcpu *v, const struct shadow_ctx *c)
{
	shadow_load_hw_root(v, c);
}

/* What the hardware walks from now on (KVM's root_hpa / pae_root). */
void shadow_load_hw_root(struct vmmu_vcpu *v, const struct shadow_ctx *c)
{
	if (c->pae_root_mode)
		v->hw = (struct hw_root){ .table = (uint64_t *)c->pae_root, .level = 3, .pae = true };
	else
		v->hw = (struct hw_root){ .table = c->root.sp->spt, .level = c->root_role.level,
					  .pt_writes = c->nested && v->vm->fmt.ept && !c->root_role.ad_disabled };
}

/* Loads the context in use (KVM's kvm_mmu_load): roots found in the hash or built. */
int shadow_mmu_load(struct vmmu_vcpu *v)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_ctx *c = v->sh.mmu;
	const struct walk_cpu *w = &c->w;
	CDS_LIST_HEAD(invalid);
	bool flush = false;
	int r = 0;

	if (v->mmu_ready && shadow_roots_valid(v, c))
		return 0;
	if (pt_cache_topup(&vm->arena, &v->pt_cache, PT_CACHE_MIN) || shadow_desc_cache_topup(&v->sh.desc_cache))
		return VMMU_ENOMEM;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	drop_roots_locked(v, c, false, true, &invalid);
	if (!shadow_make_pages_available(vm, &invalid)) {
		r = VMMU_ENOMEM;
		goto out;
	}
	if (c->pae_root_mode) {
		for (int i = 0; i < 4; i++) {
			union sp_role role = c->root_role;
			struct shadow_page *sp;
			gfn_t gfn;

			if (c->pae_sp[i])
				continue;
			role.level = 2;
			if (w->mode == WALK_MODE_NONE) {
				gfn = (gfn_t)i << 18;
				role.direct = 1;
			} else if (w->mode == WALK_MODE_32) {
				gfn = pgd_gfn(w);
				role.quadrant = i;
			} else {
				if (!gpte_present(gpte_fmt_of(w), w->pdptes[i]))
					continue;
				gfn = (w->pdptes[i] & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12;
			}
			sp = shadow_get_sp(v, gfn, role, &flush, &invalid);
			if (!sp) {
				r = VMMU_ENOMEM;
				goto out;
			}
			sp->root_count++;
			c->pae_sp[i] = sp;
			c->pae_root[i] = make_nonleaf_spte(&vm->fmt, (uintptr_t)sp->spt >> 12);
		}
	} else if (!c->root.sp) {
		struct shadow_page *sp = shadow_get_sp(v, pgd_gfn(w), c->root_role, &flush, &invalid);

		if (!sp) {
			r = VMMU_ENOMEM;
			goto out;
		}
		sp->root_count++;
		c->root = (struct shadow_root_info){ .pgd = pgd_gfn(w), .role = c->root_role, .sp = sp };
	}
	/* A new root may lead to pages that went out of sync meanwhile. */
	flush |= shadow_sync_all_locked(v);
	shadow_load_hw_root(v, c);
	v->mmu_ready = true;
out:
	shadow_commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
	if (!r) {
		/* Nothing the TLB holds was made from this root. */
		hw_tlb_flush(v);
		STAT_INC(v->stat.mmu_reloads);
		if (unlikely(vm_tracing(vm)))
			trace_root(v, c, VMMU_TRACE_ROOT_LOAD, 0);
	}
	return r;
}

/*
 * MOV to CR3 with the role unchanged (KVM's kvm_mmu_new_pgd).  4/5-level
 * roots are kept with up to cfg.shadow_prev_roots others, most recent first,
 * so a switch back is a swap (fast_pgd_switch); PAE-style roots are rebuilt,
 * as in KVM, when what they shadow (CR3's directory, or the PDPTE registers)
 * changed.  Without the no-flush bit the guest asked for a TLB flush of the
 * PCID, which for shadow pages means: bring unsync pages up to date.
 */
static bool pae_roots_stale(const struct shadow_ctx *s)
{
	const struct walk_cpu *w = &s->w;

	if (w->mode == WALK_MODE_32)
		return s->pae_sp[0] && s->pae_sp[0]->gfn != pgd_gfn(w);
	/* Paging off: the roots map fixed gfns.  A load with no PDPTE present
	 * loaded nothing but is a load all the same (mmu_ready): a PDPTE that
	 * is present now makes it stale like any other change. */
	if (w->mode != WALK_MODE_PAE)
		return false;
	for (int i = 0; i < 4; i++) {
		bool present = gpte_present(gpte_fmt_of(w), w->pdptes[i]);

		if (present != (s->pae_sp[i] != NULL) ||
		    (present && s->pae_sp[i]->gfn != (w->pdptes[i] & GENMASK_ULL(w->maxphyaddr - 1, 12)) >> 12))
			return true;
	}
	return false;
}

void shadow_ctx_new_pgd(struct vmmu_vcpu *v, struct shadow_ctx *s, bool noflush)
{
	struct vmmu_vm *vm = v->vm;
	uint64_t pgd = pgd_gfn(&s->w);
	CDS_LIST_HEAD(invalid);
	unsigned int i;

	if (s->pae_root_mode) {
		if (pae_roots_stale(s)) {
			shadow_ctx_unload(v, s, false);
			STAT_INC(v->stat.root_slow_switches);
			if (unlikely(vm_tracing(vm)))
				trace_root(v, s, VMMU_TRACE_ROOT_SWITCH, 0);
		} else if (!noflush) {
			shadow_sync_roots(v);
		}
		return;
	}
	if (s->root.sp && s->root.pgd == pgd && s->root.role.word == s->root_role.word) {
		if (!noflush)
			shadow_sync_roots(v);
		return;
	}
	/*
	 * The cached roots are this vCPU's and so are their references: a hit
	 * is a swap without mmu_lock (KVM's fast_pgd_switch).  A root zapped
	 * meanwhile reads as invalid, or if the zap comes after the check, its
	 * reload request is already pending for the next entry.
	 */
	for (i = 0; i < s->nr_prev; i++)
		if (s->prev[i].sp && s->prev[i].pgd == pgd && s->prev[i].role.word == s->root_role.word &&
		    root_valid(vm->shadow, s->prev[i].sp))
			break;
	if (i < s->nr_prev) {
		struct shadow_root_info hit = s->prev[i];

		/* Most recent first: the old current becomes prev[0]. */
		for (; i > 0; i--)
			s->prev[i] = s->prev[i - 1];
		s->prev[0] = s->root;
		s->root = hit;
		if (s == v->sh.mmu)
			shadow_load_hw_root(v, s);
		STAT_INC(v->stat.root_fast_switches);
		if (unlikely(vm_tracing(vm)))
			trace_root(v, s, VMMU_TRACE_ROOT_SWITCH, VMMU_TRACE_F_FAST);
		if (!noflush)
			shadow_sync_roots(v);
		return;
	}
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (s->nr_prev) {
		put_root(vm, s->prev[s->nr_prev - 1].sp, &invalid);
		for (i = s->nr_prev - 1; i > 0; i--)
			s->prev[i] = s->prev[i - 1];
		s->prev[0] = s->root;
	} else {
		put_root(vm, s->root.sp, &invalid);
	}
	s->root = (struct shadow_root_info){ .sp = NULL };
	if (s == v->sh.mmu)
		v->mmu_ready = false;
	STAT_INC(v->stat.root_slow_switches);
	if (unlikely(vm_tracing(vm)))
		trace_root(v, s, VMMU_TRACE_ROOT_SWITCH, 0);
	shadow_commit_zap(vm, &invalid, false);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

void shadow_new_pgd(struct vmmu_vcpu *v, bool noflush)
{
	shadow_ctx_new_pgd(v, &v->sh.root_mmu, noflush);
}

/*
 * The entry that leads to gva's table under the context's current root, and that
 * table's level: a PAE-style root's entry for gva's quarter, or an entry made
 * up for a 4/5-level root page.  For shadow_find_leaf_sptep().
 */
uint64_t shadow_root_entry(const struct vmmu_vcpu *v, const struct shadow_ctx *c, uint64_t gva, int *level)
{
	if (c->pae_root_mode) {
		*level = 2;
		return c->pae_root[(gva >> 30) & 3];
	}
	*level = c->root_role.level;
	return make_nonleaf_spte(&v->vm->fmt, (uintptr_t)c->root.sp->spt >> 12);
}

/* The level-1 SPTE that maps gva under the root table entry root_spte, or NULL. */
uint64_t *shadow_find_leaf_sptep(uint64_t root_spte, int level, uint64_t gva)
{
	uint64_t spte = root_spte, *sptep = NULL;

	for (; level >= PG_LEVEL_4K; level--) {
		uint64_t *table;

		if (!is_shadow_present(spte))
			return NULL;
		table = (uint64_t *)(uintptr_t)(spte & SPTE_BASE_ADDR_MASK);
		sptep = &table[shadow_index(gva, level)];
		spte = spte_load(sptep);
	}
	return sptep;
}

/*
 * INVLPG (KVM's kvm_mmu_invlpg): a leaf SPTE of gva in an unsync page may be
 * stale; zap it in every root, since INVLPG also drops global translations,
 * which any PCID may use.  Synced pages are exact already.
 */
void shadow_invlpg(struct vmmu_vcpu *v, uint64_t gva)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_ctx *s = &v->sh.root_mmu;
	uint64_t roots[1 + VMMU_MAX_PREV_ROOTS];
	int levels[1 + VMMU_MAX_PREV_ROOTS];
	unsigned int n = 0;
	CDS_LIST_HEAD(invalid);
	bool flush = false;

	if (!__atomic_load_n(&vm->shadow->nr_unsync, __ATOMIC_RELAXED))
		return;
	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	pthread_rwlock_wrlock(&vm->mmu_lock);
	if (s->pae_root_mode || s->root.sp) {
		roots[n] = shadow_root_entry(v, s, gva, &levels[n]);
		n++;
	}
	if (!s->pae_root_mode) {
		for (unsigned int i = 0; i < s->nr_prev; i++) {
			if (!s->prev[i].sp)
				continue;
			roots[n] = make_nonleaf_spte(&vm->fmt, (uintptr_t)s->prev[i].sp->spt >> 12);
			levels[n++] = s->prev[i].sp->role.level;
		}
	}
	for (unsigned int i = 0; i < n; i++) {
		uint64_t *sptep = shadow_find_leaf_sptep(roots[i], levels[i], gva);
		struct shadow_page *sp;

		if (!sptep)
			continue;
		sp = sptep_to_sp(vm, sptep);
		if (sp->unsync)
			flush |= shadow_zap_spte(vm, sp, sptep);
	}
	shadow_commit_zap(vm, &invalid, flush);
	pthread_rwlock_unlock(&vm->mmu_lock);
	vmmu_rcu_read_unlock();
}

bool mmu_update_context(struct vmmu_vcpu *v)
{
	union cpu_role cr = shadow_calc_cpu_role(v);
	struct vmmu_vm *vm = v->vm;
	struct shadow_ctx *c = &v->sh.root_mmu;

	v->hw_wcpu = v->wcpu;
	v->hw_wcpu.wp = true;
	/* SMEP, SMAP and protection keys exist only with paging. */
	if (v->wcpu.mode == WALK_MODE_NONE)
		v->hw_wcpu.smep = v->hw_wcpu.smap = v->hw_wcpu.pke = false;
	/* root_mmu shadows the guest's paging as it is now (CR3, PDPTEs...). */
	if (vm_shadow_paging(vm))
		c->w = v->wcpu;
	if (cr.as_u64 == v->sh.cpu_role.as_u64)
		return false;
	v->sh.cpu_role = cr;
	STAT_INC(v->stat.mmu_ctx_rebuilds);
	if (vm_shadow_paging(vm)) {
		union sp_role rr = calc_root_role(cr);

		if (rr.word != c->root_role.word || v->mmu_ready) {
			/* KVM's kvm_mmu_reset_context: every root goes, previous too. */
			shadow_ctx_unload(v, c, true);
			c->root_role = rr;
			c->pae_root_mode = rr.level == 3;
			c->nr_prev = vm->cfg.shadow_prev_roots;
		}
	}
	return true;
}
