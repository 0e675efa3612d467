"""Local executor through submitit, the monitor, and exactly-once ingestion."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sqlmodel import select

from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.monitor import Monitor, Observation, ingest
from autosci_hpc.execution.trial import TrialRequest
from autosci_hpc.state import Store
from autosci_hpc.state.models import Campaign, Trial
from autosci_hpc.task import load_task

TOY = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "toy"


def setup(tmp_path: Path, behaviours: list[str]) -> tuple[Store, list[TrialRequest]]:
    task = load_task(TOY)
    store = Store(tmp_path / "c")
    requests = []
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="toy", mode="decentralized"))
        for i, behaviour in enumerate(behaviours):
            trial = Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                          overrides={"behaviour": behaviour}, status="submitted")
            session.add(trial)
            session.flush()
            assert trial.id is not None
            trial.folder = str(tmp_path / "trials" / str(trial.id))
            requests.append(TrialRequest(trial_id=trial.id, folder=trial.folder, snapshot_dir=str(task.program_dir),
                                         command=task.command, overrides={"behaviour": behaviour}, seed=0,
                                         time_limit_s=3, metric="score", test_metric="test_score"))
    return store, requests


def record_jobs(store: Store, jobs: list) -> None:
    with store.write() as session:
        for job in jobs:
            trial = session.get(Trial, job.trial_id)
            assert trial is not None
            trial.job_id = job.job_id
            session.add(trial)


def drain(monitor: Monitor, store: Store, timeout: float = 60) -> dict[int, Trial]:
    deadline = time.monotonic() + timeout
    while monitor.outstanding() and time.monotonic() < deadline:
        for obs in monitor.observe():
            with store.write() as session:
                ingest(session, obs)
        time.sleep(0.2)
    with store.read() as session:
        return {t.id: t for t in session.exec(select(Trial)).all() if t.id is not None}


def test_trials_run_through_submitit_and_fail_as_data(tmp_path: Path) -> None:
    store, requests = setup(tmp_path, ["ok", "crash", "hang", "malformed"])
    executor = LocalTrialExecutor(tmp_path / "jobs", max_concurrent=4, timeout_min=2)
    jobs = executor.submit(requests)
    assert executor.submit_calls == 1 and len(jobs) == 4
    record_jobs(store, jobs)
    trials = drain(Monitor(store, executor, grace_s=1), store)
    by_behaviour = {t.overrides["behaviour"]: t for t in trials.values()}
    assert by_behaviour["ok"].status == "succeeded" and by_behaviour["ok"].metric is not None
    assert by_behaviour["crash"].failure_class == "program_error"
    assert "Traceback" in by_behaviour["crash"].log_tail
    assert by_behaviour["hang"].failure_class == "timeout"
    assert by_behaviour["malformed"].failure_class == "bad_metrics"
    with store.read() as session:
        assert session.exec(select(Campaign)).one().trials_finished == 4


def test_ingestion_happens_exactly_once(tmp_path: Path) -> None:
    store, requests = setup(tmp_path, ["ok"])
    executor = LocalTrialExecutor(tmp_path / "jobs", timeout_min=2)
    record_jobs(store, executor.submit(requests))
    trials = drain(Monitor(store, executor, grace_s=1), store)
    assert trials[requests[0].trial_id].status == "succeeded"
    # The same result observed again (a re-read file, a requeued array task) changes nothing.
    from autosci_hpc.execution.results import read_result

    result = read_result(Path(requests[0].folder), requests[0].trial_id)
    with store.write() as session:
        assert ingest(session, Observation(requests[0].trial_id, result=result)) is None
    with store.read() as session:
        assert session.exec(select(Campaign)).one().trials_finished == 1


def test_a_job_killed_without_a_result_fails_after_the_grace_window(tmp_path: Path) -> None:
    store, requests = setup(tmp_path, ["hang"])
    requests[0] = requests[0].model_copy(update={"time_limit_s": 60})
    executor = LocalTrialExecutor(tmp_path / "jobs", timeout_min=2)
    jobs = executor.submit(requests)
    record_jobs(store, jobs)
    monitor = Monitor(store, executor, grace_s=1)
    time.sleep(1.5)
    executor.cancel([jobs[0].job_id])
    trials = drain(monitor, store)
    trial = trials[requests[0].trial_id]
    assert trial.status == "failed" and trial.failure_class == "cancelled"
    assert "without a result file" in trial.failure_reason
    # The program ran in its own session; cancelling the job took its process group down too.
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", requests[0].folder], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the trial's program outlived its cancelled job"
        time.sleep(0.2)
