/* SPDX-License-Identifier: MIT */
/*
 * The fuzzer's guest OS: it builds and edits x86 page tables in guest
 * memory the way a kernel does, with its own stores (guest-physical ones,
 * VMMU_ACCESS_PHYS, or through a gva that maps the table page), and drives
 * the vCPUs' paging state: address spaces in 32-bit, PAE, 4-level and
 * 5-level format, CR3 loads with and without PCIDs and the no-flush bit,
 * INVLPG, INVPCID, CR0/CR4/EFER/RFLAGS/CPL/PKRU changes, paging off and on.
 *
 * Nothing here decides what vmmu must do: every store is an access checked
 * by fuzz_access.c, every state change is predicted by gmodel.c.  The guest
 * OS only reads the model's record of guest memory to know where its
 * entries are, and is happy to build nonsense (tables shared between
 * address spaces or levels, entries with reserved bits, tables outside RAM,
 * leaves over tables) because the model follows whatever the tables say.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"

#define E_P (1ULL << 0)
#define E_W (1ULL << 1)
#define E_U (1ULL << 2)
#define E_A (1ULL << 5)
#define E_D (1ULL << 6)
#define E_PS (1ULL << 7)
#define E_G (1ULL << 8)
#define E_NX (1ULL << 63)

static const char *const mode_names[] = { "off", "32-bit", "PAE", "4-level", "5-level" };

void guest_reset(struct fz *f)
{
	memset(f->as, 0, sizeof(f->as));
	f->ntables = 0;
}

static int top_level(enum gm_mode m)
{
	return m == GM_32 ? 2 : m == GM_PAE ? 3 : m == GM_4L ? 4 : 5;
}

static unsigned int esize(enum gm_mode m)
{
	return m == GM_32 ? 4 : 8;
}

static uint64_t addr_mask(const struct fz *f, enum gm_mode m)
{
	return m == GM_32 ? 0xfffff000ULL : ((1ULL << f->maxphyaddr) - 1) & ~0xfffULL;
}

static bool mem_read(const struct fz *f, uint64_t gpa, unsigned int size, uint64_t *v)
{
	uintptr_t hva;

	*v = 0;
	if (!model_find(f->m, gpa, &hva))
		return false;
	memcpy(v, f->m->expect + (hva - f->m->arena), size);
	return true;
}

/*
 * A RAM page the guest OS may put a table in (not the host thread's slot):
 * which slot and page come from the operation's bytes (b, r), and for the
 * second and later tables of one operation from the input's random stream.
 */
struct alloc {
	uint8_t b;
	uint16_t r;
	bool used;
};

static bool alloc_page(struct fz *f, struct alloc *al, uint64_t *gpa)
{
	uint8_t b = al->b;
	uint16_t r = al->r;
	uint32_t id;
	const struct model_slot *s;

	if (al->used) {
		uint64_t x = rng_next(f);

		b = (uint8_t)x;
		r = (uint16_t)(x >> 8);
	}
	al->used = true;
	if ((b & 7) == 7 && f->ntables) {
		*gpa = f->tables[r % f->ntables];	/* an existing table: shared */
		return true;
	}
	s = pick_used_slot(f, b >> 3, &id);
	if (!s || (f->threaded && id == HOST_SLOT))
		return false;
	*gpa = s->gpa + (uint64_t)(r % (s->size / PAGE)) * PAGE;
	return true;
}

static void read_alloc(struct fz *f, struct alloc *al)
{
	al->b = rd8(&f->in);
	al->r = rd16(&f->in);
	al->used = false;
}

static void note_table(struct fz *f, uint64_t gpa)
{
	for (unsigned int i = 0; i < f->ntables; i++)
		if (f->tables[i] == (gpa & ~(PAGE - 1)))
			return;
	if (f->ntables < GOS_TABLES)
		f->tables[f->ntables++] = gpa & ~(PAGE - 1);
	else
		f->tables[rng_next(f) % GOS_TABLES] = gpa & ~(PAGE - 1);
}

