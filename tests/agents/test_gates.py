"""Proposals are refused before compute: duplicates, dead ends, harmful evidence; the test metric stays hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from autosci_hpc.agents.roles import Analyst, Context
from autosci_hpc.agents.views import build_view
from autosci_hpc.coordination.discussion import settle
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent, Campaign, Champion, DeadEnd, Proposal, Trial
from autosci_hpc.task import build_snapshot, config_signature, load_task
from helpers import FIXTURE_TASKS, ScriptedPolicy, campaign_config

SECRET_TEST_METRIC = 0.123456789


def state_with_history(tmp_path: Path, script: list[dict]) -> tuple[Context, list[Analyst]]:
    """A campaign with a champion, one tried candidate (x=0.5) and a dead end (x in its lowest bin)."""
    config = campaign_config(tmp_path)
    task = load_task(FIXTURE_TASKS / "toy")
    folder = config.campaign_folder()
    store = Store(folder)
    snapshot = build_snapshot(task, folder)
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="toy", mode="decentralized"))
        for name in ("analyst-1", "analyst-2", "analyst-3"):
            session.add(Agent(name=name, role="analyst"))
        session.add(Champion(group="baseline", snapshot_id=snapshot, overrides={},
                             config_signature=config_signature(snapshot, {}),
                             seed_metrics={"0": 0.5, "1": 0.5, "2": 0.5}, metric_mean=0.5, metric_std=0.01,
                             test_metric_mean=SECRET_TEST_METRIC, rule="baseline"))
        session.add(Trial(role="candidate", group="p0", snapshot_id=snapshot, overrides={"x": 0.5},
                          config_signature=config_signature(snapshot, {"x": 0.5}), seed=0, status="succeeded",
                          metric=0.9, test_metric=SECRET_TEST_METRIC))
        session.add(DeadEnd(signature="x~bin0/6", description="x near -1", reason="3 experiments got worse",
                            evidence_trial_ids=[1]))
    ctx = Context(store, task, ScriptedPolicy(script), config, capacity=1)  # analysts only: no trial runs
    with store.read() as session:
        ids = [a.id for a in session.exec(select(Agent)).all()]
    return ctx, [Analyst(ctx, i) for i in ids if i is not None]


def review_proposal(ctx: Context, proposal_id: int, critics: list[Analyst]) -> bool:
    """The critics named on the proposal answer in their own step; then it is settled."""
    for critic in critics:
        critic.step()
    settle(ctx)
    with ctx.store.read() as session:
        proposal = session.get(Proposal, proposal_id)
    assert proposal is not None and proposal.status != "posted", "a named critic did not answer"
    return proposal.status != "rejected"


def trials_for(ctx: Context, proposal_id: int) -> list[Trial]:
    with ctx.store.read() as session:
        return list(session.exec(select(Trial).where(Trial.proposal_id == proposal_id)).all())


@pytest.mark.parametrize("change,reason", [
    ({"x": 0.5}, "duplicate: trial"),  # the log already has this configuration
    ({"x": -0.95}, "dead_end: 'x~bin0/6'"),  # the registry holds this direction
])
def test_duplicates_and_dead_ends_are_refused_before_any_trial(tmp_path: Path, change: dict, reason: str) -> None:
    ctx, (author, *critics) = state_with_history(tmp_path, [change])
    proposal_id = author.post_proposal("x_axis", None)
    assert proposal_id is not None
    assert review_proposal(ctx, proposal_id, critics) is False
    with ctx.store.read() as session:
        proposal = session.get(Proposal, proposal_id)
    assert proposal is not None and proposal.status == "rejected" and reason in proposal.reject_reason
    assert trials_for(ctx, proposal_id) == []


def test_a_twin_of_an_open_proposal_is_a_duplicate(tmp_path: Path) -> None:
    ctx, (a, b, c) = state_with_history(tmp_path, [{"x": 0.2}, {"x": 0.2}])
    first = a.post_proposal("x_axis", None)
    assert first is not None and review_proposal(ctx, first, [b, c]) is True
    second = b.post_proposal("x_axis", None)
    assert second is not None and review_proposal(ctx, second, [a, c]) is False


def test_hard_gates_hold_even_if_every_critic_approves(tmp_path: Path) -> None:
    class Agreeable(ScriptedPolicy):
        def critique(self, agent, view, proposal, findings):  # type: ignore[no-untyped-def]
            from autosci_hpc.agents.policy import CritiqueDraft

            return CritiqueDraft(verdict="approve", reasons="looks fine to me")

    ctx, (author, *critics) = state_with_history(tmp_path, [{"x": 0.5}])
    ctx.policy = Agreeable([{"x": 0.5}])  # the context is shared: every analyst now agrees
    proposal_id = author.post_proposal("x_axis", None)
    assert proposal_id is not None
    assert review_proposal(ctx, proposal_id, critics) is False


def test_a_fresh_idea_passes_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    ctx, (author, *critics) = state_with_history(tmp_path, [{"x": 0.3}, {"learning_rate": 0.1}])
    good = author.post_proposal("x_axis", None)
    assert good is not None and review_proposal(ctx, good, critics) is True
    assert author.post_proposal("x_axis", None) is None
    with ctx.store.read() as session:
        bad = session.exec(select(Proposal).where(Proposal.status == "rejected")).one()
    assert "unknown config key(s) learning_rate" in bad.reject_reason


def test_agents_never_see_the_test_metric(tmp_path: Path) -> None:
    ctx, _ = state_with_history(tmp_path, [])
    with ctx.store.read() as session:
        view = build_view(session, ctx.task, all_trials=True)
    text = view.model_dump_json()
    assert view.trials and view.champion is not None
    assert str(SECRET_TEST_METRIC) not in text and "test_metric" not in text


def test_agent_memory_lives_in_the_database(tmp_path: Path) -> None:
    ctx, (author, *_) = state_with_history(tmp_path, [{"x": 0.3}])
    author.post_proposal("x_axis", None)
    with ctx.store.read() as session:
        agent = session.get(Agent, author.agent_id)
    assert agent is not None and agent.memory["step"] == 1 and agent.memory["proposed"] == ["x=0.3"]


def test_a_failing_policy_is_recorded_not_a_crash_and_notes_are_kept(tmp_path: Path) -> None:
    from autosci_hpc.agents.policy import PolicyError
    from autosci_hpc.state.models import ForumPost

    class Flaky(ScriptedPolicy):
        def propose(self, agent, view, focus):  # type: ignore[no-untyped-def]
            agent.memory_update["note"] = "the API was down"
            raise PolicyError("model service overloaded after 3 retries")

    ctx, (author, *_) = state_with_history(tmp_path, [])
    ctx.policy = Flaky([])
    assert author.post_proposal("x_axis", None) is None
    with ctx.store.read() as session:
        posts = session.exec(select(ForumPost).where(ForumPost.kind == "failure")).all()
        agent = session.get(Agent, author.agent_id)
    assert posts and "overloaded" in posts[0].body
    assert agent is not None and agent.memory["note"] == "the API was down"


@pytest.mark.parametrize("author_first", [True, False])
def test_an_analyst_whose_ideas_are_all_refused_stops_proposing(tmp_path: Path, author_first: bool) -> None:
    """Whatever the order the agents act in a tick: an author who steps after its critics always has
    its newest proposal still under review when it looks at its streak (this once kept it posting)."""
    from sqlmodel import func

    from autosci_hpc.state.models import Campaign, Team

    ctx, (author, *critics) = state_with_history(tmp_path, [{"x": 0.5}] * 40)  # duplicates, every one
    with ctx.store.write() as session:
        team = Team(name="team-1", hypothesis="x", focus="x_axis")
        session.add(team)
        session.flush()
        session.exec(select(Campaign)).one().status = "execution"
        row = session.get(Agent, author.agent_id)
        assert row is not None
        row.team_id = team.id
        session.add(row)
    for _ in range(30):
        order = [author, *critics] if author_first else [*critics, author]
        for agent in order:
            agent.step()
        settle(ctx)
    with ctx.store.read() as session:
        posted = session.exec(select(func.count()).select_from(Proposal)
                              .where(Proposal.author_id == author.agent_id)).one()
    limit = ctx.config.coordination.max_rejections_in_a_row
    # Then it waited, not looped; stepping after its critics, it posts one more while the last is reviewed.
    assert posted == (limit if author_first else limit + 1)
