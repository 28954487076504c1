"""Run a program in a private mount namespace with some directories bind-mounted.

Usage: python bindexec.py --bind SRC DST [--bind SRC DST ...] -- PROGRAM ARG...

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


def _bind(source: str, target: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {source} on {target}")


def parse(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Return ([(source, target), ...], program argv) from this helper's argv."""
    binds: list[tuple[str, str]] = []
    index = 0
    while index < len(argv) and argv[index] != "--":
        if argv[index] != "--bind" or index + 2 >= len(argv):
            raise SystemExit(f"bindexec: expected --bind SRC DST, got {argv[index:index + 3]}")
        binds.append((argv[index + 1], argv[index + 2]))
        index += 3
    program = argv[index + 1 :]
    if not program:
        raise SystemExit("bindexec: no program after --")
    return binds, program


def main() -> None:
    binds, program = parse(sys.argv[1:])
    try:
        _enter_namespace()
        for source, target in binds:
            _bind(source, target)
    except OSError as exc:
        print(f"bindexec: {exc}", file=sys.stderr)
        raise SystemExit(126) from None
    os.execvp(program[0], program)


if __name__ == "__main__":
    main()
