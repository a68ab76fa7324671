/* SPDX-License-Identifier: MIT */
#ifndef VMMU_FUZZ_FUZZ_H
#define VMMU_FUZZ_FUZZ_H
/*
 * What the pieces of the operation fuzzer share: the decoding state of one
 * input, the VM under test, the two reference models (model.h: memory,
 * memslots and the host side; gmodel.h: guest paging and the TLB) and the
 * fuzzer's own small "guest OS" that builds page tables with guest stores.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gmodel.h"
#include "model.h"

#define MiB (1ULL << 20)
#define PAGE MODEL_PAGE
#define ARENA_SIZE (12 * MiB)
#define ARENA_PAGES (ARENA_SIZE / PAGE)
#define GPA_SPACE (32 * MiB)
#define MAX_OPS 4000
#define MAX_ACCESS (3 * PAGE)
#define MAX_FRAGS 4		/* pages an access of MAX_ACCESS bytes can touch */

/*
 * Threaded mode: the host thread owns memslot HOST_SLOT, backed by arena
 * [HOST_BUF_OFF, + HOST_BUF_LEN) and placed in gpa [HOST_GPA, + HOST_GPA_LEN),
 * which nothing on the vCPU thread's side creates slots over.
 */
#define HOST_SLOT (MODEL_MAX_SLOTS - 1)
#define HOST_BUF_OFF (10 * MiB + 512 * 1024)
#define HOST_BUF_LEN (1 * MiB)
#define HOST_GPA GPA_SPACE
#define HOST_GPA_LEN (4 * MiB)

struct reader {
	const uint8_t *p;
	size_t n;
};

/* An address space of the guest OS: a root and the paging mode its tables
 * are written for. */
struct gos_as {
	bool used;
	enum gm_mode mode;
	uint64_t root;		/* CR3 without flags (PAE: the 32-byte PDPT) */
};
#define GOS_AS 4
#define GOS_TABLES 48

struct host_thread;

struct fz {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu[GM_VCPUS];
	struct model *m;
	struct gm *g;
	struct reader in;
	uint64_t rng;
	unsigned int op;
	const char *opname;
	/* the configuration */
	bool shadow;
	unsigned int maxphyaddr;
	bool threaded;
	struct host_thread *ht;
	bool host_running;
	/* the guest OS */
	struct gos_as as[GOS_AS];
	uint64_t tables[GOS_TABLES];	/* table pages it made, for reuse and aliases */
	unsigned int ntables;
	/* statistics for VMMU_FUZZ_TRACE */
	unsigned long n_checked, n_stale_used, n_split;
};

extern uint8_t *fz_arena;
extern bool fz_trace;

uint8_t rd8(struct reader *r);
uint16_t rd16(struct reader *r);
uint32_t rd32(struct reader *r);
uint64_t rng_next(struct fz *f);
void __attribute__((noreturn, format(printf, 2, 3))) fz_fail(struct fz *f, const char *fmt, ...);
void __attribute__((format(printf, 2, 3))) fz_log(struct fz *f, const char *fmt, ...);
#define TRACE(f, ...)                            \
	do {                                     \
		if (fz_trace)                    \
			fz_log((f), __VA_ARGS__); \
	} while (0)

/* A gpa for an access of len bytes: mostly in or around a slot. */
uint64_t pick_gpa(struct fz *f, size_t len);
const struct model_slot *pick_used_slot(struct fz *f, uint8_t b, uint32_t *id);

/* ---- fuzz_access.c: one vCPU access, checked against both models -------------- */

struct fz_acc {
	unsigned int vcpu;
	uint64_t addr;
	size_t len;
	unsigned int type;	/* VMMU_ACCESS_READ / WRITE / FETCH */
	bool phys, implicit;
	uint8_t *buf;		/* the data to write, or where a read lands */
};

enum fz_acc_result { FZ_SKIPPED, FZ_DONE, FZ_EXIT, FZ_REFUSED };
enum fz_acc_result fz_access(struct fz *f, const struct fz_acc *a);
/* Empties vCPU v's TLB the guest's way (INVPCID type 2), checked. */
void fz_full_flush(struct fz *f, unsigned int v);

/* ---- fuzz_guest.c: the guest OS and guest-paging operations ------------------- */

void guest_reset(struct fz *f);
void op_guest_access(struct fz *f);
void op_pt_map(struct fz *f);
void op_pte_write(struct fz *f);
void op_as_create(struct fz *f);
void op_as_load(struct fz *f);
void op_invlpg(struct fz *f);
void op_invpcid(struct fz *f);
void op_cr_toggle(struct fz *f);
void op_paging_off(struct fz *f);

/* ---- fuzz_thread.c: the threaded mode ---------------------------------------- */

void host_thread_start(struct fz *f);
void host_thread_stop(struct fz *f);
/* The host slot as version v says (model slot HOST_SLOT, buffer protections). */
void host_install(struct fz *f, unsigned int v);
unsigned int host_installed(const struct fz *f);
/* Around an access: the versions it may observe are [begin's, end's];
 * *stamp gets the epoch of each end. */
unsigned int host_window_begin(struct fz *f, uint64_t *stamp);
unsigned int host_window_end(struct fz *f, uint64_t *stamp);
/* A store reached gpa of the host slot in version v, between two stamps. */
void host_note_write(struct fz *f, unsigned int v, uint64_t gpa, uint64_t s, uint64_t e);
bool host_gpa(uint64_t gpa);
/* Returns once the host thread has done n more operations (or none are left). */
void host_wait(struct fz *f, unsigned int n);
/* One vCPU-side operation done (the host thread is paced by these). */
void host_tick(struct fz *f);

#endif /* VMMU_FUZZ_FUZZ_H */