/* A gva page through which vCPU v's current tables reach gpa's page. */
static bool find_alias(const struct fz *f, unsigned int v, uint64_t gpa, uint64_t *gva)
{
	const struct vmmu_cpu_state *s = &f->g->v[v].s;
	enum gm_mode mode = gm_mode_of(s);
	unsigned int start = (unsigned int)(rng_next((struct fz *)f) % GM_NPAGES);

	if (mode == GM_OFF)
		return false;
	for (unsigned int k = 0; k < GM_NPAGES; k++) {
		unsigned int i = (start + k) % GM_NPAGES;
		uint64_t g = gm_page_gva(i);
		struct gm_walk w;

		if ((mode == GM_32 || mode == GM_PAE) && (g >> 32))
			continue;
		gm_walk(f->g, s, s->cr3, g, &w);
		if (w.st == GW_OK && ((w.x.frame + (g - w.x.gva_base)) & ~(PAGE - 1)) == (gpa & ~(PAGE - 1))) {
			*gva = g | (gpa & (PAGE - 1));
			return true;
		}
	}
	return false;
}

/*
 * The guest stores val (size bytes) at gpa: guest-physically, or through
 * a gva alias of the page when vCPU v's tables have one (how a kernel
 * writes its tables through its direct map).  how: bits 0-1 the path,
 * bit 2 a one-byte store of the low byte only (clear_bit-style flag
 * updates, which shadow paging must not mistake for a misaligned store).
 */
static bool guest_store(struct fz *f, unsigned int v, uint64_t gpa, uint64_t val, unsigned int size, uint8_t how)
{
	uint8_t buf[8];
	struct fz_acc a = { .vcpu = v, .addr = gpa, .len = size, .type = VMMU_ACCESS_WRITE, .phys = true, .buf = buf };
	uint64_t gva;

	memcpy(buf, &val, sizeof(buf));
	if (how & 4)
		a.len = 1;
	if ((how & 3) != 0 && find_alias(f, v, gpa, &gva)) {
		a.phys = false;
		a.addr = gva;
		a.implicit = (how & 3) == 2;
	}
	return fz_access(f, &a) == FZ_DONE;
}

static bool zero_table(struct fz *f, unsigned int v, uint64_t gpa, size_t len)
{
	static uint8_t zeros[PAGE];
	struct fz_acc a = { .vcpu = v, .addr = gpa, .len = len, .type = VMMU_ACCESS_WRITE, .phys = true, .buf = zeros };

	memset(zeros, 0, sizeof(zeros));
	return fz_access(f, &a) == FZ_DONE;
}

/*
 * Where gva's entry of the given level is in address space as, walking
 * the guest OS's own way: P and PS as the format says, PSE assumed for
 * 32-bit.  Stops early where an entry above is not present, a leaf, or
 * points outside RAM: *level says where, *egpa is the entry to write.
 */
static bool find_entry(const struct fz *f, const struct gos_as *as, uint64_t gva, int *level, uint64_t *egpa,
		       uint64_t *val)
{
	enum gm_mode m = as->mode;
	unsigned int esz = esize(m), bpl = esz == 4 ? 10 : 9;
	uint64_t table = as->root & (m == GM_PAE ? 0xffffffe0ULL : addr_mask(f, m));
	int want = *level;

	for (int l = top_level(m); l >= 1; l--) {
		uint64_t gpa, e;

		if (m == GM_PAE && l == 3)
			gpa = table + 8 * ((gva >> 30) & 3);
		else
			gpa = table + ((gva >> (12 + bpl * (unsigned int)(l - 1))) & ((1ULL << bpl) - 1)) * esz;
		if (!mem_read(f, gpa, esz, &e))
			return false;	/* the table above points outside RAM */
		*level = l;
		*egpa = gpa;
		*val = e;
		if (l == want || !(e & E_P) || (l <= 3 && l > 1 && (e & E_PS) && !(m == GM_PAE && l == 3)))
			return true;
		table = e & addr_mask(f, m);
		if (!model_find(f->m, table, NULL))
			return true;	/* rewrite this entry: its table is not RAM */
	}
	return true;
}

static uint64_t link_entry(struct fz *f, enum gm_mode m, int level, uint64_t table)
{
	/* PAE PDPTEs: only P (bits 2:1 and 8:5 are reserved, SDM 4.4.1). */
	if (m == GM_PAE && level == 3)
		return table | E_P;
	return table | E_P | E_W | E_U | ((rng_next(f) & 3) ? 0 : E_A);
}

