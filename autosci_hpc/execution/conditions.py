"""The conditions a trial runs under, as its node sees them: reported with its result.

One record per trial (`state.conditions` stores, cleans and reads it): the node's host, the devices the
trial was given (`CUDA_VISIBLE_DEVICES`, after its placement was applied), the GPU indices Slurm gave
the job, the names of its GPUs, and its executor's placement (how many trials share its GPU, the GPUs it
is charged with, its ranks in all, the nodes it spans, whether it is ballast). Runs on the node, so it
never reaches the database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Any

from .gpus import Placement


def gpu_names(devices: str) -> list[str]:
    """Names of the GPUs this process may use, from nvidia-smi where there is one (never imports a
    framework: that would cost seconds per trial); [] without a GPU."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ["unknown"]
    rows = [line.split(",", 1) for line in out.stdout.splitlines() if "," in line]
    wanted = {d.strip() for d in devices.split(",") if d.strip()}
    return [name.strip() for index, name in rows if not wanted or index.strip() in wanted]


def observe(placement: Placement) -> dict[str, Any]:
    """This trial's run conditions: what the node shows now, and what its executor planned."""
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return {"host": socket.gethostname(), "devices": devices,
            "slurm_gpus": os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS", ""),
            "gpu": gpu_names(devices) if devices.strip() else [],  # "": the trial sees no GPU
            "executor": placement.executor, "slot": placement.slot, "share": placement.share,
            "gpus": placement.gpus, "ranks": placement.ranks, "nodes": placement.nodes,
            "ballast": placement.ballast,
            **({"together": placement.together} if placement.together is not None else {})}
