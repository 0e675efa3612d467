"""The experimenters' smoke run goes through an executor, on the trials' hardware: the task's smoke
settings (task.yaml `smoke`), the trial runner's own training step (`trial.run_smoke`), a local GPU
slot or a short job through (fake) Slurm; and a task's explicit choice of the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from autosci_hpc.config import LLMSection, load_config
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from autosci_hpc.execution.smoke import smoke_executor, smoke_plan
from autosci_hpc.execution.trial import TrialRequest, run_smoke
from autosci_hpc.llm.workspace import Workspace
from autosci_hpc.task import Edit, SmokeSpec, load_task
from helpers import FIXTURE_TASKS

RANKS = FIXTURE_TASKS / "ranks"


class Recording(LocalTrialExecutor):
    """The real local executor, recording what it is asked to run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.short: list[tuple[Callable[..., Any], TrialRequest, float]] = []

    def run_short(self, fn: Callable[[TrialRequest], Any], request: TrialRequest, timeout_s: float) -> Any:
        self.short.append((fn, request, timeout_s))
        return super().run_short(fn, request, timeout_s)


def test_the_smoke_run_is_a_short_job_of_the_trial_runner_on_a_local_gpu_slot(tmp_path: Path) -> None:
    task = load_task(RANKS)
    executor = Recording(tmp_path / "jobs", timeout_min=2, gpus=["7"], gpus_per_trial=1, trials_per_gpu=2)
    ws = Workspace.create(task, task.program_dir, tmp_path / "scratch", executor=executor)
    ws.set_overrides({"sleep": 0.4})
    ok, report = ws.smoke(LLMSection())
    assert ok, report
    ((fn, request, timeout_s),) = executor.short
    assert fn is run_smoke
    # the task's smoke settings: its overrides on top of the proposal's, its time limit
    assert request.overrides == {"sleep": 0.0} and request.time_limit_s == 60 and timeout_s >= 60
    assert request.sandbox == ws.sandbox and request.evaluate == ""
    assert "GPU(s) 7" in report and "on local" in report
    assert list((tmp_path / "jobs" / "short").glob("*/*_submitted.pkl")), "no submitit job was made"


def test_a_failing_smoke_run_reports_the_programs_output(tmp_path: Path) -> None:
    task = load_task(RANKS)
    executor = Recording(tmp_path / "jobs", timeout_min=2)
    ws = Workspace.create(task, task.program_dir, tmp_path / "scratch", executor=executor)
    ws.apply([Edit(path="train.py", search="    me = seen()\n",
                   replace="    me = seen()\n    raise RuntimeError('boom on the node')\n")])
    ok, report = ws.smoke(LLMSection())
    assert not ok and "exited with status 1" in report and "boom on the node" in report
    assert len(executor.short) == 1 and not list((tmp_path / "scratch").glob("*.run"))


def test_the_smoke_run_goes_through_slurm_as_a_short_job(tmp_path: Path, fake_slurm: Any) -> None:
    task = load_task(RANKS)
    executor = SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5, "slurm_partition": "h100"},
                                  job_name="autosci-smoke-test")
    ws = Workspace.create(task, task.program_dir, tmp_path / "scratch", executor=executor)
    ok, report = ws.smoke(LLMSection())
    assert ok, report
    (submission,) = fake_slurm.submissions()
    assert submission["name"] == "autosci-smoke-test-short"
    script = next((tmp_path / "jobs" / "short").rglob("*_submission.sh")).read_text()
    assert "--partition=h100" in script


def test_the_smoke_executor_is_the_campaigns_unless_the_task_chooses_the_cpu(tmp_path: Path) -> None:
    task = load_task(RANKS)
    slurm = load_config(None, ["executor.kind=slurm", "executor.slurm.partition=h100"])
    chosen = smoke_executor(slurm, tmp_path / "smoke", task)
    assert isinstance(chosen, SlurmTrialExecutor) and chosen.parameters["slurm_partition"] == "h100"
    assert chosen.parameters["slurm_gres"] == "gpu:1"  # the task's trials use one GPU: so does its smoke run
    cpu_task = task.model_copy(update={"smoke": SmokeSpec(overrides={"sleep": 0.0}, where="cpu")})
    cpu = smoke_executor(slurm, tmp_path / "smoke-cpu", cpu_task)
    assert isinstance(cpu, LocalTrialExecutor) and cpu.groups == []
    # a task without smoke settings: the campaign's llm.smoke_* (the old keys), on the trials' hardware
    plan = smoke_plan(task.model_copy(update={"smoke": None}),
                      LLMSection(smoke_overrides={"sleep": 0.1}, smoke_timeout_s=9))
    assert (plan.overrides, plan.time_limit_s, plan.where) == ({"sleep": 0.1}, 9, "trials")


@pytest.mark.parametrize("bad", [{"where": "gpu"}, {"time_limit_s": 0}, {"cpu": True}])
def test_bad_smoke_settings_are_refused_when_the_task_loads(tmp_path: Path, bad: dict[str, Any]) -> None:
    import shutil

    import yaml

    from autosci_hpc.task import TaskError

    folder = tmp_path / "ranks"
    shutil.copytree(RANKS, folder)
    spec = yaml.safe_load((folder / "task.yaml").read_text())
    spec["smoke"] = {**spec["smoke"], **bad}
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(TaskError, match=r"task.yaml: bad value for 'smoke\."):
        load_task(folder)
