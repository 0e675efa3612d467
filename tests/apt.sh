# shellcheck shell=bash
# What the test installers share (sourced by tests/slurm/install.sh and tests/report/install_browser.sh):
# root or passwordless sudo, which Debian packages are missing, and apt commands whose output goes to
# a log that is printed only when one fails. The caller sets APT_WHO (its name, for messages) and
# APT_LOG (mktemp) before calling apt_logged.

# SUDO: empty when root, (sudo -n) otherwise; exits when neither is possible.
apt_sudo() {
    SUDO=()
    if [[ "$(id -u)" != "0" ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo -n)
        else
            echo "$APT_WHO: must be run as root (or with sudo available)" >&2
            exit 1
        fi
    fi
}

# MISSING: those of the given packages that are not fully installed.
apt_missing() {
    MISSING=()
    local pkg status
    for pkg in "$@"; do
        # dpkg-query prints "install ok installed" only for fully installed packages.
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        if [[ "$status" != "install ok installed" ]]; then
            MISSING+=("$pkg")
        fi
    done
}

# Run a command with its output appended to $APT_LOG; on failure print the log's tail and exit.
apt_logged() {
    if ! "$@" >>"$APT_LOG" 2>&1; then
        echo "$APT_WHO: command failed: $*" >&2
        echo "----- last 60 lines of $APT_LOG -----" >&2
        tail -n 60 "$APT_LOG" >&2
        exit 1
    fi
}

# apt-get update, then install the given packages without recommends, logged.
apt_install() {
    apt_logged "${SUDO[@]}" apt-get update -q
    apt_logged "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}
