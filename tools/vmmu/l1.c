/* SPDX-License-Identifier: MIT */
/*
 * A guest hypervisor for `vmmu run nested` and `vmmu bench nested`: a vCPU's
 * L1 builds an EPT (EPT VMs) or NPT (NPT VMs) for its L2 by its own stores,
 * and its L2 builds two address spaces of its own in its memory.  Every
 * table is written as guest code writes it, through the vCPU, so the MMU
 * sees (and write-protects, and shadows) what a real pair of kernels would
 * hand it.  See env.h for the layout.
 */
#include <string.h>

#include "env.h"


static int l1_map_l2(struct l1_guest *g, uint64_t l2_gpa, uint64_t l1_gpa, uint64_t size, bool huge)
{
	uint64_t flags = g->npt ? GUEST_W | GUEST_U : GUEST_EPT_RWX | GUEST_EPT_MT_WB;

	return guest_map(g->ept, l2_gpa, l1_gpa, size, huge ? GUEST_PAGE_2M : GUEST_PAGE_4K, flags);
}

int l1_setup(struct l1_guest *g, vmmu_vm *vm, vmmu_vcpu *vcpu, bool npt, bool five, uint64_t base,
	     uint64_t size, uint16_t vpid, const char **what)
{
	enum guest_mode tmode;
	uint64_t l2_mem;
	int r;

	memset(g, 0, sizeof(*g));
	g->vm = vm;
	g->vcpu = vcpu;
	g->npt = npt;
	g->base = base;
	g->size = size;
	/* [base, +2M) L1's tables: its EPT/NPT, and for NPT its own paging;
	 * [base + 2M, +size) L2's memory. */
	g->l2_base = base + L1_L1_TABLES;
	l2_mem = (size - L1_L1_TABLES) & ~(CLI_SIZE_2M - 1);
	if (size < L1_L1_TABLES + 2 * CLI_SIZE_2M) {
		*what = "the vCPU's share is too small for an L1 and its L2";
		return VMMU_EINVAL;
	}
	g->l2_size = l2_mem;
	/* L2's two address spaces' tables at the start of its memory: a PT
	 * page per 512 pages, the tables above and slack, twice. */
	g->l2_pt_bytes = (2 * (l2_mem / CLI_PAGE_SIZE / 512 + 16) * CLI_PAGE_SIZE + CLI_SIZE_2M - 1) &
			 ~(CLI_SIZE_2M - 1);
	if (g->l2_pt_bytes + CLI_SIZE_2M > l2_mem) {
		*what = "the vCPU's share is too small for an L1 and its L2";
		return VMMU_EINVAL;
	}
	if (npt) {
		struct vmmu_cpu_state s;

		/* NPT tables are walked in L1's own paging mode: long mode,
		 * its share identity-mapped. */
		*what = "L1's page tables";
		r = guest_pt_create(vm, five ? GUEST_MODE_5LEVEL : GUEST_MODE_4LEVEL, base + L1_L1_TABLES / 2,
				    L1_L1_TABLES / 2, &g->l1pt);
		if (!r)
			r = guest_map(g->l1pt, base, base, size & ~(CLI_SIZE_2M - 1), GUEST_PAGE_2M, GUEST_W);
		if (r)
			return r;
		guest_pt_state(g->l1pt, &s, 0);
		*what = "vmmu_vcpu_set_state (L1)";
		r = vmmu_vcpu_set_state(vcpu, &s);
		if (r)
			return r;
		tmode = five ? GUEST_MODE_5LEVEL : GUEST_MODE_4LEVEL;
	} else {
		tmode = five ? GUEST_MODE_EPT5 : GUEST_MODE_EPT4;
	}
	*what = npt ? "L1's NPT" : "L1's EPT";
	r = guest_pt_create(vm, tmode, base, npt ? L1_L1_TABLES / 2 : L1_L1_TABLES, &g->ept);
	if (r)
		return r;
	guest_pt_set_vcpu(g->ept, vcpu);
	/* L2's tables and its first megabytes at 4K, the rest at 2M: both
	 * levels of shadow EPT leaves. */
	r = l1_map_l2(g, 0, g->l2_base, 4 * CLI_SIZE_2M < l2_mem ? 4 * CLI_SIZE_2M : l2_mem, false);
	if (!r && l2_mem > 4 * CLI_SIZE_2M)
		r = l1_map_l2(g, 4 * CLI_SIZE_2M, g->l2_base + 4 * CLI_SIZE_2M, l2_mem - 4 * CLI_SIZE_2M, true);
	if (r)
		return r;
	memset(&g->ns, 0, sizeof(g->ns));
	g->ns.vpid = vpid;
	if (npt)
		g->ns.ncr3 = guest_pt_cr3(g->ept);
	else
		g->ns.eptp = guest_pt_eptp(g->ept, 1);
	g->ns.l2.cr0 = VMMU_CR0_PE;
	g->pages = (l2_mem - g->l2_pt_bytes) / CLI_PAGE_SIZE;
	return 0;
}

