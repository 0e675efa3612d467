"""The discussion: proposals settled by their critiques, rounds, teams, and re-opened discussions.

Analysts post and critique in their own loops (`Analyst.step`); what is decided here is what no
single agent owns. A proposal is settled once every critic it named has answered: a duplicate of a
tried configuration or a match in the dead-end registry is refused outright (no critique can argue
past it); otherwise it needs more approvals than rejections. The discussion phase advances round by
round until every analyst has posted and every proposal is settled, and teams then form around the
best-supported hypotheses. A stagnating team re-opens discussion the same way and may take up
another hypothesis.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from .. import scrub
from ..agents.evidence import assess, blocking
from ..agents.policy import PolicyError
from ..agents.roles import Context, agent_info, post, remember
from ..agents.views import build_view, proposal_view
from ..state import campaigns, emit, proposals, teams as team_rows
from ..state.lifecycle import CampaignStatus, PostKind, ProposalStatus, TeamStatus
from ..state.models import Agent, Campaign, Critique, Proposal, Team


def _team_plan(ctx: Context, info: Any, view: Any, views: list[Any], n_teams: int) -> list[Any]:
    """The hypotheses the convening analyst chooses; if its policy fails, the context's fallback
    policy's plan from the same proposals (the coordinator gives the offline ranking, most-supported
    first), so a team is never left without a focus."""
    try:
        drafts = ctx.policy.plan_teams(info, view, views, n_teams)
    except PolicyError as exc:
        with ctx.store.write() as session:
            emit(session, "agent.policy_error", "agent", info.id, decision="plan_teams", error=str(exc)[:500])
        drafts = []
    if drafts:
        return drafts
    if ctx.fallback is None:
        raise RuntimeError("no team plan: the policy gave none and the context has no fallback policy")
    return ctx.fallback.plan_teams(info, view, views, n_teams)


def settle(ctx: Context) -> int:
    """Decide every posted proposal whose critics have all answered; returns how many."""
    decided = 0
    with ctx.store.write() as session:
        for proposal in session.exec(select(Proposal).where(Proposal.status == ProposalStatus.POSTED)).all():
            critiques = session.exec(select(Critique).where(Critique.proposal_id == proposal.id)).all()
            if not set(proposal.critics) <= {c.author_id for c in critiques}:
                continue
            gates = blocking(assess(session, proposal, harm_margin=0.0))
            approvals = sum(c.verdict == "approve" for c in critiques)
            rejections = len(critiques) - approvals
            # With no peer to ask (a one-analyst campaign) only the hard gates apply.
            if gates or (critiques and approvals <= rejections):
                proposals.reject(session, proposal, "; ".join(gates) or "; ".join(
                    c.reasons for c in critiques if c.verdict == "reject") or "no critic approved it")
            else:
                # Into its team's queue, or approved until teams (re)form or a worker is given it.
                proposals.accept(session, proposal)
            rejected = proposal.status == ProposalStatus.REJECTED
            emit(session, f"proposal.{'rejected' if rejected else 'approved'}", "proposal",
                 proposal.id, approvals=approvals, rejections=rejections, reason=proposal.reject_reason)
            decided += 1
    return decided


def _posted(session: Session, *where: object) -> int:
    query = select(Proposal).where(Proposal.status == ProposalStatus.POSTED)
    for clause in where:
        query = query.where(clause)  # type: ignore[arg-type]
    return len(session.exec(query).all())


def advance_discussion(ctx: Context) -> bool:
    """Next round once every analyst posted and all is settled; teams after the last. True on change."""
    with ctx.store.read() as session:
        campaign = session.exec(select(Campaign)).one()
        analysts = session.exec(select(Agent).where(Agent.role == "analyst")).all()
        done = all(int(a.memory.get("round_posted", -1)) >= campaign.discussion_round for a in analysts)
        if not done or _posted(session):
            return False
    if campaign.discussion_round + 1 < ctx.config.coordination.discussion_rounds:
        with ctx.store.write() as session:
            row = session.exec(select(Campaign)).one()
            row.discussion_round += 1
            session.add(row)
            emit(session, "discussion.round", "campaign", row.id, round=row.discussion_round)
        return True
    form_teams(ctx)
    return True


def form_teams(ctx: Context) -> list[int]:
    """Teams around the best-supported hypotheses; their rosters written to the state and forum."""
    cfg = ctx.config.coordination
    with ctx.store.read() as session:
        agents = session.exec(select(Agent).order_by(col(Agent.id))).all()
        analysts = [a for a in agents if a.role == "analyst"]
        experimenters = [a for a in agents if a.role == "experimenter"]
        # The first analyst convenes the teams (writes the plan in its name); in central mode the
        # word "planner" means that mode's one agent, not this one.
        convener = analysts[0]
        info = agent_info(session, convener)
        view = build_view(session, ctx.task)
        names = {a.id: a.name for a in agents if a.id is not None}
        rows = session.exec(select(Proposal).where(Proposal.status == ProposalStatus.APPROVED)
                            .where(col(Proposal.team_id).is_(None))).all()
        approved = [p.id for p in rows if p.id is not None]
        views = [proposal_view(p, names) for p in rows]
        author_focus = {p.author_id: p.focus for p in rows}
    drafts = _team_plan(ctx, info, view, views, cfg.teams)
    with ctx.store.write() as session:
        teams: list[Team] = []
        for i, draft in enumerate(drafts):
            hypothesis = scrub.for_session(session).scrub(draft.hypothesis)
            team = team_rows.form(session, f"team-{i + 1}", hypothesis, draft.focus)
            teams.append(team)
        session.flush()
        # Analysts join the team whose hypothesis they argued for; the rest fill the gaps.
        seats: dict[int, list[str]] = {t.id or 0: [] for t in teams}
        order = sorted(analysts, key=lambda a: 0 if any(author_focus.get(a.id) == t.focus for t in teams) else 1)
        for analyst in order:
            row = session.get(Agent, analyst.id)
            assert row is not None
            preferred = [t for t in teams if t.focus == author_focus.get(analyst.id)]
            candidates = preferred + [t for t in teams if t not in preferred]
            team = next(t for t in candidates
                        if len(seats[t.id or 0]) < cfg.analysts_per_team or t is candidates[-1])
            seats[team.id or 0].append(row.name)
            row.team_id = team.id
            session.add(row)
        for j, experimenter in enumerate(experimenters):
            row = session.get(Agent, experimenter.id)
            assert row is not None
            team = teams[j % len(teams)]
            seats[team.id or 0].append(row.name)
            row.team_id = team.id
            session.add(row)
        for team in teams:
            team.roster = seats[team.id or 0]
            session.add(team)
            # The team's queue starts with the approved proposals of its hypothesis.
            for proposal in session.exec(select(Proposal).where(col(Proposal.id).in_(approved))
                                         .where(Proposal.focus == team.focus)).all():
                proposals.queue(session, proposal, team_id=team.id)
            post(session, PostKind.ROSTER, f"{team.name} formed around '{team.focus}'",
                 f"hypothesis: {team.hypothesis}\nroster: {', '.join(team.roster)}",
                 author_id=convener.id, team_id=team.id)
            emit(session, "team.formed", "team", team.id, focus=team.focus, roster=team.roster)
        campaign = session.exec(select(Campaign)).one()
        campaigns.enter(session, campaign, CampaignStatus.EXECUTION)
        emit(session, "campaign.execution", "campaign", campaign.id, approved=len(approved))
        assert convener.id is not None
        remember(session, convener.id)
        return [t.id for t in teams if t.id is not None]


def reopen_stagnating(ctx: Context) -> list[int]:
    """Teams whose last N experiments brought no improvement re-open discussion."""
    window = ctx.config.coordination.stagnation_window
    reopened = []
    with ctx.store.write() as session:
        for team in session.exec(select(Team).where(Team.status == TeamStatus.ACTIVE)).all():
            if team.experiments_since_improvement < window:
                continue
            team_rows.reopen(session, team)
            post(session, PostKind.DISCUSSION, f"{team.name} re-opens discussion",
                 f"the last {team.experiments_since_improvement} experiments on '{team.focus}' brought no "
                 f"improvement (stagnation window {window})", team_id=team.id)
            emit(session, "team.discussion_reopened", "team", team.id, focus=team.focus,
                 since_improvement=team.experiments_since_improvement)
            reopened.append(team.id or 0)
    return reopened


def conclude_reopened(ctx: Context) -> list[str]:
    """Teams whose re-opened discussion is complete take up the best-supported hypothesis."""
    changed = []
    with ctx.store.read() as session:
        teams = session.exec(select(Team).where(Team.status == TeamStatus.DISCUSSING)).all()
        others = {t.id: t.focus
                  for t in session.exec(select(Team).where(Team.status == TeamStatus.ACTIVE)).all()}
    for team in teams:
        with ctx.store.read() as session:
            members = session.exec(select(Agent).where(Agent.team_id == team.id)
                                   .where(Agent.role == "analyst").order_by(col(Agent.id))).all()
            if any(int(a.memory.get("reopen_posted", 0)) < team.reopened for a in members):
                continue
            if _posted(session, Proposal.team_id == team.id):
                continue
            names = {a.id: a.name for a in session.exec(select(Agent)).all() if a.id is not None}
            rows = session.exec(select(Proposal).where(Proposal.team_id == team.id)
                                .where(Proposal.status == ProposalStatus.APPROVED)
                                .where(Proposal.reopened == team.reopened)).all()
            views = [proposal_view(p, names) for p in rows]
            info = agent_info(session, members[0]) if members else None
            view = build_view(session, ctx.task)
        if info is None:
            continue
        drafts = _team_plan(ctx, info, view, views, len(ctx.task.groups()))
        taken = {f for i, f in others.items() if i != team.id}
        choice = ([d for d in drafts if d.focus not in taken] or drafts)[0]
        with ctx.store.write() as session:
            row = session.get(Team, team.id)
            assert row is not None
            old_focus = row.focus
            for proposal in session.exec(select(Proposal).where(Proposal.team_id == team.id)
                                         .where(col(Proposal.status).in_([ProposalStatus.QUEUED,
                                                                          ProposalStatus.APPROVED]))).all():
                if proposal.focus == choice.focus:
                    proposals.queue(session, proposal)
                elif proposal.status == ProposalStatus.QUEUED:
                    proposals.reject(session, proposal,
                                     f"withdrawn: {row.name} reorganized around '{choice.focus}'")
            hypothesis = scrub.for_session(session).scrub(choice.hypothesis)
            team_rows.reorganize(session, row, choice.focus, hypothesis)
            verb = "keeps" if choice.focus == old_focus else f"moves from '{old_focus}' to"
            post(session, PostKind.ROSTER, f"{row.name} {verb} '{choice.focus}'",
                 f"hypothesis: {choice.hypothesis}\nroster: {', '.join(row.roster)}", team_id=row.id)
            emit(session, "team.reorganized", "team", row.id, old_focus=old_focus, focus=choice.focus)
            others[row.id] = choice.focus
            changed.append(choice.focus)
    return changed
