"""Scripted model servers behind httpx2.MockTransport, for driving the REAL SDK clients offline.

Every handler counts the requests it saw; tests assert the count, so a client that bypasses the
mock (an SDK upgrade that changes its HTTP layer) fails loudly instead of calling the network.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Callable, Optional, Union

import httpx2

from autosci_hpc.agents.policy import AgentInfo
from autosci_hpc.agents.views import ChampionView, StateView, TaskView, TrialView, task_view
from autosci_hpc.config import LLMSection
from autosci_hpc.task import TaskSpec, build_snapshot, load_task

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "fixtures" / "tasks" / "toy"
_ids = itertools.count(1)

Reply = Union[dict, httpx2.Response, Callable[[dict], Union[dict, httpx2.Response]]]


class FakeServer:
    """A /v1/messages (Anthropic) or /v1/chat/completions (OpenAI) endpoint answered by `responder`."""

    def __init__(self, responder: Callable[[dict], Union[dict, httpx2.Response]], path: str = "/v1/messages") -> None:
        self.responder = responder
        self.path = path
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.raw: list[bytes] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == self.path, f"unexpected request to {request.url}"
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.raw.append(bytes(request.content))
        out = self.responder(body)
        return out if isinstance(out, httpx2.Response) else httpx2.Response(200, json=out)

    @property
    def count(self) -> int:
        return len(self.requests)

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self))


class Script:
    """Replies in order; each a response body, an httpx2.Response, or a function of the request."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)

    def __call__(self, body: dict) -> Union[dict, httpx2.Response]:
        assert self.replies, "the script ran out of replies"
        reply = self.replies.pop(0)
        return reply(body) if callable(reply) else reply


def usage(input_tokens: int = 100, output_tokens: int = 20, cache_read: int = 0, cache_write: int = 0) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write}


def tool_use(*calls: tuple[str, dict], text: str = "", use: Optional[dict] = None,
             model: str = "claude-sonnet-4-6") -> dict:
    """An Anthropic Messages reply calling the given tools."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_{next(_ids):04d}", "name": name, "input": data}
                for name, data in calls]
    return {"id": f"msg_{next(_ids):04d}", "type": "message", "role": "assistant", "model": model,
            "stop_reason": "tool_use", "stop_sequence": None, "content": content, "usage": use or usage()}


def api_error(status: int, kind: str, retry_after: Optional[str] = None) -> httpx2.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return httpx2.Response(status, headers=headers, json={"type": "error", "error": {"type": kind, "message": kind}})


def last_results(body: dict) -> list[dict]:
    """The tool_result blocks of the newest user turn."""
    last = body["messages"][-1]
    return [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


def anthropic_policy(server: FakeServer, task: Optional[TaskSpec] = None, folder: Optional[Path] = None,
                     llm: Optional[LLMSection] = None, **kwargs: Any) -> Any:
    from autosci_hpc.llm.anthropic_backend import AnthropicChat
    from autosci_hpc.llm.policy import LLMPolicy

    llm = llm or LLMSection(backend="anthropic")
    client = AnthropicChat("test-key", llm.model, http_client=server.client())
    kwargs.setdefault("sleep", lambda s: None)
    return LLMPolicy(client, task=task or load_task(TOY), llm=llm, campaign_folder=folder, **kwargs)


def toy_view(folder: Path, trials: int = 3, task: Optional[TaskSpec] = None) -> tuple[TaskSpec, StateView]:
    """A view of a toy campaign whose champion is the shipped program (snapshot built under `folder`)."""
    task = task or load_task(TOY)
    sid = build_snapshot(task, folder)
    champion = ChampionView(id=1, metric_mean=0.55, metric_std=0.01, seed_metrics={"0": 0.55, "1": 0.54, "2": 0.56},
                            overrides={}, snapshot_id=sid, config_signature=f"{sid}|(no change)",
                            model_card="Champion #1 of task toy\nscore (maximize): 0.55")
    views = [TrialView(id=i, proposal_id=None, team_id=None, role="baseline", seed=i % 3, status="succeeded",
                       config_signature=f"{sid}|x={i / 10:.4g}", metric=0.5, champion_delta=0.0, failure_class="",
                       failure_reason="") for i in range(trials, 0, -1)]  # newest first, as build_view
    tv: TaskView = task_view(task)
    return task, StateView(task=tv, champion=champion, trials=views)


def agent(role: str = "experimenter", id: int = 1, team_id: Optional[int] = 1) -> AgentInfo:
    return AgentInfo(id=id, name=f"{role}-{id}", role=role, team_id=team_id, focus="x_axis" if team_id else "")
