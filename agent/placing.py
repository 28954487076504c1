"""Putting a staged file or directory in place at its target inside a project, by a conflict
policy: what a restore of a path and a CopyFiles share.

The producer (the engine, or ``cp``) writes into a hidden staging directory beside the
target (:func:`stage_beside`, :func:`create`), in the same directory and so on the same
filesystem and subvolume; :func:`place` then puts it in place with renames only:

- ``FAIL``: one no-replace rename; something at the target (made meanwhile, too) fails it
  with FailedPrecondition and the target is left as it was;
- ``OVERWRITE``: one no-replace rename, or, when the target exists, one atomic exchange
  (the old tree is left in staging and removed with it);
- ``SKIP``: a no-replace rename when the target is missing; onto an existing directory a
  merge: each missing entry moves in with one no-replace rename, every existing entry is
  kept as it is. A failure during the merge moves back what it had moved (best effort);
  a crash in the middle leaves some of the missing entries added, each one whole, and the
  same SKIP run again completes it.

When the target's parent directories are missing, the staging directory sits in the
nearest existing one and the whole missing chain moves in with the first rename.

Renames go between directory descriptors opened without following symlinks from the home
down, so a symlink swapped into the target's path while the data was staged cannot lead a
rename out of the project. (The producer writes into staging by path; staging is made by
the agent in a directory checked to be inside the project just before.)
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent import errors, fsops, project_paths

if TYPE_CHECKING:
    from agent.backends.base import Backend
    from agent.operations import OperationContext

log = structlog.get_logger("agent.placing")

STAGING_PREFIX = ".buckets-"
# Each pass of :func:`place` goes one directory deeper when a missing parent appeared meanwhile.
_MAX_PASSES = 64
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ConflictPolicy(str, enum.Enum):
    """What to do when something exists at the target path (see the module docstring)."""

    FAIL = "fail"
    OVERWRITE = "overwrite"
    SKIP = "skip"


def refuse_existing(target: Path, policy: ConflictPolicy, *, field: str, shown: str) -> None:
    """With FAIL, raise FailedPrecondition when anything (a dangling symlink too) is at
    ``target``; ``shown`` is the caller's relative path, for the message."""
    if policy is ConflictPolicy.FAIL and os.path.lexists(target):
        raise errors.FailedPrecondition(f"{field} {shown[:200]!r} already exists and on_conflict is FAIL")


@dataclass(frozen=True)
class Staging:
    """Where a producer writes the tree for ``target``: ``item``, inside ``directory``.

    ``home`` is the real path of the project home, ``base`` the existing directory that holds
    ``directory`` (the target's parent, or its nearest existing ancestor).
    """

    home: Path
    base: Path
    directory: Path
    target: Path

    @property
    def tree(self) -> Path:
        return self.directory / "tree"

    @property
    def item(self) -> Path:
        """The staged counterpart of ``target`` (its missing parents included above it)."""
        return self.tree / self.target.relative_to(self.base)

    @property
    def scratch(self) -> Path:
        """A directory a producer may use for anything else (an engine's restore root)."""
        return self.directory / "scratch"


def stage_beside(home: Path, target: Path, *, kind: str, operation_id: str) -> Staging:
    """The staging for ``target`` (inside ``home``, as :func:`agent.project_paths.target`
    returns it). Reads the filesystem, creates nothing. Raises InvalidArgument when the
    nearest existing ancestor of the target is not a directory."""
    real_home = Path(os.path.realpath(home))
    base = target.parent
    while base != real_home and not os.path.lexists(base):
        base = base.parent
    if not base.is_dir() or base.is_symlink():
        raise errors.InvalidArgument(
            f"{str(base.relative_to(real_home))[:200]!r} is in the target's path but is not a directory"
        )
    return Staging(home=real_home, base=base, directory=base / f"{STAGING_PREFIX}{kind}-{operation_id}",
                   target=target)


def create(staging: Staging) -> None:
    """Make the staging directory (0700) and the target's missing parents inside it, owned
    like ``base`` when the agent runs as root (what it makes in a project belongs to the
    project's owner)."""
    owner = os.stat(staging.base)
    staging.directory.mkdir(mode=0o700)
    staging.tree.mkdir(mode=0o700)
    staging.scratch.mkdir(mode=0o700)
    parent = staging.tree
    for part in staging.item.relative_to(staging.tree).parts[:-1]:
        parent = parent / part
        parent.mkdir(mode=0o755)
        if os.geteuid() == 0:
            os.chown(parent, owner.st_uid, owner.st_gid)


