"""A move's pre-copies on this host: what is staged under which key, and what a request can
make of it.

A pre-copy (PreCopy) is a project's snapshot restored into a staging of its own, keyed by the
move (``precopy-<project>-<key>`` through the backend's staging), kept across operations and
agent restarts until EnsureProject with the same key places it, DeleteProject removes it, a
pre-copy under another key replaces it, or it is older than ``[precopy] max_age``. The journal
holds one record per project (:meth:`agent.journal.Journal.put_precopy`):

- ``restoring``: a whole restore of ``snapshot_id`` into fresh trees is under way (or was, when
  the agent died during it);
- ``catching-up``: the trees held ``base_snapshot_id`` whole and are being brought to
  ``snapshot_id`` (:mod:`agent.catch_up`);
- ``complete``: the trees hold ``snapshot_id`` whole.

Nothing here runs an engine: :mod:`agent.precopy` does the work.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass

import structlog

from agent import catch_up, errors
from agent.backends.base import Backend
from agent.journal import Journal

log = structlog.get_logger("agent.precopies")

RESTORING = "restoring"
CATCHING_UP = "catching-up"
COMPLETE = "complete"

_KEY = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def check_key(key: str, *, field: str = "key") -> str:
    """Return ``key`` when it is 1 to 64 of ``A-Za-z0-9._:-``; raises InvalidArgument."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise errors.InvalidArgument(f"{field} {key[:80]!r} must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    return key


def staging_id(project_id: str, key: str) -> str:
    """The staging name of the project's pre-copy under ``key`` (a checked key: no '/')."""
    return f"precopy-{project_id}-{key}"


@dataclass(frozen=True)
class Record:
    """One project's pre-copy as the journal holds it (see the module docstring for ``state``)."""

    project_id: str
    key: str
    staging: str
    repository: str
    snapshot_id: str
    base_snapshot_id: str | None
    state: str
    created_at: float
    updated_at: float


def current(journal: Journal, project_id: str) -> Record | None:
    """The project's pre-copy record, or None."""
    row = journal.precopy(project_id)
    return None if row is None else Record(**row)


def every(journal: Journal) -> list[Record]:
    return [Record(**row) for row in journal.precopies()]


def same_snapshot(a: str, b: str) -> bool:
    """Whether two ids (full or prefixes) name the same snapshot."""
    return bool(a) and bool(b) and (a.startswith(b) or b.startswith(a))


@dataclass(frozen=True)
class Plan:
    """What to do with a pre-copy for a target snapshot: ``"up-to-date"`` (it holds it whole),
    ``"bring"`` (:func:`agent.catch_up.bring_to` with ``base_snapshot_id``), or ``"whole"``
    (discard it, restore into fresh trees); ``reason`` says why in words."""

    action: str
    base_snapshot_id: str | None = None
    reason: str = ""


def plan(record: Record | None, *, key: str, repository: str, snapshot_id: str, features: frozenset[str],
         staging_whole: bool) -> Plan:
    """What a request for ``snapshot_id`` (a full id) under ``key`` in ``repository`` can make of
    ``record``, with an engine of ``features``; ``staging_whole`` is whether its staged trees are
    both there. Pure."""
    if record is None:
        return Plan("whole", reason="no pre-copy")
    if record.key != key:
        return Plan("whole", reason=f"the pre-copy is under another key ({record.key})")
    if record.repository != repository:
        return Plan("whole", reason=f"the pre-copy is of another repository ({record.repository})")
    if not staging_whole:
        return Plan("whole", reason="the pre-copy's staged trees are gone")
    if record.state == COMPLETE:
        if same_snapshot(record.snapshot_id, snapshot_id):
            return Plan("up-to-date", reason=f"the pre-copy holds snapshot {snapshot_id[:8]}")
        base = record.snapshot_id
    elif same_snapshot(record.snapshot_id, snapshot_id):
        # Left unfinished (the agent died): continued towards the same snapshot only; a restore
        # or catch-up towards another one left a tree no way knows how to start from.
        base = record.base_snapshot_id if record.state == CATCHING_UP else None
    else:
        return Plan("whole", reason=f"the pre-copy was left unfinished towards snapshot {record.snapshot_id[:8]}")
    if catch_up.way_for(features, base_snapshot_id=base) is None:
        return Plan("whole", reason="the engine cannot bring the staged trees to another snapshot"
                    if base else "the engine cannot continue an unfinished restore")
    return Plan("bring", base_snapshot_id=base,
                reason=f"from snapshot {base[:8]}" if base else "continuing an unfinished restore")


def expired(records: list[Record], *, now: float, max_age: float) -> list[Record]:
    """The records that last changed more than ``max_age`` seconds before ``now``."""
    return [r for r in records if now - r.updated_at > max_age]


class StagingLocks:
    """One lock per project around the work on its pre-copy's staging: the operations on a
    project are serialised already, this keeps the housekeeping (expiry) out of their way."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def of(self, project_id: str) -> asyncio.Lock:
        return self._locks[project_id]


async def discard(journal: Journal, backend: Backend, record: Record) -> None:
    """Remove a pre-copy: its staged trees, then its record (a record whose trees are gone is
    never used: :func:`plan` restores whole then)."""
    await backend.discard_staging(record.staging)
    journal.remove_precopy(record.project_id, record.staging)
    log.info("precopy.discarded", project_id=record.project_id, key=record.key, staging=record.staging)
