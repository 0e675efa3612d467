#!/usr/bin/env bash
# Install bubblewrap (Debian's `bubblewrap`), the sandbox trial code runs in, for tests/hostile and
# the campaigns of the suite (executor.sandbox: auto picks it where it works). Idempotent; must run as
# root (or with passwordless sudo). Quiet on success; on failure apt's log is printed.
set -euo pipefail

PACKAGES=(bubblewrap)

APT_WHO=install_sandbox.sh
# shellcheck source=../apt.sh
. "$(dirname "$0")/../apt.sh"
apt_sudo
apt_missing "${PACKAGES[@]}"

if [[ ${#MISSING[@]} -eq 0 ]] && command -v bwrap >/dev/null; then
    echo "install_sandbox.sh: already installed (${PACKAGES[*]})"
    exit 0
fi

APT_LOG="$(mktemp /tmp/autosci-sandbox-install.XXXXXX.log)"
echo "install_sandbox.sh: installing ${MISSING[*]:-${PACKAGES[*]}} (log: $APT_LOG)"
apt_install "${PACKAGES[@]}"
command -v bwrap >/dev/null || { echo "install_sandbox.sh: bwrap not found after install" >&2; exit 1; }
rm -f "$APT_LOG"
echo "install_sandbox.sh: done"
