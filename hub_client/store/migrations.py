"""Versioned schema migrations: an ordered list of SQL steps per dialect.

Each :class:`Migration` has a version (1, 2, 3 … with no gaps) and the statements that take the
schema from the previous version to it. A store records every applied version in
``schema_version`` inside the same transaction as the statements, so a migration is applied
completely or not at all, and applying again is a no-op. New migrations are appended to both
dialects' lists with the same version number; applied ones are never edited.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub_client.store.models import Cleanup, Conflict, MoveStatus

_ACTIVE = ", ".join(f"'{status}'" for status in sorted(MoveStatus.ACTIVE))
_ALL = ", ".join(f"'{status}'" for status in sorted(MoveStatus.ALL))
_CLEANUP = ", ".join(f"'{state}'" for state in sorted(Cleanup.ALL))
_CONFLICT = ", ".join(f"'{rule}'" for rule in sorted(Conflict.ALL))

# The name the dialects' error translation looks for: a violation of this index means "a move of
# this project is already active".
ACTIVE_MOVE_INDEX = "moves_one_active"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


BOOTSTRAP = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
}


def _initial(text: str, time: str, boolean: str, json: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE hosts (
            id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            region TEXT NOT NULL,
            status TEXT NOT NULL,
            last_seen {time})""",
        f"""CREATE TABLE projects (
            id TEXT PRIMARY KEY,
            host_id TEXT REFERENCES hosts(id),
            region TEXT NOT NULL,
            repository {text} NOT NULL DEFAULT '',
            last_backup {time},
            last_edited {time})""",
        "CREATE INDEX projects_host ON projects(host_id)",
        f"""CREATE TABLE moves (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL REFERENCES projects(id),
            source_host TEXT NOT NULL REFERENCES hosts(id),
            target_host TEXT NOT NULL REFERENCES hosts(id),
            step TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ({_ALL})),
            force {boolean} NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            log_seq INTEGER NOT NULL DEFAULT 0,
            created_at {time} NOT NULL,
            updated_at {time} NOT NULL)""",
        # At most one active move per project, enforced by the database for every writer.
        f"CREATE UNIQUE INDEX {ACTIVE_MOVE_INDEX} ON moves(project_id) WHERE status IN ({_ACTIVE})",
        "CREATE INDEX moves_project ON moves(project_id, created_at)",
        f"""CREATE TABLE movelog (
            move_id TEXT NOT NULL REFERENCES moves(id),
            seq INTEGER NOT NULL,
            "time" {time} NOT NULL,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            data {json} NOT NULL,
            PRIMARY KEY (move_id, seq))""",
    )


def _move_state() -> tuple[str, ...]:
    # What a resumed move needs besides its step: the exact snapshot the target restores (never
    # "latest" resolved later), and whether the source's copy still has to be removed.
    return (
        "ALTER TABLE moves ADD COLUMN snapshot_id TEXT",
        f"ALTER TABLE moves ADD COLUMN cleanup TEXT NOT NULL DEFAULT 'none'"
        f" CHECK (cleanup IN ({_CLEANUP}))",
    )


def _host_backup(time: str) -> tuple[str, ...]:
    # What the hub knows of a host's backups (from its agent's counts and the last drain), and
    # what a host turned off without a drain may have taken with it.
    return (
        f"""CREATE TABLE host_backup_status (
            host_id TEXT PRIMARY KEY REFERENCES hosts(id),
            projects INTEGER NOT NULL,
            dirty INTEGER NOT NULL,
            up_to_date INTEGER NOT NULL,
            never_backed_up INTEGER NOT NULL,
            failing INTEGER NOT NULL,
            checked_at {time} NOT NULL)""",
        f"""CREATE TABLE offline_losses (
            host_id TEXT NOT NULL REFERENCES hosts(id),
            project_id TEXT NOT NULL,
            last_backup {time},
            last_edited {time},
            loss_minutes INTEGER,
            recorded_at {time} NOT NULL,
            PRIMARY KEY (host_id, project_id, recorded_at))""",
    )


