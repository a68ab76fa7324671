/* SPDX-License-Identifier: MIT */
/*
 * What the operation-stream fuzzer found (fuzz/known/), as tests of the
 * guest-visible contract on every MMU variant (shadow paging was where each
 * broke; the TDP variants must give the same answers):
 *  - pae_roots_after_no_pdpte: a PAE load with no PDPTE present, then one
 *    with a PDPTE present, must translate through it (the first load had
 *    left "nothing loaded" counted as a valid root: a 60 s livelock);
 *  - root_outside_ram_then_slot: a root loaded while CR3 pointed outside
 *    RAM is built again, write-tracked, once a slot covers it (guest stores
 *    to the table went unseen);
 *  - tables_in_gone_memory: walking, or loading PDPTEs from, host memory
 *    declared gone is a memory fault, never a read of it (SIGSEGV);
 *  - phys_stores_vs_protection: a guest-physical store never lands after
 *    vmmu_set_host_protection(RO) returned, and a fault names the first
 *    page the protection covers;
 *  - pse_per_vcpu: two 32-bit vCPUs with different CR4.PSE read one PDE
 *    with PS differently (a 4M page, or a page table).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "shadow_test.h"

static void setup(const struct mmu_variant *var, unsigned int vcpus, void *hva, vmmu_vm **vm, vmmu_vcpu **v)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = 16 * MB, .hva = hva };

	variant_config(var, &cfg);
	cfg.max_vcpus = vcpus;
	ASSERT_OK(vmmu_vm_create(&cfg, vm));
	ASSERT_OK(vmmu_set_memslot(*vm, &slot));
	for (unsigned int i = 0; i < vcpus; i++)
		ASSERT_OK(vmmu_vcpu_create(*vm, i, &v[i]));
}

static void finish(vmmu_vm *vm)
{
	char why[256];

	assert_not_bugged(vm);
	if (vmmu_audit(vm, why, sizeof(why)))
		test_fail(__FILE__, __LINE__, "audit: %s", why);
	vmmu_vm_destroy(vm);
}

static int rd(vmmu_vcpu *v, uint64_t gva, uint64_t *val, struct vmmu_exit *x)
{
	return vmmu_vcpu_access(v, gva, val, 8, VMMU_ACCESS_READ, x);
}

static void pstore(vmmu_vcpu *v, uint64_t gpa, uint64_t val)
{
	struct vmmu_exit x;

	ASSERT_OK(vmmu_vcpu_access(v, gpa, &val, 8, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x));
}

TEST(pae_roots_after_no_pdpte)
{
	for_each_mmu_variant(var) {
		struct vmmu_cpu_state s;
		struct vmmu_exit x;
		vmmu_vcpu *v;
		vmmu_vm *vm;
		uint64_t val = 0;

		setup(var, 1, NULL, &vm, &v);
		/* PDPT at 0x1000, all four not present: every access #PFs. */
		memset(&s, 0, sizeof(s));
		s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
		s.cr4 = VMMU_CR4_PAE;
		s.cr3 = 0x1000;
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
		ASSERT_EQ(rd(v, 0, &val, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_EQ(x.u.guest_fault.vector, 14);
		/* PDPTE 0 -> PD -> a 2M page at 4M; a CR4.PGE change reloads the
		 * PDPTE registers (SDM 3A 4.4.1). */
		host_wr64(vm, 0x1000, 0x2000 | 1);
		host_wr64(vm, 0x2000, 0x400000 | 0x83);
		host_wr64(vm, 0x400000 + 0x10, 0x4242);
		s.cr4 |= VMMU_CR4_PGE;
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
		ASSERT_OK(rd(v, 0x10, &val, &x));
		ASSERT_EQ_U64(val, 0x4242);
		finish(vm);
	}
}

