"""Domain types of operations: kinds, states, progress events and summaries.

No proto types here; :mod:`agent.convert` maps these to and from the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class OperationKind(str, enum.Enum):
    BACKUP = "backup"
    RESTORE = "restore"
    VERIFY = "verify"
    ENSURE = "ensure"
    DRAIN = "drain"
    DELETE = "delete"
    FORGET = "forget"
    COPY = "copy"
    PRECOPY = "precopy"


class OperationState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    SUCCEEDED_WITH_WARNINGS = "SUCCEEDED_WITH_WARNINGS"
    UP_TO_DATE = "UP_TO_DATE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"

    @property
    def terminal(self) -> bool:
        return self not in (OperationState.PENDING, OperationState.RUNNING, OperationState.CANCELLING)


# Kinds that change a project's data or repository; at most one runs per project.
MUTATING_KINDS = frozenset(
    {OperationKind.BACKUP, OperationKind.RESTORE, OperationKind.ENSURE, OperationKind.DELETE, OperationKind.FORGET,
     OperationKind.COPY, OperationKind.PRECOPY}
)


@dataclass(frozen=True)
class OperationError:
    code: str  # gRPC status code name
    message: str
    # The ErrorInfo reason and metadata of the failure (agent.status_codes.operation_error);
    # records written before they were kept have none.
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class ProjectOutcome:
    """What a host-wide operation (a drain) did for one project."""

    project_id: str
    state: OperationState
    snapshot_id: str = ""
    error: OperationError | None = None
    # The backup operation that did the work; "" when none was needed.
    operation_id: str = ""


@dataclass(frozen=True)
class Summary:
    snapshot_id: str = ""
    bytes_added: int = 0
    bytes_processed: int = 0
    files_processed: int = 0
    files_new: int = 0
    files_changed: int = 0
    duration_seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    # A drain's outcome per project (empty for every other kind).
    projects: tuple[ProjectOutcome, ...] = ()
    # The state the job asks for: SUCCEEDED (default), UP_TO_DATE; warnings turn
    # SUCCEEDED into SUCCEEDED_WITH_WARNINGS.
    state: OperationState = OperationState.SUCCEEDED
    # A whole restore or a pre-copy: "whole" (into an empty tree) or "incremental" (over a
    # pre-copy, reading only what differed); "" when nothing was restored.
    restore_mode: str = ""
    # What the restore wrote from the repository into the target, and what it removed from it.
    bytes_fetched: int = 0
    files_fetched: int = 0
    files_deleted: int = 0


@dataclass(frozen=True)
class ProgressEvent:
    operation_id: str
    seq: int
    time: float
    state: OperationState
    phase: str
    percent: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    bytes_per_second: float = 0.0
    eta_seconds: float = -1.0
    message: str = ""
    terminal: bool = False
    summary: Summary | None = None
    error: OperationError | None = None


@dataclass
class OperationRecord:
    """One operation as kept in the journal; mutated only by the operation manager."""

    id: str
    request_id: str
    kind: OperationKind
    project_id: str
    fingerprint: str
    params: dict
    state: OperationState
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: OperationError | None = None
    summary: Summary | None = None
    last_seq: int = 0
    recovery: dict = field(default_factory=dict)
