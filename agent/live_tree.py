"""The manifest of a project's live trees (home and persist location): the one live walk that
Verify SNAPSHOT_TREE compares with a snapshot (:mod:`agent.tree_compare`); and their counts
alone (:func:`counts`, Verify COUNTS), by the same rules without recording each entry.

The walk never follows a symlink, the roots included: every directory is opened relative to
its parent's descriptor with O_NOFOLLOW and described by the descriptor it opened (fstat), so
a directory swapped for a symlink meanwhile is recorded as what it now is, never entered. It
is tolerant of a tree that changes under it (an entry gone between listing and reading is
simply not there) and exact about what it records: lstat's type, size, permission bits,
owner, and mtime to the nanosecond; a symlink's target as readlink gives it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from agent import errors
from agent.tree_compare import Counts, Entry

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# An entry that is no longer what it was when listed: it is left out, or recorded as it is now.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _type_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "chardev"
    if stat.S_ISBLK(mode):
        return "dev"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "unknown"


def entry_of(st: os.stat_result, link_target: str = "") -> Entry:
    """The manifest entry of one lstat (or fstat) result."""
    kind = _type_of(st.st_mode)
    return Entry(
        type=kind,
        size=st.st_size if kind == "file" else 0,
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        uid=st.st_uid,
        gid=st.st_gid,
        link_target=link_target,
    )


def manifest(roots: Mapping[str, Path]) -> dict[str, Entry]:
    """The manifest of the live trees: ``roots`` maps a root's name ("project", "persist") to
    its live path. A missing root has no entries; a root that is not a directory is recorded
    as what it is and not entered. Raises Internal for a directory it cannot read."""
    found: dict[str, Entry] = {}
    for name, path in roots.items():
        _walk_root(name, Path(path), found)
    return found


def _walk_root(name: str, path: Path, found: dict[str, Entry]) -> None:
    parent = str(path.parent)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        root_fd = _describe(parent_fd, path.name, name, found)
    finally:
        os.close(parent_fd)
    if root_fd is not None:
        _walk(root_fd, name, found)


def _describe(parent_fd: int, entry: str, path: str, found: dict[str, Entry]) -> int | None:
    """Record ``entry`` of ``parent_fd`` at ``path``; for a directory return its open descriptor
    (the caller closes it), else None."""
    try:
        st = os.stat(entry, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _unreadable(path, exc) from exc
    if stat.S_ISDIR(st.st_mode):
        try:
            fd = os.open(entry, _DIRECTORY_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise _unreadable(path, exc) from exc
            # Swapped for something else since the lstat: record what is there now.
            return _describe_again(parent_fd, entry, path, found)
        found[path] = entry_of(os.fstat(fd))
        return fd
    target = ""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(entry, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # no longer a symlink
                return _describe_again(parent_fd, entry, path, found)
            if exc.errno in _GONE:
                return None
            raise _unreadable(path, exc) from exc
    found[path] = entry_of(st, target)
    return None


def _describe_again(parent_fd: int, entry: str, path: str, found: dict[str, Entry]) -> None:
    try:
        st = os.stat(entry, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _unreadable(path, exc) from exc
    target = ""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(entry, dir_fd=parent_fd)
        except OSError:
            target = "?"  # changing while read: it differs from the snapshot whatever it was
    found[path] = entry_of(st, target)
    return None


def _walk(root_fd: int, root: str, found: dict[str, Entry]) -> None:
    """Record every entry below the open directory ``root_fd`` (closed here) in ``found``."""
    _depth_first(root_fd, root, _names, lambda fd, name, path: _describe(fd, name, path, found))


def _depth_first(root_fd: int, root: str, listed: Callable[[int, str], list[str]],
                 enter: Callable[[int, str, str], int | None]) -> None:
    """Depth first below the open directory ``root_fd`` (closed here): ``listed(fd, path)`` names
    what to visit in a directory, ``enter(parent_fd, name, path)`` visits one and returns the
    open descriptor of a directory to go into (None: not one). Only the descriptors of the
    current directory's ancestors stay open."""
    stack: list[tuple[int, str, list[str]]] = []
    try:
        stack.append((root_fd, root, listed(root_fd, root)))
    except BaseException:
        os.close(root_fd)
        raise
    try:
        while stack:
            fd, path, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            name = names.pop()
            child_path = f"{path}/{name}"
            child_fd = enter(fd, name, child_path)
            if child_fd is not None:
                try:
                    names_below = listed(child_fd, child_path)
                except BaseException:
                    os.close(child_fd)
                    raise
                stack.append((child_fd, child_path, names_below))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _names(fd: int, path: str) -> list[str]:
    try:
        # scandir reads a duplicate of the descriptor and leaves this one open.
        with os.scandir(fd) as iterator:
            return [entry.name for entry in iterator]
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: str, exc: OSError) -> errors.BucketsError:
    return errors.Internal(f"cannot read {path[:300]!r} of the live tree: {exc.strerror or exc}")


