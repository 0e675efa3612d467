"""The local executor: trials as subprocesses of this machine, through submitit's local cluster."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Sequence

import submitit

from ..procs import pid_alive
from .executors import JobState, SubmittedJob, TrialExecutor
from .trial import TrialRequest, run_trial


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
                # A job of an earlier coordinator process: submitit's local job id is the pid of
                # its controller, so whether that process still lives says whether it may report.
                alive = job_id.isdigit() and pid_alive(int(job_id))
                cls = "cancelled" if job_id in self._cancelled else "no_result"
                out[job_id] = JobState(terminal=not alive, raw="RUNNING" if alive else "GONE",
                                       failure_class="" if alive else cls)
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
            elif self._adopted_controller(job_id):
                # A job of an earlier coordinator process: what submitit's own cancel sends its
                # controller (SIGINT: it stops its tasks, and the trial its program's process group).
                self._cancelled.add(job_id)
                try:
                    os.kill(int(job_id), signal.SIGINT)
                except ProcessLookupError:
                    pass

    def _adopted_controller(self, job_id: str) -> bool:
        """Whether `job_id` is the pid of a live submitit controller of this executor's folder (never
        a process that merely reuses the pid of one that ended)."""
        if not (job_id.isdigit() and pid_alive(int(job_id))):
            return False
        try:
            argv = Path(f"/proc/{job_id}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        ours = str(self.folder.absolute()).encode() + b"/"  # submitit passes its job folder pattern, <folder>/%j
        return b"submitit.local._local" in argv and any(arg.startswith(ours) for arg in argv)
