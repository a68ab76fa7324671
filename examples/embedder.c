/* SPDX-License-Identifier: MIT */
/*
 * embedder: the smallest complete vmmu embedder.
 *
 * One VM with 32 MiB of RAM that the embedder allocates itself, and four
 * vCPU threads running a small "guest program" with paging off (gva == gpa):
 *
 *  1. each vCPU fills its own 4 MiB of RAM page by page and reads it back;
 *  2. all of them then read the upper 16 MiB, which starts out absent: the
 *     embedder fills it in on demand, 1 MiB at a time, when a vCPU stops
 *     with VMMU_EXIT_MEMORY_FAULT (the host memory behind the slot is
 *     PROT_NONE and vmmu was told so with vmmu_set_host_protection(): the
 *     way a lazily restored snapshot or a post-copy migration works);
 *  3. each reports a checksum of what it read to a device at DEV_GPA.  No
 *     memslot covers that address, so every access there stops with
 *     VMMU_EXIT_MMIO and the embedder emulates the device.
 *
 * The main thread then checks the guest's memory from the host side, the
 * device's registers and the exit counts against what the program did.
 * Exit status 0 when everything matched, 1 otherwise.
 *
 * Build against an installed vmmu:
 *   cc -O2 -pthread -o embedder embedder.c $(pkg-config --cflags --libs vmmu)
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <vmmu/vmmu.h>

#define PAGE 4096ULL
#define MiB (1ULL << 20)
#define NR_VCPUS 4
#define RAM_SIZE (32 * MiB)
#define OWN_SIZE (4 * MiB)		/* each vCPU's own part, from gpa 0 up */
#define LAZY_GPA (16 * MiB)		/* the on-demand part: [LAZY_GPA, RAM_SIZE) */
#define LAZY_SIZE (RAM_SIZE - LAZY_GPA)
#define CHUNK (1 * MiB)			/* what one memory fault fills in */
#define NR_CHUNKS (LAZY_SIZE / CHUNK)

/* The device: three registers in one page of guest-physical space. */
#define DEV_GPA 0xfe000000ULL
#define DEV_ID 0x0			/* 4 bytes, read-only: DEV_MAGIC */
#define DEV_SUM 0x8			/* 8 bytes: a write adds to it, a read returns it */
#define DEV_DONE 0x10			/* 4 bytes, write-only: vCPU n writes n when done */
#define DEV_MAGIC 0x554d4d56u		/* "VMMU" */

struct device {
	pthread_mutex_t lock;		/* vCPUs exit to it in parallel */
	uint64_t sum;
	uint32_t done_mask;
	uint64_t accesses;
};

struct machine {
	vmmu_vm *vm;
	uint8_t *ram;			/* the slot's backing, owned by us */
	struct device dev;
	pthread_mutex_t lazy_lock;	/* serializes filling in chunks */
	bool populated[NR_CHUNKS];
	unsigned int chunks_populated;
};

struct vcpu_thread {
	struct machine *m;
	unsigned int id;
	vmmu_vcpu *vcpu;
	pthread_t thread;
	uint64_t checksum;		/* of the lazy part, as this vCPU read it */
	uint64_t mmio_exits;
	uint64_t memory_fault_exits;
	bool failed;
};

