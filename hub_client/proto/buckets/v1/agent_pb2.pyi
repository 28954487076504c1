import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OperationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_KIND_UNSPECIFIED: _ClassVar[OperationKind]
    OPERATION_KIND_BACKUP: _ClassVar[OperationKind]
    OPERATION_KIND_RESTORE: _ClassVar[OperationKind]
    OPERATION_KIND_VERIFY: _ClassVar[OperationKind]
    OPERATION_KIND_ENSURE: _ClassVar[OperationKind]
    OPERATION_KIND_DRAIN: _ClassVar[OperationKind]
    OPERATION_KIND_DELETE: _ClassVar[OperationKind]
    OPERATION_KIND_FORGET: _ClassVar[OperationKind]
    OPERATION_KIND_COPY: _ClassVar[OperationKind]
    OPERATION_KIND_PRECOPY: _ClassVar[OperationKind]

class ConflictPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFLICT_POLICY_UNSPECIFIED: _ClassVar[ConflictPolicy]
    FAIL: _ClassVar[ConflictPolicy]
    OVERWRITE: _ClassVar[ConflictPolicy]
    SKIP: _ClassVar[ConflictPolicy]

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    PENDING: _ClassVar[OperationState]
    RUNNING: _ClassVar[OperationState]
    CANCELLING: _ClassVar[OperationState]
    SUCCEEDED: _ClassVar[OperationState]
    SUCCEEDED_WITH_WARNINGS: _ClassVar[OperationState]
    UP_TO_DATE: _ClassVar[OperationState]
    FAILED: _ClassVar[OperationState]
    CANCELLED: _ClassVar[OperationState]
    INTERRUPTED: _ClassVar[OperationState]

class WriterPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITER_POLICY_UNSPECIFIED: _ClassVar[WriterPolicy]
    WRITERS_STOP: _ClassVar[WriterPolicy]
    WRITERS_REFUSE: _ClassVar[WriterPolicy]
OPERATION_KIND_UNSPECIFIED: OperationKind
OPERATION_KIND_BACKUP: OperationKind
OPERATION_KIND_RESTORE: OperationKind
OPERATION_KIND_VERIFY: OperationKind
OPERATION_KIND_ENSURE: OperationKind
OPERATION_KIND_DRAIN: OperationKind
OPERATION_KIND_DELETE: OperationKind
OPERATION_KIND_FORGET: OperationKind
OPERATION_KIND_COPY: OperationKind
OPERATION_KIND_PRECOPY: OperationKind
CONFLICT_POLICY_UNSPECIFIED: ConflictPolicy
FAIL: ConflictPolicy
OVERWRITE: ConflictPolicy
SKIP: ConflictPolicy
OPERATION_STATE_UNSPECIFIED: OperationState
PENDING: OperationState
RUNNING: OperationState
CANCELLING: OperationState
SUCCEEDED: OperationState
SUCCEEDED_WITH_WARNINGS: OperationState
UP_TO_DATE: OperationState
FAILED: OperationState
CANCELLED: OperationState
INTERRUPTED: OperationState
WRITER_POLICY_UNSPECIFIED: WriterPolicy
WRITERS_STOP: WriterPolicy
WRITERS_REFUSE: WriterPolicy

class RepositorySpec(_message.Message):
    __slots__ = ("local", "s3", "password")
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    S3_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    local: LocalRepository
    s3: S3Repository
    password: str
    def __init__(self, local: _Optional[_Union[LocalRepository, _Mapping]] = ..., s3: _Optional[_Union[S3Repository, _Mapping]] = ..., password: _Optional[str] = ...) -> None: ...

