"""One test body, every executor: local (always) and slurm (on the single-node cluster).

An executor must run a batch in one submission, let the result files decide success, classify
what failed, report job states in one call, and cancel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from autosci_hpc.execution.executors import TrialExecutor
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from helpers import drain, make_trials, submit


@pytest.fixture(params=["local", "slurm"])
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrialExecutor]:
    if request.param == "local":
        yield LocalTrialExecutor(tmp_path / "jobs", max_concurrent=4, timeout_min=3)
    else:
        cluster = request.getfixturevalue("slurm_cluster")
        yield SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5, "slurm_partition": cluster.partition},
                                 job_name="autosci-conformance", min_poll_s=0.5, max_poll_s=2)


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
