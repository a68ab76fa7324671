/* SPDX-License-Identifier: MIT */
/*
 * Guest code of the KVM oracle (kvm_oracle.c copies the bytes between
 * kvm_oracle_guest_start and kvm_oracle_guest_end to KO_CODE).  It is data
 * to the host, so it lives in a read-only data section.  References between
 * its parts are RIP-relative; the parameter and result pages are at fixed low
 * addresses (absolute disp32 operands).
 *
 * The supervisor part and the user part are in different 4K pages: the host
 * maps the first with U=0 and the second with U=1, so SMEP never stops the
 * CPL0 stub and the CPL3 stub is executable at CPL3.
 */
#include "kvm_oracle.h"

	.section .rodata.kvm_oracle_guest, "a"
	.balign 4096
	.globl kvm_oracle_guest_start
kvm_oracle_guest_start:

/*
 * CPL0 entry, one case per KVM_RUN.  The PDE/PTE are written here rather than
 * only by the host: a write through the host mapping bypasses KVM's write
 * tracking of guest page tables, and a shadow MMU would keep translating with
 * the previous case's bits.
 */
	.globl kvm_oracle_guest_entry
kvm_oracle_guest_entry:
	movq KO_P_PDE_ADDR, %rax
	movq KO_P_PDE_VAL, %rbx
	movq %rbx, (%rax)
	movq KO_P_PTE_ADDR, %rax
	testq %rax, %rax
	jz 1f
	movq KO_P_PTE_VAL, %rbx
	movq %rbx, (%rax)
1:	movq KO_P_ADDR, %rdi
	invlpg (%rdi)
	movq %cr3, %rax
	movq %rax, %cr3
	movl KO_P_ACCESS, %esi
	cmpl $KO_ACC_IMPLICIT, %esi
	jb 2f
	/* Descriptor reads come from a GDT copy based 4K below the test page;
	 * it also serves the IRETQ and any exception delivery. */
	lgdt KO_P_GDTR2
2:	cmpq $0, KO_P_USER
	jne to_user
	cmpl $KO_ACC_WRITE, %esi
	je k_write
	cmpl $KO_ACC_FETCH, %esi
	je k_fetch
	cmpl $KO_ACC_IMPLICIT, %esi
	jae k_implicit
	movq (%rdi), %rax
	.globl kvm_oracle_guest_k_done
kvm_oracle_guest_k_done:
	ud2
k_write:
	movq %rax, (%rdi)
	ud2
k_fetch:
	/* The test page holds a UD2 at the test address. */
	jmp *%rdi
k_implicit:
	movw $KO_SEL_IMPLICIT, %ax
	movw %ax, %ds
	ud2

to_user:
	pushq $(KO_SEL_UDATA | 3)
	pushq $KO_USTACK_TOP
	pushq KO_P_USER_RFLAGS
	pushq $(KO_SEL_UCODE | 3)
	leaq kvm_oracle_guest_user(%rip), %rax
	pushq %rax
	iretq

/*
 * Exception stubs, 16 bytes apart so the host can compute the IDT.  Vectors
 * without an error code push a zero to keep one frame layout.
 */
	.balign 16
	.globl kvm_oracle_guest_exc
kvm_oracle_guest_exc:
	.irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.balign 16
	.if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	pushq $0
	.endif
	pushq $\vec
	jmp exc_common
	.endr

exc_common:
	popq %rax
	movq %rax, KO_R_VECTOR
	popq %rax
	movq %rax, KO_R_ERROR
	movq (%rsp), %rax
	movq %rax, KO_R_RIP
	movq 8(%rsp), %rax
	movq %rax, KO_R_CS
	movq %cr2, %rax
	movq %rax, KO_R_CR2
	movq $KO_DONE_MAGIC, KO_R_DONE
3:	hlt
	jmp 3b

/*
 * CPL3 part.  No stack use, so the user stack never matters; the closing UD2
 * is the "no fault" signal (HLT would be #GP at CPL3).
 */
	.balign 4096
	.globl kvm_oracle_guest_user
kvm_oracle_guest_user:
	cmpl $KO_ACC_WRITE, %esi
	je u_write
	cmpl $KO_ACC_FETCH, %esi
	je u_fetch
	cmpl $KO_ACC_IMPLICIT, %esi
	jae u_implicit
	movq (%rdi), %rax
	.globl kvm_oracle_guest_u_done
kvm_oracle_guest_u_done:
	ud2
u_write:
	movq %rax, (%rdi)
	ud2
u_fetch:
	jmp *%rdi
u_implicit:
	movw $(KO_SEL_IMPLICIT | 3), %ax
	movw %ax, %ds
	ud2

	.balign 4096
	.globl kvm_oracle_guest_end
kvm_oracle_guest_end:

	.section .note.GNU-stack, "", @progbits
