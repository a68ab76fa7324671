/* SPDX-License-Identifier: MIT */
/* Forced race windows for the race tests (race_window.h). */
#define _GNU_SOURCE
#include "race_window.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"

struct window {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vmmu_test_hook_point point;
	uint64_t arg;
	bool armed;		/* the hook fires once */
	bool open;		/* the hooked thread is in the window */
	bool done;		/* the other thread finished its part */
	bool hit;
	double wait_s;
};

static struct window win;

static void window_hook(enum vmmu_test_hook_point point, uint64_t arg)
{
	struct timespec ts;

	if (point != win.point)
		return;
	pthread_mutex_lock(&win.lock);
	if (!win.armed || arg != win.arg) {
		pthread_mutex_unlock(&win.lock);
		return;
	}
	win.armed = false;
	win.hit = true;
	win.open = true;
	pthread_cond_broadcast(&win.cond);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)(win.wait_s * 1e9);
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	while (!win.done)
		if (pthread_cond_timedwait(&win.cond, &win.lock, &ts) == ETIMEDOUT)
			break;
	win.open = false;
	pthread_mutex_unlock(&win.lock);
}

void window_arm(enum vmmu_test_hook_point point, uint64_t arg)
{
	pthread_mutex_init(&win.lock, NULL);
	pthread_cond_init(&win.cond, NULL);
	win.point = point;
	win.arg = arg;
	win.armed = true;
	win.open = win.done = win.hit = false;
	win.wait_s = UNDER_SANITIZER ? 1.0 : 0.3;
	vmmu_set_test_hook(window_hook);
}

bool window_wait_open(double secs)
{
	double end = now_s() + secs;
	bool open;

	for (;;) {
		pthread_mutex_lock(&win.lock);
		open = win.open;
		pthread_mutex_unlock(&win.lock);
		if (open || now_s() > end)
			return open;
		sched_yield();
	}
}

void window_close(void)
{
	pthread_mutex_lock(&win.lock);
	win.done = true;
	pthread_cond_broadcast(&win.cond);
	pthread_mutex_unlock(&win.lock);
}

void window_disarm(void)
{
	vmmu_set_test_hook(NULL);
}

bool window_hit(void)
{
	bool hit;

	pthread_mutex_lock(&win.lock);
	hit = win.hit;
	pthread_mutex_unlock(&win.lock);
	return hit;
}

double race_seconds(void)
{
	const char *s = getenv("VMMU_RACE_SECONDS");
	double d = s ? atof(s) : 0;

	return d > 0 ? d : 2.0;
}
