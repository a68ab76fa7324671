/* SPDX-License-Identifier: MIT */
/*
 * Reference model of the x86 paging rules; see walk_ref.h.  Section numbers
 * are those of the Intel SDM, Vol. 3A chapter 4 unless marked 3C.  Every
 * function is meant to be checked against the SDM text line by line, so
 * nothing here is table-driven by bit tricks or shared with the walker.
 */
#include "walk_ref.h"

#include <string.h>

/* Bits lo..hi inclusive; empty when lo > hi (e.g. MAXPHYADDR = 52). */
static uint64_t bits(unsigned int lo, unsigned int hi)
{
	uint64_t m = 0;

	for (unsigned int b = lo; b <= hi && b < 64; b++)
		m |= 1ULL << b;
	return m;
}

static bool bit(uint64_t raw, unsigned int b)
{
	return (raw >> b) & 1;
}

int ref_top_level(enum ref_paging paging)
{
	switch (paging) {
	case REF_PAGING_32:
		return 2;	/* 4.3: PDE, PTE */
	case REF_PAGING_PAE:
		return 3;	/* 4.4: PDPTE (register), PDE, PTE */
	case REF_PAGING_4LEVEL:
		return 4;	/* 4.5: PML4E, PDPTE, PDE, PTE */
	case REF_PAGING_5LEVEL:
		return 5;	/* 4.5: PML5E, PML4E, PDPTE, PDE, PTE */
	}
	return 0;
}

unsigned int ref_entry_bytes(enum ref_paging paging)
{
	return paging == REF_PAGING_32 ? 4 : 8;
}

bool ref_is_leaf(const struct ref_cpu *cpu, int level, bool ps)
{
	switch (level) {
	case 1:
		return true;				/* PTE: maps a 4-KByte page */
	case 2:
		/* 4.3: with 32-bit paging, PS is used only if CR4.PSE = 1
		 * (4-MByte page); 4.4.2 / 4.5.4: PS = 1 maps a 2-MByte page. */
		if (cpu->paging == REF_PAGING_32)
			return ps && cpu->pse;
		return ps;
	case 3:
		/* 4.5.4: a PDPTE with PS = 1 maps a 1-GByte page.  The PAE
		 * PDPTE has no PS bit: it always references a page directory. */
		return ps && (cpu->paging == REF_PAGING_4LEVEL || cpu->paging == REF_PAGING_5LEVEL);
	default:
		return false;	/* PML4E / PML5E: PS is reserved */
	}
}

uint64_t ref_rsvd_mask(const struct ref_cpu *cpu, int level, bool ps)
{
	unsigned int m = cpu->maxphyaddr;
	bool huge = level > 1 && ref_is_leaf(cpu, level, ps);
	/* 4.4.2, 4.5.4: with IA32_EFER.NXE = 0, bit 63 (XD) is reserved. */
	uint64_t xd = cpu->nxe ? 0 : bits(63, 63);

	switch (cpu->paging) {
	case REF_PAGING_32:
		/*
		 * Table "Format of a 32-Bit PDE that Maps a 4-MByte Page":
		 * bits (M-20):13 are bits (M-1):32 of the address and bits
		 * 21:(M-19) are reserved, with M = min(MAXPHYADDR, 40).  The
		 * other 32-bit formats have no reserved bits.
		 */
		if (huge) {
			unsigned int m40 = m < 40 ? m : 40;

			return bits(m40 - 19, 21);
		}
		return 0;
	case REF_PAGING_PAE:
		/*
		 * Tables "Format of a PAE Page-Directory Entry ..." and "PAE
		 * Page-Table Entry": bits 62:M are reserved; a 2-MByte PDE also
		 * reserves 20:13.  The PDPTE registers (level 3) are checked
		 * when CR3 is loaded (4.4.1), not on a walk.
		 */
		if (level == 3)
			return 0;
		if (huge)
			return bits(m, 62) | bits(13, 20) | xd;
		return bits(m, 62) | xd;
	case REF_PAGING_4LEVEL:
	case REF_PAGING_5LEVEL:
		/*
		 * Tables "Format of a PML5 Entry", "PML4 Entry", "Page-Directory-
		 * Pointer-Table Entry ...", "Page-Directory Entry ...", "Page-
		 * Table Entry ...": bits 51:M are reserved everywhere; PS (bit
		 * 7) is reserved in PML5Es and PML4Es; a 1-GByte PDPTE reserves
		 * 29:13 and a 2-MByte PDE 20:13.  Bits 62:52 are ignored (or the
		 * protection key).
		 */
		if (level >= 4)
			return bits(m, 51) | bits(7, 7) | xd;
		if (huge && level == 3)
			return bits(m, 51) | bits(13, 29) | xd;
		if (huge && level == 2)
			return bits(m, 51) | bits(13, 20) | xd;
		return bits(m, 51) | xd;
	}
	return 0;
}

