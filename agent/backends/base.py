"""What a project storage backend offers: the interface jobs and the service use.

Two implementations: :mod:`agent.backends.btrfs` (production: every project is
a btrfs subvolume) and :mod:`agent.backends.directory` (plain directories: the
embedded default, laptops, CI without root). Both serve the same API; what the
directory backend cannot do is in its ``limitations`` (GetCapabilities, README).

Layout of both::

    <projects_root>/project-<uuid>              the home
    <persist_root>/project-<uuid>               the persist location
    <projects_root>/.staging/<op>/project       a restore's staged home
    <persist_root>/.staging/<op>/persist        a restore's staged persist location
    <projects_root>/.snapshots/<op>/{project,persist}   a backup's read-only snapshots (btrfs)
    <projects_root>/.undo/<op>/project + kept.json      a tree a restore replaced, kept for
    <persist_root>/.undo/<op>/persist                   UndoRestore (:mod:`agent.undo`)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from agent import errors, fsops, usertree, writers
from agent.backends import bindexec, views
from agent.ids import project_dir_name

if TYPE_CHECKING:
    from agent.backends.dirwatch import Change


@dataclass(frozen=True)
class EngineView:
    """How an engine run sees a project's two roots: run ``wrapper + engine argv``;
    inside, ``root/project`` and ``root/persist`` are the project's trees."""

    wrapper: tuple[str, ...]
    root: Path
    # For a backup view: the generations of what the view shows (btrfs: the
    # read-only snapshots); None when the backend cannot tell.
    generation: Generation | None = None
    # For a backup view: the project tree the view shows, as a path outside the engine's
    # namespace (btrfs: the read-only snapshot; directory: the live home), for the agent to
    # read itself (a copy, or checking a backup's subpath); None when the project has no home.
    project: Path | None = None


@dataclass(frozen=True)
class Staging:
    """A restore's fresh target trees, put in place only after the engine succeeded."""

    operation_id: str
    project: Path
    persist: Path
    view: EngineView


@dataclass(frozen=True)
class Generation:
    """The change counters of a project's two trees; equal values mean nothing was written."""

    project: int
    persist: int

    def as_text(self) -> str:
        return f"{self.project}/{self.persist}"


def bind_wrapper(binds: list[tuple[Path, Path]], *, read: Sequence[tuple[Path, Path]] = ()) -> tuple[str, ...]:
    """The argv prefix that runs a program with ``binds`` (source, target) mounted privately, and
    ``read`` ones mounted read-only and nosymfollow."""
    # -S: no site import (bindexec needs only the standard library): ~20 ms less per engine run.
    argv = [sys.executable, "-I", "-S", str(Path(bindexec.__file__))]
    for source, target in binds:
        argv += ["--bind", str(source), str(target)]
    for source, target in read:
        argv += ["--bind-read", str(source), str(target)]
    return (*argv, "--")


def fd_view(views: Path, operation_id: str, *, write: Mapping[str, int] = MappingProxyType({}),
            read: Mapping[str, int] = MappingProxyType({})) -> EngineView:
    """A view for a program that must see directories the agent opened by descriptor, and
    nothing else of the user's tree: inside, ``root/<name>`` is the directory of each
    descriptor (``read`` ones read-only and nosymfollow), bound through ``/proc/<agent>/fd/N``,
    so what the program writes lands in exactly that directory whatever the user does to the
    paths around it. The agent keeps the descriptors open while the program runs; the view's
    mount points are removed by :func:`remove_fd_view` (or as a stale restore view at start)."""
    root = views / f"restore-{operation_id}"
    binds, reads = [], []
    for names, out in ((write, binds), (read, reads)):
        for name, fd in names.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            out.append((Path(usertree.proc_path(fd)), root / name))
    return EngineView(wrapper=bind_wrapper(binds, read=reads), root=root)


def remove_fd_view(view: EngineView) -> None:
    """Remove the mount points :func:`fd_view` made (empty directories of the agent's)."""
    fsops.remove_tree(view.root)


