/* SPDX-License-Identifier: MIT */
/*
 * guest_mmu and nested_mmu (seed 003): see nested.h for the three MMUs and
 * docs/mmu.md section 13 for the rules.
 */
#include "mmu/nested.h"

#include <string.h>

#include "cpu/hw.h"
#include "mmu/mmu.h"
#include "mmu/tdp/tdp_mmu.h"

uint64_t nested_root_gfn(const struct vmmu_vm *vm, uint64_t root)
{
	return (root & GENMASK_ULL(vm->cfg.maxphyaddr - 1, 12)) >> 12;
}

void nested_walk_cpu(const struct vmmu_vm *vm, const struct nested_params *p, struct walk_cpu *w)
{
	memset(w, 0, sizeof(*w));
	w->maxphyaddr = vm->cfg.maxphyaddr;
	w->root = p->root & GENMASK_ULL(vm->cfg.maxphyaddr - 1, 12);
	if (vm->fmt.ept) {
		w->mode = (p->root & (7ULL << 3)) == VMMU_EPTP_WALK_5 ? WALK_MODE_EPT5 : WALK_MODE_EPT4;
		w->ept_ad = p->root & VMMU_EPTP_AD;
		w->ept_no_exec_only = !p->exec_only;
	} else {
		/*
		 * NPT: L1's tables in L1's own paging mode, every access a user
		 * access (APM 15.25.5), so U is needed at every level and writes
		 * need W whatever CR0.WP says; NX with L1's EFER.NXE.
		 */
		w->mode = p->l1->mode;
		w->nxe = p->l1->nxe;
		w->cpl = 3;
	}
}

/*
 * KVM's kvm_calc_shadow_ept_root_page_role: L1's tables are not L1's CR0,
 * CR4 or EFER, so none of those are in the role; guest_mode keeps these
 * pages apart from any other's.  cr0_wp is set: nothing relaxes a write
 * permission in these tables (no WP=0 conversion).  EPT: A/D and
 * execute-only change what the entries mean, so they are in the role.
 */
static union sp_role guest_root_role(const struct vmmu_vm *vm, const struct walk_cpu *w, bool exec_only)
{
	union sp_role r = { .word = 0 };

	r.level = w->mode == WALK_MODE_EPT5 || w->mode == WALK_MODE_5LEVEL ? 5 : 4;
	r.guest_mode = 1;
	r.access = ACC_ALL;
	r.cr0_wp = 1;
	if (vm->fmt.ept) {
		r.ad_disabled = !w->ept_ad;
		r.ept_exec_only = exec_only;
	} else {
		r.efer_nx = w->nxe;
	}
	return r;
}

static void load_tdp_root(struct vmmu_vcpu *v)
{
	v->mmu_ready = v->root && !atomic_load_explicit(&v->root->invalid, memory_order_acquire);
	if (v->mmu_ready)
		v->hw = (struct hw_root){ .table = v->root->pt->spt, .level = v->root->level };
}

bool nested_mmu_enter(struct vmmu_vcpu *v, const struct nested_params *p)
{
	struct vmmu_vm *vm = v->vm;
	struct shadow_ctx *c = &v->sh.guest_mmu;
	struct walk_cpu w;
	union sp_role role;
	bool reuse;

	nested_walk_cpu(vm, p, &w);
	role = guest_root_role(vm, &w, vm->fmt.ept && p->exec_only);
	reuse = c->root.sp && c->root.pgd == nested_root_gfn(vm, p->root) && c->root.role.word == role.word &&
		shadow_ctx_roots_valid(v, c);
	c->w = w;
	c->root_role = role;
	c->nested = true;
	c->pae_root_mode = false;
	c->nr_prev = vm->cfg.shadow_prev_roots;
	if (v->nested.one_mmu && v->root) {
		/* The ablation: one MMU, reset at every switch (KVM before seed
		 * 003 reset root_mmu into a shadow EPT MMU and back). */
		tdp_mmu_put_root(vm, v->root);
		v->root = NULL;
	}
	v->sh.mmu = c;
	v->mmu_ready = false;
	/* The EPTP/nCR3 names a root: the one loaded, a previous one (a swap,
	 * no lock), or one found in the hash or built on the next entry. */
	shadow_ctx_new_pgd(v, c, true);
	if (c->root.sp && shadow_ctx_roots_valid(v, c)) {
		shadow_ctx_load_hw_root(v, c);
		v->mmu_ready = true;
	}
	return reuse;
}

void nested_mmu_leave(struct vmmu_vcpu *v)
{
	v->sh.mmu = NULL;
	if (v->nested.one_mmu)
		shadow_ctx_unload(v, &v->sh.guest_mmu, true);
	load_tdp_root(v);
}

/*
 * The cached roots go (their next use reloads them), and unsync shadow pages
 * catch up now rather than at that reload: they are shared by every vCPU
 * whose L1 uses those tables, so once INVEPT returns no vCPU -- this one or
 * another, whose TLBs the sync flushes -- uses a translation from before the
 * L1 stores it orders.  (The architecture asks less: INVEPT acts on one
 * logical processor, and L1 shoots the others down itself.)
 */
void nested_mmu_invept(struct vmmu_vcpu *v, bool all, uint64_t eptp)
{
	shadow_ctx_drop_pgd(v, &v->sh.guest_mmu, nested_root_gfn(v->vm, eptp), all);
	shadow_sync_roots(v);
}

int nested_page_fault(struct vmmu_vcpu *v, const struct hw_exit *he, struct shadow_fault *sf)
{
	uint32_t ec = hw_exit_to_error_code(v->vm, he);
	unsigned int walk_access = ((ec & PFERR_W) ? WALK_WRITE : 0) | ((ec & PFERR_ID) ? WALK_FETCH : 0);

	return shadow_page_fault(v, &v->sh.guest_mmu, he->gpa, walk_access, ec, sf);
}

int nested_translate(struct vmmu_vcpu *v, const struct walk_cpu *l1_tables, uint64_t l2_gpa, uint64_t *l1_gpa)
{
	struct walk_result wr;
	int r;

	vmmu_rcu_thread_online();
	vmmu_rcu_read_lock();
	r = shadow_walk_guest(v, l1_tables, l2_gpa, 0, &wr);
	vmmu_rcu_read_unlock();
	if (r != WALK_OK)
		return VMMU_EFAULT;
	*l1_gpa = wr.gpa;
	return 0;
}
