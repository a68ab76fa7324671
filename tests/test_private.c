/* SPDX-License-Identifier: MIT */
/*
 * Private memory (seed 001; docs/mmu.md 13) over the TDP variants (EPT/NPT,
 * 4/5 levels, A/D on/off): aliases and attributes, the memory-fault
 * protocol, private backing, conversions (zeroed round trips, splits of
 * private huge pages), what zap-all, notifiers and logging may not touch,
 * fault injection into every external op, the security module's rules,
 * racing conversions, and an isolation fuzz with an audit after every step.
 * Every test ends with the module's violation count asserted 0 (the audit
 * reports it too).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "harness.h"
#include "cpu/secure_ept.h"
#include "mmu/spte.h"

#define MB (1ULL << 20)
#define PRIV VMMU_MEMORY_ATTRIBUTE_PRIVATE

struct penv {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[4];
	unsigned int nr;
	uint8_t *shared;	/* slot 0's shared memory */
	uint64_t smask;		/* the shared bit */
	uint64_t size;
};

static void private_config(const struct mmu_variant *var, struct vmmu_vm_config *cfg)
{
	variant_config(var, cfg);
	cfg->flags |= VMMU_VM_PRIVATE;
	cfg->maxphyaddr = var->tdp_levels == 5 ? 52 : 48;
}

static void penv_create(struct penv *e, const struct mmu_variant *var, uint64_t size, uint64_t host_page,
			unsigned int nr_vcpus)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = size, .host_page_size = host_page,
				  .flags = VMMU_MEM_PRIVATE };
	void *p;

	memset(e, 0, sizeof(*e));
	private_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &e->vm));
	ASSERT_OK(vmmu_set_memslot(e->vm, &s));
	ASSERT_OK(vmmu_memslot_hva(e->vm, 0, &p));
	e->shared = p;
	e->size = size;
	e->smask = 1ULL << (var->tdp_levels == 5 ? 51 : 47);
	e->nr = nr_vcpus;
	for (unsigned int i = 0; i < nr_vcpus; i++)
		ASSERT_OK(vmmu_vcpu_create(e->vm, i, &e->vcpu[i]));
}

static struct vmmu_vm_stats pstats(struct penv *e)
{
	struct vmmu_vm_stats st;

	vmmu_vm_get_stats(e->vm, &st);
	return st;
}

static void penv_destroy(struct penv *e)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(e->vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
	ASSERT_AUDIT(e->vm);
	ASSERT_EQ(pstats(e).secure_violations, 0);
	vmmu_vm_destroy(e->vm);
}

static int pacc(struct penv *e, unsigned int vc, uint64_t gpa, bool shared, void *buf, size_t len, unsigned int type,
		struct vmmu_exit *x)
{
	return vmmu_vcpu_access(e->vcpu[vc], gpa | (shared ? e->smask : 0), buf, len, type | VMMU_ACCESS_PHYS, x);
}

static uint64_t prd(struct penv *e, uint64_t gpa, bool shared)
{
	struct vmmu_exit x;
	uint64_t v = 0;
	int r = pacc(e, 0, gpa, shared, &v, 8, VMMU_ACCESS_READ, &x);

	if (r)
		test_fail(__FILE__, __LINE__, "read %s gpa %#llx: %d exit %s error %d", shared ? "shared" : "private",
			  (unsigned long long)gpa, r, exit_name(x.reason), x.u.memory_fault.error);
	return v;
}

static void pwr(struct penv *e, uint64_t gpa, bool shared, uint64_t v)
{
	struct vmmu_exit x;
	int r = pacc(e, 0, gpa, shared, &v, 8, VMMU_ACCESS_WRITE, &x);

	if (r)
		test_fail(__FILE__, __LINE__, "write %s gpa %#llx: %d exit %s error %d", shared ? "shared" : "private",
			  (unsigned long long)gpa, r, exit_name(x.reason), x.u.memory_fault.error);
}

/* The access must stop with the memory-fault exit of the alias protocol. */
static void expect_alias_exit(struct penv *e, uint64_t gpa, bool shared, int error)
{
	struct vmmu_exit x;
	uint64_t v = 0;

	memset(&x, 0xcc, sizeof(x));
	ASSERT_EQ(pacc(e, 0, gpa, shared, &v, 8, VMMU_ACCESS_READ, &x), VMMU_EXIT);
	ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
	ASSERT_EQ_U64(x.u.memory_fault.gpa, gpa & ~0xfffULL);
	ASSERT_EQ(x.u.memory_fault.is_private, !shared);
	ASSERT_EQ(x.u.memory_fault.error, error);
}

static uint64_t ptoken(uint64_t gpa, bool shared)
{
	return (shared ? 0x5000000000000000ULL : 0xa000000000000000ULL) | (gpa << 4) | 0x7;
}

TEST(private_config_bad_input)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm;

	vmmu_vm_config_init(&cfg);
	cfg.flags = VMMU_VM_PRIVATE;
	cfg.mmu = VMMU_MMU_SHADOW;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_ENOTSUP);
	/* The derived bit 47 needs MAXPHYADDR 48. */
	vmmu_vm_config_init(&cfg);
	cfg.flags = VMMU_VM_PRIVATE;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.shared_bit = 31;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	cfg.shared_bit = 46;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	/* A shared bit without a private VM. */
	cfg.flags = 0;
	cfg.shared_bit = 40;
	ASSERT_ERR(vmmu_vm_create(&cfg, &vm), VMMU_EINVAL);
	/* Given and valid: memslots and attributes stay below it. */
	cfg.flags = VMMU_VM_PRIVATE;
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	{
		struct vmmu_memslot s = { .slot = 0, .gpa = (1ULL << 40) - 4096, .size = 8192,
					  .flags = VMMU_MEM_PRIVATE };

		ASSERT_ERR(vmmu_set_memslot(vm, &s), VMMU_ERANGE);
		ASSERT_ERR(vmmu_set_memory_attributes(vm, (1ULL << 40) - 4096, 8192, PRIV), VMMU_ERANGE);
	}
	vmmu_vm_destroy(vm);
}

