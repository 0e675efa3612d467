"""What runs on the compute node: one trial, from its request to its atomic result file.

This module never opens the campaign database. A trial is two steps, each one process group
started by `_run_step`: the training step runs the program (a copy of its snapshot) with the
visible data and an artifacts folder, on the harness's clock; then the sealed evaluator, frozen
into the campaign, runs with the artifacts and the sealed data and writes the metrics file that
decides. A metrics file the program writes is kept as "reported" and never decides; where it
disagrees with the evaluator the result says so. The snapshot, the program's non-editable files,
the evaluator and the data are hashed before and after: any change fails the trial as an
integrity failure. A failed trial becomes a failed result with a reason and the training log's
tail, and the job then exits non-zero so the scheduler's state tells the truth too.

A trial on several nodes runs this on each of its nodes: the first does all of the above, the others
only their ranks of the training step (`join_trial`; how they meet: `execution/nodes.py`).
"""

from __future__ import annotations

import functools
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
from typing import IO, Any, Callable, Optional, Protocol

from pydantic import BaseModel

from ..layout import CampaignLayout
from ..procs import kill_group
from ..task import TaskError, TaskSpec, file_hashes, freeze_evaluator, hash_changes, regular_files
from . import conditions
from . import gpus as gpu_placement
from . import nodes as multinode
from . import sandbox as sandboxing
from .results import RESULT_FILE, FailureClass, TrialResult, write_result

LOG_FILE = "trial.log"
#: The evaluator's output: private (it may name held-out numbers), never posted to the forum.
EVAL_LOG_FILE = "evaluate.log"
#: The key under which the result's metrics carry what the harness adds: the program's reported
#: numbers and the flags where they disagree with the evaluator's.
HARNESS_KEY = "harness"
SECRET_ENV = frozenset({"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY"})
#: The launcher of a training step of several ranks: a plain script, so that it runs in the sandbox.
RANKS_SCRIPT = Path(__file__).resolve().parent / "ranks.py"
KEY_PACKAGES = ("numpy", "scipy", "pandas", "scikit-learn", "torch", "autosci_hpc")


class TrialRequest(BaseModel):
    """Everything the node needs to run one trial; pickled by submitit. `task_request` builds one."""

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
    #: The visible part of the campaign's prepared data for this trial's split ("" without data):
    #: the only data the training step is given.
    data_dir: str = ""
    #: The sealed part (validation labels, held-out data): given to the evaluator only.
    sealed_dir: str = ""
    #: The whole prepared data folder, hashed before and after the trial.
    data_root: str = ""
    split: int = 0
    #: The sealed evaluator: its command, its frozen copy and that copy's recorded hashes.
    evaluate: str = ""
    evaluator_dir: str = ""
    evaluator_sha256: dict[str, str] = {}
    evaluate_time_limit_s: float = 600
    #: The program's editable files: every other file of the snapshot is protected.
    editable: list[str] = []
    #: The campaign's sandbox (already resolved): both steps run in it.
    sandbox: sandboxing.SandboxSettings = sandboxing.SandboxSettings()
    #: Where it runs (its executor sets it at submission): GPUs, sharing, ranks; recorded with the result.
    placement: gpu_placement.Placement = gpu_placement.Placement()


