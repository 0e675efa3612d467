"""The rules benchmark measures what it says: its simulated metric is the flat task's sealed metric (the
evaluator's number, planted gain included), and its simulation runs the coordinator's promotion code."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_search  # noqa: E402


def test_the_simulated_metric_is_the_sealed_evaluators(tmp_path: Path) -> None:
    # With a planted gain: the evaluator (whose number decides) must add it, not only the program's report.
    bench_search.FlatMetric(0.01, 0.02, planted_gain=0.04, planted_from=0.25).verify(tmp_path / "planted")
    bench_search.FlatMetric(0.01, 0.02).verify(tmp_path / "null")


def test_the_simulation_tells_a_planted_gain_from_noise() -> None:
    result = bench_search.rule_simulation(200, 0.02, campaign_size=50)
    default = result["rules"][bench_search.DEFAULT_RULE]
    gate_off = result["rules"]["off (1 seed, mean)"]
    assert default["null"]["rate"] < gate_off["null"]["rate"]
    assert default["planted"]["rate"] > 3 * default["null"]["rate"]
    # The default rule pays for that in replication, counted per decision.
    assert default["null"]["candidate_trials_per_decision"] > gate_off["null"]["candidate_trials_per_decision"]
