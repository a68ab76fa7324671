// SPDX-License-Identifier: MIT
/*
 * vmmu: command-line driver for the vmmu library.  This file only parses
 * the command line (cli.c) and dispatches to the scenario or benchmark
 * the registry names.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"
#include "registry.h"
#include "trace.h"

static void print_help(FILE *f)
{
	fputs("vmmu - drive the vmmu x86 MMU library from the command line\n\n", f);
	cli_print_usage(f);
	fputs("\n"
	      "Commands:\n"
	      "  run [SCENARIO]       run a scenario (default: demand) and check its results\n"
	      "  run list             list the scenarios\n"
	      "  bench NAME           run a benchmark, report the median of each number\n"
	      "  bench list           list the benchmarks\n"
	      "\n", f);
	cli_print_options(f);
	fputs("\nScenarios:\n", f);
	scenario_list(f, false);
	fputs("\nBenchmarks:\n", f);
	bench_list(f, false);
	fputs("\n"
	      "Exit status: 0 success; 1 a check failed (wrong data, unexpected exit,\n"
	      "library error); 2 bad usage. Benchmarks report missed targets but do not\n"
	      "fail on them.\n", f);
}

/*
 * --json anywhere before "--": errors found while parsing, before the
 * option itself is reached, must come out as JSON too.
 */
static bool json_requested(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--json"))
			return true;
	return false;
}

/* The command with the options parsed; its exit status. */
static int dispatch(enum cli_cmd cmd, const char *name, struct cli_opts *o)
{
	char err[256] = "", label[64];
	uint64_t events;
	int rc;

	if (o->trace_path && trace_open(&o->trace, o->trace_path, err, sizeof(err)))
		return cli_runtime_error("%s", err);
	rc = cmd == CLI_CMD_RUN ? scenario_run(name, o) : bench_run(name, o);
	if (o->trace) {
		/* a run that stopped before its report wrote it still leaves what it traced */
		snprintf(label, sizeof(label), "vmmu run %s", name);
		if (!trace_written(o->trace) && trace_write(o->trace, label, &events, err, sizeof(err)))
			fprintf(stderr, "vmmu: %s\n", err);
		trace_free(o->trace);
		o->trace = NULL;
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct cli_opts o;
	const char *name;
	enum cli_cmd cmd;
	int rc;

	cli_set_json_errors(json_requested(argc, argv));
	if (argc < 2)
		return cli_usage_error("missing command");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		if (argc > 2)
			return cli_usage_error("'%s' takes no arguments", argv[1]);
		print_help(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		if (argc > 2)
			return cli_usage_error("'%s' takes no arguments", argv[1]);
		printf("vmmu %s\n", vmmu_version());
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "run"))
		cmd = CLI_CMD_RUN;
	else if (!strcmp(argv[1], "bench"))
		cmd = CLI_CMD_BENCH;
	else
		return cli_usage_error("unknown command '%s'", argv[1]);

	cli_opts_init(&o);
	rc = cli_parse_opts(cmd, argc, argv, &o, &name);
	if (rc < 0) {
		print_help(stdout);
		return CLI_EXIT_OK;
	}
	if (rc)
		return rc;

	if (name && !strcmp(name, "list")) {
		if (cmd == CLI_CMD_RUN)
			scenario_list(stdout, o.json);
		else
			bench_list(stdout, o.json);
		return CLI_EXIT_OK;
	}

	if (cmd == CLI_CMD_RUN) {
		if (!name)
			name = scenario_default();
		if (!scenario_exists(name))
			return cli_usage_error("unknown scenario '%s' (see 'vmmu run list')", name);
		/* silently ignoring it would report a paging mode that never ran */
		if (o.guest_set && !scenario_takes_guest(name))
			return cli_usage_error("--guest applies to scenarios with guest paging "
					       "('vmmu run paging'), not '%s'", name);
	} else {
		if (!name)
			return cli_usage_error("missing benchmark name (see 'vmmu bench list')");
		if (!bench_exists(name))
			return cli_usage_error("unknown benchmark '%s' (see 'vmmu bench list')",
					       name);
		if (o.sweep && !bench_sweep(name)) {
			char which[200];

			bench_list_sweeps(which, sizeof(which));
			return cli_usage_error("--sweep: bench %s has no parameter to sweep; these do: %s", name,
					       which);
		}
	}
	rc = cli_check_opts(&o);
	if (rc)
		return rc;

	rc = dispatch(cmd, name, &o);
	/* every path of a command makes its report; this is the net under a missed one */
	if (o.json && !cli_json_printed()) {
		if (!rc)
			rc = CLI_EXIT_FAIL;
		cli_json_error(rc, "stopped without a report (see stderr)");
	}
	/* a report cut short by a full disk or closed pipe must not look like success */
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "vmmu: error writing the report: %s\n", strerror(errno));
		return CLI_EXIT_FAIL;
	}
	return rc;
}
