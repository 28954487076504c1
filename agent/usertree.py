"""Path operations inside a user's tree, on directory file descriptors: the one module the agent
uses to open, make, rename and remove what lies in a project's home or persist location.

The agent runs as root and the tree belongs to a user who may change it at any moment: a
directory checked by path can be swapped for a symlink before the next step uses the path. So
nothing here follows a path the user can change:

- every lookup below an open directory is ``openat2(2)`` with RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: a symlink anywhere on the way (``ELOOP``), an
  absolute path or a ``..`` leading out (``EXDEV``) fails instead of being followed;
- a home or persist location is opened from its parent (a directory of the agent's, which the
  user cannot change) with O_NOFOLLOW | O_DIRECTORY: one that is a symlink or not a directory
  is FailedPrecondition (:func:`open_root`);
- single-entry steps (mkdirat, unlinkat, renameat2 of :mod:`agent.fsops`) take a directory
  descriptor and one name, so no symlink can be on their way.

openat2 needs Linux 5.6; without it every function here raises Unimplemented (fail closed:
there is no unsafe fallback).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

from agent import errors, fsops

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
BENEATH = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

# openat2 has the same number on every architecture the agent runs on (x86_64, aarch64).
SYS_OPENAT2 = 437
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PATH_ONLY = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_available: bool | None = None
_REMOVE_ATTEMPTS = 5


def openat2(directory: int, path: str, flags: int, *, mode: int = 0, resolve: int = BENEATH) -> int:
    """openat2(2): open ``path`` relative to the open ``directory`` by ``resolve`` (default
    :data:`BENEATH`). Returns the new descriptor; raises OSError (ELOOP: a symlink on the way;
    EXDEV: the path leads out of ``directory``), Unimplemented when the kernel lacks openat2."""
    require_openat2()
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)) else 0,
                   resolve)
    while True:
        result = _libc.syscall(SYS_OPENAT2, ctypes.c_int(directory), os.fsencode(path), ctypes.byref(how),
                               ctypes.c_size_t(ctypes.sizeof(how)))
        if result >= 0:
            return int(result)
        code = ctypes.get_errno()
        if code == errno.EAGAIN and resolve & RESOLVE_BENEATH:
            continue  # a rename elsewhere raced the lookup; the kernel asks for a retry
        raise OSError(code, os.strerror(code), path)


def require_openat2() -> None:
    """Raise Unimplemented unless this kernel has openat2(2) (probed once)."""
    global _available
    if _available is None:
        how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, RESOLVE_BENEATH)
        result = _libc.syscall(SYS_OPENAT2, ctypes.c_int(fsops.AT_FDCWD), b".", ctypes.byref(how),
                               ctypes.c_size_t(ctypes.sizeof(how)))
        if result >= 0:
            os.close(int(result))
        _available = result >= 0 or ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM)
    if not _available:
        raise errors.Unimplemented(
            "this kernel has no openat2(2) (Linux 5.6 or newer is needed); the agent does not work inside "
            "a project's tree without it"
        )


def open_root(path: Path, *, what: str = "project home") -> int:
    """Open the home or persist location ``path`` as a directory, from its parent, without
    following a symlink at ``path``. Returns the descriptor (the caller closes it).

    Raises FailedPrecondition when ``path`` is a symlink or not a directory, NotFound when it
    is missing, Unimplemented without openat2.
    """
    require_openat2()
    parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return openat2(parent, path.name, DIRECTORY)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
            raise errors.FailedPrecondition(
                f"the {what} {path} is a symlink or not a directory; the agent does not work through it"
            ) from None
        if exc.errno == errno.ENOENT:
            raise errors.NotFound(f"the {what} {path} does not exist") from None
        raise
    finally:
        os.close(parent)


def check_root(path: Path, *, what: str = "project home", missing_ok: bool = True) -> None:
    """FailedPrecondition when ``path`` is there but is a symlink or not a directory; a missing
    one is fine with ``missing_ok`` (else NotFound)."""
    if missing_ok and not os.path.lexists(path):
        return
    os.close(open_root(path, what=what))


def open_dir(directory: int, rel: str) -> int:
    """Open the directory ``rel`` below ``directory`` (:data:`BENEATH`); ``""`` or ``"."``
    opens ``directory`` itself again. Raises OSError."""
    return openat2(directory, rel or ".", DIRECTORY)


def lstat(directory: int, rel: str) -> os.stat_result | None:
    """The entry ``rel`` below ``directory`` as it is (a symlink is not followed), or None when
    it is missing. A symlink or non-directory on the way raises OSError (ELOOP, ENOTDIR)."""
    parent, _, name = rel.rpartition("/")
    try:
        fd = open_dir(directory, parent)
    except FileNotFoundError:
        return None
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)


def mkdir(directory: int, name: str, mode: int) -> int:
    """Make the directory ``name`` (one component) in ``directory`` with exactly ``mode`` and
    open it. Raises FileExistsError, OSError."""
    _one_component(name)
    os.mkdir(name, mode, dir_fd=directory)
    fd = openat2(directory, name, DIRECTORY)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow it
    except BaseException:
        os.close(fd)
        raise
    return fd


def same_entry(directory: int, name: str, info: os.stat_result) -> bool:
    """Whether ``name`` in ``directory`` is still the inode ``info`` describes (not followed)."""
    try:
        found = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (found.st_dev, found.st_ino) == (info.st_dev, info.st_ino)


def rename(source_dir: int, source_name: str, target_dir: int, target_name: str, flags: int = 0) -> None:
    """renameat2(2) between two open directories (names are single components)."""
    _one_component(source_name)
    _one_component(target_name)
    fsops.renameat2(source_dir, source_name, target_dir, target_name, flags)


def remove_tree(directory: int, name: str) -> None:
    """Remove ``name`` in ``directory`` and everything below it, never following a symlink
    (a link is removed as a link); a missing entry is fine. Read-only directory modes do not
    stop it. Raises OSError."""
    _one_component(name)
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        try:
            inner = openat2(directory, name, DIRECTORY)
        except FileNotFoundError:
            return
        try:
            # A process that still has a directory below open (its cwd) may add entries while
            # they go: emptied again, a few times, before giving up.
            for attempt in range(_REMOVE_ATTEMPTS):
                empty(inner)
                try:
                    os.rmdir(name, dir_fd=directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY or attempt == _REMOVE_ATTEMPTS - 1:
                        raise
        finally:
            os.close(inner)
    else:
        try:
            os.unlink(name, dir_fd=directory)
        except FileNotFoundError:
            pass


def empty(directory: int) -> None:
    """Remove everything inside the open ``directory`` (see :func:`remove_tree`)."""
    info = os.fstat(directory)
    if not info.st_mode & stat.S_IWUSR or not info.st_mode & stat.S_IXUSR:
        os.fchmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IRWXU)
    # Listed through a descriptor opened now: btrfs lists only the entries a directory had when
    # the descriptor reading it was opened, and ``directory`` may be older than its contents.
    fresh = openat2(directory, ".", DIRECTORY)
    try:
        names = os.listdir(fresh)
    finally:
        os.close(fresh)
    for name in names:
        remove_tree(directory, name)


def fd_path(fd: int) -> str:
    """A path naming the open ``fd`` for this process (``/proc/self/fd/N``). Only for trees the
    user cannot reach (the agent's staging): below it the path is resolved as usual."""
    return f"/proc/self/fd/{fd}"


def proc_path(fd: int) -> str:
    """The path of this process's ``fd`` as another process sees it (``/proc/<pid>/fd/N``): how a
    child binds exactly the directory the agent opened, whatever has become of its path."""
    return f"/proc/{os.getpid()}/fd/{fd}"


def _one_component(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"not a single path component: {name!r}")


def os_error(exc: OSError, field: str, shown: str) -> errors.BucketsError:
    """The agent error for a failed lookup of the caller's path ``shown`` (field ``field``)."""
    where = f"{field} {shown[:200]!r}"
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        return errors.InvalidArgument(f"{where} passes through a symlink or leads out of the project")
    if exc.errno == errno.ENOTDIR:
        return errors.InvalidArgument(f"{where} passes through something that is not a directory")
    if exc.errno == errno.ENOENT:
        return errors.NotFound(f"{where} does not exist in the project")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ResourceExhausted(f"no space for {where}")
    if exc.errno == errno.EROFS:
        return errors.FailedPrecondition(f"{where}: the project is read-only (frozen?)")
    return errors.Internal(f"{where}: {exc.strerror}")


def make_dirs(directory: int, rel: str, mode: int) -> None:
    """Make every missing directory of ``rel`` below ``directory`` (``mode``), never following a
    symlink on the way. Raises OSError."""
    current = os.dup(directory)
    try:
        for part in filter(None, rel.split("/")):
            try:
                inner = mkdir(current, part, mode)
            except FileExistsError:
                inner = openat2(current, part, DIRECTORY)
            os.close(current)
            current = inner
    finally:
        os.close(current)
