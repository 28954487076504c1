"""What moves and copies share: their error type, their request ids, following one agent
operation of a step while its progress goes into the job's log (movelog or copylog), and the
runner machinery that records each step before its work and turns failures into the job's."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from hub_client.client import OK_STATES, AgentError, OperationHandle, state_name
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Host, LeaseLost, MovelogEntry

if TYPE_CHECKING:
    from hub_client.lease import JobLease

PROGRESS_INTERVAL = 1.0  # seconds between agent progress events copied into a job's log

Observer = Callable[[MovelogEntry], None]
Log = Callable[[str, str, "dict[str, Any] | None"], MovelogEntry]


class JobError(Exception):
    """A move or copy could not start, or one of its steps failed; the text is for the operator.
    ``code`` is the gRPC status code name behind it when an agent gave one (e.g.
    ``INVALID_ARGUMENT``), else empty."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def job_request_id(kind: str, job_id: str, step: str, round_: int) -> str:
    """The agent request id of ``step``'s ``round_``-th start in job ``kind:job_id``: repeating it
    joins the same agent operation (a hub that stopped mid-step resumes by joining it)."""
    return f"{kind}:{job_id}:{step}:{round_}"


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


class JobRunner:
    """The step machinery of a move or a copy. Steps run in order, each recorded (the job's step
    and a "step" log entry) before its work starts; ``observer`` sees every log entry as it is
    written, ``before_step`` gets a step's name after it is recorded and before its work. A
    failure goes through the job's ``_fail`` (undo, FAILED) and leaves as the job's error type."""

    kind: str  # "move" or "copy": the request ids' prefix
    error: type[JobError] = JobError

    def __init__(self, job_id: str, *, observer: Observer | None, before_step: Callable[[str], None] | None,
                 operation_timeout: float | None, lease: "JobLease | None" = None) -> None:
        self.job_id = job_id
        self.observer = observer
        self.before_step = before_step
        self.operation_timeout = operation_timeout
        self.lease = lease
        self._seen_seq = 0

    # ------------------------------------------------------------ what each kind of job provides

    def _append(self, kind: str, message: str, data: dict[str, Any] | None) -> MovelogEntry:
        raise NotImplementedError

    def _read_log(self, after_seq: int = 0) -> list[MovelogEntry]:
        raise NotImplementedError

    def _record_step(self, step: str) -> None:
        raise NotImplementedError

    def _steps(self) -> tuple[str, ...]:
        """The job's steps as known now (a move's plan is chosen by its preflight)."""
        raise NotImplementedError

    def _current_step(self) -> str:
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _needs_owner(self) -> bool:
        """Whether the job still needs an owner (pending or running) after a run ended."""
        raise NotImplementedError

    def _finished(self) -> bool:
        """Whether the job has ended for good (succeeded or cancelled): nothing more to do, so no
        lease is taken (and nothing logged) before the refusal."""
        raise NotImplementedError

    # ------------------------------------------------------------ the lease

    @contextmanager
    def _leased(self) -> Iterator[None]:
        """Hold the job's lease (if the runner has one) for the block; the caller holds the
        project's move lock. The lease is handed over (claimable at once) when the job still
        needs an owner afterwards, and released when it does not."""
        if self.lease is None or self._finished():
            yield
            return
        lease = self.lease.acquire()
        try:
            self._log("lease", f"owned by hub process {lease.owner} (claim {lease.epoch})",
                      {"owner": lease.owner, "epoch": lease.epoch, "claimed_at": lease.claimed_at.isoformat(),
                       "expires_at": lease.expires_at.isoformat() if lease.expires_at else None})
            yield
        finally:
            try:
                hand_over = self._needs_owner()
            except Exception:
                hand_over = True  # unknown: let another process look at it
            self.lease.release(hand_over=hand_over)

    def _fence(self) -> None:
        """Raise LeaseLost when this process no longer owns the job (checked before each step)."""
        if self.lease is not None:
            self.lease.check()

    # ------------------------------------------------------------ shared

    def _log(self, kind: str, message: str, data: dict[str, Any] | None = None) -> MovelogEntry:
        entry = self._append(kind, message, data)
        self._seen_seq = entry.seq
        if self.observer is not None:
            self.observer(entry)
        return entry

    def _show_unseen(self) -> None:
        """Pass the entries the store wrote itself (with a completion) to the observer."""
        for entry in self._read_log(after_seq=self._seen_seq):
            self._seen_seq = entry.seq
            if self.observer is not None:
                self.observer(entry)

    def _round(self, step: str) -> int:
        return sum(1 for entry in self._read_log() if entry.kind == "step" and entry.message == step)

    def _request_id(self, step: str) -> str:
        return job_request_id(self.kind, self.job_id, step, self._round(step))

    def _await(self, step: str, host: Host, handle: OperationHandle) -> pb.Operation:
        """Copy the operation's progress into the log until it ends; raise unless it succeeded."""
        return follow_operation(self._log, step, host.id, handle, timeout=self.operation_timeout, error=self.error)

    def _attempt(self, attempts: int, how: str, start: str, continuing: bool, data: dict[str, Any],
                 overrides: str = "") -> None:
        """Log the attempt and run the steps from ``start``; on any failure, ``_fail`` first.
        ``overrides``: the refusals the attempt may override, in words for the log's text."""
        self._log("attempt", f"attempt {attempts}: {how} from {start}"
                  + (f" with {overrides}" if overrides else "")
                  + (" (continuing the step a stopped hub had started)" if continuing else ""),
                  {"how": how, "from": start, **data})
        try:
            self._run_steps(start, continuing)
        except LeaseLost:
            raise  # another process owns the job now: no undo, no failure recorded by this one
        except BaseException as exc:
            try:
                self._fence()
            except LeaseLost as lost:
                raise lost from exc  # the failure may be the new owner's doing: it is not ours to undo
            except Exception:
                pass  # the store unreachable: _fail reports what it can
            self._fail(exc)
            if isinstance(exc, JobError):
                raise
            if isinstance(exc, AgentError):
                raise self.error(f"{self._current_step()}: {exc}", exc.code.name) from exc
            raise

    def _run_steps(self, start: str, continuing: bool) -> None:
        step: str | None = start
        while step is not None:
            self._fence()
            if continuing:
                continuing = False  # a stopped hub recorded this step already
            else:
                self._record_step(step)
                self._log("step", step, {"step": step})
            if self.before_step is not None:
                self.before_step(step)
            getattr(self, f"_step_{step}")()
            steps = self._steps()
            position = steps.index(step)
            step = steps[position + 1] if position + 1 < len(steps) else None
