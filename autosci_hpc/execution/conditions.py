"""The conditions a trial ran under: its node, its accelerator, and how many trials shared them.

On a metric that depends on time or hardware (a training run cut off by a time budget), who else was
on the GPU moves the number more than most ideas do; two runs compared across different conditions
are not a fair pair. So every trial records, from the node it runs on, its host name, the devices it
was given (`CUDA_VISIBLE_DEVICES`) and their names, and how many trials were running on that same
slot (host and devices) when it started, itself included. The count comes from marker files the
trial runner keeps in the campaign's trials folder while a trial runs: cheap, no daemon, and a
marker left by a killed job stops counting once it is older than a trial can live.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

#: Where the running trials' markers live, under the campaign's trials folder.
RUNNING = ".running"

_current: dict[str, Any] = {}


def slot() -> tuple[str, str]:
    """(host, devices) of this process: the unit trials share."""
    return socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


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


def _key(host: str, devices: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}__{devices or 'cpu'}")[:120]


def enter(trials_folder: Path, trial_id: int, attempt: int, lifetime_s: float) -> dict[str, Any]:
    """Mark this trial as running on its slot and return its conditions (kept for `current`)."""
    host, devices = slot()
    key = _key(host, devices)
    folder = trials_folder / RUNNING
    shared = 1
    marker: Optional[Path] = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for other in folder.glob(f"{key}.*"):
            try:
                if now - other.stat().st_mtime <= lifetime_s:
                    shared += 1
            except OSError:
                continue  # it finished while we looked
        marker = folder / f"{key}.{trial_id}.{attempt}.{os.getpid()}"
        marker.write_text("")
    except OSError:
        shared = 0  # unknown: the folder cannot be written
    _current.clear()
    _current.update({"host": host, "devices": devices, "gpu": gpu_names(devices), "shared": shared,
                     "marker": str(marker) if marker else ""})
    return current()


def leave() -> None:
    """The trial is done: its marker stops counting."""
    marker = _current.get("marker")
    if marker:
        Path(marker).unlink(missing_ok=True)


def current() -> dict[str, Any]:
    """The conditions of the trial this process runs ({} before `enter`)."""
    return {k: v for k, v in _current.items() if k != "marker"}


def key_of(conditions: dict[str, Any]) -> tuple[str, str, int]:
    """What must match for two runs to count as measured under the same conditions."""
    gpu = conditions.get("gpu") or []
    shared = conditions.get("shared", 0)
    return (str(conditions.get("host", ""))[:200],
            (",".join(str(g) for g in gpu) if isinstance(gpu, list) else str(gpu))[:200],
            shared if isinstance(shared, int) and not isinstance(shared, bool) else 0)


def describe(conditions: dict[str, Any]) -> str:
    """`host node1, GPU NVIDIA H200, 4 trials sharing it` in one phrase."""
    if not conditions:
        return "not recorded"
    host, gpu, shared = key_of(conditions)
    where = f"GPU {gpu}" if gpu else "CPU"
    return f"host {host or '?'}, {where}, {shared} trial{'s' if shared != 1 else ''} on the slot at launch"


def differ(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> Optional[str]:
    """Why two sides of a comparison ran under different conditions (None: the same, or not recorded)."""
    left = {key_of(c) for c in a if c}
    right = {key_of(c) for c in b if c}
    if not left or not right or left == right:
        return None
    parts = []
    for label, index in (("host", 0), ("GPU", 1), ("trials sharing the slot", 2)):
        lvals, rvals = sorted({k[index] for k in left}), sorted({k[index] for k in right})
        if lvals != rvals:
            parts.append(f"{label} {'/'.join(map(str, lvals)) or '-'} vs {'/'.join(map(str, rvals)) or '-'}")
    return "; ".join(parts) or None
