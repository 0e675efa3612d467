"""The served model's job handling without a cluster: the script, refusals, restarts and their bound."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from autosci_hpc.config import LLMSection
from autosci_hpc.llm.served import ServedModel, ServeError, job_script


class FakeSlurm:
    """sbatch / squeue / scancel answered in memory; a job 'announces' its endpoint when submitted."""

    def __init__(self, folder: Path, refuse: str = "") -> None:
        self.folder = folder
        self.refuse = refuse
        self.jobs: dict[str, str] = {}
        self.calls: list[list[str]] = []
        self.submitted = 0

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        if argv[0] == "sbatch":
            if self.refuse:
                return subprocess.CompletedProcess(argv, 1, "", f"sbatch: error: {self.refuse}\n")
            job = str(100 + self.submitted)
            self.submitted += 1
            self.jobs[job] = "RUNNING"
            (self.folder / "served" / f"endpoint-{job}").write_text(f"http://node{job}:8000/v1\n")
            return subprocess.CompletedProcess(argv, 0, f"{job}\n", "")
        if argv[0] == "squeue":
            state = self.jobs.get(argv[3], "")
            return subprocess.CompletedProcess(argv, 0, state + "\n" if state else "", "")
        if argv[0] == "scancel":
            self.jobs.pop(argv[1], None)
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(argv)


def served(tmp_path: Path, slurm: FakeSlurm, **serve: Any) -> ServedModel:
    llm = LLMSection(backend="openai", model="m", prices={"m": {"input": 0, "output": 0}},
                     serve={"command": "vllm serve m --port {port}", **serve})
    return ServedModel(llm, tmp_path, run=slurm, answers=lambda url: True, sleep=lambda s: None)


def test_the_job_script_announces_its_endpoint_then_becomes_the_server(tmp_path: Path) -> None:
    llm = LLMSection(serve={"command": "vllm serve m --port {port}", "setup": ["module load cuda"]})
    script = job_script(llm.serve, tmp_path)
    assert "module load cuda" in script and 'exec vllm serve m --port "$PORT"' in script
    assert script.index("endpoint-") < script.index("exec ")


def test_a_dead_server_is_submitted_again_up_to_its_bound(tmp_path: Path) -> None:
    slurm = FakeSlurm(tmp_path)
    model = served(tmp_path, slurm, max_restarts=1)
    assert model.ensure() == "http://node100:8000/v1"
    assert model.ensure() == "http://node100:8000/v1"  # alive: re-attached, nothing submitted
    assert sum(c[0] == "sbatch" for c in slurm.calls) == 1
    slurm.jobs.clear()  # it died
    assert model.ensure() == "http://node101:8000/v1" and model.restarts == 1
    slurm.jobs.clear()
    with pytest.raises(ServeError, match="died 2 times"):
        model.ensure()
    # A resumed coordinator re-attaches to the running job instead of submitting another.
    slurm.jobs["101"] = "RUNNING"
    again = served(tmp_path, slurm)
    assert again.ensure() == "http://node101:8000/v1"
    again.stop()
    assert "101" not in slurm.jobs and not again.job_id


def test_an_sbatch_refusal_is_one_line(tmp_path: Path) -> None:
    model = served(tmp_path, FakeSlurm(tmp_path, refuse="Invalid generic resource (gres) specification"))
    with pytest.raises(ServeError, match=r"^llm.serve: sbatch refused .*Invalid generic resource"):
        model.ensure()
