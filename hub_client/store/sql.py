"""The SQL both backends share; the dialect modules supply connections, transactions,
value conversion and error translation.

Queries are written with ``?`` placeholders; :meth:`SqlStore._q` rewrites them for drivers
that use ``%s``.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Iterable

from hub_client.store import migrations
from hub_client.store.errors import (
    CopyInProgress, HostInUse, InvalidTransition, LeaseHeld, LeaseLost, MoveInProgress, NotFound,
)
from hub_client.store.models import (
    Cleanup, Conflict, Copy, CopyStatus, Host, HostBackupStatus, JobKind, Lease, Move, MovelogEntry, MoveStatus,
    OfflineLoss, Project, Rescue, frozen_entry, utcnow,
)

_HOST_COLUMNS = "id, address, region, status, last_seen"
_PROJECT_COLUMNS = "id, host_id, region, repository, last_backup, last_edited, last_backup_snapshot, reported_at"
_RESCUE_COLUMNS = ("move_id, project_id, host_id, snapshot_id, created_at, bytes_added, files_new, files_changed,"
                   " bytes_processed, files_processed")
_NEW_MOVE_COLUMNS = (
    "id, project_id, source_host, target_host, step, status, force, error, attempts, created_at, updated_at"
)
_MOVE_COLUMNS = (f"{_NEW_MOVE_COLUMNS}, snapshot_id, cleanup, cross_region, frozen_at, placed_at, caught_up_bytes,"
                 " force_target")
_COPY_COLUMNS = (
    "id, source_project, source_path, target_project, target_path, on_conflict, source_host, target_host, step,"
    " status, error, attempts, created_at, updated_at, snapshot_id"
)
_LEASE_COLUMNS = "id, lease_owner, lease_epoch, lease_claimed_at, lease_expires"
# The statuses in which a job still needs an owner: a lapsed lease of such a job is taken over.
_OWNED_SQL = f"'{MoveStatus.PENDING}', '{MoveStatus.RUNNING}'"
_ACTIVE_SQL = ", ".join(f"'{status}'" for status in sorted(MoveStatus.ACTIVE))
_COPY_BLOCKING_SQL = ", ".join(f"'{status}'" for status in sorted(CopyStatus.BLOCKING))


@dataclass(frozen=True)
class _Log:
    """A job table and its event log: moves/movelog and copies/copylog share one writer and reader."""

    noun: str
    owner: str  # the job table; its log_seq column numbers the events
    table: str
    key: str  # the log's column naming the job

    @property
    def columns(self) -> str:
        return f'{self.key}, seq, "time", kind, message, data'


MOVELOG = _Log("move", "moves", "movelog", "move_id")
COPYLOG = _Log("copy", "copies", "copylog", "copy_id")


class SqlStore(ABC):
    """A :class:`~hub_client.store.base.Store` over a DB-API connection; subclasses add the dialect."""

    dialect: str
    paramstyle_format = False  # True: the driver wants %s instead of ?
    skip_locked = ""  # what the claim of lapsed leases adds to its row selection

    # -- what a dialect provides ----------------------------------------------------------
    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """A write transaction; yields an object with ``execute(sql, params)`` returning a cursor."""

    @abstractmethod
    def _migration_transaction(self) -> AbstractContextManager[Any]:
        """A transaction that excludes other processes' migrations."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A connection for one read statement."""

    @abstractmethod
    def _conflict(self, exc: Exception) -> str | None:
        """``"active_move"``, ``"foreign_key"``, ``"unique"`` for an integrity error, else None."""

    @abstractmethod
    def _integrity_errors(self) -> tuple[type[Exception], ...]:
        """The driver's integrity error classes."""

    @abstractmethod
    def _table_exists(self, name: str) -> bool:
        """Whether table ``name`` exists (in the store's schema)."""

    @abstractmethod
    def _time_in(self, value: datetime | None) -> Any: ...

    @abstractmethod
    def _time_out(self, value: Any) -> datetime | None: ...

    @abstractmethod
    def _clock(self, conn: Any) -> datetime:
        """The store's current time (timezone-aware UTC), the one every lease is measured on."""

    @abstractmethod
    def _json_in(self, value: dict[str, Any]) -> Any: ...

    @abstractmethod
    def _json_out(self, value: Any) -> dict[str, Any]: ...

    @abstractmethod
    def move_lock(self, project_id: str) -> AbstractContextManager[None]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "SqlStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.paramstyle_format else sql

    def _exec(self, conn: Any, sql: str, params: Iterable[Any] = ()) -> Any:
        return conn.execute(self._q(sql), tuple(params))

    def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._read() as conn:
            return list(self._exec(conn, sql, params).fetchall())

    # -- schema ---------------------------------------------------------------------------
    def migrate(self) -> int:
        with self._migration_transaction() as conn:
            self._exec(conn, migrations.BOOTSTRAP[self.dialect])
            current = self._exec(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            todo = migrations.pending(self.dialect, current)
            for migration in todo:
                for statement in migration.statements:
                    self._exec(conn, statement)
                self._exec(
                    conn, "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.description, self._time_in(utcnow())),
                )
            return len(todo)

    def schema_version(self) -> int:
        if not self._table_exists("schema_version"):
            return 0
        return self._fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0]

    # -- rows -----------------------------------------------------------------------------
    def _host(self, row: tuple) -> Host:
        return Host(row[0], row[1], row[2], row[3], self._time_out(row[4]))

    def _project(self, row: tuple) -> Project:
        return Project(row[0], row[1], row[2], row[3], self._time_out(row[4]), self._time_out(row[5]), row[6] or "",
                       self._time_out(row[7]))

    def _rescue(self, row: tuple) -> Rescue:
        return Rescue(row[0], row[1], row[2], row[3], self._time_out(row[4]), *(int(v) for v in row[5:10]))

    def _move(self, row: tuple) -> Move:
        return Move(
            id=row[0], project_id=row[1], source_host=row[2], target_host=row[3], step=row[4], status=row[5],
            force=bool(row[6]), error=row[7], attempts=row[8],
            created_at=self._time_out(row[9]), updated_at=self._time_out(row[10]),
            snapshot_id=row[11], cleanup=row[12], cross_region=bool(row[13]),
            frozen_at=self._time_out(row[14]), placed_at=self._time_out(row[15]),
            caught_up_bytes=None if row[16] is None else int(row[16]), force_target=bool(row[17]),
        )

    def _copy(self, row: tuple) -> Copy:
        return Copy(
            id=row[0], source_project=row[1], source_path=row[2], target_project=row[3], target_path=row[4],
            on_conflict=row[5], source_host=row[6], target_host=row[7], step=row[8], status=row[9], error=row[10],
            attempts=row[11], created_at=self._time_out(row[12]), updated_at=self._time_out(row[13]),
            snapshot_id=row[14],
        )

    def _entry(self, row: tuple) -> MovelogEntry:
        return MovelogEntry(row[0], row[1], self._time_out(row[2]), row[3], row[4], self._json_out(row[5]))

    # -- hosts and projects ---------------------------------------------------------------
    def upsert_host(self, host: Host) -> Host:
        with self._transaction() as conn:
            self._exec(
                conn,
                f"INSERT INTO hosts ({_HOST_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " address = excluded.address, region = excluded.region, status = excluded.status,"
                " last_seen = excluded.last_seen",
                (host.id, host.address, host.region, host.status, self._time_in(host.last_seen)),
            )
        return self.get_host(host.id)

    def update_host(self, host_id: str, *, status: str | None = None, last_seen: datetime | None = None) -> Host:
        sets, params = [], []
        if status is not None:
            sets.append("status = ?")
            params.append(status)
        if last_seen is not None:
            sets.append("last_seen = ?")
            params.append(self._time_in(last_seen))
        if sets:
            with self._transaction() as conn:
                self._exec(conn, f"UPDATE hosts SET {', '.join(sets)} WHERE id = ?", (*params, host_id))
        return self.get_host(host_id)

    def delete_host(self, host_id: str) -> bool:
        with self._transaction() as conn:
            if self._exec(conn, "SELECT 1 FROM hosts WHERE id = ?", (host_id,)).fetchone() is None:
                return False
            for what, query, params in (
                ("project", "SELECT id FROM projects WHERE host_id = ?", (host_id,)),
                ("move", "SELECT id FROM moves WHERE source_host = ? OR target_host = ?", (host_id, host_id)),
                ("copy", "SELECT id FROM copies WHERE source_host = ? OR target_host = ?", (host_id, host_id)),
                ("offline loss of project", "SELECT project_id FROM offline_losses WHERE host_id = ?", (host_id,)),
            ):
                row = self._exec(conn, query + " LIMIT 1", params).fetchone()
                if row is not None:
                    raise HostInUse(host_id, f"{what} {row[0]}")
            self._exec(conn, "DELETE FROM host_backup_status WHERE host_id = ?", (host_id,))
            self._exec(conn, "DELETE FROM hosts WHERE id = ?", (host_id,))
        return True

    def get_host(self, host_id: str) -> Host:
        rows = self._fetchall(f"SELECT {_HOST_COLUMNS} FROM hosts WHERE id = ?", (host_id,))
        if not rows:
            raise NotFound(f"host {host_id} not found")
        return self._host(rows[0])

    def list_hosts(self, *, region: str | None = None) -> list[Host]:
        if region is None:
            rows = self._fetchall(f"SELECT {_HOST_COLUMNS} FROM hosts ORDER BY id")
        else:
            rows = self._fetchall(f"SELECT {_HOST_COLUMNS} FROM hosts WHERE region = ? ORDER BY id", (region,))
        return [self._host(row) for row in rows]

    def upsert_project(self, project: Project) -> Project:
        try:
            with self._transaction() as conn:
                self._exec(
                    conn,
                    f"INSERT INTO projects ({_PROJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id)"
                    " DO UPDATE SET host_id = excluded.host_id, region = excluded.region,"
                    " repository = excluded.repository, last_backup = excluded.last_backup,"
                    " last_edited = excluded.last_edited, last_backup_snapshot = excluded.last_backup_snapshot,"
                    " reported_at = excluded.reported_at",
                    (project.id, project.host_id, project.region, project.repository,
                     self._time_in(project.last_backup), self._time_in(project.last_edited),
                     project.last_backup_snapshot, self._time_in(project.reported_at)),
                )
        except self._integrity_errors() as exc:
            if self._conflict(exc) == "foreign_key":
                raise NotFound(f"host {project.host_id} not found (project {project.id})") from exc
            raise
        return self.get_project(project.id)

    def get_project(self, project_id: str) -> Project:
        rows = self._fetchall(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = ?", (project_id,))
        if not rows:
            raise NotFound(f"project {project_id} not found")
        return self._project(rows[0])

    def list_projects(self, *, host_id: str | None = None, region: str | None = None, after: str | None = None,
                      limit: int | None = None) -> list[Project]:
        where, params = [], []
        if host_id is not None:
            where.append("host_id = ?")
            params.append(host_id)
        if region is not None:
            where.append("region = ?")
            params.append(region)
        if after is not None:
            where.append("id > ?")
            params.append(after)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_PROJECT_COLUMNS} FROM projects{clause} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._fetchall(sql, params)
        return [self._project(row) for row in rows]

    def record_freshness(
        self, project_id: str, host_id: str, *, last_backup: datetime | None, last_backup_snapshot: str,
        last_edited: datetime | None, reported_at: datetime,
    ) -> Project | None:
        with self._transaction() as conn:
            row = self._exec(conn, f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = ?", (project_id,)).fetchone()
            if row is None:
                return None
            known = self._project(row)
            if known.host_id != host_id or (known.reported_at is not None and known.reported_at > reported_at):
                return None
            self._exec(
                conn, "UPDATE projects SET last_backup = ?, last_backup_snapshot = ?, last_edited = ?, reported_at = ?"
                " WHERE id = ?",
                (self._time_in(last_backup or known.last_backup),
                 last_backup_snapshot if last_backup is not None else known.last_backup_snapshot,
                 self._time_in(last_edited or known.last_edited), self._time_in(reported_at), project_id),
            )
        return self.get_project(project_id)

    def _write_placement(self, conn: Any, project_id: str, host_id: str) -> None:
        """Point the project at ``host_id`` inside the caller's transaction; raises NotFound."""
        try:
            cursor = self._exec(conn, "UPDATE projects SET host_id = ? WHERE id = ?", (host_id, project_id))
        except self._integrity_errors() as exc:
            if self._conflict(exc) == "foreign_key":
                raise NotFound(f"host {host_id} not found (placing project {project_id})") from exc
            raise
        if cursor.rowcount == 0:
            raise NotFound(f"project {project_id} not found")

    def set_placement(self, project_id: str, host_id: str) -> Project:
        with self._transaction() as conn:
            self._write_placement(conn, project_id, host_id)
        return self.get_project(project_id)

    # -- moves ----------------------------------------------------------------------------
    def create_move(
        self, project_id: str, source_host: str, target_host: str, *, force: bool = False,
        move_id: str | None = None, step: str = "created", cross_region: bool = False, force_target: bool = False,
    ) -> Move:
        move_id = move_id or str(uuid.uuid4())
        now = self._time_in(utcnow())
        try:
            with self._transaction() as conn:
                row = self._exec(
                    conn,
                    f"INSERT INTO moves ({_NEW_MOVE_COLUMNS}, cross_region, force_target)"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?) RETURNING {_MOVE_COLUMNS}",
                    (move_id, project_id, source_host, target_host, step, MoveStatus.PENDING, bool(force), now, now,
                     bool(cross_region), bool(force_target)),
                ).fetchone()
        except self._integrity_errors() as exc:
            kind = self._conflict(exc)
            if kind == "active_move":
                active = self.active_move(project_id)
                raise MoveInProgress(project_id, active.id if active else None) from exc
            if kind == "foreign_key":
                raise NotFound(
                    f"project {project_id}, host {source_host} or host {target_host} not found"
                ) from exc
            raise
        return self._move(row)

    def get_move(self, move_id: str) -> Move:
        rows = self._fetchall(f"SELECT {_MOVE_COLUMNS} FROM moves WHERE id = ?", (move_id,))
        if not rows:
            raise NotFound(f"move {move_id} not found")
        return self._move(rows[0])

    def active_move(self, project_id: str) -> Move | None:
        rows = self._fetchall(
            f"SELECT {_MOVE_COLUMNS} FROM moves WHERE project_id = ? AND status IN ({_ACTIVE_SQL})", (project_id,)
        )
        return self._move(rows[0]) if rows else None

    def list_moves(self, *, project_id: str | None = None, active: bool | None = None) -> list[Move]:
        where, params = [], []
        if project_id is not None:
            where.append("project_id = ?")
            params.append(project_id)
        if active is not None:
            where.append(f"status {'IN' if active else 'NOT IN'} ({_ACTIVE_SQL})")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._fetchall(f"SELECT {_MOVE_COLUMNS} FROM moves{clause} ORDER BY created_at DESC, id", params)
        return [self._move(row) for row in rows]

    def _update_active(self, conn: Any, move_id: str, assignments: str, params: tuple) -> Move:
        """Update an active move inside the caller's transaction; raises NotFound or InvalidTransition."""
        row = self._exec(
            conn,
            f"UPDATE moves SET {assignments}, updated_at = ? WHERE id = ? AND status IN ({_ACTIVE_SQL})"
            f" RETURNING {_MOVE_COLUMNS}",
            (*params, self._time_in(utcnow()), move_id),
        ).fetchone()
        if row is None:
            found = self._exec(conn, "SELECT status FROM moves WHERE id = ?", (move_id,)).fetchone()
            if found is None:
                raise NotFound(f"move {move_id} not found")
            raise InvalidTransition(f"move {move_id} is {found[0]}: finished moves do not change")
        return self._move(row)

    def update_move_step(self, move_id: str, step: str) -> Move:
        with self._transaction() as conn:
            return self._update_active(conn, move_id, "step = ?", (step,))

    def update_move_status(
        self, move_id: str, status: str, *, error: str | None = None, new_attempt: bool = False
    ) -> Move:
        if status not in MoveStatus.ALL:
            raise InvalidTransition(f"unknown move status {status!r}")
        if status == MoveStatus.SUCCEEDED:
            raise InvalidTransition("a move succeeds only through complete_move (placement in the same transaction)")
        with self._transaction() as conn:
            return self._update_active(
                conn, move_id, "status = ?, error = ?, attempts = attempts + ?", (status, error, int(new_attempt))
            )

    def set_move_force(self, move_id: str, force: bool) -> Move:
        with self._transaction() as conn:
            return self._update_active(conn, move_id, "force = ?", (bool(force),))

    def set_move_force_target(self, move_id: str, force_target: bool) -> Move:
        with self._transaction() as conn:
            return self._update_active(conn, move_id, "force_target = ?", (bool(force_target),))

    def set_move_snapshot(self, move_id: str, snapshot_id: str | None) -> Move:
        with self._transaction() as conn:
            return self._update_active(conn, move_id, "snapshot_id = ?", (snapshot_id,))

    def set_move_frozen_at(self, move_id: str, when: datetime | None) -> Move:
        with self._transaction() as conn:
            return self._update_active(conn, move_id, "frozen_at = ?", (self._time_in(when),))

    def set_move_cleanup(self, move_id: str, cleanup: str) -> Move:
        if cleanup not in Cleanup.ALL:
            raise InvalidTransition(f"unknown cleanup state {cleanup!r}")
        with self._transaction() as conn:
            row = self._exec(
                conn, f"UPDATE moves SET cleanup = ?, updated_at = ? WHERE id = ? RETURNING {_MOVE_COLUMNS}",
                (cleanup, self._time_in(utcnow()), move_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"move {move_id} not found")
        return self._move(row)

    def pending_cleanups(self) -> list[Move]:
        rows = self._fetchall(
            f"SELECT {_MOVE_COLUMNS} FROM moves WHERE cleanup = ? ORDER BY created_at, id", (Cleanup.PENDING,)
        )
        return [self._move(row) for row in rows]

    def complete_move(self, move_id: str, *, message: str = "complete", data: dict[str, Any] | None = None,
                      caught_up_bytes: int | None = None) -> Move:
        with self._transaction() as conn:
            move = self._update_active(
                conn, move_id, "status = ?, step = ?, error = NULL, cleanup = ?, placed_at = ?, caught_up_bytes = ?",
                (MoveStatus.SUCCEEDED, "complete", Cleanup.PENDING, self._time_in(utcnow()), caught_up_bytes),
            )
            self._write_placement(conn, move.project_id, move.target_host)
            if move.cross_region:  # the project's backups now live in the target host's region
                self._exec(conn, "UPDATE projects SET region = (SELECT region FROM hosts WHERE id = ?) WHERE id = ?",
                           (move.target_host, move.project_id))
            self._append(conn, MOVELOG, move_id, "complete", message, data)
            frozen = frozen_entry(move)
            if frozen is not None:
                self._append(conn, MOVELOG, move_id, "frozen", *frozen)
        return move

    # -- rescues ---------------------------------------------------------------------------
    def record_rescue(self, rescue: Rescue) -> Rescue:
        try:
            with self._transaction() as conn:
                self._exec(
                    conn, f"INSERT INTO rescues ({_RESCUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (move_id, snapshot_id) DO NOTHING",
                    (rescue.move_id, rescue.project_id, rescue.host_id, rescue.snapshot_id,
                     self._time_in(rescue.created_at), rescue.bytes_added, rescue.files_new, rescue.files_changed,
                     rescue.bytes_processed, rescue.files_processed),
                )
        except self._integrity_errors() as exc:
            if self._conflict(exc) == "foreign_key":
                raise NotFound(f"move {rescue.move_id} not found") from exc
            raise
        return next(r for r in self.list_rescues(move_id=rescue.move_id) if r.snapshot_id == rescue.snapshot_id)

    def list_rescues(self, *, project_id: str | None = None, move_id: str | None = None) -> list[Rescue]:
        where, params = [], []
        if project_id is not None:
            where.append("project_id = ?")
            params.append(project_id)
        if move_id is not None:
            where.append("move_id = ?")
            params.append(move_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._fetchall(f"SELECT {_RESCUE_COLUMNS} FROM rescues{clause} ORDER BY created_at, move_id", params)
        return [self._rescue(row) for row in rows]

    # -- host backup status and offline losses ----------------------------------------------
    def set_host_backup_status(self, status: HostBackupStatus) -> HostBackupStatus:
        try:
            with self._transaction() as conn:
                self._exec(
                    conn,
                    "INSERT INTO host_backup_status (host_id, projects, dirty, up_to_date, never_backed_up, failing,"
                    " checked_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host_id) DO UPDATE SET"
                    " projects = excluded.projects, dirty = excluded.dirty, up_to_date = excluded.up_to_date,"
                    " never_backed_up = excluded.never_backed_up, failing = excluded.failing,"
                    " checked_at = excluded.checked_at",
                    (status.host_id, status.projects, status.dirty, status.up_to_date, status.never_backed_up,
                     status.failing, self._time_in(status.checked_at)),
                )
        except self._integrity_errors() as exc:
            if self._conflict(exc) == "foreign_key":
                raise NotFound(f"host {status.host_id} not found") from exc
            raise
        return status

    def host_backup_status(self, host_id: str) -> HostBackupStatus | None:
        rows = self._fetchall(
            "SELECT host_id, projects, dirty, up_to_date, never_backed_up, failing, checked_at"
            " FROM host_backup_status WHERE host_id = ?", (host_id,))
        if not rows:
            return None
        row = rows[0]
        return HostBackupStatus(row[0], row[1], row[2], row[3], row[4], row[5], self._time_out(row[6]))

    def record_offline_losses(self, losses: list[OfflineLoss]) -> None:
        with self._transaction() as conn:
            for loss in losses:
                self._exec(
                    conn,
                    "INSERT INTO offline_losses (host_id, project_id, last_backup, last_edited, loss_minutes,"
                    " recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (loss.host_id, loss.project_id, self._time_in(loss.last_backup),
                     self._time_in(loss.last_edited), loss.loss_minutes, self._time_in(loss.recorded_at)),
                )

    def offline_losses(self, *, host_id: str | None = None) -> list[OfflineLoss]:
        sql = ("SELECT host_id, project_id, last_backup, last_edited, loss_minutes, recorded_at FROM offline_losses"
               + (" WHERE host_id = ?" if host_id is not None else "") + " ORDER BY recorded_at, host_id, project_id")
        rows = self._fetchall(sql, (host_id,) if host_id is not None else ())
        return [OfflineLoss(r[0], r[1], self._time_out(r[2]), self._time_out(r[3]), r[4], self._time_out(r[5]))
                for r in rows]

    # -- deletion ---------------------------------------------------------------------------
    def delete_project(self, project_id: str) -> bool:
        with self._transaction() as conn:
            active = self._exec(
                conn, f"SELECT id FROM moves WHERE project_id = ? AND status IN ({_ACTIVE_SQL})", (project_id,)
            ).fetchone()
            if active is not None:
                raise MoveInProgress(project_id, active[0], "a project is not deleted while it moves")
            copying = self._exec(
                conn, f"SELECT id FROM copies WHERE (source_project = ? OR target_project = ?)"
                f" AND status IN ({_COPY_BLOCKING_SQL})", (project_id, project_id)).fetchone()
            if copying is not None:
                raise CopyInProgress(project_id, copying[0], "a project is not deleted while files are copied "
                                     "from or into it")
            self._exec(conn, "DELETE FROM movelog WHERE move_id IN (SELECT id FROM moves WHERE project_id = ?)",
                       (project_id,))
            self._exec(conn, "DELETE FROM rescues WHERE project_id = ?", (project_id,))
            self._exec(conn, "DELETE FROM moves WHERE project_id = ?", (project_id,))
            mine = "SELECT id FROM copies WHERE source_project = ? OR target_project = ?"
            self._exec(conn, f"DELETE FROM copylog WHERE copy_id IN ({mine})", (project_id, project_id))
            self._exec(conn, "DELETE FROM copies WHERE source_project = ? OR target_project = ?",
                       (project_id, project_id))
            self._exec(conn, "DELETE FROM offline_losses WHERE project_id = ?", (project_id,))
            return self._exec(conn, "DELETE FROM projects WHERE id = ?", (project_id,)).rowcount > 0

    # -- copies -------------------------------------------------------------------------
    def create_copy(
        self, source_project: str, source_path: str, target_project: str, target_path: str, on_conflict: str, *,
        source_host: str, target_host: str, copy_id: str | None = None,
    ) -> Copy:
        if on_conflict not in Conflict.ALL:
            raise InvalidTransition(f"unknown on_conflict rule {on_conflict!r}")
        copy_id = copy_id or str(uuid.uuid4())
        now = self._time_in(utcnow())
        try:
            with self._transaction() as conn:
                row = self._exec(
                    conn,
                    "INSERT INTO copies (id, source_project, source_path, target_project, target_path, on_conflict,"
                    " source_host, target_host, step, status, attempts, created_at, updated_at)"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, 0, ?, ?) RETURNING {_COPY_COLUMNS}",
                    (copy_id, source_project, source_path, target_project, target_path, on_conflict, source_host,
                     target_host, CopyStatus.PENDING, now, now),
                ).fetchone()
        except self._integrity_errors() as exc:
            if self._conflict(exc) == "foreign_key":
                raise NotFound(f"host {source_host} or host {target_host} not found") from exc
            raise
        return self._copy(row)

    def get_copy(self, copy_id: str) -> Copy:
        rows = self._fetchall(f"SELECT {_COPY_COLUMNS} FROM copies WHERE id = ?", (copy_id,))
        if not rows:
            raise NotFound(f"copy {copy_id} not found")
        return self._copy(rows[0])

    def list_copies(self, *, project_id: str | None = None, blocking: bool | None = None) -> list[Copy]:
        where, params = [], []
        if project_id is not None:
            where.append("(source_project = ? OR target_project = ?)")
            params += [project_id, project_id]
        if blocking is not None:
            where.append(f"status {'IN' if blocking else 'NOT IN'} ({_COPY_BLOCKING_SQL})")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._fetchall(f"SELECT {_COPY_COLUMNS} FROM copies{clause} ORDER BY created_at DESC, id", params)
        return [self._copy(row) for row in rows]

    def _update_unfinished_copy(self, conn: Any, copy_id: str, assignments: str, params: tuple) -> Copy:
        row = self._exec(
            conn,
            f"UPDATE copies SET {assignments}, updated_at = ? WHERE id = ? AND status NOT IN (?, ?)"
            f" RETURNING {_COPY_COLUMNS}",
            (*params, self._time_in(utcnow()), copy_id, CopyStatus.SUCCEEDED, CopyStatus.CANCELLED),
        ).fetchone()
        if row is None:
            found = self._exec(conn, "SELECT status FROM copies WHERE id = ?", (copy_id,)).fetchone()
            if found is None:
                raise NotFound(f"copy {copy_id} not found")
            raise InvalidTransition(f"copy {copy_id} is {found[0]}: finished copies do not change")
        return self._copy(row)

    def update_copy_step(self, copy_id: str, step: str) -> Copy:
        with self._transaction() as conn:
            return self._update_unfinished_copy(conn, copy_id, "step = ?", (step,))

    def update_copy_status(
        self, copy_id: str, status: str, *, error: str | None = None, new_attempt: bool = False
    ) -> Copy:
        if status not in CopyStatus.ALL:
            raise InvalidTransition(f"unknown copy status {status!r}")
        if status == CopyStatus.SUCCEEDED:
            raise InvalidTransition("a copy succeeds only through complete_copy")
        with self._transaction() as conn:
            return self._update_unfinished_copy(
                conn, copy_id, "status = ?, error = ?, attempts = attempts + ?", (status, error, int(new_attempt)))

    def set_copy_snapshot(self, copy_id: str, snapshot_id: str | None) -> Copy:
        with self._transaction() as conn:
            return self._update_unfinished_copy(conn, copy_id, "snapshot_id = ?", (snapshot_id,))

    def complete_copy(self, copy_id: str, *, message: str = "complete", data: dict[str, Any] | None = None) -> Copy:
        with self._transaction() as conn:
            copy = self._update_unfinished_copy(
                conn, copy_id, "status = ?, step = ?, error = NULL", (CopyStatus.SUCCEEDED, "complete"))
            self._append(conn, COPYLOG, copy_id, "complete", message, data)
        return copy

    def append_copylog(
        self, copy_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> MovelogEntry:
        with self._transaction() as conn:
            return self._append(conn, COPYLOG, copy_id, kind, message, data)

    def copylog(self, copy_id: str, after_seq: int = 0, limit: int | None = None) -> list[MovelogEntry]:
        return self._read_log(COPYLOG, copy_id, after_seq, limit)

    # -- movelog --------------------------------------------------------------------------
    def _append(self, conn: Any, log: _Log, job_id: str, kind: str, message: str,
                data: dict[str, Any] | None) -> MovelogEntry:
        # The counter on the job's row is bumped under that row's write lock, so concurrent
        # appenders get distinct, gap-free sequence numbers on both databases.
        row = self._exec(
            conn, f"UPDATE {log.owner} SET log_seq = log_seq + 1 WHERE id = ? RETURNING log_seq", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"{log.noun} {job_id} not found")
        entry = MovelogEntry(job_id, row[0], utcnow(), kind, message, dict(data or {}))
        self._exec(
            conn, f"INSERT INTO {log.table} ({log.columns}) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, entry.seq, self._time_in(entry.time), kind, message, self._json_in(entry.data)),
        )
        return entry

    def _read_log(self, log: _Log, job_id: str, after_seq: int, limit: int | None) -> list[MovelogEntry]:
        sql = f"SELECT {log.columns} FROM {log.table} WHERE {log.key} = ? AND seq > ? ORDER BY seq"
        params: list[Any] = [job_id, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._entry(row) for row in self._fetchall(sql, params)]

    def append_movelog(
        self, move_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> MovelogEntry:
        with self._transaction() as conn:
            return self._append(conn, MOVELOG, move_id, kind, message, data)

    def movelog(self, move_id: str, after_seq: int = 0, limit: int | None = None) -> list[MovelogEntry]:
        return self._read_log(MOVELOG, move_id, after_seq, limit)

    # -- leases ---------------------------------------------------------------------------
    # The lease says which hub process owns a job's execution and until when another may take
    # it over; every change is one conditional UPDATE (a compare-and-set on the expiry, or on
    # the owner and epoch), so two processes never both believe they won the same claim.

    def _lease_table(self, kind: str) -> str:
        try:
            return JobKind.TABLES[kind]
        except KeyError:
            raise InvalidTransition(f"no leases for {kind!r} (move or copy)") from None

    def _lease(self, kind: str, row: tuple) -> Lease | None:
        if row[1] is None:
            return None
        return Lease(kind, row[0], row[1], int(row[2]), self._time_out(row[3]), self._time_out(row[4]))

    def get_lease(self, kind: str, job_id: str) -> Lease | None:
        table = self._lease_table(kind)
        rows = self._fetchall(f"SELECT {_LEASE_COLUMNS} FROM {table} WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"{kind} {job_id} not found")
        return self._lease(kind, rows[0])

    def store_time(self) -> datetime:
        with self._read() as conn:
            return self._clock(conn)

    def claim_lease(self, kind: str, job_id: str, owner: str, seconds: float, *, take_over: bool = False) -> Lease:
        table = self._lease_table(kind)
        with self._transaction() as conn:
            now = self._clock(conn)
            free = "" if take_over else " AND (lease_expires IS NULL OR lease_expires <= ?)"
            row = self._exec(
                conn, f"UPDATE {table} SET lease_owner = ?, lease_epoch = lease_epoch + 1, lease_claimed_at = ?,"
                f" lease_expires = ? WHERE id = ?{free} RETURNING {_LEASE_COLUMNS}",
                (owner, self._time_in(now), self._time_in(now + timedelta(seconds=seconds)), job_id,
                 *(() if take_over else (self._time_in(now),))),
            ).fetchone()
            if row is None:
                found = self._exec(conn, f"SELECT {_LEASE_COLUMNS} FROM {table} WHERE id = ?", (job_id,)).fetchone()
                if found is None:
                    raise NotFound(f"{kind} {job_id} not found")
                held = self._lease(kind, found)
                raise LeaseHeld(kind, job_id, held.owner, held.expires_at)
        return self._lease(kind, row)

    def claim_lapsed(self, kind: str, owner: str, seconds: float, *, limit: int = 10) -> list[Lease]:
        table = self._lease_table(kind)
        with self._transaction() as conn:
            clock = self._clock(conn)
            now, until = self._time_in(clock), self._time_in(clock + timedelta(seconds=seconds))
            lapsed = f"status IN ({_OWNED_SQL}) AND lease_expires IS NOT NULL AND lease_expires <= ?"
            rows = self._exec(
                conn, f"UPDATE {table} SET lease_owner = ?, lease_epoch = lease_epoch + 1, lease_claimed_at = ?,"
                f" lease_expires = ? WHERE id IN (SELECT id FROM {table} WHERE {lapsed}"
                f" ORDER BY lease_expires, id LIMIT ?{self.skip_locked}) AND {lapsed} RETURNING {_LEASE_COLUMNS}",
                (owner, now, until, now, int(limit), now),
            ).fetchall()
        return sorted((self._lease(kind, row) for row in rows), key=lambda lease: lease.job_id)

    def renew_lease(self, lease: Lease, seconds: float) -> Lease:
        table = self._lease_table(lease.kind)
        with self._transaction() as conn:
            now = self._clock(conn)
            row = self._exec(
                conn, f"UPDATE {table} SET lease_expires = ? WHERE id = ? AND lease_owner = ? AND lease_epoch = ?"
                f" AND lease_expires IS NOT NULL RETURNING {_LEASE_COLUMNS}",
                (self._time_in(now + timedelta(seconds=seconds)), lease.job_id, lease.owner, lease.epoch),
            ).fetchone()
            if row is None:
                found = self._exec(conn, f"SELECT {_LEASE_COLUMNS} FROM {table} WHERE id = ?",
                                   (lease.job_id,)).fetchone()
                now_held = self._lease(lease.kind, found) if found is not None else None
                if now_held is None:
                    detail = "the job is gone"
                elif now_held.expires_at is None and now_held.epoch == lease.epoch:
                    detail = "the lease was released"
                else:
                    detail = f"hub process {now_held.owner} claimed it (claim {now_held.epoch})"
                raise LeaseLost(lease.kind, lease.job_id, lease.owner, detail)
        return self._lease(lease.kind, row)

    def release_lease(self, lease: Lease, *, hand_over: bool = False) -> bool:
        table = self._lease_table(lease.kind)
        with self._transaction() as conn:
            until = self._time_in(self._clock(conn)) if hand_over else None
            cursor = self._exec(
                conn, f"UPDATE {table} SET lease_expires = ? WHERE id = ? AND lease_owner = ? AND lease_epoch = ?"
                " AND lease_expires IS NOT NULL", (until, lease.job_id, lease.owner, lease.epoch),
            )
            return cursor.rowcount > 0
