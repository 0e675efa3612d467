"""Agents as OS processes, and their supervision.

Each agent runs `agent_main` in its own process, started with the *spawn* method (never forked
with a database connection): it opens its own `Store`, builds its policy, and loops on its role's
`step()` until the campaign stops accepting work or ends. It beats a heartbeat into its agent row.
The coordinator's `Supervisor` restarts an agent whose process died or whose heartbeat went
silent past the timeout; its memory is in the database, and any proposal it had claimed but not
launched goes back to its team's queue.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from .. import faults
from ..state import Store, emit
from ..state import agents as agent_rows
from ..state.lifecycle import CampaignStatus, ProposalStatus
from ..state.models import Agent, Campaign, Proposal, as_utc, utcnow
from .modes import make_agent, release

HEARTBEAT_EVERY_S = 1.0


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the coordinator dies, so no agent outlives it (prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


def agent_main(folder: str, config_json: str, agent_id: int, poll_s: float, coordinator_pid: int,
               capacity: int) -> None:
    """The whole life of one agent process. It ends with its coordinator: through the parent-death
    signal, and — should the coordinator have died before that was armed — by checking its parent.
    `capacity` is the coordinator's executor's: the agent counts free slots against the same figure."""
    _die_with_parent()
    if os.getppid() != coordinator_pid:
        return
    from ..agents.roles import Context
    from ..config import CampaignConfig
    from ..layout import CampaignLayout
    from ..policies import fallback_policy, make_policy
    from ..task import TaskSpec

    config = CampaignConfig.model_validate_json(config_json)
    store = Store(folder, journal_mode=config.state.journal_mode, busy_timeout_s=config.state.busy_timeout_s,
                  create=False)
    task = TaskSpec.model_validate_json(CampaignLayout(Path(folder)).task_spec.read_text())
    def beat() -> None:
        with store.write() as session:
            row = session.get(Agent, agent_id)
            if row is not None:
                row.heartbeat_at = utcnow()
                session.add(row)

    # The policy beats around every model request too: a long conversation is alive while it talks.
    ctx = Context(store, task, make_policy(config, store, task=task, heartbeat=beat), config, capacity,
                  fallback=fallback_policy(config))
    with store.read() as session:
        row = session.get(Agent, agent_id)
        assert row is not None
        role = row.role
    agent = make_agent(ctx, agent_id, role)
    last_beat = 0.0
    while os.getppid() == coordinator_pid:
        campaign = store.campaign()
        if campaign.status in (CampaignStatus.FINISHED, CampaignStatus.FAILED) or not campaign.accepting_work:
            return
        now = time.monotonic()
        if now - last_beat >= HEARTBEAT_EVERY_S:
            beat()
            last_beat = now
        faults.point("agent_step")
        if not agent.step():
            time.sleep(poll_s)


@dataclass
class Supervisor:
    store: Store
    config_json: str
    agent_ids: list[int]
    #: The executor's capacity, handed to every agent process (`agent_main`).
    capacity: int
    poll_s: float = 0.2
    #: A heartbeat older than this means a hung agent (an LLM call can take minutes).
    timeout_s: float = 600.0
    #: A new process gets this long to import, connect and beat for the first time.
    startup_grace_s: float = 60.0
    processes: dict[int, Any] = field(default_factory=dict)
    spawned_at: dict[int, Any] = field(default_factory=dict)
    restarts: int = 0

    def _spawn(self, agent_id: int) -> None:
        proc = mp.get_context("spawn").Process(
            target=agent_main,
            args=(str(self.store.folder), self.config_json, agent_id, self.poll_s, os.getpid(), self.capacity),
            name=f"autosci-agent-{agent_id}", daemon=False)
        proc.start()
        self.processes[agent_id] = proc
        self.spawned_at[agent_id] = utcnow()
        with self.store.write() as session:
            emit(session, "agent.started", "agent", agent_id, pid=proc.pid, coordinator_pid=os.getpid())

    def start(self) -> None:
        with self.store.write() as session:  # a fresh heartbeat, so start-up is not taken for a hang
            for agent_id in self.agent_ids:
                row = session.get(Agent, agent_id)
                assert row is not None
                row.heartbeat_at = utcnow()
                session.add(row)
        for agent_id in self.agent_ids:
            self._spawn(agent_id)

    def check(self) -> list[int]:
        """Restart dead or hung agents; returns their ids."""
        restarted = []
        now = utcnow()
        with self.store.read() as session:
            beats = {a.id: a.heartbeat_at for a in session.exec(select(Agent)).all()}
            accepting = session.exec(select(Campaign)).one().accepting_work
        if not accepting:
            return restarted
        for agent_id, proc in list(self.processes.items()):
            beat = beats.get(agent_id)
            beat = as_utc(beat) if beat is not None else None
            spawned = self.spawned_at[agent_id]
            started = beat is not None and beat > spawned  # it has beaten since it was (re)started
            silent = now - (beat if started and beat is not None else spawned)
            hung = silent > timedelta(seconds=self.timeout_s if started else max(self.timeout_s,
                                                                               self.startup_grace_s))
            if proc.is_alive() and not hung:
                continue
            self._restart(agent_id, "hung (no heartbeat)" if proc.is_alive() else f"died (exit {proc.exitcode})")
            restarted.append(agent_id)
        return restarted

    def restart_all(self, why: str) -> None:
        """Stop every agent and start it again (with the current `config_json`)."""
        for agent_id in list(self.processes):
            self._restart(agent_id, why)

    def _restart(self, agent_id: int, why: str) -> None:
        proc = self.processes[agent_id]
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        self._release(agent_id, why)
        self._spawn(agent_id)
        self.restarts += 1

    def _release(self, agent_id: int, why: str) -> None:
        """Return what the agent had claimed but not launched; keep its memory; record the restart."""
        with self.store.write() as session:
            claimed = session.exec(select(Proposal).where(Proposal.claimed_by == agent_id)
                                   .where(Proposal.status == ProposalStatus.CLAIMED)).all()
            for proposal in claimed:
                release(proposal)
                session.add(proposal)
            row = session.get(Agent, agent_id)
            assert row is not None
            launched = (ProposalStatus.RUNNING, ProposalStatus.REPLICATING)
            if not session.exec(select(Proposal).where(Proposal.claimed_by == agent_id)
                                .where(col(Proposal.status).in_(launched))).first():
                agent_rows.idle(session, row)
            row.heartbeat_at = utcnow()
            session.add(row)
            emit(session, "agent.restarted", "agent", agent_id, why=why,
                 released_claims=[p.id for p in claimed])

    def stop(self, timeout_s: float = 30.0) -> None:
        """Agents see `accepting_work` off and leave after their current step; stragglers are killed."""
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.processes.values():
            if proc.is_alive():
                proc.kill()
                proc.join(5)
