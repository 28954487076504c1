"""Validation of caller-supplied identifiers and paths (pure functions)."""

from __future__ import annotations

import posixpath
import re
import uuid

from agent import errors

_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")
# The canonical form itself: accepted as it is without parsing (the reconciler checks every
# project directory's name each cycle).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NAME_MAX = 255  # bytes of one path component (Linux): a longer one fails every system call as ENAMETOOLONG


def project_id(value: str) -> str:
    """Return the canonical (lower-case, hyphenated) form of a project UUID; raises InvalidArgument."""
    if not value:
        raise errors.InvalidArgument("project_id is required")
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise errors.InvalidArgument(f"project_id {value[:80]!r} is not a UUID") from None
    if str(parsed) != value.lower():
        raise errors.InvalidArgument(f"project_id {value[:80]!r} is not in the canonical 8-4-4-4-12 form")
    return str(parsed)


def operation_id(value: str, *, field: str = "restore_operation_id") -> str:
    """Return the canonical form of an operation id (a UUID, as the agent makes them); raises
    InvalidArgument."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise errors.InvalidArgument(f"{field} {value[:80]!r} is not an operation id (a UUID)") from None
    if str(parsed) != value.lower():
        raise errors.InvalidArgument(f"{field} {value[:80]!r} is not in the canonical 8-4-4-4-12 form")
    return str(parsed)


def request_id(value: str) -> str:
    """Return a caller-chosen request id (1 to 200 characters); raises InvalidArgument."""
    if not value:
        raise errors.InvalidArgument("request_id is required")
    if len(value) > 200:
        raise errors.InvalidArgument("request_id is longer than 200 characters")
    return value


def project_dir_name(project: str) -> str:
    """The directory, host name and repository name of a project: ``project-<uuid>``."""
    return f"project-{project}"


def snapshot_id(value: str, *, allow_latest: bool = True) -> str:
    """Return a snapshot id (8 to 64 hex digits) or "latest"; raises InvalidArgument."""
    if allow_latest and value == "latest":
        return value
    if not _SNAPSHOT_ID.match(value or ""):
        raise errors.InvalidArgument(f"snapshot_id {value[:80]!r} is not 8 to 64 lower-case hex digits")
    return value


def relative_path(value: str, *, field: str = "path", allow_empty: bool = True) -> str:
    """Normalise a path relative to a project root; raises InvalidArgument when it is
    absolute, climbs out with ``..``, holds a NUL byte, is longer than 4096 characters or has
    a component longer than :data:`NAME_MAX` bytes. Returns "" for the root."""
    if "\x00" in value:
        raise errors.InvalidArgument(f"{field} contains a NUL byte")
    if value.startswith("/"):
        raise errors.InvalidArgument(f"{field} {value[:200]!r} is absolute; paths are relative to the project")
    if any(part == ".." for part in value.split("/")):
        raise errors.InvalidArgument(f"{field} {value[:200]!r} contains '..'")
    normalised = posixpath.normpath(value) if value else ""
    normalised = "" if normalised == "." else normalised
    if not normalised and not allow_empty:
        raise errors.InvalidArgument(f"{field} is required")
    if len(normalised) > 4096:
        raise errors.InvalidArgument(f"{field} is longer than 4096 characters")
    check_name_lengths(normalised, field=field)
    return normalised


def check_name_lengths(path: str, *, field: str = "path") -> None:
    """Raise InvalidArgument when a component of ``path`` is longer than :data:`NAME_MAX` bytes."""
    if any(len(part.encode("utf-8", "surrogatepass")) > NAME_MAX for part in path.split("/")):
        raise errors.InvalidArgument(f"{field} has a name longer than {NAME_MAX} bytes")
