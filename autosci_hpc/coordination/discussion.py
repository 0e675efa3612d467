"""The discussion phase: proposals on the forum, peer critique, and teams formed around hypotheses.

Weak proposals die here, before any compute: a duplicate of a tried configuration or a match in
the dead-end registry is refused outright, and the critics reject what the evidence says is
harmful. The proposals that survive decide which hypotheses teams form around.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from sqlmodel import col, select

from ..agents.evidence import assess, blocking
from ..agents.roles import Analyst, Context, Experimenter, agent_info, post, remember
from ..agents.views import build_view, proposal_view
from ..state import emit
from ..state.models import Agent, Critique, Proposal, Team, utcnow


def pick_critics(author: Analyst, analysts: Sequence[Analyst], k: int, turn: int) -> list[Analyst]:
    """k peers other than the author, rotating so the load is shared."""
    peers = [a for a in analysts if a.agent_id != author.agent_id]
    if not peers:
        return []
    start = turn % len(peers)
    rotated = list(peers[start:]) + list(peers[:start])
    return rotated[: min(k, len(peers))]


def review_proposal(ctx: Context, proposal_id: int, critics: Sequence[Analyst],
                    approved_status: str = "approved") -> bool:
    """Critiques, then the verdict: approved only with no hard gate and more approvals than rejections."""
    for critic in critics:
        critic.critique(proposal_id)
    with ctx.store.write() as session:
        proposal = session.get(Proposal, proposal_id)
        assert proposal is not None
        if proposal.status != "posted":
            return False
        gates = blocking(assess(session, proposal, harm_margin=0.0))
        critiques = session.exec(select(Critique).where(Critique.proposal_id == proposal_id)).all()
        approvals = sum(c.verdict == "approve" for c in critiques)
        rejections = len(critiques) - approvals
        # With no peer to ask (a one-analyst campaign) only the hard gates apply.
        if gates or (critiques and approvals <= rejections):
            proposal.status = "rejected"
            proposal.reject_reason = "; ".join(gates) or "; ".join(
                c.reasons for c in critiques if c.verdict == "reject") or "no critic approved it"
        else:
            proposal.status = approved_status
        proposal.updated_at = utcnow()
        session.add(proposal)
        emit(session, f"proposal.{'rejected' if proposal.status == 'rejected' else 'approved'}", "proposal",
             proposal_id, approvals=approvals, rejections=rejections, reason=proposal.reject_reason)
        return proposal.status != "rejected"


def discussion_round(ctx: Context, authors: Sequence[Analyst], critics: Sequence[Analyst],
                     focus_of: Callable[[Analyst], Optional[str]], team_id: Optional[int],
                     round_no: int, turn: int = 0) -> list[int]:
    approved = []
    for i, author in enumerate(authors):
        proposal_id = author.post_proposal(focus_of(author), team_id, round_no)
        if proposal_id is None:
            continue
        chosen = pick_critics(author, critics, ctx.config.coordination.critics_per_proposal, turn + i)
        if review_proposal(ctx, proposal_id, chosen):
            approved.append(proposal_id)
    return approved


def form_teams(ctx: Context, analysts: Sequence[Analyst], experimenters: Sequence[Experimenter],
               approved: list[int]) -> list[int]:
    """Teams around the best-supported hypotheses; their rosters written to the state and forum."""
    cfg = ctx.config.coordination
    planner = analysts[0]
    with ctx.store.read() as session:
        agent = session.get(Agent, planner.agent_id)
        assert agent is not None
        info = agent_info(session, agent)
        view = build_view(session, ctx.task)
        authors = {a.id: a.name for a in session.exec(select(Agent)).all() if a.id is not None}
        rows = session.exec(select(Proposal).where(col(Proposal.id).in_(approved))).all()
        views = [proposal_view(p, authors) for p in rows]
        author_focus = {p.author_id: p.focus for p in rows}
    drafts = ctx.policy.plan_teams(info, view, views, cfg.teams)
    with ctx.store.write() as session:
        teams: list[Team] = []
        for i, draft in enumerate(drafts):
            team = Team(name=f"team-{i + 1}", hypothesis=draft.hypothesis, focus=draft.focus)
            session.add(team)
            teams.append(team)
        session.flush()
        # Analysts join the team whose hypothesis they argued for; the rest fill the gaps.
        seats: dict[int, list[str]] = {t.id or 0: [] for t in teams}
        order = sorted(analysts, key=lambda a: 0 if any(author_focus.get(a.agent_id) == t.focus for t in teams) else 1)
        for analyst in order:
            row = session.get(Agent, analyst.agent_id)
            assert row is not None
            preferred = [t for t in teams if t.focus == author_focus.get(analyst.agent_id)]
            candidates = preferred + [t for t in teams if t not in preferred]
            team = next(t for t in candidates
                        if len(seats[t.id or 0]) < cfg.analysts_per_team or t is candidates[-1])
            seats[team.id or 0].append(row.name)
            row.team_id = team.id
            session.add(row)
        for j, experimenter in enumerate(experimenters):
            row = session.get(Agent, experimenter.agent_id)
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
                proposal.team_id = team.id
                proposal.status = "queued"
                session.add(proposal)
            post(session, "roster", f"{team.name} formed around '{team.focus}'",
                 f"hypothesis: {team.hypothesis}\nroster: {', '.join(team.roster)}",
                 author_id=planner.agent_id, team_id=team.id)
            emit(session, "team.formed", "team", team.id, focus=team.focus, roster=team.roster)
        remember(session, planner.agent_id)
        return [t.id for t in teams if t.id is not None]


def reorganize(ctx: Context, team_id: int, authors: Sequence[Analyst], critics: Sequence[Analyst],
               taken: set[str], turn: int) -> str:
    """A stagnating team re-opens discussion, and may take up a different hypothesis."""
    with ctx.store.write() as session:
        team = session.get(Team, team_id)
        assert team is not None
        team.status = "discussing"
        team.reopened += 1
        session.add(team)
        post(session, "discussion", f"{team.name} re-opens discussion",
             f"the last {team.experiments_since_improvement} experiments on '{team.focus}' brought no "
             f"improvement (stagnation window {ctx.config.coordination.stagnation_window})", team_id=team_id)
        emit(session, "team.discussion_reopened", "team", team_id, focus=team.focus,
             since_improvement=team.experiments_since_improvement)
        old_focus = team.focus
    approved = discussion_round(ctx, authors, critics, lambda a: None, team_id, round_no=-1, turn=turn)
    with ctx.store.read() as session:
        agent = session.get(Agent, authors[0].agent_id)
        assert agent is not None
        info = agent_info(session, agent)
        view = build_view(session, ctx.task)
        authors_by_id = {a.id: a.name for a in session.exec(select(Agent)).all() if a.id is not None}
        views = [proposal_view(p, authors_by_id) for p in
                 session.exec(select(Proposal).where(col(Proposal.id).in_(approved))).all()]
    drafts = ctx.policy.plan_teams(info, view, views, n_teams=len(ctx.task.groups()))
    free = [d for d in drafts if d.focus not in taken] or drafts
    choice = free[0]
    with ctx.store.write() as session:
        team = session.get(Team, team_id)
        assert team is not None
        for proposal in session.exec(select(Proposal).where(Proposal.team_id == team_id)
                                     .where(Proposal.status == "queued")).all():
            if proposal.focus != choice.focus:
                proposal.status = "rejected"
                proposal.reject_reason = f"withdrawn: {team.name} reorganized around '{choice.focus}'"
                session.add(proposal)
        for proposal in session.exec(select(Proposal).where(col(Proposal.id).in_(approved))).all():
            proposal.status = "queued" if proposal.focus == choice.focus else "approved"
            session.add(proposal)
        team.focus = choice.focus
        team.hypothesis = choice.hypothesis
        team.status = "active"
        team.experiments_since_improvement = 0
        session.add(team)
        verb = "keeps" if choice.focus == old_focus else f"moves from '{old_focus}' to"
        post(session, "roster", f"{team.name} {verb} '{choice.focus}'",
             f"hypothesis: {choice.hypothesis}\nroster: {', '.join(team.roster)}", team_id=team_id)
        emit(session, "team.reorganized", "team", team_id, old_focus=old_focus, focus=choice.focus)
        return choice.focus
