"""Freeze a project's cgroup (v2) where the host runs projects in cgroups.

``cgroup.freeze`` = 1 stops every process of the cgroup (and its
descendants) where it stands; the kernel says it is done with ``frozen 1`` in
``cgroup.events``. A frozen process keeps its files open but cannot run, so it
cannot change anything until :func:`thaw`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent import errors

FREEZE_TIMEOUT = 30.0


def parse_events(text: str) -> dict[str, int]:
    """``cgroup.events`` (``populated 1\\nfrozen 0``) as a dict; malformed lines are skipped."""
    events = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            events[key] = int(value)
        except ValueError:
            continue
    return events


def exists(cgroup: Path) -> bool:
    return (cgroup / "cgroup.freeze").is_file()


def is_frozen(cgroup: Path) -> bool:
    try:
        return parse_events((cgroup / "cgroup.events").read_text()).get("frozen") == 1
    except OSError:
        return False


def pids(cgroup: Path) -> list[int]:
    """Every process in ``cgroup`` and the cgroups below it."""
    found = []
    for procs in [cgroup / "cgroup.procs", *cgroup.rglob("*/cgroup.procs")]:
        try:
            found += [int(line) for line in procs.read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(found))


async def freeze(cgroup: Path, timeout: float = FREEZE_TIMEOUT) -> list[int]:
    """Freeze ``cgroup`` and wait until the kernel reports it frozen; returns its pids.
    Raises Unavailable when it is not frozen within ``timeout`` seconds, Internal when the
    cgroup cannot be written."""
    try:
        (cgroup / "cgroup.freeze").write_text("1")
    except OSError as exc:
        raise errors.Internal(f"cannot freeze cgroup {cgroup}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + timeout
    while not is_frozen(cgroup):
        if time.monotonic() >= deadline:
            raise errors.Unavailable(f"cgroup {cgroup} did not report frozen within {timeout:g}s")
        await asyncio.sleep(0.01)
    return pids(cgroup)


def thaw(cgroup: Path) -> None:
    """Thaw ``cgroup`` (nothing when it does not exist)."""
    if not exists(cgroup):
        return
    try:
        (cgroup / "cgroup.freeze").write_text("0")
    except OSError as exc:
        raise errors.Internal(f"cannot thaw cgroup {cgroup}: {exc.strerror or exc}") from None
