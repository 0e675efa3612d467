"""Budget and slot checks, shared by the coordinator and the agents (in or out of process).

All of it reads stored counters, never recounts derived data: trials submitted, the wall-clock
seconds summed over coordinator runs. It needs only the config and the stored records, so it sits
with them, below the roles that ask it. How many trials may be outstanding at once is the
executor's figure (`TrialExecutor.capacity`): callers pass it in, nothing here recomputes it.
"""

from __future__ import annotations

import re
from typing import Optional

from sqlmodel import Session, col, func, select

from ..config import CampaignConfig
from . import conditions
from .lifecycle import IN_FLIGHT_TRIALS, ProposalStatus, TrialStatus
from .models import Campaign, LLMCall, Proposal, Trial

#: Trials that hold an executor slot: being sent to the scheduler, or there.
AT_EXECUTOR = IN_FLIGHT_TRIALS
#: Trials created and waiting for the coordinator's next batch: each will take a slot.
WAITING = (TrialStatus.CREATED,)


def wall_clock_spent(campaign: Campaign, config: CampaignConfig, extra_s: float = 0.0) -> bool:
    return campaign.wall_clock_s + extra_s > config.budget.wall_clock_min * 60


def count_rows(session: Session, model: type, *where: object) -> int:
    """SELECT COUNT(*) FROM model WHERE all of `where`."""
    query = select(func.count()).select_from(model)
    for clause in where:
        query = query.where(clause)  # type: ignore[arg-type]
    return int(session.exec(query).one())


def gpus_per_trial(config: CampaignConfig) -> float:
    """GPUs one trial holds: on SLURM the count in `executor.slurm.gres` ("gpu:h100:2", "gpu:1") or the
    task's `gpus`; locally the task's `gpus` divided among the trials sharing them; else 0."""
    task_gpus = config.task.gpus or 0
    if config.executor.kind != "slurm":
        return task_gpus / config.executor.local.trials_per_gpu if task_gpus else 0.0
    match = re.search(r"gpu(?::[^:,]+)?:(\d+)", config.executor.slurm.gres)
    gres = int(match.group(1)) if match else (1 if config.executor.slurm.gres.startswith("gpu") else 0)
    return float(gres or task_gpus)


def device_hours_of(duration_s: float, gpus: float) -> float:
    """The accelerator time one trial consumed. A CPU-only trial counts as one slot, so the
    `budget.gpu_hours` cap and the GPU-hours axis of the analysis also mean something on CPU tasks."""
    return duration_s * (gpus if gpus > 0 else 1.0) / 3600.0


def gpu_hours_used(session: Session, config: CampaignConfig) -> float:
    """GPU-hours (slot-hours without GPUs) of every finished trial, from their recorded durations and
    the GPUs each was charged with (its run conditions; the config's count for trials without one)."""
    default = gpus_per_trial(config)
    held = func.json_extract(Trial.conditions, f"$.{conditions.GPUS}")
    rows = session.exec(select(func.coalesce(held, -1.0), func.sum(Trial.duration_s))
                        .where(col(Trial.duration_s).is_not(None)).group_by(held)).all()
    return sum(device_hours_of(float(total or 0.0), default if float(gpus) < 0 else float(gpus))
               for gpus, total in rows)


def gpu_hours_spent(session: Session, config: CampaignConfig) -> bool:
    """The GPU-hour budget, when set, is spent. Running trials are not counted until they finish,
    so a campaign may pass the cap by at most the trials outstanding when it was reached."""
    return config.budget.gpu_hours is not None and gpu_hours_used(session, config) >= config.budget.gpu_hours


def may_start_candidate(session: Session, config: CampaignConfig, extra_s: float = 0.0) -> bool:
    """A new candidate may start only if its full replication still fits in the budget."""
    campaign = session.exec(select(Campaign)).one()
    if (not campaign.accepting_work or wall_clock_spent(campaign, config, extra_s) or llm_spent(session, config)
            or gpu_hours_spent(session, config) or failing_streak(session, config) is not None):
        return False
    return trials_room(session, config, campaign) >= config.promotion.seeds


def failing_streak(session: Session, config: CampaignConfig) -> Optional[Trial]:
    """The last trial of a run of `budget.failures_in_a_row` failed trials, the most recent to finish (by
    creation order; cancelled ones aside), or None: no such run, or the limit is off."""
    limit = config.budget.failures_in_a_row
    if limit is None:
        return None
    # `status || ''` keeps SQLite off the status index: it reads the newest rows backwards and stops at
    # `limit` finished ones, whatever the size of the log (the index would sort every finished trial).
    recent = session.exec(
        select(Trial)
        .where((col(Trial.status) + "").in_([TrialStatus.SUCCEEDED, TrialStatus.FAILED]),
               Trial.failure_class != "cancelled")
        .order_by(col(Trial.id).desc())
        .limit(limit)).all()
    if len(recent) < limit or any(t.status != TrialStatus.FAILED for t in recent):
        return None
    return recent[0]


def trials_room(session: Session, config: CampaignConfig, campaign: Optional[Campaign] = None) -> int:
    """Trials that may still be created without eating into what candidates have reserved: the trial
    budget less the trials submitted, those to come, and the replication each candidate at its screen
    (its seeds after the first) or claimed and not yet launched (all its seeds) may still need."""
    campaign = campaign or session.exec(select(Campaign)).one()
    seeds = config.promotion.seeds
    # Created or being submitted (recorded, sbatch not yet confirmed): both are trials to come.
    created = count_rows(session, Trial, col(Trial.status).in_([TrialStatus.CREATED, TrialStatus.SUBMITTING]))
    screening = count_rows(session, Proposal, Proposal.status == ProposalStatus.RUNNING)
    # Assigned but not yet launched (central mode's workers launch in their own step): a whole replication.
    claimed = count_rows(session, Proposal, Proposal.status == ProposalStatus.CLAIMED)
    committed = campaign.trials_submitted + created + (seeds - 1) * screening + seeds * claimed
    return config.budget.trials - committed


def llm_spent(session: Session, config: CampaignConfig) -> bool:
    """The LLM dollar budget, when set, is spent (the policies also refuse a call that would pass it)."""
    if config.budget.llm_dollars is None:
        return False
    spent = session.exec(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0))).one()
    return float(spent) >= config.budget.llm_dollars


def free_slots(session: Session, capacity: int) -> int:
    """Slots of the executor's `capacity` that no trial holds or waits to take: whether an agent may
    create one more trial. A created trial counts, since the coordinator's next batch sends it."""
    return capacity - count_rows(session, Trial, col(Trial.status).in_([*WAITING, *AT_EXECUTOR]))


def submit_room(session: Session, capacity: int) -> int:
    """How many created trials the coordinator may send now: the slots no trial at the executor holds.
    The same count as `free_slots`, seen from the other side (the created trials are what it sends)."""
    return capacity - count_rows(session, Trial, col(Trial.status).in_(AT_EXECUTOR))
