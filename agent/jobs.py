"""The work of each operation kind: what runs once the operation manager starts it.

Each job takes the operation's context plus what it needs, and returns a
:class:`~agent.model.Summary` or raises a BucketsError. Nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Sequence

import structlog

from agent import bookkeeping, buckets, errors, fsops, live_tree, placing, precopies, project_paths, s3_access, sentinel
from agent import tree_compare, undo, usertree
from agent import freshness as fresh
from agent.backends.base import Backend, Staging, remove_fd_view
from agent.config import RestoreConfig
from agent.fsops import tree_size
from agent.housekeeping import Housekeeping
from agent.engine import restic_args as ra
from agent.engine.base import RESTORE_PROGRESS, BackupStatus, Engine, RestoreSize, RestoreStatus, Snapshot
from agent.ids import project_dir_name
from agent.journal import Journal
from agent.metrics import failures_expected
from agent.model import OperationRecord, OperationState, Summary
from agent.operations import OperationContext
from agent.repository import Repository

log = structlog.get_logger("agent.jobs")

LAYOUT = "v2"
# The tag of a snapshot that holds one path of the project (BackupRequest.subpath), not all of it.
SUBPATH_SCOPE_TAG = "scope=subpath"
FULL_ID_LENGTH = 64
RESTORE_POLL_INTERVAL = 0.5
# The staged-size poller waits this many times as long as its last walk took (see
# report_restore_progress): its walks take at most about 1/40 of one core.
RESTORE_WALK_SPACING = 40.0


class SnapshotCounts:
    """What this agent learnt of snapshots' sizes from listing them (a SNAPSHOT_TREE verify):
    entries and bytes keyed by (repository, snapshot id), the newest ``limit`` kept; what a
    COUNTS verify compares with without reading the repository again."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._known: OrderedDict[tuple[str, str], tree_compare.Counts] = OrderedDict()

    def remember(self, repository: str, snapshot_ids: Sequence[str], counts: tree_compare.Counts) -> None:
        for snapshot_id in snapshot_ids:
            self._known[(repository, snapshot_id)] = counts
            self._known.move_to_end((repository, snapshot_id))
        while len(self._known) > self._limit:
            self._known.popitem(last=False)

    def get(self, repository: str, snapshot_id: str) -> tree_compare.Counts | None:
        return self._known.get((repository, snapshot_id))


@dataclass(frozen=True)
class Services:
    """What jobs use: the journal, the backend, the engine, this host's id, and the background
    tasks that follow operations (:mod:`agent.housekeeping`)."""

    journal: Journal
    backend: Backend
    engine: Engine
    host_id: str
    create_buckets: bool = False
    housekeeping: Housekeeping = field(default_factory=Housekeeping)
    snapshot_counts: SnapshotCounts = field(default_factory=SnapshotCounts)
    restore_policy: RestoreConfig = field(default_factory=RestoreConfig)
    # The trees whole-project restores replaced (UndoRestore); made from the backend when not given.
    kept: undo.KeptTrees = None  # type: ignore[assignment]
    # Around the work on a project's pre-copy staging (:mod:`agent.precopy`, expiry, deletion).
    staging_locks: precopies.StagingLocks = field(default_factory=precopies.StagingLocks)

    def __post_init__(self) -> None:
        if self.kept is None:
            object.__setattr__(self, "kept", undo.KeptTrees(self.backend))


def snapshot_tags(
    *, project_id: str, host_id: str, operation_id: str, purpose: str, extra: Sequence[str], subpath: bool = False,
) -> list[str]:
    """The layout-v2 metadata every snapshot carries (with :data:`SUBPATH_SCOPE_TAG` when it
    holds one path only), then the caller's extra tags."""
    return [
        f"layout={LAYOUT}",
        f"project={project_id}",
        f"host={host_id}",
        f"op={operation_id}",
        f"purpose={purpose}",
        *([SUBPATH_SCOPE_TAG] if subpath else []),
        *extra,
    ]


def is_subpath_snapshot(snapshot: Snapshot) -> bool:
    """Whether the snapshot holds one path of its project only (a copy's temporary snapshot)."""
    return SUBPATH_SCOPE_TAG in snapshot.tags


# Snapshots of a state the project left behind: a source copy backed up before a move's cleanup
# removed it ("rescue"), the tree a whole restore replaced ("pre-restore"). They are restored by
# id; "latest" and EnsureProject never take one for the project's newest backup.
LEFT_BEHIND_PURPOSES = frozenset({"rescue", "pre-restore"})


def is_project_line(snapshot: Snapshot) -> bool:
    """Whether the snapshot is one of the project's own whole backups: not one path of it, not a
    state it left behind (:data:`LEFT_BEHIND_PURPOSES`)."""
    return not is_subpath_snapshot(snapshot) and ra.tag_map(snapshot.tags).get("purpose") not in LEFT_BEHIND_PURPOSES


def require_whole(snapshot: Snapshot, project_id: str) -> None:
    """:func:`require_layout_v2`, and FailedPrecondition for a snapshot of one path only: restoring
    it as the whole project would drop everything else."""
    require_layout_v2(snapshot, project_id)
    if is_subpath_snapshot(snapshot):
        raise errors.SnapshotNotUsable(
            f"snapshot {snapshot.short_id} holds one path of the project only (a copy's snapshot); "
            "restore a path of it with subpath",
            snapshot_id=snapshot.id, project_id=project_id,
        )


def require_layout_v2(snapshot: Snapshot, project_id: str) -> None:
    """Raise FailedPrecondition unless the snapshot is a layout-v2 snapshot of ``project_id``."""
    tags = ra.tag_map(snapshot.tags)
    if tags.get("layout") != LAYOUT:
        raise errors.SnapshotNotUsable(
            f"snapshot {snapshot.short_id} has no layout=v2 metadata; only layout v2 snapshots can be restored",
            snapshot_id=snapshot.id, project_id=project_id,
        )
    if tags.get("project") not in (None, project_id):
        raise errors.SnapshotNotUsable(
            f"snapshot {snapshot.short_id} belongs to project {tags['project']}, not {project_id}",
            snapshot_id=snapshot.id, project_id=project_id,
        )


async def find_snapshot(services: Services, repo: Repository, project_id: str, snapshot_id: str) -> Snapshot:
    """Resolve a snapshot id (or "latest") of the project; raises NotFound."""
    if snapshot_id == "latest":
        # "latest" is the newest backup of the whole project: never a copy's snapshot of one path,
        # nor a state the project left behind (see is_project_line).
        snapshots = [s for s in await services.engine.snapshots(repo, host=project_dir_name(project_id))
                     if is_project_line(s)]
        if not snapshots:
            raise errors.SnapshotNotFound(f"project {project_id} has no snapshot in {repo.label}",
                                          snapshot_id="latest", project_id=project_id)
        return max(snapshots, key=lambda s: s.time)
    snapshots = await services.engine.snapshots(repo, ids=[snapshot_id])
    if not snapshots:
        raise errors.SnapshotNotFound(f"snapshot {snapshot_id} not found in {repo.label}",
                                      snapshot_id=snapshot_id, project_id=project_id)
    return snapshots[0]


