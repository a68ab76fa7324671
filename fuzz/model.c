/* SPDX-License-Identifier: MIT */
/*
 * The fuzzer's reference model (see model.h for the rules).  Everything
 * here is a linear scan on purpose: the model must be obviously right, not
 * fast.
 */
#include "model.h"

#include <stdlib.h>
#include <string.h>

#define HUGE_2M (2ULL << 20)

int model_init(struct model *m, uintptr_t arena, size_t arena_len)
{
	memset(m, 0, sizeof(*m));
	m->arena = arena;
	m->arena_len = arena_len;
	m->expect = calloc(arena_len, 1);
	m->prot = calloc(arena_len / MODEL_PAGE, 1);
	if (!m->expect || !m->prot) {
		model_free(m);
		return -1;
	}
	return 0;
}

static void slot_forget(struct model_slot *s)
{
	free(s->dirty);
	memset(s, 0, sizeof(*s));
}

void model_free(struct model *m)
{
	for (unsigned int i = 0; i < MODEL_MAX_SLOTS; i++)
		slot_forget(&m->slots[i]);
	free(m->expect);
	free(m->prot);
	m->expect = NULL;
	m->prot = NULL;
}

void model_reset(struct model *m)
{
	for (unsigned int i = 0; i < MODEL_MAX_SLOTS; i++)
		slot_forget(&m->slots[i]);
	memset(m->prot, VMMU_HOST_RW, m->arena_len / MODEL_PAGE);
	m->n_inval = 0;
	m->hull_start = m->hull_end = 0;
	m->xhull_start = m->xhull_end = 0;
	m->hull_sticky = false;
	m->released = false;
}

const struct model_slot *model_find(const struct model *m, uint64_t gpa, uintptr_t *hva)
{
	for (unsigned int i = 0; i < MODEL_MAX_SLOTS; i++) {
		const struct model_slot *s = &m->slots[i];

		if (s->used && gpa >= s->gpa && gpa - s->gpa < s->size) {
			if (hva)
				*hva = s->hva + (uintptr_t)(gpa - s->gpa);
			return s;
		}
	}
	return NULL;
}

static bool gpa_overlaps(const struct model *m, uint64_t gpa, uint64_t size, uint32_t except_id)
{
	for (uint32_t i = 0; i < MODEL_MAX_SLOTS; i++) {
		const struct model_slot *s = &m->slots[i];

		if (i != except_id && s->used && gpa < s->gpa + s->size && s->gpa < gpa + size)
			return true;
	}
	return false;
}

int model_check_memslot(const struct model *m, const struct vmmu_memslot *req, bool *exact)
{
	const struct model_slot *old = req->slot < MODEL_MAX_SLOTS ? &m->slots[req->slot] : NULL;

	*exact = false;
	if (!old || (req->flags & ~(uint32_t)(VMMU_MEM_READONLY | VMMU_MEM_LOG_DIRTY_PAGES)))
		return VMMU_EINVAL;
	if (req->size == 0) {
		*exact = true;	/* deleting what is not there */
		return old->used ? 0 : VMMU_ENOENT;
	}
	if ((req->gpa | req->size | (uintptr_t)req->hva) % MODEL_PAGE || !req->hva)
		return VMMU_EINVAL;
	if (req->host_page_size != MODEL_PAGE && req->host_page_size != HUGE_2M)
		return VMMU_EINVAL;
	if (old->used) {
		/* Only the gpa (a move) and the dirty-logging flag can change. */
		if (req->size != old->size || (uintptr_t)req->hva != old->hva ||
		    req->host_page_size != old->host_page || ((req->flags ^ old->flags) & VMMU_MEM_READONLY))
			return VMMU_EINVAL;
		if (req->gpa == old->gpa)
			return 0;
	}
	if (gpa_overlaps(m, req->gpa, req->size, req->slot)) {
		*exact = true;
		return VMMU_EEXIST;
	}
	return 0;
}

static uint64_t *new_dirty(uint64_t size)
{
	return calloc((size / MODEL_PAGE + 63) / 64, sizeof(uint64_t));
}

void model_apply_memslot(struct model *m, const struct vmmu_memslot *req)
{
	struct model_slot *s = &m->slots[req->slot];
	bool was_logging = s->used && (s->flags & VMMU_MEM_LOG_DIRTY_PAGES);

	if (req->size == 0) {
		slot_forget(s);
		return;
	}
	/*
	 * A new slot, or a moved one (KVM gives it a new bitmap), or logging
	 * switched on: nothing is owed to the next harvest yet.  Logging left
	 * on across a flags-only change keeps its record.
	 */
	if (!s->used || req->gpa != s->gpa || !was_logging) {
		free(s->dirty);
		s->dirty = new_dirty(req->size);
	}
	s->used = true;
	s->flags = req->flags;
	s->gpa = req->gpa;
	s->size = req->size;
	s->hva = (uintptr_t)req->hva;
	s->host_page = req->host_page_size;
}

unsigned int model_prot_at(const struct model *m, uintptr_t hva)
{
	if (hva < m->arena || hva - m->arena >= m->arena_len)
		return VMMU_HOST_RW;
	return m->prot[(hva - m->arena) / MODEL_PAGE];
}

bool model_hva_may_wait(const struct model *m, uintptr_t hva)
{
	uintptr_t lo = hva & ~(uintptr_t)(HUGE_2M - 1), hi = lo + HUGE_2M;
	uintptr_t hs = m->hull_start, he = m->hull_end;

	if (!m->n_inval)
		return false;
	if (m->xhull_end) {
		hs = m->xhull_start < hs ? m->xhull_start : hs;
		he = m->xhull_end > he ? m->xhull_end : he;
	}
	return lo < he && hs < hi;
}

