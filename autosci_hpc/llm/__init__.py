"""LLM agents behind the `Policy` interface: Claude through the anthropic SDK, or a model behind an
OpenAI-compatible server (`llm.policy`). The policies that use no model live in `autosci_hpc.policies`,
whose `make_policy` is where a campaign's `llm.backend` is turned into a policy."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ..agents.policy import Policy
    from ..config import CampaignConfig, LLMSection
    from ..state import Store
    from ..task import TaskSpec
    from .chat import ChatClient


def make_client(llm: "LLMSection", api_key: Optional[str], *, http_client: Any = None) -> "ChatClient":
    """The chat client `llm.backend` names. `http_client` (an httpx2.Client) is for tests."""
    if llm.backend == "anthropic":
        from .anthropic_backend import AnthropicChat

        assert api_key, "the anthropic backend needs an API key"
        return AnthropicChat(api_key, llm.model, base_url=llm.base_url, timeout_s=llm.timeout_s,
                             http_client=http_client)
    if llm.backend == "openai":
        from .openai_backend import OpenAICompatChat

        return OpenAICompatChat(llm.base_url or "https://api.openai.com/v1", llm.model, api_key=api_key,
                                timeout_s=llm.timeout_s, http_client=http_client)
    raise ValueError(f"llm.backend={llm.backend!r} has no chat client")


class BeatingClient:
    """A chat client that beats its agent's heartbeat before and after every request.

    A decision is one conversation of up to `llm.max_turns` requests, each of up to `llm.timeout_s`:
    minutes in all. The agent's process beats on every request, so the supervisor's hung limit
    (`coordination.agent_timeout_s`) measures silence since the model last answered or was asked,
    not the length of the conversation. A beat that fails (a locked database) is skipped: the next
    one comes with the next request.
    """

    def __init__(self, client: "ChatClient", beat: Callable[[], None]) -> None:
        self.client = client
        self.beat = beat
        self.model = client.model
        self.name = client.name

    def complete(self, request: Any) -> Any:
        self._beat()
        try:
            return self.client.complete(request)
        finally:
            self._beat()

    def _beat(self) -> None:
        try:
            self.beat()
        except Exception:  # noqa: BLE001 - a missed beat must never fail the model call
            pass

    def __repr__(self) -> str:
        return f"BeatingClient({self.client!r})"


def make_llm_policy(config: "CampaignConfig", store: "Store", *, task: Optional["TaskSpec"] = None,
                    http_client: Any = None, sleep: Callable[[float], None] = time.sleep,
                    heartbeat: Optional[Callable[[], None]] = None) -> "Policy":
    """The LLM policy `llm.backend` names. `store` is for accounting (llm_call rows) only.

    It records every request attempt through a `StoreRecorder` (one short write transaction each)
    and refuses a request that would take the committed cost past `budget.llm_dollars`. The API key
    comes from `llm.api_key_file` or the environment and lives only in the client. `heartbeat`, when
    given, is called around every model request (`BeatingClient`).
    """
    from ..task import load_task
    from .accounting import StoreRecorder
    from .keys import resolve_api_key
    from .policy import LLMPolicy

    from ..execution.sandbox import campaign_sandbox
    from ..scrub import Scrubber, heldout_values, public_values
    from .transcripts import TranscriptClient

    key = resolve_api_key(config.llm)
    client: "ChatClient" = make_client(config.llm, key, http_client=http_client)

    def heldout() -> tuple[list[float], list[float]]:
        with store.read() as session:
            return heldout_values(session), public_values(session)

    def scrubber() -> Callable[[str], str]:
        held, public = heldout()
        return Scrubber(heldout=held, secrets=[key], public=public).scrub

    client = TranscriptClient(client, store.folder, scrubber)  # every conversation, for audit
    if heartbeat is not None:
        client = BeatingClient(client, heartbeat)

    task = task or load_task(config.task.path)
    sandbox, _ = campaign_sandbox(config, store.folder, network=task.network)
    from ..execution.smoke import smoke_executor

    return LLMPolicy(client, task=task, llm=config.llm, recorder=StoreRecorder(store),
                     campaign_folder=store.folder, budget_usd=config.budget.llm_dollars, secrets=[key],
                     sleep=sleep, heldout=heldout, sandbox=sandbox,
                     smoke_executor=smoke_executor(config, store.folder / "jobs-smoke", task))
