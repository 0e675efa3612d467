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

from .chat import (ChatRequest, ChatResponse, LLMCallError, Message, Text, ToolCall, ToolResult,
                   TransientLLMError, Usage, parse_retry_after)


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
            message = f"openai: HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code in (408, 409, 429) or response.status_code >= 500:
                raise TransientLLMError(message, parse_retry_after(response.headers), response.status_code)
            raise LLMCallError(message)
        try:
            data = response.json()
            choice = data["choices"][0]
            reply = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientLLMError(f"openai: malformed response: {response.text[:200]}") from None
        parts: list[Any] = []
        content = reply.get("content") or ""
        if isinstance(content, list):  # some servers send content parts
            content = "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        text = str(content)
        if text:
            parts.append(Text(text))
        calls = []
        for i, raw in enumerate(reply.get("tool_calls") or []):
            function = raw.get("function") or {}
            arguments = function.get("arguments")
            call = ToolCall(id=raw.get("id") or f"call_{i}", name=function.get("name", ""), input={})
            if isinstance(arguments, dict):
                call.input = arguments
            else:
                call.raw_arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
                try:
                    parsed = json.loads(arguments or "{}")
                except (TypeError, ValueError) as exc:
                    call.parse_error = f"the arguments are not valid JSON: {exc}"
                else:
                    if isinstance(parsed, dict):
                        call.input = parsed
                    else:
                        call.parse_error = "the arguments must be a JSON object"
            calls.append(call)
            parts.append(call)
        u = data.get("usage") or {}
        prompt = int(u.get("prompt_tokens") or 0)
        cached = int(((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        usage = Usage(input_tokens=max(0, prompt - cached), output_tokens=int(u.get("completion_tokens") or 0),
                      cache_read_tokens=cached)
        return ChatResponse(text=text, tool_calls=calls, usage=usage, model=data.get("model") or self.model,
                            stop_reason=choice.get("finish_reason") or "", message=Message("assistant", parts))
