"""Filesystem steps: atomic exchange and no-replace renames (renameat2), tree removal and sizing,
btrfs subvolume identity."""

from __future__ import annotations

import ctypes
import errno as errno_codes
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from agent import errors

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _renameat2(source: Path, target: Path, flags: int) -> None:
    result = _libc.renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(source), None, str(target))


def renameat2(source_dir: int, source_name: str, target_dir: int, target_name: str, flags: int) -> None:
    """renameat2(2) between two open directories: ``flags`` 0, :data:`RENAME_NOREPLACE` or
    :data:`RENAME_EXCHANGE`. Names are single components, so no symlink is followed on the way.
    Raises OSError (FileExistsError for a no-replace rename onto an existing name)."""
    result = _libc.renameat2(source_dir, os.fsencode(source_name), target_dir, os.fsencode(target_name), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source_name, None, target_name)


def exchange(a: Path, b: Path) -> None:
    """Swap two existing paths in one atomic step (both must be on one filesystem)."""
    _renameat2(a, b, RENAME_EXCHANGE)


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename source to target; fails with FileExistsError instead of replacing target."""
    _renameat2(source, target, RENAME_NOREPLACE)


def put_in_place(staged: Path, live: Path) -> None:
    """Atomically make ``staged`` the content at ``live``.

    When ``live`` exists the two are exchanged, so ``staged`` then holds the old
    tree (removed later by the caller); otherwise ``staged`` is renamed.
    """
    try:
        if live.exists() or live.is_symlink():
            exchange(staged, live)
        else:
            live.parent.mkdir(parents=True, exist_ok=True)
            rename_noreplace(staged, live)
    except OSError as exc:
        if exc.errno in (errno_codes.ENOSPC, errno_codes.EDQUOT):
            raise errors.ResourceExhausted(f"no space to put {live} in place") from exc
        raise errors.Internal(f"cannot put {staged} in place at {live}: {exc.strerror}") from exc


def remove_tree(path: Path) -> None:
    """Remove a directory tree (or file) if it exists; read-only bits do not stop it."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():

        def make_writable_and_retry(function, failed_path, _exc_info):
            os.chmod(os.path.dirname(failed_path), 0o700)
            function(failed_path)

        shutil.rmtree(path, onerror=make_writable_and_retry)
    else:
        path.unlink()


def syncfs(path: Path) -> None:
    """Commit the filesystem holding ``path`` (syncfs(2)); on btrfs this ends the running
    transaction, so generations read afterwards include every write made before."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs_fd(fd)
    finally:
        os.close(fd)


def syncfs_fd(fd: int) -> None:
    """:func:`syncfs` of the filesystem ``fd`` is open on; raises OSError."""
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# BTRFS_IOC_INO_LOOKUP = _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args), a
# 4096-byte struct {u64 treeid; u64 objectid; char name[4080]}. Looking up the
# subvolume's root directory (objectid 256) needs no privilege.
_BTRFS_IOC_INO_LOOKUP = 0xD0009412
_BTRFS_FIRST_FREE_OBJECTID = 256


def subvolume_id(path: Path) -> int:
    """The id of the btrfs subvolume whose root is (or contains) ``path``.

    Stable across remounts and reboots, unlike ``st_dev``; every subvolume
    root has inode 256, so ``st_ino`` cannot tell subvolumes apart. Raises
    OSError (ENOTTY when ``path`` is not on btrfs).
    """
    import fcntl
    import struct

    buffer = bytearray(struct.pack("=QQ", 0, _BTRFS_FIRST_FREE_OBJECTID) + bytes(4080))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.ioctl(fd, _BTRFS_IOC_INO_LOOKUP, buffer, True)
    finally:
        os.close(fd)
    return struct.unpack_from("=Q", buffer)[0]


def tree_size(path: Path) -> tuple[int, int]:
    """Return (bytes of regular files, entries) under ``path``, counting every file, directory and
    link the way the engine's restore size does; missing paths count as empty."""
    total_bytes = entries = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as iterator:
                for entry in iterator:
                    entries += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total_bytes += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total_bytes, entries


def newest_change(path: Path | str, *, entering: Callable[[str], bool] | None = None) -> float:
    """The newest mtime or ctime of ``path`` and everything under it (0.0 when missing).

    ctime catches what mtime does not: chmod, rename, and a utime that sets an old mtime.
    ``entering(directory)``, when given, is called with each directory before it is looked at
    and its entries read (a change watcher adds its watch there, so that a change after the read
    is an event and one before it is in the result); a directory it returns False for is skipped.
    """
    newest = 0.0
    stack = [str(path)]
    while stack:
        directory = stack.pop()
        if entering is not None and not entering(directory):
            continue
        try:
            st = os.lstat(directory)
            newest = max(newest, st.st_mtime, st.st_ctime)
            with os.scandir(directory) as iterator:
                for entry in iterator:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    newest = max(newest, st.st_mtime, st.st_ctime)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return newest
