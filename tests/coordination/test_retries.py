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
from autosci_hpc.execution.executors import JobState, SubmittedJob
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.trial import TrialRequest
from autosci_hpc.state.models import Event, ForumPost, Proposal, Trial
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


class CancellingExecutor(LocalTrialExecutor):
    """Real local jobs; the job of the `nth` submitted trial is cancelled right after its submission,
    as an operator's `scancel` would (the program sleeps for seconds: it cannot have finished)."""

    def __init__(self, *args: object, nth: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.nth = nth
        self.seen = 0
        self.cancelled_trials: list[int] = []

    def submit(self, requests: Sequence[TrialRequest]) -> list[SubmittedJob]:
        jobs = super().submit(requests)
        for job in jobs:
            self.seen += 1
            if self.seen == self.nth:
                self.cancel([job.job_id])
                self.cancelled_trials.append(job.trial_id)
        return jobs


def _lineage(coordinator: Coordinator, trial_id: int) -> list[Trial]:
    """The trial and every retry that replaced it, in order."""
    chain = []
    with coordinator.store.read() as session:
        trial = session.get(Trial, trial_id)
        while trial is not None:
            chain.append(trial)
            trial = session.get(Trial, trial.superseded_by) if trial.superseded_by else None
    return chain


def test_a_cancelled_baseline_seed_is_retried_and_the_campaign_goes_on(tmp_path: Path) -> None:
    config = campaign_config(tmp_path, "toy", f"task.path={slow_toy(tmp_path)}", "budget.trials=5",
                             "coordination.teams=1", "executor.max_retries=2")
    executor = CancellingExecutor(tmp_path / "jobs", max_concurrent=3, timeout_min=2, nth=2)
    coordinator = Coordinator(config, config.campaign_folder(), executor=executor)
    summary = coordinator.run(max_ticks=2000)
    assert summary.status == "finished"  # not "failed: baseline failed"
    (lost_id,) = executor.cancelled_trials
    lost, retry = _lineage(coordinator, lost_id)
    assert lost.role == "baseline" and lost.failure_class == "cancelled"
    assert retry.retry_of == lost.id and retry.seed == lost.seed and retry.attempt == 1
    assert retry.status == "succeeded" and Path(retry.folder) != Path(lost.folder)
    assert Path(retry.folder).name.endswith("-attempt1")


def test_a_cancelled_candidate_is_retried_and_its_idea_not_blamed(tmp_path: Path) -> None:
    config = campaign_config(tmp_path, "toy", f"task.path={slow_toy(tmp_path)}", "budget.trials=9",
                             "coordination.teams=1", "executor.max_retries=2")
    executor = CancellingExecutor(tmp_path / "jobs", max_concurrent=3, timeout_min=2, nth=4)  # after the 3 seeds
    coordinator = Coordinator(config, config.campaign_folder(), executor=executor)
    assert coordinator.run(max_ticks=4000).status == "finished"
    (lost_id,) = executor.cancelled_trials
    lost, retry = _lineage(coordinator, lost_id)
    assert lost.role == "candidate" and lost.failure_class == "cancelled" and retry.status == "succeeded"
    with coordinator.store.read() as session:
        proposal = session.get(Proposal, lost.proposal_id)
        failure_posts = session.exec(select(ForumPost).where(ForumPost.kind == "failure")
                                     .where(ForumPost.proposal_id == lost.proposal_id)).all()
    assert proposal is not None and proposal.outcome in ("promoted", "not_promoted")  # judged on its retry
    assert failure_posts == []


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it, as a kill -9 of the coordinator's process group does."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_trials_orphaned_by_a_crash_are_reconciled_on_resume_and_retried(tmp_path: Path) -> None:
    config = campaign_config(tmp_path, "toy", f"task.path={slow_toy(tmp_path)}", "budget.trials=5",
                             "coordination.teams=1", "executor.max_retries=2", "executor.local.max_concurrent=3")
    crashed = Coordinator(config, config.campaign_folder())
    crashed._start_baseline()
    crashed._submit()  # the three baseline seeds run...
    with crashed.store.read() as session:
        orphans = session.exec(select(Trial).where(Trial.status == "submitted")).all()
    assert len(orphans) == 3
    for trial in orphans:  # ...and the coordinator dies with its jobs (kill -9 of the process group)
        _kill_tree(int(trial.job_id))
    resumed = Coordinator(config, config.campaign_folder())
    assert resumed.resumed and resumed.run(max_ticks=4000).status == "finished"
    for orphan in orphans:
        assert orphan.id is not None
        lost, *retries = _lineage(resumed, orphan.id)
        assert lost.failure_class == "no_result" and "without a result file" in lost.failure_reason
        assert retries and retries[-1].status == "succeeded" and retries[0].attempt == 1
    with resumed.store.read() as session:
        failed = session.exec(select(Event).where(Event.kind == "campaign.failed")).all()
    assert failed == []
