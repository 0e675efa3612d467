"""Random search: the baseline a campaign's agents must beat, behind the same `Policy` interface.

Each proposal is a fresh configuration drawn uniformly (log-uniformly for `log_float` axes) over
every axis of the task, independent of the champion and of the log: no local steps, no dead ends,
no critique beyond the hard gates the coordinator applies to everyone. Run it as
`llm.backend: random` with `coordination.mode: single`, so only the search strategy differs.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Optional

from ..agents.policy import AgentInfo, CritiqueDraft, DeadEndDraft, Policy, ProposalDraft
from ..agents.views import ProposalView, StateView
from ..task import Axis, change_signature
from .offline import OfflinePolicy


def sample(axis: Axis, rng: random.Random) -> Any:
    """One value drawn from the whole range of `axis`."""
    if axis.kind == "choice":
        return rng.choice(axis.values)
    assert axis.low is not None and axis.high is not None
    if axis.kind == "log_float":
        return float(f"{math.exp(rng.uniform(math.log(axis.low), math.log(axis.high))):.3g}")
    if axis.kind == "float":
        return float(f"{rng.uniform(axis.low, axis.high):.3g}")
    return rng.randint(int(axis.low), int(axis.high))


class RandomSearchPolicy(OfflinePolicy):
    name = "random"

    def propose(self, agent: AgentInfo, view: StateView, focus: Optional[str]) -> Optional[ProposalDraft]:
        rng = self._rng(agent, "random")
        current = {**view.task.base_config, **(view.champion.overrides if view.champion else {})}
        tried = set(agent.memory.get("proposed", []))
        # A team's proposal stays within the team's focus (its axes); without one, every axis is drawn.
        axes = [a for a in view.task.axes if focus is None or a.group == focus]
        for _ in range(20 if axes else 0):
            overrides = {a.key: sample(a, rng) for a in axes}
            overrides = {k: v for k, v in overrides.items() if v != current.get(k)}
            if overrides and change_signature(overrides, []) not in tried:
                words = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                return ProposalDraft(title=f"random: {words}", focus=focus or "random", overrides=overrides,
                                     rationale="a configuration drawn uniformly from the task's axes",
                                     expected_effect="none stated (random search)",
                                     falsification="it does not beat the champion over the seeds")
        return None

    def critique(self, agent: AgentInfo, view: StateView, proposal: ProposalView,
                 findings: list[str]) -> CritiqueDraft:
        return CritiqueDraft(verdict="approve", reasons="random search does not argue")

    def review(self, agent: AgentInfo, view: StateView, evidence: dict[str, list[int]]) -> list[DeadEndDraft]:
        return []  # random search keeps no memory of failures


class PacedPolicy:
    """A policy that waits `latency_s` before each decision, as an LLM call would."""

    def __init__(self, inner: Policy, latency_s: float, sleep: Any = time.sleep) -> None:
        self.inner = inner
        self.name = inner.name
        self.latency_s = latency_s
        self._sleep = sleep

    def __getattr__(self, decision: str) -> Any:
        method = getattr(self.inner, decision)

        def paced(*args: Any, **kwargs: Any) -> Any:
            self._sleep(self.latency_s)
            return method(*args, **kwargs)
        return paced