TEST(private_attributes_bad_input_change_nothing)
{
	for_each_tdp_variant(var) {
		struct penv e;
		uint64_t a, before;

		penv_create(&e, var, 4 * MB, 0, 1);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 64 * 4096, PRIV));
		before = pstats(&e).attribute_changes;
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, 100, 4096, 0), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, 0, 4097, 0), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, 0, 0, 0), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, ~0xfffULL, 0x2000, 0), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, 0, 4096, 1), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, 0, 4096, PRIV | (1ULL << 4)), VMMU_EINVAL);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, e.smask, 4096, 0), VMMU_ERANGE);
		ASSERT_ERR(vmmu_set_memory_attributes(e.vm, e.smask - 4096, 8192, 0), VMMU_ERANGE);
		ASSERT_ERR(vmmu_set_memory_attributes(NULL, 0, 4096, 0), VMMU_EINVAL);
		ASSERT_EQ(pstats(&e).attribute_changes, before);
		for (uint64_t p = 0; p < 128; p++) {
			ASSERT_OK(vmmu_get_memory_attributes(e.vm, p << 12, &a));
			ASSERT_EQ_U64(a, p < 64 ? PRIV : 0);
		}
		/* The same again is no change. */
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 64 * 4096, PRIV));
		ASSERT_EQ(pstats(&e).attribute_changes, before);
		ASSERT_AUDIT(e.vm);
		penv_destroy(&e);
	}
	{
		struct vmmu_vm_config cfg;
		vmmu_vm *vm;
		uint64_t a;

		vmmu_vm_config_init(&cfg);
		ASSERT_OK(vmmu_vm_create(&cfg, &vm));
		ASSERT_ERR(vmmu_set_memory_attributes(vm, 0, 4096, PRIV), VMMU_ENOTSUP);
		ASSERT_ERR(vmmu_get_memory_attributes(vm, 0, &a), VMMU_ENOTSUP);
		vmmu_vm_destroy(vm);
	}
}

TEST(private_memslot_rules)
{
	for_each_tdp_variant(var) {
		struct penv e;
		struct vmmu_memslot s = { .slot = 1, .gpa = 64 * MB, .size = MB, .flags = VMMU_MEM_PRIVATE };
		struct vmmu_vm_config cfg;
		vmmu_vm *plain;

		penv_create(&e, var, 4 * MB, 0, 1);
		s.flags = VMMU_MEM_PRIVATE | VMMU_MEM_READONLY;
		ASSERT_ERR(vmmu_set_memslot(e.vm, &s), VMMU_EINVAL);
		s.flags = VMMU_MEM_PRIVATE | VMMU_MEM_LOG_DIRTY_PAGES;
		ASSERT_ERR(vmmu_set_memslot(e.vm, &s), VMMU_ENOTSUP);
		s.flags = VMMU_MEM_PRIVATE;
		s.gpa = e.smask - MB / 2;
		ASSERT_ERR(vmmu_set_memslot(e.vm, &s), VMMU_ERANGE);
		s.gpa = 64 * MB;
		ASSERT_OK(vmmu_set_memslot(e.vm, &s));
		s.flags = VMMU_MEM_PRIVATE | VMMU_MEM_LOG_DIRTY_PAGES;
		ASSERT_ERR(vmmu_set_memslot(e.vm, &s), VMMU_ENOTSUP);
		s.flags = 0;
		ASSERT_ERR(vmmu_set_memslot(e.vm, &s), VMMU_EINVAL);
		s.flags = VMMU_MEM_PRIVATE;
		s.gpa = 128 * MB;
		ASSERT_ERR(vmmu_set_memslot(e.vm, &s), VMMU_EINVAL);
		/* A shared-only slot of a private VM may log. */
		{
			struct vmmu_memslot t = { .slot = 2, .gpa = 256 * MB, .size = MB,
						  .flags = VMMU_MEM_LOG_DIRTY_PAGES };

			ASSERT_OK(vmmu_set_memslot(e.vm, &t));
		}
		ASSERT_AUDIT(e.vm);
		penv_destroy(&e);

		variant_config(var, &cfg);
		ASSERT_OK(vmmu_vm_create(&cfg, &plain));
		s.gpa = 64 * MB;
		ASSERT_ERR(vmmu_set_memslot(plain, &s), VMMU_EINVAL);
		vmmu_vm_destroy(plain);
	}
}

TEST(private_aliases_are_isolated)
{
	for_each_tdp_variant(var) {
		struct penv e;
		void *hva, *hva_s;

		penv_create(&e, var, 4 * MB, 0, 1);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 64 * 4096, PRIV));
		for (uint64_t p = 0; p < 128; p++) {
			bool shared = p >= 64;

			pwr(&e, p << 12, shared, ptoken(p << 12, shared));
		}
		for (uint64_t p = 0; p < 128; p++) {
			bool shared = p >= 64;

			ASSERT_EQ_U64(prd(&e, p << 12, shared), ptoken(p << 12, shared));
			/* The other alias: the protocol's exit, nothing read. */
			expect_alias_exit(&e, (p << 12) + 8, !shared, VMMU_EAGAIN);
		}
		/* No private byte is reachable through the slot's memory. */
		for (uint64_t off = 0; off < 4 * MB; off += 8) {
			uint64_t v;

			memcpy(&v, e.shared + off, 8);
			ASSERT_FALSE((v >> 60) == 0xa);
		}
		for (uint64_t p = 64; p < 128; p++) {
			uint64_t v;

			memcpy(&v, e.shared + (p << 12), 8);
			ASSERT_EQ_U64(v, ptoken(p << 12, true));
		}
		/* Either alias's hva is the shared memory. */
		ASSERT_OK(vmmu_gpa_to_hva(e.vm, 5 << 12, &hva));
		ASSERT_OK(vmmu_gpa_to_hva(e.vm, (5 << 12) | e.smask, &hva_s));
		ASSERT_TRUE(hva == hva_s && hva == e.shared + (5 << 12));
		/* A private access with no private backing is a memory fault. */
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 64 * MB, 4096, PRIV));
		expect_alias_exit(&e, 64 * MB, false, VMMU_EFAULT);
		ASSERT_EQ(pstats(&e).private_pages_4k, 64);
		ASSERT_EQ(pstats(&e).secure_pages_4k, 64);
		penv_destroy(&e);
	}
}

