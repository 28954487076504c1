"""Drain: back up every dirty project on this host with bounded concurrency, before the host
is turned off, and report per project.

The drain is an operation of its own (kind DRAIN, no project) that does no engine work
itself: it looks at every project present on the host with the freshness rule
(:mod:`agent.freshness`, the same dirty decision GetHostStatus counts), reports the clean
ones UP_TO_DATE at once, and submits a BACKUP operation for each dirty one through the
operation manager, at most ``concurrency`` at a time. Each backup is an ordinary operation
(request id ``drain-<drain id>-<project id>``), so per-project serialisation, joining a
running backup, the host-wide limit and the journal all apply to it.

A failed project does not stop the others; the drain ends FAILED (with the code of the
first failure) when any project failed, SUCCEEDED otherwise, and its summary lists every
project. Cancelling the drain cancels the backups it started (not the ones it joined).

The agent's parts come in through :class:`DrainHooks`, so the logic here runs in unit
tests without an agent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

import structlog

from agent import errors, status_codes
from agent.freshness import Freshness
from agent.model import OperationError, OperationRecord, OperationState, ProjectOutcome, Summary
from agent.operations import FailedWithSummary, OperationContext
from agent.status_codes import code_name_for, error_class_for_code_name

log = structlog.get_logger("agent.drain")

DEFAULT_CONCURRENCY = 2
# How long to wait before submitting again when the host-wide queue is full.
QUEUE_FULL_RETRY = 0.5
# A project whose backup is refused this many times because other operations keep running
# on it is reported FAILED (ABORTED) rather than waited for without end.
MAX_CONFLICTS = 5
# Project ids named in the message of a failed drain (the summary lists all of them).
FAILED_IDS_SHOWN = 5
OK_STATES = frozenset({OperationState.SUCCEEDED, OperationState.SUCCEEDED_WITH_WARNINGS, OperationState.UP_TO_DATE})


@dataclass(frozen=True)
class DrainHooks:
    """What a drain uses of the agent.

    ``projects()`` the project ids present on the host; ``look(id)`` observes the project
    once and returns its freshness; ``freshness(id)`` the journal's freshness without a
    look; ``start_backup(request_id, project_id, force)`` submits a Backup as the RPC does
    and returns (record, joined), raising what the RPC raises; ``active(id)`` the operation
    running on the project or None; ``wait(op id)`` the record once it has ended;
    ``cancel(op id)`` cancels an operation.
    """

    projects: Callable[[], list[str]]
    look: Callable[[str], Awaitable[Freshness]]
    freshness: Callable[[str], Freshness]
    start_backup: Callable[[str, str, bool], tuple[OperationRecord, bool]]
    active: Callable[[str], OperationRecord | None]
    wait: Callable[[str], Awaitable[OperationRecord]]
    cancel: Callable[[str], Awaitable[OperationRecord]]


def effective_concurrency(requested: int, limit: int) -> int:
    """Backups a drain runs at once: ``requested`` (0: DEFAULT_CONCURRENCY), capped at ``limit``
    (the agent's max_concurrent_operations), at least 1."""
    return max(1, min(requested or DEFAULT_CONCURRENCY, limit))


def backup_request_id(drain_id: str, project_id: str, attempt: int = 0) -> str:
    """The request id of the drain's ``attempt``-th backup of a project (0 for the first)."""
    base = f"drain-{drain_id}-{project_id}"
    return base if attempt == 0 else f"{base}-{attempt}"


def outcome_of(project_id: str, record: OperationRecord) -> ProjectOutcome:
    """A project's outcome from the backup operation that ended."""
    return ProjectOutcome(
        project_id=project_id,
        state=record.state,
        snapshot_id=record.summary.snapshot_id if record.summary else "",
        error=record.error,
        operation_id=record.id,
    )


def failed(project_id: str, error: OperationError, operation_id: str = "") -> ProjectOutcome:
    return ProjectOutcome(project_id=project_id, state=OperationState.FAILED, error=error, operation_id=operation_id)


def outcome_message(outcome: ProjectOutcome) -> str:
    """One line per finished project: "<id>: snapshot 1a2b3c4d", "<id>: up to date",
    "<id>: FAILED <CODE>: message"."""
    head = f"{outcome.project_id}: "
    if outcome.state is OperationState.UP_TO_DATE:
        return head + "up to date"
    if outcome.state in OK_STATES:
        warned = " (with warnings)" if outcome.state is OperationState.SUCCEEDED_WITH_WARNINGS else ""
        return head + f"snapshot {outcome.snapshot_id[:8]}{warned}"
    error = outcome.error or OperationError("UNKNOWN", "no error recorded")
    return head + f"{outcome.state.value} {error.code}: {error.message}"


def failure_message(failed_ids: Iterable[str], total: int, shown: int = FAILED_IDS_SHOWN) -> str:
    """ "N of M projects failed: a, b, c and K more" (at most ``shown`` ids)."""
    ids = list(failed_ids)
    named = ", ".join(ids[:shown])
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{len(ids)} of {total} projects failed: {named}{more}"


def summarise(outcomes: Iterable[ProjectOutcome], children: dict[str, Summary], duration: float) -> Summary:
    """The drain's summary: every project's outcome by project id, the backups' figures added
    up, and their warnings prefixed with the project."""
    ordered = tuple(sorted(outcomes, key=lambda o: o.project_id))
    backups = [(o.project_id, children[o.operation_id]) for o in ordered if o.operation_id in children]
    return Summary(
        bytes_added=sum(s.bytes_added for _, s in backups),
        bytes_processed=sum(s.bytes_processed for _, s in backups),
        files_processed=sum(s.files_processed for _, s in backups),
        files_new=sum(s.files_new for _, s in backups),
        files_changed=sum(s.files_changed for _, s in backups),
        duration_seconds=duration,
        warnings=tuple(f"{project}: {warning}" for project, s in backups for warning in s.warnings),
        projects=ordered,
    )


class Drain:
    """One drain run; see the module docstring. Takes the operation's context, the hooks and
    the number of backups to run at once."""

    def __init__(self, context: OperationContext, hooks: DrainHooks, concurrency: int) -> None:
        self._context = context
        self._hooks = hooks
        self._concurrency = concurrency
        self._outcomes: dict[str, ProjectOutcome] = {}
        self._failures: list[ProjectOutcome] = []  # in the order they happened
        self._children: dict[str, Summary] = {}  # backup operation id -> its summary
        self._started: dict[str, str] = {}  # backups this drain started that still run -> project
        self._total = 0

    async def run(self) -> Summary:
        """Returns the summary; raises FailedWithSummary when a project failed."""
        began = time.monotonic()
        projects = self._hooks.projects()
        self._total = len(projects)
        self._context.progress("drain", message=f"looking at {self._total} projects")
        dirty: deque[tuple[str, float]] = deque()
        for project_id in projects:
            looked_at = time.time()
            try:
                fresh = await self._hooks.look(project_id)
            except errors.BucketsError as exc:
                # Err towards a backup: the backup reports the project's trouble if there is one.
                log.warning("drain.look_failed", project_id=project_id, error=str(exc))
                dirty.append((project_id, looked_at))
                continue
            if fresh.dirty:
                dirty.append((project_id, looked_at))
            else:
                self._done(ProjectOutcome(project_id=project_id, state=OperationState.UP_TO_DATE,
                                          snapshot_id=fresh.last_backup_snapshot))
        self._context.progress(
            "drain", milestone=True, percent=self._percent(),
            message=f"{self._total} projects: {len(dirty)} to back up, {self._total - len(dirty)} up to date",
        )
        workers = [asyncio.create_task(self._worker(dirty), name="drain-worker")
                   for _ in range(min(self._concurrency, len(dirty)))]
        try:
            await asyncio.gather(*workers)
        finally:
            # Also on cancellation; shielded so a second cancel cannot leave a backup running.
            await asyncio.shield(self._stop(workers))
        summary = summarise(self._outcomes.values(), self._children, time.monotonic() - began)
        if self._failures:
            first = self._failures[0].error or OperationError("INTERNAL", "")
            error = error_class_for_code_name(first.code)(
                failure_message((o.project_id for o in self._failures), self._total)
            )
            raise FailedWithSummary(error, summary)
        return summary

    async def _stop(self, workers: list[asyncio.Task]) -> None:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        running = list(self._started)
        for operation_id in running:
            await self._hooks.cancel(operation_id)
        await asyncio.gather(*(self._hooks.wait(op) for op in running), return_exceptions=True)

    def _percent(self) -> float:
        return 100.0 * len(self._outcomes) / self._total if self._total else 100.0

    def _done(self, outcome: ProjectOutcome) -> None:
        self._outcomes[outcome.project_id] = outcome
        if outcome.state not in OK_STATES:
            self._failures.append(outcome)
        log.info("drain.project", drain_id=self._context.operation_id, project_id=outcome.project_id,
                 state=outcome.state.value, operation_id=outcome.operation_id,
                 code=outcome.error.code if outcome.error else "")
        self._context.progress(
            "drain", milestone=True, percent=self._percent(),
            message=f"{outcome_message(outcome)} ({len(self._outcomes)} of {self._total} done)",
        )

    async def _worker(self, queue: deque[tuple[str, float]]) -> None:
        while queue:
            project_id, looked_at = queue.popleft()
            try:
                outcome = await self._back_up(project_id, looked_at)
            except errors.BucketsError as exc:
                outcome = failed(project_id, status_codes.operation_error(exc))
            except Exception as exc:  # a bug with one project must not stop the others
                log.exception("drain.project_crashed", project_id=project_id)
                outcome = failed(project_id, OperationError("INTERNAL", f"internal error: {exc!r}"))
            self._done(outcome)

    async def _back_up(self, project_id: str, looked_at: float) -> ProjectOutcome:
        """Back up one dirty project; ``looked_at`` is when the drain found it dirty."""
        attempt = conflicts = 0
        force = False
        while True:
            request_id = backup_request_id(self._context.operation_id, project_id, attempt)
            try:
                record, joined = self._hooks.start_backup(request_id, project_id, force)
            except errors.Conflict as exc:
                # Another operation (a restore, a delete, a backup asked differently) runs on the
                # project: let it end, then look again, since it may have made a backup needless.
                conflicts += 1
                active = self._hooks.active(project_id)
                if conflicts > MAX_CONFLICTS:
                    return failed(project_id, status_codes.operation_error(exc))
                if active is not None:
                    self._context.progress("drain", message=f"{project_id}: waiting for {active.kind.value} "
                                                            f"operation {active.id}")
                    await self._hooks.wait(active.id)
                fresh = self._hooks.freshness(project_id)
                if not fresh.dirty:
                    return ProjectOutcome(project_id=project_id, state=OperationState.UP_TO_DATE,
                                          snapshot_id=fresh.last_backup_snapshot)
                continue
            except errors.ResourceExhausted:
                await asyncio.sleep(QUEUE_FULL_RETRY)
                continue
            except errors.BucketsError as exc:
                return failed(project_id, status_codes.operation_error(exc))
            attempt += 1
            if not joined:
                self._started[record.id] = project_id
            final = await self._hooks.wait(record.id)
            self._started.pop(record.id, None)
            if final.summary is not None:
                self._children[final.id] = final.summary
            outcome = outcome_of(project_id, final)
            if outcome.state in OK_STATES and not force:
                fresh = self._hooks.freshness(project_id)
                if fresh.dirty and (fresh.last_backup or 0.0) < looked_at:
                    # A joined backup captured the project before the drain looked, or the backup
                    # found it unchanged by its own test: what the drain saw is in no snapshot yet.
                    force = True
                    continue
            return outcome


async def drain(context: OperationContext, *, hooks: DrainHooks, concurrency: int) -> Summary:
    """The DRAIN operation's job: see :class:`Drain`."""
    return await Drain(context, hooks, concurrency).run()
