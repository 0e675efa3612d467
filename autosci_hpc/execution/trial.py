"""What runs on the compute node: one trial, from its request to its atomic result file.

This module never opens the campaign database. It copies the program snapshot into the trial's
folder, runs the task's command in its own session (so a timeout kills the whole process group,
grandchildren included), parses the metrics the program wrote, and writes `result.json`
atomically. A failed program becomes a failed result with a reason and the tail of its log, and
the job then exits non-zero so the scheduler's state tells the truth too.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from ..procs import kill_group
from . import sandbox as sandboxing
from .results import FailureClass, TrialResult, write_result

LOG_FILE = "trial.log"
SECRET_ENV = frozenset({"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY"})
KEY_PACKAGES = ("numpy", "scipy", "pandas", "scikit-learn", "torch", "autosci_hpc")


class TrialRequest(BaseModel):
    """Everything the node needs to run one trial; pickled by submitit."""

    trial_id: int
    attempt: int = 0
    folder: str
    snapshot_dir: str
    command: str
    overrides: dict[str, Any]
    seed: int
    time_limit_s: float
    metric: str
    test_metric: str
    #: The campaign's prepared data folder (the task's `prepare` output), "" when it has none.
    data_dir: str = ""
    sandbox: sandboxing.SandboxSettings = sandboxing.SandboxSettings()


class TrialFailed(RuntimeError):
    """Raised after the failed result is written, so the job's exit status is non-zero."""


def tail(path: Path, max_lines: int = 30, max_chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])[-max_chars:]


def capture_environment() -> dict[str, Any]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
    }
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10,
            )
            env["gpu"] = out.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            env["gpu"] = ["unknown"]
    return env


def parse_metrics(path: Path, metric: str, test_metric: str) -> tuple[dict[str, Any], float, float]:
    """Validated metrics from the program's file; `ValueError` says what is wrong."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"the program wrote no metrics file ({path.name})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"metrics file is not one complete JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("metrics file must hold a JSON object")
    values = []
    for key in (metric, test_metric):
        if key not in data:
            raise ValueError(f"metrics file lacks '{key}' (has: {', '.join(sorted(data)) or 'nothing'})")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metric '{key}' is not a finite number: {value!r}")
        values.append(float(value))
    return data, values[0], values[1]


def _write(request: TrialRequest, started: float, log_path: Path, failure: Optional[FailureClass], reason: str,
           returncode: Optional[int], metrics: Optional[dict[str, Any]] = None, metric: Optional[float] = None,
           test_metric: Optional[float] = None) -> None:
    write_result(Path(request.folder), TrialResult(
        trial_id=request.trial_id,
        attempt=request.attempt,
        status="failed" if failure else "succeeded",
        metric=metric,
        test_metric=test_metric,
        metrics=metrics or {},
        failure_class=failure.value if failure else "",
        failure_reason=reason,
        log_tail=tail(log_path),
        returncode=returncode,
        started_at=started,
        finished_at=time.time(),
        environment=capture_environment(),
    ))


def run_trial(request: TrialRequest) -> dict[str, Any]:
    folder = Path(request.folder)
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)  # a requeued attempt starts from the snapshot again
    shutil.copytree(request.snapshot_dir, work)
    overrides_path = folder / "overrides.json"
    overrides_path.write_text(json.dumps(request.overrides, indent=1, sort_keys=True))
    metrics_path = folder / "metrics.json"
    metrics_path.unlink(missing_ok=True)
    log_path = folder / LOG_FILE
    argv = shlex.split(
        request.command.format(
            python=shlex.quote(sys.executable),
            overrides=shlex.quote(str(overrides_path)),
            metrics=shlex.quote(str(metrics_path)),
            seed=request.seed,
            data=shlex.quote(request.data_dir),
        )
    )
    # The program (which an LLM may have edited) never sees the model's API keys: its log tail is
    # posted to the forum, and from there it would reach prompts.
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(
        AUTOSCI_TRIAL_ID=str(request.trial_id),
        AUTOSCI_SEED=str(request.seed),
        AUTOSCI_METRICS=str(metrics_path),
        AUTOSCI_OVERRIDES=str(overrides_path),
        AUTOSCI_DATA=request.data_dir,
        PYTHONHASHSEED=str(request.seed),
    )
    argv, env = sandboxing.wrap(argv, env, request.sandbox.policy(request.folder, request.data_dir))
    started = time.time()
    failure: Optional[FailureClass] = None
    reason = ""
    returncode: Optional[int] = None
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as exc:
            failure, reason = FailureClass.PROGRAM_ERROR, f"could not start {argv[0]!r}: {exc}"
        else:
            # The program runs in its own session: if the scheduler stops this job, take the
            # program's whole process group down with it instead of leaving it orphaned.
            def _stop(signum: int, _frame: Any) -> None:
                kill_group(proc, grace_s=2.0)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

            previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                returncode = proc.wait(timeout=request.time_limit_s)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                returncode = proc.returncode
                failure = FailureClass.TIMEOUT
                reason = f"ran past its limit of {request.time_limit_s:g} s and was killed"
            except BaseException as exc:
                # Interrupted by the scheduler: submitit raises from its USR2 handler. At the job's
                # time limit (a non-checkpointable function is not requeued) that is a timeout, and
                # the result says so; on preemption submitit requeues the job and this attempt
                # writes nothing, so the requeued run reports instead.
                kill_group(proc, grace_s=2.0)
                if "timed-out" in str(exc):
                    _write(request, started, log_path, FailureClass.TIMEOUT,
                           f"the job reached its scheduler time limit and was stopped ({exc})", proc.returncode)
                raise
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    metrics: dict[str, Any] = {}
    metric = test_metric = None
    if failure is None and returncode != 0:
        failure, reason = FailureClass.PROGRAM_ERROR, f"the program exited with status {returncode}"
    if failure is None:
        try:
            metrics, metric, test_metric = parse_metrics(metrics_path, request.metric, request.test_metric)
        except ValueError as exc:
            failure, reason = FailureClass.BAD_METRICS, str(exc)
    _write(request, started, log_path, failure, reason, returncode, metrics, metric, test_metric)
    if failure is not None:
        raise TrialFailed(f"trial {request.trial_id}: {failure.value}: {reason}")
    return {"trial_id": request.trial_id, "metric": metric}
