"""A campaign says which sandbox its trials run in; one without says so, in its status and its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from autosci_hpc.layout import CampaignLayout
from autosci_hpc.report import load_campaign
from autosci_hpc.report.html import _sandbox
from autosci_hpc.state import Store, emit
from autosci_hpc.state.models import Campaign
from autosci_hpc.status import render_status
from autosci_hpc.task import load_task

from hostile import TOY


def status_text(store: Store) -> str:
    console = Console(record=True, width=200)
    console.print(render_status(store))
    return console.export_text()


@pytest.mark.parametrize("mode", ["bwrap", "none", None])
def test_status_and_report_name_the_sandbox(tmp_path: Path, mode: str) -> None:
    store = Store(tmp_path / "c")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path / "c"), task_name="toy", mode="decentralized"))
        if mode is not None:
            emit(session, "campaign.sandbox", "campaign", 1, sandbox=mode, requested="auto", reason="test")
    (tmp_path / "c" / CampaignLayout.TASK_SPEC).write_text(load_task(TOY).model_dump_json())
    text = status_text(store)
    report = _sandbox(load_campaign(tmp_path / "c"))
    if mode == "bwrap":
        assert "sandbox: bwrap" in text and report == "bwrap"
    else:  # none, or a campaign from before sandboxes
        assert "sandbox: NONE" in text and "unsandboxed" in report
