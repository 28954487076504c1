"""The directory backend: projects are plain directories (laptops, CI without btrfs, the embedded default).

What it cannot do, compared with btrfs (also reported by GetCapabilities):
the engine reads the live tree, not a frozen read-only snapshot, so a file
written during a backup may or may not be in it; there is no generation
number, so an unchanged project is only found by the engine's own scan; no
quota is enforced. Freeze is a read-only bind mount of the home and the
persist location onto themselves (root only: elsewhere Freeze fails with
FAILED_PRECONDITION); it lives in the host's mount table, so it survives an
agent restart. A frozen project is deleted inside a private mount namespace
(:mod:`agent.backends.nsremove`), never made writable on the host first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from agent import bookkeeping, errors, fsops, writers
from agent.backends import dirwatch, mounts, nsremove
from agent.backends.base import EngineView, Generation, ProjectLayout, Staging, bind_wrapper
from agent.executor import run_process
from agent.ids import project_dir_name

__all__ = ["DirectoryBackend", "EngineView", "Staging", "bind_wrapper"]

log = structlog.get_logger("agent.backends.directory")

LIMITATIONS = (
    "directory backend: backups read the live tree, not an atomic read-only snapshot",
    "directory backend: no generation number; unchanged projects are found by the engine's scan",
    "directory backend: changes are found through inotify watches (one per directory, within "
    "fs.inotify.max_user_watches); a project that cannot be watched is scanned in full every cycle",
    "directory backend: no quotas are enforced",
    "directory backend: Freeze needs mount privileges (a read-only bind mount; root only)",
)


class DirectoryBackend(ProjectLayout):
    """Takes the roots of homes and persist locations and the agent's state directory."""

    name = "directory"

    def __init__(self, *, projects_root: Path, persist_root: Path, state_dir: Path,
                 max_watches: int | None = None) -> None:
        """``max_watches``: the change watcher's budget of inotify watches (None: the kernel's limit)."""
        self.projects_root = projects_root
        self.persist_root = persist_root
        self._views = state_dir / "views"
        self._frozen = state_dir / "frozen"
        for directory in (projects_root, persist_root, self._views, self._frozen):
            directory.mkdir(parents=True, exist_ok=True)
        self._init_backup_views()
        self._max_watches = max_watches
        self._watcher: dirwatch.ChangeWatcher | None = None
        self._watching = asyncio.Lock()

    @property
    def limitations(self) -> tuple[str, ...]:
        base = (*LIMITATIONS, *self._view_limitations)
        watcher = self._watcher
        if watcher is None:
            return base
        if not watcher.available:
            return (*base, "directory backend: inotify is not available; every project is scanned in full "
                           "every cycle")
        if watcher.unwatched:
            return (*base, f"directory backend: {len(watcher.unwatched)} projects could not be watched "
                           f"(inotify watch limit; {watcher.watches} watches in use) and are scanned in "
                           "full every cycle")
        return base

    # ------------------------------------------------------------ life cycle

    async def create(self, project_id: str, *, quota_bytes: int | None) -> bool:
        """Create the two directories if missing; ``quota_bytes`` cannot be enforced here."""
        created = False
        for path in (self.home(project_id), self.persist(project_id)):
            if not path.is_dir():
                path.mkdir(parents=True)
                created = True
        return created

    async def delete(self, project_id: str) -> bool:
        """Remove both trees; a frozen one is removed in a private mount namespace, so it is
        never writable on the host on the way (see :mod:`agent.backends.nsremove`)."""
        existed = False
        (self._frozen / project_dir_name(project_id)).unlink(missing_ok=True)  # a marker of older versions
        for path in (self.home(project_id), self.persist(project_id)):
            if not (path.exists() or path.is_symlink()):
                continue
            existed = True
            if not path.is_symlink() and mounts.mounts_at(os.path.realpath(path)):
                # Frozen (or a bind left by a freeze that was killed half-way): a mount point is
                # removed where the mounts are not, never by making it writable here.
                await self._remove_frozen(path)
            else:
                await asyncio.to_thread(fsops.remove_tree, path)
        return existed

    async def _remove_frozen(self, path: Path) -> None:
        real = os.path.realpath(path)
        result = await run_process([sys.executable, "-I", str(Path(nsremove.__file__)), real],
                                   env={"LANG": "C"}, timeout=3600.0)
        if result.returncode != 0:
            raise errors.Internal(f"cannot remove frozen {path}: {result.stderr_tail.strip()}")
        if mounts.mounts_at(real):
            # A kernel that keeps the host's mounts of a directory removed elsewhere: the tree is
            # already gone, only the empty mount point is left.
            mounts.unmount_all(real)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(real)

    async def generation(self, project_id: str) -> Generation | None:
        return None

    async def staged_generation(self, staging: Staging) -> Generation | None:
        return None

    async def write_back(self, staging: Staging) -> None:
        return None  # nothing here waits for the disk: the kernel writes back in its own time

    async def generations(self, project_ids: Sequence[str]) -> dict[str, Generation | errors.BucketsError]:
        return {}

    async def changes(self, project_ids: Sequence[str]) -> dict[str, dirwatch.Change]:
        """Projects among ``project_ids`` changed since the previous call, and when (see
        :meth:`agent.backends.dirwatch.ChangeWatcher.changes`); the first call scans them all."""
        async with self._watching:
            return await asyncio.to_thread(self._changes, list(project_ids))

    def _changes(self, project_ids: list[str]) -> dict[str, dirwatch.Change]:
        if self._watcher is None:
            self._watcher = dirwatch.ChangeWatcher(lambda p: (self.home(p), self.persist(p)),
                                                   max_watches=self._max_watches)
        return self._watcher.changes(project_ids)

    @property
    def watcher(self) -> dirwatch.ChangeWatcher | None:
        """The change watcher once :meth:`changes` ran (for status and tests)."""
        return self._watcher

    async def last_modified(self, project_id: str) -> float | None:
        if not self.exists(project_id):
            return None
        return await bookkeeping.run(
            lambda: max(fsops.newest_change(self.home(project_id)), fsops.newest_change(self.persist(project_id)))
        )

    async def size(self, project_id: str) -> int:
        return await asyncio.to_thread(
            lambda: fsops.tree_size(self.home(project_id))[0] + fsops.tree_size(self.persist(project_id))[0]
        )

    # ------------------------------------------------------------ freeze (read-only bind mounts)

    def _trees(self, project_id: str) -> list[str]:
        """The real paths of the project's trees that exist; a symlinked one is refused."""
        trees = []
        for path in (self.home(project_id), self.persist(project_id)):
            if path.is_symlink():
                raise errors.FailedPrecondition(f"{path} is a symlink; refusing to freeze or thaw through it")
            if path.is_dir():
                trees.append(os.path.realpath(path))
        return trees

    async def freeze(self, project_id: str) -> None:
        self._require(project_id)
        for tree in self._trees(project_id):
            mounts.bind_readonly(tree)

    async def thaw(self, project_id: str) -> None:
        self._require(project_id)
        for tree in reversed(self._trees(project_id)):
            mounts.unmount_all(tree, readonly_only=True)
        (self._frozen / project_dir_name(project_id)).unlink(missing_ok=True)

    async def is_frozen(self, project_id: str) -> bool:
        home = self.home(project_id)
        return home.is_dir() and not home.is_symlink() and mounts.is_readonly_mount(os.path.realpath(home))

    async def frozen_projects(self, project_ids: Sequence[str]) -> set[str]:
        """:meth:`is_frozen` of many projects from one read of the mount table."""
        def frozen() -> set[str]:
            readonly = mounts.readonly_mount_points()
            return {p for p in project_ids if (home := self.home(p)).is_dir() and not home.is_symlink()
                    and os.path.realpath(home) in readonly}
        return await asyncio.to_thread(frozen)

    def writer_scope(self, project_id: str) -> writers.Scope:
        """Any open file, working directory or root inside a tree counts: through them a process
        reaches the writable mount below the read-only bind."""
        return writers.scope_for([self.home(project_id), self.persist(project_id)], any_open=True)

    # ------------------------------------------------------------ backup

    @asynccontextmanager
    async def backup_view(self, project_id: str, operation_id: str) -> AsyncIterator[EngineView]:
        """Yield the view an engine backs up from.

        The view root is the same for every backup (:mod:`agent.backends.views`) so the engine
        finds its parent snapshot by path, on any host, and skips unchanged files.
        """
        root = self._backup_root(project_id)
        binds = []
        for name, source in (("project", self.home(project_id)), ("persist", self.persist(project_id))):
            if source.is_dir():
                binds.append((source, root / name))
        home = self.home(project_id)
        # The live tree, which its user may change meanwhile: mounted read-only and nosymfollow,
        # so no directory swapped for a symlink leads the engine's reads out of the project.
        yield EngineView(wrapper=bind_wrapper([], read=binds), root=root, project=home if home.is_dir() else None)

    # ------------------------------------------------------------ restore

    async def prepare_staging(self, project_id: str, operation_id: str) -> Staging:
        """Create empty staging trees for a restore and the view the engine restores into."""
        project_staging, persist_staging = self._staging_dirs(operation_id)
        project_dir = project_staging / "project"
        persist_dir = persist_staging / "persist"
        for directory in (project_dir, persist_dir):
            directory.mkdir(parents=True, exist_ok=False)
        return self._staging(operation_id, project_dir, persist_dir)

    def swap_plan(self, project_id: str, staging: Staging) -> list[dict]:
        """What :meth:`swap_in` will do, as facts recovery can act on: for each
        pair, the staged path, the live path and the staged tree's inode (which
        tells, after a crash, whether that exchange already happened)."""
        return self.plan_swap([(staging.persist, self.persist(project_id)), (staging.project, self.home(project_id))])

    def plan_swap(self, pairs: list[tuple[Path, Path]]) -> list[dict]:
        return [{"staged": str(staged), "live": str(live), "inode": staged.lstat().st_ino} for staged, live in pairs]

    def swap_in(self, plan: list[dict]) -> None:
        """Put every staged tree of ``plan`` in place (each step atomic, and re-runnable)."""
        for step in plan:
            staged, live = Path(step["staged"]), Path(step["live"])
            try:
                if staged.lstat().st_ino != step["inode"]:
                    continue  # this exchange already happened
            except FileNotFoundError:
                continue  # renamed into place already (there was no old tree)
            fsops.put_in_place(staged, live)

    async def seal(self, path: Path) -> None:
        return None  # no read-only flag for a plain tree: the 0700 undo directory keeps users out

    async def unseal(self, path: Path) -> None:
        return None

    async def remove_kept(self, path: Path) -> None:
        await asyncio.to_thread(fsops.remove_tree, path)

    async def discard_staging(self, operation_id: str) -> None:
        """Remove a restore's staging trees and view (old trees swapped out included)."""
        await asyncio.to_thread(self._discard_staging, operation_id)

    def _discard_staging(self, operation_id: str) -> None:
        for directory in self._staging_dirs(operation_id):
            fsops.remove_tree(directory)
        view = self._views / f"restore-{operation_id}"
        if view.exists():
            fsops.remove_tree(view)

    async def remove_stale(self, keep: frozenset[str] = frozenset()) -> list[Path]:
        return await asyncio.to_thread(self._remove_stale, keep)

    def _remove_stale(self, keep: frozenset[str]) -> list[Path]:
        """Remove staging trees and restore views of operations not in ``keep``; returns what was removed."""
        removed = []
        for parent in (self.projects_root / ".staging", self.persist_root / ".staging"):
            if parent.is_dir():
                for entry in parent.iterdir():
                    if entry.name not in keep:
                        fsops.remove_tree(entry)
                        removed.append(entry)
        for entry in self._views.iterdir():
            if entry.name.startswith("restore-") and entry.name[len("restore-") :] not in keep:
                fsops.remove_tree(entry)
                removed.append(entry)
        if removed:
            log.info("staging.removed_stale", paths=[str(p) for p in removed])
        return removed

