/* SPDX-License-Identifier: MIT */
/*
 * The version has one source, vmmu.h: the macros a program compiles against,
 * the string the library returns at run time and what CMake read from the
 * header (VMMU_CMAKE_VERSION / VMMU_CMAKE_ABI_VERSION, passed by
 * tests/CMakeLists.txt; they name the SONAME and vmmu.pc) must all agree.
 * Linked with the shared library: vmmu_version() is part of its ABI.
 */
#include <stdio.h>
#include <string.h>

#include "vmmu/vmmu.h"

/* Usable in #if, which is what the number is for. */
#if !defined(VMMU_VERSION_NUMBER) || VMMU_VERSION_NUMBER < 0
#error "VMMU_VERSION_NUMBER is not a preprocessor number"
#endif
_Static_assert(VMMU_VERSION_MINOR < 100 && VMMU_VERSION_PATCH < 100, "two digits each in VMMU_VERSION_NUMBER");
_Static_assert(VMMU_VERSION_NUMBER == VMMU_VERSION_MAJOR * 10000 + VMMU_VERSION_MINOR * 100 + VMMU_VERSION_PATCH,
	       "VMMU_VERSION_NUMBER");

static int failures;

static void expect_str(const char *what, const char *got, const char *want)
{
	if (strcmp(got, want)) {
		fprintf(stderr, "FAIL %s: \"%s\", want \"%s\"\n", what, got, want);
		failures++;
	}
}

int main(void)
{
	char from_numbers[32];

	snprintf(from_numbers, sizeof(from_numbers), "%d.%d.%d", VMMU_VERSION_MAJOR, VMMU_VERSION_MINOR,
		 VMMU_VERSION_PATCH);
	expect_str("vmmu_version() vs the VMMU_VERSION_* macros", vmmu_version(), from_numbers);
	expect_str("VMMU_VERSION_STRING vs the VMMU_VERSION_* macros", VMMU_VERSION_STRING, from_numbers);
	expect_str("CMake's project version vs the header", VMMU_CMAKE_VERSION, from_numbers);
	if (VMMU_CMAKE_ABI_VERSION != VMMU_ABI_VERSION) {
		fprintf(stderr, "FAIL CMake's ABI version %d, header %d\n", VMMU_CMAKE_ABI_VERSION, VMMU_ABI_VERSION);
		failures++;
	}
	printf("vmmu %s (number %d, ABI %d): %s\n", vmmu_version(), VMMU_VERSION_NUMBER, VMMU_ABI_VERSION,
	       failures ? "FAILED" : "ok");
	return failures != 0;
}
