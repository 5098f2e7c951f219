#!/usr/bin/env bash
# Installs what test/shared-limits.test.ts needs to share limits between replicas through a
# real Redis: redis-server (Debian package redis-server). The test starts its own server on a
# free loopback port, without persistence. Idempotent: does nothing when it is already there.
# Without apt-get (not Debian) it only says so; under CI that test then fails, naming it.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
bash "$(dirname "$0")/apt-deps.sh" redis-deps redis-server redis-server
# The package may start a system service on 6379; the test needs only the binary.
if command -v systemctl >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
