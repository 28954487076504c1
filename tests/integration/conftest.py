"""Fixtures for the hub store tests: a session PostgreSQL cluster and a store per backend."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub_client.store import Store, open_store
from tests.hubs import host_pair, make_hub


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, 127.0.0.1, random port) for the whole
    session, stopped with ``pg_ctl stop -m immediate`` even when tests fail; skips with the
    reason when PostgreSQL cannot run here."""
    from tests.pgserver import PgServer, pg_unavailable_reason

    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(f"PostgreSQL store tests: {reason}")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_database(pg_server) -> str:
    """One database for the session's store tests; each test gets its own schema in it."""
    return pg_server.create_database("store")


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's store lives: ``open()`` makes another store on the same data (another
    connection, as a second hub process would have); ``spec`` says the same to a subprocess."""

    kind: str
    url: str
    schema: str | None = None

    def open(self, *, migrate: bool = True) -> Store:
        return open_store(self.url, schema=self.schema, migrate=migrate)

    @property
    def spec(self) -> dict[str, Any]:
        return {"url": self.url, "schema": self.schema}


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """A fresh, empty store location: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return StoreTarget("sqlite", f"sqlite://{tmp_path / 'hub.sqlite'}")
    database = request.getfixturevalue("pg_database")
    return StoreTarget("postgres", database, schema=f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def store(store_target: StoreTarget):
    """An open, migrated store on a fresh database (SQLite) or schema (PostgreSQL)."""
    opened = store_target.open()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def two_hosts(agent_factory, tmp_path: Path):
    """Two agents of one region ("host-a", "host-b") sharing one local repository root and
    password, as hosts of a region share a bucket."""
    password_file = tmp_path / "repo.password"
    password_file.write_text("move-test-password\n")
    password_file.chmod(0o600)
    extra = (f'[repository]\nkind = "local"\n[repository.local]\nroot = "{tmp_path / "shared-repos"}"\n'
             f'password_file = "{password_file}"\n')
    return host_pair(agent_factory, extra)


@pytest.fixture
def hub(store, two_hosts):
    """A hub on the parametrised store (SQLite, PostgreSQL) over ``two_hosts``."""
    with make_hub(store, two_hosts) as opened:
        yield opened


@pytest.fixture
def sqlite_hub(tmp_path: Path, two_hosts):
    """A hub on a SQLite store over ``two_hosts``."""
    store = open_store(f"sqlite://{tmp_path / 'hub.sqlite'}")
    try:
        with make_hub(store, two_hosts) as opened:
            yield opened
    finally:
        store.close()