TEST(private_round_trip_reads_zero)
{
	for_each_tdp_variant(var) {
		struct penv e;

		penv_create(&e, var, 2 * MB, 0, 1);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 16 * 4096, PRIV));
		for (uint64_t p = 0; p < 16; p++)
			pwr(&e, p << 12, false, ptoken(p << 12, false));
		/* The TLB holds the private translations now; the conversion
		 * must leave no way to them through either alias. */
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 4 * 4096, 8 * 4096, 0));
		ASSERT_AUDIT(e.vm);
		for (uint64_t p = 4; p < 12; p++) {
			memcpy(e.shared + (p << 12), &(uint64_t){ ptoken(p << 12, true) }, 8);
			ASSERT_EQ_U64(prd(&e, p << 12, true), ptoken(p << 12, true));
			expect_alias_exit(&e, p << 12, false, VMMU_EAGAIN);
		}
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 4 * 4096, 8 * 4096, PRIV));
		ASSERT_AUDIT(e.vm);
		for (uint64_t p = 0; p < 16; p++) {
			uint64_t v, want = p >= 4 && p < 12 ? 0 : ptoken(p << 12, false);

			/* TDX: removed and added again, the page reads as zeroes. */
			ASSERT_EQ_U64(prd(&e, p << 12, false), want);
			if (p >= 4 && p < 12) {
				expect_alias_exit(&e, p << 12, true, VMMU_EAGAIN);
				/* Shared memory is the embedder's: untouched. */
				memcpy(&v, e.shared + (p << 12), 8);
				ASSERT_EQ_U64(v, ptoken(p << 12, true));
			}
		}
		penv_destroy(&e);
	}
}

TEST(private_huge_split_on_partial_conversion)
{
	for_each_tdp_variant(var) {
		struct penv e;
		struct vmmu_vm_stats st;

		if (var->flags & VMMU_VM_NO_HUGEPAGES)
			continue;
		penv_create(&e, var, 4 * MB, 2 * MB, 1);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
		for (uint64_t p = 0; p < 1024; p++)
			pwr(&e, p << 12, false, ptoken(p << 12, false));
		st = pstats(&e);
		ASSERT_EQ(st.private_pages_2m, 2);
		ASSERT_EQ(st.secure_pages_2m, 2);
		ASSERT_EQ(st.private_pages_4k, 0);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 100 << 12, 4096, 0));
		ASSERT_AUDIT(e.vm);
		st = pstats(&e);
		ASSERT_EQ(st.private_splits, 1);
		ASSERT_EQ(st.private_pages_2m, 1);
		ASSERT_EQ(st.private_pages_4k, 511);
		ASSERT_EQ(st.secure_pages_4k, 511);
		for (uint64_t p = 0; p < 1024; p++) {
			if (p == 100) {
				expect_alias_exit(&e, p << 12, false, VMMU_EAGAIN);
				continue;
			}
			ASSERT_EQ_U64(prd(&e, p << 12, false), ptoken(p << 12, false));
		}
		/* Back to private: a 4K page under the table that stays. */
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 100 << 12, 4096, PRIV));
		ASSERT_EQ_U64(prd(&e, 100 << 12, false), 0);
		ASSERT_EQ(pstats(&e).private_pages_4k, 512);
		/* A shared 2M mapping needs the whole 2M shared. */
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 2 * MB, 2 * MB, 0));
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 3 * MB, 4096, PRIV));
		(void)prd(&e, 2 * MB, true);
		ASSERT_EQ(pstats(&e).pages_2m, 0);
		ASSERT_AUDIT(e.vm);
		penv_destroy(&e);
	}
}

TEST(private_untouched_by_zap_all_notifier_and_logging)
{
	for_each_tdp_variant(var) {
		struct penv e;
		struct vmmu_vm_stats st;
		uint64_t young;

		penv_create(&e, var, 4 * MB, 0, 1);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 32 * 4096, PRIV));
		for (uint64_t p = 0; p < 64; p++)
			pwr(&e, p << 12, p >= 32, ptoken(p << 12, p >= 32));
		vmmu_zap_all(e.vm);
		st = pstats(&e);
		ASSERT_EQ(st.private_pages_4k, 32);
		ASSERT_EQ(st.pages_4k, 0);
		ASSERT_AUDIT(e.vm);
		vmmu_invalidate_range_begin(e.vm, (uintptr_t)e.shared, (uintptr_t)e.shared + 4 * MB);
		vmmu_invalidate_range_end(e.vm, (uintptr_t)e.shared, (uintptr_t)e.shared + 4 * MB);
		ASSERT_OK(vmmu_zap_gfn_range(e.vm, 0, 1024));
		ASSERT_EQ(pstats(&e).private_pages_4k, 32);
		for (uint64_t p = 0; p < 64; p++)
			ASSERT_EQ_U64(prd(&e, p << 12, p >= 32), ptoken(p << 12, p >= 32));
		/* Aging counts shared pages only: private A bits are not harvested. */
		ASSERT_OK(vmmu_age_gfn_range(e.vm, 0, 1024, 1, &young));
		ASSERT_EQ(young, 32);
		ASSERT_AUDIT(e.vm);
		/* Deleting the slot is what removes private pages. */
		{
			struct vmmu_memslot s = { .slot = 0, .size = 0 };

			ASSERT_OK(vmmu_set_memslot(e.vm, &s));
		}
		st = pstats(&e);
		ASSERT_EQ(st.private_pages_4k, 0);
		ASSERT_EQ(st.secure_pages_4k, 0);
		expect_alias_exit(&e, 0, false, VMMU_EFAULT);
		penv_destroy(&e);
	}
}

/* ---- fault injection: an interposed ops table that fails its Nth call ---- */

enum { OP_LINK, OP_SET, OP_SPLIT, OP_REMOVE, OP_FREE, OP_NR };

struct inject {
	struct vmmu_external_ops next;
	void *next_ctx;
	int fail_op;
	unsigned int fail_at;	/* 1-based call of fail_op that fails */
	_Atomic unsigned int calls[OP_NR];
	_Atomic unsigned int failed;
};