static void gos_create(struct fz *f, unsigned int k, uint8_t b, struct alloc *al)
{
	static const enum gm_mode modes[] = { GM_4L, GM_32, GM_PAE, GM_4L, GM_5L, GM_4L, GM_PAE, GM_5L };
	struct gos_as *as = &f->as[k];
	unsigned int v = b & 1;
	uint64_t page;

	as->used = false;
	if (!alloc_page(f, al, &page))
		return;
	as->mode = modes[(b >> 1) & 7];
	as->root = page;
	if (as->mode == GM_PAE) {
		/* A 32-byte PDPT anywhere in the page: CR3 holds bits 31:5. */
		as->root = page + 32 * (rng_next(f) % 128);
		if (!zero_table(f, v, as->root, 32))
			return;
	} else if (!zero_table(f, v, page, PAGE)) {
		return;
	}
	as->used = true;
	note_table(f, page);
	TRACE(f, "address space %u: %s, root %#" PRIx64, k, mode_names[as->mode], as->root);
}

void op_as_create(struct fz *f)
{
	uint8_t a = rd8(&f->in);
	struct alloc al;

	read_alloc(f, &al);
	f->opname = "address space";
	gos_create(f, a % GOS_AS, (uint8_t)(a >> 2), &al);
}

static struct gos_as *pick_as(struct fz *f, uint8_t b, struct alloc *al)
{
	struct gos_as *as = &f->as[b % GOS_AS];

	if (!as->used)
		gos_create(f, b % GOS_AS, (uint8_t)(b >> 2), al);
	return as->used ? as : NULL;
}

/* A gva page of the windows that the format can address. */
static uint64_t pick_gva_page(enum gm_mode m, uint16_t r)
{
	/* 32-bit and PAE: the windows below 4G (the first 26 pages). */
	unsigned int n = (m == GM_32 || m == GM_PAE) ? 26 : GM_NPAGES;

	return gm_page_gva(r % n);
}

static bool find_entry(const struct fz *f, const struct gos_as *as, uint64_t gva, int *level, uint64_t *egpa,
		       uint64_t *val);

/*
 * A frame for a leaf: RAM in a slot mostly; MMIO; or a page table, the way
 * a kernel maps its own tables (its direct map): the table holding some
 * window page's entry at some level, which makes later PTE stores through
 * that gva possible (and, under shadow paging, unsync pages).
 */
static uint64_t pick_frame(struct fz *f, const struct gos_as *as, uint64_t size, uint8_t b, uint16_t r)
{
	uint32_t id;
	const struct model_slot *s;
	uint64_t g, egpa, val;
	int level;

	switch (b & 7) {
	case 0:
		/* Not RAM: MMIO below or above the slots' space. */
		g = (b & 8) ? GPA_SPACE + 8 * MiB + (uint64_t)r * PAGE : (uint64_t)r * PAGE * 16;
		break;
	case 1:
		level = 1 + (int)(r >> 12) % top_level(as->mode);
		if (find_entry(f, as, pick_gva_page(as->mode, r & 0xfff), &level, &egpa, &val)) {
			g = egpa;
			break;
		}
		if (f->ntables) {
			g = f->tables[r % f->ntables];
			break;
		}
		/* fall through */
	default:
		s = pick_used_slot(f, b >> 3, &id);
		g = s ? s->gpa + (uint64_t)(r % (s->size / PAGE)) * PAGE : (uint64_t)r * PAGE;
		break;
	}
	return g & ~(size - 1);
}

static uint64_t leaf_entry(const struct fz *f, enum gm_mode m, int level, uint64_t frame, uint64_t flags)
{
	uint64_t e = E_P | flags | (level > 1 ? E_PS : 0);

	if (m == GM_32 && level == 2)	/* 4M page: PSE-36 puts bits 39:32 in 20:13 */
		return e | (frame & 0xffc00000ULL) | (((frame >> 32) & 0xff) << 13);
	return e | (frame & (m == GM_32 ? 0xfffff000ULL : ~0xfffULL));
}

