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

import asyncio
import contextlib
import functools
import hashlib
import os
import secrets as token
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog

from agent import buckets, errors, s3_access
from agent.backends.base import EngineView
from agent.engine import repository_format as formats
from agent.engine import rustic_args as rua
from agent.engine.base import (
    RESTORE_OVER, SNAPSHOT_DIFF, BackupOutcome, BackupStatus, DiffEntry, RestoreSize, RestoreStatus,
    RestoreSummary, Snapshot, TreeNode,
)
from agent.engine.restic_args import KeepPolicy
from agent.concurrently import first_error
from agent.executor import DISPLAY_ONLY_NICENESS, ProcessResult, run_engine, run_process
from agent.repository import Repository

log = structlog.get_logger("agent.engine.rustic")

DEFAULT_REGION = "us-east-1"
# rustic runs reading tree blobs at once during one listing (each opens the repository anew).
LISTING_CONCURRENCY = 4
# Tree blobs are named by the hash of their content, so a blob read once is that blob for good:
# the driver keeps the newest ones it read (per repository location), up to this many bytes of
# their JSON, and master keys (per location and password) for as many repositories.
TREE_CACHE_BYTES = 64 * 1024 * 1024
MASTER_KEYS_KEPT = 256
# Repositories whose tree-blob index (and up to READER_PACK_BYTES of tree packs, for buckets)
# the driver keeps between listings: few, as listings come in bursts (a move's pre-copy check,
# its verify) and each reader's memory grows with its repository.
REPOSITORY_READERS_KEPT = 8
READER_PACK_BYTES = 8 * 1024 * 1024
# Parsing a tree blob's JSON costs more than keeping its nodes (a listing of 5,600 nodes: ~0.3 s
# of parsing on the bench machine), and a move lists the same trees again and again (pre-copy
# check, catch-up diff, verify): the nodes of the trees parsed last are kept, up to this many.
TREE_NODES_KEPT = 100_000
# A kept key stands for a password checked this recently (a rotated repository password stops
# opening the repository within this time, as it would without the key kept).
MASTER_KEY_SECONDS = 600.0
# The runs that only read the repository: they may use a kept master key.
KEY_READS = frozenset({"snapshots", "cat", "restore", "check", "dump"})


