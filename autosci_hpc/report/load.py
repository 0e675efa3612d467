"""Read a campaign folder into pandas, read-only.

The database is opened through a `mode=ro` SQLite URI and every table is read inside one read
transaction: a consistent snapshot even while the coordinator is writing, no write lock taken, and
nothing written to `state.db` (in WAL mode SQLite may create the `-shm`/`-wal` side files, as any
reader does, but never touches the database file itself).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import quote

import pandas as pd
import yaml
from pydantic import ValidationError
from sqlalchemy import JSON, Boolean, DateTime, Integer
from sqlmodel import SQLModel

from ..config import CampaignConfig
from ..layout import CampaignLayout
from ..state.models import (Agent, Campaign, Champion, Critique, DeadEnd, Event, ForumPost, LLMCall, Proposal,
                            Team, Trial)
from ..task import TaskError, TaskSpec, flatten, load_task


class ReportError(ValueError):
    """A folder that cannot be read as a campaign; the message names the folder."""


#: CampaignData attribute -> the table model it is read from.
TABLES: dict[str, type[SQLModel]] = {
    "trials": Trial, "champions": Champion, "proposals": Proposal, "critiques": Critique, "teams": Team,
    "agents": Agent, "dead_ends": DeadEnd, "llm_calls": LLMCall, "events": Event, "forum": ForumPost,
}


@dataclass
class CampaignData:
    """One campaign as data frames (one per table) plus its campaign row and task metric."""

    folder: Path
    name: str
    mode: str
    task_name: str
    status: str
    #: The campaign's config as stored when it was created (CampaignConfig.model_dump).
    config: dict[str, Any]
    #: The whole campaign row (stored counters: trials_submitted, wall_clock_s, promotions, ...).
    campaign: dict[str, Any]
    metric: str
    direction: str  # "maximize" | "minimize"
    task_description: str = ""
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    champions: pd.DataFrame = field(default_factory=pd.DataFrame)
    proposals: pd.DataFrame = field(default_factory=pd.DataFrame)
    critiques: pd.DataFrame = field(default_factory=pd.DataFrame)
    teams: pd.DataFrame = field(default_factory=pd.DataFrame)
    agents: pd.DataFrame = field(default_factory=pd.DataFrame)
    dead_ends: pd.DataFrame = field(default_factory=pd.DataFrame)
    llm_calls: pd.DataFrame = field(default_factory=pd.DataFrame)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    forum: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: LLM spend by role and team, from `llm.accounting.spend_by_role_and_team` (SpendRow columns).
    spend: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Each champion's program config (snapshot config.yaml, flattened to dotted keys) by snapshot id,
    #: so a change can be shown as "old -> new" even where the old value was the program's default.
    snapshot_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def arm(self) -> str:
        """What a comparison groups campaigns by: the coordination mode, except the random-search
        baseline (`llm.backend: random`, run in mode single by `autosci compare`), its own arm."""
        backend = (self.config.get("llm") or {}).get("backend")
        return "random" if backend == "random" else self.mode

    @property
    def label(self) -> str:
        """How the campaign is named in tables and legends: its folder name (unique per run)."""
        return self.folder.name or self.name

    def campaign_config(self) -> CampaignConfig:
        """The stored config as a CampaignConfig. A config written by an older version whose keys no
        longer validate falls back to its executor section alone (all the GPU-hour axis needs)."""
        try:
            return CampaignConfig.model_validate(self.config)
        except ValidationError:
            try:
                return CampaignConfig.model_validate({"executor": self.config.get("executor", {})})
            except ValidationError:
                return CampaignConfig()


def load_campaign(folder: Union[str, Path]) -> CampaignData:
    """Everything in the campaign folder's database, read-only, as one consistent snapshot."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such campaign folder")
    db = folder / CampaignLayout.DATABASE
    if not db.is_file():
        raise ReportError(f"{folder} is not a campaign folder: it has no {CampaignLayout.DATABASE}")
    try:
        with _connect_read_only(db) as conn:
            conn.execute("BEGIN")  # one read transaction: every table from the same snapshot
            try:
                row = _campaign_row(conn)
                frames = {attr: _read_table(conn, model) for attr, model in TABLES.items()}
            finally:
                conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{folder}: cannot read {CampaignLayout.DATABASE} read-only ({exc})") from exc
    if row is None:
        raise ReportError(f"{folder} is not a campaign folder: {CampaignLayout.DATABASE} holds no campaign")
    config = row.get("config") or {}
    task = _task_spec(folder, config)
    data = CampaignData(
        folder=folder, name=str(row.get("name", "")), mode=str(row.get("mode", "")),
        task_name=str(row.get("task_name", "")), status=str(row.get("status", "")), config=config,
        campaign=row, metric=task.metric.name, direction=task.metric.direction,
        task_description=task.description, **frames)
    data.spend = _spend(folder)
    data.snapshot_configs = {str(s): _snapshot_config(folder, str(s)) for s in data.champions["snapshot_id"]}
    return data


