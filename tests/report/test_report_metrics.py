"""The report's metric definitions, on hand-built campaigns with known answers and on a real one."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from sqlmodel import select

from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.compare import summary_lines
from autosci_hpc.report import (ReportError, accepted_improvements, best_so_far, compare_table,
                                default_target, gpu_hours_to_target, load_campaign, trials_to_target)
from autosci_hpc.report import metrics
from autosci_hpc.state.models import Campaign, Champion

from helpers import ScriptedPolicy, campaign_config
from report_builders import STANDARD_CHAMPIONS, STANDARD_TRIALS, C, Extras, T, at, build_campaign

NAN = math.nan


def standard(tmp_path: Path, **kwargs: object) -> Path:
    return build_campaign(tmp_path / "standard", STANDARD_TRIALS, STANDARD_CHAMPIONS,
                          **kwargs)  # type: ignore[arg-type]


def test_best_so_far_follows_the_trial_ordinal_and_promotion_times(tmp_path: Path) -> None:
    data = load_campaign(standard(tmp_path))
    curve = best_so_far(data)
    assert list(curve["trial_n"]) == list(range(1, 10))  # the running trial has no ordinal
    # Trial id 8 finished (at 32 s) before id 7 (at 35 s): finishing time orders, not the id.
    assert list(metrics.finished_trials(data)["id"]) == [1, 2, 3, 4, 5, 6, 8, 7, 9]
    expected = [NAN, NAN, NAN, 0.5, 0.5, 0.5, 0.5, 0.7, 0.7]
    assert [b if not math.isnan(b) else "nan" for b in curve["best"]] == \
        [b if not math.isnan(b) else "nan" for b in expected]
    # Local trials count one slot each: hours are durations; the failed one ran half an hour.
    assert list(curve["gpu_hours"]) == pytest.approx([1, 2, 3, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5])
    assert curve["finished_at"].iloc[7] == at(35)
    assert accepted_improvements(data) == 1


def test_trials_and_gpu_hours_to_target(tmp_path: Path) -> None:
    data = load_campaign(standard(tmp_path))
    target = default_target([data])
    assert target == pytest.approx(0.6)  # 0.5 + 0.5 * (0.7 - 0.5)
    assert trials_to_target(data, target) == 8
    assert gpu_hours_to_target(data, target) == pytest.approx(7.5)
    assert trials_to_target(data, 0.5) == 4  # the baseline itself reaches it, once it exists
    assert trials_to_target(data, 0.71) is None and gpu_hours_to_target(data, 0.71) is None


def test_gpu_hours_count_the_gpus_in_the_gres(tmp_path: Path) -> None:
    data = load_campaign(standard(tmp_path, gres="gpu:h100:2"))
    assert best_so_far(data)["gpu_hours"].iloc[-1] == pytest.approx(17.0)
    assert gpu_hours_to_target(data, 0.6) == pytest.approx(15.0)


def test_minimizing_reaches_the_target_from_above(tmp_path: Path) -> None:
    folder = build_campaign(tmp_path / "min", STANDARD_TRIALS, [C(12.5, 1.0), C(32.5, 0.6), C(39, 0.4)],
                            direction="minimize")
    data = load_campaign(folder)
    assert data.direction == "minimize" and not data.maximize
    target = default_target([data])
    assert target == pytest.approx(0.7)  # 1.0 + 0.5 * (0.4 - 1.0)
    assert trials_to_target(data, target) == 8  # 0.6 <= 0.7 from the trial that finished at 35 s
    assert trials_to_target(data, 0.5) == 9
    assert accepted_improvements(data) == 2


def test_equal_finishing_times_are_ordered_by_id(tmp_path: Path) -> None:
    trials = [T(10, role="baseline"), T(20), T(20), T(20)]
    data = load_campaign(build_campaign(tmp_path / "tie", trials, [C(15, 0.5), C(20, 0.9)]))
    assert list(metrics.finished_trials(data)["id"]) == [1, 2, 3, 4]
    # promoted_at <= finished_at: a champion promoted at the very instant counts for that trial.
    assert list(best_so_far(data)["best"])[1:] == [0.9, 0.9, 0.9]
    assert trials_to_target(data, 0.9) == 2


def test_a_promotion_counts_from_the_trial_that_completed_it(tmp_path: Path) -> None:
    # As the coordinator does it: the promotion is stamped just after its last trial's result (id 3,
    # at 30 s) was ingested. It counts from that trial, even when that trial is the campaign's last.
    trials = [T(10, role="baseline"), T(20), T(30, role="replicate")]
    data = load_campaign(build_campaign(tmp_path / "lag", trials, [C(10.001, 0.5, trials=[1]),
                                                                   C(30.001, 0.8, trials=[2, 3])]))
    assert list(best_so_far(data)["best"]) == [0.5, 0.5, 0.8]
    assert trials_to_target(data, 0.8) == 3
    assert metrics.lineage(data)["trial_n"].tolist() == [1, 3]
    # A champion measured on a trial that has not finished keeps its promotion time.
    data = load_campaign(build_campaign(tmp_path / "odd", trials + [T(None, status="submitted")],
                                        [C(10.001, 0.5, trials=[1]), C(30.001, 0.8, trials=[3, 4])]))
    assert list(best_so_far(data)["best"]) == [0.5, 0.5, 0.5]


def test_a_campaign_started_from_a_given_champion(tmp_path: Path) -> None:
    champions = [C(12.5, 0.6, overrides={"x": 0.3}), C(32.5, 0.7, overrides={"x": 0.6})]
    data = load_campaign(build_campaign(tmp_path / "given", STANDARD_TRIALS, champions))
    assert metrics.lineage(data)["change"].tolist() == ["starting champion: x: 0 -> 0.3", "x: 0.3 -> 0.6"]


def test_no_champion_yet(tmp_path: Path) -> None:
    data = load_campaign(build_campaign(tmp_path / "early", [T(10, role="baseline")], []))
    assert best_so_far(data)["best"].isna().all()
    assert accepted_improvements(data) == 0
    assert math.isnan(default_target([data])) and trials_to_target(data, 0.1) is None


def test_compare_table_per_campaign_and_per_mode(tmp_path: Path) -> None:
    # Decentralized A reaches 0.6 at trial 8 (standard); decentralized B at trial 5; single C never
    # (9 trials: censored at 10).
    a = standard(tmp_path, seed=0)
    b = build_campaign(tmp_path / "b", STANDARD_TRIALS, [C(12.5, 0.5), C(25, 0.65), C(36, 0.68)], seed=1,
                       name="b")
    c = build_campaign(tmp_path / "c", STANDARD_TRIALS, [C(12.5, 0.5)], mode="single", seed=2, name="c")
    datas = [load_campaign(f) for f in (a, b, c)]
    assert default_target(datas) == pytest.approx(0.6)  # 0.5 + 0.5 * (0.7 - 0.5): A's final is the best
    per_campaign, per_mode = compare_table(datas, 0.6)
    assert list(per_campaign["campaign"]) == ["standard", "b", "c"]
    assert list(per_campaign["seed"]) == [0, 1, 2]
    assert list(per_campaign["trials_used"]) == [9, 9, 9]
    assert per_campaign["trials_to_target"].tolist()[:2] == [8, 5]
    assert pd.isna(per_campaign["trials_to_target"][2])
    assert list(per_campaign["reached"]) == [True, True, False]
    assert list(per_campaign["accepted_improvements"]) == [1, 2, 0]
    assert per_campaign["gpu_hours_to_target"].tolist()[:2] == pytest.approx([7.5, 4.5])
    assert list(per_campaign["final_metric"]) == pytest.approx([0.7, 0.68, 0.5])
    dec, single = per_mode.iloc[0], per_mode.iloc[1]
    assert (dec["mode"], single["mode"]) == ("decentralized", "single")
    assert (dec["ttt_median"], dec["ttt_min"], dec["ttt_max"]) == (6.5, 5.0, 8.0)
    assert (single["ttt_median"], single["censored"], single["reached"]) == (10.0, 1, 0)
    assert single["ttt_ratio_vs_decentralized"] == pytest.approx(10 / 6.5)
    assert dec["ttt_ratio_vs_decentralized"] == 1.0
    assert single["improvements_vs_decentralized"] == "0 vs 1.5"
    # Every number compared comes with its interval: the final champion's over its two seeds (sd 0.01,
    # t 12.706), and the mode's mean over its campaigns (none for a mode of one campaign).
    half = 12.706 * 0.01 / math.sqrt(2)
    assert per_campaign["final_ci95"][0] == f"[{0.7 - half:.4g}, {0.7 + half:.4g}]"
    assert dec["final_mean"] == pytest.approx(0.69)
    spread = 12.706 * statistics.stdev([0.7, 0.68]) / math.sqrt(2)
    assert dec["final_ci95"] == f"[{0.69 - spread:.4g}, {0.69 + spread:.4g}]"
    assert single["final_ci95"] == "—"
    lines = summary_lines([a, b, c])
    assert lines[0] == f"decentralized: final score 0.69 (95% CI [{0.69 - spread:.4g}, {0.69 + spread:.4g}], 2 campaigns)"
    assert lines[1] == f"  standard: 0.7 (95% CI [{0.7 - half:.4g}, {0.7 + half:.4g}], 2 seeds)"
    assert lines[3].startswith("single: final score 0.5 (1 campaign: no interval across campaigns)")


def test_the_random_search_baseline_is_its_own_arm(tmp_path: Path) -> None:
    # `autosci compare` runs the random arm in mode single with llm.backend random: grouped apart.
    single = build_campaign(tmp_path / "s", STANDARD_TRIALS, [C(12.5, 0.5), C(25, 0.65)], mode="single")
    rand = build_campaign(tmp_path / "r", STANDARD_TRIALS, [C(12.5, 0.5)], mode="single", backend="random")
    per_campaign, per_mode = compare_table([load_campaign(standard(tmp_path)), load_campaign(single),
                                            load_campaign(rand)], 0.6)
    assert list(per_campaign["mode"]) == ["decentralized", "single", "random"]
    assert list(per_mode["mode"]) == ["decentralized", "random", "single"]
    assert list(per_mode["ttt_median"]) == [8.0, 10.0, 5.0]


def test_campaigns_of_different_metrics_are_not_compared(tmp_path: Path) -> None:
    a = load_campaign(standard(tmp_path))
    b = load_campaign(build_campaign(tmp_path / "m", STANDARD_TRIALS, STANDARD_CHAMPIONS,
                                     direction="minimize"))
    with pytest.raises(ReportError, match="cannot be compared"):
        compare_table([a, b], 0.6)


def test_story_tables(tmp_path: Path) -> None:
    extras = Extras(rejected=["duplicate: trial 3 already ran this configuration",
                              "dead_end: 'x~bin1/6' is dead", "unknown config key(s) z; known keys: x, y",
                              "too risky", "duplicate: proposal 9"],
                    dead_ends=[("x~bin1/6", "2 experiments brought no improvement"),
                               ("y~bin2/6", "2 experiments brought no improvement"), ("y=0", "it crashed")],
                    llm_calls=[("analyst-1", 0.25), ("analyst-1", 0.5), ("experimenter-1", 0.125)])
    trials = STANDARD_TRIALS + [T(41, status="failed", failure_class="timeout"),
                                T(42, status="failed", failure_class="node_failure", superseded=True)]
    data = load_campaign(build_campaign(tmp_path / "story", trials, STANDARD_CHAMPIONS, extras=extras))

    lineage = metrics.lineage(data)
    assert list(lineage["champion"]) == [1, 2]
    # The old value comes from the previous champion's snapshot config (the toy program's x: 0.0).
    assert lineage["change"].tolist() == ["the task's program as shipped", "x: 0 -> 0.6"]
    assert lineage["trial_n"].tolist() == [4, 8] and lineage["team"].tolist() == ["—", "team-1"]
    assert lineage["seed_metrics"][1] == "0: 0.69, 1: 0.71" and lineage["delta"][1] == pytest.approx(0.2)

    kinds = dict(zip(metrics.rejections(data)["kind"], metrics.rejections(data)["proposals"]))
    assert kinds == {"duplicate": 2, "dead end": 1, "unknown key": 1, "critics": 1}
    summary = metrics.summarize(data)
    assert (summary.duplicates, summary.rejected_before_compute, summary.dead_ends) == (2, 5, 3)
    assert (summary.trials_finished, summary.trials_failed, summary.llm_calls) == (11, 3, 3)
    assert summary.llm_usd == pytest.approx(0.875)

    dead = metrics.dead_ends_by_reason(data)
    assert dead["reason"].tolist() == ["2 experiments brought no improvement", "it crashed"]
    assert dead["dead_ends"].tolist() == [2, 1] and dead["signatures"][0] == "x~bin1/6, y~bin2/6"

    failures = metrics.failure_classes(data).set_index("failure_class")
    assert failures["trials"].to_dict() == {"program_error": 1, "timeout": 1, "node_failure": 1}
    assert failures.loc["node_failure", "retried"] == 1

    teams = metrics.team_contributions(data).set_index("team")
    row = teams.loc["team-1"]
    assert (row["proposals"], row["approved"], row["rejected"], row["promotions"]) == (6, 1, 5, 1)
    assert row["trials"] == 8  # its finished non-baseline trials
    assert row["best_delta"] == pytest.approx(0.2)

    spend = metrics.llm_spend(data).set_index("role")
    assert spend.loc["analyst", "calls"] == 2 and spend.loc["analyst", "cost_usd"] == pytest.approx(0.75)
    assert spend.loc["experimenter", "cost_usd"] == pytest.approx(0.125)


def test_loading_names_the_folder_when_it_is_not_a_campaign(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=f"{tmp_path / 'missing'}: no such campaign folder"):
        load_campaign(tmp_path / "missing")
    with pytest.raises(ReportError, match=f"{tmp_path} is not a campaign folder: it has no state.db"):
        load_campaign(tmp_path)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ReportError, match=f"{junk}: cannot read state.db"):
        load_campaign(junk)
    from autosci_hpc.state import Store

    Store(tmp_path / "empty").dispose()  # a database with the tables but no campaign row
    with pytest.raises(ReportError, match="holds no campaign"):
        load_campaign(tmp_path / "empty")
    # Without task.json (a campaign from before it existed) the task folder of the config is read ...
    folder = standard(tmp_path)
    (folder / "task.json").unlink()
    assert (load_campaign(folder).metric, load_campaign(folder).direction) == ("score", "maximize")
    # ... and when that is gone too, the error says what is missing.
    folder = build_campaign(tmp_path / "lost", STANDARD_TRIALS, STANDARD_CHAMPIONS,
                            task_path="/nonexistent/toy")
    (folder / "task.json").unlink()
    with pytest.raises(ReportError, match=f"{folder}: no task.json and the task folder '/nonexistent/toy'"):
        load_campaign(folder)


def test_a_real_campaign(tmp_path: Path) -> None:
    """A short real campaign on the toy task (one scripted improvement): the curve agrees with the
    stored counters and champions."""
    config = campaign_config(tmp_path, "toy", "budget.trials=6", "coordination.teams=1")
    coordinator = Coordinator(config, config.campaign_folder(), policy=ScriptedPolicy([{"x": 0.6}], seed=1))
    assert coordinator.run().status == "finished"
    with coordinator.store.read() as session:
        campaign = session.exec(select(Campaign)).one()
        champions = session.exec(select(Champion)).all()
    data = load_campaign(config.campaign_folder())
    curve = best_so_far(data)
    assert len(curve) == campaign.trials_finished == 6
    assert curve["best"].dropna().is_monotonic_increasing  # the toy task maximizes
    assert curve["best"].iloc[-1] == max(c.metric_mean for c in champions)
    assert accepted_improvements(data) == campaign.promotions == len(champions) - 1 == 1
    assert curve["gpu_hours"].iloc[-1] == pytest.approx(sum(data.trials["duration_s"]) / 3600)
    n = trials_to_target(data, default_target([data]))
    assert n is not None and 4 <= n <= 6  # after the baseline (3 trials) and the improvement's first seed
    assert metrics.lineage(data)["change"].tolist()[1] == "x: 0 -> 0.6"