async def backup(
    context: OperationContext,
    services: Services,
    repo: Repository,
    *,
    purpose: str,
    extra_tags: Sequence[str],
    force: bool = False,
    subpath: str = "",
) -> Summary:
    """Back up the project (or with ``subpath`` only that file or directory of its home, see
    BackupRequest.subpath: never UP_TO_DATE, never the project's last backup)."""
    project_id = context.project_id
    services.backend.require_real(project_id)
    if not services.backend.exists(project_id):
        raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
    started = time.monotonic()
    if not force and not subpath:
        unchanged = await _unchanged_since_last_backup(services, repo, project_id)
        if unchanged is not None:
            context.progress("snapshot", percent=100.0, message=f"unchanged since snapshot {unchanged[:8]}")
            return Summary(snapshot_id=unchanged, duration_seconds=time.monotonic() - started,
                           state=OperationState.UP_TO_DATE)
    tags = snapshot_tags(
        project_id=project_id,
        host_id=services.host_id,
        operation_id=context.operation_id,
        purpose=purpose,
        extra=extra_tags,
        subpath=bool(subpath),
    )

    def on_status(status: BackupStatus) -> None:
        context.progress(
            "upload",
            percent=min(100.0, status.percent),
            bytes_done=status.bytes_done,
            bytes_total=status.bytes_total,
            files_done=status.files_done,
            files_total=status.files_total,
            bytes_per_second=status.bytes_done / status.seconds_elapsed if status.seconds_elapsed else 0.0,
            eta_seconds=status.seconds_remaining if status.seconds_remaining is not None else -1.0,
            message=status.current_files[0] if status.current_files else "",
        )

    if repo.s3 is not None:
        context.progress("snapshot", message=f"checking bucket {repo.s3.bucket}")
        if await s3_access.require(repo, create=services.create_buckets):
            context.progress("snapshot", message=f"created bucket {repo.s3.bucket}")
    context.progress("snapshot", message="preparing the source view")
    # Freshness compares changes with the moment the backup captured the data, not when it ended:
    # a write during the upload is not in the snapshot.
    captured_at = time.time()
    async with services.backend.backup_view(project_id, context.operation_id) as view:
        if subpath and view.project is not None:
            # Checked again in the tree the engine reads (a read-only snapshot on btrfs): a symlink
            # swapped in since the request must not lead the engine out of the project.
            await asyncio.to_thread(project_paths.check_source, view.project, subpath, field="subpath",
                                    check_link=False)
        what = f"{'project/' + subpath if subpath else 'the project'} to {repo.label}"
        # The engine initialises a new repository in the backup's own run: until its first
        # figures, that is what the time goes to (a few seconds of key derivation).
        if repo.kind == "local" and not os.path.lexists(repo.location):
            context.progress("init", message=f"initialising a new repository, then backing up {what}")
        elif repo.kind == "s3" and services.journal.last_backup(project_id) is None:
            context.progress("init", message=f"opening the repository (initialising it if new), then backing up {what}")
        else:
            context.progress("scan", message=f"backing up {what}")
        keeping = None
        if purpose == "move" and not await services.backend.is_frozen(project_id):
            # The catch-up backup after the move's freeze then skips the password's KDF.
            keeping = asyncio.create_task(_keep_key(services.engine, repo))
        try:
            outcome = await services.engine.backup(
                repo, view, host=project_dir_name(project_id), tags=tags, on_status=on_status, subpath=subpath
            )
        except BaseException:
            if keeping is not None:
                keeping.cancel()
                with contextlib.suppress(BaseException):
                    await keeping
            raise
        if keeping is not None and not await keeping:
            # Read beside a backup that made the repository (its init), the key was not there
            # yet: read now, in the background; the move's next runs here wait for that one read.
            services.housekeeping.later(f"keep the master key of {repo.label}", _keep_key(services.engine, repo))
    result = outcome.summary
    services.journal.record_snapshot(
        repository=repo.display, snapshot_id=result.snapshot_id, project_id=project_id, tags=tags,
        bytes=result.total_bytes_processed, files=result.total_files_processed, time=time.time(),
    )
    if not subpath:  # one path is not the whole project: freshness stays with the last full backup
        services.journal.record_backup(
            project_id, time=captured_at, snapshot_id=result.snapshot_id, operation_id=context.operation_id,
            generation=view.generation.as_text() if view.generation else None, repository=repo.display,
        )
    return Summary(
        snapshot_id=result.snapshot_id,
        bytes_added=result.data_added,
        bytes_processed=result.total_bytes_processed,
        files_processed=result.total_files_processed,
        files_new=result.files_new,
        files_changed=result.files_changed,
        duration_seconds=time.monotonic() - started,
        warnings=outcome.warnings,
    )


async def _keep_key(engine: Engine, repo: Repository) -> bool:
    """:meth:`Engine.keep_key`, its failure logged only (the backup beside it says what is wrong);
    whether it kept the key."""
    try:
        await engine.keep_key(repo)
    except Exception as exc:  # noqa: BLE001 - a key not kept only costs the next run its KDF
        log.info("engine.keep_key_failed", repository=repo.display, error=str(exc))
        return False
    return True


async def _unchanged_since_last_backup(services: Services, repo: Repository, project_id: str) -> str | None:
    """The snapshot id of the last backup into ``repo`` when the project's generation is still the one
    that backup read (recorded as a confirmation of that backup); None when anything changed or the
    backend cannot tell."""
    last = services.journal.backed_up_generation(project_id, repo.display)
    if last is None:
        return None
    # Taken before the read: every write made before it is in the generation read.
    checked_at = time.time()
    now = await services.backend.generation(project_id)
    if now is None or now.as_text() != last[0]:
        return None
    # The data equals that backup now: a change recorded before (one seen after the backup's
    # capture, so not known to be in it) is in it after all, and stops counting as unprotected.
    services.journal.confirm_unchanged(project_id, checked_at)
    return last[1]


