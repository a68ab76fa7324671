/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_HARNESS_H
#define VMMU_TEST_HARNESS_H
/*
 * A small test harness in the spirit of libuv's and kselftest's: typed
 * assertions that print both sides, SKIP, and fixture variants so every test
 * runs once per MMU configuration.
 *
 *   TEST(name) { ... ASSERT_EQ(a, b); ... }
 *   int main(int argc, char **argv) { return test_main(argc, argv); }
 *
 * Tests register themselves; `./test_x NAME` runs one, `-l` lists.  Output
 * ends with the "N passed, N failed, N skipped" line ctest logs show.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmmu/vmmu.h"

struct test_case {
	const char *name;
	void (*fn)(void);
	struct test_case *next;
};

extern struct test_case *test_list;
extern jmp_buf test_jmp;
extern int test_result; /* 0 pass, 1 fail, 2 skip */
extern const char *test_variant;

void test_register(struct test_case *t);
int test_main(int argc, char **argv);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define TEST(n)                                                                       \
	static void test_fn_##n(void);                                                \
	static struct test_case test_case_##n = { #n, test_fn_##n, NULL };            \
	__attribute__((constructor)) static void test_reg_##n(void)                   \
	{                                                                             \
		test_register(&test_case_##n);                                        \
	}                                                                             \
	static void test_fn_##n(void)

#define ASSERT_CMP_(a, op, b, fmt, type)                                                          \
	do {                                                                                      \
		type a_ = (type)(a), b_ = (type)(b);                                              \
		if (!(a_ op b_))                                                                  \
			test_fail(__FILE__, __LINE__, "%s %s %s: " fmt " vs " fmt, #a, #op, #b, a_, b_); \
	} while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b, "%" PRId64, int64_t)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b, "%" PRId64, int64_t)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, <, b, "%" PRId64, int64_t)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, <=, b, "%" PRId64, int64_t)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, >, b, "%" PRId64, int64_t)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, >=, b, "%" PRId64, int64_t)
#define ASSERT_EQ_U64(a, b) ASSERT_CMP_(a, ==, b, "%#" PRIx64, uint64_t)
#define ASSERT_NE_U64(a, b) ASSERT_CMP_(a, !=, b, "%#" PRIx64, uint64_t)
#define ASSERT_TRUE(c) \
	do { if (!(c)) test_fail(__FILE__, __LINE__, "expected true: %s", #c); } while (0)
#define ASSERT_FALSE(c) \
	do { if (c) test_fail(__FILE__, __LINE__, "expected false: %s", #c); } while (0)
/* A vmmu call that must succeed; prints the library's error string. */
#define ASSERT_OK(call)                                                                       \
	do {                                                                                  \
		int r_ = (call);                                                              \
		if (r_ != 0)                                                                  \
			test_fail(__FILE__, __LINE__, "%s = %d (%s)", #call, r_, vmmu_strerror(r_)); \
	} while (0)
#define ASSERT_ERR(call, err)                                                                  \
	do {                                                                                   \
		int r_ = (call);                                                               \
		if (r_ != (err))                                                               \
			test_fail(__FILE__, __LINE__, "%s = %d (%s), want %d (%s)", #call, r_, \
				  vmmu_strerror(r_), (int)(err), vmmu_strerror(err));         \
	} while (0)
#define SKIP(...) test_skip(__VA_ARGS__)
/* The MMU's own consistency check (vmmu_audit) must pass. */
#define ASSERT_AUDIT(vm)                                                            \
	do {                                                                        \
		char why_[256];                                                     \
		if (vmmu_audit((vm), why_, sizeof(why_)))                           \
			test_fail(__FILE__, __LINE__, "vmmu_audit: %s", why_);      \
	} while (0)

/* Sanitizer builds run the same tests with smaller sizes. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

/* Monotonic seconds, for tests bounded in time as well as iterations. */
static inline double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A per-thread generator (state in the caller): threads never share one. */
static inline uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/*
 * The first failure of any thread, reported by the main thread: ASSERT
 * longjmps and so belongs to the main thread only.  A worker records what
 * went wrong with fb_fail() (the first message wins) and everyone stops.
 */
struct failbox {
	_Atomic unsigned int n;
	_Atomic bool stop;
	char why[600];
};

void fb_fail(struct failbox *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline bool fb_stopped(struct failbox *f)
{
	return atomic_load_explicit(&f->stop, memory_order_acquire);
}

#define ASSERT_FAILBOX(f)                                                               \
	do {                                                                            \
		if (atomic_load(&(f)->n))                                               \
			test_fail(__FILE__, __LINE__, "%s", (f)->why);                  \
	} while (0)

/* A VMMU_EXIT_* reason by name, for failure messages. */
const char *exit_name(uint32_t reason);

/* Deterministic pseudo-random numbers (splitmix64) for single-threaded tests. */
void test_rng_seed(uint64_t seed);
uint64_t test_rng_next(void);

/* ---- MMU configurations every data-path test runs under ------------------ */
struct mmu_variant {
	const char *name;
	uint32_t tdp_format;
	uint32_t tdp_levels;
	uint32_t flags;
	uint32_t mmu;		/* enum vmmu_mmu_kind */
};
extern const struct mmu_variant mmu_variants[];
extern const unsigned int nr_mmu_variants;
#define for_each_mmu_variant(var)                                               \
	for (const struct mmu_variant *var = mmu_variants;                      \
	     var < mmu_variants + nr_mmu_variants && ((test_variant = var->name), 1); var++)
/* The TDP variants only: tests of TDP internals and of huge SPTEs. */
#define for_each_tdp_variant(var) \
	for_each_mmu_variant(var) \
		if (var->mmu != VMMU_MMU_TDP) {} else
void variant_config(const struct mmu_variant *var, struct vmmu_vm_config *cfg);

#endif /* VMMU_TEST_HARNESS_H */
