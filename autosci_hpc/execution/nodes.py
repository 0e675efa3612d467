"""Trials on several nodes: how the nodes of one trial's job find each other, through its trial folder.

A trial of `nodes` > 1 (task.yaml `nodes`) is one Slurm job of one task per node, and submitit runs the
trial's function on each (`execution.trial.run_trial`). The first node (node 0) runs the trial as on one
node: it copies the program, runs the training step, checks integrity, runs the sealed evaluator and
writes the result. Once the program's working copy is ready, before its own training step, it writes the
rendezvous file into the trial folder (atomically): its host name and a free port, where the ranks of
every node meet (MASTER_ADDR, MASTER_PORT), and the job run it belongs to. Each other node waits for that
file, then runs only its ranks of the training step, in the same sandbox, on the same working copy (the
trial folder is on the filesystem every node shares); it never runs the evaluator, never writes a result.

The trial folder is writable by trial code, so everything read here is hostile: read capped, without
following links, validated; a file that is missing, partial, garbled or another run's is waited past,
never crashed on. A node that cannot do its part leaves a failure note (`node-<k>.failed`), which stops
the first node's training step at once instead of letting its ranks wait for a node that never comes.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Mapping, Optional

from pydantic import BaseModel, ValidationError

from ..files import atomic_write_text

RENDEZVOUS_FILE = "rendezvous.json"
#: The largest rendezvous (or failure note) read: a few hundred bytes are written.
MAX_BYTES = 4096
#: A host name or address as MASTER_ADDR may hold it (letters, digits, '.', '-', '_', ':' for IPv6).
HOST_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}")


class Rendezvous(BaseModel):
    """Where the ranks of one run of a trial's job meet: the first node's host and a port it chose."""

    host: str
    port: int
    #: The job run it belongs to (`job_run`): a file left by an earlier run in the same folder never
    #: answers for this one.
    job: str
    trial_id: int
    attempt: int


def node_rank(environ: Optional[Mapping[str, str]] = None) -> int:
    """This node's index in its trial's job: the srun task's rank (one task per node, so the node's index;
    submitit's `global_rank`), else SLURM_NODEID; 0 outside Slurm or where neither is a number."""
    env = os.environ if environ is None else environ
    for name in ("SLURM_PROCID", "SLURM_NODEID"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def job_run(environ: Optional[Mapping[str, str]] = None) -> str:
    """Which run of which job this is, the same on every node of it: the job id (an array task's own) and
    the number of times Slurm restarted it (a requeued job runs again, in the same trial folder)."""
    env = os.environ if environ is None else environ
    return f"{env.get('SLURM_JOB_ID', '')}.{env.get('SLURM_RESTART_COUNT', '0') or '0'}"


def free_port() -> int:
    """A TCP port free on every address of this host now (the first rank binds it shortly after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def here(trial_id: int, attempt: int) -> Rendezvous:
    """The first node's rendezvous for this run of its trial's job: this host, a port free on it now."""
    return Rendezvous(host=socket.gethostname(), port=free_port(), job=job_run(), trial_id=trial_id,
                      attempt=attempt)


def write_rendezvous(folder: Path, rendezvous: Rendezvous) -> None:
    """The first node's rendezvous, written atomically (temp file + rename: a reader sees all or nothing)."""
    atomic_write_text(Path(folder) / RENDEZVOUS_FILE, rendezvous.model_dump_json())


def clear(folder: Path) -> None:
    """Remove an earlier run's rendezvous and failure notes (the first node, before it writes its own)."""
    for path in [Path(folder) / RENDEZVOUS_FILE, *Path(folder).glob("node-*.failed")]:
        try:
            path.unlink()
        except OSError:
            pass


def _read_small(path: Path) -> bytes:
    """At most MAX_BYTES + 1 bytes of `path`, never through a link; OSError if absent or unreadable."""
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as handle:
        return handle.read(MAX_BYTES + 1)


def read_rendezvous(folder: Path, job: str, trial_id: int, attempt: int) -> tuple[Optional[Rendezvous], str]:
    """(this run's rendezvous, "") once the first node wrote it; (None, why not yet) otherwise. Never raises:
    a missing, oversized, truncated or garbled file, or another run's, is one to wait past."""
    path = Path(folder) / RENDEZVOUS_FILE
    try:
        raw = _read_small(path)
    except FileNotFoundError:
        return None, f"no {RENDEZVOUS_FILE} yet"
    except OSError as exc:
        return None, f"{RENDEZVOUS_FILE} is unreadable: {exc.strerror or exc}"
    if len(raw) > MAX_BYTES:
        return None, f"{RENDEZVOUS_FILE} is over {MAX_BYTES} bytes"
    try:
        found = Rendezvous.model_validate(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, ValidationError):
        return None, f"{RENDEZVOUS_FILE} is not a rendezvous record"
    if (found.job, found.trial_id, found.attempt) != (job, trial_id, attempt):
        return None, f"{RENDEZVOUS_FILE} is another run's (job {found.job[:40]!r})"
    if not HOST_PATTERN.fullmatch(found.host) or not 0 < found.port < 65536:
        return None, f"{RENDEZVOUS_FILE} names no usable host and port"
    return found, ""


def fail_note(folder: Path, node: int, job: str, reason: str) -> None:
    """Node `node` could not do its part of this run: say so where the first node looks (best effort)."""
    try:
        note = json.dumps({"job": job, "reason": reason[:500]})
        atomic_write_text(Path(folder) / f"node-{node}.failed", note)
    except OSError:
        pass


def failed_node(folder: Path, job: str) -> str:
    """Why another node of this run could not do its part ("" while none has said so)."""
    for path in sorted(Path(folder).glob("node-*.failed")):
        try:
            note = json.loads(_read_small(path)[:MAX_BYTES].decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(note, dict) and note.get("job") == job and isinstance(note.get("reason"), str):
            name = path.name.removesuffix(".failed").replace("-", " ")
            return f"{name} of the trial: {note['reason'][:500]}"
    return ""


def mark_done(path: Path) -> None:
    """A new file at `path` (best effort): what a smoke run's other nodes wait for instead of a result."""
    try:
        atomic_write_text(path, "")
    except OSError:
        pass


def result_mark(path: Path) -> Optional[tuple[int, int]]:
    """Which file `path` is now (inode, modification time), None if none: the first node's result file is
    new when this changes (it is written by rename, so a new file is a new inode)."""
    try:
        stat = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns
