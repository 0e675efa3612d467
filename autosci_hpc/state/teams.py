"""Teams, as verbs along `lifecycle.TEAM`: formed around a hypothesis, re-opening discussion when
they stagnate, and taking up a hypothesis again when that discussion is concluded."""

from __future__ import annotations

from sqlmodel import Session

from .lifecycle import TEAM, TeamStatus
from .models import Team


def form(session: Session, name: str, hypothesis: str, focus: str) -> Team:
    team = Team(name=name, hypothesis=hypothesis, focus=focus,
                status=TEAM.check(None, None, TeamStatus.ACTIVE))
    session.add(team)
    return team


def reopen(session: Session, team: Team) -> None:
    """Its last experiments brought no improvement: its analysts argue for a hypothesis again."""
    team.status = TEAM.check(team.id, team.status, TeamStatus.DISCUSSING)
    team.reopened += 1
    session.add(team)


def reorganize(session: Session, team: Team, focus: str, hypothesis: str) -> None:
    """The re-opened discussion chose `focus`: the team works on it, its stagnation count reset."""
    team.status = TEAM.check(team.id, team.status, TeamStatus.ACTIVE)
    team.focus, team.hypothesis = focus, hypothesis
    team.experiments_since_improvement = 0
    session.add(team)
