"""Agent backends behind the `Policy` interface: the offline policy, and LLM agents (Claude through
the anthropic SDK, or a model behind an OpenAI-compatible server) in `llm.policy`."""

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


def make_policy(config: "CampaignConfig", store: "Store", *, task: Optional["TaskSpec"] = None,
                http_client: Any = None, sleep: Callable[[float], None] = time.sleep) -> "Policy":
    """The policy a campaign config asks for. `store` is for accounting (llm_call rows) only.

    LLM policies record every request attempt through a `StoreRecorder` (one short write
    transaction each) and refuse a request that would take the committed cost past
    `budget.llm_dollars`. The API key comes from `llm.api_key_file` or the environment and lives only
    in the client.
    """
    if config.llm.backend in ("offline", "random"):
        from .offline import OfflinePolicy
        from .random_search import PacedPolicy, RandomSearchPolicy

        kind = RandomSearchPolicy if config.llm.backend == "random" else OfflinePolicy
        policy: Policy = kind(seed=config.campaign.seed, dead_end_after=config.coordination.dead_end_after)
        return PacedPolicy(policy, config.llm.offline_latency_s) if config.llm.offline_latency_s else policy
    from ..task import load_task
    from .accounting import StoreRecorder
    from .keys import resolve_api_key
    from .policy import LLMPolicy

    from ..execution.sandbox import campaign_sandbox
    from ..scrub import heldout_values, public_values

    key = resolve_api_key(config.llm)
    client = make_client(config.llm, key, http_client=http_client)

    def heldout() -> tuple[list[float], list[float]]:
        with store.read() as session:
            return heldout_values(session), public_values(session)

    sandbox, _ = campaign_sandbox(config, store.folder)
    return LLMPolicy(client, task=task or load_task(config.task.path), llm=config.llm, recorder=StoreRecorder(store),
                     campaign_folder=store.folder, budget_usd=config.budget.llm_dollars, secrets=[key],
                     sleep=sleep, heldout=heldout, sandbox=sandbox)