/* Leaf flags: W, U, NX, G, preset A/D, a protection key; now and then a
 * reserved bit, so that walks raise RSVD faults. */
static uint64_t leaf_flags(struct fz *f, enum gm_mode m, uint8_t b, uint8_t c)
{
	uint64_t fl = 0;

	if (b & 0x03)
		fl |= E_W;
	if (b & 0x04)
		fl |= E_U;
	if ((b & 0x18) == 0x18 && m != GM_32)
		fl |= E_NX;
	if ((b & 0x60) == 0x60)
		fl |= E_G;
	if (b & 0x80)
		fl |= E_A | ((c & 1) ? E_D : 0);
	if (m >= GM_4L && (c & 0x06) == 0x06)
		fl |= (uint64_t)(c >> 4) << 59;
	if ((c & 0x38) == 0x38)
		fl |= m == GM_32 ? (1ULL << 21) : (1ULL << (f->maxphyaddr < 52 ? f->maxphyaddr : 51));
	return fl;
}

static void maybe_invlpg(struct fz *f, unsigned int v, uint64_t gva, uint8_t b)
{
	if (!(b & 1))
		return;
	TRACE(f, "vCPU %u INVLPG %#" PRIx64, v, gva);
	vmmu_vcpu_invlpg(f->vcpu[v], gva);
	gm_invlpg(f->g, v, gva);
}

void op_pt_map(struct fz *f)
{
	uint8_t b0 = rd8(&f->in), b1 = rd8(&f->in), b2 = rd8(&f->in), b3 = rd8(&f->in), b4 = rd8(&f->in);
	uint16_t r = rd16(&f->in), rf = rd16(&f->in);
	unsigned int v = b0 & 1;
	struct gos_as *as;
	struct alloc al;
	uint64_t gva, size, frame, egpa, val;
	int level, want;

	read_alloc(f, &al);
	f->opname = "map";
	as = pick_as(f, (uint8_t)(b0 >> 1), &al);
	if (!as)
		return;
	gva = pick_gva_page(as->mode, r);
	switch (b1 & 7) {
	case 5:
	case 6:
		want = 2;
		size = as->mode == GM_32 ? 4 * MiB : 2 * MiB;
		break;
	case 7:
		want = as->mode >= GM_4L ? 3 : 2;
		size = as->mode >= GM_4L ? 1024 * MiB : as->mode == GM_32 ? 4 * MiB : 2 * MiB;
		break;
	default:
		want = 1;
		size = PAGE;
		break;
	}
	for (int tries = 0; tries < 6; tries++) {
		uint64_t table;

		level = want;
		if (!find_entry(f, as, gva, &level, &egpa, &val))
			return;
		if (level == want)
			break;
		/* A table is missing (or a leaf or garbage is in the way). */
		if (!alloc_page(f, &al, &table))
			return;
		TRACE(f, "map %#" PRIx64 ": new level-%d table at %#" PRIx64 " in the level-%d entry at %#" PRIx64, gva,
		      level - 1, table, level, egpa);
		if (!zero_table(f, v, table, PAGE))
			return;
		note_table(f, table);
		if (!guest_store(f, v, egpa, link_entry(f, as->mode, level, table), esize(as->mode), b3 & 3))
			return;
	}
	if (level != want)
		return;
	frame = pick_frame(f, as, size, b2, rf);
	val = leaf_entry(f, as->mode, level, frame, leaf_flags(f, as->mode, b3, b4));
	TRACE(f, "map %#" PRIx64 " (%s, %#" PRIx64 " bytes) -> %#" PRIx64 ": level-%d entry at %#" PRIx64 " = %#" PRIx64,
	      gva, mode_names[as->mode], size, frame, level, egpa, val);
	if (guest_store(f, v, egpa, val, esize(as->mode), (uint8_t)((b3 >> 2) & 3)))
		maybe_invlpg(f, v, gva, b1 >> 3);
}