def task_request(task: TaskSpec, campaign_folder: Path, *, trial_id: int, folder: Path, snapshot_dir: Path,
                 overrides: dict[str, Any], seed: int, time_limit_s: Optional[float] = None,
                 attempt: int = 0, sandbox: Optional[sandboxing.SandboxSettings] = None) -> TrialRequest:
    """The request for one trial of `task` in a campaign: the one place requests are made.

    Freezes the task's evaluator into the campaign on first use (idempotent), and hands the
    training step only the visible part of the seed's split.
    """
    layout = CampaignLayout(campaign_folder)
    hashes = freeze_evaluator(task, layout.root)
    split = task.split_of(seed)
    visible = sealed = root = ""
    if task.prepare:
        root = str(layout.data)
        visible = str(layout.data_visible(split, task.splits))
        sealed = str(layout.data_sealed)
    return TrialRequest(
        trial_id=trial_id, attempt=attempt, folder=str(folder), snapshot_dir=str(snapshot_dir),
        command=task.command, overrides=overrides, seed=seed,
        time_limit_s=time_limit_s or task.time_limit_s, metric=task.metric.name, test_metric=task.test_metric,
        data_dir=visible, sealed_dir=sealed, data_root=root, split=split, evaluate=task.evaluate,
        evaluator_dir=str(layout.evaluator), evaluator_sha256=hashes,
        evaluate_time_limit_s=task.evaluate_time_limit_s, editable=list(task.editable),
        sandbox=sandbox or sandboxing.SandboxSettings())


class StoredTrial(Protocol):
    """What `trial_request` reads of a trial row (`state.models.Trial`; not imported: this module runs
    on the compute node, which never opens the database)."""

    id: Optional[int]
    attempt: int
    snapshot_id: str
    overrides: dict[str, Any]
    seed: int


def trial_request(task: TaskSpec, campaign_folder: Path, trial: StoredTrial, *, folder: Optional[Path] = None,
                  seed: Optional[int] = None, time_limit_s: Optional[float] = None,
                  sandbox: Optional[sandboxing.SandboxSettings] = None) -> TrialRequest:
    """The request for a stored trial: its snapshot and (unless `folder` is given: a rerun) its
    folder where the campaign's layout puts them; `seed` replaces the trial's own (a rerun)."""
    assert trial.id is not None
    layout = CampaignLayout(campaign_folder)
    return task_request(task, layout.root, trial_id=trial.id, attempt=trial.attempt,
                        folder=folder or layout.trial(trial.id, trial.attempt),
                        snapshot_dir=layout.snapshot(trial.snapshot_id), overrides=trial.overrides,
                        seed=trial.seed if seed is None else seed, time_limit_s=time_limit_s, sandbox=sandbox)


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
    # The software the trial ran with; the node, its devices and their sharing are its run conditions
    # (`conditions.observe`), a record of their own.
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
    }


METRICS_MAX_BYTES = 1 << 20
REPORTED_MAX_KEYS = 64


def _read_capped(path: Path, what: str) -> str:
    try:
        # Never through a link a step planted: the harness runs outside the sandbox, and would read a
        # host file on the program's behalf.
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as handle:
            raw = handle.read(METRICS_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{what} wrote no metrics file ({path.name})") from None
    except OSError as exc:
        raise ValueError(f"{what}'s metrics file is unreadable: {exc}") from None
    if len(raw) > METRICS_MAX_BYTES:
        raise ValueError(f"{what}'s metrics file is over {METRICS_MAX_BYTES} bytes")
    return raw.decode("utf-8", errors="replace")


def parse_metrics(path: Path, metric: str, test_metric: str,
                  what: str = "the evaluator") -> tuple[dict[str, Any], float, float]:
    """Validated metrics from the evaluator's file; `ValueError` says what is wrong."""
    text = _read_capped(path, what)
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


def parse_reported(path: Path) -> dict[str, float]:
    """The finite numbers of the program's own metrics file, if it wrote one: kept, never trusted.

    Anything else (a missing, huge or malformed file, nested values, odd keys) is dropped quietly:
    what the program reports decides nothing, so there is nothing to fail on.
    """
    try:
        data = json.loads(_read_capped(path, "the program"))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, float] = {}
    for key, value in data.items():
        if len(out) >= REPORTED_MAX_KEYS:
            break
        if (isinstance(key, str) and len(key) <= 100 and not isinstance(value, bool)
                and isinstance(value, (int, float)) and math.isfinite(value)):
            out[key] = float(value)
    return out


