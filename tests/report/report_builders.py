"""Campaign folders built row by row with known times and values, so the report's metrics can be
checked against answers worked out by hand (and a real, short campaign on the toy task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from autosci_hpc.layout import CampaignLayout
from autosci_hpc.state import Store
from autosci_hpc.state.models import (Agent, Campaign, Champion, Critique, DeadEnd, ForumPost, LLMCall,
                                      Proposal, Team, Trial)
from autosci_hpc.task import load_task

from helpers import FIXTURE_TASKS, campaign_config

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class T:
    """One trial: when it finished (seconds after T0), how, and for how long it ran."""

    finished: Optional[float]
    status: str = "succeeded"
    duration: Optional[float] = 3600.0
    role: str = "candidate"
    team: Optional[int] = 1
    failure_class: str = ""
    superseded: bool = False


@dataclass
class C:
    """One champion: when it was promoted and its mean; the first one is the baseline."""

    promoted: float
    mean: float
    overrides: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    model_card: str = ""
    #: The ids of the trials it was measured on (Champion.trial_ids).
    trials: list[int] = field(default_factory=list)


@dataclass
class Extras:
    """Rows that give the story sections something to show."""

    rejected: list[str] = field(default_factory=list)  # reject reasons of rejected proposals
    dead_ends: list[tuple[str, str]] = field(default_factory=list)  # (signature, reason)
    llm_calls: list[tuple[str, float]] = field(default_factory=list)  # (agent name, cost)
    hypothesis: str = "moving x helps"
    forum: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, title, body)


def build_campaign(folder: Path, trials: list[T], champions: list[C], *, mode: str = "decentralized",
                   seed: int = 0, direction: str = "maximize", journal_mode: str = "wal", gres: str = "",
                   extras: Optional[Extras] = None, name: str = "hand-built", task_path: str = "",
                   backend: str = "offline") -> Path:
    """A campaign folder (state.db and task.json) holding exactly these rows."""
    extras = extras or Extras()
    overrides = [f"campaign.name={name}", f"campaign.seed={seed}", f"coordination.mode={mode}",
                 f"state.journal_mode={journal_mode}", f"llm.backend={backend}"]
    if task_path:
        overrides.append(f"task.path={task_path}")
    if gres:
        overrides += ["executor.kind=slurm", f"executor.slurm.gres={gres}"]
    config = campaign_config(folder.parent, "toy", *overrides)
    store = Store(folder, journal_mode=journal_mode)
    with store.write() as session:
        session.add(Campaign(name=name, folder=str(folder), task_name="toy", mode=mode, status="finished",
                             config=config.model_dump(mode="json"), trials_finished=len(trials),
                             promotions=max(0, len(champions) - 1), created_at=T0))
        team = Team(name="team-1", hypothesis=extras.hypothesis, focus="x_axis",
                    roster=["analyst-1", "experimenter-1"], created_at=T0)
        session.add(team)
        session.flush()
        analyst = Agent(name="analyst-1", role="analyst", team_id=team.id)
        experimenter = Agent(name="experimenter-1", role="experimenter", team_id=team.id)
        session.add(analyst)
        session.add(experimenter)
        session.flush()
        for i, t in enumerate(trials):
            session.add(Trial(role=t.role, group=f"g{i}", snapshot_id="s", config_signature=f"s|{i}", seed=0,
                              status=t.status, team_id=t.team if t.role != "baseline" else None,
                              finished_at=at(t.finished) if t.finished is not None else None,
                              duration_s=t.duration, failure_class=t.failure_class,
                              failure_reason=f"{t.failure_class} happened" if t.failure_class else "",
                              metric=None if t.status == "failed" else 0.5,
                              superseded_by=1 if t.superseded else None))
        previous: Optional[int] = None
        for i, c in enumerate(champions):
            proposal_id = None
            if i > 0:
                proposal = Proposal(author_id=analyst.id or 0, team_id=team.id, title=c.title or f"idea {i}",
                                    overrides=c.overrides, change_signature=f"c{i}",
                                    config_signature=f"s|c{i}",
                                    status="done", outcome="promoted")
                session.add(proposal)
                session.flush()
                proposal_id = proposal.id
            row = Champion(group="baseline" if i == 0 else f"p{proposal_id}", proposal_id=proposal_id,
                           team_id=team.id if i > 0 else None, previous_id=previous, snapshot_id="s",
                           overrides=c.overrides, config_signature=f"s|c{i}",
                           seed_metrics={"0": c.mean - 0.01, "1": c.mean + 0.01}, trial_ids=c.trials,
                           metric_mean=c.mean,
                           metric_std=0.01, delta=0.0 if i == 0 else c.mean - champions[i - 1].mean,
                           rule="baseline" if i == 0 else "mean", model_card=c.model_card or f"champion {i}",
                           promoted_at=at(c.promoted))
            session.add(row)
            session.flush()
            previous = row.id
        for reason in extras.rejected:
            proposal = Proposal(author_id=analyst.id or 0, team_id=team.id, title=f"refused: {reason[:20]}",
                                change_signature=reason, config_signature=reason, status="rejected",
                                reject_reason=reason)
            session.add(proposal)
            session.flush()
            session.add(Critique(proposal_id=proposal.id or 0, author_id=analyst.id or 0, verdict="reject",
                                 reasons=reason))
        for signature, reason in extras.dead_ends:
            session.add(DeadEnd(team_id=team.id, author_id=analyst.id, signature=signature,
                                description=f"moving {signature}", reason=reason))
        for agent_name, cost in extras.llm_calls:
            agent = analyst if agent_name == analyst.name else experimenter
            session.add(LLMCall(agent_id=agent.id, purpose="propose", model="m", tokens_in=1000,
                                tokens_out=200,
                                cost_usd=cost, latency_s=1.5))
        for kind, title, body in extras.forum:
            session.add(ForumPost(kind=kind, title=title, body=body, team_id=team.id, author_id=analyst.id))
    store.dispose()
    task = load_task(FIXTURE_TASKS / "toy")
    if direction != task.metric.direction:
        task.metric.direction = direction  # type: ignore[assignment]
    (folder / CampaignLayout.TASK_SPEC).write_text(task.model_dump_json(indent=1))
    # The champions' program snapshot: the toy program's config (x: 0.0), where old values are read.
    (folder / "snapshots" / "s").mkdir(parents=True)
    (folder / "snapshots" / "s" / "config.yaml").write_text((task.program_dir / "config.yaml").read_text())
    return folder


#: The hand-built campaign most tests use, and the answers worked out from it.
#:   trial ids follow the list order; they finish at 10, 11, 12 (the baseline), 20 (failed, half an
#:   hour), 30, 31, 35 (id 7), 32 (id 8: it finished before id 7), 40; id 10 is still running.
#:   Ordinals 1..9 are therefore ids 1, 2, 3, 4, 5, 6, 8, 7, 9.
#:   champions: the baseline (0.5) at 12.5, then 0.7 at 32.5.
STANDARD_TRIALS = [
    T(10, role="baseline"), T(11, role="baseline"), T(12, role="baseline"),
    T(20, status="failed", failure_class="program_error", duration=1800),
    T(30), T(31, role="replicate"), T(35), T(32, role="replicate"), T(40),
    T(None, status="submitted", duration=None),
]
STANDARD_CHAMPIONS = [C(12.5, 0.5), C(32.5, 0.7, overrides={"x": 0.6})]


EVIL = "<script>alert('owned')</script>"


def story(tmp_path: Path, name: str = "story", **kwargs: object) -> Path:
    """A campaign with something in every section, and agent-written markup in its texts."""
    extras = Extras(rejected=["duplicate: trial 3 already ran this configuration", f"critic says {EVIL}"],
                    dead_ends=[("x~bin1/6", "2 experiments brought no improvement")],
                    llm_calls=[("analyst-1", 0.25), ("experimenter-1", 0.125)],
                    hypothesis=f"x matters {EVIL}",
                    forum=[("discussion", f"round 1 {EVIL}", f"body <img src=x onerror=alert(1)> {EVIL}")])
    trials = STANDARD_TRIALS + [T(41, status="failed", failure_class="timeout")]
    champions = [STANDARD_CHAMPIONS[0], C(32.5, 0.7, overrides={"x": 0.6}, title=f"try x {EVIL}",
                                          model_card=f"card {EVIL} & more")]
    return build_campaign(tmp_path / name, trials, champions, extras=extras,
                          **kwargs)  # type: ignore[arg-type]