static bool inject_now(struct inject *in, int op)
{
	unsigned int n = atomic_fetch_add(&in->calls[op], 1) + 1;

	if (op == in->fail_op && n == in->fail_at) {
		atomic_fetch_add(&in->failed, 1);
		return true;
	}
	return false;
}

#define INJECT_ERR VMMU_ENOMEM

static int inj_link(void *ctx, uint64_t gfn, int level)
{
	struct inject *in = ctx;

	return inject_now(in, OP_LINK) ? INJECT_ERR : in->next.link_external_spt(in->next_ctx, gfn, level);
}

static int inj_set(void *ctx, uint64_t gfn, int level, uint64_t spte)
{
	struct inject *in = ctx;

	return inject_now(in, OP_SET) ? INJECT_ERR : in->next.set_external_spte(in->next_ctx, gfn, level, spte);
}

static int inj_split(void *ctx, uint64_t gfn, int level)
{
	struct inject *in = ctx;

	return inject_now(in, OP_SPLIT) ? INJECT_ERR : in->next.split_external_spt(in->next_ctx, gfn, level);
}

static int inj_remove(void *ctx, uint64_t gfn, int level, uint64_t spte)
{
	struct inject *in = ctx;

	return inject_now(in, OP_REMOVE) ? INJECT_ERR : in->next.remove_external_spte(in->next_ctx, gfn, level, spte);
}

static int inj_free(void *ctx, uint64_t gfn, int level)
{
	struct inject *in = ctx;

	return inject_now(in, OP_FREE) ? INJECT_ERR : in->next.free_external_spt(in->next_ctx, gfn, level);
}

static const struct vmmu_external_ops inj_ops = { inj_link, inj_set, inj_split, inj_remove, inj_free };

/* A private VM with the injector in front of the module, before any vCPU. */
static void penv_create_injected(struct penv *e, const struct mmu_variant *var, struct inject *in, int op,
				 unsigned int at)
{
	struct vmmu_vm_config cfg;
	struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 4 * MB, .host_page_size = 2 * MB,
				  .flags = VMMU_MEM_PRIVATE };
	void *p;

	memset(e, 0, sizeof(*e));
	memset(in, 0, sizeof(*in));
	in->fail_op = op;
	in->fail_at = at;
	private_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &e->vm));
	ASSERT_OK(vmmu_get_external_ops(e->vm, &in->next, &in->next_ctx));
	ASSERT_OK(vmmu_set_external_ops(e->vm, &inj_ops, in));
	ASSERT_OK(vmmu_set_memslot(e->vm, &s));
	ASSERT_OK(vmmu_memslot_hva(e->vm, 0, &p));
	e->shared = p;
	e->size = s.size;
	e->smask = 1ULL << (var->tdp_levels == 5 ? 51 : 47);
	e->nr = 1;
	ASSERT_OK(vmmu_vcpu_create(e->vm, 0, &e->vcpu[0]));
	ASSERT_ERR(vmmu_set_external_ops(e->vm, NULL, NULL), VMMU_EBUSY);
}

TEST(private_fault_injection_each_op)
{
	for_each_tdp_variant(var) {
		for (unsigned int at = 1; at <= 3; at++) {
			struct penv e;
			struct inject in;
			struct vmmu_exit x;
			struct vmmu_vm_stats st;
			uint64_t v = 0, a;

			/* link: the Nth table of the first private fault. */
			penv_create_injected(&e, var, &in, OP_LINK, at);
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
			if (at <= (unsigned int)var->tdp_levels - 2) {
				ASSERT_EQ(pacc(&e, 0, 0, false, &v, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
				ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
				ASSERT_EQ(x.u.memory_fault.error, INJECT_ERR);
				ASSERT_EQ(x.u.memory_fault.is_private, 1);
				ASSERT_EQ(in.failed, 1);
				ASSERT_AUDIT(e.vm);
				ASSERT_EQ(pstats(&e).private_pages_2m, 0);
			}
			pwr(&e, 0, false, 42);
			ASSERT_EQ_U64(prd(&e, 0, false), 42);
			penv_destroy(&e);

			/* set: the Nth leaf. */
			penv_create_injected(&e, var, &in, OP_SET, at);
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 2 * MB + 4096, 4096, 0));
			/* 2M at 0, then 4K pages at 2M, 2M+8K, ... */
			for (unsigned int i = 1; i < at; i++)
				pwr(&e, i == 1 ? 0 : 2 * MB + (uint64_t)(i - 2) * 8192, false, i);
			st = pstats(&e);
			{
				uint64_t gpa = at == 1 ? 0 : 2 * MB + (uint64_t)(at - 2) * 8192;

				ASSERT_EQ(pacc(&e, 0, gpa, false, &v, 8, VMMU_ACCESS_WRITE, &x), VMMU_EXIT);
				ASSERT_EQ(x.u.memory_fault.error, INJECT_ERR);
				ASSERT_EQ(pstats(&e).private_pages_2m, st.private_pages_2m);
				ASSERT_EQ(pstats(&e).private_pages_4k, st.private_pages_4k);
				ASSERT_AUDIT(e.vm);
				pwr(&e, gpa, false, 7);
				ASSERT_EQ_U64(prd(&e, gpa, false), 7);
			}
			penv_destroy(&e);

			/* split: a conversion of one 4K page inside a private 2M page. */
			penv_create_injected(&e, var, &in, OP_SPLIT, at);
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
			for (uint64_t p = 0; p < 1024; p += 64)
				pwr(&e, p << 12, false, ptoken(p << 12, false));
			for (unsigned int i = 1; i < at; i++)
				ASSERT_OK(vmmu_set_memory_attributes(e.vm, (uint64_t)(i * 512 - 256) << 12, 4096, 0));
			if (at <= 2) {
				st = pstats(&e);
				ASSERT_ERR(vmmu_set_memory_attributes(e.vm, (uint64_t)(at * 512 - 256) << 12, 4096, 0),
					   INJECT_ERR);
				ASSERT_OK(vmmu_get_memory_attributes(e.vm, (uint64_t)(at * 512 - 256) << 12, &a));
				ASSERT_EQ_U64(a, PRIV);
				ASSERT_EQ(pstats(&e).private_pages_2m, st.private_pages_2m);
				ASSERT_EQ(pstats(&e).attribute_changes, st.attribute_changes);
				for (uint64_t p = 0; p < 1024; p += 64)
					if (p % 512 != 256 || p / 512 >= at - 1)
						ASSERT_EQ_U64(prd(&e, p << 12, false), ptoken(p << 12, false));
			}
			ASSERT_AUDIT(e.vm);
			penv_destroy(&e);

			/* remove: the Nth page of an 8-page conversion fails. */
			/* (the first removal is page 8's, below) */
			penv_create_injected(&e, var, &in, OP_REMOVE, at + 1);
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 2 * MB, 2 * MB, 0));
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 2 * MB, 2 * MB, PRIV));
			ASSERT_EQ(in.calls[OP_REMOVE], 0);	/* nothing was mapped there */
			for (uint64_t p = 0; p < 8; p++)
				pwr(&e, p << 12, false, ptoken(p << 12, false));
			/* Demote the 2M page, so the conversion removes 511 leaves. */
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 8 << 12, 4096, 0));
			ASSERT_ERR(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, 0), INJECT_ERR);
			ASSERT_AUDIT(e.vm);
			for (uint64_t p = 0; p < 8; p++) {
				ASSERT_OK(vmmu_get_memory_attributes(e.vm, p << 12, &a));
				ASSERT_EQ_U64(a, PRIV);
				ASSERT_EQ_U64(prd(&e, p << 12, false), ptoken(p << 12, false));
			}
			ASSERT_AUDIT(e.vm);
			penv_destroy(&e);

			/* free: at teardown; the module reclaims what was refused. */
			penv_create_injected(&e, var, &in, OP_FREE, at);
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
			pwr(&e, 0, false, 1);
			pwr(&e, 3 * MB, false, 1);
			ASSERT_AUDIT(e.vm);
			ASSERT_EQ(pstats(&e).secure_violations, 0);
			vmmu_vm_destroy(e.vm);
			ASSERT_EQ(in.failed, at <= in.calls[OP_FREE] ? 1 : 0);
		}
	}
}

