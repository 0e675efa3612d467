"""The roles: analysts post, critique and review; experimenters claim, implement and launch.

Each action follows one pattern: read a view (a read transaction), ask the policy (no transaction
open: an LLM call may take a minute), then record the outcome and the agent's memory in one short
write transaction. An agent that dies loses at most the decision it was making.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sqlmodel import Session, col, func, select

from .. import faults, scrub
from ..config import CampaignConfig
from ..state import Store, agents, budget, emit, forum, proposals, trials
from ..state.lifecycle import (AgentStatus, CampaignStatus, PostKind, ProposalOutcome, ProposalStatus,
                               TeamStatus)
from ..state.models import Agent, Campaign, Critique, DeadEnd, Proposal, Team, utcnow
from ..task import (Edit, PatchError, TaskSpec, build_snapshot, change_signature, config_signature,
                    directions, unknown_keys_reason)
from .evidence import assess, direction_evidence
from .policy import AgentInfo, CritiqueDraft, Policy, PolicyError
from .views import build_view, current_champion, proposal_view


@dataclass
class Context:
    """What every agent works with: the store, the task, the policy, the campaign config, and the
    executor's capacity (trials outstanding at once: the executor's own figure, handed down by the
    coordinator, so that agents and coordinator count slots against the same number)."""

    store: Store
    task: TaskSpec
    policy: Policy
    config: CampaignConfig
    capacity: int
    #: Asked for a team plan when `policy` fails on it (the coordinator gives the model-free
    #: policy), so a team is never left without a focus. Injected: the roles name no policy.
    fallback: Optional[Policy] = None

    @property
    def folder(self) -> Path:
        return self.store.folder


def agent_info(session: Session, agent: Agent) -> AgentInfo:
    team = session.get(Team, agent.team_id) if agent.team_id else None
    assert agent.id is not None
    return AgentInfo(id=agent.id, name=agent.name, role=agent.role, team_id=agent.team_id,
                     focus=team.focus if team else "", memory=dict(agent.memory))


def remember(session: Session, agent_id: int, **updates: Any) -> None:
    """Advance the agent's step counter and merge `updates` into its stored memory."""
    agent = session.get(Agent, agent_id)
    assert agent is not None
    memory = dict(agent.memory)
    memory["step"] = int(memory.get("step", 0)) + 1
    memory.update(scrub.for_session(session).scrub_value(updates))  # notes are model-written
    agent.memory = memory
    agent.heartbeat_at = utcnow()
    session.add(agent)


def choose_critics(session: Session, author_id: int, salt: int, k: int) -> list[int]:
    """k analysts other than the author, rotating with `salt` so the load is shared."""
    peers = [a.id for a in session.exec(select(Agent).where(Agent.role == "analyst").order_by(col(Agent.id))).all()
             if a.id is not None and a.id != author_id]
    if not peers:
        return []
    start = salt % len(peers)
    return (peers[start:] + peers[:start])[: min(k, len(peers))]


#: A claim whose trial never started goes back to where it waits (kept here for its callers).
release = proposals.release


def takes_work(session: Session) -> bool:
    """The campaign is executing and accepting new work. Read inside the write transaction that
    would claim or launch, so the answer cannot change before that transaction commits."""
    campaign = session.exec(select(Campaign)).one()
    return campaign.status == CampaignStatus.EXECUTION and campaign.accepting_work


def may_claim(session: Session, config: CampaignConfig) -> bool:
    """A new candidate may be claimed now: the campaign takes work and its budget still admits a
    whole replication (checked in the claiming transaction, never from an earlier read)."""
    return takes_work(session) and budget.may_start_candidate(session, config)


def post(session: Session, kind: PostKind | str, title: str, body: str = "", *,
         author_id: Optional[int] = None, team_id: Optional[int] = None, proposal_id: Optional[int] = None,
         trial_ids: Optional[list[int]] = None) -> None:
    """Every forum post goes through the scrubber: posts quote log tails and model-written text."""
    clean = scrub.for_session(session)
    forum.post(session, clean, kind, title, body, author_id=author_id, team_id=team_id,
               proposal_id=proposal_id, trial_ids=trial_ids)
    scrub.record(session, clean, "agent" if author_id else "forum", author_id, f"a {kind} post")


