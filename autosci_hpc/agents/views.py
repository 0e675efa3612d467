"""What an agent may see of the shared state: bounded, typed views built from the database.

Views are the only way agents read the state, which is what keeps the held-out test metric out
of every prompt: no view carries it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from ..layout import CampaignLayout
from ..state.lifecycle import FINISHED_TRIALS, OPEN_PROPOSALS, TrialStatus
from ..state.models import Agent, Champion, DeadEnd, ForumPost, Proposal, Team, Trial
from ..task import Axis, TaskSpec

RECENT_TRIALS = 60
#: Concluded (done or rejected) proposals in a view besides the open ones: the newest N.
RECENT_PROPOSALS = 200
# Proposals still in play (`OPEN_PROPOSALS`) are always in the view, whatever their age.
RECENT_POSTS = 20
BEST_TRIALS = 10


class ChampionView(BaseModel):
    id: int
    metric_mean: float
    metric_std: float
    seed_metrics: dict[str, float]
    overrides: dict[str, Any]
    snapshot_id: str
    config_signature: str
    #: The promotion's model card (it never carries the held-out test metric).
    model_card: str = ""
    #: The champion program's folder, when the view was built with the campaign folder.
    snapshot_dir: Optional[str] = None


class TrialView(BaseModel):
    id: int
    proposal_id: Optional[int]
    team_id: Optional[int]
    role: str
    seed: int
    status: str
    config_signature: str
    metric: Optional[float]
    champion_delta: Optional[float]
    failure_class: str
    failure_reason: str


class ProposalView(BaseModel):
    id: int
    author: str
    team_id: Optional[int]
    focus: str
    title: str
    rationale: str
    overrides: dict[str, Any]
    edits: list[dict[str, Any]]
    change_signature: str
    config_signature: str
    directions: list[str]
    status: str
    outcome: str
    base_champion_id: Optional[int]


class DeadEndView(BaseModel):
    signature: str
    team_id: Optional[int]
    description: str
    reason: str
    evidence_trial_ids: list[int]


class PostView(BaseModel):
    id: int
    kind: str
    team_id: Optional[int]
    title: str
    body: str


class TaskView(BaseModel):
    name: str
    description: str
    metric: str
    direction: str
    editable: list[str]
    axes: list[Axis]
    base_config: dict[str, Any]


class StateView(BaseModel):
    """One agent's picture of the campaign at the moment it acts."""

    task: TaskView
    champion: Optional[ChampionView]
    trials: list[TrialView] = Field(default_factory=list)
    proposals: list[ProposalView] = Field(default_factory=list)
    dead_ends: list[DeadEndView] = Field(default_factory=list)
    forum: list[PostView] = Field(default_factory=list)
    teams: list[dict[str, Any]] = Field(default_factory=list)
    #: The best succeeded trials of the whole log (by the task's metric), whatever their age.
    best_trials: list[TrialView] = Field(default_factory=list)


def task_view(task: TaskSpec) -> TaskView:
    return TaskView(name=task.name, description=task.description, metric=task.metric.name,
                    direction=task.metric.direction, editable=task.editable, axes=task.axes,
                    base_config=task.base_config())


def current_champion(session: Session) -> Optional[Champion]:
    return session.exec(select(Champion).order_by(col(Champion.id).desc())).first()


def champion_view(row: Optional[Champion], folder: Optional[Path] = None) -> Optional[ChampionView]:
    if row is None or row.id is None:
        return None
    return ChampionView(id=row.id, metric_mean=row.metric_mean, metric_std=row.metric_std,
                        seed_metrics=row.seed_metrics, overrides=row.overrides,
                        snapshot_id=row.snapshot_id, config_signature=row.config_signature,
                        model_card=row.model_card,
                        snapshot_dir=(str(CampaignLayout(folder).snapshot(row.snapshot_id))
                                      if folder else None))


def proposal_view(row: Proposal, authors: dict[int, str]) -> ProposalView:
    assert row.id is not None
    return ProposalView(id=row.id, author=authors.get(row.author_id, "?"), team_id=row.team_id,
                        focus=row.focus, title=row.title, rationale=row.rationale,
                        overrides=row.overrides, edits=row.edits,
                        change_signature=row.change_signature, config_signature=row.config_signature,
                        directions=row.directions, status=row.status, outcome=row.outcome,
                        base_champion_id=row.base_champion_id)


def _trial_view(t: Trial) -> TrialView:
    assert t.id is not None
    return TrialView(id=t.id, proposal_id=t.proposal_id, team_id=t.team_id, role=t.role, seed=t.seed,
                     status=t.status, config_signature=t.config_signature, metric=t.metric,
                     champion_delta=t.champion_delta, failure_class=t.failure_class,
                     failure_reason=t.failure_reason[:300])


def build_view(session: Session, task: TaskSpec, *, all_trials: bool = False,
               folder: Optional[Path] = None) -> StateView:
    """`folder` (the campaign folder), when given, fills the champion's `snapshot_dir`."""
    authors = {a.id: a.name for a in session.exec(select(Agent)).all() if a.id is not None}
    query = select(Trial).where(col(Trial.status).in_(FINISHED_TRIALS)).order_by(col(Trial.id).desc())
    if not all_trials:
        query = query.limit(RECENT_TRIALS)
    trials = [_trial_view(t) for t in session.exec(query).all() if t.id is not None]
    metric = col(Trial.metric)
    best_query = (select(Trial).where(Trial.status == TrialStatus.SUCCEEDED).where(metric.is_not(None))
                  .order_by(metric.desc() if task.maximize else metric.asc()).limit(BEST_TRIALS))
    best_trials = [_trial_view(t) for t in session.exec(best_query).all() if t.id is not None]
    # Open proposals and the newest concluded ones: a view of a long campaign stays the same size
    # (the duplicate and dead-end gates query the whole log themselves, not this view).
    open_rows = session.exec(select(Proposal).where(col(Proposal.status).in_(OPEN_PROPOSALS))).all()
    recent = session.exec(select(Proposal).where(col(Proposal.status).not_in(OPEN_PROPOSALS))
                          .order_by(col(Proposal.id).desc()).limit(RECENT_PROPOSALS)).all()
    proposals = [proposal_view(p, authors) for p in sorted([*open_rows, *recent], key=lambda p: p.id or 0)]
    dead_ends = [DeadEndView(signature=d.signature, team_id=d.team_id, description=d.description,
                             reason=d.reason, evidence_trial_ids=d.evidence_trial_ids)
                 for d in session.exec(select(DeadEnd)).all()]
    posts = session.exec(select(ForumPost).order_by(col(ForumPost.id).desc()).limit(RECENT_POSTS)).all()
    forum = [PostView(id=p.id or 0, kind=p.kind, team_id=p.team_id, title=p.title, body=p.body[:500])
             for p in posts]
    teams = [{"id": t.id, "name": t.name, "focus": t.focus, "hypothesis": t.hypothesis, "status": t.status,
              "experiments_since_improvement": t.experiments_since_improvement}
             for t in session.exec(select(Team)).all()]
    return StateView(task=task_view(task), champion=champion_view(current_champion(session), folder),
                     trials=trials, proposals=proposals, dead_ends=dead_ends, forum=forum, teams=teams,
                     best_trials=best_trials)
