#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Starting inputs for a libFuzzer campaign that get guest paging going.

Random bytes rarely build a working page-table hierarchy and turn paging on,
so a campaign over guest paging starts from these: for each MMU configuration
and guest paging mode, RAM slots, two address spaces, mappings of 4K and huge
pages, paging on, and then accesses mixed with PTE edits, CR3 switches (with
PCIDs and no-flush), INVLPG/INVPCID, CR0/CR4 changes, host-side operations and
paging off and on.  The byte layout follows the decoders in fuzz_ops.c and
fuzz_guest.c; libFuzzer takes it from there (fuzz/README.md).

    fuzz/seeds.py OUTDIR [ROUNDS]

ROUNDS (default 1) repeats the set with other random choices.
"""
import os
import random
import struct
import sys

OP_ACCESS, OP_BURST, OP_SLOT_CREATE, OP_SLOT_DELETE, OP_SLOT_MOVE = 0, 12, 13, 15, 16
OP_SLOT_FLAGS, OP_HOST_PROT, OP_INVAL_BEGIN, OP_INVAL_END, OP_DISCARD = 17, 18, 20, 21, 22
OP_ZAP_RANGE, OP_ZAP_ALL, OP_FLUSH, OP_HARVEST, OP_AUDIT, OP_MEMCHECK = 23, 24, 25, 26, 27, 28
OP_AGE, OP_PT_MAP, OP_PTE_WRITE, OP_AS_CREATE, OP_AS_LOAD = 31, 32, 38, 43, 44
OP_INVLPG, OP_INVPCID, OP_CR_TOGGLE, OP_PAGING_OFF, OP_HOST_WAIT = 48, 50, 51, 55, 57

# gos_create's mode table: index -> mode
MODE_INDEX = {"4level": 0, "32": 1, "pae": 2, "5level": 4}
# window pages (gmodel.c): the first 26 are below 4G
LOW_PAGES = 26
ALL_PAGES = 38


def u8(x):
    return bytes([x & 0xff])


def u16(x):
    return struct.pack("<H", x & 0xffff)


def u32(x):
    return struct.pack("<I", x & 0xffffffff)


class Seed:
    def __init__(self, cfgb, cfg2, mode, rnd):
        self.b = bytearray(u8(cfgb) + u8(cfg2))
        if cfg2 & 0x20:
            # the host thread's script (fuzz_thread.c): 48 operation bytes,
            # now and then only operations that change no mapping (harvests,
            # flushes, audits, aging), so that stores race with harvests alone
            gentle = [9, 10, 11, 23, 27, 5, 6, 7, 8]
            first = rnd.randrange(0xc0)        # version 0: the slot exists
            if rnd.randrange(3) == 0:
                self.b += bytes([first & ~3] + [rnd.choice(gentle) + 32 * rnd.randrange(8) for _ in range(47)])
            else:
                self.b += bytes([first] + [rnd.randrange(256) for _ in range(47)])
        self.mode = mode
        self.r = rnd

    def op(self, code, payload=b""):
        self.b += u8(code) + payload

    def alloc(self, slot_pick=0):
        return u8(slot_pick << 3) + u16(self.r.randrange(1 << 16))

    def slot_create(self, sid, buf, gpn, npages, huge=False, log=False):
        b = buf | 0x04 | (0x00 if log else 0x10) | (0xc0 if huge else 0)
        self.op(OP_SLOT_CREATE, u8(sid) + u8(b) + u8(0) + u16(0) + u16(gpn) + u16(npages - 1))

    def as_create(self, k, vcpu=0):
        a = k | ((vcpu | (MODE_INDEX[self.mode] << 1)) << 2)
        self.op(OP_AS_CREATE, u8(a) + self.alloc(self.r.randrange(2)))

    def page(self):
        if getattr(self, "pinned", None) is not None:
            return self.pinned
        # Mostly a few pages, so that accesses, edits and invalidations meet
        # (a stale translation needs an access, an edit, and an access again).
        n = LOW_PAGES if self.mode in ("32", "pae") else ALL_PAGES
        if not hasattr(self, "focus"):
            self.focus = [self.r.randrange(n) for _ in range(4)]
        return self.r.choice(self.focus) if self.r.randrange(10) < 7 else self.r.randrange(n)

    def pt_map(self, k, vcpu=0, size=0, frame_kind=2, flags=0x07, invlpg=True, how=0):
        b0 = vcpu | (k << 1)
        b1 = {0: 0, 2: 5, 3: 7}[size] | (0x08 if invlpg else 0)
        b2 = frame_kind | (self.r.randrange(2) << 3)
        b3 = flags | (how << 2)
        b4 = self.r.randrange(256) & ~0x38   # no reserved bits, usually
        self.op(OP_PT_MAP, u8(b0) + u8(b1) + u8(b2) + u8(b3) + u8(b4) + u16(self.page()) +
                u16(self.r.randrange(1 << 16)) + self.alloc(self.r.randrange(2)))

    def pte_write(self, k, vcpu=0, kind=None, level=None, how=None, invlpg=None):
        inv = self.r.randrange(2) if invlpg is None else int(invlpg)
        b0 = vcpu | (k << 1) | (inv << 4)
        lvl = level if level is not None else self.r.randrange(8)
        kd = kind if kind is not None else self.r.randrange(8)
        b1 = lvl | (kd << 3)
        b2 = self.r.randrange(16) | ((how if how is not None else self.r.randrange(4)) << 4)
        self.op(OP_PTE_WRITE, u8(b0) + u8(b1) + u8(b2) + u16(self.page()) +
                u32(self.r.randrange(1 << 32)) + u32(self.r.randrange(1 << 32)) + self.alloc())

    def as_load(self, k, vcpu=0, pcid=0, noflush=False, via_state=False):
        # bits 1-3: EFER.NXE (and CR4.PSE) when paging comes on
        b1 = pcid | (0x40 if noflush else 0) | self.r.choice([0x06, 0x06, 0x00, 0x08])
        b2 = (0x80 if via_state else 0) | (self.r.randrange(2) << 6)
        self.op(OP_AS_LOAD, u8(vcpu | (k << 1)) + u8(b1) + u8(b2) + self.alloc())

    def access(self, vcpu=0, write=False, phys=False, length=None, fetch=False, cross=False, host=False):
        lens = {1: 0, 2: 1, 4: 2, 8: 3}
        sel = lens.get(length, 7) if length is not None else self.r.choice([0, 1, 2, 3, 7])
        b = vcpu | (2 if write else 0) | (4 if phys else 0) | (sel << 3)
        c = (0x0f if fetch else 0) | (0x80 if cross else 0)
        rl = (length - 1) if length and sel == 7 else self.r.randrange(3 * 4096)
        if host:
            # pick_gpa's "anywhere" (mode 6) inside the host thread's gpa space
            # pick_gpa relative to used slot 2 of 0, 1 and the host slot:
            # where the host slot is now, a few pages of it
            gpa_pick = u8(2 << 3) + u32(self.r.choice([0, 1, 2, 3, 60, 61]) * 4096 + self.r.randrange(4000))
        else:
            gpa_pick = u8(self.r.choice([0, 1, 2, 3, 5])) + u32(self.r.randrange(1 << 32))
        payload = (u8(b) + u8(c) + u16(rl) + u16(self.page()) + u16(self.r.randrange(4096)) + gpa_pick)
        self.op(OP_ACCESS + self.r.randrange(12), payload)

    def invlpg(self, vcpu=0):
        self.op(OP_INVLPG, u8(vcpu | (self.r.randrange(64) << 1)) + u16(self.page()))

    def invpcid(self, vcpu=0, typ=None):
        t = typ if typ is not None else self.r.randrange(4)
        self.op(OP_INVPCID, u8(vcpu | (t << 1)) + u8(self.r.randrange(4)) + u16(self.page()))

    def cr_toggle(self, vcpu=0, what=None):
        w = what if what is not None else self.r.randrange(12)
        self.op(OP_CR_TOGGLE, u8(vcpu | (w << 1)) + u8(self.r.randrange(256)))

    def host_op(self):
        c = self.r.randrange(8)
        if c == 0:
            self.op(OP_ZAP_ALL)
        elif c == 1:
            self.op(OP_FLUSH)
        elif c == 2:
            self.op(OP_ZAP_RANGE, u16(self.r.randrange(8192)) + u16(self.r.randrange(2048)))
        elif c == 3:
            self.op(OP_HARVEST, u8(1))
        elif c == 4:
            self.op(OP_AUDIT)
        elif c == 5:
            self.op(OP_AGE, u16(self.r.randrange(8192)) + u16(self.r.randrange(2048)) + u8(1))
        elif c == 6:
            self.op(OP_MEMCHECK, u16(self.r.randrange(3072)))
        else:
            self.op(OP_SLOT_FLAGS, u8(1) + u16(0))


def unsync(s, k, v):
    # A kernel's pattern: map a gva onto the page table of another (frame
    # kind 1, writable), touch the other, rewrite its PTE through the alias,
    # touch it again (stale or not), INVLPG, touch it again.
    n = LOW_PAGES if s.mode in ("32", "pae") else ALL_PAGES
    x, alias = s.r.randrange(n), s.r.randrange(n)
    s.pinned = x
    s.pt_map(k, vcpu=v, size=0, frame_kind=2, flags=0x07, how=0)
    s.access(vcpu=v, write=s.r.randrange(2) == 1, length=8)
    s.pinned = alias
    s.op(OP_PT_MAP, u8(v | (k << 1)) + u8(0x08) + u8(1) + u8(0x03) + u8(0) + u16(alias) + u16(x) +
         s.alloc())   # the alias: frame kind 1 = the PT holding x's PTE (level 1)
    s.pinned = x
    s.pte_write(k, vcpu=v, kind=s.r.choice([0, 2, 5, 6]), level=0, how=1, invlpg=False)
    s.access(vcpu=v, length=8)
    s.access(vcpu=v, write=True, length=8)
    how = s.r.randrange(4)
    if how == 0:
        s.invlpg(vcpu=v)
    elif how == 1:
        s.as_load(k, vcpu=v)               # a flushing MOV to CR3 (PCID 0 without PCIDE)
    else:
        s.invpcid(vcpu=v, typ=s.r.choice([1, 2, 3]))
    s.access(vcpu=v, length=8)
    s.pinned = None


def cut(s, k, v):
    # Under shadow paging a store into a write-protected guest table is
    # emulated on its own (vmmu.h): map window-0 page 2 onto the level-2
    # table of page 0, then store across its end into page 3 (unmapped in
    # this fresh space): the first page is written, the second faults.
    s.pinned = 0
    s.pt_map(k, vcpu=v, size=0, frame_kind=2, flags=0x07, invlpg=True, how=0)
    s.pinned = 2
    s.op(OP_PT_MAP, u8(v | (k << 1)) + u8(0x08) + u8(1) + u8(0x03) + u8(0) + u16(2) + u16((1 << 12) | 0) +
         s.alloc())
    s.pinned = None
    b = v | 2 | (7 << 3)                       # a write, length from rl
    c = 0x80                                   # near the end of the page
    s.op(OP_ACCESS, u8(b) + u8(c) + u16(15) + u16(2) + u16(7) + u8(0) + u32(0))


def build(cfgb, cfg2, mode, seed):
    r = random.Random(seed)
    s = Seed(cfgb, cfg2, mode, r)
    s.slot_create(0, 2, 0, 1024, huge=True)            # 4M of RAM at gpa 0, 2M host pages
    s.slot_create(1, 3, 0x1000, 512, log=True)           # 2M at 16M, dirty logging
    for k in (0, 1):
        s.as_create(k, vcpu=k)
    for k in (0, 1):
        for _ in range(10):
            s.pt_map(k, vcpu=k, size=r.choice([0, 0, 0, 2, 3]), frame_kind=r.choice([2, 2, 2, 3, 1, 0]),
                     flags=r.choice([0x07, 0x03, 0x05, 0x87, 0x67]), how=r.randrange(4))
    s.as_load(0, vcpu=0)
    s.as_load(1, vcpu=1)
    if cfgb & 0x40 and mode != "pae":
        # address space 2, fresh: the store that vmmu cuts in two
        s.as_create(2, vcpu=0)
        s.as_load(2, vcpu=0)
        cut(s, 2, 0)
        s.as_load(0, vcpu=0)
    for step in range(60):
        c = r.randrange(20)
        v = r.randrange(2)
        if c < 7 and (cfg2 & 0x20) and r.randrange(2):
            s.access(vcpu=v, write=r.randrange(2) == 1, phys=True, host=True,
                     length=r.choice([1, 2, 4, 8, 8, 100, 5000]))
            s.op(OP_HOST_WAIT, u8(r.randrange(4)))
        elif c < 7:
            s.access(vcpu=v, write=r.randrange(2) == 1, phys=r.randrange(8) == 0, fetch=r.randrange(10) == 0,
                     cross=r.randrange(4) == 0, length=r.choice([1, 2, 4, 8, 8, 100, 5000, 9000]))
        elif c < 10:
            s.pt_map(r.randrange(2), vcpu=v, size=r.choice([0, 0, 2, 3]), frame_kind=r.choice([2, 3, 1, 0]),
                     invlpg=r.randrange(2) == 0, how=r.randrange(4))
        elif c < 12:
            s.pte_write(r.randrange(2), vcpu=v)
        elif c < 14:
            s.as_load(r.randrange(2), vcpu=v, pcid=r.randrange(4), noflush=r.randrange(2) == 0,
                      via_state=r.randrange(4) == 0)
        elif c == 14:
            s.invlpg(vcpu=v)
        elif c == 15:
            s.invpcid(vcpu=v)
        elif c == 16:
            s.cr_toggle(vcpu=v, what=r.choice([0, 1, 2, 3, 4, 5, 5, 7, 8, 9]))
        elif c == 17 and r.randrange(2):
            unsync(s, r.randrange(2), v)
        elif c == 17:
            s.op(OP_PAGING_OFF, u8(v))
            s.access(vcpu=v, write=True)
            s.as_load(v, vcpu=v)
        else:
            s.host_op()
    return bytes(s.b)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "seeds"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    os.makedirs(out, exist_ok=True)
    # (config byte, second config byte, modes): TDP formats (value % 5) and shadow (bit 6)
    configs = [
        (0, 0x00, ["32", "pae", "4level"]),        # EPT 4-level
        (1, 0x00, ["4level"]),                     # EPT without A/D (access tracking)
        (2, 0x00, ["4level", "5level"]),           # EPT 5-level
        (3, 0x08, ["pae", "4level"]),              # NPT 4-level, PML
        (4, 0x00, ["5level", "32"]),               # NPT 5-level
        (0x40, 0x00, ["32", "pae", "4level", "5level"]),   # shadow
        (0x40, 0x05, ["4level", "pae"]),           # shadow, no previous roots, tiny shadow_max_pages
        (0x48, 0x13, ["4level"]),                  # shadow, no huge pages, MAXPHYADDR 36, 8 prev roots
        (0, 0x20, ["4level", "pae"]),              # threaded: EPT 4-level
        (3, 0x28, ["4level"]),                     # threaded: NPT, PML
        (0x40, 0x20, ["4level", "32"]),            # threaded: shadow
    ]
    n = 0
    for _ in range(rounds):
        for cfgb, cfg2, modes in configs:
            for mode in modes:
                data = build(cfgb, cfg2, mode, n)
                with open(os.path.join(out, "seed-%03d-%02x-%02x-%s" % (n, cfgb, cfg2, mode)), "wb") as f:
                    f.write(data)
                n += 1
    print("%d seeds in %s" % (n, out))


if __name__ == "__main__":
    main()
