"""The one place where agent errors become gRPC status codes."""

from __future__ import annotations

import grpc

from agent import errors

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
