"""Coordination modes: who proposes, who judges, who runs — everything else is shared.

- `decentralized` (the paper's system): analysts debate in rounds, teams form around the
  best-supported hypotheses, every proposal is critiqued by peers, experimenters pull from their
  team's queue, stagnating teams re-open discussion (`agents.roles`, `coordination.discussion`).
- `single` (the Autoresearch baseline): one agent in a loop — propose, run, keep or discard. It
  runs one candidate at a time (its replication seeds run together) and reads the same log.
- `central`: one planner proposes and assigns each idea to an idle worker; no teams, no critique,
  no forum debate. Workers only implement and launch.

A comparison therefore isolates coordination: the state, the executor, the hard gates (duplicates
and dead ends), the promotion rule (screen, replicate, decide) and the budget accounting are the
same code in every mode. In the two baselines a proposal has no critics (nobody to ask), so it is
settled by the hard gates alone and, having no team, waits as `approved` until it is assigned.
"""

from __future__ import annotations

from typing import Optional, Protocol

from sqlmodel import Session, col, func, select

from ..agents.roles import Analyst, Context, Experimenter, _exhausted, may_claim
from ..agents.roles import release  # noqa: F401  (re-exported: the supervisor and resume use it)
from ..config import CampaignConfig
from ..state import budget, emit, proposals
from ..state.lifecycle import AgentStatus, CampaignStatus, ProposalStatus
from ..state.models import Agent, Campaign, Proposal
from .discussion import settle

MODES = ("decentralized", "single", "central")


class Stepper(Protocol):
    agent_id: int

    def step(self) -> bool:
        """One turn of the agent's loop; True when it did anything."""


def starting_agents(config: CampaignConfig) -> list[tuple[str, str]]:
    """(name, role) of the agents a campaign starts with, by mode (not a roster: that word is kept for a
    team's members, decided when the team forms). Central mode gets as many workers as decentralized
    mode has experimenters, so both keep the same number of candidates in flight."""
    c = config.coordination
    if c.mode == "single":
        return [("agent-1", "solo")]
    workers = worker_count(config)
    if c.mode == "central":
        return [("planner", "planner")] + [(f"worker-{i + 1}", "worker") for i in range(workers)]
    return ([(f"analyst-{i + 1}", "analyst") for i in range(c.teams * c.analysts_per_team)]
            + [(f"experimenter-{i + 1}", "experimenter") for i in range(workers)])


def worker_count(config: CampaignConfig) -> int:
    """Experimenters in decentralized mode, workers in central mode: the candidates kept in flight."""
    return config.coordination.teams * config.coordination.experimenters_per_team


def first_phase(mode: str) -> str:
    """Where a campaign goes once its baseline champion exists: only the paper's system debates first."""
    return CampaignStatus.DISCUSSION if mode == "decentralized" else CampaignStatus.EXECUTION


def ready_statuses(mode: str) -> tuple[str, ...]:
    """Proposals that are settled and wait for an experimenter (used to tell an idle search)."""
    return (ProposalStatus.QUEUED,) if mode == "decentralized" else (ProposalStatus.APPROVED,)


def make_agent(ctx: Context, agent_id: int, role: str) -> Stepper:
    if role == "analyst":
        return Analyst(ctx, agent_id)
    if role == "experimenter":
        return Experimenter(ctx, agent_id)
    if role in ("solo", "planner"):
        return Planner(ctx, agent_id)
    if role == "worker":
        return Worker(ctx, agent_id)
    raise ValueError(f"agent {agent_id} has unknown role {role!r}")


def _assign(session: Session, config: CampaignConfig, proposal: Proposal, worker_id: int) -> bool:
    """Give `proposal` to the worker, re-checking in this (write) transaction what the planner read
    before: the idea still waits, the worker is still idle, the campaign takes work and its budget
    admits a whole replication. False, and nothing changed, when any of it no longer holds."""
    worker = session.get(Agent, worker_id)
    if (worker is None or proposal.status != ProposalStatus.APPROVED or worker.status != AgentStatus.IDLE
            or not may_claim(session, config)):
        return False
    proposals.claim(session, proposal, worker)
    emit(session, "proposal.assigned", "proposal", proposal.id, to=worker.name)
    return True


