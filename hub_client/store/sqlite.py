"""The embedded default backend: one SQLite file in WAL mode (stdlib :mod:`sqlite3`)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import threading
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hub_client.store.filelock import flock_move_lock
from hub_client.store.models import utcnow
from hub_client.store.sql import SqlStore


class SQLiteStore(SqlStore):
    """The store in the SQLite database at ``path`` (``":memory:"`` for a private, throwaway one).

    Writes run in ``BEGIN IMMEDIATE`` transactions, so concurrent writers from other processes
    queue on SQLite's write lock (up to ``timeout`` seconds) instead of failing mid-transaction.
    Move locks are flock'd files in ``lock_dir`` (default ``<path>.locks``), see
    :mod:`hub_client.store.filelock`. ``migrate=True`` brings the schema up to date on open.
    """

    dialect = "sqlite"

    def __init__(
        self, path: str | Path, *, lock_dir: str | Path | None = None, timeout: float = 30.0, migrate: bool = True
    ) -> None:
        self.path = str(path)
        memory = self.path == ":memory:"
        # A private in-memory database has no file to put locks beside: a private lock dir,
        # made on first use and removed on close, keeps move_lock working within this process.
        self._own_lock_dir = lock_dir is None and memory
        self._lock_dir = None if self._own_lock_dir else Path(lock_dir or self.path + ".locks")
        self._mutex = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        if not memory:
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        if migrate:
            self.migrate()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _migration_transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        # BEGIN IMMEDIATE already excludes every other writer, migrating or not.
        return self._transaction()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            yield self._conn

    def _integrity_errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.IntegrityError,)

    def _conflict(self, exc: Exception) -> str | None:
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return "foreign_key"
        if name == "SQLITE_CONSTRAINT_UNIQUE":
            # SQLite names the columns, not the index: the only unique index on moves.project_id
            # is the partial "one active move" index.
            return "active_move" if "moves.project_id" in str(exc) else "unique"
        if name == "SQLITE_CONSTRAINT_PRIMARYKEY":
            return "unique"
        return None

    def _table_exists(self, name: str) -> bool:
        rows = self._fetchall("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(rows)

    def _time_in(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware times")
        # Always with microseconds: the text then sorts as the time it names (lease expiries are
        # compared in SQL), where isoformat() alone drops a zero fraction.
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")

    def _time_out(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def _clock(self, conn: sqlite3.Connection) -> datetime:
        # SQLite has no server: the clock is this machine's, in UTC. One SQLite store serves the
        # processes of one host (WAL), which share that clock; a step of it moves every lease's
        # lapse by as much (tolerance: leases are seconds long, NTP slews by milliseconds).
        return utcnow()

    def _json_in(self, value: dict[str, Any]) -> str:
        return json.dumps(value, sort_keys=True)

    def _json_out(self, value: Any) -> dict[str, Any]:
        return json.loads(value)

    @property
    def lock_dir(self) -> Path:
        """The directory of this store's move-lock files."""
        if self._lock_dir is None:
            self._lock_dir = Path(tempfile.mkdtemp(prefix="buckets-locks-"))
        return self._lock_dir

    def move_lock(self, project_id: str) -> AbstractContextManager[None]:
        return flock_move_lock(self.lock_dir, project_id, lambda: self._active_move_id(project_id))

    def _active_move_id(self, project_id: str) -> str | None:
        move = self.active_move(project_id)
        return move.id if move else None

    def close(self) -> None:
        with self._mutex:
            self._conn.close()
        if self._own_lock_dir and self._lock_dir is not None:
            shutil.rmtree(self._lock_dir, ignore_errors=True)
