"""The states of every record, and the one table per record kind of which state may follow which.

The enums are `str`-valued, so a row stores exactly the text it always stored (`"posted"`, `"queued"`,
...) and a database written before them reads the same. Each `Lifecycle` below is written once and is
both the rule and its documentation: the verbs in `state.proposals`, `state.trials`, ... check every
move against it (an illegal one raises `IllegalTransition`, naming the record, its id and both
states), the tests walk it edge by edge, and `docs/architecture.md` shows it as rendered by
`Lifecycle.markdown()` (a test keeps the two the same).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Optional

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    class StrEnum(str, Enum):
        """A `str` whose text is its value (what `enum.StrEnum` is from Python 3.11 on)."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class ProposalStatus(StrEnum):
    POSTED = "posted"  # waiting for the critics it named
    REJECTED = "rejected"  # refused by a gate or its critics, or withdrawn from a reorganized team
    APPROVED = "approved"  # supported, waiting for a team to form (or, with no team, to be assigned)
    QUEUED = "queued"  # in its team's queue
    CLAIMED = "claimed"  # an experimenter (or central-mode worker) took it; no trial yet
    RUNNING = "running"  # its candidate trial (seed 0) exists
    REPLICATING = "replicating"  # it passed the screen: more seeds (and champion reruns) are out
    DONE = "done"  # concluded; `outcome` says how


class ProposalOutcome(StrEnum):
    PROMOTED = "promoted"
    NOT_PROMOTED = "not_promoted"
    FAILED = "failed"  # its trial failed, or it could not be implemented
    STALE = "stale"  # built on a champion that was replaced while it ran


class TrialStatus(StrEnum):
    CREATED = "created"  # ready for the next batch
    SUBMITTING = "submitting"  # recorded under its batch's job name before the scheduler is called
    SUBMITTED = "submitted"  # the scheduler holds it (job id recorded)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TrialRole(StrEnum):
    BASELINE = "baseline"
    CANDIDATE = "candidate"  # a proposal's first run, seed 0
    REPLICATE = "replicate"  # the candidate on another seed
    CHAMPION_RERUN = "champion_rerun"  # the champion on a seed it had no stored result for


class CampaignStatus(StrEnum):
    CREATED = "created"
    BASELINE = "baseline"  # the champion program runs on every seed
    DISCUSSION = "discussion"  # analysts debate in rounds (decentralized mode only)
    EXECUTION = "execution"
    FINISHED = "finished"
    FAILED = "failed"  # the starting program itself fails


class TeamStatus(StrEnum):
    ACTIVE = "active"
    DISCUSSING = "discussing"  # stagnated: its analysts argue for a hypothesis again


class AgentStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"  # holds a claimed or running proposal


class PostKind(StrEnum):
    """What a forum post is about."""

    ANALYSIS = "analysis"
    PROPOSAL = "proposal"
    CRITIQUE = "critique"
    ROSTER = "roster"
    DISCUSSION = "discussion"
    RESULT = "result"
    FAILURE = "failure"
    PROMOTION = "promotion"
    DEAD_END = "dead_end"
    INTEGRITY = "integrity"


#: Proposals not yet settled for good: still to be critiqued, waiting, or being run. Duplicates are
#: checked against these, and agents' views always show them.
OPEN_PROPOSALS: tuple[str, ...] = tuple(s.value for s in (
    ProposalStatus.POSTED, ProposalStatus.APPROVED, ProposalStatus.QUEUED, ProposalStatus.CLAIMED,
    ProposalStatus.RUNNING, ProposalStatus.REPLICATING))

#: Trials the scheduler has, or is being handed, but that have not reported.
IN_FLIGHT_TRIALS: tuple[str, ...] = (TrialStatus.SUBMITTING.value, TrialStatus.SUBMITTED.value)

#: A trial that has reported, one way or the other.
FINISHED_TRIALS: tuple[str, ...] = (TrialStatus.SUCCEEDED.value, TrialStatus.FAILED.value)


class IllegalTransition(RuntimeError):
    """A record asked to move to a state its lifecycle does not allow from where it is."""

    def __init__(self, record: str, record_id: Optional[int], current: Optional[str], target: str,
                 allowed: tuple[str, ...]) -> None:
        self.record, self.record_id, self.current, self.target = record, record_id, current, target
        where = "a new row" if current is None else f"'{current}'"
        options = ", ".join(f"'{s}'" for s in allowed) or "nothing (it is final)"
        super().__init__(f"{record} #{record_id if record_id is not None else '(new)'}: illegal transition "
                         f"from {where} to '{target}' (allowed from {where}: {options})")


