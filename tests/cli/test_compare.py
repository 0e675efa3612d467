"""`autosci compare`: single, central and decentralized on one task and one matched budget, and a
report that states, for each, trials to target and accepted improvements — checked against the
campaign databases themselves."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from pathlib import Path

import pytest

from test_cli import autosci

from helpers import FIXTURE_TASKS, ROOT


def from_the_log(folder: Path, target: float) -> tuple[int, int, int]:
    """(trials finished, trials to target, accepted improvements) read straight from the database:
    a champion is in force from the finished trial that completed its measurement."""
    with sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True) as conn:
        order = [row[0] for row in conn.execute(
            "SELECT id FROM trial WHERE status IN ('succeeded', 'failed') ORDER BY finished_at, id")]
        champions = conn.execute("SELECT metric_mean, trial_ids FROM champion ORDER BY id").fetchall()
    position = {trial_id: n for n, trial_id in enumerate(order, start=1)}
    reached = [max(position[t] for t in json.loads(ids)) for mean, ids in champions if mean >= target]
    return len(order), min(reached), len(champions) - 1


@pytest.mark.slow
def test_three_modes_on_one_matched_budget_and_the_report_states_each(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
            f"task.path={FIXTURE_TASKS / 'toy'}",
            "budget.trials=15", "coordination.poll_interval_s=0.05", "--seeds", "1", "--out", str(out),
            "--target", "0.75"]
    result = autosci(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = out / "report.html"
    assert f"comparison report: {report}" in result.stdout

    budgets = set()
    for mode in ("single", "central", "decentralized"):
        with sqlite3.connect(f"file:{out / f'{mode}-s0' / 'state.db'}?mode=ro", uri=True) as conn:
            stored_mode, config = conn.execute("SELECT mode, config FROM campaign").fetchone()
        assert stored_mode == mode
        budgets.add(json.dumps(json.loads(config)["budget"], sort_keys=True))
    assert len(budgets) == 1, "every arm ran on the same budget"

    text = html.unescape(re.sub(r"<[^>]+>", "", report.read_text()))
    assert "score ≥ 0.75" in text
    for mode in ("single", "central", "decentralized"):
        used, to_target, improvements = from_the_log(out / f"{mode}-s0", 0.75)
        assert used <= 15
        line = f"{mode}-s0 ({mode}, seed 0): reached the target after {to_target} of {used} trials"
        assert line in text, f"{line!r} not in the report"
        assert re.search(rf"{re.escape(line)} \([^)]*\); {improvements} accepted improvement\(s\)", text)
    assert "× the trials of decentralized" in text

    # Run again: finished campaigns are not run a second time, the report is rewritten.
    again = autosci(*args)
    assert again.returncode == 0 and again.stdout.count("already finished") == 3


def test_a_bad_arm_or_key_is_refused_before_anything_runs(tmp_path: Path) -> None:
    config = str(ROOT / "configs" / "campaign" / "toy_smoke.yaml")
    bad_arm = autosci("compare", config, "--arms", "single,swarm", "--out", str(tmp_path / "a"))
    assert bad_arm.returncode == 2 and "unknown arm(s) swarm" in bad_arm.stderr
    bad_key = autosci("compare", config, "budget.trails=3", "--out", str(tmp_path / "b"))
    assert bad_key.returncode == 2 and "budget.trails" in bad_key.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
