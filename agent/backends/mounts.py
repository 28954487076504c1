"""Read-only bind mounts of a directory onto itself: the directory backend's freeze.

A read-only bind mount refuses every new open for writing, creation, rename
and removal through it, for root too, and survives an agent restart (it lives
in the host's mount table, not in the agent). Only root (CAP_SYS_ADMIN) can
make one. :func:`mounts_at` reads ``/proc/self/mountinfo`` to tell whether a
directory is frozen: the truth, not a marker.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass

from agent import errors

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: the mount point and its per-mount options."""

    mount_point: str
    readonly: bool


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a ``/proc/<pid>/mountinfo`` text, in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        mounts.append(Mount(mount_point=unescape(fields[4]), readonly="ro" in fields[5].split(",")))
    return mounts


def mounts_at(path: str) -> list[Mount]:
    """The mounts whose mount point is exactly ``path`` (a real path), lowest first."""
    with open("/proc/self/mountinfo") as f:
        return [m for m in parse_mountinfo(f.read()) if m.mount_point == path]


def is_readonly_mount(path: str) -> bool:
    """Whether the topmost mount at ``path`` is a read-only one."""
    found = mounts_at(path)
    return bool(found) and found[-1].readonly


def readonly_mount_points() -> set[str]:
    """Every mount point whose topmost mount is read-only, from one read of the mount table
    (:func:`is_readonly_mount` of many paths at once)."""
    with open("/proc/self/mountinfo") as f:
        topmost = {m.mount_point: m.readonly for m in parse_mountinfo(f.read())}
    return {point for point, readonly in topmost.items() if readonly}


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind_readonly(path: str, source: str | None = None) -> None:
    """Bind-mount ``path`` onto itself (or ``source`` onto ``path``, to hide it) read-only;
    nothing when it already is a read-only mount. Raises FailedPrecondition when this process
    may not mount (not root)."""
    if source is None and is_readonly_mount(path):
        return
    encoded = path.encode()
    try:
        _call(_libc.mount((source or path).encode(), encoded, None, MS_BIND, None), f"bind {path}")
    except OSError as exc:
        raise errors.FailedPrecondition(
            f"the directory backend cannot freeze here: a read-only bind mount of {path} needs mount "
            f"privileges (root): {exc.strerror}"
        ) from None
    try:
        _call(_libc.mount(None, encoded, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None), f"remount {path} ro")
    except OSError as exc:
        _libc.umount2(encoded, MNT_DETACH)
        raise errors.FailedPrecondition(f"the directory backend cannot freeze {path}: {exc.strerror}") from None


def unmount_all(path: str, *, readonly_only: bool = False) -> None:
    """Detach every mount at ``path`` (with ``readonly_only``: while the topmost is read-only,
    i.e. the binds of a freeze, never a writable filesystem mounted there on purpose). Raises
    Internal when one cannot be detached."""
    while (is_readonly_mount(path) if readonly_only else mounts_at(path)):
        try:
            _call(_libc.umount2(path.encode(), MNT_DETACH), f"unmount {path}")
        except OSError as exc:
            raise errors.Internal(f"cannot unmount {path}: {exc.strerror}") from None
