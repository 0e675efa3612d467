"""Test helpers: small campaign configs on the fixture tasks, and a scripted policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from autosci_hpc.agents.policy import AgentInfo, ProposalDraft
from autosci_hpc.agents.views import StateView
from autosci_hpc.config import CampaignConfig, load_config
from autosci_hpc.llm.offline import OfflinePolicy

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_TASKS = ROOT / "tests" / "fixtures" / "tasks"


def campaign_config(tmp_path: Path, task: str = "toy", *overrides: str) -> CampaignConfig:
    base = [
        f"campaign.folder={tmp_path / 'campaign'}",
        f"task.path={FIXTURE_TASKS / task}",
        "coordination.teams=2",
        "coordination.analysts_per_team=1",
        "coordination.experimenters_per_team=1",
        "coordination.discussion_rounds=1",
        "coordination.poll_interval_s=0.05",
        "promotion.seeds=3",
        "budget.trials=15",
        "executor.result_grace_s=1",
        "executor.local.max_concurrent=2",
    ]
    return load_config(None, base + list(overrides))


class ScriptedPolicy(OfflinePolicy):
    """The offline policy, except that analysts post the given changes first, in order.

    This is how a test puts a particular idea (a crashing change, a lucky seed) into a real
    campaign without a model: the rest of the loop is the product's own.
    """

    def __init__(self, script: list[dict[str, Any]], focus: str = "x_axis", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script = list(script)
        self.focus = focus
        self.posted: list[dict[str, Any]] = []

    def propose(self, agent: AgentInfo, view: StateView, focus: Optional[str]) -> Optional[ProposalDraft]:
        if self.script:
            overrides = self.script.pop(0)
            self.posted.append(overrides)
            return ProposalDraft(title=f"scripted {overrides}", focus=focus or self.focus, overrides=overrides,
                                 rationale="scripted by the test")
        return super().propose(agent, view, focus)
