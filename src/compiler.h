/* SPDX-License-Identifier: MIT */
#ifndef VMMU_COMPILER_H
#define VMMU_COMPILER_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/*
 * The demand-fault path runs between two host page faults, after which the
 * CPU's TLB (and, on some hosts, caches) are cold: every distinct page it
 * touches costs a page walk.  GCC and clang place __hot functions together
 * in .text.hot, so the whole fault path spans as few code pages as possible.
 */
#define __hot __attribute__((hot))
#define __cold __attribute__((cold))

#endif /* VMMU_COMPILER_H */
