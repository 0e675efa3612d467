"""A task folder: its spec (task.yaml), program snapshots, code edits and change signatures.

A program snapshot is a content-addressed copy of the task's program with a set of edits applied:
the same edited file set always hashes to the same id, so identical edits share one folder. Only
regular files are ever copied: a link in a program folder is refused, never followed, because what
a trial plants there must not carry an outside file into a snapshot (or into a prompt).

Task contract 2: the program only trains; a sealed evaluator, outside the program folder and frozen
into the campaign when it starts, computes the metrics (tasks/README.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .config import nodes_problem
from .files import atomic_write_text, yaml_problem
from .layout import CampaignLayout


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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
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


class SmokeSpec(BaseModel):
    """How an experimenter's smoke run of an edited program runs: a short training step (no metric),
    on the trials' hardware by default, so that GPU-only code (bf16, torch.compile) is tried where it
    will run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    #: Overrides of the program's config that make a run take seconds (on top of the proposal's).
    overrides: dict[str, Any] = Field(default_factory=dict)
    #: The smoke run's wall-clock limit, in seconds.
    time_limit_s: float = Field(default=120, gt=0)
    #: trials: a short job through the campaign's executor (the trials' partition, a local GPU slot);
    #: cpu: on the coordinator's machine with no GPU, the task's explicit choice (its overrides then
    #: select the CPU, e.g. device: cpu).
    where: Literal["trials", "cpu"] = "trials"


#: The task contract `load_task` accepts (tasks/README.md, "Task contract version 2").
CONTRACT = 2


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    version: int = 1
    #: 2: the program trains, the sealed evaluator measures. Campaigns recorded under contract 1
    #: still load (for reports); `load_task` accepts only the current contract.
    contract: int = 1
    description: str
    metric: Metric
    test_metric: str
    program: str = "program"
    command: str
    editable: list[str]
    #: Wall-clock limit of the training step, enforced by the harness on its own clock.
    time_limit_s: float = Field(default=600, gt=0)
    #: The sealed evaluator's folder, relative to the task folder and outside `program`.
    evaluator: str = "evaluator"
    #: The evaluator's command (placeholders {python}, {evaluator}, {artifacts}, {data}, {sealed},
    #: {split}, {seed}, {metrics}, {program}); run with cwd = a scratch folder after training has ended.
    evaluate: str = ""
    evaluate_time_limit_s: float = Field(default=600, gt=0)
    #: How many visible/sealed splits `prepare` writes; seed s trains on split s % splits.
    splits: int = Field(default=1, ge=1, le=100)
    #: Whether the metric changes with the seed (the usual case: `autosci task check` then requires two
    #: seeds to give two metrics). A task whose measurement is deterministic whatever the seed says false.
    seed_dependent: bool = True
    #: What besides the seed moves the metric. `seeded` (default): the program, its config and the seed
    #: decide it, so a champion's stored runs are reused as its side of a paired comparison. `timed`: time
    #: or hardware moves it too (a training run cut off by a time budget, a shared GPU), so the champion is
    #: re-run next to each challenger's replication, in the same submission and on the same seeds.
    noise: Literal["seeded", "timed"] = "seeded"
    #: Whether trial code needs the network (to download weights, say). Without it, sandboxed trials have none.
    network: bool = False
    #: GPUs one trial uses (0: a CPU task, whose trials see no GPU). Above 1, the training step runs as
    #: that many processes, one per GPU, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
    gpus: int = Field(default=0, ge=0, le=64)
    #: Nodes one trial spans (1: one machine). Above 1, `gpus` are spread evenly over them (gpus / nodes on
    #: each, so gpus must be a multiple of nodes), the training step runs gpus / nodes ranks on each node,
    #: and they meet at the first node's host (MASTER_ADDR): see tasks/README.md, "Trials on several nodes".
    nodes: int = Field(default=1, ge=1, le=64)
    #: The experimenters' smoke run (null: the campaign's llm.smoke_* settings, on the trials' hardware).
    smoke: Optional[SmokeSpec] = None
    #: Optional command run once per campaign to prepare the data (placeholders {python}, {data}).
    prepare: str = ""
    prepare_time_limit_s: float = Field(default=1800, gt=0)
    axes: list[Axis] = Field(default_factory=list)
    #: Set by `load_task`: the folder holding task.yaml.
    folder: Path = Path(".")

    @field_validator("nodes")
    @classmethod
    def _gpus_per_node(cls, nodes: int, info: ValidationInfo) -> int:
        problem = nodes_problem(info.data.get("gpus", 0), nodes)
        if problem:
            raise ValueError(problem)
        return nodes

    @property
    def program_dir(self) -> Path:
        return self.folder / self.program

    @property
    def evaluator_dir(self) -> Path:
        return self.folder / self.evaluator

    @property
    def timed(self) -> bool:
        """Whether a champion's stored runs are stale evidence: its metric depends on time or hardware."""
        return self.noise == "timed"

    def split_of(self, seed: int) -> int:
        """Which prepared split a seed trains and is scored on."""
        return seed % self.splits

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
        return flatten(read_program_config(path))


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
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TaskError(f"{spec_file}: not valid YAML: {yaml_problem(exc)}") from exc
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
    problem = contract_problem(spec)
    if problem:
        raise TaskError(f"{spec_file}: {problem}")
    program_config = spec.program_dir / "config.yaml"
    if program_config.is_file():
        read_program_config(program_config)  # refused here, in one line, rather than in the middle of a run
    return spec


