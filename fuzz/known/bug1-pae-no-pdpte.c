/* SPDX-License-Identifier: MIT */
/* Shadow paging, PAE guest: load CR3 with all four PDPTEs not present, then
 * make PDPTE 0 present (in memory), reload the state, and read gva 0. */
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include "vmmu/vmmu.h"

int main(void)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;
	vmmu_vcpu *v;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = 16 << 20 };
	struct vmmu_cpu_state s;
	struct vmmu_exit x;
	uint64_t *mem, val = 0;
	int r;

	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	if (vmmu_vm_create(&cfg, &vm) || vmmu_set_memslot(vm, &slot) || vmmu_vcpu_create(vm, 0, &v))
		return 2;
	vmmu_memslot_hva(vm, 0, (void **)&mem);
	memset(mem, 0, 3 * 4096);               /* PDPT at 0x1000 (all not present), PD at 0x2000 */
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
	s.cr4 = VMMU_CR4_PAE;
	s.cr3 = 0x1000;
	r = vmmu_vcpu_set_state(v, &s);
	printf("PAE load, no PDPTE present: %d\n", r);
	r = vmmu_vcpu_access(v, 0, &val, 8, VMMU_ACCESS_READ, &x);
	printf("read gva 0: rc %d exit %u vector %u (a not-present #PF is right)\n", r, x.reason, x.u.guest_fault.vector);
	mem[0x1000 / 8] = 0x2000 | 1;            /* PDPTE 0 -> PD at 0x2000 */
	mem[0x2000 / 8] = 0x400000 | 0x83;       /* PDE 0: 2M page at gpa 4M, P|W|PS */
	s.cr4 |= VMMU_CR4_PGE;                   /* any state load reloads the PDPTEs */
	r = vmmu_vcpu_set_state(v, &s);
	printf("reload, PDPTE 0 present: %d\n", r);
	r = vmmu_vcpu_access(v, 0, &val, 8, VMMU_ACCESS_READ, &x);
	printf("read gva 0: rc %d exit %u (expected success)\n", r, x.reason);
	vmmu_vm_destroy(vm);
	return r != 0;
}
