#!/usr/bin/env bash
# Install Debian's Chromium for tests/report/test_report_browser.py (Playwright drives it; no
# browser download). Idempotent: if it is already installed this does nothing, not even
# `apt-get update`. Must run as root (or with passwordless sudo). Quiet on success; on failure
# apt's log is printed and the script exits non-zero.
set -euo pipefail

# fonts-liberation: text in the screenshots renders in a real font (a recommends of chromium)
PACKAGES=(chromium fonts-liberation)

SUDO=()
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install_browser.sh: must be run as root (or with sudo available)" >&2
        exit 1
    fi
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 && -x /usr/bin/chromium ]]; then
    echo "install_browser.sh: already installed (${PACKAGES[*]})"
    exit 0
fi

log="$(mktemp /tmp/autosci-browser-install.XXXXXX.log)"
run_logged() {
    if ! "$@" >>"$log" 2>&1; then
        echo "install_browser.sh: command failed: $*" >&2
        echo "----- last 60 lines of $log -----" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}

echo "install_browser.sh: installing ${missing[*]:-${PACKAGES[*]}} (log: $log)"
run_logged "${SUDO[@]}" apt-get update -q
run_logged "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "install_browser.sh: /usr/bin/chromium not found after install" >&2
    exit 1
fi
rm -f "$log"
echo "install_browser.sh: done"
