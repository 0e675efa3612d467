"""The coordinator: runs a campaign's loop over the shared state until the budget is spent.

Each tick: ingest what the trials reported (one transaction per result, reactions included),
let stagnating teams re-open discussion, let analysts review outcomes and fill their team's
queue, let idle experimenters claim and launch, submit what is ready in one batch, and check the
budget. Agents are stateless between steps: their memory is in the database.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from sqlmodel import Session, col, func, select

from .. import faults
from ..agents.policy import Policy
from ..agents.roles import Analyst, Context, Experimenter, post
from ..agents.views import current_champion
from ..config import CampaignConfig
from ..data import data_dir, prepare_data
from ..execution.executors import TrialExecutor, make_executor
from ..execution.monitor import Monitor, ingest
from ..execution.rerun import TASK_SPEC_FILE
from ..execution.results import FailureClass, atomic_write_text
from ..execution.trial import TrialRequest
from ..llm import make_policy
from ..state import Store, emit
from ..state.models import Agent, Campaign, Champion, Proposal, Team, Trial, utcnow
from ..task import TaskSpec, build_snapshot, config_signature, load_task
from . import promotion
from .discussion import discussion_round, form_teams, pick_critics, reorganize, review_proposal

#: Ticks in a row with nothing queued, running or proposable before the search counts as exhausted.
IDLE_TICKS_TO_FINISH = 5


class CampaignError(RuntimeError):
    pass


@dataclass
class Summary:
    folder: Path
    status: str
    trials: int
    promotions: int
    champion_metric: Optional[float]
    baseline_metric: Optional[float]


class Coordinator:
    def __init__(self, config: CampaignConfig, folder: Path, *, task: Optional[TaskSpec] = None,
                 policy: Optional[Policy] = None, executor: Optional[TrialExecutor] = None,
                 on_tick: Optional[Callable[["Coordinator"], None]] = None,
                 lease: Optional[Callable[[Store], Any]] = None) -> None:
        self.config = config
        self.folder = Path(folder).absolute()
        self.task = task or load_task(config.task.path)
        self.time_limit_s = config.task.time_limit_s or self.task.time_limit_s
        self.store = Store(self.folder, journal_mode=config.state.journal_mode,
                           busy_timeout_s=config.state.busy_timeout_s)
        # The lease is taken before anything is written: a second coordinator changes nothing.
        self.lease = lease(self.store) if lease is not None else None
        self.resumed = self._exists()
        self.ctx = Context(self.store, self.task, policy or make_policy(config, self.store), config)
        self.executor = executor or make_executor(config, self.folder / "jobs", self.time_limit_s)
        self.monitor = Monitor(self.store, self.executor, grace_s=config.executor.result_grace_s)
        self.on_tick = on_tick
        self._clock = time.monotonic()
        self.stop_reason = ""
        self._turn = 0
        self._idle_ticks = 0
        self._ensure_campaign()
        self.analysts, self.experimenters = self._agents()

    # ---- set-up -------------------------------------------------------------------------------

    def _exists(self) -> bool:
        with self.store.read() as session:
            return session.exec(select(Campaign)).first() is not None

    def _ensure_campaign(self) -> None:
        with self.store.write() as session:
            if session.exec(select(Campaign)).first() is not None:
                return
            cfg = self.config
            session.add(Campaign(name=cfg.campaign.name, folder=str(self.folder), task_name=self.task.name,
                                 mode=cfg.coordination.mode, config=cfg.model_dump(mode="json")))
            c = cfg.coordination
            for i in range(c.teams * c.analysts_per_team):
                session.add(Agent(name=f"analyst-{i + 1}", role="analyst"))
            for i in range(c.teams * c.experimenters_per_team):
                session.add(Agent(name=f"experimenter-{i + 1}", role="experimenter"))
            emit(session, "campaign.created", "campaign", 1, task=self.task.name, folder=str(self.folder))
        # The task as it was when the campaign began: what `autosci rerun` and analysis read back.
        spec = self.folder / TASK_SPEC_FILE
        if not spec.exists():
            atomic_write_text(spec, self.task.model_dump_json(indent=1))

    def _agents(self) -> tuple[list[Analyst], list[Experimenter]]:
        with self.store.read() as session:
            rows = session.exec(select(Agent).order_by(col(Agent.id))).all()
        analysts = [Analyst(self.ctx, a.id) for a in rows if a.role == "analyst" and a.id is not None]
        experimenters = [Experimenter(self.ctx, a.id) for a in rows if a.role == "experimenter" and a.id is not None]
        return analysts, experimenters

    def _start_baseline(self) -> None:
        manifest = prepare_data(self.task, self.folder)
        snapshot = build_snapshot(self.task, self.folder)
        with self.store.write() as session:
            if session.exec(select(Trial).where(Trial.role == "baseline")).first() is not None:
                return
            for seed in range(self.config.promotion.seeds):
                session.add(Trial(role="baseline", group="baseline", snapshot_id=snapshot, overrides={},
                                  config_signature=config_signature(snapshot, {}), seed=seed))
            campaign = session.exec(select(Campaign)).one()
            campaign.status = "baseline"
            session.add(campaign)
            if manifest:
                emit(session, "data.prepared", "campaign", campaign.id, files=len(manifest.get("sha256", {})),
                     provenance=manifest.get("provenance", {}))
            post(session, "analysis", "campaign started",
                 f"task {self.task.name}: running the champion program on {self.config.promotion.seeds} seeds")

    # ---- the loop -----------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop handing out work; the loop ends after the transaction in progress (signal-safe)."""
        self.stop_reason = reason

    def run(self, max_ticks: Optional[int] = None) -> Summary:
        if self.resumed:
            self._resume()
        self._start_baseline()
        ticks = 0
        while not self.tick():
            ticks += 1
            if self.stop_reason:
                self._checkpoint()
                with self.store.write() as session:
                    emit(session, "campaign.stopped", "campaign", 1, reason=self.stop_reason)
                break
            if self.on_tick:
                self.on_tick(self)
            if max_ticks is not None and ticks >= max_ticks:
                break
            time.sleep(self.config.coordination.poll_interval_s)
        if self.on_tick:
            self.on_tick(self)
        return self.summary()

    def _resume(self) -> None:
        """Continue a campaign from its state: count the restart, release what a crash left claimed."""
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            campaign.restarts += 1
            session.add(campaign)
            orphaned = session.exec(select(Proposal).where(Proposal.status == "claimed")).all()
            for proposal in orphaned:  # claimed, but the crash came before its trial existed
                proposal.status, proposal.claimed_by = "queued", None
                session.add(proposal)
            open_ids = {p.claimed_by for p in session.exec(
                select(Proposal).where(col(Proposal.status).in_(["running", "replicating"]))).all()}
            for agent in session.exec(select(Agent).where(Agent.status == "busy")).all():
                if agent.id not in open_ids:
                    agent.status = "idle"
                    session.add(agent)
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

    def tick(self) -> bool:
        """One pass over the campaign; True when it is finished."""
        self._turn += 1
        self._checkpoint()
        concluded = self._ingest()
        status = self.store.campaign().status
        if status in ("finished", "failed"):
            return True
        if status == "discussion":
            self._discuss_and_form_teams()
        if self.store.campaign().status == "execution" and not self.stop_reason:
            if concluded:
                self._review()
            self._handle_stagnation()
            self._fill_queues()
            self._launch()
        self._submit()
        return self._maybe_finish()

    def _ingest(self) -> int:
        concluded = 0
        for obs in self.monitor.observe():
            with self.store.write() as session:
                trial = ingest(session, obs)
                if trial is not None:
                    concluded += self._react(session, trial)
                    faults.point("ingest")  # inside the transaction, before its commit
        return concluded

    # ---- reactions to results (inside the ingest transaction) -----------------------------------

    def _react(self, session: Session, trial: Trial) -> int:
        if self._retry_if_lost(session, trial):
            return 0
        if trial.role == "baseline":
            self._react_baseline(session)
            return 0
        proposal = session.get(Proposal, trial.proposal_id)
        champion = current_champion(session)
        assert proposal is not None and champion is not None
        rules = self.config.promotion
        if trial.status == "succeeded" and trial.metric is not None:
            trial.champion_delta = promotion.screen(self.task, rules, champion, trial.seed, trial.metric)
            session.add(trial)
        if trial.role == "candidate":
            if trial.status == "failed":
                post(session, "failure", f"#{proposal.id} failed: {trial.failure_class}",
                     f"{trial.failure_reason}\n--- log tail ---\n{trial.log_tail[-1500:]}",
                     author_id=trial.experimenter_id, team_id=trial.team_id, proposal_id=proposal.id,
                     trial_ids=[trial.id or 0])
                self._conclude(session, proposal, "failed")
                return 1
            delta = trial.champion_delta or 0.0
            if promotion.passes_screen(rules, delta) and rules.seeds > 1:
                for seed in range(1, rules.seeds):
                    session.add(Trial(proposal_id=proposal.id, team_id=trial.team_id,
                                      experimenter_id=trial.experimenter_id, role="replicate", group=trial.group,
                                      snapshot_id=trial.snapshot_id, overrides=trial.overrides,
                                      config_signature=trial.config_signature, seed=seed, replicate_of=trial.id))
                proposal.status = "replicating"
                session.add(proposal)
                post(session, "result", f"#{proposal.id} beats the champion on seed 0 by {delta:+.4g}",
                     f"{self.task.metric.name}={trial.metric:.4g}; replicating on seeds 1..{rules.seeds - 1}",
                     author_id=trial.experimenter_id, team_id=trial.team_id, proposal_id=proposal.id,
                     trial_ids=[trial.id or 0])
                emit(session, "proposal.replicating", "proposal", proposal.id, delta=delta)
                return 0
            return self._decide(session, proposal, champion, [trial])
        # A replicate: decide once every seed of the group is in.
        group = session.exec(select(Trial).where(Trial.group == trial.group)
                             .where(col(Trial.superseded_by).is_(None))).all()
        if any(t.status not in ("succeeded", "failed") for t in group):
            return 0
        return self._decide(session, proposal, champion, list(group))

    def _retry_if_lost(self, session: Session, trial: Trial) -> bool:
        """A trial lost to the infrastructure runs again on the same seed, with lineage, bounded."""
        try:
            lost = trial.status == "failed" and FailureClass(trial.failure_class).is_infrastructure
        except ValueError:
            lost = False
        if not lost or trial.attempt >= self.config.executor.max_retries:
            return False
        retry = Trial(proposal_id=trial.proposal_id, team_id=trial.team_id, experimenter_id=trial.experimenter_id,
                      role=trial.role, group=trial.group, snapshot_id=trial.snapshot_id, overrides=trial.overrides,
                      config_signature=trial.config_signature, seed=trial.seed, replicate_of=trial.replicate_of,
                      attempt=trial.attempt + 1, retry_of=trial.id)
        session.add(retry)
        session.flush()
        trial.superseded_by = retry.id
        session.add(trial)
        emit(session, "trial.retried", "trial", trial.id, retry=retry.id, failure_class=trial.failure_class)
        return True

    def _decide(self, session: Session, proposal: Proposal, champion: Champion, group: list[Trial]) -> int:
        failed = [t for t in group if t.status == "failed"]
        if failed:
            post(session, "failure", f"#{proposal.id} replication failed",
                 "; ".join(f"trial {t.id} (seed {t.seed}): {t.failure_class}: {t.failure_reason}" for t in failed),
                 team_id=proposal.team_id, proposal_id=proposal.id, trial_ids=[t.id or 0 for t in failed])
            self._conclude(session, proposal, "failed")
            return 1
        metrics = {t.seed: float(t.metric) for t in group if t.metric is not None}
        rules = self.config.promotion
        if len(group) == 1 and rules.seeds > 1:
            decision = promotion.Decision(False, rules.rule, group[0].champion_delta or 0.0,
                                          {"seeds": 1, "screen_delta": rules.screen_delta})
        else:
            decision = promotion.decide(self.task, rules, champion, metrics)
        ids = [t.id or 0 for t in group]
        if decision.promote:
            self._promote(session, proposal, champion, group, metrics, decision)
        post(session, "result", f"#{proposal.id}: {decision.summary()}",
             f"per-seed {self.task.metric.name}: {metrics}", team_id=proposal.team_id,
             proposal_id=proposal.id, trial_ids=ids)
        self._conclude(session, proposal, "promoted" if decision.promote else "not_promoted")
        return 1

    def _promote(self, session: Session, proposal: Proposal, previous: Champion, group: list[Trial],
                 metrics: dict[int, float], decision: promotion.Decision) -> None:
        mean, std = promotion.summarize(metrics)
        tests = [t.test_metric for t in group if t.test_metric is not None]
        team = session.get(Team, proposal.team_id) if proposal.team_id else None
        first = group[0]
        champion = Champion(group=first.group, proposal_id=proposal.id, team_id=proposal.team_id,
                            previous_id=previous.id, snapshot_id=first.snapshot_id, overrides=first.overrides,
                            config_signature=first.config_signature,
                            seed_metrics={str(k): v for k, v in sorted(metrics.items())},
                            trial_ids=[t.id or 0 for t in group], metric_mean=mean, metric_std=std,
                            test_metric_mean=sum(tests) / len(tests) if tests else None,
                            delta=decision.delta, rule=decision.rule, rule_detail=decision.detail)
        session.add(champion)
        session.flush()
        champion.model_card = promotion.model_card(self.task, champion, proposal.change_signature,
                                                   team.name if team else None, previous)
        session.add(champion)
        campaign = session.exec(select(Campaign)).one()
        campaign.promotions += 1
        session.add(campaign)
        if team is not None:
            team.improvements += 1
            session.add(team)
        post(session, "promotion", f"new champion #{champion.id}: {self.task.metric.name} {mean:.4g}",
             champion.model_card, team_id=proposal.team_id, proposal_id=proposal.id,
             trial_ids=champion.trial_ids)
        emit(session, "champion.promoted", "champion", champion.id, proposal=proposal.id, mean=mean,
             delta=decision.delta, rule=decision.rule)

    def _conclude(self, session: Session, proposal: Proposal, outcome: str) -> None:
        proposal.status, proposal.outcome = "done", outcome
        proposal.updated_at = utcnow()
        session.add(proposal)
        if proposal.team_id is not None:
            team = session.get(Team, proposal.team_id)
            assert team is not None
            team.experiments_total += 1
            team.experiments_since_improvement = 0 if outcome == "promoted" else team.experiments_since_improvement + 1
            session.add(team)
        if proposal.claimed_by is not None:
            agent = session.get(Agent, proposal.claimed_by)
            if agent is not None:
                agent.status = "idle"
                agent.memory = {**agent.memory, "current_proposal": None}
                session.add(agent)
        emit(session, "proposal.concluded", "proposal", proposal.id, outcome=outcome)

    def _react_baseline(self, session: Session) -> None:
        group = session.exec(select(Trial).where(Trial.role == "baseline")
                             .where(col(Trial.superseded_by).is_(None))).all()
        if any(t.status not in ("succeeded", "failed") for t in group):
            return
        campaign = session.exec(select(Campaign)).one()
        failed = [t for t in group if t.status == "failed"]
        if failed:
            t = failed[0]
            campaign.status = "failed"
            session.add(campaign)
            post(session, "failure", "the champion program itself fails",
                 f"trial {t.id} (seed {t.seed}): {t.failure_class}: {t.failure_reason}\n{t.log_tail[-1500:]}",
                 trial_ids=[x.id or 0 for x in failed])
            emit(session, "campaign.failed", "campaign", campaign.id, reason="baseline failed")
            return
        metrics = {t.seed: float(t.metric) for t in group if t.metric is not None}
        mean, std = promotion.summarize(metrics)
        tests = [t.test_metric for t in group if t.test_metric is not None]
        first = group[0]
        champion = Champion(group="baseline", snapshot_id=first.snapshot_id, overrides={},
                            config_signature=first.config_signature,
                            seed_metrics={str(k): v for k, v in sorted(metrics.items())},
                            trial_ids=[t.id or 0 for t in group], metric_mean=mean, metric_std=std,
                            test_metric_mean=sum(tests) / len(tests) if tests else None, rule="baseline")
        session.add(champion)
        session.flush()
        champion.model_card = promotion.model_card(self.task, champion, "the task's program as shipped", None, None)
        session.add(champion)
        campaign.status = "discussion"
        session.add(campaign)
        post(session, "promotion", f"baseline champion: {self.task.metric.name} {mean:.4g} ± {std:.3g}",
             champion.model_card, trial_ids=champion.trial_ids)
        emit(session, "champion.baseline", "champion", champion.id, mean=mean, std=std)

    # ---- agents at work -----------------------------------------------------------------------

    def _discuss_and_form_teams(self) -> None:
        approved: list[int] = []
        for r in range(self.config.coordination.discussion_rounds):
            approved += discussion_round(self.ctx, self.analysts, self.analysts, lambda a: None, None, r,
                                         turn=self._turn + r)
        form_teams(self.ctx, self.analysts, self.experimenters, approved)
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            campaign.status = "execution"
            session.add(campaign)
            emit(session, "campaign.execution", "campaign", campaign.id, approved=len(approved))

    def _members(self, team_id: int) -> tuple[list[Analyst], list[Experimenter]]:
        with self.store.read() as session:
            ids = {a.id for a in session.exec(select(Agent).where(Agent.team_id == team_id)).all()}
        return ([a for a in self.analysts if a.agent_id in ids],
                [e for e in self.experimenters if e.agent_id in ids])

    def _teams(self) -> list[Team]:
        with self.store.read() as session:
            return list(session.exec(select(Team).where(Team.status != "dissolved").order_by(col(Team.id))).all())

    def _review(self) -> None:
        for team in self._teams():
            analysts, _ = self._members(team.id or 0)
            if analysts:
                analysts[self._turn % len(analysts)].review()

    def _handle_stagnation(self) -> None:
        window = self.config.coordination.stagnation_window
        for team in self._teams():
            if team.status == "active" and team.experiments_since_improvement >= window:
                analysts, _ = self._members(team.id or 0)
                taken = {t.focus for t in self._teams() if t.id != team.id}
                reorganize(self.ctx, team.id or 0, analysts or self.analysts[:1], self.analysts, taken, self._turn)

    def _fill_queues(self) -> None:
        cfg = self.config.coordination
        if not self._may_start_candidate():
            return
        for team in self._teams():
            if team.status != "active":
                continue
            analysts, _ = self._members(team.id or 0)
            for attempt in range(cfg.queue_depth * 2):
                with self.store.read() as session:
                    queued = session.exec(select(func.count()).select_from(Proposal)
                                          .where(Proposal.team_id == team.id)
                                          .where(Proposal.status == "queued")).one()
                if queued >= cfg.queue_depth or not analysts:
                    break
                author = analysts[(self._turn + attempt) % len(analysts)]
                proposal_id = author.post_proposal(team.focus, team.id)
                if proposal_id is None:
                    continue
                critics = pick_critics(author, self.analysts, cfg.critics_per_proposal, self._turn + attempt)
                review_proposal(self.ctx, proposal_id, critics, approved_status="queued")

    def _launch(self) -> None:
        for team in self._teams():
            if team.status != "active":
                continue
            _, experimenters = self._members(team.id or 0)
            for experimenter in experimenters:
                if not self._may_start_candidate() or self._free_slots() <= 0:
                    return
                with self.store.read() as session:
                    agent = session.get(Agent, experimenter.agent_id)
                    busy = agent is not None and agent.status == "busy"
                if busy:
                    continue
                proposal_id = experimenter.claim(team.id or 0)
                if proposal_id is not None:
                    faults.point("claimed")  # an agent dying between its claim and its launch
                    experimenter.launch(proposal_id)

    # ---- budget and submission ----------------------------------------------------------------

    def _wall_clock_spent(self) -> bool:
        used = self.store.campaign().wall_clock_s + (time.monotonic() - self._clock)
        return used > self.config.budget.wall_clock_min * 60

    def _may_start_candidate(self) -> bool:
        """A new candidate may start only if its full replication still fits in the budget."""
        if self._wall_clock_spent():
            return False
        seeds = self.config.promotion.seeds
        with self.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            created = session.exec(select(func.count()).select_from(Trial).where(Trial.status == "created")).one()
            screening = session.exec(select(func.count()).select_from(Proposal)
                                     .where(Proposal.status == "running")).one()
        committed = campaign.trials_submitted + created + (seeds - 1) * screening
        return committed + seeds <= self.config.budget.trials

    def _free_slots(self) -> int:
        with self.store.read() as session:
            busy = session.exec(select(func.count()).select_from(Trial)
                                .where(col(Trial.status).in_(["created", "submitted"]))).one()
        return self.executor.capacity - busy

    def _submit(self) -> None:
        with self.store.read() as session:
            running = session.exec(select(func.count()).select_from(Trial).where(Trial.status == "submitted")).one()
            ready = session.exec(select(Trial).where(Trial.status == "created")
                                 .order_by(col(Trial.role) == "candidate", col(Trial.id))).all()
        room = self.executor.capacity - running
        batch = list(ready[: max(0, room)])
        if not batch:
            return
        requests = [self._request(t) for t in batch]
        faults.point("submit")
        jobs = self.executor.submit(requests)
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            for job in jobs:
                trial = session.get(Trial, job.trial_id)
                assert trial is not None
                trial.status = "submitted"
                trial.job_id = job.job_id
                trial.array_index = job.array_index
                trial.executor = self.executor.name
                trial.submitted_at = utcnow()
                session.add(trial)
                emit(session, "trial.submitted", "trial", trial.id, job_id=job.job_id)
            campaign.trials_submitted += len(jobs)
            campaign.updated_at = utcnow()
            session.add(campaign)

    def _request(self, trial: Trial) -> TrialRequest:
        assert trial.id is not None
        folder = self.folder / "trials" / f"{trial.id:06d}"
        with self.store.write() as session:
            row = session.get(Trial, trial.id)
            assert row is not None
            row.folder = str(folder)
            session.add(row)
        return TrialRequest(trial_id=trial.id, attempt=trial.attempt, folder=str(folder),
                            snapshot_dir=str(self.folder / "snapshots" / trial.snapshot_id),
                            command=self.task.command, overrides=trial.overrides, seed=trial.seed,
                            time_limit_s=self.time_limit_s, metric=self.task.metric.name,
                            test_metric=self.task.test_metric,
                            data_dir=str(data_dir(self.folder)) if self.task.prepare else "")

    def _maybe_finish(self) -> bool:
        with self.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            if campaign.status in ("finished", "failed"):
                return True
            if campaign.status != "execution":
                return False
            pending = session.exec(select(func.count()).select_from(Trial)
                                   .where(col(Trial.status).in_(["created", "submitted"]))).one()
            open_work = session.exec(select(func.count()).select_from(Proposal)
                                     .where(col(Proposal.status).in_(["claimed", "running", "replicating"]))).one()
        if pending or open_work:
            self._idle_ticks = 0
            return False
        if self._may_start_candidate():
            self._idle_ticks = self._idle_ticks + 1 if self._idle_search() else 0
            if self._idle_ticks < IDLE_TICKS_TO_FINISH:
                return False
        reason = "wall clock spent" if self._wall_clock_spent() else "trial budget spent"
        if self._may_start_candidate():
            reason = "no proposal left to try"
        with self.store.write() as session:
            campaign = session.exec(select(Campaign)).one()
            campaign.status = "finished"
            campaign.finished_at = utcnow()
            session.add(campaign)
            champion = current_champion(session)
            post(session, "analysis", f"campaign finished: {reason}",
                 champion.model_card if champion else "no champion")
            emit(session, "campaign.finished", "campaign", campaign.id, reason=reason)
        return True

    def _idle_search(self) -> bool:
        """True when no team has anything queued: the analysts found nothing more to propose."""
        with self.store.read() as session:
            queued = session.exec(select(func.count()).select_from(Proposal)
                                  .where(Proposal.status == "queued")).one()
        return queued == 0

    def summary(self) -> Summary:
        with self.store.read() as session:
            campaign = session.exec(select(Campaign)).one()
            champion = current_champion(session)
            baseline = session.exec(select(Champion).order_by(col(Champion.id))).first()
        return Summary(folder=self.folder, status=campaign.status, trials=campaign.trials_submitted,
                       promotions=campaign.promotions,
                       champion_metric=champion.metric_mean if champion else None,
                       baseline_metric=baseline.metric_mean if baseline else None)