void op_pte_write(struct fz *f)
{
	uint8_t b0 = rd8(&f->in), b1 = rd8(&f->in), b2 = rd8(&f->in);
	uint16_t r = rd16(&f->in);
	uint32_t r32 = rd32(&f->in), r32b = rd32(&f->in);
	unsigned int v = b0 & 1;
	struct gos_as *as;
	struct alloc al;
	uint64_t gva, egpa, val, nv;
	int level;

	read_alloc(f, &al);
	f->opname = "pte write";
	as = pick_as(f, (uint8_t)(b0 >> 1), &al);
	if (!as)
		return;
	gva = pick_gva_page(as->mode, r);
	level = 1 + (b1 & 7) % top_level(as->mode);
	if (!find_entry(f, as, gva, &level, &egpa, &val))
		return;
	switch ((b1 >> 3) & 7) {
	case 0:
		nv = 0;		/* unmap */
		break;
	case 1:
		nv = val & ~E_P;	/* not present, the rest kept */
		break;
	case 2: {
		/* Flip one of P, W, U, PWT, PCD, A, D, PS, G, NX. */
		static const uint8_t bits[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 63 };

		nv = val ^ (1ULL << bits[b2 % 10]);
		break;
	}
	case 3:
		/* Point it at a table the guest OS made (sharing, loops). */
		nv = f->ntables ? link_entry(f, as->mode, level, f->tables[r32 % f->ntables]) : val;
		break;
	case 4:
		nv = val | E_A | ((b2 & 1) ? E_D : 0);
		break;
	case 5:
		nv = val & ~(E_A | E_D);
		break;
	case 6:
		/* Another frame, same flags. */
		nv = (val & ~addr_mask(f, as->mode)) | (pick_frame(f, as, PAGE, b2, (uint16_t)r32) & addr_mask(f, as->mode));
		break;
	default:
		nv = ((uint64_t)r32 << 32 | r32b) & (as->mode == GM_32 ? 0xffffffffULL : ~0ULL);
		break;
	}
	if (esize(as->mode) == 4)
		nv &= 0xffffffffULL;
	TRACE(f, "pte write %s %#" PRIx64 ": level-%d entry at %#" PRIx64 " %#" PRIx64 " -> %#" PRIx64,
	      mode_names[as->mode], gva, level, egpa, val, nv);
	if (guest_store(f, v, egpa, nv, esize(as->mode), (uint8_t)(((b2 >> 4) & 3) | ((b2 & 0xc0) == 0xc0 ? 4 : 0))))
		maybe_invlpg(f, v, gva, (uint8_t)(b0 >> 4));
}

/* ---- vCPU state ------------------------------------------------------------------- */

static void check_state(struct fz *f, unsigned int v, const char *what)
{
	struct vmmu_cpu_state have;
	const struct vmmu_cpu_state *want = &f->g->v[v].s;

	if (vmmu_vcpu_get_state(f->vcpu[v], &have))
		fz_fail(f, "vmmu_vcpu_get_state failed");
	if (have.cr0 != want->cr0 || have.cr3 != want->cr3 || have.cr4 != want->cr4 || have.efer != want->efer ||
	    have.cpl != want->cpl || have.pkru != want->pkru || have.rflags != want->rflags ||
	    memcmp(have.pdptrs, want->pdptrs, sizeof(have.pdptrs)))
		fz_fail(f,
			"%s: vCPU %u state cr0 %#" PRIx64 " cr3 %#" PRIx64 " cr4 %#" PRIx64 " efer %#" PRIx64
			" pdptrs %#" PRIx64 " %#" PRIx64 " %#" PRIx64 " %#" PRIx64 ", expected cr0 %#" PRIx64
			" cr3 %#" PRIx64 " cr4 %#" PRIx64 " efer %#" PRIx64 " pdptrs %#" PRIx64 " %#" PRIx64
			" %#" PRIx64 " %#" PRIx64,
			what, v, have.cr0, have.cr3, have.cr4, have.efer, have.pdptrs[0], have.pdptrs[1], have.pdptrs[2],
			have.pdptrs[3], want->cr0, want->cr3, want->cr4, want->efer, want->pdptrs[0], want->pdptrs[1],
			want->pdptrs[2], want->pdptrs[3]);
}