/* What the guest writes at gpa (one 64-bit word), and what the embedder fills the lazy part with. */
static uint64_t own_word(uint64_t gpa)
{
	return (gpa ^ 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
}

static uint64_t lazy_word(uint64_t gpa)
{
	return (gpa + 0x632be59bd9b4e019ULL) * 0x94d049bb133111ebULL;
}

static void lock(pthread_mutex_t *l)
{
	int r = pthread_mutex_lock(l);

	if (r) {
		fprintf(stderr, "pthread_mutex_lock: %s\n", strerror(r));
		abort();
	}
}

static void unlock(pthread_mutex_t *l)
{
	int r = pthread_mutex_unlock(l);

	if (r) {
		fprintf(stderr, "pthread_mutex_unlock: %s\n", strerror(r));
		abort();
	}
}

/* ---- the device, emulated on whichever vCPU thread exits to it ------------ */

static int device_access(struct device *d, uint64_t gpa, void *buf, uint32_t len, bool is_write)
{
	uint64_t reg = gpa - DEV_GPA;
	int r = 0;

	lock(&d->lock);
	d->accesses++;
	if (reg == DEV_ID && len == 4 && !is_write) {
		uint32_t v = DEV_MAGIC;

		memcpy(buf, &v, 4);
	} else if (reg == DEV_SUM && len == 8) {
		if (is_write) {
			uint64_t v;

			memcpy(&v, buf, 8);
			d->sum += v;
		} else {
			memcpy(buf, &d->sum, 8);
		}
	} else if (reg == DEV_DONE && len == 4 && is_write) {
		uint32_t v;

		memcpy(&v, buf, 4);
		if (v < NR_VCPUS)
			d->done_mask |= 1u << v;
		else
			r = -1;
	} else {
		/* A real device would ignore it; for this guest it is a bug. */
		r = -1;
	}
	unlock(&d->lock);
	if (r)
		fprintf(stderr, "device: bad %s of %u bytes at register 0x%" PRIx64 "\n", is_write ? "write" : "read",
			len, reg);
	return r;
}

/* ---- host memory filled in on demand ----------------------------------------- */

static int populate(struct machine *m, uint64_t gpa)
{
	uint64_t chunk;
	int r = 0;

	if (gpa < LAZY_GPA || gpa >= LAZY_GPA + LAZY_SIZE) {
		fprintf(stderr, "memory fault at gpa 0x%" PRIx64 ", outside the on-demand part\n", gpa);
		return -1;
	}
	chunk = (gpa - LAZY_GPA) / CHUNK;
	lock(&m->lazy_lock);
	/* Other vCPUs may have faulted on the same chunk meanwhile. */
	if (!m->populated[chunk]) {
		uint64_t base = LAZY_GPA + chunk * CHUNK;
		uint8_t *hva = m->ram + base;

		/*
		 * Host side first, then vmmu: as soon as vmmu hears RW, a vCPU
		 * may map the chunk and read it, so it must be complete by then.
		 */
		if (mprotect(hva, CHUNK, PROT_READ | PROT_WRITE)) {
			perror("mprotect");
			r = -1;
		} else {
			for (uint64_t off = 0; off < CHUNK; off += 8) {
				uint64_t w = lazy_word(base + off);

				memcpy(hva + off, &w, 8);
			}
			r = vmmu_set_host_protection(m->vm, (uintptr_t)hva, (uintptr_t)(hva + CHUNK), VMMU_HOST_RW);
			if (r)
				fprintf(stderr, "vmmu_set_host_protection(RW): %s\n", vmmu_strerror(r));
		}
		if (!r) {
			m->populated[chunk] = true;
			m->chunks_populated++;
		}
	}
	unlock(&m->lazy_lock);
	return r;
}

/* ---- the vCPU loop -------------------------------------------------------------- */

/*
 * One guest load or store, run until it completes: what an embedder's vCPU
 * loop does around vmmu_vcpu_access().  Returns 0, or -1 after saying why.
 */
static int guest_access(struct vcpu_thread *t, uint64_t gpa, void *buf, size_t len, unsigned int type)
{
	for (;;) {
		struct vmmu_exit exit;
		const char *why;
		int r = vmmu_vcpu_access(t->vcpu, gpa, buf, len, type, &exit);

		if (r == 0)
			return 0;
		if (r != VMMU_EXIT) {
			fprintf(stderr, "vcpu %u: vmmu_vcpu_access(0x%" PRIx64 "): %s\n", t->id, gpa, vmmu_strerror(r));
			return -1;
		}
		switch (exit.reason) {
		case VMMU_EXIT_MMIO:
			/*
			 * No byte moved; the device performs the access.  An
			 * access that also touched RAM would come back as a
			 * fragment (offset, len) of it, which an instruction
			 * emulator completes piece by piece; this guest's device
			 * accesses never straddle a page, so the fragment is the
			 * whole access.
			 */
			t->mmio_exits++;
			if (exit.u.mmio.offset != 0 || exit.u.mmio.len != len) {
				fprintf(stderr, "vcpu %u: MMIO fragment %u+%u of a %zu-byte access\n", t->id,
					exit.u.mmio.offset, exit.u.mmio.len, len);
				return -1;
			}
			return device_access(&t->m->dev, exit.u.mmio.gpa, buf, exit.u.mmio.len, exit.u.mmio.is_write);
		case VMMU_EXIT_MEMORY_FAULT:
			/* Nothing moved either: fill the memory in, run the access again. */
			t->memory_fault_exits++;
			if (populate(t->m, exit.u.memory_fault.gpa))
				return -1;
			continue;
		case VMMU_EXIT_INTERNAL_ERROR:
			if (!vmmu_vm_bugged(t->m->vm, &why))
				why = vmmu_strerror(exit.u.internal.error);
			fprintf(stderr, "vcpu %u: internal error: %s\n", t->id, why);
			return -1;
		default:
			/* Guest faults need paging, ring-full exits dirty rings: neither is on. */
			fprintf(stderr, "vcpu %u: unexpected exit reason %u at gpa 0x%" PRIx64 "\n", t->id, exit.reason,
				gpa);
			return -1;
		}
	}
}

static int guest_program(struct vcpu_thread *t)
{
	uint64_t page[PAGE / 8], own = (uint64_t)t->id * OWN_SIZE;
	uint32_t id;

	/* 1. Fill our own part, then read it back. */
	for (uint64_t gpa = own; gpa < own + OWN_SIZE; gpa += PAGE) {
		for (uint64_t i = 0; i < PAGE / 8; i++)
			page[i] = own_word(gpa + i * 8);
		if (guest_access(t, gpa, page, PAGE, VMMU_ACCESS_WRITE))
			return -1;
	}
	for (uint64_t gpa = own; gpa < own + OWN_SIZE; gpa += PAGE) {
		if (guest_access(t, gpa, page, PAGE, VMMU_ACCESS_READ))
			return -1;
		for (uint64_t i = 0; i < PAGE / 8; i++)
			if (page[i] != own_word(gpa + i * 8)) {
				fprintf(stderr, "vcpu %u: gpa 0x%" PRIx64 " reads 0x%" PRIx64 "\n", t->id, gpa + i * 8,
					page[i]);
				return -1;
			}
	}
	/*
	 * 2. Read all of the on-demand part, each vCPU starting at another
	 * chunk so that they fault on different chunks at the same time.
	 */
	for (uint64_t n = 0; n < LAZY_SIZE / PAGE; n++) {
		uint64_t gpa = LAZY_GPA + (n * PAGE + t->id * (LAZY_SIZE / NR_VCPUS)) % LAZY_SIZE;

		if (guest_access(t, gpa, page, PAGE, VMMU_ACCESS_READ))
			return -1;
		for (uint64_t i = 0; i < PAGE / 8; i++) {
			if (page[i] != lazy_word(gpa + i * 8)) {
				fprintf(stderr, "vcpu %u: on-demand gpa 0x%" PRIx64 " reads 0x%" PRIx64 "\n", t->id,
					gpa + i * 8, page[i]);
				return -1;
			}
			t->checksum += page[i];
		}
	}
	/* 3. Talk to the device. */
	if (guest_access(t, DEV_GPA + DEV_ID, &id, 4, VMMU_ACCESS_READ))
		return -1;
	if (id != DEV_MAGIC) {
		fprintf(stderr, "vcpu %u: device id 0x%x\n", t->id, id);
		return -1;
	}
	if (guest_access(t, DEV_GPA + DEV_SUM, &t->checksum, 8, VMMU_ACCESS_WRITE))
		return -1;
	id = t->id;
	return guest_access(t, DEV_GPA + DEV_DONE, &id, 4, VMMU_ACCESS_WRITE);
}

static void *vcpu_thread_fn(void *arg)
{
	struct vcpu_thread *t = arg;

	t->failed = guest_program(t) != 0;
	return NULL;
}

/* ---- the host side ---------------------------------------------------------- */

static int check_results(struct machine *m, struct vcpu_thread *t)
{
	uint64_t lazy_sum = 0, mmio = 0, faults = 0;
	int bad = 0;

	/* The guest's stores are in the memory we gave the slot. */
	for (uint64_t gpa = 0; gpa < NR_VCPUS * OWN_SIZE; gpa += 8) {
		uint64_t w;

		memcpy(&w, m->ram + gpa, 8);
		if (w != own_word(gpa)) {
			fprintf(stderr, "host: gpa 0x%" PRIx64 " holds 0x%" PRIx64 "\n", gpa, w);
			bad = 1;
			break;
		}
	}
	for (uint64_t gpa = LAZY_GPA; gpa < LAZY_GPA + LAZY_SIZE; gpa += 8)
		lazy_sum += lazy_word(gpa);
	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		mmio += t[i].mmio_exits;
		faults += t[i].memory_fault_exits;
	}
	if (m->dev.sum != NR_VCPUS * lazy_sum || m->dev.done_mask != (1u << NR_VCPUS) - 1) {
		fprintf(stderr, "device: sum 0x%" PRIx64 " (want 0x%" PRIx64 "), done mask 0x%x\n", m->dev.sum,
			NR_VCPUS * lazy_sum, m->dev.done_mask);
		bad = 1;
	}
	/* Every device access is an exit: vmmu cannot complete one itself. */
	if (mmio != 3 * NR_VCPUS || m->dev.accesses != mmio) {
		fprintf(stderr, "%" PRIu64 " MMIO exits, %" PRIu64 " device accesses, want %d\n", mmio,
			m->dev.accesses, 3 * NR_VCPUS);
		bad = 1;
	}
	/* Each chunk was filled in once, on a fault (two vCPUs may fault on one chunk). */
	if (m->chunks_populated != NR_CHUNKS || faults < NR_CHUNKS) {
		fprintf(stderr, "%u of %llu chunks filled in on %" PRIu64 " memory faults\n", m->chunks_populated,
			(unsigned long long)NR_CHUNKS, faults);
		bad = 1;
	}
	printf("embedder: %d vCPUs, %" PRIu64 " MMIO exits, %" PRIu64 " memory-fault exits filled in %llu MiB: %s\n",
	       NR_VCPUS, mmio, faults, (unsigned long long)(m->chunks_populated * CHUNK / MiB), bad ? "FAILED" : "ok");
	return bad;
}

