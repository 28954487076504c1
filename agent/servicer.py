"""The gRPC servicer: bind log context, convert proto to domain, call the service, convert back.

Every method goes through :func:`rpc` (unary) or :func:`stream_rpc`, which log
one event per call and turn agent errors into status codes via
:mod:`agent.status_codes`.
"""

from __future__ import annotations

import functools
import time
from typing import AsyncIterator, Callable

import grpc
import structlog
from google.protobuf.message import DecodeError

from agent import convert, errors, status_codes
from agent.in_flight import CallsInFlight
from agent.model import OperationRecord, ProgressEvent
from agent.service import AgentService
from agent.status_codes import status_code_for
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc

log = structlog.get_logger("agent.rpc")

# Longest status message sent, in UTF-8 bytes: messages may echo caller input (an id, a path), and
# one over the peer's metadata limit (grpc: 8 KiB soft, 16 KiB hard, after percent-encoding, which
# triples non-ASCII bytes) reaches the caller as RESOURCE_EXHAUSTED instead of the real code.
MAX_STATUS_MESSAGE_BYTES = 1024


class Undecodable:
    """What the servicer receives for request bytes that are no valid message of the method's
    request type (truncated, a bad tag, a string that is not UTF-8): INVALID_ARGUMENT, where grpc's
    own deserializer failing would answer UNKNOWN."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error


def _lenient(message_class) -> Callable[[bytes], object]:
    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(message_class.DESCRIPTOR.full_name, str(exc))

    return parse


def add_to_server(servicer: "AgentServicer", server) -> None:
    """Register ``servicer`` on ``server`` as ``agent_pb2_grpc.add_AgentServicer_to_server`` does,
    with request parsing that hands an undecodable request to the servicer (see :class:`Undecodable`)."""
    service = pb.DESCRIPTOR.services_by_name["Agent"]
    handlers = {}
    for method in service.methods:
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _check_decoded(request) -> None:
    if isinstance(request, Undecodable):
        raise errors.InvalidArgument(f"the request is not a valid {request.type_name} message")


def _ids(request) -> dict:
    fields = {}
    for name in ("project_id", "operation_id", "request_id"):
        value = getattr(request, name, "")
        if value:
            fields[name] = value[:80]
    return fields


def status_message(exc: BaseException) -> str:
    """The status message of an agent error: its text, cut to :data:`MAX_STATUS_MESSAGE_BYTES`."""
    message = str(exc)
    encoded = message.encode("utf-8", "replace")
    if len(encoded) > MAX_STATUS_MESSAGE_BYTES:
        message = encoded[: MAX_STATUS_MESSAGE_BYTES - 16].decode("utf-8", "ignore") + " ... (cut)"
    return message


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    """End the call with the status of ``exc`` (code, message, ErrorInfo: agent.status_codes)."""
    if status_code_for(exc) is grpc.StatusCode.INTERNAL:
        log.exception("rpc.internal_error", method=method)
        message = "internal error; see the agent's log"
    else:
        message = status_message(exc)
    status = status_codes.status_for(exc, message)
    await context.abort(status.code, status.details, status.trailing_metadata)


def rpc(method: Callable) -> Callable:
    """Wrap a unary servicer method: one log event per call, errors mapped to status codes."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        started = time.monotonic()
        code = grpc.StatusCode.OK
        fields = _ids(request)
        self._enter()
        try:
            _check_decoded(request)
            response = await method(self, request, context)
            if isinstance(response, pb.Operation) and response.id:
                fields["operation_id"] = response.id
            return response
        except errors.BucketsError as exc:
            code = status_code_for(exc)
            await _abort(context, method.__name__, exc)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            await _abort(context, method.__name__, exc)
        finally:
            self._leave()
            log.info(
                "rpc",
                method=method.__name__,
                code=code.name,
                duration=round(time.monotonic() - started, 4),
                **fields,
            )

    return wrapper


