"""The tools LLM agents call, as pydantic input models (their JSON schemas are the tool specs).

Final tools end a decision and take the `Policy` drafts themselves (ProposalDraft, CritiqueDraft,
...) or a thin wrapper around them; the others read the state, keep notes, or work on the
experimenter's scratch copy of the champion program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..agents.policy import DeadEndDraft, TeamDraft
from ..task import Edit
from .context import MEMORY_CHARS


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- reading the shared state (every role) ----------------------------------------------------------


class ReadLog(_Input):
    """Trials from the experiment log (the most recent the view holds, or the best)."""

    status: Optional[Literal["succeeded", "failed"]] = None
    team_id: Optional[int] = None
    proposal_id: Optional[int] = None
    order: Literal["recent", "best"] = "recent"
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=20, ge=1, le=60)


class ReadForum(_Input):
    kind: Optional[Literal["analysis", "proposal", "critique", "roster", "discussion", "result", "failure",
                           "promotion", "dead_end"]] = None
    team_id: Optional[int] = None
    limit: int = Field(default=10, ge=1, le=20)


class ReadDeadEnds(_Input):
    team_id: Optional[int] = None
    limit: int = Field(default=30, ge=1, le=60)


class ReadProposals(_Input):
    """Proposals, filtered; with `proposal_id`, one proposal in full (its code edits included)."""

    proposal_id: Optional[int] = None
    status: Optional[str] = None
    focus: Optional[str] = None
    team_id: Optional[int] = None
    limit: int = Field(default=15, ge=1, le=30)


class UpdateMemory(_Input):
    """Replace your notes: what you learned and plan, kept across your steps (at most 2000 characters)."""

    notes: str = Field(max_length=MEMORY_CHARS)


# ---- analysts' final tools -----------------------------------------------------------------------------


class NoProposal(_Input):
    reason: str


# The teams to form: a plan. Each team's roster (its members) is decided when it forms.
class TeamPlan(_Input):
    teams: list[TeamDraft] = Field(min_length=1)


class DeadEnds(_Input):
    dead_ends: list[DeadEndDraft] = Field(default_factory=list)


# ---- experimenters ---------------------------------------------------------------------------------------


class ListFiles(_Input):
    pass


#: A path a model may name: a relative file name of the program, no control characters (a NUL
#: byte arrives here as U+FFFD), at most this long.
PATH_CHARS = 1000
_BAD_PATH = re.compile(r"[\x00-\x1f\x7f\ufffd]")


def _check_path(path: str) -> str:
    if not path or len(path) > PATH_CHARS:
        raise ValueError(f"a path must be 1 to {PATH_CHARS} characters, got {len(path)}")
    if _BAD_PATH.search(path):
        raise ValueError("a path must not contain control characters or NUL bytes")
    return path


class ReadFile(_Input):
    path: str
    start_line: int = Field(default=1, ge=1)
    max_lines: int = Field(default=200, ge=1, le=400)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return _check_path(path)


class EditFiles(_Input):
    """SEARCH/REPLACE blocks, applied in order: each replaces the one occurrence of `search`."""

    edits: list[Edit] = Field(min_length=1)

    @field_validator("edits")
    @classmethod
    def _paths(cls, edits: list[Edit]) -> list[Edit]:
        for edit in edits:
            _check_path(edit.path)
        return edits


class SetOverrides(_Input):
    """Config overrides (dotted keys of config.yaml) on top of the champion's; null removes one."""

    overrides: dict[str, Any]


class SmokeTest(_Input):
    pass


class Submit(_Input):
    notes: str = ""


# ---- the tool table ---------------------------------------------------------------------------------------


class ToolRefused(Exception):
    """A tool call that validated but cannot be done; the message goes back to the model."""


@dataclass
class Done:
    """What a final tool returns: the decision."""

    value: Any


@dataclass
class Tool:
    name: str
    description: str
    model: type[BaseModel]
    run: Callable[[Any], Any]
    final: bool = False


def format_validation(exc: ValidationError, limit: int = 8) -> str:
    lines = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(input)"
        got = repr(err.get("input"))
        lines.append(f"- {where}: {err['msg']} (got {got[:120]})")
    more = len(exc.errors()) - limit
    return "\n".join(lines) + (f"\n- ... {more} more" if more > 0 else "")
