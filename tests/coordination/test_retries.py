"""Trials lost to the infrastructure are retried on the same seed, with lineage, a bounded number of times."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Sequence

from sqlmodel import col, select

from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.execution.executors import JobState
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.state.models import Event, Trial
from helpers import FIXTURE_TASKS, campaign_config


class NodeFailingExecutor(LocalTrialExecutor):
    """Real local jobs; the first `kills` jobs are killed mid-run and reported as NODE_FAIL,
    the way sacct reports a job whose node died."""

    def __init__(self, *args: object, kills: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.kills = kills
        self.killed: set[str] = set()

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        for job_id in job_ids:
            if len(self.killed) < self.kills and job_id not in self.killed and job_id in self._jobs:
                time.sleep(0.5)
                os.kill(int(job_id), signal.SIGKILL)
                self._jobs[job_id]._process.wait()
                self.killed.add(job_id)
        out = super().states(job_ids)
        return {j: (JobState(True, "NODE_FAIL", "node_fail") if j in self.killed else s) for j, s in out.items()}


def slow_toy(tmp_path: Path) -> Path:
    task_dir = tmp_path / "slow_toy"
    shutil.copytree(FIXTURE_TASKS / "toy", task_dir)
    cfg = task_dir / "program" / "config.yaml"
    # Long enough that a killed job's orphaned program cannot report before the grace window ends.
    cfg.write_text(cfg.read_text().replace("sleep: 0.0", "sleep: 4.0"))
    return task_dir


def test_a_node_failure_is_retried_on_the_same_seed_with_lineage(tmp_path: Path) -> None:
    config = campaign_config(tmp_path, "toy", f"task.path={slow_toy(tmp_path)}", "budget.trials=5",
                             "coordination.teams=1", "executor.max_retries=2")
    executor = NodeFailingExecutor(tmp_path / "jobs", max_concurrent=3, timeout_min=2, kills=1)
    coordinator = Coordinator(config, config.campaign_folder(), executor=executor)
    coordinator.run(max_ticks=400)
    with coordinator.store.read() as session:
        baseline = session.exec(select(Trial).where(Trial.role == "baseline").order_by(col(Trial.id))).all()
        retried = session.exec(select(Event).where(Event.kind == "trial.retried")).all()
    lost = [t for t in baseline if t.failure_class == "node_fail"]
    assert len(lost) == 1 and lost[0].superseded_by is not None
    retry = next(t for t in baseline if t.id == lost[0].superseded_by)
    assert retry.retry_of == lost[0].id and retry.seed == lost[0].seed and retry.attempt == 1
    assert retry.status == "succeeded" and len(retried) == 1
    assert coordinator.store.campaign().status != "failed"  # the champion was established anyway


def test_retries_are_bounded(tmp_path: Path) -> None:
    config = campaign_config(tmp_path, "toy", f"task.path={slow_toy(tmp_path)}", "budget.trials=6",
                             "coordination.teams=1", "executor.max_retries=1", "promotion.seeds=1")
    executor = NodeFailingExecutor(tmp_path / "jobs", max_concurrent=1, timeout_min=2, kills=10)
    coordinator = Coordinator(config, config.campaign_folder(), executor=executor)
    coordinator.run(max_ticks=400)
    with coordinator.store.read() as session:
        attempts = session.exec(select(Trial).where(Trial.role == "baseline")).all()
    assert sorted(t.attempt for t in attempts) == [0, 1]  # one retry, then no more
    assert coordinator.store.campaign().status == "failed"  # and the failure is reported, not looped on
