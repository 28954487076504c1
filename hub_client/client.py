"""A small synchronous client for one agent: typed calls with deadlines and progress that survives reconnects.

Needs only grpcio and protobuf (no agent dependencies).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import grpc

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc

TERMINAL_STATES = frozenset(
    {pb.SUCCEEDED, pb.SUCCEEDED_WITH_WARNINGS, pb.UP_TO_DATE, pb.FAILED, pb.CANCELLED, pb.INTERRUPTED}
)


class AgentError(Exception):
    """A call to an agent failed; ``code`` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClientConfig:
    target: str  # host:port
    deadline: float = 30.0  # seconds, for every unary call
    stream_idle_timeout: float = 120.0  # a progress stream silent this long (no keep-alive) is reconnected
    reconnect_attempts: int = 20


def state_name(state: int) -> str:
    return pb.OperationState.Name(state)


class AgentClient:
    """Takes a :class:`ClientConfig`; use as a context manager or call :meth:`close`."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._channel = grpc.insecure_channel(config.target)
        self.stub = pb_grpc.AgentStub(self._channel)

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request):
        """Call a unary RPC with the configured deadline; raises AgentError."""
        try:
            return getattr(self.stub, method)(request, timeout=self.config.deadline)
        except grpc.RpcError as exc:
            raise AgentError(exc.code(), exc.details() or "") from None

    # ------------------------------------------------------------ operations

    def backup(self, project_id: str, *, request_id: str | None = None, **fields) -> pb.Operation:
        return self.call("Backup", pb.BackupRequest(request_id=request_id or new_request_id(),
                                                    project_id=project_id, **fields))

    def restore(self, project_id: str, snapshot_id: str, *, request_id: str | None = None, **fields) -> pb.Operation:
        return self.call("Restore", pb.RestoreRequest(request_id=request_id or new_request_id(),
                                                      project_id=project_id, snapshot_id=snapshot_id, **fields))

    def verify(self, project_id: str, *, request_id: str | None = None, **fields) -> pb.Operation:
        return self.call("Verify", pb.VerifyRequest(request_id=request_id or new_request_id(),
                                                    project_id=project_id, **fields))

    def get_operation(self, operation_id: str) -> pb.Operation:
        return self.call("GetOperation", pb.GetOperationRequest(operation_id=operation_id))

    def cancel(self, operation_id: str) -> pb.Operation:
        return self.call("CancelOperation", pb.CancelOperationRequest(operation_id=operation_id))

    def snapshots(self, project_id: str) -> list[pb.Snapshot]:
        result, token = [], ""
        while True:
            page = self.call("ListSnapshots", pb.ListSnapshotsRequest(project_id=project_id, page_token=token))
            result.extend(page.snapshots)
            token = page.next_page_token
            if not token:
                return result

    # ------------------------------------------------------------ progress

    def progress(self, operation_id: str, from_seq: int = 1) -> Iterator[pb.ProgressEvent]:
        """Yield the operation's events from ``from_seq`` until the terminal one.

        A dropped stream (agent restart, network) is reopened from the next
        sequence number, so no event is missed or repeated.
        """
        next_seq = from_seq
        failures = 0
        while True:
            try:
                stream = self.stub.StreamProgress(
                    pb.StreamProgressRequest(operation_id=operation_id, from_seq=next_seq),
                    timeout=None,
                )
                for update in stream:
                    failures = 0
                    if update.WhichOneof("update") != "event":
                        continue
                    event = update.event
                    if event.seq < next_seq:
                        continue
                    next_seq = event.seq + 1
                    yield event
                    if event.terminal:
                        return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise AgentError(exc.code(), exc.details() or "") from None
                failures += 1
                if failures > self.config.reconnect_attempts:
                    raise AgentError(exc.code(), exc.details() or "") from None
                time.sleep(min(0.2 * 2**failures, 5.0))

    def wait(self, operation_id: str) -> pb.Operation:
        """Follow the operation to its end and return it in its terminal state."""
        for _ in self.progress(operation_id):
            pass
        return self.get_operation(operation_id)


def new_request_id() -> str:
    return str(uuid.uuid4())
