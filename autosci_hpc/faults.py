"""Fault injection for the crash-recovery tests: die at a named point, the way kill -9 would.

`AUTOSCI_FAULT=point` (or `point:N`, the N-th time the point is reached) makes the process kill
itself with SIGKILL there. Unset — always, outside the tests — each call is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("AUTOSCI_FAULT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
