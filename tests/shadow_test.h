/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_SHADOW_TEST_H
#define VMMU_TEST_SHADOW_TEST_H
/*
 * What the files of the test_shadow binary share: the guest-physical
 * layout, host-side access to guest memory, shadow VMs, and the fixture of
 * the deterministic tests with its EXPECT_* checks.
 *
 * Shadow paging, tested through the public API only, so that every test
 * that makes sense without shadow paging runs on the TDP variants too (the
 * guest-visible contract is the same; only the MMU behind it differs).
 */
#include "guest.h"
#include "harness.h"

#define KB (1ULL << 10)
#define MB (1ULL << 20)
#define GB (1ULL << 30)
#define PAGE 4096ULL

/* #PF error code bits (SDM 4.7). */
#define PF_P (1u << 0)
#define PF_W (1u << 1)
#define PF_U (1u << 2)
#define PF_RSVD (1u << 3)
#define PF_ID (1u << 4)

/*
 * Guest-physical layout of the model tests.  RAM is two slots, [0, 64M)
 * and [1G, 1G + 16M): small, because the shadow audit (after every step)
 * visits every gfn of every slot.
 *   16M..24M   page-table pools: engine t, address space a at
 *              POOL_BASE + t * ENG_POOL_SPAN + a * POOL_BYTES
 *   24M..      the pool of the shared page table (threads test)
 *   32M..48M   data slice S0 of engine t: [32M + 4M t, +4M)
 *   48M..      shared data pages (threads test), two versions per page
 *   1G..1G+16M data slice S1 of engine t: [1G + 4M t, +4M); the frame of
 *              1G guest pages is gpa 1G (RAM only at its start: the
 *              guest touches it there only)
 *   3G..4G     no memslot: MMIO
 */
#define RAM0_SIZE (64 * MB)
#define RAM1_SIZE (16 * MB)
#define POOL_BASE (16 * MB)
#define POOL_PAGES 128
#define POOL_BYTES (POOL_PAGES * PAGE)
#define MAX_AS 5
#define ENG_POOL_SPAN (MAX_AS * POOL_BYTES)
#define SHARED_POOL (24 * MB)
#define S0_BASE (32 * MB)
#define S1_BASE (1 * GB)
#define SLICE (4 * MB)
#define SD_BASE (48 * MB)
#define SD_PAGES 16
#define MMIO_BASE (3 * GB)
#define MMIO_SIZE (1 * GB)

extern const char *const mode_names[];	/* by enum guest_mode */

uint64_t host_rd64(vmmu_vm *vm, uint64_t gpa);
void host_wr64(vmmu_vm *vm, uint64_t gpa, uint64_t v);
bool shadow_supported(void);
vmmu_vm *shadow_vm(uint32_t prev_roots, uint64_t max_pages);
void add_ram(vmmu_vm *vm, uint32_t id, uint64_t gpa, uint64_t size, uint64_t host_page);
void del_slot(vmmu_vm *vm, uint32_t id);
void assert_not_bugged(vmmu_vm *vm);

/* ========================================================================== */
/* Deterministic tests: a small fixture                                        */
/* ========================================================================== */

struct fix {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
};

void fix_create(struct fix *f, vmmu_vm *vm);
void fix_variant(struct fix *f, const struct mmu_variant *var);
void fix_destroy(struct fix *f);
struct guest_pt *fix_pt(struct fix *f, enum guest_mode mode, uint64_t pool, uint64_t pool_size);
/* acc: VMMU_ACCESS_*; returns the vmmu_vcpu_access result, fills *x. */
int acc(struct fix *f, uint64_t gva, uint64_t *v, unsigned int type, struct vmmu_exit *x);
void vstats(struct fix *f, struct vmmu_vcpu_stats *s);

#define EXPECT_READ(f, gva, want)                                                                            \
	do {                                                                                                 \
		struct vmmu_exit x_;                                                                         \
		uint64_t v_ = 0;                                                                             \
		int r_ = acc((f), (gva), &v_, VMMU_ACCESS_READ, &x_);                                        \
		if (r_ || v_ != (uint64_t)(want))                                                            \
			test_fail(__FILE__, __LINE__, "read of gva %#llx: r=%d exit %s ec %#x value %#llx, want %#llx", \
				  (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-",  \
				  x_.u.guest_fault.error_code, (unsigned long long)v_, (unsigned long long)(want)); \
	} while (0)

#define EXPECT_WRITE(f, gva, val)                                                                     \
	do {                                                                                          \
		struct vmmu_exit x_;                                                                  \
		uint64_t v_ = (val);                                                                  \
		int r_ = acc((f), (gva), &v_, VMMU_ACCESS_WRITE, &x_);                                \
		if (r_)                                                                               \
			test_fail(__FILE__, __LINE__, "write of gva %#llx: r=%d exit %s ec %#x",       \
				  (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-", \
				  x_.u.guest_fault.error_code);                                       \
	} while (0)

#define EXPECT_PF(f, gva, type, ec)                                                                          \
	do {                                                                                                 \
		struct vmmu_exit x_;                                                                         \
		uint64_t v_ = 0;                                                                             \
		int r_ = acc((f), (gva), &v_, (type), &x_);                                                  \
		if (r_ != VMMU_EXIT || x_.reason != VMMU_EXIT_GUEST_FAULT || x_.u.guest_fault.vector != 14 ||  \
		    x_.u.guest_fault.error_code != (ec))                                                     \
			test_fail(__FILE__, __LINE__, "access %u of gva %#llx: r=%d exit %s ec %#x, want #PF %#x", \
				  (type), (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-", \
				  x_.u.guest_fault.error_code, (unsigned int)(ec));                     \
	} while (0)

#define EXPECT_MMIO(f, gva, type, want_gpa)                                                                        \
	do {                                                                                                  \
		struct vmmu_exit x_;                                                                          \
		uint64_t v_ = 0x77;                                                                           \
		int r_ = acc((f), (gva), &v_, (type), &x_);                                                   \
		if (r_ != VMMU_EXIT || x_.reason != VMMU_EXIT_MMIO || x_.u.mmio.gpa != (uint64_t)(want_gpa) ||     \
		    !!x_.u.mmio.is_write != ((type) == VMMU_ACCESS_WRITE))                                    \
			test_fail(__FILE__, __LINE__, "access %u of gva %#llx: r=%d exit %s gpa %#llx, want MMIO at %#llx", \
				  (type), (unsigned long long)(gva), r_, r_ == VMMU_EXIT ? exit_name(x_.reason) : "-", \
				  (unsigned long long)x_.u.mmio.gpa, (unsigned long long)(want_gpa));        \
	} while (0)

#endif /* VMMU_TEST_SHADOW_TEST_H */