struct ref_pte ref_decode(const struct ref_cpu *cpu, int level, uint64_t raw)
{
	struct ref_pte e;

	memset(&e, 0, sizeof(e));
	e.p = bit(raw, 0);
	if (cpu->paging == REF_PAGING_PAE && level == 3)
		return e;	/* PDPTE register: only P takes part in a walk (4.4.2) */
	e.w = bit(raw, 1);
	e.u = bit(raw, 2);
	e.a = bit(raw, 5);
	e.d = bit(raw, 6);
	e.ps = bit(raw, 7);
	if (ref_entry_bytes(cpu->paging) == 8) {
		e.xd = bit(raw, 63);
		e.pkey = (unsigned int)(raw >> 59) & 15;
	}
	e.rsvd = (raw & ref_rsvd_mask(cpu, level, e.ps)) != 0;
	return e;
}

uint64_t ref_page_size(const struct ref_cpu *cpu, int level)
{
	if (level == 1)
		return 1ULL << 12;
	if (level == 2)
		return cpu->paging == REF_PAGING_32 ? 1ULL << 22 : 1ULL << 21;
	return 1ULL << 30;
}

uint64_t ref_leaf_frame(const struct ref_cpu *cpu, int level, uint64_t raw)
{
	unsigned int m = cpu->maxphyaddr;

	if (cpu->paging == REF_PAGING_32) {
		unsigned int m40 = m < 40 ? m : 40;

		if (level == 1)
			return raw & bits(12, 31);
		/* 4-MByte page: bits 31:22 from 31:22, bits (M-1):32 from (M-20):13. */
		return (raw & bits(22, 31)) | (((raw >> 13) & bits(0, m40 - 33)) << 32);
	}
	if (level == 1)
		return raw & bits(12, m - 1);
	if (level == 2)
		return raw & bits(21, m - 1);
	return raw & bits(30, m - 1);
}

bool ref_user_mode_access(const struct ref_cpu *cpu, const struct ref_access *acc)
{
	/* 4.6: "accesses made while CPL = 3 are user-mode accesses", except
	 * the implicit supervisor-mode accesses to system data structures. */
	return cpu->cpl == 3 && !acc->implicit;
}

/*
 * 4.6.2: protection keys apply with 4-level and 5-level paging, when
 * CR4.PKE = 1, to user-mode addresses only, and to data accesses only.
 */
static bool pkeys_apply(const struct ref_cpu *cpu, const struct ref_rights *r)
{
	bool long_mode = cpu->paging == REF_PAGING_4LEVEL || cpu->paging == REF_PAGING_5LEVEL;

	return long_mode && cpu->pke && r->user_addr;
}

static bool pkru_ad(const struct ref_cpu *cpu, unsigned int key)
{
	return (cpu->pkru >> (2 * key)) & 1;		/* AD_i = PKRU[2i] */
}

static bool pkru_wd(const struct ref_cpu *cpu, unsigned int key)
{
	return (cpu->pkru >> (2 * key + 1)) & 1;	/* WD_i = PKRU[2i+1] */
}

/* "a protection key for which read access is permitted" (4.6.2: AD_i = 1
 * prevents any data access). */
static bool pkey_permits_read(const struct ref_cpu *cpu, const struct ref_rights *r)
{
	if (!pkeys_apply(cpu, r))
		return true;
	return !pkru_ad(cpu, r->pkey);
}

/* "a protection key for which write access is permitted" (4.6.2: AD_i = 1
 * prevents it; WD_i = 1 prevents user-mode writes, and supervisor-mode
 * writes only if CR0.WP = 1). */
static bool pkey_permits_write(const struct ref_cpu *cpu, const struct ref_rights *r, bool user)
{
	if (!pkeys_apply(cpu, r))
		return true;
	if (pkru_ad(cpu, r->pkey))
		return false;
	if (pkru_wd(cpu, r->pkey) && (user || cpu->wp))
		return false;
	return true;
}

