"""One test body, every `ChatClient` (Anthropic's through the official SDK, OpenAI-compatible through
httpx2), each talking HTTP to the stand-in server on 127.0.0.1: which failures are retried and how long
the wait is (a server's retry-after honoured and capped; the sleep is injected, nothing really sleeps),
which are not, how errors read, and what a reply's token counts become."""

from __future__ import annotations

import random
from typing import Any, Optional

import pytest

from autosci_hpc.agents.policy import CritiqueDraft
from autosci_hpc.config import LLMSection, ModelPrice
from autosci_hpc.llm import make_client
from autosci_hpc.llm.accounting import cost_usd
from autosci_hpc.llm.chat import (Attempt, ChatRequest, ChatResponse, LLMCallError, Message, SystemBlock, Text,
                                  ToolSpec, TransientLLMError, call_with_retries)
from modelserver import ModelServer, Raw

BACKENDS = ("anthropic", "openai")
MODEL = "stand-in"
KEY = "sk-test-conformance-123456"
REQUEST = ChatRequest(system=[SystemBlock("You critique proposals.", cache=True)],
                      messages=[Message("user", [Text("Judge proposal 3.")])],
                      tools=[ToolSpec.from_model("critique", "your verdict", CritiqueDraft)], max_tokens=512)
BASE_S, MAX_S, RETRY_AFTER_MAX_S = 1.0, 8.0, 60.0


def client_for(backend: str, server: ModelServer, timeout_s: float = 30.0) -> Any:
    llm = LLMSection(backend=backend, model=MODEL, prices={MODEL: {"input": 1.0, "output": 2.0}}, timeout_s=timeout_s,
                     base_url=server.openai_url() if backend == "openai" else server.anthropic_url())
    return make_client(llm, KEY)


def reply(backend: str, prompt: Optional[int] = 1000, cached: int = 0, output: Optional[int] = 40) -> Raw:
    """A well-formed reply calling `critique`, billing `prompt` prompt tokens of which `cached` were read
    from the cache, and `output` output tokens (None: the count is missing)."""
    verdict = {"verdict": "approve", "reasons": "nothing argues against it"}
    if backend == "anthropic":
        use: dict[str, Any] = {"input_tokens": None if prompt is None else prompt - cached,
                               "output_tokens": output, "cache_read_input_tokens": cached}
        return Raw({"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "stop_reason": "tool_use",
                    "stop_sequence": None, "usage": {k: v for k, v in use.items() if v is not None},
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "critique", "input": verdict}]})
    use = {"prompt_tokens": prompt, "completion_tokens": output, "prompt_tokens_details": {"cached_tokens": cached}}
    return Raw({"id": "c1", "object": "chat.completion", "model": MODEL, "usage": {k: v for k, v in use.items()
                                                                                     if v is not None},
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": None, "tool_calls": [{
                        "id": "call_1", "type": "function",
                        "function": {"name": "critique", "arguments": '{"verdict": "approve", '
                                                                      '"reasons": "nothing argues against it"}'}}]}}]})


def error(status: int, message: str = "scripted refusal", headers: Optional[dict[str, str]] = None) -> Raw:
    """An error reply, in the shape of Anthropic's errors (an OpenAI-compatible client reads its text)."""
    return Raw({"type": "error", "error": {"type": f"http_{status}_error", "message": message}}, status, headers or {})


class Run:
    """One request through `call_with_retries`, with the sleeps and the attempts it made written down."""

    def __init__(self, client: Any, max_retries: int = 3) -> None:
        self.waits: list[float] = []
        self.attempts: list[Attempt] = []
        self.response: Optional[ChatResponse] = None
        self.error: Optional[Exception] = None
        try:
            self.response = call_with_retries(client, REQUEST, max_retries=max_retries, base_s=BASE_S, max_s=MAX_S,
                                              on_attempt=self.attempts.append, sleep=self.waits.append,
                                              rng=random.Random(0), retry_after_max_s=RETRY_AFTER_MAX_S)
        except LLMCallError as exc:
            self.error = exc


def first_backoff() -> float:
    """The wait before the first retry when the server names none (the same seeded jitter)."""
    return min(MAX_S, BASE_S) * random.Random(0).uniform(0.5, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("headers", "wait"), [
    ({"retry-after": "7"}, 7.0), ({"retry-after-ms": "2500"}, 2.5),
    ({"retry-after": "600"}, RETRY_AFTER_MAX_S), ({}, None)], ids=["seconds", "milliseconds", "capped", "none"])
