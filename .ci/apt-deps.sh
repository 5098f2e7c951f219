#!/usr/bin/env bash
# Installs the Debian packages a test needs for real system tools, unless every binary it names
# is already there. Without apt-get (not Debian) it only says so, and the test reports what is
# missing (skips, or fails under CI where it must run).
# Usage: apt-deps.sh WHAT "BINARY..." PACKAGE...
set -euo pipefail

what=$1
bins=$2
shift 2

missing=0
for bin in $bins; do
  command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [ "$missing" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "$what: apt-get not found; install $* for the test that needs it" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "$@" >/dev/null
echo "$what: installed $*" >&2
