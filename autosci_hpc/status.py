"""What `autosci status`, `log` and `show` print, and the live view of `autosci run`.

Everything here reads the database through a read-only connection, so watching a running
campaign never takes a write lock from the coordinator.
"""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlmodel import Session, col, select

from .agents.views import current_champion
from .state.budget import count_rows
from .coordination.promotion import interval_text
from .state import Store
from .state.lifecycle import PostKind, ProposalStatus, TrialRole, TrialStatus
from .state import conditions as run_conditions
from .state.models import (Agent, Campaign, Champion, Critique, DeadEnd, Event, ForumPost, Proposal, Team,
                           Trial)


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.4g}"


def sandbox_of(session: Session) -> str:
    """The sandbox the campaign's trials run in (its last start), "" for a campaign from before sandboxes."""
    event = session.exec(select(Event).where(Event.kind == "campaign.sandbox")
                         .order_by(col(Event.id).desc())).first()
    return str(event.data.get("sandbox", "")) if event is not None else ""


def sandbox_line(session: Session) -> str:
    mode = sandbox_of(session)
    if mode in ("none", ""):
        return ("sandbox: NONE: trial code runs with your rights and can read the database, other trials, "
                "held-out data and key files")
    return f"sandbox: {mode} (trial code sees only its folder, its data and the Python environment)"


def render_status(store: Store) -> Group:
    with store.read() as session:
        campaign = session.exec(select(Campaign)).one()
        cfg = campaign.config
        budget = cfg.get("budget", {}).get("trials", 0)
        champion = current_champion(session)
        baseline = session.exec(select(Champion).order_by(col(Champion.id))).first()
        running = session.exec(select(Trial).where(Trial.status == TrialStatus.SUBMITTED)
                               .order_by(col(Trial.id))).all()
        teams = session.exec(select(Team).order_by(col(Team.id))).all()
        failed = count_rows(session, Trial, Trial.status == TrialStatus.FAILED)
        rejected = count_rows(session, Proposal, Proposal.status == ProposalStatus.REJECTED)
        dead = count_rows(session, DeadEnd)
        header = Text()
        header.append(f"{campaign.name}", style="bold")
        header.append(f"  task {campaign.task_name}  mode {campaign.mode}  status {campaign.status}\n")
        header.append(f"folder {campaign.folder}\n")
        unprotected = sandbox_of(session) in ("none", "")
        header.append(sandbox_line(session) + "\n", style="bold red" if unprotected else "")
        header.append(f"trials {campaign.trials_submitted}/{budget} submitted, {campaign.trials_finished} finished, "
                      f"{failed} failed; proposals rejected before compute: {rejected}; dead ends: {dead}\n")
        if champion is not None:
            shown = interval_text(champion.metric_mean, champion.metric_std, len(champion.seed_metrics))
            header.append(f"champion #{champion.id}: {shown}"
                          f" (baseline {_fmt(baseline.metric_mean if baseline else None)}, "
                          f"{campaign.promotions} promotion(s))", style="green")
        teams_table = Table(title="teams", expand=False)
        for column in ("team", "focus", "status", "roster", "experiments", "since improvement", "improvements",
                       "queued"):
            teams_table.add_column(column)
        for team in teams:
            queued = count_rows(session, Proposal, Proposal.team_id == team.id,
                                Proposal.status == ProposalStatus.QUEUED)
            teams_table.add_row(team.name, team.focus, team.status, ", ".join(team.roster),
                                str(team.experiments_total), str(team.experiments_since_improvement),
                                str(team.improvements), str(queued))
        trials_table = Table(title="running trials", expand=False)
        for column in ("trial", "group", "role", "seed", "team", "job"):
            trials_table.add_column(column)
        for trial in running[:12]:
            trials_table.add_row(str(trial.id), trial.group, trial.role, str(trial.seed), str(trial.team_id or "—"),
                                 trial.job_id)
    parts: list[Any] = [Panel(header, title="autosci")]
    if teams:
        parts.append(teams_table)
    parts.append(trials_table)
    spend = spend_table(store)
    if spend is not None:
        parts.append(spend)
    return Group(*parts)


