"""The work of a move's pre-copy on its target host: PreCopy (restore a snapshot into a staging
kept for the move) and EnsureProject with a ``precopy_key`` (bring that staging to the catch-up
snapshot, reading only what differs, and put it in place).

The records and what a request can make of one are in :mod:`agent.precopies`; the way staged
trees are brought to another snapshot is :mod:`agent.catch_up`'s; the swap is the one every
whole restore does (:func:`agent.jobs.swap_restored`). Nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import replace

import structlog

from agent import catch_up, errors, fsops, jobs, live_tree, precopies, tree_compare
from agent.backends.base import Staging
from agent.engine.base import RESTORE_PROGRESS, RestoreSize, RestoreSummary, Snapshot
from agent.model import OperationState, Summary
from agent.operations import OperationContext
from agent.repository import Repository

log = structlog.get_logger("agent.precopy")

WHOLE = "whole"
INCREMENTAL = "incremental"


def refuse_present(services: jobs.Services, project_id: str) -> None:
    """FailedPrecondition when the project has a home on this host: a pre-copy is for a project
    that is placed elsewhere."""
    if services.backend.exists(project_id):
        raise errors.FailedPrecondition(
            f"project {project_id} is present on this host; a pre-copy is only made for a project placed elsewhere"
        )


async def precopy(
    context: OperationContext, services: jobs.Services, repo: Repository, *, snapshot_id: str, key: str,
) -> Summary:
    """Make the project's pre-copy under ``key`` hold snapshot ``snapshot_id`` (full id or unique
    prefix) whole: UP_TO_DATE at once when it does; brought there incrementally when the engine
    can (:func:`agent.precopies.plan`); else restored whole into a fresh staging (a pre-copy under
    another key is replaced). A failed or cancelled one is discarded; one interrupted by the
    agent's end is kept for the next PreCopy or EnsureProject to continue. Raises
    FailedPrecondition (the project is present here, the snapshot is not a whole layout-v2
    snapshot of it), NotFound (no such snapshot or repository)."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    backend.require_real(project_id)
    refuse_present(services, project_id)
    async with services.staging_locks.of(project_id):
        record = precopies.current(services.journal, project_id)
        if _holds(services, record, key=key, repository=repo.display, snapshot_id=snapshot_id):
            # Asked again for what it holds (a resumed move): no engine run.
            context.progress("restore", percent=100.0,
                             message=f"the pre-copy {key} holds snapshot {record.snapshot_id[:8]} already")
            return Summary(snapshot_id=record.snapshot_id, state=OperationState.UP_TO_DATE,
                           duration_seconds=time.monotonic() - started)
        snapshot, size = await _resolve(context, services, repo, snapshot_id)
        if record is not None and record.key != key:
            context.progress("restore", message=f"replacing the pre-copy {record.key}")
            await precopies.discard(services.journal, backend, record)
            record = None
        # The snapshot's listing, which the staged trees are checked against, is read from the
        # repository beside the restore (it does not depend on what is staged).
        listing = asyncio.ensure_future(jobs.snapshot_manifest(context, services, repo, snapshot.id,
                                                               resolved=snapshot, announce=False))
        try:
            outcome = await _make(context, services, repo, record, key=key, snapshot=snapshot, size=size)
            if outcome is None:
                return Summary(snapshot_id=snapshot.id, state=OperationState.UP_TO_DATE,
                               duration_seconds=time.monotonic() - started)
            mode, fetched, size = outcome
            await _write_to_disk(context, services, key=key)
            entries = await _check_staged(context, services, key=key, snapshot=snapshot, listing=listing)
        finally:
            if not listing.done():
                listing.cancel()
            with contextlib.suppress(BaseException):
                await listing
        context.progress("restore", percent=100.0, message=f"the pre-copy {key} holds snapshot {snapshot.short_id} "
                                                           f"({entries} entries checked)")
        return _summary(snapshot, mode, fetched, size, duration=time.monotonic() - started)


