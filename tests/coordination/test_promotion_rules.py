"""Every promotion rule, on a task that maximizes and on one that minimizes its metric.

For each rule (`mean`, `ttest` and the default `paired`) and each direction: a clear gain is
promoted, a clear loss is not, an inconclusive result is not promoted by the rules that test (the
`paired` rule asks for more seeds first), and zero variance is decided by the sign of the difference.
A candidate is written as per-seed *improvements* over the champion and turned into metric values
in the task's direction, so a rule that ignored the direction would promote the losses of a
minimize task and keep its gains.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional

import pytest

from autosci_hpc.config import PromotionSection
from autosci_hpc.coordination import promotion
from autosci_hpc.state.models import Champion
from autosci_hpc.task import Metric, TaskSpec, load_task

from helpers import FIXTURE_TASKS

CHAMPION = {0: 0.50, 1: 0.52, 2: 0.49, 3: 0.51, 4: 0.50, 5: 0.48, 6: 0.52, 7: 0.50, 8: 0.51, 9: 0.49, 10: 0.50}
GAIN = [0.10, 0.12, 0.09]
LOSS = [-0.10, -0.12, -0.09]
MIXED = [0.03, -0.025, 0.01]  # mean +0.005: a coin toss


def task_of(direction: str) -> TaskSpec:
    task = load_task(FIXTURE_TASKS / "toy")
    return task.model_copy(update={"metric": Metric(name="score", direction=direction)})


def champion(std: float = 0.01, seeds: int = 3) -> Champion:
    values = {str(k): CHAMPION[k] for k in range(seeds)}
    return Champion(id=1, group="baseline", snapshot_id="s", config_signature="s|", seed_metrics=values,
                    metric_mean=sum(values.values()) / seeds, metric_std=std, rule="baseline")


def candidate(task: TaskSpec, improvements: list[float]) -> dict[int, float]:
    """Metric values that improve on the champion's seed k by improvements[k] in the task's direction."""
    sign = 1.0 if task.maximize else -1.0
    return {k: CHAMPION[k] + sign * d for k, d in enumerate(improvements)}


def rules(rule: str, **extra: object) -> PromotionSection:
    return PromotionSection(rule=rule, seeds=3, **extra)  # type: ignore[arg-type]


def decide(direction: str, rule: str, improvements: list[float], *, std: float = 0.01,
           final: bool = False, **extra: object) -> promotion.Decision:
    task = task_of(direction)
    champ = champion(std, seeds=max(3, len(improvements)))
    reference = {k: CHAMPION[k] for k in range(len(improvements))}
    return promotion.decide(task, rules(rule, **extra), champ, candidate(task, improvements), reference,
                            baseline=(std, 3), final=final)


DIRECTIONS = ["maximize", "minimize"]
RULES = ["mean", "ttest", "paired"]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("rule", RULES)
def test_a_clear_gain_is_promoted(direction: str, rule: str) -> None:
    decision = decide(direction, rule, GAIN)
    assert decision.promote and decision.more_seeds == 0
    assert decision.delta == pytest.approx(sum(GAIN) / 3)  # positive: an improvement in either direction
    lo, hi = decision.detail["ci95"]
    assert 0 < lo < decision.delta < hi
    if rule != "mean":
        assert decision.detail["p_value"] < decision.detail.get("level", decision.detail["alpha"])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("rule", RULES)
def test_a_clear_loss_is_kept_out_without_more_seeds(direction: str, rule: str) -> None:
    decision = decide(direction, rule, LOSS)
    assert not decision.promote and decision.more_seeds == 0
    assert decision.delta == pytest.approx(sum(LOSS) / 3)
    if rule == "paired":
        assert decision.detail["verdict"] == "futile"
        assert decision.detail["p_value"] > 0.5


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_an_inconclusive_result(direction: str) -> None:
    # The mean rule promotes any positive mean: this is the weakness the default rule fixes.
    assert decide(direction, "mean", MIXED).promote
    ttest = decide(direction, "ttest", MIXED)
    assert not ttest.promote and ttest.detail["p_value"] > ttest.detail["alpha"]
    paired = decide(direction, "paired", MIXED)
    assert not paired.promote and paired.more_seeds == 2 and paired.detail["verdict"] == "more seeds"
    # With no more seeds to run (the cap, or the budget), an inconclusive result keeps the champion.
    capped = decide(direction, "paired", MIXED, final=True)
    assert not capped.promote and capped.more_seeds == 0
    assert capped.detail["verdict"] == "inconclusive at the cap"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_paired_rule_adds_seeds_up_to_its_cap(direction: str) -> None:
    mixed = (MIXED * 4)[:5]  # mean +0.004, just under the minimum effect: futile unless futility is low
    assert decide(direction, "paired", mixed, max_seeds=7).detail["verdict"] == "futile"
    assert decide(direction, "paired", mixed, max_seeds=7, futility=0.2).more_seeds == 2
    assert decide(direction, "paired", mixed, max_seeds=6, futility=0.2).more_seeds == 1
    assert decide(direction, "paired", mixed, max_seeds=5, futility=0.2).more_seeds == 0


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("rule", RULES)
def test_zero_variance_is_decided_by_the_sign(direction: str, rule: str) -> None:
    # A deterministic task: every seed gives the same difference and the baseline has no spread.
    up = decide(direction, rule, [0.05, 0.05, 0.05], std=0.0)
    down = decide(direction, rule, [-0.05, -0.05, -0.05], std=0.0)
    assert up.promote and not down.promote
    assert up.more_seeds == down.more_seeds == 0
    # ... and a minimum improvement still applies.
    assert not decide(direction, rule, [0.05, 0.05, 0.05], std=0.0, min_delta=0.06).promote


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_paired_minimum_effect_comes_from_the_baseline_spread(direction: str) -> None:
    # Differences that are consistent but smaller than half a baseline standard deviation are no gain.
    small = [0.004, 0.005, 0.004, 0.005, 0.004]
    decision = decide(direction, "paired", small, std=0.02)
    assert decision.detail["min_effect"] == pytest.approx(0.01)
    assert not decision.promote
    # The same differences on a quiet baseline are a gain.
    assert decide(direction, "paired", small, std=0.0005).promote


def test_a_rule_that_ignored_the_direction_would_fail_here() -> None:
    """The same metric values, read in the two directions, give opposite verdicts."""
    task_max, task_min = task_of("maximize"), task_of("minimize")
    values = candidate(task_max, GAIN)  # higher than the champion on every seed
    for rule in RULES:
        promoted_max = promotion.decide(task_max, rules(rule), champion(), values, baseline=(0.01, 3)).promote
        promoted_min = promotion.decide(task_min, rules(rule), champion(), values, baseline=(0.01, 3)).promote
        assert (promoted_max, promoted_min) == (True, False), rule


def test_the_screen_follows_the_direction() -> None:
    champ = champion()
    ref: Optional[dict[int, float]] = None
    assert promotion.screen(task_of("maximize"), rules("paired"), champ, 0, 0.60, ref) == pytest.approx(0.10)
    assert promotion.screen(task_of("minimize"), rules("paired"), champ, 0, 0.60, ref) == pytest.approx(-0.10)


def test_no_more_seeds_than_the_task_has_data_splits() -> None:
    """Seed s and s + splits train and score on the same split: a deterministic program repeats its number,
    so the paired rule asks for more seeds only up to the number of splits (more would be false evidence)."""
    task = task_of("maximize")
    champ = champion(0.01, seeds=3)
    reference = {k: CHAMPION[k] for k in range(3)}
    for splits, more in ((1, 2), (3, 0), (4, 1)):
        split_task = task.model_copy(update={"splits": splits})
        unsure = candidate(split_task, [0.03, -0.01, 0.02])  # above the minimum effect, far from significant
        verdict = promotion.decide(split_task, rules("paired"), champ, unsure, reference, baseline=(0.01, 3))
        assert not verdict.promote and verdict.more_seeds == more, (splits, verdict.detail)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_on_split_seeded_tasks_the_paired_differences_calibrate_the_rule(direction: str) -> None:
    """Seed s scores on split s % splits: the baseline's spread (here 0.07) is the splits' difference, which
    cancels in each pair. A gain that holds on every split must not be judged against it, and the minimum
    effect is half a standard deviation of the differences (in one run's units), not of the baseline."""
    task = task_of(direction)
    split_task = task.model_copy(update={"splits": 5})
    gain = [0.040, 0.036, 0.046, 0.041, 0.038]
    reference = {k: CHAMPION[k] for k in range(5)}
    values = candidate(task, gain)
    unsplit = promotion.decide(task, rules("paired"), champion(0.07, 5), values, reference, baseline=(0.07, 3))
    assert not unsplit.promote and unsplit.detail["calibration"] == "baseline replicates"
    split = promotion.decide(split_task, rules("paired"), champion(0.07, 5), values, reference,
                             baseline=(0.07, 3))
    assert split.promote and split.detail["calibration"] == "paired differences"
    spread = statistics.stdev(gain) / math.sqrt(2)
    assert split.detail["min_effect"] == pytest.approx(0.5 * spread)
    assert split.detail["looks"] == 2  # seeds 3 and 5: the cap is the number of splits
    # Differences that disagree between splits are not a gain, whatever the baseline's spread.
    mixed = candidate(task, [0.05, -0.04, 0.03, -0.03, 0.01])
    noisy = promotion.decide(split_task, rules("paired"), champion(0.001, 5), mixed, reference,
                             baseline=(0.001, 3))
    assert not noisy.promote and noisy.more_seeds == 0
    # A consistent loss stays out.
    loss = promotion.decide(split_task, rules("paired"), champion(0.07, 5), candidate(task, [-g for g in gain]),
                            reference, baseline=(0.07, 3))
    assert not loss.promote
