/* SPDX-License-Identifier: MIT */
/*
 * `vmmu run --trace FILE`: the MMU's trace events (vmmu_set_trace()) as a
 * Chrome trace-event JSON file, which the Perfetto UI and chrome://tracing
 * open as a timeline: one track per vCPU and one per host thread that
 * caused events (trace.c says what each event becomes).
 *
 * The library calls the tracer on the thread that causes an event, maybe
 * with mmu_lock held: recording appends to a buffer of that thread's own
 * (a lock is taken only the first time a thread records), and nothing is
 * formatted or written until trace_write(), after the run.  It sits at the
 * level of cli.c: it knows the public header only.
 */
#ifndef VMMU_TOOL_TRACE_H
#define VMMU_TOOL_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmmu/vmmu.h>

struct trace;

/* Creates FILE now, so that a bad path fails before the run; 0 or -1 with err. */
int trace_open(struct trace **out, const char *path, char *err, size_t err_len);
/* Records vm's events from now on (one VM at a time). */
void trace_attach(struct trace *t, vmmu_vm *vm);
/* Stops recording vm's events; no vCPU of it may be running. */
void trace_detach(struct trace *t, vmmu_vm *vm);
/*
 * Writes what was recorded and closes the file, once (later calls return
 * the first result): 0 with the number of events in *events, or -1 with
 * err (a full disk, events lost for want of memory).  label names the run
 * in the viewer.  Every thread that recorded must be done (joined).
 */
int trace_write(struct trace *t, const char *label, uint64_t *events, char *err, size_t err_len);
bool trace_written(const struct trace *t);
const char *trace_path(const struct trace *t);
void trace_free(struct trace *t);

#endif /* VMMU_TOOL_TRACE_H */