async def _check_staged(
    context: OperationContext, services: jobs.Services, *, key: str, snapshot: Snapshot,
    listing: asyncio.Future[tuple[Snapshot, dict[str, tree_compare.Entry]]],
) -> int:
    """The staged trees equal ``snapshot``'s listing (the comparison Verify SNAPSHOT_TREE makes
    of live trees), checked while the project still runs elsewhere: a pre-copy that is not the
    snapshot is discarded (DataLoss) before a move freezes anything. The listing is also what
    the catch-up's diff and the move's verify read again, from the engine's caches where it
    keeps them (rustic's tree blobs). Returns the entries compared."""
    record, staging = _current(services, context.project_id, key=key, doing="checked")
    context.progress("verify", message=f"checking the pre-copy against the listing of snapshot {snapshot.short_id}")
    _, expected = await listing
    staged = await asyncio.to_thread(live_tree.manifest, {"project": staging.project, "persist": staging.persist})
    differences = tree_compare.compare(expected, staged)
    if differences:
        await precopies.discard(services.journal, services.backend, record)
        raise errors.DataLoss(f"the pre-copy {key} differs from snapshot {snapshot.short_id} in "
                              f"{len(differences)} place(s): {tree_compare.describe(differences)}; it was discarded")
    return len(expected)


def _current(services: jobs.Services, project_id: str, *, key: str, doing: str) -> tuple[precopies.Record, Staging]:
    """The project's pre-copy record and its open staging; Internal when it vanished while
    being ``doing`` (another operation cannot take it: the staging lock is held)."""
    record = precopies.current(services.journal, project_id)
    staging = services.backend.open_staging(record.staging) if record is not None else None
    if record is None or staging is None:
        raise errors.Internal(f"the pre-copy {key} vanished while it was {doing}")
    return record, staging


async def _write_to_disk(context: OperationContext, services: jobs.Services, *, key: str) -> None:
    """The staged trees on disk before the pre-copy is reported held (syncfs of their
    filesystem): a move freezes right after its last round, and a frozen window whose catch-up
    shares the disk with the kernel writing back gigabytes of pre-copy is longer for it (4 GB:
    the catch-up's verify walk took 0.84 s instead of 0.24 s). Kept this way the pre-copy also
    outlives a crash of the host whole, as its journal record says it is."""
    _, staging = _current(services, context.project_id, key=key, doing="written to disk")
    context.progress("restore", message=f"writing the pre-copy {key} to disk")
    await asyncio.to_thread(fsops.syncfs, staging.project)


