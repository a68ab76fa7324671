/* SPDX-License-Identifier: MIT */
/*
 * The scenarios of `vmmu run` and the benchmarks of `vmmu bench`.
 */
#ifndef VMMU_TOOL_REGISTRY_H
#define VMMU_TOOL_REGISTRY_H

#include "cli.h"

/* registry.c: `vmmu run` */
const char *scenario_default(void);
bool scenario_exists(const char *name);
bool scenario_takes_guest(const char *name);
void scenario_list(FILE *f, bool json);
int scenario_run(const char *name, const struct cli_opts *o);

/* registry.c: `vmmu bench` */
bool bench_exists(const char *name);
/* bench_demand.c, bench_vcpus.c */
int bench_demand(const struct cli_opts *o);
int bench_vcpus(const struct cli_opts *o);
/* bench_walk.c */
int bench_walk(const struct cli_opts *o);
/* bench_fastpf.c, bench_dirtylog.c */
int bench_fastpf(const struct cli_opts *o);
int bench_dirtylog(const struct cli_opts *o);
/* bench_zap.c, bench_notifier.c */
int bench_zap(const struct cli_opts *o);
int bench_notifier(const struct cli_opts *o);
/* bench_cr3switch.c, bench_ptwrite.c */
int bench_cr3switch(const struct cli_opts *o);
int bench_ptwrite(const struct cli_opts *o);
void bench_list(FILE *f, bool json);
int bench_run(const char *name, const struct cli_opts *o);

/* scenario_demand.c, scenario_paging.c */
int scenario_demand(const struct cli_opts *o);
int scenario_paging(const struct cli_opts *o);

#endif /* VMMU_TOOL_REGISTRY_H */
