"""Remove directory trees that are read-only bind mounts on the host, without ever making
them writable there.

Usage: python -I nsremove.py PATH [PATH ...]

Why: deleting a frozen project must not thaw it first, or a process could write
into it (and see the write acknowledged) just before it is deleted. This
helper enters a private mount namespace, detaches the read-only bind mounts
there only (the host keeps seeing them read-only), removes each tree and its
directory; removing a directory detaches the mounts on it in every other
namespace too (Linux >= 3.18), so the host never sees it writable.

Only the standard library is used: this file is run by path with ``python -I``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(len(line.split()) > 4 and line.split()[4] == path for line in f)


def main() -> None:
    paths = sys.argv[1:]
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for path in paths:
            while _mounted(path):
                _check(_libc.umount2(path.encode(), MNT_DETACH), f"unmount {path}")
            if os.path.lexists(path):
                shutil.rmtree(path)
    except OSError as exc:
        print(f"nsremove: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
