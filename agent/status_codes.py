"""The one place where agent errors become gRPC statuses: the code and the ErrorInfo details.

The code comes from the error's class (``_CODES``, through its bases), the
ErrorInfo's reason from the class's ``reason`` and its metadata from the
error's ``metadata`` (:mod:`agent.errors`); the wire shape is
:mod:`hub_client.rich_status`, shared with the hub service.
"""

from __future__ import annotations

import grpc

from agent import errors
from agent.model import OperationError
from hub_client import rich_status

_CODES: dict[type[errors.BucketsError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """Return the gRPC status code for ``error``; INTERNAL for anything unknown."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def code_name_for(error: BaseException) -> str:
    """Return the status code's name (e.g. ``"UNAVAILABLE"``) as stored in operation records."""
    return status_code_for(error).name


def error_class_for_code_name(name: str) -> type[errors.BucketsError]:
    """Inverse of :func:`code_name_for`, used when reloading operation records."""
    for cls, code in _CODES.items():
        if code.name == name:
            return cls
    return errors.Internal


def reason_for(error: BaseException) -> str:
    """The ErrorInfo reason of ``error``: its class's ``reason``; INTERNAL for anything that is
    no agent error."""
    return error.reason if isinstance(error, errors.BucketsError) else errors.Internal.reason


def status_for(error: BaseException, message: str) -> grpc.Status:
    """The status a call failing with ``error`` ends with: its code, ``message`` (the caller-safe
    text the servicer chose) and one ErrorInfo (reason, domain ``buckets.v1``, the error's
    metadata; none for an error that is no agent error: it may hold anything)."""
    metadata = error.metadata if isinstance(error, errors.BucketsError) else {}
    return rich_status.status_for(status_code_for(error), message, reason_for(error), metadata)


def operation_error(error: BaseException, message: str | None = None) -> OperationError:
    """The record of an operation that failed with ``error``: the code's name, ``message``
    (default: the error's), and the reason and metadata its RPC status would carry."""
    metadata = error.metadata if isinstance(error, errors.BucketsError) else {}
    text = message if message is not None else (error.message if isinstance(error, errors.BucketsError) else str(error))
    return OperationError(code_name_for(error), text, reason_for(error), rich_status.clean_metadata(metadata))