class Role:
    def __init__(self, ctx: Context, agent_id: int) -> None:
        self.ctx = ctx
        self.agent_id = agent_id

    def _ask(self, info: AgentInfo, decision: str, *args: Any) -> Any:
        """Ask the policy for a decision; a `PolicyError` (an LLM that keeps failing) is recorded on
        the forum and as an event, and answered with None, never a crash of the agent."""
        try:
            return getattr(self.ctx.policy, decision)(info, *args)
        except PolicyError as exc:
            with self.ctx.store.write() as session:
                post(session, PostKind.FAILURE, f"{info.name} could not {decision}", str(exc)[:2000],
                     author_id=self.agent_id, team_id=info.team_id)
                error = scrub.for_session(session).scrub(str(exc))
                emit(session, "agent.policy_error", "agent", self.agent_id, decision=decision,
                     error=error[:500])
                remember(session, self.agent_id, last_error=error[:300], **info.memory_update)
            return None

    def _look(self) -> tuple[AgentInfo, Any]:
        with self.ctx.store.read() as session:
            agent = session.get(Agent, self.agent_id)
            assert agent is not None
            return agent_info(session, agent), build_view(session, self.ctx.task)


def _exhausted(session: Session, agent_id: int, limit: int) -> bool:
    """Whether this analyst's last `limit` proposals on the current champion were all refused: its
    ideas there are spent, and it waits for a new champion (or a re-opened discussion) instead of
    proposing forever. This is what lets a campaign whose search space is exhausted end."""
    champion = current_champion(session)
    # Only decided proposals count: one still under review would otherwise hide the streak for as long
    # as the analyst keeps posting a new one before the last is settled (it always has one in review).
    recent = session.exec(select(Proposal.status).where(Proposal.author_id == agent_id)
                          .where(Proposal.base_champion_id == (champion.id if champion else None))
                          .where(Proposal.status != ProposalStatus.POSTED)
                          .order_by(col(Proposal.id).desc()).limit(limit)).all()
    return len(recent) >= limit and all(status == ProposalStatus.REJECTED for status in recent)