def spend_table(store: Store) -> Optional[Table]:
    """LLM spend by role and team (calls, errors, tokens, dollars); None when no LLM call was made."""
    from .llm.accounting import spend_by_role_and_team

    rows = spend_by_role_and_team(store)
    if not rows:
        return None
    with store.read() as session:
        campaign = session.exec(select(Campaign)).first()
    limit = ((campaign.config if campaign else {}).get("budget") or {}).get("llm_dollars")
    total = sum(r.cost_usd for r in rows)
    title = f"LLM spend: ${total:.4f}" + (f" of ${limit:g}" if limit else "")
    table = Table(title=title, expand=False)
    for column in ("role", "team", "calls", "errors", "tokens in", "cached", "tokens out", "USD", "latency s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.role, r.team, str(r.calls), str(r.errors), str(r.tokens_in), str(r.tokens_cached),
                      str(r.tokens_out), f"{r.cost_usd:.4f}", f"{r.latency_s:.1f}")
    table.add_row("all", "", str(sum(r.calls for r in rows)), str(sum(r.errors for r in rows)),
                  str(sum(r.tokens_in for r in rows)), str(sum(r.tokens_cached for r in rows)),
                  str(sum(r.tokens_out for r in rows)), f"{total:.4f}", f"{sum(r.latency_s for r in rows):.1f}",
                  style="bold")
    return table


def log_table(store: Store, team: Optional[str] = None, status: Optional[str] = None,
              proposal: Optional[int] = None, limit: int = 200) -> Table:
    with store.read() as session:
        query = select(Trial).order_by(col(Trial.id))
        if team is not None:
            row = session.exec(select(Team).where(Team.name == team)).first()
            query = query.where(Trial.team_id == (row.id if row else -1))
        if status is not None:
            query = query.where(Trial.status == status)
        if proposal is not None:
            query = query.where(Trial.proposal_id == proposal)
        trials = session.exec(query).all()[-limit:]
        teams = {t.id: t.name for t in session.exec(select(Team)).all()}
    table = Table(title=f"trials ({len(trials)} shown)")
    for column in ("id", "group", "role", "seed", "team", "status", "metric", "Δ champion", "failure", "duration s"):
        table.add_column(column)
    for t in trials:
        table.add_row(str(t.id), t.group, t.role, str(t.seed), teams.get(t.team_id, "—"), t.status, _fmt(t.metric),
                      _fmt(t.champion_delta), t.failure_class or "", _fmt(t.duration_s))
    return table


def show(store: Store, ref: str) -> str:
    """The story of one trial (`12` or `t12`, with its diff against its parent champion), proposal
    (`p3`), team (`team-1`) or champion (`c2`, or `champion` for the current one: its model card)."""
    kind, number = parse_ref(ref)
    with store.read() as session:
        if kind == "team":
            return _show_team(session, ref)
        if kind == "champion":
            return _show_champion(session, number)
        if kind == "proposal":
            assert number is not None
            return _show_proposal(session, number)
        assert number is not None
        return _show_trial(session, number, store.folder)


#: What `autosci show` takes, said when it is given something else.
REF_FORMS = "a trial (12 or t12), a proposal (p3), a champion (c2, or champion for the current one) or a team (team-1)"


def parse_ref(ref: str) -> tuple[str, Optional[int]]:
    """`12`/`t12` -> ("trial", 12), `p3` -> ("proposal", 3), `c2` -> ("champion", 2), `champion` ->
    ("champion", None), `team-1` -> ("team", None); ValueError, in one line, for anything else."""
    text = ref.strip()
    if text.startswith("team-") and len(text) > len("team-"):
        return "team", None
    if text == "champion":
        return "champion", None
    for prefix, kind in (("c", "champion"), ("p", "proposal"), ("t", "trial"), ("", "trial")):
        rest = text[len(prefix):] if text.startswith(prefix) else None
        if rest is not None and rest.isascii() and rest.isdigit() and len(rest) <= 12:
            return kind, int(rest)
    raise ValueError(f"'{ref[:40]}' is not something to show: name {REF_FORMS}")


def _show_champion(session: Session, champion_id: Optional[int]) -> str:
    row = current_champion(session) if champion_id is None else session.get(Champion, champion_id)
    if row is None:
        raise KeyError("no champion yet" if champion_id is None else f"no champion {champion_id}")
    card = row.model_card or f"champion #{row.id}"
    if row.diff is not None and "implemented diff" not in card:  # a card written before diffs were kept
        card += "\nimplemented diff against the previous champion:\n" + (row.diff or "(none)")
    return f"{card}\ntrials {row.trial_ids}"


