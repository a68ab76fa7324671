/* SPDX-License-Identifier: MIT */
/*
 * Real threads against the MMU: vCPUs faulting while other threads zap,
 * flush and swap memslots.  Run under ASan+UBSan and TSan by `make check`.
 * Loops are bounded by iterations AND wall time, so sanitizer builds finish
 * in the same time as plain ones with fewer iterations.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

#include "harness.h"

#define MB (1ULL << 20)



/* ---- faults racing with zaps and flushes -------------------------------- */

#define FZ_PAGES (32 * MB / 4096)
#define FZ_SECONDS 0.7

struct fz {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	uint64_t *shadow[2];	/* what each vCPU last wrote to each page (its own offset) */
	_Atomic bool stop;
	_Atomic unsigned int failures;
	char why[256];
	uint64_t base_gpa;
	uint64_t ops[3];
};

static void fz_fail(struct fz *z, const char *msg, uint64_t gpa, uint64_t want, uint64_t got)
{
	if (atomic_fetch_add(&z->failures, 1) == 0)
		snprintf(z->why, sizeof(z->why), "%s at gpa %#llx: want %#llx got %#llx", msg,
			 (unsigned long long)gpa, (unsigned long long)want, (unsigned long long)got);
	atomic_store(&z->stop, true);
}

struct fz_arg {
	struct fz *z;
	int id;
};

static void *fz_vcpu(void *p)
{
	struct fz_arg *a = p;
	struct fz *z = a->z;
	uint64_t seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(a->id + 1);
	double end = now_s() + FZ_SECONDS;
	struct vmmu_exit x;
	uint64_t i;

	for (i = 0; !atomic_load(&z->stop) && (i < 2000 || now_s() < end) && i < 4000000; i++) {
		uint64_t page = xorshift(&seed) % FZ_PAGES;
		/* Each vCPU owns one 8-byte word per page: both fault on the same
		 * pages (racing installs), neither races on guest data. */
		uint64_t gpa = z->base_gpa + page * 4096 + (uint64_t)a->id * 8;
		uint64_t v = (i << 20) | page, r = 0;
		int rc;

		rc = vmmu_vcpu_access(z->vcpu[a->id], gpa, &v, 8, VMMU_ACCESS_WRITE, &x);
		if (rc) {
			fz_fail(z, "write failed", gpa, 0, (uint64_t)rc);
			break;
		}
		z->shadow[a->id][page] = v;
		/* Read back a random earlier page too: zaps must never lose data. */
		page = xorshift(&seed) % FZ_PAGES;
		gpa = z->base_gpa + page * 4096 + (uint64_t)a->id * 8;
		rc = vmmu_vcpu_access(z->vcpu[a->id], gpa, &r, 8, VMMU_ACCESS_READ, &x);
		if (rc) {
			fz_fail(z, "read failed", gpa, 0, (uint64_t)rc);
			break;
		}
		if (r != z->shadow[a->id][page]) {
			fz_fail(z, "lost write", gpa, z->shadow[a->id][page], r);
			break;
		}
	}
	z->ops[a->id] = i;
	return NULL;
}

static void *fz_zapper(void *p)
{
	struct fz *z = p;
	uint64_t seed = 12345;
	uint64_t n = 0;
	double end = now_s() + FZ_SECONDS;

	while (!atomic_load(&z->stop) && (n < 200 || now_s() < end) && n < 1000000) {
		uint64_t r = xorshift(&seed);
		uint64_t start = (z->base_gpa >> 12) + r % FZ_PAGES;
		uint64_t len = 1 + (r >> 32) % 1024;

		switch (r % 16) {
		case 0:
			vmmu_zap_all(z->vm);
			break;
		case 1:
		case 2:
			vmmu_flush_remote_tlbs(z->vm);
			break;
		default:
			if (vmmu_zap_gfn_range(z->vm, start, start + len))
				fz_fail(z, "zap failed", start << 12, 0, 0);
			break;
		}
		n++;
	}
	z->ops[2] = n;
	return NULL;
}

