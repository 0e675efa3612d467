"""The lease's refusal for a holder that cannot be checked from here says what to do, and doing it works."""

from __future__ import annotations

import re
import shlex
import socket
import sqlite3
from pathlib import Path

import pytest

from autosci_hpc.state import Store
from autosci_hpc.state.lease import CoordinatorLease, LeaseHeld
from autosci_hpc.state.models import Lease
from autosci_hpc.state.store import LeaseLost


def _move_holder_elsewhere(store: Store) -> None:
    """The holder now looks like a coordinator on another node whose heartbeat has expired."""
    with store.write() as session:
        row = session.get(Lease, 1)
        assert row is not None
        row.host, row.pid, row.slurm_job_id = "node-elsewhere", 1, "4242"
        row.expires_at = row.heartbeat_at
        session.add(row)


def test_an_unverifiable_holder_is_refused_with_steps_that_free_the_campaign(tmp_path: Path) -> None:
    old = Store(tmp_path / "c")
    CoordinatorLease(old).acquire()
    _move_holder_elsewhere(old)
    new = Store(tmp_path / "c")
    with pytest.raises(LeaseHeld) as refused:
        CoordinatorLease(new, job_running=lambda job: None).acquire()  # the scheduler does not answer
    line = str(refused.value)
    assert "\n" not in line
    assert "on node-elsewhere, where its pid can be checked" in line and socket.gethostname() in line
    command = shlex.split(re.search(r"sqlite3 .*$", line).group(0))  # type: ignore[union-attr]
    assert command[:2] == ["sqlite3", str(new.path)]
    with sqlite3.connect(command[1]) as con:  # what the operator types, once the holder is known dead
        con.execute(command[2])
    assert CoordinatorLease(new, job_running=lambda job: None).acquire() == 2
    with pytest.raises(LeaseLost):  # the old holder, were it alive after all, writes nothing more
        with old.write() as session:
            session.add(Lease(id=99))
