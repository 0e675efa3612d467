"""Champions, as verbs: the baseline champion, and a promotion. A champion row is never changed after
its transaction; the current champion is the newest row.

What a champion's number is (mean and spread of its seeds, the rule's verdict) is decided by the
promotion rule before these are called; the verbs record it, with the campaign's and team's counters
in the same transaction, and its model card (`card` is called once the row has its id, which the card
names).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from sqlmodel import Session, select

from .lifecycle import TrialRole
from .models import Campaign, Champion, Proposal, Team, Trial
from .trials import BASELINE_SET


def _measured(trials: Sequence[Trial], metrics: dict[int, float], mean: float, std: float) -> dict[str, Any]:
    tests = [t.test_metric for t in trials if t.test_metric is not None]
    return dict(seed_metrics={str(k): v for k, v in sorted(metrics.items())},
                trial_ids=[t.id or 0 for t in trials], metric_mean=mean, metric_std=std,
                test_metric_mean=sum(tests) / len(tests) if tests else None)


def _carded(session: Session, champion: Champion, card: Callable[[Champion], str]) -> Champion:
    session.add(champion)
    session.flush()
    champion.model_card = card(champion)
    session.add(champion)
    return champion


def baseline(session: Session, trials: Sequence[Trial], metrics: dict[int, float], mean: float, std: float,
             card: Callable[[Champion], str]) -> Champion:
    """The starting program, measured on every seed of the baseline seed set, becomes champion."""
    assert trials and all(t.role == TrialRole.BASELINE for t in trials)
    first = trials[0]
    row = Champion(group=BASELINE_SET, snapshot_id=first.snapshot_id, overrides=dict(first.overrides),
                   config_signature=first.config_signature, rule="baseline",
                   **_measured(trials, metrics, mean, std))
    return _carded(session, row, card)


def promote(session: Session, proposal: Proposal, previous: Champion, trials: Sequence[Trial],
            metrics: dict[int, float], mean: float, std: float, *, delta: float, rule: str,
            rule_detail: dict[str, Any], card: Callable[[Champion], str]) -> Champion:
    """The candidate's seed set replaces `previous`: a new champion row, the campaign's promotion
    count, and the team's improvements."""
    first = trials[0]
    row = Champion(group=first.seed_set, proposal_id=proposal.id, team_id=proposal.team_id,
                   previous_id=previous.id, snapshot_id=first.snapshot_id, overrides=first.overrides,
                   config_signature=first.config_signature, delta=delta, rule=rule, rule_detail=rule_detail,
                   diff=first.diff, **_measured(trials, metrics, mean, std))
    _carded(session, row, card)
    campaign = session.exec(select(Campaign)).one()
    campaign.promotions += 1
    session.add(campaign)
    team: Optional[Team] = session.get(Team, proposal.team_id) if proposal.team_id else None
    if team is not None:
        team.improvements += 1
        session.add(team)
    return row
