"""LLMPolicy over the real anthropic SDK client, through httpx2.MockTransport: tool-use conversations,
validation errors fed back, retries, prompt caching and exact accounting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlmodel import col, select

from autosci_hpc.agents.policy import CritiqueDraft, PolicyError
from autosci_hpc.agents.views import ProposalView
from autosci_hpc.config import LLMSection
from autosci_hpc.llm.accounting import MemoryRecorder, StoreRecorder
from autosci_hpc.llm.anthropic_backend import AnthropicChat
from autosci_hpc.llm.policy import LLMPolicyError
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent, LLMCall
from autosci_hpc.task import build_snapshot

from llm_fakes import (FakeServer, Script, agent, anthropic_policy, api_error, last_results, tool_use, toy_view,
                       usage)

Y_LINE = "y: 0.0          # float in [-1, 1]"


def proposal(overrides: dict, edits: list | None = None, pid: int = 7) -> ProposalView:
    return ProposalView(id=pid, author="analyst-1", team_id=1, focus="x_axis", title="move x towards 0.6",
                        rationale="the log says x matters", overrides=overrides, edits=edits or [],
                        change_signature="x=0.5", config_signature="s|x=0.5", directions=["x~bin4/6"],
                        status="claimed", outcome="", base_champion_id=1)


def test_an_experimenter_reads_fails_an_edit_gets_the_nearest_lines_fixes_it_and_submits(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    seen: dict[str, list] = {}

    def after_bad_edit(body: dict) -> dict:
        results = last_results(body)
        seen["bad"] = results
        return tool_use(("edit_files", {"edits": [{"path": "config.yaml", "search": Y_LINE,
                                                   "replace": "y: -0.3         # float in [-1, 1]"}]}))

    def after_good_edit(body: dict) -> dict:
        seen["good"] = last_results(body)
        return tool_use(("smoke_test", {}))

    def after_smoke(body: dict) -> dict:
        seen["smoke"] = last_results(body)
        return tool_use(("submit", {"notes": "y moved to its optimum in config.yaml; x from the proposal"}))

    def after_read(body: dict) -> dict:
        seen["read"] = last_results(body)
        return tool_use(("edit_files", {"edits": [{"path": "config.yaml", "search": "y: 0.00\n",
                                                   "replace": "y: -0.3\n"}]}))

    server = FakeServer(Script([
        tool_use(("list_files", {}), ("read_file", {"path": "config.yaml"})),
        after_read, after_bad_edit, after_good_edit, after_smoke,
    ]))
    recorder = MemoryRecorder()
    policy = anthropic_policy(server, task, tmp_path, recorder=recorder)
    impl = policy.implement(agent(), view, proposal({"x": 0.5}))

    assert server.count == 5
    # The reads answered with the file list and the numbered file ...
    listing, content = seen["read"]
    assert "config.yaml" in listing["content"] and "editable" in listing["content"]
    assert Y_LINE in content["content"] and not content["is_error"]
    # ... the failing edit with the nearest lines of the file, the fixed one applied, the smoke test passed.
    bad = seen["bad"][0]["content"]
    assert "NOT applied" in bad and "nearest lines" in bad and Y_LINE in bad
    assert "1 of 1 block(s) applied" in seen["good"][0]["content"]
    assert "smoke test passed" in seen["smoke"][0]["content"]
    # The implementation: the proposal's overrides and the one edit that applied.
    assert impl.overrides == {"x": 0.5}
    assert [(e.path, e.search) for e in impl.edits] == [("config.yaml", Y_LINE)]
    sid = build_snapshot(task, tmp_path, view.champion.snapshot_id, impl.edits)
    assert "y: -0.3" in (tmp_path / "snapshots" / sid / "config.yaml").read_text()
    # Every request offered the experimenter's tools, forced a tool call and cached the stable prompt.
    first = server.requests[0]
    assert {"list_files", "read_file", "edit_files", "set_overrides", "smoke_test", "submit"} <= {
        t["name"] for t in first["tools"]}
    assert first["tool_choice"] == {"type": "any"}
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "train.py" in first["system"][-1]["text"]  # the champion program is in the cached block
    assert len(recorder.calls) == 5 and all(c.purpose == "implement" and not c.error for c in recorder.calls)
    assert not list((tmp_path / "scratch").glob("*"))  # the scratch workspace is gone


def test_429_then_529_then_success_is_retried_honouring_retry_after_and_every_attempt_is_accounted(
        tmp_path: Path) -> None:
    task, view = toy_view(tmp_path / "campaign")
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Agent(name="analyst-1", role="analyst"))
    waits: list[float] = []
    server = FakeServer(Script([
        api_error(429, "rate_limit_error", retry_after="7"),
        api_error(529, "overloaded_error"),
        tool_use(("critique", {"verdict": "approve", "reasons": "nothing argues against it"})),
    ]))
    policy = anthropic_policy(server, task, tmp_path / "campaign", recorder=StoreRecorder(store), sleep=waits.append,
                              llm=LLMSection(backend="anthropic", retry_base_s=1.0))
    draft = policy.critique(agent("analyst"), view, proposal({"x": 0.5}), [])
    assert draft == CritiqueDraft(verdict="approve", reasons="nothing argues against it")
    assert server.count == 3
    assert waits[0] == 7.0 and 0.5 <= waits[1] <= 2.0  # retry-after, then exponential backoff
    with store.read() as session:
        rows = session.exec(select(LLMCall).order_by(col(LLMCall.id))).all()
    assert [r.purpose for r in rows] == ["critique"] * 3
    assert "429" in rows[0].error and "rate_limit" in rows[0].error
    assert "529" in rows[1].error and "overloaded" in rows[1].error
    assert rows[2].error == "" and rows[2].tokens_out == 20 and rows[2].cost_usd > 0
    assert rows[0].cost_usd == rows[1].cost_usd == 0.0


def test_a_malformed_tool_input_is_answered_with_the_validation_error_and_corrected(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    errors: list[dict] = []

    def correct(body: dict) -> dict:
        errors.extend(last_results(body))
        return tool_use(("critique", {"verdict": "reject", "reasons": "x=0.5 was tried in trial 3"}))

    server = FakeServer(Script([tool_use(("critique", {"verdict": "maybe"})), correct]))
    draft = anthropic_policy(server, task, tmp_path).critique(agent("analyst"), view, proposal({"x": 0.5}), [])
    assert draft.verdict == "reject" and server.count == 2
    assert errors[0]["is_error"] is True
    assert "verdict" in errors[0]["content"] and "reasons" in errors[0]["content"]  # both problems named


def test_repeated_invalid_calls_raise_a_clear_policy_error(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    server = FakeServer(lambda body: tool_use(("critique", {"verdict": "maybe", "reasons": "?"})))
    policy = anthropic_policy(server, task, tmp_path, llm=LLMSection(backend="anthropic", max_invalid=3))
    with pytest.raises(PolicyError, match=r"(?s)analyst-1: critique: 3 tool calls were invalid.*verdict"):
        policy.critique(agent("analyst"), view, proposal({"x": 0.5}), [])
    assert server.count == 3


def test_a_proposal_with_an_unknown_key_or_a_non_matching_edit_is_refused_with_reasons(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    answers: list[str] = []

    def fixed(body: dict) -> dict:
        answers.append(last_results(body)[0]["content"])
        return tool_use(("post_proposal", {"title": "y to -0.3", "focus": "y_axis", "overrides": {"y": -0.3},
                                           "rationale": "the optimum of y is near -0.3", "expected_effect": "+0.09",
                                           "falsification": "no gain over 3 seeds"}))

    server = FakeServer(Script([
        tool_use(("read_log", {"order": "best", "limit": 5}), ("update_memory", {"notes": "y is unexplored"})),
        tool_use(("post_proposal", {"title": "bad", "focus": "y_axis", "overrides": {"zeta": 1},
                                    "edits": [{"path": "train.py", "search": "def nothing_like_this():",
                                               "replace": "pass"}],
                                    "rationale": "r"})),
        fixed,
    ]))
    me = agent("analyst", team_id=None)
    draft = anthropic_policy(server, task, tmp_path).propose(me, view, None)
    assert draft is not None and draft.overrides == {"y": -0.3} and server.count == 3
    refused = answers[0]
    assert "unknown config key(s) zeta" in refused and "nearest lines" in refused
    assert "trial 1 baseline" in server.requests[1]["messages"][-1]["content"][0]["content"]  # read_log answered
    assert me.memory_update == {"notes": "y is unexplored"}  # for the role to store with the step
    # The stable prefix is cached on every request; the conversation from its second turn on.
    assert all(r["system"][-1]["cache_control"] == {"type": "ephemeral"} for r in server.requests)
    assert "cache_control" not in server.requests[0]["messages"][-1]["content"][-1]
    assert server.requests[1]["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_cached_token_accounting_is_exact(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    server = FakeServer(Script([tool_use(("critique", {"verdict": "approve", "reasons": "ok"}),
                                         use=usage(input_tokens=120, output_tokens=45, cache_read=3000,
                                                   cache_write=800))]))
    prices = {"claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}}
    recorder = MemoryRecorder()
    policy = anthropic_policy(server, task, tmp_path, recorder=recorder,
                              llm=LLMSection(backend="anthropic", prices=prices))
    policy.critique(agent("analyst"), view, proposal({"x": 0.5}), [])
    (call,) = recorder.calls
    assert server.count == 1
    assert (call.tokens_in, call.tokens_out, call.tokens_cached, call.tokens_cache_write) == (3920, 45, 3000, 800)
    assert call.cost_usd == pytest.approx((120 * 3.0 + 45 * 15.0 + 3000 * 0.3 + 800 * 3.75) / 1e6, rel=1e-12)
    assert call.model == "claude-sonnet-4-6" and call.agent_id == 1


def test_proxy_variables_are_honoured_by_the_default_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    client = AnthropicChat("test-key", "claude-sonnet-4-6")
    mounts = getattr(client.client._client, "_mounts", None)
    assert mounts is not None, "the SDK's http client changed shape: check proxy handling by hand"
    proxies = [m for m in mounts.values() if m is not None]
    assert proxies, "HTTPS_PROXY was ignored"
    assert "test-key" not in repr(client)
    assert os.environ["HTTPS_PROXY"] == "http://proxy.example:3128"


def test_submitting_a_broken_program_is_refused_by_the_smoke_test(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    answers: list[str] = []

    def then(reply):
        def respond(body: dict) -> dict:
            answers.append(last_results(body)[-1]["content"])
            return reply
        return respond

    server = FakeServer(Script([
        tool_use(("edit_files", {"edits": [{"path": "train.py", "search": "def main():", "replace": "def main(:"}]}),
                 ("submit", {})),
        then(tool_use(("edit_files", {"edits": [{"path": "train.py", "search": "def main(:",
                                                 "replace": "def main():  # fixed"}]}))),
        then(tool_use(("submit", {"notes": "fixed"}))),
    ]))
    impl = anthropic_policy(server, task, tmp_path).implement(agent(), view, proposal({}))
    assert server.count == 3
    assert "not submitted" in answers[0] and "smoke test FAILED (syntax)" in answers[0] and "train.py" in answers[0]
    assert len(impl.edits) == 2 and impl.notes == "fixed"


def test_a_model_that_never_decides_is_stopped_after_max_turns(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    server = FakeServer(lambda body: tool_use(("read_log", {})))
    policy = anthropic_policy(server, task, tmp_path, llm=LLMSection(backend="anthropic", max_turns=4))
    with pytest.raises(LLMPolicyError, match="no decision after 4 model replies"):
        policy.critique(agent("analyst"), view, proposal({"x": 0.5}), [])
    assert server.count == 4
    last_user = server.requests[-1]["messages"][-1]["content"]
    assert any(b.get("type") == "text" and "one reply left" in b["text"] for b in last_user)
