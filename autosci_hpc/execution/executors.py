"""Executors: how trial requests become scheduler jobs. Every implementation goes through submitit.

The interface is small on purpose (hydra's launchers): submit a batch of requests, report the
states of many jobs in one call, cancel. The coordinator never blocks on a job: success is decided
by the trial's own result file (see `monitor.py`), and the executor only says whether a job is
still alive and, when it is not, how it ended.

This module holds the interface only; `registry.py` knows the implementations (`local.py`,
`slurm.py`), which import this one, so no implementation is ever imported from here.
"""

from __future__ import annotations

import abc
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .trial import TrialRequest


@dataclass(frozen=True)
class SubmittedJob:
    trial_id: int
    job_id: str
    array_index: Optional[int] = None


@dataclass(frozen=True)
class JobState:
    """`terminal` is False while the job may still write its result; `raw` is the scheduler's word."""

    terminal: bool
    raw: str
    failure_class: str = ""  # for a terminal state: what it means when no result came


class TrialExecutor(abc.ABC):
    name: str = ""

    def __init__(self, folder: Path) -> None:
        #: submitit's folder for pickles and job logs (inside the campaign folder).
        self.folder = Path(folder)
        self.submit_calls = 0
        #: The identity of the batch being submitted (`submit_batch`): what the scheduler keeps.
        self.batch_key = ""

    def submit_batch(self, key: str, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        """Submit under an identity the scheduler keeps (SLURM: the job name), recorded by the
        coordinator before this call, so that a restart can find the jobs instead of submitting twice."""
        self.batch_key = key
        try:
            return self.submit(requests)
        finally:
            self.batch_key = ""

    def recover(self, key: str, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        """The jobs a batch submitted under `key` got, for a coordinator that died before recording
        them. Here: from the executor's own job folders (submitit leaves one per job, holding the
        request it runs); a scheduler adds what it knows."""
        return jobs_in_folders(self.folder, requests)

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many trials may be outstanding at once."""

    def room(self, outstanding: int) -> int:
        """How many more trials may be submitted now, with `outstanding` submitted and not yet ingested."""
        return self.capacity - outstanding

    @abc.abstractmethod
    def submit(self, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        """Submit the requests together (one array where the scheduler has arrays)."""

    @abc.abstractmethod
    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """States of many jobs, in one scheduler call. Unknown ids are simply absent."""

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None: ...

    def run_short(self, fn: Callable[[TrialRequest], Any], request: TrialRequest, timeout_s: float) -> Any:
        """Run `fn(request)` as one short job where trials run (a smoke run, a probe), wait at most
        `timeout_s` for its answer (queueing included) and return it; `ShortJobError` says why not."""
        raise ShortJobError(f"the {self.name or type(self).__name__} executor cannot run short jobs")


class ShortJobError(RuntimeError):
    """A short job (smoke run, probe) that gave no answer: not started in time, or lost."""


def jobs_in_folders(folder: Path, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
    """Jobs found in submitit's job folders (`<folder>/<job id>/<job id>_submitted.pkl`) that run one
    of `requests` (same trial, same attempt). Unreadable pickles are skipped: such a job is unknown."""
    wanted = {(r.trial_id, r.attempt) for r in requests}
    found: dict[int, SubmittedJob] = {}
    for path in sorted(Path(folder).glob("*/*_submitted.pkl")):
        try:
            with open(path, "rb") as handle:
                delayed = pickle.load(handle)
            request = delayed.args[0]
            key = (int(request.trial_id), int(request.attempt))
        except Exception:  # noqa: BLE001 - a half-written or foreign pickle says nothing
            continue
        if key in wanted:
            job_id = path.parent.name
            match = re.fullmatch(r"\d+_(\d+)", job_id)
            found[key[0]] = SubmittedJob(trial_id=key[0], job_id=job_id,
                                         array_index=int(match.group(1)) if match else None)
    return list(found.values())


def wait_short(job: Any, timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    """The answer of a submitit job within `timeout_s` (cancelled past it), for `run_short`."""
    import time

    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            raise ShortJobError(f"{what} gave no answer within {timeout_s:g} s (job {job.job_id}, state "
                                f"{job.state}); it was cancelled")
        time.sleep(poll_s)
    try:
        # The first task's answer: a job of several nodes runs the function once per node (submitit's
        # `result` refuses such a job), and the first node's is the one that speaks for it.
        return job.results()[0]
    except Exception as exc:  # noqa: BLE001 - submitit wraps a lost job in several classes
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        why = lines[-1] if lines else type(exc).__name__
        raise ShortJobError(f"{what} (job {job.job_id}) failed: {why}") from None
