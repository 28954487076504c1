"""The hub's typed, synchronous client for one agent (:class:`AgentClient`).

A facade over the generated ``buckets.v1.Agent`` stubs, needing only grpcio
and protobuf (no agent code):

- one frozen :class:`ClientConfig`: target, plaintext or TLS / mTLS
  (:class:`TlsConfig`), a bearer token sent as ``authorization`` metadata on
  every call (streams included; never in ``repr`` or logs), a default
  deadline and a :class:`RetryPolicy`;
- every unary call attempt has a deadline; a call that fails with
  UNAVAILABLE is retried with exponential backoff (jittered) up to
  ``retry.attempts`` tries in all; any other status code is raised at once.
  Every failure is one :class:`AgentError` carrying the code, the message and
  the agent's ErrorInfo (reason and the ids it names: read those, not the text);
- operation calls (Backup, Restore, ...) generate their ``request_id`` once,
  before any retry, so a retried call joins the same operation on the agent,
  and return an :class:`OperationHandle`;
- :meth:`OperationHandle.progress` follows StreamProgress until the terminal
  event and reopens the stream from the next sequence number when it drops
  (UNAVAILABLE, DEADLINE_EXCEEDED) or stays silent for
  ``stream_idle_timeout`` (the agent sends keep-alives, so silence means a
  dead connection): no event is repeated or skipped. A progress stream has no
  deadline of its own (operations run for hours); the idle timeout bounds it,
  and :meth:`OperationHandle.wait` takes an overall ``timeout``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc
from hub_client.rich_status import ErrorInfo, error_info_of

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset(
    {pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS, pb.UP_TO_DATE, pb.FAILED, pb.CANCELLED, pb.INTERRUPTED}
)
OK_STATES = frozenset({pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS, pb.UP_TO_DATE})
# The largest answer accepted: the agent's own send limit (agent/server.py).
MAX_RECEIVE_BYTES = 64 * 1024 * 1024

# Codes on which a progress stream is reopened (besides the client's own idle timeout).
_STREAM_RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RetryPolicy:
    """Retry of UNAVAILABLE: ``attempts`` tries in all (1 = no retry); before try n+1 the client
    sleeps ``min(max_backoff, initial_backoff * multiplier**(n-1))`` scaled by a random factor in
    [0.5, 1] (jitter that keeps a known lower bound on the retry window)."""

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy backoffs must not be negative and multiplier must be >= 1")

    def backoff(self, failures: int) -> float:
        """Seconds to sleep after the ``failures``-th consecutive failure (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, failures - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def shortest_last_pause(self) -> float:
        """The least the client sleeps before its last try. A channel that tries to reconnect at
        least this often has tried once more by then: a host back after a cut is found again
        within the retries, not after a longer reconnect backoff of the channel's own."""
        if self.attempts < 2:
            return self.initial_backoff
        return 0.5 * min(self.max_backoff, self.initial_backoff * self.multiplier ** (self.attempts - 2))


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the agent. ``ca_file``: PEM roots for the agent's certificate (None: the system
    roots); ``cert_file`` + ``key_file``: the client certificate for mTLS; ``server_name``:
    the name checked in the agent's certificate instead of the target's host."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TlsConfig: cert_file and key_file go together (mTLS)")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True)
class ClientConfig:
    """How to reach one agent. ``deadline`` bounds every unary call attempt; ``tls`` None means
    plaintext (loopback, tests); ``token`` is sent as ``authorization: Bearer <token>``."""

    target: str  # host:port
    deadline: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TlsConfig | None = None
    token: str | None = field(default=None, repr=False)
    # A progress stream with no message this long (the agent sends keep-alives) is reopened.
    stream_idle_timeout: float = 120.0
    # Consecutive failed reopenings of a progress stream before giving up.
    reconnect_attempts: int = 20

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("ClientConfig.target is empty")
        if self.deadline <= 0 or self.stream_idle_timeout <= 0:
            raise ValueError("ClientConfig.deadline and stream_idle_timeout must be positive")
        if self.reconnect_attempts < 0:
            raise ValueError("ClientConfig.reconnect_attempts must not be negative")


# ---------------------------------------------------------------- errors and helpers


