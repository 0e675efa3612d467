"""Seed replication and promotion: a candidate becomes champion only if it holds over seeds.

Seeds are paired: each comparison is candidate(seed k) against champion(seed k), so what the two
runs of a seed share (the data split, the initialisation) cancels out. Seed 0 screens; the remaining
seeds replicate; the configured rule decides, and the rule with its numbers (mean gain, p-value,
interval, minimum effect) is recorded on the champion row.

The default rule, `paired`, is what an experimenter would insist on before believing a gain: a
one-sided test of the mean paired difference against the spread of one program's runs, pooled from the
candidate's runs, the champion's runs on the same seeds and (when the champion is a later program) the
baseline's replicates, so that three lucky seeds with nearly equal differences cannot look certain; a
minimum effect of `min_effect_sigmas` such standard deviations; and adaptive replication: while the
result is neither significant nor clearly below the minimum effect, the candidate gets `seed_step` more
seeds, up to `max_seeds`. Its level `alpha` is spent over the possible looks in proportion to their
seeds (Bonferroni: the shares sum to `alpha`), so the chance that a candidate no better than the
champion is promoted stays below `alpha` however many seeds it took. On a task whose seed picks a data
split (`splits` > 1) a program's spread is mostly the difference between splits, which cancels in a
paired difference: there the spread of the paired differences themselves calibrates the test and the
minimum effect, and seeds stop at the number of splits. `mean` and `ttest` are the earlier rules, kept
as named options.
"""

from __future__ import annotations

import functools
import math
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
    #: Inconclusive: run this many more seeds, then decide again (only the `paired` rule asks).
    more_seeds: int = 0

    @property
    def outcome(self) -> str:
        return "promote" if self.promote else "more seeds" if self.more_seeds else "keep the champion"

    def summary(self) -> str:
        d = self.detail
        extra = f", p={d['p_value']:.3g}" if d.get("p_value") is not None else ""
        if d.get("ci95"):
            lo, hi = d["ci95"]
            extra += f", 95% CI [{lo:+.4g}, {hi:+.4g}]"
        if d.get("min_effect") is not None:
            extra += f", min effect {d['min_effect']:.3g}"
        if d.get("conditions_differ"):
            extra += f"; run conditions differ: {d['conditions_differ']}"
        return (f"{self.outcome}: mean improvement {self.delta:+.4g} over {d.get('seeds', '?')} seeds "
                f"({self.rule}{extra})")


def screen(task: TaskSpec, rules: PromotionSection, champion: Champion, seed: int, metric: float,
           reference: Optional[dict[int, float]] = None) -> float:
    """Improvement of a first-seed result over the champion's same seed (positive is better)."""
    ref = reference if reference is not None else reference_of(champion)
    return task.better(metric, ref.get(seed, champion.metric_mean))


def screen_gain(task: TaskSpec, rules: PromotionSection, champion: Champion, seed: int, metric: float,
                reference: Optional[dict[int, float]] = None) -> float:
    """What the screen judges a candidate's first run by. Under the `paired` rule on a task without data
    splits: its improvement over the mean of the champion's stored runs. Against the champion's single run
    on the same seed, one lucky champion run would hold back every candidate of the campaign (they are all
    screened against it) and an unlucky one would wave them all through; the mean of three or more runs
    is steadier, and what a seed shares between two programs there is small (the paired rule assumes it
    too). With data splits the same-seed run is the fair reference (the same split), as under the
    earlier rules."""
    ref = reference if reference is not None else reference_of(champion)
    if not screens_against_mean(task, rules) or not ref:
        return screen(task, rules, champion, seed, metric, ref)
    return task.better(metric, statistics.fmean(ref.values()))


def screens_against_mean(task: TaskSpec, rules: PromotionSection) -> bool:
    """Whether `screen_gain` compares with the mean of the champion's runs (else with its same seed)."""
    return rules.rule == "paired" and task.splits <= 1


def passes_screen(rules: PromotionSection, delta: float) -> bool:
    return delta > rules.screen_delta


