/* SPDX-License-Identifier: MIT */
/* What the model tests share (model_check.h). */
#include "model_check.h"

#include <stdio.h>

void model_log_op(struct model_log *l, const char *who, uint64_t step, const char *fmt, va_list ap)
{
	char *op = l->ops[l->n % MODEL_LOG_KEEP];

	vsnprintf(op, sizeof(l->ops[0]), fmt, ap);
	if (l->trace)
		fprintf(stderr, "%s %llu: %s\n", who, (unsigned long long)step, op);
	l->n++;
}

int model_log_fail(struct model_log *l, const char *head, const char *fmt, va_list ap)
{
	size_t n;

	if (l->failed)
		return -1;
	l->failed = true;
	n = (size_t)snprintf(l->why, sizeof(l->why), "%s: ", head);
	if (n < sizeof(l->why))
		n += (size_t)vsnprintf(l->why + n, sizeof(l->why) - n, fmt, ap);
	if (n < sizeof(l->why))
		n += (size_t)snprintf(l->why + n, sizeof(l->why) - n, "\n    last operations (oldest first):");
	for (unsigned int i = l->n > MODEL_LOG_KEEP ? l->n - MODEL_LOG_KEEP : 0; i < l->n && n < sizeof(l->why); i++)
		n += (size_t)snprintf(l->why + n, sizeof(l->why) - n, "\n      %s", l->ops[i % MODEL_LOG_KEEP]);
	return -1;
}

static bool seen_before(const struct model_place *p, int i)
{
	for (int k = 0; k < i; k++)
		if (p[k].addr == p[i].addr)
			return true;
	return false;
}

int model_write_landed(struct model_place *p, int n, uint64_t val, int *changed)
{
	int landed = 0, where = -1;

	*changed = -1;
	for (int i = 0; i < n; i++) {
		if (seen_before(p, i))
			continue;
		if (p[i].mem == val) {
			landed++;
			where = i;
		} else if (p[i].mem != *p[i].copy && *changed < 0) {
			*changed = i;
		}
	}
	if (landed != 1)
		return -1;
	*p[where].copy = val;
	return where;
}

int model_read_match(const struct model_place *p, int n, uint64_t val)
{
	for (int i = 0; i < n; i++)
		if (*p[i].copy == val)
			return i;
	return -1;
}
