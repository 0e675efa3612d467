"""Seed replication and promotion: a candidate becomes champion only if it holds over seeds.

Seeds are paired: the champion was run on seeds 0..n-1 and so is every candidate, so each
comparison is candidate(seed k) against champion(seed k). Seed 0 screens; the remaining seeds
replicate; the configured rule decides, and the rule with its numbers is recorded on the
champion row.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import PromotionSection
from ..state.models import Champion
from ..task import TaskSpec


@dataclass
class Decision:
    promote: bool
    rule: str
    delta: float  # mean improvement over the champion on the same seeds
    detail: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        verdict = "promote" if self.promote else "keep the champion"
        extra = f", p={self.detail['p_value']:.3g}" if "p_value" in self.detail else ""
        return f"{verdict}: mean improvement {self.delta:+.4g} over {self.detail.get('seeds', '?')} seeds ({self.rule}{extra})"


def screen(task: TaskSpec, rules: PromotionSection, champion: Champion, seed: int, metric: float) -> float:
    """Improvement of a first-seed result over the champion's same seed (positive is better)."""
    reference = champion.seed_metrics.get(str(seed), champion.metric_mean)
    return task.better(metric, reference)


def passes_screen(rules: PromotionSection, delta: float) -> bool:
    return delta > rules.screen_delta


def decide(task: TaskSpec, rules: PromotionSection, champion: Champion,
           candidate: dict[int, float]) -> Decision:
    seeds = sorted(candidate)
    deltas = [task.better(candidate[s], champion.seed_metrics.get(str(s), champion.metric_mean)) for s in seeds]
    mean_delta = statistics.fmean(deltas)
    detail: dict[str, Any] = {
        "seeds": len(seeds),
        "candidate": {str(s): candidate[s] for s in seeds},
        "champion": {str(s): champion.seed_metrics.get(str(s)) for s in seeds},
        "deltas": deltas,
        "min_delta": rules.min_delta,
    }
    promote = mean_delta > rules.min_delta
    if rules.rule == "ttest":
        p_value = _one_sided_paired_p(deltas)
        detail["p_value"] = p_value
        detail["alpha"] = rules.alpha
        promote = promote and p_value < rules.alpha
    return Decision(promote=promote, rule=rules.rule, delta=mean_delta, detail=detail)


def _one_sided_paired_p(deltas: list[float]) -> float:
    if len(deltas) < 2:
        return 1.0
    if statistics.pstdev(deltas) == 0:
        return 0.0 if statistics.fmean(deltas) > 0 else 1.0
    from scipy import stats  # imported here: a second of start-up that only the ttest rule needs

    result = stats.ttest_1samp(deltas, 0.0, alternative="greater")
    return float(result.pvalue)


def summarize(metrics: dict[int, float]) -> tuple[float, float]:
    values = list(metrics.values())
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def model_card(task: TaskSpec, champion: Champion, change: str, team: Optional[str],
               previous: Optional[Champion]) -> str:
    """A short card for the forum and the report. It never carries the held-out test metric."""
    seeds = ", ".join(f"seed {k}: {v:.4g}" for k, v in sorted(champion.seed_metrics.items()))
    lines = [
        f"Champion #{champion.id} of task {task.name}",
        f"{task.metric.name} ({task.metric.direction}): {champion.metric_mean:.4g} ± {champion.metric_std:.3g} "
        f"over {len(champion.seed_metrics)} seeds ({seeds})",
        f"change: {change}",
        f"program snapshot {champion.snapshot_id}; overrides {champion.overrides}",
        f"promotion rule: {champion.rule}",
    ]
    if previous is not None:
        lines.append(f"previous champion #{previous.id}: {previous.metric_mean:.4g} (delta {champion.delta:+.4g})")
    if team:
        lines.append(f"found by team {team}")
    return "\n".join(lines)
