#!/bin/sh
# The CLI contract (DESIGN.md): exit 0 on success, 1 on a failed check, 2 on
# bad usage; `--json` prints exactly one JSON object carrying the documented keys.
set -u
VMMU="$1"
case "$VMMU" in /*) ;; *) VMMU="$(pwd)/$VMMU" ;; esac	# some checks run elsewhere
fail=0 passed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check_rc() { # want-rc description cmd...
	want=$1; what=$2; shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "FAIL: $what: exit $rc, want $want"; sed 's/^/  | /' "$tmp/err" | head -5
		fail=$((fail + 1))
	else
		passed=$((passed + 1))
	fi
}

check_keys() { # description keys...  (plain sh: no JSON tool on a fresh machine)
	what=$1; shift
	if [ "$(grep -c . "$tmp/out")" -ne 1 ] || ! grep -q '^{.*}$' "$tmp/out"; then
		echo "FAIL: $what: stdout is not one JSON object"; fail=$((fail + 1)); return
	fi
	if ! grep -q '"ok": *true' "$tmp/out"; then
		echo "FAIL: $what: ok is not true"; fail=$((fail + 1)); return
	fi
	if ! grep -q '^{"schema": [0-9][0-9]*, "vmmu_version": "[0-9][0-9.]*"' "$tmp/out"; then
		echo "FAIL: $what: the object does not start with schema and vmmu_version"; fail=$((fail + 1)); return
	fi
	for k in "$@"; do
		if ! grep -q "\"$k\": *[-0-9tfn\"]" "$tmp/out"; then
			echo "FAIL: $what: key $k missing"; fail=$((fail + 1)); return
		fi
	done
	passed=$((passed + 1))
}

# --json errors: exactly one JSON object on stdout, ok false, the error in
# words, the exit status the process returns; schema and version as always.
check_json_error() { # want-rc description cmd...
	want=$1; what=$2
	check_rc "$@"
	if [ "$(grep -c . "$tmp/out")" -ne 1 ] || ! grep -q '^{.*}$' "$tmp/out"; then
		echo "FAIL: $what: stdout is not one JSON object:"; sed 's/^/  | /' "$tmp/out" | head -3
		fail=$((fail + 1)); return
	fi
	for pat in '^{"schema": [0-9][0-9]*, "vmmu_version": "[0-9][0-9.]*"' '"ok": false' '"error": "[^"]' \
		"\"exit_status\": $want[,}]"; do
		if ! grep -q "$pat" "$tmp/out"; then
			echo "FAIL: $what: no match for $pat in:"; sed 's/^/  | /' "$tmp/out"
			fail=$((fail + 1)); return
		fi
	done
	passed=$((passed + 1))
}

check_json_error 2 "json: unknown command" "$VMMU" frobnicate --json
check_json_error 2 "json: unknown option before --json" "$VMMU" run --bogus --json
check_json_error 2 "json: unknown option after --json" "$VMMU" bench --json demand --bogus
check_json_error 2 "json: bad value" "$VMMU" run --json --mem 12Q
check_json_error 2 "json: missing value" "$VMMU" run --json --vcpus
check_json_error 2 "json: unknown scenario" "$VMMU" run nosuch --json
check_json_error 2 "json: missing bench" "$VMMU" bench --json
check_json_error 2 "json: option conflict" "$VMMU" run --mmu shadow --no-ad --json
check_json_error 2 "json: scenario refuses options" "$VMMU" run paging --mem 64K --vcpus 4 --json
check_json_error 2 "json: bench refuses options" "$VMMU" bench vcpus --vcpus 3 --json
check_json_error 2 "json: --trace for bench" "$VMMU" bench demand --trace "$tmp/t.json" --json
check_json_error 2 "json: --sweep for run" "$VMMU" run --sweep --json
check_json_error 2 "json: --sweep without a parameter" "$VMMU" bench walk --sweep --json
check_json_error 2 "json: --csv without --sweep" "$VMMU" bench vcpus --csv "$tmp/v.csv" --json
check_json_error 1 "json: runtime error" "$VMMU" run --mem 16M --trace "$tmp/no/such/dir/t.json" --json
check_rc 0 "run list json" "$VMMU" run list --json
if ! grep -q '^{"schema": [0-9][0-9]*, "vmmu_version": "[^"]*", "demand": "' "$tmp/out"; then
	echo "FAIL: run list json: want schema, vmmu_version, then the scenarios"; fail=$((fail + 1))
fi
check_rc 1 "runtime error, text" "$VMMU" run --mem 16M --trace "$tmp/no/such/dir/t.json"
if [ -s "$tmp/out" ] || ! grep -q 'trace.*no/such/dir' "$tmp/err"; then
	echo "FAIL: runtime error, text: want one line on stderr naming --trace, nothing on stdout"
	fail=$((fail + 1))
fi

check_rc 2 "unknown command" "$VMMU" frobnicate
check_rc 2 "unknown scenario" "$VMMU" run nosuch
check_rc 2 "unknown option" "$VMMU" run --bogus
check_rc 2 "bad size" "$VMMU" run --mem 12Q
check_rc 2 "zero vcpus" "$VMMU" run --vcpus 0
check_rc 2 "unknown bench" "$VMMU" bench nosuch
check_rc 0 "bench list" "$VMMU" bench list
check_rc 0 "help" "$VMMU" --help

for tdp in ept npt; do
	check_rc 0 "run demand $tdp" "$VMMU" run demand --mem 64M --tdp $tdp --json
	check_keys "run demand $tdp keys" scenario vcpus mem_bytes first_touch_ms first_touch_ns_per_page \
		retouch_ms retouch_ns_per_page pf_taken pf_fixed pages_4k pages_2m pages_1g mismatches
done
check_rc 0 "run demand 2m" "$VMMU" run --mem 64M --host-page 2m --json
check_keys "run demand 2m keys" pages_2m
check_rc 0 "run demand no-ad" "$VMMU" run --mem 32M --no-ad --json
check_rc 0 "run demand shadow" "$VMMU" run --mem 64M --mmu shadow --json
check_keys "run demand shadow keys" mmu first_touch_ns_per_page pf_fixed pages_4k mismatches
check_rc 2 "shadow without A/D" "$VMMU" run --mmu shadow --no-ad
check_rc 2 "bad mmu" "$VMMU" run --mmu nested
check_rc 0 "run human report" "$VMMU" run --mem 32M

# Guest paging: every read is checked against the frame the guest's tables
# say, through first touch, a remap by guest stores + INVLPG and CR3 switches.
for mmu in tdp shadow; do
	check_rc 0 "run paging $mmu" "$VMMU" run paging --mem 64M --mmu $mmu --json
	check_keys "run paging $mmu keys" scenario mmu guest pages huge_pages remapped_pages \
		build_ms first_touch_ms first_touch_ns_per_page retouch_ns_per_page remap_ns_per_page \
		cr3_switch_ns_per_page verify_ms mismatches pf_taken pf_fixed guest_faults pt_write_emulations \
		unsync_syncs root_fast_switches mmu_ctx_rebuilds shadow_pages pages_4k
	if ! grep -q '"mismatches": 0,' "$tmp/out" || ! grep -q '"guest_faults": 0,' "$tmp/out"; then
		echo "FAIL: run paging $mmu: mismatches or guest faults"; fail=$((fail + 1))
	fi
done
check_rc 0 "run paging 32-bit shadow" "$VMMU" run paging --mem 16M --mmu shadow --guest 32 --json
check_keys "run paging 32-bit keys" guest guest_huge_page remapped_pages
check_rc 0 "run paging 5-level npt" "$VMMU" run paging --mem 16M --tdp npt --guest 5level --vcpus 3 --json
check_rc 0 "run paging human report" "$VMMU" run paging --mem 16M --guest pae
check_rc 2 "paging bad guest mode" "$VMMU" run paging --guest 6level
check_rc 2 "guest mode for demand" "$VMMU" run demand --guest pae
check_rc 2 "paging memory too small" "$VMMU" run paging --mem 64K --vcpus 4
check_rc 0 "bench demand" "$VMMU" bench demand --mem 64M --reps 1 --json
check_keys "bench demand keys" first_touch_ns_per_page retouch_ns_per_page fault_ns \
	host_first_touch_ns_per_page host_retouch_ns_per_page first_touch_overhead retouch_overhead \
	first_touch_overhead_min first_touch_overhead_max first_touch_ns_per_page_min fault_ns_max \
	embedder_first_touch_overhead embedder_retouch_overhead meets_embedder_first_touch \
	breakdown_host_faultin_ns breakdown_mmu_fault_ns breakdown_hw_walk_ns breakdown_copy_ns \
	embedder_breakdown_host_faultin_ns prepopulated_breakdown_host_faultin_ns prepopulated_breakdown_mmu_fault_ns \
	fault_ns_over_retouch fault_vmmu_ns_per_page fault_host_ns_per_page
check_rc 0 "bench vcpus" "$VMMU" bench vcpus --mem 64M --reps 3 --json
check_keys "bench vcpus keys" pages_per_s_1vcpu pages_per_s_2vcpu pages_per_s_1vcpu_min scaling_bound \
	disturbed_reps host_cpus scaling

check_rc 0 "bench walk" "$VMMU" bench walk --mem 16M --reps 1 --json
check_keys "bench walk keys" tlb_hit_ns walk_2d_ns host_access_ns walk_overhead
check_rc 0 "bench walk npt" "$VMMU" bench walk --mem 16M --reps 1 --tdp npt --json

check_rc 0 "bench fastpf" "$VMMU" bench fastpf --mem 32M --reps 1 --json
check_keys "bench fastpf keys" fast_ns_per_fault slow_ns_per_fault speedup target_speedup meets_speedup \
	reps pages pml_supported wrprot_ns_per_page pml_ns_per_page wrprot_pml_ratio
check_rc 0 "bench fastpf npt 2 vcpus" "$VMMU" bench fastpf --mem 16M --reps 1 --tdp npt --vcpus 2 --json
check_rc 0 "bench dirtylog" "$VMMU" bench dirtylog --mem 32M --reps 1 --json
check_keys "bench dirtylog keys" enable_ms_per_gib get_ms_per_gib clear_ms_per_gib default_get_ms_per_gib \
	dirty_ns_per_page disable_ms_per_gib target_get_clear_ms_per_gib meets_get_clear
check_rc 0 "bench dirtylog no-ad" "$VMMU" bench dirtylog --mem 16M --reps 1 --no-ad --json

check_rc 0 "bench zap" "$VMMU" bench zap --mem 32M --reps 1 --json
check_keys "bench zap keys" delete_ns_per_page zap_all_fast_us zap_all_slow_us target_delete_ns_per_page \
	meets_delete reps pages
check_rc 0 "bench zap npt 2m" "$VMMU" bench zap --mem 16M --reps 1 --tdp npt --host-page 2m --json
check_rc 0 "bench notifier" "$VMMU" bench notifier --mem 32M --reps 1 --json
check_keys "bench notifier keys" ranges_per_s vcpu_accesses_per_s idle_ranges_per_s reps pages

# Shadow paging: every read the benches time is checked, so one repetition is
# a correctness test too (a stale root or missed page-table store fails it).
check_rc 0 "bench cr3switch" "$VMMU" bench cr3switch --reps 1 --json
check_keys "bench cr3switch keys" switch_ns_p1 switch_ns_p2 switch_ns_p3 switch_ns_p4 switch_ns_p5 \
	switch_ns_p6 switch_ns_noprev_p2 root_fast_switches_p1 root_slow_switches_p1 root_fast_switches_p4 \
	root_slow_switches_p4 root_fast_switches_p5 root_slow_switches_p5 root_fast_switches_noprev_p2 \
	root_slow_switches_noprev_p2 noprev_over_p2 switch_ns_unsync_p2 switch_ns_unsync_noprev_p2 \
	unsync_syncs_unsync_p2 unsync_syncs_unsync_noprev_p2 unsync_cache_gain unsync_cache_gain_min \
	target_unsync_cache_gain meets_unsync_cache_gain cliff_p5_over_p4 prev_roots reps
check_rc 0 "bench ptwrite" "$VMMU" bench ptwrite --reps 1 --json
check_keys "bench ptwrite keys" ptwrite_emulated_ns ptwrite_emulated_cycle_ns ptwrite_unsync_ns \
	ptwrite_unsync_first_ns ptwrite_unsync_cycle_ns pt_write_emulations unsync_syncs shadow_pte_writes \
	emulated_phase_pt_write_emulations unsync_phase_pt_write_emulations unsync_phase_unsync_syncs reps

# Nested guests: every L2 read is checked against a three-level reference.
for tdp in ept npt; do
	check_rc 0 "run nested $tdp" "$VMMU" run nested --mem 96M --tdp $tdp --json
	check_keys "run nested $tdp keys" scenario l2_pages round_trips first_touch_ns_per_page round_trip_ns \
		l1_remap_ns_per_page nested_entries nested_root_reuses mismatches shadow_pages
done
check_rc 2 "nested on shadow paging" "$VMMU" run nested --mmu shadow
check_rc 2 "nested memory too small" "$VMMU" run nested --mem 16M --vcpus 2
check_rc 0 "bench nested" "$VMMU" bench nested --reps 1 --json
check_keys "bench nested keys" roundtrip_ns_guest_mmu roundtrip_ns_single_mmu speedup target_speedup \
	meets_speedup walk_3d_ns host_access_ns walk_3d_overhead roundtrip_ns_guest_mmu_1vcpu_min \
	roundtrip_ns_single_mmu_nvcpu_max nested_root_reuses
check_rc 0 "bench nested npt 1 vcpu" "$VMMU" bench nested --reps 1 --tdp npt --vcpus 1 --json
# Private memory: every read of the run is checked against a reference, the
# bench verifies what it times; both fail on a security-module violation.
for tdp in ept npt; do
	check_rc 0 "run private $tdp" "$VMMU" run private --mem 32M --tdp $tdp --json
	check_keys "run private $tdp keys" private_touch_ns_per_page to_shared_ns_per_page dma_ns_per_page \
		to_private_ns_per_page conversions mirror_pt_pages secure_pt_pages violations
done
check_rc 0 "run private 2m 3 vcpus" "$VMMU" run private --mem 16M --host-page 2m --vcpus 3 --json
check_rc 2 "run private shadow" "$VMMU" run private --mmu shadow
check_rc 0 "bench private" "$VMMU" bench private --reps 1 --json
check_keys "bench private keys" private_fault_ns shared_fault_ns private_overhead convert_4k_ns convert_2m_ns \
	zap_all_ms violations verified

# README's synopsis lists every option --help documents.
readme="$(dirname "$0")/../README.md"
synopsis=$(sed -n '/^## The CLI/,/^`run demand`/p' "$readme")
for opt in $("$VMMU" --help | sed -n 's/^  \(--[a-z-]*\).*/\1/p'); do
	case "$synopsis" in
	*"$opt"*) passed=$((passed + 1)) ;;
	*) echo "FAIL: README's synopsis lacks $opt, which --help documents"; fail=$((fail + 1)) ;;
	esac
