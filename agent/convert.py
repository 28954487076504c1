"""Conversion between protobuf messages and the agent's domain values (and nothing else)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from agent import errors
from agent.placing import ConflictPolicy
from agent.engine import restic_args as ra
from agent.engine.base import Snapshot
from agent.model import (
    OperationError,
    OperationKind,
    OperationRecord,
    OperationState,
    ProgressEvent,
    ProjectOutcome,
    Summary,
)
from agent.repository import LocalSpec, RepositorySpec, S3Spec
from hub_client.proto.buckets.v1 import agent_pb2 as pb

_KINDS = {
    OperationKind.BACKUP: pb.OPERATION_KIND_BACKUP,
    OperationKind.RESTORE: pb.OPERATION_KIND_RESTORE,
    OperationKind.VERIFY: pb.OPERATION_KIND_VERIFY,
    OperationKind.ENSURE: pb.OPERATION_KIND_ENSURE,
    OperationKind.DRAIN: pb.OPERATION_KIND_DRAIN,
    OperationKind.DELETE: pb.OPERATION_KIND_DELETE,
    OperationKind.FORGET: pb.OPERATION_KIND_FORGET,
    OperationKind.COPY: pb.OPERATION_KIND_COPY,
    OperationKind.PRECOPY: pb.OPERATION_KIND_PRECOPY,
}


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799


def seconds_from_proto(stamp: Timestamp, *, field: str) -> float:
    """A request's Timestamp as POSIX seconds (UTC); InvalidArgument for one outside the range
    google.protobuf.Timestamp allows (years 1 to 9999, nanos 0 to 999,999,999)."""
    if not (_MIN_TIMESTAMP_SECONDS <= stamp.seconds <= _MAX_TIMESTAMP_SECONDS and 0 <= stamp.nanos <= 999_999_999):
        raise errors.InvalidArgument(
            f"{field} is not a valid timestamp (seconds {stamp.seconds}, nanos {stamp.nanos}): "
            "years 1 to 9999, nanos 0 to 999999999"
        )
    return stamp.seconds + stamp.nanos / 1e9


def state_to_proto(state: OperationState) -> int:
    return pb.OperationState.Value(state.value)


def state_from_proto(value: int) -> OperationState:
    if value == pb.OPERATION_STATE_UNSPECIFIED or value not in pb.OperationState.values():
        raise errors.InvalidArgument(f"unknown operation state {value}")
    return OperationState(pb.OperationState.Name(value))


def error_to_proto(error: OperationError | None) -> pb.OperationError | None:
    return None if error is None else pb.OperationError(code=error.code, message=error.message, reason=error.reason,
                                                        metadata=dict(error.metadata))


def summary_to_proto(summary: Summary | None) -> pb.OperationSummary | None:
    if summary is None:
        return None
    return pb.OperationSummary(
        snapshot_id=summary.snapshot_id,
        bytes_added=summary.bytes_added,
        bytes_processed=summary.bytes_processed,
        files_processed=summary.files_processed,
        files_new=summary.files_new,
        files_changed=summary.files_changed,
        duration_seconds=summary.duration_seconds,
        warnings=list(summary.warnings),
        projects=[outcome_to_proto(outcome) for outcome in summary.projects],
        restore_mode=summary.restore_mode,
        bytes_fetched=summary.bytes_fetched,
        files_fetched=summary.files_fetched,
        files_deleted=summary.files_deleted,
    )


def outcome_to_proto(outcome: ProjectOutcome) -> pb.ProjectOutcome:
    return pb.ProjectOutcome(
        project_id=outcome.project_id,
        state=state_to_proto(outcome.state),
        snapshot_id=outcome.snapshot_id,
        error=error_to_proto(outcome.error),
        operation_id=outcome.operation_id,
    )


def operation_to_proto(record: OperationRecord, *, joined: bool = False) -> pb.Operation:
    return pb.Operation(
        id=record.id,
        request_id=record.request_id,
        kind=_KINDS[record.kind],
        project_id=record.project_id,
        state=state_to_proto(record.state),
        created_at=timestamp(record.created_at),
        started_at=timestamp(record.started_at),
        finished_at=timestamp(record.finished_at),
        error=error_to_proto(record.error),
        summary=summary_to_proto(record.summary),
        last_seq=record.last_seq,
        joined=joined,
    )


def event_to_proto(event: ProgressEvent) -> pb.ProgressEvent:
    return pb.ProgressEvent(
        operation_id=event.operation_id,
        seq=event.seq,
        time=timestamp(event.time),
        state=state_to_proto(event.state),
        phase=event.phase,
        percent=event.percent,
        bytes_done=event.bytes_done,
        bytes_total=event.bytes_total,
        files_done=event.files_done,
        files_total=event.files_total,
        bytes_per_second=event.bytes_per_second,
        eta_seconds=event.eta_seconds,
        message=event.message,
        terminal=event.terminal,
        summary=summary_to_proto(event.summary),
        error=error_to_proto(event.error),
    )


def repository_from_proto(message: pb.RepositorySpec, present: bool) -> RepositorySpec | None:
    """The request's repository spec, or None when the request carried none."""
    if not present:
        return None
    which = message.WhichOneof("location")
    location: LocalSpec | S3Spec | None = None
    if which == "local":
        location = LocalSpec(path=message.local.path)
    elif which == "s3":
        s3 = message.s3
        location = S3Spec(
            endpoint=s3.endpoint,
            region=s3.region,
            bucket=s3.bucket,
            root=s3.root,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
        )
    return RepositorySpec(location=location, password=message.password)


