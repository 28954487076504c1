"""The restic driver: runs restic through the executor and turns its output into domain values.

Argument lists and parsing live in :mod:`agent.engine.restic_args` (pure);
this module only wires them to processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path
from typing import Callable, Sequence

import structlog

from agent import buckets, errors, s3_access, snapshot_roots
from agent.backends.base import EngineView
from agent.engine import restic_args as ra
from agent.engine.base import (
    RESTORE_OVER, RESTORE_PROGRESS, SNAPSHOT_DIFF, BackupOutcome, BackupStatus, DiffEntry, RestoreSize,
    RestoreStatus, RestoreSummary, Snapshot, TreeNode,
)
from agent.executor import DISPLAY_ONLY_NICENESS, ProcessResult, run_engine, run_process
from agent.repository import Repository

log = structlog.get_logger("agent.engine.restic")

# restic's exit code for "snapshot saved, but some files could not be read".
EXIT_INCOMPLETE = 3
# Seconds a `restic unlock` may take: it lists and reads the lock files only, so longer means
# the repository is unreachable, and nothing could be unlocked anyway.
UNLOCK_TIMEOUT = 60.0


# Symlinks whose targets one ``restic find`` looks up (its argv stays far below ARG_MAX).
FIND_BATCH = 256


def item_warning(error: ra.BackupItemError) -> str:
    """A backup's warning about one file: the file (restic names it by its path in the view root
    it ran in, this host's directory) and restic's words, both with the path in the API form."""
    return f"{snapshot_roots.shown_path(error.item)}: {snapshot_roots.shown_in(error.message, error.item)}"


class ResticEngine:
    """Takes the restic binary, the agent's state dir (cache, HOME) and process limits."""

    name = "restic"

    def __init__(
        self,
        *,
        binary: str,
        state_dir: Path,
        timeout: float,
        kill_grace: float,
        upload_limit_kib: int = 0,
        download_limit_kib: int = 0,
        stall_timeout: float = 0.0,
        on_failure: Callable[[errors.BucketsError], None] | None = None,
    ) -> None:
        self.binary = binary
        self._on_failure = on_failure
        self._extra: tuple[str, ...] = ()
        if upload_limit_kib:
            self._extra += ("--limit-upload", str(upload_limit_kib))
        if download_limit_kib:
            self._extra += ("--limit-download", str(download_limit_kib))
        self._cache_dir = state_dir / "cache"
        self._home = state_dir
        self._tmp = state_dir / "tmp"
        self._timeout = timeout
        self._kill_grace = kill_grace
        self._stall_timeout = stall_timeout or None
        self._version: tuple[int, int, int] | None = None

    # ------------------------------------------------------------ plumbing

    def _common(self, repo: Repository) -> ra.CommonOptions:
        return ra.CommonOptions(
            repository=repo.location, cache_dir=str(self._cache_dir), password_file=None, extra=self._extra
        )

    def _env(self, repo: Repository) -> dict[str, str]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self._home),
            "TMPDIR": str(self._tmp),
            "LANG": "C.UTF-8",
            # A few status lines a second are plenty; the default is 60 when not on a terminal.
            "RESTIC_PROGRESS_FPS": "2",
            "RESTIC_PASSWORD": repo.password,
        }
        env.update(repo.env)
        return env

    async def _run(
        self,
        repo: Repository,
        argv: Sequence[str],
        *,
        action: str,
        cwd: Path | None = None,
        on_stdout_line: Callable[[str], None] | None = None,
        capture_stdout: bool = False,
        ok_codes: tuple[int, ...] = (0,),
        niceness: int = 0,
        timeout: float | None = None,
    ) -> ProcessResult:
        """Run restic; a locking command that failed in a way that may have left its lock (see
        :func:`ra.may_leave_lock`) is followed by ``restic unlock`` before the error is raised."""
        await s3_access.require(repo)
        try:
            return await run_engine(
                argv, classify=ra.classify_failure, action=action, on_failure=self._on_failure, ok_codes=ok_codes,
                niceness=niceness,
                env=self._env(repo),
                cwd=cwd,
                timeout=timeout or self._timeout,
                on_stdout_line=on_stdout_line,
                capture_stdout=capture_stdout,
                secrets=repo.secrets,
                kill_grace=self._kill_grace,
                stall_timeout=self._stall_timeout,
                # restic 0.14 removes its repository lock on SIGINT but not on SIGTERM.
                stop_signal=signal.SIGINT,
            )
        except BaseException as exc:
            if ra.may_leave_lock(action, exc):
                await self._unlock_after(repo, action, exc)
            raise

    async def _unlock_after(self, repo: Repository, action: str, error: BaseException) -> None:
        """``restic unlock`` after a run of ``action`` that ended with ``error`` (stopped after
        the grace, killed, crashed), so its lock does not outlive it. A failed unlock is logged,
        never raised: ``error`` is what the caller must see. Another cancellation while it runs
        lets it finish in the background (a shutdown stops it with every other child)."""
        async def unlock() -> None:
            try:
                await self.unlock(repo)
                log.info("engine.unlocked_after_failure", action=action, repository=repo.display,
                         error=type(error).__name__)
            except errors.BucketsError as exc:
                log.warning("engine.unlock_failed", action=action, repository=repo.display, error=str(exc))

        task = asyncio.get_running_loop().create_task(unlock())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not isinstance(error, asyncio.CancelledError):
                raise

    # ------------------------------------------------------------ commands

    async def _probe(self) -> tuple[int, int, int]:
        if self._version is None:
            result = await run_process(ra.version_args(self.binary), env={"PATH": os.environ.get("PATH", "")},
                                       capture_stdout=True, timeout=30)
            version = ra.parse_version(result.stdout)
            ra.features(version)  # refuses versions that are too old
            self._version = version
        return self._version

    async def version(self) -> str:
        """Return the engine version as "x.y.z"; raises Unimplemented when restic is missing or too old."""
        return ".".join(map(str, await self._probe()))

    async def features(self) -> frozenset[str]:
        return ra.features(await self._probe())

    def limitations(self) -> tuple[str, ...]:
        return ()

    def remove_stale(self) -> list[str]:
        # restic reads its password from the environment: it leaves no secret files behind.
        return []

    async def init(self, repo: Repository) -> None:
        await self._run(repo, ra.init_args(self.binary, self._common(repo)), action="init")
        log.info("repository.initialised", repository=repo.display)

    async def keep_key(self, repo: Repository) -> None:
        """Nothing: restic derives the key from the password in every run."""

    async def backup(
        self,
        repo: Repository,
        view: EngineView,
        *,
        host: str,
        tags: Sequence[str],
        on_status: Callable[[BackupStatus], None],
        subpath: str = "",
        init_missing: bool = True,
    ) -> BackupOutcome:
        """Back up ``view.root``'s ``project`` and ``persist`` (or ``project/<subpath>`` only);
        initialise the repository on first use.

        Returns the summary and per-file warnings; raises a BucketsError.
        """
        summary: list[ra.BackupSummary] = []
        item_errors: list[str] = []

        def on_line(line: str) -> None:
            parsed = ra.parse_backup_line(line)
            if isinstance(parsed, ra.BackupStatus):
                on_status(parsed)
            elif isinstance(parsed, ra.BackupSummary):
                summary.append(parsed)
            elif isinstance(parsed, ra.BackupItemError):
                item_errors.append(item_warning(parsed))

        if init_missing and repo.kind == "local" and not os.path.lexists(repo.location):
            # Surely no repository yet: initialised first, not after a backup run that would
            # only find it missing (a process start and a repository open less).
            await self.init(repo)
            init_missing = False
        argv = [
            *view.wrapper,
            *ra.backup_args(self.binary, self._common(repo), paths=ra.backup_paths(subpath), host=host, tags=tags),
        ]
        try:
            result = await self._run(
                repo, argv, action="backup", cwd=view.root, on_stdout_line=on_line,
                ok_codes=(0, EXIT_INCOMPLETE),
            )
        except errors.NotFound:
            if not init_missing:
                raise
            await self.init(repo)
            return await self.backup(repo, view, host=host, tags=tags, on_status=on_status, subpath=subpath,
                                     init_missing=False)
        if not summary:
            raise errors.Internal("restic backup ended without a summary", detail=result.stderr_tail)
        warnings = list(item_errors)
        if result.returncode == EXIT_INCOMPLETE:
            warnings.append("some files could not be read; the snapshot is incomplete")
        return BackupOutcome(summary=await self._with_full_id(repo, summary[-1]), warnings=tuple(warnings))

    async def _with_full_id(self, repo: Repository, summary: ra.BackupSummary) -> ra.BackupSummary:
        """``summary`` naming its snapshot by the full id: restic < 0.17 prints the short one, which
        a later snapshot could share; raises Internal when the repository does not list it."""
        if not summary.snapshot_id or len(summary.snapshot_id) == 64:
            return summary
        found = _local_snapshot_ids(repo, summary.snapshot_id)
        if found is None:
            found = await _s3_snapshot_ids(repo, summary.snapshot_id)
        if found is None:
            found = [s.id for s in await self.snapshots(repo, ids=[summary.snapshot_id])]
        if len(found) != 1 or not found[0].startswith(summary.snapshot_id):
            raise errors.Internal(f"restic backup reported snapshot {summary.snapshot_id}, which the repository "
                                  f"does not list once")
        return dataclasses.replace(summary, snapshot_id=found[0])

    async def snapshots(
        self, repo: Repository, *, host: str | None = None, ids: Sequence[str] = ()
    ) -> list[Snapshot]:
        """Return snapshots (oldest first, as restic lists them); raises NotFound for a missing repository."""
        result = await self._run(
            repo, ra.snapshots_args(self.binary, self._common(repo), host=host, ids=ids),
            action="snapshots", capture_stdout=True,
        )
        return ra.parse_snapshots(result.stdout)

    async def restore_size(self, repo: Repository, snapshot_id: str) -> RestoreSize:
        result = await self._run(
            repo, ra.stats_restore_size_args(self.binary, self._common(repo), snapshot_id),
            action="stats", capture_stdout=True, niceness=DISPLAY_ONLY_NICENESS,
        )
        return ra.parse_restore_size(result.stdout)

    async def restore(
        self, repo: Repository, snapshot_id: str, view: EngineView,
        *, on_status: Callable[[RestoreStatus], None] | None = None,
    ) -> None:
        """Restore the whole snapshot into ``view.root`` (its project/ and persist/ roots). From
        restic 0.17 with ``--json``: ``on_status`` gets its status lines, and the run counts only
        with its summary line. Raises a BucketsError."""
        if RESTORE_PROGRESS in await self.features():
            await self._restore_json(repo, snapshot_id, view, on_status=on_status)
            return
        argv = [
            *view.wrapper,
            *ra.restore_args(self.binary, self._common(repo), snapshot_id=snapshot_id, target=str(view.root)),
        ]
        await self._run(repo, argv, action="restore")

    async def restore_over(
        self, repo: Repository, snapshot_id: str, view: EngineView,
        *, on_status: Callable[[RestoreStatus], None] | None = None,
    ) -> RestoreSummary:
        """Make ``view.root`` equal to the snapshot with ``restore --overwrite if-changed --delete``
        (restic >= 0.17): files whose size and mtime match are kept, the rest is read; what the
        snapshot lacks is deleted. Returns restic's summary; raises Unimplemented before 0.17."""
        if RESTORE_OVER not in await self.features():
            raise errors.Unimplemented(
                f"restic {await self.version()} cannot restore over an existing tree (restore "
                "--overwrite/--delete need restic >= 0.17); restore into an empty tree instead")
        return await self._restore_json(repo, snapshot_id, view, on_status=on_status,
                                        overwrite="if-changed", delete=True)

    async def _restore_json(
        self, repo: Repository, snapshot_id: str, view: EngineView, *,
        on_status: Callable[[RestoreStatus], None] | None, overwrite: str | None = None, delete: bool = False,
        include: Sequence[str] = (),
    ) -> RestoreSummary:
        """``restic restore --json`` of the snapshot (or what ``include`` matches) into ``view.root``:
        its summary line, or Internal when it ended without one (a run that did not finish)."""
        summaries: list[RestoreSummary] = []

        def on_line(line: str) -> None:
            parsed = ra.parse_restore_line(line)
            if isinstance(parsed, RestoreStatus):
                if on_status is not None:
                    on_status(parsed)
            elif isinstance(parsed, RestoreSummary):
                summaries.append(parsed)

        argv = [*view.wrapper, *ra.restore_args(
            self.binary, self._common(repo), snapshot_id=snapshot_id, target=str(view.root), json_output=True,
            overwrite=overwrite, delete=delete, include=include,
        )]
        result = await self._run(repo, argv, action="restore", on_stdout_line=on_line)
        if not summaries:
            raise errors.Internal("restic restore ended without a summary", detail=result.stderr_tail)
        return summaries[-1]

    async def ls(self, repo: Repository, snapshot_id: str, path: str, *, recursive: bool) -> list[TreeNode]:
        """Nodes at and below ``path`` (absolute in the snapshot); NotFound when nothing is there."""
        result = await self._run(
            repo, ra.ls_args(self.binary, self._common(repo), snapshot_id, path, recursive=recursive),
            action="ls", capture_stdout=True,
        )
        return await self._with_link_targets(repo, snapshot_id, ra.parse_ls(result.stdout))

    async def listing(self, repo: Repository, snapshot_id: str, *, tree: str = "") -> list[TreeNode]:
        """Every node of the snapshot from one ``ls --json --recursive`` (no symlink targets:
        finding them costs a ``find`` per :data:`FIND_BATCH` symlinks); ``tree`` is of no use to
        restic's own listing."""
        result = await self._run(
            repo, ra.ls_args(self.binary, self._common(repo), snapshot_id, recursive=True),
            action="ls", capture_stdout=True,
        )
        return ra.parse_ls(result.stdout)

    async def diff(self, repo: Repository, base_snapshot_id: str, snapshot_id: str, *, tree: str = "") -> list[DiffEntry]:
        """``restic diff --json --metadata BASE ID``, judged by its closing statistics line
        (:func:`ra.parse_diff`; ``tree`` unused). Raises a BucketsError."""
        result = await self._run(
            repo, ra.diff_args(self.binary, self._common(repo), base_snapshot_id, snapshot_id),
            action="diff", capture_stdout=True,
        )
        return ra.parse_diff(result.stdout)

    async def restore_paths(
        self, repo: Repository, snapshot_id: str, paths: Sequence[str], view: EngineView,
    ) -> None:
        """``restic restore --include P…`` of the snapshot's exact ``paths`` into ``view.root``,
        one run per :func:`ra.include_batches` batch; from restic 0.17 each run is judged by its
        ``--json`` summary. restic restores each included entry with its metadata and leaves the
        directories it only passes through as they are. Raises a BucketsError."""
        if SNAPSHOT_DIFF not in await self.features():
            raise errors.Unimplemented(f"restic {await self.version()} cannot restore a list of paths")
        json_restore = RESTORE_PROGRESS in await self.features()
        for batch in ra.include_batches(list(paths)):
            if json_restore:
                await self._restore_json(repo, snapshot_id, view, on_status=None, include=batch)
                continue
            argv = [*view.wrapper, *ra.restore_args(self.binary, self._common(repo), snapshot_id=snapshot_id,
                                                    target=str(view.root), include=batch)]
            await self._run(repo, argv, action="restore")

    async def _with_link_targets(self, repo: Repository, snapshot_id: str, nodes: list[TreeNode]) -> list[TreeNode]:
        """``nodes`` with their symlinks' targets: restic's ``ls --json`` has none, ``find --json``
        has them (one ``find`` per :data:`FIND_BATCH` symlinks), so a listing says what rustic's does."""
        links = [n.path for n in nodes if n.type == "symlink" and not n.link_target]
        if not links:
            return nodes
        targets: dict[str, str] = {}
        for start in range(0, len(links), FIND_BATCH):
            batch = links[start:start + FIND_BATCH]
            wanted = set(batch)
            targets.update((n.path, n.link_target) for n in await self.find(repo, snapshot_id, batch)
                           if n.path in wanted)
        return [dataclasses.replace(n, link_target=targets.get(n.path, "")) if n.path in targets else n
                for n in nodes]

    async def find(self, repo: Repository, snapshot_id: str, paths: Sequence[str], *, tree: str = "") -> list[TreeNode]:
        """The nodes at ``paths`` with their symlink targets (which ``ls`` does not give; ``tree`` unused)."""
        result = await self._run(
            repo, ra.find_args(self.binary, self._common(repo), snapshot_id, paths), action="find",
            capture_stdout=True,
        )
        return ra.parse_find(result.stdout)

    async def dump(self, repo: Repository, snapshot_id: str, path: str, *, limit: int) -> bytes:
        """Up to ``limit`` bytes of the regular file at ``path``; the engine is stopped once it has sent them."""
        await s3_access.require(repo)
        result = await run_engine(
            ra.dump_args(self.binary, self._common(repo), snapshot_id, path),
            classify=ra.classify_failure, action="dump", on_failure=self._on_failure,
            env=self._env(repo), timeout=self._timeout, capture_stdout=True, raw_stdout=True,
            stdout_enough=limit, secrets=repo.secrets, kill_grace=self._kill_grace, stop_signal=signal.SIGINT,
        )
        return result.stdout_raw

    async def forget_plan(
        self, repo: Repository, *, host: str, policy: ra.KeepPolicy
    ) -> tuple[list[Snapshot], list[Snapshot]]:
        """(keep, remove) under ``policy`` for the snapshots of ``host``; nothing is removed."""
        result = await self._run(
            repo, ra.forget_plan_args(self.binary, self._common(repo), host=host, policy=policy),
            action="forget", capture_stdout=True,
        )
        return ra.parse_forget_plan(result.stdout)

    async def forget(self, repo: Repository, snapshot_ids: Sequence[str]) -> None:
        await self._run_exclusive(repo, ra.forget_args(self.binary, self._common(repo), snapshot_ids),
                                  action="forget")

    async def prune(self, repo: Repository) -> None:
        await self._run_exclusive(repo, ra.prune_args(self.binary, self._common(repo)), action="prune")

    async def _run_exclusive(self, repo: Repository, argv: list[str], *, action: str) -> ProcessResult:
        """A command that takes the repository's exclusive lock (forget, prune). A restic killed
        with its agent leaves its lock behind, and restic 0.14 refuses an exclusive lock beside
        it however stale; so when a lock is in the way, ``restic unlock`` removes the stale ones
        (never a live process's) and the command is tried once more."""
        try:
            return await self._run(repo, argv, action=action)
        except errors.Unavailable as exc:
            if "locked" not in str(exc):
                raise
        log.info("engine.stale_lock", action=action, repository=repo.display)
        await self.unlock(repo)
        return await self._run(repo, argv, action=action)

    async def restore_path(self, repo: Repository, snapshot_id: str, path: str, view: EngineView) -> None:
        """Restore the snapshot's ``path`` (absolute in the snapshot) and its parents under ``view.root``,
        run inside ``view``; from restic 0.17 judged by its ``--json`` summary."""
        if RESTORE_PROGRESS in await self.features():
            await self._restore_json(repo, snapshot_id, view, on_status=None, include=[ra.find_pattern(path)])
            return
        argv = [*view.wrapper, *ra.restore_args(self.binary, self._common(repo), snapshot_id=snapshot_id,
                                                target=str(view.root), include=[ra.find_pattern(path)])]
        await self._run(repo, argv, action="restore")

    async def unlock(self, repo: Repository) -> bool:
        """Remove the repository's stale locks (``restic unlock``: locks of restic processes that
        died on this host, or older than 30 minutes; never a live process's); True, as restic
        keeps locks. Waits at most :data:`UNLOCK_TIMEOUT` seconds; raises a BucketsError."""
        await self._run(repo, ra.unlock_args(self.binary, self._common(repo)), action="unlock",
                        timeout=min(self._timeout, UNLOCK_TIMEOUT) if self._timeout else UNLOCK_TIMEOUT)
        return True

    async def check(self, repo: Repository, *, read_data_subset: str | None = None) -> None:
        """Check the repository; raises DataLoss naming what restic found."""
        await self.unlock(repo)
        argv = ra.check_args(self.binary, self._common(repo), read_data_subset=read_data_subset)
        try:
            await self._run(repo, argv, action="check", capture_stdout=True)
        except errors.DataLoss as exc:
            raise await self._name_damaged_snapshots(repo, exc) from None

    async def _name_damaged_snapshots(self, repo: Repository, error: errors.DataLoss) -> errors.DataLoss:
        """``error`` with the damaged packs and the snapshots that use them (``restic find --pack``)
        in its message, so an operator knows which backups are hurt; ``error`` itself when the
        check named no pack or the lookup fails."""
        packs = ra.damaged_packs(ra.parse_check_output("", error.detail))
        if not packs:
            return error
        try:
            # Without the cache: it may hold an undamaged copy of a tree that the repository lost.
            common = dataclasses.replace(self._common(repo), cache_dir=None)
            result = await self._run(repo, ra.find_packs_args(self.binary, common, packs[:20]),
                                     action="find", capture_stdout=True)
        except errors.BucketsError as exc:
            log.warning("check.find_packs_failed", repository=repo.display, error=str(exc))
            return error
        snapshots = ra.parse_pack_snapshots(result.stdout)
        named = ", ".join(s[:8] for s in snapshots) or "none found"
        return errors.DataLoss(
            f"{error.message}: damaged pack(s) {', '.join(p[:8] for p in packs)}; affected snapshot(s): {named}",
            detail=error.detail,
        )


