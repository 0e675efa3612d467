"""The campaign's phase, as verbs along `lifecycle.CAMPAIGN`: created with its agents, the baseline
runs, the discussion and execution phases, finished (or failed: the starting program fails).

Every verb works inside the caller's write transaction; the caller re-checks in it what the move
relies on (`Coordinator._maybe_finish` decides and records the end in one transaction)."""

from __future__ import annotations

from typing import Any, Sequence

from sqlmodel import Session

from .lifecycle import CAMPAIGN, CampaignStatus
from .models import Agent, Campaign, utcnow


def _move(campaign: Campaign, target: CampaignStatus) -> None:
    campaign.status = CAMPAIGN.check(campaign.id, campaign.status, target)


def create(session: Session, *, name: str, folder: str, task_name: str, mode: str, config: dict[str, Any],
           starting_agents: Sequence[tuple[str, str]]) -> Campaign:
    """The campaign row and its starting agents, (name, role) in the given order (their ids follow it)."""
    campaign = Campaign(name=name, folder=folder, task_name=task_name, mode=mode, config=config,
                        status=CAMPAIGN.check(None, None, CampaignStatus.CREATED))
    session.add(campaign)
    for agent_name, role in starting_agents:
        session.add(Agent(name=agent_name, role=role))
    return campaign


def begin_baseline(session: Session, campaign: Campaign) -> None:
    _move(campaign, CampaignStatus.BASELINE)
    session.add(campaign)


def enter(session: Session, campaign: Campaign, phase: CampaignStatus | str) -> None:
    """Into the discussion phase or the execution phase."""
    _move(campaign, CampaignStatus(phase))
    session.add(campaign)


def fail(session: Session, campaign: Campaign) -> None:
    _move(campaign, CampaignStatus.FAILED)
    session.add(campaign)


def finish(session: Session, campaign: Campaign) -> None:
    """The campaign is over: it takes no more work."""
    _move(campaign, CampaignStatus.FINISHED)
    campaign.accepting_work = False
    campaign.finished_at = utcnow()
    session.add(campaign)