static void run_faults_vs_zaps(const struct mmu_variant *var, uint64_t host_page)
{
	struct vmmu_vm_config cfg;
	struct fz z;
	struct fz_arg args[2];
	pthread_t t[3];
	struct vmmu_vm_stats st;
	const char *why;

	memset(&z, 0, sizeof(z));
	z.base_gpa = 64 * MB;
	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &z.vm));
	{
		struct vmmu_memslot s = { .slot = 3, .gpa = z.base_gpa, .size = FZ_PAGES * 4096,
					  .host_page_size = host_page };

		ASSERT_OK(vmmu_set_memslot(z.vm, &s));
	}
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(vmmu_vcpu_create(z.vm, (unsigned int)i, &z.vcpu[i]));
		z.shadow[i] = calloc(FZ_PAGES, sizeof(uint64_t));
		args[i] = (struct fz_arg){ &z, i };
	}
	pthread_create(&t[0], NULL, fz_vcpu, &args[0]);
	pthread_create(&t[1], NULL, fz_vcpu, &args[1]);
	pthread_create(&t[2], NULL, fz_zapper, &z);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	if (atomic_load(&z.failures))
		test_fail(__FILE__, __LINE__, "%s", z.why);

	/* Every word, through the host view: nothing lost, nothing torn. */
	for (int i = 0; i < 2; i++) {
		uint64_t *hva;

		for (uint64_t p = 0; p < FZ_PAGES; p++) {
			if (!z.shadow[i][p])
				continue;
			ASSERT_OK(vmmu_gpa_to_hva(z.vm, z.base_gpa + p * 4096 + (uint64_t)i * 8, (void **)&hva));
			ASSERT_EQ_U64(*hva, z.shadow[i][p]);
		}
		free(z.shadow[i]);
	}
	vmmu_vm_get_stats(z.vm, &st);
	ASSERT_LE(st.pages_4k + 512 * st.pages_2m, FZ_PAGES);
	ASSERT_FALSE(vmmu_vm_bugged(z.vm, &why));
	ASSERT_AUDIT(z.vm);
	fprintf(stderr, "    [%s host page %lluK] vcpu ops %llu+%llu, zapper ops %llu, flushes %llu\n", var->name,
		(unsigned long long)host_page >> 10, (unsigned long long)z.ops[0], (unsigned long long)z.ops[1],
		(unsigned long long)z.ops[2], (unsigned long long)st.remote_tlb_flushes);
	vmmu_vm_destroy(z.vm);
}

TEST(faults_race_zaps_and_flushes)
{
	for_each_mmu_variant(var)
		run_faults_vs_zaps(var, 4096);
}

TEST(faults_race_zaps_hugepages)
{
	for_each_mmu_variant(var)
		run_faults_vs_zaps(var, 2 * MB);
}

/* ---- the remote-flush contract through memslot swaps ---------------------
 *
 * A mutator repeatedly replaces the memory behind one gpa: delete the slot,
 * create it again over a new host buffer whose words all hold the epoch
 * number, publish the epoch, and make the previous buffer PROT_NONE.  A
 * vCPU access that starts after the epoch is published must see that epoch
 * or a later one; any use of a stale TLB entry or SPTE either reads an older
 * epoch (caught here) or touches a PROT_NONE buffer (SIGSEGV: the test dies).
 * Retired buffers are never unmapped, so no address is reused.
 */
#define SWAP_EPOCHS 150
#define SWAP_GPA (256 * MB)
#define SWAP_SIZE (2 * 4096)

struct swap {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[2];
	_Atomic uint64_t epoch;
	_Atomic bool stop;
	_Atomic unsigned int failures;
	char why[256];
	uint64_t reads[2], mmio[2];
	uint8_t *bufs[SWAP_EPOCHS + 1];
};

struct swap_arg {
	struct swap *s;
	int id;
};

