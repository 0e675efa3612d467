"""What a result sets in motion, inside the transaction that ingests it.

Replication of a candidate that passes its first-seed screen, the promotion decision (with more
seeds while the `paired` rule finds it inconclusive, and the champion's runs on those seeds: reused
from the log where they exist, otherwise run in the same batch as `champion_rerun` trials), the
conclusion of a proposal (team counters, the experimenter freed), the baseline champion, and the
same-seed retry of a trial lost to the infrastructure. Doing this in the ingest transaction means a
crash can never leave a result ingested but not acted on.

A candidate is always judged against the champion it was built on. If another champion was
promoted while it ran, it never replaces the new champion (whose change it does not contain): its
change is re-applied to the new champion and measured again there as a new candidate trial where it
applies cleanly (`rebase`), and otherwise it is concluded as `stale` (its idea may be proposed again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sqlmodel import Session, col, select

from ..agents.roles import post
from ..agents.views import current_champion
from ..config import CampaignConfig
from ..execution.results import FailureClass
from ..state import budget, campaigns, champions, emit, proposals, trials
from ..state import conditions as run_conditions
from ..state.lifecycle import (FINISHED_TRIALS, PostKind, ProposalOutcome, ProposalStatus, TrialRole,
                               TrialStatus)
from ..state.models import Campaign, Champion, Proposal, Team, Trial
from ..task import TaskSpec, config_signature
from . import promotion, provenance, rebase
from .modes import first_phase

#: The role of a champion's run on a seed it had no stored result for (or on every seed of a
#: replication when `promotion.remeasure_champion` is set); its seed set is the candidate's + this.
CHAMPION_RERUN = TrialRole.CHAMPION_RERUN.value
RERUN_SUFFIX = trials.RERUN_SUFFIX
#: How many times one proposal's change is re-applied to a newer champion before it is left stale.
MAX_REBASES = 2


def latest_seed_set(session: Session, proposal: Proposal) -> str:
    """The seed set of a proposal's latest candidate trial (a re-based proposal has more than one)."""
    row = session.exec(select(Trial).where(Trial.proposal_id == proposal.id)
                       .where(Trial.role == TrialRole.CANDIDATE).order_by(col(Trial.id).desc())).first()
    return row.seed_set if row is not None else ""