def counts(roots: Mapping[str, Path]) -> Counts:
    """What ``tree_compare.counts_of(manifest(roots))`` is — entries (the roots included) and
    bytes of regular files — walked by the same rules (no symlink followed, the roots included;
    an entry gone meanwhile not counted), without recording each entry: no lstat of a directory
    (scandir's type; its descriptor is opened with O_NOFOLLOW), none of a symlink, no readlink.
    Raises Internal for a directory it cannot read."""
    entries = size = 0
    for path in roots.values():
        path = Path(path)
        try:
            parent_fd = os.open(str(path.parent), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            root_fd, root_entries, root_bytes = _count_one(parent_fd, path.name, path.name, None)
        finally:
            os.close(parent_fd)
        entries, size = entries + root_entries, size + root_bytes
        if root_fd is not None:
            below_entries, below_bytes = _count_below(root_fd, path.name)
            entries, size = entries + below_entries, size + below_bytes
    return Counts(entries=entries, bytes=size)


def _count_one(parent_fd: int, name: str, path: str, is_dir: bool | None) -> tuple[int | None, int, int]:
    """(open descriptor when ``name`` is a directory, entries, bytes) of one entry of
    ``parent_fd``; ``is_dir`` as the directory listing said (None: not known, lstat it)."""
    if is_dir is None:
        try:
            is_dir = stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        except OSError as exc:
            if exc.errno in _GONE:
                return None, 0, 0
            raise _unreadable(path, exc) from exc
    if is_dir:
        try:
            return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd), 1, 0
        except OSError as exc:
            if exc.errno not in _GONE:
                raise _unreadable(path, exc) from exc
            # No longer a directory (or gone): counted as what is there now.
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _GONE:
            return None, 0, 0
        raise _unreadable(path, exc) from exc
    if stat.S_ISDIR(st.st_mode):  # became one since the listing: recorded, not entered (as manifest would next time)
        return None, 1, 0
    return None, 1, st.st_size if stat.S_ISREG(st.st_mode) else 0


def _count_below(root_fd: int, root: str) -> tuple[int, int]:
    """Entries and file bytes below the open directory ``root_fd`` (closed here); only the
    descriptors of the current directory's ancestors stay open."""
    entries = size = 0

    def listed(fd: int, path: str) -> list[str]:
        nonlocal entries, size
        directories = []
        try:
            with os.scandir(fd) as iterator:
                for entry in iterator:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if is_dir:
                        directories.append(entry.name)
                        continue
                    if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                        entries += 1
                        continue
                    _, one, file_bytes = _count_one(fd, entry.name, f"{path}/{entry.name}", False)
                    entries, size = entries + one, size + file_bytes
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        return directories

    def enter(fd: int, name: str, path: str) -> int | None:
        nonlocal entries, size
        child_fd, one, file_bytes = _count_one(fd, name, path, True)
        entries, size = entries + one, size + file_bytes
        return child_fd

    _depth_first(root_fd, root, listed, enter)
    return entries, size