@dataclass(frozen=True)
class Placed:
    """What :func:`place` did: ``outcome`` is "created" (nothing was at the target),
    "replaced", "merged" or "kept"; ``added`` and ``kept`` count the top entries a merge
    moved in and left alone."""

    outcome: str
    added: int = 0
    kept: int = 0

    def describe(self) -> str:
        """In words, for a progress message."""
        if self.outcome == "merged":
            return f"merged: {self.added} entries added, {self.kept} existing kept"
        if self.outcome == "kept":
            return "the target exists and was kept"
        return self.outcome


def place(staging: Staging, policy: ConflictPolicy) -> Placed:
    """Put ``staging.item`` in place at ``staging.target`` by ``policy`` (module docstring).

    Synchronous on purpose: no await, so no cancellation, can split it. Raises
    FailedPrecondition (FAIL and the target exists; the target's path changed under it; a
    read-only, e.g. frozen, tree), ResourceExhausted, Internal.
    """
    parts = staging.target.relative_to(staging.home).parts
    base_depth = len(staging.base.relative_to(staging.home).parts)
    try:
        for _ in range(_MAX_PASSES):
            directory, depth = _open_existing_parents(staging.home, parts)
            try:
                if depth < base_depth:
                    raise errors.FailedPrecondition(
                        f"{'/'.join(parts[: depth + 1])!r} was removed while the data was being staged"
                    )
                name = parts[depth]
                staged_parent = staging.tree.joinpath(*parts[base_depth:depth])
                source = os.open(staged_parent, _DIRECTORY_FLAGS)
                try:
                    if depth < len(parts) - 1:
                        # A parent of the target is missing: the whole missing chain moves in at once.
                        try:
                            fsops.renameat2(source, name, directory, name, fsops.RENAME_NOREPLACE)
                            return Placed("created")
                        except FileExistsError:
                            continue  # made meanwhile: one level deeper on the next pass
                    return _apply(policy, source, directory, name)
                finally:
                    os.close(source)
            finally:
                os.close(directory)
        raise errors.FailedPrecondition(f"the target path {'/'.join(parts)[:200]!r} kept changing")
    except OSError as exc:
        raise _os_error(exc, "/".join(parts)) from exc


