"""The OpenAI-compatible backend (vLLM, Ollama, OpenAI) through httpx2.MockTransport."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from autosci_hpc.config import LLMSection
from autosci_hpc.llm import make_client
from autosci_hpc.llm.accounting import MemoryRecorder
from autosci_hpc.llm.openai_backend import OpenAICompatChat
from autosci_hpc.llm.policy import LLMPolicy

from llm_fakes import FakeServer, Script, agent, toy_view

LLM = LLMSection(backend="openai", model="qwen-coder", base_url="http://gpu-node-7:8000/v1",
                 prices={"qwen-coder": {"input": 0.2, "output": 0.6, "cache_read": 0.05}})


def completion(name: str, arguments: str, prompt: int = 500, completion_tokens: int = 40, cached: int = 0) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen-coder",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": [{"id": f"call_{name}", "type": "function",
                                                     "function": {"name": name, "arguments": arguments}}]}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def test_tool_calls_malformed_arguments_retries_and_accounting(tmp_path: Path) -> None:
    task, view = toy_view(tmp_path)
    feedback: list[dict] = []

    def fixed(body: dict) -> dict:
        feedback.extend(m for m in body["messages"] if m["role"] == "tool")
        return completion("critique", json.dumps({"verdict": "approve", "reasons": "fine"}), prompt=900, cached=600)

    server = FakeServer(Script([
        completion("critique", '{"verdict": "approve", "reasons": '),  # truncated JSON
        httpx2.Response(503, headers={"retry-after": "3"}, text="busy"),
        fixed,
    ]), path="/v1/chat/completions")
    waits: list[float] = []
    recorder = MemoryRecorder()
    client = make_client(LLM, "sk-local", http_client=server.client())
    policy = LLMPolicy(client, task=task, llm=LLM, recorder=recorder, campaign_folder=tmp_path, sleep=waits.append)
    draft = policy.critique(agent("analyst"), view, _proposal(), ["no duplicate"])

    assert draft.verdict == "approve" and server.count == 3
    assert waits == [3.0]
    assert server.headers[0]["authorization"] == "Bearer sk-local"
    first = server.requests[0]
    assert first["model"] == "qwen-coder" and first["tool_choice"] == "required"
    assert first["messages"][0]["role"] == "system" and "ANALYST" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} >= {"critique", "read_log", "update_memory"}
    # The malformed call was answered, as a tool message, with the parse error.
    assert feedback and feedback[0]["tool_call_id"] == "call_critique"
    assert feedback[0]["content"].startswith("ERROR:") and "not valid JSON" in feedback[0]["content"]
    # The assistant turn was replayed with its arguments as sent.
    replay = server.requests[2]["messages"][2]
    assert replay["role"] == "assistant" and replay["tool_calls"][0]["function"]["arguments"].endswith('"reasons": ')
    ok, failed, last = recorder.calls
    assert failed.error.startswith("openai: HTTP 503") and failed.cost_usd == 0
    assert (last.tokens_in, last.tokens_cached, last.tokens_out) == (900, 600, 40)
    assert last.cost_usd == pytest.approx((300 * 0.2 + 600 * 0.05 + 40 * 0.6) / 1e6)
    assert ok.cost_usd == pytest.approx((500 * 0.2 + 40 * 0.6) / 1e6)


def test_a_server_without_a_key_gets_no_authorization_header_and_proxies_apply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task, view = toy_view(tmp_path)
    server = FakeServer(lambda body: completion("critique", '{"verdict": "reject", "reasons": "dup"}'),
                        path="/v1/chat/completions")
    client = OpenAICompatChat("http://gpu-node-7:8000/v1", "qwen-coder", http_client=server.client())
    LLMPolicy(client, task=task, llm=LLM).critique(agent("analyst"), view, _proposal(), [])
    assert server.count == 1 and "authorization" not in server.headers[0]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    default = OpenAICompatChat("http://gpu-node-7:8000/v1", "qwen-coder", api_key="sk-x")
    assert any(m is not None for m in default.http._mounts.values()), "proxy variables were ignored"
    assert "sk-x" not in repr(default)


def _proposal():
    from autosci_hpc.agents.views import ProposalView

    return ProposalView(id=3, author="analyst-2", team_id=1, focus="x_axis", title="t", rationale="r",
                        overrides={"x": 0.4}, edits=[], change_signature="x=0.4", config_signature="s|x=0.4",
                        directions=["x~bin4/6"], status="posted", outcome="", base_champion_id=1)
