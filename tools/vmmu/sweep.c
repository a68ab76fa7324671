// SPDX-License-Identifier: MIT
/*
 * The rows of a benchmark's --sweep, their CSV and their report (sweep.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sweep.h"

void sweep_init(struct sweep *s, const char *bench, const char *param, const char *const *metrics,
		unsigned int nr_metrics)
{
	memset(s, 0, sizeof(*s));
	s->bench = bench;
	s->param = param;
	s->metrics = metrics;
	s->nr_metrics = nr_metrics < SWEEP_MAX_METRICS ? nr_metrics : SWEEP_MAX_METRICS;
}

unsigned int sweep_row(struct sweep *s, uint64_t x)
{
	struct sweep_row *row;

	if (s->nr_rows == SWEEP_MAX_ROWS) {
		/* the benches choose their values: more is a bug in one of them */
		fprintf(stderr, "vmmu: internal error: more than %u sweep values\n", SWEEP_MAX_ROWS);
		abort();
	}
	row = &s->rows[s->nr_rows];
	row->x = x;
	for (unsigned int m = 0; m < SWEEP_MAX_METRICS; m++)
		row->med[m] = row->min[m] = row->max[m] = NAN;
	return s->nr_rows++;
}

void sweep_set(struct sweep *s, unsigned int row, unsigned int m, const double *samples, unsigned int n)
{
	struct sweep_row *r = &s->rows[row];

	if (m >= s->nr_metrics || !n)
		return;
	r->med[m] = cli_median(samples, n);
	r->min[m] = r->max[m] = samples[0];
	for (unsigned int i = 1; i < n; i++) {
		r->min[m] = fmin(r->min[m], samples[i]);
		r->max[m] = fmax(r->max[m], samples[i]);
	}
}

/* A number for the CSV: empty when there is none (a row that failed). */
static void put_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, ",%.6g", v);
	else
		fputc(',', f);
}

int sweep_write_csv(struct sweep *s, const struct cli_opts *o, char *err, size_t err_len)
{
	FILE *f;

	if (o->csv_path)
		snprintf(s->path, sizeof(s->path), "%s", o->csv_path);
	else
		snprintf(s->path, sizeof(s->path), "%s.csv", s->bench);
	f = fopen(s->path, "w");
	if (!f) {
		cli_set_error(err, err_len, "--sweep: cannot create %s: %s", s->path, strerror(errno));
		return -1;
	}
	fputs(s->param, f);
	for (unsigned int m = 0; m < s->nr_metrics; m++)
		fprintf(f, ",%s_median,%s_min,%s_max", s->metrics[m], s->metrics[m], s->metrics[m]);
	fputc('\n', f);
	for (unsigned int i = 0; i < s->nr_rows; i++) {
		const struct sweep_row *r = &s->rows[i];

		fprintf(f, "%" PRIu64, r->x);
		for (unsigned int m = 0; m < s->nr_metrics; m++) {
			put_num(f, r->med[m]);
			put_num(f, r->min[m]);
			put_num(f, r->max[m]);
		}
		fputc('\n', f);
	}
	if (ferror(f) | fclose(f)) {
		cli_set_error(err, err_len, "--sweep: writing %s failed: %s", s->path, strerror(errno));
		return -1;
	}
	return 0;
}

void sweep_report(struct sweep *s, struct report *r)
{
	size_t len = 0;

	s->values[0] = '\0';
	for (unsigned int i = 0; i < s->nr_rows && len < sizeof(s->values); i++)
		len += (size_t)snprintf(s->values + len, sizeof(s->values) - len, "%s%" PRIu64, i ? "," : "",
					s->rows[i].x);
	report_str(r, "sweep", s->param);
	report_str(r, "sweep_values", s->values);
	report_u64(r, "points", s->nr_rows);
	if (s->path[0])
		report_str(r, "csv", s->path);
	for (unsigned int i = 0; i < s->nr_rows; i++) {
		for (unsigned int m = 0; m < s->nr_metrics; m++) {
			snprintf(s->keys[i][m], sizeof(s->keys[i][m]), "%s_%s%" PRIu64, s->metrics[m], s->param,
				 s->rows[i].x);
			report_f(r, s->keys[i][m], 3, s->rows[i].med[m]);
		}
	}
}
