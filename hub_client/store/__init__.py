"""The hub's durable store: hosts, project placement, moves and the movelog, with move locks.

:func:`open_store` picks the backend from a URL; both backends implement :class:`Store` and
pass the same tests. Only the PostgreSQL backend needs psycopg, and it is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hub_client.store.base import Store
from hub_client.store.errors import (
    CopyInProgress, HostInUse, InvalidTransition, LeaseHeld, LeaseLost, MoveInProgress, NotFound, StoreError,
)
from hub_client.store.models import (
    Cleanup, Conflict, Copy, CopyStatus, Host, HostBackupStatus, JobKind, Lease, Move, MovelogEntry, MoveStatus,
    OfflineLoss, Project, Rescue,
)
from hub_client.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from hub_client.store.postgres import PostgresStore


def open_store(url: str, *, schema: str | None = None, migrate: bool = True) -> Store:
    """Open the store at ``url`` and (by default) bring its schema up to date.

    ``sqlite:///abs/path.db``, ``sqlite:///:memory:``, a bare file path, or a PostgreSQL URI
    (``postgresql://…`` / ``postgres://…``; ``schema`` then selects a schema). Raises ValueError
    for an unknown scheme, ImportError when PostgreSQL is asked for without psycopg installed.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from hub_client.store.postgres import PostgresStore

        return PostgresStore(url, schema=schema, migrate=migrate)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        return SQLiteStore(":memory:" if path in ("", "/:memory:") else path, migrate=migrate)
    if "://" in url:
        raise ValueError(f"unknown store URL scheme: {url.split('://', 1)[0]!r} (sqlite or postgresql)")
    return SQLiteStore(Path(url), migrate=migrate)


__all__ = [
    "Cleanup", "Conflict", "Copy", "CopyInProgress", "CopyStatus", "Host", "HostBackupStatus", "HostInUse",
    "InvalidTransition", "JobKind", "Lease", "LeaseHeld", "LeaseLost", "OfflineLoss", "Move", "MoveInProgress",
    "MoveStatus", "MovelogEntry", "NotFound",
    "PostgresStore", "Project", "Rescue", "SQLiteStore", "Store", "StoreError", "open_store",
]


def __getattr__(name: str):
    if name == "PostgresStore":
        from hub_client.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)
