/* SPDX-License-Identifier: MIT */
/*
 * paging: a guest with paging on, its page tables built with vmmu's guest
 * library (<vmmu/guest.h>: x86 page tables in guest memory).
 *
 * A small "guest kernel" runs on a vCPU thread.  It
 *  - builds 4-level page tables for two processes with its own stores
 *    (guest_pt_set_vcpu(): under shadow paging vmmu write-protects the tables
 *    and follows every store, as KVM does), maps itself into the upper half
 *    of both with global 2 MiB pages and turns paging on;
 *  - demand-pages each process's heap: the first touch of a page stops with
 *    VMMU_EXIT_GUEST_FAULT (a #PF, not present), which the embedder hands to
 *    the kernel's page-fault handler; it maps a zeroed frame and the access
 *    runs again;
 *  - shares one page read-only between the processes, copy-on-write: the
 *    first store of each is a #PF (present, write), and the handler gives it
 *    a private copy, remaps the page writable and invalidates the stale
 *    translation (INVLPG) before the store runs again;
 *  - switches CR3 between the processes, which see only their own memory.
 * Every value the guest reads through a virtual address is also checked on
 * the host side, in the frame guest_lookup() says the address maps.
 *
 * Usage: paging [--mmu tdp|shadow]; exit status 0 when every check passed.
 * Build against an installed vmmu:
 *   cc -O2 -pthread -o paging paging.c $(pkg-config --cflags --libs vmmu-guest)
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmmu/guest.h>
#include <vmmu/vmmu.h>

#define PAGE 4096ULL
#define MiB (1ULL << 20)
#define RAM_SIZE (32 * MiB)

/* Guest-physical layout. */
#define KERNEL_GPA (2 * MiB)		/* the kernel image: 4 MiB, two 2 MiB pages */
#define KERNEL_SIZE (4 * MiB)
#define TEMPLATE_GPA (6 * MiB)		/* the frame shared copy-on-write */
#define POOL_GPA (8 * MiB)		/* page-table pools, 1 MiB per process */
#define POOL_SIZE (1 * MiB)
#define FRAMES_GPA (16 * MiB)		/* frames the kernel hands out */
#define FRAMES_END RAM_SIZE

/* Virtual layout, the same in both processes. */
#define KERNEL_GVA 0xffffffff80000000ULL
#define HEAP_GVA 0x0000000040000000ULL	/* demand-paged */
#define HEAP_PAGES 64
#define COW_GVA 0x00007fffff000000ULL	/* shared copy-on-write */

/* #PF error code bits (SDM Vol. 3A 4.7). */
#define PF_P (1u << 0)
#define PF_W (1u << 1)
#define PF_U (1u << 2)

#define NR_PROCS 2

struct kernel {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	struct guest_pt *pt[NR_PROCS];
	unsigned int cur;		/* the process whose CR3 is loaded */
	uint64_t next_frame;
	bool cow_done[NR_PROCS];
	unsigned int demand_faults, cow_faults;
	bool failed;
};

static uint64_t template_word(uint64_t i)
{
	return 0x7e3a1a7e00000000ULL | i;
}

static uint64_t heap_word(unsigned int pid, uint64_t page, uint64_t i)
{
	return (uint64_t)(pid + 1) << 48 | page << 16 | i;
}

/* The host's view of what gva maps to in a process, for the checks. */
static int host_read(struct kernel *k, unsigned int pid, uint64_t gva, uint64_t *val)
{
	uint64_t gpa;
	void *hva;
	int r = guest_lookup(k->pt[pid], gva, &gpa, NULL, NULL, NULL);

	if (!r)
		r = vmmu_gpa_to_hva(k->vm, gpa, &hva);
	if (r) {
		fprintf(stderr, "host: process %u gva 0x%" PRIx64 ": %s\n", pid, gva, vmmu_strerror(r));
		return -1;
	}
	memcpy(val, hva, 8);
	return 0;
}

/* ---- the kernel ------------------------------------------------------------- */

/* The kernel's physical accesses (its "direct map"): paging bypassed. */
static int phys_access(struct kernel *k, uint64_t gpa, void *buf, size_t len, unsigned int type)
{
	struct vmmu_exit exit;
	int r = vmmu_vcpu_access(k->vcpu, gpa, buf, len, type | VMMU_ACCESS_PHYS, &exit);

	if (r) {
		fprintf(stderr, "kernel: physical access at 0x%" PRIx64 ": %s\n", gpa,
			r == VMMU_EXIT ? "exit" : vmmu_strerror(r));
		return -1;
	}
	return 0;
}

