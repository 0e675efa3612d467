"""The `autosci` command on real campaigns: run, status, log, show, doctor."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURE_TASKS, ROOT


def autosci(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def toy_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "toy"
    result = autosci("run", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), f"campaign.folder={folder}",
                     f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=12")
    assert result.returncode == 0, result.stderr
    assert f"campaign folder: {folder}" in result.stdout
    return folder


def test_status_reads_the_campaign_without_writing(toy_campaign: Path) -> None:
    before = (toy_campaign / "state.db").stat().st_mtime_ns
    result = autosci("status", str(toy_campaign))
    assert result.returncode == 0, result.stderr
    assert "status finished" in result.stdout and "champion #" in result.stdout and "team-1" in result.stdout
    assert (toy_campaign / "state.db").stat().st_mtime_ns == before


def test_log_filters_and_show_tells_the_story(toy_campaign: Path) -> None:
    every = autosci("log", "-C", str(toy_campaign))
    assert every.returncode == 0 and "baseline" in every.stdout
    ok = autosci("log", "-C", str(toy_campaign), "--status", "succeeded", "--team", "team-1")
    assert ok.returncode == 0 and "failed" not in ok.stdout.split("trials (")[1].split("\n", 1)[1]
    con = sqlite3.connect(toy_campaign / "state.db")
    proposal = con.execute("select id from proposal where status='done' limit 1").fetchone()[0]
    trial = autosci("show", "1", "-C", str(toy_campaign))
    assert trial.returncode == 0 and "trial 1: baseline" in trial.stdout and "environment" in trial.stdout
    story = autosci("show", f"p{proposal}", "-C", str(toy_campaign))
    assert story.returncode == 0 and "critique by" in story.stdout and "trial" in story.stdout
    team = autosci("show", "team-1", "-C", str(toy_campaign))
    assert team.returncode == 0 and "hypothesis" in team.stdout and "roster" in team.stdout
    missing = autosci("show", "9999", "-C", str(toy_campaign))
    assert missing.returncode == 2 and "no trial 9999" in missing.stderr


def test_doctor_reports_without_printing_the_key(tmp_path: Path) -> None:
    secret = "sk-ant-test-DO-NOT-PRINT-1234567890"
    result = autosci("doctor", str(tmp_path), env={"ANTHROPIC_API_KEY": secret})
    assert "ANTHROPIC_API_KEY: set" in result.stdout
    assert secret not in result.stdout + result.stderr and "1234567890" not in result.stdout
    assert "journal mode wal" in result.stdout and "sbatch" in result.stdout and "submitit" in result.stdout


def test_no_api_key_reaches_the_database(toy_campaign: Path) -> None:
    data = (toy_campaign / "state.db").read_bytes()
    assert b"sk-ant" not in data and b"ANTHROPIC_API_KEY" not in data


@pytest.mark.slow
def test_the_demo_campaign_meets_its_promise(tmp_path: Path) -> None:
    """What `make run` promises: >= 2 teams, >= 30 trials, a promotion after replication."""
    folder = tmp_path / "demo"
    result = autosci("run", str(ROOT / "configs" / "campaign" / "diabetes_demo.yaml"), f"campaign.folder={folder}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    con = sqlite3.connect(folder / "state.db")
    assert con.execute("select count(*) from team").fetchone()[0] >= 2
    assert con.execute("select count(*) from trial").fetchone()[0] >= 30
    promoted = con.execute("select trial_ids, seed_metrics from champion where rule != 'baseline'").fetchall()
    assert promoted and all(len(json.loads(metrics)) == 3 for _, metrics in promoted)


def test_rerun_reproduces_a_logged_trial_exactly(toy_campaign: Path) -> None:
    con = sqlite3.connect(toy_campaign / "state.db")
    trial_id, metric = con.execute(
        "select id, metric from trial where status='succeeded' and role='candidate' order by id limit 1").fetchone()
    rows_before = con.execute("select count(*) from trial").fetchone()[0]
    same = autosci("rerun", str(trial_id), "-C", str(toy_campaign))
    assert same.returncode == 0, same.stderr
    assert f"logged metric {metric!r}" in same.stdout and f"metric {metric!r} (identical)" in same.stdout
    other = autosci("rerun", str(trial_id), "--seed", "7", "-C", str(toy_campaign))
    assert other.returncode == 0 and "(differs)" in other.stdout
    # The log itself is untouched: a rerun writes files, never rows.
    assert con.execute("select count(*) from trial").fetchone()[0] == rows_before
