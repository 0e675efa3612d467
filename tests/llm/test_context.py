"""What agents are shown: prompts bounded whatever the log's length, and never the test metric."""

from __future__ import annotations

import json
from pathlib import Path

from autosci_hpc.agents.policy import AgentInfo
from autosci_hpc.agents.views import DeadEndView, PostView, ProposalView, TrialView, build_view
from autosci_hpc.config import LLMSection
from autosci_hpc.llm.context import CHARS_PER_TOKEN, estimate_tokens, render_state
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent, Campaign, Champion, DeadEnd, ForumPost, Proposal, Team, Trial
from autosci_hpc.task import build_snapshot, load_task

from llm_fakes import TOY, FakeServer, agent, anthropic_policy, tool_use, toy_view

LLM = LLMSection(backend="anthropic", context_tokens=6000)


def big_view(tmp_path: Path, n: int):
    task, view = toy_view(tmp_path, trials=n)
    view.proposals = [ProposalView(id=i, author="analyst-1", team_id=1 + i % 2, focus="x_axis", title=f"idea {i}",
                                   rationale="because " * 40, overrides={"x": i / n}, edits=[],
                                   change_signature=f"x={i}", config_signature=f"s|x={i}", directions=[f"x~{i}"],
                                   status="done" if i % 3 else "queued", outcome="", base_champion_id=1)
                      for i in range(1, n + 1)]
    view.forum = [PostView(id=i, kind=["result", "critique", "failure"][i % 3], team_id=1, title=f"post {i}",
                           body="words " * 100) for i in range(1, n + 1)]
    view.dead_ends = [DeadEndView(signature=f"x~bin{i}", team_id=1, description="d", reason="no gain " * 10,
                                  evidence_trial_ids=[1, 2, 3]) for i in range(1, n + 1)]
    view.best_trials = view.trials[:10]
    return task, view


def requests_for(tmp_path: Path, n: int) -> list[dict]:
    task, view = big_view(tmp_path / str(n), n)

    def respond(body: dict) -> dict:
        names = [t["name"] for t in body["tools"]]
        final = next(x for x in ("no_proposal", "critique", "write_team_plan", "register_dead_ends") if x in names)
        data = {"no_proposal": {"reason": "none"}, "critique": {"verdict": "approve", "reasons": "ok"},
                "write_team_plan": {"teams": [{"focus": "x_axis", "hypothesis": "h"}]},
                "register_dead_ends": {"dead_ends": []}}[final]
        return tool_use((final, data))

    server = FakeServer(respond)
    policy = anthropic_policy(server, task, tmp_path / str(n), llm=LLM)
    me = agent("analyst")
    policy.propose(me, view, "x_axis")
    policy.critique(me, view, view.proposals[0], [f"finding {i}" for i in range(n)])
    policy.plan_teams(me, view, view.proposals, 2)
    policy.review(me, view, {f"y~{i}": list(range(i % 7 + 1)) for i in range(n)})
    assert server.count == 4
    return server.requests


def user_prompt(body: dict) -> str:
    return body["messages"][0]["content"][0]["text"]


def test_prompts_stay_within_the_budget_whatever_the_length_of_the_log(tmp_path: Path) -> None:
    small, large = requests_for(tmp_path, 10), requests_for(tmp_path, 10_000)
    ask_allowance = 16000 // CHARS_PER_TOKEN  # the purpose-specific part is clipped to 16000 characters
    for a, b in zip(small, large):
        assert estimate_tokens(user_prompt(b)) <= LLM.context_tokens + ask_allowance
        # 1000x the log, and the request hardly grows: the budget, not the log, sets its size.
        assert len(json.dumps(b)) <= len(json.dumps(a)) + LLM.context_tokens * CHARS_PER_TOKEN
    state = user_prompt(large[0])
    assert "more not shown" in state and "trial 10000" in state  # the newest shown, the rest counted


def test_render_state_alone_is_bounded() -> None:
    from llm_fakes import toy_view as _  # noqa: F401  (the fixture module loads the toy task)

    trials = [TrialView(id=i, proposal_id=i, team_id=1, role="candidate", seed=0, status="failed",
                        config_signature="s|" + "k=v;" * 50, metric=None, champion_delta=None,
                        failure_class="program_error", failure_reason="boom " * 100) for i in range(5000)]
    from autosci_hpc.agents.views import StateView, task_view

    view = StateView(task=task_view(load_task(TOY)), champion=None, trials=trials)
    me = AgentInfo(id=1, name="a", role="analyst", memory={"notes": "n" * 50_000})
    for budget in (1000, 4000, 20000):
        assert estimate_tokens(render_state(view, me, budget)) <= budget


