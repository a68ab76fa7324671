/* SPDX-License-Identifier: MIT */
/* Shadow paging, 32-bit guests: two vCPUs on the same CR3, one with CR4.PSE=1
 * (PDE 1 is a 4M page), one with PSE=0 (the same PDE points to a page table,
 * whose entries are all zero: not present).  The PSE=0 vCPU must fault. */
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include "vmmu/vmmu.h"

int main(void)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;
	vmmu_vcpu *v0, *v1;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = 16 << 20 };
	struct vmmu_cpu_state s;
	struct vmmu_exit x;
	uint32_t *mem;
	uint64_t val = 0;
	int r;

	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	cfg.max_vcpus = 2;
	if (vmmu_vm_create(&cfg, &vm) || vmmu_set_memslot(vm, &slot) || vmmu_vcpu_create(vm, 0, &v0) ||
	    vmmu_vcpu_create(vm, 1, &v1))
		return 2;
	vmmu_memslot_hva(vm, 0, (void **)&mem);
	memset(mem, 0, 8 << 20);
	mem[0x1000 / 4 + 1] = 0x400000 | 0x87;     /* PDE 1: 4M page at 4M, P|W|U|PS (a PT at 4M without PSE) */
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
	s.cr3 = 0x1000;
	s.cr4 = VMMU_CR4_PSE;
	if (vmmu_vcpu_set_state(v0, &s))
		return 2;
	s.cr4 = 0;
	if (vmmu_vcpu_set_state(v1, &s))
		return 2;
	r = vmmu_vcpu_access(v0, 0x400d00, &val, 1, VMMU_ACCESS_READ, &x);
	printf("vCPU 0 (PSE=1) read of gva 0x400d00: rc %d (success is right: a 4M page)\n", r);
	memset(&x, 0, sizeof(x));
	r = vmmu_vcpu_access(v1, 0x400d00, &val, 1, VMMU_ACCESS_READ, &x);
	printf("vCPU 1 (PSE=0) read of gva 0x400d00: rc %d exit %u vector %u ec %#x (want a not-present #PF: PTE 0 is 0)\n",
	       r, x.reason, x.u.guest_fault.vector, x.u.guest_fault.error_code);
	vmmu_vm_destroy(vm);
	return r != VMMU_EXIT;
}
