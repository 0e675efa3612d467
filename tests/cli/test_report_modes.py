"""Files `autosci report` writes (--out, --export) hold the held-out metrics: owner-only modes, like
the campaign folder (0600 files, 0700 folders it creates), unless --shared; a folder that was there
before keeps its mode."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from autosci_hpc.cli import main as autosci

from helpers import ROOT

sys.path.insert(0, str(ROOT / "tests" / "report"))
from report_builders import story  # noqa: E402


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> object:
    old = os.umask(0o022)  # a usual umask: without the fix, files come out 0644
    yield
    os.umask(old)


def test_report_and_export_are_private_by_default(tmp_path: Path, open_umask: object) -> None:
    folder = story(tmp_path)
    out = tmp_path / "public" / "nested" / "r.html"
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    (existing / "trials.csv").write_text("old")  # overwritten: its mode is made private too
    os.chmod(existing / "trials.csv", 0o644)
    assert autosci(["report", str(folder), "--out", str(out), "--export", str(existing)]) == 0
    assert mode(out) == 0o600
    assert mode(out.parent) == 0o700  # created by the report
    assert mode(existing) == 0o755  # the user's folder keeps its mode ...
    files = [f for f in existing.iterdir() if f.is_file()]
    assert files and all(mode(f) == 0o600 for f in files)  # ... the files written in it do not
    new = tmp_path / "fresh-export"
    assert autosci(["report", str(folder), "--out", str(tmp_path / "r2.html"), "--export", str(new)]) == 0
    assert mode(new) == 0o700 and all(mode(f) == 0o600 for f in new.iterdir())


def test_shared_keeps_the_umask_modes(tmp_path: Path, open_umask: object) -> None:
    folder = story(tmp_path)
    out = tmp_path / "shared" / "r.html"
    csv = str(tmp_path / "csv")
    assert autosci(["report", str(folder), "--out", str(out), "--export", csv, "--shared"]) == 0
    assert mode(out) == 0o644 and mode(out.parent) == 0o755
    assert all(mode(f) == 0o644 for f in (tmp_path / "csv").iterdir())
