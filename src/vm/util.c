/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_hook.h"
#include "vm/vmmu_int.h"

VMMU_EXPORT const char *vmmu_strerror(int err)
{
	switch (err) {
	case VMMU_OK: return "success";
	case VMMU_EPERM: return "operation not permitted in this state";
	case VMMU_ENOENT: return "no such memslot or object";
	case VMMU_EIO: return "VM is bugged: an internal invariant broke";
	case VMMU_EAGAIN: return "resource temporarily unavailable";
	case VMMU_ENOMEM: return "out of memory";
	case VMMU_EFAULT: return "host memory unusable (unmapped or not writable)";
	case VMMU_EBUSY: return "object busy";
	case VMMU_EEXIST: return "overlaps an existing memslot or id in use";
	case VMMU_EINVAL: return "invalid argument";
	case VMMU_ENOSPC: return "no space left in a fixed-size table";
	case VMMU_ERANGE: return "address out of range";
	case VMMU_ENOTSUP: return "not supported";
	case VMMU_EXIT: return "the vCPU exited: struct vmmu_exit says why";
	default: return "unknown error";
	}
}

VMMU_EXPORT const char *vmmu_version(void)
{
	return VMMU_VERSION_STRING;
}

void vm_bug(struct vmmu_vm *vm, const char *file, int line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int expected = 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Reported once per VM; later breaks are consequences of the first. */
	if (!atomic_compare_exchange_strong(&vm->bugged, &expected, 2))
		return;
	vm->bug_reason = strdup(msg);
	atomic_store(&vm->bugged, 1);
	fprintf(stderr, "vmmu: VM bugged at %s:%d: %s\n", file, line, msg);
}

VMMU_EXPORT int vmmu_vm_bugged(vmmu_vm *vm, const char **why)
{
	int b;

	if (!vm) {
		if (why)
			*why = NULL;
		return VMMU_EINVAL;
	}
	b = atomic_load(&vm->bugged);

	if (why)
		*why = b == 1 ? vm->bug_reason : NULL;
	return b != 0;
}

int vmmu_abi_check(const void *p, uint32_t struct_size, size_t size)
{
	if (struct_size == 0 || struct_size == size)
		return 0;
	if (struct_size < size)
		return VMMU_EINVAL;
	/* A newer caller's struct: fine as long as it asks for nothing new. */
	for (size_t i = size; i < struct_size; i++)
		if (((const unsigned char *)p)[i])
			return VMMU_ENOTSUP;
	return 0;
}

/* ---- RCU ------------------------------------------------------------------ */

static pthread_key_t rcu_key;
static pthread_once_t rcu_once = PTHREAD_ONCE_INIT;
__thread bool vmmu_rcu_registered;
#ifdef VMMU_TSAN
char vmmu_rcu_tsan_sync;
#endif

static void rcu_thread_exit(void *arg)
{
	(void)arg;
	if (vmmu_rcu_registered) {
		urcu_memb_unregister_thread();
		vmmu_rcu_registered = false;
	}
}

/*
 * fork(): liburcu's call_rcu worker threads do not exist in a child, so the
 * child's first rcu_barrier() (every vmmu_vm_destroy) or callback would wait
 * forever.  liburcu's own hooks pause the workers around the fork and give
 * the child a new default worker, which inherits the queued callbacks.
 * (liburcu-memb 0.13 has no urcu_memb_before_fork() for the grace-period
 * state itself, unlike urcu-bp: a child inherits the reader registry as it
 * was, which is fine when no other thread was inside vmmu at the fork --
 * the rule vmmu.h states.)
 */
static void rcu_key_init(void)
{
	pthread_key_create(&rcu_key, rcu_thread_exit);
	pthread_atfork(urcu_memb_call_rcu_before_fork, urcu_memb_call_rcu_after_fork_parent,
		       urcu_memb_call_rcu_after_fork_child);
}

void vmmu_rcu_thread_register(void)
{
	pthread_once(&rcu_once, rcu_key_init);
	urcu_memb_register_thread();
	vmmu_rcu_registered = true;
	/* Non-NULL so the destructor runs when the embedder's thread exits. */
	pthread_setspecific(rcu_key, (void *)1);
}

_Atomic(vmmu_test_hook_fn) vmmu_test_hook_fn_ptr;

void vmmu_set_test_hook(vmmu_test_hook_fn fn)
{
	atomic_store_explicit(&vmmu_test_hook_fn_ptr, fn, memory_order_release);
}
