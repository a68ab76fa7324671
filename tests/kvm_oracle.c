/* SPDX-License-Identifier: MIT */
/*
 * KVM oracle: see kvm_oracle.h.  Long-mode setup follows the SDM (Vol. 3A
 * 9.8.5 "Initializing IA-32e Mode"): paging structures, GDT with 64-bit code
 * segments, a 64-bit TSS for the CPL3 -> CPL0 stack switch (RSP0), an IDT of
 * 64-bit interrupt gates; KVM_SET_SREGS loads the resulting state directly
 * instead of walking the guest through the mode switch.
 */
#define _GNU_SOURCE
#include "kvm_oracle.h"

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

extern const unsigned char kvm_oracle_guest_start[], kvm_oracle_guest_end[];
extern const unsigned char kvm_oracle_guest_entry[], kvm_oracle_guest_exc[];
extern const unsigned char kvm_oracle_guest_user[];

#define X86_CR0_PE (1ULL << 0)
#define X86_CR0_ET (1ULL << 4)
#define X86_CR0_NE (1ULL << 5)
#define X86_CR0_WP (1ULL << 16)
#define X86_CR0_PG (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define X86_CR4_OSFXSR (1ULL << 9)
#define X86_CR4_OSXMMEXCPT (1ULL << 10)
#define X86_CR4_SMEP (1ULL << 20)
#define X86_CR4_SMAP (1ULL << 21)
#define X86_CR4_PKE (1ULL << 22)
#define X86_EFER_LME (1ULL << 8)
#define X86_EFER_LMA (1ULL << 10)
#define X86_EFER_NXE (1ULL << 11)
#define X86_RFLAGS_FIXED (1ULL << 1)
#define X86_RFLAGS_AC (1ULL << 18)

#define PTE_INFRA_S (KO_PTE_P | KO_PTE_W | KO_PTE_A | KO_PTE_D)
#define PTE_INFRA_U (PTE_INFRA_S | KO_PTE_U)
/* Upper levels: P W U, A preset so only the case's entries change. */
#define PTE_TABLE (KO_PTE_P | KO_PTE_W | KO_PTE_U | KO_PTE_A)

#define XSTATE_PKRU_BIT 9
#define RUN_TIMEOUT_SEC 5
#define MAX_RUN_EXITS 64

struct kvm_oracle {
	int kvm_fd, vm_fd, vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	unsigned char *mem;
	struct kvm_cpuid2 *cpuid;
	struct kvm_sregs sregs0;	/* as KVM_GET_SREGS returned after creation */
	bool has[KVM_ORACLE_NR_FEATURES];
	bool forced[KVM_ORACLE_NR_FEATURES];	/* set in guest CPUID though KVM doesn't list it */
	const char *feature_why[KVM_ORACLE_NR_FEATURES];
	unsigned int maxphyaddr;
	unsigned int pkru_offset;	/* in the KVM_GET_XSAVE image */
	bool broken;			/* rebuild the VM before the next run */
	bool smap_fetch_quirk;		/* see probe_forced() */
	bool implicit_ok[4];
	const char *implicit_why[4];
	uint64_t run_ns, runs;
	struct sigaction old_alrm;
};

static void set_why(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

static void put64(struct kvm_oracle *o, uint64_t gpa, uint64_t v)
{
	memcpy(o->mem + gpa, &v, 8);
}

static uint64_t get64(const struct kvm_oracle *o, uint64_t gpa)
{
	uint64_t v;

	memcpy(&v, o->mem + gpa, 8);
	return v;
}

static uint64_t guest_sym(const unsigned char *sym)
{
	return KO_CODE + (uint64_t)(sym - kvm_oracle_guest_start);
}

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_oracle *o, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < o->cpuid->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &o->cpuid->entries[i];

		if (e->function == fn && (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == idx))
			return e;
	}
	return NULL;
}

static int get_supported_cpuid(struct kvm_oracle *o, char *why, size_t why_len)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c) {
			set_why(why, why_len, "out of memory");
			return -1;
		}
		c->nent = n;
		if (ioctl(o->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			o->cpuid = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG) {
			set_why(why, why_len, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
			return -1;
		}
	}
	set_why(why, why_len, "KVM_GET_SUPPORTED_CPUID: too many entries");
	return -1;
}

