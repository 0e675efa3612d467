#!/usr/bin/env bash
# Install the Debian packages needed for the test SLURM cluster
# (see tests/slurm/cluster.sh).  Idempotent: if every package is already
# installed this does nothing, not even `apt-get update`.
#
#   bash tests/slurm/install.sh            # controller, node, client, munge, accounting
#   AUTOSCI_SLURM_NO_ACCOUNTING=1 bash tests/slurm/install.sh   # skip slurmdbd + MariaDB
#
# Must run as root (or with passwordless sudo).  Output is quiet on success;
# on failure apt's full log is printed and the script exits non-zero.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
# slurmdbd + MariaDB give a real `sacct`, which submitit uses to read job
# states (without it a job that dies before writing its result blocks forever).
if [[ "${AUTOSCI_SLURM_NO_ACCOUNTING:-0}" != "1" ]]; then
    PACKAGES+=(slurmdbd mariadb-server)
fi

APT_WHO=install.sh
# shellcheck source=../apt.sh
. "$(dirname "$0")/../apt.sh"
apt_sudo
apt_missing "${PACKAGES[@]}"

if [[ ${#MISSING[@]} -eq 0 ]]; then
    echo "install.sh: all SLURM test packages already installed (${PACKAGES[*]})"
    exit 0
fi

APT_LOG="$(mktemp /tmp/autosci-slurm-install.XXXXXX.log)"
echo "install.sh: installing ${MISSING[*]} (log: $APT_LOG)"
export DEBIAN_FRONTEND=noninteractive
# Without systemd the packages' postinst scripts may try to start services via
# invoke-rc.d; policy-rc.d exit 101 forbids that, so installing never starts
# daemons behind our back (cluster.sh starts exactly what it needs).  Only
# installed for the duration of this script, and only if none exists already.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [[ "$created_policy" == "1" ]]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

apt_install "${MISSING[@]}"

# Verify: the binaries cluster.sh needs are really there.
need=(slurmctld slurmd sinfo sbatch scontrol munged)
if [[ "${AUTOSCI_SLURM_NO_ACCOUNTING:-0}" != "1" ]]; then
    need+=(slurmdbd sacct sacctmgr)
fi
for bin in "${need[@]}"; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then
        echo "install.sh: '$bin' not found after install" >&2
        exit 1
    fi
done
rm -f "$APT_LOG"
echo "install.sh: done"
