"""Find the processes that can still change a project's data, and stop them.

A read-only subvolume (btrfs ``ro``) or a read-only bind mount refuses new
opens for writing, but not writes through a file descriptor opened before,
nor through a writable shared mapping; on the directory backend a process
whose open directory, working directory or root is inside the tree still
reaches the writable mount under the read-only bind (``openat`` relative to
it). Freeze therefore blocks new writes first, then finds such processes here
(``/proc/<pid>/fd`` with ``fdinfo`` flags, ``/proc/<pid>/maps``, ``cwd``,
``root``) and stops them (SIGTERM, a grace, SIGKILL) until none is left.

Parsing is in pure functions; the ``/proc`` walk tolerates processes that end
while it reads them. The agent itself and its descendants are never found
(an engine reading the tree for a backup is the agent's own work).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent import errors

log = structlog.get_logger("agent.writers")

O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2
MAX_PATHS = 8
MAX_COMMAND = 256
_DELETED = " (deleted)"
# A stop round re-scans after its processes ended; new ones may have been forked meanwhile.
MAX_ROUNDS = 20
# How long SIGKILLed processes may take to release their files before Freeze gives up.
KILL_WAIT = 60.0
RESCAN_PAUSE = 0.05


@dataclass(frozen=True)
class Scope:
    """Where a project's data is: its trees' paths, the devices of its btrfs subvolumes (a
    file there is inside whatever path it is seen under), and whether any open file, working
    directory or root inside counts (directory backend: those bypass a read-only bind mount)."""

    paths: tuple[str, ...]
    devices: frozenset[int] = frozenset()
    any_open: bool = False


@dataclass(frozen=True)
class Writer:
    """A process that can change the project's data: pid, its start time (clock ticks since
    boot, to tell a reused pid), uid, command line and up to :data:`MAX_PATHS` paths it holds."""

    pid: int
    start_time: int
    uid: int
    command: str
    paths: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Stopped:
    """What Freeze did to one process: ``action`` is "terminated", "killed" or "cgroup-frozen"."""

    pid: int
    uid: int
    command: str
    action: str
    paths: tuple[str, ...]


# ------------------------------------------------------------ pure parsing


def fdinfo_flags(text: str) -> int | None:
    """The open flags in a ``/proc/<pid>/fdinfo/<fd>`` text (octal ``flags:`` line), or None."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            try:
                return int(value.strip(), 8)
            except ValueError:
                return None
    return None


def flags_write(flags: int) -> bool:
    """Whether open ``flags`` allow writing (O_WRONLY or O_RDWR)."""
    return (flags & O_ACCMODE) in (O_WRONLY, O_RDWR)


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/<pid>/maps``."""

    writable_shared: bool
    device: int
    inode: int
    path: str


def parse_maps_line(line: str) -> Mapping | None:
    """Parse ``ADDR PERMS OFFSET MAJ:MIN INODE [PATH]``; None for a line that is not one."""
    fields = line.split(maxsplit=5)
    if len(fields) < 5 or len(fields[1]) != 4:
        return None
    perms, dev, inode = fields[1], fields[3], fields[4]
    major, sep, minor = dev.partition(":")
    try:
        device = os.makedev(int(major, 16), int(minor, 16)) if sep else -1
        number = int(inode)
    except ValueError:
        return None
    path = fields[5].rstrip("\n") if len(fields) > 5 else ""
    return Mapping(writable_shared=perms[1] == "w" and perms[3] == "s", device=device, inode=number, path=path)


def parse_stat(text: str) -> tuple[int, int, str] | None:
    """(ppid, start time, state) from a ``/proc/<pid>/stat`` text; None when malformed.

    The command name in parentheses may itself hold spaces and parentheses: fields are counted
    after the last ``)``."""
    end = text.rfind(")")
    if end < 0:
        return None
    rest = text[end + 2 :].split()
    try:
        return int(rest[1]), int(rest[19]), rest[0]
    except (IndexError, ValueError):
        return None


def strip_deleted(path: str) -> str:
    return path[: -len(_DELETED)] if path.endswith(_DELETED) else path


def inside(path: str, roots: Iterable[str]) -> bool:
    """Whether the absolute ``path`` is one of ``roots`` or below one (no symlink resolution:
    ``/proc`` gives resolved paths)."""
    path = strip_deleted(path)
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def command_line(raw: bytes, name: str) -> str:
    """A process's command line for a report (NULs as spaces, at most :data:`MAX_COMMAND`
    bytes), or its name when it has none (a kernel thread, a zombie)."""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace") or name
    return text.encode()[:MAX_COMMAND].decode("utf-8", "ignore")


# ------------------------------------------------------------ /proc walk


def _read(path: str, mode: str = "r"):
    with open(path, mode) as f:
        return f.read()


def _stat_of(pid: int) -> tuple[int, int, str] | None:
    try:
        return parse_stat(_read(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """``root`` and every pid below it in the ``pid → ppid`` map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _in_scope(link: str, scope: Scope, stat_path: str | None) -> bool:
    if inside(link, scope.paths):
        return True
    if scope.devices and stat_path is not None:
        try:
            return os.stat(stat_path).st_dev in scope.devices
        except OSError:
            return False
    return False


