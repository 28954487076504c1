"""Bringing staged trees that hold one snapshot (a move's pre-copy) to another snapshot while
reading only what differs: the catch-up after a move's freeze, and the later rounds of a
pre-copy.

The staged trees are the agent's own (root-only staging, :class:`agent.backends.base.Staging`),
but what is in them came from the user's snapshot: symlinks there are the user's, so every path
operation in them goes through :mod:`agent.usertree` (never following a symlink).

What differs is the engine's content diff of the two snapshots (:meth:`Engine.diff`: files by
their data blob ids, so a file whose content changed with its size and mtime kept is found).
How, by what the engine can (:func:`way_for`):

- ``"restore-over"`` (restic >= 0.17; rustic without a base, or for a name its listing cannot
  spell): :meth:`Engine.restore_over` over the staged trees. Those engines keep a file whose size and mtime match the snapshot; a file whose content
  changed between the two snapshots with its size and mtime kept would survive with the old
  content, so the entries whose content or type differs (and symlinks whose node changed: a
  changed target is only "metadata" to restic's diff) are removed from the staging first
  (:func:`invalidation`).
- ``"diff"`` (restic < 0.17, and rustic, which restores a list of paths in one run reading and
  comparing nothing else, where its restore over the trees compares every file): the entries
  the two snapshots differ in are removed from the staging and restored from the new snapshot
  (:meth:`Engine.restore_paths`); the entries whose
  metadata alone changed, and every directory above a removed or restored entry, get the new
  snapshot's mode, owner and mtime (ns) from its listing (:func:`diff_plan`). restic does not
  restore the metadata of a directory it only passes through, and removing or creating an
  entry changes its directory's mtime.

Without a base (an unfinished restore of the same snapshot, continued) there is no diff:
restore-over alone, or nothing (:func:`way_for`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agent import errors, usertree
from agent.concurrently import first_error
from agent.backends.base import Staging
from agent.engine.base import (
    RESTORE_OVER, RESTORE_PATHS, SNAPSHOT_DIFF, DiffEntry, Engine, RestoreStatus, RestoreSummary, TreeNode,
)
from agent.repository import Repository

RESTORE_OVER_WAY = "restore-over"
DIFF_WAY = "diff"

# The snapshot's two roots (layout v2) and the Staging field holding each.
ROOTS = {"project": "project", "persist": "persist"}


def way_for(features: frozenset[str], *, base_snapshot_id: str | None) -> str | None:
    """How staged trees can be brought to another snapshot with an engine of ``features``:
    ``"diff"`` first when the engine restores a list of paths in one run ("restore-paths",
    rustic: the cost is then what differs, where a restore over the trees compares every file),
    else ``"restore-over"`` (needs "restore-over", and with a base "snapshot-diff" too, to
    invalidate what the engine's size+mtime check would keep), ``"diff"`` (needs the snapshot the
    trees hold whole, ``base_snapshot_id``, and "snapshot-diff"), or None when only a whole
    restore into fresh trees can (e.g. restic < 0.17 continuing an unfinished restore, which has
    no base)."""
    if base_snapshot_id is not None and SNAPSHOT_DIFF in features and RESTORE_PATHS in features:
        return DIFF_WAY
    if RESTORE_OVER in features and (base_snapshot_id is None or SNAPSHOT_DIFF in features):
        return RESTORE_OVER_WAY
    if base_snapshot_id is not None and SNAPSHOT_DIFF in features:
        return DIFF_WAY
    return None


# --------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffPlan:
    """What the "diff" way does to the staging, as snapshot paths: ``remove`` (with everything
    below, no-follow), then restore ``fetch`` from the new snapshot, then give ``fix`` the new
    snapshot's metadata (deepest first). ``deleted`` are the removals that nothing replaces."""

    remove: tuple[str, ...]
    fetch: tuple[str, ...]
    fix: tuple[str, ...]
    deleted: tuple[str, ...]


def _covered(path: str, tops: set[str]) -> bool:
    """Whether ``path`` is one of ``tops`` or lies below one of them."""
    while path:
        if path in tops:
            return True
        path = path.rpartition("/")[0]
    return False


def topmost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those lying below another of them (a directory's removal or restore
    covers what is inside it), sorted."""
    unique = set(paths)
    return sorted(p for p in unique if not _covered(p.rpartition("/")[0], unique))


def _ancestors(path: str) -> list[str]:
    """The directories above ``path`` inside the snapshot, its root "/" excluded."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:depth]) for depth in range(1, len(parts))]


