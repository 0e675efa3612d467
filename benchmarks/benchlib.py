"""What the benchmarks share: the result format, the machine record, a toy task with a fixed trial
length, running the `autosci` CLI, and small measuring helpers.

Every benchmark module exposes `run(quick: bool = True, **options) -> dict`, and the dict it returns
has this shape (JSON-able; `run_all.py` turns `rows` into the results table):

    {"name": "...", "status": "ok" | "skipped" | "error", "summary": "one line",
     "sizes": {...what was run...}, "measured": {...}, "baseline": {...}, "ratios": {...},
     "targets": {"<key>": {"target": "≥ 97% busy", "value": 0.93, "met": false}, ...},
     "rows": [{"metric": ..., "measured": ..., "baseline": ..., "ratio": ..., "target": ..., "met": ...}]}

A skipped benchmark carries `reason`. Numbers are always measured in the same run; nothing here
computes a figure that a benchmark should have measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
TOY_TASK = ROOT / "tests" / "fixtures" / "tasks" / "toy"
TOY_CONFIG = ROOT / "configs" / "campaign" / "toy_smoke.yaml"

Span = tuple[float, float]


# ---- the result format ---------------------------------------------------------------------------


def target(text: str, value: Any, met: Optional[bool]) -> dict[str, Any]:
    """One target: its wording, the measured value it was judged on, and whether it was met
    (None when it could not be judged, e.g. the baseline was not run)."""
    return {"target": text, "value": value, "met": met}


def row(metric: str, measured: Any, baseline: Any = "—", ratio: Any = "—", target_text: str = "—",
        met: Optional[bool] = None) -> dict[str, Any]:
    """One line of the results table; values are already formatted for people."""
    return {"metric": metric, "measured": measured, "baseline": baseline, "ratio": ratio, "target": target_text,
            "met": met}


def result(name: str, summary: str, *, sizes: dict[str, Any], measured: dict[str, Any],
           baseline: dict[str, Any], ratios: dict[str, Any], targets: dict[str, dict[str, Any]],
           rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": "ok", "summary": summary, "sizes": sizes, "measured": measured,
            "baseline": baseline, "ratios": ratios, "targets": targets, "rows": rows, **extra}


def skipped(name: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": "skipped", "reason": reason, "summary": f"skipped: {reason}",
            "sizes": {}, "measured": {}, "baseline": {}, "ratios": {}, "targets": {}, "rows": [], **extra}


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(value: Optional[float], digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}×"


def pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    return f"{1000 * seconds:.2f} ms" if seconds < 0.1 else f"{1000 * seconds:.0f} ms"


# ---- measuring -----------------------------------------------------------------------------------


def overlap(span: Span, window: Span) -> float:
    """Seconds of `span` inside `window`."""
    return max(0.0, min(span[1], window[1]) - max(span[0], window[0]))


def busy_fraction(spans: Iterable[Span], slots: int, window: Span) -> Optional[float]:
    """Fraction of `slots` × the window's length that the spans (trials running) cover.

    Spans never overlap more than `slots` deep (the executor runs at most that many at once), so
    the sum of overlaps is the busy slot-time.
    """
    length = window[1] - window[0]
    if length <= 0 or slots <= 0:
        return None
    return sum(overlap(s, window) for s in spans) / (slots * length)


def max_in_window(times: Sequence[float], width_s: float) -> int:
    """The largest number of `times` inside any window of `width_s` seconds (a sliding window)."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] > width_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def max_concurrent(spans: Iterable[Span]) -> int:
    """The most spans open at one instant."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    depth = best = 0
    for _, step in edges:
        depth += step
        best = max(best, depth)
    return best


def db_time(value: Optional[str]) -> Optional[float]:
    """A timestamp column read with sqlite3 (UTC, naive text) as epoch seconds."""
    if value is None:
        return None
    stamp = datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def read_db(folder: Path) -> sqlite3.Connection:
    """The campaign database, read-only (the benchmarks never write a campaign they measure)."""
    return sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True, timeout=30)


# ---- tasks and the CLI ---------------------------------------------------------------------------


def toy_task(dest: Path, sleep_s: float) -> Path:
    """A copy of the toy fixture task whose every trial sleeps `sleep_s` seconds: fixed-length
    trials that cost no CPU, so the slots' busy time is the trials' and not the machine's."""
    shutil.copytree(TOY_TASK, dest)
    config = dest / "program" / "config.yaml"
    text = config.read_text()
    new = re.sub(r"^sleep: [0-9.]+", f"sleep: {sleep_s}", text, count=1, flags=re.MULTILINE)
    if new == text:
        raise RuntimeError(f"{config} has no `sleep:` line to set")
    config.write_text(new)
    return dest


def pinned(argv: list[str], cores: int) -> tuple[list[str], str]:
    """`argv` restricted to `cores` CPUs with taskset when the machine has more (the measured figures
    are for 2 cores); the second value says what was done."""
    have = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if have <= cores:
        return argv, f"{have} CPU(s), not pinned"
    if shutil.which("taskset") is None:
        return argv, f"{have} CPUs, taskset missing: not pinned to {cores}"
    return ["taskset", "-c", f"0-{cores - 1}", *argv], f"pinned to {cores} of {have} CPUs with taskset"


def autosci_argv(command: str, config: Path, overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "autosci_hpc.cli", command, str(config), *overrides]


def run_cli(argv: list[str], *, env: Optional[dict[str, str]] = None, timeout_s: float = 900,
            log: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; its output goes to `log` (kept for reading after a
    failure). Raises with the log's tail when it fails."""
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    if log is not None:
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {proc.stderr[-1500:]}")
    return proc


# ---- the machine ---------------------------------------------------------------------------------


def slurm_env() -> dict[str, str]:
    """This environment plus what the test cluster's env file sets (SLURM_CONF, partitions), for
    the values not already set: how the Slurm commands reach `make slurm-up`'s cluster."""
    env = dict(os.environ)
    env_file = Path(os.environ.get("AUTOSCI_SLURM_DIR", "/tmp/autosci-slurm")) / "env.sh"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                name, _, value = line[len("export "):].partition("=")
                words = shlex.split(value)
                env.setdefault(name.strip(), words[0] if words else "")
    return env


def _first_line(argv: list[str], env: Optional[dict[str, str]] = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=ROOT, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} ({platform.system()} {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def machine() -> dict[str, Any]:
    """Where the figures were measured: they mean nothing without it."""
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(_first_line(["git", "status", "--porcelain", "--untracked-files=no"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "ram_gib": _ram_gib(),
        "os": _os_name(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "slurm": _first_line(["sinfo", "--version"], slurm_env()) if shutil.which("sinfo") else "",
        "git_commit": commit + ("+local changes" if dirty else ""),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# ---- a benchmark's command line ------------------------------------------------------------------


def main(run: Callable[..., dict[str, Any]], doc: Optional[str], add_options: Callable[[argparse.ArgumentParser], None],
         ) -> int:
    """`python benchmarks/bench_X.py [--full] [options]`: run it, print the JSON and the summary."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--full", action="store_true", help="the full sizes instead of the quick defaults")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    add_options(parser)
    args = vars(parser.parse_args())
    full, out = args.pop("full"), args.pop("json")
    options = {k: v for k, v in args.items() if v is not None}
    began = time.monotonic()
    res = run(quick=not full, **options)
    res["seconds"] = round(time.monotonic() - began, 1)
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if out is not None:
        out.write_text(text)
    print(res.get("summary", ""), file=sys.stderr)
    return 0 if res.get("status") in ("ok", "skipped") else 1