def _held(pid: int, scope: Scope) -> list[str]:
    """The paths in ``scope`` process ``pid`` can write through (or, with ``any_open``, holds)."""
    held: list[str] = []
    base = f"/proc/{pid}"
    for name in ("cwd", "root") if scope.any_open else ():
        try:
            link = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if link != "/" and _in_scope(link, scope, f"{base}/{name}"):
            held.append(link)
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        fds = []
    for fd in fds:
        try:
            link = os.readlink(f"{base}/fd/{fd}")
        except OSError:
            continue
        if not link.startswith("/"):
            continue  # a pipe, socket or anon inode
        if not _in_scope(link, scope, f"{base}/fd/{fd}"):
            continue
        if not scope.any_open:
            try:
                flags = fdinfo_flags(_read(f"{base}/fdinfo/{fd}"))
            except OSError:
                continue
            if flags is None or not flags_write(flags):
                continue
        held.append(strip_deleted(link))
    try:
        maps = _read(f"{base}/maps")
    except OSError:
        maps = ""
    for line in maps.splitlines():
        mapping = parse_maps_line(line)
        if mapping is None or not mapping.path.startswith("/"):
            continue
        if not mapping.writable_shared:
            continue
        if inside(mapping.path, scope.paths) or mapping.device in scope.devices:
            held.append(strip_deleted(mapping.path))
    return list(dict.fromkeys(held))


def scan(scope: Scope, *, exclude: Iterable[int] = (), spare: int | None = None) -> list[Writer]:
    """Every process (but ``spare`` — default: this process, the agent — its descendants and
    ``exclude``) that can change the data in ``scope``; processes that end meanwhile are skipped."""
    parents, starts = {}, {}
    for pid in _pids():
        stat = _stat_of(pid)
        if stat is not None and stat[2] != "Z":
            parents[pid], starts[pid] = stat[0], stat[1]
    skip = descendants(os.getpid() if spare is None else spare, parents) | set(exclude)
    found = []
    for pid in sorted(parents):
        if pid in skip:
            continue
        held = _held(pid, scope)
        if not held:
            continue
        writer = _describe(pid, starts[pid], held)
        if writer is not None:
            found.append(writer)
    return found


def _describe(pid: int, start_time: int, held: list[str]) -> Writer | None:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        raw = _read(f"/proc/{pid}/cmdline", "rb")
        name = _read(f"/proc/{pid}/comm").strip()
    except OSError:
        return None
    return Writer(pid=pid, start_time=start_time, uid=uid, command=command_line(raw, name),
                  paths=tuple(held[:MAX_PATHS]))


def describe_pids(pids: Iterable[int]) -> list[Writer]:
    """A :class:`Writer` (no paths) for each pid still alive (for a cgroup's processes)."""
    found = []
    for pid in pids:
        stat = _stat_of(pid)
        if stat is not None:
            writer = _describe(pid, stat[1], [])
            if writer is not None:
                found.append(writer)
    return found


