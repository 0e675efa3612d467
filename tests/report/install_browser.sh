#!/usr/bin/env bash
# Install Debian's Chromium for tests/report/test_report_browser.py (Playwright drives it; no
# browser download). Idempotent: if it is already installed this does nothing, not even
# `apt-get update`. Must run as root (or with passwordless sudo). Quiet on success; on failure
# apt's log is printed and the script exits non-zero.
set -euo pipefail

# fonts-liberation: text in the screenshots renders in a real font (a recommends of chromium)
PACKAGES=(chromium fonts-liberation)

APT_WHO=install_browser.sh
# shellcheck source=../apt.sh
. "$(dirname "$0")/../apt.sh"
apt_sudo
apt_missing "${PACKAGES[@]}"

if [[ ${#MISSING[@]} -eq 0 && -x /usr/bin/chromium ]]; then
    echo "install_browser.sh: already installed (${PACKAGES[*]})"
    exit 0
fi

APT_LOG="$(mktemp /tmp/autosci-browser-install.XXXXXX.log)"
echo "install_browser.sh: installing ${MISSING[*]:-${PACKAGES[*]}} (log: $APT_LOG)"
apt_install "${PACKAGES[@]}"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "install_browser.sh: /usr/bin/chromium not found after install" >&2
    exit 1
fi
rm -f "$APT_LOG"
echo "install_browser.sh: done"
