"""Which repository an operation uses, and how the engine opens it.

A request may carry a repository spec (with secrets); without one the agent's
configured repository applies. The result never prints its secrets.
"""

from __future__ import annotations

import os
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from agent import errors, logs
from agent.config import AgentConfig, s3_bucket_name, s3_region
from agent.ids import project_dir_name

PATH_MAX = 4096
NAME_MAX = 255


@dataclass(frozen=True)
class LocalSpec:
    path: str


@dataclass(frozen=True)
class S3Spec:
    endpoint: str
    region: str
    bucket: str
    root: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class RepositorySpec:
    """A caller's repository choice, as the request carried it."""

    location: LocalSpec | S3Spec | None = None
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class Repository:
    """An opened repository: ``location`` for the engine; ``display`` for logs and as the
    journal's key (a local repository's path on this host: it must stay what it was); ``label``
    for what callers read (operation messages, errors): the repository as the API names it."""

    kind: str  # "local" | "s3"
    location: str
    display: str
    password: str = field(repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    s3: S3Spec | None = field(default=None, repr=False)
    # How callers are told of it when not by its display (the configured local repository).
    name: str = ""

    @property
    def label(self) -> str:
        """The repository in a message: ``the configured repository of project <uuid>`` for the
        agent's configured local one (its path is this host's business), else ``repository`` and
        the location as the request gave it (a local path, ``s3:endpoint/bucket/root``)."""
        return self.name or f"repository {self.display}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(v for v in (self.password, self.env.get("AWS_SECRET_ACCESS_KEY", "")) if v)


def configured_name(project_id: str) -> str:
    """How messages name the agent's configured local repository of ``project_id``."""
    return f"the configured repository of project {project_id}"


def configured_local_path(project_id: str, config: AgentConfig) -> str | None:
    """Where the agent's configuration puts ``project_id``'s repository when that is a local
    directory; None when it is in S3."""
    if config.repository.kind == "s3" and config.repository.s3 is not None:
        return None
    return _local_path(project_id, config)


def _local_path(project_id: str, config: AgentConfig) -> str:
    return str(config.repository.local.root / project_dir_name(project_id))


def label_of(display: str, project_id: str, config: AgentConfig) -> str:
    """:attr:`Repository.label` of the repository journaled as ``display`` for ``project_id``,
    without opening it (nothing is read)."""
    if display == configured_local_path(project_id, config):
        return configured_name(project_id)
    return f"repository {display}"


def _read_password(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise errors.FailedPrecondition(f"cannot read the repository password file {path}: {exc.strerror}") from exc


def _control_free(value: str, field: str) -> None:
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise errors.InvalidArgument(f"{field} contains a control character")


def _check_local_path(path: str) -> None:
    """A request's local repository path: absolute, no control character, within PATH_MAX and
    NAME_MAX, and nothing but directories on the way (what exists of it). Reads, changes nothing."""
    _control_free(path, "repository.local.path")
    if not path.startswith("/"):
        raise errors.InvalidArgument(f"repository.local.path {path[:200]!r} must be absolute")
    encoded = path.encode("utf-8", "surrogatepass")
    if len(encoded) > PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise errors.InvalidArgument(
            f"repository.local.path is longer than {PATH_MAX} bytes or has a name longer than {NAME_MAX}")
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise errors.InvalidArgument(
            f"repository.local.path {path[:200]!r}: {existing[:200]!r} is not a directory")


def _check_s3(location: S3Spec) -> None:
    """A request's S3 location: what the engine would misread (a control character, a query in
    the endpoint, a bucket or root that moves the repository elsewhere) is InvalidArgument."""
    for name in ("endpoint", "region", "bucket", "root", "access_key_id", "secret_access_key"):
        _control_free(getattr(location, name), f"repository.s3.{name}")
    if location.endpoint:
        try:
            url = urllib.parse.urlsplit(location.endpoint)
            url.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            url = None
        if (url is None or url.scheme not in ("http", "https") or not url.hostname or url.username is not None
                or url.path.strip("/") or url.query or url.fragment or " " in location.endpoint):
            raise errors.InvalidArgument(  # not echoed: it may carry credentials
                "repository.s3.endpoint must be an http(s) URL of a host (an optional port, no path, "
                "query or credentials)")
    if location.region and s3_region(location.region) is not None:
        raise errors.InvalidArgument(f"repository.s3.region {location.region[:100]!r} is not a region name")
    if location.bucket and not s3_bucket_name(location.bucket):
        raise errors.InvalidArgument(f"repository.s3.bucket {location.bucket[:100]!r} is not a valid bucket name")
    if location.root and any(part in ("", ".", "..") for part in location.root.strip("/").split("/")):
        raise errors.InvalidArgument(
            f"repository.s3.root {location.root[:200]!r} must be a key prefix without empty, '.' or '..' parts")
    if bool(location.access_key_id) != bool(location.secret_access_key):
        raise errors.InvalidArgument("repository.s3.access_key_id and secret_access_key go together")


def check_spec(spec: RepositorySpec) -> None:
    """Raise InvalidArgument for what a request's repository spec may not carry (see
    :func:`_check_local_path`, :func:`_check_s3`; a NUL byte in the password). Reads the file
    system for a local path, changes nothing."""
    if "\x00" in spec.password:
        raise errors.InvalidArgument("repository.password contains a NUL byte")
    if isinstance(spec.location, LocalSpec):
        _check_local_path(spec.location.path)
    elif isinstance(spec.location, S3Spec):
        _check_s3(spec.location)


def resolve(spec: RepositorySpec | None, project_id: str, config: AgentConfig) -> Repository:
    """Return the repository of ``project_id``; raises InvalidArgument or FailedPrecondition."""
    spec = spec or RepositorySpec()
    check_spec(spec)  # before anything of it is registered as a secret to mask
    location = spec.location
    name = ""
    if location is None:
        if config.repository.kind == "s3" and config.repository.s3 is not None:
            s3 = config.repository.s3
            location = S3Spec(
                endpoint=s3.endpoint or "",
                region=s3.region,
                bucket=f"{s3.bucket_prefix}-{s3.region}",
                root=s3.root_template.format(project_id=project_id),
                access_key_id=s3.access_key_id or "",
                secret_access_key=s3.secret_access_key or "",
            )
            default_password_file = s3.password_file
        else:
            location = LocalSpec(path=_local_path(project_id, config))
            default_password_file = config.repository.local.password_file
            name = configured_name(project_id)
    else:
        default_password_file = config.repository.local.password_file
    password = spec.password or (_read_password(default_password_file) if default_password_file else "")
    logs.register_secret(password)
    if not password:
        raise errors.FailedPrecondition("no repository password: none in the request and none configured")
    if isinstance(location, LocalSpec):
        if not location.path.startswith("/"):
            raise errors.InvalidArgument(f"repository.local.path {location.path!r} must be absolute")
        return Repository(kind="local", location=location.path, display=location.path, password=password, name=name)
    for name in ("bucket", "root"):
        if not getattr(location, name):
            raise errors.InvalidArgument(f"repository.s3.{name} is required")
    endpoint = location.endpoint.rstrip("/") or "https://s3.amazonaws.com"
    if not endpoint.startswith(("http://", "https://")):
        raise errors.InvalidArgument(f"repository.s3.endpoint {endpoint!r} must be an http(s) URL")
    env = {"AWS_DEFAULT_REGION": location.region or "us-east-1"}
    logs.register_secret(location.secret_access_key)
    if location.access_key_id:
        env["AWS_ACCESS_KEY_ID"] = location.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = location.secret_access_key
    where = f"s3:{endpoint}/{location.bucket}/{location.root.strip('/')}"
    return Repository(kind="s3", location=where, display=where, password=password, env=env, s3=location)
