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
* on the directory backend, a scan for the newest mtime/ctime in the trees.

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
from dataclasses import dataclass

from agent.backends.base import Backend
from agent.journal import Journal
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
    record = journal.freshness(project_id)
    return Freshness(
        last_backup=record["last_backup_time"],
        last_backup_snapshot=record["last_backup_snapshot"] or "",
        last_change=record["last_change_time"],
        unprotected_since=record["unprotected_since"],
    )


async def observe(journal: Journal, backend: Backend, project_id: str, *, now: float | None = None) -> None:
    """Look at the project once and record in the journal any change the backend can see."""
    now = time.time() if now is None else now
    previous_look = journal.last_look(project_id)
    generation = await backend.generation(project_id)
    if generation is not None:
        journal.note_look(project_id, now)
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
        journal.mark_changed(project_id, modified)