TEST(root_outside_ram_then_slot)
{
	for_each_mmu_variant(var) {
		struct vmmu_memslot high = { .slot = 1, .gpa = 32 * MB, .size = 1 * MB };
		const uint64_t R = 32 * MB;
		struct vmmu_cpu_state s;
		struct vmmu_exit x;
		vmmu_vcpu *v;
		vmmu_vm *vm;
		uint64_t val = 0;

		setup(var, 1, NULL, &vm, &v);
		memset(&s, 0, sizeof(s));
		s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
		s.cr4 = VMMU_CR4_PAE;
		s.efer = VMMU_EFER_LME;
		s.cr3 = R;	/* not RAM yet: a guest fault */
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
		ASSERT_EQ(rd(v, 0x1000, &val, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_OK(vmmu_set_memslot(vm, &high));
		/* The guest builds two trees in the new slot with its own stores:
		 * gva 0x1000 -> 0x5000 through the first, -> 0x6000 through the
		 * second. */
		host_wr64(vm, 0x5000, 0x5555);
		host_wr64(vm, 0x6000, 0x6666);
		pstore(v, R + 0x1000, R + 0x2000 + 7);
		pstore(v, R + 0x2000, R + 0x3000 + 7);
		pstore(v, R + 0x3000 + 8, 0x5000 + 7);
		pstore(v, R + 0x4000, R + 0x5000 + 7);
		pstore(v, R + 0x5000, R + 0x6000 + 7);
		pstore(v, R + 0x6000 + 8, 0x6000 + 7);
		pstore(v, R, R + 0x1000 + 7);
		ASSERT_OK(vmmu_vcpu_write_cr3(v, R));
		ASSERT_OK(rd(v, 0x1000, &val, &x));
		ASSERT_EQ_U64(val, 0x5555);
		/* The root table changes: the flushing MOV to CR3 must see it. */
		pstore(v, R, R + 0x4000 + 7);
		ASSERT_OK(vmmu_vcpu_write_cr3(v, R));
		ASSERT_OK(rd(v, 0x1000, &val, &x));
		ASSERT_EQ_U64(val, 0x6666);
		finish(vm);
	}
}

TEST(tables_in_gone_memory)
{
	for_each_mmu_variant(var) {
		uint8_t *mem = mmap(NULL, 16 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint64_t *q = (uint64_t *)mem, val = 0;
		uintptr_t gone = (uintptr_t)mem + 0x10000;
		struct vmmu_cpu_state s, pae;
		struct vmmu_exit x;
		vmmu_vcpu *v;
		vmmu_vm *vm;

		ASSERT_TRUE(mem != MAP_FAILED);
		setup(var, 1, mem, &vm, &v);
		/* 4-level: the PT of gva 0..2M lives in the page that goes. */
		memset(&s, 0, sizeof(s));
		s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
		s.cr4 = VMMU_CR4_PAE;
		s.efer = VMMU_EFER_LME;
		s.cr3 = 0x1000;
		q[0x1000 / 8] = 0x2000 | 0x27;
		q[0x2000 / 8] = 0x3000 | 0x27;
		q[0x3000 / 8] = 0x10000 | 0x27;
		q[0x10000 / 8 + 1] = 0x5000 | 0x67;
		q[0x10000 / 8 + 2] = 0x6000 | 0x67;
		ASSERT_OK(vmmu_vcpu_set_state(v, &s));
		ASSERT_OK(rd(v, 0x1000, &val, &x));
		ASSERT_OK(vmmu_set_host_protection(vm, gone, gone + PAGE, VMMU_HOST_NONE));
		ASSERT_EQ(mprotect((void *)gone, PAGE, PROT_NONE), 0);
		/* The shadow of the gone table still holds gva 0x1000's leaf: the
		 * audit must neither read the table nor call that a broken
		 * invariant (the fuzzer found it doing the second). */
		{
			char why[256] = "";

			if (vmmu_audit(vm, why, sizeof(why)))
				test_fail(__FILE__, __LINE__, "audit with a table in gone memory: %s", why);
		}
		ASSERT_OK(vmmu_vcpu_write_cr3(v, s.cr3));
		/* gva 0x2000: nothing maps it yet, its PTE is in the gone page. */
		ASSERT_EQ(rd(v, 0x2000, &val, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
		ASSERT_EQ_U64(x.u.memory_fault.gpa, 0x10000);
		/* PAE with its PDPT in the gone page: a MOV to CR3 loads it. */
		pae = s;
		pae.efer = 0;
		pae.cr3 = 0x20000;
		q[0x20000 / 8] = 0x2000 | 1;
		pae.cr0 = VMMU_CR0_PE;	/* out of long mode through paging off */
		ASSERT_OK(vmmu_vcpu_set_state(v, &pae));
		pae.cr0 = s.cr0;
		ASSERT_OK(vmmu_vcpu_set_state(v, &pae));
		ASSERT_ERR(vmmu_vcpu_write_cr3(v, 0x10000), VMMU_EFAULT);
		ASSERT_OK(vmmu_vcpu_get_state(v, &s));
		ASSERT_EQ_U64(s.cr3, 0x20000);	/* nothing changed */
		ASSERT_EQ(mprotect((void *)gone, PAGE, PROT_READ | PROT_WRITE), 0);
		ASSERT_OK(vmmu_set_host_protection(vm, gone, gone + PAGE, VMMU_HOST_RW));
		finish(vm);
		munmap(mem, 16 * MB);
	}
}

struct prot_race {
	vmmu_vm *vm;
	uintptr_t start, len;
	atomic_bool stop;
	atomic_uint_fast64_t attempts;	/* stores the vCPU has finished */
};

/*
 * The documented order: RO in vmmu first, then the host; RW the reverse.
 * Each RW stretch lasts until the vCPU has finished two more stores, so at
 * least one store ran wholly inside it and must have completed, however the
 * threads are scheduled.
 */
static void *protector(void *arg)
{
	struct prot_race *p = arg;

	for (int i = 0; i < 3000 && !atomic_load(&p->stop); i++) {
		uint64_t a;

		vmmu_set_host_protection(p->vm, p->start, p->start + p->len, VMMU_HOST_RO);
		mprotect((void *)p->start, p->len, PROT_READ);
		mprotect((void *)p->start, p->len, PROT_READ | PROT_WRITE);
		vmmu_set_host_protection(p->vm, p->start, p->start + p->len, VMMU_HOST_RW);
		a = atomic_load(&p->attempts);
		while (atomic_load(&p->attempts) < a + 2)
			sched_yield();
	}
	atomic_store(&p->stop, true);
	return NULL;
}

TEST(phys_stores_vs_protection)
{
	for_each_mmu_variant(var) {
		uint8_t *mem = mmap(NULL, 16 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct prot_race p = { .len = 2 * PAGE };
		uint64_t buf[2] = { 1, 2 }, bad = 0, ok = 0;
		vmmu_vcpu *v;
		pthread_t t;

		ASSERT_TRUE(mem != MAP_FAILED);
		setup(var, 1, mem, &p.vm, &v);
		p.start = (uintptr_t)mem + 0x10000;
		/* 16 bytes across the two pages the protector changes together:
		 * the store completes or faults; a copy after the RO took effect
		 * would be SIGSEGV.  Without a TLB (shadow paging's physical
		 * accesses) the fault names the first page; through TDP the first
		 * page may have been translated by a TLB entry the protection's
		 * flush had not yet dropped, which the architecture allows. */
		ASSERT_EQ(pthread_create(&t, NULL, protector, &p), 0);
		while (!atomic_load(&p.stop)) {
			struct vmmu_exit x;
			int r = vmmu_vcpu_access(v, 0x10ff8, buf, sizeof(buf), VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);

			atomic_fetch_add(&p.attempts, 1);
			if (r == 0)
				ok++;
			else if (r != VMMU_EXIT || x.reason != VMMU_EXIT_MEMORY_FAULT || x.done != 0 ||
				 (x.u.memory_fault.gpa != 0x10000 &&
				  (var->mmu == VMMU_MMU_SHADOW || x.u.memory_fault.gpa != 0x11000)))
				bad++;
		}
		pthread_join(t, NULL);
		ASSERT_EQ(bad, 0);
		ASSERT_GT(ok, 0);
		finish(p.vm);
		munmap(mem, 16 * MB);
	}
}

TEST(pse_per_vcpu)
{
	for_each_mmu_variant(var) {
		struct vmmu_cpu_state s;
		struct vmmu_exit x;
		vmmu_vcpu *v[2];
		vmmu_vm *vm;
		uint64_t val = 0;

		setup(var, 2, NULL, &vm, v);
		/* PDE 1: PS set, 4M page at 4M (with PSE) or the page table at 4M
		 * (without), whose entries are all 0. */
		host_wr64(vm, 0x1000, (0x400000ULL | 0x87) << 32);
		host_wr64(vm, 0x400d00, 0x77);
		memset(&s, 0, sizeof(s));
		s.cr0 = VMMU_CR0_PE | VMMU_CR0_PG | VMMU_CR0_WP;
		s.cr3 = 0x1000;
		s.cr4 = VMMU_CR4_PSE;
		ASSERT_OK(vmmu_vcpu_set_state(v[0], &s));
		s.cr4 = 0;
		ASSERT_OK(vmmu_vcpu_set_state(v[1], &s));
		ASSERT_OK(rd(v[0], 0x400d00, &val, &x));
		ASSERT_EQ_U64(val, 0x77);
		ASSERT_EQ(rd(v[1], 0x400d00, &val, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		ASSERT_EQ(x.u.guest_fault.vector, 14);
		/* And one vCPU turning PSE off, across a flushing CR3 load. */
		ASSERT_OK(vmmu_vcpu_set_state(v[0], &s));
		ASSERT_OK(vmmu_vcpu_write_cr3(v[0], 0x1000));
		ASSERT_EQ(rd(v[0], 0x400d00, &val, &x), VMMU_EXIT);
		ASSERT_EQ(x.reason, VMMU_EXIT_GUEST_FAULT);
		finish(vm);
	}
}
