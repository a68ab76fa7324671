/* SPDX-License-Identifier: MIT */
/*
 * Helpers of test_walk.c and test_access.c (see walk_test.h).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

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
