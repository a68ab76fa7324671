#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The installed copy works for programs outside the tree:
#
#   install_test.sh BUILD_DIR            installs BUILD_DIR into a temporary prefix first (ctest)
#   install_test.sh --installed PREFIX   checks what `make install PREFIX=...` put there (CI)
#
# It checks the installed files (SONAME, exported symbols, versions), then
# builds the installed examples (share/doc/vmmu/examples) outside the tree
# four ways, runs every binary and checks what it links:
#   pkg-config, shared:  cc ... $(pkg-config --cflags --libs vmmu)
#   pkg-config, static:  cc -static ... $(pkg-config --static --cflags --libs vmmu)
#   CMake, shared:       find_package(vmmu), vmmu::vmmu
#   CMake, static:       the same with -DVMMU_USE_STATIC_LIBS=ON
# and asks find_package() for the right and for a wrong version.
# Any failure fails the test (exit 1).
set -euo pipefail

fail() {
	echo "install_test: FAIL: $*" >&2
	exit 1
}
step() {
	echo "== $*"
}

case "${1:-}" in
--installed)
	[ $# = 2 ] || fail "usage: $0 BUILD_DIR | --installed PREFIX"
	prefix=$(cd "$2" && pwd)
	build=""
	;;
"" | -*)
	fail "usage: $0 BUILD_DIR | --installed PREFIX"
	;;
*)
	[ $# = 1 ] || fail "usage: $0 BUILD_DIR | --installed PREFIX"
	build=$(cd "$1" && pwd)
	prefix=""
	;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmmu-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-cc}
# The project's warning flags: the examples build clean with them.
cflags="-std=gnu11 -O2 -Wall -Wextra -Werror -Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wundef"
examples=(embedder migrate paging)

if [ -n "$build" ]; then
	step "cmake --install $build --prefix <tmp>/prefix"
	prefix=$tmp/prefix
	cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || {
		cat "$tmp/install.log" >&2
		fail "cmake --install"
	}
fi

# ---- the installed files --------------------------------------------------
step "installed files under $prefix"
pc=$(find "$prefix" -name vmmu.pc -path '*/pkgconfig/*')
[ -n "$pc" ] || fail "no vmmu.pc under $prefix"
libdir=$(dirname "$(dirname "$pc")")
header=$prefix/include/vmmu/vmmu.h
for f in "$prefix/bin/vmmu" "$header" "$prefix/include/vmmu/guest.h" "$libdir/libvmmu.a" \
	"$libdir/libvmmu_guest.a" "$libdir/libvmmu.so" "$libdir/pkgconfig/vmmu-guest.pc" \
	"$libdir/cmake/vmmu/vmmuConfig.cmake" "$libdir/cmake/vmmu/vmmuConfigVersion.cmake" \
	"$libdir/cmake/vmmu/vmmuTargets.cmake" "$prefix/share/doc/vmmu/LICENSE"; do
	[ -e "$f" ] || fail "missing $f"
done
for e in "${examples[@]}"; do
	[ -f "$prefix/share/doc/vmmu/examples/$e.c" ] || fail "missing example $e.c"
done
[ -f "$prefix/share/doc/vmmu/examples/CMakeLists.txt" ] || fail "missing examples/CMakeLists.txt"

define() {
	sed -n "s/^#define $1[[:space:]]\{1,\}\([0-9]\{1,\}\).*/\1/p" "$header"
}
version="$(define VMMU_VERSION_MAJOR).$(define VMMU_VERSION_MINOR).$(define VMMU_VERSION_PATCH)"
abi=$(define VMMU_ABI_VERSION)
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ && -n "$abi" ]] || fail "no version macros in $header"

# One version everywhere: header, CLI (vmmu_version()), .pc files, shared library's name.
cli=$("$prefix/bin/vmmu" --version)
[ "$cli" = "vmmu $version" ] || fail "vmmu --version says '$cli', the header $version"
[ -f "$libdir/libvmmu.so.$version" ] || fail "no $libdir/libvmmu.so.$version"
soname=$(readelf -d "$libdir/libvmmu.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libvmmu.so.$abi" ] || fail "SONAME '$soname', want libvmmu.so.$abi"
[ -e "$libdir/$soname" ] || fail "no $libdir/$soname for the dynamic linker"
# The shared library exports the API and nothing else.
others=$(nm -D --defined-only "$libdir/libvmmu.so" | awk '{ print $3 }' | grep -v '^vmmu_' || true)
[ -z "$others" ] || fail "libvmmu.so exports non-API symbols: $others"

# Only the prefix's .pc files, besides the system's (liburcu-memb.pc).
export PKG_CONFIG_PATH=$libdir/pkgconfig
for p in vmmu vmmu-guest; do
	v=$(pkg-config --modversion $p) || fail "pkg-config $p"
	[ "$v" = "$version" ] || fail "$p.pc says version $v, the header $version"
done
# A shared link needs no liburcu; a static one does.
pkg-config --libs vmmu | grep -q urcu && fail "pkg-config --libs vmmu mentions liburcu: $(pkg-config --libs vmmu)"
pkg-config --static --libs vmmu | grep -q -- -lurcu-memb ||
	fail "pkg-config --static --libs vmmu lacks liburcu-memb: $(pkg-config --static --libs vmmu)"

