"""The hostile suite runs each attack with the sandbox (bwrap) and without (none)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))

from hostile import skip_without_bwrap  # noqa: E402


@pytest.fixture(params=["bwrap", "none"])
def mode(request: pytest.FixtureRequest) -> str:
    """The sandbox under test; bwrap is skipped (with the reason) where it cannot work, unless
    AUTOSCI_REQUIRE_SANDBOX=1 (CI), where that is a failure."""
    if request.param == "bwrap":
        skip_without_bwrap()
    return str(request.param)