/*
 * An interposer that answers 0 without forwarding a removal: the mirror
 * loses the leaf, the private table keeps it.  The audit must say so (the
 * claim vmmu.h makes about such embedder ops), and the VM must still be
 * destroyed cleanly (the module reclaims the page).
 */
static int swallow_remove(void *ctx, uint64_t gfn, int level, uint64_t spte)
{
	(void)ctx;
	(void)gfn;
	(void)level;
	(void)spte;
	return 0;
}

TEST(private_unforwarded_op_caught_by_audit)
{
	for_each_tdp_variant(var) {
		struct penv e;
		char why[256];

		memset(&e, 0, sizeof(e));
		e.smask = 1ULL << (var->tdp_levels == 5 ? 51 : 47);
		{
			struct vmmu_vm_config cfg;
			struct vmmu_external_ops ops;
			void *ctx;
			struct vmmu_memslot s = { .slot = 0, .gpa = 0, .size = 4 * MB, .flags = VMMU_MEM_PRIVATE };
			void *p;

			private_config(var, &cfg);
			ASSERT_OK(vmmu_vm_create(&cfg, &e.vm));
			ASSERT_OK(vmmu_get_external_ops(e.vm, &ops, &ctx));
			ops.remove_external_spte = swallow_remove;
			ASSERT_OK(vmmu_set_external_ops(e.vm, &ops, ctx));
			ops.free_external_spt = NULL;
			ASSERT_ERR(vmmu_set_external_ops(e.vm, &ops, ctx), VMMU_EINVAL);
			ASSERT_OK(vmmu_set_memslot(e.vm, &s));
			ASSERT_OK(vmmu_memslot_hva(e.vm, 0, &p));
			ASSERT_OK(vmmu_vcpu_create(e.vm, 0, &e.vcpu[0]));
		}
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
		pwr(&e, 0, false, 1);
		ASSERT_AUDIT(e.vm);
		ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4096, 0));
		ASSERT_ERR(vmmu_audit(e.vm, why, sizeof(why)), VMMU_EIO);
		ASSERT_TRUE(strstr(why, "secure table") != NULL);
		vmmu_vm_destroy(e.vm);
	}
}

/* ---- the module's rules, on a module of its own ---------------------------- */