void model_access(const struct model *m, uint64_t gpa, size_t len, bool write, struct model_result *res)
{
	size_t off = 0, n;

	memset(res, 0, sizeof(*res));
	for (; off < len; off += n) {
		uint64_t g = gpa + off;
		uintptr_t hva = 0;
		const struct model_slot *s = model_find(m, g, &hva);
		unsigned int prot;

		n = MODEL_PAGE - (g % MODEL_PAGE);
		if (n > len - off)
			n = len - off;
		/*
		 * Any page of a slot may have to be faulted in, and a fault that
		 * may touch an open invalidation waits, whatever it would end in:
		 * an exit can need a fault too (a stale MMIO SPTE carries no access
		 * type, so the fault that replaces it is a read), and KVM checks
		 * for invalidations before it looks at the host page.
		 */
		if (s && model_hva_may_wait(m, hva)) {
			res->outcome = MODEL_BLOCKED;
			return;
		}
		if (!s || (write && (s->flags & VMMU_MEM_READONLY))) {
			res->outcome = MODEL_MMIO;
			res->gpa = g;
			res->len = (uint32_t)n;
			res->offset = (uint32_t)off;
			res->readonly_slot = s != NULL;
			return;
		}
		prot = m->released ? VMMU_HOST_NONE : model_prot_at(m, hva);
		if (prot == VMMU_HOST_NONE || (prot == VMMU_HOST_RO && write)) {
			res->outcome = MODEL_MEMFAULT;
			res->gpa = g & ~(MODEL_PAGE - 1);
			return;
		}
	}
	res->outcome = MODEL_OK;
}

void model_commit_write(struct model *m, uint64_t gpa, const void *buf, size_t len)
{
	const uint8_t *b = buf;

	for (size_t i = 0; i < len; i++) {
		uintptr_t hva;
		struct model_slot *s = (struct model_slot *)model_find(m, gpa + i, &hva);

		if (!s)
			continue;	/* model_access() said OK: cannot happen */
		m->expect[hva - m->arena] = b[i];
		if ((s->flags & VMMU_MEM_LOG_DIRTY_PAGES) && s->dirty) {
			uint64_t pg = (gpa + i - s->gpa) / MODEL_PAGE;

			s->dirty[pg / 64] |= 1ULL << (pg % 64);
		}
	}
}

void model_mark_dirty(struct model *m, uint64_t gpa)
{
	struct model_slot *s = (struct model_slot *)model_find(m, gpa, NULL);

	if (s && (s->flags & VMMU_MEM_LOG_DIRTY_PAGES) && s->dirty) {
		uint64_t pg = (gpa - s->gpa) / MODEL_PAGE;

		s->dirty[pg / 64] |= 1ULL << (pg % 64);
	}
}

void model_expected_bytes(const struct model *m, uint64_t gpa, size_t len, uint8_t *out)
{
	for (size_t i = 0; i < len; i++) {
		uintptr_t hva;

		out[i] = model_find(m, gpa + i, &hva) ? m->expect[hva - m->arena] : 0;
	}
}

void model_set_prot(struct model *m, uintptr_t start, uintptr_t end, unsigned int prot)
{
	for (uintptr_t a = start; a < end; a += MODEL_PAGE)
		if (a >= m->arena && a - m->arena < m->arena_len)
			m->prot[(a - m->arena) / MODEL_PAGE] = (uint8_t)prot;
}

void model_discard(struct model *m, uintptr_t start, uintptr_t end)
{
	uintptr_t lo = start > m->arena ? start : m->arena;
	uintptr_t hi = end < m->arena + m->arena_len ? end : m->arena + m->arena_len;

	if (lo < hi)
		memset(m->expect + (lo - m->arena), 0, hi - lo);
}

bool model_inval_begin(struct model *m, uintptr_t start, uintptr_t end)
{
	if (m->n_inval == MODEL_MAX_INVAL)
		return false;
	if (m->n_inval == 0 && (!m->hull_sticky || m->hull_start == m->hull_end)) {
		m->hull_start = start;
		m->hull_end = end;
	} else {
		if (start < m->hull_start)
			m->hull_start = start;
		if (end > m->hull_end)
			m->hull_end = end;
	}
	m->inval[m->n_inval].start = start;
	m->inval[m->n_inval].end = end;
	m->n_inval++;
	return true;
}

void model_hull_extend(struct model *m, uintptr_t start, uintptr_t end)
{
	if (!m->n_inval && !m->hull_sticky)
		return;
	if (m->hull_start == m->hull_end) {
		m->hull_start = start;
		m->hull_end = end;
		return;
	}
	if (start < m->hull_start)
		m->hull_start = start;
	if (end > m->hull_end)
		m->hull_end = end;
}

void model_inval_end(struct model *m, unsigned int k, uintptr_t *start, uintptr_t *end)
{
	*start = m->inval[k].start;
	*end = m->inval[k].end;
	m->inval[k] = m->inval[--m->n_inval];
}

int64_t model_harvest(struct model *m, uint32_t id, const uint64_t *bitmap)
{
	struct model_slot *s = &m->slots[id];
	uint64_t words = (s->size / MODEL_PAGE + 63) / 64;
	int64_t missing = -1;

	for (uint64_t w = 0; w < words && s->dirty; w++) {
		uint64_t lack = s->dirty[w] & ~bitmap[w];

		if (lack && missing < 0)
			missing = (int64_t)(w * 64 + (uint64_t)__builtin_ctzll(lack));
		s->dirty[w] = 0;
	}
	return missing;
}
