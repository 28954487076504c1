"""Freshness: is a project's latest data safely in a backup?

Per project the journal keeps ``last_backup`` (when the project's data was
last known to equal a snapshot: the moment a successful backup captured it,
or the end of a restore of one) and ``last_change`` (the latest data change
the agent knows of). A project is *dirty* when it was never backed up or
changed after its last backup. Changes come from three sources:

* MarkEdited, called by the host's file API or an editor (any backend);
* the btrfs generations, read by the reconciler: a generation that differs
  from the one the last backup captured means a write since (the time of
  the write is not known, so the time it was seen is used: conservative);
* on the directory backend, inotify events (:mod:`agent.backends.dirwatch`), and a scan for the
  newest mtime/ctime in the trees where they cannot vouch for a project.

The reconciler looks at every project once a cycle with :func:`observe_all`, at a cost that
stays flat per project (no process, no tree walk); :func:`observe` looks at one project (its
status) the direct way.

Times are seconds since the epoch. Comparisons err towards dirty: a project
wrongly called dirty costs one extra backup; one wrongly called clean can
lose data in a move.

``unprotected_since`` is the moment of the oldest change not in a backup (None
when clean), the start of the project's *unprotected age* (:mod:`agent.rpo`).
It errs the other way round from ``last_change``: where the moment of a change
is not known, the EARLIEST moment it may have been made is used, so that the
age is never understated (an RPO reported kept that was not is the failure
that matters; an overstated age costs an early backup). So a generation that
moved between two looks counts from the earlier look, not from the later one
as ``last_change`` does. A backup that captured the data at C leaves a change
recorded after C unprotected (since C at the earliest: it may not be in the
snapshot); a never backed-up project is unprotected since the journal first
heard of it or since its first recorded change, whichever is earlier.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.backends.base import Backend
from agent.backends.dirwatch import Change
from agent.journal import FRESHNESS_COLUMNS, Journal
from agent.rpo import unprotected_age


@dataclass(frozen=True)
class Freshness:
    last_backup: float | None
    last_backup_snapshot: str
    last_change: float | None
    unprotected_since: float | None = None

    def unprotected_age(self, now: float) -> float:
        """Seconds the oldest change not in a backup has waited at ``now``; 0 when clean."""
        return unprotected_age(self.unprotected_since, now)

    @property
    def dirty(self) -> bool:
        if self.last_backup is None:
            return True
        return self.last_change is not None and self.last_change > self.last_backup


def freshness(journal: Journal, project_id: str) -> Freshness:
    return _from_record(journal.freshness(project_id))


def freshness_of_many(journal: Journal, project_ids: Sequence[str]) -> list[Freshness]:
    """:func:`freshness` of each of ``project_ids`` (same order), from one journal query."""
    records = journal.freshness_all()
    unknown = dict.fromkeys(FRESHNESS_COLUMNS)
    return [_from_record(records.get(project_id, unknown)) for project_id in project_ids]


def _from_record(record: dict) -> Freshness:
    return Freshness(
        last_backup=record["last_backup_time"],
        last_backup_snapshot=record["last_backup_snapshot"] or "",
        last_change=record["last_change_time"],
        unprotected_since=record["unprotected_since"],
    )


async def observe_all(journal: Journal, backend: Backend, project_ids: Sequence[str], *,
                      now: float | None = None) -> Observed:
    """One reconcile cycle: look at every project of ``project_ids`` at once and record in the
    journal every change the backend can see, at a cost that does not grow with a process or a
    tree walk per project (btrfs: one syncfs per filesystem and two ioctls per project;
    directory: the change watcher's events). Returns what changed and what could not be read."""
    # When this look began, and when each project's previous one did: a generation that moved
    # since was changed after that previous look began (the earliest moment an age counts from).
    began = time.time() if now is None else now
    previous_looks = journal.last_looks(project_ids)
    generations = await backend.generations(project_ids)
    # Taken after the read, never before: a backup that captured later than this instant
    # snapshotted after the read, so it holds every write the read saw (one that captured
    # earlier makes the project dirty, which errs the right way).
    now = time.time() if now is None else now
    changes = await backend.changes(project_ids)
    changed: list[str] = []
    failed: dict[str, str] = {}
    records = journal.freshness_all()
    with journal.batch():
        for project_id, generation in generations.items():
            if isinstance(generation, Exception):
                failed[project_id] = str(generation)
                continue
            journal.note_look(project_id, began)
            text = generation.as_text()
            record = records.get(project_id) or {}
            if text != record.get("seen_generation"):
                journal.set_seen_generation(project_id, text)
                if text != record.get("last_backup_generation"):
                    journal.mark_changed(project_id, now, since=previous_looks[project_id])
                    changed.append(project_id)
        for project_id, change in changes.items():
            journal.mark_changed(project_id, change.when, since=change.since)
            changed.append(project_id)
    return Observed(changed=tuple(changed), failed=failed)


@dataclass(frozen=True)
class Observed:
    """What one :func:`observe_all` cycle found: the projects whose change it recorded (on the
    directory backend also ones a full scan looked at, whose newest change may be older than
    their last backup), and the ones it could not read, with why."""

    changed: tuple[str, ...]
    failed: dict[str, str]


async def observe(journal: Journal, backend: Backend, project_id: str, *, now: float | None = None) -> None:
    """Look at the project once and record in the journal any change the backend can see."""
    began = time.time() if now is None else now
    previous_look = journal.last_look(project_id)
    generation = await backend.generation(project_id)
    now = time.time() if now is None else now  # after the read: see observe_all
    if generation is not None:
        journal.note_look(project_id, began)
        text = generation.as_text()
        record = journal.freshness(project_id)
        if text != record["seen_generation"]:
            journal.set_seen_generation(project_id, text)
            if text != record["last_backup_generation"]:
                # Changed at some moment after the previous look (its generation was the one
                # seen) and before this one: seen now, made at the previous look at the earliest.
                journal.mark_changed(project_id, now, since=previous_look)
        return
    modified = await backend.last_modified(project_id)
    if modified is not None:
        change = Change.seen(modified, time.time())  # the scan's file time, read before this moment
        journal.mark_changed(project_id, change.when, since=change.since)