TEST(private_module_rules)
{
	struct spte_fmt f;
	struct secure_ept *s;
	struct secure_ept_stats st;
	uint8_t *mem = mmap(NULL, 8 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t base = (((uintptr_t)mem + 2 * MB - 1) & ~(2 * MB - 1)) >> 12;
	uint64_t leaf4k, total = 0;
	unsigned int want[SEPT_V_NR] = { 0 };

#define RULE(call, kind)                               \
	do {                                           \
		ASSERT_ERR(call, VMMU_EPERM);          \
		want[kind]++;                          \
		total++;                               \
		sept_get_stats(s, &st);                \
		for (int k_ = 0; k_ < SEPT_V_NR; k_++) \
			ASSERT_EQ(st.by_kind[k_], want[k_]); \
	} while (0)

	ASSERT_TRUE(mem != MAP_FAILED);
	spte_fmt_init(&f, true, true);
	leaf4k = make_leaf_spte(&f, base, PG_LEVEL_4K, ACC_ALL, true, false);
	s = sept_create(&f, 4, 64 * MB);
	ASSERT_TRUE(s != NULL);
	RULE(sept_aug(s, 0, PG_LEVEL_4K, leaf4k), SEPT_V_NO_PARENT);
	ASSERT_OK(sept_link(s, 0, 4));
	ASSERT_OK(sept_link(s, 0, 3));
	RULE(sept_link(s, 0, 3), SEPT_V_DOUBLE_MAP);
	ASSERT_OK(sept_link(s, 0, 2));
	ASSERT_OK(sept_aug(s, 0, PG_LEVEL_4K, leaf4k));
	RULE(sept_aug(s, 0, PG_LEVEL_4K, leaf4k), SEPT_V_DOUBLE_MAP);
	RULE(sept_aug(s, 0, PG_LEVEL_4K, leaf4k & ~f.writable & ~f.mmu_writable), SEPT_V_WRPROT);
	RULE(sept_aug(s, 0, PG_LEVEL_4K, leaf4k & ~f.accessed), SEPT_V_AD);
	RULE(sept_aug(s, 1, PG_LEVEL_4K, leaf4k), SEPT_V_PAGE_ALIASED);
	RULE(sept_aug(s, 1, PG_LEVEL_4K, (leaf4k + 4096) & ~f.writable & ~f.mmu_writable), SEPT_V_NOT_RWX);
	RULE(sept_aug(s, 1, PG_LEVEL_4K, (leaf4k + 4096) & ~EPT_X), SEPT_V_NOT_RWX);
	RULE(sept_aug(s, 0, 3, leaf4k | f.huge), SEPT_V_LEVEL);
	RULE(sept_remove(s, 0, PG_LEVEL_4K), SEPT_V_NOT_BLOCKED);
	ASSERT_OK(sept_block(s, 0, PG_LEVEL_4K));
	RULE(sept_remove(s, 0, PG_LEVEL_4K), SEPT_V_NOT_TRACKED);
	sept_track(s);
	ASSERT_OK(sept_remove(s, 0, PG_LEVEL_4K));
	RULE(sept_remove(s, 0, PG_LEVEL_4K), SEPT_V_NOT_MAPPED);
	/* A 2M page: mapped whole, split only by demotion after block + track. */
	{
		uint64_t huge = make_leaf_spte(&f, base + 512, PG_LEVEL_2M, ACC_ALL, true, false);

		ASSERT_OK(sept_aug(s, 512, PG_LEVEL_2M, huge));
		RULE(sept_aug(s, 513, PG_LEVEL_4K, leaf4k + 4096 * 600), SEPT_V_DEMOTE);
		RULE(sept_link(s, 512, 2), SEPT_V_DEMOTE);
		RULE(sept_aug(s, 1024, PG_LEVEL_2M, huge), SEPT_V_PAGE_ALIASED);
		RULE(sept_demote(s, 512, PG_LEVEL_2M), SEPT_V_NOT_BLOCKED);
		ASSERT_OK(sept_block(s, 512, PG_LEVEL_2M));
		RULE(sept_demote(s, 512, PG_LEVEL_2M), SEPT_V_NOT_TRACKED);
		sept_track(s);
		ASSERT_OK(sept_demote(s, 512, PG_LEVEL_2M));
		sept_get_stats(s, &st);
		ASSERT_EQ(st.leaves[PG_LEVEL_4K], 512);
		ASSERT_EQ(st.leaves[PG_LEVEL_2M], 0);
		/* The 4K pages of the demoted page are still taken. */
		RULE(sept_aug(s, 5, PG_LEVEL_4K, leaf4k + 4096 * 513), SEPT_V_PAGE_ALIASED);
		RULE(sept_free_table(s, 512, 2), SEPT_V_TABLE_BUSY);
	}
	sept_get_stats(s, &st);
	ASSERT_EQ(st.violations, total);
	sept_destroy(s);
	munmap(mem, 8 * MB);
#undef RULE
}

/* ---- racing conversions ------------------------------------------------------- */

#define RACE_PAGES 1024		/* 4 MiB: two private 2M pages to split */

struct race {
	struct penv *e;
	struct failbox fb;
	_Atomic bool stop;
	_Atomic uint64_t accesses, flips;
};

struct race_worker {
	struct race *r;
	unsigned int idx;
	pthread_t t;
};

/* Token of a value the guest wrote: alias, gfn, writer. */
static uint64_t rtoken(uint64_t gfn, bool shared, unsigned int w, uint64_t n)
{
	return (shared ? 0x5ULL << 60 : 0xaULL << 60) | (gfn << 24) | ((uint64_t)w << 20) | (n & 0xfffff);
}

static bool rtoken_ok(uint64_t v, uint64_t gfn, bool shared)
{
	/* Private pages may read 0 (never written, or converted back). */
	if (v == 0)
		return !shared;
	return (v >> 60) == (shared ? 0x5ULL : 0xaULL) && ((v >> 24) & ((1ULL << 36) - 1)) == gfn;
}

static void *race_vcpu(void *arg)
{
	struct race_worker *w = arg;
	struct race *r = w->r;
	struct penv *e = r->e;
	uint64_t seed = 0x9e3779b97f4a7c15ULL * (w->idx + 1), n = 0;
	bool belief[RACE_PAGES];

	memset(belief, 0, sizeof(belief));	/* shared, as every gfn starts */
	while (!atomic_load(&r->stop) && !fb_stopped(&r->fb)) {
		/* Mostly the same few pages (and their neighbours) as the others. */
		uint64_t gfn = (xorshift(&seed) % 4 == 0) ? xorshift(&seed) % RACE_PAGES : 500 + xorshift(&seed) % 24;
		bool write = xorshift(&seed) & 1;
		struct vmmu_exit x;
		uint64_t v = write ? rtoken(gfn, belief[gfn], w->idx, ++n) : 0;
		int rc;

		for (int tries = 0;; tries++) {
			rc = pacc(e, w->idx, gfn << 12, belief[gfn], &v, 8, write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ,
				  &x);
			if (rc != VMMU_EXIT || x.reason != VMMU_EXIT_MEMORY_FAULT ||
			    x.u.memory_fault.error != VMMU_EAGAIN)
				break;
			if (x.u.memory_fault.is_private != !belief[gfn] || x.u.memory_fault.gpa != gfn << 12) {
				fb_fail(&r->fb, "memory-fault exit for gfn %#llx says private %d gpa %#llx",
					(unsigned long long)gfn, x.u.memory_fault.is_private,
					(unsigned long long)x.u.memory_fault.gpa);
				return NULL;
			}
			/* The VMM's answer would be to convert; here the other
			 * thread converts, and the guest switches alias. */
			belief[gfn] = !belief[gfn];
			atomic_fetch_add(&r->flips, 1);
			if (write)
				v = rtoken(gfn, belief[gfn], w->idx, n);
		}
		if (rc) {
			fb_fail(&r->fb, "access to gfn %#llx: %d exit %s error %d", (unsigned long long)gfn, rc,
				exit_name(x.reason), x.u.memory_fault.error);
			return NULL;
		}
		if (!write && !rtoken_ok(v, gfn, belief[gfn])) {
			fb_fail(&r->fb, "%s read of gfn %#llx returned %#llx: another alias's or page's data",
				belief[gfn] ? "shared" : "private", (unsigned long long)gfn, (unsigned long long)v);
			return NULL;
		}
		atomic_fetch_add(&r->accesses, 1);
	}
	return NULL;
}

TEST(private_conversions_race_faults)
{
	for_each_tdp_variant(var) {
		struct penv e;
		struct race r;
		struct race_worker w[3];
		uint64_t seed = 7;
		unsigned int rounds = UNDER_SANITIZER ? 150 : 1500;

		penv_create(&e, var, 4 * MB, 2 * MB, 3);
		for (uint64_t p = 0; p < RACE_PAGES; p++)
			memcpy(e.shared + (p << 12), &(uint64_t){ rtoken(p, true, 15, 0) }, 8);
		memset(&r, 0, sizeof(r));
		r.e = &e;
		for (unsigned int i = 0; i < 3; i++) {
			w[i] = (struct race_worker){ .r = &r, .idx = i };
			pthread_create(&w[i].t, NULL, race_vcpu, &w[i]);
		}
		double t0 = now_s();

		/* Until both the conversions and the accesses have had their
		 * share (the vCPU threads may start late), bounded in time. */
		for (unsigned int i = 0;
		     (i < rounds || atomic_load(&r.accesses) < 20 * rounds) && !fb_stopped(&r.fb) && now_s() - t0 < 30;
		     i++) {
			uint64_t kind = xorshift(&seed) % 4, start, len;

			/* Single pages, runs across a 2M boundary, whole 2M pages. */
			if (kind == 0) {
				start = 500 + xorshift(&seed) % 24;
				len = 1;
			} else if (kind == 1) {
				start = 500 + xorshift(&seed) % 20;
				len = 1 + xorshift(&seed) % 30;
			} else if (kind == 2) {
				start = (xorshift(&seed) % 2) * 512;
				len = 512;
			} else {
				start = xorshift(&seed) % RACE_PAGES;
				len = 1 + xorshift(&seed) % 8;
			}
			if (start + len > RACE_PAGES)
				len = RACE_PAGES - start;
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, start << 12, len << 12, (xorshift(&seed) & 1) ? PRIV : 0));
			if (i % 50 == 0)
				ASSERT_AUDIT(e.vm);
		}
		atomic_store(&r.stop, true);
		for (unsigned int i = 0; i < 3; i++)
			pthread_join(w[i].t, NULL);
		ASSERT_FAILBOX(&r.fb);
		ASSERT_GT(r.accesses, 0);
		ASSERT_GT(r.flips, 0);
		penv_destroy(&e);
	}
}