static void probe_features(struct kvm_oracle *o)
{
	const struct kvm_cpuid_entry2 *l7 = cpuid_find(o, 7, 0);
	const struct kvm_cpuid_entry2 *e1 = cpuid_find(o, 0x80000001, 0);
	const struct kvm_cpuid_entry2 *e8 = cpuid_find(o, 0x80000008, 0);
	const struct kvm_cpuid_entry2 *xs = cpuid_find(o, 0xd, XSTATE_PKRU_BIT);
	const struct kvm_cpuid_entry2 *x0 = cpuid_find(o, 0xd, 0);

	/*
	 * SMEP and SMAP only concern supervisor-mode accesses.  A host that
	 * emulates all CPL0 code (kvm_pvm) may leave them out of
	 * KVM_GET_SUPPORTED_CPUID although its emulator's walker honours
	 * them: when the CPU has them, put them in the guest CPUID anyway and
	 * keep them only if probe_forced() sees them take effect.
	 */
	if (l7 && !getenv("KVM_ORACLE_NO_FORCE")) {
		unsigned int a, b, cx, d;

		if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
			struct kvm_cpuid_entry2 *w = (struct kvm_cpuid_entry2 *)l7;

			o->forced[KVM_ORACLE_SMEP] = (b & (1u << 7)) && !(l7->ebx & (1u << 7));
			o->forced[KVM_ORACLE_SMAP] = (b & (1u << 20)) && !(l7->ebx & (1u << 20));
			w->ebx |= b & ((1u << 7) | (1u << 20));
		}
	}
	if (l7) {
		o->has[KVM_ORACLE_SMEP] = l7->ebx & (1u << 7);
		o->has[KVM_ORACLE_SMAP] = l7->ebx & (1u << 20);
		o->has[KVM_ORACLE_PKU] = l7->ecx & (1u << 3);
		o->has[KVM_ORACLE_LA57] = l7->ecx & (1u << 16);
	}
	if (e1) {
		o->has[KVM_ORACLE_NX] = e1->edx & (1u << 20);
		o->has[KVM_ORACLE_1G] = e1->edx & (1u << 26);
	}
	o->maxphyaddr = e8 ? (e8->eax & 0xff) : 36;
	/* PKRU is set through the XSAVE image (KVM_SET_XSAVE) rather than by
	 * WRPKRU in the guest: at CPL0 this host emulates every instruction,
	 * and the emulator has no WRPKRU. */
	if (o->has[KVM_ORACLE_PKU]) {
		if (xs && x0 && (x0->eax & (1u << XSTATE_PKRU_BIT)) && xs->ebx + 4 <= sizeof(struct kvm_xsave))
			o->pkru_offset = xs->ebx;
		else
			o->has[KVM_ORACLE_PKU] = false;
	}
}

const char *kvm_oracle_feature_name(enum kvm_oracle_feature f)
{
	static const char *const names[] = {
		[KVM_ORACLE_SMEP] = "SMEP", [KVM_ORACLE_SMAP] = "SMAP", [KVM_ORACLE_PKU] = "PKU",
		[KVM_ORACLE_NX] = "NX", [KVM_ORACLE_LA57] = "LA57", [KVM_ORACLE_1G] = "1G pages",
	};

	return (unsigned int)f < KVM_ORACLE_NR_FEATURES ? names[f] : "?";
}

bool kvm_oracle_has(const struct kvm_oracle *o, enum kvm_oracle_feature f)
{
	return (unsigned int)f < KVM_ORACLE_NR_FEATURES && o->has[f];
}

bool kvm_oracle_forced(const struct kvm_oracle *o, enum kvm_oracle_feature f)
{
	return (unsigned int)f < KVM_ORACLE_NR_FEATURES && o->has[f] && o->forced[f];
}

const char *kvm_oracle_feature_why(const struct kvm_oracle *o, enum kvm_oracle_feature f)
{
	if ((unsigned int)f >= KVM_ORACLE_NR_FEATURES)
		return "unknown feature";
	if (o->feature_why[f])
		return o->feature_why[f];
	return o->has[f] ? "offered by KVM" : "not in KVM_GET_SUPPORTED_CPUID";
}

unsigned int kvm_oracle_maxphyaddr(const struct kvm_oracle *o)
{
	return o->maxphyaddr;
}

