"""Shared fixtures. (The helpers live in helpers.py, importable from every test folder.)"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from autosci_hpc.config import CampaignConfig
from helpers import campaign_config
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture, for tests in any folder)


@pytest.fixture
def toy_config(tmp_path: Path) -> Iterator[CampaignConfig]:
    yield campaign_config(tmp_path)
