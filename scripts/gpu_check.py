"""The GPU check: a short campaign of the tinygpt H100 profile on this machine's GPU(s).

Runs `autosci run configs/campaign/tinygpt_h100_check.yaml` (the project's own CLI, local executor,
offline agents, four trials sharing each GPU) while sampling the GPUs' utilization with nvidia-smi
in the background, then prints what the campaign did: trials, promotions, the champion against the
baseline, GPU-hours, and how busy the GPU was. It passes when the campaign ran to its end, every
trial of the baseline succeeded on a GPU, and the GPU was busy at some point.

`--cpu-dry-run` runs the same plumbing on a machine without a GPU: a fake GPU "0" (the trials are
placed on it and share it as on a real one), device cpu, a tiny model and a baseline-only budget.

Usage: scripts/gpu_check.sh [--cpu-dry-run] [--out DIR] [key=value ...] (it sets up the Python path).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "campaign" / "tinygpt_h100_check.yaml"
#: The plumbing on a CPU: a fake GPU shared by two trials, a tiny model on the CPU, the baseline only.
CPU_DRY_RUN = [
    "executor.local.gpus=[0]", "executor.local.trials_per_gpu=2", "executor.sandbox=auto",
    "task.overrides={device: cpu, train.time_budget_s: 2, train.dtype: float32, model.n_layer: 1, "
    "model.n_embd: 64, model.n_head: 2, model.block_size: 64, train.batch_size: 8, train.log_every: 50}",
    "promotion.seeds=2", "budget.trials=2", "budget.wall_clock_min=5",
]


class Sampler:
    """nvidia-smi's utilization of every GPU, once a second, in the background."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, str, float, float]] = []  # (time, gpu index, util %, memory MiB)
        self.names: dict[str, str] = {}
        self._proc: Optional[subprocess.Popen[str]] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> bool:
        tool = shutil.which("nvidia-smi")
        if not tool:
            return False
        self._proc = subprocess.Popen([tool, "--query-gpu=index,name,utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits", "-lms", "1000"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return True

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 4:
                continue
            try:
                self.samples.append((time.time(), parts[0], float(parts[2]), float(parts[3])))
                self.names[parts[0]] = parts[1]
            except ValueError:
                continue

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def busy(self, start: float, end: float) -> dict[str, float]:
        """Mean utilization (0..1) of each GPU between `start` and `end`."""
        out: dict[str, list[float]] = {}
        for t, gpu, util, _ in self.samples:
            if start <= t <= end:
                out.setdefault(gpu, []).append(util / 100.0)
        return {gpu: sum(v) / len(v) for gpu, v in out.items() if v}

    def peak_memory(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for _, gpu, _, memory in self.samples:
            out[gpu] = max(out.get(gpu, 0.0), memory)
        return out


def summarize(folder: Path) -> dict[str, Any]:
    """What the campaign did, read from its database (read-only)."""
    with sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True) as db:
        campaign = db.execute("SELECT status, trials_submitted, trials_finished, promotions, wall_clock_s "
                              "FROM campaign").fetchone()
        trials = db.execute('SELECT role, status, metric, duration_s, conditions, failure_class, '
                            'failure_reason, "group" FROM trial').fetchall()
        champions = db.execute("SELECT metric_mean FROM champion ORDER BY promoted_at, id").fetchall()
    # Each trial's run conditions (the campaign was made just now, by this checkout: its schema is current).
    placements = [json.loads(r[4] or "{}") for r in trials]
    placements = [p if isinstance(p, dict) else {} for p in placements]
    gpu_hours = sum((r[3] or 0.0) * float(p.get("gpus", 0.0)) / 3600 for r, p in zip(trials, placements))
    # A replication's seed set ("p7", "p7.r1", ...) and the champion's runs beside it ("p7:champion").
    replications = sorted({r[7] for r in trials if r[0] == "replicate"})
    reruns = {r[7].removesuffix(":champion") for r in trials if r[0] == "champion_rerun"}
    return {
        "status": campaign[0], "trials_submitted": campaign[1], "trials_finished": campaign[2],
        "promotions": campaign[3], "wall_clock_min": round(campaign[4] / 60, 2),
        "succeeded": sum(1 for r in trials if r[1] == "succeeded"),
        "failed": sum(1 for r in trials if r[1] == "failed"),
        "baseline_ok": all(r[1] == "succeeded" for r in trials if r[0] == "baseline") and
        any(r[0] == "baseline" for r in trials),
        "failures": sorted({f"{r[5]}: {(r[6] or '')[:160]}" for r in trials if r[1] == "failed"})[:5],
        "baseline": champions[0][0] if champions else None,
        "champion": champions[-1][0] if champions else None,
        "shares": sorted({int(p.get("share", 1)) for p in placements if p}),
        "devices": sorted({str(p.get("devices")) for p in placements if p.get("devices")}),
        "met": sum(1 for p in placements if p.get("together") is True),
        "apart": sum(1 for p in placements if p.get("together") is False),
        "gpu_hours": round(gpu_hours, 4),
        "replications": len(replications),
        "remeasured": sum(1 for g in replications if g in reruns),
        "champion_reruns": sum(1 for r in trials if r[0] == "champion_rerun"),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the plumbing without a GPU (tiny, on the CPU)")
    parser.add_argument("--out", default="", help="campaign folder (default: runs/gpu-check-<time>)")
    parser.add_argument("overrides", nargs="*", help="more key=value overrides of the campaign config")
    args = parser.parse_args(argv)
    stamp = datetime.now(timezone.utc)
    folder = Path(args.out or ROOT / "runs" / f"gpu-check-{stamp:%Y%m%d-%H%M%S}").absolute()
    overrides = (CPU_DRY_RUN if args.cpu_dry_run else []) + [f"campaign.folder={folder}"] + args.overrides
    sampler = Sampler()
    sampling = not args.cpu_dry_run and sampler.start()
    command = [sys.executable, "-m", "autosci_hpc.cli", "run", str(CONFIG), *overrides, "--quiet"]
    print("gpu_check: " + " ".join(command[2:]), flush=True)
    started = time.time()
    code = subprocess.call(command, cwd=ROOT)
    ended = time.time()
    time.sleep(1.5 if sampling else 0)
    sampler.stop()
    if not (folder / "state.db").is_file():
        print(f"gpu_check: FAILED: the campaign made no database in {folder} (autosci exit {code})")
        return 1
    s = summarize(folder)
    busy = sampler.busy(started, ended)
    names = sorted(set(sampler.names.values()))
    print("\n=== GPU check ===")
    print(f"date:        {stamp:%Y-%m-%d %H:%M} UTC")
    print(f"GPU:         {', '.join(names) if names else 'none seen by nvidia-smi'}"
          + (" (CPU dry run: a fake GPU on the CPU)" if args.cpu_dry_run else ""))
    minutes = (ended - started) / 60
    print(f"campaign:    {folder} ({s['status']}, autosci exit {code}, {minutes:.1f} min wall)")
    print(f"trials:      {s['trials_finished']} finished of {s['trials_submitted']} submitted "
          f"({s['succeeded']} succeeded, {s['failed']} failed); trials per GPU {s['shares']}, "
          f"on GPU(s) {s['devices']}")
    print(f"gangs:       {s['met']} trial(s) started with all their GPU neighbours, {s['apart']} without")
    print(f"replications: {s['replications']}, the champion re-run beside {s['remeasured']} of them "
          f"({s['champion_reruns']} champion runs)")
    print(f"promotions:  {s['promotions']}")
    print(f"champion:    val_bpb {s['champion']} (baseline {s['baseline']})")
    print(f"GPU-hours:   {s['gpu_hours']}")
    print("GPU busy:    " + (", ".join(f"GPU {g} {v:.0%}" for g, v in sorted(busy.items())) if busy else
                             "n/a (no nvidia-smi samples)")
          + (f"; peak memory {max(sampler.peak_memory().values()):.0f} MiB" if sampler.samples else ""))
    for line in s["failures"]:
        print(f"  failed: {line}")
    problems = []
    if code != 0:
        problems.append(f"autosci exited {code}")
    if not s["baseline_ok"]:
        problems.append("a baseline trial did not succeed")
    if s["champion"] is None:
        problems.append("no champion")
    if not s["devices"]:
        problems.append("no trial was placed on a GPU")
    if s["apart"]:
        problems.append(f"{s['apart']} trial(s) ran without all their GPU neighbours")
    if s["remeasured"] < s["replications"]:
        problems.append("a replication ran without the champion re-measured beside it (the task is timed)")
    if not args.cpu_dry_run and not any(v > 0 for v in busy.values()):
        problems.append("the GPU never showed any utilization")
    print("result:      " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