/* Two vCPUs fault the same private pages at once: one wins each frozen
 * entry, the other retries; nothing is mapped twice. */
struct same_arg {
	struct penv *e;
	unsigned int idx;
	struct failbox *fb;
};

static void *same_vcpu(void *arg)
{
	struct same_arg *a = arg;

	for (uint64_t p = 0; p < 1024 && !fb_stopped(a->fb); p++) {
		uint64_t v = 0;
		struct vmmu_exit x;
		int rc = pacc(a->e, a->idx, p << 12, false, &v, 8, VMMU_ACCESS_READ, &x);

		if (rc || v)
			fb_fail(a->fb, "vCPU %u private read of page %llu: %d, value %#llx", a->idx,
				(unsigned long long)p, rc, (unsigned long long)v);
	}
	return NULL;
}

TEST(private_same_gfn_two_vcpus)
{
	for_each_tdp_variant(var) {
		for (int huge = 0; huge < 2; huge++) {
			struct penv e;
			struct failbox fb;
			struct same_arg a[2];
			pthread_t t[2];

			penv_create(&e, var, 4 * MB, huge ? 2 * MB : 0, 2);
			ASSERT_OK(vmmu_set_memory_attributes(e.vm, 0, 4 * MB, PRIV));
			memset(&fb, 0, sizeof(fb));
			for (unsigned int i = 0; i < 2; i++) {
				a[i] = (struct same_arg){ &e, i, &fb };
				pthread_create(&t[i], NULL, same_vcpu, &a[i]);
			}
			for (unsigned int i = 0; i < 2; i++)
				pthread_join(t[i], NULL);
			ASSERT_FAILBOX(&fb);
			ASSERT_EQ(pstats(&e).secure_pages_4k + 512 * pstats(&e).secure_pages_2m, 1024);
			penv_destroy(&e);
		}
	}
}

/* ---- isolation fuzz: an operation stream against a model ------------------- */

#define FZ_PAGES 1024		/* slot 0: 4 MiB private-capable, 2M host pages */
#define FZ_S1_GPA (16 * MB)	/* slot 1: 1 MiB shared-only, comes and goes */
#define FZ_S1_PAGES 256

struct fz_model {
	bool priv[FZ_PAGES];
	uint64_t pval[FZ_PAGES];	/* private contents (first word) */
	bool s1;			/* slot 1 exists */
	bool s1_log;
	uint64_t s1val[FZ_S1_PAGES];
	bool s1_priv[FZ_S1_PAGES];
};

static void fz_slot1(struct penv *e, struct fz_model *m, bool create, bool log)
{
	struct vmmu_memslot s = { .slot = 1, .gpa = FZ_S1_GPA, .size = create ? FZ_S1_PAGES * 4096 : 0,
				  .flags = log ? VMMU_MEM_LOG_DIRTY_PAGES : 0 };

	ASSERT_OK(vmmu_set_memslot(e->vm, &s));
	if (create && !m->s1)
		memset(m->s1val, 0, sizeof(m->s1val));
	m->s1 = create;
	m->s1_log = log;
}