def stream_rpc(method: Callable) -> Callable:
    """Like :func:`rpc`, for server-streaming methods."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        started = time.monotonic()
        code = grpc.StatusCode.OK
        self._enter()
        try:
            _check_decoded(request)
            async for item in method(self, request, context):
                yield item
        except errors.BucketsError as exc:
            code = status_code_for(exc)
            await _abort(context, method.__name__, exc)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            await _abort(context, method.__name__, exc)
        finally:
            self._leave()
            log.info("rpc", method=method.__name__, code=code.name,
                     duration=round(time.monotonic() - started, 4), **_ids(request))

    return wrapper


def _operation(result: tuple[OperationRecord, bool]) -> pb.Operation:
    record, joined = result
    return convert.operation_to_proto(record, joined=joined)


def _repository(request) -> object:
    return convert.repository_from_proto(request.repository, request.HasField("repository"))


class AgentServicer(CallsInFlight, pb_grpc.AgentServicer):
    """Takes the :class:`AgentService` it serves."""

    def __init__(self, service: AgentService) -> None:
        self._service = service
        self._init_in_flight()

    # ------------------------------------------------------------ operations

    @rpc
    async def Backup(self, request: pb.BackupRequest, context) -> pb.Operation:
        return _operation(
            self._service.backup(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                force=request.force,
                purpose=request.purpose,
                tags=list(request.tags),
                subpath=request.subpath,
            )
        )

    @rpc
    async def Restore(self, request: pb.RestoreRequest, context) -> pb.Operation:
        return _operation(
            self._service.restore(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                snapshot_id=request.snapshot_id,
                subpath=request.subpath,
                target_path=request.target_path,
                source_project_id=request.source_project_id,
                on_conflict=convert.conflict_policy_from_proto(request.on_conflict),
                force=request.force,
            )
        )

    @rpc
    async def UndoRestore(self, request: pb.UndoRestoreRequest, context) -> pb.Operation:
        return _operation(
            self._service.undo_restore(
                request_id=request.request_id,
                project_id=request.project_id,
                restore_operation_id=request.restore_operation_id,
            )
        )

    @rpc
    async def Verify(self, request: pb.VerifyRequest, context) -> pb.Operation:
        return _operation(
            self._service.verify(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                mode=convert.verify_mode_from_proto(request.mode),
                read_data_subset=request.read_data_subset,
                sentinel_path=request.sentinel_path,
                sentinel_content=request.sentinel_content,
                snapshot_id=request.snapshot_id,
            )
        )

    @rpc
    async def EnsureProject(self, request: pb.EnsureProjectRequest, context) -> pb.Operation:
        return _operation(
            self._service.ensure_project(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                mode=convert.ensure_mode_from_proto(request.mode),
                quota_bytes=request.quota_bytes,
                snapshot_id=request.snapshot_id,
                precopy_key=request.precopy_key,
            )
        )

    @rpc
    async def PreCopy(self, request: pb.PreCopyRequest, context) -> pb.Operation:
        return _operation(
            self._service.precopy(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                snapshot_id=request.snapshot_id,
                key=request.key,
            )
        )

    @rpc
    async def Drain(self, request: pb.DrainRequest, context) -> pb.Operation:
        return _operation(
            self._service.drain(
                request_id=request.request_id,
                concurrency=request.concurrency,
                repository=_repository(request),
            )
        )

    @rpc
    async def DeleteProject(self, request: pb.DeleteProjectRequest, context) -> pb.Operation:
        return _operation(
            self._service.delete_project(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                delete_repository=request.delete_repository,
            )
        )

    @rpc
    async def Forget(self, request: pb.ForgetRequest, context) -> pb.Operation:
        return _operation(
            self._service.forget(
                request_id=request.request_id,
                project_id=request.project_id,
                repository=_repository(request),
                keep={"last": request.keep_last, "hourly": request.keep_hourly, "daily": request.keep_daily,
                      "weekly": request.keep_weekly, "monthly": request.keep_monthly},
                prune=request.prune,
                protected=list(request.protected_snapshot_ids),
                snapshot_ids=list(request.snapshot_ids),
            )
        )

    @rpc
    async def CopyFiles(self, request: pb.CopyFilesRequest, context) -> pb.Operation:
        return _operation(
            self._service.copy_files(
                request_id=request.request_id,
                source_project_id=request.source_project_id,
                source_path=request.source_path,
                target_project_id=request.target_project_id,
                target_path=request.target_path,
                on_conflict=convert.conflict_policy_from_proto(request.on_conflict),
            )
        )

    @rpc
    async def CheckCopyTarget(self, request: pb.CheckCopyTargetRequest, context) -> pb.CheckCopyTargetResponse:
        exists = self._service.check_copy_target(
            request.project_id, request.target_path, convert.conflict_policy_from_proto(request.on_conflict))
        return pb.CheckCopyTargetResponse(exists=exists)

    # ------------------------------------------------------------ following operations

    @stream_rpc
    async def StreamProgress(self, request: pb.StreamProgressRequest, context) -> AsyncIterator[pb.ProgressUpdate]:
        if request.from_seq < 0:
            raise errors.InvalidArgument("from_seq must not be negative")
        async for item in self._service.operations.watch(request.operation_id, request.from_seq):
            if isinstance(item, OperationRecord):
                yield pb.ProgressUpdate(operation=convert.operation_to_proto(item))
            elif isinstance(item, ProgressEvent):
                yield pb.ProgressUpdate(event=convert.event_to_proto(item))
            else:
                yield pb.ProgressUpdate(keep_alive=pb.KeepAlive(time=convert.timestamp(time.time())))

    @rpc
    async def GetOperation(self, request: pb.GetOperationRequest, context) -> pb.Operation:
        return convert.operation_to_proto(self._service.operations.get(request.operation_id))

    @rpc
    async def ListOperations(self, request: pb.ListOperationsRequest, context) -> pb.ListOperationsResponse:
        records, token = self._service.list_operations(
            project_id=request.project_id,
            states=[convert.state_from_proto(s) for s in request.states],
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListOperationsResponse(
            operations=[convert.operation_to_proto(r) for r in records], next_page_token=token
        )

    @rpc
    async def CancelOperation(self, request: pb.CancelOperationRequest, context) -> pb.Operation:
        return convert.operation_to_proto(await self._service.operations.cancel(request.operation_id))

    # ------------------------------------------------------------ status

    @rpc
    async def GetProjectStatus(self, request: pb.GetProjectStatusRequest, context) -> pb.ProjectStatus:
        return convert.project_status_to_proto(
            await self._service.project_status(request.project_id, scan=not request.without_scan))

    @rpc
    async def GetHostStatus(self, request: pb.GetHostStatusRequest, context) -> pb.HostStatus:
        status = self._service.host_status(over_rpo_limit=convert.over_rpo_limit(request.over_rpo_limit))
        message = pb.HostStatus(
            host_id=status.host_id,
            projects=status.projects,
            dirty=status.dirty,
            up_to_date=status.up_to_date,
            never_backed_up=status.never_backed_up,
            running_operations=status.running_operations,
            queued_operations=status.queued_operations,
            disk_total_bytes=status.disk_total_bytes,
            disk_free_bytes=status.disk_free_bytes,
            memory_total_bytes=status.memory_total_bytes,
            memory_available_bytes=status.memory_available_bytes,
            engine=status.engine,
            backend=status.backend,
        )
        convert.host_rpo_into(message, status.rpo, status.observed_at)
        return message

    @rpc
    async def ListProjects(self, request: pb.ListProjectsRequest, context) -> pb.ListProjectsResponse:
        projects, observed_at = await self._service.list_projects()
        return convert.list_projects_to_proto(projects, observed_at)

    @rpc
    async def GetCapabilities(self, request: pb.GetCapabilitiesRequest, context) -> pb.Capabilities:
        caps = await self._service.capabilities()
        return pb.Capabilities(
            engine=caps.engine,
            engine_version=caps.engine_version,
            backend=caps.backend,
            features=list(caps.features),
            limitations=list(caps.limitations),
            max_concurrent_operations=caps.max_concurrent_operations,
            read_file_max_bytes=caps.read_file_max_bytes,
            agent_version=caps.agent_version,
            host_id=caps.host_id,
        )

    # ------------------------------------------------------------ browsing

    @rpc
    async def ListSnapshots(self, request: pb.ListSnapshotsRequest, context) -> pb.ListSnapshotsResponse:
        snapshots, token, sizes = await self._service.list_snapshots(
            project_id=request.project_id,
            repository=_repository(request),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListSnapshotsResponse(
            snapshots=[convert.snapshot_to_proto(s, size) for s, size in zip(snapshots, sizes)],
            next_page_token=token,
        )

    @rpc
    async def ListFiles(self, request: pb.ListFilesRequest, context) -> pb.ListFilesResponse:
        entries, token = await self._service.list_files(
            project_id=request.project_id,
            repository=_repository(request),
            snapshot_id=request.snapshot_id,
            path=request.path,
            depth=request.depth,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListFilesResponse(entries=[convert.entry_to_proto(e) for e in entries], next_page_token=token)

    @rpc
    async def ReadFile(self, request: pb.ReadFileRequest, context) -> pb.ReadFileResponse:
        content, truncated, binary, size = await self._service.read_file(
            project_id=request.project_id,
            repository=_repository(request),
            snapshot_id=request.snapshot_id,
            path=request.path,
            max_bytes=request.max_bytes,
        )
        return pb.ReadFileResponse(content=content, truncated=truncated, binary=binary, size=size)

    # ------------------------------------------------------------ move lock

    @rpc
    async def Freeze(self, request: pb.FreezeRequest, context) -> pb.FreezeResponse:
        result = await self._service.freeze(
            request.project_id, sentinel_path=request.sentinel_path, sentinel_content=request.sentinel_content,
            writers_policy=convert.writer_policy(request.writers),
        )
        return pb.FreezeResponse(
            frozen=result.frozen,
            stopped=[pb.StoppedProcess(pid=s.pid, uid=s.uid, command=s.command, action=s.action, paths=s.paths)
                     for s in result.stopped],
            cgroup=result.cgroup,
        )

    @rpc
    async def Thaw(self, request: pb.ThawRequest, context) -> pb.ThawResponse:
        result = await self._service.thaw(request.project_id, sentinel_path=request.sentinel_path,
                                          sentinel_content=request.sentinel_content)
        return pb.ThawResponse(frozen=result.frozen, sentinel=result.sentinel)

    @rpc
    async def MarkEdited(self, request: pb.MarkEditedRequest, context) -> pb.MarkEditedResponse:
        # Not ToDatetime().timestamp(): that raises (INTERNAL) on an out-of-range time and reads
        # the naive UTC datetime it returns as local time.
        when = convert.seconds_from_proto(request.time, field="time") if request.HasField("time") else None
        await self._service.mark_edited(request.project_id, when)
        return pb.MarkEditedResponse()
