"""One grammar for every command that reads a campaign: the folder first or as `-C`, the newest under runs/
by default; a form the grammar does not take is one line saying what to type, exit 2."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autosci_hpc import cli
from helpers import FIXTURE_TASKS, ROOT

#: The logged metric of trial 1 in each campaign: how the output shows which campaign a command read.
OLDER_METRIC, NEWER_METRIC = 0.1111, 0.9999


def autosci(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    env.pop("AUTOSCI_CAMPAIGN", None)
    return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _mark(folder: Path, name: str, metric: float) -> None:
    con = sqlite3.connect(folder / "state.db")
    with con:
        con.execute("update campaign set name=?", (name,))
        con.execute("update trial set metric=? where id=1", (metric,))
    con.close()


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with runs/older and runs/newer: two campaigns told apart by name and trial 1's metric.
    runs/newer is the real one (reruns run its trials); runs/older is a copy with an older database."""
    cwd = tmp_path_factory.mktemp("grammar")
    run = autosci(cwd, "run", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), "campaign.folder=runs/newer",
                  f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=4", "--quiet")
    assert run.returncode == 0, run.stderr
    shutil.copytree(cwd / "runs" / "newer", cwd / "runs" / "older")
    _mark(cwd / "runs" / "older", "older", OLDER_METRIC)
    _mark(cwd / "runs" / "newer", "newer", NEWER_METRIC)
    stamp = (cwd / "runs" / "newer" / "state.db").stat().st_mtime
    os.utime(cwd / "runs" / "older" / "state.db", (stamp - 3600, stamp - 3600))
    return cwd


@pytest.mark.parametrize("form", [["status"], ["status", "runs/newer"], ["status", "-C", "runs/newer"],
                                  ["status", "--campaign", "runs/newer"]])
def test_status_reads_the_named_campaign_or_the_newest(here: Path, form: list[str]) -> None:
    result = autosci(here, *form)
    assert result.returncode == 0, result.stderr
    assert "newer  task toy" in result.stdout


def test_status_reads_an_older_campaign_when_named(here: Path) -> None:
    for form in (["status", "runs/older"], ["status", "-C", "runs/older"]):
        result = autosci(here, *form)
        assert result.returncode == 0 and "older  task toy" in result.stdout, result.stderr


@pytest.mark.parametrize("form", [["log"], ["log", "runs/older"], ["log", "-C", "runs/older"],
                                  ["log", "--status", "succeeded", "runs/older"]])
def test_log_takes_the_folder_every_way(here: Path, form: list[str]) -> None:
    result = autosci(here, *form)
    assert result.returncode == 0, result.stderr
    wanted = NEWER_METRIC if form == ["log"] else OLDER_METRIC
    assert f"{wanted:.4f}" in result.stdout


@pytest.mark.parametrize("form", [["show", "1"], ["show", "runs/older", "1"], ["show", "-C", "runs/older", "1"],
                                  ["show", "1", "-C", "runs/older"], ["show", "runs/older", "--transcript", "p1"]])
def test_show_takes_the_folder_before_what_to_show(here: Path, form: list[str]) -> None:
    result = autosci(here, *form)
    if "--transcript" in form:  # offline agents leave no conversation: the answer names the folder read
        assert result.returncode == 1 and "runs/older/transcripts" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert "trial 1: baseline" in result.stdout
    wanted = NEWER_METRIC if form == ["show", "1"] else OLDER_METRIC
    assert str(wanted) in result.stdout


@pytest.mark.parametrize("form", [["rerun", "runs/newer", "1"], ["rerun", "-C", "runs/newer", "1"], ["rerun", "1"]])
def test_rerun_takes_the_folder_before_the_trial(here: Path, form: list[str]) -> None:
    result = autosci(here, *form)
    assert result.returncode == 0, result.stderr
    assert f"trial 1 seed 0: logged metric {NEWER_METRIC!r}" in result.stdout
    assert str(here / "runs" / "newer" / "reruns") in result.stdout


def test_report_of_the_newest_and_of_several_named(here: Path) -> None:
    newest = autosci(here, "report")
    assert newest.returncode == 0, newest.stderr
    assert (here / "runs" / "newer" / "report.html").is_file()
    both = autosci(here, "report", "runs/older", "-C", "runs/newer", "--out", "both.html")
    assert both.returncode == 0, both.stderr
    page = (here / "both.html").read_text()
    assert "older" in page and "newer" in page