class AgentError(Exception):
    """A call to an agent failed: ``code`` is the gRPC status code, ``message`` its details (for
    people), ``info`` the ``google.rpc.ErrorInfo`` the agent sent (for programs: ``reason`` such
    as ``OPERATION_CONFLICT``, ``metadata`` such as the running ``operation_id``; see
    protos/ERRORS.md), or None when the status has none (grpc's own, e.g. a refused connection;
    an error made by this client)."""

    def __init__(self, code: grpc.StatusCode, message: str, info: ErrorInfo | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.info = info

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def reason(self) -> str:
        """The ErrorInfo reason; "" without one."""
        return self.info.reason if self.info is not None else ""

    @property
    def metadata(self) -> Mapping[str, str]:
        """The ErrorInfo metadata (the ids the error is about); empty without one."""
        return self.info.metadata if self.info is not None else {}

    @classmethod
    def from_rpc(cls, exc: grpc.RpcError) -> "AgentError":
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = exc.details() if callable(getattr(exc, "details", None)) else None
        return cls(code or grpc.StatusCode.UNKNOWN, details or str(exc), error_info_of(exc))


def state_name(state: int) -> str:
    """``OperationState`` name of ``state`` (its number when this client does not know it)."""
    try:
        return pb.OperationState.Name(state)
    except ValueError:
        return str(state)


def new_request_id() -> str:
    return str(uuid.uuid4())


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


class _Watchdog:
    """Cancels a streaming call when no message arrived for ``idle`` seconds (while not paused)."""

    def __init__(self, call: grpc.Call, idle: float) -> None:
        self._call = call
        self._idle = idle
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._paused = False
        self._stop = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="agent-stream-watchdog", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def pause(self) -> None:
        """The consumer holds an event: its own time does not count as silence of the stream."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wait = self._idle
        while not self._stop.wait(wait):
            with self._lock:
                silent = time.monotonic() - self._last
                if self._paused or silent < self._idle:
                    wait = self._idle if self._paused else self._idle - silent
                    continue
                self.fired = True
            self._call.cancel()
            return


# ---------------------------------------------------------------- operation handle


class OperationHandle:
    """One agent operation: ``operation`` is the Operation as last seen."""

    def __init__(self, client: "AgentClient", operation: pb.Operation) -> None:
        self.client = client
        self.operation = operation

    def __repr__(self) -> str:
        return f"OperationHandle(id={self.id!r}, state={state_name(self.operation.state)})"

    @property
    def id(self) -> str:
        return self.operation.id

    @property
    def done(self) -> bool:
        """Whether the operation, as last seen, is in a terminal state (see :meth:`refresh`)."""
        return self.operation.state in TERMINAL_STATES

    def refresh(self) -> pb.Operation:
        self.operation = self.client.call("GetOperation", pb.GetOperationRequest(operation_id=self.id))
        return self.operation

    def cancel(self) -> pb.Operation:
        self.operation = self.client.call("CancelOperation", pb.CancelOperationRequest(operation_id=self.id))
        return self.operation

    def progress(self, from_seq: int = 1, *, on_reconnect: Callable[[int, str], None] | None = None,
                 ) -> Iterator[pb.ProgressEvent]:
        """Yield the operation's events with seq >= ``from_seq`` in order until the terminal one.

        A stream that drops (UNAVAILABLE, DEADLINE_EXCEEDED) or stays silent for
        ``stream_idle_timeout`` is reopened from the next sequence number, so no event is
        repeated or skipped; after ``reconnect_attempts`` consecutive failed reopenings the last
        error is raised as :class:`AgentError`. Other errors (e.g. NOT_FOUND) are raised at once.
        The agent sends the terminal event even when ``from_seq`` is past it.
        ``on_reconnect(attempt, why)`` is told before each reopening (attempt 1, 2, ...), so a
        caller can say at once that the connection was lost while the operation may go on.
        """
        return self._follow(from_seq, deadline=None, on_reconnect=on_reconnect)

    def wait(self, timeout: float | None = None) -> pb.Operation:
        """Follow the progress to the terminal event and return the terminal Operation.

        Raises ``AgentError(DEADLINE_EXCEEDED, ...)`` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.done:  # already terminal: nothing to follow
            return self.refresh()
        # Events up to last_seq are past; if the terminal one is among them, the stream says so.
        for _ in self._follow(self.operation.last_seq + 1, deadline=deadline):
            pass
        return self.refresh()

    # ------------------------------------------------------------ internals

    def _merge(self, event: pb.ProgressEvent) -> None:
        """Bring the last-seen operation up to date with an event (state, last_seq, outcome)."""
        operation = self.operation
        if event.state:
            operation.state = event.state
        operation.last_seq = max(operation.last_seq, event.seq)
        if event.terminal:
            if event.HasField("summary"):
                operation.summary.CopyFrom(event.summary)
            if event.HasField("error") and (event.error.code or event.error.message):
                operation.error.CopyFrom(event.error)

    def _follow(self, from_seq: int, deadline: float | None,
                on_reconnect: Callable[[int, str], None] | None = None) -> Iterator[pb.ProgressEvent]:
        client = self.client
        config = client.config
        next_seq = max(1, int(from_seq))
        failures = 0

        def expired() -> AgentError:
            return AgentError(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"operation {self.id} did not finish in time (at seq {next_seq - 1})")

        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise expired()
            call = client.stub.StreamProgress(
                pb.StreamProgressRequest(operation_id=self.id, from_seq=next_seq),
                timeout=remaining,
                metadata=client._metadata,
            )
            watchdog = _Watchdog(call, config.stream_idle_timeout)
            seen: pb.Operation | None = None
            code, failure = grpc.StatusCode.UNAVAILABLE, "the progress stream ended before the terminal event"
            try:
                for update in call:
                    watchdog.kick()
                    which = update.WhichOneof("update")
                    if which == "operation":
                        seen = update.operation
                        if seen.id == self.id:
                            self.operation = seen
                        continue
                    if which != "event":
                        failures = 0  # a keep-alive: the stream is alive
                        continue
                    event = update.event
                    if event.seq < next_seq:
                        continue  # already delivered
                    if event.seq > next_seq:  # never skip one: reopen from the missing seq
                        failure = f"the progress stream jumped from seq {next_seq} to {event.seq}"
                        break
                    failures = 0
                    next_seq = event.seq + 1
                    self._merge(event)
                    watchdog.pause()
                    try:
                        yield event
                    finally:
                        watchdog.resume()
                    if event.terminal:
                        return
                else:
                    # Ended without a terminal event: fine only when none is to come (from_seq
                    # was past the end of a finished operation).
                    if seen is not None and seen.state in TERMINAL_STATES and seen.last_seq < next_seq:
                        return
            except grpc.RpcError as exc:
                if watchdog.fired:
                    failure = f"no message on the progress stream for {config.stream_idle_timeout:g}s"
                else:
                    error = AgentError.from_rpc(exc)
                    if error.code not in _STREAM_RECONNECT_CODES:
                        raise error from None
                    if deadline is not None and time.monotonic() >= deadline:
                        raise expired() from None
                    code, failure = error.code, error.message
            finally:
                watchdog.stop()
                call.cancel()
            failures += 1
            if failures > config.reconnect_attempts:
                raise AgentError(code, f"progress of {self.id}: {failure} "
                                       f"(gave up after {config.reconnect_attempts} reopenings)")
            pause = config.retry.backoff(failures)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            log.info("agent %s: reopening progress of %s from seq %d in %.2fs: %s",
                     config.target, self.id, next_seq, pause, failure)
            if on_reconnect is not None:
                on_reconnect(failures, failure)
            client._pause(pause)


# ---------------------------------------------------------------- client


class AgentClient:
    """Typed calls to one agent. Takes a :class:`ClientConfig`; use as a context manager or call
    :meth:`close`. Thread-safe as the underlying gRPC channel is."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        retry = config.retry
        options = [
            # Let the channel try to reconnect on the time scale of the retries (see
            # RetryPolicy.shortest_last_pause); a longer channel backoff after a cut failed every
            # retry fast with the old "connection refused" though the host was back.
            ("grpc.initial_reconnect_backoff_ms", max(100, int(retry.initial_backoff * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(100, int(retry.shortest_last_pause() * 1000))),
            # A ReadFile answer holds up to the agent's read_file_max_bytes (16 MiB by default;
            # the agent sends up to 64 MiB): gRPC's default 4 MiB would refuse a bigger file.
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ]
        if config.tls is None:
            self._channel = grpc.insecure_channel(config.target, options=options)
        else:
            if config.tls.server_name:
                options.append(("grpc.ssl_target_name_override", config.tls.server_name))
            self._channel = grpc.secure_channel(config.target, config.tls.credentials(), options=options)
        self.stub = pb_grpc.AgentStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {config.token}"),) if config.token else ()
        )

    def __repr__(self) -> str:
        return f"AgentClient({self.config!r})"

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()
        # A reconnection wait (_pause) subscribes to the channel's connectivity, which runs grpc's
        # polling thread until ~0.2 s after the unsubscription. An interpreter exiting meanwhile
        # (Ctrl-C right after a lost connection) can freeze that daemon thread while it holds
        # its lock, and the channel's __del__ at exit then waits on that lock for ever: the
        # thread is let end first (grpc keeps the flag on the channel's private state).
        state = getattr(self._channel, "_connectivity_state", None)
        until = time.monotonic() + 1.0
        while state is not None and getattr(state, "polling", False) and time.monotonic() < until:
            time.sleep(0.01)

    def call(self, method: str, request, *, timeout: float | None = None):
        """Call the unary RPC ``method`` (e.g. "GetOperation") with a deadline of ``timeout``
        (default ``config.deadline``) seconds per attempt; UNAVAILABLE is retried with backoff
        up to ``retry.attempts`` tries in all. Raises :class:`AgentError`."""
        rpc: Callable[..., Any] = getattr(self.stub, method)
        per_attempt = self.config.deadline if timeout is None else timeout
        policy = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                return rpc(request, timeout=per_attempt, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = AgentError.from_rpc(exc)
                if error.code is not grpc.StatusCode.UNAVAILABLE or attempt >= policy.attempts:
                    raise error from None
                pause = policy.backoff(attempt)
                log.info("agent %s: %s attempt %d/%d UNAVAILABLE (%s); retrying in %.2fs",
                         self.config.target, method, attempt, policy.attempts, error.message, pause)
                self._pause(pause)

    def _pause(self, seconds: float) -> None:
        """Sleep before a retry while watching the channel's connectivity. A sync channel's
        reconnection only makes progress while some thread polls it; without a watcher the
        result of a connection attempt made during the backoff is noticed only by grpc's
        backup poller (every 5 s), and every retry in between fails at once."""
        self._channel.subscribe(self._on_connectivity)
        try:
            time.sleep(seconds)
        finally:
            self._channel.unsubscribe(self._on_connectivity)

    @staticmethod
    def _on_connectivity(state: grpc.ChannelConnectivity) -> None:
        pass

    # ------------------------------------------------------------ operations

    def _start(self, method: str, request) -> OperationHandle:
        return OperationHandle(self, self.call(method, request))

    def backup(self, project_id: str, *, request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("Backup", pb.BackupRequest(
            request_id=request_id or new_request_id(), project_id=project_id, **fields))

    def restore(self, project_id: str, snapshot_id: str, *, request_id: str | None = None,
                **fields) -> OperationHandle:
        return self._start("Restore", pb.RestoreRequest(
            request_id=request_id or new_request_id(), project_id=project_id, snapshot_id=snapshot_id, **fields))

    def undo_restore(self, project_id: str, restore_operation_id: str = "", *,
                     request_id: str | None = None) -> OperationHandle:
        """Put back the tree a whole-project restore replaced (empty ``restore_operation_id``: the
        newest one kept); NOT_FOUND raises when none is kept."""
        return self._start("UndoRestore", pb.UndoRestoreRequest(
            request_id=request_id or new_request_id(), project_id=project_id,
            restore_operation_id=restore_operation_id))

    def verify(self, project_id: str, *, request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("Verify", pb.VerifyRequest(
            request_id=request_id or new_request_id(), project_id=project_id, **fields))

    def ensure_project(self, project_id: str, *, request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("EnsureProject", pb.EnsureProjectRequest(
            request_id=request_id or new_request_id(), project_id=project_id, **fields))

    def precopy(self, project_id: str, snapshot_id: str, key: str, *, request_id: str | None = None,
                **fields) -> OperationHandle:
        """Restore ``snapshot_id`` into a staged copy named ``key`` of a project not placed on this
        host (PreCopy, kind PRECOPY); EnsureProject with ``precopy_key=key`` places it later.
        UNIMPLEMENTED raises from an agent without PreCopy."""
        return self._start("PreCopy", pb.PreCopyRequest(
            request_id=request_id or new_request_id(), project_id=project_id, snapshot_id=snapshot_id, key=key,
            **fields))

    def delete_project(self, project_id: str, *, request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("DeleteProject", pb.DeleteProjectRequest(
            request_id=request_id or new_request_id(), project_id=project_id, **fields))

    def forget(self, project_id: str, *, request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("Forget", pb.ForgetRequest(
            request_id=request_id or new_request_id(), project_id=project_id, **fields))

    def copy_files(self, source_project_id: str, source_path: str, target_project_id: str, target_path: str, *,
                   request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("CopyFiles", pb.CopyFilesRequest(
            request_id=request_id or new_request_id(), source_project_id=source_project_id,
            source_path=source_path, target_project_id=target_project_id, target_path=target_path, **fields))

    def check_copy_target(self, project_id: str, target_path: str, on_conflict: int = 0) -> bool:
        """Whether something is at ``target_path`` now; raises AgentError where a copy may not write."""
        return self.call("CheckCopyTarget", pb.CheckCopyTargetRequest(
            project_id=project_id, target_path=target_path, on_conflict=on_conflict)).exists

    def drain(self, *, request_id: str | None = None, **fields) -> OperationHandle:
        return self._start("Drain", pb.DrainRequest(request_id=request_id or new_request_id(), **fields))

    def operation(self, operation_id: str) -> OperationHandle:
        """A handle for an existing operation (GetOperation; NOT_FOUND raises)."""
        return OperationHandle(self, self.get_operation(operation_id))

    def get_operation(self, operation_id: str) -> pb.Operation:
        return self.call("GetOperation", pb.GetOperationRequest(operation_id=operation_id))

    def list_operations(self, **fields) -> list[pb.Operation]:
        """Every page of ListOperations (newest first)."""
        return self._all_pages("ListOperations", pb.ListOperationsRequest, "operations", fields)

    def progress(self, operation_id: str, from_seq: int = 1) -> Iterator[pb.ProgressEvent]:
        """Same as :meth:`OperationHandle.progress`."""
        return OperationHandle(self, pb.Operation(id=operation_id)).progress(from_seq)

    def wait(self, operation_id: str, timeout: float | None = None) -> pb.Operation:
        """Same as :meth:`OperationHandle.wait`."""
        return OperationHandle(self, pb.Operation(id=operation_id)).wait(timeout)

    # ------------------------------------------------------------ status

    def project_status(self, project_id: str, *, scan: bool = True) -> pb.ProjectStatus:
        """The project's status; without ``scan`` the agent does not look at the trees (size 0,
        no change observed: GetProjectStatusRequest.without_scan)."""
        return self.call("GetProjectStatus", pb.GetProjectStatusRequest(project_id=project_id,
                                                                        without_scan=not scan))

    def list_projects(self) -> pb.ListProjectsResponse:
        """Every project on the host with its freshness as the agent knows it (no scan)."""
        return self.call("ListProjects", pb.ListProjectsRequest())

    def host_status(self) -> pb.HostStatus:
        return self.call("GetHostStatus", pb.GetHostStatusRequest())

    def capabilities(self) -> pb.Capabilities:
        return self.call("GetCapabilities", pb.GetCapabilitiesRequest())

    # ------------------------------------------------------------ browsing

    def snapshots(self, project_id: str, **fields) -> list[pb.Snapshot]:
        """Every page of ListSnapshots, newest first."""
        return self._all_pages("ListSnapshots", pb.ListSnapshotsRequest, "snapshots",
                               dict(fields, project_id=project_id))

    def list_files(self, project_id: str, snapshot_id: str, path: str = "", **fields) -> list[pb.FileEntry]:
        """Every page of ListFiles."""
        return self._all_pages("ListFiles", pb.ListFilesRequest, "entries",
                               dict(fields, project_id=project_id, snapshot_id=snapshot_id, path=path))

    def read_file(self, project_id: str, snapshot_id: str, path: str, **fields) -> pb.ReadFileResponse:
        return self.call("ReadFile", pb.ReadFileRequest(
            project_id=project_id, snapshot_id=snapshot_id, path=path, **fields))

    # ------------------------------------------------------------ move lock and change reports

    def freeze(self, project_id: str, **fields) -> pb.FreezeResponse:
        """Freeze the project; the answer names the processes the agent stopped (``stopped``)
        and the cgroup it froze. ``fields``: sentinel_path, sentinel_content, writers."""
        return self.call("Freeze", pb.FreezeRequest(project_id=project_id, **fields))

    def thaw(self, project_id: str) -> bool:
        return self.call("Thaw", pb.ThawRequest(project_id=project_id)).frozen

    def thaw_removing_sentinel(self, project_id: str, sentinel_path: str, sentinel_content: str) -> pb.ThawResponse:
        """Thaw the project (nothing to do when it is not frozen), then remove the move's sentinel
        when it holds exactly ``sentinel_content``; ``.sentinel`` says what became of it."""
        return self.call("Thaw", pb.ThawRequest(project_id=project_id, sentinel_path=sentinel_path,
                                                sentinel_content=sentinel_content))

    def mark_edited(self, project_id: str, when: datetime | None = None) -> None:
        """Report a change; ``when`` (a naive datetime is taken as UTC) defaults to the agent's now."""
        request = pb.MarkEditedRequest(project_id=project_id)
        if when is not None:
            request.time.CopyFrom(_timestamp(when))
        self.call("MarkEdited", request)

    # ------------------------------------------------------------ internals

    def _all_pages(self, method: str, request_type, items: str, fields: dict) -> list:
        result: list = []
        token = fields.pop("page_token", "")
        while True:
            page = self.call(method, request_type(page_token=token, **fields))
            result.extend(getattr(page, items))
            token = page.next_page_token
            if not token:
                return result
