#!/usr/bin/env bash
# Installs what test/stores.test.ts needs to run the keyring store against a real Secret
# Service: dbus-daemon, dbus-send (package dbus) and gnome-keyring-daemon (gnome-keyring).
# Idempotent: does nothing when they are already there. Without apt-get (not Debian) it only
# says so, and that test skips with a message naming what is missing.
set -euo pipefail
exec bash "$(dirname "$0")/apt-deps.sh" keyring-deps "dbus-daemon dbus-send gnome-keyring-daemon" gnome-keyring dbus
