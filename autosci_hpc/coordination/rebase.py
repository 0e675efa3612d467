"""Re-basing a candidate whose champion was replaced while it ran.

A candidate is measured against the champion it was built on. When another champion is promoted in
the meantime, promoting the candidate would drop the new champion's change, and its measured gain is
a gain over a program that is no longer the champion. Rather than throw the idea away, its change is
re-applied to the new champion, where that is unambiguous, and measured again there (a new trial):

- config overrides: the keys the candidate set differently from its parent champion go on top of the
  new champion's overrides, unless the new champion changed the same key to another value;
- code: file by file (three-way), a file the candidate changed is taken where the new champion still
  has the parent's version of it, kept where the new champion already has the candidate's version,
  and a conflict (both changed it differently) leaves the candidate stale.

Pure functions of the snapshot store and the two champions: nothing here runs trial code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..layout import CampaignLayout
from ..task import TaskSpec, regular_files, write_snapshot

_MISSING = object()


@dataclass
class Rebased:
    snapshot_id: str
    overrides: dict[str, Any]


def _eq(a: Any, b: Any) -> bool:
    """Equal values (compared as JSON), or both absent."""
    if a is _MISSING or b is _MISSING:
        return a is b
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def merge_overrides(parent: dict[str, Any], candidate: dict[str, Any],
                    new: dict[str, Any]) -> Union[dict[str, Any], str]:
    """The candidate's override changes (against `parent`) applied on `new`; a reason string on conflict."""
    out = dict(new)
    for key in sorted(set(parent) | set(candidate)):
        was, mine, theirs = parent.get(key, _MISSING), candidate.get(key, _MISSING), new.get(key, _MISSING)
        if _eq(was, mine) or _eq(theirs, mine):
            continue  # the candidate did not touch this key, or the new champion made the same change
        if not _eq(theirs, was):
            return f"override {key}: the new champion set it to {theirs!r}, the candidate to {mine!r}"
        if mine is _MISSING:
            out.pop(key, None)
        else:
            out[key] = mine
    return out


def _files(task: TaskSpec, folder: Path, snapshot_id: str) -> dict[str, bytes]:
    base = CampaignLayout(folder).snapshots / snapshot_id if snapshot_id else task.program_dir
    if not base.is_dir():
        raise FileNotFoundError(f"snapshot {snapshot_id!r} not found under {CampaignLayout(folder).snapshots}")
    return {rel: path.read_bytes() for rel, path in regular_files(base)}


def merge_files(parent: dict[str, bytes], candidate: dict[str, bytes],
                new: dict[str, bytes]) -> Union[dict[str, bytes], str]:
    """The candidate's file changes (against `parent`) applied on `new`; a reason string on conflict."""
    out = dict(new)
    for rel in sorted(set(parent) | set(candidate)):
        was, mine, theirs = parent.get(rel), candidate.get(rel), new.get(rel)
        if was == mine:
            continue
        if theirs == was:
            if mine is None:
                out.pop(rel, None)
            else:
                out[rel] = mine
        elif theirs != mine:
            return f"{rel}: changed by both the new champion and the candidate"
    return out


Program = tuple[str, dict[str, Any]]  # (snapshot id, overrides)


def rebase(task: TaskSpec, folder: Path, parent: Program, candidate: Program,
           new: Program) -> Union[Rebased, str]:
    """The candidate (snapshot, overrides) built on `parent`, re-applied to `new`; or why it cannot be."""
    overrides = merge_overrides(parent[1], candidate[1], new[1])
    if isinstance(overrides, str):
        return overrides
    if parent[0] == candidate[0]:
        snapshot: Optional[str] = new[0]
    else:
        try:
            files = merge_files(_files(task, folder, parent[0]), _files(task, folder, candidate[0]),
                                _files(task, folder, new[0]))
        except OSError as exc:
            return f"the snapshots cannot be read: {exc}"
        if isinstance(files, str):
            return files
        snapshot = write_snapshot(folder, files)
    return Rebased(snapshot_id=snapshot, overrides=overrides)
