"""Per-project move locks for the SQLite store: ``flock`` on a lock file next to the database.

Why flock rather than a row in a locks table: the kernel drops a flock the moment the holding
process's file description closes — normal exit, exception, or SIGKILL — so a crashed hub never
leaves a lock behind and no expiry/heartbeat (with its clock and tuning problems) is needed. It
covers every process on the host, which is exactly SQLite's own reach (WAL needs shared memory,
so a WAL database is never shared across hosts). flock belongs to the open file description,
not the process (unlike POSIX ``fcntl`` record locks, which one ``close`` of any descriptor of
the file silently drops), so two stores in one process exclude each other too. Descriptors are
close-on-exec, so child processes the hub starts never inherit a lock.

Lock files are never deleted: unlinking a file another process has just opened would let two
processes lock two different inodes of the "same" lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from hub_client.store.errors import MoveInProgress


def lock_path(lock_dir: Path, project_id: str) -> Path:
    """The lock file of ``project_id`` (hashed, so any id is a safe file name)."""
    return lock_dir / f"move-{hashlib.sha256(project_id.encode()).hexdigest()[:32]}.lock"


@contextmanager
def flock_move_lock(lock_dir: Path, project_id: str, active_move_id: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Hold the exclusive, non-blocking flock of ``project_id`` for the ``with`` block.

    Raises MoveInProgress naming the project when another open file description holds it
    (``active_move_id()``, if given, names the active move in the message).
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(lock_dir, project_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise MoveInProgress(
                project_id, active_move_id() if active_move_id else None,
                f"its move lock is held by another hub process ({holder or 'unknown holder'})",
            ) from None
        # Who holds it, for the error message of the next contender; informational only.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} project {project_id}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
