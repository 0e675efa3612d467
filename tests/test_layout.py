"""The campaign folder's layout: the names a resumed campaign (and `autosci rerun`, and the reports)
rely on finding where an earlier run of the code put them."""

from __future__ import annotations

from pathlib import Path

from autosci_hpc.data import visible_dirs
from autosci_hpc.layout import CampaignLayout
from autosci_hpc.task import load_task
from helpers import FIXTURE_TASKS


def test_each_attempt_of_a_trial_has_a_folder_of_its_own(tmp_path: Path) -> None:
    layout = CampaignLayout(tmp_path)
    assert layout.trial(7) == tmp_path / "trials" / "000007"
    assert layout.trial(7, attempt=2) == tmp_path / "trials" / "000007-attempt2"
    assert layout.snapshot("abc") == tmp_path / "snapshots" / "abc"
    assert layout.database == tmp_path / "state.db"
    assert layout.rerun_jobs == tmp_path / "reruns" / "jobs"


def test_the_training_step_sees_its_splits_visible_part_only(tmp_path: Path) -> None:
    layout = CampaignLayout(tmp_path)
    assert layout.data_visible(0, 1) == tmp_path / "data" / "visible"
    assert layout.data_visible(2, 3) == tmp_path / "data" / "visible" / "split-2"
    assert layout.data_sealed == tmp_path / "data" / "sealed"
    task = load_task(FIXTURE_TASKS / "toy").model_copy(update={"splits": 3})
    assert visible_dirs(task, layout.data) == [layout.data_visible(k, 3) for k in range(3)]
