"""The rustic driver: runs rustic through the executor with a profile file per run.

rustic reads the repository, its password and the S3 keys from a TOML profile
(:func:`agent.engine.rustic_args.render_profile`). Each run writes one with
mode 0600 in a 0700 directory of the agent's state dir and removes it when the
run ends, whatever the outcome; profiles a killed agent left behind are removed
at the next start (:meth:`RusticEngine.remove_stale`). Secrets therefore never
reach argv or the environment.

Argument lists and parsing live in :mod:`agent.engine.rustic_args` (pure).
"""

from __future__ import annotations

import contextlib
import os
import secrets as token
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog

from agent import errors
from agent.backends.base import EngineView
from agent.engine import rustic_args as rua
from agent.engine.base import (
    RESTORE_OVER, BackupOutcome, BackupStatus, RestoreSize, RestoreStatus, RestoreSummary, Snapshot,
)
from agent.executor import DISPLAY_ONLY_NICENESS, ProcessResult, run_engine, run_process
from agent.repository import Repository

log = structlog.get_logger("agent.engine.rustic")

DEFAULT_REGION = "us-east-1"


class RusticEngine:
    """Takes the rustic binary, the agent's state dir (cache, profiles, HOME) and process limits."""

    name = "rustic"

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
        self._cache_dir = state_dir / "cache"
        self._profiles = state_dir / "profiles"
        self._home = state_dir
        self._tmp = state_dir / "tmp"
        self._timeout = timeout
        self._kill_grace = kill_grace
        self._stall_timeout = stall_timeout or None
        self._limits_configured = bool(upload_limit_kib or download_limit_kib)
        self._version: tuple[int, int, int] | None = None

    # ------------------------------------------------------------ plumbing

    async def _probe(self) -> tuple[int, int, int]:
        if self._version is None:
            result = await run_process(rua.version_args(self.binary), env=self._env(),
                                       capture_stdout=True, timeout=30)
            version = rua.parse_version(result.stdout)
            rua.features(version)  # refuses versions that are too old
            self._version = version
        return self._version

    async def _features(self) -> frozenset[str]:
        return rua.features(await self._probe())

    def _env(self) -> dict[str, str]:
        # Nothing inherited: rustic reads RUSTIC_* variables, which must not override the profile.
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self._home),
            "TMPDIR": str(self._tmp),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
        }

    def _profile_for(self, repo: Repository) -> rua.Profile:
        if repo.s3 is None:
            location: rua.LocalRepository | rua.S3Repository = rua.LocalRepository(path=repo.location)
        else:
            s3 = repo.s3
            if not s3.access_key_id or not s3.secret_access_key:
                raise errors.FailedPrecondition(
                    "the rustic engine needs S3 keys in the request or the agent config; "
                    "it does not read ambient credentials"
                )
            location = rua.S3Repository(
                bucket=s3.bucket,
                root=s3.root,
                endpoint=s3.endpoint.rstrip("/") or "https://s3.amazonaws.com",
                region=s3.region or DEFAULT_REGION,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key,
            )
        return rua.Profile(repository=location, password=repo.password, cache_dir=str(self._cache_dir))

    @contextlib.contextmanager
    def _profile_file(self, repo: Repository) -> Iterator[str]:
        """A fresh 0600 profile for ``repo``, removed when the block ends."""
        text = rua.render_profile(self._profile_for(repo))
        self._profiles.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._profiles, 0o700)
        path = self._profiles / f"{token.token_hex(8)}.toml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            yield str(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _run(
        self,
        repo: Repository,
        build: Callable[[str], list[str]],
        *,
        action: str,
        view: EngineView | None = None,
        on_stdout_line: Callable[[str], None] | None = None,
        capture_stdout: bool = False,
        niceness: int = 0,
    ) -> ProcessResult:
        """Run the argv ``build(profile_path)`` makes, inside ``view`` when given."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        with self._profile_file(repo) as profile:
            argv = build(profile)
            if view is not None:
                argv = [*view.wrapper, *argv]
            result = await run_engine(
                argv, classify=rua.classify_failure, action=action, on_failure=self._on_failure,
                env=self._env(),
                cwd=view.root if view is not None else None,
                timeout=self._timeout,
                on_stdout_line=on_stdout_line,
                capture_stdout=capture_stdout,
                secrets=repo.secrets,
                kill_grace=self._kill_grace,
                stall_timeout=self._stall_timeout,
                niceness=niceness,
            )
        stopped = rua.interrupted_error(result.returncode, result.stderr_unmasked or result.stderr_tail,
                                        action=action)
        if stopped is not None:
            stopped.detail = result.stderr_tail.strip()
            if self._on_failure is not None:
                self._on_failure(stopped)
            raise stopped
        return result

    # ------------------------------------------------------------ interface

    async def version(self) -> str:
        """Return the engine version as "x.y.z"; raises Unimplemented when rustic is missing or too old."""
        return ".".join(map(str, await self._probe()))

    async def features(self) -> frozenset[str]:
        return await self._features()

    def limitations(self) -> tuple[str, ...]:
        if self._limits_configured:
            return ("the rustic engine does not apply the configured upload/download bandwidth limits",)
        return ()

    def remove_stale(self) -> list[str]:
        """Remove profile files (they hold secrets) left by an agent that died mid-run."""
        removed = []
        if self._profiles.is_dir():
            for path in self._profiles.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path))
        return removed

    async def unlock(self, repo: Repository) -> bool:
        """Nothing to do: rustic is lock-free (two-phase prune instead of locks), writes no lock
        files and has no ``unlock`` command. Returns False."""
        return False

    async def init(self, repo: Repository) -> None:
        await self._run(repo, lambda p: rua.init_args(self.binary, p), action="init")
        log.info("repository.initialised", repository=repo.display)

    async def backup(
        self,
        repo: Repository,
        view: EngineView,
        *,
        host: str,
        tags: Sequence[str],
        on_status: Callable[[BackupStatus], None],
        subpath: str = "",
    ) -> BackupOutcome:
        feats = await self._features()
        source, as_path = rua.backup_source(subpath)
        json_progress = "json-progress" in feats

        def on_line(line: str) -> None:
            status = rua.parse_progress_line(line)
            if status is not None:
                on_status(status)

        result = await self._run(
            repo,
            lambda p: rua.backup_args(
                self.binary, p, features=feats, paths=[source], host=host, tags=tags,
                as_path=as_path, json_progress=json_progress,
                # Without progress output the pre-scan only costs time.
                no_scan=not json_progress and "no-scan" in feats,
                init=True,
            ),
            action="backup",
            view=view,
            on_stdout_line=on_line if json_progress else None,
            capture_stdout=True,
        )
        return BackupOutcome(summary=rua.parse_backup_output(result.stdout), warnings=())

    async def snapshots(self, repo: Repository, *, host: str | None = None, ids: Sequence[str] = ()) -> list[Snapshot]:
        result = await self._run(
            repo, lambda p: rua.snapshots_args(self.binary, p, host=host, ids=ids),
            action="snapshots", capture_stdout=True,
        )
        return rua.parse_snapshots(result.stdout)

    async def restore_size(self, repo: Repository, snapshot_id: str) -> RestoreSize:
        result = await self._run(
            repo, lambda p: rua.snapshots_args(self.binary, p, ids=[snapshot_id]),
            action="snapshots", capture_stdout=True, niceness=DISPLAY_ONLY_NICENESS,
        )
        return rua.parse_snapshot_totals(result.stdout)

    async def restore(self, repo: Repository, snapshot_id: str, view: EngineView) -> None:
        result = await self._run(
            repo, lambda p: rua.restore_args(self.binary, p, snapshot_id=snapshot_id, target=str(view.root)),
            action="restore", view=view, capture_stdout=True,
        )
        rua.check_restore_output(result.stdout)

    async def restore_over(
        self, repo: Repository, snapshot_id: str, view: EngineView,
        *, on_status: Callable[[RestoreStatus], None] | None = None,
    ) -> RestoreSummary:
        """Make ``view.root`` equal to the snapshot with ``rustic restore --delete``: rustic keeps
        files whose size and mtime match, compares the rest chunk by chunk and reads only what
        differs. ``on_status`` gets nothing (rustic prints no restore progress). Judged by
        "restore done."; returns the counts of its "Files:" line. Raises a BucketsError."""
        if RESTORE_OVER not in await self._features():
            raise errors.Unimplemented(f"rustic {await self.version()} is not known to restore over an "
                                       "existing tree (checked from 0.11.4)")
        result = await self._run(
            repo, lambda p: rua.restore_args(self.binary, p, snapshot_id=snapshot_id, target=str(view.root),
                                             delete=True),
            action="restore", view=view, capture_stdout=True,
        )
        rua.check_restore_output(result.stdout)
        return rua.parse_restore_files(result.stdout)

    # Browsing needs node details (type, size, mode, link targets) that the rustic driver
    # does not parse yet; it says so instead of guessing.
    async def ls(self, repo: Repository, snapshot_id: str, path: str, *, recursive: bool) -> list:
        raise errors.Unimplemented("browsing backups is not built for the rustic engine yet")

    async def find(self, repo: Repository, snapshot_id: str, paths: Sequence[str]) -> list:
        raise errors.Unimplemented("browsing backups is not built for the rustic engine yet")

    async def dump(self, repo: Repository, snapshot_id: str, path: str, *, limit: int) -> bytes:
        raise errors.Unimplemented("reading files from backups is not built for the rustic engine yet")

    async def forget_plan(self, repo: Repository, *, host: str, policy) -> tuple[list, list]:
        raise errors.Unimplemented("keep policies are not built for the rustic engine yet")

    async def forget(self, repo: Repository, snapshot_ids: Sequence[str]) -> None:
        await self._run(repo, lambda p: rua.forget_args(self.binary, p, snapshot_ids), action="forget")

    async def prune(self, repo: Repository) -> None:
        await self._run(repo, lambda p: rua.prune_args(self.binary, p), action="prune")

    async def restore_path(self, repo: Repository, snapshot_id: str, path: str, view: EngineView) -> None:
        # rustic restores ID:PATH's contents into the target, without the target's own mode and
        # mtime; restoring PATH's parent with a glob for PATH's name brings the entry itself, as
        # restic's --include does, to view.root/<path> (the caller made the parents).
        parent, _, name = path.rstrip("/").rpartition("/")
        parent = parent or "/"
        destination = view.root / parent.lstrip("/")
        result = await self._run(
            repo, lambda p: rua.restore_args(self.binary, p, snapshot_id=snapshot_id, target=str(destination),
                                             path=parent, only=name),
            action="restore", view=view, capture_stdout=True,
        )
        rua.check_restore_output(result.stdout)

    async def check(self, repo: Repository, *, read_data_subset: str | None = None) -> None:
        feats = await self._features()
        result = await self._run(
            repo, lambda p: rua.check_args(self.binary, p, features=feats, read_data_subset=read_data_subset),
            action="check",
        )
        # rustic < 0.10.1 logs damage and still exits 0.
        damage = rua.parse_check_output(result.stderr_tail)
        if damage:
            raise errors.DataLoss(f"rustic check found {len(damage)} problem(s): {damage[0]}",
                                  detail="\n".join(damage[:50]))