TEST(private_isolation_fuzz)
{
	for_each_tdp_variant(var) {
		struct penv e;
		static struct fz_model m;
		uint64_t seed = 0x1234567 + var->tdp_levels;
		unsigned int steps = UNDER_SANITIZER ? 600 : 3000;

		memset(&m, 0, sizeof(m));
		penv_create(&e, var, 4 * MB, 2 * MB, 1);
		for (uint64_t p = 0; p < FZ_PAGES; p++)
			memcpy(e.shared + (p << 12), &(uint64_t){ ptoken(p << 12, true) }, 8);
		fz_slot1(&e, &m, true, false);
		for (unsigned int step = 0; step < steps; step++) {
			uint64_t op = xorshift(&seed) % 100;
			uint64_t p = xorshift(&seed) % FZ_PAGES;

			if (op < 50) {
				/* An access through a random alias. */
				bool shared = xorshift(&seed) & 1, write = xorshift(&seed) & 1;
				uint64_t v = write ? ptoken((p << 12) + step, shared) : 0;
				struct vmmu_exit x;
				int rc = pacc(&e, 0, p << 12, shared, &v, 8, write ? VMMU_ACCESS_WRITE : VMMU_ACCESS_READ, &x);

				if (shared == m.priv[p]) {
					ASSERT_EQ(rc, VMMU_EXIT);
					ASSERT_EQ(x.reason, VMMU_EXIT_MEMORY_FAULT);
					ASSERT_EQ(x.u.memory_fault.error, VMMU_EAGAIN);
					ASSERT_EQ(x.u.memory_fault.is_private, !shared);
				} else if (write) {
					ASSERT_OK(rc);
					if (shared)
						ASSERT_EQ(memcmp(e.shared + (p << 12), &v, 8), 0);
					else
						m.pval[p] = v;
				} else {
					uint64_t want;

					ASSERT_OK(rc);
					if (shared)
						memcpy(&want, e.shared + (p << 12), 8);
					else
						want = m.pval[p];
					ASSERT_EQ_U64(v, want);
				}
			} else if (op < 70) {
				/* A conversion: one page, a few, or an aligned 2M. */
				uint64_t len = (op % 3 == 0) ? 512 : 1 + xorshift(&seed) % 16;
				bool priv = xorshift(&seed) & 1;

				if (len == 512)
					p &= ~511ULL;
				if (p + len > FZ_PAGES)
					len = FZ_PAGES - p;
				ASSERT_OK(vmmu_set_memory_attributes(e.vm, p << 12, len << 12, priv ? PRIV : 0));
				for (uint64_t i = p; i < p + len; i++) {
					if (m.priv[i] && !priv)
						m.pval[i] = 0;	/* removed; comes back zeroed */
					m.priv[i] = priv;
				}
			} else if (op < 76) {
				/* Slot 1: shared-only memory that comes and goes. */
				uint64_t q = xorshift(&seed) % FZ_S1_PAGES;
				uint64_t v = ptoken(FZ_S1_GPA + (q << 12), true), got = 0;
				struct vmmu_exit x;

				if (op == 70) {
					fz_slot1(&e, &m, !m.s1, false);
				} else if (op == 71 && m.s1) {
					/* Logging on and off: shared splits and recovery. */
					fz_slot1(&e, &m, true, !m.s1_log);
				} else if (op == 72) {
					bool priv = xorshift(&seed) & 1;

					ASSERT_OK(vmmu_set_memory_attributes(e.vm, FZ_S1_GPA + (q << 12), 4096,
									     priv ? PRIV : 0));
					m.s1_priv[q] = priv;
				} else if (!m.s1) {
					ASSERT_EQ(pacc(&e, 0, FZ_S1_GPA + (q << 12), true, &got, 8, VMMU_ACCESS_READ, &x),
						  VMMU_EXIT);
					ASSERT_EQ(x.reason, m.s1_priv[q] ? VMMU_EXIT_MEMORY_FAULT : VMMU_EXIT_MMIO);
				} else if (m.s1_priv[q]) {
					/* Private, but the slot has no private backing. */
					ASSERT_EQ(pacc(&e, 0, FZ_S1_GPA + (q << 12), false, &got, 8, VMMU_ACCESS_READ, &x),
						  VMMU_EXIT);
					ASSERT_EQ(x.u.memory_fault.error, VMMU_EFAULT);
				} else {
					ASSERT_OK(pacc(&e, 0, FZ_S1_GPA + (q << 12), true, &got, 8, VMMU_ACCESS_READ, &x));
					ASSERT_EQ_U64(got, m.s1val[q]);
					ASSERT_OK(pacc(&e, 0, FZ_S1_GPA + (q << 12), true, &v, 8, VMMU_ACCESS_WRITE, &x));
					m.s1val[q] = v;
				}
			} else if (op < 84) {
				/* The host changes slot 0's shared memory under a notifier. */
				uintptr_t lo = (uintptr_t)e.shared + ((p & ~15ULL) << 12);

				vmmu_invalidate_range_begin(e.vm, lo, lo + 16 * 4096);
				memcpy((void *)lo, &(uint64_t){ ptoken(p << 12, true) ^ step }, 8);
				vmmu_invalidate_range_end(e.vm, lo, lo + 16 * 4096);
			} else if (op < 88) {
				vmmu_zap_all(e.vm);
			} else if (op < 92) {
				ASSERT_OK(vmmu_zap_gfn_range(e.vm, p, p + 1 + xorshift(&seed) % 600));
			} else {
				/* Every page of a private 2M range, so huge pages form. */
				uint64_t base = p & ~511ULL;

				for (uint64_t i = base; i < base + 512; i += 37) {
					struct vmmu_exit x;
					uint64_t v = 0;

					if (!m.priv[i])
						continue;
					ASSERT_OK(pacc(&e, 0, i << 12, false, &v, 8, VMMU_ACCESS_READ, &x));
					ASSERT_EQ_U64(v, m.pval[i]);
				}
			}
			ASSERT_AUDIT(e.vm);
		}
		ASSERT_GT(pstats(&e).attribute_changes, 0);
		penv_destroy(&e);
	}
}

int main(int argc, char **argv)
{
	return test_main(argc, argv);
}