def _copies(time: str, boolean: str, json: str) -> tuple[str, ...]:
    # Copies keep their hosts (as placed when the copy was created) and the temporary snapshot
    # of a copy between hosts; their log has the movelog's shape, so one writer and one reader serve both.
    # No foreign keys to projects: a copy's record outlives neither project (deletion removes
    # it) but must not stop a project row from being replaced.
    return (
        f"""CREATE TABLE copies (
            id TEXT PRIMARY KEY,
            source_project TEXT NOT NULL,
            source_path TEXT NOT NULL,
            target_project TEXT NOT NULL,
            target_path TEXT NOT NULL,
            on_conflict TEXT NOT NULL CHECK (on_conflict IN ({_CONFLICT})),
            source_host TEXT NOT NULL REFERENCES hosts(id),
            target_host TEXT NOT NULL REFERENCES hosts(id),
            step TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ({_ALL})),
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            snapshot_id TEXT,
            log_seq INTEGER NOT NULL DEFAULT 0,
            created_at {time} NOT NULL,
            updated_at {time} NOT NULL)""",
        "CREATE INDEX copies_source ON copies(source_project, status)",
        "CREATE INDEX copies_target ON copies(target_project, status)",
        f"""CREATE TABLE copylog (
            copy_id TEXT NOT NULL REFERENCES copies(id),
            seq INTEGER NOT NULL,
            "time" {time} NOT NULL,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            data {json} NOT NULL,
            PRIMARY KEY (copy_id, seq))""",
        # A move that changes the project's backup region (its repository copied between buckets).
        f"ALTER TABLE moves ADD COLUMN cross_region {boolean} NOT NULL DEFAULT FALSE",
    )


def _freshness_and_rescues(time: str) -> tuple[str, ...]:
    # The hub keeps each project's freshness as its agent reported it, with when: a move whose
    # source is down must know whether that report is fresh enough to vouch for anything.
    # A rescue is a snapshot of a source copy that held changes newer than the moved snapshot,
    # taken before the copy was removed.
    return (
        "ALTER TABLE projects ADD COLUMN last_backup_snapshot TEXT NOT NULL DEFAULT ''",
        f"ALTER TABLE projects ADD COLUMN reported_at {time}",
        f"""CREATE TABLE rescues (
            move_id TEXT NOT NULL REFERENCES moves(id),
            project_id TEXT NOT NULL,
            host_id TEXT NOT NULL,
            snapshot_id TEXT NOT NULL,
            created_at {time} NOT NULL,
            bytes_added BIGINT NOT NULL DEFAULT 0,
            files_new BIGINT NOT NULL DEFAULT 0,
            files_changed BIGINT NOT NULL DEFAULT 0,
            bytes_processed BIGINT NOT NULL DEFAULT 0,
            files_processed BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (move_id, snapshot_id))""",
        "CREATE INDEX rescues_project ON rescues(project_id, created_at)",
    )


def _frozen_window(time: str) -> tuple[str, ...]:
    # A move's frozen window, kept with the move so that it survives hub restarts: when its freeze
    # step started (cleared when a failure thawed the source), when placement changed, and what
    # was caught up after the freeze (the catch-up restore's fetched bytes; plus the final
    # repository sync's copied bytes for a cross-region move).
    return (
        f"ALTER TABLE moves ADD COLUMN frozen_at {time}",
        f"ALTER TABLE moves ADD COLUMN placed_at {time}",
        "ALTER TABLE moves ADD COLUMN caught_up_bytes BIGINT",
        "CREATE INDEX moves_placed ON moves(placed_at)",
    )


