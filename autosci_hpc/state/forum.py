"""The forum, as one verb: `post`. Posts quote log tails and model-written text, so the caller hands
in the scrubber the text goes through (`agents.roles.post` passes the campaign's)."""

from __future__ import annotations

from typing import Optional, Protocol

from sqlmodel import Session

from .lifecycle import PostKind
from .models import ForumPost


class Scrubber(Protocol):
    def scrub(self, text: str) -> str: ...


def post(session: Session, clean: Scrubber, kind: PostKind | str, title: str, body: str = "", *,
         author_id: Optional[int] = None, team_id: Optional[int] = None, proposal_id: Optional[int] = None,
         trial_ids: Optional[list[int]] = None) -> ForumPost:
    """Add a post of a known kind (`ValueError` for any other), its title and body scrubbed."""
    row = ForumPost(kind=PostKind(kind).value, title=clean.scrub(title), body=clean.scrub(body),
                    author_id=author_id, team_id=team_id, proposal_id=proposal_id, trial_ids=trial_ids or [])
    session.add(row)
    return row
