"""Task data, prepared once per campaign: run the task's `prepare` command, record provenance.

The data lands in `<campaign>/data/`, in two parts (task contract 2): `visible/`, what a training
step may read (with `splits: K` in task.yaml, one self-contained folder `visible/split-k/` per split,
and a training step gets only its seed's), and `sealed/`, the validation labels and held-out data
that only the evaluator receives. The prepare command writes its files there and may write
`provenance.json` (source, version, license, citation); we add a manifest with the sha256 of every
file, so a campaign records exactly which data its trials saw. A prepared folder is reused (its
manifest marks it complete); a failed preparation leaves no manifest and says why.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .layout import CampaignLayout, sealed_data, visible_data
from .task import TaskError, TaskSpec

MANIFEST = "manifest.json"


class DataError(TaskError):
    pass


def checksums(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def visible_dirs(task: TaskSpec, folder: Path) -> list[Path]:
    """The folders a training step may be given: one per split."""
    return [visible_data(folder, k, task.splits) for k in range(task.splits)]


def layout_problem(task: TaskSpec, folder: Path) -> str:
    """Why a prepared data folder does not have the contract's visible/sealed layout; "" if it does."""
    missing = [p.relative_to(folder).as_posix() for p in [*visible_dirs(task, folder), sealed_data(folder)]
               if not p.is_dir()]
    if missing:
        return (f"wrote no {', '.join(missing)}: prepared data comes in a visible part (for training) and a "
                "sealed part (for the evaluator only)")
    return ""


def prepare_data(task: TaskSpec, campaign_folder: Path) -> dict[str, Any]:
    """Prepare the task's data into the campaign folder (once); returns the manifest."""
    target = CampaignLayout(campaign_folder).data
    manifest_path = target / MANIFEST
    if manifest_path.is_file():
        return json.loads(manifest_path.read_text())
    if not task.prepare:
        return {}
    target.mkdir(parents=True, exist_ok=True)
    argv = shlex.split(task.prepare.format(python=shlex.quote(sys.executable), data=shlex.quote(str(target))))
    try:
        proc = subprocess.run(argv, cwd=task.folder, capture_output=True, text=True,
                              timeout=task.prepare_time_limit_s)
    except subprocess.TimeoutExpired:
        raise DataError(f"task {task.name}: data preparation ran past {task.prepare_time_limit_s:g} s") from None
    except OSError as exc:
        raise DataError(f"task {task.name}: cannot run its prepare command {argv!r}: {exc}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DataError(f"task {task.name}: data preparation failed (exit {proc.returncode}):\n{tail}")
    problem = layout_problem(task, target)
    if problem:
        raise DataError(f"task {task.name}: its prepare command {problem}")
    provenance_file = target / "provenance.json"
    provenance = json.loads(provenance_file.read_text()) if provenance_file.is_file() else {}
    manifest = {"task": task.name, "task_version": task.version, "command": task.prepare,
                "provenance": provenance, "sha256": checksums(target)}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
