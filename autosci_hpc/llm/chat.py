"""A small chat-with-tools protocol that both backends (Anthropic, OpenAI-compatible) implement.

The policy speaks only this: a system prompt in blocks (the stable ones marked for prompt
caching), a list of messages made of text, tool calls and tool results, and tool specs whose
input schemas come from pydantic models. A backend turns one `ChatRequest` into one HTTP request
and its answer into a `ChatResponse` with usage; it does not retry: it raises `TransientLLMError`
(with the server's retry-after, if any) or `LLMCallError`, and `call_with_retries` decides.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Literal, Mapping, Optional, Protocol, Union

from pydantic import BaseModel

from ..agents.policy import PolicyError


class LLMError(PolicyError):
    """Base of the LLM backends' errors (a `PolicyError`: the roles may record it)."""


class LLMCallError(LLMError):
    """A request that failed for good: a 4xx other than 429, or retries exhausted."""


class TransientLLMError(LLMError):
    """A request worth retrying: 429, 5xx, 529 overloaded, a timeout, a dropped connection."""

    def __init__(self, message: str, retry_after: Optional[float] = None, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


# ---- messages ---------------------------------------------------------------------------------


@dataclass
class SystemBlock:
    text: str
    #: Mark the end of a stable prefix for prompt caching (role instructions, task, champion).
    cache: bool = False


@dataclass
class Text:
    text: str


@dataclass
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    #: The arguments as the model sent them when they were not a JSON object (OpenAI-style
    #: backends send a string); `input` is then {} and the call is answered with the error.
    raw_arguments: Optional[str] = None
    parse_error: str = ""


@dataclass
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


Part = Union[Text, ToolCall, ToolResult]


@dataclass
class Message:
    role: Literal["user", "assistant"]
    parts: list[Part]


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]

    @classmethod
    def from_model(cls, name: str, description: str, model: type[BaseModel]) -> "ToolSpec":
        return cls(name=name, description=description, input_schema=json_schema(model))


@dataclass
class ChatRequest:
    system: list[SystemBlock]
    messages: list[Message]
    tools: list[ToolSpec]
    max_tokens: int = 4096
    #: Make the model call a tool (Anthropic tool_choice "any", OpenAI "required").
    require_tool: bool = True


@dataclass
class Usage:
    #: Prompt tokens billed at the input price (not read from or written to the cache).
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass
class ChatResponse:
    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    model: str
    stop_reason: str = ""
    #: The assistant message to append to the conversation.
    message: Message = field(default_factory=lambda: Message("assistant", []))


class ChatClient(Protocol):
    """One request, one response. Implementations must not retry (the caller accounts attempts)."""

    model: str
    name: str

    def complete(self, request: ChatRequest) -> ChatResponse: ...


# ---- retries ----------------------------------------------------------------------------------


def parse_retry_after(headers: Optional[Mapping[str, str]]) -> Optional[float]:
    """Seconds from `retry-after-ms`, `retry-after` (seconds or an HTTP date); None if absent."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class Attempt:
    """What one request cost and how long it took, successful or not: one `llm_call` row."""

    response: Optional[ChatResponse]
    latency_s: float
    error: str = ""


def call_with_retries(client: ChatClient, request: ChatRequest, *, max_retries: int, base_s: float,
                      max_s: float, on_attempt: Callable[[Attempt], None],
                      sleep: Callable[[float], None] = time.sleep,
                      rng: Optional[random.Random] = None) -> ChatResponse:
    """Send `request`, retrying transient failures with backoff; `on_attempt` sees every attempt.

    A server's retry-after is honoured as given (up to 10 minutes); otherwise the wait is
    exponential from `base_s`, capped at `max_s`, with jitter.
    """
    rng = rng or random.Random()
    for attempt in range(max_retries + 1):
        started = time.monotonic()
        try:
            response = client.complete(request)
        except TransientLLMError as exc:
            on_attempt(Attempt(None, time.monotonic() - started, str(exc)))
            if attempt >= max_retries:
                raise LLMCallError(f"{client.name}: gave up after {attempt + 1} attempt(s): {exc}") from None
            if exc.retry_after is not None:
                wait = min(exc.retry_after, 600.0)
            else:
                wait = min(max_s, base_s * 2 ** attempt) * rng.uniform(0.5, 1.0)
            sleep(wait)
            continue
        except LLMCallError as exc:
            on_attempt(Attempt(None, time.monotonic() - started, str(exc)))
            raise
        on_attempt(Attempt(response, time.monotonic() - started))
        return response
    raise AssertionError("unreachable")


# ---- schemas ----------------------------------------------------------------------------------


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every `$ref` inlined (portable across tool-calling servers)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any, depth: int = 0) -> Any:
        if depth > 20:
            return {}
        if isinstance(node, dict):
            if "$ref" in node and isinstance(node["$ref"], str):
                target = copy.deepcopy(defs.get(node["$ref"].split("/")[-1], {}))
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**target, **rest}, depth + 1)
            return {k: resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth) for v in node]
        return node

    out = resolve(schema)
    out.setdefault("type", "object")
    out.setdefault("properties", {})
    return out
