#!/usr/bin/env bash
# Installs what test/stores.test.ts needs to run the keyring store against a real Secret
# Service: dbus-daemon, dbus-send (package dbus) and gnome-keyring-daemon (gnome-keyring).
# Idempotent: does nothing when they are already there. Without apt-get (not Debian) it only
# says so, and that test skips with a message naming what is missing.
set -euo pipefail

missing=0
for bin in dbus-daemon dbus-send gnome-keyring-daemon; do
  command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [ "$missing" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "keyring-deps: apt-get not found; the real Secret Service test will be skipped" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq gnome-keyring dbus >/dev/null
echo "keyring-deps: installed gnome-keyring and dbus" >&2