void l1_destroy(struct l1_guest *g)
{
	for (int a = 0; a < 2; a++)
		if (g->l2pt[a])
			guest_pt_destroy(g->l2pt[a]);
	if (g->ept)
		guest_pt_destroy(g->ept);
	if (g->l1pt)
		guest_pt_destroy(g->l1pt);
	memset(g, 0, sizeof(*g));
}

int l1_enter(struct l1_guest *g)
{
	/* VM entry loads L2's state as it was at the last exit. */
	return vmmu_vcpu_enter_guest_mode(g->vcpu, &g->ns);
}

int l1_leave(struct l1_guest *g)
{
	return vmmu_vcpu_leave_guest_mode(g->vcpu, &g->ns.l2);
}

uint64_t l2_data_gpa(const struct l1_guest *g, uint64_t p)
{
	return g->l2_pt_bytes + p * CLI_PAGE_SIZE;
}

uint64_t l2_gva(const struct l1_guest *g, uint64_t p)
{
	(void)g;
	return L1_L2_GVA + p * CLI_PAGE_SIZE;
}

/* Space B maps the pages rotated by half: each gva reads another frame. */
uint64_t l2_frame(const struct l1_guest *g, int space, uint64_t p)
{
	uint64_t half = g->pages / 2, rest = g->pages - half;

	if (!space)
		return p;
	return p < rest ? p + half : p - rest;
}

int l2_build(struct l1_guest *g, const char **what)
{
	uint64_t pool = g->l2_pt_bytes / 2, half = g->pages / 2, rest = g->pages - half;
	const uint64_t fl = GUEST_W | GUEST_NX;
	int r;

	*what = "L2's page tables";
	for (int a = 0; a < 2; a++) {
		r = guest_pt_create_nested(g->vm, GUEST_MODE_4LEVEL, a * pool, pool, g->l2_base, &g->l2pt[a]);
		if (r)
			return r;
		guest_pt_set_vcpu(g->l2pt[a], g->vcpu);
	}
	r = guest_map(g->l2pt[0], l2_gva(g, 0), l2_data_gpa(g, 0), g->pages * CLI_PAGE_SIZE, GUEST_PAGE_4K, fl);
	if (!r)
		r = guest_map(g->l2pt[1], l2_gva(g, 0), l2_data_gpa(g, half), rest * CLI_PAGE_SIZE, GUEST_PAGE_4K, fl);
	if (!r && half)
		r = guest_map(g->l2pt[1], l2_gva(g, rest), l2_data_gpa(g, 0), half * CLI_PAGE_SIZE, GUEST_PAGE_4K,
			      fl);
	if (r)
		return r;
	*what = "vmmu_vcpu_set_state (L2)";
	return l2_switch(g, 0);
}

int l2_switch(struct l1_guest *g, int space)
{
	struct vmmu_cpu_state s;
	int r;

	guest_pt_state(g->l2pt[space], &s, 0);
	r = vmmu_vcpu_set_state(g->vcpu, &s);
	if (!r)
		g->space = space;
	return r;
}

int l2_reference(struct l1_guest *g, uint64_t p, uint64_t *l2_gpa, uint64_t *l1_gpa)
{
	int r;

	/* gva -> L2 gpa through L2's tables, L2 gpa -> L1 gpa through L1's. */
	r = guest_lookup(g->l2pt[g->space], l2_gva(g, p), l2_gpa, NULL, NULL, NULL);
	if (!r)
		r = guest_lookup(g->ept, *l2_gpa, l1_gpa, NULL, NULL, NULL);
	return r;
}
