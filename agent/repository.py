"""Which repository an operation uses, and how the engine opens it.

A request may carry a repository spec (with secrets); without one the agent's
configured repository applies. The result never prints its secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent import errors, logs
from agent.config import AgentConfig
from agent.ids import project_dir_name


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
    """An opened repository: ``location`` for the engine, ``display`` for people and logs."""

    kind: str  # "local" | "s3"
    location: str
    display: str
    password: str = field(repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    s3: S3Spec | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(v for v in (self.password, self.env.get("AWS_SECRET_ACCESS_KEY", "")) if v)


def _read_password(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise errors.FailedPrecondition(f"cannot read the repository password file {path}: {exc.strerror}") from exc


def resolve(spec: RepositorySpec | None, project_id: str, config: AgentConfig) -> Repository:
    """Return the repository of ``project_id``; raises InvalidArgument or FailedPrecondition."""
    spec = spec or RepositorySpec()
    location = spec.location
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
            location = LocalSpec(path=str(config.repository.local.root / project_dir_name(project_id)))
            default_password_file = config.repository.local.password_file
    else:
        default_password_file = config.repository.local.password_file
    password = spec.password or (_read_password(default_password_file) if default_password_file else "")
    logs.register_secret(password)
    if not password:
        raise errors.FailedPrecondition("no repository password: none in the request and none configured")
    if isinstance(location, LocalSpec):
        if not location.path.startswith("/"):
            raise errors.InvalidArgument(f"repository.local.path {location.path!r} must be absolute")
        return Repository(kind="local", location=location.path, display=location.path, password=password)
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