async def ensure(
    context: OperationContext, services: jobs.Services, repo: Repository, *, mode: str, quota_bytes: int | None,
    snapshot_id: str, key: str,
) -> Summary:
    """EnsureProject of ``snapshot_id`` with ``precopy_key`` ``key``: into a missing or empty home,
    the pre-copy under ``key`` is brought to the snapshot (:func:`agent.catch_up.bring_to`) and
    put in place by the whole restore's swap; the pre-copy is used up. Without a usable one the
    snapshot is restored whole (:func:`agent.jobs.ensure_project`) and a pre-copy under ``key``
    is discarded. A home with files: as :func:`agent.jobs.ensure_project` (in place already when
    its receipt names the snapshot, else FailedPrecondition). A failure of the catch-up
    discards the pre-copy; the agent's end keeps it (catching-up) for the next EnsureProject to
    continue."""
    started = time.monotonic()
    project_id = context.project_id
    backend = services.backend
    backend.require_real(project_id)

    async def whole() -> Summary:
        return await jobs.ensure_project(context, services, repo, mode=mode, quota_bytes=quota_bytes,
                                         snapshot_id=snapshot_id)

    if not await jobs.home_is_empty(backend, project_id):
        return await whole()
    async with services.staging_locks.of(project_id):
        record = precopies.current(services.journal, project_id)
        if record is None or record.key != key:
            context.progress("resolve", message=f"no pre-copy {key} on this host: restoring whole")
            summary = await whole()
            if record is not None:  # under another key: of no use once the project is here
                await precopies.discard(services.journal, backend, record)
            return summary
        snapshot, size = await _resolve(context, services, repo, snapshot_id)
        staging = backend.open_staging(record.staging)
        plan = precopies.plan(record, key=key, repository=repo.display, snapshot_id=snapshot.id,
                              features=await services.engine.features(), staging_whole=staging is not None)
        if plan.action == "whole":
            context.progress("resolve", message=f"the pre-copy {key} cannot be used ({plan.reason}): restoring whole")
            await precopies.discard(services.journal, backend, record)
            return await whole()
        assert staging is not None
        fetched = None
        if plan.action == "bring":
            fetched = await _guarded(context, services, record, _bring(
                context, services, repo, staging, record, snapshot=snapshot, base=plan.base_snapshot_id,
                reason=plan.reason))
        summary = await _place(context, services, repo, staging, record, snapshot=snapshot, size=size)
        await jobs.limit_restored(services, project_id, quota_bytes)
    if not summary.bytes_processed and fetched is not None:  # the engine's totals, when the size was not known
        summary = replace(summary, bytes_processed=_total_bytes(fetched), files_processed=_total_files(fetched))
    return replace(summary, duration_seconds=time.monotonic() - started, restore_mode=INCREMENTAL,
                   bytes_fetched=fetched.bytes_restored if fetched else 0,
                   files_fetched=fetched.files_restored if fetched else 0,
                   files_deleted=fetched.files_deleted if fetched else 0)


def _holds(services: jobs.Services, record: precopies.Record | None, *, key: str, repository: str,
           snapshot_id: str) -> bool:
    """Whether ``record`` is a complete pre-copy under ``key`` of ``repository`` holding
    ``snapshot_id`` (a full id or prefix), its staged trees there."""
    return (record is not None and record.key == key and record.repository == repository
            and record.state == precopies.COMPLETE and precopies.same_snapshot(record.snapshot_id, snapshot_id)
            and services.backend.open_staging(record.staging) is not None)


async def _resolve(
    context: OperationContext, services: jobs.Services, repo: Repository, snapshot_id: str,
) -> tuple[Snapshot, RestoreSize | None]:
    """The snapshot (full id) and, when this agent wrote it, its size. Raises NotFound,
    FailedPrecondition (not a whole layout-v2 snapshot of the project)."""
    project_id = context.project_id
    known = jobs.known_snapshot(services, repo, project_id, snapshot_id)
    if known is not None and len(known[0].id) == jobs.FULL_ID_LENGTH:
        snapshot, size = known
    else:
        context.progress("resolve", message=f"looking up snapshot {snapshot_id[:8]}")
        snapshot = await jobs.find_snapshot(services, repo, project_id, snapshot_id)
        size = known[1] if known is not None else None
    jobs.require_whole(snapshot, project_id)
    return snapshot, size


async def _make(
    context: OperationContext, services: jobs.Services, repo: Repository, record: precopies.Record | None, *,
    key: str, snapshot: Snapshot, size: RestoreSize | None,
) -> tuple[str, RestoreSummary | None, RestoreSize | None] | None:
    """Bring the pre-copy (``record``, None: none yet) to ``snapshot``: None when it holds it
    already, else (restore mode, what the engine fetched when it says, the snapshot's size
    when known)."""
    backend = services.backend
    project_id = context.project_id
    staging = backend.open_staging(record.staging) if record is not None else None
    plan = precopies.plan(record, key=key, repository=repo.display, snapshot_id=snapshot.id,
                          features=await services.engine.features(), staging_whole=staging is not None)
    if plan.action == "up-to-date":
        return None
    if plan.action == "bring":
        assert record is not None and staging is not None
        fetched = await _guarded(context, services, record, _bring(
            context, services, repo, staging, record, snapshot=snapshot, base=plan.base_snapshot_id,
            reason=plan.reason))
        return INCREMENTAL, fetched, size
    if record is not None:
        context.progress("restore", message=f"discarding the pre-copy {record.key} ({plan.reason})")
        await precopies.discard(services.journal, backend, record)
    name = precopies.staging_id(project_id, key)
    # Whatever an earlier pre-copy under this name left without a record goes first.
    await backend.discard_staging(name)
    now = time.time()
    # Recorded before the staging exists: a staging the agent dies preparing is kept at start
    # (remove_stale) and found not whole by the next request, which restores whole again.
    services.journal.put_precopy(project_id, key=key, staging=name, repository=repo.display,
                                 snapshot_id=snapshot.id, state=precopies.RESTORING, now=now)
    fresh = precopies.current(services.journal, project_id)
    assert fresh is not None
    size = await _guarded(context, services, fresh, _restore_whole(context, services, repo, fresh,
                                                                   snapshot=snapshot, size=size))
    return WHOLE, None, size