src=$tmp/examples
cp -r "$prefix/share/doc/vmmu/examples" "$src"

# ---- running and checking the binaries ------------------------------------
needed() {
	readelf -d "$1" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'
}
# check_links BINARY shared|static
check_links() {
	local n
	n=$(needed "$1")
	if [ "$2" = shared ]; then
		grep -qx "libvmmu.so.$abi" <<<"$n" || fail "$1 does not link libvmmu.so.$abi (needs: $(echo $n))"
		# liburcu is libvmmu.so's business, not the program's.
		grep -q urcu <<<"$n" && fail "$1 links liburcu itself (needs: $(echo $n))"
	else
		grep -q libvmmu <<<"$n" && fail "$1 links libvmmu dynamically (needs: $(echo $n))"
	fi
	return 0
}
# run_examples DIR shared|static: every example, every mode the tree's ctest runs.
run_examples() {
	local dir=$1 kind=$2 args
	for e in "${examples[@]}"; do
		[ -x "$dir/$e" ] || fail "$dir/$e was not built"
		check_links "$dir/$e" "$kind"
	done
	for args in "embedder" "migrate" "migrate --bitmap" "paging --mmu tdp" "paging --mmu shadow"; do
		# shellcheck disable=SC2086 # word splitting is the point: program and arguments
		set -- $args
		LD_LIBRARY_PATH=$libdir timeout 120 "$dir/$1" "${@:2}" >"$tmp/run.log" 2>&1 || {
			cat "$tmp/run.log" >&2
			fail "$kind $args (built in $dir)"
		}
		tail -n 1 "$tmp/run.log"
	done
}

# ---- pkg-config -------------------------------------------------------------
# -pthread is the examples' own: they start the vCPU threads themselves.
step "pkg-config, shared"
mkdir -p "$tmp/pc-shared" "$tmp/pc-static"
for e in embedder migrate; do
	# shellcheck disable=SC2046 # pkg-config's output is a list of flags
	$cc $cflags -pthread -o "$tmp/pc-shared/$e" "$src/$e.c" $(pkg-config --cflags --libs vmmu) ||
		fail "building $e with pkg-config (shared)"
done
# shellcheck disable=SC2046
$cc $cflags -pthread -o "$tmp/pc-shared/paging" "$src/paging.c" $(pkg-config --cflags --libs vmmu-guest) ||
	fail "building paging with pkg-config (shared)"
run_examples "$tmp/pc-shared" shared

step "pkg-config --static, linked -static"
for e in embedder migrate; do
	# shellcheck disable=SC2046
	$cc $cflags -pthread -static -o "$tmp/pc-static/$e" "$src/$e.c" $(pkg-config --static --cflags --libs vmmu) ||
		fail "building $e with pkg-config --static"
done
# shellcheck disable=SC2046
$cc $cflags -pthread -static -o "$tmp/pc-static/paging" "$src/paging.c" \
	$(pkg-config --static --cflags --libs vmmu-guest) || fail "building paging with pkg-config --static"
run_examples "$tmp/pc-static" static

# ---- CMake --------------------------------------------------------------------
# cmake_build DIR [-D...]: the installed examples as a CMake project of their own.
cmake_build() {
	local dir=$1
	shift
	cmake -S "$src" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
		"-DCMAKE_C_FLAGS=$cflags" "$@" >"$tmp/cmake.log" 2>&1 &&
		cmake --build "$dir" -j 2 >>"$tmp/cmake.log" 2>&1 || {
		cat "$tmp/cmake.log" >&2
		fail "CMake build in $dir ($*)"
	}
}
step "CMake find_package(vmmu), shared"
cmake_build "$tmp/cmake-shared"
run_examples "$tmp/cmake-shared" shared

step "CMake find_package(vmmu), VMMU_USE_STATIC_LIBS=ON"
cmake_build "$tmp/cmake-static" -DVMMU_USE_STATIC_LIBS=ON
run_examples "$tmp/cmake-static" static

step "CMake find_package(vmmu VERSION)"
mkdir -p "$tmp/version"
cat >"$tmp/version/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(vmmu_version_check LANGUAGES C)
find_package(vmmu $version EXACT REQUIRED COMPONENTS shared static guest)
if(NOT vmmu_VERSION STREQUAL "$version")
  message(FATAL_ERROR "vmmu_VERSION \${vmmu_VERSION}")
endif()
# A later major version is not this one.
find_package(vmmu $((${version%%.*} + 1)).0 QUIET)
if(vmmu_FOUND)
  message(FATAL_ERROR "find_package(vmmu $((${version%%.*} + 1)).0) accepted $version")
endif()
EOF
cmake -S "$tmp/version" -B "$tmp/version/build" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cmake.log" 2>&1 || {
	cat "$tmp/cmake.log" >&2
	fail "find_package(vmmu $version EXACT) or a wrong version accepted"
}

echo "install_test: ok ($prefix)"