static int alloc_frame(struct kernel *k, uint64_t *gpa)
{
	static const uint8_t zero[PAGE];

	if (k->next_frame >= FRAMES_END) {
		fprintf(stderr, "kernel: out of frames\n");
		return -1;
	}
	*gpa = k->next_frame;
	k->next_frame += PAGE;
	/* Memory from the VM may hold anything: clear it, as a kernel must. */
	return phys_access(k, *gpa, (void *)zero, PAGE, VMMU_ACCESS_WRITE);
}

/* Exceptions are taken at CPL 0, and IRET returns to the interrupted CPL. */
static int set_cpl(struct kernel *k, uint32_t cpl)
{
	struct vmmu_cpu_state s;
	int r = vmmu_vcpu_get_state(k->vcpu, &s);

	if (!r) {
		s.cpl = cpl;
		r = vmmu_vcpu_set_state(k->vcpu, &s);
	}
	if (r)
		fprintf(stderr, "kernel: changing CPL: %s\n", vmmu_strerror(r));
	return r ? -1 : 0;
}

/* The #PF handler: 0 when the faulting access may run again. */
static int page_fault(struct kernel *k, uint64_t addr, uint32_t error_code)
{
	uint64_t page = addr & ~(PAGE - 1), frame;
	struct guest_pt *pt = k->pt[k->cur];
	int r;

	if (set_cpl(k, 0))
		return -1;
	if (!(error_code & PF_P) && page >= HEAP_GVA && page < HEAP_GVA + HEAP_PAGES * PAGE) {
		/*
		 * Demand paging.  No INVLPG: x86 caches no translation that
		 * faults (SDM 4.10.2.3), so the new entry is seen at once.
		 */
		k->demand_faults++;
		if (alloc_frame(k, &frame))
			return -1;
		r = guest_map(pt, page, frame, PAGE, PAGE, GUEST_U | GUEST_W | GUEST_NX);
	} else if ((error_code & (PF_P | PF_W)) == (PF_P | PF_W) && page == COW_GVA && !k->cow_done[k->cur]) {
		/* Copy-on-write: a private copy, mapped writable in place of the shared one. */
		uint8_t buf[PAGE];

		k->cow_faults++;
		if (alloc_frame(k, &frame) || phys_access(k, TEMPLATE_GPA, buf, PAGE, VMMU_ACCESS_READ) ||
		    phys_access(k, frame, buf, PAGE, VMMU_ACCESS_WRITE))
			return -1;
		r = guest_map(pt, page, frame, PAGE, PAGE, GUEST_U | GUEST_W | GUEST_NX);
		/* The old read-only translation may be cached: drop it. */
		vmmu_vcpu_invlpg(k->vcpu, page);
		k->cow_done[k->cur] = true;
	} else {
		fprintf(stderr, "process %u: segmentation fault at 0x%" PRIx64 " (error code 0x%x)\n", k->cur, addr,
			error_code);
		return -1;
	}
	if (r) {
		fprintf(stderr, "kernel: guest_map(0x%" PRIx64 "): %s\n", page, vmmu_strerror(r));
		return -1;
	}
	return set_cpl(k, 3);
}

/*
 * A process's load or store: exits are handled, guest page faults go to the
 * kernel's handler and the access runs again.  0 when done.
 */
static int user_access(struct kernel *k, uint64_t gva, void *buf, size_t len, unsigned int type)
{
	for (;;) {
		struct vmmu_exit exit;
		int r = vmmu_vcpu_access(k->vcpu, gva, buf, len, type, &exit);

		if (r == 0)
			return 0;
		if (r == VMMU_EXIT && exit.reason == VMMU_EXIT_GUEST_FAULT && exit.u.guest_fault.vector == 14) {
			if (page_fault(k, exit.u.guest_fault.addr, exit.u.guest_fault.error_code))
				return -1;
			continue;
		}
		if (r == VMMU_EXIT)
			fprintf(stderr, "process %u: exit reason %u at gva 0x%" PRIx64 "\n", k->cur, exit.reason, gva);
		else
			fprintf(stderr, "process %u: vmmu_vcpu_access: %s\n", k->cur, vmmu_strerror(r));
		return -1;
	}
}

static int switch_to(struct kernel *k, unsigned int pid)
{
	/* MOV CR3: the kernel's global mappings survive it, the process's do not. */
	int r = vmmu_vcpu_write_cr3(k->vcpu, guest_pt_cr3(k->pt[pid]));

	if (r) {
		fprintf(stderr, "kernel: write_cr3: %s\n", vmmu_strerror(r));
		return -1;
	}
	k->cur = pid;
	return 0;
}

