#!/bin/sh
# `vmmu run --trace FILE`: the file is a Chrome trace-event JSON that the
# Perfetto UI opens, and its events add up to the run's --json counters
# (trace_check.py says what it checks).  Run with the plain binary and, by
# make check, with the sanitizer trees' (the tracer runs on every vCPU thread).
set -u
VMMU="$1"
here=$(dirname "$0")
fail=0 passed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! python3 -c 'import json' 2>/dev/null; then
	echo "trace: python3 is missing (scripts/install-deps.sh installs it)"
	exit 1
fi

check_trace() { # description run-args...
	what=$1; shift
	rm -f "$tmp/trace.json"
	"$VMMU" run "$@" --trace "$tmp/trace.json" --json >"$tmp/report.json" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "FAIL: $what: exit $rc"; sed 's/^/  | /' "$tmp/err" | head -5
		fail=$((fail + 1))
	elif ! python3 "$here/trace_check.py" "$tmp/trace.json" "$tmp/report.json"; then
		echo "FAIL: $what: the trace does not check"
		fail=$((fail + 1))
	else
		passed=$((passed + 1))
	fi
}

# TDP faults on two vCPUs; shadow paging's faults, flushes and CR3 switches
# (cached and not); a nested guest's faults and EPTP/nCR3 switches.
check_trace "demand tdp" demand --mem 16M --vcpus 2
check_trace "demand shadow" demand --mem 16M --vcpus 2 --mmu shadow
check_trace "paging shadow" paging --mem 16M --vcpus 2 --mmu shadow
check_trace "paging tdp npt" paging --mem 16M --vcpus 2 --tdp npt
check_trace "nested ept" nested --mem 64M --vcpus 2
check_trace "nested npt" nested --mem 32M --vcpus 1 --tdp npt

echo "trace: $passed passed, $fail failed"
[ "$fail" -eq 0 ]
