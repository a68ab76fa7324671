/* SPDX-License-Identifier: MIT */
/*
 * `vmmu bench NAME --sweep`: a benchmark run over the values of the
 * parameter that shapes it (vCPUs, address spaces, memory size), one row
 * per value, written as a CSV for scripts/plot-bench and summed up in the
 * report.  At the level of cli.c; the benchmark fills the rows.
 *
 * The CSV: a header row, then one row per value in the order measured:
 *   PARAM,M1_median,M1_min,M1_max,M2_median,...
 * where each metric's name ends in its unit (_ns, _ms_per_gib,
 * _pages_per_s, _ratio...), which plot-bench uses to put metrics of one
 * unit on one axis.  Median, min and max are over the repetitions.
 */
#ifndef VMMU_TOOL_SWEEP_H
#define VMMU_TOOL_SWEEP_H

#include "cli.h"

#define SWEEP_MAX_METRICS	8
#define SWEEP_MAX_ROWS		16

struct sweep_row {
	uint64_t x;
	double med[SWEEP_MAX_METRICS], min[SWEEP_MAX_METRICS], max[SWEEP_MAX_METRICS];
};

struct sweep {
	const char *bench;
	const char *param;
	const char *const *metrics;
	unsigned int nr_metrics, nr_rows;
	struct sweep_row rows[SWEEP_MAX_ROWS];
	char path[256];					/* where the CSV went */
	char keys[SWEEP_MAX_ROWS][SWEEP_MAX_METRICS][64];	/* the report's, which keeps pointers */
	char values[REPORT_VAL_LEN];
};

void sweep_init(struct sweep *s, const char *bench, const char *param, const char *const *metrics,
		unsigned int nr_metrics);
/* A new row for parameter value x; its index. */
unsigned int sweep_row(struct sweep *s, uint64_t x);
/* Metric m of row from its n samples (one per repetition). */
void sweep_set(struct sweep *s, unsigned int row, unsigned int m, const double *samples, unsigned int n);
/* Writes the CSV (--csv FILE, or BENCH.csv here); 0 or -1 with err. */
int sweep_write_csv(struct sweep *s, const struct cli_opts *o, char *err, size_t err_len);
/* sweep, sweep_values, csv, points and every median as METRIC_PARAMX. */
void sweep_report(struct sweep *s, struct report *r);

#endif /* VMMU_TOOL_SWEEP_H */
