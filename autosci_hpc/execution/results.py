"""Result files: how a trial reports back without touching the database.

The node writes `result.json` by write-temp + fsync + rename, so a reader sees either nothing or
a complete file. The reader still validates everything (complete JSON, one record, the schema,
the checksum, the trial id): on a shared filesystem a file can arrive truncated, late, or with
two records glued together, and any of those must count as "no valid result yet".
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from ..files import atomic_write_text

RESULT_FILE = "result.json"


class FailureClass(str, Enum):
    """Why a trial produced no usable metric."""

    PROGRAM_ERROR = "program_error"  # the program exited non-zero (Slurm: FAILED)
    BAD_METRICS = "bad_metrics"  # the evaluator could not score the artifacts, or wrote no valid metrics
    TIMEOUT = "timeout"  # past the trial's wall-clock limit (Slurm: TIMEOUT)
    NO_RESULT = "no_result"  # the job ended without a valid result file
    CANCELLED = "cancelled"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    #: a protected file (the snapshot, the frozen evaluator, the data) changed during the trial, or
    #: the evaluator's copy no longer matched its frozen hashes: never promoted, always reported.
    INTEGRITY = "integrity"

    @property
    def is_infrastructure(self) -> bool:
        """Lost to the machine, not to the idea: retried with the same seed. A cancelled job (an
        operator's `scancel`), a preempted one, a failed node, and a job that ended without a valid
        result (its runner was killed: a coordinator crash took it down, the node went away) say
        nothing about the program it ran."""
        return self in (FailureClass.NODE_FAIL, FailureClass.PREEMPTED, FailureClass.CANCELLED,
                        FailureClass.NO_RESULT)

    @property
    def is_evidence(self) -> bool:
        """Whether this failure says something about the idea (vs. about the infrastructure)."""
        return self in (FailureClass.PROGRAM_ERROR, FailureClass.BAD_METRICS, FailureClass.TIMEOUT,
                        FailureClass.INTEGRITY)


class TrialResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial_id: int
    attempt: int
    status: str  # succeeded | failed
    metric: Optional[float] = None
    test_metric: Optional[float] = None
    metrics: dict[str, Any] = {}
    failure_class: str = ""
    failure_reason: str = ""
    log_tail: str = ""
    returncode: Optional[int] = None
    started_at: float
    finished_at: float
    environment: dict[str, Any] = {}
    #: The trial's run conditions as the node reported them (`conditions.observe`). Any shape passes
    #: here, so that a malformed record never costs the result its metric: ingestion keeps what
    #: `state.conditions.clean` accepts of it.
    conditions: Any = {}


class ResultFileError(ValueError):
    pass


def _checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_result(folder: Path, result: TrialResult) -> Path:
    payload = result.model_dump(mode="json")
    record = {"result": payload, "sha256": _checksum(payload)}
    path = folder / RESULT_FILE
    atomic_write_text(path, json.dumps(record, allow_nan=False))
    return path


#: The largest result file read: the runner's own records are a few kilobytes (its log tail and the
#: evaluator's metrics are capped before they are written); a bigger file is not one of them.
MAX_RESULT_BYTES = 8 << 20


def read_result(folder: Path, trial_id: int) -> Optional[TrialResult]:
    """The valid result in `folder`, None when there is no file; `ResultFileError` when invalid."""
    path = folder / RESULT_FILE
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RESULT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResultFileError(f"{path}: unreadable: {exc}") from exc
    if len(data) > MAX_RESULT_BYTES:
        raise ResultFileError(f"{path}: larger than {MAX_RESULT_BYTES >> 20} MiB, not a result record")
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise ResultFileError(f"{path}: empty file")
    try:
        record = json.loads(text)  # rejects truncation and glued records ("Extra data")
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not one complete JSON record: {exc}") from exc
    if not isinstance(record, dict) or set(record) != {"result", "sha256"}:
        raise ResultFileError(f"{path}: not a result record")
    if _checksum(record["result"]) != record["sha256"]:
        raise ResultFileError(f"{path}: checksum mismatch")
    try:
        result = TrialResult.model_validate(record["result"])
    except ValidationError as exc:
        raise ResultFileError(f"{path}: bad result schema: {exc.errors()[0]['msg']}") from exc
    if result.trial_id != trial_id:
        raise ResultFileError(f"{path}: written for trial {result.trial_id}, expected {trial_id}")
    return result