done

# --sweep: one CSV row per value of the bench's parameter, the medians,
# minima and maxima of each metric (tools/vmmu/sweep.h), results checked.
check_csv() { # description file rows columns
	if [ ! -f "$2" ]; then
		echo "FAIL: $1: no $2"; fail=$((fail + 1)); return
	fi
	got_rows=$(($(wc -l <"$2") - 1))
	bad=$(awk -F, -v n="$4" 'NF != n' "$2" | head -1)
	if [ "$got_rows" -ne "$3" ] || [ -n "$bad" ] || ! grep -q '_median,.*_min,.*_max' "$2"; then
		echo "FAIL: $1: want a header and $3 rows of $4 columns:"; sed 's/^/  | /' "$2" | head -8
		fail=$((fail + 1)); return
	fi
	passed=$((passed + 1))
}
check_rc 0 "bench vcpus sweep" "$VMMU" bench vcpus --sweep --reps 1 --mem 16M --vcpus 3 --csv "$tmp/vcpus.csv" --json
check_keys "bench vcpus sweep keys" sweep sweep_values points csv first_touch_pages_per_s_vcpus3 scaling_ratio_vcpus2
check_csv "bench vcpus sweep csv" "$tmp/vcpus.csv" 3 7
check_rc 0 "bench cr3switch sweep" "$VMMU" bench cr3switch --sweep --reps 1 --csv "$tmp/cr3switch.csv" --json
check_csv "bench cr3switch sweep csv" "$tmp/cr3switch.csv" 6 13
check_rc 0 "bench dirtylog sweep" "$VMMU" bench dirtylog --sweep --reps 1 --mem 64M --csv "$tmp/dirtylog.csv" --json
check_csv "bench dirtylog sweep csv" "$tmp/dirtylog.csv" 2 19
# without --csv: NAME.csv in the current directory
mkdir "$tmp/here"
(cd "$tmp/here" && "$VMMU" bench vcpus --sweep --reps 1 --mem 16M --vcpus 2 >/dev/null 2>&1)
check_csv "bench vcpus sweep default csv" "$tmp/here/vcpus.csv" 2 7

echo "cli: $passed passed, $fail failed"
[ "$fail" -eq 0 ]
