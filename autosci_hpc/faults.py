"""Fault injection for the crash-recovery tests: die (or hang) at a named point, as kill -9 would.

`AUTOSCI_FAULT=point` (or `point:N`, the N-th time this process reaches it) makes the process
SIGKILL itself there; `point:N:hang` makes it hang instead. With `AUTOSCI_FAULT_MARKER=path` the
fault fires once across all processes (the marker file records that it did), so a restarted
process does not die again. Unset — always, outside the tests — each call is one lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_seen: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("AUTOSCI_FAULT")
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    nth, _, action = rest.partition(":")
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] < int(nth or 1):
        return
    marker = os.environ.get("AUTOSCI_FAULT_MARKER")
    if marker:
        try:
            with open(Path(marker), "x") as handle:  # atomic: only the first process gets here
                handle.write(f"{name} in pid {os.getpid()}\n")
        except FileExistsError:
            return
    if action == "hang":
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)
