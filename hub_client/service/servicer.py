"""The gRPC servicer of ``buckets.v1.Hub``: read the request, call :class:`~.domain.HubService`
in a thread (the library blocks), convert the answer. Every method goes through :func:`rpc` or
:func:`stream_rpc`: one log event per call, errors mapped by :mod:`.status_codes`."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Callable

import grpc
import structlog

from agent.in_flight import CallsInFlight
from agent.servicer import Undecodable, _lenient, status_message
from agent.errors import InvalidArgument
from hub_client.proto.buckets.v1 import agent_pb2 as apb
from hub_client.proto.buckets.v1 import hub_pb2 as hpb
from hub_client.proto.buckets.v1 import hub_pb2_grpc as hpb_grpc
from hub_client.service import convert, logs
from hub_client.service.domain import HubService, HostView
from hub_client.service.status_codes import is_known, status_code_for, status_for
from hub_client.store import MoveStatus
from hub_client.store.models import utcnow

log = structlog.get_logger("hub.rpc")

SERVICE_NAME = hpb.DESCRIPTOR.services_by_name["Hub"].full_name


def add_to_server(servicer: "HubServicer", server) -> None:
    """Register ``servicer``; request bytes that do not parse reach it as :class:`Undecodable`
    (INVALID_ARGUMENT, where grpc's own parsing would answer UNKNOWN)."""
    service = hpb.DESCRIPTOR.services_by_name["Hub"]
    handlers = {}
    for method in service.methods:
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(hpb, method.input_type.name)),
            response_serializer=getattr(hpb, method.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _fields(request) -> dict:
    found = {}
    for name in ("request_id", "project_id", "host_id", "move_id", "copy_id"):
        value = getattr(request, name, "")
        if value and isinstance(value, str):
            found[name] = value[:80]
    return found


async def _abort(context, method: str, exc: BaseException) -> grpc.StatusCode:
    if not is_known(exc):
        log.error("rpc.internal_error", method=method, exc_info=exc)
        message = "internal error; see the hub's log"
    else:
        message = status_message(exc)
    status = status_for(exc, message)
    await context.abort(status.code, status.details, status.trailing_metadata)
    return status.code


def rpc(method: Callable) -> Callable:
    @functools.wraps(method)
    async def wrapper(self, request, context):
        started, code = time.monotonic(), grpc.StatusCode.OK
        self._enter()
        try:
            if isinstance(request, Undecodable):
                raise InvalidArgument(f"the request is not a valid {request.type_name} message")
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code = status_code_for(exc)
            await _abort(context, method.__name__, exc)
        finally:
            self._leave()
            log.info("rpc", method=method.__name__, code=code.name, duration=round(time.monotonic() - started, 4),
                     **(_fields(request) if not isinstance(request, Undecodable) else {}))

    return wrapper


def stream_rpc(method: Callable) -> Callable:
    @functools.wraps(method)
    async def wrapper(self, request, context):
        started, code = time.monotonic(), grpc.StatusCode.OK
        self._enter()
        try:
            if isinstance(request, Undecodable):
                raise InvalidArgument(f"the request is not a valid {request.type_name} message")
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code = status_code_for(exc)
            await _abort(context, method.__name__, exc)
        finally:
            self._leave()
            log.info("rpc", method=method.__name__, code=code.name, duration=round(time.monotonic() - started, 4),
                     **(_fields(request) if not isinstance(request, Undecodable) else {}))

    return wrapper


def _host(view: HostView) -> hpb.Host:
    return convert.host_message(view.host, view.backup, probed=view.probed, answer=view.answer)


class HubServicer(CallsInFlight, hpb_grpc.HubServicer):
    """Takes the :class:`HubService` it serves and the keep-alive period of FollowLog."""

    def __init__(self, service: HubService, *, keepalive_interval: float = 10.0, poll: float = 0.25) -> None:
        self._service = service
        self._keepalive = keepalive_interval
        self._poll = poll
        self._init_in_flight()

    def _project(self, project) -> hpb.Project:
        return convert.project_message(project, utcnow(), self._service.freshness_bound)

    @staticmethod
    async def _call(function, *args, **kwargs):
        return await asyncio.to_thread(function, *args, **kwargs)

    # ------------------------------------------------------------ hosts

    @rpc
    async def AddHost(self, request, context):
        return _host(await self._call(self._service.add_host, request.host_id, request.address, request.region,
                                      request.status))

    @rpc
    async def GetHost(self, request, context):
        return _host(await self._call(self._service.host_view, request.host_id, request.probe))

    @rpc
    async def ListHosts(self, request, context):
        views = await self._call(self._service.list_hosts, request.region, request.probe)
        return hpb.ListHostsResponse(hosts=[_host(view) for view in views])

    @rpc
    async def DrainHost(self, request, context):
        report = await self._call(self._service.drain, request.host_id, request.concurrency)
        return hpb.DrainHostResponse(host_id=report.host_id, operation_id=report.operation.id,
                                     outcomes=report.outcomes, backed_up=len(report.backed_up),
                                     up_to_date=len(report.up_to_date), failed=len(report.failed))

    @rpc
    async def UndrainHost(self, request, context):
        host = await self._call(self._service.undrain, request.host_id)
        return convert.host_message(host, await self._call(self._service.store.host_backup_status, host.id))

    @rpc
    async def ForceOffHost(self, request, context):
        host, losses = await self._call(self._service.force_off, request.host_id)
        return hpb.ForceOffHostResponse(host=convert.host_message(host),
                                        losses=[convert.loss_message(loss) for loss in losses])

    @rpc
    async def RemoveHost(self, request, context):
        return hpb.RemoveHostResponse(removed=await self._call(self._service.remove_host, request.host_id))

    # ------------------------------------------------------------ projects

    @rpc
    async def AddProject(self, request, context):
        return self._project(await self._call(self._service.add_project, request.project_id, request.host_id,
                                              request.region, request.repository))

    @rpc
    async def GetProject(self, request, context):
        return self._project(await self._call(self._service.get_project, request.project_id))

    @rpc
    async def ListProjects(self, request, context):
        projects, token = await self._call(self._service.list_projects, request.host_id, request.region,
                                           request.page_size, request.page_token)
        return hpb.HubListProjectsResponse(projects=[self._project(p) for p in projects], next_page_token=token)

    @rpc
    async def Refresh(self, request, context):
        answered, projects = await self._call(self._service.refresh, request.project_id, request.host_id)
        return hpb.RefreshResponse(hosts=[hpb.HostRefresh(host_id=h, reachable=up) for h, up in answered.items()],
                                   projects=[self._project(p) for p in projects])

    @rpc
    async def DeleteProject(self, request, context):
        return hpb.HubDeleteProjectResponse(deleted=await self._call(self._service.delete_project, request.project_id))

    @rpc
    async def CloneProject(self, request, context):
        return self._project(await self._call(self._service.clone, request.project_id, request.clone_id,
                                              request.host_id))

    # ------------------------------------------------------------ moves

    @rpc
    async def StartMove(self, request, context):
        return convert.move_message(await self._call(
            self._service.start_move, request.request_id, request.project_id, request.target_host, request.force,
            request.cross_region, request.force_target))

    @rpc
    async def GetMove(self, request, context):
        return convert.move_message(await self._call(self._service.get_move, request.move_id))

    @rpc
    async def ListMoves(self, request, context):
        moves = await self._call(self._service.list_moves, request.project_id, request.active_only)
        return hpb.ListMovesResponse(moves=[convert.move_message(m) for m in moves])

    @rpc
    async def CancelMove(self, request, context):
        return convert.move_message(await self._call(self._service.cancel_move, request.move_id))

    @rpc
    async def ResumeMove(self, request, context):
        return convert.move_message(await self._call(self._service.resume_move, request.move_id))

    @rpc
    async def RetryMove(self, request, context):
        force = request.force if request.HasField("force") else None
        force_target = request.force_target if request.HasField("force_target") else None
        return convert.move_message(await self._call(self._service.retry_move, request.move_id, force, force_target))

    # ------------------------------------------------------------ copies

    @rpc
    async def StartCopy(self, request, context):
        return convert.copy_message(await self._call(
            self._service.start_copy, request.request_id, request.source_project, request.source_path,
            request.target_project, request.target_path, request.on_conflict))

    @rpc
    async def GetCopy(self, request, context):
        return convert.copy_message(await self._call(self._service.get_copy, request.copy_id))

    @rpc
    async def ListCopies(self, request, context):
        copies = await self._call(self._service.list_copies, request.project_id, request.active_only)
        return hpb.ListCopiesResponse(copies=[convert.copy_message(c) for c in copies])

    @rpc
    async def CancelCopy(self, request, context):
        return convert.copy_message(await self._call(self._service.cancel_copy, request.copy_id))

    @rpc
    async def ResumeCopy(self, request, context):
        return convert.copy_message(await self._call(self._service.resume_copy, request.copy_id))

    @rpc
    async def RetryCopy(self, request, context):
        return convert.copy_message(await self._call(self._service.resume_copy, request.copy_id, "retry"))

    # ------------------------------------------------------------ the log stream

    @stream_rpc
    async def FollowLog(self, request, context):
        store = self._service.store
        which = request.WhichOneof("job")
        if which is None:
            raise InvalidArgument("name the job: move_id or copy_id")
        if request.from_seq < 0:
            raise InvalidArgument(f"from_seq must not be negative, got {request.from_seq}")
        if which == "move_id":
            job = await self._call(self._service.get_move, request.move_id)
            yield hpb.LogUpdate(move=convert.move_message(job))
            read = functools.partial(_read, store.movelog, job.id)
            status = functools.partial(self._status, store.get_move, job.id)
        else:
            job = await self._call(self._service.get_copy, request.copy_id)
            yield hpb.LogUpdate(copy=convert.copy_message(job))
            read = functools.partial(_read, store.copylog, job.id)
            status = functools.partial(self._status, store.get_copy, job.id)
        follower = logs.follow(read, status, from_seq=request.from_seq, keepalive=self._keepalive)
        while True:
            item = await asyncio.to_thread(next, follower, _END)
            if item is _END:
                return
            if isinstance(item, logs.Quiet):
                stamp = hpb.LogUpdate(keep_alive=apb.KeepAlive())
                stamp.keep_alive.time.GetCurrentTime()
                yield stamp
            elif isinstance(item, logs.Sleep):
                await asyncio.sleep(self._poll)
            else:
                yield hpb.LogUpdate(entry=convert.entry_message(item))

    def _status(self, get, job_id: str) -> str:
        """The job's status for its log's follower: as recorded, but a failed job that this
        process has queued or running again (its new attempt may not be recorded yet) is running."""
        status = get(job_id).status
        if status == MoveStatus.FAILED and self._service.runner.running(job_id):
            return MoveStatus.RUNNING
        return status

    # ------------------------------------------------------------ rescues and regions

    @rpc
    async def ListRescues(self, request, context):
        rescues = await self._call(self._service.list_rescues, request.project_id, request.move_id)
        return hpb.ListRescuesResponse(rescues=[convert.rescue_message(r) for r in rescues])

    @rpc
    async def ListRegions(self, request, context):
        return hpb.ListRegionsResponse(regions=self._service.regions(request.location))


_END = object()


def _read(log_of, job_id: str, after_seq: int):
    return log_of(job_id, after_seq=after_seq, limit=500)
