"""Transcripts for audit: every model conversation, kept with the campaign.

A decision is one conversation (`LLMPolicy`): its first request holds the system prompt and one
user message; each later request repeats the conversation and adds the tool results. The
`TranscriptClient` wraps the chat client and writes, per conversation, one JSON-lines file under
`<campaign>/transcripts/`: a header (purpose, time, the system prompt and the opening message), then
each reply and the tool results that answered it. Every text is clipped and passes through the
campaign's scrubber (held-out values, the API key in any recognisable form), replies included.

`autosci show p3 --transcript` (or a trial) prints the conversations behind a proposal: the one that
posted it (matched by its title), its critiques, and the implementation (both name `p3`).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from ..layout import CampaignLayout
from .chat import ChatRequest, ChatResponse, Text, ToolCall, ToolResult

#: Characters kept of each text in a transcript (system prompt, message, tool result, reply).
CLIP = 6000
FINAL_TOOLS = {"post_proposal": "propose", "no_proposal": "propose", "critique": "critique",
               "write_team_plan": "plan_teams", "register_dead_ends": "review", "submit": "implement"}


def _clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} characters clipped]"


def purpose_of(request: ChatRequest) -> str:
    for tool in request.tools:
        if tool.name in ("post_proposal", "critique", "write_team_plan", "register_dead_ends", "submit"):
            return FINAL_TOOLS[tool.name]
    return "other"


def _parts(parts: Iterable[Any], clean: Callable[[str], str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append({"text": clean(part.text)})
        elif isinstance(part, ToolResult):
            out.append({"tool_result": clean(part.content), "error": part.is_error})
        elif isinstance(part, ToolCall):
            out.append({"tool_call": part.name, "input": json.loads(clean(json.dumps(part.input)))})
    return out


class TranscriptClient:
    """A chat client that keeps a transcript of each conversation (see the module's docstring)."""

    def __init__(self, client: Any, campaign_folder: Path, scrub: Callable[[], Callable[[str], str]]) -> None:
        self.client = client
        self.model = client.model
        self.name = client.name
        self.folder = CampaignLayout(campaign_folder).transcripts
        #: Returns the scrubber as it stands (the held-out values known so far grow during a campaign).
        self.scrub = scrub
        self._scrub: Callable[[str], str] = str
        self.path: Optional[Path] = None

    def _clean(self, text: str) -> str:
        return _clip(self._scrub(text))

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError:  # a transcript is for audit: never a reason to fail the decision
            pass

    def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            self._scrub = self.scrub()
        except Exception:  # noqa: BLE001 - e.g. a locked database: keep the last scrubber
            pass
        if len(request.messages) <= 1 or self.path is None:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            purpose = purpose_of(request)
            self.path = self.folder / f"{time.time_ns()}-{os.getpid()}-{purpose}.jsonl"
            self._write({"purpose": purpose, "model": self.model, "at": time.time(),
                         "system": self._clean("\n\n".join(b.text for b in request.system)),
                         "messages": [_parts(m.parts, self._clean) for m in request.messages]})
        else:
            self._write({"user": _parts(request.messages[-1].parts, self._clean)})
        response = self.client.complete(request)
        self._write({"reply": _parts(response.message.parts, self._clean) if response.message else [],
                     "stop_reason": response.stop_reason})
        return response

    def __repr__(self) -> str:
        return f"TranscriptClient({self.client!r})"


# ---- reading them back ------------------------------------------------------------------------------

def conversations(campaign_folder: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    for path in sorted(CampaignLayout(campaign_folder).transcripts.glob("*.jsonl")):
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        if records:
            yield path, records


def _opening(records: list[dict[str, Any]]) -> str:
    return json.dumps(records[0].get("messages", []), ensure_ascii=False)


def _final_calls(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replies = [r["reply"] for r in records if "reply" in r]
    return [p for p in (replies[-1] if replies else []) if "tool_call" in p]


def behind_proposal(campaign_folder: Path, proposal_id: int, title: str) -> list[Path]:
    """The conversations that posted, critiqued or implemented proposal `proposal_id`."""
    named = re.compile(rf"\bp{proposal_id}\b")
    found = []
    for path, records in conversations(campaign_folder):
        purpose = records[0].get("purpose")
        if purpose == "propose":
            if any(c["tool_call"] == "post_proposal" and c.get("input", {}).get("title") == title
                   for c in _final_calls(records)):
                found.append(path)
        elif purpose in ("critique", "implement") and named.search(_opening(records)):
            found.append(path)
    return found


def render(path: Path) -> str:
    """A transcript as text, for `autosci show --transcript`."""
    lines = [f"=== {path.name}"]
    for record in (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()):
        if "purpose" in record:
            lines.append(f"[{record['purpose']}] model {record.get('model')}")
            lines.append(f"--- system ---\n{record.get('system', '')}")
            for message in record.get("messages", []):
                lines += [f"--- user ---\n{_render_parts(message)}"]
        elif "user" in record:
            lines.append(f"--- user ---\n{_render_parts(record['user'])}")
        elif "reply" in record:
            lines.append(f"--- model ({record.get('stop_reason', '')}) ---\n{_render_parts(record['reply'])}")
    return "\n".join(lines)


def _render_parts(parts: list[dict[str, Any]]) -> str:
    out = []
    for part in parts:
        if "text" in part:
            out.append(part["text"])
        elif "tool_result" in part:
            out.append(("ERROR " if part.get("error") else "") + "result: " + part["tool_result"])
        elif "tool_call" in part:
            out.append(f"call {part['tool_call']}({json.dumps(part.get('input', {}), ensure_ascii=False)})")
    return "\n".join(out)
