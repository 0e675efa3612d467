"""An agent's status, as verbs: busy while it holds a proposal, idle otherwise (`lifecycle.AGENT`).

Both are idempotent: freeing an agent that is already idle (a restart, a resumed campaign, a
conclusion after the agent was released) changes nothing and is no error.
"""

from __future__ import annotations

from sqlmodel import Session

from .lifecycle import AGENT, AgentStatus
from .models import Agent


def busy(session: Session, agent: Agent) -> None:
    if agent.status != AgentStatus.BUSY:
        agent.status = AGENT.check(agent.id, agent.status, AgentStatus.BUSY)
        session.add(agent)


def idle(session: Session, agent: Agent) -> None:
    if agent.status != AgentStatus.IDLE:
        agent.status = AGENT.check(agent.id, agent.status, AgentStatus.IDLE)
        session.add(agent)
