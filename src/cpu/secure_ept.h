/* SPDX-License-Identifier: MIT */
#ifndef VMMU_CPU_SECURE_EPT_H
#define VMMU_CPU_SECURE_EPT_H
/*
 * The simulated security module (Intel's TDX module; AMD's SEV-SNP firmware
 * plays the same part): it owns the real private page table, the "secure
 * EPT", which the hardware model walks for private gpas.  Nothing else
 * writes it.  The MMU keeps a mirror of it in ordinary memory and asks the
 * module for every change through these entry points, each named after the
 * SEAMCALL it stands for.  The module checks TDX's rules and refuses, with
 * VMMU_EPERM and a counted violation, anything that breaks them:
 *
 *  - a leaf or a table only under a linked table (no orphan entries);
 *  - no double map: an entry is mapped or linked once until removed;
 *  - no page mapped twice: the module's PAMT (its Physical Address Metadata
 *    Table) knows which host pages are mapped, and at which size;
 *  - private leaves are RWX, 4K or 2M: no read-only or execute-only leaf,
 *    so no write protection (dirty logging) and no A/D harvesting either
 *    (leaves are made with A and D set, and a request to re-map a present
 *    leaf without W or without A/D is counted as such);
 *  - a leaf is removed only after it was blocked (the hardware no longer
 *    uses the entry for new translations) and a TLB track completed since;
 *  - a huge leaf becomes a table of smaller leaves only through demotion,
 *    itself after block and track;
 *  - a table goes only when it maps nothing, or at TD teardown.
 *
 * Concurrency: the module's own mutex serializes its calls (the real module
 * takes per-resource locks and answers BUSY; vmmu's callers never need that).
 * The hardware walks the table without locks, so every entry is changed by
 * one atomic store, a table is linked only once filled (release), and an
 * unlinked table is freed after an RCU grace period that its caller's read
 * section (which spans the remote flush) holds back, as for the MMU's tables.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/tlb.h"
#include "mmu/spte.h"

enum sept_violation {
	SEPT_V_NO_PARENT,	/* under an entry that is not a linked table */
	SEPT_V_DOUBLE_MAP,	/* the entry is mapped (or linked, or blocked) already */
	SEPT_V_PAGE_ALIASED,	/* the host page is mapped at another gfn or size */
	SEPT_V_NOT_RWX,		/* a private leaf must grant read, write and execute */
	SEPT_V_NOT_BLOCKED,	/* removal or demotion of an entry not blocked first */
	SEPT_V_NOT_TRACKED,	/* blocked, but no TLB track completed since */
	SEPT_V_WRPROT,		/* write protection of a private leaf (dirty logging) */
	SEPT_V_AD,		/* A/D harvesting of a private leaf */
	SEPT_V_DEMOTE,		/* a huge leaf split other than by demotion */
	SEPT_V_LEVEL,		/* a level or alignment the module does not map at */
	SEPT_V_NOT_MAPPED,	/* blocking, removing or demoting nothing */
	SEPT_V_TABLE_BUSY,	/* freeing a table that still maps something */
	SEPT_V_NR
};

const char *sept_violation_name(enum sept_violation v);

struct secure_ept_stats {
	uint64_t tables;		/* the root included */
	uint64_t leaves[PG_LEVEL_2M + 1];
	uint64_t violations;
	uint64_t by_kind[SEPT_V_NR];
	uint64_t demotes;
	uint64_t tracks;
	uint64_t reclaimed;		/* leaves and tables reclaimed at teardown or destroy */
};

struct secure_ept;

/* A module with an empty root of root_level; NULL without memory. */
struct secure_ept *sept_create(const struct spte_fmt *f, int root_level, size_t arena_bytes);
/* Reclaims whatever is left (TDH.PHYMEM.PAGE.RECLAIM of every page); no
 * walker may run, and RCU callbacks must have been drained. */
void sept_destroy(struct secure_ept *s);
/* TD teardown (the key is freed, no vCPU runs): removals and table frees
 * need no block/track and tables may still map pages. */
void sept_teardown(struct secure_ept *s);
/* What the hardware walks for private gpas. */
struct hw_root sept_hw_root(const struct secure_ept *s);

/* TDH.MEM.SEPT.ADD: a table under the entry (gfn, level), level >= 2. */
int sept_link(struct secure_ept *s, uint64_t gfn, int level);
/* TDH.MEM.PAGE.AUG: the leaf (gfn, level) maps spte's frame. */
int sept_aug(struct secure_ept *s, uint64_t gfn, int level, uint64_t spte);
/* TDH.MEM.RANGE.BLOCK: the leaf stays, the hardware no longer uses it. */
int sept_block(struct secure_ept *s, uint64_t gfn, int level);
/* TDH.MEM.TRACK, called once the caller's remote TLB flush has completed
 * (the simulated module cannot watch vCPU entries, so vmmu's TRACK stands
 * for the instruction and the kick of every vCPU it requires). */
void sept_track(struct secure_ept *s);
/* TDH.MEM.PAGE.REMOVE of a blocked, tracked leaf. */
int sept_remove(struct secure_ept *s, uint64_t gfn, int level);
/* TDH.MEM.PAGE.DEMOTE: a blocked, tracked 2M leaf becomes 512 4K leaves. */
int sept_demote(struct secure_ept *s, uint64_t gfn, int level);
/* TDH.MEM.SEPT.REMOVE: the table under (gfn, level) goes. */
int sept_free_table(struct secure_ept *s, uint64_t gfn, int level);

/* Lockless (RCU or quiescent): the entry mapping gfn at the lowest level
 * present, 0 when nothing; *level its level. */
uint64_t sept_lookup(const struct secure_ept *s, uint64_t gfn, int *level);
/* Whether the entry for (gfn, level) is a linked table. */
bool sept_table_at(const struct secure_ept *s, uint64_t gfn, int level);
void sept_get_stats(struct secure_ept *s, struct secure_ept_stats *out);

#endif /* VMMU_CPU_SECURE_EPT_H */
