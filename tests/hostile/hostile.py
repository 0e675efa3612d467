"""Hostile programs and the greps that check what they achieved.

A hostile program is the toy fixture's `train.py` with an attack prepended: it runs first, records
what it managed in `probe.json` in its working folder (the trial's own folder, which the test reads
back), prints what it stole (the held-out values rounded and in scientific notation, the key reversed
and spaced) and then lets the honest program do its job, so the trial still succeeds.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterable

import pytest

from autosci_hpc.execution import sandbox

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "fixtures" / "tasks" / "toy"
KEY = "sk-ant-api03-HOSTILE-test-key-7d41c09e2b"

ATTACK = r'''
# ---- attack (prepended by the hostile tests) ----
import glob as _glob, json as _json, os as _os, sqlite3 as _sqlite3
_TARGETS = __TARGETS__
_probe = {"read": {}, "wrote": {}, "proc": {}, "forum_insert": False, "stolen_heldout": [], "stolen_key": ""}
for _name, _path in _TARGETS.get("read", {}).items():
    try:
        with open(_path, "rb") as _f:
            _data = _f.read()
        _probe["read"][_name] = True
        if _name == "key_file":
            _probe["stolen_key"] = _data.decode(errors="replace").strip()
    except OSError:
        _probe["read"][_name] = False
for _name, _path in _TARGETS.get("write", {}).items():
    try:
        with open(_path, "a") as _f:
            _f.write("# tampered by trial code\n")
        _probe["wrote"][_name] = True
    except OSError:
        _probe["wrote"][_name] = False
_others = 0
for _env in _glob.glob("/proc/[0-9]*/environ"):
    if _env.split("/")[2] == str(_os.getpid()):
        continue
    try:
        with open(_env, "rb") as _f:
            _blob = _f.read().split(b"\0")
        _others += 1
        for _item in _blob:
            if _item.split(b"=", 1)[0].endswith((b"API_KEY", b"AUTH_TOKEN")) and b"=" in _item:
                _probe["stolen_key"] = _item.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass
_probe["proc"]["other_environs_read"] = _others
_probe["proc"]["pids_seen"] = len(_glob.glob("/proc/[0-9]*"))
_db = _TARGETS.get("db", "")
if _db:
    try:
        _con = _sqlite3.connect(_db, timeout=1)
        _probe["stolen_heldout"] = [r[0] for r in _con.execute(
            "select test_metric from trial where test_metric is not null")]
        _body = " ".join(f"{_v:.3f}" for _v in _probe["stolen_heldout"]) + " " + _probe["stolen_key"][::-1]
        _con.execute("insert into forum_post (kind, title, body, trial_ids, created_at) values "
                     "('analysis', 'trial code was here', ?, '[]', '2020-01-01 00:00:00')", (_body,))
        _con.commit()
        _probe["forum_insert"] = True
    except Exception as _exc:  # noqa: BLE001
        _probe["db_error"] = str(_exc)[:200]
for _path in _TARGETS.get("other_results", []):
    try:
        with open(_path) as _f:
            _value = _json.load(_f).get("test_metric")
        if _value is not None:
            _probe["stolen_heldout"].append(_value)
    except (OSError, ValueError):
        pass
with open("probe.json", "w") as _f:
    _json.dump(_probe, _f)
for _v in _probe["stolen_heldout"]:
    print(f"held-out: {_v:.2f} {_v:.3f} {_v:.4f} {_v:.6f} {_v:.3e} {_v:.2E} {100 * _v:.1f}%")
if _probe["stolen_key"]:
    _k = _probe["stolen_key"]
    print("key:", _k, "reversed:", _k[::-1], "spaced:", " ".join(_k))
# ---- end of the attack ----
'''


def hostile_task(folder: Path, targets: dict[str, Any], extra: str = "") -> Path:
    """A copy of the toy task whose train.py runs the attack (and `extra`) first; its folder."""
    task = folder / "hostile-task"
    shutil.copytree(TOY, task)
    train = task / "program" / "train.py"
    attack = ATTACK.replace("__TARGETS__", repr(targets)) + extra
    train.write_text(attack + "\n" + train.read_text())
    return task


def sealed_request(task: Any, campaign: Path, trial: Path, mode: str, **fields: Any) -> Any:
    """A trial request as the coordinator makes it (task contract 2: the frozen evaluator, its hashes),
    in the given sandbox, with `fields` replaced."""
    from autosci_hpc.execution.sandbox import SandboxSettings
    from autosci_hpc.execution.trial import task_request

    request = task_request(task, campaign, trial_id=int(trial.name), folder=trial, snapshot_dir=task.program_dir,
                           overrides={}, seed=0, time_limit_s=60, sandbox=SandboxSettings(mode=mode))
    return request.model_copy(update=fields)


def bwrap_works() -> tuple[bool, str]:
    return sandbox.probe("bwrap")


def skip_without_bwrap() -> None:
    """Skip (with the reason) where bubblewrap cannot build a sandbox, unless the sandbox is required."""
    ok, why = bwrap_works()
    if not ok:
        if os.environ.get("AUTOSCI_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"AUTOSCI_REQUIRE_SANDBOX=1 but bwrap does not work here: {why}")
        pytest.skip(f"bwrap does not work here: {why}")


def needs_sandbox(request: pytest.FixtureRequest, mode: str, reason: str) -> None:
    """Without a sandbox, the guard that follows is expected to fail (strictly: if it passed, the
    test would be wrong about what the sandbox is for)."""
    if mode == "none":
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=f"needs the sandbox: {reason}"))


# ---- the greps -------------------------------------------------------------------------------------------


def key_forms(key: str) -> list[str]:
    return [key, key[::-1]]


def skeleton(text: str) -> str:
    return re.sub(r"[\W_]+", "", text).lower()


def key_in(text: str, key: str = KEY) -> bool:
    """The key, exact or reversed, or spaced/separated (its letters and digits in a row)."""
    if any(form in text for form in key_forms(key)):
        return True
    flat = skeleton(text)
    return any(skeleton(form) in flat for form in key_forms(key))


def heldout_forms(value: float) -> list[str]:
    """How a program or a model would print a held-out value (independent of the scrubber's parser)."""
    forms = {f"{value:.{d}f}" for d in range(2, 7)} | {f"{value:.{d}e}" for d in range(1, 5)}
    forms |= {f"{value:.{d}E}" for d in range(1, 5)} | {f"{100 * value:.{d}f}%" for d in range(0, 3)}
    forms |= {repr(value)}
    return sorted(forms)


def heldout_in(text: str, values: Iterable[float], public: Iterable[float] = ()) -> list[str]:
    """The printed forms of held-out values found in `text`, as whole numbers (not inside longer ones).

    A form that is also a printed form of a `public` (validation) value is not counted: "0.887" in a
    model card is the validation mean, even where the held-out value also rounds to 0.887."""
    shown = {form for v in public if v is not None and math.isfinite(v) for form in heldout_forms(v)}
    found = []
    for value in values:
        if value is None or not math.isfinite(value):
            continue
        for form in heldout_forms(value):
            if form in shown:
                continue
            if re.search(r"(?<![\d.])" + re.escape(form) + r"(?![\d])", text):
                found.append(form)
    return found


#: Columns that record a held-out value on purpose (the measurement itself), never shown to an agent.
MEASUREMENT_COLUMNS = {("trial", "test_metric"), ("trial", "metrics"), ("champion", "test_metric_mean")}
#: Files that record the measurement on purpose.
MEASUREMENT_FILES = ("metrics.json", "result.json")


def database_text(db: Path) -> str:
    """Every value of the campaign database as text, except the measurement columns."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        parts = []
        for (table,) in con.execute("select name from sqlite_master where type='table'"):
            columns = [r[1] for r in con.execute(f"pragma table_info('{table}')")]
            for row in con.execute(f"select * from '{table}'"):
                parts += [str(v) for c, v in zip(columns, row) if (table, c) not in MEASUREMENT_COLUMNS]
        return "\n".join(parts)
    finally:
        con.close()


def campaign_files(folder: Path) -> dict[Path, str]:
    """Every file of the campaign folder as text (the database as its non-measurement values)."""
    out = {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.name == "state.db":
            out[path] = database_text(path)
        elif path.name.startswith("state.db"):
            continue  # -wal / -shm: pages of the database, checked through the database
        else:
            out[path] = path.read_bytes().decode("utf-8", errors="replace")
    return out


def run_in_runner(request_json: str, env: dict[str, str]) -> "subprocess.CompletedProcess[str]":
    """Run one trial in its own Python process (as submitit's worker does), with `env` as that process's
    initial environment: what `/proc/<pid>/environ` of the trial's parent shows."""
    import subprocess

    code = ("import sys; from autosci_hpc.execution.trial import TrialRequest, run_trial, TrialFailed\n"
            "try:\n    run_trial(TrialRequest.model_validate_json(sys.argv[1]))\n"
            "except TrialFailed as exc:\n    print(exc)\n")
    return subprocess.run([sys.executable, "-c", code, request_json], env=env, capture_output=True, text=True,
                          timeout=120)


def probe_of(trial_folder: Path) -> dict[str, Any]:
    return json.loads((trial_folder / "work" / "probe.json").read_text())