def _open_existing_parents(home: Path, parts: tuple[str, ...]) -> tuple[int, int]:
    """Open the home, then each parent directory of the target in turn without following
    symlinks; returns (descriptor of the deepest existing one, its depth: the index in
    ``parts`` of the entry to create in it)."""
    directory = os.open(home, _DIRECTORY_FLAGS)
    for depth, part in enumerate(parts[:-1]):
        try:
            following = os.open(part, _DIRECTORY_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            return directory, depth
        except OSError as exc:
            os.close(directory)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise errors.FailedPrecondition(
                    f"{'/'.join(parts[: depth + 1])[:200]!r} became a symlink or a file while the data was staged"
                ) from None
            raise
        os.close(directory)
        directory = following
    return directory, len(parts) - 1


def _apply(policy: ConflictPolicy, source: int, target: int, name: str) -> Placed:
    """Rename ``name`` from the staged directory ``source`` into ``target`` by ``policy``."""
    try:
        fsops.renameat2(source, name, target, name, fsops.RENAME_NOREPLACE)
        return Placed("created")
    except FileExistsError:
        pass
    if policy is ConflictPolicy.FAIL:
        raise errors.FailedPrecondition(f"{name[:200]!r} appeared at the target meanwhile and on_conflict is FAIL")
    if policy is ConflictPolicy.OVERWRITE:
        # The old entry is left at the staged name and removed with the staging directory.
        fsops.renameat2(source, name, target, name, fsops.RENAME_EXCHANGE)
        return Placed("replaced")
    if not (_is_directory(source, name) and _is_directory(target, name)):
        return Placed("kept", kept=1)
    added: list[tuple[str, ...]] = []
    staged_root = os.open(name, _DIRECTORY_FLAGS, dir_fd=source)
    live_root = os.open(name, _DIRECTORY_FLAGS, dir_fd=target)
    try:
        kept = _merge(staged_root, live_root, added)
    except BaseException:
        _move_back(staged_root, live_root, added)
        raise
    finally:
        os.close(staged_root)
        os.close(live_root)
    return Placed("merged", added=len(added), kept=kept)


def _is_directory(directory: int, name: str) -> bool:
    return stat.S_ISDIR(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)


def _merge(staged_root: int, live_root: int, added: list[tuple[str, ...]]) -> int:
    """Move every entry of the staged tree that the live tree lacks into it, descending into
    directories both have; appends what moved (paths relative to the roots) to ``added``.
    Returns how many staged entries were left because the live tree has them."""
    kept = 0
    stack: list[tuple[int, int, tuple[str, ...]]] = [(os.dup(staged_root), os.dup(live_root), ())]
    try:
        while stack:
            staged, live, where = stack.pop()
            try:
                for name in sorted(os.listdir(staged)):
                    try:
                        fsops.renameat2(staged, name, live, name, fsops.RENAME_NOREPLACE)
                        added.append((*where, name))
                        continue
                    except FileExistsError:
                        pass
                    if _is_directory(staged, name) and _is_directory(live, name):
                        inner_staged = os.open(name, _DIRECTORY_FLAGS, dir_fd=staged)
                        try:
                            inner_live = os.open(name, _DIRECTORY_FLAGS, dir_fd=live)
                        except BaseException:
                            os.close(inner_staged)
                            raise
                        stack.append((inner_staged, inner_live, (*where, name)))
                    else:
                        kept += 1
            finally:
                os.close(staged)
                os.close(live)
    finally:
        for staged, live, _ in stack:
            os.close(staged)
            os.close(live)
    return kept


def _move_back(staged_root: int, live_root: int, added: list[tuple[str, ...]]) -> None:
    """Undo a failed merge: move what it added back into staging (newest first), logging
    what cannot be moved."""
    for path in reversed(added):
        parent = "/".join(path[:-1]) or "."
        try:
            live = os.open(parent, _DIRECTORY_FLAGS, dir_fd=live_root)
            try:
                staged = os.open(parent, _DIRECTORY_FLAGS, dir_fd=staged_root)
                try:
                    fsops.renameat2(live, path[-1], staged, path[-1], fsops.RENAME_NOREPLACE)
                finally:
                    os.close(staged)
            finally:
                os.close(live)
        except OSError as exc:
            log.warning("placing.move_back_failed", path="/".join(path)[:500], error=exc.strerror)


async def staged_put(
    context: OperationContext,
    backend: Backend,
    project_id: str,
    target_path: str,
    policy: ConflictPolicy,
    *,
    kind: str,
    produce: Callable[[Staging], Awaitable[None]],
) -> tuple[Placed, int, int]:
    """Stage beside ``target_path`` (relative to the project's home; the rules of
    :func:`agent.project_paths.target` are checked again here), let ``produce`` write
    ``staging.item``, then :func:`place` it by ``policy``; staging is removed in every outcome.

    Returns (what was placed, bytes, entries of the staged tree). Raises what ``produce``
    raises, InvalidArgument, FailedPrecondition (FAIL and the target exists, or the project
    is frozen), and what :func:`place` raises.
    """
    home = backend.home(project_id)
    target = await asyncio.to_thread(project_paths.target, home, target_path, field="target_path")
    refuse_existing(target, policy, field="target_path", shown=target_path)
    staging = await asyncio.to_thread(stage_beside, home, target, kind=kind, operation_id=context.operation_id)
    # A crash from here on: recovery removes the staging directory (jobs.recover).
    context.set_recovery(partial_staging=str(staging.directory))
    try:
        await asyncio.to_thread(create, staging)
        await produce(staging)
        if not os.path.lexists(staging.item):
            raise errors.Internal(f"nothing was staged for {target_path[:200]!r}")
        size, entries = await asyncio.to_thread(entry_size, staging.item)
        if await backend.is_frozen(project_id):
            raise errors.FailedPrecondition(f"project {project_id} is frozen; thaw it first")
        # No await between here and the end of the placement: cancellation cannot split it.
        placed = place(staging, policy)
    finally:
        await asyncio.to_thread(fsops.remove_tree, staging.directory)
    return placed, size, entries


def entry_size(path: Path) -> tuple[int, int]:
    """(bytes of regular files, entries) of a file, link or directory tree, itself included."""
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        size, entries = fsops.tree_size(path)
        return size, entries + 1
    return (info.st_size if stat.S_ISREG(info.st_mode) else 0), 1


def _os_error(exc: OSError, shown: str) -> errors.BucketsError:
    where = f"{shown[:200]!r}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted(f"no space to put {where} in place")
    if exc.errno == errno.EROFS:
        return errors.FailedPrecondition(f"cannot put {where} in place: the project is read-only (frozen?)")
    if exc.errno == errno.EXDEV:
        return errors.FailedPrecondition(f"cannot put {where} in place: it crosses a subvolume or mount boundary")
    return errors.Internal(f"cannot put {where} in place: {exc.strerror}")
