#!/bin/bash
# Launch (or resume) an autosci_hpc campaign's coordinator as a long-lived SLURM job:
#
#     sbatch sbatch/launch_campaign.sh configs/campaign/X.yaml [more.yaml ...] [key=value ...]
#
# The coordinator runs on a CPU node for the whole campaign and submits every trial as an array
# job of its own. When the walltime approaches, Slurm sends USR1 to this script; the coordinator
# stops handing out work, saves where it stands, releases its lease and requeues this job, which
# later starts again here and resumes the campaign from its folder (jobs still queued or running
# are re-attached, nothing is proposed or run twice).
#
# --- Slurm settings: edit for your site (or override on the sbatch command line) -----------------
#SBATCH --job-name=autosci-coordinator
#SBATCH --time=24:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=autosci-%x-%j.out
# USR1 to the batch shell (B:) 300 s before the limit. Not USR2 (submitit's own), not a signal
# NCCL catches; Slurm may deliver it up to a minute early, and the stop takes seconds.
#SBATCH --signal=B:USR1@300
# Uncomment to keep a single coordinator per job name, even if you sbatch twice:
# #SBATCH --dependency=singleton
# #SBATCH --partition=cpu
# #SBATCH --account=my-lab-account
# ----------------------------------------------------------------------------------------------

set -uo pipefail

# --- site lines: modules and the virtual environment on the shared filesystem --------------------
# module load python/3.11
VENV="${AUTOSCI_VENV:-${SLURM_SUBMIT_DIR:-$PWD}/.venv}"
if [ -f "$VENV/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
fi
# ----------------------------------------------------------------------------------------------

if [ "$#" -lt 1 ]; then
    echo "usage: sbatch sbatch/launch_campaign.sh CONFIG.yaml [more.yaml ...] [key=value ...]" >&2
    exit 2
fi
cd "${SLURM_SUBMIT_DIR:-$PWD}" || exit 2
echo "[$(date -Is)] autosci coordinator: job ${SLURM_JOB_ID:-none}, restart ${SLURM_RESTART_COUNT:-0}, host $(hostname)"

# The coordinator runs in the background and the shell waits: a trapped signal interrupts `wait`
# at once and is forwarded (a foreground child would delay the trap until it exited).
autosci coordinate "$@" &
child=$!
forward() {
    echo "[$(date -Is)] caught $1: asking the coordinator to stop and requeue"
    kill -USR1 "$child" 2>/dev/null
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
status=0
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
done
echo "[$(date -Is)] autosci coordinator exited with status $status"
exit "$status"