class Planner:
    """The one mind of the baselines. In `central` it keeps every idle worker supplied; in `single`
    (role `solo`) it is its own only worker: it proposes, launches, and waits for the verdict.

    It is composed of the roles' behaviour, not a kind of them: it proposes and reviews as an analyst
    does and (solo) launches as an experimenter does, each in its own name, and decides itself only
    who gets which idea and when."""

    def __init__(self, ctx: Context, agent_id: int) -> None:
        self.ctx = ctx
        self.agent_id = agent_id
        self.analyst = Analyst(ctx, agent_id)
        self.experimenter = Experimenter(ctx, agent_id)

    def step(self) -> bool:
        with self.ctx.store.read() as session:
            me = session.get(Agent, self.agent_id)
            assert me is not None
            solo = me.role == "solo"
            concluded = int(session.exec(select(func.max(Proposal.id))
                                         .where(Proposal.status == ProposalStatus.DONE)).one() or 0)
            reviewed = int(me.memory.get("reviewed_upto", 0))
        did = False
        if not solo and concluded > reviewed:
            # The central planner reads every outcome; the dead ends it registers bind everyone.
            self.analyst.review(reviewed_upto=concluded)
            did = True
        # Keep every idle worker supplied: assign an approved idea, or think of a new one.
        for _ in range(worker_count(self.ctx.config)):
            worker = self._idle_worker(solo)
            if worker is None:
                break
            proposal_id = self._approved()
            if proposal_id is None:
                if self._ideas_spent():
                    break
                posted = self.analyst.post_proposal(None, None)
                did = True
                if posted is None:
                    continue  # refused before compute (unknown key) or nothing to propose
                settle(self.ctx)  # no critics to wait for: only the hard gates decide
                continue
            with self.ctx.store.write() as session:
                row = session.get(Proposal, proposal_id)
                assert row is not None
                assigned = _assign(session, self.ctx.config, row, worker)
            if not assigned:
                break  # the campaign changed since the planner looked; try again next step
            did = True
            if solo:
                self.experimenter.launch(proposal_id)
                break
        return did

    def _idle_worker(self, solo: bool) -> Optional[int]:
        """The worker to give the next idea to, if a candidate may start now."""
        with self.ctx.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            if not (campaign.status == CampaignStatus.EXECUTION and campaign.accepting_work
                    and budget.may_start_candidate(session, self.ctx.config)
                    and budget.free_slots(session, self.ctx.capacity) > 0):
                return None
            me = session.get(Agent, self.agent_id)
            assert me is not None
            if solo:
                return self.agent_id if me.status == AgentStatus.IDLE else None
            worker = session.exec(select(Agent).where(Agent.role == "worker")
                                  .where(Agent.status == AgentStatus.IDLE)
                                  .order_by(col(Agent.id))).first()
            return worker.id if worker is not None else None

    def _approved(self) -> Optional[int]:
        with self.ctx.store.read() as session:
            row = session.exec(select(Proposal).where(Proposal.status == ProposalStatus.APPROVED)
                               .where(col(Proposal.team_id).is_(None)).order_by(col(Proposal.id))).first()
            return row.id if row is not None else None

    def _ideas_spent(self) -> bool:
        with self.ctx.store.read() as session:
            return _exhausted(session, self.agent_id, self.ctx.config.coordination.max_rejections_in_a_row)


class Worker:
    """A central-mode worker: it launches what the planner assigned to it, nothing else (an
    experimenter's launch, without its own claiming)."""

    def __init__(self, ctx: Context, agent_id: int) -> None:
        self.ctx = ctx
        self.agent_id = agent_id
        self.experimenter = Experimenter(ctx, agent_id)

    def step(self) -> bool:
        with self.ctx.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            assigned = session.exec(select(Proposal).where(Proposal.claimed_by == self.agent_id)
                                    .where(Proposal.status == ProposalStatus.CLAIMED)
                                    .order_by(col(Proposal.id))).first()
        if assigned is None or assigned.id is None or campaign.status != CampaignStatus.EXECUTION:
            return False
        self.experimenter.launch(assigned.id)
        return True
