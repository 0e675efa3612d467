"""Executors: how trial requests become scheduler jobs. Every implementation goes through submitit.

The interface is small on purpose (hydra's launchers): submit a batch of requests, report the
states of many jobs in one call, cancel. The coordinator never blocks on a job: success is decided
by the trial's own result file (see `monitor.py`), and the executor only says whether a job is
still alive and, when it is not, how it ended.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

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


def make_executor(config: Any, folder: Path, time_limit_s: float) -> TrialExecutor:
    """The executor a campaign config asks for."""
    kind = config.executor.kind
    if kind == "local":
        from .local import LocalTrialExecutor

        return LocalTrialExecutor(folder, config.executor.local.max_concurrent, timeout_min=time_limit_s / 60 + 1)
    from .slurm import SlurmTrialExecutor

    return SlurmTrialExecutor.from_config(folder, config.executor.slurm, job_name=f"autosci-{config.campaign.name}",
                                          time_limit_s=time_limit_s)
