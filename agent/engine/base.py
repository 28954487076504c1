"""What every engine driver offers, and the domain values it returns.

Two drivers implement :class:`Engine`: :mod:`agent.engine.restic` and
:mod:`agent.engine.rustic`. Jobs and the service use only this interface;
which driver runs is decided once, by :mod:`agent.engine.choice`. Both engines
read and write the same repository format, so the values below are the same
for either; where an engine cannot fill a figure it is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.backends.base import EngineView
    from agent.repository import Repository


@dataclass(frozen=True)
class BackupStatus:
    """One ``backup --json`` progress line. ``percent`` is 0..100."""

    percent: float
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    seconds_elapsed: float
    seconds_remaining: float | None
    current_files: tuple[str, ...]


@dataclass(frozen=True)
class BackupSummary:
    """The final ``backup --json`` line.

    ``snapshot_id`` is the id as restic prints it (short in 0.14, full in
    newer versions); it is ``""`` when restic wrote no snapshot (restic >= 0.17
    with ``--skip-if-unchanged`` or ``--dry-run``).
    """

    snapshot_id: str
    files_new: int
    files_changed: int
    files_unmodified: int
    data_added: int
    total_files_processed: int
    total_bytes_processed: int
    total_duration: float


@dataclass(frozen=True)
class BackupItemError:
    """A ``backup --json`` "error" message: one item restic could not read.

    restic prints these on stderr; ``during`` is e.g. "scan" or "archival".
    """

    item: str
    during: str
    message: str


@dataclass(frozen=True)
class Snapshot:
    """One entry of ``snapshots --json``; ``time`` is timezone-aware UTC."""

    id: str
    short_id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]
    tree: str
    username: str


@dataclass(frozen=True)
class TreeNode:
    """One node of a snapshot's tree, as ``ls --json`` or ``find --json`` print it.

    ``path`` is absolute inside the snapshot, e.g. "/project/src/a.txt" (a
    layout-v2 snapshot has the two top-level directories /project and
    /persist); ``name`` is its last component. ``type`` is "file", "dir",
    "symlink" or "other" (fifo, socket, device …); ``size`` is 0 for all but
    files; ``mode`` holds the POSIX permission bits (0o7777, with setuid,
    setgid and sticky); ``mtime`` is timezone-aware UTC. ``link_target`` is a
    symlink's target as stored, "" for every other type and wherever the
    listing does not carry it (restic ``ls --json`` never does; restic
    ``find --json`` does). Where the listing has them: ``raw_type`` the
    engine's own type name ("fifo", "chardev", "dev", "socket" for "other"),
    ``uid``/``gid`` the owner, ``mtime_ns`` the mtime to the nanosecond as
    stored (``mtime`` keeps microseconds only).
    """

    path: str
    name: str
    type: str
    size: int
    mode: int
    mtime: datetime
    link_target: str = ""
    raw_type: str = ""
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class RestoreSize:
    """``stats --json --mode restore-size`` of one snapshot."""

    total_bytes: int
    total_files: int


@dataclass(frozen=True)
class RestoreStatus:
    """One restore progress report of the engine (restic >= 0.17 ``restore --json``); ``percent``
    is 0..100."""

    percent: float
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    seconds_elapsed: float


@dataclass(frozen=True)
class RestoreSummary:
    """What a finished restore did, as far as the engine tells: ``files_restored`` /
    ``bytes_restored`` written (read from the repository), ``files_skipped`` /
    ``bytes_skipped`` already right in the target, ``files_deleted`` removed from it (a
    restore over an existing tree). Figures the engine does not give are 0."""

    files_total: int
    files_restored: int
    files_skipped: int
    files_deleted: int
    bytes_total: int
    bytes_restored: int
    bytes_skipped: int
    seconds_elapsed: float = 0.0


@dataclass(frozen=True)
class BackupOutcome:
    """A finished backup: the engine's summary and per-file warnings."""

    summary: BackupSummary
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class DiffEntry:
    """One entry two snapshots differ in (:meth:`Engine.diff`). ``path`` is absolute in the
    snapshots ("/project/a/b", no trailing "/"); ``is_dir`` whether it is a directory in the newer
    snapshot (in the older one for "removed"). ``change`` is one of :data:`DIFF_CHANGES`:

    - "added" / "removed": only in the newer / older snapshot (an engine may list the entries
      inside an added or removed directory too, or only the directory);
    - "type": a different type (file, dir, symlink, other) in each; what lies inside a directory
      on either side is not listed;
    - "content": two regular files whose content (their list of data blobs) differs, whatever
      their size and mtime;
    - "metadata": the same type and, for files, the same content, but some other field of the
      node differs (mode, owner, times, a symlink's target, link count, extended attributes …).
    """

    path: str
    change: str
    is_dir: bool = False
    # A regular file's size in the newer snapshot ("added", "type", "content"), where the
    # engine's diff gives it (rustic's tree diff); 0 otherwise.
    size: int = 0


DIFF_CHANGES = ("added", "removed", "type", "content", "metadata")


# The feature (Engine.features) of an engine that can restore over an existing tree (restore_over).
RESTORE_OVER = "restore-over"
# The feature of an engine that can tell the content difference of two snapshots (Engine.diff)
# and restore a list of paths of a snapshot (Engine.restore_paths).
SNAPSHOT_DIFF = "snapshot-diff"
# The feature of an engine that restores a list of paths in one run reading only them
# (Engine.restore_paths): bringing a tree to another snapshot then costs what differs, where a
# restore over the tree compares every file of it.
RESTORE_PATHS = "restore-paths"
# The feature of an engine whose restore reports its own progress (restore's ``on_status``).
RESTORE_PROGRESS = "restore-json-progress"


