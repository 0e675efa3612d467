"""A proposal's life, as verbs: post, settle (reject / accept), queue, claim, release, start, replicate,
conclude.

Every verb works inside the caller's write transaction (the caller keeps the re-checks its decision
relies on, read in that same transaction) and moves the row only along `lifecycle.PROPOSAL`; an
illegal move raises `IllegalTransition`. `conclude` is the one way a proposal ends, whichever way it
ends: the team's counters (what stagnation is measured on) and its experimenter are updated there.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlmodel import Session

from .lifecycle import PROPOSAL, ProposalOutcome, ProposalStatus
from .models import Agent, Proposal, Team, utcnow
from .store import emit
from . import agents


def _move(proposal: Proposal, target: ProposalStatus) -> None:
    proposal.status = PROPOSAL.check(proposal.id, proposal.status, target)
    proposal.updated_at = utcnow()


def post(session: Session, *, author_id: int, title: str, change_signature: str, config_signature: str,
         rejected_because: str = "", **fields: Any) -> Proposal:
    """A new proposal, posted (or refused at birth, with `rejected_because`, when its change cannot
    even be built); added and flushed, so it has its id."""
    status = ProposalStatus.REJECTED if rejected_because else ProposalStatus.POSTED
    proposal = Proposal(author_id=author_id, title=title, change_signature=change_signature,
                        config_signature=config_signature, status=PROPOSAL.check(None, None, status),
                        reject_reason=rejected_because, **fields)
    session.add(proposal)
    session.flush()
    return proposal


def name_critics(session: Session, proposal: Proposal, critics: list[int]) -> None:
    proposal.critics = list(critics)
    session.add(proposal)


def reject(session: Session, proposal: Proposal, reason: str) -> None:
    """Refused by a gate or its critics (posted), or withdrawn from a team's queue (queued)."""
    _move(proposal, ProposalStatus.REJECTED)
    proposal.reject_reason = reason
    session.add(proposal)


def accept(session: Session, proposal: Proposal) -> ProposalStatus:
    """Its critics approved it: straight into its team's queue, or (posted in the discussion phase, in
    a re-opened discussion, or with no team at all) approved until a team takes it up."""
    target = (ProposalStatus.QUEUED if proposal.team_id is not None and not proposal.reopened
              else ProposalStatus.APPROVED)
    _move(proposal, target)
    session.add(proposal)
    return target


def queue(session: Session, proposal: Proposal, team_id: Optional[int] = None) -> None:
    """Into a team's queue (`team_id` given: the team formed around its hypothesis). A proposal that is
    queued already stays where it is."""
    if team_id is not None:
        proposal.team_id = team_id
    if proposal.status != ProposalStatus.QUEUED:
        _move(proposal, ProposalStatus.QUEUED)
    session.add(proposal)


def claim(session: Session, proposal: Proposal, agent: Agent) -> None:
    """Taken by an experimenter from its queue, or given to a worker from the approved pool; the agent
    is busy from now on. The caller has re-checked, in this transaction, that it may."""
    _move(proposal, ProposalStatus.CLAIMED)
    proposal.claimed_by = agent.id
    session.add(proposal)
    agents.busy(session, agent)


def release(proposal: Proposal) -> None:
    """A claim whose trial never started goes back to where it waits: its team's queue, or (no team:
    the baselines) the approved pool its planner assigns from. (The caller adds the row.)"""
    _move(proposal, ProposalStatus.QUEUED if proposal.team_id is not None else ProposalStatus.APPROVED)
    proposal.claimed_by = None


def start(session: Session, proposal: Proposal) -> None:
    """Its candidate trial was created."""
    _move(proposal, ProposalStatus.RUNNING)
    session.add(proposal)


def rebase(session: Session, proposal: Proposal, champion_id: int) -> None:
    """A newer champion was promoted while its candidate ran: its change is re-applied to that champion
    and measured again from seed 0 (a new candidate trial), so it runs again, on the new base."""
    _move(proposal, ProposalStatus.RUNNING)
    proposal.base_champion_id = champion_id
    proposal.updated_at = utcnow()
    session.add(proposal)


def replicate(session: Session, proposal: Proposal) -> None:
    """More seeds are out: the first replication after the screen, or more while the rule is unsure."""
    _move(proposal, ProposalStatus.REPLICATING)
    session.add(proposal)


def conclude(session: Session, proposal: Proposal, outcome: ProposalOutcome | str, reason: str = "") -> None:
    """The proposal is done, with its outcome: the team counts the experiment (a promotion resets its
    stagnation count, anything else adds to it), and the agent that held it is free again."""
    outcome = ProposalOutcome(outcome)
    _move(proposal, ProposalStatus.DONE)
    proposal.outcome = outcome.value
    if reason:
        proposal.reject_reason = reason
    session.add(proposal)
    if proposal.team_id is not None:
        team = session.get(Team, proposal.team_id)
        assert team is not None
        team.experiments_total += 1
        team.experiments_since_improvement = (0 if outcome is ProposalOutcome.PROMOTED
                                              else team.experiments_since_improvement + 1)
        session.add(team)
    if proposal.claimed_by is not None:
        agent = session.get(Agent, proposal.claimed_by)
        if agent is not None:
            agents.idle(session, agent)
            agent.memory = {**agent.memory, "current_proposal": None}
            session.add(agent)
    emit(session, "proposal.concluded", "proposal", proposal.id, outcome=outcome.value)