def snapshot_to_proto(snapshot: Snapshot, size_bytes: int = 0) -> pb.Snapshot:
    tags = ra.tag_map(snapshot.tags)
    return pb.Snapshot(
        id=snapshot.id,
        short_id=snapshot.short_id,
        time=timestamp(snapshot.time.timestamp()),
        hostname=snapshot.hostname,
        paths=list(snapshot.paths),
        tags=list(snapshot.tags),
        layout=tags.get("layout", ""),
        project_id=tags.get("project", ""),
        source_host_id=tags.get("host", ""),
        operation_id=tags.get("op", ""),
        purpose=tags.get("purpose", ""),
        size_bytes=size_bytes,
    )


VERIFY_MODES = {
    pb.VerifyRequest.MODE_UNSPECIFIED: "repository",
    pb.VerifyRequest.REPOSITORY: "repository",
    pb.VerifyRequest.READ_DATA: "read_data",
    pb.VerifyRequest.SNAPSHOT_TREE: "snapshot_tree",
    pb.VerifyRequest.SENTINEL: "sentinel",
    pb.VerifyRequest.COUNTS: "counts",
}


def verify_mode_from_proto(value: int) -> str:
    try:
        return VERIFY_MODES[value]
    except KeyError:
        raise errors.InvalidArgument(f"unknown verify mode {value}") from None


ENSURE_MODES = {
    pb.EnsureProjectRequest.MODE_UNSPECIFIED: "none",
    pb.EnsureProjectRequest.NONE: "none",
    pb.EnsureProjectRequest.AUTO: "auto",
    pb.EnsureProjectRequest.REQUIRED: "required",
}


def ensure_mode_from_proto(value: int) -> str:
    try:
        return ENSURE_MODES[value]
    except KeyError:
        raise errors.InvalidArgument(f"unknown EnsureProject mode {value}") from None


CONFLICT_POLICIES = {
    pb.CONFLICT_POLICY_UNSPECIFIED: None,
    pb.FAIL: ConflictPolicy.FAIL,
    pb.OVERWRITE: ConflictPolicy.OVERWRITE,
    pb.SKIP: ConflictPolicy.SKIP,
}


def conflict_policy_from_proto(value: int) -> ConflictPolicy | None:
    """The request's on_conflict; None when unspecified (the caller's default, OVERWRITE)."""
    try:
        return CONFLICT_POLICIES[value]
    except KeyError:
        raise errors.InvalidArgument(f"unknown on_conflict {value}") from None