async def restore(
    context: OperationContext, services: Services, repo: Repository, *, snapshot_id: str,
    resolved: Snapshot | None = None, source_project_id: str | None = None, force: bool = False,
) -> Summary:
    """Restore a whole snapshot into the project through staging, then swap it in. ``resolved``
    is the snapshot when the caller has looked it up already (its layout checked).

    A project with files is never simply replaced: when it has changes since its last backup
    they are first backed up as a pre-restore snapshot, or the restore is refused
    (FailedPrecondition) by the ``[restore] dirty`` policy, unless ``force``; and the replaced
    trees are kept for ``[restore] keep_replaced`` seconds (:func:`undo_restore`).

    With ``source_project_id`` (another project, whose repository ``repo`` is) the project becomes
    a clone of that project's snapshot: it has no backup of its own yet, so it is recorded as
    changed (never as backed up) and gets no restore receipt (the snapshot is not its own)."""
    project_id = context.project_id
    owner = source_project_id or project_id
    started = time.monotonic()
    backend = services.backend
    backend.require_real(project_id)
    if await backend.is_frozen(project_id):
        raise errors.ProjectFrozen(f"project {project_id} is frozen; thaw it before restoring", project_id=project_id)
    # What the project holds now, unless this is a clone (of a project that is not here).
    replaces = owner == project_id and await has_content(backend, project_id)
    pre_restore, dirty = "", False
    # Whether the project has unsaved changes is asked beside the restore into staging (the scan of
    # a tree swapped in since the last look costs a walk of it): the answer is awaited before the
    # restore's progress starts and long before any swap, and a project with changes has its
    # restore stopped and begun again after the pre-restore backup (see protect_unsaved).
    unsaved: asyncio.Task | None = None
    if replaces:
        if snapshot_id == "latest" and resolved is None:
            # Resolved before a pre-restore snapshot can become the newest one.
            resolved = await find_snapshot(services, repo, owner, snapshot_id)
            require_whole(resolved, owner)
            snapshot_id = resolved.id
        if force or not backend.exists(project_id):
            dirty, pre_restore = await protect_unsaved(context, services, repo, force=force)
        else:
            unsaved = asyncio.create_task(has_unsaved_changes(services, project_id))
    # An engine that reports its restore progress (restic >= 0.17: restore --json) is listened to.
    engine_reports = RESTORE_PROGRESS in await services.engine.features()
    lookup: asyncio.Task | None = None
    size_task: asyncio.Future
    known = known_snapshot(services, repo, owner, snapshot_id)
    if known is not None:
        # Written by this agent: its layout metadata and size are in the journal, which spares two
        # engine processes (each opening the repository) beside the restore.
        snapshot, size = known
        snapshot = resolved or snapshot  # the journal may hold a short id; a looked-up one is full
        require_whole(snapshot, owner)
        size_task = asyncio.get_running_loop().create_future()
        size_task.set_result(size)
    elif resolved is not None:
        snapshot = resolved
        require_whole(snapshot, owner)
        snapshot_id = snapshot.id
    elif snapshot_id == "latest":
        context.progress("resolve", message="looking up the latest snapshot")
        snapshot = await find_snapshot(services, repo, owner, snapshot_id)
        require_whole(snapshot, owner)
        snapshot_id = snapshot.id
    else:
        # The lookup runs beside the restore: the restore writes only staging, and
        # nothing is swapped in before the snapshot passed its layout check.
        lookup = asyncio.create_task(find_snapshot(services, repo, owner, snapshot_id))
    if known is None:
        size_task = asyncio.create_task(services.engine.restore_size(repo, snapshot_id))
    context.set_recovery(staging=context.operation_id, snapshot_id=snapshot_id)
    try:
        staging = await backend.prepare_staging(project_id, context.operation_id)
    except BaseException:
        for task in (lookup, size_task, unsaved):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (lookup, size_task, unsaved) if t is not None), return_exceptions=True)
        await backend.discard_staging(context.operation_id)
        raise

    def start_engine() -> asyncio.Task:
        if engine_reports:
            return asyncio.create_task(services.engine.restore(
                repo, snapshot_id, staging.view, on_status=functools.partial(restore_status, context)))
        return asyncio.create_task(services.engine.restore(repo, snapshot_id, staging.view))

    poller: asyncio.Task | None = None
    writer = asyncio.create_task(write_back_while_restoring(backend, staging))
    engine_run = start_engine()
    outcome = SwapOutcome()
    try:
        if unsaved is not None and await unsaved:
            # Changes since the last backup: nothing restored so far counts. The engine run is
            # stopped and its staging emptied, the changes backed up first (or the restore refused
            # by the policy), then the restore begins again into fresh staging.
            engine_run.cancel()
            await asyncio.gather(engine_run, return_exceptions=True)
            await backend.discard_staging(context.operation_id)
            dirty, pre_restore = await protect_unsaved(context, services, repo, force=False)
            staging = await backend.prepare_staging(project_id, context.operation_id)
            writer.cancel()
            writer = asyncio.create_task(write_back_while_restoring(backend, staging))
            engine_run = start_engine()
        # For an engine that does not report its restore progress itself the staged tree is measured.
        poller = None if engine_reports else asyncio.create_task(
            report_restore_progress(context, staging.project, staging.persist, size_task))
        context.progress("restore", message=f"restoring snapshot {snapshot_id[:8]}")
        try:
            await engine_run
        except errors.BucketsError:
            if lookup is not None:
                await lookup  # when the snapshot is missing or the password wrong, that error says it best
            raise
        if lookup is not None:
            snapshot = await lookup
            require_whole(snapshot, owner)
        if poller is not None:
            poller.cancel()
        writer.cancel()
        total = await restore_totals(size_task)
        await swap_restored(context, services, repo, staging, snapshot=snapshot, owner=owner, replaces=replaces,
                            pre_restore=pre_restore, total=total, outcome=outcome)
    finally:
        helpers = [task for task in (engine_run, unsaved, poller, writer, size_task, lookup) if task is not None]
        for task in helpers:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*helpers, return_exceptions=True)
        if outcome.swapped or outcome.unkept:
            after_swap(context, services, context.operation_id, outcome)
        else:
            await backend.discard_staging(context.operation_id)
    warnings = []
    if pre_restore:
        warnings.append(f"the project had changes since its last backup: they were backed up first as "
                        f"pre-restore snapshot {pre_restore}")
    elif dirty:
        warnings.append("the project had changes since its last backup that were not backed up first ("
                        + ("force" if force else "no home to back up") + "): they are only in the kept replaced tree")
    if warnings and outcome.kept:
        warnings.append(f"the replaced tree is kept for {services.restore_policy.keep_replaced:g} s: "
                        f"undo-restore {project_id} --operation {context.operation_id}")
    return Summary(
        snapshot_id=snapshot.id,
        bytes_processed=total.total_bytes if total else 0,
        files_processed=total.total_files if total else 0,
        duration_seconds=time.monotonic() - started,
        warnings=tuple(warnings),
        # Into fresh trees: everything the snapshot holds was read from the repository.
        restore_mode="whole",
        bytes_fetched=total.total_bytes if total else 0,
        files_fetched=total.total_files if total else 0,
    )


@dataclass
class SwapOutcome:
    """How far :func:`swap_restored` got: the staged trees are in place (``swapped``); the trees
    they replaced are in the kept place (``kept``), or could not be moved there (``unkept``)."""

    swapped: bool = False
    kept: bool = False
    unkept: bool = False


