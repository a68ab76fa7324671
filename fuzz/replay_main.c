/* SPDX-License-Identifier: MIT */
/*
 * Runs fuzz_ops.c's entry point over saved inputs, without libFuzzer: every
 * regular file of each directory given (in name order, so runs are
 * reproducible), and every file given directly.  This is how the corpus is a
 * regression test in every build tree, sanitizer trees included.
 *
 *   fuzz_replay fuzz/corpus            # what ctest runs
 *   fuzz_replay crash-1234abcd         # one input, e.g. a libFuzzer finding
 *
 * A finding aborts inside LLVMFuzzerTestOneInput; the line before says which
 * input it was.  A watchdog turns an input that hangs (an access waiting for
 * an invalidation that never ends) into a failure too.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WATCHDOG_SECONDS 120

static const char *current;

static void on_alarm(int sig)
{
	static const char msg[] = "fuzz_replay: input still running after the watchdog's limit: ";

	(void)sig;
	/* write(): async-signal-safe, unlike stdio */
	if (write(2, msg, sizeof(msg) - 1) < 0 || write(2, current, strlen(current)) < 0 || write(2, "\n", 1) < 0)
		_exit(3);
	abort();
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;

	if (!f) {
		perror(path);
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return -1;
	}
	/* An exact-size heap copy, so ASan sees reads past the end of the input. */
	buf = malloc(len ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	current = path;
	fprintf(stderr, "fuzz_replay: %s (%ld bytes)\n", path, len);
	alarm(WATCHDOG_SECONDS);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	alarm(0);
	free(buf);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, unsigned int *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t count = 0, cap = 0;
	int rc = 0;

	if (!d) {
		perror(dir);
		return -1;
	}
	while ((e = readdir(d))) {
		char *p;
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		if (asprintf(&p, "%s/%s", dir, e->d_name) < 0)
			return -1;
		if (stat(p, &st) || !S_ISREG(st.st_mode)) {
			free(p);
			continue;
		}
		if (count == cap) {
			char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));

			if (!nn)
				return -1;
			names = nn;
		}
		names[count++] = p;
	}
	closedir(d);
	qsort(names, count, sizeof(*names), by_name);
	for (size_t i = 0; i < count; i++) {
		if (!rc && run_file(names[i]))
			rc = -1;
		else if (!rc)
			(*n)++;
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	unsigned int n = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR-or-FILE...\n", argv[0]);
		return 2;
	}
	signal(SIGALRM, on_alarm);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st)) {
			perror(argv[i]);
			return 1;
		}
		if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &n) : run_file(argv[i]))
			return 1;
		if (!S_ISDIR(st.st_mode))
			n++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (n == 0) {
		fprintf(stderr, "fuzz_replay: no inputs\n");
		return 1;
	}
	printf("fuzz_replay: %u inputs in %.2f s, no finding\n", n,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
	return 0;
}
