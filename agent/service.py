"""The agent's domain facade: one method per RPC, domain values in and out.

The servicer converts protos to the arguments of these methods and back;
this class validates, resolves repositories and submits jobs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Sequence

import psutil
import structlog

from agent import browse, cgroup_freeze, errors, ids, jobs, locks, placing, precopies, precopy, project_paths, sentinel
from agent import rpo, snapshot_roots, usertree, writers
from agent import copy as copying
from agent import drain as draining
from agent import freshness as fresh
from agent.freshness import Freshness
from agent.backends.base import Backend
from agent.backends.btrfs import BtrfsBackend
from agent.backends.directory import DirectoryBackend
from agent.config import AgentConfig, ensure_password_file
from agent.engine import restic_args as ra
from agent.engine.base import Snapshot, TreeNode
from agent.engine.choice import make_engine
from agent.journal import Journal
from agent.metrics import AgentMetrics
from agent.model import OperationKind, OperationRecord, OperationState
from agent.operations import OperationManager
from agent.repository import LocalSpec, RepositorySpec, label_of, resolve
from agent.schedule.runner import Scheduler

log = structlog.get_logger("agent.service")

AGENT_VERSION = "0.1.0"
# What this agent can do beside its engine's features (GetCapabilities).
AGENT_FEATURES = ("precopy",)
# "rescue": a source copy backed up before a move's cleanup removes it (tagged move=<id>).
PURPOSES = ("backup", "copy", "move", "rescue")
# The purpose of the agent's own scheduled backups (agent/schedule): not accepted in requests,
# so that a snapshot tagged with it was always taken by the scheduler.
SCHEDULED_PURPOSE = "scheduled"
MAX_FORGET_IDS = 1000
# Kinds that change a project's home: a copy must not read a project while one of these runs.
SOURCE_WRITERS = (OperationKind.RESTORE, OperationKind.DELETE, OperationKind.ENSURE)
# Stands for "any project" where a request's repository spec is checked before a host-wide
# operation knows its projects.
_ANY_PROJECT = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Capabilities:
    engine: str
    engine_version: str
    backend: str
    features: tuple[str, ...]
    limitations: tuple[str, ...]
    max_concurrent_operations: int
    read_file_max_bytes: int
    agent_version: str
    host_id: str


@dataclass(frozen=True)
class ProjectStatus:
    project_id: str
    present: bool
    size_bytes: int
    freshness: Freshness
    frozen: bool
    running_operation: OperationRecord | None
    last_error: object  # OperationError | None
    repository_location: str
    last_restore: dict | None
    observed_at: float = 0.0  # the "now" of the unprotected age
    last_error_time: float | None = None  # when the operation of last_error ended
    over_rpo_reason: str = ""  # one of rpo.REASONS when the age is over the host's RPO

    @property
    def unprotected_age(self) -> float:
        return self.freshness.unprotected_age(self.observed_at)


@dataclass(frozen=True)
class ProjectFreshness:
    """One project of the host as the journal knows it (ListProjects); ``observed_at`` the "now" of
    its unprotected age, ``over_rpo_reason`` one of rpo.REASONS when that is over the host's RPO."""

    project_id: str
    freshness: Freshness
    frozen: bool
    observed_at: float = 0.0
    over_rpo_reason: str = ""

    @property
    def unprotected_age(self) -> float:
        return self.freshness.unprotected_age(self.observed_at)


@dataclass(frozen=True)
class HostStatus:
    host_id: str
    projects: int
    dirty: int
    up_to_date: int
    never_backed_up: int
    running_operations: int
    queued_operations: int
    disk_total_bytes: int
    disk_free_bytes: int
    memory_total_bytes: int
    memory_available_bytes: int
    engine: str
    backend: str
    rpo: rpo.HostRpo | None = None
    observed_at: float = 0.0  # the "now" of the RPO figures


def make_backend(config: AgentConfig) -> Backend:
    paths = config.paths
    if config.backend == "btrfs":
        return BtrfsBackend(
            projects_root=paths.projects_root, persist_root=paths.persist_root, state_dir=paths.state_dir,
            binary=config.btrfs.binary, default_quota_bytes=config.btrfs.default_quota_bytes or None,
        )
    return DirectoryBackend(projects_root=paths.projects_root, persist_root=paths.persist_root,
                            state_dir=paths.state_dir)


def undo_expiry_interval(keep_replaced: float) -> float:
    """Seconds between looks for expired kept trees: a fraction of how long they are kept, so
    one is not kept much longer than configured, and at most a minute."""
    return min(60.0, max(0.5, keep_replaced / 4))


