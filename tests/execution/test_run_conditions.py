"""Run conditions: every trial reports one record of where and how it ran (its node, its devices, its
executor's placement: the trials sharing its GPU), stored cleaned in the trial's `conditions` column
only; old databases get the column, and a comparison across different conditions is told apart from one
under the same."""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy import Column, MetaData, Table
from sqlmodel import SQLModel, select

from autosci_hpc.execution.gpus import Placement
from autosci_hpc.execution.monitor import Observation, ingest
from autosci_hpc.execution.results import TrialResult, read_result, write_result
from autosci_hpc.execution.trial import run_trial, task_request
from autosci_hpc.state import Store, models
from autosci_hpc.state import conditions
from autosci_hpc.state.models import Campaign, SchemaInfo, Trial
from autosci_hpc.task import load_task

from helpers import record_schema_version

TOY = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "toy"


def test_a_trial_result_carries_its_conditions_as_one_record(tmp_path: Path) -> None:
    """The node's facts and the executor's placement arrive in one record, next to the environment
    (the software), which no longer repeats any of them."""
    task = load_task(TOY)
    req = task_request(task, tmp_path / "campaign", trial_id=7, folder=tmp_path / "trials" / "t7",
                       snapshot_dir=task.program_dir, overrides={}, seed=0, time_limit_s=20)
    req = req.model_copy(update={"placement": Placement(executor="local", devices="")})
    run_trial(req)
    result = read_result(Path(req.folder), 7)
    assert result is not None and result.status == "succeeded"
    assert result.conditions == {**result.conditions, "host": socket.gethostname(), "devices": "", "gpu": [],
                                 "executor": "local", "share": 1, "gpus": 0.0, "ranks": 1, "ballast": False}
    assert conditions.clean(result.conditions) == {k: v for k, v in result.conditions.items() if v is not None}
    assert not set(conditions.MOVED_FROM_ENVIRONMENT) & set(result.environment)
    assert result.environment["python"] and "packages" in result.environment


def _ingested(tmp_path: Path, result: TrialResult) -> Trial:
    """`result` written as the node writes it, read back and ingested; the stored trial."""
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(store.folder), task_name="toy", mode="single"))
        session.add(Trial(role="baseline", group="baseline", snapshot_id="s", config_signature="s|", seed=0,
                          status="submitted"))
    folder = tmp_path / "trials" / "000001"
    folder.mkdir(parents=True)
    write_result(folder, result)
    read = read_result(folder, 1)
    assert read is not None
    with store.write() as session:
        assert ingest(session, Observation(1, result=read)) is not None
    with store.read() as session:
        trial = session.get(Trial, 1)
        assert trial is not None
        return trial


def test_an_oversized_or_malformed_conditions_record_is_stored_clipped(tmp_path: Path) -> None:
    """Trial code runs on the node that reports the conditions: whatever the record holds, ingestion
    keeps the known fields only, strings clipped, lists capped, counts bounded, and the result's metric
    is kept."""
    hostile = {"host": "h" * 100_000, "devices": "0," * 5000, "gpu": ["NVIDIA H200" * 50] * 1000,
               "share": 10**12, "ranks": -5, "slot": "first", "gpus": 1e308, "ballast": "yes",
               "executor": ["local"], "shared": 99, "payload": "x" * 1_000_000, "nested": {"a": [1] * 1000}}
    result = TrialResult(trial_id=1, attempt=0, status="succeeded", metric=0.5, test_metric=0.4, started_at=0.0,
                         finished_at=1.0, environment={"python": "3"}, conditions=hostile)
    stored = _ingested(tmp_path / "big", result).conditions
    assert stored == {"host": "h" * conditions.MAX_CHARS, "devices": ("0," * 5000)[:conditions.MAX_CHARS],
                      "gpu": [("NVIDIA H200" * 50)[:conditions.MAX_CHARS]] * conditions.MAX_ITEMS,
                      "share": conditions.MAX_COUNT, "ranks": 1, "gpus": float(conditions.MAX_COUNT)}
    # Not a record at all: nothing is recorded, and the trial still has its metric.
    for i, junk in enumerate(["h" * 1000, [1, 2, 3], None, 7]):
        trial = _ingested(tmp_path / f"junk{i}", result.model_copy(update={"conditions": junk}))
        assert trial.conditions == {} and trial.metric == 0.5 and trial.status == "succeeded"
    # A result written where the record sat in the environment (an older node) is cleaned the same way,
    # and its environment keeps only the software.
    legacy = result.model_copy(update={"conditions": {}, "environment": {
        "python": "3", "host": "n" * 5000, "gpu": ["A100"] * 100,
        "placement": {"executor": "local", "share": 4, "gpus": 0.25, "devices": "1"},
        "conditions": {"host": "node1", "shared": 3, "devices": "1"}}})
    trial = _ingested(tmp_path / "legacy", legacy)
    assert trial.conditions == {"host": "node1", "devices": "1", "gpu": ["A100"] * conditions.MAX_ITEMS,
                                "executor": "local", "share": 4, "gpus": 0.25}
    assert trial.environment == {"python": "3"}


def test_an_oversized_environment_is_stored_cut_to_its_known_fields(tmp_path: Path) -> None:
    """The result file sits in the trial's folder: its software record is kept to the fields the runner
    writes, strings clipped, at most 64 package versions; anything else is dropped, and nothing raises."""
    hostile = {"python": "3" * 100_000, "platform": ["linux"], "slurm_job_id": "7",
               "packages": {f"pkg{i}": "1.0" * 300 for i in range(1000)} | {"bad": 3},
               "payload": "x" * 1_000_000}
    result = TrialResult(trial_id=1, attempt=0, status="succeeded", metric=0.5, test_metric=0.4, started_at=0.0,
                         finished_at=1.0, environment=hostile)
    stored = _ingested(tmp_path / "env", result)
    assert stored.metric == 0.5
    assert set(stored.environment) == {"python", "slurm_job_id", "packages"}
    assert stored.environment["python"] == "3" * 200 and stored.environment["slurm_job_id"] == "7"
    assert len(stored.environment["packages"]) == 64
    assert all(len(v) == 200 for v in stored.environment["packages"].values())


def test_differences_in_conditions_are_named() -> None:
    alone = {"host": "n1", "gpu": ["H200"], "share": 1}
    assert conditions.differ([alone, alone], [alone]) is None
    assert conditions.differ([alone], [{**alone, "share": 4}]) == "trials sharing the GPU 1 vs 4"
    assert conditions.differ([alone], [{**alone, "host": "n2", "gpu": ["A100"]}]) == "host n1 vs n2; GPU H200 vs A100"
    assert conditions.differ([alone], [{}]) is None  # not recorded (a database from before): no claim
    # A CPU trial shares no GPU: its share is no part of the comparison.
    assert conditions.differ([{"host": "n1", "share": 1}], [{"host": "n1", "share": 3}]) is None
    # Hostile values never crash the comparison.
    assert conditions.key_of({"host": 3, "gpu": "x", "share": "many"}) == ("", "", 0)
    assert conditions.key_of(["not", "a", "record"]) == ("", "", 0)
    assert conditions.describe({}) == "not recorded"
    assert conditions.describe({**alone, "share": 4}) == "host n1, GPU H200, shared by 4 trials"
    assert conditions.describe({"host": "n1", "share": 1}) == "host n1, CPU"


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
        record_schema_version(session, 3)
    reopened = Store(tmp_path)
    with reopened.read() as session:
        assert session.exec(select(SchemaInfo)).one().version == models.SCHEMA_VERSION
        assert session.exec(select(models.Trial)).one().conditions == {}
