"""The Store: transactions, concurrency with real processes, journal modes, permissions, forks."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel, func, select

from autosci_hpc.state import Store, emit
from autosci_hpc.state import migrations, models
from autosci_hpc.state.filesystem import is_network, journal_mode_for, mount_of, parse_mounts
from autosci_hpc.state.models import Campaign, Event, SchemaInfo
from autosci_hpc.state.store import ForkedStoreError

from helpers import record_schema_version

WRITERS = 16
WRITES = 200


def _new_campaign(store: Store) -> None:
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(store.folder), task_name="t", mode="decentralized"))


def _writer(folder: str, journal: str, worker: int) -> None:
    store = Store(folder, journal_mode=journal, busy_timeout_s=30)
    for i in range(WRITES):
        with store.write() as session:
            # A read-modify-write of one counter: a lost update would show in the total.
            campaign = session.exec(select(Campaign)).one()
            campaign.trials_finished += 1
            session.add(campaign)
            emit(session, "test.write", "worker", worker, i=i)


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sixteen_processes_lose_no_write(tmp_path: Path, journal: str) -> None:
    store = Store(tmp_path, journal_mode=journal)
    _new_campaign(store)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), journal, w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    with store.read() as session:
        events = session.exec(select(func.count()).select_from(Event).where(Event.kind == "test.write")).one()
        counter = session.exec(select(Campaign)).one().trials_finished
    assert events == WRITERS * WRITES
    assert counter == WRITERS * WRITES
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == journal


MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,vers=4.2 0 0
10.0.0.1@o2ib:/scratch /scratch lustre rw 0 0
gpfs0 /gpfs gpfs rw 0 0
sshfs#me@host: /mnt/remote fuse.sshfs rw 0 0
tmpfs /home/me/local\\040disk tmpfs rw 0 0
"""


@pytest.mark.parametrize("path,mode", [
    ("/home/me/campaign", "delete"),
    ("/scratch/me/c", "delete"),
    ("/gpfs/projects/c", "delete"),
    ("/mnt/remote/c", "delete"),
    ("/tmp/c", "wal"),
    ("/home/me/local disk/c", "wal"),
])
def test_journal_mode_follows_the_mount_table(path: str, mode: str) -> None:
    # These paths exist only in the table: the lookup, then the product's own classification of the
    # filesystem found (a copy that took Lustre, GPFS or FUSE for a local disk fails here).
    found = mount_of(Path(path), parse_mounts(MOUNTS))
    assert found is not None
    assert ("delete" if is_network(found.fstype) else "wal") == mode


def test_journal_mode_auto_override_and_unknown(tmp_path: Path) -> None:
    local = tmp_path / "mounts"
    local.write_text("/dev/vda1 / ext4 rw 0 0\n")
    assert journal_mode_for(tmp_path, "auto", local) == "wal"
    nfs = tmp_path / "nfs-mounts"
    nfs.write_text(f"/dev/vda1 / ext4 rw 0 0\nsrv:/x {tmp_path} nfs rw 0 0\n")
    assert journal_mode_for(tmp_path / "campaign", "auto", nfs) == "delete"
    assert journal_mode_for(tmp_path, "wal", nfs) == "wal"  # the config key wins
    assert journal_mode_for(tmp_path, "auto", tmp_path / "missing") == "delete"  # unknown: the safe choice


def test_campaign_folder_is_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def _use_in_child(store: Store, queue: "mp.Queue[str]") -> None:
    try:
        with store.read():
            queue.put("used")
    except ForkedStoreError as exc:
        queue.put(f"refused: {exc}")


def test_a_store_never_crosses_a_fork(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ctx = mp.get_context("fork")
    queue: "mp.Queue[str]" = ctx.Queue()
    proc = ctx.Process(target=_use_in_child, args=(store, queue))
    proc.start()
    proc.join(30)
    answer = queue.get(timeout=5)
    assert answer.startswith("refused"), answer
    with store.read():  # the parent's store still works
        pass


def _hold_write_lock(path: str, seconds: float, ready: "mp.Event") -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    ready.set()
    time.sleep(seconds)
    conn.execute("COMMIT")


def test_write_retries_past_a_held_lock_then_gives_up_when_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path, journal_mode="delete", busy_timeout_s=0.2, max_retries=8)
    _new_campaign(store)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_write_lock, args=(str(store.path), 1.5, ready))
    holder.start()
    assert ready.wait(30)
    with store.write() as session:  # busy timeout (0.2 s) runs out several times; retries carry it
        emit(session, "after.lock")
    holder.join(10)
    impatient = Store(tmp_path, journal_mode="delete", busy_timeout_s=0.1, max_retries=0)
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_write_lock, args=(str(store.path), 1.0, ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(OperationalError, match="locked"):
        with impatient.write() as session:
            emit(session, "never")
    holder.join(10)
    with store.read() as session:
        kinds = [e.kind for e in session.exec(select(Event)).all()]
    assert "after.lock" in kinds and "never" not in kinds


def test_schema_version_recorded_migrated_and_newer_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    current = models.SCHEMA_VERSION
    with store.read() as session:
        assert session.exec(select(SchemaInfo)).one().version == current
    seen = []
    monkeypatch.setitem(migrations.MIGRATIONS, current, lambda session: seen.append(f"{current}->{current + 1}"))
    with store.write() as session:
        assert migrations.migrate(session, target=current + 1) == current
    assert seen == [f"{current}->{current + 1}"]
    with store.write() as session:
        record_schema_version(session, 99)
    with pytest.raises(migrations.SchemaError, match="newer"):
        Store(tmp_path)


@pytest.mark.parametrize("read_only", [True, False])
def test_a_database_it_cannot_read_is_refused_in_one_line_and_left_as_it_was(tmp_path: Path,
                                                                            read_only: bool) -> None:
    """Garbage, another program's SQLite file, and a newer autosci_hpc's database: opening one (to read
    it, or to resume a campaign in it) raises one line naming the file, and leaves its bytes alone."""
    from autosci_hpc.state.store import StoreError

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "state.db").write_bytes(b"not a database at all, " * 40)
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "state.db")
    con.execute("create table notes (text)")
    con.commit()
    con.close()
    newer = tmp_path / "newer"
    with Store(newer).write() as session:
        record_schema_version(session, models.SCHEMA_VERSION + 1)
    for folder, error, says in ((garbage, StoreError, "not a campaign database (file is not a database)"),
                                (other, StoreError, "not a campaign database (an SQLite file without"),
                                (newer, migrations.SchemaError, "newer than this autosci_hpc")):
        before = (folder / "state.db").read_bytes()
        with pytest.raises(error) as info:
            Store(folder, read_only=read_only, create=False)
        assert str(info.value).startswith(f"{folder / 'state.db'}: ") and says in str(info.value)
        assert "\n" not in str(info.value)
        assert (folder / "state.db").read_bytes() == before