class Outcomes:
    def __init__(self, task: TaskSpec, config: CampaignConfig) -> None:
        self.task = task
        self.config = config

    def react(self, session: Session, trial: Trial) -> int:
        if trial.status == TrialStatus.FAILED and trial.failure_class == FailureClass.INTEGRITY.value:
            self._integrity_notice(session, trial)
        if self._retry_if_lost(session, trial):
            return 0
        if trial.role == TrialRole.BASELINE:
            self._react_baseline(session)
            return 0
        proposal = session.get(Proposal, trial.proposal_id)
        champion = current_champion(session)
        assert proposal is not None and champion is not None
        if proposal.status == ProposalStatus.DONE:  # concluded already (a late duplicate): nothing to decide
            return 0
        rules = self.config.promotion
        parent = self._parent(session, trial) or champion
        # The parent champion's runs per seed, once: the trial's Δ champion and the screen both read them.
        reference: dict[int, float] = {}
        if trial.role in (TrialRole.CANDIDATE, TrialRole.REPLICATE):
            self._record_provenance(session, trial, parent)
            if trial.status == TrialStatus.SUCCEEDED and trial.metric is not None:
                reference = self._reference(session, parent, trial.seed_set)
                trial.champion_delta = promotion.screen(self.task, rules, parent, trial.seed, trial.metric,
                                                        reference)
            session.add(trial)
        if trial.role == TrialRole.CANDIDATE:
            if trial.status == TrialStatus.FAILED:
                post(session, PostKind.FAILURE, f"#{proposal.id} failed: {trial.failure_class}",
                     f"{trial.failure_reason}\n--- log tail ---\n{trial.log_tail[-1500:]}",
                     author_id=trial.experimenter_id, team_id=trial.team_id, proposal_id=proposal.id,
                     trial_ids=[trial.id or 0])
                proposals.conclude(session, proposal, ProposalOutcome.FAILED)
                return 1
            if parent.id != champion.id:
                return self._stale(session, proposal, parent, champion, [trial])
            delta = (promotion.screen_gain(self.task, rules, parent, trial.seed, trial.metric, reference)
                     if trial.metric is not None else 0.0)
            if promotion.passes_screen(rules, delta) and rules.seeds > 1:
                # A timed task's screen ran apart from the champion: its replication runs seed 0 again,
                # next to the champion's, so that every pair the decision uses ran side by side.
                seeds = list(range(0 if self.task.timed else 1, rules.seeds))
                self._add_seeds(session, proposal, trial, champion, seeds, first=True)
                proposals.replicate(session, proposal)
                by_mean = promotion.screens_against_mean(self.task, rules)
                against = "the mean of the champion's runs" if by_mean else "the champion's same seed"
                post(session, PostKind.RESULT, f"#{proposal.id} beats {against} by {delta:+.4g} on seed 0",
                     f"{self.task.metric.name}={trial.metric:.4g}; replicating on seeds 1..{rules.seeds - 1}",
                     author_id=trial.experimenter_id, team_id=trial.team_id, proposal_id=proposal.id,
                     trial_ids=[trial.id or 0])
                emit(session, "proposal.replicating", "proposal", proposal.id, delta=delta)
                return 0
            return self._decide(session, proposal, champion, [trial])
        # A replicate or a champion rerun: decide once every seed of the seed set (both sides) is in.
        concluded = self._when_complete(session, proposal, trial.seed_set, parent, champion)
        if trial.role == CHAMPION_RERUN:
            # Another replication may have been waiting for this run of the champion (runs are shared,
            # never doubled): it can be decided now.
            for other in self._waiting_on(session, trial, proposal.id or 0):
                concluded += self._when_complete(session, other, latest_seed_set(session, other), parent,
                                                 champion)
        return concluded

    def _when_complete(self, session: Session, proposal: Proposal, seed_set: str, parent: Champion,
                       champion: Champion) -> int:
        """Decide a replication once every seed of its seed set is in, on both sides: its own trials, its
        own champion reruns, and the champion's runs on its seeds that another replication started."""
        seed_set = seed_set.removesuffix(RERUN_SUFFIX)
        names = [seed_set, seed_set + RERUN_SUFFIX]
        everything = session.exec(select(Trial).where(col(Trial.group).in_(names))
                                  .where(col(Trial.superseded_by).is_(None))).all()
        if any(t.status not in FINISHED_TRIALS for t in everything):
            return 0
        group = sorted((t for t in everything if t.role in (TrialRole.CANDIDATE, TrialRole.REPLICATE)),
                       key=lambda t: t.seed)
        if not group:
            return 0
        if self._pending_champion_seeds(session, parent, {t.seed for t in group}):
            return 0
        if parent.id != champion.id:
            return self._stale(session, proposal, parent, champion, group)
        return self._decide(session, proposal, champion, group)

    def _pending_champion_seeds(self, session: Session, champion: Champion, seeds: set[int]) -> set[int]:
        """Seeds among `seeds` on which a run of `champion`'s configuration is under way (created or
        submitted, not yet finished)."""
        if not seeds:
            return set()
        runs = session.exec(select(Trial).where(Trial.config_signature == champion.config_signature)
                            .where(col(Trial.seed).in_(list(seeds)))
                            .where(col(Trial.status).not_in(FINISHED_TRIALS))
                            .where(col(Trial.superseded_by).is_(None))).all()
        return {run.seed for run in runs}

    def _waiting_on(self, session: Session, rerun: Trial, own: int) -> list[Proposal]:
        """Replicating proposals (other than `own`) built on the champion `rerun` measured."""
        rows = session.exec(select(Proposal).where(Proposal.status == ProposalStatus.REPLICATING)
                            .where(Proposal.id != own)).all()
        return [p for p in rows if p.base_champion_id == rerun.parent_champion_id
                or any(t.parent_champion_id == rerun.parent_champion_id
                       for t in session.exec(select(Trial).where(Trial.proposal_id == p.id)).all())]

    # ---- provenance and the champion's side of a paired comparison ---------------------------

    def _parent(self, session: Session, trial: Trial) -> Optional[Champion]:
        """The champion a trial's program was built on: recorded on it or on the trial it replicates
        or retries; for a row written without it, the champion current when it was created."""
        seen: set[int] = set()
        row: Optional[Trial] = trial
        while row is not None and row.id not in seen:
            if row.parent_champion_id is not None:
                return session.get(Champion, row.parent_champion_id)
            seen.add(row.id or 0)
            link = row.replicate_of or row.retry_of
            row = session.get(Trial, link) if link else None
        return session.exec(select(Champion).where(Champion.promoted_at <= trial.created_at)
                            .order_by(col(Champion.id).desc())).first()

    def _record_provenance(self, session: Session, trial: Trial, parent: Champion) -> None:
        """The trial's parent champion and its diff against it, once (replicates copy the candidate's)."""
        if trial.parent_champion_id is None:
            trial.parent_champion_id = parent.id
        if trial.diff is None:
            source = session.get(Trial, trial.replicate_of) if trial.replicate_of else None
            if source is not None and source.diff is not None and source.snapshot_id == trial.snapshot_id:
                trial.diff = source.diff
            else:
                folder = Path(session.exec(select(Campaign)).one().folder)
                trial.diff = provenance.program_diff(folder, parent.snapshot_id, parent.overrides,
                                                     trial.snapshot_id, trial.overrides)

    def _reference(self, session: Session, champion: Champion, seed_set: str) -> dict[int, float]:
        """The champion's metric per seed: its row, then its other stored runs (same program and
        overrides, any role) on seeds the row lacks; this seed set's own champion reruns take precedence
        (they ran next to the candidate)."""
        reference = promotion.reference_of(champion)
        runs = session.exec(select(Trial).where(Trial.config_signature == champion.config_signature)
                            .where(Trial.status == TrialStatus.SUCCEEDED)
                            .where(col(Trial.metric).is_not(None))
                            .order_by(col(Trial.id))).all()
        own = seed_set.removesuffix(RERUN_SUFFIX) + RERUN_SUFFIX
        for run in runs:
            if run.seed_set == own or run.seed not in reference:
                reference[run.seed] = float(run.metric)  # type: ignore[arg-type]
        return reference

    def _baseline_spread(self, session: Session) -> Optional[tuple[float, int]]:
        baseline = session.exec(select(Champion).order_by(col(Champion.id))).first()
        return (baseline.metric_std, len(baseline.seed_metrics)) if baseline is not None else None

    def _room(self, session: Session) -> int:
        """Trials that may still be created without eating into what running candidates have reserved
        (the budget's own count: a trial being submitted counts as one to come)."""
        return budget.trials_room(session, self.config)

    def _add_seeds(self, session: Session, proposal: Proposal, template: Trial, champion: Champion,
                   seeds: list[int], first: bool = False) -> int:
        """Replicates of the candidate on `seeds`, and the champion's runs on those of them it has no
        stored result for (all of them, and seed 0 too on the first round, when the champion is
        re-measured). Returns how many trials were created (0 if the budget has no room)."""
        reference = self._reference(session, champion, template.seed_set)
        remeasure = self._remeasures()
        wanted = sorted({0, *seeds}) if first and remeasure else seeds
        # A run of the champion on a seed that another replication has under way is shared, not doubled
        # (the decision waits for it); a remeasured champion runs next to this replication only.
        pending = set() if remeasure else self._pending_champion_seeds(session, champion, set(wanted))
        missing = [s for s in wanted if remeasure or (s not in reference and s not in pending)]
        if not first and len(seeds) + len(missing) > self._room(session):
            return 0
        if first and missing and len(missing) > self._room(session):
            missing = [s for s in missing if s not in reference]  # re-measuring does not fit: reuse
        trials.replicates(session, template, seeds, champion)
        trials.champion_reruns(session, template, missing, champion)
        if missing:
            emit(session, "champion.remeasured", "champion", champion.id, proposal=proposal.id, seeds=missing)
        return len(seeds) + len(missing)

    def _conditions(self, session: Session, champion: Champion, group: list[Trial],
                    metrics: dict[int, float]) -> dict[str, str]:
        """The run conditions of the two sides of a comparison, and why they differ where they do (a
        flag the decision, the model card and the report carry: a pair measured under different load is
        no fair pair on a metric that depends on it)."""
        own = group[0].seed_set.removesuffix(RERUN_SUFFIX) + RERUN_SUFFIX
        runs = session.exec(select(Trial).where(Trial.config_signature == champion.config_signature)
                            .where(Trial.status == TrialStatus.SUCCEEDED).where(col(Trial.seed).in_(list(metrics)))
                            .order_by(col(Trial.id))).all()
        by_seed: dict[int, Trial] = {}
        for run in runs:  # the same precedence as the reference: this seed set's reruns, else the first run
            if run.seed_set == own or run.seed not in by_seed:
                by_seed[run.seed] = run
        mine = [t.conditions or {} for t in group if t.seed in metrics]
        theirs = [t.conditions or {} for t in by_seed.values()]
        out = {"conditions_candidate": "; ".join(sorted({run_conditions.describe(c) for c in mine})),
               "conditions_champion": "; ".join(sorted({run_conditions.describe(c) for c in theirs}))}
        why = run_conditions.differ(mine, theirs)
        if why:
            out["conditions_differ"] = why
        return out

    def _rebase(self, session: Session, proposal: Proposal, parent: Champion, champion: Champion,
                group: list[Trial]) -> Optional[str]:
        """Re-apply the candidate's change to `champion` as a new seed-0 candidate trial; None when done,
        else why not (a conflict, the change is in the champion already, no budget, re-based enough)."""
        if not self.config.promotion.rebase:
            return "re-basing is off (promotion.rebase)"
        source = next((t for t in group if t.role == TrialRole.CANDIDATE), group[0])
        seed_sets = session.exec(select(Trial.group).where(Trial.proposal_id == proposal.id)
                                 .where(Trial.role == TrialRole.CANDIDATE)).all()
        if len(set(seed_sets)) > MAX_REBASES:
            return f"re-based {MAX_REBASES} times already"
        # Measured again as a new candidate: one trial now, and the replication a candidate reserves
        # (`_room` counts it already for a proposal still at its screen, not for one replicating).
        needed = 1 if proposal.status == ProposalStatus.RUNNING else self.config.promotion.seeds
        if self._room(session) < needed:
            return "the trial budget has no room to measure it again"
        folder = Path(session.exec(select(Campaign)).one().folder)
        moved = rebase.rebase(self.task, folder, (parent.snapshot_id, dict(parent.overrides)),
                              (source.snapshot_id, dict(source.overrides)),
                              (champion.snapshot_id, dict(champion.overrides)))
        if isinstance(moved, str):
            return f"its change does not apply cleanly to champion #{champion.id} ({moved})"
        signature = config_signature(moved.snapshot_id, moved.overrides)
        if signature == champion.config_signature:
            return f"champion #{champion.id} already holds its change"
        trial = trials.rebased_candidate(session, proposal, source, champion, snapshot_id=moved.snapshot_id,
                                         overrides=moved.overrides, config_signature=signature)
        proposals.rebase(session, proposal, champion.id or 0)
        post(session, PostKind.RESULT, f"#{proposal.id} re-based on champion #{champion.id}",
             f"champion #{champion.id} was promoted while it ran on champion #{parent.id}; its change is "
             f"re-applied to the new champion and measured again (trial {trial.id}).",
             team_id=proposal.team_id, proposal_id=proposal.id, trial_ids=[t.id or 0 for t in group])
        emit(session, "proposal.rebased", "proposal", proposal.id, parent=parent.id, champion=champion.id,
             trial=trial.id)
        return None

    def _remeasures(self) -> bool:
        """Whether the champion is re-run next to each replication: the task's metric depends on time or
        hardware (`noise: timed`), or the campaign asks for it (`promotion.remeasure_champion`)."""
        return self.config.promotion.remeasure_champion or self.task.timed

    def _stale(self, session: Session, proposal: Proposal, parent: Champion, champion: Champion,
               group: list[Trial]) -> int:
        """A candidate built on an earlier champion: never promoted over the new one. Its change is
        re-applied to the new champion and measured again there where that is unambiguous (`rebase`), and
        the budget has room; otherwise it is concluded as stale."""
        why = self._rebase(session, proposal, parent, champion, group)
        if why is None:
            return 0
        post(session, PostKind.RESULT,
             f"#{proposal.id} is stale: champion #{champion.id} was promoted while it ran",
             f"it was built on champion #{parent.id} and measured against it; promoting it would drop the "
             f"change of champion #{champion.id}. It was not re-based: {why}. Propose it again on the new "
             "champion to test it there.",
             team_id=proposal.team_id, proposal_id=proposal.id, trial_ids=[t.id or 0 for t in group])
        emit(session, "proposal.stale", "proposal", proposal.id, parent=parent.id, champion=champion.id,
             reason=why)
        proposals.conclude(session, proposal, ProposalOutcome.STALE)
        return 1

    def _integrity_notice(self, session: Session, trial: Trial) -> None:
        """A trial that changed protected files: a notice of its own, naming the proposal (a failed
        trial is never promoted; this makes sure a person sees why)."""
        whose = f"proposal #{trial.proposal_id}" if trial.proposal_id else f"the {trial.role} run"
        post(session, PostKind.INTEGRITY, f"integrity failure: trial {trial.id} of {whose}",
             f"{trial.failure_reason}\nThe trial is failed and never promoted; its metric is not recorded.",
             author_id=trial.experimenter_id, team_id=trial.team_id, proposal_id=trial.proposal_id,
             trial_ids=[trial.id or 0])
        emit(session, "trial.integrity", "trial", trial.id, proposal=trial.proposal_id)

    def _retry_if_lost(self, session: Session, trial: Trial) -> bool:
        """A trial lost to the infrastructure runs again on the same seed, with lineage, bounded."""
        try:
            lost = trial.status == TrialStatus.FAILED and FailureClass(trial.failure_class).is_infrastructure
        except ValueError:
            lost = False
        if not lost or trial.attempt >= self.config.executor.max_retries:
            return False
        retry = trials.retry(session, trial)
        emit(session, "trial.retried", "trial", trial.id, retry=retry.id, failure_class=trial.failure_class)
        return True

    def _decide(self, session: Session, proposal: Proposal, champion: Champion, group: list[Trial]) -> int:
        failed = [t for t in group if t.status == TrialStatus.FAILED]
        if failed:
            post(session, PostKind.FAILURE, f"#{proposal.id} replication failed",
                 "; ".join(f"trial {t.id} (seed {t.seed}): {t.failure_class}: {t.failure_reason}" for t in failed),
                 team_id=proposal.team_id, proposal_id=proposal.id, trial_ids=[t.id or 0 for t in failed])
            proposals.conclude(session, proposal, ProposalOutcome.FAILED)
            return 1
        # A seed run twice (a timed task's screen and its side-by-side re-run): the re-run counts.
        ordered = sorted(group, key=lambda t: (t.seed, t.role == TrialRole.REPLICATE, t.id or 0))
        metrics = {t.seed: float(t.metric) for t in ordered if t.metric is not None}
        rules = self.config.promotion
        if len(group) == 1 and rules.seeds > 1:
            decision = promotion.Decision(False, rules.rule, group[0].champion_delta or 0.0,
                                          {"seeds": 1, "screen_delta": rules.screen_delta})
        else:
            reference = self._reference(session, champion, group[0].seed_set)
            spread = self._baseline_spread(session)
            decision = promotion.decide(self.task, rules, champion, metrics, reference, spread)
            if decision.more_seeds:
                start = max(t.seed for t in group) + 1
                seeds = list(range(start, start + decision.more_seeds))
                if self._add_seeds(session, proposal, group[0], champion, seeds):
                    proposals.replicate(session, proposal)
                    post(session, PostKind.RESULT, f"#{proposal.id}: inconclusive on {len(metrics)} seeds, "
                         f"adding seeds {seeds[0]}..{seeds[-1]}", decision.summary(), team_id=proposal.team_id,
                         proposal_id=proposal.id, trial_ids=[t.id or 0 for t in group])
                    emit(session, "proposal.more_seeds", "proposal", proposal.id, seeds=seeds,
                         p_value=decision.detail.get("p_value"), delta=decision.delta)
                    return 0
                decision = promotion.decide(self.task, rules, champion, metrics, reference, spread,
                                            final=True)
                decision.detail["stopped_by"] = "budget"
        decision.detail.update(self._conditions(session, champion, group, metrics))
        ids = [t.id or 0 for t in group]
        if decision.promote:
            self._promote(session, proposal, champion, group, metrics, decision)
        post(session, PostKind.RESULT, f"#{proposal.id}: {decision.summary()}",
             f"per-seed {self.task.metric.name}: {metrics}", team_id=proposal.team_id,
             proposal_id=proposal.id, trial_ids=ids)
        proposals.conclude(session, proposal,
                           ProposalOutcome.PROMOTED if decision.promote else ProposalOutcome.NOT_PROMOTED)
        return 1

    def _promote(self, session: Session, proposal: Proposal, previous: Champion, group: list[Trial],
                 metrics: dict[int, float], decision: promotion.Decision) -> None:
        mean, std = promotion.summarize(metrics)
        team = session.get(Team, proposal.team_id) if proposal.team_id else None
        first = group[0]
        champion = champions.promote(
            session, proposal, previous, group, metrics, mean, std, delta=decision.delta, rule=decision.rule,
            rule_detail=decision.detail,
            card=lambda row: promotion.model_card(
                self.task, row, proposal.change_signature, team.name if team else None, previous,
                hypothesis=proposal.title, rationale=proposal.rationale, expected=proposal.expected_effect,
                diff=first.diff, notes=first.notes or ""))
        post(session, PostKind.PROMOTION, f"new champion #{champion.id}: {self.task.metric.name} {mean:.4g}",
             champion.model_card, team_id=proposal.team_id, proposal_id=proposal.id,
             trial_ids=champion.trial_ids)
        emit(session, "champion.promoted", "champion", champion.id, proposal=proposal.id, mean=mean,
             delta=decision.delta, rule=decision.rule)

    def _react_baseline(self, session: Session) -> None:
        group = session.exec(select(Trial).where(Trial.role == TrialRole.BASELINE)
                             .where(col(Trial.superseded_by).is_(None))).all()
        if any(t.status not in FINISHED_TRIALS for t in group):
            return
        campaign = session.exec(select(Campaign)).one()
        failed = [t for t in group if t.status == TrialStatus.FAILED]
        if failed:
            t = failed[0]
            campaigns.fail(session, campaign)
            post(session, PostKind.FAILURE, "the champion program itself fails",
                 f"trial {t.id} (seed {t.seed}): {t.failure_class}: {t.failure_reason}\n{t.log_tail[-1500:]}",
                 trial_ids=[x.id or 0 for x in failed])
            emit(session, "campaign.failed", "campaign", campaign.id, reason="baseline failed")
            return
        metrics = {t.seed: float(t.metric) for t in group if t.metric is not None}
        mean, std = promotion.summarize(metrics)
        first = group[0]
        origin = (f"the starting champion (task.overrides {first.overrides})" if first.overrides
                  else "the task's program as shipped")
        champion = champions.baseline(
            session, group, metrics, mean, std,
            card=lambda row: promotion.model_card(self.task, row, origin, None, None))
        campaigns.enter(session, campaign, first_phase(campaign.mode))
        post(session, PostKind.PROMOTION,
             f"baseline champion: {self.task.metric.name} {mean:.4g} ± {std:.3g}",
             champion.model_card, trial_ids=champion.trial_ids)
        emit(session, "champion.baseline", "champion", champion.id, mean=mean, std=std)

    # ---- agents at work -----------------------------------------------------------------------