const void *kvm_oracle_mem(const struct kvm_oracle *o)
{
	return o->mem;
}

void kvm_oracle_stats(const struct kvm_oracle *o, uint64_t *run_ns, uint64_t *runs)
{
	*run_ns = o->run_ns;
	*runs = o->runs;
}

bool kvm_oracle_implicit_ok(const struct kvm_oracle *o, unsigned int cpl, const char **why)
{
	cpl &= 3;
	if (why)
		*why = o->implicit_why[cpl] ? o->implicit_why[cpl] : "not probed";
	return o->implicit_ok[cpl];
}

/* ---- guest memory image ---------------------------------------------------- */

static uint64_t seg_desc(uint8_t access, uint8_t flags)
{
	/* base 0, limit 0xfffff (G=1): only L, D/B, DPL, type matter in long mode */
	return 0xffffULL | ((uint64_t)access << 40) | (0xfULL << 48) | ((uint64_t)flags << 52);
}

static void write_gdt(struct kvm_oracle *o, uint64_t gpa)
{
	uint64_t tss_lo = 0x67 | ((uint64_t)(KO_TSS & 0xffffff) << 16) | (0x8bULL << 40) |
			  ((uint64_t)((KO_TSS >> 24) & 0xff) << 56);

	put64(o, gpa + 0x00, 0);
	put64(o, gpa + KO_SEL_KCODE, seg_desc(0x9b, 0xa));	/* P, DPL0, code RX-A; L=1, G=1 */
	put64(o, gpa + KO_SEL_KDATA, seg_desc(0x93, 0xc));	/* P, DPL0, data RW-A; D/B, G */
	put64(o, gpa + KO_SEL_UDATA, seg_desc(0xf3, 0xc));
	put64(o, gpa + KO_SEL_UCODE, seg_desc(0xfb, 0xa));
	put64(o, gpa + KO_SEL_TSS, tss_lo);			/* busy 64-bit TSS */
	put64(o, gpa + KO_SEL_TSS + 8, (uint64_t)KO_TSS >> 32);
}

static void build_image(struct kvm_oracle *o)
{
	size_t code_len = (size_t)(kvm_oracle_guest_end - kvm_oracle_guest_start);
	uint64_t user_off = (uint64_t)(kvm_oracle_guest_user - kvm_oracle_guest_start);

	memset(o->mem, 0, 0x200000);
	memcpy(o->mem + KO_CODE, kvm_oracle_guest_start, code_len);

	write_gdt(o, KO_GDT);
	write_gdt(o, KO_GDT2);
	for (unsigned int v = 0; v < 32; v++) {
		uint64_t h = guest_sym(kvm_oracle_guest_exc) + 16 * v;
		uint64_t lo = (h & 0xffff) | ((uint64_t)KO_SEL_KCODE << 16) | (0x8eULL << 40) |
			      ((h >> 16 & 0xffff) << 48);

		put64(o, KO_IDT + 16 * v, lo);
		put64(o, KO_IDT + 16 * v + 8, h >> 32);
	}
	put64(o, KO_TSS + 4, KO_KSTACK_TOP);		/* RSP0 */
	memcpy(o->mem + KO_TSS + 102, &(uint16_t){ 104 }, 2);	/* no I/O bitmap */

	put64(o, KO_PML4, KO_PDPT | PTE_TABLE);
	put64(o, KO_PDPT + 0 * 8, KO_PD_INFRA | PTE_TABLE);
	put64(o, KO_PDPT + 1 * 8, KO_PD_TEST | PTE_TABLE);
	put64(o, KO_PD_INFRA, KO_PT_INFRA | PTE_TABLE);
	for (uint64_t gpa = 0x1000; gpa < KO_CODE + KO_CODE_MAX; gpa += 0x1000) {
		uint64_t flags = PTE_INFRA_S;

		if (gpa == KO_USTACK_TOP - 0x1000 || (gpa >= KO_CODE + user_off && gpa < KO_CODE + code_len))
			flags = PTE_INFRA_U;
		put64(o, KO_PT_INFRA + (gpa >> 12) * 8, gpa | flags);
	}
	put64(o, KO_PD_TEST + 0 * 8, KO_PT_GDT2 | PTE_TABLE);
	put64(o, KO_PT_GDT2 + 511 * 8, KO_GDT2 | PTE_INFRA_S);

	/* LGDT operand: limit, then base; selector KO_SEL_IMPLICIT must fit. */
	memcpy(o->mem + KO_P_GDTR2, &(uint16_t){ 0x1fff }, 2);
	put64(o, KO_P_GDTR2 + 2, KO_TEST_GVA - 0x1000);
}