static int set_state(struct fz *f, unsigned int v, const struct vmmu_cpu_state *s, const char *what)
{
	int want, rc;

	want = gm_set_state(f->g, v, s);
	rc = vmmu_vcpu_set_state(f->vcpu[v], s);

	TRACE(f, "vCPU %u %s: cr0 %#" PRIx64 " cr3 %#" PRIx64 " cr4 %#" PRIx64 " efer %#" PRIx64 " cpl %u: rc %d", v,
	      what, s->cr0, s->cr3, s->cr4, s->efer, s->cpl, rc);
	if (rc != want)
		fz_fail(f, "%s: vmmu_vcpu_set_state(cr0 %#" PRIx64 " cr3 %#" PRIx64 " cr4 %#" PRIx64 " efer %#" PRIx64
			") = %d (%s), expected %d (%s)", what, s->cr0, s->cr3, s->cr4, s->efer, rc, vmmu_strerror(rc),
			want, vmmu_strerror(want));
	check_state(f, v, what);	/* refused: unchanged */
	return rc;
}

static void keep_tlb_small(struct fz *f, unsigned int v)
{
	if (f->g->v[v].ntlb > GM_TLB_SOFT)
		fz_full_flush(f, v);
}

void op_as_load(struct fz *f)
{
	uint8_t b0 = rd8(&f->in), b1 = rd8(&f->in), b2 = rd8(&f->in);
	unsigned int v = b0 & 1;
	struct gos_as *as;
	struct alloc al;
	const struct vmmu_cpu_state *cur = &f->g->v[v].s;
	struct vmmu_cpu_state s = *cur;
	enum gm_mode cm = gm_mode_of(cur);
	bool pcide = cur->cr4 & VMMU_CR4_PCIDE;

	read_alloc(f, &al);
	f->opname = "CR3 load";
	as = pick_as(f, (uint8_t)(b0 >> 1), &al);
	if (!as)
		return;
	keep_tlb_small(f, v);
	if (cm == as->mode && !(b2 & 0x80)) {
		/* MOV to CR3: a PCID (and maybe no-flush) with PCIDE, else the
		 * PWT/PCD bits now and then (ignored by the walk). */
		uint64_t cr3 = as->root;
		int want, rc;

		if (pcide)
			cr3 |= (b1 % GM_PCIDS) | ((b1 & 0x40) ? VMMU_CR3_PCID_NOFLUSH : 0);
		else if (cm != GM_PAE)
			cr3 |= (uint64_t)(b1 & 0x18);
		if ((b2 & 0x3f) == 0x3f)
			cr3 |= 1ULL << (cm >= GM_4L ? (f->maxphyaddr < 52 ? f->maxphyaddr : 62) : 40);	/* #GP */
		want = gm_write_cr3(f->g, v, cr3);
		rc = vmmu_vcpu_write_cr3(f->vcpu[v], cr3);
		TRACE(f, "vCPU %u MOV CR3 %#" PRIx64 " (%s): rc %d", v, cr3, mode_names[cm], rc);
		if (rc != want)
			fz_fail(f, "vmmu_vcpu_write_cr3(%#" PRIx64 ") = %d (%s), expected %d (%s)", cr3, rc,
				vmmu_strerror(rc), want, vmmu_strerror(want));
		check_state(f, v, "MOV CR3");
		return;
	}
	/* A mode switch.  Into or out of long mode, or to another LA57, the
	 * architecture wants paging off first. */
	if (cm != GM_OFF && ((cm >= GM_4L) != (as->mode >= GM_4L) || (cm >= GM_4L && cm != as->mode))) {
		struct vmmu_cpu_state off = s;

		off.cr0 &= ~VMMU_CR0_PG;
		off.cr4 &= ~VMMU_CR4_PCIDE;
		if (set_state(f, v, &off, "paging off for a mode switch"))
			return;
		cm = GM_OFF;
		s = f->g->v[v].s;
	}
	s.cr0 |= VMMU_CR0_PE | VMMU_CR0_PG;
	s.cr4 &= ~(VMMU_CR4_PAE | VMMU_CR4_LA57 | VMMU_CR4_PCIDE);
	s.cr4 |= as->mode == GM_32 ? ((b1 & 1) ? 0 : VMMU_CR4_PSE) : VMMU_CR4_PAE;
	if (as->mode == GM_5L)
		s.cr4 |= VMMU_CR4_LA57;
	s.efer &= ~VMMU_EFER_LME;
	if (as->mode >= GM_4L)
		s.efer |= VMMU_EFER_LME;
	/* NXE changes only with paging off: what a cached XD translation
	 * means when NXE changes under it is not for the model to guess. */
	if (cm == GM_OFF) {
		/* Mostly on; less often in 32-bit mode, where it changes nothing. */
		s.efer &= ~VMMU_EFER_NXE;
		if ((b1 & 6) && (as->mode != GM_32 || (b1 & 8)))
			s.efer |= VMMU_EFER_NXE;
	}
	if (cm == GM_OFF && (b1 & 0x30) == 0x30)
		s.cr4 ^= VMMU_CR4_PGE;
	s.cr3 = as->root;
	if (as->mode >= GM_4L && (b2 & 0x40) && (cur->cr4 & VMMU_CR4_PCIDE) && cm != GM_OFF)
		s.cr4 |= VMMU_CR4_PCIDE;
	if ((b2 & 0x3f) == 0x3e)
		s.cr4 |= VMMU_CR4_PCIDE | 1;	/* PCIDE outside long mode / with a PCID: #GP */
	set_state(f, v, &s, "paging on");
}

