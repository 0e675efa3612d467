"""`autosci doctor --probe`: one tiny job where trials run, saying what a trial would find there.

The job runs through the campaign's executor (a short job on the trials' partition, or a local GPU
slot) and reports the GPUs it was given (CUDA_VISIBLE_DEVICES, Slurm's, nvidia-smi's names), the
torch and CUDA versions and whether torch sees a device, and whether the campaign's sandbox works
on that node, with the same check run inside it (GPU devices pass into the sandbox or they do not).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import gpus as gpu_placement
from . import sandbox as sandboxing
from .trial import TrialRequest

#: What the probe asks Python (outside and inside the sandbox); a JSON line on stdout.
TORCH_CHECK = """
import json, os
out = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.version.cuda, available=torch.cuda.is_available())
    count = torch.cuda.device_count() if out["available"] else 0
    out["devices"] = [torch.cuda.get_device_name(i) for i in range(count)]
except Exception as exc:
    out.update(torch=None, error=f"{type(exc).__name__}: {exc}")
print(json.dumps(out))
"""


def _python(argv: list[str], env: dict[str, str], cwd: str, timeout_s: float = 180) -> dict[str, Any]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[-300:]}"}
    try:
        return dict(json.loads(lines[-1]))
    except ValueError:
        return {"error": "unreadable answer"}


def probe_node(request: TrialRequest) -> dict[str, Any]:
    """On the node: what a trial placed like `request` would find."""
    gpu_placement.apply(request.placement)
    folder = Path(request.folder)
    (folder / "work").mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"host": socket.gethostname(), "python": sys.version.split()[0],
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "slurm_gpus": (os.environ.get("SLURM_STEP_GPUS")
                                          or os.environ.get("SLURM_JOB_GPUS", "")),
                           "nvidia_smi": []}
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            out["nvidia_smi"] = [line.strip() for line in smi.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as exc:
            out["nvidia_smi"] = [f"nvidia-smi failed: {exc}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCI_")}
    out["outside"] = _python([sys.executable, "-c", TORCH_CHECK], env, str(folder))
    mode = request.sandbox.mode
    out["sandbox"] = mode
    if mode == "none":
        out["sandbox_works"], out["sandbox_detail"] = True, "no sandbox (trial code runs unprotected)"
        return out
    works, why = sandboxing.probe(mode, request.sandbox.image)
    out["sandbox_works"], out["sandbox_detail"] = works, why
    if works:
        argv, inner_env = sandboxing.wrap([sys.executable, "-c", TORCH_CHECK], env,
                                          request.sandbox.policy(str(folder)))
        out["inside"] = _python(argv, inner_env, str(folder))
    return out


def probe_lines(answer: dict[str, Any], gpus_per_trial: int) -> tuple[bool, list[str]]:
    """What `autosci doctor --probe` prints, and whether a trial could run there as the task needs."""
    ok = True
    outside = answer.get("outside", {}) if isinstance(answer.get("outside"), dict) else {}
    lines = [f"node {answer.get('host', '?')} (Python {answer.get('python', '?')}): CUDA_VISIBLE_DEVICES="
             f"{answer.get('cuda_visible_devices')!r}"
             + (f", Slurm's GPUs {answer['slurm_gpus']}" if answer.get("slurm_gpus") else "")
             + (f"; nvidia-smi: {'; '.join(answer['nvidia_smi'])}" if answer.get("nvidia_smi") else
                "; no nvidia-smi")]
    if outside.get("torch"):
        devices = outside.get("devices") or []
        lines.append(f"torch {outside['torch']} (CUDA {outside.get('cuda') or 'none'}): "
                     + (f"{len(devices)} device(s): {', '.join(devices)}" if devices else "no CUDA device"))
        if gpus_per_trial and len(devices) < gpus_per_trial:
            ok = False
            lines.append(f"FAILED: the task's trials use {gpus_per_trial} GPU(s) each; torch sees "
                         f"{len(devices)} here")
    else:
        lines.append(f"torch: not importable ({outside.get('error', 'no answer')})")
        ok = ok and not gpus_per_trial
    works = bool(answer.get("sandbox_works"))
    lines.append(f"sandbox {answer.get('sandbox')}: {'works' if works else 'FAILED'}: "
                 f"{answer.get('sandbox_detail', '')}")
    ok = ok and works
    inside = answer.get("inside")
    if isinstance(inside, dict):
        if inside.get("torch"):
            seen = len(inside.get("devices") or [])
            lines.append(f"  in the sandbox: torch {inside['torch']}, {seen} CUDA device(s)")
            if gpus_per_trial and seen < gpus_per_trial:
                ok = False
                lines.append("  FAILED: the GPUs do not reach trial code inside the sandbox")
        else:
            lines.append(f"  in the sandbox: torch not importable ({inside.get('error', 'no answer')})")
            ok = ok and not gpus_per_trial
    return ok, lines


def run_probe(config: Any, task: Any, folder: Path) -> tuple[bool, list[str]]:
    """Submit the probe through the campaign's executor (its folder: `folder`) and word the answer."""
    from .executors import ShortJobError
    from .registry import make_executor
    from .gpus import with_task_gpus
    from .sandbox import campaign_sandbox

    config = with_task_gpus(config, task.gpus, task.nodes)
    executor = make_executor(config, folder / "jobs", 120)
    sandbox, _ = campaign_sandbox(config, folder, network=task.network)
    request = TrialRequest(trial_id=0, folder=str(folder / "probe"), snapshot_dir=str(folder), command="",
                           overrides={}, seed=0, time_limit_s=120, metric=task.metric.name,
                           test_metric=task.test_metric, sandbox=sandbox)
    where = (f"partition {config.executor.slurm.partition or '(default)'}" if config.executor.kind == "slurm"
             else "this machine")
    head = f"a short job through the {executor.name} executor ({where})"
    try:
        answer = executor.run_short(probe_node, request, 900)
    except ShortJobError as exc:
        return False, [head, f"FAILED: {exc}"]
    ok, lines = probe_lines(answer, config.task.gpus or 0)
    return ok, [head] + lines
