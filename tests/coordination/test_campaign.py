"""Whole campaigns on the fixture tasks: failures as data, replication, stagnation, budgets."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import col, select

from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.state.models import Campaign, Champion, Event, ForumPost, Proposal, Team, Trial

from helpers import ScriptedPolicy, campaign_config


def run(tmp_path: Path, task: str, script: list[dict], *overrides: str) -> Coordinator:
    config = campaign_config(tmp_path, task, *overrides)
    coordinator = Coordinator(config, config.campaign_folder(), policy=ScriptedPolicy(script, seed=1))
    summary = coordinator.run()
    assert summary.status == "finished"
    return coordinator


def trials_of(coordinator: Coordinator) -> list[Trial]:
    with coordinator.store.read() as session:
        return list(session.exec(select(Trial).order_by(col(Trial.id))).all())


def test_crashing_hanging_and_malformed_programs_are_failed_trials(tmp_path: Path) -> None:
    script = [{"behaviour": "crash"}, {"behaviour": "hang"}, {"behaviour": "malformed"}]
    coordinator = run(tmp_path, "toy", script, "task.time_limit_s=2", "budget.trials=18")
    trials = trials_of(coordinator)
    failures = {t.overrides.get("behaviour"): t for t in trials if t.status == "failed"}
    assert failures["crash"].failure_class == "program_error"
    assert failures["hang"].failure_class == "timeout" and "limit" in failures["hang"].failure_reason
    assert failures["malformed"].failure_class == "bad_metrics"
    # ... and the campaign went on: later candidates ran and succeeded.
    later = [t for t in trials if t.role == "candidate" and t.id and t.id > max(f.id or 0 for f in failures.values())]
    assert any(t.status == "succeeded" for t in later)
    with coordinator.store.read() as session:
        posts = session.exec(select(ForumPost).where(ForumPost.kind == "failure")).all()
    assert len(posts) >= 3 and any("program_error" in p.title for p in posts)


def test_a_candidate_lucky_on_one_seed_is_not_promoted(tmp_path: Path) -> None:
    # +0.5 on seed 0, -0.5 on every other seed: it beats the champion only where it got lucky.
    lucky = {"lucky_seed": 0, "lucky_bonus": 0.5}
    coordinator = run(tmp_path, "toy", [lucky], "budget.trials=6", "coordination.teams=1")
    trials = [t for t in trials_of(coordinator) if t.overrides.get("lucky_seed") == 0]
    assert sorted(t.seed for t in trials) == [0, 1, 2]  # it was replicated ...
    assert trials[0].champion_delta is not None and trials[0].champion_delta > 0.4
    with coordinator.store.read() as session:
        proposal = session.get(Proposal, trials[0].proposal_id)
        champions = session.exec(select(Champion)).all()
    assert proposal is not None and proposal.outcome == "not_promoted"  # ... and not promoted
    assert [c.rule for c in champions] == ["baseline"]


def test_a_real_improvement_is_replicated_then_promoted(tmp_path: Path) -> None:
    coordinator = run(tmp_path, "toy", [{"x": 0.6}], "budget.trials=6", "coordination.teams=1")
    with coordinator.store.read() as session:
        champions = session.exec(select(Champion).order_by(col(Champion.id))).all()
    assert len(champions) == 2
    new = champions[1]
    assert new.overrides == {"x": 0.6} and sorted(new.seed_metrics) == ["0", "1", "2"]
    assert new.metric_mean > champions[0].metric_mean and new.rule == "paired"
    assert new.rule_detail["deltas"] and new.rule_detail["p_value"] < new.rule_detail["level"]
    assert "test_score" not in new.model_card and "test metric" not in new.model_card.lower()


def test_a_stagnating_team_reopens_discussion(tmp_path: Path) -> None:
    coordinator = run(tmp_path, "flat", [], "coordination.stagnation_window=2", "budget.trials=20",
                      "coordination.teams=1", "promotion.seeds=1")
    with coordinator.store.read() as session:
        reopened = session.exec(select(Event).where(Event.kind == "team.discussion_reopened")).all()
        team = session.exec(select(Team)).one()
        posts = session.exec(select(ForumPost).where(ForumPost.kind == "discussion")).all()
        concluded = session.exec(select(Proposal).where(Proposal.status == "done")
                                 .order_by(col(Proposal.id))).all()
    assert reopened and team.reopened >= 1 and posts
    assert reopened[0].data["since_improvement"] >= 2
    # It re-opened right at the window: no team ran more than the window without discussing.
    assert max(e.data["since_improvement"] for e in reopened) == 2
    assert len(concluded) >= 2


def test_the_budget_is_never_exceeded_and_counters_are_stored(tmp_path: Path) -> None:
    coordinator = run(tmp_path, "toy", [], "budget.trials=13")
    trials = trials_of(coordinator)
    with coordinator.store.read() as session:
        campaign = session.exec(select(Campaign)).one()
    assert len(trials) <= 13
    assert campaign.trials_submitted == len(trials) == campaign.trials_finished
    # Every candidate that passed its screen got its full replication inside the budget.
    groups = {t.group for t in trials if t.role == "replicate"}
    for group in groups:
        # Seeds 0-2, and more while the default rule found it inconclusive: never a gap.
        seeds = sorted(t.seed for t in trials if t.group == group)
        assert seeds[:3] == [0, 1, 2] and seeds == list(range(len(seeds)))


def test_a_run_of_failed_trials_stops_new_candidates_and_finishes_the_campaign(tmp_path: Path) -> None:
    """Every candidate crashes (as on a node whose environment broke): after `budget.failures_in_a_row`
    failures in a row no candidate starts, the campaign drains and finishes saying why, and most of its
    trial budget is left unspent."""
    script = [{"behaviour": "crash", "x": round(0.05 * i, 2)} for i in range(1, 30)]
    coordinator = run(tmp_path, "toy", script, "budget.trials=40", "budget.failures_in_a_row=3",
                      "coordination.dead_end_after=100")
    trials = trials_of(coordinator)
    candidates = [t for t in trials if t.role == "candidate"]
    assert all(t.status == "failed" for t in candidates)
    # three failures trip it; at most the executor's capacity (2) were already under way
    assert 3 <= len(candidates) <= 3 + 2 and len(trials) < 40
    with coordinator.store.read() as session:
        finished = session.exec(select(Event).where(Event.kind == "campaign.finished")).one()
    reason = finished.data["reason"]
    assert reason.startswith("3 trials in a row failed (budget.failures_in_a_row; the last, trial ")
    assert "program_error" in reason and "deliberate crash" in reason
