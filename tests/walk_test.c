/* SPDX-License-Identifier: MIT */
/*
 * Helpers of test_walk.c and test_access.c (see walk_test.h).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "walk_test.h"

void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (b->n >= sizeof(b->s))
		return;
	va_start(ap, fmt);
	r = vsnprintf(b->s + b->n, sizeof(b->s) - b->n, fmt, ap);
	va_end(ap);
	if (r > 0)
		b->n += (size_t)r;
}

void sb_entries(struct sbuf *b, const char *what, int top, const uint64_t *ent)
{
	sb_printf(b, "\n      %-7s", what);
	for (int level = top; level >= 1; level--)
		sb_printf(b, " L%d=%#" PRIx64, level, ent[level]);
}

/* Bits of one entry combination. */
#define C_P (1u << 0)
#define C_W (1u << 1)
#define C_U (1u << 2)
#define C_NX (1u << 3)
#define C_PS (1u << 4)

static uint64_t combo_bits(unsigned int c, bool has_nx)
{
	uint64_t e = E_IGN_LOW;

	if (c & C_P)
		e |= E_P;
	if (c & C_W)
		e |= E_W;
	if (c & C_U)
		e |= E_U;
	if ((c & C_NX) && has_nx)
		e |= E_XD;
	return e;
}

/*
 * Every combination of PDE and PTE P, W, U, XD, PS, a reserved bit in the
 * PDE or the PTE or neither, and (with keys) two protection keys.  A PTE
 * under a leaf PDE is not used: only PTE combination 0 runs there.  The
 * leaves are global when supervisor pages, as an OS would make them, and
 * the ignored bits are set (11:9 always, 58:52 where the format has keys),
 * so a walker that gives them a meaning fails.
 */
void exh_for_each(const struct exh_space *sp)
{
	static const unsigned int keys[] = { 0, 0xa };
	bool has_nx = sp->has_nx, has_pk = sp->has_pk;

	for (unsigned int pde_c = 0; pde_c < 32; pde_c++) {
		bool huge = ref_is_leaf(sp->rc, 2, pde_c & C_PS);

		if ((pde_c & C_NX) && !has_nx)
			continue;
		for (unsigned int pte_c = 0; pte_c < 16; pte_c++) {
			if ((pte_c & C_NX) && !has_nx)
				continue;
			if (huge && pte_c)
				continue;	/* the PTE is not used: one pass is enough */
			for (int rsvd_at = 0; rsvd_at <= 2; rsvd_at++) {
				uint64_t pde_rsvd = 0, pte_rsvd = 0;

				if (rsvd_at == 1 && !(pde_rsvd = sp->rsvd_bit(sp->ctx, 2, pde_c & C_PS, huge)))
					continue;
				if (rsvd_at == 2 && (huge || !(pte_rsvd = sp->rsvd_bit(sp->ctx, 1, false, false))))
					continue;
				for (unsigned int k = 0; k < (has_pk ? 2u : 1u); k++) {
					struct exh_entries en = {
						.pde = combo_bits(pde_c, has_nx) | pde_rsvd,
						.pte = combo_bits(pte_c, has_nx) | pte_rsvd,
						.key = keys[k],
					};

					if (pde_c & C_PS)
						en.pde |= E_PS;	/* ignored with 32-bit paging and CR4.PSE = 0 */
					if (has_pk) {
						en.pde |= E_IGN_HIGH;
						en.pte |= E_IGN_HIGH | ((uint64_t)en.key << E_PKEY_SHIFT);
					}
					/* A global leaf when it is a supervisor page, as an OS would. */
					if (!(pte_c & C_U))
						en.pte |= E_G;
					en.pte |= sp->addr_4k;
					if (huge) {
						en.pde |= sp->addr_huge;
						if (!(pde_c & C_U))
							en.pde |= E_G;
						if (has_pk)
							en.pde |= (uint64_t)en.key << E_PKEY_SHIFT;
					} else {
						/* Non-leaf: G and the key bits are ignored. */
						en.pde |= sp->pt | E_G;
						if (has_pk)
							en.pde |= 5ULL << E_PKEY_SHIFT;
					}
					sp->fn(sp->ctx, &en);
				}
			}
		}
	}
}

