"""Where and how an experimenter's smoke run of an edited program runs.

The smoke run is a short job through an executor, like a trial: by default the campaign's own (a
short job on the trials' partition, or a local GPU slot), so that code meant for the trials'
hardware (bf16, torch.compile, a CUDA device) is tried there; a task may instead choose, explicitly,
to smoke-test on the coordinator's machine without a GPU (`smoke.where: cpu`, with overrides that
select the CPU). What runs is the trial runner's own training step (`trial.run_smoke`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .executors import TrialExecutor

#: How long a smoke job may wait for a place on the trials' hardware before it is given up.
QUEUE_WAIT_S = 600.0


@dataclass(frozen=True)
class SmokePlan:
    overrides: dict[str, Any] = field(default_factory=dict)
    time_limit_s: float = 60.0
    where: str = "trials"


def smoke_plan(task: Any, llm: Any) -> SmokePlan:
    """The task's smoke settings (task.yaml `smoke`), with the campaign's `llm.smoke_overrides` on top;
    a task that declares none gets the campaign's `llm.smoke_*` settings, on the trials' hardware."""
    spec = getattr(task, "smoke", None)
    if spec is None:
        return SmokePlan(dict(llm.smoke_overrides), llm.smoke_timeout_s, "trials")
    return SmokePlan({**spec.overrides, **llm.smoke_overrides}, spec.time_limit_s, spec.where)


def smoke_executor(config: Any, folder: Path, task: Any) -> TrialExecutor:
    """The executor smoke runs go through: the campaign's kind and resources (`where: trials`), or this
    machine's CPU (`where: cpu`). Its job folders are its own (never where trials' jobs are looked for)."""
    from .registry import make_executor
    from .gpus import with_task_gpus
    from .local import LocalTrialExecutor

    plan = smoke_plan(task, config.llm)
    folder = Path(folder)
    if plan.where == "cpu":
        return LocalTrialExecutor(folder, max_concurrent=1, timeout_min=plan.time_limit_s / 60 + 1)
    return make_executor(with_task_gpus(config, task.gpus, task.nodes), folder, plan.time_limit_s)