/* What each process runs: fill its heap, read it back, then write into the shared page. */
static int process_main(struct kernel *k, unsigned int pid)
{
	uint64_t v, h;

	for (uint64_t p = 0; p < HEAP_PAGES; p++)
		for (uint64_t i = 0; i < PAGE / 8; i += 64) {
			v = heap_word(pid, p, i);
			if (user_access(k, HEAP_GVA + p * PAGE + i * 8, &v, 8, VMMU_ACCESS_WRITE))
				return -1;
		}
	/* Read the shared page, then store into it: that store is copy-on-write. */
	if (user_access(k, COW_GVA + 8, &v, 8, VMMU_ACCESS_READ))
		return -1;
	if (v != template_word(1)) {
		fprintf(stderr, "process %u: shared page reads 0x%" PRIx64 "\n", pid, v);
		return -1;
	}
	v = heap_word(pid, 0, 0);
	if (user_access(k, COW_GVA, &v, 8, VMMU_ACCESS_WRITE))
		return -1;
	/* The copy kept the rest of the page. */
	if (user_access(k, COW_GVA + 8, &v, 8, VMMU_ACCESS_READ) || v != template_word(1) ||
	    host_read(k, pid, COW_GVA + 8, &h) || h != v) {
		fprintf(stderr, "process %u: its copy of the shared page lost its contents\n", pid);
		return -1;
	}
	return 0;
}

/* A process checks its memory after the other one ran: nothing of the other's shows. */
static int process_check(struct kernel *k, unsigned int pid)
{
	uint64_t v, h;

	for (uint64_t p = 0; p < HEAP_PAGES; p++)
		for (uint64_t i = 0; i < PAGE / 8; i += 64) {
			uint64_t gva = HEAP_GVA + p * PAGE + i * 8;

			if (user_access(k, gva, &v, 8, VMMU_ACCESS_READ) || host_read(k, pid, gva, &h))
				return -1;
			if (v != heap_word(pid, p, i) || h != v) {
				fprintf(stderr, "process %u: gva 0x%" PRIx64 " reads 0x%" PRIx64 " (frame holds 0x%" PRIx64
					"), want 0x%" PRIx64 "\n", pid, gva, v, h, heap_word(pid, p, i));
				return -1;
			}
		}
	if (user_access(k, COW_GVA, &v, 8, VMMU_ACCESS_READ) || host_read(k, pid, COW_GVA, &h) ||
	    v != heap_word(pid, 0, 0) || h != v) {
		fprintf(stderr, "process %u: its copy of the shared page reads 0x%" PRIx64 "\n", pid, v);
		return -1;
	}
	return 0;
}

static int kernel_boot(struct kernel *k)
{
	struct vmmu_cpu_state s;
	uint64_t v, h;
	int r;

	/* Paging is still off: gva == gpa.  Fill the frame to be shared. */
	for (uint64_t i = 0; i < PAGE / 8; i++) {
		v = template_word(i);
		if (phys_access(k, TEMPLATE_GPA + i * 8, &v, 8, VMMU_ACCESS_WRITE))
			return -1;
	}
	for (unsigned int pid = 0; pid < NR_PROCS; pid++) {
		struct guest_pt *pt;

		r = guest_pt_create(k->vm, GUEST_MODE_4LEVEL, POOL_GPA + pid * POOL_SIZE, POOL_SIZE, &pt);
		if (r) {
			fprintf(stderr, "guest_pt_create: %s\n", vmmu_strerror(r));
			return -1;
		}
		k->pt[pid] = pt;
		guest_pt_set_vcpu(pt, k->vcpu);	/* from now on the tables are written by guest stores */
		r = guest_map(pt, KERNEL_GVA, KERNEL_GPA, KERNEL_SIZE, GUEST_PAGE_2M, GUEST_W | GUEST_G);
		if (!r)
			r = guest_map(pt, COW_GVA, TEMPLATE_GPA, PAGE, PAGE, GUEST_U | GUEST_NX);	/* read-only */
		if (r) {
			fprintf(stderr, "guest_map: %s\n", vmmu_strerror(r));
			return -1;
		}
	}
	/* Paging on (CR0.PG, CR4.PAE, EFER.LME|NXE), in process 0's address space, global pages on. */
	guest_pt_state(k->pt[0], &s, 0);
	s.cr4 |= VMMU_CR4_PGE;
	r = vmmu_vcpu_set_state(k->vcpu, &s);
	if (r) {
		fprintf(stderr, "vmmu_vcpu_set_state: %s\n", vmmu_strerror(r));
		return -1;
	}
	/* The kernel sees itself at its virtual address. */
	v = 0x6b65726e656cULL;
	if (user_access(k, KERNEL_GVA + 3 * MiB, &v, 8, VMMU_ACCESS_WRITE) || host_read(k, 0, KERNEL_GVA + 3 * MiB, &h))
		return -1;
	if (h != v) {
		fprintf(stderr, "kernel: its store through KERNEL_GVA landed elsewhere\n");
		return -1;
	}
	return set_cpl(k, 3);
}

