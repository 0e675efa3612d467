"""Tables of the shared experimental state S.

One SQLite database per campaign folder holds every table below. The rows are the truth of a
campaign: agents keep their memory here, progress counters are stored (never recomputed from
derived data), and every state transition leaves an `Event` row.

Which status may follow which is written once, in `state.lifecycle`; the rows are created and moved
by the verbs of `state.proposals`, `state.trials`, `state.champions`, `state.campaigns`,
`state.teams`, `state.agents` and `state.forum`, never by assigning a status elsewhere.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

#: Bump when a table changes, and add the step to `state.migrations.MIGRATIONS`.
SCHEMA_VERSION = 5


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A datetime read back from SQLite, made timezone-aware (the database stores UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _json(default: Any = None) -> Any:
    factory = (lambda: {}) if default is dict else (lambda: [])
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


class SchemaInfo(SQLModel, table=True):
    __tablename__ = "schema_info"
    id: int = Field(default=1, primary_key=True)
    version: int
    created_by: str


class Campaign(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    folder: str
    task_name: str
    mode: str
    status: str = "created"  # lifecycle.CAMPAIGN
    config: dict[str, Any] = _json(dict)
    #: Stored progress counters: the budget reads these, never a COUNT over derived rows.
    trials_submitted: int = 0
    trials_finished: int = 0
    promotions: int = 0
    #: Wall-clock seconds the campaign has run, summed over coordinator runs (the budget reads it).
    wall_clock_s: float = 0.0
    #: Coordinator starts after the first (requeues, restarts after a crash).
    restarts: int = 0
    #: The discussion round the analysts are in (discussion phase).
    discussion_round: int = 0
    #: False while the coordinator is stopping: agents finish what they hold and take nothing new.
    accepting_work: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class Lease(SQLModel, table=True):
    """Who coordinates the campaign. One row; `token` grows at each take-over (the fencing token)."""

    id: int = Field(default=1, primary_key=True)
    token: int = 0
    holder: str = ""  # "" when released
    host: str = ""
    pid: int = 0
    slurm_job_id: str = ""
    heartbeat_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None


class Agent(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    role: str  # analyst | experimenter | planner | solo
    team_id: Optional[int] = Field(default=None, foreign_key="team.id", index=True)
    status: str = "idle"  # lifecycle.AGENT
    heartbeat_at: datetime = Field(default_factory=utcnow)
    #: What the agent remembers between steps (and across coordinator restarts).
    memory: dict[str, Any] = _json(dict)


class Team(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    hypothesis: str
    #: The hypothesis family (an axis group of the task) the team explores.
    focus: str
    status: str = "active"  # lifecycle.TEAM
    roster: list[str] = _json(list)
    experiments_total: int = 0
    experiments_since_improvement: int = 0
    improvements: int = 0
    reopened: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class Proposal(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    author_id: int = Field(foreign_key="agent.id", index=True)
    team_id: Optional[int] = Field(default=None, foreign_key="team.id", index=True)
    focus: str = ""
    title: str
    rationale: str = ""
    expected_effect: str = ""
    falsification: str = ""
    #: The change: dotted config overrides on top of the champion, and code edits.
    overrides: dict[str, Any] = _json(dict)
    edits: list[dict[str, Any]] = _json(list)
    #: Canonical text of the change and of the configuration it yields on its base champion.
    change_signature: str = Field(index=True)
    config_signature: str = Field(index=True)
    #: Coarse "direction" signatures, matched against the dead-end registry.
    directions: list[str] = _json(list)
    base_champion_id: Optional[int] = Field(default=None, foreign_key="champion.id")
    status: str = Field(default="posted", index=True)  # lifecycle.PROPOSAL
    reject_reason: str = ""
    outcome: str = ""  # lifecycle.ProposalOutcome, once done
    claimed_by: Optional[int] = Field(default=None, foreign_key="agent.id")
    #: The discussion round it was posted in (discussion phase; 0 afterwards).
    discussion_round: int = 0
    #: Posted in its team's re-opened discussion number `reopened` (the team's count then); 0 when not.
    reopened: int = 0
    #: The peers asked to critique it (agent ids), chosen when it is posted.
    critics: list[int] = _json(list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Critique(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposal.id", index=True)
    author_id: int = Field(foreign_key="agent.id")
    verdict: str  # approve | reject
    reasons: str
    created_at: datetime = Field(default_factory=utcnow)


class Trial(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    proposal_id: Optional[int] = Field(default=None, foreign_key="proposal.id", index=True)
    team_id: Optional[int] = Field(default=None, foreign_key="team.id", index=True)
    experimenter_id: Optional[int] = Field(default=None, foreign_key="agent.id")
    role: str  # lifecycle.TrialRole
    #: The trial's seed set: the trials of one configuration over several seeds share it ("baseline",
    #: "p17", "p17:champion"). The column keeps its old name `group`; in code it is read as `seed_set`,
    #: since "group" also names a hypothesis family (a task's axis group, a team's focus).
    group: str = Field(index=True)
    snapshot_id: str
    overrides: dict[str, Any] = _json(dict)
    config_signature: str = Field(index=True)
    seed: int
    replicate_of: Optional[int] = Field(default=None, foreign_key="trial.id")
    attempt: int = 0
    retry_of: Optional[int] = Field(default=None, foreign_key="trial.id")
    #: The attempt that replaced this one after an infrastructure failure (node failure, preemption).
    superseded_by: Optional[int] = Field(default=None, foreign_key="trial.id")
    status: str = Field(default="created", index=True)  # lifecycle.TRIAL
    failure_class: str = ""
    failure_reason: str = ""
    log_tail: str = ""
    metric: Optional[float] = None
    #: Improvement over the champion's metric on the same seed, when it was ingested.
    champion_delta: Optional[float] = None
    #: Held-out test metric: recorded for the humans, never put in an agent's view.
    test_metric: Optional[float] = None
    metrics: dict[str, Any] = _json(dict)
    executor: str = ""
    job_id: str = ""
    array_index: Optional[int] = None
    folder: str = ""
    environment: dict[str, Any] = _json(dict)
    created_at: datetime = Field(default_factory=utcnow)
    submitted_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    duration_s: Optional[float] = None
    #: Provenance: the champion this trial's program was built on, the unified diff of its program
    #: and overrides against that champion's (computed on the coordinator's side from the snapshot
    #: store), and the experimenter's notes on how the proposal was implemented.
    parent_champion_id: Optional[int] = Field(default=None, foreign_key="champion.id")
    diff: Optional[str] = None
    notes: Optional[str] = None
    #: Its run conditions, the one record of where and how it ran (`state.conditions`): the node's host,
    #: devices and GPU names, and its executor's placement (trials sharing its GPU, GPUs charged, ranks).
    #: Comparisons across different conditions are flagged; the GPU-hours are counted from it.
    conditions: dict[str, Any] = _json(dict)

    @property
    def seed_set(self) -> str:
        """The seed set this trial belongs to (stored in the `group` column)."""
        return self.group


class Champion(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    #: The seed set of the trials it was promoted from (see `Trial.group`).
    group: str
    proposal_id: Optional[int] = Field(default=None, foreign_key="proposal.id")
    team_id: Optional[int] = Field(default=None, foreign_key="team.id")
    previous_id: Optional[int] = Field(default=None, foreign_key="champion.id")
    snapshot_id: str
    overrides: dict[str, Any] = _json(dict)
    config_signature: str
    #: {"0": metric, "1": metric, ...}: per-seed validation metric.
    seed_metrics: dict[str, float] = _json(dict)
    trial_ids: list[int] = _json(list)
    metric_mean: float
    metric_std: float
    test_metric_mean: Optional[float] = None
    delta: float = 0.0
    rule: str
    rule_detail: dict[str, Any] = _json(dict)
    model_card: str = ""
    promoted_at: datetime = Field(default_factory=utcnow)
    #: The implemented change against the previous champion (unified diff of program and overrides).
    diff: Optional[str] = None

    @property
    def seed_set(self) -> str:
        """The seed set it was promoted from (stored in the `group` column)."""
        return self.group


class ForumPost(SQLModel, table=True):
    __tablename__ = "forum_post"
    id: Optional[int] = Field(default=None, primary_key=True)
    author_id: Optional[int] = Field(default=None, foreign_key="agent.id")
    team_id: Optional[int] = Field(default=None, foreign_key="team.id", index=True)
    kind: str = Field(index=True)  # lifecycle.PostKind
    title: str
    body: str = ""
    proposal_id: Optional[int] = Field(default=None, foreign_key="proposal.id")
    trial_ids: list[int] = _json(list)
    created_at: datetime = Field(default_factory=utcnow)


class DeadEnd(SQLModel, table=True):
    __tablename__ = "dead_end"
    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: Optional[int] = Field(default=None, foreign_key="team.id")
    author_id: Optional[int] = Field(default=None, foreign_key="agent.id")
    signature: str = Field(index=True, unique=True)
    description: str
    reason: str
    evidence_trial_ids: list[int] = _json(list)
    created_at: datetime = Field(default_factory=utcnow)


class LLMCall(SQLModel, table=True):
    __tablename__ = "llm_call"
    id: Optional[int] = Field(default=None, primary_key=True)
    agent_id: Optional[int] = Field(default=None, foreign_key="agent.id")
    purpose: str = ""
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """Append-only audit log of state transitions."""

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(index=True)
    entity: str = ""
    entity_id: Optional[int] = None
    data: dict[str, Any] = _json(dict)
    created_at: datetime = Field(default_factory=utcnow)
