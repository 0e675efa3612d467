"""The local executor: trials as subprocesses of this machine, through submitit's local cluster.

Without GPUs (a CPU task) up to `max_concurrent` trials run at once and see no GPU. For a task
whose trials use GPUs, the machine's GPUs are cut into groups of the task's `gpus` and each group
runs a gang of `trials_per_gpu` trials started together, padded with ballast when fewer are
ready (execution/gpus.py says why); each trial's placement names its GPUs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import submitit

from ..files import atomic_write_text
from ..procs import pid_alive
from .executors import JobState, SubmittedJob, TrialExecutor, wait_short
from .gpus import Placement, gpu_groups, placement_for
from .trial import TrialRequest, run_trial


@contextlib.contextmanager
def interruptible_children() -> Iterator[None]:
    """Jobs started here obey SIGINT, which is how submitit cancels a local job. A process started in
    the background by a shell (`nohup autosci run ... &`) has SIGINT ignored, its children inherit
    that, and a cancelled trial would run on to its time limit. While jobs start, SIGINT gets Python's
    handler here, so that the job's processes start with the default (restored afterwards)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalTrialExecutor(TrialExecutor):
    """Trials as local subprocesses through `submitit.AutoExecutor(cluster="local")`."""

    name = "local"

    def __init__(self, folder: Path, max_concurrent: int = 0, timeout_min: float = 60.0, *,
                 gpus: Sequence[str] = (), gpus_per_trial: int = 0, trials_per_gpu: int = 1) -> None:
        super().__init__(folder)
        #: The GPU groups trials run on ([] for CPU trials) and how many trials share one.
        self.groups = gpu_groups(list(gpus), gpus_per_trial) if gpus_per_trial > 0 else []
        self.share = max(1, trials_per_gpu)
        if gpus_per_trial > 0 and not self.groups:
            raise ValueError(f"the task's trials use {gpus_per_trial} GPU(s) each, but the local executor "
                             f"has {len(gpus)} (executor.local.gpus: auto finds them in CUDA_VISIBLE_DEVICES "
                             "or with nvidia-smi; set task.gpus=0 to run the task on the CPU)")
        cpu_slots = max_concurrent or (os.cpu_count() or 1)
        self._capacity = len(self.groups) * self.share if self.groups else cpu_slots
        self._timeout_min = max(1, int(timeout_min) + 1)
        self._executor = self._submitit(self.folder)
        self._jobs: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        #: The jobs (trials and ballast) each GPU group's current gang runs.
        self._gangs: list[list[Any]] = [[] for _ in self.groups]
        self.ballast_runs = 0
        #: Gangs started so far (each meets in a folder of its own under `gangs/`).
        self.gangs_started = 0
        #: Gangs an earlier coordinator process started that still run: their GPU group, trial and ballast
        #: controllers; and live controllers of this folder that no gang record names.
        self._adopted: list[AdoptedGang] = []
        self._unplaced: set[int] = set()
        if self.groups:
            self._adopt_gangs()

    def _submitit(self, folder: Path) -> Any:
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="local")
        # submitit's own limit is a backstop behind the trial's limit, which kills the process group.
        executor.update_parameters(timeout_min=self._timeout_min)
        return executor

    @property
    def capacity(self) -> int:
        if not self.groups:
            return self._capacity
        # Trials still running (an earlier process's included), plus a whole gang for each group whose
        # last gang has ended.
        free = self.free_groups()
        running = sum(1 for gang in self._gangs for job in gang
                      if not job.done() and not self._is_ballast(job))
        return running + sum(len(gang.trials) for gang in self._adopted) + self.share * len(free)

    def room(self, outstanding: int) -> int:
        """With GPUs: the slots of the groups whose whole gang has ended (a trial's result may be taken in
        before its job has exited, so the count of trials outstanding says nothing about the gangs)."""
        if not self.groups:
            return super().room(outstanding)
        return self.share * len(self.free_groups())

    def free_groups(self) -> list[int]:
        self._forget_ended()
        if self._unplaced:
            return []
        held = {gang.group for gang in self._adopted}
        return [i for i, gang in enumerate(self._gangs) if all(job.done() for job in gang) and i not in held]

    # ---- gangs of an earlier coordinator process ---------------------------------------------

    def _adopt_gangs(self) -> None:
        """What the last coordinator process left running on the GPUs: the recorded gangs whose
        controllers still live, and any live controller of this folder no record names."""
        live = self._live_controllers()
        if not live:
            return
        named: set[int] = set()
        for path in sorted((self.folder / "gangs").glob("*.json")):
            gang = AdoptedGang.read(path, len(self.groups))
            if gang is None:
                continue
            named |= gang.trials | gang.ballast
            gang.trials &= live
            gang.ballast &= live
            if gang.trials or gang.ballast:
                self._adopted.append(gang)
        self._unplaced = live - named

    def _live_controllers(self) -> set[int]:
        """The pids of live submitit controllers of this executor's folder (trials and ballast)."""
        try:
            pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
        except OSError:
            return set()
        return {pid for pid in pids if pid != os.getpid() and self._adopted_controller(str(pid))}

    def _forget_ended(self) -> None:
        if not (self._adopted or self._unplaced):
            return
        for gang in self._adopted:
            gang.trials = {pid for pid in gang.trials if self._adopted_controller(str(pid))}
            gang.ballast = {pid for pid in gang.ballast if self._adopted_controller(str(pid))}
        self._adopted = [gang for gang in self._adopted if gang.trials or gang.ballast]
        self._unplaced = {pid for pid in self._unplaced if self._adopted_controller(str(pid))}

    def _record_gang(self, meeting: str, group: int, trials: Sequence[Any], ballast: Sequence[Any]) -> None:
        """The gang's GPU group and controllers, for a coordinator process that starts after this one (where
        the record cannot be written, that process finds the gang's controllers unnamed and closes every
        GPU while they live: slower, never wrong)."""
        record = {"group": group, "trials": [str(job.job_id) for job in trials],
                  "ballast": [str(job.job_id) for job in ballast]}
        path = Path(meeting + ".json")
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record))

    def _is_ballast(self, job: Any) -> bool:
        return str(job.job_id) not in self._jobs

    def submit(self, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        if not requests:
            return []
        self.submit_calls += 1
        if not self.groups:
            placed = [r.model_copy(update={"placement": Placement(executor="local", devices="")})
                      for r in requests]
            with interruptible_children():
                jobs = self._executor.map_array(run_trial, placed)
            return self._record(requests, jobs)
        free = self.free_groups()
        if len(requests) > self.share * len(free):
            raise RuntimeError(f"{len(requests)} trial(s) for {len(free)} free GPU group(s) of {self.share} "
                               "slot(s): the coordinator submits at most `capacity` trials")
        out: list[SubmittedJob] = []
        for start, group in zip(range(0, len(requests), self.share), free):
            gang = list(requests[start:start + self.share])
            devices = self.groups[group]
            self.gangs_started += 1
            # unique across coordinator restarts: an old gang's markers must never count for a new one
            meeting = str(self.folder / "gangs" / f"gang-{uuid.uuid4().hex[:12]}-{self.gangs_started:06d}")
            placed = [r.model_copy(update={"placement": placement_for(group, k, devices, self.share,
                                                                      trials=len(gang), gang=meeting)})
                      for k, r in enumerate(gang)]
            with interruptible_children():
                jobs = list(self._executor.map_array(run_trial, placed))
            out += self._record(gang, jobs)
            ballast = self._ballast(group, placed[-1], len(gang), meeting)
            self._gangs[group] = jobs + ballast
            self._record_gang(meeting, group, jobs, ballast)
        return out

    def _ballast(self, group: int, model: TrialRequest, filled: int, meeting: str) -> list[Any]:
        """Copies of `model` in the gang's empty slots, each in a folder of its own (never a trial's,
        never where `recover` looks): they load the GPU as the missing neighbours would."""
        if filled >= self.share:
            return []
        base = self.folder / "ballast"
        copies = []
        for k in range(filled, self.share):
            self.ballast_runs += 1
            folder = base / f"run-{self.ballast_runs:06d}"
            copies.append(model.model_copy(update={
                "folder": str(folder),
                "placement": placement_for(group, k, self.groups[group], self.share, ballast=True,
                                           gang=meeting)}))
        with interruptible_children():
            return list(self._submitit(base / "jobs").map_array(run_trial, copies))

    def _record(self, requests: Sequence[TrialRequest], jobs: Sequence[Any]) -> list[SubmittedJob]:
        out = []
        for request, job in zip(requests, jobs):
            self._jobs[str(job.job_id)] = job
            out.append(SubmittedJob(trial_id=request.trial_id, job_id=str(job.job_id)))
        return out

    def run_short(self, fn: Callable[[TrialRequest], Any], request: TrialRequest, timeout_s: float) -> Any:
        """A short job on this machine: on the first GPU group where trials use GPUs (next to its gang),
        else as a CPU trial that sees no GPU."""
        if self.groups:
            placement = placement_for(0, self.share, self.groups[0], self.share)
        else:
            placement = Placement(executor="local", devices="")
        executor = self._submitit(self.folder / "short")
        with interruptible_children():
            job = executor.submit(fn, request.model_copy(update={"placement": placement}))
        return wait_short(job, timeout_s, "the short job")

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        out: dict[str, JobState] = {}
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
        # A gang whose trials are all cancelled takes its ballast down too.
        for gang in self._gangs:
            trials = [job for job in gang if not self._is_ballast(job)]
            if trials and all(str(job.job_id) in self._cancelled for job in trials):
                for job in gang:
                    if self._is_ballast(job):
                        job.cancel(check=False)
        self._forget_ended()
        for adopted in self._adopted:
            if all(str(pid) in self._cancelled for pid in adopted.trials):
                for pid in adopted.ballast:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGINT)

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



class AdoptedGang:
    """A gang an earlier coordinator process started (its record under `gangs/`): the GPU group it holds
    and the pids of its trials' and ballast's controllers."""

    def __init__(self, group: int, trials: set[int], ballast: set[int]) -> None:
        self.group, self.trials, self.ballast = group, trials, ballast

    @classmethod
    def read(cls, path: Path, groups: int) -> Optional["AdoptedGang"]:
        """The record at `path`, or None where it is unreadable or names a group this machine lacks
        (a campaign resumed on other GPUs: its live controllers then close every GPU, unnamed)."""
        try:
            data = json.loads(path.read_text())
            group = data["group"]
            trials = {int(pid) for pid in data["trials"]}
            ballast = {int(pid) for pid in data["ballast"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(group, int) or not 0 <= group < groups:
            return None
        return cls(group, trials, ballast)