def disagreements(reported: dict[str, float], measured: dict[str, float]) -> list[str]:
    """Flags for each measured number the program reported differently (beyond rounding)."""
    flags = []
    for key, value in measured.items():
        if key in reported and not math.isclose(reported[key], value, rel_tol=1e-6, abs_tol=1e-9):
            flags.append(f"the program reported {key}={reported[key]:.6g}; "
                         f"the evaluator measured {value:.6g}")
    return flags


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
        conditions=conditions.observe(request.placement),
    ))


#: The process that started this one (the job's controller, on a node): a trial whose controller is
#: gone was cancelled while it started (a controller stopped between starting its task and recording
#: it leaves the task orphaned), and stops instead of running on unseen. Read when the module loads,
#: which on a node is when the job's function is unpickled, first thing.
_PARENT = os.getppid()
#: How often a running step checks that its controller is still there.
ORPHAN_CHECK_S = 0.5


class ControllerGone(RuntimeError):
    """The job's controller is gone (the job was cancelled): the trial stops and writes no result."""


class StepStopped(Exception):
    """A step's `stop` check said it must end (another node of its trial failed, or finished the trial)."""


#: A check made while a step runs: why the step must stop now, "" to let it run.
StopCheck = Callable[[], str]


def _controller_gone() -> Optional[ControllerGone]:
    if os.getppid() != _PARENT:
        return ControllerGone(f"the job's controller (pid {_PARENT}) is gone: the job was cancelled")
    return None


def _wait(proc: "subprocess.Popen[bytes]", time_limit_s: float, stop: Optional[StopCheck] = None) -> int:
    """`proc.wait(timeout=time_limit_s)`, that also stops waiting when this job's controller is gone, or
    when `stop` gives a reason (`StepStopped`)."""
    deadline = time.monotonic() + time_limit_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, time_limit_s)
        try:
            return proc.wait(timeout=min(left, ORPHAN_CHECK_S))
        except subprocess.TimeoutExpired:
            gone = _controller_gone()
            if gone is not None:
                raise gone from None
            why = stop() if stop is not None else ""
            if why:
                raise StepStopped(why) from None


class StepInterrupted(BaseException):
    """The scheduler stopped the job while a step ran; the step's process group is already down."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _run_step(argv: list[str], cwd: Path, env: dict[str, str], time_limit_s: float, log: IO[bytes],
              stop: Optional[StopCheck] = None) -> tuple[Optional[int], Optional[FailureClass], str]:
    """Run one step (training or evaluation) as a single process group, on the harness's clock.

    The only place a trial starts a process: (returncode, failure, reason). A step past its limit
    is killed, grandchildren included; a scheduler interrupt kills it and raises `StepInterrupted`;
    a step whose `stop` check gives a reason is killed and fails with that reason.
    """
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    except OSError as exc:
        return None, FailureClass.PROGRAM_ERROR, f"could not start {argv[0]!r}: {exc}"

    # The step runs in its own session: if the scheduler stops this job, take the step's whole
    # process group down with it instead of leaving it orphaned.
    def _stop(signum: int, _frame: Any) -> None:
        kill_group(proc, grace_s=2.0)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        returncode = _wait(proc, time_limit_s, stop)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        reason = f"ran past its limit of {time_limit_s:g} s and was killed"
        return proc.returncode, FailureClass.TIMEOUT, reason
    except StepStopped as stopped:
        kill_group(proc, grace_s=2.0)
        return proc.returncode, FailureClass.PROGRAM_ERROR, str(stopped)
    except BaseException as exc:
        kill_group(proc, grace_s=2.0)
        raise StepInterrupted(exc) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Nothing the step started outlives it (a helper left behind could rewrite the artifacts or the
    # metrics file while the evaluator runs).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return returncode, None, ""


def _copy_program(snapshot: Path, work: Path) -> None:
    """The snapshot's regular files into the trial's work folder (a link is refused, not followed)."""
    shutil.rmtree(work, ignore_errors=True)  # a requeued attempt starts from the snapshot again
    work.mkdir(parents=True)
    for rel, path in regular_files(snapshot):
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)


def _protected(request: TrialRequest, work: Path) -> dict[str, dict[str, str]]:
    """Hashes of everything a trial must leave alone: the snapshot, the program's non-editable
    files in the trial's copy, the frozen evaluator, and the prepared data (visible and sealed)."""
    editable = set(request.editable)
    out = {
        "snapshot": file_hashes(Path(request.snapshot_dir)),
        "program": {rel: h for rel, h in file_hashes(work).items() if rel not in editable},
    }
    if request.evaluator_dir:
        out["evaluator"] = file_hashes(Path(request.evaluator_dir))
    if request.data_root:
        out["data"] = file_hashes(Path(request.data_root))
    return out


