#!/bin/sh
# scripts/plot-bench draws the CSVs of `vmmu bench NAME --sweep` as SVG and
# PNG.  matplotlib comes only with `scripts/install-deps.sh --plots` (make
# plots), so without it this test is skipped (exit 77), not failed.
set -u
VMMU="$1"
root="$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! python3 -c 'import matplotlib' 2>/dev/null &&
	! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; }; then
	echo "plot: SKIP: no matplotlib (scripts/install-deps.sh --plots installs it)"
	exit 77
fi
fail=0 passed=0
"$VMMU" bench vcpus --sweep --reps 1 --mem 16M --vcpus 2 --csv "$tmp/vcpus.csv" >/dev/null &&
	"$VMMU" bench dirtylog --sweep --reps 1 --mem 64M --csv "$tmp/dirtylog.csv" >/dev/null ||
	{ echo "FAIL: the sweeps"; exit 1; }
if ! "$root/scripts/plot-bench" -o "$tmp/img" "$tmp/vcpus.csv" "$tmp/dirtylog.csv" >"$tmp/out"; then
	echo "FAIL: plot-bench"; exit 1
fi
for b in vcpus dirtylog; do
	# PNG's signature, and an SVG document
	if [ "$(head -c 4 "$tmp/img/$b.png" | od -An -c | tr -d ' ')" = "211PNG" ] &&
		grep -q '<svg' "$tmp/img/$b.svg"; then
		passed=$((passed + 1))
	else
		echo "FAIL: $b: no PNG or SVG"; fail=$((fail + 1))
	fi
done
# a CSV that is not a sweep's is refused in words, not drawn
printf 'a,b\n1,2\n' >"$tmp/bad.csv"
if "$root/scripts/plot-bench" -o "$tmp/img" "$tmp/bad.csv" 2>"$tmp/err" || ! grep -q 'plot-bench: ' "$tmp/err"; then
	echo "FAIL: a bad CSV was not refused"; fail=$((fail + 1))
else
	passed=$((passed + 1))
fi
echo "plot: $passed passed, $fail failed"
[ "$fail" -eq 0 ]
