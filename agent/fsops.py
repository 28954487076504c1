"""Filesystem steps that must be atomic: exchange and no-replace renames (renameat2)."""

from __future__ import annotations

import ctypes
import errno as errno_codes
import os
import shutil
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