def refusal(writers: list[Writer]) -> str:
    """The text naming ``writers`` for a refused Freeze."""
    named = "; ".join(f"pid {w.pid} ({w.command[:80]}) uid {w.uid}: {', '.join(w.paths[:3])}" for w in writers)
    return f"{len(writers)} process(es) can still change the project: {named}"


# ------------------------------------------------------------ stopping


class _Target:
    """One process being stopped, held through a pidfd so a reused pid is never signalled."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.action = "terminated"
        self.fd: int | None = None
        try:
            fd = os.pidfd_open(writer.pid)
        except ProcessLookupError:
            return
        stat = _stat_of(writer.pid)
        if stat is None or stat[1] != writer.start_time:
            os.close(fd)  # the pid was reused after the scan: not ours to stop
            return
        self.fd = fd

    def signal(self, signum: int) -> None:
        if self.fd is None:
            return
        try:
            signal.pidfd_send_signal(self.fd, signum)
        except ProcessLookupError:
            pass

    def gone(self) -> bool:
        """Whether the process has exited (its files released); a pidfd is readable then."""
        if self.fd is None:
            return True
        ready, _, _ = select.select([self.fd], [], [], 0)
        return bool(ready)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _wait_gone(targets: list[_Target], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if all(t.gone() for t in targets):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


async def stop_round(writers: list[Writer], grace: float) -> list[Stopped]:
    """SIGTERM ``writers``, wait up to ``grace`` seconds, SIGKILL those left and wait until
    they have exited. Raises Unavailable when a killed process does not end (uninterruptible
    sleep) within :data:`KILL_WAIT` seconds."""
    targets = [_Target(w) for w in writers]
    try:
        for target in targets:
            target.signal(signal.SIGTERM)
        if not await _wait_gone(targets, grace):
            for target in targets:
                if not target.gone():
                    target.action = "killed"
                    target.signal(signal.SIGKILL)
            if not await _wait_gone(targets, KILL_WAIT):
                left = [t.writer.pid for t in targets if not t.gone()]
                raise errors.Unavailable(f"processes {left} did not end {KILL_WAIT:g}s after SIGKILL")
    finally:
        for target in targets:
            target.close()
    return [
        Stopped(pid=t.writer.pid, uid=t.writer.uid, command=t.writer.command, action=t.action, paths=t.writer.paths)
        for t in targets
    ]


async def stop_all(scope: Scope, grace: float, *, exclude: Iterable[int] = (),
                   first: list[Writer] | None = None, spare: int | None = None) -> list[Stopped]:
    """Stop every process that can change the data in ``scope`` and re-scan until none is
    left (what a stopped process forked meanwhile is found by the next scan). ``first`` is a
    scan already made. Raises Unavailable when writers keep appearing for
    :data:`MAX_ROUNDS` rounds or one does not end."""
    exclude = set(exclude)
    stopped: list[Stopped] = []
    writers = first if first is not None else await asyncio.to_thread(scan, scope, exclude=exclude, spare=spare)
    confirmed = False
    for _ in range(MAX_ROUNDS):
        if not writers:
            if confirmed:
                return stopped
            # One more look after a pause: an open() that passed its permission check just
            # before the tree became read-only installs its descriptor only afterwards.
            confirmed = True
            await asyncio.sleep(RESCAN_PAUSE)
            writers = await asyncio.to_thread(scan, scope, exclude=exclude, spare=spare)
            continue
        log.info("freeze.stopping_writers", pids=[w.pid for w in writers], commands=[w.command[:80] for w in writers])
        stopped += await stop_round(writers, grace)
        confirmed = False
        writers = await asyncio.to_thread(scan, scope, exclude=exclude, spare=spare)
    raise errors.Unavailable(f"processes keep appearing that can change the project after {MAX_ROUNDS} rounds: "
                             + refusal(writers))


def scope_for(paths: Iterable[Path], *, devices: Iterable[int] = (), any_open: bool = False) -> Scope:
    """A :class:`Scope` of the real paths of ``paths``."""
    return Scope(paths=tuple(os.path.realpath(p) for p in paths), devices=frozenset(devices), any_open=any_open)
