"""The btrfs backend: every home and persist location is a btrfs subvolume.

Backups read read-only snapshots taken for the operation
(``<projects_root>/.snapshots/<op>/``, removed in every outcome); restores go
into fresh staging subvolumes that are swapped into place with one
``renameat2(RENAME_EXCHANGE)`` each; the old trees are deleted after the swap.
Quotas are qgroup limits on the home subvolume; Freeze is the subvolume
``ro`` property, which no process can write through and which survives an
agent restart. Every btrfs command runs through the executor; argv building
and parsing live in :mod:`agent.backends.btrfs_cli`.

Both roots and the agent's snapshot and staging directories must be on one
btrfs filesystem (snapshots and renames do not cross filesystems) with quotas
enabled when quotas are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent import errors, fsops, housekeeping, writers
from agent.backends import btrfs_cli as bc
from agent.backends import btrfs_ioctl, mounts
from agent.backends.base import EngineView, Generation, ProjectLayout, Staging, bind_wrapper
from agent.executor import ProcessResult, run_process
from agent.ids import project_dir_name

log = structlog.get_logger("agent.backends.btrfs")

COMMAND_TIMEOUT = 600.0
# Seconds between SIGTERM and SIGKILL for processes inside a frozen project being deleted.
DELETE_GRACE = 2.0


class BtrfsBackend(ProjectLayout):
    """Takes the roots of homes and persist locations, the agent's state dir, the btrfs
    binary and the default quota (bytes; None = no limit)."""

    name = "btrfs"

    def __init__(
        self,
        *,
        projects_root: Path,
        persist_root: Path,
        state_dir: Path,
        binary: str = "btrfs",
        default_quota_bytes: int | None = None,
    ) -> None:
        self.projects_root = projects_root
        self.persist_root = persist_root
        self.binary = binary
        self.default_quota_bytes = default_quota_bytes
        self._views = state_dir / "views"
        self._snapshots = projects_root / ".snapshots"
        for directory in (projects_root, persist_root, self._views, self._snapshots):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (self._snapshots, projects_root / ".staging", persist_root / ".staging"):
            directory.mkdir(mode=0o700, exist_ok=True)
        self._init_backup_views()
        self.limitations: tuple[str, ...] = self._view_limitations
        if "noatime" not in mount_options(projects_root):
            # Reads then update atimes, which changes generations: reads look like writes.
            self.limitations = (
                *self.limitations,
                f"btrfs backend: {projects_root} is not mounted noatime; reading a project counts as a "
                "change (dirty, and no unchanged-backup skip)",
            )
            log.warning("btrfs.atime_updates", projects_root=str(projects_root))

    # ------------------------------------------------------------ plumbing

    async def _run(self, argv: list[str], *, action: str, capture: bool = False) -> ProcessResult:
        result = await run_process(
            argv,
            env={"PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                 "LANG": "C"},
            timeout=COMMAND_TIMEOUT,
            capture_stdout=capture,
        )
        if result.returncode != 0:
            raise bc.classify_failure(result.returncode, result.stderr_tail, action=action)
        return result

    async def _show(self, path: Path) -> bc.SubvolumeInfo:
        result = await self._run(bc.subvolume_show_args(self.binary, str(path)), action="subvolume show",
                                 capture=True)
        return bc.parse_subvolume_show(result.stdout)

    async def _create_subvolume(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self._run(bc.subvolume_create_args(self.binary, str(path)), action="subvolume create")

    async def _set_readonly(self, path: Path, readonly: bool) -> None:
        await self._run(bc.property_set_ro_args(self.binary, str(path), readonly), action="property set ro")

    async def _is_readonly(self, path: Path) -> bool:
        # By ioctl: ListProjects asks this of every project.
        return await asyncio.to_thread(_readonly_flag, path)

    async def _limit(self, path: Path, quota_bytes: int | None) -> None:
        # Named by qgroup id through the parent directory: through its own path, the
        # limit of a subvolume that is over it cannot be changed ("Disk quota exceeded").
        qgroup = bc.qgroupid_of(fsops.subvolume_id(path))
        await self._run(bc.qgroup_limit_args(self.binary, str(path.parent), quota_bytes, qgroupid=qgroup),
                        action="qgroup limit")

    async def _quota_of(self, path: Path) -> int | None:
        result = await self._run(bc.qgroup_show_args(self.binary, str(path)), action="qgroup show", capture=True)
        return bc.parse_qgroup_show(result.stdout).max_referenced

    async def _delete_subvolume_tree(self, path: Path) -> None:
        """Delete ``path`` (a subvolume or a plain directory) and every subvolume below it."""
        if not (path.exists() or path.is_symlink()):
            return
        if path.is_dir() and not path.is_symlink() and _is_subvolume_root(path):
            nested = await self._nested_subvolumes(path)
            if nested:
                # A subvolume's entry can only be removed from a writable parent.
                for subvolume in (path, *nested):
                    await self._set_readonly(subvolume, False)
            await self._run(bc.subvolume_delete_args(self.binary, [*map(str, nested), str(path)]),
                            action="subvolume delete")
            return
        if path.is_dir() and not path.is_symlink():
            for child in list(path.iterdir()):
                await self._delete_subvolume_tree(child)
            path.rmdir()
            return
        path.unlink()

    async def _nested_subvolumes(self, path: Path) -> list[Path]:
        """Subvolumes at any depth below the subvolume ``path``, deepest first (from btrfs's own list,
        not a walk of the tree)."""
        info = await self._show(path)
        listing = await self._run(bc.subvolume_list_below_args(self.binary, str(path)), action="subvolume list",
                                  capture=True)
        return [Path(p) for p in bc.nested_paths(str(path), info, bc.parse_subvolume_list(listing.stdout))]

    # ------------------------------------------------------------ life cycle

    async def create(self, project_id: str, *, quota_bytes: int | None) -> bool:
        created = False
        home = self.home(project_id)
        if not home.exists():
            await self._create_subvolume(home)
            created = True
            quota = quota_bytes or self.default_quota_bytes
            if quota:
                await self._limit(home, quota)
        elif quota_bytes:
            await self._limit(home, quota_bytes)
        if not self.persist(project_id).exists():
            await self._create_subvolume(self.persist(project_id))
            created = True
        return created

    async def delete(self, project_id: str) -> bool:
        """Remove both subvolumes; a frozen one is never made writable where a user can reach it
        (see :meth:`_delete_frozen`)."""
        existed = False
        for path in (self.home(project_id), self.persist(project_id)):
            if path.exists() or path.is_symlink():
                existed = True
                await self._unhide(path)
                if _is_subvolume_root(path) and not path.is_symlink() and await self._is_readonly(path):
                    await self._delete_frozen(path)
                else:
                    await self._delete_subvolume_tree(path)
        return existed

    async def _delete_frozen(self, path: Path) -> None:
        """Delete the read-only subvolume ``path`` without making it writable where anyone can
        write to it. btrfs deletes a read-only subvolume as it is; nested subvolumes need a
        writable parent to remove their entries, so then ``path`` is first hidden from every new
        lookup (an empty read-only directory bind-mounted over it), every process holding
        anything inside is stopped, the parent is made writable only through the agent's own
        descriptor of it for the nested deletions, and read-only again before it is shown and
        deleted."""
        nested = await self._nested_subvolumes(path)
        if nested:
            await self._delete_nested_hidden(path, nested)
        await self._run(bc.subvolume_delete_args(self.binary, [str(path)]), action="subvolume delete")

    async def _unhide(self, path: Path) -> None:
        """Undo what a deletion killed half-way left: the empty directory mounted over ``path``
        (see :meth:`_delete_nested_hidden`), and the subvolume read-only again before the rest of
        the deletion (it may have been killed while the subvolume was writable)."""
        if path.is_symlink() or not mounts.is_readonly_mount(os.path.realpath(path)):
            return
        mounts.unmount_all(os.path.realpath(path), readonly_only=True)
        log.warning("btrfs.delete_resumed", path=str(path))
        if _is_subvolume_root(path) and not await self._is_readonly(path):
            await self._set_readonly(path, True)

    async def _delete_nested_hidden(self, path: Path, nested: list[Path]) -> None:
        empty = self._views / ".empty"
        empty.mkdir(mode=0o500, exist_ok=True)
        devices = [p.stat().st_dev for p in (path, *nested)]
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            mounts.bind_readonly(str(path), source=str(empty))
            try:
                scope = writers.scope_for([path], devices=devices, any_open=True)
                await writers.stop_all(scope, DELETE_GRACE)
                # Through the agent's descriptor: the real tree, not the empty directory over its path.
                await asyncio.to_thread(_delete_nested_by_fd, fd, [n.relative_to(path) for n in nested])
            finally:
                mounts.unmount_all(str(path))
        finally:
            os.close(fd)

    # ------------------------------------------------------------ backup

    @contextlib.asynccontextmanager
    async def backup_view(self, project_id: str, operation_id: str) -> AsyncIterator[EngineView]:
        """Read-only snapshots of the home and persist location, bind-mounted as the view.

        The view root is the same for every backup (:mod:`agent.backends.views`) so the engine
        finds its parent snapshot by path, on any host. The snapshots are removed in every
        outcome; ``EngineView.generation`` is what they froze.
        """
        snapshot_dir = self._snapshots / operation_id
        snapshot_dir.mkdir(mode=0o700)
        try:
            root = self._backup_root(project_id)
            binds = []
            generation = {}
            for name, source in (("project", self.home(project_id)), ("persist", self.persist(project_id))):
                if not source.is_dir():
                    continue
                snapshot = snapshot_dir / name
                await self._run(bc.snapshot_args(self.binary, str(source), str(snapshot), readonly=True),
                                action="subvolume snapshot")
                generation[name] = (await asyncio.to_thread(read_subvolume, snapshot)).otransid
                binds.append((snapshot, root / name))
            frozen = Generation(project=generation.get("project", 0), persist=generation.get("persist", 0))
            yield EngineView(wrapper=bind_wrapper(binds), root=root, generation=frozen,
                             project=snapshot_dir / "project" if "project" in generation else None)
        finally:
            await housekeeping.run_to_end(self._delete_subvolume_tree(snapshot_dir), failure_event="cleanup.failed")

    async def generation(self, project_id: str) -> Generation | None:
        """Committed generations of both subvolumes, after a filesystem sync: writes still
        in the running transaction are not in a root item's generation until it commits."""
        home, persist = self.home(project_id), self.persist(project_id)
        if not home.is_dir():
            return None
        return await self._generation_of(home, persist)

    async def write_back(self, staging: Staging) -> None:
        """syncfs while the restore runs: the generations read at its end need every restored
        byte on disk, and writing back as it goes costs the restore far less than all at the
        end (200 MB: about 1.8 s in all instead of 2.3 s on the bench machine)."""
        await asyncio.to_thread(fsops.syncfs, staging.project)

    async def staged_generation(self, staging: Staging) -> Generation | None:
        """Read before the swap: exchanging a subvolume into place does not change its generation,
        and any write into the live project after the swap does."""
        return await self._generation_of(staging.project, staging.persist)

    async def _generation_of(self, home: Path, persist: Path) -> Generation:
        # syncfs(2) is what `btrfs filesystem sync` does; in-process it saves a process on the
        # path that decides, in milliseconds, that a backup is not needed.
        await asyncio.to_thread(fsops.syncfs, home)
        return await asyncio.to_thread(self._read_generations, home, persist)

    def _read_generations(self, home: Path, persist: Path) -> Generation:
        """Generation of the home and the persist location (0 when it has none), by ioctl."""
        return Generation(project=read_subvolume(home).generation,
                          persist=read_subvolume(persist).generation if persist.is_dir() else 0)

    async def generations(self, project_ids: Sequence[str]) -> dict[str, Generation | errors.BucketsError]:
        """Committed generations of many projects after ONE syncfs per filesystem (not one per
        project): every write acknowledged before the sync is in them. By ioctl, no process.
        Projects without a home are left out; one that cannot be read maps to its error."""
        return await asyncio.to_thread(self._generations, list(project_ids))

    def _generations(self, project_ids: list[str]) -> dict[str, Generation | errors.BucketsError]:
        synced: set[bytes] = set()
        for root in (self.projects_root, self.persist_root):
            _sync_once(root, synced)
        # Paths as strings: no Path object per project (10,000 a cycle).
        homes, persists = os.fspath(self.projects_root), os.fspath(self.persist_root)
        found: dict[str, Generation | errors.BucketsError] = {}
        for project_id in project_ids:
            name = project_dir_name(project_id)
            try:
                found[project_id] = _synced_generation(f"{homes}/{name}", f"{persists}/{name}", synced)
            except FileNotFoundError:
                continue  # deleted meanwhile
            except errors.BucketsError as exc:
                found[project_id] = exc
        return found

    async def changes(self, project_ids: Sequence[str]) -> dict[str, float]:
        return {}  # generations tell, without a scan

    async def last_modified(self, project_id: str) -> float | None:
        return None  # generations tell, without a scan

    async def size(self, project_id: str) -> int:
        """Referenced bytes of both subvolumes from their quota groups (a scan when quotas are off)."""
        total = 0
        for path in (self.home(project_id), self.persist(project_id)):
            if not path.is_dir():
                continue
            try:
                result = await self._run(bc.qgroup_show_args(self.binary, str(path)), action="qgroup show",
                                         capture=True)
                total += bc.parse_qgroup_show(result.stdout, subvolume_id=fsops.subvolume_id(path)).referenced
            except errors.FailedPrecondition:
                total += (await asyncio.to_thread(fsops.tree_size, path))[0]
        return total

    # ------------------------------------------------------------ restore

    async def prepare_staging(self, project_id: str, operation_id: str) -> Staging:
        """Fresh staging subvolumes (the home's with the home's quota) and the engine's view."""
        project_staging, persist_staging = self._staging_dirs(operation_id)
        project_dir, persist_dir = project_staging / "project", persist_staging / "persist"
        project_staging.mkdir(mode=0o700, parents=True, exist_ok=False)
        persist_staging.mkdir(mode=0o700, parents=True, exist_ok=False)
        await self._create_subvolume(project_dir)
        await self._create_subvolume(persist_dir)
        home = self.home(project_id)
        quota = await self._quota_of(home) if home.is_dir() else None
        quota = quota or self.default_quota_bytes
        if quota:
            await self._limit(project_dir, quota)
        return self._staging(operation_id, project_dir, persist_dir)

    def swap_plan(self, project_id: str, staging: Staging) -> list[dict]:
        return self.plan_swap([(staging.persist, self.persist(project_id)), (staging.project, self.home(project_id))])

    def plan_swap(self, pairs: list[tuple[Path, Path]]) -> list[dict]:
        return [{"staged": str(staged), "live": str(live), "subvolume": fsops.subvolume_id(staged)}
                for staged, live in pairs]

    def swap_in(self, plan: list[dict]) -> None:
        for step in plan:
            staged, live = Path(step["staged"]), Path(step["live"])
            try:
                if fsops.subvolume_id(staged) != step["subvolume"]:
                    continue  # this exchange already happened: the old tree is at the staged path
            except FileNotFoundError:
                continue  # renamed into place already (there was no old tree)
            fsops.put_in_place(staged, live)

    async def seal(self, path: Path) -> None:
        if _is_subvolume_root(path) and not await self._is_readonly(path):
            await self._set_readonly(path, True)

    async def unseal(self, path: Path) -> None:
        if _is_subvolume_root(path) and await self._is_readonly(path):
            await self._set_readonly(path, False)

    async def remove_kept(self, path: Path) -> None:
        await self._delete_subvolume_tree(path)

    async def discard_staging(self, operation_id: str) -> None:
        for directory in self._staging_dirs(operation_id):
            await self._delete_subvolume_tree(directory)
        view = self._views / f"restore-{operation_id}"
        if view.exists():
            await asyncio.to_thread(fsops.remove_tree, view)

    async def remove_stale(self, keep: frozenset[str] = frozenset()) -> list[Path]:
        removed = []
        for parent in (self.projects_root / ".staging", self.persist_root / ".staging", self._snapshots):
            if parent.is_dir():
                for entry in list(parent.iterdir()):
                    if entry.name not in keep:
                        await self._delete_subvolume_tree(entry)
                        removed.append(entry)
        for entry in list(self._views.iterdir()):
            if entry.name.startswith("restore-") and entry.name[len("restore-"):] not in keep:
                await asyncio.to_thread(fsops.remove_tree, entry)
                removed.append(entry)
        if removed:
            log.info("staging.removed_stale", paths=[str(p) for p in removed])
        return removed

    # ------------------------------------------------------------ freeze

    async def freeze(self, project_id: str) -> None:
        self._require(project_id)
        for path in (self.home(project_id), self.persist(project_id)):
            if path.is_dir() and not await self._is_readonly(path):
                await self._set_readonly(path, True)

    async def thaw(self, project_id: str) -> None:
        self._require(project_id)
        for path in (self.persist(project_id), self.home(project_id)):
            if path.is_dir() and await self._is_readonly(path):
                await self._set_readonly(path, False)

    async def is_frozen(self, project_id: str) -> bool:
        home = self.home(project_id)
        return home.is_dir() and not home.is_symlink() and await self._is_readonly(home)

    async def frozen_projects(self, project_ids: Sequence[str]) -> set[str]:
        """:meth:`is_frozen` of many projects, by ioctl in one worker thread."""
        def frozen() -> set[str]:
            found = set()
            for project_id in project_ids:
                home = self.home(project_id)
                try:
                    if home.is_dir() and not home.is_symlink() and _readonly_flag(home):
                        found.add(project_id)
                except FileNotFoundError:
                    continue  # deleted meanwhile
            return found
        return await asyncio.to_thread(frozen)

    def writer_scope(self, project_id: str) -> writers.Scope:
        """A file in the home or persist subvolume is inside whatever path a process sees it
        under (another mount namespace, a bind mount): the subvolumes' devices count too."""
        trees = [p for p in (self.home(project_id), self.persist(project_id)) if p.is_dir()]
        return writers.scope_for(trees, devices=[p.stat().st_dev for p in trees])


