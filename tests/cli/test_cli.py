"""The `autosci` command on real campaigns: run, status, log, show, doctor."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import FIXTURE_TASKS, ROOT


def autosci(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


#: Planted in the environment of the campaign the read-only tests share: it must never be stored.
SECRET = "sk-ant-test-DO-NOT-STORE-0987654321"


@pytest.fixture(scope="module")
def toy_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "toy"
    result = autosci("run", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), f"campaign.folder={folder}",
                     f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=12",
                     env={"ANTHROPIC_API_KEY": SECRET, "OPENAI_API_KEY": SECRET})
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
    """The campaign ran with both keys set (offline agents: nothing needed them); no byte of them is
    in the database, its journal, or any file the trials and the coordinator wrote."""
    files = [p for p in toy_campaign.rglob("*") if p.is_file()]
    assert (toy_campaign / "state.db") in files and any("trials" in p.parts for p in files)
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a journal (-wal, -shm) that SQLite removed when its last reader closed:
            continue               # what it held is in state.db, which is read
        assert SECRET.encode() not in data and b"0987654321" not in data, path
    con = sqlite3.connect(toy_campaign / "state.db")
    environment = con.execute("select environment from trial where status='succeeded' limit 1").fetchone()[0]
    assert environment and "ANTHROPIC_API_KEY" not in environment


def _hold_the_lease(folder: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """A real `autosci coordinate` on `folder` that takes the lease, creates its baseline, then
    hangs just before its first submission (a fault point) without writing anything more."""
    marker = tmp_path / f"{folder.name}.hanging"
    env = {**os.environ, "AUTOSCI_FAULT": "submit:1:hang", "AUTOSCI_FAULT_MARKER": str(marker)}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "autosci_hpc.cli", "coordinate",
                             str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), f"campaign.folder={folder}",
                             f"task.path={FIXTURE_TASKS / 'toy'}", *extra, "--inline-agents", "--lease-ttl=600"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():  # waits for the state it needs, not for a time
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the first coordinator never reached its first submission"
        time.sleep(0.05)
    return proc


def _dump(folder: Path) -> list[str]:
    con = sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_a_second_coordinating_command_is_refused_naming_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "busy"
    first = _hold_the_lease(folder, tmp_path)
    try:
        before = _dump(folder)
        assert any("INSERT INTO \"trial\"" in line for line in before)  # it got as far as its baseline
        for command in ("run", "coordinate"):
            second = autosci(command, str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
                             f"campaign.folder={folder}", f"task.path={FIXTURE_TASKS / 'toy'}", "--inline-agents"
                             if command == "coordinate" else "--quiet", timeout=120)
            assert second.returncode == 3, second.stdout + second.stderr
            assert f"pid {first.pid} on" in second.stderr and "refusing" in second.stderr, second.stderr
            assert _dump(folder) == before  # not one row written by the refused command
        assert first.poll() is None  # and the holder was left alone
    finally:
        first.kill()
        first.wait()


def test_a_comparison_does_not_coordinate_a_campaign_another_command_holds(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    first = _hold_the_lease(out / "single-s0", tmp_path, "coordination.mode=single", "campaign.seed=0",
                            "campaign.name=single-s0")
    try:
        before = _dump(out / "single-s0")
        result = autosci("compare", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
                         f"task.path={FIXTURE_TASKS / 'toy'}", "--arms", "single", "--seeds", "1", "--out", str(out),
                         timeout=300)
        assert result.returncode == 3, result.stdout + result.stderr
        assert f"pid {first.pid} on" in result.stderr and not (out / "report.html").exists()
        assert _dump(out / "single-s0") == before
    finally:
        first.kill()
        first.wait()


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


def _rows(folder: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_an_offline_run_is_deterministic(tmp_path: Path) -> None:
    """The same config, the offline agents, two runs. What the campaign's own timing cannot change is
    the same: the baseline champion, the ideas of the discussion (posted before any candidate ran),
    and the metric of every configuration and seed both runs tried. (The order of later ideas follows
    the order in which results arrive, which the machine's load decides.)"""
    folders = []
    for name in ("first", "second"):
        folder = tmp_path / name
        result = autosci("run", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), f"campaign.folder={folder}",
                         f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=15", "--quiet")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        folders.append(folder)
    baseline = "select overrides, seed_metrics, metric_mean, metric_std from champion where rule = 'baseline'"
    # The discussion's round: one idea per analyst (toy_smoke: 2 teams x 2 analysts), before any candidate.
    discussion = "select id, author_id, title, overrides from proposal order by id limit 4"
    measured = "select config_signature, seed, metric, test_metric from trial where status = 'succeeded'"
    first, second = folders
    assert _rows(first, baseline) == _rows(second, baseline) != []
    assert _rows(first, discussion) == _rows(second, discussion) != []
    ones, twos = ({(sig, seed): (m, t) for sig, seed, m, t in _rows(f, measured)} for f in folders)
    common = set(ones) & set(twos)
    assert len(common) >= 6  # the baseline's seeds and more
    assert {k: ones[k] for k in common} == {k: twos[k] for k in common}
