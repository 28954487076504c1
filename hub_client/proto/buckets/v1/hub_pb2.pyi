import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from hub_client.proto.buckets.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_PENDING: _ClassVar[JobStatus]
    JOB_RUNNING: _ClassVar[JobStatus]
    JOB_FAILED: _ClassVar[JobStatus]
    JOB_SUCCEEDED: _ClassVar[JobStatus]
    JOB_CANCELLED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_PENDING: JobStatus
JOB_RUNNING: JobStatus
JOB_FAILED: JobStatus
JOB_SUCCEEDED: JobStatus
JOB_CANCELLED: JobStatus

class HostBackupStatus(_message.Message):
    __slots__ = ("projects", "dirty", "up_to_date", "never_backed_up", "failing", "checked_at")
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    DIRTY_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    NEVER_BACKED_UP_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    projects: int
    dirty: int
    up_to_date: int
    never_backed_up: int
    failing: int
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, projects: _Optional[int] = ..., dirty: _Optional[int] = ..., up_to_date: _Optional[int] = ..., never_backed_up: _Optional[int] = ..., failing: _Optional[int] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RpoFigures(_message.Message):
    __slots__ = ("rpo_seconds", "max_unprotected_age_seconds", "p99_unprotected_age_seconds", "over_rpo_count", "over_rpo", "observed_at")
    RPO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_COUNT_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    rpo_seconds: float
    max_unprotected_age_seconds: float
    p99_unprotected_age_seconds: float
    over_rpo_count: int
    over_rpo: _containers.RepeatedCompositeFieldContainer[_agent_pb2.OverRpoProject]
    observed_at: _timestamp_pb2.Timestamp
    def __init__(self, rpo_seconds: _Optional[float] = ..., max_unprotected_age_seconds: _Optional[float] = ..., p99_unprotected_age_seconds: _Optional[float] = ..., over_rpo_count: _Optional[int] = ..., over_rpo: _Optional[_Iterable[_Union[_agent_pb2.OverRpoProject, _Mapping]]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("id", "address", "region", "status", "last_seen", "backup", "probed", "reachable", "rpo")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    PROBED_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    RPO_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    region: str
    status: str
    last_seen: _timestamp_pb2.Timestamp
    backup: HostBackupStatus
    probed: bool
    reachable: bool
    rpo: RpoFigures
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., region: _Optional[str] = ..., status: _Optional[str] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backup: _Optional[_Union[HostBackupStatus, _Mapping]] = ..., probed: bool = ..., reachable: bool = ..., rpo: _Optional[_Union[RpoFigures, _Mapping]] = ...) -> None: ...

class AddHostRequest(_message.Message):
    __slots__ = ("host_id", "address", "region", "status")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    address: str
    region: str
    status: str
    def __init__(self, host_id: _Optional[str] = ..., address: _Optional[str] = ..., region: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("host_id", "probe")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    probe: bool
    def __init__(self, host_id: _Optional[str] = ..., probe: bool = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("region", "probe")
    REGION_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    region: str
    probe: bool
    def __init__(self, region: _Optional[str] = ..., probe: bool = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ...) -> None: ...

class DrainHostRequest(_message.Message):
    __slots__ = ("host_id", "concurrency")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    concurrency: int
    def __init__(self, host_id: _Optional[str] = ..., concurrency: _Optional[int] = ...) -> None: ...

class DrainHostResponse(_message.Message):
    __slots__ = ("host_id", "operation_id", "outcomes", "backed_up", "up_to_date", "failed")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    BACKED_UP_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    operation_id: str
    outcomes: _containers.RepeatedCompositeFieldContainer[_agent_pb2.ProjectOutcome]
    backed_up: int
    up_to_date: int
    failed: int
    def __init__(self, host_id: _Optional[str] = ..., operation_id: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[_agent_pb2.ProjectOutcome, _Mapping]]] = ..., backed_up: _Optional[int] = ..., up_to_date: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class UndrainHostRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class ForceOffHostRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class OfflineLoss(_message.Message):
    __slots__ = ("host_id", "project_id", "last_backup", "last_edited", "loss_minutes", "recorded_at")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    LAST_EDITED_FIELD_NUMBER: _ClassVar[int]
    LOSS_MINUTES_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    project_id: str
    last_backup: _timestamp_pb2.Timestamp
    last_edited: _timestamp_pb2.Timestamp
    loss_minutes: int
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, host_id: _Optional[str] = ..., project_id: _Optional[str] = ..., last_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_edited: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loss_minutes: _Optional[int] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ForceOffHostResponse(_message.Message):
    __slots__ = ("host", "losses")
    HOST_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    host: Host
    losses: _containers.RepeatedCompositeFieldContainer[OfflineLoss]
    def __init__(self, host: _Optional[_Union[Host, _Mapping]] = ..., losses: _Optional[_Iterable[_Union[OfflineLoss, _Mapping]]] = ...) -> None: ...

class RemoveHostRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class RemoveHostResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: bool = ...) -> None: ...

class Project(_message.Message):
    __slots__ = ("id", "host_id", "region", "repository", "last_backup", "last_backup_snapshot", "last_edited", "reported_at", "stale", "freshness_bound_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LAST_EDITED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_BOUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    host_id: str
    region: str
    repository: str
    last_backup: _timestamp_pb2.Timestamp
    last_backup_snapshot: str
    last_edited: _timestamp_pb2.Timestamp
    reported_at: _timestamp_pb2.Timestamp
    stale: bool
    freshness_bound_seconds: float
    def __init__(self, id: _Optional[str] = ..., host_id: _Optional[str] = ..., region: _Optional[str] = ..., repository: _Optional[str] = ..., last_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_backup_snapshot: _Optional[str] = ..., last_edited: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stale: bool = ..., freshness_bound_seconds: _Optional[float] = ...) -> None: ...

class AddProjectRequest(_message.Message):
    __slots__ = ("project_id", "host_id", "region", "repository")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    host_id: str
    region: str
    repository: str
    def __init__(self, project_id: _Optional[str] = ..., host_id: _Optional[str] = ..., region: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class GetProjectRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class HubListProjectsRequest(_message.Message):
    __slots__ = ("host_id", "region", "page_size", "page_token")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    region: str
    page_size: int
    page_token: str
    def __init__(self, host_id: _Optional[str] = ..., region: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class HubListProjectsResponse(_message.Message):
    __slots__ = ("projects", "next_page_token")
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[Project]
    next_page_token: str
    def __init__(self, projects: _Optional[_Iterable[_Union[Project, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("project_id", "host_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    host_id: str
    def __init__(self, project_id: _Optional[str] = ..., host_id: _Optional[str] = ...) -> None: ...

class HostRefresh(_message.Message):
    __slots__ = ("host_id", "reachable")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    reachable: bool
    def __init__(self, host_id: _Optional[str] = ..., reachable: bool = ...) -> None: ...

class RefreshResponse(_message.Message):
    __slots__ = ("hosts", "projects")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[HostRefresh]
    projects: _containers.RepeatedCompositeFieldContainer[Project]
    def __init__(self, hosts: _Optional[_Iterable[_Union[HostRefresh, _Mapping]]] = ..., projects: _Optional[_Iterable[_Union[Project, _Mapping]]] = ...) -> None: ...

class HubDeleteProjectRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class HubDeleteProjectResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: bool = ...) -> None: ...

class CloneProjectRequest(_message.Message):
    __slots__ = ("project_id", "clone_id", "host_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CLONE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    clone_id: str
    host_id: str
    def __init__(self, project_id: _Optional[str] = ..., clone_id: _Optional[str] = ..., host_id: _Optional[str] = ...) -> None: ...

class Move(_message.Message):
    __slots__ = ("id", "project_id", "source_host", "target_host", "step", "status", "force", "error", "attempts", "created_at", "updated_at", "snapshot_id", "cleanup", "cross_region", "frozen_at", "placed_at", "caught_up_bytes", "frozen_seconds", "force_target")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOST_FIELD_NUMBER: _ClassVar[int]
    TARGET_HOST_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CLEANUP_FIELD_NUMBER: _ClassVar[int]
    CROSS_REGION_FIELD_NUMBER: _ClassVar[int]
    FROZEN_AT_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_BYTES_FIELD_NUMBER: _ClassVar[int]
    FROZEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_TARGET_FIELD_NUMBER: _ClassVar[int]
    id: str
    project_id: str
    source_host: str
    target_host: str
    step: str
    status: JobStatus
    force: bool
    error: str
    attempts: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    snapshot_id: str
    cleanup: str
    cross_region: bool
    frozen_at: _timestamp_pb2.Timestamp
    placed_at: _timestamp_pb2.Timestamp
    caught_up_bytes: int
    frozen_seconds: float
    force_target: bool
    def __init__(self, id: _Optional[str] = ..., project_id: _Optional[str] = ..., source_host: _Optional[str] = ..., target_host: _Optional[str] = ..., step: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., force: bool = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., cleanup: _Optional[str] = ..., cross_region: bool = ..., frozen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caught_up_bytes: _Optional[int] = ..., frozen_seconds: _Optional[float] = ..., force_target: bool = ...) -> None: ...

class StartMoveRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "target_host", "force", "cross_region", "force_target")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_HOST_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    CROSS_REGION_FIELD_NUMBER: _ClassVar[int]
    FORCE_TARGET_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    target_host: str
    force: bool
    cross_region: bool
    force_target: bool
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., target_host: _Optional[str] = ..., force: bool = ..., cross_region: bool = ..., force_target: bool = ...) -> None: ...

class GetMoveRequest(_message.Message):
    __slots__ = ("move_id",)
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    def __init__(self, move_id: _Optional[str] = ...) -> None: ...

class ListMovesRequest(_message.Message):
    __slots__ = ("project_id", "active_only")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    active_only: bool
    def __init__(self, project_id: _Optional[str] = ..., active_only: bool = ...) -> None: ...

class ListMovesResponse(_message.Message):
    __slots__ = ("moves",)
    MOVES_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[Move]
    def __init__(self, moves: _Optional[_Iterable[_Union[Move, _Mapping]]] = ...) -> None: ...

class CancelMoveRequest(_message.Message):
    __slots__ = ("move_id",)
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    def __init__(self, move_id: _Optional[str] = ...) -> None: ...

class ResumeMoveRequest(_message.Message):
    __slots__ = ("move_id",)
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    def __init__(self, move_id: _Optional[str] = ...) -> None: ...

class RetryMoveRequest(_message.Message):
    __slots__ = ("move_id", "force", "force_target")
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    FORCE_TARGET_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    force: bool
    force_target: bool
    def __init__(self, move_id: _Optional[str] = ..., force: bool = ..., force_target: bool = ...) -> None: ...

class Copy(_message.Message):
    __slots__ = ("id", "source_project", "source_path", "target_project", "target_path", "on_conflict", "source_host", "target_host", "step", "status", "error", "attempts", "created_at", "updated_at", "snapshot_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROJECT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    TARGET_PROJECT_FIELD_NUMBER: _ClassVar[int]
    TARGET_PATH_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOST_FIELD_NUMBER: _ClassVar[int]
    TARGET_HOST_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    source_project: str
    source_path: str
    target_project: str
    target_path: str
    on_conflict: _agent_pb2.ConflictPolicy
    source_host: str
    target_host: str
    step: str
    status: JobStatus
    error: str
    attempts: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    snapshot_id: str
    def __init__(self, id: _Optional[str] = ..., source_project: _Optional[str] = ..., source_path: _Optional[str] = ..., target_project: _Optional[str] = ..., target_path: _Optional[str] = ..., on_conflict: _Optional[_Union[_agent_pb2.ConflictPolicy, str]] = ..., source_host: _Optional[str] = ..., target_host: _Optional[str] = ..., step: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class StartCopyRequest(_message.Message):
    __slots__ = ("request_id", "source_project", "source_path", "target_project", "target_path", "on_conflict")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROJECT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    TARGET_PROJECT_FIELD_NUMBER: _ClassVar[int]
    TARGET_PATH_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    source_project: str
    source_path: str
    target_project: str
    target_path: str
    on_conflict: _agent_pb2.ConflictPolicy
    def __init__(self, request_id: _Optional[str] = ..., source_project: _Optional[str] = ..., source_path: _Optional[str] = ..., target_project: _Optional[str] = ..., target_path: _Optional[str] = ..., on_conflict: _Optional[_Union[_agent_pb2.ConflictPolicy, str]] = ...) -> None: ...

class GetCopyRequest(_message.Message):
    __slots__ = ("copy_id",)
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    copy_id: str
    def __init__(self, copy_id: _Optional[str] = ...) -> None: ...

class ListCopiesRequest(_message.Message):
    __slots__ = ("project_id", "active_only")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    active_only: bool
    def __init__(self, project_id: _Optional[str] = ..., active_only: bool = ...) -> None: ...

class ListCopiesResponse(_message.Message):
    __slots__ = ("copies",)
    COPIES_FIELD_NUMBER: _ClassVar[int]
    copies: _containers.RepeatedCompositeFieldContainer[Copy]
    def __init__(self, copies: _Optional[_Iterable[_Union[Copy, _Mapping]]] = ...) -> None: ...

class CancelCopyRequest(_message.Message):
    __slots__ = ("copy_id",)
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    copy_id: str
    def __init__(self, copy_id: _Optional[str] = ...) -> None: ...

class ResumeCopyRequest(_message.Message):
    __slots__ = ("copy_id",)
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    copy_id: str
    def __init__(self, copy_id: _Optional[str] = ...) -> None: ...

class RetryCopyRequest(_message.Message):
    __slots__ = ("copy_id",)
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    copy_id: str
    def __init__(self, copy_id: _Optional[str] = ...) -> None: ...

class FollowLogRequest(_message.Message):
    __slots__ = ("move_id", "copy_id", "from_seq")
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    COPY_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    copy_id: str
    from_seq: int
    def __init__(self, move_id: _Optional[str] = ..., copy_id: _Optional[str] = ..., from_seq: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("job_id", "seq", "time", "kind", "message", "data_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    kind: str
    message: str
    data_json: str
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., data_json: _Optional[str] = ...) -> None: ...

class LogUpdate(_message.Message):
    __slots__ = ("move", "copy", "entry", "keep_alive")
    MOVE_FIELD_NUMBER: _ClassVar[int]
    COPY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    move: Move
    copy: Copy
    entry: LogEntry
    keep_alive: _agent_pb2.KeepAlive
    def __init__(self, move: _Optional[_Union[Move, _Mapping]] = ..., copy: _Optional[_Union[Copy, _Mapping]] = ..., entry: _Optional[_Union[LogEntry, _Mapping]] = ..., keep_alive: _Optional[_Union[_agent_pb2.KeepAlive, _Mapping]] = ...) -> None: ...

class Rescue(_message.Message):
    __slots__ = ("move_id", "project_id", "host_id", "snapshot_id", "created_at", "bytes_added", "files_new", "files_changed")
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    BYTES_ADDED_FIELD_NUMBER: _ClassVar[int]
    FILES_NEW_FIELD_NUMBER: _ClassVar[int]
    FILES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    move_id: str
    project_id: str
    host_id: str
    snapshot_id: str
    created_at: _timestamp_pb2.Timestamp
    bytes_added: int
    files_new: int
    files_changed: int
    def __init__(self, move_id: _Optional[str] = ..., project_id: _Optional[str] = ..., host_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bytes_added: _Optional[int] = ..., files_new: _Optional[int] = ..., files_changed: _Optional[int] = ...) -> None: ...

class ListRescuesRequest(_message.Message):
    __slots__ = ("project_id", "move_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    MOVE_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    move_id: str
    def __init__(self, project_id: _Optional[str] = ..., move_id: _Optional[str] = ...) -> None: ...

class ListRescuesResponse(_message.Message):
    __slots__ = ("rescues",)
    RESCUES_FIELD_NUMBER: _ClassVar[int]
    rescues: _containers.RepeatedCompositeFieldContainer[Rescue]
    def __init__(self, rescues: _Optional[_Iterable[_Union[Rescue, _Mapping]]] = ...) -> None: ...

class ListRegionsRequest(_message.Message):
    __slots__ = ("location",)
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    location: str
    def __init__(self, location: _Optional[str] = ...) -> None: ...

class ListRegionsResponse(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, regions: _Optional[_Iterable[str]] = ...) -> None: ...
