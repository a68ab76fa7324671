#!/bin/sh
# Installs what vmmu needs on Debian/Ubuntu when it is missing; a no-op otherwise.
set -e
need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
pkg-config --exists liburcu-memb 2>/dev/null || need="$need liburcu-dev"
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
