"""LLM accounting: one `llm_call` row per request attempt, dollars from the config's price table,
the committed cost the budget stops on, and spend by role and team.

Policies never open transactions for state changes; accounting goes through an injected
recorder instead. `StoreRecorder` writes each call in its own short write transaction (the roles
call policies with no transaction open, so this never nests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

from sqlalchemy import case
from sqlmodel import func, select

from ..config import ModelPrice
from ..state.models import Agent, LLMCall, Team
from .chat import Usage

if TYPE_CHECKING:
    from ..state import Store


def cost_usd(usage: Usage, price: ModelPrice) -> float:
    """Dollars of one call: uncached input, output, cache reads and cache writes at their prices."""
    read = price.cache_read if price.cache_read is not None else price.input * 0.1
    write = price.cache_write if price.cache_write is not None else price.input * 1.25
    return (usage.input_tokens * price.input + usage.output_tokens * price.output
            + usage.cache_read_tokens * read + usage.cache_write_tokens * write) / 1e6


@dataclass
class CallRecord:
    agent_id: Optional[int]
    purpose: str
    model: str
    #: All prompt tokens: uncached + cache reads + cache writes.
    tokens_in: int = 0
    tokens_out: int = 0
    #: Prompt tokens read from the cache.
    tokens_cached: int = 0
    #: Prompt tokens written to the cache (billed at the cache-write price; in `tokens_in`).
    tokens_cache_write: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str = ""


class Recorder(Protocol):
    def record(self, call: CallRecord) -> None: ...

    def spent(self) -> float: ...


class MemoryRecorder:
    """Keeps the records in a list (tests, or a policy used without a campaign)."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    def record(self, call: CallRecord) -> None:
        self.calls.append(call)

    def spent(self) -> float:
        return sum(c.cost_usd for c in self.calls)


class StoreRecorder:
    """Writes each call as an `llm_call` row in its own short transaction."""

    def __init__(self, store: "Store") -> None:
        self.store = store

    def record(self, call: CallRecord) -> None:
        with self.store.write() as session:
            session.add(LLMCall(agent_id=call.agent_id, purpose=call.purpose, model=call.model,
                                tokens_in=call.tokens_in, tokens_out=call.tokens_out,
                                tokens_cached=call.tokens_cached, cost_usd=call.cost_usd,
                                latency_s=round(call.latency_s, 3), error=call.error[:500]))

    def spent(self) -> float:
        return committed_cost(self.store)


# ---- budget and reports -------------------------------------------------------------------------


def committed_cost(store: "Store", in_flight_estimate: float = 0.0) -> float:
    """Dollars spent on LLM calls so far (all `llm_call` rows), plus an estimate of calls in flight."""
    with store.read() as session:
        spent = session.exec(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0))).one()
    return float(spent) + max(0.0, in_flight_estimate)


def llm_budget_exhausted(store: "Store", budget_usd: Optional[float], in_flight_estimate: float = 0.0) -> bool:
    """True when `budget.llm_dollars` is set and the committed cost has reached it.

    The coordinator stops starting LLM work on this (spent + what is in flight, never spent alone).
    """
    if budget_usd is None:
        return False
    return committed_cost(store, in_flight_estimate) >= budget_usd - 1e-9  # float sums of cents


@dataclass
class SpendRow:
    role: str
    team: str
    calls: int
    errors: int
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    cost_usd: float
    latency_s: float


def spend_by_role_and_team(store: "Store") -> list[SpendRow]:
    """LLM spend grouped by the calling agent's role and (current) team, most expensive first.

    Calls without an agent are under role "—"; an agent in no team under team "—". A call made
    during the first discussion counts for the team its agent joined afterwards.
    """
    # A CASE, not sum(length(error) > 0): SQLAlchemy types that sum as a Boolean and hands back True (1).
    errors = func.sum(case((func.length(LLMCall.error) > 0, 1), else_=0))
    query = (select(Agent.role, Team.name, func.count(LLMCall.id), errors, func.sum(LLMCall.tokens_in),
                    func.sum(LLMCall.tokens_out), func.sum(LLMCall.tokens_cached), func.sum(LLMCall.cost_usd),
                    func.sum(LLMCall.latency_s))
             .select_from(LLMCall)
             .outerjoin(Agent, LLMCall.agent_id == Agent.id)  # type: ignore[arg-type]
             .outerjoin(Team, Agent.team_id == Team.id)  # type: ignore[arg-type]
             .group_by(Agent.role, Team.name))
    with store.read() as session:
        rows = session.exec(query).all()
    out = [SpendRow(role=role or "—", team=team or "—", calls=int(calls), errors=int(errs or 0),
                    tokens_in=int(tin or 0), tokens_out=int(tout or 0), tokens_cached=int(tcached or 0),
                    cost_usd=float(cost or 0.0), latency_s=float(latency or 0.0))
           for role, team, calls, errs, tin, tout, tcached, cost, latency in rows]
    return sorted(out, key=lambda r: (-r.cost_usd, r.role, r.team))
