"""The local executor specifics: exactly-once ingestion, and a job killed before it could report.

(What every executor must do is in test_conformance.py, run against local and slurm.)
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sqlmodel import select

from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.monitor import Observation, ingest
from autosci_hpc.execution.results import read_result
from autosci_hpc.state.models import Campaign
from helpers import drain, make_trials, submit


def test_ingestion_happens_exactly_once(tmp_path: Path) -> None:
    store, requests = make_trials(tmp_path, [{"x": 0.2}])
    executor = LocalTrialExecutor(tmp_path / "jobs", timeout_min=2)
    submit(store, executor, requests)
    trials = drain(store, executor, grace_s=1)
    assert trials[requests[0].trial_id].status == "succeeded"
    # The same result observed again (a re-read file, a requeued array task) changes nothing.
    result = read_result(Path(requests[0].folder), requests[0].trial_id)
    with store.write() as session:
        assert ingest(session, Observation(requests[0].trial_id, result=result)) is None
    with store.read() as session:
        assert session.exec(select(Campaign)).one().trials_finished == 1


def test_a_job_killed_without_a_result_fails_after_the_grace_window(tmp_path: Path) -> None:
    store, requests = make_trials(tmp_path, [{"behaviour": "hang"}])
    executor = LocalTrialExecutor(tmp_path / "jobs", timeout_min=2)
    (job_id,) = submit(store, executor, requests)
    time.sleep(1.5)
    executor.cancel([job_id])
    trial = drain(store, executor, grace_s=1)[requests[0].trial_id]
    assert trial.status == "failed" and trial.failure_class == "cancelled"
    assert "without a result file" in trial.failure_reason
    # The program ran in its own session; cancelling the job took its process group down too.
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", requests[0].folder], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the trial's program outlived its cancelled job"
        time.sleep(0.2)



def test_a_coordinator_started_in_the_background_can_still_cancel_its_trials(tmp_path: Path) -> None:
    """A shell starts a background command (`nohup autosci run ... &`) with SIGINT ignored, and its
    children inherit that. submitit cancels a local job with SIGINT, so without care a cancelled trial
    ran on to its time limit and reported a timeout (here 20 s); it must end as cancelled."""
    import json
    import signal
    import sys

    script = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from pathlib import Path
from autosci_hpc.execution.local import LocalTrialExecutor
from helpers import drain, make_trials, submit
folder = Path(sys.argv[1])
store, requests = make_trials(folder, [{{"behaviour": "hang"}}], time_limit_s=20)
executor = LocalTrialExecutor(folder / "jobs", timeout_min=2)
(job_id,) = submit(store, executor, requests)
log = Path(requests[0].folder) / "trial.log"
while not log.exists():  # the trial has started
    time.sleep(0.05)
executor.cancel([job_id])
trial = drain(store, executor, grace_s=1)[requests[0].trial_id]
print(json.dumps([trial.status, trial.failure_class]))
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["failed", "cancelled"]
