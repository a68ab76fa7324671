/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_MODEL_CHECK_H
#define VMMU_TEST_MODEL_CHECK_H
/*
 * What the model-based random tests (shadow_model.c, test_nested_model.c)
 * share: the record of the last operations, and the first failure's report
 * with them, so that a failure names its seed and step and how it got there;
 * and the check of the bytes an access moved against the places the model
 * allows it to have reached.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#define MODEL_LOG_KEEP 16

struct model_log {
	bool failed;
	bool trace;		/* every operation on stderr as it is logged */
	char why[4096];		/* the first failure */
	char ops[MODEL_LOG_KEEP][240];
	unsigned int n;
};

/* Logs one operation; who and step prefix the trace line. */
void model_log_op(struct model_log *l, const char *who, uint64_t step, const char *fmt, va_list ap);
/* The first failure only: head (who, seed, step), the message, then the last
 * operations, oldest first.  Returns -1, for `return efail(...)`. */
int model_log_fail(struct model_log *l, const char *head, const char *fmt, va_list ap);

/*
 * A place an access may have reached (one per allowed outcome that moves
 * data): its address, the model's copy of the quadword there, and what
 * memory holds now.  Places with the same address count once.
 */
struct model_place {
	uint64_t addr;
	uint64_t *copy;
	uint64_t mem;
};

/*
 * A write of val completed.  Every place but one must hold what the model
 * says, and that one val: returns its index (its copy updated), or -1 when
 * val is in none or in several places; *changed gets a place holding
 * something else (-1 if none).
 */
int model_write_landed(struct model_place *p, int n, uint64_t val, int *changed);
/* A read completed with val: the first place whose copy holds it, or -1. */
int model_read_match(const struct model_place *p, int n, uint64_t val);

/* In a model engine whose efail() reports through model_log_fail(). */
#define ECHECK(e, cond, ...)                          \
	do {                                          \
		if (!(cond))                          \
			return efail((e), __VA_ARGS__); \
	} while (0)

#endif /* VMMU_TEST_MODEL_CHECK_H */