def read_program_config(path: Path) -> dict[str, Any]:
    """A program's config.yaml as a mapping (empty for an empty file); TaskError, one line naming the
    file, where it is not YAML or not a mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: not valid YAML: {yaml_problem(exc)}") from exc
    except OSError as exc:
        raise TaskError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TaskError(f"{path}: must be a mapping of config keys, not a {type(data).__name__}")
    return data


def contract_problem(spec: TaskSpec) -> str:
    """Why a loaded task does not follow task contract 2, in one line; "" when it does."""
    if spec.contract != CONTRACT:
        return (f"task contract {spec.contract} is not supported: set 'contract: {CONTRACT}' and give the task "
                "a sealed evaluator ('evaluator', 'evaluate'), tasks/README.md says how")
    if not spec.evaluate.strip():
        return "no 'evaluate' command: under task contract 2 a sealed evaluator computes the metrics"
    evaluator, program = spec.evaluator_dir.resolve(), spec.program_dir.resolve()
    if not evaluator.is_dir():
        return f"evaluator folder {spec.evaluator_dir} does not exist"
    if evaluator == program or program in evaluator.parents or evaluator in program.parents:
        return (f"evaluator folder '{spec.evaluator}' and program folder '{spec.program}' overlap: the "
                "evaluator must live outside the program, where no edit reaches it")
    return ""


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


def regular_files(folder: Path, skip_pycache: bool = True) -> list[tuple[str, Path]]:
    """Every file under `folder` as (relative posix path, path), sorted, without following links.

    A symbolic link (to a file or a folder) or any other non-regular entry raises `TaskError`
    naming it: copying it would carry whatever it points to, possibly outside the campaign.
    """
    out: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in sorted(dirs + names):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if skip_pycache and "__pycache__" in rel.split("/"):
                continue
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise TaskError(f"{rel}: is a symbolic link (to {os.readlink(path)!r}); program folders hold "
                                "regular files only, links are refused, never followed")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise TaskError(f"{rel}: is not a regular file; program folders hold regular files only")
            out.append((rel, path))
        dirs[:] = [d for d in dirs if not (skip_pycache and d == "__pycache__")]
    return sorted(out)


def _program_files(folder: Path) -> dict[str, bytes]:
    return {rel: path.read_bytes() for rel, path in regular_files(folder)}


def file_hashes(folder: Path, exclude: Iterable[str] = (), skip_pycache: bool = False) -> dict[str, str]:
    """sha256 of every entry under `folder` (links and odd entries included, never followed).

    What integrity checks compare before and after a trial: a planted link or a changed byte
    anywhere shows up as a difference, in __pycache__ too (a planted .pyc is code). Missing folders
    hash to {}.
    """
    skip = set(exclude)
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in dirs + names:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if rel in skip or (skip_pycache and "__pycache__" in rel.split("/")):
                continue
            try:
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    out[rel] = "link:" + os.readlink(path)
                elif stat.S_ISREG(mode):
                    out[rel] = _sha256_file(path)
                elif not stat.S_ISDIR(mode):
                    out[rel] = "special"
            except OSError as exc:  # vanished or unreadable: that is a difference too
                out[rel] = f"unreadable:{exc.errno}"
    return dict(sorted(out.items()))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_changes(before: Mapping[str, str], after: Mapping[str, str], label: str) -> list[str]:
    """What differs between two `file_hashes` results, as short lines ("changed data/x.csv")."""
    out = []
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            out.append(f"removed {label}/{rel}")
        elif rel not in before:
            out.append(f"added {label}/{rel}")
        elif before[rel] != after[rel]:
            out.append(f"changed {label}/{rel}")
    return out


def _copy_tree(source: Path, target: Path) -> None:
    """The regular files of `source` as `target`, replacing it (write beside, then rename)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, path in regular_files(source):
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def freeze_evaluator(task: TaskSpec, campaign_folder: Path) -> dict[str, str]:
    """Copy the task's evaluator into `<campaign>/evaluator/` once and record its hashes.

    The campaign measures with this frozen copy from its first trial to its last, whatever happens
    to the task folder meanwhile; every trial checks the copy against the recorded hashes before
    it runs it and after. Called again (for each new trial), it restores a copy that a trial
    changed, when the task's own evaluator still matches the recorded hashes: one hostile trial
    fails, the campaign goes on. Returns {relative path: sha256}.
    """
    layout = CampaignLayout(campaign_folder)
    manifest_path = layout.evaluator_manifest
    target = layout.evaluator
    if manifest_path.is_file():
        recorded = dict(json.loads(manifest_path.read_text()))
        if file_hashes(target) != recorded and file_hashes(task.evaluator_dir, skip_pycache=True) == recorded:
            _copy_tree(task.evaluator_dir, target)  # a trial changed the copy: restore it, byte for byte
        return recorded
    files = {rel: path.read_bytes() for rel, path in regular_files(task.evaluator_dir)}
    _copy_tree(task.evaluator_dir, target)
    hashes = {rel: hashlib.sha256(content).hexdigest() for rel, content in sorted(files.items())}
    atomic_write_text(manifest_path, json.dumps(hashes, indent=1, sort_keys=True))
    return hashes


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
    root = CampaignLayout(campaign_folder).snapshots
    base_dir = root / base_snapshot if base_snapshot else task.program_dir
    if not base_dir.is_dir():
        raise TaskError(f"base snapshot {base_snapshot!r} not found under {root}")
    return write_snapshot(campaign_folder, apply_edits(task, _program_files(base_dir), edits or []))


def write_snapshot(campaign_folder: Path, files: dict[str, bytes]) -> str:
    """Write a program's files as the snapshot `<campaign>/snapshots/<id>/` (id: their content); returns
    the id. Written once: a snapshot that exists is complete, since it is renamed into place."""
    root = CampaignLayout(campaign_folder).snapshots
    sid = snapshot_id_of(files)
    target = root / sid
    if target.is_dir():
        return sid
    tmp = root / f".{sid}.{os.getpid()}.tmp"  # per process: another may be writing the same snapshot
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