void op_paging_off(struct fz *f)
{
	uint8_t b = rd8(&f->in);
	unsigned int v = b & 1;
	struct vmmu_cpu_state s = f->g->v[v].s;

	f->opname = "paging off";
	s.cr0 &= ~VMMU_CR0_PG;
	s.cr4 &= ~VMMU_CR4_PCIDE;
	if (b & 2)
		s.efer ^= VMMU_EFER_NXE;
	set_state(f, v, &s, "paging off");
}

void op_cr_toggle(struct fz *f)
{
	uint8_t b = rd8(&f->in), c = rd8(&f->in);
	unsigned int v = b & 1;
	struct vmmu_cpu_state s = f->g->v[v].s;
	static const char *const names[] = { "CR0.WP", "CR4.SMEP", "CR4.SMAP", "CR4.PKE", "CR4.PGE", "CR4.PCIDE",
					     "CR4.PSE", "RFLAGS.AC", "CPL", "PKRU", "EFER.NXE", "CR0.WP" };
	unsigned int what = (b >> 1) % 12;

	f->opname = names[what];
	switch (what) {
	case 0:
	case 11: s.cr0 ^= VMMU_CR0_WP; break;
	case 1: s.cr4 ^= VMMU_CR4_SMEP; break;
	case 2: s.cr4 ^= VMMU_CR4_SMAP; break;
	case 3: s.cr4 ^= VMMU_CR4_PKE; break;
	case 4: s.cr4 ^= VMMU_CR4_PGE; break;
	case 5:
		s.cr4 ^= VMMU_CR4_PCIDE;
		/* Turning it on needs PCID 0 in CR3 (else #GP: keep the bits to
		 * test that now and then). */
		if ((s.cr4 & VMMU_CR4_PCIDE) && (c & 3))
			s.cr3 &= ~0xfffULL;
		break;
	case 6:
		s.cr4 ^= VMMU_CR4_PSE;
		break;
	case 7: s.rflags ^= VMMU_RFLAGS_AC; break;
	case 8: s.cpl = s.cpl ? 0 : 3; break;
	case 9: s.pkru = (uint32_t)c * 0x01010101u; break;
	default:
		/* See op_as_load: NXE moves only while paging is off. */
		if (gm_mode_of(&s) != GM_OFF)
			return;
		s.efer ^= VMMU_EFER_NXE;
		break;
	}
	keep_tlb_small(f, v);
	set_state(f, v, &s, names[what]);
}

void op_invlpg(struct fz *f)
{
	uint8_t b = rd8(&f->in);
	uint16_t r = rd16(&f->in);
	unsigned int v = b & 1;
	uint64_t gva = gm_page_gva(r % GM_NPAGES) + (uint64_t)(b >> 1) * 64;

	f->opname = "INVLPG";
	if ((gm_mode_of(&f->g->v[v].s) == GM_32 || gm_mode_of(&f->g->v[v].s) == GM_PAE) && (gva >> 32))
		gva &= 0xffffffffULL;	/* 32-bit operand */
	maybe_invlpg(f, v, gva, 1);
}

