"""The `Store`: one SQLite database per campaign, written in short `BEGIN IMMEDIATE` transactions.

Why these choices (SQLite on cluster filesystems, whose locks and fsync differ from a laptop's):
- `isolation_level=None` on the DBAPI connection and an explicit `BEGIN IMMEDIATE` on every write
  transaction: the write lock is taken up front, so a transaction never fails half-way on the
  non-retriable "upgrade a read lock to a write lock" path.
- A busy timeout on every connection, and bounded retry with jitter when even that runs out.
- The journal mode follows the filesystem of the campaign folder (`filesystem.journal_mode_for`).
- A `Store` refuses to be used in a process other than the one that opened it: SQLite connections
  must never cross `fork()`.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, create_engine, select

from ..layout import CampaignLayout
from . import models
from .filesystem import journal_mode_for
from .migrations import SCHEMA_VERSION, SchemaError, migrate, newer_schema


class StoreError(RuntimeError):
    pass


class ForkedStoreError(StoreError):
    pass


class LeaseLost(StoreError):
    """This coordinator's lease was taken over: it must not write again."""


def is_locked_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


class Store:
    """Facade over the campaign database.

    `write()` yields a session inside one `BEGIN IMMEDIATE` transaction, committed on exit;
    `read()` yields a session for queries only. Nothing else in the package opens the database.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        journal_mode: str = "auto",
        busy_timeout_s: float = 30.0,
        max_retries: int = 8,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.path = CampaignLayout(self.folder).database
        if not create and not self.path.exists():
            raise StoreError(f"no campaign database at {self.path}")
        self.read_only = read_only
        self.busy_timeout_s = busy_timeout_s
        self.max_retries = max_retries
        self.journal_mode = journal_mode_for(self.folder, journal_mode)
        self._pid = os.getpid()
        #: When set (by the coordinator's lease), every write checks that the lease still carries
        #: this token, so a coordinator that lost its lease cannot change the state.
        self.fencing_token: Optional[int] = None
        if create and not read_only:
            _make_private_dir(self.folder)
        self._read_engine = self._make_engine(read_only, "DEFERRED")
        self._write_engine = None if read_only else self._make_engine(False, "IMMEDIATE")
        self._probe()
        if not read_only:
            self._initialise()

    # ---- engine -------------------------------------------------------------------------------

    def _make_engine(self, read_only: bool, begin: str) -> Engine:
        if read_only:
            url = f"sqlite:///file:{self.path}?mode=ro&uri=true"
        else:
            url = f"sqlite:///{self.path}"
        # NullPool: a connection lives for one transaction, so no pooled connection can outlive
        # a fork or hold a lock while the coordinator waits for SLURM.
        engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={"timeout": self.busy_timeout_s, "check_same_thread": False},
        )
        busy_ms = int(self.busy_timeout_s * 1000)
        journal = self.journal_mode

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module: we issue BEGIN ourselves.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                cur.execute(f"PRAGMA journal_mode = {journal}")
                # NORMAL is durable in WAL mode; the rollback journal keeps FULL.
                cur.execute("PRAGMA synchronous = " + ("NORMAL" if journal == "wal" else "FULL"))
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(f"BEGIN {begin}")

        return engine

    def _probe(self) -> None:
        """Before anything reads or writes: a file that is not a campaign database, or one written by a
        newer autosci_hpc (this one's tables could misread it, its writes could break it), is refused
        in one line naming the file (a `StoreError` or `SchemaError`); a new or empty file passes."""
        try:
            if not self.path.exists() or self.path.stat().st_size == 0:
                return
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot be read ({exc.strerror or exc})") from None
        # A plain read-only connection: the engines' own would set the journal mode, a write to the file.
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.busy_timeout_s)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                row = conn.execute("SELECT version FROM schema_info WHERE id = 1").fetchone() \
                    if "schema_info" in tables else None
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if is_locked_error(exc):
                raise
            reason = " ".join(str(exc).split())[:200]
            raise StoreError(f"{self.path}: not a campaign database ({reason})") from None
        if tables and not {"schema_info", "campaign"} <= tables:
            raise StoreError(f"{self.path}: not a campaign database (an SQLite file without a campaign's tables)")
        found = row[0] if row is not None else None
        if isinstance(found, int) and found > SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: {newer_schema(found)}")

    def _initialise(self) -> None:
        old_umask = os.umask(0o077)  # the database and its journal: owner only
        try:
            with self.write() as session:
                conn = session.connection()
                SQLModel.metadata.create_all(conn)
                migrate(session)
        finally:
            os.umask(old_umask)

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedStoreError(
                f"a Store opened in process {self._pid} was used in process {os.getpid()}; "
                "open a new Store in each process (SQLite connections must not cross fork())"
            )

    # ---- transactions -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One short write transaction, begun with `BEGIN IMMEDIATE` and committed on exit.

        Taking the lock is retried with exponential backoff and jitter when the busy timeout
        runs out; an exception inside the block rolls everything back.
        """
        self._check_pid()
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        assert self._write_engine is not None
        session = self._begin(self._write_engine)
        try:
            if self.fencing_token is not None:
                token = session.connection().exec_driver_sql("SELECT token FROM lease WHERE id = 1").scalar()
                if token != self.fencing_token:
                    raise LeaseLost(f"{self.path}: the coordinator lease now has token {token}, this process "
                                    f"holds {self.fencing_token}: another coordinator took over")
            yield session
            self._commit(session)
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries (a deferred transaction: a consistent snapshot, no write lock)."""
        self._check_pid()
        session = self._begin(self._read_engine)
        try:
            yield session
        finally:
            # Detach what was read first, so rows stay usable after the transaction ends.
            session.expunge_all()
            session.rollback()
            session.close()

    def _begin(self, engine: Engine) -> Session:
        for attempt in range(self.max_retries + 1):
            session = Session(engine, expire_on_commit=False, autoflush=True)
            try:
                session.connection()  # issues BEGIN now, so a lock timeout surfaces here
                return session
            except OperationalError as exc:
                session.close()
                if not is_locked_error(exc) or attempt == self.max_retries:
                    raise
                self._backoff(attempt)
        raise AssertionError("unreachable")

    def _commit(self, session: Session) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                session.commit()
                return
            except OperationalError as exc:
                if not is_locked_error(exc) or attempt == self.max_retries:
                    raise
                self._backoff(attempt)

    # ---- small helpers used everywhere ------------------------------------------------------------

    def campaign(self) -> models.Campaign:
        with self.read() as session:
            row = session.exec(select(models.Campaign)).first()
            if row is None:
                raise StoreError(f"{self.path} holds no campaign")
            return row

    def dispose(self) -> None:
        self._read_engine.dispose()
        if self._write_engine is not None:
            self._write_engine.dispose()


def emit(session: Session, kind: str, entity: str = "", entity_id: int | None = None, **data: Any) -> None:
    """Append an audit event inside the caller's transaction."""
    session.add(models.Event(kind=kind, entity=entity, entity_id=entity_id, data=data))


def _make_private_dir(folder: Path) -> None:
    """Create the campaign folder readable by its owner only (shared filesystems have neighbours)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
