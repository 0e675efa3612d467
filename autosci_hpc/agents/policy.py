"""The interface every agent backend implements: the offline and random policies and the LLM policy.

Each decision an agent makes is one method, taking the agent's identity and a bounded view of the
state and returning a pydantic draft. The drafts are exactly what an LLM backend's tools accept,
so a tool call that does not validate can be answered with the validation error.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Protocol

from pydantic import BaseModel, Field

from ..task import Edit
from .views import ProposalView, StateView


class AgentInfo(BaseModel):
    id: int
    name: str
    role: str
    team_id: Optional[int] = None
    focus: str = ""
    memory: dict[str, Any] = Field(default_factory=dict)
    #: Set by a policy during a decision: keys the role should merge into the agent's stored memory
    #: when it records the step (an LLM agent's notes). Policies never write the database themselves.
    memory_update: dict[str, Any] = Field(default_factory=dict)


class PolicyError(RuntimeError):
    """A decision the policy could not make (an LLM that kept failing, a spent LLM budget).

    The message is meant for the forum and the log: it never carries an API key.
    """


class ProposalDraft(BaseModel):
    title: str
    focus: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    edits: list[Edit] = Field(default_factory=list)
    rationale: str
    expected_effect: str = ""
    falsification: str = ""
    #: A coarse direction the change explores, e.g. `arch:depth` or `optim:schedule` (optional): dead
    #: ends are registered on directions, so a code idea that keeps failing blocks its kind, not one hash.
    direction: str = ""


class CritiqueDraft(BaseModel):
    verdict: Literal["approve", "reject"]
    reasons: str


class TeamDraft(BaseModel):
    focus: str
    hypothesis: str
    proposal_ids: list[int] = Field(default_factory=list)


class DeadEndDraft(BaseModel):
    signature: str
    description: str
    reason: str
    evidence_trial_ids: list[int] = Field(default_factory=list)


class Implementation(BaseModel):
    overrides: dict[str, Any] = Field(default_factory=dict)
    edits: list[Edit] = Field(default_factory=list)
    notes: str = ""


class Policy(Protocol):
    """Decisions of the roles. Implementations must not touch the database themselves."""

    name: str

    def propose(self, agent: AgentInfo, view: StateView, focus: Optional[str]) -> Optional[ProposalDraft]:
        """An analyst's next proposal within `focus` (any focus when None); None if it has none."""

    def critique(self, agent: AgentInfo, view: StateView, proposal: ProposalView,
                 findings: list[str]) -> CritiqueDraft:
        """A peer's verdict on a proposal. `findings` are the evidence checks' results."""

    def plan_teams(self, agent: AgentInfo, view: StateView, approved: list[ProposalView],
                   n_teams: int) -> list[TeamDraft]:
        """Hypotheses to form teams around, from the proposals that survived discussion."""

    def review(self, agent: AgentInfo, view: StateView, evidence: dict[str, list[int]]) -> list[DeadEndDraft]:
        """Directions to register as dead ends; `evidence` maps direction -> non-improving trials."""

    def implement(self, agent: AgentInfo, view: StateView, proposal: ProposalView) -> Implementation:
        """An experimenter's concrete change for a claimed proposal."""
