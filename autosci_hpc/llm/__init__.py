"""Agent backends behind the `Policy` interface: the offline policy (LLM backends come next)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..agents.policy import Policy
    from ..config import CampaignConfig
    from ..state import Store


def make_policy(config: "CampaignConfig", store: "Store") -> "Policy":
    """The policy a campaign config asks for. `store` is for accounting (llm_call rows) only."""
    if config.llm.backend == "offline":
        from .offline import OfflinePolicy

        return OfflinePolicy(seed=config.campaign.seed, dead_end_after=config.coordination.dead_end_after)
    raise ValueError(f"llm.backend={config.llm.backend!r} is not available in this version")
