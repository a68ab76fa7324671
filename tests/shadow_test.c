/* SPDX-License-Identifier: MIT */
/* What the shadow-paging tests share (shadow_test.h). */
#include "shadow_test.h"

const char *const mode_names[] = { "32-bit", "PAE", "4-level", "5-level" };

uint64_t host_rd64(vmmu_vm *vm, uint64_t gpa)
{
	void *h;

	if (vmmu_gpa_to_hva(vm, gpa, &h))
		return 0xbad0bad0bad0bad0ULL;
	return __atomic_load_n((uint64_t *)h, __ATOMIC_ACQUIRE);
}

void host_wr64(vmmu_vm *vm, uint64_t gpa, uint64_t v)
{
	void *h;

	if (!vmmu_gpa_to_hva(vm, gpa, &h))
		__atomic_store_n((uint64_t *)h, v, __ATOMIC_RELEASE);
}

/* The shadow-paging configuration, whether or not the harness lists it yet. */
static const struct mmu_variant *shadow_variant(void)
{
	static const struct mmu_variant local = { "shadow", VMMU_TDP_EPT, 5, 0, VMMU_MMU_SHADOW };

	for (unsigned int i = 0; i < nr_mmu_variants; i++)
		if (mmu_variants[i].mmu == VMMU_MMU_SHADOW)
			return &mmu_variants[i];
	return &local;
}

/* Whether this build has shadow paging (vmmu_vm_create says ENOTSUP until then). */
bool shadow_supported(void)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;
	int r;

	variant_config(shadow_variant(), &cfg);
	r = vmmu_vm_create(&cfg, &vm);
	if (!r)
		vmmu_vm_destroy(vm);
	return r == 0;
}

/* A shadow VM with these knobs, or SKIP while shadow paging has not landed. */
vmmu_vm *shadow_vm(uint32_t prev_roots, uint64_t max_pages)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;
	int r;

	test_variant = "shadow";
	variant_config(shadow_variant(), &cfg);
	cfg.shadow_prev_roots = prev_roots;
	cfg.shadow_max_pages = max_pages;
	r = vmmu_vm_create(&cfg, &vm);
	if (r == VMMU_ENOTSUP)
		SKIP("shadow paging not in this build (vmmu_vm_create: %s)", vmmu_strerror(r));
	ASSERT_OK(r);
	return vm;
}

void add_ram(vmmu_vm *vm, uint32_t id, uint64_t gpa, uint64_t size, uint64_t host_page)
{
	struct vmmu_memslot s = { .slot = id, .gpa = gpa, .size = size, .host_page_size = host_page };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

void del_slot(vmmu_vm *vm, uint32_t id)
{
	struct vmmu_memslot s = { .slot = id };

	ASSERT_OK(vmmu_set_memslot(vm, &s));
}

void assert_not_bugged(vmmu_vm *vm)
{
	const char *why = NULL;

	if (vmmu_vm_bugged(vm, &why))
		test_fail(__FILE__, __LINE__, "VM bugged: %s", why ? why : "?");
}

void fix_create(struct fix *f, vmmu_vm *vm)
{
	f->vm = vm;
	add_ram(vm, 0, 0, RAM0_SIZE, 0);
	ASSERT_OK(vmmu_vcpu_create(vm, 0, &f->vcpu));
}

void fix_variant(struct fix *f, const struct mmu_variant *var)
{
	struct vmmu_vm_config cfg;
	vmmu_vm *vm = NULL;

	variant_config(var, &cfg);
	ASSERT_OK(vmmu_vm_create(&cfg, &vm));
	fix_create(f, vm);
}

void fix_destroy(struct fix *f)
{
	assert_not_bugged(f->vm);
	ASSERT_AUDIT(f->vm);
	vmmu_vm_destroy(f->vm);
}

struct guest_pt *fix_pt(struct fix *f, enum guest_mode mode, uint64_t pool, uint64_t pool_size)
{
	struct guest_pt *pt;

	ASSERT_OK(guest_pt_create(f->vm, mode, pool, pool_size, &pt));
	guest_pt_set_vcpu(pt, f->vcpu);
	return pt;
}

int acc(struct fix *f, uint64_t gva, uint64_t *v, unsigned int type, struct vmmu_exit *x)
{
	memset(x, 0, sizeof(*x));
	return vmmu_vcpu_access(f->vcpu, gva, v, 8, type, x);
}

void vstats(struct fix *f, struct vmmu_vcpu_stats *s)
{
	memset(s, 0, sizeof(*s));
	vmmu_vcpu_get_stats(f->vcpu, s);
}
