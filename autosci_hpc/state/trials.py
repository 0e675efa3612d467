"""A trial's life, as verbs: the rows a campaign creates (baseline, candidate, replicates, champion
reruns, a retry) and the moves of `lifecycle.TRIAL` (submitting, submitted, back to created,
finished).

Every verb works inside the caller's write transaction; the caller keeps the re-checks its decision
relies on (a batch is recorded only for trials still `created`, a job id only on a trial still
`submitting`, a result only on a trial still `submitted`). An illegal move raises
`IllegalTransition`.

A trial's *seed set* (the `group` column) names the trials of one configuration over several seeds:
`baseline`, `p<proposal id>` for a candidate and its replicates, and that name plus `RERUN_SUFFIX`
for the champion's reruns next to them.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from sqlmodel import Session

from .lifecycle import TRIAL, TrialRole, TrialStatus
from .models import Champion, Proposal, Trial, utcnow

BASELINE_SET = "baseline"
#: The seed set of the champion's reruns next to a candidate's is the candidate's plus this.
RERUN_SUFFIX = ":champion"


def candidate_set(proposal_id: int) -> str:
    return f"p{proposal_id}"


def _new(**fields: Any) -> Trial:
    return Trial(status=TRIAL.check(None, None, TrialStatus.CREATED), **fields)


def _move(trial: Trial, target: TrialStatus) -> None:
    trial.status = TRIAL.check(trial.id, trial.status, target)


def baseline(session: Session, snapshot_id: str, overrides: dict[str, Any], config_signature: str,
             seeds: int) -> list[Trial]:
    """The starting program on seeds 0..seeds-1."""
    rows = [_new(role=TrialRole.BASELINE.value, group=BASELINE_SET, snapshot_id=snapshot_id,
                 overrides=dict(overrides), config_signature=config_signature, seed=seed)
            for seed in range(seeds)]
    session.add_all(rows)
    return rows


def candidate(session: Session, proposal: Proposal, *, experimenter_id: int, snapshot_id: str,
              overrides: dict[str, Any], config_signature: str, parent_champion_id: Optional[int],
              notes: Optional[str]) -> Trial:
    """A proposal's first run (seed 0, on the champion it was built on); flushed, so it has its id."""
    assert proposal.id is not None
    trial = _new(proposal_id=proposal.id, team_id=proposal.team_id, experimenter_id=experimenter_id,
                 role=TrialRole.CANDIDATE.value, group=candidate_set(proposal.id), snapshot_id=snapshot_id,
                 overrides=overrides, config_signature=config_signature, seed=0,
                 parent_champion_id=parent_champion_id, notes=notes)
    session.add(trial)
    session.flush()
    return trial


def rebased_candidate(session: Session, proposal: Proposal, source: Trial, champion: Champion, *,
                      snapshot_id: str, overrides: dict[str, Any], config_signature: str) -> Trial:
    """The candidate `source`'s change re-applied to a newer `champion`: a new seed-0 candidate in a seed
    set of its own (`p<id>@<champion id>`), so its replicates and champion reruns stay apart from the
    first measurement's; flushed, so it has its id."""
    trial = _new(proposal_id=proposal.id, team_id=source.team_id, experimenter_id=source.experimenter_id,
                 role=TrialRole.CANDIDATE.value, group=f"{source.seed_set.split('@')[0]}@{champion.id}",
                 snapshot_id=snapshot_id, overrides=overrides, config_signature=config_signature, seed=0,
                 parent_champion_id=champion.id, notes=source.notes)
    session.add(trial)
    session.flush()
    return trial


def replicates(session: Session, template: Trial, seeds: Sequence[int], champion: Champion) -> list[Trial]:
    """The candidate `template` again on `seeds` (same program, overrides, provenance)."""
    rows = [_new(proposal_id=template.proposal_id, team_id=template.team_id,
                 experimenter_id=template.experimenter_id, role=TrialRole.REPLICATE.value,
                 group=template.seed_set, snapshot_id=template.snapshot_id, overrides=template.overrides,
                 config_signature=template.config_signature, seed=seed, replicate_of=template.id,
                 parent_champion_id=champion.id, diff=template.diff, notes=template.notes)
            for seed in seeds]
    session.add_all(rows)
    return rows


def champion_reruns(session: Session, template: Trial, seeds: Sequence[int],
                    champion: Champion) -> list[Trial]:
    """The champion on `seeds`, in the seed set beside the candidate `template`'s."""
    rows = [_new(proposal_id=template.proposal_id, team_id=template.team_id,
                 experimenter_id=template.experimenter_id, role=TrialRole.CHAMPION_RERUN.value,
                 group=template.seed_set + RERUN_SUFFIX, snapshot_id=champion.snapshot_id,
                 overrides=dict(champion.overrides), config_signature=champion.config_signature,
                 seed=seed, parent_champion_id=champion.id)
            for seed in seeds]
    session.add_all(rows)
    return rows


def retry(session: Session, lost: Trial) -> Trial:
    """The same trial again on the same seed, after the infrastructure lost it: a new row that names
    the one it replaces (`retry_of`), which in turn names it (`superseded_by`)."""
    row = _new(proposal_id=lost.proposal_id, team_id=lost.team_id, experimenter_id=lost.experimenter_id,
               role=lost.role, group=lost.seed_set, snapshot_id=lost.snapshot_id, overrides=lost.overrides,
               config_signature=lost.config_signature, seed=lost.seed, replicate_of=lost.replicate_of,
               attempt=lost.attempt + 1, retry_of=lost.id)
    session.add(row)
    session.flush()
    lost.superseded_by = row.id
    session.add(lost)
    return row


def submitting(session: Session, trial: Trial, *, folder: str, executor: str) -> None:
    """Recorded as part of a batch about to be handed to the scheduler."""
    _move(trial, TrialStatus.SUBMITTING)
    trial.folder, trial.executor = folder, executor
    session.add(trial)


def submitted(session: Session, trial: Trial, *, job_id: str, array_index: Optional[int]) -> None:
    """The scheduler took it under `job_id`."""
    _move(trial, TrialStatus.SUBMITTED)
    trial.job_id, trial.array_index = job_id, array_index
    trial.submitted_at = utcnow()
    session.add(trial)


def unsubmit(session: Session, trial: Trial) -> None:
    """Its batch was refused, or never reached the scheduler: ready for the next batch again."""
    _move(trial, TrialStatus.CREATED)
    session.add(trial)


def finish(session: Session, trial: Trial, status: TrialStatus | str) -> None:
    """It reported (or its job ended without a valid result): succeeded or failed, now."""
    _move(trial, TrialStatus(status))
    trial.finished_at = utcnow()
    session.add(trial)
