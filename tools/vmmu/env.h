/* SPDX-License-Identifier: MIT */
/*
 * The environment the tool's scenarios and benchmarks run in: the VM, its
 * memslots and the vCPU thread crew (env.c, crew.c).
 */
#ifndef VMMU_TOOL_ENV_H
#define VMMU_TOOL_ENV_H

#include <pthread.h>

#include "cli.h"

/* Enough to see a pattern in bad data without flooding the terminal. */
#define ENV_MAX_MISMATCH_REPORTS 8

/* ------------------------------------------------------------------------ */
/* env.c: memory the tool maps itself                                        */

/* Caller memory, aligned to the host page it declares, so that huge host
 * pages allow huge mappings. */
struct env_mem {
	void *raw;
	size_t raw_len;
	uint8_t *base;
};

int env_mem_map(struct env_mem *m, const struct cli_opts *o, uint64_t size);
void env_mem_unmap(struct env_mem *m);

/* ------------------------------------------------------------------------ */
/* env.c: a VM with one memslot of guest RAM and its vCPUs                   */

struct vm_env {
	vmmu_vm *vm;
	vmmu_vcpu **vcpus;
	unsigned nr_vcpus;
	uint64_t mem_bytes;
	const char *failed_call;	/* which vmmu call failed in env_create() */
	struct env_mem own;		/* --embedder-mem: the tool's mapping */
	struct trace *trace;		/* --trace: attached to vm */
};

int env_create(struct vm_env *env, const struct cli_opts *o, unsigned nr_vcpus,
	       uint64_t mem_bytes);
void env_destroy(struct vm_env *env);
/*
 * --trace: stops tracing and writes the file, right after the run read its
 * statistics, so that the two cover the same events.  0 (also without
 * --trace) with the events written in *events, or -1 with err.
 */
int env_trace_finish(struct vm_env *env, const char *label, uint64_t *events, char *err, size_t err_len);
/* The --trace keys of a report: trace_file and trace_events. */
void env_report_trace(struct report *r, const struct cli_opts *o, uint64_t events);
int env_check_bugged(struct vm_env *env, char *err, size_t err_len);
void env_sum_vcpu_stats(struct vm_env *env, struct vmmu_vcpu_stats *sum);
int env_prepopulate(struct vm_env *env, uint64_t seed);

/* Host-side checks of what the guest wrote. */
bool env_verify_result(int rc, uint64_t bad, char *error, size_t len);
int env_verify_token(vmmu_vm *vm, uint64_t gpa, uint64_t seed, uint64_t *bad);
int env_verify_tokens(struct vm_env *env, uint64_t seed, uint64_t *mismatches);
int env_verify_memory(struct vm_env *env, uint64_t seed, const char *what, char *err, size_t err_len);

/* Dirty logging of the env's slot: switched on or off, harvested. */
int env_set_logging(struct vm_env *env, const struct cli_opts *o, bool on);
int env_harvest_all(struct vm_env *env, uint64_t *bm, bool clear, const char *what, uint64_t *get_ns,
		    uint64_t *clear_ns, char *err, size_t err_len);

/* What a first-touch (and retouch) pass measured, per page and in all. */
struct pass_result {
	double first_touch_ns_pp;
	double retouch_ns_pp;
	uint64_t first_touch_ns;
	uint64_t pages;
	struct vmmu_vcpu_stats first_touch_stats;	/* the vCPUs' counters over the first touch */
};

int env_demand_pass(const struct cli_opts *o, unsigned nr_vcpus, uint64_t mem_bytes,
		    bool prepopulate, bool retouch, struct pass_result *pr, char *err,
		    size_t err_len);

/* ------------------------------------------------------------------------ */
/* env.c: VMs of their own, for benchmarks that set them up otherwise        */

#define BARE_VM_MAX_VCPUS	16u

/* A VM with its vCPUs and no slot yet. */
struct bare_vm {
	vmmu_vm *vm;
	vmmu_vcpu *vcpus[BARE_VM_MAX_VCPUS];
	unsigned int n;
};

int bare_vm_create(struct bare_vm *h, const struct cli_opts *o, unsigned int nr_vcpus, char *err, size_t len);
void bare_vm_destroy(struct bare_vm *h);
/* Slot 0 over caller memory at hva, with the host page size o asks for. */
int bare_vm_set_slot(struct bare_vm *h, const struct cli_opts *o, uint8_t *hva, uint64_t size);

/* A one-vCPU shadow-paging VM over a vmmu-allocated slot at gpa 0 (ram: its hva). */
int shadow_vm_create(uint32_t prev_roots, uint64_t slot_bytes, vmmu_vm **vm, vmmu_vcpu **vcpu,
		     uint8_t **ram, char *err, size_t err_len);
bool env_vm_healthy(vmmu_vm *vm, char *err, size_t err_len);

/* ------------------------------------------------------------------------ */
/* l1.c: a guest hypervisor (L1) and its nested guest (L2) on one vCPU       */

#include "guest.h"

/*
 * A vCPU's share [base, base + size) of guest RAM, L1 addresses:
 *   [base, +2M)          L1's tables: its EPT (EPT VMs), or its NPT and its
 *                        own long-mode paging (NPT VMs)
 *   [base + 2M, ...)     L2's memory: L2 gpa g is L1 gpa l2_base + g, mapped
 *                        at 4K for its first 8M, at 2M above
 * L2's memory starts with the tables of its two address spaces, A and B
 * (l2_pt_bytes), then its data pages, which both map at gvas from
 * L1_L2_GVA: A page p on data frame p, B rotated by half (l2_frame()).
 */