int main(void)
{
	static struct machine m = {
		.dev = { .lock = PTHREAD_MUTEX_INITIALIZER },
		.lazy_lock = PTHREAD_MUTEX_INITIALIZER,
	};
	struct vcpu_thread t[NR_VCPUS];
	struct vmmu_vm_config cfg;
	struct vmmu_memslot slot;
	unsigned int started = 0;
	int r, bad = 0;

	/* The program was compiled against one vmmu.h; say which library runs it. */
	printf("embedder: vmmu.h %s, libvmmu %s\n", VMMU_VERSION_STRING, vmmu_version());

	m.ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m.ram == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	vmmu_vm_config_init(&cfg);	/* TDP (EPT, 4 levels), A/D bits, huge pages */
	cfg.max_vcpus = NR_VCPUS;
	r = vmmu_vm_create(&cfg, &m.vm);
	if (r) {
		fprintf(stderr, "vmmu_vm_create: %s\n", vmmu_strerror(r));
		return 1;
	}
	slot = (struct vmmu_memslot){ .slot = 0, .gpa = 0, .size = RAM_SIZE, .hva = m.ram, .host_page_size = PAGE };
	r = vmmu_set_memslot(m.vm, &slot);
	if (r) {
		fprintf(stderr, "vmmu_set_memslot: %s\n", vmmu_strerror(r));
		return 1;
	}
	/*
	 * The on-demand part starts absent.  vmmu first, then the host: the
	 * call removes any mapping of the range before the memory goes (here
	 * there is none yet, but this is the order for a running guest too).
	 */
	r = vmmu_set_host_protection(m.vm, (uintptr_t)(m.ram + LAZY_GPA), (uintptr_t)(m.ram + RAM_SIZE), VMMU_HOST_NONE);
	if (r) {
		fprintf(stderr, "vmmu_set_host_protection(NONE): %s\n", vmmu_strerror(r));
		return 1;
	}
	if (mprotect(m.ram + LAZY_GPA, LAZY_SIZE, PROT_NONE)) {
		perror("mprotect");
		return 1;
	}

	for (unsigned int i = 0; i < NR_VCPUS; i++) {
		t[i] = (struct vcpu_thread){ .m = &m, .id = i };
		r = vmmu_vcpu_create(m.vm, i, &t[i].vcpu);
		if (r) {
			fprintf(stderr, "vmmu_vcpu_create(%u): %s\n", i, vmmu_strerror(r));
			return 1;
		}
	}
	for (; started < NR_VCPUS; started++) {
		r = pthread_create(&t[started].thread, NULL, vcpu_thread_fn, &t[started]);
		if (r) {
			fprintf(stderr, "pthread_create: %s\n", strerror(r));
			bad = 1;
			break;
		}
	}
	for (unsigned int i = 0; i < started; i++) {
		r = pthread_join(t[i].thread, NULL);
		if (r) {
			fprintf(stderr, "pthread_join: %s\n", strerror(r));
			return 1;
		}
		bad |= t[i].failed;
	}
	if (!bad)
		bad = check_results(&m, t);

	/* No vCPU is inside vmmu_vcpu_access() any more: the VM can go, then its memory. */
	vmmu_vm_destroy(m.vm);
	if (munmap(m.ram, RAM_SIZE)) {
		perror("munmap");
		return 1;
	}
	return bad;
}