async def swap_restored(
    context: OperationContext, services: Services, repo: Repository, staging: Staging, *, snapshot: Snapshot,
    owner: str, replaces: bool, pre_restore: str, total: RestoreSize | None, outcome: SwapOutcome,
    recovery: dict | None = None,
) -> None:
    """Put ``staging`` (complete: it holds ``snapshot`` of project ``owner`` whole) in place of
    the project's trees, the way every whole restore does: the staged generation read before
    the swap, the swap plan in the recovery facts (with ``recovery``), the trees it replaces kept
    when ``replaces`` (UndoRestore), then the restore receipt and the backup record (or, for a
    clone of another project, a change). ``outcome`` tells the caller how far it got, also when
    this raises."""
    project_id = context.project_id
    backend = services.backend
    # Read before the swap: once swapped in, the project is live, and a write into it before
    # the generation was read would be recorded as backed up (and skipped by the next backup).
    generation = await backend.staged_generation(staging) if owner == project_id else None
    plan = backend.swap_plan(project_id, staging)
    # From here on no await until the swap and the keep are done: cancellation lands only
    # at an await, so it can never split them.
    keep = services.kept.prepare(
        operation_id=context.operation_id, project_id=project_id,
        keep_seconds=services.restore_policy.keep_replaced, pre_restore_snapshot=pre_restore,
        trees={"project": staging.project, "persist": staging.persist},
    ) if replaces else []
    receipt = {"restored": snapshot.id} if owner == project_id else {}
    context.set_recovery(swap=plan, keep=keep, **receipt, **(recovery or {}))
    backend.swap_in(plan)
    outcome.swapped = True
    outcome.unkept = bool(keep)
    # After the exchange the staged paths hold the replaced trees: moved to the kept place.
    undo.move_kept(keep)
    outcome.kept, outcome.unkept = bool(keep), False
    restored_at = time.time()
    if owner != project_id:  # a clone: nothing of it is in its own repository yet
        services.journal.mark_changed(project_id, restored_at)
    else:
        services.journal.record_restore(project_id, snapshot_id=snapshot.id, time=restored_at,
                                        operation_id=context.operation_id)
        # The project now equals the snapshot: as safe as right after a backup of it.
        services.journal.record_backup(
            project_id, time=restored_at, snapshot_id=snapshot.id, operation_id=context.operation_id,
            generation=generation.as_text() if generation else None, repository=repo.display,
        )
    context.progress(
        "swap",
        percent=100.0,
        bytes_done=total.total_bytes if total else 0,
        bytes_total=total.total_bytes if total else 0,
        files_done=total.total_files if total else 0,
        files_total=total.total_files if total else 0,
        message="restored tree swapped into place",
    )
    if outcome.kept:
        until = datetime.fromtimestamp(time.time() + services.restore_policy.keep_replaced, UTC)
        context.progress("swap", message=f"the replaced tree is kept until {until:%Y-%m-%d %H:%M:%S} UTC: "
                                         f"undo-restore {project_id} --operation {context.operation_id}")


def after_swap(context: OperationContext, services: Services, staging_id: str, outcome: SwapOutcome) -> None:
    """What follows a swap that happened (``outcome.swapped``) or half happened (``unkept``):
    the staging ``staging_id`` (the old trees) is removed in the background, the kept trees
    sealed; replaced trees that could not be kept stay in the staging."""
    if outcome.unkept:
        # The replaced trees could not be moved to the kept place: they stay in staging
        # rather than be removed with it (never destroy what no snapshot holds).
        log.error("restore.keep_failed", operation_id=context.operation_id)
        return
    # The project is in place: removing the old trees (all of a large project's old data)
    # only reclaims space, and the operation does not wait for it. Kept ones are moved
    # out of staging already; sealing them read-only need not be waited for either.
    services.housekeeping.later(f"remove the old trees of restore {context.operation_id}",
                                services.backend.discard_staging(staging_id))
    if outcome.kept:
        services.housekeeping.later(f"seal the trees restore {context.operation_id} replaced",
                                    services.kept.seal(context.operation_id))


async def has_content(backend: Backend, project_id: str) -> bool:
    """Whether the project's home or persist location holds anything a restore would replace."""
    def any_entry(path: Path) -> bool:
        return path.is_dir() and not path.is_symlink() and any(path.iterdir())
    return await asyncio.to_thread(
        lambda: any_entry(backend.home(project_id)) or any_entry(backend.persist(project_id)))


async def has_unsaved_changes(services: Services, project_id: str) -> bool:
    """Whether the project (which has a home) has changes since its last backup: what
    :func:`protect_unsaved` asks first, without acting on it. Raises what the scan raises."""
    await fresh.observe(services.journal, services.backend, project_id)
    return fresh.freshness(services.journal, project_id).dirty


async def protect_unsaved(
    context: OperationContext, services: Services, repo: Repository, *, force: bool
) -> tuple[bool, str]:
    """Before a whole restore replaces the project: when it has changes since its last backup,
    back them up (purpose pre-restore, tagged with this operation) and return that snapshot's id,
    or raise FailedPrecondition by the ``[restore] dirty = "refuse"`` policy; with ``force``
    neither (the replaced tree is still kept). A project without a home (EnsureProject over a
    left-over persist location) counts as changed, is neither backed up nor refused: its persist
    location is only kept. Returns (whether it had changes, the pre-restore snapshot id or "").
    A failed backup raises: the project has not been touched."""
    project_id = context.project_id
    if not services.backend.exists(project_id):
        # Only a persist location (EnsureProject into a missing home): freshness cannot tell
        # (no home to scan or read generations of) and there is no project to back up; its
        # persist location is kept like any replaced tree, and said so.
        context.progress("snapshot", message="the project has no home to back up; its persist location is kept "
                                             "(undo-restore)")
        return True, ""
    await fresh.observe(services.journal, services.backend, project_id)
    state = fresh.freshness(services.journal, project_id)
    if not state.dirty:
        return False, ""
    if force:
        context.progress("snapshot", message="the project has changes since its last backup; force: restoring "
                                             "without a pre-restore snapshot (the replaced tree is kept)")
        return True, ""
    if services.restore_policy.dirty == "refuse":
        raise errors.FailedPrecondition(
            f"project {project_id} has changes since its last backup"
            f"{' (' + state.last_backup_snapshot[:8] + ')' if state.last_backup_snapshot else ''}; "
            "back it up first or restore with force (the replaced tree is kept either way)"
        )
    context.progress("snapshot", message="the project has changes since its last backup: backing them up first "
                                         "(pre-restore snapshot)")
    summary = await backup(context, services, repo, purpose="pre-restore", extra_tags=[])
    context.progress("snapshot", message=f"pre-restore snapshot {summary.snapshot_id}")
    return True, summary.snapshot_id


async def restore_path(
    context: OperationContext, services: Services, repo: Repository, *, snapshot_id: str, subpath: str,
    target_path: str, source_project_id: str = "",
    on_conflict: placing.ConflictPolicy = placing.ConflictPolicy.OVERWRITE,
) -> Summary:
    """Restore one file or directory of the snapshot's project/ root to ``target_path`` in the home.

    The snapshot is one of ``source_project_id`` (default: this project; ``repo`` is that
    project's repository): how a copy between hosts brings another project's files here. The
    engine restores it into staging the user cannot reach (:mod:`agent.placing`), seen through a
    bind mount of the staging's descriptor, and it is put in place by ``on_conflict`` with
    renames between descriptors; what an overwrite replaced is removed with the staging, which
    is gone when the operation ends. The rest of the home is not touched.
    """
    started = time.monotonic()
    project_id = context.project_id
    source_project_id = source_project_id or project_id
    backend = services.backend
    backend.require_real(project_id)
    if not backend.exists(project_id):
        raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
    if await backend.is_frozen(project_id):
        raise errors.ProjectFrozen(f"project {project_id} is frozen; thaw it before restoring", project_id=project_id)
    known = known_snapshot(services, repo, source_project_id, snapshot_id)
    snapshot = known[0] if known else await find_snapshot(services, repo, source_project_id, snapshot_id)
    require_layout_v2(snapshot, source_project_id)

    async def produce(staging: placing.Staging) -> None:
        context.progress("restore", message=f"restoring {subpath} from snapshot {snapshot.short_id}")
        parents = "/".join(("project", *subpath.split("/")[:-1]))
        await asyncio.to_thread(usertree.make_dirs, staging.scratch, parents, 0o700)
        # The engine sees only the staging's scratch directory, bound by the descriptor the agent
        # made it with: nothing on its way is a path the user can change.
        view = backend.fd_view(context.operation_id, write={"target": staging.scratch})
        try:
            await services.engine.restore_path(repo, snapshot.id, f"/project/{subpath}",
                                               replace(view, root=view.root / "target"))
        finally:
            await asyncio.to_thread(remove_fd_view, view)
        try:
            restored = await asyncio.to_thread(usertree.open_dir, staging.scratch, parents)
        except OSError:
            restored = None
        try:
            if restored is None or await asyncio.to_thread(usertree.lstat, restored, subpath.rsplit("/", 1)[-1]) is None:
                raise errors.PathNotFound(f"{subpath!r} is not in snapshot {snapshot.short_id}",
                                          path=subpath, snapshot_id=snapshot.id)
            usertree.rename(restored, subpath.rsplit("/", 1)[-1], staging.item_dir, staging.item_name)
        finally:
            if restored is not None:
                os.close(restored)

    placed, size, entries = await placing.staged_put(
        context, backend, project_id, target_path, on_conflict, kind="restore", produce=produce
    )
    context.progress("restore", percent=100.0, message=f"{subpath} restored to {target_path} ({placed.describe()})")
    return Summary(snapshot_id=snapshot.id, bytes_processed=size, files_processed=entries,
                   duration_seconds=time.monotonic() - started)