/* ---- the paging modes, CPU states and accesses -------------------------------- */

const struct amode amodes[] = {
	{ "32-bit", REF_PAGING_32, false, { 0x2a5, 0x3c1 }, 0xab8, 0x76543000ULL, 0xabc0400000ULL },
	{ "32-bit+PSE", REF_PAGING_32, true, { 0x2a5, 0x3c1 }, 0xab8, 0x76543000ULL, 0xabc0400000ULL },
	{ "PAE", REF_PAGING_PAE, false, { 2, 0x1b3, 0x0e7 }, 0x5a0, 0x2abcdef13000ULL, 0x123456600000ULL },
	{ "4-level", REF_PAGING_4LEVEL, false, { 0x1a3, 0x0c5, 0x013, 0x1f7 }, 0xab8, 0x2abcdef13000ULL,
	  0x123456600000ULL },
	{ "5-level", REF_PAGING_5LEVEL, false, { 0x0d1, 0x1a3, 0x0c5, 0x013, 0x1f7 }, 0x9d8, 0x2abcdef13000ULL,
	  0x123456600000ULL },
};
const unsigned int nr_amodes = sizeof(amodes) / sizeof(amodes[0]);

const struct amode_access amode_accesses[] = {
	{ VMMU_ACCESS_READ, "read" },
	{ VMMU_ACCESS_WRITE, "write" },
	{ VMMU_ACCESS_FETCH, "fetch" },
	{ VMMU_ACCESS_READ | VMMU_ACCESS_IMPLICIT, "implicit-read" },
	{ VMMU_ACCESS_WRITE | VMMU_ACCESS_IMPLICIT, "implicit-write" },
};
const unsigned int nr_amode_accesses = sizeof(amode_accesses) / sizeof(amode_accesses[0]);

bool amode_fits(const struct amode *m, unsigned int tdp_levels)
{
	return m->paging != REF_PAGING_5LEVEL || tdp_levels == 5;
}

uint64_t amode_gva(const struct amode *m)
{
	int top = ref_top_level(m->paging);
	uint64_t gva = m->off;

	for (int level = top; level >= 1; level--) {
		uint64_t i = m->idx[top - level];

		if (m->paging == REF_PAGING_32)
			gva |= i << (12 + 10 * (level - 1));
		else if (m->paging == REF_PAGING_PAE && level == 3)
			gva |= i << 30;
		else
			gva |= i << (12 + 9 * (level - 1));
	}
	if (m->paging == REF_PAGING_4LEVEL)
		return sign_extend(gva, 48);
	if (m->paging == REF_PAGING_5LEVEL)
		return sign_extend(gva, 57);
	return gva;
}

void amode_frames(const struct amode *m, unsigned int maxphyaddr, uint64_t *frame_4k, uint64_t *frame_huge)
{
	unsigned int m40 = maxphyaddr < 40 ? maxphyaddr : 40;

	if (m->paging == REF_PAGING_32) {
		*frame_4k = m->frame_4k & bitmask(12, 31);
		*frame_huge = m->frame_huge & bitmask(22, m40 - 1);
	} else {
		*frame_4k = m->frame_4k & bitmask(12, maxphyaddr - 1);
		*frame_huge = m->frame_huge & bitmask(21, maxphyaddr - 1);
	}
}

uint64_t amode_leaf_addr_bits(const struct amode *m, int level, uint64_t frame)
{
	if (m->paging == REF_PAGING_32 && level == 2)
		return (frame & bitmask(22, 31)) | ((frame >> 32) << 13);
	return frame;
}

struct ref_cpu amode_ref_cpu(const struct amode *m, unsigned int maxphyaddr)
{
	struct ref_cpu rc;