def mount_options(path: Path) -> set[str]:
    """The options of the mount that holds ``path`` (the longest mount point above it)."""
    target = os.path.realpath(path)
    best, options = "", set()
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 4:
                continue
            point = fields[1].encode().decode("unicode_escape")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, options = point, set(fields[3].split(","))
    return options


def _delete_nested_by_fd(fd: int, nested: list[Path]) -> None:
    """Delete the ``nested`` subvolumes (relative, deepest first) below the read-only subvolume
    ``fd`` is open on: writable only for these deletions, read-only again in every outcome."""
    btrfs_ioctl.set_readonly(fd, False)
    try:
        for relative in nested:
            parent = os.open(str(relative.parent), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd) \
                if relative.parent != Path(".") else os.dup(fd)
            try:
                btrfs_ioctl.delete_subvolume(parent, relative.name)
            except OSError as exc:
                raise errors.Internal(f"cannot delete nested subvolume {relative}: {exc.strerror}") from None
            finally:
                os.close(parent)
    finally:
        btrfs_ioctl.set_readonly(fd, True)


@dataclass(frozen=True)
class SubvolumeRead:
    """A subvolume's filesystem and counters, read by ioctl (:func:`read_subvolume`)."""

    fsid: bytes
    generation: int
    otransid: int


