"""The HTML report: self-contained, escaped, complete, and written without touching the campaign."""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autosci_hpc.cli import main as autosci
from autosci_hpc.report import export_log, load_campaign, metrics, plots, write_report
from autosci_hpc.state import Store
from autosci_hpc.state.models import Trial

from helpers import ROOT
from report_builders import STANDARD_TRIALS, C, build_campaign, story


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def test_the_report_is_self_contained_escaped_and_embeds_every_figure(tmp_path: Path) -> None:
    folder = story(tmp_path)
    out = write_report([folder], tmp_path / "out" / "report.html")
    html = out.read_text()
    # Agent-written text is shown as text, never as markup.
    assert "<script" not in html.lower() and "<img src=x" not in html and "&lt;img src=x onerror" in html
    assert "try x &lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in html
    assert "card &lt;script&gt;" in html and "x matters &lt;script&gt;" in html
    # Nothing to fetch: no URL at all, no stylesheet or script link, no CSS url().
    assert "http://" not in html and "https://" not in html
    links = re.findall(r"<[^>]*?\s(?:src|href)\s*=\s*([^\s>]+)", html)
    assert links and all(value.strip("'\"").startswith("data:image/png;base64,") for value in links)
    assert "<link" not in html and "url(" not in html
    # Every figure of the campaign is embedded, and each is a real PNG.
    data = load_campaign(folder)
    expected = plots.campaign_plots(data, metrics.default_target([data]))
    assert set(expected) == {"best_so_far_trials", "best_so_far_gpu_hours", "teams", "rejections",
                             "dead_ends", "failures", "llm_spend"}
    embedded = images(html)
    assert len(embedded) == len(expected)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000 for png in embedded)
    # The story: header, champion, lineage, teams, dead ends, failures, costs, forum, the target.
    for text in ("Campaign story", "Champion #2", "Model card", "Lineage of champions", "team-1", "Dead ends",
                 "x~bin1/6", "timeout", "LLM: 2 calls, $0.3750", "Forum highlights", "Target: score ≥ 0.6",
                 "This is the default", "--target X"):
        assert text in html, text


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_reading_never_changes_the_campaign_database(tmp_path: Path, journal: str) -> None:
    folder = story(tmp_path, journal_mode=journal)
    db = folder / "state.db"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == journal
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    load_campaign(folder)
    write_report([folder], tmp_path / "r.html")
    export_log(load_campaign(folder), tmp_path / "csv")
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert not (folder / "report.html").exists()  # the report went where it was told


def test_a_running_campaign_is_read_while_a_writer_holds_its_lock(tmp_path: Path) -> None:
    """WAL: a reader gets the last committed snapshot while the coordinator is inside a write
    transaction, and nothing the writer has not committed."""
    folder = story(tmp_path, journal_mode="wal")
    store = Store(folder, journal_mode="wal")
    with store.write() as session:
        session.add(Trial(role="candidate", group="late", snapshot_id="s", config_signature="late", seed=0,
                          status="succeeded"))
        session.flush()
        data = load_campaign(folder)  # while the write lock is held
        assert "late" not in set(data.trials["group"])
    store.dispose()
    assert "late" in set(load_campaign(folder).trials["group"])


def test_several_campaigns_are_compared_side_by_side(tmp_path: Path) -> None:
    a = story(tmp_path, "dec-a", seed=0)
    b = build_campaign(tmp_path / "dec-b", STANDARD_TRIALS, [C(12.5, 0.5), C(25, 0.65), C(36, 0.68)], seed=1)
    c = build_campaign(tmp_path / "single-c", STANDARD_TRIALS, [C(12.5, 0.5)], mode="single", seed=2)
    out = write_report([a, b, c], tmp_path / "compare.html", target=0.6)
    html = out.read_text()
    assert "Target: score ≥ 0.6 (given with --target)." in html
    # Each campaign's trials to target and accepted improvements, stated.
    assert "dec-a (decentralized, seed 0): reached the target after <b>8</b> of 10 trials" in html
    assert "dec-b (decentralized, seed 1): reached the target after <b>5</b> of 9 trials" in html
    assert "single-c (single, seed 2): <span class='bad'>did not reach the target</span> in 9 trials" in html
    assert html.count("accepted improvement(s)") == 3
    # The per-mode ratio (10 censored vs median 6.5) and the improvements side by side.
    assert "<b>single</b> needed <b>1.54×</b> the trials of decentralized" in html
    assert "<b>0 vs 1.5</b>" in html
    # Comparison figures (two curves and the bars), then each campaign's own story.
    assert len(images(html)) == 3 + sum(len(plots.campaign_plots(load_campaign(f), 0.6)) for f in (a, b, c))
    assert html.count("<details>") == 3


def test_cli_report_writes_next_to_the_first_campaign_and_exports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = story(tmp_path)
    assert autosci(["report", str(folder), "--export", str(tmp_path / "csv")]) == 0
    printed = capsys.readouterr().out
    assert str(folder / "report.html") in printed and (folder / "report.html").stat().st_size > 20_000
    trials_csv = (tmp_path / "csv" / "trials.csv").read_text().splitlines()
    assert len(trials_csv) == 1 + 11  # header + every trial row
    assert (tmp_path / "csv" / "lineage.csv").is_file() and (tmp_path / "csv" / "proposals.csv").is_file()
    try:
        import pyarrow  # noqa: F401
        assert (tmp_path / "csv" / "trials.parquet").is_file()
    except ImportError:
        assert "parquet skipped: pyarrow is not installed" in printed
    assert autosci(["report", str(folder), "--out", str(tmp_path / "x.html"), "--target", "0.65"]) == 0
    assert "score ≥ 0.65 (given with --target)" in (tmp_path / "x.html").read_text()


def test_cli_report_names_a_folder_that_is_not_a_campaign(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert autosci(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a campaign folder" in capsys.readouterr().err


def test_analysis_scripts_print_their_tables(tmp_path: Path) -> None:
    folder = story(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "analysis" / "trials_to_target.py"), str(folder),
                          "--target", "0.6", "--png", str(tmp_path / "ttt.png")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "target score >= 0.6 (given with --target)" in run.stdout
    row = next(line for line in run.stdout.splitlines() if line.strip().startswith("story"))
    assert row.split()[4:7] == ["10", "8", "7.5"]  # trials used, trials to target, GPU-hours to target
    assert (tmp_path / "ttt.png").read_bytes().startswith(b"\x89PNG")
    run = subprocess.run([sys.executable, str(ROOT / "analysis" / "lineage.py"), str(folder), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and f"{tmp_path} is not a campaign folder" in run.stderr
