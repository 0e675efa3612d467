"""`sbatch sbatch/launch_campaign.sh` on the test cluster: requeued mid-campaign, it completes.

The warning signal is injected with `scancel --signal=USR1 --batch`, exactly what Slurm's
`--signal=B:USR1@300` does before the walltime: the coordinator stops, releases its lease and
requeues its own job; the job starts again, resumes the campaign and finishes its budget.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import FIXTURE_TASKS, ROOT


def query(folder: Path, sql: str) -> list[tuple]:
    try:
        con = sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True, timeout=10)
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def wait_for(what: str, check, timeout: float = 240.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def requeued_and_consistent(folder: Path, out: Path) -> tuple[sqlite3.Connection, int]:
    """The coordinator caught the warning and resumed; the database is whole, every trial row was
    submitted once and finished. The open database and its trial count, for more checks."""
    log = out.read_text()
    assert "caught USR1" in log and "(resumed)" in log, log[-3000:]
    con = sqlite3.connect(folder / "state.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restarts, submitted, finished = con.execute(
        "select restarts, trials_submitted, trials_finished from campaign").fetchone()
    rows = con.execute("select count(*) from trial").fetchone()[0]
    assert restarts >= 1 and submitted == finished == rows
    assert con.execute("select max(n) from (select count(*) n from event where kind='trial.submitted' "
                       "group by entity_id)").fetchone()[0] == 1  # no trial submitted twice
    return con, rows


def test_the_coordinator_job_is_requeued_and_the_campaign_completes(tmp_path: Path, slurm_cluster: object) -> None:
    task_dir = tmp_path / "slow_toy"
    shutil.copytree(FIXTURE_TASKS / "toy", task_dir)
    cfg = task_dir / "program" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("sleep: 0.0", "sleep: 1.5"))
    folder = tmp_path / "campaign"
    out = tmp_path / "coordinator.out"
    partition = getattr(slurm_cluster, "partition")
    argv = ["sbatch", "--parsable", f"--output={out}", f"--chdir={ROOT}", f"--partition={partition}",
            "--time=10", "--export=ALL,AUTOSCI_VENV=" + str(Path(sys.executable).parent.parent),
            str(ROOT / "sbatch" / "launch_campaign.sh"), str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
            f"campaign.folder={folder}", f"task.path={task_dir}", "budget.trials=15", "executor.kind=slurm",
            f"executor.slurm.partition={partition}", "executor.slurm.time_min=5", "executor.result_grace_s=5",
            "coordination.poll_interval_s=0.2"]
    job = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        wait_for("a few finished trials", lambda: (query(folder, "select trials_finished from campaign")
                                                   or [(0,)])[0][0] >= 4)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
        wait_for("the requeue", lambda: query(folder, "select 1 from event where kind='campaign.requeued'"))
        wait_for("the campaign to finish",
                 lambda: (query(folder, "select status from campaign") or [("",)])[0][0] == "finished", 300)
        wait_for("the job to end", lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                                                          text=True).stdout.strip() == "", 60)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    con, rows = requeued_and_consistent(folder, out)
    assert rows >= 10
    assert con.execute("select count(*) from trial where status not in ('succeeded','failed')").fetchone()[0] == 0
    assert con.execute("select holder from lease").fetchone()[0] == ""  # released at the end
    resumed = con.execute("select data from event where kind='campaign.resumed'").fetchone()[0]
    assert '"slurm_restart_count": "1"' in resumed


pytestmark = pytest.mark.slurm
