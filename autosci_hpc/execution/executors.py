"""Executors: how trial requests become scheduler jobs. Every implementation goes through submitit.

The interface is small on purpose (hydra's launchers): submit a batch of requests, report the
states of many jobs in one call, cancel. The coordinator never blocks on a job: success is decided
by the trial's own result file (see `monitor.py`), and the executor only says whether a job is
still alive and, when it is not, how it ended.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import submitit

from .trial import TrialRequest, run_trial


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

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many trials may be outstanding at once."""

    @abc.abstractmethod
    def submit(self, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        """Submit the requests together (one array where the scheduler has arrays)."""

    @abc.abstractmethod
    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """States of many jobs, in one scheduler call. Unknown ids are simply absent."""

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None: ...


class LocalTrialExecutor(TrialExecutor):
    """Trials as local subprocesses through `submitit.AutoExecutor(cluster="local")`."""

    name = "local"

    def __init__(self, folder: Path, max_concurrent: int = 0, timeout_min: float = 60.0) -> None:
        super().__init__(folder)
        self._capacity = max_concurrent or (os.cpu_count() or 1)
        self._executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster="local")
        # submitit's own limit is a backstop behind the trial's limit, which kills the process group.
        self._executor.update_parameters(timeout_min=max(1, int(timeout_min) + 1))
        self._jobs: dict[str, Any] = {}
        self._cancelled: set[str] = set()

    @property
    def capacity(self) -> int:
        return self._capacity

    def submit(self, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        if not requests:
            return []
        self.submit_calls += 1
        jobs = self._executor.map_array(run_trial, list(requests))
        out = []
        for request, job in zip(requests, jobs):
            self._jobs[str(job.job_id)] = job
            out.append(SubmittedJob(trial_id=request.trial_id, job_id=str(job.job_id)))
        return out

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        out = {}
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None:
                # A job of an earlier coordinator process: its local process is not ours to poll.
                # Only the result file can tell; report it as ended so the grace window applies.
                out[job_id] = JobState(terminal=True, raw="UNKNOWN", failure_class="no_result")
                continue
            raw = job.state
            if raw == "RUNNING":
                out[job_id] = JobState(terminal=False, raw=raw)
            else:
                cls = "cancelled" if job_id in self._cancelled else "no_result"
                out[job_id] = JobState(terminal=True, raw=raw, failure_class=cls)
        return out

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None:
                self._cancelled.add(job_id)
                job.cancel(check=False)


def make_executor(config: Any, folder: Path, time_limit_s: float) -> TrialExecutor:
    """The executor a campaign config asks for."""
    kind = config.executor.kind
    if kind == "local":
        return LocalTrialExecutor(folder, config.executor.local.max_concurrent,
                                  timeout_min=time_limit_s / 60 + 1)
    raise NotImplementedError(f"executor.kind={kind!r} is not available in this version")
