// SPDX-License-Identifier: MIT
/*
 * The registry: which scenarios `vmmu run` and benchmarks `vmmu bench`
 * know, and how to list, find and run them.
 */
#include <string.h>

#include "registry.h"

/* ------------------------------------------------------------------------ */
/* Registry                                                                  */

struct scenario {
	const char *name;
	const char *desc;
	int (*run)(const struct cli_opts *o);
	bool guest_paging;	/* takes --guest */
};

static const struct scenario scenarios[] = {
	{ "demand", "vCPUs fault in disjoint parts of RAM, then reread and verify them",
	  scenario_demand, false },
	{ "paging", "the same with guest paging on: touch through gvas, remap, switch CR3",
	  scenario_paging, true },
};

#define NR_SCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

const char *scenario_default(void)
{
	return "demand";
}

static const struct scenario *scenario_find(const char *name)
{
	size_t i;

	for (i = 0; i < NR_SCENARIOS; i++)
		if (!strcmp(scenarios[i].name, name))
			return &scenarios[i];
	return NULL;
}

bool scenario_exists(const char *name)
{
	return scenario_find(name) != NULL;
}

bool scenario_takes_guest(const char *name)
{
	const struct scenario *s = scenario_find(name);

	return s && s->guest_paging;
}

void scenario_list(FILE *f, bool json)
{
	struct report r;
	size_t i;

	if (json) {
		/* name -> description keeps --json a single flat object */
		report_init(&r);
		for (i = 0; i < NR_SCENARIOS; i++)
			report_str(&r, scenarios[i].name, scenarios[i].desc);
		report_print_json(&r, f);
		return;
	}
	for (i = 0; i < NR_SCENARIOS; i++)
		fprintf(f, "  %-10s %s%s\n", scenarios[i].name, scenarios[i].desc,
			strcmp(scenarios[i].name, scenario_default()) ? "" : " (default)");
}

int scenario_run(const char *name, const struct cli_opts *o)
{
	const struct scenario *s = scenario_find(name);

	if (!s)
		return cli_usage_error("unknown scenario '%s'", name);
	return s->run(o);
}
