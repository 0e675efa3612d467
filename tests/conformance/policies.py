"""Every `Policy` the conformance suite runs, built in one place.

The model-free policies are imported here and nowhere else in the suite: where they live is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from autosci_hpc.agents.policy import Policy
from autosci_hpc.config import LLMSection
from autosci_hpc.llm import make_client
from autosci_hpc.llm.policy import LLMPolicy
from autosci_hpc.policies.offline import OfflinePolicy
from autosci_hpc.policies.random_search import RandomSearchPolicy
from autosci_hpc.task import TaskSpec
from modelserver import Brain, ModelServer

#: The policies that need no model, by their `llm.backend` name.
MODEL_FREE: dict[str, Callable[..., Policy]] = {"offline": OfflinePolicy, "random": RandomSearchPolicy}
#: The LLM policy, over each chat backend.
LLM_BACKENDS = ("anthropic", "openai")
ALL = (*MODEL_FREE, *(f"llm-{b}" for b in LLM_BACKENDS))


def stand_in_llm(backend: str, server: ModelServer) -> LLMSection:
    """The settings of an LLM policy whose model is the stand-in `server` (free: no budget to spend)."""
    return LLMSection(backend=backend, model="stand-in", prices={"stand-in": {"input": 0, "output": 0}},
                      base_url=server.openai_url() if backend == "openai" else server.anthropic_url())


def policy_named(name: str, task: TaskSpec, folder: Path) -> Iterator[Policy]:
    """The policy `name` (one of `ALL`) for `task`; an LLM policy talks, through the product's real client,
    to a stand-in model server on 127.0.0.1 that plays a scripted model on the toy task."""
    if name in MODEL_FREE:
        yield MODEL_FREE[name](seed=0)
        return
    backend = name.removeprefix("llm-")
    with ModelServer(Brain()) as server:
        llm = stand_in_llm(backend, server)
        client: Any = make_client(llm, "sk-test-not-a-key")
        yield LLMPolicy(client, task=task, llm=llm, campaign_folder=folder, sleep=lambda s: None)
