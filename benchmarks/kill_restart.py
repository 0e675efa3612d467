"""kill -9 / restart cycles of a running campaign, then a check that nothing was lost or doubled.

    python benchmarks/kill_restart.py --cycles 100            # `make bench` runs this
    python benchmarks/kill_restart.py --cycles 5 --folder /tmp/kr

Each cycle starts `autosci coordinate` (agents as their own processes) on the same campaign folder
and kills it with SIGKILL after a random 1–4 s (start-up included), wherever it is: inside a write transaction,
between ingestion steps, while agents hold claims. Trials already submitted keep running. After the
cycles one last coordinator runs the campaign to the end. The script then checks:
`PRAGMA integrity_check` is ok; trials submitted = trial rows = trials finished = jobs that really
ran (counted from the executor's job folders, one per job submitit launched, not from the database);
no trial was executed, submitted or ingested twice; no (group, seed, attempt) twice; no proposal
left claimed; no idea blamed for a trial the machine lost (a proposal concluded "failed" only on
evidence: a program error, bad metrics, a timeout); no agent process outlived its coordinator.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(folder: Path, trials: int, retries: int = 2) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    return subprocess.Popen(
        [sys.executable, "-m", "autosci_hpc.cli", "coordinate", str(ROOT / "configs/campaign/toy_smoke.yaml"),
         f"campaign.folder={folder}", f"task.path={ROOT / 'tests/fixtures/tasks/toy'}", f"budget.trials={trials}",
         "coordination.poll_interval_s=0.1", "executor.result_grace_s=2", f"executor.max_retries={retries}",
         "--lease-ttl=5"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def executions(folder: Path) -> dict[int, int]:
    """Trial id -> jobs really launched for it, read from submitit's job folders under the campaign
    (`jobs/<job id>/<job id>_submitted.pkl`, holding the request the job runs), not from the database:
    a trial submitted twice shows up here even when every row and event looks right."""
    counts: dict[int, int] = {}
    for path in (folder / "jobs").glob("*/*_submitted.pkl"):
        with open(path, "rb") as handle:
            trial_id = int(pickle.load(handle).args[0].trial_id)
        counts[trial_id] = counts.get(trial_id, 0) + 1
    return counts


#: Failure classes that are evidence about an idea (the others are the machine's: retried).
EVIDENCE = ("program_error", "bad_metrics", "timeout", "out_of_memory")


def _running(folder: Path, pid: int) -> int:
    """1 if coordinator `pid` was running the campaign at this moment: it holds the lease (its start-up
    is over) and the campaign is past its baseline (a champion exists, agents at work), not finished.
    A kill during Python's start-up or while the baseline runs does not count as mid-run."""
    try:
        con = sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True, timeout=5)
        row = con.execute("select status from campaign").fetchone()
        lease = con.execute("select holder, pid from lease where id = 1").fetchone()
    except sqlite3.Error:
        return 0
    return int(row is not None and row[0] in ("discussion", "execution") and lease is not None
               and bool(lease[0]) and lease[1] == pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def check(folder: Path) -> dict[str, object]:
    time.sleep(2.0)  # agents leave within a poll or two of their coordinator
    con = sqlite3.connect(folder / "state.db")
    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    submitted, finished, status, restarts = con.execute(
        "select trials_submitted, trials_finished, status, restarts from campaign").fetchone()
    ran = executions(folder)
    evidence = ",".join(f"'{c}'" for c in EVIDENCE)
    return {
        "executions": sum(ran.values()),
        "max_executions_per_trial": max(ran.values(), default=0),
        "blamed_for_losses": one("select count(*) from proposal p where p.outcome = 'failed' and p.reject_reason = '' "
                                 "and not exists (select 1 from trial t where t.proposal_id = p.id and "
                                 f"t.failure_class in ({evidence}))"),
        "integrity": one("PRAGMA integrity_check"),
        "status": status,
        "restarts": restarts,
        "trials_submitted": submitted,
        "trial_rows": one("select count(*) from trial"),
        "trials_finished": finished,
        "max_submissions_per_trial": one("select coalesce(max(n), 0) from (select count(*) n from event "
                                         "where kind='trial.submitted' group by entity_id)"),
        "max_ingestions_per_trial": one("select coalesce(max(n), 0) from (select count(*) n from event "
                                        "where kind in ('trial.succeeded','trial.failed') group by entity_id)"),
        "max_rows_per_group_seed_attempt": one("select coalesce(max(n), 0) from (select count(*) n from trial "
                                               "group by \"group\", seed, attempt)"),
        "claimed_left": one("select count(*) from proposal where status='claimed'"),
        # Every agent process ever started must be gone once its coordinator is (killed or done).
        "agents_outliving_coordinator": sum(
            _alive(pid) for (pid,) in con.execute(
                "select json_extract(data, '$.pid') from event where kind='agent.started'")),
    }


def consistent(report: dict[str, object]) -> bool:
    return (report["integrity"] == "ok" and report["status"] == "finished"
            and report["trials_submitted"] == report["trial_rows"] == report["trials_finished"]
            == report["executions"] and report["max_executions_per_trial"] == 1
            and report["blamed_for_losses"] == 0
            and report["max_submissions_per_trial"] == 1 and report["max_ingestions_per_trial"] == 1
            and report["max_rows_per_group_seed_attempt"] == 1 and report["claimed_left"] == 0
            and report["agents_outliving_coordinator"] == 0)


def _wait_until_running(folder: Path, proc: subprocess.Popen[bytes], timeout_s: float = 300.0) -> None:
    """Wait (for a state, not a time) until `proc` coordinates past the baseline, or has exited."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not _running(folder, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def run(cycles: int, folder: Path, trials: int, seed: int = 0, min_s: float = 1.0,
        max_s: float = 4.0, mid_run_only: bool = False) -> dict[str, object]:
    """`mid_run_only`: each kill comes `min_s`..`max_s` after the coordinator took over a campaign
    past its baseline (instead of after its start, start-up included)."""
    rng = random.Random(seed)
    began = time.monotonic()
    killed = mid_run = 0
    # Retries outnumber the kills, so no lineage can run out of them: every loss must be retried.
    retries = cycles + 2
    for _ in range(cycles):
        proc = start(folder, trials, retries)
        if mid_run_only:
            _wait_until_running(folder, proc)
        time.sleep(rng.uniform(min_s, max_s))
        if proc.poll() is None:
            mid_run += _running(folder, proc.pid)
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    final = start(folder, trials, retries)
    _, err = final.communicate(timeout=900)
    if final.returncode != 0:
        raise SystemExit(f"the final coordinator failed ({final.returncode}): {err.decode()[-2000:]}")
    report = check(folder)
    report.update(cycles=cycles, killed=killed, killed_mid_run=mid_run, seconds=round(time.monotonic() - began, 1))
    report["consistent"] = consistent(report)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--trials", type=int, default=60, help="the campaign's trial budget")
    parser.add_argument("--folder", type=Path, help="campaign folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="autosci-kill-")) / "campaign"
    report = run(args.cycles, folder, args.trials, args.seed)
    print(json.dumps(report, indent=1))
    return 0 if report["consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())