class LocalRepository(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class S3Repository(_message.Message):
    __slots__ = ("endpoint", "region", "bucket", "root", "access_key_id", "secret_access_key")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    region: str
    bucket: str
    root: str
    access_key_id: str
    secret_access_key: str
    def __init__(self, endpoint: _Optional[str] = ..., region: _Optional[str] = ..., bucket: _Optional[str] = ..., root: _Optional[str] = ..., access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ...) -> None: ...

class OperationError(_message.Message):
    __slots__ = ("code", "message", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class OperationSummary(_message.Message):
    __slots__ = ("snapshot_id", "bytes_added", "bytes_processed", "files_processed", "duration_seconds", "warnings", "files_new", "files_changed", "projects", "restore_mode", "bytes_fetched", "files_fetched", "files_deleted")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_ADDED_FIELD_NUMBER: _ClassVar[int]
    BYTES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FILES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    FILES_NEW_FIELD_NUMBER: _ClassVar[int]
    FILES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_MODE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    FILES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    FILES_DELETED_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    bytes_added: int
    bytes_processed: int
    files_processed: int
    duration_seconds: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    files_new: int
    files_changed: int
    projects: _containers.RepeatedCompositeFieldContainer[ProjectOutcome]
    restore_mode: str
    bytes_fetched: int
    files_fetched: int
    files_deleted: int
    def __init__(self, snapshot_id: _Optional[str] = ..., bytes_added: _Optional[int] = ..., bytes_processed: _Optional[int] = ..., files_processed: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., files_new: _Optional[int] = ..., files_changed: _Optional[int] = ..., projects: _Optional[_Iterable[_Union[ProjectOutcome, _Mapping]]] = ..., restore_mode: _Optional[str] = ..., bytes_fetched: _Optional[int] = ..., files_fetched: _Optional[int] = ..., files_deleted: _Optional[int] = ...) -> None: ...

class ProjectOutcome(_message.Message):
    __slots__ = ("project_id", "state", "snapshot_id", "error", "operation_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    state: OperationState
    snapshot_id: str
    error: OperationError
    operation_id: str
    def __init__(self, project_id: _Optional[str] = ..., state: _Optional[_Union[OperationState, str]] = ..., snapshot_id: _Optional[str] = ..., error: _Optional[_Union[OperationError, _Mapping]] = ..., operation_id: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "request_id", "kind", "project_id", "state", "created_at", "started_at", "finished_at", "error", "summary", "last_seq", "joined")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    id: str
    request_id: str
    kind: OperationKind
    project_id: str
    state: OperationState
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: OperationError
    summary: OperationSummary
    last_seq: int
    joined: bool
    def __init__(self, id: _Optional[str] = ..., request_id: _Optional[str] = ..., kind: _Optional[_Union[OperationKind, str]] = ..., project_id: _Optional[str] = ..., state: _Optional[_Union[OperationState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[OperationError, _Mapping]] = ..., summary: _Optional[_Union[OperationSummary, _Mapping]] = ..., last_seq: _Optional[int] = ..., joined: bool = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("operation_id", "seq", "time", "state", "phase", "percent", "bytes_done", "bytes_total", "files_done", "files_total", "bytes_per_second", "eta_seconds", "message", "terminal", "summary", "error")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    state: OperationState
    phase: str
    percent: float
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    bytes_per_second: float
    eta_seconds: float
    message: str
    terminal: bool
    summary: OperationSummary
    error: OperationError
    def __init__(self, operation_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[OperationState, str]] = ..., phase: _Optional[str] = ..., percent: _Optional[float] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., bytes_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., message: _Optional[str] = ..., terminal: bool = ..., summary: _Optional[_Union[OperationSummary, _Mapping]] = ..., error: _Optional[_Union[OperationError, _Mapping]] = ...) -> None: ...

class KeepAlive(_message.Message):
    __slots__ = ("time",)
    TIME_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProgressUpdate(_message.Message):
    __slots__ = ("operation", "event", "keep_alive")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    event: ProgressEvent
    keep_alive: KeepAlive
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ..., event: _Optional[_Union[ProgressEvent, _Mapping]] = ..., keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "force", "purpose", "tags", "subpath")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SUBPATH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    force: bool
    purpose: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    subpath: str
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., force: bool = ..., purpose: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., subpath: _Optional[str] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "snapshot_id", "subpath", "target_path", "source_project_id", "on_conflict", "force")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBPATH_FIELD_NUMBER: _ClassVar[int]
    TARGET_PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    snapshot_id: str
    subpath: str
    target_path: str
    source_project_id: str
    on_conflict: ConflictPolicy
    force: bool
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., subpath: _Optional[str] = ..., target_path: _Optional[str] = ..., source_project_id: _Optional[str] = ..., on_conflict: _Optional[_Union[ConflictPolicy, str]] = ..., force: bool = ...) -> None: ...

class UndoRestoreRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "restore_operation_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORE_OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    restore_operation_id: str
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., restore_operation_id: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "mode", "read_data_subset", "snapshot_id", "sentinel_path", "sentinel_content")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[VerifyRequest.Mode]
        REPOSITORY: _ClassVar[VerifyRequest.Mode]
        READ_DATA: _ClassVar[VerifyRequest.Mode]
        SNAPSHOT_TREE: _ClassVar[VerifyRequest.Mode]
        SENTINEL: _ClassVar[VerifyRequest.Mode]
        COUNTS: _ClassVar[VerifyRequest.Mode]
    MODE_UNSPECIFIED: VerifyRequest.Mode
    REPOSITORY: VerifyRequest.Mode
    READ_DATA: VerifyRequest.Mode
    SNAPSHOT_TREE: VerifyRequest.Mode
    SENTINEL: VerifyRequest.Mode
    COUNTS: VerifyRequest.Mode
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    READ_DATA_SUBSET_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_PATH_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_CONTENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    mode: VerifyRequest.Mode
    read_data_subset: str
    snapshot_id: str
    sentinel_path: str
    sentinel_content: str
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., mode: _Optional[_Union[VerifyRequest.Mode, str]] = ..., read_data_subset: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., sentinel_path: _Optional[str] = ..., sentinel_content: _Optional[str] = ...) -> None: ...

class EnsureProjectRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "mode", "quota_bytes", "snapshot_id", "precopy_key")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[EnsureProjectRequest.Mode]
        NONE: _ClassVar[EnsureProjectRequest.Mode]
        AUTO: _ClassVar[EnsureProjectRequest.Mode]
        REQUIRED: _ClassVar[EnsureProjectRequest.Mode]
    MODE_UNSPECIFIED: EnsureProjectRequest.Mode
    NONE: EnsureProjectRequest.Mode
    AUTO: EnsureProjectRequest.Mode
    REQUIRED: EnsureProjectRequest.Mode
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PRECOPY_KEY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    mode: EnsureProjectRequest.Mode
    quota_bytes: int
    snapshot_id: str
    precopy_key: str
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., mode: _Optional[_Union[EnsureProjectRequest.Mode, str]] = ..., quota_bytes: _Optional[int] = ..., snapshot_id: _Optional[str] = ..., precopy_key: _Optional[str] = ...) -> None: ...

class PreCopyRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "snapshot_id", "key")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    snapshot_id: str
    key: str
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("request_id", "concurrency", "repository")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    concurrency: int
    repository: RepositorySpec
    def __init__(self, request_id: _Optional[str] = ..., concurrency: _Optional[int] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ...) -> None: ...

class DeleteProjectRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "delete_repository")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DELETE_REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    delete_repository: bool
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., delete_repository: bool = ...) -> None: ...

class ForgetRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "repository", "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "prune", "protected_snapshot_ids", "snapshot_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_HOURLY_FIELD_NUMBER: _ClassVar[int]
    KEEP_DAILY_FIELD_NUMBER: _ClassVar[int]
    KEEP_WEEKLY_FIELD_NUMBER: _ClassVar[int]
    KEEP_MONTHLY_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_SNAPSHOT_IDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    repository: RepositorySpec
    keep_last: int
    keep_hourly: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    prune: bool
    protected_snapshot_ids: _containers.RepeatedScalarFieldContainer[str]
    snapshot_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., keep_last: _Optional[int] = ..., keep_hourly: _Optional[int] = ..., keep_daily: _Optional[int] = ..., keep_weekly: _Optional[int] = ..., keep_monthly: _Optional[int] = ..., prune: bool = ..., protected_snapshot_ids: _Optional[_Iterable[str]] = ..., snapshot_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CopyFilesRequest(_message.Message):
    __slots__ = ("request_id", "source_project_id", "source_path", "target_project_id", "target_path", "on_conflict")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    TARGET_PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_PATH_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    source_project_id: str
    source_path: str
    target_project_id: str
    target_path: str
    on_conflict: ConflictPolicy
    def __init__(self, request_id: _Optional[str] = ..., source_project_id: _Optional[str] = ..., source_path: _Optional[str] = ..., target_project_id: _Optional[str] = ..., target_path: _Optional[str] = ..., on_conflict: _Optional[_Union[ConflictPolicy, str]] = ...) -> None: ...

