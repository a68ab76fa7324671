/* SPDX-License-Identifier: MIT */
#ifndef VMMU_VM_TRACE_H
#define VMMU_VM_TRACE_H
/*
 * Emitting trace events (vmmu_set_trace(), the kinds in vmmu.h).  An event
 * site costs one relaxed load while tracing is off:
 *
 *	if (unlikely(vm_tracing(vm))) { ...fill ev...; vm_trace(vm, &ev); }
 *
 * Sites that time what they trace read the clock only when vm_tracing() said
 * yes at their start.  vm_trace() may run with mmu_lock held and inside RCU
 * read sections, on any thread: it only calls the embedder's function.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "vm/vmmu_int.h"

static inline bool vm_tracing(struct vmmu_vm *vm)
{
	/* relaxed: vm_trace() loads fn again, with the ordering ctx needs */
	return atomic_load_explicit(&vm->trace_fn, memory_order_relaxed) != NULL;
}

static inline uint64_t vm_trace_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Calls the tracer with ev.  Fills ev->ts_ns when 0 (now), and ev->vcpu_id
 * when it is VMMU_TRACE_NO_VCPU and this thread is driving one of vm's vCPUs
 * (host-side work a vCPU's thread does, such as a flush in its fault).
 */
void vm_trace(struct vmmu_vm *vm, struct vmmu_trace_event *ev);

#endif /* VMMU_VM_TRACE_H */
