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
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.backends.base import Backend
from agent.journal import Journal


@dataclass(frozen=True)
class Freshness:
    last_backup: float | None
    last_backup_snapshot: str
    last_change: float | None

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
    )


async def observe(journal: Journal, backend: Backend, project_id: str, *, now: float | None = None) -> None:
    """Look at the project once and record in the journal any change the backend can see."""
    now = time.time() if now is None else now
    generation = await backend.generation(project_id)
    if generation is not None:
        text = generation.as_text()
        record = journal.freshness(project_id)
        if text != record["seen_generation"]:
            journal.set_seen_generation(project_id, text)
            if text != record["last_backup_generation"]:
                journal.mark_changed(project_id, now)
        return
    modified = await backend.last_modified(project_id)
    if modified is not None:
        journal.mark_changed(project_id, modified)
