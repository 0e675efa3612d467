"""`autosci rerun` from any directory, on a task with prepared data: the folder and the data path are
resolved absolutely; a rerun that cannot run exits non-zero with its reason; one that ran and
disagreed says "differs" and exits 0."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import FIXTURE_TASKS, ROOT


def autosci(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    env.pop("AUTOSCI_CAMPAIGN", None)
    return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_rerun_from_another_directory_with_a_relative_folder_on_a_task_with_data(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    run = autosci(here, "run", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"), "campaign.folder=camp",
                  f"task.path={FIXTURE_TASKS / 'withdata'}", "budget.trials=4", "promotion.seeds=2",
                  "--quiet")
    assert run.returncode == 0, run.stderr
    folder = here / "camp"
    assert (folder / "data" / "visible" / "target.json").is_file()
    con = sqlite3.connect(folder / "state.db")
    trial_id, metric = con.execute(
        "select id, metric from trial where status='succeeded' order by id").fetchone()
    con.close()

    relative = os.path.relpath(folder, elsewhere)  # ../here/camp
    same = autosci(elsewhere, "rerun", str(trial_id), "-C", relative)
    assert same.returncode == 0, same.stderr
    assert f"metric {metric!r} (identical)" in same.stdout
    other = autosci(elsewhere, "rerun", str(trial_id), "--seed", "7", "-C", relative)
    assert other.returncode == 0 and "(differs)" in other.stdout, other.stderr
    assert not list(elsewhere.iterdir())  # nothing written where the command was started

    # The data gone: the rerun cannot run, and says so with a non-zero exit, not "differs".
    (folder / "data" / "visible" / "target.json").unlink()
    broken = autosci(elsewhere, "rerun", str(trial_id), "-C", relative)
    assert broken.returncode == 1
    assert "(differs)" not in broken.stdout and "Traceback" not in broken.stderr
    assert "produced no metric: the program failed (program_error)" in broken.stderr
    assert "target.json" in broken.stderr  # the program's own reason

    # The program's snapshots gone (a folder copied without them): refused in one line before anything runs.
    import shutil

    shutil.rmtree(folder / "snapshots")
    before = sorted(p.name for p in (folder / "reruns").iterdir())
    gone = autosci(elsewhere, "rerun", str(trial_id), "-C", relative)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1, gone.stderr
    assert f"trial {trial_id}'s program is gone: " in gone.stderr and "snapshots" in gone.stderr
    assert sorted(p.name for p in (folder / "reruns").iterdir()) == before


def test_rerun_of_a_trial_that_does_not_exist(tmp_path: Path) -> None:
    missing = autosci(tmp_path, "rerun", "3", "-C", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "no campaign database" in missing.stderr