class Engine(Protocol):
    """One backup engine driver. Every method raises a BucketsError on failure."""

    name: str
    binary: str

    async def version(self) -> str:
        """"x.y.z" of the engine binary, probed once; Unimplemented when missing or too old."""

    async def features(self) -> frozenset[str]:
        """What this engine version can do (e.g. "json-progress", "read-data-subset")."""

    def limitations(self) -> tuple[str, ...]:
        """What configured behaviour this driver cannot honour, in words."""

    def remove_stale(self) -> list[str]:
        """Remove what an earlier agent process left behind (e.g. profile files); returns their paths."""

    async def init(self, repo: Repository) -> None: ...

    async def backup(
        self,
        repo: Repository,
        view: EngineView,
        *,
        host: str,
        tags: Sequence[str],
        on_status: Callable[[BackupStatus], None],
        subpath: str = "",
    ) -> BackupOutcome:
        """Back up ``view.root``'s ``project`` and ``persist`` as the snapshot's two roots, or
        with ``subpath`` (relative, normalised, checked by the caller) only
        ``project/<subpath>``, stored at that path; initialising a missing repository first."""

    async def keep_key(self, repo: Repository) -> None:
        """Prepare the runs on ``repo`` that follow soon to skip deriving the key from the password,
        where the engine can (rustic: its master key kept for a while); nothing where it cannot."""

    async def snapshots(self, repo: Repository, *, host: str | None = None, ids: Sequence[str] = ()) -> list[Snapshot]:
        """Snapshots, filtered by host or ids; NotFound for a missing repository."""

    async def restore_size(self, repo: Repository, snapshot_id: str) -> RestoreSize: ...

    async def restore(self, repo: Repository, snapshot_id: str, view: EngineView) -> None:
        """Restore the whole snapshot into ``view.root`` (its project/ and persist/ roots). An engine
        with :data:`RESTORE_PROGRESS` also takes ``on_status`` (a RestoreStatus callback)."""

    async def restore_over(
        self, repo: Repository, snapshot_id: str, view: EngineView,
        *, on_status: Callable[[RestoreStatus], None] | None = None,
    ) -> RestoreSummary:
        """Make ``view.root`` (a tree restored earlier, e.g. a pre-copy) equal to the whole snapshot:
        read only what differs, delete what the snapshot does not have. Only for a tree the
        engine's own earlier restore wrote and nobody else touched: a file whose size and mtime
        match the snapshot is taken as unchanged. Raises Unimplemented when the engine cannot
        (feature "restore-over" missing), a BucketsError on failure; a run stopped before the
        engine reported that it finished is never a success."""

    async def diff(self, repo: Repository, base_snapshot_id: str, snapshot_id: str, *, tree: str = "") -> list[DiffEntry]:
        """What snapshot ``snapshot_id`` differs in from ``base_snapshot_id``, by content (data
        blob ids), type and node metadata, never by size and mtime alone. Needs the feature
        :data:`SNAPSHOT_DIFF` (Unimplemented otherwise); NotFound for a missing snapshot.
        ``tree``: as for :meth:`listing`."""

    async def restore_paths(
        self, repo: Repository, snapshot_id: str, paths: Sequence[str], view: EngineView,
    ) -> None:
        """Restore the snapshot's ``paths`` (absolute in it, each with everything below it) to
        ``view.root`` + path, into a tree whose directories above them exist and where nothing is
        at those paths. Directories only passed through keep their own metadata. Needs
        :data:`SNAPSHOT_DIFF`; raises a BucketsError."""

    async def restore_path(self, repo: Repository, snapshot_id: str, path: str, view: EngineView) -> None:
        """Restore the snapshot's ``path`` (absolute in it) to ``view.root`` + ``path``, run inside
        ``view`` (the directories above ``path`` exist there already)."""

    async def check(self, repo: Repository, *, read_data_subset: str | None = None) -> None:
        """Check the repository; DataLoss naming what was found."""

    async def unlock(self, repo: Repository) -> bool:
        """Remove the repository locks of engine processes that died (never a live process's);
        False when this engine keeps no locks, so there was nothing to remove."""

    async def forget_plan(self, repo: Repository, *, host: str, policy) -> tuple[list[Snapshot], list[Snapshot]]:
        """(keep, remove) under the keep ``policy`` for ``host``'s snapshots; removes nothing."""

    async def forget(self, repo: Repository, snapshot_ids: Sequence[str]) -> None:
        """Remove these snapshots (not their data: see :meth:`prune`)."""

    async def prune(self, repo: Repository) -> None:
        """Remove data no snapshot references."""

    async def ls(self, repo: Repository, snapshot_id: str, path: str, *, recursive: bool) -> list[TreeNode]:
        """Nodes at ``path`` (absolute in the snapshot) and below it: direct children, or all
        with ``recursive``; NotFound when nothing is there."""

    async def listing(self, repo: Repository, snapshot_id: str, *, tree: str = "") -> list[TreeNode]:
        """Every node of the snapshot (with uid, gid and mtime_ns), in one pass; symlink targets
        may be missing (""). NotFound for a missing snapshot. ``tree``: the snapshot's root tree
        id (:attr:`Snapshot.tree`) from a lookup the caller made in the same operation, so that an
        engine reading tree blobs itself need not look the snapshot up again ("" to look it up)."""

    async def find(self, repo: Repository, snapshot_id: str, paths: Sequence[str], *, tree: str = "") -> list[TreeNode]:
        """The nodes at ``paths``, with symlink targets. ``tree``: as for :meth:`listing`."""

    async def dump(self, repo: Repository, snapshot_id: str, path: str, *, limit: int) -> bytes:
        """At most ``limit`` bytes of the regular file at ``path``."""
