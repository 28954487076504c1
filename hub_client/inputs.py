"""Checks of what comes into the hub from outside (the CLI, the Hub service): host and region
names, project ids, agent addresses. Raise agent.errors.InvalidArgument (INVALID_ARGUMENT,
exit 2), so a bad record never enters the store to be impossible to use or remove later."""

from __future__ import annotations

import re
import uuid

from agent.errors import InvalidArgument
from hub_client.addresses import address_problem

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_ADDRESS = 255


def name(value: str, field: str) -> str:
    """A host or region id; InvalidArgument unless it is 1-63 letters, digits, '.', '_', '-'."""
    if not _NAME.fullmatch(value or ""):
        raise InvalidArgument(f"{field} must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter "
                              f"or digit), got {(value or '')[:80]!r}", field=field)
    return value


def project_id(value: str, field: str = "project_id") -> str:
    """A project id: a uuid in its canonical lower-case form; InvalidArgument otherwise."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a uuid, got {str(value)[:80]!r}", field=field) from None
    if str(parsed) != value:
        raise InvalidArgument(f"{field} must be a uuid in canonical lower-case form, got {value[:80]!r}",
                              field=field)
    return value


def address(value: str) -> str:
    """An agent address (hub_client/addresses.py: ``host:port`` with a port 1..65535, or
    ``unix:/path``); InvalidArgument otherwise."""
    problem = address_problem(value or "") if value and len(value) <= MAX_ADDRESS and value.isprintable() \
        else f"{(value or '')[:80]!r} is not host:port"
    if problem:
        raise InvalidArgument(f"address: {problem}", field="address")
    return value
