"""A task folder: its spec (task.yaml), program snapshots, code edits and change signatures.

A program snapshot is a content-addressed copy of the task's program with a set of edits applied:
the same edited file set always hashes to the same id, so identical edits share one folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class TaskError(ValueError):
    pass


class PatchError(TaskError):
    """An edit that cannot be applied; the message says why, for the agent to correct it."""


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    direction: Literal["maximize", "minimize"]


class Axis(BaseModel):
    """One dimension an offline policy may vary: a dotted config key and its range."""

    model_config = ConfigDict(extra="forbid")
    key: str
    kind: Literal["choice", "float", "log_float", "int"]
    group: str
    values: list[Any] = Field(default_factory=list)
    low: Optional[float] = None
    high: Optional[float] = None

    @model_validator(mode="after")
    def _check(self) -> "Axis":
        if self.kind == "choice":
            if len(self.values) < 2:
                raise ValueError(f"axis '{self.key}': a choice needs at least two values")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"axis '{self.key}': needs low < high")
            if self.kind == "log_float" and self.low <= 0:
                raise ValueError(f"axis '{self.key}': log_float needs low > 0")
        return self

    def bin_of(self, value: Any, bins: int = 6) -> str:
        """Coarse position of a value on this axis: the unit dead ends are registered in."""
        if self.kind == "choice":
            return f"={_canon(value)}"
        assert self.low is not None and self.high is not None
        try:
            x = float(value)
        except (TypeError, ValueError):
            return f"={_canon(value)}"
        if self.kind == "log_float":
            lo, hi, x = math.log(self.low), math.log(self.high), math.log(max(x, self.low))
        else:
            lo, hi = self.low, self.high
        frac = (x - lo) / (hi - lo)
        return f"~bin{min(bins - 1, max(0, int(frac * bins)))}/{bins}"


class Edit(BaseModel):
    """Replace exactly one occurrence of `search` in `path` by `replace`."""

    model_config = ConfigDict(extra="forbid")
    path: str
    search: str
    replace: str


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: int = 1
    description: str
    metric: Metric
    test_metric: str
    program: str = "program"
    command: str
    editable: list[str]
    time_limit_s: float = Field(default=600, gt=0)
    #: Optional command run once per campaign to prepare the data (placeholders {python}, {data}).
    prepare: str = ""
    prepare_time_limit_s: float = Field(default=1800, gt=0)
    axes: list[Axis] = Field(default_factory=list)
    #: Set by `load_task`: the folder holding task.yaml.
    folder: Path = Path(".")

    @property
    def program_dir(self) -> Path:
        return self.folder / self.program

    @property
    def maximize(self) -> bool:
        return self.metric.direction == "maximize"

    def better(self, a: float, b: float) -> float:
        """How much `a` improves on `b`, positive when better, in the metric's units."""
        return a - b if self.maximize else b - a

    def axis(self, key: str) -> Optional[Axis]:
        return next((axis for axis in self.axes if axis.key == key), None)

    def groups(self) -> list[str]:
        seen: list[str] = []
        for axis in self.axes:
            if axis.group not in seen:
                seen.append(axis.group)
        return seen

    def base_config(self) -> dict[str, Any]:
        """The champion program's config.yaml, flattened to dotted keys (if it has one)."""
        path = self.program_dir / "config.yaml"
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        return flatten(data)


