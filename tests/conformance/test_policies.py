"""One test body, every `Policy`: the offline and random policies, and the LLM policy over each chat
backend (its real client talking to a stand-in model on 127.0.0.1). Each decision a role asks of a
policy gets an answer of the declared type, that the coordinator can use as it is, and that is bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from autosci_hpc.agents.policy import (CritiqueDraft, DeadEndDraft, Implementation, Policy, ProposalDraft,
                                       TeamDraft)
from autosci_hpc.agents.views import ProposalView, StateView
from autosci_hpc.config import LLMSection
from autosci_hpc.task import Edit, PatchError, TaskSpec, build_snapshot, unknown_keys
from llm_fakes import agent, toy_view
from policies import ALL, policy_named

#: Characters a policy's text may hold: the LLM policy's clipping limits, plus its marker.
TITLE_CHARS = LLMSection().title_chars + 60
TEXT_CHARS = LLMSection().text_chars + 60


@pytest.fixture(params=ALL)
def setting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Policy, TaskSpec, StateView, Path]]:
    folder = tmp_path / "campaign"
    task, view = toy_view(folder)
    for policy in policy_named(request.param, task, folder):
        yield policy, task, view, folder


def bounded(text: str, limit: int = TEXT_CHARS) -> bool:
    return isinstance(text, str) and 0 < len(text.strip()) and len(text) <= limit


def usable_change(task: TaskSpec, view: StateView, folder: Path, overrides: dict[str, Any],
                  edits: list[Edit]) -> str:
    """Why the coordinator could not run this change ('' when it can): unknown keys, values off their
    axes, edits that do not apply to the champion's program."""
    unknown = unknown_keys(task.base_config(), overrides)
    if unknown:
        return f"unknown keys {unknown}"
    for key, value in overrides.items():
        axis = task.axis(key)
        if axis is None:
            continue
        if axis.kind == "choice" and value not in axis.values:
            return f"{key}={value!r} is not one of {axis.values}"
        if axis.kind != "choice" and not (axis.low <= float(value) <= axis.high):  # type: ignore[operator]
            return f"{key}={value!r} is off its axis [{axis.low}, {axis.high}]"
    if edits:
        assert view.champion is not None
        try:
            build_snapshot(task, folder, view.champion.snapshot_id, edits)
        except PatchError as exc:
            return f"edits do not apply: {exc}"
    return ""


def open_proposal(pid: int, focus: str, overrides: dict[str, Any], status: str = "posted") -> ProposalView:
    return ProposalView(id=pid, author="analyst-2", team_id=None, focus=focus, title=f"move {focus}",
                        rationale="the log suggests it", overrides=overrides, edits=[],
                        change_signature="|".join(f"{k}={v}" for k, v in overrides.items()),
                        config_signature="s|" + ",".join(f"{k}={v}" for k, v in overrides.items()),
                        directions=[f"{k}~bin4/6" for k in overrides], status=status, outcome="",
                        base_champion_id=1)


@pytest.mark.parametrize("focus", [None, "x_axis"])
def test_a_proposal_is_usable_and_within_its_focus(setting: Any, focus: Optional[str]) -> None:
    policy, task, view, folder = setting
    draft = policy.propose(agent("analyst", team_id=1 if focus else None), view, focus)
    if draft is None:  # a policy may have nothing to propose, never something unusable
        return
    assert isinstance(draft, ProposalDraft)
    assert bounded(draft.title, TITLE_CHARS) and bounded(draft.rationale) and bounded(draft.focus, TITLE_CHARS)
    assert draft.overrides or draft.edits, "a proposal that changes nothing"
    assert usable_change(task, view, folder, draft.overrides, list(draft.edits)) == ""
    if focus is not None:
        assert draft.focus == focus
        groups = {task.axis(k).group for k in draft.overrides if task.axis(k) is not None}  # type: ignore[union-attr]
        assert groups <= {focus}, f"a proposal for {focus} moves {groups}"


@pytest.mark.parametrize("findings", [[], ["a trial with the same configuration already ran (trial 3)"]])
def test_a_critique_is_a_verdict_with_reasons(setting: Any, findings: list[str]) -> None:
    policy, _, view, _ = setting
    draft = policy.critique(agent("analyst", id=2), view, open_proposal(5, "x_axis", {"x": 0.4}), findings)
    assert isinstance(draft, CritiqueDraft)
    assert draft.verdict in ("approve", "reject") and bounded(draft.reasons)


@pytest.mark.parametrize("n_teams", [1, 2])
def test_a_plan_forms_at_most_the_teams_asked_for_from_the_approved_proposals(setting: Any, n_teams: int) -> None:
    policy, task, view, _ = setting
    approved = [open_proposal(3, "x_axis", {"x": 0.4}, "approved"), open_proposal(4, "y_axis", {"y": -0.2}, "approved"),
                open_proposal(6, "x_axis", {"x": 0.7}, "approved")]
    drafts = policy.plan_teams(agent("analyst", id=2, team_id=None), view, approved, n_teams)
    assert 1 <= len(drafts) <= n_teams and all(isinstance(d, TeamDraft) for d in drafts)
    assert len({d.focus for d in drafts}) == len(drafts), "two teams with one focus"
    for draft in drafts:
        assert bounded(draft.focus, TITLE_CHARS) and bounded(draft.hypothesis)
        assert set(draft.proposal_ids) <= {3, 4, 6}


def test_a_review_declares_dead_ends_only_on_the_evidence_given(setting: Any) -> None:
    policy, _, view, _ = setting
    evidence = {"x~bin1/6": [4, 7, 9], "y~bin5/6": [5]}
    drafts = policy.review(agent("analyst", id=2), view, evidence)
    assert isinstance(drafts, list) and all(isinstance(d, DeadEndDraft) for d in drafts)
    for draft in drafts:
        assert draft.signature in evidence and bounded(draft.reason) and bounded(draft.description)
        assert draft.evidence_trial_ids and set(draft.evidence_trial_ids) <= set(evidence[draft.signature])


def test_an_implementation_is_a_change_the_coordinator_can_run(setting: Any) -> None:
    policy, task, view, folder = setting
    claimed = open_proposal(7, "x_axis", {"x": 0.5}, "claimed")
    done = policy.implement(agent("experimenter"), view, claimed)
    assert isinstance(done, Implementation)
    assert done.overrides or done.edits, "an implementation that changes nothing"
    assert usable_change(task, view, folder, done.overrides, list(done.edits)) == ""
    assert len(done.notes) <= TEXT_CHARS