class Analyst(Role):
    def post_proposal(self, focus: Optional[str], team_id: Optional[int], discussion_round: int = 0,
                      reopened: int = 0, **memory: Any) -> Optional[int]:
        """Post the policy's next proposal and name its critics; `memory` is stored with it.

        A code edit is applied to the champion's program right away: the content-addressed snapshot
        it yields goes into the proposal's configuration signature, the same one its trial will carry,
        so a program that was already tried (or is proposed and open) is refused as a duplicate before
        any compute, however its edits were worded; edits that do not apply are refused with why."""
        info, view = self._look()
        draft = self._ask(info, "propose", view, focus)
        with self.ctx.store.read() as session:
            champion = current_champion(session)
            # Scrubbed before anything is built from it: a snapshot must not carry a key either.
            clean = scrub.for_session(session)
        if draft is not None:
            draft = scrub.clean_draft(draft, clean)
        snapshot = champion.snapshot_id if champion else ""
        patch_error = ""
        if draft is not None and draft.edits:
            try:
                snapshot = build_snapshot(self.ctx.task, self.ctx.folder, snapshot, list(draft.edits))
            except PatchError as exc:
                patch_error = f"the edits do not apply to the champion's program: {exc}"
        with self.ctx.store.write() as session:
            if draft is None:
                remember(session, self.agent_id, **{**info.memory_update, **memory})
                return None
            scrub.record(session, clean, "agent", self.agent_id, "a proposal")
            base = champion.overrides if champion else {}
            unknown = unknown_keys_reason(self.ctx.task.base_config(), draft.overrides) or patch_error
            effective = {**base, **draft.overrides}
            tag = re.sub(r"[^A-Za-z0-9_:.\-]", "", draft.direction)[:60]  # model text: clipped to a tag
            tags = [f"dir:{tag}"] if tag else []
            proposal = proposals.post(
                session, author_id=self.agent_id, team_id=team_id, focus=draft.focus, title=draft.title,
                rationale=draft.rationale, expected_effect=draft.expected_effect,
                falsification=draft.falsification, overrides=draft.overrides,
                edits=[e.model_dump() for e in draft.edits],
                change_signature=change_signature(draft.overrides, draft.edits),
                config_signature=config_signature(snapshot, effective),
                directions=directions(self.ctx.task, draft.overrides, draft.edits) + tags,
                base_champion_id=champion.id if champion else None,
                discussion_round=discussion_round, reopened=reopened, rejected_because=unknown,
            )
            proposals.name_critics(session, proposal, choose_critics(
                session, self.agent_id, proposal.id or 0, self.ctx.config.coordination.critics_per_proposal))
            post(session, PostKind.PROPOSAL, f"#{proposal.id} {draft.title}", draft.rationale,
                 author_id=self.agent_id, team_id=team_id, proposal_id=proposal.id)
            emit(session, "proposal.posted", "proposal", proposal.id, author=info.name, focus=draft.focus,
                 status=proposal.status)
            remember(session, self.agent_id,
                     proposed=(info.memory.get("proposed", []) + [proposal.change_signature])[-200:],
                     **{**info.memory_update, **memory})
            return proposal.id if proposal.status == ProposalStatus.POSTED else None

    def step(self) -> bool:
        """One turn of this analyst's own loop: critique what it was asked to, post when its phase or
        team needs a proposal, review its team's outcomes. True when it did anything."""
        cfg = self.ctx.config.coordination
        with self.ctx.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            agent = session.get(Agent, self.agent_id)
            assert agent is not None
            memory = dict(agent.memory)
            team = session.get(Team, agent.team_id) if agent.team_id else None
            answered = {c.proposal_id for c in session.exec(
                select(Critique).where(Critique.author_id == self.agent_id)).all()}
            asked = [p.id for p in session.exec(select(Proposal)
                                                .where(Proposal.status == ProposalStatus.POSTED)
                                                .order_by(col(Proposal.id))).all()
                     if self.agent_id in p.critics and p.id not in answered]
            pending = 0
            may_start = False
            concluded = 0
            exhausted = _exhausted(session, self.agent_id, cfg.max_rejections_in_a_row)
            if team is not None:
                pending = int(session.exec(select(func.count()).select_from(Proposal)
                                           .where(Proposal.team_id == team.id)
                                           .where(col(Proposal.status).in_([ProposalStatus.POSTED,
                                                                            ProposalStatus.QUEUED]))).one())
                may_start = budget.may_start_candidate(session, self.ctx.config)
                concluded = int(session.exec(select(func.max(Proposal.id)).where(Proposal.team_id == team.id)
                                             .where(Proposal.status == ProposalStatus.DONE)).one() or 0)
        did = False
        for proposal_id in asked:
            if proposal_id is not None:
                self.critique(proposal_id)
                did = True
        if not campaign.accepting_work:
            return did
        if campaign.status == CampaignStatus.DISCUSSION:
            if int(memory.get("round_posted", -1)) < campaign.discussion_round:
                self.post_proposal(None, None, campaign.discussion_round, round_posted=campaign.discussion_round)
                did = True
        elif campaign.status == CampaignStatus.EXECUTION and team is not None:
            if team.status == TeamStatus.DISCUSSING and int(memory.get("reopen_posted", 0)) < team.reopened:
                # A re-opened discussion: any hypothesis may be argued for, not only the team's.
                self.post_proposal(None, team.id, reopened=team.reopened, reopen_posted=team.reopened)
                did = True
            elif (team.status == TeamStatus.ACTIVE and may_start and pending < cfg.queue_depth
                  and not exhausted):
                self.post_proposal(team.focus, team.id)
                did = True
            if concluded > int(memory.get("reviewed_upto", 0)):
                self.review(reviewed_upto=concluded)
                did = True
        return did

    def critique(self, proposal_id: int) -> str:
        info, view = self._look()
        with self.ctx.store.read() as session:
            proposal = session.get(Proposal, proposal_id)
            assert proposal is not None
            champion = current_champion(session)
            margin = max(2 * champion.metric_std, self.ctx.config.promotion.min_delta) if champion else 0.0
            findings = assess(session, proposal, margin)
            authors = {a.id: a.name for a in session.exec(select(Agent)).all() if a.id is not None}
            pview = proposal_view(proposal, authors)
        draft = self._ask(info, "critique", view, pview, findings)
        if draft is None:  # a critic that cannot answer does not let an unexamined idea spend compute
            draft = CritiqueDraft(verdict="reject", reasons="the critic could not review it (policy error)")
        with self.ctx.store.write() as session:
            draft = scrub.clean_draft(draft, scrub.for_session(session))
            session.add(Critique(proposal_id=proposal_id, author_id=self.agent_id, verdict=draft.verdict,
                                 reasons=draft.reasons))
            post(session, PostKind.CRITIQUE, f"{draft.verdict} #{proposal_id}", draft.reasons,
                 author_id=self.agent_id, team_id=info.team_id, proposal_id=proposal_id)
            remember(session, self.agent_id, **info.memory_update)
        return draft.verdict

    def review(self, **memory: Any) -> list[str]:
        """Read the outcomes and register the directions that keep failing as dead ends."""
        info, view = self._look()
        with self.ctx.store.read() as session:
            evidence = direction_evidence(session)
        drafts = self._ask(info, "review", view, evidence) or []
        registered = []
        with self.ctx.store.write() as session:
            for draft in drafts:
                draft = scrub.clean_draft(draft, scrub.for_session(session))
                exists = session.exec(select(DeadEnd).where(DeadEnd.signature == draft.signature)).first()
                if exists is not None:
                    continue
                session.add(DeadEnd(team_id=info.team_id, author_id=self.agent_id, signature=draft.signature,
                                    description=draft.description, reason=draft.reason,
                                    evidence_trial_ids=draft.evidence_trial_ids))
                post(session, PostKind.DEAD_END, f"dead end: {draft.signature}",
                     f"{draft.reason}; evidence: trials {draft.evidence_trial_ids}",
                     author_id=self.agent_id, team_id=info.team_id, trial_ids=draft.evidence_trial_ids)
                emit(session, "dead_end.registered", "dead_end", None, signature=draft.signature,
                     evidence=draft.evidence_trial_ids)
                registered.append(draft.signature)
            remember(session, self.agent_id, **{**info.memory_update, **memory})
        return registered


