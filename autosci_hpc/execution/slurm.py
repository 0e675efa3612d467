"""The SLURM executor: every batch of trials is one array job submitted through submitit.

What it adds over submitit's own `SlurmExecutor`, for clusters that are busy and sometimes unreachable:
- arrays larger than the cluster's `MaxArraySize` are split into chunks, each indexed from 0;
- nested submission (from inside the coordinator's own job) runs with the inherited `SLURM_*`,
  `SBATCH_*`, `SRUN_*` and `SUBMITIT_*` variables removed, `SLURM_CONF` kept;
- transient sbatch errors (socket time-outs, an unreachable controller) are retried with backoff;
  policy errors (limits, invalid requests) fail loudly at once;
- job states come from one `sacct` call for all outstanding jobs (restricted to this campaign's
  job names), or from `squeue -t all` where accounting is disabled, at a polling interval that ramps
  up to a cap and backs off with jitter on errors. A job missing from the answer is never taken as
  finished: success is only ever decided by the trial's result file;
- each array is named after its batch (`<campaign job name>-<batch key>.<chunk>`), a name Slurm
  keeps in `squeue` and `sacct`: a coordinator that died between `sbatch` and recording the job ids
  finds its jobs by that name on restart (`recover`) instead of submitting them again.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import submitit

from .executors import JobState, ShortJobError, SubmittedJob, TrialExecutor, wait_short
from .gpus import Placement
from .trial import TrialRequest, run_trial

#: Slurm state -> failure class when the job ended without a valid result file.
TERMINAL_STATES = {
    "COMPLETED": "no_result",
    "FAILED": "program_error",
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "OUT_OF_MEMORY": "out_of_memory",
    "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "node_fail",
    "PREEMPTED": "preempted",
    "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
}
TRANSIENT_ERRORS = ("socket timed out", "unable to contact slurm controller", "slurm_receive_msg",
                    "connection refused", "resource temporarily unavailable", "try again")
ACCOUNTING_DISABLED = ("accounting storage is disabled", "slurm accounting storage is disabled")
KEEP_IN_ENV = ("SLURM_CONF",)


#: What a job this executor cancelled, and that the scheduler no longer names, is.
CANCELLED = JobState(terminal=True, raw="CANCELLED", failure_class="cancelled")


class SubmissionError(RuntimeError):
    pass


@contextmanager
def clean_slurm_env() -> Iterator[None]:
    """Hide the coordinator job's own Slurm variables from a job it submits (keep SLURM_CONF)."""
    hidden = {k: os.environ.pop(k) for k in list(os.environ)
              if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SUBMITIT_")) and k not in KEEP_IN_ENV}
    try:
        yield
    finally:
        os.environ.update(hidden)


def parse_state_lines(text: str) -> dict[str, str]:
    """`JOBID|STATE` lines (sacct -P or squeue -o) -> {job id: state}; pending array ranges expanded."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        job_id, state = parts[0], parts[1].split()[0] if parts[1] else ""
        match = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(%\d+)?\]", job_id)
        if match:
            for piece in match.group(2).split(","):
                lo, _, hi = piece.partition("-")
                for index in range(int(lo), int(hi or lo) + 1):
                    out[f"{match.group(1)}_{index}"] = state
        else:
            out[job_id] = state
    return out


def gres_gpus(gres: str) -> int:
    """The GPU count of a gres request ("gpu:h100:2", "gpu:1", "gpu" is one), 0 without GPUs."""
    match = re.search(r"gpu(?::[^:,]+)?:(\d+)", gres)
    return int(match.group(1)) if match else (1 if gres.startswith("gpu") else 0)


def trial_resources(cfg: Any, gpus_per_trial: int, nodes: int) -> dict[str, Any]:
    """The submitit parameters of a trial's GPUs and nodes (what `sbatch --test-only` is asked about before
    a campaign starts, too): one task per node, each with its share of the GPUs (`--gres` is per node)
    unless `executor.slurm.gres` names them itself."""
    params: dict[str, Any] = {}
    if gpus_per_trial and not cfg.gres:
        # one task per node; its training step runs one rank per GPU of its node
        params["slurm_gres"] = f"gpu:{max(1, gpus_per_trial // max(1, nodes))}"
    if nodes > 1:
        # One task per node. When the first node's task fails (its trial is over) srun stops the others
        # at once; the other nodes' tasks never exit non-zero on their own (execution/trial.py).
        params.update(nodes=nodes, tasks_per_node=1, slurm_srun_args=["--kill-on-bad-exit=1"])
    return params


def to_job_state(raw: str) -> JobState:
    base = raw.split()[0].rstrip("+") if raw else "UNKNOWN"
    if base in TERMINAL_STATES:
        return JobState(terminal=True, raw=base, failure_class=TERMINAL_STATES[base])
    return JobState(terminal=False, raw=base)


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


class SlurmTrialExecutor(TrialExecutor):
    name = "slurm"

    def __init__(self, folder: Path, parameters: dict[str, Any], *, max_concurrent: int = 16,
                 max_array_size: Optional[int] = None, job_name: str = "autosci",
                 min_poll_s: float = 1.0, max_poll_s: float = 30.0, submit_retries: int = 4,
                 runner: Runner = _run, placement: Placement = Placement(executor="slurm")) -> None:
        super().__init__(folder)
        #: What every trial gets (its GPUs and ranks), recorded with each trial's result.
        self.placement = placement
        self.parameters = {**parameters, "slurm_job_name": job_name}
        self.job_name = job_name
        self._capacity = max_concurrent
        self._max_array_size = max_array_size
        self.submit_retries = submit_retries
        self.min_poll_s, self.max_poll_s = min_poll_s, max_poll_s
        self._poll_interval = min_poll_s
        self._next_poll = 0.0
        self._cache: dict[str, JobState] = {}
        self._accounting = True
        self._run = runner
        #: Jobs this executor cancelled: an array task cancelled while pending leaves no trace in
        #: squeue or sacct, so without this it would never be reported ended.
        self._cancelled: set[str] = set()
        self._executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster="slurm")
        self._executor.update_parameters(**self.parameters)

    @classmethod
    def from_config(cls, folder: Path, cfg: Any, *, job_name: str, time_limit_s: float,
                    gpus_per_trial: int = 0, nodes: int = 1) -> "SlurmTrialExecutor":
        """The executor of a campaign's `executor.slurm` settings. A trial of `gpus_per_trial` GPUs on `nodes`
        nodes is one task per node, each node given gpus_per_trial / nodes GPUs (`--gres` is per node); the
        trial's function runs on each node, and only the first writes a result (execution/trial.py)."""
        # The job's limit leaves room past the trial's own limit (which kills the program and still
        # writes a result), so a Slurm TIMEOUT means the trial could not even report.
        timeout_min = max(int(cfg.time_min), int(time_limit_s // 60) + 2)
        params: dict[str, Any] = {
            "timeout_min": timeout_min,
            "cpus_per_task": cfg.cpus_per_task,
            "mem_gb": cfg.mem_gb,
            "slurm_array_parallelism": cfg.array_parallelism,
            # submitit's USR2 warning arrives up to a minute early; our trials are not checkpointable,
            # so keep it near the end of the job rather than the default 90 s before it.
            "slurm_signal_delay_s": 30,
        }
        for key, name in (("partition", "slurm_partition"), ("account", "slurm_account"),
                          ("qos", "slurm_qos"), ("gres", "slurm_gres")):
            if getattr(cfg, key):
                params[name] = getattr(cfg, key)
        params.update(trial_resources(cfg, gpus_per_trial, nodes))
        if cfg.setup:
            params["slurm_setup"] = list(cfg.setup)
        if cfg.additional:
            params["slurm_additional_parameters"] = dict(cfg.additional)
        gpus = gres_gpus(params.get("slurm_gres", "")) * max(1, nodes)  # a gres request is per node
        placement = Placement(executor="slurm", gpus=float(gpus), ranks=max(1, gpus_per_trial),
                              nodes=max(1, nodes))
        return cls(folder, params, max_concurrent=cfg.max_concurrent, job_name=job_name, placement=placement)

    @property
    def capacity(self) -> int:
        return self._capacity

    # ---- submission ---------------------------------------------------------------------------

    def max_array_size(self) -> int:
        if self._max_array_size is None:
            size = 1001  # Slurm's default
            result = self._run(["scontrol", "show", "config"])
            match = re.search(r"^MaxArraySize\s*=\s*(\d+)", result.stdout, re.MULTILINE)
            if match:
                size = int(match.group(1))
            self._max_array_size = size
        return self._max_array_size

    def submit(self, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        out: list[SubmittedJob] = []
        chunk = max(1, self.max_array_size())
        for start in range(0, len(requests), chunk):
            part = list(requests[start:start + chunk])
            jobs = self._submit_array(part, start // chunk)
            for index, (request, job) in enumerate(zip(part, jobs)):
                job_id = str(job.job_id)
                array_index = int(job_id.split("_", 1)[1]) if "_" in job_id else None
                out.append(SubmittedJob(trial_id=request.trial_id, job_id=job_id, array_index=array_index))
                self._cache[job_id] = JobState(terminal=False, raw="PENDING")
        self._next_poll = 0.0
        self._poll_interval = self.min_poll_s
        return out

    def chunk_name(self, key: str, chunk: int) -> str:
        """The job name of one array of a batch: the campaign's name, the batch key, the chunk."""
        return f"{self.job_name}-{key}.{chunk}" if key else self.job_name

    def _submit_array(self, part: list[TrialRequest], chunk: int = 0) -> list[Any]:
        self._executor.update_parameters(slurm_job_name=self.chunk_name(self.batch_key, chunk))
        part = [r.model_copy(update={"placement": self.placement}) for r in part]
        for attempt in range(self.submit_retries + 1):
            try:
                self.submit_calls += 1
                with clean_slurm_env():
                    return list(self._executor.map_array(run_trial, part))
            except Exception as exc:  # submitit wraps sbatch failures in several exception types
                text = str(exc).lower()
                if attempt < self.submit_retries and any(t in text for t in TRANSIENT_ERRORS):
                    time.sleep(min(30.0, 2.0 * 2**attempt) * (0.5 + random.random()))
                    continue
                raise SubmissionError(f"sbatch refused an array of {len(part)} trial(s) "
                                      f"(trials {part[0].trial_id}..{part[-1].trial_id}): {exc}") from exc
        raise AssertionError("unreachable")

    def run_short(self, fn: Callable[[TrialRequest], Any], request: TrialRequest, timeout_s: float) -> Any:
        """One short job on the trials' partition, with their resources (GPUs included), named
        `<campaign job name>-short`; waits at most `timeout_s`, queueing included."""
        executor = submitit.AutoExecutor(folder=str(self.folder / "short" / "%j"), cluster="slurm")
        params = {k: v for k, v in self.parameters.items() if k != "slurm_array_parallelism"}
        params.update(slurm_job_name=f"{self.job_name}-short",
                      timeout_min=max(2, int(request.time_limit_s // 60) + 2))
        executor.update_parameters(**params)
        with clean_slurm_env():
            try:
                job = executor.submit(fn, request.model_copy(update={"placement": self.placement}))
            except Exception as exc:  # submitit wraps sbatch failures in several exception types
                raise ShortJobError(f"sbatch refused the short job: {exc}") from exc
        return wait_short(job, timeout_s, "the short job")

    # ---- states -------------------------------------------------------------------------------

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        now = time.monotonic()
        wanted = [j for j in job_ids if j]
        if wanted and now >= self._next_poll:
            try:
                fresh = self._query(wanted)
            except RuntimeError:
                # Back off with jitter; answer from what we knew (never "finished" by absence).
                self._poll_interval = min(self.max_poll_s, max(1.0, self._poll_interval * 2))
                self._next_poll = now + self._poll_interval * (0.5 + random.random())
            else:
                fresh.update({j: CANCELLED for j in wanted if j in self._cancelled and j not in fresh})
                changed = any(self._cache.get(k) != v for k, v in fresh.items())
                self._cache.update(fresh)
                # Ramp: poll often while things change, then settle at the cap.
                self._poll_interval = self.min_poll_s if changed else min(self.max_poll_s, self._poll_interval * 1.5)
                self._next_poll = now + self._poll_interval
        return {j: self._cache[j] for j in wanted if j in self._cache}

    def _ours(self, text: str) -> str:
        """`JOBID|STATE|NAME` lines -> `JOBID|STATE` lines of this campaign's jobs only (its job names),
        so that a job id Slurm reused for someone else's job never answers for a trial."""
        keep = []
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and (parts[2] == self.job_name or parts[2].startswith(self.job_name + "-")):
                keep.append(f"{parts[0]}|{parts[1]}")
        return "\n".join(keep)

    def _query(self, job_ids: list[str]) -> dict[str, JobState]:
        ids = ",".join(sorted({j.split("_", 1)[0] for j in job_ids}))
        if self._accounting:
            result = self._run(["sacct", "-X", "-P", "-n", "-j", ids, "-o", "JobID,State,JobName"])
            text = (result.stdout + result.stderr).lower()
            if result.returncode == 0:
                return {k: to_job_state(v) for k, v in parse_state_lines(self._ours(result.stdout)).items()}
            if not any(m in text for m in ACCOUNTING_DISABLED):
                raise RuntimeError(f"sacct failed: {result.stderr.strip()}")
            self._accounting = False
        result = self._run(["squeue", "-h", "-r", "-t", "all", "-j", ids, "-o", "%i|%T|%j"])
        if result.returncode != 0 and "invalid job id" not in result.stderr.lower():
            raise RuntimeError(f"squeue failed: {result.stderr.strip()}")
        return {k: to_job_state(v) for k, v in parse_state_lines(self._ours(result.stdout)).items()}

    # ---- recovery after a crash between sbatch and the commit ------------------------------------

    def recover(self, key: str, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        """The jobs Slurm holds under this batch's names (squeue, then sacct, which keeps a job's name
        after it ended), mapped back to the requests by chunk and array index; then what the job
        folders show for any request Slurm did not name."""
        chunk = max(1, self.max_array_size())
        names = {self.chunk_name(key, c // chunk): c // chunk for c in range(0, len(requests), chunk)}
        seen: dict[str, str] = {}
        lines = self._run(["squeue", "-h", "-r", "--name", ",".join(names), "-o", "%i|%j"]).stdout
        if self._accounting:
            result = self._run(["sacct", "-X", "-P", "-n", "--starttime", "now-30days", "--name",
                                ",".join(names), "-o", "JobID,JobName"])
            lines += "\n" + (result.stdout if result.returncode == 0 else "")
        for line in lines.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[1] in names and re.fullmatch(r"\d+(_\d+)?", parts[0]):
                seen[parts[0]] = parts[1]
        found: dict[int, SubmittedJob] = {}
        for job_id, name in seen.items():
            index = int(job_id.split("_", 1)[1]) if "_" in job_id else 0
            position = names[name] * chunk + index
            if position < len(requests):
                request = requests[position]
                found[request.trial_id] = SubmittedJob(trial_id=request.trial_id, job_id=job_id,
                                                       array_index=index if "_" in job_id else None)
        for job in super().recover(key, [r for r in requests if r.trial_id not in found]):
            found[job.trial_id] = job
        return list(found.values())

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._cancelled.update(job_ids)
            self._run(["scancel", *job_ids])
