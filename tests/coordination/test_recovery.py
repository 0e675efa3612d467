"""Crash recovery of the long-lived coordinator: kill -9 at chosen points, leases, locks, resume."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from autosci_hpc.state import Store
from autosci_hpc.state.lease import CoordinatorLease, Heartbeat, LeaseHeld
from autosci_hpc.state.models import Lease
from autosci_hpc.state.store import LeaseLost
from helpers import FIXTURE_TASKS, ROOT

CONFIG = ROOT / "configs" / "campaign" / "toy_smoke.yaml"


def coordinate(folder: Path, *extra: str, fault: str = "", marker: str = "",
               timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOSCI_FAULT": fault} if fault else dict(os.environ)
    if marker:
        env["AUTOSCI_FAULT_MARKER"] = marker
    env.pop("SLURM_JOB_ID", None)
    return subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "coordinate", str(CONFIG),
                           f"campaign.folder={folder}", f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=12",
                           "coordination.poll_interval_s=0.1", *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def executions(folder: Path) -> dict[int, int]:
    """Jobs really launched per trial, from the executor's job folders (benchmarks/kill_restart.py)."""
    spec = importlib.util.spec_from_file_location("kill_restart", ROOT / "benchmarks" / "kill_restart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.executions(folder)


def check_consistent(folder: Path) -> sqlite3.Connection:
    con = sqlite3.connect(folder / "state.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    submitted, finished, status = con.execute(
        "select trials_submitted, trials_finished, status from campaign").fetchone()
    rows = con.execute("select count(*) from trial").fetchone()[0]
    assert status == "finished" and submitted == rows == finished
    # Each trial ran exactly once: counted from the jobs launched, not from rows or events.
    ran = executions(folder)
    assert sorted(ran) == [r[0] for r in con.execute("select id from trial order by id")], ran
    assert set(ran.values()) == {1}, ran
    # Every trial was submitted once and ingested once (one event each), and no (group, seed,
    # attempt) exists twice.
    assert con.execute("select max(n) from (select count(*) n from event where kind='trial.submitted' "
                       "group by entity_id)").fetchone()[0] == 1
    assert con.execute("select max(n) from (select count(*) n from event where kind in "
                       "('trial.succeeded','trial.failed') group by entity_id)").fetchone()[0] == 1
    assert con.execute("select max(n) from (select count(*) n from trial group by \"group\", seed, attempt)"
                       ).fetchone()[0] == 1
    return con


@pytest.mark.parametrize("fault", ["ingest:3", "claimed:2", "submit:4", "submitted:2"])
def test_kill_9_at_a_fault_point_then_resume_loses_and_doubles_nothing(tmp_path: Path, fault: str) -> None:
    folder = tmp_path / "campaign"
    crashed = coordinate(folder, "--inline-agents", fault=fault)
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr  # it really died there
    resumed = coordinate(folder)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(resumed)" in resumed.stdout
    con = check_consistent(folder)
    assert con.execute("select restarts from campaign").fetchone()[0] == 1
    assert con.execute("select count(*) from proposal where status='claimed'").fetchone()[0] == 0
    if fault.startswith("claimed"):
        released = con.execute("select data from event where kind='campaign.resumed'").fetchone()[0]
        assert '"released_claims": [' in released and '"released_claims": []' not in released
    if fault.startswith("submit"):  # died with a batch recorded as submitting: matched, not resubmitted
        found, ready = con.execute("select json_extract(data, '$.found'), json_extract(data, '$.ready_again') "
                                   "from event where kind='trials.reconciled'").fetchone()
        if fault.startswith("submitted"):  # sbatch had returned: every job of the batch is found
            assert found != "{}" and ready == "[]", (found, ready)
        else:  # it died before submitting: nothing to find, the batch is simply submitted now
            assert found == "{}" and ready != "[]", (found, ready)


def test_a_crash_between_sbatch_and_its_commit_submits_nothing_twice_on_slurm(tmp_path: Path, fake_slurm) -> None:
    """The same gap on the SLURM executor, against the fake scheduler: the restarted coordinator finds
    the array by its job name (squeue/sacct) and records it; sbatch ran once per batch, each trial once."""
    folder = tmp_path / "campaign"
    slurm = ["executor.kind=slurm", "executor.slurm.time_min=5", "executor.slurm.max_concurrent=4"]
    crashed = coordinate(folder, *slurm, "--inline-agents", fault="submitted:2")
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    resumed = coordinate(folder, *slurm)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    con = check_consistent(folder)
    found = con.execute("select json_extract(data, '$.found') from event where kind='trials.reconciled'").fetchone()[0]
    assert found != "{}"
    arrays = {row[0].split("_")[0] for row in con.execute("select job_id from trial")}
    assert len(fake_slurm.submissions()) == len(arrays)  # one sbatch per array, none repeated
    assert sum(s["tasks"] for s in fake_slurm.submissions()) == con.execute("select count(*) from trial").fetchone()[0]


def test_a_second_coordinator_is_refused_naming_the_holder(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    CoordinatorLease(store).acquire()
    other = Store(tmp_path / "c")
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        CoordinatorLease(other).acquire()


def _hold_lease_and_exit(folder: str) -> None:
    CoordinatorLease(Store(folder)).acquire()
    os._exit(0)  # dies holding it, as after kill -9


def _move_holder_elsewhere(store: Store) -> None:
    """The holder now looks like a coordinator on another node, in Slurm job 4242, its heartbeat expired."""
    with store.write() as session:
        row = session.get(Lease, 1)
        assert row is not None
        row.host, row.pid, row.slurm_job_id = "elsewhere", 1, "4242"
        row.expires_at = row.heartbeat_at
        session.add(row)


def test_a_stale_lease_is_taken_over_only_when_its_holder_is_gone(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    Store(folder)
    proc = mp.get_context("spawn").Process(target=_hold_lease_and_exit, args=(str(folder),))
    proc.start()
    proc.join(30)
    store = Store(folder)
    lease = CoordinatorLease(store, ttl_s=600)
    assert lease.acquire() == 2  # the holder's pid is dead on this host: taken over, token grows
    # A holder on another host whose Slurm job still runs: refused even after expiry.
    _move_holder_elsewhere(store)
    store.fencing_token = None
    with pytest.raises(LeaseHeld, match="Slurm job 4242"):
        CoordinatorLease(store, job_running=lambda job: True).acquire()
    with pytest.raises(LeaseHeld, match="cannot be verified"):
        CoordinatorLease(store, job_running=lambda job: None).acquire()
    assert CoordinatorLease(store, job_running=lambda job: False).acquire() == 3


def test_an_unverifiable_holder_is_refused_with_steps_that_free_the_campaign(tmp_path: Path) -> None:
    old = Store(tmp_path / "c")
    CoordinatorLease(old).acquire()
    _move_holder_elsewhere(old)
    new = Store(tmp_path / "c")
    with pytest.raises(LeaseHeld) as refused:
        CoordinatorLease(new, job_running=lambda job: None).acquire()  # the scheduler does not answer
    line = str(refused.value)
    assert "\n" not in line and socket.gethostname() in line
    assert "run this command on elsewhere, where its pid can be checked" in line
    command = shlex.split(re.search(r"sqlite3 .*$", line).group(0))  # type: ignore[union-attr]
    assert command[:2] == ["sqlite3", str(new.path)]
    with sqlite3.connect(command[1]) as con:  # what the operator types, once the holder is known dead
        con.execute(command[2])
    assert CoordinatorLease(new, job_running=lambda job: None).acquire() == 2
    with pytest.raises(LeaseLost):  # the old holder, were it alive after all, writes nothing more
        with old.write() as session:
            session.add(Lease(id=99))


def test_a_coordinator_that_lost_its_lease_cannot_write(tmp_path: Path) -> None:
    old = Store(tmp_path / "c")
    CoordinatorLease(old).acquire()
    new = Store(tmp_path / "c")
    with new.write() as session:  # an operator broke the lease; the new coordinator took it
        row = session.get(Lease, 1)
        assert row is not None
        row.holder = ""
        session.add(row)
    CoordinatorLease(new).acquire()
    with pytest.raises(LeaseLost):
        with old.write() as session:
            session.add(Lease(id=99))


def _hold_write_lock(path: str, seconds: float, ready: "mp.Event") -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    ready.set()
    time.sleep(seconds)
    conn.execute("COMMIT")


def test_the_heartbeat_survives_a_database_locked_past_its_timeout(tmp_path: Path) -> None:
    store = Store(tmp_path / "c", busy_timeout_s=0.1, max_retries=0, journal_mode="delete")
    lease = CoordinatorLease(store, ttl_s=60)
    lease.acquire()
    beat = Heartbeat(lease, interval_s=0.2)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_write_lock, args=(str(store.path), 1.5, ready))
    holder.start()
    assert ready.wait(30)
    beat.start()
    holder.join(30)
    time.sleep(1.0)
    beat.stop()
    assert beat.errors >= 1 and beat.beats >= 1  # it hit the lock, and kept beating after it
    with store.read() as session:
        row = session.exec(select(Lease)).one()
    assert row.holder and row.token == lease.token


def test_disk_full_while_writing_a_result_fails_clearly_and_corrupts_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from autosci_hpc import files
    from autosci_hpc.execution import results
    from autosci_hpc.execution.trial import run_trial, task_request
    from autosci_hpc.task import load_task

    task = load_task(FIXTURE_TASKS / "toy")
    request = task_request(task, tmp_path / "campaign", trial_id=5, folder=tmp_path / "t",
                           snapshot_dir=task.program_dir, overrides={"x": 0.5}, seed=0, time_limit_s=30)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="could not write .*result.json: No space left"):
        run_trial(request)
    folder = Path(request.folder)
    assert not (folder / results.RESULT_FILE).exists()  # no partial result a reader could take
    assert not list(folder.glob(".result.json.*.tmp"))  # and no litter


def test_an_agent_process_killed_after_its_claim_is_restarted_and_the_claim_requeued(tmp_path: Path) -> None:
    folder = tmp_path / "campaign"
    marker = tmp_path / "fired"
    done = coordinate(folder, fault="claimed:1", marker=str(marker))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "claimed in pid" in marker.read_text()  # an experimenter process really died there
    con = check_consistent(folder)
    why, released = con.execute("select json_extract(data, '$.why'), json_extract(data, '$.released_claims') "
                                "from event where kind='agent.restarted'").fetchone()
    assert why.startswith("died") and released != "[]"
    assert con.execute("select count(*) from proposal where status='claimed'").fetchone()[0] == 0


def test_a_hung_agent_process_is_killed_and_restarted(tmp_path: Path) -> None:
    folder = tmp_path / "campaign"
    marker = tmp_path / "fired"
    done = coordinate(folder, "coordination.agent_timeout_s=3", fault="agent_step:5:hang", marker=str(marker))
    assert done.returncode == 0, done.stdout + done.stderr
    con = check_consistent(folder)
    whys = [row[0] for row in con.execute("select json_extract(data, '$.why') from event "
                                          "where kind='agent.restarted'")]
    assert any(w.startswith("hung") for w in whys), whys


def test_a_walltime_warning_stops_saves_and_requeues_then_the_campaign_resumes(tmp_path: Path, fake_slurm) -> None:
    """What Slurm's `--signal=B:USR1@300` does to `autosci coordinate` in its job, without a cluster:
    SIGUSR1 once the campaign is under way; the coordinator stops taking work, saves, releases its
    lease and requeues its own job with `scontrol requeue` (the fake records it); the next start
    resumes and finishes with nothing lost or doubled."""
    folder = tmp_path / "campaign"
    env = {**os.environ, "SLURM_JOB_ID": "4242"}
    proc = subprocess.Popen([sys.executable, "-m", "autosci_hpc.cli", "coordinate", str(CONFIG),
                             f"campaign.folder={folder}", f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=12",
                             "coordination.poll_interval_s=0.1", "--inline-agents"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while True:  # wait for the state it needs: this process coordinates a campaign past its baseline
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        try:
            con = sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True, timeout=5)
            status = con.execute("select status from campaign").fetchone()
            holder = con.execute("select pid from lease where holder != ''").fetchone()
            con.close()
        except sqlite3.Error:
            status = holder = None
        if status and status[0] == "execution" and holder and holder[0] == proc.pid:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "coordinator stopped (SIGUSR1)" in out and "scontrol requeue 4242: ok" in out
    assert fake_slurm.state()["requeued"] == ["4242"]
    con = sqlite3.connect(folder / "state.db")
    assert con.execute("select holder from lease").fetchone()[0] == ""  # released for the requeued job
    assert con.execute("select status, accepting_work from campaign").fetchone() == ("execution", 0)
    kinds = [k for (k,) in con.execute("select kind from event where kind like 'campaign.%' order by id")]
    assert kinds[-2:] == ["campaign.stopped", "campaign.requeued"]
    resumed = coordinate(folder)
    assert resumed.returncode == 0 and "(resumed)" in resumed.stdout, resumed.stdout + resumed.stderr
    check_consistent(folder)
