"""The agent's configuration: typed, frozen dataclasses loaded from TOML.

The TOML file mirrors the dataclasses::

    host_id = "host-1"            # default: the machine's host name
    backend = "directory"         # "directory" | "btrfs"
    base_dir = "/var/lib/buckets" # base of every defaulted path (optional)

    [server]      listen, grace_period, keepalive_interval, port_file
    [server.tls]  cert_file, key_file, client_ca_file (TLS; mTLS with client_ca_file)
    [auth]        tokens_file (lines "<role> <token>"; role "read-only" or "operator")
    [paths]       state_dir, projects_root, persist_root
    [limits]      max_concurrent_operations, max_queued_operations,
                  engine_timeout, kill_grace, read_file_max_bytes,
                  upload_limit_kib, download_limit_kib, stall_timeout,
                  reconcile_interval
    [engine]      engine, restic_binary, rustic_binary
    [btrfs]       binary, default_quota_bytes
    [freeze]      writers ("stop" | "refuse"), grace, cgroup (path pattern with {project_id})
    [retention]   interval, keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, prune
    [restore]     dirty ("snapshot" | "refuse"), keep_replaced (seconds)
    [precopy]     max_age (seconds a move's pre-copy is kept unused)
    [schedule]    rpo (seconds; 0 = no scheduled backups), concurrency, jitter,
                  quiet_windows (["HH:MM-HH:MM", ...], the host's local time)
    [repository]  kind
    [repository.local]  root, password_file
    [repository.s3]     endpoint, region, bucket_prefix, root_template,
                        access_key_id, secret_access_key, password_file,
                        create_bucket
    [logging]     level, format
    [metrics]     listen (Prometheus /metrics; "" or absent: off), port_file

Every section and key is optional. Validation never stops at the first
problem: :func:`parse_config` collects every problem in the file, each
prefixed with its key path (``limits.max_concurrent_operations: must be an
integer >= 1, got 0``), and raises them together in one :class:`ConfigError`.
Unknown keys are problems too, so a typo never silently falls back to a
default.

Secrets (``repository.s3.secret_access_key``, the ``[auth]`` tokens) are left
out of ``repr()``, masked as ``"***"`` by :func:`describe`, and never echoed in
error messages.

The files named by ``[server.tls]`` and ``[auth]`` are read while the config
is parsed, so a missing, unreadable or mismatched certificate or token file is
a config problem like any other (``check-config`` finds it; ``serve`` exits 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import secrets
import socket
import stat
import string
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "AuthConfig",
    "AuthToken",
    "BtrfsConfig",
    "RetentionConfig",
    "AgentConfig",
    "ConfigError",
    "EngineConfig",
    "LimitsConfig",
    "LocalRepositoryConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PathsConfig",
    "RepositoryConfig",
    "S3RepositoryConfig",
    "ServerConfig",
    "ServerTlsConfig",
    "default_base_dir",
    "default_config",
    "describe",
    "ensure_password_file",
    "load_config",
    "parse_config",
]

BACKENDS = ("directory", "btrfs")
RESTORE_DIRTY_POLICIES = ("snapshot", "refuse")
ENGINES = ("restic", "rustic", "auto")
REPOSITORY_KINDS = ("local", "s3")
AUTH_ROLES = ("read-only", "operator")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")

HOST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_S3_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

SECRET_MASK = "***"


# --------------------------------------------------------------------------
# The error
# --------------------------------------------------------------------------


class ConfigError(InvalidArgument):
    """An agent config with one or more problems.

    ``problems`` holds every problem found, each prefixed with its key path
    (or with the file name for problems of the file itself); the message is
    the problems joined one per line. ``source`` names the config (a file
    path, or ``"<defaults>"``).
    """

    def __init__(self, problems: Iterable[str], *, source: str = "") -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------
# The dataclasses
# --------------------------------------------------------------------------


def _secret(default: Any = None) -> Any:
    """A dataclass field that ``repr()`` skips and :func:`describe` masks."""
    return field(default=default, repr=False, metadata={"secret": True})


@dataclass(frozen=True, kw_only=True)
class ServerTlsConfig:
    """TLS of the gRPC listener (``[server.tls]``); with ``client_ca_file`` also mTLS.

    Validated when the config is parsed (PEM, key matches certificate); the
    listener reads the files again at start, so a renewed certificate needs a
    restart.
    """

    cert_file: Path
    """PEM certificate chain of this host, leaf first."""
    key_file: Path
    """Unencrypted PEM private key of ``cert_file`` (not readable by others)."""
    client_ca_file: Path | None = None
    """PEM CA certificate(s) of the hub; when set, every client must present a
    certificate signed by one of them (mTLS), else the handshake fails."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The gRPC listener."""

    listen: str = "127.0.0.1:50051"
    """``host:port`` (IPv6 as ``[::1]:port``); port 0 picks a free port."""
    grace_period: float = 10.0
    """Seconds given to in-flight RPCs at SIGTERM."""
    keepalive_interval: float = 5.0
    """StreamProgress keep-alive period in seconds, > 0."""
    port_file: str | None = None
    """When set, the agent writes the bound port there once listening."""
    tls: ServerTlsConfig | None = None
    """``[server.tls]``; None means a plaintext listener (loopback, tests)."""


