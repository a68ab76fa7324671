/* SPDX-License-Identifier: MIT */
#include "nested_test.h"

#include <string.h>

bool nt_variant_ok(const struct mmu_variant *var)
{
	/* TDP, with or without A/D in the SPTEs (access tracking of
	 * guest_mmu's leaves then; L1's EPT A/D are its walks' either way). */
	return var->mmu == VMMU_MMU_TDP;
}

uint64_t nt_flags(const struct nt *t, bool r, bool w, bool x)
{
	if (t->npt) {
		/* NPT: every access is a user access; R is P itself. */
		(void)r;
		return GUEST_U | (w ? GUEST_W : 0) | (x ? 0 : GUEST_NX);
	}
	return (r ? GUEST_EPT_R : 0) | (w ? GUEST_EPT_W : 0) | (x ? GUEST_EPT_X : 0) | GUEST_EPT_MT_WB;
}

uint64_t nt_rd64(vmmu_vm *vm, uint64_t gpa)
{
	void *h;

	if (vmmu_gpa_to_hva(vm, gpa, &h))
		return 0xbad0bad0bad0bad0ULL;
	return __atomic_load_n((uint64_t *)h, __ATOMIC_ACQUIRE);
}

void nt_wr64(vmmu_vm *vm, uint64_t gpa, uint64_t v)
{
	void *h;

	if (!vmmu_gpa_to_hva(vm, gpa, &h))
		__atomic_store_n((uint64_t *)h, v, __ATOMIC_RELEASE);
}

int nt_acc(vmmu_vcpu *v, uint64_t addr, uint64_t *val, unsigned int type, struct vmmu_exit *x)
{
	memset(x, 0, sizeof(*x));
	return vmmu_vcpu_access(v, addr, val, 8, type, x);
}

void nt_setup_l1(struct nt *t, const struct mmu_variant *var, uint32_t vm_flags, uint32_t max_vcpus)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = NT_RAM_SIZE };
	bool five = var->tdp_levels == 5;

	memset(t, 0, sizeof(*t));
	t->var = var;
	t->npt = var->tdp_format == VMMU_TDP_NPT;
	t->ad = true;
	t->vpid = 1;
	variant_config(var, &cfg);
	cfg.flags |= vm_flags;
	cfg.max_vcpus = max_vcpus;
	ASSERT_OK(vmmu_vm_create(&cfg, &t->vm));
	ASSERT_OK(vmmu_set_memslot(t->vm, &slot));
	ASSERT_OK(vmmu_vcpu_create(t->vm, 0, &t->vcpu));
	if (t->npt) {
		/* NPT is walked in L1's paging mode: L1 runs in long mode with
		 * its memory identity-mapped. */
		struct vmmu_cpu_state s;

		ASSERT_OK(guest_pt_create(t->vm, five ? GUEST_MODE_5LEVEL : GUEST_MODE_4LEVEL, NT_L1_PT_POOL,
					  NT_L1_PT_SIZE, &t->l1_pt));
		ASSERT_OK(guest_map(t->l1_pt, 0, 0, NT_RAM_SIZE, GUEST_PAGE_2M, GUEST_W));
		guest_pt_state(t->l1_pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(t->vcpu, &s));
	}
}

vmmu_vcpu *nt_add_vcpu(struct nt *t, unsigned int id)
{
	vmmu_vcpu *v;

	ASSERT_OK(vmmu_vcpu_create(t->vm, id, &v));
	if (t->l1_pt) {
		struct vmmu_cpu_state s;

		guest_pt_state(t->l1_pt, &s, 0);
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
	}
	return v;
}

void nt_setup(struct nt *t, const struct mmu_variant *var, uint32_t vm_flags, uint32_t max_vcpus)
{
	bool five = var->tdp_levels == 5;
	enum guest_mode mode;

	nt_setup_l1(t, var, vm_flags, max_vcpus);
	if (t->npt)
		mode = five ? GUEST_MODE_5LEVEL : GUEST_MODE_4LEVEL;
	else
		mode = five ? GUEST_MODE_EPT5 : GUEST_MODE_EPT4;
	ASSERT_OK(guest_pt_create(t->vm, mode, NT_EPT_POOL, NT_EPT_SIZE, &t->ept));
	/* L1 writes its EPT/NPT with its own stores. */
	guest_pt_set_vcpu(t->ept, t->vcpu);
	ASSERT_OK(guest_map(t->ept, 0, NT_L2_BASE, NT_L2_SMALL, GUEST_PAGE_4K, nt_flags(t, true, true, true)));
	ASSERT_OK(guest_map(t->ept, NT_L2_SMALL, NT_L2_BASE + NT_L2_SMALL, NT_L2_SIZE - NT_L2_SMALL, GUEST_PAGE_2M,
			    nt_flags(t, true, true, true)));
}

void nt_teardown(struct nt *t)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(t->vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
	ASSERT_AUDIT(t->vm);
	if (t->ept)
		guest_pt_destroy(t->ept);
	if (t->l1_pt)
		guest_pt_destroy(t->l1_pt);
	vmmu_vm_destroy(t->vm);
}

void nt_state(const struct nt *t, struct vmmu_nested_state *ns, const struct vmmu_cpu_state *l2)
{
	memset(ns, 0, sizeof(*ns));
	ns->vpid = t->vpid;
	if (t->npt)
		ns->ncr3 = guest_pt_cr3(t->ept);
	else
		ns->eptp = guest_pt_eptp(t->ept, t->ad);
	if (l2)
		ns->l2 = *l2;
	else
		ns->l2.cr0 = VMMU_CR0_PE;	/* flat protected mode, paging off */
}

void nt_enter(struct nt *t, const struct vmmu_cpu_state *l2)
{
	struct vmmu_nested_state ns;

	nt_state(t, &ns, l2);
	ASSERT_OK(vmmu_vcpu_enter_guest_mode(t->vcpu, &ns));
}

void nt_leave(struct nt *t)
{
	ASSERT_OK(vmmu_vcpu_leave_guest_mode(t->vcpu, NULL));
}