class ProjectLayout:
    """Where a project's trees and a restore's staging live; shared by both backends."""

    projects_root: Path
    persist_root: Path
    _views: Path
    # The backup view root shared by every project (agent.backends.views.FIXED_ROOT), or None
    # for a view per project under ``_views``; set by :meth:`_init_backup_views`.
    _fixed_view: Path | None = None
    _view_limitations: tuple[str, ...] = ()

    def _init_backup_views(self) -> None:
        fixed, limitation = views.backup_roots(self._views)
        self._fixed_view = fixed
        self._view_limitations = (limitation,) if limitation else ()

    def _backup_root(self, project_id: str) -> Path:
        """The directory a backup of ``project_id`` runs in (:mod:`agent.backends.views`), its
        ``project`` and ``persist`` mount points made."""
        return views.backup_view_root(self._fixed_view, self._views, project_id)

    def home(self, project_id: str) -> Path:
        return self.projects_root / project_dir_name(project_id)

    def persist(self, project_id: str) -> Path:
        return self.persist_root / project_dir_name(project_id)

    def exists(self, project_id: str) -> bool:
        return self.home(project_id).is_dir()

    def fd_view(self, operation_id: str, *, write: Mapping[str, int] = MappingProxyType({}),
                read: Mapping[str, int] = MappingProxyType({})) -> EngineView:
        """:func:`fd_view` in this backend's view directory."""
        return fd_view(self._views, operation_id, write=write, read=read)

    def undo_dirs(self, operation_id: str) -> tuple[Path, Path]:
        """Where the trees operation ``operation_id`` replaced are kept: (home side, persist side)."""
        return self.projects_root / ".undo" / operation_id, self.persist_root / ".undo" / operation_id

    def _staging_dirs(self, operation_id: str) -> tuple[Path, Path]:
        return self.projects_root / ".staging" / operation_id, self.persist_root / ".staging" / operation_id

    def require_real(self, project_id: str) -> None:
        """FailedPrecondition when the project's home or persist location is there but is a
        symlink or not a directory (:func:`agent.usertree.check_root`): the agent never works
        through one. Missing ones are fine."""
        usertree.check_root(self.home(project_id), what=f"home of project {project_id}")
        usertree.check_root(self.persist(project_id), what=f"persist location of project {project_id}")

    def is_linked(self, project_id: str) -> bool:
        """Whether the home or persist location is a symlink (which only DeleteProject touches:
        it removes the link)."""
        return self.home(project_id).is_symlink() or self.persist(project_id).is_symlink()

    def _require(self, project_id: str) -> None:
        self.require_real(project_id)
        if not self.exists(project_id):
            raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)

    def open_staging(self, staging_id: str) -> Staging | None:
        """The staging ``staging_id`` that an earlier operation prepared and kept (a pre-copy), with
        a fresh engine view; None when either of its trees is missing."""
        project_staging, persist_staging = self._staging_dirs(staging_id)
        project_dir, persist_dir = project_staging / "project", persist_staging / "persist"
        if not (project_dir.is_dir() and not project_dir.is_symlink()
                and persist_dir.is_dir() and not persist_dir.is_symlink()):
            return None
        return self._staging(staging_id, project_dir, persist_dir)

    def _staging(self, operation_id: str, project_dir: Path, persist_dir: Path) -> Staging:
        """A restore's staged trees and the view the engine restores into (``_views`` is the
        backend's view directory)."""
        view_root = self._views / f"restore-{operation_id}"
        for name in ("project", "persist"):
            (view_root / name).mkdir(parents=True, exist_ok=True)
        view = EngineView(
            wrapper=bind_wrapper([(project_dir, view_root / "project"), (persist_dir, view_root / "persist")]),
            root=view_root,
        )
        return Staging(operation_id=operation_id, project=project_dir, persist=persist_dir, view=view)


