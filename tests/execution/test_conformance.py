"""One test body, every executor: local (always) and slurm (on the single-node cluster, marked slurm).

An executor must run a batch in one submission, let the result files decide success, bring every
failure class the trial reports to the log unchanged, report job states in one call, hold as many
trials at once as its capacity says, cancel, and let a restarted coordinator (a new executor on the
same folder) find the jobs an earlier one submitted, follow them to their end, and cancel them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from autosci_hpc.execution.executors import TrialExecutor
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from autosci_hpc.state.models import Trial
from helpers import drain, make_trials, submit

#: Trials the conformance executors may hold at once.
CAPACITY = 2
#: Toy-program behaviours -> the failure class each must reach the log with ("" : it succeeds).
CLASSES = {"ok": "", "crash": "program_error", "malformed": "bad_metrics", "glued": "bad_metrics",
           "nometric": "bad_metrics", "nan": "bad_metrics"}

Factory = Callable[[], TrialExecutor]


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def new_executor(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes executors of one kind on one job folder: each call is what a (re)started coordinator builds."""
    if request.param == "local":
        return lambda: LocalTrialExecutor(tmp_path / "jobs", max_concurrent=CAPACITY, timeout_min=3)
    cluster = request.getfixturevalue("slurm_cluster")
    return lambda: SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5, "slurm_partition": cluster.partition},
                                      max_concurrent=CAPACITY, job_name="autosci-conformance", min_poll_s=0.5,
                                      max_poll_s=2)


@pytest.fixture
def executor(new_executor: Factory) -> TrialExecutor:
    return new_executor()


def wait_until_running(executor: TrialExecutor, job_ids: Sequence[str], timeout_s: float = 120) -> None:
    """Until the scheduler says every job runs (a condition, polled; not a guess at how long it takes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = executor.states(job_ids)
        if all(j in states and states[j].raw == "RUNNING" for j in job_ids):
            return
        assert time.monotonic() < deadline, f"the jobs never all ran: {states}"
        time.sleep(0.3)


def test_a_batch_is_one_submission_and_every_failure_class_reaches_the_log(executor: TrialExecutor,
                                                                           tmp_path: Path) -> None:
    specs: list[dict[str, Any]] = [{"x": 0.6}, {"x": -0.2, "y": 0.1}]
    specs += [{"behaviour": b} for b in CLASSES if b != "ok"]
    store, requests = make_trials(tmp_path, specs)
    job_ids = submit(store, executor, requests)
    assert executor.submit_calls == 1 and len(set(job_ids)) == len(specs)
    assert set(executor.states(job_ids)) == set(job_ids)  # every job known, in one call
    trials = [drain(store, executor)[r.trial_id] for r in requests]
    best, other = trials[:2]
    assert best.status == other.status == "succeeded" and best.metric > other.metric  # type: ignore[operator]
    assert best.conditions["host"] and best.environment["python"]
    for spec, trial in zip(specs[2:], trials[2:]):
        assert (trial.status, trial.failure_class) == ("failed", CLASSES[spec["behaviour"]]), spec
    assert "deliberate crash" in trials[2].log_tail


def test_a_trial_past_its_time_limit_fails_as_a_timeout(executor: TrialExecutor, tmp_path: Path) -> None:
    store, requests = make_trials(tmp_path, [{"behaviour": "hang"}], time_limit_s=2)
    submit(store, executor, requests)
    trial = drain(store, executor)[requests[0].trial_id]
    assert (trial.status, trial.failure_class) == ("failed", "timeout")


def test_capacity_trials_run_at_once_and_cancel_stops_each(executor: TrialExecutor, tmp_path: Path) -> None:
    assert executor.capacity == CAPACITY
    store, requests = make_trials(tmp_path, [{"behaviour": "hang"}] * executor.capacity)
    job_ids = submit(store, executor, requests)
    wait_until_running(executor, job_ids)
    executor.cancel(job_ids)
    trials = drain(store, executor)
    assert [(trials[r.trial_id].status, trials[r.trial_id].failure_class) for r in requests] == \
        [("failed", "cancelled")] * executor.capacity


def test_a_restarted_coordinator_finds_follows_and_cancels_the_jobs_of_the_last(new_executor: Factory,
                                                                                tmp_path: Path) -> None:
    store, requests = make_trials(tmp_path, [{"x": 0.3}, {"behaviour": "crash"}, {"behaviour": "hang"}])
    key = f"b-{uuid.uuid4().hex[:8]}"  # a batch key is unique to its batch, as the coordinator makes them
    first = new_executor()
    submitted = {j.trial_id: j.job_id for j in first.submit_batch(key, requests)}
    # The coordinator dies before it records the job ids; its successor builds a new executor.
    second = new_executor()
    found = {j.trial_id: j.job_id for j in second.recover(key, requests)}
    assert found == submitted
    with store.write() as session:  # what the successor records, as the coordinator's reconcile does
        for trial_id, job_id in found.items():
            trial = session.get(Trial, trial_id)
            assert trial is not None
            trial.job_id = job_id
            session.add(trial)
    hang = found[requests[2].trial_id]
    state = second.states([hang]).get(hang)  # absent: not known yet (the scheduler's accounting lags)
    assert state is None or not state.terminal  # a live job of the last coordinator is waited for
    second.cancel([hang])
    trials = drain(store, second)
    assert [(trials[r.trial_id].status, trials[r.trial_id].failure_class) for r in requests] == \
        [("succeeded", ""), ("failed", "program_error"), ("failed", "cancelled")]
