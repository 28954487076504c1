"""The production backend: PostgreSQL through psycopg 3.

Imported only when a PostgreSQL store is opened, so hub_client works without psycopg.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from hub_client.store.errors import MoveInProgress
from hub_client.store.migrations import ACTIVE_MOVE_INDEX
from hub_client.store.sql import SqlStore

# Key of the transaction-level advisory lock that serialises migrations across hub processes.
_MIGRATION_LOCK_KEY = 0x6275636B6574735F  # "buckets_"


def advisory_key(project_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``project_id`` (the same in every process,
    unlike Python's salted ``hash``)."""
    digest = hashlib.sha256(b"buckets.move:" + project_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStore(SqlStore):
    """The store in the PostgreSQL database ``conninfo`` (a libpq URI or key=value string).

    ``schema`` (optional) is created if missing and put first on the search path, so several
    stores can share one database. Sessions run in UTC. ``migrate=True`` brings the schema up to
    date on open. Move locks are session advisory locks on a dedicated connection per lock.
    """

    dialect = "postgres"
    paramstyle_format = True
    # Several hub processes scan for lapsed leases at once: each claims rows the others have not
    # locked, instead of queueing behind them.
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conninfo: str, *, schema: str | None = None, migrate: bool = True) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self._mutex = threading.RLock()
        self._conn = self._connect()
        if schema is not None:
            self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        if migrate:
            self.migrate()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with self._mutex, self._conn.transaction():
            yield self._conn

    @contextmanager
    def _migration_transaction(self) -> Iterator[psycopg.Connection]:
        with self._transaction() as conn:
            # Two hubs starting at once: the second waits, then finds nothing left to apply.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            yield conn

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        with self._mutex:
            yield self._conn

    def _integrity_errors(self) -> tuple[type[Exception], ...]:
        return (psycopg.IntegrityError,)

    def _conflict(self, exc: Exception) -> str | None:
        if isinstance(exc, pg_errors.ForeignKeyViolation):
            return "foreign_key"
        if isinstance(exc, pg_errors.UniqueViolation):
            return "active_move" if exc.diag.constraint_name == ACTIVE_MOVE_INDEX else "unique"
        return None

    def _table_exists(self, name: str) -> bool:
        # to_regclass resolves through the search path, i.e. the store's schema.
        return self._fetchall("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0]

    def _time_in(self, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware times")
        return value

    def _time_out(self, value: Any) -> datetime | None:
        return None if value is None else value.astimezone(timezone.utc)

    def _clock(self, conn: psycopg.Connection) -> datetime:
        # The database's clock, the one every hub process sharing the store reads: leases never
        # depend on the hub hosts' clocks agreeing. clock_timestamp(), not now(): now() is the
        # transaction's start.
        return conn.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(timezone.utc)

    def _json_in(self, value: dict[str, Any]) -> Jsonb:
        return Jsonb(value)

    def _json_out(self, value: Any) -> dict[str, Any]:
        return dict(value)

    @contextmanager
    def _move_lock(self, project_id: str) -> Iterator[None]:
        # A dedicated connection: the lock lives exactly as long as this session, so it is freed
        # when the block ends, when the connection drops, or when the holding process dies (the
        # server sees the socket close) — and store traffic on the main connection cannot
        # release it by accident.
        conn = psycopg.connect(self.conninfo, autocommit=True)
        try:
            key = advisory_key(project_id)
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                active = self.active_move(project_id)
                raise MoveInProgress(
                    project_id, active.id if active else None, "its move lock is held by another hub process"
                )
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except psycopg.Error:
                    pass  # a broken session has released the lock already
        finally:
            conn.close()

    def move_lock(self, project_id: str) -> AbstractContextManager[None]:
        return self._move_lock(project_id)

    def close(self) -> None:
        with self._mutex:
            self._conn.close()
