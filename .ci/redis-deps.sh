#!/usr/bin/env bash
# Installs what test/shared-limits.test.ts needs to share limits between replicas through a
# real Redis: redis-server (Debian package redis-server). The test starts its own server on a
# free loopback port, without persistence. Idempotent: does nothing when it is already there.
# Without apt-get (not Debian) it only says so; under CI that test then fails, naming it.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-deps: apt-get not found; install redis-server for the shared-limits test" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server >/dev/null
# The package starts a system service on 6379; the test needs only the binary.
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
echo "redis-deps: installed redis-server" >&2