def unknown_keys(known: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Those of `keys` that are not keys of a program config whose keys are `known` (none when the
    program has no config.yaml to check against)."""
    return [k for k in keys if known and k not in known]


def unknown_keys_reason(known: Mapping[str, Any], keys: Iterable[str]) -> str:
    """Why `keys` cannot override that config, in one line; "" when they can."""
    unknown = unknown_keys(known, keys)
    if not unknown:
        return ""
    return f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"


def load_task(path: Union[str, Path]) -> TaskSpec:
    folder = Path(path)
    spec_file = folder / "task.yaml" if folder.is_dir() else folder
    if not spec_file.is_file():
        raise TaskError(f"{spec_file}: no task.yaml here (task.path must name a task folder)")
    try:
        data = yaml.safe_load(spec_file.read_text())
    except yaml.YAMLError as exc:
        raise TaskError(f"{spec_file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TaskError(f"{spec_file}: must be a mapping")
    try:
        spec = TaskSpec.model_validate({**data, "folder": spec_file.parent.resolve()})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise TaskError(f"{spec_file}: bad value for '{key}': {first['msg']}") from None
    if not spec.program_dir.is_dir():
        raise TaskError(f"{spec_file}: program folder {spec.program_dir} does not exist")
    for name in spec.editable:
        if not (spec.program_dir / name).is_file():
            raise TaskError(f"{spec_file}: editable file '{name}' is not in {spec.program_dir}")
    return spec


# ---- canonical forms --------------------------------------------------------------------------


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _canon(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, sort_keys=True)


def edits_digest(edits: list[Edit]) -> str:
    if not edits:
        return ""
    blob = json.dumps([e.model_dump() for e in edits], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def change_signature(overrides: dict[str, Any], edits: list[Edit]) -> str:
    """Canonical text of a change: sorted overrides, floats to 4 significant digits, edit digest."""
    parts = [f"{k}={_canon(v)}" for k, v in sorted(overrides.items())]
    digest = edits_digest(edits)
    if digest:
        parts.append(f"edits#{digest}")
    return ";".join(parts) or "(no change)"


def config_signature(snapshot_id: str, overrides: dict[str, Any]) -> str:
    """What a trial runs, up to the seed: the program snapshot and its effective overrides."""
    return f"{snapshot_id}|{change_signature(overrides, [])}"


def directions(task: TaskSpec, overrides: dict[str, Any], edits: list[Edit]) -> list[str]:
    """Coarse signatures of where a change moves the program, matched against dead ends."""
    out = []
    for key, value in sorted(overrides.items()):
        axis = task.axis(key)
        out.append(f"{key}{axis.bin_of(value) if axis else '=' + _canon(value)}")
    if edits:
        out.append(f"edits#{edits_digest(edits)}")
    return out


# ---- snapshots ------------------------------------------------------------------------------


def _program_files(folder: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and "__pycache__" not in rel:
            files[rel] = path.read_bytes()
    return files


def apply_edits(task: TaskSpec, files: dict[str, bytes], edits: list[Edit]) -> dict[str, bytes]:
    out = dict(files)
    for i, edit in enumerate(edits):
        if edit.path not in task.editable:
            raise PatchError(
                f"edit {i}: '{edit.path}' is not editable in task '{task.name}'; editable files: "
                + ", ".join(task.editable)
            )
        text = out[edit.path].decode()
        count = text.count(edit.search)
        if count != 1:
            raise PatchError(
                f"edit {i}: the search text occurs {count} times in '{edit.path}' (it must occur exactly once)"
            )
        out[edit.path] = text.replace(edit.search, edit.replace).encode()
    return out


def snapshot_id_of(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return digest.hexdigest()[:16]


def build_snapshot(task: TaskSpec, campaign_folder: Path, base_snapshot: str = "",
                   edits: Optional[list[Edit]] = None) -> str:
    """Materialise (base program + edits) under `<campaign>/snapshots/<id>/`; returns the id.

    The base is the task's program or an existing snapshot (a champion with code edits).
    Writing is idempotent: a snapshot that exists is complete (it is renamed into place).
    """
    root = campaign_folder / "snapshots"
    base_dir = root / base_snapshot if base_snapshot else task.program_dir
    if not base_dir.is_dir():
        raise TaskError(f"base snapshot {base_snapshot!r} not found under {root}")
    files = apply_edits(task, _program_files(base_dir), edits or [])
    sid = snapshot_id_of(files)
    target = root / sid
    if target.is_dir():
        return sid
    tmp = root / f".{sid}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, content in files.items():
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer got there first
    return sid