def read_subvolume(path: Path | str) -> SubvolumeRead:
    """The filesystem uuid, generation and creation transaction of the subvolume whose root is
    ``path``. Raises FileNotFoundError when missing, FailedPrecondition when ``path`` is no
    subvolume root (or a symlink), Internal when the ioctl fails."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise errors.FailedPrecondition(f"cannot open subvolume {path}: {exc.strerror}") from None
    try:
        if os.fstat(fd).st_ino != btrfs_ioctl.SUBVOLUME_ROOT_INODE:
            raise errors.FailedPrecondition(f"{path} is not a btrfs subvolume")
        info = btrfs_ioctl.subvol_info(fd)
        return SubvolumeRead(fsid=btrfs_ioctl.fsid(fd), generation=info.generation, otransid=info.otransid)
    except OSError as exc:
        raise errors.Internal(f"cannot read subvolume info of {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _synced_generation(home: str, persist: str, synced: set[bytes]) -> Generation:
    """The generations of ``home`` and ``persist`` (0 when it is missing), read after a syncfs of
    their filesystem: one in ``synced`` was synced already; another (a filesystem mounted below a
    root) is synced now and read again. Raises FileNotFoundError when ``home`` is missing."""
    while True:
        home_info = read_subvolume(home)
        try:
            persist_info = read_subvolume(persist)
        except FileNotFoundError:
            persist_info = None
        unsynced = [path for path, info in ((home, home_info), (persist, persist_info))
                    if info is not None and info.fsid not in synced]
        if not unsynced:
            return Generation(project=home_info.generation,
                              persist=persist_info.generation if persist_info is not None else 0)
        for path in unsynced:
            _sync_once(path, synced)


def _sync_once(path: Path | str, synced: set[bytes]) -> None:
    """syncfs the btrfs filesystem holding ``path`` unless its uuid is in ``synced`` (then added)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        filesystem = btrfs_ioctl.fsid(fd)
        if filesystem not in synced:
            fsops.syncfs_fd(fd)
            synced.add(filesystem)
    finally:
        os.close(fd)


def _readonly_flag(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        return btrfs_ioctl.is_readonly(fd)
    except OSError as exc:
        raise errors.Internal(f"cannot read the read-only flag of {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _is_subvolume_root(path: Path) -> bool:
    # A btrfs subvolume's root directory always has inode number 256.
    try:
        return path.lstat().st_ino == 256
    except FileNotFoundError:
        return False
