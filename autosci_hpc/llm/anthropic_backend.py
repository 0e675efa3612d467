"""Claude through the official `anthropic` SDK: the Messages API with tool use and prompt caching.

The SDK's own retries are off (`max_retries=0`): `call_with_retries` retries, so that every
attempt is accounted. Without an injected `http_client` the SDK builds its default client, which
honours HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY (trust_env).
"""

from __future__ import annotations

from typing import Any, Optional

import anthropic

from .chat import (NAME_CHARS, ChatRequest, ChatResponse, LLMCallError, Message, Text, ToolCall, ToolResult,
                   TransientLLMError, clean_text, is_transient_status, parse_retry_after, tool_call, usage_from)

EPHEMERAL = {"type": "ephemeral"}


class AnthropicChat:
    name = "anthropic"

    def __init__(self, api_key: str, model: str, *, base_url: str = "", timeout_s: float = 120.0,
                 http_client: Any = None) -> None:
        self.model = model
        kwargs: dict[str, Any] = {"api_key": api_key, "max_retries": 0, "timeout": timeout_s}
        if base_url:
            kwargs["base_url"] = base_url
        if http_client is not None:
            kwargs["http_client"] = http_client
        self.client = anthropic.Anthropic(**kwargs)

    def __repr__(self) -> str:  # never the key
        return f"AnthropicChat(model={self.model!r})"

    # ---- request ------------------------------------------------------------------------------

    def params(self, request: ChatRequest) -> dict[str, Any]:
        system = []
        for block in request.system:
            item: dict[str, Any] = {"type": "text", "text": block.text}
            if block.cache:
                item["cache_control"] = EPHEMERAL
            system.append(item)
        messages = [self._message(m) for m in request.messages]
        # From the second turn on, a moving breakpoint on the newest turn: the next turn reads the
        # conversation back from the cache. (Not on the first: most decisions take one turn, and a
        # cache write costs 1.25x; the stable system prefix is cached in every case.)
        if len(messages) > 1 and messages[-1]["role"] == "user" and messages[-1]["content"]:
            last = messages[-1]["content"][-1]
            last["cache_control"] = EPHEMERAL
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "system": system,
            "messages": messages,
        }
        if request.tools:
            params["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                               for t in request.tools]
            params["tool_choice"] = {"type": "any"} if request.require_tool else {"type": "auto"}
        return params

    @staticmethod
    def _message(message: Message) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        # tool_result blocks must come first in a user turn
        for part in sorted(message.parts, key=lambda p: 0 if isinstance(p, ToolResult) else 1):
            if isinstance(part, Text):
                if part.text:
                    content.append({"type": "text", "text": part.text})
            elif isinstance(part, ToolCall):
                content.append({"type": "tool_use", "id": part.id, "name": part.name, "input": part.input})
            elif isinstance(part, ToolResult):
                content.append({"type": "tool_result", "tool_use_id": part.call_id, "content": part.content,
                                "is_error": part.is_error})
        return {"role": message.role, "content": content}

    # ---- call ---------------------------------------------------------------------------------

    def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            reply = self.client.messages.create(**self.params(request))
        except anthropic.APIStatusError as exc:
            message = _describe(exc)
            if is_transient_status(exc.status_code):
                raise TransientLLMError(message, parse_retry_after(exc.response.headers), exc.status_code) from None
            raise LLMCallError(message) from None
        except anthropic.APITimeoutError:
            raise TransientLLMError("anthropic: request timed out") from None
        except anthropic.APIConnectionError as exc:
            raise TransientLLMError(f"anthropic: connection error: {type(exc.__cause__ or exc).__name__}") from None
        except RecursionError:
            raise LLMCallError("anthropic: malformed response: nested too deeply") from None
        except ValueError as exc:  # not JSON, or not UTF-8
            raise TransientLLMError(f"anthropic: malformed response: {clean_text(str(exc))[:200]}") from None
        except (AttributeError, TypeError, KeyError) as exc:  # JSON the SDK could not take apart
            raise LLMCallError(f"anthropic: malformed response: {type(exc).__name__}") from None
        return parse_message(reply, self.model)


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK object or of a plain dict (the SDK keeps what it could not type as it came)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def parse_message(reply: Any, model: str) -> ChatResponse:
    """The SDK's `Message` -> `ChatResponse`, checking every field's type: the SDK builds its objects
    without validating them, so a hostile server's strings, nulls and wrong types arrive as they were."""
    texts, calls = [], []
    parts: list[Any] = []
    content = _field(reply, "content")
    if not isinstance(content, list):
        raise LLMCallError("anthropic: malformed response: content is not a list of blocks")
    for i, block in enumerate(content):
        kind = _field(block, "type")
        if kind == "text":
            text = _field(block, "text")
            if isinstance(text, str) and text:
                texts.append(clean_text(text))
                parts.append(Text(texts[-1]))
        elif kind == "tool_use":
            call = tool_call(_field(block, "id"), _field(block, "name"), _field(block, "input"), i)
            if call.raw_arguments is not None:  # Anthropic sends an object; a string is not one
                call.input, call.raw_arguments = {}, None
                call.parse_error = call.parse_error or "the input must be a JSON object, not a string"
            calls.append(call)
            parts.append(call)
    u = _field(reply, "usage")
    usage = usage_from({"input": ("input_tokens", _field(u, "input_tokens")),
                        "output": ("output_tokens", _field(u, "output_tokens")),
                        "cache_read": ("cache_read_input_tokens", _field(u, "cache_read_input_tokens")),
                        "cache_write": ("cache_creation_input_tokens",
                                        _field(u, "cache_creation_input_tokens"))})
    name, reason = _field(reply, "model"), _field(reply, "stop_reason")
    return ChatResponse(text="\n".join(texts), tool_calls=calls, usage=usage,
                        model=clean_text(name)[:NAME_CHARS] if isinstance(name, str) and name else model,
                        stop_reason=clean_text(reason)[:NAME_CHARS] if isinstance(reason, str) else "",
                        message=Message("assistant", parts))


def _describe(exc: "anthropic.APIStatusError") -> str:
    kind = ""
    detail = ""
    body: Optional[Any] = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            kind = clean_text(str(error.get("type", "")))[:80]
            detail = clean_text(str(error.get("message", "")))[:300]
    return f"anthropic: HTTP {exc.status_code}" + (f" {kind}" if kind else "") + (f": {detail}" if detail else "")
