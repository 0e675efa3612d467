"""What a trial actually ran, written down on the coordinator's side from the snapshot store.

A trial's program is a content-addressed snapshot (`<campaign>/snapshots/<id>/`) plus config
overrides. Its diff against the champion it was built on is what the experimenter implemented:
the proposal's signature says what was intended, the diff says what ran. Computed here, never on a
compute node, and never from anything the trial wrote.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from ..layout import CampaignLayout
from ..task import flatten

#: A diff longer than this is cut (the rest is counted): the record stays readable and small.
MAX_DIFF_CHARS = 60_000
#: Files larger than this are compared by size only.
MAX_FILE_BYTES = 2_000_000


def _files(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and "__pycache__" not in rel:
            out[rel] = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else b"\0large"
    return out


def _lines(data: bytes) -> Optional[list[str]]:
    if b"\0" in data:
        return None
    try:
        return data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _config_of(snapshot_dir: Path) -> dict[str, Any]:
    """The snapshot's config.yaml, flattened to dotted keys ({} without one, or unreadable)."""
    path = snapshot_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(data) if isinstance(data, dict) else {}


def overrides_diff(before: dict[str, Any], after: dict[str, Any],
                   defaults: Optional[dict[str, Any]] = None) -> str:
    """The overridden config keys, before and after, as a unified diff of `key: value` lines; a key only
    one side overrides shows the program's own value (from `defaults`) on the other."""
    defaults = defaults or {}
    keys = sorted(set(before) | set(after))
    a = [f"{k}: {_canon(before.get(k, defaults.get(k)))}\n" for k in keys if k in before or k in defaults]
    b = [f"{k}: {_canon(after.get(k, defaults.get(k)))}\n" for k in keys if k in after or k in defaults]
    return "".join(difflib.unified_diff(a, b, "a/(config overrides)", "b/(config overrides)"))


def snapshot_diff(snapshots: Path, before: str, after: str) -> str:
    """Unified diff between two program snapshots under `snapshots` ("" when identical)."""
    if before == after:
        return ""
    old, new = _files(snapshots / before), _files(snapshots / after)
    parts = []
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a == b:
            continue
        la, lb = _lines(a or b""), _lines(b or b"")
        if la is None or lb is None:
            parts.append(f"Binary files a/{rel} and b/{rel} differ\n")
            continue
        parts.append("".join(difflib.unified_diff(la, lb, f"a/{rel}" if a is not None else "/dev/null",
                                                  f"b/{rel}" if b is not None else "/dev/null")))
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)


def program_diff(campaign_folder: Path, base_snapshot: str, base_overrides: dict[str, Any], snapshot: str,
                 overrides: dict[str, Any]) -> str:
    """What a trial changed against its parent champion: code first, then config overrides."""
    snapshots = CampaignLayout(campaign_folder).snapshots
    text = snapshot_diff(snapshots, base_snapshot, snapshot)
    text += overrides_diff(base_overrides, overrides, _config_of(snapshots / base_snapshot))
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + f"\n... ({len(text) - MAX_DIFF_CHARS} more characters cut)\n"
    return text