class Backend(Protocol):
    """Project storage on one host. Methods raise BucketsErrors."""

    name: str
    limitations: tuple[str, ...]
    projects_root: Path
    persist_root: Path

    def home(self, project_id: str) -> Path: ...

    def persist(self, project_id: str) -> Path: ...

    def exists(self, project_id: str) -> bool: ...

    def require_real(self, project_id: str) -> None:
        """FailedPrecondition when the home or persist location is a symlink or not a directory."""

    def is_linked(self, project_id: str) -> bool: ...

    def fd_view(self, operation_id: str, *, write: Mapping[str, int] = MappingProxyType({}),
                read: Mapping[str, int] = MappingProxyType({})) -> EngineView:
        """A view of directories the agent opened by descriptor (:func:`fd_view`)."""

    async def create(self, project_id: str, *, quota_bytes: int | None) -> bool:
        """Create the home and persist location if missing; returns whether anything was created."""

    async def delete(self, project_id: str) -> bool:
        """Remove the home, the persist location and every snapshot of the project; returns
        whether anything existed. Deleting a missing project is not an error."""

    def backup_view(self, project_id: str, operation_id: str) -> AbstractAsyncContextManager[EngineView]:
        """The view an engine backs up from, for the duration of the block; whatever it
        took (a read-only snapshot) is removed in every outcome."""

    async def generation(self, project_id: str) -> Generation | None:
        """The project's committed change counters now, or None when the backend cannot tell."""

    async def generations(self, project_ids: Sequence[str]) -> dict[str, Generation | errors.BucketsError]:
        """Committed change counters of many projects at once, after one sync per filesystem (the
        reconciler's cycle); projects without a home are left out, one that cannot be read maps to
        its error. Empty on backends without generations."""

    async def changes(self, project_ids: Sequence[str]) -> dict[str, Change]:
        """Backends without generations: the projects among ``project_ids`` changed since the
        previous call, each with its newest change (:class:`agent.backends.dirwatch.Change`: the
        file time it was made at, and a moment no earlier than it; the first call, and wherever
        the backend cannot vouch, scan in full: the newest mtime/ctime). Empty on backends with
        generations."""

    async def last_modified(self, project_id: str) -> float | None:
        """The newest mtime/ctime in the project's trees (a scan), for backends without
        generations; None when the backend has generations or the project is missing."""

    async def size(self, project_id: str) -> int:
        """Bytes the project uses (home and persist); 0 when missing."""

    async def prepare_staging(self, project_id: str, operation_id: str) -> Staging: ...

    def open_staging(self, staging_id: str) -> Staging | None:
        """A staging prepared earlier and kept (a pre-copy); None when it is not whole."""

    async def write_back(self, staging: Staging) -> None:
        """Have what the restore wrote into ``staging`` so far written to disk, while it goes on
        (where the end of the restore waits for that: btrfs, to read final generations)."""

    async def staged_generation(self, staging: Staging) -> Generation | None:
        """The committed change counters of a restore's staged trees (what :meth:`generation`
        gives once they are swapped in and nothing wrote since), or None when the backend cannot tell."""

    def swap_plan(self, project_id: str, staging: Staging) -> list[dict]:
        """What :meth:`swap_in` will do, as facts recovery can act on after a crash."""

    def plan_swap(self, pairs: list[tuple[Path, Path]]) -> list[dict]:
        """:meth:`swap_plan` for explicit (staged, live) pairs, each staged tree existing."""

    def swap_in(self, plan: list[dict]) -> None:
        """Put every staged tree of ``plan`` in place; each step atomic, the whole re-runnable.
        Synchronous on purpose: no await (so no cancellation) can split it."""

    async def discard_staging(self, operation_id: str) -> None:
        """Remove a restore's staging (and the old trees swapped out into it)."""

    async def remove_stale(self, keep: frozenset[str] = frozenset()) -> list[Path]:
        """Remove staging and temporary snapshots of operations not in ``keep``."""

    async def seal(self, path: Path) -> None:
        """Make a kept tree read-only (btrfs: the subvolume's ro property; directory: nothing, its
        0700 parent keeps it from users)."""

    async def unseal(self, path: Path) -> None:
        """Undo :meth:`seal` before a kept tree is swapped back into place."""

    async def remove_kept(self, path: Path) -> None:
        """Remove a kept tree (and every subvolume below it); a missing one is fine."""

    async def freeze(self, project_id: str) -> None:
        """Make the project read-only on this host (idempotent)."""

    async def thaw(self, project_id: str) -> None:
        """Undo :meth:`freeze` (idempotent)."""

    async def is_frozen(self, project_id: str) -> bool:
        """Whether the project's trees refuse writes now (read from the filesystem, not a marker)."""

    async def frozen_projects(self, project_ids: Sequence[str]) -> set[str]:
        """Which of ``project_ids`` are frozen (:meth:`is_frozen` of each, at a flat cost: ListProjects)."""

    def writer_scope(self, project_id: str) -> "writers.Scope":
        """Where a process holding a file can change the project's data (:mod:`agent.writers`)."""