@dataclass(frozen=True, kw_only=True)
class PathsConfig:
    """Where the agent keeps its own state and the projects' data."""

    state_dir: Path
    """agent.sqlite journal, the repository password file, temporary files."""
    projects_root: Path
    """``<projects_root>/project-<uuid>`` homes; staging under ``.staging``."""
    persist_root: Path
    """``<persist_root>/project-<uuid>`` persistent state."""


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    """Host-wide limits."""

    max_concurrent_operations: int = 2
    """Operations running at once on this host, >= 1."""
    max_queued_operations: int = 100
    """PENDING operations beyond the running ones, >= 0; 0 means no queue
    (RESOURCE_EXHAUSTED when the running limit is reached)."""
    engine_timeout: float = 86400.0
    """Seconds an engine process may run, > 0."""
    kill_grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL of an engine process, >= 0."""
    read_file_max_bytes: int = 16 * 1024 * 1024
    """Largest file ReadFile returns, >= 1."""
    upload_limit_kib: int = 0
    """Engine upload bandwidth limit in KiB/s (restic ``--limit-upload``); 0 = unlimited."""
    download_limit_kib: int = 0
    """Engine download bandwidth limit in KiB/s (restic ``--limit-download``); 0 = unlimited."""
    reconcile_interval: float = 60.0
    """Seconds between freshness looks at every project (generations, or the directory
    backend's change watch); the backup schedule looks each of its cycles when that is sooner.
    0 = only when GetProjectStatus asks (or MarkEdited tells)."""
    stall_timeout: float = 300.0
    """Seconds an engine process may go without progress (under 64 KiB of file or
    network I/O) before it is stopped and its operation fails UNAVAILABLE; 0 = never.
    Engines retry an unreachable repository for many minutes without a word."""


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Which backup engine runs, and where its binaries are."""

    engine: str = "auto"
    """``"restic"``, ``"rustic"`` or ``"auto"`` (rustic when its binary is found, else restic)."""
    restic_binary: str = "restic"
    rustic_binary: str = "rustic"


@dataclass(frozen=True, kw_only=True)
class RetentionConfig:
    """A keep policy the agent applies to every project on its own schedule (optional)."""

    interval: float = 0.0
    """Seconds between runs; 0 = never (the hub calls Forget itself)."""
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    prune: bool = False

    def keep(self) -> dict[str, int]:
        return {"last": self.keep_last, "hourly": self.keep_hourly, "daily": self.keep_daily,
                "weekly": self.keep_weekly, "monthly": self.keep_monthly}


@dataclass(frozen=True, kw_only=True)
class RestoreConfig:
    """What a whole-project restore does with the project it replaces."""

    dirty: str = "snapshot"
    """A project with changes since its last backup: ``"snapshot"`` backs them up first (a
    pre-restore snapshot), ``"refuse"`` fails FAILED_PRECONDITION unless the request says force."""
    keep_replaced: float = 86400.0
    """Seconds the replaced tree is kept for UndoRestore, > 0. Not 0: force skips the
    pre-restore snapshot, and a write between that snapshot and the swap is only in the
    replaced tree, so removing it at once could destroy data no snapshot holds."""


@dataclass(frozen=True, kw_only=True)
class PrecopyConfig:
    """A move's pre-copies (PreCopy) staged on this host."""

    max_age: float = 86400.0
    """Seconds a pre-copy is kept after it last changed before housekeeping discards it, > 0."""


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Scheduled backups: every project with changes not in a backup is backed up by the agent
    itself so that no change stays unprotected for longer than ``rpo``."""

    rpo: float = 0.0
    """The recovery-point objective: the longest a change may stay unprotected, in seconds;
    0 = no scheduled backups (the embedded default; production configs set it)."""
    concurrency: int = 1
    """Scheduled backups running at once (operator and hub operations come first)."""
    jitter: float = 0.0
    """Up to this many seconds added at random to each project's start, so that hosts and
    projects started together do not all back up at the same moment."""
    quiet_windows: tuple[str, ...] = ()
    """Daily windows "HH:MM-HH:MM" of the host's local time in which no scheduled backup starts
    (an end before the start wraps past midnight)."""

    @property
    def enabled(self) -> bool:
        return self.rpo > 0

    def quiet_minutes(self) -> list[tuple[int, int]]:
        """The quiet windows as (start, end) minutes after local midnight."""
        return [window for window in map(quiet_window, self.quiet_windows) if window is not None]


@dataclass(frozen=True, kw_only=True)
class BtrfsConfig:
    """The btrfs backend (``backend = "btrfs"``)."""

    binary: str = "btrfs"
    default_quota_bytes: int = 0
    """qgroup limit of a new project's home when the request names none; 0 = no limit."""


FREEZE_WRITER_POLICIES = ("stop", "refuse")


@dataclass(frozen=True, kw_only=True)
class FreezeConfig:
    """What Freeze does with processes that can still change a project's data."""

    writers: str = "stop"
    """``"stop"``: SIGTERM, ``grace`` seconds, SIGKILL; ``"refuse"``: Freeze fails naming them.
    A FreezeRequest's ``writers`` overrides it."""
    grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL."""
    cgroup: str = ""
    """A cgroup-v2 directory pattern with ``{project_id}`` (e.g.
    ``/sys/fs/cgroup/projects.slice/project-{project_id}``); when that cgroup exists, Freeze
    freezes it and Thaw thaws it. "" = none."""

    def cgroup_of(self, project_id: str) -> Path | None:
        return Path(self.cgroup.format(project_id=project_id)) if self.cgroup else None


@dataclass(frozen=True, kw_only=True)
class LocalRepositoryConfig:
    """Local directory repositories (the embedded default)."""

    root: Path
    """One repository per project: ``<root>/project-<uuid>``."""
    password_file: Path
    """Generated with mode 0600 when missing (:func:`ensure_password_file`)."""


@dataclass(frozen=True, kw_only=True)
class S3RepositoryConfig:
    """Repositories in S3-compatible buckets, one bucket per region."""

    endpoint: str | None = None
    """``http(s)://host[:port]``; None means the AWS default."""
    region: str = "us-east-1"
    bucket_prefix: str = "buckets"
    """Bucket name is ``f"{bucket_prefix}-{region}"``."""
    root_template: str = "rustic/project-{project_id}"
    """Repository root inside the bucket; ``{project_id}`` is substituted."""
    access_key_id: str | None = None
    secret_access_key: str | None = _secret()
    password_file: Path | None = None
    create_bucket: bool = False

    def bucket_name(self, region: str | None = None) -> str:
        """Return the bucket name for ``region`` (default: the configured one)."""
        return f"{self.bucket_prefix}-{region or self.region}"

    def repository_root(self, project_id: str) -> str:
        """Return the repository root of ``project_id`` inside its bucket."""
        return self.root_template.format(project_id=project_id)


@dataclass(frozen=True, kw_only=True)
class RepositoryConfig:
    """Where project repositories live."""

    kind: str = "local"
    """``"local"`` or ``"s3"``."""
    local: LocalRepositoryConfig
    s3: S3RepositoryConfig | None = None
    """Required when ``kind == "s3"``."""


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``."""
    format: str = "json"
    """``json`` or ``console``."""


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """The Prometheus ``/metrics`` endpoint (``[metrics]``); off unless ``listen`` is set."""

    listen: str | None = None
    """``host:port`` of the HTTP listener (port 0 picks a free port); None: no endpoint."""
    port_file: str | None = None
    """When set, the agent writes the bound port there once the endpoint listens."""


@dataclass(frozen=True, kw_only=True)
class AuthToken:
    """One bearer token and the role it grants (one of :data:`AUTH_ROLES`)."""

    role: str
    token: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """Bearer tokens callers present as ``authorization: Bearer <token>`` (``[auth]``).

    No tokens (the default) means no token is asked for: the listener's own
    protection (loopback, mTLS) is all there is.
    """

    tokens_file: Path | None = None
    """Lines ``<role> <token>`` (``#`` comments, blank lines allowed), mode 0600."""
    tokens: tuple[AuthToken, ...] | None = _secret()
    """The tokens read from ``tokens_file``; None without one."""


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """The whole agent configuration."""

    host_id: str
    """Matches ``^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$``; default: the host name."""
    server: ServerConfig = field(default_factory=ServerConfig)
    paths: PathsConfig
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    repository: RepositoryConfig
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    backend: str = "directory"
    """``"directory"`` or ``"btrfs"``."""
    btrfs: BtrfsConfig = field(default_factory=BtrfsConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    precopy: PrecopyConfig = field(default_factory=PrecopyConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# --------------------------------------------------------------------------
# Value checks: pure functions value -> None (fine) or what was required
# --------------------------------------------------------------------------

Check = Callable[[object], "str | None"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def integer(minimum: int) -> Check:
    """An integer (not a bool) >= ``minimum``."""

    def check(value: object) -> str | None:
        if _is_int(value) and value >= minimum:  # type: ignore[operator]
            return None
        return f"must be an integer >= {minimum}"

    return check


def number(minimum: float, *, exclusive: bool = False) -> Check:
    """A finite int or float > (``exclusive``) or >= ``minimum``."""
    op = ">" if exclusive else ">="

    def check(value: object) -> str | None:
        if _is_number(value) and (
            value > minimum if exclusive else value >= minimum  # type: ignore[operator]
        ):
            return None
        return f"must be a number {op} {minimum:g}"

    return check


def boolean(value: object) -> str | None:
    """``true`` or ``false``."""
    return None if isinstance(value, bool) else "must be true or false"


def nonempty_string(value: object) -> str | None:
    """A string that is not empty or all blanks."""
    if isinstance(value, str) and value.strip():
        return None
    return "must be a non-empty string"


def string_value(value: object) -> str | None:
    """Any string (empty included)."""
    return None if isinstance(value, str) else "must be a string"


def one_of(*choices: str) -> Check:
    """One of the strings ``choices``."""
    shown = ", ".join(json.dumps(c) for c in choices)

    def check(value: object) -> str | None:
        return None if value in choices and isinstance(value, str) else f"must be one of {shown}"

    return check


def host_id(value: object) -> str | None:
    """A host id: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$``."""
    if isinstance(value, str) and HOST_ID_RE.match(value):
        return None
    return "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"


def listen_address(value: object) -> str | None:
    """``host:port`` with port 0..65535; an IPv6 host is written ``[addr]``."""
    required = 'must be "host:port" with a port in 0..65535'
    if not isinstance(value, str):
        return required
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return required
    if int(port) > 65535:
        return required
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            return required
    elif ":" in host or any(c.isspace() for c in host):
        return required
    return None


def http_url(value: object) -> str | None:
    """An absolute ``http://`` or ``https://`` URL with a host."""
    required = "must be an http:// or https:// URL"
    if not isinstance(value, str):
        return required
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return required
    if url.scheme not in ("http", "https") or not url.hostname:
        return required
    return None


def s3_region(value: object) -> str | None:
    """A region name: lowercase letters, digits and '-' (``auto`` for R2)."""
    if isinstance(value, str) and _S3_REGION_RE.match(value):
        return None
    return "must be a region name of lowercase letters, digits and '-'"


def root_template(value: object) -> str | None:
    """A relative object key template using ``{project_id}`` and no other field."""
    required = 'must be a relative key template containing "{project_id}" and no other field'
    if not isinstance(value, str) or value.startswith("/"):
        return required
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError:
        return required
    return None if fields == {"project_id"} else required


def s3_bucket_name(name: str) -> bool:
    """True when ``name`` is a valid S3 bucket name."""
    return bool(_S3_BUCKET_RE.match(name)) and ".." not in name


def optional(check: Check) -> Check:
    """``check``, or TOML's way of saying "unset": an empty string."""

    def wrapped(value: object) -> str | None:
        return None if value == "" else check(value)

    return wrapped


# --------------------------------------------------------------------------
# Reading tables: collects problems with key paths, flags unknown keys
# --------------------------------------------------------------------------


def key_path(prefix: str, key: str) -> str:
    """Return the dotted TOML key path of ``key`` under ``prefix``."""
    shown = key if _BARE_KEY_RE.match(key) else json.dumps(key)
    return f"{prefix}.{shown}" if prefix else shown


def show_value(value: object) -> str:
    """Return ``value`` as the TOML file spelled it, for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__} ({value})"


def toml_type(value: object) -> str:
    """Return the TOML type name of ``value`` (used where the value is secret)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


_MISSING = object()


class _Table:
    """One TOML table being read: hands out checked values, records problems.

    Every key taken is marked known; :meth:`finish` reports the rest as
    unknown. A bad value is recorded and replaced by the default so that
    reading goes on and later problems are found too.
    """

    def __init__(self, data: Mapping[str, Any], prefix: str, problems: list[str]) -> None:
        self.data = data
        self.prefix = prefix
        self.problems = problems
        self.known: list[str] = []

    def path(self, key: str) -> str:
        return key_path(self.prefix, key)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path(key) if key else self.prefix}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        """Return the raw value of ``key`` (or ``_MISSING``) and mark it known."""
        self.known.append(key)
        return self.data.get(key, _MISSING)

    def take(self, key: str, check: Check, default: Any, *, secret: bool = False) -> Any:
        """Return the value of ``key`` when it passes ``check``, else ``default``."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        required = check(value)
        if required is None:
            return value
        got = toml_type(value) if secret else show_value(value)
        self.problem(key, f"{required}, got {got}")
        return default

    def take_optional(self, key: str, check: Check, *, secret: bool = False) -> Any:
        """Like :meth:`take` for a key whose absence (or ``""``) means None."""
        value = self.take(key, optional(check), None, secret=secret)
        return None if value == "" else value

    def take_path(self, key: str, default: Path | None, relative_to: Path) -> Path | None:
        """Return ``key`` as an absolute path (relative ones against ``relative_to``)."""
        value = self.take(key, nonempty_string, _MISSING)
        if value is _MISSING:
            return default
        return resolve_path(value, relative_to)

    def table(self, key: str) -> _Table | None:
        """Return the sub-table ``key``; None when absent or not a table."""
        value = self.raw(key)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.problem(key, f"must be a table, got {show_value(value)}")
            return None
        return _Table(value, self.path(key), self.problems)

    def finish(self) -> None:
        """Report every key that no reader asked for."""
        for key in self.data:
            if key in self.known:
                continue
            hint = difflib.get_close_matches(key, self.known, n=1, cutoff=0.5)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.problem(key, f"unknown key{suffix}")


def resolve_path(value: str, relative_to: Path) -> Path:
    """Return ``value`` as an absolute, normalised path.

    ``~`` is expanded; a relative path is taken against ``relative_to`` (the
    config file's directory), not against the agent's working directory.
    """
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = relative_to / path
    return Path(os.path.normpath(path))


def resolve_binary(value: str, relative_to: Path) -> str:
    """Return an engine binary: a bare name is looked up on PATH later; a
    relative path containing '/' is taken against ``relative_to``."""
    if "/" in value or value.startswith("~"):
        return str(resolve_path(value, relative_to))
    return value


# --------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------


def default_base_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return ``$BUCKETS_HOME``, or ``~/.local/share/buckets`` when unset."""
    env = os.environ if environ is None else environ
    home = env.get("BUCKETS_HOME")
    if home:
        return Path(os.path.normpath(Path(home).expanduser().absolute()))
    return Path("~/.local/share/buckets").expanduser()


def default_host_id() -> str | None:
    """Return this machine's host name as a host id, or None when it is not
    a valid one (then the first label of the name is tried)."""
    name = socket.gethostname()
    for candidate in (name, name.split(".", 1)[0]):
        if host_id(candidate) is None:
            return candidate
    return None


def default_config(base_dir: Path | None = None) -> AgentConfig:
    """Return the embedded default config.

    Everything lives under ``base_dir`` (default :func:`default_base_dir`):
    ``state/``, ``projects/``, ``persist/``, local repositories in
    ``state/repos`` with the password in ``state/repository.password``; the
    directory backend, listening on 127.0.0.1:50051.

    Raises:
        ConfigError: the host name is not a valid host id.
    """
    data: dict[str, Any] = {}
    if base_dir is not None:
        data["base_dir"] = str(base_dir)
    return parse_config(data, source="<defaults>", relative_to=Path.cwd())


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def load_config(path: Path | str) -> AgentConfig:
    """Read and validate the TOML config file at ``path``.

    Missing sections and keys take their defaults; relative paths in the file
    are resolved against the file's directory.

    Raises:
        ConfigError: the file cannot be read, is not valid TOML (the problem
            names line and column), or has any invalid or unknown key (every
            problem is listed).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: config file not found"], source=source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text: {exc}"], source=source) from None
    except OSError as exc:
        raise ConfigError(
            [f"{source}: cannot read config file: {exc.strerror or exc}"], source=source
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError([f"{source}: invalid TOML: {exc}"], source=source) from None
    return parse_config(data, source=source, relative_to=path.parent.absolute())


def parse_config(data: Mapping[str, Any], *, source: str, relative_to: Path) -> AgentConfig:
    """Validate the parsed TOML ``data`` and build the :class:`AgentConfig`.

    ``relative_to`` is the directory relative paths are taken against;
    ``source`` names the config in the raised error. Reads the environment
    (``BUCKETS_HOME``, home directory) and the host name only for defaults.

    Raises:
        ConfigError: with every problem found, each prefixed by its key path.
    """
    relative_to = Path(os.path.normpath(relative_to.absolute()))
    problems: list[str] = []
    top = _Table(data, "", problems)

    base = top.take_path("base_dir", None, relative_to) or default_base_dir()
    hid = top.take("host_id", host_id, "")
    if not top.has("host_id"):
        hid = default_host_id()
        if hid is None:
            problems.append(
                f"host_id: not set, and the host name {json.dumps(socket.gethostname())} "
                "is not a valid host id; set host_id"
            )
    backend = top.take("backend", one_of(*BACKENDS), "directory")

    server = _parse_server(top.table("server"), relative_to)
    auth = _parse_auth(top.table("auth"), relative_to)
    paths = _parse_paths(top.table("paths"), base, relative_to)
    limits = _parse_limits(top.table("limits"))
    engine = _parse_engine(top.table("engine"), relative_to)
    btrfs = _parse_btrfs(top.table("btrfs"), relative_to)
    freeze = _parse_freeze(top.table("freeze"), problems)
    retention = _parse_retention(top.table("retention"), problems)
    restore = _parse_restore(top.table("restore"))
    precopy = _parse_precopy(top.table("precopy"))
    schedule = _parse_schedule(top.table("schedule"), problems)
    repository = _parse_repository(top.table("repository"), paths, relative_to, problems)
    logging = _parse_logging(top.table("logging"))
    metrics = _parse_metrics(top.table("metrics"), relative_to)
    top.finish()

    if paths.projects_root == paths.persist_root:
        problems.append(
            "paths.persist_root: must differ from paths.projects_root "
            "(both hold project-<uuid> directories)"
        )

    if problems:
        raise ConfigError(problems, source=source)
    return AgentConfig(
        host_id=hid,
        server=server,
        paths=paths,
        limits=limits,
        engine=engine,
        repository=repository,
        logging=logging,
        backend=backend,
        btrfs=btrfs,
        freeze=freeze,
        retention=retention,
        restore=restore,
        precopy=precopy,
        schedule=schedule,
        auth=auth,
        metrics=metrics,
    )


_SERVER = ServerConfig()
_LIMITS = LimitsConfig()
_ENGINE = EngineConfig()
_S3 = S3RepositoryConfig()
_LOGGING = LoggingConfig()


def _parse_server(table: _Table | None, relative_to: Path) -> ServerConfig:
    if table is None:
        return _SERVER
    port_file = table.take_path("port_file", None, relative_to)
    config = ServerConfig(
        listen=table.take("listen", listen_address, _SERVER.listen),
        grace_period=float(table.take("grace_period", number(0), _SERVER.grace_period)),
        keepalive_interval=float(
            table.take("keepalive_interval", number(0, exclusive=True), _SERVER.keepalive_interval)
        ),
        port_file=None if port_file is None else str(port_file),
        tls=_parse_server_tls(table.table("tls"), relative_to),
    )
    table.finish()
    return config


def _parse_paths(table: _Table | None, base: Path, relative_to: Path) -> PathsConfig:
    defaults = {
        "state_dir": base / "state",
        "projects_root": base / "projects",
        "persist_root": base / "persist",
    }
    if table is None:
        return PathsConfig(**defaults)
    config = PathsConfig(
        **{key: table.take_path(key, default, relative_to) for key, default in defaults.items()}
    )
    table.finish()
    return config


def _parse_limits(table: _Table | None) -> LimitsConfig:
    if table is None:
        return _LIMITS
    config = LimitsConfig(
        max_concurrent_operations=table.take(
            "max_concurrent_operations", integer(1), _LIMITS.max_concurrent_operations
        ),
        max_queued_operations=table.take(
            "max_queued_operations", integer(0), _LIMITS.max_queued_operations
        ),
        engine_timeout=float(
            table.take("engine_timeout", number(0, exclusive=True), _LIMITS.engine_timeout)
        ),
        kill_grace=float(table.take("kill_grace", number(0), _LIMITS.kill_grace)),
        read_file_max_bytes=table.take(
            "read_file_max_bytes", integer(1), _LIMITS.read_file_max_bytes
        ),
        upload_limit_kib=table.take("upload_limit_kib", integer(0), _LIMITS.upload_limit_kib),
        download_limit_kib=table.take("download_limit_kib", integer(0), _LIMITS.download_limit_kib),
        stall_timeout=float(table.take("stall_timeout", number(0), _LIMITS.stall_timeout)),
        reconcile_interval=float(table.take("reconcile_interval", number(0), _LIMITS.reconcile_interval)),
    )
    table.finish()
    return config


_BTRFS = BtrfsConfig()
_RETENTION = RetentionConfig()


def _parse_retention(table: _Table | None, problems: list[str]) -> RetentionConfig:
    if table is None:
        return _RETENTION
    config = RetentionConfig(
        interval=float(table.take("interval", number(0), _RETENTION.interval)),
        keep_last=table.take("keep_last", integer(0), 0),
        keep_hourly=table.take("keep_hourly", integer(0), 0),
        keep_daily=table.take("keep_daily", integer(0), 0),
        keep_weekly=table.take("keep_weekly", integer(0), 0),
        keep_monthly=table.take("keep_monthly", integer(0), 0),
        prune=table.take("prune", boolean, False),
    )
    table.finish()
    if config.interval > 0 and not any(config.keep().values()):
        problems.append("retention: an interval needs at least one keep_* above 0 (it would forget every snapshot)")
    return config


_RESTORE = RestoreConfig()


def _parse_restore(table: _Table | None) -> RestoreConfig:
    if table is None:
        return _RESTORE
    config = RestoreConfig(
        dirty=table.take("dirty", one_of(*RESTORE_DIRTY_POLICIES), _RESTORE.dirty),
        keep_replaced=float(table.take("keep_replaced", number(0, exclusive=True), _RESTORE.keep_replaced)),
    )
    table.finish()
    return config


_PRECOPY = PrecopyConfig()


def _parse_precopy(table: _Table | None) -> PrecopyConfig:
    if table is None:
        return _PRECOPY
    config = PrecopyConfig(
        max_age=float(table.take("max_age", number(0, exclusive=True), _PRECOPY.max_age)),
    )
    table.finish()
    return config


_SCHEDULE = ScheduleConfig()
_QUIET_WINDOW_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")


def quiet_window(text: str) -> tuple[int, int] | None:
    """ "HH:MM-HH:MM" as (start, end) minutes after midnight; None when it is not one (or is empty)."""
    match = _QUIET_WINDOW_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    start = int(match[1]) * 60 + int(match[2])
    end = int(match[3]) * 60 + int(match[4])
    return None if start == end else (start, end)


def _parse_schedule(table: _Table | None, problems: list[str]) -> ScheduleConfig:
    if table is None:
        return _SCHEDULE
    windows = table.take("quiet_windows", _string_list, [])
    config = ScheduleConfig(
        rpo=float(table.take("rpo", number(0), _SCHEDULE.rpo)),
        concurrency=table.take("concurrency", integer(1), _SCHEDULE.concurrency),
        jitter=float(table.take("jitter", number(0), _SCHEDULE.jitter)),
        quiet_windows=tuple(text.strip() for text in windows if quiet_window(text) is not None),
    )
    table.finish()
    for text in windows:
        if quiet_window(text) is None:
            problems.append(f"schedule.quiet_windows: {json.dumps(text)} is not a window \"HH:MM-HH:MM\" "
                            "(24-hour times, start and end differing)")
    if config.enabled and config.jitter >= config.rpo:
        problems.append(f"schedule.jitter: must be below schedule.rpo ({config.rpo:g} s), got {config.jitter:g}")
    return config


def _string_list(value: object) -> str | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return None
    return "must be a list of strings"


def _parse_btrfs(table: _Table | None, relative_to: Path) -> BtrfsConfig:
    if table is None:
        return _BTRFS
    config = BtrfsConfig(
        binary=resolve_binary(table.take("binary", nonempty_string, _BTRFS.binary), relative_to),
        default_quota_bytes=table.take("default_quota_bytes", integer(0), _BTRFS.default_quota_bytes),
    )
    table.finish()
    return config


_FREEZE = FreezeConfig()


def _parse_freeze(table: _Table | None, problems: list[str]) -> FreezeConfig:
    if table is None:
        return _FREEZE
    config = FreezeConfig(
        writers=table.take("writers", one_of(*FREEZE_WRITER_POLICIES), _FREEZE.writers),
        grace=float(table.take("grace", number(0), _FREEZE.grace)),
        cgroup=table.take("cgroup", string_value, _FREEZE.cgroup),
    )
    table.finish()
    problem = cgroup_pattern_problem(config.cgroup)
    if problem is not None:
        problems.append(f"freeze.cgroup: {problem}")
    return config


def cgroup_pattern_problem(pattern: str) -> str | None:
    """None when ``pattern`` is "" or an absolute path whose only placeholder is
    ``{project_id}`` (at least once); else what is wrong."""
    if not pattern:
        return None
    if not pattern.startswith("/"):
        return f"must be an absolute path, got {json.dumps(pattern)}"
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        return f"not a valid pattern ({exc}): {json.dumps(pattern)}"
    if fields.count("project_id") < 1 or any(name != "project_id" for name in fields):
        return f"must contain {{project_id}} and no other placeholder, got {json.dumps(pattern)}"
    if "/../" in pattern + "/" or "/./" in pattern:
        return f"must not contain . or .. components, got {json.dumps(pattern)}"
    return None


def _parse_engine(table: _Table | None, relative_to: Path) -> EngineConfig:
    if table is None:
        return _ENGINE
    config = EngineConfig(
        engine=table.take("engine", one_of(*ENGINES), _ENGINE.engine),
        restic_binary=resolve_binary(
            table.take("restic_binary", nonempty_string, _ENGINE.restic_binary), relative_to
        ),
        rustic_binary=resolve_binary(
            table.take("rustic_binary", nonempty_string, _ENGINE.rustic_binary), relative_to
        ),
    )
    table.finish()
    return config


def _parse_repository(
    table: _Table | None, paths: PathsConfig, relative_to: Path, problems: list[str]
) -> RepositoryConfig:
    local_defaults = LocalRepositoryConfig(
        root=paths.state_dir / "repos",
        password_file=paths.state_dir / "repository.password",
    )
    if table is None:
        return RepositoryConfig(local=local_defaults)
    kind = table.take("kind", one_of(*REPOSITORY_KINDS), "local")
    local = _parse_local(table.table("local"), local_defaults, relative_to)
    s3 = _parse_s3(table.table("s3"), relative_to)
    if kind == "s3" and not table.has("s3"):
        problems.append('repository.s3: required when repository.kind is "s3"')
    table.finish()
    return RepositoryConfig(kind=kind, local=local, s3=s3)


def _parse_local(
    table: _Table | None, defaults: LocalRepositoryConfig, relative_to: Path
) -> LocalRepositoryConfig:
    if table is None:
        return defaults
    config = LocalRepositoryConfig(
        root=table.take_path("root", defaults.root, relative_to),
        password_file=table.take_path("password_file", defaults.password_file, relative_to),
    )
    table.finish()
    return config


def _parse_s3(table: _Table | None, relative_to: Path) -> S3RepositoryConfig | None:
    if table is None:
        return None
    config = S3RepositoryConfig(
        endpoint=table.take_optional("endpoint", http_url),
        region=table.take("region", s3_region, _S3.region),
        bucket_prefix=table.take("bucket_prefix", nonempty_string, _S3.bucket_prefix),
        root_template=table.take("root_template", root_template, _S3.root_template),
        access_key_id=table.take_optional("access_key_id", nonempty_string),
        secret_access_key=table.take_optional("secret_access_key", nonempty_string, secret=True),
        password_file=table.take_path("password_file", None, relative_to),
        create_bucket=table.take("create_bucket", boolean, _S3.create_bucket),
    )
    bucket = config.bucket_name()
    if table.has("bucket_prefix") and not s3_bucket_name(bucket):
        table.problem(
            "bucket_prefix",
            f"gives the bucket name {json.dumps(bucket)}, which is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, '.' and '-', starting and ending with a "
            "letter or digit)",
        )
    if (config.access_key_id is None) != (config.secret_access_key is None):
        table.problem("", "access_key_id and secret_access_key must be set together")
    table.finish()
    return config


def _parse_logging(table: _Table | None) -> LoggingConfig:
    if table is None:
        return _LOGGING
    config = LoggingConfig(
        level=table.take("level", one_of(*LOG_LEVELS), _LOGGING.level),
        format=table.take("format", one_of(*LOG_FORMATS), _LOGGING.format),
    )
    table.finish()
    return config


def _parse_metrics(table: _Table | None, relative_to: Path) -> MetricsConfig:
    if table is None:
        return MetricsConfig()
    port_file = table.take_path("port_file", None, relative_to)
    config = MetricsConfig(
        listen=table.take_optional("listen", listen_address),
        port_file=None if port_file is None else str(port_file),
    )
    table.finish()
    return config


# --------------------------------------------------------------------------
# Transport security and callers: [server.tls] and [auth]
# --------------------------------------------------------------------------

MIN_TOKEN_LENGTH = 16
"""Shorter bearer tokens are refused: a token is the only thing between a caller and the data."""


class _EncryptedKey(Exception):
    """Raised by the password callback: the agent never asks for a key's passphrase."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang a daemon's start.
    raise _EncryptedKey()


def _read_text(table: _Table, key: str, path: Path) -> str | None:
    """Return the text of ``path`` (named by ``key``), or None after recording why not."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        table.problem(key, f"{path} is not PEM text")
    except OSError as exc:
        table.problem(key, f"cannot read {path}: {exc.strerror or exc}")
    return None


def _parse_server_tls(table: _Table | None, relative_to: Path) -> ServerTlsConfig | None:
    """Read ``[server.tls]`` and check its files (see :func:`_check_tls_files`); None when absent."""
    if table is None:
        return None
    cert = table.take_path("cert_file", None, relative_to)
    key = table.take_path("key_file", None, relative_to)
    client_ca = table.take_path("client_ca_file", None, relative_to)
    for name in ("cert_file", "key_file"):
        if not table.has(name):
            table.problem(name, "required in [server.tls]")
    table.finish()
    if cert is None or key is None:
        return None
    _check_tls_files(table, cert, key, client_ca)
    return ServerTlsConfig(cert_file=cert, key_file=key, client_ca_file=client_ca)


def _check_tls_files(table: _Table, cert: Path, key: Path, client_ca: Path | None) -> None:
    """Record a problem for each TLS file that gRPC would refuse later, or only at the first
    handshake: unreadable, not PEM, an encrypted or foreign key, a key readable by others."""
    import ssl  # only needed when [server.tls] is configured

    cert_text = _read_text(table, "cert_file", cert)
    if cert_text is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_text)
        except ssl.SSLError:
            table.problem("cert_file", f"no PEM certificate in {cert}")
            cert_text = None
    key_text = _read_text(table, "key_file", key)
    if key_text is not None:
        mode = stat.S_IMODE(os.stat(key).st_mode)
        if mode & 0o007:
            table.problem("key_file", f"{key} is accessible by others (mode {mode:04o}); run: chmod o-rwx {key}")
    if cert_text is not None and key_text is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_passphrase)
        except _EncryptedKey:
            table.problem("key_file", f"{key} is encrypted; the agent needs an unencrypted key")
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                table.problem("key_file", f"{key} does not match the certificate in {cert}")
            else:
                table.problem("key_file", f"no PEM private key in {key}")
        except OSError as exc:
            table.problem("key_file", f"cannot read {key}: {exc.strerror or exc}")
    if client_ca is not None:
        ca_text = _read_text(table, "client_ca_file", client_ca)
        if ca_text is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=ca_text)
            except ssl.SSLError:
                table.problem("client_ca_file", f"no PEM CA certificate in {client_ca}")


def _parse_auth(table: _Table | None, relative_to: Path) -> AuthConfig:
    """Read ``[auth]`` and its tokens file. An ``[auth]`` table without a tokens file is a
    problem rather than "no tokens": whoever wrote it meant to require them."""
    if table is None:
        return AuthConfig()
    tokens_file = table.take_path("tokens_file", None, relative_to)
    if not table.has("tokens_file"):
        table.problem("tokens_file", "required in [auth] (leave [auth] out to run without tokens)")
    table.finish()
    if tokens_file is None:
        return AuthConfig()
    text = _read_text(table, "tokens_file", tokens_file)
    if text is None:
        return AuthConfig(tokens_file=tokens_file)
    mode = stat.S_IMODE(os.stat(tokens_file).st_mode)
    if mode & 0o077:
        table.problem(
            "tokens_file",
            f"{tokens_file} is accessible by group or others (mode {mode:04o}); run: chmod 600 {tokens_file}",
        )
    tokens, problems = parse_tokens(text)
    for problem in problems:
        table.problem("tokens_file", f"{tokens_file} {problem}")
    return AuthConfig(tokens_file=tokens_file, tokens=tokens)


def parse_tokens(text: str) -> tuple[tuple[AuthToken, ...], list[str]]:
    """Parse a tokens file: one ``<role> <token>`` per line, ``#`` comments and blank lines.

    Returns the tokens and the problems (``"line N: ..."``). A problem never quotes a
    token, nor a role (a line written ``<token> <role>`` would put the token there).
    """
    tokens: list[AuthToken] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    roles = " or ".join(json.dumps(r) for r in AUTH_ROLES)
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 2:
            problems.append(f'line {number}: must be "<role> <token>" ({len(words)} words found)')
            continue
        role, token = words
        if role not in AUTH_ROLES:
            problems.append(f'line {number}: the role must be {roles} (is the line "<role> <token>"?)')
        elif len(token) < MIN_TOKEN_LENGTH:
            problems.append(f"line {number}: the token is shorter than {MIN_TOKEN_LENGTH} characters")
        elif not all(33 <= ord(c) < 127 for c in token):
            problems.append(f"line {number}: the token must be printable ASCII without blanks")
        elif token in seen:
            problems.append(f"line {number}: the same token as on line {seen[token]}")
        else:
            seen[token] = number
            tokens.append(AuthToken(role=role, token=token))
    if not tokens and not problems:
        problems.append('has no tokens (lines "<role> <token>")')
    return tuple(tokens), problems


# --------------------------------------------------------------------------
# The repository password file
# --------------------------------------------------------------------------


def ensure_password_file(path: Path) -> None:
    """Make sure the repository password file at ``path`` exists and is private.

    A missing file is created with a random password
    (``secrets.token_urlsafe(32)``, no trailing newline) and mode 0600; the
    missing parent directories are created with mode 0700. The file is written
    under a temporary name opened ``O_CREAT|O_EXCL`` with mode 0600 and then
    hard-linked into place, so it is never readable by others and never seen
    half-written; if another process creates it first, that file wins. An
    existing file is left alone.

    Raises:
        FailedPrecondition: an existing file is not a regular file, is
            accessible by group or others, or is empty.
        OSError: the file or its directories cannot be created.
    """
    path = Path(path)
    _make_private_dirs(path.parent)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _create_password_file(path)
        st = os.stat(path)
    _check_password_file(path, st)


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each with mode 0700."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for item in reversed(missing):
        try:
            os.mkdir(item, 0o700)
        except FileExistsError:
            pass  # created concurrently; fine


def _create_password_file(path: Path) -> None:
    password = secrets.token_urlsafe(32).encode("ascii")
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have removed the owner's bits
            os.write(fd, password)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won the race: keep its password
    finally:
        temp.unlink(missing_ok=True)


def _check_password_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FailedPrecondition(f"repository password file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise FailedPrecondition(
            f"repository password file {path} is readable by group or others "
            f"(mode {mode:04o}); run: chmod 600 {path}"
        )
    if st.st_size == 0:
        raise FailedPrecondition(f"repository password file {path} is empty")


# --------------------------------------------------------------------------
# Describing
# --------------------------------------------------------------------------


def describe(config: Any) -> dict[str, Any]:
    """Return a JSON-able dict of ``config`` (any of the config dataclasses)
    for ``buckets-agent check-config``; paths become strings and every set
    secret is replaced by ``"***"``."""
    return {f.name: _describe_field(f, getattr(config, f.name)) for f in dataclasses.fields(config)}


def _describe_field(f: dataclasses.Field[Any], value: Any) -> Any:
    if f.metadata.get("secret") and value is not None:
        return SECRET_MASK
    if dataclasses.is_dataclass(value):
        return describe(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
