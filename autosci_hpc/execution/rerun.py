"""Re-run one trial from the log, in a fresh folder, without touching the campaign database.

Every path handed to the trial (its folder, the snapshot, the data) is absolute: the program runs
in its own work folder, so a path relative to where `autosci rerun` was started would miss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

from sqlmodel import select

from ..config import CampaignConfig
from ..layout import CampaignLayout
from ..state import Store
from ..state.models import Campaign, Trial
from ..task import TaskSpec
from .executors import TrialExecutor
from .registry import make_executor
from .results import ResultFileError, TrialResult, read_result
from .sandbox import campaign_sandbox
from .trial import TrialRequest, trial_request


@dataclass
class Rerun:
    trial: Trial
    seed: int
    folder: Path
    result: Optional[TrialResult]
    failure: str = ""

    @property
    def identical(self) -> bool:
        return self.result is not None and self.result.metric == self.trial.metric and self.seed == self.trial.seed

    @property
    def ran(self) -> bool:
        """Whether the rerun produced a metric (it may still differ from the logged one)."""
        return self.result is not None and self.result.metric is not None

    @property
    def reason(self) -> str:
        """Why the rerun produced no metric, in one line ("" when it did)."""
        if self.result is None:
            return self.failure or "no result"
        if self.result.metric is None:
            detail = " ".join(self.result.failure_reason.split())[:300]
            last = [line.strip() for line in self.result.log_tail.splitlines() if line.strip()][-1:]
            if last:  # the program's own last word (an exception's message), the likeliest cause
                detail += f" ({last[0][:300]})"
            kind = self.result.failure_class or "failed"
            return f"the program failed ({kind})" + (f": {detail}" if detail else "")
        return ""


def rerun(campaign_folder: Path, trial_id: int, seed: Optional[int] = None, executor_kind: Optional[str] = None,
          timeout_s: float = 3600) -> Rerun:
    campaign_folder = Path(campaign_folder).resolve()
    store = Store(campaign_folder, read_only=True, create=False)
    with store.read() as session:
        trial = session.get(Trial, trial_id)
        campaign = session.exec(select(Campaign)).one()
    if trial is None:
        raise KeyError(f"no trial {trial_id} in {campaign_folder}")
    config = CampaignConfig.model_validate(campaign.config)
    if executor_kind:
        config.executor.kind = executor_kind  # type: ignore[assignment]
    layout = CampaignLayout(campaign_folder)
    if not layout.snapshot(trial.snapshot_id).is_dir():
        raise KeyError(f"trial {trial_id}'s program is gone: {layout.snapshot(trial.snapshot_id)} does not exist "
                       "(a campaign folder copied without its snapshots/ cannot rerun its trials)")
    task = TaskSpec.model_validate_json(layout.task_spec.read_text())
    seed = trial.seed if seed is None else seed
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = layout.rerun(trial_id, seed, stamp)
    time_limit = config.task.time_limit_s or task.time_limit_s
    request = trial_request(task, campaign_folder, trial, folder=folder, seed=seed, time_limit_s=time_limit,
                            sandbox=campaign_sandbox(config, campaign_folder, network=task.network)[0])
    executor = make_executor(config, layout.rerun_jobs, time_limit)
    result, failure = wait_for(executor, request, timeout_s, config.executor.result_grace_s)
    return Rerun(trial=trial, seed=seed, folder=folder, result=result, failure=failure)


def wait_for(executor: TrialExecutor, request: TrialRequest, timeout_s: float,
             grace_s: float) -> tuple[Optional[TrialResult], str]:
    """Submit one request and wait for its result file (or for its job to end without one)."""
    job = executor.submit([request])[0]
    deadline = time.monotonic() + timeout_s
    ended_at: Optional[float] = None
    while time.monotonic() < deadline:
        try:
            result = read_result(Path(request.folder), request.trial_id)
        except ResultFileError:
            result = None
        if result is not None:
            return result, ""
        state = executor.states([job.job_id]).get(job.job_id)
        if state is not None and state.terminal:
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > grace_s:
                return None, f"job {job.job_id} ended ({state.raw}) without a result"
        time.sleep(0.5)
    executor.cancel([job.job_id])
    return None, f"no result within {timeout_s:g} s"
