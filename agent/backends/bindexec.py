"""Run a program in a private mount namespace with some directories bind-mounted.

Usage: python bindexec.py [--bind SRC DST | --bind-read SRC DST]... -- PROGRAM ARG...

``--bind-read`` mounts read-only and ``nosymfollow`` (no symlink is followed in a path
resolved through it): for a tree a program only reads and its owner may change meanwhile.
SRC may be ``/proc/<pid>/fd/N``: the directory another process opened, whatever has become of
its path since.

Why: a snapshot must have exactly two roots, ``project/`` and ``persist/``,
while the directories behind them live elsewhere under other names. restic
names snapshot roots after the paths it is given, so the engine is run in a
view directory where the two are mounted under those names. The mounts exist
only inside the child's own namespace: they vanish with it, so a killed agent
or engine never leaves a mount behind.

Only the standard library is used: this file is run by path with ``python -I``.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_BIND = 0x1000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_NOSYMFOLLOW = 0x100

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _enter_namespace() -> None:
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        # Unprivileged: a user namespace that maps our own ids onto themselves, so
        # files keep their real owners while we may mount inside it.
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


# open_tree(2) and move_mount(2) (Linux 5.2): the same number on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_libc.syscall.restype = ctypes.c_long


def _detach(source: str) -> int | None:
    """For a ``/proc/<pid>/fd/N`` source, run as root before leaving the parent's mount namespace:
    a detached copy of the mount at exactly that directory (open_tree OPEN_TREE_CLONE), which
    can be attached in the new namespace (a bind from a mount of another namespace is EINVAL).
    None for a plain path, or when not root (an unprivileged helper binds the path the
    descriptor has now: it can reach nothing its user could not)."""
    if not source.startswith("/proc/") or os.geteuid() != 0:
        return None
    fd = _libc.syscall(SYS_OPEN_TREE, ctypes.c_int(-100), source.encode(),
                       ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"open_tree {source}: {os.strerror(errno)}")
    return int(fd)


def _bind(source: str, target: str, read_only: bool = False, detached: int | None = None) -> None:
    if detached is not None:
        result = _libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(detached), b"", ctypes.c_int(-100), target.encode(),
                               ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        _check(0 if result == 0 else -1, f"attach {source} on {target}")
        os.close(detached)
    else:
        if source.startswith("/proc/"):
            source = os.readlink(source)
        _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None),
               f"bind {source} on {target}")
    if read_only:
        _check(_libc.mount(None, target.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSYMFOLLOW, None),
               f"make {target} read-only and nosymfollow")


def parse(argv: list[str]) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Return ([(source, target, read_only), ...], program argv) from this helper's argv."""
    binds: list[tuple[str, str, bool]] = []
    index = 0
    while index < len(argv) and argv[index] != "--":
        if argv[index] not in ("--bind", "--bind-read") or index + 2 >= len(argv):
            raise SystemExit(f"bindexec: expected --bind SRC DST or --bind-read SRC DST, got {argv[index:index + 3]}")
        binds.append((argv[index + 1], argv[index + 2], argv[index] == "--bind-read"))
        index += 3
    program = argv[index + 1 :]
    if not program:
        raise SystemExit("bindexec: no program after --")
    return binds, program


def main() -> None:
    binds, program = parse(sys.argv[1:])
    try:
        detached = [_detach(source) for source, _target, _read_only in binds]
        _enter_namespace()
        for (source, target, read_only), tree in zip(binds, detached):
            _bind(source, target, read_only, tree)
    except OSError as exc:
        print(f"bindexec: {exc}", file=sys.stderr)
        raise SystemExit(126) from None
    os.execvp(program[0], program)


if __name__ == "__main__":
    main()
