"""Code changes are deduplicated before compute, and dead ends apply to the directions proposals name.

A code-edit proposal is applied to the champion's program when it is posted: its signature carries
the content-addressed snapshot id its trial will run, so the same program reached by other wording
is a duplicate of the trial that ran it.
"""

from __future__ import annotations

from pathlib import Path

from sqlmodel import col, select

from autosci_hpc.agents.policy import AgentInfo, ProposalDraft
from autosci_hpc.agents.roles import Analyst, Context
from autosci_hpc.agents.views import StateView
from autosci_hpc.coordination.discussion import settle
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent, Campaign, Champion, DeadEnd, Proposal, Trial
from autosci_hpc.task import Edit, build_snapshot, config_signature, load_task
from helpers import FIXTURE_TASKS, ScriptedPolicy, campaign_config

# Two wordings of one program: an `import os` between `import random` and `import sys`.
BEFORE_SYS = Edit(path="train.py", search="import sys\n", replace="import os\nimport sys\n")
AFTER_RANDOM = Edit(path="train.py", search="import random\n", replace="import random\nimport os\n")


class Drafts(ScriptedPolicy):
    """Analysts post the given drafts, in order."""

    def __init__(self, drafts: list[ProposalDraft]) -> None:
        super().__init__([])
        self.drafts = list(drafts)

    def propose(self, agent: AgentInfo, view: StateView, focus: str | None) -> ProposalDraft | None:
        return self.drafts.pop(0) if self.drafts else None


def setting(tmp_path: Path, drafts: list[ProposalDraft]) -> tuple[Context, list[Analyst], str]:
    """A champion, and a candidate trial that ran the champion's program edited by BEFORE_SYS."""
    config = campaign_config(tmp_path)
    task = load_task(FIXTURE_TASKS / "toy")
    folder = config.campaign_folder()
    store = Store(folder)
    snapshot = build_snapshot(task, folder)
    edited = build_snapshot(task, folder, snapshot, [BEFORE_SYS])
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="toy", mode="decentralized"))
        for name in ("analyst-1", "analyst-2", "analyst-3"):
            session.add(Agent(name=name, role="analyst"))
        session.add(Champion(group="baseline", snapshot_id=snapshot, overrides={},
                             config_signature=config_signature(snapshot, {}),
                             seed_metrics={"0": 0.5, "1": 0.5, "2": 0.5}, metric_mean=0.5, metric_std=0.01,
                             rule="baseline"))
        session.add(Trial(role="candidate", group="p0", snapshot_id=edited, overrides={},
                          config_signature=config_signature(edited, {}), seed=0, status="succeeded", metric=0.5))
        session.add(DeadEnd(signature="dir:arch:depth", description="deeper networks", reason="3 got worse"))
    ctx = Context(store, task, Drafts(drafts), config, capacity=1)  # analysts only: no trial runs
    with store.read() as session:
        ids = [a.id for a in session.exec(select(Agent).order_by(col(Agent.id))).all() if a.id is not None]
    return ctx, [Analyst(ctx, i) for i in ids], edited


def post_and_settle(ctx: Context, analysts: list[Analyst]) -> Proposal:
    analysts[0].post_proposal("x_axis", None)
    for critic in analysts:
        critic.step()
    settle(ctx)
    with ctx.store.read() as session:
        return session.exec(select(Proposal).order_by(col(Proposal.id).desc())).first()  # type: ignore[return-value]


def draft(title: str, edits: list[Edit], direction: str = "") -> ProposalDraft:
    return ProposalDraft(title=title, focus="x_axis", edits=edits, rationale="why not", direction=direction)


def test_the_same_program_in_other_words_is_a_duplicate(tmp_path: Path) -> None:
    ctx, analysts, edited = setting(tmp_path, [draft("import os early", [AFTER_RANDOM])])
    proposal = post_and_settle(ctx, analysts)
    # The signature names the snapshot the trial will run, not the wording of the edit ...
    assert proposal.config_signature == config_signature(edited, {})
    # ... so it is the program trial 1 ran, refused before any compute.
    assert proposal.status == "rejected" and "duplicate: trial 1" in proposal.reject_reason
    with ctx.store.read() as session:
        assert len(session.exec(select(Trial)).all()) == 1


def test_a_new_program_is_not_a_duplicate(tmp_path: Path) -> None:
    other = Edit(path="train.py", search="import sys\n", replace="import sys  # a comment is a new program\n")
    ctx, analysts, _ = setting(tmp_path, [draft("comment", [other])])
    proposal = post_and_settle(ctx, analysts)
    assert "duplicate" not in proposal.reject_reason


def test_edits_that_do_not_apply_are_refused_when_posted(tmp_path: Path) -> None:
    missing = Edit(path="train.py", search="no such line\n", replace="x\n")
    ctx, analysts, _ = setting(tmp_path, [draft("broken", [missing])])
    proposal = post_and_settle(ctx, analysts)
    assert proposal.status == "rejected" and "do not apply" in proposal.reject_reason
    assert "occurs 0 times" in proposal.reject_reason


def test_dead_ends_apply_to_a_named_direction(tmp_path: Path) -> None:
    deeper = Edit(path="train.py", search="import sys\n", replace="import sys  # deeper\n")
    ctx, analysts, _ = setting(tmp_path, [draft("deeper", [deeper], direction="arch:depth"),
                                          draft("deeper, said badly", [deeper], direction="arch:depth;<b>")])
    proposal = post_and_settle(ctx, analysts)
    assert "dir:arch:depth" in proposal.directions
    assert proposal.status == "rejected" and "dead_end: 'dir:arch:depth'" in proposal.reject_reason
    hostile = post_and_settle(ctx, analysts)
    assert "dir:arch:depthb" in hostile.directions  # model text is clipped to a tag's characters
