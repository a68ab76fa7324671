/* SPDX-License-Identifier: MIT */
/* Shadow paging, 4-level guest: CR3 points outside every memslot when the
 * vCPU first runs; a slot is then created over the root.  The root's shadow
 * page was never write-tracked, so later guest stores to the PML4 go unseen,
 * even across a flushing MOV to CR3. */
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include "vmmu/vmmu.h"

static vmmu_vcpu *v;

static void pstore(uint64_t gpa, uint64_t val)
{
	struct vmmu_exit x;
	if (vmmu_vcpu_access(v, gpa, &val, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x))
		printf("phys store to %#llx failed\n", (unsigned long long)gpa);
}

int main(void)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;
	struct vmmu_memslot ram = { .slot = 0, .gpa = 0, .size = 16 << 20 };
	struct vmmu_memslot high = { .slot = 1, .gpa = 32 << 20, .size = 1 << 20 };
	struct vmmu_cpu_state s;
	struct vmmu_exit x;
	char why[256];
	uint64_t val = 0, R = 32 << 20;
	int r;

	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	if (vmmu_vm_create(&cfg, &vm) || vmmu_set_memslot(vm, &ram) || vmmu_vcpu_create(vm, 0, &v))
		return 2;
	memset(&s, 0, sizeof(s));
	s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
	s.cr4 = VMMU_CR4_PAE;
	s.efer = VMMU_EFER_LME;
	s.cr3 = R;                                 /* not RAM (yet) */
	if (vmmu_vcpu_set_state(v, &s))
		return 2;
	r = vmmu_vcpu_access(v, 0x1000, &val, 8, VMMU_ACCESS_READ, &x);
	printf("read with the root outside RAM: rc %d exit %u vector %u\n", r, x.reason, x.u.guest_fault.vector);
	if (vmmu_set_memslot(vm, &high))
		return 2;
	r = vmmu_audit(vm, why, sizeof(why));
	printf("audit after the slot appears over the root: %d %s\n", r, r ? why : "");
	/* The guest builds tables in the new slot: 0x1000 -> gpa 0x5000. */
	pstore(0x5000, 0x5555);
	pstore(0x6000, 0x6666);
	pstore(R + 0x1000, R + 0x2000 + 7);     /* PDPT[0] -> PD */
	pstore(R + 0x2000, R + 0x3000 + 7);     /* PD[0] -> PT */
	pstore(R + 0x3000 + 8, 0x5000 + 7);     /* PTE[1] -> 0x5000 */
	pstore(R + 0x4000, R + 0x5000 + 7);     /* a second PDPT -> PD -> PT -> 0x6000 */
	pstore(R + 0x5000, R + 0x6000 + 7);
	pstore(R + 0x6000 + 8, 0x6000 + 7);
	pstore(R, R + 0x1000 + 7);              /* PML4[0] -> first PDPT */
	vmmu_vcpu_write_cr3(v, R);
	r = vmmu_vcpu_access(v, 0x1000, &val, 8, VMMU_ACCESS_READ, &x);
	printf("read gva 0x1000: rc %d value %#llx (want 0x5555)\n", r, (unsigned long long)val);
	pstore(R, R + 0x4000 + 7);              /* PML4[0] -> second PDPT */
	vmmu_vcpu_write_cr3(v, R);              /* flushing MOV to CR3 */
	r = vmmu_vcpu_access(v, 0x1000, &val, 8, VMMU_ACCESS_READ, &x);
	printf("after the PML4 store and a flushing CR3 load: rc %d value %#llx (want 0x6666)\n", r,
	       (unsigned long long)val);
	vmmu_vm_destroy(vm);
	return val != 0x6666;
}