def _is_root(path: str) -> bool:
    return path.strip("/") in ROOTS and path.count("/") == 1


def _check_changes(changes: Sequence[DiffEntry]) -> None:
    for change in changes:
        parts = change.path.split("/")
        if not change.path.startswith("/") or len(parts) < 2 or parts[1] not in ROOTS:
            raise errors.Internal(f"the snapshot diff names {change.path[:200]!r}, outside /project and /persist")
        if _is_root(change.path) and change.change != "metadata":
            raise errors.Internal(f"the snapshot diff says {change.path} itself was {change.change}")


def invalidation(changes: Sequence[DiffEntry], symlinks: Iterable[str] = ()) -> list[str]:
    """What to remove from staged trees holding the base snapshot before the engine's restore
    over them (restore-over way): every entry whose content or type differs, and the
    ``symlinks`` (paths of "metadata" entries that are symlinks: a symlink's changed target is
    "metadata" to restic's diff), topmost only. Raises Internal for a change outside the two
    roots or of a root itself."""
    _check_changes(changes)
    links = set(symlinks)
    return topmost(c.path for c in changes
                   if c.change in ("content", "type") or (c.change == "metadata" and c.path in links))


def diff_plan(changes: Sequence[DiffEntry], symlinks: Iterable[str] = ()) -> DiffPlan:
    """The "diff" way's plan from the two snapshots' ``changes`` and the ``symlinks`` among their
    "metadata" entries: removed, type-changed and content-changed entries (and those symlinks)
    are removed; added, type-changed and content-changed entries (and those symlinks) are
    restored from the new snapshot; the other "metadata" entries and every directory above a
    removed or restored entry get the new snapshot's metadata, except what a restore writes
    itself (inside a restored path). Raises Internal for a change outside the two roots or of a
    root itself."""
    _check_changes(changes)
    links = set(symlinks)
    replaced = {c.path for c in changes
                if c.change in ("content", "type") or (c.change == "metadata" and c.path in links)}
    removed = {c.path for c in changes if c.change == "removed"}
    added = {c.path for c in changes if c.change == "added"}
    remove = topmost(removed | replaced)
    fetch = topmost(added | replaced)
    touched = [a for p in remove + fetch for a in _ancestors(p)]
    metadata = [c.path for c in changes if c.change == "metadata" and c.path not in links]
    fetched = set(fetch)
    fix = {p for p in touched + metadata if not _covered(p, fetched)}
    return DiffPlan(
        remove=tuple(remove), fetch=tuple(fetch),
        fix=tuple(sorted(fix, key=lambda p: (-p.count("/"), p))),
        deleted=tuple(p for p in remove if p in removed),
    )


def fetched_bytes(changes: Sequence[DiffEntry]) -> int:
    """The bytes of the regular files a restore over a base must write for ``changes``: those
    added, changed in content or in type (their sizes in the newer snapshot, as the diff gives
    them; 0 where it gives none)."""
    return sum(c.size for c in changes if c.change in ("added", "content", "type") and not c.is_dir)


def fetched_figures(nodes: Iterable[TreeNode], fetch: Sequence[str]) -> RestoreSummary:
    """What restoring ``fetch`` from a snapshot whose nodes are ``nodes`` reads: its regular
    files at or below those paths, against all of the snapshot's (files_deleted 0)."""
    files = [n for n in nodes if n.type == "file"]
    tops = set(fetch)
    read = [n for n in files if _covered(n.path, tops)]
    total_bytes = sum(n.size for n in files)
    read_bytes = sum(n.size for n in read)
    return RestoreSummary(
        files_total=len(files), files_restored=len(read), files_skipped=len(files) - len(read), files_deleted=0,
        bytes_total=total_bytes, bytes_restored=read_bytes, bytes_skipped=total_bytes - read_bytes,
    )


# --------------------------------------------------------------------------
# The staged trees (no-follow)
# --------------------------------------------------------------------------