	memset(&rc, 0, sizeof(rc));
	rc.paging = m->paging;
	rc.maxphyaddr = maxphyaddr;
	rc.pse = m->pse;
	rc.nxe = true;
	return rc;
}

void amode_cpu(const struct amode *m, unsigned int maxphyaddr, unsigned int cpu_c, unsigned int key, uint64_t cr3,
	       struct ref_cpu *rc, struct vmmu_cpu_state *s)
{
	unsigned int adwd = (cpu_c >> CPU_ADWD_SHIFT) & 3;

	*rc = amode_ref_cpu(m, maxphyaddr);
	rc->wp = cpu_c & CPU_WP;
	rc->smep = cpu_c & CPU_SMEP;
	rc->smap = cpu_c & CPU_SMAP;
	rc->pke = cpu_c & CPU_PKE;
	rc->nxe = cpu_c & CPU_NXE;
	rc->ac = cpu_c & CPU_AC;
	rc->cpl = (cpu_c & CPU_CPL3) ? 3 : 0;
	rc->pkru = 0;
	for (unsigned int i = 0; i < 16; i++)
		rc->pkru |= (i == key ? adwd : 3u & ~adwd) << (2 * i);

	memset(s, 0, sizeof(*s));
	s->cr0 = VMMU_CR0_PE | VMMU_CR0_PG | (rc->wp ? VMMU_CR0_WP : 0);
	s->cr3 = cr3;
	/* PGE on: supervisor leaves are global, as an OS makes them. */
	s->cr4 = VMMU_CR4_PGE | (rc->smep ? VMMU_CR4_SMEP : 0) | (rc->smap ? VMMU_CR4_SMAP : 0) |
		 (rc->pke ? VMMU_CR4_PKE : 0);
	switch (m->paging) {
	case REF_PAGING_32:
		s->cr4 |= m->pse ? VMMU_CR4_PSE : 0;
		break;
	case REF_PAGING_PAE:
		s->cr4 |= VMMU_CR4_PAE;
		break;
	case REF_PAGING_4LEVEL:
		s->cr4 |= VMMU_CR4_PAE;
		s->efer |= VMMU_EFER_LME;
		break;
	case REF_PAGING_5LEVEL:
		s->cr4 |= VMMU_CR4_PAE | VMMU_CR4_LA57;
		s->efer |= VMMU_EFER_LME;
		break;
	}
	s->efer |= rc->nxe ? VMMU_EFER_NXE : 0;
	s->rflags = rc->ac ? VMMU_RFLAGS_AC : 0;
	s->pkru = rc->pkru;
	s->cpl = rc->cpl;
}

uint64_t amode_upper_entry(const struct amode *m, int level, uint64_t next)
{
	if (m->paging == REF_PAGING_PAE)
		return next | E_P | E_PWT;
	return next | E_P | E_W | E_U | E_PWT | E_G | E_IGN_LOW | E_IGN_HIGH | ((uint64_t)(level + 2) << E_PKEY_SHIFT);
}

bool amode_leaf_may_be_global(const struct ref_cpu *rc, const uint64_t *ent)
{
	if (!(ent[2] & E_P))
		return false;
	if (ref_is_leaf(rc, 2, ent[2] & E_PS))
		return ent[2] & E_G;
	return (ent[1] & E_P) && (ent[1] & E_G);
}

uint64_t amode_rsvd_bit(const struct ref_cpu *rc, unsigned int sel[2][3], int level, bool ps)
{
	struct ref_cpu base = *rc;
	uint64_t mask;
	unsigned int n, k;

	base.nxe = true;
	mask = ref_rsvd_mask(&base, level, ps) & ~E_XD;
	n = (unsigned int)__builtin_popcountll(mask);
	if (!n)
		return 0;
	k = sel[ps][level]++ % n;
	for (unsigned int b = 0; b < 64; b++) {
		if (((mask >> b) & 1) && k-- == 0)
			return 1ULL << b;
	}
	return 0;
}