class _TreeBlobCache:
    """The text ``cat tree-blob`` printed, by (repository location, tree id), least recently used
    dropped first beyond ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._texts: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, location: str, tree_id: str) -> str | None:
        text = self._texts.get((location, tree_id))
        if text is not None:
            self._texts.move_to_end((location, tree_id))
        return text

    def put(self, location: str, tree_id: str, text: str) -> None:
        if len(text) > self._limit or (location, tree_id) in self._texts:
            return
        self._texts[(location, tree_id)] = text
        self._size += len(text)
        while self._size > self._limit:
            _, dropped = self._texts.popitem(last=False)
            self._size -= len(dropped)


class _ParsedTrees:
    """The parsed entries of tree blobs by (repository location, tree id, directory path: the
    nodes' paths depend on it), least recently used dropped first beyond ``limit`` nodes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._entries: OrderedDict[tuple[str, str, str], tuple[rua.TreeEntry, ...]] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> tuple[rua.TreeEntry, ...] | None:
        entries = self._entries.get(key)
        if entries is not None:
            self._entries.move_to_end(key)
        return entries

    def put(self, key: tuple[str, str, str], entries: tuple[rua.TreeEntry, ...]) -> None:
        if len(entries) > self._limit or key in self._entries:
            return
        self._entries[key] = entries
        self._size += len(entries)
        while self._size > self._limit:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped)


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
        self._tree_blobs = _TreeBlobCache(TREE_CACHE_BYTES)
        self._parsed_trees = _ParsedTrees(TREE_NODES_KEPT)
        # (location, password digest) -> master key: a listing then skips the password's KDF.
        self._master_keys: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        # Master keys being read (``cat masterkey``) for a slot: one KDF however many runs wait.
        self._deriving: dict[tuple[str, str], asyncio.Future[str]] = {}
        # Repositories whose tree blobs are read without a process (their index kept).
        self._readers: OrderedDict[tuple[str, str], formats.RepositoryReader] = OrderedDict()

    # ------------------------------------------------------------ plumbing

    def _key_slot(self, repo: Repository) -> tuple[str, str]:
        return repo.location, hashlib.sha256(repo.password.encode()).hexdigest()

    def _kept_master_key(self, repo: Repository) -> str | None:
        kept = self._master_keys.get(self._key_slot(repo))
        if kept is None or time.monotonic() - kept[1] > MASTER_KEY_SECONDS:
            return None
        return kept[0]

    def _keep_master_key(self, repo: Repository, key: str) -> None:
        self._master_keys[self._key_slot(repo)] = (key, time.monotonic())
        self._master_keys.move_to_end(self._key_slot(repo))
        while len(self._master_keys) > MASTER_KEYS_KEPT:
            self._master_keys.popitem(last=False)

    def _forget_master_key(self, repo: Repository) -> None:
        self._master_keys.pop(self._key_slot(repo), None)

    async def _master_key(self, repo: Repository, *, derive: bool = True) -> str | None:
        """The master key kept for ``repo`` and its password; else, with ``derive``, read once
        (``cat masterkey``: the one password KDF) and kept, however many runs ask at the same
        moment (they wait for the one read); without ``derive`` only a read already under way
        is waited for. None when there is none or the read failed: the caller then runs with
        the password, and that run says what is wrong (a wrong password, no repository)."""
        kept = self._kept_master_key(repo)
        if kept is not None:
            return kept
        slot = self._key_slot(repo)
        pending = self._deriving.get(slot)
        if pending is None:
            if not derive:
                return None
            pending = asyncio.ensure_future(self._read_master_key(repo))
            self._deriving[slot] = pending
            pending.add_done_callback(lambda _: self._deriving.pop(slot, None))
        try:
            # Shielded: a waiter cancelled (its operation) does not end the read for the others;
            # the read is a short process of its own that ends by itself.
            return await asyncio.shield(pending)
        except errors.BucketsError:
            return None

    async def _read_master_key(self, repo: Repository, *, report: bool = False) -> str:
        """``cat masterkey`` (the password's KDF), the key kept; ``report``: a failure goes to
        ``on_failure`` too (a run whose error is the answer, not a try)."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        result = await self._run_once(repo, lambda p: rua.cat_masterkey_args(self.binary, p), action="cat",
                                      view=None, on_stdout_line=None, capture_stdout=True, niceness=0,
                                      master_key=None, report=report)
        key = rua.parse_masterkey(result.stdout)
        self._keep_master_key(repo, key)
        return key

    def _repository_reader(self, repo: Repository) -> formats.RepositoryReader | None:
        """The reader of ``repo``'s tree blobs from its files or objects (None: none for its kind)."""
        slot = self._key_slot(repo)
        reader = self._readers.get(slot)
        if reader is None:
            if repo.kind == "local":
                reader = formats.RepositoryReader(formats.LocalFiles(Path(repo.location)))
            elif repo.s3 is not None:
                reader = formats.RepositoryReader(buckets.ObjectFiles(repo.s3), whole_packs=True,
                                                  pack_cache_bytes=READER_PACK_BYTES)
            else:
                return None
            self._readers[slot] = reader
            while len(self._readers) > REPOSITORY_READERS_KEPT:
                self._readers.popitem(last=False)
        self._readers.move_to_end(slot)
        return reader

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

    def _profile_for(self, repo: Repository, master_key: str | None = None) -> rua.Profile:
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
        return rua.Profile(repository=location, password=repo.password, cache_dir=str(self._cache_dir),
                           master_key=master_key)

    @contextlib.contextmanager
    def _profile_file(self, repo: Repository, master_key: str | None = None) -> Iterator[str]:
        """A fresh 0600 profile for ``repo`` (with ``master_key`` instead of the password when
        given), removed when the block ends."""
        text = rua.render_profile(self._profile_for(repo, master_key))
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
        master_key: str | None = None,
    ) -> ProcessResult:
        """Run the argv ``build(profile_path)`` makes, inside ``view`` when given (with a profile
        holding ``master_key`` instead of the password when given). A run that only reads the
        repository (:data:`KEY_READS`) uses the master key the driver kept for it, when there is
        one, or reads it first (one KDF for every run that follows within
        :data:`MASTER_KEY_SECONDS`, and for the runs started beside it); when the repository
        refuses that key (it was made anew since) the key is dropped and the run repeated once
        with the password."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        await s3_access.require(repo)
        kept = await self._master_key(repo) if master_key is None and action in KEY_READS else None
        if kept is None:
            return await self._run_once(repo, build, action=action, view=view, on_stdout_line=on_stdout_line,
                                        capture_stdout=capture_stdout, niceness=niceness, master_key=master_key,
                                        report=True)
        try:
            return await self._run_once(repo, build, action=action, view=view, on_stdout_line=on_stdout_line,
                                        capture_stdout=capture_stdout, niceness=niceness, master_key=kept,
                                        report=False)
        except errors.BucketsError as exc:
            if not rua.key_refused(exc.detail or ""):
                if self._on_failure is not None:
                    self._on_failure(exc)
                raise
        self._forget_master_key(repo)
        log.info("rustic.kept_key_refused", repository=repo.display, action=action)
        return await self._run_once(repo, build, action=action, view=view, on_stdout_line=on_stdout_line,
                                    capture_stdout=capture_stdout, niceness=niceness, master_key=None, report=True)

    async def _run_once(
        self, repo: Repository, build: Callable[[str], list[str]], *, action: str, view: EngineView | None,
        on_stdout_line: Callable[[str], None] | None, capture_stdout: bool, niceness: int, master_key: str | None,
        report: bool,
    ) -> ProcessResult:
        """One run of :meth:`_run`; ``report``: failures go to ``on_failure`` too."""
        on_failure = self._on_failure if report else None
        with self._profile_file(repo, master_key) as profile:
            argv = build(profile)
            if view is not None:
                argv = [*view.wrapper, *argv]
            result = await run_engine(
                argv, classify=rua.classify_failure, action=action, on_failure=on_failure,
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
            if on_failure is not None:
                on_failure(stopped)
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

        def argv(profile: str, *, init: bool) -> list[str]:
            return rua.backup_args(
                self.binary, profile, features=feats, paths=[source], host=host, tags=tags,
                as_path=as_path, json_progress=json_progress,
                # Without progress output the pre-scan only costs time.
                no_scan=not json_progress and "no-scan" in feats,
                init=init,
            )

        run = functools.partial(self._run_once, repo, action="backup", view=view,
                                on_stdout_line=on_line if json_progress else None, capture_stdout=True, niceness=0)
        kept = await self._master_key(repo, derive=False)
        if kept is not None:
            # The key kept for this repository and password spares the password's KDF (most of a
            # small backup's time: a move's catch-up after the freeze). Never with --init: rustic
            # would make a repository with no key file, which no password opens.
            try:
                result = await run(lambda p: argv(p, init=False), master_key=kept, report=False)
                return BackupOutcome(summary=rua.parse_backup_output(result.stdout), warnings=())
            except errors.BucketsError as exc:
                detail = exc.detail or ""
                if not (rua.key_refused(detail) or rua.repository_missing(detail)):
                    if self._on_failure is not None:
                        self._on_failure(exc)
                    raise
            # Made anew or removed since the key was kept: with the password (and --init) as always.
            self._forget_master_key(repo)
            log.info("rustic.kept_key_refused", repository=repo.display, action="backup")
        result = await self._run(
            repo, lambda p: argv(p, init=True), action="backup", view=view,
            on_stdout_line=on_line if json_progress else None, capture_stdout=True,
        )
        return BackupOutcome(summary=rua.parse_backup_output(result.stdout), warnings=())

    async def keep_key(self, repo: Repository) -> None:
        """Read and keep the repository's master key (``cat masterkey``, one password KDF) unless
        one kept for it is still fresh, so that the runs that follow within
        :data:`MASTER_KEY_SECONDS` (a move's catch-up backup after its freeze, say) skip the KDF.
        Raises a BucketsError (wrong password, no repository, ...)."""
        # Not reported as a failure of the repository: whatever fails here, the backup beside it meets.
        if await self._master_key(repo) is None:
            await self._read_master_key(repo)  # raises what failed

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

    async def ls(self, repo: Repository, snapshot_id: str, path: str, *, recursive: bool,
                 tree: str = "") -> list[TreeNode]:
        """The node at ``path`` (absolute in the snapshot) and its direct children, or with
        ``recursive`` its whole subtree, as restic ``ls`` lists them; [] when nothing is there
        (also below a file). For "/" the snapshot's top-level nodes (and below). NotFound for a
        missing snapshot. One rustic run per directory read (see :class:`_TreeReader`); ``tree``
        as :meth:`listing` takes it."""
        rua.check_snapshot_path(snapshot_id, path)
        reader = await _TreeReader.open(self, repo, snapshot_id, tree=tree)
        if path.strip("/") == "":
            top = await reader.entries(reader.root, "/")
            return [e.node for e in top] + (await reader.below(top, recursive=True) if recursive else [])
        found = await reader.resolve(path)
        if found is None:
            return []
        return [found.node] + await reader.below([found], recursive=recursive)

    async def listing(self, repo: Repository, snapshot_id: str, *, tree: str = "") -> list[TreeNode]:
        """Every node of the snapshot, read from its tree blobs (with symlink targets); with
        ``tree`` (the caller's lookup) and a kept key, without looking the snapshot up again."""
        return await self.ls(repo, snapshot_id, "/", recursive=True, tree=tree)

    async def diff(self, repo: Repository, base_snapshot_id: str, snapshot_id: str, *, tree: str = "") -> list[DiffEntry]:
        """The entries snapshot ``snapshot_id`` differs in from ``base_snapshot_id``, from their
        tree blobs (:func:`rua.diff_trees`, a level at a time): only directories whose tree ids
        differ are read, files are compared by their data blob ids. Raises NotFound for a missing
        snapshot, Unimplemented without the feature, a BucketsError."""
        if SNAPSHOT_DIFF not in await self._features():
            raise errors.Unimplemented(f"rustic {await self.version()} is not known to diff snapshots "
                                       "(checked from 0.11.4)")
        reader = await _TreeReader.open(self, repo, snapshot_id, tree=tree)
        base_root = await reader.root_of(base_snapshot_id)
        changes: list[DiffEntry] = []
        level = [(base_root, reader.root, "/")] if base_root != reader.root else []
        while level:
            trees = await first_error(*(reader.entries(tree, directory)
                                        for old, new, directory in level for tree in (old, new)))
            level = []
            for old_entries, new_entries in zip(trees[::2], trees[1::2]):
                found, descend = rua.diff_trees(old_entries, new_entries)
                changes += found
                level += [(was.subtree, now.subtree, now.node.path) for was, now in descend]
        # What lies in a directory that is new (added, or a type change), as "added" with sizes:
        # the bytes a restore over the tree fetches are then the sizes of the files named.
        fresh = {change.path for change in changes if change.is_dir and change.change in ("added", "type")}
        if fresh:
            top = await reader.entries(reader.root, "/")
            starts = [entry for entry in await _entries_at(reader, top, fresh) if entry.subtree]
            for node in await reader.below(starts, recursive=True):
                changes.append(DiffEntry(path=node.path, change="added", is_dir=node.type == "dir",
                                         size=node.size if node.type == "file" else 0))
        return sorted(changes, key=lambda change: change.path)

    async def restore_paths(
        self, repo: Repository, snapshot_id: str, paths: Sequence[str], view: EngineView,
    ) -> None:
        """The snapshot's exact ``paths`` (absolute), each with its metadata and everything below
        it, into ``view.root`` as the snapshot root, in one rustic run per
        :func:`rua.restore_paths_batches` batch (:func:`rua.restore_paths_args`): nothing else of
        the tree is compared or touched; the directories the paths lie in must exist. Judged by
        "restore done.". Raises ValueError for a path no glob spells, a BucketsError."""
        if SNAPSHOT_DIFF not in await self._features():
            raise errors.Unimplemented(f"rustic {await self.version()} is not known to restore a list of paths")
        for batch in rua.restore_paths_batches(list(paths)):
            result = await self._run(
                repo, lambda p, batch=batch: rua.restore_paths_args(self.binary, p, snapshot_id=snapshot_id,
                                                                    paths=batch, target=str(view.root)),
                action="restore", view=view, capture_stdout=True,
            )
            rua.check_restore_output(result.stdout)

    async def find(self, repo: Repository, snapshot_id: str, paths: Sequence[str], *, tree: str = "") -> list[TreeNode]:
        """The nodes at ``paths`` with their symlink targets, and everything below those that are
        directories (as restic ``find`` with these exact paths gives them); missing paths give
        nothing. Raises ValueError for no paths or a relative one, NotFound for a missing snapshot.
        ``tree`` as :meth:`listing` takes it."""
        if isinstance(paths, str) or not paths:
            raise ValueError("find needs at least one path")
        for path in paths:
            rua.check_snapshot_path(snapshot_id, path)
        reader = await _TreeReader.open(self, repo, snapshot_id, tree=tree)
        nodes: dict[str, TreeNode] = {}  # a node below two of the paths is listed once, as restic does
        for path in dict.fromkeys(paths):
            found = await reader.resolve(path)
            if found is not None:
                for node in [found.node, *await reader.below([found], recursive=True)]:
                    nodes.setdefault(node.path, node)
        return list(nodes.values())

    async def dump(self, repo: Repository, snapshot_id: str, path: str, *, limit: int) -> bytes:
        """Up to ``limit`` bytes of the regular file at ``path``; rustic is stopped once it has sent them."""
        argv_for = lambda p: rua.dump_args(self.binary, p, snapshot_id, path)  # noqa: E731
        self._tmp.mkdir(parents=True, exist_ok=True)
        await s3_access.require(repo)
        with self._profile_file(repo) as profile:
            result = await run_engine(
                argv_for(profile), classify=rua.classify_failure, action="dump", on_failure=self._on_failure,
                env=self._env(), timeout=self._timeout, capture_stdout=True, raw_stdout=True,
                stdout_enough=limit, secrets=repo.secrets, kill_grace=self._kill_grace,
                stall_timeout=self._stall_timeout,
            )
        if not result.stdout_cut:
            # A rustic stopped by a signal exits 0 with whatever it had written: not the file.
            stopped = rua.interrupted_error(result.returncode, result.stderr_unmasked or result.stderr_tail,
                                            action="dump")
            if stopped is not None:
                stopped.detail = result.stderr_tail.strip()
                raise stopped
        return result.stdout_raw

    async def forget_plan(
        self, repo: Repository, *, host: str, policy: KeepPolicy
    ) -> tuple[list[Snapshot], list[Snapshot]]:
        """(keep, remove) under ``policy`` for the snapshots of ``host``; nothing is removed."""
        result = await self._run(
            repo, lambda p: rua.forget_plan_args(self.binary, p, host=host, policy=policy),
            action="forget", capture_stdout=True,
        )
        return rua.parse_forget_plan(result.stdout)

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


async def _entries_at(reader: "_TreeReader", top: Sequence[rua.TreeEntry], paths: set[str]) -> list[rua.TreeEntry]:
    """The tree entries at ``paths`` (absolute, each a directory of the snapshot)."""
    found = [entry for entry in top if entry.node.path in paths]
    deeper = sorted(path for path in paths if path.count("/") > 1)
    for path in deeper:
        entry = await reader.resolve(path)
        if entry is not None:
            found.append(entry)
    return found


class _TreeReader:
    """Reads one snapshot's tree blobs for one listing: the master key once (``cat masterkey``),
    the snapshot's root tree id, then ``cat tree-blob`` per directory with that key, at most
    :data:`LISTING_CONCURRENCY` at once; a tree id met twice (identical directories) is read once.
    The driver keeps the key in memory (on disk only in the 0600 profile of a run) and the tree
    blobs it read: a later listing of a snapshot that shares directories with one read before
    reads only the new ones, without the password's KDF."""

    def __init__(self, engine: RusticEngine, repo: Repository, key: str, root: str) -> None:
        self._engine = engine
        self._repo = repo
        self._key = key
        self.root = root
        self._gate = asyncio.Semaphore(LISTING_CONCURRENCY)
        self._blobs: dict[str, asyncio.Future[str]] = {}
        self._parsed_key: formats.MasterKey | None = None
        self._direct_off = False

    @classmethod
    async def open(cls, engine: RusticEngine, repo: Repository, snapshot_id: str, *, tree: str = "") -> _TreeReader:
        """Raises NotFound for a missing repository or snapshot. The master key the driver kept
        for this repository and password is used when there is one; when a run with it fails
        (the repository was made anew since, say) it is read again (``cat masterkey``, which
        checks the password) and the lookup repeated once.

        ``tree``: the snapshot's root tree id from the caller's own lookup in the same operation
        (a snapshot's id is the digest of its file, which names its tree): with a kept key, no
        lookup here. That lookup ran with the key the driver keeps now (a refused key is dropped
        and read again), and a snapshot forgotten since fails as it would a moment after ours."""
        kept = await engine._master_key(repo)
        if kept is not None and tree:
            return cls(engine, repo, kept, rua.checked_tree_id(tree, snapshot_id))
        if kept is not None:
            try:
                return await cls._with_key(engine, repo, snapshot_id, kept)
            except errors.BucketsError:
                engine._forget_master_key(repo)
        # No key (the read failed): once more, reported, for the error that says why.
        await s3_access.require(repo)
        key = await engine._read_master_key(repo, report=True)
        return await cls._with_key(engine, repo, snapshot_id, key)

    @classmethod
    async def _with_key(cls, engine: RusticEngine, repo: Repository, snapshot_id: str, key: str) -> "_TreeReader":
        listed = await engine._run(repo, lambda p: rua.snapshots_args(engine.binary, p, ids=[snapshot_id]),
                                   action="snapshots", capture_stdout=True, master_key=key)
        return cls(engine, repo, key, rua.tree_id_of(rua.parse_snapshots(listed.stdout), snapshot_id))

    async def root_of(self, snapshot_id: str) -> str:
        """The root tree id of another snapshot of the same repository (NotFound when missing)."""
        listed = await self._engine._run(
            self._repo, lambda p: rua.snapshots_args(self._engine.binary, p, ids=[snapshot_id]),
            action="snapshots", capture_stdout=True, master_key=self._key)
        return rua.tree_id_of(rua.parse_snapshots(listed.stdout), snapshot_id)

    async def _blob(self, tree_id: str) -> str:
        if tree_id not in self._blobs:
            self._blobs[tree_id] = asyncio.ensure_future(self._read(tree_id))
        return await self._blobs[tree_id]

    async def _read(self, tree_id: str) -> str:
        cached = self._engine._tree_blobs.get(self._repo.location, tree_id)
        if cached is not None:
            return cached
        text = await self._read_directly(tree_id)
        if text is None:
            async with self._gate:
                result = await self._engine._run(
                    self._repo, lambda p: rua.cat_tree_blob_args(self._engine.binary, p, tree_id), action="cat",
                    capture_stdout=True, master_key=self._key)
            text = result.stdout
        rua.parse_tree_blob(text, "/")  # only a blob that parses is kept
        self._engine._tree_blobs.put(self._repo.location, tree_id, text)
        return text

    async def _read_directly(self, tree_id: str) -> str | None:
        """The tree blob read from the repository's files or objects (authenticated), without a
        process; None when it cannot be (anything unreadable: the engine then reads it, and
        reports what is wrong)."""
        local = self._engine._repository_reader(self._repo)
        if local is None or self._direct_off:
            return None
        try:
            if self._parsed_key is None:
                self._parsed_key = formats.MasterKey.from_json(self._key)
            data = await asyncio.to_thread(local.tree_blob, self._parsed_key, tree_id)
            return data.decode("utf-8")
        except (formats.Unreadable, UnicodeDecodeError) as exc:
            self._direct_off = True  # one failure: the rest of this listing goes through the engine
            log.info("rustic.tree_read_by_engine", tree=tree_id[:8], reason=str(exc)[:200])
            return None

    async def entries(self, tree_id: str, directory: str) -> list[rua.TreeEntry]:
        """The nodes of tree ``tree_id``, the directory at snapshot path ``directory`` (parsed
        once: a tree id names its content for good, and the nodes are immutable)."""
        parsed = self._parsed(tree_id, directory)
        if parsed is None:
            parsed = tuple(rua.parse_tree_blob(await self._blob(tree_id), directory))
            self._engine._parsed_trees.put((self._repo.location, tree_id, directory), parsed)
        return list(parsed)

    def _parsed(self, tree_id: str, directory: str) -> tuple[rua.TreeEntry, ...] | None:
        return self._engine._parsed_trees.get((self._repo.location, tree_id, directory))

    async def resolve(self, path: str) -> rua.TreeEntry | None:
        """The node at ``path`` (absolute, not "/"), or None when no such path exists (a component
        is missing or is no directory)."""
        parts = [p for p in path.split("/") if p]
        tree, directory = self.root, "/"
        for depth, part in enumerate(parts):
            match = next((e for e in await self.entries(tree, directory) if e.node.name == part), None)
            if match is None:
                return None
            if depth == len(parts) - 1:
                return match
            if not match.subtree:
                return None
            tree, directory = match.subtree, match.node.path
        return None

    async def below(self, start: Sequence[rua.TreeEntry], *, recursive: bool) -> list[TreeNode]:
        """The nodes inside the directories among ``start``: direct children, or with
        ``recursive`` all, read a level at a time."""
        nodes: list[TreeNode] = []
        level = [e for e in start if e.subtree]
        while level:
            # Trees parsed before need no task (most of them, in a listing after an earlier one).
            # first_error, not a TaskGroup: a failed read is raised as the error it is (DataLoss,
            # Unavailable …), which a TaskGroup would wrap in an ExceptionGroup.
            found = [self._parsed(e.subtree, e.node.path) for e in level]
            missing = [index for index, cached in enumerate(found) if cached is None]
            read = await first_error(*(self.entries(level[index].subtree, level[index].node.path)
                                       for index in missing))
            for index, entries in zip(missing, read):
                found[index] = entries
            level = []
            for children in found:
                nodes += [c.node for c in children]
                level += [c for c in children if c.subtree]
            if not recursive:
                break
        return nodes