def known_snapshot(
    services: Services, repo: Repository, project_id: str, snapshot_id: str
) -> tuple[Snapshot, RestoreSize] | None:
    """The snapshot and its size from the journal, when this agent wrote it for this project."""
    if snapshot_id == "latest":
        return None
    known = services.journal.known_snapshot(repo.display, snapshot_id)
    if known is None or known["project_id"] != project_id:
        return None
    snapshot = Snapshot(
        id=known["snapshot_id"], short_id=known["snapshot_id"][:8],
        time=datetime.fromtimestamp(known["time"], UTC), hostname=project_dir_name(project_id), paths=(),
        tags=tuple(known["tags"]), tree="", username="",
    )
    return snapshot, RestoreSize(total_bytes=known["bytes"], total_files=known["files"])


async def restore_totals(size_task: asyncio.Future) -> RestoreSize | None:
    # The size is for progress display only; failing to get it must not fail the restore.
    try:
        return await size_task
    except errors.BucketsError:
        return None


async def write_back_while_restoring(backend: Backend, staging: Staging) -> None:
    while True:
        await asyncio.sleep(RESTORE_POLL_INTERVAL)
        await backend.write_back(staging)


def restore_status(context: OperationContext, status: RestoreStatus) -> None:
    """A restore progress event from the engine's own report (below 100 %: the swap is to come)."""
    context.progress(
        "restore",
        percent=min(99.0, status.percent),
        bytes_done=status.bytes_done,
        bytes_total=status.bytes_total,
        files_done=status.files_done,
        files_total=status.files_total,
        bytes_per_second=status.bytes_done / status.seconds_elapsed if status.seconds_elapsed else 0.0,
        eta_seconds=-1.0,
    )


async def report_restore_progress(context: OperationContext, project, persist, size_task: asyncio.Task) -> None:
    """Restore progress events from the size of the staged trees, for an engine that reports
    none itself; runs until cancelled. A walk costs in proportion to what is staged so far, so
    the next one waits :data:`RESTORE_WALK_SPACING` times as long as the last took (at least
    :data:`RESTORE_POLL_INTERVAL`): the walks take a bounded share of the restore's time,
    whatever the project's size."""
    started = time.monotonic()
    delay = RESTORE_POLL_INTERVAL
    while True:
        await asyncio.sleep(delay)
        walk_began = time.monotonic()
        done_bytes, done_files = await bookkeeping.run(
            lambda: tuple(map(sum, zip(tree_size(project), tree_size(persist))))
        )
        delay = max(RESTORE_POLL_INTERVAL, RESTORE_WALK_SPACING * (time.monotonic() - walk_began))
        total = size_task.result() if size_task.done() and not size_task.exception() else None
        elapsed = time.monotonic() - started
        rate = done_bytes / elapsed if elapsed > 0 else 0.0
        fields = {"bytes_done": done_bytes, "files_done": done_files, "bytes_per_second": rate}
        if total is not None and total.total_bytes:
            fields.update(
                bytes_total=total.total_bytes,
                files_total=total.total_files,
                # The walk also meets what the engine keeps beside the files while it writes (and
                # the staging's own roots): never more done than there is.
                files_done=min(done_files, total.total_files) if total.total_files else done_files,
                percent=min(99.0, 100.0 * done_bytes / total.total_bytes),
                eta_seconds=(total.total_bytes - done_bytes) / rate if rate > 0 else -1.0,
            )
        context.progress("restore", **fields)


async def verify(context: OperationContext, services: Services, repo: Repository, *, read_data_subset: str) -> Summary:
    started = time.monotonic()
    context.progress("verify", message=f"checking {repo.label}")
    await services.engine.check(repo, read_data_subset=read_data_subset or None)
    return Summary(duration_seconds=time.monotonic() - started)


def sentinel_roots(backend: Backend, project_id: str) -> dict[str, Path]:
    """The live trees a sentinel path is relative to: ``project/`` the home, ``persist/`` the
    persist location."""
    return sentinel.roots_of(backend.home(project_id), backend.persist(project_id))


async def verify_sentinel(
    context: OperationContext, services: Services, *, location: sentinel.Sentinel, expected: bytes
) -> Summary:
    """Compare the live sentinel file on this host with ``expected``; raises NotFound (no project),
    InvalidArgument (a symlink leads out of its root), DataLoss (missing or different)."""
    started = time.monotonic()
    project_id = context.project_id
    if not services.backend.exists(project_id):
        raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
    context.progress("verify", message=f"reading sentinel {location.path}")
    problem = await asyncio.to_thread(
        sentinel.mismatch, location, expected, sentinel_roots(services.backend, project_id)
    )
    if problem is not None:
        # DATA_LOSS: what a move wrote before its freeze is not what this host has.
        raise errors.DataLoss(f"sentinel {location.path} {problem} on this host")
    context.progress("verify", percent=100.0, message=f"sentinel {location.path} matches")
    return Summary(duration_seconds=time.monotonic() - started)


def live_roots(backend: Backend, project_id: str) -> dict[str, Path]:
    """The live trees a snapshot's roots stand for: ``project`` the home, ``persist`` the
    persist location."""
    return {"project": backend.home(project_id), "persist": backend.persist(project_id)}


