"""The agent's one exception tree.

Every failure the agent reports to a caller is one of these classes. The gRPC
status code of each class is decided in exactly one place,
:mod:`agent.status_codes`; nothing below the servicer knows about gRPC.
"""

from __future__ import annotations


class BucketsError(Exception):
    """Base of every error the agent reports to a caller.

    ``message`` is safe to show to a caller (no secrets); ``detail`` may carry
    a masked stderr tail of an engine process for logs and operation records.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class InvalidArgument(BucketsError):
    """Malformed id, a path escaping the project, a bad field."""


class NotFound(BucketsError):
    """Project, snapshot, repository or operation does not exist."""


class AlreadyExists(BucketsError):
    """A request id reused with different parameters."""


class Conflict(BucketsError):
    """Another operation on the project conflicts (maps to ABORTED)."""


class Unavailable(BucketsError):
    """Retryable: repository locked, bucket or endpoint unreachable."""


class FailedPrecondition(BucketsError):
    """Wrong repository password, frozen project, snapshot layout not v2."""


class DataLoss(BucketsError):
    """MAC, decryption or verification failure in a repository."""


class ResourceExhausted(BucketsError):
    """Disk or quota full, or the operation queue is full."""


class Unimplemented(BucketsError):
    """The engine or backend lacks a feature, or the RPC is not built yet."""


class Unauthenticated(BucketsError):
    """The caller presented no valid credentials."""


class PermissionDenied(BucketsError):
    """The caller's credentials do not allow this call."""


class Cancelled(BucketsError):
    """The operation was cancelled on request."""


class DeadlineExceeded(BucketsError):
    """A child process or step ran past its time limit."""


class Internal(BucketsError):
    """A bug or an unexpected failure; never raised for a caller's mistake."""
