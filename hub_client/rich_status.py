"""Rich gRPC errors of buckets' services: a ``google.rpc.Status`` with one ``google.rpc.ErrorInfo``.

Shared by every buckets server (the agent, the hub service) and by the Python
clients, so the wire shape is built and read in one place:

- servers: :func:`status_for` builds the ``grpc.Status`` (code, message and the
  ``grpc-status-details-bin`` trailer) and :func:`abort` ends a grpc.aio call with it;
- clients: :func:`error_info_of` reads the ErrorInfo back from a failed call
  (``grpc.RpcError``), never from the message text.

The ErrorInfo: ``reason`` a stable UPPER_SNAKE name of the cause (the catalogue
per RPC is ``protos/ERRORS.md``), ``domain`` :data:`DOMAIN`, ``metadata`` the ids
the error is about (``project_id``, ``operation_id``, ``snapshot_id``,
``request_id``, ``move_id`` ...), lower_snake keys as the proto fields are named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "buckets.v1"
# Bounds of what one ErrorInfo carries: metadata may echo caller input, and the whole trailer
# must stay far below the peer's metadata limit (8 KiB soft), or the caller gets
# RESOURCE_EXHAUSTED instead of the real status.
MAX_METADATA_ENTRIES = 16
MAX_METADATA_VALUE = 256
_KEY = re.compile(r"[a-z][a-zA-Z0-9_-]{0,63}")
_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,62}[A-Z0-9]")


@dataclass(frozen=True)
class ErrorInfo:
    """The decoded ``google.rpc.ErrorInfo`` of a failed call."""

    reason: str
    domain: str = DOMAIN
    metadata: Mapping[str, str] = field(default_factory=dict)


def clean_metadata(metadata: Mapping[str, object]) -> dict[str, str]:
    """``metadata`` as ErrorInfo metadata: string values cut to :data:`MAX_METADATA_VALUE`
    characters, empty values and keys that are not ``[a-z][a-zA-Z0-9_-]*`` dropped, at most
    :data:`MAX_METADATA_ENTRIES` entries (in the order given)."""
    cleaned: dict[str, str] = {}
    for key, value in metadata.items():
        if value is None or value == "" or not _KEY.fullmatch(key):
            continue
        cleaned[key] = str(value)[:MAX_METADATA_VALUE]
        if len(cleaned) == MAX_METADATA_ENTRIES:
            break
    return cleaned


def status_for(code: grpc.StatusCode, message: str, reason: str,
               metadata: Mapping[str, object] | None = None, domain: str = DOMAIN) -> grpc.Status:
    """The ``grpc.Status`` of a failed call: ``code``, ``message`` and a ``google.rpc.Status``
    with one ErrorInfo in its trailing metadata. Raises ValueError for an OK code or a
    ``reason`` that is not UPPER_SNAKE (a programming error: reasons are constants)."""
    if code is grpc.StatusCode.OK:
        raise ValueError("a rich error status cannot be OK")
    if not _REASON.fullmatch(reason):
        raise ValueError(f"error reason {reason!r} is not UPPER_SNAKE")
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=clean_metadata(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, reason: str,
                metadata: Mapping[str, object] | None = None, domain: str = DOMAIN) -> None:
    """End the grpc.aio call of ``context`` with :func:`status_for`'s status (raises AbortError,
    as ``context.abort`` does)."""
    status = status_for(code, message, reason, metadata, domain)
    await context.abort(status.code, status.details, status.trailing_metadata)


def error_info_of(call: object) -> ErrorInfo | None:
    """The ErrorInfo a failed call (a ``grpc.RpcError`` that is a ``grpc.Call``) carries, or None
    when it has none (a status made by grpc itself, e.g. UNAVAILABLE from a refused connection,
    or a peer without rich errors) or its trailer does not match the call's code and message."""
    if not callable(getattr(call, "trailing_metadata", None)):
        return None
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # the trailer's code or message differ from the call's: not trusted
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return ErrorInfo(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
    return None