bool ref_allowed(const struct ref_cpu *cpu, const struct ref_rights *r, const struct ref_access *acc)
{
	bool user = ref_user_mode_access(cpu, acc);
	/* SMAP's exception: "If EFLAGS.AC = 1 and the access is explicit". */
	bool smap_exempt = cpu->ac && !acc->implicit;
	/* XD matters only with PAE/4-level/5-level paging and IA32_EFER.NXE = 1
	 * ("If IA32_EFER.NXE = 0 ... instructions may be fetched from any ..."). */
	bool xd_blocks = cpu->paging != REF_PAGING_32 && cpu->nxe && r->xd;

	if (!user) {
		/* ---- Supervisor-mode access ---- */
		if (acc->fetch) {
			/* "Instruction fetches from user-mode addresses": not
			 * allowed if CR4.SMEP = 1; else as from supervisor-mode
			 * addresses.  "Instruction fetches from supervisor-mode
			 * addresses": any, or only XD = 0 ones with NXE = 1. */
			if (r->user_addr && cpu->smep)
				return false;
			return !xd_blocks;
		}
		if (!acc->write) {
			/* "Data may be read from any supervisor-mode address." */
			if (!r->user_addr)
				return true;
			/* "Data reads from user-mode pages": SMAP = 0: any with
			 * a key permitting reads; SMAP = 1: only if AC = 1 and
			 * explicit, again with a key permitting reads. */
			if (!cpu->smap)
				return pkey_permits_read(cpu, r);
			if (smap_exempt)
				return pkey_permits_read(cpu, r);
			return false;
		}
		/* "Data writes to supervisor-mode addresses": WP = 0: any;
		 * WP = 1: only with R/W = 1 in every entry. */
		if (!r->user_addr)
			return !cpu->wp || r->writable;
		/* "Data writes to user-mode addresses": SMAP = 1 without the
		 * AC/explicit exception forbids them; otherwise WP = 0: any with
		 * a key permitting writes; WP = 1: R/W = 1 everywhere and a key
		 * permitting writes. */
		if (cpu->smap && !smap_exempt)
			return false;
		if (!cpu->wp)
			return pkey_permits_write(cpu, r, false);
		return r->writable && pkey_permits_write(cpu, r, false);
	}

	/* ---- User-mode access: never to supervisor-mode addresses ---- */
	if (!r->user_addr)
		return false;
	if (acc->fetch)
		return !xd_blocks;	/* "Instruction fetches from user-mode addresses" */
	if (!acc->write)
		return pkey_permits_read(cpu, r);
	return r->writable && pkey_permits_write(cpu, r, true);
}

bool ref_pk_flag(const struct ref_cpu *cpu, const struct ref_rights *r, const struct ref_access *acc)
{
	bool long_mode = cpu->paging == REF_PAGING_4LEVEL || cpu->paging == REF_PAGING_5LEVEL;

	/* 4.7, PK flag: (1) IA32_EFER.LMA = CR4.PKE = 1; (2) a data access;
	 * (3) a user-mode address with protection key i; (4) AD_i = 1, or
	 * WD_i = 1 and a write and (CR0.WP = 1 or a user-mode access). */
	if (!long_mode || !cpu->pke)
		return false;
	if (acc->fetch)
		return false;
	if (!r->user_addr)
		return false;
	if (pkru_ad(cpu, r->pkey))
		return true;
	return pkru_wd(cpu, r->pkey) && acc->write && (cpu->wp || ref_user_mode_access(cpu, acc));
}

uint32_t ref_pf_error_code(const struct ref_cpu *cpu, const struct ref_access *acc, bool present, bool rsvd,
			   bool pk)
{
	uint32_t ec = 0;

	/* P: 0 if caused by a non-present page, 1 if by a protection or
	 * reserved-bit violation. */
	if (present)
		ec |= REF_PF_P;
	/* W/R: 1 if the access was a write. */
	if (acc->write)
		ec |= REF_PF_WR;
	/* U/S: 1 if the access was a user-mode access. */
	if (ref_user_mode_access(cpu, acc))
		ec |= REF_PF_US;
	/* RSVD: 1 if a reserved bit was set in some paging-structure entry. */
	if (rsvd)
		ec |= REF_PF_RSVD;
	/* I/D: 1 for an instruction fetch if CR4.SMEP = 1 or (CR4.PAE = 1,
	 * i.e. PAE/4-level/5-level paging, and IA32_EFER.NXE = 1). */
	if (acc->fetch && (cpu->smep || (cpu->paging != REF_PAGING_32 && cpu->nxe)))
		ec |= REF_PF_ID;
	/* PK: see ref_pk_flag(). */
	if (pk)
		ec |= REF_PF_PK;
	return ec;
}

