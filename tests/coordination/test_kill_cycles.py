"""A few kill -9 / restart cycles of a running campaign (benchmarks/kill_restart.py runs 100)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from helpers import ROOT


def test_kill_restart_cycles_lose_and_double_nothing(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("kill_restart", ROOT / "benchmarks" / "kill_restart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.run(cycles=4, folder=tmp_path / "campaign", trials=15, seed=1, min_s=3.0, max_s=6.0)
    # Killed while the campaign was under way, not only during start-up, and resumed each time.
    assert report["killed_mid_run"] >= 2 and report["restarts"] >= 1
    assert report["consistent"], report
