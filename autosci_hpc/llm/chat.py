"""A small chat-with-tools protocol that both backends (Anthropic, OpenAI-compatible) implement.

The policy speaks only this: a system prompt in blocks (the stable ones marked for prompt
caching), a list of messages made of text, tool calls and tool results, and tool specs whose
input schemas come from pydantic models. A backend turns one `ChatRequest` into one HTTP request
and its answer into a `ChatResponse` with usage; it does not retry: it raises `TransientLLMError`
(with the server's retry-after, if any) or `LLMCallError`, and `call_with_retries` decides.
"""

from __future__ import annotations

import copy
import json
import math
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


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying, the same for every backend and as the official SDKs
    retry: a request timeout (408), a lock timeout (409), a rate limit (429), a server error (5xx,
    Anthropic's 529 overloaded included). Any other status is the request's fault: retrying repeats it."""
    return status in (408, 409, 429) or status >= 500


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
    #: What was wrong with the counts the server sent (missing, negative, not a number, absurd).
    problems: list[str] = field(default_factory=list)
    #: The prompt / output count could not be read: the caller charges its own estimate instead,
    #: so a server that sends garbage never makes a call free.
    input_unknown: bool = False
    output_unknown: bool = False

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


# ---- hostile replies ----------------------------------------------------------------------------

#: Nesting a tool call's arguments may have (lists and objects); deeper is refused, never recursed into.
MAX_DEPTH = 64
#: A token count above this is absurd for one request: it is clamped (and flagged), so that it can
#: neither overflow the database nor stand for more than a very expensive call.
ABSURD_TOKENS = 10_000_000
#: Characters of a tool's name kept (a name is echoed back in errors and logs).
NAME_CHARS = 200


def clean_text(text: str) -> str:
    """`text` with lone surrogates and NUL bytes replaced: safe to store, log, encode and send."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def clip_marked(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars`, with a marker saying how much was cut (the model and a reader see it)."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[... {len(text) - max_chars} characters clipped]"


class HostileInput(ValueError):
    """A tool call's arguments that cannot be taken as they are (too deep, not finite, not text keys)."""


def clean_value(value: Any, depth: int = 0) -> Any:
    """A copy of a decoded JSON value with every string cleaned; raises `HostileInput` for nesting
    deeper than `MAX_DEPTH`, non-finite or out-of-range numbers, and values JSON cannot hold."""
    if depth > MAX_DEPTH:
        raise HostileInput(f"the arguments are nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, int):
        if abs(value) >= 2 ** 63:
            raise HostileInput("a number in the arguments is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HostileInput("a number in the arguments is not finite")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise HostileInput("an object key in the arguments is not text")
            out[clean_text(key)] = clean_value(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [clean_value(item, depth + 1) for item in value]
    raise HostileInput(f"the arguments hold a {type(value).__name__}")


def tool_input(arguments: Any) -> tuple[dict[str, Any], str, Optional[str]]:
    """(input, parse error, raw text) of a tool call's arguments as a server sent them: an object, or
    (OpenAI-style) a string of JSON. Never raises: whatever is wrong becomes the parse error."""
    raw: Optional[str] = None
    if isinstance(arguments, str):
        raw = clean_text(arguments)
        try:
            arguments = json.loads(arguments or "{}")
        except RecursionError:
            return {}, f"the arguments are nested more than {MAX_DEPTH} levels deep", raw
        except (TypeError, ValueError) as exc:
            # Almost JSON (a code fence, trailing commas, Python literals): repaired only where the
            # repair cannot change the meaning; otherwise refused with the reason.
            from .repair import repair_arguments

            repaired = repair_arguments(raw)
            if repaired.value is None:
                return {}, (f"the arguments are not valid JSON: {clean_text(str(exc))[:200]} "
                            f"(not repaired: {repaired.reason[:200]})"), raw
            arguments = repaired.value
    if not isinstance(arguments, dict):
        return {}, "the arguments must be a JSON object", raw
    try:
        return clean_value(arguments), "", raw
    except HostileInput as exc:
        return {}, str(exc), raw
    except RecursionError:
        return {}, f"the arguments are nested more than {MAX_DEPTH} levels deep", raw


def tool_call(call_id: Any, name: Any, arguments: Any, index: int) -> ToolCall:
    """A `ToolCall` from a server's loosely typed fields (ids and names that are not text included)."""
    data, error, raw = tool_input(arguments)
    ident = clean_text(call_id)[:NAME_CHARS] if isinstance(call_id, str) and call_id else f"call_{index}"
    return ToolCall(id=ident,
                    name=clean_text(name)[:NAME_CHARS] if isinstance(name, str) else "",
                    input=data, raw_arguments=raw, parse_error=error)


def token_count(value: Any, name: str, problems: list[str]) -> Optional[int]:
    """A token count from a server: a non-negative integer, clamped at `ABSURD_TOKENS` (flagged);
    None (flagged) for a missing-but-required, negative or non-numeric count."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{name} is not a number ({clean_text(repr(value))[:40]})")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{name} is not finite")
        return None
    if value < 0:
        problems.append(f"{name} is negative ({value:g})")
        return None
    if value > ABSURD_TOKENS:
        problems.append(f"{name} is absurd ({value:.3g}); counted as {ABSURD_TOKENS}")
        return ABSURD_TOKENS
    return int(value)


def usage_from(counts: Mapping[str, tuple[str, Any]]) -> Usage:
    """A validated `Usage` from the server's counts, keyed input / output / cache_read / cache_write,
    each (the server's field name, its value). A missing cache count is 0; a prompt or output count
    that is missing or unreadable is marked unknown (the caller estimates it)."""
    problems: list[str] = []
    got: dict[str, Optional[int]] = {}
    for key in ("input", "output", "cache_read", "cache_write"):
        name, value = counts.get(key, (key, None))
        if value is None and key.startswith("cache"):
            got[key] = 0
            continue
        got[key] = token_count(value, name, problems)
    return Usage(input_tokens=got["input"] or 0, output_tokens=got["output"] or 0,
                 cache_read_tokens=got["cache_read"] or 0, cache_write_tokens=got["cache_write"] or 0,
                 problems=problems, input_unknown=got["input"] is None, output_unknown=got["output"] is None)


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
                      rng: Optional[random.Random] = None, retry_after_max_s: float = 60.0) -> ChatResponse:
    """Send `request`, retrying transient failures with backoff; `on_attempt` sees every attempt.

    A server's retry-after is honoured up to `retry_after_max_s` (a server asking for ten minutes
    per attempt would otherwise stall the agent for an hour); otherwise the wait is exponential from
    `base_s`, capped at `max_s`, with jitter. A reply the backend could not even take apart (an
    exception other than the LLM errors) is one failed attempt, recorded, never a crash.
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
                wait = min(max(0.0, exc.retry_after), retry_after_max_s)
            else:
                wait = min(max_s, base_s * 2 ** attempt) * rng.uniform(0.5, 1.0)
            sleep(wait)
            continue
        except LLMCallError as exc:
            on_attempt(Attempt(None, time.monotonic() - started, str(exc)))
            raise
        except Exception as exc:  # noqa: BLE001 - a hostile reply must not crash the campaign
            message = f"{client.name}: unreadable reply: {type(exc).__name__}: {clean_text(str(exc))[:200]}"
            on_attempt(Attempt(None, time.monotonic() - started, message))
            raise LLMCallError(message) from None
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
