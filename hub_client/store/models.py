"""Typed, immutable rows of the hub's store, and the move statuses.

Times are timezone-aware UTC datetimes on both backends (SQLite keeps ISO 8601 text,
PostgreSQL ``timestamptz``), so rows read back compare equal to what was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class MoveStatus:
    """Move statuses. ``ACTIVE`` ones block another move of the same project (database-enforced).

    A FAILED move stays active on purpose: it is resumed, retried or forced, not replaced;
    CANCELLED abandons it and frees the project for a new move.
    """

    PENDING = "pending"
    RUNNING = "running"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"

    ACTIVE = frozenset({PENDING, RUNNING, FAILED})
    TERMINAL = frozenset({SUCCEEDED, CANCELLED})
    ALL = ACTIVE | TERMINAL


class CopyStatus:
    """Copy statuses: the move statuses, but a FAILED copy blocks nothing (its temporary snapshot
    is forgotten when it fails). ``BLOCKING`` ones keep both projects from being deleted or moved."""

    PENDING = MoveStatus.PENDING
    RUNNING = MoveStatus.RUNNING
    FAILED = MoveStatus.FAILED
    SUCCEEDED = MoveStatus.SUCCEEDED
    CANCELLED = MoveStatus.CANCELLED

    BLOCKING = frozenset({PENDING, RUNNING})
    UNFINISHED = frozenset({PENDING, RUNNING, FAILED})
    ALL = MoveStatus.ALL


class Conflict:
    """What a copy does when its target path exists (the agent's ConflictPolicy)."""

    FAIL = "fail"
    OVERWRITE = "overwrite"
    SKIP = "skip"

    ALL = frozenset({FAIL, OVERWRITE, SKIP})


class Cleanup:
    """Removal of the source host's copy after a move: ``pending`` until the source agent has
    deleted it (it may be offline when the move completes), then ``done``."""

    NONE = "none"
    PENDING = "pending"
    DONE = "done"

    ALL = frozenset({NONE, PENDING, DONE})


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, truncated to microseconds (what both databases keep)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Host:
    """A project host: ``address`` is the agent's host:port; ``status`` e.g. running / stopped / draining."""

    id: str
    address: str
    region: str
    status: str = "running"
    last_seen: datetime | None = None


@dataclass(frozen=True)
class Project:
    """Where a project lives (``host_id``, None when unplaced) and how fresh its last backup is:
    ``last_backup`` (and its ``last_backup_snapshot``) and ``last_edited`` as the agent of its
    host last reported them, at ``reported_at`` (the hub's clock; None: never reported)."""

    id: str
    host_id: str | None
    region: str
    repository: str = ""
    last_backup: datetime | None = None
    last_edited: datetime | None = None
    last_backup_snapshot: str = ""
    reported_at: datetime | None = None


@dataclass(frozen=True)
class Move:
    """One move of a project between hosts; ``step`` is the last step recorded as started."""

    id: str
    project_id: str
    source_host: str
    target_host: str
    step: str
    status: str
    force: bool
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    snapshot_id: str | None = None
    cleanup: str = Cleanup.NONE
    cross_region: bool = False
    # The frozen window: when the freeze step started (None: not frozen by this move now), when
    # placement changed, and the bytes caught up after the freeze (None: not recorded).
    frozen_at: datetime | None = None
    placed_at: datetime | None = None
    caught_up_bytes: int | None = None
    # ``force``: the loss of edits newer than the last backup is accepted (source down);
    # ``force_target``: the target may be draining or not seen recently.
    force_target: bool = False

    @property
    def active(self) -> bool:
        return self.status in MoveStatus.ACTIVE

    @property
    def frozen_seconds(self) -> float | None:
        """Seconds from the freeze step's start to placement (None for a move not placed, or
        one without a freeze: a move from the last backup of an unreachable source)."""
        return frozen_window(self.frozen_at, self.placed_at)


def frozen_entry(move: Move) -> tuple[str, dict[str, Any]] | None:
    """The movelog's "frozen" entry of a placed move (message, data), None without a freeze."""
    seconds = move.frozen_seconds
    if seconds is None:
        return None
    caught = move.caught_up_bytes
    return (f"frozen for {seconds:.2f} s (freeze → placement); "
            + (f"{caught} bytes caught up after the freeze" if caught is not None else "caught-up bytes unknown"),
            {"frozen_seconds": round(seconds, 6), "caught_up_bytes": caught,
             "frozen_at": move.frozen_at.isoformat(), "placed_at": move.placed_at.isoformat()})


def frozen_window(frozen_at: datetime | None, placed_at: datetime | None) -> float | None:
    """Seconds from ``frozen_at`` to ``placed_at``; None when either is unknown. Never negative
    (a clock step backwards between the two reads as 0)."""
    if frozen_at is None or placed_at is None:
        return None
    return max(0.0, (placed_at - frozen_at).total_seconds())


@dataclass(frozen=True)
class Copy:
    """One copy of a file or directory from one project to another. ``source_host`` and
    ``target_host`` are the projects' hosts when the copy was created (equal: a copy on one host,
    without an engine); ``snapshot_id`` is the temporary snapshot of a copy between hosts."""

    id: str
    source_project: str
    source_path: str
    target_project: str
    target_path: str
    on_conflict: str
    source_host: str
    target_host: str
    step: str
    status: str
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    snapshot_id: str | None = None

    @property
    def between_hosts(self) -> bool:
        return self.source_host != self.target_host

    @property
    def unfinished(self) -> bool:
        return self.status in CopyStatus.UNFINISHED


class JobKind:
    """The kinds of work a hub process owns through a lease, and their tables."""

    MOVE = "move"
    COPY = "copy"

    TABLES = {MOVE: "moves", COPY: "copies"}


@dataclass(frozen=True)
class Lease:
    """Who owns a move's or a copy's execution, and until when (the store's clock).

    ``epoch`` counts the claims of the job: a renew or a release names the epoch it holds, so a
    process whose lease was taken over (a later epoch) can no longer renew it (fencing).
    ``expires_at`` None: released by an owner that finished with the job (nothing to take over);
    a past ``expires_at``: lapsed (the owner died, stopped renewing, or handed it over), so
    another process may claim it. ``owner`` and ``claimed_at`` stay as the last claim's.
    """

    kind: str
    job_id: str
    owner: str
    epoch: int
    claimed_at: datetime
    expires_at: datetime | None

    def held_at(self, now: datetime) -> bool:
        """Whether the lease is held (neither released nor lapsed) at ``now``."""
        return self.expires_at is not None and self.expires_at > now


@dataclass(frozen=True)
class MovelogEntry:
    """One event of a move's (or a copy's) progress channel; ``seq`` starts at 1 and grows by 1
    per move. ``move_id`` is the id of the move, or of the copy for a copy's log."""

    move_id: str
    seq: int
    time: datetime
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HostBackupStatus:
    """A host's projects by backup state, as last checked (agent counts; ``failing`` from the
    last drain)."""

    host_id: str
    projects: int
    dirty: int
    up_to_date: int
    never_backed_up: int
    failing: int
    checked_at: datetime


@dataclass(frozen=True)
class OfflineLoss:
    """A project whose newest changes may be lost because its host was turned off without a
    drain: the window between ``last_backup`` and ``last_edited`` (``loss_minutes``; None when
    the project was never backed up)."""

    host_id: str
    project_id: str
    last_backup: datetime | None
    last_edited: datetime | None
    loss_minutes: int | None
    recorded_at: datetime


@dataclass(frozen=True)
class Rescue:
    """A snapshot a move's source cleanup took of the source copy before removing it, because
    the copy held something newer than the moved snapshot: ``snapshot_id`` (purpose "rescue",
    tagged with the move) and what it added, from the backup's summary."""

    move_id: str
    project_id: str
    host_id: str
    snapshot_id: str
    created_at: datetime
    bytes_added: int = 0
    files_new: int = 0
    files_changed: int = 0
    bytes_processed: int = 0
    files_processed: int = 0
