"""Trees a whole-project restore (or an undo) replaced, kept for UndoRestore.

Layout (agent-owned, mode 0700, never a project: no ``project-`` name at the roots; never
backed up: backups read only ``project-<uuid>``)::

    <projects_root>/.undo/<op>/kept.json    what is kept: project, since, until, pre-restore snapshot
    <projects_root>/.undo/<op>/project      the replaced home (btrfs: a read-only subvolume)
    <persist_root>/.undo/<op>/persist       the replaced persist location

``<op>`` is the operation whose swap replaced them (a restore, an EnsureProject or an undo).

The filesystem is the record. ``kept.json`` is written before any tree is moved in, so a kept
tree always has its record; the trees are moved in by renames in the same synchronous step as
the swap (and again by crash recovery, see :func:`move_kept`), so nothing else can run between
the swap and the keep. Removing one (expiry, DeleteProject, an undo that put it back) takes the
persist side first and the record last. Every change to kept trees after that first step runs
under :attr:`KeptTrees.lock`, so expiry never removes a tree an undo is putting back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent import errors, fsops
from agent.backends.base import Backend

log = structlog.get_logger("agent.undo")

RECORD = "kept.json"
ROLES = ("project", "persist")


@dataclass(frozen=True)
class Kept:
    """One operation's kept trees. ``project``/``persist`` are None when that tree is not kept."""

    operation_id: str
    project_id: str
    kept_at: float
    expires_at: float
    pre_restore_snapshot: str
    project: Path | None
    persist: Path | None

    @property
    def trees(self) -> list[Path]:
        return [p for p in (self.project, self.persist) if p is not None]


def move_kept(steps: list[dict]) -> None:
    """Move each ``from`` tree to its ``to`` path (the kept place), by rename; steps already done
    are skipped, so recovery runs it again after a crash. Runs after the swap has completed,
    when every ``from`` holds the replaced tree or nothing. Synchronous on purpose, like the swap."""
    for step in steps:
        source, target = Path(step["from"]), Path(step["to"])
        if not (source.exists() or source.is_symlink()) or target.exists() or target.is_symlink():
            continue
        fsops.rename_noreplace(source, target)