def _integrity_changes(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    changes: list[str] = []
    for label, hashes in before.items():
        now = after.get(label, {})
        if label == "program":  # new files in the work folder are the program's own business
            now = {rel: h for rel, h in now.items() if rel in hashes}
        changes += hash_changes(hashes, now, label)
    return changes


def _last_line(path: Path, max_chars: int = 400) -> str:
    lines = [line for line in tail(path, max_lines=20).splitlines() if line.strip()]
    return lines[-1][-max_chars:] if lines else ""


def _format(template: str, values: dict[str, Any]) -> list[str]:
    return shlex.split(template.format(**{k: shlex.quote(str(v)) for k, v in values.items()}))


def _base_env(request: TrialRequest) -> dict[str, str]:
    # The program (which an LLM may have edited) never sees the model's API keys: its log tail is
    # posted to the forum, and from there it would reach prompts. Nor any AUTOSCI_ variable of the
    # runner's own (the campaign folder, fault injection): each step gets exactly the ones set here,
    # and only the evaluator learns where the sealed data is.
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and not k.startswith("AUTOSCI_")}
    env["PYTHONHASHSEED"] = str(request.seed)
    return env


def training_step(request: TrialRequest, rendezvous: Optional[multinode.Rendezvous] = None,
                  node: int = 0) -> tuple[list[str], dict[str, str]]:
    """The training step's command line and environment: the visible data and the artifacts folder.
    (Host paths: `sandboxed` rewrites them for the sandbox.) A trial on several nodes: node `node`'s part,
    its ranks meeting the others' where `rendezvous` says."""
    folder = Path(request.folder)
    artifacts, overrides = folder / "artifacts", folder / "overrides.json"
    reported = folder / "reported_metrics.json"
    argv = _format(request.command, dict(python=sys.executable, seed=request.seed, data=request.data_dir,
                                         artifacts=artifacts, overrides=overrides, metrics=reported))
    placement = request.placement
    if placement.nodes > 1 and rendezvous is not None:  # this node's ranks of all (ranks.py)
        per_node = max(1, placement.ranks // placement.nodes)
        argv = [sys.executable, str(RANKS_SCRIPT), str(per_node), "--node", str(node), "--nodes",
                str(placement.nodes), "--master", f"{rendezvous.host}:{rendezvous.port}", "--", *argv]
    elif placement.ranks > 1:  # one process per GPU, torchrun's variables set (ranks.py)
        argv = [sys.executable, str(RANKS_SCRIPT), str(placement.ranks), "--", *argv]
    env = {**_base_env(request), "AUTOSCI_TRIAL_ID": str(request.trial_id), "AUTOSCI_SEED": str(request.seed),
           "AUTOSCI_METRICS": str(reported), "AUTOSCI_OVERRIDES": str(overrides),
           "AUTOSCI_DATA": request.data_dir, "AUTOSCI_ARTIFACTS": str(artifacts)}
    return argv, env


def evaluation_step(request: TrialRequest) -> tuple[list[str], dict[str, str]]:
    """The evaluator's command line and environment: the artifacts, the sealed data, the metrics file."""
    folder = Path(request.folder)
    artifacts, metrics, work = folder / "artifacts", folder / "metrics.json", folder / "work"
    argv = _format(request.evaluate, dict(python=sys.executable, seed=request.seed, data=request.data_dir,
                                          artifacts=artifacts, metrics=metrics, sealed=request.sealed_dir,
                                          split=request.split, program=work, evaluator=request.evaluator_dir))
    base = _base_env(request)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**base, "AUTOSCI_SEED": str(request.seed), "AUTOSCI_METRICS": str(metrics),
           "AUTOSCI_DATA": request.data_dir, "AUTOSCI_SEALED": request.sealed_dir,
           "AUTOSCI_ARTIFACTS": str(artifacts), "AUTOSCI_PROGRAM": str(work),
           "AUTOSCI_SPLIT": str(request.split),
           # no user site-packages (a trial could plant a .pth there), no bytecode written next to
           # the frozen evaluator (its hashes cover every file, __pycache__ included)
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           # the evaluator imports the same autosci_hpc as this runner (its sealed helpers)
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, base.get("PYTHONPATH", "")) if p)}
    return argv, env


