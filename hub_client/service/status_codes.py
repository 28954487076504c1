"""The one place where the hub service's exceptions become gRPC status codes.

The hub library raises store errors (:mod:`hub_client.store.errors`), job errors
(:class:`hub_client.steps.JobError`: MoveError, MoveRefused, CopyError, CopyRefused, each with
the code an agent gave, if any) and agent call errors (:class:`hub_client.client.AgentError`);
the service's own checks raise the agent's error classes (:mod:`agent.errors`), mapped as the
agent maps them (:mod:`agent.status_codes`).
"""

from __future__ import annotations

import grpc

from agent import errors as agent_errors
from agent.status_codes import reason_for as agent_reason_for
from agent.status_codes import status_code_for as agent_status_code_for
from hub_client import rich_status
from hub_client.client import AgentError
from hub_client.steps import JobError
from hub_client.store.errors import (
    CopyInProgress, HostInUse, InvalidTransition, LeaseHeld, LeaseLost, MoveInProgress, NotFound,
)

# A job error without an agent's code: the state of things refused it (e.g. resuming a finished move).
JOB_DEFAULT = grpc.StatusCode.FAILED_PRECONDITION
# Codes a job error may carry from an agent that the hub passes on as they are.
_JOB_CODES = {code.name: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for ``error``; INTERNAL for anything unknown."""
    if isinstance(error, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, (MoveInProgress, CopyInProgress, LeaseHeld, LeaseLost)):
        return grpc.StatusCode.ABORTED
    if isinstance(error, (InvalidTransition, HostInUse)):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, JobError):
        code = _JOB_CODES.get(error.code or "")
        # UNKNOWN / INTERNAL of an agent's operation are that step's failure, not a bug of this call.
        return code if code not in (None, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) else JOB_DEFAULT
    if isinstance(error, AgentError):
        return error.code if error.code is not grpc.StatusCode.OK else grpc.StatusCode.UNKNOWN
    if isinstance(error, agent_errors.BucketsError):
        return agent_status_code_for(error)
    return grpc.StatusCode.INTERNAL


def is_known(error: BaseException) -> bool:
    """Whether ``error`` is one the service reports with its own text (anything else is a bug:
    INTERNAL, with the text kept in the log)."""
    return isinstance(error, (NotFound, MoveInProgress, CopyInProgress, InvalidTransition, HostInUse, LeaseHeld,
                              LeaseLost, JobError, AgentError, agent_errors.BucketsError))


def reason_and_metadata(error: BaseException) -> tuple[str, dict[str, str]]:
    """The ErrorInfo of ``error``: a stable reason (protos/ERRORS.md) and the ids it is about,
    so a client never parses the message (e.g. the move that holds the project: ``move_id``)."""
    if isinstance(error, MoveInProgress):
        return "MOVE_IN_PROGRESS", {"project_id": error.project_id, "move_id": error.move_id or ""}
    if isinstance(error, CopyInProgress):
        return "COPY_IN_PROGRESS", {"project_id": error.project_id, "copy_id": error.copy_id or ""}
    if isinstance(error, LeaseHeld):
        return "JOB_OWNED_ELSEWHERE", {f"{error.kind}_id": error.job_id, "owner": error.owner}
    if isinstance(error, LeaseLost):
        return "LEASE_LOST", {f"{error.kind}_id": error.job_id, "owner": error.owner}
    if isinstance(error, HostInUse):
        return "HOST_IN_USE", {"host_id": error.host_id, "named_by": error.named_by}
    if isinstance(error, InvalidTransition):
        return "INVALID_TRANSITION", {}
    if isinstance(error, NotFound):
        return "NOT_FOUND", {}
    if isinstance(error, JobError):
        return ("JOB_REFUSED" if type(error).__name__.endswith("Refused") else "JOB_FAILED"), (
            {"agent_code": error.code} if error.code else {})
    if isinstance(error, AgentError):  # an agent's refusal passed on: its own ErrorInfo
        return (error.reason or "AGENT_ERROR"), dict(error.metadata)
    if isinstance(error, agent_errors.BucketsError):
        return agent_reason_for(error), dict(error.metadata)
    return "INTERNAL", {}


def status_for(error: BaseException, message: str) -> grpc.Status:
    """The status a hub call failing with ``error`` ends with: its code, ``message`` and the
    ErrorInfo of :func:`reason_and_metadata` (none for an unknown error: it may hold anything)."""
    code = status_code_for(error)
    if not is_known(error):
        return rich_status.status_for(code, message, "INTERNAL")
    reason, metadata = reason_and_metadata(error)
    return rich_status.status_for(code, message, reason, metadata)
