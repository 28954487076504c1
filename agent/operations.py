"""Durable operations: idempotency, per-project serialisation, the host-wide queue,
progress events with sequence numbers, cancellation, and watchers.

A job is an async callable taking an :class:`OperationContext` and returning a
:class:`~agent.model.Summary`; it raises :class:`~agent.errors.BucketsError`
to fail. The manager owns every state change and persists it (with an event)
before anyone can observe it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Awaitable, Callable, Mapping

import structlog

from agent import errors, ids, slots, status_codes
from agent.journal import Journal
from agent.model import (
    MUTATING_KINDS,
    OperationError,
    OperationKind,
    OperationRecord,
    OperationState,
    ProgressEvent,
    Summary,
)
from agent.status_codes import code_name_for

log = structlog.get_logger("agent.operations")

Job = Callable[["OperationContext"], Awaitable[Summary]]

# Progress from engines can arrive many times a second; events of the same phase
# closer together than this are coalesced (the newest wins).
PROGRESS_INTERVAL = 0.25
# Events kept in memory per live operation; older ones are read from the journal.
LIVE_EVENT_WINDOW = 2000


class FailedWithSummary(Exception):
    """Raised by a job that failed as a whole but has a summary worth keeping (a drain whose
    projects partly failed): the operation ends FAILED with ``error`` and keeps ``summary``."""

    def __init__(self, error: errors.BucketsError, summary: Summary) -> None:
        super().__init__(error.message)
        self.error = error
        self.summary = summary


def fingerprint(kind: OperationKind, project_id: str, params: dict) -> str:
    """A stable digest of what an operation was asked to do (secrets must not be in ``params``)."""
    canonical = json.dumps({"kind": kind.value, "project": project_id, "params": params}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class _Live:
    record: OperationRecord
    events: deque[ProgressEvent] = field(default_factory=lambda: deque(maxlen=LIVE_EVENT_WINDOW))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    takes_slot: bool = True
    priority: int = slots.OPERATOR
    # A scheduled backup: it gives way to the requests of operators and the hub (see submit).
    yields: bool = False
    # The operation this one waits for before it takes a slot (a request behind a scheduled backup).
    after: str = ""
    # Why it was cancelled, when a request cancelled it (its terminal message); "" otherwise.
    cancel_reason: str = ""
    last_progress_at: float = 0.0
    pending_progress: dict | None = None
    flush_handle: asyncio.TimerHandle | None = None


class Yielding(enum.Enum):
    """What a request does about the unfinished scheduled (yielding) operation of its project."""

    SUPERSEDE = "supersede"  # it has not started: it ends CANCELLED, the request runs in its place
    FOLLOW = "follow"  # the request waits for it to end, then runs its own job
    CANCEL = "cancel"  # it is cancelled, and the request waits for it to end, then runs


def yielding(*, scheduled_state: OperationState, scheduled_kind: OperationKind, kind: OperationKind) -> Yielding:
    """How a request of ``kind`` gets past the project's scheduled operation in ``scheduled_state``.

    A scheduled backup is opportunistic: every request on the project goes first. Not started
    yet, it is superseded. Running, a Backup request follows it (the running capture is useful;
    the request's own job answers UP_TO_DATE without an engine run when nothing changed since),
    and any other request (restore, delete, ensure, verify, forget, copy) cancels it: it would
    otherwise wait for a backup of data it is about to replace or remove. Cancelled already (a
    freeze, an operator), the request only waits for it to end."""
    if scheduled_state is OperationState.PENDING:
        return Yielding.SUPERSEDE
    if scheduled_state is OperationState.CANCELLING:
        return Yielding.FOLLOW
    if kind is OperationKind.BACKUP and scheduled_kind is OperationKind.BACKUP:
        return Yielding.FOLLOW
    return Yielding.CANCEL


class OperationContext:
    """Handed to a job: report progress, record recovery facts, add warnings."""

    def __init__(self, manager: "OperationManager", live: _Live) -> None:
        self._manager = manager
        self._live = live
        self.warnings: list[str] = []

    @property
    def operation_id(self) -> str:
        return self._live.record.id

    @property
    def project_id(self) -> str:
        return self._live.record.project_id

    @property
    def params(self) -> dict:
        return self._live.record.params

    @property
    def shutting_down(self) -> bool:
        """Whether the agent is shutting down: a cancellation now is an interruption (the
        operation ends INTERRUPTED), not a caller's cancel."""
        return self._manager._closing

    def progress(self, phase: str, *, milestone: bool = False, **fields) -> None:
        """Report progress (fields of :class:`ProgressEvent`: percent, bytes_done, ..., message).

        Reports closer together than PROGRESS_INTERVAL are coalesced (the newest wins) unless
        ``milestone`` is set: a milestone (e.g. "project X done") is always its own event."""
        self._manager._progress(self._live, phase, fields, milestone=milestone)

    def set_recovery(self, **facts) -> None:
        """Persist facts that recovery needs if the agent dies during this operation."""
        self._live.record.recovery.update(facts)
        self._manager._journal.update_operation(self._live.record)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


FIGURES = ("percent", "bytes_done", "bytes_total", "files_done", "files_total")
_DONE_STATES = (OperationState.SUCCEEDED, OperationState.SUCCEEDED_WITH_WARNINGS, OperationState.UP_TO_DATE)


def _figures_of(event: ProgressEvent) -> dict:
    return {name: getattr(event, name) for name in FIGURES}


def carried_figures(previous: dict, fields: dict) -> dict:
    """A report's ``fields`` within the phase whose newest figures are ``previous``: a figure the
    report leaves out keeps its value (a message-only event does not read 0 B, 0%), and the
    percent never goes back within a phase."""
    carried = {name: previous[name] for name in FIGURES if name in previous and name not in fields}
    carried.update(fields)
    if "percent" in previous:
        carried["percent"] = max(carried.get("percent", 0.0), previous["percent"])
    return carried


def final_figures(last: dict, summary: Summary | None, state: OperationState) -> dict:
    """The figures of an operation's terminal event: what its last progress said (``last``: the
    FIGURES of its newest report), completed for a finished one from its summary, so the end
    never reads 0 B or falls short of 100%. A failed or cancelled one keeps where it stopped."""
    figures = {name: last[name] for name in FIGURES if name in last}
    if state not in _DONE_STATES:
        return figures
    if summary is not None and summary.bytes_processed:
        figures["bytes_done"] = figures["bytes_total"] = summary.bytes_processed
    elif figures.get("bytes_total"):
        figures["bytes_done"] = figures["bytes_total"]
    if summary is not None and summary.files_processed:
        figures["files_done"] = figures["files_total"] = summary.files_processed
    elif figures.get("files_total"):
        figures["files_done"] = figures["files_total"]
    figures["percent"] = 100.0
    return figures


class OperationManager:
    """Takes the journal and the host-wide limits; see the module docstring."""

    def __init__(
        self,
        journal: Journal,
        *,
        max_running: int,
        max_queued: int,
        keepalive_interval: float = 5.0,
        recover: Callable[[OperationRecord], str | None] | None = None,
        on_finish: Callable[[OperationRecord], None] | None = None,
    ) -> None:
        self._journal = journal
        # Told of every operation this process ends (not of those recover_interrupted closes:
        # they ran in an earlier process).
        self._on_finish = on_finish or (lambda record: None)
        self._slots = slots.PrioritySlots(max_running)
        self._max_queued = max_queued
        self._max_running = max_running
        self._keepalive_interval = keepalive_interval
        self._live: dict[str, _Live] = {}
        self._recover = recover
        self._closing = False

    # ------------------------------------------------------------ start-up

    def recover_interrupted(self, notes: Mapping[str, str] | None = None) -> list[OperationRecord]:
        """Mark every operation a previous agent left unfinished INTERRUPTED.

        ``recover`` (given at construction) runs first for each one and may
        return a note (e.g. "restore completed during recovery") for the
        terminal event; ``notes`` adds one per operation id (e.g. what became
        of its repository locks). Returns the records as they are now.
        """
        recovered = []
        for record in self._journal.unfinished_operations():
            note = ""
            if self._recover is not None:
                try:
                    note = self._recover(record) or ""
                except Exception as exc:  # recovery must never stop the agent from starting
                    log.error("recovery.failed", operation_id=record.id, error=repr(exc))
                    note = f"recovery failed: {exc}"
            if notes and notes.get(record.id):
                note = "; ".join(filter(None, (note, notes[record.id])))
            message = (
                "the agent stopped before this operation started"
                if record.state is OperationState.PENDING
                else "the agent stopped while this operation ran"
            ) + (f"; {note}" if note else "")
            record.state = OperationState.INTERRUPTED
            record.finished_at = time.time()
            record.error = OperationError(code="ABORTED", message=message, reason="AGENT_STOPPED")
            self._append(record, phase="done", message=message, terminal=True)
            log.warning("operation.interrupted", operation_id=record.id, kind=record.kind.value, note=note)
            recovered.append(record)
        return recovered

    # ------------------------------------------------------------ submit

    def submit(
        self,
        *,
        kind: OperationKind,
        project_id: str,
        request_id: str,
        params: dict,
        job: Job,
        joinable: bool = False,
        takes_slot: bool = True,
        yields: bool = False,
    ) -> tuple[OperationRecord, bool]:
        """Start (or find) an operation.

        Returns (record, joined): joined is True when the call returned an
        operation that already existed (same request id, or a running backup
        joined). Raises InvalidArgument (bad request id), AlreadyExists (request
        id reused with other parameters), Conflict (another operation runs on
        the project), ResourceExhausted (queue full), Unavailable (shutting down).

        A host-wide operation (a drain) has an empty ``project_id``: at most one
        runs at a time. ``takes_slot=False`` runs the job without one of the
        host-wide running slots: for a job that only submits and waits for other
        operations (which take their own), and would otherwise starve them.

        ``yields=True`` (the scheduler's backups) makes the operation give way to any other
        request on its project (:func:`yielding`): while it still waits for a slot, the request
        supersedes it (it ends CANCELLED, its job never ran, and the request runs in its place);
        once it runs, a Backup request becomes its successor, which waits for it to end and then
        backs up on its own (the job's unchanged test answers UP_TO_DATE without an engine run
        when nothing changed since the scheduled capture), and a request of another kind cancels
        it and becomes its successor the same way (the job stops its engine before it ends, so
        the successor never runs beside it; the project stays unprotected and due). A successor
        is never answered with the scheduled backup's snapshot as such: that capture may predate
        a write the caller saw acknowledged before its call (a move's final backup after a
        freeze relies on this). A yielding operation also waits behind every other one for a
        running slot.
        """
        request_id = ids.request_id(request_id)
        digest = fingerprint(kind, project_id, params)
        existing = self._journal.find_by_request_id(request_id)
        if existing is not None:
            if existing.fingerprint != digest:
                raise errors.RequestIdReused(
                    f"request_id {request_id!r} was used for operation {existing.id} with other parameters",
                    request_id=request_id, operation_id=existing.id, project_id=existing.project_id,
                )
            return self._current(existing), True
        if self._closing:
            raise errors.Unavailable("the agent is shutting down")
        superseded: _Live | None = None
        cancelled: _Live | None = None
        after = ""
        if kind in MUTATING_KINDS or kind in (OperationKind.VERIFY, OperationKind.DRAIN):
            active_live = self._active_live(project_id)
            if active_live is not None:
                active = active_live.record
                if joinable and active.kind is kind and active.fingerprint == digest:
                    # A retry of this request must find the same operation after it ended.
                    self._journal.add_request_alias(request_id, active.id)
                    return active, True
                if active_live.yields and not yields:
                    way = yielding(scheduled_state=active.state, scheduled_kind=active.kind, kind=kind)
                    if way is Yielding.SUPERSEDE:
                        superseded = active_live
                    else:
                        after = active.id
                        cancelled = active_live if way is Yielding.CANCEL else None
                else:
                    where = f"project {project_id}" if project_id else "this host"
                    raise errors.Conflict(
                        f"{where} has a running {active.kind.value} operation {active.id}"
                        f" ({active.state.value})",
                        operation_id=active.id, operation_kind=active.kind.value,
                        operation_state=active.state.value, project_id=project_id,
                    )
        # Counted from the records, not the semaphore: tasks submitted in this same
        # loop iteration have not taken their slot yet.
        # An operation without a slot (a drain) waits for others only: it takes no place either.
        if takes_slot and sum(1 for live in self._live.values() if live.takes_slot) >= (
            self._max_running + self._max_queued
        ):
            raise errors.ResourceExhausted(
                f"{self._max_running} operations run and {self._queued_count()} wait; the queue is full"
            )
        record = OperationRecord(
            id=str(uuid.uuid4()),
            request_id=request_id,
            kind=kind,
            project_id=project_id,
            fingerprint=digest,
            params=params,
            state=OperationState.PENDING,
            created_at=time.time(),
        )
        self._journal.insert_operation(record)
        live = _Live(record=record, takes_slot=takes_slot, yields=yields, after=after,
                     priority=slots.SCHEDULED if yields else slots.OPERATOR)
        if superseded is not None:
            self._supersede(superseded, by=record.id)
        if cancelled is not None:
            # Only now, past every check that can refuse the request: a refused one cancels nothing.
            self._cancel_for(cancelled, by=record)
        self._live[record.id] = live
        self._append(record, phase="queue", message=self._queue_message(live))
        live.task = asyncio.get_running_loop().create_task(self._run(live, job), name=f"op-{record.id}")
        live.task.add_done_callback(lambda _task: self._finish_unstarted(live))
        log.info("operation.submitted", operation_id=record.id, kind=kind.value, project_id=project_id,
                 after=after or None, superseded=superseded.record.id if superseded else None)
        return record, False

    def _queue_message(self, live: _Live) -> str:
        """What a new operation waits for: the scheduled backup it follows, a slot when every
        slot is taken (saying by how many), else nothing ("starting")."""
        if live.after:
            return f"waiting for scheduled backup {live.after} to end"
        if not live.takes_slot:
            return "starting"
        others = sum(1 for other in self._live.values()
                     if other is not live and other.takes_slot and not other.record.state.terminal)
        if others >= self._max_running:
            return f"waiting for a free slot ({others} operations ahead, {self._max_running} run at once)"
        return "starting"

    def _supersede(self, live: _Live, *, by: str) -> None:
        """End a yielding operation that has not started (its job never ran) in favour of ``by``."""
        message = f"superseded by operation {by} before it started"
        self._finish(live, OperationState.CANCELLED,
                     error=OperationError("CANCELLED", message, "SUPERSEDED", {"operation_id": by}), message=message)
        self._cancel_task(live)

    def _cancel_for(self, live: _Live, *, by: OperationRecord) -> None:
        """Cancel a running yielding operation in favour of the request ``by`` (which waits for it)."""
        live.cancel_reason = f"cancelled: {by.kind.value} operation {by.id} takes priority"
        live.record.state = OperationState.CANCELLING
        self._append(live.record, phase="cancel", message=live.cancel_reason)
        log.info("operation.cancelled_for", operation_id=live.record.id, by=by.id, kind=by.kind.value,
                 project_id=by.project_id)
        self._cancel_task(live)

    def _active_live(self, project_id: str) -> _Live | None:
        """The project's unfinished operation; of a scheduled backup and the request waiting behind
        it, the request (what a retry joins and a conflict names)."""
        found = None
        for live in self._live.values():
            if live.record.project_id == project_id and not live.record.state.terminal:
                if not live.yields:
                    return live
                found = found or live
        return found

    def yielding_on(self, project_id: str) -> OperationRecord | None:
        """The project's unfinished yielding (scheduled) operation, if any."""
        for live in list(self._live.values()):
            if live.yields and live.record.project_id == project_id and not live.record.state.terminal:
                return live.record
        return None

    def _active_on(self, project_id: str) -> OperationRecord | None:
        live = self._active_live(project_id)
        return live.record if live is not None else None

    def _queued_count(self) -> int:
        return sum(1 for live in self._live.values() if live.record.state is OperationState.PENDING)

    def counts(self) -> tuple[int, int]:
        """Return (running, queued) operation counts."""
        running = sum(
            1
            for live in self._live.values()
            if live.record.state in (OperationState.RUNNING, OperationState.CANCELLING)
        )
        return running, self._queued_count()

    def active_operation(self, project_id: str) -> OperationRecord | None:
        return self._active_on(project_id)

    def states(self) -> list[OperationState]:
        """The state of every operation not finished yet.

        Called from the metrics server's thread too: list() copies the dict in one step that
        runs no Python code, so the loop thread cannot change it halfway (which would raise).
        """
        return [live.record.state for live in list(self._live.values())]

    def _current(self, record: OperationRecord) -> OperationRecord:
        live = self._live.get(record.id)
        return live.record if live is not None else record

    # ------------------------------------------------------------ running

    async def _run(self, live: _Live, job: Job) -> None:
        record = live.record
        context = OperationContext(self, live)
        try:
            if live.after:
                await self.wait(live.after)
            async with self._slots.slot(live.priority) if live.takes_slot else contextlib.nullcontext():
                record.state = OperationState.RUNNING
                record.started_at = time.time()
                log.info("operation.started", operation_id=record.id, kind=record.kind.value,
                         project_id=record.project_id)
                self._append(record, phase="start", message=f"{record.kind.value} started")
                summary = await job(context)
            self._flush_progress(live)
            if context.warnings:
                summary = replace(summary, warnings=tuple(summary.warnings) + tuple(context.warnings))
            state = summary.state
            if state is OperationState.SUCCEEDED and summary.warnings:
                state = OperationState.SUCCEEDED_WITH_WARNINGS
            self._finish(live, state, summary=summary, message=f"{record.kind.value} {state.value.lower()}")
        except FailedWithSummary as failure:
            self._flush_progress(live)
            exc = failure.error
            log.warning("operation.failed", operation_id=record.id, code=code_name_for(exc), error=exc.message)
            self._finish(live, OperationState.FAILED, summary=failure.summary,
                         error=status_codes.operation_error(exc))
        except asyncio.CancelledError:
            self._flush_progress(live)
            if self._closing:
                self._finish(
                    live,
                    OperationState.INTERRUPTED,
                    error=OperationError("ABORTED", "the agent shut down while this operation ran",
                                         "AGENT_SHUTDOWN"),
                    message="interrupted by agent shutdown",
                )
            else:
                self._finish(
                    live,
                    OperationState.CANCELLED,
                    error=OperationError("CANCELLED", live.cancel_reason or "cancelled on request",
                                         errors.Cancelled.reason),
                    message=live.cancel_reason or "cancelled",
                )
        except errors.BucketsError as exc:
            self._flush_progress(live)
            log.warning(
                "operation.failed",
                operation_id=record.id,
                code=code_name_for(exc),
                error=exc.message,
                detail=exc.detail[-2000:],
            )
            self._finish(live, OperationState.FAILED, error=status_codes.operation_error(exc))
        except Exception as exc:
            self._flush_progress(live)
            log.exception("operation.crashed", operation_id=record.id)
            self._finish(live, OperationState.FAILED,
                         error=OperationError("INTERNAL", f"internal error: {exc!r}", errors.Internal.reason))

    def _finish_unstarted(self, live: _Live) -> None:
        """A task cancelled before its first step never ran ``_run``'s handlers: finish it here."""
        if live.record.id in self._live and not live.record.state.terminal:
            if self._closing:
                error = OperationError("ABORTED", "the agent shut down before this operation started", "AGENT_SHUTDOWN")
                self._finish(live, OperationState.INTERRUPTED, error=error, message="interrupted by agent shutdown")
            else:
                self._finish(
                    live, OperationState.CANCELLED,
                    error=OperationError("CANCELLED", "cancelled on request", errors.Cancelled.reason),
                    message="cancelled",
                )

    def _finish(
        self,
        live: _Live,
        state: OperationState,
        *,
        summary: Summary | None = None,
        error: OperationError | None = None,
        message: str = "",
    ) -> None:
        if live.record.id not in self._live:
            return  # ended already (superseded before it started)
        record = live.record
        if live.flush_handle is not None:
            live.flush_handle.cancel()
            live.flush_handle = None
        last = _figures_of(live.events[-1]) if live.events else {}
        last.update((name, value) for name, value in (live.pending_progress or {}).items() if name in FIGURES)
        live.pending_progress = None
        record.state = state
        record.finished_at = time.time()
        record.summary = summary
        record.error = error
        self._append(record, phase="done", message=message or (error.message if error else ""), terminal=True,
                     **final_figures(last, summary, state))
        log.info(
            "operation.finished",
            operation_id=record.id,
            kind=record.kind.value,
            project_id=record.project_id,
            state=state.value,
            duration=round(record.finished_at - (record.started_at or record.created_at), 3),
        )
        del self._live[record.id]
        try:
            self._on_finish(record)
        except Exception:  # observing an operation must never break it
            log.exception("operation.on_finish_failed", operation_id=record.id)

    def _append(
        self, record: OperationRecord, *, phase: str, message: str = "", terminal: bool = False, **fields
    ) -> ProgressEvent:
        record.last_seq += 1
        event = ProgressEvent(
            operation_id=record.id,
            seq=record.last_seq,
            time=time.time(),
            state=record.state,
            phase=phase,
            message=message,
            terminal=terminal,
            summary=record.summary if terminal else None,
            error=record.error if terminal else None,
            **fields,
        )
        self._journal.append_event(event, record)
        live = self._live.get(record.id)
        if live is not None:
            live.events.append(event)
            live.changed.set()
            live.changed = asyncio.Event()
        return event

    def _progress(self, live: _Live, phase: str, fields: dict, *, milestone: bool = False) -> None:
        if live.record.state.terminal:
            return
        last = live.events[-1] if live.events else None
        if live.pending_progress is not None and live.pending_progress.get("phase") == phase:
            fields = carried_figures(live.pending_progress, fields)
        elif last is not None and last.phase == phase:
            fields = carried_figures(_figures_of(last), fields)
        now = time.monotonic()
        phase_changed = last is None or last.phase != phase
        if milestone or phase_changed or now - live.last_progress_at >= PROGRESS_INTERVAL:
            if (phase_changed or milestone) and live.pending_progress is not None:
                self._flush_progress(live)  # the old phase's last figures come first
            if live.flush_handle is not None:
                live.flush_handle.cancel()
                live.flush_handle = None
            live.pending_progress = None
            live.last_progress_at = now
            self._append(live.record, phase=phase, **fields)
            return
        # Keep the newest report and publish it when the interval has passed, so the
        # last figures before a quiet period are never lost.
        live.pending_progress = {"phase": phase, **fields}
        if live.flush_handle is None:
            delay = PROGRESS_INTERVAL - (now - live.last_progress_at)
            live.flush_handle = asyncio.get_running_loop().call_later(delay, self._flush_progress, live)

    def _flush_progress(self, live: _Live) -> None:
        if live.flush_handle is not None:
            live.flush_handle.cancel()
            live.flush_handle = None
        pending, live.pending_progress = live.pending_progress, None
        if pending and not live.record.state.terminal and live.record.id in self._live:
            live.last_progress_at = time.monotonic()
            phase = pending.pop("phase")
            self._append(live.record, phase=phase, **pending)

    # ------------------------------------------------------------ queries

    def get(self, operation_id: str) -> OperationRecord:
        """Return the operation; raises NotFound."""
        live = self._live.get(operation_id)
        if live is not None:
            return live.record
        record = self._journal.get_operation(operation_id)
        if record is None:
            raise errors.OperationNotFound(f"operation {operation_id} not found", operation_id=operation_id)
        return record

    def list(
        self,
        *,
        project_id: str | None,
        states: list[OperationState],
        page_size: int,
        page_token: str,
    ) -> tuple[list[OperationRecord], str]:
        """Newest first, paginated; returns (records, next page token or "")."""
        before = None
        if page_token:
            try:
                created, _, op_id = page_token.partition(":")
                before = (float(created), op_id)
            except ValueError:
                raise errors.InvalidArgument(f"malformed page_token {page_token!r}") from None
        size = min(page_size or 100, 1000)
        records = self._journal.list_operations(project_id=project_id, states=states, before=before, limit=size + 1)
        records = [self._current(r) for r in records]
        token = ""
        if len(records) > size:
            records = records[:size]
            token = f"{records[-1].created_at!r}:{records[-1].id}"
        return records, token

    async def wait(self, operation_id: str) -> OperationRecord:
        """Wait until the operation has ended; return its final record. Raises NotFound."""
        while True:
            live = self._live.get(operation_id)
            if live is None:
                return self.get(operation_id)
            await live.changed.wait()

    # ------------------------------------------------------------ cancel

    async def cancel(self, operation_id: str) -> OperationRecord:
        """Cancel a pending or running operation; a finished one is returned as it is."""
        record = self.get(operation_id)
        live = self._live.get(operation_id)
        if live is None or record.state.terminal:
            return record
        if record.state is OperationState.RUNNING:
            record.state = OperationState.CANCELLING
            self._append(record, phase="cancel", message="cancellation requested")
        self._cancel_task(live)
        return record

    @staticmethod
    def _cancel_task(live: _Live) -> None:
        # Jobs keep each step that must not be torn (a swap) free of awaits, so
        # cancellation, which only lands at an await, never splits one.
        if live.task is not None:
            live.task.cancel()

    async def shutdown(self, grace: float) -> None:
        """Stop every operation (recorded INTERRUPTED) and wait up to ``grace`` seconds for them to end."""
        self._closing = True
        tasks = [live.task for live in list(self._live.values()) if live.task is not None]
        for live in list(self._live.values()):
            self._cancel_task(live)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    # ------------------------------------------------------------ watching

    async def watch(
        self, operation_id: str, from_seq: int
    ) -> AsyncIterator[OperationRecord | ProgressEvent | None]:
        """Yield the operation, then its events with seq >= from_seq, then keep-alives (None)
        while nothing happens; ends after the terminal event. The terminal event comes even when
        ``from_seq`` is past it, so a follower waiting for the end always gets one. Raises NotFound."""
        record = self.get(operation_id)
        yield record
        next_seq = max(from_seq, 1)
        while True:
            live = self._live.get(operation_id)
            if live is None:
                events = self._journal.events_since(operation_id, next_seq)
                if not any(event.terminal for event in events):
                    last = self._journal.last_event(operation_id)
                    if last is not None and last.terminal and last.seq < next_seq:
                        events = [last]
                for event in events:
                    yield event
                return
            if live.events and next_seq < live.events[0].seq:
                backlog = [e for e in self._journal.events_since(operation_id, next_seq) if e.seq < live.events[0].seq]
            else:
                backlog = []
            changed = live.changed
            for event in backlog + [e for e in list(live.events) if e.seq >= next_seq or e.terminal]:
                if event.seq < next_seq and not event.terminal:
                    continue
                yield event
                next_seq = event.seq + 1
                if event.terminal:
                    return
            if operation_id not in self._live:
                continue
            try:
                await asyncio.wait_for(changed.wait(), timeout=self._keepalive_interval)
            except asyncio.TimeoutError:
                yield None