uint32_t ref_permission_fault(const struct ref_cpu *cpu, const struct ref_rights *r, const struct ref_access *acc)
{
	if (ref_allowed(cpu, r, acc))
		return 0;
	return ref_pf_error_code(cpu, acc, true, false, ref_pk_flag(cpu, r, acc));
}

void ref_translate(const struct ref_cpu *cpu, const struct ref_pte ent[REF_MAX_LEVEL + 1],
		   const struct ref_access *acc, struct ref_outcome *out)
{
	int top = ref_top_level(cpu->paging);
	int level;

	memset(out, 0, sizeof(*out));
	for (level = 1; level <= top; level++) {
		out->a[level] = ent[level].a;
		out->d[level] = ent[level].d;
	}

	/* The rights of the translation are those of all entries used
	 * (4.6.1: "U/S = 1 in every paging-structure entry", "R/W = 1 in
	 * every ...", "XD = 1 in any ..."). */
	out->rights.user_addr = true;
	out->rights.writable = true;
	out->rights.xd = false;

	for (level = top; level >= 1; level--) {
		const struct ref_pte *e = &ent[level];

		/* 4.7: P = 0 in an entry used: a not-present fault (reserved
		 * bits of a not-present entry do not matter). */
		if (!e->p) {
			out->fault = true;
			out->error_code = ref_pf_error_code(cpu, acc, false, false, false);
			return;
		}
		/* 4.7: a reserved bit set in a present entry: P = 1, RSVD = 1. */
		if (e->rsvd) {
			out->fault = true;
			out->error_code = ref_pf_error_code(cpu, acc, true, true, false);
			return;
		}
		/* 4.4.2: the PAE PDPTEs control no access rights. */
		if (!(cpu->paging == REF_PAGING_PAE && level == 3)) {
			out->rights.user_addr = out->rights.user_addr && e->u;
			out->rights.writable = out->rights.writable && e->w;
			out->rights.xd = out->rights.xd || e->xd;
		}
		if (ref_is_leaf(cpu, level, e->ps))
			break;
	}
	out->leaf_level = level;
	/* 4.6.2: the key is in the entry that maps the page, with 4/5-level paging. */
	if (cpu->paging == REF_PAGING_4LEVEL || cpu->paging == REF_PAGING_5LEVEL)
		out->rights.pkey = ent[level].pkey;

	if (!ref_allowed(cpu, &out->rights, acc)) {
		out->fault = true;
		out->error_code = ref_pf_error_code(cpu, acc, true, false, ref_pk_flag(cpu, &out->rights, acc));
		return;
	}

	/* 4.8: A in every entry used (the PAE PDPTE registers have none), D in
	 * the entry that maps the page for a write.  Per walk.h, only when the
	 * access succeeds. */
	for (level = top; level >= out->leaf_level; level--) {
		if (!(cpu->paging == REF_PAGING_PAE && level == 3))
			out->a[level] = true;
	}
	if (acc->write)
		out->d[out->leaf_level] = true;
}

/* ---- EPT ------------------------------------------------------------------ */

bool ref_ept_is_leaf(int level, bool ps)
{
	/* 3C 29.3.2: an EPT PTE maps a 4-KByte page; an EPT PDE or PDPTE with
	 * bit 7 = 1 maps a 2-MByte or 1-GByte page. */
	if (level == 1)
		return true;
	if (level == 2 || level == 3)
		return ps;
	return false;
}

uint64_t ref_ept_rsvd_mask(unsigned int maxphyaddr, int level, bool ps)
{
	uint64_t high = bits(maxphyaddr, 51);

	/*
	 * 3C Tables "Format of an EPT PML5 Entry" ... "EPT Page-Table Entry":
	 * bits 51:M reserved everywhere; 7:3 reserved in entries that
	 * reference another table (PML5E, PML4E, PDPTE/PDE with bit 7 = 0);
	 * 29:12 in a 1-GByte PDPTE, 20:12 in a 2-MByte PDE.  Bits 5:3 of a
	 * leaf are the memory type, checked separately.
	 */
	if (level >= 4)
		return high | bits(3, 7);
	if (level == 3)
		return ps ? high | bits(12, 29) : high | bits(3, 7);
	if (level == 2)
		return ps ? high | bits(12, 20) : high | bits(3, 7);
	return high;
}