static void seg_set(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->limit = 0xffffffff;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->g = 1;
	s->l = code;
	s->db = !code;
}

/* ---- VM lifetime ---------------------------------------------------------- */

static void vm_destroy(struct kvm_oracle *o)
{
	if (o->run && o->run != MAP_FAILED)
		munmap(o->run, o->run_size);
	o->run = NULL;
	if (o->mem && o->mem != MAP_FAILED)
		munmap(o->mem, KO_MEM_SIZE);
	o->mem = NULL;
	if (o->vcpu_fd >= 0)
		close(o->vcpu_fd);
	if (o->vm_fd >= 0)
		close(o->vm_fd);
	o->vcpu_fd = o->vm_fd = -1;
}

static int vm_create(struct kvm_oracle *o, char *why, size_t why_len)
{
	struct kvm_userspace_memory_region region;
	int sz;

	o->vm_fd = ioctl(o->kvm_fd, KVM_CREATE_VM, 0);
	if (o->vm_fd < 0) {
		set_why(why, why_len, "KVM_CREATE_VM: %s", strerror(errno));
		return -1;
	}
	o->mem = mmap(NULL, KO_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (o->mem == MAP_FAILED) {
		o->mem = NULL;
		set_why(why, why_len, "mmap guest memory: %s", strerror(errno));
		return -1;
	}
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = KO_MEM_SIZE, .userspace_addr = (uintptr_t)o->mem,
	};
	if (ioctl(o->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		set_why(why, why_len, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
		return -1;
	}
	o->vcpu_fd = ioctl(o->vm_fd, KVM_CREATE_VCPU, 0);
	if (o->vcpu_fd < 0) {
		set_why(why, why_len, "KVM_CREATE_VCPU: %s", strerror(errno));
		return -1;
	}
	sz = ioctl(o->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz < (int)sizeof(struct kvm_run)) {
		set_why(why, why_len, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		return -1;
	}
	o->run_size = (size_t)sz;
	o->run = mmap(NULL, o->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, o->vcpu_fd, 0);
	if (o->run == MAP_FAILED) {
		o->run = NULL;
		set_why(why, why_len, "mmap kvm_run: %s", strerror(errno));
		return -1;
	}
	if (ioctl(o->vcpu_fd, KVM_SET_CPUID2, o->cpuid) < 0) {
		set_why(why, why_len, "KVM_SET_CPUID2: %s", strerror(errno));
		return -1;
	}
	if (ioctl(o->vcpu_fd, KVM_GET_SREGS, &o->sregs0) < 0) {
		set_why(why, why_len, "KVM_GET_SREGS: %s", strerror(errno));
		return -1;
	}
	build_image(o);
	o->broken = false;
	return 0;
}

/* SIGALRM only interrupts a KVM_RUN that takes too long (EINTR). */
static void alrm_handler(int sig)
{
	(void)sig;
}

void kvm_oracle_close(struct kvm_oracle *o)
{
	if (!o)
		return;
	vm_destroy(o);
	if (o->kvm_fd >= 0)
		close(o->kvm_fd);
	sigaction(SIGALRM, &o->old_alrm, NULL);
	free(o->cpuid);
	free(o);
}

static void probe_implicit(struct kvm_oracle *o);
static void probe_forced(struct kvm_oracle *o);

int kvm_oracle_open(struct kvm_oracle **out, char *why, size_t why_len)
{
	struct kvm_oracle *o = calloc(1, sizeof(*o));
	struct sigaction sa;
	int v;

	*out = NULL;
	if (!o) {
		set_why(why, why_len, "out of memory");
		return -1;
	}
	o->kvm_fd = o->vm_fd = o->vcpu_fd = -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = alrm_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, &o->old_alrm);

	o->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (o->kvm_fd < 0) {
		set_why(why, why_len, "open /dev/kvm: %s", strerror(errno));
		goto fail;
	}
	v = ioctl(o->kvm_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		set_why(why, why_len, "KVM API version %d, want %d", v, KVM_API_VERSION);
		goto fail;
	}
	if (ioctl(o->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0) {
		set_why(why, why_len, "KVM lacks KVM_CAP_USER_MEMORY");
		goto fail;
	}
	if (get_supported_cpuid(o, why, why_len) < 0)
		goto fail;
	probe_features(o);
	if (vm_create(o, why, why_len) < 0)
		goto fail;
	probe_forced(o);
	probe_implicit(o);
	*out = o;
	return 0;
fail:
	kvm_oracle_close(o);
	return -1;
}

/* ---- running a case ---------------------------------------------------------- */

void kvm_oracle_case_tables(const struct kvm_oracle *o, const struct kvm_oracle_case *c, struct kvm_oracle_tables *t)
{
	uint64_t pk = (uint64_t)(c->pkey & 15) << 59;

	(void)o;
	memset(t, 0, sizeof(*t));
	t->cr3 = KO_PML4;
	t->gva = KO_TEST_GVA;
	t->pde_gpa = KO_PD_TEST + 1 * 8;
	if (c->leaf == 2) {
		t->pde = KO_FRAME_2M | (c->pde_flags & KO_PTE_FLAGS) | KO_PTE_PS | pk | c->pde_extra;
	} else {
		t->pde = KO_PT_TEST | (c->pde_flags & KO_PTE_FLAGS) | c->pde_extra;
		t->pte_gpa = KO_PT_TEST;
		t->pte = KO_FRAME_4K | (c->pte_flags & KO_PTE_FLAGS) | pk | c->pte_extra;
	}
}

static int set_pkru(struct kvm_oracle *o, uint32_t pkru, struct kvm_oracle_result *r)
{
	struct kvm_xsave xs;
	uint64_t bv;

	if (ioctl(o->vcpu_fd, KVM_GET_XSAVE, &xs) < 0) {
		set_why(r->why, sizeof(r->why), "KVM_GET_XSAVE: %s", strerror(errno));
		return -1;
	}
	/* Uncompacted image: XSTATE_BV at byte 512 of the header. */
	memcpy(&bv, (char *)xs.region + 512, 8);
	bv |= 1ULL << XSTATE_PKRU_BIT;
	memcpy((char *)xs.region + 512, &bv, 8);
	memcpy((char *)xs.region + o->pkru_offset, &pkru, 4);
	if (ioctl(o->vcpu_fd, KVM_SET_XSAVE, &xs) < 0) {
		set_why(r->why, sizeof(r->why), "KVM_SET_XSAVE: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* KVM_RUN until the guest halts; anything else is an oracle error. */
static int run_until_hlt(struct kvm_oracle *o, struct kvm_oracle_result *r)
{
	struct itimerval it = { .it_value = { .tv_sec = RUN_TIMEOUT_SEC } }, off = { 0 };

	for (int i = 0; i < MAX_RUN_EXITS; i++) {
		uint64_t t0 = now_ns();
		int rc, err;

		setitimer(ITIMER_REAL, &it, NULL);
		rc = ioctl(o->vcpu_fd, KVM_RUN, 0);
		err = errno;
		setitimer(ITIMER_REAL, &off, NULL);
		o->run_ns += now_ns() - t0;
		o->runs++;
		if (rc < 0) {
			if (err == EINTR)
				set_why(r->why, sizeof(r->why), "KVM_RUN timed out after %d s", RUN_TIMEOUT_SEC);
			else
				set_why(r->why, sizeof(r->why), "KVM_RUN: %s", strerror(err));
			return -1;
		}
		switch (o->run->exit_reason) {
		case KVM_EXIT_HLT:
			return 0;
		case KVM_EXIT_INTR:
			continue;
		case KVM_EXIT_SHUTDOWN:
			set_why(r->why, sizeof(r->why), "triple fault (KVM_EXIT_SHUTDOWN)");
			return -1;
		case KVM_EXIT_INTERNAL_ERROR:
			set_why(r->why, sizeof(r->why), "KVM internal error, suberror %u",
				o->run->internal.suberror);
			return -1;
		case KVM_EXIT_FAIL_ENTRY:
			set_why(r->why, sizeof(r->why), "VM entry failed, reason %#llx",
				(unsigned long long)o->run->fail_entry.hardware_entry_failure_reason);
			return -1;
		case KVM_EXIT_MMIO:
			set_why(r->why, sizeof(r->why), "MMIO exit at gpa %#llx",
				(unsigned long long)o->run->mmio.phys_addr);
			return -1;
		default:
			set_why(r->why, sizeof(r->why), "unexpected KVM exit %u", o->run->exit_reason);
			return -1;
		}
	}
	set_why(r->why, sizeof(r->why), "no HLT after %d KVM exits", MAX_RUN_EXITS);
	return -1;
}

int kvm_oracle_run(struct kvm_oracle *o, const struct kvm_oracle_case *c, struct kvm_oracle_result *r)
{
	struct kvm_oracle_tables t;
	struct kvm_sregs s;
	struct kvm_regs regs;
	uint64_t frame, vector, done;
	static const struct {
		enum kvm_oracle_feature f;
		const char *what;
	} needs[] = {
		{ KVM_ORACLE_SMEP, "CR4.SMEP" }, { KVM_ORACLE_SMAP, "CR4.SMAP" },
		{ KVM_ORACLE_PKU, "CR4.PKE" }, { KVM_ORACLE_NX, "EFER.NXE" },
	};
	const bool wants[] = { c->smep, c->smap, c->pke, c->nxe };

	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
		if (wants[i] && !o->has[needs[i].f]) {
			set_why(r->why, sizeof(r->why), "%s: %s %s", needs[i].what,
				kvm_oracle_feature_name(needs[i].f), kvm_oracle_feature_why(o, needs[i].f));
			return KVM_ORACLE_NOT_JUDGED;
		}
	}
	if (o->smap_fetch_quirk && c->smap && !c->smep && !c->ac && c->cpl == 0 && c->access == KVM_ORACLE_FETCH) {
		set_why(r->why, sizeof(r->why),
			"CPL0 fetch with SMAP, AC=0, SMEP=0: this host applies SMAP to emulated instruction fetches");
		return KVM_ORACLE_NOT_JUDGED;
	}
	if ((c->access == KVM_ORACLE_IMPLICIT || c->access == KVM_ORACLE_IMPLICIT_WRITE) && !o->implicit_ok[c->cpl & 3]) {
		set_why(r->why, sizeof(r->why), "implicit access at CPL%u: %s", c->cpl,
			o->implicit_why[c->cpl & 3] ? o->implicit_why[c->cpl & 3] : "not probed");
		return KVM_ORACLE_NOT_JUDGED;
	}
	if ((c->leaf != 1 && c->leaf != 2) || (c->cpl != 0 && c->cpl != 3) || (unsigned int)c->access > KO_ACC_IMPLICIT_WRITE) {
		set_why(r->why, sizeof(r->why), "unsupported case shape");
		return KVM_ORACLE_NOT_JUDGED;
	}
	if (o->broken) {
		vm_destroy(o);
		if (vm_create(o, r->why, sizeof(r->why)) < 0) {
			o->broken = true;
			return -1;
		}
	}

	kvm_oracle_case_tables(o, c, &t);
	/* Written here as well as by the guest stub: the stub's identical
	 * rewrite is what KVM's write tracking sees, this one keeps guest
	 * memory consistent with the case even if the run dies early. */
	put64(o, t.pde_gpa, t.pde);
	if (t.pte_gpa)
		put64(o, t.pte_gpa, t.pte);
	r->pde_before = t.pde;
	r->pte_before = t.pte;
	put64(o, KO_P_PDE_ADDR, t.pde_gpa);
	put64(o, KO_P_PDE_VAL, t.pde);
	put64(o, KO_P_PTE_ADDR, t.pte_gpa);
	put64(o, KO_P_PTE_VAL, t.pte);
	put64(o, KO_P_ADDR, t.gva);
	put64(o, KO_P_ACCESS, (uint64_t)c->access);
	put64(o, KO_P_USER, c->cpl == 3);
	put64(o, KO_P_USER_RFLAGS, X86_RFLAGS_FIXED | (c->ac ? X86_RFLAGS_AC : 0));
	memset(o->mem + KO_RESULTS, 0, 0x100);

	/* Test page contents: UD2 at the test address for a fetch; for the
	 * implicit accesses the DPL3 data descriptor the segment load reads,
	 * with its accessed bit preset (read only) or clear (the CPU writes it
	 * back). */
	frame = c->leaf == 2 ? KO_FRAME_2M + (t.gva & 0x1fffff) : KO_FRAME_4K + (t.gva & 0xfff);
	if (c->access == KVM_ORACLE_IMPLICIT)
		put64(o, frame, seg_desc(0xf3, 0xc));
	else if (c->access == KVM_ORACLE_IMPLICIT_WRITE)
		put64(o, frame, seg_desc(0xf2, 0xc));
	else
		put64(o, frame, 0x0b0f);

	s = o->sregs0;
	seg_set(&s.cs, KO_SEL_KCODE, 11, true);
	seg_set(&s.ds, KO_SEL_KDATA, 3, false);
	s.es = s.fs = s.gs = s.ss = s.ds;
	memset(&s.tr, 0, sizeof(s.tr));
	s.tr.base = KO_TSS;
	s.tr.limit = 0x67;
	s.tr.selector = KO_SEL_TSS;
	s.tr.type = 11;
	s.tr.present = 1;
	memset(&s.ldt, 0, sizeof(s.ldt));
	s.ldt.type = 2;
	s.ldt.unusable = 1;
	s.gdt.base = KO_GDT;
	s.gdt.limit = KO_SEL_TSS + 15;
	s.idt.base = KO_IDT;
	s.idt.limit = 32 * 16 - 1;
	s.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG | (c->wp ? X86_CR0_WP : 0);
	s.cr3 = t.cr3;
	s.cr4 = X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT | (c->smep ? X86_CR4_SMEP : 0) |
		(c->smap ? X86_CR4_SMAP : 0) | (c->pke ? X86_CR4_PKE : 0);
	s.efer = X86_EFER_LME | X86_EFER_LMA | (c->nxe ? X86_EFER_NXE : 0);
	s.cr2 = 0;
	if (ioctl(o->vcpu_fd, KVM_SET_SREGS, &s) < 0) {
		set_why(r->why, sizeof(r->why), "KVM_SET_SREGS: %s", strerror(errno));
		o->broken = true;
		return -1;
	}
	if (c->pke && set_pkru(o, c->pkru, r) < 0) {
		o->broken = true;
		return -1;
	}
	memset(&regs, 0, sizeof(regs));
	regs.rip = guest_sym(kvm_oracle_guest_entry);
	regs.rsp = KO_KSTACK_TOP;
	regs.rflags = X86_RFLAGS_FIXED | (c->ac ? X86_RFLAGS_AC : 0);
	if (ioctl(o->vcpu_fd, KVM_SET_REGS, &regs) < 0) {
		set_why(r->why, sizeof(r->why), "KVM_SET_REGS: %s", strerror(errno));
		o->broken = true;
		return -1;
	}
	if (run_until_hlt(o, r) < 0) {
		o->broken = true;
		return -1;
	}

	done = get64(o, KO_R_DONE);
	vector = get64(o, KO_R_VECTOR);
	r->error_code = (uint32_t)get64(o, KO_R_ERROR);
	r->rip = get64(o, KO_R_RIP);
	r->cr2 = get64(o, KO_R_CR2);
	r->pde_after = get64(o, t.pde_gpa);
	r->pte_after = t.pte_gpa ? get64(o, t.pte_gpa) : 0;
	if (done != KO_DONE_MAGIC) {
		if (ioctl(o->vcpu_fd, KVM_GET_REGS, &regs) < 0)
			regs.rip = ~0ULL;
		set_why(r->why, sizeof(r->why), "guest halted without a result (rip %#llx)",
			(unsigned long long)regs.rip);
		o->broken = true;
		return -1;
	}
	r->vector = (uint8_t)vector;
	if (vector == 6) {
		/* The closing UD2: the access completed.  A fetch lands on the
		 * test page's UD2; anything else on one of the stubs' UD2s. */
		bool ok = c->access == KVM_ORACLE_FETCH
				  ? r->rip == t.gva
				  : r->rip >= KO_CODE && r->rip < KO_CODE + (uint64_t)(kvm_oracle_guest_end - kvm_oracle_guest_start);
		if (!ok) {
			set_why(r->why, sizeof(r->why), "#UD at unexpected rip %#llx", (unsigned long long)r->rip);
			return -1;
		}
		r->faulted = false;
		r->error_code = 0;
		r->cr2 = 0;
		return 0;
	}
	if (vector == 14 || vector == 13) {
		r->faulted = true;
		if (vector == 14 && r->cr2 != t.gva) {
			set_why(r->why, sizeof(r->why), "#PF at cr2 %#llx rip %#llx err %#x, not at the test address",
				(unsigned long long)r->cr2, (unsigned long long)r->rip, r->error_code);
			return -1;
		}
		return 0;
	}
	set_why(r->why, sizeof(r->why), "unexpected vector %llu (err %#x rip %#llx cr2 %#llx)", (unsigned long long)vector,
		r->error_code, (unsigned long long)r->rip, (unsigned long long)r->cr2);
	return -1;
}

/*
 * Implicit accesses are judged only where the mechanism demonstrably goes
 * through the guest's paging: a descriptor read from a not-present page must
 * #PF at the test address.  (A host that runs CPL3 natively with its own
 * descriptor tables would read something else entirely.)
 */
static void probe_implicit(struct kvm_oracle *o)
{
	for (unsigned int cpl = 0; cpl < 4; cpl += 3) {
		struct kvm_oracle_case c = {
			.leaf = 1, .pde_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U, .pte_flags = KO_PTE_W | KO_PTE_U,
			.wp = true, .cpl = cpl, .access = KVM_ORACLE_IMPLICIT,
		};
		struct kvm_oracle_result r;

		o->implicit_ok[cpl] = true;
		if (kvm_oracle_run(o, &c, &r) != 0) {
			o->implicit_why[cpl] = "the probe run failed";
			o->implicit_ok[cpl] = false;
		} else if (!r.faulted || r.vector != 14) {
			o->implicit_why[cpl] = "a descriptor read from a not-present page did not #PF";
			o->implicit_ok[cpl] = false;
		} else {
			o->implicit_why[cpl] = "ok";
		}
	}
}

/*
 * A forced feature is kept only if it demonstrably takes effect: SMEP must
 * stop a CPL0 fetch from a user page, SMAP a CPL0 read of one (AC=0).  This
 * checks that the CR4 bit is live, not the finer rules the test compares.
 *
 * One known artefact is probed for: SMAP does not apply to instruction
 * fetches (SDM 4.6.1; KVM's permission bitmask exempts PFERR_FETCH too), yet
 * kvm_pvm's emulation of CPL0 code faults a fetch from a user page when SMAP
 * is on and AC is clear (after a successful walk: the A bits are set).  The
 * outcome then depends on the host's emulator, not on paging, so such cases
 * are not judged.  With SMEP also on, the fetch faults architecturally with
 * the same error code, so only SMEP=0 is affected.
 */
static void probe_forced(struct kvm_oracle *o)
{
	static const struct {
		enum kvm_oracle_feature f;
		struct kvm_oracle_case c;
	} probes[] = {
		{ KVM_ORACLE_SMEP, { .leaf = 1, .pde_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U,
				     .pte_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U, .smep = true,
				     .access = KVM_ORACLE_FETCH } },
		{ KVM_ORACLE_SMAP, { .leaf = 1, .pde_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U,
				     .pte_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U, .smap = true,
				     .access = KVM_ORACLE_READ } },
	};

	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		struct kvm_oracle_result r;
		enum kvm_oracle_feature f = probes[i].f;
		int rc;

		if (!o->forced[f] || !o->has[f])
			continue;
		rc = kvm_oracle_run(o, &probes[i].c, &r);
		if (rc != 0) {
			o->has[f] = false;
			o->feature_why[f] = "not offered by KVM; forcing it into the guest CPUID failed";
		} else if (!r.faulted || r.vector != 14) {
			o->has[f] = false;
			o->feature_why[f] = "not offered by KVM; forced into the guest CPUID it had no effect";
		} else {
			o->feature_why[f] = "not offered by KVM, forced into the guest CPUID (the host CPU has it)";
		}
	}
	if (o->has[KVM_ORACLE_SMAP]) {
		struct kvm_oracle_case c = {
			.leaf = 1, .pde_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U,
			.pte_flags = KO_PTE_P | KO_PTE_W | KO_PTE_U, .smap = true, .access = KVM_ORACLE_FETCH,
		};
		struct kvm_oracle_result r;

		o->smap_fetch_quirk = kvm_oracle_run(o, &c, &r) != 0 || r.faulted;
	}
}