def _leases(time: str, epoch: str) -> tuple[str, ...]:
    # Who owns a move's or a copy's execution (a hub process), the claim counter that fences an
    # owner whose lease was taken over, and until when the lease holds (the store's clock). A
    # running job from before leases gets a lease that lapsed long ago: a worker takes it up.
    statements: list[str] = []
    for table in ("moves", "copies"):
        statements += [
            f"ALTER TABLE {table} ADD COLUMN lease_owner TEXT",
            f"ALTER TABLE {table} ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0",
            f"ALTER TABLE {table} ADD COLUMN lease_claimed_at {time}",
            f"ALTER TABLE {table} ADD COLUMN lease_expires {time}",
            f"UPDATE {table} SET lease_expires = {epoch} WHERE status = 'running'",
            f"CREATE INDEX {table}_lease ON {table}(lease_expires)",
        ]
    return tuple(statements)


def _force_target(boolean: str) -> tuple[str, ...]:
    # ``force`` used to mean both "accept the loss of edits newer than the last backup" and "move
    # to a target that is draining or was not seen recently"; the second is force_target now. A
    # move recorded with force before the split keeps both meanings it was asked with.
    return (
        f"ALTER TABLE moves ADD COLUMN force_target {boolean} NOT NULL DEFAULT FALSE",
        "UPDATE moves SET force_target = force",
    )


# The moment a lease of a job that was running before leases existed "lapsed", in each dialect's
# time representation (SQLite: ISO 8601 text with microseconds, which sorts as time).
_LONG_AGO = {"sqlite": "'1970-01-01T00:00:00.000000+00:00'", "postgres": "'1970-01-01 00:00:00+00'"}


MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "sqlite": (
        Migration(1, "hosts, projects, moves, movelog", _initial("TEXT", "TEXT", "INTEGER", "TEXT")),
        Migration(2, "moves: snapshot_id, cleanup", _move_state()),
        Migration(3, "host backup status, offline losses", _host_backup("TEXT")),
        Migration(4, "copies, copylog; moves.cross_region", _copies("TEXT", "INTEGER", "TEXT")),
        Migration(5, "projects: last_backup_snapshot, reported_at; rescues", _freshness_and_rescues("TEXT")),
        Migration(6, "moves: frozen_at, placed_at, caught_up_bytes", _frozen_window("TEXT")),
        Migration(7, "moves, copies: leases", _leases("TEXT", _LONG_AGO["sqlite"])),
        Migration(8, "moves: force_target", _force_target("INTEGER")),
    ),
    "postgres": (
        Migration(1, "hosts, projects, moves, movelog", _initial("TEXT", "TIMESTAMPTZ", "BOOLEAN", "JSONB")),
        Migration(2, "moves: snapshot_id, cleanup", _move_state()),
        Migration(3, "host backup status, offline losses", _host_backup("TIMESTAMPTZ")),
        Migration(4, "copies, copylog; moves.cross_region", _copies("TIMESTAMPTZ", "BOOLEAN", "JSONB")),
        Migration(5, "projects: last_backup_snapshot, reported_at; rescues", _freshness_and_rescues("TIMESTAMPTZ")),
        Migration(6, "moves: frozen_at, placed_at, caught_up_bytes", _frozen_window("TIMESTAMPTZ")),
        Migration(7, "moves, copies: leases", _leases("TIMESTAMPTZ", _LONG_AGO["postgres"])),
        Migration(8, "moves: force_target", _force_target("BOOLEAN")),
    ),
}


def pending(dialect: str, current: int) -> tuple[Migration, ...]:
    """The migrations of ``dialect`` newer than version ``current``, in order.

    Raises ValueError for an unknown dialect or a list whose versions are not 1, 2, 3 … in order.
    """
    try:
        migrations = MIGRATIONS[dialect]
    except KeyError:
        raise ValueError(f"no migrations for dialect {dialect!r}") from None
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{dialect} migrations must be numbered 1..n in order, got {versions}")
    return tuple(migration for migration in migrations if migration.version > current)


def latest(dialect: str) -> int:
    """The newest schema version of ``dialect``."""
    return len(MIGRATIONS[dialect])
