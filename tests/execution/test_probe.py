"""`autosci doctor --probe`: one tiny job through the campaign's executor reports the GPUs it was
given, the torch and CUDA versions, and whether the sandbox works there (and GPUs reach it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURE_TASKS, ROOT


def doctor(tmp_path: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "autosci_hpc.cli", "doctor", str(tmp_path / "runs"), "--probe"]
    for item in sets:
        argv += ["--set", item]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)


def probe_section(out: str) -> str:
    return out[out.index("probe of the trials' hardware"):]


def test_the_probe_of_a_cpu_task_runs_on_the_local_executor(tmp_path: Path) -> None:
    result = doctor(tmp_path, f"task.path={FIXTURE_TASKS / 'toy'}")
    section = probe_section(result.stdout)
    assert "a short job through the local executor (this machine)" in section
    assert "CUDA_VISIBLE_DEVICES=''" in section  # a CPU task's trials see no GPU
    assert "sandbox " in section and "torch" in section
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "runs").iterdir()) == []  # its scratch folder is gone


def test_the_probe_of_a_gpu_task_reports_its_gpu_and_fails_where_torch_sees_none(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = doctor(tmp_path, f"task.path={FIXTURE_TASKS / 'ranks'}", "executor.local.gpus=[4]",
                    "executor.sandbox=none")
    section = probe_section(result.stdout)
    assert "CUDA_VISIBLE_DEVICES='4'" in section, section
    assert "FAILED: the task's trials use 1 GPU(s) each; torch sees 0 here" in section
    assert "sandbox none: works" in section
    assert result.returncode == 1


@pytest.mark.slurm
def test_the_probe_runs_on_the_gpu_partition(tmp_path: Path, slurm_cluster: object) -> None:
    result = doctor(tmp_path, f"task.path={FIXTURE_TASKS / 'ranks'}", "executor.kind=slurm",
                    f"executor.slurm.partition={getattr(slurm_cluster, 'gpu_partition')}",
                    "executor.slurm.time_min=5")
    section = probe_section(result.stdout)
    assert "a short job through the slurm executor (partition h100)" in section, result.stdout + result.stderr
    # Slurm gave the job one of the node's fake h100s; torch (a CPU build, and no real GPU) sees none.
    assert "Slurm's GPUs 0" in section or "Slurm's GPUs 1" in section
    assert "sandbox " in section and result.returncode == 1
