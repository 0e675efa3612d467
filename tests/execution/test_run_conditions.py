"""Run conditions: every trial records its host, its devices and how many trials shared its slot at
launch (from the trial runner's markers), old databases get the column, and a comparison across
different conditions is told apart from one under the same."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from sqlalchemy import Column, MetaData, Table
from sqlmodel import SQLModel, select

from autosci_hpc.execution import conditions
from autosci_hpc.execution.results import read_result
from autosci_hpc.execution.trial import run_trial, task_request
from autosci_hpc.state import Store, models
from autosci_hpc.state.models import SchemaInfo
from autosci_hpc.task import load_task

TOY = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "toy"


def test_trials_count_who_shares_their_slot_at_launch(tmp_path: Path) -> None:
    first = conditions.enter(tmp_path, 1, 0, lifetime_s=60)
    assert first["shared"] == 1 and first["host"] == socket.gethostname()
    marker = next((tmp_path / conditions.RUNNING).iterdir())
    second = conditions.enter(tmp_path, 2, 0, lifetime_s=60)  # trial 1 is still running
    assert second["shared"] == 2
    conditions.leave()  # trial 2 is done; trial 1's marker stays
    assert conditions.enter(tmp_path, 3, 0, lifetime_s=60)["shared"] == 2
    conditions.leave()
    # A marker older than a trial can live (its job was killed) no longer counts.
    old = time.time() - 120
    os.utime(marker, (old, old))
    assert conditions.enter(tmp_path, 4, 0, lifetime_s=60)["shared"] == 1
    conditions.leave()


def test_a_trial_result_carries_its_conditions_and_clears_its_marker(tmp_path: Path) -> None:
    task = load_task(TOY)
    req = task_request(task, tmp_path / "campaign", trial_id=7, folder=tmp_path / "trials" / "t7",
                       snapshot_dir=task.program_dir, overrides={}, seed=0, time_limit_s=20)
    run_trial(req)
    result = read_result(Path(req.folder), 7)
    assert result is not None and result.status == "succeeded"
    recorded = result.environment["conditions"]
    assert recorded["host"] == socket.gethostname() and recorded["shared"] == 1
    assert list((tmp_path / "trials" / conditions.RUNNING).iterdir()) == []


def test_differences_in_conditions_are_named() -> None:
    alone = {"host": "n1", "gpu": ["H200"], "shared": 1}
    assert conditions.differ([alone, alone], [alone]) is None
    assert conditions.differ([alone], [{**alone, "shared": 4}]) == "trials sharing the slot 1 vs 4"
    assert conditions.differ([alone], [{**alone, "host": "n2", "gpu": ["A100"]}]) == "host n1 vs n2; GPU H200 vs A100"
    assert conditions.differ([alone], [{}]) is None  # not recorded (a database from before): no claim
    # Hostile values never crash the comparison.
    assert conditions.key_of({"host": 3, "gpu": "x", "shared": "many"}) == ("3", "x", 0)
    assert conditions.describe({}) == "not recorded"


def test_a_version_3_database_gets_the_conditions_column(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.write() as session:
        conn = session.connection()
        old = MetaData()
        conn.exec_driver_sql("DROP TABLE trial")
        Table("trial", old, *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                              for c in SQLModel.metadata.tables["trial"].columns if c.name != "conditions"])
        old.create_all(conn)
        conn.exec_driver_sql("INSERT INTO trial (role, \"group\", snapshot_id, overrides, config_signature, seed,"
                             " attempt, status, failure_class, failure_reason, log_tail, metrics, executor, job_id,"
                             " folder, environment, created_at) VALUES ('baseline', 'baseline', 's', '{}', 's|', 0,"
                             " 0, 'succeeded', '', '', '', '{}', '', '', '', '{}', '2026-01-01 00:00:00')")
        info = session.exec(select(SchemaInfo)).one()
        info.version = 3
        session.add(info)
    reopened = Store(tmp_path)
    with reopened.read() as session:
        assert session.exec(select(SchemaInfo)).one().version == models.SCHEMA_VERSION
        assert session.exec(select(models.Trial)).one().conditions == {}