def reference_of(champion: Champion) -> dict[int, float]:
    """The champion's per-seed metrics as stored on its row."""
    out: dict[int, float] = {}
    for key, value in champion.seed_metrics.items():
        try:
            out[int(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def max_seeds(rules: PromotionSection) -> int:
    """The most seeds a candidate may run on under `rules`."""
    return max(rules.seeds, rules.max_seeds) if rules.rule == "paired" else rules.seeds


def seed_cap(rules: PromotionSection, splits: int = 1) -> int:
    """The most seeds the `paired` rule runs a candidate on. A task whose seed picks one of `splits` fixed
    data splits measures seed s and s + splits on the same split: beyond that many seeds a deterministic
    program repeats its numbers, and counting them as new evidence would make the test overconfident."""
    return max_seeds(rules) if splits <= 1 else min(max_seeds(rules), max(rules.seeds, splits))


def looks(rules: PromotionSection, splits: int = 1) -> int:
    """How many decisions the `paired` rule may take on one candidate (its alpha is split over them)."""
    return 1 + math.ceil((seed_cap(rules, splits) - rules.seeds) / rules.seed_step)


def decide(task: TaskSpec, rules: PromotionSection, champion: Champion, candidate: dict[int, float],
           reference: Optional[dict[int, float]] = None, baseline: Optional[tuple[float, int]] = None,
           final: bool = False) -> Decision:
    """The rule's verdict on a candidate's per-seed metrics against the champion's same seeds.

    `reference` holds the champion's per-seed metrics (its row's when None); only seeds both have are
    compared. `baseline` is (standard deviation, replicates) of the baseline champion, which calibrates
    the `paired` rule (the champion's own spread when None). `final`: no more seeds can be run.
    """
    ref = reference if reference is not None else reference_of(champion)
    seeds = sorted(s for s in candidate if s in ref)
    deltas = [task.better(candidate[s], ref[s]) for s in seeds]
    mean_delta = statistics.fmean(deltas) if deltas else 0.0
    detail: dict[str, Any] = {
        "seeds": len(seeds),
        "candidate": {str(s): candidate[s] for s in seeds},
        "champion": {str(s): ref[s] for s in seeds},
        "deltas": deltas,
        "min_delta": rules.min_delta,
    }
    if not deltas:
        return Decision(False, rules.rule, 0.0, {**detail, "reason": "no seed in common with the champion"})
    if rules.rule == "paired":
        # The baseline's replicates are evidence apart from this comparison only when the champion is
        # another program: the baseline champion's own runs are already among the compared ones.
        prior = baseline if baseline is not None and champion.rule != "baseline" else None
        return _paired(rules, deltas, mean_delta, [candidate[s] for s in seeds], [ref[s] for s in seeds],
                       prior, final, detail, splits=task.splits)
    detail["ci95"] = _interval(deltas, 0.975)
    promote = mean_delta > rules.min_delta
    if rules.rule == "ttest":
        p_value = _one_sided_paired_p(deltas)
        detail["p_value"] = p_value
        detail["alpha"] = rules.alpha
        promote = promote and p_value < rules.alpha
    return Decision(promote=promote, rule=rules.rule, delta=mean_delta, detail=detail)


# ---- Student's t, in plain arithmetic: the coordinator decides without importing scipy (a second and a
# half of CPU the first time, for every coordinator, status and report process) ----------------------


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), converging for
    x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _beta_regularized(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, with y = 1 - x given exactly."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


def _t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def _t_quantile(q: float, df: int) -> float:
    """The `q` quantile of Student's t with `df` degrees of freedom (bisection on the tail)."""
    if not 0.0 < q < 1.0:
        return math.inf if q >= 1.0 else -math.inf
    if q < 0.5:
        return -_t_quantile(1.0 - q, df)
    tail, lo, hi = 1.0 - q, 0.0, 1.0
    while _t_sf(hi, df) > tail and hi < 1e12:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if _t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def _interval(deltas: list[float], q: float) -> Optional[list[float]]:
    """Two-sided interval of the mean difference (q = 0.975 for 95%) from the differences alone."""
    if len(deltas) < 2:
        return None
    mean = statistics.fmean(deltas)
    half = _t_quantile(q, len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
    return [mean - half, mean + half]


def level_at(rules: PromotionSection, n: int, splits: int = 1) -> float:
    """The share of `alpha` the `paired` rule spends at its look on `n` seeds: in proportion to the seeds
    (the information) each look has, so the early looks, which can reject only a very large gain, spend
    little; the shares over all possible looks sum to `alpha` (Bonferroni), whatever path a candidate takes."""
    cap = seed_cap(rules, splits)
    points = [min(rules.seeds + k * rules.seed_step, cap) for k in range(looks(rules, splits))]
    return rules.alpha * min(n, cap) / sum(points)


def _paired(rules: PromotionSection, deltas: list[float], mean: float, candidate: list[float],
            champion: list[float], baseline: Optional[tuple[float, int]], final: bool, detail: dict[str, Any],
            splits: int = 1) -> Decision:
    n = len(deltas)
    if splits > 1:
        # The seed picks the data split: a program's seed-to-seed spread is mostly the difference between
        # splits, which cancels in a paired difference (both sides scored on the same split). The noise
        # that matters is the spread of the differences themselves, so they alone calibrate the test and the
        # minimum effect (in the units of one run: a difference of two runs varies sqrt(2) times as much).
        calibration = "paired differences"
        squares, df = _squares(deltas) / 2, n - 1
        replicates = n
    else:
        # The spread of one program's runs, pooled from the candidate's runs and the champion's runs on the
        # compared seeds (and the baseline's replicates when the champion is another program). Each side's
        # spread is independent of its own mean, so the test is exact for normal noise; estimating it from
        # the differences' spread plus the baseline's replicates would count the champion's runs twice when
        # the champion is the baseline (tight baseline seeds then made every candidate look certain).
        # Noise that a seed gives every program alike (a shared initialisation) only widens this spread.
        calibration = "replicates of both programs"
        squares = _squares(candidate) + _squares(champion)
        df = 2 * (n - 1)
        replicates = 2 * n
        if baseline is not None and baseline[1] >= 2 and baseline[0] > 0:
            squares += (baseline[1] - 1) * baseline[0] ** 2
            df += baseline[1] - 1
            replicates += baseline[1]
    sigma = math.sqrt(squares / df) if df > 0 else 0.0
    se = sigma * math.sqrt(2 / n)
    min_effect = max(rules.min_delta, rules.min_effect_sigmas * sigma)
    level = level_at(rules, n, splits)
    if df == 0:  # one seed and nothing to calibrate against: no test is possible yet
        p_value, ci, futile = 1.0, None, False
    elif se <= 1e-12 * max(1.0, abs(mean)):  # no variation at all: the difference is what it is
        p_value, ci = (0.0 if mean > 0 else 1.0), [mean, mean]
        futile = mean <= min_effect
    else:
        p_value = _t_sf(mean / se, df)
        half = _t_quantile(0.975, df) * se
        ci = [mean - half, mean + half]
        futile = mean + _t_quantile(1 - rules.futility, df) * se < min_effect
    promote = p_value < level and mean >= min_effect and mean > rules.min_delta
    cap = seed_cap(rules, splits)
    at_cap = final or n >= cap
    more = 0 if promote or futile or at_cap else min(rules.seed_step, cap - n)
    detail.update({"p_value": p_value, "alpha": rules.alpha, "level": level, "looks": looks(rules, splits),
                   "min_effect": min_effect, "calibration": calibration,
                   "pooled_sd": sigma, "replicates": replicates, "df": df, "ci95": ci,
                   "verdict": "promote" if promote else "futile" if futile else "more seeds" if more
                   else "inconclusive at the cap"})
    return Decision(promote=promote, rule="paired", delta=mean, detail=detail, more_seeds=more)


def _squares(values: list[float]) -> float:
    mean = statistics.fmean(values) if values else 0.0
    return sum((v - mean) ** 2 for v in values)


def _one_sided_paired_p(deltas: list[float]) -> float:
    if len(deltas) < 2:
        return 1.0
    if statistics.pstdev(deltas) == 0:
        return 0.0 if statistics.fmean(deltas) > 0 else 1.0
    se = statistics.stdev(deltas) / math.sqrt(len(deltas))
    return _t_sf(statistics.fmean(deltas) / se, len(deltas) - 1)


def summarize(metrics: dict[int, float]) -> tuple[float, float]:
    values = list(metrics.values())
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@functools.lru_cache(maxsize=256)
def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (what every 95% interval shown uses)."""
    return _t_quantile(0.975, df)


def interval_text(mean: float, std: float, n: int) -> str:
    """`mean ± std (95% CI [lo, hi], n seeds)`: how a champion's number is shown everywhere."""
    text = f"{mean:.4g} ± {std:.3g}"
    if n >= 2:
        half = t975(n - 1) * std / math.sqrt(n)
        text += f" (95% CI [{mean - half:.4g}, {mean + half:.4g}], {n} seeds)"
    else:
        text += f" ({n} seed)"
    return text


def rule_text(rule: str, detail: dict[str, Any]) -> str:
    """The promotion rule with its numbers, one line."""
    if rule == "baseline":
        return "baseline (the starting program, not a comparison)"
    parts = [rule, f"{detail.get('seeds', '?')} paired seeds"]
    if detail.get("deltas"):
        parts.append(f"mean gain {statistics.fmean(detail['deltas']):+.4g}")
    if detail.get("ci95"):
        lo, hi = detail["ci95"]
        parts.append(f"95% CI of the gain [{lo:+.4g}, {hi:+.4g}]")
    if detail.get("p_value") is not None:
        level = detail.get("level", detail.get("alpha"))
        parts.append(f"p={detail['p_value']:.3g} (< {level:.3g})" if level is not None else
                     f"p={detail['p_value']:.3g}")
    if detail.get("min_effect") is not None:
        # `baseline_sd` is what champions promoted before the runs' pooled spread was recorded carry.
        sd = detail.get("pooled_sd", detail.get("baseline_sd", 0.0))
        source = {"paired differences": "sd of the paired differences / sqrt 2",
                  "replicates of both programs": f"sd of the runs, {detail.get('df', '?')} df"}.get(
                      str(detail.get("calibration")), "baseline sd")
        parts.append(f"min effect {detail['min_effect']:.3g} ({source} {sd:.3g})")
    elif detail.get("min_delta"):
        parts.append(f"min delta {detail['min_delta']:.3g}")
    return ", ".join(parts)


def model_card(task: TaskSpec, champion: Champion, change: str, team: Optional[str],
               previous: Optional[Champion], *, hypothesis: str = "", rationale: str = "",
               expected: str = "", diff: Optional[str] = None, notes: str = "") -> str:
    """The champion's card for the forum, the report and `autosci show`: what was believed, what was
    implemented, what it measured, and by which rule. It never carries the held-out test metric."""
    ordered = sorted(champion.seed_metrics.items(), key=lambda kv: int(kv[0]))
    seeds = ", ".join(f"seed {k}: {v:.4g}" for k, v in ordered)
    lines = [
        f"Champion #{champion.id} of task {task.name}",
        f"{task.metric.name} ({task.metric.direction}): "
        f"{interval_text(champion.metric_mean, champion.metric_std, len(champion.seed_metrics))}",
        f"per seed: {seeds}",
        f"change: {change}",
    ]
    if hypothesis:
        lines.append(f"hypothesis: {hypothesis}")
    if rationale:
        lines.append(f"rationale: {rationale}")
    if expected:
        lines.append(f"expected effect: {expected}")
    lines += [
        f"program snapshot {champion.snapshot_id}; overrides {champion.overrides}",
        f"promotion rule: {rule_text(champion.rule, champion.rule_detail)}",
    ]
    detail = champion.rule_detail or {}
    if detail.get("conditions_candidate") or detail.get("conditions_champion"):
        lines.append(f"run conditions: this champion's runs {detail.get('conditions_candidate') or '?'}; "
                     f"the previous champion's runs it was compared with "
                     f"{detail.get('conditions_champion') or '?'}")
    if detail.get("conditions_differ"):
        lines.append(f"WARNING: compared across different run conditions ({detail['conditions_differ']}); "
                     "on a metric that depends on time or hardware the gain may be the conditions'")
    if previous is not None:
        lines.append(f"previous champion #{previous.id}: {previous.metric_mean:.4g} "
                     f"(delta {champion.delta:+.4g})")
    if team:
        lines.append(f"found by team {team}")
    if notes:
        lines.append(f"experimenter's notes: {notes}")
    if diff is not None:
        lines.append("implemented diff against the previous champion:")
        lines.append(diff.rstrip("\n") if diff else "(none: the same program and overrides)")
    return "\n".join(lines)