async def _s3_snapshot_ids(repo: Repository, prefix: str) -> list[str] | None:
    """The full ids of an S3 repository's snapshots starting with ``prefix``, from one LIST of
    its ``snapshots/`` objects (as :func:`_local_snapshot_ids` for a local one). None when the
    repository is not on S3, the listing fails, or it does not show exactly one (a store whose
    listing lags behind its writes): the caller then asks restic."""
    if repo.s3 is None:
        return None
    try:
        names = await asyncio.to_thread(buckets.names_under, repo.s3, "snapshots", prefix)
    except errors.BucketsError:
        return None
    found = ra.snapshot_ids_with_prefix(names, prefix)
    return found if len(found) == 1 else None


def _local_snapshot_ids(repo: Repository, prefix: str) -> list[str] | None:
    """The full ids of a local repository's snapshots starting with ``prefix``, from the names of
    its ``snapshots/`` files (restic's repository layout): no restic run, whose key derivation
    alone costs about half a second of CPU after every backup. None when the repository is not
    local or its directory cannot be listed (the caller then asks restic)."""
    if repo.kind != "local":
        return None
    try:
        names = os.listdir(os.path.join(repo.location, "snapshots"))
    except OSError:
        return None
    return ra.snapshot_ids_with_prefix(names, prefix)
