"""Every reply a model can send ends, at worst, in a recorded policy error: a table of hostile and
broken replies, each sent by a scripted server on 127.0.0.1 to BOTH backends' real HTTP clients (the
anthropic SDK; httpx2 for OpenAI-compatible servers), then the policy's decision, its accounting
and what it sends back to the model are checked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest

from autosci_hpc.agents.policy import Implementation, PolicyError, ProposalDraft
from autosci_hpc.agents.views import ProposalView
from autosci_hpc.config import LLMSection
from autosci_hpc.llm.accounting import CallRecord, MemoryRecorder, StoreRecorder, spend_by_role_and_team
from autosci_hpc.llm.anthropic_backend import AnthropicChat
from autosci_hpc.llm.chat import ABSURD_TOKENS
from autosci_hpc.llm.openai_backend import OpenAICompatChat
from autosci_hpc.llm.policy import LLMPolicy
from autosci_hpc.state import Store
from autosci_hpc.state.models import Agent
from autosci_hpc.status import spend_table

from modelserver import ModelServer, Raw
from llm_fakes import agent, toy_view

DEEP = 200_000
PRICES = {"claude-sonnet-4-6": {"input": 3.0, "output": 15.0}, "qwen-coder": {"input": 0.2, "output": 0.6}}
BACKENDS = ("anthropic", "openai")
FIVE_MB = 5 * 1024 * 1024


def llm_section(backend: str, **kw: Any) -> LLMSection:
    model = "claude-sonnet-4-6" if backend == "anthropic" else "qwen-coder"
    return LLMSection(backend=backend, model=model, prices=PRICES, **kw)


def make_policy(backend: str, server: ModelServer, folder: Path, recorder: Any, **kw: Any) -> LLMPolicy:
    task, _ = toy_view(folder)
    llm = llm_section(backend, **kw)
    if backend == "anthropic":
        client: Any = AnthropicChat("test-key-123456", llm.model, base_url=server.url, timeout_s=30)
    else:
        client = OpenAICompatChat(server.url + "/v1", llm.model, api_key="sk-test-123456", timeout_s=30)
    return LLMPolicy(client, task=task, llm=llm, recorder=recorder, campaign_folder=folder,
                     secrets=["test-key-123456", "sk-test-123456"], sleep=lambda s: None)


# ---- replies, per backend ------------------------------------------------------------------------


def usage_of(backend: str, prompt: Any = 400, output: Any = 30) -> dict:
    if backend == "anthropic":
        return {"input_tokens": prompt, "output_tokens": output}
    return {"prompt_tokens": prompt, "completion_tokens": output}


def body(backend: str, calls: list[tuple[str, Any]], text: str = "", use: Optional[dict] = None) -> dict:
    """A well-formed reply calling `calls` (name, arguments object) with `text` before them."""
    use = use if use is not None else usage_of(backend)
    if backend == "anthropic":
        content: list[dict] = [{"type": "text", "text": text}] if text else []
        content += [{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
                    for i, (n, a) in enumerate(calls)]
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                "stop_reason": "tool_use", "stop_sequence": None, "content": content, "usage": use}
    message = {"role": "assistant", "content": text or None,
               "tool_calls": [{"id": f"call_{i}", "type": "function",
                               "function": {"name": n,
                                            "arguments": a if isinstance(a, str) else json.dumps(a)}}
                              for i, (n, a) in enumerate(calls)]}
    return {"id": "c1", "object": "chat.completion", "model": "qwen-coder",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}], "usage": use}


def raw(data: Any) -> Raw:
    return Raw(data if isinstance(data, (bytes, str)) else json.dumps(data))


SUBMIT = ("submit", {"notes": "done"})
POST = ("post_proposal", {"title": "move x towards 0.6", "focus": "x_axis", "overrides": {"x": 0.5},
                          "rationale": "x matters in the log"})


def deep_arguments(backend: str) -> Raw:
    nested = "[" * DEEP + "]" * DEEP
    if backend == "openai":  # arguments are a string of JSON: parsed by us
        return raw(body(backend, [("read_log", '{"limit": ' + nested + "}")]))
    text = json.dumps(body(backend, [("read_log", {"limit": "HOLE"})]))  # the whole reply is that deep
    return Raw(text.replace('"HOLE"', nested))


def message_as_string(backend: str) -> Raw:
    data = body(backend, [SUBMIT])
    if backend == "anthropic":
        data["content"] = "I will submit now"
    else:
        data["choices"][0]["message"] = "I will submit now"
    return raw(data)


def wrong_types_everywhere(backend: str) -> Raw:
    if backend == "anthropic":
        return raw({"id": 5, "type": "message", "role": 7, "model": ["x"], "stop_reason": {"a": 1},
                    "content": [5, "text", None,
                                {"type": "tool_use", "id": 9, "name": None, "input": "[1, 2]"},
                                {"type": "text", "text": {"no": 1}}], "usage": "lots"})
    return raw({"model": 7, "usage": [1, 2], "choices": [{"finish_reason": 3, "message": {
        "content": {"a": 1}, "tool_calls": [{"id": 3, "function": "read_log"},
                                            {"function": {"name": ["read_log"], "arguments": 12}}]}}]})


def invalid_utf8(backend: str) -> Raw:
    text = json.dumps(body(backend, [SUBMIT], text="HOLE"))
    return Raw(text.encode().replace(b"HOLE", b"\xff\xfe\xc3("))


def top_level_list(backend: str) -> Raw:
    return raw([1, 2, 3])


def lone_surrogate_title(backend: str) -> Raw:
    args = dict(POST[1], title="move x \ud800 towards 0.6", rationale="x\udfff matters")
    return Raw(json.dumps(body(backend, [("post_proposal", args)])))  # json.dumps writes \ud800 as an escape


def call(name: str, args: Any) -> Callable[[str], Raw]:
    return lambda backend: raw(body(backend, [(name, args)]))


def with_usage(prompt: Any, output: Any, calls: list) -> Callable[[str], Raw]:
    return lambda backend: raw(body(backend, calls, use=usage_of(backend, prompt, output)))


@dataclass
class Case:
    name: str
    decision: str  # "implement" or "propose"
    hostile: Callable[[str], Raw]
    #: "decides": the hostile reply is answered (or retried) and the next, valid reply decides;
    #: "usage": the hostile reply itself decides, its counts flagged; "clean": it decides, cleaned;
    #: "fails": a policy error. Per backend where they differ.
    outcome: Union[str, dict[str, str]] = "decides"

    def expect(self, backend: str) -> str:
        return self.outcome if isinstance(self.outcome, str) else self.outcome[backend]


CASES = [
    Case("NUL byte in a path", "implement", call("read_file", {"path": "config\x00.yaml"})),
    Case("5,000-character path", "implement", call("read_file", {"path": "a/" * 2500})),
    Case("5,000-character path in an edit", "implement",
         call("edit_files", {"edits": [{"path": "x" * 5000, "search": "a", "replace": "b"}]})),
    Case("message as a string", "implement", message_as_string, outcome="fails"),
    Case("non-numeric token count", "implement", with_usage("lots", "many", [SUBMIT]), outcome="usage"),
    Case("negative token counts", "implement", with_usage(-10 ** 9, -5, [SUBMIT]), outcome="usage"),
    Case("absurd token counts", "implement", with_usage(10 ** 30, 1e300, [SUBMIT]), outcome="usage"),
    Case("token counts of the wrong type", "implement", with_usage([1], {"a": 1}, [SUBMIT]), outcome="usage"),
    # OpenAI sends arguments as a string we parse (a tool error); Anthropic nests the whole reply.
    Case("tool arguments nested 200,000 deep", "implement", deep_arguments,
         outcome={"openai": "decides", "anthropic": "fails"}),
    Case("lone surrogate in a title", "propose", lone_surrogate_title, outcome="clean"),
    Case("invalid UTF-8", "implement", invalid_utf8),
    Case("a JSON list for a reply", "implement", top_level_list, outcome="fails"),
    Case("wrong JSON types everywhere", "implement", wrong_types_everywhere),
    Case("huge numbers in arguments", "implement",
         call("read_log", {"limit": 10 ** 30, "offset": 10 ** 400})),
    Case("non-finite number in arguments", "propose",
         lambda b: Raw(json.dumps(body(b, [("post_proposal", {**POST[1], "overrides": {"x": "INF"}})]))
                       .replace('"INF"', "1e999"))),
    Case("arguments of the wrong JSON types", "implement",
         call("read_file", {"path": ["config.yaml"], "start_line": "one", "max_lines": None})),
    Case("arguments that are not an object", "implement", call("read_file", ["config.yaml"])),
    Case("an unknown tool with a 100,000-character name", "implement", call("x" * 100_000, {})),
    Case("no tool call, 5 MB of text", "implement",
         lambda b: raw(body(b, [], text="blah " * (FIVE_MB // 5)))),
]


def final_reply(backend: str, decision: str) -> Raw:
    return raw(body(backend, [SUBMIT if decision == "implement" else POST]))


def claimed() -> ProposalView:
    return ProposalView(id=7, author="analyst-1", team_id=1, focus="x_axis", title="move x", rationale="r",
                        overrides={"x": 0.5}, edits=[], change_signature="x=0.5", config_signature="s|x=0.5",
                        directions=["x~bin4/6"], status="claimed", outcome="", base_champion_id=1)


def decide(policy: LLMPolicy, decision: str, folder: Path) -> Any:
    _, view = toy_view(folder)
    if decision == "implement":
        return policy.implement(agent(), view, claimed())
    return policy.propose(agent("analyst", team_id=None), view, None)


def assert_sane(record: CallRecord) -> None:
    assert 0 <= record.tokens_in <= 4 * ABSURD_TOKENS and 0 <= record.tokens_out <= ABSURD_TOKENS
    assert record.cost_usd >= 0
    record.error.encode("utf-8")  # no lone surrogate can reach the database


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_reply_ends_at_worst_in_a_recorded_policy_error(case: Case, backend: str,
                                                                    tmp_path: Path) -> None:
    recorder = MemoryRecorder()
    outcome = case.expect(backend)
    replies = [case.hostile(backend)]
    if outcome in ("decides", "fails"):
        replies.append(final_reply(backend, case.decision))
    with ModelServer(script=replies) as server:
        policy = make_policy(backend, server, tmp_path, recorder)
        try:
            result: Any = decide(policy, case.decision, tmp_path)
        except PolicyError as exc:
            result = exc
    assert not isinstance(result, Exception) or isinstance(result, PolicyError)
    if outcome == "fails":
        assert isinstance(result, PolicyError), result
        assert "malformed" in str(result)
        assert server.count == 1  # a reply that cannot be taken apart is not asked for again
    else:
        assert isinstance(result, Implementation if case.decision == "implement" else ProposalDraft), result
    # Every attempt is one record, each sane; the hostile one is counted as an error.
    assert len(recorder.calls) == server.count
    for record in recorder.calls:
        assert_sane(record)
    if outcome != "clean":
        assert recorder.calls[0].error, "the hostile attempt was not counted as an error"
    else:
        assert isinstance(result, ProposalDraft) and "\ufffd" not in result.focus
        assert result.title.startswith("move x ") and result.title.endswith("towards 0.6")
    # What went back to the model was valid JSON (the server parsed it), bounded, and secret-free.
    for sent in server.requests:
        assert "unparsable" not in sent
        text = json.dumps(sent)
        assert len(text) < 300_000 and "123456" not in text
    if isinstance(result, ProposalDraft):
        (result.title + result.rationale).encode("utf-8")


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_counts_are_validated_and_spend_only_grows(backend: str, tmp_path: Path) -> None:
    """Negative or unreadable counts are replaced by the request's own estimate (never free, never a
    refund); absurd ones are clamped and flagged; the committed spend never decreases."""
    recorder = MemoryRecorder()
    replies = [raw(body(backend, [("read_log", {})], use=usage_of(backend, p, o)))
               for p, o in ((400, 30), (-10 ** 9, -10 ** 9), ("NaN", None), (10 ** 30, 10 ** 30))]
    replies.append(raw(body(backend, [SUBMIT])))
    spent = []
    with ModelServer(script=replies) as server:
        policy = make_policy(backend, server, tmp_path, recorder)
        original = recorder.record

        def watch(record: CallRecord) -> None:
            original(record)
            spent.append(recorder.spent())

        recorder.record = watch  # type: ignore[method-assign]
        decide(policy, "implement", tmp_path)
    normal, negative, unreadable, absurd, last = recorder.calls
    assert normal.tokens_in == 400 and not normal.error
    for record in (negative, unreadable):
        assert record.tokens_in > 0 and record.tokens_out == policy.llm.max_tokens and record.cost_usd > 0
        assert record.error.startswith("usage:")
    assert "negative" in negative.error and "not a number" in unreadable.error
    assert absurd.tokens_out == ABSURD_TOKENS and "absurd" in absurd.error
    assert "exceed the 4096 asked for" in absurd.error and "prompt tokens" in absurd.error
    assert spent == sorted(spent) and spent[0] > 0


def test_the_policy_caps_retry_after_at_its_setting(tmp_path: Path) -> None:
    """llm.retry_after_max_s reaches the retries (how every client retries is in the conformance suite)."""
    waits: list[float] = []
    busy = Raw({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, status=429,
               headers={"retry-after": "600"})
    with ModelServer(script=[busy, busy, raw(body("anthropic", [SUBMIT]))]) as server:
        policy = make_policy("anthropic", server, tmp_path, MemoryRecorder(), retry_after_max_s=7)
        policy.sleep = waits.append
        decide(policy, "implement", tmp_path)
    assert waits == [7.0, 7.0]
    assert LLMSection().retry_after_max_s == 60.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_replies_and_stored_texts_are_clipped_with_a_marker(backend: str, tmp_path: Path) -> None:
    huge = "z" * FIVE_MB
    proposal = {**POST[1], "title": "t" * 500, "rationale": "r" * 2000, "falsification": "f" * 1000}
    recorder = MemoryRecorder()
    with ModelServer(script=[raw(body(backend, [("post_proposal", {**POST[1], "rationale": huge})], text=huge)),
                         raw(body(backend, [("post_proposal", proposal)]))]) as server:
        policy = make_policy(backend, server, tmp_path, recorder, reply_chars=5000, text_chars=300,
                             title_chars=40)
        draft = decide(policy, "propose", tmp_path)
    # 5 MB of text and 5 MB of arguments: the text kept clipped, the call refused with its size.
    replay = json.dumps(server.requests[1])
    assert len(replay) < 100_000 and "characters clipped" in replay
    assert f"the arguments are {len(json.dumps({**POST[1], 'rationale': huge}))} characters" in replay
    assert "at most 5000" in recorder.calls[0].error
    # The stored texts of the decision: clipped, marked.
    assert draft.title.startswith("t" * 40) and "[... 460 characters clipped]" in draft.title
    assert draft.rationale.startswith("r" * 300) and "[... 1700 characters clipped]" in draft.rationale
    assert len(draft.falsification) < 400 and draft.focus == "x_axis"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tool_result_is_clipped_before_it_goes_back(backend: str, tmp_path: Path) -> None:
    with ModelServer(script=[raw(body(backend, [("read_file", {"path": "train.py", "max_lines": 400})])),
                         raw(body(backend, [SUBMIT]))]) as server:
        policy = make_policy(backend, server, tmp_path, MemoryRecorder(), tool_result_chars=1000)
        decide(policy, "implement", tmp_path)
    sent = server.requests[1]
    if backend == "anthropic":
        result = sent["messages"][-1]["content"][0]["content"]
    else:
        result = next(m for m in sent["messages"] if m["role"] == "tool")["content"]
    assert "characters clipped" in result and len(result) < 1100


def test_the_status_table_counts_every_failed_attempt(tmp_path: Path) -> None:
    """Five attempts that each got an unreadable reply, then three replies with invalid tool calls:
    eight errors in the spend table, not one."""
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        from autosci_hpc.state.models import Campaign

        session.add(Campaign(name="c", folder=str(tmp_path), task_name="toy", mode="single", config={}))
        session.add(Agent(name="experimenter-1", role="experimenter"))
    bad = Raw(b'{"content": [\xff\xff', status=200)
    invalid = raw(body("anthropic", [("read_file", {"path": 5})]))
    with ModelServer(script=[bad] * 5 + [invalid] * 3) as server:
        policy = make_policy("anthropic", server, tmp_path / "campaign", StoreRecorder(store), max_retries=4,
                             max_invalid=3)
        with pytest.raises(PolicyError):
            decide(policy, "implement", tmp_path / "campaign")  # five failures: the request gives up
        with pytest.raises(PolicyError):
            decide(policy, "implement", tmp_path / "campaign")  # three invalid calls: the decision gives up
    assert server.count == 8
    (row,) = spend_by_role_and_team(store)
    assert (row.calls, row.errors) == (8, 8)
    table = spend_table(store)
    assert table is not None and list(table.columns[3].cells)[-1] == "8"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_well_formed_call_refused_on_its_merits_is_not_an_error(backend: str, tmp_path: Path) -> None:
    """Only broken replies count as errors: a proposal refused for an unknown config key is the model
    at work (answered, and counted toward llm.max_invalid), not a failed attempt."""
    refused = {**POST[1], "overrides": {"no_such_key": 1}}
    recorder = MemoryRecorder()
    replies = [raw(body(backend, [("post_proposal", refused)])), final_reply(backend, "propose")]
    with ModelServer(script=replies) as server:
        draft = decide(make_policy(backend, server, tmp_path, recorder), "propose", tmp_path)
    assert draft.overrides == {"x": 0.5} and "unknown config key" in json.dumps(server.requests[1])
    assert [c.error for c in recorder.calls] == ["", ""]