class KeptTrees:
    """The kept trees of one host's backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.lock = asyncio.Lock()

    def _roots(self) -> tuple[Path, Path]:
        return self.backend.projects_root / ".undo", self.backend.persist_root / ".undo"

    def _dirs(self, operation_id: str) -> dict[str, Path]:
        home_side, persist_side = self.backend.undo_dirs(operation_id)
        return {"project": home_side, "persist": persist_side}

    # ------------------------------------------------------------ keeping

    def prepare(
        self, *, operation_id: str, project_id: str, keep_seconds: float, trees: dict[str, Path],
        pre_restore_snapshot: str = "", now: float | None = None,
    ) -> list[dict]:
        """Make the kept place of ``operation_id`` and its record; returns the :func:`move_kept`
        steps that move ``trees`` (role "project"/"persist" → where the replaced tree will be
        once the swap is done) into it. Synchronous: call it in the swap's step."""
        now = time.time() if now is None else now
        dirs = self._dirs(operation_id)
        for root in self._roots():
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(root, 0o700)
        dirs["project"].mkdir(mode=0o700, exist_ok=True)
        record = {"operation_id": operation_id, "project_id": project_id, "kept_at": now,
                  "expires_at": now + keep_seconds, "pre_restore_snapshot": pre_restore_snapshot}
        temporary = dirs["project"] / (RECORD + ".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, dirs["project"] / RECORD)
        dirs["persist"].mkdir(mode=0o700, exist_ok=True)
        return [{"from": str(source), "to": str(dirs[role] / role)} for role, source in trees.items()]

    def _read(self, home_side: Path) -> Kept | None:
        try:
            record = json.loads((home_side / RECORD).read_text())
        except (OSError, ValueError):
            return None
        operation_id = home_side.name
        dirs = self._dirs(operation_id)
        found = {role: dirs[role] / role for role in ROLES if (dirs[role] / role).exists()}
        return Kept(operation_id=operation_id, project_id=record["project_id"], kept_at=record["kept_at"],
                    expires_at=record["expires_at"], pre_restore_snapshot=record.get("pre_restore_snapshot", ""),
                    project=found.get("project"), persist=found.get("persist"))

    def list(self, project_id: str | None = None) -> list[Kept]:
        """Every kept entry with at least one tree (of ``project_id`` when given), oldest first."""
        home_root = self._roots()[0]
        if not home_root.is_dir():
            return []
        found = []
        for entry in home_root.iterdir():
            kept = self._read(entry)
            if kept is not None and kept.trees and project_id in (None, kept.project_id):
                found.append(kept)
        return sorted(found, key=lambda k: (k.kept_at, k.operation_id))

    def find(self, project_id: str, operation_id: str = "", *, now: float | None = None) -> Kept:
        """The unexpired kept trees of ``project_id`` replaced by ``operation_id`` (empty: the newest);
        raises NotFound."""
        now = time.time() if now is None else now
        live = [k for k in self.list(project_id) if k.expires_at > now]
        if operation_id:
            live = [k for k in live if k.operation_id == operation_id]
        if not live:
            what = f"operation {operation_id}" if operation_id else "a whole-project restore"
            raise errors.NotFound(f"no tree replaced by {what} is kept for project {project_id} "
                                  "(none was replaced, or it expired)")
        return live[-1]

    # ------------------------------------------------------------ sealing and removing

    async def seal(self, operation_id: str) -> None:
        """Make ``operation_id``'s kept trees read-only (where the backend can)."""
        async with self.lock:
            kept = self._read(self._dirs(operation_id)["project"])
            for tree in kept.trees if kept else []:
                await self.backend.seal(tree)

    async def unseal(self, kept: Kept) -> None:
        """Writable again, before they are swapped back in (call under :attr:`lock`)."""
        for tree in kept.trees:
            await self.backend.unseal(tree)

    async def _remove(self, operation_id: str) -> None:
        dirs = self._dirs(operation_id)
        # Persist side first, the record last: a crash in between leaves a record whose
        # remaining trees are still found (and expire again).
        for role in ("persist", "project"):
            await self.backend.remove_kept(dirs[role] / role)
        await self.backend.remove_kept(dirs["persist"])
        await self.backend.remove_kept(dirs["project"])

    def drop_empty(self, operation_id: str) -> None:
        """Remove the kept place of ``operation_id`` once its trees are gone (put back by an undo)."""
        dirs = self._dirs(operation_id)
        if any((dirs[role] / role).exists() for role in ROLES):
            return
        for directory in (dirs["persist"], dirs["project"]):
            fsops.remove_tree(directory)

    async def remove_project(self, project_id: str) -> list[str]:
        """Remove every kept tree of ``project_id`` (DeleteProject of the whole project)."""
        async with self.lock:
            doomed = [k.operation_id for k in self.list(project_id)]
            for operation_id in doomed:
                await self._remove(operation_id)
        return doomed

    async def sweep(self, *, now: float | None = None, seal: bool = False) -> list[str]:
        """Remove expired kept trees and leftovers (places whose trees are gone, a persist side
        without its record); with ``seal`` also make every kept tree read-only (agent start:
        one that was moved in just before a crash). Returns the operation ids removed."""
        now = time.time() if now is None else now
        removed = []
        async with self.lock:
            home_root, persist_root = self._roots()
            for entry in sorted(home_root.iterdir()) if home_root.is_dir() else []:
                kept = self._read(entry)
                if kept is None:
                    if (entry / "project").exists() or (entry / "project").is_symlink():
                        # Never the case by construction (the record comes first); never remove
                        # a tree without knowing whose it is.
                        log.error("undo.tree_without_record", path=str(entry))
                        continue
                    await self.backend.remove_kept(entry)
                    removed.append(entry.name)
                elif not kept.trees or kept.expires_at <= now:
                    await self._remove(kept.operation_id)
                    removed.append(entry.name)
                elif seal:
                    for tree in kept.trees:
                        await self.backend.seal(tree)
            for entry in sorted(persist_root.iterdir()) if persist_root.is_dir() else []:
                if not (home_root / entry.name / RECORD).exists():
                    await self.backend.remove_kept(entry)
        if removed:
            log.info("undo.removed", operations=removed)
        return removed