# ---- the database -------------------------------------------------------------------------------


class _Connection:
    """A sqlite3 connection closed on exit (sqlite3's own context manager only commits)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _connect_read_only(db: Path) -> _Connection:
    # mode=ro: SQLite refuses every write on this connection, so no report can alter a campaign.
    uri = f"file:{quote(str(db.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
    # Wait (rather than fail) while a rollback-journal writer holds its brief exclusive lock.
    conn.execute("PRAGMA busy_timeout = 30000")
    return _Connection(conn)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")').fetchall()]


def _campaign_row(conn: sqlite3.Connection) -> Optional[dict[str, Any]]:
    table = str(Campaign.__tablename__)
    columns = _columns(conn, table)
    if not columns:
        return None
    found = conn.execute(f'SELECT * FROM "{table}" ORDER BY id LIMIT 1').fetchone()
    if found is None:
        return None
    frame = _typed(pd.DataFrame([found], columns=columns), Campaign)
    return {k: (None if _is_missing(v) else v) for k, v in frame.iloc[0].to_dict().items()}


def _is_missing(value: Any) -> bool:
    return not isinstance(value, (dict, list)) and bool(pd.isna(value))


def _read_table(conn: sqlite3.Connection, model: type[SQLModel]) -> pd.DataFrame:
    """The table as a frame with every column the model knows (an older database lacking a newer
    column gets it empty, so the metrics never meet a KeyError), JSON decoded, times in UTC."""
    table = str(model.__tablename__)
    wanted = [c.name for c in model.__table__.columns]  # type: ignore[attr-defined]
    present = _columns(conn, table)
    if present:
        frame = pd.read_sql_query(f'SELECT * FROM "{table}" ORDER BY id', conn)
    else:
        frame = pd.DataFrame(columns=wanted)
    for name in wanted:
        if name not in frame.columns:
            frame[name] = None
    return _typed(frame, model)


def _typed(frame: pd.DataFrame, model: type[SQLModel]) -> pd.DataFrame:
    for column in model.__table__.columns:  # type: ignore[attr-defined]
        if column.name not in frame.columns:
            continue
        if isinstance(column.type, JSON):
            frame[column.name] = [_decode_json(v) for v in frame[column.name]]
        elif isinstance(getattr(column.type, "impl", column.type), DateTime):
            # SQLite holds naive UTC text ("2026-11-27 04:07:16.508964"); make it tz-aware.
            frame[column.name] = pd.to_datetime(frame[column.name], utc=True, format="ISO8601")
        elif isinstance(column.type, Integer) and not isinstance(column.type, Boolean):
            # Nullable ids (team_id, proposal_id) stay integers, with <NA>, instead of floats.
            frame[column.name] = pd.to_numeric(frame[column.name]).astype("Int64")
        elif isinstance(column.type, Boolean):
            frame[column.name] = frame[column.name].astype("boolean")
    return frame


def _decode_json(value: Any) -> Any:
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ---- the task and the spend ---------------------------------------------------------------------


def _task_spec(folder: Path, config: dict[str, Any]) -> TaskSpec:
    """The task as the campaign began (`task.json`); a campaign from before that file existed falls
    back to the task folder its config names. The metric's direction comes from here."""
    spec = folder / CampaignLayout.TASK_SPEC
    if spec.is_file():
        try:
            return TaskSpec.model_validate_json(spec.read_text())
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ReportError(f"{folder}: {CampaignLayout.TASK_SPEC} is not a valid task spec "
                              f"({reason})") from exc
    path = str((config.get("task") or {}).get("path", ""))
    # A relative task path was relative to where the campaign was started: the working directory,
    # or the repository holding `runs/` (the campaign folder's grandparent by default).
    candidates = ([Path(path)] if Path(path).is_absolute()
                  else [Path.cwd() / path, folder.resolve().parent.parent / path])
    for candidate in candidates:
        if path and (candidate / "task.yaml").is_file():
            try:
                return load_task(candidate)
            except TaskError:
                continue
    raise ReportError(f"{folder}: no {CampaignLayout.TASK_SPEC} and the task folder '{path}' is not found, "
                      "so the metric and its direction are unknown")


def _snapshot_config(folder: Path, snapshot_id: str) -> dict[str, Any]:
    path = CampaignLayout(folder).snapshot(snapshot_id) / "config.yaml"
    try:
        loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}  # the report still reads "(default)" for such a value
    return flatten(loaded) if isinstance(loaded, dict) else {}


def _spend(folder: Path) -> pd.DataFrame:
    """LLM spend by role and team, computed by the accounting module itself (one definition of
    spend for `autosci status` and the report), over its own read-only connection."""
    from dataclasses import asdict

    from ..llm.accounting import SpendRow, spend_by_role_and_team
    from ..state import Store

    store = Store(folder, read_only=True, create=False)
    try:
        rows = spend_by_role_and_team(store)
    finally:
        store.dispose()
    columns = list(SpendRow.__dataclass_fields__)
    return pd.DataFrame([asdict(r) for r in rows], columns=columns)
