#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks a `vmmu run --trace FILE --json` trace against the run's report.

usage: trace_check.py TRACE.json REPORT.json

The trace must be Chrome trace-event JSON that the Perfetto UI opens: an
object whose "traceEvents" list holds events with name, ph, pid and tid;
instant ("i") and complete ("X") events with ts (and dur) in microseconds,
sorted by time, complete events nested properly on each track (a viewer
draws a track as a stack), every track named by a thread_name metadata
event.  Its events must add up to the counters of the report: one
page_fault per fault taken, one root_switch per CR3/EPTP switch, and so on.
Prints what is wrong and exits 1, or exits 0.
"""
import json
import sys
from collections import Counter
from decimal import Decimal


def ns(v):
    # ts and dur are printed as microseconds with three decimals: exact in ns
    return int(Decimal(str(v)) * 1000)


def check(trace, report):
    errs = []
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["not an object with a traceEvents list"]
    named, used = set(), set()
    counts = Counter()
    last_ts = -1
    stacks = {}
    sptes = 0
    events = 0
    for i, ev in enumerate(trace["traceEvents"]):
        where = "event %d (%s)" % (i, ev.get("name") if isinstance(ev, dict) else ev)
        if not isinstance(ev, dict):
            errs.append(where + ": not an object")
            continue
        for key, kind in (("name", str), ("ph", str), ("pid", int), ("tid", int)):
            if not isinstance(ev.get(key), kind):
                errs.append("%s: %s missing or not a %s" % (where, key, kind.__name__))
        ph = ev.get("ph")
        if ph == "M":
            if ev.get("name") == "thread_name":
                named.add(ev.get("tid"))
            continue
        if ph not in ("X", "i"):
            errs.append("%s: phase %r, want X, i or M" % (where, ph))
            continue
        if not isinstance(ev.get("cat"), str) or not isinstance(ev.get("args"), dict):
            errs.append(where + ": cat or args missing")
            continue
        if not isinstance(ev.get("ts"), (int, float)) or ev["ts"] < 0:
            errs.append(where + ": ts missing or negative")
            continue
        ts = ns(ev["ts"])
        if ts < last_ts:
            errs.append("%s: ts %s before the previous event's" % (where, ev["ts"]))
        last_ts = ts
        tid = ev["tid"]
        used.add(tid)
        stack = stacks.setdefault(tid, [])
        while stack and stack[-1] <= ts:
            stack.pop()
        if ph == "X":
            if not isinstance(ev.get("dur"), (int, float)) or ev["dur"] < 0:
                errs.append(where + ": dur missing or negative")
                continue
            end = ts + ns(ev["dur"])
            if stack and end > stack[-1]:
                errs.append("%s: ends after the event it starts in (tid %d)" % (where, tid))
            stack.append(end)
        elif ev.get("s") not in ("t", "p", "g"):
            errs.append(where + ": instant event without scope s")
        events += 1
        name, args = ev["name"], ev["args"]
        counts[name] += 1
        if name == "page_fault":
            counts["page_fault." + args.get("result", "?")] += 1
        elif name == "fast_page_fault":
            counts["fast_page_fault." + ("fixed" if args.get("fixed") else "spurious")] += 1
        elif name == "root_switch":
            counts["root_switch." + ("fast" if args.get("fast") else "slow")] += 1
        elif name == "zap_range":
            sptes += args.get("sptes", 0)
        if name in ("page_fault", "fast_page_fault", "root_load", "root_switch"):
            if not 1 <= tid <= report["vcpus"]:
                errs.append("%s: on tid %d, not a vCPU's (1..%d)" % (where, tid, report["vcpus"]))
    for tid in sorted(used - named):
        errs.append("tid %d has events but no thread_name" % tid)

    want = {
        "page_fault": "pf_taken",
        "page_fault.fixed": "pf_fixed",
        "page_fault.spurious": "pf_spurious",
        "page_fault.retry": "pf_retry",
        "fast_page_fault.fixed": "pf_fast_fixed",
        "fast_page_fault.spurious": "pf_fast_spurious",
        "remote_tlb_flush": "remote_tlb_flushes",
        "root_load": "mmu_reloads",
        "root_switch.fast": "root_fast_switches",
        "root_switch.slow": "root_slow_switches",
        "shadow_page_zap": "shadow_pages_zapped",
    }
    for name, key in want.items():
        if key not in report:
            errs.append("the report has no %s" % key)
        elif counts[name] != report[key]:
            errs.append("%d %s events, but %s is %d" % (counts[name], name, key, report[key]))
    if sptes > report.get("zapped_sptes", 0):
        errs.append("zap_range events zapped %d SPTEs, more than zapped_sptes %d"
                    % (sptes, report.get("zapped_sptes", 0)))
    if events != report.get("trace_events"):
        errs.append("%d events in the file, trace_events says %s" % (events, report.get("trace_events")))
    if not counts["page_fault"]:
        errs.append("no page_fault events at all")
    return errs


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[2])
    try:
        with open(sys.argv[1]) as f:
            trace = json.load(f)
        with open(sys.argv[2]) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print("trace_check: %s" % e)
        return 1
    errs = check(trace, report)
    for e in errs[:20]:
        print("trace_check: %s: %s" % (sys.argv[1], e))
    if len(errs) > 20:
        print("trace_check: ... and %d more" % (len(errs) - 20))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