def _trial_diff(session: Session, t: Trial, folder: Any) -> tuple[Optional[int], str]:
    """The trial's parent champion and diff: as stored, or (a trial still running) from the snapshots."""
    from .coordination import provenance

    parent_id = t.parent_champion_id
    if t.diff is not None:
        return parent_id, t.diff
    parent = session.get(Champion, parent_id) if parent_id is not None else None
    if parent is None or t.role in (TrialRole.BASELINE, TrialRole.CHAMPION_RERUN):
        return parent_id, ""
    return parent_id, provenance.program_diff(folder, parent.snapshot_id, parent.overrides, t.snapshot_id,
                                              t.overrides)


def _show_trial(session: Session, trial_id: int, folder: Any = None) -> str:
    t = session.get(Trial, trial_id)
    if t is None:
        raise KeyError(f"no trial {trial_id}")
    parent_id, diff = _trial_diff(session, t, folder)
    lines = [f"trial {t.id}: {t.role} of group {t.group}, seed {t.seed}, attempt {t.attempt}",
             f"status {t.status}" + (f" ({t.failure_class}: {t.failure_reason})" if t.failure_class else ""),
             f"metric {_fmt(t.metric)}  test metric {_fmt(t.test_metric)}  Δ champion {_fmt(t.champion_delta)}",
             f"snapshot {t.snapshot_id}  overrides {t.overrides}",
             f"executor {t.executor} job {t.job_id}  folder {t.folder}",
             f"run conditions: {run_conditions.describe(t.conditions)}  {t.conditions}",
             f"environment {t.environment}"]
    if t.proposal_id:
        lines.append(f"proposal p{t.proposal_id}")
    if t.notes:
        lines.append(f"experimenter's notes: {t.notes}")
    if parent_id is not None:
        lines += [f"--- diff against champion #{parent_id} ---", diff.rstrip("\n") or "(no change)"]
    if t.log_tail:
        lines += ["--- log tail ---", t.log_tail]
    events = session.exec(select(Event).where(Event.entity == "trial").where(Event.entity_id == t.id)
                          .order_by(col(Event.id))).all()
    lines += [f"{e.created_at:%H:%M:%S} {e.kind} {e.data}" for e in events]
    return "\n".join(lines)


def _show_proposal(session: Session, proposal_id: int) -> str:
    p = session.get(Proposal, proposal_id)
    if p is None:
        raise KeyError(f"no proposal {proposal_id}")
    author = session.get(Agent, p.author_id)
    lines = [f"proposal p{p.id} by {author.name if author else '?'} ({p.focus}): {p.title}",
             f"status {p.status}" + (f", outcome {p.outcome}" if p.outcome else "")
             + (f" — {p.reject_reason}" if p.reject_reason else ""),
             f"change {p.change_signature}", f"rationale: {p.rationale}",
             f"expected: {p.expected_effect}", f"falsified if: {p.falsification}"]
    for c in session.exec(select(Critique).where(Critique.proposal_id == p.id)).all():
        critic = session.get(Agent, c.author_id)
        lines.append(f"  critique by {critic.name if critic else '?'}: {c.verdict} — {c.reasons}")
    for t in session.exec(select(Trial).where(Trial.proposal_id == p.id).order_by(col(Trial.id))).all():
        lines.append(f"  trial {t.id} seed {t.seed}: {t.status} {_fmt(t.metric)} {t.failure_class}")
    return "\n".join(lines)


#: The forum posts `autosci show TEAM` lists: what changed the team (rosters, discussions, promotions,
#: dead ends), not every critique.
TEAM_POSTS = (PostKind.ROSTER, PostKind.DISCUSSION, PostKind.PROMOTION, PostKind.DEAD_END)


def _show_team(session: Session, name: str) -> str:
    team = session.exec(select(Team).where(Team.name == name)).first()
    if team is None:
        raise KeyError(f"no team {name}")
    lines = [f"{team.name}: focus {team.focus}, status {team.status}, reopened {team.reopened}x",
             f"hypothesis: {team.hypothesis}", f"roster: {', '.join(team.roster)}",
             f"experiments {team.experiments_total}, since improvement {team.experiments_since_improvement}, "
             f"improvements {team.improvements}"]
    for post in session.exec(select(ForumPost).where(ForumPost.team_id == team.id)
                             .where(col(ForumPost.kind).in_(TEAM_POSTS))
                             .order_by(col(ForumPost.id))).all():
        lines.append(f"  [{post.kind}] {post.title}")
    return "\n".join(lines)
