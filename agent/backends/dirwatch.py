"""The directory backend's change scan: inotify watches on every directory of every project, so
a reconcile cycle costs what changed, not a walk of every tree.

What it guarantees: a change in a project's trees after :meth:`ChangeWatcher.changes` first
saw the project is reported by a later call (with the time that call saw it: the time of the
write itself is not known, so the later time is used, which errs towards dirty). Nothing is
dropped silently; where events cannot be trusted the project is scanned in full (its newest
mtime/ctime, as :func:`agent.fsops.newest_change` reads it) instead:

* the first time a project is seen, and whenever its home or persist directory is no longer
  the inode watched (a restore swapped a tree in, the project was made again);
* after the kernel's queue overflowed (``IN_Q_OVERFLOW``): every watched project;
* after a directory moved inside, into or out of a project (its watches' paths are stale);
* a project that cannot be watched (the watch limit, ``fs.inotify.max_user_watches``, or the
  ``max_watches`` budget is reached; no inotify at all) is scanned in full at every call.

Synchronous and not thread-safe: the backend calls it from one worker thread at a time.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent import fsops

log = structlog.get_logger("agent.backends.dirwatch")

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

# Every data or metadata change; reads and opens are left out (they change nothing).
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
              | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
_EVENT = struct.Struct("iIII")  # struct inotify_event: int wd; u32 mask, cookie, len; char name[len]

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str


def parse_events(buffer: bytes) -> list[Event]:
    """The inotify events in a buffer read from an inotify descriptor (whole events only, as
    the kernel returns them)."""
    events, offset = [], 0
    while offset + _EVENT.size <= len(buffer):
        wd, mask, _cookie, length = _EVENT.unpack_from(buffer, offset)
        offset += _EVENT.size
        name = buffer[offset:offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd=wd, mask=mask, name=os.fsdecode(name)))
    return events


class WatchLimit(Exception):
    """No more watches can be added (kernel limit or the watcher's budget)."""


@dataclass
class _Project:
    roots: tuple[tuple[int, int] | None, ...]
    wds: set[int] = field(default_factory=set)


@dataclass
class WatchStats:
    """Counters since the watcher started (for logs, tests and the bench)."""

    overflows: int = 0
    rescans: int = 0
    unwatchable: int = 0


# How far after its file time a change is taken to have been made. File times come from the
# kernel's coarse clock, up to a tick behind the clock a backup's capture is read from; a slack
# here would make every write in the tick before a capture look unprotected after it (an extra
# backup each time). None is added, as the scans always compared: a write within a tick after a
# capture is still read by the engine, which starts reading files well after that (its process
# start alone takes longer than a tick).
FILE_CLOCK_SLACK = 0.0


@dataclass(frozen=True)
class Change:
    """A project's change as :meth:`ChangeWatcher.changes` saw it: ``since``, the file time of the
    newest change (the moment it was made, for its age), and ``when``, a moment no earlier than
    that change (what decides whether a backup captured after it holds it)."""

    since: float
    when: float

    @classmethod
    def seen(cls, file_time: float | None, now: float) -> "Change":
        """A change with the file time ``file_time`` (None: unknown) whose event or scan was read
        by ``now``: it was made before ``now`` and at most the slack after its file time."""
        if file_time is None:
            return cls(since=now, when=now)
        return cls(since=file_time, when=min(now, file_time + FILE_CLOCK_SLACK))


def _change_time(directory: str | None, name: str) -> float | None:
    """The file time (newest of mtime and ctime) of what an event on ``name`` in ``directory``
    changed: the entry's, or the directory's when the entry is gone (a removal changes it)."""
    if directory is None:
        return None
    for path in ((os.path.join(directory, name),) if name else ()) + (directory,):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        return max(st.st_mtime, st.st_ctime)
    return None


class ChangeWatcher:
    """Takes a function giving a project's trees (home, persist) and an optional budget of
    watches; ``max_watches`` None = as many as the kernel allows."""

    def __init__(self, trees: Callable[[str], tuple[Path, Path]], *, max_watches: int | None = None) -> None:
        self._trees = trees
        self._max_watches = max_watches
        self._projects: dict[str, _Project] = {}
        self._wd_project: dict[int, str] = {}
        self._wd_path: dict[int, str] = {}
        self._root_wds: set[int] = set()
        self.unwatched: set[str] = set()
        self.stats = WatchStats()
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            code = ctypes.get_errno()
            log.warning("dirwatch.unavailable", error=os.strerror(code))
            self._fd = -1

    @property
    def available(self) -> bool:
        return self._fd >= 0

    @property
    def watches(self) -> int:
        return len(self._wd_path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()  # inotify instances are few (fs.inotify.max_user_instances, per user)

    # ------------------------------------------------------------ one cycle

    def changes(self, project_ids: Iterable[str], *, now: float | None = None) -> dict[str, Change]:
        """Projects among ``project_ids`` changed since the previous call, with a time for each:
        when this call saw the change, or, for a project scanned in full, the newest mtime/ctime
        in its trees (only when there are any: an empty scan reports nothing). Projects no longer
        in ``project_ids`` are forgotten."""
        wanted = set(project_ids)
        seen: dict[str, float | None] = {}
        rescan: set[str] = set()
        self._drain(seen, rescan)
        # After the drain, never before: every event read was queued by then, so no change is
        # stamped earlier than it happened (a backup that captured later holds it).
        now = time.time() if now is None else now
        for project_id in list(self._projects):
            if project_id not in wanted:
                self._forget(project_id)
        self.unwatched &= wanted
        for project_id in wanted:
            state = self._projects.get(project_id)
            if state is None or state.roots != self._root_ids(project_id):
                rescan.add(project_id)
        found = {project_id: Change.seen(stamp, now) for project_id, stamp in seen.items()
                 if project_id in wanted and project_id not in rescan}
        for project_id in (rescan | self.unwatched) & wanted:
            newest = self._watch(project_id)
            if newest > 0:
                found[project_id] = Change.seen(newest, now)
        return found

    def _drain(self, seen: dict[str, float | None], rescan: set[str]) -> None:
        """Read every queued event: changed projects into ``seen``, ones whose watches can no
        longer be trusted into ``rescan``."""
        if self._fd < 0:
            return
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            for event in parse_events(buffer):
                self._handle(event, seen, rescan)

    def _handle(self, event: Event, seen: dict[str, float | None], rescan: set[str]) -> None:
        if event.mask & IN_Q_OVERFLOW:
            # Events were lost: nothing said since the last call can be trusted to be complete.
            self.stats.overflows += 1
            log.warning("dirwatch.overflow", projects=len(self._projects))
            rescan.update(self._projects)
            return
        project_id = self._wd_project.get(event.wd)
        if event.mask & IN_IGNORED:
            self._drop_wd(event.wd)
            return
        if project_id is None:
            return  # a watch already removed (a tree swapped out, a project forgotten)
        stamp = _change_time(self._wd_path.get(event.wd), event.name)
        known = seen.get(project_id, 0.0)
        # None: a change whose file time cannot be read (only "before now" is known).
        seen[project_id] = None if stamp is None or known is None else max(known, stamp)
        moved_dir = event.mask & IN_ISDIR and event.mask & (IN_MOVED_FROM | IN_MOVED_TO)
        if moved_dir or (event.wd in self._root_wds and event.mask & (IN_MOVE_SELF | IN_DELETE_SELF)):
            # The tree's watches name stale paths (or watch a tree no longer the project's).
            rescan.add(project_id)
            self._forget(project_id)
            return
        if event.mask & IN_CREATE and event.mask & IN_ISDIR and project_id not in rescan:
            path = os.path.join(self._wd_path[event.wd], event.name)
            try:
                self._watch_tree(project_id, path)
            except WatchLimit:
                self._give_up(project_id)

    # ------------------------------------------------------------ watches

    def _root_ids(self, project_id: str) -> tuple[tuple[int, int] | None, ...]:
        ids = []
        for tree in self._trees(project_id):
            try:
                st = os.lstat(tree)
                ids.append((st.st_dev, st.st_ino))
            except FileNotFoundError:
                ids.append(None)
        return tuple(ids)

    def _watch(self, project_id: str) -> float:
        """(Re)watch every directory of the project and scan it; returns the newest mtime/ctime."""
        self.stats.rescans += 1
        self._forget(project_id)
        roots = self._root_ids(project_id)
        if self._fd >= 0 and project_id not in self.unwatched:
            self._projects[project_id] = _Project(roots=roots)
            try:
                newest = 0.0
                for tree in self._trees(project_id):
                    newest = max(newest, self._watch_tree(project_id, str(tree), root=True))
                return newest
            except WatchLimit:
                self._give_up(project_id)
        return max(fsops.newest_change(tree) for tree in self._trees(project_id))

    def _give_up(self, project_id: str) -> None:
        if project_id not in self.unwatched:
            self.stats.unwatchable += 1
            log.warning("dirwatch.unwatchable", project_id=project_id, watches=self.watches)
        self._forget(project_id)
        self.unwatched.add(project_id)

    def _watch_tree(self, project_id: str, top: str, *, root: bool = False) -> float:
        """Watch ``top`` and every directory below it, each before its entries are read (so a
        change after the read is an event, one before it is in the scan); returns the newest
        mtime/ctime found. Raises WatchLimit."""
        return fsops.newest_change(top, entering=lambda path: self._add(project_id, path, root=root and path == top))

    def _add(self, project_id: str, path: str, *, root: bool) -> bool:
        """Watch one directory; False when it is gone (or no directory). Raises WatchLimit."""
        if self._max_watches is not None and self.watches >= self._max_watches:
            raise WatchLimit()
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno_codes.ENOSPC:
                raise WatchLimit()
            if code in (errno_codes.ENOENT, errno_codes.ENOTDIR, errno_codes.ELOOP):
                return False
            # Anything else: this project is scanned instead of watched (never a failed cycle).
            log.warning("dirwatch.add_failed", project_id=project_id, error=os.strerror(code))
            raise WatchLimit()
        owner = self._wd_project.get(wd)
        if owner is not None and owner != project_id:
            # One directory in two projects (a bind mount): its events name one project only,
            # so this one is scanned instead.
            raise WatchLimit()
        self._wd_project[wd] = project_id
        self._wd_path[wd] = path
        self._projects[project_id].wds.add(wd)
        if root:
            self._root_wds.add(wd)
        return True

    def _forget(self, project_id: str) -> None:
        state = self._projects.pop(project_id, None)
        if state is None:
            return
        for wd in state.wds:
            if self._wd_project.get(wd) == project_id:
                _libc.inotify_rm_watch(self._fd, wd)
                self._drop_wd(wd)

    def _drop_wd(self, wd: int) -> None:
        project_id = self._wd_project.pop(wd, None)
        self._wd_path.pop(wd, None)
        self._root_wds.discard(wd)
        if project_id is not None and project_id in self._projects:
            self._projects[project_id].wds.discard(wd)
