"""Test helpers: small campaign configs on the fixture tasks, and a scripted policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from autosci_hpc.agents.policy import AgentInfo, ProposalDraft
from autosci_hpc.agents.views import StateView
from autosci_hpc.config import CampaignConfig, load_config
from autosci_hpc.policies.offline import OfflinePolicy

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_TASKS = ROOT / "tests" / "fixtures" / "tasks"


def campaign_config(tmp_path: Path, task: str = "toy", *overrides: str) -> CampaignConfig:
    base = [
        f"campaign.folder={tmp_path / 'campaign'}",
        f"task.path={FIXTURE_TASKS / task}",
        "coordination.teams=2",
        "coordination.analysts_per_team=1",
        "coordination.experimenters_per_team=1",
        "coordination.discussion_rounds=1",
        "coordination.poll_interval_s=0.05",
        "promotion.seeds=3",
        "budget.trials=15",
        "executor.result_grace_s=1",
        "executor.local.max_concurrent=2",
    ]
    return load_config(None, base + list(overrides))


class ScriptedPolicy(OfflinePolicy):
    """The offline policy, except that analysts post the given changes first, in order.

    This is how a test puts a particular idea (a crashing change, a lucky seed) into a real
    campaign without a model: the rest of the loop is the product's own.
    """

    def __init__(self, script: list[dict[str, Any]], focus: str = "x_axis", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script = list(script)
        self.focus = focus
        self.posted: list[dict[str, Any]] = []

    def propose(self, agent: AgentInfo, view: StateView, focus: Optional[str]) -> Optional[ProposalDraft]:
        if self.script:
            overrides = self.script.pop(0)
            self.posted.append(overrides)
            return ProposalDraft(title=f"scripted {overrides}", focus=focus or self.focus, overrides=overrides,
                                 rationale="scripted by the test")
        return super().propose(agent, view, focus)


# ---- trials without a campaign: for executor, monitor and ingestion tests ---------------------

def make_trials(folder: Path, specs: list[dict[str, Any]], time_limit_s: float = 60) -> tuple[Any, list[Any]]:
    """A store holding one submitted toy trial per spec, and the requests that run them."""
    from autosci_hpc.execution.trial import task_request
    from autosci_hpc.state import Store
    from autosci_hpc.state.models import Campaign, Trial
    from autosci_hpc.task import load_task

    task = load_task(FIXTURE_TASKS / "toy")
    store = Store(folder / "campaign")
    requests = []
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="toy", mode="decentralized"))
        for i, overrides in enumerate(specs):
            trial = Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                          overrides=overrides, status="submitted")
            session.add(trial)
            session.flush()
            assert trial.id is not None
            trial.folder = str(folder / "trials" / str(trial.id))
            requests.append(task_request(task, folder / "campaign", trial_id=trial.id, folder=Path(trial.folder),
                                         snapshot_dir=task.program_dir, overrides=overrides, seed=0,
                                         time_limit_s=time_limit_s))
    return store, requests


def ranks_trials(folder: Path, n: int, sandbox: str = "none") -> tuple[Any, list[Any]]:
    """A store holding n submitted trials of the `ranks` fixture task (GPU trials), and their requests."""
    from autosci_hpc.execution.sandbox import SandboxSettings
    from autosci_hpc.execution.trial import task_request
    from autosci_hpc.state import Store
    from autosci_hpc.state.models import Campaign, Trial
    from autosci_hpc.task import load_task

    task = load_task(FIXTURE_TASKS / "ranks")
    store = Store(folder / "campaign")
    requests = []
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="ranks", mode="decentralized"))
        for i in range(n):
            trial = Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                          status="submitted")
            session.add(trial)
            session.flush()
            assert trial.id is not None
            trial.folder = str(folder / "trials" / str(trial.id))
            requests.append(task_request(task, folder / "campaign", trial_id=trial.id,
                                         folder=Path(trial.folder), snapshot_dir=task.program_dir,
                                         overrides={"sleep": 0.5}, seed=0,
                                         sandbox=SandboxSettings(mode=sandbox)))
    return store, requests


def submit(store: Any, executor: Any, requests: list[Any]) -> list[str]:
    """Submit through the executor and record job ids on the trial rows, as the coordinator does."""
    from autosci_hpc.state.models import Trial

    jobs = executor.submit(requests)
    with store.write() as session:
        for job in jobs:
            trial = session.get(Trial, job.trial_id)
            assert trial is not None
            trial.job_id = job.job_id
            session.add(trial)
    return [j.job_id for j in jobs]


def drain(store: Any, executor: Any, grace_s: float = 2, timeout: float = 240) -> dict[int, Any]:
    """Observe and ingest until no trial is outstanding; the trials by id."""
    import time

    from sqlmodel import select

    from autosci_hpc.execution.monitor import Monitor, ingest
    from autosci_hpc.state.models import Trial

    monitor = Monitor(store, executor, grace_s=grace_s)
    deadline = time.monotonic() + timeout
    while monitor.outstanding():
        assert time.monotonic() < deadline, "trials never finished"
        for obs in monitor.observe():
            with store.write() as session:
                ingest(session, obs)
        time.sleep(0.3)
    with store.read() as session:
        return {t.id: t for t in session.exec(select(Trial)).all() if t.id is not None}


def record_schema_version(session: Any, version: int) -> None:
    """Record schema `version` in an open write session: how a test stands for an older (or newer)
    database before reopening it."""
    from sqlmodel import select

    from autosci_hpc.state.models import SchemaInfo

    info = session.exec(select(SchemaInfo)).one()
    info.version = version
    session.add(info)