async def snapshot_manifest(
    context: OperationContext, services: Services, repo: Repository, snapshot_id: str, *,
    resolved: Snapshot | None = None, announce: bool = True,
) -> tuple[Snapshot, dict[str, tree_compare.Entry]]:
    """The project's snapshot ``snapshot_id`` and the manifest of its listing (both roots, with
    symlink targets); its counts are remembered for COUNTS. ``resolved``: the snapshot when the
    caller looked it up already (no second lookup); ``announce``: a progress event says so (not
    for a listing read beside other work, which says what it is doing itself). Raises NotFound
    (no such snapshot), FailedPrecondition (not a layout-v2 snapshot of the whole project)."""
    project_id = context.project_id
    snapshot = resolved or await find_snapshot(services, repo, project_id, snapshot_id)
    require_whole(snapshot, project_id)
    if announce:
        context.progress("verify", message=f"listing snapshot {snapshot.short_id}")
    # The lookup just made (here or by the caller) names the snapshot's tree: no second one.
    nodes = await services.engine.find(repo, snapshot.id, ["/project", "/persist"], tree=snapshot.tree)
    expected = tree_compare.manifest_from_nodes(nodes)
    if "project" not in expected:
        raise errors.FailedPrecondition(f"snapshot {snapshot.short_id} has no project/ root")
    services.snapshot_counts.remember(repo.display, (snapshot_id, snapshot.id),
                                      tree_compare.counts_of(expected))
    return snapshot, expected


async def verify_snapshot_tree(
    context: OperationContext, services: Services, repo: Repository, *, snapshot_id: str,
    location: sentinel.Sentinel | None = None, expected_sentinel: bytes = b"",
) -> Summary:
    """Prove the live home and persist location equal snapshot ``snapshot_id``: a manifest of
    the live trees against the snapshot's listing (:mod:`agent.tree_compare` says what is
    compared), and with ``location`` the sentinel holding ``expected_sentinel``. Raises
    NotFound (no project, no snapshot), DataLoss naming the first differences."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    if not backend.exists(project_id):
        raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
    snapshot, expected = await snapshot_manifest(context, services, repo, snapshot_id)
    context.progress("verify", message=f"comparing the live trees with snapshot {snapshot.short_id}")
    live = await asyncio.to_thread(live_tree.manifest, live_roots(backend, project_id))
    differences = tree_compare.compare(expected, live)
    if differences:
        raise errors.DataLoss(
            f"the live trees differ from snapshot {snapshot.short_id} in {len(differences)} place(s): "
            f"{tree_compare.describe(differences)}"
        )
    if location is not None:
        problem = await asyncio.to_thread(
            sentinel.mismatch, location, expected_sentinel, sentinel_roots(backend, project_id)
        )
        if problem is not None:
            raise errors.DataLoss(f"sentinel {location.path} {problem} on this host")
    counts = tree_compare.counts_of(expected)
    context.progress("verify", percent=100.0, files_done=counts.entries, files_total=counts.entries,
                     bytes_done=counts.bytes, bytes_total=counts.bytes,
                     message=f"the live trees equal snapshot {snapshot.short_id} ({counts.entries} entries)"
                     + (f", sentinel {location.path} matches" if location is not None else ""))
    return Summary(snapshot_id=snapshot.id, bytes_processed=counts.bytes, files_processed=counts.entries,
                   duration_seconds=time.monotonic() - started)


async def verify_counts(
    context: OperationContext, services: Services, repo: Repository, *, snapshot_id: str,
    removed_sentinel: sentinel.Sentinel | None = None, sentinel_content: bytes = b"",
) -> Summary:
    """The cheap check: the live trees' entries and bytes against snapshot ``snapshot_id``'s, as
    remembered from listing it (listed again when unknown). With ``removed_sentinel``: against
    the snapshot's less that file (``sentinel_content`` long), which must be gone from the live
    tree (a move removed it at finalize, after a tree verify proved it in the snapshot). Raises
    NotFound (no project, no snapshot), DataLoss naming what differs."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    if not backend.exists(project_id):
        raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
    expected = services.snapshot_counts.get(repo.display, snapshot_id)
    shown = snapshot_id[:8]
    if expected is None:
        snapshot, manifest = await snapshot_manifest(context, services, repo, snapshot_id)
        expected, shown = tree_compare.counts_of(manifest), snapshot.short_id
        if removed_sentinel is not None:
            held = manifest.get(removed_sentinel.path)
            if held is None or held.type != "file" or held.size != len(sentinel_content):
                raise errors.DataLoss(f"snapshot {shown} holds no sentinel {removed_sentinel.path} of "
                                      f"{len(sentinel_content)} bytes to leave out")
    if removed_sentinel is not None:
        problem = await asyncio.to_thread(sentinel.mismatch, removed_sentinel, sentinel_content,
                                          sentinel_roots(backend, project_id))
        if problem != "is missing":
            raise errors.DataLoss(f"sentinel {removed_sentinel.path} should be gone from this host and "
                                  + ("is still there" if problem is None else f"something else is there ({problem})"))
        expected = tree_compare.Counts(entries=expected.entries - 1, bytes=expected.bytes - len(sentinel_content))
    live = await asyncio.to_thread(live_tree.counts, live_roots(backend, project_id))
    differences = tree_compare.compare_counts(expected, live)
    if differences:
        raise errors.DataLoss(f"the live trees differ from snapshot {shown}: {'; '.join(differences)}")
    context.progress("verify", percent=100.0, files_done=expected.entries, files_total=expected.entries,
                     bytes_done=expected.bytes, bytes_total=expected.bytes,
                     message=f"the live trees hold snapshot {shown}'s {expected.entries} entries and "
                     f"{expected.bytes} bytes")
    return Summary(bytes_processed=expected.bytes, files_processed=expected.entries,
                   duration_seconds=time.monotonic() - started)