def project_status_to_proto(status) -> pb.ProjectStatus:
    """An :class:`agent.service.ProjectStatus` as the wire message (no secrets in it)."""
    fresh = status.freshness
    message = pb.ProjectStatus(
        project_id=status.project_id,
        present=status.present,
        size_bytes=status.size_bytes,
        last_backup_snapshot_id=fresh.last_backup_snapshot,
        dirty=fresh.dirty,
        frozen=status.frozen,
        repository_location=status.repository_location,
    )
    if fresh.last_backup is not None:
        message.last_backup.CopyFrom(timestamp(fresh.last_backup))
    if fresh.last_change is not None:
        message.last_change.CopyFrom(timestamp(fresh.last_change))
    if status.running_operation is not None:
        message.running_operation.CopyFrom(operation_to_proto(status.running_operation))
    if status.last_error is not None:
        message.last_error.CopyFrom(error_to_proto(status.last_error))
        if status.last_error_time is not None:
            message.last_error_time.CopyFrom(timestamp(status.last_error_time))
    if fresh.unprotected_since is not None:
        message.unprotected_since.CopyFrom(timestamp(fresh.unprotected_since))
    message.unprotected_age_seconds = status.unprotected_age
    message.over_rpo = bool(status.over_rpo_reason)
    message.over_rpo_reason = status.over_rpo_reason
    if status.last_restore:
        receipt = status.last_restore
        message.last_restore.CopyFrom(pb.RestoreReceipt(
            snapshot_id=receipt["snapshot_id"], time=timestamp(receipt["time"]), operation_id=receipt["operation_id"],
        ))
    return message


# GetHostStatusRequest.over_rpo_limit: 0 asks for the default; more than the cap gets the cap.
DEFAULT_OVER_RPO_LIMIT = 100
MAX_OVER_RPO_LIMIT = 10_000


def over_rpo_limit(value: int) -> int:
    """The number of over-RPO projects to list for a request's ``over_rpo_limit``."""
    return DEFAULT_OVER_RPO_LIMIT if value == 0 else min(value, MAX_OVER_RPO_LIMIT)


def host_rpo_into(message: pb.HostStatus, figures, observed_at: float) -> None:
    """Fill a HostStatus's RPO fields from an :class:`agent.rpo.HostRpo` (None: none computed)."""
    message.observed_at.CopyFrom(timestamp(observed_at))
    if figures is None:
        return
    message.rpo_seconds = figures.rpo_seconds
    message.max_unprotected_age_seconds = figures.max_age
    message.p99_unprotected_age_seconds = figures.p99_age
    message.over_rpo_count = figures.over_rpo_count
    for item in figures.over_rpo:
        message.over_rpo.add(project_id=item.project_id, unprotected_since=timestamp(item.unprotected_since),
                             unprotected_age_seconds=item.age, reason=item.reason)


def list_projects_to_proto(projects, observed_at: float) -> pb.ListProjectsResponse:
    """:meth:`agent.service.AgentService.list_projects` as the wire message."""
    response = pb.ListProjectsResponse(observed_at=timestamp(observed_at))
    for project in projects:
        fresh = project.freshness
        message = response.projects.add(project_id=project.project_id, last_backup_snapshot_id=fresh.last_backup_snapshot,
                                        dirty=fresh.dirty, frozen=project.frozen)
        if fresh.last_backup is not None:
            message.last_backup.CopyFrom(timestamp(fresh.last_backup))
        if fresh.last_change is not None:
            message.last_change.CopyFrom(timestamp(fresh.last_change))
        if fresh.unprotected_since is not None:
            message.unprotected_since.CopyFrom(timestamp(fresh.unprotected_since))
        message.unprotected_age_seconds = project.unprotected_age
        message.over_rpo = bool(project.over_rpo_reason)
        message.over_rpo_reason = project.over_rpo_reason
    return response


ENTRY_TYPES = {
    "file": pb.FileEntry.FILE,
    "dir": pb.FileEntry.DIRECTORY,
    "symlink": pb.FileEntry.SYMLINK,
    "other": pb.FileEntry.OTHER,
}


def entry_to_proto(entry) -> pb.FileEntry:
    """An :class:`agent.browse.Entry` as the wire message."""
    message = pb.FileEntry(
        path=entry.path, type=ENTRY_TYPES.get(entry.type, pb.FileEntry.OTHER), size=entry.size, mode=entry.mode,
        link_target=entry.link_target,
    )
    if entry.mtime_ns is not None:
        # Exact where the listing has nanoseconds (a float of them loses the last few hundred).
        message.mtime.FromNanoseconds(entry.mtime_ns)
    else:
        message.mtime.CopyFrom(timestamp(entry.mtime.timestamp()))
    return message


WRITER_POLICIES = {
    pb.WRITER_POLICY_UNSPECIFIED: "",
    pb.WRITERS_STOP: "stop",
    pb.WRITERS_REFUSE: "refuse",
}


def writer_policy(value: int) -> str:
    """A FreezeRequest's writers as "stop", "refuse" or "" (the agent's configured default)."""
    try:
        return WRITER_POLICIES[value]
    except KeyError:
        raise errors.InvalidArgument(f"unknown writers policy {value}") from None
