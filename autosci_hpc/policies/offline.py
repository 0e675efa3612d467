"""A deterministic offline policy: every role's decisions without a model or a network.

It stands where an LLM will stand, behind the same `Policy` interface, and it really does each
step: proposals vary the task's axes around the champion, critiques act on the evidence checks,
hypotheses are ranked by the proposals that survived, dead ends are declared from the log.
Randomness comes from a `random.Random` seeded by (campaign seed, agent, step), and the step
counter lives in the agent's memory in the database, so a restarted campaign continues the same
sequence.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any, Optional

from ..agents.policy import (AgentInfo, CritiqueDraft, DeadEndDraft, Implementation, ProposalDraft,
                             TeamDraft)
from ..agents.views import ProposalView, StateView
from ..task import Axis, change_signature


class OfflinePolicy:
    name = "offline"

    def __init__(self, seed: int = 0, dead_end_after: int = 2) -> None:
        self.seed = seed
        self.dead_end_after = dead_end_after

    def _rng(self, agent: AgentInfo, purpose: str) -> random.Random:
        step = int(agent.memory.get("step", 0))
        key = f"{self.seed}:{agent.name}:{purpose}:{step}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    # ---- analyst ------------------------------------------------------------------------------

    def propose(self, agent: AgentInfo, view: StateView, focus: Optional[str]) -> Optional[ProposalDraft]:
        rng = self._rng(agent, "propose")
        axes = [a for a in view.task.axes if focus is None or a.group == focus]
        if not axes:
            return None
        champion = view.champion.overrides if view.champion else {}
        current = {**view.task.base_config, **champion}
        # What this analyst knows to avoid: its own earlier proposals and its own team's dead ends.
        mine = set(agent.memory.get("proposed", []))
        own_dead = {d.signature for d in view.dead_ends if d.team_id is not None and d.team_id == agent.team_id}
        for _ in range(12):
            first = rng.choice(axes)
            picks = [first]
            if len(axes) > 1 and rng.random() < 0.25:
                picks.append(rng.choice([a for a in axes if a.key != first.key]))
            overrides = {a.key: _vary(a, current.get(a.key), rng) for a in picks}
            overrides = {k: v for k, v in overrides.items() if v != current.get(k)}
            if not overrides:
                continue
            signature = change_signature(overrides, [])
            if signature in mine:
                continue
            dirs = {f"{k}{a.bin_of(v)}" for a in picks for k, v in overrides.items() if k == a.key}
            if dirs & own_dead:
                continue
            words = ", ".join(f"{k}: {current.get(k)!r} -> {v!r}" for k, v in overrides.items())
            return ProposalDraft(
                title=f"{first.group}: {words}",
                focus=first.group,
                overrides=overrides,
                rationale=f"Moving {words} explores the {first.group} hypothesis from the current champion.",
                expected_effect=f"{view.task.metric} improves beyond the champion's seed spread",
                falsification="the candidate does not beat the champion's mean over the replication seeds",
            )
        return None

    def critique(self, agent: AgentInfo, view: StateView, proposal: ProposalView,
                 findings: list[str]) -> CritiqueDraft:
        if findings:
            return CritiqueDraft(verdict="reject", reasons="; ".join(findings))
        return CritiqueDraft(verdict="approve",
                             reasons="no duplicate, no dead end, and no trial in the log argues against it")

    def plan_teams(self, agent: AgentInfo, view: StateView, approved: list[ProposalView],
                   n_teams: int) -> list[TeamDraft]:
        support: dict[str, list[int]] = {}
        for proposal in approved:
            support.setdefault(proposal.focus, []).append(proposal.id)
        ranked = sorted(support, key=lambda f: (-len(support[f]), min(support[f])))
        for group in [a.group for a in view.task.axes]:
            if group not in ranked:
                ranked.append(group)
        drafts = []
        for focus in ranked[:n_teams]:
            keys = sorted({a.key for a in view.task.axes if a.group == focus})
            ids = support.get(focus, [])
            drafts.append(TeamDraft(
                focus=focus,
                hypothesis=(f"Changing {focus} ({', '.join(keys)}) improves {view.task.metric}; "
                            f"supported by {len(ids)} approved proposal(s)"
                            + (f" (#{', #'.join(map(str, ids))})" if ids else "")),
                proposal_ids=ids,
            ))
        return drafts

    def review(self, agent: AgentInfo, view: StateView, evidence: dict[str, list[int]]) -> list[DeadEndDraft]:
        known = {d.signature for d in view.dead_ends}
        drafts = []
        for direction, trial_ids in sorted(evidence.items()):
            if direction in known or len(trial_ids) < self.dead_end_after:
                continue
            drafts.append(DeadEndDraft(
                signature=direction,
                description=f"moving {direction}",
                reason=f"{len(trial_ids)} experiments in this direction brought no improvement",
                evidence_trial_ids=sorted(trial_ids),
            ))
        return drafts

    # ---- experimenter -------------------------------------------------------------------------

    def implement(self, agent: AgentInfo, view: StateView, proposal: ProposalView) -> Implementation:
        return Implementation(overrides=dict(proposal.overrides), edits=list(proposal.edits),
                              notes="implemented as proposed")


def _vary(axis: Axis, value: Any, rng: random.Random) -> Any:
    """A new value on the axis: a local step from the current value, or a fresh sample."""
    if axis.kind == "choice":
        options = [v for v in axis.values if v != value] or axis.values
        return rng.choice(options)
    assert axis.low is not None and axis.high is not None
    local = value is not None and rng.random() < 0.6
    if axis.kind == "log_float":
        if local and float(value) > 0:
            x = float(value) * math.exp(rng.choice([-1, 1]) * rng.uniform(math.log(1.5), math.log(6)))
        else:
            x = math.exp(rng.uniform(math.log(axis.low), math.log(axis.high)))
        return float(f"{min(axis.high, max(axis.low, x)):.3g}")
    if axis.kind == "float":
        span = axis.high - axis.low
        x = float(value) + rng.uniform(-0.3, 0.3) * span if local else rng.uniform(axis.low, axis.high)
        return float(f"{min(axis.high, max(axis.low, x)):.3g}")
    lo, hi = int(axis.low), int(axis.high)
    if local:
        step = max(1, int(round((hi - lo) * rng.uniform(0.1, 0.4))))
        x = int(value) + rng.choice([-1, 1]) * step
    else:
        x = rng.randint(lo, hi)
    return int(min(hi, max(lo, x)))
