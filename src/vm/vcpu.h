/* SPDX-License-Identifier: MIT */
#ifndef VMMU_VCPU_H
#define VMMU_VCPU_H

#include "vm/vmmu_int.h"

void vcpu_free(struct vmmu_vcpu *v);
/* The reset state: flat 32-bit protected mode, paging off. */
void vcpu_init_state(struct vmmu_vcpu *v);

#endif /* VMMU_VCPU_H */
