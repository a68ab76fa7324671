/* SPDX-License-Identifier: MIT */
#include "harness.h"

#include <stdarg.h>

struct test_case *test_list;
jmp_buf test_jmp;
int test_result;
const char *test_variant;

const struct mmu_variant mmu_variants[] = {
	{ "ept4", VMMU_TDP_EPT, 4, 0, VMMU_MMU_TDP },
	{ "ept4-noad", VMMU_TDP_EPT, 4, VMMU_VM_AD_DISABLED, VMMU_MMU_TDP },
	{ "ept5", VMMU_TDP_EPT, 5, 0, VMMU_MMU_TDP },
	{ "npt4", VMMU_TDP_NPT, 4, 0, VMMU_MMU_TDP },
	{ "npt5", VMMU_TDP_NPT, 5, 0, VMMU_MMU_TDP },
	/* tdp_levels 5 only says every guest mode fits (LA57 included). */
	{ "shadow", VMMU_TDP_EPT, 5, 0, VMMU_MMU_SHADOW },
};
const unsigned int nr_mmu_variants = sizeof(mmu_variants) / sizeof(mmu_variants[0]);

void variant_config(const struct mmu_variant *var, struct vmmu_vm_config *cfg)
{
	vmmu_vm_config_init(cfg);
	cfg->mmu = var->mmu;
	cfg->tdp_format = var->tdp_format;
	cfg->tdp_levels = var->tdp_levels;
	cfg->flags = var->flags;
	if (var->tdp_levels == 5)
		cfg->maxphyaddr = 52;
	cfg->pt_arena_bytes = 1ULL << 30;
}

/* splitmix64: fixed seeds keep every run identical. */
static uint64_t rng_state;

void test_rng_seed(uint64_t seed)
{
	rng_state = seed;
}

uint64_t test_rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void fb_fail(struct failbox *f, const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&f->n, 1) == 0) {
		va_start(ap, fmt);
		vsnprintf(f->why, sizeof(f->why), fmt, ap);
		va_end(ap);
	}
	atomic_store(&f->stop, true);
}

const char *exit_name(uint32_t reason)
{
	switch (reason) {
	case VMMU_EXIT_NONE: return "none";
	case VMMU_EXIT_MMIO: return "mmio";
	case VMMU_EXIT_MEMORY_FAULT: return "memory-fault";
	case VMMU_EXIT_INTERNAL_ERROR: return "internal-error";
	case VMMU_EXIT_GUEST_FAULT: return "guest-fault";
	case VMMU_EXIT_DIRTY_RING_FULL: return "ring-full";
	case VMMU_EXIT_RETRY: return "retry";
	case VMMU_EXIT_NESTED: return "nested";
	default: return "?";
	}
}

void test_register(struct test_case *t)
{
	/* Append, so tests run in source order. */
	struct test_case **p = &test_list;

	while (*p)
		p = &(*p)->next;
	*p = t;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  FAIL %s:%d%s%s%s: ", file, line, test_variant ? " [" : "",
		test_variant ? test_variant : "", test_variant ? "]" : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	test_result = 1;
	longjmp(test_jmp, 1);
}

void test_skip(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  SKIP: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	test_result = 2;
	longjmp(test_jmp, 1);
}

int test_main(int argc, char **argv)
{
	/* volatile: they live across longjmp. */
	volatile int passed = 0, failed = 0, skipped = 0;
	struct test_case *volatile t;

	if (argc > 1 && !strcmp(argv[1], "-l")) {
		for (t = test_list; t; t = t->next)
			printf("%s\n", t->name);
		return 0;
	}
	for (t = test_list; t; t = t->next) {
		if (argc > 1 && strcmp(argv[1], t->name))
			continue;
		test_result = 0;
		test_variant = NULL;
		fprintf(stderr, "[ RUN  ] %s\n", t->name);
		if (!setjmp(test_jmp))
			t->fn();
		if (test_result == 0) {
			passed++;
			fprintf(stderr, "[ PASS ] %s\n", t->name);
		} else if (test_result == 2) {
			skipped++;
			fprintf(stderr, "[ SKIP ] %s\n", t->name);
		} else {
			failed++;
			fprintf(stderr, "[ FAIL ] %s\n", t->name);
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed ? 1 : 0;
}