class CheckCopyTargetRequest(_message.Message):
    __slots__ = ("project_id", "target_path", "on_conflict")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_PATH_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    target_path: str
    on_conflict: ConflictPolicy
    def __init__(self, project_id: _Optional[str] = ..., target_path: _Optional[str] = ..., on_conflict: _Optional[_Union[ConflictPolicy, str]] = ...) -> None: ...

class CheckCopyTargetResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: bool = ...) -> None: ...

class StreamProgressRequest(_message.Message):
    __slots__ = ("operation_id", "from_seq")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    from_seq: int
    def __init__(self, operation_id: _Optional[str] = ..., from_seq: _Optional[int] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ("project_id", "states", "page_size", "page_token")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    states: _containers.RepeatedScalarFieldContainer[OperationState]
    page_size: int
    page_token: str
    def __init__(self, project_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[OperationState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations", "next_page_token")
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    next_page_token: str
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class GetProjectStatusRequest(_message.Message):
    __slots__ = ("project_id", "without_scan")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_SCAN_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    without_scan: bool
    def __init__(self, project_id: _Optional[str] = ..., without_scan: bool = ...) -> None: ...

class RestoreReceipt(_message.Message):
    __slots__ = ("snapshot_id", "time", "operation_id")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    time: _timestamp_pb2.Timestamp
    operation_id: str
    def __init__(self, snapshot_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operation_id: _Optional[str] = ...) -> None: ...

class ProjectStatus(_message.Message):
    __slots__ = ("project_id", "present", "size_bytes", "last_backup", "last_backup_snapshot_id", "last_change", "dirty", "frozen", "running_operation", "last_error", "repository_location", "last_restore", "unprotected_since", "unprotected_age_seconds", "over_rpo", "over_rpo_reason", "last_error_time")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_FIELD_NUMBER: _ClassVar[int]
    DIRTY_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    RUNNING_OPERATION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_LOCATION_FIELD_NUMBER: _ClassVar[int]
    LAST_RESTORE_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    present: bool
    size_bytes: int
    last_backup: _timestamp_pb2.Timestamp
    last_backup_snapshot_id: str
    last_change: _timestamp_pb2.Timestamp
    dirty: bool
    frozen: bool
    running_operation: Operation
    last_error: OperationError
    repository_location: str
    last_restore: RestoreReceipt
    unprotected_since: _timestamp_pb2.Timestamp
    unprotected_age_seconds: float
    over_rpo: bool
    over_rpo_reason: str
    last_error_time: _timestamp_pb2.Timestamp
    def __init__(self, project_id: _Optional[str] = ..., present: bool = ..., size_bytes: _Optional[int] = ..., last_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_backup_snapshot_id: _Optional[str] = ..., last_change: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dirty: bool = ..., frozen: bool = ..., running_operation: _Optional[_Union[Operation, _Mapping]] = ..., last_error: _Optional[_Union[OperationError, _Mapping]] = ..., repository_location: _Optional[str] = ..., last_restore: _Optional[_Union[RestoreReceipt, _Mapping]] = ..., unprotected_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unprotected_age_seconds: _Optional[float] = ..., over_rpo: bool = ..., over_rpo_reason: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetHostStatusRequest(_message.Message):
    __slots__ = ("over_rpo_limit",)
    OVER_RPO_LIMIT_FIELD_NUMBER: _ClassVar[int]
    over_rpo_limit: int
    def __init__(self, over_rpo_limit: _Optional[int] = ...) -> None: ...

class OverRpoProject(_message.Message):
    __slots__ = ("project_id", "unprotected_since", "unprotected_age_seconds", "reason")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    unprotected_since: _timestamp_pb2.Timestamp
    unprotected_age_seconds: float
    reason: str
    def __init__(self, project_id: _Optional[str] = ..., unprotected_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unprotected_age_seconds: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class HostStatus(_message.Message):
    __slots__ = ("host_id", "projects", "dirty", "up_to_date", "never_backed_up", "running_operations", "queued_operations", "disk_total_bytes", "disk_free_bytes", "memory_total_bytes", "memory_available_bytes", "engine", "backend", "rpo_seconds", "max_unprotected_age_seconds", "p99_unprotected_age_seconds", "over_rpo_count", "over_rpo", "observed_at")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    DIRTY_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    NEVER_BACKED_UP_FIELD_NUMBER: _ClassVar[int]
    RUNNING_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RPO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_COUNT_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    projects: int
    dirty: int
    up_to_date: int
    never_backed_up: int
    running_operations: int
    queued_operations: int
    disk_total_bytes: int
    disk_free_bytes: int
    memory_total_bytes: int
    memory_available_bytes: int
    engine: str
    backend: str
    rpo_seconds: float
    max_unprotected_age_seconds: float
    p99_unprotected_age_seconds: float
    over_rpo_count: int
    over_rpo: _containers.RepeatedCompositeFieldContainer[OverRpoProject]
    observed_at: _timestamp_pb2.Timestamp
    def __init__(self, host_id: _Optional[str] = ..., projects: _Optional[int] = ..., dirty: _Optional[int] = ..., up_to_date: _Optional[int] = ..., never_backed_up: _Optional[int] = ..., running_operations: _Optional[int] = ..., queued_operations: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., engine: _Optional[str] = ..., backend: _Optional[str] = ..., rpo_seconds: _Optional[float] = ..., max_unprotected_age_seconds: _Optional[float] = ..., p99_unprotected_age_seconds: _Optional[float] = ..., over_rpo_count: _Optional[int] = ..., over_rpo: _Optional[_Iterable[_Union[OverRpoProject, _Mapping]]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("engine", "engine_version", "backend", "features", "limitations", "max_concurrent_operations", "read_file_max_bytes", "agent_version", "host_id")
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LIMITATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    READ_FILE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    engine: str
    engine_version: str
    backend: str
    features: _containers.RepeatedScalarFieldContainer[str]
    limitations: _containers.RepeatedScalarFieldContainer[str]
    max_concurrent_operations: int
    read_file_max_bytes: int
    agent_version: str
    host_id: str
    def __init__(self, engine: _Optional[str] = ..., engine_version: _Optional[str] = ..., backend: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., limitations: _Optional[_Iterable[str]] = ..., max_concurrent_operations: _Optional[int] = ..., read_file_max_bytes: _Optional[int] = ..., agent_version: _Optional[str] = ..., host_id: _Optional[str] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("project_id", "repository", "page_size", "page_token")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    repository: RepositorySpec
    page_size: int
    page_token: str
    def __init__(self, project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("id", "short_id", "time", "hostname", "paths", "tags", "layout", "project_id", "source_host_id", "operation_id", "purpose", "size_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    SHORT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOST_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    short_id: str
    time: _timestamp_pb2.Timestamp
    hostname: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    layout: str
    project_id: str
    source_host_id: str
    operation_id: str
    purpose: str
    size_bytes: int
    def __init__(self, id: _Optional[str] = ..., short_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hostname: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., layout: _Optional[str] = ..., project_id: _Optional[str] = ..., source_host_id: _Optional[str] = ..., operation_id: _Optional[str] = ..., purpose: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots", "next_page_token")
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    next_page_token: str
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("project_id", "repository", "snapshot_id", "path", "depth", "page_size", "page_token")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    repository: RepositorySpec
    snapshot_id: str
    path: str
    depth: int
    page_size: int
    page_token: str
    def __init__(self, project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., path: _Optional[str] = ..., depth: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("path", "type", "size", "mode", "mtime", "link_target")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[FileEntry.Type]
        FILE: _ClassVar[FileEntry.Type]
        DIRECTORY: _ClassVar[FileEntry.Type]
        SYMLINK: _ClassVar[FileEntry.Type]
        OTHER: _ClassVar[FileEntry.Type]
    TYPE_UNSPECIFIED: FileEntry.Type
    FILE: FileEntry.Type
    DIRECTORY: FileEntry.Type
    SYMLINK: FileEntry.Type
    OTHER: FileEntry.Type
    PATH_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    LINK_TARGET_FIELD_NUMBER: _ClassVar[int]
    path: str
    type: FileEntry.Type
    size: int
    mode: int
    mtime: _timestamp_pb2.Timestamp
    link_target: str
    def __init__(self, path: _Optional[str] = ..., type: _Optional[_Union[FileEntry.Type, str]] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., link_target: _Optional[str] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[FileEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("project_id", "repository", "snapshot_id", "path", "max_bytes")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    repository: RepositorySpec
    snapshot_id: str
    path: str
    max_bytes: int
    def __init__(self, project_id: _Optional[str] = ..., repository: _Optional[_Union[RepositorySpec, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., path: _Optional[str] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class ReadFileResponse(_message.Message):
    __slots__ = ("content", "truncated", "binary", "size")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    truncated: bool
    binary: bool
    size: int
    def __init__(self, content: _Optional[bytes] = ..., truncated: bool = ..., binary: bool = ..., size: _Optional[int] = ...) -> None: ...

class FreezeRequest(_message.Message):
    __slots__ = ("project_id", "sentinel_path", "sentinel_content", "writers")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_PATH_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_CONTENT_FIELD_NUMBER: _ClassVar[int]
    WRITERS_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    sentinel_path: str
    sentinel_content: str
    writers: WriterPolicy
    def __init__(self, project_id: _Optional[str] = ..., sentinel_path: _Optional[str] = ..., sentinel_content: _Optional[str] = ..., writers: _Optional[_Union[WriterPolicy, str]] = ...) -> None: ...

class FreezeResponse(_message.Message):
    __slots__ = ("frozen", "stopped", "cgroup")
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    frozen: bool
    stopped: _containers.RepeatedCompositeFieldContainer[StoppedProcess]
    cgroup: str
    def __init__(self, frozen: bool = ..., stopped: _Optional[_Iterable[_Union[StoppedProcess, _Mapping]]] = ..., cgroup: _Optional[str] = ...) -> None: ...

class StoppedProcess(_message.Message):
    __slots__ = ("pid", "uid", "command", "action", "paths")
    PID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    uid: int
    command: str
    action: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pid: _Optional[int] = ..., uid: _Optional[int] = ..., command: _Optional[str] = ..., action: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class ThawRequest(_message.Message):
    __slots__ = ("project_id", "sentinel_path", "sentinel_content")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_PATH_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_CONTENT_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    sentinel_path: str
    sentinel_content: str
    def __init__(self, project_id: _Optional[str] = ..., sentinel_path: _Optional[str] = ..., sentinel_content: _Optional[str] = ...) -> None: ...

class ThawResponse(_message.Message):
    __slots__ = ("frozen", "sentinel")
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    SENTINEL_FIELD_NUMBER: _ClassVar[int]
    frozen: bool
    sentinel: str
    def __init__(self, frozen: bool = ..., sentinel: _Optional[str] = ...) -> None: ...

class MarkEditedRequest(_message.Message):
    __slots__ = ("project_id", "time")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, project_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MarkEditedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProjectsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProjectsResponse(_message.Message):
    __slots__ = ("projects", "observed_at")
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[ProjectFreshness]
    observed_at: _timestamp_pb2.Timestamp
    def __init__(self, projects: _Optional[_Iterable[_Union[ProjectFreshness, _Mapping]]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProjectFreshness(_message.Message):
    __slots__ = ("project_id", "last_backup", "last_backup_snapshot_id", "last_change", "dirty", "frozen", "unprotected_since", "unprotected_age_seconds", "over_rpo", "over_rpo_reason")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_FIELD_NUMBER: _ClassVar[int]
    DIRTY_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    UNPROTECTED_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_FIELD_NUMBER: _ClassVar[int]
    OVER_RPO_REASON_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    last_backup: _timestamp_pb2.Timestamp
    last_backup_snapshot_id: str
    last_change: _timestamp_pb2.Timestamp
    dirty: bool
    frozen: bool
    unprotected_since: _timestamp_pb2.Timestamp
    unprotected_age_seconds: float
    over_rpo: bool
    over_rpo_reason: str
    def __init__(self, project_id: _Optional[str] = ..., last_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_backup_snapshot_id: _Optional[str] = ..., last_change: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dirty: bool = ..., frozen: bool = ..., unprotected_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unprotected_age_seconds: _Optional[float] = ..., over_rpo: bool = ..., over_rpo_reason: _Optional[str] = ...) -> None: ...
