"""The agent's one exception tree.

Every failure the agent reports to a caller is one of these classes. The gRPC
status code of each class is decided in exactly one place,
:mod:`agent.status_codes`; nothing below the servicer knows about gRPC.

Each class also has a stable ``reason`` (UPPER_SNAKE): the ``google.rpc.ErrorInfo``
reason the caller reads instead of the message text, and each error carries
``metadata`` (the ids it is about: ``project_id``, ``operation_id``,
``snapshot_id``, ``request_id`` ...), sent as the ErrorInfo's metadata. A
subclass names a more precise cause than its base (``ProjectNotFound`` is a
``NotFound``). The reasons per RPC are listed in ``protos/ERRORS.md``.
"""

from __future__ import annotations


class BucketsError(Exception):
    """Base of every error the agent reports to a caller.

    ``message`` is safe to show to a caller (no secrets); ``detail`` may carry
    a masked stderr tail of an engine process for logs and operation records.
    """

    reason = "INTERNAL"

    def __init__(self, message: str, *, detail: str = "", **metadata: str) -> None:
        """``metadata``: ids the error is about (values made strings, empty ones dropped)."""
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.metadata = {key: str(value) for key, value in metadata.items() if value not in (None, "")}

    def __str__(self) -> str:
        return self.message


class InvalidArgument(BucketsError):
    """Malformed id, a path escaping the project, a bad field."""

    reason = "INVALID_ARGUMENT"


class NotFound(BucketsError):
    """Project, snapshot, repository or operation does not exist."""

    reason = "NOT_FOUND"


class AlreadyExists(BucketsError):
    """A request id reused with different parameters."""

    reason = "ALREADY_EXISTS"


class Conflict(BucketsError):
    """Another operation on the project conflicts (maps to ABORTED)."""

    reason = "OPERATION_CONFLICT"


class Unavailable(BucketsError):
    """Retryable: repository locked, bucket or endpoint unreachable."""

    reason = "UNAVAILABLE"


class FailedPrecondition(BucketsError):
    """Wrong repository password, frozen project, snapshot layout not v2."""

    reason = "FAILED_PRECONDITION"


class DataLoss(BucketsError):
    """MAC, decryption or verification failure in a repository."""

    reason = "DATA_LOSS"


class ResourceExhausted(BucketsError):
    """Disk or quota full, or the operation queue is full."""

    reason = "RESOURCE_EXHAUSTED"


class Unimplemented(BucketsError):
    """The engine or backend lacks a feature, or the RPC is not built yet."""

    reason = "UNIMPLEMENTED"


class Unauthenticated(BucketsError):
    """The caller presented no valid credentials."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(BucketsError):
    """The caller's credentials do not allow this call."""

    reason = "PERMISSION_DENIED"


class Cancelled(BucketsError):
    """The operation was cancelled on request."""

    reason = "CANCELLED"


class DeadlineExceeded(BucketsError):
    """A child process or step ran past its time limit."""

    reason = "DEADLINE_EXCEEDED"


class Internal(BucketsError):
    """A bug or an unexpected failure; never raised for a caller's mistake."""

    reason = "INTERNAL"


# ---------------------------------------------------------------- precise causes (own reasons)


class ProjectNotFound(NotFound):
    """The project does not exist on this host (metadata: ``project_id``)."""

    reason = "PROJECT_NOT_FOUND"


class SnapshotNotFound(NotFound):
    """No snapshot with this id (metadata: ``snapshot_id``, ``project_id`` where known)."""

    reason = "SNAPSHOT_NOT_FOUND"


class OperationNotFound(NotFound):
    """No operation with this id (metadata: ``operation_id``)."""

    reason = "OPERATION_NOT_FOUND"


class PathNotFound(NotFound):
    """A path is not in the project or in the snapshot (metadata: ``path``, ``snapshot_id``)."""

    reason = "PATH_NOT_FOUND"


class RequestIdReused(AlreadyExists):
    """A request id used before for other parameters (metadata: ``request_id``, and
    ``operation_id`` of the operation it named)."""

    reason = "REQUEST_ID_REUSED"


class ProjectFrozen(FailedPrecondition):
    """The project is frozen (a move holds it); the call needs it thawed (metadata: ``project_id``)."""

    reason = "PROJECT_FROZEN"


class TargetExists(FailedPrecondition):
    """Something is at the target path and on_conflict is FAIL (metadata: ``path``)."""

    reason = "TARGET_EXISTS"


class SnapshotNotUsable(FailedPrecondition):
    """The snapshot cannot be restored here: no layout v2 metadata, another project's, or one
    path's copy snapshot (metadata: ``snapshot_id``, ``project_id``)."""

    reason = "SNAPSHOT_NOT_USABLE"
