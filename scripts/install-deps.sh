#!/bin/sh
# Installs what vmmu needs on Debian/Ubuntu when it is missing; a no-op otherwise.
# Building and `make check`, including tests/install_test.sh (the installed
# copy built against with pkg-config and CMake, shared and static) and the
# tests that read JSON with python3 (tests/trace_test.sh).
#   --plots  also matplotlib, for scripts/plot-bench (`make plots`); nothing
#            else needs it, so a plain `make check` does not install it.
set -e
plots=0
for a in "$@"; do
	case "$a" in
	--plots) plots=1 ;;
	*) echo "install-deps: unknown option '$a' (want --plots)" >&2; exit 2 ;;
	esac
done
need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
if command -v cc >/dev/null 2>&1; then
	# gcc only recommends the C library's headers and archives, and
	# tests/install_test.sh links the examples -static: libc6-dev.
	t=$(mktemp -d)
	echo 'int main(void) { return 0; }' >"$t/c.c"
	cc -static -o "$t/c" "$t/c.c" >/dev/null 2>&1 || need="$need libc6-dev"
	rm -rf "$t"
else
	need="$need gcc libc6-dev"
fi
# readelf and nm, for tests/install_test.sh (gcc brings them, clang may not).
{ command -v readelf && command -v nm; } >/dev/null 2>&1 || need="$need binutils"
command -v make >/dev/null 2>&1 || need="$need make"
pkg-config --exists liburcu-memb 2>/dev/null || need="$need liburcu-dev"
python3 -c 'import json' >/dev/null 2>&1 || need="$need python3"
# Debian's package, for Debian's python3: plot-bench runs under it when the
# python3 first on PATH (a pyenv or venv one) lacks matplotlib.
if [ "$plots" = 1 ] && ! python3 -c 'import matplotlib' >/dev/null 2>&1 &&
	! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1; }; then
	need="$need python3-matplotlib"
fi
[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: missing:$need (no apt-get here; install them by hand)" >&2
	exit 1
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "install-deps: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends $need
