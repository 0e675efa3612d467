"""Schema version row and the migration path between versions.

`create_all` makes any missing table; a step in `MIGRATIONS[v]` upgrades a database from version
`v` to `v + 1` (new columns, data moves) inside the opening transaction. A database written by a
newer autosci_hpc is refused rather than silently mis-read.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from sqlmodel import Session, select

from .. import __version__
from . import conditions
from .models import SCHEMA_VERSION, SchemaInfo


def _add_provenance(session: Session) -> None:
    """Version 1 -> 2: nullable provenance columns (a trial's parent champion, diff and notes; a
    champion's diff). Additive: rows written before keep NULL there."""
    for table, column, kind in (("trial", "parent_champion_id", "INTEGER REFERENCES champion(id)"),
                                ("trial", "diff", "TEXT"), ("trial", "notes", "TEXT"),
                                ("champion", "diff", "TEXT")):
        present = {row[1] for row in session.connection().exec_driver_sql(f"PRAGMA table_info({table})")}
        if column not in present:
            session.connection().exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _reopened_field(session: Session) -> None:
    """Version 2 -> 3: a proposal posted in a team's re-opened discussion said so by a negative
    `discussion_round` (minus the team's re-open count); it now has its own `reopened` column, and its
    round is 0 like every other proposal posted outside the discussion phase."""
    conn = session.connection()
    present = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(proposal)")}
    if "reopened" not in present:
        conn.exec_driver_sql("ALTER TABLE proposal ADD COLUMN reopened INTEGER NOT NULL DEFAULT 0")
    conn.exec_driver_sql("UPDATE proposal SET reopened = -discussion_round, discussion_round = 0 "
                         "WHERE discussion_round < 0")


def _add_run_conditions(session: Session) -> None:
    """Version 3 -> 4: a trial's run conditions (host, GPU, trials sharing the slot at launch), a JSON
    column. Additive: rows written before hold `{}` (not recorded). Kept a step of its own, so that other
    additive steps can be numbered around it."""
    present = {row[1] for row in session.connection().exec_driver_sql("PRAGMA table_info(trial)")}
    if "conditions" not in present:
        session.connection().exec_driver_sql("ALTER TABLE trial ADD COLUMN conditions JSON DEFAULT '{}'")
        session.connection().exec_driver_sql("UPDATE trial SET conditions = '{}' WHERE conditions IS NULL")


def _one_conditions_record(session: Session) -> None:
    """Version 4 -> 5: a trial's run conditions are one record, in its `conditions` column. The executor's
    placement (its share of the GPU, the GPUs it is charged with), the node's host, devices and GPU names,
    and a copy of the conditions were kept in its `environment`: they move into the column, cleaned, and
    leave the environment; the old launch-time count of trials on the slot is dropped (a launch-order
    count, not the planned share)."""
    conn = session.connection()
    rows = conn.exec_driver_sql("SELECT id, conditions, environment FROM trial").all()
    for trial_id, stored, environment in rows:
        old, env = _json_value(stored), _json_value(environment)
        kept = {k: v for k, v in env.items() if k not in conditions.MOVED_FROM_ENVIRONMENT} if env else {}
        conn.exec_driver_sql("UPDATE trial SET conditions = ?, environment = ? WHERE id = ?",
                             (json.dumps(conditions.upgrade(old, env)), json.dumps(kept), trial_id))


def _json_value(text: object) -> dict[str, Any]:
    """A stored JSON object ({} for NULL, a non-object or unreadable text)."""
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


#: version -> step that upgrades a database at that version to version + 1.
MIGRATIONS: dict[int, Callable[[Session], None]] = {
    1: _add_provenance, 2: _reopened_field, 3: _add_run_conditions, 4: _one_conditions_record}


class SchemaError(RuntimeError):
    pass


def newer_schema(found: int, target: int = SCHEMA_VERSION) -> SchemaError:
    """The refusal of a database a newer autosci_hpc wrote (its tables could be misread, its rows broken)."""
    return SchemaError(f"the campaign database has schema version {found}, newer than this autosci_hpc "
                       f"({target}); upgrade autosci_hpc to read it")


def migrate(session: Session, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to `target`; returns the version found before migrating."""
    info = session.exec(select(SchemaInfo)).first()
    if info is None:
        session.add(SchemaInfo(id=1, version=target, created_by=f"autosci_hpc {__version__}"))
        return target
    found = info.version
    if found > target:
        raise newer_schema(found, target)
    while info.version < target:
        step = MIGRATIONS.get(info.version)
        if step is None:
            raise SchemaError(f"no migration from schema version {info.version} to {info.version + 1}")
        step(session)
        info.version += 1
        session.add(info)
    return found
