"""Putting a staged file or directory in place at its target inside a project, by a conflict
policy: what a restore of a path and a CopyFiles share.

The producer (the engine, or ``cp``) writes into a staging directory the user cannot reach: a
fresh directory owned by root with mode 0700, which the agent reaches only through the
descriptor it made it with, and which the producer sees through a bind mount of that
descriptor in its own private mount namespace (:func:`agent.backends.base.bind_wrapper`), so no
path the user can change is on the producer's way. Where it is (:func:`prepare`):

- in the agent's own staging directory (``<projects_root>/.staging/<op>``, out of every
  user's sight) when that is on the same filesystem as the target (the directory backend);
- otherwise (a btrfs home is its own subvolume, and a rename cannot cross subvolumes) beside
  the target, in its nearest existing ancestor, as ``.buckets-<kind>-<op>``: visible there
  while the operation runs, never enterable, and removed when it ends, in every outcome.

:func:`place` then puts it in place with renames only, between directory descriptors opened
from the home down with openat2 (no symlink followed, nothing leading out):

- ``FAIL``: one no-replace rename; something at the target (made meanwhile, too) fails it
  with FailedPrecondition and the target is left as it was;
- ``OVERWRITE``: one no-replace rename, or, when the target exists, one atomic exchange
  (the old tree is left in staging and removed with it);
- ``SKIP``: a no-replace rename when the target is missing; onto an existing directory a
  merge: each missing entry moves in with one no-replace rename, every existing entry is
  kept as it is. A failure during the merge moves back what it had moved (best effort);
  a crash in the middle leaves some of the missing entries added, each one whole, and the
  same SKIP run again completes it.

When the target's parent directories are missing, the staged tree holds them and the whole
missing chain moves in with the first rename. A symlink swapped into the target's path while
the data was staged fails the placement (FailedPrecondition); nothing is written through it.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent import errors, fsops, housekeeping, project_paths, usertree

if TYPE_CHECKING:
    from agent.backends.base import Backend
    from agent.operations import OperationContext

log = structlog.get_logger("agent.placing")

STAGING_PREFIX = ".buckets-"
STAGING_MODE = 0o700
# Each pass of :func:`place` goes one directory deeper when a missing parent appeared meanwhile.
_MAX_PASSES = 64
_REMOVE_ATTEMPTS = 5


class ConflictPolicy(str, enum.Enum):
    """What to do when something exists at the target path (see the module docstring)."""

    FAIL = "fail"
    OVERWRITE = "overwrite"
    SKIP = "skip"


def refuse_existing(found: os.stat_result | None, policy: ConflictPolicy, *, field: str, shown: str) -> None:
    """With FAIL, raise FailedPrecondition when anything (a dangling symlink too) was ``found``
    at the target (:func:`agent.project_paths.target_at`); ``shown`` is the caller's relative
    path, for the message."""
    if policy is ConflictPolicy.FAIL and found is not None:
        raise errors.TargetExists(f"{field} {shown[:200]!r} already exists and on_conflict is FAIL",
                                  path=shown, field=field)


@dataclass
class Staging:
    """Where a producer writes the tree for the target ``parts`` (relative to the open home
    ``home``): the entry ``item_name`` in the directory ``item_dir``, inside the staging
    directory ``fd`` (entry ``name`` of the directory ``parent``). ``base_depth`` is how many
    of ``parts`` existed as directories when it was made (the staged tree holds the rest of the
    chain above the item). ``scratch`` is a directory the producer may use for anything else
    (an engine's restore root). Every field that is a descriptor belongs to this object
    (:func:`discard` closes them)."""

    home: int
    parts: tuple[str, ...]
    base_depth: int
    parent: int
    name: str
    info: os.stat_result
    fd: int
    tree: int
    scratch: int
    item_dir: int
    in_home: bool
    _closed: bool = field(default=False, repr=False)

    @property
    def item_name(self) -> str:
        return self.parts[-1]

    @property
    def target(self) -> str:
        return "/".join(self.parts)

    def item_path(self) -> str:
        """A path of the staged item for the agent's own reads (progress, sizes): below a
        descriptor of a tree only root can enter."""
        return os.path.join(usertree.fd_path(self.item_dir), self.item_name)


def prepare(home: int, rel: str, *, kind: str, operation_id: str, agent_staging: Path | None) -> Staging:
    """Make the staging for the target ``rel`` (already checked by
    :func:`agent.project_paths.target_at`) below the open home ``home`` (see the module
    docstring for where; ``agent_staging`` is the agent's own staging directory). Takes no
    ownership of ``home`` (it is dup'ed).

    Raises InvalidArgument when an existing component of the target's path is a symlink or
    not a directory, FailedPrecondition when the staging name is taken (made by someone else),
    ResourceExhausted, Internal.
    """
    parts = tuple(rel.split("/"))
    base, depth = _deepest_existing(home, parts, lambda shown: errors.InvalidArgument(
        f"{shown} is in the target's path but is a symlink or not a directory"))
    base_info = os.fstat(base)
    parent, name, in_home = base, f"{STAGING_PREFIX}{kind}-{operation_id}", True
    own = _open_agent_staging(agent_staging)
    if own is not None:
        if os.fstat(own).st_dev == base_info.st_dev:
            os.close(base)
            parent, name, in_home = own, operation_id, False
        else:
            os.close(own)
    opened: list[int] = []
    directory: int | None = None
    try:
        try:
            directory = usertree.mkdir(parent, name, STAGING_MODE)
        except FileExistsError:
            raise errors.FailedPrecondition(
                f"the staging name {name!r} is taken in the target's directory; remove it and try again"
            ) from None
        info = os.fstat(directory)
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) != STAGING_MODE:
            raise errors.FailedPrecondition(f"the staging directory {name!r} was replaced while it was made")
        tree = usertree.mkdir(directory, "tree", STAGING_MODE)
        opened.append(tree)
        opened.append(usertree.mkdir(directory, "scratch", STAGING_MODE))
        item_dir = os.dup(tree)
        opened.append(item_dir)
        for part in parts[depth:-1]:
            inner = usertree.mkdir(item_dir, part, 0o755)
            if os.geteuid() == 0:
                # What the agent makes in a project belongs to the project's owner.
                os.fchown(inner, base_info.st_uid, base_info.st_gid)
            os.close(item_dir)
            opened[-1] = item_dir = inner
        return Staging(home=os.dup(home), parts=parts, base_depth=depth, parent=parent, name=name, info=info,
                       fd=directory, tree=tree, scratch=opened[1], item_dir=item_dir, in_home=in_home)
    except BaseException as exc:
        for fd in opened:
            os.close(fd)
        if directory is not None:
            try:
                usertree.empty(directory)
                if usertree.same_entry(parent, name, info):
                    os.rmdir(name, dir_fd=parent)
            except OSError as cleanup:
                log.warning("placing.staging_cleanup_failed", name=name, error=cleanup.strerror)
            os.close(directory)
        os.close(parent)
        if isinstance(exc, OSError):
            raise _os_error(exc, rel) from exc
        raise


def _open_agent_staging(path: Path | None) -> int | None:
    """The agent's own staging directory, made root-only when missing; None when not given."""
    if path is None:
        return None
    try:
        os.mkdir(path, STAGING_MODE)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
        os.fchmod(fd, STAGING_MODE)
    return fd


def _deepest_existing(home: int, parts: tuple[str, ...],
                      refuse: Callable[[str], errors.BucketsError]) -> tuple[int, int]:
    """Open the deepest existing directory on the target's way below ``home``, each parent in
    turn without following symlinks; returns (its descriptor, its depth: the index in ``parts``
    of the entry to create in it). Raises ``refuse(the component's path)`` when a component is a
    symlink or not a directory."""
    directory = os.dup(home)
    for depth, part in enumerate(parts[:-1]):
        try:
            following = usertree.open_dir(directory, part)
        except FileNotFoundError:
            return directory, depth
        except OSError as exc:
            os.close(directory)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                raise refuse(repr("/".join(parts[: depth + 1])[:200])) from None
            raise
        os.close(directory)
        directory = following
    return directory, len(parts) - 1


def discard(staging: Staging) -> None:
    """Remove the staging directory and everything in it (the old tree an overwrite swapped
    out, too), by descriptor; close every descriptor of ``staging``. When the user moved the
    staging directory elsewhere meanwhile, it is emptied where it is and its now empty entry
    left there (logged). Idempotent."""
    if staging._closed:
        return
    try:
        # Emptied through the agent's own descriptor, then only an empty directory is removed by
        # name: whatever the user put at that name meanwhile, nothing of theirs goes.
        for attempt in range(_REMOVE_ATTEMPTS):
            usertree.empty(staging.fd)
            if not usertree.same_entry(staging.parent, staging.name, staging.info):
                log.warning("placing.staging_moved", name=staging.name)
                break
            try:
                os.rmdir(staging.name, dir_fd=staging.parent)
                break
            except OSError as exc:
                # ENOTEMPTY: a process still inside an old tree swapped out added an entry.
                if exc.errno != errno.ENOTEMPTY or attempt == _REMOVE_ATTEMPTS - 1:
                    raise
    finally:
        staging._closed = True
        for fd in (staging.item_dir, staging.scratch, staging.tree, staging.fd, staging.parent, staging.home):
            try:
                os.close(fd)
            except OSError:
                pass


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
    parts, base_depth = staging.parts, staging.base_depth
    try:
        for _ in range(_MAX_PASSES):
            directory, depth = _deepest_existing(staging.home, parts, lambda shown: errors.FailedPrecondition(
                f"{shown} became a symlink or a file while the data was staged"))
            try:
                if depth < base_depth:
                    raise errors.FailedPrecondition(
                        f"{'/'.join(parts[: depth + 1])!r} was removed while the data was being staged"
                    )
                name = parts[depth]
                source = usertree.open_dir(staging.tree, "/".join(parts[base_depth:depth]))
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


def _apply(policy: ConflictPolicy, source: int, target: int, name: str) -> Placed:
    """Rename ``name`` from the staged directory ``source`` into ``target`` by ``policy``."""
    try:
        fsops.renameat2(source, name, target, name, fsops.RENAME_NOREPLACE)
        return Placed("created")
    except FileExistsError:
        pass
    if policy is ConflictPolicy.FAIL:
        raise errors.TargetExists(f"{name[:200]!r} appeared at the target meanwhile and on_conflict is FAIL",
                                  path=name)
    if policy is ConflictPolicy.OVERWRITE:
        # The old entry is left at the staged name and removed with the staging directory.
        fsops.renameat2(source, name, target, name, fsops.RENAME_EXCHANGE)
        return Placed("replaced")
    if not (_is_directory(source, name) and _is_directory(target, name)):
        return Placed("kept", kept=1)
    added: list[tuple[str, ...]] = []
    staged_root = usertree.open_dir(source, name)
    live_root = usertree.open_dir(target, name)
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
                        inner_staged = usertree.open_dir(staged, name)
                        try:
                            inner_live = usertree.open_dir(live, name)
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
            live = usertree.open_dir(live_root, parent)
            try:
                staged = usertree.open_dir(staged_root, parent)
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
    """Stage for ``target_path`` (relative to the project's home; the rules of
    :func:`agent.project_paths.target_at` are checked again here, on the home opened by
    descriptor), let ``produce`` write the entry ``staging.item_name`` in ``staging.item_dir``,
    then :func:`place` it by ``policy``; staging is removed in every outcome, before this returns
    or raises (a crash: by recovery, :func:`remove_recorded`).

    Returns (what was placed, bytes, entries of the staged tree). Raises what ``produce``
    raises, InvalidArgument, FailedPrecondition (a symlinked home; FAIL and the target exists;
    the project is frozen; the target's path changed under it), and what :func:`place` raises.
    """
    home_path = backend.home(project_id)
    # A few system calls, made here with no await between them and the recovery record below:
    # a cancellation cannot leave a staging directory nobody knows of.
    home = usertree.open_root(home_path)
    try:
        found = project_paths.target_at(home, target_path, field="target_path")
        refuse_existing(found, policy, field="target_path", shown=target_path)
        staging = prepare(home, target_path, kind=kind, operation_id=context.operation_id,
                          agent_staging=backend.projects_root / ".staging")
    finally:
        os.close(home)
    # A crash from here on: recovery removes the staging directory (jobs.recover).
    context.set_recovery(path_staging=recorded(staging, home_path))
    try:
        await produce(staging)
        item = await asyncio.to_thread(usertree.lstat, staging.item_dir, staging.item_name)
        if item is None:
            raise errors.Internal(f"nothing was staged for {target_path[:200]!r}")
        size, entries = await asyncio.to_thread(entry_size, staging.item_path())
        if await backend.is_frozen(project_id):
            raise errors.ProjectFrozen(f"project {project_id} is frozen; thaw it first", project_id=project_id)
        # No await between here and the end of the placement: cancellation cannot split it.
        placed = place(staging, policy)
    finally:
        await housekeeping.run_to_end(asyncio.to_thread(discard, staging), failure_event="placing.staging_cleanup_failed")
    return placed, size, entries


def recorded(staging: Staging, home: Path) -> dict:
    """What recovery needs to find and remove ``staging`` after a crash (JSON-able)."""
    return {"home": str(home), "in_home": staging.in_home, "base": "/".join(staging.parts[: staging.base_depth]),
            "name": staging.name, "dev": staging.info.st_dev, "ino": staging.info.st_ino}


def remove_recorded(facts: dict) -> bool:
    """Remove a staging directory :func:`recorded` describes, after a crash; only the very
    directory the agent made (same inode, root's, 0700), found without following symlinks.
    Staging in the agent's own directory is left to the backend's stale-staging sweep.
    Returns whether something was removed."""
    if not facts.get("in_home"):
        return False
    try:
        home = usertree.open_root(Path(facts["home"]))
    except errors.BucketsError:
        return False
    try:
        base = usertree.open_dir(home, facts["base"])
    except OSError:
        os.close(home)
        return False
    try:
        staged = usertree.open_dir(base, facts["name"])
    except OSError:
        os.close(base)
        os.close(home)
        return False
    try:
        info = os.fstat(staged)
        if (info.st_dev, info.st_ino) != (facts["dev"], facts["ino"]) or info.st_uid != os.geteuid():
            return False
        # Emptied through the descriptor checked above; by name only an empty directory goes.
        usertree.empty(staged)
        os.rmdir(facts["name"], dir_fd=base)
        return True
    except OSError as exc:
        log.warning("placing.recorded_staging_left", name=facts["name"], error=exc.strerror)
        return False
    finally:
        os.close(staged)
        os.close(base)
        os.close(home)


def remove_legacy(path: Path) -> None:
    """Remove a staging directory an older agent recorded by path (``.buckets-<kind>-<op>`` in a
    project), only when it is still a directory owned by the agent's user (the user cannot make
    one; a link or a directory of theirs at that name is left alone)."""
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        info = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and path.name.startswith(STAGING_PREFIX):
            usertree.remove_tree(parent, path.name)
    except OSError:
        pass
    finally:
        os.close(parent)


def entry_size(path: str | Path) -> tuple[int, int]:
    """(bytes of regular files, entries) of a file, link or directory tree, itself included."""
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        size, entries = fsops.tree_size(Path(path))
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
