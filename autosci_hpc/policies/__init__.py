"""Every agent backend behind the `Policy` interface, and the one place a config picks one.

The policies that use no model live here: the deterministic offline policy (`offline.py`) and the
random-search baseline (`random_search.py`). LLM agents live in `autosci_hpc.llm`; `make_policy`
turns `llm.backend` into whichever of them the campaign asks for.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ..agents.policy import Policy
    from ..config import CampaignConfig
    from ..state import Store
    from ..task import TaskSpec

#: `llm.backend` values served by a policy of this package (no model, no network, no key).
MODEL_FREE = ("offline", "random")


def make_policy(config: "CampaignConfig", store: "Store", *, task: Optional["TaskSpec"] = None,
                http_client: Any = None, sleep: Callable[[float], None] = time.sleep,
                heartbeat: Optional[Callable[[], None]] = None) -> "Policy":
    """The policy a campaign config asks for. `store` is for the LLM policy's accounting only;
    `http_client`, `sleep` and `heartbeat` are passed to it (`llm.make_llm_policy`)."""
    if config.llm.backend in MODEL_FREE:
        from .offline import OfflinePolicy
        from .random_search import PacedPolicy, RandomSearchPolicy

        kind = RandomSearchPolicy if config.llm.backend == "random" else OfflinePolicy
        policy: Policy = kind(seed=config.campaign.seed, dead_end_after=config.coordination.dead_end_after)
        return PacedPolicy(policy, config.llm.offline_latency_s) if config.llm.offline_latency_s else policy
    from ..llm import make_llm_policy

    return make_llm_policy(config, store, task=task, http_client=http_client, sleep=sleep, heartbeat=heartbeat)


def fallback_policy(config: "CampaignConfig") -> "Policy":
    """What the coordination asks for a team plan when the campaign's policy fails on it: the offline
    ranking of the approved proposals (most-supported first), which needs no model."""
    from .offline import OfflinePolicy

    return OfflinePolicy(seed=config.campaign.seed, dead_end_after=config.coordination.dead_end_after)