async def _guarded(context: OperationContext, services: jobs.Services, record: precopies.Record, work):
    """Run ``work`` on the pre-copy ``record``; when it fails or is cancelled the pre-copy is
    discarded (its trees are in no known state), unless the agent is shutting down (then it is
    kept, recorded as unfinished, for the next request to continue)."""
    try:
        return await work
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError) and context.shutting_down:
            raise
        try:
            await precopies.discard(services.journal, services.backend, record)
        except Exception as cleanup:  # the error that ended the work is the one to report
            log.error("precopy.discard_failed", project_id=record.project_id, staging=record.staging,
                      error=repr(cleanup))
        raise


async def _restore_whole(
    context: OperationContext, services: jobs.Services, repo: Repository, record: precopies.Record, *,
    snapshot: Snapshot, size: RestoreSize | None,
) -> RestoreSize | None:
    """Restore ``snapshot`` whole into a fresh staging for ``record`` (state restoring), with the
    progress a whole restore reports; the record is complete afterwards. Returns the snapshot's
    size (None when the engine could not tell)."""
    backend = services.backend
    staging = await backend.prepare_staging(context.project_id, record.staging)
    engine_reports = RESTORE_PROGRESS in await services.engine.features()
    if size is not None:
        size_task: asyncio.Future = asyncio.get_running_loop().create_future()
        size_task.set_result(size)
    else:
        size_task = asyncio.create_task(services.engine.restore_size(repo, snapshot.id))
    poller = None if engine_reports else asyncio.create_task(
        jobs.report_restore_progress(context, staging.project, staging.persist, size_task))
    writer = asyncio.create_task(jobs.write_back_while_restoring(backend, staging))
    try:
        context.progress("restore", message=f"restoring snapshot {snapshot.short_id} into the pre-copy {record.key}")
        if engine_reports:
            await services.engine.restore(repo, snapshot.id, staging.view,
                                          on_status=functools.partial(jobs.restore_status, context))
        else:
            await services.engine.restore(repo, snapshot.id, staging.view)
        if poller is not None:
            poller.cancel()
        size = await jobs.restore_totals(size_task)
    finally:
        helpers = [task for task in (poller, writer, size_task) if task is not None]
        for task in helpers:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*helpers, return_exceptions=True)
    services.journal.set_precopy_state(context.project_id, state=precopies.COMPLETE, snapshot_id=snapshot.id,
                                       base_snapshot_id=None, now=time.time())
    return size