static void *swap_reader(void *p)
{
	struct swap_arg *a = p;
	struct swap *s = a->s;
	uint64_t seed = 777 + (uint64_t)a->id;
	struct vmmu_exit x;

	while (!atomic_load_explicit(&s->stop, memory_order_acquire)) {
		uint64_t e0 = atomic_load_explicit(&s->epoch, memory_order_acquire);
		uint64_t off = (xorshift(&seed) % (SWAP_SIZE / 8)) * 8, v = 0;
		int rc = vmmu_vcpu_access(s->vcpu[a->id], SWAP_GPA + off, &v, 8, VMMU_ACCESS_READ, &x);

		if (rc == VMMU_EXIT && x.reason == VMMU_EXIT_MMIO) {
			/* Between delete and re-create the gpa is not RAM. */
			s->mmio[a->id]++;
			continue;
		}
		if (rc != 0 || v < e0) {
			if (atomic_fetch_add(&s->failures, 1) == 0)
				snprintf(s->why, sizeof(s->why),
					 "vCPU %d read epoch %llu after epoch %llu was published (rc %d)", a->id,
					 (unsigned long long)v, (unsigned long long)e0, rc);
			break;
		}
		s->reads[a->id]++;
	}
	return NULL;
}

static uint8_t *swap_buf(uint64_t epoch)
{
	uint8_t *b = mmap(NULL, SWAP_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (b == MAP_FAILED)
		return NULL;
	for (size_t i = 0; i < SWAP_SIZE; i += 8)
		memcpy(b + i, &epoch, 8);
	return b;
}

TEST(no_stale_translation_after_memslot_swap)
{
	for_each_mmu_variant(var) {
		struct vmmu_vm_config cfg;
		struct swap s;
		struct swap_arg args[2];
		pthread_t t[2];
		struct vmmu_memslot ms = { .slot = 0, .gpa = SWAP_GPA, .size = SWAP_SIZE };
		double end = now_s() + 1.0;
		uint64_t e;

		memset(&s, 0, sizeof(s));
		variant_config(var, &cfg);
		ASSERT_OK(vmmu_vm_create(&cfg, &s.vm));
		s.bufs[1] = swap_buf(1);
		ASSERT_TRUE(s.bufs[1] != NULL);
		ms.hva = s.bufs[1];
		ASSERT_OK(vmmu_set_memslot(s.vm, &ms));
		atomic_store(&s.epoch, 1);
		for (int i = 0; i < 2; i++) {
			ASSERT_OK(vmmu_vcpu_create(s.vm, (unsigned int)i, &s.vcpu[i]));
			args[i] = (struct swap_arg){ &s, i };
			pthread_create(&t[i], NULL, swap_reader, &args[i]);
		}
		for (e = 2; e <= SWAP_EPOCHS && !atomic_load(&s.failures) && (e < 20 || now_s() < end); e++) {
			s.bufs[e] = swap_buf(e);
			ASSERT_TRUE(s.bufs[e] != NULL);
			ms.size = 0;
			ASSERT_OK(vmmu_set_memslot(s.vm, &ms));
			/* Deleted: from here no vCPU may touch the old buffer. */
			mprotect(s.bufs[e - 1], SWAP_SIZE, PROT_NONE);
			ms.size = SWAP_SIZE;
			ms.hva = s.bufs[e];
			ASSERT_OK(vmmu_set_memslot(s.vm, &ms));
			atomic_store_explicit(&s.epoch, e, memory_order_release);
		}
		atomic_store_explicit(&s.stop, true, memory_order_release);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		if (atomic_load(&s.failures))
			test_fail(__FILE__, __LINE__, "%s", s.why);
		fprintf(stderr, "    [%s] %llu epochs, reads %llu+%llu, mmio exits %llu+%llu\n", var->name,
			(unsigned long long)e - 1, (unsigned long long)s.reads[0], (unsigned long long)s.reads[1],
			(unsigned long long)s.mmio[0], (unsigned long long)s.mmio[1]);
		ASSERT_FALSE(vmmu_vm_bugged(s.vm, NULL));
		ASSERT_AUDIT(s.vm);
		vmmu_vm_destroy(s.vm);
		for (uint64_t i = 1; i < e; i++)
			munmap(s.bufs[i], SWAP_SIZE);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
