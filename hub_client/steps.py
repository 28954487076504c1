"""What moves and copies share: their error type, and following one agent operation of a step
while its progress goes into the job's log (movelog or copylog)."""

from __future__ import annotations

import time
from typing import Any, Callable

from hub_client.client import OK_STATES, AgentError, OperationHandle, state_name
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import MovelogEntry

PROGRESS_INTERVAL = 1.0  # seconds between agent progress events copied into a job's log

Log = Callable[[str, str, "dict[str, Any] | None"], MovelogEntry]


class JobError(Exception):
    """A move or copy could not start, or one of its steps failed; the text is for the operator.
    ``code`` is the gRPC status code name behind it when an agent gave one (e.g.
    ``INVALID_ARGUMENT``), else empty."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def event_data(host_id: str, event: pb.ProgressEvent) -> dict[str, Any]:
    return {
        "host": host_id, "operation_id": event.operation_id, "seq": event.seq, "phase": event.phase,
        "percent": round(event.percent, 2), "bytes_done": event.bytes_done, "bytes_total": event.bytes_total,
        "files_done": event.files_done, "files_total": event.files_total,
        "bytes_per_second": round(event.bytes_per_second, 1), "eta_seconds": round(event.eta_seconds, 1),
        "terminal": event.terminal, "state": state_name(event.state) if event.terminal else "",
    }


def follow_operation(log: Log, step: str, host_id: str, handle: OperationHandle, *, timeout: float | None,
                     error: type[JobError] = JobError) -> pb.Operation:
    """Copy the operation's progress into the log (at most one event per PROGRESS_INTERVAL, and
    the last) until it ends; raise ``error`` (with the agent's status code) unless it succeeded."""
    operation = handle.operation
    log("operation", f"{step}: operation {handle.id} on {host_id}" + (" (joined)" if operation.joined else ""),
        {"step": step, "host": host_id, "operation_id": handle.id})
    last = 0.0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for event in handle.progress():
            now = time.monotonic()
            if event.terminal or now - last >= PROGRESS_INTERVAL:
                last = now
                log("progress", event.message or event.phase, event_data(host_id, event))
            if deadline is not None and now > deadline:
                raise error(f"{step}: operation {handle.id} on {host_id} did not end in time", "DEADLINE_EXCEEDED")
        operation = handle.refresh()
    except AgentError as exc:
        raise error(f"{step} on {host_id}: lost operation {handle.id}: {exc}", exc.code.name) from exc
    if operation.state not in OK_STATES:
        failure = operation.error
        raise error(f"{step} failed on {host_id}: operation {handle.id} ended "
                    f"{state_name(operation.state)}: {failure.code} {failure.message}".rstrip(), failure.code)
    return operation
