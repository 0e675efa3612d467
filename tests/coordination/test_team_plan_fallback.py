"""The team plan when the campaign's policy fails on it: the context's injected fallback answers (the
coordinator gives the model-free policy), so a team is never left without a focus; the discussion
itself names no policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from autosci_hpc.agents.policy import AgentInfo, PolicyError, TeamDraft
from autosci_hpc.agents.roles import Context
from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.coordination.discussion import _team_plan
from autosci_hpc.policies.offline import OfflinePolicy
from autosci_hpc.state.models import Event
from helpers import campaign_config


class Failing(OfflinePolicy):
    def plan_teams(self, *args: Any) -> list[TeamDraft]:
        raise PolicyError("the model kept answering nonsense")


class Fixed(OfflinePolicy):
    def plan_teams(self, *args: Any) -> list[TeamDraft]:
        return [TeamDraft(focus="x_axis", hypothesis="moving x helps")]


def _context(tmp_path: Path, fallback: Any) -> Context:
    config = campaign_config(tmp_path)
    coordinator = Coordinator(config, config.campaign_folder(), policy=Failing())
    assert isinstance(coordinator.ctx.fallback, OfflinePolicy)  # what a campaign is given
    ctx = coordinator.ctx
    return Context(ctx.store, ctx.task, ctx.policy, ctx.config, ctx.capacity, fallback=fallback)


def test_a_failed_team_plan_is_answered_by_the_injected_fallback(tmp_path: Path) -> None:
    ctx = _context(tmp_path, Fixed())
    drafts = _team_plan(ctx, _info(ctx), None, [], 2)
    assert [d.focus for d in drafts] == ["x_axis"]
    with ctx.store.read() as session:
        errors = session.exec(select(Event).where(Event.kind == "agent.policy_error")).all()
    assert [e.data["decision"] for e in errors] == ["plan_teams"]


def test_without_a_fallback_a_failed_team_plan_is_an_error_not_an_empty_plan(tmp_path: Path) -> None:
    ctx = _context(tmp_path, None)
    with pytest.raises(RuntimeError, match="no fallback policy"):
        _team_plan(ctx, _info(ctx), None, [], 2)


def _info(ctx: Context) -> AgentInfo:
    return AgentInfo(id=1, name="analyst-1", role="analyst")
