/* SPDX-License-Identifier: MIT */
/* A guest page table in host memory the embedder declared gone
 * (vmmu_set_host_protection NONE + mprotect PROT_NONE).  vmmu.h: any access
 * to a gone range is a memory-fault exit.  argv[1]: "shadow" or "tdp";
 * argv[2]: "walk" (4-level table in the gone page) or "pdpte" (PAE PDPT there). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include "vmmu/vmmu.h"

int main(int argc, char **argv)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;
	vmmu_vcpu *v;
	uint8_t *mem = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *q = (uint64_t *)mem, val = 0;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = 16 << 20, .hva = mem };
	struct vmmu_cpu_state s;
	struct vmmu_exit x;
	int shadow = argc > 1 && !strcmp(argv[1], "shadow"), pdpte = argc > 2 && !strcmp(argv[2], "pdpte"), r;

	vmmu_vm_config_init(&cfg);
	if (shadow)
		cfg.mmu = VMMU_MMU_SHADOW;
	if (vmmu_vm_create(&cfg, &vm) || vmmu_set_memslot(vm, &slot) || vmmu_vcpu_create(vm, 0, &v))
		return 2;
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
	s.cr4 = VMMU_CR4_PAE;
	if (pdpte) {
		s.cr3 = 0x10000;                              /* PDPT in the page that goes away */
		q[0x10000 / 8] = 0x2000 | 1;
		q[0x2000 / 8] = 0x3000 | 7;
		q[0x3000 / 8 + 1] = 0x5000 | 0x67;
	} else {
		s.efer = VMMU_EFER_LME;
		s.cr3 = 0x1000;
		q[0x1000 / 8] = 0x2000 | 0x27;
		q[0x2000 / 8] = 0x3000 | 0x27;
		q[0x3000 / 8] = 0x10000 | 0x27;               /* the PT is in the page that goes away */
		q[0x10000 / 8 + 1] = 0x5000 | 0x67;
	}
	if (vmmu_vcpu_set_state(v, &s))
		return 2;
	r = vmmu_vcpu_access(v, 0x1000, &val, 8, VMMU_ACCESS_READ, &x);
	printf("%s %s: read before: rc %d\n", argv[1], argv[2], r);
	vmmu_set_host_protection(vm, (uintptr_t)mem + 0x10000, (uintptr_t)mem + 0x11000, VMMU_HOST_NONE);
	mprotect(mem + 0x10000, 0x1000, PROT_NONE);
	if (pdpte) {
		fflush(stdout);
		r = vmmu_vcpu_set_state(v, &s);              /* reloads the PDPTEs */
		printf("state reload with the PDPT gone: rc %d\n", r);
	} else {
		vmmu_vcpu_write_cr3(v, s.cr3);
		fflush(stdout);
		memset(&x, 0, sizeof(x));
		/* gva 0x2000: its PTE is in the gone page, nothing maps it yet */
		r = vmmu_vcpu_access(v, 0x2000, &val, 8, VMMU_ACCESS_READ, &x);
		printf("read of gva 0x2000 after: rc %d exit %u gpa %#llx (want a memory fault at 0x10000)\n", r,
		       x.reason, (unsigned long long)x.u.memory_fault.gpa);
	}
	vmmu_vm_destroy(vm);
	return 0;
}