def test_a_rate_limit_is_retried_after_the_wait_the_server_names(backend: str, headers: dict[str, str],
                                                                  wait: Optional[float]) -> None:
    with ModelServer(script=[error(429, "slow down", headers), reply(backend)]) as server:
        run = Run(client_for(backend, server))
    assert run.response is not None and [c.name for c in run.response.tool_calls] == ["critique"]
    assert server.count == 2 and run.waits == [wait if wait is not None else first_backoff()]
    failed, ok = run.attempts
    assert f"{backend}: HTTP 429" in failed.error and "slow down" in failed.error and failed.response is None
    assert ok.error == "" and ok.response is run.response


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 529])
def test_every_transient_status_is_retried(backend: str, status: int) -> None:
    with ModelServer(script=[error(status), reply(backend)]) as server:
        run = Run(client_for(backend, server))
    assert run.response is not None and server.count == 2 and len(run.waits) == 1
    assert f"HTTP {status}" in run.attempts[0].error


@pytest.mark.parametrize("backend", BACKENDS)
def test_retries_are_bounded(backend: str) -> None:
    with ModelServer(script=[error(503)]) as server:
        run = Run(client_for(backend, server), max_retries=2)
    assert isinstance(run.error, LLMCallError) and "gave up after 3 attempt(s)" in str(run.error)
    assert server.count == 3 and len(run.attempts) == 3 and len(run.waits) == 2
    assert run.waits[1] >= run.waits[0] * 2 * 0.5  # exponential, whatever the jitter


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_a_permanent_error_is_not_retried_and_says_what_the_server_said(backend: str, status: int) -> None:
    with ModelServer(script=[error(status, "the request names no such model"), reply(backend)]) as server:
        run = Run(client_for(backend, server))
    assert isinstance(run.error, LLMCallError) and server.count == 1 and run.waits == []
    assert str(run.error).startswith(f"{backend}: HTTP {status}")
    assert "the request names no such model" in str(run.error) and KEY not in str(run.error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unreadable_reply_a_timeout_and_a_refused_connection_are_transient(backend: str) -> None:
    with ModelServer(script=[Raw(b"<html>502 Bad Gateway</html>")]) as server:
        with pytest.raises(TransientLLMError, match=f"{backend}: malformed response"):
            client_for(backend, server).complete(REQUEST)
    with ModelServer(script=[reply(backend)], delay_s=30) as server:  # answers long after the client gave up
        with pytest.raises(TransientLLMError, match=f"{backend}: request timed out"):
            client_for(backend, server, timeout_s=0.5).complete(REQUEST)
    closed = ModelServer(script=[reply(backend)])
    closed.start()
    client = client_for(backend, closed)
    closed.stop()  # nothing listens on that port any more
    with pytest.raises(TransientLLMError, match=f"{backend}: connection error"):
        client.complete(REQUEST)


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_counts_mean_the_same_whatever_the_backend(backend: str) -> None:
    """1,000 prompt tokens of which 600 were read from the cache, and 40 output tokens: 400 billed at the
    input price, 600 at the cache-read price, whichever way the server counts them."""
    with ModelServer(script=[reply(backend, prompt=1000, cached=600, output=40)]) as server:
        usage = client_for(backend, server).complete(REQUEST).usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (400, 600, 40)
    assert usage.prompt_tokens == 1000 and usage.problems == [] and not (usage.input_unknown or usage.output_unknown)
    price = ModelPrice(input=3.0, output=15.0, cache_read=0.3)
    assert cost_usd(usage, price) == pytest.approx((400 * 3.0 + 600 * 0.3 + 40 * 15.0) / 1e6, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_token_counts_are_flagged_never_free(backend: str) -> None:
    with ModelServer(script=[reply(backend, prompt=None, output=None)]) as server:
        usage = client_for(backend, server).complete(REQUEST).usage
    assert usage.input_unknown and usage.output_unknown and len(usage.problems) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_request_names_the_model_and_tools_and_the_key_stays_in_its_header(backend: str) -> None:
    with ModelServer(script=[reply(backend)]) as server:
        client = client_for(backend, server)
        client.complete(REQUEST)
    (sent,), (headers,) = server.requests, server.headers
    assert sent["model"] == MODEL and sent["max_tokens"] == 512
    names = [t["name"] if backend == "anthropic" else t["function"]["name"] for t in sent["tools"]]
    assert names == ["critique"]
    carrying = {name: value for name, value in headers.items() if KEY in value}
    assert len(carrying) == 1 and set(carrying) <= {"x-api-key", "authorization"}, carrying
    assert next(iter(carrying.values())) in (KEY, f"Bearer {KEY}")
    assert KEY not in str(sent) and KEY not in repr(client)
