"""The end of a campaign against agents working in their own processes: decided in one transaction.

An agent process may claim a queued proposal and create its trial at any moment. The coordinator's
decision that the campaign is over must not be taken on counts that such an agent changes under it:
a campaign must never end with a trial that was created and is never run. These tests put the agent's
move exactly where it hurts (a hook inside the decision, no sleeps), and check the agents' own
re-checks when the campaign has finished or stops taking work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from autosci_hpc.agents.roles import Context, Experimenter
from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.policies import make_policy
from autosci_hpc.state import Store, budget
from autosci_hpc.state.models import Agent, Campaign, Proposal, Trial
from helpers import campaign_config


def _execution_with_a_queued_idea(tmp_path: Path) -> Coordinator:
    """A campaign past its baseline whose budget admits exactly one more candidate, with an idea
    queued and nothing else open; the experimenters are left out of the coordinator's own loop, so
    only the test moves them."""
    config = campaign_config(tmp_path, "toy", "budget.trials=6", "promotion.seeds=3")
    coordinator = Coordinator(config, config.campaign_folder())
    coordinator._start_baseline()
    coordinator._set_accepting(True)
    analysts = [a for a in coordinator.agents if not isinstance(a, Experimenter)]
    coordinator.agents = analysts
    for _ in range(2000):
        coordinator._checkpoint()
        coordinator._ingest()
        campaign = coordinator.store.campaign()
        if campaign.status == "execution":
            with coordinator.store.read() as session:
                statuses = [p.status for p in session.exec(select(Proposal)).all()]
            if "queued" in statuses and "posted" not in statuses:
                return coordinator
        coordinator.tick()
    raise AssertionError("the campaign never reached execution with a queued idea")


def _experimenter_with_work(coordinator: Coordinator, *, busy_timeout_s: float = 30.0,
                            max_retries: int = 8) -> Experimenter:
    """An experimenter with its own connection (as in its own process), on a team with a queued idea."""
    store = Store(coordinator.folder, busy_timeout_s=busy_timeout_s, create=False)
    store.max_retries = max_retries
    ctx = Context(store, coordinator.task, make_policy(coordinator.config, store, task=coordinator.task),
                  coordinator.config, coordinator.executor.capacity)
    with store.read() as session:
        team_id = session.exec(select(Proposal.team_id).where(Proposal.status == "queued")).first()
        agent = session.exec(select(Agent).where(Agent.role == "experimenter")
                             .where(Agent.team_id == team_id)).first()
    assert agent is not None and agent.id is not None
    return Experimenter(ctx, agent.id)


def _never_ends_with_work_left(store: Store) -> None:
    with store.read() as session:
        campaign = session.exec(select(Campaign)).one()
        trials = session.exec(select(Trial)).all()
        claimed = session.exec(select(Proposal).where(Proposal.status.in_(["claimed", "running"]))).all()  # type: ignore[attr-defined]
    if campaign.status == "finished":
        assert [t.id for t in trials if t.status in ("created", "submitted")] == [], \
            "the campaign finished with a trial that will never run"
        assert claimed == []
        assert campaign.trials_submitted == len(trials)


def test_an_agent_launching_during_the_finish_decision_never_leaves_a_trial_unrun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = _execution_with_a_queued_idea(tmp_path)
    # The agent gets one try, and gives up at once if the database is taken (a real agent would
    # wait its turn); it moves exactly while the coordinator weighs its budget.
    eager = _experimenter_with_work(coordinator, busy_timeout_s=0.05, max_retries=0)
    original = budget.may_start_candidate
    moves: list[str] = []

    def agent_moves_meanwhile(session: Any, config: Any, extra_s: float = 0.0) -> bool:
        if not moves:
            moves.append("tried")
            try:
                moves.append("launched" if eager.step() else "nothing")
            except OperationalError as exc:
                assert "locked" in str(exc)
                moves.append("waited")  # the decision holds the write lock: the agent must wait
        return original(session, config, extra_s)

    monkeypatch.setattr(budget, "may_start_candidate", agent_moves_meanwhile)
    coordinator._maybe_finish()
    monkeypatch.setattr(budget, "may_start_candidate", original)
    assert moves[0] == "tried"  # the hook sat inside the decision
    _never_ends_with_work_left(coordinator.store)
    # The agent then takes its turn; the campaign runs the idea and finishes with nothing left over.
    _experimenter_with_work(coordinator).step()
    summary = coordinator.run(max_ticks=2000)
    assert summary.status == "finished"
    _never_ends_with_work_left(coordinator.store)


def test_a_claim_after_the_campaign_finished_takes_nothing(tmp_path: Path) -> None:
    coordinator = _execution_with_a_queued_idea(tmp_path)
    experimenter = _experimenter_with_work(coordinator)
    with coordinator.store.read() as session:
        team_id = session.exec(select(Proposal.team_id).where(Proposal.status == "queued")).first()
    assert team_id is not None
    with coordinator.store.write() as session:  # the coordinator ends the campaign first
        campaign = session.exec(select(Campaign)).one()
        campaign.status, campaign.accepting_work = "finished", False
        session.add(campaign)
    assert experimenter.claim(team_id) is None
    with coordinator.store.read() as session:
        assert session.exec(select(Proposal).where(Proposal.status == "claimed")).all() == []
        assert session.exec(select(Trial).where(Trial.role == "candidate")).all() == []


def test_a_launch_after_the_campaign_stopped_taking_work_releases_the_claim(tmp_path: Path) -> None:
    coordinator = _execution_with_a_queued_idea(tmp_path)
    experimenter = _experimenter_with_work(coordinator)
    with coordinator.store.read() as session:
        team_id = session.exec(select(Proposal.team_id).where(Proposal.status == "queued")).first()
    assert team_id is not None
    proposal_id = experimenter.claim(team_id)
    assert proposal_id is not None
    coordinator._set_accepting(False)  # a stop signal arrived while the agent was implementing
    assert experimenter.launch(proposal_id) is None
    with coordinator.store.read() as session:
        proposal = session.get(Proposal, proposal_id)
        agent = session.get(Agent, experimenter.agent_id)
        candidates = session.exec(select(Trial).where(Trial.role == "candidate")).all()
    assert proposal is not None and proposal.status == "queued" and proposal.claimed_by is None
    assert agent is not None and agent.status == "idle"
    assert candidates == []


def test_a_claim_the_budget_no_longer_admits_is_refused(tmp_path: Path) -> None:
    coordinator = _execution_with_a_queued_idea(tmp_path)
    experimenter = _experimenter_with_work(coordinator)
    with coordinator.store.read() as session:
        team_id = session.exec(select(Proposal.team_id).where(Proposal.status == "queued")).first()
    assert team_id is not None
    with coordinator.store.write() as session:  # another agent's candidate took the last replication
        campaign = session.exec(select(Campaign)).one()
        campaign.trials_submitted += 1
        session.add(campaign)
    assert experimenter.claim(team_id) is None
