/* SPDX-License-Identifier: MIT */
#ifndef VMMU_TEST_RACE_WINDOW_H
#define VMMU_TEST_RACE_WINDOW_H
/*
 * What the race tests share: forcing a race window open with the library's
 * test hook (src/test_hook.h), and how long a stress case runs.
 *
 * window_arm(point, arg): the next thread that reaches point with that arg
 * stops there (with whatever locks it holds) until the test has done its
 * part (window_close()), or a timeout passes: the other side may, rightly,
 * block on a lock the stopped thread holds, and then the timeout is what
 * lets both go on.  window_wait_open() waits for a thread to be stopped.
 */
#include <stdbool.h>
#include <stdint.h>

#include "test_hook.h"

void window_arm(enum vmmu_test_hook_point point, uint64_t arg);
/* Whether a thread is stopped in the window within secs. */
bool window_wait_open(double secs);
void window_close(void);
void window_disarm(void);
/* Whether the armed point was reached. */
bool window_hit(void);

/* Seconds per stress case: VMMU_RACE_SECONDS, default 2. */
double race_seconds(void);

#endif /* VMMU_TEST_RACE_WINDOW_H */
