/* SPDX-License-Identifier: MIT */
/*
 * The scenarios of `vmmu run` and the benchmarks of `vmmu bench`.
 *
 * Each one is a file of its own (scenario_NAME.c, bench_NAME.c) whose only
 * global symbol is its entry, and one line in the lists below, which also
 * give the order of `vmmu run list`, `vmmu bench list` and --help (the
 * build takes every .c file of tools/vmmu).  A scenario or benchmark builds
 * on env.h and cli.h, never on another one or on the registry: what two of
 * them share goes down into env.c or cli.c.
 *
 * The contract (../shared/DESIGN.md): run() checks its own results and
 * returns CLI_EXIT_OK, CLI_EXIT_FAIL when a check failed, or CLI_EXIT_USAGE
 * (through cli_usage_error()) for options it cannot take; with o->json its
 * report is one JSON object on stdout and nothing else is.  A benchmark
 * times runs that check their own results.  Timings are noisy, so it
 * repeats (cli_reps(o) times), interleaves the variants it compares inside
 * every repetition, and reports medians; a missed target is reported, never
 * turned into a failure: only wrong data or errors fail.
 */
#ifndef VMMU_TOOL_REGISTRY_H
#define VMMU_TOOL_REGISTRY_H

#include "cli.h"

struct tool_entry {
	const char *name;	/* on the command line; a key of `list --json` */
	const char *desc;	/* one line for the lists */
	int (*run)(const struct cli_opts *o);	/* returns the exit status */
	bool guest_paging;	/* scenarios: takes --guest */
	const char *sweep;	/* benches: what --sweep varies (sweep.h), or NULL */
};

/* The first scenario is the default of `vmmu run`. */
#define TOOL_SCENARIOS(X)		\
	X(scenario_demand)		\
	X(scenario_paging)		\
	X(scenario_nested)		\
	X(scenario_private)		\
	/* a new one goes above, so it is one line */

#define TOOL_BENCHES(X)			\
	X(bench_demand)			\
	X(bench_vcpus)			\
	X(bench_walk)			\
	X(bench_fastpf)			\
	X(bench_dirtylog)		\
	X(bench_zap)			\
	X(bench_notifier)		\
	X(bench_cr3switch)		\
	X(bench_ptwrite)		\
	X(bench_nested)			\
	X(bench_private)		\
	/* a new one goes above, so it is one line */

#define TOOL_DECLARE_ENTRY(entry) extern const struct tool_entry entry;
TOOL_SCENARIOS(TOOL_DECLARE_ENTRY)
TOOL_BENCHES(TOOL_DECLARE_ENTRY)
#undef TOOL_DECLARE_ENTRY

/* registry.c: `vmmu run` */
const char *scenario_default(void);
bool scenario_exists(const char *name);
bool scenario_takes_guest(const char *name);
void scenario_list(FILE *f, bool json);
int scenario_run(const char *name, const struct cli_opts *o);

/* registry.c: `vmmu bench` */
bool bench_exists(const char *name);
/* The parameter bench name sweeps, or NULL; bench_list_sweeps() names them all. */
const char *bench_sweep(const char *name);
void bench_list_sweeps(char *buf, size_t len);
void bench_list(FILE *f, bool json);
int bench_run(const char *name, const struct cli_opts *o);

#endif /* VMMU_TOOL_REGISTRY_H */