@dataclass(frozen=True)
class Lifecycle:
    """One record kind's states: those a new row may start in, and each state's allowed successors."""

    record: str
    states: tuple[str, ...]
    initial: tuple[str, ...]
    moves: Mapping[str, tuple[str, ...]]

    def allowed(self, current: Optional[str]) -> tuple[str, ...]:
        return self.initial if current is None else tuple(self.moves.get(str(current), ()))

    def check(self, record_id: Optional[int], current: Optional[str], target: str) -> str:
        """`target` as stored text when the move is legal (`current` None: a new row); else raise."""
        allowed = self.allowed(current)
        if str(target) not in allowed:
            raise IllegalTransition(self.record, record_id, None if current is None else str(current),
                                    str(target), allowed)
        return str(target)

    def final(self) -> tuple[str, ...]:
        return tuple(s for s in self.states if not self.moves.get(s))

    def markdown(self) -> str:
        """The table as the documentation shows it: one line per state, its successors beside it."""
        lines = [f"| {self.record} state | may move to |", "|---|---|"]
        for state in self.states:
            start = " (new rows start here)" if state in self.initial else ""
            after = ", ".join(f"`{s}`" for s in self.moves.get(state, ())) or "— (final)"
            lines.append(f"| `{state}`{start} | {after} |")
        return "\n".join(lines)


def _table(record: str, enum: type[StrEnum], initial: tuple[StrEnum, ...],
           moves: dict[StrEnum, tuple[StrEnum, ...]]) -> Lifecycle:
    states = tuple(s.value for s in enum)
    return Lifecycle(record=record, states=states, initial=tuple(s.value for s in initial),
                     moves={k.value: tuple(v.value for v in vs) for k, vs in moves.items()})


P, T, C, TS, A = ProposalStatus, TrialStatus, CampaignStatus, TeamStatus, AgentStatus

PROPOSAL = _table("proposal", P, (P.POSTED, P.REJECTED), {
    # settled once its critics have answered: refused, or into its team's queue, or approved
    P.POSTED: (P.REJECTED, P.QUEUED, P.APPROVED),
    # a team formed around its hypothesis; or (no teams: the baselines) a worker was given it
    P.APPROVED: (P.QUEUED, P.CLAIMED),
    # claimed by an experimenter, or withdrawn when its team moved to another hypothesis
    P.QUEUED: (P.CLAIMED, P.REJECTED),
    # its candidate trial was created; it went back (its trial never started); it could not be implemented
    P.CLAIMED: (P.RUNNING, P.QUEUED, P.APPROVED, P.DONE),
    # past the screen; or re-based: a newer champion came while it ran, its change runs again on it
    P.RUNNING: (P.REPLICATING, P.RUNNING, P.DONE),
    # more seeds while the promotion rule is inconclusive; or re-based, as above
    P.REPLICATING: (P.REPLICATING, P.RUNNING, P.DONE),
    P.REJECTED: (),
    P.DONE: (),
})

TRIAL = _table("trial", T, (T.CREATED,), {
    T.CREATED: (T.SUBMITTING,),
    # the scheduler took it; or it refused the batch (or never saw it): ready again
    T.SUBMITTING: (T.SUBMITTED, T.CREATED),
    T.SUBMITTED: (T.SUCCEEDED, T.FAILED),
    T.SUCCEEDED: (),
    T.FAILED: (),  # a failure lost to the infrastructure is retried as a new row (`retry_of`)
})

CAMPAIGN = _table("campaign", C, (C.CREATED,), {
    C.CREATED: (C.BASELINE,),
    C.BASELINE: (C.DISCUSSION, C.EXECUTION, C.FAILED),
    C.DISCUSSION: (C.EXECUTION,),
    C.EXECUTION: (C.FINISHED,),
    C.FINISHED: (),
    C.FAILED: (),
})

TEAM = _table("team", TS, (TS.ACTIVE,), {
    TS.ACTIVE: (TS.DISCUSSING,),  # stagnation re-opens its discussion
    TS.DISCUSSING: (TS.ACTIVE,),  # it took up the best-supported hypothesis
})

AGENT = _table("agent", A, (A.IDLE,), {
    A.IDLE: (A.BUSY,),
    A.BUSY: (A.IDLE,),
})

#: Every lifecycle, in the order the documentation shows them.
LIFECYCLES: tuple[Lifecycle, ...] = (PROPOSAL, TRIAL, CAMPAIGN, TEAM, AGENT)


def markdown() -> str:
    """All lifecycle tables, as `docs/architecture.md` carries them."""
    return "\n\n".join(table.markdown() for table in LIFECYCLES)
