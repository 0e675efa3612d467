"""What a result sets in motion, inside the transaction that ingests it.

Replication of a candidate that passes its first-seed screen, the promotion decision, the
conclusion of a proposal (team counters, the experimenter freed), the baseline champion, and the
same-seed retry of a trial lost to the infrastructure. Doing this in the ingest transaction means a
crash can never leave a result ingested but not acted on.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from ..agents.roles import post
from ..agents.views import current_champion
from ..config import CampaignConfig
from ..execution.results import FailureClass
from ..state import emit
from ..state.models import Agent, Campaign, Champion, Proposal, Team, Trial, utcnow
from ..task import TaskSpec
from . import promotion
from .modes import first_phase


class Outcomes:
    def __init__(self, task: TaskSpec, config: CampaignConfig) -> None:
        self.task = task
        self.config = config

    def react(self, session: Session, trial: Trial) -> int:
        if trial.status == "failed" and trial.failure_class == FailureClass.INTEGRITY.value:
            self._integrity_notice(session, trial)
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

    def _integrity_notice(self, session: Session, trial: Trial) -> None:
        """A trial that changed protected files: a notice of its own, naming the proposal (a failed
        trial is never promoted; this makes sure a person sees why)."""
        whose = f"proposal #{trial.proposal_id}" if trial.proposal_id else f"the {trial.role} run"
        post(session, "integrity", f"integrity failure: trial {trial.id} of {whose}",
             f"{trial.failure_reason}\nThe trial is failed and never promoted; its metric is not recorded.",
             author_id=trial.experimenter_id, team_id=trial.team_id, proposal_id=trial.proposal_id,
             trial_ids=[trial.id or 0])
        emit(session, "trial.integrity", "trial", trial.id, proposal=trial.proposal_id)

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
        champion = Champion(group="baseline", snapshot_id=first.snapshot_id, overrides=dict(first.overrides),
                            config_signature=first.config_signature,
                            seed_metrics={str(k): v for k, v in sorted(metrics.items())},
                            trial_ids=[t.id or 0 for t in group], metric_mean=mean, metric_std=std,
                            test_metric_mean=sum(tests) / len(tests) if tests else None, rule="baseline")
        session.add(champion)
        session.flush()
        origin = (f"the starting champion (task.overrides {first.overrides})" if first.overrides
                  else "the task's program as shipped")
        champion.model_card = promotion.model_card(self.task, champion, origin, None, None)
        session.add(champion)
        campaign.status = first_phase(campaign.mode)
        session.add(campaign)
        post(session, "promotion", f"baseline champion: {self.task.metric.name} {mean:.4g} ± {std:.3g}",
             champion.model_card, trial_ids=champion.trial_ids)
        emit(session, "champion.baseline", "champion", champion.id, mean=mean, std=std)

    # ---- agents at work -----------------------------------------------------------------------