async def ensure_project(
    context: OperationContext, services: Services, repo: Repository, *, mode: str, quota_bytes: int | None,
    snapshot_id: str = "",
) -> Summary:
    """Before a project starts: NONE creates what is missing; AUTO restores the newest layout-v2
    snapshot into a missing or empty home (else creates it empty); REQUIRED is AUTO that fails
    FAILED_PRECONDITION when there is no backup. A home with files in it is never touched.

    With ``snapshot_id`` (AUTO or REQUIRED alike) exactly that snapshot is restored; see
    :func:`_ensure_snapshot`."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    backend.require_real(project_id)
    if snapshot_id:
        summary = await _ensure_snapshot(context, services, repo, snapshot_id, quota_bytes)
        await limit_restored(services, project_id, quota_bytes)
        return replace(summary, duration_seconds=time.monotonic() - started)
    if mode != "none" and await home_is_empty(backend, project_id):
        context.progress("resolve", message="looking for the newest backup")
        newest = await newest_v2_snapshot(services, repo, project_id)
        if newest is not None:
            # Restore into staging and swap: an empty home left by a failed start is replaced whole.
            summary = await restore(context, services, repo, snapshot_id=newest.id, resolved=newest)
            await limit_restored(services, project_id, quota_bytes)
            return _restored_summary(summary, duration_seconds=time.monotonic() - started)
        if mode == "required":
            raise errors.FailedPrecondition(
                f"project {project_id} is missing and has no layout-v2 backup in {repo.label}"
            )
    created = await backend.create(project_id, quota_bytes=quota_bytes)
    services.journal.ensure_projects([project_id])  # a new project is unprotected from its creation on
    context.progress("create", percent=100.0, message="project created" if created else "project exists")
    return Summary(duration_seconds=time.monotonic() - started)


async def limit_restored(services: Services, project_id: str, quota_bytes: int | None) -> None:
    """The home an EnsureProject restored gets the quota the request asked for (its staging had
    the agent's default: the home did not exist to take one from)."""
    if quota_bytes:
        await services.backend.create(project_id, quota_bytes=quota_bytes)  # sets the limit of an existing home


async def _ensure_snapshot(
    context: OperationContext, services: Services, repo: Repository, snapshot_id: str, quota_bytes: int | None
) -> Summary:
    """Restore exactly ``snapshot_id`` (full id or unique prefix) into a missing or empty home.

    A home with files is left alone when its restore receipt names that snapshot: the same
    request again, e.g. from a resumed move. Raises NotFound (no such snapshot or repository),
    FailedPrecondition (not layout v2, or the home has files that did not come from it).
    """
    project_id = context.project_id
    if not await home_is_empty(services.backend, project_id):
        receipt = services.journal.last_restore(project_id)
        # Either may be a prefix of the other: the request may name a prefix, and a receipt of a
        # snapshot this agent wrote itself may hold the short id restic < 0.15 reports.
        if receipt is not None and _same_snapshot(receipt["snapshot_id"], snapshot_id):
            await services.backend.create(project_id, quota_bytes=quota_bytes)  # only what is missing
            context.progress("restore", percent=100.0,
                             message=f"snapshot {snapshot_id[:8]} is already in place (restored by "
                                     f"operation {receipt['operation_id']})")
            return Summary(snapshot_id=receipt["snapshot_id"])
        raise errors.FailedPrecondition(
            f"project {project_id} already has files on this host that did not come from snapshot "
            f"{snapshot_id[:16]}; refusing to replace them"
        )
    known = known_snapshot(services, repo, project_id, snapshot_id)
    resolved = None
    if known is not None and len(known[0].id) != FULL_ID_LENGTH:
        # The caller is told the full id, which a journal record of a short one lacks.
        context.progress("resolve", message=f"looking up snapshot {snapshot_id[:8]}")
        resolved = await find_snapshot(services, repo, project_id, snapshot_id)
        require_whole(resolved, project_id)
    # Otherwise the restore looks the snapshot up beside the engine run (a missing one is
    # NOT_FOUND, one without layout v2 is refused before anything is swapped in).
    summary = await restore(context, services, repo, snapshot_id=snapshot_id, resolved=resolved)
    return _restored_summary(summary, duration_seconds=summary.duration_seconds)


def _restored_summary(summary: Summary, *, duration_seconds: float) -> Summary:
    """What an EnsureProject that restored reports of the restore: the snapshot, its size, how
    it was restored and what was fetched, the warnings."""
    return Summary(snapshot_id=summary.snapshot_id, bytes_processed=summary.bytes_processed,
                   files_processed=summary.files_processed, duration_seconds=duration_seconds,
                   warnings=summary.warnings, restore_mode=summary.restore_mode,
                   bytes_fetched=summary.bytes_fetched, files_fetched=summary.files_fetched,
                   files_deleted=summary.files_deleted)


def _same_snapshot(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


async def home_is_empty(backend: Backend, project_id: str) -> bool:
    home = backend.home(project_id)
    if not home.is_dir():
        return True
    return not await asyncio.to_thread(lambda: any(home.iterdir()))


async def newest_v2_snapshot(services: Services, repo: Repository, project_id: str) -> Snapshot | None:
    """The newest layout-v2 snapshot of the project in ``repo`` (None when there is none or no repository)."""
    try:
        with failures_expected(errors.NotFound):
            snapshots = await services.engine.snapshots(repo, host=project_dir_name(project_id))
    except errors.NotFound:
        return None
    usable = []
    for snapshot in snapshots:
        try:
            require_whole(snapshot, project_id)
        except errors.FailedPrecondition:
            continue
        if is_project_line(snapshot):
            usable.append(snapshot)
    return max(usable, key=lambda s: (s.time, s.id), default=None)


async def delete_project(context: OperationContext, services: Services, *, repo: Repository | None) -> Summary:
    """Remove the project from this host (home, persist, local snapshots) and, when ``repo`` is
    given, every object of its repository. Deleting what is already gone succeeds."""
    started = time.monotonic()
    project_id = context.project_id
    context.progress("delete", message="removing the project's subvolumes and snapshots")
    # Never thawed first: a frozen project is removed without a moment in which it is writable.
    await services.backend.delete(project_id)
    # Deleting the whole project is the one explicit removal: the trees restores replaced go too.
    await services.kept.remove_project(project_id)
    async with services.staging_locks.of(project_id):
        record = precopies.current(services.journal, project_id)
        if record is not None:
            context.progress("delete", message=f"removing the pre-copy {record.key}")
            await precopies.discard(services.journal, services.backend, record)
    services.journal.forget_project(project_id, repo.display if repo is not None else None)
    if repo is not None:
        context.progress("delete", message=f"deleting {repo.label}")
        if repo.s3 is not None:
            await asyncio.to_thread(buckets.delete_repository, repo.s3)
        else:
            await asyncio.to_thread(_remove_local_repository, Path(repo.location), repo.label)
    context.progress("delete", percent=100.0, message="deleted")
    return Summary(duration_seconds=time.monotonic() - started)


async def undo_restore(context: OperationContext, services: Services, *, restore_operation_id: str) -> Summary:
    """Put back the trees the whole-project restore ``restore_operation_id`` (empty: the newest
    kept one) replaced, by the same swap as a restore; the trees they replace are kept in turn
    (an undo can be undone). Raises NotFound (nothing kept, or expired), FailedPrecondition
    (frozen). Afterwards the project counts as changed since its last backup: its content is
    neither that backup nor the restore's snapshot."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    async with services.kept.lock:  # expiry must not remove what is being put back
        if not backend.exists(project_id):
            raise errors.ProjectNotFound(f"project {project_id} does not exist on this host", project_id=project_id)
        if await backend.is_frozen(project_id):
            raise errors.ProjectFrozen(f"project {project_id} is frozen; thaw it before undoing a restore", project_id=project_id)
        kept = services.kept.find(project_id, restore_operation_id)
        context.progress("swap", message=f"putting back the tree operation {kept.operation_id} replaced")
        await services.kept.unseal(kept)
        lives = {"project": backend.home(project_id), "persist": backend.persist(project_id)}
        pairs = [(tree, lives[role]) for role, tree in (("persist", kept.persist), ("project", kept.project))
                 if tree is not None]
        plan = backend.plan_swap(pairs)
        # After the swap the kept paths hold the trees they replaced; a live tree with nothing
        # kept for it (the replaced project had no persist location) is moved out whole.
        replaced = {role: tree if tree is not None else lives[role]
                    for role, tree in (("project", kept.project), ("persist", kept.persist))
                    if tree is not None or lives[role].exists()}
        # Recorded before the swap (errs towards dirty): the next backup must run, not be
        # skipped as UP_TO_DATE against the restore's generation, and the restore receipt no
        # longer describes the project.
        services.journal.undo_backup_state(project_id, time.time())
        # No await from here until the swap and the keep are done (see restore).
        keep = services.kept.prepare(
            operation_id=context.operation_id, project_id=project_id,
            keep_seconds=services.restore_policy.keep_replaced, trees=replaced,
        )
        context.set_recovery(undo=kept.operation_id, swap=plan, keep=keep)
        backend.swap_in(plan)
        undo.move_kept(keep)
        services.kept.drop_empty(kept.operation_id)
    services.housekeeping.later(f"seal the trees undo {context.operation_id} replaced",
                                services.kept.seal(context.operation_id))
    until = datetime.fromtimestamp(time.time() + services.restore_policy.keep_replaced, UTC)
    context.progress("swap", percent=100.0,
                     message=f"the tree operation {kept.operation_id} replaced is back; the tree it replaced is "
                             f"kept until {until:%Y-%m-%d %H:%M:%S} UTC: undo-restore {project_id} "
                             f"--operation {context.operation_id}")
    return Summary(duration_seconds=time.monotonic() - started)


def _remove_local_repository(path: Path, label: str) -> None:
    """Remove the local repository at ``path`` (``label``: how the error names it)."""
    if not path.exists():
        return
    # Only ever a directory that is a repository: a wrong path in a request must not remove anything else.
    if not ((path / "config").is_file() and (path / "keys").is_dir() and (path / "data").is_dir()):
        raise errors.FailedPrecondition(f"{label} is not a restic repository; not deleting it")
    fsops.remove_tree(path)


async def forget(
    context: OperationContext, services: Services, repo: Repository, *, policy: ra.KeepPolicy,
    protected: Sequence[str], prune: bool,
) -> Summary:
    """Apply a keep policy to the project's snapshots, never removing a protected one (by full id
    or a prefix of at least 8 digits), then prune when asked."""
    started = time.monotonic()
    project_id = context.project_id
    context.progress("forget", message="computing what the policy keeps")
    keep, remove = await services.engine.forget_plan(repo, host=project_dir_name(project_id), policy=policy)
    spared = [s for s in remove if any(s.id.startswith(p) or p.startswith(s.id) for p in protected)]
    doomed = [s.id for s in remove if s not in spared]
    await _forget_and_prune(context, services, repo, doomed, prune=prune)
    context.progress(
        "forget", percent=100.0,
        message=f"kept {len(keep) + len(spared)} snapshot(s) ({len(spared)} protected), forgot {len(doomed)}",
    )
    return Summary(duration_seconds=time.monotonic() - started, files_processed=len(doomed))


async def forget_exactly(
    context: OperationContext, services: Services, repo: Repository, *, snapshot_ids: Sequence[str], prune: bool,
) -> Summary:
    """Forget exactly ``snapshot_ids`` (full ids or unique prefixes) of the project, then prune
    when asked. Each must name one snapshot of this project, else nothing is forgotten:
    NotFound (no such snapshot), FailedPrecondition (one of another project), InvalidArgument
    (a prefix naming several)."""
    started = time.monotonic()
    project_id = context.project_id
    context.progress("forget", message=f"looking up {len(snapshot_ids)} snapshot(s)")
    found = await services.engine.snapshots(repo, ids=snapshot_ids)
    doomed = [_one_snapshot(found, wanted, project_id).id for wanted in snapshot_ids]
    doomed = list(dict.fromkeys(doomed))  # two prefixes of one snapshot
    await _forget_and_prune(context, services, repo, doomed, prune=prune)
    context.progress("forget", percent=100.0, message=f"forgot {len(doomed)} snapshot(s)")
    return Summary(duration_seconds=time.monotonic() - started, files_processed=len(doomed))


async def prune_only(context: OperationContext, services: Services, repo: Repository) -> Summary:
    """Remove from the repository the data no snapshot references; forget nothing."""
    started = time.monotonic()
    await _forget_and_prune(context, services, repo, [], prune=True)
    context.progress("prune", percent=100.0, message="pruned; no snapshot forgotten")
    return Summary(duration_seconds=time.monotonic() - started)


async def _forget_and_prune(
    context: OperationContext, services: Services, repo: Repository, doomed: list[str], *, prune: bool
) -> None:
    """Forget ``doomed`` (full ids) in the repository and the journal, then prune when asked."""
    if doomed:
        context.progress("forget", message=f"forgetting {len(doomed)} snapshot(s)")
        await services.engine.forget(repo, doomed)
        services.journal.forget_snapshots(repo.display, doomed)
    if prune:
        context.progress("prune", message="removing data no snapshot references")
        await services.engine.prune(repo)


def _one_snapshot(found: Sequence[Snapshot], wanted: str, project_id: str) -> Snapshot:
    matches = [s for s in found if s.id.startswith(wanted)]
    if not matches:
        raise errors.SnapshotNotFound(f"snapshot {wanted[:64]} not found", snapshot_id=wanted, project_id=project_id)
    if len(matches) > 1:
        raise errors.InvalidArgument(f"snapshot id prefix {wanted} names {len(matches)} snapshots")
    snapshot = matches[0]
    owner = ra.tag_map(snapshot.tags).get("project")
    if snapshot.hostname != project_dir_name(project_id) or owner not in (None, project_id):
        raise errors.SnapshotNotUsable(
            f"snapshot {snapshot.short_id} belongs to {owner or snapshot.hostname}, not project {project_id}",
            snapshot_id=snapshot.id, project_id=project_id,
        )
    return snapshot


def recover(record: OperationRecord, backend: Backend, journal: Journal | None = None) -> str | None:
    """Bring a project back to a whole state after the agent died during ``record``.

    A restore that had started its swap is finished (the staged tree was
    complete); one that had not is dropped, leaving the project as it was.
    Its staging (and the old trees swapped into it) is removed afterwards with
    every other stale staging (:meth:`Backend.remove_stale`). With ``journal``,
    a finished swap of the project's own snapshot gets its restore receipt (so
    the same EnsureProject again finds it in place), and a pre-copy it placed
    is used up. Returns a note for the operation's record.
    """
    note = None
    if record.recovery.get("path_staging"):
        placing.remove_recorded(record.recovery["path_staging"])
        note = "the restore or copy of a path had not finished; its staging was removed"
    elif record.recovery.get("partial_staging"):  # recorded by an agent before fd-based staging
        placing.remove_legacy(Path(record.recovery["partial_staging"]))
        note = "the restore or copy of a path had not finished; its staging was removed"
    if record.recovery.get("swap"):
        backend.swap_in(record.recovery["swap"])
        # What the swap replaced goes to the kept place before stale staging is removed.
        undo.move_kept(record.recovery.get("keep", []))
        note = "the restore had finished and its swap was completed during recovery"
        if journal is not None:
            _recover_records(record, journal)
        if record.recovery.get("undo"):
            note = "the undo had started its swap; the swap was completed during recovery"
    elif record.recovery.get("staging"):
        note = "the restore had not finished; the project was left as it was before"
    return note


def _recover_records(record: OperationRecord, journal: Journal) -> None:
    """After a swap completed in recovery: the receipt of the snapshot it placed (never a backup
    record: a write after the swap, before the agent died, may be in the project), and the
    pre-copy it placed used up."""
    restored = record.recovery.get("restored")
    if restored:
        receipt = journal.last_restore(record.project_id)
        if receipt is None or receipt["operation_id"] != record.id:
            now = time.time()
            journal.record_restore(record.project_id, snapshot_id=restored, time=now, operation_id=record.id)
            # A write after the swap may be in the project, made at the earliest when the
            # interrupted operation started.
            journal.mark_changed(record.project_id, now, since=record.started_at or record.created_at)
    if record.recovery.get("precopy"):
        journal.remove_precopy(record.project_id, record.recovery["precopy"])