static int kernel_run(struct kernel *k)
{
	if (kernel_boot(k))
		return -1;
	for (unsigned int pid = 0; pid < NR_PROCS; pid++)
		if (switch_to(k, pid) || process_main(k, pid))
			return -1;
	for (unsigned int pid = 0; pid < NR_PROCS; pid++)
		if (switch_to(k, pid) || process_check(k, pid))
			return -1;
	return 0;
}

static void *vcpu_thread_fn(void *arg)
{
	struct kernel *k = arg;

	k->failed = kernel_run(k) != 0;
	return NULL;
}

/* ---- the host side ---------------------------------------------------------- */

static int check_results(struct kernel *k)
{
	struct vmmu_vcpu_stats st;
	int bad = 0;

	/* The shared frame itself was never written: each process got a copy. */
	for (uint64_t i = 0; i < PAGE / 8; i++) {
		uint64_t v;
		void *hva;

		if (vmmu_gpa_to_hva(k->vm, TEMPLATE_GPA + i * 8, &hva)) {
			bad = 1;
			break;
		}
		memcpy(&v, hva, 8);
		if (v != template_word(i)) {
			fprintf(stderr, "the shared frame changed at word %" PRIu64 "\n", i);
			bad = 1;
			break;
		}
	}
	if (k->demand_faults != NR_PROCS * HEAP_PAGES || k->cow_faults != NR_PROCS) {
		fprintf(stderr, "%u demand faults (want %d), %u copy-on-write faults (want %d)\n", k->demand_faults,
			NR_PROCS * HEAP_PAGES, k->cow_faults, NR_PROCS);
		bad = 1;
	}
	vmmu_vcpu_get_stats(k->vcpu, &st);
	/* Under shadow paging each of the kernel's page-table stores was trapped and emulated. */
	printf("paging: %u demand-paged pages, %u copy-on-write copies, %" PRIu64
	       " page-table stores emulated by vmmu: %s\n",
	       k->demand_faults, k->cow_faults, st.pt_write_emulations, bad ? "FAILED" : "ok");
	return bad;
}

int main(int argc, char **argv)
{
	static struct kernel k = { .next_frame = FRAMES_GPA };
	struct vmmu_memslot slot = { .slot = 0, .gpa = 0, .size = RAM_SIZE, .host_page_size = 2 * MiB };
	struct vmmu_vm_config cfg;
	pthread_t thread;
	int r, bad;

	vmmu_vm_config_init(&cfg);
	if (argc == 3 && !strcmp(argv[1], "--mmu") && !strcmp(argv[2], "shadow"))
		cfg.mmu = VMMU_MMU_SHADOW;
	else if (argc != 1 && !(argc == 3 && !strcmp(argv[1], "--mmu") && !strcmp(argv[2], "tdp"))) {
		fprintf(stderr, "usage: %s [--mmu tdp|shadow]\n", argv[0]);
		return 2;
	}
	cfg.max_vcpus = 1;
	r = vmmu_vm_create(&cfg, &k.vm);
	if (!r)
		r = vmmu_set_memslot(k.vm, &slot);	/* vmmu allocates the RAM */
	if (!r)
		r = vmmu_vcpu_create(k.vm, 0, &k.vcpu);
	if (r) {
		fprintf(stderr, "creating the VM: %s\n", vmmu_strerror(r));
		return 1;
	}
	r = pthread_create(&thread, NULL, vcpu_thread_fn, &k);
	if (r) {
		fprintf(stderr, "pthread_create: %s\n", strerror(r));
		return 1;
	}
	r = pthread_join(thread, NULL);
	if (r) {
		fprintf(stderr, "pthread_join: %s\n", strerror(r));
		return 1;
	}
	bad = k.failed || check_results(&k);
	printf("paging (%s): %s\n", cfg.mmu == VMMU_MMU_SHADOW ? "shadow paging" : "TDP", bad ? "FAILED" : "ok");
	for (unsigned int pid = 0; pid < NR_PROCS; pid++)
		if (k.pt[pid])
			guest_pt_destroy(k.pt[pid]);
	vmmu_vm_destroy(k.vm);
	return bad;
}