def test_a_version_1_database_gets_the_provenance_columns(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.write() as session:
        # The two tables as version 1 wrote them: without the provenance columns.
        conn = session.connection()
        old = MetaData()
        for name, added in (("trial", {"parent_champion_id", "diff", "notes"}), ("champion", {"diff"})):
            conn.exec_driver_sql(f"DROP TABLE {name}")
            Table(name, old, *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                               for c in SQLModel.metadata.tables[name].columns if c.name not in added])
        old.create_all(conn)
        record_schema_version(session, 1)
    reopened = Store(tmp_path)
    with reopened.write() as session:
        assert session.exec(select(SchemaInfo)).one().version == models.SCHEMA_VERSION
        columns = {row[1] for row in session.connection().exec_driver_sql("PRAGMA table_info(trial)")}
        session.add(models.Trial(role="candidate", group="p1", snapshot_id="s", config_signature="s|", seed=0,
                                 diff="--- a\n+++ b\n", notes="n"))
    assert {"parent_champion_id", "diff", "notes"} <= columns
    with reopened.read() as session:
        assert session.exec(select(models.Trial)).one().diff == "--- a\n+++ b\n"


def test_a_version_4_database_keeps_one_run_conditions_record(tmp_path: Path) -> None:
    """Version 4 kept the executor's placement and the node's host, devices and GPU names in a trial's
    environment, and a copy of its conditions there too: they move into the `conditions` column (the
    old launch-time count is dropped), leave the environment, and the GPU-hours still count what each
    trial was charged with."""
    from autosci_hpc.config import load_config
    from autosci_hpc.state.budget import gpu_hours_used

    store = Store(tmp_path)
    environments = [
        {"python": "3.11", "host": "node1", "cuda_visible_devices": "1", "slurm_gpus": "", "gpu": ["H200", "H200"],
         "placement": {"executor": "local", "slot": 5, "devices": "1", "share": 4, "gpus": 0.25, "ranks": 1,
                       "ballast": False},
         "conditions": {"host": "node1", "devices": "1", "gpu": ["H200"], "shared": 2}},
        {"python": "3.11", "host": "node2"},  # from before placements were recorded
        "not an object",
    ]
    stored = [{"host": "node1", "devices": "1", "gpu": ["H200"], "shared": 2}, {}, {}]
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="t", mode="single"))
        for i, (environment, conditions) in enumerate(zip(environments, stored)):
            session.add(models.Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"{i}",
                                     seed=0, status="succeeded", duration_s=3600.0, conditions=conditions,
                                     environment=environment if isinstance(environment, dict) else {}))
        session.flush()
        session.connection().exec_driver_sql("UPDATE trial SET environment = '\"not an object\"' WHERE id = 3")
        record_schema_version(session, 4)
    reopened = Store(tmp_path)
    with reopened.read() as session:
        assert session.exec(select(SchemaInfo)).one().version == models.SCHEMA_VERSION
        trials = session.exec(select(models.Trial).order_by(models.Trial.id)).all()
        used = gpu_hours_used(session, load_config(None, ["task.gpus=1"]))
    assert trials[0].conditions == {"host": "node1", "devices": "1", "slurm_gpus": "", "gpu": ["H200"],
                                    "executor": "local", "slot": 5, "share": 4, "gpus": 0.25, "ranks": 1,
                                    "ballast": False}
    assert trials[0].environment == {"python": "3.11"}
    assert trials[1].conditions == {"host": "node2"} and trials[1].environment == {"python": "3.11"}
    assert trials[2].conditions == {} and trials[2].environment == {}
    assert used == pytest.approx(0.25 + 1.0 + 1.0)  # the two without a placement: the config's whole GPU


def test_a_failed_block_rolls_back_whole(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.write() as session:
            emit(session, "half")
            raise RuntimeError("boom")
    with store.read() as session:
        assert session.exec(select(Event).where(Event.kind == "half")).first() is None
    assert os.path.exists(store.path)
