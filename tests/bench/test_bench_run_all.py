"""run_all: the results table, options, and benchmarks that are missing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import benchlib as bl  # noqa: E402
import run_all  # noqa: E402


def fake(met: bool) -> dict:
    return bl.result("fake", "one line", sizes={"n": 1}, measured={"x": 1.0}, baseline={"x": 2.0},
                     ratios={"x": 0.5}, targets={"x": bl.target("x ≤ 1", 1.0, met)},
                     rows=[bl.row("x | y", "1", "2", "0.50×", "x ≤ 1", met)])


def test_a_missing_benchmark_is_reported_not_present() -> None:
    res = run_all.run_one("bench_does_not_exist", True, {}, 10)
    assert res["status"] == "not present" and res["seconds"] == 0.0


def test_the_markdown_table_has_every_row_and_the_targets_not_met() -> None:
    results = [{**fake(False), "module": "fake", "seconds": 1.0},
               {**bl.skipped("cluster", "no Slurm"), "module": "cluster", "seconds": 0.1},
               {"name": "lead", "module": "lead", "status": "ok", "seconds": 2.0, "summary": "s",
                "targets": {"t": {"target": "t ≥ 1", "value": 3, "met": True}}}]
    text = run_all.markdown(results, bl.machine(), "make bench", 3.0)
    assert "| **fake (1 s)**: x / y | 1 | 2 | 0.50× | x ≤ 1 | **no** |" in text  # a | in a cell is escaped
    assert "skipped: no Slurm" in text
    assert "| **lead (2 s)**: t | 3 | — | — | t ≥ 1 | yes |" in text  # rows made from targets
    assert run_all.not_met(results) == [{"benchmark": "fake", "target": "x ≤ 1", "value": "1"}]
    assert "Targets not met:" in text


def test_options_are_parsed_per_module() -> None:
    assert run_all.parse_options(["bench_coordinator.sizes=1000,10000", "bench_slots.slots=4"]) == {
        "bench_coordinator": {"sizes": "1000,10000"}, "bench_slots": {"slots": 4}}