class Experimenter(Role):
    def step(self) -> bool:
        """One turn: when idle, with a free slot and budget for a whole replication, claim the head
        of the team's queue and launch it."""
        with self.ctx.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            agent = session.get(Agent, self.agent_id)
            assert agent is not None
            team = session.get(Team, agent.team_id) if agent.team_id else None
            ready = (campaign.status == CampaignStatus.EXECUTION and campaign.accepting_work
                     and agent.status == AgentStatus.IDLE
                     and team is not None and team.status == TeamStatus.ACTIVE
                     and budget.free_slots(session, self.ctx.capacity) > 0
                     and budget.may_start_candidate(session, self.ctx.config))
        if not ready or team is None or team.id is None:
            return False
        proposal_id = self.claim(team.id)
        if proposal_id is None:
            return False
        faults.point("claimed")  # an agent dying between its claim and its launch
        self.launch(proposal_id)
        return True

    def claim(self, team_id: int) -> Optional[int]:
        """Take the head of the team's queue (atomically: two experimenters never share one)."""
        with self.ctx.store.write() as session:
            if not may_claim(session, self.ctx.config):
                return None  # finished, stopping or out of budget since this agent looked
            proposal = session.exec(
                select(Proposal).where(Proposal.team_id == team_id)
                .where(Proposal.status == ProposalStatus.QUEUED)
                .order_by(col(Proposal.id))
            ).first()
            if proposal is None:
                return None
            agent = session.get(Agent, self.agent_id)
            assert agent is not None
            proposals.claim(session, proposal, agent)
            emit(session, "proposal.claimed", "proposal", proposal.id, by=agent.name)
            return proposal.id

    def launch(self, proposal_id: int) -> Optional[int]:
        """Implement the claimed proposal on the current champion and create its first trial."""
        info, view = self._look()
        with self.ctx.store.read() as session:
            proposal = session.get(Proposal, proposal_id)
            champion = current_champion(session)
            assert proposal is not None and champion is not None
            authors = {a.id: a.name for a in session.exec(select(Agent)).all() if a.id is not None}
            pview = proposal_view(proposal, authors)
        impl = self._ask(info, "implement", view, pview)
        if impl is not None:
            with self.ctx.store.read() as session:
                impl = scrub.clean_draft(impl, scrub.for_session(session))
        error = "" if impl is not None else "the experimenter could not implement it (policy error)"
        snapshot = ""
        try:
            if impl is not None:
                # Rebase on the champion as it is now, not as it was when the idea was posted.
                snapshot = build_snapshot(self.ctx.task, self.ctx.folder, champion.snapshot_id,
                                          [Edit.model_validate(e) for e in impl.edits])
        except PatchError as exc:
            error = str(exc)
        with self.ctx.store.write() as session:
            proposal = session.get(Proposal, proposal_id)
            assert proposal is not None
            agent = session.get(Agent, self.agent_id)
            assert agent is not None
            if proposal.status != ProposalStatus.CLAIMED or proposal.claimed_by != self.agent_id:
                return None  # released meanwhile (this agent was taken for hung): no longer ours
            if not takes_work(session):
                # The campaign finished or is stopping: no trial may be created now. The idea goes
                # back to its queue untried (a resumed campaign can still run it).
                proposals.release(proposal)
                session.add(proposal)
                agents.idle(session, agent)
                emit(session, "proposal.released", "proposal", proposal_id, by=agent.name,
                     why="the campaign no longer takes work")
                remember(session, self.agent_id, **info.memory_update)
                return None
            if error:
                error = scrub.for_session(session).scrub(error)
                # The one way a proposal ends: the team counts this failure like any other.
                proposals.conclude(session, proposal, ProposalOutcome.FAILED, reason=error)
                post(session, PostKind.FAILURE, f"#{proposal_id} could not be implemented", error,
                     author_id=self.agent_id, team_id=proposal.team_id, proposal_id=proposal_id)
                remember(session, self.agent_id, **info.memory_update)
                return None
            overrides = {**champion.overrides, **impl.overrides}
            trial = trials.candidate(session, proposal, experimenter_id=self.agent_id, snapshot_id=snapshot,
                                     overrides=overrides,
                                     config_signature=config_signature(snapshot, overrides),
                                     parent_champion_id=champion.id, notes=impl.notes[:4000] or None)
            proposals.start(session, proposal)
            emit(session, "trial.created", "trial", trial.id, proposal=proposal_id, role="candidate")
            remember(session, self.agent_id, current_proposal=proposal_id, **info.memory_update)
            return trial.id