void op_invpcid(struct fz *f)
{
	uint8_t b = rd8(&f->in), c = rd8(&f->in);
	uint16_t r = rd16(&f->in);
	unsigned int v = b & 1, type = (b >> 1) & 3;
	uint32_t pcid = c % GM_PCIDS;
	uint64_t gva = gm_page_gva(r % GM_NPAGES);
	int want, rc;

	f->opname = "INVPCID";
	if ((b & 0xe0) == 0xe0)
		type = 4 + (c & 3);	/* #GP */
	if ((c & 0xf0) == 0xf0)
		pcid = 4096 + c;	/* #GP */
	if ((c & 0x0c) == 0x0c)
		pcid = c & 0xfff;	/* no PCID the fuzzer loads, fine */
	want = gm_invpcid(f->g, v, type, pcid, gva);
	rc = vmmu_vcpu_invpcid(f->vcpu[v], type, pcid, gva);
	TRACE(f, "vCPU %u INVPCID type %u pcid %u gva %#" PRIx64 ": rc %d", v, type, pcid, gva, rc);
	if (rc != want)
		fz_fail(f, "vmmu_vcpu_invpcid(%u, %u, %#" PRIx64 ") = %d, expected %d", type, pcid, gva, rc, want);
}

/* ---- accesses ------------------------------------------------------------------------ */

void op_guest_access(struct fz *f)
{
	static const size_t lens[8] = { 1, 2, 4, 8, 8, 4, 8, 0 };
	static uint8_t buf[MAX_ACCESS];
	uint8_t b = rd8(&f->in), c = rd8(&f->in);
	uint16_t rl = rd16(&f->in), rp = rd16(&f->in), ro = rd16(&f->in);
	uint64_t gpa = pick_gpa(f, MAX_ACCESS);
	unsigned int v = b & 1;
	enum gm_mode mode = gm_mode_of(&f->g->v[v].s);
	struct fz_acc a = { .vcpu = v, .buf = buf };
	size_t len = lens[(b >> 3) & 7];

	a.type = (b & 2) ? VMMU_ACCESS_WRITE : ((c & 0x0f) == 0x0f) ? VMMU_ACCESS_FETCH : VMMU_ACCESS_READ;
	a.phys = b & 4;
	a.implicit = (c & 0x30) == 0x30;
	f->opname = a.type == VMMU_ACCESS_WRITE ? "write" : "read";
	if (!len)
		len = 1 + rl % MAX_ACCESS;
	a.len = len;
	if (a.phys || mode == GM_OFF) {
		/* pick_gpa's page-crossing choice assumed the longest access. */
		a.addr = gpa;
		/* Linear addresses have 32 bits with paging off: mostly stay below. */
		if (!a.phys && a.addr + len > (1ULL << 32) && !(c & 0x40))
			a.addr = (1ULL << 32) - len;
	} else {
		uint64_t page = pick_gva_page(mode, rp), gva, end;
		unsigned int w = gm_page_window(page);

		gva = page + ((c & 0x80) ? PAGE - 1 - ro % 16 : (uint64_t)ro % PAGE);
		/* Stay in the window (the model tracks only its pages), except
		 * where the access is refused anyway (past 4G with 32-bit linear
		 * addresses, past 2^64), or into the next window. */
		end = gm_windows[w].base + gm_windows[w].npages * PAGE;
		if (len > end - gva) {
			bool refused = ((mode == GM_32 || mode == GM_PAE) && gva + len > (1ULL << 32)) ||
				       len > ~gva;
			bool adjacent = w + 1 < GM_NWIN && gm_windows[w + 1].base == end &&
					len - (end - gva) <= gm_windows[w + 1].npages * PAGE;

			if (!refused && !adjacent)
				len = end - gva;
		}
		a.addr = gva;
		a.len = len;
	}
	for (size_t i = 0; i < a.len; i += 8) {
		uint64_t x = rng_next(f);

		memcpy(buf + i, &x, a.len - i < 8 ? a.len - i : 8);
	}
	fz_access(f, &a);
}
