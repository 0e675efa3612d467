"""The coordinator's side of trials: observe result files and job states, ingest exactly once.

A trial has succeeded only when its own result file says so. When the scheduler reports the job
ended and no valid result has appeared, the trial is given a grace window (shared filesystems show
files late) and then failed with a class. All outstanding jobs are asked about in one call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from sqlmodel import Session, select

from .. import scrub
from ..state import Store, emit, trials
from ..state import conditions as run_conditions
from ..state.lifecycle import FINISHED_TRIALS, TrialStatus
from ..state.models import Campaign, Trial, utcnow
from .executors import TrialExecutor
from .results import ResultFileError, TrialResult, read_result


@dataclass
class Observation:
    """What became known about one outstanding trial."""

    trial_id: int
    result: Optional[TrialResult] = None
    failure_class: str = ""
    reason: str = ""


@dataclass
class Monitor:
    store: Store
    executor: TrialExecutor
    grace_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    #: trial id -> when its job was first seen ended without a valid result.
    _ended_at: dict[int, float] = field(default_factory=dict)

    def outstanding(self) -> list[Trial]:
        with self.store.read() as session:
            return list(session.exec(select(Trial).where(Trial.status == TrialStatus.SUBMITTED)).all())

    def observe(self) -> list[Observation]:
        trials = self.outstanding()
        found: list[Observation] = []
        waiting: dict[int, tuple[Trial, str]] = {}
        for trial in trials:
            assert trial.id is not None
            try:
                result = read_result(Path(trial.folder), trial.id)
                problem = ""
            except ResultFileError as exc:
                result, problem = None, str(exc)
            if result is not None:
                found.append(Observation(trial.id, result=result))
                self._ended_at.pop(trial.id, None)
            else:
                waiting[trial.id] = (trial, problem)
        if not waiting:
            return found
        job_ids = sorted({t.job_id for t, _ in waiting.values() if t.job_id})
        states = self.executor.states(job_ids)
        now = self.clock()
        for trial_id, (trial, problem) in waiting.items():
            state = states.get(trial.job_id)
            if state is None or not state.terminal:
                continue
            since = self._ended_at.setdefault(trial_id, now)
            if now - since < self.grace_s:
                continue
            self._ended_at.pop(trial_id, None)
            if problem:
                reason = f"job ended ({state.raw}) with an invalid result file: {problem}"
                cls = state.failure_class if state.failure_class not in ("", "no_result") else "no_result"
            else:
                reason = f"job ended ({state.raw}) without a result file after {self.grace_s:g} s grace"
                cls = state.failure_class or "no_result"
            found.append(Observation(trial_id, failure_class=cls, reason=reason))
        return found


#: The software record a result carries (`trial.capture_environment`): its text fields, and how many
#: package versions are kept (strings are clipped as the run conditions' are, to MAX_CHARS).
_ENVIRONMENT_TEXT = ("python", "platform", "slurm_job_id", "slurm_array_task_id")
_ENVIRONMENT_PACKAGES = 64


def bounded_environment(raw: object) -> dict[str, Any]:
    """A result's environment as it may be stored: the known fields only, strings clipped, at most
    64 package versions. The file sits in the trial's folder, within reach of trial code: whatever it
    holds is cut to size here and never raises."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {k: raw[k][:run_conditions.MAX_CHARS] for k in _ENVIRONMENT_TEXT
                           if isinstance(raw.get(k), str)}
    packages = raw.get("packages")
    if isinstance(packages, dict):
        out["packages"] = {str(k)[:run_conditions.MAX_CHARS]: v[:run_conditions.MAX_CHARS]
                           for k, v in list(packages.items())[:_ENVIRONMENT_PACKAGES] if isinstance(v, str)}
    return out


def ingest(session: Session, obs: Observation) -> Optional[Trial]:
    """Record an observation on its trial, once. Returns the updated trial, or None if the trial
    was already ingested (a re-read result file, a requeued attempt) — nothing is counted twice."""
    trial = session.get(Trial, obs.trial_id)
    if trial is None or trial.status != TrialStatus.SUBMITTED:
        return None
    result = obs.result
    if result is not None:
        # What the program printed is hostile: it may hold held-out values (this trial's included) or
        # a key; it is scrubbed before it is stored, since from here it reaches prompts and reports.
        clean = scrub.for_session(session, extra=[result.test_metric], public=[result.metric])
        # A result names its trial succeeded or failed; anything else is read as a failure.
        status = result.status if result.status in FINISHED_TRIALS else TrialStatus.FAILED
        trials.finish(session, trial, status)
        trial.metric = result.metric
        trial.test_metric = result.test_metric
        trial.metrics = {k: clean.scrub_value(v) for k, v in result.metrics.items()}
        trial.failure_class = result.failure_class
        trial.failure_reason = clean.scrub(result.failure_reason)
        trial.log_tail = clean.scrub(result.log_tail)
        scrub.record(session, clean, "trial", trial.id, "the trial's log tail, failure reason or metrics")
        # The run conditions are one record of their own (a result written by an older node kept them in
        # its environment): cleaned here, since the node is where trial code runs.
        trial.conditions = run_conditions.upgrade(result.conditions, result.environment)
        trial.environment = bounded_environment(result.environment)
        trial.duration_s = round(result.finished_at - result.started_at, 3)
    else:
        trials.finish(session, trial, TrialStatus.FAILED)
        trial.failure_class = obs.failure_class
        trial.failure_reason = obs.reason
    session.add(trial)
    campaign = session.exec(select(Campaign)).one()
    campaign.trials_finished += 1
    campaign.updated_at = utcnow()
    session.add(campaign)
    emit(session, f"trial.{trial.status}", "trial", trial.id, metric=trial.metric,
         failure_class=trial.failure_class)
    return trial
