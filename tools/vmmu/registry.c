// SPDX-License-Identifier: MIT
/*
 * The registry: the tables of scenarios and benchmarks registry.h lists,
 * and how to find, list and run their entries.
 */
#include <string.h>

#include "registry.h"

#define TOOL_ENTRY_ADDRESS(entry) &entry,

static const struct tool_entry *const scenarios[] = { TOOL_SCENARIOS(TOOL_ENTRY_ADDRESS) };
static const struct tool_entry *const benches[] = { TOOL_BENCHES(TOOL_ENTRY_ADDRESS) };

#define NR_SCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))
#define NR_BENCHES (sizeof(benches) / sizeof(benches[0]))

static const struct tool_entry *find(const struct tool_entry *const *table, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(table[i]->name, name))
			return table[i];
	return NULL;
}

/* dflt: the entry to mark as the default, or NULL. */
static void list(FILE *f, bool json, const struct tool_entry *const *table, size_t n, const char *dflt)
{
	struct report r;
	size_t i;

	if (json) {
		/* name -> description keeps --json a single flat object */
		report_init(&r);
		for (i = 0; i < n; i++)
			report_str(&r, table[i]->name, table[i]->desc);
		report_print_json(&r, f);
		return;
	}
	for (i = 0; i < n; i++)
		fprintf(f, "  %-10s %s%s\n", table[i]->name, table[i]->desc,
			dflt && !strcmp(table[i]->name, dflt) ? " (default)" : "");
}

/* ------------------------------------------------------------------------ */
/* Scenarios: `vmmu run`                                                     */

const char *scenario_default(void)
{
	return scenarios[0]->name;
}

bool scenario_exists(const char *name)
{
	return find(scenarios, NR_SCENARIOS, name) != NULL;
}

bool scenario_takes_guest(const char *name)
{
	const struct tool_entry *s = find(scenarios, NR_SCENARIOS, name);

	return s && s->guest_paging;
}

void scenario_list(FILE *f, bool json)
{
	list(f, json, scenarios, NR_SCENARIOS, scenario_default());
}

int scenario_run(const char *name, const struct cli_opts *o)
{
	const struct tool_entry *s = find(scenarios, NR_SCENARIOS, name);

	if (!s)
		return cli_usage_error("unknown scenario '%s'", name);
	return s->run(o);
}

/* ------------------------------------------------------------------------ */
/* Benchmarks: `vmmu bench`                                                  */

bool bench_exists(const char *name)
{
	return find(benches, NR_BENCHES, name) != NULL;
}

const char *bench_sweep(const char *name)
{
	const struct tool_entry *b = find(benches, NR_BENCHES, name);

	return b ? b->sweep : NULL;
}

void bench_list_sweeps(char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < NR_BENCHES && at < len; i++)
		if (benches[i]->sweep)
			at += (size_t)snprintf(buf + at, len - at, "%s%s (%s)", at ? ", " : "", benches[i]->name,
					       benches[i]->sweep);
}

void bench_list(FILE *f, bool json)
{
	list(f, json, benches, NR_BENCHES, NULL);
}

int bench_run(const char *name, const struct cli_opts *o)
{
	const struct tool_entry *b = find(benches, NR_BENCHES, name);

	if (!b)
		return cli_usage_error("unknown benchmark '%s'", name);
	return b->run(o);
}
