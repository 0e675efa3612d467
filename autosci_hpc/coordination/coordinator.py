"""The coordinator: runs a campaign's loop over the shared state until the budget is spent.

Each tick: ingest what the trials reported (one transaction per result, with what it sets in
motion: `outcomes.py`), let the agents act (inline, one `step()` each, or as their own supervised
processes), settle the proposals whose critics have answered, move the discussion along (rounds,
teams, re-opened discussions), submit what is ready in one batch, and check the budget. Agents are
stateless between steps: their memory is in the database.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from sqlmodel import col, select

from .. import faults
from ..agents.policy import Policy
from ..agents.roles import Context, post
from ..agents.views import current_champion
from ..config import CampaignConfig, ConfigError
from ..data import prepare_data
from ..execution.executors import SubmittedJob, TrialExecutor
from ..execution.gpus import sharing_change, with_task_gpus
from ..execution.monitor import Monitor, ingest
from ..execution.registry import make_executor
from ..execution.sandbox import campaign_sandbox
from ..execution.trial import TrialRequest, trial_request
from ..files import atomic_write_text
from ..layout import CampaignLayout
from ..llm.keys import stored_config
from ..llm.served import ServedModel, ServeError
from ..policies import fallback_policy, make_policy
from ..state import Store, budget, campaigns, emit, trials
from ..state import agents as agent_rows
from ..state.lifecycle import (IN_FLIGHT_TRIALS, AgentStatus, CampaignStatus, PostKind, ProposalStatus,
                               TrialRole, TrialStatus)
from ..state.models import Agent, Campaign, Champion, Event, Proposal, Trial, utcnow
from ..task import (TaskError, TaskSpec, build_snapshot, config_signature, freeze_evaluator, load_task,
                    unknown_keys)
from . import modes
from .agents import Supervisor
from .discussion import advance_discussion, conclude_reopened, reopen_stagnating, settle
from .outcomes import Outcomes

#: Ticks in a row with nothing queued, running or proposable before the search counts as exhausted.
IDLE_TICKS_TO_FINISH = 5


@dataclass
class Summary:
    folder: Path
    status: str
    trials: int
    promotions: int
    champion_metric: Optional[float]
    baseline_metric: Optional[float]


class Coordinator:
    """One campaign's coordinator. `agent_processes=True` runs each agent in its own process."""

    def __init__(self, config: CampaignConfig, folder: Path, *, task: Optional[TaskSpec] = None,
                 policy: Optional[Policy] = None, executor: Optional[TrialExecutor] = None,
                 on_tick: Optional[Callable[["Coordinator"], None]] = None,
                 lease: Optional[Callable[[Store], Any]] = None, agent_processes: bool = False) -> None:
        self.config = config
        self.folder = Path(folder).absolute()
        self.layout = CampaignLayout(self.folder)
        #: Short and stable for this campaign folder: batch keys (job names) never collide across campaigns.
        self._tag = "c" + hashlib.sha1(str(self.folder).encode()).hexdigest()[:6]
        self.task = task or load_task(config.task.path)
        self.config = config = with_task_gpus(config, self.task.gpus, self.task.nodes)
        self.time_limit_s = config.task.time_limit_s or self.task.time_limit_s
        known = self.task.base_config()
        unknown = sorted(unknown_keys(known, config.task.overrides))
        if unknown:
            raise TaskError(f"task.overrides: unknown key(s) {', '.join(unknown)} for task {self.task.name}; "
                            f"known keys: {', '.join(sorted(known))}")
        # Which sandbox the trials run in, decided once (a requested one that does not work is an error).
        self.sandbox, self.sandbox_reason = campaign_sandbox(config, self.folder, network=self.task.network)
        self.store = Store(self.folder, journal_mode=config.state.journal_mode,
                           busy_timeout_s=config.state.busy_timeout_s)
        # The lease is taken before anything is written: a second coordinator changes nothing.
        self.lease = lease(self.store) if lease is not None else None
        self.resumed = self._exists()
        # An open model served on the cluster: started (or re-attached) before any agent needs it.
        self.served: Optional[ServedModel] = None
        self._served_checked = time.monotonic()
        if config.llm.serve.command:
            self.served = ServedModel(config.llm, self.folder)
            self._point_agents_at(self.served.ensure())
        self._own_policy = policy is None
        self.executor = executor or make_executor(self.config, self.layout.jobs, self.time_limit_s)
        self.ctx = Context(self.store, self.task, policy or make_policy(self.config, self.store, task=self.task),
                           self.config, self.executor.capacity, fallback=fallback_policy(self.config))
        self.monitor = Monitor(self.store, self.executor, grace_s=config.executor.result_grace_s)
        self.outcomes = Outcomes(self.task, config)
        self.on_tick = on_tick
        self.agent_processes = agent_processes or config.coordination.agent_processes
        self.supervisor: Optional[Supervisor] = None
        self._clock = time.monotonic()
        self.stop_reason = ""
        self._idle_ticks = 0
        self._ensure_campaign()
        self.mode = config.coordination.mode
        self.agents = self._agents()

    # ---- set-up -------------------------------------------------------------------------------

    def _exists(self) -> bool:
        with self.store.read() as session:
            return session.exec(select(Campaign)).first() is not None

    def _ensure_campaign(self) -> None:
        with self.store.write() as session:
            if session.exec(select(Campaign)).first() is not None:
                return
            cfg = self.config
            campaigns.create(session, name=cfg.campaign.name, folder=str(self.folder),
                             task_name=self.task.name, mode=cfg.coordination.mode, config=stored_config(cfg),
                             starting_agents=modes.starting_agents(cfg))
            emit(session, "campaign.created", "campaign", 1, task=self.task.name, folder=str(self.folder))
        with self.store.write() as session:  # on every start: a resumed campaign may run on another machine
            emit(session, "campaign.sandbox", "campaign", 1, sandbox=self.sandbox.mode,
                 requested=self.config.executor.sandbox, reason=self.sandbox_reason)
        # The task as it was when the campaign began: what `autosci rerun` and analysis read back.
        spec = self.layout.task_spec
        if not spec.exists():
            atomic_write_text(spec, self.task.model_dump_json(indent=1))

    def _agents(self) -> list[modes.Stepper]:
        with self.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            rows = session.exec(select(Agent).order_by(col(Agent.id))).all()
        if campaign.mode != self.mode:
            raise ValueError(f"{self.folder} is a '{campaign.mode}' campaign; its coordination.mode cannot "
                             f"change to '{self.mode}' (start a new campaign folder)")
        changed = sharing_change(campaign.config, self.config)
        if changed:
            raise ConfigError(f"{self.folder}: {changed} (start a new campaign folder)")
        # In id order, which is that of `modes.starting_agents`: proposers first, so in a tick ideas
        # are posted before anyone claims.
        return [modes.make_agent(self.ctx, a.id, a.role) for a in rows if a.id is not None]

    def _start_baseline(self) -> None:
        manifest = prepare_data(self.task, self.folder)
        freeze_evaluator(self.task, self.folder)
        snapshot = build_snapshot(self.task, self.folder)
        with self.store.write() as session:
            if session.exec(select(Trial).where(Trial.role == TrialRole.BASELINE)).first() is not None:
                return
            start = dict(self.config.task.overrides)
            trials.baseline(session, snapshot, start, config_signature(snapshot, start),
                            self.config.promotion.seeds)
            campaign = session.exec(select(Campaign)).one()
            campaigns.begin_baseline(session, campaign)
            if manifest:
                emit(session, "data.prepared", "campaign", campaign.id, files=len(manifest.get("sha256", {})),
                     provenance=manifest.get("provenance", {}))
            post(session, PostKind.ANALYSIS, "campaign started",
                 f"task {self.task.name}: running the champion program on {self.config.promotion.seeds} seeds")

    # ---- the loop -----------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop handing out work; the loop ends after the transaction in progress (signal-safe)."""
        self.stop_reason = reason

    def run(self, max_ticks: Optional[int] = None) -> Summary:
        if self.resumed:
            self._resume()
            self._reconcile_submitting()
        self._start_baseline()
        self._set_accepting(True)
        if self.agent_processes:
            self.supervisor = Supervisor(self.store, self.config.model_dump_json(),
                                         [a.agent_id for a in self.agents], self.executor.capacity,
                                         poll_s=self.config.coordination.poll_interval_s,
                                         timeout_s=self.config.coordination.agent_timeout_s)
            self.supervisor.start()
        try:
            ticks = 0
            while not self.tick():
                ticks += 1
                if self.stop_reason:
                    self._set_accepting(False)
                    self._checkpoint()
                    with self.store.write() as session:
                        emit(session, "campaign.stopped", "campaign", 1, reason=self.stop_reason)
                    break
                if self.on_tick:
                    self.on_tick(self)
                if max_ticks is not None and ticks >= max_ticks:
                    break
                time.sleep(self.config.coordination.poll_interval_s)
        finally:
            if self.supervisor is not None:
                self._set_accepting(False)
                self.supervisor.stop()
            if self.served is not None:
                self.served.stop()
        if self.on_tick:
            self.on_tick(self)
        return self.summary()

    def _resume(self) -> None:
        """Continue a campaign from its state: count the restart, release what a crash left claimed."""
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            campaign.restarts += 1
            session.add(campaign)
            orphaned = session.exec(select(Proposal).where(Proposal.status == ProposalStatus.CLAIMED)).all()
            for proposal in orphaned:  # claimed, but the crash came before its trial existed
                modes.release(proposal)
                session.add(proposal)
            open_ids = {p.claimed_by for p in session.exec(
                select(Proposal).where(col(Proposal.status).in_([ProposalStatus.RUNNING,
                                                                 ProposalStatus.REPLICATING]))).all()}
            for agent in session.exec(select(Agent).where(Agent.status == AgentStatus.BUSY)).all():
                if agent.id not in open_ids:
                    agent_rows.idle(session, agent)
            emit(session, "campaign.resumed", "campaign", campaign.id, restarts=campaign.restarts,
                 slurm_restart_count=os.environ.get("SLURM_RESTART_COUNT", ""),
                 released_claims=[p.id for p in orphaned])

    def _checkpoint(self) -> None:
        """Add the wall-clock time since the last checkpoint to the stored total; renew the lease."""
        now = time.monotonic()
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            campaign.wall_clock_s += now - self._clock
            session.add(campaign)
            if self.lease is not None:
                self.lease.renew(session)
        self._clock = now

    def _set_accepting(self, value: bool) -> None:
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            if campaign.accepting_work != value:
                campaign.accepting_work = value
                session.add(campaign)

    def _point_agents_at(self, url: str) -> None:
        self.config = self.config.model_copy(update={"llm": self.config.llm.model_copy(update={"base_url": url})})

    def _check_served(self) -> None:
        """Every `llm.serve.check_interval_s`: is the model server's job alive? If it died, submit it
        again, wait until it answers, and move the agents to its new address."""
        assert self.served is not None
        if time.monotonic() - self._served_checked < self.config.llm.serve.check_interval_s:
            return
        self._served_checked = time.monotonic()
        if self.served.alive():
            return
        try:
            url = self.served.ensure()
        except ServeError as exc:
            with self.store.write() as session:
                emit(session, "model_server.lost", "campaign", 1, error=str(exc))
            self.request_stop(str(exc))
            return
        with self.store.write() as session:
            emit(session, "model_server.restarted", "campaign", 1, job=self.served.job_id, url=url,
                 restarts=self.served.restarts)
        if url != self.config.llm.base_url:
            self._point_agents_at(url)
            if self._own_policy:
                self.ctx.policy = make_policy(self.config, self.store, task=self.task)
            if self.supervisor is not None:
                self.supervisor.config_json = self.config.model_dump_json()
                self.supervisor.restart_all("the model server moved")

    def tick(self) -> bool:
        """One pass over the campaign; True when it is finished."""
        self._checkpoint()
        if self.served is not None:
            self._check_served()
        self._ingest()
        status = self.store.campaign().status
        if status in (CampaignStatus.FINISHED, CampaignStatus.FAILED):
            return True
        if self.supervisor is not None:
            self.supervisor.check()
        elif not self.stop_reason and status in (CampaignStatus.DISCUSSION, CampaignStatus.EXECUTION):
            for agent in self.agents:
                agent.step()
        settle(self.ctx)
        if status == CampaignStatus.DISCUSSION:
            advance_discussion(self.ctx)
        elif status == CampaignStatus.EXECUTION and self.mode == "decentralized":
            reopen_stagnating(self.ctx)
            conclude_reopened(self.ctx)
        self._submit()
        return self._maybe_finish()

    def _ingest(self) -> int:
        concluded = 0
        for obs in self.monitor.observe():
            with self.store.write() as session:
                trial = ingest(session, obs)
                if trial is not None:
                    concluded += self.outcomes.react(session, trial)
                    faults.point("ingest")  # inside the transaction, before its commit
        return concluded

    # ---- budget and submission ----------------------------------------------------------------

    def _submit(self) -> None:
        """Submit what is ready, in one batch. The batch is first recorded as `submitting` under a key
        the scheduler keeps (the job name); only then is `sbatch` called; the job ids are recorded in
        a second transaction. A crash between the two leaves `submitting` trials, which the next
        coordinator finds at the scheduler (`_reconcile_submitting`) instead of submitting again."""
        with self.store.read() as session:
            running = budget.count_rows(session, Trial, col(Trial.status).in_(IN_FLIGHT_TRIALS))
            ready = session.exec(select(Trial).where(Trial.status == TrialStatus.CREATED)
                                 .order_by(col(Trial.role) == TrialRole.CANDIDATE, col(Trial.id))).all()
        room = self.executor.room(running)
        batch = list(ready[: max(0, room)])
        if not batch:
            return
        requests = [self._request(t) for t in batch]
        key = f"{self._tag}-{uuid.uuid4().hex[:8]}"
        with self.store.write() as session:
            for trial in batch:
                row = session.get(Trial, trial.id)
                assert row is not None and row.status == TrialStatus.CREATED
                trials.submitting(session, row, folder=str(self.layout.trial(trial.id or 0, trial.attempt)),
                                  executor=self.executor.name)
            emit(session, "trials.submitting", "campaign", 1, key=key, trials=[t.id for t in batch])
        faults.point("submit")
        try:
            jobs = self.executor.submit_batch(key, requests)
        except Exception:
            self._unsubmit([r.trial_id for r in requests])  # refused: ready again, nothing ran
            raise
        faults.point("submitted")  # sbatch returned; its job ids are not recorded yet
        self._record(jobs)

    def _record(self, jobs: list[SubmittedJob], recovered: bool = False) -> None:
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            count = 0
            for job in jobs:
                trial = session.get(Trial, job.trial_id)
                if trial is None or trial.status != TrialStatus.SUBMITTING:
                    continue
                trials.submitted(session, trial, job_id=job.job_id, array_index=job.array_index)
                emit(session, "trial.submitted", "trial", trial.id, job_id=job.job_id, recovered=recovered)
                count += 1
            campaign.trials_submitted += count
            campaign.updated_at = utcnow()
            session.add(campaign)

    def _unsubmit(self, trial_ids: list[int]) -> None:
        with self.store.write() as session:
            for trial_id in trial_ids:
                trial = session.get(Trial, trial_id)
                if trial is not None and trial.status == TrialStatus.SUBMITTING:
                    trials.unsubmit(session, trial)

    def _reconcile_submitting(self) -> None:
        """Trials a crashed coordinator left `submitting`: the jobs the scheduler (or the executor's
        job folders) know under their batch's key are recorded as submitted; the rest never reached
        the scheduler and are ready again. Nothing is submitted twice, nothing is lost."""
        with self.store.read() as session:
            stranded = {t.id: t for t in session.exec(
                select(Trial).where(Trial.status == TrialStatus.SUBMITTING)).all()}
            batches = session.exec(select(Event).where(Event.kind == "trials.submitting")
                                   .order_by(col(Event.id).desc())).all()
        for event in batches:  # newest first; a trial is only ever stranded by its latest batch
            if not stranded:
                break
            key, ids = str(event.data.get("key", "")), [int(i) for i in event.data.get("trials", [])]
            if not any(i in stranded for i in ids):
                continue
            # The batch's requests in the order they were submitted: array index i is request i.
            requests = [self._request(stranded[i]) for i in ids if i in stranded]
            jobs = self.executor.recover(key, requests)
            self._record(jobs, recovered=True)
            found = {j.trial_id: j.job_id for j in jobs}
            lost = [i for i in ids if i in stranded and i not in found]
            self._unsubmit(lost)
            with self.store.write() as session:
                emit(session, "trials.reconciled", "campaign", 1, key=key, found=found, ready_again=lost)
            for i in ids:
                stranded.pop(i, None)
        self._unsubmit([i for i in stranded if i is not None])  # no batch on record: never submitted

    def _request(self, trial: Trial) -> TrialRequest:
        # The folder follows from the id (the layout's), so it is recorded with the submission (one
        # transaction per batch, not one more per trial).
        return trial_request(self.task, self.folder, trial, time_limit_s=self.time_limit_s,
                             sandbox=self.sandbox)

    def _maybe_finish(self) -> bool:
        """Decide, in ONE write transaction, whether the campaign is over, and record it if so.

        `BEGIN IMMEDIATE` serializes the decision against the agents' own transactions: no agent can
        claim a queued proposal or create a trial between the counts read here and the `finished`
        written here (an agent that tries afterwards finds the campaign finished and takes nothing).
        """
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            if campaign.status in (CampaignStatus.FINISHED, CampaignStatus.FAILED):
                return True
            if campaign.status != CampaignStatus.EXECUTION or not campaign.accepting_work:
                return False
            pending = budget.count_rows(session, Trial, col(Trial.status).in_(
                [TrialStatus.CREATED, *IN_FLIGHT_TRIALS]))
            open_work = budget.count_rows(session, Proposal, col(Proposal.status).in_(
                [ProposalStatus.POSTED, ProposalStatus.CLAIMED, ProposalStatus.RUNNING,
                 ProposalStatus.REPLICATING]))
            if pending or open_work:
                self._idle_ticks = 0
                return False
            extra_s = time.monotonic() - self._clock
            may_start = budget.may_start_candidate(session, self.config, extra_s)
            if may_start:
                queued = budget.count_rows(session, Proposal,
                                           col(Proposal.status).in_(modes.ready_statuses(self.mode)))
                self._idle_ticks = self._idle_ticks + 1 if queued == 0 else 0
                if self._idle_ticks < IDLE_TICKS_TO_FINISH * (10 if self.supervisor is not None else 1):
                    return False
                reason = "no proposal left to try"
            elif (failed := budget.failing_streak(session, self.config)) is not None:
                last_line = next((line for line in reversed(failed.log_tail.splitlines()) if line.strip()), "")
                reason = (f"{self.config.budget.failures_in_a_row} trials in a row failed (budget.failures_in_a_row; "
                          f"the last, trial {failed.id}: {failed.failure_class or 'failed'}: "
                          f"{' '.join(failed.failure_reason.split())[:200]}"
                          + (f"; its log ends: {' '.join(last_line.split())[:200]}" if last_line else "") + ")")
            else:
                reason = ("wall clock spent" if budget.wall_clock_spent(campaign, self.config, extra_s)
                          else "LLM budget spent" if budget.llm_spent(session, self.config)
                          else "GPU-hour budget spent" if budget.gpu_hours_spent(session, self.config)
                          else "trial budget spent")
            campaigns.finish(session, campaign)
            champion = current_champion(session)
            post(session, PostKind.ANALYSIS, f"campaign finished: {reason}",
                 champion.model_card if champion else "no champion")
            emit(session, "campaign.finished", "campaign", campaign.id, reason=reason)
        return True

    def summary(self) -> Summary:
        with self.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            champion = current_champion(session)
            baseline = session.exec(select(Champion).order_by(col(Champion.id))).first()
        return Summary(folder=self.folder, status=campaign.status, trials=campaign.trials_submitted,
                       promotions=campaign.promotions,
                       champion_metric=champion.metric_mean if champion else None,
                       baseline_metric=baseline.metric_mean if baseline else None)