def test_the_held_out_test_metric_never_reaches_a_prompt(tmp_path: Path) -> None:
    """A campaign state full of distinctive test metrics; every method's prompts and tool answers."""
    task = load_task(TOY)
    folder = tmp_path / "campaign"
    store = Store(folder)
    sid = build_snapshot(task, folder)
    test_values = [0.987654321 + i * 1e-6 for i in range(30)]
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="toy", mode="decentralized"))
        team = Team(name="team-1", hypothesis="x matters", focus="x_axis")
        session.add(team)
        session.flush()
        session.add(Agent(name="analyst-1", role="analyst", team_id=team.id))
        session.add(Agent(name="experimenter-1", role="experimenter", team_id=team.id))
        session.flush()
        proposal = Proposal(author_id=1, team_id=team.id, focus="x_axis", title="x up", overrides={"x": 0.3},
                            change_signature="x=0.3", config_signature=f"{sid}|x=0.3", status="claimed")
        session.add(proposal)
        session.flush()
        for i, value in enumerate(test_values):
            session.add(Trial(proposal_id=proposal.id, team_id=team.id, role="candidate", group=f"p{i}",
                              snapshot_id=sid, overrides={"x": i / 40}, config_signature=f"{sid}|x={i / 40}", seed=0,
                              status="succeeded", metric=0.5 + i / 1000, test_metric=value,
                              metrics={"score": 0.5 + i / 1000, "test_score": value}, log_tail=f"score={0.5}"))
        session.add(Champion(group="baseline", snapshot_id=sid, config_signature=f"{sid}|", seed_metrics={"0": 0.55},
                             metric_mean=0.55, metric_std=0.0, test_metric_mean=test_values[0], rule="baseline",
                             model_card="Champion #1 of task toy\nscore (maximize): 0.55"))
        session.add(ForumPost(kind="result", title="#1 done", body="per-seed score: {0: 0.55}"))
        session.add(DeadEnd(signature="x~bin0/6", description="d", reason="no gain", evidence_trial_ids=[1, 2]))
    with store.read() as session:
        view = build_view(session, task, folder=folder)
        pview = build_view(session, task).proposals[0]
    assert view.champion is not None and view.champion.snapshot_dir == str(folder / "snapshots" / sid)

    def respond(body: dict) -> dict:
        names = [t["name"] for t in body["tools"]]
        turn = len(body["messages"])
        if turn == 1:  # first: read everything there is to read
            reads = [("read_log", {"order": "best", "limit": 60}), ("read_forum", {}), ("read_dead_ends", {})]
            if "read_proposals" in names:
                reads.append(("read_proposals", {"proposal_id": pview.id}))
            if "list_files" in names:
                reads += [("list_files", {}), ("read_file", {"path": "train.py"}), ("smoke_test", {})]
            return tool_use(*reads)
        final = next(x for x in ("post_proposal", "critique", "write_team_plan", "register_dead_ends", "submit")
                     if x in names)
        data = {"post_proposal": {"title": "t", "focus": "x_axis", "overrides": {"x": 0.61}, "rationale": "r"},
                "critique": {"verdict": "approve", "reasons": "ok"},
                "write_team_plan": {"teams": [{"focus": "x_axis", "hypothesis": "h"}]},
                "register_dead_ends": {"dead_ends": []}, "submit": {"notes": ""}}[final]
        return tool_use((final, data))

    server = FakeServer(respond)
    policy = anthropic_policy(server, task, folder)
    me = agent("analyst")
    policy.propose(me, view, "x_axis")
    policy.critique(me, view, pview, [])
    policy.plan_teams(me, view, [pview], 1)
    policy.review(me, view, {"x~bin2/6": [3, 4]})
    policy.implement(agent("experimenter", id=2), view, pview)
    assert server.count == 10
    everything = b"\n".join(server.raw).decode()
    assert "0.55" in everything  # the validation metric reaches the prompts; the test metric may not:
    for value in test_values:
        for text in (repr(value), f"{value:.6g}", f"{value:.4g}", f"{value:.3g}"):
            assert text not in everything, f"test metric {text} leaked into a prompt"
    assert "test_metric" not in everything
