"""The benchmarks' measuring helpers: busy time, sliding windows, and the counting Slurm wrappers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_scheduler  # noqa: E402
import benchlib as bl  # noqa: E402


def test_busy_fraction_counts_only_what_lies_inside_the_window() -> None:
    spans = [(0.0, 10.0), (5.0, 15.0), (20.0, 30.0)]
    # Window 0..20 on 2 slots: 10 + 10 busy of 40 slot-seconds.
    assert bl.busy_fraction(spans, 2, (0.0, 20.0)) == pytest.approx(0.5)
    assert bl.busy_fraction(spans, 1, (20.0, 30.0)) == pytest.approx(1.0)
    assert bl.busy_fraction(spans, 2, (5.0, 5.0)) is None


def test_sliding_window_and_concurrency() -> None:
    assert bl.max_in_window([0, 10, 59, 61, 62, 200], 60) == 4  # 10, 59, 61, 62
    assert bl.max_in_window([], 60) == 0
    assert bl.max_concurrent([(0, 10), (5, 15), (9, 20), (15, 30)]) == 3
    assert bl.max_concurrent([(0, 1), (1, 2)]) == 1  # one ends as the next starts


def test_database_timestamps_are_read_as_utc() -> None:
    assert bl.db_time("1970-01-01 00:01:00.500000") == pytest.approx(60.5)


def test_the_toy_task_copy_has_the_trial_length(tmp_path: Path) -> None:
    task = bl.toy_task(tmp_path / "toy", 12.5)
    assert "sleep: 12.5" in (task / "program" / "config.yaml").read_text()


def test_wrappers_log_every_call_and_run_the_real_command(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    for name in ("sbatch", "sacct"):
        (real / name).write_text(f'#!/bin/sh\necho "{name} ran with $*"\n')
        (real / name).chmod(0o755)
    log = tmp_path / "calls.log"
    env = bench_scheduler.wrappers(tmp_path / "bin", log, {"PATH": f"{real}{os.pathsep}/usr/bin:/bin"})
    out = subprocess.run(["sbatch", "--parsable", "job.sh"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "sbatch ran with --parsable job.sh"
    for _ in range(3):
        subprocess.run(["sacct", "-j", "1"], env=env, capture_output=True, check=True)
    # the launch check asks sbatch without submitting: not a submission
    subprocess.run(["sbatch", "--test-only", "--wrap=true"], env=env, capture_output=True, check=True)
    calls = bench_scheduler.read_calls(log)
    assert [name for _, name in calls] == ["sbatch", "sacct", "sacct", "sacct", "sbatch --test-only"]
    counted = bench_scheduler.tally("test", calls, trials=2, seconds=30.0, submissions=1, max_outstanding=2)
    assert counted.counts == {"sbatch": 1, "sacct": 3, "squeue": 0, "scontrol": 0}
    assert counted.status_per_min == 6.0 and counted.status_busiest_min == 3


def test_without_a_cluster_the_scheduler_benchmark_is_skipped(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, no sbatch
    monkeypatch.setenv("AUTOSCI_SLURM_DIR", str(tmp_path / "none"))
    res = bench_scheduler.run()
    assert res["status"] == "skipped" and "make slurm-up" in res["reason"]
