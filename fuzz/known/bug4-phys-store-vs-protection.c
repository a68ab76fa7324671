/* SPDX-License-Identifier: MIT */
/*
 * Known bug 4: under shadow paging, VMMU_ACCESS_PHYS stores are not ordered
 * against vmmu_set_host_protection().
 *
 * Thread B protects pages the documented way, RO with vmmu first and then
 * mprotect(PROT_READ), RW with mprotect first and then vmmu; thread A stores
 * guest-physically.  Bounded iterations, no timing: a bad interleaving shows
 * up or not.
 *
 *   ./a.out mixed   16 bytes across two pages that B protects together.
 *                   Legal: done, or a memory fault at the FIRST page; vmmu
 *                   also reports the second page (neither state's answer).
 *   ./a.out segv    32 pages, B protects only the first: vmmu checks it,
 *                   B's vmmu_set_host_protection returns, B mprotects, and
 *                   vmmu's copy into it raises SIGSEGV.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmmu/vmmu.h"

static vmmu_vm *vm;
static uint8_t *mem;
static atomic_bool stop;
static size_t prot_len;

static void on_segv(int sig)
{
	static const char m[] = "SIGSEGV: vmmu stored into memory after vmmu_set_host_protection(RO) returned\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(3);
	_exit(1);
}

static void *host(void *arg)
{
	uintptr_t s = (uintptr_t)mem + 0x10000;

	(void)arg;
	for (int i = 0; i < 20000 && !atomic_load(&stop); i++) {
		vmmu_set_host_protection(vm, s, s + prot_len, VMMU_HOST_RO);
		mprotect((void *)s, prot_len, PROT_READ);
		mprotect((void *)s, prot_len, PROT_READ | PROT_WRITE);
		vmmu_set_host_protection(vm, s, s + prot_len, VMMU_HOST_RW);
	}
	atomic_store(&stop, true);
	return NULL;
}

int main(int argc, char **argv)
{
	static uint8_t buf[32 * 4096];
	bool segv = argc > 1 && !strcmp(argv[1], "segv");
	uint64_t gpa = segv ? 0x10000 : 0x10ff8;
	size_t len = segv ? sizeof(buf) : 16;
	unsigned long done = 0, first = 0, second = 0;
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = 1 << 20 };
	vmmu_vcpu *v;
	pthread_t t;

	prot_len = segv ? 0x1000 : 0x2000;
	signal(SIGSEGV, on_segv);
	mem = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	slot.hva = mem;
	vmmu_vm_config_init(&cfg);
	cfg.mmu = VMMU_MMU_SHADOW;
	if (mem == MAP_FAILED || vmmu_vm_create(&cfg, &vm) || vmmu_set_memslot(vm, &slot) ||
	    vmmu_vcpu_create(vm, 0, &v))
		return 2;
	pthread_create(&t, NULL, host, NULL);
	while (!atomic_load(&stop)) {
		struct vmmu_exit x;
		int r = vmmu_vcpu_access(v, gpa, buf, len, VMMU_ACCESS_WRITE | VMMU_ACCESS_PHYS, &x);

		if (r == 0)
			done++;
		else if (r == VMMU_EXIT && x.reason == VMMU_EXIT_MEMORY_FAULT && x.u.memory_fault.gpa == 0x10000)
			first++;
		else if (r == VMMU_EXIT && x.reason == VMMU_EXIT_MEMORY_FAULT && x.u.memory_fault.gpa == 0x11000)
			second++;
	}
	pthread_join(t, NULL);
	printf("done %lu, memory fault at the first page %lu, at the second page (mixed states) %lu\n", done, first,
	       second);
	vmmu_vm_destroy(vm);
	return second != 0;
}