async def _bring(
    context: OperationContext, services: jobs.Services, repo: Repository, staging: Staging,
    record: precopies.Record, *, snapshot: Snapshot, base: str | None, reason: str,
) -> RestoreSummary:
    """Bring the pre-copy's staged trees to ``snapshot`` (:func:`agent.catch_up.bring_to`) from
    ``base`` (the snapshot they hold whole; None: an unfinished restore of ``snapshot``),
    recorded catching-up (or restoring) while it runs and complete afterwards."""
    project_id = context.project_id
    services.journal.set_precopy_state(
        project_id, state=precopies.CATCHING_UP if base else precopies.RESTORING, snapshot_id=snapshot.id,
        base_snapshot_id=base, now=time.time())
    context.progress("restore", message=f"bringing the pre-copy {record.key} to snapshot {snapshot.short_id} "
                                        f"({reason})")
    writer = asyncio.create_task(jobs.write_back_while_restoring(services.backend, staging))
    try:
        fetched = await catch_up.bring_to(services.engine, repo, staging, snapshot.id, base_snapshot_id=base,
                                          on_status=functools.partial(jobs.restore_status, context),
                                          tree=snapshot.tree)
    finally:
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
    services.journal.set_precopy_state(project_id, state=precopies.COMPLETE, snapshot_id=snapshot.id,
                                       base_snapshot_id=None, now=time.time())
    context.progress("restore", message=f"fetched {fetched.files_restored} file(s), {fetched.bytes_restored} bytes; "
                                        f"deleted {fetched.files_deleted}")
    return fetched


async def _place(
    context: OperationContext, services: jobs.Services, repo: Repository, staging: Staging,
    record: precopies.Record, *, snapshot: Snapshot, size: RestoreSize | None,
) -> Summary:
    """Put the complete pre-copy in place by the whole restore's swap and use it up."""
    project_id = context.project_id
    backend = services.backend
    if await backend.is_frozen(project_id):
        raise errors.ProjectFrozen(f"project {project_id} is frozen; thaw it before restoring", project_id=project_id)
    # A missing or empty home; a left-over persist location is kept like any replaced tree.
    replaces = await jobs.has_content(backend, project_id)
    pre_restore = ""
    if replaces:
        _, pre_restore = await jobs.protect_unsaved(context, services, repo, force=False)
    outcome = jobs.SwapOutcome()
    try:
        await jobs.swap_restored(context, services, repo, staging, snapshot=snapshot, owner=project_id,
                                 replaces=replaces, pre_restore=pre_restore, total=size, outcome=outcome,
                                 recovery={"precopy": record.staging})
    finally:
        if outcome.swapped or outcome.unkept:
            services.journal.remove_precopy(project_id, record.staging)
            jobs.after_swap(context, services, record.staging, outcome)
    warnings = ()
    if outcome.kept:
        warnings = (f"the project's left-over persist location was replaced and is kept for "
                    f"{services.restore_policy.keep_replaced:g} s: undo-restore {project_id} "
                    f"--operation {context.operation_id}",)
    return Summary(snapshot_id=snapshot.id, bytes_processed=size.total_bytes if size else 0,
                   files_processed=size.total_files if size else 0, warnings=warnings)


def _summary(snapshot: Snapshot, mode: str, fetched: RestoreSummary | None, size: RestoreSize | None, *,
             duration: float) -> Summary:
    """A PreCopy's summary: a whole restore fetched the whole snapshot; an incremental one what
    the engine says it read."""
    total_bytes = size.total_bytes if size else (_total_bytes(fetched) if fetched else 0)
    total_files = size.total_files if size else (_total_files(fetched) if fetched else 0)
    if fetched is None:
        return Summary(snapshot_id=snapshot.id, bytes_processed=total_bytes, files_processed=total_files,
                       duration_seconds=duration, restore_mode=mode, bytes_fetched=total_bytes,
                       files_fetched=total_files)
    return Summary(snapshot_id=snapshot.id, bytes_processed=total_bytes, files_processed=total_files,
                   duration_seconds=duration, restore_mode=mode, bytes_fetched=fetched.bytes_restored,
                   files_fetched=fetched.files_restored, files_deleted=fetched.files_deleted)


def _total_bytes(fetched: RestoreSummary) -> int:
    # restic's summary over an existing tree counts only what it wrote in its total: the
    # snapshot's files are those written and those skipped as already right.
    return max(fetched.bytes_total, fetched.bytes_restored + fetched.bytes_skipped)


def _total_files(fetched: RestoreSummary) -> int:
    return max(fetched.files_total, fetched.files_restored + fetched.files_skipped)