struct ref_ept_pte ref_ept_decode(unsigned int maxphyaddr, int level, uint64_t raw)
{
	struct ref_ept_pte e;

	memset(&e, 0, sizeof(e));
	e.r = bit(raw, 0);
	e.w = bit(raw, 1);
	e.x = bit(raw, 2);
	e.memtype = (unsigned int)(raw >> 3) & 7;
	e.ps = bit(raw, 7);
	e.a = bit(raw, 8);
	e.d = bit(raw, 9);
	e.rsvd = (raw & ref_ept_rsvd_mask(maxphyaddr, level, e.ps)) != 0;
	return e;
}

uint64_t ref_ept_leaf_frame(unsigned int maxphyaddr, int level, uint64_t raw)
{
	if (level == 1)
		return raw & bits(12, maxphyaddr - 1);
	if (level == 2)
		return raw & bits(21, maxphyaddr - 1);
	return raw & bits(30, maxphyaddr - 1);
}

void ref_ept_translate(int top, const struct ref_ept_pte ent[REF_MAX_LEVEL + 1], const struct ref_access *acc,
		       bool ad, struct ref_ept_outcome *out)
{
	ref_ept_translate_xo(top, ent, acc, ad, true, out);
}

void ref_ept_translate_xo(int top, const struct ref_ept_pte ent[REF_MAX_LEVEL + 1], const struct ref_access *acc,
			  bool ad, bool exec_only, struct ref_ept_outcome *out)
{
	/* Exit qualification bits 2:0: the kind of access. */
	uint32_t kind = acc->fetch ? REF_EPTQ_FETCH : acc->write ? REF_EPTQ_WRITE : REF_EPTQ_READ;
	bool r = true, w = true, x = true;
	int level;

	memset(out, 0, sizeof(*out));
	for (level = 1; level <= top; level++) {
		out->a[level] = ent[level].a;
		out->d[level] = ent[level].d;
	}

	for (level = top; level >= 1; level--) {
		const struct ref_ept_pte *e = &ent[level];
		bool leaf = ref_ept_is_leaf(level, e->ps);

		/* Exit qualification bits 5:3 are the AND over the entries used,
		 * including the one that ended the walk. */
		r = r && e->r;
		w = w && e->w;
		x = x && e->x;
		/* 3C 29.3.3.2: an entry with bits 2:0 all 0 is not present:
		 * an EPT violation (whatever its other bits hold). */
		if (!e->r && !e->w && !e->x) {
			out->fault = true;
			out->qual = kind;	/* bits 5:3 are 0: this entry's are */
			return;
		}
		/* 3C 29.3.3.1: misconfigurations of a present entry: write
		 * without read; execute without read where execute-only
		 * translations are not supported; a reserved bit; a leaf memory
		 * type of 2, 3 or 7. */
		if (e->w && !e->r) {
			out->fault = out->misconfig = true;
			return;
		}
		if (!exec_only && e->x && !e->r) {
			out->fault = out->misconfig = true;
			return;
		}
		if (e->rsvd) {
			out->fault = out->misconfig = true;
			return;
		}
		if (leaf && (e->memtype == 2 || e->memtype == 3 || e->memtype == 7)) {
			out->fault = out->misconfig = true;
			return;
		}
		if (leaf)
			break;
	}
	out->leaf_level = level;
	out->r = r;
	out->w = w;
	out->x = x;

	/* 3C 29.3.3.2: an access the ANDed permissions do not allow. */
	if ((kind == REF_EPTQ_READ && !r) || (kind == REF_EPTQ_WRITE && !w) || (kind == REF_EPTQ_FETCH && !x)) {
		out->fault = true;
		out->qual = kind | (r ? 1u << REF_EPTQ_RWX_SHIFT : 0) | (w ? 2u << REF_EPTQ_RWX_SHIFT : 0) |
			    (x ? 4u << REF_EPTQ_RWX_SHIFT : 0);
		return;
	}

	/* 3C 29.3.5: with accessed/dirty flags enabled, A in every entry used
	 * and D in the leaf for a write; only when the access succeeds. */
	if (ad) {
		for (level = top; level >= out->leaf_level; level--)
			out->a[level] = true;
		if (acc->write)
			out->d[out->leaf_level] = true;
	}
}
