"""What the state layer's ownership of the records fixed and changed.

- One way a proposal ends: a proposal its experimenter could not implement is concluded like any
  other failure, so its team counts it towards stagnation (it used to be closed on a side path that
  skipped the team's counters, and a team whose ideas never built never re-opened its discussion).
- A proposal posted in a team's re-opened discussion says so in its own `reopened` column; a
  database from before, where a negative `discussion_round` carried that count, opens and reads right.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, MetaData, Table
from sqlmodel import SQLModel, select

from autosci_hpc.agents.policy import AgentInfo, PolicyError
from autosci_hpc.agents.roles import Context, Experimenter
from autosci_hpc.agents.views import ProposalView, StateView
from autosci_hpc.coordination.discussion import reopen_stagnating
from autosci_hpc.state import Store, models
from autosci_hpc.state.models import Agent, Campaign, Champion, Proposal, SchemaInfo, Team
from autosci_hpc.task import build_snapshot, config_signature, load_task
from helpers import FIXTURE_TASKS, ScriptedPolicy, campaign_config, record_schema_version


class CannotImplement(ScriptedPolicy):
    """A policy whose experimenter fails every implementation (an LLM that keeps failing)."""

    def implement(self, agent: AgentInfo, view: StateView, proposal: ProposalView) -> object:
        raise PolicyError("the model kept answering with something that is not an implementation")


def _claimed_proposal(tmp_path: Path) -> tuple[Context, int, int, int]:
    """A campaign in execution with one team whose experimenter holds a claimed proposal."""
    config = campaign_config(tmp_path, "toy", "coordination.stagnation_window=1")
    task = load_task(FIXTURE_TASKS / "toy")
    folder = config.campaign_folder()
    store = Store(folder)
    snapshot = build_snapshot(task, folder)
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="toy", mode="decentralized",
                             status="execution"))
        team = Team(name="team-1", hypothesis="h", focus="x_axis")
        session.add(team)
        session.flush()
        analyst = Agent(name="analyst-1", role="analyst", team_id=team.id)
        experimenter = Agent(name="experimenter-1", role="experimenter", team_id=team.id, status="busy")
        session.add(analyst)
        session.add(experimenter)
        session.add(Champion(group="baseline", snapshot_id=snapshot, overrides={},
                             config_signature=config_signature(snapshot, {}), seed_metrics={"0": 0.5},
                             metric_mean=0.5, metric_std=0.0, rule="baseline"))
        session.flush()
        proposal = Proposal(author_id=analyst.id or 0, team_id=team.id, focus="x_axis", title="move x",
                            overrides={"x": 0.3}, change_signature="x=0.3", config_signature="sig",
                            status="claimed", claimed_by=experimenter.id)
        session.add(proposal)
        session.flush()
        ids = (proposal.id or 0, experimenter.id or 0, team.id or 0)
    return Context(store, task, CannotImplement([]), config, capacity=2), *ids


def test_an_implementation_failure_counts_towards_its_teams_stagnation(tmp_path: Path) -> None:
    ctx, proposal_id, experimenter_id, team_id = _claimed_proposal(tmp_path)
    assert Experimenter(ctx, experimenter_id).launch(proposal_id) is None
    with ctx.store.read() as session:
        proposal = session.get(Proposal, proposal_id)
        team = session.get(Team, team_id)
        experimenter = session.get(Agent, experimenter_id)
        concluded = session.exec(select(models.Event).where(models.Event.kind == "proposal.concluded")).all()
    assert proposal is not None and team is not None and experimenter is not None
    assert (proposal.status, proposal.outcome) == ("done", "failed")
    assert "could not implement" in proposal.reject_reason
    assert (team.experiments_total, team.experiments_since_improvement) == (1, 1)
    assert experimenter.status == "idle"
    assert [e.entity_id for e in concluded] == [proposal_id]
    # With a stagnation window of one experiment, that failure is what re-opens the team's discussion.
    assert reopen_stagnating(ctx) == [team_id]


def _as_schema_2(store: Store) -> None:
    """Turn a fresh database into one as schema version 2 wrote it: no `reopened` column."""
    with store.write() as session:
        conn = session.connection()
        old = MetaData()
        conn.exec_driver_sql("DROP TABLE proposal")
        columns = [c for c in SQLModel.metadata.tables["proposal"].columns if c.name != "reopened"]
        Table("proposal", old, *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                 for c in columns])
        old.create_all(conn)
        record_schema_version(session, 2)


def test_an_old_database_with_a_negative_round_opens_and_reads_right(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _as_schema_2(store)
    with store.write() as session:
        conn = session.connection()
        assert "reopened" not in {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(proposal)")}
        conn.exec_driver_sql("INSERT INTO agent (name, role, status, heartbeat_at, memory) "
                             "VALUES ('analyst-1', 'analyst', 'idle', '2026-01-01 00:00:00', '{}')")
        for title, round_ in (("in round 1", 1), ("first re-open", -1), ("second re-open", -2)):
            conn.exec_driver_sql(
                "INSERT INTO proposal (author_id, team_id, focus, title, rationale, expected_effect, "
                "falsification, overrides, edits, change_signature, config_signature, directions, status, "
                "reject_reason, outcome, discussion_round, critics, created_at, updated_at) "
                "VALUES (1, NULL, 'x', ?, '', '', '', '{}', '[]', ?, ?, '[]', 'approved', '', '', ?, '[]', "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')", (title, title, title, round_))
    reopened = Store(tmp_path)
    with reopened.read() as session:
        assert session.exec(select(SchemaInfo)).one().version == models.SCHEMA_VERSION
        rows = {p.title: (p.discussion_round, p.reopened) for p in session.exec(select(Proposal)).all()}
        second = session.exec(select(Proposal.title).where(Proposal.reopened == 2)).all()
    assert rows == {"in round 1": (1, 0), "first re-open": (0, 1), "second re-open": (0, 2)}
    assert second == ["second re-open"]
