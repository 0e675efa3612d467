"""Checks of a proposal against the experiment log, run before any compute is spent.

Three kinds of finding, each a line of text starting with its kind:
- `duplicate:` the configuration was already tried, or is already proposed and open;
- `dead_end:` the change moves in a direction the dead-end registry holds;
- `harmful:` the log has a trial in the same direction that did clearly worse than the champion.
Duplicates and dead ends are hard gates (no critique can argue past them); harm is evidence the
critics weigh.
"""

from __future__ import annotations

from collections import defaultdict

from sqlmodel import Session, col, select

from ..execution.results import FailureClass
from ..state.lifecycle import OPEN_PROPOSALS, ProposalOutcome, ProposalStatus, TrialRole, TrialStatus
from ..state.models import DeadEnd, Proposal, Trial

HARD_GATES = ("duplicate:", "dead_end:")


def assess(session: Session, proposal: Proposal, harm_margin: float) -> list[str]:
    findings: list[str] = []
    tried = session.exec(
        select(Trial).where(Trial.config_signature == proposal.config_signature)
        .where(col(Trial.role).in_([TrialRole.BASELINE, TrialRole.CANDIDATE]))
    ).first()
    if tried is not None:
        findings.append(f"duplicate: trial {tried.id} already ran this configuration ({proposal.change_signature})")
    else:
        twin = session.exec(
            select(Proposal).where(Proposal.config_signature == proposal.config_signature)
            .where(Proposal.id != proposal.id).where(col(Proposal.status).in_(OPEN_PROPOSALS))
        ).first()
        if twin is not None:
            findings.append(f"duplicate: proposal {twin.id} already proposes this configuration")
    dead = session.exec(select(DeadEnd).where(col(DeadEnd.signature).in_(proposal.directions))).all()
    for row in dead:
        findings.append(f"dead_end: '{row.signature}' is a registered dead end ({row.reason})")
    if harm_margin > 0:
        for direction, trial_id, delta in _direction_results(session):
            if direction in proposal.directions and delta < -harm_margin:
                findings.append(
                    f"harmful: trial {trial_id} moved '{direction}' and did {-delta:.4g} worse than the champion"
                )
    return findings


def blocking(findings: list[str]) -> list[str]:
    return [f for f in findings if f.startswith(HARD_GATES)]


def _direction_results(session: Session) -> list[tuple[str, int, float]]:
    rows = session.exec(
        select(Trial, Proposal).where(Trial.proposal_id == Proposal.id)
        .where(Trial.role == TrialRole.CANDIDATE).where(Trial.status == TrialStatus.SUCCEEDED)
    ).all()
    out = []
    for trial, proposal in rows:
        if trial.champion_delta is not None and trial.id is not None:
            out.extend((d, trial.id, trial.champion_delta) for d in proposal.directions)
    return out


def direction_evidence(session: Session) -> dict[str, list[int]]:
    """direction -> candidate trials of concluded proposals that did not improve on the champion.

    Failures count only when their class says something about the idea (a crash, bad metrics,
    a timeout); infrastructure failures (node failure, preemption, OOM, cancellation) do not.
    """
    evidence: dict[str, list[int]] = defaultdict(list)
    rows = session.exec(
        select(Trial, Proposal).where(Trial.proposal_id == Proposal.id)
        .where(Trial.role == TrialRole.CANDIDATE).where(Proposal.status == ProposalStatus.DONE)
        .where(col(Proposal.outcome).in_([ProposalOutcome.NOT_PROMOTED, ProposalOutcome.FAILED]))
    ).all()
    for trial, proposal in rows:
        if trial.status == TrialStatus.FAILED:
            try:
                if not FailureClass(trial.failure_class).is_evidence:
                    continue
            except ValueError:
                continue
        for direction in proposal.directions:
            if trial.id is not None:
                evidence[direction].append(trial.id)
    return dict(evidence)