#define L1_L1_TABLES	(UINT64_C(2) << 20)
#define L1_L2_GVA	UINT64_C(0x7f0000000000)

struct l1_guest {
	vmmu_vm *vm;
	vmmu_vcpu *vcpu;
	bool npt;
	uint64_t base, size;
	uint64_t l2_base, l2_size;	/* L1 gpa of L2 gpa 0; L2's memory */
	uint64_t l2_pt_bytes;		/* L2's tables at its start */
	uint64_t pages;			/* L2's data pages */
	struct guest_pt *l1pt;		/* NPT VMs: L1's own paging */
	struct guest_pt *ept;		/* L1's EPT or NPT for L2 */
	struct guest_pt *l2pt[2];	/* L2's address spaces */
	int space;			/* the one L2 runs on */
	struct vmmu_nested_state ns;	/* what the next VM entry loads */
};

/* L1's tables for L2 (L1 writes them with its own stores); *what names the
 * step that failed. */
int l1_setup(struct l1_guest *g, vmmu_vm *vm, vmmu_vcpu *vcpu, bool npt, bool five, uint64_t base,
	     uint64_t size, uint16_t vpid, const char **what);
void l1_destroy(struct l1_guest *g);
/* VM entry with L2's state as it left; VM exit saving it. */
int l1_enter(struct l1_guest *g);
int l1_leave(struct l1_guest *g);
/* In L2: its two address spaces by its own stores, then space A loaded. */
int l2_build(struct l1_guest *g, const char **what);
int l2_switch(struct l1_guest *g, int space);
uint64_t l2_gva(const struct l1_guest *g, uint64_t p);
uint64_t l2_data_gpa(const struct l1_guest *g, uint64_t p);
uint64_t l2_frame(const struct l1_guest *g, int space, uint64_t p);
/* The plain reference: the L2 and L1 gpas L2's gva of page p names now,
 * through L2's tables and then L1's (guest_lookup on both). */
int l2_reference(struct l1_guest *g, uint64_t p, uint64_t *l2_gpa, uint64_t *l1_gpa);

/* ------------------------------------------------------------------------ */
/* crew.c: the vCPU crew                                                     */

/*
 * A crew is one thread per vCPU (or per host partition), kept alive across
 * phases so that each vCPU stays on the same thread, released together by a
 * barrier for every phase.
 */
enum crew_op {
	CREW_OP_EXIT,
	CREW_OP_VCPU_WRITE,	/* first touch through vmmu_vcpu_access()   */
	CREW_OP_VCPU_RETOUCH,	/* read + verify + write through the vCPU   */
	CREW_OP_HOST_WRITE,	/* the same, straight through host pointers */
	CREW_OP_HOST_RETOUCH,
	CREW_OP_CALL,		/* crew->call(worker): a scenario's own phase */
};

struct crew;

struct crew_worker {
	pthread_t thread;
	struct crew *crew;
	unsigned idx;
	vmmu_vcpu *vcpu;
	uint64_t begin, end;	/* gpa range [begin, end) of this worker */
	void *ctx;		/* CREW_OP_CALL: the scenario's per-worker state */

	/* results of the last phase */
	uint64_t t_start, t_end;
	uint64_t mismatches;
	uint64_t bad_gpa, bad_expected, bad_got;	/* first mismatch */
	int err;		/* 0, VMMU_EXIT or a negative VMMU_E* */
	uint64_t err_gpa;
	bool err_is_write;
	const char *err_call;	/* set when a call other than an access failed */
	struct vmmu_exit exit;
};

struct crew {
	unsigned n;
	struct crew_worker *w;
	pthread_barrier_t start, done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;		/* 0 starting, 1 running, -1 aborted */
	enum crew_op op;
	uint8_t *host_base;	/* for the host ops: gpa 0 of the mapping */
	uint64_t seed;
	void (*call)(struct crew_worker *w);	/* CREW_OP_CALL */
	const char *addr_name;	/* "gpa", or "gva" once guest paging is on */
};

struct phase_result {
	uint64_t ns;		/* first barrier release to last thread done */
	uint64_t pages;
	uint64_t mismatches;
	unsigned failed;	/* workers that stopped on an error */
	char error[200];	/* the first failure, for the report; "" if none */
};

int crew_start(struct crew *c, unsigned n, vmmu_vcpu **vcpus, uint8_t *host_base,
	       uint64_t mem_bytes, uint64_t seed);
int crew_run(struct crew *c, enum crew_op op, const char *phase, struct phase_result *res);
int crew_run_call(struct crew *c, void (*call)(struct crew_worker *w), const char *phase,
		  struct phase_result *res);
void crew_stop(struct crew *c);
/* What a worker's own phase (CREW_OP_CALL) records when it goes wrong. */
void crew_worker_fail(struct crew_worker *w, int rc, uint64_t gpa, bool is_write,
		      const struct vmmu_exit *exit);
void crew_worker_mismatch(struct crew_worker *w, uint64_t gpa, uint64_t want, uint64_t got);

#endif /* VMMU_TOOL_ENV_H */