class _StagedTrees:
    """The staging's two roots opened as directories (closed by :meth:`close`); snapshot paths
    are resolved below them through :mod:`agent.usertree`, never following a symlink."""

    def __init__(self, staging: Staging) -> None:
        self._fds: dict[str, int] = {}
        try:
            for root, field in ROOTS.items():
                self._fds[root] = usertree.open_root(Path(getattr(staging, field)), what=f"staged {root} tree")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def split(self, path: str) -> tuple[int, str]:
        """(root descriptor, path relative to it) of snapshot path ``path``."""
        _, root, rest = path.split("/", 2) if path.count("/") > 1 else (*path.split("/", 1), "")
        return self._fds[root], rest

    def lstat(self, path: str) -> os.stat_result | None:
        fd, rel = self.split(path)
        return os.fstat(fd) if not rel else usertree.lstat(fd, rel)

    def remove(self, path: str) -> int:
        """Remove ``path`` with everything below it (a missing one is fine); returns how many
        non-directories went."""
        fd, rel = self.split(path)
        parent_rel, _, name = rel.rpartition("/")
        try:
            parent = usertree.open_dir(fd, parent_rel)
        except FileNotFoundError:
            return 0
        try:
            count = _count_files(parent, name)
            usertree.remove_tree(parent, name)
            return count
        finally:
            os.close(parent)

    def set_metadata(self, path: str, node: TreeNode) -> None:
        """Give ``path`` the node's owner, mode (not a symlink's) and mtime to the ns, never
        following a symlink. Raises Internal when what is there is not of the node's type."""
        fd, rel = self.split(path)
        parent_rel, _, name = rel.rpartition("/")
        directory = os.dup(fd) if not rel else usertree.open_dir(fd, parent_rel)
        try:
            if not rel:  # the root itself: through its own descriptor
                info = os.fstat(directory)
                _check_type(path, info, node)
                if node.uid is not None and node.gid is not None:
                    os.fchown(directory, node.uid, node.gid)
                os.fchmod(directory, node.mode)
                os.utime(directory, ns=(info.st_atime_ns, _mtime_ns(node)))
                return
            info = os.stat(name, dir_fd=directory, follow_symlinks=False)
            _check_type(path, info, node)
            if node.uid is not None and node.gid is not None:
                os.chown(name, node.uid, node.gid, dir_fd=directory, follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode):  # a chown may clear setuid/setgid: mode after it
                os.chmod(name, node.mode, dir_fd=directory, follow_symlinks=False)
            os.utime(name, ns=(info.st_atime_ns, _mtime_ns(node)), dir_fd=directory, follow_symlinks=False)
        finally:
            os.close(directory)


def _mtime_ns(node: TreeNode) -> int:
    if node.mtime_ns is not None:
        return node.mtime_ns
    return int(node.mtime.timestamp()) * 1_000_000_000 + node.mtime.microsecond * 1000


_TYPE_CHECKS = {"file": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}


def _check_type(path: str, info: os.stat_result, node: TreeNode) -> None:
    check = _TYPE_CHECKS.get(node.type)
    if check is not None and not check(info.st_mode):
        raise errors.Internal(f"the staged {path[:200]!r} is not the {node.type} the snapshot has")


