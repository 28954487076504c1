"""The agent's durable journal: operations, their progress events and per-project facts.

SQLite in WAL mode under the state directory. All calls are synchronous and
short; the agent calls them from its event loop thread only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time as _time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from agent.model import (
    OperationError,
    OperationKind,
    OperationRecord,
    OperationState,
    ProgressEvent,
    ProjectOutcome,
    Summary,
)

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    project_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    summary TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    recovery TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS operations_project ON operations(project_id, created_at);
CREATE INDEX IF NOT EXISTS operations_state ON operations(state);
-- A project's newest operations of some states (its last failure in GetProjectStatus) without
-- walking all its operations: scheduled backups make thousands per project.
CREATE INDEX IF NOT EXISTS operations_project_state ON operations(project_id, state, created_at);
CREATE TABLE IF NOT EXISTS events (
    operation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (operation_id, seq)
);
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY,
    last_backup_time REAL,
    last_backup_snapshot TEXT,
    last_backup_operation TEXT,
    last_backup_generation TEXT,
    last_backup_repository TEXT,
    last_change_time REAL,
    seen_generation TEXT,
    last_restore TEXT,
    unprotected_since REAL,
    looked_time REAL
);
CREATE TABLE IF NOT EXISTS request_aliases (
    request_id TEXT PRIMARY KEY,
    operation_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    repository TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    tags TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    files INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (repository, snapshot_id)
);
CREATE TABLE IF NOT EXISTS precopies (
    project_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    staging TEXT NOT NULL,
    repository TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    base_snapshot_id TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_state (
    project_id TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    last_attempt REAL,
    last_operation TEXT,
    last_error TEXT,
    last_retention REAL
);
"""

# unprotected_since after a backup (or a check) that found the data at {at}: a change recorded
# after that moment may not be in it, and was made after it (so never before {at}); none: clean.
_PROTECTED_AFTER = ("CASE WHEN CAST(last_change_time AS REAL) > {at}"
                    " THEN max(coalesce(unprotected_since, {at}), {at}) ELSE NULL END")
# The freshness facts of a project (:meth:`Journal.freshness`).
FRESHNESS_COLUMNS = ("last_backup_time", "last_backup_snapshot", "last_backup_generation", "last_change_time",
                     "seen_generation", "unprotected_since")
# The columns of a project's scheduler state (:meth:`Journal.schedule_state`).
SCHEDULE_COLUMNS = ("project_id", "failures", "next_attempt", "last_attempt", "last_operation", "last_error",
                    "last_retention")

# The columns of a pre-copy record (:meth:`Journal.precopy`).
PRECOPY_COLUMNS = ("project_id", "key", "staging", "repository", "snapshot_id", "base_snapshot_id", "state",
                   "created_at", "updated_at")


def _summary_to_json(summary: Summary | None) -> str | None:
    if summary is None:
        return None
    data = dataclasses.asdict(summary)
    data["state"] = summary.state.value
    for outcome in data["projects"]:
        outcome["state"] = OperationState(outcome["state"]).value
    return json.dumps(data)


def _summary_from_json(text: str | None) -> Summary | None:
    """Inverse of :func:`_summary_to_json`; rows written before a field existed get its default."""
    if not text:
        return None
    data = json.loads(text)
    data["warnings"] = tuple(data.get("warnings", ()))
    data["state"] = OperationState(data.get("state", OperationState.SUCCEEDED.value))
    data["projects"] = tuple(_outcome_from_dict(item) for item in data.get("projects", ()))
    return Summary(**data)


def _outcome_from_dict(data: dict) -> ProjectOutcome:
    return ProjectOutcome(
        project_id=data["project_id"],
        state=OperationState(data["state"]),
        snapshot_id=data.get("snapshot_id", ""),
        error=OperationError(**data["error"]) if data.get("error") else None,
        operation_id=data.get("operation_id", ""),
    )


def _error_to_json(error: OperationError | None) -> str | None:
    return None if error is None else json.dumps(dataclasses.asdict(error))


def _error_from_json(text: str | None) -> OperationError | None:
    return None if not text else OperationError(**json.loads(text))


