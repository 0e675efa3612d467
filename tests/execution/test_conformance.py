"""One test body, every executor: local (always) and slurm (on the single-node cluster).

An executor must run a batch in one submission, let the result files decide success, classify
what failed, report job states in one call, and cancel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from sqlmodel import select

from autosci_hpc.execution.executors import TrialExecutor
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.monitor import Monitor, ingest
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from autosci_hpc.execution.trial import TrialRequest
from autosci_hpc.state import Store
from autosci_hpc.state.models import Campaign, Trial
from autosci_hpc.task import load_task
from helpers import FIXTURE_TASKS


@pytest.fixture(params=["local", "slurm"])
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrialExecutor]:
    if request.param == "local":
        yield LocalTrialExecutor(tmp_path / "jobs", max_concurrent=4, timeout_min=3)
    else:
        cluster = request.getfixturevalue("slurm_cluster")
        yield SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5, "slurm_partition": cluster.partition},
                                 job_name="autosci-conformance", min_poll_s=0.5, max_poll_s=2)


def make_trials(tmp_path: Path, specs: list[dict]) -> tuple[Store, list[TrialRequest]]:
    task = load_task(FIXTURE_TASKS / "toy")
    store = Store(tmp_path / "campaign")
    requests = []
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="toy", mode="decentralized"))
        for i, overrides in enumerate(specs):
            trial = Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                          overrides=overrides, status="submitted")
            session.add(trial)
            session.flush()
            assert trial.id is not None
            trial.folder = str(tmp_path / "trials" / str(trial.id))
            requests.append(TrialRequest(trial_id=trial.id, folder=trial.folder, snapshot_dir=str(task.program_dir),
                                         command=task.command, overrides=overrides, seed=0, time_limit_s=60,
                                         metric="score", test_metric="test_score"))
    return store, requests


def submit(store: Store, executor: TrialExecutor, requests: list[TrialRequest]) -> list[str]:
    jobs = executor.submit(requests)
    with store.write() as session:
        for job in jobs:
            trial = session.get(Trial, job.trial_id)
            assert trial is not None
            trial.job_id = job.job_id
            session.add(trial)
    return [j.job_id for j in jobs]


def drain(store: Store, executor: TrialExecutor, timeout: float = 180) -> dict[int, Trial]:
    monitor = Monitor(store, executor, grace_s=2)
    deadline = time.monotonic() + timeout
    while monitor.outstanding():
        assert time.monotonic() < deadline, "trials never finished"
        for obs in monitor.observe():
            with store.write() as session:
                ingest(session, obs)
        time.sleep(0.3)
    with store.read() as session:
        return {t.id: t for t in session.exec(select(Trial)).all() if t.id is not None}


def test_a_batch_is_one_submission_and_results_decide(executor: TrialExecutor, tmp_path: Path) -> None:
    specs = [{"x": 0.6}, {"behaviour": "crash"}, {"behaviour": "glued"}, {"x": -0.2, "y": 0.1}]
    store, requests = make_trials(tmp_path, specs)
    job_ids = submit(store, executor, requests)
    assert executor.submit_calls == 1 and len(set(job_ids)) == 4
    trials = drain(store, executor)
    ok, crash, glued, other = (trials[r.trial_id] for r in requests)
    assert ok.status == other.status == "succeeded" and ok.metric is not None and ok.metric > other.metric
    assert crash.status == "failed" and crash.failure_class == "program_error" and "deliberate crash" in crash.log_tail
    assert glued.failure_class == "bad_metrics"
    assert ok.environment["host"] and ok.environment["python"]


def test_cancel_is_classified_and_stops_the_program(executor: TrialExecutor, tmp_path: Path) -> None:
    store, requests = make_trials(tmp_path, [{"behaviour": "hang"}])
    (job_id,) = submit(store, executor, requests)
    deadline = time.monotonic() + 60
    while executor.states([job_id]).get(job_id) is None or executor.states([job_id])[job_id].raw != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.3)
    time.sleep(1.0)
    executor.cancel([job_id])
    trial = drain(store, executor)[requests[0].trial_id]
    assert trial.status == "failed" and trial.failure_class == "cancelled"