def sandboxed(request: TrialRequest, step: str, argv: list[str],
              env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of a step inside the campaign's sandbox. The training step sees its trial folder
    (read-write) and the visible data of its split (read-only); the evaluator sees the trial folder,
    the frozen evaluator and the whole data folder (read-only), and starts in its own scratch folder.
    The training step of a trial on several nodes shares the host's network (its ranks meet over it);
    the evaluator never has one.
    """
    if step == "train" and request.placement.nodes > 1:
        # Its ranks meet those of the trial's other nodes: the host's network, and the host's name (torch's
        # gloo finds the address it listens on through it). Each node's log is protected like trial.log.
        logs = tuple(node_log(k) for k in range(1, request.placement.nodes))
        policy = request.sandbox.policy(request.folder, request.data_dir, network=True,
                                         hostname=socket.gethostname(),
                                         protected=sandboxing.PROTECTED_FILES + logs)
    elif step == "train":
        policy = request.sandbox.policy(request.folder, request.data_dir)
    else:
        shown = [p for p in (request.data_root, request.evaluator_dir) if p]
        policy = request.sandbox.policy(request.folder, "", read_only=shown, workdir="evaluation")
    return sandboxing.wrap(argv, env, policy)


def sealed_exposure(request: TrialRequest) -> list[str]:
    """Where the training step would be told of the sealed data or the evaluator (none, normally)."""
    argv, env = training_step(request)
    problems = []
    for label, path in (("the sealed data", request.sealed_dir), ("the evaluator", request.evaluator_dir)):
        if not path:
            continue
        if any(path in arg for arg in argv):
            problems.append(f"the training command names {label} ({path})")
        names = sorted(k for k, v in env.items() if path in v)
        if names:
            problems.append(f"the training step's environment names {label} in {', '.join(names)}")
    return problems


def node_log(node: int) -> str:
    """The log of node `node`'s ranks, in the trial folder (node 0's is trial.log)."""
    return f"node-{node}.log"


#: How often a node of a trial on several nodes looks for the first node's rendezvous.
RENDEZVOUS_POLL_S = 0.5


def _open_log(path: Path) -> IO[bytes]:
    """`path` opened for writing, never through a link (trial code of another node may have planted one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


#: What the first node of a smoke run on several nodes leaves when it is done (a smoke run writes no result).
SMOKE_DONE_FILE = "smoke.done"


def join_trial(request: TrialRequest, node: int, done_file: str = RESULT_FILE) -> dict[str, Any]:
    """Node `node` (> 0) of a trial on several nodes: wait for the first node's rendezvous, then run this
    node's ranks of the training step, in the same sandbox, on the program's working copy in the (shared)
    trial folder. No evaluator, no result file: the first node's result is the trial's.

    The wait is bounded by the trial's time limit and ends when the first node's result file appears
    (it ran no training step: its trial failed before) or the job is cancelled. The ranks end with the
    collective group; whatever is still running when the first node's result appears is stopped, and so
    is a step past the time limit. A node that cannot do its part leaves a failure note, which stops the
    first node's training step (its ranks would wait for this node's until the time limit), and says so
    in its answer (`failed`); it still ends without an error, so that srun (--kill-on-bad-exit) does not
    stop the first node before that has written the trial's failed result. Only a cancelled job ends it
    with one."""
    folder = Path(request.folder)
    job, result_path = multinode.job_run(), folder / done_file
    seen = multinode.result_mark(result_path)

    def first_node_done() -> str:
        return "the first node finished the trial" if multinode.result_mark(result_path) != seen else ""

    # (the job's answer for this node; Slurm's name for the node, where it says: what ran where)
    out: dict[str, Any] = {"trial_id": request.trial_id, "node": node, "returncode": None,
                           "slurm_node": os.environ.get("SLURMD_NODENAME", "")}

    def fail(reason: str) -> dict[str, Any]:
        multinode.fail_note(folder, node, job, reason)
        print(f"trial {request.trial_id}: node {node}: {reason}", file=sys.stderr)  # the job's own log
        return {**out, "failed": reason}

    deadline = time.monotonic() + request.time_limit_s
    while True:
        rendezvous, why = multinode.read_rendezvous(folder, job, request.trial_id, request.attempt)
        if rendezvous is not None:
            break
        if first_node_done():
            return out
        gone = _controller_gone()
        if gone is not None:
            raise gone
        if time.monotonic() >= deadline:
            return fail(f"no rendezvous from the first node within {request.time_limit_s:g} s ({why})")
        time.sleep(RENDEZVOUS_POLL_S)
    log_path = folder / node_log(node)
    try:
        argv, env = sandboxed(request, "train", *training_step(request, rendezvous, node))
        log = _open_log(log_path)
    except (OSError, sandboxing.SandboxError) as exc:
        return fail(f"its training step could not be started: {exc}")
    try:
        with log:
            code, failure, reason = _run_step(argv, folder / "work", env, request.time_limit_s, log,
                                              stop=first_node_done)
    except StepInterrupted as stop:
        raise stop.cause from None
    out["returncode"] = code
    if first_node_done():  # the first node's result decides, whatever this node's ranks did after it
        return out
    if failure is not None or code != 0:
        last = _last_line(log_path, max_chars=200)
        return fail((reason or f"its ranks exited with status {code}") + (f": {last}" if last else ""))
    return out


def run_trial(request: TrialRequest) -> dict[str, Any]:
    """Train, then measure: two steps, each its own process, and the evaluator's number decides.
    On a trial's other nodes (several nodes), only their ranks of the training step (`join_trial`)."""
    gpu_placement.apply(request.placement)
    several = request.placement.nodes > 1
    if several and multinode.node_rank() > 0:
        return join_trial(request, multinode.node_rank())
    folder = Path(request.folder)
    folder.mkdir(parents=True, exist_ok=True)
    if several:  # an earlier run's rendezvous and failure notes never answer for this one
        multinode.clear(folder)
    work, artifacts, scratch = folder / "work", folder / "artifacts", folder / "evaluation"
    for path in (artifacts, scratch):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    overrides_path = folder / "overrides.json"
    overrides_path.write_text(json.dumps(request.overrides, indent=1, sort_keys=True))
    metrics_path, reported_path = folder / "metrics.json", folder / "reported_metrics.json"
    metrics_path.unlink(missing_ok=True)
    reported_path.unlink(missing_ok=True)
    log_path, eval_log_path = folder / LOG_FILE, folder / EVAL_LOG_FILE
    started = time.time()
    # The trials (and ballast) sharing a GPU start their steps together: wait for the gang to arrive.
    request = request.model_copy(update={"placement": gpu_placement.meet(request.placement)})
    try:
        _copy_program(Path(request.snapshot_dir), work)
    except (TaskError, OSError) as exc:
        log_path.write_text(f"the snapshot cannot be used: {exc}\n")
        _write(request, started, log_path, FailureClass.INTEGRITY, f"the snapshot cannot be used: {exc}",
               None)
        raise TrialFailed(f"trial {request.trial_id}: integrity: {exc}") from None
    before = _protected(request, work)
    failure: Optional[FailureClass] = None
    reason = ""
    returncode: Optional[int] = None
    if not request.evaluate:
        failure = FailureClass.PROGRAM_ERROR
        reason = ("no sealed evaluator in this trial's request (task contract 2: the evaluator, never the "
                  "program, writes the metrics)")
    elif before.get("evaluator") != request.evaluator_sha256:
        changes = hash_changes(request.evaluator_sha256, before.get("evaluator", {}), "evaluator")
        failure = FailureClass.INTEGRITY
        reason = ("the frozen evaluator no longer matched its recorded hashes when this trial started, so "
                  "nothing was run: " + "; ".join(changes[:5]))
    rendezvous: Optional[multinode.Rendezvous] = None
    stop: Optional[StopCheck] = None
    if several:  # where the ranks of all its nodes meet: this host, a port free on it now
        rendezvous = multinode.here(request.trial_id, request.attempt)
        stop = functools.partial(multinode.failed_node, folder, rendezvous.job)
    train_argv, train_env = sandboxed(request, "train", *training_step(request, rendezvous))
    eval_argv, eval_env = sandboxed(request, "evaluate", *evaluation_step(request))
    if rendezvous is not None and failure is None:
        # After the sandbox made the nodes' log files (protected in every node's sandbox), before the step.
        try:
            multinode.write_rendezvous(folder, rendezvous)
        except OSError as exc:
            failure, reason = FailureClass.NODE_FAIL, f"the rendezvous for the trial's other nodes: {exc}"
    try:
        with open(log_path, "wb") as log:
            if failure is None:
                returncode, failure, reason = _run_step(train_argv, work, train_env, request.time_limit_s,
                                                        log, stop=stop)
                if failure is None and returncode != 0:
                    failure = FailureClass.PROGRAM_ERROR
                    reason = f"the program exited with status {returncode}"
        # What the evaluator writes is the only metrics file: nothing the training step left there counts.
        metrics_path.unlink(missing_ok=True)
        if failure is None and request.evaluator_dir:
            now = file_hashes(Path(request.evaluator_dir))
            if now != request.evaluator_sha256:
                changes = hash_changes(request.evaluator_sha256, now, "evaluator")
                failure = FailureClass.INTEGRITY
                reason = "the training step changed the evaluator, so it was not run: " + "; ".join(changes[:5])
        if failure is None:
            # the evaluator's working folder: fresh, nothing planted in it
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            with open(eval_log_path, "wb") as eval_log:
                code, failure, reason = _run_step(eval_argv, scratch, eval_env, request.evaluate_time_limit_s,
                                                  eval_log)
            if failure is FailureClass.TIMEOUT:
                reason = f"the evaluation {reason}"
            elif failure is None and code != 0:
                failure = FailureClass.BAD_METRICS
                reason = (f"the evaluator could not score the artifacts (exit {code}): "
                          f"{_last_line(eval_log_path)}")
    except StepInterrupted as stop:
        # Interrupted by the scheduler: submitit raises from its USR2 handler. At the job's time
        # limit (a non-checkpointable function is not requeued) that is a timeout, and the result
        # says so; on preemption submitit requeues the job and this attempt writes nothing, so the
        # requeued run reports instead.
        if "timed-out" in str(stop.cause):
            _write(request, started, log_path, FailureClass.TIMEOUT,
                   f"the job reached its scheduler time limit and was stopped ({stop.cause})", returncode)
        raise stop.cause from None
    changes = _integrity_changes(before, _protected(request, work))
    if changes and failure is not FailureClass.INTEGRITY:  # (an earlier integrity reason says more)
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        failure, reason = FailureClass.INTEGRITY, f"protected files changed during the trial: {shown}"
    metrics: dict[str, Any] = {}
    metric = test_metric = None
    if failure is None:
        try:
            metrics, metric, test_metric = parse_metrics(metrics_path, request.metric, request.test_metric)
        except ValueError as exc:
            failure, reason = FailureClass.BAD_METRICS, str(exc)
    reported = parse_reported(reported_path)
    if metric is not None and test_metric is not None:
        flags = disagreements(reported, {request.metric: metric, request.test_metric: test_metric})
        metrics[HARNESS_KEY] = {"reported": reported, "flags": flags}
    elif reported:
        metrics[HARNESS_KEY] = {"reported": reported, "flags": []}
    _write(request, started, log_path, failure, reason, returncode, metrics, metric, test_metric)
    if failure is not None:
        raise TrialFailed(f"trial {request.trial_id}: {failure.value}: {reason}")
    answer: dict[str, Any] = {"trial_id": request.trial_id, "metric": metric}
    if several:
        answer["slurm_node"] = os.environ.get("SLURMD_NODENAME", "")
    return answer


def run_smoke(request: TrialRequest) -> dict[str, Any]:
    """An experimenter's smoke run, on the node a trial would run on: the training step alone (the
    same copy of the program, command, environment and sandbox as a trial's, so a program cannot
    tell the two apart), with the task's tiny settings, on the smoke run's clock. No evaluator runs,
    no result file is written: the answer is this function's return value, and the log is
    `<folder>/trial.log`, which the experimenter's side reads (and scrubs) itself."""
    gpu_placement.apply(request.placement)
    several = request.placement.nodes > 1
    if several and multinode.node_rank() > 0:
        return join_trial(request, multinode.node_rank(), done_file=SMOKE_DONE_FILE)
    folder = Path(request.folder)
    folder.mkdir(parents=True, exist_ok=True)
    if several:
        multinode.clear(folder)
    try:
        return _smoke_first_node(request, folder, several)
    finally:
        if several:  # the other nodes stop waiting, and stop their ranks
            multinode.mark_done(folder / SMOKE_DONE_FILE)


def _smoke_first_node(request: TrialRequest, folder: Path, several: bool) -> dict[str, Any]:
    work, artifacts, log_path = folder / "work", folder / "artifacts", folder / LOG_FILE
    for path in (artifacts, folder / "evaluation"):  # a trial's folder has its evaluator's scratch folder too
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    (folder / "overrides.json").write_text(json.dumps(request.overrides, indent=1, sort_keys=True))
    (folder / "reported_metrics.json").unlink(missing_ok=True)
    out: dict[str, Any] = {"ok": False, "timeout": False, "reason": "", "elapsed_s": 0.0,
                           "host": socket.gethostname(),
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    rendezvous: Optional[multinode.Rendezvous] = None
    try:
        _copy_program(Path(request.snapshot_dir), work)
        if several:
            rendezvous = multinode.here(request.trial_id, request.attempt)
        argv, env = sandboxed(request, "train", *training_step(request, rendezvous))
        if rendezvous is not None:
            multinode.write_rendezvous(folder, rendezvous)
    except (TaskError, OSError, sandboxing.SandboxError) as exc:
        log_path.write_text("")
        out["reason"] = f"the program could not be started: {exc}"
        return out
    stop = functools.partial(multinode.failed_node, folder, rendezvous.job) if rendezvous else None
    started = time.monotonic()
    with open(log_path, "wb") as log:
        code, failure, reason = _run_step(argv, work, env, request.time_limit_s, log, stop=stop)
    out["elapsed_s"] = time.monotonic() - started
    if failure is not None:
        out.update(reason=reason, timeout=failure is FailureClass.TIMEOUT)
    elif code != 0:
        out["reason"] = f"the program exited with status {code}"
    elif not any(path.is_file() for path in artifacts.rglob("*")):
        out["reason"] = ("the training step wrote nothing into its artifacts folder (the evaluator scores "
                         "what is there)")
    else:
        out["ok"] = True
    return out
