"""GPUs: which ones this machine has, how local trials share them, and where each trial ran.

A local campaign on a GPU machine runs its trials on the machine's GPUs: each GPU (or group of
`gpus_per_trial` GPUs) is a *gang* of `trials_per_gpu` slots. The slots of one GPU start together
and the GPU takes no new trial before all of them have ended; when fewer trials are ready than it
has slots, the missing ones are filled with *ballast* (a copy of one of the gang's trials, run in
a folder of its own, its result never read). So every trial of a campaign trains next to exactly
`trials_per_gpu - 1` neighbours, as its champion did: for a time-budgeted task, sharing is part of
the measurement (each of four trials sharing a GPU gets fewer steps than one trial alone), and a
trial that ran alone would be measured on other hardware than its champion.

Where a trial runs is its `Placement`, set by the executor in its request and applied to the job's
environment on the node (`apply`); the node reports it with the trial's run conditions
(`conditions.observe`), which is where the trial's share and the GPUs it is charged with are stored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from pydantic import BaseModel

#: Environment variables of the distributed launch (`ranks.py`), set on each rank of a trial.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "GROUP_RANK", "NODE_RANK")


class Placement(BaseModel):
    """Where one trial runs: set by its executor, reported with its result (its run conditions)."""

    #: The executor that placed it ("local", "slurm"); "" for a request nobody placed.
    executor: str = ""
    #: Local GPU trials: the slot (GPU group index x trials_per_gpu + position) and the GPUs it sees
    #: (CUDA_VISIBLE_DEVICES). None: the variable is left as the scheduler set it (SLURM), or, for a
    #: local trial, removed (an executor with no GPUs of its own sets "" to hide the machine's).
    slot: Optional[int] = None
    devices: Optional[str] = None
    #: Trials that run at once on the same GPU(s), this one included (1: the GPU is its own).
    share: int = 1
    #: GPUs the trial is charged with, fractional when shared: what its GPU-hours are counted with (0: a
    #: CPU trial, or ballast, whose GPU time the trials of its gang are charged with).
    gpus: float = 0.0
    #: Processes of the training step in all (its WORLD_SIZE), one per GPU: `ranks.py` launches
    #: ranks / nodes of them on each node, with RANK and WORLD_SIZE.
    ranks: int = 1
    #: Nodes the trial spans (SLURM only): its first node runs the trial as on one node (and the evaluator);
    #: each other node runs only its ranks of the training step, which meet the first node's
    #: (execution/nodes.py).
    nodes: int = 1
    #: A ballast run: it only keeps a gang's GPU as loaded as its trials' champion had it.
    ballast: bool = False
    #: Local GPU gangs: the folder where the gang's `share` members meet before their training steps, so
    #: that each runs beside the others however late its process started ("": no gang, nobody to wait for).
    gang: str = ""
    #: Whether the gang's members all arrived (`meet`): None without a gang, False if some never came
    #: within GANG_WAIT_S (the trial then ran with fewer neighbours than planned).
    together: Optional[bool] = None


def visible_gpus(environ: Optional[Mapping[str, str]] = None, smi: Optional[str] = None) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set (ids or UUIDs, "" for none), else
    the indices nvidia-smi lists, else none."""
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        ids = [v.strip() for v in value.split(",") if v.strip()]
        # CUDA stops at the first invalid id ("-1" is the usual way to say "none")
        out = []
        for device in ids:
            if device.lstrip("-").isdigit() and int(device) < 0:
                break
            out.append(device)
        return out
    tool = smi if smi is not None else shutil.which("nvidia-smi")
    if not tool:
        return []
    try:
        result = subprocess.run([tool, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()]


GpuSetting = Union[str, int, Sequence[Union[int, str]]]


def resolve_gpus(setting: GpuSetting, environ: Optional[Mapping[str, str]] = None,
                 smi: Optional[str] = None) -> list[str]:
    """`executor.local.gpus` as device ids: "auto" the visible ones, a count the first N of them
    (0, 1, ... where none can be listed), a list exactly those."""
    if isinstance(setting, str):
        if setting != "auto":
            return [d.strip() for d in setting.split(",") if d.strip()]
        return visible_gpus(environ, smi)
    if isinstance(setting, bool):
        raise ValueError("executor.local.gpus: a count, a list of device ids, or 'auto'")
    if isinstance(setting, int):
        if setting <= 0:
            return []
        visible = visible_gpus(environ, smi)
        return visible[:setting] if len(visible) >= setting else [str(i) for i in range(setting)]
    return [str(d).strip() for d in setting if str(d).strip()]


def gpu_groups(devices: Sequence[str], gpus_per_trial: int) -> list[list[str]]:
    """The machine's GPUs cut into the groups one trial uses (a remainder that fits no trial is idle)."""
    per = max(1, gpus_per_trial)
    return [list(devices[i:i + per]) for i in range(0, len(devices) - per + 1, per)]


#: How long a gang member waits for the others before it runs anyway (and records that they did not meet).
GANG_WAIT_S = 300.0


def meet(placement: Placement, wait_s: float = GANG_WAIT_S, poll_s: float = 0.05) -> Placement:
    """Wait until every member of this trial's gang has arrived (each leaves a marker named by its slot in
    the gang's folder): the members of a shared GPU start their training steps together, so none runs
    its first seconds alone because a neighbour's process was slow to start. Returns the placement with
    `together` set (unchanged without a gang)."""
    if not placement.gang:
        return placement
    folder = Path(placement.gang)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(placement.slot)).write_text("")
    except OSError:
        return placement.model_copy(update={"together": False})
    deadline = time.monotonic() + wait_s
    while True:
        try:
            arrived = sum(1 for _ in folder.iterdir())
        except OSError:
            arrived = 0
        if arrived >= placement.share:
            return placement.model_copy(update={"together": True})
        if time.monotonic() >= deadline:
            return placement.model_copy(update={"together": False})
        time.sleep(poll_s)