@pytest.mark.parametrize(("argv", "line"), [
    (["log", "runs/a", "runs/b"], "autosci log: one campaign folder at a time: autosci log runs/a"),
    (["log", "3", "runs/a"], "autosci log: one campaign folder at a time: autosci log runs/a"),
    (["status", "runs/a", "-C", "runs/b"], "autosci status: two campaign folders given (runs/a, runs/b): give one, "
                                           "as autosci status runs/a"),
    (["rerun", "3", "runs/a"], "autosci rerun: the folder comes first: autosci rerun runs/a 3"),
    (["rerun", "runs/a", "x3"], "autosci rerun: a trial is rerun by its number, as `autosci log` lists it: "
                                "autosci rerun runs/a 12"),
    (["show", "runs/a"], "autosci show: say which REF in runs/a: autosci show runs/a REF, REF being a trial (12), "
                         "proposal (p3), team (team-1) or champion (c2, champion)"),
    (["show", "-C", "runs/a"], "autosci show: say which REF: autosci show [FOLDER] REF"),
    (["log", "--bogus", "runs/a"], "autosci log: unrecognized arguments: --bogus; type: autosci log [FOLDER] "
                                   "[-C FOLDER] [--team TEAM]"),
    (["rerun", "runs/a", "3", "--seed", "x"], "autosci rerun: argument --seed: 'x' is not a whole number of at least 0; type: "
                                              "autosci rerun [FOLDER] TRIAL [-C FOLDER]"),
    (["rerun", "runs/a", "3", "--seed", "-2"], "autosci rerun: argument --seed: '-2' is not a whole number of at least 0"),
    (["rerun", "runs/a", "3", "--timeout", "inf"], "argument --timeout: 'inf' is not a number of seconds above 0"),
    (["compare", "c.yaml", "--out", "x", "--seeds", "0"], "autosci compare: argument --seeds: '0' is not a whole number of at least 1"),
    (["compare", "c.yaml", "--out", "x", "--parallel", "-1"], "argument --parallel: '-1' is not a whole number of at least 1"),
    (["compare", "c.yaml", "--out", "x", "--target", "nan"], "argument --target: 'nan' is not a finite number"),
    (["log", "runs/a", "--limit", "0"], "autosci log: argument --limit: '0' is not a whole number of at least 1"),
    (["run", "c.yaml", "--lease-ttl", "0"], "autosci run: argument --lease-ttl: '0' is not a number of seconds above 0"),
    (["doctor", "a", "b"], "autosci doctor: unrecognized arguments: b; type: autosci doctor"),
    (["lgo"], "autosci: argument COMMAND: invalid choice: 'lgo'"),
    ([], "type autosci COMMAND, one of: run, coordinate, status, log, show, rerun, report, compare, task check, "
         "doctor (autosci --help)"),
])
def test_a_wrong_form_is_one_line_saying_what_to_type(argv: list[str], line: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1, out.err
    assert line in out.err


@pytest.mark.parametrize(("ref", "line"), [
    ("abc", "autosci: 'abc' is not something to show: name a trial (12 or t12), a proposal (p3), a champion"),
    ("team-", "autosci: 'team-' is not something to show"),
    ("99999", "autosci: no trial 99999"),
    ("c99", "autosci: no champion 99"),
])
def test_show_of_something_that_is_not_there_is_one_line(here: Path, ref: str, line: str) -> None:
    result = autosci(here, "show", "runs/newer", ref)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("command", [["status"], ["log"], ["show", "1"]])
def test_a_campaign_database_that_is_not_one_is_one_line(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "state.db").write_bytes(b"\x00garbage" * 100)
    result = autosci(tmp_path, command[0], "runs/broken", *command[1:])
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "autosci: runs/broken/state.db: not a campaign database (file is not a database)" in result.stderr


def test_compare_refuses_an_out_that_is_a_file_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine")
    result = autosci(tmp_path, "compare", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), "--out", "taken")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--out taken exists and is not a folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_options_and_words_mix_in_any_order(tmp_path: Path) -> None:
    """argparse alone leaves a word after an option unrecognized; the grammar takes it where it belongs."""
    args = cli.parse(["run", "cfg.yaml", "--quiet", "more.yaml", "budget.trials=3"])
    assert args.config == "cfg.yaml" and args.overrides == ["more.yaml", "budget.trials=3"] and args.quiet
    args = cli.parse(["show", "--transcript", "runs/a", "p3"])
    assert (args.folder, args.ref, args.transcript) == ("runs/a", "p3", True)
    args = cli.parse(["rerun", "--seed", "7", "12"])
    assert (args.folder, args.trial, args.seed) == (None, 12, 7)
    args = cli.parse(["report", "-C", "a", "b", "-C", "c"])
    assert args.folders == ["b", "a", "c"]


def test_help_lists_every_command_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    listed = [line.split()[0] for line in text.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction)).choices
    assert sorted(set(listed)) == sorted(commands)  # every command the parser takes, and no other
    assert "  task check TASK " in text
    assert len(listed) == len(cli.COMMANDS)