def _remember(cache: OrderedDict, key, value, *, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


@dataclass(frozen=True)
class ThawResult:
    """Whether the project is still frozen (read back), and what became of the sentinel asked to
    be removed ("" when none was asked for; see :func:`agent.sentinel.remove`)."""

    frozen: bool
    sentinel: str


@dataclass(frozen=True)
class FreezeResult:
    """What a Freeze did: the processes it stopped or froze, and the cgroup it froze ("" = none)."""

    stopped: list[writers.Stopped]
    cgroup: str
    frozen: bool
    """Read back from the filesystem after the freeze (btrfs ro property, the read-only bind)."""


class AgentService:
    """Takes the agent's config; owns the journal, the operation manager, the backend and the engine."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        paths = config.paths
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.state_dir, 0o700)
        if config.repository.kind == "local":
            ensure_password_file(config.repository.local.password_file)
        # Always kept, served only when [metrics] listen is set: one code path either way.
        self.metrics = AgentMetrics(operation_states=lambda: self.operations.states(),
                                    rpo_seconds=config.schedule.rpo)
        self.journal = Journal(paths.state_dir / "agent.sqlite", on_freshness_change=self._publish_freshness)
        self.backend = make_backend(config)
        self.engine = make_engine(config, on_failure=self.metrics.engine_failed)
        self._reconciler: asyncio.Task | None = None
        self._retention: asyncio.Task | None = None
        self._undo_expiry: asyncio.Task | None = None
        self._precopy_expiry: asyncio.Task | None = None
        self._scheduler: asyncio.Task | None = None
        self._checked_snapshots: OrderedDict = OrderedDict()
        self._listings: OrderedDict = OrderedDict()
        self._freeze_lock = asyncio.Lock()
        # COPY operation id → its source project, while it may still run (see _copies_reading).
        self._copy_sources: dict[str, str] = {}
        self.services = jobs.Services(
            journal=self.journal,
            backend=self.backend,
            engine=self.engine,
            host_id=config.host_id,
            create_buckets=bool(config.repository.s3 and config.repository.s3.create_bucket),
            restore_policy=config.restore,
        )
        self.operations = OperationManager(
            self.journal,
            max_running=config.limits.max_concurrent_operations,
            max_queued=config.limits.max_queued_operations,
            keepalive_interval=config.server.keepalive_interval,
            recover=lambda record: jobs.recover(record, self.backend, self.journal),
            on_finish=self._operation_finished,
        )

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Recover what a previous process left behind (the engine locks of its interrupted
        operations too: :mod:`agent.locks`); check the engine runs."""
        try:
            usertree.require_openat2()
        except errors.Unimplemented as exc:
            # Fail closed: every operation inside a project's tree is refused, nothing falls back.
            log.error("paths.openat2_missing", error=str(exc))
        unlocked = await locks.remove_stale_locks(
            locks.repositories_used(self.journal.unfinished_operations()),
            open_repository=self._recovery_repository, unlock=self.engine.unlock,
            concurrency=self.config.limits.max_concurrent_operations,
            label=lambda display, project_id: label_of(display, project_id, self.config))
        interrupted = self.operations.recover_interrupted(notes=unlocked)
        # A pre-copy's staging outlives its operation: kept while its record is.
        removed = await self.backend.remove_stale(
            keep=frozenset(record.staging for record in precopies.every(self.journal)))
        expired_precopies = await self.expire_precopies()
        # Expired kept trees go now; ones kept just before a crash are made read-only.
        expired = await self.services.kept.sweep(seal=True)
        profiles = self.engine.remove_stale()
        present = self._present_projects()
        self.journal.ensure_projects(present)  # one never heard of is unprotected from now on
        if self.config.limits.reconcile_interval > 0 or self.config.schedule.enabled:
            # Before the port answers: what changed while the agent was down shows in the first
            # status and metrics, not one reconcile interval later.
            try:
                await self.reconcile()
            except (errors.BucketsError, OSError) as exc:  # the periodic looks try again
                log.warning("freshness.startup_look_failed", error=str(exc))
        for project_id in present:  # one query each: the metrics start complete
            self._publish_freshness(project_id)
        version = await self.engine.version()
        log.info(
            "agent.recovered",
            interrupted=[r.id for r in interrupted],
            stale_staging_removed=[str(p) for p in removed],
            expired_undo_removed=expired,
            expired_precopies_removed=expired_precopies,
            stale_engine_files_removed=profiles,
        )
        log.info("engine.ready", engine=self.engine.name, binary=self.engine.binary, version=version,
                 features=sorted(await self.engine.features()))
        if self.config.schedule.enabled:
            # Retention then follows the scheduled backups (the scheduler applies it).
            self._scheduler = asyncio.get_running_loop().create_task(
                Scheduler(self).run_forever(), name="scheduler")
        elif self.config.retention.interval > 0:
            self._retention = asyncio.get_running_loop().create_task(
                self.retention_forever(self.config.retention.interval), name="retention"
            )
        self._undo_expiry = asyncio.get_running_loop().create_task(
            self.expire_undo_forever(undo_expiry_interval(self.config.restore.keep_replaced)), name="undo-expiry"
        )
        self._precopy_expiry = asyncio.get_running_loop().create_task(
            self.expire_precopies_forever(undo_expiry_interval(self.config.precopy.max_age)), name="precopy-expiry"
        )
        if self.config.limits.reconcile_interval > 0 and not self.config.schedule.enabled:
            # With the scheduler on, it refreshes every project each cycle itself.
            self._reconciler = asyncio.get_running_loop().create_task(
                self.reconcile_forever(self.config.limits.reconcile_interval), name="freshness-reconciler"
            )

    async def stop(self, grace: float) -> None:
        """Stop running operations (recorded INTERRUPTED) and refuse new ones."""
        for task in (self._scheduler, self._reconciler, self._retention, self._undo_expiry, self._precopy_expiry):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.operations.shutdown(grace)
        # What is left of it (old trees of restores) goes at the next start, as stale staging.
        await self.services.housekeeping.drain(timeout=grace)

    def close(self) -> None:
        self.journal.close()

    # ------------------------------------------------------------ metrics

    def _publish_freshness(self, project_id: str) -> None:
        """Bring the project's metrics in line with the journal: its freshness while it is on this
        host, no series once it is not (deleted, or never here)."""
        try:
            if self.backend.exists(project_id):
                self.metrics.project_freshness(project_id, fresh.freshness(self.journal, project_id))
            else:
                self.metrics.forget_project(project_id)
        except Exception:  # metrics must never fail the write they follow
            log.exception("metrics.freshness_failed", project_id=project_id)

    def _operation_finished(self, record: OperationRecord) -> None:
        self.metrics.operation_finished(record)
        if record.project_id:
            # After any operation: a project EnsureProject created (no freshness written yet)
            # appears at once, one DeleteProject removed disappears.
            self._publish_freshness(record.project_id)

    # ------------------------------------------------------------ operations

    def _repository(self, spec: RepositorySpec | None, project_id: str):
        return resolve(spec, project_id, self.config)

    def backup(
        self,
        *,
        request_id: str,
        project_id: str,
        repository: RepositorySpec | None,
        force: bool,
        purpose: str,
        tags: Sequence[str],
        subpath: str = "",
    ) -> tuple[OperationRecord, bool]:
        """Back up the project, or with ``subpath`` only that file or directory of its home (see
        BackupRequest.subpath); a second call while one runs joins it when it asks the same."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        subpath = ids.relative_path(subpath, field="subpath")
        purpose = purpose or "backup"
        if purpose not in PURPOSES:
            raise errors.InvalidArgument(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose[:40]!r}")
        for tag in tags:
            key, sep, _ = tag.partition("=")
            if not sep or not key or "," in tag or key in ("layout", "project", "host", "op", "purpose", "scope"):
                raise errors.InvalidArgument(f"tag {tag[:80]!r} must be key=value without ',' and not a reserved key")
        repo = self._repository(repository, project_id)
        self.backend.require_real(project_id)
        if not self.backend.exists(project_id):
            raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
        params = {"repository": repo.display, "force": force, "purpose": purpose, "tags": list(tags)}
        if subpath:
            # Only when set: the fingerprints of whole-project backups stay what they were.
            params["subpath"] = subpath
            if not self._known_request(request_id):
                project_paths.check_source(self.backend.home(project_id), subpath, field="subpath")
        job = functools.partial(
            jobs.backup, services=self.services, repo=repo, purpose=purpose, extra_tags=tags, force=force,
            subpath=subpath,
        )
        return self.operations.submit(
            kind=OperationKind.BACKUP, project_id=project_id, request_id=request_id, params=params, job=job,
            joinable=True,
        )

    def scheduled_backup(self, project_id: str) -> tuple[OperationRecord, bool]:
        """Submit a scheduled backup of the project into its configured repository (purpose
        "scheduled"): it yields to every other request on the project (OperationManager.submit)
        and waits behind them for a running slot. Raises what submit raises."""
        repo = self._repository(None, project_id)
        params = {"repository": repo.display, "force": False, "purpose": SCHEDULED_PURPOSE, "tags": []}
        job = functools.partial(jobs.backup, services=self.services, repo=repo, purpose=SCHEDULED_PURPOSE,
                                extra_tags=(), force=False)
        return self.operations.submit(
            kind=OperationKind.BACKUP, project_id=project_id, request_id=f"scheduled-{uuid.uuid4()}",
            params=params, job=job, yields=True,
        )

    def restore(
        self,
        *,
        request_id: str,
        project_id: str,
        repository: RepositorySpec | None,
        snapshot_id: str,
        subpath: str,
        target_path: str,
        source_project_id: str = "",
        on_conflict: placing.ConflictPolicy | None = None,
        force: bool = False,
    ) -> tuple[OperationRecord, bool]:
        """Restore a whole snapshot, or with ``subpath`` one path of it to ``target_path`` by
        ``on_conflict`` (None: OVERWRITE), read from ``source_project_id``'s repository when
        given (a copy between hosts; only with ``subpath``)."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        snapshot_id = ids.snapshot_id(snapshot_id or "")
        subpath = ids.relative_path(subpath, field="subpath")
        target_path = ids.relative_path(target_path, field="target_path")
        source_project = ids.project_id(source_project_id) if source_project_id else project_id
        if target_path and not subpath:
            raise errors.InvalidArgument("target_path needs a subpath: the whole snapshot restores to the project")
        if source_project != project_id and not subpath and self.backend.exists(project_id):
            raise errors.FailedPrecondition(
                f"project {project_id} exists on this host: a whole restore from another project's repository "
                "makes a new project (a clone) and never replaces one"
            )
        if on_conflict is not None and not subpath:
            raise errors.InvalidArgument("on_conflict needs a subpath: a whole restore always replaces the project")
        if force and subpath:
            raise errors.InvalidArgument("force is for a whole restore (unsaved changes); a restore of a path "
                                         "decides by on_conflict")
        policy = on_conflict or placing.ConflictPolicy.OVERWRITE
        repo = self._repository(repository, source_project)
        self.backend.require_real(project_id)
        self._refuse_while_copied_from(project_id, "restored", request_id)
        params = {"repository": repo.display, "snapshot_id": snapshot_id}
        if subpath:
            target_path = target_path or subpath
            params.update(subpath=subpath, target_path=target_path)
            # Only when not the defaults: the fingerprints of earlier requests stay what they were.
            if source_project != project_id:
                params["source_project_id"] = source_project
            if policy is not placing.ConflictPolicy.OVERWRITE:
                params["on_conflict"] = policy.value
            if self.backend.exists(project_id) and not self._known_request(request_id):
                found = project_paths.check_target(self.backend.home(project_id), target_path, field="target_path")
                placing.refuse_existing(found, policy, field="target_path", shown=target_path)
            job = functools.partial(jobs.restore_path, services=self.services, repo=repo, snapshot_id=snapshot_id,
                                    subpath=subpath, target_path=target_path, source_project_id=source_project,
                                    on_conflict=policy)
        else:
            if source_project != project_id:
                params["source_project_id"] = source_project
            if force:  # only when set: the fingerprints of earlier requests stay what they were
                params["force"] = True
            job = functools.partial(jobs.restore, services=self.services, repo=repo, snapshot_id=snapshot_id,
                                    source_project_id=source_project if source_project != project_id else None,
                                    force=force)
        return self.operations.submit(
            kind=OperationKind.RESTORE, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def undo_restore(
        self, *, request_id: str, project_id: str, restore_operation_id: str
    ) -> tuple[OperationRecord, bool]:
        """Put back the trees a whole-project restore replaced (``restore_operation_id``, empty:
        the newest kept one); see :func:`jobs.undo_restore`. An operation of kind RESTORE.
        NotFound at once when nothing is kept (unless ``request_id`` is known: its operation)."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        if restore_operation_id:
            restore_operation_id = ids.operation_id(restore_operation_id)
        self._refuse_while_copied_from(project_id, "restored", request_id)
        if not self._known_request(request_id):
            self.services.kept.find(project_id, restore_operation_id)
        params = {"undo": restore_operation_id or "newest"}
        job = functools.partial(jobs.undo_restore, services=self.services, restore_operation_id=restore_operation_id)
        return self.operations.submit(
            kind=OperationKind.RESTORE, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def verify(
        self,
        *,
        request_id: str,
        project_id: str,
        repository: RepositorySpec | None,
        mode: str,
        read_data_subset: str,
        sentinel_path: str = "",
        sentinel_content: str = "",
        snapshot_id: str = "",
    ) -> tuple[OperationRecord, bool]:
        """Check the repository (``repository``, ``read_data``), the live sentinel file on this host
        (``sentinel``: DATA_LOSS when it is missing or differs; no repository needed), or the live
        trees against ``snapshot_id`` (``snapshot_tree``: every entry, plus the sentinel when
        ``sentinel_path`` is set; ``counts``: entries and bytes only). Raises InvalidArgument for
        a missing or malformed ``snapshot_id`` or sentinel."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        if mode == "sentinel":
            return self._verify_sentinel(request_id, project_id, sentinel_path, sentinel_content)
        if mode in ("snapshot_tree", "counts"):
            return self._verify_tree(request_id, project_id, repository, mode, snapshot_id, sentinel_path,
                                     sentinel_content)
        if mode not in ("repository", "read_data"):
            raise errors.Unimplemented(f"verify mode {mode} is not built yet")
        if mode == "read_data":
            try:
                if read_data_subset:
                    ra.check_read_data_subset(read_data_subset)
            except ValueError as exc:
                raise errors.InvalidArgument(f"read_data_subset: {exc}") from None
            # "1/1", not "100%": rustic 0.11.4 picks a percentage subset at random (size-weighted),
            # and at 100% it can leave packs unread; "n/m" is a fixed partition of the packs.
            read_data_subset = read_data_subset or "1/1"
        else:
            read_data_subset = ""
        repo = self._repository(repository, project_id)
        params = {"repository": repo.display, "mode": mode, "read_data_subset": read_data_subset}
        job = functools.partial(jobs.verify, services=self.services, repo=repo, read_data_subset=read_data_subset)
        return self.operations.submit(
            kind=OperationKind.VERIFY, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def _verify_tree(
        self, request_id: str, project_id: str, repository: RepositorySpec | None, mode: str, snapshot_id: str,
        path: str, content: str,
    ) -> tuple[OperationRecord, bool]:
        if not snapshot_id:
            raise errors.InvalidArgument(f"verify mode {mode} needs a snapshot_id")
        # An exact snapshot: "latest" would be resolved later than the caller meant.
        snapshot_id = ids.snapshot_id(snapshot_id, allow_latest=False)
        repo = self._repository(repository, project_id)
        params = {"repository": repo.display, "mode": mode, "snapshot_id": snapshot_id}
        if mode == "counts":
            # With a sentinel: the snapshot's counts less that file, which a move removed from
            # the target after its tree verify proved it there (ThawRequest.sentinel_path).
            checked = sentinel.check(path, content, required=False)
            expected = content.encode("utf-8", "surrogatepass")
            if checked is not None:
                params.update(without_sentinel=checked.path, sentinel_sha256=hashlib.sha256(expected).hexdigest())
            job = functools.partial(jobs.verify_counts, services=self.services, repo=repo, snapshot_id=snapshot_id,
                                    removed_sentinel=checked, sentinel_content=expected)
        else:
            checked = sentinel.check(path, content, required=False)
            expected = content.encode("utf-8", "surrogatepass")
            if checked is not None:
                if self.backend.exists(project_id):  # a missing project fails the operation (NOT_FOUND)
                    sentinel.confine(checked, jobs.sentinel_roots(self.backend, project_id))
                params.update(sentinel_path=checked.path, sentinel_sha256=hashlib.sha256(expected).hexdigest())
            job = functools.partial(jobs.verify_snapshot_tree, services=self.services, repo=repo,
                                    snapshot_id=snapshot_id, location=checked, expected_sentinel=expected)
        return self.operations.submit(
            kind=OperationKind.VERIFY, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def _verify_sentinel(
        self, request_id: str, project_id: str, path: str, content: str
    ) -> tuple[OperationRecord, bool]:
        checked = sentinel.check(path, content, required=True)
        if self.backend.exists(project_id):  # a missing project fails the operation (NOT_FOUND)
            sentinel.confine(checked, jobs.sentinel_roots(self.backend, project_id))
        expected = content.encode("utf-8", "surrogatepass")
        # The content's digest, not the content, goes into the journal (and the request fingerprint).
        params = {"mode": "sentinel", "sentinel_path": checked.path,
                  "sentinel_sha256": hashlib.sha256(expected).hexdigest()}
        job = functools.partial(jobs.verify_sentinel, services=self.services, location=checked, expected=expected)
        return self.operations.submit(
            kind=OperationKind.VERIFY, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def ensure_project(
        self,
        *,
        request_id: str,
        project_id: str,
        repository: RepositorySpec | None,
        mode: str,
        quota_bytes: int,
        snapshot_id: str = "",
        precopy_key: str = "",
    ) -> tuple[OperationRecord, bool]:
        """Make the project ready to start (see :func:`jobs.ensure_project` for the modes and
        ``snapshot_id``; with ``precopy_key`` :func:`precopy.ensure`); a second call while one
        runs joins it when it asks the same."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        if quota_bytes < 0:
            raise errors.InvalidArgument("quota_bytes must not be negative")
        if snapshot_id:
            if mode == "none":
                raise errors.InvalidArgument("snapshot_id needs mode AUTO or REQUIRED: NONE restores nothing")
            # An exact snapshot is the point: "latest" would be resolved later than the caller meant.
            snapshot_id = ids.snapshot_id(snapshot_id, allow_latest=False)
        if precopy_key:
            precopies.check_key(precopy_key, field="precopy_key")
            if not snapshot_id:
                raise errors.InvalidArgument(
                    "precopy_key needs a snapshot_id: a pre-copy is brought to an exact snapshot")
        repo = self._repository(repository, project_id)
        self.backend.require_real(project_id)
        self._refuse_while_copied_from(project_id, "ensured", request_id)
        params = {"mode": mode, "quota_bytes": quota_bytes, "repository": repo.display}
        if snapshot_id:
            # Only when set: the fingerprints of requests without one stay what they were. The
            # manager joins a running operation only when the fingerprint is equal, so a call for
            # another snapshot while one runs is refused as a conflict rather than joined.
            params["snapshot_id"] = snapshot_id
        if precopy_key:
            params["precopy_key"] = precopy_key
            job = functools.partial(precopy.ensure, services=self.services, repo=repo, mode=mode,
                                    quota_bytes=quota_bytes or None, snapshot_id=snapshot_id, key=precopy_key)
        else:
            job = functools.partial(jobs.ensure_project, services=self.services, repo=repo, mode=mode,
                                    quota_bytes=quota_bytes or None, snapshot_id=snapshot_id)
        return self.operations.submit(
            kind=OperationKind.ENSURE, project_id=project_id, request_id=request_id, params=params, job=job,
            joinable=True,
        )

    def precopy(
        self, *, request_id: str, project_id: str, repository: RepositorySpec | None, snapshot_id: str, key: str,
    ) -> tuple[OperationRecord, bool]:
        """Restore ``snapshot_id`` into the project's pre-copy under ``key`` (see
        :func:`precopy.precopy`); a second call while one runs joins it when it asks the same.
        InvalidArgument (bad key, no or a "latest" snapshot), FailedPrecondition (the project is
        present here) before anything is created."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        key = precopies.check_key(key)
        if not snapshot_id:
            raise errors.InvalidArgument("PreCopy needs a snapshot_id")
        # An exact snapshot: "latest" would be resolved later than the caller meant.
        snapshot_id = ids.snapshot_id(snapshot_id, allow_latest=False)
        repo = self._repository(repository, project_id)
        self.backend.require_real(project_id)
        if not self._known_request(request_id):
            precopy.refuse_present(self.services, project_id)
        params = {"repository": repo.display, "snapshot_id": snapshot_id, "key": key}
        job = functools.partial(precopy.precopy, services=self.services, repo=repo, snapshot_id=snapshot_id, key=key)
        return self.operations.submit(
            kind=OperationKind.PRECOPY, project_id=project_id, request_id=request_id, params=params, job=job,
            joinable=True,
        )

    def delete_project(
        self,
        *,
        request_id: str,
        project_id: str,
        repository: RepositorySpec | None,
        delete_repository: bool,
    ) -> tuple[OperationRecord, bool]:
        """Remove the home, the persist location and every local snapshot; with ``delete_repository``
        also every object of the project's repository."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        repo = self._repository(repository, project_id) if delete_repository else None
        self._refuse_while_copied_from(project_id, "deleted", request_id)
        params = {"delete_repository": delete_repository, "repository": repo.display if repo else ""}
        job = functools.partial(jobs.delete_project, services=self.services, repo=repo)
        return self.operations.submit(
            kind=OperationKind.DELETE, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def forget(
        self,
        *,
        request_id: str,
        project_id: str,
        repository: RepositorySpec | None,
        keep: dict[str, int],
        prune: bool,
        protected: Sequence[str],
        snapshot_ids: Sequence[str] = (),
    ) -> tuple[OperationRecord, bool]:
        """Retention: the project's snapshots that ``keep`` does not keep are forgotten, except
        ``protected`` ones (e.g. the snapshot of a move or copy in progress); then prune. With
        ``snapshot_ids`` exactly those are forgotten instead (``keep`` all 0, no ``protected``).
        With ``prune`` and no keep rule, ids or ``protected``: prune only, nothing forgotten."""
        ids.request_id(request_id)
        project_id = ids.project_id(project_id)
        if snapshot_ids:
            return self._forget_exactly(request_id, project_id, repository, keep, prune, protected, snapshot_ids)
        if prune and not any(keep.values()) and not protected:
            return self._prune_only(request_id, project_id, repository)
        policy = ra.KeepPolicy(**keep)
        try:
            policy.flags()
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        protected = [ids.snapshot_id(p, allow_latest=False) for p in protected]
        repo = self._repository(repository, project_id)
        params = {"repository": repo.display, "keep": keep, "prune": prune, "protected": sorted(protected)}
        job = functools.partial(jobs.forget, services=self.services, repo=repo, policy=policy,
                                protected=protected, prune=prune)
        return self.operations.submit(
            kind=OperationKind.FORGET, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def _prune_only(self, request_id: str, project_id: str,
                    repository: RepositorySpec | None) -> tuple[OperationRecord, bool]:
        """Prune without forgetting: only data no snapshot references goes."""
        repo = self._repository(repository, project_id)
        params = {"repository": repo.display, "keep": {}, "prune": True, "protected": []}
        job = functools.partial(jobs.prune_only, services=self.services, repo=repo)
        return self.operations.submit(
            kind=OperationKind.FORGET, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def _forget_exactly(
        self, request_id: str, project_id: str, repository: RepositorySpec | None, keep: dict[str, int],
        prune: bool, protected: Sequence[str], snapshot_ids: Sequence[str],
    ) -> tuple[OperationRecord, bool]:
        if any(keep.values()) or protected:
            raise errors.InvalidArgument(
                "snapshot_ids forgets exactly those snapshots: keep_* and protected_snapshot_ids must be unset"
            )
        if len(snapshot_ids) > MAX_FORGET_IDS:
            raise errors.InvalidArgument(f"at most {MAX_FORGET_IDS} snapshot_ids at once")
        wanted = sorted({ids.snapshot_id(s, allow_latest=False) for s in snapshot_ids})
        repo = self._repository(repository, project_id)
        params = {"repository": repo.display, "snapshot_ids": wanted, "prune": prune}
        job = functools.partial(jobs.forget_exactly, services=self.services, repo=repo, snapshot_ids=wanted,
                                prune=prune)
        return self.operations.submit(
            kind=OperationKind.FORGET, project_id=project_id, request_id=request_id, params=params, job=job
        )

    def check_copy_target(self, project_id: str, target_path: str,
                          on_conflict: placing.ConflictPolicy | None) -> bool:
        """Whether something is at ``target_path`` of the project now, after the checks a restore of
        a path makes when it arrives (see CheckCopyTargetRequest); changes nothing."""
        project_id = ids.project_id(project_id)
        target_rel = project_paths.relative(target_path, field="target_path")
        if not self.backend.exists(project_id):
            raise errors.ProjectNotFound(f"project {project_id} is not on this host", project_id=project_id)
        found = project_paths.check_target(self.backend.home(project_id), target_rel, field="target_path")
        placing.refuse_existing(found, on_conflict or placing.ConflictPolicy.OVERWRITE, field="target_path",
                                shown=target_rel)
        return found is not None

    def copy_files(
        self,
        *,
        request_id: str,
        source_project_id: str,
        source_path: str,
        target_project_id: str,
        target_path: str,
        on_conflict: placing.ConflictPolicy | None,
    ) -> tuple[OperationRecord, bool]:
        """Copy a file or directory between two projects on this host (see :mod:`agent.copy`);
        the operation belongs to the target project. Raises InvalidArgument (a bad id or path,
        a path leading out of its project, a target inside the source), NotFound (a project or
        the source is missing), FailedPrecondition (FAIL and the target exists), Conflict
        (the source is being restored, ensured or deleted; another operation on the target)."""
        ids.request_id(request_id)
        source_project = ids.project_id(source_project_id)
        target_project = ids.project_id(target_project_id)
        source_rel = project_paths.relative(source_path, field="source_path")
        target_rel = project_paths.relative(target_path, field="target_path")
        policy = on_conflict or placing.ConflictPolicy.OVERWRITE
        for project in dict.fromkeys((source_project, target_project)):
            self.backend.require_real(project)
        if not self._known_request(request_id):  # a retry finds its operation even after it wrote the target
            for project in dict.fromkeys((source_project, target_project)):
                if not self.backend.exists(project):
                    raise errors.ProjectNotFound(f"project {project} does not exist on this host", project_id=project)
            project_paths.check_source(self.backend.home(source_project), source_rel, field="source_path")
            found = project_paths.check_target(self.backend.home(target_project), target_rel, field="target_path")
            if source_project == target_project and project_paths.nested(source_rel, target_rel):
                raise errors.InvalidArgument(f"target_path {target_rel[:200]!r} is source_path or inside it")
            placing.refuse_existing(found, policy, field="target_path", shown=target_rel)
            active = self.operations.active_operation(source_project)
            if source_project != target_project and active is not None and active.kind in SOURCE_WRITERS:
                raise errors.Conflict(
                    f"project {source_project} has a running {active.kind.value} operation {active.id}; "
                    "copy from it when that has ended",
                    operation_id=active.id, operation_kind=active.kind.value, project_id=source_project,
                )
        params = {"source_project_id": source_project, "source_path": source_rel, "target_path": target_rel,
                  "on_conflict": policy.value}
        job = functools.partial(
            copying.copy_files, services=self.services, source_project_id=source_project, source_path=source_rel,
            target_path=target_rel, on_conflict=policy, timeout=self.config.limits.engine_timeout,
            kill_grace=self.config.limits.kill_grace,
        )
        record, joined = self.operations.submit(
            kind=OperationKind.COPY, project_id=target_project, request_id=request_id, params=params, job=job
        )
        if not joined and source_project != target_project:
            self._copy_sources[record.id] = source_project
        return record, joined

    def _known_request(self, request_id: str) -> bool:
        """Whether an operation has this request id already (its retry returns it unchecked)."""
        return self.journal.find_by_request_id(request_id) is not None

    def _copies_reading(self, project_id: str) -> list[str]:
        """Ids of the COPY operations, queued or running, that read ``project_id``."""
        reading = []
        for operation_id, source in list(self._copy_sources.items()):
            record = self.operations.get(operation_id)
            if record.state.terminal:
                del self._copy_sources[operation_id]
            elif source == project_id:
                reading.append(operation_id)
        return reading

    def _refuse_while_copied_from(self, project_id: str, verb: str, request_id: str) -> None:
        """Conflict while a copy reads the project: it must not be restored, ensured or deleted
        under the copy (a retry of a request that has its operation already is let through)."""
        copies = self._copies_reading(project_id)
        if copies and self._known_request(request_id):
            return
        if copies:
            raise errors.Conflict(
                f"project {project_id} is being copied from by operation {copies[0]}; it can be {verb} "
                "when that has ended",
                operation_id=copies[0], operation_kind="copy", project_id=project_id,
            )

    def drain(
        self, *, request_id: str, concurrency: int, repository: RepositorySpec | None
    ) -> tuple[OperationRecord, bool]:
        """Back up every dirty project on this host, ``concurrency`` backups at once (0: the
        default; more than max_concurrent_operations: capped), each as its own Backup with
        ``repository``; see :mod:`agent.drain`. At most one drain runs per host: another one
        asking the same joins it, one asking otherwise raises Conflict."""
        ids.request_id(request_id)
        if concurrency < 0:
            raise errors.InvalidArgument("concurrency must not be negative")
        workers = draining.effective_concurrency(concurrency, self.config.limits.max_concurrent_operations)
        # Checked now (bad spec, no password) rather than once per project later.
        probe = self._repository(repository, _ANY_PROJECT)
        located = repository is not None and repository.location is not None
        params = {"concurrency": concurrency, "repository": probe.display if located else "per-project"}

        def start_backup(request: str, project_id: str, force: bool) -> tuple[OperationRecord, bool]:
            return self.backup(request_id=request, project_id=project_id, repository=repository, force=force,
                               purpose="backup", tags=())

        async def look(project_id: str) -> Freshness:
            await fresh.observe(self.journal, self.backend, project_id)
            return fresh.freshness(self.journal, project_id)

        hooks = draining.DrainHooks(
            projects=self._present_projects,
            look=look,
            freshness=functools.partial(fresh.freshness, self.journal),
            start_backup=start_backup,
            active=self.operations.active_operation,
            wait=self.operations.wait,
            cancel=self.operations.cancel,
        )
        job = functools.partial(draining.drain, hooks=hooks, concurrency=workers)
        # No running slot: the drain only waits for its backups, which take their own.
        return self.operations.submit(
            kind=OperationKind.DRAIN, project_id="", request_id=request_id, params=params, job=job,
            joinable=True, takes_slot=False,
        )

    # ------------------------------------------------------------ freeze

    async def freeze(self, project_id: str, sentinel_path: str = "", sentinel_content: str = "",
                     writers_policy: str = "") -> FreezeResult:
        """Make the project unchangeable on this host, after writing the move sentinel when one is
        given (durably, before the freeze, so the catch-up backup carries it).

        In this order, so no write slips between the steps: new writes are blocked (btrfs: the
        subvolumes' ``ro`` property; directory: read-only bind mounts), the project's cgroup is
        frozen when ``[freeze] cgroup`` names one that exists, then every other process that can
        still change the data (:mod:`agent.writers`) is handled by ``writers_policy`` ("stop",
        "refuse"; "" = the ``[freeze] writers`` setting): stopped (SIGTERM, grace, SIGKILL, and
        re-scanned until none is left), or the Freeze is refused naming them and the project is
        left as it was. Also on a project already frozen (a resumed move: the sentinel must
        hold ``sentinel_content``), since a crash may have come between blocking and stopping.

        Returns what was stopped. Raises InvalidArgument (bad id, sentinel or policy), NotFound,
        Conflict (a restore, delete or ensure runs), FailedPrecondition (refused writers, a
        differing sentinel, a backend that cannot freeze here), Unavailable (a writer that does
        not end).
        """
        project_id = ids.project_id(project_id)
        policy = writers_policy or self.config.freeze.writers
        if policy not in ("stop", "refuse"):
            raise errors.InvalidArgument(f"unknown writer policy {policy!r}")
        checked = sentinel.check(sentinel_path, sentinel_content, required=False)
        active = self.operations.active_operation(project_id)
        if active is not None and active.kind in (*SOURCE_WRITERS, OperationKind.COPY):
            raise errors.Conflict(
                f"project {project_id} has a {active.kind.value} operation {active.id} running; "
                "freeze it when that has ended",
                operation_id=active.id, operation_kind=active.kind.value, project_id=project_id,
            )
        self.backend.require_real(project_id)
        if not self.backend.exists(project_id):
            raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
        async with self._freeze_lock:  # two Freeze calls must not interleave check, write and freeze
            cgroup = self.config.freeze.cgroup_of(project_id)
            cgroup = cgroup if cgroup is not None and cgroup_freeze.exists(cgroup) else None
            was_frozen = await self.backend.is_frozen(project_id)
            cgroup_was_frozen = cgroup is not None and cgroup_freeze.is_frozen(cgroup)
            scope = self.backend.writer_scope(project_id)
            if policy == "refuse":
                # Before anything is written: a refused Freeze leaves no sentinel behind either.
                early = await self._writers(scope, cgroup)
                if early:
                    raise errors.FailedPrecondition(f"project {project_id} not frozen: {writers.refusal(early)}")
            if checked is not None:
                await self._put_sentinel(project_id, checked, sentinel_content.encode("utf-8", "surrogatepass"))
            await self.backend.freeze(project_id)
            try:
                frozen_pids = await cgroup_freeze.freeze(cgroup) if cgroup is not None else []
                found = await self._writers(scope, cgroup)
                if found and policy == "refuse":
                    raise errors.FailedPrecondition(f"project {project_id} not frozen: {writers.refusal(found)}")
                stopped = await writers.stop_all(scope, self.config.freeze.grace, exclude=frozen_pids, first=found)
            except BaseException:
                if policy == "refuse":
                    await self._undo_freeze(project_id, cgroup, was_frozen, cgroup_was_frozen)
                raise
            if frozen_pids:  # what the frozen cgroup's processes hold (one more scan of /proc) names them
                held = {w.pid: w.paths for w in await asyncio.to_thread(writers.scan, scope)}
                stopped += [
                    writers.Stopped(pid=w.pid, uid=w.uid, command=w.command, action="cgroup-frozen",
                                    paths=held.get(w.pid, ()))
                    for w in await asyncio.to_thread(writers.describe_pids, frozen_pids)
                ]
        log.info("project.frozen", project_id=project_id, sentinel=checked.path if checked else "",
                 stopped=[(s.pid, s.action, s.command[:80]) for s in stopped], cgroup=str(cgroup or ""))
        scheduled = self.operations.yielding_on(project_id)
        if scheduled is not None:
            # A move's final Backup comes next and would wait for this one: the frozen window must
            # not grow with a scheduled backup's length (the scheduler skips frozen projects anyway).
            await self.operations.cancel(scheduled.id)
            log.info("schedule.cancelled_by_freeze", project_id=project_id, operation_id=scheduled.id)
        return FreezeResult(stopped=stopped, cgroup=str(cgroup) if cgroup is not None else "",
                            frozen=await self.backend.is_frozen(project_id))

    async def _writers(self, scope, cgroup) -> list:
        """The processes that can change the data in ``scope``, but those in a frozen ``cgroup``."""
        exclude = cgroup_freeze.pids(cgroup) if cgroup is not None and cgroup_freeze.is_frozen(cgroup) else []
        return await asyncio.to_thread(writers.scan, scope, exclude=exclude)

    async def _undo_freeze(self, project_id: str, cgroup, was_frozen: bool, cgroup_was_frozen: bool) -> None:
        if cgroup is not None and not cgroup_was_frozen:
            cgroup_freeze.thaw(cgroup)
        if not was_frozen:
            await self.backend.thaw(project_id)

    async def _put_sentinel(self, project_id: str, checked: sentinel.Sentinel, content: bytes) -> None:
        roots = jobs.sentinel_roots(self.backend, project_id)
        if await self.backend.is_frozen(project_id):
            # A frozen tree may be read-only, and rewriting the sentinel of a frozen project
            # would let a second move take over the first one's freeze.
            problem = await asyncio.to_thread(sentinel.mismatch, checked, content, roots)
            if problem is not None:
                raise errors.FailedPrecondition(
                    f"project {project_id} is frozen and its sentinel differs; thaw it first "
                    f"({checked.path} {problem})"
                )
            return
        await asyncio.to_thread(sentinel.write, checked, content, roots)

    async def thaw(self, project_id: str, sentinel_path: str = "", sentinel_content: str = "") -> ThawResult:
        """Undo :meth:`freeze`: the trees writable again, the project's cgroup thawed (nothing to do
        on a project that is not frozen). With ``sentinel_path``, then the move's sentinel is
        removed when it holds exactly ``sentinel_content`` (:func:`agent.sentinel.remove`: a file
        with other content, a symlink or anything but a regular file stays; a missing one is
        fine), under the freeze lock, so no Freeze of another move writes its sentinel between.

        Raises InvalidArgument (bad id or sentinel, a sentinel that does not look like a move's
        (:func:`agent.sentinel.check_removable`), a sentinel path a symlink leads out of its
        root), NotFound, FailedPrecondition (a read-only tree)."""
        project_id = ids.project_id(project_id)
        checked = sentinel.check(sentinel_path, sentinel_content, required=False)
        if checked is not None:
            sentinel.check_removable(checked, sentinel_content)
        outcome = ""
        async with self._freeze_lock:
            await self.backend.thaw(project_id)
            cgroup = self.config.freeze.cgroup_of(project_id)
            if cgroup is not None:
                cgroup_freeze.thaw(cgroup)
            frozen = await self.backend.is_frozen(project_id)
            if checked is not None and not frozen:
                outcome = await asyncio.to_thread(
                    sentinel.remove, checked, sentinel_content.encode("utf-8", "surrogatepass"),
                    jobs.sentinel_roots(self.backend, project_id))
        log.info("project.thawed", project_id=project_id, sentinel=checked.path if checked else "",
                 sentinel_outcome=outcome)
        return ThawResult(frozen=frozen, sentinel=outcome)

    # ------------------------------------------------------------ browsing

    async def list_snapshots(
        self, *, project_id: str, repository: RepositorySpec | None, page_size: int, page_token: str
    ) -> tuple[list[Snapshot], str, list[int]]:
        """Newest first, with each snapshot's size (0 when unknown); the page token is the offset
        into that order."""
        project_id = ids.project_id(project_id)
        repo = self._repository(repository, project_id)
        try:
            offset = int(page_token) if page_token else 0
        except ValueError:
            raise errors.InvalidArgument(f"malformed page_token {page_token[:40]!r}") from None
        if offset < 0:
            raise errors.InvalidArgument("page_token must not be negative")
        try:
            snapshots = await self.engine.snapshots(repo, host=ids.project_dir_name(project_id))
        except errors.NotFound:
            snapshots = []  # no repository yet: no backups
        snapshots.sort(key=lambda s: (s.time, s.id), reverse=True)
        size = min(page_size or 100, 1000)
        # Shown in the API's one form, whichever engine and view root recorded them.
        page = [replace(s, paths=snapshot_roots.api_paths(s.paths)) for s in snapshots[offset : offset + size]]
        token = str(offset + size) if offset + size < len(snapshots) else ""
        return page, token, [self._snapshot_size(repo, s.id) for s in page]

    def _snapshot_size(self, repo, snapshot_id: str) -> int:
        """Bytes a restore of the snapshot writes, when this agent wrote it (restic 0.14 keeps no
        summary in the snapshot); 0 when unknown."""
        known = self.journal.known_snapshot(repo.display, snapshot_id)
        return known["bytes"] if known else 0

    # ------------------------------------------------------------ status

    async def capabilities(self) -> Capabilities:
        return Capabilities(
            engine=self.engine.name,
            engine_version=await self.engine.version(),
            backend=self.backend.name,
            features=tuple(sorted({*await self.engine.features(), *AGENT_FEATURES})),
            limitations=(*self.backend.limitations, *self.engine.limitations()),
            max_concurrent_operations=self.config.limits.max_concurrent_operations,
            read_file_max_bytes=self.config.limits.read_file_max_bytes,
            agent_version=AGENT_VERSION,
            host_id=self.config.host_id,
        )

    def _present_projects(self) -> list[str]:
        found = []
        with os.scandir(self.config.paths.projects_root) as entries:  # no Path per entry: 10,000 a cycle
            for entry in entries:
                if not entry.name.startswith("project-") or not entry.is_dir():
                    continue  # a project's home is a directory (or subvolume)
                try:
                    found.append(ids.project_id(entry.name[len("project-"):]))
                except errors.InvalidArgument:
                    continue  # not a project directory of ours
        return sorted(found)

    def host_status(self, *, over_rpo_limit: int = 100) -> HostStatus:
        """Counts and RPO figures from the journal as the reconciler last saw the projects (no
        scan here; one query over the projects table, one more for the reasons of the projects
        over the RPO). ``over_rpo_limit``: the most projects listed over the RPO."""
        running, queued = self.operations.counts()
        disk = shutil.disk_usage(self.config.paths.projects_root)
        memory = psutil.virtual_memory()
        projects = self._present_projects()
        known = {row[0]: row for row in self.journal.project_ages()}
        unknown = [project_id for project_id in projects if project_id not in known]
        if unknown:  # on the host, never heard of: never backed up, unprotected from now on
            self.journal.ensure_projects(unknown)
            known = {row[0]: row for row in self.journal.project_ages()}
        states = [Freshness(last_backup=known[project_id][1], last_backup_snapshot="",
                            last_change=known[project_id][2], unprotected_since=known[project_id][3])
                  for project_id in projects]
        observed_at = time.time()
        figures = self._host_rpo(dict(zip(projects, states)), observed_at, limit=over_rpo_limit)
        return HostStatus(
            host_id=self.config.host_id,
            projects=len(projects),
            dirty=sum(1 for f in states if f.dirty),
            up_to_date=sum(1 for f in states if not f.dirty),
            never_backed_up=sum(1 for f in states if f.last_backup is None),
            running_operations=running,
            queued_operations=queued,
            disk_total_bytes=disk.total,
            disk_free_bytes=disk.free,
            memory_total_bytes=memory.total,
            memory_available_bytes=memory.available,
            engine=self.engine.name,
            backend=self.backend.name,
            rpo=figures,
            observed_at=observed_at,
        )

    def _host_rpo(self, states: dict[str, Freshness], now: float, *, limit: int) -> rpo.HostRpo:
        """The RPO figures of the projects ``states`` at ``now``; reasons read only for those
        over the RPO."""
        target = self.config.schedule.rpo
        over = [project_id for project_id, state in states.items()
                if rpo.is_over_rpo(state.unprotected_age(now), target)]
        failing = self._backups_failing(over)
        return rpo.host_rpo(
            [rpo.ProjectAge(project_id, state.unprotected_since, backed_up=state.last_backup is not None,
                            last_backup_failed=project_id in failing) for project_id, state in states.items()],
            target, now, limit=limit)

    def _backups_failing(self, project_ids: Sequence[str]) -> set[str]:
        """Those of ``project_ids`` whose backups fail (the "failing_backups" reason): today the
        newest finished backup operation FAILED."""
        return self.journal.last_backup_failed(project_ids)

    def over_rpo_reason(self, project_id: str, state: Freshness, now: float) -> str:
        """Why the project is over the RPO at ``now`` (one of rpo.REASONS); "" when it is not."""
        if not rpo.is_over_rpo(state.unprotected_age(now), self.config.schedule.rpo):
            return ""
        return rpo.over_rpo_reason(backed_up=state.last_backup is not None,
                                   last_backup_failed=bool(self._backups_failing([project_id])))

    async def list_projects(self) -> tuple[list[ProjectFreshness], float]:
        """Every project present on the host with its freshness and unprotected age as the journal
        holds them (what the reconciler and the operations recorded: no scan of the trees; one
        query for all, one more for the reasons of those over the RPO), and when they were read
        (seconds since the epoch, this host's clock)."""
        projects = self._present_projects()
        frozen = await self.backend.frozen_projects(projects)
        states = fresh.freshness_of_many(self.journal, projects)
        unknown = [project_id for project_id, state in zip(projects, states)
                   if state.last_backup is None and state.unprotected_since is None]
        if unknown:  # on the host, never heard of: never backed up, unprotected from now on
            self.journal.ensure_projects(unknown)
            states = fresh.freshness_of_many(self.journal, projects)
        observed_at = time.time()
        figures = self._host_rpo(dict(zip(projects, states)), observed_at, limit=len(projects))
        reasons = {over.project_id: over.reason for over in figures.over_rpo}
        found = [ProjectFreshness(project_id, state, project_id in frozen, observed_at=observed_at,
                                  over_rpo_reason=reasons.get(project_id, ""))
                 for project_id, state in zip(projects, states)]
        return found, observed_at

    async def project_status(self, project_id: str, *, scan: bool = True) -> ProjectStatus:
        """Looks at the project now (a generation read, or a scan on the directory backend).
        Without ``scan`` the trees are not looked at: no change observed, size 0, the rest as
        the journal and the backend's presence and freeze state say (cheap on every backend)."""
        project_id = ids.project_id(project_id)
        present = self.backend.exists(project_id)
        if present and scan:
            await fresh.observe(self.journal, self.backend, project_id)
        running = self.operations.active_operation(project_id)
        last_failed = self._standing_failure(project_id)
        state = fresh.freshness(self.journal, project_id)
        if present and state.last_backup is None and state.unprotected_since is None:
            self.journal.ensure_projects([project_id])  # never heard of: unprotected from now on
            state = fresh.freshness(self.journal, project_id)
        observed_at = time.time()
        return ProjectStatus(
            project_id=project_id,
            present=present,
            size_bytes=await self.backend.size(project_id) if present and scan else 0,
            freshness=state,
            observed_at=observed_at,
            over_rpo_reason=self.over_rpo_reason(project_id, state, observed_at) if present else "",
            frozen=present and await self.backend.is_frozen(project_id),
            running_operation=running,
            last_error=last_failed.error if last_failed else None,
            last_error_time=(last_failed.finished_at or last_failed.created_at) if last_failed else None,
            repository_location=self._repository_display(project_id),
            last_restore=self.journal.last_restore(project_id),
        )

    # ------------------------------------------------------------ browsing inside snapshots

    async def _browsable(self, repo, project_id: str, snapshot_id: str) -> str:
        """The id of a layout-v2 snapshot of the project, checked once per (repository, id)."""
        snapshot_id = ids.snapshot_id(snapshot_id or "")
        key = (repo.display, project_id, snapshot_id)
        if key not in self._checked_snapshots:
            known = jobs.known_snapshot(self.services, repo, project_id, snapshot_id)
            snapshot = known[0] if known else await jobs.find_snapshot(self.services, repo, project_id, snapshot_id)
            jobs.require_layout_v2(snapshot, project_id)
            _remember(self._checked_snapshots, key, snapshot.id, limit=256)
        return self._checked_snapshots[key]

    async def _nodes(self, repo, snapshot_id: str, path: str, *, recursive: bool) -> list[TreeNode]:
        # Snapshots never change, so listings are kept (a few) for the pages that follow.
        key = (repo.display, snapshot_id, path, recursive)
        if key not in self._listings:
            _remember(self._listings, key, await self.engine.ls(repo, snapshot_id, path, recursive=recursive),
                      limit=8)
        return self._listings[key]

    async def list_files(
        self, *, project_id: str, repository: RepositorySpec | None, snapshot_id: str, path: str, depth: int,
        page_size: int, page_token: str,
    ) -> tuple[list[browse.Entry], str]:
        """One page of the entries below ``path`` (relative to the snapshot root, "project/src")."""
        project_id = ids.project_id(project_id)
        repo = self._repository(repository, project_id)
        base = browse.snapshot_path(path, root=browse.SNAPSHOT_ROOT)
        levels = browse.effective_depth(depth)
        snapshot = await self._browsable(repo, project_id, snapshot_id)
        nodes = await self._nodes(repo, snapshot, base, recursive=levels > 1)
        return browse.list_page(nodes, base, depth, page_size, page_token, root=browse.SNAPSHOT_ROOT,
                                scope=f"{repo.display}@{snapshot}")

    async def read_file(
        self, *, project_id: str, repository: RepositorySpec | None, snapshot_id: str, path: str, max_bytes: int,
    ) -> tuple[bytes, bool, bool, int]:
        """(content, truncated, binary, size) of a regular file, following symlinks that stay inside
        their root; at most ``max_bytes`` (and the configured cap) are read."""
        project_id = ids.project_id(project_id)
        repo = self._repository(repository, project_id)
        target = browse.snapshot_path(path, root=browse.SNAPSHOT_ROOT)
        if target == "/":
            raise errors.InvalidArgument("path names the snapshot root, not a file")
        limit = browse.read_limit(max_bytes, self.config.limits.read_file_max_bytes)
        snapshot = await self._browsable(repo, project_id, snapshot_id)
        # The path alone first: a whole listing of its root is needed only to follow symlinks.
        direct = [n for n in await self.engine.ls(repo, snapshot, target, recursive=False) if n.path == target]
        if not direct:
            raise errors.PathNotFound(f"{path!r} is not in snapshot {snapshot[:8]}", path=path, snapshot_id=snapshot)
        node = direct[0]
        nodes = {node.path: node}
        if node.type == "symlink":
            root = "/" + target.split("/")[1]
            nodes = {n.path: n for n in await self._nodes(repo, snapshot, root, recursive=True)}
        hops = 0
        while node.type == "symlink" and hops <= browse.MAX_SYMLINK_HOPS:
            if not node.link_target:
                found = [n for n in await self.engine.find(repo, snapshot, [node.path]) if n.path == node.path]
                if not found:
                    raise errors.PathNotFound(f"{path!r} is not in snapshot {snapshot[:8]}", path=path, snapshot_id=snapshot)
                node = found[0]
                nodes[node.path] = node
            following = nodes.get(browse.symlink_target_path(node))
            if following is None:
                break  # check_readable names the dangling link
            node, hops = following, hops + 1
        readable = browse.check_readable(node, nodes)
        data = await self.engine.dump(repo, snapshot, readable.path, limit=limit + 1)
        content, truncated, binary = browse.read_result(data, readable.size, limit)
        return content, truncated, binary, readable.size

    def _recovery_repository(self, display: str, project_id: str):
        """The repository an interrupted operation of ``project_id`` journaled as ``display``,
        opened from this agent's configuration: the project's configured repository, or a local
        path with the configured password. FailedPrecondition when a request named it with its
        own credentials, which the agent never keeps."""
        configured = self._repository(None, project_id)
        if configured.display == display:
            return configured
        if display.startswith("/"):
            return self._repository(RepositorySpec(location=LocalSpec(path=display)), project_id)
        raise errors.FailedPrecondition("the operation's request named this repository with its own credentials, "
                                        "which the agent does not keep")

    def _repository_display(self, project_id: str) -> str:
        try:
            return self._repository(None, project_id).display
        except errors.BucketsError:
            return ""

    async def mark_edited(self, project_id: str, when: float | None) -> None:
        """Record a change; FailedPrecondition on a frozen project (nothing may change it)."""
        project_id = ids.project_id(project_id)
        if self.backend.exists(project_id) and await self.backend.is_frozen(project_id):
            raise errors.ProjectFrozen(f"project {project_id} is frozen; it cannot have been edited", project_id=project_id)
        self.journal.mark_changed(project_id, time.time() if when is None else when)

    def _standing_failure(self, project_id: str) -> OperationRecord | None:
        """The project's newest FAILED operation, unless an operation of the same kind ended
        well after it (then that failure is history, not the project's state)."""
        failed = self.operations.list(project_id=project_id, states=[OperationState.FAILED], page_size=1,
                                      page_token="")[0]
        if not failed:
            return None
        ended_well = [OperationState.SUCCEEDED, OperationState.SUCCEEDED_WITH_WARNINGS, OperationState.UP_TO_DATE]
        ok = self.operations.list(project_id=project_id, states=ended_well, page_size=100, page_token="")[0]
        ended = failed[0].finished_at or failed[0].created_at
        if any(op.kind is failed[0].kind and (op.finished_at or op.created_at) > ended for op in ok):
            return None
        return failed[0]

    async def reconcile(self) -> fresh.Observed:
        """One freshness look at every project on the host (:func:`agent.freshness.observe_all`);
        returns what it found changed."""
        started, cpu = time.monotonic(), time.process_time()
        projects = self._present_projects()
        observed = await fresh.observe_all(self.journal, self.backend, projects)
        for project_id, error in observed.failed.items():
            log.warning("freshness.observe_failed", project_id=project_id, error=error)
        # process_time: the whole agent's CPU meanwhile (its other work included), an upper bound.
        log.info("freshness.reconciled", projects=len(projects), changed=len(observed.changed),
                 failed=len(observed.failed), seconds=round(time.monotonic() - started, 4),
                 cpu_seconds=round(time.process_time() - cpu, 4))
        return observed

    def apply_retention(self, round_id: str) -> list[str]:
        """Submit the configured keep policy for every project; the snapshot of each project's last
        restore receipt is protected (what a move or copy put in place). Returns operation ids."""
        started = []
        for project_id in self._present_projects():
            operation_id = self.retain(project_id, round_id)
            if operation_id:
                started.append(operation_id)
        return started

    def retain(self, project_id: str, round_id: str) -> str:
        """Submit the configured keep policy for one project; returns the operation id, or ""
        when none was started: a project never backed up (nothing to keep or forget: not a
        failure) or one another operation works on (next round)."""
        if fresh.freshness(self.journal, project_id).last_backup is None:
            return ""
        policy = self.config.retention
        receipt = self.journal.last_restore(project_id)
        try:
            record, _ = self.forget(
                request_id=f"retention-{round_id}-{project_id}", project_id=project_id, repository=None,
                keep=policy.keep(), prune=policy.prune,
                protected=[receipt["snapshot_id"]] if receipt else [],
            )
        except errors.BucketsError as exc:  # e.g. another operation runs on the project: next round
            log.warning("retention.skipped", project_id=project_id, error=str(exc))
            return ""
        return record.id

    async def retention_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.apply_retention(str(int(time.time() // interval)))

    async def expire_undo_forever(self, interval: float) -> None:
        """Remove kept trees whose time is up, every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.services.kept.sweep()
            except (errors.BucketsError, OSError) as exc:  # kept for the next round; never fatal
                log.warning("undo.expiry_failed", error=str(exc))

    async def expire_precopies(self) -> list[str]:
        """Discard the pre-copies unchanged for longer than ``[precopy] max_age`` whose project no
        operation works on; returns their staging names."""
        removed = []
        for record in precopies.expired(precopies.every(self.journal), now=time.time(),
                                        max_age=self.config.precopy.max_age):
            lock = self.services.staging_locks.of(record.project_id)
            if lock.locked() or self.operations.active_operation(record.project_id) is not None:
                continue  # in use: looked at again next round
            async with lock:
                again = precopies.current(self.journal, record.project_id)
                if again is None or again.staging != record.staging or again.updated_at != record.updated_at:
                    continue
                await precopies.discard(self.journal, self.backend, again)
                removed.append(again.staging)
        return removed

    async def expire_precopies_forever(self, interval: float) -> None:
        """Discard expired pre-copies every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_precopies()
            except (errors.BucketsError, OSError) as exc:  # kept for the next round; never fatal
                log.warning("precopy.expiry_failed", error=str(exc))

    async def reconcile_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.reconcile()

    def list_operations(
        self, *, project_id: str, states: list[OperationState], page_size: int, page_token: str
    ) -> tuple[list[OperationRecord], str]:
        if project_id:
            project_id = ids.project_id(project_id)
        return self.operations.list(project_id=project_id or None, states=states, page_size=page_size,
                                    page_token=page_token)