def placement_for(group: int, position: int, devices: Sequence[str], share: int, *, trials: int = 0,
                  ballast: bool = False, gang: str = "") -> Placement:
    """The placement of the trial at `position` of GPU group `group`'s gang of `trials` trials (the
    rest ballast). Each trial is charged its part of the GPUs the gang held: ballast serves the
    gang's trials, so its GPU time is theirs (a trial alone with three ballast runs held a whole GPU)."""
    return Placement(executor="local", slot=group * share + position, devices=",".join(devices), share=share,
                     gpus=0.0 if ballast else len(devices) / max(1, trials or share), ranks=len(devices),
                     ballast=ballast, gang=gang)


def apply(placement: Placement, environ: Optional[dict[str, str]] = None) -> None:
    """Make the job's environment say what the placement says (on the node, before any step runs).

    submitit's local executor sets CUDA_VISIBLE_DEVICES to "" for a job that asked for no GPUs, which
    hides the machine's GPUs from every trial; the local executor therefore places each trial itself
    and its placement decides the variable here. A SLURM placement leaves what Slurm set."""
    env = os.environ if environ is None else environ
    if placement.executor != "local":
        return
    if placement.devices is None:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        env["CUDA_VISIBLE_DEVICES"] = placement.devices


def local_nodes_problem(config: Any) -> str:
    """Why the campaign's executor cannot run its trials on their nodes, in one line; "" when it can:
    the local executor is one machine."""
    nodes = config.task.nodes or 1
    if nodes > 1 and config.executor.kind == "local":
        return (f"task.nodes: the task's trials span {nodes} nodes each, but executor.kind=local runs on this "
                "one machine; use executor.kind=slurm, or task.nodes=1 with task.gpus that fit one machine")
    return ""


def with_task_gpus(config: Any, task_gpus: int, task_nodes: int = 1) -> Any:
    """The campaign config with `task.gpus` and `task.nodes` resolved (the campaign's setting, else the
    task's), so that what the trials hold is in the stored config; refused here, before anything is
    created: GPUs that cannot be spread evenly over the nodes, a local campaign of trials on several nodes,
    and a local campaign whose trials need more GPUs than the machine shows."""
    from ..config import ConfigError, nodes_problem

    gpus = task_gpus if config.task.gpus is None else config.task.gpus
    nodes = task_nodes if config.task.nodes is None else config.task.nodes
    problem = nodes_problem(gpus or 0, nodes or 1)
    if problem:
        raise ConfigError(f"task.nodes: {problem} (the campaign's task.gpus/task.nodes, else the task's)")
    if (config.task.gpus, config.task.nodes) != (gpus, nodes):
        config = config.model_copy(deep=True)
        config.task.gpus, config.task.nodes = gpus, nodes
    problem = local_nodes_problem(config)
    if problem:
        raise ConfigError(problem)
    need = config.task.gpus or 0
    if need and config.executor.kind == "local":
        found = resolve_gpus(config.executor.local.gpus)
        if len(found) < need:
            raise ConfigError(
                f"executor.local.gpus: the task's trials use {need} GPU(s) each, but this machine shows "
                f"{len(found)} ({config.executor.local.gpus!r}: CUDA_VISIBLE_DEVICES, else nvidia-smi); "
                "set executor.local.gpus, or task.gpus=0 to run the task on the CPU")
    return config


def sharing_change(stored: Mapping[str, Any], config: Any) -> str:
    """Why a resumed campaign may not run its trials as configured now: the GPUs a trial uses and the
    trials sharing a GPU are part of what a time-budgeted trial measures, fixed when it began."""
    task = stored.get("task") if isinstance(stored.get("task"), Mapping) else {}
    executor = stored.get("executor") if isinstance(stored.get("executor"), Mapping) else {}
    local = executor.get("local") if isinstance(executor.get("local"), Mapping) else {}
    before_gpus, now_gpus = task.get("gpus"), config.task.gpus
    if before_gpus is not None and before_gpus != now_gpus:
        return f"its trials used {before_gpus} GPU(s) each; task.gpus cannot change to {now_gpus}"
    before_nodes, now_nodes = task.get("nodes"), config.task.nodes
    if before_nodes is not None and before_nodes != now_nodes:
        return f"its trials spanned {before_nodes} node(s) each; task.nodes cannot change to {now_nodes}"
    before_share = local.get("trials_per_gpu")
    now_share = config.executor.local.trials_per_gpu
    local_gpus = config.executor.kind == "local" and now_gpus
    if local_gpus and before_share is not None and before_share != now_share:
        return (f"its trials shared each GPU {before_share} at a time; executor.local.trials_per_gpu cannot "
                f"change to {now_share}")
    return ""