def _count_files(parent: int, name: str) -> int:
    """Non-directories at and below ``name`` in ``parent`` (no symlink followed)."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return 1
    inner = usertree.open_dir(parent, name)
    try:
        count = 0
        with os.scandir(inner) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            count += _count_files(inner, child) if is_dir else 1
        return count
    finally:
        os.close(inner)


def _os_failure(exc: OSError, what: str) -> errors.BucketsError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted(f"no space while {what}")
    return errors.Internal(f"{what}: {exc.strerror or exc}")


# --------------------------------------------------------------------------
# The two ways
# --------------------------------------------------------------------------


async def bring_to(
    engine: Engine, repo: Repository, staging: Staging, snapshot_id: str, *, base_snapshot_id: str | None,
    on_status: Callable[[RestoreStatus], None] | None = None, tree: str = "",
) -> RestoreSummary:
    """Make ``staging``'s trees equal to snapshot ``snapshot_id`` (content, type, mode, owner,
    mtime of every entry). They hold snapshot ``base_snapshot_id`` whole, or (None) an
    unfinished restore of ``snapshot_id`` itself. Returns what was fetched and deleted (the
    "diff" way counts from the new snapshot's listing: the regular files at or below the
    restored paths). ``on_status`` gets the engine's progress where the way has any (restore-over
    on restic >= 0.17). Raises Unimplemented when the engine has no way (:func:`way_for`), a
    BucketsError on failure (the staging is then in no known state: the caller restores whole
    or discards it). ``tree``: snapshot ``snapshot_id``'s root tree id from the caller's lookup
    (:meth:`Engine.listing`)."""
    features = await engine.features()
    way = way_for(features, base_snapshot_id=base_snapshot_id)
    changes: Sequence[DiffEntry] | None = None
    if way == DIFF_WAY and RESTORE_OVER in features:
        assert base_snapshot_id is not None
        changes = await engine.diff(repo, base_snapshot_id, snapshot_id, tree=tree)
        if not all(spelled(change.path) for change in changes):
            way = RESTORE_OVER_WAY  # a name the listing could not spell exactly: no path can name it
    if way == RESTORE_OVER_WAY:
        if base_snapshot_id is not None:
            changes = await _invalidate(engine, repo, staging, base_snapshot_id, snapshot_id, changes)
        else:
            changes = ()
        summary = await engine.restore_over(repo, snapshot_id, staging.view, on_status=on_status)
        if summary.files_restored and not summary.bytes_restored and changes:
            # The engine counts files only (rustic): the files the diff names are what it had to write.
            summary = replace(summary, bytes_restored=fetched_bytes(changes))
        return summary
    if way == DIFF_WAY:
        assert base_snapshot_id is not None
        return await _bring_by_diff(engine, repo, staging, base_snapshot_id, snapshot_id, changes, tree=tree)
    raise errors.Unimplemented(f"{engine.name} {await engine.version()} cannot bring a restored tree to another "
                               "snapshot incrementally")


def _staged_symlinks(trees: _StagedTrees, changes: Sequence[DiffEntry]) -> list[str]:
    """The "metadata" entries that are symlinks in the staged trees (which hold the base: the
    type is the same in both snapshots, or the change would be "type")."""
    found = []
    for change in changes:
        if change.change == "metadata" and not change.is_dir and not _is_root(change.path):
            info = trees.lstat(change.path)
            if info is not None and stat.S_ISLNK(info.st_mode):
                found.append(change.path)
    return found


def spelled(path: str) -> bool:
    """Whether snapshot path ``path`` names its entry exactly: not when the engine's listing
    replaced bytes of a name that are no UTF-8 (U+FFFD), which no path given back to it matches."""
    return "\ufffd" not in path


async def _invalidate(engine: Engine, repo: Repository, staging: Staging, base: str, new: str,
                      changes: Sequence[DiffEntry] | None = None) -> Sequence[DiffEntry]:
    """Remove from the staging what the restore-over engine must write anew (:func:`invalidation`)
    by the diff ``changes`` (read here when None); returns the diff."""
    if changes is None:
        changes = await engine.diff(repo, base, new)
    trees = _StagedTrees(staging)
    try:
        try:
            for path in invalidation(changes, _staged_symlinks(trees, changes)):
                trees.remove(path)
            return changes
        except OSError as exc:
            raise _os_failure(exc, "removing changed entries from the staging") from exc
    finally:
        trees.close()


async def _bring_by_diff(engine: Engine, repo: Repository, staging: Staging, base: str, new: str,
                         changes: Sequence[DiffEntry] | None = None, *, tree: str = "") -> RestoreSummary:
    if changes is None:
        # Both read without a lock: one run's wait (restic 0.14 derives its key each run) instead of two.
        changes, listed = await first_error(engine.diff(repo, base, new, tree=tree),
                                            engine.listing(repo, new, tree=tree))
    else:
        listed = await engine.listing(repo, new, tree=tree)
    nodes = {n.path: n for n in listed}
    symlinks = [c.path for c in changes if c.change == "metadata" and nodes.get(c.path) is not None
                and nodes[c.path].type == "symlink"]
    plan = diff_plan(changes, symlinks)
    trees = _StagedTrees(staging)
    try:
        deleted = 0
        try:
            for path in plan.remove:
                gone = trees.remove(path)
                deleted += gone if path in plan.deleted else 0
        except OSError as exc:
            raise _os_failure(exc, "removing changed entries from the staging") from exc
        if plan.fetch:
            await engine.restore_paths(repo, new, plan.fetch, staging.view)
        try:
            for path in plan.fetch:
                node = nodes.get(path)
                info = trees.lstat(path)
                if node is None or info is None:
                    raise errors.Internal(f"{path[:200]!r} is not in the staging after its restore from snapshot "
                                          f"{new[:8]}")
                _check_type(path, info, node)
            for path in plan.fix:
                node = nodes.get(path)
                if node is None:
                    raise errors.Internal(f"snapshot {new[:8]} does not list {path[:200]!r}, which its diff names")
                trees.set_metadata(path, node)
        except OSError as exc:
            raise _os_failure(exc, "giving the staging the snapshot's metadata") from exc
    finally:
        trees.close()
    figures = fetched_figures(nodes.values(), plan.fetch)
    return RestoreSummary(
        files_total=figures.files_total, files_restored=figures.files_restored, files_skipped=figures.files_skipped,
        files_deleted=deleted, bytes_total=figures.bytes_total, bytes_restored=figures.bytes_restored,
        bytes_skipped=figures.bytes_skipped,
    )
