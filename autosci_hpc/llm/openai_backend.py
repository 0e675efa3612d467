"""An OpenAI-compatible server (`/v1/chat/completions` with tool calling): vLLM, Ollama, OpenAI.

Plain HTTP through httpx2 (the HTTP client the anthropic SDK already brings; httpx where only it
is installed), so no extra dependency. The client is built with `trust_env=True`: HTTPS_PROXY,
HTTP_PROXY, ALL_PROXY and NO_PROXY apply (set NO_PROXY for a server on the cluster's network).
"""

from __future__ import annotations

import json
from typing import Any, Optional

try:  # the anthropic SDK 2.x depends on httpx2; older set-ups have httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from .chat import (NAME_CHARS, ChatRequest, ChatResponse, LLMCallError, Message, Text, ToolCall, ToolResult,
                   TransientLLMError, clean_text, is_transient_status, parse_retry_after, tool_call, usage_from)


class OpenAICompatChat:
    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: Optional[str] = None, timeout_s: float = 120.0,
                 http_client: Any = None) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self.http = http_client if http_client is not None else httpx.Client(timeout=timeout_s, trust_env=True)

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatChat(url={self.url!r}, model={self.model!r})"

    # ---- request ------------------------------------------------------------------------------

    def body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        system = "\n\n".join(b.text for b in request.system if b.text)
        if system:
            messages.append({"role": "system", "content": system})
        for message in request.messages:
            messages.extend(self._messages(message))
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": request.max_tokens}
        if request.tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                               "parameters": t.input_schema}}
                             for t in request.tools]
            body["tool_choice"] = "required" if request.require_tool else "auto"
        return body

    @staticmethod
    def _messages(message: Message) -> list[dict[str, Any]]:
        if message.role == "assistant":
            text = "\n".join(p.text for p in message.parts if isinstance(p, Text))
            calls = [p for p in message.parts if isinstance(p, ToolCall)]
            out: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                out["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name,
                                                   "arguments": c.raw_arguments if c.raw_arguments is not None
                                                   else json.dumps(c.input)}}
                                     for c in calls]
            return [out]
        result = [{"role": "tool", "tool_call_id": p.call_id,
                   "content": ("ERROR: " if p.is_error else "") + p.content}
                  for p in message.parts if isinstance(p, ToolResult)]
        text = "\n".join(p.text for p in message.parts if isinstance(p, Text) and p.text)
        if text:
            result.append({"role": "user", "content": text})
        return result

    # ---- call ---------------------------------------------------------------------------------

    def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            response = self.http.post(self.url, json=self.body(request), headers=self._headers,
                                      timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise TransientLLMError("openai: request timed out") from None
        except httpx.TransportError as exc:
            raise TransientLLMError(f"openai: connection error: {type(exc).__name__}") from None
        if response.status_code != 200:
            message = f"openai: HTTP {response.status_code}: {clean_text(response.text[:300])}"
            if is_transient_status(response.status_code):
                raise TransientLLMError(message, parse_retry_after(response.headers), response.status_code)
            raise LLMCallError(message)
        try:
            data = response.json()
        except RecursionError:
            raise LLMCallError("openai: malformed response: nested too deeply") from None
        except ValueError:  # not JSON, or not UTF-8
            text = clean_text(response.text[:200])
            raise TransientLLMError(f"openai: malformed response: {text}") from None
        return parse_completion(data, self.model)


def parse_completion(data: Any, model: str) -> ChatResponse:
    """A chat completion as decoded JSON -> `ChatResponse`, checking every field's type: whatever a
    server sends becomes a reply, a tool call with a parse error, or one `LLMCallError`."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    reply = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(reply, dict):
        raise LLMCallError("openai: malformed response: no choices[0].message object")
    assert isinstance(data, dict) and isinstance(choice, dict)
    parts: list[Any] = []
    content = reply.get("content")
    if isinstance(content, list):  # some servers send content parts
        content = "".join(c["text"] for c in content
                          if isinstance(c, dict) and isinstance(c.get("text"), str))
    text = clean_text(content) if isinstance(content, str) else ""
    if text:
        parts.append(Text(text))
    calls = []
    raw_calls = reply.get("tool_calls")
    for i, raw in enumerate(raw_calls if isinstance(raw_calls, list) else []):
        raw = raw if isinstance(raw, dict) else {}
        function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
        call = tool_call(raw.get("id"), function.get("name"), function.get("arguments"), i)
        calls.append(call)
        parts.append(call)
    u = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = u.get("prompt_tokens_details") if isinstance(u.get("prompt_tokens_details"), dict) else {}
    usage = usage_from({"input": ("prompt_tokens", u.get("prompt_tokens")),
                        "output": ("completion_tokens", u.get("completion_tokens")),
                        "cache_read": ("cached_tokens", details.get("cached_tokens"))})
    # OpenAI counts cached tokens inside prompt_tokens.
    usage.cache_read_tokens = min(usage.cache_read_tokens, usage.input_tokens)
    usage.input_tokens -= usage.cache_read_tokens
    name = data.get("model")
    reason = choice.get("finish_reason")
    return ChatResponse(text=text, tool_calls=calls, usage=usage,
                        model=clean_text(name)[:NAME_CHARS] if isinstance(name, str) and name else model,
                        stop_reason=clean_text(reason)[:NAME_CHARS] if isinstance(reason, str) else "",
                        message=Message("assistant", parts))
