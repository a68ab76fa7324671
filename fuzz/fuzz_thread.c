/* SPDX-License-Identifier: MIT */
#include "fuzz.h"

void host_thread_start(struct fz *f)
{
	f->threaded = false;
}

void host_thread_stop(struct fz *f)
{
	(void)f;
}