def event_to_json(event: ProgressEvent) -> str:
    """Serialise an event for the journal."""
    data = dataclasses.asdict(event)
    data["state"] = event.state.value
    data["summary"] = json.loads(_summary_to_json(event.summary) or "null")
    return json.dumps(data)


def event_from_json(text: str) -> ProgressEvent:
    """Inverse of :func:`event_to_json`."""
    data = json.loads(text)
    data["state"] = OperationState(data["state"])
    data["summary"] = _summary_from_json(json.dumps(data["summary"]) if data.get("summary") else None)
    data["error"] = OperationError(**data["error"]) if data.get("error") else None
    return ProgressEvent(**data)


class Journal:
    """Takes the path of the SQLite file; creates it and its schema when missing.

    ``on_freshness_change`` (optional) is called with a project id after every write of that
    project's freshness facts (a backup, a change, its deletion): how the metrics follow them.
    """

    def __init__(self, path: Path, *, on_freshness_change: Callable[[str], None] | None = None) -> None:
        self._on_freshness_change = on_freshness_change or (lambda project_id: None)
        # project id → when the last freshness look at it began (see last_look): one write per
        # look would cost a transaction per project per reconcile cycle.
        self._looks: dict[str, float] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (what SIGKILL does); only an OS
        # crash may lose the newest transactions, which recovery treats like a kill.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version < 2:
            # 2: the generation and repository of the last backup, for the unchanged-project skip;
            # freshness (last change, the generation last seen) and the last restore receipt;
            # the snapshots table (created by the schema script) of snapshots this agent wrote.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(projects)")}
            for column in ("last_backup_generation", "last_backup_repository", "last_change_time",
                           "seen_generation", "last_restore"):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE projects ADD COLUMN {column} TEXT")
            self._db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        if version < 3:
            # 3: the precopies table (created by the schema script): a move's staged pre-copies.
            self._db.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
        if version < 4:
            # 4: unprotected_since (the oldest change not in a backup) and looked_time (the last
            # look at the generations, kept at close). The oldest unprotected change of a project
            # that was dirty is not known: every change after its last backup happened after that
            # backup's capture, the earliest bound; a never backed up project is unprotected since
            # its first recorded change (else since now: the agent sees it first now).
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(projects)")}
            for column in ("unprotected_since", "looked_time"):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE projects ADD COLUMN {column} REAL")
            self._db.execute(
                "UPDATE projects SET unprotected_since = CASE"
                " WHEN last_backup_time IS NULL THEN coalesce(last_change_time, ?)"
                " WHEN last_change_time > last_backup_time THEN last_backup_time ELSE NULL END",
                (_time.time(),))
            self._db.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
        if version < 5:
            # 5: the schedule_state table (created by the schema script): the backup scheduler's
            # per-project failures in a row, next attempt, last error and last retention.
            self._db.execute("UPDATE meta SET value='5' WHERE key='schema_version'")

    def close(self) -> None:
        """Write the looks of this process (see :meth:`last_look`) and close the file."""
        if self._looks:
            self._write_looks()
        self._db.close()

    # ------------------------------------------------------------ operations

    def insert_operation(self, record: OperationRecord) -> None:
        self._db.execute(
            "INSERT INTO operations(id, request_id, kind, project_id, fingerprint, params, state,"
            " created_at, last_seq, recovery) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                record.id,
                record.request_id,
                record.kind.value,
                record.project_id,
                record.fingerprint,
                json.dumps(record.params),
                record.state.value,
                record.created_at,
                record.last_seq,
                json.dumps(record.recovery),
            ),
        )

    def update_operation(self, record: OperationRecord) -> None:
        self._db.execute(
            "UPDATE operations SET state=?, started_at=?, finished_at=?, error=?, summary=?,"
            " last_seq=?, recovery=? WHERE id=?",
            (
                record.state.value,
                record.started_at,
                record.finished_at,
                _error_to_json(record.error),
                _summary_to_json(record.summary),
                record.last_seq,
                json.dumps(record.recovery),
                record.id,
            ),
        )

    def get_operation(self, operation_id: str) -> OperationRecord | None:
        row = self._db.execute("SELECT * FROM operations WHERE id=?", (operation_id,)).fetchone()
        return None if row is None else self._record(row)

    def find_by_request_id(self, request_id: str) -> OperationRecord | None:
        """The operation a request id started or joined, or None."""
        row = self._db.execute(
            "SELECT * FROM operations WHERE request_id=? UNION ALL"
            " SELECT operations.* FROM request_aliases JOIN operations ON operations.id = request_aliases.operation_id"
            " WHERE request_aliases.request_id=? LIMIT 1",
            (request_id, request_id),
        ).fetchone()
        return None if row is None else self._record(row)

    def add_request_alias(self, request_id: str, operation_id: str) -> None:
        """Record that ``request_id`` joined ``operation_id``."""
        self._db.execute(
            "INSERT OR IGNORE INTO request_aliases(request_id, operation_id) VALUES (?,?)", (request_id, operation_id)
        )

    def list_operations(
        self,
        *,
        project_id: str | None = None,
        states: Iterable[OperationState] = (),
        before: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[OperationRecord]:
        """Newest first; ``before`` = (created_at, id) of the last row of the previous page."""
        clauses, args = [], []
        if project_id:
            clauses.append("project_id=?")
            args.append(project_id)
        state_values = [s.value for s in states]
        if state_values:
            clauses.append(f"state IN ({','.join('?' * len(state_values))})")
            args.extend(state_values)
        if before is not None:
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend([before[0], before[0], before[1]])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT * FROM operations {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit)
        ).fetchall()
        return [self._record(row) for row in rows]

    def unfinished_operations(self) -> list[OperationRecord]:
        """Operations left PENDING, RUNNING or CANCELLING (by a previous agent process)."""
        return self.list_operations(
            states=[OperationState.PENDING, OperationState.RUNNING, OperationState.CANCELLING], limit=1_000_000
        )

    @staticmethod
    def _record(row: sqlite3.Row) -> OperationRecord:
        return OperationRecord(
            id=row["id"],
            request_id=row["request_id"],
            kind=OperationKind(row["kind"]),
            project_id=row["project_id"],
            fingerprint=row["fingerprint"],
            params=json.loads(row["params"]),
            state=OperationState(row["state"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=_error_from_json(row["error"]),
            summary=_summary_from_json(row["summary"]),
            last_seq=row["last_seq"],
            recovery=json.loads(row["recovery"]),
        )

    # ------------------------------------------------------------ events

    def append_event(self, event: ProgressEvent, record: OperationRecord) -> None:
        """Store the event and the operation's new state in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO events(operation_id, seq, body) VALUES (?,?,?)",
                (event.operation_id, event.seq, event_to_json(event)),
            )
            self.update_operation(record)

    def events_since(self, operation_id: str, from_seq: int) -> list[ProgressEvent]:
        rows = self._db.execute(
            "SELECT body FROM events WHERE operation_id=? AND seq>=? ORDER BY seq", (operation_id, from_seq)
        ).fetchall()
        return [event_from_json(row["body"]) for row in rows]

    def last_event(self, operation_id: str) -> ProgressEvent | None:
        """The operation's event with the highest seq (its terminal one once it ended); None: none."""
        row = self._db.execute(
            "SELECT body FROM events WHERE operation_id=? ORDER BY seq DESC LIMIT 1", (operation_id,)
        ).fetchone()
        return None if row is None else event_from_json(row["body"])

    # ------------------------------------------------------------ projects

    def record_backup(
        self,
        project_id: str,
        *,
        time: float,
        snapshot_id: str,
        operation_id: str,
        generation: str | None = None,
        repository: str | None = None,
    ) -> None:
        """Record a successful backup that captured the project's data at ``time``; ``generation``
        (what the backup read) and ``repository`` (where it went) let the next backup of an
        unchanged project be skipped. A change recorded after the capture (while the backup ran)
        stays unprotected: see :data:`_PROTECTED_AFTER`."""
        self._db.execute(
            "INSERT INTO projects(project_id, last_backup_time, last_backup_snapshot, last_backup_operation,"
            " last_backup_generation, last_backup_repository)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(project_id) DO UPDATE SET last_backup_time=excluded.last_backup_time,"
            " last_backup_snapshot=excluded.last_backup_snapshot,"
            " last_backup_operation=excluded.last_backup_operation,"
            " last_backup_generation=excluded.last_backup_generation,"
            " last_backup_repository=excluded.last_backup_repository,"
            f" unprotected_since={_PROTECTED_AFTER.format(at='excluded.last_backup_time')}",
            (project_id, time, snapshot_id, operation_id, generation, repository),
        )
        if generation is not None:
            self.set_seen_generation(project_id, generation)
        self._on_freshness_change(project_id)

    def backed_up_generation(self, project_id: str, repository: str) -> tuple[str, str] | None:
        """(generation, snapshot id) of the project's last successful backup into ``repository``,
        when its generation was known; else None."""
        row = self._db.execute(
            "SELECT last_backup_generation, last_backup_snapshot FROM projects WHERE project_id=?"
            " AND last_backup_repository=? AND last_backup_generation IS NOT NULL",
            (project_id, repository),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _ensure_project_row(self, project_id: str) -> None:
        # A project the journal first hears of now has no backup: unprotected since now (the
        # agent cannot know since when its data existed). A first record_backup inserts its own
        # row, protected.
        self._db.execute("INSERT OR IGNORE INTO projects(project_id, unprotected_since) VALUES (?,?)",
                         (project_id, _time.time()))

    def freshness(self, project_id: str) -> dict:
        """The freshness facts of a project (every value None when unknown)."""
        row = self._db.execute(
            f"SELECT {', '.join(FRESHNESS_COLUMNS)} FROM projects WHERE project_id=?", (project_id,)
        ).fetchone()
        return dict(zip(FRESHNESS_COLUMNS, row)) if row is not None else dict.fromkeys(FRESHNESS_COLUMNS)

    def freshness_all(self) -> dict[str, dict]:
        """:meth:`freshness` of every project the journal knows, in one query (the reconciler's
        cycle and host status at 10,000 projects); a project it does not know is absent."""
        cursor = self._db.cursor()
        cursor.row_factory = None  # plain tuples: sqlite3.Row costs more than the query at 10,000 rows
        rows = cursor.execute(f"SELECT project_id, {', '.join(FRESHNESS_COLUMNS)} FROM projects")
        return {row[0]: dict(zip(FRESHNESS_COLUMNS, row[1:])) for row in rows}

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes in one transaction (one commit instead of one each: a reconcile cycle that
        finds thousands of changes). Whatever ran is committed in every outcome, never rolled back:
        a change recorded must stay recorded."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def mark_changed(self, project_id: str, when: float, *, since: float | None = None) -> None:
        """Record a data change seen at ``when`` that was made at ``since`` or later (default:
        at ``when``; a change whose moment is not known passes the earliest it may have been
        made). last_change only ever moves forward (it decides dirty); unprotected_since only
        ever moves back, and never before the last backup's capture (every change not in a
        backup was made after it). A change at or before the last backup's capture is in it."""
        earliest = when if since is None else min(since, when)
        self._ensure_project_row(project_id)
        self._db.execute(
            "UPDATE projects SET last_change_time = max(coalesce(last_change_time, 0), :when),"
            " unprotected_since = CASE WHEN last_backup_time IS NOT NULL AND :when <= last_backup_time"
            " THEN unprotected_since"
            " ELSE min(coalesce(unprotected_since, max(:earliest, coalesce(last_backup_time, :earliest))),"
            " max(:earliest, coalesce(last_backup_time, :earliest)))"
            " END WHERE project_id=:project",
            {"when": when, "earliest": earliest, "project": project_id},
        )
        self._on_freshness_change(project_id)

    def confirm_unchanged(self, project_id: str, time: float) -> None:
        """The project's data was found equal to its last backup at ``time`` (its generation
        was still the one the backup read, read after ``time``): as protected then as right after
        that backup. Changes recorded at ``time`` or before are in it; later ones stay."""
        self._db.execute(
            "UPDATE projects SET last_backup_time = max(last_backup_time, :at),"
            f" unprotected_since = {_PROTECTED_AFTER.format(at=':at')}"
            " WHERE project_id=:project AND last_backup_time IS NOT NULL",
            {"at": time, "project": project_id},
        )
        self._on_freshness_change(project_id)

    def note_look(self, project_id: str, when: float) -> None:
        """A freshness look at the project began at ``when`` (kept in memory; written at close).
        Only ever moves forward: looks run concurrently (a reconcile cycle, a GetProjectStatus),
        and one that began earlier but ended later read the generation no later than the other."""
        self._looks[project_id] = max(when, self._looks.get(project_id, when))

    def last_look(self, project_id: str) -> float | None:
        """When the last look at the project began: this process's, else the one written at the
        last close, else the last backup's capture (the generation was the backup's then); None
        when unknown. A generation that differs from the one seen was changed after it."""
        return self.last_looks([project_id])[project_id]

    def last_looks(self, project_ids: Iterable[str]) -> dict[str, float | None]:
        """:meth:`last_look` of each of ``project_ids``, those this process has not looked at read
        in one query (a reconcile cycle at 10,000 projects)."""
        found = {project_id: self._looks.get(project_id) for project_id in project_ids}
        unknown = [project_id for project_id, when in found.items() if when is None]
        if len(unknown) == 1:
            rows = self._db.execute("SELECT project_id, looked_time, last_backup_time FROM projects"
                                    " WHERE project_id=?", (unknown[0],))
        elif unknown:
            rows = self._db.execute("SELECT project_id, looked_time, last_backup_time FROM projects")
        else:
            rows = ()
        wanted = set(unknown)
        for project_id, looked, backed_up in rows:
            if project_id in wanted:
                known = [value for value in (looked, backed_up) if value is not None]
                found[project_id] = max(known) if known else None
        return found

    def _write_looks(self) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE projects SET looked_time=? WHERE project_id=?",
                                 [(when, project_id) for project_id, when in self._looks.items()])

    def project_ages(self) -> list[tuple[str, float | None, float | None, float | None]]:
        """(project id, last backup time, last change time, unprotected since) of every project the
        journal knows: one query over the projects table, what GetHostStatus needs of each project
        (its dirty flag and its unprotected age) at 10,000 projects."""
        return [tuple(row) for row in self._db.execute(
            "SELECT project_id, last_backup_time, CAST(last_change_time AS REAL), unprotected_since FROM projects")]

    def ensure_projects(self, project_ids: Iterable[str]) -> None:
        """Give projects the journal never heard of their row (never backed up: unprotected
        since now), in one transaction."""
        now = _time.time()
        added = []
        with self._db:
            self._db.execute("BEGIN")
            for project_id in project_ids:
                if self._db.execute("INSERT OR IGNORE INTO projects(project_id, unprotected_since) VALUES (?,?)",
                                    (project_id, now)).rowcount:
                    added.append(project_id)
        for project_id in added:
            self._on_freshness_change(project_id)

    def last_backup_failed(self, project_ids: Iterable[str]) -> set[str]:
        """Those of ``project_ids`` whose newest finished backup operation FAILED (one query)."""
        ids = list(project_ids)
        if not ids:
            return set()
        finished = [state.value for state in (OperationState.SUCCEEDED, OperationState.SUCCEEDED_WITH_WARNINGS,
                                              OperationState.UP_TO_DATE, OperationState.FAILED)]
        found = set()
        for start in range(0, len(ids), 500):  # SQLite's bound on host parameters
            chunk = ids[start:start + 500]
            rows = self._db.execute(
                "SELECT project_id, state FROM (SELECT project_id, state, row_number() OVER"
                " (PARTITION BY project_id ORDER BY coalesce(finished_at, created_at) DESC, created_at DESC) AS n"
                f" FROM operations WHERE kind=? AND state IN ({','.join('?' * len(finished))})"
                f" AND project_id IN ({','.join('?' * len(chunk))})) WHERE n=1",
                (OperationKind.BACKUP.value, *finished, *chunk),
            ).fetchall()
            found.update(row[0] for row in rows if row[1] == OperationState.FAILED.value)
        return found

    def set_seen_generation(self, project_id: str, generation: str) -> None:
        self._ensure_project_row(project_id)
        self._db.execute("UPDATE projects SET seen_generation=? WHERE project_id=?", (generation, project_id))

    def record_restore(self, project_id: str, *, snapshot_id: str, time: float, operation_id: str) -> None:
        """The restore receipt: which snapshot a restore put in place, when, by which operation."""
        self._ensure_project_row(project_id)
        receipt = json.dumps({"snapshot_id": snapshot_id, "time": time, "operation_id": operation_id})
        self._db.execute("UPDATE projects SET last_restore=? WHERE project_id=?", (receipt, project_id))

    def undo_backup_state(self, project_id: str, when: float) -> None:
        """An undo put back a tree that is neither the last backup nor the last restore: record a
        change at ``when``, drop the backed-up generation (the next backup is never skipped as
        unchanged) and the restore receipt."""
        self._ensure_project_row(project_id)
        self._db.execute("UPDATE projects SET last_backup_generation=NULL, last_restore=NULL WHERE project_id=?",
                         (project_id,))
        self.mark_changed(project_id, when)

    def last_restore(self, project_id: str) -> dict | None:
        row = self._db.execute("SELECT last_restore FROM projects WHERE project_id=?", (project_id,)).fetchone()
        return json.loads(row[0]) if row is not None and row[0] else None

    def known_projects(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT project_id FROM projects ORDER BY project_id")]

    def forget_project(self, project_id: str, repository: str | None = None) -> None:
        """Drop what the journal knows of a deleted project (its operations stay as history), and
        of its snapshots in ``repository`` when that was deleted too."""
        self._db.execute("DELETE FROM projects WHERE project_id=?", (project_id,))
        self._looks.pop(project_id, None)
        self._db.execute("DELETE FROM schedule_state WHERE project_id=?", (project_id,))
        if repository is not None:
            self._db.execute("DELETE FROM snapshots WHERE project_id=? AND repository=?", (project_id, repository))
        self._on_freshness_change(project_id)

    def forget_snapshots(self, repository: str, snapshot_ids: list[str]) -> None:
        """Drop forgotten snapshots (full ids; records may hold short ones)."""
        for snapshot_id in snapshot_ids:
            self._db.execute(
                "DELETE FROM snapshots WHERE repository=? AND snapshot_id = substr(?, 1, length(snapshot_id))",
                (repository, snapshot_id),
            )

    def record_snapshot(
        self, *, repository: str, snapshot_id: str, project_id: str, tags: list[str], bytes: int, files: int,
        time: float,
    ) -> None:
        """Remember a snapshot this agent wrote: its tags and its size (for restores without a lookup)."""
        self._db.execute(
            "INSERT OR REPLACE INTO snapshots(repository, snapshot_id, project_id, tags, bytes, files, time)"
            " VALUES (?,?,?,?,?,?,?)",
            (repository, snapshot_id, project_id, json.dumps(tags), bytes, files, time),
        )

    def known_snapshot(self, repository: str, snapshot_id: str) -> dict | None:
        """The one snapshot this agent wrote to ``repository`` whose id and ``snapshot_id`` (each at
        least 8 hex digits) are prefixes of one another; None when there is no such or more than one."""
        if len(snapshot_id) < 8:
            return None
        rows = self._db.execute(
            "SELECT snapshot_id, project_id, tags, bytes, files, time FROM snapshots WHERE repository=?"
            " AND (snapshot_id = substr(?, 1, length(snapshot_id)) OR substr(snapshot_id, 1, ?) = ?)",
            (repository, snapshot_id, len(snapshot_id), snapshot_id),
        ).fetchall()
        if len(rows) != 1:
            return None
        row = rows[0]
        return {"snapshot_id": row[0], "project_id": row[1], "tags": json.loads(row[2]), "bytes": row[3],
                "files": row[4], "time": row[5]}

    def last_backup(self, project_id: str) -> tuple[float, str, str] | None:
        """Return (time, snapshot id, operation id) of the project's last successful backup, or None."""
        row = self._db.execute(
            "SELECT last_backup_time, last_backup_snapshot, last_backup_operation FROM projects"
            " WHERE project_id=? AND last_backup_time IS NOT NULL",
            (project_id,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    # ------------------------------------------------------------ pre-copies

    def put_precopy(
        self, project_id: str, *, key: str, staging: str, repository: str, snapshot_id: str, state: str,
        base_snapshot_id: str | None = None, now: float,
    ) -> None:
        """Record the project's pre-copy (replacing any earlier record of the project: one each)."""
        self._db.execute(
            "INSERT OR REPLACE INTO precopies(project_id, key, staging, repository, snapshot_id, base_snapshot_id,"
            " state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (project_id, key, staging, repository, snapshot_id, base_snapshot_id, state, now, now),
        )

    def set_precopy_state(
        self, project_id: str, *, state: str, snapshot_id: str, base_snapshot_id: str | None, now: float,
    ) -> None:
        """Change the state of the project's pre-copy: what it holds (or is being brought to) and,
        while catching up, the snapshot it held before."""
        self._db.execute(
            "UPDATE precopies SET state=?, snapshot_id=?, base_snapshot_id=?, updated_at=? WHERE project_id=?",
            (state, snapshot_id, base_snapshot_id, now, project_id),
        )

    def precopy(self, project_id: str) -> dict | None:
        """The project's pre-copy record (keys :data:`PRECOPY_COLUMNS`), or None."""
        row = self._db.execute(
            f"SELECT {', '.join(PRECOPY_COLUMNS)} FROM precopies WHERE project_id=?", (project_id,)
        ).fetchone()
        return None if row is None else dict(zip(PRECOPY_COLUMNS, row))

    def precopies(self) -> list[dict]:
        """Every pre-copy record, oldest change first."""
        rows = self._db.execute(f"SELECT {', '.join(PRECOPY_COLUMNS)} FROM precopies ORDER BY updated_at").fetchall()
        return [dict(zip(PRECOPY_COLUMNS, row)) for row in rows]

    def remove_precopy(self, project_id: str, staging: str | None = None) -> None:
        """Drop the project's pre-copy record (only the one of ``staging`` when given)."""
        if staging is None:
            self._db.execute("DELETE FROM precopies WHERE project_id=?", (project_id,))
        else:
            self._db.execute("DELETE FROM precopies WHERE project_id=? AND staging=?", (project_id, staging))

    # ------------------------------------------------------------ scheduler state

    def schedule_state(self, project_id: str) -> dict | None:
        """The scheduler's state of one project (SCHEDULE_COLUMNS; ``last_error`` a dict with
        ``code`` and ``message`` or None), None when it has none."""
        row = self._db.execute("SELECT * FROM schedule_state WHERE project_id=?", (project_id,)).fetchone()
        return self._schedule_row(row) if row is not None else None

    def schedule_states(self) -> dict[str, dict]:
        """Every project's scheduler state, by project id (one query for the whole host)."""
        return {row["project_id"]: self._schedule_row(row) for row in self._db.execute("SELECT * FROM schedule_state")}

    @staticmethod
    def _schedule_row(row: sqlite3.Row) -> dict:
        state = {column: row[column] for column in SCHEDULE_COLUMNS}
        state["last_error"] = json.loads(row["last_error"]) if row["last_error"] else None
        return state

    def record_schedule_outcome(self, project_id: str, *, attempt: float, operation_id: str,
                                error: OperationError | None, next_attempt: float | None) -> None:
        """After a scheduled backup ended: a success clears the failures, a failure adds one and
        keeps its error; ``next_attempt`` is the earliest time of the next one (None: no wait)."""
        error_text = json.dumps({"code": error.code, "message": error.message}) if error else None
        self._db.execute(
            "INSERT INTO schedule_state(project_id, failures, next_attempt, last_attempt, last_operation, last_error)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(project_id) DO UPDATE SET"
            " failures=CASE WHEN excluded.last_error IS NULL THEN 0 ELSE schedule_state.failures + 1 END,"
            " next_attempt=excluded.next_attempt, last_attempt=excluded.last_attempt,"
            " last_operation=excluded.last_operation, last_error=excluded.last_error",
            (project_id, 1 if error else 0, next_attempt, attempt, operation_id, error_text),
        )

    def record_schedule_retention(self, project_id: str, when: float) -> None:
        self._db.execute(
            "INSERT INTO schedule_state(project_id, last_retention) VALUES (?, ?)"
            " ON CONFLICT(project_id) DO UPDATE SET last_retention=excluded.last_retention",
            (project_id, when),
        )

    def forget_schedule_state(self, project_id: str) -> None:
        self._db.execute("DELETE FROM schedule_state WHERE project_id=?", (project_id,))
