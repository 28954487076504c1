"""The move sentinel: a small file a move writes into the project before it freezes it, and
checks on the target host after the restore.

Its path is relative to the snapshot roots, as ListFiles paths are:
``project/...`` is the home, ``persist/...`` the persist location.
:func:`check` holds every rule a caller's path and content must follow and
touches nothing; Freeze and Verify both call it. The other functions act on
the live trees of a project, given as ``roots`` (``{"project": home,
"persist": persist}``):

- :func:`confine` refuses a path that a symlink leads out of its root;
- :func:`write` puts the content in place durably and atomically;
- :func:`mismatch` says whether the file holds exactly an expected content;
- :func:`remove` takes the file away when it holds exactly an expected content.

All four refuse a path whose parent directory, with symlinks resolved, leaves
its root; write, mismatch and remove then walk to it without following
symlinks, so a link swapped in after the check cannot lead them out either.
write and remove leave the parent directory's mtime as they found it: the
sentinel is the move's, not an edit of the user's tree (a target holds the
source's trees exactly once its sentinel is gone).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from agent import browse, errors, fsops, usertree

MAX_CONTENT_BYTES = 4096
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755


@dataclass(frozen=True)
class Sentinel:
    """A checked sentinel path: its root ("project" or "persist") and the components below it."""

    root: str
    parts: tuple[str, ...]

    @property
    def path(self) -> str:
        """The path as the caller wrote it (without a trailing '/'), for messages."""
        return "/".join((self.root, *self.parts))

    @property
    def name(self) -> str:
        return self.parts[-1]


def check(path: str, content: str, *, required: bool) -> Sentinel | None:
    """Validate a caller's sentinel path and content; touches nothing.

    Returns None when ``path`` and ``content`` are both empty and ``required``
    is false (no sentinel asked for). Raises :class:`agent.errors.InvalidArgument`
    for an empty path with content (or when ``required``), an absolute path, a
    ".", ".." or empty component, a path not under ``project/`` or ``persist/``,
    a path naming a root itself or ending in '/', and content over
    :data:`MAX_CONTENT_BYTES` bytes (UTF-8).
    """
    if not path:
        if content:
            raise errors.InvalidArgument("sentinel_content is set but sentinel_path is empty")
        if required:
            raise errors.InvalidArgument("sentinel_path is required")
        return None
    if len(content.encode("utf-8", "surrogatepass")) > MAX_CONTENT_BYTES:
        raise errors.InvalidArgument(f"sentinel_content is longer than {MAX_CONTENT_BYTES} bytes")
    if path.endswith("/"):
        raise errors.InvalidArgument(f"sentinel_path must name a file, not a directory: {path[:200]!r}")
    absolute = browse.snapshot_path(path, root=browse.SNAPSHOT_ROOT)  # the component rules ListFiles uses
    root, *parts = absolute.strip("/").split("/")
    if not parts:
        raise errors.InvalidArgument(f"sentinel_path must name a file below {root}/, not the root: {path[:200]!r}")
    return Sentinel(root=root, parts=tuple(parts))


def roots_of(home: Path, persist: Path) -> dict[str, Path]:
    """The ``roots`` argument of :func:`write` and :func:`mismatch` for one project."""
    return {"project": home, "persist": persist}


def confine(sentinel: Sentinel, roots: Mapping[str, Path]) -> None:
    """Raise InvalidArgument when the sentinel's parent directory, with symlinks resolved, is not
    inside its root; reads the filesystem but changes nothing."""
    _inside_parts(sentinel, Path(roots[sentinel.root]))


def write(sentinel: Sentinel, content: bytes, roots: Mapping[str, Path]) -> None:
    """Put ``content`` at the sentinel's path: a temporary file in the same directory, fsync,
    rename into place, fsync of the directory. Missing parent directories are created. Only a
    move's sentinel already there is replaced; a user's file (or link) of that name is kept.

    Raises InvalidArgument (the parent leaves its root, or the path passes through or names
    something that is not a directory / a file), NotFound (the root itself is missing),
    ResourceExhausted (disk or quota full), FailedPrecondition (read-only tree; a user's file or
    link at the path), Internal.
    """
    root = Path(roots[sentinel.root])
    inside = _inside_parts(sentinel, root)
    try:
        directory = _open_root(root)
    except FileNotFoundError:
        raise errors.NotFound(f"the {sentinel.root} root of the project does not exist on this host") from None
    except OSError as exc:
        raise _os_error(sentinel, exc) from exc
    try:
        try:
            owner = os.fstat(directory)
        except BaseException:
            os.close(directory)
            raise
        directory = _walk(sentinel, directory, inside, create=True, owner=owner)
        try:
            before = os.fstat(directory)
            temporary = f".{sentinel.name[:200]}.tmp-{uuid.uuid4().hex}"
            _write_file(directory, temporary, content, owner)
            try:
                _place(directory, temporary, sentinel, content)
            except BaseException:
                _unlink_quietly(directory, temporary)
                with contextlib.suppress(OSError):
                    _keep_times(directory, before)  # refused: the directory as the user left it
                raise
            _keep_times(directory, before)
            os.fsync(directory)  # the rename itself must survive a crash too
        finally:
            os.close(directory)
    except OSError as exc:
        raise _os_error(sentinel, exc) from exc


def _place(directory: int, temporary: str, sentinel: Sentinel, content: bytes) -> None:
    """Rename the written ``temporary`` file to the sentinel's name, never over a file of the
    user's: what is there already is replaced only when it is a regular file holding a move's
    sentinel (an earlier move's, or this content: a Freeze repeated). Raises FailedPrecondition
    otherwise (the caller removes ``temporary``)."""
    try:
        fsops.renameat2(directory, temporary, directory, sentinel.name, fsops.RENAME_NOREPLACE)
        return
    except FileExistsError:
        pass
    if stat.S_ISDIR(os.stat(sentinel.name, dir_fd=directory, follow_symlinks=False).st_mode):
        raise errors.InvalidArgument(f"sentinel_path {sentinel.path[:200]!r} names a directory")
    if not _holds_a_sentinel(directory, sentinel.name, content):
        raise errors.FailedPrecondition(
            f"{sentinel.path[:200]!r} exists in the project and is not a move's sentinel: it is not "
            "overwritten (rename or remove it, or use another sentinel_path)")
    # A name that is a sentinel file now: a user swapping something else in within this instant
    # loses only that name's entry (renames replace the entry, never follow a link).
    os.rename(temporary, sentinel.name, src_dir_fd=directory, dst_dir_fd=directory)


def _holds_a_sentinel(directory: int, name: str, content: bytes) -> bool:
    """Whether ``name`` in ``directory`` is a regular file (not followed) holding ``content`` or
    a move's sentinel (:data:`REMOVABLE_CONTENT_PREFIX`...)."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return False  # a symlink (ELOOP), gone, unreadable: not known to be a sentinel
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        held = _read_at_most(descriptor, MAX_CONTENT_BYTES + 1)
    finally:
        os.close(descriptor)
    return held == content or (len(held) <= MAX_CONTENT_BYTES
                                and held.startswith(REMOVABLE_CONTENT_PREFIX.encode()))


def mismatch(sentinel: Sentinel, expected: bytes, roots: Mapping[str, Path]) -> str | None:
    """None when the live file holds exactly ``expected``; otherwise why not, in words that
    never quote the content ("is missing", "differs ...", "is not a regular file").

    Reads at most ``len(expected) + 1`` bytes. Raises InvalidArgument when the parent leaves
    its root, Internal for unexpected I/O errors.
    """
    root = Path(roots[sentinel.root])
    inside = _inside_parts(sentinel, root)
    try:
        directory = _walk(sentinel, _open_root(root), inside, create=False, owner=None)
    except (FileNotFoundError, NotADirectoryError):
        return "is missing"
    except OSError as exc:
        raise _os_error(sentinel, exc) from exc
    try:
        descriptor = os.open(sentinel.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=directory)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink, not the sentinel file"
        raise _os_error(sentinel, exc) from exc
    finally:
        os.close(directory)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return "is not a regular file"
        found = _read_at_most(descriptor, len(expected) + 1)
    except OSError as exc:
        raise _os_error(sentinel, exc) from exc
    finally:
        os.close(descriptor)
    if found == expected:
        return None
    if len(found) > len(expected):
        return f"differs from the expected content (longer than the {len(expected)} bytes expected)"
    return f"differs from the expected content ({len(found)} bytes found, {len(expected)} expected)"


REMOVED = "removed"
ABSENT = "absent"
# What a removable sentinel looks like: a Thaw may remove a file only when its name and its content
# say it is a move's sentinel, so no caller can use it to delete a user's file whose content it knows.
REMOVABLE_NAME_PREFIX = ".buckets"
REMOVABLE_CONTENT_PREFIX = "buckets move "


def check_removable(checked: Sentinel, content: str) -> None:
    """InvalidArgument unless the sentinel's name begins with :data:`REMOVABLE_NAME_PREFIX` and
    ``content`` with :data:`REMOVABLE_CONTENT_PREFIX`; touches nothing."""
    if not checked.name.startswith(REMOVABLE_NAME_PREFIX) or not content.startswith(REMOVABLE_CONTENT_PREFIX):
        raise errors.InvalidArgument(
            f"only a move's sentinel is removed: a file named {REMOVABLE_NAME_PREFIX}… holding "
            f"{REMOVABLE_CONTENT_PREFIX!r}…; not {checked.path[:200]!r} with that content")


def remove(sentinel: Sentinel, expected: bytes, roots: Mapping[str, Path]) -> str:
    """Take the sentinel file away when it holds exactly ``expected``; never anything else.

    Returns :data:`REMOVED`, :data:`ABSENT` (nothing there, or a parent directory missing: a
    removal done before is done), or why the file was kept, in words that never quote its content
    ("differs from ...", "is a symlink, not the sentinel file", "is not a regular file", "was
    replaced while it was being removed"). Nothing is followed: the parent is reached through
    directory descriptors without symlinks, the file is opened with O_NOFOLLOW, and the name is
    first renamed to a private one in the same directory, removed only when that is still the
    file that was checked (else put back). Raises InvalidArgument when the parent leaves its root
    (through a symlink), FailedPrecondition (a read-only tree), Internal for other I/O errors.
    """
    root = Path(roots[sentinel.root])
    inside = _inside_parts(sentinel, root)
    try:
        directory = _walk(sentinel, _open_root(root), inside, create=False, owner=None)
    except (FileNotFoundError, NotADirectoryError):
        return ABSENT
    except OSError as exc:
        raise _os_error(sentinel, exc) from exc
    try:
        before = os.fstat(directory)
        checked = _checked_file(directory, sentinel.name, expected)
        if isinstance(checked, str):
            return checked
        aside = f".{sentinel.name[:200]}.removing-{uuid.uuid4().hex}"
        try:
            os.rename(sentinel.name, aside, src_dir_fd=directory, dst_dir_fd=directory)
        except FileNotFoundError:
            return ABSENT
        moved = os.stat(aside, dir_fd=directory, follow_symlinks=False)
        if (moved.st_dev, moved.st_ino) != checked:
            _put_back(directory, aside, sentinel.name)
            return "was replaced while it was being removed"
        os.unlink(aside, dir_fd=directory)
        _keep_times(directory, before)
        os.fsync(directory)
        return REMOVED
    except OSError as exc:
        raise _os_error(sentinel, exc) from exc
    finally:
        os.close(directory)


def _checked_file(directory: int, name: str, expected: bytes) -> tuple[int, int] | str:
    """The (device, inode) of ``name`` in ``directory`` when it is a regular file holding exactly
    ``expected``; otherwise :data:`ABSENT` or why it is not the sentinel."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        return ABSENT
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink, not the sentinel file"
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file"
        if _read_at_most(descriptor, len(expected) + 1) != expected:
            return "differs from this move's sentinel"
        return info.st_dev, info.st_ino
    finally:
        os.close(descriptor)


def _put_back(directory: int, aside: str, name: str) -> None:
    """Give a file renamed aside its name again without replacing what may be there now (a hard
    link, then the aside name removed); when the name is taken, it keeps the aside name."""
    try:
        os.link(aside, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
    except FileExistsError:
        return
    os.unlink(aside, dir_fd=directory)


def _keep_times(directory: int, before: os.stat_result) -> None:
    os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns))


# ---------------------------------------------------------------- helpers


def _inside_parts(sentinel: Sentinel, root: Path) -> tuple[str, ...]:
    """The directories from the resolved root down to the resolved parent of the sentinel;
    InvalidArgument when that parent is not inside the root (a symlink leads out)."""
    real_root = Path(os.path.realpath(root))
    parent = Path(os.path.realpath(root.joinpath(*sentinel.parts[:-1])))
    if parent != real_root and real_root not in parent.parents:
        raise errors.InvalidArgument(
            f"sentinel_path {sentinel.path[:200]!r} leads out of the project's {sentinel.root} root (through a symlink)"
        )
    return parent.relative_to(real_root).parts


def _open_root(root: Path) -> int:
    # A root (home or persist location) that is a symlink is FailedPrecondition, never followed.
    if not os.path.lexists(root):
        raise FileNotFoundError(errno.ENOENT, "no such root", str(root))
    return usertree.open_root(root, what="sentinel's root")


def _walk(sentinel: Sentinel, directory: int, parts: tuple[str, ...], *, create: bool,
          owner: os.stat_result | None) -> int:
    """Descend from ``directory`` through ``parts`` without following symlinks, making missing
    ones when ``create``. Takes ownership of ``directory``: returns the last directory's open
    descriptor, every other one closed, also when it raises.

    Without ``create`` a missing or non-directory part raises FileNotFoundError or
    NotADirectoryError. With it, a part that is a symlink or not a directory (one that appeared
    after the resolved check) raises InvalidArgument.
    """
    for part in parts:
        try:
            following = _open_or_make(directory, part, create=create, owner=owner)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not create:
                raise NotADirectoryError(exc.errno, exc.strerror) from None
            raise errors.InvalidArgument(
                f"sentinel_path {sentinel.path[:200]!r} passes through {part[:80]!r}, which is not a directory"
            ) from None
        finally:
            os.close(directory)
        directory = following
    return directory


def _open_or_make(directory: int, name: str, *, create: bool, owner: os.stat_result | None) -> int:
    try:
        return _open_directory(directory, name)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, DIRECTORY_MODE, dir_fd=directory)
    except FileExistsError:
        pass  # made meanwhile by someone else: use it if it is a directory
    made = _open_directory(directory, name)
    try:
        _adopt_owner(made, owner)
        os.fsync(directory)  # the new entry must survive a crash with the file below it
    except BaseException:
        os.close(made)
        raise
    return made


def _open_directory(directory: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)


def _write_file(directory: int, name: str, content: bytes, owner: os.stat_result) -> None:
    descriptor = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                         dir_fd=directory)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view):]
        _adopt_owner(descriptor, owner)
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        _unlink_quietly(directory, name)
        raise
    os.close(descriptor)


def _adopt_owner(descriptor: int, owner: os.stat_result | None) -> None:
    # The agent runs as root in production: what it creates in a project belongs to the
    # project's owner (the owner of the root), as everything else in there does.
    if owner is not None and os.geteuid() == 0:
        os.fchown(descriptor, owner.st_uid, owner.st_gid)


def _unlink_quietly(directory: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=directory)
    except OSError:
        pass


def _read_at_most(descriptor: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(descriptor, min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _os_error(sentinel: Sentinel, exc: OSError) -> errors.BucketsError:
    where = f"sentinel {sentinel.path[:200]!r}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted(f"no space to write {where}")
    if exc.errno == errno.EROFS:
        return errors.FailedPrecondition(f"cannot write {where}: the project's {sentinel.root} tree is read-only")
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ELOOP):
        return errors.InvalidArgument(f"{where} names something that is not a regular file")
    return errors.Internal(f"cannot access {where}: {exc.strerror}")
