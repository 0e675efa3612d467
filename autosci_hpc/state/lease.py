"""One coordinator per campaign: a lease row with a heartbeat and a fencing token.

The lease lives in the database itself (no fcntl locks, which NFS does not honour across hosts).
Taking it is one `BEGIN IMMEDIATE` transaction. A lease whose heartbeat has expired is taken over
only when its holder is verifiably gone: same host and its pid no longer lives, or its Slurm job
is no longer running. A slow but live holder is never broken. Every write of the coordinator checks
its token (`Store.fencing_token`), so a coordinator that lost its lease cannot write again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Optional

from sqlmodel import Session

from ..procs import pid_alive
from .models import Lease, as_utc, utcnow
from .store import Store, emit, is_locked_error


class LeaseHeld(RuntimeError):
    """Another coordinator holds the campaign."""


def _slurm_job_running(job_id: str) -> Optional[bool]:
    """True/False when squeue can tell, None when it cannot (no Slurm here, an error)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return False if "invalid job id" in out.stderr.lower() else None
    return out.stdout.strip() in ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")


def holder_gone(lease: Lease, job_running: Callable[[str], Optional[bool]] = _slurm_job_running) -> Optional[bool]:
    """Whether the lease's holder is verifiably gone (None: cannot tell)."""
    if not lease.holder:
        return True
    if lease.slurm_job_id:
        running = job_running(lease.slurm_job_id)
        if running is not None:
            return not running
    if lease.host == socket.gethostname():
        return not pid_alive(lease.pid)
    return None


def describe(lease: Lease) -> str:
    job = f", Slurm job {lease.slurm_job_id}" if lease.slurm_job_id else ""
    beat = f", last heartbeat {lease.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if lease.heartbeat_at else ""
    return f"{lease.holder} (pid {lease.pid} on {lease.host}{job}{beat})"


#: The statement that clears a lease's holder by hand; the next coordinator then takes the lease with
#: a new fencing token, so the old holder, were it alive after all, could write nothing more.
CLEAR_HOLDER = "UPDATE lease SET holder='' WHERE id=1"


def unverifiable_line(store: Store, lease: Lease) -> str:
    """What to do about an expired lease whose holder cannot be checked from here (another host, and no
    scheduler answer about its job): the two ways the holder can be found gone."""
    return (f"{store.folder}: the lease of {describe(lease)} has expired but its holder cannot be verified "
            f"gone from {socket.gethostname()}; if it still runs, stop it. Once it is dead, run this command "
            f"on {lease.host}, where its pid can be checked, or clear the lease by hand: "
            f"sqlite3 {store.path} \"{CLEAR_HOLDER}\"")


@dataclass
class CoordinatorLease:
    store: Store
    ttl_s: float = 120.0
    job_running: Callable[[str], Optional[bool]] = _slurm_job_running
    token: int = 0

    def acquire(self) -> int:
        """Take the lease or raise `LeaseHeld` naming the holder. Returns the fencing token."""
        job_id = os.environ.get("SLURM_JOB_ID", "")
        me = f"coordinator@{socket.gethostname()}:{os.getpid()}"
        with self.store.write() as session:
            lease = session.get(Lease, 1) or Lease(id=1)
            now = utcnow()
            if lease.holder:
                expired = lease.expires_at is None or as_utc(lease.expires_at) < now
                gone = holder_gone(lease, self.job_running)
                if gone is False or (gone is None and not expired):
                    raise LeaseHeld(f"{self.store.folder}: the campaign is coordinated by {describe(lease)}; "
                                    "refusing to start a second coordinator")
                if gone is None and expired:
                    # Expired and unverifiable (another host, no scheduler answer): still refuse;
                    # breaking a slow live holder would let two coordinators write.
                    raise LeaseHeld(unverifiable_line(self.store, lease))
                emit(session, "lease.taken_over", "lease", 1, previous=describe(lease))
            lease.token += 1
            lease.holder, lease.host, lease.pid, lease.slurm_job_id = me, socket.gethostname(), os.getpid(), job_id
            lease.heartbeat_at = now
            lease.expires_at = now + timedelta(seconds=self.ttl_s)
            session.add(lease)
            emit(session, "lease.acquired", "lease", 1, holder=me, token=lease.token, slurm_job_id=job_id)
            self.token = lease.token
        self.store.fencing_token = self.token
        return self.token

    def renew(self, session: Session) -> None:
        lease = session.get(Lease, 1)
        assert lease is not None
        now = utcnow()
        lease.heartbeat_at = now
        lease.expires_at = now + timedelta(seconds=self.ttl_s)
        session.add(lease)

    def heartbeat(self) -> None:
        with self.store.write() as session:
            self.renew(session)

    def release(self) -> None:
        with self.store.write() as session:
            lease = session.get(Lease, 1)
            if lease is not None and lease.token == self.token:
                lease.holder, lease.expires_at = "", None
                session.add(lease)
                emit(session, "lease.released", "lease", 1, token=self.token)
        self.store.fencing_token = None


class Heartbeat(threading.Thread):
    """Renews the lease in the background; survives "database is locked" (retries next beat)."""

    def __init__(self, lease: CoordinatorLease, interval_s: float = 20.0) -> None:
        super().__init__(daemon=True, name="lease-heartbeat")
        self.lease, self.interval_s = lease, interval_s
        self._stop = threading.Event()
        self.beats = 0
        self.errors = 0

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.lease.heartbeat()
                self.beats += 1
            except Exception as exc:  # noqa: BLE001 - a heartbeat must never die
                self.errors += 1
                if not is_locked_error(exc):
                    continue

    def stop(self) -> None:
        self._stop.set()
