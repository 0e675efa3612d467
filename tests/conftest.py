"""Shared fixtures. (The helpers live in helpers.py, importable from every test folder.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from autosci_hpc.config import CampaignConfig
from helpers import campaign_config
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture, for tests in any folder)

sys.path.insert(0, str(Path(__file__).resolve().parent / "execution"))  # fake_slurm, for every folder
sys.path.insert(0, str(Path(__file__).resolve().parent / "llm"))  # llm_fakes, for every folder

#: Test folders whose skips (a task's package missing) become failures where that switch is "1".
REQUIRED_WHEN = {"AUTOSCI_REQUIRE_TASKS": "tests/tasks/"}


@pytest.fixture
def toy_config(tmp_path: Path) -> Iterator[CampaignConfig]:
    yield campaign_config(tmp_path)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake Slurm (tests/execution/fake_slurm.py) first on PATH; its jobs really run."""
    from fake_slurm import FakeSlurm

    fake = FakeSlurm(tmp_path / "fake-slurm", run_jobs=True)
    monkeypatch.setenv("PATH", fake.path_env())
    return fake


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Where a switch such as AUTOSCI_REQUIRE_TASKS=1 is set (CI), a test of its folder that would be
    skipped for a missing package fails instead, with the skip's reason: CI must not pass by skipping."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    for switch, folder in REQUIRED_WHEN.items():
        if os.environ.get(switch) == "1" and item.nodeid.startswith(folder):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"{switch}=1 but this test would be skipped: {reason}"
